//! Signed artifacts: sign a file or directory as a DSSE envelope over an
//! in-toto statement, and verify one offline against a trust policy.
//!
//! Guarantees, in the order they are checked (structure before crypto, cheap
//! before expensive): the envelope is well formed and small; its payloadType is
//! in-toto; a key the policy trusts verified the signature; the statement and
//! predicate are well formed, the manifest paths safe and the subject digest is
//! the manifest's root digest; the key may sign this kind and vouch for these
//! labels, the consumer admits them, the signature has not expired and the
//! version is not lower than one already accepted; then the file list and sizes
//! match the manifest (no file missing, added, resized or swapped for a symlink),
//! found without reading any file; and only then, every byte on disk matches.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use indicatif::ProgressBar;
use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::digest::{self, Digest};
use crate::dsse::{self, DsseError, Envelope, IN_TOTO_PAYLOAD_TYPE};
use crate::keys::SigningKey;
use crate::manifest::{self, Difference, Manifest, ManifestError, WalkOptions};
use crate::model_signing;
use crate::policy::{Kind, Policy, TrustedKey};
use crate::rollback::{RollbackError, RollbackState};
use crate::statement::{self, Statement, Subject};
use crate::text::Esc;

/// The predicate type of sealrun artifact signatures.
pub const ARTIFACT_PREDICATE_TYPE: &str = "https://sealrun.dev/artifact/v1";

/// What a sealrun artifact signature says about the artifact.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArtifactPredicate {
    /// The artifact's name (also the subject name).
    pub name: String,
    /// dataset, features, code or model.
    pub kind: Kind,
    /// Monotonic version number, checked against rollback.
    pub version: u64,
    /// Free-form labels such as `classification=internal`, `pii=false`.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// When it was signed (RFC 3339, UTC).
    pub signed_at: String,
    /// When the signature stops being valid (RFC 3339), if ever.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
    /// Every file, with its size and digest.
    pub manifest: Manifest,
}

/// How to sign.
#[derive(Clone, Debug)]
pub struct SignOptions {
    pub name: Option<String>,
    pub kind: Kind,
    pub labels: BTreeMap<String, String>,
    pub version: u64,
    pub expires: Option<OffsetDateTime>,
    pub walk: WalkOptions,
}

/// Why signing failed.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("{0}")]
    Manifest(#[from] ManifestError),
    #[error("kind {0} is not an artifact kind (use dataset, features, code or model)")]
    NotArtifactKind(Kind),
    #[error("cannot name the artifact from {0}; pass --name")]
    NoName(PathBuf),
    #[error("expiry {0} is in the past")]
    ExpiresInPast(String),
    #[error("invalid label {0:?}: keys and values must be non-empty, printable and without `=`")]
    BadLabel(String),
}

fn is_artifact_kind(kind: Kind) -> bool {
    matches!(
        kind,
        Kind::Dataset | Kind::Features | Kind::Code | Kind::Model
    )
}

/// Check a label key and value.
pub fn check_label(k: &str, v: &str) -> Result<(), SignError> {
    let ok = |s: &str| !s.is_empty() && !s.contains('=') && s.chars().all(|c| !c.is_control());
    if ok(k) && ok(v) {
        Ok(())
    } else {
        Err(SignError::BadLabel(format!("{k}={v}")))
    }
}

/// Hash `path` and sign it; returns the envelope and the predicate signed.
pub fn sign_artifact(
    path: &Path,
    key: &SigningKey,
    opts: &SignOptions,
    progress: Option<&ProgressBar>,
) -> Result<(Envelope, ArtifactPredicate), SignError> {
    sign_artifact_reusing(path, key, opts, progress, None).map(|(e, p, _)| (e, p))
}

/// [`sign_artifact`], taking the digests `reuse` vouches for instead of hashing those files
/// (incremental signing: the signer trusts its own disk). Also returns how many files were
/// hashed.
pub fn sign_artifact_reusing(
    path: &Path,
    key: &SigningKey,
    opts: &SignOptions,
    progress: Option<&ProgressBar>,
    reuse: Option<&manifest::Reuse>,
) -> Result<(Envelope, ArtifactPredicate, usize), SignError> {
    if !is_artifact_kind(opts.kind) {
        return Err(SignError::NotArtifactKind(opts.kind));
    }
    for (k, v) in &opts.labels {
        check_label(k, v)?;
    }
    let now = OffsetDateTime::now_utc();
    if let Some(e) = opts.expires {
        if e <= now {
            return Err(SignError::ExpiresInPast(crate::text::rfc3339(e)));
        }
    }
    let name = match &opts.name {
        Some(n) => n.clone(),
        None => path
            .canonicalize()
            .ok()
            .and_then(|p| p.file_name().and_then(|n| n.to_str()).map(str::to_string))
            .ok_or_else(|| SignError::NoName(path.to_path_buf()))?,
    };
    let (manifest, hashed) = Manifest::build_reusing(path, &opts.walk, progress, reuse)?;
    let root = manifest.root_digest();
    let predicate = ArtifactPredicate {
        name: name.clone(),
        kind: opts.kind,
        version: opts.version,
        labels: opts.labels.clone(),
        signed_at: crate::text::rfc3339(now),
        expires: opts.expires.map(crate::text::rfc3339),
        manifest,
    };
    let st = Statement::new(
        vec![Subject {
            name,
            digest: BTreeMap::from([("sha256".to_string(), root.to_hex())]),
        }],
        ARTIFACT_PREDICATE_TYPE,
        &predicate,
    );
    Ok((
        dsse::sign(IN_TOTO_PAYLOAD_TYPE, &st.to_bytes(), key),
        predicate,
        hashed,
    ))
}

/// Why an artifact does not verify. Every variant names the artifact.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("artifact {artifact}: {source}")]
    Envelope {
        artifact: String,
        #[source]
        source: DsseError,
    },
    #[error("artifact {artifact}: signed by key {key:?}, which the policy does not allow to sign kind {kind}")]
    KindNotAllowed {
        artifact: String,
        key: String,
        kind: Kind,
    },
    #[error("artifact {artifact}: signed as kind {found}, but {expected} was required")]
    WrongKind {
        artifact: String,
        expected: Kind,
        found: Kind,
    },
    #[error("artifact {artifact}: key {key:?} may not vouch for label {label}={value}")]
    LabelNotAllowed {
        artifact: String,
        key: String,
        label: String,
        value: String,
    },
    #[error(
        "artifact {artifact}: label {label}={value} is not admitted by this consumer's policy"
    )]
    NotAdmitted {
        artifact: String,
        label: String,
        value: String,
    },
    #[error("artifact {artifact}: signature expired at {expires}")]
    Expired { artifact: String, expires: String },
    #[error("artifact {artifact}: version {version} is lower than version {seen} already accepted (rollback)")]
    RolledBack {
        artifact: String,
        version: u64,
        seen: u64,
    },
    #[error("artifact {artifact}: {source}")]
    Rollback {
        artifact: String,
        #[source]
        source: RollbackError,
    },
    #[error("artifact {artifact}: subject digest {subject} does not match the signed manifest's root digest {root}")]
    SubjectMismatch {
        artifact: String,
        subject: String,
        root: String,
    },
    #[error("artifact {artifact}: signed manifest is unsafe: {source}")]
    UnsafeManifest {
        artifact: String,
        #[source]
        source: ManifestError,
    },
    #[error("artifact {artifact}: {source}")]
    Tree {
        artifact: String,
        #[source]
        source: ManifestError,
    },
    #[error("artifact {artifact}: file {}: digest mismatch: expected sha256:{expected}, actual sha256:{actual}{}", Esc(file), more_note(*more))]
    DigestMismatch {
        artifact: String,
        file: String,
        expected: Digest,
        actual: Digest,
        more: usize,
    },
    #[error("artifact {artifact}: file {}: size mismatch: expected {expected} bytes, actual {actual} bytes{}", Esc(file), more_note(*more))]
    SizeMismatch {
        artifact: String,
        file: String,
        expected: u64,
        actual: u64,
        more: usize,
    },
    #[error("artifact {artifact}: file {}: missing (signed but not on disk){}", Esc(file), more_note(*more))]
    MissingFile {
        artifact: String,
        file: String,
        more: usize,
    },
    #[error("artifact {artifact}: file {}: extra file (on disk but not signed){}", Esc(file), more_note(*more))]
    ExtraFile {
        artifact: String,
        file: String,
        more: usize,
    },
    #[error("artifact {artifact}: {message}")]
    Unsupported { artifact: String, message: String },
    /// The artifact, or the key that signed it, is revoked by the trust policy.
    #[error("artifact {artifact}: {revocation}")]
    Revoked {
        artifact: String,
        revocation: Box<crate::revocation::Revocation>,
    },
}

fn more_note(more: usize) -> String {
    match more {
        0 => String::new(),
        n => format!(" (+{n} more difference{})", if n == 1 { "" } else { "s" }),
    }
}

impl VerifyError {
    /// A stable machine-readable name for the reason.
    pub fn kind(&self) -> &'static str {
        match self {
            VerifyError::Envelope { source, .. } => source.kind(),
            VerifyError::KindNotAllowed { .. } => "kind_not_allowed",
            VerifyError::WrongKind { .. } => "wrong_kind",
            VerifyError::LabelNotAllowed { .. } => "label_not_allowed",
            VerifyError::NotAdmitted { .. } => "not_admitted",
            VerifyError::Expired { .. } => "expired",
            VerifyError::RolledBack { .. } => "rolled_back",
            VerifyError::Rollback {
                source: RollbackError::Read(_),
                ..
            } => "unreadable",
            VerifyError::Rollback { .. } => "rollback_state",
            VerifyError::SubjectMismatch { .. } => "subject_mismatch",
            VerifyError::UnsafeManifest { .. } => "unsafe_manifest",
            VerifyError::Tree { source, .. } => match source {
                ManifestError::Symlink { .. } => "symlink",
                ManifestError::SpecialFile { .. } => "special_file",
                ManifestError::Io { .. } => "unreadable",
                _ => "bad_tree",
            },
            VerifyError::DigestMismatch { .. } => "digest_mismatch",
            VerifyError::SizeMismatch { .. } => "size_mismatch",
            VerifyError::MissingFile { .. } => "missing_file",
            VerifyError::ExtraFile { .. } => "extra_file",
            VerifyError::Unsupported { .. } => "unsupported",
            VerifyError::Revoked { .. } => "revoked",
        }
    }

    /// The file concerned, if the reason is about one file.
    pub fn file(&self) -> Option<&str> {
        match self {
            VerifyError::DigestMismatch { file, .. }
            | VerifyError::SizeMismatch { file, .. }
            | VerifyError::MissingFile { file, .. }
            | VerifyError::ExtraFile { file, .. } => Some(file),
            VerifyError::Tree {
                source: ManifestError::Symlink { path } | ManifestError::SpecialFile { path, .. },
                ..
            } => Some(path),
            _ => None,
        }
    }

    /// Whether the cause is unreadable input (bad usage) rather than a failed check.
    pub fn is_input_error(&self) -> bool {
        self.kind() == "unreadable"
    }
}

/// How to verify.
pub struct VerifyOptions<'a> {
    pub policy: &'a Policy,
    pub now: OffsetDateTime,
    /// Refuse versions lower than already accepted, and record acceptances.
    pub rollback: Option<&'a Path>,
    /// Require this kind (e.g. a job input declared as a dataset).
    pub expected_kind: Option<Kind>,
    pub progress: Option<&'a ProgressBar>,
}

/// What was verified.
#[derive(Clone, Debug, Serialize)]
pub struct Verified {
    pub name: String,
    pub kind: Kind,
    pub version: Option<u64>,
    pub labels: BTreeMap<String, String>,
    /// The subject digest (sha256 root digest).
    pub digest: String,
    pub files: usize,
    pub bytes: u64,
    pub signer: String,
    pub keyid: String,
    pub key_algorithm: String,
    /// `sealrun` or `model-signing`.
    pub format: &'static str,
    pub expires: Option<String>,
}

/// Name the first difference between an expected and an actual manifest.
pub fn compare(artifact: &str, expected: &Manifest, actual: &Manifest) -> Result<(), VerifyError> {
    report(artifact, manifest::diff(expected, actual))
}

/// The first of `diffs` as an error (with how many more there are), if any.
fn report(artifact: &str, diffs: Vec<Difference>) -> Result<(), VerifyError> {
    let more = diffs.len().saturating_sub(1);
    let artifact = artifact.to_string();
    match diffs.into_iter().next() {
        None => Ok(()),
        Some(Difference::Digest {
            path,
            expected,
            actual,
        }) => Err(VerifyError::DigestMismatch {
            artifact,
            file: path,
            expected,
            actual,
            more,
        }),
        Some(Difference::Size {
            path,
            expected,
            actual,
        }) => Err(VerifyError::SizeMismatch {
            artifact,
            file: path,
            expected,
            actual,
            more,
        }),
        Some(Difference::Missing { path }) => Err(VerifyError::MissingFile {
            artifact,
            file: path,
            more,
        }),
        Some(Difference::Extra { path }) => Err(VerifyError::ExtraFile {
            artifact,
            file: path,
            more,
        }),
    }
}

/// Verify a sealrun signature without looking at the files: envelope,
/// signer, statement, manifest structure, subject and policy (not rollback).
/// Returns what it vouches for and the signed manifest. `shown` names the
/// artifact in errors until the signed name is known.
pub fn verify_signature(
    sig: &[u8],
    shown: &str,
    opts: &VerifyOptions,
) -> Result<(Verified, Manifest), VerifyError> {
    let env_err = |artifact: &str| {
        let artifact = artifact.to_string();
        move |source| VerifyError::Envelope { artifact, source }
    };
    // 1. Structure of the envelope.
    let env = Envelope::parse(sig).map_err(env_err(shown))?;
    // 2. Payload type, then signature by a trusted key.
    let (signers, payload): (Vec<&TrustedKey>, Vec<u8>) = env
        .verify(IN_TOTO_PAYLOAD_TYPE, |id| opts.policy.lookup(id))
        .map_err(env_err(shown))?;
    // 3. Statement and predicate shape.
    let st: Statement<ArtifactPredicate> =
        statement::parse(&payload, ARTIFACT_PREDICATE_TYPE).map_err(env_err(shown))?;
    let p = st.predicate;
    let artifact = format!("{:?}", p.name);
    p.manifest
        .check()
        .map_err(|source| VerifyError::UnsafeManifest {
            artifact: artifact.clone(),
            source,
        })?;
    let root = p.manifest.root_digest().to_hex();
    let subject = st
        .subject
        .iter()
        .find(|s| s.name == p.name)
        .and_then(|s| s.digest.get("sha256"))
        .cloned()
        .unwrap_or_default();
    if subject != root {
        return Err(VerifyError::SubjectMismatch {
            artifact,
            subject,
            root,
        });
    }
    // 4. Policy: kind, labels, admission, expiry, with the signer the policy
    // allows for this kind and these labels (if several keys signed).
    let signer = opts.policy.choose(&signers, |k| {
        k.may_sign(p.kind) && k.label_violation(&p.labels).is_none()
    });
    check_policy(
        &artifact,
        signer,
        opts,
        p.kind,
        &p.labels,
        p.expires.as_deref(),
    )?;
    let verified = Verified {
        name: p.name,
        kind: p.kind,
        version: Some(p.version),
        labels: p.labels,
        digest: root,
        files: p.manifest.resources.len(),
        bytes: p.manifest.total_size(),
        signer: signer.name.clone(),
        keyid: signer.key.keyid(),
        key_algorithm: signer.key.algorithm().to_string(),
        format: "sealrun",
        expires: p.expires,
    };
    Ok((verified, p.manifest))
}

/// What a signature vouches for, established before any file is read.
#[derive(Clone, Debug)]
pub struct Signed {
    /// What was verified (for model-signing, `bytes` is filled in by [`check_listing`]).
    pub verified: Verified,
    /// Exactly the files the signature covers.
    pub expected: Manifest,
    /// Paths the signature leaves out of the tree (model-signing `ignore_paths`).
    pub ignore: Vec<String>,
    /// Whether `expected` holds signed sizes (model-signing signs none; they are
    /// then taken from the listing, and the hashes decide).
    pub sizes_signed: bool,
}

impl Signed {
    fn artifact(&self) -> String {
        format!("{:?}", self.verified.name)
    }

    fn walk(&self) -> WalkOptions {
        WalkOptions {
            shard_size: self.expected.shard_size,
            ignore: self.ignore.clone(),
            cancel: None,
        }
    }
}

/// The signature alone, for either format (a sealrun envelope or an OpenSSF
/// model-signing bundle, recognised by its media type), without the files: what a
/// chain of custody checks of a stored proof.
pub fn verify_any_signature(
    sig: &[u8],
    shown: &str,
    opts: &VerifyOptions,
) -> Result<Verified, VerifyError> {
    check_signature(sig, shown, opts).map(|s| s.verified)
}

/// Step 1 of every verification: the signature alone (a sealrun envelope or a
/// model-signing bundle): structure, signer, statement, manifest, subject and
/// policy, not rollback. `shown` names the artifact until its signed name is known.
pub fn check_signature(
    sig: &[u8],
    shown: &str,
    opts: &VerifyOptions,
) -> Result<Signed, VerifyError> {
    let signed = if model_signing::is_bundle(sig) {
        model_signing::verify_signature(sig, shown, opts)?
    } else {
        let (verified, expected) = verify_signature(sig, shown, opts)?;
        Signed {
            verified,
            expected,
            ignore: Vec::new(),
            sizes_signed: true,
        }
    };
    // Revocation: the artifact itself, or the key that signed it.
    let v = &signed.verified;
    let policy = opts.policy;
    if let Some(r) = policy
        .revoked_artifact(&v.digest)
        .or_else(|| policy.revoked_key(&v.signer, &v.keyid))
    {
        return Err(VerifyError::Revoked {
            artifact: signed.artifact(),
            revocation: Box::new(r.clone()),
        });
    }
    Ok(signed)
}

/// Step 2: the file list and sizes at `path` against the signed manifest,
/// without reading a byte of any file. Refuses an extra, missing or (where
/// sizes are signed) resized file; returns the files, in manifest order.
pub fn check_listing(
    signed: &mut Signed,
    path: &Path,
) -> Result<Vec<manifest::Listed>, VerifyError> {
    let listed = manifest::list_sized(path, &signed.walk());
    check_sized(signed, listed)
}

/// Steps 1 and 2 at once: [`check_signature`] on a thread of its own while this one lists
/// `path` (the walk and the sizes, no file read), then [`check_listing`]'s comparison. The
/// listing is used only once the signature has verified: a signature error is reported first,
/// whatever the listing found, and a signature that leaves paths out (model-signing
/// `ignore_paths`) has its folder listed again with them.
pub fn check_signature_listing(
    sig: &[u8],
    shown: &str,
    opts: &VerifyOptions,
    path: &Path,
) -> Result<(Signed, Vec<manifest::Listed>), VerifyError> {
    // A signature that does not verify stops the walk (a huge folder is not listed for it).
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let walk = WalkOptions {
        cancel: Some(stop.clone()),
        ..WalkOptions::default()
    };
    let (signed, listed) = std::thread::scope(|s| {
        let signature = s.spawn(|| {
            let signed = check_signature(sig, shown, opts);
            if signed.is_err() {
                stop.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            signed
        });
        let listed = manifest::list_sized(path, &walk);
        let signed = signature
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p));
        (signed, listed)
    });
    let mut signed = signed?;
    let listed = if signed.ignore.is_empty() {
        check_sized(&mut signed, listed)?
    } else {
        check_listing(&mut signed, path)?
    };
    Ok((signed, listed))
}

/// Compare a listing with the signature (taking the sizes from it where the signature signs
/// none).
fn check_sized(
    signed: &mut Signed,
    listed: Result<Vec<manifest::Listed>, ManifestError>,
) -> Result<Vec<manifest::Listed>, VerifyError> {
    let artifact = signed.artifact();
    let listed = listed.map_err(|source| VerifyError::Tree {
        artifact: artifact.clone(),
        source,
    })?;
    if !signed.sizes_signed {
        for r in &mut signed.expected.resources {
            if let Ok(i) = listed.binary_search_by(|l| manifest::path_order(&l.path, &r.path)) {
                r.size = listed[i].size;
            }
        }
        signed.verified.bytes = signed.expected.total_size();
    }
    check_listed(&artifact, &signed.expected, &listed, signed.sizes_signed)?;
    Ok(listed)
}

/// Step 2 without sizes: the file names at `path` against the signed manifest, from a
/// directory walk alone (no file opened, no `stat`): refuses a wrong folder, an extra or a
/// missing file. Returns the files in manifest order, their sizes not yet known (0).
fn check_names(signed: &Signed, path: &Path) -> Result<Vec<manifest::Listed>, VerifyError> {
    let artifact = signed.artifact();
    let listed = manifest::list_files(path, &signed.walk())
        .map_err(|source| VerifyError::Tree {
            artifact: artifact.clone(),
            source,
        })?
        .into_iter()
        .map(|(path, abs)| manifest::Listed { path, abs, size: 0 })
        .collect::<Vec<_>>();
    check_listed(&artifact, &signed.expected, &listed, false)?;
    Ok(listed)
}

/// Compare a listing with the files a signature or record attests, naming the
/// first difference (sizes only if `sizes` is set).
pub fn check_listed(
    artifact: &str,
    expected: &Manifest,
    listed: &[manifest::Listed],
    sizes: bool,
) -> Result<(), VerifyError> {
    report(artifact, manifest::diff_listing(expected, listed, sizes))
}

/// Step 3: hash the files of the listing step 2 returned (no second walk) and compare with
/// the signed manifest (names, sizes and digests: a file changed since the listing is caught
/// here).
pub fn check_hashes(
    signed: &Signed,
    listed: &[manifest::Listed],
    progress: Option<&ProgressBar>,
) -> Result<(), VerifyError> {
    let artifact = signed.artifact();
    let actual =
        manifest::hash_listed(listed, signed.expected.shard_size, progress).map_err(|source| {
            match source {
                ManifestError::Resized { path, listed, now } => VerifyError::SizeMismatch {
                    artifact: artifact.clone(),
                    file: path,
                    expected: listed,
                    actual: now,
                    more: 0,
                },
                source => VerifyError::Tree {
                    artifact: artifact.clone(),
                    source,
                },
            }
        })?;
    compare(&artifact, &signed.expected, &actual)
}

/// Step 2 for a verification that hashes every file next ([`check_hashes`]): the file names
/// first (a directory walk), then the sizes of the files larger than a read buffer (one `stat`
/// each, in parallel), compared with the signed ones. A smaller file's size is not asked for:
/// the one read that hashes it shows its size, and a file of another size is refused then,
/// unhashed (so a resized file costs at most one buffer's read before it is named). Where the
/// signature signs no sizes, this is [`check_listing`].
fn check_listing_to_hash(
    signed: &mut Signed,
    path: &Path,
) -> Result<Vec<manifest::Listed>, VerifyError> {
    if !signed.sizes_signed {
        return check_listing(signed, path);
    }
    let mut named = check_names(signed, path)?;
    let shard = signed.expected.shard_size;
    // The names matched, so `named` and the signed resources are the same files in the same
    // order.
    let mut larger = Vec::new();
    for (i, (l, r)) in named.iter_mut().zip(&signed.expected.resources).enumerate() {
        if digest::reads_at_once(r.size, shard) {
            l.size = r.size;
        } else {
            larger.push(i);
        }
    }
    let files = larger
        .iter()
        .map(|&i| (named[i].path.clone(), named[i].abs.clone()))
        .collect();
    let artifact = signed.artifact();
    let sized = manifest::sizes(files).map_err(|source| VerifyError::Tree {
        artifact: artifact.clone(),
        source,
    })?;
    for (i, l) in larger.into_iter().zip(sized) {
        named[i].size = l.size;
    }
    check_listed(&artifact, &signed.expected, &named, true)?;
    Ok(named)
}

/// Verify the artifact at `path` against the signature bytes `sig`.
///
/// Accepts sealrun envelopes and OpenSSF model-signing Sigstore bundles. Cheap
/// checks first: the signature and policy, then rollback, then the file list
/// and sizes (an unsigned extra file is refused before anything is read), and
/// only then the hashes of the signed files.
pub fn verify_artifact(
    path: &Path,
    sig: &[u8],
    opts: &VerifyOptions,
) -> Result<Verified, VerifyError> {
    let shown = format!("{:?}", path.display().to_string());
    let mut signed = check_signature(sig, &shown, opts)?;
    let artifact = signed.artifact();
    // Rollback: only sealrun signatures carry a version.
    let mut state = match opts.rollback {
        Some(_) if signed.verified.version.is_none() => {
            return Err(VerifyError::Unsupported {
                artifact,
                message: format!(
                    "a {} signature carries no version, so rollback protection (a state file) cannot apply to it; verify without one",
                    signed.verified.format
                ),
            })
        }
        Some(file) => {
            let version = signed.verified.version.unwrap_or(0);
            let state = RollbackState::load(file).map_err(|source| VerifyError::Rollback {
                artifact: artifact.clone(),
                source,
            })?;
            if let Some(seen) = state
                .seen(&signed.verified.name)
                .filter(|&seen| version < seen)
            {
                return Err(VerifyError::RolledBack {
                    artifact,
                    version,
                    seen,
                });
            }
            Some(state)
        }
        None => None,
    };
    let listed = check_listing_to_hash(&mut signed, path)?;
    check_hashes(&signed, &listed, opts.progress)?;
    if let Some(state) = state.as_mut() {
        state
            .accept(&signed.verified.name, signed.verified.version.unwrap_or(0))
            .map_err(|source| VerifyError::Rollback {
                artifact: artifact.clone(),
                source,
            })?;
    }
    Ok(signed.verified)
}

/// The policy checks shared by every signature format.
pub(crate) fn check_policy(
    artifact: &str,
    signer: &TrustedKey,
    opts: &VerifyOptions,
    kind: Kind,
    labels: &BTreeMap<String, String>,
    expires: Option<&str>,
) -> Result<(), VerifyError> {
    let artifact = artifact.to_string();
    if !is_artifact_kind(kind) {
        return Err(VerifyError::Unsupported {
            artifact,
            message: format!("kind {kind} is not an artifact kind"),
        });
    }
    if let Some(expected) = opts.expected_kind {
        if expected != kind {
            return Err(VerifyError::WrongKind {
                artifact,
                expected,
                found: kind,
            });
        }
    }
    if !signer.may_sign(kind) {
        return Err(VerifyError::KindNotAllowed {
            artifact,
            key: signer.name.clone(),
            kind,
        });
    }
    if let Some((label, value)) = signer.label_violation(labels) {
        return Err(VerifyError::LabelNotAllowed {
            artifact,
            key: signer.name.clone(),
            label: label.to_string(),
            value: value.to_string(),
        });
    }
    if let Some((label, value)) = opts.policy.admit_violation(labels) {
        return Err(VerifyError::NotAdmitted {
            artifact,
            label,
            value,
        });
    }
    if let Some(e) = expires {
        let t = OffsetDateTime::parse(e, &Rfc3339).map_err(|_| VerifyError::Envelope {
            artifact: artifact.clone(),
            source: DsseError::Malformed {
                json_path: "payload$.predicate.expires".into(),
                reason: format!("not an RFC 3339 time: {e:?}"),
            },
        })?;
        if t <= opts.now {
            return Err(VerifyError::Expired {
                artifact,
                expires: e.to_string(),
            });
        }
    }
    Ok(())
}
