//! One module per Kafka API (or tight family of APIs), each a thin async function from
//! the request type to the response type, with the work done on the owning shards.

pub mod admin;
pub mod fetch;
pub mod fetch_session;
pub mod list_offsets;
pub mod metadata;
pub mod produce;
pub mod producer_id;

use std::collections::BTreeMap;

use quiver_engine::types::ShardId;

/// Groups items by the shard that owns them, preserving request order within a shard.
pub(crate) fn by_shard<T>(
    items: impl IntoIterator<Item = (ShardId, T)>,
) -> BTreeMap<ShardId, Vec<T>> {
    let mut out: BTreeMap<ShardId, Vec<T>> = BTreeMap::new();
    for (s, item) in items {
        out.entry(s).or_default().push(item);
    }
    out
}

pub(crate) fn str_bytes(s: &str) -> kafka_protocol::protocol::StrBytes {
    kafka_protocol::protocol::StrBytes::from_string(s.to_string())
}

pub(crate) fn topic_name(s: &str) -> kafka_protocol::messages::TopicName {
    kafka_protocol::messages::TopicName(str_bytes(s))
}
