//! TPM 2.0 evidence for a run record: the quote file (`records/NAME-ID.quote.json`), its PCR 23
//! event log, and their offline verification.
//!
//! Guarantees of [`verify_evidence`] / [`check_record`]: evidence passes only if its attestation
//! key is trusted for `tpm-quote` and is the one the record names, the ECDSA P-256 signature is
//! that key's over the `TPMS_ATTEST` bytes as the TPM produced them, the quote's qualifying data
//! is the record file's SHA-256, the listed PCR values hash to the quoted digest, the event log
//! (from a reset) replays to the quoted PCR 23 and is exactly the record's measurement
//! (launcher, trust policy, plan), and the launcher is one the policy accepts; each failure has
//! a stable name ([`Failure::name`]). Nothing here is platform-specific.

use serde::{Deserialize, Serialize};

/// What happened to PCR 23.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PcrOp {
    /// `TPM2_PCR_Reset`: the PCR is all zeros again.
    Reset,
    /// `TPM2_PCR_Extend` with `digest`.
    Extend,
}

/// One entry of the PCR 23 event log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PcrEvent {
    /// Position in the host's log (1, 2, ...).
    pub seq: u64,
    pub pcr: u8,
    pub op: PcrOp,
    /// Hex SHA-256 extended (extends only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// `reset`, `launcher`, `policy` or `plan`.
    pub what: String,
    /// The run (invocation id) that made the change, or what else did (`unseal`).
    pub run: String,
    pub time: String,
}

use std::path::{Path, PathBuf};

use base64::Engine;
use sha2::{Digest as _, Sha256};

use crate::keys::PublicKey;
use crate::policy::{Kind, Policy};
use crate::record::TpmMeasurement;
use crate::tpm_wire::{read_pcr_selection, Reader, WireError};

/// The kind of evidence a quote file carries. TPM 2.0 quotes today; confidential-VM reports
/// (TDX, SEV-SNP) are later kinds of the same file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EvidenceKind {
    #[serde(rename = "tpm2-quote")]
    Tpm2Quote,
}

/// What the launcher could learn about the TPM (from `TPM2_GetCapability`: reported by the
/// TPM, not signed; only `firmware_version` is also inside the signed quote).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TpmInfo {
    /// TPM_PT_MANUFACTURER as text (`IFX`, `NTC`, `STM`, `INTC`, `MSFT`, `IBM`, ...).
    pub manufacturer: String,
    /// TPM_PT_VENDOR_STRING_1..4 as text.
    pub vendor: String,
    /// True for a TPM that says it is software (swtpm/libtpms: `IBM`, `SW TPM`): its keys
    /// and PCRs live in a file on the host, so it proves nothing about hardware.
    pub software: bool,
}

impl TpmInfo {
    /// `IBM` + a vendor string starting `SW` is libtpms (swtpm) or IBM's simulator.
    pub fn classify(manufacturer: &str, vendor: &str) -> bool {
        manufacturer.trim() == "IBM" && vendor.trim_start().starts_with("SW")
    }
}

/// `records/NAME-ID.quote.json`: a TPM 2.0 quote of a run record, as the TPM produced it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuoteEvidence {
    pub evidence: EvidenceKind,
    /// The record's file name (next to this file).
    pub record: String,
    /// Hex; the quote's qualifying data: the SHA-256 of the record file's bytes.
    pub nonce: String,
    /// `TPMS_ATTEST` bytes (base64), as `tpm2_checkquote -m` takes them.
    pub attest: String,
    /// `TPMT_SIGNATURE` bytes (base64), as `tpm2_checkquote -s` takes them.
    pub signature: String,
    /// e.g. `sha256:0,1,2,3,4,5,6,7,23` (`tpm2_checkquote -l`).
    pub pcr_selection: String,
    /// The selected PCRs' values concatenated in selection order (base64).
    pub pcr_values: String,
    /// PCR 23's events from its last reset up to the quote.
    pub event_log: Vec<PcrEvent>,
    /// Key id of the attestation key (as the trust policy lists it).
    pub ak_keyid: String,
    pub tpm: TpmInfo,
}

/// Largest quote file read (a real one is a few KiB).
pub const MAX_EVIDENCE_BYTES: u64 = 1 << 20;

/// The quote file of the record at `record`: `NAME-ID.json` -> `NAME-ID.quote.json`.
pub fn evidence_path(record: &Path) -> PathBuf {
    let name = record
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = name.strip_suffix(".json").unwrap_or(&name);
    record.with_file_name(format!("{stem}.quote.json"))
}

/// Why evidence did not verify; [`Failure::name`] is the stable name scripts match on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    NoTpmEvidence,
    Malformed,
    AkNotTrusted,
    BadQuoteSignature,
    NonceMismatch,
    PcrMismatch,
    EventLogMismatch,
    LauncherNotAccepted,
}

impl Failure {
    pub fn name(self) -> &'static str {
        match self {
            Failure::NoTpmEvidence => "no_tpm_evidence",
            Failure::Malformed => "malformed_tpm_evidence",
            Failure::AkNotTrusted => "ak_not_trusted",
            Failure::BadQuoteSignature => "bad_quote_signature",
            Failure::NonceMismatch => "nonce_mismatch",
            Failure::PcrMismatch => "pcr_mismatch",
            Failure::EventLogMismatch => "event_log_mismatch",
            Failure::LauncherNotAccepted => "launcher_not_accepted",
        }
    }
}

/// Evidence that does not verify: which check, and why.
#[derive(Debug, thiserror::Error)]
#[error("{}: {detail}", failure.name())]
pub struct EvidenceError {
    pub failure: Failure,
    pub detail: String,
}

fn fail(failure: Failure, detail: impl Into<String>) -> EvidenceError {
    EvidenceError {
        failure,
        detail: detail.into(),
    }
}

/// What verified evidence says.
#[derive(Clone, Debug)]
pub struct CheckedEvidence {
    /// The trust policy's name for the attestation key.
    pub ak: String,
    pub tpm: TpmInfo,
    /// The launcher digest PCR 23 was extended with (hex).
    pub launcher_sha256: String,
    /// TPM firmware version from the signed quote.
    pub firmware_version: u64,
}

/// A parsed `TPMS_ATTEST` of a quote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuoteInfo {
    pub extra_data: Vec<u8>,
    pub firmware_version: u64,
    pub reset_count: u32,
    pub pcr_select: Vec<(u16, Vec<u8>)>,
    pub pcr_digest: Vec<u8>,
}

/// Parse a quote's `TPMS_ATTEST` (magic `TPM_GENERATED_VALUE`, type `TPM_ST_ATTEST_QUOTE`).
pub fn parse_attest(b: &[u8]) -> Result<QuoteInfo, WireError> {
    let inv = |detail: String| WireError::Invalid {
        what: "TPMS_ATTEST",
        detail,
    };
    let mut r = Reader::new(b);
    let magic = r.u32("magic")?;
    if magic != 0xff54_4347 {
        return Err(inv(format!("magic 0x{magic:08x}, not TPM_GENERATED_VALUE")));
    }
    let ty = r.u16("type")?;
    if ty != 0x8018 {
        return Err(inv(format!("type 0x{ty:04x}, not a quote")));
    }
    r.tpm2b("qualifiedSigner")?;
    let extra_data = r.tpm2b("extraData")?.to_vec();
    r.u64("clock")?;
    let reset_count = r.u32("resetCount")?;
    r.u32("restartCount")?;
    r.u8("safe")?;
    let firmware_version = r.u64("firmwareVersion")?;
    let pcr_select = read_pcr_selection(&mut r)?;
    let pcr_digest = r.tpm2b("pcrDigest")?.to_vec();
    if r.remaining() != 0 {
        return Err(inv(format!("{} trailing bytes", r.remaining())));
    }
    Ok(QuoteInfo {
        extra_data,
        firmware_version,
        reset_count,
        pcr_select,
        pcr_digest,
    })
}

/// An ECDSA `TPMT_SIGNATURE` (sha256) as a DER signature [`PublicKey::verify`] takes.
pub fn ecdsa_signature_der(b: &[u8]) -> Result<Vec<u8>, WireError> {
    let inv = |detail: String| WireError::Invalid {
        what: "TPMT_SIGNATURE",
        detail,
    };
    let mut r = Reader::new(b);
    let (alg, hash) = (r.u16("sigAlg")?, r.u16("hash")?);
    if (alg, hash) != (0x0018, 0x000b) {
        return Err(inv(format!(
            "algorithm 0x{alg:04x}/0x{hash:04x}, not ECDSA-SHA256"
        )));
    }
    let (sr, ss) = (r.tpm2b("signatureR")?, r.tpm2b("signatureS")?);
    if r.remaining() != 0 || sr.len() > 32 || ss.len() > 32 {
        return Err(inv("not a P-256 signature".into()));
    }
    let pad = |x: &[u8]| {
        let mut a = [0u8; 32];
        a[32 - x.len()..].copy_from_slice(x);
        a
    };
    let sig = p256::ecdsa::Signature::from_scalars(pad(sr), pad(ss))
        .map_err(|e| inv(format!("r or s out of range: {e}")))?;
    // TPMs do not normalise s; ECDSA is as valid with s as with n - s.
    let sig = sig.normalize_s().unwrap_or(sig);
    Ok(sig.to_der().as_bytes().to_vec())
}

/// The ECC P-256 public key of a `TPMT_PUBLIC` (an attestation key's, from `TPM2_ReadPublic`).
pub fn p256_public_key(tpmt_public: &[u8]) -> Result<PublicKey, WireError> {
    let inv = |detail: String| WireError::Invalid {
        what: "TPMT_PUBLIC",
        detail,
    };
    let mut r = Reader::new(tpmt_public);
    let ty = r.u16("type")?;
    r.u16("nameAlg")?;
    r.u32("objectAttributes")?;
    r.tpm2b("authPolicy")?;
    if ty != 0x0023 {
        return Err(inv(format!("type 0x{ty:04x}, not ECC")));
    }
    if r.u16("symmetric")? != 0x0010 {
        return Err(inv("a signing key with a symmetric algorithm".into()));
    }
    if r.u16("scheme")? != 0x0010 {
        r.u16("scheme.hashAlg")?;
    }
    let curve = r.u16("curveID")?;
    if curve != 0x0003 {
        return Err(inv(format!("curve 0x{curve:04x}, not NIST P-256")));
    }
    if r.u16("kdf")? != 0x0010 {
        r.u16("kdf.hashAlg")?;
    }
    let (x, y) = (r.tpm2b("unique.x")?, r.tpm2b("unique.y")?);
    if x.len() != 32 || y.len() != 32 {
        return Err(inv("point coordinates are not 32 bytes".into()));
    }
    let mut sec1 = vec![0x04];
    sec1.extend_from_slice(x);
    sec1.extend_from_slice(y);
    p256::ecdsa::VerifyingKey::from_sec1_bytes(&sec1)
        .map(PublicKey::EcdsaP256)
        .map_err(|e| inv(format!("not a point on P-256: {e}")))
}

/// `sha256:0,1,2,...` for a parsed selection (sha256 bank only).
pub fn selection_string(sel: &[(u16, Vec<u8>)]) -> String {
    sel.iter()
        .map(|(alg, pcrs)| {
            let bank = if *alg == 0x000b {
                "sha256".to_string()
            } else {
                format!("0x{alg:04x}")
            };
            let list: Vec<String> = pcrs.iter().map(u8::to_string).collect();
            format!("{bank}:{}", list.join(","))
        })
        .collect::<Vec<_>>()
        .join("+")
}

/// Replay a PCR 23 event log that starts with a reset: the value PCR 23 holds after it.
pub fn replay(events: &[PcrEvent]) -> Result<[u8; 32], String> {
    if events.first().map(|e| e.op) != Some(PcrOp::Reset) {
        return Err("the event log does not start with a PCR 23 reset".into());
    }
    let mut v = [0u8; 32];
    for e in events {
        match e.op {
            PcrOp::Reset => v = [0u8; 32],
            PcrOp::Extend => {
                let d = e
                    .digest
                    .as_deref()
                    .and_then(|d| hex::decode(d).ok())
                    .filter(|d| d.len() == 32)
                    .ok_or_else(|| format!("event {}: not a SHA-256 digest", e.seq))?;
                let mut h = Sha256::new();
                h.update(v);
                h.update(&d);
                v = h.finalize().into();
            }
        }
    }
    Ok(v)
}

/// Verify quote evidence `ev` for the record file `record_bytes`, whose `internalParameters`
/// name its measurement `m`: the AK is trusted for `tpm-quote`, the signature is the AK's over
/// the attest bytes, the nonce is the record's digest, the quoted PCR digest is that of the
/// listed values, the event log replays to PCR 23 and holds the record's launcher and plan,
/// and the launcher is one the policy accepts (when it lists any).
pub fn verify_evidence(
    ev: &QuoteEvidence,
    record_bytes: &[u8],
    m: &TpmMeasurement,
    policy: &Policy,
) -> Result<CheckedEvidence, EvidenceError> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let ak = policy
        .lookup(&ev.ak_keyid)
        .into_iter()
        .find(|(k, _)| k.may_sign(Kind::TpmQuote))
        .map(|(k, _)| k)
        .ok_or_else(|| {
            fail(
                Failure::AkNotTrusted,
                format!(
                    "attestation key {} is not in the trust policy with kinds = [\"tpm-quote\"]",
                    ev.ak_keyid
                ),
            )
        })?;
    if let Some(r) = policy.revoked_key(&ak.name, &ak.key.keyid()) {
        return Err(fail(
            Failure::AkNotTrusted,
            format!("attestation key {:?}: {r}", ak.name),
        ));
    }
    if m.ak_keyid != ev.ak_keyid {
        return Err(fail(
            Failure::AkNotTrusted,
            format!(
                "the record names attestation key {}, the quote is by {}",
                m.ak_keyid, ev.ak_keyid
            ),
        ));
    }
    let malformed = |what: &str, e: String| fail(Failure::Malformed, format!("{what}: {e}"));
    let attest = b64
        .decode(&ev.attest)
        .map_err(|e| malformed("attest", e.to_string()))?;
    let sig = b64
        .decode(&ev.signature)
        .map_err(|e| malformed("signature", e.to_string()))?;
    let der =
        ecdsa_signature_der(&sig).map_err(|e| fail(Failure::BadQuoteSignature, e.to_string()))?;
    ak.key.verify(&attest, &der).map_err(|_| {
        fail(
            Failure::BadQuoteSignature,
            format!("the quote is not signed by attestation key {:?}", ak.name),
        )
    })?;
    let q = parse_attest(&attest).map_err(|e| malformed("attest", e.to_string()))?;
    let digest = Sha256::digest(record_bytes);
    if ev.nonce != hex::encode(digest) {
        return Err(fail(
            Failure::NonceMismatch,
            format!(
                "the quote file's nonce {} is not the record's SHA-256 {}",
                ev.nonce,
                hex::encode(digest)
            ),
        ));
    }
    if q.extra_data[..] != digest[..] {
        return Err(fail(
            Failure::NonceMismatch,
            format!(
                "the TPM quoted qualifying data {}, not the record's SHA-256",
                hex::encode(&q.extra_data)
            ),
        ));
    }
    let values = check_pcrs(ev, &q)?;
    let launcher = check_event_log(ev, m, &values)?;
    let accepted = if policy.tpm_launchers.is_empty() {
        &policy.launchers
    } else {
        &policy.tpm_launchers
    };
    if !accepted.is_empty() && !accepted.contains(&launcher) {
        return Err(fail(
            Failure::LauncherNotAccepted,
            format!("PCR 23 measured launcher sha256:{launcher}, which the policy's [tpm] launcher_sha256 does not list"),
        ));
    }
    Ok(CheckedEvidence {
        ak: ak.name.clone(),
        tpm: ev.tpm.clone(),
        launcher_sha256: launcher,
        firmware_version: q.firmware_version,
    })
}

/// The quoted selection is the listed one and the listed values hash to the quoted digest:
/// the values, by PCR index.
fn check_pcrs(ev: &QuoteEvidence, q: &QuoteInfo) -> Result<Vec<(u8, [u8; 32])>, EvidenceError> {
    let quoted = selection_string(&q.pcr_select);
    if quoted != ev.pcr_selection {
        return Err(fail(
            Failure::PcrMismatch,
            format!(
                "the TPM quoted PCRs {quoted}, the file lists {}",
                ev.pcr_selection
            ),
        ));
    }
    let values = base64::engine::general_purpose::STANDARD
        .decode(&ev.pcr_values)
        .map_err(|e| fail(Failure::PcrMismatch, format!("pcr_values: {e}")))?;
    let pcrs: Vec<u8> = q.pcr_select.iter().flat_map(|(_, p)| p.clone()).collect();
    if q.pcr_select.iter().any(|(alg, _)| *alg != 0x000b) || values.len() != 32 * pcrs.len() {
        return Err(fail(
            Failure::PcrMismatch,
            format!(
                "{} bytes of PCR values for {} sha256 PCRs",
                values.len(),
                pcrs.len()
            ),
        ));
    }
    if Sha256::digest(&values)[..] != q.pcr_digest[..] {
        return Err(fail(
            Failure::PcrMismatch,
            "the listed PCR values are not the ones the TPM quoted (their digest differs)",
        ));
    }
    Ok(pcrs
        .into_iter()
        .zip(values.chunks_exact(32))
        .map(|(p, v)| (p, <[u8; 32]>::try_from(v).unwrap_or([0; 32])))
        .collect())
}

/// The event log replays to the quoted PCR 23 and is the record's measurement: reset, then
/// launcher, policy and plan as the record names them. Returns the launcher digest (hex).
fn check_event_log(
    ev: &QuoteEvidence,
    m: &TpmMeasurement,
    values: &[(u8, [u8; 32])],
) -> Result<String, EvidenceError> {
    let bad = |d: String| fail(Failure::EventLogMismatch, d);
    let pcr23 = values
        .iter()
        .find(|(p, _)| *p == 23)
        .map(|(_, v)| *v)
        .ok_or_else(|| bad("PCR 23 is not quoted".into()))?;
    let replayed = replay(&ev.event_log).map_err(bad)?;
    if replayed != pcr23 {
        return Err(bad(format!(
            "replaying the event log gives PCR 23 = {}, the TPM quoted {}",
            hex::encode(replayed),
            hex::encode(pcr23)
        )));
    }
    let steps: Vec<(&str, &str)> = ev
        .event_log
        .iter()
        .skip(1)
        .map(|e| (e.what.as_str(), e.digest.as_deref().unwrap_or("")))
        .collect();
    let plan = hex::encode(Sha256::digest(
        serde_json::to_vec(&m.plan).expect("a MeasuredPlan serialises"),
    ));
    let expected = [
        ("launcher", m.launcher_sha256.as_str()),
        ("policy", m.policy_sha256.as_str()),
        ("plan", plan.as_str()),
    ];
    if steps != expected {
        return Err(bad(format!(
            "PCR 23 was extended with {steps:?} since its reset; the record's measurement is {expected:?}"
        )));
    }
    Ok(m.launcher_sha256.clone())
}

/// Check the evidence next to the record at `path` (see [`verify_evidence`]). No evidence is
/// fine (`Ok(None)`) unless `require`, or unless the record says it was quoted.
pub fn check_record(
    path: &Path,
    record_bytes: &[u8],
    measurement: Option<&TpmMeasurement>,
    policy: &Policy,
    require: bool,
) -> Result<Option<CheckedEvidence>, EvidenceError> {
    let file = evidence_path(path);
    use crate::fsread::{read_bounded, Follow, ReadError};
    // Bounded, not followed (a records folder others may write), not blocking.
    let bytes = match read_bounded(&file, "TPM evidence", MAX_EVIDENCE_BYTES, Follow::No) {
        Ok(b) => b,
        Err(ReadError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            return match (measurement, require) {
                (Some(_), _) => Err(fail(
                    Failure::NoTpmEvidence,
                    format!("the record says its run was measured into a TPM, but {} is missing", file.display()),
                )),
                (None, true) => Err(fail(
                    Failure::NoTpmEvidence,
                    format!("TPM evidence is required and the record has none ({} does not exist; the run was attested with a software key only)", file.display()),
                )),
                (None, false) => Ok(None),
            };
        }
        Err(e) => return Err(fail(Failure::Malformed, e.to_string())),
    };
    let ev: QuoteEvidence = serde_json::from_slice(&bytes)
        .map_err(|e| fail(Failure::Malformed, format!("{}: {e}", file.display())))?;
    let m = measurement.ok_or_else(|| {
        fail(
            Failure::EventLogMismatch,
            format!(
                "{} exists, but the record names no TPM measurement",
                file.display()
            ),
        )
    })?;
    verify_evidence(&ev, record_bytes, m, policy).map(Some)
}

/// Check the TPM evidence of every run record in a verified chain (`graph` from
/// [`crate::chain::verify_chain`] of the record `root_path` = `root_bytes`): each stage that
/// fails, by job name. A record's evidence is looked for next to where the index found it.
pub fn check_chain(
    root_path: &Path,
    root_bytes: &[u8],
    graph: &crate::chain::Graph,
    index: &crate::chain::Index,
    policy: &Policy,
    require: bool,
) -> Vec<(String, EvidenceError)> {
    let mut out = Vec::new();
    for node in &graph.nodes {
        if !matches!(node, crate::chain::Node::Stage { .. }) {
            continue;
        }
        let id = node.id();
        let (path, bytes) = match index.files.get(id) {
            Some((p, b)) => (p.clone(), b.as_slice()),
            None if id == graph.root => (root_path.to_path_buf(), root_bytes),
            None => continue,
        };
        let Some(vr) = crate::record::parse_unverified(bytes) else {
            continue;
        };
        if vr.is_pipeline() {
            continue;
        }
        let checked = vr
            .contents
            .internal
            .tpm_measurement()
            .map_err(|detail| fail(Failure::Malformed, detail))
            .and_then(|m| check_record(&path, bytes, m, policy, require));
        if let Err(e) = checked {
            out.push((vr.job_name().to_string(), e));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const ATTEST: &[u8] = include_bytes!("testdata/tpm/attest.bin");
    const SIG: &[u8] = include_bytes!("testdata/tpm/sig.bin");
    const VALUES: &[u8] = include_bytes!("testdata/tpm/pcr_values.bin");
    const AK: &str = include_str!("testdata/tpm/ak.pem");

    /// A quote made by tpm2-tools (`tpm2_quote -l sha256:0,1,2,3,4,5,6,7,23 -q 0011..eeff`
    /// against swtpm) and its AK (`tpm2_readpublic -f pem`).
    #[test]
    fn a_tpm2_tools_quote_parses_and_verifies() {
        let q = parse_attest(ATTEST).unwrap();
        assert_eq!(
            hex::encode(&q.extra_data),
            "00112233445566778899aabbccddeeff".repeat(2)
        );
        assert_eq!(selection_string(&q.pcr_select), "sha256:0,1,2,3,4,5,6,7,23");
        assert_eq!(Sha256::digest(VALUES)[..], q.pcr_digest[..]);
        let key = PublicKey::from_pem(AK).unwrap();
        let der = ecdsa_signature_der(SIG).unwrap();
        key.verify(ATTEST, &der).unwrap();
        let mut t = ATTEST.to_vec();
        t[40] ^= 1;
        assert!(key.verify(&t, &der).is_err());
    }

    /// The same AK's `TPM2B_PUBLIC` as `tpm2_create -u` wrote it.
    #[test]
    fn a_tpm2_tools_public_area_is_the_pem_key() {
        let b = hex::decode(concat!(
            "00580023000b00050072000000100018000b0003001000",
            "20b0591ca04252cbad8ca41fe2e1077ac17d70af4447415277",
            "3e9aebab2fc8e12100200b5262d4afd3177711ddc67cd71488",
            "0e046f8236ffde948645fb4eb84e6dd596"
        ))
        .unwrap();
        let key = p256_public_key(&b[2..]).unwrap();
        assert_eq!(key.keyid(), PublicKey::from_pem(AK).unwrap().keyid());
    }

    #[test]
    fn malformed_structures_are_errors() {
        assert!(parse_attest(&ATTEST[..ATTEST.len() - 1]).is_err());
        let mut t = ATTEST.to_vec();
        t[0] = 0;
        assert!(parse_attest(&t).is_err());
        assert!(ecdsa_signature_der(&SIG[..10]).is_err());
        assert!(p256_public_key(&[0, 0x23]).is_err());
    }

    #[test]
    fn replay_starts_at_a_reset() {
        let ev = |seq, op, digest: Option<&str>| PcrEvent {
            seq,
            pcr: 23,
            op,
            digest: digest.map(str::to_string),
            what: String::new(),
            run: String::new(),
            time: String::new(),
        };
        let aa = "aa".repeat(32);
        let log = vec![ev(1, PcrOp::Reset, None), ev(2, PcrOp::Extend, Some(&aa))];
        // The value tpm2_pcrextend left in PCR 23 after a reset (see the quote above).
        assert_eq!(
            hex::encode(replay(&log).unwrap()),
            hex::encode(&VALUES[256..])
        );
        assert!(replay(&log[1..]).is_err());
    }
}
