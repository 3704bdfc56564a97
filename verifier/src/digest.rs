//! SHA-256 digests of bytes and files, streaming with bounded memory.
//!
//! Guarantees: a file is read through a fixed-size buffer (never loaded whole);
//! files larger than the shard size are split into fixed-size shards hashed in
//! parallel, and their digest is the SHA-256 of the concatenated shard digests
//! (`sha256-shards`), so the same bytes and shard size always give the same digest.
//! Files up to the shard size get a plain SHA-256, identical to `sha256sum`.

use std::fmt;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;
use std::str::FromStr;

use rayon::prelude::*;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest as _, Sha256};

/// Default shard size: 64 MiB. Large enough that per-shard overhead is noise,
/// small enough that a 2 GiB file yields 32 shards to spread over the cores.
pub const DEFAULT_SHARD_SIZE: u64 = 64 << 20;

/// Size of the read buffer used for every file and shard. Small enough to stay in
/// the L2 cache: the kernel copies page-cache data into it and SHA-256 reads it
/// back while it is still hot (256 KiB buffers cost 5x more system time here).
pub const READ_BUF: usize = 64 << 10;

/// A read buffer on a page boundary: the kernel copies file pages into it page for page
/// (reads into a buffer at an odd offset in a page took 2.5 times the system time here).
#[repr(C, align(4096))]
pub struct PageBuf(pub [u8; READ_BUF]);

thread_local! {
    /// One read buffer per worker thread, reused for every file it hashes.
    static BUF: std::cell::RefCell<Box<PageBuf>> =
        std::cell::RefCell::new(Box::new(PageBuf([0u8; READ_BUF])));
}

/// A SHA-256 digest.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Digest(Sha256::digest(bytes).into())
    }

    /// Lowercase hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.to_hex())
    }
}

/// The value of each hex digit (either case); 0xff for any other byte.
const HEX: [u8; 256] = {
    let mut t = [0xffu8; 256];
    let mut i = 0;
    while i < 10 {
        t[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        t[b'a' as usize + i] = 10 + i as u8;
        t[b'A' as usize + i] = 10 + i as u8;
        i += 1;
    }
    t
};

/// A string that is not 64 lowercase or uppercase hex digits.
#[derive(Debug, thiserror::Error)]
#[error("not a sha256 hex digest: {0:?} (expected 64 hex digits)")]
pub struct BadHex(pub String);

impl FromStr for Digest {
    type Err = BadHex;
    fn from_str(s: &str) -> Result<Self, BadHex> {
        let bad = || BadHex(s.chars().take(80).collect());
        let b = s.as_bytes();
        if b.len() != 64 {
            return Err(bad());
        }
        // A table, not `hex::decode_to_slice`: a signature of 10,000 files holds 640,000 hex
        // digits, and decoding them was a tenth of checking it.
        let mut out = [0u8; 32];
        for (o, pair) in out.iter_mut().zip(b.chunks_exact(2)) {
            let (hi, lo) = (HEX[usize::from(pair[0])], HEX[usize::from(pair[1])]);
            if (hi | lo) & 0xf0 != 0 {
                return Err(bad());
            }
            *o = hi << 4 | lo;
        }
        Ok(Digest(out))
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// How a file's digest was computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Algorithm {
    /// SHA-256 of the whole content.
    #[serde(rename = "sha256")]
    Sha256,
    /// SHA-256 over the concatenated SHA-256 digests of consecutive shards
    /// of the manifest's `shard_size` (the last one may be shorter).
    #[serde(rename = "sha256-shards")]
    Sha256Shards,
}

impl Algorithm {
    /// The name used in manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha256Shards => "sha256-shards",
        }
    }

    /// The algorithm a file of `size` bytes gets under `shard_size`.
    pub fn for_size(size: u64, shard_size: u64) -> Self {
        if size > shard_size {
            Algorithm::Sha256Shards
        } else {
            Algorithm::Sha256
        }
    }
}

/// Hash `len` bytes of `reader` with a bounded buffer; fails if fewer are there.
fn hash_stream(reader: &mut impl Read, len: u64, buf: &mut [u8]) -> io::Result<(Digest, u64)> {
    let mut h = Sha256::new();
    let mut left = len;
    while left > 0 {
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = reader.read(&mut buf[..want])?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        left -= n as u64;
    }
    Ok((Digest(h.finalize().into()), len - left))
}

/// Digest of a file: plain SHA-256 up to `shard_size`, sharded above it.
///
/// Returns the algorithm, digest and the number of bytes read. The size is
/// taken from the open file, so a file that changes size while it is hashed
/// is reported as an I/O error rather than hashed inconsistently.
pub fn hash_file(path: &Path, shard_size: u64) -> io::Result<(Algorithm, Digest, u64)> {
    let mut file = open_read(path)?;
    let shard_size = shard_size.max(1);
    // Stream from the start; most files fit in one buffer and need no `stat`.
    // Only once a buffer fills up is the size asked for, to choose sharding.
    let streamed = BUF.with_borrow_mut(|buf| -> io::Result<Option<(Digest, u64)>> {
        let buf = &mut buf.0;
        let mut h = Sha256::new();
        let mut total = 0u64;
        let mut sized = false;
        loop {
            let n = file.read(buf)?;
            if n == 0 {
                return Ok(Some((Digest(h.finalize().into()), total)));
            }
            h.update(&buf[..n]);
            total += n as u64;
            if !sized && (total >= buf.len() as u64 || total > shard_size) {
                sized = true;
                if file.metadata()?.len() > shard_size {
                    return Ok(None);
                }
            }
            if total > shard_size {
                return Err(changed(path));
            }
        }
    })?;
    if let Some((d, n)) = streamed {
        return Ok((Algorithm::Sha256, d, n));
    }
    let size = file.metadata()?.len();
    let algorithm = Algorithm::for_size(size, shard_size);
    match algorithm {
        Algorithm::Sha256 => Err(changed(path)),
        Algorithm::Sha256Shards => {
            let shards = size.div_ceil(shard_size);
            let digests: Vec<Digest> = (0..shards)
                .into_par_iter()
                .map(|i| {
                    let start = i * shard_size;
                    let len = shard_size.min(size - start);
                    let mut f = File::open(path)?;
                    f.seek(SeekFrom::Start(start))?;
                    let (d, n) = BUF.with_borrow_mut(|buf| hash_stream(&mut f, len, &mut buf.0))?;
                    if n != len {
                        return Err(changed(path));
                    }
                    Ok(d)
                })
                .collect::<io::Result<_>>()?;
            let mut h = Sha256::new();
            for d in &digests {
                h.update(d.0);
            }
            Ok((algorithm, Digest(h.finalize().into()), size))
        }
    }
}

/// Whether a file listed with `size` bytes is hashed by [`hash_listed_file`] in one read: it
/// is smaller than the read buffer and not sharded.
pub fn reads_at_once(size: u64, shard_size: u64) -> bool {
    size < READ_BUF as u64 && size <= shard_size
}

/// What one read of a small listed file found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AtOnce {
    /// It holds exactly the listed size: its plain SHA-256.
    Hashed(Digest),
    /// It holds this many bytes instead (not hashed: the size already differs).
    Resized(u64),
}

/// Hash a small file (see [`reads_at_once`]) listed with `size` bytes, opened as
/// [`open_listed`] does. It is read with one `read` asking for `size + 1` bytes: a regular file
/// gives fewer bytes than asked for only at its end, so getting exactly `size` proves the end
/// without a second call (half the reads of a folder of small files). A file of another size
/// is not hashed (however large it has become): its size is returned.
pub fn hash_listed_file(mut file: File, size: u64) -> io::Result<AtOnce> {
    let size = usize::try_from(size)
        .ok()
        .filter(|&s| s < READ_BUF)
        .ok_or_else(|| io::Error::other("not a small file"))?;
    let want = size + 1;
    BUF.with_borrow_mut(|buf| {
        let buf = &mut buf.0[..want];
        let mut got = 0;
        loop {
            match file.read(&mut buf[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            // More than listed, or a short read that ends at the listed size (its end).
            if got == want || got == size {
                break;
            }
        }
        if got == size {
            return Ok(AtOnce::Hashed(Digest::of(&buf[..size])));
        }
        let now = if got == want {
            file.metadata()?.len()
        } else {
            got as u64
        };
        Ok(AtOnce::Resized(now))
    })
}

/// How a listed file is opened: read-only, close-on-exec, not through a symlink (one swapped in
/// since the listing is an error), and without blocking (a FIFO swapped in reads as empty
/// instead of hanging).
#[cfg(target_os = "linux")]
pub(crate) const LISTED_FLAGS: rustix::fs::OFlags = rustix::fs::OFlags::RDONLY
    .union(rustix::fs::OFlags::CLOEXEC)
    .union(rustix::fs::OFlags::NOFOLLOW)
    .union(rustix::fs::OFlags::NONBLOCK);

/// Open a listed file by its path (see [`LISTED_FLAGS`]).
#[cfg(target_os = "linux")]
pub fn open_listed(path: &Path) -> io::Result<File> {
    Ok(File::from(rustix::fs::open(
        path,
        LISTED_FLAGS,
        rustix::fs::Mode::empty(),
    )?))
}

#[cfg(all(unix, not(target_os = "linux")))]
pub fn open_listed(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
}

#[cfg(not(unix))]
pub fn open_listed(path: &Path) -> io::Result<File> {
    File::open(path)
}

/// Open `path` read-only (close-on-exec), as `File::open` does. On Linux in one system call:
/// musl's `open` follows an `O_CLOEXEC` open with an `fcntl(F_SETFD)`, one more call per file
/// (a sixth of the calls verifying a folder of small files makes).
#[cfg(target_os = "linux")]
fn open_read(path: &Path) -> io::Result<File> {
    use rustix::fs::{Mode, OFlags};
    let fd = rustix::fs::open(path, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())?;
    Ok(File::from(fd))
}

#[cfg(not(target_os = "linux"))]
fn open_read(path: &Path) -> io::Result<File> {
    File::open(path)
}

fn changed(path: &Path) -> io::Error {
    io::Error::other(format!(
        "{} changed size while it was hashed",
        path.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn plain_matches_sha256sum() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"abc").unwrap();
        let (a, d, n) = hash_file(&p, DEFAULT_SHARD_SIZE).unwrap();
        assert_eq!(a, Algorithm::Sha256);
        assert_eq!(n, 3);
        assert_eq!(
            d.to_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn sharded_is_digest_of_shard_digests() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        let mut f = File::create(&p).unwrap();
        let data: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
        f.write_all(&data).unwrap();
        drop(f);
        let (a, d, _) = hash_file(&p, 300).unwrap();
        assert_eq!(a, Algorithm::Sha256Shards);
        let mut cat = Vec::new();
        for chunk in data.chunks(300) {
            cat.extend_from_slice(&Digest::of(chunk).0);
        }
        assert_eq!(d, Digest::of(&cat));
    }

    #[test]
    fn a_small_listed_file_hashes_as_hash_file_or_says_its_new_size() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        for (listed, now) in [
            (0u64, 0usize),
            (0, 1),
            (5, 5),
            (5, 3),
            (5, 6),
            (100, 70_000),
            (100, 0),
        ] {
            std::fs::write(&p, vec![7u8; now]).unwrap();
            let (_, digest, size) = hash_file(&p, DEFAULT_SHARD_SIZE).unwrap();
            let file = open_listed(&p).unwrap();
            let want = if size == listed {
                AtOnce::Hashed(digest)
            } else {
                AtOnce::Resized(size)
            };
            let got = hash_listed_file(file, listed).unwrap();
            assert_eq!(got, want, "listed {listed}, now {now} bytes");
        }
    }

    #[test]
    #[cfg(unix)]
    fn a_symlink_swapped_in_after_the_listing_is_not_followed() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("target"), b"x").unwrap();
        std::os::unix::fs::symlink("target", d.path().join("link")).unwrap();
        assert!(open_listed(&d.path().join("link")).is_err());
    }

    #[test]
    fn hex_roundtrip_and_rejects_garbage() {
        let d = Digest::of(b"x");
        assert_eq!(d.to_hex().parse::<Digest>().unwrap(), d);
        assert_eq!(d.to_hex().to_uppercase().parse::<Digest>().unwrap(), d);
        assert!("zz".parse::<Digest>().is_err());
        // Every non-hex byte, at the first and the last place, is refused.
        for bad in (0u8..=255).filter(|b| !b.is_ascii_hexdigit()) {
            for at in [0, 63] {
                let mut s = d.to_hex().into_bytes();
                s[at] = bad;
                if let Ok(s) = String::from_utf8(s) {
                    assert!(s.parse::<Digest>().is_err(), "{bad:#x} at {at}");
                }
            }
        }
        let all: String = (0..32).map(|i| format!("{:02x}", i * 8)).collect();
        assert_eq!(all.parse::<Digest>().unwrap().to_hex(), all);
    }
}
