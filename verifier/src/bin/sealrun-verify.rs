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
use sealrun_verifier::{audit, chain, lineage, progress, record};

/// musl's allocator (the static release build's) returns large freed blocks to the kernel at
/// once: parsing a signature of 10,000 files then costs page faults for every buffer it grows.
/// dlmalloc (pure Rust, the port std uses on wasm) keeps freed memory for reuse. (Its blocks
/// start at any 16-byte boundary; the read buffers are page-aligned, see `digest::PageBuf`.)
#[global_allocator]
static ALLOCATOR: dlmalloc::GlobalDlmalloc = dlmalloc::GlobalDlmalloc;

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
    /// Verify a signed run record: signature, a key allowed to sign records,
    /// the SLSA Provenance v1 shape, and with --outputs every output file.
    ///
    /// Example:
    ///   sealrun-verify record records/train-1234.json --trust trust.toml --outputs out/
    #[command(verbatim_doc_comment)]
    Record(RecordArgs),
    /// Verify an audit log: the hash chain and its signed checkpoint. Names the
    /// first bad sequence number if an entry was modified, deleted, reordered,
    /// inserted, or the log was cut short.
    ///
    /// Example:
    ///   sealrun-verify log audit.log --trust trust.toml
    #[command(verbatim_doc_comment)]
    Log(LogArgs),
    /// Verify the chain of custody of a run record: every producer record and
    /// dataset signature it depends on, found by digest in the records folder,
    /// back to trusted signed datasets; print the provenance graph.
    ///
    /// Example:
    ///   sealrun-verify chain records/train-1234.json --records records --trust trust.toml --format dot
    #[command(verbatim_doc_comment)]
    Chain(ChainArgs),
    /// Verify a Slurm job seal (`sealrun seal-job`): its signature, every rank record it
    /// names (found by digest in the records folder, each the rank the seal says), and each
    /// rank's chain of custody. A failed job verifies; the output says which ranks failed.
    ///
    /// Example:
    ///   sealrun-verify job records/slurm-42.0.job.json --records records --trust trust.toml
    #[command(verbatim_doc_comment)]
    Job(ChainArgs),
    /// Write an AI bill of materials (CycloneDX 1.6 JSON) for a verified chain:
    /// the model with its hashes, its datasets with their classification, the
    /// code of every stage and the launcher.
    ///
    /// Example:
    ///   sealrun-verify aibom records/train-1234.json --records records --trust trust.toml -o aibom.json
    #[command(verbatim_doc_comment)]
    Aibom(AibomArgs),
    /// Release gate: exit 0 only if the chain verifies and every run in it meets
    /// the gate policy (signed inputs, success, approved sandbox profile, no
    /// denied syscalls or egress attempts, no secret leaks).
    ///
    /// Example:
    ///   sealrun-verify gate records/train-1234.json --policy release-gate.toml
    #[command(verbatim_doc_comment)]
    Gate(GateArgs),
    /// Lineage: every run and final output (model) downstream of a signed
    /// artifact, a run record or a signing key, through stage chains,
    /// from_record hand-overs and pipelines, each with its signature status
    /// and (with --gate) its gate verdict under the current policy. Keeps an
    /// index, DIR/.lineage-index.json, refreshed on every query.
    ///
    /// Examples:
    ///   sealrun-verify lineage --records records --trust trust.toml --artifact sha256:81ab…
    ///   sealrun-verify lineage --records records --trust trust.toml --key registry --gate gate.toml --format json
    #[command(verbatim_doc_comment)]
    Lineage(LineageArgs),
}

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("start").required(true).args(["artifact", "record", "key_id"])))]
struct LineageArgs {
    /// The records folder (searched recursively, with its artifacts/).
    #[arg(long)]
    records: PathBuf,
    /// Trust policy (TOML): signatures are verified, and names resolved, with it.
    #[arg(long = "trust", short = 't')]
    policy: PathBuf,
    /// Start from a signed artifact: sha256:ROOT (its manifest root digest).
    #[arg(long, value_name = "sha256:ROOT")]
    artifact: Option<String>,
    /// Start from a run record: its file, or sha256:DIGEST of the file.
    #[arg(long, value_name = "REC")]
    record: Option<String>,
    /// Start from a signing key: a key name of the policy, or a key id.
    #[arg(long = "key", value_name = "KEYID")]
    key_id: Option<String>,
    /// Evaluate this gate policy on every final output (default: not evaluated).
    #[arg(long, value_name = "GATE.toml")]
    gate: Option<PathBuf>,
    /// Ignore the saved index and read every file again.
    #[arg(long)]
    rebuild_index: bool,
    /// Output: readable text, Graphviz dot, or JSON.
    #[arg(long, value_enum, default_value_t = GraphFormat::Text)]
    format: GraphFormat,
}

/// Whom to trust: a policy file, or one key for everything.
#[derive(clap::Args)]
struct TrustArgs {
    /// Trust policy (TOML) naming the trusted keys and what each may sign.
    #[arg(
        long = "trust",
        short = 't',
        required_unless_present = "key",
        conflicts_with = "key"
    )]
    policy: Option<PathBuf>,
    /// Shortcut: trust this one public key (PEM) for every kind and label.
    #[arg(long, short = 'k')]
    key: Option<PathBuf>,
}

#[derive(clap::Args)]
struct AibomArgs {
    /// The run record of the model.
    record: PathBuf,
    /// The records folder (producer records and signatures).
    #[arg(long)]
    records: PathBuf,
    #[command(flatten)]
    trust: TrustArgs,
    /// Write the document here (default: standard output).
    #[arg(long, short = 'o')]
    out: Option<PathBuf>,
}

#[derive(clap::Args)]
struct GateArgs {
    /// The run (or pipeline) record to gate.
    record: PathBuf,
    /// The gate policy (TOML): `trust = "trust.toml"`, `approved_profiles = [...]`, ...
    #[arg(long)]
    policy: PathBuf,
    /// The records folder (default: the record's folder).
    #[arg(long)]
    records: Option<PathBuf>,
    /// Also check that the files in this directory are exactly the record's outputs
    /// (check `outputs_on_disk`; the record must be a run's, not a pipeline summary).
    #[arg(long, value_name = "DIR")]
    outputs: Option<PathBuf>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct ChainArgs {
    /// The run record at the end of the chain (e.g. the model's).
    record: PathBuf,
    /// The records folder holding producer records and signatures (records/artifacts/).
    #[arg(long)]
    records: PathBuf,
    #[command(flatten)]
    trust: TrustArgs,
    /// Output: readable text, Graphviz dot, or JSON.
    #[arg(long, value_enum, default_value_t = GraphFormat::Text)]
    format: GraphFormat,
    /// Every run record in the chain must have TPM evidence that verifies (evidence that is
    /// present is always checked).
    #[arg(long)]
    require_tpm: bool,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum GraphFormat {
    Text,
    Dot,
    Json,
}

#[derive(clap::Args)]
struct RecordArgs {
    /// The record (DSSE envelope) to verify.
    record: PathBuf,
    #[command(flatten)]
    trust: TrustArgs,
    /// Check that the files in this directory are exactly the record's subjects.
    #[arg(long)]
    outputs: Option<PathBuf>,
    /// Exit 1 unless the recorded run succeeded (a refused or failed run's record
    /// verifies, and is reported as REFUSED or FAILED, exit 0, without this).
    #[arg(long)]
    require_success: bool,
    /// Exit 1 unless the record has TPM evidence (`NAME-ID.quote.json`) that verifies
    /// (evidence that is present is always checked).
    #[arg(long)]
    require_tpm: bool,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct LogArgs {
    /// The audit log (JSON lines); its checkpoint is read from LOG.checkpoint.
    log: PathBuf,
    #[command(flatten)]
    trust: TrustArgs,
    /// Accept a log without a checkpoint (truncation then goes undetected).
    #[arg(long)]
    no_checkpoint: bool,
    /// Accept entries after the signed checkpoint (left by a launcher that
    /// crashed between appending and re-signing). They are UNSIGNED: anyone who
    /// can write the log could have written them; they are listed as such.
    #[arg(long)]
    allow_unsigned_tail: bool,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct ArtifactArgs {
    /// The file or directory to verify.
    path: PathBuf,
    /// The signature (DSSE envelope or Sigstore bundle). Default: PATH.sig
    #[arg(long, short = 's')]
    signature: Option<PathBuf>,
    #[command(flatten)]
    trust: TrustArgs,
    /// Require the artifact to be of this kind (dataset, features, code, model).
    /// For model-signing bundles, the kind to check the policy with (default model).
    #[arg(long)]
    kind: Option<Kind>,
    /// Admit only these label values, e.g. `--admit classification=public,internal`
    /// (repeatable; adds to the policy's [admit] table).
    #[arg(long, value_name = "LABEL=V1,V2")]
    admit: Vec<String>,
    /// Rollback protection: refuse a version lower than one recorded in this
    /// state file, and record the accepted version. The file must exist (see
    /// --init-state). Not for model-signing bundles, which carry no version.
    #[arg(long, value_name = "FILE")]
    state: Option<PathBuf>,
    /// Make a new, empty --state file first (refused if it exists: remove it
    /// to reset it on purpose).
    #[arg(long, requires = "state")]
    init_state: bool,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Artifact(args) => run_artifact(args),
        Command::Record(args) => run_record(args),
        Command::Log(args) => run_log(args),
        Command::Chain(args) => run_chain(args),
        Command::Aibom(args) => run_aibom(args),
        Command::Gate(args) => run_gate(args),
        Command::Job(args) => run_job(args),
        Command::Lineage(args) => run_lineage(args),
    }
}

fn run_aibom(args: AibomArgs) -> ExitCode {
    let policy = match policy_from(&args.trust) {
        Ok(p) => p,
        Err(e) => return usage_error(false, e),
    };
    let (bytes, index) = match read_record_and_index(&args.record, &args.records) {
        Ok(x) => x,
        Err(e) => return usage_error(false, e),
    };
    let name = args.record.display().to_string();
    let chain = match chain::verify_chain(&name, &bytes, &index, &policy) {
        Ok(c) => c,
        Err(e) => return failed(false, e.kind(), e.to_string(), serde_json::json!({})),
    };
    let graph = chain.graph;
    warn_all(&graph.warnings);
    // The top record, verified with its chain.
    let Some(top) = chain.records.get(&graph.root) else {
        return usage_error(false, anyhow::anyhow!("{name}: not in its own chain"));
    };
    let now = sealrun_verifier::text::now_rfc3339();
    let doc = sealrun_verifier::aibom::build(&graph, top, &now);
    let mut text = serde_json::to_string_pretty(&doc).expect("json");
    text.push('\n');
    match &args.out {
        Some(path) => {
            if let Err(e) = sealrun_verifier::rollback::write_atomic(path, text.as_bytes()) {
                return usage_error(false, anyhow::anyhow!("{}: {e}", path.display()));
            }
            eprintln!("wrote CycloneDX 1.6 AI-BOM to {}", path.display());
        }
        None => print!("{text}"),
    }
    ExitCode::from(exit::OK)
}

fn read_record_and_index(
    record: &std::path::Path,
    records: &std::path::Path,
) -> Result<(Vec<u8>, chain::Index)> {
    let bytes = dsse::read_limited(record)?;
    let index = chain::Index::from_dir(records)?;
    Ok((bytes, index))
}

/// `gate --outputs DIR`: the files in DIR are exactly the gated record's outputs.
fn outputs_violation(
    name: &str,
    bytes: &[u8],
    trust: &sealrun_verifier::policy::Policy,
    dir: &std::path::Path,
) -> Option<sealrun_verifier::gate::Violation> {
    let stage = record::parse_unverified(bytes)
        .map(|r| r.job_name().to_string())
        .unwrap_or_default();
    let detail = match record::parse_unverified(bytes) {
        Some(r) if r.is_pipeline() => Some(format!(
            "{name} is a pipeline summary; give --outputs with the record of the stage that wrote {}",
            dir.display()
        )),
        _ => record::verify_record(name, bytes, trust, Some(dir))
            .err()
            .map(|e| e.to_string()),
    }?;
    Some(sealrun_verifier::gate::Violation {
        stage,
        check: "outputs_on_disk",
        detail,
    })
}

fn run_gate(args: GateArgs) -> ExitCode {
    let (gate, trust) = match sealrun_verifier::gate::load(&args.policy) {
        Ok(x) => x,
        Err(e) => return usage_error(args.json, e.into()),
    };
    let records = args.records.clone().unwrap_or_else(|| {
        args.record
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("."))
    });
    let (bytes, index) = match read_record_and_index(&args.record, &records) {
        Ok(x) => x,
        Err(e) => return usage_error(args.json, e),
    };
    let name = args.record.display().to_string();
    match sealrun_verifier::gate::evaluate(&name, &bytes, &index, &gate, &trust) {
        Ok(mut v) => {
            if let Some(dir) = &args.outputs {
                if let Some(x) = outputs_violation(&name, &bytes, &trust, dir) {
                    v.passed = false;
                    v.violations.push(x);
                }
            }
            warn_all(&v.warnings);
            if args.json {
                println!("{}", serde_json::json!({"ok": v.passed, "verdict": v}));
            } else if v.passed {
                println!(
                    "PASS gate {}: {} run(s) checked, chain verified, no violations",
                    args.policy.display(),
                    v.stages_checked
                );
            } else {
                for x in &v.violations {
                    eprintln!(
                        "sealrun-verify: gate: stage {:?}: {}: {}",
                        x.stage, x.check, x.detail
                    );
                }
                eprintln!(
                    "sealrun-verify: FAILED (gate): {} violation(s) in {} run(s)",
                    v.violations.len(),
                    v.stages_checked
                );
            }
            ExitCode::from(if v.passed {
                exit::OK
            } else {
                exit::VERIFY_FAILED
            })
        }
        Err(sealrun_verifier::gate::GateError::Chain(e)) => {
            failed(args.json, e.kind(), e.to_string(), serde_json::json!({}))
        }
        Err(e) => usage_error(args.json, e.into()),
    }
}

fn run_job(args: ChainArgs) -> ExitCode {
    let json = matches!(args.format, GraphFormat::Json);
    let policy = match policy_from(&args.trust) {
        Ok(p) => p,
        Err(e) => return usage_error(json, e),
    };
    let bytes = match dsse::read_limited(&args.record) {
        Ok(b) => b,
        Err(e) => return usage_error(json, e.into()),
    };
    let index = match chain::Index::from_dir(&args.records) {
        Ok(i) => i,
        Err(e) => return usage_error(json, e.into()),
    };
    let name = args.record.display().to_string();
    match sealrun_verifier::job::verify_job(&name, &bytes, &index, &policy) {
        Ok(r) if json => {
            println!("{}", serde_json::json!({"ok": true, "job": r}));
            ExitCode::from(exit::OK)
        }
        Ok(r) => {
            let s = &r.seal;
            println!(
                "OK job seal verified: Slurm job {} step {}, {} rank(s), signed by {}; job {}",
                s.job_id,
                s.step_id,
                s.world_size,
                r.signer,
                if s.failed_ranks.is_empty() {
                    "succeeded"
                } else {
                    "FAILED"
                }
            );
            for (rank, nodes) in s.ranks.iter().zip(&r.chain_nodes) {
                println!(
                    "  rank {} on {} (local {}): {} [{}; chain of {nodes} nodes verified]{}",
                    rank.rank,
                    sealrun_verifier::text::Esc(&rank.node),
                    rank.local_rank,
                    sealrun_verifier::text::one_line(&rank.result),
                    rank.record,
                    if rank.egress_refused.is_empty() {
                        String::new()
                    } else {
                        format!("; refused connects: {}", rank.egress_refused.join(", "))
                    }
                );
            }
            ExitCode::from(exit::OK)
        }
        Err(e) => failed(json, e.kind(), e.to_string(), serde_json::json!({})),
    }
}

fn run_chain(args: ChainArgs) -> ExitCode {
    let json = matches!(args.format, GraphFormat::Json);
    let policy = match policy_from(&args.trust) {
        Ok(p) => p,
        Err(e) => return usage_error(json, e),
    };
    let bytes = match dsse::read_limited(&args.record) {
        Ok(b) => b,
        Err(e) => return usage_error(json, e.into()),
    };
    let index = match chain::Index::from_dir(&args.records) {
        Ok(i) => i,
        Err(e) => return usage_error(json, e.into()),
    };
    match chain::verify_chain(&args.record.display().to_string(), &bytes, &index, &policy)
        .map(|c| c.graph)
    {
        Ok(g) => {
            warn_all(&g.warnings);
            let tpm = sealrun_verifier::tpm_evidence::check_chain(
                &args.record,
                &bytes,
                &g,
                &index,
                &policy,
                args.require_tpm,
            );
            if let Some((stage, e)) = tpm.into_iter().next() {
                let msg = format!("stage {stage:?}: TPM evidence: {e}");
                return failed(json, e.failure.name(), msg, serde_json::json!({}));
            }
            match args.format {
                GraphFormat::Text => {
                    println!(
                        "OK chain of custody verified ({} nodes, {} links):",
                        g.nodes.len(),
                        g.edges.len()
                    );
                    print!("{}", g.to_text());
                }
                GraphFormat::Dot => print!("{}", g.to_dot()),
                GraphFormat::Json => println!("{}", serde_json::json!({"ok": true, "graph": g})),
            }
            ExitCode::from(exit::OK)
        }
        Err(e) => failed(json, e.kind(), e.to_string(), serde_json::json!({})),
    }
}

fn lineage_start(args: &LineageArgs, policy: &Policy) -> Result<lineage::Start> {
    use sealrun_verifier::revocation::digest_hex;
    if let Some(a) = &args.artifact {
        let d = digest_hex(a)
            .with_context(|| format!("--artifact {a:?} is not sha256:<64 hex digits>"))?;
        return Ok(lineage::Start::Artifact(d));
    }
    if let Some(r) = &args.record {
        if let Some(d) = digest_hex(r) {
            return Ok(lineage::Start::Record(d));
        }
        let bytes = dsse::read_limited(std::path::Path::new(r))?;
        return Ok(lineage::Start::Record(
            sealrun_verifier::digest::Digest::of(&bytes).to_hex(),
        ));
    }
    let k = args.key_id.as_deref().unwrap_or_default();
    if let Some(t) = policy.keys.iter().find(|t| t.name == k) {
        return Ok(lineage::Start::Key {
            keyid: t.key.keyid(),
            name: Some(k.to_string()),
        });
    }
    let keyid = digest_hex(k).with_context(|| {
        format!("--key {k:?} is neither a key name of the policy nor a key id (64 hex digits)")
    })?;
    let name = policy
        .keys
        .iter()
        .find(|t| t.key.keyid() == keyid)
        .map(|t| t.name.clone());
    Ok(lineage::Start::Key { keyid, name })
}

fn run_lineage(args: LineageArgs) -> ExitCode {
    let json = matches!(args.format, GraphFormat::Json);
    let policy = match Policy::load(&args.policy) {
        Ok(p) => p,
        Err(e) => return usage_error(json, e.into()),
    };
    let gate = match args
        .gate
        .as_deref()
        .map(sealrun_verifier::gate::load)
        .transpose()
    {
        Ok(g) => g,
        Err(e) => return usage_error(json, e.into()),
    };
    let start = match lineage_start(&args, &policy) {
        Ok(s) => s,
        Err(e) => return usage_error(json, e),
    };
    let t0 = std::time::Instant::now();
    let gate_ref = gate.as_ref().map(|(g, t)| (g, t));
    let l = match lineage::lineage(&args.records, &start, &policy, gate_ref, args.rebuild_index) {
        Ok(l) => l,
        Err(e) => return usage_error(json, e.into()),
    };
    if let Some(w) = &l.refresh.write_error {
        eprintln!("sealrun-verify: warning: lineage index not saved ({w}); the next query reads every file again");
    }
    eprintln!(
        "sealrun-verify: lineage index: {} file(s) reused, {} read, {} removed; answered in {:.3}s",
        l.refresh.reused,
        l.refresh.read,
        l.refresh.removed,
        t0.elapsed().as_secs_f64()
    );
    match args.format {
        GraphFormat::Text => print!("{}", l.to_text()),
        GraphFormat::Dot => print!("{}", l.to_dot()),
        GraphFormat::Json => println!("{}", serde_json::json!({"ok": true, "lineage": l})),
    }
    ExitCode::from(exit::OK)
}

fn policy_from(t: &TrustArgs) -> Result<Policy> {
    match (&t.policy, &t.key) {
        (Some(t), _) => Ok(Policy::load(t)?),
        (None, Some(k)) => {
            use sealrun_verifier::fsread::{read_bounded_string, Follow, MAX_KEY_BYTES};
            let pem = read_bounded_string(k, "public key", MAX_KEY_BYTES, Follow::Yes)?;
            let key = PublicKey::from_pem(&pem).with_context(|| format!("{}", k.display()))?;
            Ok(Policy::single_key(&k.display().to_string(), key))
        }
        (None, None) => anyhow::bail!("give --trust POLICY or --key PUBLIC_KEY"),
    }
}

/// Print each warning on stderr (they are also in the JSON output).
fn warn_all(warnings: &[String]) {
    for w in warnings {
        eprintln!("sealrun-verify: warning: {w}");
    }
}

fn usage_error(json: bool, e: anyhow::Error) -> ExitCode {
    if json {
        println!(
            "{}",
            serde_json::json!({"ok": false, "reason": "usage", "message": sealrun_verifier::text::error_chain(e.as_ref())})
        );
    }
    eprintln!(
        "sealrun-verify: error: {}",
        sealrun_verifier::text::error_chain(e.as_ref())
    );
    ExitCode::from(exit::USAGE)
}

fn failed(json: bool, kind: &str, message: String, extra: serde_json::Value) -> ExitCode {
    if json {
        let mut v = serde_json::json!({"ok": false, "reason": kind, "message": message});
        if let (Some(o), Some(x)) = (v.as_object_mut(), extra.as_object()) {
            o.extend(x.clone());
        }
        println!("{v}");
    }
    eprintln!("sealrun-verify: FAILED ({kind}): {message}");
    ExitCode::from(if kind == "unreadable" {
        exit::USAGE
    } else {
        exit::VERIFY_FAILED
    })
}

fn run_record(args: RecordArgs) -> ExitCode {
    let policy = match policy_from(&args.trust) {
        Ok(p) => p,
        Err(e) => return usage_error(args.json, e),
    };
    let bytes = match dsse::read_limited(&args.record) {
        Ok(b) => b,
        Err(e) => return usage_error(args.json, e.into()),
    };
    let name = args.record.display().to_string();
    match record::verify_record(&name, &bytes, &policy, args.outputs.as_deref()) {
        Ok(v) => {
            let p = &v.statement.predicate;
            // What it used directly (its chain needs `chain`, which has the records folder).
            for dep in &v.contents.dependencies {
                if let Some(r) = policy.revoked_input(dep) {
                    let input = dep.name();
                    let msg = format!("record {name:?}: input {input:?}: {r}");
                    return failed(args.json, "revoked", msg, serde_json::json!({}));
                }
            }
            let tpm = match check_tpm(&args.record, &bytes, &v, &policy, args.require_tpm) {
                Ok(t) => t,
                Err(e) => {
                    let msg = format!("record {name:?}: TPM evidence: {e}");
                    return failed(args.json, e.failure.name(), msg, serde_json::json!({}));
                }
            };
            let (end, result) = (&v.contents.end.reason, v.contents.end.result.clone());
            let ending = sealrun_verifier::runinfo::Ending::of(&result);
            let succeeded = ending == sealrun_verifier::runinfo::Ending::Succeeded;
            let ok = succeeded || !args.require_success;
            // A refused or failed run's record verifies; its first word says how the run went.
            let word = if succeeded { "OK" } else { ending.word() };
            if args.json {
                println!(
                    "{}",
                    serde_json::json!({"ok": ok, "record": name, "signer": v.signer, "keyid": v.keyid,
                        "invocation": p.run_details.metadata.invocation_id, "end": end,
                        "result": ending, "run_result": result,
                        "subjects": v.statement.subject.len(), "outputs_checked": args.outputs.is_some(),
                        "attestation": tpm.as_ref().map_or("software-key", |_| "tpm-quote"),
                        "tpm": tpm.as_ref().map(|t| serde_json::json!({"ak": t.ak, "tpm": t.tpm, "launcher_sha256": t.launcher_sha256, "firmware_version": t.firmware_version})),
                        "statement": v.statement})
                );
            } else {
                // "FAILED record R (signature verified; the run failed: exited 3): run …".
                let how = if succeeded {
                    String::new()
                } else {
                    format!(
                        " (signature verified; the run {})",
                        sealrun_verifier::text::one_line(&result)
                    )
                };
                println!(
                    "{word} record {name}{how}: run {} by {:?} ({}), {} output file(s){}, ended: {end}; signed by {:?} ({})",
                    p.run_details.metadata.invocation_id,
                    v.job_name(),
                    p.run_details.builder.id,
                    v.statement.subject.len(),
                    if args.outputs.is_some() { " verified on disk" } else { "" },
                    v.signer,
                    &v.keyid[..16]
                );
                println!("{}", tpm_line(tpm.as_ref()));
            }
            ExitCode::from(if ok { exit::OK } else { exit::VERIFY_FAILED })
        }
        Err(e) => failed(args.json, e.kind(), e.to_string(), serde_json::json!({})),
    }
}

/// The record's TPM evidence, checked (see `tpm_evidence::check_record`).
fn check_tpm(
    path: &std::path::Path,
    bytes: &[u8],
    v: &record::VerifiedRecord,
    policy: &sealrun_verifier::policy::Policy,
    require: bool,
) -> Result<
    Option<sealrun_verifier::tpm_evidence::CheckedEvidence>,
    sealrun_verifier::tpm_evidence::EvidenceError,
> {
    use sealrun_verifier::tpm_evidence::{check_record, EvidenceError, Failure};
    let m = v
        .contents
        .internal
        .tpm_measurement()
        .map_err(|detail| EvidenceError {
            failure: Failure::Malformed,
            detail,
        })?;
    check_record(path, bytes, m, policy, require)
}

/// "attestation: ..." for people.
fn tpm_line(t: Option<&sealrun_verifier::tpm_evidence::CheckedEvidence>) -> String {
    match t {
        None => "attestation: software-key (no TPM evidence: the record's trust rests on the launcher key file alone)".into(),
        Some(t) => format!(
            "attestation: tpm-quote verified: AK {:?} on {} {}{}; PCR 23 replays (launcher sha256:{})",
            t.ak,
            t.tpm.manufacturer,
            t.tpm.vendor,
            if t.tpm.software { " (a SOFTWARE TPM: proves nothing about hardware)" } else { "" },
            t.launcher_sha256
        ),
    }
}

fn run_log(args: LogArgs) -> ExitCode {
    let policy = match policy_from(&args.trust) {
        Ok(p) => p,
        Err(e) => return usage_error(args.json, e),
    };
    let opts = audit::LogOptions {
        require_checkpoint: !args.no_checkpoint,
        allow_unsigned_tail: args.allow_unsigned_tail,
    };
    match audit::verify_log(&args.log, &policy, opts) {
        Ok(s) => {
            if let (Some(first), Some(last)) = (s.unsigned_tail.first(), s.unsigned_tail.last()) {
                eprintln!(
                    "sealrun-verify: warning: audit log {}: entry {first} to entry {last} are after the signed checkpoint: UNSIGNED, anyone who can write the log could have written them",
                    args.log.display()
                );
            }
            if args.json {
                println!(
                    "{}",
                    serde_json::json!({"ok": true, "log": args.log.display().to_string(), "summary": s})
                );
            } else {
                println!(
                    "OK audit log {}: {} entries, head sha256:{}, {} finished run(s), {} refusal(s), checkpoint at entry {}{}{}{}",
                    args.log.display(),
                    s.entries,
                    s.head,
                    s.runs_finished,
                    s.refusals,
                    s.checkpoint_seq.map(|n| n.to_string()).unwrap_or_else(|| "none".into()),
                    if s.unsigned_tail.is_empty() {
                        String::new()
                    } else {
                        format!("; {} UNSIGNED entries after it", s.unsigned_tail.len())
                    },
                    if s.unfinished.is_empty() {
                        String::new()
                    } else {
                        format!("; UNFINISHED run(s): {}", s.unfinished.join(", "))
                    },
                    if s.aborted.is_empty() {
                        String::new()
                    } else {
                        format!(
                            "; {} ABORTED run(s) (launcher died, closed by recovery): {}",
                            s.aborted.len(),
                            s.aborted.join(", ")
                        )
                    }
                );
            }
            ExitCode::from(exit::OK)
        }
        Err(e) => failed(
            args.json,
            e.kind(),
            e.to_string(),
            serde_json::json!({"first_bad_seq": e.first_bad_seq()}),
        ),
    }
}

fn load_policy(args: &ArtifactArgs) -> Result<Policy> {
    let mut policy = policy_from(&args.trust)?;
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
                serde_json::json!({"ok": false, "reason": "usage", "message": sealrun_verifier::text::error_chain(e.as_ref())})
            );
        }
        eprintln!(
            "sealrun-verify: error: {}",
            sealrun_verifier::text::error_chain(e.as_ref())
        );
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
        Err(e @ dsse::DsseError::Io(_)) => return usage(e.into()),
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
    if let Some(state) = &args.state {
        if sealrun_verifier::model_signing::is_bundle(&sig) {
            return usage(anyhow::anyhow!(
                "--state: {} is a model-signing bundle, which carries no version: rollback protection cannot apply to it; verify without --state",
                sig_path.display()
            ));
        }
        use sealrun_verifier::rollback::{RollbackError, RollbackState};
        if args.init_state {
            if let Err(e) = RollbackState::init(state) {
                return usage(e.into());
            }
        } else if !state.exists() {
            let path = state.clone();
            return usage(RollbackError::Missing { path }.into());
        }
    }
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
