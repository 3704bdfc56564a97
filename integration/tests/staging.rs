//! Attacks on what `sealrun run` stages for a job, with the real binaries: cheap checks before
//! any file is read or copied (a sparse 8 GiB unsigned file, a resized signed file), only the
//! signed files staged (a model-signing bundle's ignored paths), and a staging folder swapped
//! by another local user.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sealrun_integration::{fails_with, ok, verify, RunFixture, RUN_SANDBOX};

mod msign;
use msign::model_signing_sign;

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
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(".sealrun-stage")
        })
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
fn sparse_file_added_to_a_producers_outputs_is_refused_before_any_copy() {
    let f = RunFixture::new();
    let prod = f.job(
        "prod",
        "open('/out/model.txt', 'w').write('m')\n",
        &[],
        RUN_SANDBOX,
    );
    ok(f.run(&prod));
    let record = f.record("prod");
    sparse(&f.dir().join("prod-out/huge.bin"), 8 << 30);
    let spec = format!(
        "name = \"use\"\ncommand = [\"true\"]\noutput = \"use-out\"\ntrust = \"trust.toml\"\nsigning_key = \"launcher.key\"\n[[input]]\nname = \"m\"\npath = \"prod-out\"\nfrom_record = {:?}\nkind = \"model\"\n[sandbox]\n{RUN_SANDBOX}",
        record.display().to_string()
    );
    std::fs::write(f.dir().join("use.toml"), spec).unwrap();
    let t0 = Instant::now();
    let out = f.run("use.toml");
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

// ---- 14. Only what was signed reaches the job ----

/// A job spec with one input `model` (`model/`, `model.sig`) running `script`.
fn model_job(f: &RunFixture, name: &str, script: &str) -> String {
    sealrun_integration::write_tree(
        f.dir(),
        &[(&format!("{name}-code/train.py"), script.as_bytes())],
    );
    let spec = format!(
        "name = {name:?}\ncommand = [\"python3\", \"/code/train.py\"]\ncode = \"{name}-code\"\noutput = \"{name}-out\"\ntrust = \"trust.toml\"\nsigning_key = \"launcher.key\"\n[[input]]\nname = \"model\"\npath = \"model\"\nsignature = \"model.sig\"\n[sandbox]\n{RUN_SANDBOX}"
    );
    let file = format!("{name}.toml");
    std::fs::write(f.dir().join(&file), spec).unwrap();
    file
}

/// Lists every file the job can see under /inputs/model.
const LIST_MODEL: &str = r#"import os
seen = []
for root, dirs, files in os.walk("/inputs/model"):
    for n in files + dirs:
        seen.append(os.path.relpath(os.path.join(root, n), "/inputs/model"))
open("/out/listing", "w").write("\n".join(sorted(seen)))
"#;

#[test]
fn files_a_model_signing_bundle_ignores_never_reach_the_job() {
    let f = RunFixture::new();
    let files: [(&str, &[u8]); 5] = [
        ("weights.bin", b"\x00\x01\x02 signed weights"),
        ("sub/config.json", b"{\"layers\": 2}"),
        // Ignored by the bundle, so unsigned: a checkout's history and a poisoned hook.
        (".git/HEAD", b"ref: refs/heads/main\n"),
        (".git/hooks/post-checkout", b"unsigned bytes\n"),
        (".gitattributes", b"*.bin filter=lfs\n"),
    ];
    sealrun_integration::write_tree(&f.dir().join("model"), &files);
    std::fs::write(
        f.dir().join("model.sig"),
        model_signing_sign(f.dir(), "model", &files),
    )
    .unwrap();
    let job = model_job(&f, "ms", LIST_MODEL);
    let t = ok(f.run(&job));
    assert!(t.contains("succeeded"), "{t}");
    let listing = std::fs::read_to_string(f.dir().join("ms-out/listing")).unwrap();
    assert_eq!(
        listing, "sub\nsub/config.json\nweights.bin",
        "the job saw files the signature does not cover"
    );
    // And the verified digest in the record is the bundle's.
    let record = f.record("ms");
    let st = sealrun_integration::envelope_statement(&record);
    let deps = st["predicate"]["buildDefinition"]["resolvedDependencies"]
        .as_array()
        .unwrap();
    let model = deps.iter().find(|d| d["name"] == "model").unwrap();
    assert_eq!(model["annotations"]["format"], "model-signing", "{model:#}");
}

// ---- 13. The staged copy belongs to the launcher ----

/// Another local user (uid 65534) who can write the spec's folder: it renames every staging
/// folder it sees and plants its own, same-named, with unsigned bytes in the staged input's
/// place; for a launcher that reuses `.sealrun-stage/`, it swaps the run's folder as soon as
/// the code is staged (the inputs are verified by then). Stops when `stop` exists.
const ATTACKER: &str = r#"import os, sys, time
base, evil, stop = sys.argv[1], sys.argv[2].encode(), sys.argv[3]
code = open(os.path.join(base, "swap-code/train.py"), "rb").read()
legacy = os.path.join(base, ".sealrun-stage")
mine, swaps = set(), 0
def plant(path):
    for rel, data in (("points/points.csv", evil), ("code/train.py", code)):
        p = os.path.join(path, rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        open(p, "wb").write(data)
def swap(parent, name):
    global swaps
    try:
        os.rename(os.path.join(parent, name), os.path.join(parent, "moved" + name))
        plant(os.path.join(parent, name))
        mine.add(name)
        swaps += 1
    except OSError:
        pass
t0 = time.time()
while not os.path.exists(stop) and time.time() - t0 < 120:
    for e in os.scandir(base):
        if e.name.startswith(".sealrun-stage-") and e.name not in mine:
            swap(base, e.name)
    try:
        for e in os.scandir(legacy):
            if e.name not in mine and not e.name.startswith("moved") and os.path.exists(os.path.join(e.path, "code")):
                swap(legacy, e.name)
    except OSError:
        pass
print(swaps)
"#;

/// The job: copy what it reads as its input to /out/seen.
const COPY_INPUT: &str =
    "open('/out/seen', 'wb').write(open('/inputs/points/points.csv', 'rb').read())\n";

fn can_switch_to_nobody() -> bool {
    let root = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .any(|l| l.starts_with("Uid:\t0\t"));
    let setpriv = std::process::Command::new("setpriv")
        .arg("--version")
        .output()
        .is_ok();
    // (The suite runs as root, and .ci/run installs setpriv: a missing piece is a failure, never
    // a silent pass.)
    assert!(
        root && setpriv && Path::new("/usr/bin/python3").exists(),
        "this test needs root, setpriv (util-linux) and /usr/bin/python3 to act as another local user"
    );
    true
}

#[test]
fn staging_folder_swapped_by_another_user_never_feeds_the_job_unsigned_bytes() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    if !can_switch_to_nobody() {
        return;
    }
    let f = RunFixture::new();
    let dir = f.dir();
    // The spec's folder is writable by another local user.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let job = f.job("swap", COPY_INPUT, &[], RUN_SANDBOX);
    // The staging folder is what is attacked here, not the verified store: copy every run.
    let spec = std::fs::read_to_string(dir.join(&job)).unwrap();
    std::fs::write(dir.join(&job), format!("store = \"off\"\n{spec}")).unwrap();
    // Its trap for a launcher that stages under a fixed name: made first, by that user.
    let legacy = dir.join(".sealrun-stage");
    std::fs::create_dir(&legacy).unwrap();
    std::os::unix::fs::chown(&legacy, Some(65534), Some(65534)).unwrap();
    std::fs::set_permissions(&legacy, std::fs::Permissions::from_mode(0o777)).unwrap();
    std::fs::write(dir.join("attacker.py"), ATTACKER).unwrap();
    let evil = "x,y\n6,6,6\n";
    let stop = dir.join("stop");
    /// Ends the attacker (a child of this test) if an assertion fails first.
    struct Reap(Option<std::process::Child>);
    impl Drop for Reap {
        fn drop(&mut self) {
            if let Some(c) = self.0.as_mut() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
    let attacker = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg("/usr/bin/python3")
        .arg(dir.join("attacker.py"))
        .arg(dir)
        .arg(evil)
        .arg(&stop)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut attacker = Reap(Some(attacker));
    let mut outcomes = Vec::new();
    for _ in 0..4 {
        let out = f.run(&job);
        let t = sealrun_integration::text(&out);
        match out.status.code() {
            Some(0) => {
                let seen = std::fs::read(dir.join("swap-out/seen")).unwrap();
                assert_eq!(
                    seen,
                    sealrun_integration::RUN_DATA,
                    "the job read unsigned bytes:\n{t}"
                );
                outcomes.push("ran on the signed bytes");
            }
            // The swap landed between mkdir and open: refused, naming the other owner.
            Some(125) => {
                assert!(
                    t.contains("staging folder")
                        && t.contains("owned by uid 65534, not by the launcher"),
                    "{t}"
                );
                outcomes.push("refused");
            }
            other => panic!("unexpected exit {other:?}:\n{t}"),
        }
        let _ = std::fs::remove_dir_all(dir.join("swap-out"));
    }
    std::fs::write(&stop, b"").unwrap();
    let swaps = attacker.0.take().unwrap().wait_with_output().unwrap();
    let swaps = String::from_utf8_lossy(&swaps.stdout).trim().to_string();
    eprintln!("outcomes {outcomes:?}, the other user swapped {swaps} staging folder(s)");
    assert!(swaps.parse::<u32>().unwrap() >= 1, "the attack never ran");
    // The trap was never used: the launcher neither staged in it nor changed its mode.
    let meta = std::fs::metadata(&legacy).unwrap();
    assert_eq!((meta.uid(), meta.mode() & 0o7777), (65534, 0o777));
    assert_eq!(std::fs::read_dir(&legacy).unwrap().count(), 0);
}
