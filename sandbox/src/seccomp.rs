//! seccomp: compiles an OCI/Docker seccomp profile to BPF before the fork and installs it last
//! before `execve`. Guarantees: a profile that fails to compile is an error, never an allow-all;
//! every foreign-ABI call is refused (i386 / any non-x86_64 `AUDIT_ARCH` → the process is killed,
//! x32 numbers with bit `0x40000000` → `ENOSYS`), whatever the profile says; the calls the profile
//! denies outright are *observed* (reported to the supervisor by `SECCOMP_RET_USER_NOTIF`) and
//! still denied with the profile's errno.
//!
//! ## Compilation
//! Rules are grouped by action. Each group becomes one `seccompiler::SeccompFilter` whose
//! mismatch action is a sentinel; the sentinel returns are patched into jumps to the next group,
//! so one program evaluates the groups in the kernel's precedence order
//! (KILL_PROCESS, KILL_THREAD, TRAP, ERRNO, TRACE, LOG, ALLOW) and ends with the default action.
//! A call matching rules of several actions thus gets the most restrictive one.
//! Our own prologue (arch check, x32 check) comes first.
//!
//! ## Rules about names, includes and excludes
//! * A name unknown on x86_64 is an error naming the profile and the name — unless the profile
//!   declares other architectures (`archMap` with sub-architectures, or a non-x86_64
//!   `architectures` entry, as Docker's does); then it is taken to be another ABI's call and
//!   skipped with a warning.
//! * `includes.caps` never match (the job holds no capability); `excludes.caps` always let the
//!   rule apply; `arches` match `amd64`/`x86_64`; `minKernel` is compared with `uname`.
//! * `SCMP_ACT_NOTIFY` in a profile is refused (the sandbox owns the listener).
//!
//! ## Observation
//! Calls the profile denies unconditionally with `SCMP_ACT_ERRNO` are rewritten to ALLOW in the
//! main filter and to USER_NOTIF in a second, "guard" filter (the kernel picks the most restrictive
//! result across filters, and ERRNO would outrank USER_NOTIF). `connect`, and `sendto` with a
//! destination, always go to the supervisor. The supervisor answers every notification with an
//! error and never lets a call continue. If the supervisor is gone the kernel answers `ENOSYS`.
//! Calls the profile answers with `ENOSYS` (e.g. `clone3`, so glibc falls back to `clone`) are a
//! compatibility answer, not a policy alarm: they are not observed.

use std::collections::{BTreeMap, BTreeSet};

use seccompiler::{
    sock_filter, BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition,
    SeccompFilter, SeccompRule, TargetArch,
};
use sha2::{Digest, Sha256};

use crate::profile::{OciSeccomp, OciSyscall};
use crate::syscall_table;

/// Errors compiling a profile.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// A syscall name not known on x86_64 in a single-arch profile.
    #[error("profile {profile}: unknown system call {name:?}")]
    UnknownSyscall {
        /// Profile source.
        profile: String,
        /// The name.
        name: String,
    },
    /// An unsupported or malformed action.
    #[error("profile {profile}: unsupported action {action:?}")]
    BadAction {
        /// Profile source.
        profile: String,
        /// The action string.
        action: String,
    },
    /// An unsupported comparison or argument index.
    #[error("profile {profile}: bad argument condition for {name}: {detail}")]
    BadArg {
        /// Profile source.
        profile: String,
        /// Syscall name.
        name: String,
        /// What is wrong.
        detail: String,
    },
    /// seccompiler refused the filter.
    #[error("profile {profile}: cannot compile: {detail}")]
    Compile {
        /// Profile source.
        profile: String,
        /// seccompiler's message.
        detail: String,
    },
    /// The compiled program is too long for the kernel.
    #[error("profile {profile}: compiled filter has {len} instructions (kernel limit 4096)")]
    TooLong {
        /// Profile source.
        profile: String,
        /// Program length.
        len: usize,
    },
}

const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
const X32_SYSCALL_BIT: u32 = 0x4000_0000;
/// `SECCOMP_RET_USER_NOTIF`.
pub const RET_USER_NOTIF: u32 = 0x7fc0_0000;
const RET_ALLOW: u32 = 0x7fff_0000;
const RET_KILL_PROCESS: u32 = 0x8000_0000;
const RET_ERRNO: u32 = 0x0005_0000;
/// The data of a `SECCOMP_RET_TRACE` used as the "no rule of this group matched" marker.
const SENTINEL: u32 = 0xfeed;

const BPF_LD_W_ABS: u16 = 0x20;
const BPF_JEQ_K: u16 = 0x15;
const BPF_JGE_K: u16 = 0x35;
const BPF_JA: u16 = 0x05;
const BPF_RET_K: u16 = 0x06;

/// A profile action, ordered by the kernel's precedence (most restrictive first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Action {
    /// `SCMP_ACT_KILL_PROCESS`.
    KillProcess,
    /// `SCMP_ACT_KILL` / `SCMP_ACT_KILL_THREAD`.
    KillThread,
    /// `SCMP_ACT_TRAP`.
    Trap,
    /// `SCMP_ACT_ERRNO`.
    Errno(u32),
    /// `SCMP_ACT_TRACE`.
    Trace(u32),
    /// `SCMP_ACT_LOG`.
    Log,
    /// `SCMP_ACT_ALLOW`.
    Allow,
}

impl Action {
    fn parse(s: &str, errno: Option<u32>, default_errno: u32) -> Option<Self> {
        Some(match s {
            "SCMP_ACT_KILL_PROCESS" => Action::KillProcess,
            "SCMP_ACT_KILL" | "SCMP_ACT_KILL_THREAD" => Action::KillThread,
            "SCMP_ACT_TRAP" => Action::Trap,
            "SCMP_ACT_ERRNO" => Action::Errno(errno.unwrap_or(default_errno)),
            "SCMP_ACT_TRACE" => Action::Trace(errno.unwrap_or(0)),
            "SCMP_ACT_LOG" => Action::Log,
            "SCMP_ACT_ALLOW" => Action::Allow,
            _ => return None,
        })
    }

    fn seccompiler(self) -> SeccompAction {
        match self {
            Action::KillProcess => SeccompAction::KillProcess,
            Action::KillThread => SeccompAction::KillThread,
            Action::Trap => SeccompAction::Trap,
            Action::Errno(e) => SeccompAction::Errno(e),
            Action::Trace(d) => SeccompAction::Trace(d),
            Action::Log => SeccompAction::Log,
            Action::Allow => SeccompAction::Allow,
        }
    }

    fn ret(self) -> u32 {
        u32::from(self.seccompiler())
    }
}

/// A compiled profile: two BPF programs and what the supervisor must know to answer.
#[derive(Debug, Clone)]
pub struct Compiled {
    /// The main filter (installed last).
    pub main: BpfProgram,
    /// The guard filter: USER_NOTIF for observed calls (installed first, with a listener).
    pub guard: BpfProgram,
    /// Observed call numbers and the errno the supervisor answers with.
    pub observed: BTreeMap<i64, u32>,
    /// Hex SHA-256 over the main program's bytes then the guard's.
    pub sha256: String,
    /// Names skipped as belonging to another architecture.
    pub skipped_names: Vec<String>,
}

/// Calls never routed to the supervisor: the sandbox itself needs them between installing the
/// guard filter and `execve`.
const NEVER_OBSERVED: &[&str] = &[
    "sendmsg",
    "close",
    "seccomp",
    "execve",
    "exit",
    "exit_group",
    "rt_sigreturn",
];

type Group = BTreeMap<i64, Vec<Option<SeccompRule>>>;

fn rule_applies(r: &OciSyscall, kernel: (u32, u32)) -> bool {
    let native = |a: &String| a == "amd64" || a == "x86_64" || a == "SCMP_ARCH_X86_64";
    if !r.includes.caps.is_empty() {
        return false;
    }
    if !r.includes.arches.is_empty() && !r.includes.arches.iter().any(native) {
        return false;
    }
    if let Some(k) = &r.includes.min_kernel {
        if let Some(min) = crate::profile::parse_kernel(k) {
            if kernel < min {
                return false;
            }
        }
    }
    if r.excludes.arches.iter().any(native) {
        return false;
    }
    true
}

fn condition(
    profile: &str,
    name: &str,
    a: &crate::profile::OciArg,
) -> Result<SeccompCondition, SeccompError> {
    let bad = |detail: String| SeccompError::BadArg {
        profile: profile.into(),
        name: name.into(),
        detail,
    };
    let (op, value) = match a.op.as_str() {
        "SCMP_CMP_EQ" => (SeccompCmpOp::Eq, a.value),
        "SCMP_CMP_NE" => (SeccompCmpOp::Ne, a.value),
        "SCMP_CMP_LT" => (SeccompCmpOp::Lt, a.value),
        "SCMP_CMP_LE" => (SeccompCmpOp::Le, a.value),
        "SCMP_CMP_GT" => (SeccompCmpOp::Gt, a.value),
        "SCMP_CMP_GE" => (SeccompCmpOp::Ge, a.value),
        "SCMP_CMP_MASKED_EQ" => (SeccompCmpOp::MaskedEq(a.value), a.value_two),
        other => return Err(bad(format!("unknown op {other:?}"))),
    };
    if a.index > 5 {
        return Err(bad(format!("argument index {} > 5", a.index)));
    }
    SeccompCondition::new(a.index, SeccompCmpArgLen::Qword, op, value)
        .map_err(|e| bad(e.to_string()))
}

/// Compile a parsed profile. `source` names it in errors.
pub fn compile(profile: &OciSeccomp, source: &str) -> Result<Compiled, SeccompError> {
    compile_for_kernel(profile, source, crate::profile::kernel_version())
}

/// [`compile`] for a given kernel version (for tests).
pub fn compile_for_kernel(
    profile: &OciSeccomp,
    source: &str,
    kernel: (u32, u32),
) -> Result<Compiled, SeccompError> {
    let default_errno = profile.default_errno_ret.unwrap_or(libc::EPERM as u32);
    let default = Action::parse(
        &profile.default_action,
        profile.default_errno_ret,
        default_errno,
    )
    .ok_or_else(|| SeccompError::BadAction {
        profile: source.into(),
        action: profile.default_action.clone(),
    })?;
    let multi_arch = profile.is_multi_arch();
    let mut groups: BTreeMap<Action, Group> = BTreeMap::new();
    let mut skipped = Vec::new();

    for r in &profile.syscalls {
        let action = Action::parse(&r.action, r.errno_ret, default_errno).ok_or_else(|| {
            SeccompError::BadAction {
                profile: source.into(),
                action: r.action.clone(),
            }
        })?;
        let names: Vec<&String> = r.names.iter().chain(r.name.iter()).collect();
        // Resolve names first so that a typo is reported even in a rule that does not apply.
        let mut nrs = Vec::new();
        for name in &names {
            match syscall_table::number(name) {
                Some(nr) => nrs.push((nr, name.as_str())),
                None if multi_arch => {
                    if !skipped.contains(*name) {
                        skipped.push((*name).clone());
                    }
                }
                None => {
                    return Err(SeccompError::UnknownSyscall {
                        profile: source.into(),
                        name: (*name).clone(),
                    })
                }
            }
        }
        if !rule_applies(r, kernel) {
            continue;
        }
        for (nr, name) in nrs {
            let args = r.args.as_deref().unwrap_or(&[]);
            let rule = if args.is_empty() {
                None
            } else {
                let conds = args
                    .iter()
                    .map(|a| condition(source, name, a))
                    .collect::<Result<Vec<_>, _>>()?;
                Some(SeccompRule::new(conds).map_err(|e| SeccompError::Compile {
                    profile: source.into(),
                    detail: e.to_string(),
                })?)
            };
            groups
                .entry(action)
                .or_default()
                .entry(nr)
                .or_default()
                .push(rule);
        }
    }
    if !skipped.is_empty() {
        tracing::debug!(profile = source, names = ?skipped, "skipped system calls of other architectures");
    }

    // Observation rewrite: unconditional ERRNO denials become ALLOW here + USER_NOTIF in the guard.
    let mut observed = BTreeMap::new();
    for &(name, nr) in syscall_table::X86_64 {
        if NEVER_OBSERVED.contains(&name) {
            continue;
        }
        let mut errno = None;
        let mut other = false;
        for (act, g) in &groups {
            if let Some(rules) = g.get(&nr) {
                match act {
                    Action::Errno(e) if rules.iter().any(Option::is_none) && errno.is_none() => {
                        errno = Some(*e)
                    }
                    Action::Errno(_) => {}
                    Action::KillProcess | Action::KillThread | Action::Trap => other = true,
                    _ => {}
                }
            }
        }
        let denied_by_default = groups.values().all(|g| !g.contains_key(&nr));
        let errno = match (errno, default) {
            (Some(e), _) => Some(e),
            (None, Action::Errno(e)) if denied_by_default => Some(e),
            _ => None,
        };
        // ENOSYS is a compatibility answer ("this call does not exist, fall back"), as for clone3,
        // not a policy alarm: such calls are denied but not observed.
        if let (Some(e), false) = (errno, other) {
            if e == libc::ENOSYS as u32 {
                continue;
            }
            observed.insert(nr, e);
        }
    }
    for (act, g) in groups.iter_mut() {
        if matches!(act, Action::Errno(_)) {
            g.retain(|nr, _| !observed.contains_key(nr));
        }
    }
    let allow = groups.entry(Action::Allow).or_default();
    for nr in observed.keys() {
        allow.insert(*nr, vec![None]);
    }

    // Main program: prologue, then one seccompiler program per action group.
    let mut main = prologue();
    for (act, g) in groups {
        let rules: BTreeMap<i64, Vec<SeccompRule>> = g
            .into_iter()
            .map(|(nr, rs)| {
                let rs = if rs.iter().any(Option::is_none) {
                    Vec::new()
                } else {
                    rs.into_iter().flatten().collect()
                };
                (nr, rs)
            })
            .collect();
        if rules.is_empty() {
            continue;
        }
        let filter = SeccompFilter::new(
            rules,
            SeccompAction::Trace(SENTINEL),
            act.seccompiler(),
            TargetArch::x86_64,
        )
        .map_err(|e| SeccompError::Compile {
            profile: source.into(),
            detail: e.to_string(),
        })?;
        let mut prog: BpfProgram =
            filter
                .try_into()
                .map_err(|e: seccompiler::BackendError| SeccompError::Compile {
                    profile: source.into(),
                    detail: e.to_string(),
                })?;
        let sentinel = u32::from(SeccompAction::Trace(SENTINEL));
        let len = prog.len();
        for (i, ins) in prog.iter_mut().enumerate() {
            if ins.code == BPF_RET_K && ins.k == sentinel {
                *ins = stmt(BPF_JA, (len - i - 1) as u32);
            }
        }
        main.extend(prog);
    }
    main.push(stmt(BPF_RET_K, default.ret()));

    let guard = guard_program(observed.keys().copied());
    for (p, len) in [(&main, main.len()), (&guard, guard.len())] {
        let _ = p;
        if len > 4096 {
            return Err(SeccompError::TooLong {
                profile: source.into(),
                len,
            });
        }
    }
    let mut h = Sha256::new();
    for ins in main.iter().chain(guard.iter()) {
        h.update(ins.code.to_ne_bytes());
        h.update([ins.jt, ins.jf]);
        h.update(ins.k.to_ne_bytes());
    }
    Ok(Compiled {
        main,
        guard,
        observed,
        sha256: hex::encode(h.finalize()),
        skipped_names: skipped,
    })
}

fn stmt(code: u16, k: u32) -> sock_filter {
    sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> sock_filter {
    sock_filter { code, jt, jf, k }
}

/// Arch check (kill on a foreign `AUDIT_ARCH`) and x32 check (`ENOSYS`).
fn prologue() -> BpfProgram {
    vec![
        stmt(BPF_LD_W_ABS, 4),
        jump(BPF_JEQ_K, AUDIT_ARCH_X86_64, 1, 0),
        stmt(BPF_RET_K, RET_KILL_PROCESS),
        stmt(BPF_LD_W_ABS, 0),
        jump(BPF_JGE_K, X32_SYSCALL_BIT, 0, 1),
        stmt(BPF_RET_K, RET_ERRNO | libc::ENOSYS as u32),
    ]
}

/// The guard filter: USER_NOTIF for `connect`, `sendto` with a destination, and `observed`.
fn guard_program(observed: impl Iterator<Item = i64>) -> BpfProgram {
    let mut nrs: BTreeSet<i64> = observed.collect();
    nrs.insert(libc::SYS_connect);
    nrs.remove(&libc::SYS_sendto);
    let mut p = prologue();
    p.truncate(4); // arch check + load nr; the x32 answer comes from the main filter
                   // sendto(fd, buf, len, flags, dest_addr, addrlen): notify only when dest_addr != NULL.
    p.push(jump(BPF_JEQ_K, libc::SYS_sendto as u32, 0, 6));
    p.push(stmt(BPF_LD_W_ABS, 16 + 4 * 8)); // args[4] low half
    p.push(jump(BPF_JEQ_K, 0, 0, 3));
    p.push(stmt(BPF_LD_W_ABS, 16 + 4 * 8 + 4)); // args[4] high half
    p.push(jump(BPF_JEQ_K, 0, 0, 1));
    let allow_fixup_1 = p.len();
    p.push(stmt(BPF_JA, 0)); // → ALLOW
    let notify_fixups_start = p.len();
    p.push(stmt(BPF_JA, 0)); // → NOTIFY
                             // A still holds the syscall number on this path.
    let mut notify_fixups = vec![notify_fixups_start];
    for nr in nrs {
        p.push(jump(BPF_JEQ_K, nr as u32, 0, 1));
        notify_fixups.push(p.len());
        p.push(stmt(BPF_JA, 0));
    }
    let allow_at = p.len();
    p.push(stmt(BPF_RET_K, RET_ALLOW));
    let notify_at = p.len();
    p.push(stmt(BPF_RET_K, RET_USER_NOTIF));
    p[allow_fixup_1].k = (allow_at - allow_fixup_1 - 1) as u32;
    for i in notify_fixups {
        p[i].k = (notify_at - i - 1) as u32;
    }
    p
}

/// Install a program on the calling thread. With `listener`, returns the notification fd.
/// Async-signal-safe: only the `seccomp` syscall.
pub fn install(prog: &[sock_filter], listener: bool) -> Result<libc::c_int, i32> {
    #[repr(C)]
    struct SockFprog {
        len: libc::c_ushort,
        filter: *const sock_filter,
    }
    let fprog = SockFprog {
        len: prog.len() as libc::c_ushort,
        filter: prog.as_ptr(),
    };
    let flags: libc::c_ulong = if listener {
        libc::SECCOMP_FILTER_FLAG_NEW_LISTENER
    } else {
        0
    };
    // SAFETY: fprog points at a live program of `len` instructions for the duration of the call;
    // the kernel copies it.
    let r = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER as libc::c_ulong,
            flags,
            &fprog as *const SockFprog,
        )
    };
    if r < 0 {
        Err(std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EINVAL))
    } else {
        Ok(r as libc::c_int)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::OciSeccomp;

    fn parse(s: &str) -> OciSeccomp {
        serde_json::from_str(s).unwrap()
    }

    #[test]
    fn unknown_name_in_own_profile_is_an_error() {
        let p = parse(
            r#"{"defaultAction":"SCMP_ACT_ERRNO","architectures":["SCMP_ARCH_X86_64"],
            "syscalls":[{"names":["read","frobnicate"],"action":"SCMP_ACT_ALLOW"}]}"#,
        );
        let e = compile(&p, "my.json").unwrap_err().to_string();
        assert!(e.contains("my.json") && e.contains("frobnicate"), "{e}");
    }

    #[test]
    fn unknown_action_is_an_error() {
        let p = parse(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["read"],"action":"SCMP_ACT_NOTIFY"}]}"#,
        );
        assert!(matches!(
            compile(&p, "x"),
            Err(SeccompError::BadAction { .. })
        ));
    }

    #[test]
    fn docker_profile_compiles() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../shared/interop/docker-default-seccomp.json"
        );
        let p: OciSeccomp = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
        let c = compile(&p, path).unwrap();
        assert!(c.skipped_names.iter().any(|n| n == "socketcall"));
        assert!(
            c.observed.contains_key(&libc::SYS_ptrace)
                || c.observed.contains_key(&libc::SYS_kexec_load)
        );
        assert!(
            !c.observed.contains_key(&libc::SYS_clone3),
            "ENOSYS answers are not observed"
        );
    }

    #[test]
    fn denied_calls_are_observed_with_profile_errno() {
        let p = parse(
            r#"{"defaultAction":"SCMP_ACT_ERRNO","defaultErrnoRet":1,
            "syscalls":[{"names":["read","write","ioctl"],"action":"SCMP_ACT_ALLOW"},
                        {"names":["clone3"],"action":"SCMP_ACT_ERRNO","errnoRet":38},
                        {"names":["ioctl"],"action":"SCMP_ACT_ERRNO","args":[{"index":1,"value":4294967295,"valueTwo":21522,"op":"SCMP_CMP_MASKED_EQ"}]}]}"#,
        );
        let c = compile(&p, "x").unwrap();
        assert!(!c.observed.contains_key(&libc::SYS_clone3));
        assert_eq!(c.observed.get(&libc::SYS_ptrace), Some(&1));
        assert!(!c.observed.contains_key(&libc::SYS_ioctl));
        assert!(!c.observed.contains_key(&libc::SYS_read));
        assert_eq!(c.main.last().unwrap().k, RET_ERRNO | 1);
    }
}
