//! Rollback protection for runs: one launcher-wide state file (by default next to the audit
//! log, `AUDIT_LOG.rollback.json`, the format `sealrun-verify artifact --state` uses) holds the
//! highest version of each signed artifact a run has used.
//!
//! Guarantees: after a run's inputs are verified, their versions are checked against the state
//! and recorded in it in one step under the audit log's lock, so two launchers sharing the log
//! cannot both pass an older version; a run on a version lower than one already used is refused
//! (exit 65), naming both versions, and the state is left as it was. A missing state file is an
//! error, unless it is being initialised: `--init-rollback-state` (refused if the file exists),
//! or the launcher's first run (the audit log is empty too). Artifacts without a version
//! (model-signing bundles, a stage's outputs) are not tracked.

use std::path::Path;

use sealrun_verifier::rollback::{RollbackError, RollbackState};

use crate::attest::RecordedInput;
use crate::audit::{self, AuditWriteError};

/// Why the rollback state could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error(transparent)]
    Audit(#[from] AuditWriteError),
    #[error("{0}")]
    State(#[from] RollbackError),
}

/// A state that would be missing or replaced, found before anything is verified (a plain
/// check; the authoritative one is [`check_and_record`], under the lock).
pub fn precheck(state: &Path, audit_log: &Path, init: bool) -> Result<(), RollbackError> {
    let exists = state.exists();
    let log_started = std::fs::metadata(audit_log).is_ok_and(|m| m.is_file() && m.len() > 0);
    match (init, exists) {
        (true, true) => Err(RollbackError::Exists {
            path: state.to_path_buf(),
        }),
        (false, false) if log_started => Err(RollbackError::Missing {
            path: state.to_path_buf(),
        }),
        _ => Ok(()),
    }
}

/// Check the verified `inputs` against the state at `state` and record their versions, under
/// the lock of `audit_log`. `Ok(Err(why))`: refused as a rollback (nothing recorded).
pub fn check_and_record(
    state: &Path,
    audit_log: &Path,
    init: bool,
    inputs: &[RecordedInput],
) -> Result<Result<(), String>, StateError> {
    audit::with_lock(audit_log, |log_started| {
        let mut st = if init {
            RollbackState::init(state)?
        } else {
            match RollbackState::load(state) {
                Err(RollbackError::Missing { .. }) if !log_started => RollbackState::init(state)?,
                r => r?,
            }
        };
        let mut refused = Vec::new();
        for i in inputs {
            let Some(version) = i.verified.version else {
                continue;
            };
            let name = &i.verified.name;
            match st.seen(name) {
                Some(seen) if version < seen => refused.push(format!(
                    "input {:?}: artifact {name:?} is version {version}, older than version {seen} already used by an earlier run (rollback; state {})",
                    i.name,
                    state.display()
                )),
                _ => st.note(name, version),
            }
        }
        if !refused.is_empty() {
            return Ok(Err(refused.join("; ")));
        }
        st.save()?;
        Ok(Ok(()))
    })?
}
