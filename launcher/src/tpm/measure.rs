//! Measurement into PCR 23 (sha256 bank), with an event log a verifier can replay.
//!
//! Every measurement starts from a reset: under an exclusive lock on the event log,
//! `PCR_Reset(23)`, then `extend(launcher sha256)`, then (for a run) `extend(trust policy
//! sha256)` and `extend(plan digest)`. So PCR 23 right after the launcher extend is always
//! `sha256(0^32 || launcher sha256)`, which is what a [`super::SealPolicy::launcher`] secret
//! unseals under, and a run's events are replayable from the last reset alone.
//!
//! Guarantees: each reset and extend the TPM accepted is appended to the log (one JSON line,
//! fsync'd) before the lock is released, in the order the TPM saw them, so concurrent
//! launchers interleave whole measurements; an operation the TPM refused is not logged.
//! Not guaranteed: that no other process touched PCR 23 (any root process can reset or extend
//! it); a verifier then sees a replay mismatch, never a false match.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use sealrun_verifier::tpm_evidence::{PcrEvent, PcrOp};
use sha2::{Digest, Sha256};

use super::{SealedBlob, Tpm, TpmError};

/// The application PCR sealrun measures into.
pub const PCR: u8 = 23;

/// `sha256(old || digest)`: a PCR extend.
pub fn extend_value(old: &[u8; 32], digest: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(old);
    h.update(digest);
    h.finalize().into()
}

/// Where the event log lives: `SEALRUN_TPM_STATE`, else `/var/lib/sealrun/tpm` for root,
/// else `$HOME/.local/state/sealrun/tpm`. One folder per TPM: a log shared by two TPMs
/// replays neither.
pub fn state_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("SEALRUN_TPM_STATE").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    if nix::unistd::geteuid().is_root() {
        return PathBuf::from("/var/lib/sealrun/tpm");
    }
    let home = std::env::var_os("HOME").unwrap_or_default();
    Path::new(&home).join(".local/state/sealrun/tpm")
}

/// The PCR 23 event log, locked exclusively while this value lives.
#[derive(Debug)]
pub struct EventLog {
    path: PathBuf,
    file: Flock<File>,
    events: Vec<PcrEvent>,
}

impl EventLog {
    /// Open (creating) and lock `DIR/pcr23-events.jsonl`, and read its events.
    pub fn lock(dir: &Path) -> Result<EventLog, TpmError> {
        let path = dir.join("pcr23-events.jsonl");
        let io = |source| TpmError::EventLog {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(io)?;
        let mut file = Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, e)| io(e.into()))?;
        let mut text = String::new();
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        file.read_to_string(&mut text).map_err(io)?;
        // A torn last line (a crash mid-append) is dropped: the next reset starts afresh.
        let events = text
            .lines()
            .filter_map(|l| serde_json::from_str::<PcrEvent>(l).ok())
            .collect();
        Ok(EventLog { path, file, events })
    }

    fn append(
        &mut self,
        op: PcrOp,
        what: &str,
        digest: Option<[u8; 32]>,
        run: &str,
    ) -> Result<(), TpmError> {
        let ev = PcrEvent {
            seq: self.events.last().map_or(1, |e| e.seq + 1),
            pcr: PCR,
            op,
            digest: digest.map(hex::encode),
            what: what.to_string(),
            run: run.to_string(),
            time: crate::now_rfc3339(),
        };
        let mut line = serde_json::to_vec(&ev).expect("a PcrEvent serialises");
        line.push(b'\n');
        let io = |source| TpmError::EventLog {
            path: self.path.clone(),
            source,
        };
        self.file
            .write_all(&line)
            .and_then(|()| self.file.sync_data())
            .map_err(io)?;
        self.events.push(ev);
        Ok(())
    }

    /// `PCR_Reset(23)`, logged.
    pub fn reset(&mut self, tpm: &mut Tpm, run: &str) -> Result<(), TpmError> {
        tpm.pcr_reset(PCR)?;
        self.append(PcrOp::Reset, "reset", None, run)
    }

    /// `PCR_Extend(23, digest)`, logged as `what`.
    pub fn extend(
        &mut self,
        tpm: &mut Tpm,
        what: &str,
        digest: &[u8; 32],
        run: &str,
    ) -> Result<(), TpmError> {
        tpm.pcr_extend(PCR, digest)?;
        self.append(PcrOp::Extend, what, Some(*digest), run)
    }

    /// The events from the last reset on (that reset included).
    pub fn since_last_reset(&self) -> &[PcrEvent] {
        let start = self
            .events
            .iter()
            .rposition(|e| e.op == PcrOp::Reset)
            .unwrap_or(0);
        &self.events[start..]
    }

    /// Reset PCR 23 and extend it with the launcher's digest: the state a
    /// [`super::SealPolicy::launcher`] secret unseals in.
    pub fn measure_launcher(
        &mut self,
        tpm: &mut Tpm,
        launcher: &[u8; 32],
        run: &str,
    ) -> Result<(), TpmError> {
        self.reset(tpm, run)?;
        self.extend(tpm, "launcher", launcher, run)
    }
}

/// This launcher binary's sha256, as bytes.
pub fn launcher_digest() -> Result<[u8; 32], TpmError> {
    hex::decode(crate::launcher_sha256())
        .ok()
        .and_then(|v| <[u8; 32]>::try_from(v).ok())
        .ok_or_else(|| {
            TpmError::BadBlob("the launcher binary (/proc/self/exe) cannot be hashed".into())
        })
}

/// Unseal `blob` under the launcher's measurement: under the event-log lock, reset PCR 23,
/// extend it with this launcher binary's sha256 (both logged), and unseal. A blob sealed with
/// [`super::SealPolicy::launcher`] for this build unseals; for another build, or on another
/// TPM, it does not ([`TpmError::PolicyMismatch`]). `state` is the event log's folder
/// (normally [`state_dir`]).
pub fn unseal_under_launcher(
    tpm: &mut Tpm,
    blob: &SealedBlob,
    state: &Path,
    run: &str,
) -> Result<zeroize::Zeroizing<Vec<u8>>, TpmError> {
    let launcher = launcher_digest()?;
    let mut log = EventLog::lock(state)?;
    log.measure_launcher(tpm, &launcher, run)?;
    super::unseal(tpm, blob)
}
