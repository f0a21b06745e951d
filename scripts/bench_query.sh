#!/usr/bin/env bash
# Queries at 10M values (issue 17; figures in BENCHMARKS.md, "Queries at 10M
# values"): what the user runs, each a fresh process timed with /usr/bin/time
# (wall seconds, peak resident MiB), on a repository of RUNS runs x 10 epochs
# x 1,000 steps of `loss` plus args (lr, batch, optimizer, seed), recorded
# through the public Rust `Run` API (examples/soak).
#
# Usage: bash scripts/bench_query.sh [--repo DIR] [--runs 1000] [--reps 2]
#          [--flor BIN] [--flor-duckdb BIN] [--python PY] [--base BIN]
#   --repo: an existing repository (else one is generated under /tmp);
#   --flor-duckdb: a flor built with the `duckdb` feature (else DuckDB is skipped);
#   --python: a Python with flordb installed (else the Python rows are skipped);
#   --base: another flor binary measured side by side on the CLI rows.
# The databases are built (ingested) before the timed queries.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/flor/target}"
repo="" runs=1000 reps=2 flor="" duck="" py="" base=""
while [ $# -gt 0 ]; do
  case "$1" in
    --repo) repo="$2"; shift 2 ;;
    --runs) runs="$2"; shift 2 ;;
    --reps) reps="$2"; shift 2 ;;
    --flor) flor="$2"; shift 2 ;;
    --flor-duckdb) duck="$2"; shift 2 ;;
    --python) py="$2"; shift 2 ;;
    --base) base="$2"; shift 2 ;;
    *) echo "bench_query.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
[ -x /usr/bin/time ] || { echo "bench_query.sh: needs GNU time at /usr/bin/time" >&2; exit 2; }
if [ -z "$flor" ]; then
  cargo build --release --locked --quiet --bin flor
  flor="$CARGO_TARGET_DIR/release/flor"
fi
if [ -z "$repo" ]; then
  cargo build --release --locked --quiet --example soak
  repo="$(mktemp -d /tmp/flor-bench-query.XXXXXX)/repo"
  "$CARGO_TARGET_DIR/release/examples/soak" generate --repo "$repo" --runs "$runs" --epochs 10 --steps 1000
fi
out="$(mktemp -d /tmp/flor-bench-out.XXXXXX)"
one_run="$("$flor" -C "$repo" runs --format csv | sed -n 2p | cut -d, -f1)"

measure() { # label, command...
  local label="$1"; shift
  for _ in $(seq "$reps"); do
    /usr/bin/time -f "%e %M" -o "$out/time" "$@" > /dev/null 2> "$out/err" || { cat "$out/err" >&2; exit 1; }
    read -r secs kb < "$out/time"
    printf '%s\t%.2f s\t%d MiB\n' "$label" "$secs" $((kb / 1024))
  done
}

cli_rows() { # bin, store label, store
  local bin="$1" label="$2" store="$3"
  "$bin" -C "$repo" --store "$store" runs > /dev/null # ingest first
  measure "$label csv" "$bin" -C "$repo" --store "$store" dataframe lr loss --format csv -o "$out/df.csv"
  measure "$label parquet" "$bin" -C "$repo" --store "$store" dataframe lr loss --format parquet -o "$out/df.parquet"
  measure "$label arrow" "$bin" -C "$repo" --store "$store" dataframe lr loss --format arrow -o "$out/df.arrow"
  measure "$label pivot only (--iter epoch=none)" "$bin" -C "$repo" --store "$store" dataframe lr loss --iter epoch=none
  measure "$label one run's last epoch" "$bin" -C "$repo" --store "$store" dataframe lr loss \
    --where "tstamp = '$one_run'" --iter epoch=last --format csv -o "$out/sel.csv"
  measure "$label lr > 0.2 (1/7 of the runs), last epoch" "$bin" -C "$repo" --store "$store" dataframe lr loss \
    --where "lr > 0.2" --iter epoch=last --format csv -o "$out/sel.csv"
}

echo "# $(date -u +%FT%TZ) $(git rev-parse --short HEAD) load: $(cut -d' ' -f1-3 /proc/loadavg)"
if [ -n "$base" ]; then
  # Its own copy: databases of another schema version are not shared.
  cp -a "$repo" "$out/base-repo" && rm -f "$out/base-repo/.flor/flor.db"* "$out/base-repo/.flor/flor.duckdb"*
  "$base" -C "$out/base-repo" --store sqlite runs > /dev/null
  measure "base sqlite csv" "$base" -C "$out/base-repo" --store sqlite dataframe lr loss --format csv -o "$out/base.csv"
  rm -rf "$out/base-repo"
fi
cli_rows "$flor" "sqlite" sqlite
if [ -n "$duck" ]; then
  cli_rows "$duck" "duckdb" duckdb
fi
if [ -n "$py" ]; then
  cat > "$repo/bench_df.py" <<'EOF'
import sys
import flordb as flor
kw = {} if len(sys.argv) < 3 else {"where": sys.argv[2], "iter": {"epoch": "last"}}
df = flor.dataframe("lr", "loss", as_=sys.argv[1], **kw)
assert len(df) > 0
EOF
  "$flor" -C "$repo" --store sqlite runs > /dev/null # the engine used last: back to SQLite
  for as_ in pandas arrow polars; do
    measure "python flor.dataframe(as_=$as_), sqlite" env -C "$repo" "$py" bench_df.py "$as_"
  done
  measure "python one run's last epoch, sqlite" env -C "$repo" "$py" bench_df.py pandas "tstamp = '$one_run'"
  if [ -n "$duck" ]; then
    printf 'store = "duckdb"\n' > "$repo/.flor/config.toml"
    "$duck" -C "$repo" runs > /dev/null # switching engines rebuilds: not timed
    measure "python flor.dataframe(as_=pandas), duckdb (via flor)" env -C "$repo" FLOR_BIN="$duck" "$py" bench_df.py pandas
    measure "python flor.dataframe(as_=arrow), duckdb (via flor)" env -C "$repo" FLOR_BIN="$duck" "$py" bench_df.py arrow
    rm -f "$repo/.flor/config.toml"
  fi
  rm -f "$repo/bench_df.py"
fi
rm -rf "$out"
