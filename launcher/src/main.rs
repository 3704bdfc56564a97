//! `sealrun`: thin front end. Parse arguments, call one library function,
//! map the outcome to an exit code.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use sealrun_launcher::{demo, exec, keyfile, sign};
use sealrun_verifier::digest::DEFAULT_SHARD_SIZE;
use sealrun_verifier::policy::Kind;

/// sealrun makes ML training runs trustworthy: verify every input, run the job
/// in a locked-down sandbox, and sign an attested record of what happened.
#[derive(Parser)]
#[command(name = "sealrun", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate an Ed25519 signing key pair: PREFIX.key (0600) and PREFIX.pub.
    ///
    /// The files are the same forms `openssl genpkey -algorithm ed25519` and
    /// `openssl pkey -pubout` write, so keys made with openssl work too.
    ///
    /// Example: sealrun keygen --out keys/registry
    Keygen {
        /// Path prefix of the key files.
        #[arg(long, short = 'o', value_name = "PREFIX")]
        out: PathBuf,
        /// Replace existing key files.
        #[arg(long)]
        force: bool,
    },
    /// Sign a file or directory: hash every file and write a DSSE envelope.
    ///
    /// Example:
    ///   sealrun sign data/ --key keys/registry.key --kind dataset \
    ///       --label classification=internal --label pii=false --version 3
    #[command(verbatim_doc_comment)]
    Sign {
        /// The file or directory to sign.
        path: PathBuf,
        /// Ed25519 private key (PKCS#8 PEM, mode 0600).
        #[arg(long, short = 'k')]
        key: PathBuf,
        /// What the artifact is: dataset, features, code or model.
        #[arg(long)]
        kind: Kind,
        /// A label the signer vouches for, KEY=VALUE (repeatable).
        #[arg(long = "label", value_name = "KEY=VALUE")]
        labels: Vec<String>,
        /// Version number; verifiers with a state file refuse lower versions.
        #[arg(long, default_value_t = 1)]
        version: u64,
        /// When the signature expires (RFC 3339, e.g. 2027-01-31T00:00:00Z).
        #[arg(long, value_parser = parse_rfc3339)]
        expires: Option<time::OffsetDateTime>,
        /// Artifact name (default: the file or directory name).
        #[arg(long)]
        name: Option<String>,
        /// Where to write the envelope (default: PATH.sig).
        #[arg(long, short = 'o')]
        out: Option<PathBuf>,
        /// Files larger than this many bytes are hashed in parallel shards.
        #[arg(long, default_value_t = DEFAULT_SHARD_SIZE, hide = true)]
        shard_size: u64,
    },
    /// Run a job: verify every input, run it in the sandbox, hash the outputs,
    /// sign a run record and append it to the audit log.
    ///
    /// Exit status: the job's own status (128+N for signal N); 64 invalid spec,
    /// policy or key; 65 an input did not verify (nothing ran); 124 timeout;
    /// 125 sandbox setup failed; 74 the record could not be written.
    ///
    /// Example: sealrun run job.toml   (see docs/jobs.md for the spec)
    #[command(verbatim_doc_comment)]
    Run {
        /// The job spec (TOML).
        spec: PathBuf,
        /// Do not echo the job's output (it is still logged).
        #[arg(long, short = 'q')]
        quiet: bool,
        /// Start a new rollback state file (the spec's `rollback_state`, default
        /// AUDIT_LOG.rollback.json); refused if it exists. Needed once, unless
        /// the audit log is new too (see docs/jobs.md).
        #[arg(long)]
        init_rollback_state: bool,
        /// Append security events (JSON Lines, ECS fields) to FILE as they
        /// happen; `-` for standard output. Overrides the spec's `events`.
        #[arg(long, value_name = "FILE")]
        events: Option<PathBuf>,
    },
    /// Close the runs whose launcher died: each gets a signed record (`aborted: launcher
    /// died`), an `end` entry in the audit log, its output folder handed back, its staging
    /// folder and cgroups removed. Runs whose launcher is alive are left alone. `sealrun run`
    /// does the same for its audit log before it starts.
    ///
    /// PATH: a job or pipeline spec (its audit logs), an audit log, or its `AUDIT_LOG.runs`
    /// folder. Exit status: 0, or 74 if a run could not be closed.
    ///
    /// Example: sealrun recover job.toml   (see docs/operations.md)
    #[command(verbatim_doc_comment)]
    Recover {
        /// A spec, an audit log or an `AUDIT_LOG.runs` folder.
        path: PathBuf,
    },
    /// Run the built-in end-to-end demo: sign a dataset, verify it, run a
    /// three-stage training pipeline in the sandbox, verify its records, chain
    /// and audit log offline, then show a one-byte tamper refused.
    Demo {
        /// Work in DIR and keep the files (default: a temporary folder).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Run a command in the sandbox (namespaces, read-only root, seccomp,
    /// Landlock, no network, no capabilities, limits).
    Exec(exec::ExecArgs),
}

fn parse_rfc3339(s: &str) -> Result<time::OffsetDateTime, String> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map_err(|e| format!("{s:?} is not an RFC 3339 time such as 2027-01-31T00:00:00Z: {e}"))
}

fn main() -> ExitCode {
    // Diagnostics on stderr, off unless asked: SEALRUN_LOG=debug (or RUST_LOG). Without either,
    // no subscriber is installed at all (sealrun reports to users through its own messages, never
    // through tracing), which keeps `sealrun exec`'s start-up short.
    if let Ok(spec) = std::env::var("SEALRUN_LOG").or_else(|_| std::env::var("RUST_LOG")) {
        let filter = tracing_subscriber::EnvFilter::try_new(&spec)
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_target(false)
            .init();
    }
    // `sealrun exec` is judged on start-up time: its plain argument forms skip clap's command
    // tree (anything else, `--help` included, still goes through clap).
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let fast = match args.get(1).and_then(|a| a.to_str()) {
        Some("exec") => exec::parse_fast(&args[2..]).map(Command::Exec),
        _ => None,
    };
    let command = fast.unwrap_or_else(|| Cli::parse_from(args).command);
    match run(command) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!(
                "sealrun: error: {}",
                sealrun_verifier::text::error_chain(e.as_ref())
            );
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> Result<u8> {
    match command {
        Command::Keygen { out, force } => {
            let kp = keyfile::generate(&out, force)?;
            println!(
                "wrote {} (private, mode 0600) and {} (public)\nkey id: {}",
                kp.private.display(),
                kp.public.display(),
                kp.keyid
            );
            Ok(0)
        }
        Command::Sign {
            path,
            key,
            kind,
            labels,
            version,
            expires,
            name,
            out,
            shard_size,
        } => {
            let req = sign::SignRequest {
                path: &path,
                key: &key,
                kind,
                name,
                labels: &labels,
                version,
                expires,
                out,
                shard_size,
                quiet: false,
            };
            let (out, p) =
                sign::sign(&req).with_context(|| format!("cannot sign {}", path.display()))?;
            println!(
                "signed {} {:?} v{}: {} files, {} bytes -> {}",
                p.kind,
                p.name,
                p.version,
                p.manifest.resources.len(),
                p.manifest.total_size(),
                out.display()
            );
            Ok(0)
        }
        Command::Run {
            spec,
            quiet,
            init_rollback_state,
            events,
        } => {
            let events = match events.as_deref().map(sealrun_launcher::events::Sink::open) {
                None => None,
                Some(Ok(s)) => Some(s),
                Some(Err(e)) => {
                    let shown = events.unwrap_or_default().display().to_string();
                    eprintln!(
                        "sealrun: error: --events {shown}: cannot open the event stream: {e}"
                    );
                    return Ok(sealrun_launcher::run::exit::USAGE);
                }
            };
            let opts = sealrun_launcher::run::RunOptions {
                quiet,
                init_rollback_state,
                events,
            };
            match sealrun_launcher::run::run_job(&spec, &opts) {
                Ok(s) => {
                    eprintln!(
                        "sealrun: {}: {}\nsealrun: record {}",
                        spec.display(),
                        sealrun_verifier::text::one_line(&s.message),
                        s.record.display()
                    );
                    Ok(s.status)
                }
                Err(e) => {
                    let shown = sealrun_verifier::text::one_line(&e.to_string());
                    eprintln!("sealrun: error: {shown}");
                    Ok(e.exit_status())
                }
            }
        }
        Command::Recover { path } => recover(&path),
        Command::Demo { dir } => {
            demo::run(dir.as_deref())?;
            Ok(0)
        }
        Command::Exec(args) => exec::run(args),
    }
}

/// `sealrun recover PATH`: the audit logs PATH names, each recovered; one line per run.
fn recover(path: &std::path::Path) -> Result<u8> {
    use sealrun_launcher::spec::Spec;
    let logs: Vec<PathBuf> = if path.is_dir() {
        let name = path.to_string_lossy();
        let log = name
            .strip_suffix(".runs")
            .or_else(|| name.strip_suffix(".runs/"))
            .with_context(|| {
                format!(
                    "{}: a folder must be an audit log's `AUDIT_LOG.runs` folder",
                    path.display()
                )
            })?;
        vec![PathBuf::from(log)]
    } else if path.extension().is_some_and(|e| e == "toml") {
        let mut logs: Vec<PathBuf> = match Spec::load(path)? {
            Spec::Job(j) => vec![j.audit_log],
            Spec::Pipeline(p) => p.stages.into_iter().map(|s| s.audit_log).collect(),
        };
        logs.dedup();
        logs
    } else {
        vec![path.to_path_buf()]
    };
    let mut status = 0;
    for log in logs {
        match sealrun_launcher::recover::recover_log(&log) {
            Ok(done) => {
                if done.is_empty() {
                    println!("{}: no run to recover", log.display());
                }
                for r in done {
                    if r.action == "failed" {
                        status = sealrun_launcher::run::exit::RECORD_FAILED;
                    }
                    println!("{}: {}", log.display(), r.line());
                }
            }
            Err(e) => {
                eprintln!("sealrun: error: {}: {e}", log.display());
                status = sealrun_launcher::run::exit::RECORD_FAILED;
            }
        }
    }
    Ok(status)
}
