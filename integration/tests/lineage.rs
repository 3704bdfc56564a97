//! Lineage (issue 20.3): `sealrun-verify lineage --records DIR --trust T
//! (--artifact | --record | --key) [--gate G] [--format text|dot|json]` lists
//! every run and final output downstream of the start, through stage chains,
//! `from_record` hand-overs and pipelines, with signature status and gate
//! verdicts; the index (`DIR/.lineage-index.json`) is refreshed incrementally.
//! Real runs for a diamond-shaped and a deep pipeline; 10,000 generated records
//! (signed with a test key) for scale, with the time reported.
//!
//! Every test works in its own temporary folder; no network.

mod monitor;

use std::path::Path;

use monitor::{file_sha, input_digest, pipeline, rec, revoked, stage, trust_with};
use sealrun_integration::{ok, sealrun, verify, write_tree, RunFixture};

/// `sealrun-verify lineage --records records --trust TRUST ARGS... --format json`, parsed.
#[track_caller]
fn lineage_json(dir: &Path, trust: &str, args: &[&str]) -> serde_json::Value {
    let mut all = vec![
        "lineage",
        "--records",
        "records",
        "--trust",
        trust,
        "--format",
        "json",
    ];
    all.extend_from_slice(args);
    let out = verify(dir, &all);
    let t = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{t}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(&t).expect("one JSON object");
    v["lineage"].clone()
}

/// (job, final_output) of every non-pipeline run, sorted.
fn jobs(l: &serde_json::Value) -> Vec<(String, bool)> {
    let mut v: Vec<(String, bool)> = l["runs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["pipeline"] == false)
        .map(|r| {
            (
                r["job"].as_str().unwrap().to_string(),
                r["final_output"].as_bool().unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

fn run_of<'a>(l: &'a serde_json::Value, job: &str) -> &'a serde_json::Value {
    l["runs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["job"] == job)
        .expect(job)
}

#[test]
fn diamond_every_run_the_final_model_and_the_gate_after_revocation() {
    let f = RunFixture::new();
    let d = f.dir();
    // a <- data; b <- a; c <- a; m <- b + c (the model).
    let stages = [
        stage(d, "a", "dataset", &[]),
        stage(d, "b", "dataset", &["a"]),
        stage(d, "c", "dataset", &["a"]),
        stage(d, "m", "model", &["b", "c"]),
    ];
    let p = pipeline(d, "diamond", &stages, "");
    ok(sealrun(d, &["run", &p, "--quiet"]));
    // An unrelated run from another dataset is not downstream.
    write_tree(d, &[("other/rows.csv", b"1\n")]);
    ok(sealrun(
        d,
        &[
            "sign",
            "other",
            "--key",
            "reg.key",
            "--kind",
            "dataset",
            "--label",
            "classification=internal",
        ],
    ));
    let solo = "name = \"solo\"\ncommand = [\"python3\", \"/code/run.py\"]\ncode = \"code-a\"\noutput = \"out-solo\"\ntrust = \"trust.toml\"\nsigning_key = \"launcher.key\"\n[[input]]\nname = \"raw\"\npath = \"other\"\nsignature = \"other.sig\"\n[sandbox]\nprofile = \"python\"\nmemory = \"512M\"\ntimeout = \"60s\"\n";
    std::fs::write(d.join("solo.toml"), solo).unwrap();
    ok(sealrun(d, &["run", "solo.toml", "--quiet"]));

    let root = input_digest(&f, &rec(&f, "a"), "raw");
    let l = lineage_json(d, "trust.toml", &["--artifact", &format!("sha256:{root}")]);
    let want = |v: &[(&str, bool)]| {
        v.iter()
            .map(|(j, f)| (j.to_string(), *f))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        jobs(&l),
        want(&[("a", false), ("b", false), ("c", false), ("m", true)]),
        "{l:#}"
    );
    let pipes: Vec<_> = l["runs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["pipeline"] == true)
        .collect();
    assert_eq!(pipes.len(), 1, "the pipeline summary is downstream too");
    let m = run_of(&l, "m");
    assert_eq!(m["depth"], 3);
    assert_eq!(m["signature"], "verified");
    assert_eq!(m["gate"], "not evaluated");
    let via: Vec<&str> = m["via"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        via.contains(&"input \"b\"") && via.contains(&"input \"c\""),
        "both arms: {via:?}"
    );
    let path = m["path"].as_array().unwrap();
    assert!(
        path[0].as_str().unwrap().starts_with("artifact sha256:"),
        "{path:?}"
    );
    assert!(
        path[1].as_str().unwrap().starts_with("stage \"a\""),
        "{path:?}"
    );
    assert_eq!(m["record"], rec(&f, "m").trim_start_matches("records/"));

    // From one arm's record: that arm and the model only.
    let b = rec(&f, "b");
    let l = lineage_json(d, "trust.toml", &["--record", &b]);
    assert_eq!(jobs(&l), want(&[("b", false), ("m", true)]), "{l:#}");
    let l2 = lineage_json(
        d,
        "trust.toml",
        &["--record", &format!("sha256:{}", file_sha(&f, &b))],
    );
    assert_eq!(jobs(&l2), jobs(&l));

    // From the registry key: everything read from its datasets, solo included.
    let l = lineage_json(d, "trust.toml", &["--key", "registry"]);
    assert_eq!(
        jobs(&l),
        want(&[
            ("a", false),
            ("b", false),
            ("c", false),
            ("m", true),
            ("solo", true)
        ]),
        "{l:#}"
    );

    // The gate: passes now; after revoking the dataset it fails the model, and
    // the records show as revoked.
    std::fs::write(d.join("gate.toml"), "trust = \"trust.toml\"\n").unwrap();
    let l = lineage_json(
        d,
        "trust.toml",
        &[
            "--artifact",
            &format!("sha256:{root}"),
            "--gate",
            "gate.toml",
        ],
    );
    assert_eq!(run_of(&l, "m")["gate"], "pass", "{l:#}");
    trust_with(
        &f,
        "trust-rev.toml",
        &revoked(&format!("artifact = \"sha256:{root}\""), "poisoned"),
    );
    std::fs::write(d.join("gate-rev.toml"), "trust = \"trust-rev.toml\"\n").unwrap();
    let l = lineage_json(
        d,
        "trust-rev.toml",
        &[
            "--artifact",
            &format!("sha256:{root}"),
            "--gate",
            "gate-rev.toml",
        ],
    );
    let g = run_of(&l, "m")["gate"].as_str().unwrap();
    assert!(
        g.starts_with("fail: ") && g.contains("is revoked") && g.contains("poisoned"),
        "{g}"
    );
    // (Records signed by the launcher stay genuine; what they read is revoked.)
    assert_eq!(run_of(&l, "a")["signature"], "verified");

    // Text and dot name the model and its gate verdict.
    let t = ok(verify(
        d,
        &[
            "lineage",
            "--records",
            "records",
            "--trust",
            "trust-rev.toml",
            "--artifact",
            &format!("sha256:{root}"),
            "--gate",
            "gate-rev.toml",
        ],
    ));
    assert!(
        t.contains("4 run(s), 1 pipeline(s), 1 final output(s)"),
        "{t}"
    );
    assert!(t.contains("final outputs:\n  model \"m\""), "{t}");
    let dot = ok(verify(
        d,
        &[
            "lineage",
            "--records",
            "records",
            "--trust",
            "trust.toml",
            "--artifact",
            &format!("sha256:{root}"),
            "--format",
            "dot",
        ],
    ));
    assert!(
        dot.contains("digraph lineage")
            && dot.contains("doubleoctagon")
            && dot.contains("label=\"b\""),
        "{dot}"
    );
}

#[test]
fn deep_pipeline_and_a_from_record_hand_over_with_an_incremental_index() {
    let f = RunFixture::new();
    let d = f.dir();
    let names = ["s1", "s2", "s3", "s4", "s5", "s6"];
    let mut stages = vec![stage(d, "s1", "dataset", &[])];
    for w in names.windows(2) {
        stages.push(stage(d, w[1], "dataset", &[w[0]]));
    }
    let p = pipeline(d, "deep", &stages, "");
    ok(sealrun(d, &["run", &p, "--quiet"]));
    let root = input_digest(&f, &rec(&f, "s1"), "raw");
    let art = format!("sha256:{root}");
    let first = verify(
        d,
        &[
            "lineage",
            "--records",
            "records",
            "--trust",
            "trust.toml",
            "--artifact",
            &art,
        ],
    );
    let err = String::from_utf8_lossy(&first.stderr).into_owned();
    assert!(err.contains("0 file(s) reused"), "{err}");
    assert!(d.join("records/.lineage-index.json").is_file());
    let l = lineage_json(d, "trust.toml", &["--artifact", &art]);
    assert_eq!(run_of(&l, "s6")["depth"], 6);
    assert_eq!(run_of(&l, "s6")["final_output"], true);

    // A later job takes s6's outputs over by from_record: now it is the final output.
    let hand = format!(
        "name = \"later\"\ncommand = [\"python3\", \"/code/run.py\"]\ncode = \"code-s1\"\noutput = \"out-later\"\ntrust = \"trust.toml\"\nsigning_key = \"launcher.key\"\nproduces = \"model\"\n[[input]]\nname = \"s6\"\npath = \"out-s6\"\nfrom_record = {:?}\n[sandbox]\nprofile = \"python\"\nmemory = \"512M\"\ntimeout = \"60s\"\n",
        rec(&f, "s6")
    );
    std::fs::write(d.join("later.toml"), hand).unwrap();
    ok(sealrun(d, &["run", "later.toml", "--quiet"]));
    let out = verify(
        d,
        &[
            "lineage",
            "--records",
            "records",
            "--trust",
            "trust.toml",
            "--artifact",
            &art,
            "--format",
            "json",
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    // Only the new files were read: the later record and its copy of s6's record.
    assert!(
        err.contains(" read, 0 removed") && !err.contains(" 0 read"),
        "{err}"
    );
    let l: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let l = &l["lineage"];
    let later = run_of(l, "later");
    assert_eq!(later["depth"], 7, "{later}");
    assert_eq!(later["final_output"], true);
    assert_eq!(later["produces"], "model");
    assert_eq!(run_of(l, "s6")["final_output"], false);
    assert_eq!(
        run_of(l, "s6")["record"],
        rec(&f, "s6").trim_start_matches("records/"),
        "the original, not the copy"
    );

    // A removed file leaves the index; a planted unsigned copy shows as not verified.
    let s3 = rec(&f, "s3");
    let bytes = std::fs::read(d.join(&s3)).unwrap();
    let mut env: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    // 64 zero bytes: well-formed, but not a signature of this payload.
    env["signatures"][0]["sig"] = format!("{}==", "A".repeat(86)).into();
    let forged = serde_json::to_vec_pretty(&env).unwrap();
    std::fs::remove_file(d.join(&s3)).unwrap();
    std::fs::write(d.join(&s3), forged).unwrap();
    let l = lineage_json(d, "trust.toml", &["--artifact", &art]);
    // The index was refreshed: the forged file is read and listed as a run that
    // does not verify; the genuine record (s4 names it by digest, and keeps a
    // copy in artifacts/) is still there and verified.
    let s3: Vec<&str> = l["runs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["job"] == "s3")
        .map(|r| r["signature"].as_str().unwrap())
        .collect();
    assert_eq!(s3.len(), 2, "{s3:?}");
    assert!(s3.contains(&"verified"), "{s3:?}");
    assert!(
        s3.iter().any(|s| s.starts_with("FAILED (bad_signature)")),
        "{s3:?}"
    );
    let rebuilt = verify(
        d,
        &[
            "lineage",
            "--records",
            "records",
            "--trust",
            "trust.toml",
            "--artifact",
            &art,
            "--rebuild-index",
        ],
    );
    assert!(String::from_utf8_lossy(&rebuilt.stderr).contains("0 file(s) reused"));
}

#[test]
fn ten_thousand_generated_records_answer_fast() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("records");
    let t = std::time::Instant::now();
    let g = monitor::generate::generate(&dir, 10_000, 100);
    eprintln!(
        "generated {} records in {:.2}s",
        g.records,
        t.elapsed().as_secs_f64()
    );
    let art = format!("sha256:{}", g.roots[7]);
    let query = || {
        let t = std::time::Instant::now();
        let l = lineage_json(tmp.path(), "trust.toml", &["--artifact", &art]);
        (l, t.elapsed().as_secs_f64())
    };
    let (l, cold) = query();
    let (l2, warm) = query();
    eprintln!("lineage over 10,000 records: cold (index built) {cold:.3}s, warm (index reused) {warm:.3}s (debug build; see benches/lineage.sh for release)");
    let runs = l["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 100, "one tree of 100");
    assert_eq!(
        runs.iter().filter(|r| r["final_output"] == true).count(),
        50
    );
    assert!(runs.iter().all(|r| r["signature"] == "verified"));
    assert_eq!(l2["refresh"]["read"], 0);
    assert_eq!(l2["refresh"]["reused"], 10_100);
    // Generous: a debug build on a busy machine.
    assert!(warm < 20.0, "warm query took {warm:.3}s");
}
