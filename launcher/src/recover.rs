//! Crash recovery: every run holds a lock on a run file while its launcher lives, and a run
//! whose launcher died is closed by the next `sealrun run` on the same audit log (or by
//! `sealrun recover`).
//!
//! Guarantees:
//! - Each run has a run file `AUDIT_LOG.runs/INVOCATION.lock` (0600) with the facts needed to
//!   close it (spec path and digest, recorded spec parameters, output, staging and record paths,
//!   the launcher's pid, uid, gid and cgroup, the start time); no secret value is ever in it. It
//!   is written to a temporary name, locked (`flock`, exclusive) and fsync'd before it is renamed
//!   into place, so a `.lock` file that can be locked by someone else belongs to a dead launcher.
//! - Alive or dead is told by the lock only, never by pids: a run whose file is locked is never
//!   touched. A recoverer locks the file (non-blocking) and checks it is still the file at that
//!   name (a finished run unlinks its file while holding the lock).
//! - A dead run that has a `start` entry and no `end` in the audit log gets: its remaining
//!   processes killed and its cgroups removed, its output folder handed back to the launcher's
//!   uid, whatever outputs exist hashed into a signed record (`result: aborted: launcher died`,
//!   the files listed as subjects but named unattested-by-the-job in the `aborted` byproduct,
//!   and no produced artifact, so no later run takes them as an input), its staging folder
//!   removed, and an `end` entry with outcome `aborted: launcher died` appended to the log. A
//!   record the dead launcher had already signed is kept and referenced, never replaced.
//! - A dead run without a `start` entry (it died while planning, verifying or staging) never
//!   ran: its staging folder and cgroups are removed; its output folder is handed back only if it
//!   is empty (nothing of the job's can be in it).
//! - A run file is removed only after its run is closed in the audit log.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};

use nix::fcntl::{Flock, FlockArg};
use sealrun_verifier::digest::Digest;
use sealrun_verifier::record;
use sealrun_verifier::record::{
    sign_record, BuildDefinition, BuildMetadata, Provenance, ResourceDescriptor, RunDetails,
    BUILD_TYPE, SPEC_SUBJECT_PREFIX,
};
use sealrun_verifier::rollback::write_atomic;
use sealrun_verifier::statement::Subject;
use serde::{Deserialize, Serialize};

use crate::audit::{self, Event};
use crate::spec::JobSpec;

/// The result (and audit outcome) of a run whose launcher died.
pub const ABORTED: &str = "aborted: launcher died";
/// The `end` outcome of a run the launcher left unclosed after it had signed its own record
/// (kept, and referenced by the entry).
pub const ABORTED_RECORD_KEPT: &str =
    "aborted: the launcher did not close the run (its own record is kept)";
/// The record byproduct that says a run was closed by recovery.
pub use sealrun_verifier::record::ABORTED_BYPRODUCT;
/// Largest run file read.
const MAX_RUN_FILE: u64 = 1 << 20;

/// Why recovery could not do something.
#[derive(Debug, thiserror::Error)]
pub enum RecoverError {
    #[error("run file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("run file {path}: cannot lock: {source}")]
    Lock {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("run file {path}: not a sealrun run file: {reason}")]
    Malformed { path: PathBuf, reason: String },
    #[error("signing key {path}: {message}")]
    Key { path: PathBuf, message: String },
    #[error(
        "records folder {path}: cannot write a record there ({source}); nothing ran: make it \
         writable by the launcher's user, or set `records =` in the spec to a folder that is"
    )]
    RecordsFolder {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write the record {path}: {source}")]
    Record {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Audit(#[from] audit::AuditWriteError),
    #[error("audit log {path}: {reason}")]
    Log { path: PathBuf, reason: String },
}

/// What a run file holds: everything needed to close the run, nothing secret.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunFile {
    pub version: u32,
    pub invocation: String,
    pub job: String,
    pub spec: PathBuf,
    pub spec_sha256: String,
    /// The spec as recorded (secret sources removed).
    pub external_parameters: serde_json::Value,
    pub builder_id: String,
    pub started_on: String,
    pub output: PathBuf,
    pub staging: PathBuf,
    pub record: PathBuf,
    pub logs: Vec<PathBuf>,
    pub audit_log: PathBuf,
    pub signing_key: PathBuf,
    pub launcher_pid: u32,
    pub launcher_uid: u32,
    pub launcher_gid: u32,
    /// The launcher's cgroup v2 path (`/proc/self/cgroup`, `0::` line), empty on v1.
    pub launcher_cgroup: String,
    /// Whether the job was given secrets (outputs of such a run are not named by recovery).
    pub had_secrets: bool,
    pub max_output_files: u64,
    pub max_output_size: u64,
    /// The Slurm task the run was (so a recovered rank still counts in `sealrun seal-job`, as
    /// failed); absent outside Slurm and in run files of earlier versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slurm: Option<sealrun_verifier::record::SlurmRank>,
}

/// Where the run files of runs on `audit_log` live: `AUDIT_LOG.runs/`.
pub fn runs_dir(audit_log: &Path) -> PathBuf {
    let mut s = audit_log.as_os_str().to_owned();
    s.push(".runs");
    PathBuf::from(s)
}

impl RunFile {
    /// The run file of a run of `spec` about to start.
    pub fn new(
        spec: &JobSpec,
        invocation: &str,
        started_on: &str,
        builder_id: &str,
        staging: &Path,
        record: &Path,
        slurm: Option<&sealrun_verifier::record::SlurmRank>,
    ) -> RunFile {
        let spec_bytes = std::fs::read(&spec.file).unwrap_or_default();
        let base = record.with_extension("");
        let log = |s: &str| PathBuf::from(format!("{}.{s}.log", base.display()));
        RunFile {
            version: 1,
            invocation: invocation.to_string(),
            job: spec.name.clone(),
            spec: spec.file.clone(),
            spec_sha256: Digest::of(&spec_bytes).to_hex(),
            external_parameters: crate::attest::external_parameters(spec),
            builder_id: builder_id.to_string(),
            started_on: started_on.to_string(),
            output: spec.output.clone(),
            staging: staging.to_path_buf(),
            record: record.to_path_buf(),
            logs: vec![log("stdout"), log("stderr")],
            audit_log: spec.audit_log.clone(),
            signing_key: spec.signing_key.clone(),
            launcher_pid: std::process::id(),
            launcher_uid: nix::unistd::geteuid().as_raw(),
            launcher_gid: nix::unistd::getegid().as_raw(),
            launcher_cgroup: own_cgroup_v2(),
            had_secrets: !spec.secrets.is_empty(),
            max_output_files: spec.sandbox.outputs.max_output_files,
            max_output_size: spec.sandbox.outputs.max_output_size,
            slurm: slurm.cloned(),
        }
    }
}

fn own_cgroup_v2() -> String {
    std::fs::read_to_string("/proc/self/cgroup")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("0::").map(|s| s.trim().to_string()))
        })
        .unwrap_or_default()
}

const OPEN: u8 = 0;
const STARTED: u8 = 1;
const CLOSED: u8 = 2;

/// The lock a live launcher holds on its run file. Dropped after the run is closed (or before
/// it started), the file is removed; dropped after a `start` entry with no `end` (the record or
/// the end entry could not be written), the file stays for recovery to close the run.
#[derive(Debug)]
pub struct RunLock {
    path: PathBuf,
    file: Option<Flock<File>>,
    state: AtomicU8,
}

impl RunLock {
    /// Write and lock the run file (see the module's guarantees).
    pub fn acquire(info: &RunFile) -> Result<RunLock, RecoverError> {
        let dir = runs_dir(&info.audit_log);
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| RecoverError::Io { path, source }
        };
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        let path = dir.join(format!("{}.lock", info.invocation));
        let tmp = dir.join(format!(".{}.tmp", info.invocation));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)
            .map_err(io(&tmp))?;
        let mut file =
            Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, source)| {
                RecoverError::Lock {
                    path: tmp.clone(),
                    source,
                }
            })?;
        let bytes = serde_json::to_vec_pretty(info).expect("a run file serializes");
        let written = file
            .write_all(&bytes)
            .and_then(|()| file.sync_all())
            .and_then(|()| std::fs::rename(&tmp, &path))
            .and_then(|()| File::open(&dir)?.sync_all());
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(RecoverError::Io { path, source: e });
        }
        Ok(RunLock {
            path,
            file: Some(file),
            state: AtomicU8::new(OPEN),
        })
    }

    /// The run's `start` entry is in the audit log.
    pub fn started(&self) {
        self.state.store(STARTED, Ordering::SeqCst);
    }

    /// The run's record and closing entry are in the audit log.
    pub fn closed(&self) {
        self.state.store(CLOSED, Ordering::SeqCst);
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        if self.state.load(Ordering::SeqCst) != STARTED {
            // Unlinked while still locked: a recoverer that opened it checks the name.
            let _ = std::fs::remove_file(&self.path);
        }
        drop(self.file.take());
    }
}

/// At the start of a run of `spec`: close the runs on its audit log whose launcher died (each
/// one reported on stderr; a failure to recover one does not stop this run), then write and
/// lock this run's file (`slurm`: the Slurm task the run is, if any).
pub fn lock_run(
    spec: &JobSpec,
    invocation: &str,
    started_on: &str,
    builder_id: &str,
    slurm: Option<&sealrun_verifier::record::SlurmRank>,
) -> Result<RunLock, RecoverError> {
    // The record names the launcher's digest: hash the binary while the run is planned.
    std::thread::spawn(crate::launcher_sha256);
    match recover_log(&spec.audit_log) {
        Ok(done) => {
            for r in done.iter().filter(|r| r.action != "alive") {
                eprintln!("sealrun: recover: {}", r.line());
            }
        }
        Err(e) => eprintln!("sealrun: recover: {e}"),
    }
    let staging = spec
        .records
        .parent()
        .unwrap_or(Path::new("."))
        .join(format!(".sealrun-stage-{invocation}"));
    let record = spec
        .records
        .join(format!("{}-{}.json", spec.name, &invocation[..12]));
    probe_records(&spec.records)?;
    RunLock::acquire(&RunFile::new(
        spec, invocation, started_on, builder_id, &staging, &record, slurm,
    ))
}

/// A record can be written in `records`: a probe file is made, fsync'd and removed there before
/// anything runs, so a folder the launcher cannot write (EACCES, EROFS, EIO) stops the run at
/// once instead of after the job's hours of work.
fn probe_records(records: &Path) -> Result<(), RecoverError> {
    let err = |source| RecoverError::RecordsFolder {
        path: records.to_path_buf(),
        source,
    };
    let probe = records.join(format!(".sealrun-probe-{}", std::process::id()));
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&probe)
        .map_err(err)?;
    let synced = f.sync_all();
    let removed = std::fs::remove_file(&probe);
    synced.and(removed).map_err(err)
}

/// Test hook, honoured in debug builds only (release builds compile it out): with
/// `SEALRUN_TEST_PAUSE_AT=PHASE` the launcher writes `sealrun: test pause at PHASE` to stderr
/// and waits there (at most 10 minutes), so a test can kill it at that phase. Phases, in
/// order: `planning`, `verifying`, `staging`, `started`, `hashing`, `signing`, `appending`.
pub fn test_pause(phase: &str) {
    #[cfg(debug_assertions)]
    if std::env::var_os("SEALRUN_TEST_PAUSE_AT").is_some_and(|p| p == phase) {
        eprintln!("sealrun: test pause at {phase}");
        std::thread::sleep(std::time::Duration::from_secs(600));
    }
    #[cfg(not(debug_assertions))]
    let _ = phase;
}

/// What recovery did with one run file.
#[derive(Debug, Clone, Serialize)]
pub struct Recovered {
    pub invocation: String,
    pub job: String,
    /// `aborted` (closed with a record), `closed` (already closed: only cleaned up),
    /// `never-started` (cleaned up), `alive` (left alone) or `failed` (see `message`).
    pub action: &'static str,
    pub record: Option<PathBuf>,
    pub message: String,
}

impl Recovered {
    /// One line for people: `INVOCATION (JOB): ACTION: MESSAGE`.
    pub fn line(&self) -> String {
        let record = self
            .record
            .as_ref()
            .map(|r| format!("; record {}", r.display()))
            .unwrap_or_default();
        sealrun_verifier::text::one_line(&format!(
            "run {} ({}): {}: {}{record}",
            self.invocation, self.job, self.action, self.message
        ))
    }
}

/// Close every run on `audit_log` whose launcher died; runs that are alive are left alone.
pub fn recover_log(audit_log: &Path) -> Result<Vec<Recovered>, RecoverError> {
    let dir = runs_dir(audit_log);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(RecoverError::Io { path: dir, source }),
    };
    let mut names: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "lock"))
        .collect();
    names.sort();
    let mut out = Vec::new();
    for path in names {
        let invocation = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        match recover_one(&path, audit_log) {
            Ok(Some(r)) => out.push(r),
            Ok(None) => {}
            Err(e) => out.push(Recovered {
                invocation,
                job: String::new(),
                action: "failed",
                record: None,
                message: e.to_string(),
            }),
        }
    }
    Ok(out)
}

/// Lock and read one run file; `None` when it vanished (its run just finished).
fn recover_one(path: &Path, audit_log: &Path) -> Result<Option<Recovered>, RecoverError> {
    let io = |source| RecoverError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(e)),
    };
    let mut file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(f) => f,
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
            let stem = path.file_stem().unwrap_or_default().to_string_lossy();
            return Ok(Some(Recovered {
                invocation: stem.into_owned(),
                job: String::new(),
                action: "alive",
                record: None,
                message: "its launcher holds the run's lock: left alone".into(),
            }));
        }
        Err((_, source)) => {
            return Err(RecoverError::Lock {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    // Still the file at that name? (A finishing run unlinks it while holding the lock.)
    let held = file.metadata().map_err(io)?;
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.dev() == held.dev() && m.ino() == held.ino() => {}
        _ => return Ok(None),
    }
    let mut bytes = Vec::new();
    (&mut *file)
        .take(MAX_RUN_FILE)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    let info: RunFile = serde_json::from_slice(&bytes).map_err(|e| RecoverError::Malformed {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    if info.audit_log != audit_log && !same_file(&info.audit_log, audit_log) {
        return Err(RecoverError::Malformed {
            path: path.to_path_buf(),
            reason: format!(
                "it names the audit log {}, not {}",
                info.audit_log.display(),
                audit_log.display()
            ),
        });
    }
    let r = close_dead(&info)?;
    // Closed in the log (or never started): the run file has done its work.
    std::fs::remove_file(path).map_err(io)?;
    drop(file);
    Ok(Some(r))
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

/// Where a run stands in the audit log.
#[derive(Debug, PartialEq, Eq)]
enum LogState {
    NotStarted,
    Started,
    Closed,
}

fn log_state(audit_log: &Path, invocation: &str) -> Result<LogState, RecoverError> {
    let err = |reason: String| RecoverError::Log {
        path: audit_log.to_path_buf(),
        reason,
    };
    let file = match File::open(audit_log) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(LogState::NotStarted),
        Err(e) => return Err(err(e.to_string())),
    };
    // Appends hold the exclusive lock: a shared one sees whole lines only.
    let mut file = Flock::lock(file, FlockArg::LockShared)
        .map_err(|(_, e)| err(format!("cannot lock: {e}")))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)
        .map_err(|e| err(e.to_string()))?;
    let entries = sealrun_verifier::audit::check_chain(&audit_log.display().to_string(), &bytes)
        .map_err(|e| err(e.to_string()))?;
    let mut state = LogState::NotStarted;
    for (e, _) in entries.iter().filter(|(e, _)| e.invocation == invocation) {
        match e.event.as_str() {
            "start" if state == LogState::NotStarted => state = LogState::Started,
            "end" | "refused" => state = LogState::Closed,
            _ => {}
        }
    }
    Ok(state)
}

/// Clean up after a dead run and, if it started, close it with a record and an `end` entry.
fn close_dead(info: &RunFile) -> Result<Recovered, RecoverError> {
    let state = log_state(&info.audit_log, &info.invocation)?;
    kill_and_remove_cgroups(info);
    let done = |action: &'static str, record: Option<PathBuf>, message: String| Recovered {
        invocation: info.invocation.clone(),
        job: info.job.clone(),
        action,
        record,
        message,
    };
    if state != LogState::Started {
        hand_back_if_empty(info);
        remove_staging(&info.staging);
        return Ok(match state {
            LogState::Closed => done(
                "closed",
                None,
                "already closed in the audit log; cleaned up".into(),
            ),
            _ => done(
                "never-started",
                None,
                "its launcher died before the job started; staging removed".into(),
            ),
        });
    }
    let found = crate::outputs::hand_back_only(&info.output, info.launcher_uid, info.launcher_gid);
    remove_staging(&info.staging);
    let key =
        crate::keyfile::load_signing_key(&info.signing_key).map_err(|e| RecoverError::Key {
            path: info.signing_key.clone(),
            message: e.to_string(),
        })?;
    // A record the launcher signed before it died is the run's own: kept.
    let (bytes, outcome) = match std::fs::read(&info.record) {
        Ok(b) if own_record(&b, &key, &info.invocation) => (b, ABORTED_RECORD_KEPT),
        _ => {
            let b = aborted_record(info, &key, found.count);
            write_atomic(&info.record, &b).map_err(|source| RecoverError::Record {
                path: info.record.clone(),
                source,
            })?;
            (b, ABORTED)
        }
    };
    audit::append(
        &info.audit_log,
        &Event {
            event: "end",
            job: &info.job,
            invocation: &info.invocation,
            record: Some(Digest::of(&bytes)),
            evidence: None,
            outcome: outcome.into(),
        },
        &key,
    )?;
    Ok(done(
        "aborted",
        Some(info.record.clone()),
        format!("closed as `{outcome}`"),
    ))
}

/// Whether `bytes` is a record signed by `key` for `invocation`.
fn own_record(bytes: &[u8], key: &sealrun_verifier::keys::SigningKey, invocation: &str) -> bool {
    let policy = sealrun_verifier::policy::Policy::single_key("launcher", key.public());
    sealrun_verifier::record::verify_record("record", bytes, &policy, None)
        .is_ok_and(|vr| vr.statement.predicate.run_details.metadata.invocation_id == invocation)
}

/// Hash what the job left (regular files under the output folder, as subjects) and sign the
/// aborted record. `unattested` entries could not be handed back or read.
fn aborted_record(
    info: &RunFile,
    key: &sealrun_verifier::keys::SigningKey,
    unattested: u64,
) -> Vec<u8> {
    let mut subjects = Vec::new();
    let mut note = record::AbortedNote {
        reason: "launcher died".into(),
        outputs: "unattested-by-the-job: found in the output folder after the launcher died; the job may not have finished writing them".into(),
        unreadable_entries: unattested,
        unattested: None,
    };
    if info.had_secrets {
        // Names and contents could hold a secret this process cannot load to redact.
        note.outputs = "not listed: the job had secrets, which recovery cannot load to redact names and contents".into();
    } else {
        let limits = crate::outputs::Limits {
            max_entries: info.max_output_files,
            max_bytes: info.max_output_size,
            deadline: std::time::Instant::now() + std::time::Duration::from_secs(15 * 60),
        };
        let patterns = std::sync::Arc::new(crate::secrets::Patterns::new(&[]));
        let c = crate::outputs::collect(
            &info.output,
            info.launcher_uid,
            info.launcher_gid,
            &limits,
            &patterns,
        );
        note.unattested = Some(c.unattested);
        subjects = c
            .outputs
            .files
            .resources
            .iter()
            .map(|r| Subject {
                name: r.path.clone(),
                digest: [("sha256".to_string(), r.digest.to_hex())].into(),
            })
            .collect();
    }
    if subjects.is_empty() {
        let file = info
            .spec
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "job.toml".into());
        subjects.push(Subject {
            name: format!("{SPEC_SUBJECT_PREFIX}{file}"),
            digest: [("sha256".to_string(), info.spec_sha256.clone())].into(),
        });
    }
    let end = record::End {
        result: ABORTED.into(),
        reason: "launcher died".into(),
        refusal: None,
        ran: None,
    };
    let mut byproducts = vec![
        ResourceDescriptor::annotated(record::END_BYPRODUCT, &end),
        ResourceDescriptor::annotated(ABORTED_BYPRODUCT, &note),
    ];
    for (name, path) in ["stdout", "stderr"].iter().zip(&info.logs) {
        if let Ok((_, d, _)) = sealrun_verifier::digest::hash_file(path, u64::MAX) {
            byproducts.push(ResourceDescriptor {
                name: Some((*name).into()),
                uri: Some(format!("file:{}", path.display())),
                digest: [("sha256".to_string(), d.to_hex())].into(),
                media_type: Some("text/plain".into()),
                ..ResourceDescriptor::annotated(
                    name,
                    &record::LogNotes::Recovered(record::RecoveredLog { complete: false }),
                )
            });
        }
    }
    let prov = Provenance {
        build_definition: BuildDefinition {
            build_type: BUILD_TYPE.to_string(),
            external_parameters: info.external_parameters.clone(),
            internal_parameters: record::to_annotations(&record::InternalParameters {
                recovered: Some(true),
                recovered_by_pid: Some(std::process::id()),
                slurm: info.slurm.clone(),
                ..crate::attest::launcher_internal()
            }),
            resolved_dependencies: Vec::new(),
        },
        run_details: RunDetails {
            builder: crate::attest::builder(info.builder_id.clone()),
            metadata: BuildMetadata {
                invocation_id: info.invocation.clone(),
                started_on: info.started_on.clone(),
                finished_on: crate::now_rfc3339(),
            },
            byproducts,
        },
    };
    sign_record(subjects, &prov, key).to_json()
}

fn remove_staging(staging: &Path) {
    // Staged files are 0444 and folders 0755: the owner (the launcher's uid) can remove them.
    if staging
        .file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with(".sealrun-stage-"))
    {
        let _ = std::fs::remove_dir_all(staging);
    }
}

/// Hand an empty output folder back (the launcher gives it to the job's uid just before the
/// `start` entry); a folder with anything in it is not the recoverer's to change.
fn hand_back_if_empty(info: &RunFile) {
    let empty = std::fs::read_dir(&info.output)
        .map(|mut d| d.next().is_none())
        .unwrap_or(false);
    if empty {
        let _ = std::os::unix::fs::lchown(
            &info.output,
            Some(info.launcher_uid),
            Some(info.launcher_gid),
        );
    }
}

/// The cgroups the sandbox made for the dead launcher (named after its pid): kill what is
/// left in them and remove them. Skipped if a process with that pid exists again (it may be
/// another launcher's: the sandbox's own stale-cgroup sweep removes them later).
fn kill_and_remove_cgroups(info: &RunFile) {
    let pid = info.launcher_pid;
    if Path::new(&format!("/proc/{pid}")).exists() {
        return;
    }
    let root = Path::new("/sys/fs/cgroup");
    let mut dirs = Vec::new();
    let prefix_v1 = format!("{pid}-");
    for ctl in ["memory", "pids", "cpu", "devices", "unified"] {
        push_matching(&root.join(ctl).join("sealrun"), &prefix_v1, &mut dirs);
    }
    let own = root.join(info.launcher_cgroup.trim_start_matches('/'));
    if !info.launcher_cgroup.is_empty() {
        push_matching(&own, &format!("sealrun-{pid}-"), &mut dirs);
    }
    for dir in &dirs {
        kill_tree(dir);
    }
    for dir in &dirs {
        remove_cgroup_tree(dir);
    }
}

fn push_matching(parent: &Path, prefix: &str, out: &mut Vec<PathBuf>) {
    if let Ok(entries) = std::fs::read_dir(parent) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with(prefix) {
                out.push(e.path());
            }
        }
    }
}

/// SIGKILL every process in the cgroup and its children, then wait (bounded) until it is empty.
fn kill_tree(dir: &Path) {
    let procs = |d: &Path| -> Vec<i32> {
        walkdir::WalkDir::new(d)
            .into_iter()
            .flatten()
            .filter(|e| e.file_type().is_dir())
            .filter_map(|e| std::fs::read_to_string(e.path().join("cgroup.procs")).ok())
            .flat_map(|t| {
                t.lines()
                    .filter_map(|l| l.trim().parse().ok())
                    .collect::<Vec<i32>>()
            })
            .collect()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let left = procs(dir);
        if left.is_empty() || std::time::Instant::now() > deadline {
            return;
        }
        for p in left {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(p),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

fn remove_cgroup_tree(dir: &Path) {
    let mut subdirs: Vec<PathBuf> = walkdir::WalkDir::new(dir)
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_dir())
        .map(|e| e.into_path())
        .collect();
    // Deepest first: a cgroup with children cannot be removed.
    subdirs.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for d in subdirs {
        let _ = std::fs::remove_dir(d);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(dir: &Path) -> RunFile {
        RunFile {
            version: 1,
            invocation: "0123456789abcdef0123456789abcdef".into(),
            job: "j".into(),
            spec: dir.join("job.toml"),
            spec_sha256: Digest::of(b"").to_hex(),
            external_parameters: serde_json::json!({}),
            builder_id: "b".into(),
            started_on: crate::now_rfc3339(),
            output: dir.join("out"),
            staging: dir.join(".sealrun-stage-x"),
            record: dir.join("records/j-0123456789ab.json"),
            logs: Vec::new(),
            audit_log: dir.join("audit.log"),
            signing_key: dir.join("k.key"),
            launcher_pid: std::process::id(),
            launcher_uid: 0,
            launcher_gid: 0,
            launcher_cgroup: String::new(),
            had_secrets: false,
            max_output_files: 10,
            max_output_size: 10,
            slurm: None,
        }
    }

    #[test]
    fn a_held_lock_is_left_alone_and_a_finished_one_is_removed() {
        let d = tempfile::tempdir().unwrap();
        let i = info(d.path());
        let lock = RunLock::acquire(&i).unwrap();
        let r = recover_log(&i.audit_log).unwrap();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].action, "alive", "{r:?}");
        assert!(runs_dir(&i.audit_log)
            .join(format!("{}.lock", i.invocation))
            .exists());
        lock.closed();
        drop(lock);
        assert!(recover_log(&i.audit_log).unwrap().is_empty());
        assert_eq!(
            std::fs::read_dir(runs_dir(&i.audit_log)).unwrap().count(),
            0
        );
    }

    #[test]
    fn a_started_run_that_failed_keeps_its_file_unlocked() {
        let d = tempfile::tempdir().unwrap();
        let i = info(d.path());
        let lock = RunLock::acquire(&i).unwrap();
        lock.started();
        drop(lock);
        let file = runs_dir(&i.audit_log).join(format!("{}.lock", i.invocation));
        assert!(file.exists());
        let f = File::open(&file).unwrap();
        assert!(Flock::lock(f, FlockArg::LockExclusiveNonblock).is_ok());
        // Not started in the log (there is none): cleaned up and removed.
        let r = recover_log(&i.audit_log).unwrap();
        assert_eq!(r[0].action, "never-started", "{r:?}");
        assert!(!file.exists());
    }
}
