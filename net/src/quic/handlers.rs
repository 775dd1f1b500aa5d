//! `quiver/1` requests mapped onto the protocol-neutral [`Service`]. Thin: translate
//! the typed request, call the service, translate the result; errors carry the same
//! Kafka codes as the Kafka front end.

use std::future::Future;
use std::task::Poll;
use std::time::Duration;

use quinn::{RecvStream, SendStream, VarInt};
use quiver_engine::runtime::ShardContext;
use quiver_protocol::limits::{
    MAX_FETCH_WAIT_MS, MAX_RESPONSE_BODY_BYTES, MAX_SUBSCRIBE_PUSH_BYTES,
};
use quiver_protocol::{
    CommittedOffset, ErrorCode, FetchResponse, GroupDescription, GroupListing, GroupMember,
    InitProducerIdResponse, ListOffsetsResponse, PartitionOffset, PartitionRecords,
    PartitionResult, PartitionState, Request, Response, RouteResponse, SubscribeRequest,
    TopicDescription, TopicInfo, TopicRoute, EARLIEST, LATEST,
};

use super::server::{records_frame, subscription_read, STREAM_ERROR_PROTOCOL};
use crate::service::{ReadPartition, ReadRequest, Service, ServiceError};

pub(super) fn error_response(e: &ServiceError) -> Response {
    Response::error(ErrorCode(e.code()), e.to_string())
}

fn topic_info(meta: &quiver_engine::catalog::TopicMeta) -> TopicInfo {
    TopicInfo {
        name: meta.name.clone(),
        topic_id: meta.topic_id,
        partitions: meta.partitions,
        internal: meta.internal,
    }
}

/// Every request but PRODUCE and SUBSCRIBE, which the stream loop handles itself.
pub(super) async fn handle(service: &Service<ShardContext>, request: Request) -> Response {
    let result: Result<Response, ServiceError> = async {
        Ok(match request {
            Request::Fetch(f) => {
                let max_bytes = (f.max_bytes as usize).clamp(1, MAX_RESPONSE_BODY_BYTES / 2);
                let names: Vec<(String, i32)> = f
                    .partitions
                    .iter()
                    .map(|p| (p.topic.clone(), p.partition))
                    .collect();
                let read = ReadRequest {
                    partitions: f
                        .partitions
                        .into_iter()
                        .map(|p| ReadPartition {
                            max_bytes: (p.max_bytes as usize).min(max_bytes),
                            topic: p.topic.into(),
                            partition: p.partition,
                            offset: p.offset,
                        })
                        .collect(),
                    min_bytes: f.min_bytes as usize,
                    max_wait: Duration::from_millis(f.max_wait_ms.min(MAX_FETCH_WAIT_MS) as u64),
                };
                let results = service.read(read).await;
                // The response-wide cap: the first non-empty partition always goes whole
                // (KIP-74); later ones only while they fit.
                let mut total = 0usize;
                let partitions = names
                    .into_iter()
                    .zip(results)
                    .map(|((topic, partition), r)| match r {
                        Ok(d) => {
                            let len = d.len();
                            let fits = len > 0 && (total == 0 || total + len <= max_bytes);
                            if fits {
                                total += len;
                            }
                            PartitionRecords {
                                topic,
                                partition,
                                error: ErrorCode::NONE,
                                high_watermark: d.high_watermark,
                                log_start_offset: d.log_start_offset,
                                records: if fits { d.chunks } else { Vec::new() },
                            }
                        }
                        Err(e) => PartitionRecords {
                            topic,
                            partition,
                            error: ErrorCode(e.code()),
                            high_watermark: -1,
                            log_start_offset: -1,
                            records: Vec::new(),
                        },
                    })
                    .collect();
                Response::Fetch(FetchResponse { partitions })
            }
            Request::ListOffsets(l) => {
                let lookups = l.partitions.into_iter().map(|q| {
                    let service = service.clone();
                    async move {
                        let r = service
                            .list_offset(q.topic.clone(), q.partition, q.timestamp)
                            .await;
                        let (error, offset, timestamp) = match r {
                            Ok(Some((o, t))) => (ErrorCode::NONE, o, t),
                            Ok(None) => (ErrorCode::NONE, -1, -1),
                            Err(e) => (ErrorCode(e.code()), -1, -1),
                        };
                        PartitionOffset {
                            topic: q.topic,
                            partition: q.partition,
                            error,
                            offset,
                            timestamp,
                        }
                    }
                });
                Response::ListOffsets(ListOffsetsResponse {
                    partitions: futures::future::join_all(lookups).await,
                })
            }
            Request::InitProducerId(i) => {
                let (producer_id, producer_epoch) = service
                    .init_producer_id(i.producer_id, i.producer_epoch)
                    .await?;
                Response::InitProducerId(InitProducerIdResponse {
                    producer_id,
                    producer_epoch,
                })
            }
            Request::CreateTopic(c) => {
                let meta = service
                    .create_topic(c.name, c.partitions, c.configs)
                    .await?;
                Response::CreateTopic(topic_info(&meta))
            }
            Request::DeleteTopic { name } => {
                service.delete_topic(name).await?;
                Response::DeleteTopic
            }
            Request::ListTopics => Response::ListTopics(
                service
                    .list_topics()
                    .await?
                    .iter()
                    .map(|m| topic_info(m))
                    .collect(),
            ),
            Request::DescribeTopic { name } => {
                let d = service.describe_topic(name).await?;
                Response::DescribeTopic(TopicDescription {
                    info: topic_info(&d.meta),
                    configs: d.configs,
                    partitions: d
                        .partitions
                        .into_iter()
                        .map(
                            |(partition, log_start_offset, high_watermark)| PartitionState {
                                partition,
                                log_start_offset,
                                high_watermark,
                            },
                        )
                        .collect(),
                })
            }
            Request::Route { topics } => {
                let known: std::collections::HashMap<String, i32> = service
                    .list_topics()
                    .await?
                    .iter()
                    .map(|m| (m.name.clone(), m.partitions))
                    .collect();
                let shard_count = service.shard_count().min(u16::MAX as usize) as u16;
                Response::Route(RouteResponse {
                    shard_count,
                    connection_shard: crate::kafka::broker::shard().ctx.id().0 as u16,
                    topics: topics
                        .into_iter()
                        .map(|topic| match known.get(&topic) {
                            Some(&partitions) => TopicRoute {
                                shards: (0..partitions)
                                    .map(|p| service.owner_of(&topic, p).0 as u16)
                                    .collect(),
                                topic,
                                error: ErrorCode::NONE,
                            },
                            None => TopicRoute {
                                topic,
                                error: ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
                                shards: Vec::new(),
                            },
                        })
                        .collect(),
                })
            }
            Request::CommitOffsets(c) => {
                let names: Vec<(String, i32)> = c
                    .offsets
                    .iter()
                    .map(|o| (o.topic.clone(), o.partition))
                    .collect();
                let codes = service
                    .commit_offsets(
                        c.group,
                        c.offsets
                            .into_iter()
                            .map(|o| (o.topic, o.partition, o.offset, o.metadata))
                            .collect(),
                    )
                    .await?;
                Response::CommitOffsets(
                    names
                        .into_iter()
                        .zip(codes)
                        .map(|((topic, partition), code)| PartitionResult {
                            topic,
                            partition,
                            error: ErrorCode(code),
                        })
                        .collect(),
                )
            }
            Request::FetchOffsets(f) => {
                let partitions = (!f.partitions.is_empty()).then(|| {
                    f.partitions
                        .into_iter()
                        .map(|p| (p.topic, p.partition))
                        .collect()
                });
                let offsets = service.fetch_offsets(f.group, partitions).await?;
                Response::FetchOffsets(
                    offsets
                        .into_iter()
                        .map(|o| CommittedOffset {
                            topic: o.topic,
                            partition: o.partition,
                            offset: o.offset,
                            metadata: o.metadata,
                            error: ErrorCode(o.error_code),
                        })
                        .collect(),
                )
            }
            Request::ListGroups => Response::ListGroups(
                service
                    .list_groups()
                    .await?
                    .into_iter()
                    .map(|g| GroupListing {
                        group: g.group,
                        state: g.state,
                        protocol_type: g.protocol_type,
                    })
                    .collect(),
            ),
            Request::DescribeGroup { group } => {
                let d = service.describe_group(group).await?;
                Response::DescribeGroup(GroupDescription {
                    group: d.group,
                    state: d.state,
                    protocol_type: d.protocol_type,
                    protocol: d.protocol,
                    members: d
                        .members
                        .into_iter()
                        .map(|(member_id, client_id, client_host)| GroupMember {
                            member_id,
                            client_id,
                            client_host,
                        })
                        .collect(),
                })
            }
            Request::Produce(_) | Request::Subscribe(_) => Response::error(
                ErrorCode::INVALID_REQUEST,
                "produce and subscribe are handled by the stream loop",
            ),
        })
    }
    .await;
    result.unwrap_or_else(|e| error_response(&e))
}

/// Serves a SUBSCRIBE stream: pushes RECORDS frames as the partition grows. Writing
/// waits when the client's stream window is full (QUIC flow control), which only
/// affects this stream. Ends when the client stops or resets the stream, sends anything
/// more on it, or the partition fails (then with an ERROR frame).
pub(super) async fn subscribe(
    service: Service<ShardContext>,
    mut send: SendStream,
    mut recv: RecvStream,
    request_id: u64,
    sub: SubscribeRequest,
) {
    let SubscribeRequest {
        topic,
        partition,
        offset,
        max_bytes,
    } = sub;
    let max_bytes = (max_bytes as usize).clamp(1, MAX_SUBSCRIBE_PUSH_BYTES);
    let start = match offset {
        LATEST | EARLIEST => service.list_offset(topic.clone(), partition, offset).await,
        o if o >= 0 => Ok(Some((o, -1))),
        o => Err(ServiceError::Rejected {
            code: ErrorCode::INVALID_REQUEST.0,
            message: format!("invalid subscribe offset {o}"),
        }),
    };
    let mut offset = match start {
        Ok(Some((o, _))) => o,
        Ok(None) => 0,
        Err(e) => {
            let mut frame = error_response(&e).encode(request_id);
            let _ = send.write_all_chunks(&mut frame).await;
            let _ = send.finish();
            return;
        }
    };
    // Any byte from the client after SUBSCRIBE is a protocol error; its end (FIN) or
    // reset means "stop". Either way this future completes and the loop ends.
    let client_done = async move {
        let mut buf = [0u8; 1];
        let more = matches!(recv.read(&mut buf).await, Ok(Some(n)) if n > 0);
        if more {
            let _ = recv.stop(VarInt::from_u32(STREAM_ERROR_PROTOCOL));
        }
        more
    };
    let stopped = send.stopped();
    let mut client_done = std::pin::pin!(client_done);
    let mut stopped = std::pin::pin!(stopped);
    enum Event<T> {
        Read(T),
        ClientDone(bool),
        Stopped,
    }
    loop {
        let mut read =
            std::pin::pin!(service.read(subscription_read(&topic, partition, offset, max_bytes)));
        let event = futures::future::poll_fn(|cx| {
            if let Poll::Ready(bad) = client_done.as_mut().poll(cx) {
                return Poll::Ready(Event::ClientDone(bad));
            }
            if stopped.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Event::Stopped);
            }
            read.as_mut().poll(cx).map(Event::Read)
        })
        .await;
        let mut results = match event {
            Event::Read(r) => r,
            Event::ClientDone(bad) => {
                if bad {
                    let mut frame = Response::error(
                        ErrorCode::INVALID_REQUEST,
                        "a SUBSCRIBE stream takes no further frames",
                    )
                    .encode(request_id);
                    let _ = send.write_all_chunks(&mut frame).await;
                }
                let _ = send.finish();
                return;
            }
            Event::Stopped => return,
        };
        let data = match results.pop() {
            Some(Ok(d)) => d,
            Some(Err(e)) => {
                let mut frame = error_response(&e).encode(request_id);
                let _ = send.write_all_chunks(&mut frame).await;
                let _ = send.finish();
                return;
            }
            None => return,
        };
        let Some(next) = data.next_offset else {
            continue; // the long poll timed out with nothing new
        };
        let mut frame = records_frame(request_id, &topic, partition, data);
        let mut write = std::pin::pin!(send.write_all_chunks(&mut frame));
        let written = futures::future::poll_fn(|cx| {
            if stopped.as_mut().poll(cx).is_ready() {
                return Poll::Ready(false);
            }
            write.as_mut().poll(cx).map(|r| r.is_ok())
        })
        .await;
        if !written {
            return;
        }
        offset = next;
    }
}
