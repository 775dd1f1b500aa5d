//! Per-shard broker state: the local replica of the topic catalog and the partition logs
//! this shard owns, plus topic administration coordinated by the controller shard.
//!
//! Invariants: shard 0 is the controller: it alone writes the catalog, then installs the
//! change on every shard (itself included) before answering. A partition log is opened
//! only on the shard given by `runtime::shard_for`; every other shard reaches it through
//! `ShardContext::run_on`. No state here is shared between threads.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use quiver_engine::catalog::{self, TopicMeta};
use quiver_engine::log::{LogConfig, PartitionLog};
use quiver_engine::runtime::{shard_for, ShardContext};
use quiver_engine::types::ShardId;
use quiver_engine::{EngineError, Result};
use rustc_hash::FxHashMap;

/// Name of the internal topic holding committed consumer offsets.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";
/// Default `segment.bytes` of the offsets topic. Kafka uses 100 MiB; commits are ~100-byte
/// records, so 16 MiB seals (and so compacts) sooner while keeping segments few.
pub const OFFSETS_TOPIC_SEGMENT_BYTES: u64 = 16 * 1024 * 1024;

/// Everything `quiver serve` was configured with. Read-only after start.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    pub data_dir: PathBuf,
    pub kafka_listen: SocketAddr,
    pub advertised_host: String,
    pub advertised_port: u16,
    pub node_id: i32,
    pub cluster_id: String,
    pub auto_create_topics: bool,
    pub default_partitions: i32,
    pub offsets_topic_partitions: i32,
    /// `segment.bytes` of the internal offsets topic when it is created (Kafka's
    /// `offsets.topic.segment.bytes`): small enough that its segments seal and the
    /// cleaner compacts them.
    pub offsets_topic_segment_bytes: u64,
    pub log_defaults: LogConfig,
    /// How often retention and the log cleaner run over this shard's logs.
    pub retention_check_interval: Duration,
    /// Group coordinator: delay before the first rebalance of an empty group
    /// (Kafka's group.initial.rebalance.delay.ms).
    pub group_initial_rebalance_delay_ms: u64,
    /// acks=1 is answered once the batch is appended to the leader's log in memory
    /// (Redpanda's leader_ack), not once its direct-I/O write completed (the default:
    /// like Kafka's page-cache write, an acknowledged acks=1 message survives a crash of
    /// the broker process). Saves one disk round trip per lone message; a SIGKILL can
    /// then lose acks=1 messages acknowledged in the last few hundred microseconds.
    pub acks1_on_append: bool,
}

impl BrokerConfig {
    pub fn local(data_dir: PathBuf, kafka_listen: SocketAddr) -> Self {
        BrokerConfig {
            data_dir,
            advertised_host: kafka_listen.ip().to_string(),
            advertised_port: kafka_listen.port(),
            kafka_listen,
            node_id: 0,
            cluster_id: "quiver-local".to_string(),
            auto_create_topics: true,
            default_partitions: 1,
            offsets_topic_partitions: 16,
            offsets_topic_segment_bytes: OFFSETS_TOPIC_SEGMENT_BYTES,
            log_defaults: LogConfig::default(),
            retention_check_interval: Duration::from_secs(30),
            group_initial_rebalance_delay_ms: 0,
            acks1_on_append: false,
        }
    }
}

/// The logs of one topic that a shard owns, indexed by partition (`None`: another shard's,
/// or not open). Replaced, not edited, while a read holds a copy (`Rc::make_mut`).
pub type TopicLogs = Rc<Vec<Option<Rc<PartitionLog>>>>;

/// The log of `partition` in `logs`.
pub fn partition_log(logs: &TopicLogs, partition: i32) -> Option<Rc<PartitionLog>> {
    logs.get(usize::try_from(partition).ok()?)?.clone()
}

pub struct Shard {
    pub ctx: ShardContext,
    pub config: Arc<BrokerConfig>,
    topics: RefCell<BTreeMap<String, Arc<TopicMeta>>>,
    /// Topic, then partition: a lookup by `&str` allocates nothing, and a read over many
    /// partitions of a topic resolves the topic once ([`Shard::local_topic_logs`]).
    logs: RefCell<FxHashMap<String, TopicLogs>>,
    next_producer_id: Cell<i64>,
}

thread_local! {
    static SHARD: RefCell<Option<Rc<Shard>>> = const { RefCell::new(None) };
}

/// This thread's shard. Panics if called off a broker shard: a programming error.
pub fn shard() -> Rc<Shard> {
    SHARD.with(|s| s.borrow().clone().expect("called off a broker shard"))
}

pub type TopicPartitionKey = (String, i32);

impl Shard {
    /// Loads the catalog, opens the logs this shard owns and installs the shard in this
    /// thread. Call once per executor after `prepare_io`.
    pub async fn start(ctx: ShardContext, config: Arc<BrokerConfig>) -> Result<Rc<Shard>> {
        let metas = catalog::load_topics(&config.data_dir)?;
        // Producer ids: unique across restarts as long as fewer than a million are
        // handed out per millisecond of downtime (startup time * 10^6 + counter).
        let startup_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        let shard = Rc::new(Shard {
            ctx,
            config,
            topics: RefCell::new(BTreeMap::new()),
            logs: RefCell::new(FxHashMap::default()),
            next_producer_id: Cell::new(startup_ms * 1_000_000),
        });
        SHARD.with(|s| *s.borrow_mut() = Some(Rc::clone(&shard)));
        for meta in metas {
            shard.install_topic(Arc::new(meta)).await?;
        }
        Ok(shard)
    }

    pub fn id(&self) -> ShardId {
        self.ctx.id()
    }

    pub fn shard_count(&self) -> usize {
        self.ctx.count()
    }

    pub fn owner_of(&self, topic: &str, partition: i32) -> ShardId {
        shard_for(topic, partition, self.ctx.count())
    }

    pub fn topic(&self, name: &str) -> Option<Arc<TopicMeta>> {
        self.topics.borrow().get(name).cloned()
    }

    pub fn topic_by_id(&self, id: &[u8; 16]) -> Option<Arc<TopicMeta>> {
        self.topics
            .borrow()
            .values()
            .find(|t| &t.topic_id == id)
            .cloned()
    }

    pub fn topics(&self) -> Vec<Arc<TopicMeta>> {
        self.topics.borrow().values().cloned().collect()
    }

    /// The log of a partition this shard owns.
    pub fn local_log(&self, topic: &str, partition: i32) -> Option<Rc<PartitionLog>> {
        partition_log(self.logs.borrow().get(topic)?, partition)
    }

    /// The logs of `topic` this shard owns, for a caller about to look up many of them.
    pub fn local_topic_logs(&self, topic: &str) -> Option<TopicLogs> {
        self.logs.borrow().get(topic).cloned()
    }

    pub fn local_logs(&self) -> Vec<(TopicPartitionKey, Rc<PartitionLog>)> {
        self.logs
            .borrow()
            .iter()
            .flat_map(|(topic, logs)| {
                logs.iter().enumerate().filter_map(|(p, log)| {
                    let log = log.as_ref()?;
                    Some(((topic.clone(), p as i32), Rc::clone(log)))
                })
            })
            .collect()
    }

    pub fn allocate_producer_id(&self) -> i64 {
        let id = self.next_producer_id.get();
        self.next_producer_id.set(id + 1);
        id
    }

    /// Adds a topic to this shard's replica and opens the partitions it owns.
    async fn install_topic(&self, meta: Arc<TopicMeta>) -> Result<()> {
        let log_config = meta.log_config(&self.config.log_defaults);
        for p in 0..meta.partitions {
            if self.owner_of(&meta.name, p) != self.id() || self.local_log(&meta.name, p).is_some()
            {
                continue;
            }
            let dir = catalog::partition_dir(&self.config.data_dir, &meta.name, p);
            let log = PartitionLog::open(&dir, log_config.clone()).await?;
            let mut logs = self.logs.borrow_mut();
            let topic = Rc::make_mut(logs.entry(meta.name.clone()).or_default());
            let slot = p as usize; // 0..meta.partitions
            if topic.len() <= slot {
                topic.resize(slot + 1, None);
            }
            topic[slot] = Some(log);
        }
        // Config changes apply to logs already open.
        for p in 0..meta.partitions {
            if let Some(log) = self.local_log(&meta.name, p) {
                log.set_config(log_config.clone());
            }
        }
        self.topics.borrow_mut().insert(meta.name.clone(), meta);
        Ok(())
    }

    async fn uninstall_topic(&self, name: &str) {
        self.topics.borrow_mut().remove(name);
        let removed: Vec<Rc<PartitionLog>> = self
            .logs
            .borrow_mut()
            .remove(name)
            .map(|logs| logs.iter().flatten().cloned().collect())
            .unwrap_or_default();
        for log in removed {
            log.flushed().await;
        }
    }

    /// Creates a topic (any shard may call; the controller does the work).
    pub async fn create_topic(&self, meta: TopicMeta) -> Result<Arc<TopicMeta>> {
        self.ctx
            .run_on(
                ShardId(0),
                move || async move { controller_create(meta).await },
            )
            .await?
    }

    pub async fn delete_topic(&self, name: String) -> Result<()> {
        self.ctx
            .run_on(
                ShardId(0),
                move || async move { controller_delete(name).await },
            )
            .await?
    }

    /// Replaces a topic's metadata (partition count increase, config change).
    pub async fn update_topic(&self, meta: TopicMeta) -> Result<()> {
        self.ctx
            .run_on(
                ShardId(0),
                move || async move { controller_update(meta).await },
            )
            .await?
    }

    /// Creates the topic with broker defaults if auto-creation allows it.
    pub async fn auto_create(&self, name: &str) -> Result<Arc<TopicMeta>> {
        if let Some(t) = self.topic(name) {
            return Ok(t);
        }
        let meta = TopicMeta::new(name, self.config.default_partitions, BTreeMap::new())?;
        match self.create_topic(meta).await {
            Ok(t) => Ok(t),
            // Another connection created it meanwhile.
            Err(EngineError::TopicAlreadyExists(_)) => self
                .topic(name)
                .ok_or_else(|| EngineError::UnknownTopicOrPartition(name.to_string())),
            Err(e) => Err(e),
        }
    }

    /// Periodically deletes segments beyond retention and compacts the logs that
    /// compact, on every log this shard owns. One task does both, so retention and the
    /// cleaner never work on one log at the same time.
    pub async fn retention_loop(self: Rc<Self>) {
        loop {
            glommio::timer::sleep(self.config.retention_check_interval).await;
            let now_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0);
            for ((topic, p), log) in self.local_logs() {
                match log.enforce_retention(now_ms).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(
                        topic,
                        partition = p,
                        segments = n,
                        "retention deleted segments"
                    ),
                    Err(e) => tracing::error!(topic, partition = p, error = %e, "retention failed"),
                }
                match log.compact(now_ms).await {
                    Ok(r) if r.groups_rewritten == 0 => {}
                    Ok(r) => tracing::info!(
                        topic,
                        partition = p,
                        segments = r.segments_replaced,
                        bytes_cleaned = r.bytes_cleaned,
                        bytes_reclaimed = r.bytes_reclaimed,
                        records_removed = r.records_removed,
                        "compacted"
                    ),
                    Err(e) => {
                        tracing::error!(topic, partition = p, error = %e, "compaction failed")
                    }
                }
            }
        }
    }
}

async fn install_everywhere(meta: Arc<TopicMeta>) -> Result<()> {
    let me = shard();
    let mut results = Vec::new();
    for s in 0..me.ctx.count() {
        let m = Arc::clone(&meta);
        results.push(me.ctx.run_on(
            ShardId(s),
            move || async move { shard().install_topic(m).await },
        ));
    }
    for r in futures::future::join_all(results).await {
        r??;
    }
    Ok(())
}

async fn controller_create(meta: TopicMeta) -> Result<Arc<TopicMeta>> {
    let me = shard();
    if me.topic(&meta.name).is_some() {
        return Err(EngineError::TopicAlreadyExists(meta.name));
    }
    catalog::save_topic(&me.config.data_dir, &meta)?;
    let meta = Arc::new(meta);
    install_everywhere(Arc::clone(&meta)).await?;
    tracing::info!(topic = %meta.name, partitions = meta.partitions, "created topic");
    Ok(meta)
}

async fn controller_update(meta: TopicMeta) -> Result<()> {
    let me = shard();
    if me.topic(&meta.name).is_none() {
        return Err(EngineError::UnknownTopicOrPartition(meta.name));
    }
    catalog::save_topic(&me.config.data_dir, &meta)?;
    install_everywhere(Arc::new(meta)).await
}

async fn controller_delete(name: String) -> Result<()> {
    let me = shard();
    if me.topic(&name).is_none() {
        return Err(EngineError::UnknownTopicOrPartition(name));
    }
    let mut results = Vec::new();
    for s in 0..me.ctx.count() {
        let n = name.clone();
        results.push(me.ctx.run_on(ShardId(s), move || async move {
            shard().uninstall_topic(&n).await
        }));
    }
    for r in futures::future::join_all(results).await {
        r?;
    }
    catalog::delete_topic_files(&me.config.data_dir, &name)?;
    tracing::info!(topic = %name, "deleted topic");
    Ok(())
}

/// Creates the internal offsets topic before the shards start, if it is missing.
pub fn ensure_internal_topics(config: &BrokerConfig) -> Result<()> {
    let existing = catalog::load_topics(&config.data_dir)?;
    if !existing.iter().any(|t| t.name == OFFSETS_TOPIC) {
        let mut configs = BTreeMap::new();
        configs.insert("cleanup.policy".to_string(), "compact".to_string());
        configs.insert(
            "segment.bytes".to_string(),
            config.offsets_topic_segment_bytes.to_string(),
        );
        let meta = TopicMeta::new(OFFSETS_TOPIC, config.offsets_topic_partitions, configs)?;
        catalog::save_topic(&config.data_dir, &meta)?;
    }
    Ok(())
}
