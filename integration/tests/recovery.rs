//! Crash recovery (#12): a launcher SIGKILLed while its job runs leaves a run file whose lock
//! died with it; `sealrun recover` (or the next `sealrun run` on the same audit log) closes the
//! run with a signed `aborted: launcher died` record and an `end` entry, hands the output folder
//! back, removes the staging folder and cgroups; a run whose launcher is alive is never touched.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sealrun_integration::{
    audit_entries, bin, byproduct, envelope_statement, kill_leftovers, marked_pids, not_ours, ok,
    sealrun, verify, wait_for, RunFixture, RUN_SANDBOX,
};

/// Writes /out/started (its argv[1]), then waits for /out/go (at most 30 s), then /out/done.
const WAITER: &str = r#"import os, sys, time
open("/out/started", "w").write(sys.argv[1])
t0 = time.time()
while not os.path.exists("/out/go") and time.time() - t0 < 30:
    time.sleep(0.05)
open("/out/done", "w").write("x")
"#;

fn start(f: &RunFixture, name: &str, marker: &str) -> Child {
    let job = f.job(name, WAITER, &[marker], RUN_SANDBOX);
    let child = Command::new(bin("sealrun"))
        .current_dir(f.dir())
        .args(["run", &job, "--quiet"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(&f.dir().join(format!("{name}-out/started")), "job start");
    child
}

fn cgroups_of(pid: u32) -> Vec<String> {
    let prefix = format!("{pid}-");
    ["memory", "pids", "cpu", "devices", "unified"]
        .iter()
        .flat_map(|c| std::fs::read_dir(format!("/sys/fs/cgroup/{c}/sealrun")).into_iter())
        .flat_map(|d| d.flatten())
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path().display().to_string())
        .collect()
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

#[test]
fn sigkilled_launcher_is_closed_by_recover_with_a_signed_aborted_record() {
    let f = RunFixture::new();
    let marker = format!("sealrun-recover-marker-a-{}", std::process::id());
    let mut child = start(&f, "kill", &marker);
    let launcher = child.id();
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    // The run file is there, unlocked; the log shows the run unfinished.
    let runs = f.dir().join("audit.log.runs");
    assert_eq!(std::fs::read_dir(&runs).unwrap().count(), 1);
    assert!(ok(f.verify_log(false)).contains("UNFINISHED"));

    let out = ok(sealrun(f.dir(), &["recover", "kill.toml"]));
    assert!(out.contains("aborted"), "{out}");

    // A signed record that says what happened, with what the job left, unattested by the job.
    let record = f.record("kill");
    let v = ok(verify(
        f.dir(),
        &["record", record.to_str().unwrap(), "--trust", "trust.toml"],
    ));
    assert!(v.contains("ended: launcher died"), "{v}");
    let st = envelope_statement(&record);
    assert_eq!(
        byproduct(&st, "end")["annotations"]["result"],
        "aborted: launcher died"
    );
    let aborted = &byproduct(&st, "aborted")["annotations"];
    assert!(
        aborted["outputs"]
            .as_str()
            .unwrap()
            .starts_with("unattested-by-the-job"),
        "{aborted:#}"
    );
    let names: Vec<&str> = st["subject"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["started"], "{st:#}");
    // No produced artifact: nothing downstream can take these outputs as an input.
    assert!(st["predicate"]["runDetails"]["byproducts"]
        .as_array()
        .unwrap()
        .iter()
        .all(|b| b["name"] != "artifact"));

    // The log: the run is closed as aborted, nothing unfinished.
    let entries = audit_entries(&f.dir().join("audit.log"));
    let last = entries.last().unwrap();
    assert_eq!(last["event"], "end");
    assert_eq!(last["outcome"], "aborted: launcher died");
    assert_eq!(last["invocation"], entries[0]["invocation"]);
    let lg = ok(f.verify_log(false));
    assert!(!lg.contains("UNFINISHED"), "{lg}");
    assert!(lg.contains("1 ABORTED run(s)"), "{lg}");

    // Nothing left: no process, no cgroup, no staging, no run file, nothing owned by the job.
    assert!(
        marked_pids(&marker).is_empty(),
        "{:?}",
        kill_leftovers(&marker)
    );
    assert!(
        cgroups_of(launcher).is_empty(),
        "{:?}",
        cgroups_of(launcher)
    );
    assert!(
        staging_left(f.dir()).is_empty(),
        "{:?}",
        staging_left(f.dir())
    );
    assert_eq!(std::fs::read_dir(&runs).unwrap().count(), 0);
    assert!(not_ours(f.dir()).is_empty(), "{:?}", not_ours(f.dir()));

    // Recovering again finds nothing; the next run appends normally.
    assert!(ok(sealrun(f.dir(), &["recover", "audit.log"])).contains("no run to recover"));
    let next = f.job("next", "open('/out/m', 'w').write('m')\n", &[], RUN_SANDBOX);
    ok(f.run(&next));
    let j: serde_json::Value = serde_json::from_slice(&f.verify_log(true).stdout).unwrap();
    assert_eq!(j["ok"], true, "{j:#}");
    assert_eq!(j["summary"]["unfinished"], serde_json::json!([]));
    assert_eq!(j["summary"]["runs_finished"], 2);
}

#[test]
fn the_next_run_closes_a_dead_launchers_run_itself() {
    let f = RunFixture::new();
    let marker = format!("sealrun-recover-marker-b-{}", std::process::id());
    let mut child = start(&f, "kill", &marker);
    child.kill().unwrap();
    child.wait().unwrap();
    let next = f.job("next", "open('/out/m', 'w').write('m')\n", &[], RUN_SANDBOX);
    let out = sealrun(f.dir(), &["run", &next, "--quiet"]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{err}");
    assert!(err.contains("sealrun: recover: run "), "{err}");
    assert!(err.contains("aborted"), "{err}");
    let outcomes: Vec<String> = audit_entries(&f.dir().join("audit.log"))
        .iter()
        .map(|e| format!("{} {}", e["event"], e["outcome"]))
        .collect();
    assert_eq!(
        outcomes,
        [
            "\"start\" \"running\"",
            "\"end\" \"aborted: launcher died\"",
            "\"start\" \"running\"",
            "\"end\" \"succeeded\"",
        ]
    );
    assert!(!ok(f.verify_log(false)).contains("UNFINISHED"));
    assert!(not_ours(f.dir()).is_empty(), "{:?}", not_ours(f.dir()));
}

#[test]
fn a_live_run_is_never_touched_by_a_concurrent_recover() {
    let f = RunFixture::new();
    let marker = format!("sealrun-recover-marker-c-{}", std::process::id());
    let child = start(&f, "live", &marker);
    let out = ok(sealrun(f.dir(), &["recover", "live.toml"]));
    assert!(out.contains(": alive: "), "{out}");
    // Still running, still unfinished, no record, its run file still there.
    assert!(!marked_pids(&marker).is_empty());
    assert_eq!(audit_entries(&f.dir().join("audit.log")).len(), 1);
    assert!(f.records("live").is_empty());
    assert_eq!(
        std::fs::read_dir(f.dir().join("audit.log.runs"))
            .unwrap()
            .count(),
        1
    );
    // A concurrent run on the same log does not close it either.
    let other = f.job(
        "other",
        "open('/out/m', 'w').write('m')\n",
        &[],
        RUN_SANDBOX,
    );
    ok(f.run(&other));
    assert!(!marked_pids(&marker).is_empty());
    // Let the job finish: its own launcher closes it as usual.
    std::fs::write(f.dir().join("live-out/go"), "go").unwrap();
    let t0 = Instant::now();
    let out = child.wait_with_output().unwrap();
    assert!(t0.elapsed() < Duration::from_secs(30));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lg = ok(f.verify_log(false));
    assert!(
        !lg.contains("UNFINISHED") && !lg.contains("ABORTED"),
        "{lg}"
    );
    assert_eq!(
        std::fs::read_dir(f.dir().join("audit.log.runs"))
            .unwrap()
            .count(),
        0
    );
}

/// `sealrun run` of Slurm rank `rank` of a two-rank step (the task's variables as `srun` sets
/// them; no scheduler needed to be a rank).
fn rank_run(f: &RunFixture, spec: &str, rank: u32) -> Command {
    let mut c = Command::new(bin("sealrun"));
    c.current_dir(f.dir())
        .args(["run", spec, "--quiet"])
        .env("SLURM_JOB_ID", "4242")
        .env("SLURM_STEP_ID", "0")
        .env("SLURM_PROCID", rank.to_string())
        .env("SLURM_NTASKS", "2")
        .env("SLURM_LOCALID", rank.to_string())
        .env("SLURM_NODEID", "0")
        .env("SLURMD_NODENAME", "node0")
        .env("SLURM_STEP_NODELIST", "node0");
    c
}

#[test]
fn a_rank_whose_launcher_died_is_sealed_as_failed_after_recovery() {
    let f = RunFixture::new();
    let dir = f.dir();
    let job = f.job("ranked", WAITER, &["rank-died"], RUN_SANDBOX);
    let t = std::fs::read_to_string(dir.join(&job)).unwrap();
    std::fs::write(
        dir.join(&job),
        t.replace(
            "output = \"ranked-out\"",
            "output = \"ranked-out/rank-{rank}\"",
        ),
    )
    .unwrap();
    // Rank 0's launcher is SIGKILLed while its job runs; rank 1 ends normally.
    let mut r0 = rank_run(&f, &job, 0)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(&dir.join("ranked-out/rank-0/started"), "rank 0 start");
    r0.kill().unwrap();
    r0.wait().unwrap();
    kill_leftovers("rank-died");
    let r1 = rank_run(&f, &job, 1)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(&dir.join("ranked-out/rank-1/started"), "rank 1 start");
    std::fs::write(dir.join("ranked-out/rank-1/go"), "go").unwrap();
    ok(r1.wait_with_output().unwrap());
    ok(sealrun(dir, &["recover", &job]));
    // The recovered record still says which rank it was: the seal counts it, as failed.
    let out = sealrun(
        dir,
        &[
            "seal-job",
            "--records",
            "records",
            "--job",
            "4242",
            "--step",
            "0",
            "--key",
            "launcher.key",
            "--trust",
            "trust.toml",
        ],
    );
    assert_eq!(out.status.code(), Some(1), "the job failed: {out:?}");
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        all.contains("failed: rank 0 (node0): aborted: launcher died"),
        "{all}"
    );
}
