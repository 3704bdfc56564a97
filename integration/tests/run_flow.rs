//! `sealrun run` end to end, with the real binaries: a successful run and its
//! record, refusals, failures (exit status, timeout, OOM), an input changed on
//! the host while the job runs, output symlinks, a launcher killed mid-run, and
//! an independent check of the record with Python's securesystemslib.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sealrun_integration::{
    audit_entries, bin, byproduct, ensure_python_module, envelope_statement, fails_with,
    kill_leftovers, marked_pids, ok, remove_leaked_cgroups, run, sha256_hex, text, verify,
    wait_for, workspace_root, RunFixture, RUN_DATA, RUN_SANDBOX,
};

/// Job script: copy the input to /out/model.txt, write a nested output, print to both streams.
const TRAIN: &str = r#"import os, sys
data = open("/inputs/points/points.csv", "rb").read()
open("/out/model.txt", "wb").write(data.upper())
os.makedirs("/out/sub", exist_ok=True)
open("/out/sub/metrics.json", "w").write('{"loss": 0.5}')
print("training done")
print("a warning", file=sys.stderr)
"#;

fn verify_record(f: &RunFixture, record: &Path, outputs: Option<&str>) -> String {
    let rec = record.display().to_string();
    let mut args = vec!["record", rec.as_str(), "--trust", "trust.toml"];
    if let Some(o) = outputs {
        args.extend(["--outputs", o]);
    }
    ok(verify(f.dir(), &args))
}

fn end_of(record: &Path) -> serde_json::Value {
    byproduct(&envelope_statement(record), "end")["annotations"].clone()
}

#[test]
fn success_end_to_end() {
    let f = RunFixture::new();
    let job = f.job("train", TRAIN, &[], RUN_SANDBOX);
    let out = f.run(&job);
    let t = ok(out);
    assert!(t.contains("succeeded"), "{t}");
    let dir = f.dir();
    let record = f.record("train");
    let name = record.file_name().unwrap().to_string_lossy().into_owned();
    // records/<name>-<12 hex>.json
    let id = name
        .strip_prefix("train-")
        .and_then(|s| s.strip_suffix(".json"))
        .unwrap();
    assert!(
        id.len() == 12 && id.chars().all(|c| c.is_ascii_hexdigit()),
        "{name}"
    );

    // The record verifies, including every output file on disk.
    let v = verify_record(&f, &record, Some("train-out"));
    assert!(v.contains("2 output file(s) verified on disk"), "{v}");
    assert!(v.contains("ended: exited 0"), "{v}");
    let lg = ok(f.verify_log(false));
    assert!(lg.contains("2 entries"), "{lg}");
    assert!(!lg.contains("UNFINISHED"), "{lg}");

    let st = envelope_statement(&record);
    assert_eq!(st["_type"], "https://in-toto.io/Statement/v1");
    assert_eq!(st["predicateType"], "https://slsa.dev/provenance/v1");

    // Subjects: exactly the output files, with their sha256.
    let model = std::fs::read(dir.join("train-out/model.txt")).unwrap();
    assert_eq!(model, RUN_DATA.to_ascii_uppercase());
    let metrics = std::fs::read(dir.join("train-out/sub/metrics.json")).unwrap();
    let mut subjects: Vec<(String, String)> = st["subject"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_string(),
                s["digest"]["sha256"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    subjects.sort();
    assert_eq!(
        subjects,
        vec![
            ("model.txt".to_string(), sha256_hex(&model)),
            ("sub/metrics.json".to_string(), sha256_hex(&metrics)),
        ]
    );

    // resolvedDependencies: the input (digest, kind, labels, signer), the code, the executable.
    let deps = st["predicate"]["buildDefinition"]["resolvedDependencies"]
        .as_array()
        .unwrap();
    let dep = |n: &str| {
        deps.iter()
            .find(|d| d["name"] == n)
            .unwrap_or_else(|| panic!("no dependency {n}: {deps:#?}"))
    };
    let art: serde_json::Value = serde_json::from_slice(
        &verify(
            dir,
            &[
                "artifact",
                "data",
                "--signature",
                "data.sig",
                "--trust",
                "trust.toml",
                "--json",
            ],
        )
        .stdout,
    )
    .unwrap();
    let points = dep("points");
    assert_eq!(
        points["digest"]["sha256"], art["artifact"]["digest"],
        "{points:#}"
    );
    let ann = &points["annotations"];
    assert_eq!(ann["kind"], "dataset");
    assert_eq!(ann["labels"]["classification"], "internal");
    assert_eq!(ann["signer"], "registry");
    assert_eq!(ann["keyid"], f.reg_keyid.as_str());
    assert_eq!(ann["mount"], "/inputs/points");
    let code = dep("code");
    assert_eq!(code["digest"]["sha256"].as_str().unwrap().len(), 64);
    let exe = dep("executable");
    let exe_path = exe["uri"].as_str().unwrap().strip_prefix("file:").unwrap();
    assert!(exe_path.starts_with("/usr/bin/python3"), "{exe:#}");
    assert_eq!(
        exe["digest"]["sha256"].as_str().unwrap(),
        sha256_hex(&std::fs::read(exe_path).unwrap())
    );

    // Byproducts: log digests match the log files; `end` has the exit code.
    for (stream, want) in [("stdout", "training done\n"), ("stderr", "a warning\n")] {
        let log = dir.join(format!("records/train-{id}.{stream}.log"));
        let bytes = std::fs::read(&log).unwrap();
        assert_eq!(String::from_utf8_lossy(&bytes), want, "{stream} log");
        let b = byproduct(&st, stream);
        assert_eq!(b["digest"]["sha256"].as_str().unwrap(), sha256_hex(&bytes));
        assert_eq!(b["uri"], format!("file:{}", log.display()));
    }
    let end = &byproduct(&st, "end")["annotations"];
    assert_eq!(end["result"], "succeeded");
    assert_eq!(end["exit_status"], 0);
    assert_eq!(end["end"]["kind"], "exited");
    assert_eq!(end["end"]["code"], 0);
    assert!(st["predicate"]["runDetails"]["builder"]["id"]
        .as_str()
        .unwrap()
        .contains(&f.launcher_keyid));

    // Audit: start then end, the end naming the record's digest.
    let entries = audit_entries(&dir.join("audit.log"));
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0]["event"], "start");
    assert_eq!(entries[1]["event"], "end");
    assert_eq!(entries[1]["outcome"], "succeeded");
    assert_eq!(
        entries[1]["record"].as_str().unwrap(),
        sha256_hex(&std::fs::read(&record).unwrap())
    );
    assert_eq!(
        st["predicate"]["runDetails"]["metadata"]["invocationId"],
        entries[1]["invocation"]
    );
    // The staging copies are gone.
    let left: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(".sealrun-stage")
        })
        .map(|e| e.path())
        .collect();
    assert!(left.is_empty(), "staging folder left behind: {left:?}");
}

#[test]
fn tampered_input_is_refused_and_nothing_runs() {
    let f = RunFixture::new();
    let script = "open('/out/marker', 'w').write('ran')\n";
    let job = f.job("train", script, &[], RUN_SANDBOX);
    std::fs::write(f.dir().join("data/points.csv"), b"x,y\n1,2\n3,5\n").unwrap();
    let out = f.run(&job);
    fails_with(
        out,
        65,
        &[
            "refused",
            "input \"points\"",
            "points.csv",
            "digest mismatch",
            "nothing ran",
        ],
    );
    assert!(
        !f.dir().join("train-out/marker").exists(),
        "the job ran despite a tampered input"
    );
    // A `refused` entry and a signed refusal record naming the file and the reason.
    let entries = audit_entries(&f.dir().join("audit.log"));
    assert_eq!(entries.len(), 1, "{entries:#?}");
    assert_eq!(entries[0]["event"], "refused");
    let outcome = entries[0]["outcome"].as_str().unwrap();
    assert!(
        outcome.contains("points.csv") && outcome.contains("digest mismatch"),
        "{outcome}"
    );
    let record = f.record("train");
    verify_record(&f, &record, None);
    assert_eq!(
        entries[0]["record"].as_str().unwrap(),
        sha256_hex(&std::fs::read(&record).unwrap())
    );
    let end = end_of(&record);
    let reason = end["reason"].as_str().unwrap();
    assert!(reason.starts_with("refused: "), "{end:#}");
    assert!(
        reason.contains("points.csv") && reason.contains("digest mismatch"),
        "{reason}"
    );
    // The verifier's own name for the reason, for machines.
    assert_eq!(end["refusal"], "digest_mismatch", "{end:#}");
    ok(f.verify_log(false));
}

#[test]
fn input_changed_on_host_during_run_never_reaches_the_job() {
    let f = RunFixture::new();
    let script = r#"import time
open("/out/started", "w").write("1")
time.sleep(3)
open("/out/seen.csv", "wb").write(open("/inputs/points/points.csv", "rb").read())
"#;
    let job = f.job("train", script, &[], RUN_SANDBOX);
    let child = Command::new(bin("sealrun"))
        .current_dir(f.dir())
        .args(["run", &job, "--quiet"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(&f.dir().join("train-out/started"), "job start");
    // Change the host copy in place (same inode) while the job sleeps.
    let evil = b"x,y\n6,6\n6,6\n";
    std::fs::write(f.dir().join("data/points.csv"), evil).unwrap();
    let out = child.wait_with_output().unwrap();
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    let seen = std::fs::read(f.dir().join("train-out/seen.csv")).unwrap();
    assert_eq!(
        seen, RUN_DATA,
        "the job read bytes that changed after verification"
    );
    let record = f.record("train");
    verify_record(&f, &record, Some("train-out"));
    assert_eq!(end_of(&record)["result"], "succeeded");
}

#[test]
fn job_exit_status_passes_through() {
    let f = RunFixture::new();
    let script = "import sys\nopen('/out/partial', 'w').write('p')\nsys.exit(3)\n";
    let job = f.job("train", script, &[], RUN_SANDBOX);
    let out = f.run(&job);
    fails_with(out, 3, &["failed: exited 3"]);
    let record = f.record("train");
    verify_record(&f, &record, Some("train-out"));
    let end = end_of(&record);
    assert_eq!(end["result"], "failed: exited 3");
    assert_eq!(end["exit_status"], 3);
    assert_eq!(end["end"]["kind"], "exited");
    assert_eq!(end["end"]["code"], 3);
    let entries = audit_entries(&f.dir().join("audit.log"));
    assert_eq!(entries.last().unwrap()["outcome"], "failed: exited 3");
    ok(f.verify_log(false));
}

#[test]
fn job_killed_by_signal_exits_128_plus_n() {
    let f = RunFixture::new();
    let script = "import os, signal\nos.kill(os.getpid(), signal.SIGTERM)\n";
    let job = f.job("train", script, &[], RUN_SANDBOX);
    let out = f.run(&job);
    fails_with(out, 128 + 15, &["signal 15"]);
    let end = end_of(&f.record("train"));
    assert_eq!(end["result"], "failed: signal 15");
    assert_eq!(end["exit_status"], 143);
}

#[test]
fn timeout_kills_the_job_and_is_recorded() {
    let f = RunFixture::new();
    let script =
        "import time\nopen('/out/early', 'w').write('e')\ntime.sleep(30)\nopen('/out/late', 'w').write('x')\n";
    let sandbox = "profile = \"python\"\nmemory = \"512M\"\ntimeout = \"2s\"\n";
    let job = f.job("train", script, &[], sandbox);
    let t0 = Instant::now();
    let out = f.run(&job);
    let took = t0.elapsed();
    fails_with(out, 124, &["timeout"]);
    assert!(took < Duration::from_secs(20), "took {took:?}");
    assert!(!f.dir().join("train-out/late").exists());
    let record = f.record("train");
    verify_record(&f, &record, Some("train-out"));
    let end = end_of(&record);
    assert_eq!(end["result"], "failed: timeout");
    assert_eq!(end["reason"], "timeout");
    assert_eq!(end["end"]["kind"], "timeout");
    assert_eq!(end["exit_status"], 124);
    ok(f.verify_log(false));
}

#[test]
fn oom_is_recorded_as_oom_killed() {
    let f = RunFixture::new();
    // Touch every byte so the pages are really charged to the cgroup.
    let script = "open('/out/early', 'w').write('e')\nx = b'\\x01' * (512 << 20)\nopen('/out/late', 'w').write(str(len(x)))\n";
    let sandbox = "profile = \"python\"\nmemory = \"64M\"\ntimeout = \"60s\"\n";
    let job = f.job("train", script, &[], sandbox);
    let out = f.run(&job);
    fails_with(out, 128 + 9, &["oom-killed"]);
    assert!(!f.dir().join("train-out/late").exists());
    let record = f.record("train");
    verify_record(&f, &record, Some("train-out"));
    let end = end_of(&record);
    assert_eq!(end["result"], "failed: oom-killed");
    assert_eq!(end["reason"], "oom-killed");
    assert_eq!(end["end"]["kind"], "oom_killed", "{end:#}");
    let entries = audit_entries(&f.dir().join("audit.log"));
    assert_eq!(entries.last().unwrap()["outcome"], "failed: oom-killed");
}

#[test]
fn output_symlink_is_recorded_not_followed() {
    let f = RunFixture::new();
    let script = r#"import os
os.symlink("/etc/passwd", "/out/link")
open("/out/real.txt", "w").write("real")
"#;
    let job = f.job("train", script, &[], RUN_SANDBOX);
    ok(f.run(&job));
    let link = f.dir().join("train-out/link");
    assert_eq!(
        std::fs::read_link(&link).unwrap(),
        Path::new("/etc/passwd"),
        "the symlink is left as the job made it"
    );
    let record = f.record("train");
    let v = verify_record(&f, &record, Some("train-out"));
    assert!(v.contains("1 output file(s)"), "{v}");
    let st = envelope_statement(&record);
    let names: Vec<&str> = st["subject"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["real.txt"]);
    let nf = &byproduct(&st, "output-non-files")["annotations"]["not_followed"];
    assert_eq!(
        nf,
        &serde_json::json!([{"path": "link", "kind": "symlink", "target": "/etc/passwd"}]),
    );
    // /etc/passwd's content is nowhere in the record.
    let passwd = std::fs::read(&link).unwrap();
    let rec_text = serde_json::to_string(&st).unwrap();
    assert!(!rec_text.contains(&sha256_hex(&passwd)));
}

/// Start job `kill` (sleeps 30 s, argv carries `marker`), wait until it runs,
/// SIGKILL the launcher and reap it; returns the launcher's pid.
fn start_and_kill_launcher(f: &RunFixture, marker: &str) -> u32 {
    let script = r#"import time, sys
open("/out/started", "w").write(sys.argv[1])
time.sleep(30)
open("/out/finished", "w").write("x")
"#;
    let job = f.job("kill", script, &[marker], RUN_SANDBOX);
    let mut child = Command::new(bin("sealrun"))
        .current_dir(f.dir())
        .args(["run", &job, "--quiet"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(&f.dir().join("kill-out/started"), "job start");
    assert!(
        !marked_pids(marker).is_empty(),
        "the job's process is not visible by its marker"
    );
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    child.id()
}

#[test]
fn launcher_sigkilled_mid_run_leaves_no_process() {
    let f = RunFixture::new();
    let marker = format!("sealrun-kill-marker-a-{}", std::process::id());
    let launcher = start_and_kill_launcher(&f, &marker);
    let t0 = Instant::now();
    loop {
        if marked_pids(&marker).is_empty() {
            break;
        }
        if t0.elapsed() > Duration::from_secs(5) {
            let left = kill_leftovers(&marker);
            std::thread::sleep(Duration::from_millis(300));
            remove_leaked_cgroups(launcher);
            panic!("processes of the job survived the launcher by 5 s: {left:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!f.dir().join("kill-out/finished").exists());
    remove_leaked_cgroups(launcher);
}

#[test]
fn launcher_sigkilled_mid_run_leaves_a_verifiable_log_with_the_unfinished_run() {
    let f = RunFixture::new();
    let marker = format!("sealrun-kill-marker-b-{}", std::process::id());
    let launcher = start_and_kill_launcher(&f, &marker);
    // (Whether the job outlives the launcher is the test above; end it here either way.)
    std::thread::sleep(Duration::from_millis(500));
    kill_leftovers(&marker);
    std::thread::sleep(Duration::from_millis(300));
    remove_leaked_cgroups(launcher);
    // The log still verifies and shows the run as unfinished.
    let entries = audit_entries(&f.dir().join("audit.log"));
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0]["event"], "start");
    let inv = entries[0]["invocation"].as_str().unwrap().to_string();
    let t = ok(f.verify_log(false));
    assert!(t.contains("UNFINISHED"), "{t}");
    assert!(t.contains(&inv), "{t}");
    let j: serde_json::Value = serde_json::from_slice(&f.verify_log(true).stdout).unwrap();
    assert_eq!(j["summary"]["unfinished"], serde_json::json!([inv]));
    // No record was signed for it; the next run on the log closes it (see recovery.rs) and
    // appends normally (the lock died with the launcher).
    assert!(f.records("kill").is_empty());
    let next = f.job("next", "open('/out/m', 'w').write('m')\n", &[], RUN_SANDBOX);
    ok(f.run(&next));
    let j: serde_json::Value = serde_json::from_slice(&f.verify_log(true).stdout).unwrap();
    assert_eq!(j["ok"], true, "{j:#}");
    assert_eq!(j["summary"]["entries"], 4);
    assert_eq!(j["summary"]["runs_finished"], 2);
    assert_eq!(j["summary"]["unfinished"], serde_json::json!([]));
    assert_eq!(j["summary"]["aborted"], serde_json::json!([inv]));
}

#[test]
fn record_of_run_without_outputs_verifies_against_its_empty_output_folder() {
    let f = RunFixture::new();
    let job = f.job("train", "import sys\nsys.exit(2)\n", &[], RUN_SANDBOX);
    fails_with(f.run(&job), 2, &["failed: exited 2"]);
    let record = f.record("train");
    verify_record(&f, &record, Some("train-out"));
}

#[test]
fn non_empty_output_folder_is_refused() {
    let f = RunFixture::new();
    let job = f.job(
        "train",
        "open('/out/marker', 'w').write('ran')\n",
        &[],
        RUN_SANDBOX,
    );
    std::fs::create_dir(f.dir().join("train-out")).unwrap();
    std::fs::write(f.dir().join("train-out/old.bin"), b"stale").unwrap();
    let out = f.run(&job);
    fails_with(out, 64, &["train-out", "output folder is not empty"]);
    assert!(!f.dir().join("train-out/marker").exists());
    assert_eq!(
        std::fs::read(f.dir().join("train-out/old.bin")).unwrap(),
        b"stale"
    );
    assert!(f.records("train").is_empty(), "no run, no record");
}

#[test]
fn record_verifies_with_securesystemslib_and_has_slsa_fields() {
    ensure_python_module("securesystemslib.dsse", "securesystemslib[crypto]");
    ensure_python_module("cryptography", "cryptography");
    let f = RunFixture::new();
    let job = f.job("train", TRAIN, &[], RUN_SANDBOX);
    ok(f.run(&job));
    let record = f.record("train");
    let script = workspace_root().join("integration/python/record_check.py");
    let py = |rec: &Path| {
        run(Command::new("python3")
            .current_dir(f.dir())
            .arg(&script)
            .arg(rec)
            .args(["launcher.pub", &f.launcher_keyid]))
    };
    let out = py(&record);
    let t = text(&out);
    assert!(out.status.success(), "record_check.py refused:\n{t}");
    assert!(t.contains("buildType https://sealrun.dev/run/v1"), "{t}");
    assert!(t.contains(&format!("keyid={}", f.launcher_keyid)), "{t}");

    // A record with one payload byte changed does not verify.
    let mut env: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&record).unwrap()).unwrap();
    let mut st = envelope_statement(&record);
    st["subject"][0]["digest"]["sha256"] = serde_json::json!("00".repeat(32));
    env["payload"] = serde_json::json!(b64(&serde_json::to_vec(&st).unwrap()));
    let bad = f.dir().join("bad.json");
    std::fs::write(&bad, serde_json::to_vec(&env).unwrap()).unwrap();
    let out = py(&bad);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("does not verify"), "{}", text(&out));
    // The Rust verifier agrees.
    let out = verify(
        f.dir(),
        &["record", "bad.json", "--trust", "trust.toml", "--json"],
    );
    fails_with(out, 1, &["bad_signature"]);
}

fn b64(b: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(b)
}

#[test]
fn sigterm_to_the_launcher_is_forwarded_and_the_run_recorded() {
    let f = RunFixture::new();
    let script = r#"import signal, sys, time
def term(*_):
    open("/out/term", "w").write("got SIGTERM")
    sys.exit(7)
signal.signal(signal.SIGTERM, term)
open("/out/started", "w").write("1")
time.sleep(30)
"#;
    let job = f.job("train", script, &[], RUN_SANDBOX);
    let child = Command::new(bin("sealrun"))
        .current_dir(f.dir())
        .args(["run", &job, "--quiet"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(&f.dir().join("train-out/started"), "job start");
    // SAFETY: kill(2) of the launcher this test just spawned (not yet reaped).
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let t0 = Instant::now();
    let out = child.wait_with_output().unwrap();
    assert!(t0.elapsed() < Duration::from_secs(20));
    fails_with(out, 7, &["failed: exited 7"]);
    assert_eq!(
        std::fs::read_to_string(f.dir().join("train-out/term")).unwrap(),
        "got SIGTERM"
    );
    let record = f.record("train");
    verify_record(&f, &record, Some("train-out"));
    assert_eq!(end_of(&record)["result"], "failed: exited 7");
    let t = ok(f.verify_log(false));
    assert!(!t.contains("UNFINISHED"), "{t}");
}

#[test]
fn outputs_changed_after_the_run_fail_record_verification() {
    let f = RunFixture::new();
    let job = f.job("train", TRAIN, &[], RUN_SANDBOX);
    ok(f.run(&job));
    let record = f.record("train");
    let rec = record.display().to_string();
    let check = |needles: &[&str]| {
        let out = verify(
            f.dir(),
            &[
                "record",
                &rec,
                "--trust",
                "trust.toml",
                "--outputs",
                "train-out",
            ],
        );
        fails_with(out, 1, needles);
    };
    let model = f.dir().join("train-out/model.txt");
    let orig = std::fs::read(&model).unwrap();
    let mut changed = orig.clone();
    changed[0] ^= 1;
    std::fs::write(&model, &changed).unwrap();
    check(&["model.txt", "digest mismatch"]);
    std::fs::write(&model, &orig).unwrap();
    std::fs::write(f.dir().join("train-out/extra.bin"), b"x").unwrap();
    check(&["extra.bin"]);
    std::fs::remove_file(f.dir().join("train-out/extra.bin")).unwrap();
    std::fs::remove_file(f.dir().join("train-out/sub/metrics.json")).unwrap();
    check(&["sub/metrics.json", "missing"]);
}

#[test]
fn record_signed_by_a_key_not_allowed_for_records_is_refused() {
    let f = RunFixture::new();
    let job = f.job("train", TRAIN, &[], RUN_SANDBOX);
    ok(f.run(&job));
    let record = f.record("train").display().to_string();
    std::fs::write(
        f.dir().join("trust-ckpt-only.toml"),
        sealrun_integration::RUN_TRUST.replace(
            "kinds = [\"record\", \"checkpoint\"]",
            "kinds = [\"checkpoint\"]",
        ),
    )
    .unwrap();
    let out = verify(
        f.dir(),
        &[
            "record",
            &record,
            "--trust",
            "trust-ckpt-only.toml",
            "--json",
        ],
    );
    let t = fails_with(out, 1, &["kind_not_allowed", "\"launcher\""]);
    assert!(t.contains("may not") || t.contains("does not allow"), "{t}");
}

#[test]
fn resource_use_is_recorded() {
    let f = RunFixture::new();
    let script = "x = b'\\x01' * (100 << 20)\nopen('/out/n', 'w').write(str(len(x)))\n";
    let job = f.job("train", script, &[], RUN_SANDBOX);
    ok(f.run(&job));
    let record = f.record("train");
    let st = envelope_statement(&record);
    let end = &byproduct(&st, "end")["annotations"];
    let peak = end["peak_memory_bytes"].as_u64().unwrap();
    assert!(
        (100 << 20..512 << 20).contains(&peak),
        "peak memory {peak} for a 100 MiB job"
    );
    assert!(end["cpu_user_ms"].as_u64().unwrap() + end["cpu_sys_ms"].as_u64().unwrap() > 0);
    assert!(end["wall_ms"].as_u64().is_some());
    let sb = &byproduct(&st, "sandbox")["annotations"];
    assert!(sb["denied_syscalls"].is_array() && sb["egress_attempts"].is_array());
    let ip = &st["predicate"]["buildDefinition"]["internalParameters"];
    assert_eq!(ip["profile"], "python");
    assert_eq!(ip["limits"]["memory_bytes"], 512u64 << 20);
    assert_eq!(ip["limits"]["timeout_s"], 60.0);
    for k in ["profile_sha256", "bpf_sha256"] {
        assert_eq!(ip[k].as_str().map(str::len), Some(64), "{k}: {ip:#}");
    }
    assert!(ip["landlock_abi"].is_number(), "{ip:#}");
    assert!(ip["launcher_version"].is_string(), "{ip:#}");
}

#[test]
fn output_fifo_is_recorded_not_opened() {
    let f = RunFixture::new();
    let script = "import os\nos.mkfifo('/out/pipe')\nopen('/out/real.txt', 'w').write('r')\n";
    let job = f.job("train", script, &[], RUN_SANDBOX);
    let t0 = Instant::now();
    ok(f.run(&job));
    assert!(t0.elapsed() < Duration::from_secs(20), "hashing blocked?");
    let record = f.record("train");
    verify_record(&f, &record, Some("train-out"));
    let st = envelope_statement(&record);
    assert_eq!(st["subject"].as_array().unwrap().len(), 1);
    assert_eq!(st["subject"][0]["name"], "real.txt");
    let nf = byproduct(&st, "output-non-files")["annotations"]["not_followed"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(nf.len(), 1, "{nf:#?}");
    assert_eq!(nf[0]["path"], "pipe");
    assert_ne!(nf[0]["kind"], "symlink");
}

/// An input named `code` next to a code folder, staged without the store: both are copied into
/// the run's staging folder (the code folder under a name no input can take), the job reads
/// each at its own mount, and the run is recorded. Before, the code folder's copy met the
/// input's in the staging folder: exit 74, a raw "File exists", no record, no audit entry.
#[test]
fn an_input_named_code_next_to_the_code_folder_runs_and_is_recorded() {
    let f = RunFixture::new();
    let script = "data = open('/inputs/code/points.csv', 'rb').read()\nopen('/out/copy.csv', 'wb').write(data)\n";
    let job = f.job("clash", script, &[], RUN_SANDBOX);
    let spec = std::fs::read_to_string(f.dir().join(&job))
        .unwrap()
        .replace("name = \"points\"", "name = \"code\"");
    let spec = format!("store = \"off\"\n{spec}");
    std::fs::write(f.dir().join(&job), spec).unwrap();
    let t = ok(f.run(&job));
    assert!(t.contains("succeeded"), "{t}");
    assert_eq!(
        std::fs::read(f.dir().join("clash-out/copy.csv")).unwrap(),
        RUN_DATA
    );
    let st = envelope_statement(&f.record("clash"));
    let deps = st["predicate"]["buildDefinition"]["resolvedDependencies"]
        .as_array()
        .unwrap();
    let named = |n: &str| deps.iter().filter(|d| d["name"] == n).count();
    // The input and the code folder are both dependencies, each once.
    assert_eq!(named("code"), 2, "{deps:?}");
    assert!(deps
        .iter()
        .any(|d| d["annotations"]["mount"] == "/inputs/code"));
    assert!(deps.iter().any(|d| d["annotations"]["mount"] == "/code"));
    let entries = audit_entries(&f.dir().join("audit.log"));
    assert_eq!(entries.last().unwrap()["event"], "end", "{entries:?}");
}

/// A code folder that cannot be staged (a symlink in it: staging copies regular files and
/// folders only) refuses the run with a record and an audit entry (exit 125, `end.refusal`
/// `staging`); it used to end with exit 74 and no record.
#[test]
fn a_code_folder_that_cannot_be_staged_refuses_the_run_with_a_record() {
    let f = RunFixture::new();
    let job = f.job("link", "open('/out/m', 'w').write('m')\n", &[], RUN_SANDBOX);
    std::os::unix::fs::symlink("/etc/hostname", f.dir().join("link-code/elsewhere")).unwrap();
    let out = f.run(&job);
    let msg = fails_with(out, 125, &["refused", "code", "elsewhere", "nothing ran"]);
    assert!(!f.dir().join("link-out/m").exists(), "{msg}");
    let end = end_of(&f.record("link"));
    assert_eq!(end["refusal"], "staging", "{end:#}");
    let entries = audit_entries(&f.dir().join("audit.log"));
    assert_eq!(entries.last().unwrap()["event"], "refused", "{entries:?}");
    ok(f.verify_log(false));
}
