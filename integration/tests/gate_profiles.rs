//! Issue #11 item 7: the release gate approves a profile by what it is, not what it is called. A
//! name approves the shipped profile of that name (the record's `profile_sha256` must match
//! it); anything else is approved only by digest.

use std::process::Command;

use sealrun_integration::{bin, envelope_statement, fails_with, ok, verify, RunFixture};

const SCRIPT: &str = "import os\nopen('/out/model.txt', 'w').write('ok')\n";

fn gate(f: &RunFixture, file: &str, approved: &str, record: &str) -> std::process::Output {
    std::fs::write(
        f.dir().join(file),
        format!("trust = \"trust.toml\"\napproved_profiles = [{approved}]\n"),
    )
    .unwrap();
    verify(
        f.dir(),
        &["gate", record, "--policy", file, "--records", "records"],
    )
}

#[test]
fn a_profile_named_like_a_shipped_one_is_approved_only_by_digest() {
    let f = RunFixture::new();
    let d = f.dir();
    // The shipped python profile, run as shipped: approved by name.
    let spec = f.job("shipped", SCRIPT, &[], "profile = \"python\"\n");
    ok(f.run(&spec));
    let rec = f.record("shipped").display().to_string();
    ok(gate(&f, "gate-name.toml", "\"python\"", &rec));

    // A "python" profile edited on the launcher host (here: a root-owned copy with one more
    // allowed call), found first through SEALRUN_PROFILES.
    let profiles = d.join("profiles");
    for kind in ["seccomp", "mounts"] {
        std::fs::create_dir_all(profiles.join(kind)).unwrap();
    }
    let root = sealrun_integration::workspace_root().join("sandbox-profiles");
    let shipped = std::fs::read_to_string(root.join("seccomp/python.json")).unwrap();
    let edited = shipped.replacen("\"accept\",", "\"accept\",\n    \"ptrace\",", 1);
    assert_ne!(edited, shipped);
    std::fs::write(profiles.join("seccomp/python.json"), edited).unwrap();
    std::fs::copy(
        root.join("mounts/python.json"),
        profiles.join("mounts/python.json"),
    )
    .unwrap();
    let spec = f.job("edited", SCRIPT, &[], "profile = \"python\"\n");
    let out = Command::new(bin("sealrun"))
        .current_dir(d)
        .env("SEALRUN_PROFILES", &profiles)
        .args(["run", &spec, "--quiet"])
        .output()
        .unwrap();
    ok(out);
    let rec = f.record("edited");
    let st = envelope_statement(&rec);
    let internal = &st["predicate"]["buildDefinition"]["internalParameters"];
    assert_eq!(internal["profile"], "python");
    let digest = internal["profile_sha256"].as_str().unwrap().to_string();
    let rec = rec.display().to_string();

    fails_with(
        gate(&f, "gate-name.toml", "\"python\"", &rec),
        1,
        &[
            "approved_profile",
            "sandbox profile \"python\" is not approved",
            &digest,
            "approve it by digest",
        ],
    );
    ok(gate(
        &f,
        "gate-digest.toml",
        &format!("\"sha256:{digest}\""),
        &rec,
    ));
}
