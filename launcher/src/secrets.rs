//! Short-lived secrets: read once, held in memory that is zeroed on drop,
//! handed to the job only as a file on a tmpfs inside the sandbox, and watched
//! for in everything the job emits.
//!
//! Guarantees: a secret value is never put in argv or the environment of any
//! process (a `from = "env:VAR"` source is scrubbed from the launcher's own
//! `/proc/self/environ` once read); the launcher is made non-dumpable while it
//! holds secrets (no core dump, no same-uid ptrace or `/proc/PID/mem`);
//! `Debug` and `Display` never show a value; logs are redacted as they stream,
//! including a value split across two reads; outputs are scanned for the value
//! and its base64, base64url, hex and URL encodings; records carry only the
//! name, TTL, delivery/expiry times and a keyed fingerprint.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

/// Why a secret could not be loaded. Messages name the secret and its source,
/// never its value.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("secret {name:?}: environment variable {var} is not set")]
    EnvMissing { name: String, var: String },
    #[error("secret {name:?}: cannot read {path}: {source}")]
    File {
        name: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("secret {name:?}: the value is empty")]
    Empty { name: String },
    #[error("secret {name:?}: the value is larger than 1 MiB")]
    TooLarge { name: String },
}

/// Where a secret comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Env(String),
    File(PathBuf),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Env(v) => write!(f, "env:{v}"),
            Source::File(p) => write!(f, "file:{}", p.display()),
        }
    }
}

/// A secret's declaration in the job spec.
#[derive(Debug, Clone)]
pub struct SecretSpec {
    pub name: String,
    pub source: Source,
    pub ttl: Duration,
    /// Absolute path inside the sandbox.
    pub path: String,
    /// Do not fail the run when the value shows up in logs or outputs.
    pub allow_leak: bool,
}

/// A loaded secret. The value is zeroed on drop and never printed.
pub struct Secret {
    pub spec: SecretSpec,
    value: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({:?}, <redacted>)", self.spec.name)
    }
}

/// Largest accepted secret.
const MAX_SECRET: u64 = 1 << 20;

/// The secrets of one pipeline: each source is read once (an `env:` source is scrubbed from
/// the launcher's environment when read), and every stage that declares it gets the value.
/// Values are zeroed when the cache is dropped, at the end of the pipeline.
#[derive(Default)]
pub struct SecretCache {
    values: std::sync::Mutex<Vec<(Source, Zeroizing<Vec<u8>>)>>,
}

impl fmt::Debug for SecretCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.values.lock().map(|v| v.len()).unwrap_or(0);
        write!(f, "SecretCache({n} value(s), <redacted>)")
    }
}

impl SecretCache {
    /// The secret of `spec`: from the cache if its source was read before, else read now.
    pub fn load(&self, spec: &SecretSpec) -> Result<Secret, SecretError> {
        let mut values = self.values.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, value)) = values.iter().find(|(s, _)| *s == spec.source) {
            return Ok(Secret {
                spec: spec.clone(),
                value: value.clone(),
            });
        }
        let secret = Secret::load(spec)?;
        values.push((spec.source.clone(), secret.value.clone()));
        Ok(secret)
    }
}

impl Secret {
    /// Read the secret from its source, once.
    pub fn load(spec: &SecretSpec) -> Result<Secret, SecretError> {
        let value = match &spec.source {
            Source::Env(var) => {
                let v = std::env::var_os(var).ok_or_else(|| SecretError::EnvMissing {
                    name: spec.name.clone(),
                    var: var.clone(),
                })?;
                let bytes =
                    Zeroizing::new(std::os::unix::ffi::OsStrExt::as_bytes(v.as_os_str()).to_vec());
                drop(Zeroizing::new(v.into_encoded_bytes()));
                scrub_environ(var);
                bytes
            }
            Source::File(path) => {
                let err = |source| SecretError::File {
                    name: spec.name.clone(),
                    path: path.clone(),
                    source,
                };
                let f = std::fs::File::open(path).map_err(err)?;
                let mut buf = Zeroizing::new(Vec::new());
                f.take(MAX_SECRET + 1).read_to_end(&mut buf).map_err(err)?;
                if buf.len() as u64 > MAX_SECRET {
                    return Err(SecretError::TooLarge {
                        name: spec.name.clone(),
                    });
                }
                // A trailing newline from `echo secret > file` is not part of the secret.
                while buf.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                    buf.pop();
                }
                buf
            }
        };
        if value.is_empty() {
            return Err(SecretError::Empty {
                name: spec.name.clone(),
            });
        }
        Ok(Secret {
            spec: spec.clone(),
            value,
        })
    }

    /// The value (for delivery into the sandbox only).
    pub fn expose(&self) -> &[u8] {
        &self.value
    }

    /// A keyed fingerprint: HMAC-SHA256 under a key derived from the launcher's
    /// signing key, so runs by the same launcher can be compared without
    /// revealing the value (and nobody without the key can test guesses).
    pub fn fingerprint(&self, key_material: &[u8]) -> String {
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(key_material).expect("HMAC takes any key length");
        mac.update(&self.value);
        format!("hmac-sha256:{}", hex::encode(mac.finalize().into_bytes()))
    }

    /// The byte patterns that count as this secret in logs and outputs.
    pub fn patterns(&self) -> Vec<Zeroizing<Vec<u8>>> {
        let v: &[u8] = &self.value;
        let mut out: Vec<Zeroizing<Vec<u8>>> = vec![Zeroizing::new(v.to_vec())];
        let mut push = |p: Vec<u8>| {
            let p = Zeroizing::new(p);
            if p.len() >= 4 && !out.iter().any(|q| **q == *p) {
                out.push(p);
            }
        };
        push(hex::encode(v).into_bytes());
        push(hex::encode_upper(v).into_bytes());
        // base64 of the value: the characters that encode whole 3-byte groups do not
        // depend on what follows, so they also match base64 of a longer blob starting
        // with the value.
        // Inside longer data (`user:VALUE`, `Bearer VALUE`) the value may start at any
        // offset modulo 3: from the first 3-byte boundary inside the value, the whole
        // groups encode the same way whatever precedes them.
        for skip in 0..3 {
            let w = &v[skip.min(v.len())..];
            let whole = w.len() / 3 * 3;
            if whole >= 6 {
                push(STANDARD_NO_PAD.encode(&w[..whole]).into_bytes());
                push(URL_SAFE_NO_PAD.encode(&w[..whole]).into_bytes());
            }
        }
        push(STANDARD_NO_PAD.encode(v).into_bytes());
        push(URL_SAFE_NO_PAD.encode(v).into_bytes());
        push(url_encode(v));
        out
    }
}

fn url_encode(v: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len() * 3);
    for &b in v {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b);
        } else {
            out.extend_from_slice(format!("%{b:02X}").as_bytes());
        }
    }
    out
}

/// Overwrite `VAR`'s value in this process's original environment block, so
/// `/proc/self/environ` no longer shows it, and remove it from the environment.
fn scrub_environ(var: &str) {
    let prefix = format!("{var}=");
    // SAFETY: `environ` is the C library's NULL-terminated array of NUL-terminated
    // strings. We only read the pointers and overwrite bytes of a value in place
    // (never past its NUL), while no other thread is reading the environment (this
    // runs while the launcher is single-threaded, before any runtime starts).
    unsafe {
        extern "C" {
            static mut environ: *mut *mut libc::c_char;
        }
        let mut p = environ;
        while !p.is_null() && !(*p).is_null() {
            let s = *p;
            let bytes = std::ffi::CStr::from_ptr(s).to_bytes();
            if bytes.starts_with(prefix.as_bytes()) {
                let val = s.add(prefix.len()).cast::<u8>();
                let len = bytes.len() - prefix.len();
                std::ptr::write_bytes(val, b'0', len);
            }
            p = p.add(1);
        }
    }
    // SAFETY: see above: single-threaded at this point.
    unsafe { std::env::remove_var(var) };
}

/// Make this process non-dumpable: no core file, no ptrace or /proc/PID/mem by
/// other processes of the same uid.
pub fn protect_process() {
    let _ = nix::sys::prctl::set_dumpable(false);
    let _ = nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_CORE, 0, 0);
}

/// Where a leak was seen.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Leak {
    pub secret: String,
    /// `stdout`, `stderr`, or `output:PATH`.
    pub place: String,
}

/// Every pattern of a set of secrets, compiled once into one Aho-Corasick
/// automaton (leftmost-longest, so an encoding that contains the raw value
/// wins): scanning costs the same per byte whatever the number of patterns.
/// Shared by every [`Redactor`] of a run.
///
/// The automaton holds the patterns in memory that is not zeroed on drop; the
/// launcher is non-dumpable while it holds secrets ([`protect_process`]).
pub struct Patterns {
    ac: Option<aho_corasick::AhoCorasick>,
    /// The secret name of each pattern, by pattern id.
    names: Vec<String>,
    /// The patterns, for deciding what of a stream's tail can be emitted.
    pats: Vec<Zeroizing<Vec<u8>>>,
    longest: usize,
}

impl fmt::Debug for Patterns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Patterns({})", self.names.len())
    }
}

impl Patterns {
    /// The patterns of `secrets` (none for no secrets: everything passes unchanged).
    pub fn new(secrets: &[Secret]) -> Patterns {
        let mut names = Vec::new();
        let mut pats: Vec<Zeroizing<Vec<u8>>> = Vec::new();
        for s in secrets {
            for p in s.patterns() {
                names.push(s.spec.name.clone());
                pats.push(p);
            }
        }
        let longest = pats.iter().map(|p| p.len()).max().unwrap_or(0);
        let ac = (!pats.is_empty()).then(|| {
            aho_corasick::AhoCorasick::builder()
                .match_kind(aho_corasick::MatchKind::LeftmostLongest)
                .build(pats.iter().map(|p| p.as_slice()))
                .expect("secret patterns are at most 4 MiB in all")
        });
        Patterns {
            ac,
            names,
            pats,
            longest,
        }
    }

    /// Whether a pattern longer than `tail` starts with it: more data could still
    /// complete a match (or a longer one) at `tail`'s first byte.
    fn pending(&self, tail: &[u8]) -> bool {
        self.pats
            .iter()
            .any(|p| p.len() > tail.len() && p.starts_with(tail))
    }

    /// Whether there is nothing to look for.
    pub fn is_empty(&self) -> bool {
        self.ac.is_none()
    }

    /// Redact a whole short text (a name, a link target, an address): the
    /// redacted bytes and the names of the secrets found.
    pub fn redact_bytes(&self, text: &[u8]) -> (Vec<u8>, Vec<String>) {
        let mut seen = BTreeMap::new();
        let (out, _) = self.redact_into(text, text.len(), &mut seen);
        (out, seen.into_keys().collect())
    }

    /// Redact `buf`, deciding only matches that start before `safe`; returns
    /// the output and where the undecided tail starts.
    fn redact_into(
        &self,
        buf: &[u8],
        safe: usize,
        seen: &mut BTreeMap<String, ()>,
    ) -> (Vec<u8>, usize) {
        let Some(ac) = &self.ac else {
            return (buf.to_vec(), buf.len());
        };
        let mut out = Vec::with_capacity(buf.len());
        let mut at = 0;
        for m in ac.find_iter(buf) {
            if m.start() >= safe {
                break;
            }
            let name = &self.names[m.pattern().as_usize()];
            out.extend_from_slice(&buf[at..m.start()]);
            out.extend_from_slice(format!("[REDACTED:{name}]").as_bytes());
            seen.insert(name.clone(), ());
            at = m.end();
        }
        let keep = safe.max(at);
        out.extend_from_slice(&buf[at..keep]);
        (out, keep)
    }
}

/// A streaming redactor: replaces every pattern with `[REDACTED:NAME]`, also
/// when a pattern straddles two chunks, and remembers which secrets it saw.
///
/// A match is decided only once no longer pattern could still start at its
/// first byte, so the result does not depend on how the stream was cut; only a
/// tail that more data could turn into a match (at most the longest pattern's
/// length less one byte) is held back.
pub struct Redactor {
    patterns: std::sync::Arc<Patterns>,
    carry: Zeroizing<Vec<u8>>,
    seen: BTreeMap<String, ()>,
}

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Redactor({:?})", self.patterns)
    }
}

impl Redactor {
    /// A redactor for `secrets` (compiles their patterns; see [`Redactor::with`]).
    pub fn new(secrets: &[Secret]) -> Redactor {
        Redactor::with(std::sync::Arc::new(Patterns::new(secrets)))
    }

    /// A fresh redactor over already compiled patterns.
    pub fn with(patterns: std::sync::Arc<Patterns>) -> Redactor {
        Redactor {
            patterns,
            carry: Zeroizing::new(Vec::new()),
            seen: BTreeMap::new(),
        }
    }

    /// Feed a chunk; returns the redacted bytes that are safe to emit now.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<u8> {
        if self.patterns.is_empty() {
            return chunk.to_vec();
        }
        let mut buf = Zeroizing::new(std::mem::take(&mut *self.carry));
        buf.extend_from_slice(chunk);
        // Every match starting before the first position where a pattern is still
        // pending is final (leftmost-longest cannot change it): decide those, emit
        // what lies between, hold the rest.
        let from = buf.len().saturating_sub(self.patterns.longest - 1);
        let safe = (from..buf.len())
            .find(|&p| self.patterns.pending(&buf[p..]))
            .unwrap_or(buf.len());
        let (out, keep) = self.patterns.redact_into(&buf, safe, &mut self.seen);
        self.carry.extend_from_slice(&buf[keep..]);
        out
    }

    /// End of stream: the rest, redacted.
    pub fn finish(&mut self) -> Vec<u8> {
        let buf = Zeroizing::new(std::mem::take(&mut *self.carry));
        let (out, _) = self.patterns.redact_into(&buf, buf.len(), &mut self.seen);
        out
    }

    /// Names of the secrets seen so far.
    pub fn seen(&self) -> Vec<String> {
        self.seen.keys().cloned().collect()
    }
}

/// Redact every secret (and its encodings) in a short text such as a file
/// name or link target; returns the redacted text and the secrets found.
pub fn redact_text(text: &str, secrets: &[Secret]) -> (String, Vec<String>) {
    if secrets.is_empty() {
        return (text.to_string(), Vec::new());
    }
    let (out, seen) = Patterns::new(secrets).redact_bytes(text.as_bytes());
    (String::from_utf8_lossy(&out).into_owned(), seen)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(name: &str, v: &[u8]) -> Secret {
        Secret {
            spec: SecretSpec {
                name: name.into(),
                source: Source::Env("X".into()),
                ttl: Duration::from_secs(1),
                path: "/run/secrets/x".into(),
                allow_leak: false,
            },
            value: Zeroizing::new(v.to_vec()),
        }
    }

    fn redact_in_chunks(r: &mut Redactor, text: &[u8], chunk: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for c in text.chunks(chunk) {
            out.extend(r.feed(c));
        }
        out.extend(r.finish());
        out
    }

    #[test]
    fn redacts_across_every_split_point() {
        let s = [secret("token", b"hunter2-s3cr3t-value")];
        let text = b"before hunter2-s3cr3t-value after hunter2 end";
        for chunk in 1..text.len() {
            let mut r = Redactor::new(&s);
            let out = redact_in_chunks(&mut r, text, chunk);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                "before [REDACTED:token] after hunter2 end",
                "chunk {chunk}"
            );
            assert_eq!(r.seen(), vec!["token".to_string()]);
        }
    }

    #[test]
    fn encodings_are_caught() {
        let v = b"AKIA-very-secret/key+42";
        let s = [secret("aws", v)];
        for enc in [
            hex::encode(v),
            hex::encode_upper(v),
            base64::engine::general_purpose::STANDARD.encode(v),
            URL_SAFE_NO_PAD.encode(v),
            String::from_utf8(url_encode(v)).unwrap(),
            base64::engine::general_purpose::STANDARD.encode([&v[..], b"trailing data"].concat()),
        ] {
            let mut r = Redactor::new(&s);
            let out = redact_in_chunks(&mut r, format!("x={enc};").as_bytes(), 7);
            assert!(
                String::from_utf8_lossy(&out).contains("[REDACTED:aws]"),
                "{enc}"
            );
            assert_eq!(r.seen(), vec!["aws".to_string()], "{enc}");
        }
    }

    #[test]
    fn a_tail_no_pattern_can_start_in_is_emitted_at_once() {
        let s = [secret("t", b"topsecretvalue")];
        let mut r = Redactor::new(&s);
        assert_eq!(r.feed(b"epoch 3: loss 0.5\n"), b"epoch 3: loss 0.5\n");
        // A possible start is held back until it is decided.
        assert_eq!(r.feed(b"key=topsec"), b"key=");
        assert_eq!(r.feed(b"retvalue!"), b"[REDACTED:t]!");
        assert_eq!(r.finish(), b"");
    }

    #[test]
    fn many_secrets_and_overlapping_encodings() {
        let s = [secret("a", b"abcdefgh"), secret("b", b"cdefghij-longer")];
        let text = b"x abcdefgh y cdefghij-longer z abcdefghij-longer";
        for chunk in 1..text.len() {
            let mut r = Redactor::new(&s);
            let out = redact_in_chunks(&mut r, text, chunk);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                "x [REDACTED:a] y [REDACTED:b] z [REDACTED:a]ij-longer",
                "chunk {chunk}"
            );
            assert_eq!(r.seen(), vec!["a".to_string(), "b".to_string()]);
        }
    }

    #[test]
    fn clean_text_passes_unchanged() {
        let s = [secret("t", b"abcdefgh12345")];
        let mut r = Redactor::new(&s);
        let text = b"nothing to see abcdefgh1234 here";
        assert_eq!(redact_in_chunks(&mut r, text, 5), text.to_vec());
        assert!(r.seen().is_empty());
    }

    #[test]
    fn debug_never_shows_the_value() {
        let s = secret("t", b"topsecretvalue");
        assert!(!format!("{s:?}").contains("topsecret"));
        let fp = s.fingerprint(b"k");
        assert!(fp.starts_with("hmac-sha256:") && !fp.contains("topsecret"));
        assert_eq!(fp, secret("u", b"topsecretvalue").fingerprint(b"k"));
        assert_ne!(fp, s.fingerprint(b"other key"));
    }
}
