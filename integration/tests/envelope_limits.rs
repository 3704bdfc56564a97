//! A 100 MB envelope is refused quickly and without reading it into memory.
//! (Its own test binary, so the children's peak RSS measured here is its own.)

use std::io::Write;
use std::time::{Duration, Instant};

use sealrun_integration::{fails_with, ok, sealrun, verify, write_tree};

#[test]
fn hundred_megabyte_envelope_refused_fast_with_bounded_memory() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    ok(sealrun(dir, &["keygen", "--out", "k"]));
    write_tree(&dir.join("data"), &[("a", b"1")]);
    // A syntactically plausible envelope whose payload is 100 MB of base64.
    let mut f = std::fs::File::create(dir.join("big.sig")).unwrap();
    f.write_all(b"{\"payloadType\":\"application/vnd.in-toto+json\",\"payload\":\"")
        .unwrap();
    let chunk = vec![b'A'; 1 << 20];
    for _ in 0..100 {
        f.write_all(&chunk).unwrap();
    }
    f.write_all(b"\",\"signatures\":[]}").unwrap();
    drop(f);
    let start = Instant::now();
    let out = verify(
        dir,
        &[
            "artifact",
            "data",
            "--signature",
            "big.sig",
            "--key",
            "k.pub",
        ],
    );
    let took = start.elapsed();
    fails_with(
        out,
        1,
        &["envelope_too_large", "over the 16777216-byte limit"],
    );
    assert!(took < Duration::from_secs(5), "took {took:?}");
    // SAFETY: rusage is plain old data; all-zero is a valid value.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_CHILDREN with a valid, writable out-pointer.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
    assert_eq!(rc, 0);
    let peak_kib = ru.ru_maxrss;
    assert!(peak_kib < 64 * 1024, "a child peaked at {peak_kib} KiB");
}
