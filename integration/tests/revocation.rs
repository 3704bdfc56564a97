//! Revocation (issue 20.2): trust-policy `[[revoked]]` entries for a key, an
//! artifact (manifest root) and a record (file digest). Records made before the
//! revocation stay genuine, but `sealrun-verify chain | gate | aibom | record`
//! fail on a revoked ancestor, naming the entry, its reason and the path to it;
//! `sealrun run` refuses a revoked input (exit 65, nothing runs).
//!
//! Every test works in its own temporary folder; no network.

mod monitor;

use monitor::{file_sha, input_digest, pipeline, rec, revoked, stage, trust_with};
use sealrun_integration::{fails_with, ok, sealrun, verify, write_tree, RunFixture};

/// ingest (signed dataset) -> features -> train, run; returns the fixture.
fn three_stages() -> RunFixture {
    let f = RunFixture::new();
    let d = f.dir();
    let stages = [
        stage(d, "ingest", "dataset", &[]),
        stage(d, "features", "dataset", &["ingest"]),
        stage(d, "train", "model", &["features"]),
    ];
    let p = pipeline(d, "p3", &stages, "");
    ok(sealrun(d, &["run", &p, "--quiet"]));
    f
}

/// chain, gate and aibom of `top` under `trust` all fail (exit 1) as revoked,
/// with every needle in each message.
#[track_caller]
fn downstream_fails(f: &RunFixture, top: &str, trust: &str, needles: &[&str]) {
    let d = f.dir();
    let mut all = vec!["FAILED (revoked)"];
    all.extend_from_slice(needles);
    fails_with(
        verify(d, &["chain", top, "--records", "records", "--trust", trust]),
        1,
        &all,
    );
    fails_with(
        verify(d, &["aibom", top, "--records", "records", "--trust", trust]),
        1,
        &all,
    );
    std::fs::write(d.join("gate.toml"), format!("trust = {trust:?}\n")).unwrap();
    fails_with(
        verify(
            d,
            &["gate", top, "--policy", "gate.toml", "--records", "records"],
        ),
        1,
        &all,
    );
}

#[test]
fn a_revoked_artifact_fails_every_run_downstream_with_the_path() {
    let f = three_stages();
    let d = f.dir();
    let (ingest, train) = (rec(&f, "ingest"), rec(&f, "train"));
    // Before: everything verifies.
    ok(verify(
        d,
        &[
            "chain",
            &train,
            "--records",
            "records",
            "--trust",
            "trust.toml",
        ],
    ));
    let root = input_digest(&f, &ingest, "raw");
    trust_with(
        &f,
        "trust-art.toml",
        &revoked(
            &format!("artifact = \"sha256:{root}\""),
            "poisoned rows found",
        ),
    );
    let entry = format!("artifact sha256:{root} is revoked by the trust policy since 2026-11-30T08:00:00Z (reason: poisoned rows found)");
    downstream_fails(
        &f,
        &train,
        "trust-art.toml",
        &[
            &entry,
            "stage \"train\"",
            "stage \"features\"",
            "stage \"ingest\"",
            "input \"raw\"",
        ],
    );
    // The record that read it directly fails `record` too; one further down
    // does not name it (its chain needs the records folder: `chain`).
    fails_with(
        verify(d, &["record", &ingest, "--trust", "trust-art.toml"]),
        1,
        &["FAILED (revoked)", "input \"raw\"", &entry],
    );
    ok(verify(d, &["record", &train, "--trust", "trust-art.toml"]));
    // `artifact` refuses it as well.
    fails_with(
        verify(
            d,
            &[
                "artifact",
                "data",
                "--signature",
                "data.sig",
                "--trust",
                "trust-art.toml",
            ],
        ),
        1,
        &["revoked", "poisoned rows found"],
    );
}

#[test]
fn a_revoked_record_fails_its_consumers_with_the_path() {
    let f = three_stages();
    let d = f.dir();
    let (features, train) = (rec(&f, "features"), rec(&f, "train"));
    let sha = file_sha(&f, &features);
    trust_with(
        &f,
        "trust-rec.toml",
        &revoked(
            &format!("record = \"sha256:{sha}\""),
            "run on a compromised host",
        ),
    );
    let entry = format!("record sha256:{sha} is revoked");
    downstream_fails(
        &f,
        &train,
        "trust-rec.toml",
        &[
            &entry,
            "run on a compromised host",
            "stage \"train\"",
            "input \"features\"",
        ],
    );
    // The record itself, and its direct consumer, fail `record`.
    fails_with(
        verify(d, &["record", &features, "--trust", "trust-rec.toml"]),
        1,
        &["FAILED (revoked)", &entry],
    );
    fails_with(
        verify(d, &["record", &train, "--trust", "trust-rec.toml"]),
        1,
        &["FAILED (revoked)", "input \"features\"", &entry],
    );
    // Upstream of it nothing changed.
    ok(verify(
        d,
        &[
            "chain",
            &rec(&f, "ingest"),
            "--records",
            "records",
            "--trust",
            "trust-rec.toml",
        ],
    ));
}

#[test]
fn a_revoked_key_fails_what_it_signed_by_name_or_key_id() {
    let f = three_stages();
    let d = f.dir();
    let train = rec(&f, "train");
    // The dataset signer, by name: the chain fails at the dataset, with the path.
    trust_with(
        &f,
        "trust-key.toml",
        &revoked("key = \"registry\"", "key leaked"),
    );
    downstream_fails(
        &f,
        &train,
        "trust-key.toml",
        &[
            "key \"registry\" is revoked",
            "key leaked",
            "stage \"ingest\"",
            "input \"raw\"",
        ],
    );
    // The launcher key, by key id: every record it signed fails, the top one first.
    let id = f.launcher_keyid.clone();
    trust_with(
        &f,
        "trust-launcher.toml",
        &revoked(
            &format!("key = \"sha256:{id}\""),
            "launcher host compromised",
        ),
    );
    downstream_fails(
        &f,
        &train,
        "trust-launcher.toml",
        &[
            &format!("key \"{id}\" is revoked"),
            "launcher host compromised",
        ],
    );
    fails_with(
        verify(d, &["record", &train, "--trust", "trust-launcher.toml"]),
        1,
        &["FAILED (revoked)", "launcher host compromised"],
    );
}

#[test]
fn sealrun_run_refuses_revoked_inputs_with_exit_65() {
    let f = three_stages();
    let d = f.dir();
    let root = {
        let ingest = rec(&f, "ingest");
        input_digest(&f, &ingest, "raw")
    };
    // A signed input whose artifact is revoked.
    trust_with(
        &f,
        "trust-art.toml",
        &revoked(
            &format!("artifact = \"sha256:{root}\""),
            "poisoned rows found",
        ),
    );
    write_tree(d, &[("code-solo/run.py", monitor::COPY.as_bytes())]);
    let solo = |name: &str, trust: &str, input: &str| {
        let spec = format!(
            "name = {name:?}\ncommand = [\"python3\", \"/code/run.py\"]\ncode = \"code-solo\"\noutput = \"out-{name}\"\ntrust = {trust:?}\nsigning_key = \"launcher.key\"\n{input}[sandbox]\nprofile = \"python\"\nmemory = \"512M\"\ntimeout = \"60s\"\n"
        );
        std::fs::write(d.join(format!("{name}.toml")), spec).unwrap();
        sealrun(d, &["run", &format!("{name}.toml"), "--quiet"])
    };
    let signed = "[[input]]\nname = \"raw\"\npath = \"data\"\nsignature = \"data.sig\"\n";
    fails_with(
        solo("a", "trust-art.toml", signed),
        65,
        &[
            "refused",
            "input \"raw\"",
            "is revoked",
            "poisoned rows found",
            "nothing ran",
        ],
    );
    assert!(!d.join("out-a").join("raw-points.csv").exists());
    // A record input whose producer's own input is revoked (an ancestor).
    let from = format!(
        "[[input]]\nname = \"feat\"\npath = \"out-features\"\nfrom_record = {:?}\nkind = \"dataset\"\n",
        rec(&f, "features")
    );
    fails_with(
        solo("b", "trust-art.toml", &from),
        65,
        &[
            "refused",
            "input \"feat\"",
            "is revoked",
            "poisoned rows found",
            "stage \"ingest\"",
        ],
    );
    // A record input that is itself revoked.
    let sha = file_sha(&f, &rec(&f, "features"));
    trust_with(
        &f,
        "trust-rec.toml",
        &revoked(&format!("record = \"sha256:{sha}\""), "bad run"),
    );
    fails_with(
        solo("c", "trust-rec.toml", &from),
        65,
        &[
            "refused",
            &format!("record sha256:{sha} is revoked"),
            "bad run",
        ],
    );
    // The same input under the plain policy runs.
    ok(solo("ok", "trust.toml", &from));
}
