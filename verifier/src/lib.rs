//! Offline verification for sealrun: digests, manifests, keys, DSSE envelopes,
//! in-toto statements, trust policy, run records and the audit log.
//!
//! This crate is pure Rust with no platform-specific code and no `unsafe`, so an
//! auditor can build and run it on any machine.
#![forbid(unsafe_code)]

pub mod aibom;
pub mod artifact;
pub mod audit;
pub mod chain;
pub mod digest;
pub mod dsse;
pub mod fsread;
pub mod gate;
pub mod job;
pub mod keys;
pub mod labels;
pub mod lineage;
pub mod manifest;
pub mod model_signing;
pub mod outputs;
pub mod policy;
pub mod profiles;
pub mod progress;
pub mod record;
pub mod revocation;
pub mod rollback;
pub mod runinfo;
pub mod statement;
pub mod text;
pub mod tpm_evidence;
pub mod tpm_wire;

/// Exit codes shared by the sealrun command-line tools.
pub mod exit {
    /// Everything verified.
    pub const OK: u8 = 0;
    /// Something does not verify (tampered, untrusted, expired, ...).
    pub const VERIFY_FAILED: u8 = 1;
    /// Bad usage or unreadable input (missing file, malformed policy, ...).
    pub const USAGE: u8 = 2;
}
