#!/usr/bin/env bash
# benches/turn/compare.sh — our turn-server against coturn, side by side, in
# one run (issue "TURN relay server", section "Measure, side by side with
# coturn, in one run").
#
# On loopback only. Builds `turn-server` (release, shared target dir), starts
# coturn (`turnserver`, Debian package coturn) and our server with the same
# settings on their own ports, drives each in turn with identical
# `turnutils_uclient` loads and records, per run: messages sent, received and
# lost, messages per second, and the server's CPU (fields 14+15 of
# /proc/PID/stat) per relayed datagram. Then it holds N allocations on a
# fresh instance of each (benches/turn/holder, raw STUN) and reads the
# server's VmRSS before and while they are held. Finally it writes the
# section "TURN relay vs coturn (issue: TURN relay)" of benches/RESULTS.md
# (replacing that section only) from the raw figures (benches/turn/report.py).
#
#   benches/turn/compare.sh [--no-write] [--skip-build]
#
# Environment (defaults in brackets):
#   REPEAT [3]           runs of every load against each server (median reported)
#   STEADY_N [5000]      messages per client, steady and TCP loads (-n)
#   FLOOD_N [5000]       messages per client, flood load (-z 0)
#   CLIENTS [40]         uclient clients (-m)
#   RSS_N [2000]         allocations held for RSS per allocation
#   BIG_N [auto]         second, larger RSS point (both servers); auto = what the
#                        fd hard limit allows (limit - 1000), at most 100000 (0 = skip)
#   HELD_N [auto]        if larger than BIG_N: also hold this many on ours alone
#   PERF [0]             1: one extra steady run per server under `perf record`,
#                        top symbols in $OUT/perf-*.txt (not in the CPU table)
#   PIN [auto]           1/0: pin servers to CPU 0 and uclient+peer to CPU 1
#   MAX_SECONDS [900]    watchdog for everything after the build
#   OUT [target/turn-compare]  logs and raw figures
#   COTURN_PORT [36780] OURS_PORT [36880] OURS_METRICS_PORT [36890]
#   COTURN_PEER_PORT [36800] OURS_PEER_PORT [36900]  (each peer also takes port+1)
#
# Every process this script starts is recorded and stopped on exit, failure,
# Ctrl-C or the watchdog (trap on EXIT/INT/TERM).

set -Eeuo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HERE="$ROOT/benches/turn"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
OUT=${OUT:-$CARGO_TARGET_DIR/turn-compare}
RESULTS_MD=${RESULTS_MD:-$ROOT/benches/RESULTS.md}
MAX_SECONDS=${MAX_SECONDS:-900}

WRITE=1
BUILD=1
INNER=0
for arg in "$@"; do
    case "$arg" in
    --no-write) WRITE=0 ;;
    --skip-build) BUILD=0 ;;
    --measure) INNER=1 ;;
    -h | --help)
        sed -n '2,/^$/p' "$0" | sed 's/^# \{0,1\}//'
        exit 0
        ;;
    *)
        echo "compare.sh: unknown argument $arg (try --help)" >&2
        exit 2
        ;;
    esac
done

die() {
    echo "compare.sh: $*" >&2
    exit 1
}
log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

# ---------------------------------------------------------------- phase 1
# Tools and the build run outside the watchdog (a clean release build takes
# minutes on 2 cores); everything after is re-executed under `timeout`.
if [[ $INNER == 0 ]]; then
    missing=()
    for tool in cargo turnserver turnutils_uclient turnutils_peer python3 timeout awk; do
        command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
    done
    if ((${#missing[@]})); then
        die "missing tools: ${missing[*]} (Debian: apt-get install coturn python3 coreutils gawk; Rust: rustup)"
    fi
    [[ -r /proc/self/stat ]] || die "needs Linux /proc"
    mkdir -p "$OUT"
    if [[ $BUILD == 1 ]]; then
        log "building turn-server (release, target dir $CARGO_TARGET_DIR)"
        (cd "$ROOT" && timeout 1800 cargo build --release -p turn-server) ||
            die "cargo build --release -p turn-server failed"
        log "building benches/turn/holder"
        (cd "$HERE/holder" && { timeout 900 cargo build --release --offline 2>/dev/null ||
            timeout 900 cargo build --release; }) ||
            die "building benches/turn/holder failed"
    fi
    for bin in turn-server turn-holder; do
        [[ -x $CARGO_TARGET_DIR/release/$bin ]] || die "$CARGO_TARGET_DIR/release/$bin missing (build failed?)"
    done
    exec timeout --foreground -s TERM -k 20 "$MAX_SECONDS" "$0" --measure "$@"
fi

# ---------------------------------------------------------------- phase 2
OURS_BIN=$CARGO_TARGET_DIR/release/turn-server
HOLDER=$CARGO_TARGET_DIR/release/turn-holder
REPEAT=${REPEAT:-3}
STEADY_N=${STEADY_N:-5000}
FLOOD_N=${FLOOD_N:-5000}
CLIENTS=${CLIENTS:-40}
RSS_N=${RSS_N:-2000}
PERF=${PERF:-0}
COTURN_PORT=${COTURN_PORT:-36780}
OURS_PORT=${OURS_PORT:-36880}
OURS_METRICS_PORT=${OURS_METRICS_PORT:-36890}
COTURN_PEER_PORT=${COTURN_PEER_PORT:-36800}
OURS_PEER_PORT=${OURS_PEER_PORT:-36900}
# Relay ports for the uclient loads: above the kernel's ephemeral range
# (32768-60999), so no client socket of this or any other process can
# hold one, and away from the 40000-49999 other local tests use.
COTURN_RELAY=(61000 63199)
OURS_RELAY=(63200 65399)
RUN_TIMEOUT=${RUN_TIMEOUT:-90}
CLK_TCK=$(getconf CLK_TCK 2>/dev/null || echo 100)

mkdir -p "$OUT"
rm -f "$OUT"/runs.tsv "$OUT"/rss.tsv "$OUT"/meta.env "$OUT"/*.log "$OUT"/perf-*.txt
RUNS=$OUT/runs.tsv
RSS=$OUT/rss.tsv
META=$OUT/meta.env

PIDS=()
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    local p
    for p in "${PIDS[@]}"; do
        kill -TERM "$p" 2>/dev/null || true
    done
    for _ in $(seq 30); do
        local alive=0
        for p in "${PIDS[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
        ((alive)) || break
        sleep 0.1
    done
    for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    ((rc == 0)) || log "stopped (status $rc); logs in $OUT"
    exit "$rc"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT
trap 'log "terminated (watchdog MAX_SECONDS=$MAX_SECONDS or signal)"; exit 143' TERM

forget() { # drop a PID from the cleanup list once it has been waited for
    local p keep=()
    for p in "${PIDS[@]}"; do [[ $p == "$1" ]] || keep+=("$p"); done
    PIDS=("${keep[@]}")
}

stop() { # stop one process we started and wait for it
    local pid=$1
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    forget "$pid"
}

# Pinning: servers on CPU 0, load generator (uclient and peer) on CPU 1.
NPROC=$(nproc)
if [[ ${PIN:-auto} == auto ]]; then
    if command -v taskset >/dev/null && ((NPROC >= 2)); then PIN=1; else PIN=0; fi
fi
if [[ $PIN == 1 ]]; then
    SRV_PIN=(taskset -c 0)
    GEN_PIN=(taskset -c 1)
else
    SRV_PIN=()
    GEN_PIN=()
fi

# Ports must be free: another server on them would share or steal traffic.
port_bound() { # proto port -> 0 if a UDP socket is bound to / TCP listens on it
    local hex
    hex=$(printf '%04X' "$2")
    cat "/proc/net/$1" "/proc/net/${1}6" 2>/dev/null |
        awk -v h="$hex" -v p="$1" '$2 ~ (":" h "$") && (p == "udp" || $4 == "0A") { f = 1 }
            END { exit !f }'
}
for p in "$COTURN_PORT" $((COTURN_PORT + 1)) "$OURS_PORT" "$OURS_METRICS_PORT" \
    "$COTURN_PEER_PORT" $((COTURN_PEER_PORT + 1)) "$OURS_PEER_PORT" $((OURS_PEER_PORT + 1)); do
    if port_bound udp "$p" || port_bound tcp "$p"; then
        die "port $p is in use; choose others (COTURN_PORT, OURS_PORT, ... see --help)"
    fi
done

wait_until() { # seconds description command...
    local secs=$1 what=$2
    shift 2
    local end=$((SECONDS + secs))
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < end)) || die "timed out after ${secs}s waiting for $what"
        sleep 0.1
    done
}

ticks() { # utime stime of a live process (fields 14, 15 of /proc/PID/stat)
    # The command name (field 2) may contain spaces: count from after ')'.
    local s
    s=$(<"/proc/$1/stat")
    s=${s##*) }
    awk '{ print $12, $13 }' <<<"$s"
}
rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
cpu_busy() { # "busy idle": jiffies all CPUs spent not idle, and idle (+ iowait)
    awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9, $5 + $6 }' /proc/stat
}
metric() { # our server's Prometheus value: port name-with-labels
    local body
    body=$(curl -s --max-time 5 "http://127.0.0.1:$1/metrics" 2>/dev/null) || {
        echo NA
        return
    }
    # A labelled counter appears with its first increment: absent means 0.
    awk -v m="$2" '$1 == m { print $2; f = 1 } END { if (!f) print 0 }' <<<"$body"
}

# ---------------------------------------------------------------- servers
# coturn exactly as DESIGN-NOTES runs it, on this script's ports, logging to
# a file in $OUT (--log-file/--simple-log: where the log goes, nothing else).
start_coturn() { # tag min_port max_port relay_ip...
    local tag=$1 lo=$2 hi=$3
    shift 3
    local relays=()
    local ip
    for ip in "$@"; do relays+=("--relay-ip=$ip"); done
    "${SRV_PIN[@]}" turnserver -n --listening-ip=127.0.0.1 "${relays[@]}" "${COTURN_EXTRA[@]}" \
        --listening-port="$COTURN_PORT" --min-port="$lo" --max-port="$hi" \
        --lt-cred-mech --user=test:test123 --realm=bench.local \
        --no-tls --no-dtls --no-cli --allow-loopback-peers --relay-threads=2 \
        --log-file="$OUT/coturn-$tag.log" --simple-log >>"$OUT/coturn-$tag.out" 2>&1 &
    COTURN_PID=$!
    PIDS+=("$COTURN_PID")
    wait_until 15 "coturn on UDP $COTURN_PORT (log: $OUT/coturn-$tag.log)" port_bound udp "$COTURN_PORT"
    if [[ ${#COTURN_EXTRA[@]} == 0 ]]; then
        wait_until 15 "coturn on TCP $COTURN_PORT (log: $OUT/coturn-$tag.log)" port_bound tcp "$COTURN_PORT"
    fi
}
# coturn binds its TCP listener without SO_REUSEADDR: a restart fails while
# connections of the previous instance linger (TIME_WAIT, 60 s). So coturn
# listens on TCP only for the TCP load (`--no-tcp` otherwise: an idle
# listener, nothing to do with UDP relaying), and the TCP load first waits
# until nothing holds the port. TCP runs are more than 60 s apart.
COTURN_EXTRA=(--no-tcp)
tcp_port_idle() { # no TCP socket in any state has local port $1
    local hex
    hex=$(printf '%04X' "$1")
    ! cat /proc/net/tcp /proc/net/tcp6 2>/dev/null | awk -v h="$hex" '$2 ~ (":" h "$") { f = 1 } END { exit !f }'
}

# Ours with the same settings: 2 workers, realm, user, loopback peers
# allowed, no bandwidth cap, unauthenticated rate limit and per-user
# allocation quota out of the way (coturn has neither by default).
start_ours() { # tag min_port max_port relay_ip...
    local tag=$1 lo=$2 hi=$3
    shift 3
    local ips
    ips=$(printf '"%s", ' "$@")
    cat >"$OUT/ours-$tag.toml" <<EOF
[server]
realm = "bench.local"
workers = 2
[listen]
udp = ["127.0.0.1:$OURS_PORT"]
tcp = ["127.0.0.1:$OURS_PORT"]
[relay]
ips = [${ips%, }]
port_min = $lo
port_max = $hi
[auth]
users = { test = "test123" }
[policy]
allow = ["127.0.0.1/32"]
[limits]
max_allocations = 1000000
max_allocations_per_user = 1000000
bandwidth_bytes_per_s = 0
unauthenticated_per_s = 1000000.0
unauthenticated_burst = 1000000.0
[metrics]
listen = "127.0.0.1:$OURS_METRICS_PORT"
EOF
    RUST_LOG=${OURS_LOG:-warn} "${SRV_PIN[@]}" "$OURS_BIN" --config "$OUT/ours-$tag.toml" \
        >>"$OUT/ours-$tag.log" 2>&1 &
    OURS_PID=$!
    PIDS+=("$OURS_PID")
    wait_until 15 "turn-server on UDP $OURS_PORT (log: $OUT/ours-$tag.log)" port_bound udp "$OURS_PORT"
    wait_until 15 "turn-server metrics on $OURS_METRICS_PORT" port_bound tcp "$OURS_METRICS_PORT"
}

start_peer() { # port -> PEER_PID
    "${GEN_PIN[@]}" turnutils_peer -L 127.0.0.1 -p "$1" >"$OUT/peer-$1.log" 2>&1 &
    PEER_PID=$!
    PIDS+=("$PEER_PID")
    wait_until 10 "turnutils_peer on $1" port_bound udp "$1"
}

# One allocation end to end (401, authenticated Allocate, ChannelBind): the
# server is up and its settings work.
check_alloc() { # port peer_port
    timeout 20 "$HOLDER" --server "127.0.0.1:$1" --user test --pass test123 --count 1 \
        --peer "127.0.0.1:$2" --client-net 127.0.9.0 --hold-secs 0 --timeout-ms 300 --retries 10 |
        grep -q '^HELD ok=1 '
}

# ---------------------------------------------------------------- meta
{
    echo "date='$(date -u '+%Y-%m-%d %H:%M UTC')'"
    echo "nproc='$NPROC'"
    echo "cpu_model='$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)'"
    echo "cpu_mhz='$(awk -F': ' '/^cpu MHz/ { printf "%.0f", $2; exit }' /proc/cpuinfo)'"
    echo "kernel='$(uname -r)'"
    echo "coturn_version='$(turnserver --version 2>/dev/null | head -1)'"
    echo "rustc='$(rustc --version 2>/dev/null || echo unknown)'"
    echo "git_rev='$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)'"
    echo "git_dirty='$(git -C "$ROOT" status --porcelain -- turn-server 2>/dev/null | wc -l)'"
    echo "pin='$PIN'"
    echo "repeat='$REPEAT'"
    echo "clients='$CLIENTS'"
    echo "steady_n='$STEADY_N'"
    echo "flood_n='$FLOOD_N'"
    echo "clk_tck='$CLK_TCK'"
    echo "loadavg_start='$(cut -d' ' -f1-3 /proc/loadavg)'"
    echo "nofile_hard='$(ulimit -Hn)'"
    echo "coturn_port='$COTURN_PORT'"
    echo "ours_port='$OURS_PORT'"
    echo "ours_metrics_port='$OURS_METRICS_PORT'"
    echo "coturn_peer_port='$COTURN_PEER_PORT'"
    echo "ours_peer_port='$OURS_PEER_PORT'"
    echo "coturn_relay='${COTURN_RELAY[0]}-${COTURN_RELAY[1]}'"
    echo "ours_relay='${OURS_RELAY[0]}-${OURS_RELAY[1]}'"
} >"$META"

# ---------------------------------------------------------------- loads
# Every uclient run gets a freshly started server, alone on its CPU: uclient
# closes its sockets without deallocating, so allocations of earlier runs
# would linger (until their lifetime ends) and a new client socket could
# reuse an old 5-tuple (437 Allocation Mismatch and worse).
log "coturn: UDP/TCP $COTURN_PORT, relay ${COTURN_RELAY[0]}-${COTURN_RELAY[1]}; turn-server: UDP/TCP $OURS_PORT, relay ${OURS_RELAY[0]}-${OURS_RELAY[1]}; pinning: $PIN"
up() { # server [load] -> SRV_PID (started, and one allocation made through it)
    if [[ $1 == ours ]]; then
        start_ours load "${OURS_RELAY[@]}" 127.0.0.1
        SRV_PID=$OURS_PID
        wait_until 20 "a test allocation on turn-server" check_alloc "$OURS_PORT" "$OURS_PEER_PORT"
    else
        if [[ ${2:-} == tcp ]]; then
            COTURN_EXTRA=()
            wait_until 75 "TCP port $COTURN_PORT to be free of old connections" tcp_port_idle "$COTURN_PORT"
        else
            COTURN_EXTRA=(--no-tcp)
        fi
        start_coturn load "${COTURN_RELAY[@]}" 127.0.0.1
        COTURN_EXTRA=(--no-tcp)
        SRV_PID=$COTURN_PID
        wait_until 20 "a test allocation on coturn" check_alloc "$COTURN_PORT" "$COTURN_PEER_PORT"
    fi
}
# Each server gets its own peer (echo) process, on the load generator's CPU.
start_peer "$COTURN_PEER_PORT"
COTURN_PEER=$PEER_PID
start_peer "$OURS_PEER_PORT"
OURS_PEER=$PEER_PID
up ours
OURS_TCP=1
port_bound tcp "$OURS_PORT" || OURS_TCP=0
stop "$SRV_PID"
echo "ours_tcp='$OURS_TCP'" >>"$META"

printf 'server\tload\trep\tflags\trc\tsent\trecv\tlost\ttransmit_s\tactive_s\twall_s\tsrv_utime\tsrv_stime\tother_srv_ticks\tpeer_ticks\tgen_ticks\tbusy_ticks\tidle_ticks\tto_peer\tto_client\tdrop_srv_client\tdrop_srv_relay\tdrop_peer\tdrop_uclient\n' >"$RUNS"

CFLAG=""
load_args() { # load -> uclient arguments
    case $1 in
    steady) echo "-z 1 -m $CLIENTS -n $STEADY_N -l 1200" ;;
    tcp) echo "-t -z 1 -m $CLIENTS -n $STEADY_N -l 1200" ;;
    flood) echo "-z 0 -m $CLIENTS -n $FLOOD_N -l 1200" ;;
    esac
}

# One uclient run against one server; appends a row to runs.tsv.
run_load() { # server load rep -> status 0 if uclient finished with a summary
    local srv=$1 load=$2 rep=$3
    local pid port peer peerport
    up "$srv" "$load"
    pid=$SRV_PID
    if [[ $srv == ours ]]; then
        port=$OURS_PORT peer=$OURS_PEER peerport=$OURS_PEER_PORT
    else
        port=$COTURN_PORT peer=$COTURN_PEER peerport=$COTURN_PEER_PORT
    fi
    local perf_pid=""
    if [[ ${PERF_THIS:-0} == 1 ]]; then
        timeout 120 perf record -F 1999 -g -p "$pid" -o "$OUT/perf-$srv.data" >/dev/null 2>&1 &
        perf_pid=$!
        PIDS+=("$perf_pid")
        sleep 0.5
    fi
    local args
    args="$CFLAG $(load_args "$load")"
    local logf="$OUT/uclient-$srv-$load-$rep.log"
    local to_peer0=NA to_client0=NA
    if [[ $srv == ours ]]; then
        to_peer0=$(metric "$OURS_METRICS_PORT" 'turn_relayed_packets_total{direction="to_peer"}')
        to_client0=$(metric "$OURS_METRICS_PORT" 'turn_relayed_packets_total{direction="to_client"}')
    fi
    # Receive-buffer drops per socket kind, sampled on the load generator's CPU.
    local relay_lo relay_hi
    if [[ $srv == ours ]]; then
        relay_lo=${OURS_RELAY[0]} relay_hi=${OURS_RELAY[1]}
    else
        relay_lo=${COTURN_RELAY[0]} relay_hi=${COTURN_RELAY[1]}
    fi
    rm -f "$logf.drops"
    "${GEN_PIN[@]}" python3 "$HERE/report.py" drops --server-port "$port" --relay-lo "$relay_lo" \
        --relay-hi "$relay_hi" --peer-port "$peerport" --out "$logf.drops" &
    local dpid=$!
    PIDS+=("$dpid")
    sleep 0.3 # its baseline sample
    local s0 p0 o0 b0 t0
    s0=$(ticks "$pid")
    p0=$(ticks "$peer")
    o0="0 0" # the other server is not running
    b0=$(cpu_busy)
    t0=$EPOCHREALTIME
    # shellcheck disable=SC2086 # word splitting of $args is intended
    (
        # Stopped by cleanup: take uclient (and its timeout) along.
        trap 'kill -TERM "$child" 2>/dev/null; wait "$child"; exit 143' TERM
        rc=0
        timeout -k 5 "$RUN_TIMEOUT" "${GEN_PIN[@]}" turnutils_uclient $args \
            -e 127.0.0.1 -r "$peerport" -u test -w test123 -p "$port" 127.0.0.1 &
        child=$!
        wait "$child" || rc=$?
        times >"$logf.times" # user/system time of this subshell's children: uclient
        exit $rc
    ) >"$logf" 2>&1 &
    local upid=$!
    PIDS+=("$upid")
    local rc=0
    wait "$upid" || rc=$?
    forget "$upid"
    local t1 s1 p1 o1 b1
    t1=$EPOCHREALTIME
    s1=$(ticks "$pid")
    p1=$(ticks "$peer")
    o1="0 0"
    b1=$(cpu_busy)
    stop "$dpid"
    if [[ -n $perf_pid ]]; then
        kill -INT "$perf_pid" 2>/dev/null || true
        wait "$perf_pid" 2>/dev/null || true
        forget "$perf_pid"
    fi
    local to_peer1=NA to_client1=NA
    if [[ $srv == ours ]]; then
        to_peer1=$(metric "$OURS_METRICS_PORT" 'turn_relayed_packets_total{direction="to_peer"}')
        to_client1=$(metric "$OURS_METRICS_PORT" 'turn_relayed_packets_total{direction="to_client"}')
    fi
    python3 "$HERE/report.py" row \
        --server "$srv" --load "$load" --rep "$rep" --flags="$args" --rc "$rc" --clk "$CLK_TCK" \
        --log "$logf" --times "$logf.times" --t0 "$t0" --t1 "$t1" \
        --srv0 "$s0" --srv1 "$s1" --peer0 "$p0" --peer1 "$p1" --other0 "$o0" --other1 "$o1" \
        --busy0 "$b0" --busy1 "$b1" \
        --metrics0 "$to_peer0 $to_client0" --metrics1 "$to_peer1 $to_client1" \
        --drops "$logf.drops" >>"$RUNS"
    stop "$pid"
    local last
    last=$(tail -1 "$RUNS")
    log "$(awk -F'\t' '{ printf "%-6s %-6s rep %s rc %s: sent %s recv %s lost %s, transmit %ss, server ticks %s+%s", $1, $2, $3, $5, $6, $7, $8, $9, $12, $13 }' <<<"$last")"
    [[ $rc == 0 ]] && grep -q 'Total lost packets' "$logf" &&
        [[ $(awk -F'\t' '{ print $7 }' <<<"$last") -gt 0 ]]
}

# Steady load without -c first, on our server: uclient then asks for RTP/RTCP
# pairs (EVEN-PORT with the R bit, RESERVATION-TOKEN). If that fails, every
# run of both servers uses -c (no RTCP pair).
log "steady load without -c on turn-server first (EVEN-PORT pairs)"
if run_load ours steady 1; then
    echo "cflag_fallback='0'" >>"$META"
else
    log "turn-server failed the RTP/RTCP-pair load (EVEN-PORT reservations?): every run now uses -c, on both servers"
    echo "cflag_fallback='1'" >>"$META"
    CFLAG="-c"
    mv "$OUT/uclient-ours-steady-1.log" "$OUT/uclient-ours-steady-1-without-c.log"
    # Keep the failed row, marked, out of the figures.
    sed -i '$ s/^ours\tsteady\t1\t/ours\tsteady-without-c\t1\t/' "$RUNS"
    run_load ours steady 1 || log "turn-server steady run 1 failed with -c too"
fi

OURS_TCP_OK=$OURS_TCP
for rep in $(seq 1 "$REPEAT"); do
    for load in steady tcp flood; do
        # Alternate which server goes first, so drifting background load
        # does not always hit the same one.
        if ((rep % 2)); then order=(coturn ours); else order=(ours coturn); fi
        for srv in "${order[@]}"; do
            [[ $srv == ours && $load == steady && $rep == 1 ]] && continue # done above
            if [[ $srv == ours && $load == tcp && $OURS_TCP_OK == 0 ]]; then
                continue
            fi
            if ! run_load "$srv" "$load" "$rep"; then
                log "$srv $load run $rep did not finish cleanly (see $OUT/uclient-$srv-$load-$rep.log)"
                if [[ $srv == ours && $load == tcp && $rep == 1 ]]; then
                    log "our TCP listener does not carry the load: TCP not measured for turn-server"
                    OURS_TCP_OK=0
                fi
            fi
        done
    done
done
echo "ours_tcp_ok='$OURS_TCP_OK'" >>"$META"
echo "cflag='$CFLAG'" >>"$META"

if [[ $PERF == 1 ]] && command -v perf >/dev/null; then
    for srv in ours coturn; do
        log "perf: steady run on $srv (not counted)"
        PERF_THIS=1 run_load "$srv" steady perf || true
        sed -i '$ d' "$RUNS" # perf-disturbed run: not in the table
        timeout 120 perf report -i "$OUT/perf-$srv.data" --no-children --sort dso,sym --stdio \
            2>/dev/null | grep -v '^$' | head -80 >"$OUT/perf-$srv.txt" || true
    done
fi

echo "loadavg_after_loads='$(cut -d' ' -f1-3 /proc/loadavg)'" >>"$META"
stop "$OURS_PEER"
stop "$COTURN_PEER"

# ---------------------------------------------------------------- memory
# Fresh servers; relay addresses 127.0.2.x (ours) and 127.0.3.x (coturn),
# ports 61000-65535 on each (4536 per address, above the ephemeral range);
# clients of the holder on 127.0.1.x. One relay socket per allocation on
# both servers: the fd limit caps N.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
NOFILE=$(ulimit -n)
[[ $NOFILE =~ ^[0-9]+$ ]] || NOFILE=1048576 # "unlimited"
relay_ips() { # prefix count
    local i
    for i in $(seq 1 "$2"); do printf '%s.%s ' "$1" "$i"; done
}
PEER_FOR_BIND=127.0.0.1:$OURS_PEER_PORT # ChannelBind target; need not listen

hold() { # server n tag -> row in rss.tsv
    local srv=$1 n=$2 tag=$3
    local nip=$(((n * 11 / 10) / 4536 + 1))
    local pid port
    if [[ $srv == ours ]]; then
        # shellcheck disable=SC2046
        start_ours "$tag" 61000 65535 $(relay_ips 127.0.2 "$nip")
        pid=$OURS_PID port=$OURS_PORT
    else
        # shellcheck disable=SC2046
        start_coturn "$tag" 61000 65535 $(relay_ips 127.0.3 "$nip")
        pid=$COTURN_PID port=$COTURN_PORT
    fi
    # Warm-up: one allocation (first-use allocations of the server are not
    # counted), then the baseline.
    wait_until 20 "a test allocation on $srv" check_alloc "$port" "$OURS_PEER_PORT"
    sleep 1
    local r0
    r0=$(rss_kb "$pid")
    local hlog="$OUT/holder-$srv-$tag.log"
    "$HOLDER" --server "127.0.0.1:$port" --user test --pass test123 --count "$n" \
        --peer "$PEER_FOR_BIND" --client-net 127.0.1.0 --per-ip 20000 --hold-secs 600 \
        >"$hlog" 2>&1 &
    local hpid=$!
    PIDS+=("$hpid")
    local end=$((SECONDS + 240)) ok=0
    while ((SECONDS < end)); do
        grep -q '^HELD' "$hlog" && {
            ok=1
            break
        }
        kill -0 "$hpid" 2>/dev/null || break
        sleep 0.2
    done
    sleep 1 # let the server settle (deferred frees, timers)
    local r1 a1=NA
    r1=$(rss_kb "$pid")
    [[ $srv == ours ]] && a1=$(metric "$OURS_METRICS_PORT" turn_allocations)
    local held
    held=$(grep -o '^HELD ok=[0-9]*' "$hlog" | cut -d= -f2 || true)
    local line
    line=$(grep '^HELD' "$hlog" || echo "HELD none")
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$srv" "$tag" "$n" "${held:-0}" "$r0" "$r1" "$a1" "${line#HELD }" >>"$RSS"
    log "$srv holds ${held:-0}/$n allocations: VmRSS $r0 -> $r1 kB ($line)"
    ((ok)) || log "holder did not finish within 240 s (see $hlog)"
    stop "$hpid"
    stop "$pid"
}

printf 'server\ttag\tn\theld\trss0_kb\trss1_kb\tallocations_metric\tholder\n' >"$RSS"
for srv in ours coturn; do hold "$srv" "$RSS_N" small; done

# A larger point for both: as many as the fd limit allows, at most 100,000
# (each server takes one descriptor per UDP allocation: its relay socket).
if [[ ${BIG_N:-auto} == auto ]]; then
    BIG_N=$(((NOFILE - 1000) / 1000 * 1000))
    ((BIG_N > 100000)) && BIG_N=100000
fi
if ((BIG_N > RSS_N)); then
    for srv in ours coturn; do hold "$srv" "$BIG_N" big; done
fi
# More on ours alone, if asked for (the 100,000 target; needs the fd limit).
if [[ ${HELD_N:-auto} == auto ]]; then
    HELD_N=$BIG_N
fi
if ((HELD_N > BIG_N)); then
    hold ours "$HELD_N" max
fi
{
    echo "nofile='$NOFILE'"
    echo "big_n='$BIG_N'"
    echo "held_n='$HELD_N'"
    echo "loadavg_end='$(cut -d' ' -f1-3 /proc/loadavg)'"
    echo "elapsed_min='$(((SECONDS + 30) / 60))'"
} >>"$META"

# ---------------------------------------------------------------- report
python3 "$HERE/report.py" section --runs "$RUNS" --rss "$RSS" --meta "$META" \
    >"$OUT/section.md"
if [[ $WRITE == 1 ]]; then
    python3 "$HERE/report.py" write --section "$OUT/section.md" --results "$RESULTS_MD"
    log "wrote the section 'TURN relay vs coturn (issue: TURN relay)' of $RESULTS_MD"
fi
cat "$OUT/section.md"
log "raw figures: $RUNS, $RSS, $META; logs in $OUT"
