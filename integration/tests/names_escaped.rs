//! Names are printed escaped (issue #11, item 25): a file name holding a
//! terminal escape sequence and a newline reaches neither the terminal nor the
//! record's result nor the audit log's outcome as raw control characters, and
//! messages do not repeat themselves ("failed: exited 3 (exited 3)").

use sealrun_integration::{
    audit_entries, byproduct, envelope_statement, fails_with, text, verify, write_tree, RunFixture,
    RUN_SANDBOX,
};

const EVIL: &str = "evil\u{1b}[2J\u{1b}]0;pwned\u{7}\nname.csv";
const SHOWN: &str = "evil\\u{1b}[2J\\u{1b}]0;pwned\\u{7}\\nname.csv";

#[track_caller]
fn no_control(what: &str, s: &str) {
    assert!(
        !s.contains('\u{1b}') && !s.contains('\u{7}'),
        "{what} holds a raw control character: {s:?}"
    );
}

#[test]
fn a_file_name_with_terminal_escapes_is_shown_escaped_everywhere() {
    let f = RunFixture::new();
    // An extra file slipped into the signed dataset.
    write_tree(f.dir(), &[(&format!("data/{EVIL}"), b"x")]);
    let out = verify(
        f.dir(),
        &[
            "artifact",
            "data",
            "--signature",
            "data.sig",
            "--trust",
            "trust.toml",
        ],
    );
    let t = fails_with(
        out,
        1,
        &["extra_file", &format!("file {SHOWN}: extra file")],
    );
    no_control("sealrun-verify's output", &t);
    assert!(!t.contains("\nname.csv"), "raw newline: {t}");
    // The launcher refuses the input: terminal, record and audit log stay clean.
    let job = f.job("j", "open('/out/m', 'w').write('m')\n", &[], RUN_SANDBOX);
    let t = fails_with(f.run(&job), 65, &[SHOWN]);
    no_control("sealrun's output", &t);
    let st = envelope_statement(&f.record("j"));
    let result = byproduct(&st, "end")["annotations"]["result"]
        .as_str()
        .unwrap()
        .to_string();
    no_control("the record's result", &result);
    assert!(
        result.contains(SHOWN) && !result.contains('\n'),
        "{result:?}"
    );
    let log = audit_entries(&f.dir().join("audit.log"));
    let outcome = log.last().unwrap()["outcome"].as_str().unwrap().to_string();
    no_control("the audit log outcome", &outcome);
    assert!(
        outcome.contains(SHOWN) && !outcome.contains('\n'),
        "{outcome:?}"
    );
    assert!(!t.contains(&format!("({result})")), "repeated: {t}");
}

#[test]
fn a_failed_run_says_why_once() {
    let f = RunFixture::new();
    let job = f.job("j", "import sys\nsys.exit(3)\n", &[], RUN_SANDBOX);
    let out = f.run(&job);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(3), "{t}");
    assert!(t.contains("failed: exited 3; 0 output file(s)"), "{t}");
    assert!(!t.contains("(exited 3)"), "repeated: {t}");
}

#[test]
fn an_error_and_its_cause_are_not_repeated() {
    let f = RunFixture::new();
    for args in [
        &[
            "artifact",
            "data",
            "--signature",
            "missing.sig",
            "--trust",
            "trust.toml",
        ][..],
        &["artifact", "data", "--trust", "missing.toml"][..],
    ] {
        let t = fails_with(verify(f.dir(), args), 2, &["No such file or directory"]);
        assert_eq!(
            t.matches("No such file or directory").count(),
            1,
            "repeated: {t}"
        );
    }
}
