//! The TPM 2.0 commands sealrun sends, one method each, with their parameters marshalled as
//! TCG TPM 2.0 Library Part 3 lays them out. Only the sha256 PCR bank is used.

use super::wire::{self, Reader, Writer, ALG_ECDSA, ALG_NULL, ALG_SHA256, RH_NULL, RH_OWNER};
use super::{Auth, Tpm, TpmError};

const CC_EVICT_CONTROL: u32 = 0x120;
const CC_CREATE_PRIMARY: u32 = 0x131;
const CC_PCR_RESET: u32 = 0x13D;
const CC_STARTUP: u32 = 0x144;
const CC_CREATE: u32 = 0x153;
const CC_LOAD: u32 = 0x157;
const CC_QUOTE: u32 = 0x158;
const CC_UNSEAL: u32 = 0x15E;
const CC_FLUSH_CONTEXT: u32 = 0x165;
const CC_READ_PUBLIC: u32 = 0x173;
const CC_START_AUTH_SESSION: u32 = 0x176;
const CC_GET_CAPABILITY: u32 = 0x17A;
const CC_PCR_READ: u32 = 0x17E;
const CC_POLICY_PCR: u32 = 0x17F;
const CC_PCR_EXTEND: u32 = 0x182;
const CC_POLICY_GET_DIGEST: u32 = 0x189;

const CAP_HANDLES: u32 = 1;
const CAP_TPM_PROPERTIES: u32 = 6;
pub const PT_MANUFACTURER: u32 = 0x105;
pub const PT_VENDOR_STRING_1: u32 = 0x106;
pub const PT_FIRMWARE_VERSION_1: u32 = 0x10B;

/// A loaded key's or sealed object's bytes, as `TPM2_Create` returned them (each a whole
/// `TPM2B_*`, size included).
#[derive(Debug, Clone)]
pub struct CreatedObject {
    pub private: Vec<u8>,
    pub public: Vec<u8>,
}

/// A quote as the TPM produced it.
#[derive(Debug, Clone)]
pub struct Quote {
    /// `TPMS_ATTEST` (the content of the returned `TPM2B_ATTEST`).
    pub attest: Vec<u8>,
    /// `TPMT_SIGNATURE`.
    pub signature: Vec<u8>,
}

impl Tpm {
    /// `TPM2_Startup(TPM_SU_CLEAR)`; a TPM that is already started (the kernel's, or swtpm
    /// with `startup-clear`) answers TPM_RC_INITIALIZE, which is fine.
    pub fn startup(&mut self) -> Result<(), TpmError> {
        let mut p = Writer::new();
        p.u16(0x0000);
        match self.execute("Startup", CC_STARTUP, &[], &[], &p.buf, 0) {
            Ok(_) | Err(TpmError::Command { rc: 0x100, .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// One fixed TPM property (`TPM2_GetCapability(TPM_CAP_TPM_PROPERTIES)`).
    pub fn property(&mut self, prop: u32) -> Result<u32, TpmError> {
        let mut p = Writer::new();
        p.u32(CAP_TPM_PROPERTIES).u32(prop).u32(1);
        let r = self.execute("GetCapability", CC_GET_CAPABILITY, &[], &[], &p.buf, 0)?;
        let m = |e| TpmError::malformed("GetCapability", e);
        let mut rd = Reader::new(&r.params);
        let _more = rd.u8("moreData").map_err(m)?;
        let _cap = rd.u32("capability").map_err(m)?;
        let count = rd.u32("count").map_err(m)?;
        if count == 0 {
            return Ok(0);
        }
        let got = rd.u32("property").map_err(m)?;
        let value = rd.u32("value").map_err(m)?;
        Ok(if got == prop { value } else { 0 })
    }

    /// Whether a persistent handle is in use (`TPM2_GetCapability(TPM_CAP_HANDLES)`).
    pub fn handle_exists(&mut self, handle: u32) -> Result<bool, TpmError> {
        let mut p = Writer::new();
        p.u32(CAP_HANDLES).u32(handle).u32(1);
        let r = self.execute("GetCapability", CC_GET_CAPABILITY, &[], &[], &p.buf, 0)?;
        let m = |e| TpmError::malformed("GetCapability", e);
        let mut rd = Reader::new(&r.params);
        rd.u8("moreData").map_err(m)?;
        rd.u32("capability").map_err(m)?;
        let count = rd.u32("count").map_err(m)?;
        Ok(count >= 1 && rd.u32("handle").map_err(m)? == handle)
    }

    /// `TPM2_CreatePrimary` of sealrun's storage root key in the owner hierarchy. The key is
    /// derived from the owner seed and the fixed template, so it is the same key every time
    /// (until the owner hierarchy is cleared). The caller flushes the returned handle.
    pub fn create_srk(&mut self) -> Result<u32, TpmError> {
        let mut p = Writer::new();
        p.sized(|w| {
            w.tpm2b(&[]).tpm2b(&[]);
        });
        p.sized(wire::srk_template);
        p.tpm2b(&[]).u32(0); // outsideInfo, creationPCR
        let r = self.execute(
            "CreatePrimary",
            CC_CREATE_PRIMARY,
            &[RH_OWNER],
            &[Auth::PW],
            &p.buf,
            1,
        )?;
        Ok(r.handles[0])
    }

    /// `TPM2_Create` under `parent`: a new object from `template`, with `data` as its sensitive
    /// data (sealed objects) or none (keys the TPM generates).
    pub fn create(
        &mut self,
        parent: u32,
        template: &[u8],
        data: &[u8],
    ) -> Result<CreatedObject, TpmError> {
        let mut p = Writer::new();
        p.sized(|w| {
            w.tpm2b(&[]).tpm2b(data);
        });
        p.tpm2b(template);
        p.tpm2b(&[]).u32(0);
        let r = self.execute("Create", CC_CREATE, &[parent], &[Auth::PW], &p.buf, 0)?;
        let m = |e| TpmError::malformed("Create", e);
        let mut rd = Reader::new(&r.params);
        let private = rd.tpm2b_raw("outPrivate").map_err(m)?.to_vec();
        let public = rd.tpm2b_raw("outPublic").map_err(m)?.to_vec();
        Ok(CreatedObject { private, public })
    }

    /// `TPM2_Load` of an object `create` made; the caller flushes the returned handle.
    pub fn load(&mut self, parent: u32, obj: &CreatedObject) -> Result<u32, TpmError> {
        let mut p = Writer::new();
        p.bytes(&obj.private).bytes(&obj.public);
        let r = self.execute("Load", CC_LOAD, &[parent], &[Auth::PW], &p.buf, 1)?;
        Ok(r.handles[0])
    }

    /// `TPM2_EvictControl`: make the loaded `object` persistent at `persistent`.
    pub fn evict_control(&mut self, object: u32, persistent: u32) -> Result<(), TpmError> {
        let mut p = Writer::new();
        p.u32(persistent);
        self.execute(
            "EvictControl",
            CC_EVICT_CONTROL,
            &[RH_OWNER, object],
            &[Auth::PW],
            &p.buf,
            0,
        )?;
        Ok(())
    }

    /// `TPM2_ReadPublic`: the object's `TPMT_PUBLIC` bytes.
    pub fn read_public(&mut self, handle: u32) -> Result<Vec<u8>, TpmError> {
        let r = self.execute("ReadPublic", CC_READ_PUBLIC, &[handle], &[], &[], 0)?;
        let mut rd = Reader::new(&r.params);
        let public = rd
            .tpm2b("outPublic")
            .map_err(|e| TpmError::malformed("ReadPublic", e))?;
        Ok(public.to_vec())
    }

    /// `TPM2_FlushContext`; errors are ignored (the object may be gone already).
    pub fn flush(&mut self, handle: u32) {
        let mut p = Writer::new();
        p.u32(handle);
        let _ = self.execute("FlushContext", CC_FLUSH_CONTEXT, &[], &[], &p.buf, 0);
    }

    /// `TPM2_PCR_Extend` of the sha256 bank of `pcr` with `digest`.
    pub fn pcr_extend(&mut self, pcr: u8, digest: &[u8; 32]) -> Result<(), TpmError> {
        let mut p = Writer::new();
        p.u32(1).u16(ALG_SHA256).bytes(digest);
        self.execute(
            "PCR_Extend",
            CC_PCR_EXTEND,
            &[u32::from(pcr)],
            &[Auth::PW],
            &p.buf,
            0,
        )?;
        Ok(())
    }

    /// `TPM2_PCR_Reset` of `pcr` (only resettable PCRs: 16 and 23 at locality 0 on a PC
    /// Client TPM).
    pub fn pcr_reset(&mut self, pcr: u8) -> Result<(), TpmError> {
        self.execute(
            "PCR_Reset",
            CC_PCR_RESET,
            &[u32::from(pcr)],
            &[Auth::PW],
            &[],
            0,
        )?;
        Ok(())
    }

    /// `TPM2_PCR_Read` of the sha256 bank: the values of `pcrs` (ascending), read in as many
    /// calls as the TPM needs (it returns at most 8 digests per call).
    pub fn pcr_read(&mut self, pcrs: &[u8]) -> Result<Vec<[u8; 32]>, TpmError> {
        let mut want: Vec<u8> = pcrs.to_vec();
        want.sort_unstable();
        want.dedup();
        let mut out = Vec::new();
        while !want.is_empty() {
            let mut p = Writer::new();
            wire::pcr_selection(&mut p, ALG_SHA256, &want);
            let r = self.execute("PCR_Read", CC_PCR_READ, &[], &[], &p.buf, 0)?;
            let m = |e| TpmError::malformed("PCR_Read", e);
            let mut rd = Reader::new(&r.params);
            rd.u32("pcrUpdateCounter").map_err(m)?;
            let sel = wire::read_pcr_selection(&mut rd).map_err(m)?;
            let got: Vec<u8> = sel.into_iter().flat_map(|(_, p)| p).collect();
            let count = rd.u32("TPML_DIGEST.count").map_err(m)? as usize;
            if count != got.len() || count == 0 || got.iter().any(|g| !want.contains(g)) {
                return Err(TpmError::Malformed {
                    command: "PCR_Read",
                    detail: format!("{count} digests for PCRs {got:?}"),
                });
            }
            for _ in 0..count {
                let d = rd.tpm2b("TPM2B_DIGEST").map_err(m)?;
                out.push(<[u8; 32]>::try_from(d).map_err(|_| TpmError::Malformed {
                    command: "PCR_Read",
                    detail: format!("a sha256 PCR value of {} bytes", d.len()),
                })?);
            }
            want.retain(|w| !got.contains(w));
        }
        Ok(out)
    }

    /// `TPM2_Quote` with the ECDSA-SHA256 key `ak` over the sha256 `pcrs`.
    pub fn quote(&mut self, ak: u32, qualifying: &[u8], pcrs: &[u8]) -> Result<Quote, TpmError> {
        let mut p = Writer::new();
        p.tpm2b(qualifying).u16(ALG_ECDSA).u16(ALG_SHA256);
        wire::pcr_selection(&mut p, ALG_SHA256, pcrs);
        let r = self.execute("Quote", CC_QUOTE, &[ak], &[Auth::PW], &p.buf, 0)?;
        let m = |e| TpmError::malformed("Quote", e);
        let mut rd = Reader::new(&r.params);
        let attest = rd.tpm2b("quoted").map_err(m)?.to_vec();
        let signature = rd.rest().to_vec();
        Ok(Quote { attest, signature })
    }

    /// `TPM2_StartAuthSession`: an unbound, unsalted policy session (a trial one if `trial`)
    /// with sha256. The TPM flushes it after the command it authorises.
    pub fn start_policy_session(&mut self, trial: bool) -> Result<u32, TpmError> {
        let mut nonce = [0u8; 16];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut nonce);
        let mut p = Writer::new();
        p.tpm2b(&nonce).tpm2b(&[]);
        p.u8(if trial { 0x03 } else { 0x01 });
        p.u16(ALG_NULL).u16(ALG_SHA256);
        let r = self.execute(
            "StartAuthSession",
            CC_START_AUTH_SESSION,
            &[RH_NULL, RH_NULL],
            &[],
            &p.buf,
            1,
        )?;
        Ok(r.handles[0])
    }

    /// `TPM2_PolicyPCR` over the sha256 `pcrs` (empty `digest`: the TPM's current values).
    pub fn policy_pcr(&mut self, session: u32, pcrs: &[u8], digest: &[u8]) -> Result<(), TpmError> {
        let mut p = Writer::new();
        p.tpm2b(digest);
        wire::pcr_selection(&mut p, ALG_SHA256, pcrs);
        self.execute("PolicyPCR", CC_POLICY_PCR, &[session], &[], &p.buf, 0)?;
        Ok(())
    }

    /// `TPM2_PolicyGetDigest`.
    pub fn policy_get_digest(&mut self, session: u32) -> Result<Vec<u8>, TpmError> {
        let r = self.execute(
            "PolicyGetDigest",
            CC_POLICY_GET_DIGEST,
            &[session],
            &[],
            &[],
            0,
        )?;
        let mut rd = Reader::new(&r.params);
        let d = rd
            .tpm2b("policyDigest")
            .map_err(|e| TpmError::malformed("PolicyGetDigest", e))?;
        Ok(d.to_vec())
    }

    /// `TPM2_Unseal` of `item`, authorised by the policy `session` (which the TPM then flushes).
    pub fn unseal_with(
        &mut self,
        item: u32,
        session: u32,
    ) -> Result<zeroize::Zeroizing<Vec<u8>>, TpmError> {
        let auth = Auth { session, attrs: 0 };
        let r = match self.execute("Unseal", CC_UNSEAL, &[item], &[auth], &[], 0) {
            Err(TpmError::Command { rc, .. }) if rc & 0xbf == 0x9d => {
                return Err(TpmError::PolicyMismatch { rc })
            }
            r => zeroize::Zeroizing::new(r?.params),
        };
        let mut rd = Reader::new(&r);
        let d = rd
            .tpm2b("outData")
            .map_err(|e| TpmError::malformed("Unseal", e))?;
        Ok(zeroize::Zeroizing::new(d.to_vec()))
    }
}
