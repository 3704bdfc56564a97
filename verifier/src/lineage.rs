//! Lineage: every run and every final output (model) downstream of a signed
//! artifact, a run record or a signing key, found in a records folder through
//! content-addressed links (stage chains, `from_record` hand-overs, pipeline
//! summaries), with each record's signature status and, with a gate policy,
//! each final output's gate verdict under the current policy.
//!
//! Guarantees: the walk follows only links by digest (a record's input names
//! its producer record by the SHA-256 of its file, a dataset by its manifest
//! root), so a record is listed only if it names something downstream of the
//! start; every listed record is re-read and its signature verified under the
//! policy (a planted, unsigned or revoked record is shown as such, never as a
//! trusted run); gate verdicts come from [`crate::gate::evaluate`], which
//! verifies the whole chain. The index (`DIR/.lineage-index.json`) is a cache
//! of what each file says, keyed by its path, size and modification time: it
//! is refreshed on every query (new, changed and removed files), written
//! atomically, and never trusted for a verdict. Anyone who can write the
//! records folder can write it too: `--rebuild-index` ignores it.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::dsse::Envelope;
use crate::gate::{GatePolicy, Verdict};
use crate::policy::{Kind, Policy};
use crate::record::{parse_unverified, verify_record};

/// The index's file name inside the records folder.
pub const INDEX_FILE: &str = ".lineage-index.json";
const INDEX_VERSION: u32 = 1;
/// The largest index read back (larger: rebuilt).
const MAX_INDEX_BYTES: u64 = 1 << 30;

/// Why lineage could not be computed.
#[derive(Debug, thiserror::Error)]
pub enum LineageError {
    #[error("records folder {dir}: {message}")]
    Io { dir: String, message: String },
}

/// What one file of the records folder says (unverified).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Facts {
    Record(RecordFacts),
    Signature(SignatureFacts),
    Other,
}

/// A run or pipeline record, as it reads.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecordFacts {
    pub job: String,
    pub invocation: String,
    pub pipeline: bool,
    pub keyids: Vec<String>,
    pub produces: Option<Kind>,
    /// Outputs digest of its subjects (hex).
    pub outputs: String,
    pub result: String,
    pub started_on: String,
    pub inputs: Vec<InputFacts>,
}

/// One input of a record: its digest and the proof it names.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InputFacts {
    pub name: String,
    pub digest: String,
    /// `record` or `signature`.
    pub proof: String,
    pub proof_sha256: String,
}

/// A sealrun artifact signature, as it reads.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SignatureFacts {
    pub name: String,
    pub kind: Option<Kind>,
    /// The subject's (manifest root) digest, hex.
    pub root: String,
    pub keyids: Vec<String>,
}

/// One indexed file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IndexEntry {
    pub size: u64,
    pub mtime_ns: u64,
    pub sha256: String,
    pub facts: Facts,
}

/// The lineage index of a records folder: relative path → entry.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct LineageIndex {
    pub version: u32,
    pub files: BTreeMap<String, IndexEntry>,
}

/// How a refresh went.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Refresh {
    pub reused: usize,
    pub read: usize,
    pub removed: usize,
    pub written: bool,
    /// Why the refreshed index could not be saved (the query still runs).
    pub write_error: Option<String>,
}

/// What a record or signature file says, unverified; `Other` for anything else.
pub fn facts_of(bytes: &[u8]) -> Facts {
    let Ok(env) = Envelope::parse(bytes) else {
        return Facts::Other;
    };
    let keyids: Vec<String> = env.signatures.iter().map(|s| s.keyid.clone()).collect();
    if let Some(vr) = parse_unverified(bytes) {
        let p = &vr.statement.predicate;
        let inputs = vr
            .contents
            .dependencies
            .iter()
            .filter_map(|d| {
                let proof = d.proof()?;
                Some(InputFacts {
                    name: d.name().to_string(),
                    digest: d.sha256().to_string(),
                    proof: proof.kind.as_str().to_string(),
                    proof_sha256: proof.sha256.clone(),
                })
            })
            .collect();
        let result = vr.contents.end.result.clone();
        return Facts::Record(RecordFacts {
            job: vr.job_name().to_string(),
            invocation: p.run_details.metadata.invocation_id.clone(),
            pipeline: vr.is_pipeline(),
            keyids,
            produces: vr.produced().map(|a| a.kind),
            outputs: vr.subjects_digest().to_hex(),
            result,
            started_on: p.run_details.metadata.started_on.clone(),
            inputs,
        });
    }
    #[derive(Deserialize)]
    struct Light {
        name: String,
        kind: Option<Kind>,
    }
    #[derive(Deserialize)]
    struct LightStatement {
        subject: Vec<crate::statement::Subject>,
        #[serde(rename = "predicateType")]
        predicate_type: String,
        predicate: Light,
    }
    let Ok(payload) = env.payload_bytes() else {
        return Facts::Other;
    };
    match serde_json::from_slice::<LightStatement>(&payload) {
        Ok(st) if st.predicate_type == crate::artifact::ARTIFACT_PREDICATE_TYPE => {
            let root = st
                .subject
                .iter()
                .find(|s| s.name == st.predicate.name)
                .and_then(|s| s.digest.get("sha256").cloned())
                .unwrap_or_default();
            Facts::Signature(SignatureFacts {
                name: st.predicate.name,
                kind: st.predicate.kind,
                root,
                keyids,
            })
        }
        _ => Facts::Other,
    }
}

/// A file found by the walk: relative path ('/'-separated), size, mtime.
struct Found {
    rel: String,
    path: PathBuf,
    size: u64,
    mtime_ns: u64,
}

fn walk(dir: &Path) -> Result<Vec<Found>, LineageError> {
    let io = |message: String| LineageError::Io {
        dir: dir.display().to_string(),
        message,
    };
    let mut found = Vec::new();
    for e in walkdir::WalkDir::new(dir).follow_links(false) {
        let e = e.map_err(|e| io(e.to_string()))?;
        let name = e.file_name().to_string_lossy();
        if !e.file_type().is_file()
            || name == INDEX_FILE
            || !(name.ends_with(".json") || name.ends_with(".sig"))
        {
            continue;
        }
        let md = e.metadata().map_err(|err| io(err.to_string()))?;
        let mtime_ns = md
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        let rel = e
            .path()
            .strip_prefix(dir)
            .unwrap_or(e.path())
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join("/");
        found.push(Found {
            rel,
            path: e.path().to_path_buf(),
            size: md.len(),
            mtime_ns,
        });
    }
    Ok(found)
}

/// The index of `dir`, refreshed: unchanged files (same path, size and mtime)
/// are taken from the saved index, new and changed ones are read, removed ones
/// dropped; the result is saved atomically if anything changed.
pub fn refresh(dir: &Path, rebuild: bool) -> Result<(LineageIndex, Refresh), LineageError> {
    use crate::fsread::{read_bounded, Follow};
    let index_path = dir.join(INDEX_FILE);
    let old: LineageIndex = if rebuild {
        LineageIndex::default()
    } else {
        read_bounded(&index_path, "lineage index", MAX_INDEX_BYTES, Follow::No)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .filter(|i: &LineageIndex| i.version == INDEX_VERSION)
            .unwrap_or_default()
    };
    let found = walk(dir)?;
    let mut stats = Refresh::default();
    let (keep, todo): (Vec<&Found>, Vec<&Found>) = found.iter().partition(|f| {
        old.files
            .get(&f.rel)
            .is_some_and(|e| e.size == f.size && e.mtime_ns == f.mtime_ns)
    });
    stats.reused = keep.len();
    let fresh: Vec<(String, IndexEntry)> = todo
        .par_iter()
        .filter_map(|f| {
            // Not followed, not blocking, bounded: a file swapped meanwhile is skipped.
            let bytes = read_bounded(
                &f.path,
                "record or signature",
                crate::dsse::MAX_ENVELOPE_BYTES,
                Follow::No,
            )
            .ok()?;
            Some((
                f.rel.clone(),
                IndexEntry {
                    size: f.size,
                    mtime_ns: f.mtime_ns,
                    sha256: Digest::of(&bytes).to_hex(),
                    facts: facts_of(&bytes),
                },
            ))
        })
        .collect();
    stats.read = fresh.len();
    let mut files: BTreeMap<String, IndexEntry> = BTreeMap::new();
    for f in keep {
        if let Some(e) = old.files.get(&f.rel) {
            files.insert(f.rel.clone(), e.clone());
        }
    }
    files.extend(fresh);
    stats.removed = old.files.keys().filter(|k| !files.contains_key(*k)).count();
    let index = LineageIndex {
        version: INDEX_VERSION,
        files,
    };
    if stats.read > 0 || stats.removed > 0 || old.version != INDEX_VERSION {
        let bytes = serde_json::to_vec(&index).expect("the index serializes");
        match crate::rollback::write_atomic(&index_path, &bytes) {
            Ok(()) => stats.written = true,
            Err(e) => stats.write_error = Some(format!("{}: {e}", index_path.display())),
        }
    }
    Ok((index, stats))
}

/// Where the walk starts.
#[derive(Clone, Debug)]
pub enum Start {
    /// A signed artifact by manifest root (or a run's outputs digest), hex.
    Artifact(String),
    /// A record by the SHA-256 of its file, hex.
    Record(String),
    /// A signing key by key id, hex (with the policy's name, if it has one).
    Key { keyid: String, name: Option<String> },
}

impl std::fmt::Display for Start {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Start::Artifact(d) => write!(f, "artifact sha256:{d}"),
            Start::Record(d) => write!(f, "record sha256:{d}"),
            Start::Key {
                keyid,
                name: Some(n),
            } => write!(f, "key {n:?} ({keyid})"),
            Start::Key { keyid, name: None } => write!(f, "key {keyid}"),
        }
    }
}

/// A run (or pipeline) downstream of the start.
#[derive(Clone, Debug, Serialize)]
pub struct Run {
    /// The record's path under the records folder.
    pub record: String,
    pub sha256: String,
    pub job: String,
    pub invocation: String,
    pub pipeline: bool,
    pub produces: Option<Kind>,
    pub outputs: String,
    pub result: String,
    /// Links from the start: 0 for a record signed by the start key (or the start record).
    pub depth: usize,
    /// From the start to this run: `start -> stage "a" [sha] -> ...`.
    pub path: Vec<String>,
    /// The inputs through which it is downstream.
    pub via: Vec<String>,
    /// `verified` or why its signature does not verify under the policy.
    pub signature: String,
    /// A run whose outputs no other downstream run consumed (pipelines aside).
    pub final_output: bool,
    /// The gate's verdict (final outputs only): `pass`, `fail: ...`, or `not evaluated`.
    pub gate: String,
}

/// The answer to a lineage query.
#[derive(Clone, Debug, Serialize)]
pub struct Lineage {
    pub start: String,
    pub runs: Vec<Run>,
    /// (from record sha, to record sha, input): links between listed runs.
    pub edges: Vec<(String, String, String)>,
    pub refresh: Refresh,
}

/// Reverse links of an index.
struct Links<'a> {
    /// Record sha → (path, facts).
    records: BTreeMap<&'a str, (&'a str, &'a RecordFacts)>,
    /// Consumed digest (artifact root, outputs digest) → consumers (record sha, input).
    by_digest: BTreeMap<&'a str, Vec<(&'a str, &'a str)>>,
    /// Producer record sha → consumers (record sha, input).
    by_record: BTreeMap<&'a str, Vec<(&'a str, &'a str)>>,
}

impl<'a> Links<'a> {
    fn new(index: &'a LineageIndex) -> Links<'a> {
        let mut l = Links {
            records: BTreeMap::new(),
            by_digest: BTreeMap::new(),
            by_record: BTreeMap::new(),
        };
        for (path, e) in &index.files {
            let Facts::Record(r) = &e.facts else { continue };
            // The same record may be stored twice (a consumer keeps a copy in
            // artifacts/): its links count once; the copy outside artifacts/ is shown.
            if let Some(seen) = l.records.get_mut(e.sha256.as_str()) {
                if seen.0.starts_with("artifacts/") {
                    seen.0 = path;
                }
                continue;
            }
            l.records.insert(&e.sha256, (path, r));
            for i in &r.inputs {
                let to = (e.sha256.as_str(), i.name.as_str());
                if i.proof == "record" {
                    l.by_record.entry(&i.proof_sha256).or_default().push(to);
                }
                l.by_digest.entry(&i.digest).or_default().push(to);
            }
        }
        l
    }
}

fn short(s: &str) -> &str {
    &s[..s.len().min(12)]
}

type Queue = VecDeque<(String, usize, Vec<String>, String)>;

/// Queue the consumers in `list` at distance `d`, reached along `p`.
fn push_consumers(q: &mut Queue, list: Option<&Vec<(&str, &str)>>, d: usize, p: &[String]) {
    for (sha, input) in list.into_iter().flatten() {
        q.push_back((sha.to_string(), d, p.to_vec(), format!("input {input:?}")));
    }
}

/// Everything downstream of `start` in `index` (breadth first, each record
/// once, at its shortest distance), unverified: [`finish`] checks it.
fn walk_down(index: &LineageIndex, start: &Start) -> (Vec<Run>, Vec<(String, String, String)>) {
    let links = Links::new(index);
    let label = |sha: &str| match links.records.get(sha) {
        Some((_, r)) if r.pipeline => format!("pipeline {:?} [{}]", r.job, short(sha)),
        Some((_, r)) => format!("stage {:?} [{}]", r.job, short(sha)),
        None => format!("record [{}]", short(sha)),
    };
    // (record sha, depth, path so far, via)
    let mut queue = Queue::new();
    let origin = vec![start.to_string()];
    match start {
        Start::Artifact(d) => {
            push_consumers(&mut queue, links.by_digest.get(d.as_str()), 1, &origin)
        }
        Start::Record(s) => {
            if links.records.contains_key(s.as_str()) {
                queue.push_back((s.clone(), 0, Vec::new(), "the start record".into()));
            } else {
                push_consumers(&mut queue, links.by_record.get(s.as_str()), 1, &origin);
            }
        }
        Start::Key { keyid, .. } => {
            for e in index.files.values() {
                match &e.facts {
                    Facts::Record(r) if r.keyids.iter().any(|k| k.eq_ignore_ascii_case(keyid)) => {
                        queue.push_back((
                            e.sha256.clone(),
                            0,
                            origin.clone(),
                            "signed by the key".into(),
                        ))
                    }
                    Facts::Signature(s)
                        if s.keyids.iter().any(|k| k.eq_ignore_ascii_case(keyid)) =>
                    {
                        let p = vec![format!(
                            "{} -> artifact {:?} sha256:{}",
                            start,
                            s.name,
                            short(&s.root)
                        )];
                        push_consumers(&mut queue, links.by_digest.get(s.root.as_str()), 1, &p);
                    }
                    _ => {}
                }
            }
        }
    }
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut runs: Vec<Run> = Vec::new();
    let mut edges = Vec::new();
    while let Some((sha, depth, mut path, via)) = queue.pop_front() {
        if let Some(&i) = seen.get(&sha) {
            if !runs[i].via.contains(&via) {
                runs[i].via.push(via);
            }
            continue;
        }
        let Some((rel, r)) = links.records.get(sha.as_str()) else {
            continue;
        };
        path.push(label(&sha));
        seen.insert(sha.clone(), runs.len());
        runs.push(Run {
            record: rel.to_string(),
            sha256: sha.clone(),
            job: r.job.clone(),
            invocation: r.invocation.clone(),
            pipeline: r.pipeline,
            produces: r.produces,
            outputs: r.outputs.clone(),
            result: r.result.clone(),
            depth,
            path: path.clone(),
            via: vec![via],
            signature: String::new(),
            final_output: false,
            gate: "not evaluated".into(),
        });
        for (to, input) in links.by_record.get(sha.as_str()).into_iter().flatten() {
            edges.push((sha.clone(), to.to_string(), input.to_string()));
            queue.push_back((
                to.to_string(),
                depth + 1,
                path.clone(),
                format!("input {input:?}"),
            ));
        }
    }
    // Final outputs: runs no other listed non-pipeline run consumes.
    let consumed: BTreeSet<&str> = edges
        .iter()
        .filter(|(_, to, _)| {
            links
                .records
                .get(to.as_str())
                .is_some_and(|(_, r)| !r.pipeline)
        })
        .map(|(from, _, _)| from.as_str())
        .collect();
    for r in &mut runs {
        r.final_output = !r.pipeline && !consumed.contains(r.sha256.as_str());
    }
    edges.sort();
    edges.dedup();
    (runs, edges)
}

/// Verify every listed record's signature under `policy` and, with a gate,
/// evaluate the gate on every final output (in parallel).
fn finish(
    dir: &Path,
    index: &LineageIndex,
    runs: &mut [Run],
    policy: &Policy,
    gate: Option<(&GatePolicy, &Policy)>,
) {
    let by_sha: BTreeMap<&str, &str> = index
        .files
        .iter()
        .map(|(p, e)| (e.sha256.as_str(), p.as_str()))
        .collect();
    runs.par_iter_mut().for_each(|run| {
        let path = dir.join(&run.record);
        let name = path.display().to_string();
        let bytes = match crate::dsse::read_limited(&path) {
            Ok(b) if Digest::of(&b).to_hex() == run.sha256 => b,
            Ok(_) => {
                run.signature = "changed while the query ran (run it again)".into();
                return;
            }
            Err(e) => {
                run.signature = format!("unreadable: {e}");
                return;
            }
        };
        run.signature = match verify_record(&name, &bytes, policy, None) {
            Ok(_) => "verified".into(),
            Err(e) => format!("FAILED ({}): {e}", e.kind()),
        };
        if let (true, Some((g, trust))) = (run.final_output, gate) {
            let chain = ancestors(dir, index, &by_sha, &run.sha256);
            run.gate = match crate::gate::evaluate(&name, &bytes, &chain, g, trust) {
                Ok(Verdict { passed: true, .. }) => "pass".into(),
                Ok(v) => format!(
                    "fail: {}",
                    v.violations
                        .iter()
                        .map(|x| format!("stage {:?}: {}: {}", x.stage, x.check, x.detail))
                        .collect::<Vec<_>>()
                        .join("; ")
                ),
                Err(e) => format!("fail: {e}"),
            };
        }
    });
}

/// A chain index holding the files upstream of record `sha` (for the gate).
fn ancestors(
    dir: &Path,
    index: &LineageIndex,
    by_sha: &BTreeMap<&str, &str>,
    sha: &str,
) -> crate::chain::Index {
    let mut files = BTreeMap::new();
    let mut todo = vec![sha.to_string()];
    let mut seen = BTreeSet::new();
    while let Some(s) = todo.pop() {
        if !seen.insert(s.clone()) {
            continue;
        }
        let Some(rel) = by_sha.get(s.as_str()) else {
            continue;
        };
        let path = dir.join(rel);
        if let Ok(bytes) = crate::dsse::read_limited(&path) {
            if Digest::of(&bytes).to_hex() == s {
                files.insert(s.clone(), (path, bytes));
            }
        }
        if let Some(Facts::Record(r)) = index.files.get(*rel).map(|e| &e.facts) {
            todo.extend(r.inputs.iter().map(|i| i.proof_sha256.clone()));
        }
    }
    crate::chain::Index {
        dir: dir.display().to_string(),
        files,
    }
}

/// Answer a lineage query on the records folder `dir`.
pub fn lineage(
    dir: &Path,
    start: &Start,
    policy: &Policy,
    gate: Option<(&GatePolicy, &Policy)>,
    rebuild: bool,
) -> Result<Lineage, LineageError> {
    let (index, refresh) = refresh(dir, rebuild)?;
    let (mut runs, edges) = walk_down(&index, start);
    finish(dir, &index, &mut runs, policy, gate);
    Ok(Lineage {
        start: start.to_string(),
        runs,
        edges,
        refresh,
    })
}

impl Lineage {
    /// Readable text: a summary, every run with its path, then the final outputs.
    pub fn to_text(&self) -> String {
        let finals: Vec<&Run> = self.runs.iter().filter(|r| r.final_output).collect();
        let pipelines = self.runs.iter().filter(|r| r.pipeline).count();
        let mut out = format!(
            "lineage of {}: {} run(s), {} pipeline(s), {} final output(s)\n",
            self.start,
            self.runs.len() - pipelines,
            pipelines,
            finals.len()
        );
        if self.runs.is_empty() {
            out.push_str("  nothing in the records folder is downstream of it\n");
            return out;
        }
        out.push_str("runs:\n");
        for r in &self.runs {
            let what = if r.pipeline { "pipeline" } else { "stage" };
            out.push_str(&format!(
                "  {what} {:?} run {} ({}){} {}  signature: {}\n      path: {}\n",
                r.job,
                short(&r.invocation),
                r.result,
                r.produces.map(|k| format!(" -> {k}")).unwrap_or_default(),
                r.record,
                r.signature,
                r.path.join(" -> ")
            ));
        }
        out.push_str("final outputs:\n");
        for r in finals {
            out.push_str(&format!(
                "  {} {:?} outputs sha256:{} record {}  gate: {}\n",
                r.produces.map(|k| k.as_str()).unwrap_or("output"),
                r.job,
                short(&r.outputs),
                r.record,
                r.gate
            ));
        }
        out
    }

    /// Graphviz dot: the start, every run, and the links between them.
    pub fn to_dot(&self) -> String {
        let q = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
        let mut out = String::from("digraph lineage {\n  rankdir=LR;\n");
        out.push_str(&format!(
            "  \"start\" [shape=cylinder, label=\"{}\"];\n",
            q(&self.start)
        ));
        for r in &self.runs {
            let shape = if r.final_output {
                "doubleoctagon"
            } else {
                "box"
            };
            out.push_str(&format!(
                "  \"{}\" [shape={shape}, label=\"{} {}\\n{}\\ngate: {}\"];\n",
                short(&r.sha256),
                if r.pipeline { "pipeline" } else { "stage" },
                q(&r.job),
                q(&r.result),
                q(&r.gate)
            ));
            if r.depth <= 1 && !r.path.is_empty() {
                out.push_str(&format!("  \"start\" -> \"{}\";\n", short(&r.sha256)));
            }
        }
        for (from, to, input) in &self.edges {
            out.push_str(&format!(
                "  \"{}\" -> \"{}\" [label=\"{}\"];\n",
                short(from),
                short(to),
                q(input)
            ));
        }
        out.push_str("}\n");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_index_is_refreshed_incrementally_and_saved_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir(d.join("artifacts")).unwrap();
        std::fs::write(d.join("a.json"), b"{}").unwrap();
        std::fs::write(d.join("artifacts/b.json"), b"[]").unwrap();
        std::fs::write(d.join("notes.txt"), b"ignored").unwrap();
        let (i, r) = refresh(d, false).unwrap();
        assert_eq!((r.reused, r.read, r.removed, r.written), (0, 2, 0, true));
        assert_eq!(i.files["artifacts/b.json"].facts, Facts::Other);
        assert!(d.join(INDEX_FILE).is_file());
        // Nothing changed: nothing read, nothing written.
        let (_, r) = refresh(d, false).unwrap();
        assert_eq!((r.reused, r.read, r.removed, r.written), (2, 0, 0, false));
        // One removed, one changed (another size).
        std::fs::remove_file(d.join("a.json")).unwrap();
        std::fs::write(d.join("artifacts/b.json"), b"[1]").unwrap();
        let (i, r) = refresh(d, false).unwrap();
        assert_eq!((r.reused, r.read, r.removed), (0, 1, 1));
        assert_eq!(i.files.len(), 1);
        assert_eq!(
            i.files["artifacts/b.json"].sha256,
            Digest::of(b"[1]").to_hex()
        );
        // A corrupt index is rebuilt, never trusted.
        std::fs::write(d.join(INDEX_FILE), b"{not json").unwrap();
        let (_, r) = refresh(d, false).unwrap();
        assert_eq!((r.reused, r.read), (0, 1));
        let (_, r) = refresh(d, true).unwrap();
        assert_eq!((r.reused, r.read), (0, 1));
    }
}
