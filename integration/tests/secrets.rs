//! Short-lived secrets (issue 5), end to end with the real binaries: delivered as
//! a 0400 file on a private tmpfs inside the sandbox, removed at its TTL while the
//! job runs, never in any process's environment or argv, never in the record,
//! audit log, log files or launcher output (even at debug level), redacted as it
//! streams (also when split across writes), detected in outputs in its common
//! encodings, and nothing of it left on the host disk when the launcher is
//! SIGKILLed. Every test uses its own long random-looking value, so a hit is
//! unambiguous; jobs only ever print or write hashes of it (except the leak tests).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use base64::Engine as _;
use sealrun_integration::{
    audit_entries, bin, byproduct, envelope_statement, kill_leftovers, remove_leaked_cgroups, run,
    sha256_hex, text, wait_for, RunFixture, RUN_SANDBOX,
};

/// The environment variable the tests pass each secret through (to the `sealrun`
/// child only, never to this process's own environment).
const VAR: &str = "SEALRUN_TEST_SECRET_VALUE";

/// A long, random-looking value unique to `test` and this process. It contains
/// `/` and `+`, so its URL encoding differs from the value itself.
fn secret_value(test: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let seed = format!("{test}-{}-{nanos}", std::process::id());
    let h = hex::decode(sha256_hex(seed.as_bytes())).unwrap();
    let b64 = base64::engine::general_purpose::STANDARD_NO_PAD.encode(&h[..18]);
    format!("tok/{}+{b64}", &hex::encode(&h[18..28]))
}

/// Percent-encoding of every byte except A-Z a-z 0-9 - . _ ~ (what Python's
/// `urllib.parse.quote(v, safe="")` produces).
fn url_encode(v: &[u8]) -> String {
    v.iter()
        .map(|&b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The value and the encodings of it a leak could take.
fn needles(value: &str) -> Vec<(&'static str, Vec<u8>)> {
    let v = value.as_bytes();
    let e = &base64::engine::general_purpose::STANDARD_NO_PAD;
    let u = &base64::engine::general_purpose::URL_SAFE_NO_PAD;
    vec![
        ("raw", v.to_vec()),
        ("hex", hex::encode(v).into_bytes()),
        ("HEX", hex::encode_upper(v).into_bytes()),
        ("base64", e.encode(v).into_bytes()),
        ("base64url", u.encode(v).into_bytes()),
        ("url", url_encode(v).into_bytes()),
    ]
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && memchr::memmem::find(hay, needle).is_some()
}

/// Which encodings of `value` occur in `hay`.
fn hits(hay: &[u8], value: &str) -> Vec<&'static str> {
    needles(value)
        .into_iter()
        .filter(|(_, n)| contains(hay, n))
        .map(|(k, _)| k)
        .collect()
}

/// Every regular file under `root` (symlinks not followed) holding the value or
/// one of its encodings: (file, encodings).
fn find_in_tree(root: &Path, value: &str) -> Vec<(PathBuf, Vec<&'static str>)> {
    let mut found = Vec::new();
    let Ok(rd) = std::fs::read_dir(root) else {
        return found;
    };
    for e in rd.flatten() {
        let Ok(ft) = e.file_type() else { continue };
        if ft.is_dir() {
            found.extend(find_in_tree(&e.path(), value));
        } else if ft.is_file() {
            if let Ok(data) = std::fs::read(e.path()) {
                let h = hits(&data, value);
                if !h.is_empty() {
                    found.push((e.path(), h));
                }
            }
        }
    }
    found
}

/// Regular files directly in `dir` (not below), up to 64 MiB each, holding the value.
fn find_top_level(dir: &Path, value: &str) -> Vec<(PathBuf, Vec<&'static str>)> {
    let mut found = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return found;
    };
    for e in rd.flatten() {
        let Ok(md) = std::fs::symlink_metadata(e.path()) else {
            continue;
        };
        if !md.is_file() || md.len() > 64 << 20 {
            continue;
        }
        if let Ok(data) = std::fs::read(e.path()) {
            let h = hits(&data, value);
            if !h.is_empty() {
                found.push((e.path(), h));
            }
        }
    }
    found
}

/// The `[secrets.token]` table reading from [`VAR`], plus `extra` lines.
fn token_from_env(ttl: &str, extra: &str) -> String {
    format!("[secrets.token]\nfrom = \"env:{VAR}\"\nttl = {ttl:?}\n{extra}")
}

/// Job `name` (script as `/code/train.py`, `args`), the fixture's sandbox and `secrets_toml`.
fn secret_job(
    f: &RunFixture,
    name: &str,
    script: &str,
    args: &[&str],
    secrets_toml: &str,
) -> String {
    f.job(name, script, args, &format!("{RUN_SANDBOX}{secrets_toml}"))
}

/// `sealrun run SPEC` with `VAR=value` in the child's environment only.
fn run_cmd(f: &RunFixture, spec: &str, value: &str, quiet: bool, debug: bool) -> Command {
    let mut c = Command::new(bin("sealrun"));
    c.current_dir(f.dir())
        .args(["run", spec])
        .env(VAR, value)
        .env_remove("SEALRUN_LOG")
        .env_remove("RUST_LOG");
    if quiet {
        c.arg("--quiet");
    }
    if debug {
        c.env("SEALRUN_LOG", "debug");
    }
    c
}

fn run_secret(f: &RunFixture, spec: &str, value: &str, quiet: bool) -> Output {
    run(&mut run_cmd(f, spec, value, quiet, false))
}

#[track_caller]
fn exit_code(out: &Output, code: i32) -> String {
    let t = text(out);
    assert_eq!(out.status.code(), Some(code), "wrong exit status:\n{t}");
    t
}

fn statement(f: &RunFixture, job: &str) -> serde_json::Value {
    envelope_statement(&f.record(job))
}

fn secrets_of(f: &RunFixture, job: &str) -> serde_json::Value {
    byproduct(&statement(f, job), "secrets")["annotations"].clone()
}

fn end_result(f: &RunFixture, job: &str) -> String {
    byproduct(&statement(f, job), "end")["annotations"]["result"]
        .as_str()
        .expect("end.result")
        .to_string()
}

/// The `(secret, place)` pairs of the record's `secrets.leaked`, sorted.
fn leaked(f: &RunFixture, job: &str) -> Vec<(String, String)> {
    let s = secrets_of(f, job);
    let mut v: Vec<(String, String)> = s["leaked"]
        .as_array()
        .unwrap_or_else(|| panic!("no leaked list: {s:#}"))
        .iter()
        .map(|l| {
            (
                l["secret"].as_str().unwrap().to_string(),
                l["place"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    v.sort();
    v
}

fn log_of(f: &RunFixture, job: &str, stream: &str) -> Vec<u8> {
    let rec = f.record(job);
    let p = PathBuf::from(
        rec.display()
            .to_string()
            .replace(".json", &format!(".{stream}.log")),
    );
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn json_out(f: &RunFixture, job: &str, file: &str) -> serde_json::Value {
    let p = f.dir().join(format!("{job}-out/{file}"));
    serde_json::from_slice(&std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .unwrap()
}

/// Lines of the host's mount tables (this process's namespace) mentioning a secret folder.
fn host_secret_mounts() -> Vec<String> {
    let mut v = Vec::new();
    for t in ["/proc/mounts", "/proc/self/mountinfo"] {
        let s = std::fs::read_to_string(t).unwrap();
        v.extend(
            s.lines()
                .filter(|l| l.contains("secrets") || l.contains("/run/creds"))
                .map(|l| format!("{t}: {l}")),
        );
    }
    v
}

// ---- 1. Read within the TTL ----

/// Reads the secret at argv[1]; writes its stat, length and SHA-256 (never the value) to /out/read.json.
const READ: &str = r#"import os, sys, json, hashlib, stat
p = sys.argv[1]
st = os.stat(p)
d = open(p, "rb").read()
try:
    open(p, "ab")
    w = "writable"
except PermissionError:
    w = "denied"
except OSError as e:
    w = type(e).__name__
json.dump({"mode": stat.S_IMODE(st.st_mode), "regular": stat.S_ISREG(st.st_mode),
           "uid": st.st_uid, "me": os.getuid(), "len": len(d),
           "sha256": hashlib.sha256(d).hexdigest(), "write": w},
          open("/out/read.json", "w"))
"#;

#[test]
fn read_within_ttl_from_env_and_from_file() {
    let f = RunFixture::new();
    let value = secret_value("read_within_ttl");

    // From the environment, at the default path.
    let job = secret_job(
        &f,
        "readenv",
        READ,
        &["/run/secrets/token"],
        &token_from_env("10m", ""),
    );
    let t = exit_code(&run_secret(&f, &job, &value, true), 0);
    assert!(t.contains("succeeded"), "{t}");
    let r = json_out(&f, "readenv", "read.json");
    assert_eq!(r["mode"], 0o400, "{r}");
    assert_eq!(r["regular"], true, "{r}");
    assert_eq!(r["uid"], 1000, "{r}");
    assert_eq!(r["me"], 1000, "{r}");
    assert_eq!(r["write"], "denied", "{r}");
    assert_eq!(r["len"], value.len(), "{r}");
    assert_eq!(r["sha256"], sha256_hex(value.as_bytes()), "{r}");

    // From a file with a trailing newline (stripped), at a custom path under /run/.
    std::fs::write(f.dir().join("secret.txt"), format!("{value}\n")).unwrap();
    let job = secret_job(
        &f,
        "readfile",
        READ,
        &["/run/creds/api"],
        "[secrets.token]\nfrom = \"file:secret.txt\"\nttl = \"10m\"\npath = \"/run/creds/api\"\n",
    );
    let t = exit_code(&run_secret(&f, &job, "unused", true), 0);
    assert!(t.contains("succeeded"), "{t}");
    let r = json_out(&f, "readfile", "read.json");
    assert_eq!(r["mode"], 0o400, "{r}");
    assert_eq!(r["uid"], 1000, "{r}");
    assert_eq!(r["len"], value.len(), "trailing newline not stripped: {r}");
    assert_eq!(r["sha256"], sha256_hex(value.as_bytes()), "{r}");

    // The record: name, path, TTL, delivery, times, a keyed fingerprint; no leak.
    let a = secrets_of(&f, "readenv");
    let b = secrets_of(&f, "readfile");
    let (sa, sb) = (&a["secrets"][0], &b["secrets"][0]);
    assert_eq!(a["secrets"].as_array().unwrap().len(), 1, "{a:#}");
    assert_eq!(sa["name"], "token");
    assert_eq!(sa["path"], "/run/secrets/token");
    assert_eq!(sb["path"], "/run/creds/api");
    assert_eq!(sa["ttl_s"], 600.0);
    assert_eq!(sa["delivery"], "tmpfs");
    assert_eq!(sa["allow_leak"], false);
    assert!(
        sa["delivered_on"].is_string() && sa["expires_on"].is_string(),
        "{sa}"
    );
    assert_eq!(a["leaked"], serde_json::json!([]));
    assert_eq!(b["leaked"], serde_json::json!([]));
    let fp = sa["fingerprint"].as_str().unwrap();
    assert!(
        fp.starts_with("hmac-sha256:") && fp.len() == 12 + 64,
        "{fp}"
    );
    assert!(
        !fp.contains(&sha256_hex(value.as_bytes())),
        "fingerprint is a plain hash"
    );
    // Same value, same launcher key: the same fingerprint, whatever the source.
    assert_eq!(sa["fingerprint"], sb["fingerprint"]);
    assert!(hits(&serde_json::to_vec(&a).unwrap(), &value).is_empty());
}

// ---- 2. Gone after the TTL while the job runs ----

const TTL: &str = r#"import os, time, json
p = "/run/secrets/token"
r = {"exists0": os.path.exists(p), "len0": len(open(p, "rb").read())}
time.sleep(5)
r["exists1"] = os.path.exists(p)
try:
    open(p, "rb").read()
    r["open1"] = "opened"
except FileNotFoundError:
    r["open1"] = "FileNotFoundError"
except Exception as e:
    r["open1"] = type(e).__name__
r["dir1"] = os.listdir(os.path.dirname(p))
json.dump(r, open("/out/ttl.json", "w"))
print("job went on after expiry")
"#;

#[test]
fn gone_after_ttl_while_the_job_runs() {
    let f = RunFixture::new();
    let value = secret_value("gone_after_ttl");
    // 3 s leaves room for a slow interpreter start on a loaded machine.
    let job = secret_job(&f, "ttl", TTL, &[], &token_from_env("3s", ""));
    let t = exit_code(&run_secret(&f, &job, &value, true), 0);
    assert!(t.contains("succeeded"), "{t}");
    let r = json_out(&f, "ttl", "ttl.json");
    assert_eq!(r["exists0"], true, "{r}");
    assert_eq!(r["len0"], value.len(), "{r}");
    assert_eq!(r["exists1"], false, "still there after its TTL: {r}");
    assert_eq!(r["open1"], "FileNotFoundError", "{r}");
    assert_eq!(r["dir1"], serde_json::json!([]), "{r}");
    assert!(String::from_utf8_lossy(&log_of(&f, "ttl", "stdout")).contains("job went on"));
    let s = secrets_of(&f, "ttl");
    assert_eq!(s["secrets"][0]["ttl_s"], 3.0, "{s:#}");
    let parse = |k: &str| {
        time::OffsetDateTime::parse(
            s["secrets"][0][k].as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap()
    };
    assert_eq!(
        parse("expires_on") - parse("delivered_on"),
        time::Duration::seconds(3)
    );
    assert_eq!(end_result(&f, "ttl"), "succeeded");
}

// ---- 3. Absent from every /proc/*/environ and /proc/*/cmdline ----

/// Inside: scan every readable /proc/*/environ and cmdline for the value, write
/// only counts, signal readiness, then sleep while the host scans.
const PROC_SCAN: &str = r#"import os, time, json
want = open("/run/secrets/token", "rb").read()
pids, readable, hits = 0, 0, []
for p in os.listdir("/proc"):
    if not p.isdigit():
        continue
    pids += 1
    for f in ("environ", "cmdline"):
        try:
            d = open("/proc/%s/%s" % (p, f), "rb").read()
        except OSError:
            continue
        readable += 1
        if want in d:
            hits.append("%s/%s" % (p, f))
self_env = open("/proc/self/environ", "rb").read()
json.dump({"pids": pids, "readable": readable, "hits": len(hits), "where": hits,
           "self_env_vars": len([e for e in self_env.split(b"\0") if e])},
          open("/out/inside.json", "w"))
open("/out/ready", "w").write("1")
time.sleep(3)
"#;

/// Every readable `/proc/*/{environ,cmdline}` on the host holding the value:
/// (hits, files read, whether `launcher`'s environ was read).
fn host_proc_scan(value: &str, launcher: u32) -> (Vec<String>, usize, bool) {
    let (mut found, mut read, mut launcher_seen) = (Vec::new(), 0, false);
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        for f in ["environ", "cmdline"] {
            let Ok(d) = std::fs::read(e.path().join(f)) else {
                continue;
            };
            read += 1;
            if pid == launcher && f == "environ" {
                launcher_seen = true;
            }
            let h = hits(&d, value);
            if !h.is_empty() {
                found.push(format!("/proc/{pid}/{f}: {h:?}"));
            }
        }
    }
    (found, read, launcher_seen)
}

#[test]
fn absent_from_proc_environ_and_cmdline_inside_and_on_the_host() {
    let f = RunFixture::new();
    let value = secret_value("absent_from_proc");
    assert!(
        std::env::var_os(VAR).is_none(),
        "the test process itself must not carry {VAR}"
    );
    let before = host_secret_mounts();
    let job = secret_job(&f, "procs", PROC_SCAN, &[], &token_from_env("10m", ""));
    let child = run_cmd(&f, &job, &value, true, false)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(&f.dir().join("procs-out/ready"), "job ready");
    // (b) On the host, while the job sleeps holding the secret.
    let (found, read, launcher_seen) = host_proc_scan(&value, child.id());
    let after = host_secret_mounts();
    let out = child.wait_with_output().unwrap();
    assert!(found.is_empty(), "the secret is in {found:?}");
    assert!(read > 10, "only {read} /proc files were readable");
    assert!(
        launcher_seen,
        "the launcher's own /proc/PID/environ was not scanned"
    );
    assert_eq!(
        before, after,
        "a secret tmpfs appeared in the host's mount table"
    );
    let t = exit_code(&out, 0);
    assert!(t.contains("succeeded"), "{t}");

    // (a) Inside the sandbox.
    let r = json_out(&f, "procs", "inside.json");
    assert_eq!(r["hits"], 0, "{r}");
    assert!(r["readable"].as_u64().unwrap() >= 2, "{r}");
    assert!(r["pids"].as_u64().unwrap() >= 1, "{r}");
}

// ---- 4. Absent from the record, audit log, log files and launcher output ----

const QUIET_USE: &str = r#"import hashlib, sys
d = open("/run/secrets/token", "rb").read()
h = hashlib.sha256(d).hexdigest()
open("/out/model.txt", "w").write("trained with a token of sha256 " + h + "\n")
print("using the token:", h)
print("stderr line", file=sys.stderr)
"#;

#[test]
fn absent_from_record_audit_log_logs_and_debug_output() {
    let f = RunFixture::new();
    let value = secret_value("absent_from_files");
    let job = secret_job(&f, "quiet", QUIET_USE, &[], &token_from_env("10m", ""));
    // Not quiet (the job's output is echoed) and at debug tracing level.
    let out = run(&mut run_cmd(&f, &job, &value, false, true));
    let t = exit_code(&out, 0);
    assert!(t.contains("DEBUG"), "SEALRUN_LOG=debug had no effect:\n{t}");
    assert!(t.contains("token"), "{t}");
    assert!(
        t.contains(&format!(
            "using the token: {}",
            sha256_hex(value.as_bytes())
        )),
        "{t}"
    );
    let launcher_out = [out.stdout.as_slice(), out.stderr.as_slice()].concat();
    assert!(
        hits(&launcher_out, &value).is_empty(),
        "the launcher printed the secret ({:?})",
        hits(&launcher_out, &value)
    );
    // Every file under the test folder: records, logs, audit log, outputs, stage leftovers.
    let found = find_in_tree(f.dir(), &value);
    assert!(found.is_empty(), "secret found on disk: {found:?}");
    // The files that were searched exist.
    assert_eq!(audit_entries(&f.dir().join("audit.log")).len(), 2);
    assert!(!log_of(&f, "quiet", "stdout").is_empty());
    assert_eq!(end_result(&f, "quiet"), "succeeded");
}

// ---- 5. A job that prints it ----

const PRINT: &str = r#"v = open("/run/secrets/token").read()
print("before")
print("the token is " + v + " ok")
print("after")
"#;

#[test]
fn a_job_that_prints_it_is_redacted_flagged_and_failed() {
    let f = RunFixture::new();
    let value = secret_value("prints_it");
    let job = secret_job(&f, "printer", PRINT, &[], &token_from_env("10m", ""));
    let out = run_secret(&f, &job, &value, false);
    let t = exit_code(&out, 66);
    assert!(t.contains("secret leaked"), "{t}");
    assert!(
        hits(&[out.stdout, out.stderr].concat(), &value).is_empty(),
        "{t}"
    );
    let log = String::from_utf8(log_of(&f, "printer", "stdout")).unwrap();
    assert_eq!(log, "before\nthe token is [REDACTED:token] ok\nafter\n");
    assert_eq!(
        leaked(&f, "printer"),
        vec![("token".to_string(), "stdout".to_string())]
    );
    let result = end_result(&f, "printer");
    assert!(result.starts_with("failed: secret leaked"), "{result}");
    assert!(result.contains("token in stdout"), "{result}");
    assert!(find_in_tree(f.dir(), &value).is_empty());
    let audit = audit_entries(&f.dir().join("audit.log"));
    assert!(
        audit.last().unwrap()["outcome"]
            .as_str()
            .unwrap()
            .starts_with("failed: secret leaked"),
        "{audit:?}"
    );
}

#[test]
fn allow_leak_succeeds_but_still_records_and_redacts() {
    let f = RunFixture::new();
    let value = secret_value("allow_leak");
    let job = secret_job(
        &f,
        "allowed",
        PRINT,
        &[],
        &token_from_env("10m", "allow_leak = true\n"),
    );
    let out = run_secret(&f, &job, &value, false);
    let t = exit_code(&out, 0);
    assert!(
        hits(&[out.stdout, out.stderr].concat(), &value).is_empty(),
        "{t}"
    );
    let log = String::from_utf8(log_of(&f, "allowed", "stdout")).unwrap();
    assert!(log.contains("the token is [REDACTED:token] ok"), "{log}");
    assert_eq!(
        leaked(&f, "allowed"),
        vec![("token".to_string(), "stdout".to_string())]
    );
    assert_eq!(secrets_of(&f, "allowed")["secrets"][0]["allow_leak"], true);
    assert_eq!(end_result(&f, "allowed"), "succeeded");
    assert!(find_in_tree(f.dir(), &value).is_empty());
}

// ---- 6. Encodings of it in output files ----

const ENCODE: &str = r#"import base64, os, urllib.parse
v = open("/run/secrets/token", "rb").read()
open("/out/b64.txt", "w").write("weights=" + base64.b64encode(v).decode() + "\n")
open("/out/b64url.txt", "w").write(base64.urlsafe_b64encode(v).decode().rstrip("=") + "\n")
os.makedirs("/out/sub", exist_ok=True)
open("/out/sub/hex.txt", "w").write("key: " + v.hex() + "\n")
open("/out/url.txt", "w").write("https://example.invalid/?t=" + urllib.parse.quote(v, safe="") + "&x=1\n")
open("/out/clean.txt", "w").write("nothing here\n")
"#;

#[test]
fn encodings_in_output_files_are_flagged() {
    let f = RunFixture::new();
    let value = secret_value("encodings_in_outputs");
    let job = secret_job(&f, "enc", ENCODE, &[], &token_from_env("10m", ""));
    let t = exit_code(&run_secret(&f, &job, &value, true), 66);
    assert!(t.contains("secret leaked"), "{t}");
    // The job really wrote the encodings it was meant to.
    let out = f.dir().join("enc-out");
    let read = |p: &str| std::fs::read(out.join(p)).unwrap();
    assert!(hits(&read("b64.txt"), &value).contains(&"base64"));
    assert!(hits(&read("b64url.txt"), &value).contains(&"base64url"));
    assert!(hits(&read("sub/hex.txt"), &value).contains(&"hex"));
    assert!(hits(&read("url.txt"), &value).contains(&"url"));
    let expected: Vec<(String, String)> = [
        "output:b64.txt",
        "output:b64url.txt",
        "output:sub/hex.txt",
        "output:url.txt",
    ]
    .iter()
    .map(|p| ("token".to_string(), p.to_string()))
    .collect();
    assert_eq!(leaked(&f, "enc"), expected);
    let result = end_result(&f, "enc");
    assert!(result.starts_with("failed: secret leaked"), "{result}");
    assert!(result.contains("token in output:sub/hex.txt"), "{result}");
}

// ---- 7. Split across two writes ----

const SPLIT: &str = r#"import sys, time
v = open("/run/secrets/token", "rb").read()
h = len(v) // 2
for s in (sys.stdout.buffer, sys.stderr.buffer):
    s.write(b"start " + v[:h])
    s.flush()
    time.sleep(0.3)
    s.write(v[h:] + b" end\n")
    s.flush()
"#;

#[test]
fn a_secret_split_across_two_writes_is_still_redacted() {
    let f = RunFixture::new();
    let value = secret_value("split_writes");
    let (first, second) = value.split_at(value.len() / 2);
    let job = secret_job(&f, "split", SPLIT, &[], &token_from_env("10m", ""));
    // Not quiet: the launcher's own terminal output is checked too.
    let out = run_secret(&f, &job, &value, false);
    let t = exit_code(&out, 66);
    for (what, bytes) in [
        ("stdout log", log_of(&f, "split", "stdout")),
        ("stderr log", log_of(&f, "split", "stderr")),
        ("launcher stdout", out.stdout.clone()),
        ("launcher stderr", out.stderr.clone()),
    ] {
        let s = String::from_utf8_lossy(&bytes);
        assert!(s.contains("start [REDACTED:token] end"), "{what}: {s}");
        assert!(!s.contains(first), "{what} shows the first half: {s}");
        assert!(!s.contains(second), "{what} shows the second half: {s}");
    }
    assert!(t.contains("secret leaked"), "{t}");
    assert_eq!(
        leaked(&f, "split"),
        vec![
            ("token".to_string(), "stderr".to_string()),
            ("token".to_string(), "stdout".to_string())
        ]
    );
    assert!(find_in_tree(f.dir(), &value).is_empty());
}

// ---- 8. The launcher SIGKILLed mid-run ----

/// Ends the test's leftover processes and cgroups, also when an assertion fails.
struct Cleanup {
    marker: String,
    launcher: Option<u32>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        kill_leftovers(&self.marker);
        std::thread::sleep(Duration::from_millis(300));
        if let Some(pid) = self.launcher {
            remove_leaked_cgroups(pid);
        }
    }
}

const HOLD: &str = r#"import sys, time, hashlib
d = open("/run/secrets/token", "rb").read()
open("/out/started", "w").write(sys.argv[1] + " " + hashlib.sha256(d).hexdigest())
time.sleep(30)
open("/out/finished", "w").write("x")
"#;

#[test]
fn launcher_sigkilled_mid_run_leaves_no_secret_on_the_host_disk() {
    let f = RunFixture::new();
    let value = secret_value("sigkill");
    let marker = format!("sealrun-secret-kill-marker-{}", std::process::id());
    let mut cleanup = Cleanup {
        marker: marker.clone(),
        launcher: None,
    };
    let before = host_secret_mounts();
    let job = secret_job(&f, "hold", HOLD, &[&marker], &token_from_env("10m", ""));
    let mut child = run_cmd(&f, &job, &value, true, false)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    cleanup.launcher = Some(child.id());
    let started = f.dir().join("hold-out/started");
    wait_for(&started, "job read the secret");
    let s = std::fs::read_to_string(&started).unwrap();
    assert_eq!(s, format!("{marker} {}", sha256_hex(value.as_bytes())));
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    std::thread::sleep(Duration::from_secs(3));

    // Whatever is still running (see the ignored process test in run_flow.rs), the
    // secret is on no host disk: the test folder (records, logs, outputs,
    // .sealrun-stage-ID), and the top level of /dev/shm and /tmp.
    let mut found = find_in_tree(f.dir(), &value);
    found.extend(find_top_level(Path::new("/dev/shm"), &value));
    found.extend(find_top_level(Path::new("/tmp"), &value));
    let after = host_secret_mounts();
    drop(cleanup);
    assert!(found.is_empty(), "secret left on the host: {found:?}");
    assert_eq!(before, after, "a secret tmpfs is in the host's mount table");
    assert!(!f.dir().join("hold-out/finished").exists());
    // Searched for real: the stage folder of the killed run is still there.
    assert!(std::fs::read_dir(f.dir()).unwrap().flatten().any(|e| e
        .file_name()
        .to_string_lossy()
        .starts_with(".sealrun-stage-")));
}

// ---- 9. Spec errors ----

#[test]
fn spec_errors_exit_64_name_the_field_and_never_show_the_value() {
    let f = RunFixture::new();
    let value = secret_value("spec_errors");
    std::fs::write(f.dir().join("secret.txt"), format!("{value}\n")).unwrap();
    std::fs::create_dir_all(f.dir().join("secret-dir")).unwrap();
    let unset = "SEALRUN_TEST_SECRET_NEVER_SET_5";
    let cases: Vec<(&str, String, Vec<String>)> = vec![
        (
            "literal",
            "[secrets.token]\nfrom = \"literal\"\nttl = \"10m\"\n".into(),
            vec!["secrets.token.from".into(), "env:".into(), "file:".into()],
        ),
        (
            // The value pasted into the spec by mistake is not echoed back.
            "pasted",
            format!("[secrets.token]\nfrom = {value:?}\nttl = \"10m\"\n"),
            vec!["secrets.token.from".into()],
        ),
        (
            "missingenv",
            format!("[secrets.token]\nfrom = \"env:{unset}\"\nttl = \"10m\"\n"),
            vec!["\"token\"".into(), unset.into(), "not set".into()],
        ),
        (
            "badttl",
            token_from_env("soon", ""),
            vec!["secrets.token.ttl".into(), "soon".into()],
        ),
        (
            "zerottl",
            token_from_env("0s", ""),
            vec!["secrets.token.ttl".into()],
        ),
        (
            "badpath",
            token_from_env("10m", "path = \"/etc/x\"\n"),
            vec!["secrets.token.path".into(), "/run/".into()],
        ),
        (
            "dotdot",
            token_from_env("10m", "path = \"/run/../etc/x\"\n"),
            vec!["secrets.token.path".into()],
        ),
        (
            // A readable file source; another field is wrong: its content is not shown.
            "filettl",
            "[secrets.token]\nfrom = \"file:secret.txt\"\nttl = \"soon\"\n".into(),
            vec!["secrets.token.ttl".into()],
        ),
        (
            "filepath",
            "[secrets.token]\nfrom = \"file:secret.txt\"\nttl = \"10m\"\npath = \"/etc/x\"\n"
                .into(),
            vec!["secrets.token.path".into()],
        ),
        (
            "filedir",
            "[secrets.token]\nfrom = \"file:secret-dir\"\nttl = \"10m\"\n".into(),
            vec!["\"token\"".into(), "secret-dir".into()],
        ),
        (
            "unknownkey",
            token_from_env("10m", "value = \"x\"\n"),
            vec!["secrets.token".into(), "value".into()],
        ),
    ];
    for (name, toml, needles) in &cases {
        let job = secret_job(&f, name, "print('never runs')\n", &[], toml);
        let out = run_secret(&f, &job, &value, true);
        let t = exit_code(&out, 64);
        let lines: Vec<&str> = t.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{name}: not one line:\n{t}");
        for n in needles {
            assert!(t.contains(n.as_str()), "{name}: lacks {n:?}:\n{t}");
        }
        assert!(
            hits(t.as_bytes(), &value).is_empty(),
            "{name}: the error shows the secret: {t}"
        );
        assert!(
            !f.dir().join(format!("{name}-out")).exists()
                || std::fs::read_dir(f.dir().join(format!("{name}-out")))
                    .unwrap()
                    .next()
                    .is_none(),
            "{name}: something ran"
        );
    }
    assert!(
        f.records("literal").is_empty(),
        "a spec error wrote a record"
    );
}

// ---- Findings: leaks the scanner misses ----

const NAMES: &str = r#"import os
v = open("/run/secrets/token", "rb").read()
open("/out/" + v.hex() + ".bin", "w").write("nothing\n")
os.symlink("/nonexistent/" + v.hex(), "/out/link")
"#;

#[test]
fn secret_in_output_names_and_symlink_targets_is_flagged() {
    let f = RunFixture::new();
    let value = secret_value("output_names");
    let job = secret_job(&f, "names", NAMES, &[], &token_from_env("10m", ""));
    let out = run_secret(&f, &job, &value, true);
    let t = text(&out);
    let launcher_out = [out.stdout.as_slice(), out.stderr.as_slice()].concat();
    assert!(hits(&launcher_out, &value).is_empty(), "{t}");
    let audit = std::fs::read(f.dir().join("audit.log")).unwrap();
    assert!(hits(&audit, &value).is_empty(), "the audit log shows it");
    assert_eq!(out.status.code(), Some(66), "not flagged:\n{t}");
    let l = leaked(&f, "names");
    assert!(
        l.iter()
            .any(|(s, p)| s == "token" && p == "output-name:[REDACTED:token].bin"),
        "{l:?}"
    );
    assert!(
        l.iter()
            .any(|(s, p)| s == "token" && p == "output-name:link"),
        "the symlink target counts too: {l:?}"
    );
    // The signed record names the file and the link target redacted, never the value.
    for rec in f.records("names") {
        let bytes = std::fs::read(&rec).unwrap();
        let statement = sealrun_integration::envelope_statement(&rec).to_string();
        assert!(hits(&bytes, &value).is_empty(), "{}", rec.display());
        assert!(hits(statement.as_bytes(), &value).is_empty(), "{statement}");
    }
}

const PREFIXED_B64: &str = r#"import base64
v = open("/run/secrets/token", "rb").read()
open("/out/basic.txt", "w").write("Authorization: Basic " + base64.b64encode(b"user:" + v).decode() + "\n")
open("/out/bearer.txt", "w").write(base64.b64encode(b"Bearer " + v).decode() + "\n")
"#;

#[test]
fn base64_of_the_value_inside_longer_data_is_flagged() {
    let f = RunFixture::new();
    let value = secret_value("prefixed_base64");
    let job = secret_job(&f, "basic", PREFIXED_B64, &[], &token_from_env("10m", ""));
    let t = exit_code(&run_secret(&f, &job, &value, true), 66);
    assert!(t.contains("secret leaked"), "{t}");
    assert_eq!(
        leaked(&f, "basic"),
        vec![
            ("token".to_string(), "output:basic.txt".to_string()),
            ("token".to_string(), "output:bearer.txt".to_string())
        ]
    );
}

#[test]
fn secret_path_directly_in_run_is_a_spec_error() {
    let f = RunFixture::new();
    let value = secret_value("path_in_run");
    let job = secret_job(
        &f,
        "inrun",
        "print('never runs')\n",
        &[],
        &token_from_env("10m", "path = \"/run/token\"\n"),
    );
    let t = exit_code(&run_secret(&f, &job, &value, true), 64);
    assert!(t.contains("secrets.token.path"), "{t}");
    assert!(f.records("inrun").is_empty(), "{t}");
}

// ---- Issue #11 items 9 and 10: egress addresses, directory names, extended attributes ----

/// The record of `job` holds no encoding of `value`, nor does the audit log.
#[track_caller]
fn nowhere_in_records(f: &RunFixture, job: &str, value: &str) {
    for rec in f.records(job) {
        let bytes = std::fs::read(&rec).unwrap();
        assert!(hits(&bytes, value).is_empty(), "{}", rec.display());
        let st = envelope_statement(&rec).to_string();
        assert!(hits(st.as_bytes(), value).is_empty(), "{st}");
    }
    let audit = std::fs::read(f.dir().join("audit.log")).unwrap();
    assert!(hits(&audit, value).is_empty(), "the audit log shows it");
}

const DIR_NAMES: &str = r#"import os
v = open("/run/secrets/token", "rb").read()
os.makedirs(b"/out/" + v)
os.makedirs("/out/named/" + v.hex() + "/sub")
open("/out/named/" + v.hex() + "/sub/f.txt", "w").write("x")
"#;

#[test]
fn a_secret_in_a_directory_name_is_a_leak_and_empty_directories_are_recorded() {
    let f = RunFixture::new();
    let value = secret_value("dir_names");
    let job = secret_job(&f, "dirs", DIR_NAMES, &[], &token_from_env("10m", ""));
    let t = exit_code(&run_secret(&f, &job, &value, true), 66);
    assert!(hits(t.as_bytes(), &value).is_empty(), "{t}");
    let l = leaked(&f, "dirs");
    for place in [
        "output-name:[REDACTED:token]",
        "output-name:named/[REDACTED:token]",
    ] {
        assert!(
            l.iter().any(|(s, p)| s == "token" && p == place),
            "{place} missing: {l:?}"
        );
    }
    let st = statement(&f, "dirs");
    let summary = &byproduct(&st, "output-summary")["annotations"];
    assert_eq!(
        summary["empty_directories"],
        serde_json::json!(["[REDACTED:token]"]),
        "{summary:#}"
    );
    nowhere_in_records(&f, "dirs", &value);
}

const XATTR: &str = r#"import os
v = open("/run/secrets/token", "rb").read()
open("/out/m.bin", "w").write("clean")
os.setxattr("/out/m.bin", "user.k", v)
os.mkdir("/out/d")
os.setxattr("/out/d", "user." + v.hex()[:200], b"x")
"#;

#[test]
fn a_secret_in_an_extended_attribute_is_a_leak_and_the_attribute_is_removed() {
    let f = RunFixture::new();
    let value = secret_value("xattr");
    let job = secret_job(&f, "xattr", XATTR, &[], &token_from_env("10m", ""));
    exit_code(&run_secret(&f, &job, &value, true), 66);
    assert_eq!(
        leaked(&f, "xattr"),
        vec![
            ("token".to_string(), "output-xattr:d".to_string()),
            ("token".to_string(), "output-xattr:m.bin".to_string()),
        ]
    );
    for p in ["m.bin", "d"] {
        let c = std::ffi::CString::new(format!("{}/xattr-out/{p}", f.dir().display())).unwrap();
        let mut buf = [0u8; 1024];
        // SAFETY: a NUL-terminated path and a buffer of the length passed.
        let n = unsafe { libc::llistxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        assert_eq!(n, 0, "{p} keeps extended attributes");
    }
    nowhere_in_records(&f, "xattr", &value);
}

const EGRESS: &str = r#"import socket
v = open("/run/secrets/token", "rb").read()
import base64
# A host socket, bound into the sandbox, named after the secret (base64url): the connect is
# refused and recorded (abstract names and missing paths are the job's own business, never
# egress).
s = socket.socket(socket.AF_UNIX)
try:
    s.connect(b"/hostsock/" + base64.urlsafe_b64encode(v).rstrip(b"="))
    print("CONNECTED")
except OSError as e:
    print("refused", e.errno)
"#;

#[test]
fn a_secret_in_an_egress_address_is_redacted_and_a_leak() {
    let f = RunFixture::new();
    let value = secret_value("egress");
    // The host side: a listening socket whose name is the secret (hex), in a folder the job
    // gets read-only.
    let host = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        host.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let sock = host
        .path()
        .join(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value.as_bytes()));
    let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    listener.set_nonblocking(true).unwrap();
    let ro = format!("ro = [\"{}:/hostsock\"]\n", host.path().display());
    let job = secret_job(
        &f,
        "egress",
        EGRESS,
        &[],
        &format!("{ro}{}", token_from_env("10m", "")),
    );
    let t = exit_code(&run_secret(&f, &job, &value, true), 66);
    assert!(t.contains("secret leaked"), "{t}");
    assert!(listener.accept().is_err(), "the host socket accepted");
    let log = log_of(&f, "egress", "stdout");
    assert!(!contains(&log, b"CONNECTED"), "a connect went through");
    let l = leaked(&f, "egress");
    assert!(
        l.iter()
            .any(|(s, p)| s == "token" && p.starts_with("egress:/hostsock/[REDACTED:token]")),
        "{l:?}"
    );
    let st = statement(&f, "egress");
    let egress = byproduct(&st, "sandbox")["annotations"]["egress_attempts"].clone();
    let addrs: Vec<&str> = egress
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["address"].as_str().unwrap())
        .collect();
    assert!(
        addrs
            .iter()
            .any(|a| a.starts_with("/hostsock/[REDACTED:token]")),
        "{egress:#}"
    );
    nowhere_in_records(&f, "egress", &value);
}
