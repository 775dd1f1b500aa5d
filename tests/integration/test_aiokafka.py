"""aiokafka (asyncio client, 0.14) against the broker.

aiokafka speaks older protocol versions than the other clients (ApiVersions
v0, Metadata up to v5, Fetch up to v11, Produce up to v8, OffsetCommit and
OffsetFetch up to v3), so this also checks the broker still serves those.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest

MESSAGE_COUNT = 200
LATER_MESSAGE_COUNT = 5
POLL_DEADLINE_S = 30


async def consume(consumer, wanted: int) -> list:
    received = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + POLL_DEADLINE_S
    while len(received) < wanted and loop.time() < deadline:
        batches = await consumer.getmany(timeout_ms=500)
        for messages in batches.values():
            received.extend(messages)
    return received


async def group_round_trip(bootstrap: str, topic: str) -> None:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka.structs import TopicPartition

    group_id = f"aio-{uuid.uuid4().hex[:10]}"
    expected = [(f"k{i}".encode(), f"aiokafka {i}".encode()) for i in range(MESSAGE_COUNT)]
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        acknowledged = []
        for key, value in expected:
            metadata = await producer.send_and_wait(topic, value=value, key=key)
            acknowledged.append((metadata.partition, metadata.offset))
    finally:
        await producer.stop()
    # Auto-created with the default single partition.
    assert acknowledged == [(0, i) for i in range(MESSAGE_COUNT)], acknowledged[:10]

    def new_consumer():
        return AIOKafkaConsumer(
            topic,
            bootstrap_servers=bootstrap,
            group_id=group_id,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )

    partition = TopicPartition(topic, 0)
    consumer = new_consumer()
    await consumer.start()
    try:
        received = await consume(consumer, MESSAGE_COUNT)
        assert [(m.key, m.value) for m in received] == expected
        assert [m.offset for m in received] == list(range(MESSAGE_COUNT))
        assert consumer.assignment() == {partition}
        await consumer.commit()
        assert await consumer.committed(partition) == MESSAGE_COUNT
    finally:
        await consumer.stop()

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        later = [(b"later", f"later {i}".encode()) for i in range(LATER_MESSAGE_COUNT)]
        for key, value in later:
            await producer.send_and_wait(topic, value=value, key=key)
    finally:
        await producer.stop()

    consumer = new_consumer()
    await consumer.start()
    try:
        received = await consume(consumer, LATER_MESSAGE_COUNT)
        # Give a wrongly re-delivered backlog a moment to show up.
        received += await consume_for_a_while(consumer)
    finally:
        await consumer.stop()
    assert [(m.key, m.value) for m in received] == later, (
        "a new member of the group must resume at the committed offset: "
        f"got offsets {[m.offset for m in received][:10]}"
    )


async def consume_for_a_while(consumer, duration_ms: int = 1000) -> list:
    batches = await consumer.getmany(timeout_ms=duration_ms)
    return [message for messages in batches.values() for message in messages]


@pytest.mark.timeout(90)
def test_aiokafka_send_and_wait_and_group_consumer_round_trip(broker, topic):
    asyncio.run(group_round_trip(broker.bootstrap, topic))
