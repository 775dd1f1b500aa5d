//! Topic metadata: names, ids, partition counts and the configs the engine honours,
//! persisted as one small checksummed file per topic.
//!
//! File format (`<data>/topics/<name>/topic.meta`): UTF-8 `key=value` lines, the last
//! line `xxh3=<hex>` over everything before it. Written to a temporary file, synced,
//! renamed and the directory synced, so a crash leaves the old or the new file.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use xxhash_rust::xxh3::xxh3_64;

use crate::error::{EngineError, Result};
use crate::log::{CleanupPolicy, Durability, LogConfig};

/// Kafka's limit on topic name length.
pub const MAX_TOPIC_NAME_CHARS: usize = 249;
/// Partitions per topic we accept.
pub const MAX_PARTITIONS_PER_TOPIC: i32 = 10_000;

/// Topic configs the engine honours, by Kafka name.
pub const SUPPORTED_CONFIGS: &[&str] = &[
    "cleanup.policy",
    "retention.ms",
    "retention.bytes",
    "segment.bytes",
    "segment.ms",
    "flush.ms",
    "flush.messages",
    "min.cleanable.dirty.ratio",
    "delete.retention.ms",
    "min.compaction.lag.ms",
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicMeta {
    pub name: String,
    pub topic_id: [u8; 16],
    pub partitions: i32,
    /// Explicitly set configs (Kafka's "dynamic topic configs"); others are defaults.
    pub configs: BTreeMap<String, String>,
    pub internal: bool,
}

/// Kafka's topic name rules: 1-249 chars of `[a-zA-Z0-9._-]`, not `.` or `..`.
pub fn validate_topic_name(name: &str) -> Result<()> {
    let err = |why| Err(EngineError::InvalidTopic(name.to_string(), why));
    if name.is_empty() {
        return err("empty");
    }
    if name.len() > MAX_TOPIC_NAME_CHARS {
        return err("longer than 249 characters");
    }
    if name == "." || name == ".." {
        return err("'.' and '..' are reserved");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
    {
        return err("only ASCII alphanumerics, '.', '_' and '-' are allowed");
    }
    Ok(())
}

/// Validates one config value; returns the normalised value.
pub fn validate_config(key: &str, value: &str) -> Result<String> {
    let bad = || EngineError::InvalidConfig(format!("{key}={value}"));
    match key {
        "cleanup.policy" => CleanupPolicy::from_kafka_str(value)
            .map(|p| p.as_kafka_str().to_string())
            .ok_or_else(bad),
        "min.cleanable.dirty.ratio" => {
            let per_mille = crate::compaction::parse_ratio_per_mille(value).ok_or_else(bad)?;
            Ok(format!("{}", per_mille as f64 / 1000.0))
        }
        "delete.retention.ms" | "min.compaction.lag.ms" => {
            let v: i64 = value.parse().map_err(|_| bad())?;
            if v < 0 {
                return Err(bad());
            }
            Ok(v.to_string())
        }
        "retention.ms" | "retention.bytes" => {
            let v: i64 = value.parse().map_err(|_| bad())?;
            if v < -1 {
                return Err(bad());
            }
            Ok(v.to_string())
        }
        "segment.bytes" => {
            let v: i64 = value.parse().map_err(|_| bad())?;
            if !(14..=crate::limits::MAX_SEGMENT_BYTES as i64).contains(&v) {
                return Err(bad());
            }
            Ok(v.to_string())
        }
        "segment.ms" | "flush.ms" | "flush.messages" => {
            let v: i64 = value.parse().map_err(|_| bad())?;
            if v < 1 {
                return Err(bad());
            }
            Ok(v.to_string())
        }
        _ => Err(EngineError::InvalidConfig(format!(
            "unknown or unsupported config {key}"
        ))),
    }
}

impl TopicMeta {
    pub fn new(name: &str, partitions: i32, configs: BTreeMap<String, String>) -> Result<Self> {
        validate_topic_name(name)?;
        if !(1..=MAX_PARTITIONS_PER_TOPIC).contains(&partitions) {
            return Err(EngineError::InvalidConfig(format!(
                "partition count {partitions} outside 1..={MAX_PARTITIONS_PER_TOPIC}"
            )));
        }
        let mut normalised = BTreeMap::new();
        for (k, v) in configs {
            let v = validate_config(&k, &v)?;
            normalised.insert(k, v);
        }
        let mut topic_id = [0u8; 16];
        let seed = format!(
            "{name}{:?}{}",
            std::time::SystemTime::now(),
            std::process::id()
        );
        let first = xxh3_64(seed.as_bytes()).to_le_bytes();
        topic_id[..8].copy_from_slice(&first);
        topic_id[8..].copy_from_slice(&xxh3_64(&first).to_le_bytes());
        // RFC 4122 version 4 / variant bits, so clients print it as a normal UUID.
        topic_id[6] = (topic_id[6] & 0x0f) | 0x40;
        topic_id[8] = (topic_id[8] & 0x3f) | 0x80;
        Ok(TopicMeta {
            name: name.to_string(),
            topic_id,
            partitions,
            configs: normalised,
            internal: name.starts_with("__"),
        })
    }

    /// The effective value of a config: explicit or the broker default.
    pub fn config_value(&self, key: &str, defaults: &LogConfig) -> Option<String> {
        if let Some(v) = self.configs.get(key) {
            return Some(v.clone());
        }
        Some(match key {
            "cleanup.policy" => defaults.cleanup_policy.as_kafka_str().into(),
            "min.cleanable.dirty.ratio" => {
                format!(
                    "{}",
                    defaults.min_cleanable_dirty_ratio_per_mille as f64 / 1000.0
                )
            }
            "delete.retention.ms" => defaults.delete_retention_ms.to_string(),
            "min.compaction.lag.ms" => defaults.min_compaction_lag_ms.to_string(),
            "retention.ms" => defaults
                .retention_ms
                .map(|v| v as i64)
                .unwrap_or(-1)
                .to_string(),
            "retention.bytes" => defaults
                .retention_bytes
                .map(|v| v as i64)
                .unwrap_or(-1)
                .to_string(),
            "segment.bytes" => defaults.segment_bytes.to_string(),
            "segment.ms" => defaults.segment_ms.unwrap_or(i64::MAX as u64).to_string(),
            "flush.ms" => match defaults.durability {
                Durability::EveryCommit => "0".into(),
                Durability::Interval { interval, .. } => interval.as_millis().to_string(),
            },
            "flush.messages" => match defaults.durability {
                Durability::EveryCommit => "1".into(),
                Durability::Interval { .. } => i64::MAX.to_string(),
            },
            _ => return None,
        })
    }

    /// The log config for this topic's partitions.
    pub fn log_config(&self, defaults: &LogConfig) -> LogConfig {
        let mut c = defaults.clone();
        let num = |k: &str| self.configs.get(k).and_then(|v| v.parse::<i64>().ok());
        if let Some(p) = self
            .configs
            .get("cleanup.policy")
            .and_then(|v| CleanupPolicy::from_kafka_str(v))
        {
            c.cleanup_policy = p;
        }
        if let Some(r) = self
            .configs
            .get("min.cleanable.dirty.ratio")
            .and_then(|v| crate::compaction::parse_ratio_per_mille(v))
        {
            c.min_cleanable_dirty_ratio_per_mille = r;
        }
        if let Some(v) = num("delete.retention.ms") {
            c.delete_retention_ms = v.max(0) as u64;
        }
        if let Some(v) = num("min.compaction.lag.ms") {
            c.min_compaction_lag_ms = v.max(0) as u64;
        }
        if let Some(v) = num("retention.ms") {
            c.retention_ms = (v >= 0).then_some(v as u64);
        }
        if let Some(v) = num("retention.bytes") {
            c.retention_bytes = (v >= 0).then_some(v as u64);
        }
        if let Some(v) = num("segment.bytes") {
            c.segment_bytes = v as u64;
        }
        if let Some(v) = num("segment.ms") {
            c.segment_ms = Some(v as u64);
        }
        if let Some(v) = num("flush.ms") {
            c.durability = Durability::Interval {
                interval: Duration::from_millis(v as u64),
                bytes: u64::MAX,
            };
        }
        c
    }

    pub fn topic_id_string(&self) -> String {
        let h: String = self.topic_id.iter().map(|b| format!("{b:02x}")).collect();
        format!(
            "{}-{}-{}-{}-{}",
            &h[..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..]
        )
    }

    fn encode(&self) -> String {
        let mut s = String::new();
        s.push_str(&format!("name={}\n", self.name));
        s.push_str(&format!("topic_id={}\n", self.topic_id_string()));
        s.push_str(&format!("partitions={}\n", self.partitions));
        for (k, v) in &self.configs {
            s.push_str(&format!("config.{k}={v}\n"));
        }
        let sum = xxh3_64(s.as_bytes());
        s.push_str(&format!("xxh3={sum:016x}\n"));
        s
    }

    fn decode(text: &str) -> std::result::Result<TopicMeta, String> {
        let body_end = text.rfind("xxh3=").ok_or("missing checksum line")?;
        let (body, sum_line) = text.split_at(body_end);
        let sum = u64::from_str_radix(sum_line.trim().trim_start_matches("xxh3="), 16)
            .map_err(|_| "bad checksum line")?;
        if sum != xxh3_64(body.as_bytes()) {
            return Err("checksum mismatch".into());
        }
        let mut name = None;
        let mut topic_id = None;
        let mut partitions = None;
        let mut configs = BTreeMap::new();
        for line in body.lines() {
            let (k, v) = line.split_once('=').ok_or("malformed line")?;
            match k {
                "name" => name = Some(v.to_string()),
                "topic_id" => {
                    let hex: String = v.chars().filter(|c| *c != '-').collect();
                    let mut id = [0u8; 16];
                    for (i, b) in id.iter_mut().enumerate() {
                        *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2).ok_or("short id")?, 16)
                            .map_err(|_| "bad id")?;
                    }
                    topic_id = Some(id);
                }
                "partitions" => partitions = Some(v.parse::<i32>().map_err(|_| "bad partitions")?),
                k if k.starts_with("config.") => {
                    configs.insert(k["config.".len()..].to_string(), v.to_string());
                }
                _ => {}
            }
        }
        let name = name.ok_or("missing name")?;
        Ok(TopicMeta {
            internal: name.starts_with("__"),
            name,
            topic_id: topic_id.ok_or("missing topic_id")?,
            partitions: partitions.ok_or("missing partitions")?,
            configs,
        })
    }
}

pub fn topics_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("topics")
}

pub fn topic_dir(data_dir: &Path, topic: &str) -> PathBuf {
    topics_dir(data_dir).join(topic)
}

pub fn partition_dir(data_dir: &Path, topic: &str, partition: i32) -> PathBuf {
    topic_dir(data_dir, topic).join(partition.to_string())
}

fn sync_path(path: &Path) -> std::io::Result<()> {
    std::fs::File::open(path)?.sync_all()
}

/// Persists a topic's metadata atomically. Blocking, small and rare (admin operations).
pub fn save_topic(data_dir: &Path, meta: &TopicMeta) -> Result<()> {
    let dir = topic_dir(data_dir, &meta.name);
    std::fs::create_dir_all(&dir).map_err(|e| EngineError::io("create dir", dir.display(), e))?;
    let tmp = dir.join("topic.meta.tmp");
    let path = dir.join("topic.meta");
    let io = |op, e| EngineError::io(op, path.display(), e);
    let mut f = std::fs::File::create(&tmp).map_err(|e| io("create", e))?;
    f.write_all(meta.encode().as_bytes())
        .map_err(|e| io("write", e))?;
    f.sync_all().map_err(|e| io("sync", e))?;
    std::fs::rename(&tmp, &path).map_err(|e| io("rename", e))?;
    sync_path(&dir).map_err(|e| io("sync dir", e))?;
    sync_path(&topics_dir(data_dir)).map_err(|e| io("sync dir", e))?;
    Ok(())
}

/// Loads every topic. A topic whose metadata file is corrupt is skipped with an error
/// log rather than taking the broker down; its data stays on disk untouched.
pub fn load_topics(data_dir: &Path) -> Result<Vec<TopicMeta>> {
    let dir = topics_dir(data_dir);
    std::fs::create_dir_all(&dir).map_err(|e| EngineError::io("create dir", dir.display(), e))?;
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).map_err(|e| EngineError::io("list", dir.display(), e))? {
        let Ok(entry) = entry else { continue };
        let path = entry.path().join("topic.meta");
        match std::fs::read_to_string(&path) {
            Ok(text) => match TopicMeta::decode(&text) {
                Ok(meta) => out.push(meta),
                Err(why) => {
                    tracing::error!(path = %path.display(), why, "skipping topic with corrupt metadata")
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // A topic directory without metadata is a half-deleted or half-created
                // topic; leave it alone.
            }
            Err(e) => return Err(EngineError::io("read", path.display(), e)),
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Deletes a topic's metadata first (so it is gone after a crash), then its data.
pub fn delete_topic_files(data_dir: &Path, topic: &str) -> Result<()> {
    let dir = topic_dir(data_dir, topic);
    let meta = dir.join("topic.meta");
    match std::fs::remove_file(&meta) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(EngineError::io("remove", meta.display(), e)),
    }
    let _ = sync_path(&dir);
    std::fs::remove_dir_all(&dir).map_err(|e| EngineError::io("remove dir", dir.display(), e))?;
    let _ = sync_path(&topics_dir(data_dir));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names() {
        assert!(validate_topic_name("orders.v1_x-2").is_ok());
        for bad in ["", ".", "..", "a b", "ü", &"x".repeat(250), "a/b"] {
            assert!(validate_topic_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn meta_round_trip_and_checksum() {
        let mut configs = BTreeMap::new();
        configs.insert("retention.ms".to_string(), "1000".to_string());
        let meta = TopicMeta::new("t1", 3, configs).unwrap();
        let text = meta.encode();
        assert_eq!(TopicMeta::decode(&text).unwrap(), meta);
        let broken = text.replace("partitions=3", "partitions=4");
        assert!(TopicMeta::decode(&broken).is_err());
        assert_eq!(meta.topic_id_string().len(), 36);
    }

    #[test]
    fn configs_validate_and_apply() {
        assert!(validate_config("cleanup.policy", "bogus").is_err());
        assert!(validate_config("retention.ms", "-2").is_err());
        assert!(validate_config("nope", "1").is_err());
        let mut configs = BTreeMap::new();
        configs.insert("retention.bytes".into(), "1048576".into());
        configs.insert("segment.bytes".into(), "65536".into());
        let meta = TopicMeta::new("t", 1, configs).unwrap();
        let c = meta.log_config(&LogConfig::default());
        assert_eq!(c.retention_bytes, Some(1 << 20));
        assert_eq!(c.segment_bytes, 65536);
        assert_eq!(
            meta.config_value("cleanup.policy", &LogConfig::default())
                .unwrap(),
            "delete"
        );
    }
}
