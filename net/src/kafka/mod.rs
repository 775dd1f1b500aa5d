//! The Kafka wire-protocol front end: framing, codecs (via `kafka-protocol`),
//! the group coordinator and the per-API handlers.
pub mod group;
