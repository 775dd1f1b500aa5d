//! Named limits of the Kafka front end, in one place. Each constant says what happens when a
//! client reaches it; the compile-time checks at the bottom keep the limits consistent with each
//! other and with the wire format (Kafka sizes are signed 32-bit).

/// Largest request frame body we accept, not counting the 4-byte size prefix. Matches Kafka's
/// `socket.request.max.bytes` default (100 MiB), so any request a Kafka broker takes fits.
///
/// At the limit: the frame decoder returns `FrameError::TooLarge` as soon as it has read the size
/// prefix, before buffering the body, and the connection must be closed (Kafka closes it too:
/// the stream cannot be resynchronised without reading the body).
pub const MAX_REQUEST_FRAME_BYTES: usize = 100 * 1024 * 1024;

/// Requests a single connection may have decoded but not yet answered. Kafka answers in order
/// per connection, so this bounds the responses we must hold back behind a slow one.
///
/// At the limit: the connection stops reading from its socket (back-pressure through TCP) until
/// a response has been written; it never drops or rejects a request.
pub const MAX_IN_FLIGHT_REQUESTS_PER_CONNECTION: usize = 64;

/// Request bytes one connection may have read but not yet answered. Decoded requests can
/// take several times their frame size in memory, and 64 requests of 100 MiB would be
/// 6.4 GB; this bounds it.
///
/// At the limit: the connection stops reading until responses are written (TCP pushes
/// back on the client). A single frame larger than this waits until it is alone.
pub const MAX_IN_FLIGHT_REQUEST_BYTES_PER_CONNECTION: usize = 128 * 1024 * 1024;

/// Largest amount of record data one Fetch response carries, over all partitions. Matches the
/// broker-side `fetch.max.bytes` default (55 MiB); a client asking for more gets less.
///
/// At the limit: the fetch handler stops adding partitions and returns what it has. As in Kafka,
/// the first record batch of the first non-empty partition is returned whole even when it alone
/// exceeds the limit, so that a consumer can always make progress.
pub const MAX_FETCH_RESPONSE_BYTES: usize = 55 * 1024 * 1024;

/// Open Kafka connections one shard (core) serves at once.
///
/// At the limit: the shard accepts and immediately closes new connections, so that clients see a
/// prompt disconnect and retry (possibly against another broker) instead of hanging in the
/// listen backlog.
pub const MAX_CONNECTIONS_PER_SHARD: usize = 4096;

/// Consecutive produce or fetch requests of a connection that must all touch partitions of
/// one other shard before the connection moves to that shard (so later requests need no
/// cross-shard hop). Requests that touch no partition (metadata, heartbeats) do not count
/// either way; one that touches this shard's partitions, or several shards, resets it.
///
/// At the limit: the connection moves at the next request boundary where every response
/// has been written (the socket and any bytes already read go along), so responses stay
/// in order.
pub const CONNECTION_MOVE_AFTER_REQUESTS: u32 = 8;

/// How many times one connection may move between shards in its lifetime, so a client
/// whose partitions alternate between shards cannot make it bounce forever.
///
/// At the limit: the connection stays where it is and hops per request, as before.
pub const MAX_MOVES_PER_CONNECTION: u32 = 4;

/// Bytes of the size prefix in front of every request and response frame (a big-endian `i32`).
/// A wire-format constant, not a tunable; it lives here so that buffer sizes can be derived from it.
pub const FRAME_SIZE_PREFIX_BYTES: usize = 4;

// A frame size travels as a non-negative i32, so no limit on a frame body may exceed i32::MAX.
const _: () = assert!(MAX_REQUEST_FRAME_BYTES <= i32::MAX as usize);
const _: () = assert!(MAX_FETCH_RESPONSE_BYTES <= i32::MAX as usize);
const _: () = assert!(MAX_IN_FLIGHT_REQUESTS_PER_CONNECTION > 0);
const _: () = assert!(CONNECTION_MOVE_AFTER_REQUESTS > 0);
const _: () = assert!(MAX_CONNECTIONS_PER_SHARD > 0);
const _: () = assert!(MAX_REQUEST_FRAME_BYTES <= MAX_IN_FLIGHT_REQUEST_BYTES_PER_CONNECTION);

/// Longest a fetch may wait for `min_bytes` (clients ask for 500 ms by default); longer
/// requests are cut to this.
pub const MAX_FETCH_WAIT_MS: i32 = 30_000;

const _: () = assert!(quiver_engine::limits::MAX_BATCH_BYTES <= MAX_FETCH_RESPONSE_BYTES);
