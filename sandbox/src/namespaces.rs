//! Namespaces and identity. Guarantees: the sandbox gets fresh user, mount, pid, ipc, uts and
//! cgroup namespaces in one `clone`, and a fresh network namespace owned by that user namespace
//! before the job exists (made by the init's helper, see [`crate::net`]); the job runs as uid/gid
//! 1000 inside, which is never host root.
//!
//! ## UID mapping
//! * **Started as root**: inside 0..65535 → host 100000..165535 (a subuid-style range, written by
//!   the parent). The sandbox init becomes inside-root (host 100000) to build the mounts; the job
//!   runs as inside 1000 = **host 101000**. Host root (0) is not mapped, so host-root-owned files
//!   appear as `nobody` and are only accessible through their "other" permission bits. A `--rw`
//!   directory must therefore be writable by host uid 101000 (e.g. `chown 101000` it, or mode 1777).
//!   Supplementary groups are cleared inside.
//! * **Started unprivileged**: inside 1000 → the caller's uid, `setgroups` denied (the kernel
//!   requires it for an unprivileged map); the caller's supplementary groups stay attached.

use std::path::PathBuf;

/// Namespace flags for the sandbox `clone` (the network namespace comes after, from the init's
/// [`crate::net::NetHelper`]).
pub const CLONE_FLAGS: libc::c_int = libc::CLONE_NEWUSER
    | libc::CLONE_NEWNS
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWCGROUP;

/// The job's uid and gid inside the sandbox.
pub const JOB_ID: u32 = 1000;
/// First host uid/gid of the range used when started as root.
pub const ROOT_MODE_HOST_BASE: u32 = 100_000;
/// Size of that range.
pub const ROOT_MODE_RANGE: u32 = 65_536;

/// How ids are mapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdMode {
    /// Started as root: a range map, init becomes inside root.
    Root,
    /// Started unprivileged: a single-id map of the caller.
    Rootless {
        /// Caller's uid.
        uid: u32,
        /// Caller's gid.
        gid: u32,
    },
}

/// Errors writing the maps.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct MapError {
    /// The proc file.
    pub path: String,
    /// Cause.
    pub source: std::io::Error,
}

impl IdMode {
    /// Decide from the effective uid.
    pub fn detect() -> Self {
        let uid = nix::unistd::geteuid().as_raw();
        if uid == 0 {
            IdMode::Root
        } else {
            IdMode::Rootless {
                uid,
                gid: nix::unistd::getegid().as_raw(),
            }
        }
    }

    /// The host uid the job runs as.
    pub fn job_host_uid(&self) -> u32 {
        match self {
            IdMode::Root => ROOT_MODE_HOST_BASE + JOB_ID,
            IdMode::Rootless { uid, .. } => *uid,
        }
    }

    /// Whether the parent (not the child) prepares bind trees: only root can `open_tree` clones
    /// in the host mount namespace, and it must, since the inside uid may not traverse the paths.
    pub fn parent_prepares_binds(&self) -> bool {
        matches!(self, IdMode::Root)
    }

    /// Write `uid_map`, `setgroups`, `gid_map` of `pid`.
    pub fn write_maps(&self, pid: libc::pid_t) -> Result<(), MapError> {
        let base = PathBuf::from(format!("/proc/{pid}"));
        let write = |name: &str, text: &str| {
            let p = base.join(name);
            std::fs::write(&p, text).map_err(|source| MapError {
                path: p.display().to_string(),
                source,
            })
        };
        match self {
            IdMode::Root => {
                let m = format!("0 {ROOT_MODE_HOST_BASE} {ROOT_MODE_RANGE}\n");
                write("uid_map", &m)?;
                write("gid_map", &m)
            }
            IdMode::Rootless { uid, gid } => {
                write("uid_map", &format!("{JOB_ID} {uid} 1\n"))?;
                write("setgroups", "deny")?;
                write("gid_map", &format!("{JOB_ID} {gid} 1\n"))
            }
        }
    }
}
