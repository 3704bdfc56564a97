//! A model-signing bundle made at test time (the format the OpenSSF `model-signing` tool
//! writes), signed with a [`sealrun_integration::RunFixture`]'s
//! registry key.
#![allow(dead_code)]

use std::path::Path;

/// What the OpenSSF model-signing tool leaves out of what it signs.
const MS_IGNORE: [&str; 4] = [".gitignore", ".git", ".github", ".gitattributes"];

/// Sign `dir` the way `model_signing sign` does (a Sigstore bundle v0.3 holding a DSSE
/// envelope over the model-signing predicate: `files` serialization, sha256, the default
/// `ignore_paths`), with the fixture's registry key. Ignored files are not listed.
pub fn model_signing_sign(fixture_dir: &Path, dir: &str, files: &[(&str, &[u8])]) -> Vec<u8> {
    use sha2::Digest as _;
    let pem = std::fs::read_to_string(fixture_dir.join("reg.key")).unwrap();
    let key = sealrun_verifier::keys::SigningKey::from_pkcs8_pem(&pem).unwrap();
    let mut listed: Vec<&(&str, &[u8])> = files
        .iter()
        .filter(|(p, _)| !MS_IGNORE.iter().any(|ig| p.split('/').next() == Some(*ig)))
        .collect();
    listed.sort_by(|a, b| a.0.split('/').cmp(b.0.split('/')));
    let mut subject = sha2::Sha256::new();
    let resources: Vec<serde_json::Value> = listed
        .iter()
        .map(|(p, data)| {
            let d = sha2::Sha256::digest(data);
            subject.update(d);
            serde_json::json!({"name": p, "algorithm": "sha256", "digest": hex::encode(d)})
        })
        .collect();
    let statement = serde_json::json!({
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": dir, "digest": {"sha256": hex::encode(subject.finalize())}}],
        "predicateType": "https://model_signing/signature/v1.0",
        "predicate": {
            "serialization": {"ignore_paths": MS_IGNORE, "hash_type": "sha256", "method": "files", "allow_symlinks": false},
            "resources": resources,
        },
    });
    let env = sealrun_verifier::dsse::sign(
        "application/vnd.in-toto+json",
        &serde_json::to_vec(&statement).unwrap(),
        &key,
    );
    let hint = hex::encode(sha2::Sha256::digest(key.public().to_pem().as_bytes()));
    let bundle = serde_json::json!({
        "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
        "verificationMaterial": {"publicKey": {"hint": hint}, "tlogEntries": []},
        "dsseEnvelope": serde_json::from_slice::<serde_json::Value>(&env.to_json()).unwrap(),
    });
    serde_json::to_vec(&bundle).unwrap()
}
