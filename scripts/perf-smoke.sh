#!/usr/bin/env bash
# End-to-end check of the load generator, run by scripts/test.sh: builds the broker and
# quiver-perf (release), starts `quiver serve` on free ports with its data under ./target,
# runs perf/workloads/smoke.toml (a few seconds) against it over the Kafka protocol and over
# QUIC (`quiver-perf quic`, verifying the broker's development certificate), and asserts that
# each JSON result exists, shows non-zero publish and consume throughput, names its protocol
# and recorded no errors. Then runs the same workload against `quiver-perf sink` (the
# generator's ceiling check).
#
# Environment: PERF_SMOKE_SKIP_BUILD=1 to use the binaries already in target/release.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
target_dir="${CARGO_TARGET_DIR:-$root/target}"
work_dir="$root/target/perf-smoke"
rm -rf "$work_dir"
mkdir -p "$work_dir"

if [[ "${PERF_SMOKE_SKIP_BUILD:-0}" != "1" ]]; then
    cargo build --release -p quiver -p quiver-perf
fi
quiver="$target_dir/release/quiver"
perf="$target_dir/release/quiver-perf"

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

free_udp_port() {
    python3 -c 'import socket; s=socket.socket(type=socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

wait_for_port() {
    local port="$1" pid="$2"
    for _ in $(seq 1 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            return 0
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "perf-smoke: server exited before listening" >&2
            return 1
        fi
        sleep 0.1
    done
    echo "perf-smoke: nothing listening on port $port after 10 s" >&2
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

# check_result JSON REQUIRE_CONSUME [PROTOCOL] [MIN_CONSUMED_BYTES]: the run has no errors,
# the expected protocol and result fields, published if its workload produces during the
# run, consumed if asked, and consumed more than MIN_CONSUMED_BYTES if given.
check_result() {
    local json="$1" require_consume="$2" protocol="${3:-kafka}" min_consumed="${4:-0}"
    python3 - "$json" "$require_consume" "$protocol" "$min_consumed" <<'PY'
import json, sys
path, require_consume, protocol = sys.argv[1], sys.argv[2] == "1", sys.argv[3]
min_consumed = int(sys.argv[4])
result = json.load(open(path))
publish = result["publish"]["messages_per_s"]
consume = result["consume"]["messages_per_s"]
consumed = result["consume"]["bytes"]
errors = result["errors"]
print(f"perf-smoke: {path}: publish {publish:.0f} msg/s, consume {consume:.0f} msg/s "
      f"({consumed} bytes), publish p99 {result['publish_latency_us']['p99']:.0f} us, "
      f"errors {errors}")
assert publish > 0 or not result["workload"]["produce_during_run"], "no publish throughput"
assert not require_consume or consume > 0, "no consume throughput"
assert consumed > min_consumed, f"consumed {consumed} bytes, not more than {min_consumed}"
assert errors == 0, f"errors: {result['first_error']}"
assert result["protocol"] == protocol, f"protocol {result['protocol']}, expected {protocol}"
for key in ("workload", "bootstrap", "machine", "git_revision", "series", "publish_spectrum"):
    assert key in result, f"missing {key}"
PY
}

port="$(free_port)"
quic_port="$(free_udp_port)"
"$quiver" serve --data-dir "$work_dir/data" --kafka-listen "127.0.0.1:$port" \
    --quic-listen "127.0.0.1:$quic_port" >"$work_dir/broker.log" 2>&1 &
pids+=("$!")
wait_for_port "$port" "${pids[-1]}"
"$perf" kafka --workload perf/workloads/smoke.toml --bootstrap "127.0.0.1:$port" \
    --out "$work_dir/smoke-quiver.json"
check_result "$work_dir/smoke-quiver.json" 1
test -s "$work_dir/smoke-quiver.svg"
"$perf" quic --workload perf/workloads/smoke.toml --quic-addr "127.0.0.1:$quic_port" \
    --ca-file "$work_dir/data/tls/cert.pem" --out "$work_dir/smoke-quiver-quic.json"
check_result "$work_dir/smoke-quiver-quic.json" 1 quic

# consumer-catchup: a preloaded topic read to its end and from the start again, with no
# producer. Reading more than was preloaded shows the consumer starts over; over Kafka it
# fetches in a session, whose answers leave out the partitions with nothing new.
catchup_bytes=20000000
catchup=(--workload perf/workloads/consumer-catchup.toml --preload-bytes "$catchup_bytes"
    --duration-s 3 --warmup-s 1 --quiet)
"$perf" kafka "${catchup[@]}" --bootstrap "127.0.0.1:$port" --topic-prefix smoke-tcp- \
    --out "$work_dir/catchup-quiver.json"
check_result "$work_dir/catchup-quiver.json" 1 kafka "$catchup_bytes"
"$perf" quic "${catchup[@]}" --quic-addr "127.0.0.1:$quic_port" --topic-prefix smoke-quic- \
    --ca-file "$work_dir/data/tls/cert.pem" --out "$work_dir/catchup-quiver-quic.json"
check_result "$work_dir/catchup-quiver-quic.json" 1 quic "$catchup_bytes"

sink_port="$(free_port)"
"$perf" sink --listen "127.0.0.1:$sink_port" >"$work_dir/sink.log" 2>&1 &
pids+=("$!")
wait_for_port "$sink_port" "${pids[-1]}"
"$perf" kafka --workload perf/workloads/smoke.toml --bootstrap "127.0.0.1:$sink_port" \
    --group-protocol explicit --out "$work_dir/smoke-sink.json"
check_result "$work_dir/smoke-sink.json" 1

"$perf" compare "$work_dir/smoke-sink.json" "$work_dir/smoke-quiver.json" \
    "$work_dir/smoke-quiver-quic.json" \
    --svg "$work_dir/compare.svg" >/dev/null
test -s "$work_dir/compare.svg"
echo "perf-smoke: passed"
