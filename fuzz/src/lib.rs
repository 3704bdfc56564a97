//! Shared pieces of the fuzz targets: a scratch folder for parsers that read files, and one
//! signing key (made once per process) so that fuzzed payloads can be signed and reach the
//! checks behind the signature.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use sealrun_verifier::keys::SigningKey;
use sealrun_verifier::policy::Policy;

/// Largest input the targets look at (the real readers refuse more long before).
pub const MAX_INPUT: usize = 1 << 20;

/// A private folder for this fuzzing process.
pub fn scratch() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("scratch folder"))
        .path()
}

/// Write `bytes` to `name` in the scratch folder.
pub fn file(name: &str, bytes: &[u8]) -> PathBuf {
    let p = scratch().join(name);
    std::fs::write(&p, bytes).expect("write scratch file");
    p
}

/// The process's signing key.
pub fn key() -> &'static SigningKey {
    static KEY: OnceLock<SigningKey> = OnceLock::new();
    KEY.get_or_init(SigningKey::generate)
}

/// A policy that trusts [`key`] for everything.
pub fn policy() -> &'static Policy {
    static POLICY: OnceLock<Policy> = OnceLock::new();
    POLICY.get_or_init(|| Policy::single_key("fuzz", key().public()))
}

/// `data` split at its first 0xFF byte (two inputs from one).
pub fn split(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|&b| b == 0xff) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[]),
    }
}
