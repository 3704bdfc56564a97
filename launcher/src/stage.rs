//! Staging: make the bytes a job reads the bytes that were verified.
//!
//! Mechanism: every input (and the code directory) is first copied into a
//! private staging folder owned by the launcher (files 0444, folders 0755,
//! under a 0711 parent no job uid can write to), then the *copy* is verified,
//! and only the copy is bound read-only into the sandbox. A change to the host
//! copy after that point can never reach the job; a change during the copy makes
//! the copy fail verification. Copies use `copy_file_range`, so filesystems with
//! reflinks share blocks instead of duplicating them. The staging folder is
//! removed when the run ends (and is recognisable by its invocation id if the
//! launcher was killed).

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Why staging failed.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error("staging {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("staging {path}: is a symlink or special file; inputs may hold regular files and folders only")]
    NotRegular { path: PathBuf },
}

/// A private staging folder for one run; removed on drop.
#[derive(Debug)]
pub struct Stage {
    root: PathBuf,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StageError + '_ {
    move |source| StageError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl Stage {
    /// Create `BASE/.sealrun-stage/INVOCATION`.
    pub fn create(base: &Path, invocation: &str) -> Result<Stage, StageError> {
        let parent = base.join(".sealrun-stage");
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o711)
            .create(&parent)
            .map_err(io(&parent))?;
        std::fs::set_permissions(&parent, std::fs::Permissions::from_mode(0o711))
            .map_err(io(&parent))?;
        let root = parent.join(invocation);
        std::fs::DirBuilder::new()
            .mode(0o755)
            .create(&root)
            .map_err(io(&root))?;
        Ok(Stage { root })
    }

    /// The staging folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Copy `src` (a file or a folder tree) to `STAGE/name`; returns the copy's path.
    pub fn copy_in(&self, name: &str, src: &Path) -> Result<PathBuf, StageError> {
        let dst = self.root.join(name);
        let meta = std::fs::symlink_metadata(src).map_err(io(src))?;
        if meta.is_file() {
            let leaf = src
                .file_name()
                .map(PathBuf::from)
                .unwrap_or_else(|| name.into());
            std::fs::DirBuilder::new()
                .mode(0o755)
                .create(&dst)
                .map_err(io(&dst))?;
            let to = dst.join(leaf);
            copy_file(src, &to)?;
            return Ok(to);
        }
        if !meta.is_dir() {
            return Err(StageError::NotRegular {
                path: src.to_path_buf(),
            });
        }
        for entry in walkdir_sorted(src)? {
            let (path, ft) = entry;
            let rel = path.strip_prefix(src).unwrap_or(&path);
            let to = dst.join(rel);
            if ft.is_dir() {
                std::fs::DirBuilder::new()
                    .mode(0o755)
                    .create(&to)
                    .map_err(io(&to))?;
            } else if ft.is_file() {
                copy_file(&path, &to)?;
            } else {
                return Err(StageError::NotRegular { path });
            }
        }
        Ok(dst)
    }
}

fn copy_file(from: &Path, to: &Path) -> Result<(), StageError> {
    std::fs::copy(from, to).map_err(io(from))?;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o444)).map_err(io(to))
}

/// Every entry under `root` (root first), without following symlinks.
fn walkdir_sorted(root: &Path) -> Result<Vec<(PathBuf, std::fs::FileType)>, StageError> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        out.push((
            dir.clone(),
            std::fs::symlink_metadata(&dir)
                .map_err(io(&dir))?
                .file_type(),
        ));
        let mut children: Vec<_> = std::fs::read_dir(&dir)
            .map_err(io(&dir))?
            .collect::<Result<_, _>>()
            .map_err(io(&dir))?;
        children.sort_by_key(|e| e.file_name());
        for e in children.into_iter().rev() {
            let ft = e.file_type().map_err(io(&e.path()))?;
            if ft.is_dir() {
                stack.push(e.path());
            } else {
                out.push((e.path(), ft));
            }
        }
    }
    Ok(out)
}

impl Drop for Stage {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}
