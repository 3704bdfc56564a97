//! Mediated `connect` for Unix sockets the job's own processes made (what `multiprocessing`'s
//! forkserver, `Manager` and `Listener` use). Guarantees: the supervisor connects the job's
//! socket only to (a) an abstract address — resolved in the socket's own network namespace, the
//! sandbox's, which holds nothing but the job's sockets — or (b) a socket file on one of the
//! sandbox's own tmpfs mounts (never a host file reached through a bind, whatever its mode); the
//! decision rests only on the supervisor's copy of the address, which it resolves once, in the
//! job's view of the filesystem, and connects to through the descriptor it checked (so a job
//! that rewrites the address or swaps the file afterwards changes nothing); the call is never
//! let continue in the job. A path that does not exist is answered `ENOENT`, a non-socket
//! `ECONNREFUSED`, as the kernel would: neither is a policy event. Everything else (a host
//! socket, inet addresses) stays refused and observed by [`crate::notify`].
//!
//! The peer sees the connection's credentials (`SO_PEERCRED`) as the supervisor's; the
//! supervisor waits at most [`CONNECT_TIMEOUT`] for a listener with a full backlog.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// How a `connect` of the job is answered.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// Connected (or tried to) on the job's behalf: answer with this errno (0 = success); not a
    /// policy event.
    Mediated(i32),
    /// Not ours to mediate: refuse and observe as egress.
    Refuse,
}

/// The longest the supervisor waits for one mediated connect.
pub const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(250);

const PIDFD_THREAD: libc::c_uint = libc::O_EXCL as libc::c_uint;
const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
const RESOLVE_IN_ROOT: u64 = 0x10;

#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

fn errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

fn owned(fd: libc::c_long) -> Result<OwnedFd, i32> {
    if fd < 0 {
        return Err(errno());
    }
    // SAFETY: the kernel just returned this descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// The sandbox's own tmpfs mounts, as the job sees them, by device number (found once).
#[derive(Debug, Default)]
pub struct OwnMounts {
    paths: Vec<CString>,
    devs: Option<Vec<u64>>,
}

impl OwnMounts {
    /// The in-sandbox paths of the tmpfs mounts the job may make sockets in (e.g. `/tmp`, `/`
    /// for `/dev/shm`).
    pub fn new(paths: Vec<CString>) -> Self {
        OwnMounts { paths, devs: None }
    }

    fn devs(&mut self, root: &OwnedFd) -> &[u64] {
        let paths = &self.paths;
        self.devs.get_or_insert_with(|| {
            paths
                .iter()
                .filter_map(|p| resolve(root, p).ok())
                .filter_map(|fd| nix::sys::stat::fstat(fd.as_raw_fd()).ok())
                .map(|st| st.st_dev)
                .collect()
        })
    }
}

/// `openat2(dir, path, O_PATH, RESOLVE_IN_ROOT|RESOLVE_NO_MAGICLINKS)`: `path` as the job would
/// resolve it with `dir` as its root (absolute) or working directory (relative).
fn resolve(dir: &OwnedFd, path: &CString) -> Result<OwnedFd, i32> {
    let how = OpenHow {
        flags: (libc::O_PATH | libc::O_CLOEXEC) as u64,
        mode: 0,
        resolve: RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS,
    };
    // SAFETY: NUL-terminated path; `how` is a live open_how of the size passed.
    owned(unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir.as_raw_fd(),
            path.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    })
}

fn open_proc(tid: u32, what: &str) -> Result<OwnedFd, i32> {
    let p = CString::new(format!("/proc/{tid}/{what}")).map_err(|_| libc::EINVAL)?;
    // SAFETY: NUL-terminated path.
    owned(unsafe {
        libc::open(
            p.as_ptr(),
            libc::O_PATH | libc::O_CLOEXEC | libc::O_DIRECTORY,
        )
    } as libc::c_long)
}

/// A duplicate of descriptor `fd` of task `tid` (`pidfd_getfd`). `still_blocked` must say
/// whether the notifying task is still blocked in its call: asked once the pidfd pins task
/// `tid`, it proves that `tid` was not reused by another process meanwhile.
pub(crate) fn job_fd(tid: u32, fd: i32, still_blocked: &dyn Fn() -> bool) -> Result<OwnedFd, i32> {
    // SAFETY: plain syscalls with integer arguments; the results are owned right away.
    let pidfd = owned(unsafe { libc::syscall(libc::SYS_pidfd_open, tid, PIDFD_THREAD) })?;
    if !still_blocked() {
        return Err(libc::ESRCH);
    }
    // SAFETY: as above.
    owned(unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) })
}

/// Connect socket `fd` to `addr` (the `sockaddr` bytes) within `timeout`; the socket's send
/// timeout is put back as it was. Returns 0 or the errno.
pub(crate) fn connect_bounded(fd: i32, addr: &[u8], timeout: std::time::Duration) -> i32 {
    let mut old = libc::timeval {
        tv_sec: 0,
        tv_usec: 0,
    };
    let mut olen = std::mem::size_of::<libc::timeval>() as libc::socklen_t;
    let bounded = libc::timeval {
        tv_sec: timeout.as_secs() as _,
        tv_usec: timeout.subsec_micros() as _,
    };
    let tv = std::mem::size_of::<libc::timeval>() as libc::socklen_t;
    // SAFETY: get/setsockopt with live timeval buffers of the sizes passed; connect with a live
    // buffer of `addr.len()` bytes (the kernel copies it and checks its length and family).
    unsafe {
        let got = libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_SNDTIMEO,
            (&mut old as *mut libc::timeval).cast(),
            &mut olen,
        ) == 0;
        let set = got
            && libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_SNDTIMEO,
                (&bounded as *const libc::timeval).cast(),
                tv,
            ) == 0;
        let r = libc::connect(fd, addr.as_ptr().cast(), addr.len() as libc::socklen_t);
        let e = if r == 0 { 0 } else { errno() };
        if set {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_SNDTIMEO,
                (&old as *const libc::timeval).cast(),
                tv,
            );
        }
        e
    }
}

/// A `sockaddr_un` for `path` (abstract if it starts with NUL), as bytes.
fn sockaddr_un(path: &[u8]) -> Option<Vec<u8>> {
    // The size of `sun_path`.
    if path.len() > 108 {
        return None;
    }
    let mut a = (libc::AF_UNIX as libc::sa_family_t).to_ne_bytes().to_vec();
    a.extend_from_slice(path);
    Some(a)
}

/// Decide (and, where it is the job's own socket, carry out) the `connect(fd, addr)` of task
/// `tid`, whose address the supervisor has copied (`addr`: the `sockaddr` bytes, as long as the
/// job's `addrlen`); `still_blocked` tells whether the notification is still pending
/// (`SECCOMP_IOCTL_NOTIF_ID_VALID`).
pub fn decide(
    tid: u32,
    fd: i32,
    addr: &[u8],
    own: &mut OwnMounts,
    still_blocked: &dyn Fn() -> bool,
) -> Decision {
    if addr.len() < 3 || u16::from_ne_bytes([addr[0], addr[1]]) != libc::AF_UNIX as u16 {
        return Decision::Refuse;
    }
    let path = &addr[2..];
    if path[0] == 0 {
        // Abstract: the socket's network namespace is the sandbox's own.
        let Some(sa) = sockaddr_un(path) else {
            return Decision::Mediated(libc::EINVAL);
        };
        return match job_fd(tid, fd, still_blocked) {
            Ok(sock) => Decision::Mediated(connect_bounded(sock.as_raw_fd(), &sa, CONNECT_TIMEOUT)),
            Err(e) => Decision::Mediated(e),
        };
    }
    let name: Vec<u8> = path.iter().copied().take_while(|c| *c != 0).collect();
    let Ok(cname) = CString::new(name.clone()) else {
        return Decision::Mediated(libc::EINVAL);
    };
    let root = match open_proc(tid, "root") {
        Ok(r) => r,
        Err(e) => return Decision::Mediated(e),
    };
    let start = if name.first() == Some(&b'/') {
        None
    } else {
        match open_proc(tid, "cwd") {
            Ok(c) => Some(c),
            Err(e) => return Decision::Mediated(e),
        }
    };
    let target = match resolve(start.as_ref().unwrap_or(&root), &cname) {
        Ok(t) => t,
        Err(e @ (libc::ENOENT | libc::ENOTDIR)) => return Decision::Mediated(e),
        Err(_) => return Decision::Refuse,
    };
    let Ok(st) = nix::sys::stat::fstat(target.as_raw_fd()) else {
        return Decision::Refuse;
    };
    if st.st_mode & libc::S_IFMT != libc::S_IFSOCK {
        return Decision::Mediated(libc::ECONNREFUSED);
    }
    if !own.devs(&root).contains(&st.st_dev) {
        // A socket file that came from the host (through a bind, read-only or not).
        return Decision::Refuse;
    }
    // Connect through the descriptor that was checked, not the path again.
    let via = format!("/proc/self/fd/{}", target.as_raw_fd());
    let Some(sa) = sockaddr_un(via.as_bytes()) else {
        return Decision::Mediated(libc::ENAMETOOLONG);
    };
    match job_fd(tid, fd, still_blocked) {
        Ok(sock) => Decision::Mediated(connect_bounded(sock.as_raw_fd(), &sa, CONNECT_TIMEOUT)),
        Err(e) => Decision::Mediated(e),
    }
}
