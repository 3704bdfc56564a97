//! The system-call layer used between fork and exec. Guarantees: every method is one (or a few)
//! raw system calls on pre-built data — no allocation, no locks, no logging — so it is safe to
//! call in a child forked from a multi-threaded parent. Errors are plain errno values.
//!
//! The setup sequence in [`crate::child`] is generic over [`Sys`], so a recording double can
//! assert the order of operations in unit tests.

use std::ffi::{CStr, CString};

use crate::net::NetHelper;

/// Result of a raw call: the errno on failure.
pub type SysResult<T> = Result<T, i32>;

/// The `resource` argument of `setrlimit` (its C type differs between glibc and musl).
#[cfg(target_env = "gnu")]
pub type RlimitResource = libc::__rlimit_resource_t;
/// The `resource` argument of `setrlimit` (its C type differs between glibc and musl).
#[cfg(not(target_env = "gnu"))]
pub type RlimitResource = libc::c_int;

/// The operations the in-sandbox setup performs, in the vocabulary of the kernel.
#[allow(missing_docs)]
pub trait Sys {
    fn prctl(&self, option: libc::c_int, arg2: libc::c_ulong) -> SysResult<()>;
    /// Whether the other end of the socket `fd` is still open.
    fn peer_alive(&self, fd: i32) -> SysResult<bool>;
    fn read_byte(&self, fd: i32) -> SysResult<Option<u8>>;
    fn write_all(&self, fd: i32, buf: &[u8]) -> SysResult<()>;
    fn close(&self, fd: i32) -> SysResult<()>;
    fn setresuid(&self, uid: u32) -> SysResult<()>;
    fn setresgid(&self, gid: u32) -> SysResult<()>;
    fn setgroups_empty(&self) -> SysResult<()>;
    fn mount(
        &self,
        src: Option<&CStr>,
        target: &CStr,
        fstype: Option<&CStr>,
        flags: libc::c_ulong,
        data: Option<&CStr>,
    ) -> SysResult<()>;
    fn umount2(&self, target: &CStr, flags: libc::c_int) -> SysResult<()>;
    fn mkdir(&self, path: &CStr, mode: libc::mode_t) -> SysResult<()>;
    /// `chmod` (the mode exactly, whatever the umask).
    fn chmod(&self, path: &CStr, mode: libc::mode_t) -> SysResult<()>;
    fn create_file(&self, path: &CStr) -> SysResult<()>;
    /// Create `path` exclusively (no symlink follow), mode 0400, write `data`, and
    /// give it to `owner` (uid = gid) if set.
    fn write_secret(&self, path: &CStr, data: &[u8], owner: Option<u32>) -> SysResult<()>;
    /// Create `path` exclusively (no symlink follow), mode 0644, and write `data`.
    fn write_file(&self, path: &CStr, data: &[u8]) -> SysResult<()>;
    fn symlink(&self, target: &CStr, link: &CStr) -> SysResult<()>;
    fn chdir(&self, path: &CStr) -> SysResult<()>;
    fn pivot_root(&self, new_root: &CStr, put_old: &CStr) -> SysResult<()>;
    /// `openat2(path, O_PATH|O_CLOEXEC, RESOLVE_NO_SYMLINKS|RESOLVE_NO_MAGICLINKS)`.
    fn open_nofollow(&self, path: &CStr) -> SysResult<i32>;
    /// `open_tree(fd, "", OPEN_TREE_CLONE|AT_RECURSIVE|AT_EMPTY_PATH|OPEN_TREE_CLOEXEC)`.
    fn open_tree_clone(&self, fd: i32) -> SysResult<i32>;
    /// `open_tree(fd, "", AT_EMPTY_PATH|OPEN_TREE_CLOEXEC)`: another descriptor of the same
    /// mount (for a detached one, moving it attaches that very mount).
    fn open_tree_same(&self, fd: i32) -> SysResult<i32>;
    /// `mount_setattr(fd, "", AT_EMPTY_PATH|AT_RECURSIVE, attr_set)`.
    fn mount_setattr(&self, fd: i32, attr_set: u64) -> SysResult<()>;
    /// `move_mount(fd, "", AT_FDCWD, target, MOVE_MOUNT_F_EMPTY_PATH)`.
    fn move_mount(&self, fd: i32, target: &CStr) -> SysResult<()>;
    fn sethostname(&self, name: &[u8]) -> SysResult<()>;
    /// Start a task sharing our memory and descriptor table, running on `stack`, that runs
    /// [`NetHelper::run`] (the init reaps it with every other child).
    fn spawn_netns(&self, stack: &mut [u8], net: &NetHelper) -> SysResult<libc::pid_t>;
    /// Wait for the helper's network namespace and enter it.
    fn enter_netns(&self, net: &NetHelper) -> SysResult<()>;
    /// Wait until the helper has brought `lo` up.
    fn wait_loopback(&self, net: &NetHelper) -> SysResult<()>;
    /// Start `job` as a child sharing our memory on its own `stack`, suspending us until it
    /// execs or exits (`clone(CLONE_VM|CLONE_VFORK)`: no page tables are copied).
    fn spawn_job(&self, job: &mut dyn FnMut() -> i32, stack: &mut [u8]) -> SysResult<libc::pid_t>;
    /// `unshare(CLONE_NEWCGROUP)`: a cgroup namespace rooted at our current cgroup.
    fn unshare_cgroup(&self) -> SysResult<()>;
    /// A detached tmpfs of `size` bytes, `noswap`, its root folder mode 0755 owned by `owner`
    /// (uid = gid), mounted nosuid+nodev (`fsopen`/`fsconfig`/`fsmount`); the mount's descriptor.
    fn secret_tmpfs(&self, size: u64, owner: u32) -> SysResult<i32>;
    fn setsid(&self) -> SysResult<()>;
    fn setrlimit(&self, resource: RlimitResource, value: u64) -> SysResult<()>;
    fn dup2(&self, from: i32, to: i32) -> SysResult<()>;
    fn open_rw(&self, path: &CStr) -> SysResult<i32>;
    fn close_range(&self, first: u32, last: u32) -> SysResult<()>;
    /// Every signal disposition back to default, and an empty signal mask.
    fn reset_signals(&self) -> SysResult<()>;
    /// An empty signal mask.
    fn clear_signal_mask(&self) -> SysResult<()>;
    fn drop_bounding_and_ambient(&self) -> SysResult<()>;
    fn capset_zero(&self) -> SysResult<()>;
    fn landlock_add_path(&self, ruleset: i32, path: &CStr, access: u64) -> SysResult<()>;
    fn landlock_restrict(&self, ruleset: i32) -> SysResult<()>;
    fn seccomp(&self, prog: &[seccompiler::sock_filter], listener: bool) -> SysResult<i32>;
    fn send_fd(&self, sock: i32, fd: i32) -> SysResult<()>;
    /// Returns only on failure.
    fn execve(
        &self,
        path: &CStr,
        argv: &[*const libc::c_char],
        envp: &[*const libc::c_char],
    ) -> i32;
}

fn errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

fn check(r: libc::c_long) -> SysResult<libc::c_long> {
    if r < 0 {
        Err(errno())
    } else {
        Ok(r)
    }
}

fn opt(p: Option<&CStr>) -> *const libc::c_char {
    p.map_or(std::ptr::null(), CStr::as_ptr)
}

/// `struct open_how` for `openat2`.
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// `struct mount_attr` for `mount_setattr`.
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// `MOUNT_ATTR_RDONLY`.
pub const MOUNT_ATTR_RDONLY: u64 = 0x1;
/// `MOUNT_ATTR_NOSUID`.
pub const MOUNT_ATTR_NOSUID: u64 = 0x2;
/// `MOUNT_ATTR_NODEV`.
pub const MOUNT_ATTR_NODEV: u64 = 0x4;
const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
const RESOLVE_NO_SYMLINKS: u64 = 0x04;
const OPEN_TREE_CLONE: libc::c_uint = 1;
const AT_RECURSIVE: libc::c_uint = 0x8000;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;

/// `openat2(path, O_PATH|O_CLOEXEC|extra, RESOLVE_NO_SYMLINKS|RESOLVE_NO_MAGICLINKS)`.
/// Async-signal-safe.
fn openat2_path(path: &CStr, extra: libc::c_int) -> SysResult<i32> {
    let how = OpenHow {
        flags: (libc::O_PATH | libc::O_CLOEXEC | extra) as u64,
        mode: 0,
        resolve: RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
    };
    // SAFETY: path is NUL-terminated; `how` is a live open_how of the size passed.
    check(unsafe {
        libc::syscall(
            libc::SYS_openat2,
            libc::AT_FDCWD,
            path.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    })
    .map(|fd| fd as i32)
}

/// Open `path` at plan time as an `O_PATH` descriptor without following any symlink on the way
/// (`openat2` with `RESOLVE_NO_SYMLINKS|RESOLVE_NO_MAGICLINKS`). A symlink as the last component is
/// opened itself (`O_NOFOLLOW`), so its type can be checked with `fstat` and its target read with
/// `readlinkat`; a symlink anywhere before it fails with `ELOOP`.
pub fn open_path_nofollow(path: &std::path::Path) -> std::io::Result<std::os::fd::OwnedFd> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    let fd = openat2_path(&c, libc::O_NOFOLLOW).map_err(std::io::Error::from_raw_os_error)?;
    // SAFETY: the kernel just returned this descriptor; nothing else owns it.
    Ok(unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) })
}

/// The real kernel.
#[derive(Debug, Clone, Copy, Default)]
pub struct LinuxSys;

impl Sys for LinuxSys {
    fn prctl(&self, option: libc::c_int, arg2: libc::c_ulong) -> SysResult<()> {
        // SAFETY: prctl with integer arguments only.
        check(unsafe {
            libc::prctl(
                option,
                arg2,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
            )
        } as libc::c_long)
        .map(drop)
    }

    fn peer_alive(&self, fd: i32) -> SysResult<bool> {
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLRDHUP,
            revents: 0,
        };
        // SAFETY: one live pollfd, no wait.
        check(unsafe { libc::poll(&mut p, 1, 0) } as libc::c_long)?;
        Ok(p.revents & (libc::POLLRDHUP | libc::POLLHUP) == 0)
    }

    fn read_byte(&self, fd: i32) -> SysResult<Option<u8>> {
        let mut b = 0u8;
        loop {
            // SAFETY: reads at most one byte into a live stack byte.
            let r = unsafe { libc::read(fd, (&mut b as *mut u8).cast(), 1) };
            match r {
                1 => return Ok(Some(b)),
                0 => return Ok(None),
                _ if errno() == libc::EINTR => continue,
                _ => return Err(errno()),
            }
        }
    }

    fn write_all(&self, fd: i32, mut buf: &[u8]) -> SysResult<()> {
        while !buf.is_empty() {
            // SAFETY: writes from a live slice of the given length.
            let r = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
            if r < 0 {
                if errno() == libc::EINTR {
                    continue;
                }
                return Err(errno());
            }
            buf = &buf[r as usize..];
        }
        Ok(())
    }

    fn close(&self, fd: i32) -> SysResult<()> {
        // SAFETY: closing a descriptor number; the caller owns it.
        check(unsafe { libc::close(fd) } as libc::c_long).map(drop)
    }

    fn setresuid(&self, uid: u32) -> SysResult<()> {
        // SAFETY: raw syscall with integer arguments (the glibc wrapper would broadcast to
        // threads via signals, which is unnecessary in a single-threaded child).
        check(unsafe { libc::syscall(libc::SYS_setresuid, uid, uid, uid) }).map(drop)
    }

    fn setresgid(&self, gid: u32) -> SysResult<()> {
        // SAFETY: raw syscall with integer arguments.
        check(unsafe { libc::syscall(libc::SYS_setresgid, gid, gid, gid) }).map(drop)
    }

    fn setgroups_empty(&self) -> SysResult<()> {
        // SAFETY: an empty list: size 0 and a null pointer.
        check(unsafe { libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>()) })
            .map(drop)
    }

    fn mount(
        &self,
        src: Option<&CStr>,
        target: &CStr,
        fstype: Option<&CStr>,
        flags: libc::c_ulong,
        data: Option<&CStr>,
    ) -> SysResult<()> {
        // SAFETY: all pointers are NUL-terminated strings that outlive the call, or null.
        check(unsafe {
            libc::mount(
                opt(src),
                target.as_ptr(),
                opt(fstype),
                flags,
                opt(data).cast(),
            )
        } as libc::c_long)
        .map(drop)
    }

    fn umount2(&self, target: &CStr, flags: libc::c_int) -> SysResult<()> {
        // SAFETY: target is a NUL-terminated string.
        check(unsafe { libc::umount2(target.as_ptr(), flags) } as libc::c_long).map(drop)
    }

    fn mkdir(&self, path: &CStr, mode: libc::mode_t) -> SysResult<()> {
        // SAFETY: path is a NUL-terminated string.
        match check(unsafe { libc::mkdir(path.as_ptr(), mode) } as libc::c_long) {
            Err(libc::EEXIST) | Ok(_) => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn chmod(&self, path: &CStr, mode: libc::mode_t) -> SysResult<()> {
        // SAFETY: path is a NUL-terminated string.
        check(unsafe { libc::chmod(path.as_ptr(), mode) } as libc::c_long).map(drop)
    }

    fn create_file(&self, path: &CStr) -> SysResult<()> {
        // An empty regular file to bind a file onto: one `mknod`, no descriptor to close. An
        // existing file is fine (a later bind of the same destination).
        // SAFETY: path is a NUL-terminated string.
        match check(unsafe { libc::mknod(path.as_ptr(), libc::S_IFREG | 0o644, 0) } as libc::c_long)
        {
            Err(libc::EEXIST) | Ok(_) => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn write_secret(&self, path: &CStr, data: &[u8], owner: Option<u32>) -> SysResult<()> {
        // SAFETY: path is a NUL-terminated string; O_EXCL|O_NOFOLLOW never opens an
        // existing file or a symlink.
        let fd = check(unsafe {
            libc::open(
                path.as_ptr(),
                libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_WRONLY | libc::O_CLOEXEC,
                0o400,
            )
        } as libc::c_long)? as i32;
        let r = self.write_all(fd, data).and_then(|()| match owner {
            // SAFETY: fchown on the descriptor we just opened.
            Some(uid) => check(unsafe { libc::fchown(fd, uid, uid) } as libc::c_long).map(|_| ()),
            None => Ok(()),
        });
        let _ = self.close(fd);
        r
    }

    fn write_file(&self, path: &CStr, data: &[u8]) -> SysResult<()> {
        // SAFETY: path is a NUL-terminated string; O_EXCL|O_NOFOLLOW never opens an
        // existing file or a symlink.
        let fd = check(unsafe {
            libc::open(
                path.as_ptr(),
                libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_WRONLY | libc::O_CLOEXEC,
                0o644,
            )
        } as libc::c_long)? as i32;
        let r = self.write_all(fd, data);
        let _ = self.close(fd);
        r
    }

    fn symlink(&self, target: &CStr, link: &CStr) -> SysResult<()> {
        // SAFETY: both are NUL-terminated strings.
        check(unsafe { libc::symlink(target.as_ptr(), link.as_ptr()) } as libc::c_long).map(drop)
    }

    fn chdir(&self, path: &CStr) -> SysResult<()> {
        // SAFETY: path is a NUL-terminated string.
        check(unsafe { libc::chdir(path.as_ptr()) } as libc::c_long).map(drop)
    }

    fn pivot_root(&self, new_root: &CStr, put_old: &CStr) -> SysResult<()> {
        // SAFETY: both are NUL-terminated strings.
        check(unsafe { libc::syscall(libc::SYS_pivot_root, new_root.as_ptr(), put_old.as_ptr()) })
            .map(drop)
    }

    fn open_nofollow(&self, path: &CStr) -> SysResult<i32> {
        openat2_path(path, 0)
    }

    fn open_tree_clone(&self, fd: i32) -> SysResult<i32> {
        let flags = OPEN_TREE_CLONE
            | AT_RECURSIVE
            | libc::AT_EMPTY_PATH as libc::c_uint
            | libc::O_CLOEXEC as libc::c_uint;
        // SAFETY: an empty NUL-terminated path relative to a descriptor we own.
        check(unsafe { libc::syscall(libc::SYS_open_tree, fd, c"".as_ptr(), flags) })
            .map(|fd| fd as i32)
    }

    fn open_tree_same(&self, fd: i32) -> SysResult<i32> {
        let flags = libc::AT_EMPTY_PATH as libc::c_uint | libc::O_CLOEXEC as libc::c_uint;
        // SAFETY: an empty NUL-terminated path relative to a descriptor we own.
        check(unsafe { libc::syscall(libc::SYS_open_tree, fd, c"".as_ptr(), flags) })
            .map(|fd| fd as i32)
    }

    fn mount_setattr(&self, fd: i32, attr_set: u64) -> SysResult<()> {
        let attr = MountAttr {
            attr_set,
            attr_clr: 0,
            propagation: 0,
            userns_fd: 0,
        };
        let flags = libc::AT_EMPTY_PATH as libc::c_uint | AT_RECURSIVE;
        // SAFETY: empty path relative to our fd; `attr` is live and of the size passed.
        check(unsafe {
            libc::syscall(
                libc::SYS_mount_setattr,
                fd,
                c"".as_ptr(),
                flags,
                &attr as *const MountAttr,
                std::mem::size_of::<MountAttr>(),
            )
        })
        .map(drop)
    }

    fn move_mount(&self, fd: i32, target: &CStr) -> SysResult<()> {
        // SAFETY: empty source path relative to our fd; target is NUL-terminated.
        check(unsafe {
            libc::syscall(
                libc::SYS_move_mount,
                fd,
                c"".as_ptr(),
                libc::AT_FDCWD,
                target.as_ptr(),
                MOVE_MOUNT_F_EMPTY_PATH,
            )
        })
        .map(drop)
    }

    fn sethostname(&self, name: &[u8]) -> SysResult<()> {
        // SAFETY: pointer and length of a live slice.
        check(unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) } as libc::c_long)
            .map(drop)
    }

    fn spawn_netns(&self, stack: &mut [u8], net: &NetHelper) -> SysResult<libc::pid_t> {
        extern "C" fn helper(arg: *mut libc::c_void) -> libc::c_int {
            // SAFETY: `arg` is the `&NetHelper` given below; it lives in the init's frame, which
            // never returns (the init ends in `_exit`).
            unsafe { &*(arg as *const NetHelper) }.run();
            0
        }
        // Stacks grow down: pass the 16-byte aligned top.
        let top = (stack.as_mut_ptr() as usize + stack.len()) & !15;
        // SAFETY: the helper runs `helper` on its own stack (used by nobody else) in our address
        // space, concurrently with us and later the job; it makes raw system calls only and
        // touches no memory but its stack and `net`. (It shares the C library's errno with us:
        // only a failure of both sides at once could misreport an errno.)
        let pid = unsafe {
            libc::clone(
                helper,
                top as *mut libc::c_void,
                libc::CLONE_VM | libc::CLONE_FILES | libc::SIGCHLD,
                net as *const NetHelper as *mut libc::c_void,
            )
        };
        let pid = check(pid as libc::c_long)? as libc::pid_t;
        // A pidfd, so that waiters notice if the helper ends without a word (CLOEXEC: the job's
        // execve closes its copy; on a kernel without pidfds the waits just wait).
        // SAFETY: pidfd_open of our own child, integer arguments.
        let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if pidfd >= 0 {
            net.pidfd
                .store(pidfd as i32 + 1, std::sync::atomic::Ordering::Release);
        }
        // Run it on another CPU than ours, so it starts at once rather than when we next block.
        // SAFETY: plain CPU-set manipulation on a zeroed set, and affinity calls on ourselves and
        // our own child; a failure only leaves the scheduler's choice.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            let here = libc::sched_getcpu();
            if here >= 0
                && libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) == 0
            {
                if let Some(other) = (0..libc::CPU_SETSIZE as usize)
                    .find(|&c| c != here as usize && libc::CPU_ISSET(c, &set))
                {
                    libc::CPU_ZERO(&mut set);
                    libc::CPU_SET(other, &mut set);
                    libc::sched_setaffinity(pid, std::mem::size_of::<libc::cpu_set_t>(), &set);
                }
            }
        }
        Ok(pid)
    }

    fn enter_netns(&self, net: &NetHelper) -> SysResult<()> {
        net.enter()
    }

    fn wait_loopback(&self, net: &NetHelper) -> SysResult<()> {
        net.loopback()
    }

    fn unshare_cgroup(&self) -> SysResult<()> {
        // SAFETY: raw syscall with an integer argument.
        check(unsafe { libc::syscall(libc::SYS_unshare, libc::CLONE_NEWCGROUP) }).map(drop)
    }

    fn secret_tmpfs(&self, size: u64, owner: u32) -> SysResult<i32> {
        // (Runs in the supervisor before the clone: allocation is fine here.)
        const FSOPEN_CLOEXEC: libc::c_uint = 1;
        const FSCONFIG_SET_FLAG: libc::c_uint = 0;
        const FSCONFIG_SET_STRING: libc::c_uint = 1;
        const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
        const FSMOUNT_CLOEXEC: libc::c_uint = 1;
        const MOUNT_ATTR_NOSUID: libc::c_uint = 0x2;
        const MOUNT_ATTR_NODEV: libc::c_uint = 0x4;
        // SAFETY: a NUL-terminated name; the descriptor is closed below on every path.
        let fs =
            check(unsafe { libc::syscall(libc::SYS_fsopen, c"tmpfs".as_ptr(), FSOPEN_CLOEXEC) })?
                as i32;
        let config = |cmd: libc::c_uint, key: Option<&CStr>, value: Option<&CStr>| {
            let ptr = |c: Option<&CStr>| c.map_or(std::ptr::null(), CStr::as_ptr);
            // SAFETY: NUL-terminated key and value, or null where the command takes none.
            check(unsafe { libc::syscall(libc::SYS_fsconfig, fs, cmd, ptr(key), ptr(value), 0) })
        };
        let number = |n: u64| CString::new(n.to_string()).unwrap_or_default();
        let r = (|| {
            config(FSCONFIG_SET_STRING, Some(c"size"), Some(&number(size)))?;
            config(
                FSCONFIG_SET_STRING,
                Some(c"uid"),
                Some(&number(owner.into())),
            )?;
            config(
                FSCONFIG_SET_STRING,
                Some(c"gid"),
                Some(&number(owner.into())),
            )?;
            config(FSCONFIG_SET_STRING, Some(c"mode"), Some(c"755"))?;
            config(FSCONFIG_SET_FLAG, Some(c"noswap"), None)?;
            config(FSCONFIG_CMD_CREATE, None, None)?;
            // SAFETY: our own configured context; the mount descriptor is returned to the caller.
            check(unsafe {
                libc::syscall(
                    libc::SYS_fsmount,
                    fs,
                    FSMOUNT_CLOEXEC,
                    MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
                )
            })
        })();
        // SAFETY: closing our own descriptor.
        unsafe { libc::close(fs) };
        r.map(|m| m as i32)
    }

    fn spawn_job(&self, job: &mut dyn FnMut() -> i32, stack: &mut [u8]) -> SysResult<libc::pid_t> {
        extern "C" fn trampoline(arg: *mut libc::c_void) -> libc::c_int {
            // SAFETY: `arg` is the `&mut &mut dyn FnMut` below, alive until the clone returns
            // (CLONE_VFORK keeps this frame suspended while the child runs).
            let job = unsafe { &mut *(arg as *mut &mut dyn FnMut() -> i32) };
            job()
        }
        let mut obj: &mut dyn FnMut() -> i32 = job;
        // Stacks grow down: pass the 16-byte aligned top.
        let top = (stack.as_mut_ptr() as usize + stack.len()) & !15;
        // SAFETY: the child runs `trampoline` on its own stack in our address space while we are
        // suspended (CLONE_VFORK); it only makes raw system calls and ends in execve or _exit.
        let pid = unsafe {
            libc::clone(
                trampoline,
                top as *mut libc::c_void,
                libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
                &mut obj as *mut &mut dyn FnMut() -> i32 as *mut libc::c_void,
            )
        };
        check(pid as libc::c_long).map(|p| p as libc::pid_t)
    }

    fn setsid(&self) -> SysResult<()> {
        // SAFETY: no arguments.
        check(unsafe { libc::setsid() } as libc::c_long).map(drop)
    }

    fn setrlimit(&self, resource: RlimitResource, value: u64) -> SysResult<()> {
        let lim = libc::rlimit {
            rlim_cur: value,
            rlim_max: value,
        };
        // SAFETY: `lim` is a live rlimit.
        check(unsafe { libc::setrlimit(resource, &lim) } as libc::c_long).map(drop)
    }

    fn dup2(&self, from: i32, to: i32) -> SysResult<()> {
        // SAFETY: descriptor numbers only.
        check(unsafe { libc::dup2(from, to) } as libc::c_long).map(drop)
    }

    fn open_rw(&self, path: &CStr) -> SysResult<i32> {
        // SAFETY: path is NUL-terminated.
        check(unsafe { libc::open(path.as_ptr(), libc::O_RDWR) } as libc::c_long)
            .map(|fd| fd as i32)
    }

    fn close_range(&self, first: u32, last: u32) -> SysResult<()> {
        if first > last {
            return Ok(());
        }
        // SAFETY: integer arguments; closes descriptors this process owns.
        check(unsafe { libc::syscall(libc::SYS_close_range, first, last, 0u32) }).map(drop)
    }

    fn reset_signals(&self) -> SysResult<()> {
        // Every signal, real-time ones included (an ancestor may have ignored any of them), with
        // the raw call: the C libraries refuse the real-time signals they reserve for themselves.
        // The kernel's `struct sigaction` with SIG_DFL, no flags, an empty mask.
        let dfl: [u64; 4] = [libc::SIG_DFL as u64, 0, 0, 0];
        for sig in 1..=64 {
            if sig == libc::SIGKILL || sig == libc::SIGSTOP {
                continue;
            }
            // SAFETY: rt_sigaction with a live, correctly laid out kernel sigaction (handler,
            // flags, restorer, mask) and the kernel's sigset size; no old action is read.
            unsafe {
                libc::syscall(
                    libc::SYS_rt_sigaction,
                    sig,
                    dfl.as_ptr(),
                    std::ptr::null_mut::<u64>(),
                    8usize,
                )
            };
        }
        self.clear_signal_mask()
    }

    fn clear_signal_mask(&self) -> SysResult<()> {
        // SAFETY: an empty, initialised set.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::pthread_sigmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
        }
        Ok(())
    }

    fn drop_bounding_and_ambient(&self) -> SysResult<()> {
        crate::caps::drop_bounding_and_ambient()
    }

    fn capset_zero(&self) -> SysResult<()> {
        crate::caps::capset_zero()
    }

    fn landlock_add_path(&self, ruleset: i32, path: &CStr, access: u64) -> SysResult<()> {
        crate::landlock::add_path_rule(ruleset, path, access)
    }

    fn landlock_restrict(&self, ruleset: i32) -> SysResult<()> {
        crate::landlock::restrict_self(ruleset)
    }

    fn seccomp(&self, prog: &[seccompiler::sock_filter], listener: bool) -> SysResult<i32> {
        crate::seccomp::install(prog, listener)
    }

    fn send_fd(&self, sock: i32, fd: i32) -> SysResult<()> {
        crate::notify::send_fd(sock, fd)
    }

    fn execve(
        &self,
        path: &CStr,
        argv: &[*const libc::c_char],
        envp: &[*const libc::c_char],
    ) -> i32 {
        // SAFETY: argv and envp are null-terminated arrays of pointers to NUL-terminated strings
        // owned by the plan, which outlives this call.
        unsafe { libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
        errno()
    }
}
