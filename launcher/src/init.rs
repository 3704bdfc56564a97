//! `sealrun init [DIR]`: a working project to start from.
//!
//! Guarantees: a folder that holds anything is left untouched unless `--force`
//! is given; what is written is a complete project (two keys, a trust policy
//! naming both, a small dataset signed with labels, code, a job, a two-stage
//! pipeline, a release gate), so that `sealrun run job.toml` then succeeds and
//! `sealrun-verify gate` passes on its record. Private keys are written 0600.

use std::io::Write;
use std::path::{Path, PathBuf};

use sealrun_verifier::digest::DEFAULT_SHARD_SIZE;
use sealrun_verifier::policy::Kind;

use crate::{keyfile, sign};

/// Why `init` wrote nothing (or stopped part way, for I/O).
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("{0}: the folder is not empty; give a new or empty folder, or --force to write over the project files in it")]
    NotEmpty(PathBuf),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Key(#[from] keyfile::KeyFileError),
    #[error(transparent)]
    Sign(#[from] sign::SignError),
}

/// The project's files, relative to its folder (besides keys, dataset and signature).
const FILES: &[(&str, &str)] = &[
    ("trust.toml", include_str!("init/trust.toml")),
    ("job.toml", include_str!("init/job.toml")),
    ("pipeline.toml", include_str!("init/pipeline.toml")),
    ("gate.toml", include_str!("init/gate.toml")),
    ("code/train.py", include_str!("init/train.py")),
    ("code/prepare.py", include_str!("init/prepare.py")),
    ("NEXT-STEPS.txt", include_str!("init/NEXT-STEPS.txt")),
];

/// The labels the sample dataset is signed with.
pub const DATASET_LABELS: [&str; 2] = ["classification=internal", "pii=false"];

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> InitError + '_ {
    move |source| InitError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A small, deterministic, linearly separable dataset: `x1,x2,label` rows.
fn write_points(file: &Path, rows: usize) -> std::io::Result<()> {
    let mut f = std::io::BufWriter::new(std::fs::File::create(file)?);
    writeln!(f, "x1,x2,label")?;
    let mut s: u64 = 0x5eed;
    let mut next = || {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((s >> 33) % 2000) as f64 / 1000.0 - 1.0
    };
    for _ in 0..rows {
        let (x1, x2) = (next(), next());
        let label = u8::from(0.8 * x1 - 0.5 * x2 + 0.1 > 0.0);
        writeln!(f, "{x1:.3},{x2:.3},{label}")?;
    }
    f.flush()
}

/// Write a new project into `dir` (created if missing); returns the next-steps text.
pub fn init(dir: &Path, force: bool) -> Result<String, InitError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let non_empty = std::fs::read_dir(dir).map_err(io(dir))?.next().is_some();
    if non_empty && !force {
        return Err(InitError::NotEmpty(dir.to_path_buf()));
    }
    let keys = dir.join("keys");
    std::fs::create_dir_all(&keys).map_err(io(&keys))?;
    let registry = keyfile::generate(&keys.join("registry"), true)?;
    keyfile::generate(&keys.join("launcher"), true)?;
    for (rel, text) in FILES {
        let p = dir.join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        std::fs::write(&p, text).map_err(io(&p))?;
    }
    let data = dir.join("dataset");
    if data.exists() {
        std::fs::remove_dir_all(&data).map_err(io(&data))?;
    }
    std::fs::create_dir_all(&data).map_err(io(&data))?;
    let points = data.join("points.csv");
    write_points(&points, 200).map_err(io(&points))?;
    let labels = DATASET_LABELS.map(String::from);
    sign::sign(&sign::SignRequest {
        path: &data,
        key: &registry.private,
        kind: Kind::Dataset,
        name: Some("points".into()),
        labels: &labels,
        version: 1,
        expires: None,
        out: Some(dir.join("dataset.sig")),
        shard_size: DEFAULT_SHARD_SIZE,
        quiet: true,
    })?;
    Ok(include_str!("init/NEXT-STEPS.txt").to_string())
}
