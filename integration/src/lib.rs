//! Helpers shared by the end-to-end tests: locate the real binaries, run them,
//! and make scratch trees. Tests only touch their own temporary directories.

pub mod exec;
pub mod scratch;
pub mod slurm;
pub mod swtpm;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The workspace root (the folder holding the top-level `Cargo.toml`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("integration/ has a parent")
        .to_path_buf()
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

/// Run a command to completion and return its output. `sealrun` gets a verified store of its
/// own in its working folder (`.sealrun-store`), unless the test sets `SEALRUN_STORE`: tests
/// that sign the same bytes must not share entries.
pub fn run(cmd: &mut Command) -> Output {
    let is_sealrun = Path::new(cmd.get_program()).file_name() == Some("sealrun".as_ref());
    let store_set = cmd.get_envs().any(|(k, _)| k == "SEALRUN_STORE");
    if let (true, false, Some(dir)) = (is_sealrun, store_set, cmd.get_current_dir()) {
        let store = dir.join(".sealrun-store");
        cmd.env("SEALRUN_STORE", store);
    }
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

// ---- Run fixtures (`sealrun run` tests) ----

/// The trust policy of [`RunFixture`]: `registry` may sign datasets, `launcher`
/// may sign records and checkpoints.
pub const RUN_TRUST: &str = r#"[[key]]
name = "registry"
public_key = "reg.pub"
kinds = ["dataset"]
[[key]]
name = "launcher"
public_key = "launcher.pub"
kinds = ["record", "checkpoint"]
"#;

/// The default `[sandbox]` body of [`RunFixture::job`].
pub const RUN_SANDBOX: &str = "profile = \"python\"\nmemory = \"512M\"\ntimeout = \"60s\"\n";

/// The bytes of the fixture's signed dataset file `data/points.csv`.
pub const RUN_DATA: &[u8] = b"x,y\n1,2\n3,4\n";

/// A scratch folder with two keys (`reg`, `launcher`), a signed dataset
/// (`data/points.csv`, `data.sig`, label classification=internal) and
/// `trust.toml`; jobs are added with [`RunFixture::job`].
pub struct RunFixture {
    tmp: tempfile::TempDir,
    /// Key id of `launcher.pub` (as printed by `sealrun keygen`).
    pub launcher_keyid: String,
    /// Key id of `reg.pub`.
    pub reg_keyid: String,
}

fn keyid_of(keygen_output: &str) -> String {
    keygen_output
        .lines()
        .find_map(|l| l.strip_prefix("key id: "))
        .expect("keygen prints `key id: ...`")
        .trim()
        .to_string()
}

impl RunFixture {
    /// Keys, signed dataset and trust policy in a new temporary folder.
    pub fn new() -> RunFixture {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path();
        let reg_keyid = keyid_of(&ok(sealrun(dir, &["keygen", "--out", "reg"])));
        let launcher_keyid = keyid_of(&ok(sealrun(dir, &["keygen", "--out", "launcher"])));
        write_tree(dir, &[("data/points.csv", RUN_DATA)]);
        ok(sealrun(
            dir,
            &[
                "sign",
                "data",
                "--key",
                "reg.key",
                "--kind",
                "dataset",
                "--label",
                "classification=internal",
            ],
        ));
        std::fs::write(dir.join("trust.toml"), RUN_TRUST).expect("write trust.toml");
        RunFixture {
            tmp,
            launcher_keyid,
            reg_keyid,
        }
    }

    /// The fixture's folder.
    pub fn dir(&self) -> &Path {
        self.tmp.path()
    }

    /// Write job `NAME.toml` running `python3 /code/train.py ARGS...` with
    /// `script` as `NAME-code/train.py`, output `NAME-out`, input `points`
    /// (`data`, `data.sig`) and `[sandbox]` body `sandbox`. Returns the spec's
    /// file name (relative to [`RunFixture::dir`]).
    pub fn job(&self, name: &str, script: &str, args: &[&str], sandbox: &str) -> String {
        let dir = self.dir();
        write_tree(
            dir,
            &[(&format!("{name}-code/train.py"), script.as_bytes())],
        );
        let mut command = vec!["\"python3\"".to_string(), "\"/code/train.py\"".to_string()];
        command.extend(args.iter().map(|a| format!("{a:?}")));
        let spec = format!(
            "name = {name:?}\ncommand = [{}]\ncode = \"{name}-code\"\noutput = \"{name}-out\"\ntrust = \"trust.toml\"\nsigning_key = \"launcher.key\"\n[[input]]\nname = \"points\"\npath = \"data\"\nsignature = \"data.sig\"\n[sandbox]\n{sandbox}",
            command.join(", ")
        );
        let file = format!("{name}.toml");
        std::fs::write(dir.join(&file), spec).expect("write job spec");
        file
    }

    /// `sealrun run --quiet SPEC` in the fixture's folder.
    pub fn run(&self, spec: &str) -> Output {
        sealrun(self.dir(), &["run", spec, "--quiet"])
    }

    /// The run records (`records/*.json`) of job `name`, sorted by path.
    pub fn records(&self, name: &str) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(self.dir().join("records"))
            .map(|d| {
                d.filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| {
                        let f = p.file_name().unwrap_or_default().to_string_lossy();
                        f.starts_with(&format!("{name}-"))
                            && f.ends_with(".json")
                            && !f.ends_with(".quote.json")
                    })
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    /// The one record of job `name` (panics unless there is exactly one).
    pub fn record(&self, name: &str) -> PathBuf {
        let r = self.records(name);
        assert_eq!(r.len(), 1, "expected one record of {name}, found {r:?}");
        r.into_iter().next().expect("one record")
    }

    /// `sealrun-verify log audit.log --trust trust.toml [--json]`.
    pub fn verify_log(&self, json: bool) -> Output {
        let mut args = vec!["log", "audit.log", "--trust", "trust.toml"];
        if json {
            args.push("--json");
        }
        verify(self.dir(), &args)
    }
}

impl Default for RunFixture {
    fn default() -> Self {
        Self::new()
    }
}

/// The in-toto statement inside a DSSE envelope file (payload decoded, not verified).
pub fn envelope_statement(path: &Path) -> serde_json::Value {
    use base64::Engine as _;
    let env: serde_json::Value =
        serde_json::from_slice(&std::fs::read(path).expect("read envelope")).expect("JSON");
    let payload = base64::engine::general_purpose::STANDARD
        .decode(env["payload"].as_str().expect("payload"))
        .expect("base64 payload");
    serde_json::from_slice(&payload).expect("statement JSON")
}

/// Hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// The byproduct named `name` of a run record's statement.
pub fn byproduct<'a>(statement: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    statement["predicate"]["runDetails"]["byproducts"]
        .as_array()
        .and_then(|a| a.iter().find(|b| b["name"] == name))
        .unwrap_or_else(|| panic!("no byproduct {name:?} in {statement:#}"))
}

/// The audit log's lines, parsed.
pub fn audit_entries(log: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(log)
        .expect("read audit log")
        .lines()
        .map(|l| serde_json::from_str(l).expect("audit line is JSON"))
        .collect()
}

// ---- processes and cgroups a killed launcher may leave behind ----

pub fn marked_pids(marker: &str) -> Vec<(u32, String)> {
    let mut v = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if pid == std::process::id() {
            continue;
        }
        if let Ok(c) = std::fs::read(e.path().join("cmdline")) {
            let c = String::from_utf8_lossy(&c).replace('\0', " ");
            if c.contains(marker) {
                v.push((pid, c));
            }
        }
    }
    v
}

/// Kill what is left of this test's own job (by pid; the marker is unique to it).
pub fn kill_leftovers(marker: &str) -> Vec<(u32, String)> {
    let left = marked_pids(marker);
    for (pid, _) in &left {
        // The sandbox init is the job's parent: killing it ends the whole pid namespace.
        if let Ok(st) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
            if let Some(ppid) = st
                .lines()
                .find_map(|l| l.strip_prefix("PPid:"))
                .and_then(|p| p.trim().parse::<i32>().ok())
            {
                let comm =
                    std::fs::read_to_string(format!("/proc/{ppid}/comm")).unwrap_or_default();
                if ppid > 1 && ppid as u32 != std::process::id() && comm.starts_with("sealrun") {
                    // SAFETY: plain kill(2) of a process this test started (its sandbox init).
                    unsafe { libc::kill(ppid, libc::SIGKILL) };
                }
            }
        }
        // SAFETY: plain kill(2) of this test's own job process.
        unsafe { libc::kill(*pid as i32, libc::SIGKILL) };
    }
    left
}

/// Remove the (empty) cgroups a SIGKILLed launcher `pid` could not remove itself
/// (`/sys/fs/cgroup/{memory,pids,devices}/sealrun/<pid>-N`, or under the unified hierarchy).
pub fn remove_leaked_cgroups(pid: u32) {
    let prefix = format!("{pid}-");
    for base in [
        "/sys/fs/cgroup/memory/sealrun",
        "/sys/fs/cgroup/pids/sealrun",
        "/sys/fs/cgroup/devices/sealrun",
        "/sys/fs/cgroup/unified/sealrun",
        "/sys/fs/cgroup/sealrun",
    ] {
        let Ok(rd) = std::fs::read_dir(base) else {
            continue;
        };
        for e in rd.flatten() {
            if e.file_name().to_string_lossy().starts_with(&prefix) {
                // rmdir only succeeds on an empty cgroup: nothing else is touched.
                let _ = std::fs::remove_dir(e.path());
            }
        }
    }
}

/// The entries under `dir` not owned by this process's uid (a job's host uid is another one):
/// what a run failed to hand back.
pub fn not_ours(dir: &Path) -> Vec<String> {
    use std::os::unix::fs::MetadataExt;
    // /proc/self is owned by the process's effective uid.
    let me = std::fs::metadata("/proc/self").unwrap().uid();
    let mut bad = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let m = e.path().symlink_metadata().unwrap();
            if m.uid() != me {
                bad.push(e.path().display().to_string());
            }
            if m.is_dir() {
                todo.push(e.path());
            }
        }
    }
    bad
}

/// What a scan of a process's readable memory (`/proc/PID/mem`, as host root) found.
pub struct MemoryScan {
    /// `needle` is in some readable mapping.
    pub found: bool,
    /// How many mappings could be read.
    pub regions_read: usize,
    /// Whether the `[stack]` mapping was among them.
    pub stack_read: bool,
}

/// Scan every readable mapping of `pid` for `needle` (each hit is printed with its mapping).
pub fn scan_memory(pid: u32, needle: &[u8]) -> MemoryScan {
    use std::io::{Read, Seek, SeekFrom};
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let mut mem = std::fs::File::open(format!("/proc/{pid}/mem")).unwrap();
    let mut scan = MemoryScan {
        found: false,
        regions_read: 0,
        stack_read: false,
    };
    for line in maps.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if !f[1].starts_with('r') || line.ends_with("[vvar]") || line.ends_with("[vsyscall]") {
            continue;
        }
        let (a, b) = f[0].split_once('-').unwrap();
        let (a, b) = (
            u64::from_str_radix(a, 16).unwrap(),
            u64::from_str_radix(b, 16).unwrap(),
        );
        let mut buf = vec![0u8; (b - a) as usize];
        if mem.seek(SeekFrom::Start(a)).is_err() || mem.read_exact(&mut buf).is_err() {
            continue;
        }
        scan.regions_read += 1;
        scan.stack_read |= line.ends_with("[stack]");
        if buf.windows(needle.len()).any(|w| w == needle) {
            eprintln!("{pid}: the needle is in {line}");
            scan.found = true;
        }
    }
    scan
}

/// Poll until `path` exists (the job's own progress marker), or panic.
pub fn wait_for(path: &Path, what: &str) {
    let t0 = std::time::Instant::now();
    while !path.exists() {
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(30),
            "{what}: {} never appeared",
            path.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

// ---- Python virtualenvs (ML jobs) ----

/// The wheels of the ML tests' packages (numpy, scikit-learn, pandas and what they need):
/// `.ci/run` downloads them into `target/ml-wheels` up front, so a test installs them offline.
pub fn ml_wheels() -> PathBuf {
    workspace_root().join("target").join("ml-wheels")
}

/// Make a virtualenv at `venv` with `PYTHON -m venv`, then install `packages` into it from
/// [`ml_wheels`] only (`pip install --no-index --find-links`: no index is asked, so what gets
/// installed is what `.ci/run` fetched). Where the wheels are missing (a `cargo test` without
/// `.ci/run`), they are downloaded into that folder once, the way `.ci/run` does. With no
/// packages the venv is made without pip at all (fast).
pub fn make_venv(python: &str, venv: &Path, packages: &[&str]) {
    let mut c = Command::new(python);
    c.args(["-m", "venv"]);
    if packages.is_empty() {
        c.arg("--without-pip");
    }
    ok(run(c.arg(venv)));
    if packages.is_empty() {
        return;
    }
    let wheels = ml_wheels();
    let pip = venv.join("bin").join("pip");
    let install = || {
        run(Command::new(&pip)
            .args([
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--no-index",
            ])
            .arg("--find-links")
            .arg(&wheels)
            .args(packages))
    };
    if install().status.success() {
        return;
    }
    eprintln!(
        "{} lacks wheels for {packages:?}: downloading them (.ci/run does this up front)",
        wheels.display()
    );
    std::fs::create_dir_all(&wheels).expect("mkdir ml-wheels");
    ok(run(Command::new(python)
        .args([
            "-m",
            "pip",
            "download",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .arg("--dest")
        .arg(&wheels)
        .args(packages)));
    ok(install());
}
