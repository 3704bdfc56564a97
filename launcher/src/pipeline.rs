//! Multi-stage pipelines: `[[stage]]`s run in order, each a job; a stage's
//! inputs may be signed datasets or the outputs of an earlier stage.
//!
//! Guarantees: before a stage starts, every earlier stage output it consumes is
//! copied, then re-verified byte for byte against that stage's signed record and
//! its chain (a change between stages stops the pipeline, naming the stage, the
//! file and the reason); the first stage that does not succeed stops the
//! pipeline; the pipeline gets a signed summary record whose subjects are the
//! stage records by digest, and whose dependencies let `sealrun-verify chain`
//! walk every stage back to its signed datasets.

use std::collections::BTreeMap;
use std::path::PathBuf;

use sealrun_verifier::digest::Digest;
use sealrun_verifier::record::{
    to_annotations, BuildDefinition, BuildMetadata, End, PipelineExternalParameters, ProofKind,
    ProofRef, Provenance, ResourceDescriptor, RunDetails, StageAnnotation, END_BYPRODUCT,
    PIPELINE_BUILD_TYPE,
};
use sealrun_verifier::statement::Subject;

use crate::run::{run_spec, RunError, RunOptions, RunSummary};
use crate::spec::PipelineSpec;
use crate::{keyfile, now_rfc3339};

/// Run every stage of `p` in order; returns the summary.
pub fn run_pipeline(p: &PipelineSpec, opts: &RunOptions) -> Result<RunSummary, RunError> {
    let mut opts = opts.clone();
    // A secret declared by several stages is read once and delivered to each.
    opts.secrets = Some(std::sync::Arc::new(crate::secrets::SecretCache::default()));
    let first = &p.stages[0];
    let key = keyfile::load_signing_key(&first.signing_key)?;
    // The pipeline's own invocation (the one its outputs' `{invocation}` named); each
    // stage gets its own.
    let invocation = opts
        .invocation
        .take()
        .unwrap_or_else(crate::run::new_invocation_id);
    let started_on = now_rfc3339();
    let mut stage_records: BTreeMap<String, PathBuf> = BTreeMap::new();
    let mut deps = Vec::new();
    let mut subjects = Vec::new();
    let mut outcome = String::from("succeeded");
    let mut status = 0u8;
    let mut last_message = String::new();
    for (i, stage) in p.stages.iter().enumerate() {
        eprintln!(
            "sealrun: pipeline {:?}: stage {}/{} {:?}",
            p.name,
            i + 1,
            p.stages.len(),
            stage.name
        );
        let s = run_spec(stage, &opts, &stage_records)?;
        // The state is initialised once, by the first stage.
        opts.init_rollback_state = false;
        let bytes = std::fs::read(&s.record).map_err(|source| RunError::ReadRecord {
            path: s.record.clone(),
            source,
        })?;
        let sha = Digest::of(&bytes).to_hex();
        let vr = sealrun_verifier::record::parse_unverified(&bytes);
        let outputs = vr
            .as_ref()
            .map(|r| r.subjects_digest().to_hex())
            .unwrap_or_default();
        let notes = StageAnnotation {
            kind: stage.produces,
            proof: ProofRef {
                kind: ProofKind::Record,
                sha256: sha.clone(),
            },
            result: if s.status == 0 { "succeeded" } else { "failed" }.into(),
        };
        deps.push(ResourceDescriptor {
            uri: Some(format!("file:{}", s.record.display())),
            digest: BTreeMap::from([("sha256".to_string(), outputs)]),
            ..ResourceDescriptor::annotated(&stage.name, &notes)
        });
        subjects.push(Subject {
            name: s
                .record
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            digest: BTreeMap::from([("sha256".to_string(), sha)]),
        });
        let shown = sealrun_verifier::text::one_line(&s.message);
        eprintln!("sealrun: stage {:?}: {shown}", stage.name);
        stage_records.insert(stage.name.clone(), s.record.clone());
        if s.status != 0 {
            status = s.status;
            outcome = format!("failed: stage {:?}: {shown}", stage.name);
            last_message = outcome.clone();
            // Later stages never run; their absence is part of the record.
            break;
        }
        last_message = s.message;
    }
    let prov = summary_provenance(p, &key, &invocation, started_on, deps, &outcome);
    let path = first
        .records
        .join(format!("{}-{}.pipeline.json", p.name, &invocation[..12]));
    crate::attest::publish(
        subjects,
        &prov,
        &key,
        crate::attest::Destination {
            path: &path,
            audit_log: &first.audit_log,
            event: "pipeline",
            job: &p.name,
            invocation: &invocation,
            outcome: outcome.clone(),
            tpm: None,
        },
    )?;
    Ok(RunSummary {
        status,
        message: if status == 0 {
            format!(
                "pipeline succeeded: {} stage(s); last: {last_message}",
                p.stages.len()
            )
        } else {
            last_message
        },
        record: path,
    })
}

/// The pipeline summary's provenance: its stages (by record) as dependencies, and its end.
fn summary_provenance(
    p: &PipelineSpec,
    key: &sealrun_verifier::keys::SigningKey,
    invocation: &str,
    started_on: String,
    deps: Vec<ResourceDescriptor>,
    outcome: &str,
) -> Provenance {
    Provenance {
        build_definition: BuildDefinition {
            build_type: PIPELINE_BUILD_TYPE.to_string(),
            external_parameters: to_annotations(&PipelineExternalParameters {
                name: p.name.clone(),
                stages: p.stages.iter().map(|s| s.name.clone()).collect(),
                file: p.file.display().to_string(),
            }),
            internal_parameters: to_annotations(&crate::attest::launcher_internal()),
            resolved_dependencies: deps,
        },
        run_details: RunDetails {
            builder: crate::attest::builder(crate::attest::key_builder_id(key)),
            metadata: BuildMetadata {
                invocation_id: invocation.to_string(),
                started_on,
                finished_on: now_rfc3339(),
            },
            byproducts: vec![ResourceDescriptor::annotated(
                END_BYPRODUCT,
                &End {
                    result: outcome.to_string(),
                    reason: outcome.to_string(),
                    refusal: None,
                    ran: None,
                },
            )],
        },
    }
}
