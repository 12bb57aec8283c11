#!/usr/bin/env bash
# Install what the SFU test suite needs on a Debian machine, skipping what is
# already present. Safe to run repeatedly.
#
#   - Debian packages: chromium and firefox-esr (browser tests), coturn (TURN tests),
#     nftables and iproute2 (impaired-network tests: random loss, namespaces, rate caps),
#     redis-server (cluster registry tests)
#   - npm: playwright-core and puppeteer-core into tests/browser/node_modules
#     (no browser download; the tests drive /usr/bin/chromium and
#     /usr/bin/firefox-esr)
#   - Python venv at .venv with tests/interop/requirements.txt (aiortc)
#
# Environment overrides:
#   PYTHON=/path/to/python3   interpreter used to create .venv (default: python3)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BROWSER_DIR="$ROOT/tests/browser"
REQS="$ROOT/tests/interop/requirements.txt"
VENV="$ROOT/.venv"
STAMP="$VENV/.test-deps-stamp"
PYTHON="${PYTHON:-python3}"

log() { printf '[test-deps] %s\n' "$*"; }
die() { printf '[test-deps] ERROR: %s\n' "$*" >&2; exit 1; }

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO=(sudo)
    else
        log "warning: not root and sudo not available; system installs will likely fail"
    fi
fi

# Run a noisy command quietly; on failure show the tail of its output.
quiet() {
    local out rc=0
    out="$(mktemp)"
    "$@" >"$out" 2>&1 || rc=$?
    if [ "$rc" -ne 0 ]; then
        printf '[test-deps] command failed (exit %s): %s\n' "$rc" "$*" >&2
        tail -n 40 "$out" >&2
    fi
    rm -f "$out"
    return "$rc"
}

# --------------------------------------------------------------------------
# 1. Debian packages
# --------------------------------------------------------------------------
deb_installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

apt_need=()
for pkg in chromium firefox-esr coturn nftables iproute2 redis-server; do
    deb_installed "$pkg" || apt_need+=("$pkg")
done
# Toolchain prerequisites, only if they are missing entirely.
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    apt_need+=(nodejs npm)
fi
if ! command -v "$PYTHON" >/dev/null 2>&1; then
    apt_need+=(python3 python3-venv)
elif ! "$PYTHON" -c 'import venv, ensurepip' >/dev/null 2>&1; then
    # Debian's python3 ships venv without ensurepip unless python3-venv is installed.
    apt_need+=(python3-venv)
fi

if [ "${#apt_need[@]}" -gt 0 ]; then
    command -v apt-get >/dev/null 2>&1 || die "apt-get not found; install manually: ${apt_need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    log "apt: installing ${apt_need[*]} (apt-get update first)"
    quiet "${SUDO[@]}" apt-get -o DPkg::Lock::Timeout=300 update -q
    quiet "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get \
        -o DPkg::Lock::Timeout=300 install -y -q --no-install-recommends "${apt_need[@]}"
    log "apt: done"
else
    log "apt: chromium, firefox-esr, coturn, nftables, iproute2 and redis-server already installed"
fi

# The coturn package may start (and enable) a system turnserver; the tests run
# their own on custom ports, so make sure none is left running.
if deb_installed coturn; then
    if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
        "${SUDO[@]}" systemctl disable --now coturn >/dev/null 2>&1 || true
    fi
    if command -v service >/dev/null 2>&1; then
        "${SUDO[@]}" service coturn stop >/dev/null 2>&1 || true
    fi
    "${SUDO[@]}" pkill -x turnserver >/dev/null 2>&1 || true
fi

# Likewise the redis-server package starts a system Redis on 6379; the
# cluster tests start their own on free ports.
if deb_installed redis-server; then
    if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
        "${SUDO[@]}" systemctl disable --now redis-server >/dev/null 2>&1 || true
    fi
    if command -v service >/dev/null 2>&1; then
        "${SUDO[@]}" service redis-server stop >/dev/null 2>&1 || true
    fi
fi

command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ] || die "chromium missing after install"
[ -x /usr/bin/firefox-esr ] || die "firefox-esr missing after install"
command -v turnserver >/dev/null 2>&1 || [ -x /usr/bin/turnserver ] || die "turnserver missing after install"
command -v redis-server >/dev/null 2>&1 || die "redis-server missing after install"

# --------------------------------------------------------------------------
# 2. npm: playwright-core and puppeteer-core (libraries only, never download browsers)
# --------------------------------------------------------------------------
[ -f "$BROWSER_DIR/package.json" ] || die "missing $BROWSER_DIR/package.json"
node_major="$(node -p 'process.versions.node.split(".")[0]')"
if [ "$node_major" -lt 20 ]; then
    log "warning: node $(node --version) found; playwright-core wants node >= 20"
fi
npm_missing=()
for pkg in playwright-core puppeteer-core; do
    want="$(cd "$BROWSER_DIR" && node -p "require('./package.json').dependencies['$pkg']")"
    have=""
    if [ -f "$BROWSER_DIR/node_modules/$pkg/package.json" ]; then
        have="$(cd "$BROWSER_DIR" && node -p "require('./node_modules/$pkg/package.json').version")"
    fi
    [ "$have" = "$want" ] || npm_missing+=("$pkg@$want")
done
if [ "${#npm_missing[@]}" -eq 0 ]; then
    log "npm: playwright-core and puppeteer-core already installed"
else
    log "npm: installing ${npm_missing[*]} into tests/browser/node_modules"
    (
        cd "$BROWSER_DIR"
        export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 PUPPETEER_SKIP_DOWNLOAD=1
        quiet npm install --no-audit --no-fund --no-package-lock --loglevel=error
    )
    log "npm: done"
fi

# --------------------------------------------------------------------------
# 3. Python venv with aiortc
# --------------------------------------------------------------------------
[ -f "$REQS" ] || die "missing $REQS"
py_id="$("$PYTHON" -c 'import sys; print(sys.executable, sys.version.split()[0])')"
want_stamp="$py_id $(sha256sum "$REQS" | cut -d' ' -f1)"
have_stamp=""
[ -f "$STAMP" ] && have_stamp="$(cat "$STAMP")"

if [ "$have_stamp" = "$want_stamp" ] && "$VENV/bin/python" -c 'import aiortc' >/dev/null 2>&1; then
    log "venv: .venv up to date"
else
    # Recreate from scratch so removed/changed pins never linger.
    log "venv: creating .venv with $py_id"
    rm -rf "$VENV"
    quiet "$PYTHON" -m venv "$VENV"
    log "venv: pip install -r tests/interop/requirements.txt (wheels only)"
    quiet "$VENV/bin/python" -m pip install --disable-pip-version-check --no-input \
        --only-binary=:all: -r "$REQS"
    "$VENV/bin/python" -c 'import aiortc, aioice, av' || die "aiortc import failed in .venv"
    printf '%s\n' "$want_stamp" >"$STAMP"
    log "venv: done"
fi

log "all test dependencies present"
