//! The tamper suite for signed artifacts: every way an attacker could change a
//! signed dataset or its signature, each asserting the specific reason.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sealrun_integration::{fails_with, ok, sealrun, verify, write_tree};
use sealrun_verifier::artifact::{ArtifactPredicate, ARTIFACT_PREDICATE_TYPE};
use sealrun_verifier::dsse::{self, Envelope, IN_TOTO_PAYLOAD_TYPE};
use sealrun_verifier::keys::SigningKey;
use sealrun_verifier::manifest::{Manifest, WalkOptions};
use sealrun_verifier::policy::Kind;
use sealrun_verifier::statement::{Statement, Subject};

const VERIFY_FAILED: i32 = 1;
const USAGE: i32 = 2;

struct Fx {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
}

impl Fx {
    /// Keys `reg` (trusted for datasets with restricted labels) and `other`
    /// (untrusted), a dataset `data/` signed by `reg`, and `trust.toml`.
    fn new() -> Fx {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        ok(sealrun(&dir, &["keygen", "--out", "reg"]));
        ok(sealrun(&dir, &["keygen", "--out", "other"]));
        write_tree(
            &dir.join("data"),
            &[
                ("train/part-0.csv", b"x,y\n1,0\n2,1\n"),
                ("train/part-1.csv", b"x,y\n3,1\n"),
                ("meta.json", b"{\"rows\":3}\n"),
            ],
        );
        std::fs::write(
            dir.join("trust.toml"),
            r#"
[[key]]
name = "registry"
public_key = "reg.pub"
kinds = ["dataset"]
[key.labels]
classification = ["public", "internal"]
pii = ["false"]
"#,
        )
        .unwrap();
        let fx = Fx { _tmp: tmp, dir };
        fx.sign(&["--label", "classification=internal", "--version", "5"]);
        fx
    }

    fn p(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    fn sign(&self, extra: &[&str]) {
        let mut args = vec!["sign", "data", "--key", "reg.key", "--kind", "dataset"];
        args.extend_from_slice(extra);
        ok(sealrun(&self.dir, &args));
    }

    fn verify(&self, extra: &[&str]) -> std::process::Output {
        let mut args = vec![
            "artifact",
            "data",
            "--signature",
            "data.sig",
            "--trust",
            "trust.toml",
        ];
        args.extend_from_slice(extra);
        verify(&self.dir, &args)
    }

    fn envelope(&self) -> Envelope {
        Envelope::parse(&std::fs::read(self.p("data.sig")).unwrap()).unwrap()
    }

    fn key(&self, name: &str) -> SigningKey {
        SigningKey::from_pkcs8_pem(
            &std::fs::read_to_string(self.p(&format!("{name}.key"))).unwrap(),
        )
        .unwrap()
    }

    /// Sign a hand-made predicate with `key` and write it as data.sig.
    fn sign_predicate(&self, key: &str, p: &ArtifactPredicate, subject_digest: &str) {
        let st = Statement::new(
            vec![Subject {
                name: p.name.clone(),
                digest: BTreeMap::from([("sha256".into(), subject_digest.into())]),
            }],
            ARTIFACT_PREDICATE_TYPE,
            p,
        );
        let env = dsse::sign(IN_TOTO_PAYLOAD_TYPE, &st.to_bytes(), &self.key(key));
        std::fs::write(self.p("data.sig"), env.to_json()).unwrap();
    }

    fn predicate(&self) -> ArtifactPredicate {
        let payload = self.envelope().payload_bytes().unwrap();
        let st: Statement<ArtifactPredicate> =
            sealrun_verifier::statement::parse(&payload, ARTIFACT_PREDICATE_TYPE).unwrap();
        st.predicate
    }
}

fn flip_byte(path: &Path, at: usize) {
    let mut b = std::fs::read(path).unwrap();
    b[at] ^= 0x01;
    std::fs::write(path, b).unwrap();
}

#[test]
fn untampered_verifies_with_summary() {
    let fx = Fx::new();
    let t = ok(fx.verify(&[]));
    assert!(
        t.starts_with("OK dataset \"data\" v5 [classification=internal]: 3 files"),
        "{t}"
    );
    assert!(t.contains("signed by \"registry\" (ed25519"), "{t}");
}

#[test]
fn byte_flipped_names_file_expected_and_actual() {
    let fx = Fx::new();
    let before =
        sealrun_verifier::digest::Digest::of(&std::fs::read(fx.p("data/meta.json")).unwrap());
    flip_byte(&fx.p("data/meta.json"), 3);
    let after =
        sealrun_verifier::digest::Digest::of(&std::fs::read(fx.p("data/meta.json")).unwrap());
    fails_with(
        fx.verify(&[]),
        VERIFY_FAILED,
        &[
            "digest_mismatch",
            "artifact \"data\": file meta.json: digest mismatch",
            &format!("expected sha256:{before}"),
            &format!("actual sha256:{after}"),
        ],
    );
}

#[test]
fn truncated_and_appended_are_size_mismatches() {
    let fx = Fx::new();
    let p = fx.p("data/train/part-0.csv");
    let orig = std::fs::read(&p).unwrap();
    std::fs::write(&p, &orig[..orig.len() - 1]).unwrap();
    fails_with(
        fx.verify(&[]),
        VERIFY_FAILED,
        &[
            "size_mismatch",
            "file train/part-0.csv",
            "expected 12 bytes, actual 11 bytes",
        ],
    );
    let mut longer = orig.clone();
    longer.push(b'\n');
    std::fs::write(&p, &longer).unwrap();
    fails_with(
        fx.verify(&[]),
        VERIFY_FAILED,
        &["size_mismatch", "actual 13 bytes"],
    );
}

/// A small signed file grown to a huge (sparse) one is named from one read of it, never hashed:
/// 64 GiB of zeros would take over half a minute to hash here.
#[test]
fn a_small_file_grown_huge_is_refused_without_hashing_it() {
    let fx = Fx::new();
    let p = fx.p("data/train/part-0.csv");
    let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
    f.set_len(64 << 30).unwrap();
    drop(f);
    let t0 = std::time::Instant::now();
    fails_with(
        fx.verify(&[]),
        VERIFY_FAILED,
        &[
            "size_mismatch",
            "file train/part-0.csv",
            "expected 12 bytes, actual 68719476736 bytes",
        ],
    );
    assert!(
        t0.elapsed() < std::time::Duration::from_secs(10),
        "took {:?}: the grown file was read",
        t0.elapsed()
    );
}

#[test]
fn file_added_removed_renamed() {
    let fx = Fx::new();
    std::fs::write(fx.p("data/train/part-2.csv"), b"x,y\n").unwrap();
    fails_with(
        fx.verify(&["--json"]),
        VERIFY_FAILED,
        &["\"reason\":\"extra_file\"", "\"file\":\"train/part-2.csv\""],
    );
    std::fs::remove_file(fx.p("data/train/part-2.csv")).unwrap();
    std::fs::remove_file(fx.p("data/meta.json")).unwrap();
    fails_with(
        fx.verify(&[]),
        VERIFY_FAILED,
        &["missing_file", "file meta.json: missing"],
    );
    std::fs::write(fx.p("data/meta.json"), b"{\"rows\":3}\n").unwrap();
    ok(fx.verify(&[]));
    std::fs::rename(fx.p("data/train/part-1.csv"), fx.p("data/train/part-9.csv")).unwrap();
    fails_with(
        fx.verify(&[]),
        VERIFY_FAILED,
        &[
            "missing_file",
            "file train/part-1.csv",
            "(+1 more difference)",
        ],
    );
}

#[test]
fn symlink_swapped_in_is_refused_not_followed() {
    let fx = Fx::new();
    let target = fx.p("outside.json");
    std::fs::copy(fx.p("data/meta.json"), &target).unwrap();
    std::fs::remove_file(fx.p("data/meta.json")).unwrap();
    std::os::unix::fs::symlink(&target, fx.p("data/meta.json")).unwrap();
    fails_with(
        fx.verify(&[]),
        VERIFY_FAILED,
        &["(symlink)", "meta.json: is a symlink"],
    );
}

#[test]
fn path_traversal_in_hand_made_manifest() {
    let fx = Fx::new();
    for evil in ["../outside.json", "/etc/passwd", "train/../../x"] {
        let mut p = fx.predicate();
        p.manifest.resources[0].path = evil.to_string();
        let root = p.manifest.root_digest().to_hex();
        fx.sign_predicate("reg", &p, &root);
        fails_with(
            fx.verify(&[]),
            VERIFY_FAILED,
            &["unsafe_manifest", "unsafe path in manifest"],
        );
    }
}

#[test]
fn untrusted_key_is_refused() {
    let fx = Fx::new();
    ok(sealrun(
        &fx.dir,
        &[
            "sign",
            "data",
            "--key",
            "other.key",
            "--kind",
            "dataset",
            "--out",
            "data.sig",
        ],
    ));
    fails_with(
        fx.verify(&[]),
        VERIFY_FAILED,
        &["unknown_key", "no signature is by a trusted key"],
    );
}

#[test]
fn key_not_allowed_for_kind_or_label() {
    let fx = Fx::new();
    ok(sealrun(
        &fx.dir,
        &["sign", "data", "--key", "reg.key", "--kind", "model"],
    ));
    fails_with(
        fx.verify(&[]),
        VERIFY_FAILED,
        &[
            "kind_not_allowed",
            "key \"registry\"",
            "does not allow to sign kind model",
        ],
    );
    fx.sign(&["--label", "classification=secret"]);
    fails_with(
        fx.verify(&[]),
        VERIFY_FAILED,
        &[
            "label_not_allowed",
            "may not vouch for label classification=secret",
        ],
    );
    fx.sign(&["--label", "owner=alice"]);
    fails_with(
        fx.verify(&[]),
        VERIFY_FAILED,
        &["label_not_allowed", "owner=alice"],
    );
}

#[test]
fn consumer_admission_and_required_kind() {
    let fx = Fx::new();
    fails_with(
        fx.verify(&["--admit", "classification=public"]),
        VERIFY_FAILED,
        &["not_admitted", "classification=internal"],
    );
    ok(fx.verify(&["--admit", "classification=public,internal"]));
    fails_with(
        fx.verify(&["--kind", "features"]),
        VERIFY_FAILED,
        &["wrong_kind", "features was required"],
    );
}

#[test]
fn expired_signature_is_refused() {
    let fx = Fx::new();
    let mut p = fx.predicate();
    p.expires = Some("2020-01-01T00:00:00Z".into());
    let root = p.manifest.root_digest().to_hex();
    fx.sign_predicate("reg", &p, &root);
    fails_with(
        fx.verify(&[]),
        VERIFY_FAILED,
        &["expired", "signature expired at 2020-01-01T00:00:00Z"],
    );
    // Signing with a past expiry is refused up front.
    let out = sealrun(
        &fx.dir,
        &[
            "sign",
            "data",
            "--key",
            "reg.key",
            "--kind",
            "dataset",
            "--expires",
            "2020-01-01T00:00:00Z",
        ],
    );
    fails_with(out, 1, &["expiry 2020-01-01T00:00:00Z is in the past"]);
}

#[test]
fn lower_version_is_a_rollback() {
    let fx = Fx::new();
    ok(fx.verify(&["--state", "state.json", "--init-state"]));
    fx.sign(&["--label", "classification=internal", "--version", "4"]);
    fails_with(
        fx.verify(&["--state", "state.json"]),
        VERIFY_FAILED,
        &[
            "rolled_back",
            "version 4 is lower than version 5 already accepted",
        ],
    );
    // Without the state file the older version is still genuine.
    ok(fx.verify(&[]));
    fx.sign(&["--label", "classification=internal", "--version", "6"]);
    ok(fx.verify(&["--state", "state.json"]));
    let state = std::fs::read_to_string(fx.p("state.json")).unwrap();
    assert!(state.contains("\"data\": 6"), "{state}");
}

#[test]
fn payload_type_changed() {
    let fx = Fx::new();
    let mut env = fx.envelope();
    env.payload_type = "application/json".into();
    std::fs::write(fx.p("data.sig"), env.to_json()).unwrap();
    fails_with(
        fx.verify(&[]),
        VERIFY_FAILED,
        &["payload_type", "payloadType is \"application/json\""],
    );
}

#[test]
fn signature_copied_from_another_payload() {
    let fx = Fx::new();
    let original = fx.envelope();
    fx.sign(&["--label", "classification=public"]);
    let mut other = fx.envelope();
    other.signatures = original.signatures.clone();
    std::fs::write(fx.p("data.sig"), other.to_json()).unwrap();
    fails_with(
        fx.verify(&[]),
        VERIFY_FAILED,
        &["bad_signature", "does not verify"],
    );
}

#[test]
fn subject_not_matching_manifest() {
    let fx = Fx::new();
    let p = fx.predicate();
    fx.sign_predicate("reg", &p, &"ab".repeat(32));
    fails_with(fx.verify(&[]), VERIFY_FAILED, &["subject_mismatch"]);
}

#[test]
fn malformed_json_names_the_json_path() {
    let fx = Fx::new();
    std::fs::write(
        fx.p("data.sig"),
        b"{\"payload\": \"e30=\", \"payloadType\": 7",
    )
    .unwrap();
    fails_with(
        fx.verify(&[]),
        VERIFY_FAILED,
        &["malformed_envelope", "malformed envelope at $.payloadType"],
    );
    let env = fx.envelope_or_default();
    std::fs::write(fx.p("data.sig"), env).unwrap();
    fails_with(
        fx.verify(&[]),
        VERIFY_FAILED,
        &["malformed envelope at $.signatures[0].sig", "base64"],
    );
    // A predicate field of the wrong type, under a valid signature.
    let key = fx.key("reg");
    let stmt = br#"{"_type":"https://in-toto.io/Statement/v1","subject":[{"name":"data","digest":{"sha256":"00"}}],"predicateType":"https://sealrun.dev/artifact/v1","predicate":{"name":"data","kind":"dataset","version":"five"}}"#;
    std::fs::write(
        fx.p("data.sig"),
        dsse::sign(IN_TOTO_PAYLOAD_TYPE, stmt, &key).to_json(),
    )
    .unwrap();
    fails_with(
        fx.verify(&[]),
        VERIFY_FAILED,
        &["malformed envelope at payload$.predicate.version"],
    );
}

impl Fx {
    fn envelope_or_default(&self) -> String {
        r#"{"payload":"e30=","payloadType":"application/vnd.in-toto+json","signatures":[{"keyid":"x","sig":"!!"}]}"#.into()
    }
}

#[test]
fn unreadable_inputs_are_usage_errors() {
    let fx = Fx::new();
    fails_with(
        verify(
            &fx.dir,
            &[
                "artifact",
                "data",
                "--signature",
                "nope.sig",
                "--trust",
                "trust.toml",
            ],
        ),
        USAGE,
        &["nope.sig"],
    );
    fails_with(
        verify(
            &fx.dir,
            &[
                "artifact",
                "data",
                "--signature",
                "data.sig",
                "--trust",
                "missing.toml",
            ],
        ),
        USAGE,
        &["missing.toml"],
    );
    std::fs::write(
        fx.p("bad.toml"),
        "[[key]]\nname = \"x\"\npublic_key = \"reg.pub\"\nkinds = [\"datasets\"]\n",
    )
    .unwrap();
    fails_with(
        verify(
            &fx.dir,
            &[
                "artifact",
                "data",
                "--signature",
                "data.sig",
                "--trust",
                "bad.toml",
            ],
        ),
        USAGE,
        &["bad.toml", "unknown kind \"datasets\""],
    );
    fails_with(verify(&fx.dir, &["artifact", "data"]), USAGE, &["--trust"]);
}

#[test]
fn openssl_made_keys_sign_and_verify() {
    let fx = Fx::new();
    let gen = std::process::Command::new("openssl")
        .current_dir(&fx.dir)
        .args(["genpkey", "-algorithm", "ed25519", "-out", "ossl.key"])
        .status();
    let Ok(status) = gen else {
        eprintln!("openssl not installed; skipping");
        return;
    };
    assert!(status.success());
    std::process::Command::new("openssl")
        .current_dir(&fx.dir)
        .args(["pkey", "-in", "ossl.key", "-pubout", "-out", "ossl.pub"])
        .status()
        .unwrap();
    // A group-readable private key is refused.
    std::fs::set_permissions(
        fx.p("ossl.key"),
        std::os::unix::fs::PermissionsExt::from_mode(0o640),
    )
    .unwrap();
    fails_with(
        sealrun(
            &fx.dir,
            &["sign", "data", "--key", "ossl.key", "--kind", "dataset"],
        ),
        1,
        &["readable by group or others", "chmod 600"],
    );
    std::fs::set_permissions(
        fx.p("ossl.key"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    ok(sealrun(
        &fx.dir,
        &[
            "sign", "data", "--key", "ossl.key", "--kind", "dataset", "-o", "o.sig",
        ],
    ));
    ok(verify(
        &fx.dir,
        &["artifact", "data", "-s", "o.sig", "--key", "ossl.pub"],
    ));
}

#[test]
fn keygen_refuses_to_overwrite_and_writes_0600() {
    let fx = Fx::new();
    fails_with(
        sealrun(&fx.dir, &["keygen", "--out", "reg"]),
        1,
        &["already exists", "--force"],
    );
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(fx.p("reg.key")).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    let pem = std::fs::read_to_string(fx.p("reg.key")).unwrap();
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
    let pubpem = std::fs::read_to_string(fx.p("reg.pub")).unwrap();
    assert!(pubpem.starts_with("-----BEGIN PUBLIC KEY-----"));
}

#[test]
fn single_file_artifacts_and_sharded_large_files() {
    let fx = Fx::new();
    let big: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(fx.p("weights.bin"), &big).unwrap();
    ok(sealrun(
        &fx.dir,
        &[
            "sign",
            "weights.bin",
            "--key",
            "reg.key",
            "--kind",
            "model",
            "--shard-size",
            "65536",
        ],
    ));
    ok(verify(
        &fx.dir,
        &["artifact", "weights.bin", "--key", "reg.pub"],
    ));
    let env = Envelope::parse(&std::fs::read(fx.p("weights.bin.sig")).unwrap()).unwrap();
    let payload = String::from_utf8(env.payload_bytes().unwrap()).unwrap();
    assert!(
        payload.contains("\"algorithm\":\"sha256-shards\""),
        "{payload}"
    );
    assert!(payload.contains("\"shard_size\":65536"), "{payload}");
    flip_byte(&fx.p("weights.bin"), 200_000);
    fails_with(
        verify(&fx.dir, &["artifact", "weights.bin", "--key", "reg.pub"]),
        VERIFY_FAILED,
        &["digest_mismatch", "file weights.bin"],
    );
    // The library agrees with the CLI on the manifest of an untouched tree.
    let m = Manifest::build(&fx.p("data"), &WalkOptions::default(), None).unwrap();
    assert_eq!(m.resources.len(), 3);
    let _ = Kind::Dataset;
}
