//! `sealrun seal-job`: bind the rank records of one Slurm job step into one signed job record
//! (in-toto Statement v1, SLSA Provenance v1 with buildType [`JOB_BUILD_TYPE`]).
//!
//! Guarantees: a seal is written only if the records folder holds exactly `WORLD_SIZE` rank
//! records of the job step, ranks `0..WORLD_SIZE` once each, every one verifying under the
//! trust policy and agreeing on the world size; otherwise nothing is written and the refusal
//! names what is missing, duplicated or bad ([`SealError::Refused`], exit 65). The seal's
//! subjects are the rank records by digest; its dependencies name each rank's outputs with the
//! rank record as proof (so `sealrun-verify chain`, `gate` and `aibom` walk every rank back to
//! its signed inputs); its `job` byproduct ([`JobSeal`]) lists every rank, its node, result,
//! refused connects and network allowlist; a rank that did not succeed is listed as failed and
//! the job's result is then `failed`. The seal is written atomically and, with an audit log,
//! appended to it (event `job`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use sealrun_verifier::digest::Digest;
use sealrun_verifier::dsse;
use sealrun_verifier::policy::Kind;
use sealrun_verifier::policy::Policy;
use sealrun_verifier::record::{
    parse_unverified, sign_record, to_annotations, verify_record, BuildDefinition, BuildMetadata,
    End, JobExternalParameters, JobResult, JobSeal, ProofKind, ProofRef, Provenance,
    ResourceDescriptor, RunDetails, SealedRank, SlurmRank, StageAnnotation, VerifiedRecord,
    BUILD_TYPE, END_BYPRODUCT, JOB_BUILD_TYPE, JOB_BYPRODUCT,
};
use sealrun_verifier::rollback::write_atomic;
use sealrun_verifier::statement::Subject;

use crate::audit::{self, Event};

/// Exit statuses of `sealrun seal-job`.
pub mod exit {
    /// Every rank succeeded; the seal is written.
    pub const SUCCEEDED: u8 = 0;
    /// The seal is written, and says the job failed (a rank did not succeed).
    pub const JOB_FAILED: u8 = 1;
    pub use crate::run::exit::{RECORD_FAILED, USAGE, VERIFY_FAILED};
}

/// Why no seal was written.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// Bad arguments, key or policy.
    #[error("{0}")]
    Usage(String),
    /// The rank records do not make a whole job step.
    #[error("refused: {0}; no job record written")]
    Refused(String),
    /// The seal or the audit log could not be written.
    #[error("cannot write the job record or audit log: {0}")]
    Write(String),
}

impl SealError {
    /// The exit status for this error.
    pub fn exit_status(&self) -> u8 {
        match self {
            SealError::Usage(_) => exit::USAGE,
            SealError::Refused(_) => exit::VERIFY_FAILED,
            SealError::Write(_) => exit::RECORD_FAILED,
        }
    }
}

/// What `seal-job` is asked to seal.
#[derive(Debug, Clone)]
pub struct SealRequest {
    pub records: PathBuf,
    /// The job (default: `SLURM_JOB_ID`).
    pub job: Option<String>,
    /// The step (default: the only step of the job with rank records).
    pub step: Option<String>,
    pub key: PathBuf,
    pub trust: PathBuf,
    /// Append a `job` event here.
    pub audit_log: Option<PathBuf>,
}

/// A written seal.
#[derive(Debug)]
pub struct Sealed {
    pub path: PathBuf,
    pub seal: JobSeal,
}

impl Sealed {
    /// The status `seal-job` exits with.
    pub fn status(&self) -> u8 {
        match self.seal.result {
            JobResult::Succeeded => exit::SUCCEEDED,
            JobResult::Failed => exit::JOB_FAILED,
        }
    }
}

/// A rank record found in the folder.
struct Found {
    file: String,
    bytes: Vec<u8>,
    rank: SlurmRank,
}

/// The run records of job `job` in `dir` (top level), unverified.
fn candidates(dir: &Path, job: &str) -> Result<Vec<Found>, SealError> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| SealError::Usage(format!("{}: {e}", dir.display())))?;
    let mut out = Vec::new();
    for e in entries.flatten() {
        let file = e.file_name().to_string_lossy().into_owned();
        if !file.ends_with(".json") || !e.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        let Ok(bytes) = dsse::read_limited(&e.path()) else {
            continue;
        };
        let Some(vr) = parse_unverified(&bytes) else {
            continue;
        };
        if vr.statement.predicate.build_definition.build_type != BUILD_TYPE {
            continue;
        }
        if let Some(rank) = vr.slurm().filter(|r| r.job_id == job).cloned() {
            out.push(Found { file, bytes, rank });
        }
    }
    out.sort_by(|a, b| (a.rank.rank, &a.file).cmp(&(b.rank.rank, &b.file)));
    Ok(out)
}

/// The step to seal: the one asked for, or the only one found.
fn choose_step(found: &[Found], req: &SealRequest, job: &str) -> Result<String, SealError> {
    let steps: BTreeSet<&str> = found.iter().map(|f| f.rank.step_id.as_str()).collect();
    if let Some(s) = &req.step {
        return Ok(s.clone());
    }
    match steps.len() {
        0 => Err(SealError::Refused(format!(
            "no rank records of Slurm job {job} in {}",
            req.records.display()
        ))),
        1 => Ok(steps.into_iter().next().unwrap_or_default().to_string()),
        _ => Err(SealError::Usage(format!(
            "Slurm job {job} has rank records of steps {}: name one with --step",
            steps.into_iter().collect::<Vec<_>>().join(", ")
        ))),
    }
}

/// Exactly ranks `0..world_size`, each once, all of one world size, every record verifying.
fn check_whole(
    found: Vec<Found>,
    policy: &Policy,
    step: &str,
) -> Result<Vec<(Found, VerifiedRecord)>, SealError> {
    let Some(world) = found.first().map(|f| f.rank.world_size) else {
        return Err(SealError::Refused(format!(
            "no rank records of job step {step}"
        )));
    };
    if let Some(f) = found.iter().find(|f| f.rank.world_size != world) {
        return Err(SealError::Refused(format!(
            "rank records of job step {step} disagree on WORLD_SIZE: {} says {}, {} says {world}",
            f.file, f.rank.world_size, found[0].file
        )));
    }
    let mut by_rank: BTreeMap<u32, Vec<&str>> = BTreeMap::new();
    for f in &found {
        by_rank.entry(f.rank.rank).or_default().push(&f.file);
    }
    if let Some((r, files)) = by_rank.iter().find(|(_, v)| v.len() > 1) {
        return Err(SealError::Refused(format!(
            "job step {step}: rank {r} has {} records ({}); remove the ones that do not belong to this step",
            files.len(),
            files.join(", ")
        )));
    }
    let missing: Vec<String> = (0..world)
        .filter(|r| !by_rank.contains_key(r))
        .map(|r| r.to_string())
        .collect();
    if !missing.is_empty() || found.len() != world as usize {
        return Err(SealError::Refused(format!(
            "job step {step}: {} of WORLD_SIZE {world} rank records found; missing rank(s) {} (a rank that never wrote its record: a node lost, a launcher killed; `sealrun recover` closes a run whose launcher died)",
            found.len(),
            missing.join(", ")
        )));
    }
    found
        .into_iter()
        .map(|f| {
            let vr = verify_record(&f.file, &f.bytes, policy, None)
                .map_err(|e| SealError::Refused(format!("rank {}: {e}", f.rank.rank)))?;
            Ok((f, vr))
        })
        .collect()
}

fn sealed_rank(f: &Found, vr: &VerifiedRecord) -> SealedRank {
    SealedRank {
        rank: f.rank.rank,
        local_rank: f.rank.local_rank,
        node: f.rank.node.clone(),
        record: f.file.clone(),
        record_sha256: Digest::of(&f.bytes).to_hex(),
        succeeded: vr.succeeded(),
        result: vr.result().to_string(),
        egress_refused: vr
            .egress_attempts()
            .iter()
            .map(|e| format!("{} {}", e.family, e.address))
            .collect(),
        network_allow: f
            .rank
            .network
            .as_ref()
            .map(|n| n.allow.clone())
            .unwrap_or_default(),
    }
}

/// Seal one job step (see the module docs).
pub fn seal_job(req: &SealRequest) -> Result<Sealed, SealError> {
    let job = match req
        .job
        .clone()
        .or_else(|| std::env::var("SLURM_JOB_ID").ok())
    {
        Some(j) if !j.is_empty() => j,
        _ => {
            return Err(SealError::Usage(
                "no job: give --job ID (SLURM_JOB_ID is not set)".into(),
            ))
        }
    };
    let key =
        crate::keyfile::load_signing_key(&req.key).map_err(|e| SealError::Usage(e.to_string()))?;
    let policy = Policy::load(&req.trust).map_err(|e| SealError::Usage(e.to_string()))?;
    let found = candidates(&req.records, &job)?;
    let step = choose_step(&found, req, &job)?;
    let found: Vec<Found> = found
        .into_iter()
        .filter(|f| f.rank.step_id == step)
        .collect();
    let ranks = check_whole(found, &policy, &format!("{job}.{step}"))?;
    let first = &ranks[0].0.rank;
    let seal = JobSeal {
        job_id: job.clone(),
        step_id: step.clone(),
        cluster: first.cluster.clone(),
        world_size: first.world_size,
        result: if ranks.iter().all(|(_, vr)| vr.succeeded()) {
            JobResult::Succeeded
        } else {
            JobResult::Failed
        },
        failed_ranks: ranks
            .iter()
            .filter(|(_, vr)| !vr.succeeded())
            .map(|(f, _)| f.rank.rank)
            .collect(),
        ranks: ranks.iter().map(|(f, vr)| sealed_rank(f, vr)).collect(),
    };
    let path = req.records.join(format!("slurm-{job}.{step}.job.json"));
    let bytes = sign(&seal, &ranks, &key);
    write_atomic(&path, &bytes)
        .map_err(|e| SealError::Write(format!("{}: {e}", path.display())))?;
    if let Some(log) = &req.audit_log {
        let outcome = result_text(&seal);
        audit::append(
            log,
            &Event {
                event: "job",
                job: ranks[0].1.job_name(),
                invocation: &format!("slurm-{job}.{step}"),
                record: Some(Digest::of(&bytes)),
                evidence: None,
                outcome,
            },
            &key,
        )
        .map_err(|e| SealError::Write(e.to_string()))?;
    }
    Ok(Sealed { path, seal })
}

/// The job's result as one line: `succeeded`, or `failed: rank N (node): RESULT; …`.
pub fn result_text(seal: &JobSeal) -> String {
    if seal.result == JobResult::Succeeded {
        return "succeeded".into();
    }
    let failed: Vec<String> = seal
        .ranks
        .iter()
        .filter(|r| !r.succeeded)
        .map(|r| format!("rank {} ({}): {}", r.rank, r.node, r.result))
        .collect();
    format!("failed: {}", failed.join("; "))
}

/// The signed job record.
fn sign(
    seal: &JobSeal,
    ranks: &[(Found, VerifiedRecord)],
    key: &sealrun_verifier::keys::SigningKey,
) -> Vec<u8> {
    let mut subjects = Vec::new();
    let mut deps = Vec::new();
    for (f, vr) in ranks {
        let sha = Digest::of(&f.bytes).to_hex();
        subjects.push(Subject {
            name: f.file.clone(),
            digest: BTreeMap::from([("sha256".to_string(), sha.clone())]),
        });
        // A rank that produced nothing (refused before it ran) is listed as a model's.
        let notes = StageAnnotation {
            kind: vr.produced().map_or(Kind::Model, |p| p.kind),
            proof: ProofRef {
                kind: ProofKind::Record,
                sha256: sha,
            },
            result: if vr.succeeded() {
                "succeeded"
            } else {
                "failed"
            }
            .into(),
        };
        deps.push(ResourceDescriptor {
            uri: Some(format!("file:{}", f.file)),
            digest: BTreeMap::from([("sha256".to_string(), vr.subjects_digest().to_hex())]),
            ..ResourceDescriptor::annotated(&format!("rank-{}", f.rank.rank), &notes)
        });
    }
    let started = ranks
        .iter()
        .map(|(_, vr)| {
            vr.statement
                .predicate
                .run_details
                .metadata
                .started_on
                .clone()
        })
        .min()
        .unwrap_or_default();
    let finished = ranks
        .iter()
        .map(|(_, vr)| {
            vr.statement
                .predicate
                .run_details
                .metadata
                .finished_on
                .clone()
        })
        .max()
        .unwrap_or_default();
    let result = result_text(seal);
    let prov = Provenance {
        build_definition: BuildDefinition {
            build_type: JOB_BUILD_TYPE.to_string(),
            external_parameters: to_annotations(&JobExternalParameters {
                name: ranks[0].1.job_name().to_string(),
                slurm_job_id: seal.job_id.clone(),
                slurm_step_id: seal.step_id.clone(),
                world_size: seal.world_size,
            }),
            internal_parameters: to_annotations(&crate::attest::launcher_internal()),
            resolved_dependencies: deps,
        },
        run_details: RunDetails {
            builder: crate::attest::builder(crate::attest::key_builder_id(key)),
            metadata: BuildMetadata {
                invocation_id: format!("slurm-{}.{}", seal.job_id, seal.step_id),
                started_on: started,
                finished_on: finished,
            },
            byproducts: vec![
                ResourceDescriptor::annotated(
                    END_BYPRODUCT,
                    &End {
                        result: result.clone(),
                        reason: result,
                        refusal: None,
                        ran: None,
                    },
                ),
                ResourceDescriptor::annotated(JOB_BYPRODUCT, seal),
            ],
        },
    };
    sign_record(subjects, &prov, key).to_json()
}

/// Arguments of `sealrun seal-job`.
#[derive(Debug, clap::Args)]
pub struct SealArgs {
    /// The records folder the ranks wrote to (shared storage, or per-node folders gathered
    /// into one).
    #[arg(long, value_name = "DIR")]
    pub records: PathBuf,
    /// The Slurm job (default: $SLURM_JOB_ID).
    #[arg(long, value_name = "ID")]
    pub job: Option<String>,
    /// The job step (default: the only step of the job with rank records).
    #[arg(long, value_name = "ID")]
    pub step: Option<String>,
    /// The job spec the ranks ran: its signing key, trust policy and audit log are used
    /// (each may be given on its own instead; else the config files' defaults apply).
    #[arg(long, value_name = "SPEC")]
    pub spec: Option<PathBuf>,
    /// The signing key.
    #[arg(long, value_name = "KEY")]
    pub key: Option<PathBuf>,
    /// The trust policy the rank records must verify under.
    #[arg(long, value_name = "POLICY")]
    pub trust: Option<PathBuf>,
    /// Append a `job` event to this audit log.
    #[arg(long, value_name = "LOG")]
    pub audit_log: Option<PathBuf>,
}

/// The request: explicit arguments, then the spec's fields, then the config files'.
fn request(args: SealArgs) -> Result<SealRequest, SealError> {
    let mut key = args.key;
    let mut trust = args.trust;
    let mut audit_log = args.audit_log;
    if let Some(spec) = &args.spec {
        match crate::spec::Spec::load(spec).map_err(|e| SealError::Usage(e.to_string()))? {
            crate::spec::Spec::Job(j) => {
                key.get_or_insert(j.signing_key);
                trust.get_or_insert(j.trust);
                audit_log.get_or_insert(j.audit_log);
            }
            crate::spec::Spec::Pipeline(_) => {
                return Err(SealError::Usage(format!(
                    "{}: a pipeline; seal-job seals the ranks of one job",
                    spec.display()
                )))
            }
        }
    }
    let config =
        crate::config::load(Path::new(".")).map_err(|e| SealError::Usage(e.to_string()))?;
    let default = |field: &str| config.get(field).map(|v| v.path.clone());
    let missing = |what: &str, flag: &str| {
        SealError::Usage(format!(
            "no {what}: give --{flag}, --spec, or set it in sealrun.toml (see `sealrun config`)"
        ))
    };
    Ok(SealRequest {
        records: args.records,
        job: args.job,
        step: args.step,
        key: key
            .or_else(|| default("signing_key"))
            .ok_or_else(|| missing("signing key", "key"))?,
        trust: trust
            .or_else(|| default("trust"))
            .ok_or_else(|| missing("trust policy", "trust"))?,
        audit_log: audit_log.or_else(|| default("audit_log")),
    })
}

/// Run `sealrun seal-job`; prints the job record's path and result; returns the exit status.
pub fn run(args: SealArgs) -> u8 {
    match request(args).and_then(|r| seal_job(&r)) {
        Ok(s) => {
            println!("{}", s.path.display());
            eprintln!(
                "sealrun: job {} step {}: {} rank(s), {}",
                s.seal.job_id,
                s.seal.step_id,
                s.seal.world_size,
                result_text(&s.seal)
            );
            s.status()
        }
        Err(e) => {
            eprintln!("sealrun: seal-job: {e}");
            e.exit_status()
        }
    }
}
