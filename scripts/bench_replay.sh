#!/usr/bin/env bash
# Benchmarks of hindsight replay (`flor replay`), with the flordb package from
# PyPI side by side (see scripts/bench_replay.py --help). Needs our module in
# /root/.cache/flor/venv, the flor binary in /root/.cache/flor/target/release
# (or pass --ours PYTHON / --flor PATH), and the reference venv that
# scripts/bench_vs_flordb.sh creates (~/.cache/flor/flordb-ref-venv).
set -euo pipefail
exec python3 "$(dirname "$0")/bench_replay.py" "$@"
