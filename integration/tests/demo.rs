//! The README's first command: `sealrun demo` runs end to end.

use sealrun_integration::{ok, sealrun};

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
        t.contains("FAILED (digest_mismatch)"),
        "the tamper step must be refused:\n{t}"
    );
    for f in [
        "keys/registry.key",
        "keys/registry.pub",
        "dataset.sig",
        "trust.toml",
    ] {
        assert!(dir.join(f).exists(), "{f} missing");
    }
}
