//! Helpers shared by the end-to-end tests: locate the real binaries, run them,
//! and make scratch trees. Tests only touch their own temporary directories.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The workspace root (the folder holding the top-level `Cargo.toml`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("integration/ has a parent")
        .to_path_buf()
}

/// `../shared/interop/` next to the workspace root.
pub fn interop_dir() -> PathBuf {
    workspace_root().join("../shared/interop")
}

/// Path of a binary built by this workspace (`sealrun`, `sealrun-verify`).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current test executable");
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executable lives in target/<profile>/deps");
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} not found: run `cargo build --workspace` (or `cargo test --workspace`, which builds it)",
        p.display()
    );
    p
}

/// Run a command to completion and return its output.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Stdout and stderr as one lossy string, for assertions and messages.
pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `sealrun ARGS` in `dir`.
pub fn sealrun(dir: &Path, args: &[&str]) -> Output {
    run(Command::new(bin("sealrun")).current_dir(dir).args(args))
}

/// `sealrun-verify ARGS` in `dir`.
pub fn verify(dir: &Path, args: &[&str]) -> Output {
    run(Command::new(bin("sealrun-verify"))
        .current_dir(dir)
        .args(args))
}

/// Assert success and return the combined output.
#[track_caller]
pub fn ok(out: Output) -> String {
    let t = text(&out);
    assert!(
        out.status.success(),
        "expected success, got {:?}:\n{t}",
        out.status
    );
    t
}

/// Assert exit code `code` and that the output contains every needle.
#[track_caller]
pub fn fails_with(out: Output, code: i32, needles: &[&str]) -> String {
    let t = text(&out);
    assert_eq!(
        out.status.code(),
        Some(code),
        "wrong exit status, output:\n{t}"
    );
    for n in needles {
        assert!(t.contains(n), "output lacks {n:?}:\n{t}");
    }
    t
}

/// Write `files` (relative path, content) under `root`, creating folders.
pub fn write_tree(root: &Path, files: &[(&str, &[u8])]) {
    for (rel, data) in files {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().expect("has parent")).expect("mkdir");
        std::fs::write(&p, data).expect("write file");
    }
}

/// Copy a directory tree (regular files and folders only).
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read_dir") {
        let e = e.expect("entry");
        let (src, dst) = (e.path(), to.join(e.file_name()));
        if e.file_type().expect("type").is_dir() {
            copy_tree(&src, &dst);
        } else {
            std::fs::copy(&src, &dst).expect("copy");
            let mut perm = std::fs::metadata(&dst).expect("meta").permissions();
            #[allow(clippy::permissions_set_readonly_false)]
            perm.set_readonly(false);
            std::fs::set_permissions(&dst, perm).expect("chmod");
        }
    }
}

/// Make sure a Python module is importable, installing `package` from PyPI once
/// if it is not (CI installs it up front; this keeps `cargo test` self-sufficient).
pub fn ensure_python_module(module: &str, package: &str) {
    let importable = || {
        Command::new("python3")
            .args(["-c", &format!("import {module}")])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    };
    if importable() {
        return;
    }
    let out = run(Command::new("python3").args(["-m", "pip", "install", "--quiet", package]));
    assert!(
        importable(),
        "python module {module} is missing and `pip install {package}` failed:\n{}",
        text(&out)
    );
}
