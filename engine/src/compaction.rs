//! Log compaction decisions and batch rewriting, with no IO: which records of a sealed
//! segment survive `cleanup.policy=compact`, and the bytes of a batch that lost some.
//!
//! Invariants:
//! - A rewritten batch keeps its `baseOffset`, `lastOffsetDelta`, `baseTimestamp`,
//!   producer id, epoch, `baseSequence`, attributes (so its compression codec) and leader
//!   epoch; surviving records are copied byte for byte, so their offset and timestamp
//!   deltas (relative to the unchanged base) still give their original offsets and
//!   timestamps. Offsets are never reused or renumbered: gaps appear instead.
//! - Only `recordsCount`, `maxTimestamp`, `batchLength`, the records and the CRC-32C change.
//! - Nothing here panics on any input: malformed batches are errors.
//!
//! kafka-protocol's `RecordBatchEncoder` derives `baseOffset`, `lastOffsetDelta` and
//! `baseSequence` from the records it is given (first and last surviving record), so it
//! cannot write a batch whose first or last record was removed the way Kafka's cleaner
//! does. We use the crate's codecs (gzip, snappy, lz4, zstd) for the record bytes and
//! write the 61-byte header ourselves.

use std::collections::HashMap;
use std::ops::Range;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::compression::{Compressor, Decompressor, Gzip, Lz4, Snappy, Zstd};
use xxhash_rust::xxh3::xxh3_128;
use zerocopy::IntoBytes;

use crate::batch::{self, BatchError, BatchHeader, Compression, LOG_OVERHEAD};
use crate::limits::{BATCH_HEADER_BYTES, COMPACTION_KEYS_PER_PASS_MAX};

/// Offset of the first CRC-covered byte (attributes).
const CRC_START: usize = 21;

/// 128-bit hash of a record key. The offset map stores hashes, not keys, so its memory
/// is bounded by the entry count (Kafka's cleaner does the same with MD5).
pub fn key_hash(key: &[u8]) -> u128 {
    xxh3_128(key)
}

/// Latest offset of every key seen in the dirty part of a log.
#[derive(Debug, Default)]
pub struct OffsetMap {
    latest: HashMap<u128, i64>,
}

impl OffsetMap {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn insert(&mut self, key: &[u8], offset: i64) {
        let slot = self.latest.entry(key_hash(key)).or_insert(offset);
        *slot = (*slot).max(offset);
    }

    pub fn latest(&self, key: &[u8]) -> Option<i64> {
        self.latest.get(&key_hash(key)).copied()
    }

    pub fn len(&self) -> usize {
        self.latest.len()
    }

    pub fn is_empty(&self) -> bool {
        self.latest.is_empty()
    }

    /// Whether another segment may be added to the map this pass.
    pub fn has_room(&self) -> bool {
        self.latest.len() < COMPACTION_KEYS_PER_PASS_MAX
    }
}

/// One record inside a batch's (decompressed) records section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordSpan {
    /// The whole record, length prefix included.
    pub bytes: Range<usize>,
    pub offset: i64,
    pub timestamp: i64,
    pub key: Option<Range<usize>>,
    /// A null value: a tombstone.
    pub tombstone: bool,
}

/// A batch's records, decompressed, with where each record lies.
#[derive(Debug, Clone)]
pub struct DecodedBatch {
    pub header: BatchHeader,
    pub records: Bytes,
    pub spans: Vec<RecordSpan>,
}

impl DecodedBatch {
    pub fn key(&self, span: &RecordSpan) -> Option<&[u8]> {
        span.key.clone().map(|k| &self.records[k])
    }
}

fn bad(index: i32, reason: &'static str) -> BatchError {
    BatchError::BadRecord { index, reason }
}

fn codec(header: &BatchHeader) -> Result<Compression, BatchError> {
    header
        .compression()
        .ok_or(BatchError::BadCompression(header.attributes.get() & 0x7))
}

fn decompress(codec: Compression, data: &[u8]) -> Result<Bytes, BatchError> {
    let mut input = Bytes::copy_from_slice(data);
    let take = |b: &mut Bytes| Ok(std::mem::take(b));
    let out = match codec {
        Compression::None => return Ok(input),
        Compression::Gzip => <Gzip as Decompressor<Bytes>>::decompress(&mut input, take),
        Compression::Snappy => <Snappy as Decompressor<Bytes>>::decompress(&mut input, take),
        Compression::Lz4 => <Lz4 as Decompressor<Bytes>>::decompress(&mut input, take),
        Compression::Zstd => <Zstd as Decompressor<Bytes>>::decompress(&mut input, take),
    };
    out.map_err(|_| bad(0, "records do not decompress"))
}

fn compress(codec: Compression, records: &[u8], out: &mut BytesMut) -> Result<(), BatchError> {
    let put = |b: &mut BytesMut| {
        b.put_slice(records);
        Ok(())
    };
    let done = match codec {
        Compression::None => {
            out.put_slice(records);
            Ok(())
        }
        Compression::Gzip => <Gzip as Compressor<BytesMut>>::compress(out, put),
        Compression::Snappy => <Snappy as Compressor<BytesMut>>::compress(out, put),
        Compression::Lz4 => <Lz4 as Compressor<BytesMut>>::compress(out, put),
        Compression::Zstd => <Zstd as Compressor<BytesMut>>::compress(out, put),
    };
    done.map_err(|_| bad(0, "records do not compress"))
}

/// Decodes a whole stored batch (framing and CRC already checked by whoever wrote or
/// recovered it): decompresses the records and locates each record's key and value.
pub fn decode(batch_bytes: &[u8]) -> Result<DecodedBatch, BatchError> {
    let header = batch::parse_header(batch_bytes)?;
    let total = header.total_len();
    if total < BATCH_HEADER_BYTES || total > batch_bytes.len() {
        return Err(BatchError::LengthMismatch {
            field: header.batch_length.get() as i64,
            actual: batch_bytes.len(),
        });
    }
    let records = decompress(codec(&header)?, &batch_bytes[BATCH_HEADER_BYTES..total])?;
    let count = header.records_count.get();
    if count < 0 {
        return Err(BatchError::BadRecordCount(count));
    }
    let mut spans = Vec::new();
    let mut pos = 0usize;
    for index in 0..count {
        let rest = &records[pos..];
        let (len, used) = batch::read_varint(rest).ok_or(bad(index, "truncated length"))?;
        let len = usize::try_from(len).map_err(|_| bad(index, "negative length"))?;
        let body_start = pos + used;
        let body = records
            .get(body_start..body_start + len)
            .ok_or(bad(index, "length exceeds batch"))?;
        let mut r = body.get(1..).ok_or(bad(index, "missing attributes"))?;
        let (timestamp_delta, used) =
            batch::read_varlong(r).ok_or(bad(index, "truncated timestamp delta"))?;
        r = &r[used..];
        let (offset_delta, used) =
            batch::read_varint(r).ok_or(bad(index, "truncated offset delta"))?;
        r = &r[used..];
        let field = |r: &mut &[u8]| -> Result<Option<Range<usize>>, BatchError> {
            let (len, used) = batch::read_varint(r).ok_or(bad(index, "truncated field"))?;
            *r = &r[used..];
            if len < 0 {
                return Ok(None);
            }
            let len = len as usize;
            if len > r.len() {
                return Err(bad(index, "field exceeds record"));
            }
            let start = body_start + (body.len() - r.len());
            *r = &r[len..];
            Ok(Some(start..start + len))
        };
        let key = field(&mut r)?;
        let value = field(&mut r)?;
        spans.push(RecordSpan {
            bytes: pos..body_start + len,
            offset: header.base_offset.get() + offset_delta as i64,
            timestamp: header.base_timestamp.get().wrapping_add(timestamp_delta),
            key,
            tombstone: value.is_none(),
        });
        pos = body_start + len;
    }
    if pos != records.len() {
        return Err(bad(count, "trailing bytes after the last record"));
    }
    Ok(DecodedBatch {
        header,
        records,
        spans,
    })
}

/// Kafka rejects a record without a key on a compacted topic with INVALID_RECORD
/// (`LogValidator`): it could never be compacted away.
pub fn check_keys(batch_bytes: &[u8]) -> Result<(), BatchError> {
    let decoded = decode(batch_bytes)?;
    match decoded.spans.iter().position(|s| s.key.is_none()) {
        Some(index) => Err(BatchError::NullKeyInCompactedTopic {
            index: index as i32,
        }),
        None => Ok(()),
    }
}

/// What became of one batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rewrite {
    /// Every record survives: the stored bytes are kept as they are.
    Unchanged,
    /// No record survives and the batch need not be kept: it is left out.
    Removed,
    /// Some records were removed (possibly all, for a batch that must be kept).
    Rewritten(Bytes),
}

/// Keeps the records `keep` says to keep. A batch left with no record is removed unless
/// `keep_empty`, in which case its header survives with `recordsCount` 0 (Kafka keeps
/// such batches so the producer state and the last offset are not lost).
pub fn rewrite(
    decoded: &DecodedBatch,
    keep_empty: bool,
    mut keep: impl FnMut(&DecodedBatch, &RecordSpan) -> bool,
) -> Result<Rewrite, BatchError> {
    let kept: Vec<&RecordSpan> = decoded.spans.iter().filter(|s| keep(decoded, s)).collect();
    if kept.len() == decoded.spans.len() {
        return Ok(Rewrite::Unchanged);
    }
    if kept.is_empty() && !keep_empty {
        return Ok(Rewrite::Removed);
    }
    let mut records = Vec::with_capacity(kept.iter().map(|s| s.bytes.len()).sum());
    for span in &kept {
        records.extend_from_slice(&decoded.records[span.bytes.clone()]);
    }
    let mut header = decoded.header;
    header.records_count = (kept.len() as i32).into();
    if let Some(max) = kept.iter().map(|s| s.timestamp).max() {
        header.max_timestamp = max.into();
    }
    let codec = if kept.is_empty() {
        // An empty batch is a bare uncompressed header, as Kafka writes it
        // (`DefaultRecordBatch.writeEmptyHeader`): librdkafka aborts on a compressed
        // payload that inflates to nothing.
        header.attributes = (header.attributes.get() & !0x7).into();
        Compression::None
    } else {
        codec(&header)?
    };
    let mut out = BytesMut::with_capacity(BATCH_HEADER_BYTES + records.len());
    out.put_slice(header.as_bytes());
    compress(codec, &records, &mut out)?;
    let batch_length =
        i32::try_from(out.len() - LOG_OVERHEAD).map_err(|_| BatchError::TooLarge(out.len()))?;
    out[8..12].copy_from_slice(&batch_length.to_be_bytes());
    let crc = crc32c::crc32c(&out[CRC_START..]);
    out[17..21].copy_from_slice(&crc.to_be_bytes());
    Ok(Rewrite::Rewritten(out.freeze()))
}

/// Kafka's `min.cleanable.dirty.ratio`: clean when dirty bytes are at least this share
/// of the cleanable bytes (per mille, so configs stay `Eq`).
pub fn dirty_enough(dirty_bytes: u64, cleanable_bytes: u64, min_ratio_per_mille: u16) -> bool {
    dirty_bytes > 0
        && (dirty_bytes as u128) * 1000 >= (cleanable_bytes as u128) * min_ratio_per_mille as u128
}

/// Parses `min.cleanable.dirty.ratio` ("0.5") into per mille.
pub fn parse_ratio_per_mille(value: &str) -> Option<u16> {
    let v: f64 = value.parse().ok()?;
    (0.0..=1.0)
        .contains(&v)
        .then(|| (v * 1000.0).round() as u16)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::build;

    /// A record's key and value, either null.
    type KeyValue<'a> = (Option<&'a [u8]>, Option<&'a [u8]>);

    fn stored(records: &[KeyValue<'_>], base: i64) -> Vec<u8> {
        let mut b = build::batch_kv(records, 1_000, 7, 2, 40);
        batch::patch(&mut b, base, 3);
        b
    }

    fn recompress(b: &[u8], codec: Compression, code: i16) -> Vec<u8> {
        let records = &b[BATCH_HEADER_BYTES..];
        let mut out = BytesMut::new();
        out.put_slice(&b[..BATCH_HEADER_BYTES]);
        compress(codec, records, &mut out).unwrap();
        let len = (out.len() - LOG_OVERHEAD) as i32;
        out[8..12].copy_from_slice(&len.to_be_bytes());
        out[21..23].copy_from_slice(&code.to_be_bytes());
        let crc = crc32c::crc32c(&out[CRC_START..]);
        out[17..21].copy_from_slice(&crc.to_be_bytes());
        out.to_vec()
    }

    #[test]
    fn rewrite_keeps_offsets_sequence_and_codec() {
        for (codec, code) in [
            (Compression::None, 0i16),
            (Compression::Gzip, 1),
            (Compression::Snappy, 2),
            (Compression::Lz4, 3),
            (Compression::Zstd, 4),
        ] {
            let plain = stored(
                &[
                    (Some(b"a"), Some(b"1")),
                    (Some(b"b"), Some(b"2")),
                    (Some(b"a"), None),
                    (Some(b"c"), Some(b"4")),
                ],
                100,
            );
            let b = if code == 0 {
                plain
            } else {
                recompress(&plain, codec, code)
            };
            let decoded = decode(&b).unwrap();
            assert_eq!(decoded.spans.len(), 4);
            assert!(decoded.spans[2].tombstone);
            // Drop the first and the last record.
            let Rewrite::Rewritten(out) =
                rewrite(&decoded, false, |_, s| s.offset == 101 || s.offset == 102).unwrap()
            else {
                panic!("expected a rewrite");
            };
            let h = batch::validate_framing_and_crc(&out).unwrap();
            assert_eq!(h.base_offset.get(), 100);
            assert_eq!(h.last_offset_delta.get(), 3);
            assert_eq!(h.base_sequence.get(), 40);
            assert_eq!(h.producer_id.get(), 7);
            assert_eq!(h.producer_epoch.get(), 2);
            assert_eq!(h.partition_leader_epoch.get(), 3);
            assert_eq!(h.records_count.get(), 2);
            assert_eq!(h.compression(), Some(codec));
            let again = decode(&out).unwrap();
            let offsets: Vec<i64> = again.spans.iter().map(|s| s.offset).collect();
            assert_eq!(offsets, vec![101, 102]);
            assert_eq!(again.key(&again.spans[0]), Some(&b"b"[..]));
            // Emptied, it is a bare uncompressed header whatever the codec was.
            let Rewrite::Rewritten(empty) = rewrite(&decoded, true, |_, _| false).unwrap() else {
                panic!("expected an empty batch");
            };
            assert_eq!(empty.len(), BATCH_HEADER_BYTES);
            let h = batch::validate_framing_and_crc(&empty).unwrap();
            assert_eq!(h.compression(), Some(Compression::None));
            assert_eq!(h.last_offset(), 103);
        }
    }

    #[test]
    fn empty_batches_are_removed_or_kept_as_headers() {
        let b = stored(&[(Some(b"a"), Some(b"1")), (Some(b"b"), Some(b"2"))], 10);
        let d = decode(&b).unwrap();
        assert_eq!(rewrite(&d, false, |_, _| false).unwrap(), Rewrite::Removed);
        assert_eq!(rewrite(&d, false, |_, _| true).unwrap(), Rewrite::Unchanged);
        let Rewrite::Rewritten(out) = rewrite(&d, true, |_, _| false).unwrap() else {
            panic!("expected an empty batch");
        };
        let h = batch::validate_framing_and_crc(&out).unwrap();
        assert_eq!(out.len(), BATCH_HEADER_BYTES);
        assert_eq!(h.records_count.get(), 0);
        assert_eq!(h.last_offset(), 11);
    }

    #[test]
    fn null_keys_are_found_and_garbage_is_an_error() {
        let ok = stored(&[(Some(b"a"), Some(b"1"))], 0);
        assert!(check_keys(&ok).is_ok());
        let no_key = stored(&[(Some(b"a"), Some(b"1")), (None, Some(b"2"))], 0);
        assert_eq!(
            check_keys(&no_key),
            Err(BatchError::NullKeyInCompactedTopic { index: 1 })
        );
        let mut torn = ok.clone();
        torn.truncate(torn.len() - 1);
        let len = (torn.len() - LOG_OVERHEAD) as i32;
        torn[8..12].copy_from_slice(&len.to_be_bytes());
        assert!(decode(&torn).is_err());
        assert!(decode(&[0u8; 10]).is_err());
    }

    #[test]
    fn dirty_ratio() {
        assert!(!dirty_enough(0, 0, 0));
        assert!(dirty_enough(50, 100, 500));
        assert!(!dirty_enough(49, 100, 500));
        assert_eq!(parse_ratio_per_mille("0.5"), Some(500));
        assert_eq!(parse_ratio_per_mille("1.5"), None);
    }

    #[test]
    fn offset_map_keeps_the_latest() {
        let mut m = OffsetMap::new();
        m.insert(b"k", 5);
        m.insert(b"k", 3);
        assert_eq!(m.latest(b"k"), Some(5));
        assert_eq!(m.latest(b"other"), None);
    }
}
