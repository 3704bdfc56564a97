//! Taking a job's output folder back from the job and attesting what is in it.
//!
//! Guarantees:
//! - **Hand-back.** Every entry the job left, whatever its name (`1:x`, `a\b`,
//!   bytes that are not UTF-8) or depth (deeper than `PATH_MAX`), is reached
//!   through directory descriptors (`openat`/`fstatat` one name at a time, never
//!   following a symlink, at most two descriptors open whatever the depth), and
//!   is chowned to the launcher's uid, its mode narrowed (no setuid, setgid or
//!   world-write; the owner may read, and enter directories), and its extended
//!   attributes (ACLs, `user.*`, file capabilities; not LSM labels) scanned for
//!   secrets and removed. An error on one entry is recorded and the walk goes
//!   on. The job's processes are all gone when this runs.
//! - **Nothing silently left out.** Each entry ends up as a subject (a regular
//!   file, hashed), a non-file (link text recorded, never followed), an empty
//!   directory, or an unattested entry with its reason; any unattested entry
//!   fails the run.
//! - **Bounded.** Entry count, allocated bytes and file lengths (from `fstat`,
//!   nothing read) are checked against the limits before any file is read, and
//!   hashing stops at the post-run deadline.
//! - **Secrets.** Every path, link target and extended attribute is scanned,
//!   and file contents are scanned while they are hashed (one read); the record
//!   only ever gets redacted names.

use std::ffi::{CStr, CString, OsStr};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use rayon::prelude::*;
use rustix::fs::{AtFlags, FileType, Gid, Mode, OFlags, Stat, Uid};
use sealrun_verifier::digest::{Algorithm, Digest};
use sealrun_verifier::manifest::{check_path, path_order, Manifest, Resource};
use sealrun_verifier::outputs::{NonFile, Outputs};
use sealrun_verifier::record::{OutputSummary, UnattestedEntry, UnattestedOutputs};
use sha2::{Digest as _, Sha256};

use crate::secrets::{Leak, Patterns, Redactor};

/// Longest path (bytes, under the output folder) a subject may have: room is
/// left for the folder's own path, so a verifier can still open it by path.
pub const MAX_SUBJECT_PATH: usize = 2048;
/// How many unattested entries a record lists (all are counted).
pub const MAX_LISTED: usize = 100;
/// Largest extended attribute value read for the scan (the kernel's limit).
const MAX_XATTR: usize = 64 << 10;

/// Limits on the post-run work.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Entries of any kind (files, directories, links, special files).
    pub max_entries: u64,
    /// Bytes, counted both as allocated blocks and as file lengths.
    pub max_bytes: u64,
    /// Hashing stops here; files not hashed by then are unattested.
    pub deadline: Instant,
}

/// What was found and done.
#[derive(Debug)]
pub struct Collected {
    /// Subjects (hashed regular files) and non-files, redacted.
    pub outputs: Outputs,
    pub unattested: UnattestedOutputs,
    pub summary: OutputSummary,
    /// Secrets found in names, link targets, extended attributes and contents.
    pub leaks: Vec<Leak>,
}

/// A regular file to hash: its real path (to open) and the name it is recorded under.
#[derive(Debug)]
struct FileEntry {
    rel: String,
    shown: String,
    dev: u64,
    ino: u64,
    size: u64,
}

/// `name` as text: UTF-8 kept, `\` doubled, control characters as `\u{N}`,
/// other bytes as `\xNN`. Never contains a terminal escape or a newline.
pub fn escape_name(name: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(name.len());
    for chunk in name.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => s.push_str("\\\\"),
                c if c.is_control() => {
                    let _ = write!(s, "\\u{{{:x}}}", c as u32);
                }
                c => s.push(c),
            }
        }
        for b in chunk.invalid() {
            let _ = write!(s, "\\x{b:02x}");
        }
    }
    s
}

/// Why `rel` cannot be a subject name, if it cannot.
fn unattestable(rel: &[u8]) -> Option<String> {
    let Ok(text) = std::str::from_utf8(rel) else {
        return Some("the name is not valid UTF-8, which a subject name must be".into());
    };
    if text.chars().any(char::is_control) {
        return Some("the name holds control characters".into());
    }
    if rel.len() > MAX_SUBJECT_PATH {
        return Some(format!("the path is longer than {MAX_SUBJECT_PATH} bytes"));
    }
    check_path(text)
        .err()
        .map(|e| format!("the name cannot be a subject: {e}"))
}

fn kind_of(st: &Stat) -> FileType {
    FileType::from_raw_mode(st.st_mode)
}

/// The mode an entry gets back: no setuid, setgid or world-write; the owner
/// may read it, and enter it if it is a directory.
fn narrowed(st: &Stat) -> u32 {
    let mode = st.st_mode & 0o7777;
    let owner = if kind_of(st) == FileType::Directory {
        0o500
    } else {
        0o400
    };
    (mode & !(0o6000 | 0o002)) | owner
}

/// Whether an extended attribute is removed at hand-back: all but LSM labels
/// (`security.*`), which the job cannot set; file capabilities are removed.
fn strip_xattr(name: &[u8]) -> bool {
    !name.starts_with(b"security.") || name == b"security.capability"
}

/// One directory being walked.
struct Frame {
    dev: u64,
    ino: u64,
    names: Vec<CString>,
    next: usize,
    /// Length of the walker's path before this directory's name was added.
    path_len: usize,
    /// Whether the walker's path was already cut at [`MAX_SUBJECT_PATH`] then.
    deep: bool,
}

/// The walk's state and findings.
struct Walker<'a> {
    uid: Uid,
    gid: Gid,
    patterns: &'a Patterns,
    max_entries: u64,
    /// Path of the current directory under the root (cut at the limit).
    path: Vec<u8>,
    /// Whether `path` was cut (the current directory is deeper than the limit).
    deep: bool,
    files: Vec<FileEntry>,
    /// Regular files past the entry limit: counted, not kept.
    dropped_files: u64,
    other: Vec<NonFile>,
    unattested: UnattestedOutputs,
    summary: OutputSummary,
    leaks: Vec<Leak>,
}

impl Walker<'_> {
    fn unattested(&mut self, path: String, reason: String) {
        self.unattested.count += 1;
        if self.unattested.entries.len() < MAX_LISTED {
            self.unattested
                .entries
                .push(UnattestedEntry { path, reason });
        }
    }

    /// Redacted, escaped text of raw bytes; secrets found are leaks at `place`.
    fn shown(&mut self, raw: &[u8], place: &str) -> String {
        if self.patterns.is_empty() {
            return escape_name(raw);
        }
        let (clean, seen) = self.patterns.redact_bytes(raw);
        let shown = escape_name(&clean);
        for secret in seen {
            self.leaks.push(Leak {
                secret,
                place: format!("{place}{shown}"),
            });
        }
        shown
    }

    /// The entry's path under the root (`None` past the length limit) and its
    /// shown form (redacted, escaped; marked `…` where the path was cut).
    fn entry_path(&mut self, name: &CStr) -> (Option<Vec<u8>>, String) {
        let name = name.to_bytes();
        if self.deep {
            let head = escape_name(&self.path);
            let shown = format!("{head}/…/{}", escape_name(name));
            let (clean, _) = self.patterns.redact_bytes(shown.as_bytes());
            return (None, String::from_utf8_lossy(&clean).into_owned());
        }
        let mut rel = self.path.clone();
        if !rel.is_empty() {
            rel.push(b'/');
        }
        rel.extend_from_slice(name);
        let shown = self.shown(&rel, "output-name:");
        (Some(rel), shown)
    }

    /// Give one entry back to the launcher (owner, mode, extended attributes).
    fn hand_back(&mut self, dir: BorrowedFd, name: &CStr, st: &Stat, shown: &str) {
        let mut errors = Vec::new();
        if let Err(e) = rustix::fs::chownat(
            dir,
            name,
            Some(self.uid),
            Some(self.gid),
            AtFlags::SYMLINK_NOFOLLOW,
        ) {
            errors.push(format!("chown: {e}"));
        }
        if kind_of(st) != FileType::Symlink {
            let mode = narrowed(st);
            if st.st_mode & 0o6002 != 0 {
                self.summary.modes_changed += 1;
            }
            if mode != st.st_mode & 0o7777 {
                // No process of the job is left to swap the entry for a symlink.
                if let Err(e) =
                    rustix::fs::chmodat(dir, name, Mode::from_raw_mode(mode), AtFlags::empty())
                {
                    errors.push(format!("chmod: {e}"));
                }
            }
            let mut at = std::path::PathBuf::from(format!(
                "/proc/self/fd/{}",
                std::os::fd::AsRawFd::as_raw_fd(&dir)
            ));
            at.push(OsStr::from_bytes(name.to_bytes()));
            if let Err(e) = self.xattrs(XattrAt::Path(&at), shown) {
                errors.push(e);
            }
        }
        if !errors.is_empty() {
            self.unattested(
                shown.to_string(),
                format!("not handed back: {}", errors.join("; ")),
            );
        }
    }

    /// Scan and remove the extended attributes of one entry.
    fn xattrs(&mut self, at: XattrAt, shown: &str) -> Result<(), String> {
        let mut list = vec![0u8; MAX_XATTR];
        let n = match at.list(&mut list) {
            Ok(n) => n,
            Err(e) if e == rustix::io::Errno::NOTSUP => return Ok(()),
            Err(e) => return Err(format!("list extended attributes: {e}")),
        };
        let mut value = vec![0u8; MAX_XATTR];
        for name in list[..n].split(|b| *b == 0).filter(|n| !n.is_empty()) {
            let len = at.get(name, &mut value).unwrap_or(0);
            if !self.patterns.is_empty() {
                let (_, mut seen) = self.patterns.redact_bytes(name);
                seen.extend(self.patterns.redact_bytes(&value[..len]).1);
                seen.sort();
                seen.dedup();
                for secret in seen {
                    self.leaks.push(Leak {
                        secret,
                        place: format!("output-xattr:{shown}"),
                    });
                }
            }
            if strip_xattr(name) {
                at.remove(name)
                    .map_err(|e| format!("remove extended attribute: {e}"))?;
                self.summary.xattrs_removed += 1;
            }
        }
        Ok(())
    }

    /// Record one entry (not the root) and hand it back.
    fn visit(&mut self, dir: BorrowedFd, name: &CStr, st: &Stat) {
        self.summary.entries += 1;
        let (rel, shown) = self.entry_path(name);
        self.hand_back(dir, name, st, &shown);
        let kind = kind_of(st);
        if kind == FileType::RegularFile {
            self.summary.files += 1;
            self.summary.allocated_bytes = self
                .summary
                .allocated_bytes
                .saturating_add((st.st_blocks as u64).saturating_mul(512));
            self.summary.length_bytes = self.summary.length_bytes.saturating_add(st.st_size as u64);
        }
        if kind == FileType::Directory {
            return; // recorded when its contents are known (empty or not)
        }
        let rel = match rel.as_deref().map(|r| (r, unattestable(r))) {
            Some((r, None)) => r.to_vec(),
            Some((_, Some(reason))) => return self.unattested(shown, reason),
            None => {
                let reason = format!("the path is longer than {MAX_SUBJECT_PATH} bytes");
                return self.unattested(shown, reason);
            }
        };
        if self.summary.entries > self.max_entries {
            // Over the limit: counted, not kept (nothing will be hashed).
            self.dropped_files += u64::from(kind == FileType::RegularFile);
            return;
        }
        let rel = String::from_utf8(rel).expect("checked by unattestable");
        match kind {
            FileType::RegularFile => self.files.push(FileEntry {
                rel,
                shown,
                dev: st.st_dev,
                ino: st.st_ino,
                size: st.st_size as u64,
            }),
            FileType::Symlink => {
                // A secret in the link text counts as one in the link's name.
                let target = rustix::fs::readlinkat(dir, name, Vec::new()).ok().map(|t| {
                    let (clean, seen) = self.patterns.redact_bytes(t.as_bytes());
                    for secret in seen {
                        self.leaks.push(Leak {
                            secret,
                            place: format!("output-name:{shown}"),
                        });
                    }
                    escape_name(&clean)
                });
                self.other.push(NonFile {
                    path: shown,
                    kind: "symlink",
                    target,
                });
            }
            _ => self.other.push(NonFile {
                path: shown,
                kind: "special",
                target: None,
            }),
        }
    }

    /// A directory was entered: note it if it is empty.
    fn entered(&mut self, frame: &Frame, name: &CStr) {
        if !frame.names.is_empty() || self.summary.entries > self.max_entries {
            return;
        }
        let (rel, shown) = self.entry_path_of_current(name);
        match rel.as_deref().and_then(unattestable).or_else(|| {
            rel.is_none()
                .then(|| format!("the path is longer than {MAX_SUBJECT_PATH} bytes"))
        }) {
            None => self.summary.empty_directories.push(shown),
            Some(reason) => self.unattested(shown, format!("empty directory: {reason}")),
        }
    }

    /// Path of the directory just entered (the walker's path already includes it).
    fn entry_path_of_current(&mut self, name: &CStr) -> (Option<Vec<u8>>, String) {
        if self.deep {
            let shown = format!(
                "{}/…/{}",
                escape_name(&self.path),
                escape_name(name.to_bytes())
            );
            let (clean, _) = self.patterns.redact_bytes(shown.as_bytes());
            return (None, String::from_utf8_lossy(&clean).into_owned());
        }
        let rel = self.path.clone();
        let (clean, _) = self.patterns.redact_bytes(&rel);
        (Some(rel), escape_name(&clean))
    }
}

/// Where an entry's extended attributes are reached.
enum XattrAt<'a> {
    Fd(BorrowedFd<'a>),
    /// `/proc/self/fd/DIR/NAME`: the last component is not followed.
    Path(&'a Path),
}

impl XattrAt<'_> {
    fn list(&self, buf: &mut [u8]) -> rustix::io::Result<usize> {
        match self {
            XattrAt::Fd(fd) => rustix::fs::flistxattr(fd, buf),
            XattrAt::Path(p) => rustix::fs::llistxattr(*p, buf),
        }
    }

    fn get(&self, name: &[u8], buf: &mut [u8]) -> rustix::io::Result<usize> {
        let name = OsStr::from_bytes(name);
        match self {
            XattrAt::Fd(fd) => rustix::fs::fgetxattr(fd, name, buf),
            XattrAt::Path(p) => rustix::fs::lgetxattr(*p, name, buf),
        }
    }

    fn remove(&self, name: &[u8]) -> rustix::io::Result<()> {
        let name = OsStr::from_bytes(name);
        match self {
            XattrAt::Fd(fd) => rustix::fs::fremovexattr(fd, name),
            XattrAt::Path(p) => rustix::fs::lremovexattr(*p, name),
        }
    }
}

fn open_dir(dir: BorrowedFd, name: &CStr) -> rustix::io::Result<OwnedFd> {
    rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// The names in a directory (without `.` and `..`).
fn list_dir(fd: BorrowedFd) -> rustix::io::Result<Vec<CString>> {
    let mut dir = rustix::fs::Dir::read_from(fd)?;
    let mut names = Vec::new();
    while let Some(e) = dir.read() {
        let e = e?;
        let n = e.file_name();
        if n.to_bytes() != b"." && n.to_bytes() != b".." {
            names.push(n.to_owned());
        }
    }
    Ok(names)
}

/// Walk the whole tree under `root`, handing every entry back to `uid`:`gid`.
fn walk(root: &Path, w: &mut Walker) {
    let whole = |w: &mut Walker, reason: String| w.unattested(".".into(), reason);
    // The folder itself is the launcher's (a mount point inside the sandbox): by path.
    if let Err(e) = hand_back_root(root, w) {
        whole(w, format!("not handed back: {e}"));
    }
    let root_fd = match open_dir(rustix::fs::CWD, &path_c(root)) {
        Ok(fd) => fd,
        Err(e) => return whole(w, format!("cannot open the output folder: {e}")),
    };
    if let Err(e) = w.xattrs(XattrAt::Fd(root_fd.as_fd()), ".") {
        whole(w, format!("not handed back: {e}"));
    }
    let st = match rustix::fs::fstat(&root_fd) {
        Ok(st) => st,
        Err(e) => return whole(w, format!("cannot stat the output folder: {e}")),
    };
    let names = match list_dir(root_fd.as_fd()) {
        Ok(n) => n,
        Err(e) => return whole(w, format!("cannot list the output folder: {e}")),
    };
    let mut cur = root_fd;
    let mut stack = vec![Frame {
        dev: st.st_dev,
        ino: st.st_ino,
        names,
        next: 0,
        path_len: 0,
        deep: false,
    }];
    while let Some(top) = stack.last_mut() {
        let Some(name) = top.names.get(top.next).cloned() else {
            let done = stack.pop().expect("not empty");
            w.path.truncate(done.path_len);
            w.deep = done.deep;
            let Some(parent) = stack.last() else { break };
            match ascend(&cur, parent) {
                Ok(fd) => cur = fd,
                Err(e) => return whole(w, format!("the walk stopped: {e}")),
            }
            continue;
        };
        top.next += 1;
        let st = match rustix::fs::statat(&cur, &name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(e) => {
                let (_, shown) = w.entry_path(&name);
                w.unattested(shown, format!("cannot stat: {e}"));
                continue;
            }
        };
        w.visit(cur.as_fd(), &name, &st);
        if kind_of(&st) != FileType::Directory {
            continue;
        }
        match descend(&cur, &name, &st) {
            Ok((fd, names)) => {
                let frame = Frame {
                    dev: st.st_dev,
                    ino: st.st_ino,
                    names,
                    next: 0,
                    path_len: w.path.len(),
                    deep: w.deep,
                };
                push_name(w, &name);
                w.entered(&frame, &name);
                stack.push(frame);
                cur = fd;
            }
            Err(e) => {
                let (_, shown) = w.entry_path(&name);
                w.unattested(shown, format!("cannot enter the directory: {e}"));
            }
        }
    }
}

fn path_c(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap_or_default()
}

/// Add a directory's name to the walker's path, or mark it deep past the limit.
fn push_name(w: &mut Walker, name: &CStr) {
    let name = name.to_bytes();
    if w.deep || w.path.len() + 1 + name.len() > MAX_SUBJECT_PATH {
        w.deep = true;
        return;
    }
    if !w.path.is_empty() {
        w.path.push(b'/');
    }
    w.path.extend_from_slice(name);
}

fn descend(
    cur: &OwnedFd,
    name: &CStr,
    st: &Stat,
) -> Result<(OwnedFd, Vec<CString>), rustix::io::Errno> {
    let fd = open_dir(cur.as_fd(), name)?;
    let now = rustix::fs::fstat(&fd)?;
    if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino) {
        return Err(rustix::io::Errno::STALE);
    }
    let names = list_dir(fd.as_fd())?;
    Ok((fd, names))
}

/// Back to the parent directory, which must still be the one walked.
fn ascend(cur: &OwnedFd, parent: &Frame) -> Result<OwnedFd, String> {
    let fd = open_dir(cur.as_fd(), c"..").map_err(|e| format!("cannot open `..`: {e}"))?;
    let st = rustix::fs::fstat(&fd).map_err(|e| format!("cannot stat `..`: {e}"))?;
    if (st.st_dev, st.st_ino) != (parent.dev, parent.ino) {
        return Err("a directory was moved while the folder was walked".into());
    }
    Ok(fd)
}

fn hand_back_root(root: &Path, w: &mut Walker) -> std::io::Result<()> {
    std::os::unix::fs::lchown(root, Some(w.uid.as_raw()), Some(w.gid.as_raw()))?;
    let st = rustix::fs::statat(rustix::fs::CWD, root, AtFlags::SYMLINK_NOFOLLOW)?;
    if kind_of(&st) != FileType::Directory {
        return Err(std::io::Error::other(
            "the output folder is not a directory",
        ));
    }
    let mode = narrowed(&st);
    if mode != st.st_mode & 0o7777 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

/// Hand every entry under `root` back to `uid`:`gid` (see the module's
/// guarantees); errors are returned as unattested entries, never stop the walk.
pub fn hand_back_only(root: &Path, uid: u32, gid: u32) -> UnattestedOutputs {
    let patterns = Patterns::new(&[]);
    let mut w = walker(uid, gid, &patterns, u64::MAX);
    walk(root, &mut w);
    w.unattested
}

fn walker(uid: u32, gid: u32, patterns: &Patterns, max_entries: u64) -> Walker<'_> {
    Walker {
        uid: Uid::from_raw(uid),
        gid: Gid::from_raw(gid),
        patterns,
        max_entries,
        path: Vec::new(),
        deep: false,
        files: Vec::new(),
        dropped_files: 0,
        other: Vec::new(),
        unattested: UnattestedOutputs::default(),
        summary: OutputSummary::default(),
        leaks: Vec::new(),
    }
}

/// Take the output folder back to `uid`:`gid` and attest it: hand-back, then
/// limits, then hashing (and the content scan) in parallel until the deadline.
pub fn collect(
    root: &Path,
    uid: u32,
    gid: u32,
    limits: &Limits,
    patterns: &Arc<Patterns>,
) -> Collected {
    let mut w = walker(uid, gid, patterns, limits.max_entries);
    walk(root, &mut w);
    let over = over_limits(&w.summary, limits);
    let mut files = std::mem::take(&mut w.files);
    if let Some(reason) = over {
        w.unattested(".".into(), format!("{reason}; no file was hashed"));
        // The entry for the folder stands for every file that was not hashed.
        w.unattested.count += (files.len() as u64 + w.dropped_files).saturating_sub(1);
        files.clear();
    }
    let resources = hash_all(root, files, limits, patterns, &mut w);
    let mut other = std::mem::take(&mut w.other);
    other.sort_by(|a, b| a.path.cmp(&b.path));
    w.summary.empty_directories.sort_by(|a, b| path_order(a, b));
    Collected {
        outputs: Outputs {
            files: Manifest {
                shard_size: u64::MAX,
                resources,
            },
            other,
        },
        unattested: w.unattested,
        summary: w.summary,
        leaks: w.leaks,
    }
}

fn over_limits(s: &OutputSummary, limits: &Limits) -> Option<String> {
    if s.entries > limits.max_entries {
        return Some(format!(
            "the folder holds {} entries, over max_output_files = {}",
            s.entries, limits.max_entries
        ));
    }
    let bytes = s.allocated_bytes.max(s.length_bytes);
    (bytes > limits.max_bytes).then(|| {
        format!(
            "the files take {} bytes on disk and are {} bytes long, over max_output_size = {}",
            s.allocated_bytes, s.length_bytes, limits.max_bytes
        )
    })
}

/// A file's digest and the secrets in its content, or why it was not hashed.
type Hashed = Result<(Digest, Vec<String>), String>;

/// Hash (and scan) every file in parallel; failures become unattested entries.
fn hash_all(
    root: &Path,
    files: Vec<FileEntry>,
    limits: &Limits,
    patterns: &Arc<Patterns>,
    w: &mut Walker,
) -> Vec<Resource> {
    if files.is_empty() {
        return Vec::new();
    }
    let root_fd = match open_dir(rustix::fs::CWD, &path_c(root)) {
        Ok(fd) => fd,
        Err(e) => {
            w.unattested(".".into(), format!("cannot open the output folder: {e}"));
            w.unattested.count += files.len() as u64 - 1;
            return Vec::new();
        }
    };
    let late = AtomicBool::new(false);
    let results: Vec<(FileEntry, Hashed)> = files
        .into_par_iter()
        .map(|f| {
            let r = hash_one(root_fd.as_fd(), &f, limits.deadline, &late, patterns);
            (f, r)
        })
        .collect();
    let mut resources = Vec::new();
    for (f, r) in results {
        match r {
            Ok((digest, seen)) => {
                w.leaks.extend(seen.into_iter().map(|secret| Leak {
                    secret,
                    place: format!("output:{}", f.shown),
                }));
                resources.push(Resource {
                    path: f.shown,
                    size: f.size,
                    algorithm: Algorithm::Sha256,
                    digest,
                });
            }
            Err(reason) => w.unattested(f.shown, reason),
        }
    }
    resources.sort_by(|a, b| path_order(&a.path, &b.path));
    resources
}

/// Open `rel` under `root` one component at a time, following no symlink.
fn open_beneath(root: BorrowedFd, rel: &str) -> rustix::io::Result<OwnedFd> {
    let mut parts = rel.split('/').peekable();
    let mut dir: Option<OwnedFd> = None;
    while let Some(part) = parts.next() {
        let at = dir.as_ref().map(|d| d.as_fd()).unwrap_or(root);
        if parts.peek().is_none() {
            return rustix::fs::openat(
                at,
                part,
                OFlags::RDONLY
                    | OFlags::NOFOLLOW
                    | OFlags::NONBLOCK
                    | OFlags::NOCTTY
                    | OFlags::CLOEXEC,
                Mode::empty(),
            );
        }
        dir = Some(rustix::fs::openat(
            at,
            part,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?);
    }
    Err(rustix::io::Errno::INVAL)
}

/// SHA-256 of one file, checked to be the file the walk saw; its content is
/// scanned for secrets on the way.
fn hash_one(
    root: BorrowedFd,
    f: &FileEntry,
    deadline: Instant,
    late: &AtomicBool,
    patterns: &Arc<Patterns>,
) -> Hashed {
    let past = "the post-run deadline passed before it was hashed".to_string();
    if late.load(Ordering::Relaxed) {
        return Err(past);
    }
    let fd = open_beneath(root, &f.rel).map_err(|e| format!("cannot open: {e}"))?;
    let st = rustix::fs::fstat(&fd).map_err(|e| format!("cannot stat: {e}"))?;
    if kind_of(&st) != FileType::RegularFile || (st.st_dev, st.st_ino) != (f.dev, f.ino) {
        return Err("replaced after the walk".into());
    }
    let mut file = std::fs::File::from(fd);
    let mut scan = (!patterns.is_empty()).then(|| Redactor::with(patterns.clone()));
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 256 << 10];
    let mut total = 0u64;
    loop {
        if Instant::now() >= deadline {
            late.store(true, Ordering::Relaxed);
            return Err(past);
        }
        let n =
            std::io::Read::read(&mut file, &mut buf).map_err(|e| format!("cannot read: {e}"))?;
        if n == 0 {
            break;
        }
        total += n as u64;
        if total > f.size {
            return Err("grew while it was hashed".into());
        }
        h.update(&buf[..n]);
        if let Some(s) = scan.as_mut() {
            let _ = s.feed(&buf[..n]);
        }
    }
    if total != f.size {
        return Err("shrank while it was hashed".into());
    }
    let seen = scan
        .map(|mut s| {
            let _ = s.finish();
            s.seen()
        })
        .unwrap_or_default();
    Ok((Digest(h.finalize().into()), seen))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_escaped() {
        assert_eq!(escape_name(b"a\\b"), "a\\\\b");
        assert_eq!(escape_name(b"x\xffy"), "x\\xffy");
        assert_eq!(escape_name(b"t\x1b[2J\n"), "t\\u{1b}[2J\\u{a}");
        assert_eq!(escape_name("é.pt".as_bytes()), "é.pt");
    }

    #[test]
    fn which_names_cannot_be_subjects() {
        assert!(unattestable(b"1:epoch.pt").is_some());
        assert!(unattestable(b"a\\b").is_some());
        assert!(unattestable(b"bad\xff").is_some());
        assert!(unattestable(b"new\nline").is_some());
        assert!(unattestable(&vec![b'a'; MAX_SUBJECT_PATH + 1]).is_some());
        assert!(unattestable(b"dir/1:epoch.pt").is_none());
        assert!(unattestable(b"model.pt").is_none());
    }

    #[test]
    fn modes_are_narrowed() {
        let mut st: Stat = some_stat();
        st.st_mode = 0o106777; // regular, setuid, world-writable
        assert_eq!(narrowed(&st), 0o775);
        st.st_mode = 0o042000; // directory, setgid, mode 0
        assert_eq!(narrowed(&st), 0o500);
    }

    fn some_stat() -> Stat {
        rustix::fs::stat("/").expect("stat /")
    }

    #[test]
    fn lsm_labels_are_kept_the_rest_stripped() {
        assert!(strip_xattr(b"user.x"));
        assert!(strip_xattr(b"system.posix_acl_access"));
        assert!(strip_xattr(b"security.capability"));
        assert!(!strip_xattr(b"security.selinux"));
    }
}
