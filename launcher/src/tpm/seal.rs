//! Sealing a small secret (e.g. a 32-byte X25519 identity) to this TPM and a PCR state.
//!
//! [`seal`] creates a keyed-hash data object under sealrun's storage root key (recreated from
//! the owner seed each time, never exported) whose only authorisation is a `TPM2_PolicyPCR`
//! policy over the sha256 PCRs listed in a [`SealPolicy`], with their expected values. The
//! [`SealedBlob`] (the TPM-encrypted private part and the public part) may be stored anywhere:
//! only this TPM can load it, and [`unseal`] returns the secret only while the PCRs hold those
//! values.
//!
//! The usual policy is [`SealPolicy::launcher`]: PCR 23 in the state the launcher's measurement
//! leaves it right after extending its own digest (`reset`, then `extend(launcher sha256)`,
//! see [`crate::tpm::measure`]), so the secret unseals only under that launcher build's
//! measurement (and see the limits in docs/attestation.md: PCR 23 is resettable by any root
//! process on the host).

use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::wire::{self, Writer, ALG_SHA256};
use super::{Tpm, TpmError};

const CC_POLICY_PCR: u32 = 0x17F;
/// Largest secret a sealed data object holds (MAX_SYM_DATA).
pub const MAX_SEALED: usize = 128;

/// One PCR and the sha256 value it must hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PcrValue {
    pub pcr: u8,
    /// Hex SHA-256.
    pub sha256: String,
}

/// Which sha256 PCRs a sealed secret is bound to, and their values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealPolicy {
    /// Ascending PCR index, each once.
    pub pcrs: Vec<PcrValue>,
}

impl SealPolicy {
    /// PCR 23 as the launcher's measurement leaves it after extending `launcher_sha256`
    /// into the freshly reset PCR: `sha256(0^32 || launcher_sha256)`.
    pub fn launcher(launcher_sha256: &[u8; 32]) -> SealPolicy {
        let v = super::measure::extend_value(&[0u8; 32], launcher_sha256);
        SealPolicy {
            pcrs: vec![PcrValue {
                pcr: super::measure::PCR,
                sha256: hex::encode(v),
            }],
        }
    }

    /// Add the current values of `pcrs` (e.g. 0–7: the platform's boot measurements, which bind
    /// the secret to this boot chain too; a firmware or boot-loader update then needs a
    /// re-seal).
    pub fn with_current(mut self, tpm: &mut Tpm, pcrs: &[u8]) -> Result<SealPolicy, TpmError> {
        let values = tpm.pcr_read(pcrs)?;
        let mut sorted = pcrs.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        for (p, v) in sorted.into_iter().zip(values) {
            self.pcrs.retain(|x| x.pcr != p);
            self.pcrs.push(PcrValue {
                pcr: p,
                sha256: hex::encode(v),
            });
        }
        self.pcrs.sort_by_key(|x| x.pcr);
        Ok(self)
    }

    fn indices(&self) -> Vec<u8> {
        self.pcrs.iter().map(|p| p.pcr).collect()
    }

    fn check(&self) -> Result<Vec<[u8; 32]>, TpmError> {
        let bad = |m: String| TpmError::BadBlob(m);
        if self.pcrs.is_empty() {
            return Err(bad("the seal policy names no PCR".into()));
        }
        if self.pcrs.windows(2).any(|w| w[0].pcr >= w[1].pcr)
            || self.pcrs.iter().any(|p| p.pcr > 23)
        {
            return Err(bad("PCRs must be ascending, each once, 0-23".into()));
        }
        self.pcrs
            .iter()
            .map(|p| {
                hex::decode(&p.sha256)
                    .ok()
                    .and_then(|v| <[u8; 32]>::try_from(v).ok())
                    .ok_or_else(|| bad(format!("PCR {}: not a hex SHA-256", p.pcr)))
            })
            .collect()
    }

    /// The policy digest `TPM2_PolicyPCR` produces in a fresh session when the PCRs hold these
    /// values: `sha256(0^32 || TPM_CC_PolicyPCR || TPML_PCR_SELECTION || sha256(values))`.
    pub fn digest(&self) -> Result<[u8; 32], TpmError> {
        let values = self.check()?;
        let mut pcr_digest = Sha256::new();
        for v in &values {
            pcr_digest.update(v);
        }
        let mut w = Writer::new();
        w.bytes(&[0u8; 32]).u32(CC_POLICY_PCR);
        wire::pcr_selection(&mut w, ALG_SHA256, &self.indices());
        w.bytes(&pcr_digest.finalize());
        Ok(Sha256::digest(&w.buf).into())
    }
}

/// A secret sealed by [`seal`]: storable (JSON) and useless off the TPM that made it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealedBlob {
    /// `tpm2-pcr-policy-v1`.
    pub format: String,
    /// The parent key: sealrun's ECC P-256 storage root key in the owner hierarchy.
    pub parent: String,
    pub policy: SealPolicy,
    /// `TPM2B_PRIVATE` (encrypted by the parent; base64).
    pub private: String,
    /// `TPM2B_PUBLIC` (its authPolicy is the policy's digest; base64).
    pub public: String,
}

const FORMAT: &str = "tpm2-pcr-policy-v1";
const PARENT: &str = "owner/ecc-p256-srk";

/// Seal `secret` (at most [`MAX_SEALED`] bytes) to this TPM and `policy`.
pub fn seal(tpm: &mut Tpm, secret: &[u8], policy: &SealPolicy) -> Result<SealedBlob, TpmError> {
    if secret.is_empty() || secret.len() > MAX_SEALED {
        return Err(TpmError::BadBlob(format!(
            "a sealed secret is 1 to {MAX_SEALED} bytes, not {}",
            secret.len()
        )));
    }
    let digest = policy.digest()?;
    let mut template = Writer::new();
    wire::sealed_template(&mut template, &digest);
    let srk = tpm.create_srk()?;
    let created = tpm.create(srk, &template.buf, secret);
    tpm.flush(srk);
    let created = created?;
    let b64 = base64::engine::general_purpose::STANDARD;
    Ok(SealedBlob {
        format: FORMAT.into(),
        parent: PARENT.into(),
        policy: policy.clone(),
        private: b64.encode(&created.private),
        public: b64.encode(&created.public),
    })
}

/// Unseal `blob`: the secret, if this is the TPM that sealed it and its PCRs hold the values
/// of the blob's policy now; [`TpmError::PolicyMismatch`] if they do not.
pub fn unseal(tpm: &mut Tpm, blob: &SealedBlob) -> Result<zeroize::Zeroizing<Vec<u8>>, TpmError> {
    if blob.format != FORMAT || blob.parent != PARENT {
        return Err(TpmError::BadBlob(format!(
            "format {:?} / parent {:?}: expected {FORMAT} / {PARENT}",
            blob.format, blob.parent
        )));
    }
    blob.policy.check()?;
    let b64 = base64::engine::general_purpose::STANDARD;
    let decode = |what: &str, s: &str| {
        b64.decode(s)
            .map_err(|e| TpmError::BadBlob(format!("{what}: {e}")))
    };
    let obj = super::commands::CreatedObject {
        private: decode("private", &blob.private)?,
        public: decode("public", &blob.public)?,
    };
    let srk = tpm.create_srk()?;
    let item = match tpm.load(srk, &obj) {
        Ok(h) => h,
        Err(e) => {
            tpm.flush(srk);
            return Err(e);
        }
    };
    let result = unseal_loaded(tpm, item, &blob.policy.indices());
    tpm.flush(item);
    tpm.flush(srk);
    result
}

fn unseal_loaded(
    tpm: &mut Tpm,
    item: u32,
    pcrs: &[u8],
) -> Result<zeroize::Zeroizing<Vec<u8>>, TpmError> {
    let session = tpm.start_policy_session(false)?;
    if let Err(e) = tpm.policy_pcr(session, pcrs, &[]) {
        tpm.flush(session);
        return Err(e);
    }
    // The TPM flushes the session after Unseal (continueSession is clear), failed or not.
    tpm.unseal_with(item, session)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_digest_matches_tpm2_createpolicy() {
        // `tpm2_pcrreset 23; tpm2_pcrextend 23:sha256=$(printf 'a%.0s' {1..64})` then
        // `tpm2_createpolicy --policy-pcr -l sha256:23 -L p` against swtpm writes this digest.
        let p = SealPolicy::launcher(&[0xaa; 32]);
        assert_eq!(
            hex::encode(p.digest().unwrap()),
            include_str!("testdata/policy_pcr23_aa.hex").trim()
        );
    }

    #[test]
    fn malformed_policies_are_refused() {
        let mut p = SealPolicy::launcher(&[1; 32]);
        p.pcrs[0].sha256 = "00".into();
        assert!(p.digest().is_err());
        let p = SealPolicy { pcrs: vec![] };
        assert!(p.digest().is_err());
    }
}
