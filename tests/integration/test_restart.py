"""Durability across a crash and a clean restart.

The crash test produces with acks=all while recording which messages the
broker acknowledged, SIGKILLs the broker mid-stream, restarts it on the same
data dir and reads everything back: an acknowledged message must never be
lost, must sit at the offset the broker reported for it, and offsets must stay
dense. Unacknowledged messages may or may not be there, and a message may
appear twice (the producer retries what was in flight when the broker died).
"""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from kafka_helpers import (
    assert_offsets_dense,
    by_partition,
    confluent_create_topic,
    confluent_read_all,
)

PARTITION_COUNT = 3
MAX_OUTSTANDING_MESSAGES = 1000


def encode_value(sequence: int) -> bytes:
    return f"{sequence}|crash-test payload {sequence:08d} ".encode() * 3


def decode_sequence(value: bytes) -> int:
    return int(value.split(b"|", 1)[0])


class AcknowledgementLog:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.acknowledged: dict[int, tuple[int, int]] = {}
        self.errors: dict[int, str] = {}

    def on_delivery(self, error, message) -> None:
        sequence = decode_sequence(message.value())
        with self.lock:
            if error is None:
                self.acknowledged[sequence] = (message.partition(), message.offset())
            else:
                self.errors[sequence] = str(error)

    def acknowledged_count(self) -> int:
        with self.lock:
            return len(self.acknowledged)

    def snapshot(self) -> dict[int, tuple[int, int]]:
        with self.lock:
            return dict(self.acknowledged)


def make_producer(bootstrap: str):
    from confluent_kafka import Producer

    return Producer(
        {
            "bootstrap.servers": bootstrap,
            "acks": "all",
            # One request in flight: retries after the crash cannot reorder
            # acknowledged messages, so per-partition order is checkable.
            "max.in.flight.requests.per.connection": 1,
            "linger.ms": 2,
            "message.timeout.ms": 60000,
            "retry.backoff.ms": 100,
            "reconnect.backoff.ms": 100,
            "reconnect.backoff.max.ms": 1000,
        }
    )


def produce_one(producer, topic: str, sequence: int, on_delivery) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            producer.produce(
                topic,
                key=f"key-{sequence % 24}".encode(),
                value=encode_value(sequence),
                on_delivery=on_delivery,
            )
            producer.poll(0)
            return
        except BufferError:
            if time.monotonic() >= deadline:
                raise
            producer.poll(0.05)


def wait_for_outstanding_below(producer, limit: int, timeout_s: float = 30) -> None:
    """Serves delivery reports until fewer than `limit` messages await one."""
    deadline = time.monotonic() + timeout_s
    while len(producer) >= limit and time.monotonic() < deadline:
        producer.poll(0.01)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_acknowledged_messages_survive_sigkill_and_restart(broker_factory):
    message_count = 12000
    kill_after_acknowledged = 3000
    produced_while_down = 1000
    crash_broker = broker_factory()
    topic = f"crash-{uuid.uuid4().hex[:12]}"
    confluent_create_topic(crash_broker.bootstrap, topic, PARTITION_COUNT)

    producer = make_producer(crash_broker.bootstrap)
    acknowledgements = AcknowledgementLog()

    acknowledged_before_kill: dict[int, tuple[int, int]] = {}
    killed_at_sequence = None
    restarted = False
    for sequence in range(message_count):
        produce_one(producer, topic, sequence, acknowledgements.on_delivery)
        broker_up = killed_at_sequence is None or restarted
        if broker_up and sequence % 200 == 199:
            # Paced: the kill lands mid-stream, with messages in flight and
            # more still to come, not after everything was already queued.
            wait_for_outstanding_below(producer, MAX_OUTSTANDING_MESSAGES)
        if killed_at_sequence is None and acknowledgements.acknowledged_count() >= kill_after_acknowledged:
            acknowledged_before_kill = acknowledgements.snapshot()
            crash_broker.kill9()
            killed_at_sequence = sequence
        if (
            killed_at_sequence is not None
            and not restarted
            and sequence >= killed_at_sequence + produced_while_down
        ):
            crash_broker.restart()
            restarted = True
    assert killed_at_sequence is not None, (
        f"only {acknowledgements.acknowledged_count()} acks before the end; never killed"
    )
    assert restarted
    remaining = producer.flush(90)
    assert remaining == 0, f"{remaining} messages neither acknowledged nor failed after 90 s"

    acknowledged = acknowledgements.snapshot()
    acknowledged_after_restart = [s for s in acknowledged if s > killed_at_sequence]
    assert len(acknowledged_before_kill) >= kill_after_acknowledged
    assert acknowledged_after_restart, (
        f"nothing produced after the crash was acknowledged; errors: "
        f"{list(acknowledgements.errors.items())[:5]}"
    )

    records = confluent_read_all(crash_broker.bootstrap, topic, range(PARTITION_COUNT), timeout_s=90)
    # Shown with the failure report (or with -s): what the scenario really did.
    print(
        f"crash scenario: killed after {len(acknowledged_before_kill)} acks, at produce call "
        f"{killed_at_sequence}; {len(acknowledged)} of {message_count} acknowledged in the end, "
        f"{len(acknowledgements.errors)} failed; {len(records)} records read back"
    )
    assert_offsets_dense(records, topic)
    log = {
        partition: [decode_sequence(r.value) for r in partition_records]
        for partition, partition_records in by_partition(records).items()
    }
    for record in records:
        sequence = decode_sequence(record.value)
        assert 0 <= sequence < message_count and record.value == encode_value(sequence), (
            f"{topic}[{record.partition}]@{record.offset} holds a corrupt value {record.value[:40]!r}"
        )

    # Every acknowledged message is where the broker said it put it, both the
    # ones acknowledged before the crash and the ones after the restart (a
    # broker that recovered a shorter log would hand those offsets out again).
    misplaced = []
    for sequence, (partition, offset) in sorted(acknowledged.items()):
        partition_log = log.get(partition, [])
        if offset >= len(partition_log) or partition_log[offset] != sequence:
            found = partition_log[offset] if offset < len(partition_log) else None
            misplaced.append((sequence, partition, offset, found))
    lost_before_kill = [m for m in misplaced if m[0] in acknowledged_before_kill]
    assert not lost_before_kill, (
        f"{len(lost_before_kill)} messages acknowledged before SIGKILL are not at their "
        f"acknowledged offset after restart, e.g. (sequence, partition, offset, found) "
        f"{lost_before_kill[:5]}"
    )
    assert not misplaced, (
        f"{len(misplaced)} acknowledged messages not at their acknowledged offset, e.g. "
        f"{misplaced[:5]}"
    )

    # Per partition, acknowledged messages appear (first time) in send order.
    for partition, sequences in log.items():
        first_seen: list[int] = []
        seen: set[int] = set()
        for sequence in sequences:
            if sequence in acknowledged and sequence not in seen:
                seen.add(sequence)
                first_seen.append(sequence)
        assert first_seen == sorted(first_seen), f"{topic}[{partition}] out of order"


@pytest.mark.timeout(120)
def test_sigterm_stops_broker_and_restart_keeps_data(broker_factory):
    message_count = 500
    own_broker = broker_factory()
    topic = f"restart-{uuid.uuid4().hex[:12]}"
    confluent_create_topic(own_broker.bootstrap, topic, 1)

    producer = make_producer(own_broker.bootstrap)
    acknowledgements = AcknowledgementLog()
    for sequence in range(message_count):
        produce_one(producer, topic, sequence, acknowledgements.on_delivery)
    assert producer.flush(30) == 0
    assert not acknowledgements.errors, list(acknowledgements.errors.items())[:5]
    assert sorted(acknowledgements.snapshot().values()) == [(0, i) for i in range(message_count)]

    exit_status = own_broker.terminate()
    assert exit_status == 0, f"SIGTERM should shut the broker down cleanly, exit status {exit_status}"
    own_broker.restart()

    records = confluent_read_all(own_broker.bootstrap, topic, [0])
    assert [decode_sequence(r.value) for r in records] == list(range(message_count))
    assert_offsets_dense(records, topic)

    # Offsets continue after the restart instead of starting over.
    producer = make_producer(own_broker.bootstrap)
    acknowledgements = AcknowledgementLog()
    produce_one(producer, topic, message_count, acknowledgements.on_delivery)
    assert producer.flush(30) == 0
    assert acknowledgements.snapshot() == {message_count: (0, message_count)}, acknowledgements.errors


@pytest.mark.timeout(120)
def test_acks1_on_append_answers_and_keeps_everything_on_clean_restart(broker_factory):
    """`--acks1-on-append` answers acks=1 before the disk write (Redpanda's leader
    ack). Every acknowledged message must still be stored, in order, and a clean
    shutdown must write them all before exiting."""
    from confluent_kafka import Producer

    message_count = 2000
    own_broker = broker_factory(extra_args=["--acks1-on-append"])
    topic = f"acks1-append-{uuid.uuid4().hex[:12]}"
    confluent_create_topic(own_broker.bootstrap, topic, 1)
    producer = Producer(
        {
            "bootstrap.servers": own_broker.bootstrap,
            "acks": 1,
            "enable.idempotence": False,
            "linger.ms": 0,
            "max.in.flight.requests.per.connection": 1,
        }
    )
    acknowledgements = AcknowledgementLog()
    for sequence in range(message_count):
        produce_one(producer, topic, sequence, acknowledgements.on_delivery)
        if sequence % 50 == 0:
            producer.poll(0)
    assert producer.flush(30) == 0
    assert not acknowledgements.errors, list(acknowledgements.errors.items())[:5]
    assert sorted(acknowledgements.snapshot().values()) == [(0, i) for i in range(message_count)]

    records = confluent_read_all(own_broker.bootstrap, topic, [0])
    assert [decode_sequence(r.value) for r in records] == list(range(message_count))

    assert own_broker.terminate() == 0
    own_broker.restart()
    records = confluent_read_all(own_broker.bootstrap, topic, [0])
    assert [decode_sequence(r.value) for r in records] == list(range(message_count))
    assert_offsets_dense(records, topic)
