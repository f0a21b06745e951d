#!/usr/bin/env bash
# Records the demo's project (scripts/demo.sh, its first half) into DIR:
# train.py in three committed versions, four runs, then the newest version
# (uncommitted) logging grad_norm, replayed into every old run. The browser
# tests (web/tests/browser.mjs) serve it.
# Usage: demo_project.sh DIR FLOR_BIN PYTHON
set -euo pipefail
here="$(cd "$(dirname "$0")/../.." && pwd)"
dir="$1" flor="$2" py="$3"
mkdir -p "$dir"
cd "$dir"
export GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null
git init -q -b main
commit() { git -c user.name=flor-demo -c user.email=demo@localhost commit -qam "$1"; }
cp "$here/examples/python/train_v1.py" train.py
git add train.py
commit "training script, version 1"
"$py" train.py --kwargs lr=0.05 > /dev/null
"$py" train.py --kwargs lr=0.1 seed=1 > /dev/null
cp "$here/examples/python/train_v2.py" train.py && commit "rename weights to params"
"$py" train.py --kwargs lr=0.02 > /dev/null
cp "$here/examples/python/train_v3.py" train.py && commit "extract sgd_step"
"$py" train.py --kwargs epochs=3 > /dev/null
cp "$here/examples/python/train_newest.py" train.py
"$flor" replay --apply grad_norm --yes --jobs 2 > /dev/null 2>&1
