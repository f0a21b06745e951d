#!/usr/bin/env bash
# The scale soak (issue 14; figures in BENCHMARKS.md, "Scale soak"):
#   1. `soak generate`: a fresh git repository with RUNS finished runs,
#      recorded through the public Rust `Run` API (examples/soak/);
#   2. per store (SQLite, and DuckDB unless --no-duckdb), REPS times from an
#      empty query database, each `flor` command a fresh process timed with
#      /usr/bin/time: the first `flor runs` (which ingests every run), a
#      second and third `flor runs`, `flor dataframe seed loss` to a CSV
#      file (checked cell by cell by `soak verify` on the first rep);
#   3. per store, `soak live`: LIVE processes recording at once in a fresh
#      repository while `flor runs` and `flor dataframe` query them, every
#      answer checked, then every record checked once they finished.
#
# Usage: bash scripts/bench_soak.sh [--runs 10000] [--epochs 10] [--steps 100]
#          [--reps 3] [--live 100] [--live-epochs 20] [--pace-ms 500]
#          [--threads 2] [--work DIR] [--no-duckdb] [--no-live]
# Results: one line per measurement on stdout and in WORK/results.tsv
# (what, store, wall s, user s, sys s, peak MiB, load average before).
# The work folder (repositories, CSV files) is kept; delete it after.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/flor/target}"

runs=10000 epochs=10 steps=100 reps=3 live=100 live_epochs=20 pace_ms=500 threads=2
work="" duckdb=1 do_live=1
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) runs="$2"; shift 2 ;;
    --epochs) epochs="$2"; shift 2 ;;
    --steps) steps="$2"; shift 2 ;;
    --reps) reps="$2"; shift 2 ;;
    --live) live="$2"; shift 2 ;;
    --live-epochs) live_epochs="$2"; shift 2 ;;
    --pace-ms) pace_ms="$2"; shift 2 ;;
    --threads) threads="$2"; shift 2 ;;
    --work) work="$2"; shift 2 ;;
    --no-duckdb) duckdb=0; shift ;;
    --no-live) do_live=0; shift ;;
    *) echo "bench_soak.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
[ -x /usr/bin/time ] || { echo "bench_soak.sh: needs GNU time at /usr/bin/time" >&2; exit 2; }
work="${work:-$(mktemp -d /tmp/flor-soak.XXXXXX)}"
mkdir -p "$work"
stores=(sqlite)

cargo build --release --locked --quiet --example soak --bin flor
cp "$CARGO_TARGET_DIR/release/flor" "$work/flor-sqlite"
cp "$CARGO_TARGET_DIR/release/examples/soak" "$work/soak"
if [ "$duckdb" = 1 ]; then
  DUCKDB_LIB_DIR="$(bash scripts/fetch_duckdb.sh)"
  export DUCKDB_LIB_DIR
  cargo build --release --locked --quiet --bin flor --features duckdb
  cp "$CARGO_TARGET_DIR/release/flor" "$work/flor-duckdb"
  stores+=(duckdb)
fi

results="$work/results.tsv"
exec 3>&1 # measurement lines go here even when a command's output is discarded
printf 'what\tstore\twall_s\tuser_s\tsys_s\tpeak_MiB\tload_before\n' > "$results"
# measure WHAT STORE COMMAND...: runs COMMAND under /usr/bin/time, one line.
measure() {
  local what="$1" store="$2"; shift 2
  local load; load="$(cut -d' ' -f1 /proc/loadavg)"
  /usr/bin/time -f '%e %U %S %M' -o "$work/time.txt" "$@"
  read -r wall user sys kib < "$work/time.txt"
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$what" "$store" "$wall" "$user" "$sys" "$((kib / 1024))" "$load" \
    | tee -a "$results" >&3
}

echo "bench_soak: work folder $work; $(nproc) CPUs; $(uptime)"
echo "bench_soak: commit $(git rev-parse --short HEAD)$(git diff --quiet HEAD || echo ' (uncommitted changes)')"
repo="$work/repo"
rm -rf "$repo"
measure "generate $runs runs (${epochs}x${steps})" - \
  "$work/soak" generate --repo "$repo" --runs "$runs" --epochs "$epochs" --steps "$steps" --threads "$threads"
echo "bench_soak: repository .git $(du -sh "$repo/.git" | cut -f1), .flor/objects $(du -sh "$repo/.flor/objects" | cut -f1)"

for store in "${stores[@]}"; do
  flor=("$work/flor-$store" -C "$repo" --store "$store")
  for rep in $(seq 1 "$reps"); do
    rm -f "$repo"/.flor/flor.db "$repo"/.flor/flor.db-wal "$repo"/.flor/flor.db-shm \
      "$repo"/.flor/flor.duckdb "$repo"/.flor/flor.duckdb.wal "$repo"/.flor/store
    measure "ingest: first flor runs" "$store" "${flor[@]}" runs > /dev/null
    measure "flor runs (ingested)" "$store" "${flor[@]}" runs > /dev/null
    measure "flor runs (ingested)" "$store" "${flor[@]}" runs > /dev/null
    measure "flor dataframe seed loss > csv" "$store" "${flor[@]}" --format csv -o "$work/df-$store.csv" dataframe seed loss
    if [ "$rep" = 1 ]; then
      "$work/soak" verify --csv "$work/df-$store.csv" --runs "$runs" --epochs "$epochs" --steps "$steps"
    fi
  done
  echo "bench_soak: $store database $(du -sh "$repo/.flor/flor.$([ "$store" = sqlite ] && echo db || echo duckdb)" | cut -f1)"
done

if [ "$do_live" = 1 ]; then
  for store in "${stores[@]}"; do
    echo "bench_soak: live ($store): $live processes, $live_epochs epochs x $steps steps, ${pace_ms} ms after each epoch; $(uptime)"
    rm -rf "$work/live-$store"
    measure "live: $live runs at once, with queries" "$store" \
      "$work/soak" live --repo "$work/live-$store" --flor "$work/flor-$store" --store "$store" \
      --runs "$live" --epochs "$live_epochs" --steps "$steps" --pace-ms "$pace_ms"
  done
fi
echo "bench_soak: done; $(uptime)"
