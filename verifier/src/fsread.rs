//! Reading the small files sealrun trusts only after checking them:
//! signatures, checkpoints, records, policies, specs, keys and state files.
//!
//! Guarantees of [`read_bounded`]: the file is opened non-blocking (a FIFO
//! never hangs the open or the read) and, where asked, without following a
//! final symlink; it must be a regular file (a FIFO, socket, device such as
//! `/dev/zero` or a directory is refused by its type, from the opened
//! descriptor, never by a separate check of the path); at most `limit` bytes
//! are ever read (a file larger than that, or one that grows past it while
//! being read, is refused). The platform-specific flags apply on Unix only;
//! elsewhere the type and size checks still hold.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::path::{Path, PathBuf};

/// Trust policies, gate policies and job specs (1 MiB).
pub const MAX_POLICY_BYTES: u64 = 1 << 20;
/// PEM key files (64 KiB).
pub const MAX_KEY_BYTES: u64 = 64 << 10;
/// Rollback state files (16 MiB).
pub const MAX_STATE_BYTES: u64 = 16 << 20;
/// Audit logs (1 GiB: millions of entries).
pub const MAX_LOG_BYTES: u64 = 1 << 30;

/// Whether a final symlink in the path is followed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Follow {
    /// Follow it (paths an operator gave on the command line or in a spec).
    Yes,
    /// Refuse it (files found in folders others may write, e.g. a records folder).
    No,
}

/// Why a file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{}: cannot read {what}: {source}", crate::text::path(path))]
    Io {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {what} is a {kind}, not a regular file", crate::text::path(path))]
    NotRegular {
        path: PathBuf,
        what: &'static str,
        kind: &'static str,
    },
    #[error(
        "{}: {what} is {size} bytes, over the {limit}-byte limit",
        crate::text::path(path)
    )]
    TooLarge {
        path: PathBuf,
        what: &'static str,
        size: u64,
        limit: u64,
    },
}

impl ReadError {
    /// Whether the file does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, ReadError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    }
}

fn kind_of(ft: &std::fs::FileType) -> &'static str {
    if ft.is_dir() {
        return "directory";
    }
    if ft.is_symlink() {
        return "symlink";
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if ft.is_fifo() {
            return "FIFO";
        }
        if ft.is_socket() {
            return "socket";
        }
        if ft.is_char_device() {
            return "character device";
        }
        if ft.is_block_device() {
            return "block device";
        }
    }
    "special file"
}

fn open(path: &Path, follow: Follow) -> std::io::Result<File> {
    let mut o = OpenOptions::new();
    o.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // Non-blocking: opening a FIFO returns at once, reading an empty one too.
        // No controlling terminal from a tty given by mistake.
        let mut flags = libc::O_NONBLOCK | libc::O_NOCTTY;
        if follow == Follow::No {
            flags |= libc::O_NOFOLLOW;
        }
        o.custom_flags(flags);
    }
    #[cfg(not(unix))]
    let _ = follow;
    o.open(path)
}

/// Read the regular file at `path` (named `what` in errors), at most `limit` bytes.
pub fn read_bounded(
    path: &Path,
    what: &'static str,
    limit: u64,
    follow: Follow,
) -> Result<Vec<u8>, ReadError> {
    let io = |source| ReadError::Io {
        path: path.to_path_buf(),
        what,
        source,
    };
    let f = match open(path, follow) {
        Ok(f) => f,
        Err(e) => {
            // O_NOFOLLOW on a symlink fails with ELOOP: say what it is.
            if follow == Follow::No {
                if let Ok(m) = std::fs::symlink_metadata(path) {
                    if m.file_type().is_symlink() {
                        return Err(ReadError::NotRegular {
                            path: path.to_path_buf(),
                            what,
                            kind: "symlink (not followed)",
                        });
                    }
                }
            }
            return Err(io(e));
        }
    };
    let meta = f.metadata().map_err(io)?;
    if !meta.file_type().is_file() {
        return Err(ReadError::NotRegular {
            path: path.to_path_buf(),
            what,
            kind: kind_of(&meta.file_type()),
        });
    }
    let too_large = |size| ReadError::TooLarge {
        path: path.to_path_buf(),
        what,
        size,
        limit,
    };
    if meta.len() > limit {
        return Err(too_large(meta.len()));
    }
    let mut buf = Vec::with_capacity(meta.len() as usize);
    f.take(limit.saturating_add(1))
        .read_to_end(&mut buf)
        .map_err(io)?;
    if buf.len() as u64 > limit {
        return Err(too_large(buf.len() as u64));
    }
    Ok(buf)
}

/// [`read_bounded`], as UTF-8 text.
pub fn read_bounded_string(
    path: &Path,
    what: &'static str,
    limit: u64,
    follow: Follow,
) -> Result<String, ReadError> {
    let bytes = read_bounded(path, what, limit, follow)?;
    String::from_utf8(bytes).map_err(|_| ReadError::Io {
        path: path.to_path_buf(),
        what,
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8 text"),
    })
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn devices_fifos_folders_and_symlinks_are_refused() {
        let e = read_bounded(Path::new("/dev/zero"), "x", 10, Follow::Yes).unwrap_err();
        assert!(e.to_string().contains("is a character device"), "{e}");
        let d = tempfile::tempdir().unwrap();
        let e = read_bounded(d.path(), "x", 10, Follow::Yes).unwrap_err();
        assert!(e.to_string().contains("is a directory"), "{e}");
        let f = d.path().join("f");
        std::fs::write(&f, b"12345").unwrap();
        assert_eq!(read_bounded(&f, "x", 5, Follow::Yes).unwrap(), b"12345");
        let e = read_bounded(&f, "x", 4, Follow::Yes).unwrap_err();
        assert!(
            matches!(
                e,
                ReadError::TooLarge {
                    size: 5,
                    limit: 4,
                    ..
                }
            ),
            "{e}"
        );
        let l = d.path().join("l");
        std::os::unix::fs::symlink(&f, &l).unwrap();
        assert_eq!(read_bounded(&l, "x", 5, Follow::Yes).unwrap(), b"12345");
        let e = read_bounded(&l, "x", 5, Follow::No).unwrap_err();
        assert!(e.to_string().contains("symlink (not followed)"), "{e}");
        assert!(read_bounded(&d.path().join("none"), "x", 5, Follow::Yes)
            .unwrap_err()
            .is_not_found());
    }
}
