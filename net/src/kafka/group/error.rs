//! Errors of the group coordinator that are not Kafka protocol answers. Protocol-level failures
//! (unknown member, illegal generation, ...) are error codes inside the Kafka responses; these
//! are misuse of the API by the caller, and corrupt offset records.

/// Errors returned by the group coordinator and the offset record codec.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GroupError {
    /// The configuration breaks a relation between its values.
    #[error("invalid group coordinator config: {0}")]
    InvalidConfig(&'static str),
    /// `handle_offset_commit_persisted` was called with a token that is not in flight.
    #[error("unknown offset commit token {0}")]
    UnknownCommitToken(u64),
    /// An offset record's bytes ended before a field did.
    #[error("offset record truncated while reading {0}")]
    RecordTruncated(&'static str),
    /// An offset record has bytes left over after its last field.
    #[error("offset record has {0} trailing bytes")]
    RecordTrailingBytes(usize),
    /// An offset record carries a layout version this code does not know.
    #[error("offset record {part} version {version} is not supported")]
    RecordVersion {
        /// "key" or "value".
        part: &'static str,
        /// The version found.
        version: u16,
    },
    /// An offset record's checksum does not match its bytes.
    #[error("offset record {0} checksum mismatch")]
    RecordChecksum(&'static str),
    /// An offset record holds a string that is not UTF-8 or longer than the codec allows.
    #[error("offset record field {0} is invalid")]
    RecordField(&'static str),
}
