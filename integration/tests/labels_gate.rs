//! No label laundering (issue #11, item 16): an unlabelled input mixed with a
//! `public` one must not yield a `public` output that passes a
//! `max_classification = "public"` gate; an unknown `max_classification` in a
//! gate policy is a policy error (exit 2), not "no ceiling".

use sealrun_integration::{
    envelope_statement, fails_with, ok, sealrun, verify, write_tree, RunFixture,
};

const GATE_PUBLIC: &str = "trust = \"trust.toml\"\nmax_classification = \"public\"\n";

/// Sign folder `name` (one file) as a dataset with `labels` into `NAME.sig`.
fn dataset(f: &RunFixture, name: &str, labels: &[&str]) {
    write_tree(f.dir(), &[(&format!("{name}/rows.csv"), b"1,2\n")]);
    let sig = format!("{name}.sig");
    let mut args = vec![
        "sign", name, "--key", "reg.key", "--kind", "dataset", "--out", &sig,
    ];
    for l in labels {
        args.extend(["--label", l]);
    }
    ok(sealrun(f.dir(), &args));
}

/// A job reading every input in `inputs` (folder names, signed as `NAME.sig`).
fn job(f: &RunFixture, name: &str, inputs: &[&str]) -> String {
    let mut spec = format!(
        "name = {name:?}\ncommand = [\"python3\", \"-c\", \"open('/out/model.txt', 'w').write('m')\"]\noutput = \"{name}-out\"\ntrust = \"trust.toml\"\nsigning_key = \"launcher.key\"\n"
    );
    for i in inputs {
        spec.push_str(&format!(
            "[[input]]\nname = {i:?}\npath = {i:?}\nsignature = \"{i}.sig\"\n"
        ));
    }
    spec.push_str("[sandbox]\nprofile = \"python\"\nmemory = \"512M\"\ntimeout = \"60s\"\n");
    let file = format!("{name}.toml");
    std::fs::write(f.dir().join(&file), spec).unwrap();
    file
}

fn gate(f: &RunFixture, record: &str) -> std::process::Output {
    verify(
        f.dir(),
        &[
            "gate",
            record,
            "--policy",
            "gate.toml",
            "--records",
            "records",
        ],
    )
}

#[test]
fn an_unlabelled_input_does_not_launder_a_public_output() {
    let f = RunFixture::new();
    std::fs::write(f.dir().join("gate.toml"), GATE_PUBLIC).unwrap();
    dataset(&f, "pub", &["classification=public"]);
    dataset(&f, "unl", &[]);
    // Public alone passes the gate: the check below is about the unlabelled input.
    ok(f.run(&job(&f, "clean", &["pub"])));
    let clean = f.record("clean");
    ok(gate(&f, &clean.display().to_string()));
    ok(f.run(&job(&f, "mixed", &["pub", "unl"])));
    let mixed = f.record("mixed");
    let st = envelope_statement(&mixed);
    let produced = sealrun_integration::byproduct(&st, "artifact");
    assert_eq!(
        produced["annotations"]["labels"].get("classification"),
        None,
        "{produced:#}"
    );
    fails_with(
        gate(&f, &mixed.display().to_string()),
        1,
        &[
            "max_classification",
            "carries no classification label, so it cannot be shown to be at most public",
        ],
    );
}

#[test]
fn an_unknown_max_classification_is_a_policy_error() {
    let f = RunFixture::new();
    dataset(&f, "pub", &["classification=public"]);
    ok(f.run(&job(&f, "clean", &["pub"])));
    let rec = f.record("clean").display().to_string();
    for bad in ["Public", "secret", ""] {
        std::fs::write(
            f.dir().join("gate.toml"),
            format!("trust = \"trust.toml\"\nmax_classification = {bad:?}\n"),
        )
        .unwrap();
        fails_with(
            gate(&f, &rec),
            2,
            &[
                &format!("max_classification = {bad:?} is not a known level"),
                "public, internal, confidential, restricted",
            ],
        );
    }
}
