#!/usr/bin/env bash
# Startup overhead of `sealrun exec -- /bin/true` (all seven namespaces, pivot_root, seccomp,
# Landlock, capability drop) against bubblewrap doing comparable work in the same run:
# --unshare-all --die-with-parent --new-session, fresh /proc and /dev, read-only system binds,
# a tmpfs /tmp and the same compiled seccomp program (sealrun's default profile, dumped as raw
# BPF and given to bwrap with --seccomp FD).
#
# Two measurements:
#  1. hyperfine (bwrap needs a shell for its `9<file` redirection; that shell's cost is measured
#     separately and subtracted in the summary);
#  2. an interleaved loop (python3): each round runs every command once, in a random order, so
#     load from other processes and drift in the machine's speed hit them alike, and bwrap gets
#     its seccomp fd without a shell. This is the headline: the median of the per-round ratios
#     (robust to drift between rounds), printed with the ratio of the medians.
#
# Usage: benches/exec-startup.sh [path/to/sealrun]   (default: target/x86_64-unknown-linux-musl/release/sealrun)
# Needs: bwrap, hyperfine, python3 (apt-get install bubblewrap hyperfine). Installs nothing itself.
set -euo pipefail

cd "$(dirname "$0")/.."
SEALRUN=${1:-target/x86_64-unknown-linux-musl/release/sealrun}
RUNS=${RUNS:-200}

missing=()
command -v bwrap >/dev/null || missing+=(bubblewrap)
command -v hyperfine >/dev/null || missing+=(hyperfine)
if ((${#missing[@]})); then
    echo "missing: ${missing[*]} — run: apt-get install ${missing[*]}" >&2
    exit 2
fi
if [[ ! -x $SEALRUN ]]; then
    echo "$SEALRUN not found — run: rustup target add x86_64-unknown-linux-musl && cargo build --release -p sealrun-launcher" >&2
    exit 2
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$SEALRUN" exec --dump-bpf "$work/default.bpf" -- /bin/true

bwrap_args="--unshare-all --die-with-parent --new-session --proc /proc --dev /dev \
 --ro-bind /usr /usr --symlink usr/bin /bin --symlink usr/sbin /sbin --symlink usr/lib /lib \
 --symlink usr/lib64 /lib64 --ro-bind /etc/ld.so.cache /etc/ld.so.cache --tmpfs /tmp \
 --cap-drop ALL --clearenv --seccomp 9 /bin/true"
bwrap_cmd="bwrap $bwrap_args 9<$work/default.bpf"

# Sanity: both really run /bin/true.
"$SEALRUN" exec -- /bin/true
bash -c "$bwrap_cmd"

echo "== hyperfine ($RUNS runs each)" >&2
hyperfine -N --warmup 20 --runs "$RUNS" --export-json "$work/h.json" \
    -n sealrun "$SEALRUN exec -- /bin/true" \
    -n "sealrun --profile minimal" "$SEALRUN exec --profile minimal -- /bin/true" \
    -n bwrap "bash -c '$bwrap_cmd'" \
    -n "bash -c true (shell overhead of the bwrap line)" "bash -c true" >&2

python3 - "$work/h.json" <<'EOF'
import json, sys
r = {x["command"]: x for x in json.load(open(sys.argv[1]))["results"]}
s = r["sealrun"]["median"] * 1000
m = r["sealrun --profile minimal"]["median"] * 1000
b = r["bwrap"]["median"] * 1000
sh = r["bash -c true (shell overhead of the bwrap line)"]["median"] * 1000
print(f"hyperfine: sealrun exec median {s:.2f} ms (default profile), {m:.2f} ms (minimal)")
print(f"hyperfine: bwrap median {b:.2f} ms incl. {sh:.2f} ms of bash; {b - sh:.2f} ms without")
print(f"hyperfine: ratio sealrun/bwrap(without bash) = {s / (b - sh):.2f} default, {m / (b - sh):.2f} minimal (goal <= 0.6)")
EOF

echo "== interleaved ($RUNS rounds)" >&2
python3 - "$SEALRUN" "$work/default.bpf" "$RUNS" "$bwrap_args" <<'EOF'
import os, random, shlex, statistics, subprocess, sys, time
sealrun, bpf, runs, bwrap_args = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
cmds = {
    "/bin/true": ["/bin/true"],
    "sealrun exec": [sealrun, "exec", "--", "/bin/true"],
    "sealrun exec --profile minimal": [sealrun, "exec", "--profile", "minimal", "--", "/bin/true"],
    "bwrap": ["bwrap"] + shlex.split(bwrap_args),
}
res = {k: [] for k in cmds}
for _ in range(runs):
    # Each round runs every command once, in a random order, so drift in the machine's speed
    # (other tenants, the kernel's deferred namespace teardown) hits them alike.
    order = list(cmds)
    random.shuffle(order)
    for k in order:
        fd = os.open(bpf, os.O_RDONLY)
        os.dup2(fd, 9, inheritable=True)
        os.close(fd)
        t = time.perf_counter()
        subprocess.run(cmds[k], pass_fds=(9,), check=True)
        res[k].append(time.perf_counter() - t)
        os.close(9)
med = {k: statistics.median(v) * 1000 for k, v in res.items()}
for k, v in med.items():
    print(f"interleaved: {k:32} median {v:6.2f} ms")
b = med["bwrap"]
print(f"interleaved: ratio of medians sealrun/bwrap = {med['sealrun exec'] / b:.3f} default, "
      f"{med['sealrun exec --profile minimal'] / b:.3f} minimal (goal <= 0.6)")


def per_round(k):
    r = sorted(a / c for a, c in zip(res[k], res["bwrap"]))
    q = lambda f: r[int(f * (len(r) - 1))]
    return f"{q(0.5):.3f} (quartiles {q(0.25):.3f}-{q(0.75):.3f})"


print(f"interleaved: per-round ratio sealrun/bwrap, median {per_round('sealrun exec')} default, "
      f"{per_round('sealrun exec --profile minimal')} minimal")
EOF
