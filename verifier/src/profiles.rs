//! The sandbox profiles shipped with this build, by digest. Guarantees: a gate that approves a
//! profile by name approves exactly the profile of that name shipped with this verifier (the
//! digest a record carries in `profile_sha256` must match), so a profile edited on the launcher
//! host, or a file merely named like a shipped one, is not approved by name.

use sha2::{Digest, Sha256};

/// `(name, seccomp JSON, mount JSON)` of each shipped profile pair, as the sandbox embeds them.
const SHIPPED: &[(&str, &[u8], &[u8])] = &[
    (
        "default",
        include_bytes!("../../sandbox-profiles/seccomp/default.json"),
        include_bytes!("../../sandbox-profiles/mounts/default.json"),
    ),
    (
        "minimal",
        include_bytes!("../../sandbox-profiles/seccomp/minimal.json"),
        include_bytes!("../../sandbox-profiles/mounts/minimal.json"),
    ),
    (
        "python",
        include_bytes!("../../sandbox-profiles/seccomp/python.json"),
        include_bytes!("../../sandbox-profiles/mounts/python.json"),
    ),
    (
        "gpu",
        include_bytes!("../../sandbox-profiles/seccomp/gpu.json"),
        include_bytes!("../../sandbox-profiles/mounts/gpu.json"),
    ),
];

/// Hex SHA-256 of the shipped profile pair `name` (seccomp JSON then mount JSON: the record's
/// `profile_sha256`), or `None` if no profile of that name is shipped.
pub fn shipped_sha256(name: &str) -> Option<String> {
    SHIPPED.iter().find(|(n, ..)| *n == name).map(|(_, s, m)| {
        let mut h = Sha256::new();
        h.update(s);
        h.update(m);
        hex::encode(h.finalize())
    })
}

/// Whether a gate's `approved_profiles` entry approves a run that used `profile` with digest
/// `sha256`: `sha256:HEX` approves that digest whatever the name; a name approves the shipped
/// profile of that name only.
pub fn approves(entry: &str, profile: &str, sha256: &str) -> bool {
    match entry.strip_prefix("sha256:") {
        Some(hex) => hex.eq_ignore_ascii_case(sha256),
        None => entry == profile && shipped_sha256(entry).as_deref() == Some(sha256),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_approve_only_the_shipped_digest() {
        let d = shipped_sha256("python").unwrap();
        assert!(approves("python", "python", &d));
        assert!(!approves("python", "python", &"0".repeat(64)));
        assert!(!approves("python", "default", &d));
        assert!(approves(&format!("sha256:{d}"), "/srv/p.json", &d));
        assert!(!approves("/srv/p.json", "/srv/p.json", &d));
        assert_eq!(shipped_sha256("nope"), None);
    }
}
