//! TPM 2.0 attestation of run records (#15), against a real swtpm per test: enroll an
//! attestation key, run a job measured into PCR 23, quote its record, verify the evidence with
//! `sealrun-verify` and with tpm2-tools' `tpm2_checkquote`; tamper with every part of the
//! evidence and get the named failure; refuse `tpm = "required"` without a TPM; concurrent
//! runs each get evidence that replays.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use base64::Engine;
use sealrun_integration::swtpm::Swtpm;
use sealrun_integration::{
    audit_entries, bin, envelope_statement, fails_with, ok, run, sha256_hex, text, verify,
    RunFixture, RUN_SANDBOX,
};

const TRAIN: &str = "open('/out/model.txt', 'w').write('m')\n";
const REQUIRED: &str = "[attestation]\ntpm = \"required\"\n";

fn sealrun_tpm(sw: &Swtpm, dir: &Path, args: &[&str]) -> Output {
    run(sw.env(Command::new(bin("sealrun")).current_dir(dir).args(args)))
}

/// A fixture whose trust policy also trusts the swtpm's enrolled AK for `tpm-quote`.
fn enrolled(sw: &Swtpm, extra_policy: &str) -> RunFixture {
    let f = RunFixture::new();
    let t = ok(sealrun_tpm(
        sw,
        f.dir(),
        &["tpm", "enroll", "--out", "ak.pub"],
    ));
    assert!(t.contains("created attestation key"), "{t}");
    assert!(
        t.contains("SOFTWARE TPM"),
        "swtpm is not named as software: {t}"
    );
    let trust = f.dir().join("trust.toml");
    let mut policy = std::fs::read_to_string(&trust).unwrap();
    policy
        .push_str("[[key]]\nname = \"tpm-ak\"\npublic_key = \"ak.pub\"\nkinds = [\"tpm-quote\"]\n");
    policy.push_str(extra_policy);
    std::fs::write(&trust, policy).unwrap();
    f
}

fn run_job(sw: &Swtpm, f: &RunFixture, name: &str) -> PathBuf {
    let job = f.job(name, TRAIN, &[], &format!("{RUN_SANDBOX}{REQUIRED}"));
    ok(sealrun_tpm(sw, f.dir(), &["run", &job, "--quiet"]));
    f.record(name)
}

fn quote_of(record: &Path) -> PathBuf {
    let name = record
        .file_name()
        .unwrap()
        .to_string_lossy()
        .replace(".json", ".quote.json");
    record.with_file_name(name)
}

fn verify_record(f: &RunFixture, record: &Path, extra: &[&str]) -> Output {
    let rec = record.display().to_string();
    let mut args = vec!["record", rec.as_str(), "--trust", "trust.toml"];
    args.extend(extra);
    verify(f.dir(), &args)
}

#[test]
fn enroll_run_quote_and_verify() {
    let sw = Swtpm::start();
    let f = enrolled(&sw, "");
    // Enrolling again reuses the persistent key.
    let again = ok(sealrun_tpm(
        &sw,
        f.dir(),
        &["tpm", "enroll", "--out", "ak2.pub"],
    ));
    assert!(again.contains("reused the attestation key"), "{again}");
    assert_eq!(
        std::fs::read(f.dir().join("ak.pub")).unwrap(),
        std::fs::read(f.dir().join("ak2.pub")).unwrap()
    );
    let status = ok(sealrun_tpm(&sw, f.dir(), &["tpm", "status"]));
    assert!(
        status.contains("IBM SW") && status.contains("PCR bank: sha256"),
        "{status}"
    );

    let record = run_job(&sw, &f, "train");
    let quote = quote_of(&record);
    let ev: serde_json::Value = serde_json::from_slice(&std::fs::read(&quote).unwrap()).unwrap();
    assert_eq!(ev["evidence"], "tpm2-quote");
    assert_eq!(ev["pcr_selection"], "sha256:0,1,2,3,4,5,6,7,23");
    assert_eq!(ev["nonce"], sha256_hex(&std::fs::read(&record).unwrap()));
    assert_eq!(ev["tpm"]["software"], true);
    let whats: Vec<&str> = ev["event_log"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["what"].as_str().unwrap())
        .collect();
    assert_eq!(whats, ["reset", "launcher", "policy", "plan"]);
    // The record says how it is attested.
    let st = envelope_statement(&record);
    let ip = &st["predicate"]["buildDefinition"]["internalParameters"];
    assert_eq!(ip["attestation"], "tpm-quote");
    assert_eq!(ip["tpm"]["launcher_sha256"], ip["launcher_sha256"]);
    // The audit log's end entry names the evidence.
    let end = audit_entries(&f.dir().join("audit.log"))
        .into_iter()
        .find(|e| e["event"] == "end")
        .expect("an end entry");
    assert_eq!(end["evidence"], sha256_hex(&std::fs::read(&quote).unwrap()));
    ok(f.verify_log(false));

    let t = ok(verify_record(&f, &record, &["--require-tpm"]));
    assert!(
        t.contains("tpm-quote verified") && t.contains("SOFTWARE TPM"),
        "{t}"
    );

    // tpm2-tools (libtss2) checks the same quote from the raw files.
    let b64 = base64::engine::general_purpose::STANDARD;
    let put = |name: &str, field: &str| {
        let p = f.dir().join(name);
        std::fs::write(&p, b64.decode(ev[field].as_str().unwrap()).unwrap()).unwrap();
    };
    put("attest.bin", "attest");
    put("sig.bin", "signature");
    let nonce = ev["nonce"].as_str().unwrap();
    let check = |ak: &str| {
        Command::new("tpm2_checkquote")
            .current_dir(f.dir())
            .args([
                "-u",
                ak,
                "-m",
                "attest.bin",
                "-s",
                "sig.bin",
                "-g",
                "sha256",
                "-q",
                nonce,
            ])
            .output()
            .expect("tpm2_checkquote (Debian: tpm2-tools)")
    };
    let out = check("ak.pub");
    assert!(out.status.success(), "tpm2_checkquote: {}", text(&out));
    // ... and refuses it under another key.
    ok(sealrun_tpm(&sw, f.dir(), &["keygen", "--out", "other"]));
    let other = Swtpm::start();
    ok(sealrun_tpm(
        &other,
        f.dir(),
        &["tpm", "enroll", "--out", "other-ak.pub"],
    ));
    assert!(
        !check("other-ak.pub").status.success(),
        "tpm2_checkquote accepted another AK"
    );
}

/// Write `quote` back with `f` applied to its JSON.
fn tamper(quote: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(quote).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(quote, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
}

fn flip_b64(v: &mut serde_json::Value, field: &str, at: usize) {
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut b = b64.decode(v[field].as_str().unwrap()).unwrap();
    let i = at.min(b.len() - 1);
    b[i] ^= 1;
    v[field] = b64.encode(b).into();
}

#[test]
fn tampered_evidence_fails_by_name() {
    let sw = Swtpm::start();
    let f = enrolled(&sw, "");
    let record = run_job(&sw, &f, "train");
    let quote = quote_of(&record);
    let good = std::fs::read(&quote).unwrap();
    ok(verify_record(&f, &record, &[]));
    type Tamper = Box<dyn Fn(&mut serde_json::Value)>;
    let cases: Vec<(&str, Tamper)> = vec![
        (
            "nonce_mismatch",
            Box::new(|v| v["nonce"] = "00".repeat(32).into()),
        ),
        (
            "bad_quote_signature",
            Box::new(|v| flip_b64(v, "attest", 40)),
        ),
        (
            "bad_quote_signature",
            Box::new(|v| flip_b64(v, "signature", 10)),
        ),
        ("pcr_mismatch", Box::new(|v| flip_b64(v, "pcr_values", 5))),
        (
            "event_log_mismatch",
            Box::new(|v| v["event_log"][3]["digest"] = "ab".repeat(32).into()),
        ),
        (
            "event_log_mismatch",
            Box::new(|v| {
                let e = v["event_log"].as_array_mut().unwrap();
                e.remove(2);
            }),
        ),
    ];
    for (name, t) in cases {
        tamper(&quote, t);
        fails_with(
            verify_record(&f, &record, &[]),
            1,
            &[&format!("FAILED ({name})")],
        );
        std::fs::write(&quote, &good).unwrap();
    }
    // A revoked AK (a TPM taken out of service, or its host compromised).
    let trust = f.dir().join("trust.toml");
    let policy = std::fs::read_to_string(&trust).unwrap();
    let revoked = format!(
        "{policy}[[revoked]]\nkey = \"tpm-ak\"\nreason = \"host decommissioned\"\ntime = \"2026-11-30T08:00:00Z\"\n"
    );
    std::fs::write(&trust, revoked).unwrap();
    fails_with(
        verify_record(&f, &record, &[]),
        1,
        &["FAILED (ak_not_trusted)", "host decommissioned"],
    );
    std::fs::write(&trust, policy).unwrap();
    // A quote of another record (same TPM, same AK) does not vouch for this one.
    let other = run_job(&sw, &f, "second");
    std::fs::copy(quote_of(&other), &quote).unwrap();
    fails_with(
        verify_record(&f, &record, &[]),
        1,
        &["FAILED (nonce_mismatch)"],
    );
    // Evidence deleted from a record that says it was quoted.
    std::fs::remove_file(&quote).unwrap();
    fails_with(
        verify_record(&f, &record, &[]),
        1,
        &["FAILED (no_tpm_evidence)"],
    );
}

#[test]
fn a_launcher_not_in_the_accepted_list_is_refused() {
    let sw = Swtpm::start();
    let other = format!("[tpm]\nlauncher_sha256 = [\"{}\"]\n", "1".repeat(64));
    let f = enrolled(&sw, &other);
    let record = run_job(&sw, &f, "train");
    fails_with(
        verify_record(&f, &record, &[]),
        1,
        &[
            "FAILED (launcher_not_accepted)",
            "PCR 23 measured launcher sha256:",
        ],
    );
    // The same evidence verifies once the policy accepts this build.
    let st = envelope_statement(&record);
    let mine = st["predicate"]["buildDefinition"]["internalParameters"]["launcher_sha256"]
        .as_str()
        .unwrap()
        .to_string();
    let trust = f.dir().join("trust.toml");
    let p = std::fs::read_to_string(&trust)
        .unwrap()
        .replace(&"1".repeat(64), &mine);
    std::fs::write(&trust, p).unwrap();
    ok(verify_record(&f, &record, &[]));
}

#[test]
fn required_without_a_tpm_refuses_before_anything_runs() {
    let f = RunFixture::new();
    let job = f.job("train", TRAIN, &[], &format!("{RUN_SANDBOX}{REQUIRED}"));
    // A loopback port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let state = f.dir().join("tpm-state");
    let out = run(Command::new(bin("sealrun"))
        .current_dir(f.dir())
        .env("SEALRUN_TCTI", format!("swtpm:host=127.0.0.1,port={port}"))
        .env("SEALRUN_TPM_STATE", &state)
        .args(["run", &job, "--quiet"]));
    let t = text(&out);
    assert_eq!(out.status.code(), Some(125), "{t}");
    assert!(
        t.contains("[attestation] tpm = \"required\"")
            && t.contains("no TPM answers at swtpm:host=127.0.0.1"),
        "{t}"
    );
    assert!(!f.dir().join("train-out/model.txt").exists(), "the job ran");
    // Its refusal record is honest about having no TPM, and --require-tpm refuses it.
    let record = f.record("train");
    let st = envelope_statement(&record);
    assert_eq!(
        st["predicate"]["buildDefinition"]["internalParameters"]["attestation"],
        "software-key"
    );
    ok(verify_record(&f, &record, &[]));
    fails_with(
        verify_record(&f, &record, &["--require-tpm"]),
        1,
        &["FAILED (no_tpm_evidence)"],
    );
}

#[test]
fn a_tpm_whose_ak_the_policy_does_not_trust_is_not_used() {
    let sw = Swtpm::start();
    let f = RunFixture::new();
    ok(sealrun_tpm(
        &sw,
        f.dir(),
        &["tpm", "enroll", "--out", "ak.pub"],
    ));
    // required: refused before anything runs.
    let job = f.job("train", TRAIN, &[], &format!("{RUN_SANDBOX}{REQUIRED}"));
    let out = sealrun_tpm(&sw, f.dir(), &["run", &job, "--quiet"]);
    let t = fails_with(out, 125, &["does not trust the TPM's attestation key"]);
    assert!(
        !f.dir().join("train-out/model.txt").exists(),
        "the job ran: {t}"
    );
    // auto: runs, warns, and its record (software-key) verifies.
    let job = f.job("auto", TRAIN, &[], RUN_SANDBOX);
    let t = ok(sealrun_tpm(&sw, f.dir(), &["run", &job, "--quiet"]));
    assert!(t.contains("attested with the software key only"), "{t}");
    let record = f.record("auto");
    assert!(!quote_of(&record).exists());
    ok(verify_record(&f, &record, &[]));
}

#[test]
fn auto_without_a_tpm_runs_with_the_software_key() {
    let f = RunFixture::new();
    let job = f.job("train", TRAIN, &[], RUN_SANDBOX);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    ok(run(Command::new(bin("sealrun"))
        .current_dir(f.dir())
        .env("SEALRUN_TCTI", format!("swtpm:host=127.0.0.1,port={port}"))
        .args(["run", &job, "--quiet"])));
    let record = f.record("train");
    let st = envelope_statement(&record);
    assert_eq!(
        st["predicate"]["buildDefinition"]["internalParameters"]["attestation"],
        "software-key"
    );
    assert!(!quote_of(&record).exists());
    let t = ok(verify_record(&f, &record, &[]));
    assert!(t.contains("attestation: software-key"), "{t}");
}

#[test]
fn concurrent_runs_each_replay() {
    let sw = Swtpm::start();
    let f = enrolled(&sw, "");
    let jobs: Vec<String> = (0..4)
        .map(|i| {
            f.job(
                &format!("job{i}"),
                TRAIN,
                &[],
                &format!("{RUN_SANDBOX}{REQUIRED}"),
            )
        })
        .collect();
    let children: Vec<_> = jobs
        .iter()
        .map(|j| {
            sw.env(
                Command::new(bin("sealrun"))
                    .current_dir(f.dir())
                    .args(["run", j, "--quiet"]),
            )
            .env("SEALRUN_STORE", f.dir().join(format!(".store-{j}")))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
        })
        .collect();
    for c in children {
        ok(c.wait_with_output().unwrap());
    }
    for i in 0..4 {
        let record = f.record(&format!("job{i}"));
        ok(verify_record(&f, &record, &["--require-tpm"]));
    }
    // The host's log holds every measurement (and re-measurements, if runs interleaved).
    let log = std::fs::read_to_string(sw.state_dir().join("pcr23-events.jsonl")).unwrap();
    assert!(
        log.lines().filter(|l| l.contains("\"plan\"")).count() >= 4,
        "{log}"
    );
}

#[test]
fn a_run_whose_measurement_another_run_reset_is_measured_again_before_its_quote() {
    let sw = Swtpm::start();
    let f = enrolled(&sw, "");
    // Job A runs for 5 s after its measurement; B runs (about 1 s) in that window.
    let wait = "import time\ntime.sleep(5)\nopen('/out/model.txt', 'w').write('a')\n";
    let a = f.job("slow", wait, &[], &format!("{RUN_SANDBOX}{REQUIRED}"));
    let b = f.job("fast", TRAIN, &[], &format!("{RUN_SANDBOX}{REQUIRED}"));
    let mut child = sw
        .env(
            Command::new(bin("sealrun"))
                .current_dir(f.dir())
                .args(["run", &a, "--quiet"]),
        )
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let log = sw.state_dir().join("pcr23-events.jsonl");
    let plans = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("\"plan\""))
            .count()
    };
    let t0 = std::time::Instant::now();
    while plans() < 1 {
        assert!(t0.elapsed().as_secs() < 60, "job A was never measured");
        if let Ok(Some(_)) = child.try_wait() {
            panic!(
                "job A ended early: {}",
                text(&child.wait_with_output().unwrap())
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // B resets PCR 23 and measures itself while A runs.
    ok(sealrun_tpm(&sw, f.dir(), &["run", &b, "--quiet"]));
    assert!(
        child.try_wait().unwrap().is_none(),
        "job A ended before B was done: the test proves nothing (a slow machine?)"
    );
    ok(child.wait_with_output().unwrap());
    // A was measured again (reset, launcher, policy, plan) before its quote; both verify.
    assert_eq!(plans(), 3, "{}", std::fs::read_to_string(&log).unwrap());
    ok(verify_record(&f, &f.record("slow"), &["--require-tpm"]));
    ok(verify_record(&f, &f.record("fast"), &["--require-tpm"]));
}

#[test]
fn chain_and_gate_require_tpm_evidence() {
    let sw = Swtpm::start();
    let f = enrolled(&sw, "");
    let quoted = run_job(&sw, &f, "train");
    // A run on a host without a TPM (auto): a software-key record in the same folder.
    let job = f.job("plain", TRAIN, &[], RUN_SANDBOX);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    ok(run(Command::new(bin("sealrun"))
        .current_dir(f.dir())
        .env("SEALRUN_TCTI", format!("swtpm:host=127.0.0.1,port={port}"))
        .args(["run", &job, "--quiet"])));
    let plain = f.record("plain");
    let chain = |rec: &Path, extra: &[&str]| {
        let rec = rec.display().to_string();
        let mut a = vec![
            "chain",
            rec.as_str(),
            "--records",
            "records",
            "--trust",
            "trust.toml",
        ];
        a.extend(extra);
        verify(f.dir(), &a)
    };
    ok(chain(&quoted, &["--require-tpm"]));
    ok(chain(&plain, &[]));
    fails_with(
        chain(&plain, &["--require-tpm"]),
        1,
        &["FAILED (no_tpm_evidence)"],
    );

    std::fs::write(
        f.dir().join("gate.toml"),
        "trust = \"trust.toml\"\nrequire_tpm = true\n",
    )
    .unwrap();
    let gate = |rec: &Path| {
        let rec = rec.display().to_string();
        verify(
            f.dir(),
            &[
                "gate",
                &rec,
                "--policy",
                "gate.toml",
                "--records",
                "records",
            ],
        )
    };
    ok(gate(&quoted));
    let t = text(&gate(&plain));
    assert!(t.contains("no_tpm_evidence"), "{t}");
    // Tampered evidence fails the chain and the gate even when not required.
    let q = quote_of(&quoted);
    tamper(&q, |v| flip_b64(v, "pcr_values", 0));
    fails_with(chain(&quoted, &[]), 1, &["FAILED (pcr_mismatch)"]);
    std::fs::write(f.dir().join("gate.toml"), "trust = \"trust.toml\"\n").unwrap();
    let t = text(&gate(&quoted));
    assert!(t.contains("pcr_mismatch"), "{t}");
}
