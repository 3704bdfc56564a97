//! The sealrun launcher: key generation, signing, the sandboxed `exec`, and
//! (with the job runner) verified, attested training runs.
//!
//! The binary `sealrun` is a thin front end over this library.

pub mod attest;
pub mod audit;
pub mod config;
pub mod copyhash;
pub mod demo;
pub mod events;
pub mod exec;
pub mod gpu;
pub mod history;
pub mod init;
pub mod keyfile;
pub mod outputs;
pub mod pipeline;
pub mod plan;
pub mod recover;
pub mod rollback;
pub mod run;
pub mod secrets;
pub mod sign;
pub mod spec;
pub mod stage;
pub mod store;
pub mod store_cmd;
pub mod summary;
pub mod terminal;
pub mod units;
pub mod venv;

/// The current UTC time as RFC 3339 (seconds precision).
pub fn now_rfc3339() -> String {
    let t = time::OffsetDateTime::now_utc();
    t.replace_nanosecond(0)
        .unwrap_or(t)
        .format(&time::format_description::well_known::Rfc3339)
        .expect("RFC 3339 formatting of a UTC time cannot fail")
}
