#!/usr/bin/env bash
# Coverage-guided fuzzing of flor's untrusted-input paths (fuzz/): builds
# every target with libFuzzer and SanitizerCoverage on stable Rust (the
# flags cargo-fuzz passes with `--sanitizer none`; no nightly needed) and
# runs each for a bounded time, starting from the committed seeds.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
#
# SECONDS_PER_TARGET defaults to 30 (0: build only); TARGET defaults to
# every target. A crash, a failed check, a hang (one input running over
# FUZZ_TIMEOUT seconds) or memory over FUZZ_RSS_MB fails the script, after
# the other targets ran; the input is saved under the cache's artifacts/
# folder, with the command that replays it. Turn it into a regression test
# of the crate it exercises (README, "Fuzzing").
#
# The build and the corpora grown by earlier runs are cached outside the
# checkout, in $FLOR_FUZZ_CACHE (default ~/.cache/flor/fuzz): the
# instrumented build never mixes with the normal one. A corpus past
# FUZZ_CORPUS_MAX inputs (default 4000) is first minimized to the inputs
# that add coverage.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"

secs="${1:-30}"
shift || true
all_targets=(records propagate scope sql config)
targets=("${@:-${all_targets[@]}}")
cache="${FLOR_FUZZ_CACHE:-$HOME/.cache/flor/fuzz}"
timeout_s="${FUZZ_TIMEOUT:-10}"
rss_mb="${FUZZ_RSS_MB:-2048}"

# `--target` keeps these flags off build scripts and proc macros.
triple="$(rustc -vV | sed -n 's/^host: //p')"
flags=(
  --cfg fuzzing
  -Cpasses=sancov-module
  -Cllvm-args=-sanitizer-coverage-level=4
  -Cllvm-args=-sanitizer-coverage-inline-8bit-counters
  -Cllvm-args=-sanitizer-coverage-pc-table
  -Cllvm-args=-sanitizer-coverage-trace-compares
  -Cllvm-args=-sanitizer-coverage-stack-depth
  -Cllvm-args=-simplifycfg-branch-fold-threshold=0
  -Ccodegen-units=1
)
start=$(date +%s)
# Not --locked: fuzz/Cargo.lock pins what it holds and gains the entries a
# new dependency of the workspace needs (commit it when it changes).
CARGO_TARGET_DIR="$cache/target" RUSTFLAGS="${flags[*]}" \
  cargo build --release --manifest-path fuzz/Cargo.toml --target "$triple" --bins
echo "fuzz: build took $(($(date +%s) - start)) s"
[ "$secs" -gt 0 ] || exit 0

failed=()
for t in "${targets[@]}"; do
  bin="$cache/target/$triple/release/$t"
  corpus="$cache/corpus/$t"
  artifacts="$cache/artifacts/$t"
  log="$cache/$t.log"
  mkdir -p "$corpus" "$artifacts"
  # Absolute paths throughout: a target may change its working folder.
  opts=(-max_total_time="$secs" -timeout="$timeout_s" -rss_limit_mb="$rss_mb"
    -artifact_prefix="$artifacts/" -print_final_stats=1)
  # Inputs up to a few times the largest seed; a dictionary of the
  # format's words (libFuzzer also learns the compared constants itself).
  case "$t" in
    records) opts+=(-max_len=16384 -dict="$root/fuzz/dicts/records.dict") ;;
    propagate | scope) opts+=(-max_len=4096 -dict="$root/fuzz/dicts/python.dict") ;;
    sql) opts+=(-max_len=1024 -dict="$root/fuzz/dicts/sql.dict") ;;
    config) opts+=(-max_len=512 -dict="$root/fuzz/dicts/config.dict") ;;
  esac
  # Each run starts by executing the corpus it grew so far: past
  # FUZZ_CORPUS_MAX inputs, keep only those that add coverage.
  if [ "$(find "$corpus" -type f | wc -l)" -gt "${FUZZ_CORPUS_MAX:-4000}" ]; then
    rm -rf "$corpus.min" && mkdir -p "$corpus.min"
    "$bin" -merge=1 -timeout="$timeout_s" -rss_limit_mb="$rss_mb" "$corpus.min" "$corpus" 2> "$log.merge" \
      && rm -rf "$corpus" && mv "$corpus.min" "$corpus"
    echo "fuzz: $t: corpus minimized to $(find "$corpus" -type f | wc -l) inputs"
  fi
  echo "fuzz: $t for $secs s"
  if ! "$bin" "${opts[@]}" "$corpus" "$root/fuzz/seeds/$t" 2> "$log"; then
    failed+=("$t")
    tail -n 40 "$log"
    echo "fuzz: $t failed (log: $log); replay the saved input with: $bin $artifacts/<file>"
  fi
  # Coverage (edges reached of those instrumented) and speed.
  edges=$(sed -n 's/.*Loaded 1 modules *(\([0-9]*\) inline 8-bit counters).*/\1/p' "$log" | head -n 1)
  last=$(grep -E '^#[0-9]+.*cov: ' "$log" | tail -n 1 | cut -d ' ' -f 1-9 || true)
  echo "fuzz: $t: ${last:-no coverage line} (of ${edges:-?} edges)"
  grep -E '^stat::(number_of_executed_units|average_exec_per_sec|new_units_added|peak_rss_mb)' "$log" \
    | sed "s/^/fuzz: $t: /" || true
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: findings in: ${failed[*]}"
  exit 1
fi
