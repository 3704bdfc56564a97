//! The summary `sealrun run` prints when a run ends: result, exit status,
//! outputs, the record (for a pipeline, each stage's record and which one to
//! hand to `chain`, `aibom` and `gate`), and the sandbox's events, each counted
//! once — as text, or as one JSON object (`--json`).
//!
//! Guarantees: the summary is read back from the signed record(s) the run just
//! wrote (through [`sealrun_verifier::runinfo`]), so it says what the record
//! says; a refused connect is an egress attempt, not also a denied syscall.

use std::path::{Path, PathBuf};

use sealrun_verifier::record::parse_unverified;
use sealrun_verifier::runinfo::{self, Ending, RunInfo};
use serde::Serialize;

use crate::run::RunSummary;

/// One stage (or the one job) of a run.
#[derive(Debug, Serialize)]
pub struct StageReport {
    pub name: String,
    pub record: PathBuf,
    pub run: RunInfo,
}

/// What `sealrun run` reports at the end.
#[derive(Debug, Serialize)]
pub struct Report {
    pub ok: bool,
    pub status: u8,
    pub spec: PathBuf,
    /// `succeeded`, `failed` or `refused`.
    pub result: Ending,
    pub message: String,
    /// The record written: the job's, or the pipeline's summary record.
    pub record: PathBuf,
    pub pipeline: bool,
    /// The record to hand to `sealrun-verify chain` and `aibom` (a pipeline's last stage).
    pub hand_over: PathBuf,
    pub stages: Vec<StageReport>,
    pub denied_syscalls: u64,
    pub egress_attempts: usize,
    pub secret_leaks: usize,
}

fn read_info(path: &Path) -> Option<(RunInfo, bool, Vec<PathBuf>)> {
    let bytes = std::fs::read(path).ok()?;
    let r = parse_unverified(&bytes)?;
    let stages = r
        .statement
        .predicate
        .build_definition
        .resolved_dependencies
        .iter()
        .filter_map(|d| d.uri.as_deref()?.strip_prefix("file:").map(PathBuf::from))
        .collect();
    Some((runinfo::of(&r), r.is_pipeline(), stages))
}

/// Build the report of a finished run from its record(s).
pub fn report(spec: &Path, s: &RunSummary) -> Report {
    let mut stages = Vec::new();
    let mut pipeline = false;
    if let Some((info, is_pipeline, stage_files)) = read_info(&s.record) {
        pipeline = is_pipeline;
        if is_pipeline {
            for f in stage_files {
                if let Some((run, _, _)) = read_info(&f) {
                    stages.push(StageReport {
                        name: run.job.clone(),
                        record: f,
                        run,
                    });
                }
            }
        } else {
            stages.push(StageReport {
                name: info.job.clone(),
                record: s.record.clone(),
                run: info,
            });
        }
    }
    let result = if s.status == 0 {
        Ending::Succeeded
    } else if stages
        .last()
        .is_some_and(|st| st.run.ending == Ending::Refused)
    {
        Ending::Refused
    } else {
        Ending::Failed
    };
    Report {
        ok: s.status == 0,
        status: s.status,
        spec: spec.to_path_buf(),
        result,
        message: sealrun_verifier::text::no_repeats(&sealrun_verifier::text::one_line(&s.message)),
        hand_over: stages
            .last()
            .map_or_else(|| s.record.clone(), |st| st.record.clone()),
        record: s.record.clone(),
        pipeline,
        denied_syscalls: stages.iter().map(|st| st.run.denied_total()).sum(),
        egress_attempts: stages.iter().map(|st| st.run.egress_attempts.len()).sum(),
        secret_leaks: stages.iter().map(|st| st.run.secret_leaks).sum(),
        stages,
    }
}

/// `3 denied syscalls (ptrace×2, mount), 1 egress attempt, 0 secret leaks`.
pub fn events_text(denied: u64, egress: usize, leaks: usize, names: Option<&RunInfo>) -> String {
    let detail = names
        .filter(|r| !r.denied_syscalls.is_empty())
        .map(|r| {
            let list: Vec<String> = r
                .denied_syscalls
                .iter()
                .map(|(n, c)| {
                    if *c > 1 {
                        format!("{n}×{c}")
                    } else {
                        n.clone()
                    }
                })
                .collect();
            format!(" ({})", list.join(", "))
        })
        .unwrap_or_default();
    let s = |n: usize| if n == 1 { "" } else { "s" };
    format!(
        "{denied} denied syscall{}{detail}, {egress} egress attempt{}, {leaks} secret leak{}",
        s(denied as usize),
        s(egress),
        s(leaks)
    )
}

fn stage_line(st: &StageReport) -> String {
    let r = &st.run;
    let end = match (&r.reason, r.exit_status) {
        (Some(reason), _) => format!("{} ({reason})", r.ending.word().to_lowercase()),
        (None, Some(code)) => format!("{}, exit status {code}", r.ending.word().to_lowercase()),
        (None, None) => r.ending.word().to_lowercase(),
    };
    let outputs = match &r.output {
        Some(o) if r.ending != Ending::Refused => {
            format!("{} output file(s) in {o}", r.output_files)
        }
        _ => "no outputs".into(),
    };
    format!(
        "{end}; {outputs}; {}",
        events_text(
            r.denied_total(),
            r.egress_attempts.len(),
            r.secret_leaks,
            Some(r)
        )
    )
}

/// The summary for people (stderr).
pub fn text(rep: &Report) -> String {
    let mut out = format!(
        "sealrun: {}: {}\nsealrun: record {}\n",
        rep.spec.display(),
        rep.message,
        rep.record.display()
    );
    if rep.pipeline {
        for st in &rep.stages {
            out.push_str(&format!(
                "  stage {:?}: {}\n    record {}\n",
                st.name,
                stage_line(st),
                st.record.display()
            ));
        }
        out.push_str(&format!(
            "  for `sealrun-verify chain` and `aibom`, use the last stage's record {}; `gate` takes it or the pipeline record\n",
            rep.hand_over.display()
        ));
    } else if let Some(st) = rep.stages.first() {
        let r = &st.run;
        if let (Some(o), false) = (&r.output, r.ending == Ending::Refused) {
            out.push_str(&format!("  outputs: {} file(s) in {o}\n", r.output_files));
        }
        out.push_str(&format!(
            "  events:  {}\n",
            events_text(
                rep.denied_syscalls,
                rep.egress_attempts,
                rep.secret_leaks,
                Some(r)
            )
        ));
    }
    out.push_str(&format!("  exit status {}\n", rep.status));
    out
}

/// The one JSON object of `--json`.
pub fn json(rep: &Report) -> String {
    serde_json::to_string(rep).expect("a report serialises")
}

/// The JSON object of a run that stopped before a record was written.
pub fn json_error(spec: &Path, status: u8, error: &str) -> String {
    serde_json::json!({
        "ok": false,
        "status": status,
        "spec": spec,
        "result": "error",
        "error": error,
        "record": null,
    })
    .to_string()
}
