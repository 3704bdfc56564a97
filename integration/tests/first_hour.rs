//! The first hour with sealrun (issue #14), end to end with the real binaries:
//! `sealrun init` makes a project that runs and passes the release gate.

use std::path::{Path, PathBuf};

use sealrun_integration::{
    envelope_statement, fails_with, ok, sealrun, text, verify, RunFixture, RUN_SANDBOX,
};

/// The record path `sealrun run` printed (`sealrun: record PATH`).
fn record_of(out: &str) -> PathBuf {
    out.lines()
        .find_map(|l| l.strip_prefix("sealrun: record "))
        .map(|p| PathBuf::from(p.trim()))
        .unwrap_or_else(|| panic!("no record line in:\n{out}"))
}

/// `sealrun init DIR` in a fresh temp folder; returns (tempdir, project folder).
fn init_project() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("proj");
    let t = ok(sealrun(tmp.path(), &["init", "proj"]));
    assert!(t.contains("sealrun run job.toml"), "{t}");
    (tmp, dir)
}

fn gate(dir: &Path, record: &Path) -> String {
    ok(verify(
        dir,
        &[
            "gate",
            &record.display().to_string(),
            "--policy",
            "gate.toml",
        ],
    ))
}

#[test]
fn init_then_run_then_gate() {
    let (_tmp, dir) = init_project();
    for f in [
        "keys/registry.key",
        "keys/launcher.pub",
        "trust.toml",
        "dataset/points.csv",
        "dataset.sig",
        "code/train.py",
        "job.toml",
        "pipeline.toml",
        "gate.toml",
        "NEXT-STEPS.txt",
    ] {
        assert!(dir.join(f).exists(), "init did not write {f}");
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.join("keys/launcher.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(
        mode & 0o077,
        0,
        "private key is readable by others: {mode:o}"
    );
    let out = ok(sealrun(&dir, &["run", "job.toml", "--quiet"]));
    assert!(out.contains("succeeded"), "{out}");
    let record = record_of(&out);
    let g = gate(&dir, &record);
    assert!(g.starts_with("PASS"), "{g}");
    let v = ok(verify(&dir, &["log", "audit.log", "--trust", "trust.toml"]));
    assert!(!v.contains("UNFINISHED"), "{v}");
}

#[test]
fn init_pipeline_runs_and_its_last_stage_passes_the_gate() {
    let (_tmp, dir) = init_project();
    let out = ok(sealrun(&dir, &["run", "pipeline.toml", "--quiet"]));
    assert!(out.contains("pipeline succeeded"), "{out}");
    let record = record_of(&out);
    let g = gate(&dir, &record);
    assert!(g.starts_with("PASS"), "{g}");
}

#[test]
fn init_refuses_a_non_empty_folder_unless_forced() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("proj");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("notes.txt"), "mine").unwrap();
    let t = fails_with(
        sealrun(tmp.path(), &["init", "proj"]),
        64,
        &["not empty", "--force"],
    );
    assert!(!dir.join("job.toml").exists(), "{t}");
    assert!(!dir.join("keys").exists(), "{t}");
    let out = sealrun(tmp.path(), &["init", "proj", "--force"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(dir.join("job.toml").exists());
    assert_eq!(
        std::fs::read_to_string(dir.join("notes.txt")).unwrap(),
        "mine"
    );
}

// ---- Plan-time checks (#14.2): exit 64, file:line:col, no record, no audit entry ----

/// Nothing was verified, recorded or logged.
fn nothing_recorded(f: &RunFixture) {
    let records: Vec<_> = std::fs::read_dir(f.dir().join("records"))
        .map(|d| d.filter_map(|e| e.ok()).collect())
        .unwrap_or_default();
    assert!(records.is_empty(), "records written: {records:?}");
    assert!(!f.dir().join("audit.log").exists(), "audit log written");
}

const MODEL: &str = "open('/out/model.txt', 'w').write('m')\n";

#[test]
fn plan_refuses_a_signing_key_the_trust_policy_does_not_allow() {
    let f = RunFixture::new();
    ok(sealrun(f.dir(), &["keygen", "--out", "stranger"]));
    let job = f.job("train", MODEL, &[], RUN_SANDBOX);
    let text = std::fs::read_to_string(f.dir().join(&job)).unwrap();
    // A key the policy does not list at all.
    std::fs::write(
        f.dir().join(&job),
        text.replace(
            "signing_key = \"launcher.key\"",
            "signing_key = \"stranger.key\"",
        ),
    )
    .unwrap();
    fails_with(
        f.run(&job),
        64,
        &[
            "train.toml:6:15: signing_key:",
            "may not sign record or checkpoint",
            "does not list it",
        ],
    );
    nothing_recorded(&f);
    // A key the policy lists, but only for datasets.
    std::fs::write(
        f.dir().join(&job),
        text.replace(
            "signing_key = \"launcher.key\"",
            "signing_key = \"reg.key\"",
        ),
    )
    .unwrap();
    fails_with(
        f.run(&job),
        64,
        &["train.toml:6:15: signing_key:", "\"registry\""],
    );
    nothing_recorded(&f);
    assert!(!f.dir().join("train-out/model.txt").exists());
}

#[test]
fn plan_refuses_an_unknown_profile_before_verifying() {
    let f = RunFixture::new();
    let job = f.job(
        "train",
        MODEL,
        &[],
        "profile = \"pyhton\"\nmemory = \"512M\"\n",
    );
    fails_with(
        f.run(&job),
        64,
        &["train.toml:12:11: sandbox.profile:", "pyhton", "python"],
    );
    nothing_recorded(&f);
    // A path is resolved against the spec's folder, and must exist.
    let job = f.job("train", MODEL, &[], "profile = \"profiles/mine.json\"\n");
    fails_with(
        f.run(&job),
        64,
        &["train.toml:12:11: sandbox.profile:", "profiles/mine.json"],
    );
    nothing_recorded(&f);
}

const TWO_STAGES: &str = r#"name = "two"
trust = "trust.toml"
signing_key = "launcher.key"

[[stage]]
name = "first"
command = ["python3", "-c", "open('/out/a.txt', 'w').write('a')"]
output = "OUT1"
produces = "dataset"
[[stage.input]]
name = "points"
path = "data"
signature = "data.sig"
[stage.sandbox]
profile = "python"
timeout = "60s"

[[stage]]
name = "second"
command = ["python3", "-c", "open('/out/b.txt', 'w').write(open('/inputs/a/a.txt').read())"]
output = "OUT2"
[[stage.input]]
name = "a"
from_stage = "first"
[stage.sandbox]
profile = "python"
timeout = "60s"
"#;

#[test]
fn plan_checks_every_stage_output_before_the_first_stage_runs() {
    let f = RunFixture::new();
    let spec = TWO_STAGES
        .replace("OUT1", "out-first")
        .replace("OUT2", "out-second");
    std::fs::write(f.dir().join("two.toml"), spec).unwrap();
    std::fs::create_dir(f.dir().join("out-second")).unwrap();
    std::fs::write(f.dir().join("out-second/stale"), "old").unwrap();
    fails_with(
        f.run("two.toml"),
        64,
        &[
            "two.toml:21:10: stage[1].output:",
            "output folder is not empty",
        ],
    );
    nothing_recorded(&f);
    assert!(!f.dir().join("out-first").exists(), "the first stage ran");
}

// ---- Output placeholders (#14.3) ----

#[test]
fn output_placeholders_make_a_new_folder_per_run_and_are_recorded() {
    let f = RunFixture::new();
    let job = f.job("train", MODEL, &[], RUN_SANDBOX);
    let text = std::fs::read_to_string(f.dir().join(&job)).unwrap();
    std::fs::write(
        f.dir().join(&job),
        text.replace(
            "output = \"train-out\"",
            "output = \"runs/{date}-{name}-{invocation}\"",
        ),
    )
    .unwrap();
    let first = record_of(&ok(f.run(&job)));
    let second = record_of(&ok(f.run(&job)));
    assert_ne!(first, second);
    let date = time::OffsetDateTime::now_utc().date();
    let day = format!(
        "{:04}-{:02}-{:02}",
        date.year(),
        u8::from(date.month()),
        date.day()
    );
    for record in [&first, &second] {
        let st = envelope_statement(&f.dir().join(record));
        let id = st["predicate"]["runDetails"]["metadata"]["invocationId"]
            .as_str()
            .unwrap()
            .to_string();
        let folder = format!("runs/{day}-train-{}", &id[..12]);
        assert!(f.dir().join(&folder).join("model.txt").exists(), "{folder}");
        let ext = &st["predicate"]["buildDefinition"]["externalParameters"];
        assert_eq!(ext["output"], folder.as_str(), "{ext}");
        assert_eq!(ext["output_template"], "runs/{date}-{name}-{invocation}");
        ok(verify(
            f.dir(),
            &[
                "record",
                &record.display().to_string(),
                "--trust",
                "trust.toml",
                "--outputs",
                &folder,
            ],
        ));
    }
}

#[test]
fn an_unknown_output_placeholder_is_a_plan_error() {
    let f = RunFixture::new();
    let job = f.job("train", MODEL, &[], RUN_SANDBOX);
    let text = std::fs::read_to_string(f.dir().join(&job)).unwrap();
    std::fs::write(
        f.dir().join(&job),
        text.replace("output = \"train-out\"", "output = \"runs/{time}\""),
    )
    .unwrap();
    fails_with(
        f.run(&job),
        64,
        &[
            "train.toml:4:10: output:",
            "unknown placeholder",
            "{invocation}",
        ],
    );
    nothing_recorded(&f);
}

// ---- The summary after a run, and --json (#14.4) ----

/// `sealrun run --json SPEC` in the fixture's folder, parsed (exactly one JSON object on stdout).
fn run_json(f: &RunFixture, spec: &str) -> (Option<i32>, serde_json::Value) {
    let out = sealrun(f.dir(), &["run", "--json", spec]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let v: serde_json::Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("not one JSON object ({e}):\n{}", text(&out)));
    (out.status.code(), v)
}

#[test]
fn summary_counts_each_sandbox_event_once() {
    let f = RunFixture::new();
    // One refused connect (egress, not also a denied syscall), two ptrace and one mount.
    let script = "import ctypes, socket\ntry:\n    socket.socket().connect(('127.0.0.1', 9))\nexcept OSError:\n    pass\nlibc = ctypes.CDLL(None, use_errno=True)\nlibc.syscall(101, 0, 0, 0, 0)\nlibc.syscall(101, 0, 0, 0, 0)\nlibc.syscall(165, 0, 0, 0, 0, 0)\nprint('noise on stdout')\nopen('/out/model.txt', 'w').write('m')\n";
    let job = f.job("train", script, &[], RUN_SANDBOX);
    let (code, v) = run_json(&f, &job);
    assert_eq!(code, Some(0), "{v:#}");
    assert_eq!(v["ok"], true);
    assert_eq!(v["result"], "succeeded");
    assert_eq!(v["egress_attempts"], 1, "{v:#}");
    assert_eq!(v["denied_syscalls"], 3, "{v:#}");
    assert_eq!(v["secret_leaks"], 0);
    let run = &v["stages"][0]["run"];
    assert_eq!(run["denied_syscalls"]["ptrace"], 2, "{run:#}");
    assert_eq!(run["denied_syscalls"]["mount"], 1, "{run:#}");
    assert!(run["denied_syscalls"].get("connect").is_none(), "{run:#}");
    assert_eq!(run["output"], "train-out");
    assert_eq!(run["output_files"], 1);
    assert_eq!(run["inputs"][0]["signer"], "registry");
    assert_eq!(v["record"], v["hand_over"]);
    assert!(f.dir().join(v["record"].as_str().unwrap()).exists());
    // The text summary says the same, once each.
    std::fs::remove_dir_all(f.dir().join("train-out")).unwrap();
    let t = ok(f.run(&job));
    assert!(
        t.contains("3 denied syscalls (mount, ptrace×2), 1 egress attempt, 0 secret leaks"),
        "{t}"
    );
    assert!(t.contains("outputs: 1 file(s) in train-out"), "{t}");
    assert!(t.contains("exit status 0"), "{t}");
}

#[test]
fn json_shapes_of_run_refusal_error_and_sign() {
    let f = RunFixture::new();
    let job = f.job("train", MODEL, &[], RUN_SANDBOX);
    // A refusal (a tampered dataset): a record, result refused, status 65.
    std::fs::write(f.dir().join("data/points.csv"), b"x,y\n9,99\n3,4\n").unwrap();
    let (code, v) = run_json(&f, &job);
    assert_eq!(code, Some(65));
    assert_eq!(v["ok"], false);
    assert_eq!(v["result"], "refused", "{v:#}");
    assert_eq!(v["stages"][0]["run"]["ending"], "refused");
    // A plan error: no record, status 64, the error's text.
    let bad = f.job("bad", MODEL, &[], "profile = \"nope\"\n");
    let (code, v) = run_json(&f, &bad);
    assert_eq!(code, Some(64));
    assert_eq!(v["ok"], false);
    assert!(v["record"].is_null());
    assert!(
        v["error"].as_str().unwrap().contains("sandbox.profile"),
        "{v:#}"
    );
    // sign --json: one object.
    let out = sealrun(
        f.dir(),
        &[
            "sign", "data", "--key", "reg.key", "--kind", "dataset", "--json", "--out", "d2.sig",
        ],
    );
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["ok"], true);
    assert_eq!(s["files"], 1);
    assert_eq!(s["kind"], "dataset");
    assert!(s["root"].as_str().unwrap().starts_with("sha256:"));
    let out = sealrun(
        f.dir(),
        &[
            "sign", "nowhere", "--key", "reg.key", "--kind", "dataset", "--json",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["ok"], false);
    assert!(s["error"].as_str().unwrap().contains("nowhere"), "{s}");
}

#[test]
fn pipeline_summary_names_each_stage_record_and_the_one_to_hand_over() {
    let f = RunFixture::new();
    let spec = TWO_STAGES
        .replace("OUT1", "out-first")
        .replace("OUT2", "out-second");
    std::fs::write(f.dir().join("two.toml"), spec).unwrap();
    let (code, v) = run_json(&f, "two.toml");
    assert_eq!(code, Some(0), "{v:#}");
    assert_eq!(v["pipeline"], true);
    let stages = v["stages"].as_array().unwrap();
    assert_eq!(stages.len(), 2);
    assert_eq!(stages[0]["name"], "first");
    assert_eq!(stages[1]["name"], "second");
    assert_eq!(v["hand_over"], stages[1]["record"]);
    assert!(v["record"].as_str().unwrap().ends_with(".pipeline.json"));
    ok(verify(
        f.dir(),
        &[
            "chain",
            v["hand_over"].as_str().unwrap(),
            "--records",
            "records",
            "--trust",
            "trust.toml",
        ],
    ));
}

// ---- Run history: runs and show (#14.5) ----

#[test]
fn runs_lists_successes_failures_and_refusals_newest_first_and_show_prints_one() {
    let f = RunFixture::new();
    let good = f.job("good", MODEL, &[], RUN_SANDBOX);
    ok(f.run(&good));
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let bad = f.job("bad", "import sys\nsys.exit(3)\n", &[], RUN_SANDBOX);
    fails_with(f.run(&bad), 3, &["failed"]);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    // (A tamper that changes the size: a same-size one would be a store hit, which binds the
    // verified copy without reading the source again.)
    std::fs::write(f.dir().join("data/points.csv"), b"x,y\n1,2\n3,55\n").unwrap();
    let refused = f.job("refused", MODEL, &[], RUN_SANDBOX);
    fails_with(f.run(&refused), 65, &["refused"]);
    // Something in records/ that is not a run record is skipped, and said so.
    std::fs::write(f.dir().join("records/notes.json"), b"{}").unwrap();

    let out = sealrun(
        f.dir(),
        &[
            "runs",
            "--records",
            "records",
            "--trust",
            "trust.toml",
            "--json",
        ],
    );
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
    let runs = v["runs"].as_array().unwrap();
    let jobs: Vec<&str> = runs.iter().map(|r| r["job"].as_str().unwrap()).collect();
    assert_eq!(jobs, ["refused", "bad", "good"], "{v:#}");
    let endings: Vec<&str> = runs.iter().map(|r| r["ending"].as_str().unwrap()).collect();
    assert_eq!(endings, ["refused", "failed", "succeeded"]);
    assert!(runs.iter().all(|r| r["verified"] == true), "{v:#}");
    assert_eq!(runs[1]["exit_status"], 3);
    assert_eq!(runs[2]["output_files"], 1);
    assert_eq!(v["skipped"].as_array().unwrap().len(), 1, "{v:#}");

    let table = ok(sealrun(f.dir(), &["runs"]));
    let lines: Vec<&str> = table.lines().skip(1).take(3).collect();
    assert!(
        lines[0].contains("refused") && lines[0].contains("REFUSED"),
        "{table}"
    );
    assert!(
        lines[1].contains("bad") && lines[1].contains("FAILED"),
        "{table}"
    );
    assert!(
        lines[2].contains("good") && lines[2].contains("SUCCEEDED"),
        "{table}"
    );

    let rec = f.record("good").display().to_string();
    let s = ok(sealrun(f.dir(), &["show", &rec, "--trust", "trust.toml"]));
    for want in [
        "SUCCEEDED run \"good\"",
        "signature verified",
        "points: dataset \"data\" v1, signed by registry, labels [classification=internal]",
        "profile python; memory 512.0 MiB, timeout 60s",
        "peak memory",
        "outputs   1 file(s) in good-out",
        "0 denied syscalls, 0 egress attempts, 0 secret leaks",
    ] {
        assert!(s.contains(want), "show lacks {want:?}:\n{s}");
    }
    // A record that does not verify under the policy is said so (exit 1).
    ok(sealrun(f.dir(), &["keygen", "--out", "other"]));
    std::fs::write(
        f.dir().join("other-trust.toml"),
        "[[key]]\nname = \"other\"\npublic_key = \"other.pub\"\nkinds = [\"record\"]\n",
    )
    .unwrap();
    fails_with(
        sealrun(f.dir(), &["show", &rec, "--trust", "other-trust.toml"]),
        1,
        &["does NOT verify"],
    );
}

// ---- Gate policy and record verdicts (#14.6) ----

const GATE: &str = "trust = \"trust.toml\"\napproved_profiles = [\"python\"]\n";

fn gate_with(f: &RunFixture, extra: &str, record: &Path, more: &[&str]) -> std::process::Output {
    std::fs::write(f.dir().join("gate.toml"), format!("{GATE}{extra}")).unwrap();
    let rec = record.display().to_string();
    let mut args = vec!["gate", rec.as_str(), "--policy", "gate.toml"];
    args.extend_from_slice(more);
    verify(f.dir(), &args)
}

#[test]
fn allow_denied_syscalls_takes_a_list_of_names() {
    let f = RunFixture::new();
    let script = "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\nlibc.syscall(101, 0, 0, 0, 0)\nlibc.syscall(165, 0, 0, 0, 0, 0)\nopen('/out/model.txt', 'w').write('m')\n";
    let job = f.job("train", script, &[], RUN_SANDBOX);
    ok(f.run(&job));
    let rec = f.record("train");
    fails_with(
        gate_with(&f, "", &rec, &[]),
        1,
        &["no_denied_syscalls", "ptrace", "mount"],
    );
    // Only ptrace allowed: mount still fails the gate, and only mount is named.
    let t = fails_with(
        gate_with(&f, "allow_denied_syscalls = [\"ptrace\"]\n", &rec, &[]),
        1,
        &["no_denied_syscalls", "\"name\":\"mount\"", "1 violation(s)"],
    );
    assert!(!t.contains("\"name\":\"ptrace\""), "{t}");
    ok(gate_with(
        &f,
        "allow_denied_syscalls = [\"ptrace\", \"mount\"]\n",
        &rec,
        &[],
    ));
    ok(gate_with(&f, "allow_denied_syscalls = true\n", &rec, &[]));
    fails_with(
        gate_with(&f, "allow_denied_syscalls = \"ptrace\"\n", &rec, &[]),
        2,
        &["allow_denied_syscalls"],
    );
}

#[test]
fn gate_outputs_checks_the_files_on_disk() {
    let f = RunFixture::new();
    let job = f.job("train", MODEL, &[], RUN_SANDBOX);
    ok(f.run(&job));
    let rec = f.record("train");
    let t = ok(gate_with(&f, "", &rec, &["--outputs", "train-out"]));
    assert!(t.starts_with("PASS"), "{t}");
    // Attack: the model on disk is swapped after the run; the record still verifies,
    // the gate with --outputs does not pass, naming the file.
    std::fs::write(f.dir().join("train-out/model.txt"), "poisoned").unwrap();
    fails_with(
        gate_with(&f, "", &rec, &["--outputs", "train-out"]),
        1,
        &["outputs_on_disk", "model.txt"],
    );
    ok(gate_with(&f, "", &rec, &[]));
}

#[test]
fn verify_record_names_a_refused_or_failed_run_first() {
    let f = RunFixture::new();
    let bad = f.job("bad", "import sys\nsys.exit(3)\n", &[], RUN_SANDBOX);
    fails_with(f.run(&bad), 3, &[]);
    let rec = f.record("bad").display().to_string();
    let t = ok(verify(f.dir(), &["record", &rec, "--trust", "trust.toml"]));
    assert!(t.starts_with("FAILED record"), "{t}");
    fails_with(
        verify(
            f.dir(),
            &["record", &rec, "--trust", "trust.toml", "--require-success"],
        ),
        1,
        &["FAILED record", "exited 3"],
    );
    std::fs::write(f.dir().join("data/points.csv"), b"x,y\n0,00\n3,4\n").unwrap();
    let refused = f.job("refused", MODEL, &[], RUN_SANDBOX);
    fails_with(f.run(&refused), 65, &[]);
    let rec = f.record("refused").display().to_string();
    let t = ok(verify(f.dir(), &["record", &rec, "--trust", "trust.toml"]));
    assert!(t.starts_with("REFUSED record"), "{t}");
    let out = verify(
        f.dir(),
        &[
            "record",
            &rec,
            "--trust",
            "trust.toml",
            "--require-success",
            "--json",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], false);
    assert_eq!(v["result"], "refused");
    // A successful run: OK, and --require-success passes.
    let good = f.job("good", MODEL, &[], RUN_SANDBOX);
    std::fs::write(
        f.dir().join("data/points.csv"),
        sealrun_integration::RUN_DATA,
    )
    .unwrap();
    ok(f.run(&good));
    let rec = f.record("good").display().to_string();
    let t = ok(verify(
        f.dir(),
        &["record", &rec, "--trust", "trust.toml", "--require-success"],
    ));
    assert!(t.starts_with("OK record"), "{t}");
}

// ---- Messages and units (#14.7) ----

#[test]
fn sign_with_a_public_key_says_so_and_expires_takes_a_date() {
    let f = RunFixture::new();
    let t = fails_with(
        sealrun(
            f.dir(),
            &["sign", "data", "--key", "reg.pub", "--kind", "dataset"],
        ),
        1,
        &["reg.pub: this is a public key", "here: reg.key"],
    );
    assert!(!t.contains("chmod"), "{t}");
    let out = sealrun(
        f.dir(),
        &[
            "sign",
            "data",
            "--key",
            "reg.key",
            "--kind",
            "dataset",
            "--expires",
            "2027-01-01",
            "--json",
            "--out",
            "d.sig",
        ],
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["expires"], "2027-01-01T00:00:00Z", "{v}");
    fails_with(
        sealrun(
            f.dir(),
            &[
                "sign",
                "data",
                "--key",
                "reg.key",
                "--kind",
                "dataset",
                "--expires",
                "soon",
            ],
        ),
        2,
        &["neither a date (2027-01-31"],
    );
    // No message repeats itself.
    let t = fails_with(
        sealrun(
            f.dir(),
            &["sign", "nowhere", "--key", "reg.key", "--kind", "dataset"],
        ),
        1,
        &["nowhere"],
    );
    assert!(!t.contains("nowhere: nowhere"), "{t}");
}

#[test]
fn one_size_grammar_for_specs_and_the_command_line() {
    let f = RunFixture::new();
    for (i, size) in ["1G", "1GB", "1GiB", "1024M"].iter().enumerate() {
        let name = format!("s{i}");
        let job = f.job(
            &name,
            MODEL,
            &[],
            &format!("profile = \"python\"\nmemory = \"{size}\"\ntmp_size = \"64MB\"\n"),
        );
        let (code, v) = run_json(&f, &job);
        assert_eq!(code, Some(0), "{size}: {v:#}");
        let limits = &v["stages"][0]["run"]["limits"];
        assert_eq!(limits["memory_bytes"], 1u64 << 30, "{size}: {limits}");
        assert_eq!(limits["tmp_bytes"], 64u64 << 20, "{size}: {limits}");
    }
    let job = f.job("bad", MODEL, &[], "memory = \"1 gigabyte\"\n");
    fails_with(
        f.run(&job),
        64,
        &["bad.toml:12:10: sandbox.memory:", "1GiB"],
    );
    // The command line takes the same spellings.
    let out = sealrun(f.dir(), &["exec", "--memory", "1GB", "--", "true"]);
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn run_help_lists_every_exit_status_and_the_jobs_environment() {
    let t = ok(sealrun(Path::new("."), &["run", "--help"]));
    for want in [
        "64",
        "65",
        "66",
        "67",
        "74",
        "124",
        "125",
        "/out",
        "working directory",
    ] {
        assert!(t.contains(want), "run --help lacks {want}:\n{t}");
    }
}

// ---- Completions, man pages, config file (#14.8) ----

#[test]
fn completions_for_bash_zsh_and_fish() {
    for shell in ["bash", "zsh", "fish"] {
        let t = ok(sealrun(Path::new("."), &["completions", shell]));
        for sub in ["init", "run", "runs", "show", "sign", "completions"] {
            assert!(t.contains(sub), "{shell} completion lacks {sub}");
        }
    }
    // The bash script is valid bash.
    let tmp = tempfile::tempdir().unwrap();
    let script = tmp.path().join("sealrun.bash");
    let out = sealrun(Path::new("."), &["completions", "bash"]);
    std::fs::write(&script, &out.stdout).unwrap();
    let check = std::process::Command::new("bash")
        .arg("-n")
        .arg(&script)
        .output()
        .unwrap();
    assert!(check.status.success(), "{}", text(&check));
    fails_with(
        sealrun(Path::new("."), &["completions", "tcsh"]),
        2,
        &["tcsh"],
    );
}

#[test]
fn man_pages_are_generated_into_target() {
    let dir = sealrun_integration::workspace_root().join("target/man");
    let _ = std::fs::remove_dir_all(&dir);
    let t = ok(sealrun(
        Path::new("."),
        &["man", "--out", &dir.display().to_string()],
    ));
    assert!(t.contains("man page(s)"), "{t}");
    for page in [
        "sealrun.1",
        "sealrun-run.1",
        "sealrun-init.1",
        "sealrun-runs.1",
    ] {
        let text =
            std::fs::read_to_string(dir.join(page)).unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(text.contains(".TH"), "{page} is not roff");
    }
    let run = std::fs::read_to_string(dir.join("sealrun-run.1")).unwrap();
    assert!(run.contains("sealrun run"), "synopsis names the command");
    assert!(run.contains("67"), "the exit statuses are in the man page");
}

#[test]
fn config_file_gives_defaults_the_spec_overrides() {
    let f = RunFixture::new();
    let d = f.dir();
    let xdg = tempfile::tempdir().unwrap();
    let with_xdg = |args: &[&str]| {
        sealrun_integration::run(
            std::process::Command::new(sealrun_integration::bin("sealrun"))
                .current_dir(d)
                .env("XDG_CONFIG_HOME", xdg.path())
                .args(args),
        )
    };
    // A job that names neither its trust policy nor its key.
    let job = f.job("train", MODEL, &[], RUN_SANDBOX);
    let text0 = std::fs::read_to_string(d.join(&job)).unwrap();
    let bare = text0
        .replace("trust = \"trust.toml\"\n", "")
        .replace("signing_key = \"launcher.key\"\n", "");
    std::fs::write(d.join(&job), &bare).unwrap();
    fails_with(
        with_xdg(&["run", "-q", &job]),
        64,
        &["missing field `trust`", "sealrun.toml"],
    );

    // The user's config file: paths relative to it.
    let user = xdg.path().join("sealrun");
    std::fs::create_dir_all(&user).unwrap();
    std::fs::write(
        user.join("config.toml"),
        format!(
            "trust = \"{}\"\nsigning_key = \"{}\"\nrecords = \"user-records\"\n",
            d.join("trust.toml").display(),
            d.join("launcher.key").display()
        ),
    )
    .unwrap();
    let t = ok(with_xdg(&["run", "-q", &job]));
    assert!(t.contains("user-records"), "{t}");
    assert!(
        std::fs::read_dir(user.join("user-records"))
            .unwrap()
            .count()
            > 0
    );

    // The spec folder's sealrun.toml wins over the user's; the spec's own fields win over both.
    std::fs::write(d.join("sealrun.toml"), "records = \"local-records\"\n").unwrap();
    std::fs::remove_dir_all(d.join("train-out")).unwrap();
    let t = ok(with_xdg(&["run", "-q", &job]));
    assert!(t.contains("local-records"), "{t}");
    let c = ok(with_xdg(&["config", "."]));
    assert!(c.contains("local-records (from ./sealrun.toml)"), "{c}");
    assert!(c.contains("config.toml)"), "{c}");
    std::fs::write(d.join(&job), format!("records = \"own-records\"\n{bare}")).unwrap();
    std::fs::remove_dir_all(d.join("train-out")).unwrap();
    let t = ok(with_xdg(&["run", "-q", &job]));
    assert!(t.contains("own-records"), "{t}");

    // A key from a config file that the policy does not allow is named with its file.
    ok(sealrun(d, &["keygen", "--out", "stranger"]));
    std::fs::write(d.join("sealrun.toml"), "signing_key = \"stranger.key\"\n").unwrap();
    std::fs::remove_dir_all(d.join("train-out")).unwrap();
    fails_with(
        with_xdg(&["run", "-q", &job]),
        64,
        &["signing_key (from ", "sealrun.toml): ", "may not sign"],
    );
    // A config file with a field sealrun does not know is an error, with line and column.
    std::fs::write(
        d.join("sealrun.toml"),
        "records = \"r\"\ntrust_policy = \"t\"\n",
    )
    .unwrap();
    fails_with(
        with_xdg(&["run", "-q", &job]),
        64,
        &["sealrun.toml:2:1:", "trust_policy"],
    );
    fails_with(with_xdg(&["config"]), 1, &["sealrun.toml:2:1:"]);
}

// ---- The demo keeps what it shows (#14.10) ----

#[test]
fn demo_leaves_the_model_the_signed_dataset_and_verifiable_records() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("demo");
    let shown = dir.display().to_string();
    let t = ok(sealrun(tmp.path(), &["demo", "--dir", &shown]));
    assert!(t.contains("demo passed"), "{t}");
    // The model it trained is there, under the folder the summary named.
    let models: Vec<PathBuf> = std::fs::read_dir(dir.join("work"))
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path().join("model/model.json")))
        .filter(|p| p.exists())
        .collect();
    assert_eq!(models.len(), 1, "{models:?}");
    // The dataset is as signed (the tamper step put the byte back).
    ok(verify(
        &dir,
        &[
            "artifact",
            "dataset",
            "--signature",
            "dataset.sig",
            "--trust",
            "trust.toml",
        ],
    ));
    // Every record in DIR verifies, the model's with its outputs on disk.
    let mut n = 0;
    for e in std::fs::read_dir(dir.join("records")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "json") {
            ok(verify(
                &dir,
                &["record", &p.display().to_string(), "--trust", "trust.toml"],
            ));
            n += 1;
        }
    }
    assert!(n >= 5, "{n} records");
    // No staging folder left behind, empty or not.
    let stages: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(".sealrun-stage")
        })
        .collect();
    assert!(stages.is_empty(), "{stages:?}");
    // Run again in the same folder: nothing to remove by hand, a second model beside the first.
    ok(sealrun(tmp.path(), &["demo", "--dir", &shown]));
    assert_eq!(std::fs::read_dir(dir.join("work")).unwrap().count(), 2);
}

// ---- A secret used by several stages (#14.11) ----

#[test]
fn a_secret_declared_by_two_stages_is_read_once_and_delivered_to_both() {
    let f = RunFixture::new();
    let hash = "import hashlib\nv = open('/run/secrets/token', 'rb').read()\nopen('/out/h.txt', 'w').write(hashlib.sha256(v).hexdigest())\n";
    let spec = format!(
        r#"name = "two-secret"
trust = "trust.toml"
signing_key = "launcher.key"

[[stage]]
name = "first"
command = ["python3", "-c", {hash:?}]
output = "out-first"
produces = "dataset"
[stage.secrets.token]
from = "env:SEALRUN_TEST_TOKEN"
ttl = "1m"
[[stage.input]]
name = "points"
path = "data"
signature = "data.sig"
[stage.sandbox]
profile = "python"

[[stage]]
name = "second"
command = ["python3", "-c", {hash:?}]
output = "out-second"
[stage.secrets.token]
from = "env:SEALRUN_TEST_TOKEN"
ttl = "1m"
[[stage.input]]
name = "a"
from_stage = "first"
[stage.sandbox]
profile = "python"
"#
    );
    std::fs::write(f.dir().join("two.toml"), spec).unwrap();
    let value = "tok-3f9a7c1e5b";
    let out = sealrun_integration::run(
        std::process::Command::new(sealrun_integration::bin("sealrun"))
            .current_dir(f.dir())
            .env("SEALRUN_TEST_TOKEN", value)
            .args(["run", "-q", "two.toml"]),
    );
    let t = ok(out);
    assert!(t.contains("pipeline succeeded"), "{t}");
    let want = sealrun_integration::sha256_hex(value.as_bytes());
    for stage in ["first", "second"] {
        let got = std::fs::read_to_string(f.dir().join(format!("out-{stage}/h.txt"))).unwrap();
        assert_eq!(got, want, "stage {stage} got another value");
        let st = envelope_statement(&f.record(stage));
        let secrets = &sealrun_integration::byproduct(&st, "secrets")["annotations"];
        assert_eq!(secrets["secrets"][0]["name"], "token", "{secrets}");
        assert!(
            !st.to_string().contains(value),
            "the value is in the record"
        );
    }
}
