#!/usr/bin/env bash
# The main job, on the embedded SQLite default: record runs of a small
# Python training script across three committed versions, add a
# `flor.log` statement to the newest version, show the replay plan, replay
# the old runs from their checkpoints, and print the dataframe with the
# recovered column beside the recorded ones. Then the same recording from
# Rust (the `sgd` example) and raw SQL.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/flor/target}"
venv="${FLOR_VENV:-$HOME/.cache/flor/venv}"

echo "==> building flor, the sgd example and the flordb Python module (cached after the first time)"
cargo build --quiet --release --locked --manifest-path "$here/Cargo.toml" --bin flor --example sgd
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check maturin
(cd "$here/flor-python" && VIRTUAL_ENV="$venv" PATH="$venv/bin:$PATH" maturin develop --quiet)
flor="$CARGO_TARGET_DIR/release/flor"
sgd="$CARGO_TARGET_DIR/release/examples/sgd"
py="$venv/bin/python"
commit() { git -c user.name=flor-demo -c user.email=demo@localhost commit -qam "$1"; }

demo="$(mktemp -d "${TMPDIR:-/tmp}/flor-demo.XXXXXX")"
echo "==> a fresh git repository: $demo"
cd "$demo"
git init -q -b main
cp "$here/examples/python/train_v1.py" train.py
git add train.py
commit "training script, version 1"

echo "==> version 1: two runs"
"$py" train.py --kwargs lr=0.05 > /dev/null
"$py" train.py --kwargs lr=0.1 seed=1 > /dev/null
echo "==> version 2 (a variable renamed): one run"
cp "$here/examples/python/train_v2.py" train.py && commit "rename weights to params"
"$py" train.py --kwargs lr=0.02 > /dev/null
echo "==> version 3 (the step extracted into a function): one run, printing what it logs"
cp "$here/examples/python/train_v3.py" train.py && commit "extract sgd_step"
"$py" train.py --kwargs epochs=3 | tail -n 3

echo; echo "==> flor dataframe lr epoch_loss   (one row per run and epoch)"
"$flor" dataframe lr epoch_loss

echo; echo "==> hindsight: the newest version (uncommitted) logs grad_norm inside the step loop"
cp "$here/examples/python/train_newest.py" train.py
git diff --stat

echo; echo "==> flor replay --apply grad_norm --dry-run   (the plan: propagation per version, cost)"
"$flor" replay --apply grad_norm --dry-run
echo; echo "==> flor replay --apply grad_norm --yes --jobs 2"
"$flor" replay --apply grad_norm --yes --jobs 2

echo; echo "==> flor dataframe loss grad_norm   (the recovered column beside the recorded one)"
"$flor" dataframe loss grad_norm | head -n 12
echo "..."
echo; echo "==> every run of every version has grad_norm now"
"$flor" query "SELECT r.tstamp, r.argv, COUNT(*) AS grad_norm_values FROM runs r JOIN logs l ON l.tstamp = r.tstamp
               WHERE l.value_name = 'grad_norm' AND l.source = 'replay' GROUP BY r.tstamp ORDER BY r.tstamp"

echo; echo "==> a selection, applied before the pivot: runs with lr > 0.03, their last epoch"
"$flor" dataframe lr loss grad_norm --where "lr > 0.03" --iter epoch=last | head -n 6
echo "..."

echo; echo "==> the same engine from Rust: the sgd example records a run"
"$sgd" --kwargs lr=0.1 epochs=3 > /dev/null
"$flor" query "SELECT l.tstamp, l.filename, MIN(l.value) AS best_loss FROM logs l
               WHERE l.value_name IN ('loss', 'epoch_loss') GROUP BY l.tstamp ORDER BY l.tstamp"

echo; echo "==> git: your branch and files untouched (train.py is still your uncommitted edit); runs live under flor's refs"
git status --short
git log --oneline
git for-each-ref --format='%(refname)' refs/flor/ | head -n 3
echo; echo "demo repository kept at $demo"
