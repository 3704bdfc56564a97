//! The audit log as an auditor sees it: a log built by real `sealrun run`s
//! (two finished runs and one refusal, five entries), then tampered with in
//! every way the issue lists. `sealrun-verify log` must exit 1, give the
//! specific reason and name the first bad sequence number (`--json`:
//! `first_bad_seq`). Also: two launchers appending to one log at once.

use std::process::{Command, Stdio};

use sealrun_integration::{
    audit_entries, bin, fails_with, ok, sha256_hex, text, RunFixture, RUN_SANDBOX,
};
use sealrun_verifier::audit::{sign_checkpoint, Checkpoint};
use sealrun_verifier::keys::SigningKey;

const SCRIPT: &str = "open('/out/model.txt', 'w').write('m')\n";

/// A fixture whose `audit.log` holds: 1 start a, 2 end a, 3 start b, 4 end b,
/// 5 refused c (input `data2` does not match `data.sig`).
fn five_entry_log() -> RunFixture {
    let f = RunFixture::new();
    for name in ["a", "b"] {
        let job = f.job(name, SCRIPT, &[], RUN_SANDBOX);
        ok(f.run(&job));
    }
    let job = f.job("c", SCRIPT, &[], RUN_SANDBOX);
    let spec = f.dir().join(&job);
    let s = std::fs::read_to_string(&spec).unwrap();
    std::fs::write(&spec, s.replace("path = \"data\"", "path = \"data2\"")).unwrap();
    sealrun_integration::write_tree(f.dir(), &[("data2/points.csv", b"forged\n")]);
    fails_with(f.run(&job), 65, &["refused"]);
    let e = audit_entries(&f.dir().join("audit.log"));
    let events: Vec<&str> = e.iter().map(|e| e["event"].as_str().unwrap()).collect();
    assert_eq!(events, ["start", "end", "start", "end", "refused"]);
    let j = verify_json(&f);
    assert_eq!(j.0, 0, "{:#}", j.1);
    assert_eq!(j.1["summary"]["entries"], 5);
    assert_eq!(j.1["summary"]["runs_finished"], 2);
    assert_eq!(j.1["summary"]["refusals"], 1);
    assert_eq!(j.1["summary"]["checkpoint_seq"], 5);
    f
}

fn lines(f: &RunFixture) -> Vec<String> {
    std::fs::read_to_string(f.dir().join("audit.log"))
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

fn write_lines(f: &RunFixture, lines: &[String]) {
    let mut s = lines.join("\n");
    s.push('\n');
    std::fs::write(f.dir().join("audit.log"), s).unwrap();
}

/// `sealrun-verify log --json`: exit code and the JSON object.
fn verify_json(f: &RunFixture) -> (i32, serde_json::Value) {
    let out = f.verify_log(true);
    let j = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("--json output is not JSON ({e}): {}", text(&out)));
    (out.status.code().unwrap(), j)
}

/// The log fails to verify with `reason`, and names `seq` as the first bad entry
/// in both the text and the JSON form.
#[track_caller]
fn assert_bad(f: &RunFixture, reason: &str, seq: Option<u64>, needles: &[&str]) {
    let t = fails_with(f.verify_log(false), 1, needles);
    assert!(t.contains(&format!("FAILED ({reason})")), "{t}");
    if let Some(s) = seq {
        assert!(
            t.contains(&format!("entry {s}")),
            "text lacks entry {s}: {t}"
        );
    }
    let (code, j) = verify_json(f);
    assert_eq!(code, 1, "{j:#}");
    assert_eq!(j["ok"], false);
    assert_eq!(j["reason"], reason, "{j:#}");
    assert_eq!(j["first_bad_seq"], serde_json::json!(seq), "{j:#}");
}

fn entry(line: &str) -> serde_json::Value {
    serde_json::from_str(line).unwrap()
}

fn to_line(v: &serde_json::Value) -> String {
    // Entry field order is the struct's: serde_json::Value keeps insertion order
    // only with preserve_order, so rebuild through the verifier's own type.
    let e: sealrun_verifier::audit::Entry = serde_json::from_value(v.clone()).unwrap();
    String::from_utf8(e.to_line()).unwrap()
}

#[test]
fn modified_entry_is_detected() {
    let f = five_entry_log();
    let mut l = lines(&f);
    // Entry 3 (start of b) rewritten in canonical form: only the chain can tell.
    let mut e = entry(&l[2]);
    e["job"] = "innocent".into();
    l[2] = to_line(&e);
    write_lines(&f, &l);
    let (code, j) = verify_json(&f);
    assert_eq!(code, 1, "{j:#}");
    assert_eq!(j["reason"], "broken_chain", "{j:#}");
    // The break is found no later than the entry that commits to the modified one.
    let s = j["first_bad_seq"].as_u64().unwrap();
    assert!((3..=4).contains(&s), "{j:#}");
}

#[test]
fn modified_entry_names_its_own_seq() {
    let f = five_entry_log();
    let mut l = lines(&f);
    let mut e = entry(&l[2]);
    e["job"] = "innocent".into();
    l[2] = to_line(&e);
    write_lines(&f, &l);
    assert_bad(&f, "broken_chain", Some(3), &[]);
}

#[test]
fn hand_edited_entry_names_its_seq() {
    let f = five_entry_log();
    let mut l = lines(&f);
    l[2] = l[2].replace("\"event\":\"start\"", "\"event\": \"start\"");
    write_lines(&f, &l);
    assert_bad(&f, "broken_chain", Some(3), &["canonical"]);
}

#[test]
fn modified_last_entry_fails_the_checkpoint() {
    let f = five_entry_log();
    let mut l = lines(&f);
    let mut e = entry(&l[4]);
    e["outcome"] = "succeeded".into();
    l[4] = to_line(&e);
    write_lines(&f, &l);
    assert_bad(
        &f,
        "checkpoint_mismatch",
        Some(5),
        &["does not match the signed checkpoint"],
    );
}

#[test]
fn deleted_entry_names_its_seq() {
    let f = five_entry_log();
    let mut l = lines(&f);
    l.remove(2);
    write_lines(&f, &l);
    assert_bad(
        &f,
        "broken_chain",
        Some(3),
        &["has sequence number 4, expected 3"],
    );
}

#[test]
fn reordered_entries_name_the_first_moved_seq() {
    let f = five_entry_log();
    let mut l = lines(&f);
    l.swap(2, 3);
    write_lines(&f, &l);
    assert_bad(
        &f,
        "broken_chain",
        Some(3),
        &["has sequence number 4, expected 3"],
    );
}

/// A forged `end` entry for b, chained correctly to line 2 (what a forger would write).
fn forged_after_line_2(l: &[String]) -> String {
    let mut e = entry(&l[1]);
    e["seq"] = 3.into();
    e["prev"] = sha256_hex(l[1].as_bytes()).into();
    e["job"] = "b".into();
    e["invocation"] = "f".repeat(32).into();
    e["outcome"] = "succeeded".into();
    to_line(&e)
}

#[test]
fn inserted_forged_entry_is_detected() {
    let f = five_entry_log();
    let mut l = lines(&f);
    let forged = forged_after_line_2(&l);
    l.insert(2, forged);
    write_lines(&f, &l);
    let (code, j) = verify_json(&f);
    assert_eq!(code, 1, "{j:#}");
    assert_eq!(j["reason"], "broken_chain", "{j:#}");
    let s = j["first_bad_seq"].as_u64().unwrap();
    assert!((3..=4).contains(&s), "{j:#}");
}

#[test]
fn inserted_forged_entry_names_its_seq() {
    let f = five_entry_log();
    let mut l = lines(&f);
    let forged = forged_after_line_2(&l);
    l.insert(2, forged);
    write_lines(&f, &l);
    assert_bad(&f, "broken_chain", Some(3), &[]);
}

#[test]
fn inserted_naive_entry_names_its_seq() {
    let f = five_entry_log();
    let mut l = lines(&f);
    let mut e = entry(&forged_after_line_2(&l));
    e["prev"] = "0".repeat(64).into();
    l.insert(2, to_line(&e));
    write_lines(&f, &l);
    assert_bad(&f, "broken_chain", Some(3), &["names prev"]);
}

#[test]
fn rewritten_tail_is_caught_by_the_checkpoint() {
    // Insert a forged entry and re-chain everything after it: the chain is
    // consistent, but the signed checkpoint no longer matches.
    let f = five_entry_log();
    let mut l = lines(&f);
    let forged = forged_after_line_2(&l);
    l.insert(2, forged);
    for i in 3..l.len() {
        let mut e = entry(&l[i]);
        e["seq"] = (i as u64 + 1).into();
        e["prev"] = sha256_hex(l[i - 1].as_bytes()).into();
        l[i] = to_line(&e);
    }
    l.pop(); // keep five lines, as the checkpoint says
    write_lines(&f, &l);
    assert_bad(&f, "checkpoint_mismatch", Some(5), &[]);
}

#[test]
fn truncated_log_is_caught_by_the_checkpoint() {
    let f = five_entry_log();
    let mut l = lines(&f);
    l.pop();
    write_lines(&f, &l);
    assert_bad(
        &f,
        "truncated",
        Some(5),
        &["names entry 5, but the log ends at entry 4"],
    );
    // Cut to nothing at all: still detected.
    std::fs::write(f.dir().join("audit.log"), b"").unwrap();
    fails_with(
        f.verify_log(false),
        1,
        &["FAILED (truncated)", "ends at entry 0"],
    );
    let (code, j) = verify_json(&f);
    assert_eq!(
        (code, &j["first_bad_seq"]),
        (1, &serde_json::json!(1)),
        "{j:#}"
    );
}

#[test]
fn missing_checkpoint_is_refused() {
    let f = five_entry_log();
    std::fs::remove_file(f.dir().join("audit.log.checkpoint")).unwrap();
    assert_bad(
        &f,
        "no_checkpoint",
        None,
        &["truncation cannot be ruled out"],
    );
    // Accepted only when asked for explicitly.
    let out = sealrun_integration::verify(
        f.dir(),
        &[
            "log",
            "audit.log",
            "--trust",
            "trust.toml",
            "--no-checkpoint",
        ],
    );
    let t = ok(out);
    assert!(
        t.contains("5 entries") && t.contains("checkpoint at entry none"),
        "{t}"
    );
}

fn checkpoint_of(f: &RunFixture) -> Checkpoint {
    let st = sealrun_integration::envelope_statement(&f.dir().join("audit.log.checkpoint"));
    serde_json::from_value(st["predicate"].clone()).unwrap()
}

#[test]
fn checkpoint_signed_by_a_key_not_allowed_for_checkpoints_is_refused() {
    let f = five_entry_log();
    // The registry key is trusted, but only for datasets.
    let pem = std::fs::read_to_string(f.dir().join("reg.key")).unwrap();
    let reg = SigningKey::from_pkcs8_pem(&pem).unwrap();
    let env = sign_checkpoint(&checkpoint_of(&f), &reg);
    std::fs::write(f.dir().join("audit.log.checkpoint"), env.to_json()).unwrap();
    assert_bad(
        &f,
        "kind_not_allowed",
        None,
        &["\"registry\"", "may not sign checkpoints"],
    );
}

#[test]
fn checkpoint_signed_by_an_unknown_key_is_refused() {
    let f = five_entry_log();
    let env = sign_checkpoint(&checkpoint_of(&f), &SigningKey::generate());
    std::fs::write(f.dir().join("audit.log.checkpoint"), env.to_json()).unwrap();
    assert_bad(&f, "bad_checkpoint", None, &["checkpoint"]);
}

#[test]
fn forged_checkpoint_over_a_truncated_log_is_refused() {
    // Truncate, then "fix" the checkpoint with a key that may not sign one.
    let f = five_entry_log();
    let mut l = lines(&f);
    l.pop();
    write_lines(&f, &l);
    let mut cp = checkpoint_of(&f);
    cp.seq = 4;
    cp.head = sha256_hex(l[3].as_bytes());
    let pem = std::fs::read_to_string(f.dir().join("reg.key")).unwrap();
    let env = sign_checkpoint(&cp, &SigningKey::from_pkcs8_pem(&pem).unwrap());
    std::fs::write(f.dir().join("audit.log.checkpoint"), env.to_json()).unwrap();
    assert_bad(&f, "kind_not_allowed", None, &[]);
}

#[test]
fn launcher_refuses_to_append_to_a_broken_log() {
    let f = five_entry_log();
    let mut l = lines(&f);
    l.remove(1);
    write_lines(&f, &l);
    let before = std::fs::read(f.dir().join("audit.log")).unwrap();
    let job = f.job(
        "d",
        "open('/out/marker', 'w').write('ran')\n",
        &[],
        RUN_SANDBOX,
    );
    let out = f.run(&job);
    fails_with(out, 74, &["refusing to append", "entry 2"]);
    assert!(!f.dir().join("d-out/marker").exists(), "the job ran");
    assert_eq!(std::fs::read(f.dir().join("audit.log")).unwrap(), before);
}

#[test]
fn concurrent_launchers_share_one_log() {
    let f = RunFixture::new();
    let script = "import time\ntime.sleep(1)\nopen('/out/model.txt', 'w').write('m')\n";
    let jobs: Vec<String> = ["p", "q"]
        .iter()
        .map(|n| f.job(n, script, &[], RUN_SANDBOX))
        .collect();
    let children: Vec<_> = jobs
        .iter()
        .map(|j| {
            Command::new(bin("sealrun"))
                .current_dir(f.dir())
                .args(["run", j, "--quiet"])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", text(&out));
    }
    let (code, j) = verify_json(&f);
    assert_eq!(code, 0, "{j:#}");
    assert_eq!(j["summary"]["entries"], 4);
    assert_eq!(j["summary"]["runs_finished"], 2);
    assert_eq!(j["summary"]["checkpoint_seq"], 4);
    assert_eq!(j["summary"]["unfinished"], serde_json::json!([]));
    let e = audit_entries(&f.dir().join("audit.log"));
    let seqs: Vec<u64> = e.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, [1, 2, 3, 4]);
    for name in ["p", "q"] {
        let mine: Vec<&str> = e
            .iter()
            .filter(|x| x["job"] == name)
            .map(|x| x["event"].as_str().unwrap())
            .collect();
        assert_eq!(mine, ["start", "end"], "{name}");
        let rec = f.record(name);
        let ended = e
            .iter()
            .find(|x| x["job"] == name && x["event"] == "end")
            .unwrap();
        assert_eq!(
            ended["record"].as_str().unwrap(),
            sha256_hex(&std::fs::read(&rec).unwrap())
        );
    }
}

#[test]
fn four_concurrent_launchers_keep_one_chain() {
    let f = RunFixture::new();
    let names = ["w", "x", "y", "z"];
    let jobs: Vec<String> = names
        .iter()
        .map(|n| f.job(n, SCRIPT, &[], RUN_SANDBOX))
        .collect();
    let children: Vec<_> = jobs
        .iter()
        .map(|j| {
            Command::new(bin("sealrun"))
                .current_dir(f.dir())
                .args(["run", j, "--quiet"])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", text(&out));
    }
    let (code, j) = verify_json(&f);
    assert_eq!(code, 0, "{j:#}");
    assert_eq!(j["summary"]["entries"], 8);
    assert_eq!(j["summary"]["runs_finished"], 4);
    assert_eq!(j["summary"]["checkpoint_seq"], 8);
}

#[test]
fn unwritable_audit_log_stops_the_run_with_74() {
    let f = RunFixture::new();
    std::fs::create_dir(f.dir().join("audit.log")).unwrap();
    let job = f.job(
        "e",
        "open('/out/marker', 'w').write('ran')\n",
        &[],
        RUN_SANDBOX,
    );
    let out = f.run(&job);
    fails_with(
        out,
        74,
        &["cannot write the run record or audit log", "audit.log"],
    );
    assert!(
        !f.dir().join("e-out/marker").exists(),
        "the job ran unlogged"
    );
    // If the output folder was handed to the job's uid before the failure, it is taken back.
    // (The rollback state is updated under the audit log's lock, so an unusable log now
    // stops the run before the output folder is made.)
    if let Ok(meta) = std::fs::metadata(f.dir().join("e-out")) {
        let owner = std::os::unix::fs::MetadataExt::uid(&meta);
        // SAFETY: geteuid has no preconditions and cannot fail.
        let me = unsafe { libc::geteuid() };
        assert_eq!(owner, me, "e-out left owned by the job's uid");
    }
}

fn launcher_key(f: &RunFixture) -> SigningKey {
    let pem = std::fs::read_to_string(f.dir().join("launcher.key")).unwrap();
    SigningKey::from_pkcs8_pem(&pem).unwrap()
}

/// A forged `end` entry chained correctly after the last line.
fn forged_tail(l: &[String]) -> String {
    let mut e = entry(l.last().unwrap());
    e["seq"] = (l.len() as u64 + 1).into();
    e["prev"] = sha256_hex(l.last().unwrap().as_bytes()).into();
    e["event"] = "end".into();
    e["job"] = "c".into();
    e["outcome"] = "succeeded".into();
    to_line(&e)
}

#[test]
fn appended_tail_after_the_checkpoint_is_refused() {
    // Correctly chained, but signed by nobody: the checkpoint covers entry 5 only.
    let f = five_entry_log();
    let mut l = lines(&f);
    let forged = forged_tail(&l);
    l.push(forged);
    write_lines(&f, &l);
    assert_bad(
        &f,
        "unsigned_tail",
        Some(6),
        &["entry 6 to entry 6 come after the signed checkpoint (entry 5)"],
    );
    // Accepted only when asked for, and then said to be unsigned.
    let out = sealrun_integration::verify(
        f.dir(),
        &[
            "log",
            "audit.log",
            "--trust",
            "trust.toml",
            "--allow-unsigned-tail",
        ],
    );
    let t = ok(out);
    assert!(
        t.contains("entry 6 to entry 6 are after the signed checkpoint: UNSIGNED")
            && t.contains("checkpoint at entry 5; 1 UNSIGNED entries after it"),
        "{t}"
    );
}

#[test]
fn rewritten_tail_with_an_older_checkpoint_is_refused() {
    // The attacker keeps an older (genuinely signed) checkpoint for entry 3 and
    // rewrites everything after it, chaining correctly.
    let f = five_entry_log();
    let mut l = lines(&f);
    let mut cp = checkpoint_of(&f);
    cp.seq = 3;
    cp.head = sha256_hex(l[2].as_bytes());
    let env = sign_checkpoint(&cp, &launcher_key(&f));
    std::fs::write(f.dir().join("audit.log.checkpoint"), env.to_json()).unwrap();
    for i in 3..l.len() {
        let mut e = entry(&l[i]);
        e["prev"] = sha256_hex(l[i - 1].as_bytes()).into();
        if e["event"] == "refused" {
            e["event"] = "end".into();
            e["outcome"] = "succeeded".into();
        }
        l[i] = to_line(&e);
    }
    write_lines(&f, &l);
    assert_bad(&f, "unsigned_tail", Some(4), &["entry 4 to entry 5"]);
}

#[test]
fn checkpoint_of_another_log_is_refused() {
    let f = five_entry_log();
    let mut cp = checkpoint_of(&f);
    assert_eq!(cp.log, "audit.log");
    cp.log = "other.log".into();
    let env = sign_checkpoint(&cp, &launcher_key(&f));
    std::fs::write(f.dir().join("audit.log.checkpoint"), env.to_json()).unwrap();
    assert_bad(
        &f,
        "wrong_log",
        None,
        &["is for log \"other.log\", not \"audit.log\""],
    );
}
