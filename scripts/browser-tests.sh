#!/usr/bin/env bash
# The browser tests: the call page and the SDK in Debian's Chromium (headless, fake camera and
# microphone), driven by Node's test runner and playwright-core, against the built binary.
# As root they run inside a network namespace of their own with only loopback up, so no
# candidate or packet can leave the machine; otherwise on the host's loopback.
#
#   scripts/browser-tests.sh [node --test args...]
#
# Needs: node and npm, /usr/bin/chromium (apt-get install chromium), a built binary
# (cargo build; SWITCHBOARD_BIN overrides where it is).
set -euo pipefail
cd "$(dirname "$0")/.."

target="${CARGO_TARGET_DIR:-target}"
export SWITCHBOARD_BIN="${SWITCHBOARD_BIN:-$(realpath "$target/debug/switchboard")}"
[ -x "$SWITCHBOARD_BIN" ] || { echo "no binary at $SWITCHBOARD_BIN: run cargo build first" >&2; exit 1; }
command -v chromium >/dev/null || { echo "chromium is not installed (apt-get install chromium)" >&2; exit 1; }

(cd tests/browser && npm ci --no-audit --no-fund --silent)

run='cd tests/browser && node --test --test-concurrency=1 "$@" .'
if [ "$(id -u)" = 0 ] && unshare -n true 2>/dev/null; then
  exec unshare -n bash -c "ip link set lo up && $run" bash "$@"
else
  echo "not root (or no network namespaces): the browser tests use the host's loopback"
  exec bash -c "$run" bash "$@"
fi
