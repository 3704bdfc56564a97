//! The sealrun sandbox: runs one command isolated by namespaces, a pivoted read-only root,
//! dropped capabilities, Landlock, seccomp and cgroup limits, and reports how it ended.
//!
//! The crate knows nothing about jobs, keys or records. It takes a [`SandboxConfig`] (plain
//! data), turns it into an immutable [`SandboxPlan`] (profiles parsed, seccomp compiled to BPF,
//! bind sources resolved, every C string built — all before the first fork), and executes the
//! plan, returning an [`Outcome`].
//!
//! ```no_run
//! use sealrun_sandbox::{SandboxConfig, SandboxPlan, ProfileRef};
//! let mut config = SandboxConfig::new(vec!["/bin/true".into()]);
//! config.profile = ProfileRef::Name("minimal".into());
//! let plan = SandboxPlan::build(config)?;
//! let outcome = plan.run()?;
//! println!("{:?} (exit status {})", outcome.end, outcome.exit_status());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The setup order inside the sandbox is one commented sequence in [`child`]; the kernel
//! features each have their own module.

mod caps;
pub mod cdi;
mod child;
pub mod config;
mod device_bpf;
pub mod devices;
mod landlock;
mod limits;
mod mounts;
mod namespaces;
mod net;
mod notify;
pub mod outcome;
pub mod peer_connect;
pub mod plan;
mod precompiled;
pub mod profile;
pub mod seccomp;
pub mod supervise;
mod sys;
mod syscall_table;
mod unix_connect;

pub use child::Step;
pub use config::{Bind, FdBind, Network, ProfileRef, SandboxConfig, SecretFile, Stdio, Tmpfs};
pub use net::loopback_up;
pub use outcome::{DeniedSyscall, EgressAttempt, EndReason, LandlockReport, Outcome};
pub use plan::{PlanError, SandboxPlan};
pub use supervise::{SandboxError, SandboxHandle, SetupStep};

/// Exit statuses used by `sealrun exec` (and reusable by other front ends).
pub mod exit_codes {
    /// Usage error (bad flags), as in `sysexits.h` `EX_USAGE`.
    pub const USAGE: u8 = 64;
    /// The command ran past its `--timeout` and was killed with its whole tree.
    pub const TIMEOUT: u8 = 124;
    /// The sandbox could not be set up; the error names the step that failed.
    pub const SETUP_FAILED: u8 = 125;
    /// Added to a signal number when the command was killed by a signal.
    pub const SIGNAL_BASE: u8 = 128;
}
