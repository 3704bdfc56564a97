//! Mediated `connect` to allowed peers, for a sandbox that joins a network namespace its caller
//! made ([`crate::config::Network::Join`]: e.g. the shared namespace of one job's ranks).
//!
//! Guarantees: an `AF_INET`/`AF_INET6` `connect` whose destination (from the supervisor's own
//! copy of the address; an IPv4-mapped IPv6 address counts as its IPv4 address) is within an
//! [`AllowRule`] is carried out by the supervisor on the job's socket (`pidfd_getfd`, after
//! `SECCOMP_IOCTL_NOTIF_ID_VALID` proves the task still blocked in that call) and answered with
//! its result; the call itself never continues in the job, so rewriting the address after the
//! check changes nothing. Every other destination stays refused and recorded as egress by
//! [`crate::notify`]. The supervisor waits at most [`CONNECT_TIMEOUT`] (a blocking socket then
//! gets `EINPROGRESS`, as with `SO_SNDTIMEO`). With no rules (the default sandbox) nothing is
//! mediated. The namespace itself (which interfaces exist, what the host firewall admits) is
//! the caller's.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;

use crate::unix_connect::Decision;

/// The longest the supervisor waits for one mediated connect.
pub const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Destinations a `connect` may reach: `ADDRESS/PREFIX:FIRST-LAST`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AllowRule {
    /// Network address.
    pub net: IpAddr,
    /// Prefix length.
    pub prefix: u8,
    /// First port allowed.
    pub first_port: u16,
    /// Last port allowed.
    pub last_port: u16,
}

impl std::fmt::Display for AllowRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{}:{}-{}",
            self.net, self.prefix, self.first_port, self.last_port
        )
    }
}

fn unmapped(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

impl AllowRule {
    /// Loopback of both families, every port.
    pub fn loopback() -> [AllowRule; 2] {
        [
            AllowRule {
                net: IpAddr::V4(Ipv4Addr::new(127, 0, 0, 0)),
                prefix: 8,
                first_port: 1,
                last_port: u16::MAX,
            },
            AllowRule {
                net: IpAddr::V6(Ipv6Addr::LOCALHOST),
                prefix: 128,
                first_port: 1,
                last_port: u16::MAX,
            },
        ]
    }

    /// Whether `to` is within the rule.
    pub fn matches(&self, to: &SocketAddr) -> bool {
        let port_ok = (self.first_port..=self.last_port).contains(&to.port());
        let net_ok = match (unmapped(self.net), unmapped(to.ip())) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let p = u32::from(self.prefix.min(32));
                let mask = if p == 0 { 0 } else { u32::MAX << (32 - p) };
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let p = u32::from(self.prefix.min(128));
                let mask = if p == 0 { 0 } else { u128::MAX << (128 - p) };
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        };
        port_ok && net_ok
    }
}

/// The destination of an inet `sockaddr`, if it is one.
pub fn socket_addr(b: &[u8]) -> Option<SocketAddr> {
    let fam = i32::from(u16::from_ne_bytes([*b.first()?, *b.get(1)?]));
    let port = u16::from_be_bytes([*b.get(2)?, *b.get(3)?]);
    match fam {
        libc::AF_INET if b.len() >= 8 => Some(SocketAddr::new(
            IpAddr::V4(Ipv4Addr::new(b[4], b[5], b[6], b[7])),
            port,
        )),
        libc::AF_INET6 if b.len() >= 24 => {
            let mut a = [0u8; 16];
            a.copy_from_slice(&b[8..24]);
            Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(a)), port))
        }
        _ => None,
    }
}

/// Decide (and, for an allowed peer, carry out) the `connect(fd, addr)` of task `tid` (see the
/// module docs). `addr` is the supervisor's copy of the job's `sockaddr`.
pub fn decide(
    tid: u32,
    fd: i32,
    addr: &[u8],
    allow: &[AllowRule],
    still_blocked: &dyn Fn() -> bool,
) -> Decision {
    let Some(to) = socket_addr(addr) else {
        return Decision::Refuse;
    };
    if !allow.iter().any(|r| r.matches(&to)) {
        return Decision::Refuse;
    }
    // Our own, complete copy of the address, of the family's exact size.
    let own: Vec<u8> = match to {
        SocketAddr::V4(_) => {
            addr[..std::mem::size_of::<libc::sockaddr_in>().min(addr.len())].to_vec()
        }
        SocketAddr::V6(_) => {
            addr[..std::mem::size_of::<libc::sockaddr_in6>().min(addr.len())].to_vec()
        }
    };
    match crate::unix_connect::job_fd(tid, fd, still_blocked) {
        Ok(sock) => Decision::Mediated(crate::unix_connect::connect_bounded(
            sock.as_raw_fd(),
            &own,
            CONNECT_TIMEOUT,
        )),
        Err(e) => Decision::Mediated(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_match_by_prefix_and_port_range() {
        let r = AllowRule {
            net: "10.7.0.0".parse().unwrap(),
            prefix: 24,
            first_port: 29500,
            last_port: 29599,
        };
        assert!(r.matches(&"10.7.0.2:29500".parse().unwrap()));
        assert!(r.matches(&"[::ffff:10.7.0.9]:29599".parse().unwrap()));
        assert!(!r.matches(&"10.7.1.2:29500".parse().unwrap()));
        assert!(!r.matches(&"10.7.0.2:29600".parse().unwrap()));
        assert_eq!(r.to_string(), "10.7.0.0/24:29500-29599");
        let [v4, v6] = AllowRule::loopback();
        assert!(v4.matches(&"127.0.0.1:80".parse().unwrap()));
        assert!(v6.matches(&"[::1]:80".parse().unwrap()));
        assert!(!v4.matches(&"10.0.0.1:80".parse().unwrap()));
        assert!(!v6.matches(&"[::2]:80".parse().unwrap()));
    }

    #[test]
    fn sockaddrs_are_read() {
        let mut v4 = vec![0u8; 16];
        v4[..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
        v4[2..4].copy_from_slice(&80u16.to_be_bytes());
        v4[4..8].copy_from_slice(&[127, 0, 0, 1]);
        assert_eq!(socket_addr(&v4), Some("127.0.0.1:80".parse().unwrap()));
        assert_eq!(socket_addr(&v4[..5]), None);
    }
}
