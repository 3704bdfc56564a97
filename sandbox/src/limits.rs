//! Resource limits. Guarantees: rlimits (core 0, nofile, optional fsize) are set in the job before
//! exec; memory, task-count and CPU (CFS quota: `cpus` CPUs' worth of time per 100 ms) limits are
//! enforced by a per-run cgroup the init joins *before* it
//! is released to build the sandbox (so nothing it forks escapes them); the cgroup's counters tell
//! an OOM kill and a refused fork apart from an ordinary exit; the cgroup is removed afterwards.
//!
//! cgroup v2 is used when `/sys/fs/cgroup` is a cgroup2 mount (a child of the caller's own cgroup,
//! which must be delegated); otherwise v1 `memory` and `pids` (and `cpu`) hierarchies under
//! `/sys/fs/cgroup/{memory,pids,cpu}/sealrun/<id>`. A cgroup is made only when a memory or pids limit
//! is requested; a requested limit that cannot be enforced is an error (never silently unlimited).

use std::path::{Path, PathBuf};

/// The CFS period of a CPU limit, in microseconds.
const CPU_PERIOD_US: u64 = 100_000;

/// Default `RLIMIT_NOFILE`.
pub const DEFAULT_NOFILE: u64 = 4096;

/// Errors setting up cgroups.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct CgroupError {
    /// File or directory.
    pub path: String,
    /// Cause.
    pub source: std::io::Error,
}

fn cg_err(p: &Path, e: std::io::Error) -> CgroupError {
    CgroupError {
        path: p.display().to_string(),
        source: e,
    }
}

/// A per-run cgroup.
#[derive(Debug)]
pub enum Cgroup {
    /// v1: one directory per controller.
    V1 {
        /// memory controller dir.
        memory: PathBuf,
        /// pids controller dir.
        pids: PathBuf,
        /// cpu controller dir, when a CPU limit is asked for.
        cpu: Option<PathBuf>,
    },
    /// v2: one directory.
    V2(PathBuf),
}

/// Counters read at the end.
#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    /// OOM kills in the cgroup.
    pub oom_kills: u64,
    /// Forks refused by `pids.max`.
    pub pids_max_events: u64,
    /// Peak memory in bytes.
    pub peak_memory: u64,
}

const V1_ROOT: &str = "/sys/fs/cgroup";

fn is_cgroup2(p: &str) -> bool {
    nix::sys::statfs::statfs(p)
        .map(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
        .unwrap_or(false)
}

/// Our own cgroup v2 folder under the unified hierarchy mounted at `root` (`0::PATH` of
/// `/proc/self/cgroup`; the root if none).
pub(crate) fn own_v2_cgroup(root: &Path) -> PathBuf {
    let own = std::fs::read_to_string("/proc/self/cgroup")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("0::").map(|s| s.trim().to_string()))
        })
        .unwrap_or_else(|| "/".into());
    root.join(own.trim_start_matches('/'))
}

fn write(p: &Path, v: &str) -> Result<(), CgroupError> {
    std::fs::write(p, v).map_err(|e| cg_err(p, e))
}

fn read_key(p: &Path, key: &str) -> u64 {
    std::fs::read_to_string(p)
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                let (k, v) = l.split_once(' ')?;
                (k == key).then(|| v.trim().parse().ok()).flatten()
            })
        })
        .unwrap_or(0)
}

fn read_u64(p: &Path) -> u64 {
    std::fs::read_to_string(p)
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0)
}

impl Cgroup {
    /// Create the cgroup for run `id` and set the limits. `Ok(None)` when cgroups are not
    /// writable and no limit was asked for.
    pub fn create(
        id: &str,
        memory: Option<u64>,
        pids: Option<u64>,
        cpus: Option<f64>,
    ) -> Result<Option<Cgroup>, CgroupError> {
        let wanted = memory.is_some() || pids.is_some() || cpus.is_some();
        // Without limits a cgroup adds nothing the pid namespace does not already give (one tree,
        // killed as a whole), and attaching a task to a v1 cgroup can cost milliseconds (an RCU
        // grace period): no cgroup is made.
        if !wanted {
            return Ok(None);
        }
        let made = if is_cgroup2(V1_ROOT) {
            Self::create_v2(id)
        } else {
            Self::create_v1(id, cpus.is_some())
        };
        let cg = match made {
            Ok(cg) => cg,
            Err(_) if !wanted => return Ok(None),
            Err(e) => return Err(e),
        };
        if let Err(e) = cg.set_limits(memory, pids, cpus) {
            cg.remove();
            return Err(e);
        }
        Ok(Some(cg))
    }

    /// Remove cgroups left behind by supervisors that were killed (their id starts with the
    /// supervisor's pid, which no longer exists). Empty cgroups only: `rmdir` refuses others.
    fn remove_stale(dir: &Path) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name();
            let Some(pid) = name.to_str().and_then(|n| {
                n.trim_start_matches("sealrun-")
                    .split('-')
                    .next()?
                    .parse::<i32>()
                    .ok()
            }) else {
                continue;
            };
            if !Path::new(&format!("/proc/{pid}")).exists() {
                let _ = std::fs::remove_dir(e.path());
            }
        }
    }

    fn create_v1(id: &str, cpu: bool) -> Result<Cgroup, CgroupError> {
        Self::remove_stale(&Path::new(V1_ROOT).join("memory/sealrun"));
        Self::remove_stale(&Path::new(V1_ROOT).join("pids/sealrun"));
        if cpu {
            Self::remove_stale(&Path::new(V1_ROOT).join("cpu/sealrun"));
        }
        let memory = Path::new(V1_ROOT).join("memory/sealrun").join(id);
        let pids = Path::new(V1_ROOT).join("pids/sealrun").join(id);
        std::fs::create_dir_all(&memory).map_err(|e| cg_err(&memory, e))?;
        if let Err(e) = std::fs::create_dir_all(&pids) {
            let _ = std::fs::remove_dir(&memory);
            return Err(cg_err(&pids, e));
        }
        let cpu = if cpu {
            let dir = Path::new(V1_ROOT).join("cpu/sealrun").join(id);
            if let Err(e) = std::fs::create_dir_all(&dir) {
                let _ = std::fs::remove_dir(&memory);
                let _ = std::fs::remove_dir(&pids);
                return Err(cg_err(&dir, e));
            }
            Some(dir)
        } else {
            None
        };
        Ok(Cgroup::V1 { memory, pids, cpu })
    }

    fn create_v2(id: &str) -> Result<Cgroup, CgroupError> {
        let parent = own_v2_cgroup(Path::new(V1_ROOT));
        let _ = std::fs::write(parent.join("cgroup.subtree_control"), "+memory +pids +cpu");
        let dir = parent.join(format!("sealrun-{id}"));
        std::fs::create_dir(&dir).map_err(|e| cg_err(&dir, e))?;
        Ok(Cgroup::V2(dir))
    }

    fn set_limits(
        &self,
        memory: Option<u64>,
        pids: Option<u64>,
        cpus: Option<f64>,
    ) -> Result<(), CgroupError> {
        // CPU time per 100 ms period: `cpus` CPUs' worth.
        let quota = cpus.map(|c| ((c * CPU_PERIOD_US as f64).round() as u64).max(1000));
        match self {
            Cgroup::V1 {
                memory: m,
                pids: p,
                cpu,
            } => {
                if let (Some(q), Some(c)) = (quota, cpu) {
                    write(&c.join("cpu.cfs_period_us"), &CPU_PERIOD_US.to_string())?;
                    write(&c.join("cpu.cfs_quota_us"), &q.to_string())?;
                }
                if let Some(bytes) = memory {
                    write(&m.join("memory.limit_in_bytes"), &bytes.to_string())?;
                    let memsw = m.join("memory.memsw.limit_in_bytes");
                    if memsw.exists() {
                        write(&memsw, &bytes.to_string())?;
                    }
                }
                if let Some(n) = pids {
                    write(&p.join("pids.max"), &n.to_string())?;
                }
            }
            Cgroup::V2(d) => {
                if let Some(q) = quota {
                    write(&d.join("cpu.max"), &format!("{q} {CPU_PERIOD_US}"))?;
                }
                if let Some(bytes) = memory {
                    write(&d.join("memory.max"), &bytes.to_string())?;
                    let _ = std::fs::write(d.join("memory.swap.max"), "0");
                }
                if let Some(n) = pids {
                    write(&d.join("pids.max"), &n.to_string())?;
                }
            }
        }
        Ok(())
    }

    /// Move `pid` into the cgroup.
    pub fn add(&self, pid: libc::pid_t) -> Result<(), CgroupError> {
        let s = pid.to_string();
        match self {
            Cgroup::V1 { memory, pids, cpu } => {
                write(&memory.join("cgroup.procs"), &s)?;
                if let Some(c) = cpu {
                    write(&c.join("cgroup.procs"), &s)?;
                }
                write(&pids.join("cgroup.procs"), &s)
            }
            Cgroup::V2(d) => write(&d.join("cgroup.procs"), &s),
        }
    }

    /// Read the end-of-run counters.
    pub fn stats(&self) -> Stats {
        match self {
            Cgroup::V1 { memory, pids, .. } => Stats {
                oom_kills: read_key(&memory.join("memory.oom_control"), "oom_kill"),
                pids_max_events: read_key(&pids.join("pids.events"), "max"),
                peak_memory: read_u64(&memory.join("memory.max_usage_in_bytes")),
            },
            Cgroup::V2(d) => Stats {
                oom_kills: read_key(&d.join("memory.events"), "oom_kill"),
                pids_max_events: read_key(&d.join("pids.events"), "max"),
                peak_memory: read_u64(&d.join("memory.peak")),
            },
        }
    }

    /// SIGKILL every task in the cgroup (belt and braces after the pid-namespace init died).
    pub fn kill_all(&self) {
        let procs = match self {
            Cgroup::V1 { pids, .. } => pids.join("cgroup.procs"),
            Cgroup::V2(d) => {
                if std::fs::write(d.join("cgroup.kill"), "1").is_ok() {
                    return;
                }
                d.join("cgroup.procs")
            }
        };
        if let Ok(t) = std::fs::read_to_string(procs) {
            for pid in t.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                // SAFETY: sending a signal to a pid read from our own cgroup.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }

    /// Remove the cgroup directories (retrying briefly while the last tasks are torn down).
    pub fn remove(&self) {
        let dirs: Vec<&PathBuf> = match self {
            Cgroup::V1 { memory, pids, cpu } => {
                let mut v = vec![memory, pids];
                v.extend(cpu.as_ref());
                v
            }
            Cgroup::V2(d) => vec![d],
        };
        for d in dirs {
            for _ in 0..100 {
                match std::fs::remove_dir(d) {
                    Ok(()) => break,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                    Err(_) => std::thread::sleep(std::time::Duration::from_millis(2)),
                }
            }
        }
    }
}
