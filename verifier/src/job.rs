//! Slurm job seals (`sealrun seal-job`): one signed record over every rank record of one job
//! step.
//!
//! Guarantees of [`verify_job`]: the seal verifies as a record (signature, a key allowed to
//! sign records, revocation, launcher pins) with buildType [`JOB_BUILD_TYPE`]; its `job`
//! byproduct parses ([`JobSeal`]) and lists ranks `0..world_size` exactly once each, one subject
//! per rank with the same digest; every rank record is found in the records folder by that
//! digest, verifies, and is the task the seal says it is (same job, step, rank and world size);
//! the seal's per-rank success and its job result agree with the rank records; and every rank
//! record's chain of custody verifies (its inputs back to trusted signed data). A job that
//! failed still verifies: the report says it failed and which ranks did.

use serde::Serialize;

use crate::chain::{verify_chain, ChainError, Index};
use crate::policy::Policy;
use crate::record::{
    verify_record, JobResult, JobSeal, RecordError, VerifiedRecord, JOB_BUILD_TYPE,
};

/// Why a job seal does not verify.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error(transparent)]
    Record(#[from] Box<RecordError>),
    #[error("{record}: buildType is {found:?}, expected {JOB_BUILD_TYPE:?} (not a job seal)")]
    NotAJob { record: String, found: String },
    #[error("{record}: {reason}")]
    Malformed { record: String, reason: String },
    #[error("{record}: rank {rank}: its record {file} (sha256:{sha256}) is not in {dir}")]
    MissingRank {
        record: String,
        rank: u32,
        file: String,
        sha256: String,
        dir: String,
    },
    #[error("{record}: rank {rank}: {reason}")]
    Rank {
        record: String,
        rank: u32,
        reason: String,
    },
    #[error("{record}: rank {rank}: {source}")]
    Chain {
        record: String,
        rank: u32,
        #[source]
        source: Box<ChainError>,
    },
}

impl JobError {
    /// A stable machine-readable name for the reason.
    pub fn kind(&self) -> &'static str {
        match self {
            JobError::Record(e) => e.kind(),
            JobError::NotAJob { .. } => "build_type",
            JobError::Malformed { .. } => "malformed_seal",
            JobError::MissingRank { .. } => "missing_rank_record",
            JobError::Rank { .. } => "rank_mismatch",
            JobError::Chain { source, .. } => source.kind(),
        }
    }
}

/// A verified job seal.
#[derive(Debug, Clone, Serialize)]
pub struct JobReport {
    pub seal: JobSeal,
    /// Who signed the seal.
    pub signer: String,
    /// Nodes of each rank's verified chain, in rank order.
    pub chain_nodes: Vec<usize>,
}

fn malformed(record: &str, reason: String) -> JobError {
    JobError::Malformed {
        record: record.to_string(),
        reason,
    }
}

/// The seal's own consistency: ranks `0..world_size` once each, subjects matching, the result
/// following from the ranks.
fn check_seal(record: &str, vr: &VerifiedRecord, seal: &JobSeal) -> Result<(), JobError> {
    let n = seal.world_size as usize;
    if seal.ranks.len() != n || vr.statement.subject.len() != n {
        return Err(malformed(
            record,
            format!(
                "WORLD_SIZE {n}, but {} ranks and {} subjects",
                seal.ranks.len(),
                vr.statement.subject.len()
            ),
        ));
    }
    for (i, r) in seal.ranks.iter().enumerate() {
        if r.rank as usize != i {
            return Err(malformed(
                record,
                format!("rank entry {i} is rank {}", r.rank),
            ));
        }
        let subject = vr.statement.subject.iter().find(|s| s.name == r.record);
        if subject.and_then(|s| s.digest.get("sha256")) != Some(&r.record_sha256) {
            return Err(malformed(
                record,
                format!("rank {i}: no subject {:?} with its digest", r.record),
            ));
        }
    }
    let failed: Vec<u32> = seal
        .ranks
        .iter()
        .filter(|r| !r.succeeded)
        .map(|r| r.rank)
        .collect();
    let result = if failed.is_empty() {
        JobResult::Succeeded
    } else {
        JobResult::Failed
    };
    if failed != seal.failed_ranks || result != seal.result {
        return Err(malformed(
            record,
            format!(
                "result {:?} with failed ranks {:?} does not follow from its ranks (failed: {failed:?})",
                seal.result, seal.failed_ranks
            ),
        ));
    }
    Ok(())
}

/// Verify the job seal `bytes` (named `record`) with the rank records in `index`.
pub fn verify_job(
    record: &str,
    bytes: &[u8],
    index: &Index,
    policy: &Policy,
) -> Result<JobReport, JobError> {
    let vr = verify_record(record, bytes, policy, None).map_err(Box::new)?;
    if !vr.is_job() {
        return Err(JobError::NotAJob {
            record: record.to_string(),
            found: vr.statement.predicate.build_definition.build_type.clone(),
        });
    }
    let seal = vr
        .contents
        .job
        .clone()
        .ok_or_else(|| malformed(record, "no `job` byproduct".into()))?;
    check_seal(record, &vr, &seal)?;
    // Every rank record first (a missing one is named as such), then every chain.
    let mut found = Vec::new();
    for r in &seal.ranks {
        let rank_err = |reason: String| JobError::Rank {
            record: record.to_string(),
            rank: r.rank,
            reason,
        };
        let Some((path, rbytes)) = index.files.get(&r.record_sha256) else {
            return Err(JobError::MissingRank {
                record: record.to_string(),
                rank: r.rank,
                file: r.record.clone(),
                sha256: r.record_sha256.clone(),
                dir: index.dir.clone(),
            });
        };
        let shown = path.display().to_string();
        let rv = verify_record(&shown, rbytes, policy, None).map_err(Box::new)?;
        let slurm = rv
            .slurm()
            .ok_or_else(|| rank_err(format!("{shown} is not a Slurm rank's record")))?;
        let want = (&seal.job_id, &seal.step_id, r.rank, seal.world_size);
        let got = (&slurm.job_id, &slurm.step_id, slurm.rank, slurm.world_size);
        if want != got {
            return Err(rank_err(format!(
                "{shown} is job {} step {} rank {} of {}, not job {} step {} rank {} of {}",
                got.0, got.1, got.2, got.3, want.0, want.1, want.2, want.3
            )));
        }
        if rv.succeeded() != r.succeeded {
            return Err(rank_err(format!(
                "the seal says succeeded={}, but {shown} says {:?}",
                r.succeeded,
                rv.result()
            )));
        }
        found.push((r.rank, shown, rbytes));
    }
    let mut chain_nodes = Vec::new();
    for (rank, shown, rbytes) in found {
        let g = verify_chain(&shown, rbytes, index, policy).map_err(|source| JobError::Chain {
            record: record.to_string(),
            rank,
            source: Box::new(source),
        })?;
        chain_nodes.push(g.graph.nodes.len());
    }
    Ok(JobReport {
        seal,
        signer: vr.signer,
        chain_nodes,
    })
}
