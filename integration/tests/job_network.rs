//! The job network across nodes (`[sandbox] network = "job"`, a step over two nodes), with
//! "nodes" made of two network namespaces this test creates and links (10.77.0.1 and
//! 10.77.0.2, plus a non-peer address 10.77.0.9 on the second; addresses only inside those
//! namespaces, never routed off the machine). Each rank is `sealrun run` under `nsenter
//! --net` into its node, with the task's `SLURM_*` variables as `srun` would set them.
//!
//! Checked: the ranks exchange data over TCP across the link (rank 1 connects to rank 0's
//! node address, through both firewalls); the sandbox refuses and records a connect to a
//! non-peer address and to a peer outside the port range; and the host firewall itself
//! (bypassing the sandbox's supervisor): a non-peer source never reaches the job, the job's
//! namespace cannot send to a non-peer, the host cannot connect into the job's namespace, while
//! a peer node reaches it on the port range. Everything is removed afterwards.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use sealrun_integration::{bin, envelope_statement, text, RunFixture};

const PORT: u16 = 29_517;

/// Rank 0 serves until it gets `stop`, logging what it got; rank 1 talks to it, then tries a
/// non-peer and a peer port outside the range.
const SCRIPT: &str = r#"import os, socket, time
rank, port = int(os.environ["RANK"]), int(os.environ["MASTER_PORT"])
if rank == 0:
    s = socket.socket()
    s.bind(("0.0.0.0", port))
    s.listen(4)
    s.settimeout(120)
    log = open("/out/got.txt", "w")
    while True:
        c, peer = s.accept()
        data = c.recv(100).decode()
        log.write(data + "\n"); log.flush()
        c.sendall(b"pong: " + data.encode())
        c.close()
        if data == "stop":
            break
else:
    deadline = time.time() + 60
    while True:
        try:
            c = socket.create_connection((os.environ["MASTER_ADDR"], port), timeout=5)
            break
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.2)
    c.sendall(b"hello from rank 1")
    open("/out/got.txt", "wb").write(c.recv(100))
    for name, addr in [("nonpeer", ("10.77.0.9", port)), ("outside", ("10.77.0.1", 22))]:
        try:
            socket.create_connection(addr, timeout=3)
            open("/out/" + name + ".txt", "w").write("reached")
        except OSError as e:
            open("/out/" + name + ".txt", "w").write("refused: " + str(e))
"#;

/// Two linked network namespaces; removed on drop (with anything pinned for the test job).
struct Nodes {
    a: String,
    b: String,
    job: String,
}

fn sh(args: &[&str]) -> Output {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(out.status.success(), "{args:?}: {}", text(&out));
    out
}

impl Nodes {
    fn new() -> Nodes {
        let id = std::process::id();
        let n = Nodes {
            a: format!("srt-a-{id}"),
            b: format!("srt-b-{id}"),
            job: format!("77{}", id % 100_000),
        };
        sh(&["ip", "netns", "add", &n.a]);
        sh(&["ip", "netns", "add", &n.b]);
        let (va, vb) = (format!("sra{id}"), format!("srb{id}"));
        sh(&[
            "ip", "link", "add", &va, "netns", &n.a, "type", "veth", "peer", "name", &vb, "netns",
            &n.b,
        ]);
        for (ns, dev, addrs) in [
            (&n.a, &va, &["10.77.0.1/24"][..]),
            (&n.b, &vb, &["10.77.0.2/24", "10.77.0.9/24"][..]),
        ] {
            for a in addrs {
                sh(&["ip", "-n", ns, "addr", "add", a, "dev", dev]);
            }
            sh(&["ip", "-n", ns, "link", "set", dev, "up"]);
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        n
    }

    fn pin(&self, node: &str) -> PathBuf {
        PathBuf::from(format!("/run/sealrun/net/{}.0.{node}", self.job))
    }

    /// A command in node `ns`'s network namespace (the host's mounts).
    fn on(&self, ns: &str, program: &Path) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net=/run/netns/{ns}")).arg(program);
        c
    }
}

impl Drop for Nodes {
    fn drop(&mut self) {
        for node in ["10.77.0.1", "10.77.0.2"] {
            let pin = self.pin(node);
            let _ = nix_umount(&pin);
            let _ = std::fs::remove_file(&pin);
            for x in ["lock", "ref"] {
                let _ = std::fs::remove_file(format!("{}.{x}", pin.display()));
            }
        }
        let _ = Command::new("ip").args(["netns", "del", &self.a]).status();
        let _ = Command::new("ip").args(["netns", "del", &self.b]).status();
    }
}

fn nix_umount(p: &Path) -> std::io::Result<()> {
    let _ = Command::new("umount")
        .arg("-l")
        .arg(p)
        .stderr(Stdio::null())
        .status()?;
    Ok(())
}

/// `sealrun run` of rank `rank` on node `node` (in namespace `ns`).
fn rank(f: &RunFixture, n: &Nodes, ns: &str, rank: u32, node: &str, spec: &str) -> Child {
    n.on(ns, &bin("sealrun"))
        .args(["run", spec, "--quiet"])
        .current_dir(f.dir())
        .env("SLURM_JOB_ID", &n.job)
        .env("SLURM_STEP_ID", "0")
        .env("SLURM_PROCID", rank.to_string())
        .env("SLURM_NTASKS", "2")
        .env("SLURM_LOCALID", "0")
        .env("SLURM_NODEID", rank.to_string())
        .env("SLURMD_NODENAME", node)
        .env("SLURM_STEP_NODELIST", "10.77.0.[1-2]")
        .env("MASTER_ADDR", "10.77.0.1")
        .env("MASTER_PORT", PORT.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// A Python one-liner in namespace `net` (a path): connect from `src` (or any) to `to`;
/// prints `ok`, `refused` or `timeout`.
fn try_connect(net: &str, src: Option<&str>, to: (&str, u16), send: &str) -> String {
    let code = format!(
        "import socket\ns = socket.socket()\ns.settimeout(3)\n{}\ntry:\n    s.connect(({:?}, {}))\n    s.sendall({:?}.encode())\n    s.recv(10)\n    print('ok')\nexcept socket.timeout:\n    print('timeout')\nexcept OSError as e:\n    print('refused', e)\n",
        src.map(|s| format!("s.bind(({s:?}, 0))")).unwrap_or_default(),
        to.0,
        to.1,
        send
    );
    let out = Command::new("nsenter")
        .arg(format!("--net={net}"))
        .args(["python3", "-c", &code])
        .output()
        .unwrap();
    text(&out).trim().to_string()
}

fn wait_for(path: &Path, what: &str, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !path.exists() {
        if let Ok(Some(_)) = child.try_wait() {
            let out = std::mem::replace(child, Command::new("true").spawn().unwrap());
            panic!(
                "{what}: the rank ended first: {}",
                text(&out.wait_with_output().unwrap())
            );
        }
        assert!(Instant::now() < deadline, "{what}: not there after 60 s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn ranks_on_two_nodes_reach_each_other_and_nothing_else() {
    assert!(
        nix_is_root(),
        "the job network needs root (CI runs as root)"
    );
    let f = RunFixture::new();
    let n = Nodes::new();
    let sandbox = format!(
        "{}network = \"job\"\nports = \"29500-29599\"\n",
        sealrun_integration::RUN_SANDBOX
    );
    let spec = f.job("x", SCRIPT, &[], &sandbox);
    let path = f.dir().join(&spec);
    let t = std::fs::read_to_string(&path)
        .unwrap()
        .replace("output = \"x-out\"", "output = \"x-out/rank-{rank}\"");
    std::fs::write(&path, t).unwrap();

    let mut r0 = rank(&f, &n, &n.a, 0, "10.77.0.1", &spec);
    wait_for(
        &f.dir().join("x-out/rank-0/got.txt"),
        "rank 0 listening",
        &mut r0,
    );
    let r1 = rank(&f, &n, &n.b, 1, "10.77.0.2", &spec)
        .wait_with_output()
        .unwrap();
    assert!(r1.status.success(), "rank 1: {}", text(&r1));
    let out1 =
        |file: &str| std::fs::read_to_string(f.dir().join(format!("x-out/rank-1/{file}"))).unwrap();
    assert_eq!(out1("got.txt"), "pong: hello from rank 1");
    assert!(
        out1("nonpeer.txt").starts_with("refused"),
        "{}",
        out1("nonpeer.txt")
    );
    assert!(
        out1("outside.txt").starts_with("refused"),
        "{}",
        out1("outside.txt")
    );

    // The firewall itself, bypassing the sandbox's supervisor.
    let pin_a = n.pin("10.77.0.1").display().to_string();
    let net_b = format!("/run/netns/{}", n.b);
    let net_a = format!("/run/netns/{}", n.a);
    // A non-peer source (10.77.0.9 on node b) never reaches the job on node a.
    let r = try_connect(
        &net_b,
        Some("10.77.0.9"),
        ("10.77.0.1", PORT),
        "from a non-peer",
    );
    assert!(r.starts_with("refused") || r == "timeout", "{r}");
    // The job's namespace cannot send to a non-peer, even on the port range (a listener there).
    let listener = n
        .on(&n.b, Path::new("python3"))
        .args(["-c", &format!("import socket,time\ns=socket.socket()\ns.bind(('10.77.0.9',{PORT}))\ns.listen(1)\ntime.sleep(20)")])
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let r = try_connect(&pin_a, None, ("10.77.0.9", PORT), "to a non-peer");
    assert_eq!(r, "timeout", "the job's namespace reached a non-peer: {r}");
    // ... nor to a peer outside the port range (ssh on node b's host, say).
    let r = try_connect(&pin_a, None, ("10.77.0.2", 22), "outside the range");
    assert_eq!(r, "timeout", "{r}");
    // The host of node a cannot connect into the job's namespace.
    let ns_addr = job_link_address(&pin_a);
    let r = try_connect(&net_a, None, (&ns_addr, PORT), "from the host");
    assert_eq!(r, "timeout", "the host reached the job: {r}");
    // A peer node reaches it on the port range (and this stops rank 0).
    let r = try_connect(&net_b, Some("10.77.0.2"), ("10.77.0.1", PORT), "stop");
    assert_eq!(r, "ok", "a peer node could not reach the job: {r}");
    let r0 = r0.wait_with_output().unwrap();
    assert!(r0.status.success(), "rank 0: {}", text(&r0));
    let got0 = std::fs::read_to_string(f.dir().join("x-out/rank-0/got.txt")).unwrap();
    assert_eq!(
        got0, "hello from rank 1\nstop\n",
        "rank 0 got something else"
    );
    drop(listener);

    // The records: rank 1's refusals, both ranks' allowlist.
    for r in f.records("x") {
        let st = envelope_statement(&r);
        let slurm = &st["predicate"]["buildDefinition"]["internalParameters"]["slurm"];
        let allow = slurm["network"]["allow"].to_string();
        assert!(
            allow.contains("10.77.0.1/32:29500-29599")
                && allow.contains("10.77.0.2/32:29500-29599"),
            "{slurm}"
        );
        if slurm["rank"] == 1 {
            let egress = sealrun_integration::byproduct(&st, "sandbox")["annotations"]
                ["egress_attempts"]
                .to_string();
            assert!(
                egress.contains("10.77.0.9:29517") && egress.contains("10.77.0.1:22"),
                "{egress}"
            );
        }
    }
    // Both sides are gone: no pin, no link, no table.
    for node in ["10.77.0.1", "10.77.0.2"] {
        assert!(!n.pin(node).exists(), "pin of {node} left behind");
    }
    let tables = text(
        &n.on(&n.a, Path::new("nft"))
            .args(["list", "tables"])
            .output()
            .unwrap(),
    );
    let left: Vec<&str> = tables
        .lines()
        .filter(|l| l.contains("sealrun_") && !l.contains("sealrun_guard"))
        .collect();
    assert!(left.is_empty(), "job tables left behind: {left:?}");
}

/// The job namespace's address on its link (`eth0`).
fn job_link_address(pin: &str) -> String {
    let out = Command::new("nsenter")
        .arg(format!("--net={pin}"))
        .args(["ip", "-4", "-o", "addr", "show", "dev", "eth0"])
        .output()
        .unwrap();
    let t = text(&out);
    t.split_whitespace()
        .find_map(|w| w.split_once('/').map(|(a, _)| a.to_string()))
        .filter(|a| a.starts_with("169.254."))
        .unwrap_or_else(|| panic!("no link address: {t}"))
}

fn nix_is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

#[test]
fn outside_slurm_the_job_network_and_rank_are_plan_errors() {
    let f = RunFixture::new();
    let sandbox = format!("{}network = \"job\"\n", sealrun_integration::RUN_SANDBOX);
    let spec = f.job("n", SCRIPT, &[], &sandbox);
    let out = sealrun_integration::sealrun(f.dir(), &["run", &spec, "--quiet"]);
    sealrun_integration::fails_with(out, 64, &["sandbox.network", "no Slurm task"]);
    let spec = f.job("r", SCRIPT, &[], sealrun_integration::RUN_SANDBOX);
    let path = f.dir().join(&spec);
    let t = std::fs::read_to_string(&path)
        .unwrap()
        .replace("output = \"r-out\"", "output = \"r-out/{rank}\"");
    std::fs::write(&path, t).unwrap();
    let out = sealrun_integration::sealrun(f.dir(), &["run", &spec, "--quiet"]);
    sealrun_integration::fails_with(out, 64, &["output", "{rank} is the Slurm task's rank"]);
    assert!(
        f.records("n").is_empty() && f.records("r").is_empty(),
        "a plan error leaves no record"
    );
}
