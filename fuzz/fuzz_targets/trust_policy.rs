#![no_main]
//! Trust policies (TOML): parsing never panics.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = sealrun_fuzz::scratch().join("trust.toml");
    let _ = sealrun_verifier::policy::Policy::parse(text, &path);
});
