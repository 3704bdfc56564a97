//! Confidential inputs: a signed dataset stored encrypted (one age file `NAME.age` per signed
//! file `NAME`, same tree), decrypted only into a tmpfs that exists in the sandbox alone.
//!
//! Guarantees of [`decrypt_verify`]:
//! - Cheap checks first, nothing decrypted: the signature lists sizes (a sealrun envelope);
//!   every file of the encrypted folder is a regular file named `NAME.age` for a file `NAME`
//!   the signature lists, and every listed file has one (an extra, a missing or an unlisted
//!   file is named).
//! - The plaintext is written only into a detached tmpfs ([`DetachedTmpfs`]: `noswap` where
//!   the kernel allows, sized to the signed plaintext) through its mount descriptor; no path on
//!   the host reaches it, and nothing of it is written anywhere else. Files are decrypted in
//!   parallel, each in one pass that decrypts, writes and hashes (the plaintext digest is of
//!   the bytes written, as [`sealrun_verifier::digest::hash_file`] computes it; the ciphertext
//!   is hashed in the same read). A file that yields more bytes than signed stops at once.
//! - The digests are compared with the signed manifest (the first file that differs is named);
//!   only then is the tmpfs sealed (read-only, nosuid, nodev, noexec) and handed over, to be
//!   attached in the sandbox by its descriptor. On any error it is dropped, and with it every
//!   decrypted byte.
//! - Errors name the file and what failed: not encrypted to this launcher (with the stanza
//!   types the file's header holds), a header whose MAC does not verify, a payload chunk that
//!   fails ChaCha20-Poly1305 authentication (with its offset), bytes after the final chunk.
//! - Read buffers holding plaintext are zeroed on drop (age zeroes its own); the identity is
//!   loaded for the input and dropped (zeroed) before the sandbox starts, so neither the
//!   launcher nor the sandbox init (a fork-like copy of it) holds the key or the plaintext
//!   while the job runs.
//!
//! The tmpfs's pages are charged to the launcher's memory cgroup (the writer's); the run
//! reserves [`tmpfs_bytes`] out of the job's memory limit instead (see docs/confidential.md),
//! and [`check_plan`] refuses, before anything is verified, a dataset the limit cannot hold.

use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use sealrun_sandbox::detached::DetachedTmpfs;
use sealrun_verifier::artifact::{self, Signed, VerifyError};
use sealrun_verifier::digest::{Algorithm, Digest};
use sealrun_verifier::manifest::{self, Manifest, Resource, WalkOptions};
use sealrun_verifier::record::{CiphertextFile, Decryption, AGE_V1, MAX_LISTED_CIPHERTEXT};
use sha2::{Digest as _, Sha256};
use zeroize::Zeroizing;

use crate::ageid::Identity;

/// Suffix of an encrypted file.
pub const AGE_SUFFIX: &str = ".age";
/// Plaintext buffer: written to the tmpfs and hashed 1 MiB at a time (16 age chunks).
const BUF: usize = 1 << 20;
/// Ciphertext read buffer for the header. It is smaller than an age chunk (64 KiB + 16), so
/// once the header is read, the stream's chunk reads bypass it and go straight from the file
/// into the stream's own buffer: one copy fewer per byte.
const HEADER_BUF: usize = 8 << 10;
/// A memory page.
const PAGE: usize = 4096;
/// A job must keep at least this much of its memory limit besides the decrypted inputs.
pub const MIN_JOB_MEMORY: u64 = 32 << 20;

/// Why an encrypted input was refused. Every variant about a file names it.
#[derive(Debug, thiserror::Error)]
pub enum DecryptError {
    #[error("{path}: an encrypted input is a folder of `NAME.age` files (sign the plaintext folder, then encrypt it: `sealrun encrypt DIR --recipient age1… --out DIR.enc`)")]
    NotAFolder { path: PathBuf },
    #[error("an encrypted input needs a sealrun signature, which lists every file's size (a model-signing bundle does not)")]
    SizesNotSigned,
    #[error("{file}: not an encrypted file (every file of an encrypted input is NAME.age)")]
    NotAge { file: String },
    #[error("{file}: decrypts to {plain:?}, which the signature does not list")]
    Unsigned { file: String, plain: String },
    #[error("{plain:?} is signed but {plain}.age is missing from the encrypted folder")]
    Missing { plain: String },
    #[error("{file}: not encrypted to this launcher's recipient {recipient}; the file's header has stanzas of type [{}] (ask the data owner to encrypt to {recipient}: `sealrun identity recipient` prints it)", stanzas.join(", "))]
    NotForUs {
        file: String,
        recipient: String,
        stanzas: Vec<String>,
    },
    #[error("{file}: tampered ciphertext: {what}")]
    Tampered { file: String, what: String },
    #[error("{file}: not a valid age file: {why}")]
    Format { file: String, why: String },
    #[error("{file}: decrypts to more than the {signed} bytes the signature lists")]
    Larger { file: String, signed: u64 },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("decryption identity: {0}")]
    Identity(#[from] crate::ageid::IdentityError),
    #[error("cannot make the in-sandbox tmpfs for the plaintext ({size} bytes): {source}")]
    Tmpfs {
        size: u64,
        #[source]
        source: std::io::Error,
    },
    /// The plaintext does not match the signature (names the file).
    #[error(transparent)]
    Verify(#[from] VerifyError),
}

impl DecryptError {
    /// A stable machine-readable name for the reason (as the verifier's `kind()`s).
    pub fn kind(&self) -> &'static str {
        match self {
            DecryptError::Verify(e) => e.kind(),
            DecryptError::NotForUs { .. } => "not_encrypted_to_this_launcher",
            DecryptError::Tampered { .. } => "tampered_ciphertext",
            DecryptError::Larger { .. } => "size_mismatch",
            DecryptError::NotAFolder { .. }
            | DecryptError::SizesNotSigned
            | DecryptError::NotAge { .. }
            | DecryptError::Format { .. } => "not_encrypted",
            DecryptError::Unsigned { .. } => "unsigned_file",
            DecryptError::Missing { .. } => "missing_file",
            DecryptError::Identity(_) => "decryption_identity",
            DecryptError::Io { .. } | DecryptError::Tmpfs { .. } => "unreadable",
        }
    }
}

/// A decrypted, verified input: the sealed tmpfs and what the record says about it.
#[derive(Debug)]
pub struct Decrypted {
    tmpfs: DetachedTmpfs,
    pub notes: Decryption,
}

impl Decrypted {
    /// The mount descriptor, for [`sealrun_sandbox::SandboxConfig::attach`].
    pub fn into_fd(self) -> OwnedFd {
        self.tmpfs.into_fd()
    }
}

/// Decrypt and verify the encrypted input `input` (its signature already checked: `signed`)
/// with the spec's decryption identity, which is loaded for this and dropped (zeroed) after.
pub fn stage(
    input: &crate::spec::Input,
    spec: &crate::spec::JobSpec,
    signed: &Signed,
) -> Result<crate::staging::Staged, DecryptError> {
    let path =
        spec.decryption_identity
            .as_deref()
            .ok_or(crate::ageid::IdentityError::Malformed {
                path: PathBuf::new(),
                why: "no decryption_identity in the spec".into(),
            })?;
    let identity = crate::ageid::load(path)?;
    let d = decrypt_verify(&input.path, signed, &identity)?;
    Ok(crate::staging::Staged {
        path: PathBuf::new(),
        rel: PathBuf::new(),
        how: "decrypted",
        bind: None,
        decrypted: Some(d),
    })
}

/// Hand the sealed tmpfs of `d` to the sandbox, to be attached at `dest`; its notes for the
/// record.
pub fn attach(
    d: Decrypted,
    dest: PathBuf,
    attach: &mut Vec<sealrun_sandbox::FdBind>,
) -> Decryption {
    let notes = d.notes.clone();
    attach.push(sealrun_sandbox::FdBind {
        fd: d.into_fd(),
        dest,
    });
    notes
}

/// The job's own memory limit: the spec's `limit`, less `reserved` (never below
/// [`MIN_JOB_MEMORY`], which the plan guarantees is left, nor above the limit).
pub fn job_memory(limit: Option<u64>, reserved: u64) -> Option<u64> {
    limit.map(|m| m.saturating_sub(reserved).max(MIN_JOB_MEMORY.min(m)))
}

/// Bytes the tmpfs for `expected` is sized to (and that are reserved out of the job's memory
/// limit): each file rounded up to whole pages, a page per folder, and 64 KiB.
pub fn tmpfs_bytes(expected: &Manifest) -> u64 {
    let page = 4096u64;
    let files: u64 = expected
        .resources
        .iter()
        .map(|r| r.size.div_ceil(page).saturating_mul(page))
        .fold(0u64, u64::saturating_add);
    let dirs = folders(expected).len() as u64;
    files
        .saturating_add(dirs.saturating_mul(page))
        .saturating_add(64 << 10)
}

/// The folders the files of `expected` are in, parents first.
fn folders(expected: &Manifest) -> Vec<&str> {
    let mut dirs: Vec<&str> = Vec::new();
    for r in &expected.resources {
        let mut p = r.path.as_str();
        while let Some((d, _)) = p.rsplit_once('/') {
            dirs.push(d);
            p = d;
        }
    }
    dirs.sort_by(|a, b| manifest::path_order(a, b));
    dirs.dedup();
    dirs
}

/// One file to decrypt.
#[derive(Debug)]
struct Planned<'a> {
    signed: &'a Resource,
    /// `NAME.age`, relative.
    cipher: String,
    abs: PathBuf,
    cipher_size: u64,
}

/// Match the encrypted folder's files with the signed ones (nothing read).
fn plan<'a>(src: &Path, signed: &'a Signed) -> Result<Vec<Planned<'a>>, DecryptError> {
    if !signed.sizes_signed {
        return Err(DecryptError::SizesNotSigned);
    }
    let meta = std::fs::symlink_metadata(src).map_err(|source| DecryptError::Io {
        path: src.to_path_buf(),
        source,
    })?;
    if !meta.is_dir() {
        return Err(DecryptError::NotAFolder {
            path: src.to_path_buf(),
        });
    }
    let listed =
        manifest::list_sized(src, &WalkOptions::with_shard_size(u64::MAX)).map_err(|source| {
            VerifyError::Tree {
                artifact: format!("{:?}", signed.verified.name),
                source,
            }
        })?;
    let mut by_plain = std::collections::BTreeMap::new();
    for l in listed {
        let Some(plain) = l.path.strip_suffix(AGE_SUFFIX).map(str::to_string) else {
            return Err(DecryptError::NotAge { file: l.path });
        };
        by_plain.insert(plain, l);
    }
    let mut out = Vec::with_capacity(signed.expected.resources.len());
    for r in &signed.expected.resources {
        let l = by_plain
            .remove(&r.path)
            .ok_or_else(|| DecryptError::Missing {
                plain: r.path.clone(),
            })?;
        out.push(Planned {
            signed: r,
            cipher: l.path,
            abs: l.abs,
            cipher_size: l.size,
        });
    }
    if let Some((plain, l)) = by_plain.into_iter().next() {
        return Err(DecryptError::Unsigned {
            file: l.path,
            plain,
        });
    }
    Ok(out)
}

/// Decrypt the encrypted folder `src` with `identity` into a new detached tmpfs, verify the
/// plaintext against `signed`, and seal it (see the module's guarantees).
pub fn decrypt_verify(
    src: &Path,
    signed: &Signed,
    identity: &Identity,
) -> Result<Decrypted, DecryptError> {
    let files = plan(src, signed)?;
    let size = tmpfs_bytes(&signed.expected);
    let tmpfs = DetachedTmpfs::new(size).map_err(|source| DecryptError::Tmpfs { size, source })?;
    for d in folders(&signed.expected) {
        rustix::fs::mkdirat(&tmpfs, d, rustix::fs::Mode::from_bits_truncate(0o755)).map_err(
            |e| DecryptError::Tmpfs {
                size,
                source: e.into(),
            },
        )?;
    }
    let shard_size = signed.expected.shard_size;
    let done = files
        .par_iter()
        .map(|f| decrypt_one(&tmpfs, f, identity, shard_size))
        .collect::<Result<Vec<_>, _>>()?;
    let (resources, ciphertext): (Vec<Resource>, Vec<CiphertextFile>) = done.into_iter().unzip();
    let actual = Manifest {
        shard_size,
        resources,
    };
    let shown = format!("{:?}", signed.verified.name);
    artifact::compare(&shown, &signed.expected, &actual)?;
    tmpfs
        .seal()
        .map_err(|source| DecryptError::Tmpfs { size, source })?;
    let root = Manifest {
        shard_size: u64::MAX,
        resources: ciphertext
            .iter()
            .map(|c| Resource {
                path: c.path.clone(),
                size: c.size,
                algorithm: Algorithm::Sha256,
                digest: c.sha256,
            })
            .collect(),
    }
    .root_digest();
    let notes = Decryption {
        format: AGE_V1.into(),
        recipient: identity.recipient.clone(),
        identity: identity.protection.as_str().into(),
        ciphertext_root: root,
        ciphertext_files: ciphertext.len() as u64,
        ciphertext_bytes: ciphertext.iter().map(|c| c.size).sum(),
        ciphertext: ciphertext.into_iter().take(MAX_LISTED_CIPHERTEXT).collect(),
        plaintext_bytes: actual.total_size(),
        tmpfs_bytes: size,
        noswap: tmpfs.noswap(),
    };
    Ok(Decrypted { tmpfs, notes })
}

/// Bytes as `N MiB (N bytes)`.
fn mib(n: u64) -> String {
    format!("{:.1} MiB ({n} bytes)", n as f64 / f64::from(1u32 << 20))
}

/// Plan time, before anything is verified: the decryption identity passes
/// [`crate::ageid::check`] (a sealed one is unsealed only when the input is verified), and the
/// signed plaintext of the encrypted inputs fits in the job's memory limit with
/// [`MIN_JOB_MEMORY`] left. A signature that does not verify is left to the verification
/// (which refuses it with a record). Returns the field to blame and the message.
pub fn check_plan(job: &crate::spec::JobSpec) -> Result<(), (&'static str, String)> {
    let encrypted: Vec<_> = job.inputs.iter().filter(|i| i.encrypted).collect();
    let Some(id_path) = job
        .decryption_identity
        .as_ref()
        .filter(|_| !encrypted.is_empty())
    else {
        return Ok(());
    };
    crate::ageid::check(id_path).map_err(|e| ("decryption_identity", e.to_string()))?;
    let Some(memory) = job.sandbox.memory else {
        return Ok(());
    };
    let Ok(policy) = sealrun_verifier::policy::Policy::load(&job.trust) else {
        return Ok(());
    };
    let mut total = 0u64;
    let mut parts = Vec::new();
    for input in encrypted {
        let crate::spec::Proof::Signature(sig) = &input.proof else {
            continue;
        };
        let Ok(bytes) = sealrun_verifier::dsse::read_limited(sig) else {
            continue;
        };
        let opts = artifact::VerifyOptions {
            policy: &policy,
            now: time::OffsetDateTime::now_utc(),
            rollback: None,
            expected_kind: Some(input.kind),
            progress: None,
        };
        let shown = format!("{:?}", input.path.display().to_string());
        if let Ok(signed) = artifact::check_signature(&bytes, &shown, &opts) {
            let need = tmpfs_bytes(&signed.expected);
            total = total.saturating_add(need);
            parts.push(format!(
                "input {:?}: {} of plaintext in {} files, a tmpfs of {}",
                input.name,
                mib(signed.expected.total_size()),
                signed.expected.resources.len(),
                mib(need)
            ));
        }
    }
    if total.saturating_add(MIN_JOB_MEMORY) <= memory {
        return Ok(());
    }
    Err((
        "sandbox.memory",
        format!(
            "the encrypted inputs do not fit in the job's memory: {} ({}); the limit is {}, and the plaintext lives in the job's memory (a tmpfs reserved out of its limit) with at least {} left for the job. Raise sandbox.memory to at least {}, or split the dataset",
            mib(total),
            parts.join("; "),
            mib(memory),
            mib(MIN_JOB_MEMORY),
            mib(total + MIN_JOB_MEMORY)
        ),
    ))
}

/// A reader that hashes and counts what passes through it.
struct Hashing<R> {
    inner: R,
    hash: Sha256,
    read: u64,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        self.read += n as u64;
        Ok(n)
    }
}

/// SHA-256 of a stream as [`sealrun_verifier::digest::hash_file`] computes it for a file of
/// that length: plain up to the shard size, else over the shards' digests.
struct ShardHasher {
    shard: u64,
    cur: Sha256,
    in_cur: u64,
    shards: Vec<[u8; 32]>,
    total: u64,
}

impl ShardHasher {
    fn new(shard: u64) -> Self {
        ShardHasher {
            shard: shard.max(1),
            cur: Sha256::new(),
            in_cur: 0,
            shards: Vec::new(),
            total: 0,
        }
    }

    fn update(&mut self, mut buf: &[u8]) {
        self.total += buf.len() as u64;
        while !buf.is_empty() {
            let take = buf.len().min((self.shard - self.in_cur) as usize);
            self.cur.update(&buf[..take]);
            self.in_cur += take as u64;
            buf = &buf[take..];
            if self.in_cur == self.shard {
                self.shards.push(self.cur.finalize_reset().into());
                self.in_cur = 0;
            }
        }
    }

    fn finish(mut self) -> (Algorithm, Digest) {
        match Algorithm::for_size(self.total, self.shard) {
            Algorithm::Sha256 => {
                let d = self
                    .shards
                    .pop()
                    .unwrap_or_else(|| self.cur.finalize().into());
                (Algorithm::Sha256, Digest(d))
            }
            Algorithm::Sha256Shards => {
                if self.in_cur > 0 {
                    self.shards.push(self.cur.finalize().into());
                }
                let mut h = Sha256::new();
                for s in &self.shards {
                    h.update(s);
                }
                (Algorithm::Sha256Shards, Digest(h.finalize().into()))
            }
        }
    }
}

/// Open the ciphertext `f`: not a symlink, a regular file of the size listed.
fn open_cipher(f: &Planned) -> Result<File, DecryptError> {
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| DecryptError::Io {
        path: f.abs.clone(),
        source,
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(&f.abs)
        .map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    if !meta.is_file() || meta.len() != f.cipher_size {
        return Err(io(std::io::Error::other(
            "changed since the folder was listed",
        )));
    }
    Ok(file)
}

/// Decrypt one file into the tmpfs, hashing plaintext and ciphertext in the same pass.
fn decrypt_one(
    tmpfs: &DetachedTmpfs,
    f: &Planned,
    identity: &Identity,
    shard_size: u64,
) -> Result<(Resource, CiphertextFile), DecryptError> {
    let mut src = Hashing {
        inner: open_cipher(f)?,
        hash: Sha256::new(),
        read: 0,
    };
    let file = f.cipher.clone();
    let stream = age::Decryptor::new_buffered(BufReader::with_capacity(HEADER_BUF, &mut src))
        .and_then(|d| d.decrypt(std::iter::once(identity.age())))
        .map_err(|e| header_error(e, f, identity))?;
    let out = create_plain(tmpfs, &f.signed.path)?;
    // The signed size first: the tmpfs then backs the file with huge pages as it is written
    // (`huge=within_size`). A file that decrypts to fewer bytes is named by the comparison.
    out.set_len(f.signed.size)
        .map_err(|source| DecryptError::Tmpfs {
            size: f.signed.size,
            source,
        })?;
    let (algorithm, digest, size) = copy_plain(stream, out, f, shard_size)?;
    // Whatever follows the final chunk is not part of an age file.
    let mut rest = [0u8; 1];
    if src.read(&mut rest).map_err(|source| DecryptError::Io {
        path: f.abs.clone(),
        source,
    })? > 0
    {
        return Err(DecryptError::Tampered {
            file,
            what: "bytes after the final chunk".into(),
        });
    }
    if src.read != f.cipher_size {
        return Err(DecryptError::Io {
            path: f.abs.clone(),
            source: std::io::Error::other("changed while it was decrypted"),
        });
    }
    Ok((
        Resource {
            path: f.signed.path.clone(),
            size,
            algorithm,
            digest,
        },
        CiphertextFile {
            path: file,
            size: src.read,
            sha256: Digest(src.hash.finalize().into()),
        },
    ))
}

/// Create the plaintext file `rel` on the tmpfs (new, 0444).
fn create_plain(tmpfs: &DetachedTmpfs, rel: &str) -> Result<File, DecryptError> {
    use rustix::fs::{Mode, OFlags};
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC | OFlags::NOFOLLOW;
    rustix::fs::openat(tmpfs, rel, flags, Mode::from_bits_truncate(0o444))
        .map(File::from)
        .map_err(|e| DecryptError::Tmpfs {
            size: tmpfs.size(),
            source: e.into(),
        })
}

/// Stream the plaintext into `out`, hashing it; at most the signed size.
fn copy_plain(
    mut stream: impl Read,
    mut out: File,
    f: &Planned,
    shard_size: u64,
) -> Result<(Algorithm, Digest, u64), DecryptError> {
    // On a page boundary: the kernel copies out of it page for page (an odd offset in a page
    // costs far more system time). Zeroed when dropped.
    let mut plain = Zeroizing::new(vec![0u8; BUF + PAGE]);
    let at = plain.as_ptr().align_offset(PAGE).min(PAGE);
    let buf = &mut plain[at..at + BUF];
    let mut hasher = ShardHasher::new(shard_size);
    loop {
        let n = fill(&mut stream, buf, f, hasher.total)?;
        if n == 0 {
            break;
        }
        if hasher.total + n as u64 > f.signed.size {
            return Err(DecryptError::Larger {
                file: f.cipher.clone(),
                signed: f.signed.size,
            });
        }
        out.write_all(&buf[..n])
            .map_err(|source| DecryptError::Tmpfs {
                size: f.signed.size,
                source,
            })?;
        hasher.update(&buf[..n]);
    }
    let total = hasher.total;
    let (algorithm, digest) = hasher.finish();
    Ok((algorithm, digest, total))
}

/// Fill `buf` from the age stream (which gives at most one 64 KiB chunk per read) up to its
/// end; the bytes read, 0 at the end. `done` is the plaintext offset of `buf`'s first byte,
/// for the message that names a chunk failing authentication.
fn fill(
    stream: &mut impl Read,
    buf: &mut [u8],
    f: &Planned,
    done: u64,
) -> Result<usize, DecryptError> {
    let mut n = 0;
    while n < buf.len() {
        match stream.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                return Err(DecryptError::Tampered {
                    file: f.cipher.clone(),
                    what: format!(
                        "the payload chunk at plaintext offset {} fails ChaCha20-Poly1305 authentication ({e})",
                        done + n as u64
                    ),
                })
            }
            Err(source) => {
                return Err(DecryptError::Io {
                    path: f.abs.clone(),
                    source,
                })
            }
        }
    }
    Ok(n)
}

/// What a header error means for the file `f`.
fn header_error(e: age::DecryptError, f: &Planned, identity: &Identity) -> DecryptError {
    let file = f.cipher.clone();
    match e {
        age::DecryptError::NoMatchingKeys | age::DecryptError::ExcessiveWork { .. } => {
            DecryptError::NotForUs {
                file,
                recipient: identity.recipient.clone(),
                stanzas: stanza_types(&f.abs),
            }
        }
        age::DecryptError::InvalidMac => DecryptError::Tampered {
            file,
            what: "the header's MAC (HMAC-SHA-256) does not verify: the header was changed".into(),
        },
        age::DecryptError::DecryptionFailed | age::DecryptError::KeyDecryptionFailed => {
            DecryptError::Tampered {
                file,
                what: "the file key fails authentication".into(),
            }
        }
        age::DecryptError::Io(source) if source.kind() != std::io::ErrorKind::InvalidData => {
            DecryptError::Io {
                path: f.abs.clone(),
                source,
            }
        }
        other => DecryptError::Format {
            file,
            why: other.to_string(),
        },
    }
}

/// The stanza types (`X25519`, `scrypt`, `ssh-ed25519`, …) in the header of the age file at
/// `path`, read again for the message (at most 64 KiB; none if it is not an age header;
/// `…-grease` stanzas left out).
pub fn stanza_types(path: &Path) -> Vec<String> {
    let mut head = Vec::new();
    let read = File::open(path).and_then(|f| f.take(64 << 10).read_to_end(&mut head));
    if read.is_err() {
        return Vec::new();
    }
    let text = String::from_utf8_lossy(&head);
    let mut lines = text.lines();
    if lines.next() != Some("age-encryption.org/v1") {
        return Vec::new();
    }
    lines
        .take_while(|l| !l.starts_with("---"))
        .filter_map(|l| l.strip_prefix("-> "))
        .filter_map(|l| l.split(' ').next())
        // rage adds a random `…-grease` stanza to every file: noise, not a recipient.
        .filter(|t| !t.ends_with("-grease"))
        .map(|t| t.chars().take(64).collect())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_hasher_matches_hash_file() {
        let d = tempfile::tempdir().unwrap();
        for (len, shard) in [
            (0u64, 16u64),
            (5, 16),
            (16, 16),
            (17, 16),
            (100, 16),
            (64, 16),
        ] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
            let p = d.path().join("f");
            std::fs::write(&p, &data).unwrap();
            let (alg, dig, _) = sealrun_verifier::digest::hash_file(&p, shard).unwrap();
            for step in [1usize, 3, 16, 64] {
                let mut h = ShardHasher::new(shard);
                for c in data.chunks(step) {
                    h.update(c);
                }
                assert_eq!(
                    h.finish(),
                    (alg, dig),
                    "len {len} shard {shard} step {step}"
                );
            }
        }
    }

    #[test]
    fn stanza_types_are_read_from_the_header() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f.age");
        let a = age::x25519::Identity::generate().to_public();
        let b = age::x25519::Identity::generate().to_public();
        let enc = age::Encryptor::with_recipients(
            [&a as &dyn age::Recipient, &b as &dyn age::Recipient].into_iter(),
        )
        .unwrap();
        let mut out = Vec::new();
        let mut w = enc.wrap_output(&mut out).unwrap();
        std::io::Write::write_all(&mut w, b"x").unwrap();
        w.finish().unwrap();
        std::fs::write(&p, &out).unwrap();
        assert_eq!(stanza_types(&p), vec!["X25519", "X25519"]);
        std::fs::write(&p, b"not age").unwrap();
        assert!(stanza_types(&p).is_empty());
    }

    #[test]
    fn the_job_memory_is_the_limit_less_the_reservation() {
        assert_eq!(job_memory(None, 1 << 20), None);
        assert_eq!(job_memory(Some(256 << 20), 0), Some(256 << 20));
        assert_eq!(job_memory(Some(256 << 20), 100 << 20), Some(156 << 20));
        assert_eq!(job_memory(Some(256 << 20), 300 << 20), Some(MIN_JOB_MEMORY));
    }

    #[test]
    fn tmpfs_bytes_rounds_to_pages() {
        let m = Manifest {
            shard_size: 1 << 20,
            resources: vec![
                Resource {
                    path: "a/b/c".into(),
                    size: 1,
                    algorithm: Algorithm::Sha256,
                    digest: Digest([0; 32]),
                },
                Resource {
                    path: "a/d".into(),
                    size: 4097,
                    algorithm: Algorithm::Sha256,
                    digest: Digest([0; 32]),
                },
            ],
        };
        assert_eq!(folders(&m), vec!["a", "a/b"]);
        assert_eq!(tmpfs_bytes(&m), 4096 + 8192 + 2 * 4096 + (64 << 10));
    }
}
