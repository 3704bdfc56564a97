//! Issue #13 item 5: GPUs through the Container Device Interface. Without a GPU, a synthetic CDI
//! spec (in the test's own folder, found through `SEALRUN_CDI_DIRS`) with stand-in device nodes
//! (character devices with the numbers of /dev/zero and /dev/null, made by the test) proves the
//! plumbing: nodes usable in the sandbox's /dev (read, write, device ioctls pass Landlock), the
//! spec's mounts present read-only, its environment set, its hooks run or reported, the device
//! cgroup (where the host has a v1 devices hierarchy) and the record's GPU fields. The real-GPU
//! test is ignored with its reason where there is none.

use sealrun_integration::exec as common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sealrun_integration::{
    bin, envelope_statement, fails_with, ok, sha256_hex, verify, RunFixture,
};

const UUID: &str = "GPU-520e01f2-cf30-6396-abef-e8e9a5233b0e";
const DRIVER: &str = "575.64.03";

/// The synthetic spec and what it points at.
struct Cdi {
    /// The spec folder (for `SEALRUN_CDI_DIRS`).
    dir: PathBuf,
    /// The spec file.
    file: PathBuf,
    /// The mounted "driver library" (same path inside).
    lib: PathBuf,
    /// The `update-ldcache` folder.
    drvlib: PathBuf,
}

fn mknod(path: &Path, major: u32, minor: u32) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: mknod with a NUL-terminated path in the test's own folder.
    let r = unsafe {
        libc::mknod(
            c.as_ptr(),
            libc::S_IFCHR | 0o666,
            libc::makedev(major, minor),
        )
    };
    assert_eq!(
        r,
        0,
        "mknod {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666)).unwrap();
}

/// A CDI spec as `nvidia-ctk cdi generate` writes it, for one stand-in GPU.
fn make_cdi(root: &Path) -> Cdi {
    let dev = root.join("hostdev");
    let drvlib = root.join("drvlib");
    let dir = root.join("cdi");
    for d in [&dev, &drvlib, &dir] {
        std::fs::create_dir_all(d).unwrap();
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    mknod(&dev.join("nvidia0"), 1, 5); // like /dev/zero
    mknod(&dev.join("nvidiactl"), 1, 3); // like /dev/null
    let lib = drvlib.join(format!("libcuda.so.{DRIVER}"));
    std::fs::write(&lib, "stand-in driver library\n").unwrap();
    std::fs::set_permissions(&lib, std::fs::Permissions::from_mode(0o666)).unwrap();
    // A real shared library in the update-ldcache folder, so that ldconfig lists it.
    let z = std::fs::canonicalize("/usr/lib/x86_64-linux-gnu/libz.so.1")
        .or_else(|_| std::fs::canonicalize("/lib/x86_64-linux-gnu/libz.so.1"))
        .expect("libz.so.1 on the host");
    std::fs::copy(z, drvlib.join("libz.so.1")).unwrap();
    let d = dev.display();
    let l = lib.display();
    let f = drvlib.display();
    let socket = root.join("persistenced.sock");
    std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let s = socket.display();
    let spec = format!(
        r#"---
cdiVersion: 0.5.0
kind: nvidia.com/gpu
containerEdits:
  deviceNodes:
  - path: /dev/nvidiactl
    hostPath: {d}/nvidiactl
  env:
  - NVIDIA_VISIBLE_DEVICES=void
  - SEALRUN_CDI_TEST=from-the-spec
  hooks:
  - args: [nvidia-cdi-hook, create-symlinks, --link, libcuda.so.1::{f}/libcuda.so]
    hookName: createContainer
    path: /usr/bin/nvidia-cdi-hook
  - args: [nvidia-cdi-hook, enable-cuda-compat, --host-driver-version={DRIVER}]
    hookName: createContainer
    path: /usr/bin/nvidia-cdi-hook
  - args: [nvidia-cdi-hook, update-ldcache, --folder, {f}]
    hookName: createContainer
    path: /usr/bin/nvidia-cdi-hook
  mounts:
  - containerPath: {l}
    hostPath: {l}
    options: [ro, nosuid, nodev, bind]
  - containerPath: {f}/libz.so.1
    hostPath: {f}/libz.so.1
    options: [ro, nosuid, nodev, bind]
  - containerPath: /run/nvidia-persistenced/socket
    hostPath: {s}
    options: [ro, nosuid, nodev, bind, noexec]
devices:
- containerEdits:
    deviceNodes:
    - path: /dev/nvidia0
      hostPath: {d}/nvidia0
  name: "0"
- containerEdits:
    deviceNodes:
    - path: /dev/nvidia0
      hostPath: {d}/nvidia0
  name: {UUID}
- containerEdits:
    deviceNodes:
    - path: /dev/nvidia0
      hostPath: {d}/nvidia0
  name: all
"#
    );
    let file = dir.join("nvidia.yaml");
    std::fs::write(&file, spec).unwrap();
    Cdi {
        dir,
        file,
        lib,
        drvlib,
    }
}

/// The job: uses the nodes, looks at the mounts, environment and loader cache, then waits for
/// the test to have looked at the device cgroup.
const SCRIPT: &str = r#"
import errno, fcntl, json, os, sys, termios, time
lib, drvlib = sys.argv[1], sys.argv[2]
res = {}
with open('/dev/nvidia0', 'rb') as fh:
    res['read'] = fh.read(8).hex()
with open('/dev/nvidiactl', 'wb') as fh:
    fh.write(b'x')
    res['write'] = 'ok'
fd = os.open('/dev/nvidia0', os.O_RDONLY)
try:
    fcntl.ioctl(fd, termios.TCGETS, bytes(64))
    res['ioctl'] = 'ok'
except OSError as e:
    res['ioctl'] = errno.errorcode[e.errno]
res['env'] = [os.environ.get('NVIDIA_VISIBLE_DEVICES'), os.environ.get('SEALRUN_CDI_TEST')]
res['lib'] = open(lib).read()
try:
    open(lib, 'a')
    res['lib_write'] = 'ok'
except OSError as e:
    res['lib_write'] = errno.errorcode[e.errno]
res['ldcache'] = (drvlib + '/libz.so.1').encode() in open('/etc/ld.so.cache', 'rb').read()
res['dev'] = sorted(os.listdir('/dev'))
res['persistenced'] = os.path.exists('/run/nvidia-persistenced/socket')
open('/out/ready', 'w').close()
for _ in range(600):
    if os.path.exists('/signal/go'):
        break
    time.sleep(0.05)
json.dump(res, open('/out/result.json', 'w'))
"#;

/// Wait for `path`, or fail with the run's output if it ended first.
fn wait_for(path: &Path, child: &mut std::process::Child) {
    let t = Instant::now();
    while !path.exists() {
        if child.try_wait().unwrap().is_some() {
            let mut err = String::new();
            std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
            panic!("the run ended before {} appeared: {err}", path.display());
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The run's devices cgroup (`devices/sealrun/<id>`), if the host has a v1 devices hierarchy.
fn device_cgroups() -> Vec<PathBuf> {
    std::fs::read_dir("/sys/fs/cgroup/devices/sealrun")
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| p.is_dir())
                .collect()
        })
        .unwrap_or_default()
}

fn host_has_v1_devices() -> bool {
    Path::new("/sys/fs/cgroup/devices/devices.list").exists()
}

#[test]
fn gpu_plumbing_through_sealrun_run_with_a_synthetic_cdi_spec() {
    let f = RunFixture::new();
    let d = f.dir();
    let cdi = make_cdi(d);
    let signal = d.join("signal");
    std::fs::create_dir(&signal).unwrap();
    std::fs::set_permissions(&signal, std::fs::Permissions::from_mode(0o755)).unwrap();
    let lib = cdi.lib.display().to_string();
    let drvlib = cdi.drvlib.display().to_string();
    let spec = f.job(
        "gpu",
        SCRIPT,
        &[&lib, &drvlib],
        &format!(
            "profile = \"gpu\"\ngpus = [0]\nro = [\"{}:/signal\"]\n",
            signal.display()
        ),
    );
    let mut child = Command::new(bin("sealrun"))
        .current_dir(d)
        .env("SEALRUN_CDI_DIRS", &cdi.dir)
        .args(["run", &spec, "--quiet"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(&d.join("gpu-out/ready"), &mut child);
    // While the job runs: its devices cgroup (the one holding this job, found by the unique
    // argument in its command line) denies everything but the listed nodes.
    let ours = |c: &PathBuf| {
        std::fs::read_to_string(c.join("cgroup.procs")).is_ok_and(|procs| {
            procs.lines().any(|pid| {
                std::fs::read(format!("/proc/{}/cmdline", pid.trim()))
                    .is_ok_and(|cmd| String::from_utf8_lossy(&cmd).contains(&lib))
            })
        })
    };
    let cgroup_rules: Vec<String> = device_cgroups()
        .iter()
        .filter(|c| ours(c))
        .filter_map(|c| std::fs::read_to_string(c.join("devices.list")).ok())
        .collect();
    std::fs::write(signal.join("go"), "").unwrap();
    let out = child.wait_with_output().unwrap();
    ok(out);
    if host_has_v1_devices() {
        assert_eq!(
            cgroup_rules.len(),
            1,
            "one live devices cgroup: {cgroup_rules:?}"
        );
        let rules: Vec<&str> = cgroup_rules[0].lines().collect();
        assert!(rules.contains(&"c 1:5 rwm"), "{rules:?}");
        assert!(rules.contains(&"c 1:3 rwm"), "{rules:?}");
        assert!(
            !rules.iter().any(|r| r.starts_with("a ")),
            "deny-all first: {rules:?}"
        );
    }

    check_job_result(&d.join("gpu-out/result.json"));
    let rec = f.record("gpu");
    check_record(&rec, &cdi);
    // The record verifies, and a gate that approves the shipped gpu profile by name passes it.
    std::fs::write(
        d.join("gate.toml"),
        "trust = \"trust.toml\"\napproved_profiles = [\"gpu\"]\n",
    )
    .unwrap();
    let rec = rec.display().to_string();
    ok(verify(
        d,
        &[
            "gate",
            &rec,
            "--policy",
            "gate.toml",
            "--records",
            "records",
        ],
    ));
}

/// What the job saw: the nodes usable, the environment, the mounts read-only, the loader cache.
fn check_job_result(path: &Path) {
    let res: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert_eq!(
        res["read"], "0000000000000000",
        "the stand-in /dev/nvidia0 reads as /dev/zero"
    );
    assert_eq!(res["write"], "ok");
    // Landlock lets device ioctls through (EACCES otherwise); /dev/zero is no terminal.
    assert_eq!(res["ioctl"], "ENOTTY", "{res}");
    assert_eq!(res["env"], serde_json::json!(["void", "from-the-spec"]));
    assert_eq!(res["lib"], "stand-in driver library\n");
    assert_eq!(res["lib_write"], "EROFS", "the spec's mounts are read-only");
    assert_eq!(
        res["ldcache"], true,
        "update-ldcache ran: the cache lists the folder"
    );
    assert_eq!(res["persistenced"], false, "a host socket is not bound");
    let dev: Vec<&str> = res["dev"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert!(
        dev.contains(&"nvidia0") && dev.contains(&"nvidiactl"),
        "{dev:?}"
    );
}

/// The record: each GPU, the spec's digest, the nodes, the hooks and what was done.
fn check_record(rec: &Path, cdi: &Cdi) {
    let st = envelope_statement(rec);
    let g = &st["predicate"]["buildDefinition"]["internalParameters"]["gpus"];
    assert_eq!(g["request"], "0");
    let spec_sha = sha256_hex(&std::fs::read(&cdi.file).unwrap());
    assert_eq!(g["cdiSpecs"][0]["sha256"], spec_sha.as_str());
    assert_eq!(g["cdiSpecs"][0]["path"], cdi.file.display().to_string());
    let dev0 = &g["devices"][0];
    assert_eq!(dev0["cdiName"], "0");
    assert_eq!(dev0["index"], "0");
    assert_eq!(dev0["uuid"], UUID);
    assert_eq!(dev0["driverVersion"], DRIVER);
    assert_eq!(dev0["source"], "cdi-spec");
    assert!(
        g["skippedMounts"][0]
            .as_str()
            .unwrap()
            .contains("/run/nvidia-persistenced/socket: a host socket"),
        "{g}"
    );
    let nodes = g["deviceNodes"].to_string();
    assert!(
        nodes.contains("/dev/nvidia0 1:5 rwm") && nodes.contains("/dev/nvidiactl 1:3 rwm"),
        "{nodes}"
    );
    if host_has_v1_devices() {
        assert!(
            g["deviceCgroup"]
                .as_str()
                .unwrap()
                .starts_with("cgroup v1 devices"),
            "{g}"
        );
    }
    let hooks = g["hooks"].as_array().unwrap();
    let status = |cmd: &str| {
        hooks
            .iter()
            .find(|h| h["args"][1] == cmd)
            .map(|h| h["status"].as_str().unwrap().to_string())
            .unwrap_or_else(|| panic!("hook {cmd} not in the record: {g}"))
    };
    assert_eq!(status("update-ldcache"), "run");
    assert_eq!(status("create-symlinks"), "not-run");
    assert_eq!(status("enable-cuda-compat"), "not-run");
    let deps = st["predicate"]["buildDefinition"]["resolvedDependencies"]
        .as_array()
        .unwrap();
    assert!(
        deps.iter()
            .any(|d| d["name"] == "cdi-spec" && d["digest"]["sha256"] == spec_sha.as_str()),
        "the spec file is a resolved dependency"
    );
}

fn exec_gpus(cdi_dir: &Path, gpus: &str) -> common::Run {
    let mut c = Command::new(common::sealrun_bin());
    c.env("SEALRUN_CDI_DIRS", cdi_dir);
    let p = common::python();
    common::exec_with(
        c,
        &["--profile", "gpu", "--gpus", gpus],
        &[&p, "-c", "print(open('/dev/nvidia0','rb').read(4).hex())"],
    )
}

#[test]
fn exec_gpus_by_uuid_binds_the_node_and_reports() {
    let t = common::tempdir();
    let cdi = make_cdi(t.path());
    let r = exec_gpus(&cdi.dir, UUID);
    assert_eq!(common::ok(&r).trim(), "00000000");
    let g = &r.report["gpus"];
    assert_eq!(g["devices"][0]["uuid"], UUID);
    assert_eq!(g["devices"][0]["index"], "0");
    // Hooks that were not run are said so on stderr, not dropped.
    assert!(
        r.stderr
            .contains("CDI hook /usr/bin/nvidia-cdi-hook create-symlinks not run"),
        "{}",
        r.stderr
    );
}

#[test]
fn gpus_without_a_matching_cdi_device_is_a_plan_time_error() {
    let t = common::tempdir();
    let cdi = make_cdi(t.path());
    let r = exec_gpus(&cdi.dir, "3");
    assert_eq!(r.code, 125, "{r:?}");
    assert!(
        r.stderr.contains("no CDI device nvidia.com/gpu=3")
            && r.stderr.contains(&format!("devices there: 0, {UUID}, all")),
        "{}",
        r.stderr
    );
    // No spec at all: the message says what to install.
    let r = exec_gpus(&t.path().join("empty"), "all");
    assert_eq!(r.code, 125);
    assert!(
        r.stderr
            .contains("nvidia-ctk cdi generate --output=/etc/cdi/nvidia.yaml"),
        "{}",
        r.stderr
    );

    // Through `sealrun run`: a plan-time error (64, with the field's place), before any input
    // is verified; no record, nothing runs.
    let f = RunFixture::new();
    let cdi = make_cdi(f.dir());
    let spec = f.job(
        "nogpu",
        "open('/out/x','w')\n",
        &[],
        "profile = \"gpu\"\ngpus = [\"GPU-00000000-dead\"]\n",
    );
    let out = Command::new(bin("sealrun"))
        .current_dir(f.dir())
        .env("SEALRUN_CDI_DIRS", &cdi.dir)
        .args(["run", &spec, "--quiet"])
        .output()
        .unwrap();
    fails_with(
        out,
        64,
        &[
            "nogpu.toml:",
            "sandbox.gpus",
            "no CDI device nvidia.com/gpu=GPU-00000000-dead",
        ],
    );
    assert!(!f.dir().join("nogpu-out/x").exists());
    assert!(
        f.records("nogpu").is_empty(),
        "a plan-time error writes no record"
    );
}

#[test]
fn a_cdi_spec_cannot_hand_the_job_a_regular_file_or_come_from_a_writable_file() {
    // Attack: a spec whose "device node" is a host file (here the test's own secret) is refused
    // at plan time, for that reason; nothing runs.
    let t = common::tempdir();
    let cdi = make_cdi(t.path());
    let secret = t.path().join("secret");
    std::fs::write(&secret, "host secret").unwrap();
    let text = std::fs::read_to_string(&cdi.file).unwrap().replace(
        &format!("hostPath: {}/hostdev/nvidiactl", t.path().display()),
        &format!("hostPath: {}", secret.display()),
    );
    std::fs::write(&cdi.file, text).unwrap();
    let r = exec_gpus(&cdi.dir, "0");
    assert_eq!(r.code, 125, "{r:?}");
    assert!(r.stderr.contains("not a character device"), "{}", r.stderr);

    // Attack: a spec file others can write (started as root) is refused, naming why.
    std::fs::set_permissions(&cdi.file, std::fs::Permissions::from_mode(0o666)).unwrap();
    let r = exec_gpus(&cdi.dir, "0");
    assert_eq!(r.code, 125, "{r:?}");
    assert!(
        r.stderr.contains("refusing CDI spec") && r.stderr.contains("writable by group or others"),
        "{}",
        r.stderr
    );
}

#[test]
#[ignore = "needs an NVIDIA GPU and the NVIDIA Container Toolkit's CDI spec"]
fn a_real_gpu_runs_cuda_in_the_sandbox() {
    let p = common::python();
    let smi = common::exec(
        &["--profile", "gpu", "--gpus", "all"],
        &["nvidia-smi", "-L"],
    );
    assert!(common::ok(&smi).contains("GPU 0:"), "{smi:?}");
    // A CUDA computation through the driver API: fill device memory, copy it back.
    let code = r#"
import ctypes
cu = ctypes.CDLL('libcuda.so.1')
assert cu.cuInit(0) == 0
n = ctypes.c_int(); assert cu.cuDeviceGetCount(ctypes.byref(n)) == 0 and n.value > 0
dev = ctypes.c_int(); assert cu.cuDeviceGet(ctypes.byref(dev), 0) == 0
ctx = ctypes.c_void_p(); assert cu.cuCtxCreate_v2(ctypes.byref(ctx), 0, dev) == 0
ptr = ctypes.c_uint64(); assert cu.cuMemAlloc_v2(ctypes.byref(ptr), ctypes.c_size_t(4 << 20)) == 0
assert cu.cuMemsetD32_v2(ptr, ctypes.c_uint(0x5ea1), ctypes.c_size_t(1 << 20)) == 0
buf = (ctypes.c_uint * (1 << 20))()
assert cu.cuMemcpyDtoH_v2(buf, ptr, ctypes.c_size_t(4 << 20)) == 0
assert all(x == 0x5ea1 for x in buf[:1024]) and buf[(1 << 20) - 1] == 0x5ea1
print('cuda ok', n.value)
"#;
    let r = common::exec(&["--profile", "gpu", "--gpus", "all"], &[&p, "-c", code]);
    assert!(common::ok(&r).contains("cuda ok"), "{r:?}");
    assert_eq!(r.denied(), Vec::<String>::new(), "{:?}", r.report);
    assert!(r.report["gpus"]["devices"][0]["uuid"]
        .as_str()
        .unwrap()
        .starts_with("GPU-"));
}
