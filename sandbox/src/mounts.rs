//! The filesystem view. Guarantees: the job's root is a fresh tmpfs (read-only once built) reached
//! by `pivot_root`, with the old root detached, so no host path is reachable except the binds
//! listed here; system paths come read-only (nosuid, nodev) from the mount profile; `--ro` binds
//! are read-only, `--rw` binds nosuid+nodev; `/tmp` and `/dev/shm` are size-capped tmpfs; `/dev`
//! holds only null, zero, full, random, urandom, tty, and the device nodes the caller asks for
//! (GPUs, see [`crate::devices`]); `/proc` is a fresh procfs of the sandbox's
//! pid namespace; `/sys` is absent unless the profile asks.
//!
//! Bind sources are resolved and opened once, at plan time (the launcher's view), with
//! `openat2(O_PATH, RESOLVE_NO_SYMLINKS|RESOLVE_NO_MAGICLINKS)`. Started as root, the supervisor
//! clones each mount from that very descriptor (`open_tree(OPEN_TREE_CLONE)`) and flags it
//! read-only with `mount_setattr` *before* it is attached, so a folder swapped after planning (for
//! a symlink or for another folder) is never what the job sees, and there is no window where a
//! read-only bind is writable. (Rootless, the child must look the paths up again in its own
//! mount namespace, with the same `openat2` flags: a swapped-in symlink is refused.)
//! Host symlinks in the mount profile (e.g. `/lib -> usr/lib`) are recreated as symlinks.

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use crate::sys::{MOUNT_ATTR_NODEV, MOUNT_ATTR_NOSUID, MOUNT_ATTR_RDONLY};

/// `MOUNT_ATTR_NOEXEC`.
const MOUNT_ATTR_NOEXEC: u64 = 0x8;

/// Where the new root is assembled (a tmpfs mounted over it in the sandbox's private mount
/// namespace; the host's directory is untouched).
pub const NEW_ROOT: &str = "/tmp";

/// Size of the root tmpfs itself before `/dev/shm` (it holds only folders, symlinks and empty
/// files, which take no data blocks).
pub const ROOT_SIZE: u64 = 64 << 10;

/// Default size of `/tmp` inside.
pub const DEFAULT_TMP_SIZE: u64 = 256 << 20;
/// The smallest default size of `/dev/shm` (see [`crate::plan::default_shm_size`]).
pub const DEFAULT_SHM_SIZE: u64 = 64 << 20;

/// Device nodes bound from the host.
pub const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

/// Errors planning mounts.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// A bind source is missing or unreadable.
    #[error("bind source {path}: {source}")]
    Source {
        /// Host path.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// A destination is not an absolute, normalized path, or is reserved.
    #[error(
        "bad mount destination {0:?}: must be absolute, without '..', and not /, /proc or /dev"
    )]
    BadDest(String),
}

/// A bind source prepared into a detached mount tree.
#[derive(Debug, Clone)]
pub struct BindSource {
    /// Canonical host path.
    pub host: PathBuf,
    /// Same, as a C string.
    pub c_host: CString,
    /// `MOUNT_ATTR_*` to set on the tree.
    pub attrs: u64,
    /// Whether it is a directory.
    pub is_dir: bool,
    /// Read-write.
    pub write: bool,
    /// A detached mount (see [`crate::detached`]): attached as it is, never cloned, and never
    /// looked up by path (a rootless sandbox, which must look binds up again, refuses it).
    pub detached: bool,
    /// The source, opened at plan time without following symlinks (`O_PATH`). When started as
    /// root the supervisor clones the bind from this very descriptor, and the Landlock rule is
    /// made from it too: what was planned is what gets mounted, with no second path lookup.
    pub fd: Arc<OwnedFd>,
}

/// One step of building the new root, all paths absolute under [`NEW_ROOT`].
#[derive(Debug, Clone)]
pub enum MountOp {
    /// `mkdir` (EEXIST is fine).
    Dir(CString),
    /// Create an empty file to bind a file onto.
    File(CString),
    /// Attach prepared tree `source` (index into [`MountPlan::binds`]) at the path.
    Bind(usize, CString),
    /// Mount a tmpfs with the given data (`size=…,mode=…`).
    Tmpfs(CString, CString),
    /// A secrets tmpfs: attach the one the supervisor prepared (root mode: `noswap`, see
    /// [`MountPlan::secret_sizes`]) from slot `usize` of the prepared trees, or else mount one
    /// like [`MountOp::Tmpfs`].
    SecretTmpfs(CString, CString, usize),
    /// Create a symlink `(link target, link path)`.
    Symlink(CString, CString),
    /// A folder with exactly this mode (e.g. `/dev/shm`, sticky and world-writable) on the root
    /// tmpfs (which is sized for it), bound onto itself so that it stays writable once the root
    /// is read-only.
    SharedDir(CString, u32),
    /// Mount procfs.
    Proc(CString),
    /// A small file of the root tmpfs with this content (mode 0644), e.g. `/etc/passwd`.
    Content(CString, Vec<u8>),
}

/// The whole filesystem plan.
#[derive(Debug, Clone, Default)]
pub struct MountPlan {
    /// Bind sources.
    pub binds: Vec<BindSource>,
    /// Ordered ops.
    pub ops: Vec<MountOp>,
    /// In-sandbox paths and Landlock masks for rules the child adds: `(path, which mask)`.
    pub landlock_paths: Vec<(CString, LandlockClass)>,
    /// Mount options of the root tmpfs (`mode=0755,size=…`).
    pub root_data: CString,
    /// Sizes of the secrets tmpfs mounts; the prepared tree of the k-th is in slot
    /// `binds.len() + k`.
    pub secret_sizes: Vec<u64>,
}

impl MountPlan {
    /// In-sandbox paths of the tmpfs mounts the job can write: `/` (whose `/dev/shm` is the
    /// job's) and every [`MountOp::Tmpfs`] (never the secrets' tmpfs).
    pub fn own_tmpfs_paths(&self) -> Vec<CString> {
        let mut v = vec![CString::from(c"/")];
        for op in &self.ops {
            if let MountOp::Tmpfs(p, _) = op {
                if let Ok(c) = CString::new(strip(p)) {
                    v.push(c);
                }
            }
        }
        v
    }

    /// Slots of prepared trees: one per bind source, then one per secrets tmpfs.
    pub fn tree_slots(&self) -> usize {
        self.binds.len() + self.secret_sizes.len()
    }
}

/// Which Landlock mask an in-sandbox path gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LandlockClass {
    /// Everything.
    All,
    /// Read, no exec.
    ReadNoExec,
    /// List only.
    List,
    /// Read dir (devices are host binds with their own rules).
    DevDir,
    /// Read one file.
    ReadFile,
}

#[derive(Debug, Clone)]
enum Entry {
    Bind { src: usize },
    Tmpfs { size: u64, mode: u32 },
    SecretTmpfs { size: u64 },
    Content { data: Vec<u8> },
    Symlink { target: PathBuf },
    Dir,
    SharedDir { mode: u32 },
    Proc,
}

fn ro_attrs(write: bool) -> u64 {
    if write {
        MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV
    } else {
        MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV
    }
}

fn fstat(fd: &OwnedFd) -> std::io::Result<nix::sys::stat::FileStat> {
    nix::sys::stat::fstat(fd.as_raw_fd()).map_err(std::io::Error::from)
}

fn is_dir(st: &nix::sys::stat::FileStat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFDIR
}

/// The target of the symlink `fd` (opened `O_PATH|O_NOFOLLOW`: an empty path names it).
fn readlink_fd(fd: &OwnedFd) -> std::io::Result<PathBuf> {
    let mut buf = [0u8; libc::PATH_MAX as usize];
    // SAFETY: readlinkat into a live buffer of the length given; the empty path names the
    // symlink `fd` itself.
    let n = unsafe {
        libc::readlinkat(
            fd.as_raw_fd(),
            c"".as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let n = n as usize;
    if n == buf.len() {
        return Err(std::io::Error::from_raw_os_error(libc::ENAMETOOLONG));
    }
    Ok(PathBuf::from(std::ffi::OsStr::from_bytes(&buf[..n])))
}

fn cstr(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap_or_default()
}

/// Validate a destination: absolute, no `.`/`..`, not `/`.
pub fn check_dest(p: &Path) -> Result<PathBuf, MountError> {
    let bad = || MountError::BadDest(p.display().to_string());
    if !p.is_absolute() {
        return Err(bad());
    }
    let mut out = PathBuf::from("/");
    for c in p.components() {
        match c {
            Component::RootDir => {}
            Component::Normal(s) => out.push(s),
            _ => return Err(bad()),
        }
    }
    if out == Path::new("/") || out.starts_with("/proc") || out == Path::new("/dev") {
        return Err(bad());
    }
    Ok(out)
}

/// Builder for [`MountPlan`].
#[derive(Debug, Default)]
pub struct Builder {
    /// Bytes the root tmpfs holds besides its own small content (`/dev/shm`).
    root_extra: u64,
    binds: Vec<BindSource>,
    entries: Vec<(PathBuf, Entry)>,
    landlock: Vec<(PathBuf, LandlockClass)>,
}

impl Builder {
    /// Bind `host` (resolved now) at `dest`.
    pub fn bind(&mut self, host: &Path, dest: &Path, write: bool) -> Result<(), MountError> {
        let dest = check_dest(dest)?;
        let canon = std::fs::canonicalize(host).map_err(|source| MountError::Source {
            path: host.display().to_string(),
            source,
        })?;
        let fd = crate::sys::open_path_nofollow(&canon).map_err(|source| MountError::Source {
            path: canon.display().to_string(),
            source,
        })?;
        let st = fstat(&fd).map_err(|source| MountError::Source {
            path: canon.display().to_string(),
            source,
        })?;
        self.push_bind(canon, dest, ro_attrs(write), is_dir(&st), write, fd);
        Ok(())
    }

    /// Bind read-only at `dest` what `fd` (opened by the caller) refers to: no path lookup at
    /// all when started as root. A symlink is refused.
    pub fn bind_fd(&mut self, fd: OwnedFd, dest: &Path) -> Result<(), MountError> {
        let dest = check_dest(dest)?;
        let shown = format!("descriptor {}", fd.as_raw_fd());
        let fail = |source| MountError::Source {
            path: shown.clone(),
            source,
        };
        let st = fstat(&fd).map_err(fail)?;
        if st.st_mode & libc::S_IFMT == libc::S_IFLNK {
            return Err(fail(std::io::Error::from_raw_os_error(libc::ELOOP)));
        }
        // Where it is now: shown in reports, and looked up again only by a rootless child.
        let host = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).map_err(fail)?;
        self.push_bind(host, dest, ro_attrs(false), is_dir(&st), false, fd);
        Ok(())
    }

    /// Attach at `dest` the detached mount `fd` (a [`crate::detached::DetachedTmpfs`]) itself,
    /// read-only, nosuid, nodev and noexec.
    pub fn attach_fd(&mut self, fd: OwnedFd, dest: &Path) -> Result<(), MountError> {
        let dest = check_dest(dest)?;
        self.push_bind(
            PathBuf::from("(detached tmpfs)"),
            dest,
            crate::detached::SEALED_ATTRS,
            true,
            false,
            fd,
        );
        if let Some(b) = self.binds.last_mut() {
            b.detached = true;
        }
        Ok(())
    }

    fn push_bind(
        &mut self,
        host: PathBuf,
        dest: PathBuf,
        attrs: u64,
        is_dir: bool,
        write: bool,
        fd: OwnedFd,
    ) {
        // A later bind of the same destination replaces an earlier one.
        self.entries.retain(|(d, _)| d != &dest);
        let src = self.binds.len();
        self.binds.push(BindSource {
            c_host: cstr(&host),
            host,
            attrs,
            is_dir,
            write,
            detached: false,
            fd: Arc::new(fd),
        });
        self.entries.push((dest, Entry::Bind { src }));
    }

    /// A device node (opened by the caller, checked to be a character device) at `dest` under
    /// `/dev`: bound `nosuid,noexec` but not `nodev`, with a read-write Landlock rule (which
    /// includes device ioctls), like the standard nodes.
    pub(crate) fn device(
        &mut self,
        host: PathBuf,
        dest: &Path,
        fd: OwnedFd,
    ) -> Result<(), MountError> {
        let dest = check_dest(dest)?;
        self.push_bind(
            host,
            dest,
            MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC,
            false,
            true,
            fd,
        );
        Ok(())
    }

    /// A system path from the mount profile: read-only bind at the same place, a symlink if the
    /// host has a symlink there, nothing if it does not exist. One `openat2` and one `fstat`
    /// when no symlink leads to it (the common case); otherwise resolved as a `bind`.
    pub fn system(&mut self, path: &Path) -> Result<(), MountError> {
        let dest = check_dest(path)?;
        let fd = match crate::sys::open_path_nofollow(path) {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => return self.bind(path, path, false),
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) => {
                return Ok(())
            }
            Err(source) => {
                return Err(MountError::Source {
                    path: path.display().to_string(),
                    source,
                })
            }
        };
        let st = match fstat(&fd) {
            Ok(st) => st,
            Err(_) => return Ok(()),
        };
        if st.st_mode & libc::S_IFMT == libc::S_IFLNK {
            let target = readlink_fd(&fd).map_err(|source| MountError::Source {
                path: path.display().to_string(),
                source,
            })?;
            self.entries.retain(|(d, _)| d != &dest);
            self.entries.push((dest, Entry::Symlink { target }));
            return Ok(());
        }
        self.push_bind(
            path.to_path_buf(),
            dest,
            ro_attrs(false),
            is_dir(&st),
            false,
            fd,
        );
        Ok(())
    }

    /// Whether `p` is already visible read-only under a bind of the same host path.
    pub fn covers(&self, p: &Path) -> bool {
        self.entries.iter().any(|(d, e)| match e {
            Entry::Bind { src } => p.starts_with(d) && self.binds[*src].host == *d,
            _ => false,
        })
    }

    /// A tmpfs.
    pub fn tmpfs(&mut self, dest: &Path, size: u64, mode: u32) -> Result<(), MountError> {
        let dest = check_dest(dest)?;
        self.entries.retain(|(d, _)| d != &dest);
        self.entries
            .push((dest.clone(), Entry::Tmpfs { size, mode }));
        self.landlock.push((dest, LandlockClass::All));
        Ok(())
    }

    /// A small file with `data` on the root tmpfs (read-only once the root is), unless something
    /// else is put at `dest` later.
    pub fn content(&mut self, dest: &Path, data: Vec<u8>) -> Result<(), MountError> {
        let dest = check_dest(dest)?;
        self.entries.retain(|(d, _)| d != &dest);
        self.entries.push((dest.clone(), Entry::Content { data }));
        self.landlock.push((dest, LandlockClass::ReadFile));
        Ok(())
    }

    /// A small private tmpfs for secret files: the job may read, never write or exec.
    pub fn secret_dir(&mut self, dest: &Path, size: u64) -> Result<(), MountError> {
        let dest = check_dest(dest)?;
        self.entries.retain(|(d, _)| d != &dest);
        self.entries
            .push((dest.clone(), Entry::SecretTmpfs { size }));
        self.landlock.push((dest, LandlockClass::ReadNoExec));
        Ok(())
    }

    /// `/dev` (device binds, symlinks, `/dev/shm`), `/proc`, and a read-only `/sys` if asked.
    /// `/dev` is a folder of the root tmpfs and `/dev/shm` a sticky, world-writable folder in it,
    /// bound onto itself so it stays writable when the root turns read-only: no tmpfs of their
    /// own (a tmpfs superblock costs about 0.2 ms to make and tear down). The root tmpfs grows by
    /// `shm_size`; since `/dev/shm` is the only place in it the job can write, that is its cap.
    pub fn standard(&mut self, sys: bool, shm_size: u64) -> Result<(), MountError> {
        self.root_extra = self.root_extra.saturating_add(shm_size);
        self.entries.push((PathBuf::from("/dev"), Entry::Dir));
        self.landlock
            .push((PathBuf::from("/dev"), LandlockClass::DevDir));
        self.entries
            .push((PathBuf::from("/dev/shm"), Entry::SharedDir { mode: 0o1777 }));
        self.landlock
            .push((PathBuf::from("/dev/shm"), LandlockClass::All));
        for d in DEVICES {
            let host = Path::new("/dev").join(d);
            let Ok(fd) = crate::sys::open_path_nofollow(&host) else {
                continue;
            };
            self.push_bind(
                host.clone(),
                host,
                MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC,
                false,
                true,
                fd,
            );
        }
        for (link, target) in [
            ("fd", "/proc/self/fd"),
            ("stdin", "/proc/self/fd/0"),
            ("stdout", "/proc/self/fd/1"),
            ("stderr", "/proc/self/fd/2"),
        ] {
            self.entries.push((
                Path::new("/dev").join(link),
                Entry::Symlink {
                    target: target.into(),
                },
            ));
        }
        self.entries.push((PathBuf::from("/proc"), Entry::Proc));
        self.landlock
            .push((PathBuf::from("/proc"), LandlockClass::ReadNoExec));
        if sys {
            let fd = crate::sys::open_path_nofollow(Path::new("/sys")).map_err(|source| {
                MountError::Source {
                    path: "/sys".into(),
                    source,
                }
            })?;
            self.push_bind(
                "/sys".into(),
                "/sys".into(),
                MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC,
                true,
                false,
                fd,
            );
        }
        self.landlock
            .push((PathBuf::from("/"), LandlockClass::List));
        Ok(())
    }

    /// Produce the ordered plan: parents before children; for each mount point its missing
    /// ancestors are created first (inside whatever is already mounted there).
    pub fn finish(mut self) -> MountPlan {
        self.entries.sort_by(|a, b| a.0.cmp(&b.0));
        let root = Path::new(NEW_ROOT);
        let inside = |p: &Path| root.join(p.strip_prefix("/").unwrap_or(p));
        let mut ops = Vec::new();
        let mut secret_sizes = Vec::new();
        for (dest, e) in &self.entries {
            let mut anc = PathBuf::from("/");
            let comps: Vec<_> = dest.components().skip(1).collect();
            for c in &comps[..comps.len().saturating_sub(1)] {
                anc.push(c);
                ops.push(MountOp::Dir(cstr(&inside(&anc))));
            }
            let target = cstr(&inside(dest));
            match e {
                Entry::Bind { src } => {
                    ops.push(if self.binds[*src].is_dir {
                        MountOp::Dir(target.clone())
                    } else {
                        MountOp::File(target.clone())
                    });
                    ops.push(MountOp::Bind(*src, target));
                }
                Entry::Tmpfs { size, mode } => {
                    ops.push(MountOp::Dir(target.clone()));
                    let data =
                        CString::new(format!("size={size},mode={mode:o}")).unwrap_or_default();
                    ops.push(MountOp::Tmpfs(target, data));
                }
                Entry::SecretTmpfs { size } => {
                    ops.push(MountOp::Dir(target.clone()));
                    let data = CString::new(format!("size={size},mode=755")).unwrap_or_default();
                    ops.push(MountOp::SecretTmpfs(
                        target,
                        data,
                        self.binds.len() + secret_sizes.len(),
                    ));
                    secret_sizes.push(*size);
                }
                Entry::Content { data } => ops.push(MountOp::Content(target, data.clone())),
                Entry::Symlink { target: t } => ops.push(MountOp::Symlink(cstr(t), target)),
                Entry::Dir => ops.push(MountOp::Dir(target)),
                Entry::SharedDir { mode } => ops.push(MountOp::SharedDir(target, *mode)),
                Entry::Proc => {
                    ops.push(MountOp::Dir(target.clone()));
                    ops.push(MountOp::Proc(target));
                }
            }
        }
        // Drop repeated mkdirs of the same path.
        let mut seen = std::collections::HashSet::new();
        ops.retain(|op| match op {
            MountOp::Dir(p) => seen.insert(p.clone()),
            _ => true,
        });
        let landlock_paths = self.landlock.iter().map(|(p, c)| (cstr(p), *c)).collect();
        let root_data = CString::new(format!(
            "mode=0755,size={}",
            ROOT_SIZE.saturating_add(self.root_extra)
        ))
        .unwrap_or_default();
        MountPlan {
            binds: self.binds,
            ops,
            landlock_paths,
            root_data,
            secret_sizes,
        }
    }
}

/// A human description of a bind source for error messages.
pub fn describe_op(plan: &MountPlan, index: usize) -> String {
    match plan.ops.get(index) {
        Some(MountOp::Dir(p))
        | Some(MountOp::File(p))
        | Some(MountOp::Content(p, _))
        | Some(MountOp::Proc(p))
        | Some(MountOp::SharedDir(p, _)) => strip(p),
        Some(MountOp::Bind(s, p)) => format!("{} -> {}", plan.binds[*s].host.display(), strip(p)),
        Some(MountOp::Tmpfs(p, d)) | Some(MountOp::SecretTmpfs(p, d, _)) => {
            format!("tmpfs {} ({})", strip(p), d.to_string_lossy())
        }
        Some(MountOp::Symlink(t, p)) => format!("{} -> {}", strip(p), t.to_string_lossy()),
        None => String::new(),
    }
}

fn strip(p: &CString) -> String {
    let s = p.to_string_lossy();
    match s.strip_prefix(NEW_ROOT) {
        Some("") => "/".into(),
        Some(r) => r.into(),
        None => s.into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dest_checks() {
        assert!(check_dest(Path::new("relative")).is_err());
        assert!(check_dest(Path::new("/a/../b")).is_err());
        assert!(check_dest(Path::new("/")).is_err());
        assert!(check_dest(Path::new("/proc/x")).is_err());
        assert_eq!(
            check_dest(Path::new("/a//b/")).unwrap(),
            PathBuf::from("/a/b")
        );
    }

    #[test]
    fn parents_mount_before_children() {
        let mut b = Builder::default();
        b.tmpfs(Path::new("/tmp"), 1 << 20, 0o1777).unwrap();
        b.bind(Path::new("/usr"), Path::new("/tmp/x/usr"), false)
            .unwrap();
        b.standard(false, 1 << 20).unwrap();
        let plan = b.finish();
        let pos = |want: &str| {
            plan.ops.iter().position(|o| matches!(o, MountOp::Tmpfs(p, _) | MountOp::Bind(_, p) | MountOp::Dir(p) | MountOp::SharedDir(p, _) if p.to_str().unwrap() == want)).unwrap()
        };
        assert!(pos("/tmp/tmp") < pos("/tmp/tmp/x/usr"));
        assert!(pos("/tmp/dev") < pos("/tmp/dev/null"));
        assert!(pos("/tmp/dev") < pos("/tmp/dev/shm"));
        // /dev and /dev/shm live on the root tmpfs, which is sized for /dev/shm.
        assert!(!plan.ops.iter().any(
            |o| matches!(o, MountOp::Tmpfs(p, _) if p.to_str().unwrap().starts_with("/tmp/dev"))
        ));
        assert_eq!(
            plan.root_data.to_str().unwrap(),
            format!("mode=0755,size={}", ROOT_SIZE + (1 << 20))
        );
    }
}
