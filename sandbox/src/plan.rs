//! The immutable plan. Guarantees: everything that can fail for a reason other than the kernel
//! refusing a call — profile lookup and parsing, seccomp compilation, bind resolution, Landlock
//! ruleset creation, argv/env encoding — happens here, before the first fork. The child then only
//! walks the plan.

use std::ffi::CString;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::{SandboxConfig, Stdio};
use crate::landlock::{LandlockError, Prepared};
use crate::mounts::{Builder, MountError, MountPlan};
use crate::namespaces::IdMode;
use crate::profile::ProfileError;
use crate::seccomp::{Compiled, SeccompError};

/// Errors building a plan (all before any process is created).
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// No command.
    #[error("no command given")]
    NoCommand,
    /// A string contains a NUL byte.
    #[error("{what} contains a NUL byte: {value:?}")]
    Nul {
        /// argv / env / cwd.
        what: &'static str,
        /// The value.
        value: String,
    },
    /// An environment variable name is invalid.
    #[error("invalid environment variable name {0:?}")]
    EnvName(String),
    /// Profile loading.
    #[error(transparent)]
    Profile(#[from] ProfileError),
    /// Seccomp compilation.
    #[error(transparent)]
    Seccomp(#[from] SeccompError),
    /// Seccomp profile parsing or compilation.
    #[error(transparent)]
    SeccompProfile(#[from] crate::seccomp::ProfileCompileError),
    /// Mount planning.
    #[error(transparent)]
    Mount(#[from] MountError),
    /// Landlock ruleset.
    #[error(transparent)]
    Landlock(#[from] LandlockError),
    /// `--cwd` is not absolute.
    #[error("working directory {0:?} must be an absolute path")]
    Cwd(String),
    /// A network namespace to join, but not started as root.
    #[error("joining a network namespace needs root (the sandbox is cloned into it)")]
    JoinNeedsRoot,
    /// A secret's path or count (never its value).
    #[error("secret: {0}")]
    Secret(String),
    /// No host id range for the job.
    #[error(transparent)]
    HostIds(#[from] crate::namespaces::IdError),
    /// An extra device node (GPU).
    #[error(transparent)]
    Device(#[from] crate::devices::DeviceError),
}

/// The sandbox's `/etc/passwd`: inside root (the init), the job's user (uid 1000, home `/tmp`)
/// and `nobody` (what unmapped host ids show as).
pub const PASSWD: &str = "root:x:0:0:root:/root:/usr/sbin/nologin\n\
sealrun:x:1000:1000:sealrun job:/tmp:/usr/sbin/nologin\n\
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n";

/// The sandbox's `/etc/group`.
pub const GROUP: &str = "root:x:0:\nsealrun:x:1000:\nnogroup:x:65534:\n";

/// Thread-count variables set to the CPU limit (unless the caller sets them).
pub const THREAD_VARS: [&str; 4] = [
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
];

/// The size of `/dev/shm` unless asked: half the memory limit (shared memory is charged to the
/// run's memory cgroup, so more could never be used), at least 64 MiB; without a memory limit,
/// 1 GiB (data loaders and `multiprocessing.shared_memory` need more than a container's
/// customary 64 MiB).
pub fn default_shm_size(memory: Option<u64>) -> u64 {
    memory.map_or(1 << 30, |m| (m / 2).max(crate::mounts::DEFAULT_SHM_SIZE))
}

/// The sandbox's fixed `PATH`.
pub const SANDBOX_PATH: &str = "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin";

/// A fully prepared sandbox run. Build with [`SandboxPlan::build`], execute with
/// [`SandboxPlan::run`] (blocking) or [`SandboxPlan::spawn`].
#[derive(Debug)]
pub struct SandboxPlan {
    pub(crate) profile_name: String,
    pub(crate) profile_sha256: String,
    pub(crate) seccomp: Compiled,
    pub(crate) landlock: Prepared,
    pub(crate) ids: IdMode,
    /// Root mode: this run's host id range, held until the plan is dropped.
    _host_ids: Option<crate::namespaces::HostIds>,
    pub(crate) mounts: MountPlan,
    pub(crate) argv: Vec<CString>,
    pub(crate) envp: Vec<CString>,
    pub(crate) candidates: Vec<CString>,
    pub(crate) cwd: CString,
    pub(crate) nofile: u64,
    pub(crate) fsize: Option<u64>,
    pub(crate) memory: Option<u64>,
    pub(crate) pids: Option<u64>,
    pub(crate) cpus: Option<f64>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) stdout: Option<OwnedFd>,
    pub(crate) stderr: Option<OwnedFd>,
    pub(crate) secrets: Vec<PlannedSecret>,
    /// Leave the exited sandbox init to the system's reaper (see [`SandboxPlan::detach_teardown`]).
    pub(crate) detach_teardown: bool,
    /// Extra device nodes (GPUs), with their numbers.
    pub(crate) devices: Vec<crate::devices::PlannedDevice>,
    /// How their access is controlled (a v1 devices cgroup or none); `None` without devices.
    pub(crate) device_cgroup: Option<crate::devices::CgroupMode>,
    /// The run's devices cgroup while it runs (made by the supervisor).
    pub(crate) device_cg: Option<crate::devices::DeviceCgroup>,
    /// A network namespace to clone the sandbox into (else it makes its own).
    pub(crate) join_netns: Option<OwnedFd>,
    /// What a `connect` may reach (mediated; empty: nothing).
    pub(crate) allow: Vec<crate::peer_connect::AllowRule>,
}

/// A secret file, ready for the child: where to write it before and after the
/// root switch, the bytes (zeroed on drop), and its time to live.
pub(crate) struct PlannedSecret {
    /// Path under the new root, before `pivot_root`.
    pub(crate) staged: CString,
    /// Path inside the sandbox.
    pub(crate) path: CString,
    pub(crate) data: zeroize::Zeroizing<Vec<u8>>,
    pub(crate) ttl: Duration,
}

impl std::fmt::Debug for PlannedSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "PlannedSecret({:?}, <redacted>, {:?})",
            self.path, self.ttl
        )
    }
}

/// At most this many secrets per sandbox (the init tracks their deadlines on its stack).
pub const MAX_SECRETS: usize = 16;

fn cs(what: &'static str, s: &[u8]) -> Result<CString, PlanError> {
    CString::new(s).map_err(|_| PlanError::Nul {
        what,
        value: String::from_utf8_lossy(s).into_owned(),
    })
}

impl SandboxPlan {
    /// Validate and prepare everything.
    pub fn build(config: SandboxConfig) -> Result<SandboxPlan, PlanError> {
        if config.argv.is_empty() {
            return Err(PlanError::NoCommand);
        }
        let profile = crate::profile::load(&config.profile)?;
        let seccomp = crate::seccomp::compile_profile(&profile)?;

        // Environment: allowlist, then --env.
        let mut env: Vec<(String, String)> = vec![
            ("PATH".into(), SANDBOX_PATH.into()),
            ("HOME".into(), "/tmp".into()),
            ("TMPDIR".into(), "/tmp".into()),
            ("LANG".into(), "C.UTF-8".into()),
        ];
        for (k, v) in &config.env {
            if k.is_empty() || k.contains('=') {
                return Err(PlanError::EnvName(k.clone()));
            }
            env.retain(|(ek, _)| ek != k);
            env.push((k.clone(), v.clone()));
        }
        // A CPU limit: numeric libraries size their thread pools to it unless told otherwise
        // (they would otherwise start one thread per host CPU and thrash under the quota).
        if let Some(cpus) = config.cpus {
            let threads = (cpus.ceil() as u64).max(1).to_string();
            for var in THREAD_VARS {
                if !env.iter().any(|(k, _)| k == var) {
                    env.push((var.to_string(), threads.clone()));
                }
            }
        }
        let path_var = env
            .iter()
            .find(|(k, _)| k == "PATH")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();

        // Mounts.
        let mut b = Builder::default();
        for p in &profile.mounts.ro {
            b.system(Path::new(p))?;
        }
        let argv0 = &config.argv[0];
        let host_argv0: Option<PathBuf> = if argv0.contains('/') {
            Some(PathBuf::from(argv0))
        } else {
            path_var
                .split(':')
                .map(|d| Path::new(d).join(argv0))
                .find(|p| p.is_file())
        };
        if profile.mounts.interpreter_prefix {
            if let Some(a0) = &host_argv0 {
                for prefix in crate::profile::interpreter_prefixes(a0) {
                    if !b.covers(&prefix) {
                        b.bind(&prefix, &prefix, false)?;
                    }
                }
            }
        }
        let tmp_size = config
            .tmpfs
            .iter()
            .find(|t| t.dest == Path::new("/tmp"))
            .map_or(crate::mounts::DEFAULT_TMP_SIZE, |t| t.size);
        let shm_size = config
            .tmpfs
            .iter()
            .find(|t| t.dest == Path::new("/dev/shm"))
            .map_or_else(|| default_shm_size(config.memory), |t| t.size);
        // Account entries for the ids the sandbox uses (what `getpass.getuser()`, `id`, `ls -l`
        // and `pwd.getpwuid` look up), never the host's.
        b.content(Path::new("/etc/passwd"), PASSWD.as_bytes().to_vec())?;
        b.content(Path::new("/etc/group"), GROUP.as_bytes().to_vec())?;
        b.tmpfs(Path::new("/tmp"), tmp_size, 0o1777)?;
        b.standard(profile.mounts.sys, shm_size)?;
        for t in &config.tmpfs {
            if t.dest != Path::new("/tmp") && t.dest != Path::new("/dev/shm") {
                b.tmpfs(&t.dest, t.size, 0o1777)?;
            }
        }
        // Secrets: one small private tmpfs per folder that holds them.
        if config.secrets.len() > MAX_SECRETS {
            return Err(PlanError::Secret(format!(
                "at most {MAX_SECRETS} secrets per sandbox"
            )));
        }
        let mut secret_dirs: Vec<PathBuf> = Vec::new();
        for sf in &config.secrets {
            let d = &sf.dest;
            let ok = d.is_absolute()
                && d.starts_with("/run/")
                && d.parent().is_some_and(|p| p != Path::new("/run"))
                && !d.components().any(|c| {
                    matches!(
                        c,
                        std::path::Component::ParentDir | std::path::Component::CurDir
                    )
                });
            if !ok {
                return Err(PlanError::Secret(format!(
                    "{}: a secret's path must be a file in a folder under /run/, e.g. /run/secrets/NAME",
                    d.display()
                )));
            }
            let dir = d.parent().expect("checked above").to_path_buf();
            if !secret_dirs.contains(&dir) {
                secret_dirs.push(dir);
            }
        }
        for dir in &secret_dirs {
            let bytes: u64 = config
                .secrets
                .iter()
                .filter(|s| s.dest.parent() == Some(dir.as_path()))
                .map(|s| s.data.len() as u64 + 4096)
                .sum();
            b.secret_dir(dir, bytes + (64 << 10))?;
        }
        let devices = crate::devices::plan(&mut b, &config.devices)?;
        crate::devices::plan_mounts(&mut b, &config.device_mounts)?;
        for bind in &config.ro_binds {
            b.bind(&bind.host, &bind.dest, false)?;
        }
        for bind in config.ro_fd_binds {
            b.bind_fd(bind.fd, &bind.dest)?;
        }
        for bind in &config.rw_binds {
            b.bind(&bind.host, &bind.dest, true)?;
        }
        let mounts = b.finish();

        // Landlock rules for the host sources.
        let rules: Vec<crate::landlock::HostRule<'_>> = mounts
            .binds
            .iter()
            .map(|s| crate::landlock::HostRule {
                path: &s.host,
                write: s.write,
                fd: std::os::fd::AsFd::as_fd(&*s.fd),
                is_dir: s.is_dir,
            })
            .collect();
        let joins = matches!(config.network, crate::config::Network::Join { .. });
        let landlock = crate::landlock::prepare(&rules, joins)?;

        // argv, env, exec candidates.
        let argv = config
            .argv
            .iter()
            .map(|a| cs("argv", a.as_bytes()))
            .collect::<Result<Vec<_>, _>>()?;
        let envp = env
            .iter()
            .map(|(k, v)| cs("env", format!("{k}={v}").as_bytes()))
            .collect::<Result<Vec<_>, _>>()?;
        let candidates = if argv0.contains('/') {
            vec![cs("argv", argv0.as_bytes())?]
        } else {
            path_var
                .split(':')
                .filter(|d| d.starts_with('/'))
                .map(|d| cs("argv", Path::new(d).join(argv0).as_os_str().as_bytes()))
                .collect::<Result<Vec<_>, _>>()?
        };
        let cwd = match &config.cwd {
            Some(c) if !c.is_absolute() => return Err(PlanError::Cwd(c.display().to_string())),
            Some(c) => cs("cwd", c.as_os_str().as_bytes())?,
            None => c"/tmp".to_owned(),
        };
        let mut secrets = Vec::new();
        for sf in config.secrets {
            let staged = Path::new(crate::mounts::NEW_ROOT)
                .join(sf.dest.strip_prefix("/").unwrap_or(&sf.dest));
            secrets.push(PlannedSecret {
                staged: cs("secret path", staged.as_os_str().as_bytes())?,
                path: cs("secret path", sf.dest.as_os_str().as_bytes())?,
                data: sf.data,
                ttl: sf.ttl,
            });
        }
        let (ids, host_ids) = IdMode::detect()?;
        let (join_netns, allow) = match config.network {
            crate::config::Network::Private => (None, Vec::new()),
            crate::config::Network::Join { .. } if !ids.parent_prepares_binds() => {
                return Err(PlanError::JoinNeedsRoot)
            }
            crate::config::Network::Join { netns, allow } => (Some(netns), allow),
        };
        let fd = |s: Stdio| match s {
            Stdio::Inherit => None,
            Stdio::Fd(f) => Some(f),
        };
        Ok(SandboxPlan {
            profile_name: profile.name,
            profile_sha256: profile.sha256,
            seccomp,
            landlock,
            ids,
            _host_ids: host_ids,
            mounts,
            argv,
            envp,
            candidates,
            cwd,
            nofile: config.nofile.unwrap_or(crate::limits::DEFAULT_NOFILE),
            fsize: config.fsize,
            memory: config.memory,
            pids: config.pids,
            cpus: config.cpus,
            timeout: config.timeout,
            stdout: fd(config.stdout),
            stderr: fd(config.stderr),
            secrets,
            detach_teardown: false,
            device_cgroup: (!devices.is_empty()).then(crate::devices::CgroupMode::detect),
            devices,
            device_cg: None,
            join_netns,
            allow,
        })
    }

    /// For a caller that exits as soon as the run returns (`sealrun exec`): once the command's
    /// status is in, do not reap the sandbox init at all. Its teardown (the kernel killing what is
    /// left in the pid namespace and freeing the namespaces) then finishes after this process has
    /// exited, and the system's reaper collects it; nothing of the sandbox survives it. Without
    /// this, a background thread reaps the init. Ignored when a cgroup is used or the status was
    /// lost: the run then always waits for the whole teardown. The plan's descriptors and memory
    /// are left to the caller's exit too (unless it holds secrets, which are zeroed as always).
    pub fn detach_teardown(mut self) -> Self {
        self.detach_teardown = true;
        self
    }

    /// Profile name (or path as given).
    pub fn profile_name(&self) -> &str {
        &self.profile_name
    }

    /// Hex SHA-256 of the profile files (seccomp JSON then mount JSON).
    pub fn profile_sha256(&self) -> &str {
        &self.profile_sha256
    }

    /// Hex SHA-256 of the compiled BPF (the main filter, then the guard filter if there is one).
    pub fn bpf_sha256(&self) -> &str {
        &self.seccomp.sha256
    }

    /// The compiled main seccomp program as raw `struct sock_filter` bytes (what `bwrap
    /// --seccomp` reads), for benchmarks and inspection.
    pub fn bpf_main_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.seccomp.main.len() * 8);
        for ins in &self.seccomp.main {
            out.extend_from_slice(&ins.code.to_ne_bytes());
            out.extend_from_slice(&[ins.jt, ins.jf]);
            out.extend_from_slice(&ins.k.to_ne_bytes());
        }
        out
    }

    /// The kernel's Landlock ABI (0 = not available; the run then proceeds without it).
    pub fn landlock_abi(&self) -> u32 {
        self.landlock.abi
    }

    /// The host uid the job will run as.
    pub fn job_host_uid(&self) -> u32 {
        self.ids.job_host_uid()
    }

    /// The extra device nodes (GPUs) as planned.
    pub fn devices(&self) -> &[crate::devices::PlannedDevice] {
        &self.devices
    }

    /// How access to the extra device nodes is controlled (`None` when there are none).
    pub fn device_cgroup(&self) -> Option<crate::devices::CgroupMode> {
        self.device_cgroup
    }
}
