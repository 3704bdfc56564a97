//! The supervisor (parent side). Guarantees: the sandbox is created with one `clone` carrying all
//! namespace flags; the uid/gid maps and the cgroup are in place before the child is released;
//! a setup failure is reported with the step, the object and the errno, and nothing of the command
//! runs; the wall-clock timeout kills the pid-namespace init, which takes the whole tree with it;
//! the sandbox dies with the thread that created it (`PR_SET_PDEATHSIG`); cgroups are removed.
//! The supervisor starts no thread of its own: one `poll` loop waits for the setup result, the
//! seccomp notifications (answered in turn, one per pass, see [`crate::notify`]), the command's
//! status and the timeout — whose deadline is checked on every pass, so a flood of notifications
//! cannot hold it off.
//!
//! [`SandboxPlan::run`] blocks the calling thread. [`SandboxPlan::spawn`] runs the same code on a
//! dedicated thread (which is the sandbox's parent for `PR_SET_PDEATHSIG`) and returns a handle
//! once the command has been exec'd.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::Instant;

use crate::child::{ChildFds, ExecArrays, Fail, Step};
use crate::limits::Cgroup;
use crate::outcome::{EndReason, LandlockReport, Outcome};
use crate::plan::SandboxPlan;
use crate::sys::LinuxSys;

/// Errors running the sandbox.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The sandbox could not be built; nothing of the command ran.
    #[error("sandbox setup failed at {step}: {detail}")]
    Setup {
        /// The step (e.g. `pivot_root`, `cgroup`).
        step: SetupStep,
        /// What failed and why, e.g. `/tmp: Operation not permitted`.
        detail: String,
    },
    /// Supervising the running sandbox failed.
    #[error("sandbox supervision failed: {0}")]
    Supervise(String),
}

/// Where the sandbox's setup failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetupStep {
    /// A step of the in-sandbox sequence (see the `child` module's list).
    InSandbox(crate::child::Step),
    /// A step the supervisor takes outside (`cgroup`, `uid_map`, `clone`, `pipe`, ...).
    Supervisor(&'static str),
}

impl std::fmt::Display for SetupStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SetupStep::InSandbox(s) => s.name(),
            SetupStep::Supervisor(s) => s,
        })
    }
}

fn setup(step: &'static str, detail: impl std::fmt::Display) -> SandboxError {
    SandboxError::Setup {
        step: SetupStep::Supervisor(step),
        detail: detail.to_string(),
    }
}

fn strerror(e: i32) -> String {
    let s = std::io::Error::from_raw_os_error(e).to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

/// A running sandbox.
#[derive(Debug)]
pub struct SandboxHandle {
    pid: libc::pid_t,
    thread: std::thread::JoinHandle<Result<Outcome, SandboxError>>,
}

impl SandboxHandle {
    /// Host pid of the sandbox init (pid 1 inside).
    pub fn pid(&self) -> libc::pid_t {
        self.pid
    }

    /// Send `sig` to the sandbox: SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1/2 are forwarded to the
    /// command by the init; SIGKILL ends the whole sandbox at once. Call it only before
    /// [`SandboxHandle::wait`] has returned (afterwards the pid may have been reaped and reused).
    pub fn kill(&self, sig: i32) -> std::io::Result<()> {
        // SAFETY: sending a signal to our own child (not yet reaped while the thread runs).
        if unsafe { libc::kill(self.pid, sig) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// Wait for the end.
    pub fn wait(self) -> Result<Outcome, SandboxError> {
        self.thread
            .join()
            .map_err(|_| SandboxError::Supervise("supervisor thread panicked".into()))?
    }
}

impl SandboxPlan {
    /// Run to completion on the calling thread (which must stay alive until this returns; it is
    /// the sandbox's parent). Blocking; in async code call it from `spawn_blocking` or use
    /// [`SandboxPlan::spawn`].
    pub fn run(self) -> Result<Outcome, SandboxError> {
        supervise(self, None)
    }

    /// Like [`SandboxPlan::run`], calling `on_start` with the host pid of the sandbox init once
    /// the command has been exec'd (e.g. to forward signals to it; see [`SandboxHandle::kill`]).
    pub fn run_with(
        self,
        on_start: impl FnOnce(libc::pid_t) + Send + 'static,
    ) -> Result<Outcome, SandboxError> {
        supervise(self, Some(Box::new(on_start)))
    }

    /// Start the sandbox on a dedicated supervisor thread; returns once the command has been
    /// exec'd (or the setup failed).
    pub fn spawn(self) -> Result<SandboxHandle, SandboxError> {
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("sealrun-sandbox".into())
            .spawn(move || {
                supervise(
                    self,
                    Some(Box::new(move |pid| {
                        let _ = tx.send(pid);
                    })),
                )
            })
            .map_err(|e| setup("supervisor thread", e))?;
        match rx.recv() {
            Ok(pid) => Ok(SandboxHandle { pid, thread }),
            Err(_) => Err(thread
                .join()
                .map_err(|_| SandboxError::Supervise("supervisor thread panicked".into()))?
                .err()
                .unwrap_or_else(|| {
                    SandboxError::Supervise("sandbox ended before starting".into())
                })),
        }
    }
}

fn pipe() -> Result<(OwnedFd, OwnedFd), SandboxError> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| setup("pipe", e))
}

type OnStart = Box<dyn FnOnce(libc::pid_t) + Send>;

static RUN_COUNTER: AtomicU64 = AtomicU64::new(0);

fn read_exact_or_eof(fd: RawFd, buf: &mut [u8]) -> usize {
    let mut got = 0;
    while got < buf.len() {
        // SAFETY: reading into the unfilled tail of a live buffer.
        let r = unsafe { libc::read(fd, buf[got..].as_mut_ptr().cast(), buf.len() - got) };
        if r < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
            continue;
        }
        if r <= 0 {
            break;
        }
        got += r as usize;
    }
    got
}

fn describe_fail(plan: &SandboxPlan, f: &Fail) -> SandboxError {
    let i = f.index as usize;
    let what = match f.step {
        Step::OpenBindSource | Step::CloneBindSource | Step::SetBindFlags => plan
            .mounts
            .binds
            .get(i)
            .map(|b| b.host.display().to_string())
            .unwrap_or_default(),
        Step::Mkdir
        | Step::CreateFile
        | Step::BindMount
        | Step::MountTmpfs
        | Step::Symlink
        | Step::MountProc => crate::mounts::describe_op(&plan.mounts, i),
        Step::NewRoot | Step::Chdir | Step::PivotRoot => crate::mounts::NEW_ROOT.to_string(),
        Step::Cwd => plan.cwd.to_string_lossy().into_owned(),
        Step::LandlockRule => plan
            .mounts
            .landlock_paths
            .get(i)
            .map(|(p, _)| p.to_string_lossy().into_owned())
            .unwrap_or_default(),
        Step::Exec => crate::child::describe_candidates(&plan.candidates),
        _ => String::new(),
    };
    let detail = if what.is_empty() {
        strerror(f.errno)
    } else {
        format!("{what}: {}", strerror(f.errno))
    };
    SandboxError::Setup {
        step: SetupStep::InSandbox(f.step),
        detail,
    }
}

fn supervise(mut plan: SandboxPlan, started: Option<OnStart>) -> Result<Outcome, SandboxError> {
    let start = Instant::now();
    let id = format!(
        "{}-{}",
        std::process::id(),
        RUN_COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    let cgroup =
        Cgroup::create(&id, plan.memory, plan.pids, plan.cpus).map_err(|e| setup("cgroup", e))?;
    let run_v2 = match &cgroup {
        Some(Cgroup::V2(d)) => Some(d.as_path()),
        _ => None,
    };
    let device_cg = match plan.device_cgroup {
        Some(crate::devices::CgroupMode::V1) => {
            Some(crate::devices::DeviceCgroup::create(&id, &plan.devices))
        }
        Some(crate::devices::CgroupMode::V2) => Some(crate::devices::DeviceCgroup::create_v2(
            &id,
            &plan.devices,
            run_v2,
        )),
        _ => None,
    };
    if let Some(made) = device_cg {
        match made {
            Ok(dc) => plan.device_cg = Some(dc),
            Err(e) => {
                if let Some(cg) = &cgroup {
                    cg.remove();
                }
                return Err(setup("device cgroup", e));
            }
        }
    }
    let result = supervise_in(&mut plan, started, cgroup.as_ref(), start);
    if let Some(cg) = &cgroup {
        cg.kill_all();
        cg.remove();
    }
    if let Some(dc) = plan.device_cg.take() {
        dc.remove();
    }
    if plan.detach_teardown && plan.secrets.is_empty() {
        // The caller exits next: its exit closes the plan's descriptors and frees its memory
        // at once, cheaper than one call each here. (Secrets are always dropped: zeroed.)
        std::mem::forget(plan);
    }
    result
}

fn supervise_in(
    plan: &mut SandboxPlan,
    started: Option<OnStart>,
    cgroup: Option<&Cgroup>,
    start: Instant,
) -> Result<Outcome, SandboxError> {
    let (sync_r, sync_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let (status_r, status_w) = pipe()?;
    let (sock_parent, sock_child) = nix::sys::socket::socketpair(
        nix::sys::socket::AddressFamily::Unix,
        nix::sys::socket::SockType::SeqPacket,
        None,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|e| setup("socketpair", e))?;

    // Root mode: clone the bind sources here, in the host mount namespace, as host root.
    let mut trees = vec![-1i32; plan.mounts.tree_slots()];
    let mut owned_trees: Vec<OwnedFd> = Vec::new();
    if plan.ids.parent_prepares_binds() {
        let r = crate::child::prepare_binds(&LinuxSys, plan, &mut trees);
        for &t in trees.iter().filter(|t| **t >= 0) {
            // SAFETY: these descriptors were just created by open_tree and are owned here.
            owned_trees.push(unsafe { OwnedFd::from_raw_fd(t) });
        }
        r.map_err(|f| describe_fail(plan, &f))?;
    }

    // execve arrays (pointers into the plan's CStrings, which outlive the child's use).
    let mut argv: Vec<*const libc::c_char> = plan.argv.iter().map(|c| c.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = plan.envp.iter().map(|c| c.as_ptr()).collect();
    envp.push(std::ptr::null());
    // The stacks of the network helper and of the job (they run in the init's memory; the job
    // until it execs).
    let mut stacks = vec![0u8; (64 + 256) << 10];
    let (helper_stack, job_stack) = stacks.split_at_mut(64 << 10);
    let exec = ExecArrays {
        argv: &argv,
        envp: &envp,
    };
    let fds = ChildFds {
        sync_r: sync_r.as_raw_fd(),
        err_w: err_w.as_raw_fd(),
        status_w: status_w.as_raw_fd(),
        sock: sock_child.as_raw_fd(),
        ruleset: plan.landlock.fd.as_ref().map_or(-1, |f| f.as_raw_fd()),
        stdout: plan.stdout.as_ref().map_or(-1, |f| f.as_raw_fd()),
        stderr: plan.stderr.as_ref().map_or(-1, |f| f.as_raw_fd()),
    };
    // The child's ends must survive into the child (no exec happens before they are used), and
    // the status pipe must survive the init's own lifetime: clear CLOEXEC where exec matters.
    // (err_w stays CLOEXEC: its closing at the job's execve is the success signal.)

    // A network namespace to join: this thread enters it for the clone (the child inherits it)
    // and goes back to its own right after.
    let back = match &plan.join_netns {
        Some(ns) => Some(enter_netns(ns)?),
        None => None,
    };
    // SAFETY: raw clone without CLONE_VM behaves like fork with new namespaces. The child runs
    // only `init_main`, which uses async-signal-safe raw syscalls on pre-built data and never
    // returns.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (crate::namespaces::CLONE_FLAGS | libc::SIGCHLD) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    let clone_errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
    if pid != 0 {
        if let Some(own) = back {
            // SAFETY: setns of this thread back to the namespace it was in (a descriptor we own).
            if unsafe { libc::setns(own.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(setup("setns back", std::io::Error::last_os_error()));
            }
        }
    }
    if pid < 0 {
        return Err(setup("clone", strerror(clone_errno)));
    }
    if pid == 0 {
        crate::child::init_main(
            &LinuxSys,
            plan,
            &fds,
            &mut trees,
            &exec,
            job_stack,
            helper_stack,
        );
    }
    let pid = pid as libc::pid_t;
    drop((sync_r, err_w, status_w, sock_child));
    drop(owned_trees);
    drop(plan.landlock.fd.take());

    let kill_and_reap = || {
        // SAFETY: our own child.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
            libc::waitpid(pid, std::ptr::null_mut(), 0);
        }
    };

    // Maps, then release the child; the cgroup is joined while the child builds its mounts (a v1
    // cgroup migration can take milliseconds) — the init waits for it before starting the job.
    if let Err(e) = plan.ids.write_maps(pid) {
        kill_and_reap();
        return Err(setup("uid_map", e));
    }
    // SAFETY: one byte from a live buffer to our pipe.
    unsafe { libc::write(sync_w.as_raw_fd(), [1u8].as_ptr().cast(), 1) };
    let joined = match (cgroup, &plan.device_cg) {
        (Some(cg), Some(dc)) => cg.add(pid).and_then(|()| dc.add(pid)),
        (Some(cg), None) => cg.add(pid),
        (None, Some(dc)) => dc.add(pid),
        (None, None) => Ok(()),
    };
    if let Err(e) = joined {
        kill_and_reap();
        // The child may have failed (and exited) first: its report is the real cause.
        let mut rec = [0u8; 12];
        if read_exact_or_eof(err_r.as_raw_fd(), &mut rec) == rec.len() {
            if let Some(f) = Fail::decode(&rec) {
                return Err(describe_fail(plan, &f));
            }
        }
        return Err(setup("cgroup", e));
    }
    // SAFETY: as above.
    unsafe { libc::write(sync_w.as_raw_fd(), [2u8].as_ptr().cast(), 1) };
    drop(sync_w);

    // One event loop, on this thread: the setup result (a 12-byte failure record, or EOF when
    // the command was exec'd), the seccomp listener (handed over by the job before it execs),
    // its notifications, the command's status (the init writes it, with the command's resource
    // use, just before it exits) and the timeout.
    let errnos = plan.seccomp.observed.clone();
    let mut server = crate::notify::Server::new(
        &errnos,
        crate::unix_connect::OwnMounts::new(plan.mounts.own_tmpfs_paths()),
    )
    .allowing(&plan.allow);
    let mut sock = Some(sock_parent);
    let mut listener: Option<OwnedFd> = None;
    let mut setup_open = true;
    let mut started = started;
    let mut timed_out = false;
    let mut msg = [0u8; crate::child::STATUS_LEN];
    let deadline = plan.timeout.map(|t| start + t);
    let got = loop {
        let ms = match deadline {
            Some(d) => d
                .saturating_duration_since(Instant::now())
                .as_millis()
                .min(i32::MAX as u128) as i32,
            None => -1,
        };
        let fd_or_off = |f: Option<RawFd>| libc::pollfd {
            fd: f.unwrap_or(-1),
            events: libc::POLLIN,
            revents: 0,
        };
        let mut p = [
            fd_or_off(setup_open.then(|| err_r.as_raw_fd())),
            fd_or_off(sock.as_ref().map(|s| s.as_raw_fd())),
            fd_or_off(listener.as_ref().map(|l| l.as_raw_fd())),
            fd_or_off(Some(status_r.as_raw_fd())),
        ];
        // SAFETY: live pollfds; negative fds are ignored by poll.
        let r = unsafe { libc::poll(p.as_mut_ptr(), p.len() as libc::nfds_t, ms) };
        if r < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            kill_and_reap();
            return Err(SandboxError::Supervise(format!(
                "poll: {}",
                std::io::Error::last_os_error()
            )));
        }
        // The deadline is checked on every pass, before anything else is handled: a job whose
        // threads keep the listener readable must not keep `poll` from ever timing out.
        if r == 0 || deadline.is_some_and(|d| Instant::now() >= d) {
            timed_out = true;
            // SAFETY: our own child; killing the pid-namespace init kills the namespace.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            if let Some(cg) = cgroup {
                cg.kill_all();
            }
            break false;
        }
        if p[0].revents != 0 {
            let mut rec = [0u8; 12];
            if read_exact_or_eof(err_r.as_raw_fd(), &mut rec) == rec.len() {
                kill_and_reap();
                let f = Fail::decode(&rec)
                    .ok_or_else(|| setup("unknown step", "corrupt failure record"))?;
                return Err(describe_fail(plan, &f));
            }
            // The command runs; its stdio copies in the supervisor are no longer needed.
            setup_open = false;
            drop(plan.stdout.take());
            drop(plan.stderr.take());
            if let Some(f) = started.take() {
                f(pid);
            }
        }
        if p[1].revents != 0 {
            // The listener, or EOF if the job never got that far.
            if let Ok(Some(l)) = crate::notify::recv_fd(p[1].fd) {
                listener = Some(l);
            }
            sock = None;
        }
        if p[2].revents & libc::POLLIN != 0 {
            if !server.answer(p[2].fd) {
                listener = None;
            }
        } else if p[2].revents != 0 {
            listener = None; // POLLHUP: no task uses the filter any more
        }
        if p[3].revents != 0 {
            break read_exact_or_eof(status_r.as_raw_fd(), &mut msg) == msg.len();
        }
    };
    let wall = start.elapsed();
    if let Some(l) = listener.take() {
        if !timed_out {
            // (After a timeout the tree is being killed: what is still queued is moot, and a
            // flood must not delay the answer.)
            server.drain(l.as_raw_fd());
        }
    }
    let observed = server.finish();
    if let Some(f) = started.take() {
        // The setup never reported (the timeout struck first, or the init died): the caller
        // still gets the pid, and the outcome says how the run ended.
        f(pid);
    }
    // Reap the init. Without a cgroup to remove and with the status in hand, the rest of the
    // teardown (the kernel killing what is left in the pid namespace, freeing the namespaces)
    // need not delay the answer: a background thread reaps, or nobody at all when the caller
    // is about to exit (`SandboxPlan::detach_teardown`).
    let mut status = 0;
    // SAFETY: a zeroed rusage is valid.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let must_wait = cgroup.is_some() || plan.device_cg.is_some() || !got;
    let reaped = (!must_wait && plan.detach_teardown) || {
        // SAFETY: wait4 on our own child into live out-parameters.
        (unsafe {
            libc::wait4(
                pid,
                &mut status,
                if must_wait { 0 } else { libc::WNOHANG },
                &mut ru,
            )
        }) == pid
    };
    if !reaped && !must_wait {
        let _ = std::thread::Builder::new()
            .name("sealrun-reap".into())
            .spawn(move || {
                // SAFETY: reaping our own child.
                unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
            });
    } else if !reaped {
        loop {
            // SAFETY: as above.
            let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
            if r == pid {
                break;
            }
            if r < 0 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
                return Err(SandboxError::Supervise(format!(
                    "wait4: {}",
                    std::io::Error::last_os_error()
                )));
            }
        }
    }
    let (job_status, cpu_user_us, cpu_sys_us, maxrss_kb) = if got {
        crate::child::decode_status(&msg)
    } else {
        let us = |tv: libc::timeval| (tv.tv_sec as u64) * 1_000_000 + tv.tv_usec as u64;
        (
            status,
            us(ru.ru_utime),
            us(ru.ru_stime),
            ru.ru_maxrss as u64,
        )
    };
    let stats = cgroup.map(|c| c.stats()).unwrap_or_default();

    let as_status = |st: i32| {
        if libc::WIFSIGNALED(st) {
            128 + libc::WTERMSIG(st)
        } else {
            libc::WEXITSTATUS(st)
        }
    };
    let end = if timed_out {
        EndReason::Timeout
    } else if stats.oom_kills > 0
        && libc::WIFSIGNALED(job_status)
        && libc::WTERMSIG(job_status) == libc::SIGKILL
    {
        EndReason::OomKilled
    } else if stats.pids_max_events > 0 && as_status(job_status) != 0 {
        EndReason::PidsLimit {
            status: as_status(job_status),
        }
    } else if libc::WIFSIGNALED(job_status) {
        EndReason::Signaled {
            signal: libc::WTERMSIG(job_status),
        }
    } else {
        EndReason::Exited {
            code: libc::WEXITSTATUS(job_status),
        }
    };
    Ok(Outcome {
        end,
        wall_ms: wall.as_millis() as u64,
        cpu_user_ms: cpu_user_us / 1000,
        cpu_sys_ms: cpu_sys_us / 1000,
        peak_memory_bytes: if stats.peak_memory > 0 {
            stats.peak_memory
        } else {
            maxrss_kb * 1024
        },
        denied_syscalls: observed.denied,
        egress_attempts: observed.egress,
        peer_connects: observed.peers,
        landlock: LandlockReport {
            abi: plan.landlock.abi,
            status: if plan.landlock.abi > 0 {
                "enforced".into()
            } else {
                "unsupported".into()
            },
        },
        profile: plan.profile_name.clone(),
        profile_sha256: plan.profile_sha256.clone(),
        bpf_sha256: plan.seccomp.sha256.clone(),
    })
}

/// Move this thread into the network namespace `ns`; returns a descriptor of the one it was in.
fn enter_netns(ns: &OwnedFd) -> Result<OwnedFd, SandboxError> {
    let own = std::fs::File::open("/proc/thread-self/ns/net")
        .map_err(|e| setup("open /proc/thread-self/ns/net", e))?;
    // SAFETY: setns of this thread only, with a namespace descriptor we own.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(setup(
            "setns into the job network",
            std::io::Error::last_os_error(),
        ));
    }
    Ok(OwnedFd::from(own))
}
