#!/usr/bin/env bash
# Runs every test of the project, installing what the tests need first
# (Debian chromium and coturn, npm playwright-core, a Python venv with aiortc).
# This is the README's test command and what CI runs.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

"$ROOT/scripts/test-deps.sh"

echo "== format"
cargo fmt --all -- --check
echo "== clippy"
cargo clippy --workspace --all-targets --release -- -D warnings
echo "== tests (release build, shared with the interop tests)"
cargo test --workspace --release
echo "== fuzz targets (${FUZZ_SECONDS:-20}s each)"
"$ROOT/scripts/fuzz.sh" "${FUZZ_SECONDS:-20}"
echo "== all tests passed"
