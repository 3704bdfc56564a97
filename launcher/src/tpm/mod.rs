//! A small TPM 2.0 client in pure Rust: it speaks the TPM command protocol itself (no TSS
//! library), so the static musl `sealrun` binary carries it. It knows only the commands sealrun
//! needs: start-up, properties, primary/ordinary key creation, persistence, PCR read, extend and
//! reset, quotes, and PCR-policy sealing. Authorisation is the empty password (TPM_RS_PW) for
//! sealrun's own objects and a PCR policy session for sealed data.
//!
//! Guarantees: every response is checked (tag, size, return code) before its fields are read;
//! a TPM error is a [`TpmError::Command`] naming the command and decoding the return code;
//! transient objects and sessions this client creates are flushed when their operation ends.

pub mod attest;
pub mod cli;
pub mod commands;
pub mod measure;
pub mod seal;
pub mod transport;
pub mod wire;

pub use seal::{seal, unseal, SealPolicy, SealedBlob};
pub use transport::{Tcti, Transport};

use wire::{Reader, Writer, RS_PW, ST_NO_SESSIONS, ST_SESSIONS};

/// Why a TPM operation failed.
#[derive(Debug, thiserror::Error)]
pub enum TpmError {
    #[error("SEALRUN_TCTI {tcti:?}: {why}")]
    BadTcti { tcti: String, why: String },
    #[error("no TPM answers at {tcti}: {source} (set SEALRUN_TCTI, e.g. device:/dev/tpmrm0 or swtpm:host=127.0.0.1,port=2321)")]
    Unreachable {
        tcti: String,
        source: std::io::Error,
    },
    #[error("TPM connection failed: {source}")]
    Io { source: std::io::Error },
    #[error("TPM2_{command}: malformed response: {detail}")]
    Malformed {
        command: &'static str,
        detail: String,
    },
    #[error("TPM2_{command} failed: {}", rc_text(*rc))]
    Command { command: &'static str, rc: u32 },
    /// The TPM refused to unseal: the PCRs are not in the state the secret was sealed to.
    #[error("the TPM refuses to unseal: PCR state differs from the sealing policy ({}); the secret unseals only on the host that sealed it, under the launcher's measurement", rc_text(*rc))]
    PolicyMismatch { rc: u32 },
    #[error("{}: TPM event log: {source}", path.display())]
    EventLog {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("attestation key: {0}")]
    NotAnAk(String),
    #[error("sealed blob: {0}")]
    BadBlob(String),
}

impl TpmError {
    fn malformed(command: &'static str, e: wire::WireError) -> TpmError {
        TpmError::Malformed {
            command,
            detail: e.to_string(),
        }
    }
}

/// A TPM return code, decoded enough for a person to act on.
pub fn rc_text(rc: u32) -> String {
    let name = if rc & 0x80 != 0 {
        // Format one: an error about a parameter, handle or session.
        match rc & 0x3f {
            0x01 => "TPM_RC_ASYMMETRIC",
            0x02 => "TPM_RC_ATTRIBUTES",
            0x04 => "TPM_RC_VALUE",
            0x0b => "TPM_RC_HANDLE",
            0x0e => "TPM_RC_AUTH_FAIL",
            0x12 => "TPM_RC_SCHEME",
            0x15 => "TPM_RC_SIZE",
            0x18 => "TPM_RC_SELECTOR",
            0x1b => "TPM_RC_SIGNATURE",
            0x1d => "TPM_RC_POLICY_FAIL",
            0x1f => "TPM_RC_INTEGRITY",
            0x22 => "TPM_RC_BAD_AUTH",
            _ => "format-one error",
        }
    } else {
        match rc {
            0x100 => "TPM_RC_INITIALIZE",
            0x101 => "TPM_RC_FAILURE",
            0x143 => "TPM_RC_COMMAND_CODE",
            0x14c => "TPM_RC_NV_DEFINED",
            0x184 => "TPM_RC_NV_SPACE",
            0x907 => "TPM_RC_LOCALITY",
            0x902 => "TPM_RC_OBJECT_MEMORY",
            0x903 => "TPM_RC_SESSION_MEMORY",
            0x921 => "TPM_RC_LOCKOUT",
            0x922 => "TPM_RC_RETRY",
            0x923 => "TPM_RC_NV_UNAVAILABLE",
            _ => "TPM error",
        }
    };
    format!("{name}, rc 0x{rc:03x}")
}

/// An authorisation for one handle of a command.
#[derive(Debug, Clone)]
pub(crate) struct Auth {
    pub session: u32,
    pub attrs: u8,
}

impl Auth {
    /// The empty password (sealrun's objects have no auth value).
    pub const PW: Auth = Auth {
        session: RS_PW,
        attrs: 0,
    };
}

/// A successful response: its output handles and its parameter area.
#[derive(Debug)]
pub(crate) struct Response {
    pub handles: Vec<u32>,
    pub params: Vec<u8>,
}

/// An open TPM.
#[derive(Debug)]
pub struct Tpm {
    pub tcti: Tcti,
    transport: Transport,
}

impl Tpm {
    /// Connect to the TPM `SEALRUN_TCTI` names and make sure it is started.
    pub fn open() -> Result<Tpm, TpmError> {
        Tpm::open_at(&Tcti::from_env()?)
    }

    /// Connect to the TPM at `tcti` and make sure it is started.
    pub fn open_at(tcti: &Tcti) -> Result<Tpm, TpmError> {
        let mut tpm = Tpm {
            tcti: tcti.clone(),
            transport: Transport::open(tcti)?,
        };
        tpm.startup()?;
        Ok(tpm)
    }

    /// Send a command: `handles` (with an authorisation for each of the first `auths.len()`),
    /// `params`; the response has `out_handles` handles.
    pub(crate) fn execute(
        &mut self,
        command: &'static str,
        cc: u32,
        handles: &[u32],
        auths: &[Auth],
        params: &[u8],
        out_handles: usize,
    ) -> Result<Response, TpmError> {
        let mut body = Writer::new();
        for h in handles {
            body.u32(*h);
        }
        if !auths.is_empty() {
            let mut area = Writer::new();
            for a in auths {
                // TPMS_AUTH_COMMAND: handle, empty nonce, attributes, empty HMAC/password
                // (an unbound, unsalted policy session needs no HMAC).
                area.u32(a.session).tpm2b(&[]).u8(a.attrs).tpm2b(&[]);
            }
            let n = u32::try_from(area.buf.len()).unwrap_or(u32::MAX);
            body.u32(n).bytes(&area.buf);
        }
        body.bytes(params);
        let tag = if auths.is_empty() {
            ST_NO_SESSIONS
        } else {
            ST_SESSIONS
        };
        let mut cmd = Writer::new();
        let size = u32::try_from(10 + body.buf.len()).unwrap_or(u32::MAX);
        cmd.u16(tag).u32(size).u32(cc).bytes(&body.buf);
        // Zeroed on drop: an Unseal response carries the secret.
        let resp = zeroize::Zeroizing::new(self.transport.transact(&cmd.buf)?);
        parse_response(command, &resp, !auths.is_empty(), out_handles)
    }
}

fn parse_response(
    command: &'static str,
    resp: &[u8],
    sessions: bool,
    out_handles: usize,
) -> Result<Response, TpmError> {
    let m = |e| TpmError::malformed(command, e);
    let mut r = Reader::new(resp);
    let tag = r.u16("tag").map_err(m)?;
    let _size = r.u32("size").map_err(m)?;
    let rc = r.u32("responseCode").map_err(m)?;
    if rc != 0 {
        return Err(TpmError::Command { command, rc });
    }
    let expected = if sessions {
        ST_SESSIONS
    } else {
        ST_NO_SESSIONS
    };
    if tag != expected {
        return Err(TpmError::Malformed {
            command,
            detail: format!("tag 0x{tag:04x}, expected 0x{expected:04x}"),
        });
    }
    let mut handles = Vec::with_capacity(out_handles);
    for _ in 0..out_handles {
        handles.push(r.u32("handle").map_err(m)?);
    }
    let params = if sessions {
        let n = r.u32("parameterSize").map_err(m)? as usize;
        r.take(n, "parameters").map_err(m)?.to_vec()
    } else {
        r.rest().to_vec()
    };
    Ok(Response { handles, params })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_responses_are_decoded() {
        // TPM2_Unseal refused by policy (session 1): 0x99d.
        let resp = [0x80, 0x01, 0, 0, 0, 10, 0, 0, 0x09, 0x9d];
        let e = parse_response("Unseal", &resp, true, 0).unwrap_err();
        assert!(
            e.to_string().contains("TPM_RC_POLICY_FAIL, rc 0x99d"),
            "{e}"
        );
        assert!(parse_response("x", &[0x80, 0x01, 0], false, 0).is_err());
    }

    #[test]
    fn session_responses_are_cut_at_the_parameter_size() {
        // A GetRandom-like answer with one 2-byte parameter and a trailing auth area.
        let resp = [
            0x80, 0x02, 0, 0, 0, 21, 0, 0, 0, 0, 0, 0, 0, 2, 0xaa, 0xbb, 0, 0, 0x01, 0, 0,
        ];
        let r = parse_response("x", &resp, true, 0).unwrap();
        assert_eq!(r.params, vec![0xaa, 0xbb]);
    }
}
