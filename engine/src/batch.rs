//! Kafka RecordBatch v2: parse, validate and patch, with no IO.
//!
//! Invariants: a batch that passed [`validate_batch`] has correct framing, magic 2, a
//! CRC-32C that matches bytes `attributes..end`, at least one record, and (when
//! uncompressed) records whose lengths exactly fill the batch with offset deltas 0..n-1.
//! Patching `baseOffset` and `partitionLeaderEpoch` leaves the CRC valid because the CRC
//! does not cover them. Nothing here panics on any input.

use zerocopy::byteorder::big_endian::{I16, I32, I64, U32};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::limits::{BATCH_HEADER_BYTES, MAX_BATCH_BYTES};

/// Bytes before `batchLength`'s coverage starts: baseOffset(8) + batchLength(4).
pub const LOG_OVERHEAD: usize = 12;
/// Offset of the first CRC-covered byte (attributes).
const CRC_START: usize = 21;

/// The fixed 61-byte header, big-endian on disk and on the wire.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct BatchHeader {
    pub base_offset: I64,
    pub batch_length: I32,
    pub partition_leader_epoch: I32,
    pub magic: i8,
    pub crc: U32,
    pub attributes: I16,
    pub last_offset_delta: I32,
    pub base_timestamp: I64,
    pub max_timestamp: I64,
    pub producer_id: I64,
    pub producer_epoch: I16,
    pub base_sequence: I32,
    pub records_count: I32,
}

const _: () = assert!(std::mem::size_of::<BatchHeader>() == BATCH_HEADER_BYTES);

/// Compression codec, attributes bits 0-2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl BatchHeader {
    /// Total bytes of this batch including the 12-byte log overhead.
    pub fn total_len(&self) -> usize {
        LOG_OVERHEAD + self.batch_length.get().max(0) as usize
    }
    pub fn compression(&self) -> Option<Compression> {
        match self.attributes.get() & 0x7 {
            0 => Some(Compression::None),
            1 => Some(Compression::Gzip),
            2 => Some(Compression::Snappy),
            3 => Some(Compression::Lz4),
            4 => Some(Compression::Zstd),
            _ => None,
        }
    }
    pub fn is_transactional(&self) -> bool {
        self.attributes.get() & 0x10 != 0
    }
    pub fn is_control(&self) -> bool {
        self.attributes.get() & 0x20 != 0
    }
    pub fn last_offset(&self) -> i64 {
        self.base_offset.get() + self.last_offset_delta.get() as i64
    }
    /// Number of offsets this batch occupies.
    pub fn offset_count(&self) -> i64 {
        self.last_offset_delta.get() as i64 + 1
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("batch shorter than the 61-byte header ({0} bytes)")]
    TooShort(usize),
    #[error("batch length field {field} does not match the {actual} bytes present")]
    LengthMismatch { field: i64, actual: usize },
    #[error("batch of {0} bytes exceeds the {MAX_BATCH_BYTES}-byte limit")]
    TooLarge(usize),
    #[error("unsupported magic {0}, only RecordBatch v2 (magic 2) is accepted")]
    BadMagic(i8),
    #[error("CRC mismatch: header says {expected:#010x}, bytes give {actual:#010x}")]
    CrcMismatch { expected: u32, actual: u32 },
    #[error("record count {0} is not positive")]
    BadRecordCount(i32),
    #[error("lastOffsetDelta {last_offset_delta} does not match record count {count}")]
    OffsetDeltaMismatch { last_offset_delta: i32, count: i32 },
    #[error("unknown compression codec {0}")]
    BadCompression(i16),
    #[error("record {index}: {reason}")]
    BadRecord { index: i32, reason: &'static str },
    #[error("transactional and control batches are not supported")]
    Transactional,
    #[error("record {index} has no key, which a compacted topic requires")]
    NullKeyInCompactedTopic { index: i32 },
}

/// Reads the header without validating anything but its presence.
pub fn parse_header(buf: &[u8]) -> Result<BatchHeader, BatchError> {
    BatchHeader::read_from_prefix(buf)
        .map(|(h, _)| h)
        .map_err(|_| BatchError::TooShort(buf.len()))
}

/// Validates exactly one batch occupying all of `buf`.
pub fn validate_batch(buf: &[u8]) -> Result<BatchHeader, BatchError> {
    let header = validate_framing_and_crc(buf)?;
    let count = header.records_count.get();
    if count <= 0 {
        return Err(BatchError::BadRecordCount(count));
    }
    if header.last_offset_delta.get() != count - 1 {
        return Err(BatchError::OffsetDeltaMismatch {
            last_offset_delta: header.last_offset_delta.get(),
            count,
        });
    }
    if header.is_transactional() || header.is_control() {
        return Err(BatchError::Transactional);
    }
    match header.compression() {
        None => return Err(BatchError::BadCompression(header.attributes.get() & 0x7)),
        Some(Compression::None) => validate_records(&buf[BATCH_HEADER_BYTES..], count)?,
        // Compressed payloads are stored as sent; their integrity is the CRC's job.
        Some(_) => {}
    }
    Ok(header)
}

/// Framing, magic and CRC only: what recovery needs to trust bytes it wrote itself.
pub fn validate_framing_and_crc(buf: &[u8]) -> Result<BatchHeader, BatchError> {
    let header = parse_header(buf)?;
    let field = header.batch_length.get() as i64;
    if field + LOG_OVERHEAD as i64 != buf.len() as i64 {
        return Err(BatchError::LengthMismatch {
            field,
            actual: buf.len(),
        });
    }
    if buf.len() > MAX_BATCH_BYTES {
        return Err(BatchError::TooLarge(buf.len()));
    }
    if header.magic != 2 {
        return Err(BatchError::BadMagic(header.magic));
    }
    let actual = crc32c::crc32c(&buf[CRC_START..]);
    if actual != header.crc.get() {
        return Err(BatchError::CrcMismatch {
            expected: header.crc.get(),
            actual,
        });
    }
    Ok(header)
}

/// Walks uncompressed records: each is a zigzag varint length followed by that many
/// bytes, starting with attributes(1), timestampDelta(varlong), offsetDelta(varint).
fn validate_records(mut records: &[u8], count: i32) -> Result<(), BatchError> {
    for index in 0..count {
        let bad = |reason| BatchError::BadRecord { index, reason };
        let (len, used) = read_varint(records).ok_or(bad("truncated length"))?;
        records = &records[used..];
        if len < 0 || len as usize > records.len() {
            return Err(bad("length exceeds batch"));
        }
        let (body, rest) = records.split_at(len as usize);
        records = rest;
        let body = body.get(1..).ok_or(bad("missing attributes"))?;
        let (_, used) = read_varlong(body).ok_or(bad("truncated timestamp delta"))?;
        let (offset_delta, _) = read_varint(&body[used..]).ok_or(bad("truncated offset delta"))?;
        if offset_delta as i64 != index as i64 {
            return Err(bad("offset delta out of sequence"));
        }
    }
    if !records.is_empty() {
        return Err(BatchError::BadRecord {
            index: count,
            reason: "trailing bytes after the last record",
        });
    }
    Ok(())
}

/// Zigzag varint (i32). Returns value and bytes consumed.
pub fn read_varint(buf: &[u8]) -> Option<(i32, usize)> {
    let (raw, used) = read_unsigned_varint(buf, 5)?;
    let raw = raw as u32;
    Some((((raw >> 1) as i32) ^ -((raw & 1) as i32), used))
}

/// Zigzag varlong (i64).
pub fn read_varlong(buf: &[u8]) -> Option<(i64, usize)> {
    let (raw, used) = read_unsigned_varint(buf, 10)?;
    Some((((raw >> 1) as i64) ^ -((raw & 1) as i64), used))
}

fn read_unsigned_varint(buf: &[u8], max_bytes: usize) -> Option<(u64, usize)> {
    let mut value: u64 = 0;
    for (i, &b) in buf.iter().take(max_bytes).enumerate() {
        value |= ((b & 0x7f) as u64) << (7 * i);
        if b & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

/// Splits a produce request's `records` field into batches, validating each.
/// An error in any batch rejects the whole field: partial appends never happen.
pub fn split_and_validate(mut buf: &[u8]) -> Result<Vec<(usize, BatchHeader)>, BatchError> {
    let mut out = Vec::new();
    let mut pos = 0;
    if buf.is_empty() {
        return Err(BatchError::TooShort(0));
    }
    while !buf.is_empty() {
        let header = parse_header(buf)?;
        let total = header.total_len();
        if header.batch_length.get() < (BATCH_HEADER_BYTES - LOG_OVERHEAD) as i32
            || total > buf.len()
        {
            return Err(BatchError::LengthMismatch {
                field: header.batch_length.get() as i64,
                actual: buf.len(),
            });
        }
        let header = validate_batch(&buf[..total])?;
        out.push((pos, header));
        pos += total;
        buf = &buf[total..];
    }
    Ok(out)
}

/// Assigns offsets and epoch in place. The CRC does not cover these fields.
pub fn patch(buf: &mut [u8], base_offset: i64, leader_epoch: i32) {
    // The caller validated the batch, so the header is present; a short buffer is a bug.
    assert!(buf.len() >= BATCH_HEADER_BYTES, "patch on a short batch");
    buf[0..8].copy_from_slice(&base_offset.to_be_bytes());
    buf[12..16].copy_from_slice(&leader_epoch.to_be_bytes());
}

/// What a recovery scan finds at a position in a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScanStep {
    /// A whole, valid batch of `len` bytes.
    Batch { header: BatchHeader, len: usize },
    /// The bytes end mid-batch; `needed` bytes from this position would complete it.
    Incomplete { needed: usize },
    /// Not a valid batch: the log ends here (torn write, zero padding or corruption).
    End(BatchError),
}

impl PartialEq for BatchHeader {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}
impl Eq for BatchHeader {}

/// One step of recovery: decides whether a valid batch starts at `buf[0]`.
pub fn scan_step(buf: &[u8]) -> ScanStep {
    let header = match parse_header(buf) {
        Ok(h) => h,
        Err(_) if buf.len() < BATCH_HEADER_BYTES => {
            return ScanStep::Incomplete {
                needed: BATCH_HEADER_BYTES,
            }
        }
        Err(e) => return ScanStep::End(e),
    };
    let field = header.batch_length.get();
    if field < (BATCH_HEADER_BYTES - LOG_OVERHEAD) as i32 || header.total_len() > MAX_BATCH_BYTES {
        return ScanStep::End(BatchError::LengthMismatch {
            field: field as i64,
            actual: buf.len(),
        });
    }
    if header.magic != 2 {
        return ScanStep::End(BatchError::BadMagic(header.magic));
    }
    let total = header.total_len();
    if buf.len() < total {
        return ScanStep::Incomplete { needed: total };
    }
    match validate_framing_and_crc(&buf[..total]) {
        Ok(header) if header.records_count.get() >= 0 && header.last_offset_delta.get() >= 0 => {
            ScanStep::Batch { header, len: total }
        }
        Ok(header) => ScanStep::End(BatchError::BadRecordCount(header.records_count.get())),
        Err(e) => ScanStep::End(e),
    }
}

/// One record of an uncompressed batch: key and value (None = null).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordView<'a> {
    pub offset_delta: i32,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
}

/// Reads the records of a validated, uncompressed batch. Returns None for compressed
/// batches or malformed records (never panics).
pub fn records(batch: &[u8]) -> Option<Vec<RecordView<'_>>> {
    let header = parse_header(batch).ok()?;
    if header.compression()? != Compression::None {
        return None;
    }
    let mut rest = batch.get(BATCH_HEADER_BYTES..header.total_len())?;
    let mut out = Vec::with_capacity(header.records_count.get().max(0) as usize);
    for _ in 0..header.records_count.get() {
        let (len, used) = read_varint(rest)?;
        rest = rest.get(used..)?;
        let body = rest.get(..usize::try_from(len).ok()?)?;
        rest = &rest[body.len()..];
        let mut r = body.get(1..)?; // attributes
        let (_, used) = read_varlong(r)?;
        r = r.get(used..)?;
        let (offset_delta, used) = read_varint(r)?;
        r = r.get(used..)?;
        let field = |r: &mut &'_ [u8]| -> Option<Option<std::ops::Range<usize>>> {
            let (len, used) = read_varint(r)?;
            *r = r.get(used..)?;
            if len < 0 {
                return Some(None);
            }
            let start = body.len() - r.len();
            *r = r.get(len as usize..)?;
            Some(Some(start..start + len as usize))
        };
        let key = field(&mut r)?;
        let value = field(&mut r)?;
        out.push(RecordView {
            offset_delta,
            key: key.map(|k| &body[k]),
            value: value.map(|v| &body[v]),
        });
    }
    Some(out)
}

/// Builds a valid uncompressed batch. Used by tests, benches, fuzz seeds and perf tools.
pub mod build {
    use super::*;

    fn put_varint(out: &mut Vec<u8>, v: i64) {
        let mut z = ((v << 1) ^ (v >> 63)) as u64;
        loop {
            if z < 0x80 {
                out.push(z as u8);
                return;
            }
            out.push((z as u8 & 0x7f) | 0x80);
            z >>= 7;
        }
    }

    /// A batch of `values` (optional key each), producer id -1, timestamps `base_timestamp`.
    pub fn batch(records: &[(Option<&[u8]>, &[u8])], base_timestamp: i64) -> Vec<u8> {
        batch_with_producer(records, base_timestamp, -1, -1, -1)
    }

    pub fn batch_with_producer(
        records: &[(Option<&[u8]>, &[u8])],
        base_timestamp: i64,
        producer_id: i64,
        producer_epoch: i16,
        base_sequence: i32,
    ) -> Vec<u8> {
        let kv: Vec<(Option<&[u8]>, Option<&[u8]>)> =
            records.iter().map(|(k, v)| (*k, Some(*v))).collect();
        batch_kv(
            &kv,
            base_timestamp,
            producer_id,
            producer_epoch,
            base_sequence,
        )
    }

    /// Keys and values both nullable (a null value is a tombstone).
    pub fn batch_kv(
        records: &[(Option<&[u8]>, Option<&[u8]>)],
        base_timestamp: i64,
        producer_id: i64,
        producer_epoch: i16,
        base_sequence: i32,
    ) -> Vec<u8> {
        let mut body = Vec::new();
        for (i, (key, value)) in records.iter().enumerate() {
            let mut rec = vec![0u8]; // attributes
            put_varint(&mut rec, 0); // timestamp delta
            put_varint(&mut rec, i as i64); // offset delta
            match key {
                Some(k) => {
                    put_varint(&mut rec, k.len() as i64);
                    rec.extend_from_slice(k);
                }
                None => put_varint(&mut rec, -1),
            }
            match value {
                Some(v) => {
                    put_varint(&mut rec, v.len() as i64);
                    rec.extend_from_slice(v);
                }
                None => put_varint(&mut rec, -1),
            }
            put_varint(&mut rec, 0); // headers
            put_varint(&mut body, rec.len() as i64);
            body.extend_from_slice(&rec);
        }
        let n = records.len() as i32;
        let header = BatchHeader {
            base_offset: 0.into(),
            batch_length: ((BATCH_HEADER_BYTES - LOG_OVERHEAD + body.len()) as i32).into(),
            partition_leader_epoch: 0.into(),
            magic: 2,
            crc: 0.into(),
            attributes: 0.into(),
            last_offset_delta: (n - 1).into(),
            base_timestamp: base_timestamp.into(),
            max_timestamp: base_timestamp.into(),
            producer_id: producer_id.into(),
            producer_epoch: producer_epoch.into(),
            base_sequence: base_sequence.into(),
            records_count: n.into(),
        };
        let mut out = header.as_bytes().to_vec();
        out.extend_from_slice(&body);
        let crc = crc32c::crc32c(&out[CRC_START..]);
        out[17..21].copy_from_slice(&crc.to_be_bytes());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::build::*;
    use super::*;

    fn sample() -> Vec<u8> {
        batch(
            &[(Some(b"k1"), b"hello"), (None, b"world"), (Some(b""), b"")],
            1000,
        )
    }

    #[test]
    fn valid_batch_passes() {
        let b = sample();
        let h = validate_batch(&b).unwrap();
        assert_eq!(h.records_count.get(), 3);
        assert_eq!(h.offset_count(), 3);
        assert_eq!(h.total_len(), b.len());
    }

    #[test]
    fn patch_keeps_crc_valid() {
        let mut b = sample();
        patch(&mut b, 12345, 7);
        let h = validate_batch(&b).unwrap();
        assert_eq!(h.base_offset.get(), 12345);
        assert_eq!(h.partition_leader_epoch.get(), 7);
        assert_eq!(h.last_offset(), 12347);
    }

    #[test]
    fn every_single_byte_flip_in_crc_range_is_caught() {
        let b = sample();
        for i in CRC_START..b.len() {
            let mut c = b.clone();
            c[i] ^= 0x01;
            assert!(validate_batch(&c).is_err(), "flip at {i} accepted");
        }
    }

    #[test]
    fn rejects_bad_magic_length_count() {
        let mut b = sample();
        b[16] = 1;
        assert_eq!(validate_batch(&b), Err(BatchError::BadMagic(1)));
        let b = sample();
        assert!(matches!(
            validate_batch(&b[..b.len() - 1]),
            Err(BatchError::LengthMismatch { .. })
        ));
        assert!(matches!(
            validate_batch(&b[..10]),
            Err(BatchError::TooShort(10))
        ));
    }

    #[test]
    fn rejects_record_count_lies() {
        // Claim 4 records where 3 are present, and fix the CRC so only the count is wrong.
        let mut b = sample();
        b[57..61].copy_from_slice(&4i32.to_be_bytes());
        b[23..27].copy_from_slice(&3i32.to_be_bytes());
        let crc = crc32c::crc32c(&b[CRC_START..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        assert!(matches!(
            validate_batch(&b),
            Err(BatchError::BadRecord { .. })
        ));
    }

    #[test]
    fn split_multiple_batches() {
        let mut buf = sample();
        buf.extend(batch(&[(None, b"x")], 5));
        let parts = split_and_validate(&buf).unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[1].0, sample().len());
        buf.push(0);
        assert!(split_and_validate(&buf).is_err());
    }

    #[test]
    fn scan_step_decisions() {
        let b = sample();
        assert!(matches!(scan_step(&b), ScanStep::Batch { len, .. } if len == b.len()));
        assert!(matches!(
            scan_step(&b[..30]),
            ScanStep::Incomplete { needed: 61 }
        ));
        assert!(
            matches!(scan_step(&b[..70]), ScanStep::Incomplete { needed } if needed == b.len())
        );
        assert!(matches!(scan_step(&[0u8; 100]), ScanStep::End(_)));
        let mut torn = b.clone();
        let n = torn.len();
        torn[n - 1] ^= 0xff;
        assert!(matches!(
            scan_step(&torn),
            ScanStep::End(BatchError::CrcMismatch { .. })
        ));
    }

    #[test]
    fn records_read_back() {
        let b = build::batch_kv(&[(Some(b"k"), None), (None, Some(b"v2"))], 0, -1, -1, -1);
        validate_batch(&b).unwrap();
        let r = records(&b).unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!((r[0].key, r[0].value), (Some(&b"k"[..]), None));
        assert_eq!(
            (r[1].key, r[1].value, r[1].offset_delta),
            (None, Some(&b"v2"[..]), 1)
        );
        for cut in 0..b.len() {
            let _ = records(&b[..cut]);
        }
    }

    #[test]
    fn varints() {
        assert_eq!(read_varint(&[0x01]), Some((-1, 1)));
        assert_eq!(read_varint(&[0x02]), Some((1, 1)));
        assert_eq!(read_varint(&[0xff, 0xff, 0xff, 0xff, 0xff, 0x01]), None);
        assert_eq!(read_varlong(&[0x80]), None);
    }
}
