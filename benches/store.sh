#!/usr/bin/env bash
# The verified store and single-pass staging (#18), same run, warm page cache:
#
#  - 1 GiB dataset (8 x 128 MiB), trivial job (/bin/true):
#      first run (store miss)      vs `sealrun-verify artifact` alone   (goal <= 1.25x)
#      store off (single-pass)     vs `sealrun-verify artifact` alone
#      later runs (store hit)      vs `sealrun exec -- /bin/true`       (goal <= +50 ms)
#  - 10,000 x 16 KiB files: the same rows (goal first run <= 1.3x verify)
#  - both datasets on XFS with reflink (a loop device; root and mkfs.xfs): first run vs verify
#    there (files of 1 MiB and more are cloned, smaller ones copied)
#  - disk: the store's size after N runs of one dataset (one copy), staging left behind (none)
#  - peak RSS of the launcher (GNU time, %M) for every `sealrun run` row (goal < 64 MiB)
#  - small files: per-file cost of `sealrun-verify artifact` and of one `openssl dgst -sha256`
#
#   benches/store.sh [WORKDIR]     (default /tmp/sealrun-store-bench; ~2.3 GiB; RUNS=5;
#                                   SHAPES="big small", SHAPES= for the XFS rows alone)
#
# A benchmark, not a test: it asserts nothing. Needs root (the sandbox), python3, openssl.
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-/tmp/sealrun-store-bench}
runs=${RUNS:-5}
cargo build --release -j 2 --quiet -p sealrun-verifier -p sealrun-launcher
S=$PWD/target/x86_64-unknown-linux-musl/release/sealrun
V=$PWD/target/x86_64-unknown-linux-musl/release/sealrun-verify
mkdir -p "$work"
cd "$work"

if [ ! -f big.done ]; then
    rm -rf big && mkdir big
    for i in 0 1 2 3 4 5 6 7; do head -c $((128 << 20)) /dev/urandom > "big/f$i.bin"; done
    touch big.done
fi
if [ ! -f small.done ]; then
    rm -rf small && mkdir small
    python3 - <<'PY'
import os
for d in range(100):
    os.makedirs(f"small/d{d:03}", exist_ok=True)
    for f in range(100):
        with open(f"small/d{d:03}/f{f:03}.bin", "wb") as fh:
            fh.write(os.urandom(16 << 10))
PY
    touch small.done
fi
[ -f reg.key ] || "$S" keygen --out reg >/dev/null
[ -f launcher.key ] || "$S" keygen --out launcher >/dev/null
cat > trust.toml <<'T'
[[key]]
name = "registry"
public_key = "reg.pub"
kinds = ["dataset"]
[[key]]
name = "launcher"
public_key = "launcher.pub"
kinds = ["record", "checkpoint"]
T
for d in big small; do
    [ -f "$d.sig" ] || "$S" sign "$d" --key reg.key --kind dataset >/dev/null
done

# job DATA STORE: write job-DATA.toml (its output folder is emptied before each run by
# run.sh), print its path. DATA "-" is a job with no input at all.
job() {
    local input=""
    [ "$1" = - ] || input=$(printf '[[input]]\nname = "d"\npath = "%s"\nsignature = "%s.sig"\n' "$1" "$1")
    printf 'name = "bench"\ncommand = ["/bin/true"]\noutput = "out"\ntrust = "trust.toml"\nsigning_key = "launcher.key"\nstore = %s\n%s\n[sandbox]\nprofile = "default"\n' \
        "$2" "$input" > "job.toml"
    echo "job.toml"
}

# best CMD...: best and median wall time (s) of $runs runs and the largest peak RSS (KiB).
best() {
    python3 - "$runs" "$@" <<'PY'
import subprocess, sys, time, tempfile
runs, cmd = int(sys.argv[1]), sys.argv[2:]
xs, rss = [], 0
for _ in range(runs):
    with tempfile.NamedTemporaryFile() as f:
        t = time.perf_counter()
        r = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", f.name] + cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        xs.append(time.perf_counter() - t)
        rss = max(rss, int(open(f.name).read().split()[-1]))
        if r.returncode != 0:
            print(f"FAILED ({r.returncode}): {' '.join(cmd)}", file=sys.stderr)
xs.sort()
print(f"{xs[0]:.4f} {xs[len(xs) // 2]:.4f} {rss}")
PY
}

# run.sh SEALRUN JOB [STORE]: one run with an empty output folder (and, if given, STORE moved
# aside first, so every run is a miss; moving is a rename, removing is done after timing).
cat > run.sh <<'M'
#!/usr/bin/env bash
set -e
rm -rf out
if [ -n "${3:-}" ] && [ -e "$3" ]; then mv "$3" "$3.old.$$"; fi
"$1" run --quiet "$2"
M
chmod +x run.sh
# exec.sh SEALRUN: `sealrun exec -- /bin/true` through the same shell wrapper as run.sh, so
# that the "over exec" figures compare like with like.
cat > exec.sh <<'M'
#!/usr/bin/env bash
set -e
rm -rf out
"$1" exec -- /bin/true
M
chmod +x exec.sh

row() { printf '%-6s %-34s %8s %8s %9s %s\n' "$@"; }
row shape what best_s median_s rss_MiB ratio
for d in ${SHAPES-big small}; do
    files=$(find "$d" -type f | wc -l)
    "$V" artifact "$d" --signature "$d.sig" --trust trust.toml >/dev/null   # warm the cache
    read -r v_b v_m v_r < <(best "$V" artifact "$d" --signature "$d.sig" --trust trust.toml)
    store="$work/store-$d"
    # First run: an empty store each time (the entry is filled).
    j=$(job "$d" "\"$store-miss\"")
    read -r m_b m_m m_r < <(best ./run.sh "$S" "$j" "$store-miss")
    rm -rf "$store-miss" "$store-miss".old.*
    # Store off: copied and hashed in one read into the run's staging folder.
    j=$(job "$d" '"off"')
    read -r o_b o_m o_r < <(best ./run.sh "$S" "$j")
    # Later runs: the entry exists (filled once here).
    rm -rf "$store"
    j=$(job "$d" "\"$store\"")
    ./run.sh "$S" "$j" >/dev/null 2>&1
    # The rows above wrote and removed gigabytes: let the disk settle before the millisecond
    # rows, which are timed back to back (exec, hit, no input).
    sync
    read -r e_b e_m e_r < <(best ./exec.sh "$S")
    read -r h_b h_m h_r < <(best ./run.sh "$S" "$j")
    # The same run with no input: what a run costs besides its inputs (record, audit log).
    j=$(job - '"off"')
    read -r n_b n_m n_r < <(best ./run.sh "$S" "$j")
    # Writing the bytes once (what a first run cannot beat without reflinks).
    read -r c_b c_m c_r < <(best sh -c "cp -r $d copy.\$\$")
    rm -rf copy.*
    openssl_s=$(python3 - "$d" <<'PY'
import subprocess, sys, time, glob, os
files = sorted(p for p in glob.glob(sys.argv[1] + "/**", recursive=True) if os.path.isfile(p))
xs = []
for _ in range(3):
    t = time.perf_counter()
    subprocess.run(["openssl", "dgst", "-sha256"] + files, stdout=subprocess.DEVNULL)
    xs.append(time.perf_counter() - t)
print(f"{min(xs):.4f}")
PY
)
    row "$d" "sealrun-verify artifact" "$v_b" "$v_m" "$(awk -v r="$v_r" 'BEGIN{printf "%.1f", r/1024}')" "1.00x verify"
    row "$d" "run, first (store miss)" "$m_b" "$m_m" "$(awk -v r="$m_r" 'BEGIN{printf "%.1f", r/1024}')" "$(awk -v a="$m_b" -v b="$v_b" 'BEGIN{printf "%.2fx verify", a/b}')"
    row "$d" "run, store off (single-pass)" "$o_b" "$o_m" "$(awk -v r="$o_r" 'BEGIN{printf "%.1f", r/1024}')" "$(awk -v a="$o_b" -v b="$v_b" 'BEGIN{printf "%.2fx verify", a/b}')"
    row "$d" "exec -- /bin/true (same wrapper)" "$e_b" "$e_m" "$(awk -v r="$e_r" 'BEGIN{printf "%.1f", r/1024}')" ""
    row "$d" "run, later (store hit)" "$h_b" "$h_m" "$(awk -v r="$h_r" 'BEGIN{printf "%.1f", r/1024}')" "$(awk -v a="$h_b" -v b="$e_b" -v c="$n_b" 'BEGIN{printf "+%.1f ms over exec, +%.1f ms over a run with no input", (a-b)*1000, (a-c)*1000}')"
    row "$d" "run, no input" "$n_b" "$n_m" "$(awk -v r="$n_r" 'BEGIN{printf "%.1f", r/1024}')" "$(awk -v a="$n_b" -v b="$e_b" 'BEGIN{printf "+%.1f ms over exec", (a-b)*1000}')"
    row "$d" "cp -r (write once)" "$c_b" "$c_m" "" "$(awk -v a="$c_b" -v b="$v_b" 'BEGIN{printf "%.2fx verify", a/b}')"
    row "$d" "openssl dgst -sha256 (1 process)" "$openssl_s" "" "" "$(awk -v a="$openssl_s" -v b="$v_b" -v n="$files" 'BEGIN{printf "verify %.2fx openssl; %.1f us/file verify, %.1f us/file openssl", a/b, b/n*1e6, a/n*1e6}')"
    # Disk: N more runs of the same dataset; the store still holds one copy.
    before=$(du -sk "$store" | cut -f1)
    j=$(job "$d" "\"$store\"")
    for _ in 1 2 3; do ./run.sh "$S" "$j" >/dev/null 2>&1; done
    after=$(du -sk "$store" | cut -f1)
    left=$(find . -maxdepth 1 -name '.sealrun-stage-*' | wc -l)
    echo "$d: store after 1 run ${before} KiB, after 4 runs ${after} KiB (dataset $(du -sk "$d" | cut -f1) KiB); staging folders left: $left"
done

# A filesystem that shares blocks (XFS with reflink, on a loop device): a first run clones each
# file (FICLONE) and hashes the clone, instead of copying it. Root and mkfs.xfs only.
if [ "$(id -u)" = 0 ] && command -v mkfs.xfs >/dev/null; then
    img=$work/xfs.img
    mnt=$work/xfs
    truncate -s 3G "$img"
    mkfs.xfs -q -f -m reflink=1 "$img"
    mkdir -p "$mnt"
    mount -o loop "$img" "$mnt"
    trap 'umount "$mnt" 2>/dev/null || true; rm -f "$img"' EXIT
    for d in big small; do
        # (sync: nothing of the runs above still being written back while this is timed)
        cp -r "$d" "$mnt/$d" && cp "$d.sig" "$mnt/$d.sig" && sync
        "$V" artifact "$mnt/$d" --signature "$mnt/$d.sig" --trust trust.toml >/dev/null
        read -r v_b v_m v_r < <(best "$V" artifact "$mnt/$d" --signature "$mnt/$d.sig" --trust trust.toml)
        j=$(job "$mnt/$d" "\"$mnt/store-miss\"")
        # The store is removed in the timed command (a few unlinks): stores moved aside, as
        # run.sh does, would keep every clone's blocks shared several times over, and XFS then
        # waits on its log for each new clone (1-3 s here), which no real store does.
        read -r m_b m_m m_r < <(best sh -c "rm -rf '$mnt/store-miss' && exec ./run.sh '$S' '$j'")
        used=$(du -sk "$mnt/store-miss" | cut -f1)
        rm -rf "$mnt/store-miss"
        sync
        free_before=$(df -k --output=avail "$mnt" | tail -1)
        ./run.sh "$S" "$j" >/dev/null 2>&1
        sync
        free_after=$(df -k --output=avail "$mnt" | tail -1)
        row "xfs-$d" "sealrun-verify artifact" "$v_b" "$v_m" "$(awk -v r="$v_r" 'BEGIN{printf "%.1f", r/1024}')" "1.00x verify"
        row "xfs-$d" "run, first (store miss, reflink)" "$m_b" "$m_m" "$(awk -v r="$m_r" 'BEGIN{printf "%.1f", r/1024}')" "$(awk -v a="$m_b" -v b="$v_b" 'BEGIN{printf "%.2fx verify", a/b}')"
        echo "xfs-$d: the entry lists ${used} KiB; filling it took $((free_before - free_after)) KiB of free space (files of 1 MiB and more share the source's blocks)"
        rm -rf "$mnt/store-miss"
    done
    umount "$mnt"
    rm -f "$img"
    trap - EXIT
fi
rm -rf out job.toml records audit.log*
