//! The `sealrun` binary's usage surface. (Also makes `cargo test` build the
//! binary for the end-to-end suites in `integration/`.)

use std::process::Command;

fn sealrun(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_sealrun"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn help_lists_the_commands() {
    let out = sealrun(&["--help"]);
    assert!(out.status.success());
    let t = String::from_utf8_lossy(&out.stdout);
    for cmd in ["keygen", "sign", "exec"] {
        assert!(t.contains(cmd), "--help lacks {cmd}:\n{t}");
    }
}

#[test]
fn sign_with_an_unknown_kind_is_a_usage_error() {
    let out = sealrun(&["sign", ".", "--key", "k", "--kind", "weights"]);
    assert_eq!(out.status.code(), Some(2));
    let t = String::from_utf8_lossy(&out.stderr);
    assert!(t.contains("unknown kind \"weights\""), "{t}");
}
