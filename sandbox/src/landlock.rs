//! Landlock: a second, inode-based fence around the filesystem. The ruleset handles every
//! filesystem right the kernel's ABI knows and grants: read+execute beneath read-only binds,
//! everything beneath read-write binds and the sandbox's tmpfs mounts, read/write of the device
//! nodes, read of `/proc`, directory listing of `/`. Where the ABI is ≥ 4 TCP bind and connect
//! are handled with no rule, i.e. denied (in a joined job network only connect: the ranks
//! listen for each other, and their connects are made by the supervisor). Best effort: on an older kernel the ruleset is as
//! strict as that kernel allows, and the ABI and status are reported.
//!
//! The ruleset is created with the `landlock` crate in the parent, which also gives the access
//! masks for the kernel's ABI. Rules for host bind sources (whose inodes are the same inside the
//! sandbox) are added there, on the descriptors opened at plan time; rules for the sandbox's own
//! tmpfs mounts are added by the child after `pivot_root`; then `landlock_restrict_self`.

use std::ffi::CStr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

use landlock::{
    Access, AccessFs, AccessNet, BitFlags, CompatLevel, Compatible, Ruleset, RulesetAttr, ABI,
};

use crate::sys::SysResult;

/// Errors building the ruleset.
#[derive(Debug, thiserror::Error)]
pub enum LandlockError {
    /// The crate refused the ruleset.
    #[error("landlock ruleset: {0}")]
    Ruleset(String),
    /// A bind source could not be opened for a rule.
    #[error("landlock rule for {path}: {detail}")]
    Rule {
        /// Host path.
        path: String,
        /// Cause.
        detail: String,
    },
}

/// The kernel's Landlock ABI version (0 if unsupported or disabled).
pub fn kernel_abi() -> u32 {
    // SAFETY: LANDLOCK_CREATE_RULESET_VERSION with a null attr and size 0 only queries.
    let r = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<u8>(),
            0usize,
            1u32,
        )
    };
    if r < 0 {
        0
    } else {
        r as u32
    }
}

fn abi_enum(v: u32) -> ABI {
    match v {
        0 => ABI::Unsupported,
        1 => ABI::V1,
        2 => ABI::V2,
        3 => ABI::V3,
        4 => ABI::V4,
        5 => ABI::V5,
        _ => ABI::V6,
    }
}

/// Access masks (raw bits) the child uses for its own rules.
#[derive(Debug, Clone, Copy)]
pub struct Masks {
    /// Everything handled.
    pub all: u64,
    /// Read-only of files and dirs, no execute.
    pub read_noexec: u64,
    /// List directories only.
    pub list: u64,
    /// Read a file (a rule on a file takes file rights only).
    pub read_file: u64,
}

/// A ruleset ready for the child, or the reason there is none.
#[derive(Debug)]
pub struct Prepared {
    /// The ruleset fd (None when the kernel has no Landlock).
    pub fd: Option<OwnedFd>,
    /// Kernel ABI.
    pub abi: u32,
    /// Masks for the child's rules.
    pub masks: Masks,
}

/// One host path rule.
#[derive(Debug, Clone)]
pub struct HostRule<'a> {
    /// Host path (already resolved).
    pub path: &'a Path,
    /// Read-write (else read+execute).
    pub write: bool,
    /// The path, opened (`O_PATH`) at plan time.
    pub fd: std::os::fd::BorrowedFd<'a>,
    /// Whether it is a directory.
    pub is_dir: bool,
}

/// Build the ruleset with rules for the host bind sources; `tcp_bind`: leave TCP `bind` to the
/// network namespace (a joined job network), else it is denied.
pub fn prepare(rules: &[HostRule<'_>], tcp_bind: bool) -> Result<Prepared, LandlockError> {
    let abi_v = kernel_abi();
    let abi = abi_enum(abi_v);
    let all = AccessFs::from_all(abi);
    let read = AccessFs::from_read(abi);
    let read_noexec = (AccessFs::ReadFile | AccessFs::ReadDir) & all;
    let masks = Masks {
        all: all.bits(),
        read_noexec: read_noexec.bits(),
        list: (BitFlags::from(AccessFs::ReadDir) & all).bits(),
        read_file: (BitFlags::from(AccessFs::ReadFile) & all).bits(),
    };
    if abi_v == 0 {
        return Ok(Prepared {
            fd: None,
            abi: 0,
            masks,
        });
    }
    let err = |e: landlock::RulesetError| LandlockError::Ruleset(e.to_string());
    let mut ruleset = Ruleset::default()
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(all)
        .map_err(err)?;
    if abi_v >= 4 {
        let net = if tcp_bind {
            BitFlags::from(AccessNet::ConnectTcp)
        } else {
            AccessNet::BindTcp | AccessNet::ConnectTcp
        };
        ruleset = ruleset.handle_access(net).map_err(err)?;
    }
    let created = ruleset.create().map_err(err)?;
    // The host rules are added with raw calls on the descriptors opened at plan time (the crate
    // would open and `fstat` every path again); the masks come from the crate, for this ABI.
    let fd: Option<OwnedFd> = created.into();
    if let Some(ruleset) = &fd {
        for r in rules {
            let want = if r.write { all } else { read };
            let access = if r.is_dir {
                want
            } else {
                want & AccessFs::from_file(abi)
            };
            add_fd_rule(ruleset.as_raw_fd(), r.fd.as_raw_fd(), access.bits()).map_err(|e| {
                LandlockError::Rule {
                    path: r.path.display().to_string(),
                    detail: std::io::Error::from_raw_os_error(e).to_string(),
                }
            })?;
        }
    }
    Ok(Prepared {
        fd,
        abi: abi_v,
        masks,
    })
}

fn errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// `struct landlock_path_beneath_attr` (packed in the UAPI).
#[repr(C, packed)]
struct PathBeneathAttr {
    allowed_access: u64,
    parent_fd: i32,
}

/// Add a rule for the open descriptor `parent` to `ruleset`. Async-signal-safe.
pub fn add_fd_rule(ruleset: i32, parent: i32, access: u64) -> SysResult<()> {
    let attr = PathBeneathAttr {
        allowed_access: access,
        parent_fd: parent,
    };
    // SAFETY: LANDLOCK_RULE_PATH_BENEATH (1) with a live attr struct.
    let r = unsafe {
        libc::syscall(
            libc::SYS_landlock_add_rule,
            ruleset,
            1u32,
            &attr as *const PathBeneathAttr,
            0u32,
        )
    };
    if r < 0 {
        Err(errno())
    } else {
        Ok(())
    }
}

/// Add a rule for `path` (opened `O_PATH`) to `ruleset`. Async-signal-safe.
pub fn add_path_rule(ruleset: i32, path: &CStr, access: u64) -> SysResult<()> {
    // SAFETY: path is NUL-terminated; the fd is closed below.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_PATH | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(errno());
    }
    let r = add_fd_rule(ruleset, fd, access);
    // SAFETY: closing the fd opened above.
    unsafe { libc::close(fd) };
    r
}

/// Enforce `ruleset` on the calling thread (needs `no_new_privs`). Async-signal-safe.
pub fn restrict_self(ruleset: i32) -> SysResult<()> {
    // SAFETY: integer arguments.
    let r = unsafe { libc::syscall(libc::SYS_landlock_restrict_self, ruleset, 0u32) };
    if r < 0 {
        Err(errno())
    } else {
        Ok(())
    }
}
