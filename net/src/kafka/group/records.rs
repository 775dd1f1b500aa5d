//! Committed-offset records: what the caller appends to its internal offsets log before it
//! acknowledges an OffsetCommit, and what it feeds back through
//! [`GroupCoordinator::replay`](super::GroupCoordinator::replay) on restart.
//!
//! A record is a key and an optional value, so a compacted log keeps the latest commit per
//! (group, topic, partition) and a tombstone (no value) deletes it, as in Kafka's
//! `__consumer_offsets`. kafka-protocol 0.18 does not expose Kafka's `OffsetCommitKey` /
//! `OffsetCommitValue` schemas, so the layout is our own, big-endian, versioned:
//!
//! ```text
//! key   v1: u16 version=1 | u32 len, group | u32 len, topic | i32 partition | u64 checksum
//! value v1: u16 version=1 | i64 offset | i32 leader_epoch | i64 commit_timestamp_ms
//!           | u32 len, metadata | u64 checksum
//! ```
//!
//! The key checksum is xxh3-64 of the key bytes before it; the value checksum is xxh3-64 of the
//! value bytes before it, seeded with the key checksum, so a value spliced onto the wrong key
//! is caught. Decoding never panics and never allocates more than the input holds.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{GroupId, TopicName};
use kafka_protocol::protocol::StrBytes;
use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

use super::error::GroupError;
use super::limits::RECORD_STRING_BYTES_MAX;

const KEY_VERSION: u16 = 1;
const VALUE_VERSION: u16 = 1;
const CHECKSUM_BYTES: usize = 8;

/// One partition's committed offset, as the coordinator asks the caller to persist it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetCommitRecord {
    /// The consumer group.
    pub group: GroupId,
    /// The topic.
    pub topic: TopicName,
    /// The partition index.
    pub partition: i32,
    /// The committed offset (the next offset the group will consume).
    pub offset: i64,
    /// The leader epoch of the last consumed record, or -1.
    pub leader_epoch: i32,
    /// Client-supplied metadata ("" when the client sent null).
    pub metadata: StrBytes,
    /// Wall-clock time of the commit, as passed to `handle_offset_commit`.
    pub commit_timestamp_ms: i64,
}

/// Deletion of one partition's committed offset (written when a group is deleted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetTombstone {
    /// The consumer group.
    pub group: GroupId,
    /// The topic.
    pub topic: TopicName,
    /// The partition index.
    pub partition: i32,
}

/// A record of the offsets log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OffsetLogRecord {
    /// A committed offset.
    Commit(OffsetCommitRecord),
    /// A deleted offset.
    Tombstone(OffsetTombstone),
}

/// The key and value bytes of an [`OffsetLogRecord`]; `value` is `None` for a tombstone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedOffsetRecord {
    /// Key bytes: identify (group, topic, partition).
    pub key: Bytes,
    /// Value bytes, or `None` for a tombstone.
    pub value: Option<Bytes>,
}

impl From<OffsetCommitRecord> for OffsetLogRecord {
    fn from(record: OffsetCommitRecord) -> Self {
        Self::Commit(record)
    }
}

impl From<OffsetTombstone> for OffsetLogRecord {
    fn from(record: OffsetTombstone) -> Self {
        Self::Tombstone(record)
    }
}

impl OffsetLogRecord {
    /// The (group, topic, partition) this record is about.
    pub fn key(&self) -> (&GroupId, &TopicName, i32) {
        match self {
            Self::Commit(c) => (&c.group, &c.topic, c.partition),
            Self::Tombstone(t) => (&t.group, &t.topic, t.partition),
        }
    }

    /// Encodes the record. Infallible: lengths are `u32` and Kafka strings are shorter.
    pub fn encode(&self) -> EncodedOffsetRecord {
        let (group, topic, partition) = self.key();
        let key = encode_key(group, topic, partition);
        let value = match self {
            Self::Commit(c) => Some(encode_value(c, key_checksum(&key))),
            Self::Tombstone(_) => None,
        };
        EncodedOffsetRecord { key, value }
    }

    /// Decodes a record from its key and optional value bytes.
    pub fn decode(key: &[u8], value: Option<&[u8]>) -> Result<Self, GroupError> {
        let (group, topic, partition, checksum) = decode_key(key)?;
        match value {
            None => Ok(Self::Tombstone(OffsetTombstone {
                group,
                topic,
                partition,
            })),
            Some(value) => {
                let mut reader = Reader::new(value, checksum, "value")?;
                let version = reader.u16("value version")?;
                if version != VALUE_VERSION {
                    return Err(GroupError::RecordVersion {
                        part: "value",
                        version,
                    });
                }
                let offset = reader.i64("offset")?;
                let leader_epoch = reader.i32("leader_epoch")?;
                let commit_timestamp_ms = reader.i64("commit_timestamp_ms")?;
                let metadata = reader.string("metadata")?;
                reader.finish()?;
                Ok(Self::Commit(OffsetCommitRecord {
                    group,
                    topic,
                    partition,
                    offset,
                    leader_epoch,
                    metadata,
                    commit_timestamp_ms,
                }))
            }
        }
    }
}

fn put_string(buf: &mut BytesMut, s: &str) {
    // Kafka strings are at most i16::MAX (or, compact, far below u32::MAX) bytes.
    buf.put_u32(s.len() as u32);
    buf.put_slice(s.as_bytes());
}

fn encode_key(group: &GroupId, topic: &TopicName, partition: i32) -> Bytes {
    let mut buf = BytesMut::with_capacity(2 + 4 + group.len() + 4 + topic.len() + 4 + 8);
    buf.put_u16(KEY_VERSION);
    put_string(&mut buf, group);
    put_string(&mut buf, topic);
    buf.put_i32(partition);
    let checksum = xxh3_64(&buf);
    buf.put_u64(checksum);
    buf.freeze()
}

fn key_checksum(key: &[u8]) -> u64 {
    let mut tail = [0u8; CHECKSUM_BYTES];
    tail.copy_from_slice(&key[key.len() - CHECKSUM_BYTES..]);
    u64::from_be_bytes(tail)
}

fn encode_value(c: &OffsetCommitRecord, key_checksum: u64) -> Bytes {
    let mut buf = BytesMut::with_capacity(2 + 8 + 4 + 8 + 4 + c.metadata.len() + 8);
    buf.put_u16(VALUE_VERSION);
    buf.put_i64(c.offset);
    buf.put_i32(c.leader_epoch);
    buf.put_i64(c.commit_timestamp_ms);
    put_string(&mut buf, &c.metadata);
    let checksum = xxh3_64_with_seed(&buf, key_checksum);
    buf.put_u64(checksum);
    buf.freeze()
}

fn decode_key(key: &[u8]) -> Result<(GroupId, TopicName, i32, u64), GroupError> {
    let mut reader = Reader::new(key, 0, "key")?;
    let version = reader.u16("key version")?;
    if version != KEY_VERSION {
        return Err(GroupError::RecordVersion {
            part: "key",
            version,
        });
    }
    let group = GroupId(reader.string("group")?);
    let topic = TopicName(reader.string("topic")?);
    let partition = reader.i32("partition")?;
    let checksum = reader.finish()?;
    Ok((group, topic, partition, checksum))
}

/// Reads fields from the body of a key or value whose trailing checksum was verified up front.
struct Reader<'a> {
    body: &'a [u8],
    checksum: u64,
}

impl<'a> Reader<'a> {
    /// `seed` 0 means "key" (plain xxh3); otherwise the value's seeded checksum.
    fn new(bytes: &'a [u8], seed: u64, part: &'static str) -> Result<Self, GroupError> {
        if bytes.len() < CHECKSUM_BYTES {
            return Err(GroupError::RecordTruncated(part));
        }
        let (body, tail) = bytes.split_at(bytes.len() - CHECKSUM_BYTES);
        let mut stored = [0u8; CHECKSUM_BYTES];
        stored.copy_from_slice(tail);
        let stored = u64::from_be_bytes(stored);
        let computed = if part == "key" {
            xxh3_64(body)
        } else {
            xxh3_64_with_seed(body, seed)
        };
        if stored != computed {
            return Err(GroupError::RecordChecksum(part));
        }
        Ok(Self {
            body,
            checksum: stored,
        })
    }

    fn take<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], GroupError> {
        if self.body.len() < N {
            return Err(GroupError::RecordTruncated(what));
        }
        let (head, rest) = self.body.split_at(N);
        self.body = rest;
        let mut out = [0u8; N];
        out.copy_from_slice(head);
        Ok(out)
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, GroupError> {
        Ok(u16::from_be_bytes(self.take(what)?))
    }

    fn i32(&mut self, what: &'static str) -> Result<i32, GroupError> {
        Ok(i32::from_be_bytes(self.take(what)?))
    }

    fn i64(&mut self, what: &'static str) -> Result<i64, GroupError> {
        Ok(i64::from_be_bytes(self.take(what)?))
    }

    fn string(&mut self, what: &'static str) -> Result<StrBytes, GroupError> {
        let len = u32::from_be_bytes(self.take(what)?) as usize;
        if len > RECORD_STRING_BYTES_MAX {
            return Err(GroupError::RecordField(what));
        }
        if self.body.len() < len {
            return Err(GroupError::RecordTruncated(what));
        }
        let (head, rest) = self.body.split_at(len);
        self.body = rest;
        let text = std::str::from_utf8(head).map_err(|_| GroupError::RecordField(what))?;
        Ok(StrBytes::from_string(text.to_owned()))
    }

    /// Fails on leftover bytes; returns the verified checksum.
    fn finish(self) -> Result<u64, GroupError> {
        if !self.body.is_empty() {
            return Err(GroupError::RecordTrailingBytes(self.body.len()));
        }
        Ok(self.checksum)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn commit() -> OffsetCommitRecord {
        OffsetCommitRecord {
            group: GroupId(StrBytes::from_static_str("g")),
            topic: TopicName(StrBytes::from_static_str("orders")),
            partition: 7,
            offset: 12_345,
            leader_epoch: 3,
            metadata: StrBytes::from_static_str("meta"),
            commit_timestamp_ms: 1_700_000_000_000,
        }
    }

    #[test]
    fn commit_and_tombstone_round_trip() {
        let record = OffsetLogRecord::Commit(commit());
        let encoded = record.encode();
        let decoded = OffsetLogRecord::decode(&encoded.key, encoded.value.as_deref()).unwrap();
        assert_eq!(decoded, record);

        let tombstone = OffsetLogRecord::Tombstone(OffsetTombstone {
            group: GroupId(StrBytes::from_static_str("g")),
            topic: TopicName(StrBytes::from_static_str("orders")),
            partition: 7,
        });
        let encoded_tombstone = tombstone.encode();
        assert_eq!(
            encoded_tombstone.key, encoded.key,
            "same key: compaction replaces"
        );
        assert_eq!(encoded_tombstone.value, None);
        assert_eq!(
            OffsetLogRecord::decode(&encoded_tombstone.key, None).unwrap(),
            tombstone
        );
    }

    #[test]
    fn every_single_bit_flip_and_truncation_is_rejected_without_panic() {
        let encoded = OffsetLogRecord::Commit(commit()).encode();
        let value = encoded.value.unwrap();
        for i in 0..encoded.key.len() * 8 {
            let mut key = encoded.key.to_vec();
            key[i / 8] ^= 1 << (i % 8);
            assert!(OffsetLogRecord::decode(&key, Some(&value)).is_err());
        }
        for i in 0..value.len() * 8 {
            let mut v = value.to_vec();
            v[i / 8] ^= 1 << (i % 8);
            assert!(OffsetLogRecord::decode(&encoded.key, Some(&v)).is_err());
        }
        for n in 0..encoded.key.len() {
            assert!(OffsetLogRecord::decode(&encoded.key[..n], Some(&value)).is_err());
        }
        for n in 0..value.len() {
            assert!(OffsetLogRecord::decode(&encoded.key, Some(&value[..n])).is_err());
        }
    }

    #[test]
    fn value_spliced_onto_another_key_is_rejected() {
        let a = OffsetLogRecord::Commit(commit()).encode();
        let mut other = commit();
        other.partition = 8;
        let b = OffsetLogRecord::Commit(other).encode();
        assert_eq!(
            OffsetLogRecord::decode(&b.key, a.value.as_deref()),
            Err(GroupError::RecordChecksum("value"))
        );
    }
}
