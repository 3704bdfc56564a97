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

#[track_caller]
fn elapsed_under(t0: Instant, limit: Duration) {
    assert!(t0.elapsed() < limit, "took {:?}", t0.elapsed());
}

/// `[sandbox]` of the fixture plus `extra` lines.
fn sandbox(extra: &str) -> String {
    format!("{RUN_SANDBOX}{extra}")
}

fn limits(st: &serde_json::Value) -> serde_json::Value {
    st["predicate"]["buildDefinition"]["internalParameters"]["limits"].clone()
}

const SPARSE_1T: &str = r#"import errno
try:
    with open("/out/huge", "wb") as f:
        f.truncate(1 << 40)
    r = "grew"
except OSError as e:
    r = errno.errorcode[e.errno]
open("/out/result.txt", "w").write(r)
"#;

#[test]
fn rlimit_fsize_stops_a_sparse_1tib_file() {
    let f = RunFixture::new();
    let job = f.job("fsize", SPARSE_1T, &[], RUN_SANDBOX);
    exit_code(&f.run(&job), 0);
    let out = f.dir().join("fsize-out");
    assert_eq!(
        std::fs::read_to_string(out.join("result.txt")).unwrap(),
        "EFBIG"
    );
    assert_eq!(std::fs::metadata(out.join("huge")).unwrap().len(), 0);
    let st = signed_statement(&f, "fsize");
    let l = limits(&st);
    assert_eq!(l["max_file_bytes"], 64u64 << 30, "{l:#}");
    assert_eq!(l["max_output_bytes"], 64u64 << 30, "{l:#}");
    assert_eq!(l["max_output_files"], 100_000, "{l:#}");
    assert_eq!(l["max_log_bytes"], 64u64 << 20, "{l:#}");
    all_handed_back(&out);
}

#[test]
fn a_sparse_1tib_output_is_refused_by_its_length_without_reading_it() {
    let f = RunFixture::new();
    let job = f.job(
        "sparse",
        SPARSE_1T,
        &[],
        &sandbox("max_file_size = \"2T\"\n"),
    );
    let t0 = Instant::now();
    let t = exit_code(&f.run(&job), 67);
    elapsed_under(t0, Duration::from_secs(30));
    assert!(t.contains("not attested"), "{t}");
    let out = f.dir().join("sparse-out");
    assert_eq!(
        std::fs::read_to_string(out.join("result.txt")).unwrap(),
        "grew"
    );
    let st = signed_statement(&f, "sparse");
    let u = unattested(&st);
    assert_eq!(u[0].0, ".", "{u:?}");
    assert!(u[0].1.contains("1099511627780 bytes long"), "{u:?}");
    assert!(u[0].1.contains("max_output_size"), "{u:?}");
    assert!(u[0].1.contains("no file was hashed"), "{u:?}");
    let summary = &byproduct(&st, "output-summary")["annotations"];
    assert_eq!(summary["length_bytes"], (1u64 << 40) + 4, "{summary:#}");
    assert!(
        summary["allocated_bytes"].as_u64().unwrap() < 1 << 20,
        "{summary:#}"
    );
    all_handed_back(&out);
}

const SPARSE_8G: &str = r#"with open("/out/big", "wb") as f:
    f.truncate(8 << 30)
open("/out/small.txt", "w").write("small")
"#;

#[test]
fn hashing_stops_at_the_post_run_deadline() {
    let f = RunFixture::new();
    let extra = "max_output_size = \"16G\"\npost_run_timeout = \"1s\"\n";
    let job = f.job("late", SPARSE_8G, &[], &sandbox(extra));
    let t0 = Instant::now();
    exit_code(&f.run(&job), 67);
    elapsed_under(t0, Duration::from_secs(30));
    let st = signed_statement(&f, "late");
    assert_eq!(subjects(&st), vec!["small.txt"]);
    let u = unattested(&st);
    assert_eq!(u.len(), 1, "{u:?}");
    assert_eq!(u[0].0, "big");
    assert!(u[0].1.contains("post-run deadline"), "{u:?}");
    all_handed_back(&f.dir().join("late-out"));
}

const MANY: &str = r#"import os
for d in range(30):
    os.mkdir(f"/out/d{d}")
    for i in range(100):
        open(f"/out/d{d}/f{i}", "w").write(str(i))
os.chmod("/out/d7/f7", 0o4777)
"#;

#[test]
fn too_many_files_are_refused_before_hashing_and_all_handed_back() {
    let f = RunFixture::new();
    let job = f.job("many", MANY, &[], &sandbox("max_output_files = 1000\n"));
    let t = exit_code(&f.run(&job), 67);
    assert!(t.contains("3000 output(s) not attested"), "{t}");
    let st = signed_statement(&f, "many");
    let u = unattested(&st);
    assert_eq!(u.len(), 1, "{u:?}");
    assert!(
        u[0].1
            .contains("3030 entries, over max_output_files = 1000"),
        "{u:?}"
    );
    let subj = subjects(&st);
    assert_eq!(subj.len(), 1);
    assert!(subj[0].starts_with("/sealrun/job-spec/"), "{subj:?}");
    all_handed_back(&f.dir().join("many-out"));
}

const FLOOD: &str = r#"import sys
for _ in range(20):
    sys.stdout.buffer.write(b"x" * (1 << 20))
sys.stdout.flush()
print("done", file=sys.stderr)
"#;

#[test]
fn a_stdout_flood_is_cut_at_max_log_size_with_a_marker() {
    let f = RunFixture::new();
    let job = f.job("flood", FLOOD, &[], &sandbox("max_log_size = \"1M\"\n"));
    exit_code(&f.run(&job), 0);
    let st = signed_statement(&f, "flood");
    let out = byproduct(&st, "stdout");
    let path = out["uri"].as_str().unwrap().strip_prefix("file:").unwrap();
    let log = std::fs::read(path).unwrap();
    let marker =
        b"\n[sealrun: log truncated: only the first 1048576 bytes are kept (sandbox.max_log_size)]\n";
    assert_eq!(log.len(), (1 << 20) + marker.len());
    assert!(log.ends_with(marker));
    assert_eq!(
        out["digest"]["sha256"],
        sealrun_integration::sha256_hex(&log)
    );
    let a = &out["annotations"];
    assert_eq!(a["truncated"], true, "{a:#}");
    assert_eq!(a["kept_bytes"], 1u64 << 20, "{a:#}");
    assert_eq!(a["dropped_bytes"], 19u64 << 20, "{a:#}");
    assert_eq!(byproduct(&st, "stderr")["annotations"]["truncated"], false);
}

/// An ACL (`user:1000:rwx`, the job's uid inside the sandbox) in the kernel's
/// xattr form, a user xattr, and setuid/setgid/world-writable modes.
const ACL: &str = r#"import os, struct
open("/out/m.bin", "w").write("m")
acl = struct.pack("<I", 2)
for tag, perm, uid in [(1, 6, 0xFFFFFFFF), (2, 7, 1000), (4, 4, 0xFFFFFFFF), (0x10, 7, 0xFFFFFFFF), (0x20, 4, 0xFFFFFFFF)]:
    acl += struct.pack("<HHI", tag, perm, uid)
os.setxattr("/out/m.bin", "system.posix_acl_access", acl)
os.mkdir("/out/shared")
os.setxattr("/out/shared", "system.posix_acl_default", acl)
os.setxattr("/out/m.bin", "user.note", b"hello")
os.chmod("/out/m.bin", 0o6777)
open("/out/set.txt", "w").write(" ".join(sorted(os.listxattr("/out/m.bin") + os.listxattr("/out/shared"))))
"#;

fn xattrs(p: &Path) -> Vec<u8> {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    let mut buf = vec![0u8; 4096];
    // SAFETY: a NUL-terminated path and a buffer of the length passed.
    let n = unsafe { libc::llistxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    assert!(n >= 0, "llistxattr {}", p.display());
    buf.truncate(n as usize);
    buf
}

#[test]
fn acls_and_xattrs_are_stripped_and_modes_narrowed_at_hand_back() {
    let f = RunFixture::new();
    let job = f.job("acl", ACL, &[], RUN_SANDBOX);
    exit_code(&f.run(&job), 0);
    let out = f.dir().join("acl-out");
    assert_eq!(
        std::fs::read_to_string(out.join("set.txt")).unwrap(),
        "system.posix_acl_access system.posix_acl_default user.note",
        "the job could not set them: the test proves nothing"
    );
    for p in ["m.bin", "shared"] {
        assert_eq!(xattrs(&out.join(p)), b"", "{p} keeps extended attributes");
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(out.join("m.bin"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o775, "{mode:o}");
    let st = signed_statement(&f, "acl");
    // The new byproducts do not stand in the way of checking the files on disk.
    let rec = f.record("acl").display().to_string();
    let v = ok(verify(
        f.dir(),
        &[
            "record",
            &rec,
            "--trust",
            "trust.toml",
            "--outputs",
            "acl-out",
        ],
    ));
    assert!(v.contains("2 output file(s) verified on disk"), "{v}");
    let summary = &byproduct(&st, "output-summary")["annotations"];
    assert_eq!(summary["xattrs_removed"], 3, "{summary:#}");
    assert_eq!(summary["modes_changed"], 1, "{summary:#}");
    all_handed_back(&out);
}
