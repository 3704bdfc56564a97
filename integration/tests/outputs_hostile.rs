//! Hostile outputs (issue #11, items 10–12): whatever a job leaves in its output
//! folder — names no subject can have, a tree deeper than `PATH_MAX`, too many
//! or too large files, a flood on stdout, setuid bits, ACLs, extended
//! attributes — the launcher signs a record that names what it could not
//! attest, fails the run for it, and hands every entry back to its own uid with
//! narrowed modes. Every job only writes into its own output folder.

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use sealrun_integration::{
    audit_entries, byproduct, envelope_statement, ok, run, text, verify, RunFixture, RUN_SANDBOX,
};

#[track_caller]
fn exit_code(out: &Output, code: i32) -> String {
    let t = text(out);
    assert_eq!(out.status.code(), Some(code), "wrong exit status:\n{t}");
    t
}

/// The record of `job` verifies (signature, policy, SLSA shape); its statement.
fn signed_statement(f: &RunFixture, job: &str) -> serde_json::Value {
    let record = f.record(job);
    let rec = record.display().to_string();
    ok(verify(f.dir(), &["record", &rec, "--trust", "trust.toml"]));
    envelope_statement(&record)
}

fn end_result(st: &serde_json::Value) -> String {
    byproduct(st, "end")["annotations"]["result"]
        .as_str()
        .expect("end.result")
        .to_string()
}

/// `(path, reason)` of every listed unattested output.
fn unattested(st: &serde_json::Value) -> Vec<(String, String)> {
    let u = &byproduct(st, "output-unattested")["annotations"];
    u["entries"]
        .as_array()
        .unwrap_or_else(|| panic!("no entries: {u:#}"))
        .iter()
        .map(|e| {
            (
                e["path"].as_str().unwrap().to_string(),
                e["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn subjects(st: &serde_json::Value) -> Vec<String> {
    let mut v: Vec<String> = st["subject"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect();
    v.sort();
    v
}

/// Lines `find DIR ARGS -print` prints (GNU find walks trees of any depth).
fn find(dir: &Path, args: &[&str]) -> Vec<String> {
    let out = run(std::process::Command::new("find").arg(dir).args(args));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// Every entry under `dir` is the launcher's (this test runs as the launcher's
/// uid), none is setuid, setgid or world-writable.
#[track_caller]
fn all_handed_back(dir: &Path) {
    let uid = nix_uid();
    let not_ours = find(dir, &["!", "-uid", &uid.to_string()]);
    assert!(not_ours.is_empty(), "not handed back: {not_ours:?}");
    let wide = find(dir, &["-not", "-type", "l", "-perm", "/6002"]);
    assert!(
        wide.is_empty(),
        "setuid, setgid or world-writable: {wide:?}"
    );
}

fn nix_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

const NAMES: &str = r#"import os
open("/out/1:epoch.pt", "w").write("x")
open("/out/a\\b", "w").write("y")
open(b"/out/bad\xff.bin", "w").write("z")
os.makedirs("/out/sub")
open("/out/sub/ok.txt", "w").write("ok")
open("/out/sub/2:fine.pt", "w").write("fine")
open("/out/suid", "w").write("s")
os.chmod("/out/suid", 0o4777)
os.mkdir("/out/gdir")
os.chmod("/out/gdir", 0o2777)
os.mkdir("/out/locked")
open("/out/locked/f", "w").write("f")
os.chmod("/out/locked", 0)
"#;

#[test]
fn names_no_subject_can_have_are_named_in_a_signed_record_and_fail_the_run() {
    let f = RunFixture::new();
    let job = f.job("names", NAMES, &[], RUN_SANDBOX);
    let t = exit_code(&f.run(&job), 67);
    assert!(t.contains("3 output(s) not attested"), "{t}");
    let st = signed_statement(&f, "names");
    let result = end_result(&st);
    assert!(
        result.starts_with("failed: 3 output(s) not attested"),
        "{result}"
    );
    let mut u = unattested(&st);
    u.sort();
    let paths: Vec<&str> = u.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(paths, vec!["1:epoch.pt", "a\\\\b", "bad\\xff.bin"], "{u:?}");
    assert!(u[0].1.contains("absolute path"), "{u:?}");
    assert!(u[1].1.contains("backslash"), "{u:?}");
    assert!(u[2].1.contains("UTF-8"), "{u:?}");
    assert_eq!(
        subjects(&st),
        vec!["locked/f", "sub/2:fine.pt", "sub/ok.txt", "suid"]
    );
    let summary = &byproduct(&st, "output-summary")["annotations"];
    assert_eq!(summary["entries"], 10, "{summary:#}");
    assert_eq!(summary["files"], 7, "{summary:#}");
    assert_eq!(summary["empty_directories"], serde_json::json!(["gdir"]));
    assert!(
        summary["modes_changed"].as_u64().unwrap() >= 2,
        "{summary:#}"
    );
    let out = f.dir().join("names-out");
    all_handed_back(&out);
    let entries = audit_entries(&f.dir().join("audit.log"));
    let outcome = entries.last().unwrap()["outcome"].as_str().unwrap();
    assert!(outcome.contains("not attested"), "{outcome}");
}

const DEEP: &str = r#"import os
os.chdir("/out")
open("top.txt", "w").write("top")
for i in range(30):
    os.mkdir("d" * 200)
    os.chdir("d" * 200)
open("deep.txt", "w").write("deep")
os.mkdir("empty")
os.chmod(".", 0o777)
"#;

#[test]
fn a_tree_deeper_than_path_max_is_walked_handed_back_and_named() {
    let f = RunFixture::new();
    let job = f.job("deep", DEEP, &[], RUN_SANDBOX);
    let t = exit_code(&f.run(&job), 67);
    assert!(t.contains("2 output(s) not attested"), "{t}");
    let st = signed_statement(&f, "deep");
    assert_eq!(subjects(&st), vec!["top.txt"]);
    let u = unattested(&st);
    assert_eq!(u.len(), 2, "{u:?}");
    for (path, reason) in &u {
        assert!(path.contains("/…/"), "{path}");
        assert!(path.len() < 2200, "{path}");
        assert!(reason.contains("longer than 2048 bytes"), "{reason}");
    }
    assert!(u.iter().any(|(p, _)| p.ends_with("/…/deep.txt")), "{u:?}");
    assert!(u
        .iter()
        .any(|(p, r)| p.ends_with("/…/empty") && r.starts_with("empty directory")));
    all_handed_back(&f.dir().join("deep-out"));
}

#[test]
fn a_failed_job_keeps_its_status_and_the_record_names_unattested_outputs() {
    let f = RunFixture::new();
    let script = "open('/out/a\\\\b', 'w').write('y')\nraise SystemExit(3)\n";
    let job = f.job("fails", script, &[], RUN_SANDBOX);
    exit_code(&f.run(&job), 3);
    let st = signed_statement(&f, "fails");
    let result = end_result(&st);
    assert!(
        result.starts_with("failed: exited 3; 1 output(s) not attested (first: a\\\\b: "),
        "{result}"
    );
    all_handed_back(&f.dir().join("fails-out"));
}

#[allow(dead_code)]
fn elapsed_under(t0: Instant, limit: Duration) {
    assert!(t0.elapsed() < limit, "took {:?}", t0.elapsed());
}
