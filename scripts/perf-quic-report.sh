#!/usr/bin/env bash
# The "QUIC vs Kafka-TCP" figures of docs/benchmarks.md, measured in one run on this machine:
# the same workloads driven by `quiver-perf kafka` (Kafka protocol over TCP) and
# `quiver-perf quic` (quiver/1 over QUIC, verifying the broker's development certificate),
# each run against a fresh `quiver serve` (release) whose data is deleted afterwards,
# protocols interleaved within every repetition so drift on a shared machine hits both:
#   1. one producer, acks=all, max rate, no consumer (the produce-throughput target);
#   2. max-throughput as shipped (a consumer tailing: end-to-end at full speed);
#   3. a lone 1 KiB message, acks=1, 1,000 msg/s, no consumer (the produce-latency target,
#      same offered load over both), and the shipped low-latency workload (with a consumer);
#   4. OMB classic (100 partitions, 50k msg/s, a group: over QUIC a static assignment);
#   5. consumer catch-up (1.5 GB of recent data read back);
#   6. the shipped workload set once over each protocol, with side-by-side plots.
# Results: OUT_DIR (default target/perf-quic-report/<time>): runs/*.json, workloads/*.json,
# compare/*.svg (Kafka-TCP first, QUIC second), summary.md (medians per label and protocol),
# ratios.md (QUIC/TCP of the medians, and per pair), broker-deaths.txt if a broker died.
#
# Environment: REPS (3), DURATION_S (10), SKIP_BUILD=1, MEASUREMENTS (a subset of: producer
# max-throughput lone low-latency omb catchup), SKIP_WORKLOAD_SET=1, WORKLOADS (names
# for the workload set; default: every perf/workloads/*.toml but smoke), QUIC_THREADS (broker
# and generator QUIC runtime threads; default: one per core), GENERATOR_CPUS (a `taskset -c`
# list: both generators run on these CPUs only, e.g. 1 to keep a lone producer beside the
# shard that owns its partition, docs/benchmarks.md "Session 15"). OUT_DIR may hold an
# earlier run's results: they are summarized with the new ones.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
reps="${REPS:-3}"
duration_s="${DURATION_S:-10}"
out="${1:-$root/target/perf-quic-report/$(date +%Y%m%d-%H%M%S)}"
target_dir="${CARGO_TARGET_DIR:-$root/target}"
mkdir -p "$out/runs" "$out/workloads" "$out/compare"
log() { printf '== perf-quic-report: %s\n' "$*" >&2; }

if [[ "${SKIP_BUILD:-0}" != "1" ]]; then
    cargo build --release -p quiver -p quiver-perf
fi
quiver="$target_dir/release/quiver"
perf="$target_dir/release/quiver-perf"
threads=()
if [[ -n "${QUIC_THREADS:-}" ]]; then
    threads=(--quic-threads "$QUIC_THREADS")
fi

free_port() { # free_port tcp|udp
    python3 -c "import socket,sys; s=socket.socket(type=socket.SOCK_DGRAM if sys.argv[1]=='udp' else socket.SOCK_STREAM); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])" "$1"
}
pids=()
cleanup() {
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
}
trap cleanup EXIT

{
    echo "date: $(date -u +%FT%TZ)"
    echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | xargs)"
    echo "cores: $(nproc)"
    echo "kernel: $(uname -r)"
    echo "memory: $(free -g | awk '/Mem:/ {print $2}') GiB"
    echo "git: $(git rev-parse HEAD)"
    echo "net.core.rmem_max: $(cat /proc/sys/net/core/rmem_max)"
    echo "loadavg at start: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "generator CPUs: ${GENERATOR_CPUS:-any}"
} | tee -a "$out/machine.txt" >&2

# start_broker: a fresh `quiver serve` on free ports; sets kafka_addr, quic_addr, broker_pid,
# broker_data. The QUIC listener comes up after the shards; the generator's connect retries
# within its timeout, the TCP port is polled here. Tries twice: the broker's start-up
# O_DIRECT probe has failed once with EOPNOTSUPP while another build filled the machine.
start_broker() {
    start_broker_once || { log "retrying the broker start"; start_broker_once; }
}
start_broker_once() {
    local kafka_port quic_port
    kafka_port="$(free_port tcp)"
    quic_port="$(free_port udp)"
    broker_data="$out/data"
    rm -rf "$broker_data"
    "$quiver" serve --data-dir "$broker_data" --kafka-listen "127.0.0.1:$kafka_port" \
        --quic-listen "127.0.0.1:$quic_port" >>"$out/broker.log" 2>&1 &
    broker_pid=$!
    pids+=("$broker_pid")
    kafka_addr="127.0.0.1:$kafka_port"
    quic_addr="127.0.0.1:$quic_port"
    for _ in $(seq 1 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$kafka_port") 2>/dev/null && [[ -s "$broker_data/tls/cert.pem" ]] && return 0
        kill -0 "$broker_pid" 2>/dev/null || break
        sleep 0.1
    done
    log "the broker did not come up (see $out/broker.log)"
    kill "$broker_pid" 2>/dev/null || true
    wait "$broker_pid" 2>/dev/null || true
    return 1
}
stop_broker() {
    if ! kill -0 "$broker_pid" 2>/dev/null; then
        log "the broker died during the last measurement: see $out/broker.log"
        echo "$(date -u +%FT%TZ) broker died; last run: $last_run" >>"$out/broker-deaths.txt"
    fi
    kill "$broker_pid" 2>/dev/null || true
    wait "$broker_pid" 2>/dev/null || true
    rm -rf "$broker_data"
    # Let the kernel finish freeing and writing back the last run's gigabytes before the
    # next one starts: a lone-message run right after a bulk one measured p50 955 µs
    # instead of ~120.
    sync
    sleep "${SETTLE_S:-2}"
}

# measure PROTOCOL FILE LABEL WORKLOAD [flags...]: one run on a fresh broker.
last_run=""
measure() {
    local protocol="$1" file="$2" label="$3" workload="$4"
    shift 4
    last_run="$label [$protocol] ($workload $*)"
    log "$last_run"
    if ! start_broker; then
        echo "$(date -u +%FT%TZ) no broker for: $last_run" >>"$out/broker-deaths.txt"
        return 0
    fi
    local target=(kafka --bootstrap "$kafka_addr")
    if [[ "$protocol" == quic ]]; then
        target=(quic --quic-addr "$quic_addr" --ca-file "$broker_data/tls/cert.pem" "${threads[@]}")
    fi
    local pin=()
    if [[ -n "${GENERATOR_CPUS:-}" ]]; then
        pin=(taskset -c "$GENERATOR_CPUS")
    fi
    "${pin[@]}" "$perf" "${target[@]}" --workload "perf/workloads/$workload.toml" --label "$label" \
        --broker-pid "$broker_pid" --quiet --out "$file" "$@" | grep -v '^wrote ' \
        || log "run failed: $last_run"
    stop_broker
}

# pair NAME WORKLOAD [flags...]: the same measurement over Kafka-TCP, then QUIC.
run_count=0
pair() {
    local name="$1"
    shift
    run_count=$((run_count + 1))
    local stem
    stem="$out/runs/$(printf '%03d' "$run_count")-${name//[^A-Za-z0-9=.-]/_}"
    measure kafka "$stem-kafka.json" "$name" "$@"
    measure quic "$stem-quic.json" "$name" "$@"
    if [[ -s "$stem-kafka.json" && -s "$stem-quic.json" ]]; then
        "$perf" compare "$stem-kafka.json" "$stem-quic.json" \
            --svg "$out/compare/${name//[^A-Za-z0-9=.-]/_}.svg" >"$stem-compare.txt"
    fi
}

measurements=" ${MEASUREMENTS:-producer max-throughput lone low-latency omb catchup} "
want() { [[ "$measurements" == *" $1 "* ]]; }
common=(--duration-s "$duration_s" --warmup-s 2)
long=(--duration-s $((duration_s * 2)) --warmup-s 2)
for rep in $(seq 1 "$reps"); do
    log "repetition $rep of $reps"
    want producer && pair "producer acks=all" max-throughput "${common[@]}" --subscriptions 0 --acks -1
    want max-throughput && pair "max-throughput" max-throughput "${common[@]}"
    want lone && pair "lone 1KiB acks=1" low-latency "${long[@]}" --subscriptions 0
    want low-latency && pair "low-latency" low-latency "${long[@]}"
    want omb && pair "omb-classic" omb-classic --duration-s $((duration_s * 2)) --warmup-s 3
    want catchup && pair "consumer recent data" consumer-catchup "${common[@]}"
done

if [[ "${SKIP_WORKLOAD_SET:-0}" != "1" ]]; then
    names="${WORKLOADS:-$(cd perf/workloads && ls *.toml | sed 's/\.toml$//' | grep -vx smoke)}"
    for name in $names; do
        measure kafka "$out/workloads/$name-kafka.json" "$name" "$name"
        measure quic "$out/workloads/$name-quic.json" "$name" "$name"
        if [[ -s "$out/workloads/$name-kafka.json" && -s "$out/workloads/$name-quic.json" ]]; then
            "$perf" compare "$out/workloads/$name-kafka.json" "$out/workloads/$name-quic.json" \
                --svg "$out/workloads/$name.svg" >"$out/workloads/$name-compare.txt"
        fi
    done
fi

echo "loadavg at end: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$out/machine.txt"
"$perf" summary "$out"/runs/*.json | tee "$out/summary.md"
# QUIC/TCP ratios of the medians, per measurement.
python3 - "$out" <<'PY' | tee "$out/ratios.md"
import glob, json, statistics, sys
out = sys.argv[1]
# Runs by measurement, then by pair (file stem: NNN-name-kafka.json, NNN-name-quic.json).
pairs = {}
for path in sorted(glob.glob(f"{out}/runs/*.json")):
    r = json.load(open(path))
    base = r["label"].rsplit(" [", 1)[0]
    stem = path.rsplit("-", 1)[0]
    pairs.setdefault(base, {}).setdefault(stem, {})[r["protocol"]] = r
def med(rs, f):
    values = [f(r) for r in rs]
    return statistics.median(values) if values else 0.0
rows = [
    ("publish MB/s", lambda r: r["publish"]["mb_per_s"]),
    ("consume MB/s", lambda r: r["consume"]["mb_per_s"]),
    ("publish p50 µs", lambda r: r["publish_latency_us"]["p50"]),
    ("publish p99 µs", lambda r: r["publish_latency_us"]["p99"]),
    ("publish p99.9 µs", lambda r: r["publish_latency_us"]["p999"]),
    ("e2e p50 µs", lambda r: r["end_to_end_latency_us"]["p50"]),
    ("e2e p99 µs", lambda r: r["end_to_end_latency_us"]["p99"]),
    ("e2e p99.9 µs", lambda r: r["end_to_end_latency_us"]["p999"]),
]
print("| measurement | figure | Kafka-TCP | QUIC | QUIC/TCP | per pair | runs |")
print("|---|---|---:|---:|---:|---|---:|")
for base, by_pair in pairs.items():
    k = [p["kafka"] for p in by_pair.values() if "kafka" in p]
    q = [p["quic"] for p in by_pair.values() if "quic" in p]
    for name, f in rows:
        a, b = med(k, f), med(q, f)
        if a == 0 and b == 0:
            continue
        ratio = f"{b / a:.2f}" if a else "-"
        per_pair = ", ".join(
            f"{f(p['quic']) / f(p['kafka']):.2f}"
            for p in by_pair.values()
            if "kafka" in p and "quic" in p and f(p["kafka"])
        )
        print(f"| {base} | {name} | {a:,.0f} | {b:,.0f} | {ratio} | {per_pair} | {len(k)}/{len(q)} |")
PY
log "results in $out"
