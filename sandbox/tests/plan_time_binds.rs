//! Bind sources are opened once, at plan time, and the supervisor clones the mount from that very
//! descriptor: swapping the planned folder for a symlink (or for another folder) between planning
//! and running must not change what the job sees. Uses only the test's own temp dirs.

use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::Path;

use sealrun_sandbox::{Bind, SandboxConfig, SandboxPlan, Stdio};

fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Run `cat /data/marker` with `host` bound read-only at /data, swapping the folder with `swap`
/// after the plan is built; returns what the job printed and its exit status.
fn run_with_swap(host: &Path, swap: impl FnOnce()) -> (String, i32) {
    let (mut r, w) = std::io::pipe().unwrap();
    let mut c = SandboxConfig::new(vec!["/bin/cat".into(), "/data/marker".into()]);
    c.ro_binds.push(Bind {
        host: host.to_path_buf(),
        dest: "/data".into(),
    });
    c.stdout = Stdio::Fd(OwnedFd::from(w));
    let plan = SandboxPlan::build(c).expect("plan");
    swap();
    let outcome = plan.run().expect("run");
    let mut out = String::new();
    r.read_to_string(&mut out).unwrap();
    (out, outcome.exit_status() as i32)
}

#[test]
fn a_folder_swapped_for_a_symlink_after_planning_is_not_followed() {
    if !is_root() {
        eprintln!("skipped: needs root (CI runs as root)");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("data");
    let elsewhere = t.path().join("elsewhere");
    std::fs::create_dir(&data).unwrap();
    std::fs::create_dir(&elsewhere).unwrap();
    std::fs::write(data.join("marker"), "planned\n").unwrap();
    std::fs::write(elsewhere.join("marker"), "SWAPPED\n").unwrap();
    let (out, status) = run_with_swap(&data, || {
        std::fs::rename(&data, t.path().join("moved")).unwrap();
        std::os::unix::fs::symlink(&elsewhere, &data).unwrap();
    });
    assert_eq!(status, 0, "{out}");
    assert_eq!(out, "planned\n", "the job must see the planned folder");
}

#[test]
fn a_folder_replaced_after_planning_is_not_what_gets_mounted() {
    if !is_root() {
        eprintln!("skipped: needs root (CI runs as root)");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("marker"), "planned\n").unwrap();
    let (out, status) = run_with_swap(&data, || {
        std::fs::rename(&data, t.path().join("moved")).unwrap();
        std::fs::create_dir(&data).unwrap();
        std::fs::write(data.join("marker"), "SWAPPED\n").unwrap();
    });
    assert_eq!(status, 0, "{out}");
    assert_eq!(out, "planned\n", "the job must see the planned folder");
}
