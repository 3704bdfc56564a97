//! `sealrun store verify|gc`: look after the verified store (see [`crate::store`]).
//!
//! Guarantees: `verify` re-hashes every entry and exits 1 naming each changed file; `gc`
//! removes only entries no run holds, and never a file an entry still links to.

use std::path::PathBuf;

use crate::store::{default_path, Store};

/// Arguments of `sealrun store`.
#[derive(Debug, clap::Args)]
pub struct StoreArgs {
    #[command(subcommand)]
    pub command: StoreCommand,
    /// The store (default: $SEALRUN_STORE, else /var/lib/sealrun/store as root,
    /// $XDG_DATA_HOME/sealrun/store otherwise).
    #[arg(long, global = true, value_name = "DIR")]
    pub store: Option<PathBuf>,
}

/// What to do with the store.
#[derive(Debug, clap::Subcommand)]
pub enum StoreCommand {
    /// Re-hash every entry against the signed manifest it was filled for; name any file
    /// changed behind the store's back (exit 1 if any).
    Verify,
    /// Remove entries no running job uses: those last used longer ago than --older-than,
    /// then the least recently used until the store holds at most --keep-bytes.
    Gc {
        /// e.g. 30d, 12h.
        #[arg(long, value_parser = humantime::parse_duration, value_name = "D")]
        older_than: Option<std::time::Duration>,
        /// Keep at most N bytes of entries (as listed in their manifests).
        #[arg(long, value_name = "N")]
        keep_bytes: Option<u64>,
    },
}

/// Run `sealrun store ...`; returns the exit status.
pub fn run(args: StoreArgs) -> anyhow::Result<u8> {
    let path = args
        .store
        .or_else(default_path)
        .ok_or_else(|| anyhow::anyhow!("no store: pass --store DIR"))?;
    let store = Store::open(&path)?;
    match args.command {
        StoreCommand::Verify => {
            let (n, problems) = store.verify()?;
            for p in &problems {
                println!("CHANGED {p}");
            }
            if problems.is_empty() {
                println!("store {}: {n} entries verified", store.shown().display());
                Ok(0)
            } else {
                println!(
                    "store {}: {} problem(s) in {n} entries; remove the entries named (sealrun store gc does not) and rerun to refill them",
                    store.shown().display(),
                    problems.len()
                );
                Ok(1)
            }
        }
        StoreCommand::Gc {
            older_than,
            keep_bytes,
        } => {
            let (removed, bytes, kept) = store.gc(older_than, keep_bytes)?;
            println!(
                "store {}: removed {removed} entries ({bytes} bytes listed), kept {kept}",
                store.shown().display()
            );
            Ok(0)
        }
    }
}
