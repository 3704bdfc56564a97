//! Network: the job lives in a fresh network namespace that holds only a loopback interface,
//! brought up here so local IPC over 127.0.0.1 inside the sandbox works; there is no other
//! interface and no route, so nothing leaves the sandbox (the host's 127.0.0.1 is a different
//! interface in a different namespace). Outbound `connect`/`sendto` attempts are additionally
//! reported and refused by [`crate::notify`].

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
