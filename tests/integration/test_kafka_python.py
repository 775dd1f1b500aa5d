"""kafka-python (pure Python client, 3.0.x) against the broker.

The first two tests run the snippets users paste from tutorials exactly as
written, against localhost:9092; the rest check what those snippets rely on:
admin calls, keyed partitioning, and the offsets the broker reports.
"""

from __future__ import annotations

import ast
import json
import re
import time
import uuid
from collections import Counter

import pytest

from kafka_helpers import kafka_python_create_topic, wait_for

PRINTED_KEY_VALUE = re.compile(r"^(b'[^']*') (b'[^']*')$")


def require_port_9092(broker) -> None:
    if broker.port != 9092:
        pytest.skip("the snippet names localhost:9092 verbatim; the session broker is elsewhere")


@pytest.mark.timeout(90)
def test_classic_snippet_round_trips_100_keyed_messages(broker, capsys):
    require_port_9092(broker)
    # --- the snippet, verbatim ---
    from kafka import KafkaProducer, KafkaConsumer
    producer = KafkaProducer(bootstrap_servers='localhost:9092')
    for i in range(100):
        producer.send('test_topic', key=f'key{i}'.encode(), value=f'message {i}'.encode())
    producer.flush()
    consumer = KafkaConsumer('test_topic', bootstrap_servers='localhost:9092', auto_offset_reset='earliest', consumer_timeout_ms=5000)
    for msg in consumer: print(msg.key, msg.value)
    # --- end of snippet ---
    consumer.close()
    producer.close()

    printed = capsys.readouterr().out.splitlines()
    received = []
    for line in printed:
        match = PRINTED_KEY_VALUE.match(line)
        assert match, f"unexpected output line from the snippet: {line!r}"
        received.append((ast.literal_eval(match.group(1)), ast.literal_eval(match.group(2))))
    expected = [(f"key{i}".encode(), f"message {i}".encode()) for i in range(100)]

    missing = [pair for pair in expected if pair not in set(received)]
    assert not missing, f"{len(missing)} of 100 messages never arrived, e.g. {missing[:5]}"
    if broker.managed:
        # Our own fresh broker: test_topic holds exactly this run's messages,
        # in one auto-created partition, so they come back exactly in order.
        assert received == expected


@pytest.mark.timeout(120)
def test_json_order_snippet_consumer_group_resumes_from_committed_offset(broker):
    require_port_9092(broker)
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

    orders_per_batch = 50
    # Orders carry this run's id: on a long-lived broker, order_topic and
    # order_group also hold earlier runs, which this test must not count.
    run_id = uuid.uuid4().hex

    def order(i: int, batch: int) -> dict:
        return {
            "order_id": i,
            "customer": f"customer-{i % 7}",
            "amount": round(10 + i * 1.25, 2),
            "status": "created",
            "batch": batch,
            "run": run_id,
        }

    producer = KafkaProducer(bootstrap_servers='localhost:9092', value_serializer=lambda v: json.dumps(v).encode('utf-8'))
    for i in range(orders_per_batch):
        producer.send('order_topic', order(i, batch=1))
    producer.flush()

    consumer = KafkaConsumer('order_topic', group_id='order_group', bootstrap_servers='localhost:9092', auto_offset_reset='earliest', value_deserializer=lambda m: json.loads(m.decode('utf-8')), consumer_timeout_ms=15000)
    first_batch_seen = []
    for message in consumer:
        if message.value.get("run") == run_id:
            first_batch_seen.append(message.value["order_id"])
            if len(first_batch_seen) == orders_per_batch:
                break
    assert first_batch_seen == list(range(orders_per_batch)), (
        f"first consumer saw order ids {first_batch_seen}"
    )
    consumer.commit()
    order_partition = TopicPartition("order_topic", 0)
    committed = consumer.committed(order_partition)
    assert committed == consumer.position(order_partition), (
        f"committed offset {committed} != position {consumer.position(order_partition)}"
    )
    consumer.close()

    for i in range(orders_per_batch, 2 * orders_per_batch):
        producer.send('order_topic', order(i, batch=2))
    producer.flush()
    producer.close()

    consumer = KafkaConsumer('order_topic', group_id='order_group', bootstrap_servers='localhost:9092', auto_offset_reset='earliest', value_deserializer=lambda m: json.loads(m.decode('utf-8')), consumer_timeout_ms=15000)
    second_consumer_seen = []
    first_offset_read = None
    for message in consumer:
        if first_offset_read is None:
            first_offset_read = message.offset
        if message.value.get("run") == run_id:
            second_consumer_seen.append(message.value["order_id"])
            if message.value["order_id"] == 2 * orders_per_batch - 1:
                break
    consumer.close()

    redelivered = [i for i in second_consumer_seen if i < orders_per_batch]
    assert not redelivered, f"committed orders delivered again to the group: {redelivered}"
    assert second_consumer_seen == list(range(orders_per_batch, 2 * orders_per_batch))
    assert first_offset_read == committed, (
        f"the group resumed at offset {first_offset_read}, not at the committed {committed}"
    )


@pytest.mark.timeout(90)
def test_admin_client_creates_lists_and_deletes_topics(broker, topic):
    from kafka import KafkaAdminClient
    from kafka.errors import InvalidTopicError, TopicAlreadyExistsError

    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=15000)
    try:
        admin.create_topics({topic: {"num_partitions": 3, "replication_factor": 1}})
        wait_for(lambda: topic in admin.list_topics(), 15, f"{topic} in list_topics")

        described = admin.describe_topics([topic])
        assert len(described) == 1 and described[0]["name"] == topic
        assert described[0]["error_code"] == 0
        partitions = sorted(p["partition_index"] for p in described[0]["partitions"])
        assert partitions == [0, 1, 2]
        assert all(p["leader_id"] >= 0 for p in described[0]["partitions"])

        with pytest.raises(TopicAlreadyExistsError):
            admin.create_topics({topic: {"num_partitions": 3, "replication_factor": 1}})
        with pytest.raises(InvalidTopicError):
            admin.create_topics({"no spaces allowed": {"num_partitions": 1, "replication_factor": 1}})

        admin.delete_topics([topic])
        wait_for(lambda: topic not in admin.list_topics(), 15, f"{topic} gone from list_topics")
        assert "no spaces allowed" not in admin.list_topics()
    finally:
        admin.close()


@pytest.mark.timeout(90)
def test_keyed_messages_keep_per_partition_order_and_reported_offsets(broker, topic):
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

    partition_count = 3
    message_count = 600
    key_count = 12
    kafka_python_create_topic(broker.bootstrap, topic, partition_count)

    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", linger_ms=5)
    futures = []
    for sequence in range(message_count):
        key = f"key-{sequence % key_count}".encode()
        futures.append((key, sequence, producer.send(topic, key=key, value=str(sequence).encode())))
    producer.flush(timeout=30)
    acknowledged = {}  # sequence -> (partition, offset) from the produce response
    for key, sequence, future in futures:
        metadata = future.get(timeout=30)
        acknowledged[sequence] = (metadata.partition, metadata.offset)
    producer.close()

    consumer = KafkaConsumer(
        bootstrap_servers=broker.bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    partitions = [TopicPartition(topic, p) for p in range(partition_count)]
    consumer.assign(partitions)
    consumer.seek_to_beginning(*partitions)
    consumed = []
    deadline = time.monotonic() + 30
    while len(consumed) < message_count and time.monotonic() < deadline:
        for batch in consumer.poll(timeout_ms=500).values():
            consumed.extend(batch)
    end_offsets = consumer.end_offsets(partitions)
    consumer.close()

    assert len(consumed) == message_count, f"consumed {len(consumed)} of {message_count}"
    partitions_of_key = {}
    for record in consumed:
        partitions_of_key.setdefault(record.key, set()).add(record.partition)
        sequence = int(record.value)
        assert acknowledged[sequence] == (record.partition, record.offset), (
            f"message {sequence}: produce response said {acknowledged[sequence]}, "
            f"consumer found it at {(record.partition, record.offset)}"
        )
    assert all(len(p) == 1 for p in partitions_of_key.values()), partitions_of_key
    used_partitions = Counter(record.partition for record in consumed)
    assert len(used_partitions) >= 2, f"keys all landed in one partition: {used_partitions}"

    for partition in range(partition_count):
        records = sorted((r for r in consumed if r.partition == partition), key=lambda r: r.offset)
        assert [r.offset for r in records] == list(range(len(records))), f"partition {partition}"
        sequences = [int(r.value) for r in records]
        assert sequences == sorted(sequences), f"partition {partition} out of send order"
        assert end_offsets[TopicPartition(topic, partition)] == len(records)


@pytest.mark.timeout(120)
def test_incremental_fetch_sessions_follow_assignment_changes(broker, topic, caplog):
    """kafka-python opens a KIP-227 fetch session and then sends incremental fetches:
    partitions join the session when the assignment grows and are forgotten when it
    shrinks. Every message must arrive exactly once, in order, whatever the session
    leaves out of an answer."""
    import logging

    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

    partition_count = 6
    kafka_python_create_topic(broker.bootstrap, topic, partition_count)
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
    sent = {p: [] for p in range(partition_count)}

    def send_wave(wave: int, partitions) -> None:
        for p in partitions:
            for i in range(20):
                value = f"{wave}-{p}-{i}"
                producer.send(topic, value=value.encode(), partition=p)
                sent[p].append(value)
        producer.flush(timeout=30)

    consumer = KafkaConsumer(
        bootstrap_servers=broker.bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=100,
    )
    received = {p: [] for p in range(partition_count)}

    def drain(partitions, expected_counts) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if all(len(received[p]) >= expected_counts[p] for p in partitions):
                # A few more polls: a duplicate would show up here.
                for _ in range(3):
                    for records in consumer.poll(timeout_ms=200).values():
                        for r in records:
                            received[r.partition].append(r.value.decode())
                return
            for records in consumer.poll(timeout_ms=200).values():
                for r in records:
                    received[r.partition].append(r.value.decode())
        raise AssertionError(f"timed out: received {[len(v) for v in received.values()]}")

    with caplog.at_level(logging.DEBUG, logger="kafka.consumer.fetcher"):
        # Three partitions first, then all six (three join the session), then two
        # (four are forgotten); each phase tails new messages.
        phases = [[0, 1, 2], list(range(partition_count)), [4, 5]]
        for wave, assigned in enumerate(phases):
            consumer.assign([TopicPartition(topic, p) for p in assigned])
            send_wave(wave, assigned)
            drain(assigned, {p: len(sent[p]) for p in assigned})
        consumer.close()
        producer.close()

    for p in range(partition_count):
        assert received[p] == sent[p], f"partition {p}: {received[p][:5]}... vs {sent[p][:5]}..."
    incremental = [r for r in caplog.records if "sent an incremental fetch response" in r.getMessage()]
    assert incremental, "the consumer never used an incremental fetch session"
    assert not any(
        "FetchSessionIdNotFound" in r.getMessage() or "InvalidFetchSessionEpoch" in r.getMessage()
        for r in caplog.records
    ), [r.getMessage() for r in caplog.records if "Session" in r.getMessage()][:5]
