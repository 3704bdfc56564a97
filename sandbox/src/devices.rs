//! Extra device nodes (GPUs) for the job. Guarantees: each node the caller asks for is opened at
//! plan time without following symlinks and must be a character device (with the major/minor the
//! caller expects, if it gave them); it is bound at its path under the sandbox's `/dev`
//! (`nosuid,noexec`, not `nodev`, so it can be opened), and its Landlock rule allows read, write
//! and device ioctls (`LANDLOCK_ACCESS_FS_IOCTL_DEV`, ABI 5) on that node only.
//!
//! Device control: extra nodes asked for, started as root, the run's devices are limited by
//! the kernel's device controller to the standard nodes (null, zero, full, random, urandom, tty)
//! and the extra ones with their permissions; the job can open no other device even if one were
//! reachable. Where the host has a cgroup v1 `devices` hierarchy, the run gets its own devices
//! cgroup (`devices/sealrun/<id>`: `devices.deny a`, then `devices.allow` per node); on cgroup v2,
//! an eBPF device program ([`crate::device_bpf`]) goes on the run's limits cgroup, or on a cgroup
//! made for it (`sealrun-dev-<id>` beside the launcher). The init joins it before the job starts.
//! Without root (no writable cgroups) there is none, and that is reported; the nodes the job can
//! open are then the ones bound (it cannot `mknod`: no `CAP_MKNOD`, every other mount is `nodev`).

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use crate::limits::CgroupError;
use crate::mounts::{Builder, MountError};

/// A device node to give the job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceNode {
    /// The node on the host.
    pub host: PathBuf,
    /// Where it appears inside the sandbox (under `/dev/`).
    pub dest: PathBuf,
    /// Device cgroup permissions: a subset of `rwm`.
    pub permissions: String,
    /// The major number the caller expects (checked against the host node).
    pub major: Option<u64>,
    /// The minor number the caller expects.
    pub minor: Option<u64>,
}

/// A device node as planned: its numbers and permissions, for the device cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedDevice {
    /// Path inside the sandbox.
    pub dest: PathBuf,
    /// Major number of the host node.
    pub major: u64,
    /// Minor number.
    pub minor: u64,
    /// `rwm` subset.
    pub permissions: String,
}

/// Errors planning device nodes.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// The node could not be opened.
    #[error("device node {path}: {source}")]
    Open {
        /// Host path.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// Not a character device, or not the one expected, or a bad destination or permissions.
    #[error("device node {path}: {detail}")]
    Bad {
        /// Host path.
        path: String,
        /// What is wrong.
        detail: String,
    },
    /// Mount planning.
    #[error(transparent)]
    Mount(#[from] MountError),
}

/// Plan the binds of `nodes` into `b`; returns them with their numbers.
pub fn plan(b: &mut Builder, nodes: &[DeviceNode]) -> Result<Vec<PlannedDevice>, DeviceError> {
    let mut out = Vec::new();
    for n in nodes {
        let shown = n.host.display().to_string();
        let bad = |detail: String| DeviceError::Bad {
            path: shown.clone(),
            detail,
        };
        if !n.dest.starts_with("/dev/") || n.dest.starts_with("/dev/shm") {
            return Err(bad(format!(
                "its path inside the sandbox ({}) must be under /dev/ (and not /dev/shm)",
                n.dest.display()
            )));
        }
        if n.permissions.is_empty() || !n.permissions.chars().all(|c| "rwm".contains(c)) {
            return Err(bad(format!(
                "permissions {:?} must be a subset of \"rwm\"",
                n.permissions
            )));
        }
        let fd: OwnedFd =
            crate::sys::open_path_nofollow(&n.host).map_err(|source| DeviceError::Open {
                path: shown.clone(),
                source,
            })?;
        let st = nix::sys::stat::fstat(fd.as_raw_fd()).map_err(|e| DeviceError::Open {
            path: shown.clone(),
            source: e.into(),
        })?;
        if st.st_mode & libc::S_IFMT != libc::S_IFCHR {
            return Err(bad(
                "not a character device (sealrun binds character devices only)".into(),
            ));
        }
        let (major, minor) = (
            libc::major(st.st_rdev) as u64,
            libc::minor(st.st_rdev) as u64,
        );
        if n.major.is_some_and(|m| m != major) || n.minor.is_some_and(|m| m != minor) {
            return Err(bad(format!(
                "is {major}:{minor}, the spec expects {}:{}",
                n.major.map_or("*".into(), |m| m.to_string()),
                n.minor.map_or("*".into(), |m| m.to_string())
            )));
        }
        b.device(n.host.clone(), &n.dest, fd)?;
        out.push(PlannedDevice {
            dest: n.dest.clone(),
            major,
            minor,
            permissions: n.permissions.clone(),
        });
    }
    Ok(out)
}

/// Plan the read-only `mounts` that come with the devices. One whose host path, resolved, is
/// the same file as its destination resolved on the host, and is already visible read-only
/// there (e.g. a driver library under `/usr`, bound by the mount profile), is skipped: it is
/// the same inode, and its destination may lie behind a symlink the sandbox recreates (`/lib`).
pub fn plan_mounts(b: &mut Builder, mounts: &[crate::config::Bind]) -> Result<(), DeviceError> {
    for m in mounts {
        let host = std::fs::canonicalize(&m.host).map_err(|source| DeviceError::Open {
            path: m.host.display().to_string(),
            source,
        })?;
        let same = std::fs::canonicalize(&m.dest).is_ok_and(|d| d == host);
        if same && b.covers(&host) {
            continue;
        }
        b.bind(&m.host, &m.dest, false)?;
    }
    Ok(())
}

const V1_DEVICES: &str = "/sys/fs/cgroup/devices";
const V2_ROOT: &str = "/sys/fs/cgroup";

/// How device access is controlled for a run with extra device nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupMode {
    /// A cgroup v1 devices cgroup of the run's own (deny all, allow the listed nodes).
    V1,
    /// cgroup v2: an eBPF device program (see [`crate::device_bpf`]) on the run's cgroup.
    V2,
    /// No device control (neither hierarchy, or not started as root).
    None,
}

impl CgroupMode {
    /// What the host allows: v1 with a `devices` hierarchy and root, else none.
    pub fn detect() -> CgroupMode {
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        let fs = |p: &str| {
            nix::sys::statfs::statfs(p)
                .map(|s| s.filesystem_type())
                .ok()
        };
        match (root, fs(V1_DEVICES), fs(V2_ROOT)) {
            (true, Some(nix::sys::statfs::CGROUP_SUPER_MAGIC), _) => CgroupMode::V1,
            (true, _, Some(nix::sys::statfs::CGROUP2_SUPER_MAGIC)) => CgroupMode::V2,
            _ => CgroupMode::None,
        }
    }

    /// For records: `v1-devices` or `none (…why…)`.
    pub fn describe(self) -> &'static str {
        match self {
            CgroupMode::V1 => {
                "cgroup v1 devices: deny all, allow the standard and the listed nodes"
            }
            CgroupMode::V2 => {
                "cgroup v2 device program (eBPF): allow the standard and the listed nodes, deny \
                 all others"
            }
            CgroupMode::None => {
                "none: no cgroup hierarchy to use, or not started as root; the job reaches only \
                 the nodes bound into its /dev"
            }
        }
    }
}

/// A run's device control: a v1 devices cgroup, or (v2) a cgroup with the device program.
#[derive(Debug)]
pub struct DeviceCgroup {
    dir: PathBuf,
    /// Made for the devices alone (the init joins it, and it is removed after the run); false
    /// when the program went on the run's own (limits) cgroup, which is joined and removed
    /// with it.
    own: bool,
}

fn cg_err(p: &Path, source: std::io::Error) -> CgroupError {
    CgroupError {
        path: p.display().to_string(),
        source,
    }
}

/// The standard nodes the sandbox always binds, then `extra`: `(major, minor, rwm)`.
fn rules(extra: &[PlannedDevice]) -> Vec<crate::device_bpf::Rule> {
    let mut out: Vec<crate::device_bpf::Rule> = crate::mounts::DEVICES
        .iter()
        .filter_map(|d| {
            let st = nix::sys::stat::stat(&Path::new("/dev").join(d)).ok()?;
            (st.st_mode & libc::S_IFMT == libc::S_IFCHR).then(|| {
                (
                    libc::major(st.st_rdev) as u64,
                    libc::minor(st.st_rdev) as u64,
                    "rwm".to_string(),
                )
            })
        })
        .collect();
    out.extend(
        extra
            .iter()
            .map(|d| (d.major, d.minor, d.permissions.clone())),
    );
    out
}

/// Remove devices cgroups left by supervisors that were killed (their id starts with the
/// supervisor's pid, which no longer exists). `rmdir` refuses any that still has tasks.
fn remove_stale(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(n) = name.to_str() else { continue };
        // v1: `<pid>-<n>` under `devices/sealrun`; v2: `sealrun-dev-<pid>-<n>` among others.
        let id = match n.strip_prefix("sealrun-dev-") {
            Some(id) => id,
            None if dir.ends_with("sealrun") => n,
            None => continue,
        };
        let pid = id.split('-').next().and_then(|p| p.parse::<u32>().ok());
        if pid.is_some_and(|p| !Path::new(&format!("/proc/{p}")).exists()) {
            let _ = std::fs::remove_dir(e.path());
        }
    }
}

impl DeviceCgroup {
    /// Make `devices/sealrun/<id>` allowing the standard nodes and `extra`.
    pub fn create(id: &str, extra: &[PlannedDevice]) -> Result<DeviceCgroup, CgroupError> {
        remove_stale(&Path::new(V1_DEVICES).join("sealrun"));
        let dir = Path::new(V1_DEVICES).join("sealrun").join(id);
        std::fs::create_dir_all(&dir).map_err(|e| cg_err(&dir, e))?;
        let cg = DeviceCgroup { dir, own: true };
        let write = |file: &str, v: &str| {
            let p = cg.dir.join(file);
            std::fs::write(&p, v).map_err(|e| cg_err(&p, e))
        };
        let r = write("devices.deny", "a").and_then(|()| {
            rules(extra).iter().try_for_each(|(major, minor, perms)| {
                write("devices.allow", &format!("c {major}:{minor} {perms}"))
            })
        });
        if let Err(e) = r {
            cg.remove();
            return Err(e);
        }
        Ok(cg)
    }

    /// cgroup v2: attach the device program for the standard nodes and `extra` to the run's
    /// own cgroup `run` (made for its limits), or else to a cgroup made for it next to where
    /// the launcher is (`sealrun-dev-<id>`).
    pub fn create_v2(
        id: &str,
        extra: &[PlannedDevice],
        run: Option<&Path>,
    ) -> Result<DeviceCgroup, CgroupError> {
        let cg = match run {
            Some(d) => DeviceCgroup {
                dir: d.to_path_buf(),
                own: false,
            },
            None => {
                let parent = crate::limits::own_v2_cgroup(Path::new(V2_ROOT));
                remove_stale(&parent);
                let dir = parent.join(format!("sealrun-dev-{id}"));
                std::fs::create_dir(&dir).map_err(|e| cg_err(&dir, e))?;
                DeviceCgroup { dir, own: true }
            }
        };
        let r = crate::device_bpf::load(&rules(extra))
            .and_then(|prog| crate::device_bpf::attach(&prog, &cg.dir));
        if let Err(e) = r {
            cg.remove();
            return Err(cg_err(&cg.dir, e));
        }
        Ok(cg)
    }

    /// Move `pid` into it (nothing to do when it is the run's limits cgroup, joined already).
    pub fn add(&self, pid: libc::pid_t) -> Result<(), CgroupError> {
        if !self.own {
            return Ok(());
        }
        let p = self.dir.join("cgroup.procs");
        std::fs::write(&p, pid.to_string()).map_err(|e| cg_err(&p, e))
    }

    /// Its folder.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Kill what is left in it and remove it (retrying briefly while tasks are torn down); the
    /// run's limits cgroup is left to its owner.
    pub fn remove(&self) {
        if !self.own {
            return;
        }
        if let Ok(t) = std::fs::read_to_string(self.dir.join("cgroup.procs")) {
            for pid in t.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                // SAFETY: signalling a pid read from the run's own cgroup.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        for _ in 0..250 {
            match std::fs::remove_dir(&self.dir) {
                Ok(()) => break,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(2)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn gpu_profile_is_python_plus_get_mempolicy_only() {
        let parse = |n: &str| -> serde_json::Value {
            serde_json::from_str(crate::profile::embedded_seccomp(n).unwrap()).unwrap()
        };
        let (mut gpu, mut python) = (parse("gpu"), parse("python"));
        let added = gpu["syscalls"].as_array_mut().unwrap().remove(1);
        assert_eq!(added["names"], serde_json::json!(["get_mempolicy"]));
        assert_eq!(added["action"], "SCMP_ACT_ALLOW");
        for p in [&mut gpu, &mut python] {
            p.as_object_mut().unwrap().remove("comment");
        }
        assert!(
            gpu == python,
            "seccomp/gpu.json must be seccomp/python.json plus its get_mempolicy rule (second): \
             after changing python.json, copy its rules into gpu.json"
        );
        let m = |n: &str| -> serde_json::Value {
            let mut v: serde_json::Value =
                serde_json::from_str(crate::profile::embedded_mounts(n).unwrap()).unwrap();
            v.as_object_mut().unwrap().remove("comment");
            v
        };
        assert_eq!(
            m("gpu"),
            m("python"),
            "mounts/gpu.json is mounts/python.json"
        );
    }
}
