//! Every bound the Kafka front end enforces, in one place. Each says what happens at the limit.

/// Longest a fetch may wait for `min_bytes` (clients ask for 500 ms by default); longer
/// requests are cut to this.
pub const MAX_FETCH_WAIT_MS: i32 = 30_000;

/// Largest fetch response body. A client asking for more gets at most this much.
pub const MAX_FETCH_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

const _: () = assert!(quiver_engine::limits::MAX_BATCH_BYTES <= MAX_FETCH_RESPONSE_BYTES);
