//! Chain of custody: from a run record back, through the records of the
//! stages that produced its inputs, to trusted signed datasets.
//!
//! Guarantees of [`verify_chain`]: every record on the way is signed by a key
//! allowed to sign records and every dataset signature by a key allowed to sign
//! its kind; every link is by content (the SHA-256 of the record or signature
//! file, found in the records folder) and the digest the consumer verified must
//! equal the outputs digest of the producer's record (a record swapped for
//! another valid one breaks the link); producers must have succeeded; stage
//! policy (who may produce what, and consume whom) holds; a missing, broken or
//! cyclic link fails with the path through the graph; so does a revoked record,
//! artifact or signing key anywhere in the chain, for runs made before the
//! revocation too (see [`crate::revocation`]). A signature's expiry is
//! judged at the time it was used: against the consuming run's signed
//! `startedOn`, not today (a signature that expired since is a warning in
//! [`Graph::warnings`], not a failure; one already expired when the run started
//! fails).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::artifact::{verify_any_signature, VerifyError, VerifyOptions};
use crate::digest::Digest;
use crate::policy::{Kind, Policy};
use crate::record::{
    check_producer, verify_record, DependencyKind, ProducerError, ProofKind, PythonEnvironment,
    PythonPackage, RecordError, VerifiedRecord,
};

/// Why a chain does not verify. `path` is the chain from the top record down.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    #[error("{path}: {source}")]
    Record {
        path: String,
        #[source]
        source: RecordError,
    },
    #[error("{path}: input {input:?}: its {what} sha256:{sha} is not in the records folder {dir}")]
    Missing {
        path: String,
        input: String,
        what: &'static str,
        sha: String,
        dir: String,
    },
    #[error("{path}: input {input:?}: {reason}")]
    Broken {
        path: String,
        input: String,
        reason: String,
    },
    #[error("{path}: cycle: the chain comes back to a record it started from")]
    Cycle { path: String },
    #[error("{path}: {reason}")]
    Policy { path: String, reason: String },
    #[error("records folder {dir}: {message}")]
    Io { dir: String, message: String },
    /// An ancestor (input, producer record or a signing key) is revoked.
    #[error("{path}: input {input:?}: {revocation}")]
    Revoked {
        path: String,
        input: String,
        revocation: Box<crate::revocation::Revocation>,
    },
}

impl ChainError {
    /// A stable machine-readable name for the reason.
    pub fn kind(&self) -> &'static str {
        match self {
            ChainError::Record { source, .. } => source.kind(),
            ChainError::Missing { .. } => "missing_link",
            ChainError::Broken { .. } => "broken_link",
            ChainError::Cycle { .. } => "cycle",
            ChainError::Policy { .. } => "policy",
            ChainError::Io { .. } => "unreadable",
            ChainError::Revoked { .. } => "revoked",
        }
    }
}

/// Files of a records folder by the SHA-256 of their bytes.
#[derive(Debug, Default)]
pub struct Index {
    pub dir: String,
    pub files: BTreeMap<String, (PathBuf, Vec<u8>)>,
}

impl Index {
    /// Index every `*.json` and `*.sig` file under `dir` (recursively).
    pub fn from_dir(dir: &Path) -> Result<Index, ChainError> {
        let mut files = BTreeMap::new();
        for e in walkdir::WalkDir::new(dir).follow_links(false) {
            let e = e.map_err(|e| ChainError::Io {
                dir: dir.display().to_string(),
                message: e.to_string(),
            })?;
            let name = e.file_name().to_string_lossy();
            if !e.file_type().is_file() || !(name.ends_with(".json") || name.ends_with(".sig")) {
                continue;
            }
            use crate::fsread::{read_bounded, Follow, ReadError};
            // Not followed, not blocking, bounded: a file swapped for a symlink,
            // FIFO or device after the walk saw it, or one too large, is skipped.
            let bytes = match read_bounded(
                e.path(),
                "record or signature",
                crate::dsse::MAX_ENVELOPE_BYTES,
                Follow::No,
            ) {
                Ok(b) => b,
                Err(ReadError::TooLarge { .. } | ReadError::NotRegular { .. }) => continue,
                Err(err) => {
                    return Err(ChainError::Io {
                        dir: dir.display().to_string(),
                        message: err.to_string(),
                    })
                }
            };
            files.insert(Digest::of(&bytes).to_hex(), (e.path().to_path_buf(), bytes));
        }
        Ok(Index {
            dir: dir.display().to_string(),
            files,
        })
    }
}

/// One node of the provenance graph.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Node {
    Dataset {
        id: String,
        name: String,
        kind: Kind,
        version: Option<u64>,
        labels: BTreeMap<String, String>,
        signer: String,
        digest: String,
    },
    Stage {
        id: String,
        job: String,
        invocation: String,
        code: Option<String>,
        produces: Option<Kind>,
        labels: BTreeMap<String, String>,
        signer: String,
        result: String,
        outputs: Vec<(String, String)>,
        /// The stage's Python interpreter and virtualenv, if it ran with one.
        #[serde(skip_serializing_if = "Option::is_none")]
        python: Option<Box<PythonEnvironment>>,
        /// The distributions installed in that virtualenv.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        python_packages: Vec<PythonPackage>,
    },
}

impl Node {
    pub fn id(&self) -> &str {
        match self {
            Node::Dataset { id, .. } | Node::Stage { id, .. } => id,
        }
    }
}

/// An edge: `from` was consumed by `to` as input `input`.
#[derive(Debug, Clone, Serialize)]
pub struct Edge {
    pub from: String,
    pub to: String,
    pub input: String,
}

/// The verified provenance graph; `root` is the top record.
#[derive(Debug, Clone, Serialize)]
pub struct Graph {
    pub root: String,
    pub nodes: Vec<Node>,
    pub edges: Vec<Edge>,
    /// Things that verified but an auditor should know (e.g. a signature that
    /// was valid when the run used it and has expired since).
    pub warnings: Vec<String>,
}

struct Walker<'a> {
    index: &'a Index,
    policy: &'a Policy,
    now: time::OffsetDateTime,
    nodes: BTreeMap<String, Node>,
    edges: Vec<Edge>,
    warnings: Vec<String>,
    /// Records on the current path (by digest).
    visiting: Vec<String>,
    /// Records already verified with their whole chain (by digest).
    done: BTreeMap<String, VerifiedRecord>,
}

fn short(sha: &str) -> &str {
    &sha[..sha.len().min(12)]
}

/// A verified chain: its graph, and every record on it (verified), by the SHA-256 of its file.
#[derive(Debug, Clone)]
pub struct VerifiedChain {
    pub graph: Graph,
    pub records: BTreeMap<String, VerifiedRecord>,
}

/// Verify the chain from the record `bytes` (named `name`) through `index`.
pub fn verify_chain(
    name: &str,
    bytes: &[u8],
    index: &Index,
    policy: &Policy,
) -> Result<VerifiedChain, ChainError> {
    let mut w = Walker {
        index,
        policy,
        now: time::OffsetDateTime::now_utc(),
        nodes: BTreeMap::new(),
        edges: Vec::new(),
        warnings: Vec::new(),
        visiting: Vec::new(),
        done: BTreeMap::new(),
    };
    let root = Digest::of(bytes).to_hex();
    w.visit_record(name, bytes, &mut Vec::new())?;
    Ok(VerifiedChain {
        graph: Graph {
            root,
            nodes: w.nodes.into_values().collect(),
            edges: w.edges,
            warnings: w.warnings,
        },
        records: w.done,
    })
}

impl Walker<'_> {
    fn visit_record(
        &mut self,
        name: &str,
        bytes: &[u8],
        stack: &mut Vec<String>,
    ) -> Result<VerifiedRecord, ChainError> {
        let id = Digest::of(bytes).to_hex();
        let here = |stack: &Vec<String>| {
            let mut p = stack.clone();
            p.push(crate::text::Esc(name).to_string());
            p.join(" <- ")
        };
        if self.visiting.contains(&id) {
            return Err(ChainError::Cycle { path: here(stack) });
        }
        if let Some(done) = self.done.get(&id) {
            return Ok(done.clone());
        }
        let vr =
            verify_record(name, bytes, self.policy, None).map_err(|source| ChainError::Record {
                path: here(stack),
                source,
            })?;
        // The stage policy applies to every run in the chain, the top one included.
        if !vr.is_pipeline() {
            // A run refused before it produced anything declares no artifact.
            let kind = vr.produced().map(|p| p.kind).unwrap_or(Kind::Model);
            self.policy
                .check_stage(vr.job_name(), vr.code_digest(), kind, None)
                .map_err(|e| ChainError::Policy {
                    path: here(stack),
                    reason: e.to_string(),
                })?;
        }
        let label = format!("stage {:?} [{}]", vr.job_name(), short(&id));
        stack.push(label);
        self.visiting.push(id.clone());
        let path_now = stack.join(" <- ");
        let deps = vr.contents.dependencies.clone();
        for dep in &deps {
            let (proof, expected_kind) = match &dep.kind {
                DependencyKind::Input(a) => (&a.proof, a.kind),
                DependencyKind::Stage(a) => (&a.proof, a.kind),
                _ => continue,
            };
            let input = dep.name().to_string();
            let sha = proof.sha256.clone();
            let dep_digest = dep.sha256().to_string();
            // A revoked input fails here, found in the folder or not.
            if let Some(r) = self.policy.revoked_input(dep) {
                return Err(ChainError::Revoked {
                    path: path_now.clone(),
                    input,
                    revocation: Box::new(r.clone()),
                });
            }
            let what = match proof.kind {
                ProofKind::Record => "producer record",
                ProofKind::Signature => "signature",
            };
            let Some((file, pbytes)) = self.index.files.get(&sha).cloned() else {
                return Err(ChainError::Missing {
                    path: path_now.clone(),
                    input,
                    what,
                    sha,
                    dir: self.index.dir.clone(),
                });
            };
            let from_id = match proof.kind {
                ProofKind::Record => {
                    let sub = self.visit_record(&file.display().to_string(), &pbytes, stack)?;
                    let consumer = (!vr.is_pipeline()).then(|| vr.job_name());
                    check_producer(
                        &sub,
                        &dep_digest,
                        Some(expected_kind),
                        consumer,
                        self.policy,
                    )
                    .map_err(|e| match e {
                        ProducerError::Stage(e) => ChainError::Policy {
                            path: path_now.clone(),
                            reason: e.to_string(),
                        },
                        e => ChainError::Broken {
                            path: path_now.clone(),
                            input: input.clone(),
                            reason: format!("{} ({})", e, crate::text::path(&file)),
                        },
                    })?;
                    sha.clone()
                }
                ProofKind::Signature => {
                    let broken = |reason: String| ChainError::Broken {
                        path: path_now.clone(),
                        input: input.clone(),
                        reason,
                    };
                    // Expiry is judged when the run used the input: its signed startedOn.
                    let started = &vr.statement.predicate.run_details.metadata.started_on;
                    let used_at = OffsetDateTime::parse(started, &Rfc3339).map_err(|_| {
                        broken(format!(
                            "the record's startedOn {started:?} is not an RFC 3339 time"
                        ))
                    })?;
                    // The kind the consumer verified it as (a model-signing bundle
                    // names none itself; a sealrun signature must agree).
                    let expected_kind = Some(expected_kind);
                    let opts = VerifyOptions {
                        policy: self.policy,
                        now: used_at,
                        rollback: None,
                        expected_kind,
                        progress: None,
                    };
                    let v = verify_any_signature(&pbytes, &crate::text::path(&file), &opts)
                        .map_err(|e| match e {
                            VerifyError::Expired { artifact, expires } => broken(format!(
                                "artifact {artifact}: signature expired at {expires}, before the run started ({started})"
                            )),
                            VerifyError::Revoked { revocation, .. } => ChainError::Revoked {
                                path: path_now.clone(),
                                input: input.clone(),
                                revocation,
                            },
                            e => broken(e.to_string()),
                        })?;
                    if let Some(exp) = v.expires.as_deref() {
                        let gone =
                            OffsetDateTime::parse(exp, &Rfc3339).is_ok_and(|t| t <= self.now);
                        if gone {
                            self.warnings.push(format!(
                                "{path_now}: input {input:?}: artifact {:?}: signature expired at {exp}, after the run used it (started {started}); valid for this run, refused for a new one",
                                v.name
                            ));
                        }
                    }
                    if v.digest != dep_digest {
                        return Err(ChainError::Broken {
                            path: path_now.clone(),
                            input,
                            reason: format!(
                                "consumed sha256:{dep_digest}, but the signature {} vouches for sha256:{}",
                                crate::text::path(&file),
                                v.digest
                            ),
                        });
                    }
                    self.nodes.entry(sha.clone()).or_insert(Node::Dataset {
                        id: sha.clone(),
                        name: v.name.clone(),
                        kind: v.kind,
                        version: v.version,
                        labels: v.labels.clone(),
                        signer: v.signer.clone(),
                        digest: v.digest.clone(),
                    });
                    sha.clone()
                }
            };
            self.edges.push(Edge {
                from: from_id,
                to: id.clone(),
                input,
            });
        }
        stack.pop();
        self.visiting.pop();
        self.done.insert(id.clone(), vr.clone());
        let produced = vr.produced();
        self.nodes.insert(
            id.clone(),
            Node::Stage {
                id: id.clone(),
                job: vr.job_name().to_string(),
                invocation: vr
                    .statement
                    .predicate
                    .run_details
                    .metadata
                    .invocation_id
                    .clone(),
                code: vr.code_digest().map(str::to_string),
                python: vr.python_environment().map(Box::new),
                python_packages: vr.python_packages(),
                produces: produced.as_ref().map(|p| p.kind),
                labels: produced.map(|p| p.labels).unwrap_or_default(),
                signer: vr.signer.clone(),
                result: vr.contents.end.result.clone(),
                outputs: vr
                    .statement
                    .subject
                    .iter()
                    .map(|s| {
                        (
                            s.name.clone(),
                            s.digest.get("sha256").cloned().unwrap_or_default(),
                        )
                    })
                    .collect(),
            },
        );
        Ok(vr)
    }
}

fn labels_text(l: &BTreeMap<String, String>) -> String {
    if l.is_empty() {
        String::new()
    } else {
        format!(
            " [{}]",
            l.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" ")
        )
    }
}

impl Graph {
    fn node(&self, id: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.id() == id)
    }

    fn describe(&self, n: &Node) -> String {
        match n {
            Node::Dataset {
                name,
                kind,
                version,
                labels,
                signer,
                digest,
                ..
            } => format!(
                "{kind} {name:?}{} sha256:{} signed by {signer:?}{}",
                version.map(|v| format!(" v{v}")).unwrap_or_default(),
                short(digest),
                labels_text(labels)
            ),
            Node::Stage {
                job,
                invocation,
                code,
                produces,
                labels,
                result,
                ..
            } => format!(
                "stage {job:?} run {} ({result}){}{}{}",
                short(invocation),
                code.as_ref()
                    .map(|c| format!(" code sha256:{}", short(c)))
                    .unwrap_or_default(),
                produces.map(|k| format!(" -> {k}")).unwrap_or_default(),
                labels_text(labels)
            ),
        }
    }

    /// Readable text, top record first, each input indented below what consumed it.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let mut shown = Vec::new();
        self.text_rec(&self.root, 0, "", &mut out, &mut shown);
        out
    }

    fn text_rec(
        &self,
        id: &str,
        depth: usize,
        via: &str,
        out: &mut String,
        shown: &mut Vec<String>,
    ) {
        let Some(n) = self.node(id) else { return };
        let pad = "    ".repeat(depth);
        let via = if via.is_empty() {
            String::new()
        } else {
            format!("input {via:?} <- ")
        };
        if shown.iter().any(|s| s == id) {
            out.push_str(&format!("{pad}{via}{} (shown above)\n", self.describe(n)));
            return;
        }
        shown.push(id.to_string());
        out.push_str(&format!("{pad}{via}{}\n", self.describe(n)));
        if depth == 0 {
            if let Node::Stage { outputs, .. } = n {
                for (p, d) in outputs {
                    out.push_str(&format!(
                        "{pad}  output {} sha256:{}\n",
                        crate::text::Esc(p),
                        short(d)
                    ));
                }
            }
        }
        for e in self.edges.iter().filter(|e| e.to == id) {
            self.text_rec(&e.from, depth + 1, &e.input, out, shown);
        }
    }

    /// Graphviz dot.
    pub fn to_dot(&self) -> String {
        let mut out = String::from("digraph provenance {\n  rankdir=LR;\n");
        for n in &self.nodes {
            let shape = match n {
                Node::Dataset { .. } => "cylinder",
                Node::Stage { .. } => "box",
            };
            out.push_str(&format!(
                "  \"{}\" [shape={shape}, label=\"{}\"];\n",
                short(n.id()),
                self.describe(n).replace('"', "\\\"")
            ));
        }
        for e in &self.edges {
            out.push_str(&format!(
                "  \"{}\" -> \"{}\" [label=\"{}\"];\n",
                short(&e.from),
                short(&e.to),
                e.input.replace('"', "\\\"")
            ));
        }
        out.push_str("}\n");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::SigningKey;
    use crate::record::{
        sign_record, BuildDefinition, BuildMetadata, Builder, Provenance, ResourceDescriptor,
        RunDetails, BUILD_TYPE,
    };
    use crate::statement::Subject;

    /// An input's annotations (the record schema's [`InputAnnotation`]).
    fn input_notes(kind: ProofKind, sha256: &str) -> serde_json::Value {
        crate::record::to_annotations(&crate::record::InputAnnotation {
            artifact: "in".into(),
            kind: Kind::Dataset,
            version: None,
            labels: BTreeMap::new(),
            signer: "k".into(),
            keyid: "k".into(),
            format: "sealrun-manifest".into(),
            mount: "/inputs/in".into(),
            proof: crate::record::ProofRef {
                kind,
                sha256: sha256.into(),
            },
        })
    }

    fn record(key: &SigningKey, proof_sha: &str) -> Vec<u8> {
        let end = crate::record::End {
            result: "succeeded".into(),
            reason: "succeeded".into(),
            refusal: None,
            ran: None,
        };
        let prov = Provenance {
            build_definition: BuildDefinition {
                build_type: BUILD_TYPE.into(),
                external_parameters: serde_json::json!({"name": "loop"}),
                internal_parameters: serde_json::json!({"launcher_sha256": ""}),
                resolved_dependencies: vec![ResourceDescriptor {
                    name: Some("in".into()),
                    digest: [("sha256".to_string(), "00".repeat(32))].into(),
                    annotations: Some(input_notes(ProofKind::Record, proof_sha)),
                    ..Default::default()
                }],
            },
            run_details: RunDetails {
                builder: Builder {
                    id: "b".into(),
                    version: BTreeMap::new(),
                },
                metadata: BuildMetadata {
                    invocation_id: "i".into(),
                    started_on: "t".into(),
                    finished_on: "t".into(),
                },
                byproducts: vec![ResourceDescriptor::annotated(
                    crate::record::END_BYPRODUCT,
                    &end,
                )],
            },
        };
        let subj = vec![Subject {
            name: "m".into(),
            digest: [("sha256".to_string(), "11".repeat(32))].into(),
        }];
        sign_record(subj, &prov, key).to_json()
    }

    #[test]
    fn cycle_is_detected_with_the_path() {
        // Content addressing makes a real cycle impossible to build; an index that
        // maps a digest to a record leading back to itself must still not loop.
        let key = SigningKey::generate();
        let policy = Policy::single_key("launcher", key.public());
        let fake = "cd".repeat(32);
        let a = record(&key, &fake);
        let mut index = Index::default();
        index
            .files
            .insert(fake, (PathBuf::from("a.json"), a.clone()));
        let e = verify_chain("a.json", &a, &index, &policy).unwrap_err();
        assert_eq!(e.kind(), "cycle", "{e}");
        assert!(e.to_string().contains("stage \"loop\""), "{e}");
    }

    #[test]
    fn missing_link_names_the_input_and_digest() {
        let key = SigningKey::generate();
        let policy = Policy::single_key("launcher", key.public());
        let a = record(&key, &"ef".repeat(32));
        let e = verify_chain("a.json", &a, &Index::default(), &policy).unwrap_err();
        assert_eq!(e.kind(), "missing_link", "{e}");
        assert!(e.to_string().contains(&"ef".repeat(32)), "{e}");
    }

    /// A dataset signature expiring at `expires`, and a record of a run started
    /// at `started` that consumed it.
    fn used_at(expires: &str, started: &str) -> Result<Graph, ChainError> {
        use crate::artifact::{ArtifactPredicate, ARTIFACT_PREDICATE_TYPE};
        use crate::dsse::{sign, IN_TOTO_PAYLOAD_TYPE};
        use crate::manifest::Manifest;
        use crate::statement::Statement;
        let key = SigningKey::generate();
        let policy = Policy::single_key("k", key.public());
        let manifest = Manifest {
            shard_size: 1 << 20,
            resources: vec![],
        };
        let root = manifest.root_digest().to_hex();
        let p = ArtifactPredicate {
            name: "d".into(),
            kind: Kind::Dataset,
            version: 1,
            labels: BTreeMap::new(),
            signed_at: "2020-01-01T00:00:00Z".into(),
            expires: Some(expires.into()),
            manifest,
        };
        let subject = vec![Subject {
            name: "d".into(),
            digest: [("sha256".to_string(), root.clone())].into(),
        }];
        let st = Statement::new(subject, ARTIFACT_PREDICATE_TYPE, &p);
        let sig = sign(IN_TOTO_PAYLOAD_TYPE, &st.to_bytes(), &key).to_json();
        let sig_sha = Digest::of(&sig).to_hex();
        let rec = String::from_utf8(record(&key, &sig_sha)).unwrap();
        // Re-sign the record with a signature proof, the dataset's digest and `started`.
        let env = crate::dsse::Envelope::parse(rec.as_bytes()).unwrap();
        let mut st: Statement<crate::record::Provenance> = crate::statement::parse(
            &env.payload_bytes().unwrap(),
            crate::record::SLSA_PROVENANCE_V1,
        )
        .unwrap();
        let dep = &mut st.predicate.build_definition.resolved_dependencies[0];
        dep.digest = [("sha256".to_string(), root)].into();
        dep.annotations = Some(input_notes(ProofKind::Signature, &sig_sha));
        st.predicate.run_details.metadata.started_on = started.into();
        let rec = sign_record(st.subject.clone(), &st.predicate, &key).to_json();
        let mut index = Index::default();
        index.files.insert(sig_sha, (PathBuf::from("d.sig"), sig));
        verify_chain("r.json", &rec, &index, &policy).map(|c| c.graph)
    }

    #[test]
    fn expiry_is_judged_when_the_run_started() {
        // Valid when used, expired since: verifies, with a warning.
        let g = used_at("2021-01-01T00:00:00Z", "2020-06-01T00:00:00Z").unwrap();
        assert_eq!(g.warnings.len(), 1, "{:?}", g.warnings);
        assert!(g.warnings[0].contains("expired at 2021-01-01T00:00:00Z, after the run used it"));
        // Already expired when the run started: refused.
        let e = used_at("2021-01-01T00:00:00Z", "2021-06-01T00:00:00Z").unwrap_err();
        assert_eq!(e.kind(), "broken_link", "{e}");
        assert!(
            e.to_string()
                .contains("before the run started (2021-06-01T00:00:00Z)"),
            "{e}"
        );
        // Not expired at all: no warning.
        let g = used_at("2999-01-01T00:00:00Z", "2020-06-01T00:00:00Z").unwrap();
        assert!(g.warnings.is_empty(), "{:?}", g.warnings);
    }
}
