//! Docs that paste (#14.9): every TOML and shell block in `docs/` and the README
//! is checked — TOML blocks parse, shell blocks pass `bash -n` — and the signing
//! walkthrough (`docs/signing.md`) runs end to end with the real binaries.

use std::path::{Path, PathBuf};
use std::process::Command;

use sealrun_integration::{bin, text, workspace_root};

/// A fenced block: its language, the line its body starts on, and the body.
struct Block {
    lang: String,
    line: usize,
    body: String,
}

fn blocks(md: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut open: Option<Block> = None;
    for (i, line) in md.lines().enumerate() {
        let fence = line.trim_start().starts_with("```");
        match (&mut open, fence) {
            (None, true) => {
                open = Some(Block {
                    lang: line.trim_start().trim_start_matches('`').trim().to_string(),
                    line: i + 2,
                    body: String::new(),
                })
            }
            (Some(_), true) => out.extend(open.take()),
            (Some(b), false) => {
                b.body.push_str(line);
                b.body.push('\n');
            }
            (None, false) => {}
        }
    }
    assert!(open.is_none(), "an unclosed ``` block");
    out
}

fn doc_files() -> Vec<PathBuf> {
    let root = workspace_root();
    let mut files: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    files.sort();
    files.push(root.join("README.md"));
    files
}

fn is_shell(lang: &str) -> bool {
    matches!(lang, "sh" | "bash" | "shell" | "console")
}

#[test]
fn every_toml_block_parses_and_every_shell_block_is_valid_bash() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut tomls, mut shells) = (0, 0);
    let mut problems = Vec::new();
    for file in doc_files() {
        let md = std::fs::read_to_string(&file).unwrap();
        let name = file
            .strip_prefix(workspace_root())
            .unwrap()
            .display()
            .to_string();
        for b in blocks(&md) {
            if b.lang == "toml" {
                tomls += 1;
                if let Err(e) = b.body.parse::<toml::Table>() {
                    problems.push(format!("{name}:{}: TOML block does not parse: {e}", b.line));
                }
            } else if is_shell(&b.lang) {
                shells += 1;
                let script = tmp.path().join("block.sh");
                std::fs::write(&script, &b.body).unwrap();
                let out = Command::new("bash")
                    .arg("-n")
                    .arg(&script)
                    .output()
                    .unwrap();
                if !out.status.success() {
                    problems.push(format!("{name}:{}: shell block: {}", b.line, text(&out)));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(
        tomls >= 10 && shells >= 10,
        "found only {tomls} TOML and {shells} shell blocks"
    );
}

/// Every spec-like TOML block (one with `name` and `command`, or `[[stage]]`) is a spec
/// sealrun's own parser accepts but for files that do not exist in this test.
#[test]
fn toml_spec_blocks_use_only_known_fields() {
    let tmp = tempfile::tempdir().unwrap();
    let mut checked = 0;
    for file in doc_files() {
        let md = std::fs::read_to_string(&file).unwrap();
        for b in blocks(&md).into_iter().filter(|b| b.lang == "toml") {
            let is_spec = (b.body.contains("\ncommand = ") || b.body.starts_with("command = "))
                && b.body.contains("name = ");
            if !is_spec {
                continue;
            }
            checked += 1;
            let spec = tmp.path().join("spec.toml");
            std::fs::write(&spec, &b.body).unwrap();
            let out = Command::new(bin("sealrun"))
                .current_dir(tmp.path())
                .args(["run", "spec.toml", "--quiet"])
                .output()
                .unwrap();
            let t = text(&out);
            // Files named by the example do not exist here; anything else is a doc error.
            assert!(
                !t.contains("unknown field")
                    && !t.contains("invalid type")
                    && !t.contains("unknown variant"),
                "{}:{}: {t}",
                file.display(),
                b.line
            );
        }
    }
    assert!(checked >= 1, "no spec block found");
}

fn path_with_binaries() -> String {
    let dir = bin("sealrun").parent().unwrap().to_path_buf();
    format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// `docs/signing.md` is a walkthrough: its shell blocks (the model-signing one aside),
/// with its trust policy written where it says, run in order in a fresh folder.
#[test]
fn the_signing_walkthrough_runs_end_to_end() {
    let md = std::fs::read_to_string(workspace_root().join("docs/signing.md")).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("data/train")).unwrap();
    std::fs::create_dir_all(dir.join("keys")).unwrap();
    std::fs::write(dir.join("data/train/points.csv"), "x,y\n1,2\n").unwrap();
    let mut ran = 0;
    for b in blocks(&md) {
        if b.lang == "toml" {
            std::fs::write(dir.join("trust.toml"), &b.body).unwrap();
            continue;
        }
        if !is_shell(&b.lang) || b.body.contains("model_signing ") {
            continue;
        }
        ran += 1;
        let out = Command::new("bash")
            .args(["-euo", "pipefail", "-c", &b.body])
            .current_dir(dir)
            .env("PATH", path_with_binaries())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "docs/signing.md:{}: block failed:\n{}\n{}",
            b.line,
            b.body,
            text(&out)
        );
    }
    assert!(ran >= 4, "ran {ran} blocks");
    assert!(Path::new(&dir.join("seen.json")).exists());
    // The walkthrough's trust policy is enough for a job whose records verify.
    std::fs::write(
        dir.join("job.toml"),
        "name = \"train\"\ncommand = [\"python3\", \"-c\", \"open('/out/m', 'w').write('m')\"]\noutput = \"out\"\ntrust = \"trust.toml\"\nsigning_key = \"keys/launcher.key\"\n[[input]]\nname = \"points\"\npath = \"data\"\nsignature = \"data.sig\"\n[sandbox]\nprofile = \"python\"\n",
    )
    .unwrap();
    let out = Command::new("bash")
        .args([
            "-euo",
            "pipefail",
            "-c",
            "sealrun run -q job.toml && sealrun-verify record records/train-*.json --trust trust.toml --outputs out && sealrun-verify log audit.log --trust trust.toml",
        ])
        .current_dir(dir)
        .env("PATH", path_with_binaries())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
}
