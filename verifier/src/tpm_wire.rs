//! Reading TPM 2.0 structures (TCG TPM 2.0 Library, Part 2): big-endian integers, sized
//! buffers (`TPM2B_*`), PCR selections. A [`Reader`] never reads past its input: a short or
//! inconsistent buffer is a [`WireError`], never a panic. Shared by the verifier's quote checks
//! and the launcher's TPM client.

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
