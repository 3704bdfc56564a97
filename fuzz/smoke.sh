#!/usr/bin/env bash
# Smoke-run every fuzz target for SECONDS each (default 20): build (fuzz/build.sh), seed
# (fuzz/seed.sh), run, and print one line per target with its executions. Exits 1 if any
# target crashed (the input is kept in fuzz/artifacts/TARGET/; reproduce with
# `fuzz/target/x86_64-unknown-linux-gnu/release/TARGET FILE`).
# Usage: fuzz/smoke.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-20}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    for t in fuzz_targets/*.rs; do targets+=("$(basename "$t" .rs)"); done
fi
./build.sh -j "${FUZZ_JOBS:-2}" >/dev/null
./seed.sh
bin=target/x86_64-unknown-linux-gnu/release
failed=0
for t in "${targets[@]}"; do
    mkdir -p "artifacts/$t" "corpus/$t"
    # Inputs that once crashed a target (regressions/TARGET/) must pass first.
    if compgen -G "regressions/$t/*" >/dev/null; then
        if ! "$bin/$t" regressions/"$t"/* >/dev/null 2>&1; then
            failed=1
            echo "fuzz $t: a regression input crashes it again (fuzz/regressions/$t/)"
            continue
        fi
    fi
    log=$(mktemp)
    if "$bin/$t" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
        -artifact_prefix="artifacts/$t/" -print_final_stats=1 "corpus/$t" >"$log" 2>&1; then
        runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
        echo "fuzz $t: ${runs:-?} executions in ${secs} s, no crash"
    else
        failed=1
        echo "fuzz $t: CRASH (see fuzz/artifacts/$t/):"
        grep -E "^(==|thread|SUMMARY|panicked)" "$log" | head -5
    fi
    rm -f "$log"
done
exit "$failed"
