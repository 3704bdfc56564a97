//! GPUs through the Container Device Interface (`[sandbox] gpus`, `sealrun exec --gpus`).
//! Guarantees: the request is resolved against the host's CDI specs before anything runs (a GPU
//! the specs do not define is an error naming the ones they do); every device node, mount and
//! environment entry of the resolved edits is handed to the sandbox (nodes bound under `/dev`,
//! mounts read-only whatever the spec's options say; a host socket, such as
//! nvidia-persistenced's, is not mounted and is listed as skipped); every hook is accounted for in
//! [`GpuAccess::hooks`]: `update-ldcache` is run by the launcher (host `ldconfig` builds a loader
//! cache that also lists the hook's folders, bound read-only at `/etc/ld.so.cache`; `not-run`
//! on a host without `ldconfig`, and an error if it fails),
//! `create-symlinks` is `satisfied` when the host already has every link, and any other hook is
//! `not-run` with the reason — no hook program is ever executed, and none is dropped unreported.
//! Each GPU's UUID, name and driver version come from `nvidia-smi` when the host has it, else
//! from the spec (device names, annotations, the driver version in its file names).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sealrun_sandbox::cdi::{self, GpuRequest, Hook, Resolved};
use sealrun_sandbox::devices::DeviceNode;
use sealrun_sandbox::{Bind, FdBind, SandboxConfig, SandboxPlan};
use sealrun_verifier::record::{CdiSpecFile, GpuAccess, GpuDevice, GpuHook};

/// What a GPU request adds to a sandbox, and what the record says about it.
#[derive(Debug)]
pub struct GpuSetup {
    /// Device nodes.
    pub devices: Vec<DeviceNode>,
    /// Read-only mounts from the spec.
    pub mounts: Vec<Bind>,
    /// Environment from the spec.
    pub env: Vec<(String, String)>,
    /// The loader cache built for `update-ldcache`, bound at `/etc/ld.so.cache`.
    pub ld_cache: Option<FdBind>,
    /// For the record (`device_cgroup` and `device_nodes` are filled by [`GpuSetup::planned`]).
    pub access: GpuAccess,
    /// The folder of the loader cache: a sandbox started without root binds it by path, so it
    /// stays until this is dropped (after the run).
    _ld_cache_dir: Option<tempfile::TempDir>,
}

/// Errors preparing GPUs.
#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    /// Reading or resolving CDI specs.
    #[error(transparent)]
    Cdi(#[from] cdi::CdiError),
    /// A device node of the spec that sealrun does not bind.
    #[error("CDI device node {path}: {detail}")]
    Node {
        /// The node.
        path: String,
        /// Why.
        detail: String,
    },
    /// `update-ldcache` could not be run.
    #[error("CDI hook update-ldcache: {0}")]
    LdCache(String),
}

/// `ldconfig` on the host (root's own; never looked up in `PATH`).
const LDCONFIG: &[&str] = &["/usr/sbin/ldconfig", "/sbin/ldconfig"];
/// `nvidia-smi` on the host.
const NVIDIA_SMI: &[&str] = &["/usr/bin/nvidia-smi", "/bin/nvidia-smi"];

/// Resolve `req` against the CDI specs in [`cdi::spec_dirs`] and prepare what it adds.
pub fn prepare(req: &GpuRequest) -> Result<GpuSetup, GpuError> {
    let files = cdi::load(&cdi::spec_dirs(), cdi::NVIDIA_GPU_KIND)?;
    let r = cdi::resolve(&files, req)?;
    let mut devices = Vec::new();
    for n in &r.device_nodes {
        if n.kind.as_deref().is_some_and(|k| k != "c" && k != "u") {
            return Err(GpuError::Node {
                path: n.path.clone(),
                detail: "only character devices are bound (type \"c\")".into(),
            });
        }
        devices.push(DeviceNode {
            host: PathBuf::from(n.host_path.as_deref().unwrap_or(&n.path)),
            dest: PathBuf::from(&n.path),
            permissions: n.permissions.clone().unwrap_or_else(|| "rwm".into()),
            major: n.major,
            minor: n.minor,
        });
    }
    // Host sockets are not bound: the sandbox refuses (and reports as egress) a connect to a
    // socket that came from the host, whereas a missing one is a quiet ENOENT, as in a container
    // without it (nvidia-persistenced is optional for CUDA).
    let (sockets, files): (Vec<_>, Vec<_>) = r.mounts.iter().partition(|m| {
        std::fs::metadata(&m.host_path)
            .is_ok_and(|md| std::os::unix::fs::FileTypeExt::is_socket(&md.file_type()))
    });
    let skipped_mounts = sockets
        .iter()
        .map(|m| {
            format!(
                "{}:{}: a host socket (a connect to it would be refused and reported as egress)",
                m.host_path, m.container_path
            )
        })
        .collect();
    let mounts: Vec<Bind> = files
        .iter()
        .map(|m| Bind {
            host: m.host_path.clone().into(),
            dest: m.container_path.clone().into(),
        })
        .collect();
    let mut ld_cache = None;
    let mut ld_cache_dir = None;
    let mut hooks = Vec::new();
    for h in &r.hooks {
        let (status, detail) = match hook_command(h) {
            Some("update-ldcache") => match LDCONFIG.iter().find(|p| Path::new(p).is_file()) {
                Some(ldconfig) => {
                    let (fd, dir, detail) = build_ld_cache(ldconfig, &hook_values(h, "--folder"))?;
                    ld_cache = Some(fd);
                    ld_cache_dir = Some(dir);
                    ("run", detail)
                }
                None => (
                    "not-run",
                    format!(
                        "no ldconfig on the host (looked for {LDCONFIG:?}): the job sees the \
                         host's /etc/ld.so.cache"
                    ),
                ),
            },
            Some("create-symlinks") => create_symlinks_status(h),
            other => ("not-run", not_run_reason(other)),
        };
        hooks.push(GpuHook {
            hook_name: h.hook_name.clone(),
            path: h.path.clone(),
            args: h.args.clone(),
            status: status.into(),
            detail,
        });
    }
    let access = GpuAccess {
        request: match req {
            GpuRequest::All => "all".into(),
            GpuRequest::Names(n) => n.join(","),
        },
        cdi_specs: r
            .specs
            .iter()
            .map(|(p, d)| CdiSpecFile {
                path: p.display().to_string(),
                sha256: d.clone(),
            })
            .collect(),
        devices: describe_devices(&r),
        device_nodes: Vec::new(),
        device_cgroup: String::new(),
        mounts: mounts
            .iter()
            .map(|b| format!("{}:{}", b.host.display(), b.dest.display()))
            .collect(),
        skipped_mounts,
        env: r.env.iter().map(|(k, v)| format!("{k}={v}")).collect(),
        hooks,
    };
    Ok(GpuSetup {
        devices,
        mounts,
        env: r.env.clone(),
        ld_cache,
        access,
        _ld_cache_dir: ld_cache_dir,
    })
}

impl GpuSetup {
    /// Hand the devices, mounts, environment and loader cache to `config` (the spec's
    /// environment first: a variable the job sets itself wins).
    pub fn apply(&mut self, config: &mut SandboxConfig) {
        config.devices = std::mem::take(&mut self.devices);
        config.device_mounts = std::mem::take(&mut self.mounts);
        let mut env = self.env.clone();
        env.retain(|(k, _)| !config.env.iter().any(|(ck, _)| ck == k));
        env.append(&mut config.env);
        config.env = env;
        if let Some(fd) = self.ld_cache.take() {
            config.ro_fd_binds.push(fd);
        }
    }

    /// Fill in what the plan decided: the nodes' numbers and the device cgroup.
    pub fn planned(&mut self, plan: &SandboxPlan) {
        self.access.device_nodes = plan
            .devices()
            .iter()
            .map(|d| {
                format!(
                    "{} {}:{} {}",
                    d.dest.display(),
                    d.major,
                    d.minor,
                    d.permissions
                )
            })
            .collect();
        self.access.device_cgroup = plan
            .device_cgroup()
            .map(|m| m.describe().to_string())
            .unwrap_or_default();
    }
}

/// The `nvidia-cdi-hook` / `nvidia-ctk hook` subcommand of a hook, if it is one.
fn hook_command(h: &Hook) -> Option<&str> {
    let prog = Path::new(&h.path).file_name()?.to_str()?;
    let args: Vec<&str> = h.args.iter().map(String::as_str).collect();
    match (prog, args.as_slice()) {
        ("nvidia-cdi-hook", [_, cmd, ..]) => Some(cmd),
        ("nvidia-ctk", [_, "hook", cmd, ..]) => Some(cmd),
        _ => None,
    }
}

/// The values of `--flag V` and `--flag=V` in a hook's arguments.
fn hook_values(h: &Hook, flag: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut it = h.args.iter();
    while let Some(a) = it.next() {
        if a == flag {
            if let Some(v) = it.next() {
                out.push(v.clone());
            }
        } else if let Some(v) = a.strip_prefix(flag).and_then(|r| r.strip_prefix('=')) {
            out.push(v.to_string());
        }
    }
    out
}

fn not_run_reason(cmd: Option<&str>) -> String {
    match cmd {
        Some("enable-cuda-compat") => "not needed: the job uses the host's driver libraries, not CUDA forward-compatibility libraries of an image".into(),
        Some("disable-device-node-modification") => "not needed: the job cannot create or change device nodes (no CAP_MKNOD; only the bound nodes exist)".into(),
        Some("chmod") => "not run: the sandbox makes its /dev folders itself (mode 0755, read-only root)".into(),
        Some(c) => format!("not run: sealrun runs no hook program, and has no equivalent for `{c}`"),
        None => "not run: sealrun runs no hook program (only the NVIDIA hooks it knows are applied)".into(),
    }
}

/// `create-symlinks --link TARGET::LINK`: satisfied when the host has every link already (the
/// links' folders are bound from the host where the job sees them).
fn create_symlinks_status(h: &Hook) -> (&'static str, String) {
    let links = hook_values(h, "--link");
    let missing: Vec<String> = links
        .iter()
        .filter_map(|l| {
            let (target, link) = l.split_once("::")?;
            let ok = std::fs::read_link(link).is_ok_and(|t| t == Path::new(target));
            (!ok).then(|| format!("{link} -> {target}"))
        })
        .collect();
    if missing.is_empty() {
        (
            "satisfied",
            format!("the host already has all {} links", links.len()),
        )
    } else {
        (
            "not-run",
            format!(
                "sealrun creates no links in the job's root; missing on the host: {}",
                missing.join(", ")
            ),
        )
    }
}

/// Build a loader cache that lists the host's folders and `folders` with the host's `ldconfig`
/// (`-X`: it changes no link), and open it for a read-only bind at `/etc/ld.so.cache`.
fn build_ld_cache(
    ldconfig: &str,
    folders: &[String],
) -> Result<(FdBind, tempfile::TempDir, String), GpuError> {
    let err = |m: String| GpuError::LdCache(m);
    let dir = tempfile::tempdir().map_err(|e| err(format!("temporary folder: {e}")))?;
    let conf = dir.path().join("ld.so.conf");
    let cache = dir.path().join("ld.so.cache");
    let mut text = String::from("include /etc/ld.so.conf\n");
    for f in folders {
        if !f.starts_with('/') || f.contains('\n') {
            return Err(err(format!("folder {f:?} is not an absolute path")));
        }
        text.push_str(f);
        text.push('\n');
    }
    std::fs::write(&conf, text).map_err(|e| err(format!("{}: {e}", conf.display())))?;
    let out = std::process::Command::new(ldconfig)
        .arg("-X")
        .arg("-C")
        .arg(&cache)
        .arg("-f")
        .arg(&conf)
        .env_clear()
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| err(format!("{ldconfig}: {e}")))?;
    if !out.status.success() {
        return Err(err(format!(
            "{ldconfig} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let fd = std::fs::File::open(&cache)
        .map_err(|e| err(format!("{}: {e}", cache.display())))?
        .into();
    Ok((
        FdBind {
            fd,
            dest: "/etc/ld.so.cache".into(),
        },
        dir,
        format!(
            "run by the launcher as `{ldconfig} -X -C CACHE` over the host's folders and {}; the cache is bound read-only at /etc/ld.so.cache",
            folders.join(", ")
        ),
    ))
}

/// One line of `nvidia-smi --query-gpu=index,uuid,name,driver_version`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SmiGpu {
    index: String,
    uuid: String,
    name: String,
    driver_version: String,
}

fn parse_smi(text: &str) -> Vec<SmiGpu> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(',').map(str::trim).collect();
            (f.len() == 4).then(|| SmiGpu {
                index: f[0].into(),
                uuid: f[1].into(),
                name: f[2].into(),
                driver_version: f[3].into(),
            })
        })
        .collect()
}

/// Ask the host's `nvidia-smi` (10 s at most); empty when it is absent or fails.
fn query_smi() -> Vec<SmiGpu> {
    let Some(smi) = NVIDIA_SMI.iter().find(|p| Path::new(p).is_file()) else {
        return Vec::new();
    };
    let Ok(mut child) = std::process::Command::new(smi)
        .args([
            "--query-gpu=index,uuid,name,driver_version",
            "--format=csv,noheader",
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
    else {
        return Vec::new();
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Vec::new();
            }
        }
    }
    child
        .wait_with_output()
        .map(|o| parse_smi(&String::from_utf8_lossy(&o.stdout)))
        .unwrap_or_default()
}

/// The driver version the spec shows: `--host-driver-version=V` of a hook, or the version
/// suffix of `libcuda.so.V` among its mounts.
fn spec_driver_version(r: &Resolved) -> Option<String> {
    let from_hook = r
        .hooks
        .iter()
        .find_map(|h| hook_values(h, "--host-driver-version").into_iter().next());
    from_hook.or_else(|| {
        r.mounts.iter().find_map(|m| {
            let name = Path::new(&m.host_path).file_name()?.to_str()?;
            let v = name.strip_prefix("libcuda.so.")?;
            (v.contains('.') && v.chars().all(|c| c.is_ascii_digit() || c == '.'))
                .then(|| v.to_string())
        })
    })
}

/// A product name from annotations (`…/product`, `…/name`, `…gpu.product`).
fn annotated_name(a: &BTreeMap<String, String>) -> Option<String> {
    a.iter()
        .find(|(k, _)| k.ends_with("product") || k.ends_with("/name") || k.ends_with(".name"))
        .map(|(_, v)| v.clone())
}

fn describe_devices(r: &Resolved) -> Vec<GpuDevice> {
    let smi = query_smi();
    let spec_driver = spec_driver_version(r);
    r.devices
        .iter()
        .map(|d| {
            let hit = smi.iter().find(|g| {
                d.uuid.as_deref() == Some(g.uuid.as_str())
                    || (d.uuid.is_none() && d.index.as_deref() == Some(g.index.as_str()))
            });
            match hit {
                Some(g) => GpuDevice {
                    cdi_name: d.name.clone(),
                    index: Some(g.index.clone()),
                    uuid: Some(g.uuid.clone()),
                    name: Some(g.name.clone()),
                    driver_version: Some(g.driver_version.clone()),
                    source: "nvidia-smi".into(),
                },
                None => {
                    let name =
                        annotated_name(&d.annotations).or_else(|| annotated_name(&r.annotations));
                    let known = name.is_some() || spec_driver.is_some();
                    GpuDevice {
                        cdi_name: d.name.clone(),
                        index: d.index.clone(),
                        uuid: d.uuid.clone(),
                        name,
                        driver_version: spec_driver.clone(),
                        source: if known { "cdi-spec" } else { "unknown" }.into(),
                    }
                }
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smi_lines_parse() {
        let g = parse_smi("0, GPU-5a1e, NVIDIA H200, 570.124.06\nbad line\n");
        assert_eq!(g.len(), 1);
        assert_eq!(g[0].name, "NVIDIA H200");
        assert_eq!(g[0].driver_version, "570.124.06");
    }

    #[test]
    fn hooks_are_recognised() {
        let h = Hook {
            hook_name: "createContainer".into(),
            path: "/usr/bin/nvidia-cdi-hook".into(),
            args: [
                "nvidia-cdi-hook",
                "update-ldcache",
                "--folder",
                "/a",
                "--folder=/b",
            ]
            .map(String::from)
            .to_vec(),
            env: vec![],
            timeout: None,
        };
        assert_eq!(hook_command(&h), Some("update-ldcache"));
        assert_eq!(hook_values(&h, "--folder"), ["/a", "/b"]);
        let ctk = Hook {
            path: "/usr/bin/nvidia-ctk".into(),
            args: ["nvidia-ctk", "hook", "chmod"].map(String::from).to_vec(),
            ..h
        };
        assert_eq!(hook_command(&ctk), Some("chmod"));
    }
}
