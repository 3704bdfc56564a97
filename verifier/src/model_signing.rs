//! Interoperability with the OpenSSF model-signing tool: verify a directory
//! signed by `model_signing sign key` (a Sigstore bundle v0.3 holding a DSSE
//! envelope over an in-toto statement with predicate
//! `https://model_signing/signature/v1.0`).
//!
//! Guarantees: the bundle's structure is checked first; the signature must be
//! made by a key the policy trusts (ECDSA P-256/P-384 or Ed25519); the subject
//! digest must be SHA-256 over the listed resource digests in order; the files on
//! disk, minus `ignore_paths`, must be exactly the listed resources (checked by
//! name before any file is read) with the listed SHA-256 digests. The bundle
//! carries no version, so rollback protection cannot apply to it. Only the `files` serialization with `sha256` is
//! accepted; anything else is refused as unsupported, never skipped.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use crate::artifact::{
    check_hashes, check_listing, check_policy, Signed, Verified, VerifyError, VerifyOptions,
};
use crate::digest::{Algorithm, Digest};
use crate::dsse::{parse_json, DsseError, Envelope, IN_TOTO_PAYLOAD_TYPE};
use crate::manifest::{path_order, Manifest, Resource};
use crate::policy::{Kind, TrustedKey};
use crate::statement::{self, Statement};

/// The model-signing predicate type.
pub const PREDICATE_TYPE: &str = "https://model_signing/signature/v1.0";
const BUNDLE_PREFIX: &str = "application/vnd.dev.sigstore.bundle";

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Bundle {
    media_type: String,
    dsse_envelope: Envelope,
}

#[derive(Deserialize)]
struct Predicate {
    serialization: Serialization,
    resources: Vec<MsResource>,
}

#[derive(Deserialize)]
struct Serialization {
    method: String,
    hash_type: String,
    #[serde(default)]
    allow_symlinks: bool,
    #[serde(default)]
    ignore_paths: Vec<String>,
}

#[derive(Deserialize)]
struct MsResource {
    name: String,
    algorithm: String,
    digest: String,
}

/// Whether `sig` looks like a Sigstore bundle (checked by its mediaType).
pub fn is_bundle(sig: &[u8]) -> bool {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Probe {
        media_type: Option<String>,
    }
    serde_json::from_slice::<Probe>(sig)
        .ok()
        .and_then(|p| p.media_type)
        .is_some_and(|m| m.starts_with(BUNDLE_PREFIX))
}

/// Verify a model-signing bundle over the directory at `path`: the bundle, then
/// the file list (minus `ignore_paths`), then every digest.
pub fn verify(path: &Path, sig: &[u8], opts: &VerifyOptions) -> Result<Verified, VerifyError> {
    let shown = format!("{:?}", path.display().to_string());
    let mut signed = verify_signature(sig, &shown, opts)?;
    let listed = check_listing(&mut signed, path)?;
    check_hashes(&signed, &listed, opts.progress)?;
    Ok(signed.verified)
}

/// Verify a model-signing bundle without looking at the files: structure,
/// signer, statement, subject digest and policy. The expected manifest has no
/// sizes (model-signing signs none): [`check_listing`] takes them from disk.
pub fn verify_signature(
    sig: &[u8],
    shown: &str,
    opts: &VerifyOptions,
) -> Result<Signed, VerifyError> {
    let env_err = |source| VerifyError::Envelope {
        artifact: shown.to_string(),
        source,
    };
    let bundle: Bundle = parse_json(sig).map_err(env_err)?;
    if !bundle
        .media_type
        .starts_with("application/vnd.dev.sigstore.bundle.v0.3")
    {
        return Err(VerifyError::Unsupported {
            artifact: shown.to_string(),
            message: format!(
                "Sigstore bundle media type {:?} is not supported (v0.3 is)",
                bundle.media_type
            ),
        });
    }
    let env = bundle.dsse_envelope;
    // model-signing writes an empty keyid and does not normalise ECDSA S.
    let (signers, payload): (Vec<&TrustedKey>, Vec<u8>) = env
        .verify_allowing_high_s(IN_TOTO_PAYLOAD_TYPE, |id| opts.policy.lookup_bundle(id))
        .map_err(env_err)?;
    let st: Statement<Predicate> = statement::parse(&payload, PREDICATE_TYPE).map_err(env_err)?;
    let p = st.predicate;
    let name = st.subject[0].name.clone();
    let artifact = format!("{name:?}");
    let unsupported = |message: String| VerifyError::Unsupported {
        artifact: artifact.clone(),
        message,
    };
    if p.serialization.method != "files" || p.serialization.hash_type != "sha256" {
        return Err(unsupported(format!(
            "model-signing serialization {}/{} is not supported (files/sha256 is)",
            p.serialization.method, p.serialization.hash_type
        )));
    }
    if p.serialization.allow_symlinks {
        return Err(unsupported(
            "model-signing allow_symlinks=true is not supported".into(),
        ));
    }
    // Subject digest = SHA-256 over the raw resource digests in listed order.
    let mut h = Sha256::new();
    let mut resources = Vec::with_capacity(p.resources.len());
    for (i, r) in p.resources.iter().enumerate() {
        let malformed = |reason: String| VerifyError::Envelope {
            artifact: artifact.clone(),
            source: DsseError::Malformed {
                json_path: format!("payload$.predicate.resources[{i}]"),
                reason,
            },
        };
        if r.algorithm != "sha256" {
            return Err(malformed(format!(
                "algorithm {:?} is not sha256",
                r.algorithm
            )));
        }
        let d: Digest = r
            .digest
            .parse()
            .map_err(|e: crate::digest::BadHex| malformed(e.to_string()))?;
        h.update(d.0);
        resources.push(Resource {
            path: r.name.clone(),
            size: 0,
            algorithm: Algorithm::Sha256,
            digest: d,
        });
    }
    let computed = hex::encode(h.finalize());
    let subject = st.subject[0]
        .digest
        .get("sha256")
        .cloned()
        .unwrap_or_default();
    if computed != subject {
        return Err(VerifyError::SubjectMismatch {
            artifact,
            subject,
            root: computed,
        });
    }
    let kind = opts.expected_kind.unwrap_or(Kind::Model);
    let signer = opts.policy.choose(&signers, |k| k.may_sign(kind));
    check_policy(&artifact, signer, opts, kind, &BTreeMap::new(), None)?;
    resources.sort_by(|a, b| path_order(&a.path, &b.path));
    let expected = Manifest {
        shard_size: u64::MAX,
        resources,
    };
    expected
        .check()
        .map_err(|source| VerifyError::UnsafeManifest {
            artifact: artifact.clone(),
            source,
        })?;
    Ok(Signed {
        verified: Verified {
            name,
            kind,
            version: None,
            labels: BTreeMap::new(),
            digest: computed,
            files: expected.resources.len(),
            bytes: 0,
            signer: signer.name.clone(),
            keyid: signer.key.keyid(),
            key_algorithm: signer.key.algorithm().to_string(),
            format: "model-signing",
            expires: None,
        },
        expected,
        ignore: p.serialization.ignore_paths,
        sizes_signed: false,
    })
}
