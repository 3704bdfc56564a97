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
