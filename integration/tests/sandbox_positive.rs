//! The positive suite: real work runs under the shipped profiles, and Docker's seccomp profile
//! loads and is enforced.

use sealrun_integration::exec as common;

use common::*;

const TRAIN: &str = r#"
import csv, json, math, os, random, sys
inp, out = sys.argv[1], sys.argv[2]
rows = [(float(a), float(b)) for a, b in csv.reader(open(inp))]
w, b, lr = 0.0, 0.0, 0.01
for epoch in range(400):
    gw = gb = 0.0
    for x, y in rows:
        err = (w * x + b) - y
        gw += 2 * err * x / len(rows); gb += 2 * err / len(rows)
    w -= lr * gw; b -= lr * gb
loss = sum(((w * x + b) - y) ** 2 for x, y in rows) / len(rows)
with open(os.path.join(out, "model.json"), "w") as f:
    json.dump({"w": w, "b": b, "loss": loss}, f)
# Threads and a process pool work under the profile too.
import threading
t = threading.Thread(target=lambda: None); t.start(); t.join()
print(f"epochs=400 loss={loss:.6f}")
print("progress to stderr", file=sys.stderr)
sys.exit(0 if loss < 0.05 else 5)
"#;

#[test]
fn python_training_reads_ro_input_and_writes_rw_output() {
    let t = tempdir();
    let data = t.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mut csv = String::new();
    for i in 0..50 {
        let x = i as f64 / 10.0;
        csv.push_str(&format!("{x},{}\n", 3.0 * x + 1.0));
    }
    std::fs::write(data.join("train.csv"), csv).unwrap();
    std::fs::write(data.join("train.py"), TRAIN).unwrap();
    let out = writable_dir(t.path(), "out");
    let ro = format!("{}:/data", data.display());
    let rw = format!("{}:/out", out.display());
    let p = python();
    let r = exec(
        &[
            "--profile",
            "python",
            "--ro",
            &ro,
            "--rw",
            &rw,
            "--memory",
            "512M",
            "--pids",
            "64",
            "--timeout",
            "120s",
        ],
        &[&p, "/data/train.py", "/data/train.csv", "/out"],
    );
    let stdout = ok(&r);
    assert!(stdout.starts_with("epochs=400 loss="), "{stdout}");
    assert!(r.stderr.contains("progress to stderr"), "{}", r.stderr);
    let model: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("model.json")).unwrap()).unwrap();
    assert!((model["w"].as_f64().unwrap() - 3.0).abs() < 0.2, "{model}");
    assert_eq!(r.end_kind(), "exited");
    assert!(
        r.report["denied_syscalls"].as_array().unwrap().is_empty(),
        "clean job: {:?}",
        r.report
    );
    assert_eq!(r.report["profile"], "python");
    assert_eq!(r.report["landlock"]["status"], "enforced");
    assert_eq!(r.report["bpf_sha256"].as_str().unwrap().len(), 64);
    assert!(r.report["cpu_user_ms"].as_u64().is_some());
    assert!(r.report["peak_memory_bytes"].as_u64().unwrap() > 0);
}

#[test]
fn python_exit_code_passes_through() {
    let p = python();
    let r = exec(
        &["--profile", "python"],
        &[&p, "-c", "import sys; print('bye'); sys.exit(42)"],
    );
    assert_eq!(r.code, 42, "{r:?}");
    assert_eq!(r.stdout, "bye\n");
    assert_eq!(r.report["end"]["code"], 42);
}

#[test]
fn python_multiprocessing_and_shm_work() {
    let p = python();
    let r = exec(
        &["--profile", "python"],
        &[
            &p,
            "-c",
            "import multiprocessing as mp\nif __name__ == '__main__':\n    with mp.Pool(2) as pool: print(sum(pool.map(abs, range(-10, 10))))",
        ],
    );
    assert_eq!(ok(&r).trim(), "100", "{r:?}");
}

#[test]
fn docker_default_profile_loads_and_is_enforced() {
    // Unpacked by .ci/run from Debian's golang-github-docker-docker-dev.
    let docker = workspace_root().join("target/interop/docker-default-seccomp.json");
    assert!(
        docker.exists(),
        "{} is missing: run .ci/run, which unpacks Docker's default profile there",
        docker.display()
    );
    let d = docker.to_str().unwrap();
    let r = exec(
        &["--profile", d],
        &[
            "/bin/sh",
            "-c",
            "echo ok; /usr/bin/unshare -U /bin/true; echo unshare=$?",
        ],
    );
    let out = ok(&r);
    assert!(out.starts_with("ok\n"), "{out}");
    assert!(
        out.contains("unshare=1"),
        "Docker's profile denies unshare without CAP_SYS_ADMIN: {out}\n{}",
        r.stderr
    );
    assert!(
        r.denied().contains(&"unshare".to_string()),
        "{:?}",
        r.report
    );
    assert_eq!(r.report["profile"], d);
}

#[test]
fn minimal_profile_runs_a_shell_but_refuses_sockets() {
    let r = exec(
        &["--profile", "minimal"],
        &["/bin/sh", "-c", "echo hello from minimal"],
    );
    assert_eq!(ok(&r), "hello from minimal\n");
    let p = python();
    // The minimal profile has no socket(); Python itself still starts far enough to report it.
    let r = exec(&["--profile", "minimal", "--ro", &format!("{0}:{0}", std::path::Path::new(&p).parent().unwrap().parent().unwrap().display())], &[&p, "-S", "-c", "import _socket\ntry:\n    _socket.socket()\nexcept OSError as e: print('ERR', e.errno)"]);
    if r.code == 0 {
        assert!(r.stdout.contains("ERR 1"), "{r:?}");
        assert!(r.denied().contains(&"socket".to_string()), "{:?}", r.report);
    }
}

#[test]
fn bad_profile_is_an_error_not_allow_all() {
    let t = tempdir();
    let bad = t.path().join("bad.json");
    std::fs::write(&bad, r#"{"defaultAction":"SCMP_ACT_ERRNO","architectures":["SCMP_ARCH_X86_64"],"syscalls":[{"names":["read","not_a_syscall"],"action":"SCMP_ACT_ALLOW"}]}"#).unwrap();
    let r = exec(&["--profile", bad.to_str().unwrap()], &["/bin/true"]);
    assert_eq!(r.code, 125, "{r:?}");
    assert!(
        r.stderr.contains("not_a_syscall") && r.stderr.contains("bad.json"),
        "{}",
        r.stderr
    );
    std::fs::write(&bad, "{ not json").unwrap();
    let r = exec(&["--profile", bad.to_str().unwrap()], &["/bin/true"]);
    assert_eq!(r.code, 125, "{r:?}");
}

#[test]
fn report_is_written_atomically_as_json() {
    let r = exec(&[], &["/bin/true"]);
    assert_eq!(r.code, 0);
    for key in [
        "end",
        "wall_ms",
        "cpu_user_ms",
        "cpu_sys_ms",
        "peak_memory_bytes",
        "denied_syscalls",
        "egress_attempts",
        "landlock",
        "profile_sha256",
        "bpf_sha256",
    ] {
        assert!(r.report.get(key).is_some(), "{key} missing: {}", r.report);
    }
}

#[test]
fn virtualenv_interpreter_given_by_host_path_runs() {
    let t = tempdir();
    let venv = t.path().join("venv");
    let st = std::process::Command::new(python())
        .args(["-m", "venv", "--without-pip"])
        .arg(&venv)
        .status()
        .unwrap();
    assert!(st.success());
    std::fs::write(venv.join("lib/marker.txt"), "x").ok();
    let py = venv.join("bin/python");
    let r = exec(
        &["--profile", "python"],
        &[
            py.to_str().unwrap(),
            "-c",
            "import sys; print(sys.prefix != sys.base_prefix, sys.prefix)",
        ],
    );
    let out = ok(&r);
    assert_eq!(out.trim(), format!("True {}", venv.display()), "{r:?}");
}

/// Shipped profiles are recognised by their bytes and then not parsed at all (compiled in); a
/// profile file edited on disk must still take effect, with its own digest in the report.
#[test]
fn an_edited_profile_on_disk_takes_effect() {
    let shipped = exec(&[], &["/bin/true"]);
    assert_eq!(shipped.code, 0, "{shipped:?}");
    let dir = tempdir();
    let src = concat!(env!("CARGO_MANIFEST_DIR"), "/../sandbox-profiles");
    for kind in ["seccomp", "mounts"] {
        std::fs::create_dir_all(dir.path().join(kind)).unwrap();
        let text = std::fs::read_to_string(format!("{src}/{kind}/default.json")).unwrap();
        let edited = match kind {
            // `uname` leaves the allowlist.
            "seccomp" => text.replacen("\"uname\",", "", 1),
            // `/etc/nsswitch.conf` leaves the system paths.
            _ => text.replacen(",\n  \"/etc/nsswitch.conf\"", "", 1),
        };
        assert_ne!(edited, text, "{kind}: the edit must apply");
        std::fs::write(dir.path().join(kind).join("default.json"), edited).unwrap();
    }
    let mut c = std::process::Command::new(sealrun_bin());
    c.env("SEALRUN_PROFILES", dir.path());
    let r = exec_with(
        c,
        &[],
        &[
            "/bin/sh",
            "-c",
            "test -e /etc/nsswitch.conf && echo NSS; uname >/dev/null 2>&1 || echo UNAME-DENIED",
        ],
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.stdout.trim(), "UNAME-DENIED", "{r:?}");
    assert!(r.denied().contains(&"uname".to_string()), "{:?}", r.report);
    assert_ne!(
        r.report["profile_sha256"], shipped.report["profile_sha256"],
        "the edited pair has its own digest"
    );
    assert_ne!(r.report["bpf_sha256"], shipped.report["bpf_sha256"]);
}
