#!/usr/bin/env bash
# Hash throughput of `sealrun-verify artifact` against one `openssl dgst -sha256`
# process and `sha256sum`, over the same files, warm page cache, same run.
#
#   benches/hash-throughput.sh [WORKDIR]      (default /tmp/sealrun-bench; ~4.3 GiB)
#
# Shapes: 2 GiB of 256 mid-size (8 MiB) files; 10,000 small (16 KiB) files;
# one single 2 GiB file. Prints wall time, GB/s, peak RSS, and the ratio of
# sealrun-verify's throughput to openssl's. A benchmark, not a test: it asserts nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-/tmp/sealrun-bench}
runs=${RUNS:-5}
cargo build --release --quiet -p sealrun-verifier -p sealrun-launcher
S=$PWD/target/x86_64-unknown-linux-musl/release/sealrun
V=$PWD/target/x86_64-unknown-linux-musl/release/sealrun-verify
mkdir -p "$work"
cd "$work"

make_data() {
    if [ ! -f mid.done ]; then
        rm -rf mid && mkdir -p mid
        for i in $(seq -w 0 255); do head -c $((8 << 20)) /dev/urandom > "mid/f$i.bin"; done
        touch mid.done
    fi
    if [ ! -f small.done ]; then
        rm -rf small && mkdir -p small
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
    if [ ! -f large.done ]; then
        rm -rf large && mkdir -p large
        head -c $((2 << 30)) /dev/urandom > large/blob.bin
        touch large.done
    fi
}
echo "preparing data in $work (cached between runs)"
make_data
[ -f bench.key ] || "$S" keygen --out bench >/dev/null

# Run a command $runs times; print the best wall time (s), its peak RSS (KiB,
# from GNU time on one more run) and the median wall time.
measure() {
    python3 - "$runs" "$@" <<'PY'
import subprocess, sys, time
runs, cmd = int(sys.argv[1]), sys.argv[2:]
xs = []
for _ in range(runs):
    t = time.perf_counter()
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    xs.append(time.perf_counter() - t)
xs.sort()
# Peak RSS of the tool itself (not of this Python process's fork): GNU time, one more run.
import tempfile, os
with tempfile.NamedTemporaryFile() as f:
    subprocess.run(["/usr/bin/time", "-f", "%M", "-o", f.name] + cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    rss = int(open(f.name).read().split()[-1])
print(f"{xs[0]:.4f} {rss} {xs[len(xs) // 2]:.4f}")
PY
}

printf '%-6s %-22s %8s %8s %8s %10s %10s\n' shape tool best_s median_s GB/s peakRSS_MiB vs_openssl
for shape in mid small large; do
    if [ "$shape" = large ]; then target=large/blob.bin; else target=$shape; fi
    # sign once; then warm the cache
    [ -f "$shape.sig" ] || "$S" sign "$target" --key bench.key --kind dataset --out "$shape.sig" >/dev/null
    mapfile -t files < <(if [ -d "$target" ]; then find "$target" -type f | sort; else echo "$target"; fi)
    bytes=$(cat "${files[@]}" | wc -c)
    "$V" artifact "$target" --signature "$shape.sig" --key bench.pub >/dev/null
    read -r t_s r_s m_s < <(measure "$V" artifact "$target" --signature "$shape.sig" --key bench.pub)
    read -r t_o r_o m_o < <(measure openssl dgst -sha256 "${files[@]}")
    read -r t_h r_h m_h < <(measure sha256sum "${files[@]}")
    for row in "sealrun-verify $t_s $r_s $m_s" "openssl-dgst-sha256 $t_o $r_o $m_o" "sha256sum $t_h $r_h $m_h"; do
        set -- $row
        awk -v s="$shape" -v n="$1" -v t="$2" -v r="$3" -v m="$4" -v b="$bytes" -v to="$t_o" \
            'BEGIN{ gbs = (t > 0 ? b / t / 1e9 : 0); printf "%-6s %-22s %8.3f %8.3f %8.2f %10.1f %9.2fx\n", s, n, t, m, gbs, r/1024, (t > 0 ? to / t : 0) }'
    done
done
