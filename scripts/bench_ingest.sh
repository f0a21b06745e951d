#!/usr/bin/env bash
# Ingestion of finished runs (issue 17; figures in BENCHMARKS.md,
# "Ingestion of finished runs"): the first query in a project whose query
# database is empty ingests every run from git.
#   1. the repository: --repo DIR (copied, never written), else `soak
#      generate` makes one (RUNS finished runs of EPOCHS x STEPS `loss`
#      values and args lr/batch/optimizer/seed, through the Rust `Run` API);
#   2. per store (SQLite, and DuckDB unless --no-duckdb), in a copy of it,
#      REPS times: delete the query database, time a fresh `flor runs`;
#      delete it again, time a fresh `flor dataframe lr loss --format csv
#      -o /dev/null` as the first query. With --base BIN, BIN (another
#      build, e.g. main's) is timed the same way right after, in each rep.
#
# Usage: bash scripts/bench_ingest.sh [--repo DIR] [--runs 1000] [--epochs 10]
#          [--steps 1000] [--reps 3] [--flor BIN] [--base BIN] [--no-duckdb]
#          [--work DIR]
# --flor: the binary to time (default: this checkout, built with DuckDB
# unless --no-duckdb). Results: one line per measurement on stdout and in
# WORK/results.tsv (what, store, binary, wall s, user s, sys s, peak MiB,
# load average before). The work folder is kept; delete it after.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/flor/target}"

repo="" runs=1000 epochs=10 steps=1000 reps=3 flor="" base="" duckdb=1 work=""
while [ $# -gt 0 ]; do
  case "$1" in
    --repo) repo="$2"; shift 2 ;;
    --runs) runs="$2"; shift 2 ;;
    --epochs) epochs="$2"; shift 2 ;;
    --steps) steps="$2"; shift 2 ;;
    --reps) reps="$2"; shift 2 ;;
    --flor) flor="$2"; shift 2 ;;
    --base) base="$2"; shift 2 ;;
    --no-duckdb) duckdb=0; shift ;;
    --work) work="$2"; shift 2 ;;
    *) echo "bench_ingest.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
[ -x /usr/bin/time ] || { echo "bench_ingest.sh: needs GNU time at /usr/bin/time" >&2; exit 2; }
work="${work:-$(mktemp -d /tmp/flor-ingest.XXXXXX)}"
mkdir -p "$work"
stores=(sqlite)
[ "$duckdb" = 1 ] && stores+=(duckdb)

features=()
if [ "$duckdb" = 1 ]; then
  DUCKDB_LIB_DIR="$(bash scripts/fetch_duckdb.sh)"
  export DUCKDB_LIB_DIR
  features=(--features duckdb)
fi
if [ -z "$flor" ]; then
  cargo build --release --locked --quiet --bin flor "${features[@]}"
  cp "$CARGO_TARGET_DIR/release/flor" "$work/flor"
  flor="$work/flor"
fi
bins=(flor)
[ -n "$base" ] && bins+=(base)
if [ -z "$repo" ]; then
  cargo build --release --locked --quiet --example soak
  repo="$work/repo"
  rm -rf "$repo"
  "$CARGO_TARGET_DIR/release/examples/soak" generate --repo "$repo" --runs "$runs" --epochs "$epochs" \
    --steps "$steps" --threads 2 >&2
fi

results="$work/results.tsv"
exec 3>&1 # measurement lines go here even when a command's output is discarded
printf 'what\tstore\tbinary\twall_s\tuser_s\tsys_s\tpeak_MiB\tload_before\n' > "$results"

# measure WHAT STORE BINARY CMD...: one timed fresh process.
measure() {
  local what="$1" store="$2" bin="$3" load t
  shift 3
  load="$(cut -d' ' -f1 /proc/loadavg)"
  t="$(mktemp)"
  /usr/bin/time -f '%e %U %S %M' -o "$t" "$@"
  read -r wall user sys kb < "$t"
  rm -f "$t"
  local line
  line="$(printf '%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s' "$what" "$store" "$bin" "$wall" "$user" "$sys" $((kb / 1024)) "$load")"
  echo "$line" >> "$results"
  echo "$line" >&3
}

for store in "${stores[@]}"; do
  dir="$work/$store"
  rm -rf "$dir"
  cp -a "$repo" "$dir"
  db="$dir/.flor/flor.db"
  [ "$store" = duckdb ] && db="$dir/.flor/flor.duckdb"
  printf 'store = "%s"\n' "$store" > "$dir/.flor/config.toml"
  for rep in $(seq "$reps"); do
    for b in "${bins[@]}"; do
      bin="$flor"
      [ "$b" = base ] && bin="$base"
      # The engine marker too: its absence must not send a binary into a
      # rebuild path the other does not take.
      printf '%s\n' "$store" > "$dir/.flor/store"
      rm -f "$db" "$db.wal" "$db-wal" "$db-shm"
      measure "first flor runs" "$store" "$b" "$bin" -C "$dir" runs > "$work/runs-$store-$b.txt"
      if [ "$rep" = 1 ]; then
        echo "$store $b: $(($(wc -l < "$work/runs-$store-$b.txt") - 1)) runs listed" >&2
      fi
      rm -f "$db" "$db.wal" "$db-wal" "$db-shm"
      measure "first flor dataframe lr loss (csv)" "$store" "$b" \
        "$bin" -C "$dir" dataframe lr loss --format csv -o /dev/null
    done
  done
done
echo "results: $results" >&2
