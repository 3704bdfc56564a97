//! `sealrun exec` started by an unprivileged user (uid 65534 via `setpriv`): the sandbox still
//! builds (user namespace first), the job has no capabilities and no network. Skipped, with the
//! reason printed, only when the kernel refuses user namespaces to that user or we are not root
//! (and so cannot switch to it).

use sealrun_integration::exec as common;

use std::process::Command;

use common::*;

fn rootless(args: &[&str], cmd: &[&str]) -> Option<Run> {
    if !std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .any(|l| l.starts_with("Uid:\t0\t"))
    {
        panic!("the rootless tests switch to uid 65534 with setpriv: run the suite as root");
    }
    assert!(
        Command::new("setpriv").arg("--version").output().is_ok(),
        "setpriv is missing: install util-linux (.ci/run does)"
    );
    let t = tempdir();
    let rep = t.path().join("report.json");
    std::fs::write(&rep, "").unwrap();
    std::fs::set_permissions(&rep, std::os::unix::fs::PermissionsExt::from_mode(0o666)).unwrap();
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(sealrun_bin())
        .arg("exec")
        .args(args)
        .arg("--report")
        .arg(&rep)
        .arg("--")
        .args(cmd)
        .output()
        .unwrap();
    let r = finish(out, &rep);
    assert!(
        !(r.code == 125 && r.stderr.contains("at clone")),
        "the kernel refuses user namespaces to uid 65534 (see user.max_user_namespaces), which \
         rootless sandboxes need: {}",
        r.stderr
    );
    Some(r)
}

#[test]
fn rootless_sandbox_runs_without_capabilities_or_network() {
    let Some(r) = rootless(&[], &["/bin/sh", "-c", "id -u; grep CapEff /proc/self/status; cat /etc/shadow 2>&1; echo > /usr/x 2>&1; echo w=$?"]) else {
        return;
    };
    let out = ok(&r);
    assert!(
        out.starts_with("1000\nCapEff:\t0000000000000000\n"),
        "{out}"
    );
    assert!(out.contains("No such file"), "{out}");
    assert!(out.contains("w=2") || out.contains("Read-only"), "{out}");
}

#[test]
fn rootless_python_cannot_connect_out() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.set_nonblocking(true).unwrap();
    let port = l.local_addr().unwrap().port();
    let p = python();
    // pyenv's interpreter lives under /root, which uid 65534 cannot traverse: use the system one.
    let p = if p.starts_with("/root/") && std::path::Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3".to_string()
    } else {
        p
    };
    let code = format!(
        "import socket\ns = socket.socket()\ntry:\n    s.connect(('127.0.0.1', {port})); print('CONNECTED')\nexcept OSError as e:\n    print('ERR', e.errno)"
    );
    let Some(r) = rootless(&["--profile", "python"], &[&p, "-c", &code]) else {
        return;
    };
    assert_eq!(ok(&r).trim(), "ERR 101", "{r:?}");
    assert!(l.accept().is_err());
}

#[test]
fn rootless_limits_without_cgroup_access_fail_clearly() {
    let Some(r) = rootless(&["--memory", "64M"], &["/bin/true"]) else {
        return;
    };
    // Either delegated cgroups exist for this user, or the failure names the cgroup step.
    if r.code != 0 {
        assert_eq!(r.code, 125, "{r:?}");
        assert!(
            r.stderr.contains("sandbox setup failed at cgroup"),
            "{}",
            r.stderr
        );
    }
}

#[test]
fn rootless_init_is_off_limits_to_the_job() {
    // The init and the job share a uid here: only non-dumpability keeps the job out.
    let Some(r) = rootless(&[], &["/bin/sh", "-c", "cat /proc/1/environ >/dev/null 2>&1 && echo READ || echo DENIED; cat /proc/1/mem >/dev/null 2>&1 && echo MEM || echo NOMEM"]) else {
        return;
    };
    assert_eq!(ok(&r), "DENIED\nNOMEM\n", "{r:?}");
}
