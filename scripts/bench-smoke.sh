#!/usr/bin/env bash
# Runs every criterion bench of quiver-benches (every [[bench]] target: engine, kafka_codec,
# hop) in seconds, so CI notices when one breaks.
#
#   scripts/bench-smoke.sh          each bench body runs once (criterion's --test mode)
#   scripts/bench-smoke.sh --quick  short timed runs: criterion --quick, 0.2 s warm-up,
#                                   0.5 s measurement
#
# Each bench binary runs under a watchdog (BENCH_SMOKE_TIMEOUT_S, default 300 s; a whole
# --test run takes seconds). A binary that outlives it had a hang: the script prints where
# each of its threads sleeps (/proc: comm, wchan, kernel stack when readable), kills it and
# runs it once more. A hang that passes on the retry is reported as HUNG-THEN-PASSED (as
# nextest reports a flaky test) and does not fail the run; two in a row fail it. So a hang
# costs CI minutes, not its whole time limit, and leaves evidence in the log.
#
# Bench data goes under target/ (ext4), never /tmp (may be tmpfs: no O_DIRECT).
set -euo pipefail
cd "$(dirname "$0")/.."

timeout_s="${BENCH_SMOKE_TIMEOUT_S:-300}"
target_dir="${CARGO_TARGET_DIR:-$(pwd)/target}"
mode="${1:-test}"
case "$mode" in
  test | --test) bench_args=(--bench --test) ;;
  quick | --quick) bench_args=(--bench --quick --warm-up-time 0.2 --measurement-time 0.5) ;;
  *)
    echo "usage: $0 [--test|--quick]" >&2
    exit 2
    ;;
esac

# Build every bench binary first (its compile time is not the watchdog's business) and
# collect their paths from cargo's JSON messages.
mapfile -t binaries < <(
  cargo bench -p quiver-benches --no-run --message-format=json \
    | sed -n 's/.*"target":{[^}]*"kind":\["bench"\][^}]*}.*"executable":"\([^"]*\)".*/\1/p'
)
if [[ ${#binaries[@]} -eq 0 ]]; then
  echo "bench-smoke: cargo built no bench binaries" >&2
  exit 1
fi

# Where every thread of process $1 is blocked, for a hang report.
dump_threads() {
  local pid="$1" task
  for task in /proc/"$pid"/task/*; do
    echo "--- thread $(basename "$task") $(cat "$task/comm" 2>/dev/null)" \
      "wchan=$(cat "$task/wchan" 2>/dev/null)"
    cat "$task/stack" 2>/dev/null | sed 's/^/    /' || true
  done
}

# Runs bench binary $1 with the bench arguments under the watchdog; 124 on a hang.
run_watched() {
  local binary="$1" pid waited=0
  # As under cargo bench: run from the package directory, with criterion's reports under
  # the workspace's target/criterion (criterion finds it through CARGO_TARGET_DIR).
  (cd benches && CARGO_TARGET_DIR="$target_dir" exec "$binary" "${bench_args[@]}") &
  pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    if ((waited >= timeout_s * 10)); then
      echo "bench-smoke: $(basename "$binary") still running after ${timeout_s}s: HUNG" >&2
      # The subshell exec'd the binary, so $pid is the bench process itself.
      dump_threads "$pid" >&2
      kill -9 "$pid" 2>/dev/null || true
      wait "$pid" 2>/dev/null || true
      return 124
    fi
    sleep 0.1
    waited=$((waited + 1))
  done
  wait "$pid"
}

failed=()
hung_then_passed=()
for binary in "${binaries[@]}"; do
  name="$(basename "$binary")"
  echo "bench-smoke: $name ${bench_args[*]}"
  status=0
  run_watched "$binary" || status=$?
  if [[ $status -eq 124 ]]; then
    echo "bench-smoke: $name hung; running it once more" >&2
    status=0
    run_watched "$binary" || status=$?
    if [[ $status -eq 0 ]]; then
      hung_then_passed+=("$name")
    fi
  fi
  if [[ $status -ne 0 ]]; then
    failed+=("$name (status $status)")
  fi
done

if [[ ${#hung_then_passed[@]} -gt 0 ]]; then
  echo "bench-smoke: HUNG-THEN-PASSED: ${hung_then_passed[*]} (thread dumps above)" >&2
fi
if [[ ${#failed[@]} -gt 0 ]]; then
  echo "bench-smoke: FAILED: ${failed[*]}" >&2
  exit 1
fi
echo "bench-smoke: ${#binaries[@]} bench binaries passed"
