//! ListOffsets (v1+): earliest (-2), latest (-1), max timestamp (-3), or by timestamp.

use kafka_protocol::error::ResponseError as E;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};

use super::by_shard;
use crate::kafka::broker::shard;

use crate::service::local;
pub use crate::service::local::{EARLIEST, LATEST, MAX_TIMESTAMP};

pub async fn handle(req: ListOffsetsRequest, version: i16) -> ListOffsetsResponse {
    let me = shard();
    let mut topics = Vec::with_capacity(req.topics.len());
    let mut items = Vec::new();
    for (ti, t) in req.topics.iter().enumerate() {
        let name = t.name.0.to_string();
        let meta = me.topic(&name);
        let mut partitions = Vec::with_capacity(t.partitions.len());
        for (pi, p) in t.partitions.iter().enumerate() {
            let mut r = ListOffsetsPartitionResponse::default()
                .with_partition_index(p.partition_index)
                .with_timestamp(-1)
                .with_offset(-1)
                .with_leader_epoch(-1);
            if meta
                .as_ref()
                .is_some_and(|m| p.partition_index >= 0 && p.partition_index < m.partitions)
            {
                items.push((
                    me.owner_of(&name, p.partition_index),
                    (ti, pi, name.clone(), p.partition_index, p.timestamp),
                ));
            } else {
                r.error_code = E::UnknownTopicOrPartition.code();
            }
            partitions.push(r);
        }
        topics.push(
            ListOffsetsTopicResponse::default()
                .with_name(t.name.clone())
                .with_partitions(partitions),
        );
    }
    let hops = by_shard(items).into_iter().map(|(owner, items)| {
        me.ctx.run_on(owner, move || async move {
            let mut out = Vec::with_capacity(items.len());
            for (ti, pi, topic, partition, timestamp) in items {
                let result = local::list_offset(&topic, partition, timestamp).await;
                out.push((ti, pi, result.map_err(|e| e.code())));
            }
            out
        })
    });
    for hop in futures::future::join_all(hops).await {
        let Ok(results) = hop else { continue };
        for (ti, pi, result) in results {
            let slot = &mut topics[ti].partitions[pi];
            match result {
                Ok(Some((offset, timestamp))) => {
                    slot.offset = offset;
                    slot.timestamp = timestamp;
                    if version >= 4 {
                        slot.leader_epoch = 0;
                    }
                }
                Ok(None) => {}
                Err(code) => slot.error_code = code,
            }
        }
    }
    ListOffsetsResponse::default().with_topics(topics)
}
