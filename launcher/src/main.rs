//! `sealrun`: thin front end. Parse arguments, call one library function,
//! map the outcome to an exit code.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{CommandFactory, Parser, Subcommand};
use sealrun_launcher::{
    confidential_cmd, config, demo, exec, history, init, keyfile, sign, store_cmd, summary,
};
use sealrun_verifier::digest::DEFAULT_SHARD_SIZE;
use sealrun_verifier::policy::{Kind, Policy};

/// musl's allocator returns every freed block of 64 KiB and up to the kernel at once: decrypting
/// an age file (a fresh 64 KiB buffer per chunk) cost an mmap, a munmap, 16 page faults and a
/// TLB shootdown per 64 KiB, half of the run's CPU time. dlmalloc (pure Rust, the port std uses
/// on wasm) keeps freed blocks for reuse. (Its blocks start at any 16-byte boundary: the I/O
/// buffers that the kernel copies file data into or out of are page-aligned where they are
/// made, see `copyhash` and `decrypt`.) The sandbox's child allocates nothing after its clone
/// (see sealrun-sandbox's `child`), so the allocator's lock never matters there.
#[global_allocator]
static ALLOCATOR: dlmalloc::GlobalDlmalloc = dlmalloc::GlobalDlmalloc;

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
    /// Start a project: keys, a trust policy, a small signed dataset, code, a
    /// job, a two-stage pipeline and a release gate, ready to run.
    ///
    /// Example: sealrun init myproject && cd myproject && sealrun run job.toml
    Init {
        /// The project folder (default: the current one); must be new or empty.
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// Write into a folder that is not empty (replacing the project's files).
        #[arg(long)]
        force: bool,
    },
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
        /// When the signature expires: a date (2027-01-31, its start in UTC) or an
        /// RFC 3339 time (2027-01-31T00:00:00Z).
        #[arg(long, value_parser = parse_rfc3339)]
        expires: Option<time::OffsetDateTime>,
        /// Artifact name (default: the file or directory name).
        #[arg(long)]
        name: Option<String>,
        /// Where to write the envelope (default: PATH.sig).
        #[arg(long, short = 'o')]
        out: Option<PathBuf>,
        /// Print one JSON object on stdout instead of text.
        #[arg(long)]
        json: bool,
        /// Files larger than this many bytes are hashed in parallel shards.
        #[arg(long, default_value_t = DEFAULT_SHARD_SIZE, hide = true)]
        shard_size: u64,
        /// Reuse the digests in OLD.sig (signed by this key) of files whose size,
        /// mtime, ctime and inode are unchanged since it was made (as OLD.sig.stat,
        /// written next to every signature, recorded them); hash the rest. The signer
        /// trusts its own disk for this: a change that restores all four is not seen.
        /// Verification never takes this shortcut: it hashes every file.
        #[arg(long, value_name = "OLD.sig")]
        incremental: Option<PathBuf>,
    },
    /// Run a job: verify every input, run it in the sandbox, hash the outputs,
    /// sign a run record and append it to the audit log.
    ///
    /// Exit status: the job's own status (128+N for signal N); 64 invalid spec,
    /// policy or key (nothing verified, no record); 65 an input did not verify
    /// (nothing ran); 66 the job succeeded but a secret leaked; 67 the job
    /// succeeded but some outputs could not be attested; 124 timeout; 125 sandbox
    /// setup failed; 74 the record could not be written.
    ///
    /// The job runs with /out (the output folder) as its working directory, the
    /// inputs read-only under /inputs/NAME, the code at /code, and an environment
    /// of a fixed allowlist plus the spec's [env] (see docs/jobs.md).
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
        /// Print one JSON object (the summary) on stdout; implies --quiet.
        #[arg(long)]
        json: bool,
    },
    /// List the runs in a records folder, newest first: time, job, invocation,
    /// result, inputs, outputs, denied syscalls, egress attempts, leaks.
    ///
    /// Example: sealrun runs --records records --trust trust.toml
    Runs {
        /// The records folder (default: records/ in the current folder).
        #[arg(long, value_name = "DIR")]
        records: Option<PathBuf>,
        /// Verify every record's signature against this trust policy.
        #[arg(long, value_name = "POLICY")]
        trust: Option<PathBuf>,
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Print one run for a person: inputs with signers and labels, sandbox
    /// settings, limits and use, end, outputs and events.
    ///
    /// Example: sealrun show records/train-50f83f8354cb.json --trust trust.toml
    Show {
        /// The run record.
        record: PathBuf,
        /// Verify the record's signature against this trust policy.
        #[arg(long, value_name = "POLICY")]
        trust: Option<PathBuf>,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Print a shell completion script: bash, zsh, fish, elvish or powershell.
    ///
    /// Examples:
    ///   sealrun completions bash > /etc/bash_completion.d/sealrun
    ///   sealrun completions zsh > "${fpath[1]}/_sealrun"
    ///   sealrun completions fish > ~/.config/fish/completions/sealrun.fish
    #[command(verbatim_doc_comment)]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Write man pages (roff) for sealrun and each of its commands into DIR.
    ///
    /// Example: sealrun man --out /usr/local/share/man/man1
    Man {
        /// The folder to write sealrun.1 and sealrun-COMMAND.1 into (created if missing).
        #[arg(long, short = 'o', value_name = "DIR")]
        out: PathBuf,
    },
    /// Show the defaults specs get from config files (trust policy, signing key,
    /// records, audit log), and which file each came from: sealrun.toml in the
    /// spec's folder, then $XDG_CONFIG_HOME/sealrun/config.toml.
    ///
    /// Example: sealrun config myproject
    Config {
        /// A spec's folder, or a spec (default: the current folder).
        #[arg(default_value = ".")]
        path: PathBuf,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
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
    /// The verified store of signed inputs: `verify` re-hashes every entry, `gc`
    /// removes unused ones (see docs/store.md).
    Store(store_cmd::StoreArgs),
    /// Seal one Slurm job step: a signed job record over every rank record (exit 65, naming
    /// what is missing, unless exactly WORLD_SIZE rank records exist; exit 1 if a rank failed).
    ///
    /// Example (in the batch script, after `srun sealrun run job.toml`):
    ///   sealrun seal-job --records records --spec job.toml
    #[command(verbatim_doc_comment)]
    SealJob(sealrun_launcher::slurm::seal::SealArgs),
    /// The TPM: enroll an attestation key, show status (see docs/attestation.md).
    Tpm(sealrun_launcher::tpm::cli::TpmArgs),
    /// Run a command in the sandbox (namespaces, read-only root, seccomp,
    /// Landlock, no network, no capabilities, limits).
    Exec(exec::ExecArgs),
    /// Encrypt a (signed) dataset folder for launchers: every file NAME becomes NAME.age,
    /// files in parallel (see docs/confidential.md).
    ///
    /// Example: sealrun encrypt data --recipient age1… --out data.enc
    Encrypt(confidential_cmd::EncryptArgs),
    /// The launcher's decryption identity: `new` makes one, `recipient` prints what data
    /// owners encrypt to (see docs/confidential.md).
    Identity(confidential_cmd::IdentityArgs),
    /// Decrypt and verify an encrypted dataset as a run would, without running a job: the
    /// plaintext goes to a tmpfs no path reaches and is dropped at the end (needs root).
    /// Exit 0, or 65 naming why a run would refuse it.
    ///
    /// Example: sealrun check-encrypted data.enc --signature data.sig --trust trust.toml \
    ///     --identity launcher.ageid
    #[command(verbatim_doc_comment)]
    CheckEncrypted(confidential_cmd::CheckArgs),
}

fn parse_rfc3339(s: &str) -> Result<time::OffsetDateTime, String> {
    sealrun_launcher::units::parse_time(s)
}

/// Man pages from the same definitions as `--help`: sealrun.1 and sealrun-COMMAND.1.
fn write_man_pages(dir: &std::path::Path) -> Result<usize> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let cmd = Cli::command();
    let mut pages = vec![("sealrun".to_string(), cmd.clone())];
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        let name = format!("sealrun-{}", sub.get_name());
        let bin = format!("sealrun {}", sub.get_name());
        pages.push((name.clone(), sub.clone().display_name(name).bin_name(bin)));
    }
    for (name, page) in &pages {
        let mut buf = Vec::new();
        clap_mangen::Man::new(page.clone()).render(&mut buf)?;
        let file = dir.join(format!("{name}.1"));
        std::fs::write(&file, buf).with_context(|| format!("cannot write {}", file.display()))?;
    }
    Ok(pages.len())
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    sealrun_verifier::text::error_chain(e)
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
                sealrun_verifier::text::no_repeats(&sealrun_verifier::text::error_chain(
                    e.as_ref()
                ))
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
            json,
            shard_size,
            incremental,
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
            let signed = sign::sign_incremental(&req, incremental.as_deref());
            if let (Err(e), true) = (&signed, json) {
                let error = sealrun_verifier::text::no_repeats(&format!(
                    "cannot sign {}: {}",
                    path.display(),
                    error_chain(e)
                ));
                println!("{}", serde_json::json!({"ok": false, "error": error}));
                return Ok(1);
            }
            let (out, p, hashed) =
                signed.with_context(|| format!("cannot sign {}", path.display()))?;
            if json {
                let obj = serde_json::json!({
                    "ok": true,
                    "signature": out,
                    "name": p.name,
                    "kind": p.kind,
                    "version": p.version,
                    "labels": p.labels,
                    "expires": p.expires,
                    "files": p.manifest.resources.len(),
                    "bytes": p.manifest.total_size(),
                    "root": format!("sha256:{}", p.manifest.root_digest().to_hex()),
                    "rehashed": incremental.is_some().then_some(hashed),
                });
                println!("{obj}");
                return Ok(0);
            }
            println!(
                "signed {} {:?} v{}: {} files, {} bytes -> {}",
                p.kind,
                p.name,
                p.version,
                p.manifest.resources.len(),
                p.manifest.total_size(),
                out.display()
            );
            if incremental.is_some() {
                println!(
                    "incremental: rehashed {hashed} of {} files (the others unchanged since the old signature)",
                    p.manifest.resources.len()
                );
            }
            Ok(0)
        }
        Command::Run {
            spec,
            quiet,
            init_rollback_state,
            events,
            json,
        } => run_cmd(&spec, quiet, init_rollback_state, events, json),
        command @ (Command::Init { .. }
        | Command::Runs { .. }
        | Command::Show { .. }
        | Command::Completions { .. }
        | Command::Man { .. }
        | Command::Config { .. }) => first_hour_cmd(command),
        Command::Recover { path } => recover(&path),
        Command::Demo { dir } => {
            demo::run(dir.as_deref())?;
            Ok(0)
        }
        Command::Exec(args) => exec::run(args),
        Command::Store(args) => store_cmd::run(args),
        Command::Encrypt(args) => Ok(confidential_cmd::encrypt(args)),
        Command::Identity(args) => Ok(confidential_cmd::identity(args)),
        Command::CheckEncrypted(args) => Ok(confidential_cmd::check(args)),
        Command::SealJob(args) => Ok(sealrun_launcher::slurm::seal::run(args)),
        Command::Tpm(args) => sealrun_launcher::tpm::cli::run(args),
    }
}

/// `sealrun run`: run the job, then print its summary (text on stderr, or one JSON object).
fn run_cmd(
    spec: &std::path::Path,
    quiet: bool,
    init_rollback_state: bool,
    events: Option<PathBuf>,
    json: bool,
) -> Result<u8> {
    let events = match events.as_deref().map(sealrun_launcher::events::Sink::open) {
        None => None,
        Some(Ok(s)) => Some(s),
        Some(Err(e)) => {
            let shown = events.unwrap_or_default().display().to_string();
            eprintln!("sealrun: error: --events {shown}: cannot open the event stream: {e}");
            return Ok(sealrun_launcher::run::exit::USAGE);
        }
    };
    let opts = sealrun_launcher::run::RunOptions {
        quiet: quiet || json,
        init_rollback_state,
        events,
        invocation: None,
        secrets: None,
    };
    match sealrun_launcher::launch::run_job(spec, &opts) {
        Ok(s) => {
            let rep = summary::report(spec, &s);
            if json {
                println!("{}", summary::json(&rep));
            } else {
                eprint!("{}", summary::text(&rep));
            }
            Ok(s.status)
        }
        Err(e) => {
            let shown = sealrun_verifier::text::no_repeats(&sealrun_verifier::text::one_line(
                &e.to_string(),
            ));
            if json {
                println!("{}", summary::json_error(spec, e.exit_status(), &shown));
            } else {
                eprintln!("sealrun: error: {shown}");
            }
            Ok(e.exit_status())
        }
    }
}

/// The commands of the first hour: init, runs, show, completions, man, config.
fn first_hour_cmd(command: Command) -> Result<u8> {
    match command {
        Command::Init { dir, force } => match init::init(&dir, force) {
            Ok(next) => {
                println!("wrote a sealrun project in {}\n\n{next}", dir.display());
                Ok(0)
            }
            Err(e) => {
                eprintln!("sealrun: error: {e}");
                Ok(match e {
                    init::InitError::NotEmpty(_) => sealrun_launcher::run::exit::USAGE,
                    _ => 1,
                })
            }
        },
        Command::Runs {
            records,
            trust,
            json,
        } => {
            let policy = trust.as_deref().map(Policy::load).transpose()?;
            let dir = records.unwrap_or_else(|| PathBuf::from("records"));
            let (entries, skipped) = history::list(&dir, policy.as_ref())?;
            if json {
                let obj = serde_json::json!({"ok": true, "records": dir, "runs": entries, "skipped": skipped});
                println!("{obj}");
            } else {
                print!("{}", history::table(&entries));
                for s in &skipped {
                    eprintln!("sealrun: skipped {}", sealrun_verifier::text::one_line(s));
                }
            }
            Ok(0)
        }
        Command::Show {
            record,
            trust,
            json,
        } => {
            let policy = trust.as_deref().map(Policy::load).transpose()?;
            let e = history::entry(&record, policy.as_ref())?;
            if json {
                println!("{}", serde_json::to_string(&e)?);
            } else {
                print!("{}", history::show(&e));
            }
            Ok(if e.verified == Some(false) { 1 } else { 0 })
        }
        Command::Completions { shell } => {
            let mut cmd = Cli::command();
            clap_complete::generate(shell, &mut cmd, "sealrun", &mut std::io::stdout());
            Ok(0)
        }
        Command::Man { out } => {
            let written = write_man_pages(&out)?;
            println!("wrote {} man page(s) into {}", written, out.display());
            Ok(0)
        }
        Command::Config { path, json } => {
            let dir = if path.is_file() {
                path.parent()
                    .filter(|p| !p.as_os_str().is_empty())
                    .map_or_else(|| PathBuf::from("."), PathBuf::from)
            } else {
                path
            };
            let c = config::load(&dir)?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({"ok": true, "dir": dir, "config": c, "user_file": config::user_file()})
                );
            } else {
                print!("{}", config::show(&dir, &c));
            }
            Ok(0)
        }
        _ => unreachable!("first_hour_cmd is called with its own commands only"),
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
