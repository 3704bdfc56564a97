//! The verified store: signed inputs verified once, then bound by later runs with no copy and
//! no hash.
//!
//! Guarantees:
//! - An entry is named by the manifest root digest of the signature that vouched for it
//!   (`entries/ROOT`), so a signature can only ever be bound to the tree it signs: the root
//!   commits to every path, size and digest.
//! - An entry appears only complete: it is filled in `tmp/`, every file copied and hashed in one
//!   read (`FICLONE` first where the filesystem shares blocks, then the clone is hashed), the
//!   digests compared with the signed ones, and only then renamed into `entries/`. A file
//!   already in the store under the same digest is hard-linked instead (`objects/`), and new
//!   files are added there for later entries to share.
//! - Filling is serialised per entry with `flock` (`locks/ROOT`): concurrent first runs of the
//!   same artifact fill it once; the others wait, then reuse it. A run holds the entry's lock
//!   shared until it ends, and `gc` removes only entries whose lock it can take exclusively.
//! - The store folder must be owned by the launcher's user (root for the system store) with
//!   mode 0700, and every folder above it owned by root or that user and not writable by others
//!   (unless sticky); otherwise it is refused. It is used only through a descriptor opened once
//!   per run. Entry files are 0444, entry folders 0555, and entries are bound read-only.
//! - `meta/ROOT.json` keeps the signed manifest of each entry, so [`Store::verify`] can re-hash
//!   every entry and name any file changed behind the store's back.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use rayon::prelude::*;
use rustix::fs::AtFlags;
use sealrun_verifier::artifact::{self, Signed};
use sealrun_verifier::digest::Algorithm;
use sealrun_verifier::manifest::{self, Manifest, Resource, WalkOptions};
use serde::{Deserialize, Serialize};

use crate::staging::{self, Staged, StagingError};

/// Files smaller than this are copied into an entry rather than cloned (see `fill_into`).
const CLONE_FROM: u64 = 1 << 20;

/// The system store, used when the launcher runs as root.
pub const SYSTEM_STORE: &str = "/var/lib/sealrun/store";

/// Where a job's signed inputs come from (`store =` in the spec).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreSetting {
    /// `$SEALRUN_STORE` if set (a path, or `off`), else the system store as root or
    /// `$XDG_DATA_HOME/sealrun/store` (`~/.local/share/sealrun/store`) otherwise.
    Default,
    /// `store = "off"`: copy and hash every input into the run's staging folder.
    Off,
    /// `store = "PATH"`.
    At(PathBuf),
}

/// Why the store cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("store {path} is owned by uid {owner}, not by the launcher (uid {euid}): refusing to use it (another user could have planted its entries); remove it or set `store = \"off\"`")]
    NotOwned {
        path: PathBuf,
        owner: u32,
        euid: u32,
    },
    #[error("store {path} has mode {mode:04o}: it must be 0700 (other users could read or change verified data); fix with `chmod 0700 {path}`")]
    Mode { path: PathBuf, mode: u32 },
    #[error("store {path}: the folder {dir} above it is {why}: whoever can write it can swap the store; move the store or fix the folder")]
    UnsafeParent {
        path: PathBuf,
        dir: PathBuf,
        why: String,
    },
    #[error("store entry {key}: {message}")]
    Entry { key: String, message: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn sio(path: &Path) -> impl FnOnce(std::io::Error) -> StagingError + '_ {
    move |source| StagingError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What `meta/ROOT.json` holds.
#[derive(Debug, Serialize, Deserialize)]
struct Meta {
    name: String,
    filled_at: String,
    manifest: Manifest,
}

/// An open, checked store.
#[derive(Debug)]
pub struct Store {
    _dir: File,
    /// `/proc/self/fd/N` for the store folder.
    root: PathBuf,
    /// The path it was opened by (for messages).
    shown: PathBuf,
}

/// The store a launcher uses by default (see [`StoreSetting::Default`]), if any.
pub fn default_path() -> Option<PathBuf> {
    match std::env::var_os("SEALRUN_STORE") {
        Some(v) if v == "off" => return None,
        Some(v) if !v.is_empty() => return Some(PathBuf::from(v)),
        _ => {}
    }
    if nix::unistd::geteuid().is_root() {
        return Some(SYSTEM_STORE.into());
    }
    let data = std::env::var_os("XDG_DATA_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".local/share")))?;
    Some(data.join("sealrun/store"))
}

/// The record's one-word summary of how the inputs were staged.
pub fn staging_summary(how: &BTreeMap<String, &'static str>) -> &'static str {
    ["store-miss", "store-hit", "single-pass", "copy"]
        .into_iter()
        .find(|w| how.values().any(|h| h == w))
        .unwrap_or("none")
}

/// Folders above a store: owned by root or `euid`, not writable by others unless sticky.
fn check_parents(path: &Path, euid: u32) -> Result<(), StoreError> {
    let canon = std::fs::canonicalize(path).map_err(io(path))?;
    for dir in canon.ancestors().skip(1) {
        let meta = std::fs::metadata(dir).map_err(io(dir))?;
        let why = if meta.uid() != 0 && meta.uid() != euid {
            format!("owned by uid {}", meta.uid())
        } else if meta.mode() & 0o022 != 0 && meta.mode() & 0o1000 == 0 {
            format!("writable by others (mode {:04o})", meta.mode() & 0o7777)
        } else {
            continue;
        };
        return Err(StoreError::UnsafeParent {
            path: path.to_path_buf(),
            dir: dir.to_path_buf(),
            why,
        });
    }
    Ok(())
}

const PARTS: [&str; 5] = ["entries", "objects", "meta", "locks", "tmp"];

impl Store {
    /// The store `setting` names, opened and checked; `None` when it is off (or the default
    /// store cannot be created, e.g. no home folder: then inputs are staged as copies).
    pub fn for_spec(setting: &StoreSetting) -> Result<Option<Store>, StoreError> {
        match setting {
            StoreSetting::Off => Ok(None),
            StoreSetting::At(p) => Store::open(p).map(Some),
            StoreSetting::Default => match default_path() {
                None => Ok(None),
                Some(p) => match Store::open(&p) {
                    Ok(s) => Ok(Some(s)),
                    Err(StoreError::Io { path, source }) => {
                        tracing::warn!(store = %path.display(), error = %source, "default store unusable; staging copies");
                        Ok(None)
                    }
                    Err(e) => Err(e),
                },
            },
        }
    }

    /// Open (creating it, mode 0700, if missing) and check the store at `path`.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let euid = nix::unistd::geteuid().as_raw();
        if !path.exists() {
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent).map_err(io(parent))?;
            }
            match std::fs::DirBuilder::new().mode(0o700).create(path) {
                Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(io(path)(e)),
                _ => {}
            }
        }
        check_parents(path, euid)?;
        let dir = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)
            .map_err(io(path))?;
        let meta = dir.metadata().map_err(io(path))?;
        if meta.uid() != euid {
            return Err(StoreError::NotOwned {
                path: path.to_path_buf(),
                owner: meta.uid(),
                euid,
            });
        }
        if meta.mode() & 0o077 != 0 {
            return Err(StoreError::Mode {
                path: path.to_path_buf(),
                mode: meta.mode() & 0o7777,
            });
        }
        let root = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
        for part in PARTS {
            let p = root.join(part);
            match std::fs::DirBuilder::new().mode(0o700).create(&p) {
                Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                    return Err(io(&path.join(part))(e))
                }
                _ => {}
            }
        }
        Ok(Store {
            _dir: dir,
            root,
            shown: path.to_path_buf(),
        })
    }

    /// The store's path (for messages).
    pub fn shown(&self) -> &Path {
        &self.shown
    }

    fn lock(&self, key: &str) -> Result<File, StoreError> {
        let p = self.root.join("locks").join(key);
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&p)
            .map_err(io(&self.shown.join("locks").join(key)))
    }

    fn flock(&self, f: &File, op: rustix::fs::FlockOperation) -> Result<(), StoreError> {
        rustix::fs::flock(f, op).map_err(|e| StoreError::Io {
            path: self.shown.join("locks"),
            source: e.into(),
        })
    }

    /// The verified entry for `signed`, opened for binding, and its lock held shared (keep it
    /// until the run ends). `listed` is `src`'s file list and sizes, already checked against the
    /// signature (every run does that, hit or miss: a wrong folder, an extra, missing or resized
    /// file is refused even when the entry exists); `src`'s bytes are read only to fill a
    /// missing entry.
    pub fn get_or_fill(
        &self,
        signed: &mut Signed,
        src: &Path,
        listed: &[manifest::Listed],
    ) -> Result<(Staged, File), StagingError> {
        use rustix::fs::FlockOperation::{LockExclusive, LockShared};
        let key = signed.expected.root_digest().to_hex();
        let lock = self.lock(&key)?;
        self.flock(&lock, LockShared)?;
        let entry = self.root.join("entries").join(&key);
        let mut how = "store-hit";
        if std::fs::symlink_metadata(&entry).is_err() {
            // Fill it, or wait for whoever fills it now and reuse their entry.
            self.flock(&lock, LockExclusive)?;
            if std::fs::symlink_metadata(&entry).is_err() {
                self.fill(&key, signed, listed)?;
                how = "store-miss";
            }
            self.flock(&lock, LockShared)?;
        }
        // Last use, for `gc`.
        let _ = lock.set_modified(SystemTime::now());
        let single_file = std::fs::symlink_metadata(src).is_ok_and(|m| m.is_file());
        let path = match signed.expected.resources.as_slice() {
            [one] if single_file => entry.join(&one.path),
            _ => entry,
        };
        let fd = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)
            .map(OwnedFd::from)
            .map_err(sio(&self.shown.join("entries").join(&key)))?;
        let staged = Staged {
            path,
            rel: PathBuf::new(),
            how,
            bind: Some(fd),
            decrypted: None,
        };
        Ok((staged, lock))
    }

    fn object_name(r: &Resource, shard_size: u64) -> String {
        match r.algorithm {
            Algorithm::Sha256 => format!("sha256-{}", r.digest),
            Algorithm::Sha256Shards => format!("sha256-shards-{shard_size}-{}", r.digest),
        }
    }

    /// Fill `entries/KEY` from `src` (under the entry's exclusive lock).
    fn fill(
        &self,
        key: &str,
        signed: &Signed,
        listed: &[manifest::Listed],
    ) -> Result<(), StagingError> {
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let tmp = self
            .root
            .join("tmp")
            .join(format!("{key}.{}.{nanos}", std::process::id()));
        staging::make_dir(&tmp)?;
        let r = self.fill_into(&tmp, key, signed, listed);
        if r.is_err() {
            remove_tree(&tmp);
        }
        r
    }

    fn fill_into(
        &self,
        tmp: &Path,
        key: &str,
        signed: &Signed,
        listed: &[manifest::Listed],
    ) -> Result<(), StagingError> {
        staging::make_parents(tmp, listed)?;
        let shard = signed.expected.shard_size;
        // Files are made and linked relative to these (no procfs lookup per file).
        let tmp_fd = staging::open_dir(tmp)?;
        let objects = staging::open_dir(&self.root.join("objects"))?;
        let can_clone = AtomicBool::new(true);
        let resources = listed
            .par_iter()
            .zip(signed.expected.resources.par_iter())
            .map(|(f, want)| {
                let to = tmp.join(&f.path);
                // The same bytes are in the store already (verified when they were added).
                let name = Store::object_name(want, shard);
                if rustix::fs::linkat(&objects, &name, &tmp_fd, &f.path, AtFlags::empty()).is_ok() {
                    return Ok(want.clone());
                }
                let from = staging::open_source(&f.abs, f.size)?;
                let dst = staging::create_copy_at(&tmp_fd, &f.path, &to)?;
                // A small file is copied even where blocks can be shared: its bytes are read to
                // be hashed either way, and a clone is a filesystem transaction that costs more
                // than writing them (10,000 files of 16 KiB on XFS: 1.0 s cloned, 0.5-0.7 s copied).
                let cloned = if f.size >= CLONE_FROM && can_clone.load(Ordering::Relaxed) {
                    let r = crate::copyhash::clone_hash(&from, &dst, f.size, shard);
                    if matches!(r, Ok(None)) {
                        // This filesystem cannot clone: copy the rest without asking again.
                        can_clone.store(false, Ordering::Relaxed);
                    }
                    r.map_err(sio(&f.abs))?
                } else {
                    None
                };
                let (algorithm, digest) = match cloned {
                    Some(r) => r,
                    None => crate::copyhash::copy_hash(&from, Some(&dst), f.size, shard)
                        .map_err(sio(&f.abs))?,
                };
                dst.set_permissions(std::fs::Permissions::from_mode(0o444))
                    .map_err(sio(&to))?;
                Ok(Resource {
                    path: f.path.clone(),
                    size: f.size,
                    algorithm,
                    digest,
                })
            })
            .collect::<Result<Vec<_>, StagingError>>()?;
        let actual = Manifest {
            shard_size: shard,
            resources,
        };
        artifact::compare(
            &format!("{:?}", signed.verified.name),
            &signed.expected,
            &actual,
        )?;
        for r in &actual.resources {
            self.share(&tmp_fd, &r.path, &objects, &Store::object_name(r, shard))?;
        }
        seal_dirs(tmp)?;
        let meta = Meta {
            name: signed.verified.name.clone(),
            filled_at: crate::now_rfc3339(),
            manifest: signed.expected.clone(),
        };
        let json = serde_json::to_vec_pretty(&meta).unwrap_or_default();
        let meta_path = self.root.join("meta").join(format!("{key}.json"));
        sealrun_verifier::rollback::write_atomic(&meta_path, &json).map_err(sio(&meta_path))?;
        let entry = self.root.join("entries").join(key);
        let shown = self.shown.join("entries").join(key);
        // The top folder is sealed only once it is in place: moving a folder to another parent
        // rewrites its `..`, which needs write permission on it for a launcher not running as
        // root.
        std::fs::rename(tmp, &entry).map_err(sio(&shown))?;
        std::fs::set_permissions(&entry, std::fs::Permissions::from_mode(0o555))
            .map_err(sio(&shown))
    }

    /// Make `tmp/file` and `objects/object` the same inode: add the file as the object, or (if
    /// another fill added the same bytes first) replace the file by a link to it.
    fn share(
        &self,
        tmp: &OwnedFd,
        file: &str,
        objects: &OwnedFd,
        object: &str,
    ) -> Result<(), StagingError> {
        let shown = self.shown.join("objects").join(object);
        let err = |e: rustix::io::Errno| sio(&shown)(e.into());
        match rustix::fs::linkat(tmp, file, objects, object, AtFlags::empty()) {
            Ok(()) => Ok(()),
            Err(rustix::io::Errno::EXIST) => {
                let side = format!("{file}.sealrun-dedup");
                rustix::fs::linkat(objects, object, tmp, &side, AtFlags::empty()).map_err(err)?;
                rustix::fs::renameat(tmp, &side, tmp, file).map_err(err)
            }
            Err(e) => Err(err(e)),
        }
    }

    /// Re-hash every entry against the manifest it was filled for; one line per problem.
    /// Returns how many entries were checked and the problems found.
    pub fn verify(&self) -> Result<(usize, Vec<String>), StoreError> {
        let mut problems = Vec::new();
        let keys = self.keys()?;
        for key in &keys {
            let meta = match self.meta(key) {
                Ok(m) => m,
                Err(e) => {
                    problems.push(e.to_string());
                    continue;
                }
            };
            if meta.manifest.root_digest().to_hex() != *key {
                problems.push(format!(
                    "entry {key} ({:?}): its manifest (meta/{key}.json) no longer matches its name",
                    meta.name
                ));
                continue;
            }
            let walk = WalkOptions::with_shard_size(meta.manifest.shard_size);
            let dir = self.root.join("entries").join(key);
            match Manifest::build(&dir, &walk, None) {
                Err(e) => problems.push(format!("entry {key} ({:?}): {e}", meta.name)),
                Ok(actual) => {
                    for d in manifest::diff(&meta.manifest, &actual) {
                        problems.push(format!("entry {key} ({:?}): {}", meta.name, describe(&d)));
                    }
                }
            }
        }
        Ok((keys.len(), problems))
    }

    fn keys(&self) -> Result<Vec<String>, StoreError> {
        let dir = self.root.join("entries");
        let mut keys: Vec<String> = std::fs::read_dir(&dir)
            .map_err(io(&self.shown.join("entries")))?
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect();
        keys.sort();
        Ok(keys)
    }

    fn meta(&self, key: &str) -> Result<Meta, StoreError> {
        let p = self.root.join("meta").join(format!("{key}.json"));
        let bytes = std::fs::read(&p).map_err(|e| StoreError::Entry {
            key: key.into(),
            message: format!("cannot read meta/{key}.json: {e}"),
        })?;
        serde_json::from_slice(&bytes).map_err(|e| StoreError::Entry {
            key: key.into(),
            message: format!("meta/{key}.json is not valid: {e}"),
        })
    }

    /// Remove entries no run is using that were last used more than `older_than` ago, then
    /// the least recently used until the entries hold at most `keep_bytes`; then the stored
    /// files no entry links to. Returns (entries removed, bytes they listed, entries kept).
    pub fn gc(
        &self,
        older_than: Option<Duration>,
        keep_bytes: Option<u64>,
    ) -> Result<(usize, u64, usize), StoreError> {
        let now = SystemTime::now();
        let mut entries = Vec::new();
        for key in self.keys()? {
            let lock = self.lock(&key)?;
            let used = lock
                .metadata()
                .and_then(|m| m.modified())
                .unwrap_or(SystemTime::UNIX_EPOCH);
            let bytes = self
                .meta(&key)
                .map(|m| m.manifest.total_size())
                .unwrap_or(0);
            entries.push((used, key, bytes, lock));
        }
        entries.sort_by_key(|e| e.0);
        let mut total: u64 = entries.iter().map(|e| e.2).sum();
        let (mut removed, mut freed) = (0, 0);
        let count = entries.len();
        for (used, key, bytes, lock) in entries {
            let old = older_than.is_some_and(|d| now.duration_since(used).unwrap_or_default() > d);
            let over = keep_bytes.is_some_and(|k| total > k);
            // In use by a run (or being filled): keep it.
            let free =
                rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive)
                    .is_ok();
            if !(old || over) || !free {
                continue;
            }
            let gone = self
                .root
                .join("tmp")
                .join(format!("gc-{key}.{}", std::process::id()));
            std::fs::rename(self.root.join("entries").join(&key), &gone)
                .map_err(io(&self.shown.join("entries").join(&key)))?;
            let _ = std::fs::remove_file(self.root.join("meta").join(format!("{key}.json")));
            remove_tree(&gone);
            total -= bytes;
            removed += 1;
            freed += bytes;
        }
        self.drop_unused_objects()?;
        Ok((removed, freed, count - removed))
    }

    fn drop_unused_objects(&self) -> Result<(), StoreError> {
        let dir = self.root.join("objects");
        for e in std::fs::read_dir(&dir).map_err(io(&self.shown.join("objects")))? {
            let e = e.map_err(io(&self.shown.join("objects")))?;
            if e.metadata().is_ok_and(|m| m.nlink() == 1) {
                let _ = std::fs::remove_file(e.path());
            }
        }
        Ok(())
    }
}

fn describe(d: &manifest::Difference) -> String {
    use manifest::Difference::*;
    match d {
        Digest { path, .. } => format!("{path}: changed (digest differs from the signed one)"),
        Size {
            path,
            expected,
            actual,
        } => format!("{path}: changed size ({expected} signed, {actual} now)"),
        Missing { path } => format!("{path}: missing"),
        Extra { path } => format!("{path}: added (not signed)"),
    }
}

/// Folders of a filled entry below its top: 0555 (the top is sealed once renamed into place).
fn seal_dirs(top: &Path) -> Result<(), StagingError> {
    for e in walkdir::WalkDir::new(top).min_depth(1).contents_first(true) {
        let e = e.map_err(|e| StagingError::Io {
            path: top.to_path_buf(),
            source: e.into(),
        })?;
        if e.file_type().is_dir() {
            std::fs::set_permissions(e.path(), std::fs::Permissions::from_mode(0o555))
                .map_err(sio(e.path()))?;
        }
    }
    Ok(())
}

/// Remove a tree whose folders may be 0555 (best effort).
fn remove_tree(top: &Path) {
    for e in walkdir::WalkDir::new(top).into_iter().flatten() {
        if e.file_type().is_dir() {
            let _ = std::fs::set_permissions(e.path(), std::fs::Permissions::from_mode(0o700));
        }
    }
    let _ = std::fs::remove_dir_all(top);
}
