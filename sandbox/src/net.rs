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
    /// A pidfd of the helper (+ 1; 0 = none): it turns readable when the helper ends, however
    /// it ends, so a waiter never waits for a helper that is gone.
    pub(crate) pidfd: std::sync::atomic::AtomicI32,
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

fn wait_for(word: &std::sync::atomic::AtomicI32, pidfd: &std::sync::atomic::AtomicI32) -> i32 {
    use std::sync::atomic::Ordering::Acquire;
    // The wait is short (a fraction of a millisecond): yield rather than sleep at first, so this
    // CPU does not go idle (waking an idle CPU costs tens of microseconds, more in a VM). Then
    // sleep on the futex, a millisecond at a time, checking the helper still lives.
    for _ in 0..2000 {
        let v = word.load(Acquire);
        if v != 0 {
            return v;
        }
        // SAFETY: no arguments.
        unsafe { libc::sched_yield() };
    }
    let tick = libc::timespec {
        tv_sec: 0,
        tv_nsec: 1_000_000,
    };
    loop {
        let v = word.load(Acquire);
        if v != 0 {
            return v;
        }
        let pidfd = pidfd.load(Acquire) - 1;
        let mut p = libc::pollfd {
            fd: pidfd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one live pollfd (a negative fd is ignored); zero timeout.
        if pidfd >= 0 && unsafe { libc::poll(&mut p, 1, 0) } > 0 && p.revents & libc::POLLIN != 0 {
            // Gone: it may still have published just before it ended.
            let v = word.load(Acquire);
            return if v != 0 { v } else { -libc::ECHILD };
        }
        // SAFETY: FUTEX_WAIT on a live word, sleeping at most `tick` while it still holds 0.
        unsafe {
            libc::syscall(
                libc::SYS_futex,
                word.as_ptr(),
                libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
                0,
                &tick as *const libc::timespec,
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

    /// The helper's pidfd, or -1.
    pub fn pidfd(&self) -> i32 {
        self.pidfd.load(std::sync::atomic::Ordering::Acquire) - 1
    }

    /// Wait for the namespace and enter it (the init).
    pub fn enter(&self) -> SysResult<()> {
        let v = wait_for(&self.ns, &self.pidfd);
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
        match wait_for(&self.lo, &self.pidfd) {
            v if v < 0 => Err(-v),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    #[test]
    fn a_helper_that_ended_without_publishing_is_an_error_not_a_hang() {
        // A "helper" that has ended: a pidfd of a child that exited at once.
        let mut child = std::process::Command::new("/bin/true").spawn().unwrap();
        // SAFETY: pidfd_open of our own child.
        let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, child.id(), 0) } as i32;
        assert!(pidfd >= 0);
        let net = NetHelper::default();
        net.pidfd.store(pidfd + 1, Ordering::Release);
        let t = std::time::Instant::now();
        assert_eq!(net.enter(), Err(libc::ECHILD));
        assert_eq!(net.loopback(), Err(libc::ECHILD));
        assert!(t.elapsed() < std::time::Duration::from_secs(2));
        // SAFETY: closing our pidfd.
        unsafe { libc::close(pidfd) };
        child.wait().unwrap();
    }

    #[test]
    fn waiters_get_what_is_published_late_and_errors_as_errno() {
        let net = std::sync::Arc::new(NetHelper::default());
        let n = net.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(30));
            publish(&n.lo, -libc::EPERM);
            std::thread::sleep(std::time::Duration::from_millis(30));
            publish(&n.ns, -libc::ENOSPC);
        });
        assert_eq!(net.loopback(), Err(libc::EPERM));
        assert_eq!(net.enter(), Err(libc::ENOSPC));
        t.join().unwrap();
    }

    #[test]
    fn a_published_result_survives_the_helper_ending() {
        let net = NetHelper::default();
        publish(&net.lo, 1);
        assert_eq!(net.loopback(), Ok(()));
    }
}
