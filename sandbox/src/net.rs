//! Network: the job lives in a fresh network namespace that holds only a loopback interface,
//! brought up here so local IPC over 127.0.0.1 inside the sandbox works; there is no other
//! interface and no route, so nothing leaves the sandbox (the host's 127.0.0.1 is a different
//! interface in a different namespace). Outbound `connect`/`sendto` attempts are additionally
//! reported and refused by [`crate::notify`].
//!
//! Making a network namespace is the slowest part of the sandbox's `clone` (about 0.6 ms here,
//! more than the six other namespaces together), so the init does not ask for one in its `clone`:
//! it starts a helper task (sharing its memory and descriptor table, in the sandbox's user and pid
//! namespaces) that makes the namespace and leaves a descriptor of it ([`NetHelper`]), while the
//! init itself builds the mounts; the init then enters that namespace before anything of the job
//! exists. The helper goes on to bring `lo` up while the init starts the job, and the job waits
//! for that before its `execve`. The namespace is owned by the sandbox's user namespace, exactly
//! as if the `clone` had made it.

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

/// What the init's network helper reports, in memory it shares with the init and the job: the
/// namespace as soon as it exists (the init enters it), then the loopback interface (the job
/// waits for it before `execve`). Each result is a futex word set once (0 = pending).
#[derive(Debug, Default)]
pub struct NetHelper {
    /// The namespace descriptor + 1, or `-errno`.
    ns: std::sync::atomic::AtomicI32,
    /// 1 once `lo` is up, or `-errno`.
    lo: std::sync::atomic::AtomicI32,
}

fn publish(word: &std::sync::atomic::AtomicI32, v: i32) {
    word.store(v, std::sync::atomic::Ordering::Release);
    // SAFETY: FUTEX_WAKE on a live word of our (shared) address space.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
            i32::MAX,
        )
    };
}

fn wait_for(word: &std::sync::atomic::AtomicI32) -> i32 {
    // The wait is short (a fraction of a millisecond): yield rather than sleep at first, so this
    // CPU does not go idle (waking an idle CPU costs tens of microseconds, more in a VM). Then
    // sleep on the futex.
    for _ in 0..2000 {
        let v = word.load(std::sync::atomic::Ordering::Acquire);
        if v != 0 {
            return v;
        }
        // SAFETY: no arguments.
        unsafe { libc::sched_yield() };
    }
    loop {
        let v = word.load(std::sync::atomic::Ordering::Acquire);
        if v != 0 {
            return v;
        }
        // SAFETY: FUTEX_WAIT on a live word, sleeping only while it still holds 0.
        unsafe {
            libc::syscall(
                libc::SYS_futex,
                word.as_ptr(),
                libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
                0,
                std::ptr::null::<libc::timespec>(),
            )
        };
    }
}

impl NetHelper {
    /// The helper's work: make a network namespace for the calling task and publish a descriptor
    /// of it (CLOEXEC), then bring its `lo` up and publish that. Async-signal-safe.
    pub fn run(&self) {
        // SAFETY: unshare of the calling task's network namespace only.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            publish(&self.ns, -errno());
            return;
        }
        // SAFETY: a NUL-terminated literal path; the descriptor goes to the init.
        let fd = unsafe {
            libc::open(
                c"/proc/thread-self/ns/net".as_ptr(),
                libc::O_RDONLY | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            publish(&self.ns, -errno());
            return;
        }
        publish(&self.ns, fd + 1);
        publish(&self.lo, loopback_up().map_or_else(|e| -e, |()| 1));
    }

    /// Wait for the namespace and enter it (the init).
    pub fn enter(&self) -> SysResult<()> {
        let v = wait_for(&self.ns);
        if v < 0 {
            return Err(-v);
        }
        let fd = v - 1;
        // SAFETY: `fd` is the namespace descriptor the helper opened in our shared table.
        let r = unsafe { libc::setns(fd, libc::CLONE_NEWNET) };
        let e = errno();
        // SAFETY: closing that descriptor.
        unsafe { libc::close(fd) };
        if r < 0 {
            return Err(e);
        }
        Ok(())
    }

    /// Wait until `lo` is up (the job, before `execve`).
    pub fn loopback(&self) -> SysResult<()> {
        match wait_for(&self.lo) {
            v if v < 0 => Err(-v),
            _ => Ok(()),
        }
    }
}
