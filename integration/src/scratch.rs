//! Scratch filesystems for fault tests: a private mount namespace (held by a `sleep` the test
//! owns) with a small tmpfs, an ext4 image on a loop device, or an XFS image with reflink (blocks
//! shared between files), mounted at a folder of the test's own temp dir. Nothing is mounted in the host's namespace: the mount, and with it the loop
//! device (auto-cleared), go away when the holder is killed on drop.
//!
//! The faults are real: a full tmpfs answers ENOSPC; an ext4 filesystem shut down with
//! `EXT4_IOC_SHUTDOWN` (as xfstests do) answers EIO to every later operation.

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

use crate::text;

/// `_IOR('X', 125, __u32)`: shut an ext4 filesystem down (fs/ext4/ext4.h).
const EXT4_IOC_SHUTDOWN: libc::c_ulong = 0x8004_587d;
/// Shut down without flushing the journal: the disk "died".
const EXT4_GOING_FLAGS_NOLOGFLUSH: u32 = 2;

/// A private mount namespace with a scratch filesystem at `mnt`.
pub struct Scratch {
    holder: Child,
    mnt: PathBuf,
    image: Option<PathBuf>,
}

impl Scratch {
    /// A tmpfs of `size` (mount syntax, e.g. `1m`) at `mnt`.
    pub fn new(mnt: &Path, size: &str) -> Scratch {
        let s = Scratch::namespace(mnt, None);
        let opts = format!("size={size},mode=0755");
        s.mount(&["-t", "tmpfs", "-o", &opts, "tmpfs"], "tmpfs");
        s
    }

    /// An ext4 filesystem of `mib` MiB at `mnt`, its image at `image` (a file the test owns).
    pub fn ext4(mnt: &Path, image: &Path, mib: u64) -> Scratch {
        let f = std::fs::File::create(image).unwrap();
        f.set_len(mib << 20).unwrap();
        let m = Command::new("mkfs.ext4")
            .args(["-q", "-F"])
            .arg(image)
            .output()
            .expect("mkfs.ext4 (e2fsprogs)");
        assert!(m.status.success(), "mkfs.ext4: {}", text(&m));
        let s = Scratch::namespace(mnt, Some(image));
        s.mount_image();
        s
    }

    /// An XFS filesystem with reflink (`FICLONE` shares blocks) of `mib` MiB (XFS needs 300 or
    /// more) at `mnt`, its image at `image`; its root is 0755, owned by root.
    pub fn xfs(mnt: &Path, image: &Path, mib: u64) -> Scratch {
        let f = std::fs::File::create(image).unwrap();
        f.set_len(mib << 20).unwrap();
        let m = Command::new("mkfs.xfs")
            .args(["-q", "-f", "-m", "reflink=1"])
            .arg(image)
            .output()
            .expect("mkfs.xfs (xfsprogs)");
        assert!(m.status.success(), "mkfs.xfs: {}", text(&m));
        let s = Scratch::namespace(mnt, Some(image));
        s.mount(&["-t", "xfs", "-o", "loop", image.to_str().unwrap()], "xfs");
        s
    }

    /// Free space of the scratch filesystem, in KiB (`df`).
    pub fn free_kib(&self) -> u64 {
        let out = self.run(
            Command::new("df")
                .args(["-k", "--output=avail"])
                .arg(&self.mnt),
        );
        assert!(out.status.success(), "df: {}", text(&out));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .and_then(|l| l.trim().parse().ok())
            .expect("df's available KiB")
    }

    fn namespace(mnt: &Path, image: Option<&Path>) -> Scratch {
        std::fs::create_dir_all(mnt).unwrap();
        let holder = Command::new("unshare")
            .args(["-m", "--propagation", "private", "sleep", "600"])
            .spawn()
            .unwrap();
        let s = Scratch {
            holder,
            mnt: mnt.to_path_buf(),
            image: image.map(Path::to_path_buf),
        };
        // unshare has exec'd sleep once its namespace differs from ours.
        let t0 = Instant::now();
        while std::fs::read_link(format!("/proc/{}/ns/mnt", s.holder.id())).ok()
            == std::fs::read_link("/proc/self/ns/mnt").ok()
        {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "unshare -m did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        s
    }

    fn mount(&self, args: &[&str], what: &str) {
        let m = self.run(Command::new("mount").args(args).arg(&self.mnt));
        assert!(m.status.success(), "mount {what}: {}", text(&m));
    }

    fn mount_image(&self) {
        let image = self.image.as_ref().expect("an ext4 scratch").clone();
        let image = image.to_str().unwrap();
        self.mount(&["-t", "ext4", "-o", "loop", image], "ext4");
        // Everyone may write, as on a shared records folder; tests narrow it where they need to.
        std::fs::set_permissions(
            self.view(&self.mnt),
            std::os::unix::fs::PermissionsExt::from_mode(0o777),
        )
        .unwrap();
    }

    /// Run `cmd` inside the namespace.
    pub fn run(&self, cmd: &mut Command) -> Output {
        self.command(cmd).output().unwrap()
    }

    /// `cmd` wrapped to run inside the namespace, in `cmd`'s folder, with `cmd`'s environment.
    pub fn command(&self, cmd: &Command) -> Command {
        let mut c = Command::new("nsenter");
        // `cd` inside the namespace (nsenter's --wd keeps the folder as seen from outside, where
        // the scratch filesystem is not mounted).
        let dir = cmd.get_current_dir().unwrap_or(Path::new("/"));
        c.args(["-t", &self.holder.id().to_string(), "-m", "--"]);
        c.args(["sh", "-c", "cd \"$0\" && exec \"$@\""]).arg(dir);
        c.arg(cmd.get_program()).args(cmd.get_args());
        c.envs(cmd.get_envs().filter_map(|(k, v)| v.map(|v| (k, v))));
        c
    }

    /// `path` (under the mount) as this process sees the namespace's files.
    pub fn view(&self, path: &Path) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root", self.holder.id()))
            .join(path.strip_prefix("/").unwrap())
    }

    /// Fill the filesystem: a file of zeros until ENOSPC.
    pub fn fill(&self) {
        let mut f = std::fs::File::create(self.view(&self.mnt.join("filler"))).unwrap();
        let block = vec![0u8; 64 << 10];
        loop {
            if let Err(e) = std::io::Write::write_all(&mut f, &block) {
                assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}");
                break;
            }
        }
    }

    /// Remove what [`Scratch::fill`] wrote.
    pub fn free(&self) {
        std::fs::remove_file(self.view(&self.mnt.join("filler"))).unwrap();
    }

    /// Shut the ext4 filesystem down: from now on every operation on it fails with EIO.
    pub fn shutdown(&self) {
        let root = std::fs::File::open(self.view(&self.mnt)).unwrap();
        let mut flags = EXT4_GOING_FLAGS_NOLOGFLUSH;
        // SAFETY: the ioctl reads one u32 through the pointer, which lives across the call; the
        // descriptor is the open root of the scratch filesystem.
        let r = unsafe { libc::ioctl(root.as_raw_fd(), EXT4_IOC_SHUTDOWN as _, &mut flags) };
        assert_eq!(
            r,
            0,
            "EXT4_IOC_SHUTDOWN: {}",
            std::io::Error::last_os_error()
        );
    }

    /// The disk "comes back": unmount the shut-down filesystem and mount its image again (the
    /// journal is replayed).
    pub fn remount(&self) {
        let u = self.run(Command::new("umount").arg(&self.mnt));
        assert!(u.status.success(), "umount: {}", text(&u));
        self.mount_image();
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}
