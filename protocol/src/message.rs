//! Typed requests and responses and their body encodings (see docs/protocol.md for the
//! byte layouts). Integers are little-endian; strings are a u16 length plus UTF-8; lists
//! are a u32 count plus elements; record payloads are Kafka RecordBatch v2 bytes.

use bytes::Bytes;

use crate::codes::ErrorCode;
use crate::frame::{FrameError, FrameHeader, FrameType, HEADER_BYTES};
use crate::limits::*;
use crate::wire::{Reader, Writer};

/// When a produce is acknowledged. Same numbers as Kafka's `acks`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Acks {
    /// No response at all: fire and forget.
    None,
    /// After the leader put the batch in the kernel (its segment file's direct write, or
    /// the page cache of that file when the partition is idle): it survives a crash of
    /// the broker process, not necessarily a power loss until the next sync.
    /// The Kafka front end's acks=1.
    Leader,
    /// After every in-sync replica has it and the partition's log committed it
    /// (fdatasync by default).
    All,
}

impl Acks {
    pub fn as_i8(self) -> i8 {
        match self {
            Acks::None => 0,
            Acks::Leader => 1,
            Acks::All => -1,
        }
    }
    pub fn from_i8(v: i8) -> Option<Acks> {
        match v {
            0 => Some(Acks::None),
            1 => Some(Acks::Leader),
            -1 => Some(Acks::All),
            _ => None,
        }
    }
}

/// Special values of a starting offset or a list-offsets timestamp (Kafka's).
pub const LATEST: i64 = -1;
pub const EARLIEST: i64 = -2;
pub const MAX_TIMESTAMP: i64 = -3;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProduceRequest {
    pub topic: String,
    pub partition: i32,
    pub acks: Acks,
    /// One or more RecordBatch v2, stored unchanged (the broker patches only the base
    /// offset and leader epoch, which the CRC does not cover), as chunks split anywhere:
    /// a decoded request keeps the chunks its body arrived in (no empty ones), so record
    /// bytes are not copied to join them.
    pub records: Vec<Bytes>,
}

/// A request decoded from a body received as chunks, and how many body bytes decoding
/// copied to join chunks (never a PRODUCE's records).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkedRequest {
    pub request: Request,
    pub bytes_copied: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProduceResponse {
    pub base_offset: i64,
    pub last_offset: i64,
    pub log_start_offset: i64,
    /// The batch was a retry of one already stored (idempotent producer): nothing new
    /// was appended and the offsets are those of the original.
    pub duplicate: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchPartition {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub max_bytes: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchRequest {
    /// Longest the broker waits for `min_bytes` (capped at `MAX_FETCH_WAIT_MS`).
    pub max_wait_ms: u32,
    pub min_bytes: u32,
    /// Over all partitions; the first non-empty partition's first batch always goes whole.
    pub max_bytes: u32,
    pub partitions: Vec<FetchPartition>,
}

/// One partition's records in a FETCH response or a subscription push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionRecords {
    pub topic: String,
    pub partition: i32,
    pub error: ErrorCode,
    pub high_watermark: i64,
    pub log_start_offset: i64,
    /// Whole batches. On encode, views of the broker's buffers (sent without a copy); on
    /// decode, one view of the received frame body.
    pub records: Vec<Bytes>,
}

impl PartitionRecords {
    pub fn records_len(&self) -> usize {
        self.records.iter().map(|r| r.len()).sum()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchResponse {
    pub partitions: Vec<PartitionRecords>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscribeRequest {
    pub topic: String,
    pub partition: i32,
    /// First offset to deliver, or [`LATEST`] / [`EARLIEST`].
    pub offset: i64,
    /// Record bytes per push at most (capped at `MAX_SUBSCRIBE_PUSH_BYTES`).
    pub max_bytes: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetQuery {
    pub topic: String,
    pub partition: i32,
    /// [`EARLIEST`], [`LATEST`], [`MAX_TIMESTAMP`], or a timestamp in ms.
    pub timestamp: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListOffsetsRequest {
    pub partitions: Vec<OffsetQuery>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionOffset {
    pub topic: String,
    pub partition: i32,
    pub error: ErrorCode,
    /// -1 when no record is at or after the timestamp.
    pub offset: i64,
    pub timestamp: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListOffsetsResponse {
    pub partitions: Vec<PartitionOffset>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InitProducerIdRequest {
    /// -1 for a new producer; a known id with its epoch to bump the epoch (KIP-360).
    pub producer_id: i64,
    pub producer_epoch: i16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InitProducerIdResponse {
    pub producer_id: i64,
    pub producer_epoch: i16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateTopicRequest {
    pub name: String,
    /// -1 for the broker default.
    pub partitions: i32,
    pub configs: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    pub name: String,
    pub topic_id: [u8; 16],
    pub partitions: i32,
    pub internal: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionState {
    pub partition: i32,
    pub log_start_offset: i64,
    pub high_watermark: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicDescription {
    pub info: TopicInfo,
    /// Every supported config with its effective value.
    pub configs: Vec<(String, String)>,
    pub partitions: Vec<PartitionState>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetCommit {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub metadata: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitOffsetsRequest {
    pub group: String,
    pub offsets: Vec<OffsetCommit>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionResult {
    pub topic: String,
    pub partition: i32,
    pub error: ErrorCode,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicPartition {
    pub topic: String,
    pub partition: i32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchOffsetsRequest {
    pub group: String,
    /// Empty: every partition the group has committed.
    pub partitions: Vec<TopicPartition>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedOffset {
    pub topic: String,
    pub partition: i32,
    /// -1 when the group has no committed offset for the partition.
    pub offset: i64,
    pub metadata: String,
    pub error: ErrorCode,
}

/// A consumer group as LIST_GROUPS reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupListing {
    pub group: String,
    /// Kafka's group states: Empty, PreparingRebalance, CompletingRebalance, Stable, Dead.
    pub state: String,
    /// "consumer" for Kafka consumer groups; empty for groups with only commits.
    pub protocol_type: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMember {
    pub member_id: String,
    pub client_id: String,
    pub client_host: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    pub group: String,
    pub state: String,
    pub protocol_type: String,
    /// The assignment strategy chosen (e.g. "range"), empty when none.
    pub protocol: String,
    pub members: Vec<GroupMember>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorResponse {
    pub code: ErrorCode,
    pub message: String,
}

/// Which shard (core) of the broker owns each partition of a topic: the answer to
/// [`Request::Route`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicRoute {
    pub topic: String,
    /// UNKNOWN_TOPIC_OR_PARTITION when there is no such topic (then `shards` is empty).
    pub error: ErrorCode,
    /// Index: partition; value: the shard that owns it.
    pub shards: Vec<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteResponse {
    /// Shards the broker runs, each with its own QUIC endpoint on the listen address.
    pub shard_count: u16,
    /// The shard serving the connection this answer came on.
    pub connection_shard: u16,
    pub topics: Vec<TopicRoute>,
}

/// Every request a client may send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Produce(ProduceRequest),
    Fetch(FetchRequest),
    Subscribe(SubscribeRequest),
    ListOffsets(ListOffsetsRequest),
    InitProducerId(InitProducerIdRequest),
    CreateTopic(CreateTopicRequest),
    DeleteTopic {
        name: String,
    },
    ListTopics,
    DescribeTopic {
        name: String,
    },
    /// The owning shard of every partition of `topics` (docs/protocol.md, "Shard-aware
    /// clients").
    Route {
        topics: Vec<String>,
    },
    CommitOffsets(CommitOffsetsRequest),
    FetchOffsets(FetchOffsetsRequest),
    ListGroups,
    DescribeGroup {
        group: String,
    },
}

/// Every frame a broker may send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    Produce(ProduceResponse),
    Fetch(FetchResponse),
    /// A subscription push.
    Records(PartitionRecords),
    ListOffsets(ListOffsetsResponse),
    InitProducerId(InitProducerIdResponse),
    CreateTopic(TopicInfo),
    DeleteTopic,
    ListTopics(Vec<TopicInfo>),
    DescribeTopic(TopicDescription),
    Route(RouteResponse),
    CommitOffsets(Vec<PartitionResult>),
    FetchOffsets(Vec<CommittedOffset>),
    ListGroups(Vec<GroupListing>),
    DescribeGroup(GroupDescription),
    Error(ErrorResponse),
}

/// Smallest encodings, for the count checks (a string is at least its 2-byte length).
const MIN_FETCH_PARTITION: usize = 2 + 4 + 8 + 4;
const MIN_OFFSET_QUERY: usize = 2 + 4 + 8;
const MIN_PARTITION_RECORDS: usize = 2 + 4 + 2 + 8 + 8 + 4;
const MIN_PARTITION_OFFSET: usize = 2 + 4 + 2 + 8 + 8;
const MIN_TOPIC_INFO: usize = 2 + 16 + 4 + 1;
const MIN_CONFIG: usize = 2 + 2;
const MIN_PARTITION_STATE: usize = 4 + 8 + 8;
const MIN_OFFSET_COMMIT: usize = 2 + 4 + 8 + 2;
const MIN_PARTITION_RESULT: usize = 2 + 4 + 2;
const MIN_TOPIC_PARTITION: usize = 2 + 4;
const MIN_COMMITTED_OFFSET: usize = 2 + 4 + 8 + 2 + 2;
const MIN_TOPIC_NAME: usize = 2;
const MIN_TOPIC_ROUTE: usize = 2 + 2 + 4;
const SHARD_BYTES: usize = 2;
const MIN_GROUP_LISTING: usize = 2 + 2 + 2;
const MIN_GROUP_MEMBER: usize = 2 + 2 + 2;

fn with_header(frame_type: FrameType, request_id: u64, body: Writer) -> Vec<Bytes> {
    let mut chunks = body.into_chunks();
    let len: usize = chunks.iter().map(|c| c.len()).sum();
    let header = FrameHeader::new(frame_type, request_id, len);
    chunks.insert(0, Bytes::copy_from_slice(&header.to_bytes()));
    chunks
}

fn put_configs(w: &mut Writer, configs: &[(String, String)]) {
    w.u32(configs.len() as u32);
    for (k, v) in configs {
        w.string(k);
        w.string(v);
    }
}

fn get_configs(r: &mut Reader) -> Result<Vec<(String, String)>, FrameError> {
    let n = r.count("configs", MAX_CONFIGS_PER_REQUEST, MIN_CONFIG)?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push((r.string("config name")?, r.string("config value")?));
    }
    Ok(out)
}

fn put_partition_records(w: &mut Writer, p: &PartitionRecords) {
    w.string(&p.topic);
    w.i32(p.partition);
    w.i16(p.error.0);
    w.i64(p.high_watermark);
    w.i64(p.log_start_offset);
    w.chunks(&p.records);
}

fn get_partition_records(r: &mut Reader) -> Result<PartitionRecords, FrameError> {
    Ok(PartitionRecords {
        topic: r.string("topic")?,
        partition: r.i32("partition")?,
        error: ErrorCode(r.i16("error")?),
        high_watermark: r.i64("high watermark")?,
        log_start_offset: r.i64("log start offset")?,
        records: {
            let b = r.bytes("records")?;
            if b.is_empty() {
                Vec::new()
            } else {
                vec![b]
            }
        },
    })
}

fn put_topic_info(w: &mut Writer, t: &TopicInfo) {
    w.string(&t.name);
    w.array16(&t.topic_id);
    w.i32(t.partitions);
    w.u8(t.internal as u8);
}

fn get_topic_info(r: &mut Reader) -> Result<TopicInfo, FrameError> {
    Ok(TopicInfo {
        name: r.string("topic")?,
        topic_id: r.array16("topic id")?,
        partitions: r.i32("partitions")?,
        internal: r.u8("internal")? != 0,
    })
}

impl Request {
    pub fn frame_type(&self) -> FrameType {
        match self {
            Request::Produce(_) => FrameType::Produce,
            Request::Fetch(_) => FrameType::Fetch,
            Request::Subscribe(_) => FrameType::Subscribe,
            Request::ListOffsets(_) => FrameType::ListOffsets,
            Request::InitProducerId(_) => FrameType::InitProducerId,
            Request::CreateTopic(_) => FrameType::CreateTopic,
            Request::DeleteTopic { .. } => FrameType::DeleteTopic,
            Request::ListTopics => FrameType::ListTopics,
            Request::DescribeTopic { .. } => FrameType::DescribeTopic,
            Request::Route { .. } => FrameType::Route,
            Request::CommitOffsets(_) => FrameType::CommitOffsets,
            Request::FetchOffsets(_) => FrameType::FetchOffsets,
            Request::ListGroups => FrameType::ListGroups,
            Request::DescribeGroup { .. } => FrameType::DescribeGroup,
        }
    }

    /// The whole frame (header first) as chunks; record payloads are not copied.
    pub fn encode(&self, request_id: u64) -> Vec<Bytes> {
        let mut w = Writer::default();
        match self {
            Request::Produce(p) => {
                w.string(&p.topic);
                w.i32(p.partition);
                w.i8(p.acks.as_i8());
                w.raw_chunks(&p.records);
            }
            Request::Fetch(f) => {
                w.u32(f.max_wait_ms);
                w.u32(f.min_bytes);
                w.u32(f.max_bytes);
                w.u32(f.partitions.len() as u32);
                for p in &f.partitions {
                    w.string(&p.topic);
                    w.i32(p.partition);
                    w.i64(p.offset);
                    w.u32(p.max_bytes);
                }
            }
            Request::Subscribe(s) => {
                w.string(&s.topic);
                w.i32(s.partition);
                w.i64(s.offset);
                w.u32(s.max_bytes);
            }
            Request::ListOffsets(l) => {
                w.u32(l.partitions.len() as u32);
                for q in &l.partitions {
                    w.string(&q.topic);
                    w.i32(q.partition);
                    w.i64(q.timestamp);
                }
            }
            Request::InitProducerId(i) => {
                w.i64(i.producer_id);
                w.i16(i.producer_epoch);
            }
            Request::CreateTopic(c) => {
                w.string(&c.name);
                w.i32(c.partitions);
                put_configs(&mut w, &c.configs);
            }
            Request::DeleteTopic { name } | Request::DescribeTopic { name } => w.string(name),
            Request::DescribeGroup { group } => w.string(group),
            Request::Route { topics } => {
                w.u32(topics.len() as u32);
                for t in topics {
                    w.string(t);
                }
            }
            Request::ListTopics | Request::ListGroups => {}
            Request::CommitOffsets(c) => {
                w.string(&c.group);
                w.u32(c.offsets.len() as u32);
                for o in &c.offsets {
                    w.string(&o.topic);
                    w.i32(o.partition);
                    w.i64(o.offset);
                    w.string(&o.metadata);
                }
            }
            Request::FetchOffsets(f) => {
                w.string(&f.group);
                w.u32(f.partitions.len() as u32);
                for p in &f.partitions {
                    w.string(&p.topic);
                    w.i32(p.partition);
                }
            }
        }
        with_header(self.frame_type(), request_id, w)
    }

    /// Decodes a request body. `body` must be exactly `header.body_len()` bytes.
    pub fn decode(header: &FrameHeader, body: Bytes) -> Result<Request, FrameError> {
        Ok(Request::decode_chunks(header, vec![body])?.request)
    }

    /// Decodes a request body received as chunks, split anywhere (the views of decrypted
    /// packets a QUIC stream delivered); together they must be exactly
    /// `header.body_len()` bytes. A PRODUCE's records stay the chunks they arrived in:
    /// only its head (topic, partition, acks: at most 7 + `MAX_STRING_BYTES` bytes) is
    /// joined when it spans chunks. Other requests are small and are joined into one buffer when
    /// they span chunks.
    pub fn decode_chunks(
        header: &FrameHeader,
        mut body: Vec<Bytes>,
    ) -> Result<ChunkedRequest, FrameError> {
        body.retain(|c| !c.is_empty());
        if header.frame_type() == FrameType::Produce {
            // The topic's length says where the head ends; a body too short for it is
            // decoded whole below, which reports what is missing.
            let mut len_bytes = [0u8; 2];
            if copy_prefix(&body, &mut len_bytes) {
                let head_len = 2 + u16::from_le_bytes(len_bytes) as usize + 4 + 1;
                if let Some((head, bytes_copied)) = split_prefix(&mut body, head_len) {
                    let mut r = Reader::new(head);
                    let (topic, partition, acks) = produce_head(&mut r)?;
                    r.finish()?;
                    let request = Request::Produce(ProduceRequest {
                        topic,
                        partition,
                        acks,
                        records: body,
                    });
                    return Ok(ChunkedRequest {
                        request,
                        bytes_copied,
                    });
                }
            }
        }
        let bytes_copied = if body.len() > 1 {
            body.iter().map(|c| c.len()).sum()
        } else {
            0
        };
        let joined = match body.len() {
            0 => Bytes::new(),
            1 => body.pop().unwrap_or_default(),
            _ => concat(&body),
        };
        Ok(ChunkedRequest {
            request: Request::decode_joined(header, joined)?,
            bytes_copied,
        })
    }

    /// Decodes a contiguous body (a PRODUCE comes here only when it is too short for
    /// its head).
    fn decode_joined(header: &FrameHeader, body: Bytes) -> Result<Request, FrameError> {
        let mut r = Reader::new(body);
        let req = match header.frame_type() {
            FrameType::Produce => {
                let (topic, partition, acks) = produce_head(&mut r)?;
                let records = r.rest();
                Request::Produce(ProduceRequest {
                    topic,
                    partition,
                    acks,
                    records: (!records.is_empty())
                        .then_some(records)
                        .into_iter()
                        .collect(),
                })
            }
            FrameType::Fetch => {
                let max_wait_ms = r.u32("max wait")?;
                let min_bytes = r.u32("min bytes")?;
                let max_bytes = r.u32("max bytes")?;
                let n = r.count(
                    "fetch partitions",
                    MAX_PARTITIONS_PER_REQUEST,
                    MIN_FETCH_PARTITION,
                )?;
                let mut partitions = Vec::with_capacity(n);
                for _ in 0..n {
                    partitions.push(FetchPartition {
                        topic: r.string("topic")?,
                        partition: r.i32("partition")?,
                        offset: r.i64("offset")?,
                        max_bytes: r.u32("partition max bytes")?,
                    });
                }
                Request::Fetch(FetchRequest {
                    max_wait_ms,
                    min_bytes,
                    max_bytes,
                    partitions,
                })
            }
            FrameType::Subscribe => Request::Subscribe(SubscribeRequest {
                topic: r.string("topic")?,
                partition: r.i32("partition")?,
                offset: r.i64("offset")?,
                max_bytes: r.u32("max bytes")?,
            }),
            FrameType::ListOffsets => {
                let n = r.count(
                    "offset queries",
                    MAX_PARTITIONS_PER_REQUEST,
                    MIN_OFFSET_QUERY,
                )?;
                let mut partitions = Vec::with_capacity(n);
                for _ in 0..n {
                    partitions.push(OffsetQuery {
                        topic: r.string("topic")?,
                        partition: r.i32("partition")?,
                        timestamp: r.i64("timestamp")?,
                    });
                }
                Request::ListOffsets(ListOffsetsRequest { partitions })
            }
            FrameType::InitProducerId => Request::InitProducerId(InitProducerIdRequest {
                producer_id: r.i64("producer id")?,
                producer_epoch: r.i16("producer epoch")?,
            }),
            FrameType::CreateTopic => Request::CreateTopic(CreateTopicRequest {
                name: r.string("topic")?,
                partitions: r.i32("partitions")?,
                configs: get_configs(&mut r)?,
            }),
            FrameType::DeleteTopic => Request::DeleteTopic {
                name: r.string("topic")?,
            },
            FrameType::ListTopics => Request::ListTopics,
            FrameType::DescribeTopic => Request::DescribeTopic {
                name: r.string("topic")?,
            },
            FrameType::Route => {
                let n = r.count("topics", MAX_PARTITIONS_PER_REQUEST, MIN_TOPIC_NAME)?;
                let mut topics = Vec::with_capacity(n);
                for _ in 0..n {
                    topics.push(r.string("topic")?);
                }
                Request::Route { topics }
            }
            FrameType::CommitOffsets => {
                let group = r.string("group")?;
                let n = r.count("offsets", MAX_PARTITIONS_PER_REQUEST, MIN_OFFSET_COMMIT)?;
                let mut offsets = Vec::with_capacity(n);
                for _ in 0..n {
                    offsets.push(OffsetCommit {
                        topic: r.string("topic")?,
                        partition: r.i32("partition")?,
                        offset: r.i64("offset")?,
                        metadata: r.string("metadata")?,
                    });
                }
                Request::CommitOffsets(CommitOffsetsRequest { group, offsets })
            }
            FrameType::FetchOffsets => {
                let group = r.string("group")?;
                let n = r.count(
                    "partitions",
                    MAX_PARTITIONS_PER_REQUEST,
                    MIN_TOPIC_PARTITION,
                )?;
                let mut partitions = Vec::with_capacity(n);
                for _ in 0..n {
                    partitions.push(TopicPartition {
                        topic: r.string("topic")?,
                        partition: r.i32("partition")?,
                    });
                }
                Request::FetchOffsets(FetchOffsetsRequest { group, partitions })
            }
            FrameType::ListGroups => Request::ListGroups,
            FrameType::DescribeGroup => Request::DescribeGroup {
                group: r.string("group")?,
            },
            other => return Err(FrameError::UnexpectedType(other)),
        };
        r.finish()?;
        Ok(req)
    }
}

impl Response {
    pub fn frame_type(&self) -> FrameType {
        match self {
            Response::Produce(_) => FrameType::ProduceResponse,
            Response::Fetch(_) => FrameType::FetchResponse,
            Response::Records(_) => FrameType::Records,
            Response::ListOffsets(_) => FrameType::ListOffsetsResponse,
            Response::InitProducerId(_) => FrameType::InitProducerIdResponse,
            Response::CreateTopic(_) => FrameType::CreateTopicResponse,
            Response::DeleteTopic => FrameType::DeleteTopicResponse,
            Response::ListTopics(_) => FrameType::ListTopicsResponse,
            Response::DescribeTopic(_) => FrameType::DescribeTopicResponse,
            Response::Route(_) => FrameType::RouteResponse,
            Response::CommitOffsets(_) => FrameType::CommitOffsetsResponse,
            Response::FetchOffsets(_) => FrameType::FetchOffsetsResponse,
            Response::ListGroups(_) => FrameType::ListGroupsResponse,
            Response::DescribeGroup(_) => FrameType::DescribeGroupResponse,
            Response::Error(_) => FrameType::Error,
        }
    }

    pub fn error(code: ErrorCode, message: impl Into<String>) -> Response {
        Response::Error(ErrorResponse {
            code,
            message: message.into(),
        })
    }

    /// The whole frame (header first) as chunks; record buffers are not copied.
    pub fn encode(&self, request_id: u64) -> Vec<Bytes> {
        let mut w = Writer::default();
        match self {
            Response::Produce(p) => {
                w.i64(p.base_offset);
                w.i64(p.last_offset);
                w.i64(p.log_start_offset);
                w.u8(p.duplicate as u8);
            }
            Response::Fetch(f) => {
                w.u32(f.partitions.len() as u32);
                for p in &f.partitions {
                    put_partition_records(&mut w, p);
                }
            }
            Response::Records(p) => put_partition_records(&mut w, p),
            Response::ListOffsets(l) => {
                w.u32(l.partitions.len() as u32);
                for p in &l.partitions {
                    w.string(&p.topic);
                    w.i32(p.partition);
                    w.i16(p.error.0);
                    w.i64(p.offset);
                    w.i64(p.timestamp);
                }
            }
            Response::InitProducerId(i) => {
                w.i64(i.producer_id);
                w.i16(i.producer_epoch);
            }
            Response::CreateTopic(t) => put_topic_info(&mut w, t),
            Response::DeleteTopic => {}
            Response::ListTopics(ts) => {
                w.u32(ts.len() as u32);
                for t in ts {
                    put_topic_info(&mut w, t);
                }
            }
            Response::DescribeTopic(d) => {
                put_topic_info(&mut w, &d.info);
                put_configs(&mut w, &d.configs);
                w.u32(d.partitions.len() as u32);
                for p in &d.partitions {
                    w.i32(p.partition);
                    w.i64(p.log_start_offset);
                    w.i64(p.high_watermark);
                }
            }
            Response::Route(r) => {
                w.u16(r.shard_count);
                w.u16(r.connection_shard);
                w.u32(r.topics.len() as u32);
                for t in &r.topics {
                    w.string(&t.topic);
                    w.i16(t.error.0);
                    w.u32(t.shards.len() as u32);
                    for shard in &t.shards {
                        w.u16(*shard);
                    }
                }
            }
            Response::CommitOffsets(rs) => {
                w.u32(rs.len() as u32);
                for p in rs {
                    w.string(&p.topic);
                    w.i32(p.partition);
                    w.i16(p.error.0);
                }
            }
            Response::FetchOffsets(os) => {
                w.u32(os.len() as u32);
                for o in os {
                    w.string(&o.topic);
                    w.i32(o.partition);
                    w.i64(o.offset);
                    w.string(&o.metadata);
                    w.i16(o.error.0);
                }
            }
            Response::ListGroups(gs) => {
                w.u32(gs.len() as u32);
                for g in gs {
                    w.string(&g.group);
                    w.string(&g.state);
                    w.string(&g.protocol_type);
                }
            }
            Response::DescribeGroup(d) => {
                w.string(&d.group);
                w.string(&d.state);
                w.string(&d.protocol_type);
                w.string(&d.protocol);
                w.u32(d.members.len() as u32);
                for m in &d.members {
                    w.string(&m.member_id);
                    w.string(&m.client_id);
                    w.string(&m.client_host);
                }
            }
            Response::Error(e) => {
                w.i16(e.code.0);
                w.string(&e.message);
            }
        }
        with_header(self.frame_type(), request_id, w)
    }

    /// Decodes a response body. `body` must be exactly `header.body_len()` bytes.
    pub fn decode(header: &FrameHeader, body: Bytes) -> Result<Response, FrameError> {
        let mut r = Reader::new(body);
        let resp = match header.frame_type() {
            FrameType::ProduceResponse => Response::Produce(ProduceResponse {
                base_offset: r.i64("base offset")?,
                last_offset: r.i64("last offset")?,
                log_start_offset: r.i64("log start offset")?,
                duplicate: r.u8("duplicate")? != 0,
            }),
            FrameType::FetchResponse => {
                let n = r.count(
                    "fetched partitions",
                    MAX_PARTITIONS_PER_REQUEST,
                    MIN_PARTITION_RECORDS,
                )?;
                let mut partitions = Vec::with_capacity(n);
                for _ in 0..n {
                    partitions.push(get_partition_records(&mut r)?);
                }
                Response::Fetch(FetchResponse { partitions })
            }
            FrameType::Records => Response::Records(get_partition_records(&mut r)?),
            FrameType::ListOffsetsResponse => {
                let n = r.count(
                    "partition offsets",
                    MAX_PARTITIONS_PER_REQUEST,
                    MIN_PARTITION_OFFSET,
                )?;
                let mut partitions = Vec::with_capacity(n);
                for _ in 0..n {
                    partitions.push(PartitionOffset {
                        topic: r.string("topic")?,
                        partition: r.i32("partition")?,
                        error: ErrorCode(r.i16("error")?),
                        offset: r.i64("offset")?,
                        timestamp: r.i64("timestamp")?,
                    });
                }
                Response::ListOffsets(ListOffsetsResponse { partitions })
            }
            FrameType::InitProducerIdResponse => Response::InitProducerId(InitProducerIdResponse {
                producer_id: r.i64("producer id")?,
                producer_epoch: r.i16("producer epoch")?,
            }),
            FrameType::CreateTopicResponse => Response::CreateTopic(get_topic_info(&mut r)?),
            FrameType::DeleteTopicResponse => Response::DeleteTopic,
            FrameType::ListTopicsResponse => {
                let n = r.count("topics", MAX_TOPICS_PER_RESPONSE, MIN_TOPIC_INFO)?;
                let mut topics = Vec::with_capacity(n);
                for _ in 0..n {
                    topics.push(get_topic_info(&mut r)?);
                }
                Response::ListTopics(topics)
            }
            FrameType::DescribeTopicResponse => {
                let info = get_topic_info(&mut r)?;
                let configs = get_configs(&mut r)?;
                let n = r.count(
                    "partitions",
                    MAX_PARTITIONS_PER_REQUEST,
                    MIN_PARTITION_STATE,
                )?;
                let mut partitions = Vec::with_capacity(n);
                for _ in 0..n {
                    partitions.push(PartitionState {
                        partition: r.i32("partition")?,
                        log_start_offset: r.i64("log start offset")?,
                        high_watermark: r.i64("high watermark")?,
                    });
                }
                Response::DescribeTopic(TopicDescription {
                    info,
                    configs,
                    partitions,
                })
            }
            FrameType::RouteResponse => {
                let shard_count = r.u16("shard count")?;
                let connection_shard = r.u16("connection shard")?;
                let n = r.count("topics", MAX_PARTITIONS_PER_REQUEST, MIN_TOPIC_ROUTE)?;
                let mut topics = Vec::with_capacity(n);
                for _ in 0..n {
                    let topic = r.string("topic")?;
                    let error = ErrorCode(r.i16("error")?);
                    let partitions =
                        r.count("partitions", MAX_PARTITIONS_PER_REQUEST, SHARD_BYTES)?;
                    let mut shards = Vec::with_capacity(partitions);
                    for _ in 0..partitions {
                        shards.push(r.u16("shard")?);
                    }
                    topics.push(TopicRoute {
                        topic,
                        error,
                        shards,
                    });
                }
                Response::Route(RouteResponse {
                    shard_count,
                    connection_shard,
                    topics,
                })
            }
            FrameType::CommitOffsetsResponse => {
                let n = r.count(
                    "partition results",
                    MAX_PARTITIONS_PER_REQUEST,
                    MIN_PARTITION_RESULT,
                )?;
                let mut out = Vec::with_capacity(n);
                for _ in 0..n {
                    out.push(PartitionResult {
                        topic: r.string("topic")?,
                        partition: r.i32("partition")?,
                        error: ErrorCode(r.i16("error")?),
                    });
                }
                Response::CommitOffsets(out)
            }
            FrameType::FetchOffsetsResponse => {
                let n = r.count(
                    "committed offsets",
                    MAX_PARTITIONS_PER_REQUEST,
                    MIN_COMMITTED_OFFSET,
                )?;
                let mut out = Vec::with_capacity(n);
                for _ in 0..n {
                    out.push(CommittedOffset {
                        topic: r.string("topic")?,
                        partition: r.i32("partition")?,
                        offset: r.i64("offset")?,
                        metadata: r.string("metadata")?,
                        error: ErrorCode(r.i16("error")?),
                    });
                }
                Response::FetchOffsets(out)
            }
            FrameType::ListGroupsResponse => {
                let n = r.count("groups", MAX_GROUPS_PER_RESPONSE, MIN_GROUP_LISTING)?;
                let mut out = Vec::with_capacity(n);
                for _ in 0..n {
                    out.push(GroupListing {
                        group: r.string("group")?,
                        state: r.string("state")?,
                        protocol_type: r.string("protocol type")?,
                    });
                }
                Response::ListGroups(out)
            }
            FrameType::DescribeGroupResponse => {
                let group = r.string("group")?;
                let state = r.string("state")?;
                let protocol_type = r.string("protocol type")?;
                let protocol = r.string("protocol")?;
                let n = r.count("members", MAX_GROUP_MEMBERS_PER_RESPONSE, MIN_GROUP_MEMBER)?;
                let mut members = Vec::with_capacity(n);
                for _ in 0..n {
                    members.push(GroupMember {
                        member_id: r.string("member id")?,
                        client_id: r.string("client id")?,
                        client_host: r.string("client host")?,
                    });
                }
                Response::DescribeGroup(GroupDescription {
                    group,
                    state,
                    protocol_type,
                    protocol,
                    members,
                })
            }
            FrameType::Error => Response::Error(ErrorResponse {
                code: ErrorCode(r.i16("error code")?),
                message: r.string("error message")?,
            }),
            other => return Err(FrameError::UnexpectedType(other)),
        };
        r.finish()?;
        Ok(resp)
    }
}

/// A frame split off the front of a contiguous buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawFrame {
    pub header: FrameHeader,
    pub body: Bytes,
}

/// Splits the first whole frame off `buf`: `Ok(None)` if more bytes are needed, an
/// error if the header is invalid. Used by tests and the fuzzer; the broker and client
/// read the header and then exactly `body_len` bytes from the QUIC stream instead.
pub fn split_frame(buf: &mut Bytes, max_body: usize) -> Result<Option<RawFrame>, FrameError> {
    let Some(header) = FrameHeader::decode(buf, max_body)? else {
        return Ok(None);
    };
    let total = HEADER_BYTES + header.body_len();
    if buf.len() < total {
        return Ok(None);
    }
    let frame = buf.split_to(total);
    Ok(Some(RawFrame {
        header,
        body: frame.slice(HEADER_BYTES..),
    }))
}

/// A PRODUCE body's head: topic, partition, acks.
fn produce_head(r: &mut Reader) -> Result<(String, i32, Acks), FrameError> {
    let topic = r.string("topic")?;
    let partition = r.i32("partition")?;
    let acks_raw = r.i8("acks")?;
    let acks = Acks::from_i8(acks_raw).ok_or(FrameError::InvalidValue {
        what: "acks",
        value: acks_raw as i64,
    })?;
    Ok((topic, partition, acks))
}

/// Copies the first `out.len()` bytes of `chunks` into `out`; false if there are fewer.
fn copy_prefix(chunks: &[Bytes], out: &mut [u8]) -> bool {
    let mut filled = 0;
    for c in chunks {
        if filled == out.len() {
            break;
        }
        let take = c.len().min(out.len() - filled);
        out[filled..filled + take].copy_from_slice(&c[..take]);
        filled += take;
    }
    filled == out.len()
}

/// Takes the first `n` bytes off `chunks` (non-empty ones) as one buffer: a view when
/// they lie in the first chunk, else a copy, with the bytes copied. `None` if there are
/// fewer than `n` bytes.
fn split_prefix(chunks: &mut Vec<Bytes>, n: usize) -> Option<(Bytes, usize)> {
    if chunks.iter().map(|c| c.len()).sum::<usize>() < n {
        return None;
    }
    if chunks.first().is_some_and(|c| c.len() >= n) {
        let head = chunks[0].split_to(n);
        if chunks[0].is_empty() {
            chunks.remove(0);
        }
        return Some((head, 0));
    }
    let mut head = Vec::with_capacity(n);
    while head.len() < n {
        let take = chunks[0].len().min(n - head.len());
        head.extend_from_slice(&chunks[0].split_to(take));
        if chunks[0].is_empty() {
            chunks.remove(0);
        }
    }
    Some((Bytes::from(head), n))
}

/// Joins encoded chunks into one buffer (tests, the fuzzer and small frames).
pub fn concat(chunks: &[Bytes]) -> Bytes {
    let mut out = Vec::with_capacity(chunks.iter().map(|c| c.len()).sum());
    for c in chunks {
        out.extend_from_slice(c);
    }
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip_request(req: Request) {
        let mut buf = concat(&req.encode(7));
        let frame = split_frame(&mut buf, MAX_REQUEST_BODY_BYTES)
            .unwrap()
            .unwrap();
        assert!(buf.is_empty());
        assert_eq!(frame.header.request_id(), 7);
        assert_eq!(Request::decode(&frame.header, frame.body).unwrap(), req);
    }

    fn round_trip_response(resp: Response) {
        let mut buf = concat(&resp.encode(9));
        let frame = split_frame(&mut buf, MAX_RESPONSE_BODY_BYTES)
            .unwrap()
            .unwrap();
        let back = Response::decode(&frame.header, frame.body).unwrap();
        // Records arrive as one view however many chunks were sent.
        let normalise = |r: Response| match r {
            Response::Records(mut p) => {
                p.records = vec![concat(&p.records)]
                    .into_iter()
                    .filter(|b| !b.is_empty())
                    .collect();
                Response::Records(p)
            }
            Response::Fetch(mut f) => {
                for p in &mut f.partitions {
                    p.records = vec![concat(&p.records)]
                        .into_iter()
                        .filter(|b| !b.is_empty())
                        .collect();
                }
                Response::Fetch(f)
            }
            other => other,
        };
        assert_eq!(normalise(back), normalise(resp));
    }

    fn records() -> Bytes {
        Bytes::from((0..300u32).map(|i| i as u8).collect::<Vec<u8>>())
    }

    fn sample_produce() -> Request {
        Request::Produce(ProduceRequest {
            topic: "orders".into(),
            partition: 3,
            acks: Acks::All,
            records: vec![records()],
        })
    }

    fn sample_fetch() -> Request {
        Request::Fetch(FetchRequest {
            max_wait_ms: 500,
            min_bytes: 1,
            max_bytes: 1 << 20,
            partitions: vec![FetchPartition {
                topic: "a".into(),
                partition: 0,
                offset: 10,
                max_bytes: 4096,
            }],
        })
    }

    #[test]
    fn requests_round_trip() {
        round_trip_request(sample_produce());
        round_trip_request(sample_fetch());
        round_trip_request(Request::Subscribe(SubscribeRequest {
            topic: "a".into(),
            partition: 1,
            offset: LATEST,
            max_bytes: 1 << 20,
        }));
        round_trip_request(Request::ListOffsets(ListOffsetsRequest {
            partitions: vec![OffsetQuery {
                topic: "a".into(),
                partition: 0,
                timestamp: EARLIEST,
            }],
        }));
        round_trip_request(Request::InitProducerId(InitProducerIdRequest {
            producer_id: -1,
            producer_epoch: -1,
        }));
        round_trip_request(Request::CreateTopic(CreateTopicRequest {
            name: "t".into(),
            partitions: 4,
            configs: vec![("retention.ms".into(), "1000".into())],
        }));
        round_trip_request(Request::DeleteTopic { name: "t".into() });
        round_trip_request(Request::ListTopics);
        round_trip_request(Request::DescribeTopic { name: "t".into() });
        round_trip_request(Request::Route {
            topics: vec!["a".into(), "b".into()],
        });
        round_trip_request(Request::Route { topics: vec![] });
        round_trip_request(Request::ListGroups);
        round_trip_request(Request::DescribeGroup { group: "g".into() });
        round_trip_request(Request::CommitOffsets(CommitOffsetsRequest {
            group: "g".into(),
            offsets: vec![OffsetCommit {
                topic: "t".into(),
                partition: 0,
                offset: 5,
                metadata: "m".into(),
            }],
        }));
        round_trip_request(Request::FetchOffsets(FetchOffsetsRequest {
            group: "g".into(),
            partitions: vec![TopicPartition {
                topic: "t".into(),
                partition: 0,
            }],
        }));
    }

    #[test]
    fn responses_round_trip() {
        let pr = PartitionRecords {
            topic: "t".into(),
            partition: 2,
            error: ErrorCode::NONE,
            high_watermark: 10,
            log_start_offset: 0,
            records: vec![records(), records()],
        };
        round_trip_response(Response::Produce(ProduceResponse {
            base_offset: 1,
            last_offset: 5,
            log_start_offset: 0,
            duplicate: true,
        }));
        round_trip_response(Response::Fetch(FetchResponse {
            partitions: vec![pr.clone()],
        }));
        round_trip_response(Response::Records(pr));
        round_trip_response(Response::ListOffsets(ListOffsetsResponse {
            partitions: vec![PartitionOffset {
                topic: "t".into(),
                partition: 0,
                error: ErrorCode::NONE,
                offset: 3,
                timestamp: -1,
            }],
        }));
        let info = TopicInfo {
            name: "t".into(),
            topic_id: [7; 16],
            partitions: 3,
            internal: false,
        };
        round_trip_response(Response::CreateTopic(info.clone()));
        round_trip_response(Response::DeleteTopic);
        round_trip_response(Response::ListTopics(vec![info.clone()]));
        round_trip_response(Response::Route(RouteResponse {
            shard_count: 2,
            connection_shard: 1,
            topics: vec![
                TopicRoute {
                    topic: "a".into(),
                    error: ErrorCode::NONE,
                    shards: vec![1, 0, 1],
                },
                TopicRoute {
                    topic: "gone".into(),
                    error: ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
                    shards: vec![],
                },
            ],
        }));
        round_trip_response(Response::DescribeTopic(TopicDescription {
            info,
            configs: vec![("a".into(), "b".into())],
            partitions: vec![PartitionState {
                partition: 0,
                log_start_offset: 0,
                high_watermark: 9,
            }],
        }));
        round_trip_response(Response::CommitOffsets(vec![PartitionResult {
            topic: "t".into(),
            partition: 0,
            error: ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
        }]));
        round_trip_response(Response::FetchOffsets(vec![CommittedOffset {
            topic: "t".into(),
            partition: 0,
            offset: -1,
            metadata: String::new(),
            error: ErrorCode::NONE,
        }]));
        round_trip_response(Response::ListGroups(vec![GroupListing {
            group: "g".into(),
            state: "Empty".into(),
            protocol_type: String::new(),
        }]));
        round_trip_response(Response::DescribeGroup(GroupDescription {
            group: "g".into(),
            state: "Stable".into(),
            protocol_type: "consumer".into(),
            protocol: "range".into(),
            members: vec![GroupMember {
                member_id: "m-1".into(),
                client_id: "c".into(),
                client_host: "/127.0.0.1".into(),
            }],
        }));
        round_trip_response(Response::error(ErrorCode::INVALID_REQUEST, "nope"));
    }

    #[test]
    fn payloads_are_not_copied() {
        let big = Bytes::from(vec![1u8; 4096]);
        let chunks = Request::Produce(ProduceRequest {
            topic: "t".into(),
            partition: 0,
            acks: Acks::Leader,
            records: vec![big.clone()],
        })
        .encode(1);
        assert!(chunks.iter().any(|c| c.as_ptr() == big.as_ptr()));
    }

    /// `body` cut at `cuts` (ascending positions) into chunks, as a QUIC stream delivers it.
    fn cut(body: &Bytes, cuts: &[usize]) -> Vec<Bytes> {
        let mut out = Vec::new();
        let mut from = 0;
        for &c in cuts.iter().chain(std::iter::once(&body.len())) {
            out.push(body.slice(from..c));
            from = c;
        }
        out
    }

    #[test]
    fn chunked_bodies_decode_as_the_whole_and_records_are_not_copied() {
        let flat = |r: Request| match r {
            Request::Produce(mut p) => {
                p.records = vec![concat(&p.records)];
                Request::Produce(p)
            }
            other => other,
        };
        for req in [sample_produce(), sample_fetch()] {
            let mut buf = concat(&req.encode(7));
            let frame = split_frame(&mut buf, usize::MAX).unwrap().unwrap();
            let body = frame.body;
            let head = 2 + "orders".len() + 4 + 1;
            let mut cut_sets: Vec<Vec<usize>> = (0..=body.len()).map(|c| vec![c]).collect();
            cut_sets.push((1..body.len()).collect());
            cut_sets.push(vec![1, 1, 5, head, head + 1]);
            for cuts in &cut_sets {
                let chunks = cut(&body, cuts);
                let decoded = Request::decode_chunks(&frame.header, chunks.clone()).unwrap();
                assert_eq!(flat(decoded.request.clone()), req, "{cuts:?}");
                let Request::Produce(p) = decoded.request else {
                    continue;
                };
                // Records are views of the chunks they came in; only a head that spans
                // chunks is joined.
                let head_in_first = chunks.iter().find(|c| !c.is_empty()).unwrap().len() >= head;
                assert_eq!(decoded.bytes_copied, if head_in_first { 0 } else { head });
                for r in &p.records {
                    assert!(!r.is_empty());
                    let inside = |c: &Bytes| {
                        let (c0, r0) = (c.as_ptr() as usize, r.as_ptr() as usize);
                        r0 >= c0 && r0 + r.len() <= c0 + c.len()
                    };
                    assert!(
                        chunks.iter().any(inside),
                        "{cuts:?}: a record chunk was copied"
                    );
                }
            }
            // Every cut of a truncated body is an error, never a panic.
            for len in 0..body.len() {
                let short = body.slice(..len);
                let whole = Request::decode(&frame.header, short.clone());
                let single_bytes = cut(&short, &(1..len).collect::<Vec<_>>());
                let chunked = Request::decode_chunks(&frame.header, single_bytes);
                assert!(whole.is_err() || matches!(req, Request::Produce(_)));
                assert_eq!(chunked.map(|d| flat(d.request)), whole.map(flat), "{len}");
            }
        }
    }

    #[test]
    fn every_truncation_is_an_error_never_a_panic() {
        let req = Request::CommitOffsets(CommitOffsetsRequest {
            group: "group".into(),
            offsets: vec![OffsetCommit {
                topic: "t".into(),
                partition: 0,
                offset: 5,
                metadata: "meta".into(),
            }],
        });
        let full = concat(&req.encode(1));
        let header = FrameHeader::decode(&full, usize::MAX).unwrap().unwrap();
        for cut in HEADER_BYTES..full.len() {
            let body = full.slice(HEADER_BYTES..cut);
            assert!(Request::decode(&header, body).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn every_truncation_of_a_route_answer_is_an_error() {
        let resp = Response::Route(RouteResponse {
            shard_count: 2,
            connection_shard: 0,
            topics: vec![TopicRoute {
                topic: "t".into(),
                error: ErrorCode::NONE,
                shards: vec![0, 1, 0, 1],
            }],
        });
        let full = concat(&resp.encode(1));
        let header = FrameHeader::decode(&full, usize::MAX).unwrap().unwrap();
        assert_eq!(
            Response::decode(&header, full.slice(HEADER_BYTES..)).unwrap(),
            resp
        );
        for cut in HEADER_BYTES..full.len() {
            let body = full.slice(HEADER_BYTES..cut);
            assert!(Response::decode(&header, body).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn forged_counts_do_not_allocate() {
        let mut w = Writer::default();
        w.string("g");
        w.u32(u32::MAX);
        let body = concat(&w.into_chunks());
        let header = FrameHeader::new(FrameType::FetchOffsets, 1, body.len());
        assert!(matches!(
            Request::decode(&header, body),
            Err(FrameError::TooMany { .. })
        ));
        let mut w = Writer::default();
        w.string("g");
        w.u32(9_999);
        let body = concat(&w.into_chunks());
        let header = FrameHeader::new(FrameType::FetchOffsets, 1, body.len());
        assert!(matches!(
            Request::decode(&header, body),
            Err(FrameError::Short { .. })
        ));
    }

    #[test]
    fn bad_acks_is_typed() {
        let mut chunks = Request::Produce(ProduceRequest {
            topic: "t".into(),
            partition: 0,
            acks: Acks::Leader,
            records: Vec::new(),
        })
        .encode(1);
        let mut buf = concat(&std::mem::take(&mut chunks)).to_vec();
        let at = HEADER_BYTES + 2 + 1 + 4;
        buf[at] = 5;
        let mut b = Bytes::from(buf);
        let f = split_frame(&mut b, 1 << 20).unwrap().unwrap();
        let e = Request::decode(&f.header, f.body).unwrap_err();
        assert_eq!(e.code(), ErrorCode::INVALID_REQUIRED_ACKS);
    }
}
