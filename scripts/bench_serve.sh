#!/usr/bin/env bash
# BENCHMARKS.md figures of `flor serve` (issue 19): a project of 1,000
# finished runs × 10 epochs × 1,000 steps of `loss` (10M values, made once
# by the soak example through the Rust `Run` API), ingested, then served;
# web/tests/bench.mjs measures the page in headless Chromium (first paint,
# runs table, curves drawn; first load cold, then warm) and the API under
# 20 concurrent clients on 127.0.0.1. Prints bench.mjs's JSON.
# Usage: scripts/bench_serve.sh --repo DIR --flor RELEASE_FLOR --soak RELEASE_SOAK [bench.mjs options]
set -euo pipefail
cd "$(dirname "$0")/.."
repo="" flor="" soak=""
while [ $# -gt 0 ]; do
  case "$1" in
    --repo) repo="$2"; shift 2 ;;
    --flor) flor="$2"; shift 2 ;;
    --soak) soak="$2"; shift 2 ;;
    *) break ;;
  esac
done
if [ -z "$repo" ] || [ -z "$flor" ] || [ -z "$soak" ]; then
  echo "usage: $0 --repo DIR --flor RELEASE_FLOR --soak RELEASE_SOAK [--clients N] [--requests N] [--loads N]" >&2
  exit 2
fi
if [ ! -d "$repo" ]; then
  "$soak" generate --repo "$repo" --runs 1000 --epochs 10 --steps 1000 --threads 2 >&2
fi
start=$(date +%s.%N)
"$flor" -C "$repo" runs > /dev/null
echo "ingest (first flor runs): $(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }') s" >&2
out="$(mktemp)"
(cd "$repo" && exec "$flor" serve --port 0 > "$out") &
pid=$!
trap 'kill $pid 2>/dev/null || true; rm -f "$out"' EXIT
url=""
for _ in $(seq 1 200); do
  url="$(grep -o 'http://[^ ]*' "$out" || true)"
  [ -n "$url" ] && break
  sleep 0.1
done
[ -n "$url" ] || { echo "error: flor serve printed no URL" >&2; exit 1; }
node web/tests/bench.mjs "$url" "$@"
echo "server peak resident memory: $(grep VmHWM /proc/$pid/status | awk '{print $2, $3}')" >&2
