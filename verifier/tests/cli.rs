//! The `sealrun-verify` binary's usage surface. (Also makes `cargo test`
//! build the binary for the end-to-end suites in `integration/`.)

use std::process::Command;

fn verify(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_sealrun-verify"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn help_teaches_exit_codes_and_examples() {
    let out = verify(&["artifact", "--help"]);
    assert!(out.status.success());
    let t = String::from_utf8_lossy(&out.stdout);
    assert!(
        t.contains("--signature") && t.contains("--trust") && t.contains("--key"),
        "{t}"
    );
    let top = String::from_utf8_lossy(&verify(&["--help"]).stdout).to_string();
    assert!(top.contains("Exit codes"), "{top}");
}

#[test]
fn bad_usage_exits_2() {
    assert_eq!(verify(&["artifact"]).status.code(), Some(2));
    assert_eq!(verify(&["no-such-command"]).status.code(), Some(2));
}
