//! A real, single-node Slurm cluster for the tests: `munged` with its own key, socket and
//! state, `slurmctld` and `slurmd` in the foreground with a minimal `slurm.conf`, all in one
//! temporary folder, on loopback only (`NodeAddr=127.0.0.1`, ports picked free on 127.0.0.1).
//!
//! Guarantees: [`Cluster::start`] returns only once `sinfo` shows the node `idle` (else an
//! error carrying the daemons' log tails); only one cluster runs on the machine at a time (an
//! exclusive `flock` on [`LOCK`], held for the cluster's life, serialises every test binary
//! that starts one); dropping the cluster stops every daemon it started (`scontrol shutdown`,
//! then `SIGKILL` for any still there after a grace period) and removes its folder.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The machine-wide lock every cluster holds while it runs.
pub const LOCK: &str = "/run/lock/sealrun-slurm-test.lock";

/// How long the node has to turn idle.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// A running test cluster (see the module docs).
pub struct Cluster {
    dir: tempfile::TempDir,
    /// The node's name (this host's name).
    pub node: String,
    daemons: Vec<(&'static str, Child)>,
    _lock: File,
}

/// Whether the Slurm and munge programs the cluster needs are installed.
pub fn available() -> bool {
    [
        "munged",
        "slurmctld",
        "slurmd",
        "sinfo",
        "sbatch",
        "srun",
        "scontrol",
    ]
    .iter()
    .all(|p| {
        std::env::var_os("PATH")
            .is_some_and(|path| std::env::split_paths(&path).any(|d| d.join(p).is_file()))
            || Path::new("/usr/sbin").join(p).is_file()
    })
}

fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
    Ok(l.local_addr().map_err(|e| e.to_string())?.port())
}

fn program(name: &str) -> PathBuf {
    let sbin = Path::new("/usr/sbin").join(name);
    if sbin.is_file() {
        sbin
    } else {
        PathBuf::from(name)
    }
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(15);
    format!("--- {}:\n{}", path.display(), lines[from..].join("\n"))
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `buf.len()` bytes into our live buffer.
    let r = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    assert_eq!(r, 0, "gethostname");
    let n = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    let full = String::from_utf8_lossy(&buf[..n]).into_owned();
    full.split('.').next().unwrap_or(&full).to_string()
}

fn lock() -> Result<File, String> {
    if let Some(dir) = Path::new(LOCK).parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(LOCK)
        .map_err(|e| format!("{LOCK}: {e}"))?;
    // SAFETY: flock on a descriptor we own; blocks until no other cluster runs.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(format!("{LOCK}: {}", std::io::Error::last_os_error()));
    }
    Ok(f)
}

impl Cluster {
    /// Start munged, slurmctld and slurmd; wait until the node is idle.
    pub fn start() -> Result<Cluster, String> {
        let lock = lock()?;
        let dir = tempfile::Builder::new()
            .prefix("sealrun-slurm.")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let mut c = Cluster {
            node: hostname(),
            dir,
            daemons: Vec::new(),
            _lock: lock,
        };
        c.start_munge()?;
        c.write_conf()?;
        let conf = c.conf().display().to_string();
        let node = c.node.clone();
        c.spawn("slurmctld", &["-D", "-i", "-f", &conf])?;
        c.spawn("slurmd", &["-D", "-f", &conf, "-N", &node])?;
        c.wait_idle()?;
        Ok(c)
    }

    /// The cluster's folder (config, logs, state).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `slurm.conf`.
    pub fn conf(&self) -> PathBuf {
        self.dir().join("slurm.conf")
    }

    fn munge_socket(&self) -> PathBuf {
        self.dir().join("munge/munge.sock")
    }

    fn start_munge(&mut self) -> Result<(), String> {
        use std::os::unix::fs::PermissionsExt;
        let m = self.dir().join("munge");
        std::fs::create_dir(&m).map_err(|e| e.to_string())?;
        std::fs::set_permissions(&m, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| e.to_string())?;
        let mut key = [0u8; 1024];
        File::open("/dev/urandom")
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut key))
            .map_err(|e| e.to_string())?;
        let key_path = m.join("munge.key");
        std::fs::write(&key_path, key).map_err(|e| e.to_string())?;
        std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o400))
            .map_err(|e| e.to_string())?;
        let arg = |name: &str, p: PathBuf| format!("--{name}={}", p.display());
        let args = [
            "-F".to_string(),
            "-f".to_string(),
            arg("key-file", key_path),
            arg("socket", self.munge_socket()),
            arg("pid-file", m.join("munged.pid")),
            arg("log-file", m.join("munged.log")),
            arg("seed-file", m.join("munged.seed")),
        ];
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.spawn("munged", &args)?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.munge_socket().exists() {
            if Instant::now() > deadline {
                return Err(format!(
                    "munged did not start\n{}",
                    tail(&m.join("munged.log"))
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    fn write_conf(&self) -> Result<(), String> {
        let d = self.dir().display().to_string();
        for sub in ["state", "spool", "log"] {
            std::fs::create_dir(self.dir().join(sub)).map_err(|e| e.to_string())?;
        }
        let (ctld, slurmd) = (free_port()?, free_port()?);
        let conf = format!(
            "ClusterName=sealrun-test
SlurmctldHost={node}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort={ctld}
SlurmdPort={slurmd}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={sock}
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool
SlurmctldPidFile={d}/slurmctld.pid
SlurmdPidFile={d}/slurmd.pid
SlurmctldLogFile={d}/log/slurmctld.log
SlurmdLogFile={d}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
MpiDefault=none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
KillWait=5
# The node's 2 CPUs as configured, whatever the machine has (ranks oversubscribe a small one).
SlurmdParameters=config_overrides
SlurmctldTimeout=30
SlurmdTimeout=30
NodeName={node} NodeAddr=127.0.0.1 CPUs=2 State=UNKNOWN
PartitionName=test Nodes={node} Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
",
            node = self.node,
            sock = self.munge_socket().display(),
        );
        std::fs::write(self.conf(), conf).map_err(|e| e.to_string())?;
        std::fs::write(
            self.dir().join("cgroup.conf"),
            "CgroupPlugin=cgroup/v1\nConstrainCores=no\nConstrainRAMSpace=no\nConstrainDevices=no\n",
        )
        .map_err(|e| e.to_string())
    }

    fn spawn(&mut self, name: &'static str, args: &[&str]) -> Result<(), String> {
        let log =
            File::create(self.dir().join(format!("{name}.out"))).map_err(|e| e.to_string())?;
        let child = Command::new(program(name))
            .args(args)
            .env("SLURM_CONF", self.conf())
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("{name}: {e}"))?;
        self.daemons.push((name, child));
        Ok(())
    }

    fn logs(&self) -> String {
        let d = self.dir();
        [
            d.join("log/slurmctld.log"),
            d.join("log/slurmd.log"),
            d.join("slurmctld.out"),
            d.join("slurmd.out"),
        ]
        .iter()
        .map(|p| tail(p))
        .collect::<Vec<_>>()
        .join("\n")
    }

    fn wait_idle(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let gone = self
                .daemons
                .iter_mut()
                .find_map(|(name, child)| Some((*name, child.try_wait().ok()??)));
            if let Some((name, st)) = gone {
                return Err(format!("{name} exited ({st})\n{}", self.logs()));
            }
            let out = self.command("sinfo").args(["-h", "-o", "%T"]).output();
            if let Ok(o) = out {
                if String::from_utf8_lossy(&o.stdout).trim() == "idle" {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                return Err(format!("the node did not turn idle\n{}", self.logs()));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// A Slurm client command (`sbatch`, `srun`, ...) aimed at this cluster (`SLURM_CONF`).
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.env("SLURM_CONF", self.conf());
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("SLURM_") && k != "SLURM_CONF" {
                c.env_remove(k);
            }
        }
        c
    }

    /// `sbatch --wait` of `script` (a bash script body) in `cwd`, with extra sbatch options;
    /// returns sbatch's output (its status is the job's).
    pub fn sbatch_wait(&self, cwd: &Path, options: &[&str], script: &str) -> Output {
        let path = cwd.join(format!("batch-{}.sh", std::process::id()));
        std::fs::write(&path, format!("#!/bin/bash\n{script}")).expect("write batch script");
        self.command("sbatch")
            .current_dir(cwd)
            .arg("--wait")
            .args(options)
            .arg(&path)
            .output()
            .expect("run sbatch")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self
            .command("scontrol")
            .arg("shutdown")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        // munged last: the Slurm daemons need it to shut down cleanly.
        for (name, child) in self.daemons.iter_mut().rev() {
            if *name == "munged" {
                continue;
            }
            while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        for (_, child) in self.daemons.iter_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
