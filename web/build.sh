#!/usr/bin/env bash
# Builds the page `flor serve` embeds: type-checks web/src with tsc, then
# bundles it with esbuild into web/dist/app.js and web/dist/app.css (uPlot
# included). The toolchain is pinned by package-lock.json; node_modules is
# installed from npm's cache in ~/.cache/flor/npm. With --check, builds
# into a scratch folder and fails when web/dist differs from what the
# sources give (CI runs this: the committed bundle must match its sources).
set -euo pipefail
cd "$(dirname "$0")"
cache="${FLOR_NPM_CACHE:-$HOME/.cache/flor/npm}"
if [ ! -x node_modules/.bin/esbuild ] || [ ! -x node_modules/.bin/tsc ] \
  || ! cmp -s package-lock.json node_modules/.package-lock.json.copy; then
  npm ci --cache "$cache" --prefer-offline --no-audit --no-fund --loglevel=error
  cp package-lock.json node_modules/.package-lock.json.copy
fi
out=dist
if [ "${1:-}" = "--check" ]; then
  out="$(mktemp -d)"
  trap 'rm -rf "$out"' EXIT
fi
node_modules/.bin/tsc --noEmit -p .
common=(--bundle --minify --legal-comments=none --log-level=warning)
node_modules/.bin/esbuild src/app.ts "${common[@]}" --format=iife --target=es2020 --outfile="$out/app.js"
node_modules/.bin/esbuild src/app.css "${common[@]}" --outfile="$out/app.css"
if [ "${1:-}" = "--check" ]; then
  for f in app.js app.css; do
    if ! cmp -s "$out/$f" "dist/$f"; then
      echo "error: web/dist/$f does not match web/src (run web/build.sh and commit web/dist)" >&2
      exit 1
    fi
  done
  echo "web/dist matches web/src"
fi
