//! Appending to the audit log: one JSON line per event, chained by hash, under
//! an exclusive file lock, fsync'd, followed by a freshly signed checkpoint.
//!
//! Guarantees: two launchers appending at once never interleave or fork the
//! chain (an exclusive `flock` covers read-last-line, append and checkpoint);
//! an entry is on disk (fsync) before `append` returns; the checkpoint is
//! replaced atomically; a log whose existing chain is broken is not appended to;
//! an append that fails part-way (a full disk, an I/O error) — the line or the
//! checkpoint — is undone: the log is cut back to its length before the append,
//! so it never holds a partial line or an entry its checkpoint does not cover.

use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use sealrun_verifier::audit::{self, Checkpoint, Entry, GENESIS};
use sealrun_verifier::digest::Digest;
use sealrun_verifier::keys::SigningKey;
use sealrun_verifier::rollback::write_atomic;

/// Why an entry could not be appended.
#[derive(Debug, thiserror::Error)]
pub enum AuditWriteError {
    #[error("audit log {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("audit log {path}: cannot lock: {source}")]
    Lock {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("refusing to append: {0}")]
    Broken(#[from] audit::AuditError),
}

/// What to append (sequence, time and chain are filled in).
#[derive(Debug, Clone)]
pub struct Event<'a> {
    pub event: &'a str,
    pub job: &'a str,
    pub invocation: &'a str,
    pub record: Option<Digest>,
    /// SHA-256 of the record's TPM evidence file (`NAME-ID.quote.json`), if it was quoted.
    pub evidence: Option<Digest>,
    pub outcome: String,
}

/// Run `f` while holding the audit log's exclusive lock (the one [`append`] takes), telling it
/// whether the log holds anything yet. The log is created (empty) if missing. State kept next
/// to the log, such as the launcher's rollback state, is updated under this lock.
pub fn with_lock<T>(path: &Path, f: impl FnOnce(bool) -> T) -> Result<T, AuditWriteError> {
    let file = open_locked(path)?;
    let has_entries = file
        .metadata()
        .map_err(|source| AuditWriteError::Io {
            path: path.to_path_buf(),
            source,
        })?
        .len()
        > 0;
    let out = f(has_entries);
    drop(file);
    Ok(out)
}

/// The log at `path`, opened for reading and appending (created if missing) and locked
/// exclusively until the returned guard is dropped.
fn open_locked(path: &Path) -> Result<Flock<std::fs::File>, AuditWriteError> {
    let file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(path)
        .map_err(|source| AuditWriteError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, source)| AuditWriteError::Lock {
        path: path.to_path_buf(),
        source,
    })
}

/// Append `ev` to the log at `path` (created if missing) and re-sign its checkpoint.
pub fn append(path: &Path, ev: &Event, key: &SigningKey) -> Result<Entry, AuditWriteError> {
    let io = |source| AuditWriteError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = open_locked(path)?;
    let mut bytes = Vec::new();
    file.seek(SeekFrom::Start(0)).map_err(io)?;
    file.read_to_end(&mut bytes).map_err(io)?;
    let name = path.display().to_string();
    let entries = audit::check_chain(&name, &bytes)?;
    let (seq, prev) = match entries.last() {
        Some((e, h)) => (e.seq + 1, h.clone()),
        None => (1, GENESIS.to_string()),
    };
    let entry = Entry {
        seq,
        time: crate::now_rfc3339(),
        prev,
        event: ev.event.to_string(),
        job: ev.job.to_string(),
        invocation: ev.invocation.to_string(),
        record: ev.record.map(|d| d.to_hex()),
        evidence: ev.evidence.map(|d| d.to_hex()),
        // One line, no terminal escapes: names in it came from disk.
        outcome: sealrun_verifier::text::one_line(&ev.outcome),
    };
    let mut line = entry.to_line();
    let head = Digest::of(&line).to_hex();
    line.push(b'\n');
    let before = bytes.len() as u64;
    // Undo a failed append: cut the log back to where it was.
    let undo = |file: &std::fs::File, source: std::io::Error| {
        let _ = file.set_len(before).and_then(|()| file.sync_all());
        io(source)
    };
    if let Err(e) = file.write_all(&line).and_then(|()| file.sync_all()) {
        return Err(undo(&file, e));
    }
    let cp = Checkpoint {
        log: path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        seq,
        head,
        time: entry.time.clone(),
    };
    let env = audit::sign_checkpoint(&cp, key);
    let cp_path = audit::checkpoint_path(path);
    if let Err(e) = write_atomic(&cp_path, &env.to_json()) {
        // The old checkpoint still covers the log as it was.
        return Err(undo(
            &file,
            std::io::Error::new(e.kind(), format!("{}: {e}", cp_path.display())),
        ));
    }
    // Keep the lock until the checkpoint is in place.
    let _ = file.as_fd();
    drop(file);
    Ok(entry)
}
