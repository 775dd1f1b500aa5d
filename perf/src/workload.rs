//! Workload files in the style of OpenMessaging Benchmark: what to create, how many producers
//! and consumers, what they send, at what rate and for how long. TOML, one file per workload
//! in `perf/workloads/`; every field has a default so a file states only what it changes, and
//! `quiver-perf kafka` flags override any field for one run.

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::kafka::records::{FastRng, SEND_TIMESTAMP_BYTES};

/// Largest message value the generator builds (the broker's batch limit is far above).
pub const MAX_MESSAGE_BYTES: u32 = 1024 * 1024;
/// Most topics one workload may create.
pub const MAX_TOPICS: u32 = 1_000;
/// Most partitions per topic.
pub const MAX_PARTITIONS_PER_TOPIC: u32 = 100_000;
/// Most producer or consumer threads one run may start.
pub const MAX_CLIENTS: u32 = 1_000;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Workload {
    pub name: String,
    pub description: String,
    /// Topics to create (named `<topic_prefix>-<n>`).
    pub topics: u32,
    /// Empty: the workload's name, so each workload gets its own topics.
    pub topic_prefix: String,
    pub partitions_per_topic: u32,
    /// Value size in bytes: a number, or a distribution.
    pub message_size: MessageSize,
    /// Give every message a random 8-byte key (partition = hash(key)); otherwise batches
    /// rotate over partitions (Kafka's sticky partitioner).
    pub use_random_keys: bool,
    pub producers_per_topic: u32,
    /// Total target rate over all producers in messages/s; 0 means as fast as possible.
    pub producer_rate: f64,
    /// 0, 1 or -1 (all).
    pub acks: i16,
    /// Largest batch per partition in bytes (Kafka's batch.size).
    pub batch_size_bytes: u32,
    /// Most messages per batch (1 sends each message alone).
    pub batch_max_messages: u32,
    /// How long an open batch waits for more messages (Kafka's linger.ms), in microseconds.
    pub linger_us: u64,
    /// Produce requests in flight per connection (Kafka's max.in.flight.requests.per.connection).
    pub max_in_flight: u32,
    /// Most bytes buffered in a producer before it stops taking messages (buffer.memory).
    pub buffer_bytes: u64,
    /// none, gzip, snappy, lz4 or zstd.
    pub compression: String,
    /// Subscriptions (consumer groups) per topic; each receives every message.
    pub subscriptions_per_topic: u32,
    pub consumers_per_subscription: u32,
    /// "classic": JoinGroup/SyncGroup with a range assignor run by the group leader;
    /// "explicit": each consumer takes its range of partitions without a group.
    pub group_protocol: String,
    /// Where consumers start: "latest" (end-to-end latency) or "earliest" (catch-up reads).
    pub consumer_start: String,
    pub fetch_max_wait_ms: i32,
    pub fetch_min_bytes: i32,
    pub fetch_max_bytes: i32,
    pub fetch_partition_max_bytes: i32,
    /// Check CRC-32C of every fetched batch.
    pub verify_crc: bool,
    /// Consumers fetch in KIP-227 incremental fetch sessions, as Java clients and
    /// kafka-python do (false: every fetch names every partition, as librdkafka does).
    pub fetch_sessions: bool,
    /// Produce this many bytes before the timed phase (consumers start at "earliest" then read
    /// it back): a catch-up read of recent data.
    pub preload_bytes: u64,
    /// Run producers in the timed phase (false: a consumers-only read of preloaded data).
    pub produce_during_run: bool,
    /// On reaching a partition's end, consumers start over from its log start: re-reading
    /// recent data for a consumer-throughput test.
    pub consumer_rewind_at_end: bool,
    pub warmup_s: f64,
    pub duration_s: f64,
}

impl Default for Workload {
    fn default() -> Self {
        Self {
            name: "custom".into(),
            description: String::new(),
            topics: 1,
            topic_prefix: String::new(),
            partitions_per_topic: 1,
            message_size: MessageSize::Fixed(1024),
            use_random_keys: false,
            producers_per_topic: 1,
            producer_rate: 0.0,
            acks: 1,
            batch_size_bytes: 1024 * 1024,
            batch_max_messages: 100_000,
            linger_us: 1_000,
            max_in_flight: 5,
            buffer_bytes: 64 * 1024 * 1024,
            compression: "none".into(),
            subscriptions_per_topic: 1,
            consumers_per_subscription: 1,
            group_protocol: "explicit".into(),
            consumer_start: "latest".into(),
            fetch_max_wait_ms: 100,
            fetch_min_bytes: 1,
            fetch_max_bytes: 50 * 1024 * 1024,
            fetch_partition_max_bytes: 8 * 1024 * 1024,
            verify_crc: false,
            fetch_sessions: true,
            preload_bytes: 0,
            produce_during_run: true,
            consumer_rewind_at_end: false,
            warmup_s: 2.0,
            duration_s: 10.0,
        }
    }
}

/// A value size: fixed, uniform in a range, or weighted choices.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum MessageSize {
    Fixed(u32),
    Uniform { min: u32, max: u32 },
    Weighted { sizes: Vec<u32>, weights: Vec<u32> },
}

impl MessageSize {
    pub fn sample(&self, rng: &mut FastRng) -> u32 {
        match self {
            MessageSize::Fixed(size) => *size,
            MessageSize::Uniform { min, max } => min + rng.below((max - min) as u64 + 1) as u32,
            MessageSize::Weighted { sizes, weights } => {
                let total: u64 = weights.iter().map(|w| *w as u64).sum();
                let mut pick = rng.below(total);
                for (size, weight) in sizes.iter().zip(weights) {
                    if pick < *weight as u64 {
                        return *size;
                    }
                    pick -= *weight as u64;
                }
                *sizes.last().expect("validated non-empty")
            }
        }
    }

    fn bounds(&self) -> (u32, u32) {
        match self {
            MessageSize::Fixed(size) => (*size, *size),
            MessageSize::Uniform { min, max } => (*min, *max),
            MessageSize::Weighted { sizes, .. } => (
                sizes.iter().copied().min().unwrap_or(0),
                sizes.iter().copied().max().unwrap_or(0),
            ),
        }
    }
}

impl Workload {
    pub fn load(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let workload: Workload =
            toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        Ok(workload)
    }

    pub fn topic_names(&self) -> Vec<String> {
        let prefix = if self.topic_prefix.is_empty() {
            &self.name
        } else {
            &self.topic_prefix
        };
        (0..self.topics).map(|n| format!("{prefix}-{n}")).collect()
    }

    pub fn total_producers(&self) -> u32 {
        self.topics * self.producers_per_topic
    }

    pub fn total_consumers(&self) -> u32 {
        self.topics * self.subscriptions_per_topic * self.consumers_per_subscription
    }

    pub fn validate(&self) -> Result<()> {
        if self.topics == 0 || self.topics > MAX_TOPICS {
            bail!("topics must be 1..={MAX_TOPICS}");
        }
        if self.partitions_per_topic == 0 || self.partitions_per_topic > MAX_PARTITIONS_PER_TOPIC {
            bail!("partitions_per_topic must be 1..={MAX_PARTITIONS_PER_TOPIC}");
        }
        let (min, max) = self.message_size.bounds();
        if (min as usize) < SEND_TIMESTAMP_BYTES || max > MAX_MESSAGE_BYTES {
            bail!(
                "message sizes must be {SEND_TIMESTAMP_BYTES}..={MAX_MESSAGE_BYTES} bytes \
                 (the first {SEND_TIMESTAMP_BYTES} carry the send time)"
            );
        }
        if let MessageSize::Weighted { sizes, weights } = &self.message_size {
            if sizes.is_empty() || sizes.len() != weights.len() || weights.iter().all(|w| *w == 0) {
                bail!("weighted message_size needs as many weights as sizes, not all zero");
            }
        }
        if ![0, 1, -1].contains(&self.acks) {
            bail!("acks must be 0, 1 or -1");
        }
        if self.max_in_flight == 0 || self.batch_max_messages == 0 || self.batch_size_bytes == 0 {
            bail!("max_in_flight, batch_max_messages and batch_size_bytes must be positive");
        }
        if self.total_producers() > MAX_CLIENTS || self.total_consumers() > MAX_CLIENTS {
            bail!("at most {MAX_CLIENTS} producers and {MAX_CLIENTS} consumers");
        }
        if !["classic", "explicit"].contains(&self.group_protocol.as_str()) {
            bail!("group_protocol must be classic or explicit");
        }
        if !["latest", "earliest"].contains(&self.consumer_start.as_str()) {
            bail!("consumer_start must be latest or earliest");
        }
        crate::kafka::producer::parse_compression(&self.compression)?;
        if self.duration_s <= 0.0 || self.warmup_s < 0.0 || self.producer_rate < 0.0 {
            bail!("duration_s must be positive, warmup_s and producer_rate not negative");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_workloads_parse_and_validate() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("workloads");
        let mut count = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                let workload = Workload::load(&path).unwrap();
                workload
                    .validate()
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                count += 1;
            }
        }
        assert!(
            count >= 5,
            "expected the shipped workload set, found {count}"
        );
    }

    #[test]
    fn message_size_forms() {
        let fixed: Workload = toml::from_str("message_size = 100").unwrap();
        assert_eq!(fixed.message_size, MessageSize::Fixed(100));
        let uniform: Workload = toml::from_str("message_size = { min = 10, max = 20 }").unwrap();
        let mut rng = FastRng::new(3);
        for _ in 0..1000 {
            let size = uniform.message_size.sample(&mut rng);
            assert!((10..=20).contains(&size));
        }
        let weighted: Workload =
            toml::from_str("message_size = { sizes = [10, 1000], weights = [1, 0] }").unwrap();
        assert_eq!(weighted.message_size.sample(&mut rng), 10);
        assert!(toml::from_str::<Workload>("bogus = 1").is_err());
    }
}
