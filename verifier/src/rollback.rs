//! Rollback protection: a small state file remembering the highest version of
//! each artifact name already accepted.
//!
//! Guarantees: a version lower than one accepted before is refused; the state
//! file is replaced atomically (write to a temporary file in the same folder,
//! fsync, rename), so a crash leaves either the old or the new state.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Why the state file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum RollbackError {
    #[error("rollback state {path}: {message}")]
    State { path: PathBuf, message: String },
    #[error(transparent)]
    Read(crate::fsread::ReadError),
}

#[derive(Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateFile {
    accepted: BTreeMap<String, u64>,
}

/// The loaded state.
pub struct RollbackState {
    path: PathBuf,
    file: StateFile,
}

impl RollbackState {
    /// Load the state; a file that does not exist yet is an empty state.
    pub fn load(path: &Path) -> Result<Self, RollbackError> {
        let err = |message: String| RollbackError::State {
            path: path.to_path_buf(),
            message,
        };
        use crate::fsread::{read_bounded, Follow, MAX_STATE_BYTES};
        let file = match read_bounded(path, "rollback state", MAX_STATE_BYTES, Follow::Yes) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes).map_err(|e| err(format!("malformed: {e}")))?
            }
            Err(e) if e.is_not_found() => StateFile::default(),
            Err(e) => return Err(RollbackError::Read(e)),
        };
        Ok(RollbackState {
            path: path.to_path_buf(),
            file,
        })
    }

    /// The highest version accepted for `name`.
    pub fn seen(&self, name: &str) -> Option<u64> {
        self.file.accepted.get(name).copied()
    }

    /// Record that `version` of `name` was accepted, and save.
    pub fn accept(&mut self, name: &str, version: u64) -> Result<(), RollbackError> {
        let e = self
            .file
            .accepted
            .entry(name.to_string())
            .or_insert(version);
        *e = (*e).max(version);
        let bytes = serde_json::to_vec_pretty(&self.file).expect("state serializes");
        write_atomic(&self.path, &bytes).map_err(|e| RollbackError::State {
            path: self.path.clone(),
            message: format!("cannot write: {e}"),
        })
    }
}

/// Write `bytes` to `path` atomically: temp file in the same folder, fsync, rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        // Readable by all, like any other file written without a secret in it.
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644))?;
    }
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}
