//! Container Device Interface (CDI) specs: the JSON or YAML files that describe how to give a
//! container a device (the NVIDIA Container Toolkit writes them with `nvidia-ctk cdi generate`).
//! Guarantees: every spec file of the requested kind in the spec folders is read once, hashed
//! (the digest is of the very bytes parsed) and parsed strictly; a request that names no device
//! of the spec is an error listing the devices there are; an edit this crate cannot apply
//! (anything but `env`, `deviceNodes`, `mounts` and `hooks`) is an error, never dropped; started
//! as root, a spec is read only from a file that it and every folder above it are owned by root
//! and not writable by group or others (as profiles: a spec decides which host devices and files
//! a job gets); the
//! result is plain data: device nodes, read-only mounts, environment and hooks, for the caller
//! to apply (device nodes and mounts go into [`crate::SandboxConfig`], hooks are the caller's to
//! run or to report as not run).
//!
//! Folders: `$SEALRUN_CDI_DIRS` (colon-separated) if set, else `/etc/cdi` then `/var/run/cdi`;
//! as in the CDI spec, a device defined again in a later folder replaces the earlier one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};

/// The CDI kind of NVIDIA GPUs.
pub const NVIDIA_GPU_KIND: &str = "nvidia.com/gpu";

/// The spec folders used when `$SEALRUN_CDI_DIRS` is not set.
pub const DEFAULT_DIRS: &[&str] = &["/etc/cdi", "/var/run/cdi"];

/// Spec files larger than this are refused (nvidia-ctk writes a few tens of KiB).
const MAX_SPEC_BYTES: u64 = 16 << 20;

/// Which GPUs a job asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GpuRequest {
    /// Every GPU of the spec (its `all` device, or else every indexed one).
    All,
    /// These CDI device names: indices (`0`, `1`) or UUIDs (`GPU-…`).
    Names(Vec<String>),
}

impl GpuRequest {
    /// Parse `all` or a comma-separated list of indices or UUIDs (`0,1`, `GPU-…`).
    pub fn parse(s: &str) -> Result<GpuRequest, CdiError> {
        let s = s.trim();
        if s == "all" {
            return Ok(GpuRequest::All);
        }
        let names: Vec<String> = s.split(',').map(|n| n.trim().to_string()).collect();
        if names.is_empty() || names.iter().any(|n| !valid_device_name(n) || n == "all") {
            return Err(CdiError::BadRequest(s.to_string()));
        }
        Ok(GpuRequest::Names(names))
    }
}

/// CDI device names: letters, digits, `_ - . :` (the spec's rule).
fn valid_device_name(n: &str) -> bool {
    !n.is_empty()
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'))
}

/// Errors reading specs or resolving a request.
#[derive(Debug, thiserror::Error)]
pub enum CdiError {
    /// `gpus` is neither `all` nor a list of device names.
    #[error("invalid GPU request {0:?}: use \"all\", indices such as \"0,1\", or UUIDs such as \"GPU-…\"")]
    BadRequest(String),
    /// No spec of the kind in any folder.
    #[error(
        "no CDI spec of kind {kind} in {dirs}: install the NVIDIA driver and the NVIDIA Container \
         Toolkit, then run `nvidia-ctk cdi generate --output=/etc/cdi/nvidia.yaml` (or set \
         SEALRUN_CDI_DIRS)"
    )]
    NoSpec {
        /// The kind asked for.
        kind: String,
        /// The folders searched.
        dirs: String,
    },
    /// A spec file could not be read.
    #[error("CDI spec {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// Started as root, a spec file or a folder above it that someone else could change.
    #[error(
        "refusing CDI spec {path}: {what} (started as root, CDI specs are read only from files \
         and folders owned by root and not writable by group or others)"
    )]
    NotRootOwned {
        /// The file.
        path: String,
        /// What is wrong.
        what: String,
    },
    /// A spec file did not parse.
    #[error("CDI spec {path}: {detail}")]
    Parse {
        /// The file.
        path: String,
        /// What the parser said.
        detail: String,
    },
    /// A requested device is in no spec.
    #[error("no CDI device {kind}={name} (in {files}); devices there: {available}")]
    NoDevice {
        /// The kind.
        kind: String,
        /// The name asked for.
        name: String,
        /// The spec files read.
        files: String,
        /// Device names the specs define.
        available: String,
    },
    /// An edit sealrun does not apply.
    #[error("CDI spec {path}: {what} is not supported by sealrun (only env, deviceNodes, mounts and hooks)")]
    Unsupported {
        /// The file.
        path: String,
        /// Which edit.
        what: String,
    },
}

/// A CDI spec file, as far as sealrun reads it.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Spec {
    /// `cdiVersion`.
    pub cdi_version: String,
    /// `vendor.com/class`.
    pub kind: String,
    /// Spec annotations.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// The devices.
    #[serde(default)]
    pub devices: Vec<Device>,
    /// Edits applied whenever any device of the spec is used.
    #[serde(default)]
    pub container_edits: ContainerEdits,
}

/// One device of a spec.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Device {
    /// The name (`0`, `GPU-…`, `all`).
    pub name: String,
    /// Device annotations.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// Its edits.
    #[serde(default)]
    pub container_edits: ContainerEdits,
}

/// `containerEdits`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerEdits {
    /// `NAME=VALUE` entries.
    #[serde(default)]
    pub env: Vec<String>,
    /// Device nodes.
    #[serde(default)]
    pub device_nodes: Vec<DeviceNode>,
    /// Bind mounts.
    #[serde(default)]
    pub mounts: Vec<Mount>,
    /// OCI hooks.
    #[serde(default)]
    pub hooks: Vec<Hook>,
    /// Anything else (`additionalGids`, `intelRdt`, `netDevices`, …): refused when present.
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

/// `deviceNodes[]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceNode {
    /// Path inside the container.
    pub path: String,
    /// Path on the host (default: `path`).
    #[serde(default)]
    pub host_path: Option<String>,
    /// `c`, `u` or `b`.
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    /// Expected major number.
    #[serde(default)]
    pub major: Option<u64>,
    /// Expected minor number.
    #[serde(default)]
    pub minor: Option<u64>,
    /// Cgroup permissions, a subset of `rwm` (default `rwm`).
    #[serde(default)]
    pub permissions: Option<String>,
}

/// `mounts[]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Mount {
    /// Host path.
    pub host_path: String,
    /// Path inside the container.
    pub container_path: String,
    /// Mount options (sealrun always mounts read-only, nosuid, nodev).
    #[serde(default)]
    pub options: Vec<String>,
    /// Mount type (only bind mounts are applied).
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
}

/// `hooks[]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Hook {
    /// OCI hook point (`createContainer`, …).
    pub hook_name: String,
    /// The program.
    pub path: String,
    /// Its argv.
    #[serde(default)]
    pub args: Vec<String>,
    /// Its environment.
    #[serde(default)]
    pub env: Vec<String>,
    /// Timeout in seconds.
    #[serde(default)]
    pub timeout: Option<u64>,
}

/// A spec file as read.
#[derive(Debug, Clone)]
pub struct SpecFile {
    /// Where it was read.
    pub path: PathBuf,
    /// Hex SHA-256 of its bytes.
    pub sha256: String,
    /// Parsed.
    pub spec: Spec,
}

/// One device the request resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedDevice {
    /// The CDI name (`0`, `GPU-…`).
    pub name: String,
    /// Its index, when the spec names it by index too.
    pub index: Option<String>,
    /// Its UUID (`GPU-…`), when the spec names it by UUID too.
    pub uuid: Option<String>,
    /// Device annotations (of the indexed and the UUID entry).
    pub annotations: BTreeMap<String, String>,
    /// The spec file that defines it.
    pub spec_path: PathBuf,
}

/// What a request resolved to: the edits to apply, in order, de-duplicated.
#[derive(Debug, Clone, Default)]
pub struct Resolved {
    /// The spec files used (path, digest).
    pub specs: Vec<(PathBuf, String)>,
    /// The devices (one per GPU).
    pub devices: Vec<ResolvedDevice>,
    /// Device nodes (by container path).
    pub device_nodes: Vec<DeviceNode>,
    /// Mounts (by container path).
    pub mounts: Vec<Mount>,
    /// Environment (a later value for the same name wins).
    pub env: Vec<(String, String)>,
    /// Hooks, in spec order.
    pub hooks: Vec<Hook>,
    /// Spec annotations of the files used.
    pub annotations: BTreeMap<String, String>,
}

/// The spec folders: `$SEALRUN_CDI_DIRS` or [`DEFAULT_DIRS`].
pub fn spec_dirs() -> Vec<PathBuf> {
    match std::env::var_os("SEALRUN_CDI_DIRS") {
        Some(v) if !v.is_empty() => std::env::split_paths(&v).collect(),
        _ => DEFAULT_DIRS.iter().map(PathBuf::from).collect(),
    }
}

/// Read and parse one spec file (JSON or YAML by extension).
pub fn read_spec(path: &Path) -> Result<SpecFile, CdiError> {
    use std::io::Read;
    let shown = path.display().to_string();
    let read_err = |source| CdiError::Read {
        path: shown.clone(),
        source,
    };
    let f = std::fs::File::open(path).map_err(read_err)?;
    if crate::profile::as_root() {
        let meta = f.metadata().map_err(read_err)?;
        crate::profile::root_owned(path, &meta).map_err(|e| CdiError::NotRootOwned {
            path: shown.clone(),
            what: e.to_string(),
        })?;
    }
    let mut bytes = Vec::new();
    f.take(MAX_SPEC_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    if bytes.len() as u64 > MAX_SPEC_BYTES {
        return Err(CdiError::Parse {
            path: shown,
            detail: format!("larger than {MAX_SPEC_BYTES} bytes"),
        });
    }
    let sha256 = hex::encode(Sha256::digest(&bytes));
    let is_json = path.extension().is_some_and(|e| e == "json");
    let spec: Spec = if is_json {
        serde_json::from_slice(&bytes).map_err(|e| e.to_string())
    } else {
        serde_yaml_ng::from_slice(&bytes).map_err(|e| e.to_string())
    }
    .map_err(|detail| CdiError::Parse {
        path: shown.clone(),
        detail,
    })?;
    Ok(SpecFile {
        path: path.to_path_buf(),
        sha256,
        spec,
    })
}

/// Every spec file of `kind` in `dirs`, in folder order, then by file name.
pub fn load(dirs: &[PathBuf], kind: &str) -> Result<Vec<SpecFile>, CdiError> {
    let mut out = Vec::new();
    for dir in dirs {
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => {
                return Err(CdiError::Read {
                    path: dir.display().to_string(),
                    source,
                })
            }
        };
        let mut files: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.extension()
                    .is_some_and(|e| e == "json" || e == "yaml" || e == "yml")
                    && p.is_file()
            })
            .collect();
        files.sort();
        for p in files {
            let f = read_spec(&p)?;
            if f.spec.kind == kind {
                out.push(f);
            }
        }
    }
    if out.is_empty() {
        let dirs = dirs
            .iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(", ");
        return Err(CdiError::NoSpec {
            kind: kind.into(),
            dirs,
        });
    }
    Ok(out)
}

/// Resolve `req` against the spec files (as [`load`] returns them) of kind `nvidia.com/gpu`.
pub fn resolve(files: &[SpecFile], req: &GpuRequest) -> Result<Resolved, CdiError> {
    // Name -> (file index, device); a later file's device replaces an earlier one.
    let mut by_name: BTreeMap<&str, (usize, &Device)> = BTreeMap::new();
    for (i, f) in files.iter().enumerate() {
        for d in &f.spec.devices {
            by_name.insert(d.name.as_str(), (i, d));
        }
    }
    let is_index = |n: &str| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit());
    let wanted: Vec<&str> = match req {
        GpuRequest::All => {
            let mut idx: Vec<&str> = by_name.keys().copied().filter(|n| is_index(n)).collect();
            idx.sort_by_key(|n| n.parse::<u64>().unwrap_or(u64::MAX));
            if idx.is_empty() && by_name.contains_key("all") {
                idx.push("all");
            }
            idx
        }
        GpuRequest::Names(v) => v.iter().map(String::as_str).collect(),
    };
    let mut out = Resolved::default();
    let mut used_files: Vec<usize> = Vec::new();
    let mut edits: Vec<(usize, &ContainerEdits)> = Vec::new();
    if wanted.is_empty() {
        return Err(no_device(files, &by_name, "all"));
    }
    for name in &wanted {
        let (fi, dev) = *by_name
            .get(name)
            .ok_or_else(|| no_device(files, &by_name, name))?;
        // The same GPU under its other name: the entry with the same device nodes.
        let twin = by_name.iter().find(|(n, (_, d))| {
            **n != *name
                && **n != "all"
                && d.container_edits.device_nodes == dev.container_edits.device_nodes
        });
        let (mut index, mut uuid) = (None, None);
        for n in std::iter::once(*name).chain(twin.map(|(n, _)| *n)) {
            if is_index(n) {
                index.get_or_insert_with(|| n.to_string());
            } else if n.starts_with("GPU-") || n.starts_with("MIG-") {
                uuid.get_or_insert_with(|| n.to_string());
            }
        }
        let mut annotations = dev.annotations.clone();
        if let Some((_, (_, t))) = twin {
            for (k, v) in &t.annotations {
                annotations.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
        out.devices.push(ResolvedDevice {
            name: name.to_string(),
            index,
            uuid,
            annotations,
            spec_path: files[fi].path.clone(),
        });
        if !used_files.contains(&fi) {
            used_files.push(fi);
        }
        // With every GPU asked for, the spec's `all` device carries the edits (as for
        // `--device nvidia.com/gpu=all`); its nodes are the indexed devices' nodes.
        if *req != GpuRequest::All || !by_name.contains_key("all") {
            edits.push((fi, &dev.container_edits));
        }
    }
    if *req == GpuRequest::All {
        if let Some((fi, dev)) = by_name.get("all") {
            edits.push((*fi, &dev.container_edits));
            if !used_files.contains(fi) {
                used_files.push(*fi);
            }
        }
    }
    used_files.sort();
    let mut all_edits: Vec<(usize, &ContainerEdits)> = used_files
        .iter()
        .map(|&fi| (fi, &files[fi].spec.container_edits))
        .collect();
    all_edits.extend(edits);
    for (fi, e) in all_edits {
        apply_edits(&mut out, &files[fi].path, e)?;
    }
    for fi in used_files {
        out.specs
            .push((files[fi].path.clone(), files[fi].sha256.clone()));
        for (k, v) in &files[fi].spec.annotations {
            out.annotations.insert(k.clone(), v.clone());
        }
    }
    Ok(out)
}

fn no_device(
    files: &[SpecFile],
    by_name: &BTreeMap<&str, (usize, &Device)>,
    name: &str,
) -> CdiError {
    let kind = files
        .first()
        .map(|f| f.spec.kind.clone())
        .unwrap_or_default();
    let files = files
        .iter()
        .map(|f| f.path.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let available = if by_name.is_empty() {
        "none".to_string()
    } else {
        by_name.keys().copied().collect::<Vec<_>>().join(", ")
    };
    CdiError::NoDevice {
        kind,
        name: name.to_string(),
        files,
        available,
    }
}

fn apply_edits(out: &mut Resolved, path: &Path, e: &ContainerEdits) -> Result<(), CdiError> {
    let unsupported = |what: String| CdiError::Unsupported {
        path: path.display().to_string(),
        what,
    };
    if let Some(k) = e.other.keys().next() {
        return Err(unsupported(format!("edit `{k}`")));
    }
    for kv in &e.env {
        let Some((k, v)) = kv.split_once('=') else {
            return Err(CdiError::Parse {
                path: path.display().to_string(),
                detail: format!("env entry {kv:?} is not NAME=VALUE"),
            });
        };
        out.env.retain(|(ek, _)| ek != k);
        out.env.push((k.to_string(), v.to_string()));
    }
    for n in &e.device_nodes {
        if let Some(p) = &n.permissions {
            if p.is_empty() || !p.chars().all(|c| matches!(c, 'r' | 'w' | 'm')) {
                return Err(unsupported(format!(
                    "device node {} permissions {p:?}",
                    n.path
                )));
            }
        }
        if !out.device_nodes.iter().any(|d| d.path == n.path) {
            out.device_nodes.push(n.clone());
        }
    }
    for m in &e.mounts {
        if m.kind.as_deref().is_some_and(|t| t != "bind") {
            return Err(unsupported(format!(
                "mount {} of type {:?}",
                m.container_path,
                m.kind.as_deref().unwrap_or_default()
            )));
        }
        out.mounts.retain(|x| x.container_path != m.container_path);
        out.mounts.push(m.clone());
    }
    for h in &e.hooks {
        if !out.hooks.contains(h) {
            out.hooks.push(h.clone());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NVIDIA: &str = r#"---
cdiVersion: 0.5.0
containerEdits:
  deviceNodes:
  - path: /dev/nvidiactl
  - path: /dev/nvidia-uvm
  env:
  - NVIDIA_VISIBLE_DEVICES=void
  hooks:
  - args: [nvidia-cdi-hook, update-ldcache, --folder, /usr/lib/x86_64-linux-gnu]
    hookName: createContainer
    path: /usr/bin/nvidia-cdi-hook
  mounts:
  - containerPath: /usr/bin/nvidia-smi
    hostPath: /usr/bin/nvidia-smi
    options: [ro, nosuid, nodev, bind]
devices:
- containerEdits:
    deviceNodes:
    - path: /dev/nvidia0
  name: "0"
- containerEdits:
    deviceNodes:
    - path: /dev/nvidia0
  name: GPU-520e01f2-cf30-6396-abef-e8e9a5233b0e
- containerEdits:
    deviceNodes:
    - path: /dev/nvidia1
  name: "1"
- containerEdits:
    deviceNodes:
    - path: /dev/nvidia0
    - path: /dev/nvidia1
  name: all
kind: nvidia.com/gpu
"#;

    fn spec(dir: &Path) -> Vec<SpecFile> {
        std::fs::write(dir.join("nvidia.yaml"), NVIDIA).unwrap();
        std::fs::write(
            dir.join("other.json"),
            r#"{"cdiVersion":"0.6.0","kind":"vendor.com/x","devices":[]}"#,
        )
        .unwrap();
        load(&[dir.to_path_buf()], NVIDIA_GPU_KIND).unwrap()
    }

    #[test]
    fn resolves_indices_uuids_and_all() {
        let d = tempfile::tempdir().unwrap();
        let files = spec(d.path());
        assert_eq!(files.len(), 1);
        let r = resolve(
            &files,
            &GpuRequest::parse("GPU-520e01f2-cf30-6396-abef-e8e9a5233b0e").unwrap(),
        )
        .unwrap();
        assert_eq!(r.devices[0].index.as_deref(), Some("0"));
        let nodes: Vec<&str> = r.device_nodes.iter().map(|n| n.path.as_str()).collect();
        assert_eq!(nodes, ["/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia0"]);
        assert_eq!(r.env, [("NVIDIA_VISIBLE_DEVICES".into(), "void".into())]);
        assert_eq!(r.hooks.len(), 1);
        assert_eq!(r.mounts.len(), 1);
        assert_eq!(r.specs[0].1.len(), 64);
        let all = resolve(&files, &GpuRequest::All).unwrap();
        let names: Vec<_> = all.devices.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["0", "1"]);
        assert_eq!(
            all.devices[0].uuid.as_deref(),
            Some("GPU-520e01f2-cf30-6396-abef-e8e9a5233b0e")
        );
        assert_eq!(all.device_nodes.len(), 4);
    }

    #[test]
    fn unknown_device_and_bad_request_are_errors() {
        let d = tempfile::tempdir().unwrap();
        let files = spec(d.path());
        let e = resolve(&files, &GpuRequest::parse("7").unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains("no CDI device nvidia.com/gpu=7"), "{e}");
        assert!(e.contains("devices there: 0, 1, GPU-520e"), "{e}");
        assert!(GpuRequest::parse("0,,").is_err());
        assert!(GpuRequest::parse("0;rm").is_err());
        let none = load(&[d.path().join("missing")], NVIDIA_GPU_KIND).unwrap_err();
        assert!(
            none.to_string().contains("nvidia-ctk cdi generate"),
            "{none}"
        );
    }

    #[test]
    fn unsupported_edits_are_refused() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("g.json"),
            r#"{"cdiVersion":"0.6.0","kind":"nvidia.com/gpu","devices":[{"name":"0","containerEdits":{"additionalGids":[44]}}]}"#,
        )
        .unwrap();
        let files = load(&[d.path().to_path_buf()], NVIDIA_GPU_KIND).unwrap();
        let e = resolve(&files, &GpuRequest::All).unwrap_err().to_string();
        assert!(e.contains("edit `additionalGids` is not supported"), "{e}");
    }
}
