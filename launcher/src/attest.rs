//! Attestation: turn what happened in a run into a signed SLSA Provenance v1
//! record (DSSE, in-toto Statement v1), written atomically.
//!
//! Guarantees: the record lists every output file as a subject (symlinks and
//! special files are listed as byproducts with their link text, never followed);
//! it carries the inputs with digest, kind, labels and signer, the code and
//! executable digests, the job's Python interpreter (digest) and every distribution
//! installed in its virtualenv (purl, `RECORD` digest), the sandbox profile and BPF digests, limits, the end
//! reason, resource use and every refused action; it never contains a secret
//! value (the spec's secret sources are excluded from externalParameters).

use std::collections::BTreeMap;
use std::path::Path;

use sealrun_sandbox::Outcome;
use sealrun_verifier::artifact::Verified;
use sealrun_verifier::digest::Digest;
use sealrun_verifier::keys::SigningKey;
use sealrun_verifier::outputs::Outputs;
use sealrun_verifier::record;
use sealrun_verifier::record::{
    BuildDefinition, BuildMetadata, Builder, Provenance, PythonEnvironment, PythonPackage,
    ResourceDescriptor, RunDetails, BUILD_TYPE,
};
use sealrun_verifier::statement::Subject;

use crate::audit::{self, AuditWriteError, Event};
use crate::spec::JobSpec;

/// A verified input, as recorded.
#[derive(Debug, Clone)]
pub struct RecordedInput {
    pub name: String,
    pub host_path: String,
    pub mount: String,
    pub verified: Verified,
    /// What vouched for it: a copy is kept in `records/artifacts/SHA.json`.
    pub proof: record::ProofRef,
    /// How an encrypted input was decrypted (`None` for a plaintext one).
    pub decryption: Option<record::Decryption>,
}

/// Everything the record is built from.
#[derive(Debug)]
pub struct RunFacts<'a> {
    pub spec: &'a JobSpec,
    pub invocation: &'a str,
    pub started_on: String,
    pub finished_on: String,
    pub builder_id: String,
    pub inputs: &'a [RecordedInput],
    pub code_digest: Option<Digest>,
    pub executable: Option<(String, Digest)>,
    pub internal: record::InternalParameters,
    pub outcome: Option<&'a Outcome>,
    /// `succeeded`, `failed: ...`, `refused: ...`.
    pub result: String,
    /// Why a run was refused, as a stable name (the record's `end.refusal`).
    pub refusal: Option<&'static str>,
    /// `(stream, log file, digest of the file, annotations)`.
    pub logs: Vec<(String, String, Digest, record::RunLog)>,
    pub outputs: Option<&'a Outputs>,
    pub extra_byproducts: Vec<ResourceDescriptor>,
    /// The job's virtualenv and interpreter, and every distribution installed in it.
    pub python: Option<(PythonEnvironment, Vec<PythonPackage>)>,
}

fn rd(name: &str) -> ResourceDescriptor {
    ResourceDescriptor {
        name: Some(name.to_string()),
        ..Default::default()
    }
}

fn sha(d: &Digest) -> BTreeMap<String, String> {
    BTreeMap::from([("sha256".to_string(), d.to_hex())])
}

/// The spec as recorded: secret sources removed.
pub fn external_parameters(spec: &JobSpec) -> serde_json::Value {
    let mut v = spec.as_json.clone();
    if let Some(secrets) = v.get_mut("secrets").and_then(|s| s.as_object_mut()) {
        for (_, s) in secrets.iter_mut() {
            if let Some(o) = s.as_object_mut() {
                o.remove("from");
            }
        }
    }
    v
}

/// `resolvedDependencies`: the inputs, the code, the executable, the job's Python, the CDI
/// spec files.
fn dependencies(f: &RunFacts) -> Vec<ResourceDescriptor> {
    let mut deps = Vec::new();
    for i in f.inputs {
        let v = &i.verified;
        let notes = record::InputAnnotation {
            artifact: v.name.clone(),
            kind: v.kind,
            version: v.version,
            labels: v.labels.clone(),
            signer: v.signer.clone(),
            keyid: v.keyid.clone(),
            format: v.format.to_string(),
            mount: i.mount.clone(),
            proof: i.proof.clone(),
            encrypted: i.decryption.is_some(),
            decryption: i.decryption.clone().map(Box::new),
        };
        deps.push(ResourceDescriptor {
            uri: Some(format!("file:{}", i.host_path)),
            digest: BTreeMap::from([("sha256".to_string(), v.digest.clone())]),
            ..ResourceDescriptor::annotated(&i.name, &notes)
        });
    }
    if let Some(d) = &f.code_digest {
        deps.push(ResourceDescriptor {
            digest: sha(d),
            uri: f
                .spec
                .code
                .as_ref()
                .map(|c| format!("file:{}", c.display())),
            ..ResourceDescriptor::annotated(
                record::CODE_DEPENDENCY,
                &record::CodeAnnotation {
                    mount: crate::spec::CODE_MOUNT.into(),
                    digest_of: record::CODE_DIGEST_OF.into(),
                },
            )
        });
    }
    if let Some((path, d)) = &f.executable {
        deps.push(ResourceDescriptor {
            digest: sha(d),
            uri: Some(format!("file:{path}")),
            ..rd(record::EXECUTABLE_DEPENDENCY)
        });
    }
    if let Some((env, packages)) = &f.python {
        deps.push(env.to_descriptor());
        deps.extend(packages.iter().map(PythonPackage::to_descriptor));
    }
    // The CDI spec files the run's GPUs came from (`internalParameters.gpus`).
    if let Some(g) = &f.internal.gpus {
        for s in &g.cdi_specs {
            deps.push(ResourceDescriptor {
                digest: [("sha256".to_string(), s.sha256.clone())].into(),
                uri: Some(format!("file:{}", s.path)),
                ..rd(record::CDI_SPEC_DEPENDENCY)
            });
        }
    }
    deps
}

/// `byproducts`: `end` first, then the logs, the sandbox report, the outputs' non-files and
/// what the run added (summary, artifact, secrets, interrupt).
fn byproducts(f: &RunFacts) -> Vec<ResourceDescriptor> {
    let mut byproducts = Vec::new();
    for (name, path, d, notes) in &f.logs {
        byproducts.push(ResourceDescriptor {
            digest: sha(d),
            uri: Some(format!("file:{path}")),
            media_type: Some("text/plain".into()),
            ..ResourceDescriptor::annotated(name, &record::LogNotes::Run(notes.clone()))
        });
    }
    let mut end = record::End {
        result: f.result.clone(),
        reason: f.result.clone(),
        refusal: f.refusal.map(str::to_string),
        ran: None,
    };
    if let Some(o) = f.outcome {
        end.reason = end_reason_text(o);
        end.ran = Some(record::Ran {
            end: end_reason(&o.end),
            exit_status: o.exit_status().into(),
            wall_ms: o.wall_ms,
            cpu_user_ms: o.cpu_user_ms,
            cpu_sys_ms: o.cpu_sys_ms,
            peak_memory_bytes: o.peak_memory_bytes,
        });
        byproducts.push(ResourceDescriptor::annotated(
            record::SANDBOX_BYPRODUCT,
            &sandbox_report(o),
        ));
    }
    byproducts.insert(
        0,
        ResourceDescriptor::annotated(record::END_BYPRODUCT, &end),
    );
    if let Some(out) = f.outputs {
        if !out.other.is_empty() {
            let listed = record::NonFiles {
                not_followed: out
                    .other
                    .iter()
                    .map(|n| record::NonFileEntry {
                        path: n.path.clone(),
                        kind: n.kind.to_string(),
                        target: n.target.clone(),
                    })
                    .collect(),
            };
            byproducts.push(ResourceDescriptor::annotated(
                record::NON_FILES_BYPRODUCT,
                &listed,
            ));
        }
    }
    byproducts.extend(f.extra_byproducts.iter().cloned());
    byproducts
}

/// The subjects: every output file, or (none) the spec under a name no output can have.
fn subjects(f: &RunFacts) -> Vec<Subject> {
    let mut subjects: Vec<Subject> = f
        .outputs
        .map(|o| {
            o.files
                .resources
                .iter()
                .map(|r| Subject {
                    name: r.path.clone(),
                    digest: sha(&r.digest),
                })
                .collect()
        })
        .unwrap_or_default();
    if subjects.is_empty() {
        // in-toto needs a subject: a run with no outputs attests its spec, under
        // a name no output path can have (output subjects are relative paths).
        let spec_bytes = std::fs::read(&f.spec.file).unwrap_or_default();
        let file = Path::new(&f.spec.file)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "job.toml".into());
        subjects.push(Subject {
            name: format!("{}{file}", sealrun_verifier::record::SPEC_SUBJECT_PREFIX),
            digest: sha(&Digest::of(&spec_bytes)),
        });
    }
    subjects
}

/// Build the subjects and provenance of a run.
/// The record's builder: this launcher (`id`), with its version.
pub fn builder(id: String) -> Builder {
    Builder {
        id,
        version: BTreeMap::from([("sealrun".to_string(), env!("CARGO_PKG_VERSION").to_string())]),
    }
}

/// The builder id of a record a launcher writes without a host's run (pipeline, job seal).
pub fn key_builder_id(key: &sealrun_verifier::keys::SigningKey) -> String {
    format!(
        "https://sealrun.dev/launcher/v1?keyid={}",
        key.public().keyid()
    )
}

/// internalParameters that say which launcher wrote a record (its version and digest); every
/// other field empty, for the caller to fill.
pub fn launcher_internal() -> record::InternalParameters {
    record::InternalParameters {
        launcher_version: Some(env!("CARGO_PKG_VERSION").into()),
        launcher_sha256: crate::launcher_sha256().into(),
        ..Default::default()
    }
}

pub fn provenance(f: &RunFacts) -> (Vec<Subject>, Provenance) {
    let deps = dependencies(f);
    let byproducts = byproducts(f);
    let subjects = subjects(f);
    let prov = Provenance {
        build_definition: BuildDefinition {
            build_type: BUILD_TYPE.to_string(),
            external_parameters: external_parameters(f.spec),
            internal_parameters: record::to_annotations(&f.internal),
            resolved_dependencies: deps,
        },
        run_details: RunDetails {
            builder: builder(f.builder_id.clone()),
            metadata: BuildMetadata {
                invocation_id: f.invocation.to_string(),
                started_on: f.started_on.clone(),
                finished_on: f.finished_on.clone(),
            },
            byproducts,
        },
    };
    (subjects, prov)
}

/// The sandbox's end reason in the record's schema.
fn end_reason(e: &sealrun_sandbox::EndReason) -> record::EndReason {
    use sealrun_sandbox::EndReason as S;
    match *e {
        S::Exited { code } => record::EndReason::Exited { code },
        S::Signaled { signal } => record::EndReason::Signaled { signal },
        S::Timeout => record::EndReason::Timeout,
        S::OomKilled => record::EndReason::OomKilled,
        S::PidsLimit { status } => record::EndReason::PidsLimit { status },
    }
}

/// The `sandbox` byproduct: what the sandbox refused the job.
fn sandbox_report(o: &Outcome) -> record::SandboxReport {
    record::SandboxReport {
        denied_syscalls: o
            .denied_syscalls
            .iter()
            .map(|d| record::DeniedSyscall {
                name: d.name.clone(),
                count: d.count,
            })
            .collect(),
        egress_attempts: o
            .egress_attempts
            .iter()
            .map(|e| record::EgressAttempt {
                syscall: e.syscall.clone(),
                family: e.family.clone(),
                address: e.address.clone(),
            })
            .collect(),
        peer_connects: o
            .peer_connects
            .iter()
            .map(|e| record::EgressAttempt {
                syscall: e.syscall.clone(),
                family: e.family.clone(),
                address: e.address.clone(),
            })
            .collect(),
        landlock: record::LandlockReport {
            abi: o.landlock.abi,
            status: o.landlock.status.clone(),
        },
    }
}

/// A short text for the end reason: `exited 0`, `signal 9`, `timeout`, `oom-killed`, `pids-limit`.
pub fn end_reason_text(o: &Outcome) -> String {
    use sealrun_sandbox::EndReason;
    match &o.end {
        EndReason::Exited { code } => format!("exited {code}"),
        EndReason::Signaled { signal } => format!("signal {signal}"),
        EndReason::Timeout => "timeout".into(),
        EndReason::OomKilled => "oom-killed".into(),
        EndReason::PidsLimit { status } => format!("pids-limit (status {status})"),
    }
}

/// Where a record goes, and the audit log entry that names it.
#[derive(Debug)]
pub struct Destination<'a> {
    /// The record file (written atomically).
    pub path: &'a Path,
    pub audit_log: &'a Path,
    /// The audit entry's `event` (`end`, `refused`, `pipeline`).
    pub event: &'a str,
    pub job: &'a str,
    pub invocation: &'a str,
    /// The audit entry's `outcome`.
    pub outcome: String,
    /// The run's TPM: a measured run's record is quoted before the audit entry, which then
    /// names the evidence (see [`crate::tpm::attest::quote_slot`]).
    pub tpm: Option<&'a crate::tpm::attest::Slot>,
}

/// A record that could not be written, or its audit entry not appended.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("{}: {source}", path.display())]
    Write {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Audit(#[from] AuditWriteError),
    /// `[attestation] tpm = "required"` and the quote failed: the record and its audit entry
    /// are written, without evidence.
    #[error("{0}")]
    Quote(String),
}

/// Sign a record, write it atomically, then append the audit entry that names it by digest:
/// the one way a run, a refusal and a pipeline summary are published. Returns the record's
/// digest.
pub fn publish(
    subjects: Vec<Subject>,
    prov: &Provenance,
    key: &SigningKey,
    to: Destination,
) -> Result<Digest, PublishError> {
    let bytes = record::sign_record(subjects, prov, key).to_json();
    sealrun_verifier::rollback::write_atomic(to.path, &bytes).map_err(|source| {
        PublishError::Write {
            path: to.path.to_path_buf(),
            source,
        }
    })?;
    let (evidence, quote_failed) = to.tpm.map_or((None, None), |slot| {
        crate::tpm::attest::quote_slot(slot, to.invocation, to.path, &bytes)
    });
    crate::recover::test_pause("appending");
    let digest = Digest::of(&bytes);
    audit::append(
        to.audit_log,
        &Event {
            event: to.event,
            job: to.job,
            invocation: to.invocation,
            record: Some(digest),
            evidence,
            outcome: to.outcome,
        },
        key,
    )?;
    match quote_failed {
        Some(msg) => Err(PublishError::Quote(msg)),
        None => Ok(digest),
    }
}
