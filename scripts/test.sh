#!/usr/bin/env bash
# Runs every check and test of the workspace: formatting, clippy, then the
# unit, integration, end-to-end and doc tests. The same command runs locally
# and in CI (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
# Builds are cached outside the checkout so fresh clones reuse them.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/flor/target}"

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
