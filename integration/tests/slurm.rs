//! sealrun under a real Slurm (munged, slurmctld and slurmd started by
//! `sealrun_integration::slurm::Cluster`): one test that runs every scenario in turn, since
//! only one cluster can run on the machine at a time.
//!
//! Scenarios: a two-rank `sbatch --wait` job (`srun sealrun run`, then `sealrun seal-job`)
//! whose ranks see their identity, write `out/rank-{rank}`, append to one audit log at once,
//! and whose job record verifies (`sealrun-verify job`, `gate`, `aibom`); a rank record
//! missing (refused, 65, naming the rank); a failed rank (the seal says the job failed).

use std::path::{Path, PathBuf};
use std::process::Output;

use sealrun_integration::slurm::Cluster;
use sealrun_integration::{bin, envelope_statement, fails_with, ok, text, verify, RunFixture};

/// Writes what the rank saw; fails on rank `FAIL_RANK` (the script's argument) if given.
const RANK_SCRIPT: &str = r#"import json, os, sys
seen = {k: os.environ.get(k) for k in ["RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"]}
open("/out/env.json", "w").write(json.dumps(seen))
open("/out/data.csv", "wb").write(open("/inputs/points/points.csv", "rb").read())
if len(sys.argv) > 1 and sys.argv[1] == os.environ["RANK"]:
    sys.exit(3)
"#;

/// Rank 0 listens on 127.0.0.1:MASTER_PORT, rank 1 sends to it and gets a reply (plain Python
/// sockets), then tries an address that is no peer.
const NET_SCRIPT: &str = r#"import os, socket, time
rank, port = int(os.environ["RANK"]), int(os.environ["MASTER_PORT"])
if rank == 0:
    s = socket.socket()
    s.bind(("127.0.0.1", port))
    s.listen(1)
    s.settimeout(60)
    c, _ = s.accept()
    data = c.recv(100)
    c.sendall(b"pong: " + data)
    c.close()
else:
    deadline = time.time() + 60
    while True:
        try:
            c = socket.create_connection(("127.0.0.1", port), timeout=5)
            break
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.1)
    c.sendall(b"hello from rank 1")
    data = c.recv(100)
    try:
        socket.create_connection(("10.255.255.1", 80), timeout=2)
        open("/out/reached.txt", "w").write("the non-peer address was reached")
    except OSError as e:
        open("/out/refused.txt", "w").write(str(e))
    # The host's loopback is another namespace's: a listener there is out of reach.
    try:
        socket.create_connection(("127.0.0.1", int(os.environ["HOST_PORT"])), timeout=2)
        open("/out/reached.txt", "w").write("the host's listener was reached")
    except OSError as e:
        open("/out/host.txt", "w").write(str(e))
open("/out/got.txt", "wb").write(data)
"#;

fn cluster() -> Cluster {
    assert!(
        sealrun_integration::slurm::available(),
        "slurm-wlm and munge must be installed (.ci/run installs them)"
    );
    Cluster::start().unwrap_or_else(|e| panic!("cannot start the test cluster: {e}"))
}

/// A job spec whose output is per rank (`NAME-out/rank-{rank}`).
fn rank_job(f: &RunFixture, name: &str, args: &[&str], sandbox: &str) -> String {
    let spec = f.job(name, RANK_SCRIPT, args, sandbox);
    let path = f.dir().join(&spec);
    let text = std::fs::read_to_string(&path).unwrap().replace(
        &format!("output = \"{name}-out\""),
        &format!("output = \"{name}-out/rank-{{rank}}\""),
    );
    std::fs::write(&path, text).unwrap();
    spec
}

/// `sbatch --wait -n2`: the step, then the seal. Returns sbatch's output and the batch log.
fn two_rank_job(c: &Cluster, f: &RunFixture, spec: &str) -> (Output, String) {
    let sealrun = bin("sealrun").display().to_string();
    let script = format!(
        "export MASTER_ADDR=127.0.0.1 MASTER_PORT=29511\n\
         srun {sealrun} run {spec} --quiet\n\
         echo \"step status $?\"\n\
         {sealrun} seal-job --records records --spec {spec}\n\
         status=$?\necho \"seal status $status\"\nexit $status\n"
    );
    let log = f.dir().join(format!("{spec}.batch.log"));
    let log_arg = format!("--output={}", log.display());
    let out = c.sbatch_wait(f.dir(), &["-n2", "--time=5", &log_arg], &script);
    let mut batch = std::fs::read_to_string(&log).unwrap_or_default();
    // The ranks' stderr, for a failure's message.
    for e in std::fs::read_dir(f.dir().join("records"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.ends_with(".stderr.log") {
            let t = std::fs::read_to_string(e.path()).unwrap_or_default();
            batch.push_str(&format!("--- {name}:\n{t}\n"));
        }
    }
    (out, batch)
}

fn job_record(f: &RunFixture, batch: &str) -> PathBuf {
    let line = batch
        .lines()
        .find(|l| l.ends_with(".job.json"))
        .unwrap_or_else(|| panic!("seal-job printed no job record:\n{batch}"));
    f.dir().join(line.trim())
}

fn internal_slurm(record: &Path) -> serde_json::Value {
    envelope_statement(record)["predicate"]["buildDefinition"]["internalParameters"]["slurm"]
        .clone()
}

fn sealed(record: &Path) -> serde_json::Value {
    sealrun_integration::byproduct(&envelope_statement(record), "job")["annotations"].clone()
}

/// Two ranks run, each knows who it is, the seal verifies with every chain, gate and aibom.
fn two_ranks_sealed(c: &Cluster) {
    let f = RunFixture::new();
    let spec = rank_job(&f, "train", &[], sealrun_integration::RUN_SANDBOX);
    let (out, batch) = two_rank_job(c, &f, &spec);
    assert!(
        out.status.success(),
        "sbatch: {}\nbatch log:\n{batch}",
        text(&out)
    );
    assert!(
        batch.contains("step status 0") && batch.contains("seal status 0"),
        "{batch}"
    );
    let records = f.records("train");
    assert_eq!(records.len(), 2, "{records:?}\n{batch}");
    let mut ranks: Vec<u64> = records
        .iter()
        .map(|r| {
            let s = internal_slurm(r);
            assert_eq!(s["world_size"], 2, "{s}");
            assert_eq!(s["step_id"], "0", "{s}");
            assert_eq!(s["node"], c.node.as_str(), "{s}");
            s["rank"].as_u64().unwrap()
        })
        .collect();
    ranks.sort();
    assert_eq!(ranks, [0, 1]);
    for rank in 0..2 {
        let env = std::fs::read_to_string(f.dir().join(format!("train-out/rank-{rank}/env.json")))
            .unwrap_or_else(|e| panic!("rank {rank}'s output: {e}\n{batch}"));
        let env: serde_json::Value = serde_json::from_str(&env).unwrap();
        assert_eq!(env["RANK"], rank.to_string(), "{env}");
        assert_eq!(env["WORLD_SIZE"], "2", "{env}");
        assert_eq!(env["LOCAL_RANK"], rank.to_string(), "{env}");
        assert_eq!(env["MASTER_ADDR"], "127.0.0.1", "{env}");
        assert_eq!(env["MASTER_PORT"], "29511", "{env}");
    }
    // Both ranks appended to one audit log at once: its chain verifies, with each rank's
    // start and end, and the seal's `job` entry.
    ok(f.verify_log(false));
    let events: Vec<String> = sealrun_integration::audit_entries(&f.dir().join("audit.log"))
        .iter()
        .map(|e| e["event"].as_str().unwrap_or("").to_string())
        .collect();
    let count = |e: &str| events.iter().filter(|x| *x == e).count();
    assert_eq!(
        (count("start"), count("end"), count("job")),
        (2, 2, 1),
        "{events:?}"
    );
    let job = job_record(&f, &batch);
    let seal = sealed(&job);
    assert_eq!(seal["result"], "succeeded", "{seal}");
    assert_eq!(seal["world_size"], 2, "{seal}");
    let st = envelope_statement(&job);
    assert_eq!(
        st["predicate"]["buildDefinition"]["buildType"],
        "https://sealrun.dev/job/v1"
    );
    assert_eq!(st["subject"].as_array().unwrap().len(), 2, "{st}");
    let rec = job.display().to_string();
    let shown = ok(verify(
        f.dir(),
        &["job", &rec, "--records", "records", "--trust", "trust.toml"],
    ));
    assert!(
        shown.contains("OK job seal verified") && shown.contains("2 rank(s)"),
        "{shown}"
    );
    std::fs::write(f.dir().join("gate.toml"), "trust = \"trust.toml\"\n").unwrap();
    ok(verify(
        f.dir(),
        &[
            "gate",
            &rec,
            "--policy",
            "gate.toml",
            "--records",
            "records",
        ],
    ));
    let bom = ok(verify(
        f.dir(),
        &[
            "aibom",
            &rec,
            "--records",
            "records",
            "--trust",
            "trust.toml",
        ],
    ));
    assert!(bom.contains("CycloneDX"), "{bom}");

    missing_rank_refused(&f, &records, &job);
    tampered_seal_fails(&f, &job);
}

/// A folder with one of the two rank records: refused (65) naming the missing rank.
fn missing_rank_refused(f: &RunFixture, records: &[PathBuf], job: &Path) {
    let partial = f.dir().join("partial");
    std::fs::create_dir(&partial).unwrap();
    let keep = records
        .iter()
        .find(|r| internal_slurm(r)["rank"] == 0)
        .unwrap();
    std::fs::copy(keep, partial.join(keep.file_name().unwrap())).unwrap();
    let id = sealed(job)["job_id"].as_str().unwrap().to_string();
    let out = sealrun_integration::sealrun(
        f.dir(),
        &[
            "seal-job",
            "--records",
            "partial",
            "--job",
            &id,
            "--key",
            "launcher.key",
            "--trust",
            "trust.toml",
        ],
    );
    fails_with(
        out,
        65,
        &["1 of WORLD_SIZE 2 rank records", "missing rank(s) 1"],
    );
    // Rank 1's record present but forged (its payload changed): refused, naming the rank.
    let other = records.iter().find(|r| *r != keep).unwrap();
    let forged = forge(other, "\"succeeded\"", "\"succeedeD\"");
    std::fs::write(partial.join(other.file_name().unwrap()), forged).unwrap();
    let out = sealrun_integration::sealrun(
        f.dir(),
        &[
            "seal-job",
            "--records",
            "partial",
            "--job",
            &id,
            "--key",
            "launcher.key",
            "--trust",
            "trust.toml",
        ],
    );
    fails_with(out, 65, &["rank 1:", "signature"]);
    std::fs::remove_file(partial.join(other.file_name().unwrap())).unwrap();
    // The seal itself, against a folder without rank 1: fails naming it.
    let rec = job.display().to_string();
    std::fs::copy(job, partial.join(job.file_name().unwrap())).unwrap();
    let out = verify(
        f.dir(),
        &["job", &rec, "--records", "partial", "--trust", "trust.toml"],
    );
    fails_with(out, 1, &["missing_rank_record", "rank 1"]);
}

/// The envelope at `path` with `from` replaced by `to` in its payload (signature kept).
fn forge(path: &Path, from: &str, to: &str) -> String {
    use base64::Engine as _;
    let mut env: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let b64 = base64::engine::general_purpose::STANDARD;
    let payload = String::from_utf8(b64.decode(env["payload"].as_str().unwrap()).unwrap()).unwrap();
    let forged = payload.replacen(from, to, 1);
    assert_ne!(forged, payload, "{from:?} not in {}", path.display());
    env["payload"] = b64.encode(forged).into();
    env.to_string()
}

/// A seal whose `job` byproduct is changed no longer verifies (its signature).
fn tampered_seal_fails(f: &RunFixture, job: &Path) {
    let bad = f.dir().join("records/forged.job.json");
    std::fs::write(
        &bad,
        forge(job, "\"failed_ranks\":[]", "\"failed_ranks\":[ ]"),
    )
    .unwrap();
    let out = verify(
        f.dir(),
        &[
            "job",
            &bad.display().to_string(),
            "--records",
            "records",
            "--trust",
            "trust.toml",
        ],
    );
    fails_with(out, 1, &["signature"]);
    std::fs::remove_file(bad).unwrap();
}

/// One rank exits 3: the seal is written, says the job failed, names rank 1; it verifies.
fn failed_rank(c: &Cluster) {
    let f = RunFixture::new();
    let spec = rank_job(&f, "train", &["1"], sealrun_integration::RUN_SANDBOX);
    let (out, batch) = two_rank_job(c, &f, &spec);
    assert_eq!(
        out.status.code(),
        Some(1),
        "sbatch: {}\n{batch}",
        text(&out)
    );
    assert!(batch.contains("seal status 1"), "{batch}");
    let job = job_record(&f, &batch);
    let seal = sealed(&job);
    assert_eq!(seal["result"], "failed", "{seal}");
    assert_eq!(seal["failed_ranks"], serde_json::json!([1]), "{seal}");
    assert_eq!(seal["ranks"][1]["succeeded"], false, "{seal}");
    assert!(
        seal["ranks"][1]["result"]
            .as_str()
            .unwrap()
            .contains("exited 3"),
        "{seal}"
    );
    let rec = job.display().to_string();
    let shown = ok(verify(
        f.dir(),
        &["job", &rec, "--records", "records", "--trust", "trust.toml"],
    ));
    assert!(
        shown.contains("job FAILED") && shown.contains("exited 3"),
        "{shown}"
    );
    // The release gate refuses a failed job.
    std::fs::write(f.dir().join("gate.toml"), "trust = \"trust.toml\"\n").unwrap();
    let out = verify(
        f.dir(),
        &[
            "gate",
            &rec,
            "--policy",
            "gate.toml",
            "--records",
            "records",
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
}

/// `network = "job"`: the ranks talk over TCP on 127.0.0.1; a non-peer address is refused,
/// and the job record shows the refusal and the allowlist.
fn job_network(c: &Cluster) {
    let f = RunFixture::new();
    let sandbox = format!("{}network = \"job\"\n", sealrun_integration::RUN_SANDBOX);
    let spec = f.job("net", NET_SCRIPT, &[], &sandbox);
    let path = f.dir().join(&spec);
    // A listener on the host's loopback, which no rank may reach.
    let host = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    host.set_nonblocking(true).unwrap();
    let host_port = host.local_addr().unwrap().port();
    let text_ = std::fs::read_to_string(&path)
        .unwrap()
        .replace("output = \"net-out\"", "output = \"net-out/rank-{rank}\"")
        .replace(
            "trust = \"trust.toml\"\n",
            &format!("trust = \"trust.toml\"\nenv = {{ HOST_PORT = \"{host_port}\" }}\n"),
        );
    std::fs::write(&path, text_).unwrap();
    let (out, batch) = two_rank_job(c, &f, &spec);
    assert!(
        out.status.success(),
        "sbatch: {}\nbatch log:\n{batch}",
        text(&out)
    );
    let got = |rank: u32, file: &str| {
        std::fs::read_to_string(f.dir().join(format!("net-out/rank-{rank}/{file}")))
            .unwrap_or_else(|e| panic!("rank {rank} {file}: {e}\n{batch}"))
    };
    assert_eq!(got(0, "got.txt"), "hello from rank 1");
    assert_eq!(got(1, "got.txt"), "pong: hello from rank 1");
    assert!(
        got(1, "refused.txt").contains("unreachable"),
        "{}",
        got(1, "refused.txt")
    );
    assert!(
        got(1, "host.txt").contains("refused"),
        "{}",
        got(1, "host.txt")
    );
    assert!(!f.dir().join("net-out/rank-1/reached.txt").exists());
    assert_eq!(
        host.accept().map_err(|e| e.kind()).err(),
        Some(std::io::ErrorKind::WouldBlock),
        "the host's listener got a connection"
    );
    let job = job_record(&f, &batch);
    let seal = sealed(&job);
    assert_eq!(seal["result"], "succeeded", "{seal}");
    assert_eq!(
        seal["ranks"][1]["egress_refused"],
        serde_json::json!(["inet 10.255.255.1:80"]),
        "{seal}"
    );
    assert_eq!(
        seal["ranks"][0]["egress_refused"],
        serde_json::json!([]),
        "{seal}"
    );
    for r in 0..2 {
        let allow = seal["ranks"][r]["network_allow"].to_string();
        assert!(allow.contains("127.0.0.0/8:1-65535"), "{seal}");
    }
    // Each rank record names the shared namespace; one rank made it, the other joined.
    let nets: Vec<serde_json::Value> = f
        .records("net")
        .iter()
        .map(|r| internal_slurm(r)["network"].clone())
        .collect();
    assert_eq!(nets[0]["namespace"], nets[1]["namespace"], "{nets:?}");
    assert_ne!(nets[0]["created"], nets[1]["created"], "{nets:?}");
    // The allowed connects are observed too: rank 1's to rank 0 is in its record.
    let observed: Vec<String> = f
        .records("net")
        .iter()
        .filter(|r| internal_slurm(r)["rank"] == 1)
        .map(|r| {
            let st = envelope_statement(r);
            sealrun_integration::byproduct(&st, "sandbox")["annotations"]["peer_connects"]
                .to_string()
        })
        .collect();
    assert!(observed[0].contains("127.0.0.1:29511"), "{observed:?}");
    let pin = nets[0]["namespace"].as_str().unwrap();
    assert!(!Path::new(pin).exists(), "the last rank removes {pin}");
    let rec = job.display().to_string();
    ok(verify(
        f.dir(),
        &["job", &rec, "--records", "records", "--trust", "trust.toml"],
    ));
}

#[test]
fn slurm_scenarios() {
    let c = cluster();
    two_ranks_sealed(&c);
    failed_rank(&c);
    job_network(&c);
}
