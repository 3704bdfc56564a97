//! Run history: `sealrun runs` lists the runs in a records folder, newest
//! first; `sealrun show RECORD` prints one run for a person.
//!
//! Guarantees: only the records folder's own `*.json` run records are read
//! (not `artifacts/`, not pipeline summaries), each bounded in size; a file
//! that is not a run record is named and skipped, never fatal. Without
//! `--trust` nothing is verified and the listing says so; with `--trust POLICY`
//! every record's signature is checked against the policy and a record that
//! does not verify is marked `UNVERIFIED`.

use std::path::{Path, PathBuf};

use sealrun_verifier::policy::Policy;
use sealrun_verifier::record::{parse_unverified, verify_record};
use sealrun_verifier::runinfo::{self, RunInfo};
use serde::Serialize;

use crate::summary::events_text;

/// Records larger than this are not run records (they are a few KiB to a few MiB).
const MAX_RECORD_BYTES: u64 = 64 << 20;

/// Why the history could not be read.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("{path}: {message}")]
    Read { path: PathBuf, message: String },
    #[error(transparent)]
    Policy(#[from] sealrun_verifier::policy::PolicyError),
}

/// One run of the history.
#[derive(Debug, Serialize)]
pub struct Entry {
    pub record: PathBuf,
    /// `None` without a trust policy; else whether the record verified under it.
    pub verified: Option<bool>,
    #[serde(flatten)]
    pub run: RunInfo,
}

fn read(path: &Path) -> Result<Vec<u8>, HistoryError> {
    use sealrun_verifier::fsread::{read_bounded, Follow};
    read_bounded(path, "run record", MAX_RECORD_BYTES, Follow::Yes).map_err(|e| {
        HistoryError::Read {
            path: path.to_path_buf(),
            message: e.to_string(),
        }
    })
}

/// Read one record (verified against `trust` when given).
pub fn entry(path: &Path, trust: Option<&Policy>) -> Result<Entry, HistoryError> {
    let bytes = read(path)?;
    let bad = |message: String| HistoryError::Read {
        path: path.to_path_buf(),
        message,
    };
    let shown = path.display().to_string();
    let (r, verified) = match trust {
        Some(policy) => match verify_record(&shown, &bytes, policy, None) {
            Ok(r) => (r.record, Some(true)),
            Err(_) => (
                parse_unverified(&bytes).ok_or_else(|| bad("not a run record".into()))?,
                Some(false),
            ),
        },
        None => (
            parse_unverified(&bytes).ok_or_else(|| bad("not a run record".into()))?,
            None,
        ),
    };
    if r.is_pipeline() {
        return Err(bad("a pipeline summary record, not one run".into()));
    }
    Ok(Entry {
        record: path.to_path_buf(),
        verified,
        run: runinfo::of(&r),
    })
}

/// Every run record directly in `dir`, newest first; the files skipped, with why.
pub fn list(dir: &Path, trust: Option<&Policy>) -> Result<(Vec<Entry>, Vec<String>), HistoryError> {
    let rd = std::fs::read_dir(dir).map_err(|e| HistoryError::Read {
        path: dir.to_path_buf(),
        message: format!("cannot list the records folder: {e}"),
    })?;
    let mut entries = Vec::new();
    let mut skipped = Vec::new();
    for e in rd.flatten() {
        let p = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.ends_with(".json")
            || name.ends_with(".pipeline.json")
            || name.ends_with(".quote.json")
            || !p.is_file()
        {
            continue;
        }
        match entry(&p, trust) {
            Ok(x) => entries.push(x),
            Err(e) => skipped.push(e.to_string()),
        }
    }
    entries.sort_by(|a, b| {
        (&b.run.started, &b.run.finished, &b.record).cmp(&(
            &a.run.started,
            &a.run.finished,
            &a.record,
        ))
    });
    Ok((entries, skipped))
}

/// Text from a record, made safe to print (records may come from elsewhere).
fn short(s: &str, n: usize) -> String {
    sealrun_verifier::text::one_line(s)
        .chars()
        .take(n)
        .collect()
}

fn safe(s: &str) -> String {
    sealrun_verifier::text::one_line(s)
}

/// The history as a table, newest first.
pub fn table(entries: &[Entry]) -> String {
    let mut out = format!(
        "{:<20} {:<20} {:<12} {:<9} {:>6} {:>7} {:>6} {:>6} {:>5}{}\n",
        "TIME",
        "JOB",
        "INVOCATION",
        "RESULT",
        "INPUTS",
        "OUTPUTS",
        "DENIED",
        "EGRESS",
        "LEAKS",
        if entries.iter().any(|e| e.verified.is_some()) {
            "  SIGNATURE"
        } else {
            ""
        }
    );
    for e in entries {
        let r = &e.run;
        let sig = match e.verified {
            Some(true) => "  verified",
            Some(false) => "  UNVERIFIED",
            None => "",
        };
        out.push_str(&format!(
            "{:<20} {:<20} {:<12} {:<9} {:>6} {:>7} {:>6} {:>6} {:>5}{sig}\n",
            short(&r.finished, 20),
            short(&r.job, 20),
            short(&r.invocation, 12),
            r.ending.word(),
            r.inputs.len(),
            r.output_files,
            r.denied_total(),
            r.egress_attempts.len(),
            r.secret_leaks,
        ));
    }
    out
}

fn bytes(n: u64) -> String {
    const U: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i < U.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", U[i])
    }
}

/// The sandbox limits of a record, as `memory 512.0 MiB, pids 64, timeout 120s`.
fn limits_text(limits: &serde_json::Value) -> String {
    let mut parts = Vec::new();
    let num = |k: &str| limits.get(k).and_then(|v| v.as_f64());
    if let Some(m) = num("memory_bytes") {
        parts.push(format!("memory {}", bytes(m as u64)));
    }
    if let Some(p) = num("pids") {
        parts.push(format!("pids {p}"));
    }
    if let Some(c) = num("cpus") {
        parts.push(format!("cpus {c}"));
    }
    if let Some(t) = num("timeout_s") {
        parts.push(format!("timeout {t}s"));
    }
    if let Some(s) = num("shm_bytes") {
        parts.push(format!("/dev/shm {}", bytes(s as u64)));
    }
    if let Some(s) = num("max_output_bytes") {
        parts.push(format!("outputs up to {}", bytes(s as u64)));
    }
    if parts.is_empty() {
        "none recorded".into()
    } else {
        parts.join(", ")
    }
}

/// One run, for a person.
pub fn show(e: &Entry) -> String {
    let r = &e.run;
    let mut out = format!(
        "{} run {:?}, invocation {}\n  record    {}{}\n  started   {}\n  finished  {}\n  result    {}\n",
        r.ending.word(),
        safe(&r.job),
        safe(&r.invocation),
        e.record.display(),
        match e.verified {
            Some(true) => " (signature verified)",
            Some(false) => " (signature does NOT verify under the trust policy)",
            None => " (not verified: pass --trust, or use sealrun-verify record)",
        },
        safe(&r.started),
        safe(&r.finished),
        safe(&r.result),
    );
    if let Some(reason) = &r.reason {
        out.push_str(&format!("  end       {}", safe(reason)));
        if let Some(code) = r.exit_status {
            out.push_str(&format!(", exit status {code}"));
        }
        out.push('\n');
    }
    out.push_str("  inputs\n");
    if r.inputs.is_empty() {
        out.push_str("    (none)\n");
    }
    for i in &r.inputs {
        let labels: Vec<String> = i
            .labels
            .iter()
            .map(|(k, v)| safe(&format!("{k}={v}")))
            .collect();
        let version = i.version.map(|v| format!(" v{v}")).unwrap_or_default();
        out.push_str(&format!(
            "    {}: {} {:?}{version}, signed by {}, labels [{}], sha256:{}\n",
            safe(&i.name),
            safe(&i.kind),
            safe(&i.artifact),
            safe(&i.signer),
            labels.join(", "),
            short(&i.digest, 16)
        ));
    }
    out.push_str(&format!(
        "  sandbox   profile {}; {}\n",
        safe(r.profile.as_deref().unwrap_or("(not started)")),
        limits_text(&r.limits)
    ));
    if let (Some(m), Some(w)) = (r.peak_memory_bytes, r.wall_ms) {
        out.push_str(&format!(
            "  use       peak memory {}, wall {w} ms\n",
            bytes(m)
        ));
    }
    out.push_str(&format!(
        "  outputs   {} file(s){}\n  events    {}\n",
        r.output_files,
        r.output
            .as_ref()
            .map(|o| format!(" in {o}"))
            .unwrap_or_default(),
        events_text(
            r.denied_total(),
            r.egress_attempts.len(),
            r.secret_leaks,
            Some(r)
        )
    ));
    for a in &r.egress_attempts {
        out.push_str(&format!("    egress: {}\n", safe(a)));
    }
    out
}
