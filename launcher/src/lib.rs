//! The sealrun launcher: key generation, signing, the sandboxed `exec`, and
//! (with the job runner) verified, attested training runs.
//!
//! The binary `sealrun` is a thin front end over this library.

pub mod attest;
pub mod audit;
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

/// SHA-256 (hex) of the running `sealrun` binary (`/proc/self/exe`), hashed once; every record
/// names it (`internalParameters.launcher_sha256`), and a trust policy can pin the builds it
/// accepts. Empty if the binary cannot be read.
pub fn launcher_sha256() -> &'static str {
    static DIGEST: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DIGEST.get_or_init(|| {
        sealrun_verifier::digest::hash_file(std::path::Path::new("/proc/self/exe"), u64::MAX)
            .map(|(_, d, _)| d.to_hex())
            .unwrap_or_default()
    })
}

/// The current UTC time as RFC 3339 (seconds precision).
pub fn now_rfc3339() -> String {
    let t = time::OffsetDateTime::now_utc();
    t.replace_nanosecond(0)
        .unwrap_or(t)
        .format(&time::format_description::well_known::Rfc3339)
        .expect("RFC 3339 formatting of a UTC time cannot fail")
}
