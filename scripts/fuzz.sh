#!/usr/bin/env bash
# Runs every cargo-fuzz target for a bounded time (default 20 s each).
# cargo-fuzz is installed if missing; the stable toolchain is used with
# RUSTC_BOOTSTRAP=1 and no sanitizer (only one toolchain is available here).
# A crash fails the run and leaves its input in fuzz/artifacts/<target>/.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SECONDS_EACH="${1:-20}"
cd "$ROOT"
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "[fuzz] installing cargo-fuzz"
    cargo install cargo-fuzz --locked --quiet
fi
export RUSTC_BOOTSTRAP=1
for target in $(cargo fuzz list); do
    echo "[fuzz] $target for ${SECONDS_EACH}s"
    mkdir -p "fuzz/corpus/$target"
    log="$(mktemp)"
    if ! cargo fuzz run --sanitizer none "$target" "fuzz/corpus/$target" -- \
        -max_total_time="$SECONDS_EACH" -print_final_stats=0 >"$log" 2>&1; then
        tail -40 "$log"
        echo "[fuzz] $target FAILED (input saved under fuzz/artifacts/$target/)"
        exit 1
    fi
    grep -E "^Done" "$log" || true
    rm -f "$log"
done
