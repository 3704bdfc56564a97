//! The seccomp user-notification supervisor. Guarantees: every notification is answered, and a
//! call is never allowed to continue in the job. A `connect` to one of the job's own Unix
//! sockets is carried out by the supervisor on the job's behalf from its own copy of the address
//! and answered with the result (see [`crate::unix_connect`]); it is not a policy event. Every
//! other notification is answered with an error (the profile's errno for denied calls;
//! `ENETUNREACH`/`EACCES`/`EPERM` for `connect` and `sendto` by address family), every such
//! attempt is counted by name, and the destination of every refused `connect`/`sendto` is read
//! from the job's memory and recorded (the read is validated with
//! `SECCOMP_IOCTL_NOTIF_ID_VALID`, and since the answer is a denial, a racing thread rewriting
//! the address can only falsify the report, never reach the network).
//!
//! The listener fd is created by the job when it installs the filter that notifies (the only one,
//! or the guard filter, see [`crate::seccomp`]) and passed to the parent over a socketpair with
//! `SCM_RIGHTS`.

use std::collections::BTreeMap;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use crate::outcome::{DeniedSyscall, EgressAttempt};
use crate::sys::SysResult;

fn errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// Send `fd` over the unix socket `sock` (SCM_RIGHTS). Async-signal-safe.
pub fn send_fd(sock: i32, fd: i32) -> SysResult<()> {
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    // Control buffer large enough for one fd, aligned for cmsghdr.
    let mut cbuf = [0u64; 4];
    // SAFETY: zeroed msghdr is valid; all pointers refer to live stack buffers; CMSG macros are
    // used on a buffer of sufficient size (CMSG_SPACE(4) = 24 <= 32).
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cbuf.as_mut_ptr().cast();
        msg.msg_controllen = libc::CMSG_SPACE(4) as _;
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(4) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<i32>(), fd);
        if libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL) < 0 {
            return Err(errno());
        }
    }
    Ok(())
}

/// Receive one fd from `sock`; `None` on EOF (the job never got that far).
pub fn recv_fd(sock: RawFd) -> std::io::Result<Option<OwnedFd>> {
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    let mut cbuf = [0u64; 4];
    loop {
        // SAFETY: as in send_fd; the kernel writes at most msg_controllen bytes into cbuf.
        let (r, fd) = unsafe {
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = cbuf.as_mut_ptr().cast();
            msg.msg_controllen = std::mem::size_of_val(&cbuf) as _;
            let r = libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC);
            let mut fd = -1;
            if r > 0 {
                let cmsg = libc::CMSG_FIRSTHDR(&msg);
                if !cmsg.is_null()
                    && (*cmsg).cmsg_level == libc::SOL_SOCKET
                    && (*cmsg).cmsg_type == libc::SCM_RIGHTS
                {
                    fd = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<i32>());
                }
            }
            (r, fd)
        };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if r == 0 || fd < 0 {
            return Ok(None);
        }
        // SAFETY: the kernel just installed this fd for us; we are its only owner.
        return Ok(Some(unsafe { OwnedFd::from_raw_fd(fd) }));
    }
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
struct SeccompData {
    nr: i32,
    arch: u32,
    instruction_pointer: u64,
    args: [u64; 6],
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
struct Notif {
    id: u64,
    pid: u32,
    flags: u32,
    data: SeccompData,
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
struct NotifResp {
    id: u64,
    val: i64,
    error: i32,
    flags: u32,
}

const IOCTL_NOTIF_RECV: libc::c_ulong = 0xC050_2100;
const IOCTL_NOTIF_SEND: libc::c_ulong = 0xC018_2101;
const IOCTL_NOTIF_ID_VALID: libc::c_ulong = 0x4008_2102;

/// What the supervisor saw.
#[derive(Debug, Default, Clone)]
pub struct Observed {
    /// Denied calls by name.
    pub denied: Vec<DeniedSyscall>,
    /// Egress attempts.
    pub egress: Vec<EgressAttempt>,
    /// Connects to allowed peers, carried out by the supervisor.
    pub peers: Vec<EgressAttempt>,
}

/// Notifications answered after the command ended, at most.
pub const MAX_DRAIN: usize = 4096;

/// Maximum egress attempts kept in the report (the count in `denied` keeps counting).
pub const MAX_EGRESS_RECORDS: usize = 1000;

/// The notification server. It owns no thread: the supervisor's event loop calls
/// [`Server::answer`] whenever the listener is readable, so waiting for the command, for its
/// setup result and for its notifications is one `poll`.
#[derive(Debug)]
pub struct Server<'a> {
    errnos: &'a BTreeMap<i64, u32>,
    counts: BTreeMap<String, u64>,
    egress: Vec<EgressAttempt>,
    peers: Vec<EgressAttempt>,
    own: crate::unix_connect::OwnMounts,
    allow: &'a [crate::peer_connect::AllowRule],
}

impl<'a> Server<'a> {
    /// A server answering observed call numbers with the errno in `errnos` (`EPERM` otherwise),
    /// mediating connects to the job's own Unix sockets (on the tmpfs mounts `own`, or
    /// abstract; see [`crate::unix_connect`]).
    pub fn new(errnos: &'a BTreeMap<i64, u32>, own: crate::unix_connect::OwnMounts) -> Self {
        Server {
            errnos,
            counts: BTreeMap::new(),
            egress: Vec::new(),
            peers: Vec::new(),
            own,
            allow: &[],
        }
    }

    /// Also carry out `connect`s to these destinations (see [`crate::peer_connect`]).
    pub fn allowing(mut self, allow: &'a [crate::peer_connect::AllowRule]) -> Self {
        self.allow = allow;
        self
    }

    /// Receive one notification from the listener `fd` and answer it with a denial. Returns `false`
    /// when the listener is finished (an error other than an interrupted or vanished call).
    pub fn answer(&mut self, fd: RawFd) -> bool {
        let mut n = Notif::default();
        // SAFETY: `n` is a zeroed, live seccomp_notif of the size encoded in the ioctl number.
        if unsafe { libc::ioctl(fd, IOCTL_NOTIF_RECV as _, &mut n as *mut Notif) } < 0 {
            return matches!(errno(), libc::EINTR | libc::ENOENT);
        }
        let nr = n.data.nr as i64;
        let name =
            crate::syscall_table::name(nr).map_or_else(|| format!("nr_{nr}"), str::to_string);
        let mut answer = self.errnos.get(&nr).map_or(libc::EPERM, |e| *e as i32);
        if nr == libc::SYS_connect || nr == libc::SYS_sendto {
            let (ptr, len) = if nr == libc::SYS_connect {
                (n.data.args[1], n.data.args[2])
            } else {
                (n.data.args[4], n.data.args[5])
            };
            let bytes = read_mem(n.pid, ptr, len.min(128) as usize);
            // Only trust what we read if the target is still blocked in this very call.
            // SAFETY: ID_VALID takes a pointer to the u64 id.
            let valid =
                unsafe { libc::ioctl(fd, IOCTL_NOTIF_ID_VALID as _, &n.id as *const u64) } == 0;
            // The job's own Unix sockets: connected on its behalf, from our copy of the address.
            if nr == libc::SYS_connect && valid && !self.errnos.contains_key(&nr) {
                if let Some(b) = &bytes {
                    let sock = n.data.args[0] as i32;
                    let id = n.id;
                    let still_blocked = || {
                        // SAFETY: ID_VALID takes a pointer to the u64 id.
                        let r = unsafe {
                            libc::ioctl(fd, IOCTL_NOTIF_ID_VALID as _, &id as *const u64)
                        };
                        r == 0
                    };
                    if let crate::unix_connect::Decision::Mediated(e) =
                        crate::unix_connect::decide(n.pid, sock, b, &mut self.own, &still_blocked)
                    {
                        respond(fd, n.id, e);
                        return true;
                    }
                    if let crate::unix_connect::Decision::Mediated(e) =
                        crate::peer_connect::decide(n.pid, sock, b, self.allow, &still_blocked)
                    {
                        if self.peers.len() < MAX_EGRESS_RECORDS {
                            let (family, address) = describe_sockaddr(b);
                            self.peers.push(EgressAttempt {
                                syscall: name.clone(),
                                family,
                                address,
                            });
                        }
                        respond(fd, n.id, e);
                        return true;
                    }
                }
            }
            let (family, address) = match (valid, bytes) {
                (true, Some(b)) => describe_sockaddr(&b),
                _ => ("?".to_string(), "?".to_string()),
            };
            if !self.errnos.contains_key(&nr) {
                answer = match family.as_str() {
                    "inet" | "inet6" => libc::ENETUNREACH,
                    "unix" => libc::EACCES,
                    _ => libc::EPERM,
                };
            }
            if self.egress.len() < MAX_EGRESS_RECORDS {
                self.egress.push(EgressAttempt {
                    syscall: name.clone(),
                    family,
                    address,
                });
            }
        }
        *self.counts.entry(name).or_default() += 1;
        respond(fd, n.id, answer);
        true
    }

    /// Answer whatever is already queued on `listener`, without waiting for more (at most
    /// [`MAX_DRAIN`] notifications: the tree is dying, its calls need no further count).
    pub fn drain(&mut self, listener: RawFd) {
        for _ in 0..MAX_DRAIN {
            let mut p = libc::pollfd {
                fd: listener,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one live pollfd; zero timeout.
            let r = unsafe { libc::poll(&mut p, 1, 0) };
            if r < 0 && errno() == libc::EINTR {
                continue;
            }
            if r <= 0 || p.revents & libc::POLLIN == 0 || !self.answer(listener) {
                return;
            }
        }
    }

    /// What was seen.
    pub fn finish(self) -> Observed {
        Observed {
            denied: self
                .counts
                .into_iter()
                .map(|(name, count)| DeniedSyscall { name, count })
                .collect(),
            egress: self.egress,
            peers: self.peers,
        }
    }
}

/// Answer notification `id` on `listener`: the call returns 0 (`errno` 0) or fails with `errno`;
/// it never continues in the job.
fn respond(listener: RawFd, id: u64, errno: i32) {
    let resp = NotifResp {
        id,
        val: 0,
        error: -errno,
        flags: 0,
    };
    // SAFETY: `resp` is a live seccomp_notif_resp; ENOENT (target gone) is fine to ignore.
    unsafe { libc::ioctl(listener, IOCTL_NOTIF_SEND as _, &resp as *const NotifResp) };
}

fn read_mem(pid: u32, addr: u64, len: usize) -> Option<Vec<u8>> {
    if addr == 0 || len == 0 {
        return None;
    }
    let mut buf = vec![0u8; len];
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: len,
    };
    let remote = libc::iovec {
        iov_base: addr as *mut libc::c_void,
        iov_len: len,
    };
    // SAFETY: local iovec points at our live buffer; the remote address is only read by the
    // kernel on the target's behalf.
    let r = unsafe { libc::process_vm_readv(pid as libc::pid_t, &local, 1, &remote, 1, 0) };
    if r <= 0 {
        // Fall back to /proc/PID/mem.
        use std::os::unix::fs::FileExt;
        let f = std::fs::File::open(format!("/proc/{pid}/mem")).ok()?;
        let n = f.read_at(&mut buf, addr).ok()?;
        buf.truncate(n);
        return Some(buf);
    }
    buf.truncate(r as usize);
    Some(buf)
}

/// Render a raw `sockaddr` as (family, address).
pub fn describe_sockaddr(b: &[u8]) -> (String, String) {
    if b.len() < 2 {
        return ("?".into(), "?".into());
    }
    let fam = u16::from_ne_bytes([b[0], b[1]]) as i32;
    match fam {
        libc::AF_INET if b.len() >= 8 => {
            let port = u16::from_be_bytes([b[2], b[3]]);
            (
                "inet".into(),
                format!("{}.{}.{}.{}:{port}", b[4], b[5], b[6], b[7]),
            )
        }
        libc::AF_INET6 if b.len() >= 24 => {
            let port = u16::from_be_bytes([b[2], b[3]]);
            let mut a = [0u8; 16];
            a.copy_from_slice(&b[8..24]);
            (
                "inet6".into(),
                format!("[{}]:{port}", std::net::Ipv6Addr::from(a)),
            )
        }
        libc::AF_UNIX => {
            let path = &b[2..];
            if path.first() == Some(&0) {
                let name: Vec<u8> = path[1..].iter().copied().take_while(|c| *c != 0).collect();
                (
                    "unix".into(),
                    format!("@{}", String::from_utf8_lossy(&name)),
                )
            } else {
                let name: Vec<u8> = path.iter().copied().take_while(|c| *c != 0).collect();
                ("unix".into(), String::from_utf8_lossy(&name).into_owned())
            }
        }
        libc::AF_NETLINK => ("netlink".into(), "-".into()),
        other => (format!("af_{other}"), "?".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockaddr_rendering() {
        let mut v4 = vec![0u8; 16];
        v4[..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
        v4[2..4].copy_from_slice(&53u16.to_be_bytes());
        v4[4..8].copy_from_slice(&[8, 8, 4, 4]);
        assert_eq!(describe_sockaddr(&v4), ("inet".into(), "8.8.4.4:53".into()));
        let mut un = (libc::AF_UNIX as u16).to_ne_bytes().to_vec();
        un.extend_from_slice(b"\0abc\0");
        assert_eq!(describe_sockaddr(&un), ("unix".into(), "@abc".into()));
    }
}
