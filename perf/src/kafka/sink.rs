//! `quiver-perf sink`: a tiny Kafka-speaking server that acknowledges Produce requests without
//! storing anything and answers Fetch with prebuilt batches. Pointing the generator at it
//! measures the generator's own ceiling (plus the kernel's loopback), the figure every broker
//! result must stay well below.
//!
//! It answers ApiVersions, Metadata (every topic exists with `--partitions`, itself the leader),
//! CreateTopics, Produce, Fetch, ListOffsets and FindCoordinator; anything else closes the
//! connection. No consumer groups: run consumers with `group_protocol = "explicit"`.
//! One thread per connection, requests answered in order.

use std::collections::HashMap;
use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context, Result};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use clap::Args;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};
use kafka_protocol::records::Compression;

use super::records::{BatchEncoder, PendingMessage};
use super::wire::{tune_socket, FrameReader};

/// Records per prebuilt fetch batch and their value size: a 1 KiB-message stream.
pub const SINK_BATCH_RECORDS: usize = 16;
pub const SINK_RECORD_BYTES: u32 = 1024;
/// Bytes of prebuilt batches the sink can return per partition per fetch.
pub const SINK_FETCH_CHUNK_BYTES: usize = 1024 * 1024;

#[derive(Debug, Args)]
pub struct SinkArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:19093")]
    pub listen: String,
    /// Partitions every topic appears to have.
    #[arg(long, default_value_t = 100)]
    pub partitions: i32,
}

struct SinkState {
    host: String,
    port: i32,
    default_partitions: i32,
    topics: Mutex<HashMap<String, i32>>,
    /// Whole batches totalling about SINK_FETCH_CHUNK_BYTES, and the end of each batch.
    fetch_chunk: Bytes,
    batch_ends: Vec<usize>,
}

pub fn run(args: SinkArgs) -> Result<()> {
    quiver_engine::runtime::tune_allocator();
    let listener =
        TcpListener::bind(&args.listen).with_context(|| format!("binding {}", args.listen))?;
    let local = listener.local_addr()?;
    let (fetch_chunk, batch_ends) = prebuilt_chunk()?;
    let state = Arc::new(SinkState {
        host: local.ip().to_string(),
        port: local.port() as i32,
        default_partitions: args.partitions,
        topics: Mutex::new(HashMap::new()),
        fetch_chunk,
        batch_ends,
    });
    eprintln!("quiver-perf sink listening on {local}");
    for stream in listener.incoming() {
        let stream = stream?;
        tune_socket(&stream)?;
        let state = state.clone();
        std::thread::spawn(move || {
            if let Err(error) = serve(stream, &state) {
                let text = format!("{error:#}");
                if !text.contains("closed by") {
                    eprintln!("sink: connection ended: {text}");
                }
            }
        });
    }
    Ok(())
}

fn prebuilt_chunk() -> Result<(Bytes, Vec<usize>)> {
    let mut encoder = BatchEncoder::new(42);
    let mut chunk = BytesMut::new();
    let mut ends = Vec::new();
    let messages: Vec<PendingMessage> = (0..SINK_BATCH_RECORDS)
        .map(|_| PendingMessage {
            intended_ns: 0,
            value_bytes: SINK_RECORD_BYTES,
            key: None,
        })
        .collect();
    while chunk.len() < SINK_FETCH_CHUNK_BYTES {
        encoder.encode(&mut chunk, &messages, Compression::None, 0)?;
        ends.push(chunk.len());
    }
    Ok((chunk.freeze(), ends))
}

fn serve(stream: TcpStream, state: &SinkState) -> Result<()> {
    let mut reader = FrameReader::new(stream.try_clone()?);
    let mut writer = stream;
    let mut out = BytesMut::with_capacity(64 * 1024);
    // (version, request body after the header, encoded response frame)
    let mut fetch_cache: Option<(i16, Bytes, Bytes)> = None;
    loop {
        let mut frame = reader.read_frame()?;
        if frame.len() < 8 {
            bail!("short request frame");
        }
        let api_key = (&frame[0..2]).get_i16();
        let version = (&frame[2..4]).get_i16();
        let key =
            ApiKey::try_from(api_key).map_err(|_| anyhow::anyhow!("unknown api key {api_key}"))?;
        let header = RequestHeader::decode(&mut frame, key.request_header_version(version))?;
        out.clear();
        let correlation_id = header.correlation_id;
        match key {
            ApiKey::ApiVersions => {
                // ApiVersions responses always use header v0.
                let response = ApiVersionsResponse::default().with_api_keys(
                    [
                        (ApiKey::Produce, 3, 11),
                        (ApiKey::Fetch, 4, 12),
                        (ApiKey::ListOffsets, 1, 7),
                        (ApiKey::Metadata, 1, 12),
                        (ApiKey::FindCoordinator, 0, 3),
                        (ApiKey::ApiVersions, 0, 3),
                        (ApiKey::CreateTopics, 2, 7),
                    ]
                    .into_iter()
                    .map(|(key, min, max)| {
                        ApiVersion::default()
                            .with_api_key(key as i16)
                            .with_min_version(min)
                            .with_max_version(max)
                    })
                    .collect(),
                );
                respond(&mut out, correlation_id, 0, &response, version.min(3))?;
            }
            ApiKey::Metadata => {
                let request = MetadataRequest::decode(&mut frame, version)?;
                let names: Vec<String> = request
                    .topics
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|t| t.name.map(|n| n.0.as_str().to_string()))
                    .collect();
                let topics = state.topics.lock().unwrap_or_else(|e| e.into_inner());
                let response = MetadataResponse::default()
                    .with_brokers(vec![MetadataResponseBroker::default()
                        .with_node_id(BrokerId(0))
                        .with_host(StrBytes::from_string(state.host.clone()))
                        .with_port(state.port)])
                    .with_controller_id(BrokerId(0))
                    .with_topics(
                        names
                            .into_iter()
                            .map(|name| {
                                let partitions = topics
                                    .get(&name)
                                    .copied()
                                    .unwrap_or(state.default_partitions);
                                MetadataResponseTopic::default()
                                    .with_name(Some(TopicName(StrBytes::from_string(name))))
                                    .with_partitions(
                                        (0..partitions)
                                            .map(|p| {
                                                MetadataResponsePartition::default()
                                                    .with_partition_index(p)
                                                    .with_leader_id(BrokerId(0))
                                                    .with_replica_nodes(vec![BrokerId(0)])
                                                    .with_isr_nodes(vec![BrokerId(0)])
                                            })
                                            .collect(),
                                    )
                            })
                            .collect(),
                    );
                drop(topics);
                respond(
                    &mut out,
                    correlation_id,
                    response_header(key, version),
                    &response,
                    version,
                )?;
            }
            ApiKey::CreateTopics => {
                let request = CreateTopicsRequest::decode(&mut frame, version)?;
                let mut topics = state.topics.lock().unwrap_or_else(|e| e.into_inner());
                let results = request
                    .topics
                    .iter()
                    .map(|t| {
                        topics.insert(t.name.0.as_str().to_string(), t.num_partitions.max(1));
                        CreatableTopicResult::default()
                            .with_name(t.name.clone())
                            .with_num_partitions(t.num_partitions)
                            .with_replication_factor(1)
                    })
                    .collect();
                drop(topics);
                let response = CreateTopicsResponse::default().with_topics(results);
                respond(
                    &mut out,
                    correlation_id,
                    response_header(key, version),
                    &response,
                    version,
                )?;
            }
            ApiKey::Produce => {
                let request = ProduceRequest::decode(&mut frame, version)?;
                if request.acks == 0 {
                    continue;
                }
                let response = ProduceResponse::default().with_responses(
                    request
                        .topic_data
                        .iter()
                        .map(|topic| {
                            TopicProduceResponse::default()
                                .with_name(topic.name.clone())
                                .with_partition_responses(
                                    topic
                                        .partition_data
                                        .iter()
                                        .map(|p| {
                                            PartitionProduceResponse::default()
                                                .with_index(p.index)
                                                .with_base_offset(0)
                                        })
                                        .collect(),
                                )
                        })
                        .collect(),
                );
                respond(
                    &mut out,
                    correlation_id,
                    response_header(key, version),
                    &response,
                    version,
                )?;
            }
            ApiKey::Fetch => {
                // A consumer repeats the same request shape; so is the answer, except for the
                // correlation id. Answer from the cached frame: the sink then costs one write
                // of already-encoded bytes per fetch, as a zero-copy broker would.
                let body = frame.clone();
                if let Some((cached_version, cached_body, cached_frame)) = &fetch_cache {
                    if *cached_version == version && *cached_body == body {
                        let mut head = [0u8; 8];
                        head[..4].copy_from_slice(&cached_frame[..4]);
                        head[4..].copy_from_slice(&correlation_id.to_be_bytes());
                        writer.write_all(&head)?;
                        writer.write_all(&cached_frame[8..])?;
                        continue;
                    }
                }
                let request = FetchRequest::decode(&mut frame, version)?;
                let mut budget = request.max_bytes.max(0) as usize;
                let response = FetchResponse::default().with_responses(
                    request
                        .topics
                        .iter()
                        .map(|topic| {
                            FetchableTopicResponse::default()
                                .with_topic(topic.topic.clone())
                                .with_partitions(
                                    topic
                                        .partitions
                                        .iter()
                                        .map(|p| {
                                            let limit =
                                                (p.partition_max_bytes.max(0) as usize).min(budget);
                                            let end = state
                                                .batch_ends
                                                .iter()
                                                .copied()
                                                .take_while(|end| *end <= limit)
                                                .last()
                                                .unwrap_or(0);
                                            budget -= end;
                                            PartitionData::default()
                                                .with_partition_index(p.partition)
                                                .with_high_watermark(i64::MAX / 2)
                                                .with_last_stable_offset(i64::MAX / 2)
                                                .with_records(Some(state.fetch_chunk.slice(..end)))
                                        })
                                        .collect(),
                                )
                        })
                        .collect(),
                );
                respond(
                    &mut out,
                    correlation_id,
                    response_header(key, version),
                    &response,
                    version,
                )?;
                fetch_cache = Some((version, body, out.clone().freeze()));
            }
            ApiKey::ListOffsets => {
                let request = ListOffsetsRequest::decode(&mut frame, version)?;
                let response = ListOffsetsResponse::default().with_topics(
                    request
                        .topics
                        .iter()
                        .map(|t| {
                            ListOffsetsTopicResponse::default()
                                .with_name(t.name.clone())
                                .with_partitions(
                                    t.partitions
                                        .iter()
                                        .map(|p| {
                                            ListOffsetsPartitionResponse::default()
                                                .with_partition_index(p.partition_index)
                                                .with_offset(0)
                                        })
                                        .collect(),
                                )
                        })
                        .collect(),
                );
                respond(
                    &mut out,
                    correlation_id,
                    response_header(key, version),
                    &response,
                    version,
                )?;
            }
            ApiKey::FindCoordinator => {
                let response = FindCoordinatorResponse::default()
                    .with_node_id(BrokerId(0))
                    .with_host(StrBytes::from_string(state.host.clone()))
                    .with_port(state.port);
                respond(
                    &mut out,
                    correlation_id,
                    response_header(key, version),
                    &response,
                    version,
                )?;
            }
            other => bail!("sink does not serve {other:?}"),
        }
        writer.write_all(&out)?;
    }
}

fn response_header(key: ApiKey, version: i16) -> i16 {
    key.response_header_version(version)
}

fn respond<M: Encodable + HeaderVersion>(
    out: &mut BytesMut,
    correlation_id: i32,
    header_version: i16,
    body: &M,
    version: i16,
) -> Result<()> {
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let size = header.compute_size(header_version)? + body.compute_size(version)?;
    out.reserve(size + 4);
    out.put_u32(size as u32);
    header.encode(out, header_version)?;
    body.encode(out, version)?;
    Ok(())
}
