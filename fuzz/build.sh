#!/usr/bin/env bash
# Build the fuzz targets the way `cargo fuzz build` does (libFuzzer, AddressSanitizer,
# coverage counters), with or without the cargo-fuzz subcommand installed.
set -euo pipefail
cd "$(dirname "$0")"
if cargo +nightly fuzz --version >/dev/null 2>&1; then
    exec cargo +nightly fuzz build -O "$@"
fi
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks \
-Zsanitizer=address -Cforce-frame-pointers"
export RUSTDOCFLAGS="$RUSTFLAGS"
exec cargo +nightly build --release --target x86_64-unknown-linux-gnu --bins "$@"
