#![no_main]
//! Gate policies (TOML, naming a trust policy): loading never panics.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() > sealrun_fuzz::MAX_INPUT {
        return;
    }
    let p = sealrun_fuzz::file("gate.toml", data);
    let _ = sealrun_verifier::gate::load(&p);
});
