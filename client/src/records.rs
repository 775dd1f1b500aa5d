//! Records in and out: Kafka's default key partitioner, RecordBatch v2 building (with
//! the idempotent producer's id, epoch and sequence) and decoding. Pure.

use bytes::{Bytes, BytesMut};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

use crate::error::{Error, Result};

/// Kafka's `Utils.murmur2` (a 32-bit MurmurHash2 variant with seed 0x9747b28c).
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let len = data.len();
    let mut h: u32 = SEED ^ (len as u32);
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= (rest[2] as u32) << 16;
    }
    if rest.len() >= 2 {
        h ^= (rest[1] as u32) << 8;
    }
    if !rest.is_empty() {
        h ^= rest[0] as u32;
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition Kafka's default partitioner picks for a key:
/// `toPositive(murmur2(key)) % partitions`, where toPositive masks the sign bit.
pub fn partition_for_key(key: &[u8], partitions: i32) -> i32 {
    (murmur2(key) & 0x7fff_ffff) % partitions.max(1)
}

/// A record to produce.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProducerRecord {
    pub topic: String,
    /// None: by key hash when there is a key, else the producer's sticky partition.
    pub partition: Option<i32>,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<(String, Option<Bytes>)>,
    /// Milliseconds since the epoch; None: now.
    pub timestamp: Option<i64>,
}

impl ProducerRecord {
    pub fn new(topic: impl Into<String>, value: impl Into<Bytes>) -> Self {
        ProducerRecord {
            topic: topic.into(),
            value: Some(value.into()),
            ..Default::default()
        }
    }

    pub fn key(mut self, key: impl Into<Bytes>) -> Self {
        self.key = Some(key.into());
        self
    }

    pub fn partition(mut self, partition: i32) -> Self {
        self.partition = Some(partition);
        self
    }

    pub fn header(mut self, name: impl Into<String>, value: impl Into<Bytes>) -> Self {
        self.headers.push((name.into(), Some(value.into())));
        self
    }

    pub fn timestamp(mut self, ms: i64) -> Self {
        self.timestamp = Some(ms);
        self
    }

    /// Roughly what the record adds to a batch, for `batch_bytes`.
    pub fn estimated_size(&self) -> usize {
        21 + self.key.as_ref().map_or(0, |k| k.len())
            + self.value.as_ref().map_or(0, |v| v.len())
            + self
                .headers
                .iter()
                .map(|(k, v)| k.len() + v.as_ref().map_or(0, |v| v.len()) + 4)
                .sum::<usize>()
    }
}

/// A consumed record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerRecord {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub timestamp: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<(String, Option<Bytes>)>,
}

/// The idempotent producer's identity for one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerIdentity {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
}

impl ProducerIdentity {
    pub const NONE: ProducerIdentity = ProducerIdentity {
        producer_id: -1,
        producer_epoch: -1,
        base_sequence: -1,
    };
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Encodes records as one uncompressed RecordBatch v2.
pub fn encode_batch(records: &[ProducerRecord], identity: ProducerIdentity) -> Result<Bytes> {
    let now = now_ms();
    let kafka_records: Vec<Record> = records
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let mut headers = IndexMap::new();
            for (k, v) in &r.headers {
                headers.insert(StrBytes::from_string(k.clone()), v.clone());
            }
            Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: -1,
                producer_id: identity.producer_id,
                producer_epoch: identity.producer_epoch,
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                sequence: if identity.base_sequence < 0 {
                    -1
                } else {
                    identity.base_sequence.wrapping_add(i as i32)
                },
                timestamp: r.timestamp.unwrap_or(now),
                key: r.key.clone(),
                value: r.value.clone(),
                headers,
            }
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &kafka_records,
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .map_err(|e| Error::Records(e.to_string()))?;
    Ok(buf.freeze())
}

/// Decodes whole batches into records, skipping those before `from_offset` (a read
/// starts at the batch holding the wanted offset) and control records.
pub fn decode_records(
    topic: &str,
    partition: i32,
    chunks: &[Bytes],
    from_offset: i64,
) -> Result<Vec<ConsumerRecord>> {
    let mut out = Vec::new();
    for chunk in chunks {
        let mut buf = chunk.clone();
        let sets =
            RecordBatchDecoder::decode_all(&mut buf).map_err(|e| Error::Records(e.to_string()))?;
        for set in sets {
            for r in set.records {
                if r.offset < from_offset || r.control {
                    continue;
                }
                out.push(ConsumerRecord {
                    topic: topic.to_string(),
                    partition,
                    offset: r.offset,
                    timestamp: r.timestamp,
                    key: r.key,
                    value: r.value,
                    headers: r
                        .headers
                        .into_iter()
                        .map(|(k, v)| (k.to_string(), v))
                        .collect(),
                });
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_matches_kafka_utils_test() {
        // Kafka's clients/src/test/java/org/apache/kafka/common/utils/UtilsTest.java
        // (testMurmur2).
        let cases: &[(&[u8], i32)] = &[
            (b"21", -973932308),
            (b"foobar", -790332482),
            (b"a-little-bit-long-string", -985981536),
            (b"a-little-bit-longer-string", -1486304829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58897971,
            ),
            (b"abc", 479470107),
        ];
        for (input, expected) in cases {
            assert_eq!(
                murmur2(input),
                *expected,
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn key_partitioning_is_positive_and_stable() {
        for n in 1..50 {
            for key in [&b""[..], b"a", b"key-17", b"\xff\xfe\xfd"] {
                let p = partition_for_key(key, n);
                assert!((0..n).contains(&p));
                assert_eq!(p, partition_for_key(key, n));
            }
        }
        // toPositive(-790332482) = 1357151166; % 3 = 0.
        assert_eq!(partition_for_key(b"foobar", 3), 1357151166 % 3);
    }

    #[test]
    fn batches_round_trip() {
        let records = vec![
            ProducerRecord::new("t", "v1")
                .key("k1")
                .header("h", "x")
                .timestamp(5),
            ProducerRecord::new("t", "v2"),
        ];
        let batch = encode_batch(
            &records,
            ProducerIdentity {
                producer_id: 9,
                producer_epoch: 1,
                base_sequence: 4,
            },
        )
        .unwrap();
        // producerId at byte 43, producerEpoch 51, baseSequence 53 (big-endian).
        assert_eq!(i64::from_be_bytes(batch[43..51].try_into().unwrap()), 9);
        assert_eq!(i16::from_be_bytes(batch[51..53].try_into().unwrap()), 1);
        assert_eq!(i32::from_be_bytes(batch[53..57].try_into().unwrap()), 4);
        let back = decode_records("t", 0, &[batch], 1).unwrap();
        assert_eq!(back.len(), 1, "offset 0 skipped");
        assert_eq!(back[0].value.as_deref(), Some(&b"v2"[..]));
    }
}
