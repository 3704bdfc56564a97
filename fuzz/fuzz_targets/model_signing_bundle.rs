#![no_main]
//! OpenSSF model-signing (Sigstore) bundles: verifying the structure never panics.
use libfuzzer_sys::fuzz_target;
use sealrun_verifier::artifact::VerifyOptions;

fuzz_target!(|data: &[u8]| {
    if data.len() > sealrun_fuzz::MAX_INPUT {
        return;
    }
    let _ = sealrun_verifier::model_signing::is_bundle(data);
    let opts = VerifyOptions {
        policy: sealrun_fuzz::policy(),
        now: time::OffsetDateTime::UNIX_EPOCH,
        rollback: None,
        expected_kind: None,
        progress: None,
    };
    let _ = sealrun_verifier::model_signing::verify_signature(data, "fuzz", &opts);
});
