#!/usr/bin/env bash
# Lineage over a large records folder: generate N signed run records (default 10,000; trees
# of 100 runs below one signed dataset each, all signed with a fresh test key, by
# integration/examples/gen_records.rs), then time `sealrun-verify lineage --artifact` from
# one dataset: cold (the index .lineage-index.json is built) and warm (reused), then warm
# again after one new record (incremental refresh), and with --gate on the 50 final outputs.
#
# Usage: benches/lineage.sh [N]   (builds the release binaries first; needs nothing else)
set -euo pipefail

cd "$(dirname "$0")/.."
N=${1:-10000}
cargo build --release -j 2 -q -p sealrun-verifier --bin sealrun-verify
cargo build --release -j 2 -q -p sealrun-integration --example gen_records
REL=target/x86_64-unknown-linux-musl/release
VERIFY=$PWD/$REL/sealrun-verify
GEN=$PWD/$REL/examples/gen_records

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
ROOT=$("$GEN" "$WORK/records" "$N" 100)
cd "$WORK"
printf 'trust = "trust.toml"\n' > gate.toml

run() { # label, args...
    local label=$1; shift
    local t0 t1
    t0=$(date +%s.%N)
    "$VERIFY" lineage --records records --trust trust.toml --artifact "sha256:$ROOT" "$@" > out.txt 2> err.txt
    t1=$(date +%s.%N)
    printf '%-28s %7.3f s   %s | %s\n' "$label" "$(echo "$t1 - $t0" | bc)" \
        "$(head -1 out.txt)" "$(sed 's/^sealrun-verify: //' err.txt | tail -1)"
}

echo "records: $N in $WORK/records ($(du -sh records | cut -f1)), start: artifact sha256:${ROOT:0:12}…"
run "cold (index built)"
run "warm (index reused)"
run "warm again"
cp "records/$(ls records | grep '^run-0-0-' | head -1)" records/copy-of-a-record.json
run "one new file"
run "warm, --gate (50 outputs)" --gate gate.toml
echo "index: $(du -h records/.lineage-index.json | cut -f1)"
