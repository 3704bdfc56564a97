//! AI bill of materials: a CycloneDX 1.6 JSON document describing a verified
//! chain of custody: the model, the datasets it was trained from (with their
//! classification), the code of every stage, the Python interpreter and every distribution
//! installed in each stage's virtualenv (`library` components with their `pkg:pypi` purl),
//! and the launcher that ran them.
//!
//! Guarantees: it is built only from a chain that verified; every hash in it is
//! one that was checked; bom-refs are the content digests, so the same chain
//! always yields the same document apart from its timestamp.

use serde_json::{json, Value};

use crate::chain::{Graph, Node};
use crate::record::{PythonEnvironment, PythonPackage, VerifiedRecord};

fn sha_hash(hex: &str) -> Value {
    json!([{"alg": "SHA-256", "content": hex}])
}

fn uuid_from(hex: &str) -> String {
    // A name-based identifier from the root digest (RFC 4122 layout, version 5 bits).
    let h = &hex[..32];
    format!(
        "{}-{}-5{}-a{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

/// Add a stage's interpreter (an `application`) and installed distributions (`library`
/// components with their purl; the SHA-256 of each one's `RECORD` as a property, since it is
/// not the hash of the package itself) unless an earlier stage added the same ones.
fn python_components(
    python: Option<&PythonEnvironment>,
    packages: &[PythonPackage],
    components: &mut Vec<Value>,
    model_deps: &mut Vec<String>,
) {
    let mut add = |r: String, c: Value| {
        if !components.iter().any(|c| c["bom-ref"] == json!(r)) {
            components.push(c);
            model_deps.push(r);
        }
    };
    if let Some(py) = python {
        let hex = py.interpreter_sha256.to_hex();
        let r = format!("python-{}", &hex[..16]);
        let mut c = json!({
            "type": "application",
            "bom-ref": r,
            "name": "python",
            "hashes": sha_hash(&hex),
            "properties": [
                {"name": "sealrun:path", "value": py.interpreter},
                {"name": "sealrun:venv", "value": py.venv},
            ],
        });
        if let Some(v) = &py.version {
            c["version"] = json!(v);
        }
        add(r, c);
    }
    for p in packages {
        let record = p.record_sha256.to_hex();
        let purl = p.purl();
        let r = format!("{purl}#record-{}", &record[..16]);
        let c = json!({
            "type": "library",
            "bom-ref": r,
            "name": p.name,
            "version": p.version,
            "purl": purl,
            "properties": [{"name": "sealrun:dist-info-record-sha256", "value": record}],
        });
        add(r, c);
    }
}

/// Build the CycloneDX 1.6 document for `graph`, whose top record is `top`.
pub fn build(graph: &Graph, top: &VerifiedRecord, timestamp: &str) -> Value {
    let mut components = Vec::new();
    let mut deps = Vec::new();
    // The model: the top run's outputs.
    let model_ref = format!("model-{}", &graph.root[..16]);
    let outputs: Vec<Value> = top
        .statement
        .subject
        .iter()
        .map(|s| {
            let d = s.digest.get("sha256").cloned().unwrap_or_default();
            json!({"type": "file", "bom-ref": format!("file-{}-{}", &d[..16.min(d.len())], s.name), "name": s.name, "hashes": sha_hash(&d)})
        })
        .collect();
    let top_labels = top.produced().map(|p| p.labels).unwrap_or_default();
    let mut model_props = vec![
        json!({"name": "sealrun:invocation", "value": top.statement.predicate.run_details.metadata.invocation_id}),
        json!({"name": "sealrun:record-sha256", "value": top.envelope_digest.to_hex()}),
    ];
    for (k, v) in &top_labels {
        model_props.push(json!({"name": format!("sealrun:label:{k}"), "value": v}));
    }
    let model = json!({
        "type": "machine-learning-model",
        "bom-ref": model_ref,
        "name": top.job_name(),
        "hashes": sha_hash(&top.subjects_digest().to_hex()),
        "components": outputs,
        "properties": model_props,
    });
    let mut model_deps = Vec::new();
    let launcher_ref = "sealrun-launcher".to_string();
    let mut launcher_ids = Vec::new();
    for n in &graph.nodes {
        match n {
            Node::Dataset {
                id,
                name,
                version,
                labels,
                signer,
                digest,
                kind,
            } => {
                let r = format!("data-{}", &id[..16]);
                let mut data = json!({"type": "dataset", "name": name});
                if let Some(c) = labels.get(crate::labels::CLASSIFICATION) {
                    data["classification"] = json!(c);
                }
                let mut props = vec![
                    json!({"name": "sealrun:kind", "value": kind.as_str()}),
                    json!({"name": "sealrun:signer", "value": signer}),
                ];
                for (k, v) in labels {
                    props.push(json!({"name": format!("sealrun:label:{k}"), "value": v}));
                }
                let mut c = json!({
                    "type": "data",
                    "bom-ref": r,
                    "name": name,
                    "hashes": sha_hash(digest),
                    "data": [data],
                    "properties": props,
                });
                if let Some(v) = version {
                    c["version"] = json!(v.to_string());
                }
                components.push(c);
                model_deps.push(r);
            }
            Node::Stage {
                id,
                job,
                code,
                signer,
                python,
                python_packages,
                ..
            } => {
                python_components(
                    python.as_deref(),
                    python_packages,
                    &mut components,
                    &mut model_deps,
                );
                if let Some(code) = code {
                    let r = format!("code-{}-{}", job, &code[..16]);
                    if !components.iter().any(|c| c["bom-ref"] == json!(r)) {
                        components.push(json!({
                            "type": "application",
                            "bom-ref": r,
                            "name": format!("{job} code"),
                            "hashes": sha_hash(code),
                            "properties": [{"name": "sealrun:stage", "value": job}, {"name": "sealrun:stage-record", "value": id}],
                        }));
                        model_deps.push(r);
                    }
                }
                if !launcher_ids.contains(signer) {
                    launcher_ids.push(signer.clone());
                }
            }
        }
    }
    let launcher_version = top
        .statement
        .predicate
        .run_details
        .builder
        .version
        .get("sealrun")
        .cloned()
        .unwrap_or_default();
    components.push(json!({
        "type": "application",
        "bom-ref": launcher_ref,
        "name": "sealrun launcher",
        "version": launcher_version,
        "properties": [
            {"name": "sealrun:builder-id", "value": top.statement.predicate.run_details.builder.id},
            {"name": "sealrun:record-signer", "value": launcher_ids.join(",")},
        ],
    }));
    model_deps.push(launcher_ref);
    deps.push(json!({"ref": model_ref, "dependsOn": model_deps}));
    json!({
        "bomFormat": "CycloneDX",
        "specVersion": "1.6",
        "serialNumber": format!("urn:uuid:{}", uuid_from(&graph.root)),
        "version": 1,
        "metadata": {
            "timestamp": timestamp,
            "tools": {"components": [{"type": "application", "name": "sealrun-verify", "version": env!("CARGO_PKG_VERSION")}]},
            "component": model,
        },
        "components": components,
        "dependencies": deps,
    })
}
