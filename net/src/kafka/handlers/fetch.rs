//! Fetch (v4+) with long polling. Reads happen on the owning shards and return views of
//! the engine's own buffers; the response carries them to the socket without a copy.
//!
//! Sessions (KIP-227): the broker declines to create fetch sessions (it answers with
//! session id 0), which the protocol allows; clients then keep sending full requests.

use std::time::Duration;

use crate::kafka::broker::shard;
use crate::kafka::errors::UNKNOWN_TOPIC_ID;
use crate::kafka::limits::{MAX_FETCH_RESPONSE_BYTES, MAX_FETCH_WAIT_MS};
use crate::service::{self, ReadPartition, ReadRequest};
use bytes::Bytes;
use kafka_protocol::error::ResponseError as E;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{FetchRequest, FetchResponse};

/// A fetch response plus the record buffers it references.
pub struct FetchReply {
    pub response: FetchResponse,
    /// Record buffers placed directly in `response` (one buffer per partition).
    pub direct: Vec<Bytes>,
    /// Partitions whose records span several buffers: the placeholder put in the
    /// response, and the buffers to send in its place.
    pub spliced: Vec<(Bytes, Vec<Bytes>)>,
}

/// Placeholders are distinct slices of this zero region: the encoder never reads them,
/// the scatter writer recognises them by address and substitutes the real buffers. It
/// lives in .bss, so it costs address space, not memory.
static PLACEHOLDER_REGION: [u8; MAX_FETCH_RESPONSE_BYTES + 65_536] =
    [0; MAX_FETCH_RESPONSE_BYTES + 65_536];

struct Wanted {
    topic_index: usize,
    partition_index: usize,
    topic: String,
    partition: i32,
    offset: i64,
    max_bytes: usize,
}

struct Got {
    topic_index: usize,
    partition_index: usize,
    result: Result<(Vec<Bytes>, i64, i64), i16>,
}

pub async fn handle(req: FetchRequest, version: i16) -> FetchReply {
    let me = shard();
    let max_wait = Duration::from_millis(req.max_wait_ms.clamp(0, MAX_FETCH_WAIT_MS) as u64);
    let min_bytes = req.min_bytes.max(0) as usize;
    let max_bytes = (req.max_bytes.max(0) as usize).clamp(1, MAX_FETCH_RESPONSE_BYTES);

    // We never hand out sessions, so a non-zero session id names one we do not have
    // (Kafka answers FETCH_SESSION_ID_NOT_FOUND; the client then starts over without).
    if version >= 7 && req.session_id != 0 {
        return FetchReply {
            response: FetchResponse::default()
                .with_error_code(E::FetchSessionIdNotFound.code())
                .with_session_id(0),
            direct: Vec::new(),
            spliced: Vec::new(),
        };
    }
    let mut topics: Vec<FetchableTopicResponse> = Vec::with_capacity(req.topics.len());
    let mut wanted = Vec::new();
    for (ti, t) in req.topics.iter().enumerate() {
        let meta = if version >= 13 {
            me.topic_by_id(t.topic_id.as_bytes())
        } else {
            me.topic(t.topic.0.as_str())
        };
        let unknown_code = if version >= 13 {
            UNKNOWN_TOPIC_ID
        } else {
            E::UnknownTopicOrPartition.code()
        };
        let mut partitions = Vec::with_capacity(t.partitions.len());
        for (pi, p) in t.partitions.iter().enumerate() {
            let mut data = empty_partition(p.partition);
            match &meta {
                Some(m) if p.partition >= 0 && p.partition < m.partitions => {
                    wanted.push(Wanted {
                        topic_index: ti,
                        partition_index: pi,
                        topic: m.name.clone(),
                        partition: p.partition,
                        offset: p.fetch_offset,
                        max_bytes: (p.partition_max_bytes.max(0) as usize).min(max_bytes),
                    });
                }
                Some(_) => data.error_code = E::UnknownTopicOrPartition.code(),
                None => data.error_code = unknown_code,
            }
            partitions.push(data);
        }
        topics.push(
            FetchableTopicResponse::default()
                .with_topic(t.topic.clone())
                .with_topic_id(t.topic_id)
                .with_partitions(partitions),
        );
    }

    let request = ReadRequest {
        partitions: wanted
            .iter()
            .map(|w| ReadPartition {
                topic: w.topic.clone(),
                partition: w.partition,
                offset: w.offset,
                max_bytes: w.max_bytes,
            })
            .collect(),
        min_bytes,
        max_wait,
    };
    let results = service::local::read(request).await;
    let got = wanted
        .iter()
        .zip(results)
        .map(|(w, r)| Got {
            topic_index: w.topic_index,
            partition_index: w.partition_index,
            result: r
                .map(|d| (d.chunks, d.high_watermark, d.log_start_offset))
                .map_err(|e| e.code()),
        })
        .collect();
    assemble(topics, got, max_bytes, version)
}

fn empty_partition(index: i32) -> PartitionData {
    PartitionData::default()
        .with_partition_index(index)
        .with_high_watermark(-1)
        .with_last_stable_offset(-1)
        .with_log_start_offset(-1)
        .with_aborted_transactions(Some(Vec::new()))
        .with_preferred_read_replica(kafka_protocol::messages::BrokerId(-1))
        .with_records(Some(Bytes::new()))
}

/// Fills the response in request order, honouring the response-wide `max_bytes`: the
/// first partition with data is always included whole (KIP-74), later ones only while
/// they fit; partitions left out still report their offsets.
fn assemble(
    mut topics: Vec<FetchableTopicResponse>,
    mut got: Vec<Got>,
    max_bytes: usize,
    version: i16,
) -> FetchReply {
    got.sort_by_key(|g| (g.topic_index, g.partition_index));
    let mut direct = Vec::new();
    let mut spliced = Vec::new();
    let mut total = 0usize;
    let mut placeholder_at = 0usize;
    for g in got {
        let slot = &mut topics[g.topic_index].partitions[g.partition_index];
        match g.result {
            Err(code) => slot.error_code = code,
            Ok((chunks, high_watermark, log_start)) => {
                slot.high_watermark = high_watermark;
                slot.last_stable_offset = high_watermark;
                if version >= 5 {
                    slot.log_start_offset = log_start;
                }
                let len: usize = chunks.iter().map(|c| c.len()).sum();
                if len == 0 || (total > 0 && total + len > max_bytes) {
                    continue;
                }
                total += len;
                if chunks.len() == 1 {
                    let only = chunks.into_iter().next().expect("one chunk");
                    direct.push(only.clone());
                    slot.records = Some(only);
                } else {
                    // Distinct address per partition; bounded since total <= max_bytes
                    // except for the first partition, which is itself <= max_bytes.
                    let from = placeholder_at.min(65_535);
                    let placeholder = Bytes::from_static(
                        &PLACEHOLDER_REGION[from..from + len.min(MAX_FETCH_RESPONSE_BYTES)],
                    );
                    placeholder_at += 1;
                    slot.records = Some(placeholder.clone());
                    spliced.push((placeholder, chunks));
                }
            }
        }
    }
    FetchReply {
        response: FetchResponse::default()
            .with_error_code(0)
            .with_session_id(0)
            .with_responses(topics),
        direct,
        spliced,
    }
}
