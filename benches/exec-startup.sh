#!/usr/bin/env bash
# Startup overhead of `sealrun exec -- /bin/true` (all seven namespaces, pivot_root, seccomp,
# Landlock, cgroup, capability drop) against bubblewrap doing comparable work in the same run:
# --unshare-all --die-with-parent --new-session, fresh /proc and /dev, read-only system binds,
# a tmpfs /tmp and the same compiled seccomp program (sealrun's default profile, dumped as raw
# BPF and given to bwrap with --seccomp FD).
#
# Usage: benches/exec-startup.sh [path/to/sealrun]   (default: target/release/sealrun)
# Needs: bwrap and hyperfine (apt-get install bubblewrap hyperfine). Installs nothing itself.
set -euo pipefail

cd "$(dirname "$0")/.."
SEALRUN=${1:-target/release/sealrun}
RUNS=${RUNS:-200}

missing=()
command -v bwrap >/dev/null || missing+=(bubblewrap)
command -v hyperfine >/dev/null || missing+=(hyperfine)
if ((${#missing[@]})); then
    echo "missing: ${missing[*]} — run: apt-get install ${missing[*]}" >&2
    exit 2
fi
if [[ ! -x $SEALRUN ]]; then
    echo "$SEALRUN not found — run: cargo build --release -p sealrun-launcher" >&2
    exit 2
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$SEALRUN" exec --dump-bpf "$work/default.bpf" -- /bin/true

bwrap_cmd="bwrap --unshare-all --die-with-parent --new-session --proc /proc --dev /dev \
 --ro-bind /usr /usr --symlink usr/bin /bin --symlink usr/sbin /sbin --symlink usr/lib /lib \
 --symlink usr/lib64 /lib64 --ro-bind /etc/ld.so.cache /etc/ld.so.cache --tmpfs /tmp \
 --cap-drop ALL --clearenv --seccomp 9 /bin/true 9<$work/default.bpf"

# Sanity: both really run /bin/true.
"$SEALRUN" exec -- /bin/true
bash -c "$bwrap_cmd"

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
print(f"sealrun exec median {s:.2f} ms (default profile), {m:.2f} ms (--profile minimal: the same mounts as the bwrap line)")
print(f"bwrap        median {b:.2f} ms (incl. {sh:.2f} ms of bash for the fd redirection; {b - sh:.2f} ms without)")
print(f"ratio sealrun/bwrap = {s / b:.2f} default, {m / b:.2f} minimal (vs bwrap without the bash: {s / (b - sh):.2f}, {m / (b - sh):.2f}; goal <= 0.6)")
EOF
