//! How a run ended and what it used and tried. Serializable: this is what `--report FILE` writes
//! and what the run record carries.

use serde::{Deserialize, Serialize};

use crate::exit_codes;

/// Why the sandbox ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EndReason {
    /// The command exited.
    Exited {
        /// Exit code.
        code: i32,
    },
    /// The command was killed by a signal (not by the sandbox's limits).
    Signaled {
        /// Signal number.
        signal: i32,
    },
    /// The wall-clock limit passed; the whole tree was killed.
    Timeout,
    /// The memory cgroup's OOM killer killed the command.
    OomKilled,
    /// The command failed after the pids limit refused a fork.
    PidsLimit {
        /// The command's own status (exit code, or 128+signal).
        status: i32,
    },
}

/// A denied system call the job attempted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeniedSyscall {
    /// Name (or `nr_N`).
    pub name: String,
    /// Attempts.
    pub count: u64,
}

/// An outbound network attempt (always refused).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EgressAttempt {
    /// `connect` or `sendto`.
    pub syscall: String,
    /// `inet`, `inet6`, `unix`, `netlink`, or `af_N`.
    pub family: String,
    /// `1.2.3.4:53`, `[::1]:80`, a socket path, `@abstract`, or `?` if unreadable.
    pub address: String,
}

/// Landlock enforcement as applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LandlockReport {
    /// Kernel ABI (0 = unavailable).
    pub abi: u32,
    /// `enforced` or `unsupported`.
    pub status: String,
}

/// Everything known about a finished run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    /// End reason.
    pub end: EndReason,
    /// Wall time from sandbox creation to the end, in milliseconds.
    pub wall_ms: u64,
    /// User CPU of the whole tree, milliseconds.
    pub cpu_user_ms: u64,
    /// System CPU of the whole tree, milliseconds.
    pub cpu_sys_ms: u64,
    /// Peak memory in bytes (cgroup peak when available, else max RSS).
    pub peak_memory_bytes: u64,
    /// Denied system calls attempted, by name.
    pub denied_syscalls: Vec<DeniedSyscall>,
    /// Outbound connect/sendto attempts.
    pub egress_attempts: Vec<EgressAttempt>,
    /// Connects to allowed peers the supervisor carried out (a joined network only; see
    /// [`crate::peer_connect`]); not refused, but observed all the same.
    #[serde(default)]
    pub peer_connects: Vec<EgressAttempt>,
    /// Landlock.
    pub landlock: LandlockReport,
    /// Profile name.
    pub profile: String,
    /// Hex SHA-256 of the profile files.
    pub profile_sha256: String,
    /// Hex SHA-256 of the compiled BPF.
    pub bpf_sha256: String,
}

impl Outcome {
    /// The status `sealrun exec` exits with: the command's code, 128+signal, 124 on timeout,
    /// 137 (128+SIGKILL) on OOM kill.
    pub fn exit_status(&self) -> u8 {
        match &self.end {
            EndReason::Exited { code } => *code as u8,
            EndReason::Signaled { signal } => exit_codes::SIGNAL_BASE.wrapping_add(*signal as u8),
            EndReason::Timeout => exit_codes::TIMEOUT,
            EndReason::OomKilled => exit_codes::SIGNAL_BASE + libc::SIGKILL as u8,
            EndReason::PidsLimit { status } => *status as u8,
        }
    }
}
