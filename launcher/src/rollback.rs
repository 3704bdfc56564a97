//! Rollback protection for runs: one launcher-wide state file (by default next to the audit
//! log, `AUDIT_LOG.rollback.json`, the format `sealrun-verify artifact --state` uses) holds the
//! highest version of each signed artifact a run has used.
//!
//! Guarantees: after a run's inputs are verified, their versions are checked against the state
//! and recorded in it in one step under the audit log's lock, so two launchers sharing the log
//! cannot both pass an older version; a run on a version lower than one already used is refused
//! (exit 65), naming both versions, and the state is left as it was. A missing state file is an
//! error, unless it is being initialised: `--init-rollback-state` (refused if the file exists),
//! or the launcher's first run (the audit log is empty too) — then it is made before anything
//! else, so a first run that ends in a refusal leaves it too. Artifacts without a version
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

/// Before anything is verified or recorded: a state that would be missing or replaced is an
/// error; a state that is being initialised (`init`, or the launcher's first run: the audit log
/// has no entry yet) is made now, under the audit log's lock — so a first run that is refused
/// later (and so starts the log) still leaves the state behind for the runs after it.
pub fn prepare(state: &Path, audit_log: &Path, init: bool) -> Result<(), StateError> {
    if init && state.exists() {
        return Err(RollbackError::Exists {
            path: state.to_path_buf(),
        }
        .into());
    }
    audit::with_lock(audit_log, |log_started| {
        let exists = state.exists();
        if init || (!exists && !log_started) {
            RollbackState::init(state).map(drop)
        } else if !exists {
            Err(RollbackError::Missing {
                path: state.to_path_buf(),
            })
        } else {
            Ok(())
        }
        .map_err(StateError::from)
    })?
}

/// Check the verified `inputs` against the state at `state` and record their versions, under
/// the lock of `audit_log`. `Ok(Err(why))`: refused as a rollback (nothing recorded).
pub fn check_and_record(
    state: &Path,
    audit_log: &Path,
    inputs: &[RecordedInput],
) -> Result<Result<(), String>, StateError> {
    audit::with_lock(audit_log, |_| {
        // (`prepare` made the state if this run initialises it.)
        let mut st = RollbackState::load(state)?;
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
