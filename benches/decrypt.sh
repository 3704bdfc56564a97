#!/usr/bin/env bash
# Confidential datasets (#16.7), same run, warm page cache:
#
#  - a 1 GiB dataset (16 x 64 MiB), signed (plaintext) then encrypted with `sealrun encrypt`:
#      `sealrun check-encrypted`: files decrypted in parallel into a detached noswap tmpfs,
#        each in one pass that also hashes the plaintext (checked against the signature) and
#        the ciphertext (for the record)
#      vs one `age -d` process over the same files (one file after the other, to /dev/null:
#        no hashing, no write)                                       goal: age / sealrun >= 1.8
#      and, for reference, `age -d` writing each file into a tmpfs (/dev/shm), the output work
#        sealrun also does (removed after each round)
#  - peak RSS of the launcher while it decrypts (its ru_maxrss; tmpfs pages are not in it,
#    and GNU time's %M of the whole command)                          goal < 64 MiB
#  - a whole `sealrun run` of /bin/true reading the encrypted input: wall time, peak RSS
#
#   benches/decrypt.sh [WORKDIR]     (default /tmp/sealrun-decrypt-bench; ~2 GiB while it runs,
#                                     removed at the end unless KEEP=1; RUNS=3; FILES=16,
#                                     MIB=64 per file; NO_BUILD=1 uses the release binary as is)
#
# A benchmark, not a test: it asserts nothing. Needs root (the tmpfs is made with fsmount), the
# `age` CLI, GNU time.
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-/tmp/sealrun-decrypt-bench}
runs=${RUNS:-3}
files=${FILES:-16}
mib=${MIB:-64}
[ "${NO_BUILD:-0}" = 1 ] || cargo build --release -j 2 --quiet -p sealrun-verifier -p sealrun-launcher
S=$PWD/target/x86_64-unknown-linux-musl/release/sealrun
mkdir -p "$work"
cd "$work"
[ "${KEEP:-0}" = 1 ] || trap 'cd / && rm -rf "$work"' EXIT

if [ ! -f data.done ]; then
    rm -rf data data.enc data.sig && mkdir data
    for i in $(seq 1 "$files"); do head -c $((mib << 20)) /dev/urandom > "data/part-$i.bin"; done
    [ -f reg.key ] || "$S" keygen --out reg >/dev/null
    [ -f launcher.key ] || "$S" keygen --out launcher >/dev/null
    [ -f launcher.ageid ] || "$S" identity new --out launcher.ageid >/dev/null 2>&1
    "$S" sign data --key reg.key --kind dataset >/dev/null
    "$S" encrypt data --recipient "$("$S" identity recipient launcher.ageid)" --out data.enc >/dev/null
    rm -rf data
    touch data.done
fi
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
cat > job.toml <<'T'
name = "bench"
command = ["/bin/true"]
output = "out"
trust = "trust.toml"
signing_key = "launcher.key"
decryption_identity = "launcher.ageid"
[[input]]
name = "data"
path = "data.enc"
signature = "data.sig"
encrypted = true
[sandbox]
profile = "minimal"
timeout = "120s"
T
bytes=$(du -sb data.enc | cut -f1)
echo "dataset: $files x $mib MiB encrypted ($bytes bytes of ciphertext), $(nproc) CPUs"
cat data.enc/*/* data.enc/* >/dev/null 2>&1 || true

now() { date +%s.%N; }
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
: > age.t; : > agew.t; : > check.t; : > check.rss; : > run.t; : > run.rss
for r in $(seq 1 "$runs"); do
    t0=$(now)
    for f in data.enc/*.age; do age -d -i launcher.ageid -o /dev/null "$f"; done
    t1=$(now)
    echo "$t1 - $t0" | bc >> age.t
    shm=$(mktemp -d /dev/shm/sealrun-decrypt-bench.XXXXXX)
    t0=$(now)
    for f in data.enc/*.age; do age -d -i launcher.ageid -o "$shm/$(basename "$f" .age)" "$f"; done
    t1=$(now)
    rm -rf "$shm"
    echo "$t1 - $t0" | bc >> agew.t
    /usr/bin/time -f %M -o check.gnu "$S" check-encrypted data.enc --signature data.sig \
        --trust trust.toml --identity launcher.ageid > check.out
    sed -n 's/.* in \([0-9.]*\) s .*/\1/p' check.out >> check.t
    sed -n 's/.*peak RSS \([0-9]*\) KiB.*/\1/p' check.out >> check.rss
    rm -rf out records audit.log audit.log.* .sealrun-stage-*
    t0=$(now)
    /usr/bin/time -f %M -o run.gnu "$S" run job.toml --quiet
    t1=$(now)
    echo "$t1 - $t0" | bc >> run.t
    cat run.gnu >> run.rss
    echo "round $r: age -d $(tail -1 age.t) s (to a tmpfs $(tail -1 agew.t) s), check-encrypted $(tail -1 check.t) s (RSS $(tail -1 check.rss) KiB, GNU time $(cat check.gnu) KiB), run $(tail -1 run.t) s (RSS $(cat run.gnu) KiB)"
done
a=$(median < age.t); w=$(median < agew.t); c=$(median < check.t)
echo "median: age -d (one process at a time) $a s; sealrun check-encrypted $c s; ratio $(echo "scale=2; $a / $c" | bc)x (goal >= 1.8)"
echo "        age -d into a tmpfs $w s; ratio $(echo "scale=2; $w / $c" | bc)x"
echo "launcher peak RSS while decrypting: $(sort -n check.rss | tail -1) KiB (goal < 65536)"
echo "whole run of /bin/true: median $(median < run.t) s, peak RSS $(sort -n run.rss | tail -1) KiB"
cat check.out
