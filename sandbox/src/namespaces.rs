//! Namespaces and identity. Guarantees: the sandbox gets fresh user, mount, pid, ipc and uts
//! namespaces in one `clone`, a fresh network namespace owned by that user namespace before the
//! job exists (made by the init's helper, see [`crate::net`]), and a cgroup namespace made by the
//! init once it is in the run's cgroup (so the job sees that cgroup as `/`); the job runs as uid/gid
//! 1000 inside, which is never host root.
//!
//! ## UID mapping
//! * **Started as root**: inside 0..65535 → a host range of 65536 ids of this run's own (written
//!   by the parent): the first of [`HOST_ID_SLOTS`] slots from [`HOST_IDS_START`] that overlaps no
//!   `/etc/subuid` or `/etc/subgid` entry (whose owners' rootless containers could otherwise write
//!   the job's files or signal it) and that no other run holds (an `flock` on
//!   `/run/sealrun/ids/SLOT`, kept by the plan until the run is over). No slot free is an error.
//!   The sandbox init becomes inside-root to build the mounts; the job runs as inside 1000 =
//!   **host base + 1000** (1879049192 for the first slot). Host root (0) is not mapped, so
//!   host-root-owned files appear as `nobody` and are only accessible through their "other"
//!   permission bits. A `--rw` directory must therefore be writable by the job's host uid (mode
//!   1777, or `sealrun run`, which hands its output folder over and back). Supplementary groups
//!   are cleared inside.
//! * **Started unprivileged**: inside 1000 → the caller's uid, `setgroups` denied (the kernel
//!   requires it for an unprivileged map); the caller's supplementary groups stay attached.

use std::path::PathBuf;

/// Namespace flags for the sandbox `clone` (the network namespace comes after, from the init's
/// [`crate::net::NetHelper`]; the cgroup namespace once the init is in the run's cgroup).
pub const CLONE_FLAGS: libc::c_int = libc::CLONE_NEWUSER
    | libc::CLONE_NEWNS
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUTS;

/// The job's uid and gid inside the sandbox.
pub const JOB_ID: u32 = 1000;
/// First host uid/gid of the ranges used when started as root: above every range that
/// `useradd` (subuid ranges from 100000) and systemd-nspawn (`--private-users=pick`, up to
/// 0x6FFFFFFF) hand out, below the ids over 2^31 that some tools mishandle.
pub const HOST_IDS_START: u32 = 0x7000_0000;
/// Size of one run's range.
pub const ROOT_MODE_RANGE: u32 = 65_536;
/// Number of ranges: up to systemd's "foreign" range at 0x7FFE0000.
pub const HOST_ID_SLOTS: u32 = (0x7FFE_0000 - HOST_IDS_START) / ROOT_MODE_RANGE;
/// Where runs lock their slot.
const ID_LOCK_DIR: &str = "/run/sealrun/ids";

/// How ids are mapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdMode {
    /// Started as root: a range map from host `base`, init becomes inside root.
    Root {
        /// First host id of this run's range.
        base: u32,
    },
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

/// Errors choosing the host id range.
#[derive(Debug, thiserror::Error)]
pub enum IdError {
    /// The lock folder or a lock file.
    #[error("{path}: {source}")]
    Lock {
        /// The path.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// Every slot overlaps a subordinate-id entry or is held by another run.
    #[error(
        "no free host id range: all {HOST_ID_SLOTS} ranges of {ROOT_MODE_RANGE} ids from \
         {HOST_IDS_START} overlap an /etc/subuid or /etc/subgid entry or are held by running \
         sandboxes; free one (remove or move the overlapping entries)"
    )]
    Exhausted,
}

/// A held host id range (root mode): the slot's lock is released when this is dropped.
#[derive(Debug)]
pub struct HostIds {
    /// First host id.
    pub base: u32,
    _lock: nix::fcntl::Flock<std::fs::File>,
}

/// `(start, count)` of every entry in `/etc/subuid` and `/etc/subgid` (missing files: none).
fn subordinate_ranges() -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    for f in ["/etc/subuid", "/etc/subgid"] {
        let Ok(text) = std::fs::read_to_string(f) else {
            continue;
        };
        for line in text.lines() {
            let mut it = line.trim().split(':').skip(1);
            if let (Some(Ok(start)), Some(Ok(count))) = (
                it.next().map(str::parse::<u64>),
                it.next().map(str::parse::<u64>),
            ) {
                out.push((start, count));
            }
        }
    }
    out
}

/// Take the first free host id range (see the module docs).
pub fn allocate_host_ids() -> Result<HostIds, IdError> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let lock_err = |path: &str, source| IdError::Lock {
        path: path.to_string(),
        source,
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(ID_LOCK_DIR)
        .map_err(|e| lock_err(ID_LOCK_DIR, e))?;
    let taken = subordinate_ranges();
    for slot in 0..HOST_ID_SLOTS {
        let base = HOST_IDS_START + slot * ROOT_MODE_RANGE;
        let (lo, hi) = (
            u64::from(base),
            u64::from(base) + u64::from(ROOT_MODE_RANGE),
        );
        if taken
            .iter()
            .any(|&(s, c)| s < hi && lo < s.saturating_add(c))
        {
            continue;
        }
        let path = format!("{ID_LOCK_DIR}/{slot}");
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
            .open(&path)
            .map_err(|e| lock_err(&path, e))?;
        match nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock) {
            Ok(lock) => return Ok(HostIds { base, _lock: lock }),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => continue,
            Err((_, e)) => return Err(lock_err(&path, e.into())),
        }
    }
    Err(IdError::Exhausted)
}

impl IdMode {
    /// Decide from the effective uid; as root, take a host id range (kept by the returned
    /// [`HostIds`]).
    pub fn detect() -> Result<(Self, Option<HostIds>), IdError> {
        let uid = nix::unistd::geteuid().as_raw();
        if uid == 0 {
            let ids = allocate_host_ids()?;
            Ok((IdMode::Root { base: ids.base }, Some(ids)))
        } else {
            Ok((
                IdMode::Rootless {
                    uid,
                    gid: nix::unistd::getegid().as_raw(),
                },
                None,
            ))
        }
    }

    /// The host uid the job runs as.
    pub fn job_host_uid(&self) -> u32 {
        match self {
            IdMode::Root { base } => base + JOB_ID,
            IdMode::Rootless { uid, .. } => *uid,
        }
    }

    /// Whether the parent (not the child) prepares bind trees: only root can `open_tree` clones
    /// in the host mount namespace, and it must, since the inside uid may not traverse the paths.
    pub fn parent_prepares_binds(&self) -> bool {
        matches!(self, IdMode::Root { .. })
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
            IdMode::Root { base } => {
                let m = format!("0 {base} {ROOT_MODE_RANGE}\n");
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
