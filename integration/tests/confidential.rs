//! Confidential datasets (issue #16), end to end with the real binaries and the stock `age`
//! CLI: the data owner signs the plaintext, encrypts each file with `age` to the launcher's
//! recipient and keeps only the ciphertext next to the spec; the job reads the plaintext from a
//! read-only tmpfs that exists only in its sandbox, while no host filesystem the test can
//! scan (the spec's folder, staging, /tmp, /var/tmp, /dev/shm) holds a byte of it; bad
//! ciphertext is refused (exit 65, nothing runs) naming the file and the reason; a dataset
//! larger than the memory limit is refused at plan time (exit 64) with the sizes; and a
//! pipeline that starts from an encrypted dataset verifies in `chain` and passes a gate.
//!
//! Every test works in its own temporary folder (the fixture's) with datasets of a few KiB.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sealrun_integration::swtpm::Swtpm;
use sealrun_integration::{
    bin, envelope_statement, fails_with, ok, run, sealrun, sha256_hex, text, verify, write_tree,
    RunFixture,
};

/// A canary unique to `test` and this process: what the scans look for.
fn canary(test: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "CANARY-{}",
        &sha256_hex(format!("{test}-{}-{nanos}", std::process::id()).as_bytes())[..40]
    )
}

/// The `age` CLI (Debian `age`; `.ci/run` installs it).
fn age_cli() -> PathBuf {
    for p in ["/usr/bin/age", "/usr/local/bin/age"] {
        if Path::new(p).exists() {
            return p.into();
        }
    }
    panic!("the `age` CLI is not installed (apt-get install age; .ci/run does)")
}

/// The dataset's files: `train/rows.csv` holds the canary (twice, among other rows),
/// `labels.bin` 40 KiB of other bytes.
fn dataset_files(canary: &str) -> Vec<(String, Vec<u8>)> {
    let mut rows = String::from("id,text\n");
    for i in 0..200 {
        rows.push_str(&format!("{i},row {i} of the confidential set\n"));
        if i == 10 || i == 150 {
            rows.push_str(&format!("{i}b,{canary}\n"));
        }
    }
    let bin: Vec<u8> = (0..40 * 1024u32).map(|i| (i * 31 % 253) as u8).collect();
    vec![
        ("train/rows.csv".into(), rows.into_bytes()),
        ("labels.bin".into(), bin),
    ]
}

/// A launcher identity in the fixture (`launcher.ageid`, 0600); its recipient.
fn identity(f: &RunFixture, file: &str) -> String {
    ok(sealrun(f.dir(), &["identity", "new", "--out", file]))
        .lines()
        .find(|l| l.starts_with("age1"))
        .expect("identity new prints the recipient")
        .to_string()
}

/// Encrypt every file of `plain` with the `age` CLI to `recipient` into `enc` (same tree,
/// `NAME.age`).
fn age_encrypt(plain: &Path, enc: &Path, recipient: &str) {
    for (rel, _) in walk(plain) {
        let to = enc.join(format!("{rel}.age"));
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        let out = run(Command::new(age_cli())
            .arg("-r")
            .arg(recipient)
            .arg("-o")
            .arg(&to)
            .arg(plain.join(&rel)));
        assert!(out.status.success(), "age -r failed: {}", text(&out));
    }
}

/// Regular files under `root`: (relative path, absolute path).
fn walk(root: &Path) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() {
                let rel = e.path().strip_prefix(root).unwrap().display().to_string();
                out.push((rel, e.path()));
            }
        }
    }
    out.sort();
    out
}

/// The data owner's side: write the plaintext under a folder of its own (outside the spec's
/// folder), sign it into `secret.sig` in the fixture, encrypt it with `age` into
/// `secret.enc/` in the fixture, and remove the plaintext (the owner keeps it elsewhere).
/// Returns the signed manifest root.
fn owner_prepares(f: &RunFixture, recipient: &str, canary: &str) -> String {
    let owner = tempfile::tempdir().unwrap();
    let plain = owner.path().join("secret");
    for (rel, data) in dataset_files(canary) {
        write_tree(&plain, &[(&rel, &data)]);
    }
    let sig = f.dir().join("secret.sig");
    let signed = ok(sealrun(
        f.dir(),
        &[
            "sign",
            plain.to_str().unwrap(),
            "--key",
            "reg.key",
            "--kind",
            "dataset",
            "--name",
            "secret",
            "--label",
            "classification=confidential",
            "--out",
            sig.to_str().unwrap(),
            "--json",
        ],
    ));
    let js: serde_json::Value = serde_json::from_str(signed.trim()).expect("sign --json");
    let root = js["root"].as_str().unwrap().trim_start_matches("sha256:");
    age_encrypt(&plain, &f.dir().join("secret.enc"), recipient);
    owner.close().unwrap();
    root.to_string()
}

/// The job: hash every plaintext file it sees (never print it), check that the folder is
/// read-only, write `ready`, then wait until the test creates `/ctl/go`.
const READER: &str = r#"import hashlib, os, sys, time
root = "/inputs/secret"
seen = {}
kept = []  # the plaintext stays in the job's memory while it waits (the memory scan's control)
for d, _, files in os.walk(root):
    for n in files:
        p = os.path.join(d, n)
        data = open(p, "rb").read()
        kept.append(data)
        seen[os.path.relpath(p, root)] = hashlib.sha256(data).hexdigest()
try:
    open(os.path.join(root, "new"), "w")
    ro = "writable"
except OSError as e:
    ro = "read-only errno %d" % e.errno
mount = [l for l in open("/proc/self/mountinfo") if l.split()[4] == root]
with open("/out/seen.txt", "w") as f:
    for k in sorted(seen):
        f.write("%s %s\n" % (k, seen[k]))
    f.write(ro + "\n")
    f.write("mount: " + " | ".join(l.strip() for l in mount) + "\n")
open("/out/ready", "w").write("1")
if len(sys.argv) > 1:
    t = time.time()
    while not os.path.exists("/ctl/go") and time.time() - t < 50:
        time.sleep(0.05)
print("read %d files" % len(seen))
"#;

/// Write job `name` reading the encrypted input (`secret.enc`, `secret.sig`), with `extra`
/// top-level lines and `[sandbox]` lines `sandbox`.
fn job(f: &RunFixture, name: &str, args: &[&str], sandbox: &str) -> String {
    write_tree(
        f.dir(),
        &[(&format!("{name}-code/read.py"), READER.as_bytes())],
    );
    let mut command = vec!["\"python3\"".to_string(), "\"/code/read.py\"".to_string()];
    command.extend(args.iter().map(|a| format!("{a:?}")));
    let spec = format!(
        "name = {name:?}\ncommand = [{}]\ncode = \"{name}-code\"\noutput = \"{name}-out\"\ntrust = \"trust.toml\"\nsigning_key = \"launcher.key\"\ndecryption_identity = \"launcher.ageid\"\n[[input]]\nname = \"secret\"\npath = \"secret.enc\"\nsignature = \"secret.sig\"\nencrypted = true\n[sandbox]\nprofile = \"python\"\ntimeout = \"60s\"\n{sandbox}",
        command.join(", ")
    );
    let file = format!("{name}.toml");
    std::fs::write(f.dir().join(&file), spec).unwrap();
    file
}

/// Files under `root` (symlinks not followed, at most 64 MiB each, unreadable ones skipped)
/// that contain `needle`.
fn scan(root: &Path, needle: &[u8], found: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(root) else {
        return;
    };
    for e in rd.flatten() {
        let Ok(md) = std::fs::symlink_metadata(e.path()) else {
            continue;
        };
        if md.is_dir() {
            scan(&e.path(), needle, found);
        } else if md.is_file() && md.len() <= 64 << 20 {
            if let Ok(data) = std::fs::read(e.path()) {
                if memchr::memmem::find(&data, needle).is_some() {
                    found.push(e.path());
                }
            }
        }
    }
}

/// Where a plaintext copy could land on the host: the spec's folder (records, logs, staging,
/// store under it), /tmp, /var/tmp, /dev/shm.
fn host_copies(f: &RunFixture, needle: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for root in [
        f.dir(),
        Path::new("/tmp"),
        Path::new("/var/tmp"),
        Path::new("/dev/shm"),
    ] {
        scan(root, needle.as_bytes(), &mut found);
    }
    found
}

fn wait_for_file(p: &Path, child: &mut std::process::Child) {
    let t = Instant::now();
    while !p.exists() {
        if let Ok(Some(st)) = child.try_wait() {
            panic!("the run ended ({st}) before {} appeared", p.display());
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "{} never appeared",
            p.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The record's `resolvedDependencies` entry of input `name`.
fn input_entry(record: &Path, name: &str) -> serde_json::Value {
    let st = envelope_statement(record);
    st["predicate"]["buildDefinition"]["resolvedDependencies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == name)
        .unwrap_or_else(|| panic!("no input {name} in {st:#}"))
        .clone()
}

#[test]
fn the_job_reads_the_plaintext_and_no_host_filesystem_holds_it() {
    let f = RunFixture::new();
    let recipient = identity(&f, "launcher.ageid");
    let canary = canary("no-host-copy");
    let root = owner_prepares(&f, &recipient, &canary);
    // The folder the job waits on.
    let ctl = f.dir().join("ctl");
    std::fs::create_dir(&ctl).unwrap();
    let sandbox = format!("memory = \"256M\"\nro = [\"{}:/ctl\"]\n", ctl.display());
    let spec = job(&f, "reader", &["wait"], &sandbox);
    let mut child = Command::new(bin("sealrun"))
        .current_dir(f.dir())
        .args(["run", &spec, "--quiet"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_file(&f.dir().join("reader-out/ready"), &mut child);
    // The job is running and has read the plaintext: no host filesystem holds a byte of it.
    let found = host_copies(&f, &canary);
    std::fs::write(ctl.join("go"), b"").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        found.is_empty(),
        "plaintext canary on the host while the job ran: {found:?}"
    );
    let t = ok(out);
    // What the job saw is the plaintext, byte for byte, on a read-only mount.
    let seen = std::fs::read_to_string(f.dir().join("reader-out/seen.txt")).unwrap();
    for (rel, data) in dataset_files(&canary) {
        assert!(
            seen.contains(&format!("{rel} {}", sha256_hex(&data))),
            "{rel}: {seen}\n{t}"
        );
    }
    assert!(seen.contains("read-only errno 30"), "{seen}");
    // Inside, one tmpfs mounted read-only, nosuid, nodev, noexec (and noswap where the kernel
    // has it, as the record says); outside, no mount of it at all.
    let mount = seen.lines().find(|l| l.starts_with("mount: ")).unwrap();
    assert_eq!(mount.matches(" - tmpfs ").count(), 1, "{mount}");
    // `mount: ID PARENT MAJ:MIN ROOT POINT OPTIONS …`
    let opts = mount.split_whitespace().nth(6).unwrap();
    for o in ["ro", "nosuid", "nodev", "noexec"] {
        assert!(opts.split(',').any(|x| x == o), "{o} missing: {mount}");
    }
    let host = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!host.contains("/inputs/secret"), "{host}");
    // Nor after it: records, logs, audit log, staging, outputs.
    let after = host_copies(&f, &canary);
    assert!(
        after.is_empty(),
        "plaintext canary on the host after the run: {after:?}"
    );
    // The record: the plaintext manifest root, encrypted, the ciphertexts' digests, the
    // recipient, never the key.
    let rec = f.record("reader");
    let e = input_entry(&rec, "secret");
    assert_eq!(e["digest"]["sha256"], root.as_str(), "{e:#}");
    let a = &e["annotations"];
    assert_eq!(a["encrypted"], true, "{a:#}");
    let d = &a["decryption"];
    assert_eq!(d["recipient"], recipient.as_str());
    assert_eq!(d["identity"], "software-held");
    assert_eq!(d["format"], "age-v1");
    assert_eq!(d["ciphertext_files"], 2);
    assert_eq!(
        mount.contains("noswap"),
        d["noswap"] == true,
        "the record's noswap and the mount disagree: {mount}"
    );
    for (rel, abs) in walk(&f.dir().join("secret.enc")) {
        let want = sha256_hex(&std::fs::read(abs).unwrap());
        let listed = d["ciphertext"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["path"] == rel.as_str())
            .unwrap_or_else(|| panic!("{rel} not listed: {d:#}"));
        assert_eq!(listed["sha256"], want.as_str(), "{rel}");
    }
    let record_text = std::fs::read_to_string(&rec).unwrap();
    let key = std::fs::read_to_string(f.dir().join("launcher.ageid")).unwrap();
    let secret_line = key
        .lines()
        .find(|l| l.starts_with("AGE-SECRET-KEY-"))
        .unwrap();
    assert!(!record_text.contains("AGE-SECRET-KEY"));
    assert!(!envelope_statement(&rec).to_string().contains(secret_line));
    // The record verifies with the verifier alone.
    ok(verify(
        f.dir(),
        &["record", rec.to_str().unwrap(), "--trust", "trust.toml"],
    ));
}

/// Run the encrypted-input job `name` once and expect a refusal: exit 65, nothing ran (no
/// `ready`), and the message holds every one of `needles`.
fn refused(f: &RunFixture, name: &str, needles: &[&str]) -> String {
    let spec = job(f, name, &[], "memory = \"256M\"\n");
    let t = fails_with(f.run(&spec), 65, needles);
    assert!(
        !f.dir().join(format!("{name}-out/ready")).exists(),
        "the job ran: {t}"
    );
    t
}

#[test]
fn one_tampered_ciphertext_byte_is_refused_naming_the_file() {
    let f = RunFixture::new();
    let recipient = identity(&f, "launcher.ageid");
    owner_prepares(&f, &recipient, &canary("tamper"));
    let victim = f.dir().join("secret.enc/train/rows.csv.age");
    let mut bytes = std::fs::read(&victim).unwrap();
    let n = bytes.len();
    bytes[n - 40] ^= 0x01;
    std::fs::write(&victim, &bytes).unwrap();
    refused(
        &f,
        "tampered",
        &[
            "train/rows.csv.age",
            "tampered ciphertext",
            "fails ChaCha20-Poly1305 authentication",
        ],
    );
    // A changed header fails its MAC (one base64 character of the MAC, still valid base64).
    bytes[n - 40] ^= 0x01;
    let mac = memchr::memmem::find(&bytes, b"\n--- ").unwrap() + 5;
    bytes[mac] = if bytes[mac] == b'A' { b'B' } else { b'A' };
    std::fs::write(&victim, &bytes).unwrap();
    refused(
        &f,
        "tampered",
        &[
            "train/rows.csv.age",
            "header's MAC (HMAC-SHA-256) does not verify",
        ],
    );
}

#[test]
fn a_file_not_encrypted_to_this_launcher_is_refused_with_its_stanza_types() {
    let f = RunFixture::new();
    let ours = identity(&f, "launcher.ageid");
    let theirs = identity(&f, "other.ageid");
    owner_prepares(&f, &ours, &canary("recipient"));
    // One file re-encrypted to another launcher only.
    let plain = tempfile::tempdir().unwrap();
    std::fs::write(plain.path().join("labels.bin"), &dataset_files("x")[1].1).unwrap();
    let victim = f.dir().join("secret.enc/labels.bin.age");
    std::fs::remove_file(&victim).unwrap();
    let out = run(Command::new(age_cli())
        .args(["-r", &theirs, "-o"])
        .arg(&victim)
        .arg(plain.path().join("labels.bin")));
    assert!(out.status.success(), "{}", text(&out));
    refused(
        &f,
        "wrongkey",
        &[
            "labels.bin.age",
            "not encrypted to this launcher's recipient",
            &ours,
            "stanzas of type [X25519]",
        ],
    );
}

#[test]
fn a_plaintext_that_does_not_match_the_signature_is_refused() {
    let f = RunFixture::new();
    let recipient = identity(&f, "launcher.ageid");
    owner_prepares(&f, &recipient, &canary("mismatch"));
    // Same size, other content, properly encrypted to us: only the signature can tell.
    let mut other = dataset_files("y")[1].1.clone();
    other[7] ^= 0xff;
    let plain = tempfile::tempdir().unwrap();
    std::fs::write(plain.path().join("labels.bin"), &other).unwrap();
    let victim = f.dir().join("secret.enc/labels.bin.age");
    std::fs::remove_file(&victim).unwrap();
    let out = run(Command::new(age_cli())
        .args(["-r", &recipient, "-o"])
        .arg(&victim)
        .arg(plain.path().join("labels.bin")));
    assert!(out.status.success(), "{}", text(&out));
    refused(&f, "mismatch", &["labels.bin", "digest"]);
}

#[test]
fn a_dataset_larger_than_the_memory_limit_is_refused_at_plan_time() {
    let f = RunFixture::new();
    let recipient = identity(&f, "launcher.ageid");
    owner_prepares(&f, &recipient, &canary("memory"));
    // 40 KiB + rows fit in 33 MiB only with 32 MiB left for the job: 32 MiB does not.
    let spec = job(&f, "big", &[], "memory = \"32M\"\n");
    let t = fails_with(
        f.run(&spec),
        64,
        &[
            "sandbox.memory",
            "do not fit in the job's memory",
            "input \"secret\"",
            "2 files",
            "the limit is 32.0 MiB (33554432 bytes)",
        ],
    );
    assert!(
        f.records("big").is_empty(),
        "a plan error leaves no record: {t}"
    );
}

#[test]
fn an_identity_readable_by_others_is_refused_at_plan_time() {
    use std::os::unix::fs::PermissionsExt;
    let f = RunFixture::new();
    let recipient = identity(&f, "launcher.ageid");
    owner_prepares(&f, &recipient, &canary("mode"));
    let id = f.dir().join("launcher.ageid");
    std::fs::set_permissions(&id, std::fs::Permissions::from_mode(0o644)).unwrap();
    let spec = job(&f, "open", &[], "memory = \"256M\"\n");
    fails_with(
        f.run(&spec),
        64,
        &[
            "decryption_identity",
            "readable or writable by group or others",
            "chmod 600",
        ],
    );
}

/// A pipeline whose first stage reads the encrypted dataset: its chain verifies down to the
/// signed (plaintext) dataset, and the model passes a gate that admits confidential data.
#[test]
fn a_pipeline_from_an_encrypted_dataset_verifies_in_chain_and_passes_a_gate() {
    let f = RunFixture::new();
    let d = f.dir();
    let recipient = identity(&f, "launcher.ageid");
    owner_prepares(&f, &recipient, &canary("pipeline"));
    write_tree(
        d,
        &[
            (
                "prep/prep.py",
                b"import hashlib\nh = hashlib.sha256(open('/inputs/secret/train/rows.csv','rb').read()).hexdigest()\nopen('/out/features.txt','w').write(h)\n",
            ),
            (
                "train/train.py",
                b"open('/out/model.txt','w').write(open('/inputs/feat/features.txt').read()[:8])\n",
            ),
        ],
    );
    let sandbox = "[stage.sandbox]\nprofile = \"python\"\nmemory = \"256M\"\ntimeout = \"60s\"\n";
    let pipeline = format!(
        "name = \"conf\"\ntrust = \"trust.toml\"\nsigning_key = \"launcher.key\"\ndecryption_identity = \"launcher.ageid\"\n\
[[stage]]\nname = \"prep\"\ncommand = [\"python3\", \"/code/prep.py\"]\ncode = \"prep\"\noutput = \"prep-out\"\nproduces = \"features\"\n\
[[stage.input]]\nname = \"secret\"\npath = \"secret.enc\"\nsignature = \"secret.sig\"\nencrypted = true\n{sandbox}\
[[stage]]\nname = \"train\"\ncommand = [\"python3\", \"/code/train.py\"]\ncode = \"train\"\noutput = \"train-out\"\n\
[[stage.input]]\nname = \"feat\"\nfrom_stage = \"prep\"\nkind = \"features\"\n{sandbox}"
    );
    std::fs::write(d.join("pipeline.toml"), pipeline).unwrap();
    ok(sealrun(d, &["run", "pipeline.toml", "--quiet"]));
    let model = f.record("train");
    let shown = model.to_str().unwrap();
    let chain = ok(verify(
        d,
        &[
            "chain",
            shown,
            "--records",
            "records",
            "--trust",
            "trust.toml",
        ],
    ));
    assert!(chain.contains("OK chain of custody verified"), "{chain}");
    assert!(chain.contains("secret"), "{chain}");
    std::fs::write(
        d.join("gate.toml"),
        "trust = \"trust.toml\"\nmax_classification = \"confidential\"\n",
    )
    .unwrap();
    ok(verify(
        d,
        &[
            "gate",
            shown,
            "--policy",
            "gate.toml",
            "--records",
            "records",
        ],
    ));
    // The first stage's record says the input was encrypted.
    let e = input_entry(&f.record("prep"), "secret");
    assert_eq!(e["annotations"]["encrypted"], true, "{e:#}");
}

/// `sealrun encrypt` writes what the stock `age -d` decrypts, and the launcher reads it too.
#[test]
fn sealrun_encrypt_interoperates_with_the_age_cli() {
    let f = RunFixture::new();
    let recipient = identity(&f, "launcher.ageid");
    let plain = f.dir().join("plain");
    let files = dataset_files("interop");
    for (rel, data) in &files {
        write_tree(&plain, &[(rel, data)]);
    }
    ok(sealrun(
        f.dir(),
        &[
            "encrypt",
            "plain",
            "--recipient",
            &recipient,
            "--out",
            "plain.enc",
        ],
    ));
    for (rel, data) in &files {
        let out = run(Command::new(age_cli())
            .args(["-d", "-i", "launcher.ageid"])
            .arg(f.dir().join(format!("plain.enc/{rel}.age")))
            .current_dir(f.dir()));
        assert!(out.status.success(), "{}", text(&out));
        assert_eq!(&out.stdout, data, "{rel}");
    }
    // A bad recipient is a usage error.
    fails_with(
        sealrun(
            f.dir(),
            &[
                "encrypt",
                "plain",
                "--recipient",
                "age1nope",
                "--out",
                "x.enc",
            ],
        ),
        64,
        &["not an age X25519 recipient"],
    );
    let printed = ok(sealrun(
        f.dir(),
        &["identity", "recipient", "launcher.ageid"],
    ));
    assert_eq!(printed.trim(), recipient);
    fails_with(
        sealrun(f.dir(), &["identity", "new", "--out", "launcher.ageid"]),
        64,
        &["already exists"],
    );
}

/// `sealrun ARGS` in `dir` against the software TPM `sw`, with `exe` as the launcher.
fn with_tpm(sw: &Swtpm, exe: &Path, dir: &Path, args: &[&str]) -> std::process::Output {
    run(sw.env(Command::new(exe).current_dir(dir).args(args)))
}

/// A TPM-sealed identity (under a real swtpm): the file holds no key, the launcher that sealed
/// it decrypts, and a modified launcher (its PCR 23 measurement differs from the sealed
/// policy) is refused by the TPM, exit 65, nothing ran.
#[test]
fn a_tpm_sealed_identity_unseals_only_under_this_launchers_measurement() {
    use std::os::unix::fs::PermissionsExt;
    let sw = Swtpm::start();
    let f = RunFixture::new();
    let d = f.dir();
    let t = ok(with_tpm(
        &sw,
        &bin("sealrun"),
        d,
        &["identity", "new", "--out", "launcher.ageid", "--tpm"],
    ));
    let recipient = t
        .lines()
        .find(|l| l.starts_with("age1"))
        .expect("recipient")
        .to_string();
    let file = std::fs::read_to_string(d.join("launcher.ageid")).unwrap();
    assert!(
        file.starts_with("# sealrun launcher identity: tpm-sealed"),
        "{file}"
    );
    assert!(
        !file.contains("AGE-SECRET-KEY"),
        "the key is in the clear: {file}"
    );
    let mode = std::fs::metadata(d.join("launcher.ageid"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // `identity recipient` reads it without the TPM.
    let printed = ok(sealrun(d, &["identity", "recipient", "launcher.ageid"]));
    assert_eq!(printed.trim(), recipient);
    owner_prepares(&f, &recipient, &canary("tpm"));
    // This launcher unseals it (under its own PCR 23 measurement) and the job reads the data.
    let spec = job(&f, "sealed", &[], "memory = \"256M\"\n");
    ok(with_tpm(
        &sw,
        &bin("sealrun"),
        d,
        &["run", &spec, "--quiet"],
    ));
    let e = input_entry(&f.record("sealed"), "secret");
    assert_eq!(
        e["annotations"]["decryption"]["identity"], "tpm-sealed",
        "{e:#}"
    );
    // A modified launcher: the same binary with one byte appended measures to another PCR 23.
    let modified = d.join("sealrun-modified");
    std::fs::copy(bin("sealrun"), &modified).unwrap();
    std::fs::OpenOptions::new()
        .append(true)
        .open(&modified)
        .and_then(|mut m| std::io::Write::write_all(&mut m, b"\0"))
        .unwrap();
    let spec = job(&f, "modified", &[], "memory = \"256M\"\n");
    let t = fails_with(
        with_tpm(&sw, &modified, d, &["run", &spec, "--quiet"]),
        65,
        &[
            "launcher.ageid",
            "a TPM-sealed identity cannot be used",
            "PCR state differs from the sealing policy",
        ],
    );
    assert!(!d.join("modified-out/ready").exists(), "the job ran: {t}");
    std::fs::remove_file(&modified).unwrap();
}

/// The 32 secret bytes of an `AGE-SECRET-KEY-1…` line (bech32).
fn age_secret_bytes(line: &str) -> Vec<u8> {
    const CHARSET: &[u8] = b"qpzry9x8gf2tvdw0s3jn54khce6mua7l";
    let lower = line.trim().to_ascii_lowercase();
    let data = &lower[lower.rfind('1').unwrap() + 1..];
    let fives: Vec<u8> = data[..data.len() - 6]
        .bytes()
        .map(|c| CHARSET.iter().position(|&x| x == c).unwrap() as u8)
        .collect();
    let (mut acc, mut bits, mut out) = (0u32, 0u32, Vec::new());
    for v in fives {
        acc = (acc << 5) | u32::from(v);
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    assert_eq!(out.len(), 32, "an X25519 key is 32 bytes");
    out
}

/// Whether the readable memory of `pid` holds `needle` (`/proc/PID/mem`).
fn memory_holds(pid: u32, needle: &[u8]) -> bool {
    let scan = sealrun_integration::scan_memory(pid, needle);
    assert!(scan.regions_read > 0, "no memory of {pid} could be read");
    scan.found
}

/// `(pid, PPid, NSpid)` of every process.
fn processes() -> Vec<(u32, u32, Vec<u32>)> {
    let mut v = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        let Ok(st) = std::fs::read_to_string(e.path().join("status")) else {
            continue;
        };
        let field = |k: &str| -> Vec<u32> {
            st.lines()
                .find_map(|l| l.strip_prefix(k))
                .map(|r| {
                    r.split_whitespace()
                        .filter_map(|x| x.parse().ok())
                        .collect()
                })
                .unwrap_or_default()
        };
        let ppid = field("PPid:").first().copied().unwrap_or(0);
        v.push((pid, ppid, field("NSpid:")));
    }
    v
}

/// While the job runs, neither the launcher nor the sandbox init (a fork-like copy of the
/// launcher that lives as long as the job) holds the decryption key or the plaintext; the job,
/// which keeps the data it read, does (the control that shows the scan finds what is there).
#[test]
fn neither_the_launcher_nor_the_sandbox_init_holds_the_key_or_the_plaintext() {
    let f = RunFixture::new();
    let recipient = identity(&f, "launcher.ageid");
    let key_text = std::fs::read_to_string(f.dir().join("launcher.ageid")).unwrap();
    let key_line = key_text
        .lines()
        .find(|l| l.starts_with("AGE-SECRET-KEY-1"))
        .unwrap()
        .to_string();
    let key = age_secret_bytes(&key_line);
    let canary = canary("memory");
    owner_prepares(&f, &recipient, &canary);
    let ctl = f.dir().join("ctl");
    std::fs::create_dir(&ctl).unwrap();
    let sandbox = format!("memory = \"256M\"\nro = [\"{}:/ctl\"]\n", ctl.display());
    let spec = job(&f, "mem", &["wait"], &sandbox);
    let mut child = Command::new(bin("sealrun"))
        .current_dir(f.dir())
        .args(["run", &spec, "--quiet"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_file(&f.dir().join("mem-out/ready"), &mut child);
    let launcher = child.id();
    let procs = processes();
    let init = procs
        .iter()
        .find(|(_, ppid, ns)| *ppid == launcher && ns.get(1) == Some(&1))
        .map(|(p, _, _)| *p)
        .expect("the sandbox init");
    let jobs: Vec<u32> = procs
        .iter()
        .filter(|(_, ppid, _)| *ppid == init)
        .map(|(p, _, _)| *p)
        .collect();
    let found = [
        ("key in the launcher", memory_holds(launcher, &key)),
        (
            "key text in the launcher",
            memory_holds(launcher, key_line.as_bytes()),
        ),
        ("key in the init", memory_holds(init, &key)),
        (
            "plaintext in the launcher",
            memory_holds(launcher, canary.as_bytes()),
        ),
        (
            "plaintext in the init",
            memory_holds(init, canary.as_bytes()),
        ),
    ];
    let control = jobs.iter().any(|&p| memory_holds(p, canary.as_bytes()));
    // The key's control: the stock `age -d -i` holds it, waiting for its input.
    let mut age = Command::new(age_cli())
        .args(["-d", "-i"])
        .arg(f.dir().join("launcher.ageid"))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let key_control = memory_holds(age.id(), &key);
    let _ = age.kill();
    let _ = age.wait();
    std::fs::write(ctl.join("go"), b"").unwrap();
    let st = child.wait().unwrap();
    assert!(st.success(), "{st}");
    assert!(control, "control: the job holds the plaintext it read");
    assert!(key_control, "control: `age -d -i` holds the key");
    let held: Vec<&str> = found.iter().filter(|(_, f)| *f).map(|(w, _)| *w).collect();
    assert!(held.is_empty(), "found: {held:?}");
}
