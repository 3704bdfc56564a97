//! Hashing a job's output directory: every regular file with its plain
//! SHA-256 (the form in-toto subjects use), and every symlink recorded with its
//! target but never followed.
//!
//! Guarantees: nothing outside the directory is ever read, whatever the job
//! left behind; special files are listed, not opened.

use std::path::Path;

use serde::Serialize;

use crate::manifest::{Manifest, ManifestError, WalkOptions};

/// A symlink or special file found among the outputs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NonFile {
    pub path: String,
    /// `symlink` or `special` (FIFO, socket, device).
    pub kind: &'static str,
    /// The link target, for symlinks (as text, never resolved).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

/// The outputs.
#[derive(Clone, Debug)]
pub struct Outputs {
    /// Regular files, hashed with plain SHA-256.
    pub files: Manifest,
    /// Symlinks and special files, recorded only.
    pub other: Vec<NonFile>,
}

/// Hash the outputs under `dir` (which must be a directory).
pub fn hash_outputs(dir: &Path) -> Result<Outputs, ManifestError> {
    let mut other = Vec::new();
    let mut ignore = Vec::new();
    // First pass: find symlinks and special files, recorded and excluded.
    for entry in walkdir::WalkDir::new(dir).follow_links(false).min_depth(1) {
        let entry = entry.map_err(|e| ManifestError::Io {
            path: dir.to_path_buf(),
            source: e
                .into_io_error()
                .unwrap_or_else(|| std::io::Error::other("walk failed")),
        })?;
        let ft = entry.file_type();
        if ft.is_file() || ft.is_dir() {
            continue;
        }
        let rel = entry
            .path()
            .strip_prefix(dir)
            .unwrap_or(entry.path())
            .to_string_lossy()
            .into_owned();
        let (kind, target) = if ft.is_symlink() {
            let t = std::fs::read_link(entry.path())
                .ok()
                .map(|t| t.to_string_lossy().into_owned());
            ("symlink", t)
        } else {
            ("special", None)
        };
        ignore.push(rel.clone());
        other.push(NonFile {
            path: rel,
            kind,
            target,
        });
    }
    let files = Manifest::build(
        dir,
        &WalkOptions {
            shard_size: u64::MAX,
            ignore,
            ..Default::default()
        },
        None,
    )?;
    other.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(Outputs { files, other })
}
