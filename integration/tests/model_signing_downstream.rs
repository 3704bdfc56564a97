//! model-signing inputs work downstream (issue #11, item 23): a job whose input
//! is vouched for by an OpenSSF model-signing bundle (made here with the real
//! `model_signing` tool) keeps the bundle in `records/artifacts/`, and `chain`,
//! `gate`, `aibom` and a later `from_record` consumer verify it as a bundle
//! (they used to parse it as a DSSE envelope: "missing field `payload`").

use std::process::Command;

use sealrun_integration::{
    ensure_python_module, ok, run, text, verify, write_tree, RunFixture, RUN_TRUST,
};

const SANDBOX: &str = "[sandbox]\nprofile = \"python\"\nmemory = \"512M\"\ntimeout = \"60s\"\n";

fn spec(name: &str, input: &str) -> String {
    format!(
        "name = {name:?}\ncommand = [\"python3\", \"-c\", \"open('/out/m', 'w').write('m')\"]\noutput = \"{name}-out\"\ntrust = \"trust.toml\"\nsigning_key = \"launcher.key\"\n{input}{SANDBOX}"
    )
}

#[test]
fn a_model_signing_input_verifies_in_chain_gate_aibom_and_from_record() {
    ensure_python_module("model_signing", "model-signing");
    ensure_python_module("OpenSSL", "pyopenssl");
    let f = RunFixture::new();
    let d = f.dir();
    write_tree(
        d,
        &[
            ("base/weights.bin", b"\x00\x01\x02"),
            ("base/sub/config.json", b"{}"),
        ],
    );
    let sh = |cmd: &str| {
        let out = run(Command::new("sh").current_dir(d).args(["-c", cmd]));
        assert!(out.status.success(), "{cmd}:\n{}", text(&out));
    };
    sh(
        "openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out p256.key \
        && openssl pkey -in p256.key -pubout -out p256.pub \
        && model_signing sign key base --private_key p256.key --signature base.sig",
    );
    std::fs::write(
        d.join("trust.toml"),
        format!("{RUN_TRUST}[[key]]\nname = \"ml-team\"\npublic_key = \"p256.pub\"\nkinds = [\"model\"]\n"),
    )
    .unwrap();
    let input =
        "[[input]]\nname = \"base\"\npath = \"base\"\nsignature = \"base.sig\"\nkind = \"model\"\n";
    std::fs::write(d.join("tune.toml"), spec("tune", input)).unwrap();
    ok(f.run("tune.toml"));
    let rec = f.record("tune").display().to_string();
    let t = ok(verify(
        d,
        &[
            "chain",
            &rec,
            "--records",
            "records",
            "--trust",
            "trust.toml",
        ],
    ));
    assert!(
        t.contains("model \"base\"") && t.contains("\"ml-team\""),
        "{t}"
    );
    std::fs::write(d.join("gate.toml"), "trust = \"trust.toml\"\n").unwrap();
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
    let t = ok(verify(
        d,
        &[
            "aibom",
            &rec,
            "--records",
            "records",
            "--trust",
            "trust.toml",
        ],
    ));
    assert!(t.contains("\"name\": \"base\""), "{t}");
    // A later run consuming tune's outputs verifies tune's chain, bundle included.
    let input = format!(
        "[[input]]\nname = \"tuned\"\npath = \"tune-out\"\nfrom_record = {rec:?}\nkind = \"model\"\n"
    );
    std::fs::write(d.join("next.toml"), spec("next", &input)).unwrap();
    ok(f.run("next.toml"));
    let next = f.record("next").display().to_string();
    ok(verify(
        d,
        &[
            "chain",
            &next,
            "--records",
            "records",
            "--trust",
            "trust.toml",
        ],
    ));
}
