//! `sealrun-verify`: the auditor's offline verifier. Thin: parse arguments,
//! call the library, map the outcome to an exit code.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use sealrun_verifier::artifact::{verify_artifact, VerifyError, VerifyOptions};
use sealrun_verifier::dsse;
use sealrun_verifier::exit;
use sealrun_verifier::keys::PublicKey;
use sealrun_verifier::policy::{Kind, Policy};
use sealrun_verifier::progress;

/// Verify sealrun artifacts offline: signatures, trust policy and every byte.
///
/// Exit codes: 0 verified; 1 does not verify (the message names the artifact,
/// the file and the reason); 2 bad usage or unreadable input.
#[derive(Parser)]
#[command(name = "sealrun-verify", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Verify a signed file or directory against a trust policy.
    ///
    /// Accepts sealrun signatures (`sealrun sign`) and OpenSSF model-signing
    /// bundles (`model_signing sign key`).
    ///
    /// Examples:
    ///   sealrun-verify artifact data/ --signature data.sig --trust trust.toml
    ///   sealrun-verify artifact model/ --signature model.sig --key signer.pub
    #[command(verbatim_doc_comment)]
    Artifact(ArtifactArgs),
}

#[derive(clap::Args)]
struct ArtifactArgs {
    /// The file or directory to verify.
    path: PathBuf,
    /// The signature (DSSE envelope or Sigstore bundle). Default: PATH.sig
    #[arg(long, short = 's')]
    signature: Option<PathBuf>,
    /// Trust policy (TOML) naming the trusted keys and what each may sign.
    #[arg(
        long,
        short = 't',
        required_unless_present = "key",
        conflicts_with = "key"
    )]
    trust: Option<PathBuf>,
    /// Shortcut: trust this one public key (PEM) for every kind and label.
    #[arg(long, short = 'k')]
    key: Option<PathBuf>,
    /// Require the artifact to be of this kind (dataset, features, code, model).
    /// For model-signing bundles, the kind to check the policy with (default model).
    #[arg(long)]
    kind: Option<Kind>,
    /// Admit only these label values, e.g. `--admit classification=public,internal`
    /// (repeatable; adds to the policy's [admit] table).
    #[arg(long, value_name = "LABEL=V1,V2")]
    admit: Vec<String>,
    /// Rollback protection: refuse a version lower than one recorded in this
    /// state file, and record the accepted version (created if missing).
    #[arg(long, value_name = "FILE")]
    state: Option<PathBuf>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Artifact(args) => run_artifact(args),
    }
}

fn load_policy(args: &ArtifactArgs) -> Result<Policy> {
    let mut policy = match (&args.trust, &args.key) {
        (Some(t), _) => Policy::load(t)?,
        (None, Some(k)) => {
            let pem = std::fs::read_to_string(k)
                .with_context(|| format!("cannot read public key {}", k.display()))?;
            let key = PublicKey::from_pem(&pem).with_context(|| format!("{}", k.display()))?;
            Policy::single_key(&k.display().to_string(), key)
        }
        (None, None) => anyhow::bail!("give --trust POLICY or --key PUBLIC_KEY"),
    };
    for a in &args.admit {
        let (k, v) = a
            .split_once('=')
            .with_context(|| format!("--admit {a:?}: expected LABEL=VALUE[,VALUE...]"))?;
        policy
            .admit
            .entry(k.to_string())
            .or_default()
            .extend(v.split(',').map(str::to_string));
    }
    Ok(policy)
}

fn run_artifact(args: ArtifactArgs) -> ExitCode {
    let json = args.json;
    let usage = |e: anyhow::Error| {
        if json {
            println!(
                "{}",
                serde_json::json!({"ok": false, "reason": "usage", "message": format!("{e:#}")})
            );
        }
        eprintln!("sealrun-verify: error: {e:#}");
        ExitCode::from(exit::USAGE)
    };
    let policy = match load_policy(&args) {
        Ok(p) => p,
        Err(e) => return usage(e),
    };
    let sig_path = args
        .signature
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("{}.sig", args.path.display())));
    if !args.path.exists() {
        return usage(anyhow::anyhow!(
            "{}: no such file or directory",
            args.path.display()
        ));
    }
    let sig = match dsse::read_limited(&sig_path) {
        Ok(s) => s,
        Err(e @ dsse::DsseError::Io { .. }) => return usage(e.into()),
        Err(e) => {
            return fail(
                json,
                &VerifyError::Envelope {
                    artifact: args.path.display().to_string(),
                    source: e,
                },
            )
        }
    };
    let bar = progress::bytes_bar("verifying", json);
    let opts = VerifyOptions {
        policy: &policy,
        now: time::OffsetDateTime::now_utc(),
        rollback: args.state.as_deref(),
        expected_kind: args.kind,
        progress: bar.as_ref(),
    };
    let result = verify_artifact(&args.path, &sig, &opts);
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    match result {
        Ok(v) => {
            if json {
                println!("{}", serde_json::json!({"ok": true, "artifact": v}));
            } else {
                let version = v.version.map(|n| format!(" v{n}")).unwrap_or_default();
                let labels: Vec<String> = v
                    .labels
                    .iter()
                    .map(|(k, val)| format!("{k}={val}"))
                    .collect();
                let labels = if labels.is_empty() {
                    String::new()
                } else {
                    format!(" [{}]", labels.join(" "))
                };
                println!(
                    "OK {} {:?}{version}{labels}: {} files, {} bytes, sha256:{} signed by {:?} ({} {}) [{}]",
                    v.kind,
                    v.name,
                    v.files,
                    v.bytes,
                    v.digest,
                    v.signer,
                    v.key_algorithm,
                    &v.keyid[..16],
                    v.format
                );
            }
            ExitCode::from(exit::OK)
        }
        Err(e) => fail(json, &e),
    }
}

fn fail(json: bool, e: &VerifyError) -> ExitCode {
    let code = if e.is_input_error() {
        exit::USAGE
    } else {
        exit::VERIFY_FAILED
    };
    if json {
        println!(
            "{}",
            serde_json::json!({"ok": false, "reason": e.kind(), "file": e.file(), "message": e.to_string()})
        );
    }
    eprintln!("sealrun-verify: FAILED ({}): {e}", e.kind());
    ExitCode::from(code)
}
