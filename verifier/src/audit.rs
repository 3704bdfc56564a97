//! The audit log: append-only JSON lines, each naming the hash of the line
//! before it, plus a signed checkpoint of the head.
//!
//! Guarantees of [`verify_log`]: every line parses; sequence numbers start at 1
//! and increase by one; each entry's `prev` is the SHA-256 of the previous
//! line's exact bytes (64 zeros for the first); so a modified, deleted,
//! reordered or inserted entry breaks the chain at the first bad sequence
//! number. The checkpoint (a DSSE envelope, kind `checkpoint`, over the head's
//! sequence number and hash) must be signed by a trusted key allowed to sign
//! checkpoints, name this log's file (`log`), and cover the **last** entry: a
//! log cut short behind the checkpoint is detected as truncated, and entries
//! after it (an unsigned tail, which anyone who can write the file could have
//! forged) are refused unless the caller explicitly allows them, in which case
//! they are reported as unsigned ([`LogSummary::unsigned_tail`]).

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::dsse::{self, DsseError, Envelope, IN_TOTO_PAYLOAD_TYPE};
use crate::keys::SigningKey;
use crate::policy::{Kind, Policy, TrustedKey};
use crate::statement::{self, Statement, Subject};

/// The hash that the first entry names as `prev`.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// The checkpoint predicate type.
pub const CHECKPOINT_PREDICATE_TYPE: &str = "https://sealrun.dev/audit-checkpoint/v1";

/// One audit-log line.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// 1, 2, 3, ...
    pub seq: u64,
    /// RFC 3339 UTC.
    pub time: String,
    /// SHA-256 hex of the previous line's bytes (without its newline).
    pub prev: String,
    /// `start`, `end` or `refused`.
    pub event: String,
    /// The job's name.
    pub job: String,
    /// The run's invocation id (ties `start` to its `end`).
    pub invocation: String,
    /// SHA-256 of the run record envelope, for `end` and `refused`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<String>,
    /// SHA-256 of the record's TPM evidence file (`NAME-ID.quote.json`), for an `end` whose
    /// record was quoted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<String>,
    /// `running`, `succeeded`, `failed: ...`, `refused: ...`.
    pub outcome: String,
}

impl Entry {
    /// The line's canonical bytes (compact JSON, no newline).
    pub fn to_line(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("entry serializes")
    }
}

/// The checkpoint predicate: the log's head at signing time.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    /// The log's file name (not its path).
    pub log: String,
    pub seq: u64,
    /// SHA-256 hex of line `seq`.
    pub head: String,
    pub time: String,
}

/// Sign a checkpoint.
pub fn sign_checkpoint(cp: &Checkpoint, key: &SigningKey) -> Envelope {
    let st = Statement::new(
        vec![Subject {
            name: cp.log.clone(),
            digest: [("sha256".to_string(), cp.head.clone())].into(),
        }],
        CHECKPOINT_PREDICATE_TYPE,
        cp,
    );
    dsse::sign(IN_TOTO_PAYLOAD_TYPE, &st.to_bytes(), key)
}

/// The checkpoint's path for a log: `LOG.checkpoint`.
pub fn checkpoint_path(log: &Path) -> std::path::PathBuf {
    let mut s = log.as_os_str().to_owned();
    s.push(".checkpoint");
    s.into()
}

/// Why a log does not verify.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error(transparent)]
    Io(#[from] crate::fsread::ReadError),
    #[error("audit log {log}: entry {seq} (line {line}): {reason}")]
    Broken {
        log: String,
        seq: u64,
        line: usize,
        reason: String,
    },
    #[error("audit log {log}: truncated: the signed checkpoint names entry {seq}, but the log ends at entry {last}")]
    Truncated { log: String, seq: u64, last: u64 },
    #[error("audit log {log}: entry {seq} does not match the signed checkpoint (hash {actual}, checkpoint {expected})")]
    CheckpointMismatch {
        log: String,
        seq: u64,
        expected: String,
        actual: String,
    },
    #[error("audit log {log}: checkpoint {path}: {source}")]
    Checkpoint {
        log: String,
        path: String,
        #[source]
        source: DsseError,
    },
    #[error("audit log {log}: checkpoint signed by key {key:?}, which may not sign checkpoints")]
    CheckpointKey { log: String, key: String },
    #[error("audit log {log}: no checkpoint at {path}: truncation cannot be ruled out (pass --no-checkpoint to accept that)")]
    NoCheckpoint { log: String, path: String },
    #[error("audit log {log}: entry {first} to entry {last} come after the signed checkpoint (entry {seq}) and are signed by nobody: they may be forged (the launcher re-signs the checkpoint on every append; pass --allow-unsigned-tail to accept them as unsigned, e.g. after a launcher crashed mid-append)")]
    UnsignedTail {
        log: String,
        seq: u64,
        first: u64,
        last: u64,
    },
    #[error("audit log {log}: checkpoint {path} is for log {named:?}, not {expected:?}")]
    CheckpointLog {
        log: String,
        path: String,
        named: String,
        expected: String,
    },
}

impl AuditError {
    /// The first bad sequence number, when the chain itself is broken.
    pub fn first_bad_seq(&self) -> Option<u64> {
        match self {
            AuditError::Broken { seq, .. } => Some(*seq),
            AuditError::Truncated { last, .. } => Some(last + 1),
            AuditError::CheckpointMismatch { seq, .. } => Some(*seq),
            AuditError::UnsignedTail { first, .. } => Some(*first),
            _ => None,
        }
    }

    /// A stable machine-readable name for the reason.
    pub fn kind(&self) -> &'static str {
        match self {
            AuditError::Io(_) => "unreadable",
            AuditError::Broken { .. } => "broken_chain",
            AuditError::Truncated { .. } => "truncated",
            AuditError::CheckpointMismatch { .. } => "checkpoint_mismatch",
            AuditError::Checkpoint { .. } => "bad_checkpoint",
            AuditError::CheckpointKey { .. } => "kind_not_allowed",
            AuditError::NoCheckpoint { .. } => "no_checkpoint",
            AuditError::UnsignedTail { .. } => "unsigned_tail",
            AuditError::CheckpointLog { .. } => "wrong_log",
        }
    }
}

/// What a verified log holds.
#[derive(Debug, Serialize)]
pub struct LogSummary {
    pub entries: u64,
    pub head: String,
    pub runs_finished: usize,
    pub refusals: usize,
    /// Invocations with a `start` and no `end`: runs that never finished
    /// (the launcher died or is still running).
    pub unfinished: Vec<String>,
    /// Invocations closed by recovery after their launcher died (`end` with an
    /// outcome starting `aborted`).
    pub aborted: Vec<String>,
    pub checkpoint_seq: Option<u64>,
    /// Entries after the checkpoint, accepted only with
    /// [`LogOptions::allow_unsigned_tail`]: their content is vouched for by no
    /// signature (only chained to the signed head), so anyone able to write the
    /// log could have appended them. Empty when the checkpoint covers the log.
    pub unsigned_tail: Vec<u64>,
}

/// How strict [`verify_log`] is.
#[derive(Clone, Copy, Debug)]
pub struct LogOptions {
    /// Refuse a non-empty log without a checkpoint (default true).
    pub require_checkpoint: bool,
    /// Accept entries after the checkpoint, reported as unsigned (default false).
    pub allow_unsigned_tail: bool,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            require_checkpoint: true,
            allow_unsigned_tail: false,
        }
    }
}

/// Parse and chain-check the log's bytes; returns the entries and line hashes.
pub fn check_chain(log: &str, bytes: &[u8]) -> Result<Vec<(Entry, String)>, AuditError> {
    let mut out: Vec<(Entry, String)> = Vec::new();
    let mut prev = GENESIS.to_string();
    let text = bytes;
    let mut lines: Vec<&[u8]> = text.split(|&b| b == b'\n').collect();
    if lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    for (i, line) in lines.iter().enumerate() {
        let expected_seq = i as u64 + 1;
        let broken = |seq: u64, reason: String| AuditError::Broken {
            log: log.to_string(),
            seq,
            line: seq as usize,
            reason,
        };
        let e: Entry = serde_json::from_slice(line)
            .map_err(|e| broken(expected_seq, format!("not a valid entry: {e}")))?;
        if e.seq != expected_seq {
            // A sequence number from the future means entries are missing here
            // (deleted, or a later one moved up); one from the past means the line
            // before this one does not belong (inserted).
            let (seq, what) = if e.seq > expected_seq {
                (expected_seq, "entry deleted or moved")
            } else {
                (expected_seq - 1, "entry inserted before this one")
            };
            return Err(broken(
                seq,
                format!(
                    "line {} has sequence number {}, expected {expected_seq} ({what})",
                    i + 1,
                    e.seq
                ),
            ));
        }
        if e.prev != prev {
            // Blame the previous line if the next line still vouches for this one
            // (this line is intact, its predecessor changed); otherwise this line.
            let vouched = lines
                .get(i + 1)
                .and_then(|next| serde_json::from_slice::<Entry>(next).ok())
                .is_some_and(|n| n.prev == Digest::of(line).to_hex());
            let seq = if vouched && expected_seq > 1 {
                expected_seq - 1
            } else {
                expected_seq
            };
            return Err(broken(
                seq,
                format!(
                    "entry {expected_seq} names prev {}, but the line before it hashes to {prev} (entry {seq} was modified, forged or moved)",
                    e.prev
                ),
            ));
        }
        if e.to_line() != *line {
            return Err(broken(
                expected_seq,
                "line is not in canonical form (edited by hand?)".into(),
            ));
        }
        prev = Digest::of(line).to_hex();
        out.push((e, prev.clone()));
    }
    Ok(out)
}

/// Verify the checkpoint envelope `cp_bytes` of the log `path` against its
/// chained `entries`; returns the sequence number it signs.
fn check_checkpoint(
    path: &Path,
    cp_path: &Path,
    cp_bytes: &[u8],
    entries: &[(Entry, String)],
    policy: &Policy,
) -> Result<u64, AuditError> {
    let log = path.display().to_string();
    let cp_err = |source| AuditError::Checkpoint {
        log: log.clone(),
        path: cp_path.display().to_string(),
        source,
    };
    let env = Envelope::parse(cp_bytes).map_err(cp_err)?;
    let (signers, payload): (Vec<&TrustedKey>, Vec<u8>) = env
        .verify(IN_TOTO_PAYLOAD_TYPE, |id| policy.lookup(id))
        .map_err(cp_err)?;
    let signer = policy.choose(&signers, |k| k.may_sign(Kind::Checkpoint));
    if !signer.may_sign(Kind::Checkpoint) {
        return Err(AuditError::CheckpointKey {
            log,
            key: signer.name.clone(),
        });
    }
    let st: Statement<Checkpoint> =
        statement::parse(&payload, CHECKPOINT_PREDICATE_TYPE).map_err(cp_err)?;
    let cp = st.predicate;
    let expected = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if cp.log != expected {
        return Err(AuditError::CheckpointLog {
            log,
            path: cp_path.display().to_string(),
            named: cp.log,
            expected,
        });
    }
    let last = entries.len() as u64;
    if cp.seq > last {
        return Err(AuditError::Truncated {
            log,
            seq: cp.seq,
            last,
        });
    }
    // A checkpoint always names an entry (the launcher signs one after appending).
    let Some(index) = cp.seq.checked_sub(1) else {
        return Err(cp_err(DsseError::Malformed {
            json_path: "payload$.predicate.seq".into(),
            reason: "a checkpoint names entry 1 or later".into(),
        }));
    };
    let actual = &entries[index as usize].1;
    if *actual != cp.head {
        return Err(AuditError::CheckpointMismatch {
            log,
            seq: cp.seq,
            expected: cp.head,
            actual: actual.clone(),
        });
    }
    Ok(cp.seq)
}

/// Verify the log at `path` and its checkpoint (`LOG.checkpoint`).
pub fn verify_log(
    path: &Path,
    policy: &Policy,
    opts: LogOptions,
) -> Result<LogSummary, AuditError> {
    use crate::fsread::{read_bounded, Follow, MAX_LOG_BYTES};
    let log = path.display().to_string();
    let bytes = read_bounded(path, "audit log", MAX_LOG_BYTES, Follow::Yes)?;
    let entries = check_chain(&log, &bytes)?;
    let last = entries.len() as u64;
    let cp_path = checkpoint_path(path);
    // Next to the log: a symlink there is not followed.
    let cp = read_bounded(&cp_path, "checkpoint", dsse::MAX_ENVELOPE_BYTES, Follow::No);
    let checkpoint_seq = match cp {
        Ok(cp_bytes) => Some(check_checkpoint(
            path, &cp_path, &cp_bytes, &entries, policy,
        )?),
        Err(e) if e.is_not_found() => {
            if opts.require_checkpoint && !entries.is_empty() {
                return Err(AuditError::NoCheckpoint {
                    log,
                    path: cp_path.display().to_string(),
                });
            }
            None
        }
        Err(e) => return Err(e.into()),
    };
    // Entries after the signed head: nobody vouches for them.
    let unsigned_tail: Vec<u64> = match checkpoint_seq {
        Some(seq) if seq < last => {
            if !opts.allow_unsigned_tail {
                return Err(AuditError::UnsignedTail {
                    log,
                    seq,
                    first: seq + 1,
                    last,
                });
            }
            (seq + 1..=last).collect()
        }
        _ => Vec::new(),
    };
    let mut started: Vec<&str> = Vec::new();
    let mut aborted: Vec<String> = Vec::new();
    let (mut finished, mut refusals) = (0, 0);
    for (e, _) in &entries {
        match e.event.as_str() {
            "start" => started.push(&e.invocation),
            "end" => {
                finished += 1;
                started.retain(|i| *i != e.invocation);
                if e.outcome.starts_with("aborted") {
                    aborted.push(e.invocation.clone());
                }
            }
            "refused" => refusals += 1,
            _ => {}
        }
    }
    Ok(LogSummary {
        entries: entries.len() as u64,
        head: entries
            .last()
            .map(|(_, h)| h.clone())
            .unwrap_or_else(|| GENESIS.to_string()),
        runs_finished: finished,
        refusals,
        unfinished: started.into_iter().map(str::to_string).collect(),
        aborted,
        checkpoint_seq,
        unsigned_tail,
    })
}
