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

use crate::record::VerifiedRecord;

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

fn str_of(v: &serde_json::Value, key: &str) -> Option<String> {
    v.get(key).and_then(|x| x.as_str()).map(String::from)
}

/// Denied calls minus the connects and sends already counted as egress.
fn denied_without_egress(sandbox: &serde_json::Value) -> (BTreeMap<String, u64>, Vec<String>) {
    let mut denied: BTreeMap<String, u64> = BTreeMap::new();
    for d in sandbox
        .get("denied_syscalls")
        .and_then(|v| v.as_array())
        .into_iter()
        .flatten()
    {
        if let Some(name) = str_of(d, "name") {
            *denied.entry(name).or_default() +=
                d.get("count").and_then(|c| c.as_u64()).unwrap_or(1);
        }
    }
    let mut egress = Vec::new();
    for e in sandbox
        .get("egress_attempts")
        .and_then(|v| v.as_array())
        .into_iter()
        .flatten()
    {
        let call = str_of(e, "syscall").unwrap_or_default();
        if let Some(n) = denied.get_mut(&call) {
            *n = n.saturating_sub(1);
        }
        egress.push(format!(
            "{} {}",
            call,
            str_of(e, "address").unwrap_or_else(|| "?".into())
        ));
    }
    denied.retain(|_, n| *n > 0);
    (denied, egress)
}

/// Summarise a run record (not a pipeline summary; see [`VerifiedRecord::is_pipeline`]).
pub fn of(r: &VerifiedRecord) -> RunInfo {
    let p = &r.statement.predicate;
    let annotations = |name: &str| {
        r.byproduct(name)
            .and_then(|b| b.annotations.clone())
            .unwrap_or(serde_json::Value::Null)
    };
    let end = annotations("end");
    let result = str_of(&end, "result").unwrap_or_else(|| "failed: no end".into());
    let (denied_syscalls, egress_attempts) = denied_without_egress(&annotations("sandbox"));
    let secret_leaks = annotations("secrets")
        .get("leaked")
        .and_then(|l| l.as_array())
        .map_or(0, Vec::len);
    let inputs = p
        .build_definition
        .resolved_dependencies
        .iter()
        .filter_map(|d| {
            let a = d.annotations.as_ref()?;
            a.get("proof")?;
            Some(InputInfo {
                name: d.name.clone().unwrap_or_default(),
                artifact: str_of(a, "artifact").unwrap_or_default(),
                kind: str_of(a, "kind").unwrap_or_default(),
                version: a.get("version").and_then(|v| v.as_u64()),
                signer: str_of(a, "signer").unwrap_or_default(),
                labels: a
                    .get("labels")
                    .and_then(|l| serde_json::from_value(l.clone()).ok())
                    .unwrap_or_default(),
                digest: d.digest.get("sha256").cloned().unwrap_or_default(),
            })
        })
        .collect();
    let internal = &p.build_definition.internal_parameters;
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
    RunInfo {
        job: r.job_name().to_string(),
        invocation: p.run_details.metadata.invocation_id.clone(),
        started: p.run_details.metadata.started_on.clone(),
        finished: p.run_details.metadata.finished_on.clone(),
        ending: Ending::of(&result),
        reason: str_of(&end, "reason").filter(|r| *r != result),
        exit_status: end.get("exit_status").and_then(|s| s.as_i64()),
        result,
        inputs,
        output: str_of(&p.build_definition.external_parameters, "output"),
        output_files,
        denied_syscalls,
        egress_attempts,
        secret_leaks,
        profile: str_of(internal, "profile"),
        limits: internal.get("limits").cloned().unwrap_or_default(),
        peak_memory_bytes: end.get("peak_memory_bytes").and_then(|v| v.as_u64()),
        wall_ms: end.get("wall_ms").and_then(|v| v.as_u64()),
    }
}
