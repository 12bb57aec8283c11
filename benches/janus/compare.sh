#!/usr/bin/env bash
# benches/janus/compare.sh — our SFU against Janus VideoRoom, side by side,
# under the same third-party clients, in one run (issue 10).
#
# One aiortc publisher sends a pre-encoded VP8 clip (~230 RTP packets/s, no
# encoding during the run) and N aiortc viewers only count the packets they
# receive: to our SFU through WHIP/WHEP, to Janus 1.1 (Debian `janus`) through
# its VideoRoom plugin over the HTTP API. The server runs alone on CPU 0, the
# clients on CPU 1. For N = 10, 20, 40 (the order of the two servers
# alternates from one N to the next) it measures, over a steady window, the
# server's CPU (utime + stime of /proc/PID/stat, all threads), the packets
# the viewers received, CPU µs per forwarded packet, the Janus/ours ratio and
# the server's RSS, and cross-checks the viewers' count with the server's own
# (ours: sfu_rtp_packets_forwarded_total; Janus: its Admin API). Prints a
# table (medians over REPEAT rounds), writes $OUT/results.json; a round of
# N = 10, 20, 40 takes about 3.5 minutes.
#
#   benches/janus/compare.sh [--skip-build]
#
# Needs: Debian 12 (installs `janus` with apt-get if missing, compiles the
# loopback shim with cc), the project venv .venv with aiortc (made by
# scripts/test-deps.sh, which this script runs if .venv lacks aiortc), Rust.
#
# Environment (defaults in brackets):
#   VIEWERS ["10 20 40"]   viewer counts, one run of each server per count
#   REPEAT [1]             rounds of all counts (the table shows medians)
#   WINDOW [25]            measured seconds per run
#   WARMUP [5]             seconds between the last viewer's first packet and the window
#   PPS [230]              publisher's RTP packets per second (the clip is encoded for it)
#   BENCH_SFU_BIN          our sfu binary to measure [target/release/sfu, built here]
#   OUT [target/janus-compare]  logs, clip, per-run JSON
#   OURS_PORT [17980] OURS_UDP_PORT [17982] JANUS_PORT [18088] JANUS_ADMIN_PORT [18089]
#   JANUS_RTP_PORTS [52000-53999]   Janus's ICE/RTP port range
#   NICE [-10 as root, else 0]  scheduling priority (autogroup nice) of the servers
#                          and clients: keeps other work on the machine (builds)
#                          from starving the single client process, which would
#                          then fall behind and understate the forwarded packets
#   MAX_SECONDS [1800]     watchdog for everything after the build (raise it for REPEAT > 5)
#
# Loopback only: our SFU listens on 127.0.0.1; Janus gets its own config in
# $OUT/janus (VideoRoom plugin and HTTP transport only, HTTP and the Admin
# API, with a random secret, on 127.0.0.1, ICE gathering enforced to `lo`,
# no STUN/TURN, no event handlers) and runs under loopback_only.so, an
# LD_PRELOAD shim that lets libnice gather 127.0.0.1 (it skips IFF_LOOPBACK
# interfaces) and hides every other interface. Every socket of both servers is checked to be on loopback
# during each run. Every process started here is stopped on exit.

set -Eeuo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HERE="$ROOT/benches/janus"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
OUT=${OUT:-$CARGO_TARGET_DIR/janus-compare}
MAX_SECONDS=${MAX_SECONDS:-1800}
PY=$ROOT/.venv/bin/python

BUILD=1
INNER=0
for arg in "$@"; do
    case "$arg" in
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
# Installs, the build and the clip run outside the watchdog; the measuring
# part is re-executed under `timeout`.
if [[ $INNER == 0 ]]; then
    [[ -r /proc/self/stat ]] || die "needs Linux /proc"
    (($(nproc) >= 2)) || die "needs 2 CPUs (server on CPU 0, clients on CPU 1)"
    if ! command -v janus >/dev/null 2>&1; then
        command -v apt-get >/dev/null 2>&1 || die "janus missing and no apt-get: install Janus 1.1 by hand"
        SUDO=()
        [[ $(id -u) == 0 ]] || SUDO=(sudo)
        log "installing Debian's janus (apt-get)"
        "${SUDO[@]}" apt-get -o DPkg::Lock::Timeout=300 update -q >/dev/null
        # The package would start a system Janus with its default config
        # (HTTP and WebSockets on every interface): a policy-rc.d that
        # refuses service starts keeps it down during the install.
        guard=0
        if [[ ! -e /usr/sbin/policy-rc.d ]]; then
            printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee /usr/sbin/policy-rc.d >/dev/null
            "${SUDO[@]}" chmod +x /usr/sbin/policy-rc.d
            guard=1
        fi
        rc=0
        "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 \
            install -y -q --no-install-recommends janus >/dev/null || rc=$?
        ((guard == 0)) || "${SUDO[@]}" rm -f /usr/sbin/policy-rc.d
        ((rc == 0)) || die "apt-get install janus failed"
        if command -v systemctl >/dev/null 2>&1 && [[ -d /run/systemd/system ]]; then
            "${SUDO[@]}" systemctl disable --now janus >/dev/null 2>&1 || true
        fi
    fi
    missing=()
    for tool in janus cc taskset timeout ss curl cargo; do
        command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
    done
    ((${#missing[@]} == 0)) || die "missing tools: ${missing[*]} (Debian: gcc util-linux coreutils iproute2 curl; Rust: rustup)"
    if ! "$PY" -c 'import aiortc, av' >/dev/null 2>&1; then
        log "no .venv with aiortc: running scripts/test-deps.sh"
        "$ROOT/scripts/test-deps.sh"
    fi
    mkdir -p "$OUT"
    if [[ -z ${BENCH_SFU_BIN:-} && $BUILD == 1 ]]; then
        log "building sfu (release, target dir $CARGO_TARGET_DIR)"
        (cd "$ROOT" && timeout 1800 cargo build --release -p sfu) || die "cargo build --release -p sfu failed"
    fi
    SFU_SRC=${BENCH_SFU_BIN:-$CARGO_TARGET_DIR/release/sfu}
    [[ -x $SFU_SRC ]] || die "$SFU_SRC missing (build failed?)"
    # A private copy: a concurrent build must not replace the binary mid-run.
    cp "$SFU_SRC" "$OUT/sfu"
    cc -shared -fPIC -O2 -Wall -o "$OUT/loopback_only.so" "$HERE/loopback_only.c" -ldl ||
        die "compiling the loopback shim failed"
    clip_id="pps=${PPS:-230} $(sha256sum "$HERE/clip.py" | cut -c1-16)"
    if [[ ! -s $OUT/clip.vp8 || $(cat "$OUT/clip.id" 2>/dev/null) != "$clip_id" ]]; then
        log "encoding the VP8 clip (once)"
        "$PY" "$HERE/clip.py" encode --out "$OUT/clip.vp8" --pps "${PPS:-230}" >/dev/null ||
            die "encoding the clip failed"
        echo "$clip_id" >"$OUT/clip.id"
    fi
    exec timeout --foreground -s TERM -k 20 "$MAX_SECONDS" "$0" --measure "$@"
fi

# ---------------------------------------------------------------- phase 2
VIEWERS=${VIEWERS:-10 20 40}
REPEAT=${REPEAT:-1}
WINDOW=${WINDOW:-25}
WARMUP=${WARMUP:-5}
OURS_PORT=${OURS_PORT:-17980}
OURS_UDP_PORT=${OURS_UDP_PORT:-17982}
JANUS_PORT=${JANUS_PORT:-18088}
JANUS_ADMIN_PORT=${JANUS_ADMIN_PORT:-18089}
JANUS_RTP_PORTS=${JANUS_RTP_PORTS:-52000-53999}
RUN_TIMEOUT=$((120 + WARMUP + WINDOW + 60))
if [[ -z ${NICE:-} ]]; then
    if [[ $(id -u) == 0 ]]; then NICE=-10; else NICE=0; fi
fi
# Each server and the client process get a session (setsid) of their own,
# hence an autogroup of their own, whose nice value is what the scheduler
# weighs against other sessions' work (a plain `nice` only counts inside
# the caller's autogroup). load.py sets its own from BENCH_NICE.
PRIO=(setsid nice -n "$NICE")
export BENCH_NICE=$NICE
prioritize() { # pid: the autogroup nice of the session it leads
    echo "$NICE" >"/proc/$1/autogroup" 2>/dev/null || true
}

rm -f "$OUT"/run-*.json "$OUT"/*.log "$OUT"/results.json "$OUT"/sockets-*.txt

PIDS=()
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    local p
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
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

stop() { # stop one process we started and wait for it
    local pid=$1 p keep=()
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    for p in "${PIDS[@]}"; do [[ $p == "$pid" ]] || keep+=("$p"); done
    PIDS=("${keep[@]}")
}

port_bound() { # proto port -> 0 if a UDP socket is bound to / TCP listens on it
    local hex
    hex=$(printf '%04X' "$2")
    cat "/proc/net/$1" "/proc/net/${1}6" 2>/dev/null |
        awk -v h="$hex" -v p="$1" '$2 ~ (":" h "$") && (p == "udp" || $4 == "0A") { f = 1 }
            END { exit !f }'
}
for p in "$OURS_PORT" "$OURS_UDP_PORT" "$JANUS_PORT" "$JANUS_ADMIN_PORT"; do
    if port_bound udp "$p" || port_bound tcp "$p"; then
        die "port $p is in use; choose others (OURS_PORT, OURS_UDP_PORT, JANUS_PORT, JANUS_ADMIN_PORT)"
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

# Every socket of the process is bound to a loopback address (or to none
# yet: a socket before bind shows *). Writes the list to $OUT for the record.
check_loopback_sockets() { # pid tag
    local list bad
    list=$(ss -Htuanp 2>/dev/null | grep "pid=$1," || true)
    printf '%s\n' "$list" >"$OUT/sockets-$2.txt"
    bad=$(awk '{ a = $5; sub(/:[^:]*$/, "", a); gsub(/[][]/, "", a); sub(/%.*/, "", a)
        if (a != "*" && a !~ /^127\./ && a !~ /^::ffff:127\./ && a != "::1") print }' <<<"$list")
    [[ -z $bad ]] || die "$2: socket(s) not on loopback: $bad"
}

# ---------------------------------------------------------------- servers
start_ours() { # tag -> SRV_PID
    SFU_HTTP_LISTEN=127.0.0.1:$OURS_PORT SFU_MEDIA_UDP_LISTEN=127.0.0.1:$OURS_UDP_PORT \
        SFU_MEDIA_ICE_TCP=false SFU_TURN_ENABLED=false SFU_LOG_LEVEL=warn SFU_AUTH_KEY= \
        "${PRIO[@]}" taskset -c 0 "$OUT/sfu" >"$OUT/ours-$1.log" 2>&1 &
    SRV_PID=$!
    PIDS+=("$SRV_PID")
    prioritize "$SRV_PID"
    wait_until 20 "sfu on 127.0.0.1:$OURS_PORT (log $OUT/ours-$1.log)" \
        curl -sf --max-time 2 "http://127.0.0.1:$OURS_PORT/healthz"
}

# Janus's own configuration, written once: only the VideoRoom plugin and the
# HTTP transport are loadable (the folders hold just these two), HTTP on
# 127.0.0.1 (the Admin API too: it gives Janus's own packet count), ICE
# gathering enforced to `lo`, session timeouts off (the clients do not poll
# during the window).
JDIR=$OUT/janus
write_janus_config() {
    local lib
    lib=$(dirname "$(dirname "$(find /usr/lib -path '*/janus/plugins/libjanus_videoroom.so' -print -quit)")")
    [[ -f $lib/plugins/libjanus_videoroom.so && -f $lib/transports/libjanus_http.so ]] ||
        die "Janus VideoRoom plugin or HTTP transport not found under /usr/lib"
    rm -rf "$JDIR"
    mkdir -p "$JDIR/conf" "$JDIR/plugins" "$JDIR/transports" "$JDIR/none"
    ln -s "$lib/plugins/libjanus_videoroom.so" "$JDIR/plugins/"
    ln -s "$lib/transports/libjanus_http.so" "$JDIR/transports/"
    cat >"$JDIR/conf/janus.jcfg" <<EOF
general: {
	configs_folder = "$JDIR/conf"
	plugins_folder = "$JDIR/plugins"
	transports_folder = "$JDIR/transports"
	events_folder = "$JDIR/none"
	loggers_folder = "$JDIR/none"
	debug_level = 4
	interface = "127.0.0.1"
	server_name = "bench"
	session_timeout = 0
	admin_secret = "$BENCH_JANUS_ADMIN_SECRET"
}
certificates: {
}
media: {
	ipv6 = false
	rtp_port_range = "$JANUS_RTP_PORTS"
}
nat: {
	nice_debug = false
	ice_enforce_list = "lo"
	ignore_mdns = true
}
plugins: {
}
transports: {
}
loggers: {
}
events: {
	broadcast = false
}
EOF
    cat >"$JDIR/conf/janus.transport.http.jcfg" <<EOF
general: {
	json = "plain"
	base_path = "/janus"
	http = true
	port = $JANUS_PORT
	ip = "127.0.0.1"
	https = false
}
admin: {
	admin_base_path = "/admin"
	admin_http = true
	admin_port = $JANUS_ADMIN_PORT
	admin_ip = "127.0.0.1"
	admin_https = false
}
cors: {
}
EOF
    cat >"$JDIR/conf/janus.plugin.videoroom.jcfg" <<EOF
general: {
}
EOF
}

start_janus() { # tag -> SRV_PID
    (cd "$JDIR" && LD_PRELOAD=$OUT/loopback_only.so exec "${PRIO[@]}" taskset -c 0 janus \
        -C "$JDIR/conf/janus.jcfg" -F "$JDIR/conf" -o) >"$OUT/janus-$1.log" 2>&1 &
    SRV_PID=$!
    PIDS+=("$SRV_PID")
    prioritize "$SRV_PID"
    wait_until 20 "janus on 127.0.0.1:$JANUS_PORT (log $OUT/janus-$1.log)" \
        curl -sf --max-time 2 "http://127.0.0.1:$JANUS_PORT/janus/info"
}

# ---------------------------------------------------------------- runs
BENCH_JANUS_ADMIN_SECRET=$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')
export BENCH_JANUS_ADMIN_SECRET
write_janus_config
{
    echo "{\"date\": \"$(date -u '+%Y-%m-%d %H:%M UTC')\","
    echo " \"cpu_model\": \"$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)\","
    echo " \"nproc\": $(nproc), \"kernel\": \"$(uname -r)\","
    echo " \"janus\": \"$(janus --version 2>/dev/null | awk '/^Janus version/ { print $NF; exit }')\","
    echo " \"git_rev\": \"$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)\","
    echo " \"sfu_bin\": \"${BENCH_SFU_BIN:-target/release/sfu}\","
    echo " \"clip\": $(head -1 "$OUT/clip.vp8"),"
    echo " \"window_s\": $WINDOW, \"warmup_s\": $WARMUP, \"nice\": $NICE,"
    echo " \"loadavg_start\": \"$(cut -d' ' -f1-3 /proc/loadavg)\"}"
} >"$OUT/meta.json"

run_one() { # server viewers rep: one measured run, its JSON in $OUT/run-SERVER-N-REP.json
    local srv=$1 n=$2 rep=$3
    local tag="$srv-$n-$rep" base extra rc lpid end
    if [[ $srv == ours ]]; then
        start_ours "$tag"
        base=http://127.0.0.1:$OURS_PORT
        extra=()
    else
        start_janus "$tag"
        base=http://127.0.0.1:$JANUS_PORT
        extra=(--janus-admin "http://127.0.0.1:$JANUS_ADMIN_PORT/admin")
    fi
    log "$srv, $n viewers: server pid $SRV_PID on CPU 0, clients on CPU 1"
    rc=0
    timeout -k 5 "$RUN_TIMEOUT" "${PRIO[@]}" taskset -c 1 "$PY" "$HERE/load.py" --server "$srv" --base "$base" \
        --server-pid "$SRV_PID" --clip "$OUT/clip.vp8" --viewers "$n" \
        --window "$WINDOW" --warmup "$WARMUP" --json "$OUT/run-$tag.json" "${extra[@]}" \
        >"$OUT/load-$tag.log" 2>&1 &
    lpid=$!
    PIDS+=("$lpid")
    # Record the server's sockets once the clients are in (the load
    # prints its warm-up line then): all must be on loopback.
    end=$((SECONDS + RUN_TIMEOUT))
    until grep -q 'warm-up' "$OUT/load-$tag.log" 2>/dev/null || ! kill -0 "$lpid" 2>/dev/null ||
        ((SECONDS > end)); do
        sleep 0.2
    done
    kill -0 "$lpid" 2>/dev/null && check_loopback_sockets "$SRV_PID" "$tag"
    wait "$lpid" || rc=$?
    stop "$lpid"
    stop "$SRV_PID"
    if [[ $rc != 0 || ! -s $OUT/run-$tag.json ]]; then
        tail -5 "$OUT/load-$tag.log" >&2 || true
        die "$srv with $n viewers failed (status $rc; log $OUT/load-$tag.log)"
    fi
    log "$srv, $n viewers: $(cat "$OUT/run-$tag.json")"
}

i=0
for rep in $(seq 1 "$REPEAT"); do
    for n in $VIEWERS; do
        # Alternate which server goes first, so drifting background load
        # does not always hit the same one.
        if ((i % 2 == 0)); then order=(ours janus); else order=(janus ours); fi
        i=$((i + 1))
        for srv in "${order[@]}"; do
            run_one "$srv" "$n" "$rep"
        done
    done
done

"$PY" "$HERE/report.py" --meta "$OUT/meta.json" --out "$OUT/results.json" "$OUT"/run-*.json
log "per-run JSON and logs in $OUT; summary $OUT/results.json"
