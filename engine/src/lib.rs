//! Quiver's storage engine and thread-per-core runtime.
//!
//! The engine never touches a socket. Each partition log is owned by one shard (one
//! pinned glommio executor); other shards reach it by message passing.

pub mod batch;
pub mod catalog;
pub mod compaction;
pub mod error;
pub mod foreign;
pub mod group_sync;
pub mod index;
pub mod limits;
pub mod log;
pub mod producer_state;
pub mod recovery;
pub mod runtime;
pub mod sync;
pub mod types;

pub use error::{EngineError, Result};
