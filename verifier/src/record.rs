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

/// The buildType of a Slurm job seal (`sealrun seal-job`): one record whose subjects are every
/// rank record of one job step, by digest.
pub const JOB_BUILD_TYPE: &str = "https://sealrun.dev/job/v1";
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
    /// Where the shared namespace was pinned on the node (`/run/sealrun/net/JOB.STEP.NODE`).
    pub namespace: String,
    /// Whether this rank made the namespace (the first rank on the node) or joined it.
    pub created: bool,
    /// What a `connect` could reach, `ADDRESS/PREFIX:FIRST-LAST` (every other destination was
    /// refused and is in the run's `egress_attempts`).
    pub allow: Vec<String>,
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
    pub egress_refused: Vec<String>,
    /// What its connects could reach in the job network (empty: no network).
    pub network_allow: Vec<String>,
}

/// `externalParameters` of a job seal.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobExternalParameters {
    /// The ranks' job name.
    pub name: String,
    pub slurm_job_id: String,
    pub slurm_step_id: String,
    pub world_size: u32,
}

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

impl ResourceDescriptor {
    /// An entry named `name` whose annotations are `notes` (one of this module's types).
    pub fn annotated(name: &str, notes: &impl Serialize) -> ResourceDescriptor {
        ResourceDescriptor {
            name: Some(name.to_string()),
            annotations: Some(to_annotations(notes)),
            ..Default::default()
        }
    }
}

/// `notes` as annotations: a JSON object (keys sorted, as every record has them).
pub fn to_annotations(notes: &impl Serialize) -> serde_json::Value {
    serde_json::to_value(notes).expect("the record schema's types serialize to JSON")
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
#[serde(deny_unknown_fields)]
pub struct ProducedArtifact {
    /// The kind the stage declares it produces (`features`, `model`, ...).
    pub kind: Kind,
    /// Labels propagated from its inputs (see `labels::propagate`).
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

// ---------------------------------------------------------------------------------------------
// The schema: every annotation and byproduct sealrun writes, typed. The launcher builds records
// from these structs and every reader parses them back ([`Contents::parse`]); nothing looks a
// key up by string. A field that is missing, renamed or of another type is a parse error, never
// an empty default.
// ---------------------------------------------------------------------------------------------

/// Name of the byproduct saying how a run ended ([`End`]).
pub const END_BYPRODUCT: &str = "end";
/// Name of the byproduct with what the sandbox refused ([`SandboxReport`]).
pub const SANDBOX_BYPRODUCT: &str = "sandbox";
/// Name of the byproduct listing the secrets delivered and leaked ([`SecretsReport`]).
pub const SECRETS_BYPRODUCT: &str = "secrets";
/// Name of the byproduct with the signals passed on to the job ([`Interrupt`]).
pub const INTERRUPT_BYPRODUCT: &str = "interrupt";
/// Name of the byproduct describing what the run produced ([`ProducedArtifact`]).
pub const ARTIFACT_BYPRODUCT: &str = "artifact";
/// Name of the byproduct listing symlinks and special files among the outputs ([`NonFiles`]).
pub const NON_FILES_BYPRODUCT: &str = "output-non-files";
/// Name of the byproduct a recovered (aborted) run's record carries ([`AbortedNote`]).
pub const ABORTED_BYPRODUCT: &str = "aborted";
/// Names of the log byproducts ([`LogNotes`]).
pub const LOG_BYPRODUCTS: [&str; 2] = ["stdout", "stderr"];
/// Name of the `resolvedDependencies` entry of the job's code folder ([`CodeAnnotation`]).
pub const CODE_DEPENDENCY: &str = "code";
/// Name of the `resolvedDependencies` entry of the command's executable (no annotations).
pub const EXECUTABLE_DEPENDENCY: &str = "executable";

/// What vouched for an input.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProofKind {
    /// A signature (DSSE envelope or model-signing bundle) over the input.
    Signature,
    /// The signed record of the run that produced it.
    Record,
}

impl ProofKind {
    /// `signature` or `record`.
    pub fn as_str(self) -> &'static str {
        match self {
            ProofKind::Signature => "signature",
            ProofKind::Record => "record",
        }
    }
}

/// A proof reference: its kind and the SHA-256 of the proof file (a copy is kept in the
/// records folder as `artifacts/SHA.json`, where `chain` finds it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProofRef {
    #[serde(rename = "type")]
    pub kind: ProofKind,
    pub sha256: String,
}

/// The annotations of an input's `resolvedDependencies` entry (its `digest.sha256` is the
/// digest that was verified).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputAnnotation {
    /// The artifact's name, as its signature (or the producer's record) names it.
    pub artifact: String,
    pub kind: Kind,
    pub version: Option<u64>,
    pub labels: BTreeMap<String, String>,
    /// The policy's name of the key that vouched for it.
    pub signer: String,
    pub keyid: String,
    /// `sealrun-manifest`, `model-signing`, `sealrun-record`, ...
    pub format: String,
    /// Where the job saw it.
    pub mount: String,
    pub proof: ProofRef,
}

/// The annotations of a pipeline summary's entry for one stage (its `digest.sha256` is the
/// stage's outputs digest, its proof the stage's record).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageAnnotation {
    pub kind: Kind,
    pub proof: ProofRef,
    /// `succeeded` or `failed`.
    pub result: String,
}

/// The annotations of the code folder's entry (its `digest.sha256` is the manifest root).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CodeAnnotation {
    pub mount: String,
    /// What the digest is of: `sealrun manifest root`.
    pub digest_of: String,
}

/// What the code folder's digest is.
pub const CODE_DIGEST_OF: &str = "sealrun manifest root";

/// Why the sandbox ended (as the sandbox reports it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EndReason {
    Exited { code: i32 },
    Signaled { signal: i32 },
    Timeout,
    OomKilled,
    PidsLimit { status: i32 },
}

/// Byproduct `end`: how the run ended. A run that never started (refused, aborted, a pipeline
/// summary) has only `result` and `reason`; one that started has all of [`Ran`] too (a part of
/// it missing is a parse error).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(from = "EndRepr", into = "EndRepr")]
pub struct End {
    /// `succeeded`, `failed: ...`, `refused: ...`, `aborted`.
    pub result: String,
    /// `exited 0`, `timeout`, ... (for a run that did not start, the result again, or why).
    pub reason: String,
    /// For a run refused before it started: a stable machine-readable name for why (the
    /// verifier's `kind()` of the error that refused an input: `signature_invalid`,
    /// `digest_mismatch`, ...; `policy`, `rollback`, `staging`, `sandbox_plan`, ...).
    pub refusal: Option<String>,
    pub ran: Option<Ran>,
}

/// The part of [`End`] that only a run that started has.
#[derive(Clone, Debug, PartialEq)]
pub struct Ran {
    pub end: EndReason,
    pub exit_status: i64,
    pub wall_ms: u64,
    pub cpu_user_ms: u64,
    pub cpu_sys_ms: u64,
    pub peak_memory_bytes: u64,
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(untagged)]
enum EndRepr {
    Ran(RanEnd),
    NotRan(NotRanEnd),
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RanEnd {
    result: String,
    reason: String,
    end: EndReason,
    exit_status: i64,
    wall_ms: u64,
    cpu_user_ms: u64,
    cpu_sys_ms: u64,
    peak_memory_bytes: u64,
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct NotRanEnd {
    result: String,
    reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    refusal: Option<String>,
}

impl From<EndRepr> for End {
    fn from(r: EndRepr) -> End {
        match r {
            EndRepr::NotRan(n) => End {
                result: n.result,
                reason: n.reason,
                refusal: n.refusal,
                ran: None,
            },
            EndRepr::Ran(r) => End {
                result: r.result,
                reason: r.reason,
                refusal: None,
                ran: Some(Ran {
                    end: r.end,
                    exit_status: r.exit_status,
                    wall_ms: r.wall_ms,
                    cpu_user_ms: r.cpu_user_ms,
                    cpu_sys_ms: r.cpu_sys_ms,
                    peak_memory_bytes: r.peak_memory_bytes,
                }),
            },
        }
    }
}

impl From<End> for EndRepr {
    fn from(e: End) -> EndRepr {
        match e.ran {
            None => EndRepr::NotRan(NotRanEnd {
                result: e.result,
                reason: e.reason,
                refusal: e.refusal,
            }),
            Some(r) => EndRepr::Ran(RanEnd {
                result: e.result,
                reason: e.reason,
                end: r.end,
                exit_status: r.exit_status,
                wall_ms: r.wall_ms,
                cpu_user_ms: r.cpu_user_ms,
                cpu_sys_ms: r.cpu_sys_ms,
                peak_memory_bytes: r.peak_memory_bytes,
            }),
        }
    }
}

/// A denied system call the job attempted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeniedSyscall {
    /// Name (or `nr_N`).
    pub name: String,
    pub count: u64,
}

/// An outbound network attempt (always refused).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EgressAttempt {
    /// `connect` or `sendto`.
    pub syscall: String,
    /// `inet`, `inet6`, `unix`, `netlink`, or `af_N`.
    pub family: String,
    /// The address (secrets in it redacted).
    pub address: String,
}

/// Landlock as applied.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LandlockReport {
    /// Kernel ABI (0 = unavailable).
    pub abi: u32,
    /// `enforced` or `unsupported`.
    pub status: String,
}

/// Byproduct `sandbox`: what the sandbox refused the job. Every field is required: a record
/// without `denied_syscalls` does not parse (it never reads as "none denied").
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SandboxReport {
    pub denied_syscalls: Vec<DeniedSyscall>,
    pub egress_attempts: Vec<EgressAttempt>,
    /// Connects to allowed peers the sandbox's supervisor carried out (a job network only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peer_connects: Vec<EgressAttempt>,
    pub landlock: LandlockReport,
}

/// One secret as delivered (never its value).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveredSecret {
    pub name: String,
    /// Where the job found it (a private tmpfs).
    pub path: String,
    pub ttl_s: f64,
    /// `tmpfs`.
    pub delivery: String,
    pub delivered_on: String,
    pub expires_on: String,
    /// HMAC-SHA-256 of the value under a key derived from the launcher's signing key.
    pub fingerprint: String,
    pub allow_leak: bool,
}

/// A secret seen where it must not be.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretLeak {
    /// The secret's name.
    pub secret: String,
    /// `stdout`, `stderr`, `output:PATH` or `egress:ADDRESS`.
    pub place: String,
}

/// Byproduct `secrets`: each secret delivered, and every leak found.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretsReport {
    pub secrets: Vec<DeliveredSecret>,
    pub leaked: Vec<SecretLeak>,
}

/// The annotations of a log byproduct (`stdout`, `stderr`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum LogNotes {
    /// Written by the launcher that ran the job.
    Run(RunLog),
    /// Found by recovery after the launcher died.
    Recovered(RecoveredLog),
}

/// A log as the launcher kept it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunLog {
    pub kept_bytes: u64,
    pub dropped_bytes: u64,
    pub truncated: bool,
    pub max_log_size: u64,
    /// Why the file could not be (fully) written.
    pub error: Option<String>,
}

/// A log found by recovery: never complete.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecoveredLog {
    pub complete: bool,
}

/// One symlink or special file among the outputs, as recorded.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NonFileEntry {
    pub path: String,
    /// `symlink` or `special`.
    pub kind: String,
    /// The link text, for symlinks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

/// Byproduct `output-non-files`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NonFiles {
    pub not_followed: Vec<NonFileEntry>,
}

/// Byproduct `aborted`: what recovery found of a run whose launcher died.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AbortedNote {
    pub reason: String,
    /// What the subjects are (or why there are none).
    pub outputs: String,
    pub unreadable_entries: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unattested: Option<UnattestedOutputs>,
}

/// `internalParameters.limits`: the sandbox's limits (null where none was set).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    pub memory_bytes: Option<u64>,
    pub pids: Option<u64>,
    pub timeout_s: Option<f64>,
    pub tmp_bytes: Option<u64>,
    pub shm_bytes: u64,
    pub cpus: Option<f64>,
    pub max_file_bytes: u64,
    pub max_output_bytes: u64,
    pub max_output_files: u64,
    pub max_log_bytes: u64,
    pub post_run_timeout_s: f64,
}

/// `internalParameters`: how the launcher ran the job. A record of a run refused early has only
/// `launcher_sha256`; each later phase adds what it learnt (see the launcher's `run`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InternalParameters {
    /// SHA-256 (hex) of the `sealrun` binary that wrote the record.
    pub launcher_sha256: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub launcher_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<Limits>,
    /// How the inputs were staged, in a word (`store-hit`, `copy`, ..., `none`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub staging: Option<String>,
    /// How each input was staged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub staging_inputs: Option<BTreeMap<String, String>>,
    /// The sandbox profile's name, and the SHA-256 of its files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile_sha256: Option<String>,
    /// SHA-256 of the compiled seccomp program.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bpf_sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub landlock_abi: Option<u32>,
    /// The host uid the job ran as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_host_uid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpus: Option<GpuAccess>,
    /// Set in a record written by recovery after the launcher died.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovered: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovered_by_pid: Option<u32>,
    /// The Slurm task the run was ([`SlurmRank`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slurm: Option<SlurmRank>,
    /// What roots the record's trust: `software-key` or `tpm-quote` (absent in records from
    /// before attestation modes: `software-key`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attestation: Option<AttestationMode>,
    /// With `tpm-quote`: what was measured into PCR 23 (see docs/attestation.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm: Option<TpmMeasurement>,
}

/// `externalParameters` of a run: the job spec as given (secret sources removed). Readers use
/// the name and the output folder; the rest is kept as written.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunExternalParameters {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    #[serde(flatten)]
    pub rest: serde_json::Map<String, serde_json::Value>,
}

/// `externalParameters` of a pipeline summary.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineExternalParameters {
    pub name: String,
    pub stages: Vec<String>,
    pub file: String,
}

/// One `resolvedDependencies` entry, by what it is.
#[derive(Clone, Debug, PartialEq)]
pub enum DependencyKind {
    Input(InputAnnotation),
    Stage(StageAnnotation),
    Code(CodeAnnotation),
    Executable,
    Python(PythonEnvironment),
    PythonPackage(PythonPackage),
    CdiSpec,
}

/// A dependency: the entry as written, and what it is.
#[derive(Clone, Debug, PartialEq)]
pub struct Dependency {
    pub descriptor: ResourceDescriptor,
    pub kind: DependencyKind,
}

impl Dependency {
    /// The entry's name.
    pub fn name(&self) -> &str {
        self.descriptor.name.as_deref().unwrap_or("")
    }

    /// Its `digest.sha256` (empty if it has none).
    pub fn sha256(&self) -> &str {
        self.descriptor
            .digest
            .get("sha256")
            .map(String::as_str)
            .unwrap_or("")
    }

    /// The proof of an input or a stage entry.
    pub fn proof(&self) -> Option<&ProofRef> {
        match &self.kind {
            DependencyKind::Input(a) => Some(&a.proof),
            DependencyKind::Stage(a) => Some(&a.proof),
            _ => None,
        }
    }
}

/// Any of the annotation shapes a dependency can have (each strict).
#[derive(Deserialize)]
#[serde(untagged)]
#[allow(dead_code)] // what counts is that one of the shapes matches
enum AnyDependencyNotes {
    Input(InputAnnotation),
    Stage(StageAnnotation),
    Code(CodeAnnotation),
    Python(PythonEnvironmentNotes),
    Package(PythonPackageNotes),
}

/// The external parameters, by record kind.
#[derive(Clone, Debug, PartialEq)]
pub enum ExternalParameters {
    Run(RunExternalParameters),
    Pipeline(PipelineExternalParameters),
    Job(JobExternalParameters),
}

/// Everything sealrun writes into a record, parsed and typed.
#[derive(Clone, Debug, PartialEq)]
pub struct Contents {
    pub external: ExternalParameters,
    pub internal: InternalParameters,
    /// `resolvedDependencies`, in order.
    pub dependencies: Vec<Dependency>,
    pub end: End,
    pub sandbox: Option<SandboxReport>,
    pub secrets: Option<SecretsReport>,
    pub artifact: Option<ProducedArtifact>,
    pub interrupt: Option<Interrupt>,
    pub output_summary: Option<OutputSummary>,
    pub unattested: Option<UnattestedOutputs>,
    pub non_files: Vec<NonFileEntry>,
    /// `(stdout|stderr, the byproduct, its notes)`.
    pub logs: Vec<(ResourceDescriptor, LogNotes)>,
    pub aborted: Option<AbortedNote>,
    /// A job seal's ranks.
    pub job: Option<JobSeal>,
}

/// Why a record's contents do not parse: which field, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct SchemaError {
    pub field: String,
    pub message: String,
}

fn parse_as<T: serde::de::DeserializeOwned>(
    field: impl Into<String>,
    v: Option<&serde_json::Value>,
) -> Result<T, SchemaError> {
    let field = field.into();
    let v = v.ok_or_else(|| SchemaError {
        field: field.clone(),
        message: "missing".into(),
    })?;
    serde_json::from_value(v.clone()).map_err(|e| SchemaError {
        field,
        message: e.to_string(),
    })
}

impl Contents {
    /// Parse the typed contents of a statement's predicate (see the schema above).
    pub fn parse(p: &Provenance) -> Result<Contents, SchemaError> {
        let bd = &p.build_definition;
        let pipeline = bd.build_type == PIPELINE_BUILD_TYPE;
        let external = if pipeline {
            ExternalParameters::Pipeline(parse_as(
                "buildDefinition.externalParameters",
                Some(&bd.external_parameters),
            )?)
        } else if bd.build_type == JOB_BUILD_TYPE {
            ExternalParameters::Job(parse_as(
                "buildDefinition.externalParameters",
                Some(&bd.external_parameters),
            )?)
        } else {
            ExternalParameters::Run(parse_as(
                "buildDefinition.externalParameters",
                Some(&bd.external_parameters),
            )?)
        };
        let internal = parse_as(
            "buildDefinition.internalParameters",
            Some(&bd.internal_parameters),
        )?;
        let dependencies = bd
            .resolved_dependencies
            .iter()
            .enumerate()
            .map(|(i, d)| parse_dependency(i, d))
            .collect::<Result<_, _>>()?;
        let mut c = Contents {
            external,
            internal,
            dependencies,
            end: End {
                result: String::new(),
                reason: String::new(),
                refusal: None,
                ran: None,
            },
            sandbox: None,
            secrets: None,
            artifact: None,
            interrupt: None,
            output_summary: None,
            unattested: None,
            non_files: Vec::new(),
            logs: Vec::new(),
            aborted: None,
            job: None,
        };
        let mut end = None;
        for (i, b) in p.run_details.byproducts.iter().enumerate() {
            let name = b.name.as_deref().unwrap_or("");
            let field = format!("runDetails.byproducts[{i}] ({name:?}).annotations");
            let a = b.annotations.as_ref();
            match name {
                END_BYPRODUCT => end = Some(parse_as(field, a)?),
                SANDBOX_BYPRODUCT => c.sandbox = Some(parse_as(field, a)?),
                SECRETS_BYPRODUCT => c.secrets = Some(parse_as(field, a)?),
                INTERRUPT_BYPRODUCT => c.interrupt = Some(parse_as(field, a)?),
                ARTIFACT_BYPRODUCT => c.artifact = Some(parse_as(field, a)?),
                OUTPUT_SUMMARY_BYPRODUCT => c.output_summary = Some(parse_as(field, a)?),
                UNATTESTED_BYPRODUCT => c.unattested = Some(parse_as(field, a)?),
                NON_FILES_BYPRODUCT => {
                    c.non_files = parse_as::<NonFiles>(field, a)?.not_followed;
                }
                ABORTED_BYPRODUCT => c.aborted = Some(parse_as(field, a)?),
                JOB_BYPRODUCT if bd.build_type == JOB_BUILD_TYPE => {
                    c.job = Some(parse_as(field, a)?)
                }
                n if LOG_BYPRODUCTS.contains(&n) => c.logs.push((b.clone(), parse_as(field, a)?)),
                _ => {
                    return Err(SchemaError {
                        field: format!("runDetails.byproducts[{i}]"),
                        message: format!("unknown byproduct {name:?}"),
                    })
                }
            }
        }
        c.end = end.ok_or_else(|| SchemaError {
            field: "runDetails.byproducts".into(),
            message: "no `end` byproduct".into(),
        })?;
        Ok(c)
    }

    /// The job's (or pipeline's) name.
    pub fn name(&self) -> &str {
        match &self.external {
            ExternalParameters::Run(r) => &r.name,
            ExternalParameters::Pipeline(p) => &p.name,
            ExternalParameters::Job(j) => &j.name,
        }
    }

    /// The inputs (entries with an [`InputAnnotation`]), with their dependency entries.
    pub fn inputs(&self) -> impl Iterator<Item = (&Dependency, &InputAnnotation)> {
        self.dependencies.iter().filter_map(|d| match &d.kind {
            DependencyKind::Input(a) => Some((d, a)),
            _ => None,
        })
    }

    /// The code folder's entry, if the run had one.
    pub fn code(&self) -> Option<&Dependency> {
        self.dependencies
            .iter()
            .find(|d| matches!(d.kind, DependencyKind::Code(_)))
    }
}

fn parse_dependency(i: usize, d: &ResourceDescriptor) -> Result<Dependency, SchemaError> {
    let name = d.name.as_deref().unwrap_or("");
    let field = format!("buildDefinition.resolvedDependencies[{i}] ({name:?})");
    let fail = |message: String| SchemaError {
        field: field.clone(),
        message,
    };
    let kind = match &d.annotations {
        None if name == EXECUTABLE_DEPENDENCY => DependencyKind::Executable,
        None if name == CDI_SPEC_DEPENDENCY => DependencyKind::CdiSpec,
        None => {
            return Err(fail(
                "no annotations: not a dependency sealrun writes".into(),
            ))
        }
        Some(a) => match serde_json::from_value::<AnyDependencyNotes>(a.clone()) {
            Ok(AnyDependencyNotes::Input(n)) => DependencyKind::Input(n),
            Ok(AnyDependencyNotes::Stage(n)) => DependencyKind::Stage(n),
            Ok(AnyDependencyNotes::Code(n)) if name == CODE_DEPENDENCY => DependencyKind::Code(n),
            Ok(AnyDependencyNotes::Python(_)) => DependencyKind::Python(
                PythonEnvironment::from_descriptor(d)
                    .ok_or_else(|| fail("a malformed Python interpreter entry".into()))?,
            ),
            Ok(AnyDependencyNotes::Package(_)) => DependencyKind::PythonPackage(
                PythonPackage::from_descriptor(d)
                    .ok_or_else(|| fail("a malformed Python package entry".into()))?,
            ),
            _ => {
                return Err(fail(
                    "annotations match no dependency sealrun writes (an input's, a stage's, \
                     the code's or a Python entry's; a field missing or renamed?)"
                        .into(),
                ))
            }
        },
    };
    Ok(Dependency {
        descriptor: d.clone(),
        kind,
    })
}

/// Why a producer's record may not back an input (see [`check_producer`]).
#[derive(Debug, thiserror::Error)]
pub enum ProducerError {
    #[error("the producer run {invocation} did not succeed")]
    NotSucceeded { invocation: String },
    #[error("the producer record declares no produced artifact")]
    NoArtifact,
    #[error("the producer record attests kind {found}, but the input is declared as {expected}")]
    Kind { found: Kind, expected: Kind },
    #[error("the producer record's outputs digest does not match its subjects")]
    OutputsDigest,
    #[error("consumed outputs sha256:{consumed}, but the producer record attests outputs sha256:{attested} (a different run's record)")]
    OtherRun { consumed: String, attested: String },
    #[error(transparent)]
    Stage(#[from] crate::policy::StageViolation),
}

impl ProducerError {
    /// A stable machine-readable name for the reason.
    pub fn kind(&self) -> &'static str {
        match self {
            ProducerError::NotSucceeded { .. } => "producer_failed",
            ProducerError::NoArtifact => "no_artifact",
            ProducerError::Kind { .. } => "wrong_kind",
            ProducerError::OutputsDigest | ProducerError::OtherRun { .. } => "broken_link",
            ProducerError::Stage(_) => "policy",
        }
    }
}

/// The one rule set for an input backed by its producer's record, used by `sealrun run` (before
/// the input is consumed) and by `sealrun-verify chain` (for every link): the producer run
/// succeeded; it declares what it produced, of the kind the consumer expects; that artifact's
/// outputs digest is its subjects' digest, and the one the consumer consumed; the stage policy
/// lets it produce that kind, and (with `consumer`) lets the consumer take it. `producer` must
/// be verified (its signature) by the caller.
pub fn check_producer(
    producer: &Record,
    consumed: &str,
    expected_kind: Option<Kind>,
    consumer: Option<&str>,
    policy: &Policy,
) -> Result<ProducedArtifact, ProducerError> {
    if !producer.succeeded() {
        return Err(ProducerError::NotSucceeded {
            invocation: producer
                .statement
                .predicate
                .run_details
                .metadata
                .invocation_id
                .clone(),
        });
    }
    let produced = producer.produced().ok_or(ProducerError::NoArtifact)?;
    if let Some(expected) = expected_kind.filter(|k| *k != produced.kind) {
        return Err(ProducerError::Kind {
            found: produced.kind,
            expected,
        });
    }
    let attested = producer.subjects_digest().to_hex();
    if produced.outputs_digest != attested {
        return Err(ProducerError::OutputsDigest);
    }
    if consumed != attested {
        return Err(ProducerError::OtherRun {
            consumed: consumed.to_string(),
            attested,
        });
    }
    policy.check_stage(
        producer.job_name(),
        producer.code_digest(),
        produced.kind,
        consumer,
    )?;
    Ok(produced)
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
    /// A field sealrun writes is missing, renamed or of another type (see [`Contents`]).
    #[error("record {record}: {source}")]
    Schema {
        record: String,
        #[source]
        source: SchemaError,
    },
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
            RecordError::MissingField { .. } | RecordError::Schema { .. } => "missing_field",
            RecordError::BuildType { .. } => "build_type",
            RecordError::BadSubject { .. } => "bad_subject",
            RecordError::Outputs { source, .. } => source.kind(),
            RecordError::NonFile { kind, .. } => kind,
            RecordError::Revoked { .. } => "revoked",
            RecordError::Launcher { .. } => "launcher_not_pinned",
        }
    }
}

/// A record's statement and its typed [`Contents`], parsed but not by itself trusted: only a
/// [`VerifiedRecord`] (from [`verify_record`]) is.
#[derive(Debug, Clone)]
pub struct Record {
    pub statement: Statement<Provenance>,
    pub contents: Contents,
}

/// A verified record: its signature checked against the policy, its contents typed.
#[derive(Debug, Clone)]
pub struct VerifiedRecord {
    pub record: Record,
    pub signer: String,
    pub keyid: String,
    /// SHA-256 of the envelope file's bytes (what the audit log refers to).
    pub envelope_digest: Digest,
}

impl std::ops::Deref for VerifiedRecord {
    type Target = Record;
    fn deref(&self) -> &Record {
        &self.record
    }
}

/// Parse a record without checking its signature (for a launcher reading back the record it
/// just wrote, or a listing that says it did not verify). Never use this to trust a record.
pub fn parse_unverified(bytes: &[u8]) -> Option<Record> {
    let env = Envelope::parse(bytes).ok()?;
    let payload = env.payload_bytes().ok()?;
    let statement: Statement<Provenance> = statement::parse(&payload, SLSA_PROVENANCE_V1).ok()?;
    let contents = Contents::parse(&statement.predicate).ok()?;
    Some(Record {
        statement,
        contents,
    })
}

impl Record {
    /// Whether this summarises other records (a pipeline summary, or a Slurm job seal: see
    /// [`Record::is_job`]) rather than being one run.
    pub fn is_pipeline(&self) -> bool {
        let t = &self.statement.predicate.build_definition.build_type;
        t == PIPELINE_BUILD_TYPE || t == JOB_BUILD_TYPE
    }

    /// Whether this is a Slurm job seal.
    pub fn is_job(&self) -> bool {
        self.statement.predicate.build_definition.build_type == JOB_BUILD_TYPE
    }

    /// The Slurm task this run was, if it ran under Slurm ([`SlurmRank`]).
    pub fn slurm(&self) -> Option<&SlurmRank> {
        self.contents.internal.slurm.as_ref()
    }

    /// The result its `end` byproduct states.
    pub fn result(&self) -> &str {
        &self.contents.end.result
    }

    /// The egress attempts the sandbox refused (none for a run that did not start).
    pub fn egress_attempts(&self) -> &[EgressAttempt] {
        self.contents
            .sandbox
            .as_ref()
            .map_or(&[], |s| s.egress_attempts.as_slice())
    }

    /// The produced artifact, if the record declares one.
    pub fn produced(&self) -> Option<ProducedArtifact> {
        self.contents.artifact.clone()
    }

    /// The job (stage) or pipeline name from externalParameters.
    pub fn job_name(&self) -> &str {
        self.contents.name()
    }

    /// The code folder's root digest, if the run had one.
    pub fn code_digest(&self) -> Option<&str> {
        self.contents.code().map(Dependency::sha256)
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
        self.contents.end.result == "succeeded"
    }

    /// The outputs the launcher could not attest (empty if the record lists none).
    pub fn unattested(&self) -> UnattestedOutputs {
        self.contents.unattested.clone().unwrap_or_default()
    }

    /// The output folder's summary, if the record has one.
    pub fn output_summary(&self) -> Option<OutputSummary> {
        self.contents.output_summary.clone()
    }

    /// The Python distributions the run's virtualenv held (empty without one).
    pub fn python_packages(&self) -> Vec<PythonPackage> {
        self.contents
            .dependencies
            .iter()
            .filter_map(|d| match &d.kind {
                DependencyKind::PythonPackage(p) => Some(p.clone()),
                _ => None,
            })
            .collect()
    }

    /// The run's Python interpreter and virtualenv, if it had one.
    pub fn python_environment(&self) -> Option<PythonEnvironment> {
        self.contents
            .dependencies
            .iter()
            .find_map(|d| match &d.kind {
                DependencyKind::Python(p) => Some(p.clone()),
                _ => None,
            })
    }

    /// The GPUs the run was given, if any ([`GpuAccess`]).
    pub fn gpus(&self) -> Option<&GpuAccess> {
        self.contents.internal.gpus.as_ref()
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

    /// The output files the record attests, as a manifest without sizes (for a
    /// cheap check of a folder's file list before anything in it is hashed).
    pub fn outputs_manifest(&self) -> Result<Manifest, String> {
        subjects_manifest(&self.statement.subject)
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
    let contents = Contents::parse(&st.predicate).map_err(|source| RecordError::Schema {
        record: record.clone(),
        source,
    })?;
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
        compare_non_files(&record, &contents.non_files, &actual.other)?;
    }
    Ok(VerifiedRecord {
        signer: signer.name.clone(),
        keyid: signer.key.keyid(),
        envelope_digest: Digest::of(bytes),
        record: Record {
            statement: st,
            contents,
        },
    })
}

/// The non-files on disk must be exactly those the record lists.
fn compare_non_files(
    record: &str,
    listed: &[NonFileEntry],
    on_disk: &[outputs::NonFile],
) -> Result<(), RecordError> {
    let fail = |path: &str, what: String, kind| RecordError::NonFile {
        record: record.to_string(),
        path: path.to_string(),
        what,
        kind,
    };
    let mut listed = listed.to_vec();
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

/// `internalParameters.attestation`: what roots the record's trust. `software-key`: only the
/// launcher's signing key (a file on the host); `tpm-quote`: also a TPM quote of the record
/// (`NAME-ID.quote.json`), with the measurement in `internalParameters.tpm`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AttestationMode {
    SoftwareKey,
    TpmQuote,
}

/// What the launcher measured into PCR 23 before the job ran (`internalParameters.tpm`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TpmMeasurement {
    /// `tpm2-quote` (see [`crate::tpm_evidence::EvidenceKind`]).
    pub evidence: crate::tpm_evidence::EvidenceKind,
    /// Key id of the attestation key that quotes the record.
    pub ak_keyid: String,
    /// The TPM, as it describes itself.
    pub tpm: crate::tpm_evidence::TpmInfo,
    /// Hex SHA-256 of the launcher binary (first extend after the reset).
    pub launcher_sha256: String,
    /// Hex SHA-256 of the trust policy file (second extend).
    pub policy_sha256: String,
    /// The plan; the third extend is the SHA-256 of its compact JSON.
    pub plan: MeasuredPlan,
}

/// The run plan as measured: what the job was going to be, before it ran.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeasuredPlan {
    /// SHA-256 of the job spec file.
    pub spec_sha256: String,
    pub profile_sha256: String,
    pub bpf_sha256: String,
    /// Input name -> verified digest (the manifest root of a folder).
    pub inputs: BTreeMap<String, String>,
    /// Manifest root of the code folder, if any.
    pub code_sha256: Option<String>,
}

impl InternalParameters {
    /// The record's TPM measurement: `Some` exactly when `attestation` is `tpm-quote` (a
    /// record from before attestation modes counts as `software-key`).
    pub fn tpm_measurement(&self) -> Result<Option<&TpmMeasurement>, String> {
        let quoted = self.attestation == Some(AttestationMode::TpmQuote);
        if quoted != self.tpm.is_some() {
            return Err("internalParameters: attestation and tpm disagree".into());
        }
        Ok(self.tpm.as_ref())
    }
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

    /// A minimal run record's predicate: one signed input, a sandbox report, an end.
    fn provenance(sandbox: serde_json::Value, input: serde_json::Value) -> Provenance {
        Provenance {
            build_definition: BuildDefinition {
                build_type: BUILD_TYPE.into(),
                external_parameters: serde_json::json!({"name": "train", "output": "out"}),
                internal_parameters: serde_json::json!({"launcher_sha256": "ab"}),
                resolved_dependencies: vec![ResourceDescriptor {
                    name: Some("data".into()),
                    digest: BTreeMap::from([("sha256".to_string(), "00".repeat(32))]),
                    annotations: Some(input),
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
                byproducts: vec![
                    ResourceDescriptor::annotated(
                        END_BYPRODUCT,
                        &End {
                            result: "succeeded".into(),
                            reason: "succeeded".into(),
                            refusal: None,
                            ran: None,
                        },
                    ),
                    ResourceDescriptor {
                        name: Some(SANDBOX_BYPRODUCT.into()),
                        annotations: Some(sandbox),
                        ..Default::default()
                    },
                ],
            },
        }
    }

    fn input() -> serde_json::Value {
        serde_json::json!({"artifact": "d", "kind": "dataset", "version": 1, "labels": {},
            "signer": "reg", "keyid": "k", "format": "sealrun-manifest", "mount": "/inputs/data",
            "proof": {"type": "signature", "sha256": "11"}})
    }

    #[test]
    fn a_missing_or_renamed_field_is_a_parse_error_never_an_empty_default() {
        let sandbox = serde_json::json!({"denied_syscalls": [{"name": "ptrace", "count": 2}],
            "egress_attempts": [], "landlock": {"abi": 4, "status": "enforced"}});
        let c = Contents::parse(&provenance(sandbox.clone(), input())).unwrap();
        assert_eq!(
            c.sandbox.as_ref().unwrap().denied_syscalls[0].name,
            "ptrace"
        );
        assert_eq!(c.inputs().count(), 1);
        // Without `denied_syscalls` the record does not read as "nothing denied".
        let mut no_list = sandbox.clone();
        no_list.as_object_mut().unwrap().remove("denied_syscalls");
        let e = Contents::parse(&provenance(no_list, input())).unwrap_err();
        assert!(
            e.to_string().contains("missing field `denied_syscalls`"),
            "{e}"
        );
        // Renamed: an unknown field is refused as well.
        let mut renamed = sandbox.clone();
        let list = renamed
            .as_object_mut()
            .unwrap()
            .remove("denied_syscalls")
            .unwrap();
        renamed["denied"] = list;
        assert!(Contents::parse(&provenance(renamed, input())).is_err());
        // An input whose proof was renamed is not taken for a dependency without one.
        let mut bad = input();
        let proof = bad.as_object_mut().unwrap().remove("proof").unwrap();
        bad["proofs"] = proof;
        let e = Contents::parse(&provenance(sandbox, bad)).unwrap_err();
        assert!(e.field.contains("resolvedDependencies[0]"), "{e}");
    }
}
