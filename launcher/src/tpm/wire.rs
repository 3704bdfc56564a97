//! TPM 2.0 wire format (TCG TPM 2.0 Library, Part 2): big-endian integers, sized buffers
//! (`TPM2B_*`), and the few structures sealrun sends. A [`Reader`] never reads past its input:
//! every short or inconsistent buffer is a [`WireError`], never a panic.

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

/// A malformed TPM structure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("{what}: needs {needed} more bytes at offset {offset}, {available} left")]
    Short {
        what: &'static str,
        offset: usize,
        needed: usize,
        available: usize,
    },
    #[error("{what}: {detail}")]
    Invalid { what: &'static str, detail: String },
}

/// Big-endian writer into a growable buffer.
#[derive(Debug, Default, Clone)]
pub struct Writer {
    pub buf: Vec<u8>,
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

/// Big-endian reader over a byte slice.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }
    pub fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], WireError> {
        if self.remaining() < n {
            return Err(WireError::Short {
                what,
                offset: self.pos,
                needed: n,
                available: self.remaining(),
            });
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    pub fn u8(&mut self, what: &'static str) -> Result<u8, WireError> {
        Ok(self.take(1, what)?[0])
    }
    pub fn u16(&mut self, what: &'static str) -> Result<u16, WireError> {
        let b = self.take(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    pub fn u32(&mut self, what: &'static str) -> Result<u32, WireError> {
        let b = self.take(4, what)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    pub fn u64(&mut self, what: &'static str) -> Result<u64, WireError> {
        let b = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }
    /// A `TPM2B_*`: its content bytes.
    pub fn tpm2b(&mut self, what: &'static str) -> Result<&'a [u8], WireError> {
        let n = self.u16(what)? as usize;
        self.take(n, what)
    }
    /// The bytes of a whole `TPM2B_*`, size field included (as a later command takes it back).
    pub fn tpm2b_raw(&mut self, what: &'static str) -> Result<&'a [u8], WireError> {
        let start = self.pos;
        self.tpm2b(what)?;
        Ok(&self.buf[start..self.pos])
    }
    /// Everything not read yet.
    pub fn rest(&mut self) -> &'a [u8] {
        let s = &self.buf[self.pos..];
        self.pos = self.buf.len();
        s
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

/// The PCR indices a `TPML_PCR_SELECTION` selects, per bank, in the TPM's order (bank by bank,
/// lowest index first).
pub fn read_pcr_selection(r: &mut Reader<'_>) -> Result<Vec<(u16, Vec<u8>)>, WireError> {
    let count = r.u32("TPML_PCR_SELECTION.count")?;
    if count > 16 {
        return Err(WireError::Invalid {
            what: "TPML_PCR_SELECTION",
            detail: format!("{count} banks"),
        });
    }
    let mut out = Vec::new();
    for _ in 0..count {
        let alg = r.u16("TPMS_PCR_SELECTION.hash")?;
        let n = r.u8("TPMS_PCR_SELECTION.sizeofSelect")?;
        let sel = r.take(usize::from(n), "TPMS_PCR_SELECTION.pcrSelect")?;
        let mut pcrs = Vec::new();
        for (i, b) in sel.iter().enumerate() {
            for bit in 0..8 {
                if b & (1 << bit) != 0 {
                    pcrs.push(u8::try_from(i * 8 + bit).unwrap_or(u8::MAX));
                }
            }
        }
        out.push((alg, pcrs));
    }
    Ok(out)
}

/// `TPMT_PUBLIC` of sealrun's storage root: ECC P-256, restricted decrypt, AES-128-CFB (the
/// TCG "SRK" template, so any tool that recreates it gets the same key from the same seed).
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
