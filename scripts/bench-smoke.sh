#!/usr/bin/env bash
# Runs every criterion bench of quiver-benches (every [[bench]] target: engine, kafka_codec,
# hop) in seconds, so CI notices when one breaks.
#
#   scripts/bench-smoke.sh          each bench body runs once (criterion's --test mode)
#   scripts/bench-smoke.sh --quick  short timed runs: criterion --quick, 0.2 s warm-up,
#                                   0.5 s measurement
#
# Bench data goes under target/ (ext4), never /tmp (may be tmpfs: no O_DIRECT).
set -euo pipefail
cd "$(dirname "$0")/.."

mode="${1:-test}"
case "$mode" in
  test | --test)
    exec cargo bench -p quiver-benches -- --test
    ;;
  quick | --quick)
    exec cargo bench -p quiver-benches -- \
      --quick --warm-up-time 0.2 --measurement-time 0.5
    ;;
  *)
    echo "usage: $0 [--test|--quick]" >&2
    exit 2
    ;;
esac
