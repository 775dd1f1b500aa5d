#!/usr/bin/env bash
# The storage-engine measurements behind docs/benchmarks.md: the machine baseline and the
# two engine cases of the issue, each RUNS times (default 3), JSON kept per run.
#
#   scripts/perf-engine.sh [OUT_DIR]      (RUNS=5 NICE=-10 DIR=target/quiver-perf to change)
#
# On a shared machine, NICE=-10 (needs root) keeps other people's builds from dominating
# the tails; docs/benchmarks.md says which runs used it.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-target/perf-results/$(date +%Y%m%d-%H%M%S)}"
runs="${RUNS:-3}"
dir="${DIR:-target/quiver-perf}"
nice_level="${NICE:-0}"
mkdir -p "$out"
cargo build --release -p quiver-perf
bin=target/release/quiver-perf
run() { nice -n "$nice_level" "$bin" "$@" --dir "$dir" --json; }
for i in $(seq 1 "$runs"); do
  run baseline >"$out/baseline-$i.txt"
  run engine --bytes $((1 << 30)) --batch-bytes $((1 << 20)) --concurrency 16 >"$out/engine-1MiB-c16-$i.txt"
  run engine --bytes $((64 << 20)) --batch-bytes $((16 << 10)) --concurrency 1 >"$out/engine-16KiB-c1-$i.txt"
done
echo "results in $out"
