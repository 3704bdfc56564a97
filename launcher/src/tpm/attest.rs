//! A run's TPM attestation: open the TPM the way `[attestation] tpm` says, measure the plan
//! into PCR 23 before the job runs, and quote the signed record after it, writing
//! `records/NAME-ID.quote.json`.
//!
//! Guarantees: with `tpm = "required"`, a run without a reachable TPM and an enrolled
//! attestation key is refused before anything is staged or run; with `"auto"` such a run goes
//! ahead and its record says `attestation: software-key`; with `"off"` the TPM is never
//! touched. A record says `tpm-quote` only if its measurement was extended into PCR 23; the
//! quote is taken under the event-log lock, after re-measuring if another run reset PCR 23
//! in between, so its event log always replays. The quote's PCR values are checked against
//! the quoted digest before the evidence is written (atomically).

use std::path::{Path, PathBuf};

use base64::Engine;
use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use sealrun_verifier::digest::Digest;
use sealrun_verifier::record::{AttestationMode, InternalParameters, MeasuredPlan, TpmMeasurement};
use sealrun_verifier::tpm_evidence::{self, EvidenceKind, PcrOp, QuoteEvidence, TpmInfo};

use super::measure::{self, EventLog};
use super::{Tcti, Tpm, TpmError};

/// The persistent handle of sealrun's attestation key (owner hierarchy).
pub const AK_HANDLE: u32 = 0x8101_0023;
/// The PCRs every quote covers: the platform's boot measurements and sealrun's PCR 23.
pub const QUOTED_PCRS: [u8; 9] = [0, 1, 2, 3, 4, 5, 6, 7, 23];

/// `[attestation] tpm = ...` in a job spec.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TpmMode {
    /// Use a TPM when one answers and has an enrolled attestation key (the default).
    #[default]
    Auto,
    /// Refuse to run without one.
    Required,
    /// Never use one.
    Off,
}

/// The `[attestation]` table of a job spec.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttestationSettings {
    #[serde(default)]
    pub tpm: TpmMode,
}

/// The TPM of one run. It is connected to only while it measures or quotes: swtpm serves one
/// connection at a time, and a run holds none while its job runs.
#[derive(Debug)]
pub struct RunTpm {
    tcti: Tcti,
    mode: TpmMode,
    ak_keyid: String,
    info: TpmInfo,
    state: PathBuf,
    measurement: Option<TpmMeasurement>,
}

/// What the TPM says about itself (manufacturer and vendor strings), and whether that makes it
/// a software TPM.
pub fn describe(tpm: &mut Tpm) -> Result<TpmInfo, TpmError> {
    let text = |v: u32| {
        String::from_utf8_lossy(&v.to_be_bytes())
            .trim_matches(|c: char| c == '\0' || c.is_whitespace())
            .to_string()
    };
    let manufacturer = text(tpm.property(super::commands::PT_MANUFACTURER)?);
    let mut vendor = String::new();
    for i in 0..4 {
        let v = tpm.property(super::commands::PT_VENDOR_STRING_1 + i)?;
        vendor.push_str(&String::from_utf8_lossy(&v.to_be_bytes()).replace('\0', ""));
    }
    let vendor = vendor.split_whitespace().collect::<Vec<_>>().join(" ");
    let software = TpmInfo::classify(&manufacturer, &vendor);
    Ok(TpmInfo {
        manufacturer,
        vendor,
        software,
    })
}

/// The enrolled AK's `TPMT_PUBLIC`, or `None` if the handle is free.
pub fn ak_public(tpm: &mut Tpm) -> Result<Option<Vec<u8>>, TpmError> {
    if !tpm.handle_exists(AK_HANDLE)? {
        return Ok(None);
    }
    tpm.read_public(AK_HANDLE).map(Some)
}

/// The AK's key id, checking that the handle holds a restricted ECC P-256 signing key.
pub fn ak_keyid(public: &[u8]) -> Result<String, TpmError> {
    use super::wire::{OA_DECRYPT, OA_FIXED_TPM, OA_RESTRICTED, OA_SIGN};
    let attrs = public
        .get(4..8)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        .unwrap_or(0);
    let want = OA_FIXED_TPM | OA_RESTRICTED | OA_SIGN;
    if attrs & want != want || attrs & OA_DECRYPT != 0 {
        return Err(TpmError::NotAnAk(format!(
            "handle 0x{AK_HANDLE:08x} holds a key with attributes 0x{attrs:08x}, not a restricted signing key fixed to the TPM"
        )));
    }
    tpm_evidence::p256_public_key(public)
        .map(|k| k.keyid())
        .map_err(|e| TpmError::NotAnAk(format!("handle 0x{AK_HANDLE:08x}: {e}")))
}

/// Open the run's TPM as `mode` asks: `Ok(None)` to attest with the software key only.
/// `Err` only for `required` (or a TPM that answers wrongly): the run must not start.
pub fn open_for_run(mode: TpmMode) -> Result<Option<RunTpm>, TpmError> {
    if mode == TpmMode::Off {
        return Ok(None);
    }
    let opened = Tcti::from_env().and_then(|tcti| {
        let mut tpm = Tpm::open_at(&tcti)?;
        let info = describe(&mut tpm)?;
        let public = ak_public(&mut tpm)?.ok_or_else(|| {
            TpmError::NotAnAk(format!(
                "no attestation key at handle 0x{AK_HANDLE:08x}: run `sealrun tpm enroll --out ak.pub` and add ak.pub to the trust policy with kinds = [\"tpm-quote\"]"
            ))
        })?;
        let ak_keyid = ak_keyid(&public)?;
        Ok(RunTpm {
            tcti,
            mode,
            ak_keyid,
            info,
            state: measure::state_dir(),
            measurement: None,
        })
    });
    match (opened, mode) {
        (Ok(t), _) => Ok(Some(t)),
        (Err(e), TpmMode::Required) => Err(e),
        (Err(e), _) => {
            tracing::debug!(error = %e, "no TPM: the record is attested with the software key only");
            Ok(None)
        }
    }
}

/// Mark a record's internal parameters: `attestation` and, if measured, `tpm`.
pub fn annotate(internal: &mut InternalParameters, m: Option<&TpmMeasurement>) {
    internal.attestation = Some(if m.is_some() {
        AttestationMode::TpmQuote
    } else {
        AttestationMode::SoftwareKey
    });
    internal.tpm = m.cloned();
}

fn sha256_hex(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

fn to32(hex_digest: &str) -> Result<[u8; 32], TpmError> {
    hex::decode(hex_digest)
        .ok()
        .and_then(|v| <[u8; 32]>::try_from(v).ok())
        .ok_or_else(|| TpmError::BadBlob(format!("{hex_digest:?} is not a hex SHA-256")))
}

impl RunTpm {
    pub fn mode(&self) -> TpmMode {
        self.mode
    }

    pub fn measurement(&self) -> Option<&TpmMeasurement> {
        self.measurement.as_ref()
    }

    /// Measure the run before its job starts: reset PCR 23, extend the launcher's digest,
    /// the trust policy file's digest and the plan's digest (logged under the lock).
    pub fn measure(
        &mut self,
        run: &str,
        policy_file: &Path,
        plan: MeasuredPlan,
    ) -> Result<(), TpmError> {
        let policy = std::fs::read(policy_file).map_err(|source| TpmError::EventLog {
            path: policy_file.to_path_buf(),
            source,
        })?;
        let m = TpmMeasurement {
            evidence: EvidenceKind::Tpm2Quote,
            ak_keyid: self.ak_keyid.clone(),
            tpm: self.info.clone(),
            launcher_sha256: hex::encode(measure::launcher_digest()?),
            policy_sha256: sha256_hex(&policy),
            plan,
        };
        let mut tpm = Tpm::open_at(&self.tcti)?;
        let mut log = EventLog::lock(&self.state)?;
        extend_all(&mut tpm, &mut log, &m, run)?;
        self.measurement = Some(m);
        Ok(())
    }

    /// Quote the record (`record_bytes`, written at `record_path`) and write its evidence next
    /// to it; the evidence file's digest, for the audit log.
    pub fn quote(
        &mut self,
        run: &str,
        record_path: &Path,
        record_bytes: &[u8],
    ) -> Result<Digest, TpmError> {
        let m = self
            .measurement
            .clone()
            .ok_or_else(|| TpmError::BadBlob("the run was not measured".into()))?;
        let mut tpm = Tpm::open_at(&self.tcti)?;
        let mut log = EventLog::lock(&self.state)?;
        if !is_own_measurement(log.since_last_reset(), run) {
            // Another run (or an unseal) reset PCR 23 since: measure again, so that the
            // quoted PCR 23 is this run's.
            extend_all(&mut tpm, &mut log, &m, run)?;
        }
        let nonce = Sha256::digest(record_bytes);
        let q = tpm.quote(AK_HANDLE, &nonce, &QUOTED_PCRS)?;
        let values: Vec<u8> = tpm.pcr_read(&QUOTED_PCRS)?.concat();
        let info = tpm_evidence::parse_attest(&q.attest).map_err(|e| TpmError::Malformed {
            command: "Quote",
            detail: e.to_string(),
        })?;
        if Sha256::digest(&values)[..] != info.pcr_digest[..] {
            return Err(TpmError::Malformed {
                command: "PCR_Read",
                detail: "the PCRs changed between the quote and their read-out (something outside sealrun extended one); run again".into(),
            });
        }
        let b64 = base64::engine::general_purpose::STANDARD;
        let ev = QuoteEvidence {
            evidence: EvidenceKind::Tpm2Quote,
            record: record_path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            nonce: hex::encode(nonce),
            attest: b64.encode(&q.attest),
            signature: b64.encode(&q.signature),
            pcr_selection: tpm_evidence::selection_string(&info.pcr_select),
            pcr_values: b64.encode(&values),
            event_log: log.since_last_reset().to_vec(),
            ak_keyid: self.ak_keyid.clone(),
            tpm: self.info.clone(),
        };
        drop(log);
        drop(tpm);
        let mut bytes = serde_json::to_vec_pretty(&ev).expect("evidence serialises");
        bytes.push(b'\n');
        let path = tpm_evidence::evidence_path(record_path);
        sealrun_verifier::rollback::write_atomic(&path, &bytes)
            .map_err(|source| TpmError::EventLog { path, source })?;
        Ok(Digest::of(&bytes))
    }
}

/// Reset, then launcher, policy and plan: one run's whole measurement.
fn extend_all(
    tpm: &mut Tpm,
    log: &mut EventLog,
    m: &TpmMeasurement,
    run: &str,
) -> Result<(), TpmError> {
    let plan = Sha256::digest(serde_json::to_vec(&m.plan).expect("a MeasuredPlan serialises"));
    log.measure_launcher(tpm, &to32(&m.launcher_sha256)?, run)?;
    log.extend(tpm, "policy", &to32(&m.policy_sha256)?, run)?;
    log.extend(tpm, "plan", &plan.into(), run)
}

/// Whether the events since the last reset are exactly `run`'s measurement.
fn is_own_measurement(events: &[tpm_evidence::PcrEvent], run: &str) -> bool {
    let whats: Vec<&str> = events.iter().map(|e| e.what.as_str()).collect();
    events.first().is_some_and(|e| e.op == PcrOp::Reset)
        && whats == ["reset", "launcher", "policy", "plan"]
        && events.iter().all(|e| e.run == run)
}

/// The TPM slot of a run (empty: software key only).
pub type Slot = std::cell::RefCell<Option<RunTpm>>;

/// Open the run's TPM into `slot`; `Err(message)` refuses the run (`required` only). The
/// run's trust policy must trust the AK for `tpm-quote` (else its records would not verify):
/// `required` refuses, `auto` warns and attests with the software key only.
pub fn open_into(
    slot: &Slot,
    settings: &AttestationSettings,
    policy: &sealrun_verifier::policy::Policy,
) -> Result<(), String> {
    let required = |why: String| {
        format!("[attestation] tpm = \"required\", and no TPM can attest this run: {why}")
    };
    let t = open_for_run(settings.tpm).map_err(|e| required(e.to_string()))?;
    let untrusted = t.as_ref().is_some_and(|t| {
        !policy
            .lookup(&t.ak_keyid)
            .iter()
            .any(|(k, _)| k.may_sign(sealrun_verifier::policy::Kind::TpmQuote))
    });
    if untrusted {
        let why = format!(
            "the trust policy does not trust the TPM's attestation key {} for kinds = [\"tpm-quote\"] (add the `sealrun tpm enroll` output to it), so its quotes would not verify",
            t.as_ref().map_or("", |t| t.ak_keyid.as_str())
        );
        if settings.tpm == TpmMode::Required {
            return Err(required(why));
        }
        eprintln!("sealrun: warning: {why}; this run is attested with the software key only");
        return Ok(());
    }
    *slot.borrow_mut() = t;
    Ok(())
}

/// The plan digest inputs, from what the run has verified and compiled.
pub fn plan_of(
    spec_file: &Path,
    profile_sha256: &str,
    bpf_sha256: &str,
    inputs: impl IntoIterator<Item = (String, String)>,
    code_sha256: Option<String>,
) -> MeasuredPlan {
    MeasuredPlan {
        spec_sha256: std::fs::read(spec_file)
            .map(|b| sha256_hex(&b))
            .unwrap_or_default(),
        profile_sha256: profile_sha256.to_string(),
        bpf_sha256: bpf_sha256.to_string(),
        inputs: inputs.into_iter().collect(),
        code_sha256,
    }
}

/// Measure the run into the slot's TPM; a failure refuses the run under `required` and
/// empties the slot (software key only) under `auto`.
pub fn measure_slot(
    slot: &Slot,
    run: &str,
    policy_file: &Path,
    plan: MeasuredPlan,
) -> Result<(), String> {
    let mut s = slot.borrow_mut();
    let Some(t) = s.as_mut() else { return Ok(()) };
    match t.measure(run, policy_file, plan) {
        Ok(()) => Ok(()),
        Err(e) if t.mode == TpmMode::Required => Err(format!("TPM measurement failed: {e}")),
        Err(e) => {
            eprintln!("sealrun: warning: TPM measurement failed ({e}); this run is attested with the software key only");
            *s = None;
            Ok(())
        }
    }
}

/// Quote the written record if its run was measured: the evidence digest (for the audit
/// log's `end`), and an error to report after the audit entry is written (`required` only).
pub fn quote_slot(
    slot: &Slot,
    run: &str,
    record_path: &Path,
    record_bytes: &[u8],
) -> (Option<Digest>, Option<String>) {
    let mut s = slot.borrow_mut();
    let Some(t) = s.as_mut().filter(|t| t.measurement.is_some()) else {
        return (None, None);
    };
    match t.quote(run, record_path, record_bytes) {
        Ok(d) => (Some(d), None),
        Err(e) => {
            let msg = format!(
                "TPM quote of {} failed: {e}; the record is kept, without evidence",
                record_path.display()
            );
            eprintln!("sealrun: warning: {msg}");
            (None, (t.mode == TpmMode::Required).then_some(msg))
        }
    }
}
