"""Client-side helpers shared by the integration tests: waiting with a bound,
creating topics, reading a topic back completely, and the kafka-python health
check the bad-input tests run after each abuse.

Every loop here has a deadline; none waits forever on a broker that stopped
answering.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Callable, Iterable, Optional, TypeVar

T = TypeVar("T")


def wait_for(
    probe: Callable[[], Optional[T]],
    timeout_s: float,
    what: str,
    interval_s: float = 0.1,
) -> T:
    """Calls `probe` until it returns something truthy; fails after `timeout_s`.

    Exceptions from `probe` count as "not yet" (a broker may answer with a
    retriable error while a topic is being created), but the last one is shown
    when the deadline passes.
    """
    deadline = time.monotonic() + timeout_s
    last_error: Optional[BaseException] = None
    while True:
        try:
            result = probe()
            if result:
                return result
        except Exception as error:  # noqa: BLE001 - reported below
            last_error = error
        if time.monotonic() >= deadline:
            detail = f"; last error: {last_error!r}" if last_error else ""
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}{detail}")
        time.sleep(interval_s)


@dataclass(frozen=True)
class ConsumedRecord:
    partition: int
    offset: int
    key: Optional[bytes]
    value: Optional[bytes]
    timestamp_type: int
    timestamp_ms: int


# ---------------------------------------------------------------------------
# confluent-kafka (librdkafka)


def confluent_create_topic(
    bootstrap: str,
    topic: str,
    partitions: int,
    config: Optional[dict[str, str]] = None,
    timeout_s: float = 30.0,
) -> None:
    """Creates a topic and waits until metadata shows all its partitions led."""
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics(
        [NewTopic(topic, num_partitions=partitions, replication_factor=1, config=config or {})],
        operation_timeout=timeout_s,
    )
    futures[topic].result(timeout=timeout_s)
    confluent_wait_for_partitions(admin, topic, partitions, timeout_s)


def confluent_wait_for_partitions(admin, topic: str, partitions: int, timeout_s: float) -> None:
    def topic_ready():
        metadata = admin.list_topics(timeout=5).topics.get(topic)
        if metadata is None or metadata.error is not None:
            return False
        if len(metadata.partitions) != partitions:
            return False
        return all(p.leader >= 0 and p.error is None for p in metadata.partitions.values())

    wait_for(topic_ready, timeout_s, f"topic {topic} with {partitions} led partitions")


def confluent_read_all(
    bootstrap: str,
    topic: str,
    partitions: Iterable[int],
    timeout_s: float = 60.0,
    extra_config: Optional[dict] = None,
) -> list[ConsumedRecord]:
    """Reads every partition from the beginning up to its current high watermark.

    Uses assign (no group), so it depends only on Fetch and ListOffsets. Fails
    when a partition cannot be read up to the watermark within `timeout_s`.
    """
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"read-all-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
            **(extra_config or {}),
        }
    )
    records: list[ConsumedRecord] = []
    try:
        partitions = list(partitions)
        high_watermarks = {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10, cached=False)[1]
            for p in partitions
        }
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        next_offset = {p: 0 for p in partitions}
        pending = {p for p in partitions if high_watermarks[p] > 0}
        deadline = time.monotonic() + timeout_s
        while pending:
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"reading {topic}: partitions {sorted(pending)} not read up to their high "
                    f"watermarks {high_watermarks} within {timeout_s} s; next offsets {next_offset}"
                )
            message = consumer.poll(0.5)
            if message is None:
                continue
            if message.error():
                if message.error().code() == KafkaError._PARTITION_EOF:
                    continue
                raise AssertionError(f"consumer error reading {topic}: {message.error()}")
            partition = message.partition()
            records.append(
                ConsumedRecord(
                    partition=partition,
                    offset=message.offset(),
                    key=message.key(),
                    value=message.value(),
                    timestamp_type=message.timestamp()[0],
                    timestamp_ms=message.timestamp()[1],
                )
            )
            next_offset[partition] = message.offset() + 1
            if next_offset[partition] >= high_watermarks[partition]:
                pending.discard(partition)
    finally:
        consumer.close()
    return records


def by_partition(records: Iterable[ConsumedRecord]) -> dict[int, list[ConsumedRecord]]:
    grouped: dict[int, list[ConsumedRecord]] = {}
    for record in records:
        grouped.setdefault(record.partition, []).append(record)
    for partition_records in grouped.values():
        partition_records.sort(key=lambda r: r.offset)
    return grouped


def assert_offsets_dense(records: Iterable[ConsumedRecord], topic: str) -> None:
    """Each partition's offsets are exactly 0, 1, 2, ... with no gap or repeat."""
    for partition, partition_records in by_partition(records).items():
        offsets = [r.offset for r in partition_records]
        expected = list(range(len(offsets)))
        if offsets != expected:
            first_bad = next(i for i, (a, b) in enumerate(zip(offsets, expected + [None])) if a != b)
            raise AssertionError(
                f"{topic}[{partition}]: offsets not dense from 0: first mismatch at index "
                f"{first_bad}: {offsets[max(0, first_bad - 3):first_bad + 3]}"
            )


# ---------------------------------------------------------------------------
# kafka-python


def kafka_python_round_trip(bootstrap: str, message_count: int = 10, timeout_s: float = 30.0) -> str:
    """Produces `message_count` messages to a new topic with kafka-python and
    reads them back; fails unless exactly those come back in order.

    This is the "the broker still works" check after each bad-input test, so it
    uses fresh clients, fresh connections and a fresh topic (created with
    CreateTopics, so the check does not hinge on auto-creation).
    """
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition

    topic = f"health-{uuid.uuid4().hex[:12]}"
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    try:
        admin.create_topics(
            {topic: {"num_partitions": 1, "replication_factor": 1}}, wait_for_metadata=True
        )
    finally:
        admin.close()
    expected = [(f"k{i}".encode(), f"health {i}".encode()) for i in range(message_count)]
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", request_timeout_ms=10000)
    try:
        futures = [producer.send(topic, key=k, value=v) for k, v in expected]
        producer.flush(timeout=timeout_s)
        offsets = [f.get(timeout=timeout_s).offset for f in futures]
    finally:
        producer.close(timeout=5)
    assert offsets == list(range(message_count)), f"produce offsets on fresh topic: {offsets}"

    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        request_timeout_ms=10000,
    )
    try:
        partition = TopicPartition(topic, 0)
        consumer.assign([partition])
        consumer.seek_to_beginning(partition)
        received: list[tuple[bytes, bytes]] = []
        deadline = time.monotonic() + timeout_s
        while len(received) < message_count and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                received.extend((r.key, r.value) for r in batch)
    finally:
        consumer.close()
    assert received == expected, f"round trip on {topic}: got {received!r}"
    return topic


def kafka_python_create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    """Creates a topic with kafka-python's admin client and waits for its metadata."""
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15000)
    try:
        admin.create_topics(
            {topic: {"num_partitions": partitions, "replication_factor": 1}},
            wait_for_metadata=True,
        )
    finally:
        admin.close()
