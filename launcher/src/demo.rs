//! `sealrun demo`: the built-in end-to-end walk-through (the README's first
//! command). It works in a throwaway directory, or in `--dir` (kept), and
//! teaches what happens at each step.
//!
//! Guarantees: the demo only writes inside its own directory; every check it
//! shows is the real one (real keys, real signatures, the real `sealrun-verify`
//! binary), and it fails loudly if any step does not behave as shown.

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

/// Run the demo in `dir` (created if needed; a temporary one if `None`).
pub fn run(dir: Option<&Path>) -> Result<()> {
    let mut tmp = None;
    let dir = match dir {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
            d.to_path_buf()
        }
        None => tmp
            .insert(tempfile::Builder::new().prefix("sealrun-demo-").tempdir()?)
            .path()
            .to_path_buf(),
    };
    let verify = sibling("sealrun-verify")?;
    println!("sealrun demo in {}", dir.display());

    step(1, "generate the dataset registry's Ed25519 key pair");
    let keys = dir.join("keys");
    std::fs::create_dir_all(&keys)?;
    let kp = keyfile::generate(&keys.join("registry"), true)?;
    println!(
        "    registry key id {} (private key mode 0600)",
        &kp.keyid[..16]
    );

    step(
        2,
        "write a synthetic dataset and sign it (kind dataset, labels, version 1)",
    );
    let data = dir.join("dataset");
    write_dataset(&data)?;
    let labels = [
        "classification=internal".to_string(),
        "pii=false".to_string(),
    ];
    let (sig, p) = sign::sign(&sign::SignRequest {
        path: &data,
        key: &kp.private,
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
        "    {} files hashed, DSSE envelope over an in-toto statement -> {}",
        p.manifest.resources.len(),
        sig.display()
    );

    step(3, "write a trust policy: the registry key may sign datasets labelled internal/public, pii=false");
    let policy = dir.join("trust.toml");
    std::fs::write(
        &policy,
        "# Which keys are trusted, for what.\n[[key]]\nname = \"dataset-registry\"\npublic_key = \"keys/registry.pub\"\nkinds = [\"dataset\"]\n[key.labels]\nclassification = [\"public\", \"internal\"]\npii = [\"false\"]\n",
    )?;

    step(
        4,
        "verify offline with the separate verifier (sealrun-verify)",
    );
    let verify_cmd = || {
        let mut c = Command::new(&verify);
        c.current_dir(&dir).args([
            "artifact",
            "dataset",
            "--signature",
            "dataset.sig",
            "--trust",
            "trust.toml",
        ]);
        c
    };
    let (good, _) = run_shown(&mut verify_cmd())?;
    if !good {
        bail!("the untouched dataset did not verify");
    }

    step(
        5,
        "flip one byte of the dataset, as a poisoning attacker would, and verify again",
    );
    let target = data.join("train/points.csv");
    let mut bytes = std::fs::read(&target)?;
    let at = bytes.len() / 2;
    bytes[at] ^= 0x01;
    std::fs::write(&target, &bytes)?;
    let (bad, text) = run_shown(&mut verify_cmd())?;
    if bad || !text.contains("digest mismatch") {
        bail!("the tampered dataset was not refused as expected");
    }
    println!("    refused: the error names the artifact, the file and both digests");

    if tmp.is_some() {
        println!("\ndemo passed. Its files were in a temporary folder, now removed; pass --dir DIR to keep them.");
    } else {
        println!("\ndemo passed. Files kept in {}", dir.display());
    }
    Ok(())
}
