//! Rollback protection: a small state file remembering the highest version of
//! each artifact name already accepted.
//!
//! Guarantees: a version lower than one accepted before is refused; the state
//! file is replaced atomically (write to a temporary file in the same folder,
//! fsync, rename), so a crash leaves either the old or the new state. A missing
//! state file is an error, never an empty state: deleting it would otherwise
//! undo the protection silently. It is made only by [`RollbackState::init`],
//! which refuses to replace one that exists.

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
    #[error("rollback state {path} does not exist; it is made only when initialised (`sealrun-verify artifact --state FILE --init-state`, or `sealrun run --init-rollback-state` for a launcher's), because a deleted state would silently undo rollback protection")]
    Missing { path: PathBuf },
    #[error("rollback state {path} already exists; initialising would discard the versions it holds (remove it first to reset it on purpose)")]
    Exists { path: PathBuf },
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
    /// Load the state; a file that does not exist is an error ([`RollbackError::Missing`]).
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
            Err(e) if e.is_not_found() => {
                return Err(RollbackError::Missing {
                    path: path.to_path_buf(),
                })
            }
            Err(e) => return Err(RollbackError::Read(e)),
        };
        Ok(RollbackState {
            path: path.to_path_buf(),
            file,
        })
    }

    /// Make a new, empty state file at `path`; refuses to replace one that exists.
    pub fn init(path: &Path) -> Result<Self, RollbackError> {
        let state = RollbackState {
            path: path.to_path_buf(),
            file: StateFile::default(),
        };
        let bytes = serde_json::to_vec_pretty(&state.file).expect("state serializes");
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let err = |e: std::io::Error| RollbackError::State {
            path: path.to_path_buf(),
            message: format!("cannot create: {e}"),
        };
        let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(err)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            // Like every file `write_atomic` writes.
            tmp.as_file()
                .set_permissions(std::fs::Permissions::from_mode(0o644))
                .map_err(err)?;
        }
        tmp.write_all(&bytes).map_err(err)?;
        tmp.as_file().sync_all().map_err(err)?;
        match tmp.persist_noclobber(path) {
            Ok(_) => Ok(state),
            Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => {
                Err(RollbackError::Exists {
                    path: path.to_path_buf(),
                })
            }
            Err(e) => Err(err(e.error)),
        }
    }

    /// The highest version accepted for `name`.
    pub fn seen(&self, name: &str) -> Option<u64> {
        self.file.accepted.get(name).copied()
    }

    /// Record that `version` of `name` was accepted, and save.
    pub fn accept(&mut self, name: &str, version: u64) -> Result<(), RollbackError> {
        self.note(name, version);
        self.save()
    }

    /// Record that `version` of `name` was accepted (kept in memory until [`Self::save`]).
    pub fn note(&mut self, name: &str, version: u64) {
        let e = self
            .file
            .accepted
            .entry(name.to_string())
            .or_insert(version);
        *e = (*e).max(version);
    }

    /// Write the state (atomically).
    pub fn save(&self) -> Result<(), RollbackError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_is_an_error_and_init_never_replaces() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("state.json");
        assert!(matches!(
            RollbackState::load(&p),
            Err(RollbackError::Missing { .. })
        ));
        let mut s = RollbackState::init(&p).unwrap();
        s.accept("data", 3).unwrap();
        assert!(matches!(
            RollbackState::init(&p),
            Err(RollbackError::Exists { .. })
        ));
        assert_eq!(RollbackState::load(&p).unwrap().seen("data"), Some(3));
    }
}
