#!/usr/bin/env bash
# Runs every check and test of the workspace: formatting, clippy, the Rust
# unit/integration/end-to-end/doc tests, then the Python front (the flordb
# module built with maturin into a virtualenv, tested with pytest). The same
# command runs locally and in CI (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
# Builds and the virtualenv are cached outside the checkout so fresh clones
# reuse them.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/flor/target}"
venv="${FLOR_VENV:-$HOME/.cache/flor/venv}"

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings

# The Python front first: the replay tests in tests/ run real Python scripts
# through it (FLOR_TEST_PYTHON).
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check maturin pytest numpy pandas tqdm ipython
(cd flor-python && VIRTUAL_ENV="$venv" PATH="$venv/bin:$PATH" maturin develop --release --quiet)

FLOR_TEST_PYTHON="$venv/bin/python" cargo test --workspace --locked
"$venv/bin/python" -m pytest -q flor-python/tests
