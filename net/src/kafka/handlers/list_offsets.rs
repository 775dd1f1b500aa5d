//! ListOffsets (v1+): earliest (-2), latest (-1), max timestamp (-3), or by timestamp.

use kafka_protocol::error::ResponseError as E;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};

use super::by_shard;
use crate::kafka::broker::shard;
use crate::kafka::errors::error_code;

/// Larger batches are answered at batch granularity instead of decoded.
const MAX_RECORDS_DECODED_FOR_TIMESTAMP: i32 = 100_000;

pub const EARLIEST: i64 = -2;
pub const LATEST: i64 = -1;
pub const MAX_TIMESTAMP: i64 = -3;

/// The exact record inside a batch: the first whose timestamp is at or after `target`
/// (or, for max-timestamp, equal to it). Decodes compressed batches too; if decoding
/// fails the batch's base offset is the answer (still a valid lower bound).
fn record_at_or_after(
    base: i64,
    max_ts: i64,
    batch: bytes::Bytes,
    target: i64,
    exact: bool,
) -> (i64, i64) {
    // kafka-protocol's record decoder reserves memory from the record count in the
    // header, and a compressed batch's count is not checked on produce: bound it first.
    let count = quiver_engine::batch::parse_header(&batch)
        .map(|h| h.records_count.get())
        .unwrap_or(-1);
    if !(0..=MAX_RECORDS_DECODED_FOR_TIMESTAMP).contains(&count) {
        return (base, max_ts);
    }
    let mut buf = batch;
    match kafka_protocol::records::RecordBatchDecoder::decode(&mut buf) {
        Ok(set) => set
            .records
            .iter()
            .find(|r| {
                if exact {
                    r.timestamp == target
                } else {
                    r.timestamp >= target
                }
            })
            .map(|r| (r.offset, r.timestamp))
            .unwrap_or((base, max_ts)),
        Err(e) => {
            tracing::warn!(error = %e, "could not decode batch for a timestamp lookup");
            (base, max_ts)
        }
    }
}

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
            let s = shard();
            let mut out = Vec::with_capacity(items.len());
            for (ti, pi, topic, partition, timestamp) in items {
                let Some(log) = s.local_log(&topic, partition) else {
                    out.push((ti, pi, Err(E::UnknownTopicOrPartition.code())));
                    continue;
                };
                let result = match timestamp {
                    EARLIEST => Ok(Some((log.log_start_offset().0, -1))),
                    LATEST => Ok(Some((log.high_watermark().0, -1))),
                    MAX_TIMESTAMP => {
                        let ts = log.max_timestamp();
                        log.batch_for_timestamp(ts)
                            .await
                            .map(|r| r.map(|(o, t, b)| record_at_or_after(o.0, t, b, ts, true)))
                    }
                    ts => log
                        .batch_for_timestamp(ts)
                        .await
                        .map(|r| r.map(|(o, t, b)| record_at_or_after(o.0, t, b, ts, false))),
                };
                out.push((ti, pi, result.map_err(|e| error_code(&e))));
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
