//! Manifests: the sorted list of every regular file under an artifact root,
//! with its size and digest, and one root digest that binds them all.
//!
//! Guarantees: only regular files are listed; symlinks and special files are
//! refused unless explicitly allowed (symlinks) and never followed; every path is
//! relative, `/`-separated, valid UTF-8 and free of `.`/`..`/empty components;
//! entries are sorted by path components (`a/x` before `a-b/y`), so the same tree
//! always yields the same manifest and root digest. Files are hashed in parallel
//! and large files in parallel shards, with bounded memory per worker.

use std::cmp::Ordering;
use std::io;
use std::path::{Path, PathBuf};

use indicatif::ProgressBar;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::digest::{self, Algorithm, Digest};

/// One file of an artifact.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resource {
    /// Path relative to the artifact root, `/`-separated.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// How `digest` was computed.
    pub algorithm: Algorithm,
    /// Hex SHA-256 (see [`Algorithm`]).
    pub digest: Digest,
}

/// Every file of an artifact, sorted, with the shard size used to hash them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Files larger than this many bytes were hashed as `sha256-shards`.
    pub shard_size: u64,
    /// The files, sorted by path components.
    pub resources: Vec<Resource>,
}

/// Why a tree could not be listed, or a manifest is not well formed.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("{}: cannot read: {source}", crate::text::path(path))]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "{}: is a symlink; symlinks are refused (they could point anywhere)",
        crate::text::Esc(path)
    )]
    Symlink { path: String },
    #[error(
        "{}: is a special file ({kind}); only regular files can be signed",
        crate::text::Esc(path)
    )]
    SpecialFile { path: String, kind: &'static str },
    #[error("{path:?}: unsafe path in manifest: {reason}")]
    UnsafePath { path: String, reason: &'static str },
    #[error("{}: listed twice in manifest", crate::text::Esc(path))]
    Duplicate { path: String },
    #[error(
        "{}: manifest is not sorted by path at this entry",
        crate::text::Esc(path)
    )]
    Unsorted { path: String },
    #[error("hashing was cancelled")]
    Cancelled,
    /// A listed file found to hold another number of bytes when read (not hashed).
    #[error("{}: {now} bytes when read, {listed} listed", crate::text::Esc(path))]
    Resized { path: String, listed: u64, now: u64 },
    #[error("shard_size must be at least 4096, found {0}")]
    BadShardSize(u64),
    #[error(
        "{}: algorithm {algorithm} does not match size {size} with shard_size {shard_size}",
        crate::text::Esc(path)
    )]
    WrongAlgorithm {
        path: String,
        algorithm: &'static str,
        size: u64,
        shard_size: u64,
    },
}

/// Options for walking a tree.
#[derive(Clone, Debug)]
pub struct WalkOptions {
    /// Files larger than this are hashed in parallel shards.
    pub shard_size: u64,
    /// Paths (relative to the root, matched on whole components) left out.
    pub ignore: Vec<String>,
    /// Set to stop a walk or hashing early (entries not yet reached and files not yet
    /// started are skipped, and the walk or build fails with [`ManifestError::Cancelled`]).
    pub cancel: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
}

impl Default for WalkOptions {
    fn default() -> Self {
        WalkOptions {
            shard_size: digest::DEFAULT_SHARD_SIZE,
            ignore: Vec::new(),
            cancel: None,
        }
    }
}

impl WalkOptions {
    /// Options with another shard size.
    pub fn with_shard_size(shard_size: u64) -> Self {
        WalkOptions {
            shard_size,
            ..Default::default()
        }
    }

    fn cancelled(&self) -> bool {
        self.cancel
            .as_ref()
            .is_some_and(|c| c.load(std::sync::atomic::Ordering::Relaxed))
    }
}

/// Compare two manifest paths component by component (`a/x` < `a-b/y`).
pub fn path_order(a: &str, b: &str) -> Ordering {
    // The same order as comparing `a.split('/')` with `b.split('/')`: byte by byte with `/`
    // below every other byte (a component that ends first sorts first), without splitting.
    fn key(b: u8) -> u16 {
        if b == b'/' {
            0
        } else {
            u16::from(b) + 1
        }
    }
    a.bytes().map(key).cmp(b.bytes().map(key))
}

/// Check that a manifest path is relative, `/`-separated and cannot escape the root.
pub fn check_path(path: &str) -> Result<(), ManifestError> {
    let bad = |reason| {
        Err(ManifestError::UnsafePath {
            path: path.to_string(),
            reason,
        })
    };
    if path.is_empty() {
        return bad("empty path");
    }
    if path.starts_with('/') || path.starts_with('\\') || path.get(1..2) == Some(":") {
        return bad("absolute path");
    }
    if path.contains('\0') || path.contains('\\') {
        return bad("contains a NUL or backslash");
    }
    for c in path.split('/') {
        match c {
            ".." => return bad("contains a `..` component"),
            "." => return bad("contains a `.` component"),
            "" => return bad("contains an empty component"),
            _ => {}
        }
    }
    Ok(())
}

/// Relative `/`-joined UTF-8 path of `p` under `root`.
fn rel_path(root: &Path, p: &Path) -> Result<String, ManifestError> {
    let rel = p.strip_prefix(root).unwrap_or(p);
    let mut out = Vec::new();
    for c in rel.components() {
        match c.as_os_str().to_str() {
            Some(s) => out.push(s),
            None => {
                return Err(ManifestError::UnsafePath {
                    path: rel.to_string_lossy().into_owned(),
                    reason: "not valid UTF-8",
                })
            }
        }
    }
    Ok(out.join("/"))
}

fn is_ignored(rel: &str, ignore: &[String]) -> bool {
    ignore
        .iter()
        .any(|ig| rel == ig || rel.starts_with(&format!("{ig}/")))
}

fn file_kind(ft: &std::fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if ft.is_fifo() {
            return "fifo";
        }
        if ft.is_socket() {
            return "socket";
        }
        if ft.is_block_device() {
            return "block device";
        }
        if ft.is_char_device() {
            return "character device";
        }
    }
    let _ = ft;
    "not a regular file"
}

/// List the regular files under `root` (or `root` itself if it is a file),
/// refusing symlinks and special files. Returns `(relative path, absolute path)`,
/// sorted by path components.
pub fn list_files(
    root: &Path,
    opts: &WalkOptions,
) -> Result<Vec<(String, PathBuf)>, ManifestError> {
    let mut files = walk(root, opts)?.collect::<Result<Vec<_>, _>>()?;
    files.sort_by(|a, b| path_order(&a.0, &b.0));
    Ok(files)
}

/// One regular file found by [`list_sized`]: nothing of it has been read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    /// Path relative to the root, `/`-separated.
    pub path: String,
    /// Where it is on disk.
    pub abs: PathBuf,
    /// Its size (from `lstat`).
    pub size: u64,
}

/// List the regular files under `root` with their sizes, without reading any
/// of them: the cheap check that comes before hashing (an unsigned extra file
/// or a wrong size is found in the time of a directory walk). The sizes are
/// asked for in parallel, a run of [`STAT_RUN`] files per task (each task opens
/// the folders of its run once).
pub fn list_sized(root: &Path, opts: &WalkOptions) -> Result<Vec<Listed>, ManifestError> {
    sizes(list_files(root, opts)?)
}

/// The sizes of the files [`list_files`] found (see [`list_sized`]).
pub fn sizes(files: Vec<(String, PathBuf)>) -> Result<Vec<Listed>, ManifestError> {
    let total = files.len();
    // Runs of files, moved (not copied) into the tasks.
    let mut runs = Vec::with_capacity(total.div_ceil(STAT_RUN));
    let mut rest = files.into_iter();
    loop {
        let run: Vec<(String, PathBuf)> = rest.by_ref().take(STAT_RUN).collect();
        if run.is_empty() {
            break;
        }
        runs.push(run);
    }
    let runs: Vec<Result<Vec<Listed>, ManifestError>> = runs
        .into_par_iter()
        .map(|run| {
            let mut folders = Folders::default();
            run.into_iter()
                .map(|(path, abs)| sized(&mut folders, path, abs))
                .collect()
        })
        .collect();
    // The first error in path order, whatever the scheduling.
    let mut listed = Vec::with_capacity(total);
    for run in runs {
        listed.extend(run?);
    }
    Ok(listed)
}

/// Files per task when listing sizes: enough that a task's overhead (a folder opened, a
/// wake-up) is noise, few enough that 10,000 files spread over the cores.
const STAT_RUN: usize = 256;

/// `path` (at `abs`) with its size, or why it is not a regular file.
fn sized(folders: &mut Folders, path: String, abs: PathBuf) -> Result<Listed, ManifestError> {
    if let Some(size) = folders.regular(&abs) {
        return Ok(Listed { path, abs, size });
    }
    let meta = match std::fs::symlink_metadata(&abs) {
        Ok(m) => m,
        Err(source) => return Err(ManifestError::Io { path: abs, source }),
    };
    if !meta.is_file() {
        // Swapped since the walk saw a regular file.
        return Err(ManifestError::SpecialFile {
            path,
            kind: file_kind(&meta.file_type()),
        });
    }
    Ok(Listed {
        path,
        abs,
        size: meta.len(),
    })
}

/// Hash the files of a listing (in parallel, no second walk), as [`Manifest::build`] would
/// hash them; sizes come from the bytes read, so a file changed since it was listed shows as
/// a size or digest difference. Errors: the first in path order.
pub fn hash_listed(
    listed: &[Listed],
    shard_size: u64,
    progress: Option<&ProgressBar>,
) -> Result<Manifest, ManifestError> {
    if shard_size < 4096 {
        return Err(ManifestError::BadShardSize(shard_size));
    }
    if let Some(pb) = progress {
        pb.set_length(listed.iter().map(|l| l.size).sum());
    }
    let hash = |folders: &mut Folders, l: &Listed| {
        let io = |source| ManifestError::Io {
            path: l.abs.clone(),
            source,
        };
        let (algorithm, digest, size) = if digest::reads_at_once(l.size, shard_size) {
            let file = folders.open(&l.abs).map_err(io)?;
            match digest::hash_listed_file(file, l.size).map_err(io)? {
                digest::AtOnce::Hashed(d) => (Algorithm::Sha256, d, l.size),
                digest::AtOnce::Resized(now) => {
                    return Err(ManifestError::Resized {
                        path: l.path.clone(),
                        listed: l.size,
                        now,
                    })
                }
            }
        } else {
            digest::hash_file(&l.abs, shard_size).map_err(io)?
        };
        if let Some(pb) = progress {
            pb.inc(size);
        }
        Ok(Resource {
            path: l.path.clone(),
            size,
            algorithm,
            digest,
        })
    };
    // Small files a run per task (their folders opened once); each large file a task of its
    // own (its shards are tasks too).
    let results: Vec<Result<Vec<Resource>, ManifestError>> = runs(listed, shard_size)
        .into_par_iter()
        .map(|run| {
            let mut folders = Folders::default();
            run.iter().map(|l| hash(&mut folders, l)).collect()
        })
        .collect();
    let mut resources = Vec::with_capacity(listed.len());
    for run in results {
        resources.extend(run?);
    }
    Ok(Manifest {
        shard_size,
        resources,
    })
}

/// `listed` cut into tasks for hashing: consecutive small files (read at once) up to
/// [`STAT_RUN`] per task, every other file a task of its own.
fn runs(listed: &[Listed], shard_size: u64) -> Vec<&[Listed]> {
    let mut out = Vec::new();
    let mut start = 0;
    for (i, l) in listed.iter().enumerate() {
        if !digest::reads_at_once(l.size, shard_size) {
            if start < i {
                out.push(&listed[start..i]);
            }
            out.push(&listed[i..=i]);
            start = i + 1;
        } else if i + 1 - start == STAT_RUN {
            out.push(&listed[start..=i]);
            start = i + 1;
        }
    }
    if start < listed.len() {
        out.push(&listed[start..]);
    }
    out
}

/// Files looked up by name in their folder (kept open while consecutive files are in it)
/// rather than by their whole path: one component to resolve per file, not every one of its
/// path. Used for the sizes of a listing and to open the listed files for hashing.
#[derive(Default)]
struct Folders {
    #[cfg(target_os = "linux")]
    dir: Option<(PathBuf, std::os::fd::OwnedFd)>,
}

impl Folders {
    /// The open folder of `abs` and its file name.
    #[cfg(target_os = "linux")]
    fn at<'p>(
        &mut self,
        abs: &'p Path,
    ) -> io::Result<(&std::os::fd::OwnedFd, &'p std::ffi::OsStr)> {
        use rustix::fs::{Mode, OFlags};
        let no_name = || io::Error::from(io::ErrorKind::InvalidInput);
        let (parent, name) = (
            abs.parent().ok_or_else(no_name)?,
            abs.file_name().ok_or_else(no_name)?,
        );
        if self.dir.as_ref().is_none_or(|(p, _)| p != parent) {
            // The folder the walk found (a symlinked folder above the root is followed, as
            // `lstat` of the whole path would).
            let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
            let fd = rustix::fs::open(parent, flags, Mode::empty())?;
            self.dir = Some((parent.to_path_buf(), fd));
        }
        let (_, fd) = self.dir.as_ref().ok_or_else(no_name)?;
        Ok((fd, name))
    }

    /// `Some(size)` for a regular file (not a symlink); `None` for anything else or any
    /// error, which the caller then reports from `symlink_metadata`.
    #[cfg(target_os = "linux")]
    fn regular(&mut self, abs: &Path) -> Option<u64> {
        use rustix::fs::{AtFlags, FileType};
        let (fd, name) = self.at(abs).ok()?;
        let st = rustix::fs::statat(fd, name, AtFlags::SYMLINK_NOFOLLOW).ok()?;
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
            return None;
        }
        u64::try_from(st.st_size).ok()
    }

    #[cfg(not(target_os = "linux"))]
    fn regular(&mut self, abs: &Path) -> Option<u64> {
        std::fs::symlink_metadata(abs)
            .ok()
            .filter(|m| m.is_file())
            .map(|m| m.len())
    }

    /// Open a listed file as [`digest::open_listed`] does.
    #[cfg(target_os = "linux")]
    fn open(&mut self, abs: &Path) -> io::Result<std::fs::File> {
        use rustix::fs::Mode;
        let (fd, name) = self.at(abs)?;
        let file = rustix::fs::openat(fd, name, digest::LISTED_FLAGS, Mode::empty())?;
        Ok(std::fs::File::from(file))
    }

    #[cfg(not(target_os = "linux"))]
    fn open(&mut self, abs: &Path) -> io::Result<std::fs::File> {
        digest::open_listed(abs)
    }
}

type WalkItem = Result<(String, PathBuf), ManifestError>;

/// The regular files under `root` as they are found (not sorted), or an error
/// for the first symlink, special file or unreadable entry.
fn walk<'a>(
    root: &'a Path,
    opts: &'a WalkOptions,
) -> Result<Box<dyn Iterator<Item = WalkItem> + Send + 'a>, ManifestError> {
    let meta = std::fs::symlink_metadata(root).map_err(|source| ManifestError::Io {
        path: root.to_path_buf(),
        source,
    })?;
    if meta.file_type().is_symlink() {
        return Err(ManifestError::Symlink {
            path: root.display().to_string(),
        });
    }
    if meta.is_file() {
        let name =
            root.file_name()
                .and_then(|n| n.to_str())
                .ok_or_else(|| ManifestError::UnsafePath {
                    path: root.display().to_string(),
                    reason: "file name is not valid UTF-8",
                })?;
        return Ok(Box::new(std::iter::once(Ok((
            name.to_string(),
            root.to_path_buf(),
        )))));
    }
    if !meta.is_dir() {
        return Err(ManifestError::SpecialFile {
            path: root.display().to_string(),
            kind: file_kind(&meta.file_type()),
        });
    }
    let walker = walkdir::WalkDir::new(root)
        .follow_links(false)
        .min_depth(1)
        .into_iter()
        .filter_entry(move |e| {
            // The relative path is built once more below; only patterns need it here.
            opts.ignore.is_empty()
                || match rel_path(root, e.path()) {
                    Ok(rel) => !is_ignored(&rel, &opts.ignore),
                    Err(_) => true,
                }
        });
    Ok(Box::new(walker.filter_map(move |entry| {
        if opts.cancelled() {
            return Some(Err(ManifestError::Cancelled));
        }
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                let path = e.path().unwrap_or(root).to_path_buf();
                return Some(Err(ManifestError::Io {
                    path,
                    source: e
                        .into_io_error()
                        .unwrap_or_else(|| io::Error::other("filesystem loop")),
                }));
            }
        };
        let rel = match rel_path(root, entry.path()) {
            Ok(r) => r,
            Err(e) => return Some(Err(e)),
        };
        let ft = entry.file_type();
        if ft.is_dir() {
            return None;
        }
        if ft.is_symlink() {
            return Some(Err(ManifestError::Symlink { path: rel }));
        }
        if !ft.is_file() {
            return Some(Err(ManifestError::SpecialFile {
                path: rel,
                kind: file_kind(&ft),
            }));
        }
        Some(check_path(&rel).map(|()| (rel, entry.into_path())))
    })))
}

/// The error to report among several: the one whose path sorts first, so the
/// message does not depend on thread scheduling.
fn first_error(errors: Vec<ManifestError>) -> Option<ManifestError> {
    fn key(e: &ManifestError) -> String {
        match e {
            ManifestError::Io { path, .. } => path.display().to_string(),
            ManifestError::Symlink { path }
            | ManifestError::SpecialFile { path, .. }
            | ManifestError::UnsafePath { path, .. } => path.clone(),
            _ => String::new(),
        }
    }
    errors
        .into_iter()
        .min_by(|a, b| path_order(&key(a), &key(b)))
}

/// For incremental signing only: the entry of a file whose digest the caller already knows
/// (`path` relative to the root, then its absolute path), or `None` to hash it. Verification
/// never uses this.
pub type Reuse<'a> = dyn Fn(&str, &Path) -> Option<Resource> + Sync + 'a;

impl Manifest {
    /// Walk `root` and hash every file (in parallel), reporting bytes to `progress`.
    pub fn build(
        root: &Path,
        opts: &WalkOptions,
        progress: Option<&ProgressBar>,
    ) -> Result<Manifest, ManifestError> {
        Manifest::build_reusing(root, opts, progress, None).map(|(m, _)| m)
    }

    /// [`Manifest::build`], taking the entries `reuse` gives instead of hashing those files
    /// (the signer trusts its own disk). Returns the manifest and how many files were hashed.
    pub fn build_reusing(
        root: &Path,
        opts: &WalkOptions,
        progress: Option<&ProgressBar>,
        reuse: Option<&Reuse>,
    ) -> Result<(Manifest, usize), ManifestError> {
        if opts.shard_size < 4096 {
            return Err(ManifestError::BadShardSize(opts.shard_size));
        }
        if let Some(pb) = progress {
            let total: u64 = list_files(root, opts)?
                .iter()
                .filter_map(|(_, p)| std::fs::symlink_metadata(p).ok().map(|m| m.len()))
                .sum();
            pb.set_length(total);
        }
        // Walk first (a directory read per folder, no file opened), then hash the files in
        // parallel: a shared iterator (`par_bridge`) costs a lock and wake-ups per small file.
        let found: Vec<WalkItem> = walk(root, opts)?.collect();
        let results: Vec<Result<(Resource, bool), ManifestError>> =
            found
                .into_par_iter()
                .map(|item| {
                    let (rel, abs) = item?;
                    if opts.cancelled() {
                        return Err(ManifestError::Cancelled);
                    }
                    if let Some(r) = reuse.and_then(|f| f(&rel, &abs)) {
                        if let Some(pb) = progress {
                            pb.inc(r.size);
                        }
                        return Ok((r, false));
                    }
                    let (algorithm, digest, size) = digest::hash_file(&abs, opts.shard_size)
                        .map_err(|source| ManifestError::Io {
                            path: abs.clone(),
                            source,
                        })?;
                    if let Some(pb) = progress {
                        pb.inc(size);
                    }
                    Ok((
                        Resource {
                            path: rel,
                            size,
                            algorithm,
                            digest,
                        },
                        true,
                    ))
                })
                .collect();
        let mut resources = Vec::with_capacity(results.len());
        let mut errors = Vec::new();
        let mut hashed = 0;
        for r in results {
            match r {
                Ok((r, h)) => {
                    hashed += usize::from(h);
                    resources.push(r)
                }
                Err(e) => errors.push(e),
            }
        }
        if let Some(e) = first_error(errors) {
            return Err(e);
        }
        resources.sort_by(|a, b| path_order(&a.path, &b.path));
        Ok((
            Manifest {
                shard_size: opts.shard_size,
                resources,
            },
            hashed,
        ))
    }

    /// Check the manifest's structure: safe, sorted, unique paths and
    /// algorithms consistent with sizes. Done before any file is touched.
    pub fn check(&self) -> Result<(), ManifestError> {
        if self.shard_size < 4096 {
            return Err(ManifestError::BadShardSize(self.shard_size));
        }
        let mut prev: Option<&str> = None;
        for r in &self.resources {
            check_path(&r.path)?;
            if let Some(p) = prev {
                match path_order(p, &r.path) {
                    Ordering::Less => {}
                    Ordering::Equal => {
                        return Err(ManifestError::Duplicate {
                            path: r.path.clone(),
                        })
                    }
                    Ordering::Greater => {
                        return Err(ManifestError::Unsorted {
                            path: r.path.clone(),
                        })
                    }
                }
            }
            if r.algorithm != Algorithm::for_size(r.size, self.shard_size) {
                return Err(ManifestError::WrongAlgorithm {
                    path: r.path.clone(),
                    algorithm: r.algorithm.as_str(),
                    size: r.size,
                    shard_size: self.shard_size,
                });
            }
            prev = Some(&r.path);
        }
        Ok(())
    }

    /// The root digest: SHA-256 over a length-prefixed encoding of the shard
    /// size and every entry (path, size, algorithm, digest) in order.
    pub fn root_digest(&self) -> Digest {
        let mut h = Sha256::new();
        h.update(b"sealrun-manifest-v1\0");
        h.update(self.shard_size.to_be_bytes());
        h.update((self.resources.len() as u64).to_be_bytes());
        for r in &self.resources {
            h.update((r.path.len() as u64).to_be_bytes());
            h.update(r.path.as_bytes());
            h.update(r.size.to_be_bytes());
            let alg = r.algorithm.as_str();
            h.update((alg.len() as u64).to_be_bytes());
            h.update(alg.as_bytes());
            h.update(r.digest.0);
        }
        Digest(h.finalize().into())
    }

    /// Total bytes.
    pub fn total_size(&self) -> u64 {
        self.resources.iter().map(|r| r.size).sum()
    }
}

/// One way a tree on disk differs from its manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Difference {
    Missing {
        path: String,
    },
    Extra {
        path: String,
    },
    Size {
        path: String,
        expected: u64,
        actual: u64,
    },
    Digest {
        path: String,
        expected: Digest,
        actual: Digest,
    },
}

/// Compare an expected manifest with the actual one, in path order.
pub fn diff(expected: &Manifest, actual: &Manifest) -> Vec<Difference> {
    merge(
        &expected.resources,
        &actual.resources,
        |r| &r.path,
        |x, y| {
            if x.size != y.size {
                Some(Difference::Size {
                    path: x.path.clone(),
                    expected: x.size,
                    actual: y.size,
                })
            } else if x.digest != y.digest || x.algorithm != y.algorithm {
                Some(Difference::Digest {
                    path: x.path.clone(),
                    expected: x.digest,
                    actual: y.digest,
                })
            } else {
                None
            }
        },
    )
}

/// Compare an expected manifest with a listing (names and sizes, nothing
/// hashed), in path order; sizes are compared only if `sizes` is set.
pub fn diff_listing(expected: &Manifest, listed: &[Listed], sizes: bool) -> Vec<Difference> {
    merge(
        &expected.resources,
        listed,
        |l| &l.path,
        |x, y| {
            (sizes && x.size != y.size).then(|| Difference::Size {
                path: x.path.clone(),
                expected: x.size,
                actual: y.size,
            })
        },
    )
}

/// Walk two path-sorted lists side by side: missing, extra, and what `both`
/// says about entries present in each.
fn merge<A>(
    e: &[Resource],
    a: &[A],
    path: impl Fn(&A) -> &String,
    both: impl Fn(&Resource, &A) -> Option<Difference>,
) -> Vec<Difference> {
    let mut out = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < e.len() || j < a.len() {
        let ord = match (e.get(i), a.get(j)) {
            (Some(x), Some(y)) => path_order(&x.path, path(y)),
            (Some(_), None) => Ordering::Less,
            _ => Ordering::Greater,
        };
        match ord {
            Ordering::Less => {
                out.push(Difference::Missing {
                    path: e[i].path.clone(),
                });
                i += 1;
            }
            Ordering::Greater => {
                out.push(Difference::Extra {
                    path: path(&a[j]).clone(),
                });
                j += 1;
            }
            Ordering::Equal => {
                out.extend(both(&e[i], &a[j]));
                i += 1;
                j += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashing_tasks_keep_every_file_once_and_large_ones_alone() {
        let l = |size| Listed {
            path: String::new(),
            abs: PathBuf::new(),
            size,
        };
        let big = 1 << 20;
        let mut listed: Vec<Listed> = (0..600).map(|_| l(10)).collect();
        listed.insert(3, l(big));
        listed.push(l(big));
        let r = runs(&listed, 64 << 20);
        assert_eq!(r.iter().map(|r| r.len()).sum::<usize>(), listed.len());
        assert_eq!(
            r.iter().map(|r| r.len()).collect::<Vec<_>>(),
            vec![3, 1, 256, 256, 85, 1]
        );
        assert!(runs(&[], 64 << 20).is_empty());
    }

    #[test]
    fn path_order_is_component_order() {
        let paths = [
            "", "a", "a/", "a/b", "a-b", "a-b/c", "a.b", "a/b/c", "a//b", "ab", "a\u{0}",
            "a\u{0}/b", "a/\u{0}", "é", "e/é", "z", "Z/a", "0", "a/b-c", "a/b/c-d", "a/bc",
        ];
        for a in paths {
            for b in paths {
                assert_eq!(
                    path_order(a, b),
                    a.split('/').cmp(b.split('/')),
                    "{a:?} vs {b:?}"
                );
            }
        }
    }

    #[test]
    fn component_order() {
        let mut v = vec![
            "a-b/test.csv",
            "meta.json",
            "a/train.csv",
            "nested/deeper/blob.bin",
        ];
        v.sort_by(|a, b| path_order(a, b));
        assert_eq!(
            v,
            [
                "a/train.csv",
                "a-b/test.csv",
                "meta.json",
                "nested/deeper/blob.bin"
            ]
        );
    }

    #[test]
    fn unsafe_paths_refused() {
        for p in [
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a//b",
            "./a",
            "",
            "C:/x",
            "a\\b",
        ] {
            assert!(check_path(p).is_err(), "{p} accepted");
        }
        assert!(check_path("a/b.c").is_ok());
    }

    #[test]
    fn build_is_sorted_and_stable() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("a-b")).unwrap();
        std::fs::create_dir_all(d.path().join("a")).unwrap();
        std::fs::write(d.path().join("a-b/y"), b"1").unwrap();
        std::fs::write(d.path().join("a/x"), b"2").unwrap();
        let m = Manifest::build(d.path(), &WalkOptions::default(), None).unwrap();
        let paths: Vec<_> = m.resources.iter().map(|r| r.path.as_str()).collect();
        assert_eq!(paths, ["a/x", "a-b/y"]);
        m.check().unwrap();
        let m2 = Manifest::build(d.path(), &WalkOptions::default(), None).unwrap();
        assert_eq!(m.root_digest(), m2.root_digest());
    }

    #[test]
    fn cancelled_build_stops() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("a"), b"1").unwrap();
        let flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let opts = WalkOptions {
            cancel: Some(flag),
            ..Default::default()
        };
        let e = Manifest::build(d.path(), &opts, None).unwrap_err();
        assert!(matches!(e, ManifestError::Cancelled), "{e}");
    }

    #[cfg(unix)]
    #[test]
    fn symlink_refused() {
        let d = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/etc/passwd", d.path().join("l")).unwrap();
        let e = Manifest::build(d.path(), &WalkOptions::default(), None).unwrap_err();
        assert!(
            matches!(e, ManifestError::Symlink { ref path } if path == "l"),
            "{e}"
        );
    }
}
