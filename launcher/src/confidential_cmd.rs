//! `sealrun encrypt` and `sealrun identity new|recipient`: the commands of confidential
//! datasets (see docs/confidential.md).
//!
//! Guarantees: exit 0 on success, 64 for a usage error (a bad recipient, an existing identity),
//! 1 for anything else (no TPM for `--tpm`, an unreadable file); messages never show a key.

use std::path::PathBuf;

use crate::ageid::{self, IdentityError};
use crate::encrypt::{self, EncryptError};

/// Arguments of `sealrun encrypt`.
#[derive(Debug, clap::Args)]
pub struct EncryptArgs {
    /// The plaintext folder (sign it first: `sealrun sign DIR …`).
    pub dir: PathBuf,
    /// An age X25519 recipient (age1…), e.g. a launcher's (`sealrun identity recipient`);
    /// repeatable.
    #[arg(long = "recipient", short = 'r', value_name = "AGE1…", required = true)]
    pub recipients: Vec<String>,
    /// The encrypted folder to write (new or empty): DIR's tree with every file NAME as NAME.age.
    #[arg(long, short = 'o', value_name = "DIR.enc")]
    pub out: PathBuf,
}

/// Arguments of `sealrun check-encrypted`.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// The encrypted folder (`NAME.age` files).
    pub dir: PathBuf,
    /// The signature over the plaintext.
    #[arg(long, value_name = "SIG")]
    pub signature: PathBuf,
    /// The trust policy the signature must satisfy.
    #[arg(long, value_name = "POLICY")]
    pub trust: PathBuf,
    /// The launcher's decryption identity.
    #[arg(long, value_name = "FILE")]
    pub identity: PathBuf,
    /// The kind the signature must declare.
    #[arg(long, default_value = "dataset")]
    pub kind: sealrun_verifier::policy::Kind,
}

/// Arguments of `sealrun identity`.
#[derive(Debug, clap::Args)]
pub struct IdentityArgs {
    #[command(subcommand)]
    pub command: IdentityCommand,
}

/// What to do with a launcher identity.
#[derive(Debug, clap::Subcommand)]
pub enum IdentityCommand {
    /// Make a new X25519 decryption identity for this launcher (mode 0600) and print its
    /// recipient, for data owners to encrypt to.
    New {
        /// Where to write it (never replaced).
        #[arg(long, short = 'o', value_name = "FILE")]
        out: PathBuf,
        /// Seal it with the TPM under a policy on the launcher's measurement (PCR 23).
        #[arg(long)]
        tpm: bool,
    },
    /// Print the recipient (age1…) of an identity.
    Recipient {
        /// The identity file.
        file: PathBuf,
    },
}

const USAGE: u8 = 64;

/// Run `sealrun encrypt`; returns the exit status.
pub fn encrypt(args: EncryptArgs) -> u8 {
    match encrypt::encrypt_tree(&args.dir, &args.recipients, &args.out) {
        Ok(e) => {
            println!(
                "encrypted {} files ({} bytes) of {} to {} recipient(s) -> {}",
                e.files,
                e.bytes,
                args.dir.display(),
                args.recipients.len(),
                args.out.display()
            );
            0
        }
        Err(e) => {
            eprintln!("sealrun: error: cannot encrypt {}: {e}", args.dir.display());
            match e {
                EncryptError::Recipient(_)
                | EncryptError::NoRecipient
                | EncryptError::OutputNotEmpty { .. } => USAGE,
                _ => 1,
            }
        }
    }
}

/// Run `sealrun check-encrypted`: decrypt and verify as a run would (into a detached tmpfs,
/// dropped at the end), report the sizes, the time and the launcher's peak RSS; exit 0, or 65
/// (the reason named) when the dataset would be refused.
pub fn check(args: CheckArgs) -> u8 {
    crate::secrets::protect_process();
    let started = std::time::Instant::now();
    match check_inner(&args) {
        Ok(d) => {
            let secs = started.elapsed().as_secs_f64();
            let n = &d.notes;
            println!(
                "OK {}: {} files, {} plaintext bytes from {} ciphertext bytes decrypted and verified in {secs:.3} s ({:.0} MiB/s); tmpfs {} bytes{}; recipient {} ({}); ciphertext root sha256:{}; peak RSS {} KiB",
                args.dir.display(),
                n.ciphertext_files,
                n.plaintext_bytes,
                n.ciphertext_bytes,
                n.plaintext_bytes as f64 / f64::from(1u32 << 20) / secs.max(1e-9),
                n.tmpfs_bytes,
                if n.noswap { ", noswap" } else { "" },
                n.recipient,
                n.identity,
                n.ciphertext_root,
                peak_rss_kib()
            );
            0
        }
        Err(e) => {
            eprintln!("sealrun: refused: {}: {e}", args.dir.display());
            65
        }
    }
}

fn check_inner(args: &CheckArgs) -> Result<crate::decrypt::Decrypted, String> {
    use sealrun_verifier::artifact::{check_signature, VerifyOptions};
    let policy = sealrun_verifier::policy::Policy::load(&args.trust).map_err(|e| e.to_string())?;
    let sig = sealrun_verifier::dsse::read_limited(&args.signature).map_err(|e| e.to_string())?;
    let opts = VerifyOptions {
        policy: &policy,
        now: time::OffsetDateTime::now_utc(),
        rollback: None,
        expected_kind: Some(args.kind),
        progress: None,
    };
    let shown = format!("{:?}", args.dir.display().to_string());
    let signed = check_signature(&sig, &shown, &opts).map_err(|e| e.to_string())?;
    let identity = ageid::load(&args.identity).map_err(|e| e.to_string())?;
    crate::decrypt::decrypt_verify(&args.dir, &signed, &identity).map_err(|e| e.to_string())
}

/// This process's peak resident set (`ru_maxrss`), KiB.
fn peak_rss_kib() -> i64 {
    nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF)
        .map(|u| u.max_rss())
        .unwrap_or(0)
}

/// Run `sealrun identity …`; returns the exit status.
pub fn identity(args: IdentityArgs) -> u8 {
    let r = match &args.command {
        IdentityCommand::New { out, tpm } => ageid::new_identity(out, *tpm).inspect(|_| {
            eprintln!(
                "wrote {} (mode 0600, {}); its recipient, for data owners to encrypt to:",
                out.display(),
                if *tpm { "TPM-sealed" } else { "software-held" }
            );
        }),
        IdentityCommand::Recipient { file } => ageid::recipient(file),
    };
    match r {
        Ok(recipient) => {
            println!("{recipient}");
            0
        }
        Err(e) => {
            eprintln!("sealrun: error: {e}");
            match e {
                IdentityError::Exists { .. } => USAGE,
                _ => 1,
            }
        }
    }
}
