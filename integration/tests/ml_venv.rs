//! Python virtualenvs, end to end with the real binaries and real venvs made by the test under
//! `/tmp` (`python3 -m venv`; numpy and scikit-learn installed offline from the wheels `.ci/run`
//! downloads): `sealrun exec --python` and `[sandbox] python` run the venv's own interpreter
//! with the venv read-only at its own path; a folder that is not a venv is refused before
//! anything runs (exit 64, with the spec's location); a training job's record lists every
//! installed distribution as a `pkg:pypi` purl with its `RECORD` digest and the interpreter with
//! its digest; the run passes a default release gate; `sealrun-verify aibom` lists them as
//! components of a valid CycloneDX 1.6 BOM.

use sealrun_integration::exec as common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{exec, python, tempdir};
use sealrun_integration::{
    ensure_python_module, envelope_statement, fails_with, make_venv, ok, run, sha256_hex, text,
    verify, RunFixture,
};

/// A venv of `packages` (none: made without pip) at `/tmp/sealrun-sbx-*/venv`, and the
/// temporary folder holding it.
fn venv(packages: &[&str]) -> (tempfile::TempDir, PathBuf) {
    let t = tempdir();
    let v = t.path().join("venv");
    make_venv(&python(), &v, packages);
    assert!(v.starts_with("/tmp"), "{}", v.display());
    (t, v)
}

const WHO: &str = r#"import os, shutil, sys
print(sys.prefix)
print(shutil.which("python"))
print(os.environ["VIRTUAL_ENV"])
try:
    open(os.path.join(sys.prefix, "planted.py"), "w")
    print("venv writable")
except OSError as e:
    print("venv read-only:", e.errno)
"#;

#[test]
fn exec_python_runs_the_venvs_interpreter_with_the_venv_read_only_at_its_own_path() {
    let (_t, v) = venv(&[]);
    let vs = v.display().to_string();
    // The default profile binds no interpreter prefix of its own: --python brings the venv
    // (under /tmp, where the sandbox mounts its own tmpfs) and the base interpreter's prefix.
    for profile in ["default", "python"] {
        let r = exec(
            &["--profile", profile, "--python", &vs],
            &["python3", "-c", WHO],
        );
        assert_eq!(r.code, 0, "{profile}: {r:?}");
        let lines: Vec<&str> = r.stdout.lines().collect();
        assert_eq!(lines[0], vs, "{profile}: sys.prefix: {r:?}");
        assert_eq!(lines[1], format!("{vs}/bin/python"), "{profile}: {r:?}");
        assert_eq!(lines[2], vs, "{profile}: VIRTUAL_ENV: {r:?}");
        assert_eq!(lines[3], "venv read-only: 30", "{profile}: EROFS: {r:?}");
    }
    assert!(!v.join("planted.py").exists());
    // Without --python, `python3` is the system's, not the venv's.
    let r = exec(&[], &["python3", "-c", "import sys; print(sys.prefix)"]);
    assert_ne!(r.stdout.trim(), vs, "{r:?}");
}

#[test]
fn exec_python_refuses_a_folder_that_is_not_a_venv() {
    let t = tempdir();
    let r = exec(
        &["--python", &t.path().display().to_string()],
        &["/bin/true"],
    );
    assert_eq!(r.code, 64, "{r:?}");
    assert!(
        r.stderr.contains("--python")
            && r.stderr
                .contains("is not a virtualenv: it has no pyvenv.cfg"),
        "{r:?}"
    );
    // A pyvenv.cfg without an interpreter is not one either.
    std::fs::write(t.path().join("pyvenv.cfg"), "home = /usr/bin\n").unwrap();
    let r = exec(
        &["--python", &t.path().display().to_string()],
        &["/bin/true"],
    );
    assert_eq!(r.code, 64, "{r:?}");
    assert!(r.stderr.contains("bin/python3"), "{r:?}");
}

#[test]
fn run_spec_python_that_is_not_a_venv_is_refused_at_plan_time_with_its_location() {
    let f = RunFixture::new();
    std::fs::create_dir(f.dir().join("notvenv")).unwrap();
    let job = f.job(
        "train",
        "open('/out/marker', 'w').write('ran')\n",
        &[],
        "profile = \"python\"\npython = \"notvenv\"\n",
    );
    // Line 13, column 10: the value of `python` in `[sandbox]`.
    let t = fails_with(
        f.run(&job),
        64,
        &[
            "train.toml:13:10: sandbox.python:",
            "is not a virtualenv: it has no pyvenv.cfg",
            "python3 -m venv",
        ],
    );
    assert_eq!(t.trim().lines().count(), 1, "{t}");
    assert!(!f.dir().join("train-out/marker").exists());
    assert!(!f.dir().join("audit.log").exists(), "nothing is recorded");
}

/// Fits a model with scikit-learn on numpy data (plus the verified input) and says where its
/// Python came from.
const TRAIN: &str = r#"import sys, json
import numpy as np
import sklearn
from sklearn.linear_model import LogisticRegression
rows = open("/inputs/points/points.csv").read().split()[1:]
extra = np.array([[float(v) for v in r.split(",")] for r in rows])
rng = np.random.RandomState(0)
X = np.vstack([rng.randn(200, 2), extra])
y = (X[:, 0] + X[:, 1] > 0).astype(int)
m = LogisticRegression().fit(X, y)
json.dump({"coef": m.coef_.tolist(), "score": m.score(X, y), "numpy": np.__version__,
           "sklearn": sklearn.__version__, "prefix": sys.prefix}, open("/out/model.json", "w"))
print("trained", m.score(X, y))
"#;

/// The `.dist-info` folders of `venv`'s site-packages.
fn dist_infos(venv: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dist_infos_parent(venv))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "dist-info"))
        .collect();
    v.sort();
    v
}

/// The version of distribution `folder_name` (`scikit_learn`) from its `.dist-info` folder.
fn version_of(dists: &[PathBuf], folder_name: &str) -> (String, PathBuf) {
    let d = dists
        .iter()
        .find(|d| {
            d.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(&format!("{folder_name}-"))
        })
        .unwrap_or_else(|| panic!("no {folder_name} in {dists:?}"));
    let name = d.file_name().unwrap().to_string_lossy().into_owned();
    let version = name
        .trim_end_matches(".dist-info")
        .split_once('-')
        .unwrap()
        .1
        .to_string();
    (version, d.clone())
}

#[test]
fn training_job_in_a_venv_attests_its_packages_in_the_record_and_the_aibom() {
    let (_t, v) = venv(&["numpy", "scikit-learn"]);
    let vs = v.display().to_string();
    let f = RunFixture::new();
    let d = f.dir();
    let sandbox =
        format!("profile = \"python\"\nmemory = \"2G\"\ntimeout = \"300s\"\npython = {vs:?}\n");
    let job = f.job("train", TRAIN, &[], &sandbox);
    let t = ok(f.run(&job));
    assert!(t.contains("succeeded"), "{t}");
    let model: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("train-out/model.json")).unwrap()).unwrap();
    assert_eq!(model["prefix"], vs.as_str(), "{model}");
    assert!(model["score"].as_f64().unwrap() > 0.9, "{model}");

    // Every distribution in the venv is a resolved dependency: purl, sha256 of its RECORD.
    let record = f.record("train");
    let st = envelope_statement(&record);
    let deps = st["predicate"]["buildDefinition"]["resolvedDependencies"]
        .as_array()
        .unwrap()
        .clone();
    let dists = dist_infos(&v);
    let packages: Vec<&serde_json::Value> = deps
        .iter()
        .filter(|d| d["annotations"]["type"] == "python-package")
        .collect();
    assert_eq!(packages.len(), dists.len(), "{dists:?}\n{packages:#?}");
    for (folder, purl_name) in [("numpy", "numpy"), ("scikit_learn", "scikit-learn")] {
        let (version, dir) = version_of(&dists, folder);
        assert_eq!(
            model[folder.replace("scikit_learn", "sklearn")],
            version.as_str()
        );
        let purl = format!("pkg:pypi/{purl_name}@{version}");
        let dep = packages
            .iter()
            .find(|p| p["uri"] == purl.as_str())
            .unwrap_or_else(|| panic!("no {purl} in {packages:#?}"));
        let record_sha = sha256_hex(&std::fs::read(dir.join("RECORD")).unwrap());
        assert_eq!(dep["digest"]["sha256"], record_sha.as_str(), "{dep:#}");
        assert_eq!(dep["annotations"]["digest_of"], "RECORD", "{dep:#}");
    }
    // The interpreter the venv points to keeps its digest.
    let interp = std::fs::canonicalize(v.join("bin/python3")).unwrap();
    let interp_sha = sha256_hex(&std::fs::read(&interp).unwrap());
    let py = deps.iter().find(|d| d["name"] == "python").expect("python");
    assert_eq!(py["uri"], format!("file:{}", interp.display()), "{py:#}");
    assert_eq!(py["digest"]["sha256"], interp_sha.as_str(), "{py:#}");
    assert_eq!(py["annotations"]["venv"], vs.as_str(), "{py:#}");
    let exe = deps
        .iter()
        .find(|d| d["name"] == "executable")
        .expect("executable");
    assert_eq!(exe["digest"]["sha256"], interp_sha.as_str(), "{exe:#}");

    // The python entries are not inputs: a default release gate passes the run.
    let rec = record.display().to_string();
    std::fs::write(
        d.join("gate.toml"),
        "trust = \"trust.toml\"\napproved_profiles = [\"python\"]\n",
    )
    .unwrap();
    let gate = [
        "gate",
        &rec,
        "--policy",
        "gate.toml",
        "--records",
        "records",
    ];
    let t = ok(verify(d, &gate));
    assert!(t.contains("PASS"), "{t}");

    // The AI-BOM lists them as library components, and is valid CycloneDX 1.6.
    let args = [
        "aibom",
        &rec,
        "--records",
        "records",
        "--trust",
        "trust.toml",
        "-o",
        "aibom.json",
    ];
    ok(verify(d, &args));
    let bom: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("aibom.json")).unwrap()).unwrap();
    let libs: Vec<&serde_json::Value> = bom["components"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["type"] == "library")
        .collect();
    assert_eq!(libs.len(), dists.len(), "{libs:#?}");
    for (folder, purl_name) in [("numpy", "numpy"), ("scikit_learn", "scikit-learn")] {
        let (version, _) = version_of(&dists, folder);
        let purl = format!("pkg:pypi/{purl_name}@{version}");
        let c = libs
            .iter()
            .find(|c| c["purl"] == purl.as_str())
            .unwrap_or_else(|| panic!("no library {purl} in {libs:#?}"));
        assert_eq!(c["name"], purl_name, "{c:#}");
        assert_eq!(c["version"], version.as_str(), "{c:#}");
    }
    ensure_python_module(
        "cyclonedx.validation.json",
        "cyclonedx-python-lib[json-validation]",
    );
    let out = run(Command::new("python3").current_dir(d).args([
        "-c",
        "import sys\nfrom cyclonedx.validation.json import JsonStrictValidator\nfrom cyclonedx.schema import SchemaVersion\ne = JsonStrictValidator(SchemaVersion.V1_6).validate_str(open('aibom.json').read())\nprint('INVALID', e) if e else print('VALID')\nsys.exit(1 if e else 0)",
    ]));
    assert!(out.status.success(), "schema validation: {}", text(&out));
}

/// Packages the record could not name stop the run before anything runs: a venv that also
/// imports the system's site-packages, and one holding a legacy `.egg-info` (no `RECORD`).
#[test]
fn a_venv_with_packages_the_record_could_not_name_is_refused_before_anything_runs() {
    let (_t, v) = venv(&[]);
    let f = RunFixture::new();
    let sandbox = format!(
        "profile = \"python\"\npython = {:?}\n",
        v.display().to_string()
    );
    let job = f.job(
        "train",
        "open('/out/marker', 'w').write('ran')\n",
        &[],
        &sandbox,
    );
    let cfg = v.join("pyvenv.cfg");
    let original = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(
        &cfg,
        original.replace(
            "include-system-site-packages = false",
            "include-system-site-packages = true",
        ),
    )
    .unwrap();
    fails_with(
        f.run(&job),
        64,
        &["sandbox.python:", "include-system-site-packages = true"],
    );
    std::fs::write(&cfg, &original).unwrap();
    let sp = dist_infos_parent(&v);
    std::fs::create_dir_all(sp.join("legacy-1.0.egg-info")).unwrap();
    fails_with(f.run(&job), 64, &["legacy-1.0.egg-info", "no RECORD"]);
    assert!(!f.dir().join("train-out/marker").exists());
    assert!(!f.dir().join("audit.log").exists(), "nothing is recorded");
    // Without the planted folder, the same venv runs.
    std::fs::remove_dir(sp.join("legacy-1.0.egg-info")).unwrap();
    ok(f.run(&job));
    assert!(f.dir().join("train-out/marker").exists());
}

/// `VENV/lib/pythonX.Y/site-packages`.
fn dist_infos_parent(venv: &Path) -> PathBuf {
    let py = std::fs::read_dir(venv.join("lib"))
        .unwrap()
        .flatten()
        .find(|e| e.file_name().to_string_lossy().starts_with("python"))
        .unwrap()
        .path();
    py.join("site-packages")
}
