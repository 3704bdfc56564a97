//! Helpers for the sandbox tests (`use sealrun_integration::exec as common;`): locate the real `sealrun` binary, run `sealrun exec`, run
//! Python snippets inside the sandbox. Every attack is harmless if the sandbox fails open: it only
//! targets loopback, the test's own temporary directories and the test's own processes.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// `target/<profile>/sealrun` (see [`crate::bin`]).
pub fn sealrun_bin() -> PathBuf {
    crate::bin("sealrun")
}

pub use crate::workspace_root;

/// The `python3` on `PATH` (the one `pip` installs test packages for), as the real path of its
/// binary: the python profile binds that interpreter's prefix, wherever it lives.
pub fn python() -> String {
    static PYTHON: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PYTHON
        .get_or_init(|| {
            let out = Command::new("python3")
                .args([
                    "-c",
                    "import os, sys; print(os.path.realpath(sys.executable))",
                ])
                .output()
                .expect("python3 on PATH");
            assert!(out.status.success(), "python3 failed: {out:?}");
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        })
        .clone()
}

/// The result of one `sealrun exec`.
#[derive(Debug)]
pub struct Run {
    /// Exit status of `sealrun` itself.
    pub code: i32,
    /// Command stdout.
    pub stdout: String,
    /// Command + sealrun stderr.
    pub stderr: String,
    /// The `--report` JSON.
    pub report: serde_json::Value,
}

impl Run {
    /// Names of denied syscalls in the report.
    pub fn denied(&self) -> Vec<String> {
        self.report["denied_syscalls"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|d| d["name"].as_str().unwrap_or("").to_string())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// `end.kind` in the report.
    pub fn end_kind(&self) -> String {
        self.report["end"]["kind"]
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    /// Egress addresses in the report.
    pub fn egress(&self) -> Vec<String> {
        self.report["egress_attempts"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|d| d["address"].as_str().unwrap_or("").to_string())
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// A temporary directory the sandboxed job (a host uid of its own when run as root) can traverse.
pub fn tempdir() -> tempfile::TempDir {
    let t = tempfile::Builder::new()
        .prefix("sealrun-sbx-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    t
}

/// A directory the job can write to.
pub fn writable_dir(parent: &Path, name: &str) -> PathBuf {
    let d = parent.join(name);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o1777)).unwrap();
    d
}

/// Run `sealrun exec ARGS -- CMD` with a report; environment of the test passes through to
/// `sealrun` itself (the sandbox must not pass it on).
pub fn exec(args: &[&str], cmd: &[&str]) -> Run {
    exec_with(Command::new(sealrun_bin()), args, cmd)
}

/// Like [`exec`], starting from a prepared `Command` (e.g. with extra env).
pub fn exec_with(mut c: Command, args: &[&str], cmd: &[&str]) -> Run {
    let rep = tempfile::NamedTempFile::new().unwrap();
    c.arg("exec")
        .args(args)
        .arg("--report")
        .arg(rep.path())
        .arg("--")
        .args(cmd);
    c.stdin(Stdio::null());
    let out = c.output().expect("run sealrun");
    finish(out, rep.path())
}

/// Build a [`Run`] from an output and a report path.
pub fn finish(out: Output, report: &Path) -> Run {
    let text = std::fs::read_to_string(report).unwrap_or_default();
    let report = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        report,
    }
}

/// Prelude for Python snippets: ctypes libc with errno, and `sc(nr, *args)` returning
/// `(ret, errno)`.
pub const PY_PRELUDE: &str = r#"
import ctypes, os, sys, socket, errno
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
def sc(nr, *args):
    ctypes.set_errno(0)
    r = libc.syscall(ctypes.c_long(nr), *[ctypes.c_ulong(a) if isinstance(a, int) else a for a in args])
    return r, ctypes.get_errno()
"#;

/// Run a Python snippet (after [`PY_PRELUDE`]) under the python profile.
pub fn py(args: &[&str], code: &str) -> Run {
    let script = format!("{PY_PRELUDE}\n{code}");
    let mut all: Vec<&str> = vec!["--profile", "python"];
    all.extend_from_slice(args);
    let p = python();
    exec(&all, &[&p, "-c", &script])
}

/// Assert a run exited 0 and return stdout.
pub fn ok(r: &Run) -> &str {
    assert_eq!(
        r.code, 0,
        "sealrun exec failed: stdout:\n{}\nstderr:\n{}",
        r.stdout, r.stderr
    );
    &r.stdout
}
