//! The release gate: objective checks a run (and every stage behind it) must
//! pass before its outputs may be released.
//!
//! Guarantees: the chain of custody verifies first (so every input is signed
//! or produced by a verified stage); then, for the record and every stage
//! record in its chain, each check of the gate policy is evaluated and every
//! failure is reported (not only the first), naming the stage and the reason.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::chain::{verify_chain, ChainError, Index};
use crate::policy::{Policy, PolicyError};

/// The gate policy (TOML).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatePolicy {
    /// The trust policy used to verify the chain (relative to the gate file).
    pub trust: String,
    /// Every run in the chain must have succeeded (default true).
    #[serde(default = "yes")]
    pub require_success: bool,
    /// Sandbox profiles a run may have used (empty: any): a shipped profile's name (approves
    /// that profile exactly as this build ships it) or `sha256:HEX` (a profile pair's digest,
    /// the record's `profile_sha256`).
    #[serde(default)]
    pub approved_profiles: Vec<String>,
    /// Allow runs that attempted denied system calls: `true`, `false` (the default), or a list
    /// of call names (`["ptrace", "mount"]`) that are allowed while any other fails the gate.
    /// A refused `connect` is listed as a denied call too: allowing egress attempts does not
    /// allow it (name `connect`, or `true`, does).
    #[serde(default)]
    pub allow_denied_syscalls: AllowDenied,
    /// Allow runs that attempted network egress (default false).
    #[serde(default)]
    pub allow_egress_attempts: bool,
    /// Allow runs in which a secret leaked (default false).
    #[serde(default)]
    pub allow_secret_leaks: bool,
    /// Every run in the chain must carry TPM evidence (`NAME-ID.quote.json`) that verifies
    /// (default false; evidence that is present is checked either way).
    #[serde(default)]
    pub require_tpm: bool,
    /// Highest classification the released artifact may carry: one of
    /// `labels::CLASSIFICATION_ORDER` (anything else is a policy error).
    pub max_classification: Option<String>,
}

fn yes() -> bool {
    true
}

/// `allow_denied_syscalls`: all, none, or these calls by name.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum AllowDenied {
    All(bool),
    Names(Vec<String>),
}

impl Default for AllowDenied {
    fn default() -> Self {
        AllowDenied::All(false)
    }
}

impl AllowDenied {
    /// Whether an attempt of the call `name` is allowed.
    pub fn allows(&self, name: &str) -> bool {
        match self {
            AllowDenied::All(all) => *all,
            AllowDenied::Names(names) => names.iter().any(|n| n == name),
        }
    }
}

/// Why the gate could not be evaluated at all.
#[derive(Debug, thiserror::Error)]
pub enum GateError {
    #[error("{path}: gate policy: {message}")]
    Policy { path: PathBuf, message: String },
    #[error(transparent)]
    Trust(#[from] PolicyError),
    #[error(transparent)]
    Chain(#[from] ChainError),
}

/// One failed check.
#[derive(Clone, Debug, Serialize)]
pub struct Violation {
    pub stage: String,
    pub check: &'static str,
    pub detail: String,
}

/// The gate's verdict.
#[derive(Clone, Debug, Serialize)]
pub struct Verdict {
    pub passed: bool,
    pub stages_checked: usize,
    pub violations: Vec<Violation>,
    /// The chain's warnings (see `chain::Graph::warnings`).
    pub warnings: Vec<String>,
}

/// Load a gate policy and the trust policy it names.
pub fn load(path: &Path) -> Result<(GatePolicy, Policy), GateError> {
    use crate::fsread::{read_bounded_string, Follow, MAX_POLICY_BYTES};
    let text =
        read_bounded_string(path, "gate policy", MAX_POLICY_BYTES, Follow::Yes).map_err(|e| {
            GateError::Policy {
                path: path.to_path_buf(),
                message: e.to_string(),
            }
        })?;
    let gate: GatePolicy = toml::from_str(&text).map_err(|e| GateError::Policy {
        path: path.to_path_buf(),
        message: e.to_string().trim().replace('\n', " "),
    })?;
    if let Some(max) = &gate.max_classification {
        if crate::labels::classification_rank(max).is_none() {
            return Err(GateError::Policy {
                path: path.to_path_buf(),
                message: format!(
                    "max_classification = {max:?} is not a known level (one of: {})",
                    crate::labels::CLASSIFICATION_ORDER.join(", ")
                ),
            });
        }
    }
    let base = path.parent().unwrap_or(Path::new("."));
    let trust = Policy::load(&base.join(&gate.trust))?;
    Ok((gate, trust))
}

/// Evaluate the gate on the record `bytes` with its chain in `index`.
pub fn evaluate(
    name: &str,
    bytes: &[u8],
    index: &Index,
    gate: &GatePolicy,
    trust: &Policy,
) -> Result<Verdict, GateError> {
    let chain = verify_chain(name, bytes, index, trust)?;
    let graph = &chain.graph;
    let mut violations = Vec::new();
    let mut checked = 0;
    let root_is_pipeline = chain
        .records
        .get(&graph.root)
        .is_some_and(|r| r.is_pipeline());
    // Every stage of the chain, each verified by `verify_chain`.
    for (id, vr) in &chain.records {
        checked += 1;
        let stage = vr.job_name().to_string();
        let mut fail = |check: &'static str, detail: String| {
            violations.push(Violation {
                stage: stage.clone(),
                check,
                detail,
            })
        };
        if gate.require_success && !vr.succeeded() {
            fail("run_succeeded", vr.contents.end.result.clone());
        }
        if vr.is_pipeline() {
            continue;
        }
        let internal = &vr.contents.internal;
        if !gate.approved_profiles.is_empty() {
            // A run refused before its sandbox was planned names no profile.
            let profile = internal.profile.as_deref().unwrap_or("(none)");
            let sha256 = internal.profile_sha256.as_deref().unwrap_or("");
            let approved = gate
                .approved_profiles
                .iter()
                .any(|a| crate::profiles::approves(a, profile, sha256));
            if !approved {
                let why = if gate.approved_profiles.iter().any(|a| a == profile) {
                    " (a profile of that name with other contents than the shipped one: approve \
                     it by digest, `sha256:…`, if intended)"
                } else {
                    ""
                };
                fail(
                    "approved_profile",
                    format!("sandbox profile {profile:?} is not approved (sha256:{sha256}){why}"),
                );
            }
        }
        // A run that never started has no sandbox report; one that did has every list (a
        // missing one does not parse, see `record::SandboxReport`).
        let (denied, egress) = match &vr.contents.sandbox {
            Some(s) => (
                s.denied_syscalls
                    .iter()
                    .filter(|d| !gate.allow_denied_syscalls.allows(&d.name))
                    .collect(),
                s.egress_attempts.iter().collect(),
            ),
            None => (Vec::new(), Vec::new()),
        };
        if !denied.is_empty() {
            fail("no_denied_syscalls", json_text(&denied));
        }
        if !gate.allow_egress_attempts && !egress.is_empty() {
            fail("no_egress_attempts", json_text(&egress));
        }
        let leaked = vr
            .contents
            .secrets
            .as_ref()
            .map(|s| s.leaked.as_slice())
            .unwrap_or_default();
        if !gate.allow_secret_leaks && !leaked.is_empty() {
            fail("no_secret_leaks", json_text(leaked));
        }
        // The classification ceiling applies to what is released: the gated run's
        // outputs, or for a pipeline summary every stage's (labels only rise along
        // a chain, so this is the final artifact's classification).
        if let Some(max) = &gate.max_classification {
            let released = *id == graph.root || root_is_pipeline;
            if released {
                // Unknown levels rank above every known one (never below the ceiling).
                let rank = |v: &str| crate::labels::classification_rank(v).unwrap_or(usize::MAX);
                match vr.produced().as_ref().and_then(|p| p.labels.get(crate::labels::CLASSIFICATION).cloned()) {
                    Some(c) if rank(&c) > rank(max) => {
                        fail("max_classification", format!("output is classified {c}, above {max}"))
                    }
                    Some(_) => {}
                    None => fail(
                        "max_classification",
                        format!("output carries no classification label, so it cannot be shown to be at most {max}"),
                    ),
                }
            }
        }
    }
    let root_path = Path::new(name);
    for (stage, e) in
        crate::tpm_evidence::check_chain(root_path, bytes, graph, index, trust, gate.require_tpm)
    {
        violations.push(Violation {
            stage,
            check: e.failure.name(),
            detail: e.detail,
        });
    }
    Ok(Verdict {
        passed: violations.is_empty(),
        stages_checked: checked,
        violations,
        warnings: graph.warnings.clone(),
    })
}

/// A list as the JSON text a violation shows (keys sorted, as the record has them).
fn json_text<T: Serialize>(items: &[T]) -> String {
    serde_json::to_value(items)
        .unwrap_or(serde_json::Value::Null)
        .to_string()
}
