//! `sealrun sign --incremental OLD.sig`: the same signed manifest as a full sign, only changed
//! files rehashed (a same-size change with the mtime put back is still caught by the ctime),
//! an old signature by another key refused, and verification still hashing every file.

use std::path::Path;

use sealrun_integration::{envelope_statement, fails_with, ok, sealrun, verify, write_tree};

fn sign(dir: &Path, extra: &[&str]) -> String {
    let mut args = vec!["sign", "data", "--key", "reg.key", "--kind", "dataset"];
    args.extend_from_slice(extra);
    ok(sealrun(dir, &args))
}

/// The statement with the signing time removed (the one field that differs between two signs).
fn statement_without_time(sig: &Path) -> serde_json::Value {
    let mut st = envelope_statement(sig);
    st["predicate"]
        .as_object_mut()
        .unwrap()
        .remove("signed_at")
        .expect("signed_at");
    st
}

#[test]
fn incremental_sign_equals_a_full_sign_and_rehashes_only_what_changed() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    ok(sealrun(dir, &["keygen", "--out", "reg"]));
    write_tree(
        dir,
        &[
            ("data/a.csv", b"a,1\n"),
            ("data/b.csv", b"b,2\n"),
            ("data/sub/c.bin", b"ccc"),
        ],
    );
    sign(dir, &[]);
    assert!(
        dir.join("data.sig.stat").exists(),
        "stats kept next to the signature"
    );
    // Nothing changed: nothing rehashed, the same statement as a full sign.
    let out = sign(dir, &["--incremental", "data.sig", "-o", "inc.sig"]);
    assert!(out.contains("rehashed 0 of 3 files"), "{out}");
    assert_eq!(
        statement_without_time(&dir.join("inc.sig")),
        statement_without_time(&dir.join("data.sig"))
    );
    // One file grows; another changes in place (same size) with its mtime put back.
    std::fs::write(dir.join("data/a.csv"), b"a,1\na,2\n").unwrap();
    let b = dir.join("data/b.csv");
    let mtime = std::fs::metadata(&b).unwrap().modified().unwrap();
    std::fs::write(&b, b"b,3\n").unwrap();
    std::fs::File::options()
        .write(true)
        .open(&b)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    let out = sign(dir, &["--incremental", "inc.sig", "-o", "inc2.sig"]);
    assert!(out.contains("rehashed 2 of 3 files"), "{out}");
    sign(dir, &["-o", "full2.sig"]);
    assert_eq!(
        statement_without_time(&dir.join("inc2.sig")),
        statement_without_time(&dir.join("full2.sig"))
    );
    // A stats file that belongs to another signature is not trusted: everything rehashed.
    std::fs::copy(dir.join("data.sig.stat"), dir.join("inc2.sig.stat")).unwrap();
    let out = sign(dir, &["--incremental", "inc2.sig", "-o", "inc3.sig"]);
    assert!(out.contains("rehashed 3 of 3 files"), "{out}");
}

#[test]
fn an_old_signature_by_another_key_is_refused_and_verification_hashes_everything() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    ok(sealrun(dir, &["keygen", "--out", "reg"]));
    ok(sealrun(dir, &["keygen", "--out", "other"]));
    write_tree(dir, &[("data/a.csv", b"a,1\n")]);
    ok(sealrun(
        dir,
        &[
            "sign",
            "data",
            "--key",
            "other.key",
            "--kind",
            "dataset",
            "-o",
            "other.sig",
        ],
    ));
    fails_with(
        sealrun(
            dir,
            &[
                "sign",
                "data",
                "--key",
                "reg.key",
                "--kind",
                "dataset",
                "--incremental",
                "other.sig",
            ],
        ),
        1,
        &["--incremental other.sig", "not signed by this key"],
    );
    // Verification never reuses anything: a same-size change after an incremental sign is found.
    sign(dir, &[]);
    sign(dir, &["--incremental", "data.sig"]);
    std::fs::write(dir.join("data/a.csv"), b"a,9\n").unwrap();
    let trust = "[[key]]\nname = \"reg\"\npublic_key = \"reg.pub\"\nkinds = [\"dataset\"]\n";
    std::fs::write(dir.join("trust.toml"), trust).unwrap();
    let out = verify(
        dir,
        &[
            "artifact",
            "data",
            "--signature",
            "data.sig",
            "--trust",
            "trust.toml",
        ],
    );
    fails_with(out, 1, &["a.csv", "digest"]);
}
