#!/usr/bin/env python3
"""Reference figures with confluent-kafka (librdkafka), the client most users run.

    confluent_perf.py produce --bootstrap H:P --topic T --messages N --size 1024 --acks all
    confluent_perf.py consume --bootstrap H:P --topic T --messages N

produce: one producer, as fast as librdkafka goes (linger.ms=5, batch.size=1 MB), and the
send-to-delivery-report latency of every message (what kafka-producer-perf-test reports).
consume: one consumer in a fresh group reading N messages from the earliest offset.
Prints one JSON object. Python's per-message overhead caps this client well below the broker:
it is a reference for what an ordinary application sees, not a broker ceiling.
"""
import argparse
import json
import time
import uuid

from confluent_kafka import Consumer, Producer


def percentile(sorted_values, fraction):
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, int(fraction * len(sorted_values)))
    return sorted_values[index]


def produce(args):
    producer = Producer({
        "bootstrap.servers": args.bootstrap,
        "acks": args.acks,
        "linger.ms": 5,
        "batch.size": 1_000_000,
        "queue.buffering.max.kbytes": 1_048_576,
        "queue.buffering.max.messages": 1_000_000,
        "enable.idempotence": False,
    })
    payload = bytes(range(256)) * (args.size // 256) + b"x" * (args.size % 256)
    latencies_us = []
    errors = []

    def on_delivery(sent_ns):
        def callback(error, _message):
            if error is not None:
                errors.append(str(error))
            else:
                latencies_us.append((time.perf_counter_ns() - sent_ns) / 1000.0)
        return callback

    started = time.perf_counter()
    for index in range(args.messages):
        while True:
            try:
                producer.produce(args.topic, payload, on_delivery=on_delivery(time.perf_counter_ns()))
                break
            except BufferError:
                producer.poll(0.001)
        if index % 1000 == 0:
            producer.poll(0)
    producer.flush(60)
    seconds = time.perf_counter() - started
    latencies_us.sort()
    return {
        "client": "confluent-kafka",
        "mode": "produce",
        "acks": args.acks,
        "messages": len(latencies_us),
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "seconds": seconds,
        "messages_per_s": len(latencies_us) / seconds,
        "mb_per_s": len(latencies_us) * args.size / seconds / 1e6,
        "latency_us": {
            "p50": percentile(latencies_us, 0.50),
            "p99": percentile(latencies_us, 0.99),
            "p999": percentile(latencies_us, 0.999),
            "max": latencies_us[-1] if latencies_us else 0.0,
        },
    }


def consume(args):
    consumer = Consumer({
        "bootstrap.servers": args.bootstrap,
        "group.id": f"confluent-perf-{uuid.uuid4()}",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "fetch.max.bytes": 52_428_800,
        "max.partition.fetch.bytes": 8_388_608,
    })
    consumer.subscribe([args.topic])
    received = 0
    received_bytes = 0
    started = None
    deadline = time.time() + 120
    while received < args.messages and time.time() < deadline:
        for message in consumer.consume(num_messages=10_000, timeout=1.0):
            if message.error():
                continue
            if started is None:
                started = time.perf_counter()
            received += 1
            received_bytes += len(message.value() or b"")
    seconds = time.perf_counter() - (started or time.perf_counter())
    consumer.close()
    return {
        "client": "confluent-kafka",
        "mode": "consume",
        "messages": received,
        "seconds": seconds,
        "messages_per_s": received / seconds if seconds else 0.0,
        "mb_per_s": received_bytes / seconds / 1e6 if seconds else 0.0,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["produce", "consume"])
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--topic", required=True)
    parser.add_argument("--messages", type=int, default=500_000)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--acks", default="all")
    args = parser.parse_args()
    result = produce(args) if args.mode == "produce" else consume(args)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
