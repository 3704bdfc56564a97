//! `sealrun encrypt`: a data owner's side of confidential datasets. Every file of a folder is
//! encrypted with age to the given X25519 recipients, into the same tree under a new folder
//! (`NAME` becomes `NAME.age`), files in parallel. The registry signs the *plaintext* folder
//! (`sealrun sign`) before, so the signature vouches for the content, not for one encryption.
//!
//! Guarantees: the source holds regular files and folders only (a symlink or special file is
//! refused, naming it); the output folder is new or empty; each `NAME.age` is written to a
//! temporary name, fsynced, then renamed, so a file that exists is complete; the output is the
//! standard age format (`age -d` decrypts it).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use rayon::prelude::*;
use sealrun_verifier::manifest::{self, WalkOptions};

use crate::decrypt::AGE_SUFFIX;

/// Why encrypting failed.
#[derive(Debug, thiserror::Error)]
pub enum EncryptError {
    #[error("--recipient {0:?}: not an age X25519 recipient (age1…); `sealrun identity recipient FILE` prints a launcher's")]
    Recipient(String),
    #[error("give at least one --recipient")]
    NoRecipient,
    #[error("{path}: the output folder must be new or empty")]
    OutputNotEmpty { path: PathBuf },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Tree(#[from] manifest::ManifestError),
    #[error("{path}: {source}")]
    Age {
        path: PathBuf,
        #[source]
        source: Box<age::EncryptError>,
    },
}

/// What was encrypted.
#[derive(Debug)]
pub struct Encrypted {
    pub files: usize,
    pub bytes: u64,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> EncryptError + '_ {
    move |source| EncryptError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Encrypt every file under `src` to `recipients` into `out` (see the module's guarantees).
pub fn encrypt_tree(
    src: &Path,
    recipients: &[String],
    out: &Path,
) -> Result<Encrypted, EncryptError> {
    if recipients.is_empty() {
        return Err(EncryptError::NoRecipient);
    }
    let recipients = recipients
        .iter()
        .map(|r| {
            age::x25519::Recipient::from_str(r.trim())
                .map_err(|_| EncryptError::Recipient(r.clone()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let files = manifest::list_sized(src, &WalkOptions::with_shard_size(u64::MAX))?;
    std::fs::create_dir_all(out).map_err(io(out))?;
    if std::fs::read_dir(out).map_err(io(out))?.next().is_some() {
        return Err(EncryptError::OutputNotEmpty {
            path: out.to_path_buf(),
        });
    }
    files.par_iter().try_for_each(|f| {
        let dst = out.join(format!("{}{AGE_SUFFIX}", f.path));
        encrypt_file(&f.abs, &dst, &recipients)
    })?;
    Ok(Encrypted {
        files: files.len(),
        bytes: files.iter().map(|f| f.size).sum(),
    })
}

/// Encrypt `from` into `to` (temporary name, fsync, rename).
fn encrypt_file(
    from: &Path,
    to: &Path,
    recipients: &[age::x25519::Recipient],
) -> Result<(), EncryptError> {
    if let Some(dir) = to.parent() {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
    }
    let dir = to.parent().unwrap_or(Path::new("."));
    let tmp = tempfile::NamedTempFile::new_in(dir).map_err(io(dir))?;
    let enc = age::Encryptor::with_recipients(recipients.iter().map(|r| r as &dyn age::Recipient))
        .map_err(|source| EncryptError::Age {
            path: from.to_path_buf(),
            source: Box::new(source),
        })?;
    let mut w = enc
        .wrap_output(std::io::BufWriter::with_capacity(64 << 10, tmp.as_file()))
        .map_err(io(to))?;
    let mut src = std::fs::File::open(from).map_err(io(from))?;
    std::io::copy(&mut src, &mut w).map_err(io(from))?;
    let mut buffered = w.finish().map_err(io(to))?;
    buffered.flush().map_err(io(to))?;
    drop(buffered);
    tmp.as_file().sync_all().map_err(io(to))?;
    tmp.persist(to).map_err(|e| io(to)(e.error))?;
    Ok(())
}
