#!/usr/bin/env bash
# Runs the standard load-test scenarios with the SFU and the loadtest pinned
# to different cores, writing one JSON summary per scenario.
#   loadtest/scripts/bench.sh [OUT_DIR] [DURATION_SECS] [SCENARIO...]
# Extra loadtest flags (e.g. "--rooms 3") come from $LOADTEST_EXTRA; $BENCH_SFU_BIN
# runs another sfu binary (e.g. an older commit's, to compare) instead of
# this checkout's.
# Uses ports 17880 (HTTP) and 17882 up (media UDP, one per shard) so it does not
# collide with a development SFU on the defaults; the embedded TURN relay is off.
# $BENCH_SFU_WORKERS shards (default 1; set it empty for a binary older than
# media.workers) on the CPUs in $BENCH_SFU_CPUS (default 0); the loadtest on
# $BENCH_LOADTEST_CPUS (default 1).
workers=${BENCH_SFU_WORKERS-1}
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:-/tmp/loadtest-bench}
duration=${2:-20}
shift 2 2>/dev/null || true
scenarios=("$@")
[ ${#scenarios[@]} -gt 0 ] || scenarios=(meeting livestream audio-room)
mkdir -p "$out"
cargo build --release -p sfu -p loadtest
# Private copies: a concurrent build must not replace the binaries mid-run.
cp "${BENCH_SFU_BIN:-target/release/sfu}" "$out/sfu"
cp target/release/loadtest "$out/loadtest"
for s in "${scenarios[@]}"; do
  SFU_TURN_ENABLED=false SFU_MEDIA_ICE_TCP=false SFU_LOG_LEVEL=warn \
  SFU_HTTP_LISTEN=127.0.0.1:17880 SFU_MEDIA_UDP_LISTEN=127.0.0.1:17882 \
  env ${workers:+SFU_MEDIA_WORKERS=$workers} \
    taskset -c "${BENCH_SFU_CPUS:-0}" "$out/sfu" >"$out/$s.sfu.log" 2>&1 &
  sfu=$!
  sleep 1
  status=0
  taskset -c "${BENCH_LOADTEST_CPUS:-1}" "$out/loadtest" run --quiet --scenario "configs/loadtest/$s.toml" \
    --url ws://127.0.0.1:17880/ws --duration "$duration" \
    --sfu-pid "$sfu" --sfu-metrics http://127.0.0.1:17880/metrics \
    --json "$out/$s.json" --report "$out/$s.html" ${LOADTEST_EXTRA:-} | tee "$out/$s.txt" || status=$?
  kill "$sfu"
  wait "$sfu" 2>/dev/null || true
  echo "$s: exit $status"
done
