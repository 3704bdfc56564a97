//! Revocation: trust-policy `[[revoked]]` entries that withdraw trust from a
//! signing key, a signed artifact (by its manifest root digest) or a run record
//! (by the SHA-256 of its envelope file), each with a reason and a time.
//!
//! Guarantees: under a policy that revokes it, a revoked key's signatures and
//! records, a revoked artifact and a revoked record never verify, whenever
//! they were made (the revocation's time is reported, never compared: what a
//! record used is no longer trusted even if the record predates the
//! revocation). Every verifier built on this crate inherits this: artifact
//! verification ([`crate::artifact::check_signature`]), record verification
//! ([`crate::record::verify_record`]) and so chains, gates and AI-BOMs, which
//! also name the path from the top record to the revoked ancestor. A malformed
//! entry (no target or two, a digest that is not 64 hex digits, a key that is
//! neither a `[[key]]` name nor a key id, a time that is not RFC 3339, an empty
//! reason) makes the whole policy invalid, never silently ignored.

use std::fmt;

use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::policy::Policy;

/// What a `[[revoked]]` entry withdraws trust from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "type", content = "id", rename_all = "lowercase")]
pub enum Target {
    /// A key, by its `[[key]]` name or its key id (64 hex digits).
    Key(String),
    /// A signed artifact, by its manifest root digest (lowercase hex).
    Artifact(String),
    /// A run record, by the SHA-256 of its envelope file (lowercase hex).
    Record(String),
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Key(k) => write!(f, "key {:?}", crate::text::Esc(k).to_string()),
            Target::Artifact(d) => write!(f, "artifact sha256:{d}"),
            Target::Record(d) => write!(f, "record sha256:{d}"),
        }
    }
}

/// One `[[revoked]]` entry of the trust policy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Revocation {
    pub target: Target,
    pub reason: String,
    /// When it was revoked (RFC 3339, as written in the policy).
    pub time: String,
}

impl fmt::Display for Revocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} is revoked by the trust policy since {} (reason: {})",
            self.target,
            self.time,
            crate::text::one_line(&self.reason)
        )
    }
}

/// A `[[revoked]]` entry as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RevokedEntry {
    key: Option<String>,
    artifact: Option<String>,
    record: Option<String>,
    reason: String,
    time: String,
}

/// `sha256:HEX` or `HEX` (64 hex digits) as lowercase hex.
pub fn digest_hex(s: &str) -> Option<String> {
    let h = s.trim().strip_prefix("sha256:").unwrap_or(s.trim());
    (h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit())).then(|| h.to_ascii_lowercase())
}

impl RevokedEntry {
    /// Check the entry; `key_names` are the policy's `[[key]]` names.
    pub(crate) fn into_revocation(self, key_names: &[&str]) -> Result<Revocation, String> {
        let target = match (self.key, self.artifact, self.record) {
            (Some(k), None, None) => {
                if key_names.contains(&k.as_str()) {
                    Target::Key(k)
                } else {
                    let id = digest_hex(&k).ok_or_else(|| {
                        format!("[[revoked]] key = {k:?} is neither a [[key]] name of this policy nor a key id (64 hex digits)")
                    })?;
                    Target::Key(id)
                }
            }
            (None, Some(a), None) => Target::Artifact(digest_hex(&a).ok_or_else(|| {
                format!("[[revoked]] artifact = {a:?} is not sha256:<64 hex digits> (a manifest root digest)")
            })?),
            (None, None, Some(r)) => Target::Record(digest_hex(&r).ok_or_else(|| {
                format!("[[revoked]] record = {r:?} is not sha256:<64 hex digits> (the SHA-256 of a record file)")
            })?),
            _ => {
                return Err(
                    "each [[revoked]] entry needs exactly one of `key`, `artifact` or `record`"
                        .into(),
                )
            }
        };
        if self.reason.trim().is_empty() {
            return Err(format!("[[revoked]] {target}: `reason` is empty"));
        }
        OffsetDateTime::parse(&self.time, &Rfc3339).map_err(|_| {
            format!(
                "[[revoked]] {target}: time = {:?} is not an RFC 3339 time such as 2026-11-30T08:00:00Z",
                self.time
            )
        })?;
        Ok(Revocation {
            target,
            reason: self.reason,
            time: self.time,
        })
    }
}

impl Policy {
    /// The entry revoking the key named `name` (in this policy) or with key id `keyid`.
    pub fn revoked_key(&self, name: &str, keyid: &str) -> Option<&Revocation> {
        self.revoked.iter().find(|r| match &r.target {
            Target::Key(k) => {
                (!name.is_empty() && k == name)
                    || (!keyid.is_empty() && k.eq_ignore_ascii_case(keyid))
            }
            _ => false,
        })
    }

    /// The entry revoking the artifact with manifest root `root` (hex).
    pub fn revoked_artifact(&self, root: &str) -> Option<&Revocation> {
        self.revoked
            .iter()
            .find(|r| matches!(&r.target, Target::Artifact(d) if d.eq_ignore_ascii_case(root)))
    }

    /// The entry revoking the record whose envelope file has SHA-256 `digest` (hex).
    pub fn revoked_record(&self, digest: &str) -> Option<&Revocation> {
        self.revoked
            .iter()
            .find(|r| matches!(&r.target, Target::Record(d) if d.eq_ignore_ascii_case(digest)))
    }

    /// The entry revoking what a record's input names directly: its producer
    /// record (proof of type `record`, by file digest) or the artifact it
    /// consumed (its digest: a manifest root, or a producer's outputs digest).
    pub fn revoked_input(&self, dep: &crate::record::Dependency) -> Option<&Revocation> {
        if self.revoked.is_empty() {
            return None;
        }
        let proof = dep.proof()?;
        (proof.kind == crate::record::ProofKind::Record)
            .then(|| self.revoked_record(&proof.sha256))
            .flatten()
            .or_else(|| self.revoked_artifact(dep.descriptor.digest.get("sha256")?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn parse(revoked: &str) -> Result<Policy, String> {
        let key = crate::keys::SigningKey::generate().public().to_pem();
        let text = format!("[[key]]\nname = \"reg\"\npem = \"\"\"{key}\"\"\"\n{revoked}");
        Policy::parse(&text, Path::new("t.toml")).map_err(|e| e.to_string())
    }

    #[test]
    fn entries_parse_and_match() {
        let root = "AB".repeat(32);
        let p = parse(&format!(
            "[[revoked]]\nkey = \"reg\"\nreason = \"leaked\"\ntime = \"2026-01-01T00:00:00Z\"\n\
             [[revoked]]\nartifact = \"sha256:{root}\"\nreason = \"poisoned\"\ntime = \"2026-01-02T00:00:00Z\"\n"
        ))
        .unwrap();
        assert!(p.revoked_key("reg", "").is_some());
        assert!(p.revoked_key("other", "").is_none());
        let r = p.revoked_artifact(&"ab".repeat(32)).unwrap();
        assert_eq!(r.reason, "poisoned");
        assert!(r
            .to_string()
            .contains("since 2026-01-02T00:00:00Z (reason: poisoned)"));
        assert!(p.revoked_record(&"ab".repeat(32)).is_none());
    }

    #[test]
    fn malformed_entries_make_the_policy_invalid() {
        for (entry, needle) in [
            ("key = \"nobody\"", "neither a [[key]] name"),
            ("artifact = \"sha256:1234\"", "not sha256:<64 hex digits>"),
            ("record = \"xyz\"", "not sha256:<64 hex digits>"),
            ("key = \"reg\"\nrecord = \"sha256:00\"", "exactly one of"),
            ("reason2 = \"x\"", "unknown field"),
        ] {
            let e = parse(&format!(
                "[[revoked]]\n{entry}\nreason = \"r\"\ntime = \"2026-01-01T00:00:00Z\"\n"
            ))
            .unwrap_err();
            assert!(e.contains(needle), "{entry}: {e}");
        }
        let e = parse("[[revoked]]\nkey = \"reg\"\nreason = \"r\"\ntime = \"yesterday\"\n")
            .unwrap_err();
        assert!(e.contains("not an RFC 3339 time"), "{e}");
        let e =
            parse("[[revoked]]\nkey = \"reg\"\nreason = \" \"\ntime = \"2026-01-01T00:00:00Z\"\n")
                .unwrap_err();
        assert!(e.contains("`reason` is empty"), "{e}");
    }
}
