//! Python virtualenvs for a job (`[sandbox] python = "VENV"`, `sealrun exec --python VENV`).
//!
//! Guarantees: [`Venv::open`] accepts only a folder with a `pyvenv.cfg` (not one made with
//! `--system-site-packages`, whose imports could come from outside it) and a `bin/python3` that
//! resolves to a regular file; anything else is a [`VenvError`] naming the path and the fix.
//! [`Venv::apply`] makes the venv and its base interpreter's prefixes (`pyvenv.cfg`'s `home`,
//! and the folder above the `bin/` of the binary `bin/python3` resolves to) visible read-only
//! at their own absolute host paths, wherever they are (also under `/tmp` or `/home`: the
//! sandbox mounts its `/tmp` tmpfs first and binds below it afterwards), puts `VENV/bin` first
//! on the sandbox `PATH` (so `python3` and `python` are the venv's) and sets `VIRTUAL_ENV`.
//! [`Venv::packages`] lists every distribution installed in the venv's `site-packages`
//! (`*.dist-info`) with its PEP 503 name, its version and the SHA-256 of its `RECORD`, or
//! refuses a venv holding one it cannot attest (a legacy `*.egg-info`, no `RECORD`, no
//! `Name`/`Version`); they are read when the run is planned, not re-hashed afterwards.

use std::path::{Path, PathBuf};

use sealrun_sandbox::{Bind, SandboxConfig};
use sealrun_verifier::digest::Digest;
use sealrun_verifier::fsread::{read_bounded, Follow, ReadError, MAX_STATE_BYTES};
use sealrun_verifier::record::{normalize_pypi_name, PythonEnvironment, PythonPackage};

/// Why a path cannot serve as the job's virtualenv.
#[derive(Debug, thiserror::Error)]
pub enum VenvError {
    /// Missing or not a folder.
    #[error("{path} is not a folder: {why}")]
    NotAFolder { path: PathBuf, why: String },
    /// No `pyvenv.cfg`.
    #[error(
        "{path} is not a virtualenv: it has no pyvenv.cfg (make one with `python3 -m venv {path}`)"
    )]
    NoConfig { path: PathBuf },
    /// No usable `bin/python3`.
    #[error("{path} is not a usable virtualenv: {why}")]
    NoPython { path: PathBuf, why: String },
    /// Made with `--system-site-packages`.
    #[error("{path}: pyvenv.cfg says include-system-site-packages = true, so the job could import packages from outside the venv that the record would not list; make the venv without --system-site-packages and install what the job needs into it")]
    SystemSitePackages { path: PathBuf },
    /// A distribution that cannot be attested.
    #[error("{path}: cannot attest this installed distribution: {why}")]
    Unattestable { path: PathBuf, why: String },
    /// A file that could not be read.
    #[error(transparent)]
    Read(#[from] ReadError),
}

/// An opened virtualenv: where it is and what it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Venv {
    /// The venv's absolute host path, symlinks resolved: where the job sees it too.
    pub path: PathBuf,
    /// The interpreter binary `bin/python3` resolves to.
    pub interpreter: PathBuf,
    /// Host folders of the base interpreter, bound read-only at the same paths.
    pub base_prefixes: Vec<PathBuf>,
    /// `version` (or `version_info`) from `pyvenv.cfg`.
    pub version: Option<String>,
    /// SHA-256 of `pyvenv.cfg`.
    pub cfg_sha256: Digest,
}

/// `pyvenv.cfg` is a few lines; anything past this is not one.
const MAX_CFG_BYTES: u64 = 64 << 10;

fn cfg_value<'a>(cfg: &'a str, key: &str) -> Option<&'a str> {
    cfg.lines().find_map(|l| {
        let (k, v) = l.split_once('=')?;
        (k.trim() == key).then(|| v.trim())
    })
}

impl Venv {
    /// Check that `path` is a virtualenv and find its interpreter.
    pub fn open(path: &Path) -> Result<Venv, VenvError> {
        let not_folder = |why: String| VenvError::NotAFolder {
            path: path.to_path_buf(),
            why,
        };
        let canon = std::fs::canonicalize(path).map_err(|e| not_folder(e.to_string()))?;
        if !canon.is_dir() {
            return Err(not_folder("it is a file".into()));
        }
        if canon.as_os_str().as_encoded_bytes().contains(&b':') {
            return Err(VenvError::NoPython {
                path: canon,
                why: "its path has a ':' in it, which PATH cannot hold; move the virtualenv".into(),
            });
        }
        let cfg_path = canon.join("pyvenv.cfg");
        if !cfg_path.exists() {
            return Err(VenvError::NoConfig { path: canon });
        }
        let cfg_bytes = read_bounded(&cfg_path, "pyvenv.cfg", MAX_CFG_BYTES, Follow::No)?;
        let cfg = String::from_utf8_lossy(&cfg_bytes);
        if cfg_value(&cfg, "include-system-site-packages")
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
        {
            return Err(VenvError::SystemSitePackages { path: canon });
        }
        let python = canon.join("bin").join("python3");
        let no_python = |why: String| VenvError::NoPython {
            path: canon.clone(),
            why,
        };
        let interpreter = std::fs::canonicalize(&python)
            .map_err(|e| no_python(format!("{}: {e}", python.display())))?;
        if !interpreter.is_file() {
            return Err(no_python(format!(
                "{} resolves to {}, which is not a file",
                python.display(),
                interpreter.display()
            )));
        }
        let base_prefixes = sealrun_sandbox::profile::interpreter_prefixes(&python)
            .into_iter()
            .filter(|p| *p != canon)
            .collect();
        let version = cfg_value(&cfg, "version")
            .or_else(|| cfg_value(&cfg, "version_info"))
            .map(str::to_string);
        Ok(Venv {
            path: canon,
            interpreter,
            base_prefixes,
            version,
            cfg_sha256: Digest::of(&cfg_bytes),
        })
    }

    /// `VENV/bin`.
    pub fn bin(&self) -> PathBuf {
        self.path.join("bin")
    }

    /// The host paths the job sees read-only at the same paths: the venv, then the base
    /// interpreter's prefixes.
    pub fn bind_paths(&self) -> Vec<&Path> {
        std::iter::once(self.path.as_path())
            .chain(self.base_prefixes.iter().map(PathBuf::as_path))
            .collect()
    }

    /// Bind the venv and its base prefixes read-only at their own paths, put `VENV/bin` first on
    /// `PATH` (the one in `config.env`, else the sandbox's) and set `VIRTUAL_ENV`.
    pub fn apply(&self, config: &mut SandboxConfig) {
        for p in self.bind_paths() {
            config.ro_binds.push(Bind {
                host: p.to_path_buf(),
                dest: p.to_path_buf(),
            });
        }
        let rest = config
            .env
            .iter()
            .find(|(k, _)| k == "PATH")
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| sealrun_sandbox::plan::SANDBOX_PATH.to_string());
        let path = format!("{}:{rest}", self.bin().display());
        config
            .env
            .retain(|(k, _)| k != "PATH" && k != "VIRTUAL_ENV");
        config.env.push(("PATH".into(), path));
        config
            .env
            .push(("VIRTUAL_ENV".into(), self.path.display().to_string()));
    }

    /// The record's description of this venv and its interpreter (the binary is hashed now).
    pub fn environment(&self) -> std::io::Result<PythonEnvironment> {
        let (_, d, _) = sealrun_verifier::digest::hash_file(&self.interpreter, u64::MAX)?;
        Ok(PythonEnvironment {
            venv: self.path.display().to_string(),
            interpreter: self.interpreter.display().to_string(),
            interpreter_sha256: d,
            version: self.version.clone(),
            base_prefixes: self
                .base_prefixes
                .iter()
                .map(|p| p.display().to_string())
                .collect(),
            pyvenv_cfg_sha256: self.cfg_sha256,
        })
    }

    /// The venv's `site-packages` folders (`lib/python*/site-packages`, and `lib64/...` where
    /// that is not the same folder), symlinks resolved.
    fn site_packages(&self) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = Vec::new();
        for lib in ["lib", "lib64"] {
            let Ok(entries) = std::fs::read_dir(self.path.join(lib)) else {
                continue;
            };
            for e in entries.flatten() {
                if !e.file_name().to_string_lossy().starts_with("python") {
                    continue;
                }
                if let Ok(sp) = std::fs::canonicalize(e.path().join("site-packages")) {
                    if sp.is_dir() && !out.contains(&sp) {
                        out.push(sp);
                    }
                }
            }
        }
        out.sort();
        out
    }

    /// Every distribution installed in the venv, sorted by name, version and folder.
    pub fn packages(&self) -> Result<Vec<PythonPackage>, VenvError> {
        let mut out = Vec::new();
        for sp in self.site_packages() {
            let entries = std::fs::read_dir(&sp).map_err(|e| VenvError::NotAFolder {
                path: sp.clone(),
                why: e.to_string(),
            })?;
            let mut dirs: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
            dirs.sort();
            for d in dirs {
                let name = d.file_name().unwrap_or_default().to_string_lossy();
                if name.ends_with(".egg-info") {
                    return Err(VenvError::Unattestable {
                        path: d.clone(),
                        why: "a legacy .egg-info installation has no RECORD of its files; reinstall it with a current pip (`pip install --force-reinstall NAME`)".into(),
                    });
                }
                if name.ends_with(".dist-info") && d.is_dir() {
                    out.push(dist_info(&d)?);
                }
            }
        }
        out.sort_by(|a, b| {
            (&a.name, &a.version, &a.dist_info).cmp(&(&b.name, &b.version, &b.dist_info))
        });
        Ok(out)
    }
}

/// Name, version and `RECORD` digest of one `.dist-info` folder.
fn dist_info(dir: &Path) -> Result<PythonPackage, VenvError> {
    let bad = |why: &str| VenvError::Unattestable {
        path: dir.to_path_buf(),
        why: why.to_string(),
    };
    let metadata = read_bounded(
        &dir.join("METADATA"),
        "distribution METADATA",
        MAX_STATE_BYTES,
        Follow::No,
    )?;
    let text = String::from_utf8_lossy(&metadata);
    // The headers end at the first empty line; the description follows.
    let header = |key: &str| {
        text.lines()
            .take_while(|l| !l.trim().is_empty())
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim().eq_ignore_ascii_case(key).then(|| v.trim())
            })
            .filter(|v| !v.is_empty())
    };
    let name = header("Name").ok_or_else(|| bad("its METADATA has no Name"))?;
    let version = header("Version").ok_or_else(|| bad("its METADATA has no Version"))?;
    let record_path = dir.join("RECORD");
    if std::fs::symlink_metadata(&record_path).is_err() {
        return Err(bad("it has no RECORD of its files"));
    }
    let record = read_bounded(
        &record_path,
        "distribution RECORD",
        MAX_STATE_BYTES,
        Follow::No,
    )?;
    Ok(PythonPackage {
        name: normalize_pypi_name(name),
        version: version.to_string(),
        dist_info: dir.display().to_string(),
        record_sha256: Digest::of(&record),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake venv: pyvenv.cfg, bin/python3 -> the test binary's own path (any file will do).
    fn fake_venv(cfg: &str) -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        let v = t.path();
        std::fs::write(v.join("pyvenv.cfg"), cfg).unwrap();
        std::fs::create_dir_all(v.join("bin")).unwrap();
        std::os::unix::fs::symlink(std::env::current_exe().unwrap(), v.join("bin/python3"))
            .unwrap();
        std::fs::create_dir_all(v.join("lib/python3.11/site-packages")).unwrap();
        std::os::unix::fs::symlink("lib", v.join("lib64")).unwrap();
        t
    }

    fn dist(v: &Path, folder: &str, metadata: &str, record: Option<&str>) {
        let d = v.join("lib/python3.11/site-packages").join(folder);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("METADATA"), metadata).unwrap();
        if let Some(r) = record {
            std::fs::write(d.join("RECORD"), r).unwrap();
        }
    }

    #[test]
    fn packages_are_listed_once_with_normalised_names_and_record_digests() {
        let t = fake_venv("home = /usr/bin\nversion = 3.11.2\n");
        let v = Venv::open(t.path()).unwrap();
        assert_eq!(v.version.as_deref(), Some("3.11.2"));
        assert!(v.base_prefixes.contains(&PathBuf::from("/usr")), "{v:?}");
        dist(
            t.path(),
            "scikit_learn-1.9.1.dist-info",
            "Metadata-Version: 2.1\nName: Scikit_Learn\nVersion: 1.9.1\n\nName: not-this\n",
            Some("sklearn/__init__.py,sha256=x,1\n"),
        );
        dist(
            t.path(),
            "numpy-2.4.6.dist-info",
            "Name: numpy\r\nVersion: 2.4.6\r\n",
            Some("r"),
        );
        let p = v.packages().unwrap();
        // lib64 -> lib is the same folder: each distribution once.
        assert_eq!(p.len(), 2, "{p:?}");
        assert_eq!(p[0].name, "numpy");
        assert_eq!(p[0].record_sha256, Digest::of(b"r"));
        assert_eq!(p[1].purl(), "pkg:pypi/scikit-learn@1.9.1");
    }

    #[test]
    fn what_cannot_be_attested_is_refused_with_the_reason() {
        let t = fake_venv("home = /usr/bin\n");
        dist(t.path(), "x-1.dist-info", "Name: x\nVersion: 1\n", None);
        let e = Venv::open(t.path()).unwrap().packages().unwrap_err();
        assert!(e.to_string().contains("no RECORD"), "{e}");

        let t = fake_venv("home = /usr/bin\n");
        dist(
            t.path(),
            "x-1.dist-info",
            "Name: x\n\nVersion: 1\n",
            Some(""),
        );
        let e = Venv::open(t.path()).unwrap().packages().unwrap_err();
        assert!(e.to_string().contains("no Version"), "{e}");

        let t = fake_venv("home = /usr/bin\n");
        dist(t.path(), "old.egg-info", "Name: old\nVersion: 1\n", None);
        let e = Venv::open(t.path()).unwrap().packages().unwrap_err();
        assert!(e.to_string().contains("egg-info"), "{e}");
    }

    #[test]
    fn not_a_venv_is_refused_with_the_fix() {
        let t = tempfile::tempdir().unwrap();
        let e = Venv::open(t.path()).unwrap_err();
        assert!(matches!(e, VenvError::NoConfig { .. }), "{e}");
        assert!(e.to_string().contains("python3 -m venv"), "{e}");
        std::fs::write(t.path().join("pyvenv.cfg"), "home = /usr/bin\n").unwrap();
        let e = Venv::open(t.path()).unwrap_err();
        assert!(matches!(e, VenvError::NoPython { .. }), "{e}");
        let e = Venv::open(&t.path().join("missing")).unwrap_err();
        assert!(matches!(e, VenvError::NotAFolder { .. }), "{e}");
        let t = fake_venv("home = /usr/bin\ninclude-system-site-packages = true\n");
        let e = Venv::open(t.path()).unwrap_err();
        assert!(matches!(e, VenvError::SystemSitePackages { .. }), "{e}");
    }

    #[test]
    fn apply_binds_at_the_same_paths_and_puts_the_venv_first_on_path() {
        let t = fake_venv("home = /usr/bin\n");
        let v = Venv::open(t.path()).unwrap();
        let mut c = SandboxConfig::new(vec!["python3".into()]);
        c.env.push(("PATH".into(), "/opt/x/bin".into()));
        v.apply(&mut c);
        assert!(c
            .ro_binds
            .iter()
            .any(|b| b.host == v.path && b.dest == v.path));
        let env: std::collections::BTreeMap<_, _> = c.env.iter().cloned().collect();
        assert_eq!(env["PATH"], format!("{}/bin:/opt/x/bin", v.path.display()));
        assert_eq!(env["VIRTUAL_ENV"], v.path.display().to_string());
        assert_eq!(c.env.iter().filter(|(k, _)| k == "PATH").count(), 1);
    }
}
