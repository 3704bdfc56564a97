//! Single-pass staging: copy a file and hash it in the same read.
//!
//! Guarantees:
//! - The digest is computed over exactly the bytes written to the copy (or, for a reflink,
//!   read back from the copy itself), never over what the source holds afterwards: whatever the
//!   source does while it is read, the copy and its digest agree.
//! - Exactly `size` bytes are taken (the signed size); a source that shrinks while it is read is
//!   an error, one that grows is cut at `size` (and the digest decides).
//! - Holes are preserved: regions the source reports as holes (`SEEK_DATA`/`SEEK_HOLE`) are not
//!   written (the copy is sized with `ftruncate`, so they read as zeros) and are hashed as zeros.
//! - The digest is the one [`sealrun_verifier::digest::hash_file`] gives for the same bytes:
//!   plain SHA-256 up to the shard size, `sha256-shards` (shards hashed in parallel) above it.
//! - Each source byte is read once. [`clone_hash`] shares blocks with `FICLONE` where the
//!   filesystem allows it and then reads the clone once.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use rayon::prelude::*;
use sealrun_verifier::digest::{Algorithm, Digest, PageBuf};
use sha2::{Digest as _, Sha256};

/// Read buffer: small enough to stay in cache while it is hashed (as the verifier's).
const BUF: usize = sealrun_verifier::digest::READ_BUF;
static ZEROS: [u8; BUF] = [0u8; BUF];

thread_local! {
    /// On a page boundary, as the verifier's (reads into a buffer at an odd offset in a page
    /// cost 2.5 times the system time).
    static BUFFER: std::cell::RefCell<Box<PageBuf>> =
        std::cell::RefCell::new(Box::new(PageBuf([0u8; BUF])));
}

fn shrunk() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "the file shrank while it was copied",
    )
}

/// Hash `len` zero bytes.
fn hash_zeros(h: &mut Sha256, mut len: u64) {
    while len > 0 {
        let n = len.min(BUF as u64) as usize;
        h.update(&ZEROS[..n]);
        len -= n as u64;
    }
}

/// Copy (when `dst` is given) and hash `[start, end)` of `src` that `SEEK_DATA` says is data.
fn data_range(
    src: &File,
    dst: Option<&File>,
    h: &mut Sha256,
    mut pos: u64,
    end: u64,
) -> io::Result<()> {
    BUFFER.with_borrow_mut(|buf| {
        let buf = &mut buf.0;
        while pos < end {
            let want = buf.len().min((end - pos) as usize);
            let n = src.read_at(&mut buf[..want], pos)?;
            if n == 0 {
                return Err(shrunk());
            }
            if let Some(d) = dst {
                d.write_all_at(&buf[..n], pos)?;
            }
            h.update(&buf[..n]);
            pos += n as u64;
        }
        Ok(())
    })
}

/// The next data region at or after `pos`, as `(start, end)`, clipped to `end`; `None` when
/// the rest is a hole. Filesystems without hole support report all of it as data.
fn next_data(src: &File, pos: u64, end: u64) -> io::Result<Option<(u64, u64)>> {
    use rustix::fs::{seek, SeekFrom};
    let start = match seek(src, SeekFrom::Data(pos)) {
        Ok(s) => s,
        Err(rustix::io::Errno::NXIO) => return Ok(None),
        Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOTSUP) => return Ok(Some((pos, end))),
        Err(e) => return Err(e.into()),
    };
    if start >= end {
        return Ok(None);
    }
    let stop = seek(src, SeekFrom::Hole(start)).unwrap_or(end).min(end);
    Ok(Some((start, stop.max(start + 1).min(end))))
}

/// SHA-256 of `[start, start+len)` of `src`, writing the data regions to `dst` at the same
/// offsets (holes are hashed as zeros and left unwritten).
fn hash_range(src: &File, dst: Option<&File>, start: u64, len: u64) -> io::Result<Digest> {
    let mut h = Sha256::new();
    let end = start + len;
    let mut pos = start;
    while pos < end {
        match next_data(src, pos, end)? {
            None => {
                hash_zeros(&mut h, end - pos);
                pos = end;
            }
            Some((from, to)) => {
                hash_zeros(&mut h, from - pos);
                data_range(src, dst, &mut h, from, to)?;
                pos = to;
            }
        }
    }
    Ok(Digest(h.finalize().into()))
}

/// The digest of the first `size` bytes of `src` under `shard_size`, copying them into `dst`
/// (a new, empty file) when it is given: one read of each byte.
pub fn copy_hash(
    src: &File,
    dst: Option<&File>,
    size: u64,
    shard_size: u64,
) -> io::Result<(Algorithm, Digest)> {
    if let (Some(d), true) = (dst, size > BUF as u64) {
        // Holes stay holes: regions never written read as zeros. (A small file is written
        // whole below, so it needs no sizing.)
        d.set_len(size)?;
    }
    let algorithm = Algorithm::for_size(size, shard_size);
    if algorithm == Algorithm::Sha256 {
        if size <= BUF as u64 {
            // Small files: one read, no hole probing, every byte written.
            let mut h = Sha256::new();
            data_range(src, dst, &mut h, 0, size)?;
            return Ok((algorithm, Digest(h.finalize().into())));
        }
        return Ok((algorithm, hash_range(src, dst, 0, size)?));
    }
    let shards = size.div_ceil(shard_size);
    let digests = (0..shards)
        .into_par_iter()
        .map(|i| {
            let start = i * shard_size;
            hash_range(src, dst, start, shard_size.min(size - start))
        })
        .collect::<io::Result<Vec<Digest>>>()?;
    let mut h = Sha256::new();
    for d in &digests {
        h.update(d.0);
    }
    Ok((algorithm, Digest(h.finalize().into())))
}

/// Try to make `dst` (new, empty) share `src`'s blocks (`FICLONE`); on success hash the clone
/// (one read, of the copy itself) and check it holds exactly `size` bytes. `Ok(None)` when the
/// filesystem cannot clone (then copy with [`copy_hash`]).
pub fn clone_hash(
    src: &File,
    dst: &File,
    size: u64,
    shard_size: u64,
) -> io::Result<Option<(Algorithm, Digest)>> {
    if rustix::fs::ioctl_ficlone(dst, src).is_err() {
        return Ok(None);
    }
    let now = dst.metadata()?.len();
    if now != size {
        return Err(io::Error::other(format!(
            "the file changed while it was cloned ({size} bytes listed, {now} cloned)"
        )));
    }
    copy_hash(dst, None, size, shard_size).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sealrun_verifier::digest::hash_file;
    use std::io::{Seek, SeekFrom, Write};

    fn check(data_at: &[(u64, &[u8])], size: u64, shard: u64) {
        let t = tempfile::tempdir().unwrap();
        let (a, b) = (t.path().join("a"), t.path().join("b"));
        let mut f = File::create(&a).unwrap();
        for (at, bytes) in data_at {
            f.seek(SeekFrom::Start(*at)).unwrap();
            f.write_all(bytes).unwrap();
        }
        f.set_len(size).unwrap();
        drop(f);
        let src = File::open(&a).unwrap();
        let dst = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&b)
            .unwrap();
        let (alg, d) = copy_hash(&src, Some(&dst), size, shard).unwrap();
        let (alg2, d2, _) = hash_file(&a, shard).unwrap();
        assert_eq!((alg, d), (alg2, d2), "same digest as the two-pass hash");
        assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
        assert_eq!(
            hash_file(&b, shard).unwrap().1,
            d,
            "the copy has that digest"
        );
    }

    #[test]
    fn single_pass_equals_two_pass_plain_sharded_and_sparse() {
        check(&[(0, b"abc")], 3, 1 << 20);
        check(&[], 0, 1 << 20);
        let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        check(&[(0, &big)], big.len() as u64, 1 << 20);
        check(&[(0, &big)], big.len() as u64, 65536);
        // Sparse: data, a hole of several MiB, data, a trailing hole.
        check(&[(0, b"head"), (8 << 20, &big)], 12 << 20, 1 << 20);
        check(&[(5 << 20, b"mid")], 9 << 20, 64 << 20);
    }

    #[test]
    fn holes_stay_holes() {
        let t = tempfile::tempdir().unwrap();
        let a = t.path().join("a");
        let f = File::create(&a).unwrap();
        f.set_len(256 << 20).unwrap();
        f.write_all_at(b"x", 100 << 20).unwrap();
        drop(f);
        let b = t.path().join("b");
        let dst = File::create_new(&b).unwrap();
        copy_hash(&File::open(&a).unwrap(), Some(&dst), 256 << 20, 64 << 20).unwrap();
        use std::os::unix::fs::MetadataExt;
        let blocks = std::fs::metadata(&b).unwrap().blocks();
        assert!(
            blocks * 512 < 8 << 20,
            "copy of a sparse file allocated {blocks} blocks"
        );
    }

    #[test]
    fn a_source_that_shrinks_is_an_error() {
        let t = tempfile::tempdir().unwrap();
        let a = t.path().join("a");
        std::fs::write(&a, b"short").unwrap();
        let dst = File::create_new(t.path().join("b")).unwrap();
        let e = copy_hash(&File::open(&a).unwrap(), Some(&dst), 10, 1 << 20).unwrap_err();
        assert!(e.to_string().contains("shrank"), "{e}");
    }
}
