//! Limits: pids, memory, tmpfs caps, timeouts that kill the whole tree; each end reason reported
//! distinctly.

use sealrun_integration::exec as common;

use std::time::{Duration, Instant};

use common::*;

#[test]
fn fork_bomb_is_stopped_by_the_pids_limit() {
    let t0 = Instant::now();
    let r = py(
        &["--pids", "32", "--timeout", "60s"],
        r#"
import time
n = 0
try:
    while True:
        if os.fork() == 0:
            time.sleep(30); os._exit(0)
        n += 1
except BlockingIOError:
    print("refused after", n); sys.stdout.flush(); sys.exit(3)
"#,
    );
    assert_eq!(r.code, 3, "{r:?}");
    assert_eq!(r.end_kind(), "pids_limit", "{:?}", r.report);
    assert_eq!(r.report["end"]["status"], 3);
    assert!(r.stdout.contains("refused after"), "{r:?}");
    assert!(
        t0.elapsed() < Duration::from_secs(30),
        "the sleeping children must die with the sandbox"
    );
}

#[test]
fn memory_bomb_is_oom_killed() {
    let r = py(
        &["--memory", "64M", "--timeout", "60s"],
        r#"
chunks = []
while True:
    chunks.append(bytearray(8 << 20))
"#,
    );
    assert_eq!(r.code, 137, "{r:?}");
    assert_eq!(r.end_kind(), "oom_killed", "{:?}", r.report);
    assert!(r.stderr.contains("out-of-memory"), "{}", r.stderr);
}

#[test]
fn tmpfs_is_capped() {
    let r = exec(
        &["--tmpfs", "/tmp:1M", "--tmpfs", "/scratch:512K"],
        &["/bin/sh", "-c", "dd if=/dev/zero of=/tmp/f bs=64k count=64 2>/dev/null; echo tmp=$?; stat -c %s /tmp/f; dd if=/dev/zero of=/scratch/g bs=64k count=64 2>/dev/null; echo scratch=$?; stat -c %s /scratch/g"],
    );
    let out = ok(&r);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "tmp=1", "{out}");
    assert!(lines[1].parse::<u64>().unwrap() <= 1 << 20, "{out}");
    assert_eq!(lines[2], "scratch=1", "{out}");
    assert!(lines[3].parse::<u64>().unwrap() <= 512 << 10, "{out}");
}

#[test]
fn dev_shm_is_capped_and_the_rest_of_dev_is_read_only_for_the_job() {
    // /dev/shm is a sticky folder on /dev's tmpfs, sized for it: filling it stops at the cap,
    // and the job cannot create anything else in /dev.
    let r = exec(
        &["--tmpfs", "/dev/shm:1M"],
        &["/bin/sh", "-c", "stat -c %a /dev/shm; dd if=/dev/zero of=/dev/shm/f bs=64k count=64 2>/dev/null; echo shm=$?; stat -c %s /dev/shm/f; rm /dev/shm/f; touch /dev/x 2>/dev/null; echo dev=$?"],
    );
    let out = ok(&r);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "1777", "{out}");
    assert_eq!(lines[1], "shm=1", "{out}");
    assert!(
        lines[2].parse::<u64>().unwrap() <= (1 << 20) + (64 << 10),
        "{out}"
    );
    assert_eq!(lines[3], "dev=1", "{out}");
}

#[test]
fn timeout_kills_setsid_double_forked_grandchildren() {
    let t = tempdir();
    let out = writable_dir(t.path(), "out");
    let bind = format!("{}:/out", out.display());
    // A grandchild leaves the session and double-forks, then would write a marker after 3 s.
    // (The job first notes its host id range: concurrent runs have others.)
    let script = "cat /proc/self/uid_map > /out/map; setsid sh -c '(sh -c \"sleep 3; echo alive > /out/marker\" &) ; exec sleep 1000' & sleep 1000";
    let t0 = Instant::now();
    let r = exec(
        &["--timeout", "1s", "--rw", &bind],
        &["/bin/sh", "-c", script],
    );
    let took = t0.elapsed();
    // When the run was over, in clock ticks since boot (what /proc/PID/stat's start time counts):
    // a later run may take the same host ids once this one has let them go.
    let ended_ticks = {
        let up = std::fs::read_to_string("/proc/uptime").unwrap();
        let secs: f64 = up.split_whitespace().next().unwrap().parse().unwrap();
        // SAFETY: sysconf has no preconditions.
        (secs * unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64) as u64 + 1
    };
    assert_eq!(r.code, 124, "{r:?}");
    assert_eq!(r.end_kind(), "timeout", "{:?}", r.report);
    assert!(took < Duration::from_secs(5), "took {took:?}");
    std::thread::sleep(Duration::from_secs(4));
    assert!(
        !out.join("marker").exists(),
        "a grandchild survived the timeout"
    );
    // No process of the sandbox is left on the host (all ran as host ids of this run's range).
    let uid = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .map(|l| l.split_whitespace().nth(1).unwrap().to_string())
        .unwrap();
    if uid == "0" {
        let map = std::fs::read_to_string(out.join("map")).unwrap();
        let f: Vec<u64> = map.split_whitespace().map(|x| x.parse().unwrap()).collect();
        let (base, count) = (f[1], f[2]);
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            if let Ok(st) = std::fs::read_to_string(e.path().join("status")) {
                let u = st.lines().find(|l| l.starts_with("Uid:")).unwrap_or("");
                let in_run_range = u
                    .split_whitespace()
                    .filter_map(|x| x.parse::<u64>().ok())
                    .any(|x| (base..base + count).contains(&x));
                // Started before this run ended (field 22 of stat, after the command's ")").
                let started = std::fs::read_to_string(e.path().join("stat"))
                    .ok()
                    .and_then(|t| {
                        let rest = t.rsplit_once(')')?.1.to_string();
                        rest.split_whitespace().nth(19)?.parse::<u64>().ok()
                    })
                    .unwrap_or(u64::MAX);
                assert!(
                    !(in_run_range && started <= ended_ticks),
                    "survivor {}: {st}",
                    e.path().display()
                );
            }
        }
    }
}

#[test]
fn exit_codes_and_signals_pass_through() {
    assert_eq!(exec(&[], &["/bin/sh", "-c", "exit 7"]).code, 7);
    let r = exec(&[], &["/bin/sh", "-c", "kill -TERM $$"]);
    assert_eq!(r.code, 128 + 15, "{r:?}");
    assert_eq!(r.report["end"]["kind"], "signaled");
    assert_eq!(r.report["end"]["signal"], 15);
}

#[test]
fn setup_failures_exit_125_naming_the_step() {
    let r = exec(&["--cwd", "/does-not-exist"], &["/bin/true"]);
    assert_eq!(r.code, 125, "{r:?}");
    assert!(
        r.stderr.contains(
            "sandbox setup failed at chdir working directory: /does-not-exist: No such file"
        ),
        "{}",
        r.stderr
    );
    let r = exec(&[], &["/no/such/binary"]);
    assert_eq!(r.code, 125);
    assert!(
        r.stderr
            .contains("sandbox setup failed at execve: /no/such/binary"),
        "{}",
        r.stderr
    );
    let r = exec(&["--ro", "/no/such/dir"], &["/bin/true"]);
    assert_eq!(r.code, 125);
    assert!(r.stderr.contains("/no/such/dir"), "{}", r.stderr);
    let r = exec(&["--profile", "no-such-profile"], &["/bin/true"]);
    assert_eq!(r.code, 125);
    assert!(r.stderr.contains("unknown profile"), "{}", r.stderr);
}

#[test]
fn usage_errors_exit_64() {
    let r = exec(&["--memory", "lots"], &["/bin/true"]);
    assert_eq!(r.code, 64, "{r:?}");
    let r = exec(&["--timeout", "soon"], &["/bin/true"]);
    assert_eq!(r.code, 64, "{r:?}");
}

#[test]
fn sigterm_to_sealrun_reaches_the_command() {
    use std::process::{Command, Stdio};
    let mut child = Command::new(sealrun_bin())
        .args([
            "exec",
            "--",
            "/bin/sh",
            "-c",
            "trap 'echo got TERM; exit 3' TERM; echo ready; while :; do sleep 0.1; done",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut buf = [0u8; 6];
    std::io::Read::read_exact(&mut out, &mut buf).unwrap();
    assert_eq!(&buf, b"ready\n");
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let st = child.wait().unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    assert_eq!(st.code(), Some(3), "{rest}");
    assert_eq!(rest, "got TERM\n");
}

#[test]
fn the_sandbox_dies_with_a_killed_launcher() {
    use std::process::{Command, Stdio};
    let t = tempdir();
    let out = writable_dir(t.path(), "out");
    let bind = format!("{}:/out", out.display());
    let mut child = Command::new(sealrun_bin())
        .args([
            "exec",
            "--rw",
            &bind,
            "--",
            "/bin/sh",
            "-c",
            "echo ready; sleep 2; echo alive > /out/marker",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut buf = [0u8; 6];
    std::io::Read::read_exact(&mut stdout, &mut buf).unwrap();
    child.kill().unwrap(); // SIGKILL: no chance to clean up
    child.wait().unwrap();
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        !out.join("marker").exists(),
        "the job outlived its launcher"
    );
}

#[test]
fn a_background_process_left_by_the_command_dies_with_the_sandbox() {
    // The command exits at once, leaving a background process that would write a marker 2 s
    // later. `sealrun exec` returns without waiting for the sandbox's teardown; the teardown must
    // still kill the straggler (it is in the sandbox's pid namespace).
    let t = tempdir();
    let out = writable_dir(t.path(), "out");
    let bind = format!("{}:/out", out.display());
    let t0 = Instant::now();
    let r = exec(
        &["--rw", &bind],
        &[
            "/bin/sh",
            "-c",
            "(sleep 2; echo alive > /out/marker) & echo started",
        ],
    );
    assert_eq!(ok(&r).trim(), "started", "{r:?}");
    assert!(
        t0.elapsed() < Duration::from_secs(2),
        "exec waited for the background process"
    );
    std::thread::sleep(Duration::from_secs(4));
    assert!(
        !out.join("marker").exists(),
        "a background process outlived the sandbox"
    );
}
