//! Faults (#12.2), each against the real binaries: the launcher SIGKILLed at every phase (held
//! there by the debug-only `SEALRUN_TEST_PAUSE_AT` hook), a full disk under the records and the
//! audit log (a small tmpfs mounted in a private mount namespace the test makes and drops), and
//! a concurrency soak on one audit log. After each, `sealrun recover` leaves a log that verifies
//! with no UNFINISHED run, no process of the run, no secret on disk and nothing owned by the
//! job's host uid.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use sealrun_integration::scratch::Scratch;
use sealrun_integration::{
    audit_entries, bin, byproduct, envelope_statement, fails_with, marked_pids, not_ours, ok,
    sealrun, text, wait_for, RunFixture, RUN_SANDBOX,
};

/// Writes /out/started and /out/part (argv[1] is the marker), waits for /out/go (30 s at most).
const WAITER: &str = r#"import os, sys, time
open("/out/started", "w").write(sys.argv[1])
open("/out/part", "w").write("half")
t0 = time.time()
while not os.path.exists("/out/go") and time.time() - t0 < 30:
    time.sleep(0.05)
"#;

/// Files under `dir` whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut hits = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let m = e.path().symlink_metadata().unwrap();
            if m.is_dir() {
                todo.push(e.path());
            } else if m.is_file() {
                let b = std::fs::read(e.path()).unwrap_or_default();
                if b.windows(needle.len()).any(|w| w == needle) {
                    hits.push(e.path().display().to_string());
                }
            }
        }
    }
    hits
}

fn staging_left(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(".sealrun-stage-")
        })
        .map(|e| e.path().display().to_string())
        .collect()
}

/// Start `sealrun run SPEC` paused at `phase`; returns once the launcher says it is there.
fn start_paused(dir: &Path, spec: &str, phase: &str, env: &[(&str, &str)]) -> Child {
    let mut child = Command::new(bin("sealrun"))
        .current_dir(dir)
        .args(["run", spec, "--quiet"])
        .env("SEALRUN_TEST_PAUSE_AT", phase)
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let want = format!("sealrun: test pause at {phase}");
    let mut seen = Vec::new();
    loop {
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(l) if l == want => return child,
            Ok(l) => seen.push(l),
            Err(_) => {
                let _ = child.kill();
                panic!("the launcher never paused at {phase}: {seen:?}");
            }
        }
    }
}

#[test]
fn sigkill_at_every_phase_is_closed_by_recover() {
    let f = RunFixture::new();
    let dir = f.dir();
    let secret = format!("fault-secret-{}-d41d8cd98f00b204", std::process::id());
    let with_secret = format!(
        "{RUN_SANDBOX}\n[secrets.tok]\nfrom = \"env:SEALRUN_FAULT_TOKEN\"\nttl = \"10m\"\n"
    );
    let phases = [
        ("planning", false),
        ("verifying", false),
        ("staging", false),
        ("started", true),
        ("hashing", true),
        ("signing", true),
        ("appending", true),
    ];
    for (phase, started) in phases {
        let name = format!("k-{phase}");
        let marker = format!("sealrun-fault-marker-{phase}-{}", std::process::id());
        let job = f.job(
            &name,
            "open('/out/o', 'w').write('o')\n",
            &[&marker],
            &with_secret,
        );
        let mut child = start_paused(dir, &job, phase, &[("SEALRUN_FAULT_TOKEN", &secret)]);
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let before = audit_entries(&dir.join("audit.log")).len();
        let out = ok(sealrun(dir, &["recover", &job]));
        let entries = audit_entries(&dir.join("audit.log"));
        if started {
            assert!(out.contains(": aborted: "), "{phase}: {out}");
            let last = entries.last().unwrap();
            assert_eq!(last["event"], "end", "{phase}");
            let want = if phase == "appending" {
                // The launcher had signed its own record: kept and referenced.
                "aborted: the launcher did not close the run (its own record is kept)"
            } else {
                "aborted: launcher died"
            };
            assert_eq!(last["outcome"], want, "{phase}");
            let record = f.record(&name);
            let st = envelope_statement(&record);
            let result = &byproduct(&st, "end")["annotations"]["result"];
            if phase == "appending" {
                assert_eq!(result, "succeeded", "{phase}");
            } else {
                assert_eq!(result, "aborted: launcher died", "{phase}");
            }
        } else {
            assert!(out.contains(": never-started: "), "{phase}: {out}");
            assert_eq!(entries.len(), before, "{phase}: nothing appended");
        }
        // The log verifies with no run unfinished; nothing of the run is left.
        let lg = ok(f.verify_log(false));
        assert!(!lg.contains("UNFINISHED"), "{phase}: {lg}");
        assert!(marked_pids(&marker).is_empty(), "{phase}: processes left");
        assert!(
            staging_left(dir).is_empty(),
            "{phase}: {:?}",
            staging_left(dir)
        );
        assert!(not_ours(dir).is_empty(), "{phase}: {:?}", not_ours(dir));
        assert_eq!(
            std::fs::read_dir(dir.join("audit.log.runs"))
                .unwrap()
                .count(),
            0,
            "{phase}: run file left"
        );
        let hits = files_containing(dir, secret.as_bytes());
        assert!(
            hits.is_empty(),
            "{phase}: the secret is on disk in {hits:?}"
        );
    }
}

/// `records` and `audit_log` of a fixture job spec moved to `records`, `log`.
fn relocate(dir: &Path, spec: &str, records: &str, log: &str) {
    let p = dir.join(spec);
    let t = std::fs::read_to_string(&p).unwrap();
    std::fs::write(
        &p,
        format!("records = {records:?}\naudit_log = {log:?}\n{t}"),
    )
    .unwrap();
}

/// Run a waiter job in `scratch`, fill the tmpfs once it has started, let it finish.
fn run_into_full_disk(f: &RunFixture, s: &Scratch, job: &str, out: &str) -> Output {
    let dir = f.dir().to_path_buf();
    let child = s
        .command(
            Command::new(bin("sealrun"))
                .args(["run", job, "--quiet"])
                .current_dir(&dir),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(&dir.join(out).join("started"), "job start");
    s.fill();
    std::fs::write(dir.join(out).join("go"), "go").unwrap();
    child.wait_with_output().unwrap()
}

fn verify_log_at(f: &RunFixture, s: &Scratch, log: &Path) -> Output {
    let trust = f.dir().join("trust.toml");
    let mut c = Command::new(bin("sealrun-verify"));
    c.args([
        "log",
        log.to_str().unwrap(),
        "--trust",
        trust.to_str().unwrap(),
        "--json",
    ]);
    s.run(&mut c)
}

fn summary(out: &Output) -> serde_json::Value {
    serde_json::from_slice::<serde_json::Value>(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", text(out)))["summary"]
        .clone()
}

#[test]
fn disk_full_under_records_and_log_exits_74_and_recovery_closes_the_run() {
    let f = RunFixture::new();
    let mnt = f.dir().join("fs");
    let s = Scratch::new(&mnt, "1m");
    let log = mnt.join("audit.log");
    let first = f.job(
        "first",
        "open('/out/m', 'w').write('m')\n",
        &[],
        RUN_SANDBOX,
    );
    relocate(f.dir(), &first, "fs/records", "fs/audit.log");
    let r = s.run(
        Command::new(bin("sealrun"))
            .args(["run", &first, "--quiet"])
            .current_dir(f.dir()),
    );
    assert!(r.status.success(), "{}", text(&r));

    let full = f.job("full", WAITER, &["m"], RUN_SANDBOX);
    relocate(f.dir(), &full, "fs/records", "fs/audit.log");
    let out = run_into_full_disk(&f, &s, &full, "full-out");
    let msg = fails_with(out, 74, &["No space left on device"]);
    assert!(
        msg.contains("fs/records/full-"),
        "the message names the path: {msg}"
    );
    // The log and its checkpoint still verify: the run is unfinished, nothing half-written.
    let v = verify_log_at(&f, &s, &log);
    assert!(v.status.success(), "{}", text(&v));
    let sm = summary(&v);
    assert_eq!(sm["entries"], 3, "{sm:#}");
    assert_eq!(sm["checkpoint_seq"], 3, "{sm:#}");
    assert_eq!(sm["unfinished"].as_array().unwrap().len(), 1, "{sm:#}");
    assert!(not_ours(f.dir()).is_empty(), "{:?}", not_ours(f.dir()));

    // Space again: the next run closes the failed one, then runs.
    s.free();
    let next = f.job("next", "open('/out/m', 'w').write('m')\n", &[], RUN_SANDBOX);
    relocate(f.dir(), &next, "fs/records", "fs/audit.log");
    let r = s.run(
        Command::new(bin("sealrun"))
            .args(["run", &next, "--quiet"])
            .current_dir(f.dir()),
    );
    assert!(r.status.success(), "{}", text(&r));
    assert!(text(&r).contains("aborted"), "{}", text(&r));
    let sm = summary(&verify_log_at(&f, &s, &log));
    assert_eq!(sm["unfinished"], serde_json::json!([]), "{sm:#}");
    assert_eq!(sm["aborted"].as_array().unwrap().len(), 1, "{sm:#}");
    assert_eq!(sm["runs_finished"], 3, "{sm:#}");
}

#[test]
fn disk_full_at_the_checkpoint_undoes_the_appended_line() {
    // Records on the ordinary disk, the log on a full tmpfs: the `end` line still fits in the
    // log's last page, the new checkpoint does not. The line is taken back.
    let f = RunFixture::new();
    let mnt = f.dir().join("fs");
    let s = Scratch::new(&mnt, "256k");
    let log = mnt.join("audit.log");
    let job = f.job("full", WAITER, &["m"], RUN_SANDBOX);
    relocate(f.dir(), &job, "records", "fs/audit.log");
    let out = run_into_full_disk(&f, &s, &job, "full-out");
    let msg = fails_with(out, 74, &["No space left on device"]);
    assert!(
        msg.contains("audit.log"),
        "the message names the path: {msg}"
    );
    let v = verify_log_at(&f, &s, &log);
    assert!(
        v.status.success(),
        "no partial line, no unsigned entry: {}",
        text(&v)
    );
    let sm = summary(&v);
    assert_eq!(sm["entries"], 1, "{sm:#}");
    assert_eq!(sm["checkpoint_seq"], 1, "{sm:#}");
    s.free();
    // Recovery closes it, keeping the record the launcher had signed.
    let r = s.run(
        Command::new(bin("sealrun"))
            .args(["recover", &job])
            .current_dir(f.dir()),
    );
    assert!(r.status.success(), "{}", text(&r));
    let entries = audit_entries(&s.view(&log));
    assert_eq!(
        entries.last().unwrap()["outcome"],
        "aborted: the launcher did not close the run (its own record is kept)"
    );
    assert_eq!(
        entries.last().unwrap()["record"].as_str().unwrap(),
        sealrun_integration::sha256_hex(&std::fs::read(f.record("full")).unwrap())
    );
    let sm = summary(&verify_log_at(&f, &s, &log));
    assert_eq!(sm["unfinished"], serde_json::json!([]), "{sm:#}");
}

#[test]
fn soak_16_runs_and_4_pipelines_on_one_log() {
    let f = RunFixture::new();
    let dir = f.dir();
    let t0 = Instant::now();
    let mut specs = Vec::new();
    for i in 0..16 {
        specs.push(f.job(
            &format!("s{i}"),
            "open('/out/m', 'w').write('m')\n",
            &[],
            RUN_SANDBOX,
        ));
    }
    for i in 0..4 {
        let name = format!("p{i}");
        sealrun_integration::write_tree(
            dir,
            &[(
                &format!("{name}-code/run.py"),
                b"open('/out/m', 'w').write('m')\n".as_slice(),
            )],
        );
        let stage = |s: &str, input: &str| {
            format!(
                "[[stage]]\nname = \"{name}{s}\"\ncommand = [\"python3\", \"/code/run.py\"]\ncode = \"{name}-code\"\noutput = \"{name}-{s}-out\"\n{input}[stage.sandbox]\n{RUN_SANDBOX}\n"
            )
        };
        let spec = format!(
            "name = {name:?}\ntrust = \"trust.toml\"\nsigning_key = \"launcher.key\"\n\n{}{}",
            stage(
                "a",
                "[[stage.input]]\nname = \"points\"\npath = \"data\"\nsignature = \"data.sig\"\n"
            ),
            stage(
                "b",
                &format!("[[stage.input]]\nname = \"prev\"\nfrom_stage = \"{name}a\"\nkind = \"model\"\n")
            ),
        );
        std::fs::write(dir.join(format!("{name}.toml")), spec).unwrap();
        specs.push(format!("{name}.toml"));
    }
    // One run first makes the log (and the launcher's rollback state), then all at once.
    let warm = f.job("warm", "open('/out/m', 'w').write('m')\n", &[], RUN_SANDBOX);
    ok(f.run(&warm));
    let children: Vec<(String, Child)> = specs
        .iter()
        .map(|s| {
            let c = Command::new(bin("sealrun"))
                .current_dir(dir)
                .args(["run", s, "--quiet"])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            (s.clone(), c)
        })
        .collect();
    for (s, c) in children {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{s}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(
        t0.elapsed() < Duration::from_secs(240),
        "soak took {:?}",
        t0.elapsed()
    );
    // Every run has its record; the log verifies; every pipeline's chain verifies.
    for i in 0..16 {
        f.record(&format!("s{i}"));
    }
    let sm: serde_json::Value =
        serde_json::from_slice::<serde_json::Value>(&f.verify_log(true).stdout).unwrap()["summary"]
            .clone();
    assert_eq!(sm["unfinished"], serde_json::json!([]), "{sm:#}");
    // warm + 16 + 4 × 2 stages, each a start and an end; 4 pipeline entries.
    assert_eq!(sm["runs_finished"], 25, "{sm:#}");
    assert_eq!(sm["entries"], 25 * 2 + 4, "{sm:#}");
    for i in 0..4 {
        let rec = f.record(&format!("p{i}b"));
        ok(sealrun_integration::verify(
            dir,
            &[
                "chain",
                rec.to_str().unwrap(),
                "--records",
                "records",
                "--trust",
                "trust.toml",
            ],
        ));
    }
}
