//! The security event stream of `sealrun run --events FILE` (or the spec's
//! `events = "PATH"`; `-` is standard output): one JSON object per line, in
//! Elastic Common Schema (ECS) field names where ECS has them (`@timestamp`,
//! `event.kind`, `event.category`, `event.type`, `event.action`,
//! `event.outcome`, `host.name`, `process.pid`, `destination.address`) plus
//! `sealrun.*` (invocation, job, and what the event is about).
//!
//! Guarantees: every line is one complete JSON object written with one
//! `write` under a lock and flushed (and for a file, `fdatasync`ed) before the
//! launcher goes on, so a consumer tailing the file sees each event as it
//! happens and a crash loses at most the line being written; events carry
//! secret *names* only: values never reach this module (what it is given —
//! leak places, egress addresses — was redacted by the launcher first). A
//! stream that cannot be opened stops the run before anything runs (exit 64);
//! one that fails later is reported once on stderr and the run goes on (its
//! record and audit log are the authoritative account).
//!
//! The sandbox reports denied system calls, egress attempts and limits in its
//! outcome when the job ends; those events are written then, one per system
//! call name with its count (`event.action` `syscall-denied`), one per egress
//! attempt, one per limit hit.

use std::fmt;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use sealrun_verifier::artifact::Verified;
use sealrun_verifier::digest::Digest;
use serde::Serialize;

/// The ECS version the field names follow.
pub const ECS_VERSION: &str = "8.11.0";

/// Where events go: a file opened for appending, or standard output.
#[derive(Clone)]
pub struct Sink(Arc<Inner>);

struct Inner {
    out: Mutex<Out>,
    shown: String,
    host: String,
    failed: AtomicBool,
}

enum Out {
    Stdout,
    File(File),
}

impl fmt::Debug for Sink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "events::Sink({})", self.0.shown)
    }
}

impl Sink {
    /// Open `path` for appending (created mode 0600 if missing); `-` is standard output.
    pub fn open(path: &Path) -> std::io::Result<Sink> {
        let out = if path == Path::new("-") {
            Out::Stdout
        } else {
            use std::os::unix::fs::OpenOptionsExt;
            Out::File(
                std::fs::OpenOptions::new()
                    .append(true)
                    .create(true)
                    .mode(0o600)
                    .open(path)?,
            )
        };
        let host = nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_else(|_| "unknown-host".into());
        Ok(Sink(Arc::new(Inner {
            out: Mutex::new(out),
            shown: path.display().to_string(),
            host,
            failed: AtomicBool::new(false),
        })))
    }

    /// Write one line, flushed and synced; a failure is reported once on stderr.
    fn write(&self, line: &Line) {
        let mut bytes = serde_json::to_vec(line).expect("an event serializes");
        bytes.push(b'\n');
        let mut out = self.0.out.lock().unwrap_or_else(|p| p.into_inner());
        let r = match &mut *out {
            Out::Stdout => {
                let mut s = std::io::stdout().lock();
                s.write_all(&bytes).and_then(|_| s.flush())
            }
            Out::File(f) => f.write_all(&bytes).and_then(|_| f.sync_data()),
        };
        if let Err(e) = r {
            if !self.0.failed.swap(true, Ordering::Relaxed) {
                eprintln!(
                    "sealrun: warning: event stream {}: {e} (events from here on may be missing; the record and audit log are complete)",
                    self.0.shown
                );
            }
        }
    }
}

/// `event.action`: what happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    RunStarted,
    InputVerified,
    InputRefused,
    SecretDelivered,
    SecretExpired,
    SecretRemoved,
    SecretLeaked,
    SyscallDenied,
    EgressAttempt,
    LimitHit,
    RunEnded,
    RecordSigned,
}

/// `event.outcome`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Success,
    Failure,
    Unknown,
}

/// The ECS `event` object.
#[derive(Debug, Serialize)]
pub struct EventFields {
    /// `event` or (for something a SOC should look at) `alert`.
    pub kind: &'static str,
    pub category: &'static [&'static str],
    #[serde(rename = "type")]
    pub kind_of: &'static [&'static str],
    pub action: Action,
    pub outcome: Outcome,
    pub module: &'static str,
    pub dataset: &'static str,
}

impl EventFields {
    fn new(action: Action, outcome: Outcome) -> EventFields {
        use Action::*;
        let (kind, category, kind_of): (_, &'static [&'static str], &'static [&'static str]) =
            match action {
                RunStarted => ("event", &["process"], &["start"]),
                RunEnded => ("event", &["process"], &["end"]),
                InputVerified => ("event", &["file"], &["access", "allowed"]),
                InputRefused => ("alert", &["file"], &["access", "denied"]),
                SecretDelivered => ("event", &["file"], &["creation"]),
                SecretExpired | SecretRemoved => ("event", &["file"], &["deletion"]),
                SecretLeaked => ("alert", &["intrusion_detection"], &["info"]),
                SyscallDenied => ("alert", &["intrusion_detection", "process"], &["denied"]),
                EgressAttempt => (
                    "alert",
                    &["intrusion_detection", "network"],
                    &["connection", "denied"],
                ),
                LimitHit => ("event", &["process"], &["info"]),
                RecordSigned => ("event", &["file"], &["creation"]),
            };
        EventFields {
            kind,
            category,
            kind_of,
            action,
            outcome,
            module: "sealrun",
            dataset: "sealrun.run",
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Ecs {
    pub version: &'static str,
}

#[derive(Debug, Serialize)]
pub struct Host<'a> {
    pub name: &'a str,
}

#[derive(Debug, Serialize)]
pub struct Process {
    pub pid: u32,
    pub name: &'static str,
}

/// ECS `destination` (egress attempts).
#[derive(Debug, Serialize)]
pub struct Destination {
    pub address: String,
}

/// One line of the stream.
#[derive(Debug, Serialize)]
pub struct Line<'a> {
    #[serde(rename = "@timestamp")]
    pub timestamp: String,
    pub ecs: Ecs,
    pub message: String,
    pub event: EventFields,
    pub host: Host<'a>,
    pub process: Process,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destination: Option<Destination>,
    pub sealrun: Fields<'a>,
}

/// `sealrun.*`: the run, and what the event is about.
#[derive(Debug, Serialize)]
pub struct Fields<'a> {
    pub invocation: &'a str,
    pub job: &'a str,
    #[serde(flatten)]
    pub detail: Detail,
}

/// What an event is about (`sealrun.input`, `sealrun.secret`, ...).
#[derive(Debug, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Detail {
    Run(RunInfo),
    Input(InputInfo),
    Secret(SecretInfo),
    Syscall(SyscallInfo),
    Egress(EgressInfo),
    Limit(LimitInfo),
    Record(RecordInfo),
}

#[derive(Debug, Default, Serialize)]
pub struct RunInfo {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spec: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inputs: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_status: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record: Option<RecordInfo>,
}

#[derive(Debug, Default, Serialize)]
pub struct InputInfo {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The artifact's signed name (or the producer stage's job name).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub artifact: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// `sha256:` root digest (signed input) or outputs digest (record input).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signer: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keyid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub labels: Option<std::collections::BTreeMap<String, String>>,
    /// `sealrun`, `model-signing` or `sealrun-record`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Default, Serialize)]
pub struct SecretInfo {
    /// The secret's name in the spec (never its value).
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_on: Option<String>,
    /// Where it leaked (`stdout`, `output:PATH`, `egress:ADDRESS`), redacted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub place: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct SyscallInfo {
    pub name: String,
    pub count: u64,
}

#[derive(Debug, Serialize)]
pub struct EgressInfo {
    pub syscall: String,
    pub family: String,
    pub address: String,
}

#[derive(Debug, Serialize)]
pub struct LimitInfo {
    /// `timeout`, `memory`, `pids`, `max_log_size`.
    pub name: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<serde_json::Value>,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct RecordInfo {
    pub path: String,
    /// `sha256:HEX` of the record file.
    pub digest: String,
}

/// Emits the events of one run (no-op without a sink).
pub struct Emitter<'a> {
    sink: Option<&'a Sink>,
    job: &'a str,
    invocation: &'a str,
}

fn now() -> String {
    use time::format_description::well_known::Rfc3339;
    let t = time::OffsetDateTime::now_utc();
    let t = t
        .replace_nanosecond(t.millisecond() as u32 * 1_000_000)
        .unwrap_or(t);
    t.format(&Rfc3339).unwrap_or_default()
}

/// What the sandbox and the launcher observed once the job ended.
#[derive(Debug, Default)]
pub struct AfterRun<'a> {
    pub outcome: Option<&'a sealrun_sandbox::Outcome>,
    /// Every leak (already redacted places).
    pub leaks: Vec<(String, String)>,
    /// Each secret: name and when its TTL ends (RFC 3339), and whether that has passed.
    pub secrets: Vec<(String, String, bool)>,
    /// Logs truncated: stream, bytes dropped, the limit.
    pub logs_truncated: Vec<(String, u64, u64)>,
    pub timeout_s: Option<f64>,
    pub memory: Option<u64>,
    pub pids: Option<u64>,
}

impl<'a> Emitter<'a> {
    pub fn new(sink: Option<&'a Sink>, job: &'a str, invocation: &'a str) -> Emitter<'a> {
        Emitter {
            sink,
            job,
            invocation,
        }
    }

    fn emit(
        &self,
        action: Action,
        outcome: Outcome,
        message: String,
        detail: Detail,
        destination: Option<Destination>,
    ) {
        let Some(sink) = self.sink else { return };
        sink.write(&Line {
            timestamp: now(),
            ecs: Ecs {
                version: ECS_VERSION,
            },
            message: sealrun_verifier::text::one_line(&message),
            event: EventFields::new(action, outcome),
            host: Host { name: &sink.0.host },
            process: Process {
                pid: std::process::id(),
                name: "sealrun",
            },
            destination,
            sealrun: Fields {
                invocation: self.invocation,
                job: self.job,
                detail,
            },
        });
    }

    /// The run was planned and starts verifying its inputs.
    pub fn run_started(&self, spec: &Path, inputs: usize, profile: &str) {
        let info = RunInfo {
            spec: Some(spec.display().to_string()),
            inputs: Some(inputs),
            profile: Some(profile.to_string()),
            ..Default::default()
        };
        let msg = format!("run of job {:?} started ({inputs} input(s))", self.job);
        self.emit(
            Action::RunStarted,
            Outcome::Unknown,
            msg,
            Detail::Run(info),
            None,
        );
    }

    /// An input verified: its artifact, signer and labels.
    pub fn input_verified(&self, name: &str, path: &Path, v: &Verified) {
        let info = InputInfo {
            name: name.to_string(),
            path: Some(path.display().to_string()),
            artifact: Some(v.name.clone()),
            kind: Some(v.kind.to_string()),
            digest: Some(format!("sha256:{}", v.digest)),
            signer: Some(v.signer.clone()),
            keyid: Some(v.keyid.clone()),
            labels: Some(v.labels.clone()),
            format: Some(v.format.to_string()),
            reason: None,
        };
        let msg = format!(
            "input {name:?}: {} {:?} sha256:{} verified, signed by {:?}",
            v.kind, v.name, v.digest, v.signer
        );
        self.emit(
            Action::InputVerified,
            Outcome::Success,
            msg,
            Detail::Input(info),
            None,
        );
    }

    /// An input was refused (the run stops; nothing runs).
    pub fn input_refused(&self, name: &str, path: &Path, reason: &str) {
        let info = InputInfo {
            name: name.to_string(),
            path: Some(path.display().to_string()),
            reason: Some(reason.to_string()),
            ..Default::default()
        };
        let msg = format!("input {name:?} refused: {reason}");
        self.emit(
            Action::InputRefused,
            Outcome::Failure,
            msg,
            Detail::Input(info),
            None,
        );
    }

    /// A secret was handed to the job (name, path, TTL; never the value).
    pub fn secret_delivered(&self, name: &str, path: &str, ttl_s: f64, expires_on: &str) {
        let info = SecretInfo {
            name: name.to_string(),
            path: Some(path.to_string()),
            ttl_s: Some(ttl_s),
            expires_on: Some(expires_on.to_string()),
            place: None,
        };
        let msg = format!("secret {name:?} delivered at {path} for {ttl_s}s");
        self.emit(
            Action::SecretDelivered,
            Outcome::Success,
            msg,
            Detail::Secret(info),
            None,
        );
    }

    /// Everything the end of the job revealed: limits, denied calls, egress, secrets.
    pub fn after_run(&self, a: &AfterRun) {
        if let Some(o) = a.outcome {
            self.limits(o, a);
            for d in &o.denied_syscalls {
                let msg = format!(
                    "the job attempted the denied system call {} ({} time(s))",
                    d.name, d.count
                );
                let info = SyscallInfo {
                    name: d.name.clone(),
                    count: d.count,
                };
                self.emit(
                    Action::SyscallDenied,
                    Outcome::Failure,
                    msg,
                    Detail::Syscall(info),
                    None,
                );
            }
            for e in &o.egress_attempts {
                let msg = format!(
                    "the job attempted egress to {} ({} {}); refused",
                    e.address, e.family, e.syscall
                );
                let info = EgressInfo {
                    syscall: e.syscall.clone(),
                    family: e.family.clone(),
                    address: e.address.clone(),
                };
                let dest = Destination {
                    address: e.address.clone(),
                };
                self.emit(
                    Action::EgressAttempt,
                    Outcome::Failure,
                    msg,
                    Detail::Egress(info),
                    Some(dest),
                );
            }
        }
        for (stream, dropped, limit) in &a.logs_truncated {
            let msg = format!("{stream} log truncated at {limit} bytes ({dropped} bytes dropped)");
            self.limit("max_log_size", Some((*limit).into()), msg);
        }
        for (name, expires_on, passed) in &a.secrets {
            let (action, msg) = if *passed {
                (
                    Action::SecretExpired,
                    format!("secret {name:?} expired at {expires_on} (its file was removed then)"),
                )
            } else {
                (
                    Action::SecretRemoved,
                    format!(
                        "secret {name:?} removed with the sandbox before its TTL ({expires_on})"
                    ),
                )
            };
            let info = SecretInfo {
                name: name.clone(),
                expires_on: Some(expires_on.clone()),
                ..Default::default()
            };
            self.emit(action, Outcome::Success, msg, Detail::Secret(info), None);
        }
        for (name, place) in &a.leaks {
            let msg = format!("secret {name:?} leaked in {place}");
            let info = SecretInfo {
                name: name.clone(),
                place: Some(place.clone()),
                ..Default::default()
            };
            self.emit(
                Action::SecretLeaked,
                Outcome::Failure,
                msg,
                Detail::Secret(info),
                None,
            );
        }
    }

    fn limits(&self, o: &sealrun_sandbox::Outcome, a: &AfterRun) {
        use sealrun_sandbox::EndReason;
        match &o.end {
            EndReason::Timeout => self.limit(
                "timeout",
                a.timeout_s.map(Into::into),
                "the job ran past its timeout; the whole tree was killed".into(),
            ),
            EndReason::OomKilled => self.limit(
                "memory",
                a.memory.map(Into::into),
                "the job was killed by the memory limit".into(),
            ),
            EndReason::PidsLimit { status } => self.limit(
                "pids",
                a.pids.map(Into::into),
                format!("a fork was refused by the pids limit; the job ended with status {status}"),
            ),
            _ => {}
        }
    }

    fn limit(&self, name: &'static str, value: Option<serde_json::Value>, detail: String) {
        let msg = format!("limit {name} hit: {detail}");
        let info = LimitInfo {
            name,
            value,
            detail,
        };
        self.emit(
            Action::LimitHit,
            Outcome::Failure,
            msg,
            Detail::Limit(info),
            None,
        );
    }

    /// The record was signed and written, and the run ended (`status` is
    /// what `sealrun run` exits with); `record` is `None` when the run
    /// stopped with an error before a record could be written.
    pub fn run_ended(&self, status: u8, message: &str, record: Option<&Path>) {
        let record = record.map(|p| RecordInfo {
            path: p.display().to_string(),
            digest: std::fs::read(p)
                .map(|b| format!("sha256:{}", Digest::of(&b).to_hex()))
                .unwrap_or_default(),
        });
        if let Some(r) = &record {
            let msg = format!("run record {} signed ({})", r.path, r.digest);
            self.emit(
                Action::RecordSigned,
                Outcome::Success,
                msg,
                Detail::Record(r.clone()),
                None,
            );
        }
        let info = RunInfo {
            result: Some(message.to_string()),
            exit_status: Some(status),
            record,
            ..Default::default()
        };
        let outcome = if status == 0 {
            Outcome::Success
        } else {
            Outcome::Failure
        };
        let msg = format!("run ended with status {status}: {message}");
        self.emit(Action::RunEnded, outcome, msg, Detail::Run(info), None);
    }
}

/// What to report once the job ended, from what the launcher gathered: the
/// sandbox's outcome, the leaks (places already redacted), each secret's TTL
/// against now, the logs' truncation notes and the spec's limits.
pub fn observed<'a>(
    outcome: Option<&'a sealrun_sandbox::Outcome>,
    leaks: &[crate::secrets::Leak],
    secrets: &[crate::secrets::Secret],
    delivered_on: time::OffsetDateTime,
    logs: &[(String, String, Digest, sealrun_verifier::record::RunLog)],
    spec: &crate::spec::JobSpec,
) -> AfterRun<'a> {
    let now = time::OffsetDateTime::now_utc();
    let rfc = sealrun_verifier::text::rfc3339;
    AfterRun {
        outcome,
        leaks: leaks
            .iter()
            .map(|l| (l.secret.clone(), l.place.clone()))
            .collect(),
        secrets: secrets
            .iter()
            .map(|s| {
                let ends = delivered_on + s.spec.ttl;
                (s.spec.name.clone(), rfc(ends), ends <= now)
            })
            .collect(),
        logs_truncated: logs
            .iter()
            .filter(|(_, _, _, notes)| notes.dropped_bytes > 0)
            .map(|(place, _, _, notes)| (place.clone(), notes.dropped_bytes, notes.max_log_size))
            .collect(),
        timeout_s: spec.sandbox.timeout.map(|t| t.as_secs_f64()),
        memory: spec.sandbox.memory,
        pids: spec.sandbox.pids,
    }
}

/// Resolve the event stream of a run: `--events` (already open) wins, then
/// the spec's `events`; `None` when neither is set.
pub fn resolve(
    given: Option<&Sink>,
    spec_events: Option<&PathBuf>,
) -> std::io::Result<Option<Sink>> {
    match (given, spec_events) {
        (Some(s), _) => Ok(Some(s.clone())),
        (None, Some(p)) => Sink::open(p).map(Some),
        (None, None) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_ecs_json_and_each_is_one_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ev.jsonl");
        let sink = Sink::open(&path).unwrap();
        let em = Emitter::new(Some(&sink), "train", "abc");
        em.run_started(Path::new("job.toml"), 2, "python");
        em.input_refused("points", Path::new("data\nx"), "digest\nmismatch");
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        let v: serde_json::Value = serde_json::from_str(lines[1]).unwrap();
        assert_eq!(v["event"]["action"], "input-refused");
        assert_eq!(v["event"]["outcome"], "failure");
        assert_eq!(v["event"]["kind"], "alert");
        assert_eq!(v["sealrun"]["job"], "train");
        assert_eq!(v["sealrun"]["input"]["reason"], "digest\nmismatch");
        assert_eq!(v["process"]["pid"], std::process::id());
        assert!(v["@timestamp"].as_str().unwrap().ends_with('Z'));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
