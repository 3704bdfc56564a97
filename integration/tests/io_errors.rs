//! I/O errors (#12.2) against the real binaries: EIO from a real ext4 filesystem shut down
//! mid-run (`EXT4_IOC_SHUTDOWN`, in a private mount namespace of the test's own), under the
//! records folder and under the output folder, and EACCES on a records folder a rootless
//! launcher may not write. Each ends with a clear error naming the path, and a record wherever
//! one can still be written: at once where the records folder works, by recovery once it works
//! again otherwise. A records folder that cannot be written stops the run before anything runs.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Output, Stdio};

use sealrun_integration::scratch::Scratch;
use sealrun_integration::{
    audit_entries, bin, envelope_statement, fails_with, text, wait_for, RunFixture, RUN_SANDBOX,
};

/// Writes /out/started, then keeps writing /out/tick until that fails (the disk "died"), or
/// for 30 s at most, or until /out/go appears; exits 0 either way.
const TICKER: &str = r#"import os, time
open("/out/started", "w").write("s")
t0 = time.time()
while time.time() - t0 < 30 and not os.path.exists("/out/go"):
    try:
        open("/out/tick", "w").write("t")
    except OSError:
        break
    time.sleep(0.05)
"#;

fn prepend(dir: &Path, spec: &str, lines: &str) {
    let p = dir.join(spec);
    let t = std::fs::read_to_string(&p).unwrap();
    std::fs::write(&p, format!("{lines}{t}")).unwrap();
}

/// `sealrun run SPEC` inside the scratch namespace; the disk dies once the job has started
/// (`started` is where the job's marker appears, seen from this process); then `go`, where the
/// output folder is on a working disk, lets the job end.
fn run_until_disk_dies(
    f: &RunFixture,
    s: &Scratch,
    job: &str,
    started: &Path,
    go: Option<&Path>,
) -> Output {
    let child = s
        .command(
            Command::new(bin("sealrun"))
                .args(["run", job, "--quiet"])
                .current_dir(f.dir()),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(started, "job start");
    s.shutdown();
    if let Some(go) = go {
        std::fs::write(go, "go").unwrap();
    }
    child.wait_with_output().unwrap()
}

fn verify_log(f: &RunFixture) -> serde_json::Value {
    let out = Command::new(bin("sealrun-verify"))
        .current_dir(f.dir())
        .args(["log", "audit.log", "--trust", "trust.toml", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "the log verifies: {}", text(&out));
    serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["summary"].clone()
}

#[test]
fn eio_under_the_records_folder_exits_74_and_recovery_writes_the_record_later() {
    let f = RunFixture::new();
    let mnt = f.dir().join("fs");
    let s = Scratch::ext4(&mnt, &f.dir().join("fs.img"), 16);
    let job = f.job("eio", TICKER, &[], RUN_SANDBOX);
    prepend(f.dir(), &job, "records = \"fs/records\"\n");
    // The job runs and ends; the record cannot be written: exit 74 naming the record's path.
    let out = run_until_disk_dies(
        &f,
        &s,
        &job,
        &f.dir().join("eio-out/started"),
        Some(&f.dir().join("eio-out/go")),
    );
    let msg = fails_with(out, 74, &["os error 5"]);
    assert!(msg.contains("fs/records/eio-"), "names the path: {msg}");
    // The log (on a working disk) verifies and shows the run as unfinished, not lost.
    let sm = verify_log(&f);
    assert_eq!(sm["unfinished"].as_array().unwrap().len(), 1, "{sm:#}");

    // The disk comes back: recovery closes the run and writes its record there.
    s.remount();
    let r = s.run(
        Command::new(bin("sealrun"))
            .args(["recover", &job])
            .current_dir(f.dir()),
    );
    assert!(r.status.success(), "{}", text(&r));
    let sm = verify_log(&f);
    assert_eq!(sm["unfinished"], serde_json::json!([]), "{sm:#}");
    assert_eq!(sm["aborted"].as_array().unwrap().len(), 1, "{sm:#}");
    let records: Vec<_> = std::fs::read_dir(s.view(&mnt.join("records")))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
        .collect();
    assert_eq!(records.len(), 1, "the aborted run's record: {records:?}");
    let end = audit_entries(&f.dir().join("audit.log"));
    assert!(
        end.last().unwrap()["outcome"]
            .as_str()
            .unwrap()
            .starts_with("aborted"),
        "{:#}",
        end.last().unwrap()
    );
}

#[test]
fn eio_under_the_output_folder_still_gives_a_signed_record_naming_it() {
    let f = RunFixture::new();
    let mnt = f.dir().join("fs");
    let s = Scratch::ext4(&mnt, &f.dir().join("fs.img"), 16);
    let job = f.job("eio", TICKER, &[], RUN_SANDBOX);
    let t = std::fs::read_to_string(f.dir().join(&job)).unwrap();
    std::fs::write(
        f.dir().join(&job),
        t.replace("output = \"eio-out\"", "output = \"fs/out\""),
    )
    .unwrap();
    let out = run_until_disk_dies(&f, &s, &job, &s.view(&mnt.join("out/started")), None);
    let code = out.status.code();
    let all = text(&out);
    assert_eq!(code, Some(67), "outputs not attested: {all}");
    assert!(all.contains("fs/out"), "names the output folder: {all}");
    assert!(all.contains("os error 5"), "says why (EIO): {all}");
    // The records folder works: the record is there, signed, and says the run failed.
    let rec = f.record("eio");
    let st = envelope_statement(&rec);
    let result =
        st["predicate"]["runDetails"]["metadata"]["sealrun:result"].to_string() + &st.to_string();
    assert!(result.contains("os error 5"), "{st:#}");
    let sm = verify_log(&f);
    assert_eq!(sm["unfinished"], serde_json::json!([]), "{sm:#}");
}

#[test]
fn a_records_folder_the_launcher_cannot_write_stops_the_run_before_it_starts() {
    assert_eq!(
        std::fs::metadata("/proc/self").unwrap().uid(),
        0,
        "this test switches to uid 65534 with setpriv: run the suite as root"
    );
    let f = RunFixture::new();
    let dir = f.dir();
    // A rootless launcher (uid 65534) owning its project, except the records folder (root's,
    // 0755): EACCES. No memory limit: a rootless launcher has no cgroup to set one in.
    let job = f.job(
        "eacces",
        "open('/out/ran', 'w').write('r')\n",
        &[],
        "profile = \"python\"\ntimeout = \"60s\"\n",
    );
    let chown = Command::new("chown")
        .args(["-R", "65534:65534"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(chown.status.success(), "{}", text(&chown));
    std::fs::set_permissions(dir, PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::create_dir(dir.join("records")).unwrap();
    std::fs::set_permissions(dir.join("records"), PermissionsExt::from_mode(0o755)).unwrap();
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(bin("sealrun"))
        .args(["run", &job, "--quiet"])
        .current_dir(dir)
        .env("SEALRUN_STORE", dir.join("store"))
        .output()
        .expect("setpriv (util-linux)");
    let msg = fails_with(
        out,
        74,
        &["records folder", "Permission denied", "nothing ran"],
    );
    assert!(msg.contains(&format!("{}/records", dir.display())), "{msg}");
    assert!(
        !dir.join("eacces-out").exists(),
        "the job must not have run"
    );
    // Nothing in the log claims a run that has no record.
    let log = dir.join("audit.log");
    if log.exists() {
        assert!(
            audit_entries(&log).iter().all(|e| e["event"] != "start"),
            "no run started"
        );
    }
}
