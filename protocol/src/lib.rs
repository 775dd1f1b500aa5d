//! `quiver/1`: the native QUIC protocol's framing and messages, as pure functions over bytes.
//!
//! Sans-IO: no sockets, no clock, no runtime. The broker (`quiver-net`), the client
//! (`quiver-client`) and the fuzzer all call the same code. The wire format is specified
//! in `docs/protocol.md`; this crate is its reference implementation.
//!
//! Invariants:
//! - Decoding never panics and never allocates more than the input justifies: every count
//!   is checked against the bytes that remain before anything is reserved, and every
//!   length against a named limit in [`limits`].
//! - Record payloads (Kafka RecordBatch v2 bytes) are carried as `Bytes` views: decoding
//!   slices the frame body, encoding appends the caller's buffers as separate chunks.

pub mod codes;
pub mod frame;
pub mod limits;
pub mod message;
pub mod route;
#[cfg(feature = "quinn")]
pub mod transport;
mod wire;

pub use codes::ErrorCode;
pub use frame::{FrameError, FrameHeader, FrameType, HEADER_BYTES};
pub use message::*;

/// ALPN protocol id of the client protocol, version 1. Broker-to-broker traffic will use
/// another ALPN on the same endpoint.
pub const ALPN: &[u8] = b"quiver/1";
