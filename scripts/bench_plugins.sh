#!/usr/bin/env bash
# Figures for the framework plugins (issue 15): storage of a 10-epoch JAX
# fine-tune packed vs stored whole vs the flordb package, pack throughput on
# a 100 MB checkpoint, tensor statistics (criterion), and the build-time
# cost of wasmtime (--only build). See scripts/bench_plugins.py --help.
# Needs: our module built --release into a venv with jax, flax and optax
# (--ours PYTHON, default ~/.cache/flor/venv-jax), the flordb package 4.0.1
# with jax, flax and optax in another (--ref PYTHON), git, cargo.
set -euo pipefail
exec python3 "$(dirname "$0")/bench_plugins.py" "$@"
