//! `sealrun sign`: hash a file or directory and write a signed DSSE envelope
//! next to it.
//!
//! Guarantees: the signature file is written atomically (a crash leaves no
//! half-written envelope) and never inside the tree being signed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sealrun_verifier::artifact::{self, ArtifactPredicate, SignOptions};
use sealrun_verifier::manifest::WalkOptions;
use sealrun_verifier::policy::Kind;
use sealrun_verifier::{progress, rollback};

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
    let key = keyfile::load_signing_key(req.key)?;
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
    let bar = progress::bytes_bar("hashing", req.quiet);
    let result = artifact::sign_artifact(req.path, &key, &opts, bar.as_ref());
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let (env, predicate) = result.map_err(|source| SignError::Artifact {
        path: req.path.to_path_buf(),
        source,
    })?;
    rollback::write_atomic(&out, &env.to_json()).map_err(|source| SignError::Write {
        path: out.clone(),
        source,
    })?;
    Ok((out, predicate))
}
