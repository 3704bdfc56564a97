//! Run records: a DSSE envelope over an in-toto Statement v1 whose predicate is
//! SLSA Provenance v1, describing one sandboxed run: what it read, how it was
//! isolated, what it wrote, and how it ended.
//!
//! Guarantees of [`verify_record`]: the envelope is structurally sound and
//! signed by a key the policy allows to sign `record`s; the statement is SLSA
//! Provenance v1 with every required field (`buildDefinition.buildType`,
//! `externalParameters`, `runDetails.builder.id`); with an outputs directory, the
//! files on disk are exactly the record's subjects, byte for byte, and the
//! symlinks, FIFOs and other non-files on disk are exactly the record's
//! `output-non-files` (same path, kind and link text): anything extra, missing
//! or changed fails; a record (by file digest) or signing key revoked by the
//! policy fails (see [`crate::revocation`]).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::artifact::{compare, VerifyError};
use crate::digest::{Algorithm, Digest};
use crate::dsse::{self, DsseError, Envelope, IN_TOTO_PAYLOAD_TYPE};
use crate::keys::SigningKey;
use crate::manifest::{path_order, Manifest, Resource};
use crate::outputs;
use crate::policy::{Kind, Policy, TrustedKey};
use crate::statement::{self, Statement, Subject};

/// SLSA Provenance v1.
pub const SLSA_PROVENANCE_V1: &str = "https://slsa.dev/provenance/v1";
/// The buildType of a pipeline summary record.
pub const PIPELINE_BUILD_TYPE: &str = "https://sealrun.dev/pipeline/v1";

/// Subject name prefix of the job spec, used as the only subject of a run
/// that produced no output files (never a valid relative output path).
pub const SPEC_SUBJECT_PREFIX: &str = "/sealrun/job-spec/";

/// The buildType of a sealrun run.
pub const BUILD_TYPE: &str = "https://sealrun.dev/run/v1";

/// An in-toto ResourceDescriptor.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceDescriptor {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub digest: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<serde_json::Value>,
}

/// `buildDefinition`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BuildDefinition {
    pub build_type: String,
    pub external_parameters: serde_json::Value,
    #[serde(default)]
    pub internal_parameters: serde_json::Value,
    #[serde(default)]
    pub resolved_dependencies: Vec<ResourceDescriptor>,
}

/// `runDetails.builder`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Builder {
    pub id: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub version: BTreeMap<String, String>,
}

/// `runDetails.metadata`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BuildMetadata {
    pub invocation_id: String,
    pub started_on: String,
    pub finished_on: String,
}

/// `runDetails`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunDetails {
    pub builder: Builder,
    pub metadata: BuildMetadata,
    #[serde(default)]
    pub byproducts: Vec<ResourceDescriptor>,
}

/// SLSA Provenance v1 predicate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Provenance {
    pub build_definition: BuildDefinition,
    pub run_details: RunDetails,
}

/// The digest that identifies a run's outputs as one artifact: SHA-256 over
/// the subjects sorted by path components, each as the path's length (u64
/// big-endian), the path, and the 32 raw SHA-256 bytes. A consumer that
/// verified the files against the subjects computes the same value.
pub fn outputs_digest<'a>(files: impl IntoIterator<Item = (&'a str, &'a Digest)>) -> Digest {
    let mut v: Vec<(&str, &Digest)> = files.into_iter().collect();
    v.sort_by(|a, b| path_order(a.0, b.0));
    let mut h = <sha2::Sha256 as sha2::Digest>::new();
    sha2::Digest::update(&mut h, b"sealrun-outputs-v1\0");
    for (p, d) in v {
        sha2::Digest::update(&mut h, (p.len() as u64).to_be_bytes());
        sha2::Digest::update(&mut h, p.as_bytes());
        sha2::Digest::update(&mut h, d.0);
    }
    Digest(sha2::Digest::finalize(h).into())
}

/// The artifact a run produced, as its record describes it (byproduct `artifact`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProducedArtifact {
    /// The kind the stage declares it produces (`features`, `model`, ...).
    pub kind: Kind,
    /// Labels propagated from its inputs (see `labels::propagate`).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// [`outputs_digest`] of the subjects.
    pub outputs_digest: String,
}

/// Name of the byproduct listing outputs the launcher could not attest ([`UnattestedOutputs`]).
pub const UNATTESTED_BYPRODUCT: &str = "output-unattested";
/// Name of the byproduct summarising the output folder ([`OutputSummary`]).
pub const OUTPUT_SUMMARY_BYPRODUCT: &str = "output-summary";

/// The `interrupt` byproduct: signals the launcher got while the job ran and passed on (the
/// first as itself, any later one as SIGKILL of the whole tree).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Interrupt {
    /// The signals received, in order (`SIGINT`, `SIGTERM`).
    pub signals: Vec<String>,
    /// Whether a second signal made the launcher kill the tree.
    pub killed: bool,
}

/// Byproduct `output-unattested`: entries of the output folder that are not
/// among the subjects although the job left them (a name that cannot be a
/// subject, a path too long, a limit or deadline passed, an unreadable file).
/// A record with any such entry never says `succeeded`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnattestedOutputs {
    /// How many entries could not be attested, listed or not.
    pub count: u64,
    /// The first of them (a bounded number), each with its reason.
    pub entries: Vec<UnattestedEntry>,
}

/// One output the launcher could not attest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnattestedEntry {
    /// The path under the output folder, escaped (`\\`, `\xNN` for bytes
    /// that are not UTF-8, `\u{N}` for control characters) and redacted;
    /// `.` for the folder as a whole.
    pub path: String,
    /// Why it is not a subject.
    pub reason: String,
}

/// Byproduct `output-summary`: what the launcher found in the output folder
/// and did to it when it took it back from the job.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSummary {
    /// Entries under the folder (files, directories, links, special files).
    pub entries: u64,
    /// Regular files among them.
    pub files: u64,
    /// Bytes the regular files take on disk (allocated blocks).
    pub allocated_bytes: u64,
    /// Sum of the regular files' lengths (holes included).
    pub length_bytes: u64,
    /// Directories with nothing in them (they are not subjects), redacted.
    #[serde(default)]
    pub empty_directories: Vec<String>,
    /// Extended attributes removed (ACLs, `user.*`, ...).
    #[serde(default)]
    pub xattrs_removed: u64,
    /// Entries whose mode was narrowed (setuid, setgid or world-write removed).
    #[serde(default)]
    pub modes_changed: u64,
}

/// `annotations.type` of a `resolvedDependencies` entry that is a Python distribution
/// installed in the job's virtualenv ([`PythonPackage`]).
pub const PYTHON_PACKAGE_TYPE: &str = "python-package";
/// `annotations.type` of the `resolvedDependencies` entry that describes the job's Python
/// interpreter and virtualenv ([`PythonEnvironment`]).
pub const PYTHON_INTERPRETER_TYPE: &str = "python-interpreter";
/// The `name` of that entry.
pub const PYTHON_DEPENDENCY: &str = "python";
/// The file of a `.dist-info` folder whose SHA-256 a [`PythonPackage`] carries.
pub const PYTHON_PACKAGE_DIGEST_OF: &str = "RECORD";

/// A distribution name normalised as PyPI does (PEP 503): lowercase, and every run of `-`,
/// `_` and `.` one `-` (`Scikit_Learn` and `scikit.learn` are both `scikit-learn`).
pub fn normalize_pypi_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut in_run = false;
    for c in name.trim().chars() {
        if matches!(c, '-' | '_' | '.') {
            if !in_run {
                out.push('-');
            }
            in_run = true;
        } else {
            out.extend(c.to_lowercase());
            in_run = false;
        }
    }
    out
}

/// The package URL `pkg:pypi/NAME@VERSION` (name normalised, version percent-encoded as the
/// purl specification asks, e.g. `1.0+cpu` as `1.0%2Bcpu`).
pub fn pypi_purl(name: &str, version: &str) -> String {
    let name = normalize_pypi_name(name);
    match packageurl::PackageUrl::new("pypi", name.as_str()) {
        Ok(mut p) => match p.with_version(version) {
            Ok(p) => p.to_string(),
            Err(_) => format!("pkg:pypi/{name}"),
        },
        Err(_) => format!("pkg:pypi/{name}"),
    }
}

/// One distribution installed in the job's virtualenv (a `site-packages/*.dist-info` folder),
/// as its run record lists it: a `resolvedDependencies` entry named `pypi:NAME` whose `uri` is
/// [`PythonPackage::purl`] and whose `digest.sha256` is that of the folder's `RECORD` file
/// (pip's list of every file it installed, each with its own SHA-256).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PythonPackage {
    /// The name normalised as PyPI does ([`normalize_pypi_name`]).
    pub name: String,
    /// The version its `METADATA` states.
    pub version: String,
    /// Host path of the `.dist-info` folder.
    pub dist_info: String,
    /// SHA-256 of its `RECORD` file.
    pub record_sha256: Digest,
}

/// The `annotations` of a [`PythonPackage`] entry.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PythonPackageNotes {
    #[serde(rename = "type")]
    kind: String,
    name: String,
    version: String,
    dist_info: String,
    digest_of: String,
}

impl PythonPackage {
    /// `pkg:pypi/NAME@VERSION`.
    pub fn purl(&self) -> String {
        pypi_purl(&self.name, &self.version)
    }

    /// The record's `resolvedDependencies` entry.
    pub fn to_descriptor(&self) -> ResourceDescriptor {
        let notes = PythonPackageNotes {
            kind: PYTHON_PACKAGE_TYPE.into(),
            name: self.name.clone(),
            version: self.version.clone(),
            dist_info: self.dist_info.clone(),
            digest_of: PYTHON_PACKAGE_DIGEST_OF.into(),
        };
        ResourceDescriptor {
            name: Some(format!("pypi:{}", self.name)),
            uri: Some(self.purl()),
            digest: BTreeMap::from([("sha256".to_string(), self.record_sha256.to_hex())]),
            media_type: None,
            annotations: serde_json::to_value(notes).ok(),
        }
    }

    /// Read an entry back: `None` unless it is a well-formed Python package entry (its type,
    /// its purl matching its name and version, a SHA-256 digest).
    pub fn from_descriptor(d: &ResourceDescriptor) -> Option<PythonPackage> {
        let notes: PythonPackageNotes = serde_json::from_value(d.annotations.clone()?).ok()?;
        if notes.kind != PYTHON_PACKAGE_TYPE || notes.digest_of != PYTHON_PACKAGE_DIGEST_OF {
            return None;
        }
        let p = PythonPackage {
            record_sha256: d.digest.get("sha256")?.parse().ok()?,
            name: notes.name,
            version: notes.version,
            dist_info: notes.dist_info,
        };
        (d.uri.as_deref() == Some(p.purl().as_str())
            && d.name.as_deref() == Some(format!("pypi:{}", p.name).as_str()))
        .then_some(p)
    }
}

/// The job's Python: the virtualenv it ran with and the interpreter binary the venv's
/// `bin/python3` resolves to, as its run record lists it (the `resolvedDependencies` entry
/// named `python`, `uri` `file:INTERPRETER`, `digest.sha256` that of the binary).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PythonEnvironment {
    /// The virtualenv's absolute host path, which is also where the job saw it.
    pub venv: String,
    /// The interpreter binary (the venv's `bin/python3`, symlinks resolved).
    pub interpreter: String,
    /// SHA-256 of the interpreter binary.
    pub interpreter_sha256: Digest,
    /// `version` (or `version_info`) from `pyvenv.cfg`, when it has one.
    pub version: Option<String>,
    /// Host folders of the base interpreter made visible read-only at the same paths.
    pub base_prefixes: Vec<String>,
    /// SHA-256 of `pyvenv.cfg`.
    pub pyvenv_cfg_sha256: Digest,
}

/// The `annotations` of the [`PythonEnvironment`] entry.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PythonEnvironmentNotes {
    #[serde(rename = "type")]
    kind: String,
    venv: String,
    version: Option<String>,
    base_prefixes: Vec<String>,
    pyvenv_cfg_sha256: Digest,
}

impl PythonEnvironment {
    /// The record's `resolvedDependencies` entry.
    pub fn to_descriptor(&self) -> ResourceDescriptor {
        let notes = PythonEnvironmentNotes {
            kind: PYTHON_INTERPRETER_TYPE.into(),
            venv: self.venv.clone(),
            version: self.version.clone(),
            base_prefixes: self.base_prefixes.clone(),
            pyvenv_cfg_sha256: self.pyvenv_cfg_sha256,
        };
        ResourceDescriptor {
            name: Some(PYTHON_DEPENDENCY.into()),
            uri: Some(format!("file:{}", self.interpreter)),
            digest: BTreeMap::from([("sha256".to_string(), self.interpreter_sha256.to_hex())]),
            media_type: None,
            annotations: serde_json::to_value(notes).ok(),
        }
    }

    /// Read the entry back: `None` unless it is a well-formed Python interpreter entry.
    pub fn from_descriptor(d: &ResourceDescriptor) -> Option<PythonEnvironment> {
        if d.name.as_deref() != Some(PYTHON_DEPENDENCY) {
            return None;
        }
        let notes: PythonEnvironmentNotes = serde_json::from_value(d.annotations.clone()?).ok()?;
        if notes.kind != PYTHON_INTERPRETER_TYPE {
            return None;
        }
        Some(PythonEnvironment {
            venv: notes.venv,
            interpreter: d.uri.as_deref()?.strip_prefix("file:")?.to_string(),
            interpreter_sha256: d.digest.get("sha256")?.parse().ok()?,
            version: notes.version,
            base_prefixes: notes.base_prefixes,
            pyvenv_cfg_sha256: notes.pyvenv_cfg_sha256,
        })
    }
}

/// Key of [`GpuAccess`] in a run record's `internalParameters`.
pub const GPUS_PARAMETER: &str = "gpus";
/// `internalParameters` key: SHA-256 (hex) of the `sealrun` binary that wrote the record.
pub const LAUNCHER_SHA256_PARAMETER: &str = "launcher_sha256";
/// Name of the `resolvedDependencies` entry of each CDI spec file a run used.
pub const CDI_SPEC_DEPENDENCY: &str = "cdi-spec";

/// `internalParameters.gpus`: the GPUs a run was given through the Container Device Interface,
/// and exactly what was applied from the CDI spec.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GpuAccess {
    /// What the job asked for (`all`, or the names as given).
    pub request: String,
    /// The CDI spec files used, with the SHA-256 of the bytes read.
    pub cdi_specs: Vec<CdiSpecFile>,
    /// One entry per GPU.
    pub devices: Vec<GpuDevice>,
    /// Device nodes bound into the sandbox's `/dev`: `PATH MAJOR:MINOR PERMISSIONS`.
    pub device_nodes: Vec<String>,
    /// How device access was controlled (a v1 devices cgroup, a v2 device program, or none and
    /// why).
    pub device_cgroup: String,
    /// Read-only mounts from the spec, `HOST:CONTAINER`.
    pub mounts: Vec<String>,
    /// Mounts of the spec that were not made, `HOST:CONTAINER: why` (host sockets, e.g.
    /// nvidia-persistenced's: a job's connect to a host socket is refused and observed as egress,
    /// while a missing one is a quiet `ENOENT`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped_mounts: Vec<String>,
    /// Environment from the spec, `NAME=VALUE`.
    pub env: Vec<String>,
    /// Every hook of the spec, with what the launcher did about it.
    pub hooks: Vec<GpuHook>,
}

/// A CDI spec file a run used.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CdiSpecFile {
    /// Where it was read.
    pub path: String,
    /// Hex SHA-256 of its bytes.
    pub sha256: String,
}

/// One GPU of a run.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GpuDevice {
    /// The CDI device name used (`0`, `GPU-…`).
    pub cdi_name: String,
    /// Its index, where known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<String>,
    /// Its UUID, where known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    /// The product name (e.g. `NVIDIA H100 80GB HBM3`), where known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The driver version, where known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver_version: Option<String>,
    /// Where name and driver version came from: `nvidia-smi`, `cdi-spec` or `unknown`.
    pub source: String,
}

/// A CDI hook and what the launcher did about it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GpuHook {
    /// OCI hook point (`createContainer`, …).
    pub hook_name: String,
    /// The program.
    pub path: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// `run` (its effect applied by the launcher), `satisfied` (the host already has what it
    /// would make) or `not-run`.
    pub status: String,
    /// How, or why not.
    pub detail: String,
}

/// The buildType of a Slurm job seal (`sealrun seal-job`): one record whose subjects are every
/// rank record of one job step, by digest.
pub const JOB_BUILD_TYPE: &str = "https://sealrun.dev/job/v1";
/// Key of [`SlurmRank`] in a run record's `internalParameters`.
pub const SLURM_PARAMETER: &str = "slurm";
/// Name of the byproduct of a job seal that holds its [`JobSeal`].
pub const JOB_BYPRODUCT: &str = "job";

/// `internalParameters.slurm`: which task of which Slurm job step a run was (from the
/// `SLURM_*` variables of the task `srun` started).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlurmRank {
    /// `SLURM_JOB_ID`.
    pub job_id: String,
    /// `SLURM_STEP_ID` (`batch` for the batch step).
    pub step_id: String,
    /// `SLURM_PROCID`: the rank in the step, `0..world_size`.
    pub rank: u32,
    /// `SLURM_NTASKS`: the number of tasks of the step.
    pub world_size: u32,
    /// `SLURM_LOCALID`: the rank among the step's tasks on this node.
    pub local_rank: u32,
    /// `SLURMD_NODENAME`: the node the task ran on.
    pub node: String,
    /// `SLURM_NODEID`: the node's index in the step's allocation.
    pub node_id: u32,
    /// `SLURM_STEP_NODELIST` (or `SLURM_JOB_NODELIST`): the step's nodes, as Slurm writes them.
    pub nodelist: String,
    /// `SLURM_CLUSTER_NAME`, where set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// The job network the rank ran in (`[sandbox] network = "job"`); absent: no network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<JobNetwork>,
}

/// The job network of a rank: the network namespace it shared with the other ranks of its job
/// step on its node, and what its connects were allowed to reach.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobNetwork {
    /// `job`.
    pub mode: String,
    /// Where the shared namespace was pinned on the node (`/run/sealrun/net/JOB.STEP`).
    pub namespace: String,
    /// Whether this rank made the namespace (the first rank on the node) or joined it.
    pub created: bool,
    /// What a `connect` could reach, `ADDRESS/PREFIX:FIRST-LAST` (every other destination was
    /// refused and is in the run's `egress_attempts`).
    pub allow: Vec<String>,
}

/// An egress attempt as a run record's `sandbox` byproduct lists it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EgressAttempt {
    /// `connect` or `sendto`.
    pub syscall: String,
    /// `inet`, `inet6`, `unix`, ...
    pub family: String,
    /// The destination (`ADDRESS:PORT`, a path, `?`).
    pub address: String,
}

/// How a sealed job ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobResult {
    /// Every rank's run succeeded.
    Succeeded,
    /// At least one rank's run did not.
    Failed,
}

/// The `job` byproduct of a job seal: the Slurm job step and every rank in it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSeal {
    pub job_id: String,
    pub step_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// `WORLD_SIZE`: exactly this many rank records are sealed, ranks `0..world_size`.
    pub world_size: u32,
    pub result: JobResult,
    /// The ranks whose run did not succeed, in order.
    pub failed_ranks: Vec<u32>,
    /// One entry per rank, in rank order.
    pub ranks: Vec<SealedRank>,
}

/// One rank of a [`JobSeal`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealedRank {
    pub rank: u32,
    pub local_rank: u32,
    pub node: String,
    /// The rank record's file name in the records folder.
    pub record: String,
    /// SHA-256 (hex) of the rank record's bytes (also its subject digest).
    pub record_sha256: String,
    /// Whether its run succeeded.
    pub succeeded: bool,
    /// Its record's result (`succeeded`, `failed: exited 3`, ...).
    pub result: String,
    /// The connects the sandbox refused and recorded (`FAMILY ADDRESS`).
    #[serde(default)]
    pub egress_refused: Vec<String>,
    /// What its connects could reach in the job network (empty: no network).
    #[serde(default)]
    pub network_allow: Vec<String>,
}

/// Sign a run record.
pub fn sign_record(subjects: Vec<Subject>, provenance: &Provenance, key: &SigningKey) -> Envelope {
    let st = Statement::new(subjects, SLSA_PROVENANCE_V1, provenance);
    dsse::sign(IN_TOTO_PAYLOAD_TYPE, &st.to_bytes(), key)
}

/// Why a record does not verify.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("record {record}: {source}")]
    Envelope {
        record: String,
        #[source]
        source: DsseError,
    },
    #[error("record {record}: signed by key {key:?}, which the policy does not allow to sign run records")]
    NotARecordKey { record: String, key: String },
    #[error("record {record}: {field} is missing or empty")]
    MissingField { record: String, field: &'static str },
    #[error("record {record}: buildType is {found:?}, expected {BUILD_TYPE:?}")]
    BuildType { record: String, found: String },
    #[error(
        "record {record}: subject {name:?} is not a safe relative path or has no sha256 digest"
    )]
    BadSubject { record: String, name: String },
    #[error("record {record}: outputs: {path:?}: {what}")]
    NonFile {
        record: String,
        path: String,
        what: String,
        kind: &'static str,
    },
    #[error("record {record}: outputs: {source}")]
    Outputs {
        record: String,
        #[source]
        source: Box<VerifyError>,
    },
    /// The trust policy pins the launcher builds it accepts, and this record names another
    /// (or none).
    #[error("record {record}: written by launcher build {found}, which the trust policy's launcher_sha256 does not list (records of other builds are refused)")]
    Launcher { record: String, found: String },
    /// The record, or the key that signed it, is revoked by the trust policy.
    #[error("record {record}: {revocation}")]
    Revoked {
        record: String,
        revocation: Box<crate::revocation::Revocation>,
    },
}

impl RecordError {
    /// A stable machine-readable name for the reason.
    pub fn kind(&self) -> &'static str {
        match self {
            RecordError::Envelope { source, .. } => source.kind(),
            RecordError::NotARecordKey { .. } => "kind_not_allowed",
            RecordError::MissingField { .. } => "missing_field",
            RecordError::BuildType { .. } => "build_type",
            RecordError::BadSubject { .. } => "bad_subject",
            RecordError::Outputs { source, .. } => source.kind(),
            RecordError::NonFile { kind, .. } => kind,
            RecordError::Revoked { .. } => "revoked",
            RecordError::Launcher { .. } => "launcher_not_pinned",
        }
    }
}

/// A verified record.
#[derive(Debug, Clone)]
pub struct VerifiedRecord {
    pub statement: Statement<Provenance>,
    pub signer: String,
    pub keyid: String,
    /// SHA-256 of the envelope file's bytes (what the audit log refers to).
    pub envelope_digest: Digest,
}

/// Parse a record's statement without checking its signature (for a launcher
/// reading back the record it just wrote). Never use this to trust a record.
pub fn parse_unverified(bytes: &[u8]) -> Option<VerifiedRecord> {
    let env = Envelope::parse(bytes).ok()?;
    let payload = env.payload_bytes().ok()?;
    let statement = statement::parse(&payload, SLSA_PROVENANCE_V1).ok()?;
    Some(VerifiedRecord {
        statement,
        signer: String::new(),
        keyid: String::new(),
        envelope_digest: Digest::of(bytes),
    })
}

impl VerifiedRecord {
    /// Whether this summarises other records (a pipeline summary, or a Slurm job seal: see
    /// [`VerifiedRecord::is_job`]) rather than being one run.
    pub fn is_pipeline(&self) -> bool {
        let t = &self.statement.predicate.build_definition.build_type;
        t == PIPELINE_BUILD_TYPE || t == JOB_BUILD_TYPE
    }

    /// Whether this is a Slurm job seal.
    pub fn is_job(&self) -> bool {
        self.statement.predicate.build_definition.build_type == JOB_BUILD_TYPE
    }

    /// The Slurm task this run was, if it ran under Slurm ([`SlurmRank`]); `Err` if the record
    /// has the field but it does not parse.
    pub fn slurm(&self) -> Result<Option<SlurmRank>, String> {
        match self
            .statement
            .predicate
            .build_definition
            .internal_parameters
            .get(SLURM_PARAMETER)
        {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(v) => serde_json::from_value(v.clone())
                .map(Some)
                .map_err(|e| format!("internalParameters.{SLURM_PARAMETER}: {e}")),
        }
    }

    /// The job seal's [`JobSeal`] (its `job` byproduct); `Err` if missing or malformed.
    pub fn job_seal(&self) -> Result<JobSeal, String> {
        let a = self
            .byproduct(JOB_BYPRODUCT)
            .and_then(|b| b.annotations.clone())
            .ok_or_else(|| format!("no {JOB_BYPRODUCT:?} byproduct"))?;
        serde_json::from_value(a).map_err(|e| format!("byproduct {JOB_BYPRODUCT:?}: {e}"))
    }

    /// The result this record's `end` byproduct states (`unknown` without one).
    pub fn result(&self) -> String {
        self.byproduct("end")
            .and_then(|b| b.annotations.as_ref())
            .and_then(|a| a.get("result"))
            .and_then(|r| r.as_str())
            .unwrap_or("unknown")
            .to_string()
    }

    /// The egress attempts the sandbox refused (its `sandbox` byproduct; empty without one).
    pub fn egress_attempts(&self) -> Vec<EgressAttempt> {
        self.byproduct("sandbox")
            .and_then(|b| b.annotations.as_ref())
            .and_then(|a| a.get("egress_attempts"))
            .and_then(|e| serde_json::from_value(e.clone()).ok())
            .unwrap_or_default()
    }

    /// The produced artifact, if the record declares one.
    pub fn produced(&self) -> Option<ProducedArtifact> {
        self.byproduct("artifact")
            .and_then(|b| b.annotations.clone())
            .and_then(|a| serde_json::from_value(a).ok())
    }

    /// The job (stage) name from externalParameters.
    pub fn job_name(&self) -> &str {
        self.statement
            .predicate
            .build_definition
            .external_parameters
            .get("name")
            .and_then(|n| n.as_str())
            .unwrap_or("")
    }

    /// The code folder's root digest, if the run had one.
    pub fn code_digest(&self) -> Option<&str> {
        self.statement
            .predicate
            .build_definition
            .resolved_dependencies
            .iter()
            .find(|d| d.name.as_deref() == Some("code"))
            .and_then(|d| d.digest.get("sha256"))
            .map(String::as_str)
    }

    /// The outputs digest computed from the subjects.
    pub fn subjects_digest(&self) -> Digest {
        let parsed: Vec<(String, Digest)> = self
            .statement
            .subject
            .iter()
            .filter(|s| !s.name.starts_with(SPEC_SUBJECT_PREFIX))
            .filter_map(|s| Some((s.name.clone(), s.digest.get("sha256")?.parse().ok()?)))
            .collect();
        outputs_digest(parsed.iter().map(|(n, d)| (n.as_str(), d)))
    }

    /// Whether the run succeeded (byproduct `end`, `result` = `succeeded`).
    pub fn succeeded(&self) -> bool {
        self.byproduct("end")
            .and_then(|b| b.annotations.as_ref())
            .and_then(|a| a.get("result"))
            .and_then(|r| r.as_str())
            == Some("succeeded")
    }

    /// The outputs the launcher could not attest (empty for older records).
    pub fn unattested(&self) -> UnattestedOutputs {
        self.byproduct(UNATTESTED_BYPRODUCT)
            .and_then(|b| b.annotations.clone())
            .and_then(|a| serde_json::from_value(a).ok())
            .unwrap_or_default()
    }

    /// The output folder's summary, if the record has one.
    pub fn output_summary(&self) -> Option<OutputSummary> {
        self.byproduct(OUTPUT_SUMMARY_BYPRODUCT)
            .and_then(|b| b.annotations.clone())
            .and_then(|a| serde_json::from_value(a).ok())
    }

    /// The Python distributions the run's virtualenv held (empty without one).
    pub fn python_packages(&self) -> Vec<PythonPackage> {
        self.statement
            .predicate
            .build_definition
            .resolved_dependencies
            .iter()
            .filter_map(PythonPackage::from_descriptor)
            .collect()
    }

    /// The run's Python interpreter and virtualenv, if it had one.
    pub fn python_environment(&self) -> Option<PythonEnvironment> {
        self.statement
            .predicate
            .build_definition
            .resolved_dependencies
            .iter()
            .find_map(PythonEnvironment::from_descriptor)
    }

    /// The GPUs the run was given, if any ([`GpuAccess`]); `Err` if the record has the field
    /// but it does not parse.
    pub fn gpus(&self) -> Result<Option<GpuAccess>, String> {
        match self
            .statement
            .predicate
            .build_definition
            .internal_parameters
            .get(GPUS_PARAMETER)
        {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(v) => serde_json::from_value(v.clone())
                .map(Some)
                .map_err(|e| format!("internalParameters.{GPUS_PARAMETER}: {e}")),
        }
    }

    /// A byproduct by name.
    pub fn byproduct(&self, name: &str) -> Option<&ResourceDescriptor> {
        self.statement
            .predicate
            .run_details
            .byproducts
            .iter()
            .find(|b| b.name.as_deref() == Some(name))
    }
}

/// Verify a run record's bytes; with `outputs`, also the files on disk.
pub fn verify_record(
    name: &str,
    bytes: &[u8],
    policy: &Policy,
    outputs: Option<&Path>,
) -> Result<VerifiedRecord, RecordError> {
    let record = format!("{name:?}");
    let env_err = |source| RecordError::Envelope {
        record: record.clone(),
        source,
    };
    let env = Envelope::parse(bytes).map_err(env_err)?;
    let (signers, payload): (Vec<&TrustedKey>, Vec<u8>) = env
        .verify(IN_TOTO_PAYLOAD_TYPE, |id| policy.lookup(id))
        .map_err(env_err)?;
    let signer = policy.choose(&signers, |k| k.may_sign(Kind::Record));
    if !signer.may_sign(Kind::Record) {
        return Err(RecordError::NotARecordKey {
            record,
            key: signer.name.clone(),
        });
    }
    if let Some(r) = policy
        .revoked_record(&Digest::of(bytes).to_hex())
        .or_else(|| policy.revoked_key(&signer.name, &signer.key.keyid()))
    {
        return Err(RecordError::Revoked {
            record,
            revocation: Box::new(r.clone()),
        });
    }
    let st: Statement<Provenance> =
        statement::parse(&payload, SLSA_PROVENANCE_V1).map_err(env_err)?;
    let p = &st.predicate;
    let missing = |field| RecordError::MissingField {
        record: record.clone(),
        field,
    };
    if p.build_definition.build_type.is_empty() {
        return Err(missing("buildDefinition.buildType"));
    }
    if p.build_definition.build_type != BUILD_TYPE
        && p.build_definition.build_type != PIPELINE_BUILD_TYPE
        && p.build_definition.build_type != JOB_BUILD_TYPE
    {
        return Err(RecordError::BuildType {
            record,
            found: p.build_definition.build_type.clone(),
        });
    }
    if !p.build_definition.external_parameters.is_object() {
        return Err(missing("buildDefinition.externalParameters"));
    }
    if p.run_details.builder.id.is_empty() {
        return Err(missing("runDetails.builder.id"));
    }
    if p.run_details.metadata.invocation_id.is_empty() {
        return Err(missing("runDetails.metadata.invocationId"));
    }
    if !policy.launchers.is_empty() {
        let found = p
            .build_definition
            .internal_parameters
            .get(LAUNCHER_SHA256_PARAMETER)
            .and_then(|v| v.as_str());
        if !found.is_some_and(|d| policy.launchers.contains(d)) {
            return Err(RecordError::Launcher {
                record,
                found: found.map_or_else(|| "(none named)".into(), |d| format!("sha256:{d}")),
            });
        }
    }
    let expected = subjects_manifest(&st.subject).map_err(|name| RecordError::BadSubject {
        record: record.clone(),
        name,
    })?;
    if let Some(dir) = outputs {
        let actual = outputs::hash_outputs(dir).map_err(|source| RecordError::Outputs {
            record: record.clone(),
            source: Box::new(VerifyError::Tree {
                artifact: dir.display().to_string(),
                source,
            }),
        })?;
        let mut expected = expected;
        // Sizes are not in subjects: take them from disk so only digests and names count.
        for r in &mut expected.resources {
            if let Some(a) = actual.files.resources.iter().find(|a| a.path == r.path) {
                r.size = a.size;
            }
        }
        compare(
            &format!("{:?}", dir.display().to_string()),
            &expected,
            &actual.files,
        )
        .map_err(|source| RecordError::Outputs {
            record: record.clone(),
            source: Box::new(source),
        })?;
        compare_non_files(&record, &st, &actual.other)?;
    }
    Ok(VerifiedRecord {
        signer: signer.name.clone(),
        keyid: signer.key.keyid(),
        envelope_digest: Digest::of(bytes),
        statement: st,
    })
}

/// One entry of the record's `output-non-files` byproduct.
#[derive(Deserialize, PartialEq, Eq, PartialOrd, Ord)]
struct RecordedNonFile {
    path: String,
    kind: String,
    #[serde(default)]
    target: Option<String>,
}

/// The non-files on disk must be exactly those the record lists.
fn compare_non_files(
    record: &str,
    st: &Statement<Provenance>,
    on_disk: &[outputs::NonFile],
) -> Result<(), RecordError> {
    let fail = |path: &str, what: String, kind| RecordError::NonFile {
        record: record.to_string(),
        path: path.to_string(),
        what,
        kind,
    };
    let listed = st
        .predicate
        .run_details
        .byproducts
        .iter()
        .find(|b| b.name.as_deref() == Some("output-non-files"))
        .and_then(|b| b.annotations.as_ref())
        .and_then(|a| a.get("not_followed"))
        .cloned()
        .unwrap_or_else(|| serde_json::json!([]));
    let mut listed: Vec<RecordedNonFile> = serde_json::from_value(listed).map_err(|e| {
        fail(
            "output-non-files",
            format!("malformed byproduct: {e}"),
            "missing_field",
        )
    })?;
    listed.sort();
    let shown = |t: &Option<String>| t.as_ref().map(|t| format!(" -> {t:?}")).unwrap_or_default();
    for n in on_disk {
        match listed.iter().find(|l| l.path == n.path) {
            None => {
                return Err(fail(
                    &n.path,
                    format!(
                        "{}{} on disk but not in the record's output-non-files",
                        n.kind,
                        shown(&n.target)
                    ),
                    "extra_non_file",
                ))
            }
            Some(l) if l.kind != n.kind || l.target != n.target => {
                return Err(fail(
                    &n.path,
                    format!(
                        "{}{} on disk, but the record says {}{}",
                        n.kind,
                        shown(&n.target),
                        l.kind,
                        shown(&l.target)
                    ),
                    "non_file_changed",
                ))
            }
            Some(_) => {}
        }
    }
    if let Some(l) = listed
        .iter()
        .find(|l| !on_disk.iter().any(|n| n.path == l.path))
    {
        return Err(fail(
            &l.path,
            format!(
                "{}{} in the record's output-non-files but not on disk",
                l.kind,
                shown(&l.target)
            ),
            "missing_non_file",
        ));
    }
    Ok(())
}

impl VerifiedRecord {
    /// The output files the record attests, as a manifest without sizes (for a
    /// cheap check of a folder's file list before anything in it is hashed).
    pub fn outputs_manifest(&self) -> Result<Manifest, String> {
        subjects_manifest(&self.statement.subject)
    }
}

/// The subjects as a manifest of plain sha256 files (names are output paths).
fn subjects_manifest(subjects: &[Subject]) -> Result<Manifest, String> {
    let mut resources = Vec::new();
    for s in subjects {
        if subjects.len() == 1 && s.name.starts_with(SPEC_SUBJECT_PREFIX) {
            continue;
        }
        crate::manifest::check_path(&s.name).map_err(|_| s.name.clone())?;
        let d: Digest = s
            .digest
            .get("sha256")
            .and_then(|d| d.parse().ok())
            .ok_or_else(|| s.name.clone())?;
        resources.push(Resource {
            path: s.name.clone(),
            size: 0,
            algorithm: Algorithm::Sha256,
            digest: d,
        });
    }
    resources.sort_by(|a, b| path_order(&a.path, &b.path));
    Ok(Manifest {
        shard_size: u64::MAX,
        resources,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pypi_names_are_normalised_as_pep_503_says() {
        for (raw, want) in [
            ("numpy", "numpy"),
            ("Scikit_Learn", "scikit-learn"),
            ("scikit.learn", "scikit-learn"),
            ("zope.interface", "zope-interface"),
            ("a-_.-b", "a-b"),
            ("Django", "django"),
        ] {
            assert_eq!(normalize_pypi_name(raw), want, "{raw}");
        }
        assert_eq!(
            pypi_purl("Scikit_Learn", "1.9.1"),
            "pkg:pypi/scikit-learn@1.9.1"
        );
        assert_eq!(
            pypi_purl("torch", "2.5.0+cpu"),
            "pkg:pypi/torch@2.5.0%2Bcpu"
        );
    }

    #[test]
    fn python_entries_round_trip_and_malformed_ones_are_not_read() {
        let p = PythonPackage {
            name: "scikit-learn".into(),
            version: "1.9.1".into(),
            dist_info: "/v/lib/python3.11/site-packages/scikit_learn-1.9.1.dist-info".into(),
            record_sha256: Digest::of(b"RECORD"),
        };
        let d = p.to_descriptor();
        assert_eq!(d.uri.as_deref(), Some("pkg:pypi/scikit-learn@1.9.1"));
        assert_eq!(PythonPackage::from_descriptor(&d), Some(p.clone()));
        // A purl that does not match the name and version is not read as that package.
        let mut bad = d.clone();
        bad.uri = Some("pkg:pypi/numpy@1.0".into());
        assert_eq!(PythonPackage::from_descriptor(&bad), None);
        let mut bad = d;
        bad.digest.clear();
        assert_eq!(PythonPackage::from_descriptor(&bad), None);
        assert_eq!(
            PythonPackage::from_descriptor(&ResourceDescriptor::default()),
            None
        );

        let e = PythonEnvironment {
            venv: "/tmp/v".into(),
            interpreter: "/usr/bin/python3.11".into(),
            interpreter_sha256: Digest::of(b"elf"),
            version: Some("3.11.2".into()),
            base_prefixes: vec!["/usr".into()],
            pyvenv_cfg_sha256: Digest::of(b"cfg"),
        };
        let d = e.to_descriptor();
        assert_eq!(d.name.as_deref(), Some(PYTHON_DEPENDENCY));
        assert_eq!(PythonEnvironment::from_descriptor(&d), Some(e));
        assert_eq!(PythonPackage::from_descriptor(&d), None);
    }
}
