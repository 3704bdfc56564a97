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
pub mod inputs;
pub mod keyfile;
pub mod launch;
pub mod outputs;
pub mod pipeline;
pub mod plan;
pub mod recover;
pub mod rollback;
pub mod run;
pub mod secrets;
pub mod sign;
pub mod signals;
pub mod slurm;
pub mod spec;
pub mod staging;
pub mod store;
pub mod store_cmd;
pub mod summary;
pub mod terminal;
pub mod tpm;
pub mod units;
pub mod venv;

/// SHA-256 (hex) of the running `sealrun` binary (`/proc/self/exe`), hashed once; every record
/// names it (`internalParameters.launcher_sha256`), and a trust policy can pin the builds it
/// accepts. Empty if the binary cannot be read. The digest is cached in
/// `$HOME/.cache/sealrun/` under the binary's device, inode, size and change time (a file the
/// launcher's uid owns and no one else may write), so a refusal does not wait for a large
/// binary to be hashed again.
pub fn launcher_sha256() -> &'static str {
    static DIGEST: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DIGEST.get_or_init(|| {
        let exe = std::path::Path::new("/proc/self/exe");
        let cache = launcher_digest_cache(exe);
        if let Some(hex) = cache.as_ref().and_then(|c| read_own_file(c)) {
            return hex;
        }
        let hex = sealrun_verifier::digest::hash_file(exe, u64::MAX)
            .map(|(_, d, _)| d.to_hex())
            .unwrap_or_default();
        if let (Some(c), false) = (cache, hex.is_empty()) {
            let _ = c
                .parent()
                .map(std::fs::create_dir_all)
                .transpose()
                .and_then(|_| sealrun_verifier::rollback::write_atomic(&c, hex.as_bytes()));
        }
        hex
    })
}

fn launcher_digest_cache(exe: &std::path::Path) -> Option<std::path::PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(exe).ok()?;
    let home = std::env::var_os("HOME").filter(|h| !h.is_empty())?;
    Some(
        std::path::Path::new(&home)
            .join(".cache/sealrun")
            .join(format!(
                "launcher-{:x}-{:x}-{:x}-{:x}.{:x}.sha256",
                m.dev(),
                m.ino(),
                m.size(),
                m.ctime(),
                m.ctime_nsec()
            )),
    )
}

/// The content of `path` if it is a 64-hex-digit digest in a regular file owned by this
/// process's uid and writable by no one else.
fn read_own_file(path: &std::path::Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::symlink_metadata(path).ok()?;
    if !m.is_file() || m.uid() != nix::unistd::geteuid().as_raw() || m.mode() & 0o022 != 0 {
        return None;
    }
    let t = std::fs::read_to_string(path).ok()?;
    (t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit())).then_some(t)
}

pub use sealrun_verifier::text::now_rfc3339;
