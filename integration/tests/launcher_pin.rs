//! Which build ran (#12.4): every record names the SHA-256 of the `sealrun` binary that wrote
//! it, and a trust policy's `launcher_sha256 = [...]` makes `sealrun-verify record` and `gate`
//! refuse the records of any other build.

use sealrun_integration::{
    bin, envelope_statement, fails_with, ok, sha256_hex, verify, RunFixture, RUN_SANDBOX, RUN_TRUST,
};

fn pinned(f: &RunFixture, digests: &[&str]) {
    let list: Vec<String> = digests.iter().map(|d| format!("{d:?}")).collect();
    std::fs::write(
        f.dir().join("pinned.toml"),
        format!("launcher_sha256 = [{}]\n{RUN_TRUST}", list.join(", ")),
    )
    .unwrap();
    std::fs::write(
        f.dir().join("gate.toml"),
        "trust = \"pinned.toml\"\napproved_profiles = [\"python\"]\n",
    )
    .unwrap();
}

#[test]
fn records_name_the_launcher_build_and_a_pinned_policy_refuses_others() {
    let f = RunFixture::new();
    let job = f.job(
        "train",
        "open('/out/m', 'w').write('m')\n",
        &[],
        RUN_SANDBOX,
    );
    ok(f.run(&job));
    let record = f.record("train");
    let rec = record.to_str().unwrap();
    let ours = sha256_hex(&std::fs::read(bin("sealrun")).unwrap());
    let st = envelope_statement(&record);
    assert_eq!(
        st["predicate"]["buildDefinition"]["internalParameters"]["launcher_sha256"],
        ours.as_str()
    );

    // Pinned to this build: accepted by `record` and `gate`.
    pinned(&f, &["0".repeat(64).as_str(), &format!("sha256:{ours}")]);
    ok(verify(f.dir(), &["record", rec, "--trust", "pinned.toml"]));
    ok(verify(
        f.dir(),
        &["gate", rec, "--policy", "gate.toml", "--records", "records"],
    ));

    // Pinned to another build: refused, naming the build that wrote it.
    let other = "ab".repeat(32);
    pinned(&f, &[&other]);
    let msg = fails_with(
        verify(f.dir(), &["record", rec, "--trust", "pinned.toml"]),
        1,
        &["launcher_sha256 does not list", &ours],
    );
    assert!(msg.contains("launcher_not_pinned"), "{msg}");
    fails_with(
        verify(
            f.dir(),
            &["gate", rec, "--policy", "gate.toml", "--records", "records"],
        ),
        1,
        &["launcher_sha256 does not list"],
    );
}

#[test]
fn a_malformed_pin_is_a_policy_error() {
    let f = RunFixture::new();
    pinned(&f, &["not-a-digest"]);
    let job = f.job(
        "train",
        "open('/out/m', 'w').write('m')\n",
        &[],
        RUN_SANDBOX,
    );
    ok(f.run(&job));
    let record = f.record("train");
    fails_with(
        verify(
            f.dir(),
            &["record", record.to_str().unwrap(), "--trust", "pinned.toml"],
        ),
        2,
        &["launcher_sha256 \"not-a-digest\" is not a SHA-256 digest"],
    );
}
