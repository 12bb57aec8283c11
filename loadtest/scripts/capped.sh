#!/usr/bin/env bash
# A loadtest meeting with three-layer simulcast in which some subscribers sit
# behind a capped downlink, run with the SFU's downlink estimation on, off,
# and with the allocator effectively off, then once more with the cap lifted
# half way, writing one JSON summary per process and run and a table.
#   loadtest/scripts/capped.sh [OUT_DIR] [DURATION_SECS]
# Network namespaces (made here, removed on exit whatever happens; needs
# root, ip, tc and python3):
#   capped-sfu-PID   the SFU on 198.18.0.1 (bridge br0), pinned to core 0;
#   capped-main-PID  198.18.0.10: one loadtest process with the publishers and
#                    the uncapped subscribers (it also samples the SFU's cost);
#   capped-cap-PID   198.18.0.11: one loadtest process with the capped
#                    subscribers, same rooms (--publishers 0
#                    --remote-publishers N --identity-prefix cap-); its
#                    bridge port has a tbf qdisc: the downlink of all of them.
# The SFU is pinned to $CAPPED_SFU_CPUS (default 0), both loadtests to
# $CAPPED_LOADTEST_CPUS (default 1); $CAPPED_SFU_LOG is the SFU's log filter
# (default warn; "warn,sfu::media::engine::adapt=debug" logs every
# allocation with its estimate, in OUT_DIR/RUN.sfu.log).
# Output per run: RUN.main.json / RUN.cap.json (loadtest summaries),
# RUN.metrics.txt (the SFU's metrics 2 s before the end), RUN.meta.json,
# and table.md for all runs.
# Runs ($CAPPED_RUNS, default "on off unlimited lift"):
#   on         media.bandwidth_estimation = true (TWCC per subscriber);
#   off        estimation off: every subscriber is assumed to have
#              initial_downlink_kbps ($CAPPED_FIXED_KBPS, default 2000, the
#              SFU's default), so only tiles could lower a layer;
#   unlimited  estimation off with a 1 Gbit/s downlink: every subscriber gets
#              every top layer (the allocator decides nothing), to compare the
#              SFU's CPU per forwarded packet with and without allocation;
#   lift       estimation on; after $CAPPED_LIFT_SECS (default 10) of media the
#              cap is removed, and the capped subscribers' climb is the latest
#              switch of one of their tracks onto the top layer after it.
# Meeting: $CAPPED_ROOMS rooms (3) × $CAPPED_PUBLISHERS publishers (5, audio +
# $CAPPED_VIDEO simulcast, default 360p: q 160×90 45 kbit/s, h 320×180
# 150 kbit/s, f 640×360 450 kbit/s) + $CAPPED_SUBSCRIBERS uncapped (1) +
# $CAPPED_CAPPED capped (1) subscribers per room. The tbf rate is
# $CAPPED_KBIT (default 1000) kbit/s per capped subscriber: they share one link.
# Addresses only from 198.18.0.0/24; ports 17880 (HTTP) and 17882 (media).
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:-/tmp/loadtest-capped}
duration=${2:-20}
rooms=${CAPPED_ROOMS:-3}
publishers=${CAPPED_PUBLISHERS:-5}
subscribers=${CAPPED_SUBSCRIBERS:-1}
capped=${CAPPED_CAPPED:-1}
kbit=${CAPPED_KBIT:-1000}
video=${CAPPED_VIDEO:-360p}
fixed=${CAPPED_FIXED_KBPS:-2000}
lift_after=${CAPPED_LIFT_SECS:-10}
runs=(${CAPPED_RUNS:-on off unlimited lift})
sfu_cpus=${CAPPED_SFU_CPUS:-0}
lt_cpus=${CAPPED_LOADTEST_CPUS:-1}
[ "$(id -u)" = 0 ] || { echo "capped.sh: network namespaces need root" >&2; exit 1; }
for t in ip tc python3 taskset; do
  command -v "$t" >/dev/null || { echo "capped.sh: $t not found" >&2; exit 1; }
done
mkdir -p "$out"
cargo build --release -p sfu -p loadtest
# Private copies: a concurrent build must not replace the binaries mid-run.
cp target/release/sfu "$out/sfu"
cp target/release/loadtest "$out/loadtest"

ns_sfu=capped-sfu-$$ ns_main=capped-main-$$ ns_cap=capped-cap-$$
sfu_pid=
cleanup() {
  [ -n "$sfu_pid" ] && kill "$sfu_pid" 2>/dev/null || true
  for n in "$ns_sfu" "$ns_main" "$ns_cap"; do ip netns del "$n" 2>/dev/null || true; done
}
trap cleanup EXIT
for n in "$ns_sfu" "$ns_main" "$ns_cap"; do
  ip netns add "$n"
  ip -n "$n" link set lo up
done
ip -n "$ns_sfu" link add br0 type bridge
ip -n "$ns_sfu" addr add 198.18.0.1/24 dev br0
ip -n "$ns_sfu" link set br0 up
i=10
for pair in "$ns_main:vmain" "$ns_cap:vcap"; do
  n=${pair%%:*} port=${pair##*:}
  ip -n "$ns_sfu" link add "$port" type veth peer name eth0 netns "$n"
  ip -n "$ns_sfu" link set "$port" master br0 up
  ip -n "$n" addr add "198.18.0.$i/24" dev eth0
  ip -n "$n" link set eth0 up
  i=$((i + 1))
done
rate=$((kbit * capped * rooms))
cap() {
  # The capped namespace's downlink: queueing up to 200 ms, then dropping,
  # as a congested access link does.
  ip netns exec "$ns_sfu" tc qdisc replace dev vcap root tbf rate "${rate}kbit" burst 16kb latency 200ms
}
lift() { ip netns exec "$ns_sfu" tc qdisc del dev vcap root; }
monotonic_us() { python3 -c 'import time; print(int(time.monotonic() * 1e6))'; }

base=http://198.18.0.1:17880
common=(run --quiet --name capped --url "$base" --rooms "$rooms" --video "$video" --join-rate 20)
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)" | tee "$out/loadavg.txt"
for run in "${runs[@]}"; do
  case $run in
    on | lift) est=true kbps=$fixed ;;
    off) est=false kbps=$fixed ;;
    unlimited) est=false kbps=1000000 ;;
    *) echo "capped.sh: unknown run $run" >&2; exit 1 ;;
  esac
  d=$duration
  [ "$run" = lift ] && d=$((duration + lift_after))
  cap
  SFU_TURN_ENABLED=false SFU_MEDIA_ICE_TCP=false SFU_LOG_LEVEL=${CAPPED_SFU_LOG:-warn} SFU_MEDIA_WORKERS=1 \
  SFU_HTTP_LISTEN=198.18.0.1:17880 SFU_MEDIA_UDP_LISTEN=198.18.0.1:17882 \
  SFU_MEDIA_TCP_LISTEN=198.18.0.1:17881 \
  SFU_MEDIA_BANDWIDTH_ESTIMATION=$est SFU_MEDIA_INITIAL_DOWNLINK_KBPS=$kbps \
    ip netns exec "$ns_sfu" taskset -c "$sfu_cpus" "$out/sfu" >"$out/$run.sfu.log" 2>&1 &
  sfu_pid=$!
  # Ready when /healthz answers (at most 10 s).
  for _ in $(seq 100); do
    ip netns exec "$ns_main" python3 -c "import urllib.request; urllib.request.urlopen('$base/healthz', timeout=1)" \
      2>/dev/null && break
    sleep 0.1
  done
  start_us=$(monotonic_us)
  # The publishers' process runs 2 s longer: the capped subscribers' tracks
  # must end while the meeting is whole (when publishers leave, what is left
  # fits better and the layers they end on would climb).
  ip netns exec "$ns_main" taskset -c "$lt_cpus" "$out/loadtest" "${common[@]}" \
    --publishers "$publishers" --subscribers "$subscribers" --duration "$((d + 2))" \
    --sfu-pid "$sfu_pid" --sfu-metrics "$base/metrics" --json "$out/$run.main.json" \
    >"$out/$run.main.txt" 2>&1 &
  main=$!
  ip netns exec "$ns_cap" taskset -c "$lt_cpus" "$out/loadtest" "${common[@]}" \
    --publishers 0 --subscribers "$capped" --remote-publishers "$publishers" \
    --identity-prefix cap- --duration "$d" --json "$out/$run.cap.json" \
    >"$out/$run.cap.txt" 2>&1 &
  capd=$!
  # The SFU's metrics 2 s before the end of media (paused tracks, layer changes).
  joins=$(python3 -c "print($rooms * ($publishers + $subscribers) / 20)")
  (sleep "$(python3 -c "print($joins + $d - 2)")"
   ip netns exec "$ns_main" python3 -c "import urllib.request; print(urllib.request.urlopen('$base/metrics', timeout=2).read().decode())" \
     >"$out/$run.metrics.txt" 2>&1) &
  scrape=$!
  lift_us=0
  if [ "$run" = lift ]; then
    # Joins take (participants / 20) s; media then runs lift_after s capped.
    sleep "$(python3 -c "print($joins + $lift_after)")"
    lift_us=$(monotonic_us)
    lift
  fi
  s1=0 s2=0
  wait "$main" || s1=$?
  wait "$capd" || s2=$?
  wait "$scrape" || true
  kill "$sfu_pid"
  wait "$sfu_pid" 2>/dev/null || true
  sfu_pid=
  echo "$run: main exit $s1, capped exit $s2"
  echo "{\"run\":\"$run\",\"estimation\":$est,\"initial_downlink_kbps\":$kbps,\"cap_kbit\":$rate,\"start_us\":$start_us,\"lift_us\":$lift_us}" \
    >"$out/$run.meta.json"
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$out/loadavg.txt"
python3 - "$out" "${runs[@]}" <<'EOF' | tee "$out/table.md"
import json, sys
out, runs = sys.argv[1], sys.argv[2:]
def group(j, name):
    return next((g for g in j["video_layers"] if g["group"] == name), None)
def layers(g):
    if not g:
        return "-"
    # Tracks per layer they ended on, and the share of frames per layer.
    total = sum(sum(l["frames_by_temporal"]) for l in g["layers"]) or 1
    frames = " ".join(f'{l["rid"] or "single"} {100 * sum(l["frames_by_temporal"]) / total:.0f}%' for l in g["layers"])
    rids = {l["layer"]: l["rid"] for l in g["layers"]}
    ended = " ".join(f'{rids.get(s["layer"], s["layer"])}×{s["tracks"]}' for s in g["settled"])
    return f"{ended} ({frames})"
def freezes(g):
    return f'{g["freezes"]} / {g["longest_gap_us"] / 1000:.0f} / {g.get("stopped_tracks", 0)}' if g else "-"
def metric(run, name):
    # "value", or "label value, ..." for a labelled one.
    found = []
    try:
        for line in open(f"{out}/{run}.metrics.txt"):
            if line.startswith(name + " "):
                found.append(f"{float(line.split()[-1]):.0f}")
            elif line.startswith(name + "{"):
                label = line[line.index('"') + 1:line.rindex('"')]
                found.append(f"{label} {float(line.split()[-1]):.0f}")
    except OSError:
        pass
    return ", ".join(found) or "-"
print("| run | group | video tracks ended on (frames per layer) | tracks | frame loss % | latency p50 / p99 ms | freezes ≥ 0.5 s / longest gap ms / tracks stopped | failed | SFU CPU µs / fwd packet | fwd packets/s |")
print("|---|---|---|---|---|---|---|---|---|---|")
for run in runs:
    meta = json.load(open(f"{out}/{run}.meta.json"))
    for who in ("main", "cap"):
        try:
            j = json.load(open(f"{out}/{run}.{who}.json"))
        except (OSError, ValueError) as e:
            print(f"| {run} | {who} | no summary: {e} |")
            continue
        srv = j["server"]
        names = ["publishers", "subscribers"] if who == "main" else ["subscribers"]
        for name in names:
            g = group(j, name)
            label = {"main": "uncapped ", "cap": "capped "}[who] + name
            cost = "-"
            if who == "main" and name == "publishers":
                us = srv.get("cpu_us_per_packet")
                pps = srv.get("forwarded_pps")
                cost = f"{us:.1f} | {pps:.0f}" if us and pps else "- | -"
            else:
                cost = " | "
            # Tracks, loss, latency and failures are the process's (both of
            # its groups together): on its first row only.
            proc = (f'{j["tracks_received"]}/{j["tracks_expected"]} | {j["frame_loss_pct"]:.1f} | '
                    f'{j["latency_ms"]["p50"]:.1f} / {j["latency_ms"]["p99"]:.1f}')
            if name == "subscribers" and who == "main":
                proc = "″ | ″ | ″"
            failed = "″" if name == "subscribers" and who == "main" else j["failed"]
            print(f'| {run} | {label} | {layers(g)} | {proc} | {freezes(g)} | {failed} | {cost} |')
        if who == "cap":
            print(f'| {run} | SFU 2 s before the end | paused video tracks {metric(run, "sfu_paused_video_tracks")}; '
                  f'layer changes: {metric(run, "sfu_layer_changes_total")}; '
                  f'keyframe requests: {metric(run, "sfu_keyframe_requests_total")} |')
        if who == "cap" and meta["lift_us"]:
            g = group(j, "subscribers")
            top = max((l["layer"] for l in g["layers"]), default=None) if g else None
            s = next((s for s in g["settled"] if s["layer"] == top), None) if g else None
            n = s["tracks"] if s else 0
            line = f'| {run} | capped climb | {n} of {g["video_tracks"] if g else 0} video tracks ended on the top layer'
            if s and s["last_since_us"] >= meta["lift_us"]:
                line += f', the last of them got there {(s["last_since_us"] - meta["lift_us"]) / 1e6:.1f} s after the cap was lifted'
            elif s:
                line += ' (all already before the cap was lifted)'
            print(line + " |")
EOF
