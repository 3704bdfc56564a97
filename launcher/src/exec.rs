//! `sealrun exec`: run one command in the sandbox, the way people use bubblewrap, but locked down
//! by default. All the work is in `sealrun_sandbox`; this is argument parsing and reporting.

use std::path::PathBuf;
use std::time::Duration;

use sealrun_sandbox::{exit_codes, Bind, ProfileRef, SandboxConfig, SandboxPlan, Tmpfs};

/// Arguments of `sealrun exec` (the long help, with examples and exit statuses, is
/// [`AFTER_HELP`]).
#[derive(clap::Args, Debug, Clone, PartialEq)]
#[command(after_help = AFTER_HELP)]
pub struct ExecArgs {
    /// Profile: a built-in name (default, minimal, python, gpu) or a path to an OCI/Docker seccomp
    /// JSON file.
    #[arg(long, value_name = "NAME|PATH", default_value = "default")]
    pub profile: String,
    /// Bind HOST read-only at DEST (default: the same path). Repeatable.
    #[arg(long = "ro", value_name = "HOST[:DEST]")]
    pub ro: Vec<String>,
    /// Bind HOST read-write at DEST (default: the same path). Repeatable.
    #[arg(long = "rw", value_name = "HOST[:DEST]")]
    pub rw: Vec<String>,
    /// Mount a tmpfs at DEST, capped at SIZE (e.g. 64M; default 64M). /tmp (256M) and /dev/shm
    /// (half of --memory, at least 64M; 1G without --memory) always exist; this resizes them.
    /// Repeatable.
    #[arg(long, value_name = "DEST[:SIZE]")]
    pub tmpfs: Vec<String>,
    /// Memory limit (cgroup), e.g. 512M, 2G.
    #[arg(long, value_name = "SIZE")]
    pub memory: Option<String>,
    /// Maximum number of processes and threads (cgroup pids.max).
    #[arg(long, value_name = "N")]
    pub pids: Option<u64>,
    /// CPU limit in CPUs, e.g. 2 or 1.5 (cgroup CPU quota); also sets OMP_NUM_THREADS,
    /// OPENBLAS_NUM_THREADS, MKL_NUM_THREADS and NUMEXPR_NUM_THREADS unless --env sets them.
    #[arg(long, value_name = "N")]
    pub cpus: Option<f64>,
    /// Wall-clock limit, e.g. 30s, 10m; the whole process tree is killed (exit status 124).
    #[arg(long, value_name = "DURATION")]
    pub timeout: Option<String>,
    /// Working directory inside the sandbox (default /tmp).
    #[arg(long, value_name = "DIR")]
    pub cwd: Option<PathBuf>,
    /// Set an environment variable. Repeatable.
    #[arg(long = "env", value_name = "K=V")]
    pub env: Vec<String>,
    /// Run with the Python virtualenv VENV: it and its base interpreter's prefix appear
    /// read-only at their own host paths, VENV/bin comes first on PATH (so `python3` is the
    /// venv's) and VIRTUAL_ENV is set. A folder that is not a venv is a usage error.
    #[arg(long, value_name = "VENV")]
    pub python: Option<PathBuf>,
    /// GPUs from the host's CDI specs (/etc/cdi, /var/run/cdi; or $SEALRUN_CDI_DIRS): `all`,
    /// indices (`0,1`) or UUIDs (`GPU-…`). Their device nodes are bound under /dev, the spec's
    /// driver files read-only, its environment set; use `--profile gpu`.
    #[arg(long, value_name = "all|0,1|GPU-UUID")]
    pub gpus: Option<String>,
    /// Write the outcome (end reason, resource use, denied syscalls, egress attempts) as JSON.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// Write the compiled seccomp program (raw BPF, as `bwrap --seccomp` reads it) to FILE and
    /// exit without running anything.
    #[arg(long, value_name = "FILE", hide = true)]
    pub dump_bpf: Option<PathBuf>,
    /// The command and its arguments (after `--`).
    #[arg(trailing_var_arg = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,
}

/// Shown after the options in `sealrun exec --help`.
pub const AFTER_HELP: &str = "\
The command runs as uid 1000 in new user, mount, pid, network (loopback only), ipc, uts and cgroup
namespaces, with no capabilities, no_new_privs, seccomp, Landlock, a read-only root, a 256 MiB
tmpfs /tmp (the default working directory), /dev/shm, a minimal /dev, its own /proc, and an
environment reset to PATH, HOME=/tmp, TMPDIR=/tmp, LANG plus --env. When started as root it runs
as a host uid of its own (from 1879049192; concurrent runs get distinct ones, none overlapping
/etc/subuid or /etc/subgid): --rw directories must be writable by it (e.g. mode 1777).

Exit status: the command's own; 128+N if it was killed by signal N (137 also for an OOM kill);
124 timeout; 125 the sandbox could not be set up (the message names the step); 64 usage error.

Examples:
  sealrun exec -- /bin/true
  sealrun exec --profile python --ro data:/data --rw out:/out --memory 2G --pids 256 \\
      --timeout 10m -- python3 /data/train.py --out /out
  sealrun exec --profile ./my-seccomp.json --report run.json -- ./tool
  sealrun exec --profile python --python /tmp/venv -- python3 -c 'import sys; print(sys.prefix)'
  sealrun exec --profile gpu --gpus all --ro venv -- venv/bin/python3 -c 'import torch; print(torch.cuda.device_count())'

See docs/sandbox.md for the setup order, the profiles and how to write one.";

/// The arguments after `sealrun exec`, parsed without building clap's command tree (measured at
/// about 0.6 ms, a tenth of `sealrun exec`'s start-up on the benchmark machine). Only the plain
/// grammar is accepted: `--name VALUE` or `--name=VALUE` for the options of [`ExecArgs`], then
/// the command (after `--`, or from the first argument that is not an option; everything after
/// it belongs to the command). Anything else — `--help`, an unknown or repeated option, a value
/// that starts with `-`, a bad number, no command, a non-UTF-8 argument — returns `None`, and
/// the caller parses with clap, which answers exactly as it always does. The test
/// `fast_parse_agrees_with_clap` holds the two to the same result.
pub fn parse_fast(args: &[std::ffi::OsString]) -> Option<ExecArgs> {
    let mut profile = None;
    let mut a = ExecArgs {
        profile: String::new(),
        ro: Vec::new(),
        rw: Vec::new(),
        tmpfs: Vec::new(),
        memory: None,
        pids: None,
        cpus: None,
        timeout: None,
        cwd: None,
        env: Vec::new(),
        python: None,
        report: None,
        gpus: None,
        dump_bpf: None,
        command: Vec::new(),
    };
    let mut i = 0;
    while i < args.len() {
        let arg = args[i].to_str()?;
        if arg == "--" {
            i += 1;
            break;
        }
        let Some(opt) = arg.strip_prefix("--") else {
            if arg.starts_with('-') {
                return None;
            }
            break; // the command starts here
        };
        let (name, value) = match opt.split_once('=') {
            Some((n, v)) => (n, v.to_string()),
            None => {
                i += 1;
                let v = args.get(i)?.to_str()?;
                if v.starts_with('-') {
                    return None;
                }
                (opt, v.to_string())
            }
        };
        fn once<T>(slot: &mut Option<T>, v: T) -> Option<()> {
            if slot.is_some() {
                return None;
            }
            *slot = Some(v);
            Some(())
        }
        match name {
            "profile" => once(&mut profile, value)?,
            "ro" => a.ro.push(value),
            "rw" => a.rw.push(value),
            "tmpfs" => a.tmpfs.push(value),
            "env" => a.env.push(value),
            "memory" => once(&mut a.memory, value)?,
            "pids" => once(&mut a.pids, value.parse().ok()?)?,
            "cpus" => once(&mut a.cpus, value.parse().ok()?)?,
            "timeout" => once(&mut a.timeout, value)?,
            "cwd" => once(&mut a.cwd, PathBuf::from(value))?,
            "python" => once(&mut a.python, PathBuf::from(value))?,
            "report" => once(&mut a.report, PathBuf::from(value))?,
            "gpus" => once(&mut a.gpus, value)?,
            "dump-bpf" => once(&mut a.dump_bpf, PathBuf::from(value))?,
            _ => return None,
        }
        i += 1;
    }
    for arg in &args[i..] {
        a.command.push(arg.to_str()?.to_string());
    }
    if a.command.is_empty() {
        return None;
    }
    a.profile = profile.unwrap_or_else(|| "default".into());
    Some(a)
}

/// Parse a size: `512`, `64K`, `512M`, `2G`, `1GB`, `1GiB` (the grammar of [`crate::units`]).
pub fn parse_size(s: &str) -> Result<u64, String> {
    crate::units::parse_size(s)
}

fn usage(msg: impl std::fmt::Display) -> anyhow::Result<u8> {
    eprintln!("sealrun exec: {msg}");
    Ok(exit_codes::USAGE)
}

/// Build the sandbox config from the arguments.
pub fn config(args: &ExecArgs) -> Result<SandboxConfig, String> {
    let mut c = SandboxConfig::new(args.command.clone());
    c.profile = ProfileRef::parse(&args.profile);
    c.ro_binds = args.ro.iter().map(|s| Bind::parse(s)).collect();
    c.rw_binds = args.rw.iter().map(|s| Bind::parse(s)).collect();
    for t in &args.tmpfs {
        let (dest, size) = match t.split_once(':') {
            Some((d, s)) => (d, parse_size(s)?),
            None => (t.as_str(), 64 << 20),
        };
        c.tmpfs.push(Tmpfs {
            dest: PathBuf::from(dest),
            size,
        });
    }
    c.memory = args.memory.as_deref().map(parse_size).transpose()?;
    if args.pids == Some(0) {
        return Err("--pids must be at least 1".into());
    }
    c.pids = args.pids;
    if let Some(n) = args.cpus {
        if !(n.is_finite() && (0.01..=4096.0).contains(&n)) {
            return Err(format!(
                "--cpus {n}: give a number of CPUs from 0.01 to 4096"
            ));
        }
    }
    c.cpus = args.cpus;
    c.timeout = args
        .timeout
        .as_deref()
        .map(|t| humantime::parse_duration(t).map_err(|e| format!("invalid --timeout {t:?}: {e}")))
        .transpose()?;
    if c.timeout == Some(Duration::ZERO) {
        return Err("--timeout must be positive".into());
    }
    c.cwd = args.cwd.clone();
    for kv in &args.env {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| format!("--env {kv:?}: expected K=V"))?;
        c.env.push((k.to_string(), v.to_string()));
    }
    if let Some(venv) = &args.python {
        let venv = crate::venv::Venv::open(venv).map_err(|e| format!("--python: {e}"))?;
        venv.apply(&mut c);
    }
    Ok(c)
}

/// Run the sandbox to its end. SIGINT, SIGTERM, SIGHUP and SIGQUIT sent to `sealrun` go to the
/// sandbox init, which forwards them to the command (which runs in its own session and so does
/// not get the terminal's); a second one kills the whole tree; one that arrives while the
/// sandbox is being built is delivered as soon as the command runs (see [`crate::signals`]).
fn run_forwarding_signals(
    plan: SandboxPlan,
) -> anyhow::Result<Result<sealrun_sandbox::Outcome, sealrun_sandbox::SandboxError>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut signals = crate::signals::Forwarder::catch(crate::signals::EXEC_SIGNALS)?;
        let handle = match tokio::task::spawn_blocking(move || plan.spawn()).await? {
            Ok(h) => h,
            Err(e) => return Ok(Err(e)),
        };
        let mut interrupt = sealrun_verifier::record::Interrupt::default();
        Ok(signals.wait(handle, &mut interrupt).await?)
    })
}

/// Run the command in the sandbox; returns the exit status to use.
pub fn run(args: ExecArgs) -> anyhow::Result<u8> {
    let mut config = match config(&args) {
        Ok(c) => c,
        Err(e) => return usage(e),
    };
    let mut gpus = match args
        .gpus
        .as_deref()
        .map(sealrun_sandbox::cdi::GpuRequest::parse)
    {
        None => None,
        Some(Err(e)) => return usage(format!("--gpus: {e}")),
        Some(Ok(req)) => match crate::gpu::prepare(&req) {
            Ok(g) => Some(g),
            Err(e) => {
                eprintln!("sealrun: sandbox setup failed at gpus: {e}");
                return Ok(exit_codes::SETUP_FAILED);
            }
        },
    };
    if let Some(g) = &mut gpus {
        g.apply(&mut config);
    }
    // The job never holds the operator's terminal: where ours is one, it writes to a pipe that
    // we relay, escaped (see `crate::terminal`).
    let mut relays = Vec::new();
    let (out_tty, err_tty) = crate::terminal::terminals();
    for (tty, to_stderr) in [(out_tty, false), (err_tty, true)] {
        if tty {
            let (relay, w) = crate::terminal::Relay::start(to_stderr)?;
            relays.push(relay);
            let fd = sealrun_sandbox::Stdio::Fd(w);
            if to_stderr {
                config.stderr = fd;
            } else {
                config.stdout = fd;
            }
        }
    }
    let plan = match SandboxPlan::build(config) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("sealrun: sandbox setup failed at plan: {e}");
            return Ok(exit_codes::SETUP_FAILED);
        }
    };
    if let Some(path) = &args.dump_bpf {
        std::fs::write(path, plan.bpf_main_bytes())?;
        return Ok(0);
    }
    if let Some(g) = &mut gpus {
        g.planned(&plan);
        for h in g.access.hooks.iter().filter(|h| h.status == "not-run") {
            eprintln!(
                "sealrun: CDI hook {} {} not run: {}",
                h.path,
                h.args.get(1).map(String::as_str).unwrap_or_default(),
                h.detail
            );
        }
    }
    // This process exits right after: the sandbox's teardown need not delay the answer.
    let result = run_forwarding_signals(plan.detach_teardown()).and_then(|r| r.map_err(Into::into));
    for r in relays {
        r.finish();
    }
    let outcome = match result {
        Ok(o) => o,
        Err(e) => {
            eprintln!("sealrun: {e}");
            return Ok(exit_codes::SETUP_FAILED);
        }
    };
    if let Some(path) = &args.report {
        let mut value = serde_json::to_value(&outcome)?;
        if let (Some(g), Some(o)) = (&gpus, value.as_object_mut()) {
            o.insert("gpus".into(), serde_json::to_value(&g.access)?);
        }
        let json = serde_json::to_vec_pretty(&value)?;
        if let Err(e) = sealrun_verifier::rollback::write_atomic(path, &json) {
            eprintln!("sealrun: cannot write report {}: {e}", path.display());
        }
    }
    match &outcome.end {
        sealrun_sandbox::EndReason::Timeout => {
            eprintln!("sealrun: timed out; the sandbox was killed")
        }
        sealrun_sandbox::EndReason::OomKilled => {
            eprintln!("sealrun: killed by the out-of-memory killer (--memory)")
        }
        sealrun_sandbox::EndReason::PidsLimit { .. } => {
            eprintln!("sealrun: the process limit (--pids) refused a fork")
        }
        _ => {}
    }
    Ok(outcome.exit_status())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clap_parse(args: &[&str]) -> Option<ExecArgs> {
        use clap::{Args, FromArgMatches};
        let cmd = ExecArgs::augment_args(clap::Command::new("exec").no_binary_name(true));
        let m = cmd.try_get_matches_from(args).ok()?;
        ExecArgs::from_arg_matches(&m).ok()
    }

    #[test]
    fn fast_parse_agrees_with_clap() {
        // The plain forms take the fast path and give exactly clap's result.
        let accepted: &[&[&str]] = &[
            &["--", "/bin/true"],
            &["/bin/true"],
            &["/bin/echo", "--ro", "x", "--", "-n"],
            &["--profile", "minimal", "--", "/bin/true"],
            &[
                "--profile=python",
                "--ro",
                "/data",
                "--ro=/a:/b",
                "--rw",
                "/out",
                "--",
                "py",
            ],
            &[
                "--tmpfs",
                "/s:1G",
                "--memory",
                "2G",
                "--pids",
                "64",
                "--cpus",
                "1.5",
                "--timeout",
                "10m",
                "x",
            ],
            &[
                "--cwd",
                "/tmp",
                "--env",
                "A=1",
                "--env=B=2=3",
                "--report",
                "r.json",
                "--",
                "sh",
            ],
            &["--gpus", "0,1", "--profile", "gpu", "--", "nvidia-smi"],
            &["--dump-bpf", "f.bpf", "--", "/bin/true"],
            &["--python", "/tmp/venv", "--", "python3"],
            &["--", "--help"],
            &["--", "--", "x"],
        ];
        // Everything else is left to clap, which refuses it or prints help.
        let declined: &[&[&str]] = &[
            &["--help"],
            &["-h"],
            &["--version"],
            &["--bogus", "x"],
            &["--profile", "a", "--profile", "b", "--", "x"],
            &["--memory", "1G", "--memory", "2G", "--", "x"],
            &["--python", "a", "--python=b", "--", "x"],
            &["--pids", "many", "--", "x"],
            &["--pids", "-1", "--", "x"],
            &["--ro", "--", "x"],
            &["--ro"],
            &["--"],
            &[],
            &["-x", "y"],
        ];
        let os =
            |case: &[&str]| -> Vec<std::ffi::OsString> { case.iter().map(|s| s.into()).collect() };
        for case in accepted {
            let fast = parse_fast(&os(case));
            assert!(fast.is_some(), "the fast path declined {case:?}");
            assert_eq!(fast, clap_parse(case), "fast and clap differ on {case:?}");
        }
        for case in declined {
            assert_eq!(parse_fast(&os(case)), None, "the fast path took {case:?}");
        }
        let non_utf8 = <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(b"\xff");
        assert_eq!(parse_fast(&["--".into(), non_utf8.into()]), None);
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512").unwrap(), 512);
        assert_eq!(parse_size("64K").unwrap(), 64 << 10);
        assert_eq!(parse_size("2G").unwrap(), 2 << 30);
        assert_eq!(parse_size("1MiB").unwrap(), 1 << 20);
        assert!(parse_size("x").is_err());
        assert!(parse_size("0").is_err());
    }
}
