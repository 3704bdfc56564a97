//! The README's first command: `sealrun demo` runs end to end: sign → verify →
//! sandboxed training → signed record → offline verification → tamper refused.

use sealrun_integration::{ok, sealrun, verify};

#[test]
fn demo_runs_end_to_end_and_keeps_files_with_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("demo");
    let t = ok(sealrun(
        tmp.path(),
        &["demo", "--dir", dir.to_str().unwrap()],
    ));
    assert!(t.contains("demo passed"), "{t}");
    assert!(
        t.contains("trained on 400 rows"),
        "the training job must have run:\n{t}"
    );
    assert!(
        t.contains("refused: input \"raw\""),
        "the tamper step must be refused:\n{t}"
    );
    assert!(t.contains("digest mismatch"), "{t}");
    assert!(
        t.contains("OK chain of custody verified (4 nodes, 3 links)"),
        "{t}"
    );
    assert!(t.contains("PASS gate"), "{t}");
    assert!(dir.join("aibom.json").exists());
    for f in [
        "keys/registry.key",
        "keys/launcher.pub",
        "dataset.sig",
        "trust.toml",
        "code/train/train.py",
        "pipeline.toml",
        "audit.log",
    ] {
        assert!(dir.join(f).exists(), "{f} missing");
    }
    // What the demo left behind verifies independently: 1 run and 1 refusal.
    let t = ok(verify(&dir, &["log", "audit.log", "--trust", "trust.toml"]));
    assert!(t.contains("3 finished run(s), 1 refusal(s)"), "{t}");
}
