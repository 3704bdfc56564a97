//! Interoperability, both ways: envelopes sealrun signs verify with
//! securesystemslib (Python), and a directory signed by the OpenSSF
//! model-signing tool verifies with `sealrun-verify` and fails after tampering.

use std::process::Command;

use sealrun_integration::{
    copy_tree, ensure_python_module, fails_with, ok, run, sealrun, text, verify, workspace_root,
    write_tree,
};

#[test]
fn securesystemslib_verifies_our_envelopes() {
    ensure_python_module("securesystemslib.dsse", "securesystemslib[crypto]");
    ensure_python_module("cryptography", "cryptography");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let keyid = ok(sealrun(dir, &["keygen", "--out", "k"]));
    let keyid = keyid
        .lines()
        .find_map(|l| l.strip_prefix("key id: "))
        .unwrap()
        .trim()
        .to_string();
    write_tree(
        &dir.join("data"),
        &[("x.csv", b"1,2\n"), ("sub/y.bin", &[0u8, 1, 2, 255])],
    );
    ok(sealrun(
        dir,
        &[
            "sign",
            "data",
            "--key",
            "k.key",
            "--kind",
            "dataset",
            "--label",
            "pii=false",
        ],
    ));
    let script = workspace_root().join("integration/python/dsse_verify.py");
    let py = |sig: &str| {
        run(Command::new("python3")
            .current_dir(dir)
            .arg(&script)
            .args([sig, "k.pub", &keyid]))
    };
    let out = py("data.sig");
    assert!(
        out.status.success(),
        "securesystemslib refused our envelope:\n{}",
        text(&out)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "https://sealrun.dev/artifact/v1"
    );
    // And it refuses a tampered one (one payload byte changed).
    let mut env: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("data.sig")).unwrap()).unwrap();
    let payload = env["payload"].as_str().unwrap().to_string();
    let mut b = base64_decode(&payload);
    let i = b.len() / 2;
    b[i] ^= 1;
    env["payload"] = serde_json::Value::String(base64_encode(&b));
    std::fs::write(dir.join("bad.sig"), serde_json::to_vec(&env).unwrap()).unwrap();
    let out = py("bad.sig");
    assert_eq!(
        out.status.code(),
        Some(1),
        "securesystemslib accepted a tampered envelope:\n{}",
        text(&out)
    );
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

fn base64_encode(b: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(b)
}

struct Ms {
    _tmp: tempfile::TempDir,
    dir: std::path::PathBuf,
}

/// A writable copy of a folder signed by the OpenSSF model-signing tool (PyPI `model-signing`,
/// key method, ECDSA P-256; `.ci/run` installs it) in this test process, like the interop
/// sample it replaces: nested folders whose names expose the sort order (`a/` and `a-b/`),
/// 4 files, 200085 bytes. (Signed once: the tool takes seconds to start.)
fn model_signing_copy() -> Ms {
    static SIGNED: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    let src = SIGNED.get_or_init(|| {
        ensure_python_module("model_signing", "model-signing");
        ensure_python_module("OpenSSL", "pyopenssl");
        // Kept for the whole test process (the copies are made from it), in Cargo's scratch
        // folder for integration tests (under target/), not in /tmp.
        let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("model-signing-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let blob: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
        write_tree(
            &dir.join("dataset"),
            &[
                ("a/train.csv", b"x,y\n1,2\n3,4\n5,6\n7,8\n9,10\n11,12\n"),
                ("a-b/test.csv", b"x,y\n13,14\n15,16\n17,18\n"),
                ("meta.json", b"{\"source\": \"synthetic\", \"n\": 1}\n"),
                ("nested/deeper/blob.bin", &blob),
            ],
        );
        let out = run(Command::new("sh").current_dir(&dir).args([
            "-c",
            "openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out p256.key \
             && openssl pkey -in p256.key -pubout -out ec_p256.pub \
             && model_signing sign key dataset --private_key p256.key --signature dataset.sig \
             && rm p256.key",
        ]));
        assert!(out.status.success(), "model_signing sign:\n{}", text(&out));
        dir
    });
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    copy_tree(src, &dir);
    Ms { _tmp: tmp, dir }
}

impl Ms {
    fn verify(&self, key: &str) -> std::process::Output {
        verify(
            &self.dir,
            &[
                "artifact",
                "dataset",
                "--signature",
                "dataset.sig",
                "--key",
                key,
            ],
        )
    }
}

#[test]
fn model_signing_bundle_verifies() {
    let ms = model_signing_copy();
    let t = ok(ms.verify("ec_p256.pub"));
    assert!(
        t.contains("OK model \"dataset\": 4 files, 200085 bytes"),
        "{t}"
    );
    assert!(
        t.contains("ecdsa-p256-sha256") && t.contains("[model-signing]"),
        "{t}"
    );
    // ignore_paths is honoured: a .git folder is not part of the signed set.
    write_tree(
        &ms.dir.join("dataset/.git"),
        &[("HEAD", b"ref: refs/heads/main\n")],
    );
    ok(ms.verify("ec_p256.pub"));
}

#[test]
fn model_signing_bundle_with_the_wrong_key_fails() {
    let ms = model_signing_copy();
    ok(sealrun(&ms.dir, &["keygen", "--out", "other"]));
    fails_with(ms.verify("other.pub"), 1, &["bad_signature"]);
}

#[test]
fn model_signing_tamper_changed_added_removed() {
    let ms = model_signing_copy();
    let f = ms.dir.join("dataset/a/train.csv");
    let mut b = std::fs::read(&f).unwrap();
    b[0] ^= 1;
    std::fs::write(&f, &b).unwrap();
    fails_with(
        ms.verify("ec_p256.pub"),
        1,
        &["digest_mismatch", "file a/train.csv"],
    );
    b[0] ^= 1;
    std::fs::write(&f, &b).unwrap();
    ok(ms.verify("ec_p256.pub"));
    write_tree(&ms.dir.join("dataset"), &[("a-b/extra.csv", b"1\n")]);
    fails_with(
        ms.verify("ec_p256.pub"),
        1,
        &["extra_file", "file a-b/extra.csv"],
    );
    std::fs::remove_file(ms.dir.join("dataset/a-b/extra.csv")).unwrap();
    std::fs::remove_file(ms.dir.join("dataset/nested/deeper/blob.bin")).unwrap();
    fails_with(
        ms.verify("ec_p256.pub"),
        1,
        &["missing_file", "file nested/deeper/blob.bin"],
    );
}

#[test]
fn model_signing_key_policy_is_enforced() {
    let ms = model_signing_copy();
    std::fs::write(
        ms.dir.join("trust.toml"),
        "[[key]]\nname = \"ml-team\"\npublic_key = \"ec_p256.pub\"\nkinds = [\"dataset\"]\n",
    )
    .unwrap();
    let args = |kind: &'static str| {
        vec![
            "artifact",
            "dataset",
            "--signature",
            "dataset.sig",
            "--trust",
            "trust.toml",
            "--kind",
            kind,
        ]
    };
    ok(verify(&ms.dir, &args("dataset")));
    fails_with(verify(&ms.dir, &args("model")), 1, &["kind_not_allowed"]);
}
