//! Phase 2 of a run: each input staged and the staged copy verified against what vouches for
//! it (a signature, or the signed record of the run that produced it).
//!
//! Guarantees: cheap checks come first (the signature or record, then the file list and sizes;
//! nothing is read before them), then exactly the vouched-for files are copied and hashed; a
//! record-backed input passes the verifier's one rule set for producers
//! ([`sealrun_verifier::record::check_producer`], which `sealrun-verify chain` applies too),
//! the job's `admit` labels, and its producer's whole chain; a copy of each proof is kept in
//! `records/artifacts/SHA.json` for offline chain checks. Every refusal is an [`InputError`]
//! that keeps the verifier's own error (and its [`InputError::kind`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sealrun_verifier::artifact::{
    check_listed, check_signature, check_signature_listing, Verified, VerifyError, VerifyOptions,
};
use sealrun_verifier::chain::{verify_chain, ChainError, Index};
use sealrun_verifier::digest::Digest;
use sealrun_verifier::dsse::{self, DsseError};
use sealrun_verifier::manifest::WalkOptions;
use sealrun_verifier::policy::Policy;
use sealrun_verifier::record::{
    check_producer, verify_record, ProducerError, ProofKind, ProofRef, RecordError,
};
use sealrun_verifier::rollback::write_atomic;

use crate::spec::{Input, JobSpec, Proof as SpecProof};
use crate::staging::{Staged, Staging, StagingError};

/// Why an input was refused (nothing ran).
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// `from_stage` names a stage that produced no record (a pipeline stopped before it).
    #[error("stage {0:?} has not produced a record")]
    NoStageRecord(String),
    /// The signature or record file could not be read.
    #[error(transparent)]
    Read(#[from] DsseError),
    #[error(transparent)]
    Verify(#[from] VerifyError),
    #[error(transparent)]
    Record(#[from] RecordError),
    /// The producer's record may not back this input.
    #[error("record {record}: {source}")]
    Producer {
        record: String,
        #[source]
        source: ProducerError,
    },
    #[error("label {key}={value} (propagated from its inputs) is not admitted by this job")]
    NotAdmitted { key: String, value: String },
    #[error("record {record}: subject {subject:?} is not an output file")]
    BadSubject { record: String, subject: String },
    /// The producer's own chain does not verify.
    #[error(transparent)]
    Chain(#[from] ChainError),
    #[error(transparent)]
    Stage(#[from] StagingError),
    /// An encrypted input did not decrypt, or its plaintext is not the signed one.
    #[error(transparent)]
    Decrypt(#[from] crate::decrypt::DecryptError),
    /// The proof could not be kept in the records folder.
    #[error("{}: {source}", path.display())]
    KeepProof {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl InputError {
    /// A stable machine-readable name for the reason: the verifier's own where it has one.
    pub fn kind(&self) -> &'static str {
        match self {
            InputError::NoStageRecord(_) => "missing_link",
            InputError::Read(e) => e.kind(),
            InputError::Verify(e) => e.kind(),
            InputError::Record(e) => e.kind(),
            InputError::Producer { source, .. } => source.kind(),
            InputError::NotAdmitted { .. } => "label_not_admitted",
            InputError::BadSubject { .. } => "bad_subject",
            InputError::Chain(e) => e.kind(),
            InputError::Stage(StagingError::Verify(e)) => e.kind(),
            InputError::Stage(_) => "staging",
            InputError::KeepProof { .. } => "unreadable",
            InputError::Decrypt(e) => e.kind(),
        }
    }
}

/// An input that verified: what was verified, the proof reference for the record, the copy.
pub struct VerifiedInput {
    pub verified: Verified,
    pub proof: ProofRef,
    pub staged: Staged,
}

/// Stage one input and verify the staged copy against what vouches for it. `stage_records`
/// maps earlier pipeline stages to their records: an earlier stage's outputs are checked like
/// any other record input.
pub fn verify_input(
    input: &Input,
    stage: &Staging,
    policy: &Policy,
    spec: &JobSpec,
    stage_records: &BTreeMap<String, PathBuf>,
) -> Result<VerifiedInput, InputError> {
    let now = time::OffsetDateTime::now_utc();
    match &input.proof {
        SpecProof::Stage(name) => {
            let record = stage_records
                .get(name)
                .ok_or_else(|| InputError::NoStageRecord(name.clone()))?;
            verify_record_input(input, stage, policy, spec, record)
        }
        SpecProof::Record(rec_path) => verify_record_input(input, stage, policy, spec, rec_path),
        SpecProof::Signature(sig_path) => {
            verify_signed_input(input, stage, policy, spec, sig_path, now)
        }
    }
}

/// The message a refusal shows: the staging descriptor path replaced by the folder's name,
/// and an earlier stage's outputs named as such.
pub fn describe(e: &InputError, input: &Input, stage: &Staging) -> String {
    let from = match &input.proof {
        SpecProof::Stage(name) if !matches!(e, InputError::NoStageRecord(_)) => {
            format!("outputs of stage {name:?}: ")
        }
        _ => String::new(),
    };
    format!("{from}{}", stage.show(&e.to_string()))
}

/// A record-backed input: the record (signature only) and the folder's file list first, then
/// the copy against the record's subjects, the producer rules, the job's `admit` labels and
/// the producer's chain.
fn verify_record_input(
    input: &Input,
    stage: &Staging,
    policy: &Policy,
    spec: &JobSpec,
    rec_path: &Path,
) -> Result<VerifiedInput, InputError> {
    let bytes = dsse::read_limited(rec_path)?;
    let shown = rec_path.display().to_string();
    // Cheap checks first: the record's signature, then the file list.
    check_record_listing(&shown, &bytes, policy, &input.path)?;
    let staged = stage.copy_tree(&input.name, &input.path)?;
    // The files must be exactly the producer's attested outputs.
    let vr = verify_record(&shown, &bytes, policy, Some(&staged.path))?;
    let digest = vr.subjects_digest().to_hex();
    let produced = check_producer(&vr, &digest, Some(input.kind), Some(&spec.name), policy)
        .map_err(|source| InputError::Producer {
            record: shown.clone(),
            source,
        })?;
    if let Some((key, value)) = policy.admit_violation(&produced.labels) {
        return Err(InputError::NotAdmitted { key, value });
    }
    // Its own inputs must trace back to trusted signed datasets.
    let dir = rec_path.parent().unwrap_or(Path::new("."));
    let index = Index::from_dir(dir)?;
    verify_chain(&shown, &bytes, &index, policy)?;
    let sha = keep_proof(&spec.records, &bytes)?;
    let verified = Verified {
        name: vr.job_name().to_string(),
        kind: produced.kind,
        version: None,
        labels: produced.labels,
        digest,
        files: vr.statement.subject.len(),
        bytes: 0,
        signer: vr.signer.clone(),
        keyid: vr.keyid.clone(),
        key_algorithm: "ed25519".into(),
        format: "sealrun-record",
        expires: None,
    };
    Ok(VerifiedInput {
        verified,
        proof: ProofRef {
            kind: ProofKind::Record,
            sha256: sha,
        },
        staged,
    })
}

/// A signed input, cheap checks first: the signature and policy, then the file list and sizes
/// (no file read yet: an unsigned extra file or a wrong size stops here); then exactly the
/// signed files are copied and hashed in the same read (see [`Staging::stage_signed`]).
fn verify_signed_input(
    input: &Input,
    stage: &Staging,
    policy: &Policy,
    spec: &JobSpec,
    sig_path: &Path,
    now: time::OffsetDateTime,
) -> Result<VerifiedInput, InputError> {
    let sig = dsse::read_limited(sig_path)?;
    let vopts = VerifyOptions {
        policy,
        now,
        rollback: None,
        expected_kind: Some(input.kind),
        progress: None,
    };
    let shown = format!("{:?}", input.path.display().to_string());
    // The signature, and (checked at the same time) the file list and sizes; then one read that
    // copies and hashes (or the verified store). An encrypted input is decrypted into a tmpfs
    // for the sandbox alone, and verified there.
    let (signed, staged) = if input.encrypted {
        let signed = check_signature(&sig, &shown, &vopts)?;
        let staged = crate::decrypt::stage(input, spec, &signed)?;
        (signed, staged)
    } else {
        let (mut signed, listed) = check_signature_listing(&sig, &shown, &vopts, &input.path)?;
        let staged = stage.stage_signed(&input.name, &input.path, &mut signed, listed)?;
        (signed, staged)
    };
    let sha = keep_proof(&spec.records, &sig)?;
    Ok(VerifiedInput {
        verified: signed.verified,
        proof: ProofRef {
            kind: ProofKind::Signature,
            sha256: sha,
        },
        staged,
    })
}

/// Before a record input is copied: the record verifies (signature only) and the folder holds
/// exactly the files it attests, found without reading any of them.
fn check_record_listing(
    shown: &str,
    bytes: &[u8],
    policy: &Policy,
    path: &Path,
) -> Result<(), InputError> {
    let vr = verify_record(shown, bytes, policy, None)?;
    let expected = vr
        .outputs_manifest()
        .map_err(|subject| InputError::BadSubject {
            record: shown.to_string(),
            subject,
        })?;
    let walk = WalkOptions::with_shard_size(u64::MAX);
    let artifact = format!("{:?}", path.display().to_string());
    let listed = sealrun_verifier::manifest::list_sized(path, &walk).map_err(|source| {
        VerifyError::Tree {
            artifact: artifact.clone(),
            source,
        }
    })?;
    Ok(check_listed(&artifact, &expected, &listed, false)?)
}

/// Keep a copy of a proof (signature or producer record) in `records/artifacts/`
/// under its SHA-256, so the chain can be verified offline from the records folder.
fn keep_proof(records: &Path, bytes: &[u8]) -> Result<String, InputError> {
    let sha = Digest::of(bytes).to_hex();
    let dir = records.join("artifacts");
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| InputError::KeepProof { path, source }
    };
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    let path = dir.join(format!("{sha}.json"));
    if !path.exists() {
        write_atomic(&path, bytes).map_err(io(&path))?;
    }
    Ok(sha)
}
