//! A generator of large, real records folders for lineage tests and the
//! benchmark (`benches/lineage.sh`): signed dataset signatures and signed run
//! records (SLSA v1 in DSSE, as the launcher writes them) linked by digest into
//! trees, all signed with one freshly generated test key.

use std::collections::BTreeMap;
use std::path::Path;

use sealrun_verifier::artifact::{ArtifactPredicate, ARTIFACT_PREDICATE_TYPE};
use sealrun_verifier::digest::{Algorithm, Digest};
use sealrun_verifier::dsse::{sign, IN_TOTO_PAYLOAD_TYPE};
use sealrun_verifier::keys::SigningKey;
use sealrun_verifier::manifest::{Manifest, Resource};
use sealrun_verifier::policy::Kind;
use sealrun_verifier::record::{
    outputs_digest, sign_record, to_annotations, BuildDefinition, BuildMetadata, Builder, End,
    InputAnnotation, InternalParameters, ProducedArtifact, ProofKind, ProofRef, Provenance,
    ResourceDescriptor, RunDetails, ARTIFACT_BYPRODUCT, BUILD_TYPE, END_BYPRODUCT,
};
use sealrun_verifier::statement::{Statement, Subject};

/// What was generated: the dataset roots (hex), in order.
pub struct Generated {
    pub roots: Vec<String>,
    pub records: usize,
}

fn sha_map(hex: String) -> BTreeMap<String, String> {
    BTreeMap::from([("sha256".to_string(), hex)])
}

/// A signed dataset `name` (one file); returns (signature bytes, root hex).
fn dataset(key: &SigningKey, name: &str) -> (Vec<u8>, String) {
    let manifest = Manifest {
        shard_size: 1 << 20,
        resources: vec![Resource {
            path: "rows.csv".into(),
            size: 3,
            algorithm: Algorithm::Sha256,
            digest: Digest::of(name.as_bytes()),
        }],
    };
    let root = manifest.root_digest().to_hex();
    let p = ArtifactPredicate {
        name: name.into(),
        kind: Kind::Dataset,
        version: 1,
        labels: BTreeMap::from([("classification".into(), "internal".into())]),
        signed_at: "2026-01-01T00:00:00Z".into(),
        expires: None,
        manifest,
    };
    let subject = vec![Subject {
        name: name.into(),
        digest: sha_map(root.clone()),
    }];
    let st = Statement::new(subject, ARTIFACT_PREDICATE_TYPE, &p);
    (
        sign(IN_TOTO_PAYLOAD_TYPE, &st.to_bytes(), key).to_json(),
        root,
    )
}

/// A signed record of job `job` that consumed `digest` through a proof of
/// `proof_type` with file digest `proof_sha`; returns (bytes, outputs digest).
fn record(key: &SigningKey, job: &str, n: usize, input: (&str, &str, &str)) -> (Vec<u8>, String) {
    let (digest, proof_type, proof_sha) = input;
    let out = Digest::of(format!("{job}-{n}").as_bytes());
    let outputs = outputs_digest([("model.json", &out)]).to_hex();
    let prov = Provenance {
        build_definition: BuildDefinition {
            build_type: BUILD_TYPE.into(),
            external_parameters: serde_json::json!({"name": job}),
            internal_parameters: to_annotations(&InternalParameters {
                launcher_sha256: String::new(),
                profile: Some("python".into()),
                ..Default::default()
            }),
            resolved_dependencies: vec![ResourceDescriptor {
                digest: sha_map(digest.to_string()),
                ..ResourceDescriptor::annotated(
                    "in",
                    &InputAnnotation {
                        artifact: "in".into(),
                        kind: Kind::Dataset,
                        version: None,
                        labels: BTreeMap::new(),
                        signer: "gen".into(),
                        keyid: key.public().keyid(),
                        format: "sealrun-manifest".into(),
                        mount: "/inputs/in".into(),
                        proof: ProofRef {
                            kind: if proof_type == "record" {
                                ProofKind::Record
                            } else {
                                ProofKind::Signature
                            },
                            sha256: proof_sha.into(),
                        },
                    },
                )
            }],
        },
        run_details: RunDetails {
            builder: Builder {
                id: "https://sealrun.dev/launcher/v1?host=gen".into(),
                version: BTreeMap::new(),
            },
            metadata: BuildMetadata {
                invocation_id: Digest::of(&n.to_be_bytes()).to_hex()[..32].to_string(),
                started_on: "2026-06-01T00:00:00Z".into(),
                finished_on: "2026-06-01T00:01:00Z".into(),
            },
            byproducts: vec![
                ResourceDescriptor::annotated(
                    END_BYPRODUCT,
                    &End {
                        result: "succeeded".into(),
                        reason: "exited 0".into(),
                        refusal: None,
                        ran: None,
                    },
                ),
                ResourceDescriptor::annotated(
                    ARTIFACT_BYPRODUCT,
                    &ProducedArtifact {
                        kind: Kind::Dataset,
                        labels: BTreeMap::from([("classification".into(), "internal".into())]),
                        outputs_digest: outputs.clone(),
                    },
                ),
            ],
        },
    };
    let subjects = vec![Subject {
        name: "model.json".into(),
        digest: sha_map(out.to_hex()),
    }];
    (sign_record(subjects, &prov, key).to_json(), outputs)
}

/// Write `records` run records into `dir` (plus `dir/artifacts/` dataset
/// signatures, one per `per_tree` records), each tree a binary tree of runs
/// below one dataset; `trust.toml` and `gen.pub` next to `dir` trust the key.
pub fn generate(dir: &Path, records: usize, per_tree: usize) -> Generated {
    let key = SigningKey::generate();
    std::fs::create_dir_all(dir.join("artifacts")).expect("records folder");
    let parent = dir.parent().expect("a parent folder");
    std::fs::write(parent.join("gen.pub"), key.public().to_pem()).expect("gen.pub");
    std::fs::write(
        parent.join("trust.toml"),
        "[[key]]\nname = \"gen\"\npublic_key = \"gen.pub\"\n",
    )
    .expect("trust.toml");
    let mut roots = Vec::new();
    let mut n = 0;
    while n < records {
        let t = roots.len();
        let (sig, root) = dataset(&key, &format!("data-{t}"));
        let sig_sha = Digest::of(&sig).to_hex();
        std::fs::write(dir.join(format!("artifacts/{sig_sha}.json")), &sig).expect("write");
        roots.push(root.clone());
        // (record sha, outputs) of this tree's runs, in order.
        let mut tree: Vec<(String, String)> = Vec::new();
        for j in 0..per_tree.min(records - n) {
            let (bytes, outputs) = if j == 0 {
                record(&key, "stage0", n, (&root, "signature", &sig_sha))
            } else {
                let (psha, pout) = &tree[(j - 1) / 2];
                let job = format!("stage{}", (j + 1).ilog2());
                record(&key, &job, n, (pout, "record", psha))
            };
            let sha = Digest::of(&bytes).to_hex();
            std::fs::write(dir.join(format!("run-{t}-{j}-{}.json", &sha[..12])), &bytes)
                .expect("write");
            tree.push((sha, outputs));
            n += 1;
        }
    }
    Generated { roots, records: n }
}
