//! Multi-stage pipelines and chains of custody, end to end with the real binaries
//! (issue 6): `sealrun run PIPELINE.toml`, inputs `from_stage` / `from_record`,
//! label propagation and admission, trust-policy `[[stage]]` rules, and
//! `sealrun-verify chain | aibom | gate`.
//!
//! A cycle in the chain cannot be built from real runs (links are by content
//! digest); it is covered by the unit test `cycle_is_detected_with_the_path` in
//! `verifier/src/chain.rs` and not duplicated here.
//!
//! Every test works in its own temporary folder; the only network use is one
//! connection attempt to 127.0.0.1 from inside the sandbox (which must fail).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sealrun_integration::{
    audit_entries, byproduct, ensure_python_module, envelope_statement, fails_with, ok, run,
    sealrun, sha256_hex, text, verify, write_tree, RunFixture, RUN_TRUST,
};

// ---- Stage scripts (run by /usr/bin/python3 inside the sandbox) ----

/// ingest: drop the header of /inputs/raw/points.csv -> /out/clean.csv.
const INGEST: &str = r#"rows = open("/inputs/raw/points.csv").read().split()
open("/out/clean.csv", "w").write("\n".join(rows[1:]) + "\n")
print("ingest: %d rows" % (len(rows) - 1))
"#;

/// features: x, y -> x, y, x*y in /out/features.csv, plus /out/stats.json.
const FEATURES: &str = r#"import json
rows = [l.split(",") for l in open("/inputs/points/clean.csv").read().split()]
feats = [(float(x), float(y), float(x) * float(y)) for x, y in rows]
open("/out/features.csv", "w").write("\n".join(",".join(str(v) for v in r) for r in feats) + "\n")
open("/out/stats.json", "w").write(json.dumps({"rows": len(feats)}))
print("features: %d rows" % len(feats))
"#;

/// features, after attempting a TCP connection to 127.0.0.1:9 (refused by the
/// sandbox, which has no network; the error is caught so the stage succeeds).
const FEATURES_EGRESS: &str = r#"import socket
try:
    socket.create_connection(("127.0.0.1", 9), timeout=3)
    print("CONNECTED")
except OSError as e:
    print("egress blocked:", e)
"#;

/// train: the mean of the product column -> /out/model.json.
const TRAIN: &str = r#"import json
rows = [l.split(",") for l in open("/inputs/feat/features.csv").read().split()]
w = sum(float(r[2]) for r in rows) / len(rows)
open("/out/model.json", "w").write(json.dumps({"w": w}))
print("train: w=%s" % w)
"#;

const SANDBOX: &str =
    "[stage.sandbox]\nprofile = \"python\"\nmemory = \"512M\"\ntimeout = \"60s\"\n";

// ---- Pipeline fixture ----

/// One pipeline file: ingest (signed dataset) -> features -> train, each knob
/// overridable. Outputs are `p{tag}-ingest`, `p{tag}-feat`, `p{tag}-train`.
struct Pipe {
    name: String,
    tag: String,
    /// Pipeline-level `records` (None: the default `records/`).
    records: Option<String>,
    data: String,
    sig: String,
    /// 2: ingest + features only; 3: all three.
    stages: usize,
    ingest_extra: String,
    feat_extra: String,
    feat_script: String,
    feat_produces: String,
    /// Replaces features' `output` (default `p{tag}-feat`).
    feat_output: Option<String>,
    train_extra: String,
    /// The stage train consumes, and the kind it declares.
    train_from: (String, String),
}

impl Pipe {
    fn new(name: &str) -> Pipe {
        Pipe {
            name: name.into(),
            tag: String::new(),
            records: None,
            data: "data".into(),
            sig: "data.sig".into(),
            stages: 3,
            ingest_extra: String::new(),
            feat_extra: String::new(),
            feat_script: FEATURES.into(),
            feat_produces: "features".into(),
            feat_output: None,
            train_extra: String::new(),
            train_from: ("features".into(), "features".into()),
        }
    }

    fn out(&self, stage: &str) -> String {
        format!("p{}-{stage}", self.tag)
    }

    /// Write code folders and `NAME.toml`; returns the spec's file name.
    #[allow(clippy::too_many_arguments)]
    fn stage(
        &self,
        dir: &Path,
        name: &str,
        script: &str,
        output: &str,
        produces: &str,
        extra: &str,
        input: &str,
    ) -> String {
        let code = format!("code-{output}").replace('/', "_");
        write_tree(dir, &[(&format!("{code}/run.py"), script.as_bytes())]);
        format!(
            "[[stage]]\nname = {name:?}\ncommand = [\"python3\", \"/code/run.py\"]\ncode = {code:?}\noutput = {output:?}\nproduces = {produces:?}\n{extra}\n{input}{SANDBOX}\n"
        )
    }

    fn write(&self, dir: &Path) -> String {
        let mut t = format!(
            "name = {:?}\ntrust = \"trust.toml\"\nsigning_key = \"launcher.key\"\n",
            self.name
        );
        if let Some(r) = &self.records {
            t.push_str(&format!("records = {r:?}\n"));
        }
        t.push('\n');
        t.push_str(&self.stage(
            dir,
            "ingest",
            INGEST,
            &self.out("ingest"),
            "dataset",
            &self.ingest_extra,
            &format!(
                "[[stage.input]]\nname = \"raw\"\npath = {:?}\nsignature = {:?}\n",
                self.data, self.sig
            ),
        ));
        let feat_out = self.feat_output.clone().unwrap_or(self.out("feat"));
        t.push_str(&self.stage(
            dir,
            "features",
            &self.feat_script,
            &feat_out,
            &self.feat_produces,
            &self.feat_extra,
            "[[stage.input]]\nname = \"points\"\nfrom_stage = \"ingest\"\nkind = \"dataset\"\n",
        ));
        if self.stages >= 3 {
            t.push_str(&self.stage(
                dir,
                "train",
                TRAIN,
                &self.out("train"),
                "model",
                &self.train_extra,
                &format!(
                    "[[stage.input]]\nname = \"feat\"\nfrom_stage = {:?}\nkind = {:?}\n",
                    self.train_from.0, self.train_from.1
                ),
            ));
        }
        let file = format!("{}.toml", self.name);
        std::fs::write(dir.join(&file), t).expect("write pipeline");
        file
    }

    /// Write and `sealrun run --quiet` it.
    fn run(&self, f: &RunFixture) -> Output {
        let file = self.write(f.dir());
        sealrun(f.dir(), &["run", &file, "--quiet"])
    }
}

/// The `*.json` records of job/pipeline `name` directly in `dir/records`.
fn records_of(dir: &Path, records: &str, name: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir.join(records))
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    let f = p.file_name().unwrap_or_default().to_string_lossy();
                    f.strip_prefix(&format!("{name}-")).is_some_and(|rest| {
                        rest.ends_with(".json")
                            && rest.len() >= 12
                            && rest[..12].chars().all(|c| c.is_ascii_hexdigit())
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// The one record of `name` in `dir/records`, relative to `dir` (for CLI args).
#[track_caller]
fn rec(dir: &Path, records: &str, name: &str) -> String {
    let r = records_of(dir, records, name);
    assert_eq!(r.len(), 1, "expected one record of {name}, found {r:?}");
    format!("{records}/{}", r[0].file_name().unwrap().to_string_lossy())
}

/// `sealrun-verify chain RECORD --records RECORDS --trust TRUST [--format F]`.
fn chain(dir: &Path, record: &str, records: &str, trust: &str, format: Option<&str>) -> Output {
    let mut args = vec!["chain", record, "--records", records, "--trust", trust];
    if let Some(fm) = format {
        args.extend(["--format", fm]);
    }
    verify(dir, &args)
}

/// The annotations of the `artifact` byproduct of a record (kind, labels, outputs_digest).
fn artifact(path: &Path) -> serde_json::Value {
    byproduct(&envelope_statement(path), "artifact")["annotations"].clone()
}

/// Like [`artifact`], `None` for a record without one (a refused run).
fn try_artifact(path: &Path) -> Option<serde_json::Value> {
    let st = envelope_statement(path);
    st["predicate"]["runDetails"]["byproducts"]
        .as_array()?
        .iter()
        .find(|b| b["name"] == "artifact")
        .map(|b| b["annotations"].clone())
}

/// Write a one-job spec `NAME.toml` running `script` with `input` (an
/// `[[input]]` table) and extra top-level lines; returns the file name.
fn job(dir: &Path, name: &str, script: &str, extra: &str, input: &str) -> String {
    write_tree(dir, &[(&format!("code-{name}/run.py"), script.as_bytes())]);
    let spec = format!(
        "name = {name:?}\ncommand = [\"python3\", \"/code/run.py\"]\ncode = \"code-{name}\"\noutput = \"{name}-out\"\ntrust = \"trust.toml\"\n{extra}\n{input}[sandbox]\nprofile = \"python\"\nmemory = \"512M\"\ntimeout = \"60s\"\n"
    );
    let file = format!("{name}.toml");
    std::fs::write(dir.join(&file), spec).expect("write job");
    file
}

/// An `[[input]]` table consuming `path` as produced by the run in `record`.
fn from_record(name: &str, path: &str, record: &str, kind: &str) -> String {
    format!(
        "[[input]]\nname = {name:?}\npath = {path:?}\nfrom_record = {record:?}\nkind = {kind:?}\n"
    )
}

/// A consumer that just lists what it got.
const CONSUME: &str =
    "import os\nprint(sorted(os.listdir('/inputs')))\nopen('/out/ok', 'w').write('ok')\n";

/// Sign `dir/name` (a folder) as a dataset with `labels`, into `sig`.
fn sign_dataset(f: &RunFixture, name: &str, files: &[(&str, &[u8])], labels: &[&str], sig: &str) {
    let d = f.dir();
    let rel: Vec<(String, &[u8])> = files
        .iter()
        .map(|(p, b)| (format!("{name}/{p}"), *b))
        .collect();
    let rel: Vec<(&str, &[u8])> = rel.iter().map(|(p, b)| (p.as_str(), *b)).collect();
    write_tree(d, &rel);
    let mut args = vec![
        "sign", name, "--key", "reg.key", "--kind", "dataset", "--out", sig,
    ];
    for l in labels {
        args.extend(["--label", l]);
    }
    ok(sealrun(d, &args));
}

/// The `sealrun: pipeline "P": stage I/N "S"` lines of `sealrun run` output.
fn ran_stages(out: &str) -> Vec<&str> {
    out.lines()
        .filter(|l| l.starts_with("sealrun: pipeline ") && l.contains(": stage "))
        .collect()
}

// ---- 1. the three-stage pipeline end to end ----

#[test]
fn three_stage_pipeline_end_to_end_and_its_chain() {
    let f = RunFixture::new();
    let d = f.dir();
    let t = ok(Pipe::new("demo-pipe").run(&f));
    assert!(t.contains("pipeline succeeded: 3 stage(s)"), "{t}");
    assert_eq!(ran_stages(&t).len(), 3, "{t}");

    let ingest = rec(d, "records", "ingest");
    let features = rec(d, "records", "features");
    let train = rec(d, "records", "train");
    let summary = rec(d, "records", "demo-pipe");
    assert!(summary.ends_with(".pipeline.json"), "{summary}");
    assert!(d.join("p-train/model.json").is_file());

    // The summary binds the three stage records by digest, in order.
    let st = envelope_statement(&d.join(&summary));
    let subjects = st["subject"].as_array().expect("subjects");
    assert_eq!(subjects.len(), 3, "{st:#}");
    for (s, r) in subjects.iter().zip([&ingest, &features, &train]) {
        let bytes = std::fs::read(d.join(r)).unwrap();
        assert_eq!(
            s["name"],
            Path::new(r).file_name().unwrap().to_str().unwrap()
        );
        assert_eq!(s["digest"]["sha256"], sha256_hex(&bytes), "{r}");
    }
    // Each stage's artifact: its kind, and the dataset's label propagated.
    for (r, kind) in [
        (&ingest, "dataset"),
        (&features, "features"),
        (&train, "model"),
    ] {
        let a = artifact(&d.join(r));
        assert_eq!(a["kind"], kind, "{r}: {a}");
        assert_eq!(a["labels"]["classification"], "internal", "{r}: {a}");
    }
    // The dataset's signature and each producer record are kept by digest.
    let sig_sha = sha256_hex(&std::fs::read(d.join("data.sig")).unwrap());
    assert!(d
        .join(format!("records/artifacts/{sig_sha}.json"))
        .is_file());
    for r in [&ingest, &features] {
        let sha = sha256_hex(&std::fs::read(d.join(r)).unwrap());
        assert!(
            d.join(format!("records/artifacts/{sha}.json")).is_file(),
            "{r}"
        );
    }

    // chain, text: the model first, then features, ingest, and the dataset.
    let txt = ok(chain(d, &train, "records", "trust.toml", None));
    assert!(
        txt.contains("OK chain of custody verified (4 nodes, 3 links)"),
        "{txt}"
    );
    let at = |needle: &str| {
        txt.find(needle)
            .unwrap_or_else(|| panic!("chain text lacks {needle:?}:\n{txt}"))
    };
    let (m, fe, ing, ds) = (
        at("stage \"train\""),
        at("input \"feat\" <- stage \"features\""),
        at("input \"points\" <- stage \"ingest\""),
        at("input \"raw\" <- dataset \"data\""),
    );
    assert!(m < fe && fe < ing && ing < ds, "order:\n{txt}");
    assert!(txt.contains("-> model"), "{txt}");
    assert!(txt.contains("-> features"), "{txt}");
    assert!(txt.contains("signed by \"registry\""), "{txt}");
    assert!(txt.contains("classification=internal"), "{txt}");
    assert!(txt.contains("output model.json sha256:"), "{txt}");

    // The summary's chain covers every stage once, plus the dataset.
    let txt = ok(chain(d, &summary, "records", "trust.toml", None));
    assert!(
        txt.contains("OK chain of custody verified (5 nodes, 6 links)"),
        "{txt}"
    );
    for s in [
        "stage \"demo-pipe\"",
        "stage \"train\"",
        "stage \"features\"",
        "stage \"ingest\"",
        "dataset \"data\"",
    ] {
        assert!(txt.contains(s), "{s}:\n{txt}");
    }
    assert!(
        txt.contains("(shown above)"),
        "shared stages are walked once:\n{txt}"
    );

    // dot: a digraph with the dataset as a cylinder and three edges.
    let dot = ok(chain(d, &train, "records", "trust.toml", Some("dot")));
    assert!(dot.starts_with("digraph provenance {"), "{dot}");
    assert!(dot.trim_end().ends_with('}'), "{dot}");
    assert_eq!(dot.matches(" -> \"").count(), 3, "{dot}");
    assert_eq!(dot.matches("shape=cylinder").count(), 1, "{dot}");
    assert_eq!(dot.matches("shape=box").count(), 3, "{dot}");
    for label in ["label=\"raw\"", "label=\"points\"", "label=\"feat\""] {
        assert!(dot.contains(label), "{label}:\n{dot}");
    }

    // json: nodes and edges, linked by id.
    let out = chain(d, &train, "records", "trust.toml", Some("json"));
    let js: serde_json::Value = serde_json::from_slice(&out.stdout).expect("chain --format json");
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(js["ok"], true);
    let g = &js["graph"];
    let nodes = g["nodes"].as_array().unwrap();
    let edges = g["edges"].as_array().unwrap();
    assert_eq!(nodes.len(), 4, "{g:#}");
    assert_eq!(edges.len(), 3, "{g:#}");
    let train_sha = sha256_hex(&std::fs::read(d.join(&train)).unwrap());
    assert_eq!(g["root"], train_sha.as_str());
    let node = |id: &serde_json::Value| {
        nodes
            .iter()
            .find(|n| n["id"] == *id)
            .unwrap_or_else(|| panic!("edge to unknown node {id}: {g:#}"))
    };
    let mut links: Vec<(String, String, String)> = edges
        .iter()
        .map(|e| {
            let name = |n: &serde_json::Value| {
                n["job"]
                    .as_str()
                    .or(n["name"].as_str())
                    .unwrap()
                    .to_string()
            };
            (
                name(node(&e["from"])),
                e["input"].as_str().unwrap().to_string(),
                name(node(&e["to"])),
            )
        })
        .collect();
    links.sort();
    let s = |a: &str, b: &str, c: &str| (a.to_string(), b.to_string(), c.to_string());
    assert_eq!(
        links,
        vec![
            s("data", "raw", "ingest"),
            s("features", "feat", "train"),
            s("ingest", "points", "features"),
        ]
    );
    let ds = nodes.iter().find(|n| n["type"] == "dataset").unwrap();
    assert_eq!(ds["signer"], "registry");
    assert_eq!(ds["labels"]["classification"], "internal");

    // The audit log verifies and has start+end per stage and the pipeline entry.
    let lg = ok(f.verify_log(false));
    assert!(lg.contains("7 entries"), "{lg}");
    let entries = audit_entries(&d.join("audit.log"));
    let events: Vec<(&str, &str)> = entries
        .iter()
        .map(|e| (e["event"].as_str().unwrap(), e["job"].as_str().unwrap()))
        .collect();
    assert_eq!(
        events,
        vec![
            ("start", "ingest"),
            ("end", "ingest"),
            ("start", "features"),
            ("end", "features"),
            ("start", "train"),
            ("end", "train"),
            ("pipeline", "demo-pipe"),
        ],
        "{entries:#?}"
    );
}

// ---- 2. a features file changed between stages ----

#[test]
fn features_file_changed_after_the_stage_is_refused_by_the_consumer() {
    let f = RunFixture::new();
    let d = f.dir();
    let mut p = Pipe::new("two");
    p.stages = 2;
    ok(p.run(&f));
    let features = rec(d, "records", "features");

    // Untouched, a later invocation may consume the outputs by record.
    let good = job(
        d,
        "use-ok",
        CONSUME,
        "signing_key = \"launcher.key\"",
        &from_record("feat", "p-feat", &features, "features"),
    );
    ok(sealrun(d, &["run", &good, "--quiet"]));

    // One byte of one features file changes between the stages.
    let file = d.join("p-feat/features.csv");
    let mut b = std::fs::read(&file).unwrap();
    b[0] ^= 0x01;
    std::fs::write(&file, &b).unwrap();
    let bad = job(
        d,
        "use-bad",
        CONSUME,
        "signing_key = \"launcher.key\"",
        &from_record("feat", "p-feat", &features, "features"),
    );
    let t = fails_with(
        sealrun(d, &["run", &bad, "--quiet"]),
        65,
        &[
            "refused",
            "input \"feat\"",
            "features.csv",
            "digest mismatch",
            "nothing ran",
        ],
    );
    assert!(
        t.contains(features.as_str()),
        "names the producer record:\n{t}"
    );
    assert!(!d.join("use-bad-out/ok").exists(), "the job must not run");
    // The refusal is recorded.
    let r = d.join(rec(d, "records", "use-bad"));
    let end = byproduct(&envelope_statement(&r), "end")["annotations"].clone();
    assert!(
        end["result"].as_str().unwrap().contains("digest mismatch"),
        "{end}"
    );

    // An extra file is a change too.
    b[0] ^= 0x01;
    std::fs::write(&file, &b).unwrap();
    std::fs::write(d.join("p-feat/extra.csv"), "1,2,3\n").unwrap();
    let extra = job(
        d,
        "use-extra",
        CONSUME,
        "signing_key = \"launcher.key\"",
        &from_record("feat", "p-feat", &features, "features"),
    );
    fails_with(
        sealrun(d, &["run", &extra, "--quiet"]),
        65,
        &["refused", "extra.csv"],
    );
}

#[test]
fn stage_output_inside_an_earlier_stage_output_is_refused_up_front() {
    // A stage writing INSIDE an earlier stage's output folder would change what
    // that stage's record attests; the spec is refused before anything runs.
    let f = RunFixture::new();
    let d = f.dir();
    let mut p = Pipe::new("nested");
    p.feat_output = Some("p-ingest/sub".into());
    p.train_from = ("ingest".into(), "dataset".into());
    let out = p.run(&f);
    fails_with(
        out,
        64,
        &[
            "stage[1].output",
            "p-ingest/sub overlaps",
            "give the job a folder of its own",
        ],
    );
    assert!(!d.join("p-ingest").exists(), "nothing may run");
}

// ---- 3. a record swapped for another valid one ----

#[test]
fn record_swapped_for_another_valid_one_is_refused() {
    let f = RunFixture::new();
    let d = f.dir();
    // Two runs of ingest -> features on different signed datasets.
    sign_dataset(
        &f,
        "data-b",
        &[("points.csv", b"x,y\n5,6\n7,8\n9,10\n")],
        &["classification=internal"],
        "data-b.sig",
    );
    let mut a = Pipe::new("run-a");
    a.stages = 2;
    a.tag = "a".into();
    a.records = Some("records-a".into());
    ok(a.run(&f));
    let mut b = Pipe::new("run-b");
    b.stages = 2;
    b.tag = "b".into();
    b.records = Some("records-b".into());
    b.data = "data-b".into();
    b.sig = "data-b.sig".into();
    ok(b.run(&f));
    let rec_a = rec(d, "records-a", "features");
    let rec_b = rec(d, "records-b", "features");

    // Outputs of run A presented with the (valid) record of run B.
    let spec = job(
        d,
        "swap",
        CONSUME,
        "signing_key = \"launcher.key\"",
        &from_record("feat", "pa-feat", &rec_b, "features"),
    );
    let t = fails_with(
        sealrun(d, &["run", &spec, "--quiet"]),
        65,
        &[
            "refused",
            "input \"feat\"",
            "digest mismatch",
            rec_b.as_str(),
        ],
    );
    assert!(!d.join("swap-out/ok").exists(), "{t}");
    // Run A's own record is accepted for them.
    let spec = job(
        d,
        "noswap",
        CONSUME,
        "signing_key = \"launcher.key\"",
        &from_record("feat", "pa-feat", &rec_a, "features"),
    );
    ok(sealrun(d, &["run", &spec, "--quiet"]));

    // Offline: in run A's records folder, every copy of ingest's record (the
    // stage record and its copy in artifacts/) is replaced by run B's: the
    // digest features' record links to is no longer there.
    let ing_a = rec(d, "records-a", "ingest");
    let ing_b = rec(d, "records-b", "ingest");
    let a_bytes = std::fs::read(d.join(&ing_a)).unwrap();
    let b_bytes = std::fs::read(d.join(&ing_b)).unwrap();
    let a_sha = sha256_hex(&a_bytes);
    ok(chain(d, &rec_a, "records-a", "trust.toml", None));
    std::fs::write(d.join(&ing_a), &b_bytes).unwrap();
    std::fs::write(
        d.join(format!("records-a/artifacts/{a_sha}.json")),
        &b_bytes,
    )
    .unwrap();
    // Run B's record itself is still valid.
    ok(verify(d, &["record", &ing_a, "--trust", "trust.toml"]));
    let t = fails_with(
        chain(d, &rec_a, "records-a", "trust.toml", None),
        1,
        &[
            "FAILED (missing_link)",
            "input \"points\"",
            "producer record",
            &a_sha,
        ],
    );
    assert!(
        t.contains("stage \"features\""),
        "the path names the stage:\n{t}"
    );
    // And a new consumer of run A's features is refused too (the chain check).
    let spec = job(
        d,
        "swap2",
        CONSUME,
        "signing_key = \"launcher.key\"",
        &from_record("feat", "pa-feat", &rec_a, "features"),
    );
    fails_with(
        sealrun(d, &["run", &spec, "--quiet"]),
        65,
        &["refused", "input \"feat\"", "input \"points\"", &a_sha],
    );
}

// ---- 4. a record signed by a key trusted only for datasets ----

#[test]
fn record_signed_by_a_dataset_only_key_is_refused() {
    let f = RunFixture::new();
    let d = f.dir();
    // A run whose record is signed with the registry key (trusted for datasets only).
    let rogue = job(
        d,
        "rogue",
        "open('/out/features.csv', 'w').write('1,2,2\\n')\n",
        "signing_key = \"reg.key\"\nrecords = \"records-rogue\"\naudit_log = \"audit-rogue.log\"\nproduces = \"features\"",
        "[[input]]\nname = \"points\"\npath = \"data\"\nsignature = \"data.sig\"\n",
    );
    // sealrun refuses to sign with a key its own policy does not allow for records (a plan
    // error), so the rogue launcher runs under a policy of its own that allows it.
    let trust = d.join("trust.toml");
    std::fs::write(
        &trust,
        RUN_TRUST.replacen(
            "kinds = [\"dataset\"]",
            "kinds = [\"dataset\", \"record\", \"checkpoint\"]",
            1,
        ),
    )
    .unwrap();
    ok(sealrun(d, &["run", &rogue, "--quiet"]));
    std::fs::write(&trust, RUN_TRUST).unwrap();
    let record = rec(d, "records-rogue", "rogue");

    let spec = job(
        d,
        "consume",
        CONSUME,
        "signing_key = \"launcher.key\"",
        &from_record("feat", "rogue-out", &record, "features"),
    );
    let t = fails_with(
        sealrun(d, &["run", &spec, "--quiet"]),
        65,
        &[
            "refused",
            "input \"feat\"",
            "does not allow to sign run records",
        ],
    );
    assert!(
        t.contains(&f.reg_keyid) || t.contains("registry"),
        "names the key:\n{t}"
    );
    assert!(!d.join("consume-out/ok").exists());

    // Offline, the same reason, by its stable name.
    fails_with(
        chain(d, &record, "records-rogue", "trust.toml", None),
        1,
        &[
            "FAILED (kind_not_allowed)",
            "does not allow to sign run records",
        ],
    );
    let out = chain(d, &record, "records-rogue", "trust.toml", Some("json"));
    let js: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(js["reason"], "kind_not_allowed", "{js}");
}

// ---- 5. a missing link ----

#[test]
fn missing_link_names_the_input_and_the_path() {
    let f = RunFixture::new();
    let d = f.dir();
    ok(Pipe::new("demo-pipe").run(&f));
    let train = rec(d, "records", "train");
    ok(chain(d, &train, "records", "trust.toml", None));

    // The dataset signature's copy is gone from the records folder.
    let sig_sha = sha256_hex(&std::fs::read(d.join("data.sig")).unwrap());
    std::fs::remove_file(d.join(format!("records/artifacts/{sig_sha}.json"))).unwrap();
    let t = fails_with(
        chain(d, &train, "records", "trust.toml", None),
        1,
        &[
            "FAILED (missing_link)",
            "input \"raw\"",
            "its signature",
            &sig_sha,
        ],
    );
    // The path through the graph: train <- features <- ingest.
    let (tr, fe, ing) = (
        t.find("stage \"train\"").expect("train in path"),
        t.find("stage \"features\"").expect("features in path"),
        t.find("stage \"ingest\"").expect("ingest in path"),
    );
    assert!(tr < fe && fe < ing, "{t}");
    let js: serde_json::Value =
        serde_json::from_slice(&chain(d, &train, "records", "trust.toml", Some("json")).stdout)
            .unwrap();
    assert_eq!(js["reason"], "missing_link", "{js}");

    // A producer record missing (both the stage record and its copy).
    let ing = rec(d, "records", "ingest");
    let ing_sha = sha256_hex(&std::fs::read(d.join(&ing)).unwrap());
    std::fs::remove_file(d.join(&ing)).unwrap();
    std::fs::remove_file(d.join(format!("records/artifacts/{ing_sha}.json"))).unwrap();
    fails_with(
        chain(d, &train, "records", "trust.toml", None),
        1,
        &[
            "FAILED (missing_link)",
            "input \"points\"",
            "producer record",
            &ing_sha,
        ],
    );
}

// ---- 7. classification labels: propagation and admission ----

fn confidential_pii(f: &RunFixture) {
    sign_dataset(
        f,
        "conf",
        &[("points.csv", b"x,y\n1,2\n3,4\n")],
        &["classification=confidential", "pii=true"],
        "conf.sig",
    );
}

#[test]
fn classification_violation_refuses_the_consuming_stage() {
    let f = RunFixture::new();
    let d = f.dir();
    confidential_pii(&f);
    let mut p = Pipe::new("classified");
    p.data = "conf".into();
    p.sig = "conf.sig".into();
    p.train_extra = "admit = { classification = [\"public\", \"internal\"] }".into();
    let t = fails_with(
        p.run(&f),
        65,
        &[
            "stage \"train\"",
            "refused",
            "input \"feat\"",
            "label classification=confidential",
            "not admitted",
        ],
    );
    assert!(!d.join("p-train/model.json").exists(), "{t}");
    // features inherited the dataset's labels.
    let a = artifact(&d.join(rec(d, "records", "features")));
    assert_eq!(a["labels"]["classification"], "confidential", "{a}");
    assert_eq!(a["labels"]["pii"], "true", "{a}");
    // The refusal is a signed record of its own.
    let r = d.join(rec(d, "records", "train"));
    let end = byproduct(&envelope_statement(&r), "end")["annotations"].clone();
    assert!(
        end["result"]
            .as_str()
            .unwrap()
            .contains("classification=confidential"),
        "{end}"
    );

    // Admitting confidential lets it run; the model is confidential too.
    let mut p = Pipe::new("admitted");
    p.tag = "2".into();
    p.data = "conf".into();
    p.sig = "conf.sig".into();
    p.train_extra = "admit = { classification = [\"internal\", \"confidential\"] }".into();
    ok(p.run(&f));
    let trains = records_of(d, "records", "train");
    assert_eq!(trains.len(), 2, "{trains:?}");
    let model = trains
        .iter()
        .find_map(|r| try_artifact(r))
        .expect("the successful train record has an artifact");
    assert_eq!(model["kind"], "model");
    assert_eq!(model["labels"]["classification"], "confidential");
}

#[test]
fn pii_propagates_unless_the_stage_declassifies_it() {
    let f = RunFixture::new();
    let d = f.dir();
    confidential_pii(&f);
    // Without declassify: features of PII data are PII.
    let mut p = Pipe::new("keep");
    p.stages = 2;
    p.data = "conf".into();
    p.sig = "conf.sig".into();
    p.records = Some("records-keep".into());
    ok(p.run(&f));
    let a = artifact(&d.join(rec(d, "records-keep", "features")));
    assert_eq!(a["labels"]["pii"], "true", "{a}");
    assert_eq!(a["labels"]["classification"], "confidential", "{a}");
    // The chain shows it.
    let txt = ok(chain(
        d,
        &rec(d, "records-keep", "features"),
        "records-keep",
        "trust.toml",
        None,
    ));
    assert!(
        txt.contains("-> features [classification=confidential pii=true]"),
        "{txt}"
    );

    // With `declassify = ["pii"]`: pii=false, classification unchanged.
    let mut p = Pipe::new("strip");
    p.stages = 2;
    p.tag = "s".into();
    p.data = "conf".into();
    p.sig = "conf.sig".into();
    p.records = Some("records-strip".into());
    p.feat_extra = "declassify = [\"pii\"]".into();
    ok(p.run(&f));
    let a = artifact(&d.join(rec(d, "records-strip", "features")));
    assert_eq!(a["labels"]["pii"], "false", "{a}");
    assert_eq!(a["labels"]["classification"], "confidential", "{a}");
    // ingest (no declassify) still carried pii=true.
    let a = artifact(&d.join(rec(d, "records-strip", "ingest")));
    assert_eq!(a["labels"]["pii"], "true", "{a}");
}

// ---- 8. stage policy in the trust policy ----

/// `trust.toml` plus `[[stage]]` entries, written as `file`.
fn stage_trust(f: &RunFixture, file: &str, stages: &str) {
    let base = std::fs::read_to_string(f.dir().join("trust.toml")).unwrap();
    std::fs::write(f.dir().join(file), format!("{base}\n{stages}")).unwrap();
}

/// The code digests of ingest, features and train from a verified chain.
fn code_digests(
    d: &Path,
    record: &str,
    records: &str,
) -> std::collections::BTreeMap<String, String> {
    let out = chain(d, record, records, "trust.toml", Some("json"));
    let js: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    js["graph"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["type"] == "stage")
        .map(|n| {
            (
                n["job"].as_str().unwrap().to_string(),
                n["code"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn with_trust(p: &Pipe, f: &RunFixture, trust: &str) -> String {
    let file = p.write(f.dir());
    let t = std::fs::read_to_string(f.dir().join(&file)).unwrap();
    std::fs::write(
        f.dir().join(&file),
        t.replacen("trust = \"trust.toml\"", &format!("trust = {trust:?}"), 1),
    )
    .unwrap();
    file
}

#[test]
fn stage_policy_restricts_producers_consumers_and_code() {
    let f = RunFixture::new();
    let d = f.dir();
    // A reference run under the plain policy gives the real code digests.
    let mut p = Pipe::new("ref");
    p.records = Some("records-ref".into());
    ok(p.run(&f));
    let train_ref = rec(d, "records-ref", "train");
    let code = code_digests(d, &train_ref, "records-ref");
    assert_eq!(code.len(), 3, "{code:?}");
    let strict = format!(
        "[[stage]]\nname = \"ingest\"\ncode = \"sha256:{}\"\nproduces = [\"dataset\"]\nconsumes = []\n\
         [[stage]]\nname = \"features\"\ncode = {:?}\nproduces = [\"features\"]\nconsumes = [\"ingest\"]\n\
         [[stage]]\nname = \"train\"\ncode = {:?}\nproduces = [\"model\"]\nconsumes = [\"features\"]\n",
        code["ingest"], code["features"], code["train"]
    );
    stage_trust(&f, "trust-strict.toml", &strict);

    // The same pipeline complies: it runs, and its chain verifies under the strict policy.
    ok(chain(
        d,
        &train_ref,
        "records-ref",
        "trust-strict.toml",
        None,
    ));
    let mut p = Pipe::new("good");
    p.tag = "g".into();
    p.records = Some("records-good".into());
    let file = with_trust(&p, &f, "trust-strict.toml");
    ok(sealrun(d, &["run", &file, "--quiet"]));

    // produces: features declares `model` (and train takes a model), the policy says features only.
    let mut p = Pipe::new("produces");
    p.tag = "p".into();
    p.records = Some("records-p".into());
    p.feat_produces = "model".into();
    p.train_from = ("features".into(), "model".into());
    let file = with_trust(&p, &f, "trust-strict.toml");
    fails_with(
        sealrun(d, &["run", &file, "--quiet"]),
        65,
        &[
            // Refused before the producing stage runs, not only when consumed.
            "stage \"features\": refused: stage policy",
            "stage \"features\" may not produce kind model",
        ],
    );
    assert!(!d.join("pp-train/model.json").exists());

    // consumes: train takes ingest's outputs directly; the policy says features only.
    let mut p = Pipe::new("consumes");
    p.tag = "c".into();
    p.records = Some("records-c".into());
    p.train_from = ("ingest".into(), "dataset".into());
    let file = with_trust(&p, &f, "trust-strict.toml");
    fails_with(
        sealrun(d, &["run", &file, "--quiet"]),
        65,
        &[
            "stage \"train\"",
            "refused",
            "stage \"train\" may not consume the outputs of stage \"ingest\"",
        ],
    );

    // code: features runs other code than the policy pins.
    let mut p = Pipe::new("code");
    p.tag = "k".into();
    p.records = Some("records-k".into());
    p.feat_script = format!("{FEATURES}# changed\n");
    let file = with_trust(&p, &f, "trust-strict.toml");
    let t = fails_with(
        sealrun(d, &["run", &file, "--quiet"]),
        65,
        &[
            "stage \"features\": refused: stage policy",
            "stage \"features\" ran code sha256:",
            &format!("but the policy requires sha256:{}", code["features"]),
        ],
    );
    assert!(
        !t.contains(&format!("ran code sha256:{}", code["features"])),
        "{t}"
    );

    // unknown: a policy with [[stage]] entries that do not name a producer.
    stage_trust(&f, "trust-partial.toml", "[[stage]]\nname = \"train\"\n");
    let mut p = Pipe::new("unknown");
    p.tag = "u".into();
    p.records = Some("records-u".into());
    p.stages = 2;
    let file = with_trust(&p, &f, "trust-partial.toml");
    fails_with(
        sealrun(d, &["run", &file, "--quiet"]),
        65,
        &[
            "stage \"ingest\": refused: stage policy",
            "stage \"ingest\" is not listed in the trust policy's [[stage]] entries",
        ],
    );

    // Offline: a chain that ran under the plain policy fails the strict one, with the reason.
    let mut p = Pipe::new("offline");
    p.tag = "o".into();
    p.records = Some("records-o".into());
    p.feat_produces = "model".into();
    p.train_from = ("features".into(), "model".into());
    ok(p.run(&f));
    fails_with(
        chain(
            d,
            &rec(d, "records-o", "train"),
            "records-o",
            "trust-strict.toml",
            None,
        ),
        1,
        &[
            "FAILED (policy)",
            "stage \"features\" may not produce kind model",
        ],
    );
}

#[test]
fn stage_policy_applies_to_the_record_being_verified_itself() {
    // The model's own stage (the top record of the chain) ran code the policy
    // does not pin: `chain` and `gate` on the model's record must not pass.
    let f = RunFixture::new();
    let d = f.dir();
    let mut p = Pipe::new("ref");
    p.records = Some("records-ref".into());
    ok(p.run(&f));
    let code = code_digests(d, &rec(d, "records-ref", "train"), "records-ref");
    let strict = format!(
        "[[stage]]\nname = \"ingest\"\ncode = {:?}\nproduces = [\"dataset\"]\n\
         [[stage]]\nname = \"features\"\ncode = {:?}\nproduces = [\"features\"]\nconsumes = [\"ingest\"]\n\
         [[stage]]\nname = \"train\"\ncode = {:?}\nproduces = [\"model\"]\nconsumes = [\"features\"]\n",
        code["ingest"], code["features"], code["train"]
    );
    stage_trust(&f, "trust-strict.toml", &strict);
    // Same pipeline, but train's code changed.
    let mut p = Pipe::new("other");
    p.tag = "x".into();
    p.records = Some("records-x".into());
    ok(p.run(&f));
    std::fs::write(
        d.join("code-px-train/run.py"),
        format!("{TRAIN}# not the approved code\n"),
    )
    .unwrap();
    std::fs::remove_dir_all(d.join("records-x")).unwrap();
    for o in ["px-ingest", "px-feat", "px-train"] {
        std::fs::remove_dir_all(d.join(o)).unwrap();
    }
    ok(sealrun(d, &["run", "other.toml", "--quiet"]));
    let train = rec(d, "records-x", "train");
    // Through the summary record (train is a producer there) it is caught ...
    fails_with(
        chain(
            d,
            &rec(d, "records-x", "other"),
            "records-x",
            "trust-strict.toml",
            None,
        ),
        1,
        &["FAILED (policy)", "stage \"train\" ran code sha256:"],
    );
    // ... and on the model's own record it must be too, and the gate must refuse it.
    fails_with(
        chain(d, &train, "records-x", "trust-strict.toml", None),
        1,
        &["FAILED (policy)", "stage \"train\" ran code sha256:"],
    );
    std::fs::write(
        d.join("gate-strict.toml"),
        "trust = \"trust-strict.toml\"\n",
    )
    .unwrap();
    fails_with(
        verify(
            d,
            &[
                "gate",
                &train,
                "--policy",
                "gate-strict.toml",
                "--records",
                "records-x",
            ],
        ),
        1,
        &["stage \"train\" ran code sha256:"],
    );
}

#[test]
fn a_failing_stage_stops_the_pipeline() {
    let f = RunFixture::new();
    let d = f.dir();
    let mut p = Pipe::new("stops");
    p.feat_script = "import sys\nprint('bad features')\nsys.exit(3)\n".into();
    let t = fails_with(p.run(&f), 3, &["stage \"features\"", "failed: exited 3"]);
    assert_eq!(ran_stages(&t).len(), 2, "train never starts:\n{t}");
    assert!(records_of(d, "records", "train").is_empty());
    let summary = d.join(rec(d, "records", "stops"));
    let st = envelope_statement(&summary);
    assert_eq!(st["subject"].as_array().unwrap().len(), 2, "{st:#}");
    let end = byproduct(&st, "end")["annotations"].clone();
    assert_eq!(
        end["result"], "failed: stage \"features\": failed: exited 3; 0 output file(s)",
        "{end}"
    );
}

// ---- 9. the release gate ----

const GATE: &str =
    "trust = \"trust.toml\"\napproved_profiles = [\"python\"]\nmax_classification = \"internal\"\n";

#[test]
fn gate_refuses_a_chain_with_an_egress_attempt_and_passes_a_clean_one() {
    let f = RunFixture::new();
    let d = f.dir();
    std::fs::write(d.join("gate.toml"), GATE).unwrap();

    // Clean: passes, every run of the chain checked.
    let mut clean = Pipe::new("clean");
    clean.records = Some("records-clean".into());
    ok(clean.run(&f));
    let train = rec(d, "records-clean", "train");
    let t = ok(verify(
        d,
        &[
            "gate",
            &train,
            "--policy",
            "gate.toml",
            "--records",
            "records-clean",
        ],
    ));
    assert!(t.contains("PASS gate gate.toml: 3 run(s) checked"), "{t}");
    let summary = rec(d, "records-clean", "clean");
    let t = ok(verify(
        d,
        &[
            "gate",
            &summary,
            "--policy",
            "gate.toml",
            "--records",
            "records-clean",
        ],
    ));
    assert!(t.contains("4 run(s) checked"), "{t}");

    // An unapproved profile: every stage fails `approved_profile`.
    std::fs::write(
        d.join("gate-default.toml"),
        "trust = \"trust.toml\"\napproved_profiles = [\"default\"]\n",
    )
    .unwrap();
    let t = fails_with(
        verify(
            d,
            &[
                "gate",
                &train,
                "--policy",
                "gate-default.toml",
                "--records",
                "records-clean",
            ],
        ),
        1,
        &[
            "approved_profile",
            "sandbox profile \"python\" is not approved",
            "3 violation(s)",
        ],
    );
    for s in ["ingest", "features", "train"] {
        assert!(
            t.contains(&format!("stage {s:?}: approved_profile")),
            "{s}:\n{t}"
        );
    }

    // The features stage attempted egress (to 127.0.0.1:9, blocked); the
    // pipeline itself succeeds, the gate on the model's record does not.
    let mut dirty = Pipe::new("dirty");
    dirty.tag = "d".into();
    dirty.records = Some("records-dirty".into());
    dirty.feat_script = format!("{FEATURES_EGRESS}{FEATURES}");
    ok(dirty.run(&f));
    let log = std::fs::read_to_string(
        records_of(d, "records-dirty", "features")[0].with_extension("stdout.log"),
    )
    .unwrap();
    assert!(log.contains("egress blocked"), "{log}");
    assert!(!log.contains("CONNECTED"), "{log}");
    let train = rec(d, "records-dirty", "train");
    let t = fails_with(
        verify(
            d,
            &[
                "gate",
                &train,
                "--policy",
                "gate.toml",
                "--records",
                "records-dirty",
            ],
        ),
        1,
        &[
            "stage \"features\": no_egress_attempts",
            "\"address\":\"127.0.0.1:9\"",
            "stage \"features\": no_denied_syscalls",
            "\"name\":\"connect\"",
            "FAILED (gate): 2 violation(s) in 3 run(s)",
        ],
    );
    assert!(!t.contains("stage \"train\""), "{t}");
    assert!(!t.contains("stage \"ingest\""), "{t}");
    let out = verify(
        d,
        &[
            "gate",
            &train,
            "--policy",
            "gate.toml",
            "--records",
            "records-dirty",
            "--json",
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let js: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(js["ok"], false);
    let mut checks: Vec<(&str, &str)> = js["verdict"]["violations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["stage"].as_str().unwrap(), v["check"].as_str().unwrap()))
        .collect();
    checks.sort();
    assert_eq!(
        checks,
        vec![
            ("features", "no_denied_syscalls"),
            ("features", "no_egress_attempts")
        ],
        "{js}"
    );
    // Allowing egress attempts leaves the denied connect(); allowing both lets it through.
    std::fs::write(
        d.join("gate-lax.toml"),
        format!("{GATE}allow_egress_attempts = true\n"),
    )
    .unwrap();
    let t = fails_with(
        verify(
            d,
            &[
                "gate",
                &train,
                "--policy",
                "gate-lax.toml",
                "--records",
                "records-dirty",
            ],
        ),
        1,
        &["no_denied_syscalls", "1 violation(s)"],
    );
    assert!(!t.contains("no_egress_attempts"), "{t}");
    std::fs::write(
        d.join("gate-lax.toml"),
        format!("{GATE}allow_egress_attempts = true\nallow_denied_syscalls = true\n"),
    )
    .unwrap();
    ok(verify(
        d,
        &[
            "gate",
            &train,
            "--policy",
            "gate-lax.toml",
            "--records",
            "records-dirty",
        ],
    ));
}

#[test]
fn gate_refuses_a_broken_chain_and_a_classified_output() {
    let f = RunFixture::new();
    let d = f.dir();
    std::fs::write(d.join("gate.toml"), GATE).unwrap();
    confidential_pii(&f);
    let mut p = Pipe::new("conf");
    p.data = "conf".into();
    p.sig = "conf.sig".into();
    ok(p.run(&f));
    let train = rec(d, "records", "train");
    fails_with(
        verify(
            d,
            &[
                "gate",
                &train,
                "--policy",
                "gate.toml",
                "--records",
                "records",
            ],
        ),
        1,
        &[
            "stage \"train\": max_classification",
            "output is classified confidential, above internal",
        ],
    );
    // Chain broken: the gate fails on the chain before any check.
    let sig_sha = sha256_hex(&std::fs::read(d.join("conf.sig")).unwrap());
    std::fs::remove_file(d.join(format!("records/artifacts/{sig_sha}.json"))).unwrap();
    fails_with(
        verify(
            d,
            &[
                "gate",
                &train,
                "--policy",
                "gate.toml",
                "--records",
                "records",
            ],
        ),
        1,
        &["FAILED (missing_link)", "input \"raw\""],
    );
}

#[test]
fn gate_max_classification_on_the_pipeline_summary() {
    // Gating the pipeline's summary record releases what the pipeline made: the
    // confidential model must not pass a gate capped at internal.
    let f = RunFixture::new();
    let d = f.dir();
    std::fs::write(d.join("gate.toml"), GATE).unwrap();
    confidential_pii(&f);
    let mut p = Pipe::new("conf");
    p.data = "conf".into();
    p.sig = "conf.sig".into();
    ok(p.run(&f));
    let summary = rec(d, "records", "conf");
    fails_with(
        verify(
            d,
            &[
                "gate",
                &summary,
                "--policy",
                "gate.toml",
                "--records",
                "records",
            ],
        ),
        1,
        &["max_classification", "confidential"],
    );
}

#[test]
fn declassify_cannot_launder_the_classification_past_the_gate() {
    // A stage may declare it removes PII; removing the classification label
    // itself must not let a model of confidential data pass `max_classification`.
    let f = RunFixture::new();
    let d = f.dir();
    std::fs::write(d.join("gate.toml"), GATE).unwrap();
    confidential_pii(&f);
    let mut p = Pipe::new("launder");
    p.data = "conf".into();
    p.sig = "conf.sig".into();
    p.feat_extra = "declassify = [\"pii\", \"classification\"]".into();
    let out = p.run(&f);
    // Either the launcher refuses the declaration up front ...
    if !out.status.success() {
        fails_with(out, 64, &["declassify"]);
        return;
    }
    // ... or the model keeps its classification / the gate refuses it.
    let train = rec(d, "records", "train");
    fails_with(
        verify(
            d,
            &[
                "gate",
                &train,
                "--policy",
                "gate.toml",
                "--records",
                "records",
            ],
        ),
        1,
        &["max_classification"],
    );
}

// ---- 10. the AI bill of materials ----

const VALIDATE: &str = r#"import sys
from cyclonedx.validation.json import JsonStrictValidator
from cyclonedx.schema import SchemaVersion
err = JsonStrictValidator(SchemaVersion.V1_6).validate_str(open(sys.argv[1]).read())
if err is not None:
    print("INVALID:", err)
    sys.exit(1)
print("VALID")
"#;

#[test]
fn aibom_is_valid_cyclonedx_1_6_with_model_datasets_and_code() {
    let f = RunFixture::new();
    let d = f.dir();
    ok(Pipe::new("bom").run(&f));
    let train = rec(d, "records", "train");
    let t = ok(verify(
        d,
        &[
            "aibom",
            &train,
            "--records",
            "records",
            "--trust",
            "trust.toml",
            "-o",
            "aibom.json",
        ],
    ));
    assert!(t.contains("CycloneDX 1.6"), "{t}");

    ensure_python_module(
        "cyclonedx.validation.json",
        "cyclonedx-python-lib[json-validation]",
    );
    std::fs::write(d.join("validate.py"), VALIDATE).unwrap();
    let out = run(Command::new("python3")
        .current_dir(d)
        .args(["validate.py", "aibom.json"]));
    let t = text(&out);
    assert!(
        out.status.success() && t.contains("VALID"),
        "schema validation:\n{t}"
    );

    let bom: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("aibom.json")).unwrap()).unwrap();
    assert_eq!(bom["bomFormat"], "CycloneDX");
    assert_eq!(bom["specVersion"], "1.6");
    let model = &bom["metadata"]["component"];
    assert_eq!(model["type"], "machine-learning-model", "{model:#}");
    assert_eq!(model["name"], "train");
    // The model's hash is its record's outputs digest; its files are listed.
    let a = artifact(&d.join(&train));
    assert_eq!(model["hashes"][0]["alg"], "SHA-256");
    assert_eq!(
        model["hashes"][0]["content"], a["outputs_digest"],
        "{model:#}"
    );
    let model_file = sha256_hex(&std::fs::read(d.join("p-train/model.json")).unwrap());
    assert!(
        model["components"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == "model.json" && c["hashes"][0]["content"] == model_file.as_str()),
        "{model:#}"
    );
    let comps = bom["components"].as_array().unwrap();
    let data: Vec<&serde_json::Value> = comps.iter().filter(|c| c["type"] == "data").collect();
    assert_eq!(data.len(), 1, "{comps:#?}");
    assert_eq!(data[0]["name"], "data");
    assert_eq!(
        data[0]["data"][0]["classification"], "internal",
        "{:#}",
        data[0]
    );
    let code: Vec<&str> = comps
        .iter()
        .filter(|c| c["type"] == "application" && c["name"].as_str().unwrap().ends_with(" code"))
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(code.len(), 3, "{comps:#?}");
    for s in ["ingest code", "features code", "train code"] {
        assert!(code.contains(&s), "{s}: {code:?}");
    }
    assert!(
        comps.iter().any(|c| c["bom-ref"] == "sealrun-launcher"),
        "{comps:#?}"
    );
    let deps = bom["dependencies"].as_array().unwrap();
    assert_eq!(deps[0]["ref"], model["bom-ref"]);
    assert_eq!(
        deps[0]["dependsOn"].as_array().unwrap().len(),
        5,
        "{deps:#?}"
    );

    // No AI-BOM for a chain that does not verify.
    let sig_sha = sha256_hex(&std::fs::read(d.join("data.sig")).unwrap());
    std::fs::remove_file(d.join(format!("records/artifacts/{sig_sha}.json"))).unwrap();
    fails_with(
        verify(
            d,
            &[
                "aibom",
                &train,
                "--records",
                "records",
                "--trust",
                "trust.toml",
                "-o",
                "bad.json",
            ],
        ),
        1,
        &["missing_link"],
    );
    assert!(!d.join("bad.json").exists());
}
