//! Rollback protection in `sealrun run` and `sealrun-verify artifact --state`, with the real
//! binaries: a run on an older signed version than one a run already used is refused naming
//! both versions; a deleted state file is an error, not a fresh start; a state is never
//! initialised over an existing one; `--state` with a model-signing bundle is an error.

use sealrun_integration::{
    audit_entries, fails_with, ok, sealrun, verify, RunFixture, RUN_SANDBOX,
};

mod msign;

/// Leaves a marker if it ran.
const MARK: &str = "open('/out/ran', 'w').write('ran')\n";

/// Re-sign the fixture's dataset at `version` (writes `data.sig`).
fn sign_version(f: &RunFixture, version: u32) {
    ok(sealrun(
        f.dir(),
        &[
            "sign",
            "data",
            "--key",
            "reg.key",
            "--kind",
            "dataset",
            "--label",
            "classification=internal",
            "--version",
            &version.to_string(),
        ],
    ));
}

fn state(f: &RunFixture) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(f.dir().join("audit.log.rollback.json")).unwrap())
        .unwrap()
}

fn fresh_output(f: &RunFixture, job: &str) {
    let _ = std::fs::remove_dir_all(f.dir().join(format!("{job}-out")));
}

#[test]
fn run_on_an_older_version_than_one_already_used_is_refused() {
    let f = RunFixture::new();
    let job = f.job("rb", MARK, &[], RUN_SANDBOX);
    // Keep the genuine, older v1 signature the way an attacker would.
    let v1 = std::fs::read(f.dir().join("data.sig")).unwrap();
    sign_version(&f, 2);
    // The launcher's first run: the state is made next to the audit log.
    ok(f.run(&job));
    assert_eq!(state(&f)["accepted"]["data"], 2);
    // Replay v1 (genuinely signed, same bytes): refused as a rollback, nothing runs.
    std::fs::write(f.dir().join("data.sig"), &v1).unwrap();
    fresh_output(&f, "rb");
    fails_with(
        f.run(&job),
        65,
        &[
            "input \"points\": artifact \"data\" is version 1, older than version 2 already used by an earlier run (rollback",
            "nothing ran",
        ],
    );
    assert!(!f.dir().join("rb-out/ran").exists(), "the job ran");
    assert_eq!(
        state(&f)["accepted"]["data"],
        2,
        "state changed by a refusal"
    );
    let entries = audit_entries(&f.dir().join("audit.log"));
    let last = entries.last().unwrap();
    assert_eq!(last["event"], "refused");
    assert!(
        last["outcome"]
            .as_str()
            .unwrap()
            .contains("version 1, older than version 2"),
        "{last:#}"
    );
    // Newer is fine, and recorded.
    sign_version(&f, 3);
    fresh_output(&f, "rb");
    ok(f.run(&job));
    assert_eq!(state(&f)["accepted"]["data"], 3);
}

#[test]
fn a_deleted_state_is_an_error_and_initialising_never_replaces_one() {
    let f = RunFixture::new();
    let job = f.job("rbinit", MARK, &[], RUN_SANDBOX);
    sign_version(&f, 5);
    ok(f.run(&job));
    let state_file = f.dir().join("audit.log.rollback.json");
    // Deleting the state would reset the protection: refused, with how to fix it.
    std::fs::remove_file(&state_file).unwrap();
    fresh_output(&f, "rbinit");
    fails_with(
        f.run(&job),
        64,
        &[
            "audit.log.rollback.json does not exist",
            "--init-rollback-state",
        ],
    );
    assert!(!f.dir().join("rbinit-out/ran").exists(), "the job ran");
    // Initialised on purpose: runs, and holds the version used.
    let init =
        |f: &RunFixture| sealrun(f.dir(), &["run", &job, "--quiet", "--init-rollback-state"]);
    ok(init(&f));
    assert_eq!(state(&f)["accepted"]["data"], 5);
    // Never over an existing state.
    fresh_output(&f, "rbinit");
    fails_with(
        init(&f),
        64,
        &["already exists", "remove it first to reset it"],
    );
    assert_eq!(state(&f)["accepted"]["data"], 5);
}

#[test]
fn verify_state_must_exist_unless_initialised_and_is_refused_for_model_signing() {
    let f = RunFixture::new();
    let d = f.dir();
    let args = |extra: &[&'static str]| {
        let mut a = vec![
            "artifact",
            "data",
            "--signature",
            "data.sig",
            "--trust",
            "trust.toml",
        ];
        a.extend_from_slice(extra);
        a
    };
    fails_with(
        verify(d, &args(&["--state", "st.json"])),
        2,
        &["st.json does not exist", "--init-state"],
    );
    ok(verify(d, &args(&["--state", "st.json", "--init-state"])));
    ok(verify(d, &args(&["--state", "st.json"])));
    fails_with(
        verify(d, &args(&["--state", "st.json", "--init-state"])),
        2,
        &["already exists"],
    );
    // A model-signing bundle carries no version: --state is an error, not ignored.
    let files: [(&str, &[u8]); 1] = [("w.bin", b"weights")];
    sealrun_integration::write_tree(&d.join("model"), &files);
    std::fs::write(
        d.join("model.sig"),
        msign::model_signing_sign(d, "model", &files),
    )
    .unwrap();
    let ms = |extra: &[&'static str]| {
        let mut a = vec![
            "artifact",
            "model",
            "--signature",
            "model.sig",
            "--trust",
            "trust.toml",
            "--kind",
            "dataset",
        ];
        a.extend_from_slice(extra);
        a
    };
    ok(verify(d, &ms(&[])));
    fails_with(
        verify(d, &ms(&["--state", "st.json"])),
        2,
        &[
            "model-signing bundle, which carries no version",
            "verify without --state",
        ],
    );
    let st = std::fs::read_to_string(d.join("st.json")).unwrap();
    assert!(!st.contains("model"), "{st}");
}

/// The launcher's first run makes the rollback state before anything else, so a first run that
/// is refused (and so starts the audit log) leaves it too: the next run works without
/// `--init-rollback-state`.
#[test]
fn a_refused_first_run_still_initialises_the_state() {
    let f = sealrun_integration::RunFixture::new();
    let spec = f.job("first", "open('/out/m', 'w').write('m')\n", &[], "");
    let data = f.dir().join("data/points.csv");
    let good = std::fs::read(&data).unwrap();
    std::fs::write(&data, b"x,y\n6,6\n6,6\n").unwrap();
    let out = f.run(&spec);
    assert_eq!(
        out.status.code(),
        Some(65),
        "{}",
        sealrun_integration::text(&out)
    );
    assert!(f.dir().join("audit.log.rollback.json").exists());
    std::fs::write(&data, good).unwrap();
    sealrun_integration::ok(f.run(&spec));
}
