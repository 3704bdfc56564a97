//! `sealrun run` with a malformed job spec: for each kind of field (string,
//! array, table, integer, size, duration, path, mount, kind enum, unknown field,
//! missing field) the run stops before anything happens, with exit 64 and one
//! line naming `file:line:col`, the field and the problem.

use sealrun_integration::{text, RunFixture, RUN_SANDBOX};

/// The fixture's `train.toml`, for reference (line numbers used below):
///  1 name = "train"
///  2 command = ["python3", "/code/train.py"]
///  3 code = "train-code"
///  4 output = "train-out"
///  5 trust = "trust.toml"
///  6 signing_key = "launcher.key"
///  7 [[input]]
///  8 name = "points"
///  9 path = "data"
/// 10 signature = "data.sig"
/// 11 [sandbox]
/// 12 profile = "python"
/// 13 memory = "512M"
/// 14 timeout = "60s"
fn fixture() -> (RunFixture, String) {
    let f = RunFixture::new();
    let job = f.job(
        "train",
        "open('/out/marker', 'w').write('ran')\n",
        &[],
        RUN_SANDBOX,
    );
    let text = std::fs::read_to_string(f.dir().join(&job)).unwrap();
    assert_eq!(text.lines().nth(13), Some("timeout = \"60s\""), "{text}");
    (f, text)
}

/// Replace `from` by `to` in the spec, run it, and check the one error line.
#[track_caller]
fn check(f: &RunFixture, good: &str, from: &str, to: &str, want: &[&str]) {
    assert!(good.contains(from), "fixture lacks {from:?}");
    let bad = good.replacen(from, to, 1);
    std::fs::write(f.dir().join("bad.toml"), &bad).unwrap();
    let out = f.run("bad.toml");
    let t = text(&out);
    assert_eq!(out.status.code(), Some(64), "{to:?}: {t}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{to:?}: expected one line, got:\n{stderr}");
    assert!(out.stdout.is_empty(), "{to:?}: stdout {t}");
    let line = lines[0];
    assert!(
        line.starts_with("sealrun: error: bad.toml:"),
        "{to:?}: {line}"
    );
    for w in want {
        assert!(line.contains(w), "{to:?}: {line:?} lacks {w:?}");
    }
    // Nothing ran, nothing was recorded.
    assert!(!f.dir().join("train-out/marker").exists());
    assert!(
        !f.dir().join("audit.log").exists(),
        "{to:?}: audit log written"
    );
    assert!(!f.dir().join("records").exists(), "{to:?}: records written");
}

#[test]
fn string_field_of_wrong_type() {
    let (f, good) = fixture();
    check(
        &f,
        &good,
        "name = \"train\"",
        "name = 7",
        &["bad.toml:1:8: name: invalid type: integer `7`, expected a string"],
    );
    // Valid TOML type, invalid value.
    check(
        &f,
        &good,
        "name = \"train\"",
        "name = \"a/b\"",
        &["bad.toml:1:8: name: use 1-64 characters"],
    );
}

#[test]
fn array_field_of_wrong_type_or_empty() {
    let (f, good) = fixture();
    let from = "command = [\"python3\", \"/code/train.py\"]";
    check(
        &f,
        &good,
        from,
        "command = \"python3\"",
        &["bad.toml:2:11: command: invalid type: string \"python3\", expected a sequence"],
    );
    check(
        &f,
        &good,
        from,
        "command = []",
        &["bad.toml:2:11: command: empty command"],
    );
    check(
        &f,
        &good,
        "[sandbox]",
        "[sandbox]\nro = \"/usr\"",
        &["bad.toml:12:6: sandbox.ro: invalid type: string \"/usr\", expected a sequence"],
    );
}

#[test]
fn table_field_of_wrong_type() {
    let (f, good) = fixture();
    let from = "signing_key = \"launcher.key\"";
    check(
        &f,
        &good,
        from,
        "signing_key = \"launcher.key\"\nenv = [\"A=1\"]",
        &["bad.toml:7:7: env: invalid type: sequence, expected a map"],
    );
    check(
        &f,
        &good,
        from,
        "signing_key = \"launcher.key\"\nenv = { A = 1 }",
        &["bad.toml:7:13: env.A: invalid type: integer `1`, expected a string"],
    );
}

#[test]
fn integer_field_of_wrong_type() {
    let (f, good) = fixture();
    check(
        &f,
        &good,
        "timeout = \"60s\"",
        "timeout = \"60s\"\npids = \"many\"",
        &["bad.toml:15:8: sandbox.pids: invalid type: string \"many\", expected u64"],
    );
}

#[test]
fn zero_pids_names_its_line() {
    let (f, good) = fixture();
    check(
        &f,
        &good,
        "timeout = \"60s\"",
        "timeout = \"60s\"\npids = 0",
        &["bad.toml:15:8: sandbox.pids: must be at least 1"],
    );
}

#[test]
fn size_field_unparsable() {
    let (f, good) = fixture();
    check(
        &f,
        &good,
        "memory = \"512M\"",
        "memory = \"lots\"",
        &["bad.toml:13:10: sandbox.memory: invalid size \"lots\""],
    );
    check(
        &f,
        &good,
        "memory = \"512M\"",
        "memory = \"0\"",
        &["bad.toml:13:10: sandbox.memory: invalid size \"0\""],
    );
    check(
        &f,
        &good,
        "memory = \"512M\"",
        "memory = \"512M\"\ntmp_size = \"-1G\"",
        &["bad.toml:14:12: sandbox.tmp_size: invalid size \"-1G\""],
    );
}

#[test]
fn output_bounds_are_checked() {
    let (f, good) = fixture();
    for (line, needle) in [
        (
            "max_output_size = \"big\"",
            "sandbox.max_output_size: invalid size \"big\"",
        ),
        (
            "max_file_size = \"0\"",
            "sandbox.max_file_size: invalid size \"0\"",
        ),
        (
            "max_log_size = \"-1M\"",
            "sandbox.max_log_size: invalid size \"-1M\"",
        ),
        (
            "max_output_files = 0",
            "sandbox.max_output_files: must be at least 1",
        ),
        (
            "post_run_timeout = \"0s\"",
            "sandbox.post_run_timeout: invalid duration \"0s\"",
        ),
    ] {
        check(
            &f,
            &good,
            "memory = \"512M\"",
            &format!("memory = \"512M\"\n{line}"),
            &["bad.toml:14:", needle],
        );
    }
}

#[test]
fn duration_field_unparsable_or_wrong_type() {
    let (f, good) = fixture();
    check(
        &f,
        &good,
        "timeout = \"60s\"",
        "timeout = \"soon\"",
        &["bad.toml:14:11: sandbox.timeout: invalid duration \"soon\""],
    );
    check(
        &f,
        &good,
        "timeout = \"60s\"",
        "timeout = 60",
        &["bad.toml:14:11: sandbox.timeout: invalid type: integer `60`, expected a string"],
    );
}

#[test]
fn path_field_missing_or_wrong_kind() {
    let (f, good) = fixture();
    check(
        &f,
        &good,
        "trust = \"trust.toml\"",
        "trust = \"missing.toml\"",
        &["bad.toml:5:9: trust: ", "missing.toml does not exist"],
    );
    check(
        &f,
        &good,
        "path = \"data\"",
        "path = \"nodata\"",
        &["bad.toml:9:8: input[0].path: ", "nodata does not exist"],
    );
    check(
        &f,
        &good,
        "code = \"train-code\"",
        "code = \"data.sig\"",
        &["bad.toml:3:8: code: ", "data.sig is not a directory"],
    );
    check(
        &f,
        &good,
        "signing_key = \"launcher.key\"",
        "signing_key = \"\"",
        &["bad.toml:6:15: signing_key: empty path"],
    );
}

#[test]
fn mount_field_not_absolute() {
    let (f, good) = fixture();
    check(
        &f,
        &good,
        "signature = \"data.sig\"",
        "signature = \"data.sig\"\nmount = \"relative\"",
        &["bad.toml:11:9: input[0].mount: mount point \"relative\" must be an absolute path"],
    );
    check(
        &f,
        &good,
        "signature = \"data.sig\"",
        "signature = \"data.sig\"\nmount = \"/code/x\"",
        &["bad.toml:11:9: input[0].mount: /code/x overlaps another mount"],
    );
}

#[test]
fn kind_enum_unknown_variant() {
    let (f, good) = fixture();
    check(
        &f,
        &good,
        "signature = \"data.sig\"",
        "signature = \"data.sig\"\nkind = \"weights\"",
        &["bad.toml:11:8: input[0].kind: unknown variant `weights`, expected one of `dataset`"],
    );
}

#[test]
fn unknown_field_top_level_and_nested() {
    let (f, good) = fixture();
    check(
        &f,
        &good,
        "name = \"train\"",
        "name = \"train\"\nfrobnicate = 1",
        &["bad.toml:2:1: frobnicate: unknown field `frobnicate`, expected one of"],
    );
    check(
        &f,
        &good,
        "[sandbox]",
        "[sandbox]\nfrobnicate = 1",
        &["bad.toml:12:1: sandbox.frobnicate: unknown field `frobnicate`"],
    );
    check(
        &f,
        &good,
        "path = \"data\"",
        "path = \"data\"\nsha = \"x\"",
        &["bad.toml:10:1: input[0].sha: unknown field `sha`"],
    );
}

#[test]
fn missing_required_field() {
    let (f, good) = fixture();
    check(
        &f,
        &good,
        "output = \"train-out\"\n",
        "",
        &["bad.toml:1:1: ", "missing field `output`"],
    );
    check(
        &f,
        &good,
        "name = \"points\"\n",
        "",
        &["bad.toml:7:1: input[0]: missing field `name`"],
    );
    check(
        &f,
        &good,
        "signature = \"data.sig\"\n",
        "",
        &["bad.toml:8:8: input[0].signature: missing"],
    );
}

#[test]
fn toml_syntax_error() {
    let (f, good) = fixture();
    check(
        &f,
        &good,
        "name = \"train\"",
        "name = \"train",
        &["bad.toml:1:", "invalid basic string"],
    );
}
