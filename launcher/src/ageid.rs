//! The launcher's decryption identity: an age X25519 key pair whose public half (the
//! `age1…` recipient) data owners encrypt confidential datasets to.
//!
//! Guarantees: [`new_identity`] writes the file with mode 0600 from the start, exclusively
//! (an existing file is never replaced), and fsyncs it; the file is a standard age identity
//! file (`age -d -i FILE` reads it) with the recipient in a `# public key:` comment.
//! [`load`] refuses a file that is a symlink, not a regular file, owned by another user, or
//! readable or writable by group or others, and one whose `# public key:` comment does not
//! match its key; the key text is held in memory that is zeroed on drop, and the key itself
//! (age's `StaticSecret`) is zeroed when the [`Identity`] is dropped. The key never appears in
//! a message, a log or a record: only its recipient does, with how it is held
//! ([`Protection`]).
//!
//! A TPM-sealed identity (`--tpm`) holds no key in the clear: the file carries the key sealed
//! by the TPM (`crate::tpm::seal`) under a policy on PCR 23 as the launcher's measurement leaves
//! it (`SealPolicy::launcher`: reset, then extend with this `sealrun` binary's SHA-256). It
//! unseals only on that TPM, and only after the launcher has measured itself into PCR 23 again
//! (`unseal_under_launcher`): another host, or a modified launcher, gets the TPM's policy
//! failure, named. The file is still created 0600.

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use age::secrecy::ExposeSecret;
use zeroize::Zeroizing;

/// How the identity's key is held (recorded as `identity` in the decryption notes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protection {
    /// A file readable by the launcher's uid only (mode 0600).
    SoftwareHeld,
    /// Sealed by a TPM under a policy on the launcher's measurement.
    TpmSealed,
}

impl Protection {
    /// The name in records.
    pub fn as_str(self) -> &'static str {
        match self {
            Protection::SoftwareHeld => sealrun_verifier::record::IDENTITY_SOFTWARE_HELD,
            Protection::TpmSealed => sealrun_verifier::record::IDENTITY_TPM_SEALED,
        }
    }
}

/// The first line of a sealed identity file.
pub const TPM_SEALED_HEADER: &str = "# sealrun launcher identity: tpm-sealed";
const SOFTWARE_HEADER: &str = "# sealrun launcher identity: software-held (keep this file mode 0600, owned by the launcher's user)";
const PUBLIC_KEY: &str = "# public key: ";
/// Largest identity file read.
const MAX_IDENTITY_BYTES: u64 = 64 << 10;

/// Why an identity could not be made or loaded. Never shows the key.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("{path}: already exists; an identity is never replaced (move it away first: data encrypted to it could not be decrypted any more)")]
    Exists { path: PathBuf },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path}: a decryption identity must be a regular file (not a symlink or special file)"
    )]
    NotRegular { path: PathBuf },
    #[error("{path}: the identity is readable or writable by group or others (mode {mode:o}); run `chmod 600 {path}`")]
    TooOpen { path: PathBuf, mode: u32 },
    #[error("{path}: the identity is owned by uid {owner}, not by the launcher (uid {euid})")]
    NotOwned {
        path: PathBuf,
        owner: u32,
        euid: u32,
    },
    #[error("{path}: not an age identity file: {why}")]
    Malformed { path: PathBuf, why: String },
    #[error("{path}: a TPM-sealed identity cannot be used: {why}")]
    Unseal { path: PathBuf, why: String },
    #[error("--tpm: cannot seal the identity with the TPM: {0}")]
    Seal(String),
}

/// A loaded identity: the key (zeroed on drop) and its public recipient.
pub struct Identity {
    key: age::x25519::Identity,
    /// `age1…`.
    pub recipient: String,
    pub protection: Protection,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Identity({}, {:?}, <key redacted>)",
            self.recipient, self.protection
        )
    }
}

impl Identity {
    /// The key, for age's decryptor.
    pub fn age(&self) -> &dyn age::Identity {
        &self.key
    }
}

/// Make a new software-held identity at `out` (mode 0600, created exclusively); returns its
/// recipient. `tpm` asks for a TPM-sealed one (see the module notes).
pub fn new_identity(out: &Path, tpm: bool) -> Result<String, IdentityError> {
    if out.exists() {
        return Err(IdentityError::Exists {
            path: out.to_path_buf(),
        });
    }
    let key = age::x25519::Identity::generate();
    let recipient = key.to_public().to_string();
    let secret = key.to_string();
    let created = crate::now_rfc3339();
    let text = if tpm {
        let blob = seal_key(secret.expose_secret().as_bytes())?;
        Zeroizing::new(format!(
            "{TPM_SEALED_HEADER}\n# created: {created}\n{PUBLIC_KEY}{recipient}\n{blob}\n"
        ))
    } else {
        Zeroizing::new(format!(
            "{SOFTWARE_HEADER}\n# created: {created}\n{PUBLIC_KEY}{recipient}\n{}\n",
            secret.expose_secret()
        ))
    };
    let io = |source| IdentityError::Io {
        path: out.to_path_buf(),
        source,
    };
    let mut f = match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(out)
    {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(IdentityError::Exists {
                path: out.to_path_buf(),
            })
        }
        r => r.map_err(io)?,
    };
    f.write_all(text.as_bytes()).map_err(io)?;
    f.sync_all().map_err(io)?;
    Ok(recipient)
}

/// Seal `key` with the TPM (`SEALRUN_TCTI`) to this launcher's PCR 23 measurement; the sealed
/// blob as one line of JSON.
fn seal_key(key: &[u8]) -> Result<String, IdentityError> {
    let seal = || -> Result<String, crate::tpm::TpmError> {
        let mut tpm = crate::tpm::Tpm::open()?;
        let policy = crate::tpm::SealPolicy::launcher(&crate::tpm::measure::launcher_digest()?);
        let blob = crate::tpm::seal(&mut tpm, key, &policy)?;
        Ok(serde_json::to_string(&blob).unwrap_or_default())
    };
    seal().map_err(|e| IdentityError::Seal(e.to_string()))
}

/// Unseal the key of a sealed identity file's text, under the launcher's measurement.
fn unseal_key(path: &Path, text: &str) -> Result<Zeroizing<String>, IdentityError> {
    let unseal = |why: String| IdentityError::Unseal {
        path: path.to_path_buf(),
        why,
    };
    let blob: crate::tpm::SealedBlob = text
        .lines()
        .find(|l| l.starts_with('{'))
        .and_then(|l| serde_json::from_str(l).ok())
        .ok_or_else(|| unseal("no sealed blob (a JSON line) in the file".into()))?;
    let mut tpm = crate::tpm::Tpm::open().map_err(|e| unseal(e.to_string()))?;
    let state = crate::tpm::measure::state_dir();
    let key =
        crate::tpm::measure::unseal_under_launcher(&mut tpm, &blob, &state, "decryption-identity")
            .map_err(|e| unseal(e.to_string()))?;
    String::from_utf8(key.to_vec())
        .map(Zeroizing::new)
        .map_err(|_| unseal("the unsealed key is not text".into()))
}

/// Read `path` under the rules of the module notes: (regular, ours, mode 0600 or narrower).
fn read_checked(path: &Path) -> Result<Zeroizing<String>, IdentityError> {
    let io = |source| IdentityError::Io {
        path: path.to_path_buf(),
        source,
    };
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => IdentityError::NotRegular {
                path: path.to_path_buf(),
            },
            _ => io(e),
        })?;
    let meta = f.metadata().map_err(io)?;
    if !meta.is_file() {
        return Err(IdentityError::NotRegular {
            path: path.to_path_buf(),
        });
    }
    let euid = nix::unistd::geteuid().as_raw();
    if meta.uid() != euid {
        return Err(IdentityError::NotOwned {
            path: path.to_path_buf(),
            owner: meta.uid(),
            euid,
        });
    }
    if meta.mode() & 0o077 != 0 {
        return Err(IdentityError::TooOpen {
            path: path.to_path_buf(),
            mode: meta.mode() & 0o7777,
        });
    }
    // Room for the largest file up front: a growing buffer would leave copies of the key behind.
    let mut text = Zeroizing::new(String::with_capacity(MAX_IDENTITY_BYTES as usize + 1));
    f.take(MAX_IDENTITY_BYTES)
        .read_to_string(&mut text)
        .map_err(io)?;
    Ok(text)
}

/// The `# public key:` comment of an identity file's text, if it has one.
fn public_key_comment(text: &str) -> Option<&str> {
    text.lines()
        .find_map(|l| l.strip_prefix(PUBLIC_KEY))
        .map(str::trim)
}

/// Load the identity at `path` (see the module notes).
pub fn load(path: &Path) -> Result<Identity, IdentityError> {
    let text = read_checked(path)?;
    let malformed = |why: &str| IdentityError::Malformed {
        path: path.to_path_buf(),
        why: why.to_string(),
    };
    let (text, protection) = if text.starts_with(TPM_SEALED_HEADER) {
        (unseal_key(path, &text)?, Protection::TpmSealed)
    } else {
        (text, Protection::SoftwareHeld)
    };
    let mut keys = text
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("AGE-SECRET-KEY-"));
    let line = keys
        .next()
        .ok_or_else(|| malformed("no AGE-SECRET-KEY-1… line"))?;
    if keys.next().is_some() {
        return Err(malformed(
            "more than one key; a launcher identity holds exactly one",
        ));
    }
    let key = age::x25519::Identity::from_str(line)
        .map_err(|_| malformed("the AGE-SECRET-KEY-1… line is not a valid X25519 key"))?;
    let recipient = key.to_public().to_string();
    if let Some(comment) = public_key_comment(&text) {
        if comment != recipient {
            return Err(malformed(&format!(
                "its `# public key:` comment says {comment}, but the key's recipient is {recipient}"
            )));
        }
    }
    Ok(Identity {
        key,
        recipient,
        protection,
    })
}

/// The recipient (`age1…`) of the identity file at `path` (a sealed one is not unsealed: its
/// `# public key:` comment is read).
pub fn recipient(path: &Path) -> Result<String, IdentityError> {
    check(path)
}

/// The checks that need no TPM: the file's rules (see the module notes), and a key or a sealed
/// blob with a recipient; returns the recipient. A software-held key is parsed (and its
/// comment checked), a sealed one is not unsealed.
pub fn check(path: &Path) -> Result<String, IdentityError> {
    let text = read_checked(path)?;
    if !text.starts_with(TPM_SEALED_HEADER) {
        return load(path).map(|i| i.recipient);
    }
    let recipient = public_key_comment(&text)
        .filter(|r| age::x25519::Recipient::from_str(r).is_ok())
        .ok_or_else(|| IdentityError::Malformed {
            path: path.to_path_buf(),
            why: "a sealed identity needs its `# public key: age1…` line".into(),
        })?;
    Ok(recipient.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn new_load_and_refusals() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("launcher.ageid");
        let r = new_identity(&p, false).unwrap();
        assert!(r.starts_with("age1"));
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let id = load(&p).unwrap();
        assert_eq!(id.recipient, r);
        assert_eq!(id.protection, Protection::SoftwareHeld);
        assert!(!format!("{id:?}").contains("AGE-SECRET-KEY"));
        assert!(matches!(
            new_identity(&p, false),
            Err(IdentityError::Exists { .. })
        ));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
        let e = load(&p).unwrap_err();
        assert!(e.to_string().contains("chmod 600"), "{e}");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        let other = age::x25519::Identity::generate().to_public().to_string();
        std::fs::write(&p, text.replace(&r, &other)).unwrap();
        let e = load(&p).unwrap_err();
        assert!(e.to_string().contains("public key"), "{e}");
    }
}
