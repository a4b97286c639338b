#!/usr/bin/env bash
# Runs every fuzz target (or those named) for FUZZ_S seconds each from its seed corpus, then prints
# one line per target: executions (libFuzzer's stat::number_of_executed_units) and whether it
# crashed. The corpus grows in corpus/<target>/ (not committed); a crash leaves its input in
# artifacts/<target>/ and the log in logs/<target>.log. Exits non-zero if any target crashed.
#
#   fuzz/run.sh                 # every target, FUZZ_S (default 30) seconds each
#   FUZZ_S=600 fuzz/run.sh decode proto
#
# Needs nightly Rust and cargo-fuzz (`cargo install cargo-fuzz`). Builds with debug assertions
# (overflow checks on), as the tests run.
set -uo pipefail
cd "$(dirname "$0")"
FUZZ_S=${FUZZ_S:-30}
# libFuzzer: a single input running 10 s is a hang, over 2 GiB is unbounded memory.
FUZZ_ARGS=${FUZZ_ARGS:--timeout=10 -rss_limit_mb=2048}
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo +nightly fuzz list)
fi
# cargo-fuzz picks its own target folder unless told: CARGO_TARGET_DIR is passed on.
build_args=(--debug-assertions ${CARGO_TARGET_DIR:+--target-dir "$CARGO_TARGET_DIR"})
cargo +nightly fuzz build "${build_args[@]}" || exit 1

mkdir -p logs
# The targets write their inputs to files under TMPDIR: one folder for the run, removed after it.
TMPDIR=$(mktemp -d)
export TMPDIR
trap 'rm -rf "$TMPDIR"' EXIT
summary=()
failed=0
for target in "${targets[@]}"; do
  mkdir -p "corpus/$target" "artifacts/$target"
  log="logs/$target.log"
  # A disc's texts must be able to grow past what a CD-TEXT block holds (a few KiB).
  case "$target" in
    cue_ddp) extra=(-max_len=16384 -len_control=0) ;;
    *) extra=() ;;
  esac
  cargo +nightly fuzz run "${build_args[@]}" "$target" "corpus/$target" "seeds/$target" -- \
    -max_total_time="$FUZZ_S" -print_final_stats=1 $FUZZ_ARGS "${extra[@]}" >"$log" 2>&1
  status=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  if [ "$status" -eq 0 ]; then
    result="no crash"
  else
    failed=1
    artifact=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -1)
    result="CRASHED (exit $status): ${artifact:-see $log}"
  fi
  summary+=("$(printf '%-18s %12s executions  %s' "$target" "${execs:-?}" "$result")")
done
printf '%s\n' "${summary[@]}"
exit "$failed"
