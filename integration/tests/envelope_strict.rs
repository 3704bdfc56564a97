//! DSSE envelopes are strict (issue #11, item 19): the signer is chosen among
//! every signature that verifies (the key the policy allows for the kind wins,
//! whatever the order), an empty keyid names no key, at most 8 signatures are
//! read, and unknown fields are refused, so an envelope's bytes cannot change
//! while it still verifies. Through the real `sealrun-verify` binary.

use sealrun_integration::{fails_with, ok, verify, RunFixture};
use sealrun_verifier::dsse::{pae, Envelope, Signature};
use sealrun_verifier::keys::SigningKey;

fn key(f: &RunFixture, name: &str) -> SigningKey {
    let pem = std::fs::read_to_string(f.dir().join(format!("{name}.key"))).unwrap();
    SigningKey::from_pkcs8_pem(&pem).unwrap()
}

fn envelope(f: &RunFixture) -> Envelope {
    Envelope::parse(&std::fs::read(f.dir().join("data.sig")).unwrap()).unwrap()
}

/// A signature by `k` over the envelope's payload.
fn signature_by(env: &Envelope, k: &SigningKey) -> Signature {
    use base64::Engine as _;
    let msg = pae(&env.payload_type, &env.payload_bytes().unwrap());
    Signature {
        keyid: k.public().keyid(),
        sig: base64::engine::general_purpose::STANDARD.encode(k.sign(&msg)),
    }
}

fn verify_data(f: &RunFixture, sig: &str) -> std::process::Output {
    verify(
        f.dir(),
        &[
            "artifact",
            "data",
            "--signature",
            sig,
            "--trust",
            "trust.toml",
            "--json",
        ],
    )
}

#[test]
fn the_signer_allowed_for_the_kind_wins_whatever_the_order() {
    // data.sig is signed by `registry` (datasets only); add a valid signature by
    // `launcher` (records and checkpoints only) in front of it.
    let f = RunFixture::new();
    let mut env = envelope(&f);
    let extra = signature_by(&env, &key(&f, "launcher"));
    env.signatures.insert(0, extra);
    std::fs::write(f.dir().join("two.sig"), env.to_json()).unwrap();
    let t = ok(verify_data(&f, "two.sig"));
    assert!(t.contains("\"signer\":\"registry\""), "{t}");
    env.signatures.reverse();
    std::fs::write(f.dir().join("two.sig"), env.to_json()).unwrap();
    let t = ok(verify_data(&f, "two.sig"));
    assert!(t.contains("\"signer\":\"registry\""), "{t}");
}

#[test]
fn an_envelope_signed_only_by_a_key_not_allowed_for_the_kind_still_fails() {
    let f = RunFixture::new();
    let mut env = envelope(&f);
    env.signatures = vec![signature_by(&env, &key(&f, "launcher"))];
    std::fs::write(f.dir().join("l.sig"), env.to_json()).unwrap();
    fails_with(
        verify_data(&f, "l.sig"),
        1,
        &["kind_not_allowed", "\\\"launcher\\\""],
    );
}

#[test]
fn an_empty_keyid_is_no_wildcard() {
    let f = RunFixture::new();
    let mut env = envelope(&f);
    env.signatures[0].keyid.clear();
    std::fs::write(f.dir().join("anon.sig"), env.to_json()).unwrap();
    fails_with(
        verify_data(&f, "anon.sig"),
        1,
        &["unknown_key", "signed by key ids: (none)"],
    );
}

#[test]
fn more_than_eight_signatures_are_refused_unchecked() {
    let f = RunFixture::new();
    let mut env = envelope(&f);
    let s = env.signatures[0].clone();
    env.signatures = vec![s; 9];
    std::fs::write(f.dir().join("many.sig"), env.to_json()).unwrap();
    fails_with(
        verify_data(&f, "many.sig"),
        1,
        &["too_many_signatures", "9 signatures, over the limit of 8"],
    );
    // Eight are fine.
    env.signatures.pop();
    std::fs::write(f.dir().join("many.sig"), env.to_json()).unwrap();
    ok(verify_data(&f, "many.sig"));
}

#[test]
fn unknown_envelope_fields_are_refused() {
    let f = RunFixture::new();
    let mut v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(f.dir().join("data.sig")).unwrap()).unwrap();
    v["note"] = "bytes that change the file digest but not the signature".into();
    std::fs::write(f.dir().join("x.sig"), serde_json::to_vec(&v).unwrap()).unwrap();
    fails_with(
        verify_data(&f, "x.sig"),
        1,
        &["malformed_envelope", "unknown field `note`"],
    );
    let mut v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(f.dir().join("data.sig")).unwrap()).unwrap();
    v["signatures"][0]["extra"] = 1.into();
    std::fs::write(f.dir().join("y.sig"), serde_json::to_vec(&v).unwrap()).unwrap();
    fails_with(
        verify_data(&f, "y.sig"),
        1,
        &[
            "malformed_envelope",
            "$.signatures[0]",
            "unknown field `extra`",
        ],
    );
}
