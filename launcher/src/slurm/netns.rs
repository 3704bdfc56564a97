//! The job network (`[sandbox] network = "job"`): the ranks of one Slurm job step on a node
//! share one network namespace, so they rendezvous on `127.0.0.1`.
//!
//! Guarantees: the namespace is pinned by a bind mount at `/run/sealrun/net/JOB.STEP`; under an
//! exclusive `flock` on `JOB.STEP.lock` the first rank makes it (a fresh namespace, `lo` up,
//! nothing else: no route leaves it) and every later rank opens the same one; each rank holds
//! a shared `flock` on `JOB.STEP.ref` while it runs (a rank that dies releases it with its
//! process); the rank that leaves last (it gets `JOB.STEP.ref` exclusively, under the lock)
//! unmounts and removes the pin, so the namespace goes with its last process. A connect from a
//! rank's sandbox reaches exactly [`JobNetns::allow`] (loopback, and for a step over several
//! nodes every node on the job's port range), mediated and observed by the sandbox's
//! supervisor; every other destination is refused and recorded. A step over several nodes also
//! gets a link to the host and its firewall ([`super::firewall`]), made with the namespace and
//! removed with it.
//! Only root can make and join it (the sandbox is cloned into it).

use std::fs::File;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use sealrun_sandbox::peer_connect::AllowRule;
use sealrun_verifier::record::JobNetwork;

use super::RankIdentity;

use super::firewall::{self, CrossNode};

/// Where the job namespaces are pinned.
pub const NET_DIR: &str = "/run/sealrun/net";

/// Why the job network could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("job network {path}: {what}: {source}")]
pub struct NetnsError {
    pub path: String,
    pub what: &'static str,
    #[source]
    pub source: std::io::Error,
}

/// This rank's hold on its job step's namespace; released (and, if last, removed) on drop.
#[derive(Debug)]
pub struct JobNetns {
    pin: PathBuf,
    lock_path: PathBuf,
    /// The namespace.
    pub fd: OwnedFd,
    /// Whether this rank made it.
    pub created: bool,
    /// The step's nodes, if it spans several (a link and a firewall come with the namespace).
    cross: Option<CrossNode>,
    held: Option<Flock<File>>,
}

fn err(path: &Path, what: &'static str) -> impl FnOnce(std::io::Error) -> NetnsError {
    let path = path.display().to_string();
    move |source| NetnsError { path, what, source }
}

fn nix_err(path: &Path, what: &'static str) -> impl FnOnce(nix::Error) -> NetnsError {
    let f = err(path, what);
    move |e| f(std::io::Error::from(e))
}

/// Lock the file at `path`; once locked, it is still the file at `path` (the rank that leaves
/// last removes the lock files while it holds them, so a waiter may have opened a removed one:
/// it tries again).
fn lock(path: &Path, how: FlockArg) -> Result<Flock<File>, NetnsError> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    loop {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
            .open(path)
            .map_err(err(path, "open lock"))?;
        let held = Flock::lock(f, how).map_err(|(_, e)| nix_err(path, "flock")(e))?;
        let ours = held.metadata().map_err(err(path, "fstat"))?;
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.ino() == ours.ino() && m.dev() == ours.dev() => return Ok(held),
            _ => continue,
        }
    }
}

/// Whether `pin` is a network namespace (a bind mount of one).
fn is_netns(pin: &Path) -> Option<File> {
    let f = File::open(pin).ok()?;
    // NS_GET_NSTYPE: the namespace type of an nsfs descriptor.
    const NS_GET_NSTYPE: libc::c_ulong = 0xb703;
    // SAFETY: an ioctl without arguments on a descriptor we own.
    let t = unsafe { libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(&f), NS_GET_NSTYPE as _) };
    (t == libc::CLONE_NEWNET).then_some(f)
}

/// Make a network namespace with `lo` up and pin it at `pin` (on a thread of its own, which
/// alone enters it, then ends); with `cross`, link it to the host behind its firewall.
fn create(pin: &Path, cross: Option<&CrossNode>) -> Result<File, NetnsError> {
    File::create(pin).map_err(err(pin, "create pin"))?;
    let target = pin.to_path_buf();
    let made = std::thread::spawn(move || -> Result<(), NetnsError> {
        let ns = "/proc/thread-self/ns/net";
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(nix_err(&target, "unshare"))?;
        sealrun_sandbox::loopback_up()
            .map_err(|e| err(&target, "lo up")(std::io::Error::from_raw_os_error(e)))?;
        nix::mount::mount(
            Some(ns),
            &target,
            None::<&str>,
            nix::mount::MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(nix_err(&target, "bind mount"))
    })
    .join()
    .map_err(|_| err(pin, "thread")(std::io::Error::other("panicked")))?;
    if let Err(e) = made {
        let _ = std::fs::remove_file(pin);
        return Err(e);
    }
    let file = is_netns(pin)
        .ok_or_else(|| err(pin, "pin")(std::io::Error::other("not a network namespace")))?;
    if let Some(c) = cross {
        let name = pin.file_name().unwrap_or_default().to_string_lossy();
        if let Err(e) = firewall::setup(pin, &name, c) {
            let _ = nix::mount::umount2(pin, nix::mount::MntFlags::MNT_DETACH);
            let _ = std::fs::remove_file(pin);
            return Err(err(pin, "link and firewall")(std::io::Error::other(e)));
        }
    }
    Ok(file)
}

impl JobNetns {
    /// Make or join the namespace of `rank`'s job step on this node (`JOB.STEP.NODE`); `ports`:
    /// the job's port range across nodes.
    pub fn acquire(rank: &RankIdentity, ports: (u16, u16)) -> Result<JobNetns, NetnsError> {
        let r = &rank.0;
        let name = format!("{}.{}", rank.step(), r.node.replace('/', "_"));
        let cross = CrossNode::of(&r.nodelist, &r.node, ports).map_err(|e| NetnsError {
            path: r.nodelist.clone(),
            what: "the step's nodes",
            source: std::io::Error::other(e),
        })?;
        Self::acquire_in(Path::new(NET_DIR), &name, cross)
    }

    /// Make or join the namespace `name` pinned in `dir`.
    pub fn acquire_in(
        dir: &Path,
        name: &str,
        cross: Option<CrossNode>,
    ) -> Result<JobNetns, NetnsError> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(err(dir, "create folder"))?;
        let pin = dir.join(name);
        let lock_path = dir.join(format!("{name}.lock"));
        let _mutex = lock(&lock_path, FlockArg::LockExclusive)?;
        let (file, created) = match is_netns(&pin) {
            Some(f) => (f, false),
            None => (create(&pin, cross.as_ref())?, true),
        };
        let held = lock(&dir.join(format!("{name}.ref")), FlockArg::LockShared)?;
        Ok(JobNetns {
            pin,
            lock_path,
            fd: OwnedFd::from(file),
            created,
            cross,
            held: Some(held),
        })
    }

    /// What a connect may reach: loopback (the namespace holds only the step's ranks on this
    /// node), and across nodes every node of the step on the job's port range.
    pub fn allow(&self) -> Vec<AllowRule> {
        let mut v = AllowRule::loopback().to_vec();
        v.extend(self.cross.iter().flat_map(CrossNode::allow));
        v
    }

    /// The record's description of this network.
    pub fn describe(&self) -> JobNetwork {
        JobNetwork {
            mode: "job".into(),
            namespace: self.pin.display().to_string(),
            created: self.created,
            allow: self.allow().iter().map(ToString::to_string).collect(),
        }
    }

    /// A descriptor of the namespace for the sandbox plan.
    pub fn fd(&self) -> Result<OwnedFd, NetnsError> {
        self.fd.try_clone().map_err(err(&self.pin, "dup"))
    }
}

impl Drop for JobNetns {
    fn drop(&mut self) {
        let Ok(_mutex) = lock(&self.lock_path, FlockArg::LockExclusive) else {
            return;
        };
        let Some(held) = self.held.take() else { return };
        // Shared to exclusive is not atomic: the shared lock goes first. Under the mutex no rank
        // joins meanwhile, so getting it exclusively means no other rank holds it: the last.
        if held.relock(FlockArg::LockExclusiveNonblock).is_err() {
            return;
        }
        if self.cross.is_some() {
            firewall::teardown(&self.pin.file_name().unwrap_or_default().to_string_lossy());
        }
        let _ = nix::mount::umount2(&self.pin, nix::mount::MntFlags::MNT_DETACH);
        let _ = std::fs::remove_file(&self.pin);
        let ref_path = self.pin.with_file_name(format!(
            "{}.ref",
            self.pin.file_name().unwrap_or_default().to_string_lossy()
        ));
        let _ = std::fs::remove_file(ref_path);
        let _ = std::fs::remove_file(&self.lock_path);
        drop(held);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> bool {
        nix::unistd::geteuid().is_root()
    }

    #[test]
    fn ranks_share_one_namespace_and_the_last_removes_it() {
        assert!(root(), "the job network needs root (CI runs as root)");
        let dir = tempfile::tempdir().unwrap();
        let a = JobNetns::acquire_in(dir.path(), "7.0", None).unwrap();
        let b = JobNetns::acquire_in(dir.path(), "7.0", None).unwrap();
        assert!(a.created && !b.created);
        let ino = |f: &OwnedFd| {
            nix::sys::stat::fstat(std::os::fd::AsRawFd::as_raw_fd(f))
                .unwrap()
                .st_ino
        };
        assert_eq!(ino(&a.fd), ino(&b.fd));
        let own = File::open("/proc/self/ns/net").unwrap();
        assert_ne!(
            ino(&a.fd),
            ino(&OwnedFd::from(own)),
            "not the host's namespace"
        );
        let pin = dir.path().join("7.0");
        drop(a);
        assert!(is_netns(&pin).is_some(), "still held by b");
        drop(b);
        assert!(!pin.exists(), "the last rank removes the pin");
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert!(left.is_empty(), "nothing is left: {left:?}");
        // A later step gets a fresh one.
        let c = JobNetns::acquire_in(dir.path(), "7.0", None).unwrap();
        assert!(c.created);
    }
}
