#!/usr/bin/env bash
# Instructions a 1-shard broker executes per lone produce request, counted by callgrind:
# reproducible where wall-clock latency on this 2-vCPU machine is not (the same binary gives
# the same count within ~1%, whatever else runs). Use it to A/B a change to the produce path.
#
#   scripts/callgrind-lone.sh [BROKER_BINARY] [kafka|quic] [OUT_PREFIX]
#
# Starts `BROKER_BINARY serve --cores 1` under valgrind, warms up with one short run of the
# low-latency workload (connection set-up, topic creation), zeroes the counters, produces
# for 5 s at 200 msg/s (1 KiB, acks=1, one in flight), dumps the counters and prints
# instructions per acknowledged request. The QUIC figure includes the measured run's own
# connection handshake (~17M instructions). Look inside with
#   callgrind_annotate --inclusive=yes OUT_PREFIX.<pid>.1 | less
# Needs valgrind (apt-get install -y valgrind) and a release build of quiver-perf.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
broker="${1:-target/release/quiver}"
protocol="${2:-kafka}"
out="${3:-target/callgrind/lone-$protocol}"
perf="${PERF:-target/release/quiver-perf}"
mkdir -p "$(dirname "$out")"
data="$(mktemp -d "${TMPDIR:-/tmp}/quiver-callgrind.XXXXXX")"
port() { python3 -c "import socket,sys; s=socket.socket(type=socket.SOCK_DGRAM if sys.argv[1]=='udp' else socket.SOCK_STREAM); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])" "$1"; }
kafka_port="$(port tcp)"
quic_port="$(port udp)"

valgrind --tool=callgrind --callgrind-out-file="$out.%p" "$broker" serve --data-dir "$data" \
    --kafka-listen "127.0.0.1:$kafka_port" --quic-listen "127.0.0.1:$quic_port" --cores 1 \
    >"$out.log" 2>&1 &
vg=$!
cleanup() {
    kill "$vg" 2>/dev/null || true
    wait "$vg" 2>/dev/null || true
    rm -rf "$data"
}
trap cleanup EXIT
for _ in $(seq 1 300); do
    (exec 3<>"/dev/tcp/127.0.0.1/$kafka_port") 2>/dev/null && [[ -s "$data/tls/cert.pem" ]] && break
    kill -0 "$vg" 2>/dev/null || { cat "$out.log" >&2; exit 1; }
    sleep 0.2
done
if [[ "$protocol" == quic ]]; then
    target=(quic --quic-addr "127.0.0.1:$quic_port" --ca-file "$data/tls/cert.pem")
else
    target=(kafka --bootstrap "127.0.0.1:$kafka_port")
fi
run() { # run DURATION_S [extra flags]
    "$perf" "${target[@]}" --workload perf/workloads/low-latency.toml --subscriptions 0 \
        --rate 200 --duration-s "$1" --quiet "${@:2}" >/dev/null
}
run 2 --warmup-s 1
callgrind_control -z "$vg" >/dev/null
run 5 --warmup-s 0 --out "$out.json"
callgrind_control -d "$vg" >/dev/null
sleep 1
dump="$(ls -t "$out.$vg".* | grep -v '\.log$' | head -n 1)"
python3 - "$dump" "$out.json" <<'PY'
import json, re, sys
dump, result = sys.argv[1], sys.argv[2]
total = next(int(m.group(1)) for line in open(dump) if (m := re.match(r"summary: (\d+)", line)))
requests = json.load(open(result))["publish"]["messages"]
print(f"{total:,} instructions for {requests} requests: {total / requests:,.0f} per request ({dump})")
PY
