//! Detached tmpfs mounts: a filesystem that no path on the host reaches, filled by the caller
//! through the mount's descriptor, then attached read-only inside one sandbox (see
//! [`crate::config::SandboxConfig::attach`]).
//!
//! Guarantees: [`DetachedTmpfs::new`] makes the tmpfs with `fsopen`/`fsconfig`/`fsmount` in the
//! caller's mount namespace without attaching it anywhere: it exists only as the returned
//! descriptor (and, once attached, in the sandbox's mount namespace). It is `noswap` where the
//! kernel allows (6.4 and later, for a caller in the initial user namespace), so its pages never
//! reach a swap device; [`DetachedTmpfs::noswap`] says whether that held. Its size is capped at
//! creation. Where the kernel has transparent huge pages it is `huge=within_size`: a file sized
//! before it is written is backed by 2 MiB pages (a speed matter only; the size cap holds). [`DetachedTmpfs::seal`] flags the mount read-only, nosuid, nodev and noexec; after
//! that no write through any path to it succeeds. The filesystem is freed when the last
//! reference goes: the caller's descriptor and the sandbox's mount namespace.

use std::ffi::{CStr, CString};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// A detached tmpfs, held by its mount descriptor.
#[derive(Debug)]
pub struct DetachedTmpfs {
    fd: OwnedFd,
    size: u64,
    noswap: bool,
}

fn check(r: libc::c_long) -> std::io::Result<libc::c_long> {
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

const FSOPEN_CLOEXEC: libc::c_uint = 1;
const FSCONFIG_SET_FLAG: libc::c_uint = 0;
const FSCONFIG_SET_STRING: libc::c_uint = 1;
const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
const FSMOUNT_CLOEXEC: libc::c_uint = 1;

/// One filesystem context: `fsopen("tmpfs")`, its options, `fsmount`.
fn make(size: u64, noswap: bool) -> std::io::Result<OwnedFd> {
    // SAFETY: a NUL-terminated name; the descriptor is owned right away.
    let fs = check(unsafe { libc::syscall(libc::SYS_fsopen, c"tmpfs".as_ptr(), FSOPEN_CLOEXEC) })?;
    // SAFETY: `fs` was just returned by fsopen and is owned by nothing else.
    let fs = unsafe { OwnedFd::from_raw_fd(fs as i32) };
    let config = |cmd: libc::c_uint, key: Option<&CStr>, value: Option<&CStr>| {
        let ptr = |c: Option<&CStr>| c.map_or(std::ptr::null(), CStr::as_ptr);
        // SAFETY: NUL-terminated key and value, or null where the command takes none.
        check(unsafe {
            libc::syscall(
                libc::SYS_fsconfig,
                fs.as_raw_fd(),
                cmd,
                ptr(key),
                ptr(value),
                0,
            )
        })
    };
    let number = CString::new(size.to_string()).unwrap_or_default();
    config(FSCONFIG_SET_STRING, Some(c"size"), Some(&number))?;
    config(FSCONFIG_SET_STRING, Some(c"mode"), Some(c"755"))?;
    if noswap {
        config(FSCONFIG_SET_FLAG, Some(c"noswap"), None)?;
    }
    // Huge pages for whatever lies wholly inside a file's size (a caller that sets the size
    // first gets them for nearly all of a large file): a 2 MiB page is one allocation and one
    // charge where 4 KiB pages are 512, a third of the cost of filling the tmpfs. Without
    // transparent huge pages the option is refused; small pages are as correct.
    let _ = config(FSCONFIG_SET_STRING, Some(c"huge"), Some(c"within_size"));
    config(FSCONFIG_CMD_CREATE, None, None)?;
    let attrs = crate::sys::MOUNT_ATTR_NOSUID | crate::sys::MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC;
    // SAFETY: our own configured context; the mount descriptor is owned right away.
    let m =
        check(unsafe { libc::syscall(libc::SYS_fsmount, fs.as_raw_fd(), FSMOUNT_CLOEXEC, attrs) })?;
    // SAFETY: `m` was just returned by fsmount and is owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(m as i32) })
}

/// `MOUNT_ATTR_NOEXEC`.
const MOUNT_ATTR_NOEXEC: u64 = 0x8;

/// The flags of a sealed detached mount, and of its attachment in the sandbox.
pub const SEALED_ATTRS: u64 = crate::sys::MOUNT_ATTR_RDONLY
    | crate::sys::MOUNT_ATTR_NOSUID
    | crate::sys::MOUNT_ATTR_NODEV
    | MOUNT_ATTR_NOEXEC;

impl DetachedTmpfs {
    /// A new detached tmpfs of at most `size` bytes, its root folder mode 0755 owned by the
    /// caller; `noswap` unless the kernel refuses the option (before 6.4, or in a user
    /// namespace), then without it.
    pub fn new(size: u64) -> std::io::Result<DetachedTmpfs> {
        match make(size, true) {
            Ok(fd) => Ok(DetachedTmpfs {
                fd,
                size,
                noswap: true,
            }),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(DetachedTmpfs {
                fd: make(size, false)?,
                size,
                noswap: false,
            }),
            Err(e) => Err(e),
        }
    }

    /// The size cap in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Whether the tmpfs is `noswap`.
    pub fn noswap(&self) -> bool {
        self.noswap
    }

    /// Flag the mount read-only, nosuid, nodev and noexec: the end of filling it.
    pub fn seal(&self) -> std::io::Result<()> {
        use crate::sys::Sys as _;
        crate::sys::LinuxSys
            .mount_setattr(self.fd.as_raw_fd(), SEALED_ATTRS)
            .map_err(std::io::Error::from_raw_os_error)
    }

    /// The mount descriptor, to attach in a sandbox ([`crate::config::SandboxConfig::attach`]).
    pub fn into_fd(self) -> OwnedFd {
        self.fd
    }
}

impl AsFd for DetachedTmpfs {
    /// The root folder of the tmpfs: create files under it with `openat`/`mkdirat`.
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}
