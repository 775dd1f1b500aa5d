#!/usr/bin/env bash
# Cross-checks `quiver-perf baseline` with fio on the same directory: sequential 1 MiB
# O_DIRECT writes at queue depth 16 with a final fsync, and 4 KiB O_DIRECT writes each
# followed by fdatasync (psync, and io_uring as quiver-perf does it). Fresh files without
# preallocation, like a new segment. Needs fio (apt-get install -y fio).
#
#   scripts/fio-crosscheck.sh [OUT_DIR]     (RUNS=3 NICE=-10 DIR=target/quiver-perf)
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-target/perf-results/fio-$(date +%Y%m%d-%H%M%S)}"
runs="${RUNS:-3}"
dir="${DIR:-target/quiver-perf}"
nice_level="${NICE:-0}"
mkdir -p "$out" "$dir"
file="$dir/fio.dat"
fio_run() { rm -f "$file"; nice -n "$nice_level" fio --filename="$file" --fallocate=none "$@"; rm -f "$file"; }
for i in $(seq 1 "$runs"); do
  fio_run --name=seq-1m-qd16 --rw=write --bs=1M --direct=1 --ioengine=io_uring --iodepth=16 \
    --size=2G --end_fsync=1 >"$out/seq-1m-qd16-$i.txt"
  fio_run --name=write-fdatasync-4k-psync --rw=write --bs=4k --direct=1 --ioengine=psync \
    --fdatasync=1 --size=8M >"$out/fdatasync-4k-psync-$i.txt"
  fio_run --name=write-fdatasync-4k-uring --rw=write --bs=4k --direct=1 --ioengine=io_uring \
    --iodepth=1 --fdatasync=1 --size=8M >"$out/fdatasync-4k-uring-$i.txt"
done
grep -h 'WRITE: bw=' "$out"/seq-*.txt
grep -h -A4 'sync percentiles' "$out"/fdatasync-*.txt | grep -E '50.00th|99.00th'
echo "results in $out"
