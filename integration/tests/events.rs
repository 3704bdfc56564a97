//! The security event stream (issue 20.1): `sealrun run --events FILE|-` and
//! the spec's `events = "PATH"` write one ECS JSON object per line as the run
//! goes: run started, input verified / refused, secret delivered / expired /
//! removed / leaked (name only), denied system calls (one per name, with its
//! count), egress attempts (destination), limits hit, record signed, run ended.
//! Every line is parsed and checked; no line ever holds a secret's value or any
//! encoding of it.
//!
//! Every test works in its own temporary folder; the only network use is
//! connection attempts from inside the sandbox (to 127.0.0.1 and a unix path),
//! which must fail.

use std::process::{Command, Output};

use base64::Engine as _;
use sealrun_integration::{bin, run, sha256_hex, text, RunFixture, RUN_SANDBOX};

const VAR: &str = "SEALRUN_TEST_EVENTS_SECRET";

/// A value unique to this process, with `/` and `+` (its URL encoding differs).
fn secret_value(test: &str) -> String {
    let seed = format!(
        "{test}-{}-{:?}",
        std::process::id(),
        std::time::SystemTime::now()
    );
    let h = hex::decode(sha256_hex(seed.as_bytes())).unwrap();
    let b64 = base64::engine::general_purpose::STANDARD_NO_PAD.encode(&h[..18]);
    format!("tok/{}+{b64}", hex::encode(&h[18..28]))
}

/// The value and every encoding of it a leak could take.
fn encodings(value: &str) -> Vec<(&'static str, String)> {
    let v = value.as_bytes();
    let url: String = v
        .iter()
        .map(|&b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    vec![
        ("raw", value.to_string()),
        ("hex", hex::encode(v)),
        ("HEX", hex::encode_upper(v)),
        (
            "base64",
            base64::engine::general_purpose::STANDARD_NO_PAD.encode(v),
        ),
        (
            "base64url",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v),
        ),
        ("url", url),
        // JSON escapes `/` optionally: the value as a JSON string body.
        ("json", value.replace('/', "\\/")),
    ]
}

/// `sealrun run --quiet SPEC ARGS...` with the secret in the child's environment only.
fn run_with(f: &RunFixture, spec: &str, value: &str, args: &[&str]) -> Output {
    run(Command::new(bin("sealrun"))
        .current_dir(f.dir())
        .args(["run", spec, "--quiet"])
        .args(args)
        .env(VAR, value)
        .env_remove("SEALRUN_LOG")
        .env_remove("RUST_LOG"))
}

/// Parse every line; check the ECS fields every event has; return them.
#[track_caller]
fn parse(lines: &str, job: &str) -> Vec<serde_json::Value> {
    let evs: Vec<serde_json::Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(!evs.is_empty(), "no events");
    let inv = evs[0]["sealrun"]["invocation"].clone();
    assert_eq!(inv.as_str().map(str::len), Some(32), "{}", evs[0]);
    for e in &evs {
        let ts = e["@timestamp"].as_str().expect("@timestamp");
        time::OffsetDateTime::parse(ts, &time::format_description::well_known::Rfc3339)
            .unwrap_or_else(|_| panic!("@timestamp {ts:?} is not RFC 3339"));
        assert!(
            ["event", "alert"].contains(&e["event"]["kind"].as_str().unwrap()),
            "{e}"
        );
        assert!(
            !e["event"]["category"].as_array().unwrap().is_empty(),
            "{e}"
        );
        assert!(e["event"]["action"].is_string(), "{e}");
        assert!(
            ["success", "failure", "unknown"].contains(&e["event"]["outcome"].as_str().unwrap()),
            "{e}"
        );
        assert!(!e["host"]["name"].as_str().unwrap().is_empty(), "{e}");
        assert!(e["process"]["pid"].as_u64().unwrap() > 0, "{e}");
        assert_eq!(e["ecs"]["version"], "8.11.0", "{e}");
        assert_eq!(e["sealrun"]["invocation"], inv, "one run: {e}");
        assert_eq!(e["sealrun"]["job"], job, "{e}");
        assert!(e["message"].is_string(), "{e}");
    }
    evs
}

fn actions(evs: &[serde_json::Value]) -> Vec<&str> {
    evs.iter()
        .map(|e| e["event"]["action"].as_str().unwrap())
        .collect()
}

#[track_caller]
fn one<'a>(evs: &'a [serde_json::Value], action: &str) -> &'a serde_json::Value {
    let v: Vec<_> = evs
        .iter()
        .filter(|e| e["event"]["action"] == action)
        .collect();
    assert_eq!(v.len(), 1, "expected one {action}: {:?}", actions(evs));
    v[0]
}

#[track_caller]
fn no_secret(hay: &str, value: &str) {
    for (kind, n) in encodings(value) {
        assert!(
            !hay.contains(&n),
            "the secret ({kind}) is in the events:\n{hay}"
        );
    }
}

/// Denied mount (3x), egress to 127.0.0.1:9 and to a unix path naming the
/// secret, the secret printed, a log over its limit.
const NOISY: &str = r#"import ctypes, socket
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
for _ in range(3):
    libc.syscall(ctypes.c_long(165), b"none", b"/tmp", b"tmpfs", ctypes.c_ulong(0), ctypes.c_ulong(0))
v = open("/run/secrets/token").read().strip()
for fam, addr in ((socket.AF_INET, ("127.0.0.1", 9)), (socket.AF_UNIX, "/tmp/" + v)):
    try:
        s = socket.socket(fam, socket.SOCK_STREAM); s.settimeout(3); s.connect(addr)
    except OSError as e:
        print("egress blocked:", e)
print("leaking", v)
print("x" * 8192)
open("/out/model.json", "w").write("{}")
"#;

#[test]
fn every_kind_of_event_is_a_parsed_ecs_line_and_none_holds_the_secret() {
    let f = RunFixture::new();
    let value = secret_value("every_kind");
    let sandbox = format!(
        "{RUN_SANDBOX}max_log_size = \"1K\"\n[secrets.token]\nfrom = \"env:{VAR}\"\nttl = \"10m\"\n"
    );
    let spec = f.job("ev", NOISY, &[], &sandbox);
    let out = run_with(&f, &spec, &value, &["--events", "events.jsonl"]);
    assert_eq!(out.status.code(), Some(66), "a leak: {}", text(&out));
    let lines = std::fs::read_to_string(f.dir().join("events.jsonl")).unwrap();
    no_secret(&lines, &value);
    let evs = parse(&lines, "ev");
    let acts = actions(&evs);
    assert_eq!(acts.first(), Some(&"run-started"), "{acts:?}");
    assert_eq!(acts.last(), Some(&"run-ended"), "{acts:?}");
    for a in [
        "input-verified",
        "secret-delivered",
        "syscall-denied",
        "egress-attempt",
        "limit-hit",
        "secret-leaked",
        "secret-removed",
        "record-signed",
    ] {
        assert!(acts.contains(&a), "{a} missing: {acts:?}");
    }
    let pos = |a: &str| acts.iter().position(|x| *x == a).unwrap();
    assert!(pos("input-verified") < pos("secret-delivered"));
    assert!(pos("secret-delivered") < pos("syscall-denied"));
    assert!(pos("record-signed") < pos("run-ended"));

    let input = &one(&evs, "input-verified")["sealrun"]["input"];
    assert_eq!(input["name"], "points", "{input}");
    assert_eq!(input["artifact"], "data", "{input}");
    assert_eq!(input["signer"], "registry", "{input}");
    assert_eq!(input["keyid"], f.reg_keyid.as_str(), "{input}");
    assert_eq!(input["labels"]["classification"], "internal", "{input}");
    assert!(
        input["digest"].as_str().unwrap().starts_with("sha256:"),
        "{input}"
    );

    let s = &one(&evs, "secret-delivered")["sealrun"]["secret"];
    assert_eq!(s["name"], "token");
    assert_eq!(s["path"], "/run/secrets/token");
    assert_eq!(s["ttl_s"], 600.0);

    let mount: Vec<_> = evs
        .iter()
        .filter(|e| {
            e["event"]["action"] == "syscall-denied" && e["sealrun"]["syscall"]["name"] == "mount"
        })
        .collect();
    assert_eq!(mount.len(), 1, "one event per name: {acts:?}");
    assert!(
        mount[0]["sealrun"]["syscall"]["count"].as_u64().unwrap() >= 3,
        "{}",
        mount[0]
    );
    assert_eq!(mount[0]["event"]["kind"], "alert");

    let egress: Vec<_> = evs
        .iter()
        .filter(|e| e["event"]["action"] == "egress-attempt")
        .collect();
    assert!(
        egress
            .iter()
            .any(|e| e["destination"]["address"] == "127.0.0.1:9"
                && e["sealrun"]["egress"]["family"] == "inet"),
        "{egress:?}"
    );
    assert!(
        egress
            .iter()
            .any(|e| e["sealrun"]["egress"]["family"] == "unix"),
        "the unix connect (its path redacted): {egress:?}"
    );

    let limit = &one(&evs, "limit-hit")["sealrun"]["limit"];
    assert_eq!(limit["name"], "max_log_size", "{limit}");
    assert_eq!(limit["value"], 1024, "{limit}");

    let leaks: Vec<_> = evs
        .iter()
        .filter(|e| e["event"]["action"] == "secret-leaked")
        .collect();
    assert!(leaks
        .iter()
        .all(|e| e["sealrun"]["secret"]["name"] == "token"));
    assert!(
        leaks
            .iter()
            .any(|e| e["sealrun"]["secret"]["place"] == "stdout"),
        "{leaks:?}"
    );
    assert!(
        leaks.iter().any(|e| e["sealrun"]["secret"]["place"]
            .as_str()
            .unwrap()
            .starts_with("egress:")),
        "{leaks:?}"
    );

    let rec = f.record("ev");
    let digest = format!("sha256:{}", sha256_hex(&std::fs::read(&rec).unwrap()));
    let signed = &one(&evs, "record-signed")["sealrun"]["record"];
    assert_eq!(signed["digest"], digest.as_str(), "{signed}");
    let end = one(&evs, "run-ended");
    assert_eq!(end["event"]["outcome"], "failure");
    assert_eq!(end["sealrun"]["run"]["exit_status"], 66);
    assert_eq!(end["sealrun"]["run"]["record"]["digest"], digest.as_str());
    assert!(
        end["message"]
            .as_str()
            .unwrap()
            .contains("secret leaked: token in"),
        "{end}"
    );
}

#[test]
fn a_refused_input_on_stdout() {
    let f = RunFixture::new();
    let spec = f.job("ref", "print('never')\n", &[], RUN_SANDBOX);
    std::fs::write(f.dir().join("data/points.csv"), b"x,y\n1,2\n3,5\n").unwrap();
    let out = run_with(&f, &spec, "unused", &["--events", "-"]);
    assert_eq!(out.status.code(), Some(65), "{}", text(&out));
    let evs = parse(&String::from_utf8(out.stdout).unwrap(), "ref");
    assert_eq!(
        actions(&evs),
        ["run-started", "input-refused", "record-signed", "run-ended"]
    );
    let r = &evs[1];
    assert_eq!(r["event"]["kind"], "alert");
    assert_eq!(r["event"]["outcome"], "failure");
    assert_eq!(r["sealrun"]["input"]["name"], "points");
    assert!(
        r["sealrun"]["input"]["reason"]
            .as_str()
            .unwrap()
            .contains("digest mismatch"),
        "{r}"
    );
    assert_eq!(evs[3]["sealrun"]["run"]["exit_status"], 65);
}

#[test]
fn the_spec_names_the_stream_and_a_timeout_and_an_expired_secret_are_reported() {
    let f = RunFixture::new();
    let value = secret_value("timeout");
    let sandbox = format!(
        "profile = \"python\"\nmemory = \"512M\"\ntimeout = \"3s\"\n[secrets.token]\nfrom = \"env:{VAR}\"\nttl = \"1s\"\n"
    );
    let spec = f.job("slow", "import time\ntime.sleep(30)\n", &[], &sandbox);
    let path = f.dir().join(&spec);
    let text_spec = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, format!("events = \"ev.jsonl\"\n{text_spec}")).unwrap();
    let out = run_with(&f, &spec, &value, &[]);
    assert_eq!(out.status.code(), Some(124), "{}", text(&out));
    let lines = std::fs::read_to_string(f.dir().join("ev.jsonl")).unwrap();
    no_secret(&lines, &value);
    let evs = parse(&lines, "slow");
    let limit = &one(&evs, "limit-hit")["sealrun"]["limit"];
    assert_eq!(limit["name"], "timeout", "{limit}");
    assert_eq!(limit["value"], 3.0, "{limit}");
    let exp = one(&evs, "secret-expired");
    assert_eq!(exp["sealrun"]["secret"]["name"], "token");
    assert_eq!(one(&evs, "run-ended")["sealrun"]["run"]["exit_status"], 124);
}
