#!/usr/bin/env bash
# What the cluster trunk costs, and a livestream 1 → N across nodes, on
# loopback: three sfu nodes (one Redis, fresh nodes for every run), loadtest
# processes as participants, CPU of each node from /proc/PID/stat and its
# counters from /metrics over the steady part of each run.
#   loadtest/scripts/cluster.sh [OUT_DIR] [DURATION_SECS]
# Runs ($CLUSTER_RUNS, default "ingest local trunk one split"); the presenter is
# always on node A (audio + $CLUSTER_VIDEO video, default 720p, one layer,
# SFrame-encrypted, as configs/loadtest/livestream.toml):
#   ingest  $CLUSTER_STREAMS presenters (default 10, one room each) on A,
#           nobody watching: what receiving the streams costs node A;
#   local   the same presenters and one viewer per room, all on A;
#   trunk   the same presenters on A, one viewer per room on B: A sends
#           every packet once over the trunk, B receives it and forwards it
#           to its viewer;
#   one     the presenter and $CLUSTER_VIEWERS viewers (default 60) on A
#           (B and C members of the cluster, idle);
#   split   the presenter on A and the same viewers split evenly over A, B
#           and C.
# $CLUSTER_E2EE=off sends frames unencrypted (still verified; the SFU's
# work is the same, it never reads payloads). $CLUSTER_SFU_BIN runs another
# sfu binary. Nodes run pinned to $CLUSTER_SFU_CPUS (default 0), loadtests to
# $CLUSTER_LOADTEST_CPUS (default 1). Needs redis-server and python3; uses
# loopback ports 27880/27980/28080 (HTTP), 27882/27982/28082 (media),
# 27890/27990/28090 (trunk) and 26379 (Redis); it stops if one is taken.
# Output: RUN.{pub,A,B,C}.json (loadtest summaries), RUN.sample.json (per
# node: CPU seconds and counters at the window's two ends), table.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:-/tmp/loadtest-cluster}
duration=${2:-20}
viewers=${CLUSTER_VIEWERS:-60}
streams=${CLUSTER_STREAMS:-10}
video=${CLUSTER_VIDEO:-720p}
runs=(${CLUSTER_RUNS:-ingest local trunk one split})
e2ee_flag=
[ "${CLUSTER_E2EE:-on}" = off ] && e2ee_flag=--no-e2ee
sfu_cpus=${CLUSTER_SFU_CPUS:-0}
lt_cpus=${CLUSTER_LOADTEST_CPUS:-1}
for t in redis-server python3 taskset; do
  command -v "$t" >/dev/null || { echo "cluster.sh: $t not found" >&2; exit 1; }
done
for port in 26379 27880 27980 28080; do
  if python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), timeout=1)" 2>/dev/null; then
    echo "cluster.sh: 127.0.0.1:$port is taken" >&2; exit 1
  fi
done
mkdir -p "$out"
cargo build --release -p sfu -p loadtest
# Private copies: a concurrent build must not replace the binaries mid-run.
cp "${CLUSTER_SFU_BIN:-target/release/sfu}" "$out/sfu"
cp target/release/loadtest "$out/loadtest"

redis_pid= node_pids=()
cleanup() {
  for p in "${node_pids[@]}" $redis_pid; do kill "$p" 2>/dev/null || true; done
}
trap cleanup EXIT
redis-server --port 26379 --bind 127.0.0.1 --save '' --appendonly no >"$out/redis.log" 2>&1 &
redis_pid=$!
secret=$(head -c 24 /dev/urandom | base64)
names=(A B C)

start_nodes() { # RUN
  node_pids=()
  for i in 0 1 2; do
    SFU_CLUSTER_REDIS_URL=redis://127.0.0.1:26379/ SFU_CLUSTER_SECRET=$secret \
    SFU_CLUSTER_NODE_ID=node-${names[$i]} SFU_CLUSTER_TRUNK_LISTEN=127.0.0.1:$((27890 + 100 * i)) \
    SFU_HTTP_LISTEN=127.0.0.1:$((27880 + 100 * i)) SFU_MEDIA_UDP_LISTEN=127.0.0.1:$((27882 + 100 * i)) \
    SFU_MEDIA_WORKERS=1 SFU_MEDIA_ICE_TCP=false SFU_TURN_ENABLED=false SFU_FILES_ENABLED=false \
    SFU_LOG_LEVEL=warn \
      taskset -c "$sfu_cpus" "$out/sfu" >"$out/$1.node-${names[$i]}.log" 2>&1 &
    node_pids+=($!)
  done
  # Ready when every /healthz answers (at most 10 s).
  for i in 0 1 2; do
    for _ in $(seq 100); do
      python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$((27880 + 100 * i))/healthz', timeout=1)" \
        2>/dev/null && break
      sleep 0.1
    done
    kill -0 "${node_pids[$i]}" || { echo "cluster.sh: node ${names[$i]} died, see $out/$1.node-${names[$i]}.log" >&2; exit 1; }
  done
}

stop_nodes() {
  for p in "${node_pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  node_pids=()
}

lt() { # RUN WHO NODE_INDEX DURATION ARGS...
  local run=$1 who=$2 i=$3 d=$4
  shift 4
  taskset -c "$lt_cpus" "$out/loadtest" run --quiet --name "cluster-$run" \
    --url "http://127.0.0.1:$((27880 + 100 * i))" --video "$video" --no-simulcast \
    --join-rate 50 --duration "$d" ${e2ee_flag} --json "$out/$run.$who.json" "$@" >"$out/$run.$who.txt" 2>&1
}

# The steady window: from 3 s after the last viewer started to 2 s before
# the viewers stop. Samples CPU (/proc/PID/stat) and /metrics of each node.
sample() { # RUN START_DELAY WINDOW
  python3 - "$out/$1.sample.json" "$2" "$3" "${node_pids[@]}" <<'EOF'
import json, os, sys, time, urllib.request
path, delay, window, pids = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4:]
tick = os.sysconf("SC_CLK_TCK")
names = "ABC"
def cpu(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / tick  # utime + stime
def metrics(i):
    text = urllib.request.urlopen(f"http://127.0.0.1:{27880 + 100 * i}/metrics", timeout=2).read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("#") or not line:
            continue
        key, value = line.rsplit(" ", 1)
        out[key] = float(value)
    return out
def snap():
    return {names[i]: {"cpu_s": cpu(p), "t": time.monotonic(), "metrics": metrics(i)} for i, p in enumerate(pids)}
time.sleep(delay)
first = snap()
time.sleep(window)
json.dump({"first": first, "last": snap()}, open(path, "w"))
EOF
}

echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)" | tee "$out/loadavg.txt"
for run in "${runs[@]}"; do
  rooms=1
  case $run in
    ingest) split=(0 0 0) rooms=$streams ;;
    local) split=(1 0 0) rooms=$streams ;;
    trunk) split=(0 1 0) rooms=$streams ;;
    one) split=("$viewers" 0 0) ;;
    split) split=($((viewers / 3)) $((viewers / 3)) $((viewers - 2 * (viewers / 3)))) ;;
    *) echo "cluster.sh: unknown run $run" >&2; exit 1 ;;
  esac
  start_nodes "$run"
  # The presenter first, for 4 s longer than the viewers (who start 1 s later).
  lt "$run" pub 0 $((duration + 4)) --rooms "$rooms" --publishers 1 --subscribers 0 --identity-prefix pub- &
  pub=$!
  sleep 1
  pids=()
  for i in 0 1 2; do
    n=${split[$i]}
    [ "$n" -gt 0 ] || continue
    lt "$run" "${names[$i]}" "$i" "$duration" --rooms "$rooms" --publishers 0 --subscribers "$n" --remote-publishers 1 \
      --identity-prefix "v${names[$i]}-" &
    pids+=($!)
  done
  joins=$(python3 -c "print(max(${split[0]}, ${split[1]}, ${split[2]}) * $rooms / 50)")
  sample "$run" "$(python3 -c "print($joins + 3)")" "$(python3 -c "print($duration - 5)")" &
  sampler=$!
  status=0
  for p in "${pids[@]}"; do wait "$p" || status=$?; done
  wait "$pub" || status=$?
  wait "$sampler" || status=$?
  stop_nodes
  echo "$run: exit $status"
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$out/loadavg.txt"

python3 - "$out" "${runs[@]}" <<'EOF' | tee "$out/table.md"
import json, sys
out, runs = sys.argv[1], sys.argv[2:]
def total(m, name, label=None):
    return sum(v for k, v in m.items() if (k == name or k.startswith(name + "{")) and (label is None or label in k))
print("| run | node | viewers | CPU % of a core | RTP in from presenters /s | forwarded /s (Mbit/s) | trunk sent /s | trunk received /s | µs per packet handled | viewers' packet / frame loss % | tracks |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for run in runs:
    try:
        s = json.load(open(f"{out}/{run}.sample.json"))
    except (OSError, ValueError) as e:
        print(f"| {run} | no sample: {e} |")
        continue
    for node in "ABC":
        a, b = s["first"][node], s["last"][node]
        dt = b["t"] - a["t"]
        d = lambda name: (total(b["metrics"], name) - total(a["metrics"], name)) / dt
        cpu = (b["cpu_s"] - a["cpu_s"]) / dt
        fwd = d("sfu_rtp_packets_forwarded_total")
        mbit = d("sfu_rtp_bytes_forwarded_total") * 8 / 1e6
        tsent, trecv = d("sfu_trunk_datagrams_sent_total"), d("sfu_trunk_datagrams_received_total")
        # The node counts packets from the trunk as RTP in too.
        rin = d("sfu_rtp_packets_in_total") - trecv
        handled = rin + fwd + tsent + trecv
        us = f"{cpu * 1e6 / handled:.1f}" if handled > 0 else "-"
        try:
            j = json.load(open(f"{out}/{run}.{node}.json"))
            viewers = j["participants"]
            loss = f'{j["packet_loss_pct"]:.2f} / {j["frame_loss_pct"]:.2f}'
            tracks = f'{j["tracks_received"]}/{j["tracks_expected"]}' + (f' ({j["integrity_errors"]} corrupt)' if j["integrity_errors"] else "")
        except (OSError, ValueError):
            viewers, loss, tracks = 0, "-", "-"
        print(f"| {run} | {node} | {viewers} | {100 * cpu:.1f} | {rin:.0f} | {fwd:.0f} ({mbit:.1f}) | {tsent:.0f} | {trecv:.0f} | {us} | {loss} | {tracks} |")
EOF
