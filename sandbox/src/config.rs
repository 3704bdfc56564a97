//! What the caller asks for: plain data, no validation yet (that happens in
//! [`crate::SandboxPlan::build`]).

use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::time::Duration;

/// Which profile to use: a built-in name (`default`, `minimal`, `python`, `gpu`) or a path to an
/// OCI/Docker seccomp JSON file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProfileRef {
    /// A shipped profile, looked up in `$SEALRUN_PROFILES`, next to the binary
    /// (`../share/sealrun/profiles`), or in the copy embedded in the binary.
    Name(String),
    /// An OCI/Docker seccomp JSON file; system mounts then come from the `default` mount profile.
    Path(PathBuf),
}

impl ProfileRef {
    /// `NAME` when the value has no `/` and no `.json` suffix, else a path.
    pub fn parse(s: &str) -> Self {
        if s.contains('/') || s.ends_with(".json") {
            ProfileRef::Path(PathBuf::from(s))
        } else {
            ProfileRef::Name(s.to_string())
        }
    }
}

impl Default for ProfileRef {
    fn default() -> Self {
        ProfileRef::Name("default".into())
    }
}

/// A bind mount of a host path (`host`) at `dest` inside the sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind {
    /// Host path. Symlinks in it are resolved once, when the plan is built; the resolved path is
    /// then opened without following any symlink, so a swap after planning is refused.
    pub host: PathBuf,
    /// Absolute path inside the sandbox.
    pub dest: PathBuf,
}

impl Bind {
    /// Parse `HOST[:DEST]` (DEST defaults to HOST).
    pub fn parse(s: &str) -> Self {
        match s.split_once(':') {
            Some((h, d)) if !d.is_empty() => Bind {
                host: h.into(),
                dest: d.into(),
            },
            _ => Bind {
                host: s.trim_end_matches(':').into(),
                dest: s.trim_end_matches(':').into(),
            },
        }
    }
}

/// A read-only bind of a host file or folder the caller already holds open (`O_PATH` is
/// enough). Started as root, it is mounted from this very descriptor and never looked up by
/// path, so renaming it, or any folder above it, after it was opened changes nothing. (Rootless,
/// the child looks up the path the descriptor had at plan time again, like any bind.)
#[derive(Debug)]
pub struct FdBind {
    /// The open source.
    pub fd: OwnedFd,
    /// Absolute path inside the sandbox.
    pub dest: PathBuf,
}

/// A size-limited tmpfs at `dest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tmpfs {
    /// Absolute path inside the sandbox.
    pub dest: PathBuf,
    /// Size cap in bytes.
    pub size: u64,
}

/// A secret handed to the job as a read-only file (mode 0400, owned by the job's
/// uid) on a private tmpfs that exists only in the sandbox's mount namespace.
/// The sandbox init removes the file when `ttl` has passed since the job started.
pub struct SecretFile {
    /// Absolute path inside the sandbox, under `/run/` (e.g. `/run/secrets/token`).
    pub dest: PathBuf,
    /// The value; zeroed when dropped.
    pub data: zeroize::Zeroizing<Vec<u8>>,
    /// How long the file exists after the job starts.
    pub ttl: Duration,
}

impl std::fmt::Debug for SecretFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SecretFile({}, <{} bytes redacted>, ttl {:?})",
            self.dest.display(),
            self.data.len(),
            self.ttl
        )
    }
}

/// Where the command's stdout/stderr go. Stdin is always `/dev/null`.
#[derive(Debug, Default)]
pub enum Stdio {
    /// The launcher's own descriptor.
    #[default]
    Inherit,
    /// Any descriptor, e.g. the write end of a pipe the launcher reads and redacts.
    Fd(OwnedFd),
}

/// The sandbox's network.
#[derive(Debug, Default)]
pub enum Network {
    /// A fresh network namespace with only loopback; every inet `connect` is refused and
    /// observed (the default).
    #[default]
    Private,
    /// Join this network namespace (made by the caller, its interfaces already set up; the
    /// caller must be root: the sandbox is cloned into it) and let a `connect` reach exactly
    /// `allow` (mediated by the supervisor, see [`crate::peer_connect`]); everything else is
    /// refused and observed as with [`Network::Private`].
    Join {
        /// A descriptor of the namespace (`/proc/PID/ns/net` or a bind mount of one).
        netns: OwnedFd,
        /// What a `connect` may reach.
        allow: Vec<crate::peer_connect::AllowRule>,
    },
}

/// Everything the caller decides about one sandboxed run.
#[derive(Debug)]
pub struct SandboxConfig {
    /// Command and arguments. `argv[0]` without a `/` is searched in the sandbox `PATH`.
    pub argv: Vec<String>,
    /// Extra environment; the sandbox starts from a fixed allowlist
    /// (`PATH`, `HOME=/tmp`, `LANG=C.UTF-8`, `TMPDIR=/tmp`), these override/extend it.
    pub env: Vec<(String, String)>,
    /// Working directory inside the sandbox (default `/`; `/tmp` when that is writable).
    pub cwd: Option<PathBuf>,
    /// Seccomp + mount profile.
    pub profile: ProfileRef,
    /// Read-only binds (added to the profile's system binds).
    pub ro_binds: Vec<Bind>,
    /// Read-only binds from descriptors (see [`FdBind`]).
    pub ro_fd_binds: Vec<FdBind>,
    /// Read-write binds.
    pub rw_binds: Vec<Bind>,
    /// Extra tmpfs mounts. `/tmp` (256 MiB) and `/dev/shm` (a folder of the root tmpfs, which is
    /// sized for it: half the memory limit, at least 64 MiB, or 1 GiB without one; see
    /// [`crate::plan::default_shm_size`]) always exist; listing them here resizes them.
    pub tmpfs: Vec<Tmpfs>,
    /// Memory limit in bytes (cgroup; swap included where the host accounts it).
    pub memory: Option<u64>,
    /// Maximum number of tasks (cgroup `pids.max`).
    pub pids: Option<u64>,
    /// CPU limit in CPUs (cgroup CFS quota; fractions allowed). Also sets `OMP_NUM_THREADS`,
    /// `OPENBLAS_NUM_THREADS`, `MKL_NUM_THREADS` and `NUMEXPR_NUM_THREADS` to it (rounded up)
    /// unless `env` sets them.
    pub cpus: Option<f64>,
    /// Wall-clock limit; the whole process tree is killed when it passes.
    pub timeout: Option<Duration>,
    /// `RLIMIT_NOFILE` (default 4096).
    pub nofile: Option<u64>,
    /// `RLIMIT_FSIZE` in bytes (default: unlimited — tmpfs sizes bound writes).
    pub fsize: Option<u64>,
    /// Command stdout.
    pub stdout: Stdio,
    /// Command stderr.
    pub stderr: Stdio,
    /// Secrets delivered as files on a private tmpfs, removed at their TTL.
    pub secrets: Vec<SecretFile>,
    /// Extra device nodes (GPUs) bound under `/dev` (see [`crate::devices`]).
    pub devices: Vec<crate::devices::DeviceNode>,
    /// Read-only mounts that come with those devices (driver libraries and tools from a CDI
    /// spec); one whose host file is already visible at the same place is not mounted again.
    pub device_mounts: Vec<Bind>,
    /// The network (default: a private namespace with loopback only).
    pub network: Network,
}

impl SandboxConfig {
    /// A config with defaults: `default` profile, no extra binds, no limits.
    pub fn new(argv: Vec<String>) -> Self {
        SandboxConfig {
            argv,
            env: Vec::new(),
            cwd: None,
            profile: ProfileRef::default(),
            ro_binds: Vec::new(),
            ro_fd_binds: Vec::new(),
            rw_binds: Vec::new(),
            tmpfs: Vec::new(),
            memory: None,
            pids: None,
            cpus: None,
            timeout: None,
            nofile: None,
            fsize: None,
            stdout: Stdio::Inherit,
            stderr: Stdio::Inherit,
            secrets: Vec::new(),
            devices: Vec::new(),
            device_mounts: Vec::new(),
            network: Network::Private,
        }
    }
}
