//! The Kafka wire-protocol front end: framing, codecs (via `kafka-protocol`),
//! the group coordinator and the per-API handlers.

pub mod frame;
pub mod limits;
pub mod scatter;
pub mod versions;
