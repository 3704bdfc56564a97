//! `sealrun-verify record --outputs` checks symlinks, FIFOs and other
//! non-files too (issue #11, item 15): they must be exactly the record's
//! `output-non-files` (path, kind, link text); anything extra, missing or
//! changed fails, naming the entry.

use std::process::Command;

use sealrun_integration::{fails_with, ok, verify, RunFixture, RUN_SANDBOX};

const SCRIPT: &str =
    "import os\nopen('/out/model.txt', 'w').write('m')\nos.symlink('model.txt', '/out/latest')\n";

fn verify_outputs(f: &RunFixture, rec: &str) -> std::process::Output {
    verify(
        f.dir(),
        &["record", rec, "--trust", "trust.toml", "--outputs", "j-out"],
    )
}

#[test]
fn non_files_in_the_outputs_must_match_the_record() {
    let f = RunFixture::new();
    let job = f.job("j", SCRIPT, &[], RUN_SANDBOX);
    ok(f.run(&job));
    let rec = f.record("j").display().to_string();
    ok(verify_outputs(&f, &rec));
    let out = f.dir().join("j-out");
    // An extra FIFO.
    let st = Command::new("mkfifo")
        .arg(out.join("pipe"))
        .status()
        .unwrap();
    assert!(st.success());
    fails_with(
        verify_outputs(&f, &rec),
        1,
        &[
            "FAILED (extra_non_file)",
            "\"pipe\": special on disk but not in the record's output-non-files",
        ],
    );
    std::fs::remove_file(out.join("pipe")).unwrap();
    // An extra symlink.
    std::os::unix::fs::symlink("/etc/passwd", out.join("extra")).unwrap();
    fails_with(
        verify_outputs(&f, &rec),
        1,
        &[
            "FAILED (extra_non_file)",
            "\"extra\": symlink -> \"/etc/passwd\"",
        ],
    );
    std::fs::remove_file(out.join("extra")).unwrap();
    ok(verify_outputs(&f, &rec));
    // The recorded symlink pointed elsewhere.
    std::fs::remove_file(out.join("latest")).unwrap();
    std::os::unix::fs::symlink("/etc/shadow", out.join("latest")).unwrap();
    fails_with(
        verify_outputs(&f, &rec),
        1,
        &[
            "FAILED (non_file_changed)",
            "\"latest\": symlink -> \"/etc/shadow\" on disk, but the record says symlink -> \"model.txt\"",
        ],
    );
    // ... or is gone.
    std::fs::remove_file(out.join("latest")).unwrap();
    fails_with(
        verify_outputs(&f, &rec),
        1,
        &[
            "FAILED (missing_non_file)",
            "\"latest\": symlink -> \"model.txt\" in the record",
        ],
    );
}
