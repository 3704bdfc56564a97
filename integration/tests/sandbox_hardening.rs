//! Attacks found by the security review of the sandbox (issue #11, items 1–8): each case tries
//! the attack from inside `sealrun exec` and asserts the reason it fails. All of them touch only
//! the test's own temp dirs, its own processes and loopback.

use sealrun_integration::exec as common;

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use common::*;

/// Item 3: a datagram socket of the host, bound into the sandbox (read-only: socket inodes
/// ignore that), must not receive anything, whichever call the job uses — `sendmsg` hides its
/// destination from BPF, so the sandbox refuses unix datagram sockets outright, and observes it.
#[test]
fn host_datagram_socket_is_unreachable_by_any_call() {
    let t = tempdir();
    let path = t.path().join("host.dgram");
    let host = UnixDatagram::bind(&path).unwrap();
    host.set_nonblocking(true).unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let bind = format!("{}:/hostdir", t.path().display());
    let r = py(
        &["--ro", &bind],
        r#"
dst = "/hostdir/host.dgram"
def attempt(name, f):
    try:
        f(); print(name, "SENT")
    except OSError as e:
        print(name, "ERR", e.errno)
def via_socket():
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.sendmsg([b"x"], [], 0, dst)
def via_socketpair():
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    a.sendmsg([b"x"], [], 0, dst)
def via_sendto():
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
    s.sendto(b"x", dst)
attempt("socket+sendmsg", via_socket)
attempt("socketpair+sendmsg", via_socketpair)
attempt("socket+sendto", via_sendto)
# A stream socket can only reach it through connect, which is always refused.
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
attempt("stream", lambda: s.connect(dst))
"#,
    );
    let out = ok(&r);
    assert_eq!(
        out.trim(),
        "socket+sendmsg ERR 1\nsocketpair+sendmsg ERR 1\nsocket+sendto ERR 1\nstream ERR 13",
        "{r:?}"
    );
    let mut buf = [0u8; 8];
    assert!(
        host.recv(&mut buf).is_err(),
        "the host datagram socket must receive nothing"
    );
    let denied = r.denied();
    assert!(denied.contains(&"socket".to_string()), "{:?}", r.report);
    assert!(denied.contains(&"socketpair".to_string()), "{:?}", r.report);
}

/// Item 3, the other side: sockets the job's own processes make keep working (stream
/// socketpairs with descriptor passing, what multiprocessing uses).
#[test]
fn the_jobs_own_stream_socketpairs_pass_descriptors() {
    let r = py(
        &[],
        r#"
a, b = socket.socketpair()
r, w = os.pipe()
socket.send_fds(a, [b"fd"], [w])
msg, fds, _, _ = socket.recv_fds(b, 16, 1)
os.write(fds[0], b"through the passed fd")
print(os.read(r, 64).decode())
s1, s2 = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
s1.send(b"seq"); print(s2.recv(8).decode())
"#,
    );
    assert_eq!(ok(&r).trim(), "through the passed fd\nseq", "{r:?}");
    assert!(r.denied().is_empty(), "{:?}", r.report);
}

/// Item 4: only the allowlisted families reach the kernel, through `socket` and `socketpair`;
/// each refusal is observed.
#[test]
fn socket_families_outside_the_allowlist_never_reach_the_kernel() {
    let r = py(
        &[],
        r#"
cases = [
    ("socketpair inet", lambda: socket.socketpair(socket.AF_INET, socket.SOCK_STREAM)),
    ("socketpair unix dgram", lambda: socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)),
    ("netlink generic", lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 16)),
    ("netlink audit", lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 9)),
    ("alg", lambda: socket.socket(38, socket.SOCK_SEQPACKET)),
    ("packet", lambda: socket.socket(17, socket.SOCK_RAW)),
    ("high bits", lambda: sc(41, (1 << 32) | 17, 3, 0)),
]
for name, f in cases:
    try:
        got = f()
        if isinstance(got, tuple) and got[0] < 0:
            print(name, "ERR", got[1])
        else:
            print(name, "OPENED")
    except OSError as e:
        print(name, "ERR", e.errno)
# The allowlisted ones work.
socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0).close()
socket.socket(socket.AF_INET6, socket.SOCK_DGRAM).close()
socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_NONBLOCK).close()
print("allowed ok")
"#,
    );
    let out = ok(&r);
    for name in [
        "socketpair inet",
        "socketpair unix dgram",
        "netlink generic",
        "netlink audit",
        "alg",
        "packet",
        "high bits",
    ] {
        assert!(out.contains(&format!("{name} ERR 1\n")), "{name}: {out}");
    }
    assert!(out.contains("allowed ok"), "{out}");
    let denied = r.report["denied_syscalls"].as_array().cloned().unwrap();
    let count = |n: &str| {
        denied
            .iter()
            .find(|d| d["name"] == n)
            .and_then(|d| d["count"].as_u64())
            .unwrap_or(0)
    };
    assert_eq!(count("socket"), 5, "{:?}", r.report);
    assert_eq!(count("socketpair"), 2, "{:?}", r.report);
}

/// Item 5: a job cannot stack its own filter (which could answer ERRNO before the sandbox's
/// USER_NOTIF and so hide its egress attempts): `seccomp()` and `prctl(PR_SET_SECCOMP)` are
/// refused, the attempts are reported, and a later connect still reaches the report.
#[test]
fn a_job_cannot_blind_the_observation_with_its_own_filter() {
    let r = py(
        &[],
        r#"
import struct
# A filter returning ERRNO(EPERM) for every call.
prog = struct.pack("HBBI", 0x06, 0, 0, 0x00050001)
buf = ctypes.create_string_buffer(prog)
fprog = struct.pack("HxxxxxxQ", 1, ctypes.addressof(buf))
fbuf = ctypes.create_string_buffer(fprog)
libc.prctl(38, 1, 0, 0, 0)  # no_new_privs (already set by the sandbox)
print("seccomp", sc(317, 1, 0, ctypes.addressof(fbuf)))
print("prctl", sc(157, 22, 2, ctypes.addressof(fbuf)))
print("strict", sc(157, 22, 1, 0))
s = socket.socket(); s.settimeout(2)
try:
    s.connect(("127.0.0.1", 9)); print("CONNECTED")
except OSError as e:
    print("connect ERR", e.errno)
"#,
    );
    let out = ok(&r);
    assert_eq!(
        out.trim(),
        "seccomp (-1, 1)\nprctl (-1, 1)\nstrict (-1, 1)\nconnect ERR 101",
        "{r:?}"
    );
    let denied = r.denied();
    for name in ["seccomp", "prctl", "connect"] {
        assert!(denied.contains(&name.to_string()), "{name}: {:?}", r.report);
    }
    assert!(
        r.egress().contains(&"127.0.0.1:9".to_string()),
        "{:?}",
        r.report
    );
}

/// Item 1: a flood of observed calls from hundreds of threads keeps the listener readable at
/// every pass of the supervisor's loop; the deadline must still kill the tree on time.
#[test]
fn the_timeout_holds_under_a_flood_of_notifications() {
    let start = Instant::now();
    let r = py(
        &["--timeout", "2s"],
        r#"
import threading, time
end = time.time() + 8  # the flood stops by itself: a sandbox that fails open ends too
def flood():
    while time.time() < end:
        try:
            os.chroot("/")
        except OSError:
            pass
# Eight processes of 40 threads each: no one interpreter lock paces them all.
for _ in range(7):
    if os.fork() == 0:
        break
ts = [threading.Thread(target=flood, daemon=True) for _ in range(40)]
for t in ts:
    t.start()
print("flooding", flush=True)
for t in ts:
    t.join()
"#,
    );
    let took = start.elapsed();
    assert_eq!(r.end_kind(), "timeout", "{:?}", r.report);
    assert!(
        took < Duration::from_secs(4),
        "killed {:?} after the start (deadline 2 s)",
        took
    );
    assert!(r.denied().contains(&"chroot".to_string()), "{:?}", r.report);
}

/// The host range a sandbox's `/proc/self/uid_map` shows: `(base, count)` of inside id 0.
fn host_range(uid_map: &str) -> (u64, u64) {
    let f: Vec<u64> = uid_map
        .split_whitespace()
        .map(|x| x.parse().unwrap())
        .collect();
    assert_eq!(f.len(), 3, "one range expected: {uid_map:?}");
    assert_eq!(f[0], 0);
    (f[1], f[2])
}

/// `sealrun exec -- cat /proc/self/uid_map` in a private mount namespace whose `/etc` is an
/// overlay with the given `subuid` and `subgid` files (scratch only: the overlay's upper folder is
/// the test's temp dir and the namespace ends with the command).
fn uid_map_with_subids(subuid: &str, subgid: &str) -> std::process::Output {
    let t = tempdir();
    let (upper, work) = (t.path().join("upper"), t.path().join("work"));
    std::fs::create_dir_all(&upper).unwrap();
    std::fs::create_dir_all(&work).unwrap();
    std::fs::write(upper.join("subuid"), subuid).unwrap();
    std::fs::write(upper.join("subgid"), subgid).unwrap();
    let script = format!(
        "mount -t overlay overlay -o lowerdir=/etc,upperdir={},workdir={} /etc && exec \"$0\" exec -- /bin/cat /proc/self/uid_map",
        upper.display(),
        work.display()
    );
    std::process::Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", &script])
        .arg(sealrun_bin())
        .output()
        .expect("unshare")
}

/// Item 6: as root, each run maps host ids of its own — never the default subordinate range of
/// the first regular user (100000–165535), never an `/etc/subuid`/`/etc/subgid` entry, and
/// never the range of a concurrent run. (Needs root, as the suite does: rootless runs map the
/// caller's own uid.)
#[test]
fn host_ids_avoid_subordinate_ranges_and_concurrent_runs() {
    let spawn = || {
        std::process::Command::new(sealrun_bin())
            .args([
                "exec",
                "--",
                "/bin/sh",
                "-c",
                "cat /proc/self/uid_map; sleep 1",
            ])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    let ra = host_range(&String::from_utf8_lossy(&a.stdout));
    let rb = host_range(&String::from_utf8_lossy(&b.stdout));
    assert_ne!(ra.0, rb.0, "concurrent runs share host ids");
    for (base, count) in [ra, rb] {
        assert!(base >= 0x7000_0000 && base + count <= 0x7FFE_0000, "{base}");
        assert!(base >= 165_536, "overlaps the default subuid range: {base}");
    }

    // Slots 0 and 1 belong to alice's subuid entry, slot 2 to bob's subgid entry.
    let out = uid_map_with_subids("alice:1879048192:131072\n", "bob:1879179264:65536\n");
    assert!(out.status.success(), "{out:?}");
    let (base, count) = host_range(&String::from_utf8_lossy(&out.stdout));
    assert!(
        base >= 0x7000_0000 + 3 * 65536,
        "overlaps a subordinate range: {base}"
    );
    assert_eq!(count, 65536);

    // Every slot taken: a clear refusal, nothing runs.
    let out = uid_map_with_subids("carol:1879048192:268304384\n", "");
    assert!(!out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no free host id range"), "{err}");
    assert!(out.stdout.is_empty(), "the command must not run: {out:?}");
}

/// Item 2: with the operator's terminal as sealrun's stdin, stdout and stderr, the job holds no
/// descriptor of it (so it can neither read what is typed nor issue tty ioctls), and the control
/// sequences it prints reach the terminal escaped.
#[test]
fn the_job_never_holds_the_operators_terminal() {
    // A pty plays the operator's terminal; Python (outside the sandbox) reads its master side.
    let harness = r#"
import os, sys, subprocess
m, s = os.openpty()
p = subprocess.Popen([sys.argv[1], "exec", "--", "/bin/sh", "-c", sys.argv[2]],
                     stdin=s, stdout=s, stderr=s, close_fds=True)
os.close(s)
out = b""
while True:
    try:
        d = os.read(m, 4096)
    except OSError:
        break
    if not d:
        break
    out += d
p.wait()
sys.stdout.buffer.write(out)
sys.exit(p.returncode)
"#;
    let job = r#"for fd in 0 1 2; do echo "fd$fd $(readlink /proc/self/fd/$fd)"; done
stty </proc/self/fd/1 >/dev/null 2>&1 && echo "TTY IOCTL WORKED" || echo "no tty ioctl"
printf '\033]0;pwned\007\033[31mRED\n'
echo "to stderr" >&2"#;
    let out = std::process::Command::new(python())
        .args(["-c", harness])
        .arg(sealrun_bin())
        .arg(job)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(text.contains("fd0 /dev/null"), "{text}");
    for fd in ["fd1", "fd2"] {
        let line = text.lines().find(|l| l.starts_with(fd)).unwrap();
        assert!(line.contains("pipe:["), "{fd} is not a pipe: {line}");
    }
    assert!(
        !text.contains("/dev/pts") && !text.contains("/dev/tty"),
        "{text}"
    );
    assert!(text.contains("no tty ioctl"), "{text}");
    assert!(text.contains("\\x1b]0;pwned\\x07\\x1b[31mRED"), "{text}");
    assert!(
        !text.contains('\x1b'),
        "a raw escape reached the terminal: {text:?}"
    );
    assert!(text.contains("to stderr"), "{text}");
}

/// Item 7: started as root, a profile comes only from files and folders that only root can
/// change; a planted one is refused, naming the path, never silently used or skipped.
#[test]
fn profiles_that_others_could_change_are_refused_as_root() {
    use std::os::unix::fs::PermissionsExt;
    let t = tempdir();
    let profiles = t.path().join("profiles");
    std::fs::create_dir_all(profiles.join("seccomp")).unwrap();
    let allow_all = r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": []}"#;
    std::fs::write(profiles.join("seccomp/default.json"), allow_all).unwrap();
    let run = |env_dir: Option<&std::path::Path>, args: &[&str]| {
        let mut c = std::process::Command::new(sealrun_bin());
        if let Some(d) = env_dir {
            c.env("SEALRUN_PROFILES", d);
        }
        let out = c
            .arg("exec")
            .args(args)
            .args(["--", "/bin/true"])
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // A group/other-writable (not sticky) folder on the lookup path.
    std::fs::set_permissions(&profiles, std::fs::Permissions::from_mode(0o777)).unwrap();
    let (code, err) = run(Some(&profiles), &[]);
    assert_eq!(code, Some(125), "{err}");
    assert!(err.contains("refusing profile"), "{err}");
    assert!(err.contains("writable by group or others"), "{err}");
    // Root's folder, but a file another user owns.
    std::fs::set_permissions(&profiles, std::fs::Permissions::from_mode(0o755)).unwrap();
    let file = profiles.join("seccomp/default.json");
    std::os::unix::fs::chown(&file, Some(65534), None).unwrap();
    let (code, err) = run(Some(&profiles), &[]);
    assert_eq!(code, Some(125), "{err}");
    assert!(err.contains("is owned by uid 65534"), "{err}");
    // The same as an explicit --profile PATH.
    let (code, err) = run(None, &["--profile", file.to_str().unwrap()]);
    assert_eq!(code, Some(125), "{err}");
    assert!(err.contains("is owned by uid 65534"), "{err}");
    // Owned by root, in root's folders: used (and so reported with its own digest).
    std::os::unix::fs::chown(&file, Some(0), None).unwrap();
    let (code, err) = run(Some(&profiles), &[]);
    assert_eq!(code, Some(0), "{err}");
}

/// Item 8: the cgroup namespace is made once the sandbox is in the run's cgroup, so the job sees
/// its own cgroup as `/` — not the host's path of it (`/sealrun/<pid>-<n>`), nor the launcher's.
#[test]
fn the_job_sees_its_cgroup_as_the_root() {
    for args in [&["--memory", "256M", "--pids", "64"][..], &[][..]] {
        let r = exec(args, &["/bin/cat", "/proc/self/cgroup"]);
        let out = ok(&r);
        assert!(!out.trim().is_empty(), "{r:?}");
        for line in out.lines() {
            let path = line.splitn(3, ':').nth(2).unwrap_or("?");
            assert_eq!(path, "/", "{args:?}: {out}");
        }
    }
}

/// Item 8: the secrets tmpfs is `noswap` (a secret never reaches a swap device) — made by the
/// supervisor as host root, since the kernel allows `noswap` only for a tmpfs of the initial user
/// namespace — and the job still reads its secret there.
#[test]
fn the_secrets_tmpfs_never_swaps() {
    let f = sealrun_integration::RunFixture::new();
    let script = r#"
import hashlib, json
mounts = [l.split() for l in open("/proc/self/mountinfo")]
m = [l for l in mounts if l[4] == "/run/secrets"]
opts = m[0][m[0].index("-") + 3] if m else ""
secret = hashlib.sha256(open("/run/secrets/token", "rb").read()).hexdigest()
json.dump({"super": opts, "secret_sha256": secret}, open("/out/m.json", "w"))
"#;
    let spec = f.job(
        "noswap",
        script,
        &[],
        "profile = \"python\"\n[secrets.token]\nfrom = \"env:SEALRUN_TEST_NOSWAP\"\nttl = \"10m\"\n",
    );
    let out = std::process::Command::new(sealrun_bin())
        .current_dir(f.dir())
        .args(["run", &spec, "--quiet"])
        .env("SEALRUN_TEST_NOSWAP", "s3cr3t-n0sw4p-value")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(f.dir().join("noswap-out/m.json")).unwrap()).unwrap();
    assert_eq!(
        m["secret_sha256"],
        sealrun_integration::sha256_hex(b"s3cr3t-n0sw4p-value")
    );
    let opts = m["super"].as_str().unwrap();
    assert!(opts.split(',').any(|o| o == "noswap"), "{opts}");
}

/// The 32-byte Ed25519 seed inside a PKCS#8 PEM (`04 22 04 20` precedes it in v1 and v2).
fn ed25519_seed(pem: &str) -> Vec<u8> {
    use base64::Engine as _;
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(body)
        .unwrap();
    let at = der
        .windows(4)
        .position(|w| w == [0x04, 0x22, 0x04, 0x20])
        .expect("an Ed25519 PKCS#8 key");
    der[at + 4..at + 36].to_vec()
}

/// Whether `needle` is anywhere in the readable memory of process `pid` (as host root); panics
/// unless the scan could read the process's stack (so that "not found" means something).
fn memory_holds(pid: u32, needle: &[u8]) -> bool {
    let scan = sealrun_integration::scan_memory(pid, needle);
    assert!(scan.stack_read, "could not read the stack of {pid}");
    scan.found
}

/// Item 8: the sandbox init — a fork-like copy of the launcher, alive while the job runs —
/// holds no copy of the launcher's signing key; the launcher itself does (the control that
/// shows the scan finds a key where there is one).
#[test]
fn the_sandbox_init_never_holds_the_signing_key() {
    let f = sealrun_integration::RunFixture::new();
    let seed = ed25519_seed(&std::fs::read_to_string(f.dir().join("launcher.key")).unwrap());
    let script = "import time\ntime.sleep(30)\n";
    let spec = f.job("holdkey", script, &[], "profile = \"python\"\n");
    let mut launcher = std::process::Command::new(sealrun_bin())
        .current_dir(f.dir())
        .args(["run", &spec, "--quiet"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let lpid = launcher.id();
    // The init: the launcher's child that is pid 1 of a new pid namespace (wait for the job).
    let deadline = Instant::now() + Duration::from_secs(20);
    let init = loop {
        let child = std::fs::read_dir("/proc").unwrap().flatten().find_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let st = std::fs::read_to_string(e.path().join("status")).ok()?;
            let ppid = st.lines().find(|l| l.starts_with("PPid:"))?;
            let nspid = st.lines().find(|l| l.starts_with("NSpid:"))?;
            (ppid.split_whitespace().nth(1)? == lpid.to_string()
                && nspid.split_whitespace().nth(2) == Some("1"))
            .then_some(pid)
        });
        let job_running = child.is_some_and(|p| {
            std::fs::read_to_string(format!("/proc/{p}/task/{p}/children"))
                .is_ok_and(|c| !c.trim().is_empty())
        });
        if job_running {
            break child.unwrap();
        }
        assert!(Instant::now() < deadline, "no sandbox init found");
        std::thread::sleep(Duration::from_millis(100));
    };
    // Let the job get going (the launcher is by then waiting for it).
    std::thread::sleep(Duration::from_millis(500));
    let in_init = memory_holds(init, &seed);
    let in_launcher = memory_holds(lpid, &seed);
    let _ = launcher.kill();
    let _ = launcher.wait();
    assert!(
        in_launcher,
        "control: the launcher holds its key while the job runs"
    );
    assert!(
        !in_init,
        "the sandbox init holds the launcher's signing key"
    );
}

/// Item 3 with the job's own sockets connected for it: a host socket bound into the sandbox
/// stays unreachable through a symlink on the job's own tmpfs, and through a thread that
/// rewrites the address while `connect` is being decided (the supervisor connects from its own
/// copy, to the descriptor it checked); each refusal is observed.
#[test]
fn own_socket_mediation_never_reaches_a_host_socket() {
    let t = tempdir();
    let path = t.path().join("host.sock");
    let host = std::os::unix::net::UnixListener::bind(&path).unwrap();
    host.set_nonblocking(true).unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let bind = format!("{}:/hostdir", t.path().display());
    let r = py(
        &["--ro", &bind],
        r#"
import threading
os.symlink("/hostdir/host.sock", "/tmp/link.sock")
try:
    socket.socket(socket.AF_UNIX).connect("/tmp/link.sock"); print("LINK CONNECTED")
except OSError as e:
    print("link", e.errno)
own = socket.socket(socket.AF_UNIX); own.bind("/tmp/own.sock"); own.listen(4096)
# sockaddr_un whose path a second thread flips between the job's own socket and the host's.
a, b = b"/tmp/own.sock\0\0\0\0\0\0\0\0", b"/hostdir/host.sock\0\0"
buf = ctypes.create_string_buffer(2 + len(b) + 1)
struct_family = (1).to_bytes(2, "little")
ctypes.memmove(buf, struct_family + a, 2 + len(a))
stop = False
def flip():
    while not stop:
        ctypes.memmove(ctypes.addressof(buf) + 2, b, len(b))
        ctypes.memmove(ctypes.addressof(buf) + 2, a, len(a))
th = threading.Thread(target=flip); th.start()
ok_own = refused = 0
for _ in range(300):
    s = socket.socket(socket.AF_UNIX)
    r = libc.connect(s.fileno(), buf, len(buf))
    if r == 0:
        ok_own += 1
    else:
        refused += 1
    s.close()
    while True:
        try:
            own.setblocking(False); own.accept()[0].close()
        except BlockingIOError:
            break
stop = True; th.join()
print("race", ok_own + refused, ok_own, refused)
"#,
    );
    let out = ok(&r);
    assert!(out.contains("link 13\n"), "{out}");
    let race: Vec<u32> = out
        .lines()
        .find_map(|l| l.strip_prefix("race "))
        .unwrap()
        .split(' ')
        .map(|x| x.parse().unwrap())
        .collect();
    assert_eq!(race[0], 300, "{out}");
    // Both outcomes happened: the race was run, not won by one side throughout.
    assert!(
        race[1] > 0 && race[2] > 0,
        "own {} refused {}",
        race[1],
        race[2]
    );
    assert!(
        host.accept().is_err(),
        "the host socket must never accept a connection"
    );
    assert!(
        r.egress().iter().any(|e| e == "/tmp/link.sock"),
        "{:?}",
        r.report
    );
}
