#!/usr/bin/env bash
# Where a lone produce request's time goes, stage by stage: runs the lone workload
# (perf/workloads/low-latency.toml without consumers) against a fresh broker, records 1 s of
# syscall and scheduler tracepoints plus uprobes on a few functions of the broker and the
# generator, and splits every request at those events (scripts/trace-lone-stages.py).
# docs/benchmarks.md, "Session 12: where a lone QUIC request's extra time goes", was made
# with this.
#
#   scripts/trace-lone.sh [kafka|quic] [OUT_PREFIX]
#
# Needs root (perf probe, perf record -a) and linux-perf; uprobes cost ~1-2 µs each, so read
# stage lengths relative to each other, not as the untraced latency. Probes go on copies of
# the binaries (OUT_PREFIX.quiver, OUT_PREFIX.quiver-perf) and are removed at the end.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
protocol="${1:-quic}"
out="${2:-target/trace-lone/$protocol}"
mkdir -p "$(dirname "$out")"
out="$(realpath -m "$out")"
cp target/release/quiver "$out.quiver"
cp target/release/quiver-perf "$out.quiver-perf"

# perf probe takes file offsets; text symbols sit 0x1000 past theirs in our PIE builds, so
# the offset is computed from the ELF program headers.
probe() { # probe BINARY GROUP:EVENT SYMBOL_REGEX [%return]
    local bin=$1 event=$2 regex=$3 ret=${4:-}
    local addr
    addr=$(nm "$bin" | grep -E "$regex" | grep ' [Tt] ' | head -1 | awk '{print $1}')
    [ -n "$addr" ] || { echo "no symbol for $regex" >&2; return 1; }
    local delta
    delta=$(readelf -lW "$bin" | awk '$1=="LOAD" && / E / {print $3" "$2; exit}' |
        { read -r vaddr off; echo $((vaddr - off)); })
    perf probe -q -x "$bin" -a "$event=$(printf '0x%x' $((0x$addr - delta)))$ret"
}
cleanup() { perf probe -q -d 'qbroker:*' 2>/dev/null || true; perf probe -q -d 'qgen:*' 2>/dev/null || true; }
trap cleanup EXIT
cleanup
b="$out.quiver"
g="$out.quiver-perf"
probe "$b" qbroker:ep 'EndpointDriver.*4poll17'
probe "$b" qbroker:cd 'ConnectionDriver.*4poll17'
probe "$b" qbroker:rf 'server10read_frame28'
probe "$g" qgen:start "$([ "$protocol" = quic ] && echo QuicLink || echo KafkaLink).*10pace_until17" %return
probe "$g" qgen:write "$([ "$protocol" = quic ] && echo QuicLink || echo KafkaLink).*5write17"
probe "$g" qgen:ack 'Acknowledger12acknowledged17'

data="$(mktemp -d "${TMPDIR:-/tmp}/quiver-trace.XXXXXX")"
port() { python3 -c "import socket,sys; s=socket.socket(type=socket.SOCK_DGRAM if sys.argv[1]=='udp' else socket.SOCK_STREAM); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])" "$1"; }
kafka_port="$(port tcp)"
quic_port="$(port udp)"
"$b" serve --data-dir "$data" --kafka-listen "127.0.0.1:$kafka_port" \
    --quic-listen "127.0.0.1:$quic_port" >"$out.broker.log" 2>&1 &
broker=$!
for _ in $(seq 100); do [ -s "$data/tls/cert.pem" ] && break; sleep 0.1; done
if [ "$protocol" = quic ]; then
    target=(quic --quic-addr "127.0.0.1:$quic_port" --ca-file "$data/tls/cert.pem")
else
    target=(kafka --bootstrap "127.0.0.1:$kafka_port")
fi
"$g" "${target[@]}" --workload perf/workloads/low-latency.toml --subscriptions 0 \
    --duration-s 8 --warmup-s 2 --quiet --out "$out.json" >/dev/null 2>&1 &
generator=$!
sleep 5
perf record -q -o "$out.data" -e 'qbroker:*' -e 'qgen:*' \
    -e raw_syscalls:sys_enter -e raw_syscalls:sys_exit \
    -e sched:sched_switch -e sched:sched_wakeup -a -- sleep 1 >/dev/null 2>&1
wait "$generator"
kill "$broker"
wait "$broker" || true
rm -rf "$data"
perf script -i "$out.data" -F comm,tid,cpu,time,event,trace 2>/dev/null | grep -v '^ *perf ' >"$out.txt"
python3 scripts/trace-lone-stages.py "$out.txt"
