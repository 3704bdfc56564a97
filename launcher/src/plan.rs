//! The plan: everything about a spec that can be checked before any input is
//! verified, checked first, and the output placeholders expanded.
//!
//! Guarantees: [`prepare`] runs before the launcher verifies, stages or records
//! anything; whatever it refuses is reported as `file:line:col: field: message`
//! (exit 64) and leaves no record and no audit entry. It checks, for a job and
//! for every stage of a pipeline: that the trust policy loads and allows the
//! signing key to sign both `record`s and `checkpoint`s (else the run would end
//! with a record nobody can verify); that the sandbox profile exists and
//! parses; and that the output folder (placeholders expanded) is new or empty.
//! `{invocation}`, `{name}`, `{date}` and `{rank}` in `output` are replaced by the run's
//! invocation id (the 12 characters in its record's name), the job's (stage's)
//! name, the UTC date (`YYYY-MM-DD`) and the Slurm task's rank (`{rank}` outside
//! Slurm, or ranks sharing one folder, are refused); the record's `externalParameters`
//! carry the expanded `output` and the spec's `output_template`.

use std::path::PathBuf;

use sealrun_verifier::policy::{Kind, Policy};

use crate::spec::{JobSpec, Location, Proof, Spec, SpecError};

/// The placeholders `output` may hold.
pub const PLACEHOLDERS: [&str; 4] = ["{invocation}", "{name}", "{date}", "{rank}"];

fn invalid(spec: &JobSpec, at: &str, message: String) -> SpecError {
    let loc = spec.locations.get(at).cloned().unwrap_or(Location {
        line: 0,
        col: 0,
        field: at.to_string(),
    });
    SpecError::Invalid {
        path: spec.file.clone(),
        line: loc.line,
        col: loc.col,
        field: loc.field,
        message,
    }
}

/// Replace the placeholders in `text` (`rank`: the Slurm task's, see [`slurm_output`]).
fn expand(text: &str, invocation: &str, name: &str, date: &str, rank: &str) -> String {
    text.replace("{invocation}", invocation)
        .replace("{name}", name)
        .replace("{date}", date)
        .replace("{rank}", rank)
}

/// What `{rank}` stands for: the Slurm task's rank. Outside Slurm `{rank}` is refused; under
/// Slurm with several ranks, an `output` that names neither `{rank}` nor `{invocation}` is
/// refused (the ranks would write into one folder).
fn slurm_output(job: &JobSpec, written: &str) -> Result<String, SpecError> {
    let rank = crate::slurm::RankIdentity::from_env()
        .map_err(|e| invalid(job, "output", e.to_string()))?;
    match rank {
        None if written.contains("{rank}") => Err(invalid(
            job,
            "output",
            format!("{written:?}: {{rank}} is the Slurm task's rank, and this is no Slurm task (SLURM_JOB_ID is not set)"),
        )),
        None => Ok(String::new()),
        Some(r)
            if r.0.world_size > 1
                && !written.contains("{rank}")
                && !written.contains("{invocation}") =>
        {
            Err(invalid(
                job,
                "output",
                format!("{written:?}: the {} ranks of Slurm job step {} would share this folder; put {{rank}} in it (e.g. \"out/rank-{{rank}}\")", r.0.world_size, r.step()),
            ))
        }
        Some(r) => Ok(r.0.rank.to_string()),
    }
}

/// Every `{...}` in `output` as written is one of [`PLACEHOLDERS`].
fn check_placeholders(written: &str) -> Result<(), String> {
    let mut rest = written;
    while let Some(i) = rest.find('{') {
        let tail = &rest[i..];
        match PLACEHOLDERS.iter().find(|p| tail.starts_with(*p)) {
            Some(p) => rest = &tail[p.len()..],
            None => {
                return Err(format!(
                    "{written:?}: unknown placeholder at {:?}; `output` may use {}",
                    tail.chars().take(16).collect::<String>(),
                    PLACEHOLDERS.join(", ")
                ))
            }
        }
    }
    Ok(())
}

/// The UTC date, `YYYY-MM-DD`.
fn today() -> String {
    let d = time::OffsetDateTime::now_utc().date();
    format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
}

/// Expand `output` of one job (its record shows both the template and the folder).
fn expand_output(job: &mut JobSpec, invocation: &str, date: &str) -> Result<PathBuf, SpecError> {
    let id = &invocation[..invocation.len().min(12)];
    let written = job
        .as_json
        .get("output")
        .and_then(|o| o.as_str())
        .unwrap_or_default()
        .to_string();
    check_placeholders(&written).map_err(|m| invalid(job, "output", m))?;
    let rank = slurm_output(job, &written)?;
    if !PLACEHOLDERS.iter().any(|p| written.contains(p)) {
        return Ok(job.output.clone());
    }
    // Only the part the spec wrote is expanded (the spec's folder may hold braces).
    let full = job.output.display().to_string();
    let base = full.strip_suffix(written.as_str()).unwrap_or("");
    let rel = expand(&written, id, &job.name, date, &rank);
    job.output = PathBuf::from(format!("{base}{rel}"));
    if let Some(o) = job.as_json.as_object_mut() {
        o.insert("output_template".into(), written.into());
        o.insert("output".into(), rel.into());
    }
    Ok(job.output.clone())
}

/// The signing key is one the trust policy allows to sign records and checkpoints.
fn check_signing_key(job: &JobSpec) -> Result<(), SpecError> {
    let key = crate::keyfile::load_signing_key(&job.signing_key)
        .map_err(|e| invalid(job, "signing_key", e.to_string()))?;
    let policy = Policy::load(&job.trust).map_err(|e| invalid(job, "trust", e.to_string()))?;
    let keyid = key.public().keyid();
    let entries = policy.lookup(&keyid);
    let missing: Vec<&str> = [Kind::Record, Kind::Checkpoint]
        .into_iter()
        .filter(|k| !entries.iter().any(|(t, _)| t.may_sign(*k)))
        .map(Kind::as_str)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let named = entries
        .first()
        .map(|(t, _)| format!("it is the policy's key {:?}, ", t.name))
        .unwrap_or_else(|| "the policy does not list it, ".into());
    Err(invalid(
        job,
        "signing_key",
        format!(
            "{} (key id {keyid}) may not sign {} under the trust policy {}: {named}so its records would not verify; add its public key as a [[key]] with kinds = [\"record\", \"checkpoint\"]",
            job.signing_key.display(),
            missing.join(" or "),
            job.trust.display()
        ),
    ))
}

/// The sandbox profile exists and parses.
fn check_profile(job: &JobSpec) -> Result<(), SpecError> {
    let r = sealrun_sandbox::ProfileRef::parse(&job.sandbox.profile);
    sealrun_sandbox::profile::load(&r)
        .and_then(|p| p.seccomp().map(|_| ()))
        .map_err(|e| {
            invalid(
                job,
                "sandbox.profile",
                format!(
                    "{e} (shipped profiles: {}; or a path to an OCI seccomp JSON, relative to the spec's folder)",
                    sealrun_sandbox::profile::SHIPPED.join(", ")
                ),
            )
        })
}

/// The output folder is new or an empty folder.
fn check_output(job: &JobSpec) -> Result<(), SpecError> {
    let out = &job.output;
    let Ok(meta) = std::fs::symlink_metadata(out) else {
        return Ok(());
    };
    let busy = if meta.is_dir() {
        std::fs::read_dir(out).map_or(true, |mut d| d.next().is_some())
    } else {
        true
    };
    if busy {
        return Err(invalid(
            job,
            "output",
            format!(
                "{}: output folder is not empty (or not a folder); every file in it would be attested as the job's output. Give a new folder, e.g. output = \"runs/{{date}}-{{invocation}}/model\"",
                out.display()
            ),
        ));
    }
    Ok(())
}

/// The GPUs asked for are defined by the host's CDI specs (read again, and applied, when the
/// sandbox is planned).
fn check_gpus(job: &JobSpec) -> Result<(), SpecError> {
    let Some(req) = &job.sandbox.gpus else {
        return Ok(());
    };
    sealrun_sandbox::cdi::load(
        &sealrun_sandbox::cdi::spec_dirs(),
        sealrun_sandbox::cdi::NVIDIA_GPU_KIND,
    )
    .and_then(|files| sealrun_sandbox::cdi::resolve(&files, req).map(drop))
    .map_err(|e| invalid(job, "sandbox.gpus", e.to_string()))
}

/// `network = "job"`: a Slurm task, run as root.
fn check_network(job: &JobSpec) -> Result<(), SpecError> {
    if job.sandbox.network != crate::spec::NetworkMode::Job {
        return Ok(());
    }
    let why = match crate::slurm::RankIdentity::from_env() {
        Err(e) => e.to_string(),
        Ok(None) => "\"job\" is the network of a Slurm job step's ranks, and this is no Slurm task (SLURM_JOB_ID is not set); use \"none\", or run under srun".into(),
        Ok(Some(_)) if !nix::unistd::geteuid().is_root() => "\"job\" needs root (the launcher makes the step's network namespace and clones the sandbox into it)".into(),
        Ok(Some(_)) => return Ok(()),
    };
    Err(invalid(job, "sandbox.network", why))
}

fn check_job(job: &JobSpec) -> Result<(), SpecError> {
    check_network(job)?;
    check_signing_key(job)?;
    check_profile(job)?;
    check_gpus(job)?;
    check_output(job)
}

/// Expand the output placeholders of `spec` for the run `invocation`, then check
/// the plan of the job or of every stage.
pub fn prepare(spec: &mut Spec, invocation: &str) -> Result<(), SpecError> {
    let date = today();
    match spec {
        Spec::Job(job) => {
            expand_output(job, invocation, &date)?;
            check_job(job)
        }
        Spec::Pipeline(p) => {
            let mut outputs: Vec<(String, PathBuf, PathBuf)> = Vec::new();
            for stage in &mut p.stages {
                let template = stage.output.clone();
                // A stage's inputs from earlier stages are their (expanded) outputs.
                for input in &mut stage.inputs {
                    if let Proof::Stage(from) = &input.proof {
                        if let Some((_, t, e)) = outputs.iter().find(|(n, _, _)| n == from) {
                            if input.path == *t {
                                input.path = e.clone();
                            }
                        }
                    }
                }
                let expanded = expand_output(stage, invocation, &date)?;
                outputs.push((stage.name.clone(), template, expanded));
            }
            p.stages.iter().try_for_each(check_job)
        }
    }
}
