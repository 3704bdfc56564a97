#![no_main]
//! Job and pipeline specs (TOML): loading never panics, whatever the text.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() > sealrun_fuzz::MAX_INPUT {
        return;
    }
    let p = sealrun_fuzz::file("job.toml", data);
    let _ = sealrun_launcher::spec::Spec::load(&p);
});
