#![no_main]
//! Mount profiles (JSON): parsing never panics.
use libfuzzer_sys::fuzz_target;
use sealrun_sandbox::profile::MountProfile;

fuzz_target!(|data: &[u8]| {
    let _ = serde_json::from_slice::<MountProfile>(data);
});
