//! Attacks on what `sealrun run` stages for a job, with the real binaries: cheap checks before
//! any file is read or copied (a sparse 8 GiB unsigned file, a resized signed file), only the
//! signed files staged (a model-signing bundle's ignored paths), and a staging folder swapped
//! by another local user.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sealrun_integration::{fails_with, ok, verify, RunFixture, RUN_SANDBOX};

/// Well under a second: what a directory walk and a signature check cost, not hashing 8 GiB
/// (seconds) or copying it.
const CHEAP: Duration = Duration::from_millis(700);

/// A job that would leave a marker if it ran.
const MARK: &str = "open('/out/ran', 'w').write('ran')\n";

/// Staging folders left in the fixture's folder.
fn stage_dirs(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".sealrun-stage"))
        .map(|e| e.path())
        .collect()
}

fn sparse(path: &Path, len: u64) {
    File::options()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .unwrap()
        .set_len(len)
        .unwrap();
}

#[test]
fn sparse_unsigned_8g_file_is_refused_in_milliseconds_before_any_copy() {
    let f = RunFixture::new();
    let job = f.job("sparse", MARK, &[], RUN_SANDBOX);
    sparse(&f.dir().join("data/huge.bin"), 8 << 30);
    let t0 = Instant::now();
    let out = f.run(&job);
    let took = t0.elapsed();
    fails_with(
        out,
        65,
        &[
            "file huge.bin: extra file (on disk but not signed)",
            "nothing ran",
        ],
    );
    assert!(took < CHEAP, "sealrun run took {took:?} to refuse");
    assert!(!f.dir().join("sparse-out/ran").exists());
    assert_eq!(stage_dirs(f.dir()), Vec::<PathBuf>::new());
    // The verifier alone: the same order, the same speed.
    let t0 = Instant::now();
    let out = verify(
        f.dir(),
        &[
            "artifact",
            "data",
            "--signature",
            "data.sig",
            "--trust",
            "trust.toml",
        ],
    );
    let took = t0.elapsed();
    fails_with(out, 1, &["extra_file", "huge.bin"]);
    assert!(took < CHEAP, "sealrun-verify took {took:?} to refuse");
}

#[test]
fn signed_file_with_another_size_is_refused_before_hashing() {
    let f = RunFixture::new();
    let job = f.job("resized", MARK, &[], RUN_SANDBOX);
    // points.csv is signed at 12 bytes; grow it (sparsely) to 8 GiB.
    sparse(&f.dir().join("data/points.csv"), 8 << 30);
    let t0 = Instant::now();
    let out = f.run(&job);
    let took = t0.elapsed();
    fails_with(
        out,
        65,
        &["file points.csv: size mismatch: expected 12 bytes, actual 8589934592 bytes"],
    );
    assert!(took < CHEAP, "sealrun run took {took:?} to refuse");
    assert!(!f.dir().join("resized-out/ran").exists());
    assert_eq!(stage_dirs(f.dir()), Vec::<PathBuf>::new());
}

#[test]
fn signed_input_runs_after_the_cheap_checks() {
    // The order changed, not the outcome: a clean input still verifies and runs.
    let f = RunFixture::new();
    let job = f.job(
        "clean",
        "open('/out/copy', 'wb').write(open('/inputs/points/points.csv', 'rb').read())\n",
        &[],
        RUN_SANDBOX,
    );
    let t = ok(f.run(&job));
    assert!(t.contains("succeeded"), "{t}");
    assert_eq!(
        std::fs::read(f.dir().join("clean-out/copy")).unwrap(),
        sealrun_integration::RUN_DATA
    );
}
