//! The one grammar for sizes and times that the command line and the specs share.
//!
//! Sizes: a number (`512`, `1.5`) and an optional unit `K`, `M`, `G` or `T`,
//! any case, optionally followed by `B` or `iB` (`512M`, `2G`, `1GB`, `1GiB`,
//! `64kb`). Every unit is binary: `1G`, `1GB` and `1GiB` are all 2^30 bytes
//! (memory limits and tmpfs sizes are counted in pages of binary sizes, so a
//! decimal `GB` would only surprise). A plain number, or `B` alone, is bytes.
//! Zero, a negative or fractional byte count, and overflow are refused.
//!
//! Times (`--expires`): RFC 3339 (`2027-01-31T00:00:00Z`) or a date
//! (`2027-01-31`, meaning its start, 00:00:00 UTC).

/// The one-line description of the size grammar, for error messages.
pub const SIZE_HELP: &str =
    "use e.g. 512M, 2G, 1GB, 1GiB or a byte count (units are binary: 1G = 1GB = 1GiB = 2^30 bytes)";

/// Parse a size (see the module docs).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let bad = || format!("invalid size {s:?}: {SIZE_HELP}");
    let t = s.trim();
    let lower = t.to_ascii_lowercase();
    let t = lower
        .strip_suffix("ib")
        .or_else(|| lower.strip_suffix('b'))
        .unwrap_or(&lower);
    let (num, shift) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 10),
        Some('m') => (&t[..t.len() - 1], 20),
        Some('g') => (&t[..t.len() - 1], 30),
        Some('t') => (&t[..t.len() - 1], 40),
        _ => (t, 0),
    };
    // "1iB" is not a size: a bare `iB` needs a unit before it.
    if shift == 0 && lower.ends_with("ib") {
        return Err(bad());
    }
    let num = num.trim();
    if num.is_empty() || !num.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return Err(bad());
    }
    let value = match num.split_once('.') {
        None => num
            .parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(1u64 << shift)),
        Some((whole, frac)) => {
            let whole: u64 = if whole.is_empty() {
                0
            } else {
                whole.parse().map_err(|_| bad())?
            };
            let frac_v: f64 = format!("0.{frac}").parse().map_err(|_| bad())?;
            let bytes = (frac_v * (1u64 << shift) as f64).round() as u64;
            whole
                .checked_mul(1u64 << shift)
                .and_then(|w| w.checked_add(bytes))
                .filter(|_| shift > 0 || frac.chars().all(|c| c == '0'))
        }
    };
    value.filter(|&n| n > 0).ok_or_else(bad)
}

/// Parse an expiry: RFC 3339, or a date `YYYY-MM-DD` meaning its start in UTC.
pub fn parse_time(s: &str) -> Result<time::OffsetDateTime, String> {
    use time::format_description::well_known::Rfc3339;
    if let Ok(t) = time::OffsetDateTime::parse(s, &Rfc3339) {
        return Ok(t);
    }
    let fmt = time::macros::format_description!("[year]-[month]-[day]");
    time::Date::parse(s, &fmt)
        .map(|d| d.midnight().assume_utc())
        .map_err(|_| {
            format!("{s:?} is neither a date (2027-01-31, its start in UTC) nor an RFC 3339 time (2027-01-31T00:00:00Z)")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_of_a_unit_means_the_same() {
        for (s, n) in [
            ("512", 512u64),
            ("100B", 100),
            ("64K", 64 << 10),
            ("64kb", 64 << 10),
            ("512M", 512 << 20),
            ("512MiB", 512 << 20),
            ("2G", 2 << 30),
            ("1GB", 1 << 30),
            ("1GiB", 1 << 30),
            ("1gib", 1 << 30),
            ("1.5G", 3 << 29),
            (" 1T ", 1 << 40),
        ] {
            assert_eq!(parse_size(s), Ok(n), "{s}");
        }
        for s in [
            "",
            "0",
            "0G",
            "x",
            "-1G",
            "1.5",
            "1iB",
            "G",
            "1Q",
            "1 G B",
            "99999999999T",
        ] {
            assert!(parse_size(s).is_err(), "{s:?} accepted");
        }
        assert!(parse_size("lots").unwrap_err().contains("1GiB"));
    }

    #[test]
    fn expiry_is_a_date_or_rfc3339() {
        let d = parse_time("2027-01-01").unwrap();
        assert_eq!(d, time::macros::datetime!(2027-01-01 00:00:00 UTC));
        let t = parse_time("2027-01-31T12:00:00+01:00").unwrap();
        assert_eq!(t, time::macros::datetime!(2027-01-31 11:00:00 UTC));
        assert!(parse_time("next year").unwrap_err().contains("2027-01-31"));
        assert!(parse_time("2027-13-01").is_err());
    }
}
