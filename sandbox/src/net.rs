//! Network: the job lives in a fresh network namespace that holds only a loopback interface,
//! brought up here so local IPC over 127.0.0.1 inside the sandbox works; there is no other
//! interface and no route, so nothing leaves the sandbox (the host's 127.0.0.1 is a different
//! interface in a different namespace). Outbound `connect`/`sendto` attempts are additionally
//! reported and refused by [`crate::notify`].
//!
//! Making a network namespace is the slowest part of the sandbox's `clone` (about 0.6 ms here,
//! more than the six other namespaces together), so the init does not ask for one in its `clone`:
//! it starts a helper task (sharing its memory and descriptor table, in the sandbox's user and pid
//! namespaces) that makes the namespace, brings `lo` up and leaves a descriptor of it
//! ([`make_netns`]), while the init itself builds the mounts; the init then enters that namespace
//! before anything of the job exists. The namespace is owned by the sandbox's user namespace,
//! exactly as if the `clone` had made it.

use crate::sys::SysResult;

#[repr(C)]
struct IfReqFlags {
    name: [u8; 16],
    flags: libc::c_short,
    _pad: [u8; 22],
}

fn errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// Set `IFF_UP` on `lo` in the current network namespace. Async-signal-safe.
pub fn loopback_up() -> SysResult<()> {
    // SAFETY: plain socket creation; the fd is closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(errno());
    }
    let mut req = IfReqFlags {
        name: [0; 16],
        flags: 0,
        _pad: [0; 22],
    };
    req.name[..2].copy_from_slice(b"lo");
    // SAFETY: `req` is a live, correctly sized `struct ifreq` for SIOCGIFFLAGS.
    let mut r = unsafe { libc::ioctl(fd, libc::SIOCGIFFLAGS as _, &mut req as *mut IfReqFlags) };
    if r == 0 {
        req.flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        // SAFETY: as above, for SIOCSIFFLAGS.
        r = unsafe { libc::ioctl(fd, libc::SIOCSIFFLAGS as _, &req as *const IfReqFlags) };
    }
    let e = errno();
    // SAFETY: closing the socket created above.
    unsafe { libc::close(fd) };
    if r < 0 {
        Err(e)
    } else {
        Ok(())
    }
}

/// Make a network namespace for the calling task, bring its `lo` up, and return a descriptor of
/// it (CLOEXEC). Run by the init's helper task (see the module docs). Async-signal-safe.
pub fn make_netns() -> SysResult<i32> {
    // SAFETY: unshare of the calling task's network namespace only.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return Err(errno());
    }
    loopback_up()?;
    // SAFETY: a NUL-terminated literal path; the descriptor is handed to the caller.
    let fd = unsafe {
        libc::open(
            c"/proc/thread-self/ns/net".as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(errno());
    }
    Ok(fd)
}
