//! No hangs, no unbounded reads (issue #11, item 21): a FIFO or `/dev/zero`
//! given as a signature, checkpoint, record, trust or gate policy, public key,
//! rollback state, audit log or job spec is refused as "not a regular file"
//! at once, by the real binaries, instead of blocking forever or reading
//! until memory runs out.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use sealrun_integration::{bin, ok, sealrun, text, write_tree};

/// Run `cmd`, killing it (and failing the test) if it takes over 10 s.
#[track_caller]
fn run_briefly(cmd: &mut Command) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if t0.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("{cmd:?} hung (killed after 10 s):\n{}", text(&out));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn mkfifo(path: &Path) {
    let st = Command::new("mkfifo").arg(path).status().unwrap();
    assert!(st.success(), "mkfifo {}", path.display());
}

#[track_caller]
fn refused(out: Output, code: i32, kind: &str) {
    let t = text(&out);
    assert_eq!(out.status.code(), Some(code), "{t}");
    assert!(
        t.contains(&format!("is a {kind}, not a regular file")),
        "expected a {kind} to be refused by type:\n{t}"
    );
}

struct Fx {
    _tmp: tempfile::TempDir,
    dir: std::path::PathBuf,
}

fn fixture() -> Fx {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    ok(sealrun(&dir, &["keygen", "--out", "k"]));
    write_tree(&dir, &[("data/a", b"1"), ("audit.log", b"")]);
    ok(sealrun(
        &dir,
        &["sign", "data", "--key", "k.key", "--kind", "dataset"],
    ));
    std::fs::write(
        dir.join("trust.toml"),
        "[[key]]\nname = \"k\"\npublic_key = \"k.pub\"\n",
    )
    .unwrap();
    mkfifo(&dir.join("fifo"));
    Fx { _tmp: tmp, dir }
}

fn sv(fx: &Fx, args: &[&str]) -> Output {
    run_briefly(
        Command::new(bin("sealrun-verify"))
            .current_dir(&fx.dir)
            .args(args),
    )
}

#[test]
fn verifier_refuses_fifos_and_devices_without_blocking() {
    let fx = fixture();
    for (bad, kind) in [("fifo", "FIFO"), ("/dev/zero", "character device")] {
        let art = |extra: &[&str]| {
            let mut a = vec!["artifact", "data"];
            a.extend_from_slice(extra);
            sv(&fx, &a)
        };
        refused(art(&["--signature", bad, "--key", "k.pub"]), 2, kind);
        refused(art(&["--trust", bad]), 2, kind);
        refused(art(&["--key", bad]), 2, kind);
        refused(art(&["--key", "k.pub", "--state", bad]), 2, kind);
        refused(sv(&fx, &["record", bad, "--key", "k.pub"]), 2, kind);
        refused(
            sv(&fx, &["chain", bad, "--records", ".", "--key", "k.pub"]),
            2,
            kind,
        );
        refused(sv(&fx, &["gate", "data.sig", "--policy", bad]), 2, kind);
        refused(sv(&fx, &["log", bad, "--key", "k.pub"]), 2, kind);
    }
}

#[test]
fn a_fifo_checkpoint_or_policy_key_file_does_not_hang() {
    let fx = fixture();
    // The checkpoint next to the log.
    mkfifo(&fx.dir.join("audit.log.checkpoint"));
    refused(sv(&fx, &["log", "audit.log", "--key", "k.pub"]), 2, "FIFO");
    // A public key named by the trust policy.
    std::fs::write(
        fx.dir.join("trust2.toml"),
        "[[key]]\nname = \"k\"\npublic_key = \"fifo\"\n",
    )
    .unwrap();
    refused(
        sv(&fx, &["artifact", "data", "--trust", "trust2.toml"]),
        2,
        "FIFO",
    );
    // The trust policy named by a gate policy.
    std::fs::write(fx.dir.join("gate.toml"), "trust = \"/dev/zero\"\n").unwrap();
    refused(
        sv(&fx, &["gate", "data.sig", "--policy", "gate.toml"]),
        2,
        "character device",
    );
}

#[test]
fn launcher_refuses_a_fifo_or_device_spec_and_key() {
    let fx = fixture();
    let run = |spec: &str| {
        run_briefly(
            Command::new(bin("sealrun"))
                .current_dir(&fx.dir)
                .args(["run", spec, "--quiet"]),
        )
    };
    refused(run("fifo"), 64, "FIFO");
    refused(run("/dev/zero"), 64, "character device");
    // A spec naming a FIFO as its signing key and trust policy.
    std::fs::write(
        fx.dir.join("job.toml"),
        "name = \"j\"\ncommand = [\"true\"]\noutput = \"out\"\ntrust = \"trust.toml\"\nsigning_key = \"fifo\"\n",
    )
    .unwrap();
    std::fs::set_permissions(
        fx.dir.join("fifo"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    refused(run("job.toml"), 64, "FIFO");
    std::fs::write(
        fx.dir.join("job.toml"),
        "name = \"j\"\ncommand = [\"true\"]\noutput = \"out\"\ntrust = \"fifo\"\nsigning_key = \"k.key\"\n",
    )
    .unwrap();
    refused(run("job.toml"), 64, "FIFO");
}
