//! Keys everyone can read (issue #11, item 22): `sealrun keygen` writes the
//! PKCS#8 v1 form `openssl genpkey` writes, which `openssl pkey` and Python
//! `cryptography` load; the documented key id command matches what sealrun
//! computes, also for a compressed P-256 key; an unwrapped PEM is accepted.

use std::path::Path;
use std::process::Command;

use sealrun_integration::{
    ensure_python_module, fails_with, ok, run, sealrun, text, verify, write_tree,
};

fn keyid_printed(out: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix("key id: "))
        .unwrap()
        .trim()
        .to_string()
}

/// `sh -c CMD` in `dir`, must succeed; its stdout.
#[track_caller]
fn sh(dir: &Path, cmd: &str) -> String {
    let out = run(Command::new("sh").current_dir(dir).args(["-c", cmd]));
    assert!(out.status.success(), "{cmd}:\n{}", text(&out));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn keygen_output_loads_in_openssl_and_python_cryptography() {
    ensure_python_module("cryptography", "cryptography");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let keyid = keyid_printed(&ok(sealrun(dir, &["keygen", "--out", "k"])));
    // openssl reads the private key and derives the same public key.
    let derived = sh(dir, "openssl pkey -in k.key -pubout");
    assert_eq!(derived, std::fs::read_to_string(dir.join("k.pub")).unwrap());
    // The documented key id command.
    let sum = sh(
        dir,
        "openssl pkey -pubin -in k.pub -outform DER | sha256sum",
    );
    assert_eq!(sum.split_whitespace().next().unwrap(), keyid);
    // Byte for byte the form `openssl genpkey` writes (PKCS#8 v1, 48 bytes of DER).
    let der = sh(
        dir,
        "openssl pkey -in k.key -outform DER | od -An -tx1 | tr -d ' \\n'",
    );
    assert_eq!(der.len(), 96, "{der}");
    assert!(der.starts_with("302e020100300506032b657004220420"), "{der}");
    // Python cryptography loads it and signs something sealrun verifies.
    let py = "from cryptography.hazmat.primitives import serialization as s\n\
              k = s.load_pem_private_key(open('k.key','rb').read(), None)\n\
              print(k.public_key().public_bytes(s.Encoding.PEM, s.PublicFormat.SubjectPublicKeyInfo).decode(), end='')\n";
    let out = run(Command::new("python3").current_dir(dir).args(["-c", py]));
    assert!(
        out.status.success(),
        "cryptography refused the key:\n{}",
        text(&out)
    );
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        std::fs::read_to_string(dir.join("k.pub")).unwrap()
    );
}

#[test]
fn a_compressed_p256_key_has_the_documented_key_id() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    sh(
        dir,
        "openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out ec.key && \
         openssl pkey -in ec.key -pubout -ec_conv_form compressed -out ecc.pub && \
         openssl pkey -in ec.key -pubout -out ecu.pub",
    );
    let documented = sh(
        dir,
        "openssl pkey -pubin -in ecc.pub -outform DER -ec_conv_form uncompressed | sha256sum",
    );
    let documented = documented.split_whitespace().next().unwrap().to_string();
    // The same key in both forms is one key, named by the documented id.
    std::fs::write(
        dir.join("trust.toml"),
        "[[key]]\nname = \"c\"\npublic_key = \"ecc.pub\"\n[[key]]\nname = \"u\"\npublic_key = \"ecu.pub\"\n",
    )
    .unwrap();
    write_tree(dir, &[("data/a", b"1")]);
    fails_with(
        verify(dir, &["artifact", "data", "--trust", "trust.toml"]),
        2,
        &[&format!("key {documented} is listed twice")],
    );
}

#[test]
fn unwrapped_pem_keys_are_accepted() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    ok(sealrun(dir, &["keygen", "--out", "k"]));
    for f in ["k.key", "k.pub"] {
        let pem = std::fs::read_to_string(dir.join(f)).unwrap();
        let mut lines: Vec<&str> = pem.lines().collect();
        let body: String = lines[1..lines.len() - 1].concat();
        let (first, last) = (lines[0], lines[lines.len() - 1]);
        lines = vec![first, &body, last];
        std::fs::write(dir.join(format!("one-{f}")), lines.join("\n") + "\n").unwrap();
    }
    std::fs::set_permissions(
        dir.join("one-k.key"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    write_tree(dir, &[("data/a", b"1")]);
    ok(sealrun(
        dir,
        &["sign", "data", "--key", "one-k.key", "--kind", "dataset"],
    ));
    ok(verify(dir, &["artifact", "data", "--key", "one-k.pub"]));
    // Something that is not a public key PEM says what it found.
    std::fs::write(
        dir.join("cert.pem"),
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    fails_with(
        verify(dir, &["artifact", "data", "--key", "cert.pem"]),
        2,
        &["found a PEM block labelled \"CERTIFICATE\""],
    );
}
