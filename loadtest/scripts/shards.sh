#!/usr/bin/env bash
# Two shards against one on a machine too small to load two SFU cores: each
# shard gets a fixed CPU share (a CFS quota, $QUOTA percent of a core per
# shard), the loadtest every core, and the meeting scenario is swept over room
# counts: 1 shard with R rooms, 2 shards with 2R rooms, alternating.
#   loadtest/scripts/shards.sh [OUT_DIR] [QUOTA] [ROOMS...]
# Rooms of 10 participants with audio and one 360p video layer each; the SFU
# forwards everything (estimation off, every downlink assumed 100 Mbit/s) so
# what is measured is forwarding capacity, not the allocator's choices.
# Needs root (the cgroup). Prints one line per run; each run's JSON, report
# and logs stay in OUT_DIR/RUN-wSHARDS-rROOMS. $DURATION: seconds of media (20).
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:-/tmp/shards}
quota=${2:-25}
shift 2 2>/dev/null || true
rooms=("$@")
[ ${#rooms[@]} -gt 0 ] || rooms=(1 2 3 4)
duration=${DURATION:-20}
mkdir -p "$out"
run=0
printf '%-7s %-6s %-10s %-9s %-9s %-8s %-8s %s\n' shards rooms "fwd pkt/s" "pkt loss" "frm loss" "p99 ms" "SFU CPU" "loadtest CPU"
for r in "${rooms[@]}"; do
  for w in 1 2; do
    run=$((run + 1))
    dir="$out/$run-w$w-r$((r * w))"
    SFU_MEDIA_BANDWIDTH_ESTIMATION=false SFU_MEDIA_INITIAL_DOWNLINK_KBPS=100000 \
    BENCH_SFU_WORKERS=$w BENCH_SFU_QUOTA=$quota BENCH_SFU_CPUS=0,1 BENCH_LOADTEST_CPUS=0,1 \
    LOADTEST_EXTRA="--threads 2 --rooms $((r * w)) --video 360p --no-simulcast" \
      loadtest/scripts/bench.sh "$dir" "$duration" meeting >"$dir.log" 2>&1 || true
    python3 - "$dir/meeting.json" "$w" "$((r * w))" <<'EOF'
import json, sys
try:
    d = json.load(open(sys.argv[1]))
except (OSError, ValueError) as e:
    print(f"{sys.argv[2]:<7} {sys.argv[3]:<6} no result ({e})")
    sys.exit()
s = d["server"]
print(f"{sys.argv[2]:<7} {sys.argv[3]:<6} {s['forwarded_pps']:<10.0f} "
      f"{d['packet_loss_pct']:<9.3f} {d['frame_loss_pct']:<9.3f} {d['latency_ms']['p99']:<8.0f} "
      f"{s['cpu_pct']:<8.1f} {100 * d['loadtest_cpu_secs'] / d['wall_secs']:.0f} %")
EOF
  done
done
