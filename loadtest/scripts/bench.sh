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
# $BENCH_SFU_QUOTA (percent of one core per shard, e.g. 25) caps each shard
# with a CFS quota (cgroup v1, as root): a machine with fewer cores than the
# SFU and its load generator need can then compare 1 and 2 shards of a fixed
# size, with the loadtest on every core.
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
# cap_cpu PID PERCENT: PID into a fresh cgroup (v1 `cpu` controller) limited
# to workers × PERCENT of one core, and each shard thread into a child cgroup
# of its own limited to PERCENT, so two shards are two cores of that size
# rather than one pool they could borrow from each other. 10 ms periods: with
# 100 ms a shard would run 25 ms and stall 75 ms, jitter rather than a slower core.
cap_cpu() {
  local top=/sys/fs/cgroup/cpu/sfu-bench-$1 tid n i
  [ -f /sys/fs/cgroup/cpu/cpu.cfs_quota_us ] || { echo "BENCH_SFU_QUOTA needs the cgroup v1 cpu controller at /sys/fs/cgroup/cpu" >&2; exit 1; }
  mkdir "$top"
  cgroups+=("$top")
  echo 10000 >"$top/cpu.cfs_period_us"
  echo $(( ${workers:-1} * $2 * 100 )) >"$top/cpu.cfs_quota_us"
  echo "$1" >"$top/cgroup.procs"
  for i in $(seq 100); do   # the shard threads start within ms; bounded wait
    n=$(grep -lx 'sfu-shard-[0-9]*' /proc/"$1"/task/*/comm 2>/dev/null | wc -l)
    [ "$n" -lt "${workers:-1}" ] || break
    sleep 0.05
  done
  for tid in $(grep -lx 'sfu-shard-[0-9]*' /proc/"$1"/task/*/comm | cut -d/ -f5); do
    mkdir "$top/$tid"
    cgroups=("$top/$tid" "${cgroups[@]}")
    echo 10000 >"$top/$tid/cpu.cfs_period_us"
    echo $(( $2 * 100 )) >"$top/$tid/cpu.cfs_quota_us"
    echo "$tid" >"$top/$tid/tasks"
  done
}
cgroups=()
trap 'for d in "${cgroups[@]}"; do rmdir "$d" 2>/dev/null || true; done' EXIT
for s in "${scenarios[@]}"; do
  SFU_TURN_ENABLED=false SFU_MEDIA_ICE_TCP=false SFU_LOG_LEVEL=warn \
  SFU_HTTP_LISTEN=127.0.0.1:17880 SFU_MEDIA_UDP_LISTEN=127.0.0.1:17882 \
  env ${workers:+SFU_MEDIA_WORKERS=$workers} \
    taskset -c "${BENCH_SFU_CPUS:-0}" "$out/sfu" >"$out/$s.sfu.log" 2>&1 &
  sfu=$!
  [ -z "${BENCH_SFU_QUOTA:-}" ] || cap_cpu "$sfu" "$BENCH_SFU_QUOTA"
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
