//! `sealrun tpm enroll|status`: create (or find) the attestation key and say what the TPM is.
//!
//! Guarantees: `enroll` never replaces a key at sealrun's AK handle; it reuses a restricted
//! ECC P-256 signing key found there and refuses anything else at that handle. The AK's
//! private part never leaves the TPM (fixedTPM, fixedParent).

use std::path::PathBuf;

use super::attest::{self, AK_HANDLE};
use super::measure::{self, EventLog};
use super::wire::Writer;
use super::{Tpm, TpmError};

/// Arguments of `sealrun tpm`.
#[derive(Debug, clap::Args)]
pub struct TpmArgs {
    #[command(subcommand)]
    pub command: TpmCommand,
}

/// What to do with the TPM (`SEALRUN_TCTI`, default device:/dev/tpmrm0).
#[derive(Debug, clap::Subcommand)]
pub enum TpmCommand {
    /// Create the attestation key (or reuse the one enrolled) and write its public key.
    Enroll {
        /// Where to write the AK's public key (SPKI PEM), for the trust policy.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Which TPM, which attestation key, which PCR bank, and whether the PCR 23 event log
    /// replays.
    Status,
}

/// Run `sealrun tpm ...`; returns the exit status.
pub fn run(args: TpmArgs) -> anyhow::Result<u8> {
    let mut tpm = Tpm::open()?;
    match args.command {
        TpmCommand::Enroll { out } => enroll(&mut tpm, &out),
        TpmCommand::Status => status(&mut tpm),
    }
}

/// Create the AK under the storage root key and make it persistent at [`AK_HANDLE`].
pub fn create_ak(tpm: &mut Tpm) -> Result<Vec<u8>, TpmError> {
    let srk = tpm.create_srk()?;
    let mut template = Writer::new();
    super::wire::ak_template(&mut template);
    let made = tpm.create(srk, &template.buf, &[]).and_then(|obj| {
        let h = tpm.load(srk, &obj)?;
        let r = tpm.evict_control(h, AK_HANDLE);
        tpm.flush(h);
        r
    });
    tpm.flush(srk);
    made?;
    tpm.read_public(AK_HANDLE)
}

fn enroll(tpm: &mut Tpm, out: &std::path::Path) -> anyhow::Result<u8> {
    let (public, created) = match attest::ak_public(tpm)? {
        Some(p) => (p, false),
        None => (create_ak(tpm)?, true),
    };
    let keyid = attest::ak_keyid(&public)?;
    let key = sealrun_verifier::tpm_evidence::p256_public_key(&public)?;
    sealrun_verifier::rollback::write_atomic(out, key.to_pem().as_bytes())
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", out.display()))?;
    let info = attest::describe(tpm)?;
    println!(
        "{} attestation key at persistent handle 0x{AK_HANDLE:08x} (ECC P-256, restricted signing) in {} {}{}\nwrote {} (public key)\nkey id: {keyid}\n\nTrust it for quotes in the trust policy:\n[[key]]\nname = \"tpm-ak\"\npublic_key = \"{}\"\nkinds = [\"tpm-quote\"]",
        if created { "created" } else { "reused the" },
        info.manufacturer,
        info.vendor,
        if info.software { " (a SOFTWARE TPM: its quotes prove nothing about hardware)" } else { "" },
        out.display(),
        out.display(),
    );
    Ok(0)
}

fn status(tpm: &mut Tpm) -> anyhow::Result<u8> {
    let info = attest::describe(tpm)?;
    let fw = tpm.property(super::commands::PT_FIRMWARE_VERSION_1)?;
    println!(
        "TPM: {} {} (firmware {fw:08x}) at {}",
        info.manufacturer, info.vendor, tpm.tcti
    );
    if info.software {
        println!("  a SOFTWARE TPM (swtpm/libtpms): keys and PCRs live in a file; quotes prove nothing about hardware");
    }
    match attest::ak_public(tpm)? {
        Some(p) => println!(
            "attestation key: handle 0x{AK_HANDLE:08x}, ECC P-256, key id {}",
            attest::ak_keyid(&p)?
        ),
        None => println!("attestation key: none (run `sealrun tpm enroll --out ak.pub`)"),
    }
    let pcr = tpm.pcr_read(&[measure::PCR])?[0];
    println!("PCR bank: sha256; PCR 23 = {}", hex::encode(pcr));
    let dir = measure::state_dir();
    let log = EventLog::lock(&dir)?;
    let events = log.since_last_reset();
    let replays = sealrun_verifier::tpm_evidence::replay(events).is_ok_and(|v| v == pcr);
    println!(
        "event log: {} ({} event(s) since the last reset; {})",
        dir.join("pcr23-events.jsonl").display(),
        events.len(),
        if replays {
            "replays to PCR 23"
        } else {
            "does NOT replay to PCR 23: something outside sealrun changed it, or no run was measured since boot"
        }
    );
    Ok(0)
}
