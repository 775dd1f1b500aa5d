"""confluent-kafka (librdkafka 2.x, bundled in the wheel) against the broker:
idempotent produce with every compression codec, a consumer group that
rebalances under load, ListOffsets, Metadata and the admin APIs.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter

import pytest

from kafka_helpers import (
    assert_offsets_dense,
    by_partition,
    confluent_create_topic,
    confluent_read_all,
    confluent_wait_for_partitions,
    wait_for,
)

COMPRESSION_TYPES = ["none", "gzip", "snappy", "lz4", "zstd"]
PRODUCE_QUEUE_FULL_BACKOFF_S = 0.05


def encode_value(sequence: int) -> bytes:
    # Repetitive text so every codec really shrinks the batch.
    return f"{sequence}|order line for sequence {sequence} ".encode() * 4


def decode_sequence(value: bytes) -> int:
    return int(value.split(b"|", 1)[0])


def produce_one(producer, topic: str, **kwargs) -> None:
    """produce() that waits (bounded) when librdkafka's local queue is full."""
    deadline = time.monotonic() + 30
    while True:
        try:
            producer.produce(topic, **kwargs)
            producer.poll(0)
            return
        except BufferError:
            if time.monotonic() >= deadline:
                raise
            producer.poll(PRODUCE_QUEUE_FULL_BACKOFF_S)


class DeliveryLog:
    """Delivery reports keyed by sequence number; errors kept separately."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.delivered: dict[int, tuple[int, int]] = {}
        self.errors: list[str] = []

    def on_delivery(self, error, message) -> None:
        with self.lock:
            if error is not None:
                self.errors.append(f"{error} (value prefix {message.value()[:20]!r})")
            else:
                sequence = decode_sequence(message.value())
                assert sequence not in self.delivered, f"two delivery reports for {sequence}"
                self.delivered[sequence] = (message.partition(), message.offset())


@pytest.mark.parametrize("compression", COMPRESSION_TYPES)
@pytest.mark.timeout(120)
def test_idempotent_producer_round_trip(broker, topic, compression):
    from confluent_kafka import Producer

    partition_count = 3
    message_count = 3000
    key_count = 30
    confluent_create_topic(broker.bootstrap, topic, partition_count)

    producer = Producer(
        {
            "bootstrap.servers": broker.bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "compression.type": compression,
            "linger.ms": 5,
            "batch.num.messages": 500,
        }
    )
    deliveries = DeliveryLog()
    for sequence in range(message_count):
        produce_one(
            producer,
            topic,
            key=f"key-{sequence % key_count}".encode(),
            value=encode_value(sequence),
            on_delivery=deliveries.on_delivery,
        )
    assert producer.flush(60) == 0, "messages still queued after 60 s"
    assert not deliveries.errors, deliveries.errors[:5]
    assert len(deliveries.delivered) == message_count

    records = confluent_read_all(broker.bootstrap, topic, range(partition_count))
    sequences = [decode_sequence(r.value) for r in records]
    duplicates = [s for s, n in Counter(sequences).items() if n > 1]
    assert not duplicates, f"idempotent producer, yet duplicates in the log: {duplicates[:10]}"
    missing = sorted(set(range(message_count)) - set(sequences))
    assert not missing, (
        f"{len(missing)} of {message_count} acknowledged messages not read back up to the high "
        f"watermark, e.g. {missing[:10]}"
    )
    assert_offsets_dense(records, topic)

    partitions_of_key: dict[bytes, set[int]] = {}
    for record in records:
        sequence = decode_sequence(record.value)
        assert record.value == encode_value(sequence), f"payload of {sequence} corrupted"
        assert record.key == f"key-{sequence % key_count}".encode()
        assert deliveries.delivered[sequence] == (record.partition, record.offset), (
            f"{sequence}: acknowledged at {deliveries.delivered[sequence]}, "
            f"found at {(record.partition, record.offset)}"
        )
        partitions_of_key.setdefault(record.key, set()).add(record.partition)
    assert all(len(p) == 1 for p in partitions_of_key.values())
    for partition, partition_records in by_partition(records).items():
        partition_sequences = [decode_sequence(r.value) for r in partition_records]
        assert partition_sequences == sorted(partition_sequences), (
            f"{topic}[{partition}] not in produce order"
        )
    assert len(by_partition(records)) == partition_count, "some partition got no keys"


class GroupMember:
    """One consumer of the group, polled by its own thread.

    librdkafka releases the GIL while it polls, so three members in three
    threads behave like three processes as far as the broker can tell.
    """

    POLL_TIMEOUT_S = 0.2

    def __init__(self, index: int, bootstrap: str, group_id: str, topic: str) -> None:
        from confluent_kafka import Consumer

        self.index = index
        self.topic = topic
        self.lock = threading.Lock()
        self.current_assignment: set[int] = set()
        self.assignment_events: list[tuple[str, tuple[int, ...]]] = []
        self.ever_assigned: set[int] = set()
        self.consumed: list[tuple[int, int, int]] = []  # (partition, offset, sequence)
        self.errors: list[str] = []
        self.stop_requested = threading.Event()
        self.consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": group_id,
                "client.id": f"member-{index}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": True,
                "auto.commit.interval.ms": 500,
                "session.timeout.ms": 10000,
                "heartbeat.interval.ms": 1000,
                # Also the rebalance timeout the broker waits for rejoining members.
                "max.poll.interval.ms": 30000,
            }
        )
        self.thread = threading.Thread(target=self._run, name=f"group-member-{index}", daemon=True)

    def _on_assign(self, consumer, partitions) -> None:
        with self.lock:
            numbers = tuple(sorted(p.partition for p in partitions))
            self.assignment_events.append(("assign", numbers))
            self.current_assignment |= set(numbers)
            self.ever_assigned |= set(numbers)

    def _on_revoke(self, consumer, partitions) -> None:
        with self.lock:
            numbers = tuple(sorted(p.partition for p in partitions))
            self.assignment_events.append(("revoke", numbers))
            self.current_assignment -= set(numbers)

    def _run(self) -> None:
        from confluent_kafka import KafkaError

        try:
            self.consumer.subscribe(
                [self.topic],
                on_assign=self._on_assign,
                on_revoke=self._on_revoke,
                on_lost=self._on_revoke,
            )
            while not self.stop_requested.is_set():
                message = self.consumer.poll(self.POLL_TIMEOUT_S)
                if message is None:
                    continue
                if message.error():
                    if message.error().code() != KafkaError._PARTITION_EOF:
                        with self.lock:
                            self.errors.append(str(message.error()))
                    continue
                with self.lock:
                    self.consumed.append(
                        (message.partition(), message.offset(), decode_sequence(message.value()))
                    )
        except Exception as error:  # noqa: BLE001 - surfaced by the test
            with self.lock:
                self.errors.append(f"member thread died: {error!r}")
        finally:
            # close() commits what was consumed and sends LeaveGroup.
            self.consumer.close()

    def start(self) -> None:
        self.thread.start()

    def leave(self, timeout_s: float = 30) -> None:
        self.stop_requested.set()
        self.thread.join(timeout_s)
        assert not self.thread.is_alive(), f"member {self.index} did not close within {timeout_s} s"

    def snapshot_assignment(self) -> set[int]:
        with self.lock:
            return set(self.current_assignment)


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_consumer_group_shares_partitions_and_loses_nothing_when_a_member_leaves(broker, topic):
    from confluent_kafka import Producer

    partition_count = 4
    member_count = 3
    message_count = 20000
    chunk_size = 500
    leave_after_messages = message_count // 3
    confluent_create_topic(broker.bootstrap, topic, partition_count)
    group_id = f"group-{uuid.uuid4().hex[:10]}"

    members = [GroupMember(i, broker.bootstrap, group_id, topic) for i in range(member_count)]
    for member in members:
        member.start()
    try:
        def balanced():
            assignments = [m.snapshot_assignment() for m in members]
            if not all(assignments):
                return False
            union = set().union(*assignments)
            no_overlap = sum(len(a) for a in assignments) == len(union)
            return union == set(range(partition_count)) and no_overlap

        wait_for(balanced, 60, "every member to own at least one partition, all 4 owned once")

        producer = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all", "linger.ms": 5})
        deliveries = DeliveryLog()
        leaving_member = members[0]
        for sequence in range(message_count):
            produce_one(
                producer,
                topic,
                key=f"key-{sequence % 97}".encode(),
                value=encode_value(sequence),
                on_delivery=deliveries.on_delivery,
            )
            if sequence % chunk_size == chunk_size - 1:
                # Paced so consumption and the rebalance overlap production.
                producer.poll(0.02)
            if sequence == leave_after_messages:
                producer.flush(30)
                wait_for(lambda: leaving_member.consumed, 30, "the leaving member to consume")
                leaving_member.leave()
        assert producer.flush(60) == 0
        assert not deliveries.errors, deliveries.errors[:5]
        assert len(deliveries.delivered) == message_count

        survivors = members[1:]

        def everything_consumed():
            seen = set()
            for member in members:
                with member.lock:
                    seen.update(sequence for _, _, sequence in member.consumed)
            return len(seen) == message_count

        try:
            wait_for(everything_consumed, 90, "the group to consume every produced message")
        except AssertionError:
            pass  # reported with detail below
    finally:
        for member in members:
            if member.thread.is_alive():
                member.leave()

    for member in members:
        assert not member.errors, f"member {member.index} errors: {member.errors[:5]}"
        assert member.ever_assigned, (
            f"member {member.index} never got a partition: {member.assignment_events}"
        )

    all_consumed = [c for m in members for c in m.consumed]
    seen_sequences = {sequence for _, _, sequence in all_consumed}
    missing = sorted(set(range(message_count)) - seen_sequences)
    assert not missing, (
        f"{len(missing)} acknowledged messages never consumed by the group, e.g. {missing[:10]}; "
        f"assignment events: {[(m.index, m.assignment_events) for m in members]}"
    )
    survivor_partitions = set().union(*(m.ever_assigned for m in survivors))
    assert survivor_partitions == set(range(partition_count)), (
        f"after member 0 left, its partitions were not taken over: survivors had "
        f"{survivor_partitions}"
    )

    # Each record was consumed where the producer was told it was written.
    for partition, offset, sequence in all_consumed:
        assert deliveries.delivered[sequence] == (partition, offset)

    # At-least-once: a message may come twice only if its partition changed
    # hands (rebalance restarts from the last commit). A repeat in a partition
    # that was assigned exactly once means the broker served data twice.
    assign_count = Counter(
        partition
        for member in members
        for kind, partitions in member.assignment_events
        if kind == "assign"
        for partition in partitions
    )
    repeated = [s for s, n in Counter(s for _, _, s in all_consumed).items() if n > 1]
    unexplained = [
        s for s in repeated if assign_count[deliveries.delivered[s][0]] <= 1
    ]
    assert not unexplained, (
        f"messages delivered twice in partitions that never moved: {unexplained[:10]}"
    )


@pytest.mark.timeout(90)
def test_list_offsets_watermarks_and_offsets_for_times(broker, topic):
    from confluent_kafka import TIMESTAMP_CREATE_TIME, Consumer, Producer, TopicPartition

    message_count = 10
    timestamp_step_ms = 1000
    confluent_create_topic(broker.bootstrap, topic, 2)
    base_timestamp_ms = int(time.time() * 1000) - 600_000

    producer = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all"})
    deliveries = DeliveryLog()
    for i in range(message_count):
        producer.produce(
            topic,
            value=encode_value(i),
            partition=0,
            timestamp=base_timestamp_ms + i * timestamp_step_ms,
            on_delivery=deliveries.on_delivery,
        )
    assert producer.flush(30) == 0
    assert not deliveries.errors, deliveries.errors
    assert sorted(deliveries.delivered.values()) == [(0, i) for i in range(message_count)]

    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": f"lo-{uuid.uuid4().hex[:8]}"})
    try:
        partition_0 = TopicPartition(topic, 0)
        assert consumer.get_watermark_offsets(partition_0, timeout=10, cached=False) == (0, message_count)
        empty_partition = TopicPartition(topic, 1)
        assert consumer.get_watermark_offsets(empty_partition, timeout=10, cached=False) == (0, 0)

        def offset_for_time(timestamp_ms: int) -> int:
            [result] = consumer.offsets_for_times(
                [TopicPartition(topic, 0, timestamp_ms)], timeout=10
            )
            assert result.error is None, result.error
            return result.offset

        # The earliest offset whose timestamp is >= the one asked for.
        assert offset_for_time(base_timestamp_ms - 5000) == 0
        assert offset_for_time(base_timestamp_ms) == 0
        assert offset_for_time(base_timestamp_ms + 4500) == 5
        assert offset_for_time(base_timestamp_ms + 5000) == 5
        assert offset_for_time(base_timestamp_ms + 9000) == 9
        # Later than every message: Kafka answers offset -1 (no such message).
        assert offset_for_time(base_timestamp_ms + 60_000) == -1
    finally:
        consumer.close()

    records = confluent_read_all(broker.bootstrap, topic, [0])
    assert [(r.timestamp_type, r.timestamp_ms) for r in records] == [
        (TIMESTAMP_CREATE_TIME, base_timestamp_ms + i * timestamp_step_ms)
        for i in range(message_count)
    ], "the broker must keep the producer's CreateTime timestamps"


@pytest.mark.timeout(60)
def test_metadata_lists_the_broker_and_topic_partitions(broker, topic):
    from confluent_kafka.admin import AdminClient

    confluent_create_topic(broker.bootstrap, topic, 2)
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    metadata = admin.list_topics(timeout=10)

    assert len(metadata.brokers) == 1, metadata.brokers
    [(broker_id, broker_metadata)] = metadata.brokers.items()
    assert (broker_metadata.host, broker_metadata.port) == (broker.host, broker.port), (
        "advertised address must be the --advertised-host and the listen port"
    )
    assert metadata.controller_id == broker_id
    topic_metadata = metadata.topics[topic]
    assert topic_metadata.error is None
    assert sorted(topic_metadata.partitions) == [0, 1]
    for partition in topic_metadata.partitions.values():
        assert partition.error is None
        assert partition.leader == broker_id
        assert list(partition.replicas) == [broker_id]
        assert list(partition.isrs) == [broker_id]


@pytest.mark.timeout(60)
def test_auto_created_topic_gets_default_partitions_flag(broker_factory):
    from confluent_kafka import Producer

    own_broker = broker_factory(extra_args=["--default-partitions", "2"])
    topic = f"auto-{uuid.uuid4().hex[:12]}"
    producer = Producer({"bootstrap.servers": own_broker.bootstrap, "acks": "all"})
    deliveries = DeliveryLog()
    for i in range(20):
        producer.produce(topic, key=f"k{i}".encode(), value=encode_value(i), on_delivery=deliveries.on_delivery)
    assert producer.flush(30) == 0
    assert not deliveries.errors, deliveries.errors
    metadata = producer.list_topics(topic, timeout=10).topics[topic]
    assert metadata.error is None
    assert sorted(metadata.partitions) == [0, 1]
    records = confluent_read_all(own_broker.bootstrap, topic, [0, 1])
    assert sorted(decode_sequence(r.value) for r in records) == list(range(20))


@pytest.mark.timeout(90)
def test_admin_client_topic_lifecycle(broker, topic):
    from confluent_kafka import KafkaError, KafkaException, Producer
    from confluent_kafka.admin import (
        AdminClient,
        ConfigResource,
        NewPartitions,
        NewTopic,
        ResourceType,
    )

    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    retention_ms = "3600000"
    created = admin.create_topics(
        [NewTopic(topic, num_partitions=2, replication_factor=1, config={"retention.ms": retention_ms})],
        operation_timeout=30,
    )
    created[topic].result(timeout=30)
    confluent_wait_for_partitions(admin, topic, 2, 30)

    with pytest.raises(KafkaException) as already_exists:
        admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])[topic].result(
            timeout=30
        )
    assert already_exists.value.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS

    admin.create_partitions([NewPartitions(topic, 5)], operation_timeout=30)[topic].result(timeout=30)
    confluent_wait_for_partitions(admin, topic, 5, 30)

    # The new partitions take writes.
    producer = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all"})
    deliveries = DeliveryLog()
    producer.produce(topic, value=encode_value(7), partition=4, on_delivery=deliveries.on_delivery)
    assert producer.flush(30) == 0
    assert deliveries.delivered == {7: (4, 0)}, (deliveries.delivered, deliveries.errors)

    resource = ConfigResource(ResourceType.TOPIC, topic)
    configs = admin.describe_configs([resource])[resource].result(timeout=30)
    assert "retention.ms" in configs, f"topic configs described: {sorted(configs)}"
    assert configs["retention.ms"].value == retention_ms

    admin.delete_topics([topic], operation_timeout=30)[topic].result(timeout=30)
    wait_for(
        lambda: topic not in admin.list_topics(timeout=5).topics,
        30,
        f"{topic} gone from metadata after delete",
    )
