"""Just enough of the Kafka wire format, by hand, to send requests no client
library would send and read the answers byte by byte.

Frames are a big-endian int32 size followed by that many bytes. Request
header v1: api_key int16, api_version int16, correlation_id int32, client_id
nullable string (int16 length). Header v2 (flexible versions) adds an empty
tagged-field section (one 0x00 byte). Response header v0 is the correlation id
alone; v1 adds the tagged-field byte. ApiVersions responses always use
header v0, so a client that does not know the broker yet can read them.
"""

from __future__ import annotations

import socket
import struct
import time
from typing import Optional

API_KEY_CREATE_TOPICS = 19
API_KEY_API_VERSIONS = 18
ERROR_NONE = 0
ERROR_INVALID_TOPIC_EXCEPTION = 17
ERROR_UNSUPPORTED_VERSION = 35
CLIENT_ID = "quiver-itest-raw"
CREATE_TOPICS_FIRST_FLEXIBLE_VERSION = 5


def int16(value: int) -> bytes:
    return struct.pack(">h", value)


def int32(value: int) -> bytes:
    return struct.pack(">i", value)


def uvarint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def string(value: Optional[str]) -> bytes:
    if value is None:
        return int16(-1)
    encoded = value.encode()
    return int16(len(encoded)) + encoded


def compact_string(value: str) -> bytes:
    encoded = value.encode()
    return uvarint(len(encoded) + 1) + encoded


def request_header(api_key: int, api_version: int, correlation_id: int, flexible: bool) -> bytes:
    header = int16(api_key) + int16(api_version) + int32(correlation_id) + string(CLIENT_ID)
    return header + (b"\x00" if flexible else b"")


def frame(payload: bytes) -> bytes:
    return int32(len(payload)) + payload


class Reader:
    """Reads fields off a response body; raises ValueError when it runs short."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.position = 0

    def take(self, count: int) -> bytes:
        if self.position + count > len(self.data):
            raise ValueError(
                f"response too short: wanted {count} bytes at {self.position} of {len(self.data)}"
            )
        chunk = self.data[self.position:self.position + count]
        self.position += count
        return chunk

    def int8(self) -> int:
        return struct.unpack(">b", self.take(1))[0]

    def int16(self) -> int:
        return struct.unpack(">h", self.take(2))[0]

    def int32(self) -> int:
        return struct.unpack(">i", self.take(4))[0]

    def uvarint(self) -> int:
        result = shift = 0
        while True:
            byte = self.take(1)[0]
            result |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return result
            shift += 7

    def string(self) -> Optional[str]:
        length = self.int16()
        return None if length < 0 else self.take(length).decode()

    def compact_string(self) -> Optional[str]:
        length = self.uvarint() - 1
        return None if length < 0 else self.take(length).decode()

    def skip_tagged_fields(self) -> None:
        for _ in range(self.uvarint()):
            self.uvarint()  # tag
            self.take(self.uvarint())


def read_exact(sock: socket.socket, count: int) -> bytes:
    chunks = []
    while count:
        chunk = sock.recv(count)
        if not chunk:
            raise ConnectionError("connection closed mid-frame")
        chunks.append(chunk)
        count -= len(chunk)
    return b"".join(chunks)


def read_frame(sock: socket.socket) -> bytes:
    size = struct.unpack(">i", read_exact(sock, 4))[0]
    if size < 0:
        raise ValueError(f"broker sent a negative frame size {size}")
    return read_exact(sock, size)


def connect(bootstrap: str, timeout_s: float = 10.0) -> socket.socket:
    host, _, port = bootstrap.rpartition(":")
    sock = socket.create_connection((host, int(port)), timeout=timeout_s)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


CLOSED = "closed"
STILL_OPEN = "still open"


def await_close_or_frame(sock: socket.socket, timeout_s: float = 10.0):
    """What the broker does next: CLOSED, a response frame (bytes), or
    STILL_OPEN when it neither answered nor closed within `timeout_s`."""
    sock.settimeout(timeout_s)
    deadline = time.monotonic() + timeout_s
    try:
        header = b""
        while len(header) < 4:
            chunk = sock.recv(4 - len(header))
            if not chunk:
                return CLOSED
            header += chunk
            if time.monotonic() > deadline:
                return STILL_OPEN
        size = struct.unpack(">i", header)[0]
        return read_exact(sock, size)
    except socket.timeout:
        return STILL_OPEN
    except (ConnectionResetError, ConnectionAbortedError, BrokenPipeError, ConnectionError):
        return CLOSED


def await_close(sock: socket.socket, timeout_s: float = 10.0) -> str:
    """Like await_close_or_frame but discards anything sent before the close."""
    sock.settimeout(timeout_s)
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            if not sock.recv(65536):
                return CLOSED
        return STILL_OPEN
    except socket.timeout:
        return STILL_OPEN
    except (ConnectionResetError, ConnectionAbortedError, BrokenPipeError):
        return CLOSED


# ---------------------------------------------------------------------------
# ApiVersions


def api_versions_v0_request(correlation_id: int) -> bytes:
    return frame(request_header(API_KEY_API_VERSIONS, 0, correlation_id, flexible=False))


def parse_api_versions_v0_response(payload: bytes) -> tuple[int, int, dict[int, tuple[int, int]]]:
    """(correlation_id, error_code, {api_key: (min, max)}) of a v0-format body,
    which is also what a broker sends for an ApiVersions version it lacks."""
    reader = Reader(payload)
    correlation_id = reader.int32()
    error_code = reader.int16()
    ranges = {}
    for _ in range(reader.int32()):
        api_key = reader.int16()
        ranges[api_key] = (reader.int16(), reader.int16())
    return correlation_id, error_code, ranges


def fetch_api_versions(sock: socket.socket, correlation_id: int) -> dict[int, tuple[int, int]]:
    sock.sendall(api_versions_v0_request(correlation_id))
    answered_id, error_code, ranges = parse_api_versions_v0_response(read_frame(sock))
    assert answered_id == correlation_id
    assert error_code == ERROR_NONE, f"ApiVersions v0 failed with error {error_code}"
    return ranges


# ---------------------------------------------------------------------------
# CreateTopics, any version 0-7


def create_topics_request(correlation_id: int, version: int, name: str, partitions: int) -> bytes:
    flexible = version >= CREATE_TOPICS_FIRST_FLEXIBLE_VERSION
    if flexible:
        topic = (
            compact_string(name)
            + int32(partitions)
            + int16(1)  # replication factor
            + uvarint(1)  # assignments: empty compact array
            + uvarint(1)  # configs: empty compact array
            + b"\x00"  # tagged fields
        )
        body = uvarint(2) + topic + int32(10000)
    else:
        topic = string(name) + int32(partitions) + int16(1) + int32(0) + int32(0)
        body = int32(1) + topic + int32(10000)
    if version >= 1:
        body += b"\x00"  # validate_only = false
    if flexible:
        body += b"\x00"
    return frame(request_header(API_KEY_CREATE_TOPICS, version, correlation_id, flexible) + body)


def parse_create_topics_response(payload: bytes, version: int) -> tuple[int, dict[str, int]]:
    """(correlation_id, {topic name: error code})."""
    flexible = version >= CREATE_TOPICS_FIRST_FLEXIBLE_VERSION
    reader = Reader(payload)
    correlation_id = reader.int32()
    if flexible:
        reader.skip_tagged_fields()
    if version >= 2:
        reader.int32()  # throttle_time_ms
    errors = {}
    topic_count = reader.uvarint() - 1 if flexible else reader.int32()
    for _ in range(topic_count):
        name = reader.compact_string() if flexible else reader.string()
        if version >= 7:
            reader.take(16)  # topic id
        error_code = reader.int16()
        errors[name] = error_code
        if version >= 1:
            reader.compact_string() if flexible else reader.string()  # error message
        if version >= 5:
            reader.int32()  # num_partitions
            reader.int16()  # replication_factor
            config_count = reader.uvarint() - 1
            for _ in range(max(config_count, 0)):
                reader.compact_string()  # name
                reader.compact_string()  # value
                reader.int8()  # read_only
                reader.int8()  # config_source
                reader.int8()  # is_sensitive
                reader.skip_tagged_fields()
        if flexible:
            reader.skip_tagged_fields()
    return correlation_id, errors
