#!/usr/bin/env bash
# The main job: record three training runs of a small SGD program in a fresh
# git repository with flor, then query them with the `flor` command line.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/flor/target}"

echo "==> building flor and the example (cached after the first time)"
cargo build --quiet --release --locked --manifest-path "$here/Cargo.toml" --bin flor --example sgd
flor="$CARGO_TARGET_DIR/release/flor"
sgd="$CARGO_TARGET_DIR/release/examples/sgd"

demo="$(mktemp -d "${TMPDIR:-/tmp}/flor-demo.XXXXXX")"
echo "==> a fresh git repository with one training script: $demo"
cd "$demo"
git init -q -b main
cp "$here/examples/sgd.rs" sgd.rs
git add sgd.rs
git -c user.name=flor-demo -c user.email=demo@localhost commit -qm "SGD training script"

echo "==> recording three runs with different hyper-parameters"
"$sgd" --kwargs lr=0.1 epochs=4
"$sgd" --kwargs lr=0.05 epochs=4 batch_size=64
"$sgd" --kwargs lr=0.01 epochs=3 seed=11

echo; echo "==> flor runs"
"$flor" runs
echo; echo "==> flor dataframe   (one row per run: its hyper-parameters)"
"$flor" dataframe
echo; echo "==> flor dataframe lr epoch_loss w b   (one row per run and epoch)"
"$flor" dataframe lr epoch_loss w b
echo; echo "==> flor dataframe loss | head   (one row per run, epoch and step)"
"$flor" dataframe loss | head -n 6
echo; echo "==> flor query   (raw SQL over the views runs, logs, loops, timings, checkpoints)"
"$flor" query "SELECT l.tstamp, MIN(l.value) AS best_loss, COUNT(*) AS steps
               FROM logs l WHERE l.value_name = 'loss' GROUP BY l.tstamp ORDER BY best_loss"
echo; echo "==> git status is untouched; the runs live under flor's own refs"
git status --short
git for-each-ref --format='%(refname)' refs/flor/
echo; echo "demo repository kept at $demo"
