//! TPM 2.0 wire format (TCG TPM 2.0 Library, Part 2): big-endian integers, sized buffers
//! (`TPM2B_*`), and the few structures sealrun sends. A [`Reader`] never reads past its input:
//! every short or inconsistent buffer is a [`WireError`], never a panic. The reading half is
//! the verifier's ([`sealrun_verifier::tpm_wire`]), which parses quotes too.

pub use sealrun_verifier::tpm_wire::{read_pcr_selection, Reader, WireError};

/// Structure tags.
pub const ST_NO_SESSIONS: u16 = 0x8001;
pub const ST_SESSIONS: u16 = 0x8002;

/// Algorithm identifiers.
pub const ALG_SHA256: u16 = 0x000B;
pub const ALG_NULL: u16 = 0x0010;
pub const ALG_KEYEDHASH: u16 = 0x0008;
pub const ALG_ECC: u16 = 0x0023;
pub const ALG_AES: u16 = 0x0006;
pub const ALG_CFB: u16 = 0x0043;
pub const ALG_ECDSA: u16 = 0x0018;
pub const ECC_NIST_P256: u16 = 0x0003;

/// Permanent handles.
pub const RH_OWNER: u32 = 0x4000_0001;
pub const RH_NULL: u32 = 0x4000_0007;
pub const RS_PW: u32 = 0x4000_0009;

/// Object attributes (TPMA_OBJECT).
pub const OA_FIXED_TPM: u32 = 1 << 1;
pub const OA_FIXED_PARENT: u32 = 1 << 4;
pub const OA_SENSITIVE_DATA_ORIGIN: u32 = 1 << 5;
pub const OA_USER_WITH_AUTH: u32 = 1 << 6;
pub const OA_NO_DA: u32 = 1 << 10;
pub const OA_RESTRICTED: u32 = 1 << 16;
pub const OA_DECRYPT: u32 = 1 << 17;
pub const OA_SIGN: u32 = 1 << 18;

/// Big-endian writer into a growable buffer (zeroed on drop: a command may carry a secret
/// being sealed).
#[derive(Debug, Default, Clone)]
pub struct Writer {
    pub buf: Vec<u8>,
}

impl Drop for Writer {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.buf);
    }
}

impl Writer {
    pub fn new() -> Self {
        Writer::default()
    }
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.push(v);
        self
    }
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(b);
        self
    }
    /// A `TPM2B_*`: a u16 size, then the bytes. Callers keep `b` under 64 KiB (every buffer
    /// sealrun sends is a digest, a key template or a sealed secret of at most 128 bytes).
    pub fn tpm2b(&mut self, b: &[u8]) -> &mut Self {
        let n = u16::try_from(b.len()).expect("TPM2B buffers sealrun builds are < 64 KiB");
        self.u16(n).bytes(b)
    }
    /// A `TPM2B_*` whose content is built by `f` (e.g. `TPM2B_PUBLIC` around a `TPMT_PUBLIC`).
    pub fn sized(&mut self, f: impl FnOnce(&mut Writer)) -> &mut Self {
        let mut inner = Writer::new();
        f(&mut inner);
        self.tpm2b(&inner.buf)
    }
}

/// A PCR selection in one bank: `TPML_PCR_SELECTION` with one `TPMS_PCR_SELECTION` (3 select
/// octets: PCRs 0–23).
pub fn pcr_selection(w: &mut Writer, alg: u16, pcrs: &[u8]) {
    let mut select = [0u8; 3];
    for &p in pcrs {
        select[usize::from(p / 8)] |= 1 << (p % 8);
    }
    w.u32(1).u16(alg).u8(3).bytes(&select);
}

/// `TPMT_PUBLIC` of sealrun's storage root: ECC P-256, restricted decrypt, AES-128-CFB, noDA,
/// unique x and y of 32 zero bytes (the shape of the TCG provisioning guidance's ECC SRK
/// template). A primary key is derived from the owner seed and its template, so this is the
/// same key every time until the owner hierarchy is cleared.
pub fn srk_template(w: &mut Writer) {
    w.u16(ALG_ECC).u16(ALG_SHA256).u32(
        OA_FIXED_TPM
            | OA_FIXED_PARENT
            | OA_SENSITIVE_DATA_ORIGIN
            | OA_USER_WITH_AUTH
            | OA_NO_DA
            | OA_RESTRICTED
            | OA_DECRYPT,
    );
    w.tpm2b(&[]); // authPolicy
    w.u16(ALG_AES).u16(128).u16(ALG_CFB); // symmetric
    w.u16(ALG_NULL); // scheme
    w.u16(ECC_NIST_P256).u16(ALG_NULL); // curve, kdf
    w.tpm2b(&[0; 32]).tpm2b(&[0; 32]); // unique
}

/// `TPMT_PUBLIC` of the attestation key: ECC P-256, restricted signing, ECDSA-SHA256.
pub fn ak_template(w: &mut Writer) {
    w.u16(ALG_ECC).u16(ALG_SHA256).u32(
        OA_FIXED_TPM
            | OA_FIXED_PARENT
            | OA_SENSITIVE_DATA_ORIGIN
            | OA_USER_WITH_AUTH
            | OA_NO_DA
            | OA_RESTRICTED
            | OA_SIGN,
    );
    w.tpm2b(&[]);
    w.u16(ALG_NULL); // symmetric
    w.u16(ALG_ECDSA).u16(ALG_SHA256); // scheme
    w.u16(ECC_NIST_P256).u16(ALG_NULL);
    w.tpm2b(&[]).tpm2b(&[]);
}

/// `TPMT_PUBLIC` of a sealed data object: usable only through `auth_policy` (no
/// `userWithAuth`), bound to this TPM and its parent.
pub fn sealed_template(w: &mut Writer, auth_policy: &[u8]) {
    w.u16(ALG_KEYEDHASH)
        .u16(ALG_SHA256)
        .u32(OA_FIXED_TPM | OA_FIXED_PARENT | OA_NO_DA);
    w.tpm2b(auth_policy);
    w.u16(ALG_NULL); // TPMS_KEYEDHASH_PARMS.scheme
    w.tpm2b(&[]); // unique
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pcr_selection_matches_tpm2_tools_bytes() {
        // `tpm2_quote -l sha256:0,1,2,3,4,5,6,7,23` sends this TPML_PCR_SELECTION.
        let mut w = Writer::new();
        pcr_selection(&mut w, ALG_SHA256, &[0, 1, 2, 3, 4, 5, 6, 7, 23]);
        assert_eq!(hex::encode(&w.buf), "00000001000b03ff0080");
        let back = read_pcr_selection(&mut Reader::new(&w.buf)).unwrap();
        assert_eq!(back, vec![(ALG_SHA256, vec![0, 1, 2, 3, 4, 5, 6, 7, 23])]);
    }

    #[test]
    fn short_input_is_an_error_not_a_panic() {
        let mut r = Reader::new(&[0x00, 0x05, 1, 2]);
        assert!(matches!(
            r.tpm2b("x"),
            Err(WireError::Short { needed: 5, .. })
        ));
        let mut r = Reader::new(&[0x00, 0x00, 0x00, 0x01, 0x00]);
        assert!(read_pcr_selection(&mut r).is_err());
    }
}
