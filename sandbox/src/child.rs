//! The in-sandbox setup: one ordered sequence, run by the sandbox init (pid 1 of the new pid
//! namespace) and then by the job it forks. Guarantees: every step is a raw system call on data
//! prepared by [`crate::SandboxPlan::build`] (no allocation, parsing or logging after the fork);
//! any failure is reported to the supervisor as `(step, index, errno)` and the process exits
//! with status 125 before anything runs; seccomp is the last thing before `execve`.
//!
//! Init (after `clone` with the user, mount, pid, ipc and uts namespace flags):
//!  0. Start the network helper: a task sharing our memory and descriptors that makes the
//!     network namespace and brings its `lo` up while we go on (see [`crate::net`]).
//!     (Not with `Network::Join`: the sandbox was cloned into its caller's namespace, whose
//!     `lo` the caller brought up; steps 10 and 19b are skipped too.)
//! 0b. Reset every signal disposition; empty the bounding and ambient capability sets.
//!  1. Wait for the supervisor to write the uid/gid maps (EOF = it died).
//!  2. Root mode: become inside-root (mapped, unprivileged on the host) and clear groups.
//!  3. `PR_SET_PDEATHSIG(SIGKILL)` (after the last credential change, which would clear it), then
//!     check the supervisor is still there: the sandbox dies with its supervisor thread.
//!     `PR_SET_DUMPABLE(0)`: the job cannot ptrace or read the init through /proc.
//!  4. Make every mount private: nothing we do propagates to the host.
//!  5. Rootless: resolve and clone bind sources (`openat2` no-symlinks + `open_tree` +
//!     `mount_setattr` read-only). (Root mode: the supervisor did this before `clone`.)
//!  6. Mount the new root tmpfs.
//!  7. Build it: directories, binds (`move_mount` of the prepared trees), tmpfs `/tmp`,
//!     `/dev/shm`, minimal `/dev`, fresh `/proc` (we are pid 1 of the new pid namespace).
//!  8. `pivot_root(".", ".")` + `umount2(MNT_DETACH)`: the host root becomes unreachable.
//!  9. Remount `/` read-only.
//! 10. Hostname `sealrun`; wait for the network helper's namespace and enter it (its only
//!     interface is `lo`; the helper brings it up meanwhile).
//! 11. Wait until the supervisor has moved us into the cgroup (it does so while we build the
//!     mounts), then make the cgroup namespace (rooted there: the job sees `/`). Start the job
//!     (`clone(CLONE_VM|CLONE_VFORK)` on its own stack: no page-table copy);
//!     then reap everything (zombies of orphans included) and forward
//!     SIGTERM/SIGINT/SIGHUP/SIGQUIT/SIGUSR1/SIGUSR2 to the job; report its status and exit —
//!     which kills everything left in the pid namespace.
//!
//! Job:
//! 12. `setsid` (no controlling terminal: TIOCSTI has no target), default signal dispositions.
//! 13. rlimits: core 0, nofile, fsize.
//! 14. stdin `/dev/null`, stdout/stderr as asked; `chdir` to the working directory.
//! 15. Close every descriptor above 2 except the three the next steps need.
//! 16. (Nothing to do: the bounding and ambient sets are already empty, emptied by the init at
//!     0b and inherited through the fork.)
//! 17. Root mode: switch to uid/gid 1000 (host base + 1000) with no supplementary groups.
//! 18. Empty the permitted/effective/inheritable sets; `PR_SET_NO_NEW_PRIVS`.
//! 19. Landlock: add rules for the sandbox's own mounts, restrict self.
//! 19b. Wait until the network helper has brought `lo` up.
//! 20. The seccomp filter that notifies, with a user-notification listener; send the listener to
//!     the supervisor; close it. That is the profile's own filter, the last step, when the
//!     profile allows `sendmsg` and `close`; else a guard filter, and step 21 follows.
//! 21. With a guard: the seccomp main filter (the profile).
//! 22. `execve` (trying each `PATH` candidate).

use std::ffi::CString;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicI32, Ordering};

use crate::mounts::{LandlockClass, MountOp};
use crate::namespaces::{IdMode, JOB_ID};
use crate::net::NetHelper;
use crate::plan::SandboxPlan;
use crate::sys::Sys;

/// A setup step, for error reports.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Step {
    Pdeathsig = 1,
    WaitForSupervisor,
    BecomeInsideRoot,
    MakeMountsPrivate,
    OpenBindSource,
    CloneBindSource,
    SetBindFlags,
    NewRoot,
    Mkdir,
    CreateFile,
    BindMount,
    MountTmpfs,
    Symlink,
    MountProc,
    WriteSecret,
    Chdir,
    PivotRoot,
    DetachOldRoot,
    RemountRootReadOnly,
    Hostname,
    Network,
    Fork,
    Setsid,
    Signals,
    Rlimit,
    Stdio,
    Cwd,
    CloseFds,
    DropBoundingCaps,
    SwitchUser,
    DropCaps,
    NoNewPrivs,
    LandlockRule,
    LandlockRestrict,
    SeccompGuard,
    SendListener,
    SeccompMain,
    Exec,
    CgroupNamespace,
}

impl Step {
    /// All steps in order.
    pub const ALL: &'static [Step] = &[
        Step::Pdeathsig,
        Step::WaitForSupervisor,
        Step::BecomeInsideRoot,
        Step::MakeMountsPrivate,
        Step::OpenBindSource,
        Step::CloneBindSource,
        Step::SetBindFlags,
        Step::NewRoot,
        Step::Mkdir,
        Step::CreateFile,
        Step::BindMount,
        Step::MountTmpfs,
        Step::Symlink,
        Step::MountProc,
        Step::WriteSecret,
        Step::Chdir,
        Step::PivotRoot,
        Step::DetachOldRoot,
        Step::RemountRootReadOnly,
        Step::Hostname,
        Step::Network,
        Step::Fork,
        Step::Setsid,
        Step::Signals,
        Step::Rlimit,
        Step::Stdio,
        Step::Cwd,
        Step::CloseFds,
        Step::DropBoundingCaps,
        Step::SwitchUser,
        Step::DropCaps,
        Step::NoNewPrivs,
        Step::LandlockRule,
        Step::LandlockRestrict,
        Step::SeccompGuard,
        Step::SendListener,
        Step::SeccompMain,
        Step::Exec,
        Step::CgroupNamespace,
    ];

    /// Decode from the wire.
    pub fn from_u32(v: u32) -> Option<Step> {
        Step::ALL.iter().copied().find(|s| *s as u32 == v)
    }

    /// The name used in error messages.
    pub fn name(self) -> &'static str {
        match self {
            Step::Pdeathsig => "prctl(PR_SET_PDEATHSIG)",
            Step::WaitForSupervisor => "waiting for the supervisor",
            Step::BecomeInsideRoot => "setresuid(inside root)",
            Step::MakeMountsPrivate => "mount propagation private",
            Step::OpenBindSource => "openat2 bind source",
            Step::CloneBindSource => "open_tree bind source",
            Step::SetBindFlags => "mount_setattr bind source",
            Step::NewRoot => "new root tmpfs",
            Step::Mkdir => "mkdir",
            Step::CreateFile => "create bind target",
            Step::BindMount => "move_mount bind",
            Step::MountTmpfs => "mount tmpfs",
            Step::Symlink => "symlink",
            Step::MountProc => "mount proc",
            Step::WriteSecret => "write secret file",
            Step::Chdir => "chdir new root",
            Step::PivotRoot => "pivot_root",
            Step::DetachOldRoot => "umount2 old root",
            Step::RemountRootReadOnly => "remount / read-only",
            Step::Hostname => "sethostname",
            Step::Network => "network namespace (unshare, lo up, setns)",
            Step::Fork => "fork job",
            Step::Setsid => "setsid",
            Step::Signals => "reset signals",
            Step::Rlimit => "setrlimit",
            Step::Stdio => "stdio",
            Step::Cwd => "chdir working directory",
            Step::CloseFds => "close_range",
            Step::DropBoundingCaps => "drop bounding capabilities",
            Step::SwitchUser => "setresuid job user",
            Step::DropCaps => "capset",
            Step::NoNewPrivs => "prctl(PR_SET_NO_NEW_PRIVS)",
            Step::LandlockRule => "landlock_add_rule",
            Step::LandlockRestrict => "landlock_restrict_self",
            Step::SeccompGuard => "seccomp guard filter",
            Step::SendListener => "send seccomp listener",
            Step::SeccompMain => "seccomp filter",
            Step::Exec => "execve",
            Step::CgroupNamespace => "cgroup namespace",
        }
    }
}

/// A failed step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fail {
    /// Which step.
    pub step: Step,
    /// Index of the mount op / bind / rule / candidate involved, or u32::MAX.
    pub index: u32,
    /// errno.
    pub errno: i32,
}

impl Fail {
    /// Encode for the error pipe.
    pub fn encode(&self) -> [u8; 12] {
        let mut b = [0u8; 12];
        b[..4].copy_from_slice(&(self.step as u32).to_ne_bytes());
        b[4..8].copy_from_slice(&self.index.to_ne_bytes());
        b[8..].copy_from_slice(&self.errno.to_ne_bytes());
        b
    }

    /// Decode from the error pipe.
    pub fn decode(b: &[u8; 12]) -> Option<Fail> {
        let w = |i: usize| u32::from_ne_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        Some(Fail {
            step: Step::from_u32(w(0))?,
            index: w(4),
            errno: w(8) as i32,
        })
    }
}

const NO_INDEX: u32 = u32::MAX;

fn at(step: Step) -> impl Fn(i32) -> Fail {
    move |errno| Fail {
        step,
        index: NO_INDEX,
        errno,
    }
}

fn at_i(step: Step, index: usize) -> impl Fn(i32) -> Fail {
    move |errno| Fail {
        step,
        index: index as u32,
        errno,
    }
}

/// Descriptors shared with the child, as raw numbers (all opened before the clone).
#[derive(Debug, Clone, Copy)]
pub struct ChildFds {
    /// Read end of the go-ahead pipe.
    pub sync_r: i32,
    /// Write end of the error pipe (CLOEXEC).
    pub err_w: i32,
    /// Write end of the status pipe (init → supervisor).
    pub status_w: i32,
    /// Our end of the listener socketpair.
    pub sock: i32,
    /// Landlock ruleset, or -1.
    pub ruleset: i32,
    /// stdout to use, or -1 to inherit.
    pub stdout: i32,
    /// stderr to use, or -1 to inherit.
    pub stderr: i32,
}

/// Pointer arrays for `execve`, built by the supervisor before the clone.
#[derive(Debug)]
pub struct ExecArrays<'a> {
    /// Null-terminated argv.
    pub argv: &'a [*const libc::c_char],
    /// Null-terminated envp.
    pub envp: &'a [*const libc::c_char],
}

fn report<S: Sys>(sys: &S, fds: &ChildFds, f: Fail) -> ! {
    let _ = sys.write_all(fds.err_w, &f.encode());
    // SAFETY: _exit is async-signal-safe and never returns.
    unsafe { libc::_exit(125) }
}

/// Entry point of the cloned child. Never returns.
pub fn init_main<S: Sys>(
    sys: &S,
    plan: &SandboxPlan,
    fds: &ChildFds,
    trees: &mut [i32],
    exec: &ExecArrays<'_>,
    job_stack: &mut [u8],
    helper_stack: &mut [u8],
) -> ! {
    // Shared with the network helper and the job (this frame never returns).
    let net = NetHelper::default();
    if let Err(f) = init_setup(sys, plan, fds, trees, helper_stack, &net) {
        report(sys, fds, f)
    }
    // 11. Wait until the supervisor has put us in the cgroup (done while we built the mounts), so
    //     that everything the job does is limited; then start the job (vfork-style: no
    //     page-table copy; we resume once it has exec'd).
    match sys.read_byte(fds.sync_r) {
        Ok(Some(_)) => {}
        Ok(None) => report(sys, fds, at(Step::WaitForSupervisor)(libc::EPIPE)),
        Err(e) => report(sys, fds, at(Step::WaitForSupervisor)(e)),
    }
    let _ = sys.close(fds.sync_r);
    //     The cgroup namespace is made now, rooted at the run's own cgroup: the job sees `/`,
    //     not the host's path of it (nor the launcher's cgroup, had it been made at `clone`).
    if let Err(e) = sys.unshare_cgroup() {
        report(sys, fds, at(Step::CgroupNamespace)(e))
    }
    let mut job = || {
        let f = job_setup(sys, plan, fds, exec, &net);
        report(sys, fds, f)
    };
    let pid = match sys.spawn_job(&mut job, job_stack) {
        Err(e) => report(sys, fds, at(Step::Fork)(e)),
        Ok(pid) => pid,
    };
    reap(pid, fds.status_w, &plan.secrets)
}

/// Steps 0–10. `helper_stack` is the network helper's.
pub fn init_setup<S: Sys>(
    sys: &S,
    plan: &SandboxPlan,
    fds: &ChildFds,
    trees: &mut [i32],
    helper_stack: &mut [u8],
    net: &NetHelper,
) -> Result<(), Fail> {
    // 0. The network namespace is made by a helper, in parallel with everything up to step 10
    //    (it is the slowest namespace to make). Until then we are in the host's network
    //    namespace, and make no network call; nothing of the job exists yet.
    //    A sandbox cloned into a namespace its caller made (`Network::Join`) has no helper.
    if plan.join_netns.is_none() {
        sys.spawn_netns(helper_stack, net)
            .map_err(at(Step::Network))?;
    }
    // 0b. While the supervisor writes the uid/gid maps: a clean slate the job inherits. Every
    //    signal disposition back to default (an ignored signal would stay ignored across the
    //    job's execve), and empty bounding and ambient capability sets, so no exec can ever
    //    regain a capability (the init never execs; its own capabilities are untouched).
    sys.reset_signals().map_err(at(Step::Signals))?;
    sys.drop_bounding_and_ambient()
        .map_err(at(Step::DropBoundingCaps))?;
    // 1. Wait for the maps and the cgroup. EOF means the supervisor is gone.
    match sys.read_byte(fds.sync_r) {
        Ok(Some(_)) => {}
        Ok(None) => return Err(at(Step::WaitForSupervisor)(libc::EPIPE)),
        Err(e) => return Err(at(Step::WaitForSupervisor)(e)),
    }
    // 2. Root mode: become the (unprivileged on the host) inside root, drop host groups.
    if matches!(plan.ids, IdMode::Root { .. }) {
        sys.setgroups_empty().map_err(at(Step::BecomeInsideRoot))?;
        sys.setresgid(0).map_err(at(Step::BecomeInsideRoot))?;
        sys.setresuid(0).map_err(at(Step::BecomeInsideRoot))?;
    }
    // 3. Die with the supervisor. Set after the last credential change of the init (a change of
    //    credentials clears it); the supervisor may have died before: check its end of the
    //    socketpair is still open.
    sys.prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong)
        .map_err(at(Step::Pdeathsig))?;
    if !sys.peer_alive(fds.sock).map_err(at(Step::Pdeathsig))? {
        return Err(at(Step::Pdeathsig)(libc::ESRCH));
    }
    //    Not dumpable: the job (same uid as the init when rootless) can neither ptrace the init nor
    //    read or write its /proc/1/{mem,environ,fd,…} — the init keeps its capabilities over the
    //    sandbox's namespaces and still holds the launcher's environment. (`execve` of the job
    //    makes the job itself dumpable again.)
    sys.prctl(libc::PR_SET_DUMPABLE, 0)
        .map_err(at(Step::Pdeathsig))?;
    // 4. Nothing propagates back to the host.
    sys.mount(None, c"/", None, libc::MS_REC | libc::MS_PRIVATE, None)
        .map_err(at(Step::MakeMountsPrivate))?;
    // 5. Rootless: prepare bind trees here (we hold CAP_SYS_ADMIN over this mount namespace).
    if !plan.ids.parent_prepares_binds() {
        prepare_binds(sys, plan, trees)?;
    }
    // 6. The new root.
    let root = c"/tmp";
    sys.mount(
        Some(c"tmpfs"),
        root,
        Some(c"tmpfs"),
        libc::MS_NOSUID | libc::MS_NODEV,
        Some(&plan.mounts.root_data),
    )
    .map_err(at(Step::NewRoot))?;
    // 7. Build it.
    for (i, op) in plan.mounts.ops.iter().enumerate() {
        match op {
            MountOp::Dir(p) => sys.mkdir(p, 0o755).map_err(at_i(Step::Mkdir, i))?,
            MountOp::File(p) => sys.create_file(p).map_err(at_i(Step::CreateFile, i))?,
            // (The tree descriptors stay open until the init's and the job's `close_range`.)
            MountOp::Bind(src, p) => sys
                .move_mount(trees[*src], p)
                .map_err(at_i(Step::BindMount, i))?,
            // A secrets tmpfs the supervisor made (noswap) is attached; else one is mounted.
            MountOp::SecretTmpfs(p, _, slot) if trees[*slot] >= 0 => sys
                .move_mount(trees[*slot], p)
                .map_err(at_i(Step::MountTmpfs, i))?,
            MountOp::Tmpfs(p, data) | MountOp::SecretTmpfs(p, data, _) => sys
                .mount(
                    Some(c"tmpfs"),
                    p,
                    Some(c"tmpfs"),
                    libc::MS_NOSUID | libc::MS_NODEV,
                    Some(data),
                )
                .map_err(at_i(Step::MountTmpfs, i))?,
            MountOp::Symlink(target, p) => {
                sys.symlink(target, p).map_err(at_i(Step::Symlink, i))?
            }
            MountOp::Content(p, data) => {
                sys.write_file(p, data).map_err(at_i(Step::CreateFile, i))?
            }
            MountOp::SharedDir(p, mode) => {
                sys.mkdir(p, 0o755).map_err(at_i(Step::Mkdir, i))?;
                sys.chmod(p, *mode).map_err(at_i(Step::Mkdir, i))?;
                // A bind of the folder onto itself (it keeps the root's nosuid,nodev), so that
                // it stays writable when the root is remounted read-only in step 9.
                sys.mount(Some(p), p, None, libc::MS_BIND, None)
                    .map_err(at_i(Step::BindMount, i))?
            }
            MountOp::Proc(p) => sys
                .mount(
                    Some(c"proc"),
                    p,
                    Some(c"proc"),
                    libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                    None,
                )
                .map_err(at_i(Step::MountProc, i))?,
        }
    }
    // 7b. Secrets: 0400 files owned by the job on their private tmpfs (never on a disk,
    //     never in the host's mount table).
    let owner = match plan.ids {
        crate::namespaces::IdMode::Root { .. } => Some(JOB_ID),
        crate::namespaces::IdMode::Rootless { .. } => None,
    };
    for (i, sec) in plan.secrets.iter().enumerate() {
        sys.write_secret(&sec.staged, &sec.data, owner)
            .map_err(at_i(Step::WriteSecret, i))?;
    }
    // 8. Switch roots; detach the old one.
    sys.chdir(root).map_err(at(Step::Chdir))?;
    sys.pivot_root(c".", c".").map_err(at(Step::PivotRoot))?;
    sys.umount2(c".", libc::MNT_DETACH)
        .map_err(at(Step::DetachOldRoot))?;
    sys.chdir(c"/").map_err(at(Step::Chdir))?;
    // 9. The root itself is read-only (mounts below keep their own flags).
    sys.mount(
        None,
        c"/",
        None,
        libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV,
        None,
    )
    .map_err(at(Step::RemountRootReadOnly))?;
    // 10. Identity of the machine and its only network interface.
    sys.sethostname(b"sealrun").map_err(at(Step::Hostname))?;
    if plan.join_netns.is_none() {
        sys.enter_netns(net).map_err(at(Step::Network))?;
    }
    Ok(())
}

/// Step 5 (also run by the supervisor before the clone in root mode, from the descriptors opened
/// at plan time; the child, in its own mount namespace, must look the paths up again).
pub fn prepare_binds<S: Sys>(sys: &S, plan: &SandboxPlan, trees: &mut [i32]) -> Result<(), Fail> {
    let planned_fds = plan.ids.parent_prepares_binds();
    for (i, b) in plan.mounts.binds.iter().enumerate() {
        let tree = if planned_fds {
            sys.open_tree_clone(b.fd.as_raw_fd())
        } else {
            let fd = sys
                .open_nofollow(&b.c_host)
                .map_err(at_i(Step::OpenBindSource, i))?;
            let tree = sys.open_tree_clone(fd);
            let _ = sys.close(fd);
            tree
        };
        let tree = tree.map_err(at_i(Step::CloneBindSource, i))?;
        trees[i] = tree;
        sys.mount_setattr(tree, b.attrs)
            .map_err(at_i(Step::SetBindFlags, i))?;
    }
    // Root mode: the secrets tmpfs mounts are made here, by host root, because only a tmpfs of
    // the initial user namespace may be `noswap` (secrets must never reach a swap device); owned
    // by the sandbox's inside root, who writes the files. A kernel without `noswap` (before
    // 6.4) refuses the option: the init then mounts a plain tmpfs, as in rootless mode.
    if let crate::namespaces::IdMode::Root { base } = plan.ids {
        let first = plan.mounts.binds.len();
        for (k, &size) in plan.mounts.secret_sizes.iter().enumerate() {
            match sys.secret_tmpfs(size, base) {
                Ok(fd) => trees[first + k] = fd,
                Err(libc::EINVAL) => {}
                Err(e) => {
                    let op = plan.mounts.ops.iter().position(
                        |o| matches!(o, MountOp::SecretTmpfs(_, _, s) if *s == first + k),
                    );
                    return Err(at_i(Step::MountTmpfs, op.unwrap_or(0))(e));
                }
            }
        }
    }
    Ok(())
}

/// Steps 12–22. Returns only on failure.
pub fn job_setup<S: Sys>(
    sys: &S,
    plan: &SandboxPlan,
    fds: &ChildFds,
    exec: &ExecArrays<'_>,
    net: &NetHelper,
) -> Fail {
    match job_steps(sys, plan, fds, net) {
        Err(f) => f,
        Ok(()) => {
            // 22. Exec, trying each PATH candidate.
            let mut last = libc::ENOENT;
            for c in &plan.candidates {
                let e = sys.execve(c, exec.argv, exec.envp);
                if e != libc::ENOENT && e != libc::ENOTDIR {
                    last = e;
                }
            }
            at(Step::Exec)(last)
        }
    }
}

fn job_steps<S: Sys>(
    sys: &S,
    plan: &SandboxPlan,
    fds: &ChildFds,
    net: &NetHelper,
) -> Result<(), Fail> {
    // 12. New session; an empty signal mask (dispositions are the init's defaults, step 0b).
    sys.setsid().map_err(at(Step::Setsid))?;
    sys.clear_signal_mask().map_err(at(Step::Signals))?;
    // 13. rlimits.
    sys.setrlimit(libc::RLIMIT_CORE, 0)
        .map_err(at(Step::Rlimit))?;
    sys.setrlimit(libc::RLIMIT_NOFILE, plan.nofile)
        .map_err(at(Step::Rlimit))?;
    if let Some(f) = plan.fsize {
        sys.setrlimit(libc::RLIMIT_FSIZE, f)
            .map_err(at(Step::Rlimit))?;
    }
    // 14. stdio and working directory.
    let null = sys.open_rw(c"/dev/null").map_err(at(Step::Stdio))?;
    sys.dup2(null, 0).map_err(at(Step::Stdio))?;
    if null > 2 {
        let _ = sys.close(null);
    }
    if fds.stdout >= 0 {
        sys.dup2(fds.stdout, 1).map_err(at(Step::Stdio))?;
    }
    if fds.stderr >= 0 {
        sys.dup2(fds.stderr, 2).map_err(at(Step::Stdio))?;
    }
    sys.chdir(&plan.cwd).map_err(at(Step::Cwd))?;
    // 15. Close everything else (the network helper's pidfd goes at execve: CLOEXEC).
    let mut keep = [fds.err_w, fds.sock, fds.ruleset, net.pidfd()];
    keep.sort_unstable();
    let mut next: u32 = 3;
    for k in keep {
        if k < 3 {
            continue;
        }
        let k = k as u32;
        if k > next {
            sys.close_range(next, k - 1).map_err(at(Step::CloseFds))?;
        }
        next = next.max(k + 1);
    }
    sys.close_range(next, u32::MAX)
        .map_err(at(Step::CloseFds))?;
    // 16. The bounding and ambient sets are already empty (the init's step 0b, inherited).
    // 17. The job's identity.
    if matches!(plan.ids, IdMode::Root { .. }) {
        sys.setgroups_empty().map_err(at(Step::SwitchUser))?;
        sys.setresgid(JOB_ID).map_err(at(Step::SwitchUser))?;
        sys.setresuid(JOB_ID).map_err(at(Step::SwitchUser))?;
    }
    // 18. No capabilities, and no way to gain any.
    sys.capset_zero().map_err(at(Step::DropCaps))?;
    sys.prctl(libc::PR_SET_NO_NEW_PRIVS, 1)
        .map_err(at(Step::NoNewPrivs))?;
    // 19. Landlock.
    if fds.ruleset >= 0 {
        let m = &plan.landlock.masks;
        for (i, (p, class)) in plan.mounts.landlock_paths.iter().enumerate() {
            let access = match class {
                LandlockClass::All => m.all,
                LandlockClass::ReadNoExec => m.read_noexec,
                LandlockClass::List => m.list,
                LandlockClass::DevDir => m.read_noexec,
                LandlockClass::ReadFile => m.read_file,
            };
            sys.landlock_add_path(fds.ruleset, p, access)
                .map_err(at_i(Step::LandlockRule, i))?;
        }
        sys.landlock_restrict(fds.ruleset)
            .map_err(at(Step::LandlockRestrict))?;
        let _ = sys.close(fds.ruleset);
    }
    // 19b. The helper brings `lo` up while we get here; nothing runs before it is up.
    if plan.join_netns.is_none() {
        sys.wait_loopback(net).map_err(at(Step::Network))?;
    }
    // 20. The filter that notifies, installed with the listener; hand the listener over. That is
    //     the profile's own filter, the last step, when the profile allows sendmsg and close
    //     (checked at compile time); else a guard filter, and step 21 follows.
    let two = !plan.seccomp.guard.is_empty();
    let (first, step) = if two {
        (&plan.seccomp.guard, Step::SeccompGuard)
    } else {
        (&plan.seccomp.main, Step::SeccompMain)
    };
    let listener = sys.seccomp(first, true).map_err(at(step))?;
    sys.send_fd(fds.sock, listener)
        .map_err(at(Step::SendListener))?;
    let _ = sys.close(listener);
    let _ = sys.close(fds.sock);
    // 21. With a guard: the profile, last.
    if two {
        sys.seccomp(&plan.seccomp.main, false)
            .map_err(at(Step::SeccompMain))?;
    }
    Ok(())
}

static JOB_PID: AtomicI32 = AtomicI32::new(0);

extern "C" fn forward(sig: libc::c_int) {
    let pid = JOB_PID.load(Ordering::Relaxed);
    if pid > 0 {
        // SAFETY: kill is async-signal-safe.
        unsafe { libc::kill(pid, sig) };
    }
}

/// Init after the fork: reap, forward signals, report the job's status, exit.
fn reap(job: libc::pid_t, status_w: i32, secrets: &[crate::plan::PlannedSecret]) -> ! {
    JOB_PID.store(job, Ordering::Relaxed);
    // SAFETY: close_range on our own descriptors; the status pipe is kept.
    unsafe {
        if status_w > 0 {
            libc::syscall(libc::SYS_close_range, 0u32, (status_w - 1) as u32, 0u32);
        }
        libc::syscall(libc::SYS_close_range, (status_w + 1) as u32, u32::MAX, 0u32);
    }
    for sig in [
        libc::SIGTERM,
        libc::SIGINT,
        libc::SIGHUP,
        libc::SIGQUIT,
        libc::SIGUSR1,
        libc::SIGUSR2,
    ] {
        // SAFETY: installing an async-signal-safe handler.
        unsafe {
            libc::signal(
                sig,
                forward as extern "C" fn(libc::c_int) as libc::sighandler_t,
            )
        };
    }
    // Secret TTLs: deadlines from now (the job has just started), a SIGALRM timer
    // that interrupts wait4 (no SA_RESTART), and an unlink when each one passes.
    let start = monotonic_ns();
    let mut deadlines = [u64::MAX; crate::plan::MAX_SECRETS];
    for (d, sec) in deadlines.iter_mut().zip(secrets) {
        *d = start.saturating_add(sec.ttl.as_nanos().min(u64::MAX as u128) as u64);
    }
    if !secrets.is_empty() {
        // SAFETY: a zeroed sigaction is valid; the handler does nothing, which is
        // async-signal-safe; no SA_RESTART so wait4 returns EINTR.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = wake as extern "C" fn(libc::c_int) as libc::sighandler_t;
            libc::sigaction(libc::SIGALRM, &sa, std::ptr::null_mut());
        }
        expire_secrets(secrets, &mut deadlines);
    }
    loop {
        let mut st = 0;
        // SAFETY: a zeroed rusage is valid.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: wait4 into live out-parameters.
        let r = unsafe { libc::wait4(-1, &mut st, 0, &mut ru) };
        if r == job {
            let b = encode_status(st, &ru);
            // SAFETY: write the message from a live buffer, then exit.
            unsafe {
                libc::write(status_w, b.as_ptr().cast(), b.len());
                libc::_exit(0)
            }
        }
        if r < 0 && !secrets.is_empty() {
            expire_secrets(secrets, &mut deadlines);
        }
        if r < 0 {
            let e = std::io::Error::last_os_error().raw_os_error();
            if e != Some(libc::EINTR) {
                // SAFETY: no children left.
                unsafe { libc::_exit(1) }
            }
        }
    }
}

extern "C" fn wake(_: libc::c_int) {}

fn monotonic_ns() -> u64 {
    // SAFETY: a zeroed timespec is valid; clock_gettime writes into it.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: CLOCK_MONOTONIC with a live out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Unlink every secret whose deadline has passed, then arm the timer for the next.
fn expire_secrets(secrets: &[crate::plan::PlannedSecret], deadlines: &mut [u64]) {
    let now = monotonic_ns();
    let mut next = u64::MAX;
    for (sec, d) in secrets.iter().zip(deadlines.iter_mut()) {
        if *d <= now {
            // SAFETY: unlink of a NUL-terminated path prepared before the fork.
            unsafe { libc::unlink(sec.path.as_ptr()) };
            *d = u64::MAX;
        } else {
            next = next.min(*d);
        }
    }
    if next != u64::MAX {
        let wait = next - now;
        let it = libc::itimerval {
            it_interval: libc::timeval {
                tv_sec: 0,
                tv_usec: 0,
            },
            it_value: libc::timeval {
                tv_sec: (wait / 1_000_000_000) as _,
                tv_usec: ((wait % 1_000_000_000) / 1000).max(1) as _,
            },
        };
        // SAFETY: setitimer with a live value and no old-value pointer.
        unsafe { libc::setitimer(libc::ITIMER_REAL, &it, std::ptr::null_mut()) };
    }
}

/// Length of the init's status message: wait status, user and system CPU (µs), max RSS (KiB) of
/// the command (and the descendants it reaped).
pub const STATUS_LEN: usize = 32;

fn encode_status(st: i32, ru: &libc::rusage) -> [u8; STATUS_LEN] {
    let us = |tv: libc::timeval| (tv.tv_sec as u64) * 1_000_000 + tv.tv_usec as u64;
    let mut b = [0u8; STATUS_LEN];
    b[..4].copy_from_slice(&st.to_ne_bytes());
    b[8..16].copy_from_slice(&us(ru.ru_utime).to_ne_bytes());
    b[16..24].copy_from_slice(&us(ru.ru_stime).to_ne_bytes());
    b[24..32].copy_from_slice(&(ru.ru_maxrss as u64).to_ne_bytes());
    b
}

/// Decode the init's status message: (wait status, user µs, system µs, max RSS KiB).
pub fn decode_status(b: &[u8; STATUS_LEN]) -> (i32, u64, u64, u64) {
    let w = |i: usize| u64::from_ne_bytes(b[i..i + 8].try_into().unwrap_or([0; 8]));
    (
        i32::from_ne_bytes([b[0], b[1], b[2], b[3]]),
        w(8),
        w(16),
        w(24),
    )
}

/// The candidates as displayed in errors.
pub fn describe_candidates(c: &[CString]) -> String {
    c.iter()
        .map(|c| c.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    //! A recording [`Sys`] double: asserts the order of the setup sequence without a kernel.
    use super::*;
    use crate::config::SandboxConfig;
    use crate::sys::SysResult;
    use std::cell::RefCell;
    use std::ffi::CStr;

    #[derive(Default)]
    struct Recorder {
        calls: RefCell<Vec<String>>,
        fail_at: Option<&'static str>,
    }

    impl Recorder {
        fn rec(&self, s: impl Into<String>) -> SysResult<()> {
            let s = s.into();
            let fail = self.fail_at.is_some_and(|f| s.starts_with(f));
            self.calls.borrow_mut().push(s);
            if fail {
                Err(libc::EPERM)
            } else {
                Ok(())
            }
        }
        /// Assert `items` were called in this order (each found after the previous one).
        fn assert_order(&self, items: &[&str]) {
            let calls = self.calls.borrow();
            let mut from = 0;
            for it in items {
                match calls[from..].iter().position(|c| c.starts_with(it)) {
                    Some(i) => from += i + 1,
                    None => panic!("{it:?} not called after position {from}: {calls:#?}"),
                }
            }
        }
        fn pos(&self, prefix: &str) -> usize {
            self.calls
                .borrow()
                .iter()
                .position(|c| c.starts_with(prefix))
                .unwrap_or_else(|| panic!("{prefix} not called: {:?}", self.calls.borrow()))
        }
    }

    fn s(c: &CStr) -> String {
        c.to_string_lossy().into_owned()
    }

    impl Sys for Recorder {
        fn prctl(&self, option: libc::c_int, _: libc::c_ulong) -> SysResult<()> {
            self.rec(format!("prctl {option}"))
        }
        fn peer_alive(&self, _: i32) -> SysResult<bool> {
            self.rec("peer_alive").map(|_| true)
        }
        fn read_byte(&self, _: i32) -> SysResult<Option<u8>> {
            self.rec("read_byte").map(|_| Some(1))
        }
        fn write_all(&self, _: i32, _: &[u8]) -> SysResult<()> {
            self.rec("write_all")
        }
        fn close(&self, _: i32) -> SysResult<()> {
            Ok(())
        }
        fn setresuid(&self, uid: u32) -> SysResult<()> {
            self.rec(format!("setresuid {uid}"))
        }
        fn setresgid(&self, gid: u32) -> SysResult<()> {
            self.rec(format!("setresgid {gid}"))
        }
        fn setgroups_empty(&self) -> SysResult<()> {
            self.rec("setgroups")
        }
        fn mount(
            &self,
            src: Option<&CStr>,
            target: &CStr,
            _: Option<&CStr>,
            flags: libc::c_ulong,
            _: Option<&CStr>,
        ) -> SysResult<()> {
            self.rec(format!(
                "mount {} {} {flags:#x}",
                src.map(s).unwrap_or_default(),
                s(target)
            ))
        }
        fn umount2(&self, target: &CStr, _: libc::c_int) -> SysResult<()> {
            self.rec(format!("umount2 {}", s(target)))
        }
        fn mkdir(&self, path: &CStr, _: libc::mode_t) -> SysResult<()> {
            self.rec(format!("mkdir {}", s(path)))
        }
        fn chmod(&self, path: &CStr, mode: libc::mode_t) -> SysResult<()> {
            self.rec(format!("chmod {} {mode:o}", s(path)))
        }
        fn create_file(&self, path: &CStr) -> SysResult<()> {
            self.rec(format!("create {}", s(path)))
        }
        fn write_secret(&self, path: &CStr, _: &[u8], owner: Option<u32>) -> SysResult<()> {
            self.rec(format!("write_secret {} {owner:?}", s(path)))
        }
        fn symlink(&self, t: &CStr, l: &CStr) -> SysResult<()> {
            self.rec(format!("symlink {} {}", s(t), s(l)))
        }
        fn chdir(&self, path: &CStr) -> SysResult<()> {
            self.rec(format!("chdir {}", s(path)))
        }
        fn pivot_root(&self, _: &CStr, _: &CStr) -> SysResult<()> {
            self.rec("pivot_root")
        }
        fn open_nofollow(&self, path: &CStr) -> SysResult<i32> {
            self.rec(format!("openat2 {}", s(path))).map(|_| 100)
        }
        fn open_tree_clone(&self, _: i32) -> SysResult<i32> {
            self.rec("open_tree").map(|_| 101)
        }
        fn mount_setattr(&self, _: i32, attr: u64) -> SysResult<()> {
            self.rec(format!("mount_setattr {attr:#x}"))
        }
        fn move_mount(&self, _: i32, target: &CStr) -> SysResult<()> {
            self.rec(format!("move_mount {}", s(target)))
        }
        fn sethostname(&self, _: &[u8]) -> SysResult<()> {
            self.rec("sethostname")
        }
        fn spawn_netns(&self, _: &mut [u8], _: &NetHelper) -> SysResult<libc::pid_t> {
            self.rec("spawn_netns").map(|_| 2)
        }
        fn enter_netns(&self, _: &NetHelper) -> SysResult<()> {
            self.rec("enter_netns")
        }
        fn wait_loopback(&self, _: &NetHelper) -> SysResult<()> {
            self.rec("wait_loopback")
        }
        fn unshare_cgroup(&self) -> SysResult<()> {
            self.rec("unshare_cgroup")
        }
        fn write_file(&self, path: &CStr, _: &[u8]) -> SysResult<()> {
            self.rec(format!("write_file {}", s(path)))
        }
        fn secret_tmpfs(&self, size: u64, owner: u32) -> SysResult<i32> {
            self.rec(format!("secret_tmpfs {size} {owner}")).map(|_| 9)
        }
        fn spawn_job(&self, _: &mut dyn FnMut() -> i32, _: &mut [u8]) -> SysResult<libc::pid_t> {
            self.rec("spawn_job").map(|_| 2)
        }
        fn setsid(&self) -> SysResult<()> {
            self.rec("setsid")
        }
        fn setrlimit(&self, r: crate::sys::RlimitResource, v: u64) -> SysResult<()> {
            self.rec(format!("setrlimit {r} {v}"))
        }
        fn dup2(&self, a: i32, b: i32) -> SysResult<()> {
            self.rec(format!("dup2 {a} {b}"))
        }
        fn open_rw(&self, path: &CStr) -> SysResult<i32> {
            self.rec(format!("open {}", s(path))).map(|_| 3)
        }
        fn close_range(&self, a: u32, b: u32) -> SysResult<()> {
            self.rec(format!("close_range {a} {b}"))
        }
        fn reset_signals(&self) -> SysResult<()> {
            self.rec("reset_signals")
        }
        fn clear_signal_mask(&self) -> SysResult<()> {
            self.rec("clear_signal_mask")
        }
        fn drop_bounding_and_ambient(&self) -> SysResult<()> {
            self.rec("drop_bounding")
        }
        fn capset_zero(&self) -> SysResult<()> {
            self.rec("capset")
        }
        fn landlock_add_path(&self, _: i32, path: &CStr, _: u64) -> SysResult<()> {
            self.rec(format!("landlock_add_rule {}", s(path)))
        }
        fn landlock_restrict(&self, _: i32) -> SysResult<()> {
            self.rec("landlock_restrict_self")
        }
        fn seccomp(&self, prog: &[seccompiler::sock_filter], listener: bool) -> SysResult<i32> {
            self.rec(format!("seccomp listener={listener} len={}", prog.len()))
                .map(|_| 9)
        }
        fn send_fd(&self, _: i32, fd: i32) -> SysResult<()> {
            self.rec(format!("send_fd {fd}"))
        }
        fn execve(&self, path: &CStr, _: &[*const libc::c_char], _: &[*const libc::c_char]) -> i32 {
            let _ = self.rec(format!("execve {}", s(path)));
            libc::ENOENT
        }
    }

    fn plan() -> SandboxPlan {
        let mut c = SandboxConfig::new(vec!["/bin/true".into()]);
        c.ro_binds.push(crate::config::Bind {
            host: "/usr".into(),
            dest: "/data".into(),
        });
        SandboxPlan::build(c).unwrap()
    }

    fn fds() -> ChildFds {
        ChildFds {
            sync_r: 3,
            err_w: 4,
            status_w: 5,
            sock: 6,
            ruleset: 7,
            stdout: -1,
            stderr: -1,
        }
    }

    #[test]
    fn init_sequence_order() {
        let p = plan();
        let r = Recorder::default();
        let mut trees = vec![-1; p.mounts.binds.len()];
        init_setup(&r, &p, &fds(), &mut trees, &mut [], &NetHelper::default()).unwrap();
        let order = [
            "spawn_netns",
            "reset_signals",
            "drop_bounding",
            "read_byte",
            "prctl 1", // PR_SET_PDEATHSIG, after the credential change
            "peer_alive",
            "prctl 4",          // PR_SET_DUMPABLE
            "mount  / 0x44000", // MS_REC|MS_PRIVATE
            "mount tmpfs /tmp ",
            "mount proc /tmp/proc",
            "mount tmpfs /tmp/tmp ",
            "move_mount /tmp/usr",
            "chdir /tmp",
            "pivot_root",
            "umount2 .",
            "chdir /",
            "mount  / ", // remount read-only
            "sethostname",
            "enter_netns",
        ];
        r.assert_order(&order);
        // The /data bind is attached after /dev exists and before pivot_root.
        assert!(r.pos("move_mount /tmp/data") < r.pos("pivot_root"));
        if matches!(p.ids, IdMode::Root { .. }) {
            assert!(
                r.pos("setresuid 0") < r.pos("prctl 1"),
                "a credential change clears PDEATHSIG"
            );
            assert!(
                !r.calls.borrow().iter().any(|c| c.starts_with("openat2")),
                "root mode: the parent clones binds"
            );
        } else {
            assert!(
                r.pos("openat2 /usr") < r.pos("mount tmpfs /tmp "),
                "binds resolved before the new root hides /tmp"
            );
        }
    }

    /// The job's steps against a recorder, up to the (recorded, failing) execve.
    fn job_calls(p: &SandboxPlan) -> Recorder {
        let r = Recorder::default();
        let f = job_setup(
            &r,
            p,
            &fds(),
            &ExecArrays {
                argv: &[std::ptr::null()],
                envp: &[std::ptr::null()],
            },
            &NetHelper::default(),
        );
        assert_eq!(f.step, Step::Exec);
        r
    }

    #[test]
    fn job_sequence_order_one_filter_last() {
        // The default profile allows sendmsg and close: one filter, installed with the listener,
        // which is then handed over.
        let p = plan();
        assert!(p.seccomp.guard.is_empty());
        let r = job_calls(&p);
        r.assert_order(&[
            "setsid",
            "capset",
            "prctl 38", // PR_SET_NO_NEW_PRIVS
            "landlock_restrict_self",
            "wait_loopback",
            "seccomp listener=true",
            "send_fd 9",
            "execve /bin/true",
        ]);
        let calls = r.calls.borrow();
        assert_eq!(calls.iter().filter(|c| c.starts_with("seccomp")).count(), 1);
        assert!(
            calls[calls.len() - 3].starts_with("seccomp listener=true"),
            "only the listener handoff between seccomp and execve: {calls:?}"
        );
    }

    #[test]
    fn job_sequence_order_seccomp_last() {
        // The minimal profile denies sendmsg: guard filter with the listener first, handoff, then
        // the profile's filter.
        let mut c = SandboxConfig::new(vec!["/bin/true".into()]);
        c.profile = crate::config::ProfileRef::Name("minimal".into());
        let p = SandboxPlan::build(c).unwrap();
        assert!(!p.seccomp.guard.is_empty());
        let r = job_calls(&p);
        let order = [
            "setsid",
            "clear_signal_mask",
            "setrlimit 4 0", // RLIMIT_CORE
            "dup2 3 0",
            "chdir /tmp",
            "close_range 3 3",
            "close_range 8 4294967295",
            "capset",
            "prctl 38", // PR_SET_NO_NEW_PRIVS
            "landlock_add_rule /",
            "landlock_restrict_self",
            "seccomp listener=true",
            "send_fd 9",
            "seccomp listener=false",
            "execve /bin/true",
        ];
        r.assert_order(&order);
        let calls = r.calls.borrow();
        assert!(
            calls[calls.len() - 2].starts_with("seccomp listener=false"),
            "seccomp is the last step before execve"
        );
    }

    #[test]
    fn a_failing_step_is_reported_with_its_index() {
        let p = plan();
        let r = Recorder {
            fail_at: Some("move_mount /tmp/data"),
            ..Default::default()
        };
        let mut trees = vec![-1; p.mounts.binds.len()];
        let f = init_setup(&r, &p, &fds(), &mut trees, &mut [], &NetHelper::default()).unwrap_err();
        assert_eq!(f.step, Step::BindMount);
        assert_eq!(f.errno, libc::EPERM);
        assert!(crate::mounts::describe_op(&p.mounts, f.index as usize).contains("/usr -> /data"));
        assert!(
            !r.calls.borrow().iter().any(|c| c == "pivot_root"),
            "nothing after the failure"
        );
        assert_eq!(Fail::decode(&f.encode()), Some(f));
    }
}
