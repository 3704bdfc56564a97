#![no_main]
//! OCI seccomp profiles (JSON): parsing and compiling to BPF never panic.
use libfuzzer_sys::fuzz_target;
use sealrun_sandbox::profile::OciSeccomp;

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = serde_json::from_slice::<OciSeccomp>(data) {
        let _ = sealrun_sandbox::seccomp::compile(&p, "fuzz");
    }
});
