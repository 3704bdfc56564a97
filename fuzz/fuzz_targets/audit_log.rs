#![no_main]
//! Audit logs and checkpoints: the chain check never panics, every entry it accepts writes back
//! to the same line (parse ∘ write = identity), and the full check (log + checkpoint, split at
//! the first 0xFF byte) never panics.
use libfuzzer_sys::fuzz_target;
use sealrun_verifier::audit::{check_chain, verify_log, LogOptions};

fuzz_target!(|data: &[u8]| {
    if data.len() > sealrun_fuzz::MAX_INPUT {
        return;
    }
    let (log, cp) = sealrun_fuzz::split(data);
    if let Ok(entries) = check_chain("fuzz", log) {
        let lines: Vec<&[u8]> = log
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .collect();
        for ((e, _), line) in entries.iter().zip(lines) {
            assert_eq!(e.to_line(), line);
        }
    }
    let p = sealrun_fuzz::file("audit.log", log);
    sealrun_fuzz::file("audit.log.checkpoint", cp);
    let opts = LogOptions {
        require_checkpoint: false,
        allow_unsigned_tail: true,
    };
    let _ = verify_log(&p, sealrun_fuzz::policy(), opts);
});
