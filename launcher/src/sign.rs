//! `sealrun sign`: hash a file or directory and write a signed DSSE envelope
//! next to it.
//!
//! Guarantees: the signature file is written atomically (a crash leaves no
//! half-written envelope) and never inside the tree being signed.
//!
//! Incremental signing ([`sign_incremental`]): next to every signature `SIG` goes `SIG.stat`,
//! each file's size, mtime, ctime, inode and device as `lstat` saw them before it was hashed,
//! bound to `SIG` by its SHA-256. Signing again with `--incremental SIG` reuses the signed
//! digest of every file whose five values are unchanged, after checking that `SIG` was signed
//! by the same key. The signer trusts its own disk for this (a change that restores all five
//! values would not be seen); verifiers never take such shortcuts: they hash every file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::sync::Mutex;

use sealrun_verifier::artifact::{self, ArtifactPredicate, SignOptions, ARTIFACT_PREDICATE_TYPE};
use sealrun_verifier::digest::Digest;
use sealrun_verifier::dsse::{self, Envelope, IN_TOTO_PAYLOAD_TYPE};
use sealrun_verifier::manifest::{Resource, WalkOptions};
use sealrun_verifier::policy::Kind;
use sealrun_verifier::{progress, rollback};
use serde::{Deserialize, Serialize};

use crate::keyfile;

/// Why signing failed.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error(transparent)]
    Key(#[from] keyfile::KeyFileError),
    #[error("{path}: {source}")]
    Artifact {
        path: PathBuf,
        #[source]
        source: artifact::SignError,
    },
    #[error("--out {out} is inside the signed tree {path}; write the signature outside it")]
    OutInside { out: PathBuf, path: PathBuf },
    #[error("{path}: cannot write signature: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid --label {0:?}: expected KEY=VALUE")]
    BadLabel(String),
    #[error("--incremental {path}: {message}")]
    Incremental { path: PathBuf, message: String },
}

/// A file as `lstat` saw it: size, mtime (ns), ctime (ns), inode, device.
type Stat = (u64, i128, i128, u64, u64);

fn stat_of(m: &std::fs::Metadata) -> Stat {
    let ns = |s: i64, n: i64| i128::from(s) * 1_000_000_000 + i128::from(n);
    (
        m.len(),
        ns(m.mtime(), m.mtime_nsec()),
        ns(m.ctime(), m.ctime_nsec()),
        m.ino(),
        m.dev(),
    )
}

/// `SIG.stat`: what each file looked like when `SIG` was made.
#[derive(Debug, Default, Serialize, Deserialize)]
struct StatFile {
    /// SHA-256 of the signature file these stats belong to.
    signature_sha256: String,
    files: HashMap<String, Stat>,
}

/// Where the stats of signature `sig` are kept.
pub fn stat_path(sig: &Path) -> PathBuf {
    let mut s = sig.as_os_str().to_owned();
    s.push(".stat");
    PathBuf::from(s)
}

/// What an earlier signature lets an incremental sign reuse.
struct Previous {
    stats: HashMap<String, Stat>,
    resources: HashMap<String, Resource>,
    shard_size: u64,
}

/// Load `old` (signed by `key`) and its `.stat` file. Without a matching `.stat` file nothing
/// can be reused (every file is hashed).
fn load_previous(
    old: &Path,
    key: &sealrun_verifier::keys::SigningKey,
) -> Result<Previous, SignError> {
    let bad = |message: String| SignError::Incremental {
        path: old.to_path_buf(),
        message,
    };
    let bytes = dsse::read_limited(old).map_err(|e| bad(e.to_string()))?;
    let env = Envelope::parse(&bytes).map_err(|e| bad(e.to_string()))?;
    let public = key.public();
    let keyid = public.keyid();
    let (_, payload) = env
        .verify(IN_TOTO_PAYLOAD_TYPE, |id| {
            if id == keyid {
                vec![(&(), &public)]
            } else {
                vec![]
            }
        })
        .map_err(|e| {
            bad(format!(
                "not signed by this key ({e}); only digests this key signed are reused"
            ))
        })?;
    let st =
        sealrun_verifier::statement::parse::<ArtifactPredicate>(&payload, ARTIFACT_PREDICATE_TYPE)
            .map_err(|e| bad(e.to_string()))?;
    let m = st.predicate.manifest;
    let stats = std::fs::read(stat_path(old))
        .ok()
        .and_then(|b| serde_json::from_slice::<StatFile>(&b).ok())
        .filter(|s| s.signature_sha256 == Digest::of(&bytes).to_hex())
        .map(|s| s.files)
        .unwrap_or_default();
    Ok(Previous {
        stats,
        shard_size: m.shard_size,
        resources: m
            .resources
            .into_iter()
            .map(|r| (r.path.clone(), r))
            .collect(),
    })
}

/// What to sign and how.
#[derive(Debug)]
pub struct SignRequest<'a> {
    pub path: &'a Path,
    pub key: &'a Path,
    pub kind: Kind,
    pub name: Option<String>,
    pub labels: &'a [String],
    pub version: u64,
    pub expires: Option<time::OffsetDateTime>,
    pub out: Option<PathBuf>,
    pub shard_size: u64,
    pub quiet: bool,
}

/// Parse `k=v` labels.
pub fn parse_labels(labels: &[String]) -> Result<BTreeMap<String, String>, SignError> {
    labels
        .iter()
        .map(|l| {
            l.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| SignError::BadLabel(l.clone()))
        })
        .collect()
}

/// Default signature path: `PATH.sig` next to the artifact.
pub fn default_out(path: &Path) -> PathBuf {
    let trimmed = path.components().as_path();
    let mut s = trimmed.as_os_str().to_owned();
    s.push(".sig");
    PathBuf::from(s)
}

/// Sign; returns where the envelope was written and what it says.
pub fn sign(req: &SignRequest) -> Result<(PathBuf, ArtifactPredicate), SignError> {
    sign_incremental(req, None).map(|(out, p, _)| (out, p))
}

/// Sign, reusing the digests of files unchanged since `old` (see the module's guarantees);
/// also returns how many files were hashed.
pub fn sign_incremental(
    req: &SignRequest,
    old: Option<&Path>,
) -> Result<(PathBuf, ArtifactPredicate, usize), SignError> {
    let key = keyfile::load_signing_key(req.key)?;
    let previous = old.map(|o| load_previous(o, &key)).transpose()?;
    let out = req.out.clone().unwrap_or_else(|| default_out(req.path));
    if let (Ok(root), Some(parent)) = (req.path.canonicalize(), out.parent()) {
        let parent = if parent.as_os_str().is_empty() {
            Path::new(".")
        } else {
            parent
        };
        if let Ok(p) = parent.canonicalize() {
            if root.is_dir() && p.starts_with(&root) {
                return Err(SignError::OutInside {
                    out: out.clone(),
                    path: req.path.to_path_buf(),
                });
            }
        }
    }
    let opts = SignOptions {
        name: req.name.clone(),
        kind: req.kind,
        labels: parse_labels(req.labels)?,
        version: req.version,
        expires: req.expires,
        walk: WalkOptions {
            shard_size: req.shard_size,
            ignore: Vec::new(),
            ..Default::default()
        },
    };
    let seen: Mutex<HashMap<String, Stat>> = Mutex::new(HashMap::new());
    // Every file's stat is taken before it is hashed (a change while hashing shows next time).
    let reuse = |rel: &str, abs: &Path| -> Option<Resource> {
        let now = stat_of(&std::fs::symlink_metadata(abs).ok()?);
        seen.lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(rel.to_string(), now);
        let p = previous.as_ref()?;
        let r = p.resources.get(rel)?;
        let same = p.shard_size == req.shard_size && p.stats.get(rel) == Some(&now);
        (same && r.size == now.0).then(|| r.clone())
    };
    let bar = progress::bytes_bar("hashing", req.quiet);
    let result = artifact::sign_artifact_reusing(req.path, &key, &opts, bar.as_ref(), Some(&reuse));
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let (env, predicate, hashed) = result.map_err(|source| SignError::Artifact {
        path: req.path.to_path_buf(),
        source,
    })?;
    let json = env.to_json();
    let write = |path: &Path, bytes: &[u8]| {
        rollback::write_atomic(path, bytes).map_err(|source| SignError::Write {
            path: path.to_path_buf(),
            source,
        })
    };
    write(&out, &json)?;
    let stats = StatFile {
        signature_sha256: Digest::of(&json).to_hex(),
        files: seen.into_inner().unwrap_or_else(|p| p.into_inner()),
    };
    write(
        &stat_path(&out),
        &serde_json::to_vec(&stats).unwrap_or_default(),
    )?;
    Ok((out, predicate, hashed))
}
