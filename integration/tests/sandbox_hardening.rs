//! Attacks found by the security review of the sandbox (issue #11, items 1–8): each case tries
//! the attack from inside `sealrun exec` and asserts the reason it fails. All of them touch only
//! the test's own temp dirs, its own processes and loopback.

mod common;

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
import threading
def flood():
    while True:
        try:
            os.chroot("/")
        except OSError:
            pass
ts = [threading.Thread(target=flood, daemon=True) for _ in range(300)]
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
