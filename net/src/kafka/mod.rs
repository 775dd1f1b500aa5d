//! The Kafka wire-protocol front end: framing, codecs (via `kafka-protocol`),
//! the group coordinator and the per-API handlers.

pub mod broker;
pub mod errors;
pub mod frame;
pub mod group;
pub mod groups;
pub mod handlers;
pub mod limits;
pub mod scatter;
pub mod server;
pub mod versions;
