//! How commands reach the TPM: the kernel's resource manager (`/dev/tpmrm0`) or swtpm's TCP
//! command port, named in the tss2 TCTI syntax (`device:/dev/tpmrm0`,
//! `swtpm:host=127.0.0.1,port=2321`) from `SEALRUN_TCTI`. One command, one response: a response
//! is read whole (its header's size) or the exchange fails; nothing is retried.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use super::TpmError;

/// The default TCTI: the kernel resource manager, which every command may share with other
/// TPM users on the host.
pub const DEFAULT_TCTI: &str = "device:/dev/tpmrm0";

/// Largest response accepted (TPM2 responses are at most a few KiB; MAX_RESPONSE_SIZE is 4096
/// on every TPM sealrun knows of).
const MAX_RESPONSE: usize = 64 * 1024;

/// A parsed TCTI string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tcti {
    Device(String),
    Swtpm { host: String, port: u16 },
}

impl Tcti {
    /// Parse `device[:PATH]` or `swtpm[:host=H,port=P]` (tss2 TCTI syntax; `mssim` is not
    /// supported: swtpm's plain TCP protocol is).
    pub fn parse(s: &str) -> Result<Tcti, TpmError> {
        let bad = |why: &str| TpmError::BadTcti {
            tcti: s.to_string(),
            why: why.to_string(),
        };
        let (name, conf) = s.split_once(':').unwrap_or((s, ""));
        match name {
            "device" => Ok(Tcti::Device(if conf.is_empty() {
                "/dev/tpmrm0".into()
            } else {
                conf.into()
            })),
            "swtpm" => {
                let (mut host, mut port) = ("127.0.0.1".to_string(), 2321u16);
                for kv in conf.split(',').filter(|kv| !kv.is_empty()) {
                    match kv.split_once('=') {
                        Some(("host", h)) if !h.is_empty() => host = h.to_string(),
                        Some(("port", p)) => {
                            port = p.parse().map_err(|_| bad("port is not a number"))?
                        }
                        _ => return Err(bad("expected host=ADDRESS,port=NUMBER")),
                    }
                }
                Ok(Tcti::Swtpm { host, port })
            }
            _ => Err(bad("expected device:PATH or swtpm:host=H,port=P")),
        }
    }

    /// The TCTI from `SEALRUN_TCTI`, or [`DEFAULT_TCTI`].
    pub fn from_env() -> Result<Tcti, TpmError> {
        match std::env::var("SEALRUN_TCTI") {
            Ok(s) if !s.is_empty() => Tcti::parse(&s),
            _ => Tcti::parse(DEFAULT_TCTI),
        }
    }
}

impl std::fmt::Display for Tcti {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Tcti::Device(p) => write!(f, "device:{p}"),
            Tcti::Swtpm { host, port } => write!(f, "swtpm:host={host},port={port}"),
        }
    }
}

/// An open channel to a TPM.
#[derive(Debug)]
pub enum Transport {
    Device(std::fs::File),
    Tcp(TcpStream),
}

impl Transport {
    pub fn open(tcti: &Tcti) -> Result<Transport, TpmError> {
        let unreachable = |e: std::io::Error| TpmError::Unreachable {
            tcti: tcti.to_string(),
            source: e,
        };
        match tcti {
            Tcti::Device(path) => std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(path)
                .map(Transport::Device)
                .map_err(unreachable),
            Tcti::Swtpm { host, port } => {
                let addr = std::net::ToSocketAddrs::to_socket_addrs(&(host.as_str(), *port))
                    .map_err(unreachable)?
                    .next()
                    .ok_or_else(|| {
                        unreachable(std::io::Error::other("the host name has no address"))
                    })?;
                let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
                    .map_err(unreachable)?;
                s.set_read_timeout(Some(Duration::from_secs(120)))
                    .and_then(|_| s.set_nodelay(true))
                    .map_err(unreachable)?;
                Ok(Transport::Tcp(s))
            }
        }
    }

    /// Send one command and return its whole response.
    pub fn transact(&mut self, cmd: &[u8]) -> Result<Vec<u8>, TpmError> {
        let io = |e: std::io::Error| TpmError::Io { source: e };
        match self {
            Transport::Device(f) => {
                f.write_all(cmd).map_err(io)?;
                // The kernel hands over the whole response in one read.
                let mut buf = vec![0u8; MAX_RESPONSE];
                let n = f.read(&mut buf).map_err(io)?;
                buf.truncate(n);
                check_len(&buf)?;
                Ok(buf)
            }
            Transport::Tcp(s) => {
                s.write_all(cmd).map_err(io)?;
                let mut head = [0u8; 10];
                s.read_exact(&mut head).map_err(io)?;
                let size = u32::from_be_bytes([head[2], head[3], head[4], head[5]]) as usize;
                if !(10..=MAX_RESPONSE).contains(&size) {
                    return Err(TpmError::Malformed {
                        command: "response",
                        detail: format!("response size {size}"),
                    });
                }
                let mut buf = head.to_vec();
                buf.resize(size, 0);
                s.read_exact(&mut buf[10..]).map_err(io)?;
                Ok(buf)
            }
        }
    }
}

fn check_len(buf: &[u8]) -> Result<(), TpmError> {
    let ok = buf.len() >= 10
        && u32::from_be_bytes([buf[2], buf[3], buf[4], buf[5]]) as usize == buf.len();
    if ok {
        Ok(())
    } else {
        Err(TpmError::Malformed {
            command: "response",
            detail: format!("{} bytes, not what its header says", buf.len()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcti_strings_parse_as_tss2_writes_them() {
        assert_eq!(
            Tcti::parse("swtpm:host=127.0.0.1,port=2321").unwrap(),
            Tcti::Swtpm {
                host: "127.0.0.1".into(),
                port: 2321
            }
        );
        assert_eq!(
            Tcti::parse("device:/dev/tpmrm0").unwrap(),
            Tcti::Device("/dev/tpmrm0".into())
        );
        assert_eq!(
            Tcti::parse("device").unwrap(),
            Tcti::Device("/dev/tpmrm0".into())
        );
        assert!(Tcti::parse("mssim:host=x").is_err());
        assert!(Tcti::parse("swtpm:port=abc").is_err());
    }
}
