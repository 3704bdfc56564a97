//! Staging: make the bytes a job reads the bytes that were verified.
//!
//! Guarantees:
//! - Each run stages into a folder of its own, `BASE/.sealrun-stage-ID` (ID: the run's random
//!   invocation id). It is made with `mkdir` (which fails if anything is there already), mode
//!   0700, then opened (`O_DIRECTORY|O_NOFOLLOW`) and refused unless it is an empty folder owned
//!   by the launcher's effective uid and not writable by group or others. From then on it is
//!   reached only through that descriptor (`/proc/self/fd/N/…`), never by its path again: another
//!   user who can write BASE may rename it, or anything above it, and nothing changes for the run.
//! - For a signed input ([`Staging::stage_signed`]), the file list and sizes are checked against
//!   the signature first (nothing read), then only the files the signature lists are copied in:
//!   each source is opened `O_NOFOLLOW|O_NONBLOCK`, must be a regular file of the listed size,
//!   and exactly that many bytes are copied *and hashed in the same read* (see
//!   [`crate::copyhash`]: the digest is of the bytes written to the copy, holes preserved). The
//!   digests are then compared with the signed ones, naming the first file that differs. The
//!   code folder and record inputs are copied whole (regular files and folders only) and hashed
//!   by the caller. Files are 0444, folders 0755.
//! - Each staged tree is opened relative to the staging descriptor ([`Staging::open_bind`]) and the
//!   sandbox binds it from that descriptor, not by path. (A rootless launcher's sandbox must look
//!   the path up again, so there BASE and every folder above it must be writable by no one else:
//!   [`Staging::create`] refuses otherwise.)
//! - Whole-tree copies (code, record inputs) use `copy_file_range`, so filesystems with
//!   reflinks share blocks.
//! - The folder is removed when the run ends (a killed launcher leaves `.sealrun-stage-ID`).

use std::fs::{File, OpenOptions};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use sealrun_verifier::artifact::{self, Signed, VerifyError};
use sealrun_verifier::manifest::{self, Listed, Manifest, Resource};

/// Why staging failed.
#[derive(Debug, thiserror::Error)]
pub enum StagingError {
    #[error("staging {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("staging {path}: is a symlink or special file; inputs may hold regular files and folders only")]
    NotRegular { path: PathBuf },
    #[error("staging folder {path} already exists; a fresh one is made for every run, so another process made it: refusing to share it")]
    Exists { path: PathBuf },
    #[error("staging folder {path} is owned by uid {owner}, not by the launcher (uid {euid}): another user replaced it; refusing to stage there")]
    NotOwned {
        path: PathBuf,
        owner: u32,
        euid: u32,
    },
    #[error("staging folder {path} has mode {mode:04o}: writable by group or others (or not an empty folder); refusing to stage there")]
    Writable { path: PathBuf, mode: u32 },
    #[error(
        "staging {path}: changed while it was copied ({expected} bytes listed, {actual} found)"
    )]
    Changed {
        path: PathBuf,
        expected: u64,
        actual: u64,
    },
    #[error("cannot stage under {path}: it is {why}, and a launcher not running as root binds staged inputs by path; stage under folders only the launcher (or root) can write")]
    UnsafeBase { path: PathBuf, why: String },
    /// The files do not match the signature (the message names the file).
    #[error(transparent)]
    Verify(#[from] VerifyError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// The code folder's name in the staging folder. Inputs are staged under their names, which
/// are letters, digits, `.`, `_` and `-` only (see `spec`): no input can take this one.
pub const CODE_DIR: &str = "@code";

/// A staged input or code folder.
#[derive(Debug)]
pub struct Staged {
    /// Where to read it (through the staging descriptor): hash this.
    pub path: PathBuf,
    /// Relative to the staging folder: bind this ([`Staging::open_bind`]).
    pub rel: PathBuf,
    /// How it got there, for the record: `single-pass` (copied and hashed in one read),
    /// `store-hit`, `store-miss` (see [`crate::store`]) or `copy` (hashed by the caller).
    pub how: &'static str,
    /// A store entry, opened for binding (then `rel` is not used).
    pub(crate) bind: Option<OwnedFd>,
    /// An encrypted input, decrypted into a sealed tmpfs that is attached as it is (then
    /// neither `rel` nor `bind` is used; see [`crate::decrypt`]).
    pub decrypted: Option<crate::decrypt::Decrypted>,
}

/// A private staging folder for one run, held open; emptied and removed on drop.
#[derive(Debug)]
pub struct Staging {
    /// The folder, opened when it was made; held open for as long as `root` is used.
    _dir: File,
    /// `/proc/self/fd/N` for `dir`: paths under it never look up the folder's own path.
    root: PathBuf,
    /// Its path when it was made (for messages and removal).
    shown: PathBuf,
    /// The verified store signed inputs come from, if any.
    store: Option<crate::store::Store>,
    /// Locks on the store entries this run uses (held until the run ends).
    holds: std::sync::Mutex<Vec<File>>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StagingError + '_ {
    move |source| StagingError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl Staging {
    /// Make `BASE/.sealrun-stage-INVOCATION` and hold it open (see the module's guarantees).
    pub fn create(base: &Path, invocation: &str) -> Result<Staging, StagingError> {
        let euid = nix::unistd::geteuid().as_raw();
        if euid != 0 {
            check_base(base, euid)?;
        }
        let shown = base.join(format!(".sealrun-stage-{invocation}"));
        match std::fs::DirBuilder::new().mode(0o700).create(&shown) {
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(StagingError::Exists { path: shown })
            }
            r => r.map_err(io(&shown))?,
        }
        let dir = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&shown)
            .map_err(io(&shown))?;
        let stage = Staging::adopt(dir, shown, euid)?;
        Ok(stage)
    }

    /// Take `dir` (opened from `shown`) as the staging folder if it is an empty folder owned
    /// by `euid` and not writable by group or others.
    fn adopt(dir: File, shown: PathBuf, euid: u32) -> Result<Staging, StagingError> {
        let meta = dir.metadata().map_err(io(&shown))?;
        if meta.uid() != euid {
            return Err(StagingError::NotOwned {
                path: shown,
                owner: meta.uid(),
                euid,
            });
        }
        let root = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
        let empty = std::fs::read_dir(&root)
            .map_err(io(&shown))?
            .next()
            .is_none();
        if !meta.is_dir() || meta.mode() & 0o022 != 0 || !empty {
            return Err(StagingError::Writable {
                path: shown,
                mode: meta.mode() & 0o7777,
            });
        }
        Ok(Staging {
            _dir: dir,
            root,
            shown,
            store: None,
            holds: std::sync::Mutex::new(Vec::new()),
        })
    }

    /// The staging folder as it was named when made (for messages).
    pub fn shown(&self) -> &Path {
        &self.shown
    }

    /// `text` with the descriptor path of the staging folder replaced by its name.
    pub fn show(&self, text: &str) -> String {
        text.replace(&*self.root.to_string_lossy(), &self.shown.to_string_lossy())
    }

    /// Stage the signed input `src` as `STAGE/name`, given its file list and sizes `listed`,
    /// already checked against `signed` (nothing read): copy the listed files and hash them in
    /// the same read, and compare the digests with the signed ones. With a store attached
    /// ([`Staging::use_store`]), the input comes from the store instead (filled on first use;
    /// see [`crate::store`]).
    pub fn stage_signed(
        &self,
        name: &str,
        src: &Path,
        signed: &mut Signed,
        listed: Vec<Listed>,
    ) -> Result<Staged, StagingError> {
        if let Some(store) = self.store.as_ref().filter(|_| signed.sizes_signed) {
            let (entry, hold) = store.get_or_fill(signed, src, &listed)?;
            self.holds
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(hold);
            return Ok(entry);
        }
        let rel = PathBuf::from(name);
        let dst = self.root.join(&rel);
        make_dir(&dst)?;
        copy_hash_listed(&dst, &listed, signed)?;
        let src_is_file = std::fs::symlink_metadata(src).map_err(io(src))?.is_file();
        let (path, rel) = match (src_is_file, listed.as_slice()) {
            (true, [one]) => (dst.join(&one.path), rel.join(&one.path)),
            _ => (dst, rel),
        };
        Ok(Staged {
            path,
            rel,
            how: "single-pass",
            bind: None,
            decrypted: None,
        })
    }

    /// Use `store` for signed inputs from now on (held until the stage is dropped).
    pub fn use_store(&mut self, store: crate::store::Store) {
        self.store = Some(store);
    }

    /// Copy `src` (a file or a folder tree: regular files and folders only) to `STAGE/name`.
    pub fn copy_tree(&self, name: &str, src: &Path) -> Result<Staged, StagingError> {
        let rel = PathBuf::from(name);
        let dst = self.root.join(&rel);
        let meta = std::fs::symlink_metadata(src).map_err(io(src))?;
        if meta.is_file() {
            make_dir(&dst)?;
            let leaf = src
                .file_name()
                .map(PathBuf::from)
                .unwrap_or_else(|| name.into());
            copy_exact(src, &dst.join(&leaf), meta.len())?;
            return Ok(Staged {
                path: dst.join(&leaf),
                rel: rel.join(leaf),
                how: "copy",
                bind: None,
                decrypted: None,
            });
        }
        if !meta.is_dir() {
            return Err(StagingError::NotRegular {
                path: src.to_path_buf(),
            });
        }
        for entry in walkdir::WalkDir::new(src)
            .follow_links(false)
            .sort_by_file_name()
        {
            let entry = entry.map_err(|e| StagingError::Io {
                path: e.path().unwrap_or(src).to_path_buf(),
                source: e.into(),
            })?;
            let to = dst.join(entry.path().strip_prefix(src).unwrap_or(entry.path()));
            let ft = entry.file_type();
            if ft.is_dir() {
                make_dir(&to)?;
            } else if ft.is_file() {
                let size = entry.metadata().map_err(|e| StagingError::Io {
                    path: entry.path().to_path_buf(),
                    source: e.into(),
                })?;
                copy_exact(entry.path(), &to, size.len())?;
            } else {
                return Err(StagingError::NotRegular {
                    path: entry.into_path(),
                });
            }
        }
        Ok(Staged {
            path: dst,
            rel,
            how: "copy",
            bind: None,
            decrypted: None,
        })
    }

    /// Open what was staged for the sandbox to bind from: a store entry's descriptor, or the
    /// tree under the staging folder ([`Staging::open_bind`]).
    pub fn open_staged(&self, staged: &mut Staged) -> Result<OwnedFd, StagingError> {
        match staged.bind.take() {
            Some(fd) => Ok(fd),
            None => self.open_bind(&staged.rel),
        }
    }

    /// Open a staged tree (`rel` from [`Staged`]) relative to the staging descriptor, for the
    /// sandbox to bind from.
    pub fn open_bind(&self, rel: &Path) -> Result<OwnedFd, StagingError> {
        let path = self.root.join(rel);
        OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)
            .map(OwnedFd::from)
            .map_err(|source| StagingError::Io {
                path: self.shown.join(rel),
                source,
            })
    }
}

/// Copy each of `files` (checked against `signed`'s list and sizes) to `dst/PATH`, hashing it
/// in the same read, then compare the digests with the signed ones (the first file that
/// differs is named).
pub(crate) fn copy_hash_listed(
    dst: &Path,
    files: &[Listed],
    signed: &Signed,
) -> Result<(), StagingError> {
    make_parents(dst, files)?;
    let shard_size = signed.expected.shard_size;
    let dir = open_dir(dst)?;
    let resources = files
        .par_iter()
        .map(|f| {
            let to = create_copy_at(&dir, &f.path, &dst.join(&f.path))?;
            let (algorithm, digest) = copy_hash_one(&f.abs, to, &f.path, f.size, shard_size)?;
            Ok(Resource {
                path: f.path.clone(),
                size: f.size,
                algorithm,
                digest,
            })
        })
        .collect::<Result<Vec<_>, StagingError>>()?;
    let actual = Manifest {
        shard_size,
        resources,
    };
    let shown = format!("{:?}", signed.verified.name);
    artifact::compare(&shown, &signed.expected, &actual)?;
    Ok(())
}

/// Make the folders that hold `files` under `dst`, each once.
pub(crate) fn make_parents(dst: &Path, files: &[Listed]) -> Result<(), StagingError> {
    let mut dirs: Vec<&str> = files
        .iter()
        .filter_map(|f| f.path.rsplit_once('/').map(|(d, _)| d))
        .collect();
    dirs.sort_by(|a, b| manifest::path_order(a, b));
    dirs.dedup();
    for d in dirs {
        make_dirs(dst, &dst.join(d))?;
    }
    Ok(())
}

/// Open `from` for staging: not a symlink, a regular file of exactly `size` bytes.
pub(crate) fn open_source(from: &Path, size: u64) -> Result<File, StagingError> {
    use rustix::fs::{Mode, OFlags};
    // rustix, not std: musl's `open` adds an `fcntl(F_SETFD)` after every `O_CLOEXEC` open.
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    let src = rustix::fs::open(from, flags, Mode::empty())
        .map(File::from)
        .map_err(|e| match e {
            rustix::io::Errno::LOOP => StagingError::NotRegular {
                path: from.to_path_buf(),
            },
            _ => StagingError::Io {
                path: from.to_path_buf(),
                source: e.into(),
            },
        })?;
    let meta = src.metadata().map_err(io(from))?;
    if !meta.is_file() {
        return Err(StagingError::NotRegular {
            path: from.to_path_buf(),
        });
    }
    if meta.len() != size {
        return Err(StagingError::Changed {
            path: from.to_path_buf(),
            expected: size,
            actual: meta.len(),
        });
    }
    Ok(src)
}

/// Open the folder `dir` once, so that the files under it are made relative to it (a path
/// through `/proc/self/fd/N` costs a procfs lookup per file: ten times the rest of a 16 KiB
/// copy).
pub(crate) fn open_dir(dir: &Path) -> Result<OwnedFd, StagingError> {
    use rustix::fs::{Mode, OFlags};
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC | OFlags::NOFOLLOW;
    rustix::fs::open(dir, flags, Mode::empty()).map_err(|e| io(dir)(e.into()))
}

/// Create `rel` under `dir` (new, 0444) for a staged copy; `shown` names it in errors.
pub(crate) fn create_copy_at(dir: &OwnedFd, rel: &str, shown: &Path) -> Result<File, StagingError> {
    use rustix::fs::{Mode, OFlags};
    let flags = OFlags::RDWR | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC | OFlags::NOFOLLOW;
    rustix::fs::openat(dir, rel, flags, Mode::from_bits_truncate(0o444))
        .map(File::from)
        .map_err(|e| io(shown)(e.into()))
}

/// Copy exactly `size` bytes of the regular file `from` to the new file `dst` (made 0444),
/// hashing them in the same read.
fn copy_hash_one(
    from: &Path,
    dst: File,
    rel: &str,
    size: u64,
    shard_size: u64,
) -> Result<
    (
        sealrun_verifier::digest::Algorithm,
        sealrun_verifier::digest::Digest,
    ),
    StagingError,
> {
    let src = open_source(from, size)?;
    let r = crate::copyhash::copy_hash(&src, Some(&dst), size, shard_size).map_err(io(from))?;
    dst.set_permissions(std::fs::Permissions::from_mode(0o444))
        .map_err(io(Path::new(rel)))?;
    Ok(r)
}

/// A launcher that is not root binds by path: BASE and every folder above it must be writable
/// by no one but the launcher and root (a sticky folder is fine: others cannot rename our entry).
pub(crate) fn check_base(base: &Path, euid: u32) -> Result<(), StagingError> {
    let canon = std::fs::canonicalize(base).map_err(io(base))?;
    for dir in canon.ancestors() {
        let meta = std::fs::metadata(dir).map_err(io(dir))?;
        let why = if meta.uid() != 0 && meta.uid() != euid {
            format!("owned by uid {}", meta.uid())
        } else if meta.mode() & 0o022 != 0 && meta.mode() & 0o1000 == 0 {
            format!(
                "writable by group or others (mode {:04o})",
                meta.mode() & 0o7777
            )
        } else {
            continue;
        };
        return Err(StagingError::UnsafeBase {
            path: dir.to_path_buf(),
            why,
        });
    }
    Ok(())
}

/// `mkdir` one folder, 0755 whatever the umask.
pub(crate) fn make_dir(dir: &Path) -> Result<(), StagingError> {
    std::fs::DirBuilder::new()
        .mode(0o755)
        .create(dir)
        .map_err(io(dir))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).map_err(io(dir))
}

/// Make `dir` and the folders between `top` (which exists) and it.
fn make_dirs(top: &Path, dir: &Path) -> Result<(), StagingError> {
    if dir == top || dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        make_dirs(top, parent)?;
    }
    make_dir(dir)
}

/// Copy exactly `size` bytes of the regular file `from` to the new file `to` (0444).
fn copy_exact(from: &Path, to: &Path, size: u64) -> Result<(), StagingError> {
    let src = open_source(from, size)?;
    let mut dst = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o444)
        .custom_flags(libc::O_CLOEXEC)
        .open(to)
        .map_err(io(to))?;
    // `io::copy` of a `Take<File>` into a `File` is `copy_file_range` on Linux.
    let copied = std::io::copy(&mut std::io::Read::take(src, size), &mut dst).map_err(io(from))?;
    if copied != size {
        return Err(StagingError::Changed {
            path: from.to_path_buf(),
            expected: size,
            actual: copied,
        });
    }
    dst.set_permissions(std::fs::Permissions::from_mode(0o444))
        .map_err(io(to))
}

impl Drop for Staging {
    fn drop(&mut self) {
        if let Ok(rd) = std::fs::read_dir(&self.root) {
            for e in rd.flatten() {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
        // Remove the folder itself only if it is still where it was made (it is empty now).
        if std::fs::read_link(&self.root).is_ok_and(|now| now == self.shown) {
            let _ = std::fs::remove_dir(&self.shown);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open_dir(p: &Path) -> File {
        OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
            .open(p)
            .unwrap()
    }

    #[test]
    fn a_folder_of_another_uid_or_writable_by_others_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let euid = nix::unistd::geteuid().as_raw();
        let d = t.path().join("s");
        std::fs::create_dir(&d).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700)).unwrap();
        // Claimed for another uid: refused, naming both.
        let e = Staging::adopt(open_dir(&d), d.clone(), euid + 1).unwrap_err();
        assert!(
            e.to_string().contains(&format!("owned by uid {euid}"))
                && e.to_string().contains("not by the launcher"),
            "{e}"
        );
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = Staging::adopt(open_dir(&d), d.clone(), euid).unwrap_err();
        assert!(e.to_string().contains("mode 0777"), "{e}");
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::fs::write(d.join("planted"), b"x").unwrap();
        let e = Staging::adopt(open_dir(&d), d.clone(), euid).unwrap_err();
        assert!(e.to_string().contains("not an empty folder"), "{e}");
    }

    #[test]
    fn a_rootless_launcher_refuses_a_base_others_can_write() {
        let t = tempfile::tempdir().unwrap();
        let base = t.path().join("base");
        std::fs::create_dir(&base).unwrap();
        std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o777)).unwrap();
        let owner = std::fs::metadata(&base).unwrap().uid();
        let e = check_base(&base, owner).unwrap_err();
        assert!(
            e.to_string()
                .contains("writable by group or others (mode 0777)"),
            "{e}"
        );
        std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o1777)).unwrap();
        check_base(&base, owner).unwrap();
        std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o755)).unwrap();
        check_base(&base, owner).unwrap();
        if owner == 0 {
            // Another uid owns it: it can rename what we make in it.
            std::os::unix::fs::chown(&base, Some(65534), None).unwrap();
            let e = check_base(&base, 1000).unwrap_err();
            assert!(e.to_string().contains("owned by uid 65534"), "{e}");
        }
    }

    #[test]
    fn a_fresh_folder_survives_a_rename_of_its_path() {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("src");
        std::fs::create_dir(&src).unwrap();
        std::fs::write(src.join("f"), b"signed").unwrap();
        let stage = Staging::create(t.path(), "abc").unwrap();
        assert!(Staging::create(t.path(), "abc").is_err(), "same name twice");
        let staged = stage.copy_tree("in", &src).unwrap();
        // Someone moves the folder away and puts their own in its place.
        let moved = t.path().join("moved");
        std::fs::rename(stage.shown(), &moved).unwrap();
        std::fs::create_dir_all(stage.shown().join("in")).unwrap();
        std::fs::write(stage.shown().join("in/f"), b"evil").unwrap();
        assert_eq!(std::fs::read(staged.path.join("f")).unwrap(), b"signed");
        let fd = stage.open_bind(&staged.rel).unwrap();
        let now = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap();
        assert_eq!(now, moved.join("in"));
        drop(stage);
        assert!(!moved.join("in").exists(), "staged copy removed");
        assert_eq!(
            std::fs::read(t.path().join(".sealrun-stage-abc/in/f")).unwrap(),
            b"evil"
        );
    }
}
