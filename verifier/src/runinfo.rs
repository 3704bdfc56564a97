//! One run as people read it: what a record says about its end, inputs,
//! outputs and sandbox events, with each event counted once.
//!
//! Guarantees: a refused `connect`/`sendto` is counted as an egress attempt and
//! not also as a denied system call (the sandbox reports it in both lists); the
//! summary is read from the record alone, so the same record always gives the
//! same summary. This module does not verify anything: callers that must trust
//! the record verify it first (`record::verify_record`).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::record::{ExternalParameters, Record, SandboxReport};

/// How a run ended, by the first word of its record's `result`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Ending {
    Succeeded,
    Failed,
    Refused,
}

impl Ending {
    /// `SUCCEEDED`, `FAILED` or `REFUSED`: the first word of a verifier's report.
    pub fn word(self) -> &'static str {
        match self {
            Ending::Succeeded => "SUCCEEDED",
            Ending::Failed => "FAILED",
            Ending::Refused => "REFUSED",
        }
    }

    /// The ending a `result` text names (anything unknown counts as failed).
    pub fn of(result: &str) -> Ending {
        if result == "succeeded" {
            Ending::Succeeded
        } else if result.starts_with("refused") {
            Ending::Refused
        } else {
            Ending::Failed
        }
    }
}

/// One input of a run.
#[derive(Clone, Debug, Serialize)]
pub struct InputInfo {
    pub name: String,
    pub artifact: String,
    pub kind: String,
    pub version: Option<u64>,
    pub signer: String,
    pub labels: BTreeMap<String, String>,
    pub digest: String,
}

/// A run, summarised from its record.
#[derive(Clone, Debug, Serialize)]
pub struct RunInfo {
    pub job: String,
    pub invocation: String,
    pub started: String,
    pub finished: String,
    pub ending: Ending,
    /// The record's `result` (`succeeded`, `failed: …`, `refused: …`).
    pub result: String,
    /// How the job ended (`exited 0`, `timeout`, …), if it ran.
    pub reason: Option<String>,
    pub exit_status: Option<i64>,
    pub inputs: Vec<InputInfo>,
    /// The output folder as the spec gave it (placeholders expanded).
    pub output: Option<String>,
    /// Output files attested as subjects.
    pub output_files: usize,
    /// Denied system calls by name, refused connects and sends not included.
    pub denied_syscalls: BTreeMap<String, u64>,
    pub egress_attempts: Vec<String>,
    pub secret_leaks: usize,
    pub profile: Option<String>,
    pub limits: serde_json::Value,
    /// Peak memory and wall time, if the job ran.
    pub peak_memory_bytes: Option<u64>,
    pub wall_ms: Option<u64>,
}

impl RunInfo {
    /// Total denied system calls (each attempt once).
    pub fn denied_total(&self) -> u64 {
        self.denied_syscalls.values().sum()
    }
}

/// Denied calls minus the connects and sends already counted as egress.
fn denied_without_egress(sandbox: Option<&SandboxReport>) -> (BTreeMap<String, u64>, Vec<String>) {
    let mut denied: BTreeMap<String, u64> = BTreeMap::new();
    let mut egress = Vec::new();
    let Some(sandbox) = sandbox else {
        return (denied, egress);
    };
    for d in &sandbox.denied_syscalls {
        *denied.entry(d.name.clone()).or_default() += d.count;
    }
    for e in &sandbox.egress_attempts {
        if let Some(n) = denied.get_mut(&e.syscall) {
            *n = n.saturating_sub(1);
        }
        egress.push(format!("{} {}", e.syscall, e.address));
    }
    denied.retain(|_, n| *n > 0);
    (denied, egress)
}

/// Summarise a run record (not a pipeline summary; see [`VerifiedRecord::is_pipeline`]).
pub fn of(r: &Record) -> RunInfo {
    let p = &r.statement.predicate;
    let c = &r.contents;
    let end = &c.end;
    let result = end.result.clone();
    let (denied_syscalls, egress_attempts) = denied_without_egress(c.sandbox.as_ref());
    let secret_leaks = c.secrets.as_ref().map_or(0, |s| s.leaked.len());
    let inputs = c
        .inputs()
        .map(|(d, a)| InputInfo {
            name: d.name().to_string(),
            artifact: a.artifact.clone(),
            kind: a.kind.to_string(),
            version: a.version,
            signer: a.signer.clone(),
            labels: a.labels.clone(),
            digest: d.sha256().to_string(),
        })
        .collect();
    let internal = &c.internal;
    let output_files = r
        .output_summary()
        .map(|s| s.files as usize)
        .unwrap_or_else(|| {
            r.statement
                .subject
                .iter()
                .filter(|s| !s.name.starts_with(crate::record::SPEC_SUBJECT_PREFIX))
                .count()
        });
    let ran = end.ran.as_ref();
    RunInfo {
        job: r.job_name().to_string(),
        invocation: p.run_details.metadata.invocation_id.clone(),
        started: p.run_details.metadata.started_on.clone(),
        finished: p.run_details.metadata.finished_on.clone(),
        ending: Ending::of(&result),
        reason: Some(end.reason.clone()).filter(|r| *r != result),
        exit_status: ran.map(|r| r.exit_status),
        result,
        inputs,
        output: match &c.external {
            ExternalParameters::Run(e) => e.output.clone(),
            ExternalParameters::Pipeline(_) | ExternalParameters::Job(_) => None,
        },
        output_files,
        denied_syscalls,
        egress_attempts,
        secret_leaks,
        profile: internal.profile.clone(),
        limits: internal
            .limits
            .as_ref()
            .and_then(|l| serde_json::to_value(l).ok())
            .unwrap_or_default(),
        peak_memory_bytes: ran.map(|r| r.peak_memory_bytes),
        wall_ms: ran.map(|r| r.wall_ms),
    }
}
