//! Produce (v3+, RecordBatch v2 only). Each partition's records go to the owning shard,
//! are appended there, and (for acks 1/-1) the reply waits for the group commit.

use bytes::Bytes;
use kafka_protocol::error::ResponseError as E;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use quiver_engine::log::AckLevel;

use super::{by_shard, str_bytes};
use crate::kafka::broker::shard;
use crate::service::{self, ServiceError};

struct Item {
    topic_index: usize,
    partition_index: usize,
    topic: String,
    partition: i32,
    records: Bytes,
}

#[derive(Clone, Copy)]
enum AckWait {
    Appended,
    Written,
    Committed,
}

impl AckWait {
    fn level(self) -> AckLevel {
        match self {
            AckWait::Appended => AckLevel::None,
            AckWait::Written => AckLevel::Written,
            AckWait::Committed => AckLevel::Committed,
        }
    }
}

/// Returns `None` for acks=0: Kafka sends no response then.
pub async fn handle(req: ProduceRequest, version: i16) -> Option<ProduceResponse> {
    let me = shard();
    let acks = req.acks;
    // What the reply waits for. acks=1: the bytes are in the kernel, so they survive a
    // broker crash, like Kafka's page-cache write (a buffered write when the partition is
    // idle, else the direct-I/O write), or only the append with --acks1-on-append
    // (Redpanda's leader ack); acks=all: the durability policy (fdatasync).
    let wait = match acks {
        0 => AckWait::Appended,
        1 if me.config.acks1_on_append => AckWait::Appended,
        1 => AckWait::Written,
        _ => AckWait::Committed,
    };
    let mut responses: Vec<TopicProduceResponse> = Vec::with_capacity(req.topic_data.len());
    let mut items = Vec::new();
    let fail = |index: i32, code: i16, message: Option<&str>| {
        PartitionProduceResponse::default()
            .with_index(index)
            .with_error_code(code)
            .with_base_offset(-1)
            .with_log_append_time_ms(-1)
            .with_log_start_offset(-1)
            .with_error_message(message.filter(|_| version >= 8).map(str_bytes))
    };
    for (ti, topic) in req.topic_data.into_iter().enumerate() {
        let name = topic.name.0.to_string();
        let meta = me.topic(&name);
        let mut partitions = Vec::with_capacity(topic.partition_data.len());
        for (pi, p) in topic.partition_data.into_iter().enumerate() {
            let code = if !matches!(acks, -1..=1) {
                Some(E::InvalidRequiredAcks.code())
            } else if req.transactional_id.is_some() {
                Some(E::TransactionalIdAuthorizationFailed.code())
            } else if meta
                .as_ref()
                .is_none_or(|m| p.index < 0 || p.index >= m.partitions)
            {
                Some(E::UnknownTopicOrPartition.code())
            } else {
                None
            };
            match (code, p.records) {
                (Some(code), _) => partitions.push(fail(p.index, code, None)),
                (None, None) => partitions.push(fail(
                    p.index,
                    E::CorruptMessage.code(),
                    Some("null records"),
                )),
                (None, Some(records)) => {
                    partitions.push(fail(p.index, 0, None));
                    items.push((
                        me.owner_of(&name, p.index),
                        Item {
                            topic_index: ti,
                            partition_index: pi,
                            topic: name.clone(),
                            partition: p.index,
                            records,
                        },
                    ));
                }
            }
        }
        responses.push(
            TopicProduceResponse::default()
                .with_name(topic.name)
                .with_topic_id(topic.topic_id)
                .with_partition_responses(partitions),
        );
    }
    let hops = by_shard(items).into_iter().map(|(owner, items)| {
        me.ctx.run_on(owner, move || async move {
            // Append everything first, then wait: one group commit covers them all.
            let mut tickets = Vec::with_capacity(items.len());
            for item in &items {
                tickets.push(service::local::append(&item.topic, item.partition, std::slice::from_ref(&item.records), wait.level()).await);
            }
            let mut out = Vec::with_capacity(items.len());
            for (item, ticket) in items.iter().zip(tickets) {
                let result = match ticket {
                    Ok(t) => match wait {
                        AckWait::Appended => Ok(t.outcome()),
                        AckWait::Written => t.written().await.map_err(ServiceError::from),
                        AckWait::Committed => t.committed().await.map_err(ServiceError::from),
                    },
                    Err(e) => Err(e),
                };
                out.push((item.topic_index, item.partition_index, result.map_err(|e| {
                    tracing::debug!(topic = %item.topic, partition = item.partition, error = %e, "produce rejected");
                    (e.code(), e.to_string())
                })));
            }
            out
        })
    });
    for hop in futures::future::join_all(hops).await {
        let results = match hop {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "produce hop failed");
                continue;
            }
        };
        for (ti, pi, result) in results {
            let slot = &mut responses[ti].partition_responses[pi];
            match result {
                Ok(outcome) => {
                    slot.base_offset = outcome.base_offset.0;
                    if version >= 5 {
                        slot.log_start_offset = outcome.log_start_offset.0;
                    }
                }
                Err((code, message)) => {
                    slot.error_code = code;
                    if version >= 8 {
                        slot.error_message = Some(str_bytes(&message));
                    }
                }
            }
        }
    }
    if acks == 0 {
        return None;
    }
    Some(ProduceResponse::default().with_responses(responses))
}
