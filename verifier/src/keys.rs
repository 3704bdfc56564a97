//! Public and private keys: Ed25519 for signing (PKCS#8 / SubjectPublicKeyInfo
//! PEM, the forms `openssl genpkey -algorithm ed25519` writes), and Ed25519,
//! ECDSA P-256 and P-384 for verification (DER-encoded ECDSA signatures).
//!
//! Guarantees: a key id is the hex SHA-256 of the key's SubjectPublicKeyInfo DER,
//! so it is the same whoever computes it; a private key is never printed (its
//! `Debug` shows the key id only) and its bytes are zeroed on drop.

use std::fmt;

use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::Signer as _;

use crate::digest::Digest;

/// Why a key could not be read or a signature did not verify.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("not a PEM public key (SubjectPublicKeyInfo) of a supported type (ed25519, ecdsa p-256, ecdsa p-384)")]
    UnsupportedPublicKey,
    #[error("not an Ed25519 PKCS#8 PEM private key (create one with `sealrun keygen` or `openssl genpkey -algorithm ed25519`)")]
    BadPrivateKey,
    #[error("signature does not verify")]
    BadSignature,
    #[error("signature is malformed for a {0} key")]
    MalformedSignature(&'static str),
    #[error("ECDSA signature has a high S value (only low-S signatures are accepted)")]
    HighS,
}

/// A public key that can verify signatures.
#[derive(Clone)]
pub enum PublicKey {
    Ed25519(ed25519_dalek::VerifyingKey),
    EcdsaP256(p256::ecdsa::VerifyingKey),
    EcdsaP384(p384::ecdsa::VerifyingKey),
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({} {})", self.algorithm(), self.keyid())
    }
}

impl PublicKey {
    /// Parse a SubjectPublicKeyInfo PEM of any supported type.
    pub fn from_pem(pem: &str) -> Result<Self, KeyError> {
        if let Ok(k) = ed25519_dalek::VerifyingKey::from_public_key_pem(pem) {
            return Ok(PublicKey::Ed25519(k));
        }
        if let Ok(k) = p256::ecdsa::VerifyingKey::from_public_key_pem(pem) {
            return Ok(PublicKey::EcdsaP256(k));
        }
        if let Ok(k) = p384::ecdsa::VerifyingKey::from_public_key_pem(pem) {
            return Ok(PublicKey::EcdsaP384(k));
        }
        Err(KeyError::UnsupportedPublicKey)
    }

    /// SubjectPublicKeyInfo DER.
    pub fn to_der(&self) -> Vec<u8> {
        let doc = match self {
            PublicKey::Ed25519(k) => k.to_public_key_der(),
            PublicKey::EcdsaP256(k) => k.to_public_key_der(),
            PublicKey::EcdsaP384(k) => k.to_public_key_der(),
        };
        doc.map(|d| d.as_bytes().to_vec()).unwrap_or_default()
    }

    /// SubjectPublicKeyInfo PEM.
    pub fn to_pem(&self) -> String {
        use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
        let pem = match self {
            PublicKey::Ed25519(k) => k.to_public_key_pem(LineEnding::LF),
            PublicKey::EcdsaP256(k) => k.to_public_key_pem(LineEnding::LF),
            PublicKey::EcdsaP384(k) => k.to_public_key_pem(LineEnding::LF),
        };
        pem.unwrap_or_default()
    }

    /// Hex SHA-256 of the SubjectPublicKeyInfo DER.
    pub fn keyid(&self) -> String {
        Digest::of(&self.to_der()).to_hex()
    }

    /// `ed25519`, `ecdsa-p256-sha256` or `ecdsa-p384-sha384`.
    pub fn algorithm(&self) -> &'static str {
        match self {
            PublicKey::Ed25519(_) => "ed25519",
            PublicKey::EcdsaP256(_) => "ecdsa-p256-sha256",
            PublicKey::EcdsaP384(_) => "ecdsa-p384-sha384",
        }
    }

    /// Verify `sig` over `msg` (Ed25519 raw 64 bytes, strict; ECDSA DER, low-S only).
    pub fn verify(&self, msg: &[u8], sig: &[u8]) -> Result<(), KeyError> {
        self.verify_with(msg, sig, false)
    }

    /// [`PublicKey::verify`], optionally accepting high-S ECDSA signatures (for
    /// third-party formats whose signers do not normalise S).
    pub fn verify_with(&self, msg: &[u8], sig: &[u8], allow_high_s: bool) -> Result<(), KeyError> {
        match self {
            PublicKey::Ed25519(k) => {
                let s = ed25519_dalek::Signature::from_slice(sig)
                    .map_err(|_| KeyError::MalformedSignature("ed25519"))?;
                k.verify_strict(msg, &s).map_err(|_| KeyError::BadSignature)
            }
            PublicKey::EcdsaP256(k) => {
                let s = p256::ecdsa::Signature::from_der(sig)
                    .map_err(|_| KeyError::MalformedSignature("ecdsa p-256"))?;
                let s = match s.normalize_s() {
                    Some(_) if !allow_high_s => return Err(KeyError::HighS),
                    Some(low) => low,
                    None => s,
                };
                p256::ecdsa::signature::Verifier::verify(k, msg, &s)
                    .map_err(|_| KeyError::BadSignature)
            }
            PublicKey::EcdsaP384(k) => {
                let s = p384::ecdsa::Signature::from_der(sig)
                    .map_err(|_| KeyError::MalformedSignature("ecdsa p-384"))?;
                let s = match s.normalize_s() {
                    Some(_) if !allow_high_s => return Err(KeyError::HighS),
                    Some(low) => low,
                    None => s,
                };
                p384::ecdsa::signature::Verifier::verify(k, msg, &s)
                    .map_err(|_| KeyError::BadSignature)
            }
        }
    }
}

/// An Ed25519 signing key. Zeroed on drop; `Debug` shows only the key id.
pub struct SigningKey(ed25519_dalek::SigningKey);

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey(ed25519 {})", self.public().keyid())
    }
}

impl SigningKey {
    /// A fresh key from the operating system's random source.
    pub fn generate() -> Self {
        SigningKey(ed25519_dalek::SigningKey::generate(&mut rand_core::OsRng))
    }

    /// Parse an Ed25519 PKCS#8 PEM private key.
    pub fn from_pkcs8_pem(pem: &str) -> Result<Self, KeyError> {
        ed25519_dalek::SigningKey::from_pkcs8_pem(pem)
            .map(SigningKey)
            .map_err(|_| KeyError::BadPrivateKey)
    }

    /// PKCS#8 PEM (zeroed when dropped).
    pub fn to_pkcs8_pem(&self) -> zeroize::Zeroizing<String> {
        use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
        self.0
            .to_pkcs8_pem(LineEnding::LF)
            .expect("encoding an ed25519 key as PKCS#8 cannot fail")
    }

    /// The matching public key.
    pub fn public(&self) -> PublicKey {
        PublicKey::Ed25519(self.0.verifying_key())
    }

    /// A 32-byte key for another purpose, derived from this key and `context`
    /// (SHA-256 over a domain prefix, the context and the private key bytes).
    /// Used for keyed fingerprints; reveals nothing about the signing key.
    pub fn derive(&self, context: &str) -> zeroize::Zeroizing<[u8; 32]> {
        use sha2::Digest as _;
        let mut h = sha2::Sha256::new();
        h.update(b"sealrun-derive-v1\0");
        h.update(context.as_bytes());
        h.update([0u8]);
        h.update(self.0.to_bytes());
        zeroize::Zeroizing::new(h.finalize().into())
    }

    /// Sign `msg`; 64 raw bytes.
    pub fn sign(&self, msg: &[u8]) -> Vec<u8> {
        self.0.sign(msg).to_bytes().to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_keyid_stable() {
        let k = SigningKey::generate();
        let pem = k.to_pkcs8_pem();
        let k2 = SigningKey::from_pkcs8_pem(&pem).unwrap();
        let p = PublicKey::from_pem(&k2.public().to_pem()).unwrap();
        assert_eq!(p.keyid(), k.public().keyid());
        let sig = k.sign(b"m");
        p.verify(b"m", &sig).unwrap();
        assert!(p.verify(b"n", &sig).is_err());
    }

    #[test]
    fn openssl_style_pem_parses() {
        // Produced by `openssl genpkey -algorithm ed25519` (RFC 8410 example key).
        let pem = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEINTuctv5E1hK1bbY8fdp+K06/nwoy/HU++CXqI9EdVhC\n-----END PRIVATE KEY-----\n";
        let k = SigningKey::from_pkcs8_pem(pem).unwrap();
        assert_eq!(k.public().algorithm(), "ed25519");
    }
}
