//! TPM 2.0 evidence for a run record: the types of the quote file
//! (`records/NAME-ID.quote.json`) and of its PCR 23 event log.

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
