//! DSSE v1 envelopes: the one signing path for artifacts, run records and
//! audit checkpoints.
//!
//! Guarantees: the signed bytes are exactly the DSSE v1 pre-authentication
//! encoding (`PAE`) of the payload type and payload; base64 is standard and
//! padded; an envelope larger than [`MAX_ENVELOPE_BYTES`] is refused before it is
//! read into memory; a malformed envelope is reported with the JSON path of the
//! problem; a signature only counts if a key the caller trusts verifies it.
//!
//! So that an envelope's bytes cannot change while it still verifies (chain
//! links and audit entries name envelopes by file digest): unknown fields are
//! refused, base64 must be canonical, Ed25519 is verified strictly and ECDSA
//! signatures must be low-S. At most [`MAX_SIGNATURES`] signatures are read; an
//! empty `keyid` names no key; every signature is tried and all trusted keys
//! that verify are returned (in the caller's order, not the envelope's), so the
//! caller picks the one its policy allows and the order of signatures does not
//! matter.

use std::io::Read;
use std::path::Path;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::keys::{PublicKey, SigningKey};

/// The payload type of in-toto statements.
pub const IN_TOTO_PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";

/// Envelopes above this size are refused unread (16 MiB).
pub const MAX_ENVELOPE_BYTES: u64 = 16 << 20;

/// Envelopes with more signatures than this are refused before any is checked.
pub const MAX_SIGNATURES: usize = 8;

/// Why an envelope could not be read or verified.
#[derive(Debug, thiserror::Error)]
pub enum DsseError {
    #[error("{path}: cannot read: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: envelope is {size} bytes, over the {limit}-byte limit")]
    TooLarge { path: String, size: u64, limit: u64 },
    #[error("malformed envelope at {json_path}: {reason}")]
    Malformed { json_path: String, reason: String },
    #[error("payloadType is {found:?}, expected {expected:?}")]
    PayloadType { found: String, expected: String },
    #[error("envelope has no signatures")]
    NoSignatures,
    #[error("envelope has {count} signatures, over the limit of {limit}")]
    TooManySignatures { count: usize, limit: usize },
    #[error("signature by key {keyid} has a high S value: sealrun accepts only low-S (canonical) ECDSA signatures, so that an envelope's bytes cannot change while it still verifies")]
    HighS { keyid: String },
    #[error("no signature is by a trusted key (signed by key ids: {keyids})")]
    UnknownKey { keyids: String },
    #[error("signature by key {keyid} does not verify: the payload or payloadType was changed after signing, or the signature belongs to another payload")]
    BadSignature { keyid: String },
}

impl DsseError {
    /// A stable machine-readable name for the reason.
    pub fn kind(&self) -> &'static str {
        match self {
            DsseError::Io { .. } => "unreadable",
            DsseError::TooLarge { .. } => "envelope_too_large",
            DsseError::Malformed { .. } => "malformed_envelope",
            DsseError::PayloadType { .. } => "payload_type",
            DsseError::NoSignatures => "unsigned",
            DsseError::TooManySignatures { .. } => "too_many_signatures",
            DsseError::HighS { .. } => "non_canonical_signature",
            DsseError::UnknownKey { .. } => "unknown_key",
            DsseError::BadSignature { .. } => "bad_signature",
        }
    }
}

/// One signature.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signature {
    /// Hex key id (SHA-256 of the signer's SubjectPublicKeyInfo DER). Empty
    /// (as model-signing writes) names no key in a plain envelope.
    #[serde(default)]
    pub keyid: String,
    /// Standard padded base64 of the signature bytes.
    pub sig: String,
}

/// A DSSE envelope as it appears on disk.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Envelope {
    pub payload: String,
    pub payload_type: String,
    pub signatures: Vec<Signature>,
}

/// The DSSE v1 pre-authentication encoding.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + payload_type.len() + 32);
    out.extend_from_slice(b"DSSEv1 ");
    out.extend_from_slice(payload_type.len().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(payload_type.as_bytes());
    out.push(b' ');
    out.extend_from_slice(payload.len().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(payload);
    out
}

/// Sign `payload` with `key`; the signature's keyid is the key's id.
pub fn sign(payload_type: &str, payload: &[u8], key: &SigningKey) -> Envelope {
    let sig = key.sign(&pae(payload_type, payload));
    Envelope {
        payload: STANDARD.encode(payload),
        payload_type: payload_type.to_string(),
        signatures: vec![Signature {
            keyid: key.public().keyid(),
            sig: STANDARD.encode(sig),
        }],
    }
}

/// Read a file of at most [`MAX_ENVELOPE_BYTES`], refusing larger ones unread.
pub fn read_limited(path: &Path) -> Result<Vec<u8>, DsseError> {
    let io = |source| DsseError::Io {
        path: path.display().to_string(),
        source,
    };
    let f = std::fs::File::open(path).map_err(io)?;
    let size = f.metadata().map_err(io)?.len();
    if size > MAX_ENVELOPE_BYTES {
        return Err(DsseError::TooLarge {
            path: path.display().to_string(),
            size,
            limit: MAX_ENVELOPE_BYTES,
        });
    }
    let mut buf = Vec::with_capacity(size as usize);
    f.take(MAX_ENVELOPE_BYTES + 1)
        .read_to_end(&mut buf)
        .map_err(io)?;
    if buf.len() as u64 > MAX_ENVELOPE_BYTES {
        return Err(DsseError::TooLarge {
            path: path.display().to_string(),
            size: buf.len() as u64,
            limit: MAX_ENVELOPE_BYTES,
        });
    }
    Ok(buf)
}

/// Parse JSON into `T`, reporting the JSON path of the first problem.
///
/// The fast path parses without tracking; only a failed parse is repeated with
/// path tracking to name where the problem is.
pub fn parse_json<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, DsseError> {
    if let Ok(v) = serde_json::from_slice(bytes) {
        return Ok(v);
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    match serde_path_to_error::deserialize::<_, T>(de) {
        Ok(v) => Ok(v),
        Err(e) => {
            let p = e.path().to_string();
            Err(DsseError::Malformed {
                json_path: if p == "." {
                    "$".into()
                } else {
                    format!("$.{p}")
                },
                reason: e.into_inner().to_string(),
            })
        }
    }
}

fn b64(field: String, s: &str) -> Result<Vec<u8>, DsseError> {
    STANDARD.decode(s).map_err(|e| DsseError::Malformed {
        json_path: field,
        reason: format!("not standard padded base64: {e}"),
    })
}

impl Envelope {
    /// Parse an envelope from JSON, checking its structure (not its signatures).
    pub fn parse(bytes: &[u8]) -> Result<Envelope, DsseError> {
        let env: Envelope = parse_json(bytes)?;
        env.check_count()?;
        b64("$.payload".into(), &env.payload)?;
        for (i, s) in env.signatures.iter().enumerate() {
            b64(format!("$.signatures[{i}].sig"), &s.sig)?;
        }
        Ok(env)
    }

    /// The decoded payload.
    pub fn payload_bytes(&self) -> Result<Vec<u8>, DsseError> {
        b64("$.payload".into(), &self.payload)
    }

    /// Pretty JSON with a trailing newline.
    pub fn to_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).expect("envelope serializes");
        v.push(b'\n');
        v
    }

    fn check_count(&self) -> Result<(), DsseError> {
        match self.signatures.len() {
            0 => Err(DsseError::NoSignatures),
            n if n > MAX_SIGNATURES => Err(DsseError::TooManySignatures {
                count: n,
                limit: MAX_SIGNATURES,
            }),
            _ => Ok(()),
        }
    }

    /// Verify the envelope: payload type first, then every signature whose key
    /// `lookup` resolves. Returns every key that verified a signature (at least
    /// one, each once, in the order `lookup` lists them across signatures) and
    /// the payload; the caller picks the signer its policy allows, so the order
    /// of signatures never decides. ECDSA signatures must be low-S.
    pub fn verify<'k, K: 'k>(
        &self,
        expected_type: &str,
        lookup: impl Fn(&str) -> Vec<(&'k K, &'k PublicKey)>,
    ) -> Result<(Vec<&'k K>, Vec<u8>), DsseError> {
        self.verify_with(expected_type, lookup, false)
    }

    /// [`Envelope::verify`] for envelopes made by third-party tools that do not
    /// normalise ECDSA signatures (Sigstore bundles): high-S is accepted.
    pub fn verify_allowing_high_s<'k, K: 'k>(
        &self,
        expected_type: &str,
        lookup: impl Fn(&str) -> Vec<(&'k K, &'k PublicKey)>,
    ) -> Result<(Vec<&'k K>, Vec<u8>), DsseError> {
        self.verify_with(expected_type, lookup, true)
    }

    fn verify_with<'k, K: 'k>(
        &self,
        expected_type: &str,
        lookup: impl Fn(&str) -> Vec<(&'k K, &'k PublicKey)>,
        allow_high_s: bool,
    ) -> Result<(Vec<&'k K>, Vec<u8>), DsseError> {
        if self.payload_type != expected_type {
            return Err(DsseError::PayloadType {
                found: self.payload_type.clone(),
                expected: expected_type.to_string(),
            });
        }
        self.check_count()?;
        let payload = self.payload_bytes()?;
        let msg = pae(&self.payload_type, &payload);
        let mut verified: Vec<&'k K> = Vec::new();
        let (mut bad, mut high_s) = (None, None);
        for (i, s) in self.signatures.iter().enumerate() {
            let sig = b64(format!("$.signatures[{i}].sig"), &s.sig)?;
            for (who, key) in lookup(&s.keyid) {
                match key.verify_with(&msg, &sig, allow_high_s) {
                    Ok(()) => {
                        if !verified.iter().any(|v| std::ptr::eq(*v, who)) {
                            verified.push(who);
                        }
                    }
                    Err(crate::keys::KeyError::HighS) => high_s = Some(key.keyid()),
                    Err(_) => bad = Some(key.keyid()),
                }
            }
        }
        if !verified.is_empty() {
            return Ok((verified, payload));
        }
        if let Some(keyid) = high_s {
            return Err(DsseError::HighS { keyid });
        }
        match bad {
            Some(keyid) => Err(DsseError::BadSignature { keyid }),
            None => Err(DsseError::UnknownKey {
                keyids: self
                    .signatures
                    .iter()
                    .map(|s| {
                        if s.keyid.is_empty() {
                            "(none)"
                        } else {
                            &s.keyid
                        }
                    })
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pae_matches_spec_example() {
        // From the DSSE v1 protocol document.
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
        );
    }

    #[test]
    fn sign_verify_and_tamper() {
        let k = SigningKey::generate();
        let p = k.public();
        let env = sign(IN_TOTO_PAYLOAD_TYPE, b"{}", &k);
        let parsed = Envelope::parse(&env.to_json()).unwrap();
        let look = |id: &str| {
            if id == p.keyid() {
                vec![(&(), &p)]
            } else {
                vec![]
            }
        };
        assert_eq!(
            parsed.verify(IN_TOTO_PAYLOAD_TYPE, look).unwrap().0.len(),
            1
        );
        let mut t = parsed.clone();
        t.payload = STANDARD.encode(b"{ }");
        assert!(matches!(
            t.verify(IN_TOTO_PAYLOAD_TYPE, look),
            Err(DsseError::BadSignature { .. })
        ));
    }

    #[test]
    fn malformed_reports_json_path() {
        let e = Envelope::parse(
            br#"{"payload":"e30=","payloadType":"x","signatures":[{"keyid":"a","sig":5}]}"#,
        )
        .unwrap_err();
        match e {
            DsseError::Malformed { json_path, .. } => assert_eq!(json_path, "$.signatures[0].sig"),
            e => panic!("{e}"),
        }
    }

    fn p256_envelope(high_s: bool) -> (Envelope, PublicKey) {
        use p256::ecdsa::signature::Signer as _;
        let sk = p256::ecdsa::SigningKey::random(&mut rand_core::OsRng);
        let public = PublicKey::EcdsaP256(*sk.verifying_key());
        let payload = b"{}";
        let sig: p256::ecdsa::Signature = sk.sign(&pae(IN_TOTO_PAYLOAD_TYPE, payload));
        let low = sig.normalize_s().unwrap_or(sig);
        let sig = if high_s {
            p256::ecdsa::Signature::from_scalars(low.r(), -*low.s()).unwrap()
        } else {
            low
        };
        let env = Envelope {
            payload: STANDARD.encode(payload),
            payload_type: IN_TOTO_PAYLOAD_TYPE.into(),
            signatures: vec![Signature {
                keyid: public.keyid(),
                sig: STANDARD.encode(sig.to_der().as_bytes()),
            }],
        };
        (env, public)
    }

    #[test]
    fn high_s_ecdsa_is_refused_except_for_bundles() {
        for high in [false, true] {
            let (env, p) = p256_envelope(high);
            let look = |id: &str| {
                if id == p.keyid() {
                    vec![(&(), &p)]
                } else {
                    vec![]
                }
            };
            let r = env.verify(IN_TOTO_PAYLOAD_TYPE, look);
            if high {
                assert!(matches!(r, Err(DsseError::HighS { .. })), "{r:?}");
            } else {
                r.unwrap();
            }
            // Both forms verify mathematically: only the canonical one is accepted.
            env.verify_allowing_high_s(IN_TOTO_PAYLOAD_TYPE, look)
                .unwrap();
        }
    }

    #[test]
    fn every_verifying_key_is_returned_whatever_the_order() {
        let (a, b) = (SigningKey::generate(), SigningKey::generate());
        let keys = [("a", a.public()), ("b", b.public())];
        let look = |id: &str| {
            keys.iter()
                .filter(|(_, k)| k.keyid() == id)
                .map(|(n, k)| (n, k))
                .collect::<Vec<_>>()
        };
        let mut env = sign(IN_TOTO_PAYLOAD_TYPE, b"{}", &a);
        env.signatures
            .push(sign(IN_TOTO_PAYLOAD_TYPE, b"{}", &b).signatures[0].clone());
        let (who, _) = env.verify(IN_TOTO_PAYLOAD_TYPE, look).unwrap();
        assert_eq!(who, [&"a", &"b"]);
        env.signatures.reverse();
        let (who, _) = env.verify(IN_TOTO_PAYLOAD_TYPE, look).unwrap();
        assert_eq!(who, [&"b", &"a"]);
        // An empty keyid is no wildcard: it names no key.
        let mut anon = sign(IN_TOTO_PAYLOAD_TYPE, b"{}", &a);
        anon.signatures[0].keyid.clear();
        assert!(matches!(
            anon.verify(IN_TOTO_PAYLOAD_TYPE, look),
            Err(DsseError::UnknownKey { .. })
        ));
    }

    #[test]
    fn too_many_signatures_and_unknown_fields_are_refused() {
        let k = SigningKey::generate();
        let mut env = sign(IN_TOTO_PAYLOAD_TYPE, b"{}", &k);
        env.signatures = vec![env.signatures[0].clone(); MAX_SIGNATURES + 1];
        assert!(matches!(
            Envelope::parse(&env.to_json()),
            Err(DsseError::TooManySignatures { count: 9, limit: 8 })
        ));
        let e = Envelope::parse(
            br#"{"payload":"e30=","payloadType":"x","signatures":[{"keyid":"a","sig":"e30="}],"extra":1}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("unknown field `extra`"), "{e}");
        let e = Envelope::parse(
            br#"{"payload":"e30=","payloadType":"x","signatures":[{"keyid":"a","sig":"e30=","cert":""}]}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("unknown field `cert`"), "{e}");
    }
}
