#!/usr/bin/env bash
# Runs every check and test of the workspace: formatting, clippy, the Rust
# unit/integration/end-to-end/doc tests (without and with the DuckDB store),
# then the Python front (the flordb
# module built with maturin into a virtualenv, tested with pytest), then a
# bounded fuzzing pass (scripts/fuzz.sh). The same command runs locally and
# in CI (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
# Builds and the virtualenv are cached outside the checkout so fresh clones
# reuse them.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/flor/target}"
venv="${FLOR_VENV:-$HOME/.cache/flor/venv}"

# The DuckDB store (cargo feature `duckdb`) links DuckDB's official prebuilt
# library, fetched once into ~/.cache/flor (scripts/fetch_duckdb.sh).
DUCKDB_LIB_DIR="$(bash scripts/fetch_duckdb.sh)"
export DUCKDB_LIB_DIR
duckdb_features=flor/duckdb,flor-store/duckdb

cargo fmt --all -- --check
cargo fmt --manifest-path fuzz/Cargo.toml -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo clippy --workspace --all-targets --locked --features "$duckdb_features" -- -D warnings
# The fuzz targets (their own workspace; scripts/fuzz.sh builds them).
cargo clippy --manifest-path fuzz/Cargo.toml --all-targets -- -D warnings

# The Python front first: the replay tests in tests/ run real Python scripts
# through it (FLOR_TEST_PYTHON).
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
# jax, jaxlib, flax and optax (CPU wheels): flor-python/tests/test_jax.py
# records, restores and replays a real flax/optax run.
# pyarrow and polars: flor-python/tests/test_query_arrow.py checks that they
# receive the same data as pandas and the plain values.
# ray (pinned): tests/replay_ray.rs replays on a real two-node local cluster.
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check maturin pytest numpy pandas tqdm ipython \
  jax jaxlib flax optax pyarrow polars "ray==2.60.0"
(cd flor-python && VIRTUAL_ENV="$venv" PATH="$venv/bin:$PATH" maturin develop --quiet)

# Without DuckDB (the default build, what the demo and the Python module use)...
FLOR_TEST_PYTHON="$venv/bin/python" cargo test --workspace --locked
# ...and with it: the crates that have the feature, DuckDB backend included.
FLOR_TEST_PYTHON="$venv/bin/python" cargo test -p flor -p flor-store --locked --features "$duckdb_features"
# The FlorDB compatibility suite (flor-python/tests/test_compat_flordb.py)
# compares against flordb 4.0.1 in its own venv, created once (~30 s, pip).
"$venv/bin/python" scripts/compat_flordb.py --setup
FLOR_BIN="$CARGO_TARGET_DIR/debug/flor" "$venv/bin/python" -m pytest -q flor-python/tests
# `flor serve`'s page in headless Chromium (playwright-core), and its
# committed bundle checked against its sources (scripts/test_web.sh).
FLOR_VENV="$venv" bash scripts/test_web.sh
# The SDK's extension examples, end to end: a store of the SDK user's own,
# and a propagator for another language (records, propagates, replays and
# checks the recovered values).
cargo run --quiet --locked --example custom_store > /dev/null
cargo run --quiet --locked --example custom_propagator > /dev/null
# Coverage-guided fuzzing of the untrusted inputs (record files, Python
# sources, user SQL, the config file), FLOR_FUZZ_SECONDS per target; its
# instrumented build is cached apart from the one above.
bash scripts/fuzz.sh "${FLOR_FUZZ_SECONDS:-45}"
