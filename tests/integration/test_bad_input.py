"""Hostile and broken input on raw sockets.

After each abuse the broker must still be running, must not have panicked,
and a separate kafka-python client must still produce and consume. What the
broker does with the bad connection itself is checked too: Kafka closes a
connection whose frame it cannot trust, answers an ApiVersions version it does
not know with error 35 (UNSUPPORTED_VERSION) in the v0 format, and rejects a bad
topic name in CreateTopics with error 17 (INVALID_TOPIC_EXCEPTION).

The tests share one broker of this module's own (not the session broker), so
a crash here is pinned on this module and the broker's log can be checked.
"""

from __future__ import annotations

import random
import socket
import struct

import pytest

import kafka_wire as wire
from broker_harness import Broker, free_port, register_broker
from kafka_helpers import kafka_python_round_trip

CLOSE_TIMEOUT_S = 10.0
# What the client tests here use: Produce, Fetch, ListOffsets, Metadata,
# OffsetCommit, OffsetFetch, FindCoordinator, JoinGroup, Heartbeat,
# LeaveGroup, SyncGroup, ApiVersions, CreateTopics, DeleteTopics,
# InitProducerId, DescribeConfigs, CreatePartitions.
REQUIRED_API_KEYS = (0, 1, 2, 3, 8, 9, 10, 11, 12, 13, 14, 18, 19, 20, 22, 32, 37)
PANIC_MARKER = "panicked"
GARBAGE_SEED = 0x5EED_0B57


@pytest.fixture(scope="module")
def module_broker(session_data_root):
    name = "bad-input-broker"
    own = Broker(
        name=name,
        data_dir=session_data_root / name / "data",
        port=free_port(),
        log_path=session_data_root / name / "quiver.log",
    )
    own.start()
    yield own
    own.terminate()


@pytest.fixture
def abused_broker(request, module_broker):
    register_broker(request, module_broker)
    assert module_broker.is_running(), "the broker died in an earlier test of this module"
    log_length_before = len(module_broker.log_text())
    yield module_broker
    # The checks every abuse ends with; only this test's part of the log
    # counts, so one panic is pinned on the input that caused it.
    assert module_broker.is_running(), "the broker process exited after the bad input"
    log_of_this_test = module_broker.log_text()[log_length_before:]
    assert PANIC_MARKER not in log_of_this_test, "the broker logged a panic after this input"
    kafka_python_round_trip(module_broker.bootstrap)


def assert_closed(sock: socket.socket, what: str) -> None:
    outcome = wire.await_close(sock, CLOSE_TIMEOUT_S)
    assert outcome == wire.CLOSED, f"after {what} the broker kept the connection {outcome}"


def assert_closed_or_answered(sock: socket.socket, correlation_id: int, what: str) -> None:
    """Closing is what Kafka does; an answer carrying our correlation id is
    acceptable too. Silence with the connection open is not: the client would
    wait for its timeout with no clue."""
    outcome = wire.await_close_or_frame(sock, CLOSE_TIMEOUT_S)
    if outcome == wire.CLOSED:
        return
    assert outcome != wire.STILL_OPEN, f"after {what} the broker neither answered nor closed"
    answered_id = struct.unpack(">i", outcome[:4])[0]
    assert answered_id == correlation_id, (
        f"after {what} the broker answered correlation id {answered_id}, not {correlation_id}"
    )


@pytest.mark.parametrize(
    "garbage",
    [
        pytest.param(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n", id="http-request"),
        pytest.param(b"\xff\xff\xff\xfe" + b"\x00" * 16, id="negative-size"),
        pytest.param(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\xaa" * 64, id="tls-hello"),
    ],
)
@pytest.mark.timeout(60)
def test_garbage_with_impossible_size_closes_connection(abused_broker, garbage):
    with wire.connect(abused_broker.bootstrap) as sock:
        sock.sendall(garbage)
        assert_closed(sock, f"garbage {garbage[:12]!r}")


@pytest.mark.timeout(60)
def test_random_garbage_frames(abused_broker):
    generator = random.Random(GARBAGE_SEED)
    for round_number in range(20):
        body_size = generator.randint(0, 64)
        body = bytes(generator.getrandbits(8) for _ in range(body_size))
        if len(body) >= 2 and 0 <= struct.unpack(">h", body[:2])[0] < 100:
            # A real api key (say Produce with acks=0) may rightly get no
            # answer; this seed's rounds never hit one, a new seed might.
            continue
        with wire.connect(abused_broker.bootstrap) as sock:
            sock.sendall(wire.frame(body))
            outcome = wire.await_close_or_frame(sock, CLOSE_TIMEOUT_S)
            assert outcome != wire.STILL_OPEN, (
                f"seed {GARBAGE_SEED:#x} round {round_number}: the broker neither answered nor "
                f"closed after frame {body.hex()}"
            )
    assert abused_broker.is_running(), f"seed {GARBAGE_SEED:#x}: broker died"


@pytest.mark.timeout(60)
def test_oversize_frame_closes_connection(abused_broker):
    with wire.connect(abused_broker.bootstrap) as sock:
        # 2^31-1 announced, a little sent: the broker must refuse the size
        # rather than wait for (or allocate) 2 GiB.
        sock.sendall(wire.int32(2**31 - 1) + b"\x00\x12\x00\x00\x00\x00\x00\x01" + b"\x00" * 1024)
        assert_closed(sock, "a frame size of 2^31-1")


@pytest.mark.timeout(60)
def test_stream_ending_mid_frame_closes_connection(abused_broker):
    with wire.connect(abused_broker.bootstrap) as sock:
        request = wire.api_versions_v0_request(correlation_id=5)
        sock.sendall(wire.int32(100) + request[4:])  # promises 100 bytes, sends fewer
        sock.shutdown(socket.SHUT_WR)
        assert_closed(sock, "end of stream in the middle of a frame")


@pytest.mark.timeout(60)
def test_request_body_shorter_than_its_schema(abused_broker):
    with wire.connect(abused_broker.bootstrap) as sock:
        # Metadata v1 announcing 5 topics, then the frame ends.
        header = wire.request_header(api_key=3, api_version=1, correlation_id=11, flexible=False)
        sock.sendall(wire.frame(header + wire.int32(5)))
        assert_closed_or_answered(sock, 11, "a truncated Metadata request")


@pytest.mark.timeout(60)
def test_request_header_cut_short(abused_broker):
    with wire.connect(abused_broker.bootstrap) as sock:
        sock.sendall(wire.frame(b"\x00\x03\x00"))  # not even api_key + api_version
        assert_closed(sock, "a 3-byte request header")


@pytest.mark.timeout(60)
def test_unknown_api_key(abused_broker):
    with wire.connect(abused_broker.bootstrap) as sock:
        header = wire.request_header(api_key=32000, api_version=0, correlation_id=21, flexible=False)
        sock.sendall(wire.frame(header + b"\x00" * 8))
        assert_closed_or_answered(sock, 21, "a request with api key 32000")


@pytest.mark.timeout(60)
def test_unsupported_api_versions_version_gets_error_35_and_connection_stays_usable(abused_broker):
    with wire.connect(abused_broker.bootstrap) as sock:
        # What a newer client sends first: ApiVersions at a version the broker
        # does not have (flexible header, client software name and version).
        body = wire.compact_string("quiver-itest") + wire.compact_string("1.0") + b"\x00"
        header = wire.request_header(
            wire.API_KEY_API_VERSIONS, api_version=999, correlation_id=31, flexible=True
        )
        sock.sendall(wire.frame(header + body))
        payload = wire.read_frame(sock)
        try:
            correlation_id, error_code, ranges = wire.parse_api_versions_v0_response(payload)
        except ValueError as error:
            pytest.fail(
                f"the answer to ApiVersions v999 is not a v0-format ApiVersionsResponse ({error}); "
                f"Kafka answers versions it lacks in v0 so any client can read it. "
                f"Payload: {payload[:64].hex()}..."
            )
        assert correlation_id == 31
        assert error_code == wire.ERROR_UNSUPPORTED_VERSION
        # Clients retry with the highest version listed here, on the same
        # connection (kafka-python does exactly that).
        assert wire.API_KEY_API_VERSIONS in ranges, f"ApiVersions missing from {ranges}"
        assert ranges[wire.API_KEY_API_VERSIONS][0] == 0, "ApiVersions v0 must be supported"

        supported = wire.fetch_api_versions(sock, correlation_id=32)
        for api_key in REQUIRED_API_KEYS:
            assert api_key in supported, f"api key {api_key} not advertised: {sorted(supported)}"


INVALID_TOPIC_NAMES = [
    pytest.param("has space", id="space"),
    pytest.param("slash/inside", id="slash"),
    pytest.param("..", id="dot-dot"),
    pytest.param(".", id="dot"),
    pytest.param("a" * 250, id="250-chars"),  # the limit is 249
    pytest.param("", id="empty"),
    pytest.param("bad*char", id="asterisk"),
]


@pytest.mark.parametrize("name", INVALID_TOPIC_NAMES)
@pytest.mark.timeout(60)
def test_create_topics_with_invalid_name_gets_error_17(abused_broker, name):
    with wire.connect(abused_broker.bootstrap) as sock:
        ranges = wire.fetch_api_versions(sock, correlation_id=41)
        assert wire.API_KEY_CREATE_TOPICS in ranges, "CreateTopics not advertised"
        min_version, max_version = ranges[wire.API_KEY_CREATE_TOPICS]
        version = min(max_version, 7)
        assert version >= min_version
        sock.sendall(wire.create_topics_request(42, version, name, partitions=1))
        correlation_id, errors = wire.parse_create_topics_response(wire.read_frame(sock), version)
    assert correlation_id == 42
    assert errors == {name: wire.ERROR_INVALID_TOPIC_EXCEPTION}, (
        f"CreateTopics v{version} for {name!r} answered {errors}"
    )

    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=abused_broker.bootstrap)
    try:
        assert name not in admin.list_topics(), f"invalid topic {name!r} was created anyway"
    finally:
        admin.close()
