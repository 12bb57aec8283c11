#!/usr/bin/env bash
# Holds a large number of TURN allocations (default 100,100) on turn-server
# and reports how many the servers held (their own `turn_allocations`
# gauges), RSS per allocation, allocation rate and traffic loss.
#
#   benches/turn/hold.sh [TOTAL] [SHARDS]
#
# Why shards: every allocation holds a relay socket, and this sandbox caps a
# process at 20,000 open files (hard limit, CAP_SYS_RESOURCE dropped). The
# run therefore splits TOTAL over SHARDS turn-server processes (one worker
# each, own UDP port, own relay IP 127.0.20.N with the full default port
# range) and as many `loadtest turn` processes (one per shard, client
# sockets spread over 127.0.0.0/8). Where the hard limit allows, one process
# with several `relay.ips` holds the same count.
# Loopback only; every wait is bounded; everything started is stopped.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
TOTAL=${1:-100100}
SHARDS=${2:-7}
PER=$(((TOTAL + SHARDS - 1) / SHARDS))
HOLD_SECS=${HOLD_SECS:-20}
PPS=${PPS:-0.2}
OUT=${OUT:-target/turn-hold}
BASE_PORT=${BASE_PORT:-35480}
SECRET=hold-secret
mkdir -p "$OUT"
rm -f "$OUT"/*.json "$OUT"/*.log

cargo build --release -q -p turn-server -p loadtest
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
TURN_BIN="$TARGET_DIR/release/turn-server"
LOAD_BIN="$TARGET_DIR/release/loadtest"

PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
gauge() { # metrics port -> turn_allocations
    curl -s --max-time 2 "http://127.0.0.1:$1/metrics" | awk '/^turn_allocations / {print $2}'
}
bounded_wait() { # seconds description command...
    local until=$((SECONDS + $1)) what=$2
    shift 2
    while ! "$@" >/dev/null 2>&1; do
        if ((SECONDS > until)); then echo "timed out waiting for $what" >&2; exit 1; fi
        sleep 0.2
    done
}

SERVER_PIDS=()
BEFORE=()
for ((i = 0; i < SHARDS; i++)); do
    port=$((BASE_PORT + i))
    cat >"$OUT/shard-$i.toml" <<EOF
[server]
realm = "hold.local"
workers = 1
[listen]
udp = ["127.0.0.1:$port"]
tcp = []
[relay]
ips = ["127.0.20.$((i + 1))"]
[auth]
secrets = ["$SECRET"]
[policy]
allow = ["127.0.0.0/8"]
[limits]
max_allocations = 1000000
bandwidth_bytes_per_s = 0
unauthenticated_per_s = 1000000.0
unauthenticated_burst = 1000000.0
[metrics]
listen = "127.0.0.1:$((port + 100))"
EOF
    RUST_LOG=warn "$TURN_BIN" --config "$OUT/shard-$i.toml" >"$OUT/shard-$i.log" 2>&1 &
    SERVER_PIDS+=($!)
    PIDS+=($!)
    bounded_wait 15 "turn-server shard $i metrics" gauge $((port + 100))
done
sleep 1
for p in "${SERVER_PIDS[@]}"; do BEFORE+=("$(rss_kb "$p")"); done

START=$(date +%s.%N)
LOAD_PIDS=()
for ((i = 0; i < SHARDS; i++)); do
    timeout $((180 + HOLD_SECS)) "$LOAD_BIN" turn --quiet --server "127.0.0.1:$((BASE_PORT + i))" --secret "$SECRET" \
        --allocations "$PER" --rate 4000 --duration "$HOLD_SECS" --pps "$PPS" --size 100 \
        --server-pid "${SERVER_PIDS[$i]}" --json "$OUT/shard-$i.json" >"$OUT/load-$i.log" 2>&1 &
    LOAD_PIDS+=($!)
    PIDS+=($!)
done

# Sample the servers while the allocations are held: the gauges' sum at its
# peak and the RSS at that moment.
PEAK=0
PEAK_RSS=()
deadline=$((SECONDS + 120 + HOLD_SECS))
while ((SECONDS < deadline)); do
    alive=0
    for p in "${LOAD_PIDS[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    ((alive)) || break
    sum=0
    for ((i = 0; i < SHARDS; i++)); do sum=$((sum + $(gauge $((BASE_PORT + 100 + i)) || echo 0))); done
    if ((sum > PEAK)); then
        PEAK=$sum
        PEAK_RSS=()
        for p in "${SERVER_PIDS[@]}"; do PEAK_RSS+=("$(rss_kb "$p")"); done
    fi
    sleep 1
done
STATUS=0
for p in "${LOAD_PIDS[@]}"; do wait "$p" || STATUS=$?; done
ELAPSED=$(python3 -c "import time; print(round(time.time() - $START, 1))")

python3 - "$OUT" "$SHARDS" "$PER" "$PEAK" "$ELAPSED" "$STATUS" "${BEFORE[*]}" "${PEAK_RSS[*]:-}" <<'EOF'
import json, sys
out, shards, per, peak, elapsed, status, before, peak_rss = sys.argv[1:9]
shards, per, peak = int(shards), int(per), int(peak)
before = [int(x) for x in before.split()]
peak_rss = [int(x) for x in peak_rss.split()] if peak_rss else []
runs = [json.load(open(f"{out}/shard-{i}.json")) for i in range(shards)]
ready = sum(r["ready"] for r in runs)
failed = sum(r["failed"] for r in runs)
sent = sum(r["sent"] for r in runs)
received = sum(r["received"] for r in runs)
rate = sum(r["allocations_per_sec"] for r in runs)
grown_kb = sum(peak_rss) - sum(before) if peak_rss else 0
print(f"shards: {shards} turn-server processes x {per} allocations requested (loadtest exit status {status})")
print(f"allocations ready (loadtest): {ready}, failed: {failed}")
print(f"allocations held at the peak (servers' turn_allocations gauges, summed): {peak}")
print(f"allocation rate, all shards together: {rate:,.0f}/s")
print(f"RSS of the servers: {sum(before)/1024:.1f} MiB before -> {sum(peak_rss)/1024:.1f} MiB held; "
      f"{grown_kb/max(peak,1):.2f} KB per allocation")
print(f"ChannelData while held: {sent} sent, {received} echoed, loss {100*(sent-received)/max(sent,1):.2f} %")
print(f"wall time {elapsed} s")
for i, r in enumerate(runs):
    if r["errors"]:
        print(f"shard {i} errors: {r['errors'][:3]}")
EOF
exit "$STATUS"
