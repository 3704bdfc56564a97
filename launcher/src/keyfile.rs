//! Key files on disk: `PREFIX.key` (Ed25519 PKCS#8 PEM, mode 0600, created
//! exclusively) and `PREFIX.pub` (SubjectPublicKeyInfo PEM).
//!
//! Guarantees: a private key file is created with mode 0600 from the start
//! (never widened after the fact), an existing key is never overwritten unless
//! asked, and a private key readable by group or others is refused on load.
//! A signing key is only ever loaded and used on the main thread, whose stack is
//! made wipe-on-fork first (`MADV_WIPEONFORK`): the sandbox init, a fork-like copy
//! of the launcher, gets that stack zero-filled, so it never holds the key (nor what
//! signing left on the stack) while the job runs; the key's heap buffers are zeroed
//! on drop.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sealrun_verifier::fsread::{read_bounded, Follow, ReadError, MAX_KEY_BYTES};
use sealrun_verifier::keys::{KeyError, SigningKey};

/// Why a key file could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("{path}: already exists; pass --force to replace it")]
    Exists { path: PathBuf },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot keep the signing key out of the sandbox: {0}")]
    WipeOnFork(String),
    #[error("{path}: {source}")]
    Key {
        path: PathBuf,
        #[source]
        source: KeyError,
    },
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error("{path}: private key is readable by group or others (mode {mode:o}); run `chmod 600 {path}`")]
    TooOpen { path: PathBuf, mode: u32 },
    #[error("{path}: this is a public key, which only verifies; signing needs the private key (`sealrun keygen --out PREFIX` writes it as PREFIX.key{hint})")]
    PublicKeyGiven { path: PathBuf, hint: String },
}

/// The paths written by [`generate`].
#[derive(Debug)]
pub struct KeyPair {
    pub private: PathBuf,
    pub public: PathBuf,
    pub keyid: String,
}

fn with_suffix(prefix: &Path, suffix: &str) -> PathBuf {
    let mut s = prefix.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Generate a key pair at `PREFIX.key` / `PREFIX.pub`.
pub fn generate(prefix: &Path, force: bool) -> Result<KeyPair, KeyFileError> {
    let private = with_suffix(prefix, ".key");
    let public = with_suffix(prefix, ".pub");
    if !force {
        for p in [&private, &public] {
            if p.exists() {
                return Err(KeyFileError::Exists { path: p.clone() });
            }
        }
    }
    let key = SigningKey::generate();
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| KeyFileError::Io { path, source }
    };
    if force {
        let _ = std::fs::remove_file(&private);
    }
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&private)
        .map_err(io(&private))?;
    f.write_all(key.to_pkcs8_pem().as_bytes())
        .map_err(io(&private))?;
    f.sync_all().map_err(io(&private))?;
    let pub_key = key.public();
    sealrun_verifier::rollback::write_atomic(&public, pub_key.to_pem().as_bytes())
        .map_err(io(&public))?;
    std::fs::set_permissions(&public, std::fs::Permissions::from_mode(0o644))
        .map_err(io(&public))?;
    Ok(KeyPair {
        private,
        public,
        keyid: pub_key.keyid(),
    })
}

/// Load an Ed25519 private key, refusing one readable by group or others.
pub fn load_signing_key(path: &Path) -> Result<SigningKey, KeyFileError> {
    wipe_main_stack_on_fork()?;
    let io = |source| KeyFileError::Io {
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    let mode = meta.permissions().mode() & 0o777;
    let bytes = zeroize::Zeroizing::new(read_bounded(
        path,
        "private key",
        MAX_KEY_BYTES,
        Follow::Yes,
    )?);
    // A public key given by mistake (`--key x.pub`) is said to be one, not "too open".
    if is_public_pem(&bytes) {
        let private = path.with_extension("key");
        let hint = if private != path && private.exists() {
            format!("; here: {}", private.display())
        } else {
            String::new()
        };
        return Err(KeyFileError::PublicKeyGiven {
            path: path.to_path_buf(),
            hint,
        });
    }
    if mode & 0o077 != 0 {
        return Err(KeyFileError::TooOpen {
            path: path.to_path_buf(),
            mode,
        });
    }
    let pem = std::str::from_utf8(&bytes).map_err(|_| KeyFileError::Key {
        path: path.to_path_buf(),
        source: KeyError::BadPrivateKey,
    })?;
    SigningKey::from_pkcs8_pem(pem).map_err(|source| KeyFileError::Key {
        path: path.to_path_buf(),
        source,
    })
}

/// Whether a key file's bytes are a public key PEM (SPKI, `BEGIN PUBLIC KEY`).
fn is_public_pem(bytes: &[u8]) -> bool {
    bytes
        .windows(b"-----BEGIN PUBLIC KEY-----".len())
        .any(|w| w == b"-----BEGIN PUBLIC KEY-----")
}

/// Mark the main thread's stack `MADV_WIPEONFORK` (idempotent). Must be called on the main
/// thread: that is where keys are loaded and used.
fn wipe_main_stack_on_fork() -> Result<(), KeyFileError> {
    let err = |m: String| KeyFileError::WipeOnFork(m);
    if nix::unistd::gettid() != nix::unistd::getpid() {
        return Err(err("a signing key must be loaded on the main thread".into()));
    }
    let maps = std::fs::read_to_string("/proc/self/maps")
        .map_err(|e| err(format!("/proc/self/maps: {e}")))?;
    let range = maps
        .lines()
        .find(|l| l.ends_with("[stack]"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|r| r.split_once('-'))
        .and_then(|(a, b)| {
            Some((
                usize::from_str_radix(a, 16).ok()?,
                usize::from_str_radix(b, 16).ok()?,
            ))
        })
        .ok_or_else(|| err("no [stack] in /proc/self/maps".into()))?;
    // SAFETY: an advice on our own, mapped stack range; WIPEONFORK changes nothing for this
    // process (only what a fork-like child sees), and the stack VMA keeps it as it grows.
    let r = unsafe {
        libc::madvise(
            range.0 as *mut libc::c_void,
            range.1 - range.0,
            libc::MADV_WIPEONFORK,
        )
    };
    if r != 0 {
        return Err(err(format!(
            "madvise(MADV_WIPEONFORK): {} (needs Linux 4.14 or later)",
            std::io::Error::last_os_error()
        )));
    }
    Ok(())
}
