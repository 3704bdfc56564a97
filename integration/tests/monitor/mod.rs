//! Helpers shared by the monitor-and-respond tests (events, revocation,
//! lineage): small pipelines of real runs in a [`RunFixture`]'s folder.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use sealrun_integration::{sha256_hex, write_tree, RunFixture, RUN_TRUST};

/// A stage that copies every file of every input to /out (and says so).
pub const COPY: &str = r#"import os, shutil
for name in sorted(os.listdir("/inputs")):
    for root, _, files in os.walk("/inputs/" + name):
        for f in files:
            shutil.copy(os.path.join(root, f), "/out/%s-%s" % (name, f))
print("copied", sorted(os.listdir("/out")))
"#;

const SANDBOX: &str =
    "[stage.sandbox]\nprofile = \"python\"\nmemory = \"512M\"\ntimeout = \"60s\"\n";

/// One `[[stage]]` of a pipeline: `name` runs [`COPY`] (code folder
/// `code-NAME`), writes `out-NAME`, produces `produces`, and consumes the
/// signed dataset (`from` empty) or the outputs of the stages in `from`.
pub fn stage(dir: &Path, name: &str, produces: &str, from: &[&str]) -> String {
    write_tree(dir, &[(&format!("code-{name}/run.py"), COPY.as_bytes())]);
    let mut s = format!(
        "[[stage]]\nname = {name:?}\ncommand = [\"python3\", \"/code/run.py\"]\ncode = \"code-{name}\"\noutput = \"out-{name}\"\nproduces = {produces:?}\n"
    );
    if from.is_empty() {
        s.push_str("[[stage.input]]\nname = \"raw\"\npath = \"data\"\nsignature = \"data.sig\"\n");
    }
    for f in from {
        s.push_str(&format!(
            "[[stage.input]]\nname = {f:?}\nfrom_stage = {f:?}\nkind = \"dataset\"\n"
        ));
    }
    s.push_str(SANDBOX);
    s
}

/// Write pipeline `NAME.toml` from stages (see [`stage`]); returns its file name.
pub fn pipeline(dir: &Path, name: &str, stages: &[String], extra: &str) -> String {
    let mut t = format!(
        "name = {name:?}\ntrust = \"trust.toml\"\nsigning_key = \"launcher.key\"\n{extra}\n"
    );
    for s in stages {
        t.push_str(s);
        t.push('\n');
    }
    let file = format!("{name}.toml");
    std::fs::write(dir.join(&file), t).expect("write pipeline");
    file
}

/// The one record of job `name` in `dir/records`, as `records/FILE`.
#[track_caller]
pub fn rec(f: &RunFixture, name: &str) -> String {
    let r: Vec<PathBuf> = f
        .records(name)
        .into_iter()
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy().into_owned();
            let rest = &n[name.len() + 1..];
            rest.len() >= 12 && rest[..12].chars().all(|c| c.is_ascii_hexdigit())
        })
        .collect();
    assert_eq!(r.len(), 1, "expected one record of {name}, found {r:?}");
    format!("records/{}", r[0].file_name().unwrap().to_string_lossy())
}

/// The SHA-256 of a file in the fixture's folder.
pub fn file_sha(f: &RunFixture, rel: &str) -> String {
    sha256_hex(&std::fs::read(f.dir().join(rel)).expect("read file"))
}

/// The manifest root of the fixture's signed dataset, as recorded by a run
/// that read it through input `input`.
pub fn input_digest(f: &RunFixture, record: &str, input: &str) -> String {
    let st = sealrun_integration::envelope_statement(&f.dir().join(record));
    st["predicate"]["buildDefinition"]["resolvedDependencies"]
        .as_array()
        .expect("resolvedDependencies")
        .iter()
        .find(|d| d["name"] == input)
        .and_then(|d| d["digest"]["sha256"].as_str())
        .expect("input digest")
        .to_string()
}

/// Write `NAME` = the fixture's trust policy plus `extra` (e.g. `[[revoked]]`).
pub fn trust_with(f: &RunFixture, name: &str, extra: &str) {
    std::fs::write(f.dir().join(name), format!("{RUN_TRUST}\n{extra}")).expect("write trust");
}

/// A `[[revoked]]` entry.
pub fn revoked(target: &str, reason: &str) -> String {
    format!("[[revoked]]\n{target}\nreason = {reason:?}\ntime = \"2026-11-30T08:00:00Z\"\n")
}
pub mod generate;
