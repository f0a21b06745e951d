#!/usr/bin/env bash
# Side-by-side benchmark of our flordb module against the flordb package from
# PyPI (see scripts/bench_vs_flordb.py --help). Needs our module built and
# installed in /root/.cache/flor/venv (or pass --ours PYTHON), git, and PyPI
# the first time (the reference's venv is created and then reused).
set -euo pipefail
exec python3 "$(dirname "$0")/bench_vs_flordb.py" "$@"
