//! Named limits of the `quiver/1` protocol, in one place. Each says what happens at the
//! limit; the compile-time checks at the bottom keep them consistent with each other.

/// Largest frame body a broker accepts from a client (a produce frame carries one
/// partition's batches). 16 MiB of batches (the engine's `MAX_BATCH_BYTES`) plus room for
/// the topic name and fixed fields.
///
/// At the limit: the header decoder returns [`crate::FrameError::TooLarge`] before the
/// body is read; the broker answers with an ERROR frame (MESSAGE_TOO_LARGE) and resets
/// that stream. The connection and other streams carry on.
pub const MAX_REQUEST_BODY_BYTES: usize = 16 * 1024 * 1024 + 64 * 1024;

/// Largest frame body a client accepts from a broker (fetch responses and subscription
/// pushes). Matches the Kafka front end's `MAX_FETCH_RESPONSE_BYTES` (55 MiB) plus
/// per-partition envelopes. A broker never builds a larger frame: it caps fetch sizes.
///
/// At the limit: the client treats the stream as corrupt and fails the requests on it.
pub const MAX_RESPONSE_BODY_BYTES: usize = 56 * 1024 * 1024;

/// Partitions named in one FETCH, LIST_OFFSETS, COMMIT_OFFSETS or FETCH_OFFSETS request.
///
/// At the limit: decoding fails with [`crate::FrameError::TooMany`] (INVALID_REQUEST).
pub const MAX_PARTITIONS_PER_REQUEST: usize = 10_000;

/// Topic configs in one CREATE_TOPIC request.
pub const MAX_CONFIGS_PER_REQUEST: usize = 256;

/// Topics in one LIST_TOPICS response (the broker truncates beyond this and says so in
/// the log; a real deployment has far fewer).
pub const MAX_TOPICS_PER_RESPONSE: usize = 100_000;

/// Groups in one LIST_GROUPS response and members in one DESCRIBE_GROUP response (the
/// coordinator's own limits are far below these).
pub const MAX_GROUPS_PER_RESPONSE: usize = 1_000_000;
pub const MAX_GROUP_MEMBERS_PER_RESPONSE: usize = 100_000;

/// Bidirectional streams a client may have open on one connection at once (QUIC
/// `initial_max_streams_bidi`). The client uses one per produced or subscribed partition
/// plus a few control streams.
///
/// At the limit: opening another stream waits until one closes (QUIC stream credit),
/// which is back-pressure, not an error. Unidirectional streams are not used (limit 0).
pub const MAX_STREAMS_PER_CONNECTION: u32 = 1024;

/// Requests a broker runs concurrently for one stream. Responses are still sent in
/// request order.
///
/// At the limit: the broker stops reading that stream until the oldest request is
/// answered, so QUIC stream flow control pushes back on that stream only.
pub const MAX_IN_FLIGHT_REQUESTS_PER_STREAM: usize = 64;

/// QUIC connections one peer IP address may hold open to a broker.
///
/// At the limit: the broker refuses the new connection during the handshake (the client
/// sees CONNECTION_REFUSED); existing connections are unaffected.
pub const MAX_CONNECTIONS_PER_PEER: usize = 64;

/// QUIC connections a broker holds open in total.
///
/// At the limit: new connections are refused as above.
pub const MAX_CONNECTIONS: usize = 4096;

/// Longest a FETCH may wait for `min_bytes` (the broker cuts longer waits to this).
pub const MAX_FETCH_WAIT_MS: u32 = 30_000;

/// Bytes of records one subscription push carries at most (the first batch is always
/// sent whole, however large, so a subscriber can make progress).
pub const MAX_SUBSCRIBE_PUSH_BYTES: usize = 8 * 1024 * 1024;

/// Longest encoded string (topic names are at most 249 bytes; group ids and metadata
/// strings get the room a u16 length allows).
pub const MAX_STRING_BYTES: usize = u16::MAX as usize;

const _: () = assert!(MAX_REQUEST_BODY_BYTES <= u32::MAX as usize);
const _: () = assert!(MAX_RESPONSE_BODY_BYTES <= u32::MAX as usize);
const _: () = assert!(MAX_SUBSCRIBE_PUSH_BYTES < MAX_RESPONSE_BODY_BYTES);
const _: () = assert!(MAX_CONNECTIONS_PER_PEER <= MAX_CONNECTIONS);
const _: () = assert!(MAX_IN_FLIGHT_REQUESTS_PER_STREAM > 0);

/// QUIC flow-control window per stream (bytes a receiver lets the sender have in flight
/// on one stream). quinn's default (1.25 MB) is sized for 100 Mbit/s at 100 ms; we size
/// for bulk transfer: a whole maximum-size produce frame fits. A stream whose reader
/// stalls holds at most this much; other streams are unaffected.
pub const STREAM_RECEIVE_WINDOW_BYTES: u32 = 16 * 1024 * 1024;

/// QUIC flow-control window per connection. Large enough that several stalled streams
/// (slow subscribers) cannot use it up and stall the others.
pub const CONNECTION_RECEIVE_WINDOW_BYTES: u32 = 256 * 1024 * 1024;

/// Bytes a sender keeps unacknowledged per connection (quinn's `send_window`).
pub const SEND_WINDOW_BYTES: u64 = 64 * 1024 * 1024;

/// Largest UDP payload an endpoint will send once path MTU discovery allows it: what fits
/// loopback's 65,536-byte MTU behind an IPv6 (40) and UDP (8) header. On loopback this
/// cuts packets, and so per-packet crypto and syscalls, by ~40x against the 1,452-byte
/// default; on real paths discovery stops at the path MTU.
pub const MAX_UDP_PAYLOAD_BYTES: u16 = 65_488;

/// Chunks of one request body the broker keeps as views of the received packets
/// (`transport::read_body_chunks`). A chunk pins the packet buffer it points into (at
/// most one UDP receive of `MAX_UDP_PAYLOAD_BYTES`, however few stream bytes it holds), so
/// the count bounds what a body can pin: 1,024 x 64 KiB = 64 MiB, 4x the body limit.
/// Honest senders fill packets: 1,024 chunks carry the whole 16 MiB body on loopback
/// (64 KiB packets) and ~1.4 MB on a 1,500-byte-MTU path.
///
/// At the limit: the rest of the body is copied into one buffer (what every body cost
/// before chunks were kept), and the copy is counted.
pub const MAX_SHARED_CHUNKS_PER_BODY: usize = 1024;

/// Kernel send and receive buffer asked for on every QUIC UDP socket. The default
/// (~208 KiB) overflows under bulk transfer even on loopback: dropped datagrams look like
/// congestion (the window collapses) and like an MTU black hole (large packets are
/// abandoned until `MTU_BLACK_HOLE_COOLDOWN_MS` has passed). The kernel caps the request at `net.core.rmem_max` /
/// `wmem_max`; the broker logs the size it got when that is less.
pub const UDP_SOCKET_BUFFER_BYTES: usize = 8 * 1024 * 1024;

/// The floor of the packet size on loopback (`transport::mtu_is_known`): black-hole detection
/// falls back to this instead of 1,200 bytes. quinn pads handshake packets to `min_mtu` and
/// encodes a long-header packet's length in two bytes, so it must stay below 16 KiB (quinn
/// 0.11 panics above: `len < 2usize.pow(14)`).
pub const LOOPBACK_MIN_MTU_BYTES: u16 = 16_000;

/// Congestion window a loopback connection starts with: RFC 9002's initial window for
/// `MAX_UDP_PAYLOAD_BYTES` datagrams, min(10 x size, max(14,720, 2 x size)). quinn's default,
/// 14,720 bytes, is smaller than one such packet, which then never leaves (handshake timeout).
pub const LOOPBACK_INITIAL_WINDOW_BYTES: u64 = 2 * MAX_UDP_PAYLOAD_BYTES as u64;

/// After losses that look like an MTU black hole, packets fall back to 1,200 bytes; path
/// MTU discovery tries again after this long (quinn's default is a minute). Overload
/// losses on a busy host trigger the detector falsely, so retry soon.
pub const MTU_BLACK_HOLE_COOLDOWN_MS: u64 = 5_000;

const _: () = assert!(STREAM_RECEIVE_WINDOW_BYTES as u64 <= CONNECTION_RECEIVE_WINDOW_BYTES as u64);
const _: () = assert!(
    MAX_SHARED_CHUNKS_PER_BODY * MAX_UDP_PAYLOAD_BYTES as usize <= 4 * MAX_REQUEST_BODY_BYTES
);
const _: () = assert!(MAX_SHARED_CHUNKS_PER_BODY >= 2);
