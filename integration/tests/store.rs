//! Single-pass staging and the verified store, with the real binaries: digests and records
//! equal to what hashing the copy gave, a tampered file named, store hits and misses recorded,
//! an entry changed behind the store's back found by `sealrun store verify`, concurrent first
//! runs filling one entry, a store another user owns refused, and `gc`.

use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use sealrun_integration::{
    bin, envelope_statement, fails_with, ok, sealrun, sha256_hex, RunFixture, RUN_DATA, RUN_SANDBOX,
};

/// Writes the sha256 of every input file the job sees to /out/sums.
const SUMS: &str = "import hashlib, os\nout = []\nfor d, _, fs in sorted(os.walk('/inputs/points')):\n    for f in sorted(fs):\n        p = os.path.join(d, f)\n        out.append(os.path.relpath(p, '/inputs/points') + ' ' + hashlib.sha256(open(p, 'rb').read()).hexdigest())\nopen('/out/sums', 'w').write('\\n'.join(out))\n";

/// Job NAME reading the fixture's signed `data` with `store = STORE` (a TOML value).
fn job(f: &RunFixture, name: &str, store: &str) -> String {
    std::fs::create_dir_all(f.dir().join(format!("{name}-code"))).unwrap();
    std::fs::write(f.dir().join(format!("{name}-code/sums.py")), SUMS).unwrap();
    let spec = format!(
        "name = {name:?}\ncommand = [\"python3\", \"/code/sums.py\"]\ncode = \"{name}-code\"\noutput = \"{name}-out\"\ntrust = \"trust.toml\"\nsigning_key = \"launcher.key\"\nstore = {store}\n[[input]]\nname = \"points\"\npath = \"data\"\nsignature = \"data.sig\"\n[sandbox]\n{RUN_SANDBOX}"
    );
    let file = format!("{name}.toml");
    std::fs::write(f.dir().join(&file), spec).unwrap();
    file
}

fn internal(record: &Path) -> serde_json::Value {
    envelope_statement(record)["predicate"]["buildDefinition"]["internalParameters"].clone()
}

fn staging(f: &RunFixture, name: &str) -> String {
    internal(&f.record(name))["staging"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// The fixture's dataset, re-signed with a sparse 3 MiB file and 1 MiB shards, so single-pass
/// staging has sharded files and holes to get right.
fn resign_with_sparse(f: &RunFixture) {
    let big = File::create(f.dir().join("data/sparse.bin")).unwrap();
    big.set_len(3 << 20).unwrap();
    big.write_all_at(b"middle", (3 << 20) / 2).unwrap();
    resign(f, &["--shard-size", "1048576"]);
}

/// Sign the fixture's `data` again (after files were added), with `extra` options.
fn resign(f: &RunFixture, extra: &[&str]) {
    let mut args = vec![
        "sign",
        "data",
        "--key",
        "reg.key",
        "--kind",
        "dataset",
        "--label",
        "classification=internal",
    ];
    args.extend_from_slice(extra);
    ok(sealrun(f.dir(), &args));
}

fn sums_of(f: &RunFixture, name: &str) -> String {
    std::fs::read_to_string(f.dir().join(format!("{name}-out/sums"))).unwrap()
}

#[test]
fn single_pass_staging_gives_the_signed_digests_and_names_a_tampered_file() {
    let f = RunFixture::new();
    resign_with_sparse(&f);
    let spec = job(&f, "plain", "\"off\"");
    ok(f.run(&spec));
    let ip = internal(&f.record("plain"));
    assert_eq!(ip["staging"], "single-pass", "{ip}");
    assert_eq!(ip["staging_inputs"]["points"], "single-pass", "{ip}");
    // The job read exactly the signed bytes, holes included.
    let want = format!(
        "points.csv {}\nsparse.bin {}",
        sha256_hex(&std::fs::read(f.dir().join("data/points.csv")).unwrap()),
        sha256_hex(&std::fs::read(f.dir().join("data/sparse.bin")).unwrap())
    );
    assert_eq!(sums_of(&f, "plain"), want);
    // The record's input digest is the signature's subject (the manifest root).
    let sig = envelope_statement(&f.dir().join("data.sig"));
    let st = envelope_statement(&f.record("plain"));
    let deps = st["predicate"]["buildDefinition"]["resolvedDependencies"].to_string();
    let root = sig["subject"][0]["digest"]["sha256"].as_str().unwrap();
    assert!(deps.contains(root), "{deps} lacks {root}");
    // One byte flipped in the sparse file (same size): refused, naming it.
    let p = f.dir().join("data/sparse.bin");
    File::options()
        .write(true)
        .open(&p)
        .unwrap()
        .write_all_at(b"M", (3 << 20) / 2)
        .unwrap();
    let spec = job(&f, "tampered", "\"off\"");
    fails_with(
        f.run(&spec),
        65,
        &["sparse.bin", "digest mismatch", "nothing ran"],
    );
    assert!(!f.dir().join("tampered-out/sums").exists());
}

#[test]
fn the_store_is_filled_once_then_bound_with_no_copy_and_no_hash() {
    let f = RunFixture::new();
    let store = f.dir().join("store");
    let s = format!("{:?}", store.display().to_string());
    ok(f.run(&job(&f, "first", &s)));
    assert_eq!(staging(&f, "first"), "store-miss");
    assert_eq!(
        std::fs::metadata(&store).unwrap().permissions().mode() & 0o7777,
        0o700
    );
    let entries: Vec<PathBuf> = std::fs::read_dir(store.join("entries"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    let file = entries[0].join("points.csv");
    assert_eq!(std::fs::metadata(&file).unwrap().mode() & 0o7777, 0o444);
    assert_eq!(
        std::fs::metadata(&entries[0]).unwrap().mode() & 0o7777,
        0o555
    );
    // Deduplicated by digest: the entry's file is the stored object.
    assert_eq!(std::fs::metadata(&file).unwrap().nlink(), 2);
    // The source changes (same size) after the entry was filled: a later run never reads it,
    // and the job gets the signed bytes.
    let signed = std::fs::read(f.dir().join("data/points.csv")).unwrap();
    let mut evil = signed.clone();
    evil[0] ^= 1;
    std::fs::write(f.dir().join("data/points.csv"), &evil).unwrap();
    ok(f.run(&job(&f, "second", &s)));
    assert_eq!(staging(&f, "second"), "store-hit");
    assert_eq!(
        sums_of(&f, "second"),
        format!("points.csv {}", sha256_hex(&signed))
    );
    // A hit still checks the source's file list and sizes (nothing read): an extra file is
    // refused as without the store.
    std::fs::write(f.dir().join("data/extra.csv"), b"unsigned").unwrap();
    fails_with(
        f.run(&job(&f, "extra", &s)),
        65,
        &["extra.csv", "extra file"],
    );
    std::fs::remove_file(f.dir().join("data/extra.csv")).unwrap();
    // With the store off, the same tampered source is refused.
    fails_with(
        f.run(&job(&f, "off", "\"off\"")),
        65,
        &["points.csv", "digest mismatch"],
    );
}

#[test]
fn store_verify_names_an_entry_changed_behind_the_stores_back() {
    let f = RunFixture::new();
    let store = f.dir().join("store");
    let s = format!("{:?}", store.display().to_string());
    ok(f.run(&job(&f, "fill", &s)));
    let st = store.display().to_string();
    let out = ok(sealrun(f.dir(), &["store", "verify", "--store", &st]));
    assert!(out.contains("1 entries verified"), "{out}");
    let entry = std::fs::read_dir(store.join("entries"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let file = entry.join("points.csv");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    File::options()
        .write(true)
        .open(&file)
        .unwrap()
        .write_all_at(b"9", 0)
        .unwrap();
    let key = entry.file_name().unwrap().to_string_lossy().to_string();
    let out = fails_with(
        sealrun(f.dir(), &["store", "verify", "--store", &st]),
        1,
        &["CHANGED", "points.csv", "digest differs", &key],
    );
    assert!(out.contains("1 problem(s) in 1 entries"), "{out}");
}

#[test]
fn concurrent_first_runs_fill_one_entry_and_the_others_reuse_it() {
    let f = RunFixture::new();
    // Enough bytes that the fill takes a while.
    let big: Vec<u8> = (0..(32u32 << 20)).map(|i| (i % 253) as u8).collect();
    std::fs::write(f.dir().join("data/big.bin"), &big).unwrap();
    resign(&f, &[]);
    let store = f.dir().join("store");
    let s = format!("{:?}", store.display().to_string());
    let names = ["c0", "c1", "c2", "c3"];
    let children: Vec<_> = names
        .iter()
        .map(|n| {
            let spec = job(&f, n, &s);
            Command::new(bin("sealrun"))
                .current_dir(f.dir())
                .args(["run", &spec, "--quiet"])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        ok(c.wait_with_output().unwrap());
    }
    let hows: Vec<String> = names.iter().map(|n| staging(&f, n)).collect();
    assert_eq!(
        hows.iter().filter(|h| *h == "store-miss").count(),
        1,
        "{hows:?}"
    );
    assert_eq!(
        hows.iter().filter(|h| *h == "store-hit").count(),
        3,
        "{hows:?}"
    );
    assert_eq!(std::fs::read_dir(store.join("entries")).unwrap().count(), 1);
    assert_eq!(std::fs::read_dir(store.join("tmp")).unwrap().count(), 0);
    let want = sums_of(&f, "c0");
    assert!(want.contains(&sha256_hex(&big)));
    for n in names {
        assert_eq!(sums_of(&f, n), want);
    }
}

#[test]
fn a_store_another_user_owns_or_others_can_read_is_refused() {
    let f = RunFixture::new();
    let store = f.dir().join("store");
    std::fs::create_dir(&store).unwrap();
    std::fs::set_permissions(&store, std::fs::Permissions::from_mode(0o755)).unwrap();
    let s = format!("{:?}", store.display().to_string());
    fails_with(
        f.run(&job(&f, "mode", &s)),
        125,
        &["store", "mode 0755", "must be 0700", "nothing ran"],
    );
    std::fs::set_permissions(&store, std::fs::Permissions::from_mode(0o700)).unwrap();
    if nix_euid() == 0 {
        // Root runs from a store another user owns (and so could have planted entries in).
        std::os::unix::fs::chown(&store, Some(65534), None).unwrap();
        fails_with(
            f.run(&job(&f, "owner", &s)),
            125,
            &[
                "owned by uid 65534, not by the launcher (uid 0)",
                "nothing ran",
            ],
        );
        assert!(!f.dir().join("owner-out/sums").exists());
    }
}

#[test]
fn gc_removes_unused_entries_and_their_files() {
    let f = RunFixture::new();
    let store = f.dir().join("store");
    let s = format!("{:?}", store.display().to_string());
    ok(f.run(&job(&f, "a", &s)));
    let st = store.display().to_string();
    let out = ok(sealrun(
        f.dir(),
        &["store", "gc", "--store", &st, "--older-than", "1h"],
    ));
    assert!(out.contains("removed 0 entries"), "{out}");
    let out = ok(sealrun(
        f.dir(),
        &["store", "gc", "--store", &st, "--keep-bytes", "0"],
    ));
    assert!(out.contains("removed 1 entries"), "{out}");
    assert_eq!(std::fs::read_dir(store.join("entries")).unwrap().count(), 0);
    assert_eq!(std::fs::read_dir(store.join("objects")).unwrap().count(), 0);
    ok(f.run(&job(&f, "b", &s)));
    assert_eq!(staging(&f, "b"), "store-miss");
}

fn nix_euid() -> u32 {
    std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(1)
}

#[test]
fn a_rootless_launcher_fills_its_own_store_then_reuses_it() {
    assert_eq!(
        std::fs::metadata("/proc/self").unwrap().uid(),
        0,
        "this test switches to uid 65534 with setpriv: run the suite as root"
    );
    let f = RunFixture::new();
    let dir = f.dir();
    let store = format!("{:?}", dir.join("store").display().to_string());
    let rootless = |name: &str| {
        // No memory limit: a rootless launcher has no cgroup to set one in.
        let spec = job(&f, name, &store);
        let t = std::fs::read_to_string(dir.join(&spec)).unwrap();
        std::fs::write(dir.join(&spec), t.replace("memory = \"512M\"\n", "")).unwrap();
        let chown = Command::new("chown")
            .args(["-R", "65534:65534"])
            .arg(dir)
            .output()
            .unwrap();
        assert!(chown.status.success());
        std::fs::set_permissions(dir, PermissionsExt::from_mode(0o755)).unwrap();
        let out = Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(bin("sealrun"))
            .args(["run", &spec, "--quiet"])
            .current_dir(dir)
            .output()
            .expect("setpriv (util-linux)");
        ok(out);
    };
    // Filling moves a sealed entry folder into place: the launcher's user must be able to.
    rootless("first");
    assert_eq!(staging(&f, "first"), "store-miss");
    rootless("second");
    assert_eq!(staging(&f, "second"), "store-hit");
    assert_eq!(
        sums_of(&f, "second"),
        format!("points.csv {}", sha256_hex(RUN_DATA))
    );
}

#[test]
fn store_from_a_config_file_and_the_spec_overrides_it() {
    let f = RunFixture::new();
    let dir = f.dir();
    // The spec leaves `store` out: the config file next to it says where, relative to itself.
    let spec = job(&f, "cfg", "\"x\"");
    let t = std::fs::read_to_string(dir.join(&spec)).unwrap();
    std::fs::write(dir.join(&spec), t.replace("store = \"x\"\n", "")).unwrap();
    std::fs::write(dir.join("sealrun.toml"), "store = \"cfg-store\"\n").unwrap();
    ok(f.run(&spec));
    assert_eq!(staging(&f, "cfg"), "store-miss");
    assert_eq!(
        std::fs::read_dir(dir.join("cfg-store/entries"))
            .unwrap()
            .count(),
        1
    );
    let shown = ok(sealrun(dir, &["config", "."]));
    assert!(shown.contains("cfg-store (from"), "{shown}");
    // `off` in the config file: copies, no store.
    std::fs::write(dir.join("sealrun.toml"), "store = \"off\"\n").unwrap();
    let spec = job(&f, "off", "\"x\"");
    let t = std::fs::read_to_string(dir.join(&spec)).unwrap();
    std::fs::write(dir.join(&spec), t.replace("store = \"x\"\n", "")).unwrap();
    ok(f.run(&spec));
    assert_eq!(staging(&f, "off"), "single-pass");
    // The spec's own value wins over the config file.
    let own = format!("{:?}", dir.join("own-store").display().to_string());
    ok(f.run(&job(&f, "own", &own)));
    assert_eq!(staging(&f, "own"), "store-miss");
    assert!(dir.join("own-store/entries").is_dir());
}

/// On a filesystem that shares blocks (XFS with reflink, on a loop device in a private mount
/// namespace), a first run clones every file into the store (`FICLONE`) and hashes the clone:
/// the job reads the signed bytes, the record says `store-miss`, and filling the entry took next
/// to no free space (a copy of the 16 MiB file would take 16 MiB). A source changed behind its
/// signature is refused as when copying, and leaves no entry.
#[test]
fn on_a_reflink_filesystem_a_first_run_clones_into_the_store() {
    let f = RunFixture::new();
    let big: Vec<u8> = (0..16u32 << 20).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(f.dir().join("data/big.bin"), &big).unwrap();
    resign(&f, &[]);
    let mnt = f.dir().join("fs");
    let s = sealrun_integration::scratch::Scratch::xfs(&mnt, &f.dir().join("fs.img"), 320);
    sealrun_integration::copy_tree(&f.dir().join("data"), &s.view(&mnt.join("data")));
    let on_xfs = |name: &str, store: &str| {
        let spec = job(&f, name, &format!("\"fs/{store}\""));
        let text = std::fs::read_to_string(f.dir().join(&spec)).unwrap();
        let text = text.replace("path = \"data\"", "path = \"fs/data\"");
        std::fs::write(f.dir().join(&spec), text).unwrap();
        s.run(
            Command::new(bin("sealrun"))
                .args(["run", &spec])
                .current_dir(f.dir()),
        )
    };
    let free = s.free_kib();
    ok(on_xfs("clone", "store"));
    let used = free.saturating_sub(s.free_kib());
    assert_eq!(staging(&f, "clone"), "store-miss");
    assert!(
        sums_of(&f, "clone").contains(&format!("big.bin {}", sha256_hex(&big))),
        "{}",
        sums_of(&f, "clone")
    );
    assert!(
        used < 4 << 10,
        "filling the entry took {used} KiB: copied, not cloned"
    );
    // The source changes behind its signature: a fill of a new store (nothing to reuse: the
    // first store holds these bytes as a verified object) refuses it, and leaves no entry.
    let src = s.view(&mnt.join("data/big.bin"));
    let file = std::fs::OpenOptions::new().write(true).open(&src).unwrap();
    file.write_all_at(b"X", 1 << 20).unwrap();
    drop(file);
    fails_with(
        on_xfs("tampered", "fresh"),
        65,
        &["big.bin", "digest mismatch"],
    );
    let entries = s.view(&mnt.join("fresh/entries"));
    assert_eq!(std::fs::read_dir(&entries).unwrap().count(), 0);
    assert_eq!(
        std::fs::read_dir(s.view(&mnt.join("fresh/tmp")))
            .unwrap()
            .count(),
        0,
        "a refused fill leaves nothing behind"
    );
}
