//! Honest ML code in the sandbox (issue #13): what numeric Python does works and is not
//! reported — account entries for the job's ids, a `/dev/shm` that holds real shared memory, a
//! CPU limit with matching thread counts, NUMA calls, signals as sent — while the sandbox stays
//! as strict as the hardening suite says.

use sealrun_integration::exec as common;

use common::*;
use sealrun_integration::{envelope_statement, fails_with, ok as ok_out, RunFixture};

#[test]
fn the_job_has_account_entries_a_cpu_limit_and_matching_thread_counts() {
    let code = r#"
import getpass, grp, pwd, time
print("user", getpass.getuser(), pwd.getpwuid(os.getuid()).pw_dir, grp.getgrgid(os.getgid()).gr_name)
print("threads", os.environ.get("OMP_NUM_THREADS"), os.environ.get("OPENBLAS_NUM_THREADS"),
      os.environ.get("MKL_NUM_THREADS"))
t, c = time.time(), time.process_time()
while time.time() - t < 1.5:
    pass
print("share", (time.process_time() - c) / (time.time() - t))
"#;
    let r = py(&["--cpus", "0.5"], code);
    let out = ok(&r);
    assert!(out.contains("user sealrun /tmp sealrun\n"), "{out}");
    assert!(out.contains("threads 1 1 1\n"), "{out}");
    let share: f64 = out
        .lines()
        .find_map(|l| l.strip_prefix("share "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        share < 0.7,
        "a 0.5-CPU limit let the job use {share:.2} of a CPU"
    );
    assert!(r.denied().is_empty(), "{:?}", r.report);
    // A thread count the caller sets is kept.
    let r = py(
        &["--cpus", "2", "--env", "OMP_NUM_THREADS=7"],
        "print(os.environ['OMP_NUM_THREADS'], os.environ['MKL_NUM_THREADS'])",
    );
    assert_eq!(ok(&r).trim(), "7 2");
}

#[test]
fn shared_memory_of_256_mib_works_by_default_and_numa_calls_are_not_reported() {
    let code = r#"
from multiprocessing import shared_memory
m = shared_memory.SharedMemory(create=True, size=256 << 20)
m.buf[:] = b"x" * (256 << 20)
print("shm", m.buf[(256 << 20) - 1])
m.close(); m.unlink()
MPOL_DEFAULT = 0
print("mbind", sc(237, 0, 0, MPOL_DEFAULT, 0, 0, 0)[0],
      "set_mempolicy", sc(238, MPOL_DEFAULT, 0, 0)[0],
      "get_mempolicy", sc(239, 0, 0, 0, 0, 0)[0],
      "personality", sc(135, 0xffffffff)[0] >= 0)
"#;
    let r = py(&[], code);
    let out = ok(&r);
    assert!(out.contains("shm 120\n"), "{out}");
    assert!(
        out.contains("mbind 0 set_mempolicy 0 get_mempolicy 0 personality True"),
        "{out}"
    );
    assert!(r.denied().is_empty(), "{:?}", r.report);
}

#[test]
fn shm_and_cpus_in_a_job_spec_are_applied_and_recorded() {
    let f = RunFixture::new();
    let script = r#"import json, os
st = os.statvfs("/dev/shm")
json.dump({"shm": st.f_blocks * st.f_frsize, "omp": os.environ.get("OMP_NUM_THREADS")},
          open("/out/env.json", "w"))
"#;
    let spec = f.job(
        "limits",
        script,
        &[],
        "profile = \"python\"\nshm = \"300M\"\ncpus = 1.5\n",
    );
    ok_out(f.run(&spec));
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(f.dir().join("limits-out/env.json")).unwrap())
            .unwrap();
    let shm = v["shm"].as_u64().unwrap();
    assert!(
        (300 << 20..400 << 20).contains(&shm),
        "/dev/shm holds {shm} bytes"
    );
    assert_eq!(v["omp"], "2");
    let st = envelope_statement(&f.record("limits"));
    let limits = &st["predicate"]["buildDefinition"]["internalParameters"]["limits"];
    assert_eq!(limits["shm_bytes"], 300u64 << 20, "{limits}");
    assert_eq!(limits["cpus"], 1.5, "{limits}");

    // A CPU limit that is no number of CPUs: refused before anything runs, with its place.
    let bad = f.job("badcpus", script, &[], "cpus = 0\n");
    let t = fails_with(f.run(&bad), 64, &["sandbox.cpus", "invalid CPU limit 0"]);
    assert!(t.contains("badcpus.toml:"), "{t}");
    assert!(
        f.records("badcpus").is_empty(),
        "no record for a spec error"
    );
}

/// `multiprocessing` with every start method, a `Manager`, and a listener of the job's own in
/// `/tmp`: connects to the job's own Unix sockets are carried out for it (not egress, not a
/// denial); glibc's look-up of an nscd socket that is not there gets `ENOENT`, as without a
/// sandbox, and is not reported either.
#[test]
fn multiprocessing_pools_managers_and_own_sockets_work_unreported() {
    let code = r#"
import multiprocessing as mp, getpass
def sq(x):
    return x * x
if __name__ == "__main__":
    for method in ["fork", "spawn", "forkserver"]:
        with mp.get_context(method).Pool(2) as p:
            print(method, sum(p.map(sq, range(10))))
    with mp.Manager() as m:
        d = m.dict(); d["a"] = 1; print("manager", d["a"])
    s = socket.socket(socket.AF_UNIX); s.bind("/tmp/own.sock"); s.listen()
    c = socket.socket(socket.AF_UNIX); c.connect("/tmp/own.sock")
    a, _ = s.accept(); c.send(b"hi"); print("path", a.recv(2).decode())
    try:
        socket.socket(socket.AF_UNIX).connect("/var/run/nscd/socket")
    except OSError as e:
        print("nscd", e.errno)
    print("user", getpass.getuser())
"#;
    // (`spawn` and `forkserver` re-import the main module: run it as a file.)
    let t = tempdir();
    let script = t.path().join("mp.py");
    std::fs::write(&script, format!("{PY_PRELUDE}\n{code}")).unwrap();
    let bind = format!("{}:/job/mp.py", script.display());
    let r = exec(
        &["--profile", "python", "--ro", &bind],
        &[&python(), "/job/mp.py"],
    );
    assert_eq!(
        ok(&r).trim(),
        "fork 285\nspawn 285\nforkserver 285\nmanager 1\npath hi\nnscd 2\nuser sealrun",
        "{r:?}"
    );
    assert!(r.denied().is_empty(), "{:?}", r.report);
    assert!(r.egress().is_empty(), "{:?}", r.report);
}

/// Start `sealrun run SPEC` in the fixture's folder; wait until the job has written `ready` in
/// its output folder `OUT`.
fn start_run(f: &RunFixture, spec: &str, out: &str) -> std::process::Child {
    let child = std::process::Command::new(sealrun_integration::bin("sealrun"))
        .current_dir(f.dir())
        .args(["run", spec, "--quiet"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let ready = f.dir().join(out).join("ready");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !ready.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the job never got ready"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child
}

fn interrupt_of(f: &RunFixture, job: &str) -> serde_json::Value {
    let st = envelope_statement(&f.record(job));
    st["predicate"]["runDetails"]["byproducts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == "interrupt")
        .map(|b| b["annotations"].clone())
        .unwrap_or(serde_json::Value::Null)
}

/// Ctrl-C (SIGINT to the launcher) reaches the job as SIGINT — Python raises KeyboardInterrupt
/// — and the record says so; a second signal kills the tree.
#[test]
fn ctrl_c_reaches_the_job_as_sigint_and_a_second_one_kills_the_tree() {
    let f = RunFixture::new();
    let script = r#"import sys, time
try:
    open("/out/ready", "w").close()  # (inside the try: the signal may come at once)
    time.sleep(60)
except KeyboardInterrupt:
    open("/out/caught", "w").write("KeyboardInterrupt")
    sys.exit(3)
"#;
    let spec = f.job("ctrlc", script, &[], "profile = \"python\"\n");
    let mut child = start_run(&f, &spec, "ctrlc-out");
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(3), "the job's own status");
    assert_eq!(
        std::fs::read_to_string(f.dir().join("ctrlc-out/caught")).unwrap(),
        "KeyboardInterrupt"
    );
    let i = interrupt_of(&f, "ctrlc");
    assert_eq!(i["signals"], serde_json::json!(["SIGINT"]), "{i}");
    assert_eq!(i["killed"], false);

    // A job that ignores SIGINT: the second Ctrl-C kills the tree.
    let script = r#"import signal, time
signal.signal(signal.SIGINT, signal.SIG_IGN)
open("/out/ready", "w").close()
time.sleep(60)
"#;
    let spec = f.job("stubborn", script, &[], "profile = \"python\"\n");
    let t0 = std::time::Instant::now();
    let mut child = start_run(&f, &spec, "stubborn-out");
    // SAFETY: as above.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    std::thread::sleep(std::time::Duration::from_millis(300));
    // SAFETY: as above.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait().unwrap();
    assert!(t0.elapsed() < std::time::Duration::from_secs(30));
    assert_eq!(status.code(), Some(128 + 9), "killed: {status:?}");
    let i = interrupt_of(&f, "stubborn");
    assert_eq!(i["signals"], serde_json::json!(["SIGINT", "SIGINT"]), "{i}");
    assert_eq!(i["killed"], true);
}

/// The issue's honest training job through `sealrun run` under the `python` profile: numpy,
/// pandas, scikit-learn with joblib (loky) workers, a forkserver `Pool`, a `Manager`, 256 MiB
/// of `SharedMemory` and `getpass.getuser()` — and the record passes a default release gate
/// (`approved_profiles = ["python"]`: no denied call, no egress).
#[test]
fn a_numpy_sklearn_training_job_passes_a_default_release_gate() {
    sealrun_integration::ensure_python_module("sklearn", "scikit-learn");
    sealrun_integration::ensure_python_module("pandas", "pandas");
    let f = RunFixture::new();
    let script = r#"import getpass, json, multiprocessing as mp
import numpy as np, pandas as pd
from joblib import Parallel, delayed
from multiprocessing import shared_memory
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score

def sq(x):
    return x * x

if __name__ == "__main__":
    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 5)); y = (X[:, 0] + X[:, 1] > 0).astype(int)
    df = pd.DataFrame(X).assign(y=y)
    scores = cross_val_score(LogisticRegression(), df.drop(columns="y"), df.y, cv=3, n_jobs=2)
    par = Parallel(n_jobs=2, backend="loky")(delayed(sq)(i) for i in range(8))
    with mp.get_context("forkserver").Pool(2) as p:
        pool = sum(p.map(sq, range(10)))
    with mp.Manager() as m:
        d = m.dict(); d["k"] = 1; managed = d["k"]
    shm = shared_memory.SharedMemory(create=True, size=256 << 20)
    shm.buf[:] = b"\x01" * (256 << 20); shm.close(); shm.unlink()
    json.dump({"score": float(scores.mean()), "par": sum(par), "pool": pool, "managed": managed,
               "user": getpass.getuser()}, open("/out/metrics.json", "w"))
"#;
    let spec = f.job(
        "train",
        script,
        &[],
        "profile = \"python\"\nmemory = \"2G\"\n",
    );
    // The interpreter pip installed numpy for (its prefix is bound read-only by the profile).
    let text = std::fs::read_to_string(f.dir().join(&spec)).unwrap();
    let text = text.replacen("\"python3\"", &format!("{:?}", python()), 1);
    std::fs::write(f.dir().join(&spec), text).unwrap();
    ok_out(f.run(&spec));
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(f.dir().join("train-out/metrics.json")).unwrap())
            .unwrap();
    assert!(m["score"].as_f64().unwrap() > 0.9, "{m}");
    assert_eq!(m["par"], 140);
    assert_eq!(m["pool"], 285);
    assert_eq!(m["managed"], 1);
    assert_eq!(m["user"], "sealrun");
    std::fs::write(
        f.dir().join("gate.toml"),
        "trust = \"trust.toml\"\napproved_profiles = [\"python\"]\n",
    )
    .unwrap();
    let rec = f.record("train").display().to_string();
    let t = ok_out(sealrun_integration::verify(
        f.dir(),
        &[
            "gate",
            &rec,
            "--policy",
            "gate.toml",
            "--records",
            "records",
        ],
    ));
    assert!(t.contains("PASS"), "{t}");
}
