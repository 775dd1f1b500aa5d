#!/usr/bin/env python3
"""Splits each lone produce request of a `scripts/trace-lone.sh` trace into stages.

Input: `perf script -F comm,tid,cpu,time,event,trace` output with raw syscall and scheduler
tracepoints and the uprobes that trace-lone.sh sets (broker: ep, cd, rf; generator: start,
write, ack). A request runs from the generator's `start` (its send time reached) to its
`ack`; the broker's stages are taken between the generator's send syscall and the broker's
answer. Prints p50/p90/p99 per stage, in microseconds.
"""
import collections
import re
import sys

LINE = re.compile(r"^\s*(.+?)\s+(\d+)\s+\[(\d+)\]\s+([\d.]+):\s+(\S+)\s*(.*)$")
SEND = (44, 46)  # sendto, sendmsg
RECV = (45, 299)  # recvfrom, recvmmsg
PWRITE = 18


def events(path):
    for line in open(path):
        m = LINE.match(line)
        if m:
            yield float(m.group(4)), m.group(1), m.group(5).rstrip(":"), m.group(6)


def syscall(event, entering, numbers):
    _, _, name, args = event
    want = "raw_syscalls:sys_enter" if entering else "raw_syscalls:sys_exit"
    if name != want:
        return False
    number = args.split()[1] if args.startswith("NR ") else ""
    return number.lstrip("-").isdigit() and int(number) in numbers


def delivered(event):
    """A receive that returned data (not EAGAIN)."""
    return syscall(event, False, RECV) and not event[3].endswith("= -11")


def main(path):
    ev = list(events(path))
    starts = [i for i, e in enumerate(ev) if e[2].endswith(":start__return")]
    stages = collections.defaultdict(list)
    order = [
        ("start", "write"), ("write", "sent"), ("sent", "broker runs"),
        ("broker runs", "request read"), ("request read", "pwrite"),
        ("pwrite", "answer sent"), ("answer sent", "client read"), ("client read", "ack"),
    ]
    for a, b in zip(starts, starts[1:]):
        at = {"start": ev[a][0]}
        for e in ev[a:b]:
            t, comm, name, _ = e
            broker = comm.startswith("shard")

            def mark(stage):
                at.setdefault(stage, t)

            if not broker and name.endswith(":write"):
                mark("write")
            elif "write" in at and not broker and syscall(e, True, SEND):
                mark("sent")
            elif "sent" in at and broker and "broker runs" not in at:
                mark("broker runs")
            elif "broker runs" in at and broker and delivered(e):
                mark("request read")
            elif "request read" in at and broker and syscall(e, True, (PWRITE,)):
                mark("pwrite")
            elif "pwrite" in at and broker and syscall(e, True, SEND):
                mark("answer sent")
            elif "answer sent" in at and not broker and delivered(e):
                mark("client read")
            elif "client read" in at and not broker and name.endswith(":ack"):
                mark("ack")
                break
        if all(x in at and y in at for x, y in order):
            for x, y in order:
                stages[f"{x} -> {y}"].append((at[y] - at[x]) * 1e6)
            stages["total"].append((at["ack"] - at["start"]) * 1e6)

    def q(xs, p):
        xs = sorted(xs)
        return xs[min(len(xs) - 1, int(len(xs) * p))]

    if not stages:
        print("no complete request in the trace")
        return 1
    for name, xs in stages.items():
        print(f"{name:<30} n {len(xs):4d}  p50 {q(xs, .5):6.0f}  p90 {q(xs, .9):6.0f}  p99 {q(xs, .99):6.0f} µs")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
