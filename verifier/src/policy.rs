//! Trust policy: which public keys are trusted, for which kinds of artifact,
//! and which label values each key may vouch for.
//!
//! Guarantees: unsigned, or signed by a key the policy does not name, means
//! untrusted; a key with a `kinds` list may sign only those kinds; a key with a
//! `labels` table may vouch only for the label keys and values it lists (any
//! other label on an artifact it signed is refused); `admit` narrows which label
//! values a consumer accepts at all; `[[revoked]]` entries withdraw trust from
//! keys, artifacts and records (see [`crate::revocation`]). A malformed policy
//! is an error, never an allow-all.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::keys::PublicKey;

/// What an envelope vouches for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Dataset,
    Features,
    Code,
    Model,
    /// A signed run record (issued by a launcher).
    Record,
    /// A signed audit-log checkpoint.
    Checkpoint,
    /// A TPM quote of a run record (the key is a TPM attestation key).
    #[serde(rename = "tpm-quote")]
    TpmQuote,
}

impl Kind {
    pub const ALL: [Kind; 7] = [
        Kind::Dataset,
        Kind::Features,
        Kind::Code,
        Kind::Model,
        Kind::Record,
        Kind::Checkpoint,
        Kind::TpmQuote,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Dataset => "dataset",
            Kind::Features => "features",
            Kind::Code => "code",
            Kind::Model => "model",
            Kind::Record => "record",
            Kind::Checkpoint => "checkpoint",
            Kind::TpmQuote => "tpm-quote",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Kind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Kind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                format!("unknown kind {s:?} (expected one of: dataset, features, code, model, record, checkpoint, tpm-quote)")
            })
    }
}

/// Why a policy could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error(transparent)]
    Io(#[from] crate::fsread::ReadError),
    #[error("{path}: invalid trust policy: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("{path}: key {name:?}: {message}")]
    BadKey {
        path: PathBuf,
        name: String,
        message: String,
    },
}

/// A key the policy trusts, with what it may sign.
#[derive(Clone, Debug)]
pub struct TrustedKey {
    /// A human name from the policy (shown in summaries).
    pub name: String,
    pub key: PublicKey,
    /// `None`: every kind.
    pub kinds: Option<BTreeSet<Kind>>,
    /// `None`: any label; otherwise label key → allowed values.
    pub labels: Option<BTreeMap<String, BTreeSet<String>>>,
}

impl TrustedKey {
    /// Whether this key may sign `kind`.
    pub fn may_sign(&self, kind: Kind) -> bool {
        self.kinds.as_ref().is_none_or(|k| k.contains(&kind))
    }

    /// The first label (key, value) this key may not vouch for.
    pub fn label_violation<'a>(
        &self,
        labels: &'a BTreeMap<String, String>,
    ) -> Option<(&'a str, &'a str)> {
        let allowed = self.labels.as_ref()?;
        labels.iter().find_map(|(k, v)| match allowed.get(k) {
            Some(vals) if vals.contains(v) => None,
            _ => Some((k.as_str(), v.as_str())),
        })
    }
}

/// A loaded trust policy.
#[derive(Clone, Debug, Default)]
pub struct Policy {
    pub keys: Vec<TrustedKey>,
    /// Label key → values a consumer admits (empty: admit everything).
    pub admit: BTreeMap<String, BTreeSet<String>>,
    /// Pipeline stages: who may produce what, and consume whom. Empty: any
    /// stage whose record is signed by a trusted launcher key.
    pub stages: Vec<StagePolicy>,
    /// `[[revoked]]` entries: keys, artifacts and records no longer trusted.
    pub revoked: Vec<crate::revocation::Revocation>,
    /// `launcher_sha256 = [...]`: the `sealrun` builds whose records are accepted (lowercase
    /// hex SHA-256 of the binary). Empty: any build.
    pub launchers: BTreeSet<String>,
    /// `[tpm] launcher_sha256 = [...]`: the builds a TPM quote's PCR 23 may name as the
    /// launcher. Empty: those of `launchers` (and if that is empty too, any build).
    pub tpm_launchers: BTreeSet<String>,
}

/// What one pipeline stage may do.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StagePolicy {
    /// The job name of the stage.
    pub name: String,
    /// If set, the stage's code folder must have this root digest (hex, optional `sha256:` prefix).
    pub code: Option<String>,
    /// Kinds the stage may produce (default: any).
    pub produces: Option<Vec<Kind>>,
    /// Stages whose outputs it may consume (default: any).
    pub consumes: Option<Vec<String>>,
}

/// Why a stage may not produce or consume something.
#[derive(Debug, thiserror::Error)]
pub enum StageViolation {
    #[error("stage {0:?} is not listed in the trust policy's [[stage]] entries")]
    Unknown(String),
    #[error("stage {stage:?} ran code sha256:{actual}, but the policy requires sha256:{expected}")]
    Code {
        stage: String,
        expected: String,
        actual: String,
    },
    #[error("stage {stage:?} may not produce kind {kind}")]
    Produces { stage: String, kind: Kind },
    #[error("stage {consumer:?} may not consume the outputs of stage {producer:?}")]
    Consumes { consumer: String, producer: String },
}

impl Policy {
    /// Check that `producer` (with code digest `code`) may produce `kind`, and
    /// that `consumer` (if named) may consume it. No `[[stage]]` entries: allowed.
    pub fn check_stage(
        &self,
        producer: &str,
        code: Option<&str>,
        kind: Kind,
        consumer: Option<&str>,
    ) -> Result<(), StageViolation> {
        if self.stages.is_empty() {
            return Ok(());
        }
        let p = self
            .stages
            .iter()
            .find(|s| s.name == producer)
            .ok_or_else(|| StageViolation::Unknown(producer.to_string()))?;
        if let Some(expected) = &p.code {
            let expected = expected.trim_start_matches("sha256:").to_ascii_lowercase();
            let actual = code.unwrap_or("(none)").to_string();
            if expected != actual {
                return Err(StageViolation::Code {
                    stage: producer.to_string(),
                    expected,
                    actual,
                });
            }
        }
        if let Some(kinds) = &p.produces {
            if !kinds.contains(&kind) {
                return Err(StageViolation::Produces {
                    stage: producer.to_string(),
                    kind,
                });
            }
        }
        if let Some(consumer) = consumer {
            let c = self
                .stages
                .iter()
                .find(|s| s.name == consumer)
                .ok_or_else(|| StageViolation::Unknown(consumer.to_string()))?;
            if let Some(allowed) = &c.consumes {
                if !allowed.iter().any(|a| a == producer) {
                    return Err(StageViolation::Consumes {
                        consumer: consumer.to_string(),
                        producer: producer.to_string(),
                    });
                }
            }
        }
        Ok(())
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    #[serde(default)]
    key: Vec<KeyEntry>,
    #[serde(default)]
    admit: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    stage: Vec<StagePolicy>,
    #[serde(default)]
    revoked: Vec<crate::revocation::RevokedEntry>,
    #[serde(default)]
    launcher_sha256: Vec<String>,
    #[serde(default)]
    tpm: TpmSection,
}

/// `[tpm]` of a trust policy.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TpmSection {
    #[serde(default)]
    launcher_sha256: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyEntry {
    name: String,
    public_key: Option<String>,
    pem: Option<String>,
    kinds: Option<Vec<String>>,
    labels: Option<BTreeMap<String, Vec<String>>>,
}

impl Policy {
    /// A policy that trusts one key for every kind and any label (`--key`).
    pub fn single_key(name: &str, key: PublicKey) -> Self {
        Policy {
            keys: vec![TrustedKey {
                name: name.to_string(),
                key,
                kinds: None,
                labels: None,
            }],
            admit: BTreeMap::new(),
            stages: Vec::new(),
            revoked: Vec::new(),
            launchers: BTreeSet::new(),
            tpm_launchers: BTreeSet::new(),
        }
    }

    /// Load a TOML policy; relative key paths are resolved against its folder.
    pub fn load(path: &Path) -> Result<Self, PolicyError> {
        use crate::fsread::{read_bounded_string, Follow, MAX_POLICY_BYTES};
        let text = read_bounded_string(path, "trust policy", MAX_POLICY_BYTES, Follow::Yes)?;
        Self::parse(&text, path)
    }

    /// Parse policy text; `path` names it in errors and anchors relative key paths.
    pub fn parse(text: &str, path: &Path) -> Result<Self, PolicyError> {
        let invalid = |message: String| PolicyError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        let file: PolicyFile =
            toml::from_str(text).map_err(|e| invalid(e.to_string().trim().replace('\n', " ")))?;
        if file.key.is_empty() {
            return Err(invalid(
                "no [[key]] entries: a policy must trust at least one key".into(),
            ));
        }
        let base = path.parent().unwrap_or(Path::new("."));
        let mut keys = Vec::new();
        let mut seen = BTreeSet::new();
        for e in file.key {
            let bad = |message: String| PolicyError::BadKey {
                path: path.to_path_buf(),
                name: e.name.clone(),
                message,
            };
            let pem = match (&e.public_key, &e.pem) {
                (Some(p), None) => {
                    let kp = base.join(p);
                    use crate::fsread::{read_bounded_string, Follow, MAX_KEY_BYTES};
                    read_bounded_string(&kp, "public_key", MAX_KEY_BYTES, Follow::Yes)
                        .map_err(|err| bad(err.to_string()))?
                }
                (None, Some(pem)) => pem.clone(),
                _ => {
                    return Err(bad(
                        "give exactly one of `public_key = \"FILE\"` or `pem = \"...\"`".into(),
                    ))
                }
            };
            let key = PublicKey::from_pem(&pem).map_err(|err| bad(err.to_string()))?;
            if !seen.insert(key.keyid()) {
                return Err(bad(format!("key {} is listed twice", key.keyid())));
            }
            let kinds = match e.kinds {
                None => None,
                Some(list) => Some(
                    list.iter()
                        .map(|k| k.parse::<Kind>())
                        .collect::<Result<BTreeSet<_>, _>>()
                        .map_err(bad)?,
                ),
            };
            let labels = e.labels.map(|m| {
                m.into_iter()
                    .map(|(k, v)| (k, v.into_iter().collect()))
                    .collect()
            });
            keys.push(TrustedKey {
                name: e.name.clone(),
                key,
                kinds,
                labels,
            });
        }
        let admit = file
            .admit
            .into_iter()
            .map(|(k, v)| (k, v.into_iter().collect()))
            .collect();
        let names: Vec<&str> = keys.iter().map(|k| k.name.as_str()).collect();
        let revoked = file
            .revoked
            .into_iter()
            .map(|e| e.into_revocation(&names))
            .collect::<Result<Vec<_>, _>>()
            .map_err(invalid)?;
        let digests = |list: &[String], field: &str| -> Result<BTreeSet<String>, PolicyError> {
            let mut out = BTreeSet::new();
            for d in list {
                let hex = d.trim_start_matches("sha256:").to_ascii_lowercase();
                if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(invalid(format!(
                        "{field} {d:?} is not a SHA-256 digest (64 hex digits, as `sha256sum sealrun` prints)"
                    )));
                }
                out.insert(hex);
            }
            Ok(out)
        };
        let launchers = digests(&file.launcher_sha256, "launcher_sha256")?;
        let tpm_launchers = digests(&file.tpm.launcher_sha256, "[tpm] launcher_sha256")?;
        Ok(Policy {
            keys,
            admit,
            stages: file.stage,
            revoked,
            launchers,
            tpm_launchers,
        })
    }

    /// Trusted keys matching `keyid` exactly; an empty keyid matches none.
    pub fn lookup(&self, keyid: &str) -> Vec<(&TrustedKey, &PublicKey)> {
        self.keys
            .iter()
            .filter(|k| !keyid.is_empty() && k.key.keyid() == keyid)
            .map(|k| (k, &k.key))
            .collect()
    }

    /// For Sigstore bundles only (whose signatures carry no keyid; the key is
    /// named by the bundle's verification material): an empty keyid is tried
    /// against every trusted key, any other keyid as in [`Policy::lookup`].
    pub fn lookup_bundle(&self, keyid: &str) -> Vec<(&TrustedKey, &PublicKey)> {
        if keyid.is_empty() {
            self.keys.iter().map(|k| (k, &k.key)).collect()
        } else {
            self.lookup(keyid)
        }
    }

    /// Choose the signer among the keys that verified an envelope: the first
    /// key, in policy order, for which `allowed` holds; if none is allowed, the
    /// first in policy order (whose refusal the caller then reports). Neither
    /// the order nor the number of signatures in the envelope matters.
    /// `verified` must not be empty and must hold keys of this policy.
    pub fn choose<'a>(
        &'a self,
        verified: &[&'a TrustedKey],
        allowed: impl Fn(&TrustedKey) -> bool,
    ) -> &'a TrustedKey {
        let ours: Vec<&TrustedKey> = self
            .keys
            .iter()
            .filter(|k| verified.iter().any(|v| std::ptr::eq(*v, *k)))
            .collect();
        ours.iter()
            .find(|k| allowed(k))
            .or(ours.first())
            .copied()
            .unwrap_or(verified[0])
    }

    /// The first label (key, value) that `admit` refuses; a missing label
    /// counts as the value `(unlabelled)` and is refused.
    pub fn admit_violation(&self, labels: &BTreeMap<String, String>) -> Option<(String, String)> {
        self.admit.iter().find_map(|(k, vals)| match labels.get(k) {
            Some(v) if vals.contains(v) => None,
            Some(v) => Some((k.clone(), v.clone())),
            None => Some((k.clone(), "(unlabelled)".to_string())),
        })
    }
}
