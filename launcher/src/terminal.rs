//! The operator's terminal. Guarantees: a job never holds a descriptor of it (`sealrun exec`
//! relays the job's output through pipes whenever its own stdout or stderr is a terminal;
//! `sealrun run` always does), so a job can neither read what the operator types nor issue tty
//! ioctls on it; and what is echoed to a terminal has its control characters escaped, so a job
//! cannot move the cursor, retitle the window, rewrite earlier lines or hide text. Only `\n`,
//! `\t` and `\r` (progress bars) pass; every other C0/C1 control character, `DEL` and every byte
//! that is not UTF-8 is written as `\xNN` (C1 code points as `\u{NN}`). Log files keep the raw
//! bytes.

use std::io::{IsTerminal, Read, Write};
use std::os::fd::OwnedFd;

/// Escapes a byte stream for a terminal, chunk by chunk (a UTF-8 sequence cut between two chunks
/// is kept for the next one).
#[derive(Debug, Default)]
pub struct Escaper {
    pending: Vec<u8>,
}

impl Escaper {
    /// Escape `chunk`, appending to `out`.
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        self.pending.extend_from_slice(chunk);
        let buf = std::mem::take(&mut self.pending);
        let mut rest = &buf[..];
        loop {
            match std::str::from_utf8(rest) {
                Ok(s) => {
                    push_escaped(s, out);
                    return;
                }
                Err(e) => {
                    let (good, bad) = rest.split_at(e.valid_up_to());
                    // `good` is valid UTF-8, as the error itself reports.
                    push_escaped(std::str::from_utf8(good).unwrap_or_default(), out);
                    match e.error_len() {
                        Some(n) => {
                            for b in &bad[..n] {
                                out.extend_from_slice(format!("\\x{b:02x}").as_bytes());
                            }
                            rest = &bad[n..];
                        }
                        None => {
                            // An incomplete sequence at the end: wait for the next chunk.
                            self.pending = bad.to_vec();
                            return;
                        }
                    }
                }
            }
        }
    }

    /// The end of the stream: whatever incomplete sequence is left, escaped.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        for b in std::mem::take(&mut self.pending) {
            out.extend_from_slice(format!("\\x{b:02x}").as_bytes());
        }
    }
}

fn push_escaped(s: &str, out: &mut Vec<u8>) {
    for c in s.chars() {
        match c {
            '\n' | '\t' | '\r' => out.push(c as u8),
            c if (c as u32) < 0x20 || c == '\x7f' => {
                out.extend_from_slice(format!("\\x{:02x}", c as u32).as_bytes())
            }
            c if (0x80..0xa0).contains(&(c as u32)) => {
                out.extend_from_slice(format!("\\u{{{:02x}}}", c as u32).as_bytes())
            }
            c => {
                let mut b = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
            }
        }
    }
}

/// Escape a whole byte string for a terminal.
pub fn escape(bytes: &[u8]) -> Vec<u8> {
    let mut e = Escaper::default();
    let mut out = Vec::with_capacity(bytes.len());
    e.feed(bytes, &mut out);
    e.finish(&mut out);
    out
}

/// Which of our stdout (1) and stderr (2) are terminals.
pub fn terminals() -> (bool, bool) {
    (
        std::io::stdout().is_terminal(),
        std::io::stderr().is_terminal(),
    )
}

/// A relay from a pipe to our own stdout or stderr, escaping for the terminal: the job gets the
/// pipe's write end instead of the terminal.
#[derive(Debug)]
pub struct Relay {
    thread: std::thread::JoinHandle<()>,
}

impl Relay {
    /// Start relaying to stderr (`to_stderr`) or stdout; returns the relay and the write end
    /// for the job.
    pub fn start(to_stderr: bool) -> std::io::Result<(Relay, OwnedFd)> {
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        let thread = std::thread::Builder::new()
            .name("sealrun-relay".into())
            .spawn(move || {
                let mut r = std::fs::File::from(r);
                let mut buf = vec![0u8; 16 << 10];
                let mut esc = Escaper::default();
                let mut out = Vec::new();
                loop {
                    let n = match r.read(&mut buf) {
                        Ok(n) => n,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                        Err(_) => 0,
                    };
                    out.clear();
                    if n == 0 {
                        esc.finish(&mut out);
                    } else {
                        esc.feed(&buf[..n], &mut out);
                    }
                    let _ = if to_stderr {
                        let mut e = std::io::stderr().lock();
                        e.write_all(&out).and_then(|_| e.flush())
                    } else {
                        let mut o = std::io::stdout().lock();
                        o.write_all(&out).and_then(|_| o.flush())
                    };
                    if n == 0 {
                        return;
                    }
                }
            })?;
        Ok((Relay { thread }, w))
    }

    /// Wait until everything the job wrote has been relayed (the pipe's last writer is gone).
    pub fn finish(self) {
        let _ = self.thread.join();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_sequences_are_escaped_and_text_passes() {
        let raw = "ok\t\u{e9}\r\n\x1b]0;title\x07\x1b[2J\x08\x7f\u{9b}31m".as_bytes();
        assert_eq!(
            String::from_utf8(escape(raw)).unwrap(),
            "ok\t\u{e9}\r\n\\x1b]0;title\\x07\\x1b[2J\\x08\\x7f\\u{9b}31m"
        );
        assert_eq!(escape(b"\xff\xfe a"), b"\\xff\\xfe a");
    }

    #[test]
    fn a_sequence_cut_between_chunks_is_kept_whole() {
        let mut e = Escaper::default();
        let mut out = Vec::new();
        let s = "\u{20ac}".as_bytes(); // three bytes
        e.feed(&s[..1], &mut out);
        e.feed(&s[1..], &mut out);
        e.feed(&s[..2], &mut out);
        e.finish(&mut out);
        assert_eq!(out, b"\xe2\x82\xac\\xe2\\x82");
    }
}
