//! `sealrun demo`: the built-in end-to-end walk-through (the README's first
//! command). It works in a throwaway directory, or in `--dir` (kept), and
//! teaches what happens at each step.
//!
//! Guarantees: the demo only writes inside its own directory; every check it
//! shows is the real one (real keys, real signatures, the real `sealrun-verify`
//! binary), and it fails loudly if any step does not behave as shown. It keeps
//! what it shows: each run writes to a new `work/ID/` folder (nothing is
//! removed), the trained model stays there, and the tampered byte is put back
//! after the tamper step, so the dataset in DIR is as signed and every record
//! in it verifies afterwards.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use sealrun_verifier::digest::DEFAULT_SHARD_SIZE;
use sealrun_verifier::policy::Kind;

use crate::{keyfile, sign};

/// Print a numbered step.
fn step(n: u32, what: &str) {
    println!("\n[{n}] {what}");
}

/// Locate a sibling binary (`sealrun-verify` next to `sealrun`).
fn sibling(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot locate the sealrun binary")?;
    let p = exe.with_file_name(name);
    if !p.exists() {
        bail!(
            "{} not found next to {}; build both with `cargo build --release`",
            name,
            exe.display()
        );
    }
    Ok(p)
}

/// A small synthetic, linearly separable dataset (deterministic).
fn write_dataset(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir.join("train"))?;
    let mut f = std::fs::File::create(dir.join("train/points.csv"))?;
    writeln!(f, "x1,x2,label")?;
    let mut s: u64 = 0x5eed;
    for _ in 0..400 {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let x1 = ((s >> 33) % 2000) as f64 / 1000.0 - 1.0;
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let x2 = ((s >> 33) % 2000) as f64 / 1000.0 - 1.0;
        let label = u8::from(0.8 * x1 - 0.5 * x2 + 0.1 > 0.0);
        writeln!(f, "{x1:.3},{x2:.3},{label}")?;
    }
    std::fs::write(
        dir.join("README.txt"),
        "Synthetic points: label = 1 when 0.8*x1 - 0.5*x2 + 0.1 > 0.\n",
    )?;
    Ok(())
}

fn run_shown(cmd: &mut Command) -> Result<(bool, String)> {
    cmd.stdin(std::process::Stdio::null());
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for line in text.lines() {
        println!("    | {line}");
    }
    Ok((out.status.success(), text))
}

/// The three stages the demo runs in the sandbox.
const INGEST_PY: &str = include_str!("demo/ingest.py");
const FEATURES_PY: &str = include_str!("demo/features.py");
const TRAIN_PY: &str = include_str!("demo/train.py");

/// The demo pipeline: ingest -> features -> train, each stage in the sandbox.
const PIPELINE_TOML: &str = r#"# The demo pipeline: three stages, each a sandboxed job.
name = "demo-pipeline"
trust = "trust.toml"
signing_key = "keys/launcher.key"
# Copy and hash the dataset on every run, so that step 7 reads the tampered file (with the
# verified store, a later run would bind the copy verified in step 5; see docs/store.md).
store = "off"

[[stage]]
name = "ingest"
command = ["python3", "/code/ingest.py"]
code = "code/ingest"
output = "work/{invocation}/ingest"
produces = "dataset"
admit = { classification = ["public", "internal"] }
[[stage.input]]
name = "raw"
path = "dataset"
signature = "dataset.sig"
[stage.sandbox]
profile = "python"
memory = "256M"
pids = 32
timeout = "2m"

[[stage]]
name = "features"
command = ["python3", "/code/features.py"]
code = "code/features"
output = "work/{invocation}/features"
produces = "features"
[[stage.input]]
name = "clean"
from_stage = "ingest"
kind = "dataset"
[stage.sandbox]
profile = "python"
memory = "256M"
pids = 32
timeout = "2m"

[[stage]]
name = "train"
command = ["python3", "/code/train.py"]
code = "code/train"
output = "work/{invocation}/model"
produces = "model"
env = { EPOCHS = "300" }
[[stage.input]]
name = "features"
from_stage = "features"
kind = "features"
[stage.sandbox]
profile = "python"
memory = "256M"
pids = 32
timeout = "2m"
"#;

/// Run the demo in `dir` (created if needed; a temporary one if `None`).
pub fn run(dir: Option<&Path>) -> Result<()> {
    let mut tmp = None;
    let dir = match dir {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
            d.canonicalize()?
        }
        None => tmp
            .insert(tempfile::Builder::new().prefix("sealrun-demo-").tempdir()?)
            .path()
            .to_path_buf(),
    };
    let verify = sibling("sealrun-verify")?;
    // Run the separate offline verifier in the demo folder and show what it says.
    let offline = |args: &[&str]| run_shown(Command::new(&verify).current_dir(&dir).args(args));
    println!("sealrun demo in {}", dir.display());

    step(
        1,
        "generate two Ed25519 key pairs: the dataset registry's and this launcher's",
    );
    let keys = dir.join("keys");
    std::fs::create_dir_all(&keys)?;
    let reg = keyfile::generate(&keys.join("registry"), true)?;
    let launcher = keyfile::generate(&keys.join("launcher"), true)?;
    println!(
        "    registry key id {}, launcher key id {}",
        &reg.keyid[..16],
        &launcher.keyid[..16]
    );

    step(
        2,
        "write a synthetic dataset and sign it (kind dataset, labels, version 1)",
    );
    let data = dir.join("dataset");
    if data.exists() {
        std::fs::remove_dir_all(&data)?;
    }
    write_dataset(&data)?;
    let labels = [
        "classification=internal".to_string(),
        "pii=false".to_string(),
    ];
    let (sig, p) = sign::sign(&sign::SignRequest {
        path: &data,
        key: &reg.private,
        kind: Kind::Dataset,
        name: Some("demo-points".into()),
        labels: &labels,
        version: 1,
        expires: None,
        out: Some(dir.join("dataset.sig")),
        shard_size: DEFAULT_SHARD_SIZE,
        quiet: true,
    })?;
    println!(
        "    {} files hashed; DSSE envelope over an in-toto statement -> {}",
        p.manifest.resources.len(),
        sig.display()
    );

    step(3, "write the trust policy: who may sign what");
    std::fs::write(
        dir.join("trust.toml"),
        "# The registry may sign datasets labelled public/internal without PII;\n# the launcher may sign run records and audit checkpoints.\n[[key]]\nname = \"dataset-registry\"\npublic_key = \"keys/registry.pub\"\nkinds = [\"dataset\"]\n[key.labels]\nclassification = [\"public\", \"internal\"]\npii = [\"false\"]\n\n[[key]]\nname = \"launcher\"\npublic_key = \"keys/launcher.pub\"\nkinds = [\"record\", \"checkpoint\"]\n",
    )?;

    step(4, "verify the dataset offline with the separate verifier");
    let (good, _) = offline(&[
        "artifact",
        "dataset",
        "--signature",
        "dataset.sig",
        "--trust",
        "trust.toml",
    ])?;
    if !good {
        bail!("the untouched dataset did not verify");
    }

    step(
        5,
        "run the pipeline ingest -> features -> train: sealrun run pipeline.toml",
    );
    println!("    each stage runs in the sandbox (own namespaces, read-only root, no network, no");
    println!(
        "    capabilities, seccomp + Landlock, limits); its inputs are copied and re-verified"
    );
    println!("    first: the dataset against its signature, each stage's outputs against that");
    println!("    stage's signed record");
    for (stage, script, text) in [
        ("ingest", "ingest.py", INGEST_PY),
        ("features", "features.py", FEATURES_PY),
        ("train", "train.py", TRAIN_PY),
    ] {
        let d = dir.join("code").join(stage);
        std::fs::create_dir_all(&d)?;
        std::fs::write(d.join(script), text)?;
    }
    // Every run writes under work/{invocation}/ (a new folder), so nothing is ever removed.
    std::fs::write(dir.join("pipeline.toml"), PIPELINE_TOML)?;
    let pipeline = dir.join("pipeline.toml");
    let summary = crate::launch::run_job(&pipeline, &crate::run::RunOptions::default())?;
    println!("    {}", summary.message);
    if summary.status != 0 {
        bail!("the pipeline did not succeed (status {})", summary.status);
    }
    let report = crate::summary::report(&pipeline, &summary);
    let train_record = report.hand_over.clone();
    let model = report
        .stages
        .last()
        .and_then(|s| s.run.output.clone())
        .context("the train stage's record names no output folder")?;
    println!("    pipeline summary record: {}", summary.record.display());
    println!("    the model's record: {}", train_record.display());
    println!("    the model: {model}/model.json (kept)");

    step(6, "verify offline: the model's record and outputs, its chain of custody, the audit log, an AI-BOM, the release gate");
    let rec = train_record.display().to_string();
    let (ok_rec, _) = offline(&["record", &rec, "--trust", "trust.toml", "--outputs", &model])?;
    let (ok_chain, _) = offline(&[
        "chain",
        &rec,
        "--records",
        "records",
        "--trust",
        "trust.toml",
    ])?;
    let (ok_log, _) = offline(&["log", "audit.log", "--trust", "trust.toml"])?;
    let (ok_bom, _) = offline(&[
        "aibom",
        &rec,
        "--records",
        "records",
        "--trust",
        "trust.toml",
        "-o",
        "aibom.json",
    ])?;
    std::fs::write(
        dir.join("release-gate.toml"),
        "# Release only what ran clean: signed inputs, success, approved profile,\n# no denied syscalls, no egress attempts, no secret leaks.\ntrust = \"trust.toml\"\napproved_profiles = [\"python\"]\nmax_classification = \"internal\"\n",
    )?;
    let (ok_gate, _) = offline(&[
        "gate",
        &rec,
        "--policy",
        "release-gate.toml",
        "--records",
        "records",
    ])?;
    if !(ok_rec && ok_chain && ok_log && ok_bom && ok_gate) {
        bail!("the records, chain, audit log or release gate did not verify");
    }

    step(
        7,
        "flip one byte of the dataset, as a poisoning attacker would, and run again",
    );
    let target = data.join("train/points.csv");
    let signed = std::fs::read(&target)?;
    let mut bytes = signed.clone();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x01;
    std::fs::write(&target, &bytes)?;
    let again = crate::launch::run_job(&pipeline, &crate::run::RunOptions::default());
    // Put the signed bytes back whatever happened, so the dataset in DIR stays as signed.
    std::fs::write(&target, &signed)?;
    let again = again?;
    println!("    {}", again.message);
    if again.status != crate::run::exit::VERIFY_FAILED || !again.message.contains("digest mismatch")
    {
        bail!("the tampered dataset was not refused as expected");
    }
    println!("    refused before anything ran; the refusal is signed and in the audit log:");
    offline(&["log", "audit.log", "--trust", "trust.toml"])?;
    println!("    the byte is put back: the dataset verifies again, and so does every record");
    let (restored, _) = offline(&[
        "artifact",
        "dataset",
        "--signature",
        "dataset.sig",
        "--trust",
        "trust.toml",
    ])?;
    if !restored {
        bail!("the restored dataset did not verify");
    }

    if tmp.is_some() {
        println!("\ndemo passed. Its files were in a temporary folder, now removed; pass --dir DIR to keep them.");
    } else {
        println!("\ndemo passed. Files kept in {}", dir.display());
    }
    Ok(())
}
