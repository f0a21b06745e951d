#!/usr/bin/env bash
# The page of `flor serve`, checked in a real browser: the committed bundle
# (web/dist) must match its sources (web/build.sh --check), then the demo's
# project is recorded (web/tests/demo_project.sh), served on a free port,
# and web/tests/browser.mjs drives Debian's headless Chromium through it
# with playwright-core. scripts/test.sh runs this after the Rust tests
# (it uses their debug `flor` and the flordb virtualenv).
# FLOR_SERVE_SCREENSHOT=PATH also writes the README's curves screenshot.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/flor/target}"
venv="${FLOR_VENV:-$HOME/.cache/flor/venv}"
flor="${FLOR_BIN:-$CARGO_TARGET_DIR/debug/flor}"
chromium="${FLOR_CHROMIUM:-/usr/bin/chromium}"

if [ ! -x "$chromium" ]; then
  echo "error: the browser tests need Chromium at $chromium (Debian: apt-get install chromium; .ci/run does)" >&2
  exit 1
fi
node_major="$(node -p 'process.versions.node.split(".")[0]')"
if [ "$node_major" -lt 18 ]; then
  echo "error: the page's toolchain needs Node.js 18 or newer (found $(node --version))" >&2
  exit 1
fi
bash web/build.sh --check

work="$(mktemp -d "${TMPDIR:-/tmp}/flor-web.XXXXXX")"
pid=""
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
bash web/tests/demo_project.sh "$work/demo" "$flor" "$venv/bin/python"
(cd "$work/demo" && exec "$flor" serve --port 0 > "$work/serve.out" 2> "$work/serve.err") &
pid=$!
url=""
for _ in $(seq 1 100); do
  url="$(grep -o 'http://[^ ]*' "$work/serve.out" || true)"
  [ -n "$url" ] && break
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "error: flor serve stopped:" >&2
    cat "$work/serve.err" >&2
    exit 1
  fi
  sleep 0.1
done
if [ -z "$url" ]; then
  echo "error: flor serve printed no URL in 10 s" >&2
  exit 1
fi
FLOR_CHROMIUM="$chromium" FLOR_DEMO_DIR="$work/demo" FLOR_PYTHON="$venv/bin/python" node web/tests/browser.mjs "$url" ${FLOR_SERVE_SCREENSHOT:+"$FLOR_SERVE_SCREENSHOT"}
