//! The release gate: objective checks a run (and every stage behind it) must
//! pass before its outputs may be released.
//!
//! Guarantees: the chain of custody verifies first (so every input is signed
//! or produced by a verified stage); then, for the record and every stage
//! record in its chain, each check of the gate policy is evaluated and every
//! failure is reported (not only the first), naming the stage and the reason.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::chain::{verify_chain, ChainError, Index, Node};
use crate::policy::{Policy, PolicyError};
use crate::record::parse_unverified;

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
    let graph = verify_chain(name, bytes, index, trust)?;
    let mut violations = Vec::new();
    let mut checked = 0;
    let stage_ids: BTreeSet<String> = graph
        .nodes
        .iter()
        .filter(|n| matches!(n, Node::Stage { .. }))
        .map(|n| n.id().to_string())
        .collect();
    let root_is_pipeline = parse_unverified(bytes).is_some_and(|r| r.is_pipeline());
    for id in &stage_ids {
        let rec_bytes = if *id == graph.root {
            bytes.to_vec()
        } else {
            match index.files.get(id) {
                Some((_, b)) => b.clone(),
                None => continue,
            }
        };
        let Some(vr) = parse_unverified(&rec_bytes) else {
            continue;
        };
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
            let result = vr
                .byproduct("end")
                .and_then(|b| b.annotations.as_ref())
                .and_then(|a| a.get("result"))
                .and_then(|r| r.as_str())
                .unwrap_or("unknown")
                .to_string();
            fail("run_succeeded", result);
        }
        if vr.is_pipeline() {
            continue;
        }
        let internal = &vr.statement.predicate.build_definition.internal_parameters;
        if !gate.approved_profiles.is_empty() {
            let profile = internal
                .get("profile")
                .and_then(|p| p.as_str())
                .unwrap_or("(none)");
            let sha256 = internal
                .get("profile_sha256")
                .and_then(|p| p.as_str())
                .unwrap_or("");
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
        let sandbox = vr.byproduct("sandbox").and_then(|b| b.annotations.clone());
        let list = |key: &str| -> Vec<serde_json::Value> {
            sandbox
                .as_ref()
                .and_then(|s| s.get(key))
                .and_then(|v| v.as_array())
                .cloned()
                .unwrap_or_default()
        };
        let denied: Vec<serde_json::Value> = list("denied_syscalls")
            .into_iter()
            .filter(|d| {
                let name = d.get("name").and_then(|n| n.as_str()).unwrap_or("");
                !gate.allow_denied_syscalls.allows(name)
            })
            .collect();
        if !denied.is_empty() {
            fail(
                "no_denied_syscalls",
                serde_json::Value::Array(denied).to_string(),
            );
        }
        let egress = list("egress_attempts");
        if !gate.allow_egress_attempts && !egress.is_empty() {
            fail(
                "no_egress_attempts",
                serde_json::Value::Array(egress).to_string(),
            );
        }
        let leaked = vr
            .byproduct("secrets")
            .and_then(|b| b.annotations.as_ref())
            .and_then(|a| a.get("leaked"))
            .and_then(|l| l.as_array())
            .cloned()
            .unwrap_or_default();
        if !gate.allow_secret_leaks && !leaked.is_empty() {
            fail(
                "no_secret_leaks",
                serde_json::Value::Array(leaked).to_string(),
            );
        }
        for dep in &vr
            .statement
            .predicate
            .build_definition
            .resolved_dependencies
        {
            let is_input = dep
                .annotations
                .as_ref()
                .is_some_and(|a| a.get("kind").is_some());
            let has_proof = dep
                .annotations
                .as_ref()
                .is_some_and(|a| a.get("proof").is_some());
            if is_input && !has_proof {
                fail(
                    "inputs_signed",
                    format!(
                        "input {:?} has no signature or producer record",
                        dep.name.clone().unwrap_or_default()
                    ),
                );
            }
        }
        // The classification ceiling applies to what is released: the gated run's
        // outputs, or for a pipeline summary every stage's (labels only rise along
        // a chain, so this is the final artifact's classification).
        if let Some(max) = &gate.max_classification {
            let released = *id == graph.root || root_is_pipeline;
            if released {
                // Unknown levels rank above every known one (never below the ceiling).
                let rank = |v: &str| crate::labels::classification_rank(v).unwrap_or(usize::MAX);
                match vr.produced().as_ref().and_then(|p| p.labels.get("classification").cloned()) {
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
        crate::tpm_evidence::check_chain(root_path, bytes, &graph, index, trust, gate.require_tpm)
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
        warnings: graph.warnings,
    })
}
