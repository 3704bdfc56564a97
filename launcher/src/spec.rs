//! Job specs: a TOML file describing one training job, validated completely
//! before anything runs.
//!
//! Guarantees: unknown fields, wrong types, unparsable sizes or durations,
//! relative mount points, duplicate names or mounts, missing files and an empty
//! command are all refused with one line naming the file, line, column and
//! field, and saying how to fix it. Relative paths are resolved against the
//! spec's own folder, so a spec means the same thing from any working directory.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sealrun_verifier::policy::Kind;

use crate::secrets::{SecretSpec, Source};
use serde::Deserialize;
use toml::Spanned;

/// A spec that failed validation.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error(transparent)]
    Io(#[from] sealrun_verifier::fsread::ReadError),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("{path}:{line}:{col}: {field}: {message}")]
    Invalid {
        path: PathBuf,
        line: usize,
        col: usize,
        field: String,
        message: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpec {
    name: Spanned<String>,
    command: Spanned<Vec<String>>,
    code: Option<Spanned<String>>,
    output: Spanned<String>,
    trust: Option<Spanned<String>>,
    signing_key: Option<Spanned<String>>,
    records: Option<Spanned<String>>,
    audit_log: Option<Spanned<String>>,
    rollback_state: Option<Spanned<String>>,
    events: Option<Spanned<String>>,
    store: Option<Spanned<String>>,
    #[serde(default)]
    admit: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    env: BTreeMap<String, Spanned<String>>,
    #[serde(default, rename = "input")]
    inputs: Vec<RawInput>,
    #[serde(default)]
    sandbox: RawSandbox,
    #[serde(default)]
    secrets: BTreeMap<String, RawSecret>,
    produces: Option<Kind>,
    #[serde(default)]
    declassify: Vec<String>,
    #[serde(default)]
    attestation: crate::tpm::attest::AttestationSettings,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSecret {
    from: Spanned<String>,
    ttl: Spanned<String>,
    path: Option<Spanned<String>>,
    #[serde(default)]
    allow_leak: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInput {
    name: Spanned<String>,
    path: Option<Spanned<String>>,
    signature: Option<Spanned<String>>,
    from_record: Option<Spanned<String>>,
    from_stage: Option<Spanned<String>>,
    #[serde(default = "default_kind")]
    kind: Kind,
    mount: Option<Spanned<String>>,
}

fn default_kind() -> Kind {
    Kind::Dataset
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSandbox {
    profile: Option<Spanned<String>>,
    memory: Option<Spanned<String>>,
    pids: Option<Spanned<u64>>,
    timeout: Option<Spanned<String>>,
    #[serde(default)]
    ro: Vec<Spanned<String>>,
    tmp_size: Option<Spanned<String>>,
    shm: Option<Spanned<String>>,
    cpus: Option<Spanned<f64>>,
    max_file_size: Option<Spanned<String>>,
    max_output_size: Option<Spanned<String>>,
    max_output_files: Option<Spanned<u64>>,
    max_log_size: Option<Spanned<String>>,
    post_run_timeout: Option<Spanned<String>>,
    python: Option<Spanned<String>>,
    gpus: Option<Spanned<RawGpus>>,
    network: Option<Spanned<String>>,
    ports: Option<Spanned<String>>,
}

/// `gpus = "all"`, `"0,1"`, `[0, 1]` or `["GPU-…"]`.
#[derive(Deserialize)]
#[serde(untagged)]
enum RawGpus {
    One(String),
    List(Vec<RawGpu>),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawGpu {
    Index(u64),
    Name(String),
}

/// One verified input of a job.
#[derive(Debug, Clone)]
pub struct Input {
    pub name: String,
    pub path: PathBuf,
    /// What vouches for the input.
    pub proof: Proof,
    pub kind: Kind,
    /// Absolute path inside the sandbox.
    pub mount: String,
}

/// What vouches for an input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Proof {
    /// A signature (sealrun envelope or model-signing bundle).
    Signature(PathBuf),
    /// The signed run record of the stage that produced it.
    Record(PathBuf),
    /// An earlier stage of the same pipeline: its record, once it has run.
    Stage(String),
}

/// Sandbox settings of a job.
#[derive(Debug, Clone)]
pub struct SandboxSpec {
    pub profile: String,
    pub memory: Option<u64>,
    pub pids: Option<u64>,
    pub timeout: Option<Duration>,
    pub ro: Vec<(PathBuf, String)>,
    pub tmp_size: Option<u64>,
    /// The job's Python virtualenv (`python = "VENV"`), checked to be one.
    pub python: Option<crate::venv::Venv>,
    /// GPUs given to the job through the host's CDI specs.
    pub gpus: Option<sealrun_sandbox::cdi::GpuRequest>,
    /// Size of `/dev/shm` (default: the sandbox's, half the memory limit).
    pub shm: Option<u64>,
    /// CPU limit in CPUs (also sets the usual thread-count variables).
    pub cpus: Option<f64>,
    /// Bounds on what the job leaves and on the launcher's work after it.
    pub outputs: OutputLimits,
    /// `network = "none"` (default) or `"job"` (see [`crate::slurm::netns`]).
    pub network: NetworkMode,
    /// The job's TCP port range across nodes (`ports = "29400-29599"`, the default).
    pub ports: (u16, u16),
}

/// The default job port range (torchrun's c10d store 29400, `MASTER_PORT` 29500).
pub const DEFAULT_JOB_PORTS: (u16, u16) = (29400, 29599);

/// `ports = "FIRST-LAST"`.
fn job_ports(ctx: &Ctx, sb: &RawSandbox) -> Result<(u16, u16), SpecError> {
    let Some(p) = sb.ports.as_ref() else {
        return Ok(DEFAULT_JOB_PORTS);
    };
    let parsed = p.get_ref().split_once('-').and_then(|(a, b)| {
        let (a, b) = (a.trim().parse::<u16>().ok()?, b.trim().parse::<u16>().ok()?);
        (a >= 1 && a <= b).then_some((a, b))
    });
    parsed.ok_or_else(|| {
        ctx.err(
            p.span(),
            "sandbox.ports",
            format!(
                "{:?}: give a TCP port range FIRST-LAST, e.g. \"29400-29599\"",
                p.get_ref()
            ),
        )
    })
}

/// `[sandbox] network`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum NetworkMode {
    /// A private namespace with loopback only; every inet connect refused (the default).
    #[default]
    None,
    /// The network namespace shared by the ranks of the job step on this node.
    Job,
}

/// `network = "none"` or `"job"`.
fn network_mode(ctx: &Ctx, sb: &RawSandbox) -> Result<NetworkMode, SpecError> {
    let Some(n) = sb.network.as_ref() else {
        return Ok(NetworkMode::None);
    };
    match n.get_ref().as_str() {
        "none" => Ok(NetworkMode::None),
        "job" => Ok(NetworkMode::Job),
        other => Err(ctx.err(
            n.span(),
            "sandbox.network",
            format!("{other:?}: must be \"none\" (no network) or \"job\" (the ranks of the Slurm job step)"),
        )),
    }
}

/// Bounds on a job's outputs and logs, and on the work after the job ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputLimits {
    /// `RLIMIT_FSIZE` of the job: no file it writes grows past this.
    pub max_file_size: u64,
    /// The output folder's files, counted by allocated blocks and by length.
    pub max_output_size: u64,
    /// Entries of any kind in the output folder.
    pub max_output_files: u64,
    /// Bytes kept of each of stdout and stderr; the rest is dropped after a marker.
    pub max_log_size: u64,
    /// Hashing and scanning the outputs stop this long after the job ends.
    pub post_run_timeout: Duration,
}

impl Default for OutputLimits {
    fn default() -> Self {
        OutputLimits {
            max_file_size: 64 << 30,
            max_output_size: 64 << 30,
            max_output_files: 100_000,
            max_log_size: 64 << 20,
            post_run_timeout: Duration::from_secs(15 * 60),
        }
    }
}

/// A validated job spec.
#[derive(Debug, Clone)]
pub struct JobSpec {
    /// The spec file.
    pub file: PathBuf,
    pub name: String,
    pub command: Vec<String>,
    /// Hashed, recorded and mounted read-only at `/code`.
    pub code: Option<PathBuf>,
    /// Created if missing; mounted read-write at `/out`.
    pub output: PathBuf,
    pub trust: PathBuf,
    pub signing_key: PathBuf,
    pub records: PathBuf,
    pub audit_log: PathBuf,
    /// The launcher's rollback state: the highest version of each artifact a run used
    /// (default: the audit log's path + `.rollback.json`).
    pub rollback_state: PathBuf,
    /// The security event stream (`events = "PATH"`, `-` for stdout; see [`crate::events`]).
    pub events: Option<PathBuf>,
    /// The verified store for signed inputs (`store = "PATH"` or `"off"`; see [`crate::store`]).
    pub store: crate::store::StoreSetting,
    pub admit: BTreeMap<String, Vec<String>>,
    pub env: BTreeMap<String, String>,
    pub inputs: Vec<Input>,
    pub sandbox: SandboxSpec,
    /// Secrets handed to the job through a private tmpfs.
    pub secrets: Vec<SecretSpec>,
    /// The kind of artifact the outputs are (default `model`).
    pub produces: Kind,
    /// Label keys this stage is declared to remove from what it derives (e.g. `pii`).
    pub declassify: Vec<String>,
    /// `[attestation]`: whether the run is measured and quoted by a TPM.
    pub attestation: crate::tpm::attest::AttestationSettings,
    /// The spec as JSON, for the record's externalParameters.
    pub as_json: serde_json::Value,
    /// Where fields that are checked after parsing were written (see [`crate::plan`]).
    pub locations: Locations,
}

/// Where a field was written in the spec: line, column and the field's full name
/// (`stage[N].` inside a pipeline).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Location {
    pub line: usize,
    pub col: usize,
    pub field: String,
}

/// Locations of the fields the plan checks (by their name in a job spec).
pub type Locations = BTreeMap<&'static str, Location>;

/// Where inputs are mounted when `mount` is not given: `/inputs/NAME`.
pub const INPUTS_ROOT: &str = "/inputs";
/// Where the code directory is mounted.
pub const CODE_MOUNT: &str = "/code";
/// Where the output directory is mounted.
pub const OUTPUT_MOUNT: &str = "/out";

struct Ctx<'a> {
    file: &'a Path,
    text: &'a str,
    base: PathBuf,
    /// `stage[N].` inside a pipeline.
    prefix: String,
}

impl Ctx<'_> {
    fn line_col(&self, span: Range<usize>) -> (usize, usize) {
        let upto = &self.text[..span.start.min(self.text.len())];
        let line = upto.matches('\n').count() + 1;
        let col = upto.len() - upto.rfind('\n').map(|i| i + 1).unwrap_or(0) + 1;
        (line, col)
    }

    fn locate(&self, span: Range<usize>, field: &str) -> Location {
        let (line, col) = self.line_col(span);
        Location {
            line,
            col,
            field: format!("{}{field}", self.prefix),
        }
    }

    fn err(&self, span: Range<usize>, field: &str, message: impl Into<String>) -> SpecError {
        let (line, col) = self.line_col(span);
        SpecError::Invalid {
            path: self.file.to_path_buf(),
            line,
            col,
            field: format!("{}{field}", self.prefix),
            message: message.into(),
        }
    }

    fn path(
        &self,
        v: &Spanned<String>,
        field: &str,
        must_exist: bool,
    ) -> Result<PathBuf, SpecError> {
        if v.get_ref().is_empty() {
            return Err(self.err(v.span(), field, "empty path"));
        }
        let p = self.base.join(v.get_ref());
        if must_exist && !p.exists() {
            return Err(self.err(
                v.span(),
                field,
                format!(
                    "{} does not exist (relative paths are resolved against the spec's folder)",
                    p.display()
                ),
            ));
        }
        Ok(p)
    }
}

impl<'a> Ctx<'a> {
    fn new(text: &'a str, file: &'a Path) -> Ctx<'a> {
        let base = file
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf();
        let base = base.canonicalize().unwrap_or(base);
        Ctx {
            file,
            text,
            base,
            prefix: String::new(),
        }
    }
}

fn parse_raw<T: for<'de> Deserialize<'de>>(ctx: &Ctx) -> Result<T, SpecError> {
    let de = toml::Deserializer::new(ctx.text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let field = e
            .path()
            .to_string()
            .replace(".$__serde_spanned_private_value", "");
        let inner = e.into_inner();
        let span = inner.span().unwrap_or(0..0);
        let msg = inner.message().trim().replace('\n', " ");
        ctx.err(span, if field == "." { "(spec)" } else { &field }, msg)
    })
}

/// Settings a pipeline gives every stage.
#[derive(Default)]
struct Shared {
    trust: Option<Spanned<String>>,
    signing_key: Option<Spanned<String>>,
    records: Option<Spanned<String>>,
    audit_log: Option<Spanned<String>>,
    rollback_state: Option<Spanned<String>>,
    events: Option<Spanned<String>>,
    store: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPipeline {
    name: Spanned<String>,
    trust: Option<Spanned<String>>,
    signing_key: Option<Spanned<String>>,
    records: Option<Spanned<String>>,
    audit_log: Option<Spanned<String>>,
    rollback_state: Option<Spanned<String>>,
    events: Option<Spanned<String>>,
    store: Option<Spanned<String>>,
    stage: Vec<RawSpec>,
}

/// A validated pipeline: stages in order, each a job.
#[derive(Debug, Clone)]
pub struct PipelineSpec {
    pub file: PathBuf,
    pub name: String,
    pub stages: Vec<JobSpec>,
}

/// A spec file: one job, or a pipeline of `[[stage]]`s.
#[derive(Debug, Clone)]
pub enum Spec {
    Job(Box<JobSpec>),
    Pipeline(PipelineSpec),
}

/// Read a spec file: regular, non-blocking, at most 1 MiB (a FIFO or device is refused).
fn read_spec(file: &Path) -> Result<String, SpecError> {
    use sealrun_verifier::fsread::{read_bounded_string, Follow, MAX_POLICY_BYTES};
    Ok(read_bounded_string(
        file,
        "job spec",
        MAX_POLICY_BYTES,
        Follow::Yes,
    )?)
}

impl Spec {
    /// Load a job or pipeline spec (a pipeline has `[[stage]]` tables).
    pub fn load(file: &Path) -> Result<Spec, SpecError> {
        let text = read_spec(file)?;
        let is_pipeline = toml::from_str::<toml::Table>(&text)
            .map(|t| t.contains_key("stage"))
            .unwrap_or(false);
        if !is_pipeline {
            return JobSpec::parse(&text, file).map(|j| Spec::Job(Box::new(j)));
        }
        let ctx = Ctx::new(&text, file);
        let raw: RawPipeline = parse_raw(&ctx)?;
        if !valid_name(raw.name.get_ref()) {
            return Err(ctx.err(
                raw.name.span(),
                "name",
                "use 1-64 characters from A-Z a-z 0-9 . _ -",
            ));
        }
        let shared = Shared {
            trust: raw.trust,
            signing_key: raw.signing_key,
            records: raw.records,
            audit_log: raw.audit_log,
            rollback_state: raw.rollback_state,
            events: raw.events,
            store: raw.store,
        };
        let mut stages: Vec<JobSpec> = Vec::new();
        let mut earlier: Vec<(String, PathBuf)> = Vec::new();
        let table: toml::Table = toml::from_str(&text).unwrap_or_default();
        let stage_values = table
            .get("stage")
            .and_then(|s| s.as_array())
            .cloned()
            .unwrap_or_default();
        for (i, st) in raw.stage.into_iter().enumerate() {
            let sctx = Ctx {
                prefix: format!("stage[{i}]."),
                ..Ctx::new(&text, file)
            };
            if earlier.iter().any(|(n, _)| n == st.name.get_ref()) {
                return Err(sctx.err(
                    st.name.span(),
                    "name",
                    format!("two stages are named {:?}", st.name.get_ref()),
                ));
            }
            let mut job = JobSpec::build(&sctx, st, &shared, &earlier)?;
            if let Some(v) = stage_values.get(i) {
                job.as_json = serde_json::to_value(v).unwrap_or(serde_json::Value::Null);
            }
            job.file = file.to_path_buf();
            earlier.push((job.name.clone(), job.output.clone()));
            stages.push(job);
        }
        if stages.is_empty() {
            return Err(ctx.err(0..0, "stage", "a pipeline needs at least one [[stage]]"));
        }
        Ok(Spec::Pipeline(PipelineSpec {
            file: file.to_path_buf(),
            name: raw.name.into_inner(),
            stages,
        }))
    }
}

/// Parse a size such as `512M`, `2G`, `1GB`, `1GiB` or a byte count (see [`crate::units`]).
pub fn parse_size(s: &str) -> Option<u64> {
    crate::units::parse_size(s).ok()
}

/// Parses an optional size field of the spec (value, field name).
type SizeField<'a> = dyn Fn(&Option<Spanned<String>>, &str) -> Result<Option<u64>, SpecError> + 'a;

/// The `[sandbox]` bounds on outputs, logs and post-run work (defaults in
/// [`OutputLimits::default`]; `max_file_size` defaults to `max_output_size`).
fn output_limits(ctx: &Ctx, sb: &RawSandbox, size: &SizeField) -> Result<OutputLimits, SpecError> {
    let d = OutputLimits::default();
    let max_output_size =
        size(&sb.max_output_size, "sandbox.max_output_size")?.unwrap_or(d.max_output_size);
    let max_file_size =
        size(&sb.max_file_size, "sandbox.max_file_size")?.unwrap_or(max_output_size);
    let max_log_size = size(&sb.max_log_size, "sandbox.max_log_size")?.unwrap_or(d.max_log_size);
    if let Some(n) = sb.max_output_files.as_ref().filter(|n| *n.get_ref() == 0) {
        return Err(ctx.err(n.span(), "sandbox.max_output_files", "must be at least 1"));
    }
    let post_run_timeout = match &sb.post_run_timeout {
        None => d.post_run_timeout,
        Some(t) => humantime::parse_duration(t.get_ref())
            .ok()
            .filter(|d| !d.is_zero())
            .ok_or_else(|| {
                ctx.err(
                    t.span(),
                    "sandbox.post_run_timeout",
                    format!("invalid duration {:?} (use e.g. 90s, 10m)", t.get_ref()),
                )
            })?,
    };
    Ok(OutputLimits {
        max_file_size,
        max_output_size,
        max_output_files: sb
            .max_output_files
            .as_ref()
            .map_or(d.max_output_files, |n| *n.get_ref()),
        max_log_size,
        post_run_timeout,
    })
}

fn check_mount(ctx: &Ctx, v: &Spanned<String>, field: &str) -> Result<String, SpecError> {
    let m = v.get_ref();
    let ok = m.starts_with('/')
        && m.len() > 1
        && !m.split('/').any(|c| c == ".." || c == ".")
        && !["/proc", "/dev", "/sys", "/tmp", "/run/secrets"]
            .iter()
            .any(|r| m == r || m.starts_with(&format!("{r}/")));
    if ok {
        Ok(m.trim_end_matches('/').to_string())
    } else {
        Err(ctx.err(
            v.span(),
            field,
            format!("mount point {m:?} must be an absolute path without `..`, outside /proc, /dev, /sys, /tmp and /run/secrets"),
        ))
    }
}

/// `[sandbox] python`: a virtualenv (see [`crate::venv::Venv::open`]) whose folders, bound at
/// their own paths, hide none of the job's mounts and none of the sandbox's own.
fn python_venv(
    ctx: &Ctx,
    v: Option<&Spanned<String>>,
    mounts: &[String],
) -> Result<Option<crate::venv::Venv>, SpecError> {
    let Some(v) = v else { return Ok(None) };
    let field = "sandbox.python";
    let path = ctx.path(v, field, true)?;
    let venv =
        crate::venv::Venv::open(&path).map_err(|e| ctx.err(v.span(), field, e.to_string()))?;
    // Below /tmp is fine (the venv is bound over the /tmp tmpfs), /tmp itself is not.
    let reserved = ["/proc", "/dev", "/sys", "/run/secrets"];
    for p in venv.bind_paths() {
        let overlaps = |m: &str| p.starts_with(m) || Path::new(m).starts_with(p);
        let clash = reserved
            .iter()
            .copied()
            .chain(mounts.iter().map(String::as_str))
            .find(|m| overlaps(m))
            .or((p == Path::new("/tmp")).then_some("/tmp"));
        if let Some(m) = clash {
            return Err(ctx.err(
                v.span(),
                field,
                format!(
                    "{} is bound at its own path, which would overlap {m}; move the virtualenv (or its base interpreter) elsewhere",
                    p.display()
                ),
            ));
        }
    }
    Ok(Some(venv))
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
}

/// Where the rollback state lives unless the spec says: next to the audit log, as
/// `AUDIT_LOG.rollback.json`.
pub fn default_rollback_state(audit_log: &Path) -> PathBuf {
    let mut s = audit_log.as_os_str().to_owned();
    s.push(".rollback.json");
    s.into()
}

impl JobSpec {
    /// Load and validate the spec at `file`.
    pub fn load(file: &Path) -> Result<JobSpec, SpecError> {
        let text = read_spec(file)?;
        Self::parse(&text, file)
    }

    /// Validate spec text; `file` names it in errors and anchors relative paths.
    pub fn parse(text: &str, file: &Path) -> Result<JobSpec, SpecError> {
        let ctx = Ctx::new(text, file);
        let raw: RawSpec = parse_raw(&ctx)?;
        JobSpec::build(&ctx, raw, &Shared::default(), &[])
    }

    /// Validate one job (or pipeline stage): each part of the spec in turn, then how they
    /// relate (mounts, the output folder against everything else).
    fn build(
        ctx: &Ctx,
        raw: RawSpec,
        shared: &Shared,
        earlier: &[(String, PathBuf)],
    ) -> Result<JobSpec, SpecError> {
        check_name_and_command(ctx, &raw)?;
        let code = raw
            .code
            .as_ref()
            .map(|c| ctx.path(c, "code", true))
            .transpose()?;
        if let (Some(c), Some(p)) = (&raw.code, &code) {
            if !p.is_dir() {
                return Err(ctx.err(
                    c.span(),
                    "code",
                    format!("{} is not a directory", p.display()),
                ));
            }
        }
        let output = ctx.path(&raw.output, "output", false)?;
        // Defaults from sealrun.toml next to the spec, then the user's config file.
        let config = crate::config::load(&ctx.base)?;
        let places = places(ctx, &raw, shared, &config)?;
        let env = job_env(ctx, &raw)?;
        let mut mounts: Vec<String> = vec![CODE_MOUNT.into(), OUTPUT_MOUNT.into()];
        let inputs = inputs(ctx, &raw, earlier, &mut mounts)?;
        let sandbox = sandbox(ctx, &raw.sandbox, &mounts)?;
        let locations = locations(ctx, &raw, shared, &config);
        let secrets = secrets(ctx, &raw)?;
        if raw.declassify.iter().any(|k| k == "classification") {
            return Err(ctx.err(
                0..0,
                "declassify",
                "a stage may declare it removes `pii` or other labels, never lower `classification`",
            ));
        }
        check_output_overlap(
            ctx,
            raw.output.span(),
            &output,
            &inputs,
            code.as_deref(),
            &places.records,
            earlier,
        )?;
        let as_json = toml::from_str::<toml::Value>(ctx.text)
            .ok()
            .and_then(|v| serde_json::to_value(v).ok())
            .unwrap_or(serde_json::Value::Null);
        let Places {
            trust,
            signing_key,
            records,
            audit_log,
            rollback_state,
            events,
            store,
        } = places;
        Ok(JobSpec {
            file: ctx.file.to_path_buf(),
            name: raw.name.into_inner(),
            command: raw.command.into_inner(),
            code,
            output,
            trust,
            signing_key,
            records,
            audit_log,
            rollback_state,
            events,
            store,
            admit: raw.admit,
            env,
            inputs,
            sandbox,
            secrets,
            produces: raw.produces.unwrap_or(Kind::Model),
            declassify: raw.declassify.clone(),
            attestation: raw.attestation.clone(),
            as_json,
            locations,
        })
    }
}

/// `name` is a valid name and `command` names a program.
fn check_name_and_command(ctx: &Ctx, raw: &RawSpec) -> Result<(), SpecError> {
    if !valid_name(raw.name.get_ref()) {
        return Err(ctx.err(
            raw.name.span(),
            "name",
            "use 1-64 characters from A-Z a-z 0-9 . _ -",
        ));
    }
    if raw.command.get_ref().is_empty() || raw.command.get_ref()[0].is_empty() {
        return Err(ctx.err(
            raw.command.span(),
            "command",
            "empty command; give the program and its arguments, e.g. [\"python3\", \"/code/train.py\"]",
        ));
    }
    Ok(())
}

/// Where the job's trust policy, key, records, audit log, rollback state, event stream and
/// store are (the spec's own value, else the pipeline's, else the config files' or the default).
struct Places {
    trust: PathBuf,
    signing_key: PathBuf,
    records: PathBuf,
    audit_log: PathBuf,
    rollback_state: PathBuf,
    events: Option<PathBuf>,
    store: crate::store::StoreSetting,
}

fn places(
    ctx: &Ctx,
    raw: &RawSpec,
    shared: &Shared,
    config: &crate::config::Config,
) -> Result<Places, SpecError> {
    let required = |own: &Option<Spanned<String>>,
                    common: &Option<Spanned<String>>,
                    field: &str| {
        match (own.as_ref().or(common.as_ref()), config.get(field)) {
            (Some(v), _) => ctx.path(v, field, true),
            (None, Some(c)) if c.path.exists() => Ok(c.path.clone()),
            (None, Some(c)) => Err(ctx.err(
                0..0,
                field,
                format!("{} (from {}) does not exist", c.path.display(), c.from.display()),
            )),
            (None, None) => Err(ctx.err(
                0..0,
                field,
                format!("missing field `{field}` (give it here, in {} next to the spec, or in $XDG_CONFIG_HOME/sealrun/config.toml)", crate::config::LOCAL_NAME),
            )),
        }
    };
    let trust = required(&raw.trust, &shared.trust, "trust")?;
    let signing_key = required(&raw.signing_key, &shared.signing_key, "signing_key")?;
    let default = |field: &str, builtin: &str| {
        config
            .get(field)
            .map_or_else(|| ctx.base.join(builtin), |c| c.path.clone())
    };
    let records = match raw.records.as_ref().or(shared.records.as_ref()) {
        Some(r) => ctx.path(r, "records", false)?,
        None => default("records", "records"),
    };
    let audit_log = match raw.audit_log.as_ref().or(shared.audit_log.as_ref()) {
        Some(a) => ctx.path(a, "audit_log", false)?,
        None => default("audit_log", "audit.log"),
    };
    let rollback_state = match raw
        .rollback_state
        .as_ref()
        .or(shared.rollback_state.as_ref())
    {
        Some(r) => ctx.path(r, "rollback_state", false)?,
        None => default_rollback_state(&audit_log),
    };
    let events = match raw.events.as_ref().or(shared.events.as_ref()) {
        Some(e) if e.get_ref() == "-" => Some(PathBuf::from("-")),
        Some(e) => Some(ctx.path(e, "events", false)?),
        None => None,
    };
    let store = match (
        raw.store.as_ref().or(shared.store.as_ref()),
        config.get("store"),
    ) {
        (Some(s), _) if s.get_ref() == crate::config::STORE_OFF => crate::store::StoreSetting::Off,
        (Some(s), _) => crate::store::StoreSetting::At(ctx.path(s, "store", false)?),
        (None, Some(c)) if c.path.as_os_str() == crate::config::STORE_OFF => {
            crate::store::StoreSetting::Off
        }
        (None, Some(c)) => crate::store::StoreSetting::At(c.path.clone()),
        (None, None) => crate::store::StoreSetting::Default,
    };
    Ok(Places {
        trust,
        signing_key,
        records,
        audit_log,
        rollback_state,
        events,
        store,
    })
}

/// The job's `env`: names without `=`, nothing with NUL.
fn job_env(ctx: &Ctx, raw: &RawSpec) -> Result<BTreeMap<String, String>, SpecError> {
    let mut env = BTreeMap::new();
    for (k, v) in &raw.env {
        let bad_key = k.is_empty() || k.contains('=') || k.contains('\0');
        if bad_key || v.get_ref().contains('\0') {
            return Err(ctx.err(
                v.span(),
                &format!("env.{k}"),
                "names may not be empty or contain `=`; values may not contain NUL",
            ));
        }
        env.insert(k.clone(), v.get_ref().clone());
    }
    Ok(env)
}

/// The inputs: names unique, exactly one proof each, mounts that overlap neither each other nor
/// `mounts` (each input's is added to it).
fn inputs(
    ctx: &Ctx,
    raw: &RawSpec,
    earlier: &[(String, PathBuf)],
    mounts: &mut Vec<String>,
) -> Result<Vec<Input>, SpecError> {
    let mut inputs = Vec::new();
    for (i, r) in raw.inputs.iter().enumerate() {
        let f = |name: &str| format!("input[{i}].{name}");
        let name = r.name.get_ref().clone();
        if !valid_name(&name) {
            return Err(ctx.err(
                r.name.span(),
                &f("name"),
                "use 1-64 characters from A-Z a-z 0-9 . _ -",
            ));
        }
        if inputs.iter().any(|x: &Input| x.name == name) {
            return Err(ctx.err(
                r.name.span(),
                &f("name"),
                format!("input {name:?} is declared twice"),
            ));
        }
        let proof = match (&r.signature, &r.from_record, &r.from_stage) {
            (Some(sig), None, None) => Proof::Signature(ctx.path(sig, &f("signature"), true)?),
            (None, Some(rec), None) => Proof::Record(ctx.path(rec, &f("from_record"), true)?),
            (None, None, Some(st)) => {
                if !earlier.iter().any(|(n, _)| n == st.get_ref()) {
                    return Err(ctx.err(
                        st.span(),
                        &f("from_stage"),
                        format!("no earlier stage is named {:?} (a stage may only consume stages listed before it)", st.get_ref()),
                    ));
                }
                Proof::Stage(st.get_ref().clone())
            }
            (None, None, None) => {
                return Err(ctx.err(
                    r.name.span(),
                    &f("signature"),
                    "missing: every input needs a `signature`, the `from_record` of the run that produced it, or (in a pipeline) `from_stage` (unsigned means untrusted)",
                ))
            }
            _ => {
                return Err(ctx.err(
                    r.name.span(),
                    &f("signature"),
                    "give exactly one of `signature`, `from_record` or `from_stage`",
                ))
            }
        };
        let path = match (&r.path, &proof) {
            (Some(p), Proof::Stage(_)) => ctx.path(p, &f("path"), false)?,
            (Some(p), _) => ctx.path(p, &f("path"), true)?,
            (None, Proof::Stage(st)) => earlier
                .iter()
                .find(|(n, _)| n == st)
                .map(|(_, out)| out.clone())
                .expect("checked above"),
            (None, _) => return Err(ctx.err(r.name.span(), &f("path"), "missing field `path`")),
        };
        let mount = match &r.mount {
            Some(m) => check_mount(ctx, m, &f("mount"))?,
            None => format!("{INPUTS_ROOT}/{name}"),
        };
        if mounts.iter().any(|m| {
            *m == mount
                || mount.starts_with(&format!("{m}/"))
                || m.starts_with(&format!("{mount}/"))
        }) {
            let span = r.mount.as_ref().map(|m| m.span()).unwrap_or(r.name.span());
            return Err(ctx.err(span, &f("mount"), format!("{mount} overlaps another mount")));
        }
        mounts.push(mount.clone());
        inputs.push(Input {
            name,
            path,
            proof,
            kind: r.kind,
            mount,
        });
    }
    Ok(inputs)
}

/// The `[sandbox]` table: limits, GPUs, read-only binds, the job's Python, the profile.
fn sandbox(ctx: &Ctx, sb: &RawSandbox, mounts: &[String]) -> Result<SandboxSpec, SpecError> {
    let size = |v: &Option<Spanned<String>>, field: &str| -> Result<Option<u64>, SpecError> {
        v.as_ref()
            .map(|s| {
                parse_size(s.get_ref()).ok_or_else(|| {
                    ctx.err(
                        s.span(),
                        field,
                        format!(
                            "invalid size {:?}: {}",
                            s.get_ref(),
                            crate::units::SIZE_HELP
                        ),
                    )
                })
            })
            .transpose()
    };
    let memory = size(&sb.memory, "sandbox.memory")?;
    let tmp_size = size(&sb.tmp_size, "sandbox.tmp_size")?;
    let shm = size(&sb.shm, "sandbox.shm")?;
    let cpus = match &sb.cpus {
        Some(c) if !(c.get_ref().is_finite() && *c.get_ref() >= 0.01 && *c.get_ref() <= 4096.0) => {
            return Err(ctx.err(
                c.span(),
                "sandbox.cpus",
                format!(
                    "invalid CPU limit {}: give a number of CPUs from 0.01 to 4096, e.g. 2 or 1.5",
                    c.get_ref()
                ),
            ))
        }
        c => c.as_ref().map(|c| *c.get_ref()),
    };
    let timeout = sb
        .timeout
        .as_ref()
        .map(|t| {
            humantime::parse_duration(t.get_ref()).map_err(|e| {
                ctx.err(
                    t.span(),
                    "sandbox.timeout",
                    format!(
                        "invalid duration {:?}: {e} (use e.g. 90s, 10m, 2h)",
                        t.get_ref()
                    ),
                )
            })
        })
        .transpose()?;
    if let Some(p) = sb.pids.as_ref().filter(|p| *p.get_ref() == 0) {
        return Err(ctx.err(p.span(), "sandbox.pids", "must be at least 1"));
    }
    let outputs = output_limits(ctx, sb, &size)?;
    let gpus = sb
        .gpus
        .as_ref()
        .map(|g| {
            let text = match g.get_ref() {
                RawGpus::One(s) => s.clone(),
                RawGpus::List(v) => v
                    .iter()
                    .map(|x| match x {
                        RawGpu::Index(i) => i.to_string(),
                        RawGpu::Name(n) => n.clone(),
                    })
                    .collect::<Vec<_>>()
                    .join(","),
            };
            sealrun_sandbox::cdi::GpuRequest::parse(&text)
                .map_err(|e| ctx.err(g.span(), "sandbox.gpus", e.to_string()))
        })
        .transpose()?;
    let mut ro = Vec::new();
    for (i, v) in sb.ro.iter().enumerate() {
        let field = format!("sandbox.ro[{i}]");
        let (host, dest) = match v.get_ref().split_once(':') {
            Some((h, d)) => (h.to_string(), d.to_string()),
            None => (v.get_ref().clone(), v.get_ref().clone()),
        };
        let hp = ctx.path(&Spanned::new(v.span(), host), &field, true)?;
        let dest = check_mount(ctx, &Spanned::new(v.span(), dest), &field)?;
        ro.push((hp, dest));
    }
    let python = python_venv(ctx, sb.python.as_ref(), mounts)?;
    // A profile given as a path is resolved against the spec's folder, like every path.
    let profile = match sb.profile.as_ref().map(|p| p.get_ref()) {
        Some(p) if p.contains('/') || p.ends_with(".json") => {
            ctx.base.join(p).display().to_string()
        }
        Some(p) => p.clone(),
        None => "default".into(),
    };
    Ok(SandboxSpec {
        profile,
        memory,
        pids: sb.pids.as_ref().map(|p| *p.get_ref()),
        timeout,
        ro,
        tmp_size,
        python,
        gpus,
        shm,
        cpus,
        outputs,
        network: network_mode(ctx, sb)?,
        ports: job_ports(ctx, sb)?,
    })
}

/// Where the fields that later checks name (at plan time) came from: file:line:col, or the
/// config file that gave them.
fn locations(
    ctx: &Ctx,
    raw: &RawSpec,
    shared: &Shared,
    config: &crate::config::Config,
) -> Locations {
    let sb = &raw.sandbox;
    let mut locations = Locations::new();
    let own_or_shared = |own: &Option<Spanned<String>>, common: &Option<Spanned<String>>| {
        own.as_ref()
            .map(|v| v.span())
            .or(common.as_ref().map(|v| v.span()))
            .unwrap_or(0..0)
    };
    for (field, own, common) in [
        ("signing_key", &raw.signing_key, &shared.signing_key),
        ("trust", &raw.trust, &shared.trust),
    ] {
        // A value from a config file is named with the file it came from.
        let name = match (own.as_ref().or(common.as_ref()), config.get(field)) {
            (None, Some(c)) => format!("{field} (from {})", c.from.display()),
            _ => field.to_string(),
        };
        locations.insert(field, ctx.locate(own_or_shared(own, common), &name));
    }
    locations.insert("output", ctx.locate(raw.output.span(), "output"));
    if let Some(p) = &sb.profile {
        locations.insert("sandbox.profile", ctx.locate(p.span(), "sandbox.profile"));
    }
    if let Some(g) = &sb.gpus {
        locations.insert("sandbox.gpus", ctx.locate(g.span(), "sandbox.gpus"));
    }
    if let Some(n) = &sb.network {
        locations.insert("sandbox.network", ctx.locate(n.span(), "sandbox.network"));
    }
    locations
}

/// The `[secrets]`: sources (`env:` or `file:`, never a value), TTLs, tmpfs paths under `/run/`.
fn secrets(ctx: &Ctx, raw: &RawSpec) -> Result<Vec<SecretSpec>, SpecError> {
    let mut secrets = Vec::new();
    for (name, r) in &raw.secrets {
        let f = |k: &str| format!("secrets.{name}.{k}");
        if !valid_name(name) {
            return Err(ctx.err(
                r.from.span(),
                &format!("secrets.{name}"),
                "secret names use 1-64 characters from A-Z a-z 0-9 . _ -",
            ));
        }
        let source = match r.from.get_ref().split_once(':') {
            Some(("env", var)) if !var.is_empty() => Source::Env(var.to_string()),
            Some(("file", path)) if !path.is_empty() => Source::File(ctx.base.join(path)),
            _ => return Err(ctx.err(
                r.from.span(),
                &f("from"),
                "use \"env:VARIABLE\" or \"file:PATH\" (the value itself never goes in the spec)",
            )),
        };
        let ttl = humantime::parse_duration(r.ttl.get_ref()).map_err(|e| {
            ctx.err(
                r.ttl.span(),
                &f("ttl"),
                format!(
                    "invalid duration {:?}: {e} (use e.g. 30s, 10m)",
                    r.ttl.get_ref()
                ),
            )
        })?;
        if ttl.is_zero() {
            return Err(ctx.err(r.ttl.span(), &f("ttl"), "must be longer than zero"));
        }
        let path = match &r.path {
            Some(p) => {
                let v = p.get_ref();
                let ok = v.starts_with("/run/")
                    && Path::new(v)
                        .parent()
                        .is_some_and(|d| d != Path::new("/run"))
                    && !v.ends_with('/')
                    && !v.split('/').any(|c| c == ".." || c == ".");
                if !ok {
                    return Err(ctx.err(p.span(), &f("path"), format!("{v:?}: secrets live on a private tmpfs under /run/, e.g. /run/secrets/{name}")));
                }
                v.clone()
            }
            None => format!("/run/secrets/{name}"),
        };
        if secrets.iter().any(|s: &SecretSpec| s.path == path) {
            let span = r.path.as_ref().map(|p| p.span()).unwrap_or(r.from.span());
            return Err(ctx.err(span, &f("path"), format!("{path} is used by two secrets")));
        }
        secrets.push(SecretSpec {
            name: name.clone(),
            source,
            ttl,
            path,
            allow_leak: r.allow_leak,
        });
    }
    Ok(secrets)
}

/// The output folder must not overlap anything the job reads or the launcher writes.
fn check_output_overlap(
    ctx: &Ctx,
    out_span: Range<usize>,
    output: &Path,
    inputs: &[Input],
    code: Option<&Path>,
    records: &Path,
    earlier: &[(String, PathBuf)],
) -> Result<(), SpecError> {
    let overlaps = |a: &Path, b: &Path| a.starts_with(b) || b.starts_with(a);
    for (what, p) in inputs
        .iter()
        .map(|i: &Input| (format!("input {:?}", i.name), i.path.clone()))
        .chain(
            code.iter()
                .map(|c| ("the code folder".to_string(), c.to_path_buf())),
        )
        .chain(std::iter::once((
            "the records folder".to_string(),
            records.to_path_buf(),
        )))
        .chain(
            earlier
                .iter()
                .map(|(n, o)| (format!("the output of stage {n:?}"), o.clone())),
        )
    {
        if overlaps(output, &p) {
            return Err(ctx.err(
                out_span.clone(),
                "output",
                format!(
                    "{} overlaps {what} ({}); give the job a folder of its own",
                    output.display(),
                    p.display()
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (tempfile::TempDir, PathBuf) {
        let d = tempfile::tempdir().unwrap();
        for f in ["trust.toml", "k.key", "data.sig"] {
            std::fs::write(d.path().join(f), "").unwrap();
        }
        std::fs::create_dir(d.path().join("data")).unwrap();
        std::fs::create_dir(d.path().join("code")).unwrap();
        let p = d.path().join("job.toml");
        (d, p)
    }

    const GOOD: &str = r#"name = "train"
command = ["python3", "/code/train.py"]
code = "code"
output = "out"
trust = "trust.toml"
signing_key = "k.key"

[[input]]
name = "points"
path = "data"
signature = "data.sig"

[sandbox]
memory = "512M"
timeout = "5m"
"#;

    fn err(text: &str, p: &Path) -> String {
        JobSpec::parse(text, p).unwrap_err().to_string()
    }

    #[test]
    fn good_spec_resolves_paths() {
        let (_d, p) = setup();
        let s = JobSpec::parse(GOOD, &p).unwrap();
        assert_eq!(s.inputs[0].mount, "/inputs/points");
        assert_eq!(s.sandbox.memory, Some(512 << 20));
        assert_eq!(s.sandbox.timeout, Some(Duration::from_secs(300)));
        assert!(s.output.ends_with("out"));
    }

    #[test]
    fn network_and_ports_are_checked() {
        let (_d, p) = setup();
        let s = JobSpec::parse(GOOD, &p).unwrap();
        assert_eq!(
            (s.sandbox.network, s.sandbox.ports),
            (NetworkMode::None, DEFAULT_JOB_PORTS)
        );
        let with = |extra: &str| format!("{GOOD}{extra}\n");
        let s = JobSpec::parse(&with("network = \"job\"\nports = \"29500-29509\""), &p).unwrap();
        assert_eq!(
            (s.sandbox.network, s.sandbox.ports),
            (NetworkMode::Job, (29500, 29509))
        );
        let e = err(&with("network = \"host\""), &p);
        assert!(
            e.contains(":16:11: sandbox.network: \"host\": must be"),
            "{e}"
        );
        for bad in ["9-1", "0-5", "29500", "a-b"] {
            let e = err(&with(&format!("ports = {bad:?}")), &p);
            assert!(e.contains(":16:9: sandbox.ports:"), "{bad}: {e}");
        }
    }

    #[test]
    fn gpus_are_all_indices_or_uuids() {
        use sealrun_sandbox::cdi::GpuRequest;
        let (_d, p) = setup();
        let with = |v: &str| format!("{GOOD}gpus = {v}\n");
        let s = JobSpec::parse(&with("\"all\""), &p).unwrap();
        assert_eq!(s.sandbox.gpus, Some(GpuRequest::All));
        let s = JobSpec::parse(&with("[0, \"GPU-5a1e\"]"), &p).unwrap();
        assert_eq!(
            s.sandbox.gpus,
            Some(GpuRequest::Names(vec!["0".into(), "GPU-5a1e".into()]))
        );
        assert_eq!(JobSpec::parse(GOOD, &p).unwrap().sandbox.gpus, None);
        let e = err(&with("\"0;reboot\""), &p);
        assert!(
            e.contains(":16:8: sandbox.gpus: invalid GPU request"),
            "{e}"
        );
    }

    #[test]
    fn every_field_type_names_line_and_field() {
        let (_d, p) = setup();
        let cases: &[(&str, &str, &str)] = &[
            ("name = \"train\"", "name = 7", ":1:8: name: invalid type"),
            (
                "memory = \"512M\"",
                "memory = \"lots\"",
                ":14:10: sandbox.memory: invalid size \"lots\"",
            ),
            (
                "timeout = \"5m\"",
                "timeout = \"soon\"",
                ":15:11: sandbox.timeout: invalid duration",
            ),
            (
                "path = \"data\"",
                "path = \"nope\"",
                ":10:8: input[0].path:",
            ),
            (
                "command = [\"python3\", \"/code/train.py\"]",
                "command = []",
                ":2:11: command: empty command",
            ),
            (
                "signature = \"data.sig\"",
                "signature = \"data.sig\"\nmount = \"relative\"",
                "input[0].mount: mount point \"relative\"",
            ),
            (
                "[sandbox]",
                "[sandbox]\nfrobnicate = 1",
                ":14:1: sandbox.frobnicate: unknown field `frobnicate`",
            ),
            (
                "[sandbox]",
                "[sandbox]\npids = \"many\"",
                "sandbox.pids: invalid type",
            ),
            (
                "signature = \"data.sig\"",
                "signature = \"data.sig\"\nkind = \"weights\"",
                "input[0].kind: unknown variant `weights`",
            ),
            (
                "trust = \"trust.toml\"",
                "trust = \"missing.toml\"",
                ":5:9: trust:",
            ),
        ];
        for (from, to, want) in cases {
            let text = GOOD.replacen(from, to, 1);
            let e = err(&text, &p);
            assert!(e.contains(want), "{to}: {e}");
            assert!(e.starts_with(&p.display().to_string()), "{e}");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64K"), Some(65536));
        assert_eq!(parse_size("2G"), Some(2 << 30));
        assert_eq!(parse_size("100"), Some(100));
        assert_eq!(parse_size("0"), None);
        assert_eq!(parse_size("x"), None);
    }
}
