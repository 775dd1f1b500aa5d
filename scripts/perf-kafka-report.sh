#!/usr/bin/env bash
# The Kafka-protocol figures of docs/benchmarks.md, measured in one run on this machine:
#   1. baseline: loopback TCP (iperf3), O_DIRECT sequential write/read and 4 KiB
#      write+fdatasync latency (fio) on the disk under ./target;
#   2. the generator's ceiling against `quiver-perf sink` (producer and consumer), interleaved
#      with the same workloads against a fresh `quiver serve` (release), REPS times each;
#   3. end-to-end latency (OMB classic) and a lone 1 KiB acks=1 message's latency, on the
#      default broker (fdatasync per group commit) and on one started with --flush-ms 5, with
#      the same lone-message run against the sink as the latency floor (loopback, scheduling,
#      the generator); lone-message runs have no consumer, so they time the publish alone;
#   4. a reference run with confluent-kafka (librdkafka) when PYTHON has it;
#   5. the shipped workload set, one result JSON + SVG each;
#   6. iperf3 again, so drift during the run shows.
# Results: OUT_DIR (default target/perf-report/<time>): runs/*.json, workloads/*.{json,svg},
# baseline files, summary.md (medians over repetitions; `quiver-perf summary`).
#
# Disk: every broker is fresh and its data is deleted after its measurement; the peak is one
# max-throughput run, about DURATION_S+2 seconds at the produce rate (~7 GB at 600 MB/s).
#
# Environment: REPS (3), DURATION_S (10), SKIP_BUILD=1, PYTHON (a python with confluent_kafka;
# default .venv/bin/python), SKIP_WORKLOAD_SET=1, CPUS_NOTE (free text for the report).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
reps="${REPS:-3}"
duration_s="${DURATION_S:-10}"
out="${1:-$root/target/perf-report/$(date +%Y%m%d-%H%M%S)}"
target_dir="${CARGO_TARGET_DIR:-$root/target}"
python="${PYTHON:-$root/.venv/bin/python}"
mkdir -p "$out/runs" "$out/workloads"
log() { printf '== perf-kafka-report: %s\n' "$*" >&2; }

if [[ "${SKIP_BUILD:-0}" != "1" ]]; then
    cargo build --release -p quiver -p quiver-perf
fi
quiver="$target_dir/release/quiver"
perf="$target_dir/release/quiver-perf"
for tool in iperf3 fio; do
    command -v "$tool" >/dev/null || { log "$tool missing: apt-get install -y $tool"; exit 1; }
done

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}
wait_for_port() {
    for _ in $(seq 1 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    log "nothing listening on $1"
    return 1
}
pids=()
cleanup() {
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
}
trap cleanup EXIT

machine() {
    {
        echo "date: $(date -u +%FT%TZ)"
        echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | xargs)"
        echo "cores: $(nproc)"
        echo "kernel: $(uname -r)"
        echo "memory: $(free -g | awk '/Mem:/ {print $2}') GiB"
        echo "git: $(git rev-parse HEAD)"
        echo "loadavg at start: $(cut -d' ' -f1-3 /proc/loadavg)"
    } >"$out/machine.txt"
    cat "$out/machine.txt" >&2
}

iperf() {
    local name="$1" port
    port="$(free_port)"
    iperf3 -s -p "$port" >/dev/null 2>&1 &
    local server=$!
    sleep 0.5 # not wait_for_port: a probe connection would count as a test to the server
    iperf3 -c 127.0.0.1 -p "$port" -t 5 -J >"$out/$name.json"
    kill "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
    python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print(f'{sys.argv[2]}: loopback TCP one stream {r[\"end\"][\"sum_received\"][\"bits_per_second\"]/8e9:.2f} GB/s')" \
        "$out/$name.json" "$name" | tee -a "$out/baseline.txt"
}

disk_baseline() {
    local file="$out/fio.dat"
    fio --name=seqwrite --filename="$file" --size=2G --rw=write --bs=1M --direct=1 \
        --ioengine=io_uring --iodepth=16 --runtime=5 --time_based --output-format=json \
        >"$out/fio-write.json"
    fio --name=seqread --filename="$file" --size=2G --rw=read --bs=1M --direct=1 \
        --ioengine=io_uring --iodepth=16 --runtime=5 --time_based --output-format=json \
        >"$out/fio-read.json"
    fio --name=syncwrite --filename="$file" --size=256M --rw=write --bs=4k --direct=1 \
        --ioengine=sync --fdatasync=1 --runtime=5 --time_based --output-format=json \
        >"$out/fio-fdatasync.json"
    rm -f "$file"
    python3 - "$out" <<'PY' | tee -a "$out/baseline.txt"
import json, sys
out = sys.argv[1]
write = json.load(open(f"{out}/fio-write.json"))["jobs"][0]["write"]
read = json.load(open(f"{out}/fio-read.json"))["jobs"][0]["read"]
sync_job = json.load(open(f"{out}/fio-fdatasync.json"))["jobs"][0]
sync = sync_job["sync"]["lat_ns"]["percentile"]
print(f"disk O_DIRECT sequential write 1 MiB qd16: {write['bw_bytes']/1e9:.2f} GB/s")
print(f"disk O_DIRECT sequential read 1 MiB qd16: {read['bw_bytes']/1e9:.2f} GB/s")
print(f"disk 4 KiB O_DIRECT write + fdatasync: {sync_job['write']['iops']:.0f}/s, "
      f"fdatasync p50 {sync['50.000000']/1e3:.0f} us, p99 {sync['99.000000']/1e3:.0f} us")
PY
}

# run LABEL BOOTSTRAP SERVER_PID WORKLOAD [flags...]: one quiver-perf run into runs/; the
# server's CPU use over the measured phase is recorded beside the generator's.
run_count=0
run() {
    local label="$1" bootstrap="$2" server_pid="$3" workload="$4"
    shift 4
    run_count=$((run_count + 1))
    local file
    file="$out/runs/$(printf '%03d' "$run_count")-${label//[^A-Za-z0-9=.-]/_}.json"
    log "$label ($workload $*)"
    "$perf" kafka --workload "perf/workloads/$workload.toml" --bootstrap "$bootstrap" \
        --label "$label" --broker-pid "$server_pid" --quiet --out "$file" "$@" | grep -v '^wrote ' || log "run failed: $label"
}

# Brokers are started fresh for each measurement and their data deleted afterwards: a
# max-throughput run writes several GB, and the disk is shared with other work.
broker=""
broker_pid=""
broker_data=""
# start_broker NAME [serve flags...]: a fresh broker at $broker.
start_broker() {
    local name="$1"
    shift
    local port
    port="$(free_port)"
    broker_data="$out/data-$name"
    rm -rf "$broker_data"
    "$quiver" serve --data-dir "$broker_data" --kafka-listen "127.0.0.1:$port" "$@" \
        >>"$out/broker-$name.log" 2>&1 &
    broker_pid=$!
    pids+=("$broker_pid")
    wait_for_port "$port"
    broker="127.0.0.1:$port"
}
stop_broker() {
    if ! kill -0 "$broker_pid" 2>/dev/null; then
        log "the broker ($broker_data) died during the last measurement: see its log"
        echo "$(date -u +%FT%TZ) broker $broker_data died; last run: $run_count" \
            >>"$out/broker-deaths.txt"
    fi
    kill "$broker_pid" 2>/dev/null || true
    wait "$broker_pid" 2>/dev/null || true
    rm -rf "$broker_data"
}

machine
log "baseline"
iperf iperf3-start
disk_baseline

sink_port="$(free_port)"
"$perf" sink --listen "127.0.0.1:$sink_port" >"$out/sink.log" 2>&1 &
sink_pid=$!
pids+=("$sink_pid")
wait_for_port "$sink_port"
sink="127.0.0.1:$sink_port"
log "sink at $sink"
echo "disk free at start: $(df -h "$out" | awk 'NR==2 {print $4}')" >>"$out/machine.txt"

common=(--duration-s "$duration_s" --warmup-s 2)
for rep in $(seq 1 "$reps"); do
    log "repetition $rep of $reps"
    run "sink producer" "$sink" "$sink_pid" max-throughput "${common[@]}" --subscriptions 0 --acks 1
    start_broker default
    run "quiver producer acks=1" "$broker" "$broker_pid" max-throughput "${common[@]}" --subscriptions 0 --acks 1
    stop_broker
    start_broker default
    run "quiver producer acks=all" "$broker" "$broker_pid" max-throughput "${common[@]}" --subscriptions 0 --acks -1
    stop_broker
    start_broker flush5 --flush-ms 5
    run "quiver(flush-ms=5) producer acks=1" "$broker" "$broker_pid" max-throughput "${common[@]}" \
        --subscriptions 0 --acks 1
    stop_broker
    run "sink lone 1KiB" "$sink" "$sink_pid" low-latency --duration-s $((duration_s * 2)) \
        --warmup-s 2 --subscriptions 0
    run "sink consumer" "$sink" "$sink_pid" consumer-catchup "${common[@]}" --preload-bytes 0 \
        --group-protocol explicit
    start_broker default
    run "quiver consumer recent data" "$broker" "$broker_pid" consumer-catchup "${common[@]}"
    run "quiver e2e omb-classic" "$broker" "$broker_pid" omb-classic --duration-s "$duration_s" --warmup-s 3
    run "quiver lone 1KiB acks=1" "$broker" "$broker_pid" low-latency --duration-s $((duration_s * 2)) \
        --warmup-s 2 --subscriptions 0
    stop_broker
    start_broker flush5 --flush-ms 5
    run "quiver(flush-ms=5) lone 1KiB acks=1" "$broker" "$broker_pid" low-latency \
        --duration-s $((duration_s * 2)) --warmup-s 2 --subscriptions 0
    stop_broker
done

if "$python" -c 'import confluent_kafka' 2>/dev/null; then
    log "confluent-kafka reference"
    start_broker default
    for acks in 1 all; do
        "$python" perf/reference/confluent_perf.py produce --bootstrap "$broker" \
            --topic "confluent-ref-acks$acks" --messages 500000 --acks "$acks" \
            | tee -a "$out/confluent.jsonl"
    done
    stop_broker
else
    log "no confluent_kafka in $python: skipping the reference run (set PYTHON)"
fi

if [[ "${SKIP_WORKLOAD_SET:-0}" != "1" ]]; then
    for file in perf/workloads/*.toml; do
        name="$(basename "$file" .toml)"
        [[ "$name" == smoke ]] && continue
        log "workload $name"
        start_broker workloads
        "$perf" kafka --workload "$file" --bootstrap "$broker" --broker-pid "$broker_pid" --quiet \
            --out "$out/workloads/$name.json" | grep -v '^wrote ' || log "workload failed: $name"
        stop_broker
    done
fi

iperf iperf3-end
echo "loadavg at end: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$out/machine.txt"
"$perf" summary "$out"/runs/*.json | tee "$out/summary.md"
if ls "$out"/workloads/*.json >/dev/null 2>&1; then
    "$perf" summary "$out"/workloads/*.json | tee "$out/workloads.md"
fi
log "results in $out"
