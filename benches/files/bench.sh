#!/usr/bin/env bash
# Encrypted file transfer browser -> server -> browser on loopback: for each
# size, Alice (headless Chromium, her own on-disk profile) encrypts and
# uploads a random file from disk; Bob clicks "Download" as soon as he is
# offered it and downloads, decrypts and verifies it into his origin-private
# file system while she uploads ("live": from her pick to his "Save"); after
# Alice left, Carol downloads the stored file. Prints one JSON line per size
# with MB/s, CPU seconds of Chromium (all processes, and by process type)
# per phase, Chromium's peak memory and the pages' peak JS heap, and the
# server's CPU seconds and peak RSS.
#   benches/files/bench.sh [SIZE_MB ...]      (default: 10 200 1024)
#   BENCH_SFU_BIN=/path/to/sfu benches/files/bench.sh ...   (another build; no cargo build)
# Needs: cargo, node, /usr/bin/chromium, tests/browser/node_modules
# (scripts/test-deps.sh installs them), twice the largest size free in the
# temporary directory (the file and the server's copy).
set -euo pipefail
cd "$(dirname "$0")/../.."
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(10 200 1024)
sfu_bin=${BENCH_SFU_BIN:-}
if [ -z "$sfu_bin" ]; then
  cargo build --release -p sfu --bin sfu >&2
  sfu_bin=target/release/sfu
fi
work=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT
# An ephemeral port (other benchmarks may run on this machine): read it from the log.
SFU_HTTP_LISTEN=127.0.0.1:0 SFU_MEDIA_UDP_LISTEN=127.0.0.1:0 SFU_MEDIA_TCP_LISTEN=127.0.0.1:0 \
  SFU_TURN_ENABLED=false SFU_FILES_DIR="$work/files" SFU_FILES_USER_QUOTA_BYTES=$((8 << 30)) \
  SFU_LOG_LEVEL=info "$sfu_bin" >"$work/sfu.log" 2>&1 &
pid=$!
port=""
for _ in $(seq 1 100); do
  port=$(sed -n 's/.*sfu listening http=127\.0\.0\.1:\([0-9]*\).*/\1/p' "$work/sfu.log" | head -1)
  [ -n "$port" ] && curl -fs "http://127.0.0.1:$port/healthz" >/dev/null && break
  sleep 0.1
done
[ -n "$port" ] || { echo "the server did not start:" >&2; cat "$work/sfu.log" >&2; exit 1; }
for mb in "${sizes[@]}"; do
  line=$(cd tests/browser && node files.mjs --base "http://127.0.0.1:$port" --files-dir "$work/files" \
    --mb "$mb" --bench 1 --server-pid "$pid" | tail -1)
  rss=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
  echo "{\"mb\": $mb, \"server_peak_rss_kib\": $rss, \"report\": $line}"
done
