//! Profile loading. Guarantees: a profile that cannot be found, read or parsed is an error (never
//! an allow-all); the bytes that were parsed are the bytes that are hashed for the record.
//!
//! A profile is a pair: a seccomp profile in the OCI/Docker JSON format
//! (`seccomp/NAME.json`) and a mount profile (`mounts/NAME.json`, falling back to
//! `mounts/default.json`). Names are looked up in `$SEALRUN_PROFILES`, then in
//! `<binary dir>/../share/sealrun/profiles`, then (development builds only: release binaries
//! hold no build-time path) in the source tree the binary was built from (`sandbox-profiles/`,
//! if it still exists), then in the copy embedded in the binary.
//!
//! Started as root, a profile file is used only if it and every folder above it are owned by
//! root and not writable by group or others (a sticky folder such as `/tmp` may be
//! world-writable: others cannot replace root's entries in it); anything else is an error that
//! names the offending path, never a silent fallback. So a profile a run reports is one that
//! only root could have put there.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::config::ProfileRef;

/// Errors loading profiles.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// No such built-in profile.
    #[error("unknown profile {0:?} (built-in: default, minimal, python, gpu; or give a path to a .json file)")]
    UnknownName(String),
    /// The file could not be read.
    #[error("cannot read profile {path}: {source}")]
    Read {
        /// Profile file.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// Started as root, a profile file or a folder above it that someone else could change.
    #[error(
        "refusing profile {path}: {what} (started as root, profiles are read only from files \
         and folders owned by root and not writable by group or others)"
    )]
    NotRootOwned {
        /// The profile file.
        path: String,
        /// What is wrong, e.g. `/srv/profiles is writable by others`.
        what: String,
    },
    /// The JSON did not parse.
    #[error("invalid profile {path}: {source}")]
    Parse {
        /// Profile file.
        path: String,
        /// Cause.
        source: serde_json::Error,
    },
}

fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// One `args[]` entry of an OCI seccomp rule.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OciArg {
    /// Argument index 0..=5.
    pub index: u8,
    /// Compared value (the mask for `SCMP_CMP_MASKED_EQ`).
    pub value: u64,
    /// Second value (the expected masked value for `SCMP_CMP_MASKED_EQ`).
    #[serde(default, deserialize_with = "null_default")]
    pub value_two: u64,
    /// `SCMP_CMP_EQ`, `NE`, `LT`, `LE`, `GT`, `GE`, `MASKED_EQ`.
    pub op: String,
}

/// `includes` / `excludes` of an OCI rule.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OciFilter {
    /// Capabilities (the sandboxed job holds none).
    #[serde(default, deserialize_with = "null_default")]
    pub caps: Vec<String>,
    /// Architectures (`amd64`, `x86_64`, …).
    #[serde(default, deserialize_with = "null_default")]
    pub arches: Vec<String>,
    /// Minimum kernel `MAJOR.MINOR`.
    #[serde(default, deserialize_with = "null_default")]
    pub min_kernel: Option<String>,
}

/// One `syscalls[]` rule.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OciSyscall {
    /// System call names.
    #[serde(default, deserialize_with = "null_default")]
    pub names: Vec<String>,
    /// Old single-name form.
    #[serde(default, deserialize_with = "null_default")]
    pub name: Option<String>,
    /// `SCMP_ACT_*`.
    pub action: String,
    /// errno for `SCMP_ACT_ERRNO` (data for `SCMP_ACT_TRACE`).
    #[serde(default, deserialize_with = "null_default")]
    pub errno_ret: Option<u32>,
    /// Conditions, all of which must hold.
    #[serde(default, deserialize_with = "null_default")]
    pub args: Option<Vec<OciArg>>,
    /// Rule applies only if these hold.
    #[serde(default, deserialize_with = "null_default")]
    pub includes: OciFilter,
    /// Rule is skipped if any of these hold.
    #[serde(default, deserialize_with = "null_default")]
    pub excludes: OciFilter,
    /// Free text.
    #[serde(default, deserialize_with = "null_default")]
    pub comment: Option<String>,
}

/// `archMap[]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OciArch {
    /// e.g. `SCMP_ARCH_X86_64`.
    pub architecture: String,
    /// e.g. `SCMP_ARCH_X86`, `SCMP_ARCH_X32`.
    #[serde(default, deserialize_with = "null_default")]
    pub sub_architectures: Vec<String>,
}

/// An OCI/Docker seccomp profile.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OciSeccomp {
    /// Action for calls no rule matches.
    pub default_action: String,
    /// errno for an `SCMP_ACT_ERRNO` default (and for rules without `errnoRet`).
    #[serde(default, deserialize_with = "null_default")]
    pub default_errno_ret: Option<u32>,
    /// Architectures (Docker form).
    #[serde(default, deserialize_with = "null_default")]
    pub arch_map: Vec<OciArch>,
    /// Architectures (OCI runtime-spec form).
    #[serde(default, deserialize_with = "null_default")]
    pub architectures: Vec<String>,
    /// Rules.
    #[serde(default, deserialize_with = "null_default")]
    pub syscalls: Vec<OciSyscall>,
}

impl OciSeccomp {
    /// Whether the profile declares any architecture besides x86_64 — then names unknown on
    /// x86_64 are taken to belong to that other architecture and skipped (see [`crate::seccomp`]).
    pub fn is_multi_arch(&self) -> bool {
        let native = |a: &str| a == "SCMP_ARCH_X86_64";
        self.architectures.iter().any(|a| !native(a))
            || self
                .arch_map
                .iter()
                .any(|m| !native(&m.architecture) || !m.sub_architectures.is_empty())
    }
}

/// A mount profile: which host system paths the job sees read-only.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MountProfile {
    /// Free text.
    #[serde(default, deserialize_with = "null_default")]
    pub comment: Option<String>,
    /// Host paths bound read-only at the same place. Missing paths are skipped; host symlinks
    /// (e.g. `/lib -> usr/lib`) are recreated as symlinks.
    #[serde(default, deserialize_with = "null_default")]
    pub ro: Vec<String>,
    /// Also bind read-only the prefix of the interpreter named by `argv[0]` (and, for a
    /// virtualenv, its base interpreter's prefix from `pyvenv.cfg`).
    #[serde(default, deserialize_with = "null_default")]
    pub interpreter_prefix: bool,
    /// Mount a read-only `/sys` (off by default).
    #[serde(default, deserialize_with = "null_default")]
    pub sys: bool,
}

/// A loaded profile pair.
#[derive(Debug, Clone)]
pub struct LoadedProfile {
    /// Name, or the path as given.
    pub name: String,
    /// Where the seccomp JSON came from (`embedded:seccomp/NAME.json` or a path).
    pub seccomp_source: String,
    /// The seccomp JSON as read (parsed by [`LoadedProfile::seccomp`] — only when no
    /// precompiled program matches its digest, see [`crate::seccomp::compile_profile`]).
    /// Borrowed from the binary when the file is byte for byte a shipped one.
    pub seccomp_json: ProfileBytes,
    /// SHA-256 of `seccomp_json`.
    pub seccomp_digest: [u8; 32],
    /// Hex SHA-256 of the seccomp JSON bytes followed by the mount JSON bytes.
    pub sha256: String,
    /// Parsed mount profile.
    pub mounts: MountProfile,
}

const EMBEDDED: &[(&str, &str)] = &[
    (
        "seccomp/default.json",
        include_str!("../../sandbox-profiles/seccomp/default.json"),
    ),
    (
        "seccomp/minimal.json",
        include_str!("../../sandbox-profiles/seccomp/minimal.json"),
    ),
    (
        "seccomp/python.json",
        include_str!("../../sandbox-profiles/seccomp/python.json"),
    ),
    (
        "seccomp/gpu.json",
        include_str!("../../sandbox-profiles/seccomp/gpu.json"),
    ),
    (
        "mounts/default.json",
        include_str!("../../sandbox-profiles/mounts/default.json"),
    ),
    (
        "mounts/minimal.json",
        include_str!("../../sandbox-profiles/mounts/minimal.json"),
    ),
    (
        "mounts/python.json",
        include_str!("../../sandbox-profiles/mounts/python.json"),
    ),
    (
        "mounts/gpu.json",
        include_str!("../../sandbox-profiles/mounts/gpu.json"),
    ),
];

fn profile_dirs() -> &'static [PathBuf] {
    static DIRS: std::sync::OnceLock<Vec<PathBuf>> = std::sync::OnceLock::new();
    DIRS.get_or_init(|| {
        let mut dirs = Vec::new();
        if let Some(d) = std::env::var_os("SEALRUN_PROFILES") {
            dirs.push(PathBuf::from(d));
        }
        if let Ok(exe) = std::env::current_exe() {
            if let Some(bin) = exe.parent() {
                dirs.push(bin.join("../share/sealrun/profiles"));
            }
        }
        // A development build also reads the source tree's profiles (same content as the
        // embedded copy unless edited since the build). A release binary holds no such path.
        #[cfg(debug_assertions)]
        dirs.push(PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../sandbox-profiles"
        )));
        dirs
    })
}

/// A profile file's bytes: borrowed from the binary when identical to a shipped file.
type ProfileBytes = std::borrow::Cow<'static, [u8]>;

/// Read a profile file: one `openat`, `read`s into a stack buffer, `close`. Bytes identical to
/// the shipped file `rel` are returned borrowed from the binary (the usual case: no allocation).
fn read_profile(path: &Path, rel: &str) -> std::io::Result<ProfileBytes> {
    use std::io::Read;
    use std::os::fd::FromRawFd;
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: openat with a NUL-terminated path; the descriptor is owned right below. (The raw
    // call: musl's open() adds an fcntl for O_CLOEXEC.)
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat,
            libc::AT_FDCWD,
            c.as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor; nothing else owns it.
    let mut file = unsafe { std::fs::File::from_raw_fd(fd as i32) };
    if as_root() {
        root_owned(path, &file.metadata()?)?;
    }
    let mut buf = [0u8; 16 << 10];
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..]) {
            Ok(0) => {
                let bytes = &buf[..n];
                return Ok(match embedded_text(rel) {
                    Some(t) if t.as_bytes() == bytes => std::borrow::Cow::Borrowed(t.as_bytes()),
                    _ => std::borrow::Cow::Owned(bytes.to_vec()),
                });
            }
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    // Larger than any shipped profile.
    let mut all = buf.to_vec();
    file.read_to_end(&mut all)?;
    Ok(std::borrow::Cow::Owned(all))
}

pub(crate) fn as_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// The error [`find`] turns into [`ProfileError::NotRootOwned`].
#[derive(Debug)]
struct NotRootOwned(String);

impl std::fmt::Display for NotRootOwned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NotRootOwned {}

/// Check that `path` (already opened: `meta` is its `fstat`) and every folder above it are owned
/// by root and not writable by group or others (sticky folders excepted).
pub(crate) fn root_owned(path: &Path, meta: &std::fs::Metadata) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let bad = |p: &Path, m: &std::fs::Metadata| -> Option<String> {
        if m.uid() != 0 {
            return Some(format!("{} is owned by uid {}", p.display(), m.uid()));
        }
        let sticky_dir = m.is_dir() && m.mode() & 0o1000 != 0;
        if m.mode() & 0o022 != 0 && !sticky_dir {
            return Some(format!(
                "{} is writable by group or others (mode {:o})",
                p.display(),
                m.mode() & 0o7777
            ));
        }
        None
    };
    let fail = |what: String| std::io::Error::other(NotRootOwned(what));
    if let Some(what) = bad(path, meta) {
        return Err(fail(what));
    }
    let abs = std::path::absolute(path)?;
    for dir in abs.ancestors().skip(1) {
        let m = std::fs::metadata(dir)?;
        if let Some(what) = bad(dir, &m) {
            return Err(fail(what));
        }
    }
    Ok(())
}

/// The error for a failed read of the profile file `p`.
fn read_error(p: &Path, source: std::io::Error) -> ProfileError {
    match source
        .get_ref()
        .and_then(|e| e.downcast_ref::<NotRootOwned>())
    {
        Some(NotRootOwned(what)) => ProfileError::NotRootOwned {
            path: p.display().to_string(),
            what: what.clone(),
        },
        None => ProfileError::Read {
            path: p.display().to_string(),
            source,
        },
    }
}

/// Find `rel` (e.g. `seccomp/python.json`): returns (source label, bytes). A folder that does
/// not hold the file (or holds something else under that name) is skipped.
fn find(rel: &str) -> Result<Option<(String, ProfileBytes)>, ProfileError> {
    for dir in profile_dirs() {
        let p = dir.join(rel);
        match read_profile(&p, rel) {
            Ok(bytes) => return Ok(Some((p.display().to_string(), bytes))),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound
                        | std::io::ErrorKind::IsADirectory
                        | std::io::ErrorKind::NotADirectory
                ) => {}
            Err(source) => return Err(read_error(&p, source)),
        }
    }
    Ok(embedded_text(rel).map(|text| {
        (
            format!("embedded:{rel}"),
            std::borrow::Cow::Borrowed(text.as_bytes()),
        )
    }))
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// Load a profile pair.
pub fn load(profile: &ProfileRef) -> Result<LoadedProfile, ProfileError> {
    let (name, (src, sbytes), mount_name) = match profile {
        ProfileRef::Name(n) => {
            if !valid_name(n) {
                return Err(ProfileError::UnknownName(n.clone()));
            }
            let found = find(&format!("seccomp/{n}.json"))?
                .ok_or_else(|| ProfileError::UnknownName(n.clone()))?;
            (n.clone(), found, n.clone())
        }
        ProfileRef::Path(p) => {
            let bytes = read_profile(p, "").map_err(|source| read_error(p, source))?;
            (
                p.display().to_string(),
                (p.display().to_string(), bytes),
                "default".to_string(),
            )
        }
    };
    let (msrc, mbytes) = match find(&format!("mounts/{mount_name}.json"))? {
        Some(f) => f,
        None => find("mounts/default.json")?
            .ok_or_else(|| ProfileError::UnknownName("mounts/default".into()))?,
    };
    // A shipped mount profile needs no parsing (its fields are compiled in).
    let mounts: MountProfile = match crate::precompiled::mounts(&mbytes) {
        Some(m) => m,
        None => serde_json::from_slice(&mbytes)
            .map_err(|source| ProfileError::Parse { path: msrc, source })?,
    };
    let (seccomp_digest, sha256) = shipped_digests(&sbytes, &mbytes).unwrap_or_else(|| {
        (
            Sha256::digest(&sbytes).into(),
            pair_sha256(&sbytes, &mbytes),
        )
    });
    Ok(LoadedProfile {
        name,
        seccomp_source: src,
        seccomp_json: sbytes,
        seccomp_digest,
        sha256,
        mounts,
    })
}

impl LoadedProfile {
    /// Parse the seccomp JSON.
    pub fn seccomp(&self) -> Result<OciSeccomp, ProfileError> {
        serde_json::from_slice(&self.seccomp_json).map_err(|source| ProfileError::Parse {
            path: self.seccomp_source.clone(),
            source,
        })
    }
}

/// The names of the shipped profiles (each has a seccomp and a mount JSON).
pub const SHIPPED: [&str; 4] = ["default", "minimal", "python", "gpu"];

fn embedded_text(rel: &str) -> Option<&'static str> {
    EMBEDDED.iter().find(|(n, _)| *n == rel).map(|(_, t)| *t)
}

fn embedded(kind: &str, name: &str) -> Option<&'static str> {
    embedded_text(&format!("{kind}/{name}.json"))
}

/// The seccomp JSON of a shipped profile as embedded in the binary.
pub fn embedded_seccomp(name: &str) -> Option<&'static str> {
    embedded("seccomp", name)
}

/// The mount JSON of a shipped profile as embedded in the binary.
pub fn embedded_mounts(name: &str) -> Option<&'static str> {
    embedded("mounts", name)
}

/// A profile pair's digest ([`LoadedProfile::sha256`]): hex SHA-256 of the seccomp JSON bytes
/// followed by the mount JSON bytes.
pub fn pair_sha256(seccomp: &[u8], mounts: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(seccomp);
    h.update(mounts);
    hex::encode(h.finalize())
}

/// The digests of a shipped profile pair, without hashing: `(seccomp digest, pair hex digest)`
/// when both files are byte for byte the ones compiled into the binary (the usual case).
fn shipped_digests(sbytes: &[u8], mbytes: &[u8]) -> Option<([u8; 32], String)> {
    let s = SHIPPED
        .iter()
        .find(|n| embedded_seccomp(n).is_some_and(|t| t.as_bytes() == sbytes))?;
    let m = SHIPPED
        .iter()
        .find(|n| embedded_mounts(n).is_some_and(|t| t.as_bytes() == mbytes))?;
    let pre = crate::precompiled::ALL.iter().find(|p| p.name == *s)?;
    let pair = pre.pairs.iter().find(|(name, _)| name == m)?;
    Some((pre.seccomp_digest, pair.1.to_string()))
}

/// The running kernel's `(major, minor)`.
pub fn kernel_version() -> (u32, u32) {
    let rel = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    parse_kernel(&rel).unwrap_or((0, 0))
}

/// Parse `"6.18.0-foo"` → `(6, 18)`.
pub fn parse_kernel(s: &str) -> Option<(u32, u32)> {
    let mut it = s.split(|c: char| !c.is_ascii_digit());
    let major = it.next()?.parse().ok()?;
    let minor = it.next()?.parse().ok()?;
    Some((major, minor))
}

/// Interpreter prefixes for `argv0` (a host path with a `/`): the directory above `bin/` of the
/// path as given (a virtualenv) and of its canonical target, plus `home`'s parent from a
/// `pyvenv.cfg`. Paths are returned canonicalized, deduplicated.
pub fn interpreter_prefixes(argv0: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::new();
    let mut push = |p: PathBuf| {
        if let Ok(c) = std::fs::canonicalize(&p) {
            if c != Path::new("/") && !out.contains(&c) {
                out.push(c);
            }
        }
    };
    let given_prefix = argv0
        .parent()
        .and_then(|b| b.parent())
        .map(Path::to_path_buf);
    if let Some(p) = &given_prefix {
        let cfg = p.join("pyvenv.cfg");
        if cfg.is_file() {
            push(p.clone());
            if let Ok(text) = std::fs::read_to_string(&cfg) {
                for line in text.lines() {
                    if let Some((k, v)) = line.split_once('=') {
                        if k.trim() == "home" {
                            if let Some(base) = Path::new(v.trim()).parent() {
                                push(base.to_path_buf());
                            }
                        }
                    }
                }
            }
        }
    }
    if let Ok(real) = std::fs::canonicalize(argv0) {
        if let Some(p) = real.parent().and_then(|b| b.parent()) {
            push(p.to_path_buf());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn shipped_pairs_skip_hashing_and_agree_with_it() {
        use sha2::{Digest, Sha256};
        for sname in super::SHIPPED {
            for mname in super::SHIPPED {
                let sb = super::embedded_seccomp(sname).unwrap().as_bytes();
                let mb = super::embedded_mounts(mname).unwrap().as_bytes();
                let (d, pair) = super::shipped_digests(sb, mb).unwrap();
                assert_eq!(d, <[u8; 32]>::from(Sha256::digest(sb)), "{sname}");
                assert_eq!(pair, super::pair_sha256(sb, mb), "{sname} + {mname}");
            }
        }
        // One byte changed: not a shipped profile, so it is hashed.
        let mut edited = super::embedded_seccomp("default")
            .unwrap()
            .as_bytes()
            .to_vec();
        edited.push(b' ');
        let mb = super::embedded_mounts("default").unwrap().as_bytes();
        assert!(super::shipped_digests(&edited, mb).is_none());
    }

    use super::*;

    #[test]
    fn builtin_profiles_load() {
        for n in SHIPPED {
            let p = load(&ProfileRef::Name(n.into())).unwrap();
            assert_eq!(p.sha256.len(), 64);
            assert!(!p.seccomp().unwrap().is_multi_arch(), "{n}");
        }
    }

    #[test]
    fn unknown_name_is_an_error() {
        assert!(matches!(
            load(&ProfileRef::Name("nope".into())),
            Err(ProfileError::UnknownName(_))
        ));
        assert!(matches!(
            load(&ProfileRef::Name("../x".into())),
            Err(ProfileError::UnknownName(_))
        ));
    }

    #[test]
    fn kernel_parse() {
        assert_eq!(parse_kernel("6.18.0-rc1"), Some((6, 18)));
        assert_eq!(parse_kernel("5.4"), Some((5, 4)));
    }
}
