//! `sealrun run JOB.toml`: one job, in order: plan → verify → stage → run in
//! the sandbox under a supervisor → hash outputs → sign the record → audit.
//!
//! Guarantees: the spec, trust policy, signing key and every input signature
//! are checked before anything runs; an input that fails verification stops the
//! run (nothing executes), and the refusal is recorded in a signed record and the
//! audit log; an input older than a version an earlier run used is refused the
//! same way (see [`crate::rollback`]); the job only ever reads staged, verified
//! copies of its inputs and code, bound from descriptors (see [`crate::staging`]);
//! a `start` entry is in the audit log before the job starts, so a run the
//! launcher never finished stays visible; stdout and stderr are streamed to the
//! terminal and to log files; SIGINT and SIGTERM reach the job as themselves (a
//! second one kills the tree, and the record's `interrupt` byproduct says what
//! came); every run that started gets a signed record, whatever its end.

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rand_core::RngCore;
use sealrun_sandbox::{
    Bind, FdBind, ProfileRef, SandboxConfig, SandboxError, SandboxPlan, Stdio, Tmpfs,
};
use sealrun_verifier::digest::Digest;
use sealrun_verifier::keys::SigningKey;
use sealrun_verifier::labels;
use sealrun_verifier::manifest::{Manifest, WalkOptions};
use sealrun_verifier::policy::Policy;
use sealrun_verifier::record::{
    outputs_digest, InternalParameters, ProducedArtifact, ResourceDescriptor, RunLog,
};
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::attest::{self, RecordedInput, RunFacts};
use crate::audit::{self, Event};
use crate::events::Emitter;
use crate::inputs::{verify_input, VerifiedInput};
use crate::outputs;
use crate::secrets::{self, Leak, Patterns, Redactor, Secret};
use crate::spec::{JobSpec, SpecError, CODE_MOUNT, OUTPUT_MOUNT};
use crate::staging::Staging;
use crate::{keyfile, now_rfc3339};
use sealrun_verifier::text::rfc3339;

/// Exit statuses of `sealrun run` besides the job's own status.
pub mod exit {
    /// The spec, policy or key is invalid or unreadable.
    pub const USAGE: u8 = 64;
    /// An input did not verify; nothing ran.
    pub const VERIFY_FAILED: u8 = 65;
    /// The record or audit log could not be written.
    pub const RECORD_FAILED: u8 = 74;
    /// The job succeeded but a secret leaked into its logs, outputs or egress addresses.
    pub const SECRET_LEAKED: u8 = 66;
    /// The job succeeded but not everything it left in its output folder could
    /// be attested (the record's `output-unattested` says what and why).
    pub const OUTPUTS_UNATTESTED: u8 = 67;
    pub use sealrun_sandbox::exit_codes::{SETUP_FAILED, TIMEOUT};
}

/// Errors that stop a run before a record can be written.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    Key(#[from] keyfile::KeyFileError),
    #[error(transparent)]
    Policy(#[from] sealrun_verifier::policy::PolicyError),
    #[error("{path}: {message}")]
    Usage { path: PathBuf, message: String },
    #[error(transparent)]
    Secret(#[from] secrets::SecretError),
    /// The record could not be written or its audit entry appended.
    #[error("cannot write the run record or audit log: {0}")]
    Publish(#[from] attest::PublishError),
    /// The audit log could not be appended to (the `start` entry, the rollback state).
    #[error("cannot write the run record or audit log: {0}")]
    Audit(#[from] audit::AuditWriteError),
    /// The run could not be locked (or the runs of dead launchers closed).
    #[error("cannot write the run record or audit log: {0}")]
    Lock(#[from] crate::recover::RecoverError),
    /// The job's stdout/stderr pipes could not be made.
    #[error("pipe: {0}")]
    Pipe(#[source] nix::Error),
    /// Running and watching the job failed in the launcher itself.
    #[error(transparent)]
    Execute(#[from] ExecError),
    /// A stage's record could not be read back (pipelines).
    #[error("{}: {source}", path.display())]
    ReadRecord {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The Slurm task's variables do not say which rank it is.
    #[error(transparent)]
    Slurm(#[from] crate::slurm::SlurmError),
}

impl RunError {
    /// The exit status for this error: the one place a run's errors become exit codes
    /// (`exit::RECORD_FAILED` where the launcher could not write or watch, `exit::USAGE` for
    /// what the user gave).
    pub fn exit_status(&self) -> u8 {
        match self {
            RunError::Publish(_)
            | RunError::Audit(_)
            | RunError::Lock(_)
            | RunError::Pipe(_)
            | RunError::Execute(_)
            | RunError::ReadRecord { .. } => exit::RECORD_FAILED,
            RunError::Spec(_)
            | RunError::Key(_)
            | RunError::Policy(_)
            | RunError::Usage { .. }
            | RunError::Secret(_)
            | RunError::Slurm(_) => exit::USAGE,
        }
    }
}

/// The launcher failed while it ran the job (not the job, not the sandbox).
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("tokio runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// SIGINT/SIGTERM could not be caught.
    #[error("{0}")]
    Signals(#[source] std::io::Error),
    #[error("supervisor: {0}")]
    Join(#[from] tokio::task::JoinError),
    /// A log pump failed to read the job's output.
    #[error("{0}")]
    Pump(#[source] std::io::Error),
}

/// How a run went.
#[derive(Debug)]
pub struct RunSummary {
    /// The status `sealrun run` exits with.
    pub status: u8,
    /// One line: what happened.
    pub message: String,
    /// The signed record.
    pub record: PathBuf,
}

/// Options for [`run_job`].
#[derive(Debug, Default, Clone)]
pub struct RunOptions {
    /// Do not echo the job's stdout/stderr to the terminal (logs are still written).
    pub quiet: bool,
    /// Make a new rollback state file (refused if it exists); see [`crate::rollback`].
    pub init_rollback_state: bool,
    /// The security event stream (`--events`); overrides the spec's `events`.
    pub events: Option<crate::events::Sink>,
    /// The run's invocation id, when chosen before the run (see [`crate::plan`]).
    pub invocation: Option<String>,
    /// A pipeline's secrets, read once for all its stages.
    pub secrets: Option<Arc<secrets::SecretCache>>,
}

pub(crate) fn new_invocation_id() -> String {
    let mut b = [0u8; 16];
    rand_core::OsRng.fill_bytes(&mut b);
    hex::encode(b)
}

/// Fixed state of one run, used to write its record and audit entries.
struct OpenRun<'a> {
    spec: &'a JobSpec,
    key: &'a SigningKey,
    invocation: String,
    started_on: String,
    builder_id: String,
    /// Held until the run is closed; tells recovery this launcher is alive.
    lock: crate::recover::RunLock,
    /// The Slurm task this run is, if any (every record of the run says so).
    rank: Option<crate::slurm::RankIdentity>,
    /// The job network (`network = "job"`), held until the run ends; an error refuses the run.
    netns: Result<Option<crate::slurm::netns::JobNetns>, String>,
    /// The TPM that measures and quotes this run (empty: software key only).
    tpm: crate::tpm::attest::Slot,
}

/// Why a run stopped before its job started: recorded and audited (`refused`); nothing ran.
#[derive(Debug)]
struct Refusal {
    /// The exit status.
    status: u8,
    /// The record's `result` and the audit entry's outcome (`refused: ...`, `failed: ...`).
    result: String,
    /// The summary's one line.
    message: String,
    /// The record's internalParameters, once they are known.
    internal: Option<Box<InternalParameters>>,
    /// A stable name for why (the record's `end.refusal`).
    kind: Option<&'static str>,
}

impl Refusal {
    /// Refused for the reason named `kind`: `refused: MESSAGE`, and `refused: MESSAGE; nothing
    /// ran` for people.
    fn refused(status: u8, kind: &'static str, message: String) -> Refusal {
        Refusal {
            status,
            result: format!("refused: {message}"),
            message: format!("refused: {message}; nothing ran"),
            internal: None,
            kind: Some(kind),
        }
    }
}

/// How a phase stops the run: refused (a record says why), or an error (no record).
#[derive(Debug)]
enum Stop {
    Refused(Refusal),
    Failed(RunError),
}

macro_rules! stop_on {
    ($($e:ty),*) => {$(
        impl From<$e> for Stop {
            fn from(e: $e) -> Stop {
                Stop::Failed(e.into())
            }
        }
    )*};
}
stop_on!(RunError, attest::PublishError);

impl From<Refusal> for Stop {
    fn from(r: Refusal) -> Stop {
        Stop::Refused(r)
    }
}

impl OpenRun<'_> {
    /// Take the run's lock (closing the runs on this audit log whose launcher died first):
    /// from here on, every end of the run is recorded.
    fn open<'a>(
        spec: &'a JobSpec,
        key: &'a SigningKey,
        invocation: String,
    ) -> Result<OpenRun<'a>, RunError> {
        let host = nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_else(|_| "unknown-host".into());
        let keyid = key.public().keyid();
        let (started_on, builder_id) = (
            now_rfc3339(),
            format!("https://sealrun.dev/launcher/v1?host={host}&keyid={keyid}"),
        );
        let mut rank = crate::slurm::RankIdentity::from_env()?;
        let lock = crate::recover::lock_run(
            spec,
            &invocation,
            &started_on,
            &builder_id,
            rank.as_ref().map(|r| &r.0),
        )?;
        let netns =
            crate::slurm::job_network(spec.sandbox.network, spec.sandbox.ports, rank.as_mut());
        Ok(OpenRun {
            spec,
            key,
            invocation,
            started_on,
            builder_id,
            lock,
            rank,
            netns,
            tpm: Default::default(),
        })
    }

    fn record_path(&self) -> PathBuf {
        self.spec.records.join(format!(
            "{}-{}.json",
            self.spec.name,
            &self.invocation[..12]
        ))
    }

    /// Sign and write the record, then append the audit entry.
    fn finish(
        &self,
        mut facts: RunFacts,
        event: &str,
        outcome: String,
    ) -> Result<PathBuf, RunError> {
        // The result is shown to people: names in it came from disk.
        facts.result = sealrun_verifier::text::one_line(&facts.result);
        facts.internal.slurm = self.rank.as_ref().map(|r| r.0.clone());
        let measured = self
            .tpm
            .borrow()
            .as_ref()
            .and_then(|t| t.measurement().cloned());
        crate::tpm::attest::annotate(&mut facts.internal, measured.as_ref());
        let (subjects, prov) = attest::provenance(&facts);
        let path = self.record_path();
        let published = attest::publish(
            subjects,
            &prov,
            self.key,
            attest::Destination {
                path: &path,
                audit_log: &self.spec.audit_log,
                event,
                job: &self.spec.name,
                invocation: &self.invocation,
                outcome,
                tpm: Some(&self.tpm),
            },
        );
        // A failed quote leaves the record and its audit entry written: the run is closed.
        if matches!(published, Ok(_) | Err(attest::PublishError::Quote(_))) {
            self.lock.closed();
        }
        published?;
        Ok(path)
    }

    /// Record and audit a run refused before anything ran: the one refusal path.
    fn refuse(&self, inputs: &[RecordedInput], r: Refusal) -> Result<RunSummary, RunError> {
        let mut facts = self.facts(inputs, r.result.clone());
        facts.refusal = r.kind;
        if let Some(internal) = r.internal {
            facts.internal = *internal;
        }
        let record = self.finish(facts, "refused", r.result)?;
        Ok(RunSummary {
            status: r.status,
            message: r.message,
            record,
        })
    }

    fn facts<'b>(&'b self, inputs: &'b [RecordedInput], result: String) -> RunFacts<'b> {
        RunFacts {
            spec: self.spec,
            invocation: &self.invocation,
            started_on: self.started_on.clone(),
            finished_on: now_rfc3339(),
            builder_id: self.builder_id.clone(),
            inputs,
            code_digest: None,
            executable: None,
            internal: InternalParameters {
                launcher_sha256: crate::launcher_sha256().to_string(),
                ..Default::default()
            },
            outcome: None,
            result,
            refusal: None,
            logs: Vec::new(),
            outputs: None,
            extra_byproducts: Vec::new(),
            python: None,
        }
    }
}

/// Resolve `argv0` the way the sandbox will (its PATH, after the venv's `bin/` if the job has
/// one), on the host's read-only system view.
fn resolve_executable(argv0: &str, venv_bin: Option<PathBuf>) -> Option<PathBuf> {
    let candidates: Vec<PathBuf> = if argv0.contains('/') {
        vec![PathBuf::from(argv0)]
    } else {
        venv_bin
            .into_iter()
            .chain(
                sealrun_sandbox::plan::SANDBOX_PATH
                    .split(':')
                    .map(PathBuf::from),
            )
            .map(|d| d.join(argv0))
            .collect()
    };
    candidates
        .into_iter()
        .find(|p| p.is_file())
        .and_then(|p| p.canonicalize().ok())
}

/// The job's virtualenv as its record lists it: the interpreter (hashed) and every installed
/// distribution; a venv holding one that cannot be attested stops the run before anything runs.
fn python_facts(
    venv: &crate::venv::Venv,
) -> Result<
    (
        sealrun_verifier::record::PythonEnvironment,
        Vec<sealrun_verifier::record::PythonPackage>,
    ),
    RunError,
> {
    let usage = |message: String| RunError::Usage {
        path: venv.path.clone(),
        message,
    };
    let packages = venv.packages().map_err(|e| usage(e.to_string()))?;
    let env = venv.environment().map_err(|e| {
        usage(format!(
            "cannot hash the interpreter {}: {e}",
            venv.interpreter.display()
        ))
    })?;
    Ok((env, packages))
}

/// Gives the output folder back to the launcher's own uid: by [`OutputOwner::collect`]
/// after the run, or when dropped on any error path, so no path leaves it (or
/// anything in it) owned by the job's uid.
struct OutputOwner(Option<PathBuf>);

fn launcher_ids() -> (u32, u32) {
    (
        nix::unistd::geteuid().as_raw(),
        nix::unistd::getegid().as_raw(),
    )
}

impl OutputOwner {
    /// Hand every entry back and attest the folder.
    fn collect(
        mut self,
        limits: &outputs::Limits,
        patterns: &Arc<Patterns>,
    ) -> crate::outputs::Collected {
        let root = self.0.take().expect("collected once");
        let (uid, gid) = launcher_ids();
        crate::outputs::collect(&root, uid, gid, limits, patterns)
    }
}

impl Drop for OutputOwner {
    fn drop(&mut self) {
        if let Some(root) = self.0.take() {
            let (uid, gid) = launcher_ids();
            let _ = crate::outputs::hand_back_only(&root, uid, gid);
        }
    }
}

/// Redact every secret in the egress addresses the sandbox observed (a job
/// can put one in an `AF_UNIX` path or abstract name); each one found is a
/// leak at `egress:ADDRESS` (redacted).
fn redact_egress(o: &mut sealrun_sandbox::Outcome, patterns: &Patterns) -> Vec<Leak> {
    let mut leaks = Vec::new();
    if patterns.is_empty() {
        return leaks;
    }
    for e in &mut o.egress_attempts {
        let (clean, seen) = patterns.redact_bytes(e.address.as_bytes());
        if seen.is_empty() {
            continue;
        }
        e.address = String::from_utf8_lossy(&clean).into_owned();
        leaks.extend(seen.into_iter().map(|secret| Leak {
            secret,
            place: format!("egress:{}", e.address),
        }));
    }
    leaks
}

/// The exit status, the record's `result` and the end reason of a run that
/// started. A leak outranks unattested outputs; a failed job keeps its status,
/// and the result also names what else went wrong.
fn run_result(
    outcome: &Result<sealrun_sandbox::Outcome, SandboxError>,
    leaks: &[&Leak],
    unattested: &sealrun_verifier::record::UnattestedOutputs,
) -> (u8, String, String) {
    let o = match outcome {
        Ok(o) => o,
        Err(e) => return (exit::SETUP_FAILED, format!("failed: {e}"), e.to_string()),
    };
    let reason = attest::end_reason_text(o);
    let mut problems = Vec::new();
    if !leaks.is_empty() {
        let list: Vec<String> = leaks
            .iter()
            .map(|l| format!("{} in {}", l.secret, l.place))
            .collect();
        problems.push(format!("secret leaked: {}", list.join(", ")));
    }
    if unattested.count > 0 {
        problems.push(unattested_text(unattested));
    }
    let status = if !matches!(o.end, sealrun_sandbox::EndReason::Exited { code: 0 }) {
        problems.insert(0, reason.clone());
        o.exit_status()
    } else if !leaks.is_empty() {
        exit::SECRET_LEAKED
    } else if unattested.count > 0 {
        exit::OUTPUTS_UNATTESTED
    } else {
        return (0, "succeeded".into(), reason);
    };
    (status, format!("failed: {}", problems.join("; ")), reason)
}

/// One line for the record's result and the audit log: how many outputs were
/// not attested, and the first one with its reason.
fn unattested_text(u: &sealrun_verifier::record::UnattestedOutputs) -> String {
    let first = u
        .entries
        .first()
        .map(|e| format!(" (first: {}: {})", e.path, e.reason))
        .unwrap_or_default();
    format!("{} output(s) not attested{first}", u.count)
}

/// The record's `output-summary` and (if any) `output-unattested` byproducts.
fn output_byproducts(c: &crate::outputs::Collected) -> Vec<ResourceDescriptor> {
    use sealrun_verifier::record::{OUTPUT_SUMMARY_BYPRODUCT, UNATTESTED_BYPRODUCT};
    let mut v = vec![ResourceDescriptor::annotated(
        OUTPUT_SUMMARY_BYPRODUCT,
        &c.summary,
    )];
    if c.unattested.count > 0 {
        v.push(ResourceDescriptor::annotated(
            UNATTESTED_BYPRODUCT,
            &c.unattested,
        ));
    }
    v
}

fn pipe() -> Result<(OwnedFd, OwnedFd), RunError> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(RunError::Pipe)
}

/// What became of one of the job's output streams.
#[derive(Debug)]
struct LogResult {
    /// SHA-256 of the log file as written (marker included).
    digest: Digest,
    /// Secrets seen in the stream (also in the dropped part).
    seen: Vec<String>,
    /// Bytes of the (redacted) stream kept in the file, and dropped after the limit.
    kept: u64,
    dropped: u64,
    /// Why the log file could not be (fully) written, if it could not.
    error: Option<String>,
}

impl LogResult {
    fn annotations(&self, limit: u64) -> RunLog {
        RunLog {
            kept_bytes: self.kept,
            dropped_bytes: self.dropped,
            truncated: self.dropped > 0,
            max_log_size: limit,
            error: self.error.clone(),
        }
    }
}

/// Copy a pipe to a log file and (unless quiet) to our own stdout/stderr,
/// redacting secrets on the way. The file keeps the first `max` bytes, then a
/// marker; the rest is still read (so the job never blocks on a full pipe) and
/// scanned, but dropped. A file that cannot be written is an error in the
/// result, not the end of the run: the pipe is drained all the same.
async fn pump(
    fd: OwnedFd,
    log: PathBuf,
    to_stderr: bool,
    quiet: bool,
    mut redactor: Redactor,
    max: u64,
) -> std::io::Result<LogResult> {
    let mut rx = tokio::net::unix::pipe::Receiver::from_owned_fd(fd)?;
    let mut error = None;
    let mut file = match tokio::fs::File::create(&log).await {
        Ok(f) => Some(f),
        Err(e) => {
            error = Some(format!("{}: {e}", log.display()));
            None
        }
    };
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 64 << 10];
    let mut out: Box<dyn tokio::io::AsyncWrite + Unpin + Send> = if to_stderr {
        Box::new(tokio::io::stderr())
    } else {
        Box::new(tokio::io::stdout())
    };
    let (mut kept, mut dropped) = (0u64, 0u64);
    // A terminal gets the output escaped; the log keeps the raw bytes.
    let (out_tty, err_tty) = crate::terminal::terminals();
    let mut escaper =
        (if to_stderr { err_tty } else { out_tty }).then(crate::terminal::Escaper::default);
    let mut shown = Vec::new();
    loop {
        let n = rx.read(&mut buf).await?;
        let clean = if n == 0 {
            redactor.finish()
        } else {
            redactor.feed(&buf[..n])
        };
        let room = usize::try_from(max.saturating_sub(kept)).unwrap_or(usize::MAX);
        let take = clean.len().min(room);
        let mut chunk = clean[..take].to_vec();
        if take < clean.len() {
            if dropped == 0 {
                chunk.extend_from_slice(
                    format!("\n[sealrun: log truncated: only the first {max} bytes are kept (sandbox.max_log_size)]\n").as_bytes(),
                );
            }
            dropped += (clean.len() - take) as u64;
        }
        kept += take as u64;
        if let Some(f) = file.as_mut().filter(|_| !chunk.is_empty()) {
            if let Err(e) = f.write_all(&chunk).await {
                error = Some(format!("{}: {e}", log.display()));
                file = None;
            }
        }
        h.update(&chunk);
        if !quiet {
            let show = match &mut escaper {
                Some(e) => {
                    shown.clear();
                    e.feed(&chunk, &mut shown);
                    if n == 0 {
                        e.finish(&mut shown);
                    }
                    &shown
                }
                None => &chunk,
            };
            if !show.is_empty() {
                let _ = out.write_all(show).await;
                let _ = out.flush().await;
            }
        }
        if n == 0 {
            break;
        }
    }
    if let Some(f) = file {
        if let Err(e) = f.sync_all().await {
            error = Some(format!("{}: {e}", log.display()));
        }
    }
    Ok(LogResult {
        digest: Digest(h.finalize().into()),
        seen: redactor.seen(),
        kept,
        dropped,
        error,
    })
}

/// Run one validated job; `stage_records` maps earlier pipeline stages to their records.
/// Its event stream (if any) gets `record-signed` and `run-ended` whatever the end.
pub fn run_spec(
    spec: &JobSpec,
    opts: &RunOptions,
    stage_records: &BTreeMap<String, PathBuf>,
) -> Result<RunSummary, RunError> {
    let events =
        crate::events::resolve(opts.events.as_ref(), spec.events.as_ref()).map_err(|e| {
            RunError::Usage {
                path: spec.events.clone().unwrap_or_default(),
                message: format!("cannot open the event stream: {e}"),
            }
        })?;
    let opts = RunOptions {
        events,
        ..opts.clone()
    };
    let invocation = opts.invocation.clone().unwrap_or_else(new_invocation_id);
    let r = run_checked(spec, &opts, stage_records, invocation.clone());
    let ev = Emitter::new(opts.events.as_ref(), &spec.name, &invocation);
    match &r {
        Ok(s) => ev.run_ended(s.status, &s.message, Some(&s.record)),
        Err(e) => ev.run_ended(e.exit_status(), &e.to_string(), None),
    }
    r
}

/// The run as an ordered sequence of phases:
///
/// 1. prepare: key, secrets, policy, rollback state, records folder (a problem is exit 64 and
///    no record), then the run's lock: from here on every end of the run is recorded;
/// 2. stage and verify the inputs, then the code; the rollback and stage policies;
/// 3. prepare the output folder and compile the sandbox plan;
/// 4. execute: `start` in the audit log, the job under the supervisor, its logs pumped;
/// 5. record: outputs taken back and attested, the record signed, `end` appended.
///
/// Phases 2 and 3 may refuse the run ([`Refusal`]): one path records and audits that, and
/// nothing runs.
fn run_checked(
    spec: &JobSpec,
    opts: &RunOptions,
    stage_records: &BTreeMap<String, PathBuf>,
    invocation: String,
) -> Result<RunSummary, RunError> {
    let p = prepare(spec, opts)?;
    let ctx = OpenRun::open(spec, &p.key, invocation)?;
    crate::recover::test_pause("planning");
    let ev = Emitter::new(opts.events.as_ref(), &spec.name, &ctx.invocation);
    ev.run_started(&spec.file, spec.inputs.len(), &spec.sandbox.profile);
    let mut inputs = Vec::new();
    match run_phases(&ctx, &p, opts, stage_records, &ev, &mut inputs) {
        Ok(summary) => Ok(summary),
        Err(Stop::Refused(r)) => ctx.refuse(&inputs, r),
        Err(Stop::Failed(e)) => Err(e),
    }
}

/// Phases 2 to 5 of [`run_checked`]; `inputs` gets each input as it is verified (a refusal
/// records those verified so far).
fn run_phases(
    ctx: &OpenRun,
    p: &Prepared,
    opts: &RunOptions,
    stage_records: &BTreeMap<String, PathBuf>,
    ev: &Emitter,
    inputs: &mut Vec<RecordedInput>,
) -> Result<RunSummary, Stop> {
    let spec = ctx.spec;
    if let Err(e) = &ctx.netns {
        let why = format!("job network: {e}");
        return Err(Refusal::refused(exit::SETUP_FAILED, "job_network", why).into());
    }
    // The TPM, as `[attestation] tpm` asks: `required` without one refuses the run here.
    crate::tpm::attest::open_into(&ctx.tpm, &spec.attestation, &p.policy)
        .map_err(|why| Refusal::refused(exit::SETUP_FAILED, "tpm", why))?;
    // 2. Stage every input and verify the staged copy; then the code and the policies.
    let mut staging = stage_inputs(ctx, p, stage_records, ev, inputs)?;
    crate::recover::test_pause("staging");
    check_rollback(spec, inputs)?;
    let code_digest = staging.stage_code(spec)?;
    check_stage_policy(spec, &p.policy, code_digest)?;
    // 3. The output folder (new or empty), and the sandbox plan compiled before anything runs.
    prepare_output(spec)?;
    let Planned {
        plan,
        pipes,
        internal,
        executable,
        _gpus: gpus,
    } = plan_sandbox(ctx, p, &mut staging)?;
    // Measure the plan into PCR 23 before the job runs.
    let measured = crate::tpm::attest::plan_of(
        &spec.file,
        plan.profile_sha256(),
        plan.bpf_sha256(),
        inputs
            .iter()
            .map(|i| (i.name.clone(), i.verified.digest.clone())),
        code_digest.map(|d| d.to_hex()),
    );
    crate::tpm::attest::measure_slot(&ctx.tpm, &ctx.invocation, &spec.trust, measured)
        .map_err(|why| Refusal::refused(exit::SETUP_FAILED, "tpm", why))?;
    // 4. Execute.
    let executed = execute(ctx, p, opts, ev, plan, pipes)?;
    // 5. Record.
    let done = Done {
        code_digest,
        executable,
        internal,
    };
    let summary = record(ctx, p, inputs, ev, executed, done)?;
    // The staged inputs and the GPU setup's files were bound into the sandbox: kept until now.
    drop((staging, gpus));
    Ok(summary)
}

/// What phase 1 read and checked.
struct Prepared {
    key: SigningKey,
    /// Read once each, into memory that is zeroed on drop.
    secrets: Vec<Secret>,
    python: Option<(
        sealrun_verifier::record::PythonEnvironment,
        Vec<sealrun_verifier::record::PythonPackage>,
    )>,
    /// The trust policy, with the spec's `admit` added.
    policy: Policy,
}

/// Phase 1: the key, the secrets, the job's Python, the policy, the rollback state and the
/// records folder (the spec is validated).
fn prepare(spec: &JobSpec, opts: &RunOptions) -> Result<Prepared, RunError> {
    let key = keyfile::load_signing_key(&spec.signing_key)?;
    // Secrets: read each once, into memory that is zeroed on drop, in a process
    // that cannot be core-dumped or traced by its peers.
    if !spec.secrets.is_empty() || spec.inputs.iter().any(|i| i.encrypted) {
        secrets::protect_process();
    }
    tracing::debug!(job = %spec.name, file = %spec.file.display(), "spec validated");
    let secrets: Vec<Secret> = spec
        .secrets
        .iter()
        .map(|s| {
            opts.secrets
                .as_ref()
                .map_or_else(|| Secret::load(s), |c| c.load(s))
        })
        .collect::<Result<_, _>>()?;
    let python = spec.sandbox.python.as_ref().map(python_facts).transpose()?;
    let mut policy = Policy::load(&spec.trust)?;
    for (k, v) in &spec.admit {
        policy
            .admit
            .entry(k.clone())
            .or_default()
            .extend(v.iter().cloned());
    }
    crate::rollback::prepare(
        &spec.rollback_state,
        &spec.audit_log,
        opts.init_rollback_state,
    )
    .map_err(|e| match e {
        // The audit log itself cannot be used: the same exit as any failed append (74).
        crate::rollback::StateError::Audit(e) => RunError::Audit(e),
        e => RunError::Usage {
            path: spec.rollback_state.clone(),
            message: e.to_string(),
        },
    })?;
    std::fs::create_dir_all(&spec.records).map_err(|e| RunError::Usage {
        path: spec.records.clone(),
        message: format!("cannot create the records folder: {e}"),
    })?;
    Ok(Prepared {
        key,
        secrets,
        python,
        policy,
    })
}

/// The run's private staging folder and what the sandbox binds from it.
struct StagedInputs {
    /// Held (and emptied on drop) until the run is recorded.
    stage: Staging,
    /// Read-only binds of the staged inputs and code, by descriptor.
    fd_binds: Vec<FdBind>,
    /// How each input got there (the record's `staging_inputs`).
    how: BTreeMap<String, &'static str>,
    /// The decrypted inputs' sealed tmpfs mounts, attached as they are (see [`crate::decrypt`]).
    attach: Vec<FdBind>,
    /// Their size, reserved out of the job's memory limit.
    reserved: u64,
}

/// Phase 2a: make the staging folder, then stage and verify each input in turn.
fn stage_inputs(
    ctx: &OpenRun,
    p: &Prepared,
    stage_records: &BTreeMap<String, PathBuf>,
    ev: &Emitter,
    inputs: &mut Vec<RecordedInput>,
) -> Result<StagedInputs, Stop> {
    let spec = ctx.spec;
    let stage_base = spec
        .records
        .parent()
        .unwrap_or(Path::new("."))
        .to_path_buf();
    // Not ours, shared or unsafe: refuse rather than stage where others can swap.
    let mut stage = Staging::create(&stage_base, &ctx.invocation)
        .map_err(|e| Refusal::refused(exit::SETUP_FAILED, "staging", format!("staging: {e}")))?;
    let store = crate::store::Store::for_spec(&spec.store)
        .map_err(|e| Refusal::refused(exit::SETUP_FAILED, "store", format!("store: {e}")))?;
    store.into_iter().for_each(|s| stage.use_store(s));
    crate::recover::test_pause("verifying");
    let mut staging = StagedInputs {
        stage,
        fd_binds: Vec::new(),
        how: BTreeMap::new(),
        attach: Vec::new(),
        reserved: 0,
    };
    let refused = |kind, message: String| Refusal::refused(exit::VERIFY_FAILED, kind, message);
    for input in &spec.inputs {
        let VerifiedInput {
            verified,
            proof,
            mut staged,
        } = match verify_input(input, &staging.stage, &p.policy, spec, stage_records) {
            Ok(v) => v,
            Err(e) => {
                let shown = crate::inputs::describe(&e, input, &staging.stage);
                ev.input_refused(&input.name, &input.path, &shown);
                return Err(refused(
                    e.kind(),
                    format!(
                        "input {:?} ({}): {shown}",
                        input.name,
                        sealrun_verifier::text::path(&input.path)
                    ),
                )
                .into());
            }
        };
        tracing::debug!(input = %input.name, digest = %verified.digest, signer = %verified.signer, "input verified");
        ev.input_verified(&input.name, &input.path, &verified);
        staging.how.insert(input.name.clone(), staged.how);
        let dest = input.mount.clone().into();
        let decryption = match staged.decrypted.take() {
            Some(d) => {
                let notes = crate::decrypt::attach(d, dest, &mut staging.attach);
                staging.reserved += notes.tmpfs_bytes;
                Some(notes)
            }
            None => {
                let fd = staging
                    .stage
                    .open_staged(&mut staged)
                    .map_err(|e| refused("staging", format!("input {:?}: {e}", input.name)))?;
                staging.fd_binds.push(FdBind { fd, dest });
                None
            }
        };
        inputs.push(RecordedInput {
            name: input.name.clone(),
            host_path: input.path.display().to_string(),
            mount: input.mount.clone(),
            verified,
            proof,
            decryption,
        });
    }
    Ok(staging)
}

impl StagedInputs {
    /// Phase 2c: copy the code folder (if any) into the staging folder and hash the copy;
    /// returns its manifest root digest.
    /// A code folder that cannot be copied (a symlink or special file in it, an unreadable
    /// file) refuses the run (`staging`, exit 70): it has a record, like every run that got
    /// this far.
    fn stage_code(&mut self, spec: &JobSpec) -> Result<Option<Digest>, Refusal> {
        let Some(code) = &spec.code else {
            return Ok(None);
        };
        let stage = &self.stage;
        let refuse = |e: &dyn std::fmt::Display| {
            let shown = stage.show(&e.to_string());
            Refusal::refused(
                exit::SETUP_FAILED,
                "staging",
                format!("code {}: {shown}", code.display()),
            )
        };
        let staged = stage
            .copy_tree(crate::staging::CODE_DIR, code)
            .map_err(|e| refuse(&e))?;
        let m =
            Manifest::build(&staged.path, &WalkOptions::default(), None).map_err(|e| refuse(&e))?;
        self.fd_binds.push(FdBind {
            fd: stage.open_bind(&staged.rel).map_err(|e| refuse(&e))?,
            dest: CODE_MOUNT.into(),
        });
        Ok(Some(m.root_digest()))
    }
}

/// Phase 2b: no input older than one an earlier run used (checked and recorded under the
/// audit log's lock).
fn check_rollback(spec: &JobSpec, inputs: &[RecordedInput]) -> Result<(), Stop> {
    match crate::rollback::check_and_record(&spec.rollback_state, &spec.audit_log, inputs) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(why)) => Err(Refusal::refused(exit::VERIFY_FAILED, "rollback", why).into()),
        Err(crate::rollback::StateError::Audit(e)) => Err(RunError::Audit(e).into()),
        Err(crate::rollback::StateError::State(e)) => Err(RunError::Usage {
            path: spec.rollback_state.clone(),
            message: e.to_string(),
        }
        .into()),
    }
}

/// Phase 2d: the stage policy: may this job (by name and code) produce what it declares?
fn check_stage_policy(
    spec: &JobSpec,
    policy: &Policy,
    code_digest: Option<Digest>,
) -> Result<(), Refusal> {
    let code_hex = code_digest.map(|d| d.to_hex());
    policy
        .check_stage(&spec.name, code_hex.as_deref(), spec.produces, None)
        .map_err(|e| Refusal::refused(exit::VERIFY_FAILED, "policy", format!("stage policy: {e}")))
}

/// Phase 3a: the output folder, new or empty, so that everything in it afterwards is the job's.
fn prepare_output(spec: &JobSpec) -> Result<(), RunError> {
    std::fs::create_dir_all(&spec.output).map_err(|e| RunError::Usage {
        path: spec.output.clone(),
        message: format!("cannot create output folder: {e}"),
    })?;
    let non_empty = std::fs::read_dir(&spec.output)
        .map(|mut d| d.next().is_some())
        .unwrap_or(true);
    if non_empty {
        return Err(RunError::Usage {
            path: spec.output.clone(),
            message: "output folder is not empty; every file in it is attested as the job's output, so give a new or empty folder".into(),
        });
    }
    Ok(())
}

/// The compiled sandbox plan, and what the record says of it.
struct Planned {
    plan: SandboxPlan,
    /// The read ends of the job's stdout and stderr.
    pipes: [OwnedFd; 2],
    /// The record's internalParameters.
    internal: InternalParameters,
    /// The command's executable as the sandbox will resolve it, and its digest.
    executable: Option<(String, Digest)>,
    /// The GPU setup, kept until the job has run: it owns the folder of the loader cache that
    /// the sandbox binds at `/etc/ld.so.cache`.
    _gpus: Option<crate::gpu::GpuSetup>,
}

/// The sandbox configuration of the job: command, environment, binds, tmpfs, limits,
/// secrets, its Python and GPUs are added by the caller.
fn sandbox_config(
    spec: &JobSpec,
    secrets: &[Secret],
    fd_binds: Vec<FdBind>,
    stdout: OwnedFd,
    stderr: OwnedFd,
) -> SandboxConfig {
    let mut config = SandboxConfig::new(spec.command.clone());
    config.env = spec
        .env
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    config.profile = ProfileRef::parse(&spec.sandbox.profile);
    config.ro_binds = spec
        .sandbox
        .ro
        .iter()
        .map(|(host, dest)| Bind {
            host: host.clone(),
            dest: dest.into(),
        })
        .collect();
    config.ro_fd_binds = fd_binds;
    config.rw_binds = vec![Bind {
        host: spec.output.clone(),
        dest: OUTPUT_MOUNT.into(),
    }];
    if let Some(size) = spec.sandbox.tmp_size {
        config.tmpfs.push(Tmpfs {
            dest: "/tmp".into(),
            size,
        });
    }
    if let Some(size) = spec.sandbox.shm {
        config.tmpfs.push(Tmpfs {
            dest: "/dev/shm".into(),
            size,
        });
    }
    config.memory = spec.sandbox.memory;
    config.pids = spec.sandbox.pids;
    config.cpus = spec.sandbox.cpus;
    config.timeout = spec.sandbox.timeout;
    config.fsize = Some(spec.sandbox.outputs.max_file_size);
    config.cwd = Some(OUTPUT_MOUNT.into());
    config.secrets = secrets
        .iter()
        .map(|s| sealrun_sandbox::config::SecretFile {
            dest: s.spec.path.clone().into(),
            data: zeroize::Zeroizing::new(s.expose().to_vec()),
            ttl: s.spec.ttl,
        })
        .collect();
    config.stdout = Stdio::Fd(stdout);
    config.stderr = Stdio::Fd(stderr);
    if let Some(venv) = &spec.sandbox.python {
        venv.apply(&mut config);
    }
    config
}

/// The record's internalParameters known before the plan is compiled.
fn internal_parameters(
    spec: &JobSpec,
    staging: &BTreeMap<String, &'static str>,
) -> InternalParameters {
    let sb = &spec.sandbox;
    InternalParameters {
        limits: Some(sealrun_verifier::record::Limits {
            memory_bytes: sb.memory,
            pids: sb.pids,
            timeout_s: sb.timeout.map(|t| t.as_secs_f64()),
            tmp_bytes: sb.tmp_size,
            shm_bytes: sb
                .shm
                .unwrap_or_else(|| sealrun_sandbox::plan::default_shm_size(sb.memory)),
            cpus: sb.cpus,
            max_file_bytes: sb.outputs.max_file_size,
            max_output_bytes: sb.outputs.max_output_size,
            max_output_files: sb.outputs.max_output_files,
            max_log_bytes: sb.outputs.max_log_size,
            post_run_timeout_s: sb.outputs.post_run_timeout.as_secs_f64(),
        }),
        staging: Some(crate::store::staging_summary(staging).into()),
        staging_inputs: Some(
            staging
                .iter()
                .map(|(k, v)| (k.clone(), v.to_string()))
                .collect(),
        ),
        ..crate::attest::launcher_internal()
    }
}

/// Phase 3b: compile the sandbox plan (profile, seccomp BPF, binds, GPUs resolved against
/// the host's CDI specs) before anything starts; a plan that does not compile refuses the run.
fn plan_sandbox(ctx: &OpenRun, p: &Prepared, staging: &mut StagedInputs) -> Result<Planned, Stop> {
    let spec = ctx.spec;
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let fd_binds = std::mem::take(&mut staging.fd_binds);
    let mut config = sandbox_config(spec, &p.secrets, fd_binds, out_w, err_w);
    // The decrypted inputs' tmpfs is charged to the launcher (which wrote it): reserved out of
    // the job's limit, so that the two together stay within it (see docs/confidential.md).
    config.attach = std::mem::take(&mut staging.attach);
    config.memory = crate::decrypt::job_memory(spec.sandbox.memory, staging.reserved);
    if let Some(r) = &ctx.rank {
        r.apply(&mut config.env);
    }
    let netns = ctx.netns.as_ref().ok().and_then(Option::as_ref);
    crate::slurm::apply_network(netns, &mut config)
        .map_err(|e| Refusal::refused(exit::SETUP_FAILED, "job_network", e))?;
    let venv_bin = spec.sandbox.python.as_ref().map(|v| v.bin());
    let executable = resolve_executable(&spec.command[0], venv_bin).and_then(|p| {
        sealrun_verifier::digest::hash_file(&p, u64::MAX)
            .ok()
            .map(|(_, d, _)| (p.display().to_string(), d))
    });
    let mut internal = internal_parameters(spec, &staging.how);
    let mut gpus = None;
    let planned = match spec.sandbox.gpus.as_ref().map(crate::gpu::prepare) {
        Some(Err(e)) => Err(format!("gpus: {e}")),
        g => {
            gpus = g.and_then(Result::ok);
            if let Some(g) = &mut gpus {
                g.apply(&mut config);
            }
            SandboxPlan::build(config).map_err(|e| e.to_string())
        }
    };
    let plan = match planned {
        Ok(p) => p,
        Err(e) => {
            let msg = format!("sandbox plan: {e}");
            return Err(Refusal {
                status: exit::SETUP_FAILED,
                result: format!("failed: {msg}"),
                message: format!("sandbox setup failed: {e}; nothing ran"),
                internal: Some(Box::new(internal)),
                kind: Some("sandbox_plan"),
            }
            .into());
        }
    };
    internal.profile = Some(plan.profile_name().into());
    internal.profile_sha256 = Some(plan.profile_sha256().into());
    internal.bpf_sha256 = Some(plan.bpf_sha256().into());
    internal.landlock_abi = Some(plan.landlock_abi());
    internal.job_host_uid = Some(plan.job_host_uid());
    if let Some(g) = &mut gpus {
        g.planned(&plan);
        internal.gpus = Some(g.access.clone());
    }
    tracing::debug!(
        profile = plan.profile_name(),
        bpf = plan.bpf_sha256(),
        landlock_abi = plan.landlock_abi(),
        job_uid = plan.job_host_uid(),
        secrets = ?p.secrets,
        "sandbox planned"
    );
    Ok(Planned {
        plan,
        pipes: [out_r, err_r],
        internal,
        executable,
        _gpus: gpus,
    })
}

/// What phase 4 saw.
struct Executed {
    /// The sandbox's outcome, or why it could not start.
    outcome: Result<sealrun_sandbox::Outcome, SandboxError>,
    /// stdout and stderr: the log file and what became of the stream.
    logs: [(PathBuf, LogResult); 2],
    interrupt: sealrun_verifier::record::Interrupt,
    /// When the secrets were delivered (their TTLs count from here).
    delivered_on: time::OffsetDateTime,
    job_ended: std::time::Instant,
    /// The secrets' redaction patterns.
    patterns: Arc<Patterns>,
    /// Hands the output folder back to the launcher's uid (when collected, or dropped).
    output: OutputOwner,
}

/// Phase 4: hand the output folder to the job's uid, put `start` in the audit log (before the
/// job runs), then run the job under the supervisor with its stdout and stderr pumped to the
/// log files, passing SIGINT/SIGTERM on.
fn execute(
    ctx: &OpenRun,
    p: &Prepared,
    opts: &RunOptions,
    ev: &Emitter,
    plan: SandboxPlan,
    pipes: [OwnedFd; 2],
) -> Result<Executed, RunError> {
    let spec = ctx.spec;
    let job_uid = plan.job_host_uid();
    std::os::unix::fs::lchown(&spec.output, Some(job_uid), Some(job_uid)).map_err(|e| {
        RunError::Usage {
            path: spec.output.clone(),
            message: format!("cannot hand the output folder to the job's uid {job_uid}: {e}"),
        }
    })?;
    // Whatever happens from here on, the outputs are taken back from the job's uid.
    let output = OutputOwner(Some(spec.output.clone()));
    audit::append(
        &spec.audit_log,
        &Event {
            event: "start",
            job: &spec.name,
            invocation: &ctx.invocation,
            record: None,
            evidence: None,
            outcome: "running".into(),
        },
        ctx.key,
    )?;
    ctx.lock.started();
    crate::recover::test_pause("started");
    let log_base = spec
        .records
        .join(format!("{}-{}", spec.name, &ctx.invocation[..12]));
    let stdout_log = PathBuf::from(format!("{}.stdout.log", log_base.display()));
    let stderr_log = PathBuf::from(format!("{}.stderr.log", log_base.display()));
    let delivered_on = time::OffsetDateTime::now_utc();
    for s in &p.secrets {
        let expires = rfc3339(delivered_on + s.spec.ttl);
        ev.secret_delivered(
            &s.spec.name,
            &s.spec.path,
            s.spec.ttl.as_secs_f64(),
            &expires,
        );
    }
    let patterns = Arc::new(Patterns::new(&p.secrets));
    let [out_r, err_r] = pipes;
    let pumps = [
        (out_r, stdout_log.clone(), false),
        (err_r, stderr_log.clone(), true),
    ];
    let mut interrupt = sealrun_verifier::record::Interrupt::default();
    let (outcome, [out_d, err_d]) = supervise(
        plan,
        pumps,
        opts.quiet,
        &patterns,
        spec.sandbox.outputs.max_log_size,
        &mut interrupt,
    )?;
    Ok(Executed {
        outcome,
        logs: [(stdout_log, out_d), (stderr_log, err_d)],
        interrupt,
        delivered_on,
        job_ended: std::time::Instant::now(),
        patterns,
        output,
    })
}

/// Start the sandbox and wait for it, pumping its stdout and stderr; the job gets the
/// SIGINT/SIGTERM we get (a second one, of either kind, kills the tree), noted in `interrupt`.
#[allow(clippy::type_complexity)]
fn supervise(
    plan: SandboxPlan,
    pumps: [(OwnedFd, PathBuf, bool); 2],
    quiet: bool,
    patterns: &Arc<Patterns>,
    max_log: u64,
    interrupt: &mut sealrun_verifier::record::Interrupt,
) -> Result<
    (
        Result<sealrun_sandbox::Outcome, SandboxError>,
        [LogResult; 2],
    ),
    ExecError,
> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(ExecError::Runtime)?;
    rt.block_on(async {
        let [(out_r, out_log, _), (err_r, err_log, _)] = pumps;
        let out_pump = tokio::spawn(pump(
            out_r,
            out_log,
            false,
            quiet,
            Redactor::with(patterns.clone()),
            max_log,
        ));
        let err_pump = tokio::spawn(pump(
            err_r,
            err_log,
            true,
            quiet,
            Redactor::with(patterns.clone()),
            max_log,
        ));
        // Caught from before the sandbox starts (see `crate::signals`).
        let mut signals = crate::signals::Forwarder::catch(crate::signals::RUN_SIGNALS)
            .map_err(ExecError::Signals)?;
        let started = tokio::task::spawn_blocking(move || plan.spawn()).await?;
        let outcome = match started {
            Err(e) => Err(e),
            Ok(handle) => signals.wait(handle, interrupt).await?,
        };
        let out_d = out_pump.await?.map_err(ExecError::Pump)?;
        let err_d = err_pump.await?.map_err(ExecError::Pump)?;
        Ok::<_, ExecError>((outcome, [out_d, err_d]))
    })
}

/// What phase 5 records besides what the job did.
struct Done {
    code_digest: Option<Digest>,
    executable: Option<(String, Digest)>,
    internal: InternalParameters,
}

/// Phase 5: take every output back from the job's uid and attest what can be; find the
/// leaks; then sign the record, write it and append `end`.
fn record(
    ctx: &OpenRun,
    p: &Prepared,
    inputs: &[RecordedInput],
    ev: &Emitter,
    executed: Executed,
    done: Done,
) -> Result<RunSummary, RunError> {
    let spec = ctx.spec;
    let Executed {
        mut outcome,
        logs: [(stdout_log, out_log), (stderr_log, err_log)],
        interrupt,
        delivered_on,
        job_ended,
        patterns,
        output,
    } = executed;
    let max_log = spec.sandbox.outputs.max_log_size;
    // Egress addresses are the job's text too: redacted, and a secret in one is a leak.
    let mut leaks: Vec<Leak> = match outcome.as_mut() {
        Ok(o) => redact_egress(o, &patterns),
        Err(_) => Vec::new(),
    };
    let mut logs = Vec::new();
    for (place, path, log) in [
        ("stdout", &stdout_log, out_log),
        ("stderr", &stderr_log, err_log),
    ] {
        leaks.extend(log.seen.iter().map(|secret| Leak {
            secret: secret.clone(),
            place: place.to_string(),
        }));
        let notes = log.annotations(max_log);
        logs.push((
            place.to_string(),
            path.display().to_string(),
            log.digest,
            notes,
        ));
    }
    // Outputs: take every entry back from the job's uid, then attest what can be.
    let bounds = &spec.sandbox.outputs;
    let limits = outputs::Limits {
        max_entries: bounds.max_output_files,
        max_bytes: bounds.max_output_size,
        deadline: job_ended + bounds.post_run_timeout,
    };
    crate::recover::test_pause("hashing");
    let collected = output.collect(&limits, &patterns);
    leaks.extend(collected.leaks.iter().cloned());
    let blocking: Vec<&Leak> = leaks
        .iter()
        .filter(|l| {
            p.secrets
                .iter()
                .any(|s| s.spec.name == l.secret && !s.spec.allow_leak)
        })
        .collect();
    ev.after_run(&crate::events::observed(
        outcome.as_ref().ok(),
        &leaks,
        &p.secrets,
        delivered_on,
        &logs,
        spec,
    ));

    let (status, result, message) = run_result(&outcome, &blocking, &collected.unattested);
    let outputs = &collected.outputs;
    let mut facts = ctx.facts(inputs, result.clone());
    facts.code_digest = done.code_digest;
    facts.executable = done.executable;
    facts.python = p.python.clone();
    facts.internal = done.internal;
    facts.outcome = outcome.as_ref().ok();
    facts.logs = logs;
    facts.outputs = Some(outputs);
    facts.extra_byproducts.extend(output_byproducts(&collected));
    facts
        .extra_byproducts
        .push(produced_byproduct(spec, inputs, outputs));
    if !p.secrets.is_empty() {
        let fingerprint_key = ctx.key.derive("secret-fingerprint");
        facts.extra_byproducts.push(secrets_byproduct(
            &p.secrets,
            &leaks,
            delivered_on,
            &fingerprint_key[..],
        ));
    }
    // Which signals the launcher got and passed on (the job's end says how it took them).
    let result = if interrupt.signals.is_empty() {
        result
    } else {
        facts.extra_byproducts.push(ResourceDescriptor::annotated(
            sealrun_verifier::record::INTERRUPT_BYPRODUCT,
            &interrupt,
        ));
        format!("{result} (interrupted: {})", interrupt.signals.join(", "))
    };
    crate::recover::test_pause("signing");
    let record = ctx.finish(facts, "end", result.clone())?;
    tracing::debug!(record = %record.display(), %result, "run recorded");
    // "failed: exited 3", not "failed: exited 3 (exited 3)".
    let message = if result.contains(&message) {
        result.clone()
    } else {
        format!("{result} ({message})")
    };
    Ok(RunSummary {
        status,
        message: format!(
            "{}; {} output file(s)",
            sealrun_verifier::text::one_line(&message),
            outputs.files.resources.len()
        ),
        record,
    })
}

/// What this run produced, as one artifact consumers can check against (byproduct `artifact`).
fn produced_byproduct(
    spec: &JobSpec,
    inputs: &[RecordedInput],
    outputs: &sealrun_verifier::outputs::Outputs,
) -> ResourceDescriptor {
    let input_labels: Vec<BTreeMap<String, String>> =
        inputs.iter().map(|i| i.verified.labels.clone()).collect();
    let produced = ProducedArtifact {
        kind: spec.produces,
        labels: labels::propagate(&input_labels, &spec.declassify),
        outputs_digest: outputs_digest(
            outputs
                .files
                .resources
                .iter()
                .map(|r| (r.path.as_str(), &r.digest)),
        )
        .to_hex(),
    };
    ResourceDescriptor::annotated(sealrun_verifier::record::ARTIFACT_BYPRODUCT, &produced)
}

/// The `secrets` byproduct: each secret delivered (never its value: an HMAC fingerprint under
/// a key derived from the signing key), and every leak found.
fn secrets_byproduct(
    secrets: &[Secret],
    leaks: &[Leak],
    delivered_on: time::OffsetDateTime,
    fingerprint_key: &[u8],
) -> ResourceDescriptor {
    use sealrun_verifier::record::{DeliveredSecret, SecretLeak, SecretsReport};
    let report = SecretsReport {
        secrets: secrets
            .iter()
            .map(|s| DeliveredSecret {
                name: s.spec.name.clone(),
                path: s.spec.path.clone(),
                ttl_s: s.spec.ttl.as_secs_f64(),
                delivery: "tmpfs".into(),
                delivered_on: rfc3339(delivered_on),
                expires_on: rfc3339(delivered_on + s.spec.ttl),
                fingerprint: s.fingerprint(fingerprint_key),
                allow_leak: s.spec.allow_leak,
            })
            .collect(),
        leaked: leaks
            .iter()
            .map(|l| SecretLeak {
                secret: l.secret.clone(),
                place: l.place.clone(),
            })
            .collect(),
    };
    ResourceDescriptor::annotated(sealrun_verifier::record::SECRETS_BYPRODUCT, &report)
}
