//! Defaults for specs from a config file: the trust policy, the signing key,
//! the records folder, the audit log and the verified store.
//!
//! Guarantees: two files are read, if present: `sealrun.toml` in the spec's
//! folder, then `$XDG_CONFIG_HOME/sealrun/config.toml` (`~/.config/…` without
//! `XDG_CONFIG_HOME`); a field of the spec itself (or of its pipeline) always
//! wins, then the spec folder's file, then the user's; relative paths in a
//! config file are resolved against that file's folder. A config file that
//! does not parse, or has a field sealrun does not know, is an error naming the
//! file, line and column — never silently ignored. `sealrun config` shows the
//! effective values and where each came from.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The config file looked up in a spec's folder.
pub const LOCAL_NAME: &str = "sealrun.toml";

/// Why a config file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    Read(#[from] sealrun_verifier::fsread::ReadError),
    #[error("{path}:{line}:{col}: {message}")]
    Invalid {
        path: PathBuf,
        line: usize,
        col: usize,
        message: String,
    },
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    trust: Option<String>,
    signing_key: Option<String>,
    records: Option<String>,
    audit_log: Option<String>,
    store: Option<String>,
}

/// `store = "off"` in a config file: the store is switched off (no path).
pub const STORE_OFF: &str = "off";

/// One default and the file it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Value {
    pub path: PathBuf,
    pub from: PathBuf,
}

/// The effective defaults for specs in one folder.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Config {
    pub trust: Option<Value>,
    pub signing_key: Option<Value>,
    pub records: Option<Value>,
    pub audit_log: Option<Value>,
    /// The verified store (`path` is [`STORE_OFF`] exactly when switched off).
    pub store: Option<Value>,
    /// The config files read, most specific first.
    pub files: Vec<PathBuf>,
}

impl Config {
    /// The default for a spec field (`trust`, `signing_key`, `records`, `audit_log`, `store`).
    pub fn get(&self, field: &str) -> Option<&Value> {
        match field {
            "trust" => self.trust.as_ref(),
            "signing_key" => self.signing_key.as_ref(),
            "records" => self.records.as_ref(),
            "audit_log" => self.audit_log.as_ref(),
            "store" => self.store.as_ref(),
            _ => None,
        }
    }
}

/// `$XDG_CONFIG_HOME/sealrun/config.toml`, or `~/.config/sealrun/config.toml`.
pub fn user_file() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("sealrun").join("config.toml"))
}

fn read(file: &Path) -> Result<Option<RawConfig>, ConfigError> {
    use sealrun_verifier::fsread::{read_bounded_string, Follow, MAX_POLICY_BYTES};
    if !file.exists() {
        return Ok(None);
    }
    let text = read_bounded_string(file, "config file", MAX_POLICY_BYTES, Follow::Yes)?;
    toml::from_str(&text).map(Some).map_err(|e| {
        let start = e.span().map_or(0, |s| s.start).min(text.len());
        let upto = &text[..start];
        ConfigError::Invalid {
            path: file.to_path_buf(),
            line: upto.matches('\n').count() + 1,
            col: upto.len() - upto.rfind('\n').map_or(0, |i| i + 1) + 1,
            message: e.message().trim().replace('\n', " "),
        }
    })
}

/// The defaults for specs in `dir`: its `sealrun.toml`, then the user's config file.
pub fn load(dir: &Path) -> Result<Config, ConfigError> {
    let mut c = Config::default();
    let files = [Some(dir.join(LOCAL_NAME)), user_file()];
    for file in files.into_iter().flatten() {
        let Some(raw) = read(&file)? else { continue };
        let base = file.parent().unwrap_or(Path::new("."));
        // Only `store` takes the word `off` (a folder named so is written `./off`).
        let set = |slot: &mut Option<Value>, v: Option<String>, takes_off: bool| {
            if let (None, Some(v)) = (slot.as_ref(), v.filter(|v| !v.is_empty())) {
                let path = if takes_off && v == STORE_OFF {
                    PathBuf::from(STORE_OFF)
                } else {
                    base.join(v)
                };
                *slot = Some(Value {
                    path,
                    from: file.clone(),
                });
            }
        };
        set(&mut c.trust, raw.trust, false);
        set(&mut c.signing_key, raw.signing_key, false);
        set(&mut c.records, raw.records, false);
        set(&mut c.audit_log, raw.audit_log, false);
        set(&mut c.store, raw.store, true);
        c.files.push(file.clone());
    }
    Ok(c)
}

/// `sealrun config`: the effective value of each field, and where it came from.
pub fn show(dir: &Path, c: &Config) -> String {
    let mut out = format!(
        "defaults for specs in {} (a spec's own fields win):\n",
        dir.display()
    );
    for (field, fallback) in [
        ("trust", "none: the spec must give `trust`"),
        ("signing_key", "none: the spec must give `signing_key`"),
        ("records", "records/ next to the spec"),
        ("audit_log", "audit.log next to the spec"),
        (
            "store",
            "$SEALRUN_STORE, else /var/lib/sealrun/store as root, ~/.local/share/sealrun/store otherwise",
        ),
    ] {
        let line = match c.get(field) {
            Some(v) => format!("{} (from {})", v.path.display(), v.from.display()),
            None => format!("{fallback} (built-in)"),
        };
        out.push_str(&format!("  {field:<12} {line}\n"));
    }
    let user = user_file()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "(no XDG_CONFIG_HOME or HOME)".into());
    out.push_str(&format!(
        "files looked up: {}, then {user}; found: {}\n",
        dir.join(LOCAL_NAME).display(),
        if c.files.is_empty() {
            "none".to_string()
        } else {
            c.files
                .iter()
                .map(|f| f.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        }
    ));
    out
}
