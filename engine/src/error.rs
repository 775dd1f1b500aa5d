//! The engine's one error type.

use crate::batch::BatchError;
use crate::types::Offset;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("invalid record batch: {0}")]
    InvalidBatch(#[from] BatchError),
    #[error("offset {requested} out of range [{log_start}, {log_end}]")]
    OffsetOutOfRange {
        requested: Offset,
        log_start: Offset,
        log_end: Offset,
    },
    #[error("unknown topic or partition {0}")]
    UnknownTopicOrPartition(String),
    #[error("topic {0} already exists")]
    TopicAlreadyExists(String),
    #[error("invalid topic name {0:?}: {1}")]
    InvalidTopic(String, &'static str),
    #[error("invalid config: {0}")]
    InvalidConfig(String),
    #[error("producer fenced: epoch {got} is older than {current}")]
    InvalidProducerEpoch { got: i16, current: i16 },
    #[error("out of order sequence: expected {expected}, got {got}")]
    OutOfOrderSequence { expected: i32, got: i32 },
    #[error("unknown producer id {0}")]
    UnknownProducerId(i64),
    #[error("segment {path}: {reason}")]
    CorruptSegment { path: String, reason: String },
    #[error("io error during {op} on {path}: {source}")]
    Io {
        op: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("an earlier write to this partition failed; the log is read-only until restart")]
    LogFailed,
    #[error("the owning shard is gone")]
    ShardGone,
    #[error("insufficient locked memory: {0}")]
    MemlockTooLow(String),
}

impl EngineError {
    pub fn io(op: &'static str, path: impl std::fmt::Display, source: std::io::Error) -> Self {
        EngineError::Io {
            op,
            path: path.to_string(),
            source,
        }
    }
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;
