#!/usr/bin/env bash
# Accuracy and time of flor's propagator against FlorDB's (flordb.hlast from
# PyPI) on the propagation corpus; see scripts/propagate_vs_flordb.py --help.
# Needs cargo, git, and PyPI the first time (the reference venv is created
# and then reused).
set -euo pipefail
exec python3 "$(dirname "$0")/propagate_vs_flordb.py" "$@"
