//! The one table mapping internal errors to Kafka error codes.

use kafka_protocol::error::ResponseError as E;
use quiver_engine::batch::BatchError;
use quiver_engine::EngineError;

/// Kafka's INVALID_RECORD, for batches that fail validation other than the CRC.
pub const INVALID_RECORD: i16 = 87;
/// Kafka's UNKNOWN_TOPIC_ID (Fetch/Metadata v13+ name topics by id).
pub const UNKNOWN_TOPIC_ID: i16 = 100;

pub fn error_code(e: &EngineError) -> i16 {
    match e {
        EngineError::InvalidBatch(BatchError::CrcMismatch { .. }) => E::CorruptMessage.code(),
        EngineError::InvalidBatch(BatchError::TooLarge(_)) => E::MessageTooLarge.code(),
        EngineError::InvalidBatch(BatchError::Transactional) => E::InvalidRequest.code(),
        EngineError::InvalidBatch(BatchError::BadCompression(_)) => {
            E::UnsupportedCompressionType.code()
        }
        EngineError::InvalidBatch(BatchError::BadMagic(_)) => E::UnsupportedForMessageFormat.code(),
        EngineError::InvalidBatch(_) => INVALID_RECORD,
        EngineError::OffsetOutOfRange { .. } => E::OffsetOutOfRange.code(),
        EngineError::UnknownTopicOrPartition(_) => E::UnknownTopicOrPartition.code(),
        EngineError::TopicAlreadyExists(_) => E::TopicAlreadyExists.code(),
        EngineError::InvalidTopic(..) => E::InvalidTopicException.code(),
        EngineError::InvalidConfig(_) => E::InvalidConfig.code(),
        EngineError::InvalidProducerEpoch { .. } => E::InvalidProducerEpoch.code(),
        EngineError::OutOfOrderSequence { .. } => E::OutOfOrderSequenceNumber.code(),
        EngineError::UnknownProducerId(_) => E::UnknownProducerId.code(),
        EngineError::CorruptSegment { .. } | EngineError::Io { .. } | EngineError::LogFailed => {
            E::KafkaStorageError.code()
        }
        EngineError::ShardGone | EngineError::MemlockTooLow(_) => E::UnknownServerError.code(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_match_kafka() {
        assert_eq!(
            error_code(&EngineError::UnknownTopicOrPartition("t".into())),
            3
        );
        assert_eq!(
            error_code(&EngineError::OutOfOrderSequence {
                expected: 1,
                got: 3
            }),
            45
        );
        assert_eq!(
            error_code(&EngineError::InvalidTopic("a b".into(), "x")),
            17
        );
        assert_eq!(
            error_code(&EngineError::InvalidBatch(BatchError::CrcMismatch {
                expected: 1,
                actual: 2
            })),
            2
        );
    }
}
