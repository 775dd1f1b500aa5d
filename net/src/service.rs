//! The protocol-neutral broker service: append, read with long polling, list offsets,
//! topic admin, producer ids and group offsets, with no knowledge of any wire format.
//! The Kafka handlers and the QUIC server are both adapters over it.
//!
//! Two layers:
//! - [`local`]: async functions that run **on a shard** (they use the thread's
//!   [`shard()`] state and its `ShardContext` for further hops). The Kafka handlers, which
//!   already run on a shard, call these directly.
//! - [`Service`]: a router, generic over [`ShardAccess`], that sends each call to the
//!   right shard first: the partition's owner for data-path calls, the controller (shard
//!   0) for admin, and lets `local` do the rest. `Service<ShardContext>` is used from a
//!   shard (both front ends run there); `Service<ExternalHandle>` from any other thread
//!   (tests; no broker thread needs it since QUIC moved onto the shards). Everything a
//!   `Service<ExternalHandle>` returns is `Send`.
//!
//! Invariants: a partition's log is only touched on its owner shard; record bytes are
//! never copied here (appends pass the caller's `Bytes`, one buffer or the chunks a QUIC
//! stream delivered, to the engine, which copies once into its staging buffer; reads return the engine's own buffers as `Bytes` views);
//! waits (long polling, commit acknowledgement) never block a reactor.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::error::ResponseError as E;
use quiver_engine::catalog::{TopicMeta, SUPPORTED_CONFIGS};
use quiver_engine::log::{AckLevel, AppendOutcome, AppendTicket};
use quiver_engine::runtime::{shard_for, ExternalHandle, ShardContext};
use quiver_engine::types::ShardId;
use quiver_engine::EngineError;
pub use quiver_protocol::Acks;

use crate::kafka::broker::{partition_log, shard, TopicLogs, OFFSETS_TOPIC};
use crate::kafka::errors::error_code;

/// A way to run a closure on a given shard: from a shard ([`ShardContext`]) or from any
/// other thread ([`ExternalHandle`]).
pub trait ShardAccess: Clone + 'static {
    fn shard_count(&self) -> usize;

    fn run_on<R, F, Fut>(
        &self,
        shard: ShardId,
        f: F,
    ) -> impl Future<Output = quiver_engine::Result<R>>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = R> + 'static,
        R: Send + 'static;
}

impl ShardAccess for ShardContext {
    fn shard_count(&self) -> usize {
        self.count()
    }

    fn run_on<R, F, Fut>(
        &self,
        shard: ShardId,
        f: F,
    ) -> impl Future<Output = quiver_engine::Result<R>>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = R> + 'static,
        R: Send + 'static,
    {
        ShardContext::run_on(self, shard, f)
    }
}

impl ShardAccess for ExternalHandle {
    fn shard_count(&self) -> usize {
        ExternalHandle::shard_count(self)
    }

    fn run_on<R, F, Fut>(
        &self,
        shard: ShardId,
        f: F,
    ) -> impl Future<Output = quiver_engine::Result<R>>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = R> + 'static,
        R: Send + 'static,
    {
        ExternalHandle::run_on(self, shard, f)
    }
}

/// Why a service call failed. [`ServiceError::code`] gives the Kafka error code, the
/// same number both front ends report.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("{message}")]
    Rejected { code: i16, message: String },
}

impl ServiceError {
    pub fn code(&self) -> i16 {
        match self {
            ServiceError::Engine(e) => error_code(e),
            ServiceError::Rejected { code, .. } => *code,
        }
    }

    pub(crate) fn rejected(code: E, message: impl Into<String>) -> ServiceError {
        ServiceError::Rejected {
            code: code.code(),
            message: message.into(),
        }
    }

    fn unknown_partition(topic: &str, partition: i32) -> ServiceError {
        ServiceError::Engine(EngineError::UnknownTopicOrPartition(format!(
            "{topic}-{partition}"
        )))
    }
}

pub type ServiceResult<T> = Result<T, ServiceError>;

/// One partition to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadPartition {
    /// Shared by the partitions of one topic in a read (a fetch names hundreds).
    pub topic: Arc<str>,
    pub partition: i32,
    pub offset: i64,
    /// At least one whole batch is returned even when it is larger (KIP-74).
    pub max_bytes: usize,
}

/// A read over several partitions with long polling.
#[derive(Debug, Clone)]
pub struct ReadRequest {
    pub partitions: Vec<ReadPartition>,
    /// Return as soon as this many record bytes are available over all partitions.
    pub min_bytes: usize,
    /// Or when this much time has passed.
    pub max_wait: Duration,
}

/// What a read found in one partition.
#[derive(Debug, Clone, Default)]
pub struct PartitionData {
    /// Whole batches, as views of the engine's buffers (no copy).
    pub chunks: Vec<Bytes>,
    pub high_watermark: i64,
    pub log_start_offset: i64,
    /// The offset after the last record returned (None when nothing was returned).
    pub next_offset: Option<i64>,
}

impl PartitionData {
    pub fn len(&self) -> usize {
        self.chunks.iter().map(|c| c.len()).sum()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A committed offset of a group, or why there is none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupOffset {
    pub topic: String,
    pub partition: i32,
    /// -1 when nothing is committed.
    pub offset: i64,
    pub metadata: String,
    pub error_code: i16,
}

/// A consumer group as the coordinator reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSummary {
    pub group: String,
    pub state: String,
    pub protocol_type: String,
}

/// A consumer group's state and members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDetail {
    pub group: String,
    pub state: String,
    pub protocol_type: String,
    pub protocol: String,
    /// (member id, client id, client host).
    pub members: Vec<(String, String, String)>,
}

/// A topic with the state of each partition.
#[derive(Debug, Clone)]
pub struct TopicDescription {
    pub meta: Arc<TopicMeta>,
    /// Every supported config and its effective value.
    pub configs: Vec<(String, String)>,
    /// (partition, log start offset, high watermark).
    pub partitions: Vec<(i32, i64, i64)>,
}

/// The service as seen from a shard or from outside; cheap to clone.
#[derive(Clone)]
pub struct Service<A: ShardAccess> {
    access: A,
}

/// The controller shard: topic metadata has one writer.
const CONTROLLER: ShardId = ShardId(0);

/// What the log is told a producer with `acks` will wait for.
pub fn ack_level(acks: Acks) -> AckLevel {
    match acks {
        Acks::None => AckLevel::None,
        Acks::Leader => AckLevel::Written,
        Acks::All => AckLevel::Committed,
    }
}

impl<A: ShardAccess> Service<A> {
    pub fn new(access: A) -> Self {
        Service { access }
    }

    pub fn owner_of(&self, topic: &str, partition: i32) -> ShardId {
        shard_for(topic, partition, self.access.shard_count())
    }

    /// Shards (cores) the broker runs.
    pub fn shard_count(&self) -> usize {
        self.access.shard_count()
    }

    /// Appends RecordBatch v2 bytes, as chunks split anywhere, to a partition and returns
    /// once offsets are assigned; the ticket resolves when the append is committed (await
    /// it from any thread, or drop it for acks=0). Appends issued one after another on the
    /// same partition are stored in that order.
    pub async fn append_start(
        &self,
        topic: String,
        partition: i32,
        records: Vec<Bytes>,
        acks: Acks,
    ) -> ServiceResult<AppendTicket> {
        let owner = self.owner_of(&topic, partition);
        self.access
            .run_on(owner, move || async move {
                local::append(&topic, partition, &records, ack_level(acks)).await
            })
            .await?
    }

    /// Appends and waits as `acks` asks.
    pub async fn append(
        &self,
        topic: String,
        partition: i32,
        records: Vec<Bytes>,
        acks: Acks,
    ) -> ServiceResult<AppendOutcome> {
        let ticket = self.append_start(topic, partition, records, acks).await?;
        match acks {
            Acks::None => Ok(ticket.outcome()),
            // acks=1: the bytes are in the kernel (page cache or the direct-I/O write
            // done), so they survive a broker crash;
            // acks=all: the durability policy (fdatasync by default).
            Acks::Leader => Ok(ticket.written().await?),
            Acks::All => Ok(ticket.committed().await?),
        }
    }

    /// Reads with long polling. Results are in request order. The wait runs on the
    /// owner of the first partition (its timers and watermark watches are shard-local).
    pub async fn read(&self, request: ReadRequest) -> Vec<ServiceResult<PartitionData>> {
        let home = request
            .partitions
            .first()
            .map(|p| self.owner_of(&p.topic, p.partition))
            .unwrap_or(CONTROLLER);
        let n = request.partitions.len();
        match self
            .access
            .run_on(home, move || async move { local::read(request).await })
            .await
        {
            Ok(v) => v,
            Err(e) => (0..n)
                .map(|_| Err(ServiceError::Engine(EngineError::ShardGone)))
                .inspect(|_| tracing::error!(error = %e, "read hop failed"))
                .collect(),
        }
    }

    /// Offset lookups: [`local::EARLIEST`], [`local::LATEST`], [`local::MAX_TIMESTAMP`] or
    /// a timestamp in ms. `Ok(None)`: no record at or after the timestamp.
    pub async fn list_offset(
        &self,
        topic: String,
        partition: i32,
        timestamp: i64,
    ) -> ServiceResult<Option<(i64, i64)>> {
        let owner = self.owner_of(&topic, partition);
        self.access
            .run_on(owner, move || async move {
                local::list_offset(&topic, partition, timestamp).await
            })
            .await?
    }

    pub async fn create_topic(
        &self,
        name: String,
        partitions: i32,
        configs: Vec<(String, String)>,
    ) -> ServiceResult<Arc<TopicMeta>> {
        self.access
            .run_on(CONTROLLER, move || async move {
                local::create_topic(&name, partitions, configs).await
            })
            .await?
    }

    pub async fn delete_topic(&self, name: String) -> ServiceResult<()> {
        self.access
            .run_on(CONTROLLER, move || async move {
                local::delete_topic(&name).await
            })
            .await?
    }

    pub async fn list_topics(&self) -> ServiceResult<Vec<Arc<TopicMeta>>> {
        Ok(self
            .access
            .run_on(CONTROLLER, || async { shard().topics() })
            .await?)
    }

    pub async fn describe_topic(&self, name: String) -> ServiceResult<TopicDescription> {
        self.access
            .run_on(CONTROLLER, move || async move {
                local::describe_topic(&name).await
            })
            .await?
    }

    /// A producer id and epoch for an idempotent producer; `(-1, -1)` for a new one, or
    /// a known pair to bump the epoch (KIP-360).
    pub async fn init_producer_id(
        &self,
        producer_id: i64,
        producer_epoch: i16,
    ) -> ServiceResult<(i64, i16)> {
        self.access
            .run_on(CONTROLLER, move || async move {
                local::init_producer_id(producer_id, producer_epoch).await
            })
            .await?
    }

    /// Standalone ("simple consumer") offset commits through the group coordinator:
    /// generation -1, no member id. Returns one error code per offset, in order.
    pub async fn commit_offsets(
        &self,
        group: String,
        offsets: Vec<(String, i32, i64, String)>,
    ) -> ServiceResult<Vec<i16>> {
        self.access
            .run_on(CONTROLLER, move || async move {
                local::commit_offsets(&group, offsets).await
            })
            .await?
    }

    /// Committed offsets of a group: of the given partitions, or of all when `None`.
    pub async fn fetch_offsets(
        &self,
        group: String,
        partitions: Option<Vec<(String, i32)>>,
    ) -> ServiceResult<Vec<GroupOffset>> {
        self.access
            .run_on(CONTROLLER, move || async move {
                local::fetch_offsets(&group, partitions).await
            })
            .await?
    }
}

impl<A: ShardAccess> Service<A> {
    /// Every group known to any shard's coordinator.
    pub async fn list_groups(&self) -> ServiceResult<Vec<GroupSummary>> {
        self.access
            .run_on(CONTROLLER, || async { local::list_groups().await })
            .await?
    }

    pub async fn describe_group(&self, group: String) -> ServiceResult<GroupDetail> {
        self.access
            .run_on(CONTROLLER, move || async move {
                local::describe_group(&group).await
            })
            .await?
    }
}

/// The offset after the last record in `chunks` (whole RecordBatch v2 batches that may
/// straddle chunk boundaries), or None if there is no complete batch header.
pub fn next_offset_after(chunks: &[Bytes]) -> Option<i64> {
    // Fields needed: baseOffset (0..8), batchLength (8..12), lastOffsetDelta (23..27).
    const NEEDED: usize = 27;
    let total: usize = chunks.iter().map(|c| c.len()).sum();
    let read_at = |pos: usize, out: &mut [u8; NEEDED]| -> bool {
        if pos + NEEDED > total {
            return false;
        }
        let mut skip = pos;
        let mut filled = 0;
        for c in chunks {
            if skip >= c.len() {
                skip -= c.len();
                continue;
            }
            let take = (c.len() - skip).min(NEEDED - filled);
            out[filled..filled + take].copy_from_slice(&c[skip..skip + take]);
            filled += take;
            skip = 0;
            if filled == NEEDED {
                return true;
            }
        }
        false
    };
    let mut pos = 0usize;
    let mut next = None;
    let mut header = [0u8; NEEDED];
    while read_at(pos, &mut header) {
        let base = i64::from_be_bytes(header[0..8].try_into().ok()?);
        let batch_len = i32::from_be_bytes(header[8..12].try_into().ok()?);
        let delta = i32::from_be_bytes(header[23..27].try_into().ok()?);
        if batch_len < 0 {
            break;
        }
        next = Some(base + delta as i64 + 1);
        pos += 12 + batch_len as usize;
    }
    next
}

/// The service's work on a shard. Each function must run on a broker shard.
pub mod local {
    use std::collections::BTreeMap;
    use std::time::Instant;

    use kafka_protocol::messages::offset_commit_request::{
        OffsetCommitRequestPartition, OffsetCommitRequestTopic,
    };
    use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
    use kafka_protocol::messages::{
        GroupId, OffsetCommitRequest, OffsetFetchRequest, RequestKind, ResponseKind, TopicName,
    };
    use kafka_protocol::protocol::StrBytes;
    use quiver_engine::sync::signal::{self, Signal, Waiter};
    use quiver_engine::types::{LeaderEpoch, Offset};

    use super::*;
    use crate::kafka::groups::{self, RequestContext};

    pub const EARLIEST: i64 = -2;
    pub const LATEST: i64 = -1;
    pub const MAX_TIMESTAMP: i64 = -3;

    /// Appends to a partition this shard owns: `records` is one buffer (Kafka) or the
    /// chunks a QUIC stream delivered, copied once, into the log's staging buffer.
    pub async fn append<C: AsRef<[u8]>>(
        topic: &str,
        partition: i32,
        records: &[C],
        ack: AckLevel,
    ) -> ServiceResult<AppendTicket> {
        let log = shard()
            .local_log(topic, partition)
            .ok_or_else(|| ServiceError::unknown_partition(topic, partition))?;
        Ok(log.append_chunks_for(records, LeaderEpoch(0), ack).await?)
    }

    /// One read pass over partitions this shard owns: what each partition holds, and
    /// when asked to watch, one waiter that any of the partitions that had nothing
    /// fires when its high watermark moves.
    pub struct ReadOnce {
        pub results: Vec<ServiceResult<PartitionData>>,
        pub waiter: Option<Waiter>,
    }

    /// Reads partitions this shard owns, once, without waiting.
    pub async fn read_owned(wanted: &[ReadPartition], watch: bool) -> ReadOnce {
        let s = shard();
        let mut results = Vec::with_capacity(wanted.len());
        let mut watching: Option<(Signal, Waiter)> = None;
        // A read names many partitions of few topics: resolve each run of a topic once.
        let mut topic: Option<(&str, Option<TopicLogs>)> = None;
        for w in wanted {
            let logs = match &topic {
                Some((name, logs)) if *name == &*w.topic => logs,
                _ => &topic.insert((&w.topic, s.local_topic_logs(&w.topic))).1,
            };
            let Some(log) = logs.as_ref().and_then(|l| partition_log(l, w.partition)) else {
                results.push(Err(ServiceError::unknown_partition(&w.topic, w.partition)));
                continue;
            };
            let result = log.read(Offset(w.offset), w.max_bytes).await;
            if let Ok(r) = &result {
                if watch && r.chunks.is_empty() {
                    let (signal, _) = watching.get_or_insert_with(signal::signal);
                    log.watch_high_watermark(Offset(w.offset), signal);
                }
            }
            results.push(result.map_err(ServiceError::from).map(|r| PartitionData {
                next_offset: next_offset_after(&r.chunks),
                chunks: r.chunks,
                high_watermark: r.high_watermark.0,
                log_start_offset: r.log_start_offset.0,
            }));
        }
        ReadOnce {
            results,
            waiter: watching.map(|(_, waiter)| waiter),
        }
    }

    /// A read's partitions grouped by owning shard once, shared by every pass of a long
    /// poll: a pass hands each shard its list without copying it.
    struct ByOwner {
        /// (owner, each partition's place in the request, the partitions)
        groups: Vec<(ShardId, Vec<usize>, Arc<Vec<ReadPartition>>)>,
        len: usize,
    }

    fn group_by_owner(wanted: Vec<ReadPartition>) -> ByOwner {
        let me = shard();
        let len = wanted.len();
        let mut by_owner: BTreeMap<ShardId, (Vec<usize>, Vec<ReadPartition>)> = BTreeMap::new();
        for (i, w) in wanted.into_iter().enumerate() {
            let group = by_owner
                .entry(me.owner_of(&w.topic, w.partition))
                .or_default();
            group.0.push(i);
            group.1.push(w);
        }
        ByOwner {
            groups: by_owner
                .into_iter()
                .map(|(owner, (indexes, parts))| (owner, indexes, Arc::new(parts)))
                .collect(),
            len,
        }
    }

    /// Reads every partition on its owner, concurrently across shards, in request order,
    /// with the waiters of the shards that watch.
    async fn read_everywhere(
        wanted: &ByOwner,
        watch: bool,
    ) -> (Vec<ServiceResult<PartitionData>>, Vec<Waiter>) {
        let me = shard();
        let hops = wanted.groups.iter().map(|(owner, indexes, parts)| {
            let parts = Arc::clone(parts);
            let hop = me.ctx.run_on(
                *owner,
                move || async move { read_owned(&parts, watch).await },
            );
            async move { (indexes, hop.await) }
        });
        let mut slots: Vec<Option<ServiceResult<PartitionData>>> =
            (0..wanted.len).map(|_| None).collect();
        let mut waiters = Vec::new();
        for (indexes, hop) in futures::future::join_all(hops).await {
            match hop {
                Ok(once) => {
                    for (&i, r) in indexes.iter().zip(once.results) {
                        slots[i] = Some(r);
                    }
                    waiters.extend(once.waiter);
                }
                Err(e) => tracing::error!(error = %e, "read hop failed"),
            }
        }
        let results = slots
            .into_iter()
            .map(|s| s.unwrap_or(Err(ServiceError::Engine(EngineError::ShardGone))))
            .collect();
        (results, waiters)
    }

    /// Reads with long polling: returns once `min_bytes` are available over all
    /// partitions, a partition fails, or `max_wait` has passed (then with whatever is
    /// there). Wakes on the first partition whose high watermark moves.
    pub async fn read(request: ReadRequest) -> Vec<ServiceResult<PartitionData>> {
        let start = Instant::now();
        let empty = request.partitions.is_empty();
        let wanted = group_by_owner(request.partitions);
        loop {
            let remaining = request.max_wait.saturating_sub(start.elapsed());
            let may_wait = !remaining.is_zero() && request.min_bytes > 0;
            let (got, waiters) = read_everywhere(&wanted, may_wait).await;
            let total: usize = got
                .iter()
                .filter_map(|g| g.as_ref().ok())
                .map(|d| d.len())
                .sum();
            let any_error = got.iter().any(|g| g.is_err());
            if total >= request.min_bytes.max(1) || any_error || !may_wait || empty {
                return got;
            }
            if waiters.is_empty() {
                glommio::timer::sleep(remaining).await;
            } else {
                let any = futures::future::select_all(waiters);
                let timeout = glommio::timer::sleep(remaining);
                futures::pin_mut!(timeout);
                let _ = futures::future::select(any, timeout).await;
            }
            if start.elapsed() >= request.max_wait {
                // One last read so data that arrived exactly at the deadline is returned.
                return read_everywhere(&wanted, false).await.0;
            }
        }
    }

    /// Larger batches are answered at batch granularity instead of decoded.
    const MAX_RECORDS_DECODED_FOR_TIMESTAMP: i32 = 100_000;

    /// The exact record inside a batch: the first whose timestamp is at or after
    /// `target` (or, for max-timestamp, equal to it). Decodes compressed batches too; if
    /// decoding fails the batch's base offset is the answer (still a valid lower bound).
    fn record_at_or_after(
        base: i64,
        max_ts: i64,
        batch: Bytes,
        target: i64,
        exact: bool,
    ) -> (i64, i64) {
        // kafka-protocol's record decoder reserves memory from the record count in the
        // header, and a compressed batch's count is not checked on produce: bound it.
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

    /// An offset lookup on a partition this shard owns: `(offset, timestamp)`, with
    /// timestamp -1 for EARLIEST/LATEST; `None` when no record is at or after `timestamp`.
    pub async fn list_offset(
        topic: &str,
        partition: i32,
        timestamp: i64,
    ) -> ServiceResult<Option<(i64, i64)>> {
        let log = shard()
            .local_log(topic, partition)
            .ok_or_else(|| ServiceError::unknown_partition(topic, partition))?;
        Ok(match timestamp {
            EARLIEST => Some((log.log_start_offset().0, -1)),
            LATEST => Some((log.high_watermark().0, -1)),
            MAX_TIMESTAMP => {
                let ts = log.max_timestamp();
                log.batch_for_timestamp(ts)
                    .await?
                    .map(|(o, t, b)| record_at_or_after(o.0, t, b, ts, true))
            }
            ts => log
                .batch_for_timestamp(ts)
                .await?
                .map(|(o, t, b)| record_at_or_after(o.0, t, b, ts, false)),
        })
    }

    /// Creates a topic; `partitions` -1 means the broker default.
    pub async fn create_topic(
        name: &str,
        partitions: i32,
        configs: Vec<(String, String)>,
    ) -> ServiceResult<Arc<TopicMeta>> {
        let me = shard();
        let partitions = if partitions == -1 {
            me.config.default_partitions
        } else {
            partitions
        };
        if partitions < 1 {
            return Err(ServiceError::rejected(
                E::InvalidPartitions,
                format!("{partitions} partitions"),
            ));
        }
        let configs: BTreeMap<String, String> = configs.into_iter().collect();
        let meta = TopicMeta::new(name, partitions, configs)?;
        if me.topic(name).is_some() {
            return Err(EngineError::TopicAlreadyExists(name.to_string()).into());
        }
        Ok(me.create_topic(meta).await?)
    }

    pub async fn delete_topic(name: &str) -> ServiceResult<()> {
        if name == OFFSETS_TOPIC {
            return Err(ServiceError::rejected(
                E::TopicAuthorizationFailed,
                "internal topics cannot be deleted",
            ));
        }
        let me = shard();
        if me.topic(name).is_none() {
            return Err(EngineError::UnknownTopicOrPartition(name.to_string()).into());
        }
        Ok(me.delete_topic(name.to_string()).await?)
    }

    pub async fn describe_topic(name: &str) -> ServiceResult<TopicDescription> {
        let me = shard();
        let meta = me
            .topic(name)
            .ok_or_else(|| EngineError::UnknownTopicOrPartition(name.to_string()))?;
        let defaults = &me.config.log_defaults;
        let configs = SUPPORTED_CONFIGS
            .iter()
            .filter_map(|k| meta.config_value(k, defaults).map(|v| (k.to_string(), v)))
            .collect();
        let mut partitions = Vec::with_capacity(meta.partitions as usize);
        for p in 0..meta.partitions {
            let topic = meta.name.clone();
            let offsets = me
                .ctx
                .run_on(me.owner_of(&meta.name, p), move || async move {
                    shard()
                        .local_log(&topic, p)
                        .map(|l| (l.log_start_offset().0, l.high_watermark().0))
                })
                .await?
                .unwrap_or((-1, -1));
            partitions.push((p, offsets.0, offsets.1));
        }
        Ok(TopicDescription {
            meta,
            configs,
            partitions,
        })
    }

    /// See [`Service::init_producer_id`]. Ids come from the controller shard so they are
    /// unique broker-wide.
    pub async fn init_producer_id(
        producer_id: i64,
        producer_epoch: i16,
    ) -> ServiceResult<(i64, i16)> {
        if producer_id >= 0 && producer_epoch >= 0 {
            if producer_epoch >= i16::MAX - 1 {
                return Err(ServiceError::rejected(
                    E::InvalidProducerEpoch,
                    "producer epoch exhausted; start a new producer",
                ));
            }
            return Ok((producer_id, producer_epoch + 1));
        }
        let me = shard();
        let id = me
            .ctx
            .run_on(CONTROLLER, || async { shard().allocate_producer_id() })
            .await?;
        Ok((id, 0))
    }

    /// Offset-commit and offset-fetch requests go to the group coordinator as Kafka
    /// requests of this version (the adapter is Kafka-shaped; the coordinator is shared).
    const OFFSET_COMMIT_VERSION: i16 = 8;
    const OFFSET_FETCH_VERSION: i16 = 7;

    pub async fn commit_offsets(
        group: &str,
        offsets: Vec<(String, i32, i64, String)>,
    ) -> ServiceResult<Vec<i16>> {
        // Kafka groups partitions by topic; keep the caller's order to map codes back.
        let mut topics: Vec<OffsetCommitRequestTopic> = Vec::new();
        let mut order = Vec::with_capacity(offsets.len());
        for (topic, partition, offset, metadata) in &offsets {
            let ti = match topics.iter().position(|t| t.name.0.as_str() == topic) {
                Some(i) => i,
                None => {
                    topics.push(
                        OffsetCommitRequestTopic::default()
                            .with_name(TopicName(StrBytes::from_string(topic.clone()))),
                    );
                    topics.len() - 1
                }
            };
            topics[ti].partitions.push(
                OffsetCommitRequestPartition::default()
                    .with_partition_index(*partition)
                    .with_committed_offset(*offset)
                    .with_committed_leader_epoch(-1)
                    .with_committed_metadata(Some(StrBytes::from_string(metadata.clone()))),
            );
            order.push((topic.clone(), *partition));
        }
        let request = OffsetCommitRequest::default()
            .with_group_id(GroupId(StrBytes::from_string(group.to_string())))
            .with_generation_id_or_member_epoch(-1)
            .with_member_id(StrBytes::from_static_str(""))
            .with_topics(topics);
        let response = groups::dispatch(
            RequestKind::OffsetCommit(request),
            OFFSET_COMMIT_VERSION,
            &RequestContext::default(),
        )
        .await;
        let Some(ResponseKind::OffsetCommit(response)) = response else {
            return Err(ServiceError::rejected(
                E::CoordinatorNotAvailable,
                "group coordinator did not answer",
            ));
        };
        let mut codes: BTreeMap<(String, i32), i16> = BTreeMap::new();
        for t in &response.topics {
            for p in &t.partitions {
                codes.insert((t.name.0.to_string(), p.partition_index), p.error_code);
            }
        }
        Ok(order
            .into_iter()
            .map(|k| {
                codes
                    .get(&k)
                    .copied()
                    .unwrap_or(E::CoordinatorNotAvailable.code())
            })
            .collect())
    }

    const LIST_GROUPS_VERSION: i16 = 4;
    const DESCRIBE_GROUPS_VERSION: i16 = 5;

    pub async fn list_groups() -> ServiceResult<Vec<GroupSummary>> {
        let response = groups::dispatch(
            RequestKind::ListGroups(kafka_protocol::messages::ListGroupsRequest::default()),
            LIST_GROUPS_VERSION,
            &RequestContext::default(),
        )
        .await;
        let Some(ResponseKind::ListGroups(response)) = response else {
            return Err(ServiceError::rejected(
                E::CoordinatorNotAvailable,
                "group coordinator did not answer",
            ));
        };
        if response.error_code != 0 {
            return Err(ServiceError::Rejected {
                code: response.error_code,
                message: "listing groups failed".into(),
            });
        }
        let mut out: Vec<GroupSummary> = response
            .groups
            .iter()
            .map(|g| GroupSummary {
                group: g.group_id.to_string(),
                state: g.group_state.to_string(),
                protocol_type: g.protocol_type.to_string(),
            })
            .collect();
        out.sort_by(|a, b| a.group.cmp(&b.group));
        Ok(out)
    }

    pub async fn describe_group(group: &str) -> ServiceResult<GroupDetail> {
        let request = kafka_protocol::messages::DescribeGroupsRequest::default()
            .with_groups(vec![GroupId(StrBytes::from_string(group.to_string()))]);
        let response = groups::dispatch(
            RequestKind::DescribeGroups(request),
            DESCRIBE_GROUPS_VERSION,
            &RequestContext::default(),
        )
        .await;
        let Some(ResponseKind::DescribeGroups(response)) = response else {
            return Err(ServiceError::rejected(
                E::CoordinatorNotAvailable,
                "group coordinator did not answer",
            ));
        };
        let Some(g) = response.groups.into_iter().next() else {
            return Err(ServiceError::rejected(
                E::CoordinatorNotAvailable,
                "group coordinator did not answer",
            ));
        };
        if g.error_code != 0 {
            return Err(ServiceError::Rejected {
                code: g.error_code,
                message: format!("describing group {group} failed"),
            });
        }
        Ok(GroupDetail {
            group: g.group_id.to_string(),
            state: g.group_state.to_string(),
            protocol_type: g.protocol_type.to_string(),
            protocol: g.protocol_data.to_string(),
            members: g
                .members
                .iter()
                .map(|m| {
                    (
                        m.member_id.to_string(),
                        m.client_id.to_string(),
                        m.client_host.to_string(),
                    )
                })
                .collect(),
        })
    }

    pub async fn fetch_offsets(
        group: &str,
        partitions: Option<Vec<(String, i32)>>,
    ) -> ServiceResult<Vec<GroupOffset>> {
        let topics = partitions.map(|ps| {
            let mut topics: Vec<OffsetFetchRequestTopic> = Vec::new();
            for (topic, partition) in ps {
                match topics.iter_mut().find(|t| t.name.0.as_str() == topic) {
                    Some(t) => t.partition_indexes.push(partition),
                    None => topics.push(
                        OffsetFetchRequestTopic::default()
                            .with_name(TopicName(StrBytes::from_string(topic)))
                            .with_partition_indexes(vec![partition]),
                    ),
                }
            }
            topics
        });
        let request = OffsetFetchRequest::default()
            .with_group_id(GroupId(StrBytes::from_string(group.to_string())))
            .with_topics(topics);
        let response = groups::dispatch(
            RequestKind::OffsetFetch(request),
            OFFSET_FETCH_VERSION,
            &RequestContext::default(),
        )
        .await;
        let Some(ResponseKind::OffsetFetch(response)) = response else {
            return Err(ServiceError::rejected(
                E::CoordinatorNotAvailable,
                "group coordinator did not answer",
            ));
        };
        if response.error_code != 0 {
            return Err(ServiceError::Rejected {
                code: response.error_code,
                message: format!("offset fetch for group {group} failed"),
            });
        }
        Ok(response
            .topics
            .iter()
            .flat_map(|t| {
                t.partitions.iter().map(move |p| GroupOffset {
                    topic: t.name.0.to_string(),
                    partition: p.partition_index,
                    offset: p.committed_offset,
                    metadata: p
                        .metadata
                        .as_ref()
                        .map(|m| m.to_string())
                        .unwrap_or_default(),
                    error_code: p.error_code,
                })
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quiver_engine::batch::build;

    #[test]
    fn next_offset_walks_batches_across_chunks() {
        let mut a = build::batch_kv(&[(None, Some(b"x")), (None, Some(b"y"))], 0, -1, -1, -1);
        // Base offset 10, two records: next is 12.
        a[0..8].copy_from_slice(&10i64.to_be_bytes());
        let mut b = build::batch_kv(&[(None, Some(b"z"))], 0, -1, -1, -1);
        b[0..8].copy_from_slice(&12i64.to_be_bytes());
        let mut all = a.clone();
        all.extend_from_slice(&b);
        assert_eq!(next_offset_after(&[Bytes::from(all.clone())]), Some(13));
        // Split at every position: the answer does not change.
        for cut in 1..all.len() {
            let chunks = [
                Bytes::copy_from_slice(&all[..cut]),
                Bytes::copy_from_slice(&all[cut..]),
            ];
            assert_eq!(next_offset_after(&chunks), Some(13), "cut {cut}");
        }
        assert_eq!(next_offset_after(&[]), None);
        assert_eq!(next_offset_after(&[Bytes::from(a[..20].to_vec())]), None);
    }

    fn assert_send<T: Send>(_: &T) {}

    #[allow(dead_code)]
    fn external_service_futures_are_send(s: Service<ExternalHandle>) {
        assert_send(&s.append("t".into(), 0, vec![Bytes::new()], Acks::All));
        assert_send(&s.read(ReadRequest {
            partitions: vec![],
            min_bytes: 1,
            max_wait: Duration::ZERO,
        }));
        assert_send(&s.list_topics());
        assert_send(&s.commit_offsets("g".into(), vec![]));
    }
}
