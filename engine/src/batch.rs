//! Kafka RecordBatch v2: parse, validate and patch, with no IO.
//!
//! Invariants: a batch that passed [`validate_batch`] has correct framing, magic 2, a
//! CRC-32C that matches bytes `attributes..end`, at least one record, and (when
//! uncompressed) records whose lengths exactly fill the batch with offset deltas 0..n-1.
//! Patching `baseOffset` and `partitionLeaderEpoch` leaves the CRC valid because the CRC
//! does not cover them. Nothing here panics on any input.
//!
//! Record bytes arrive either as one buffer (a Kafka TCP request) or as the chunks a QUIC
//! stream delivered (views of decrypted packets, split anywhere: inside a header, a CRC, a
//! record). Validation reads them through [`Scattered`] by position, so both are checked by
//! the same code with no copy; a buffer is the one-chunk case.

use zerocopy::byteorder::big_endian::{I16, I32, I64, U32};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::limits::{BATCH_HEADER_BYTES, MAX_BATCH_BYTES};

/// Bytes before `batchLength`'s coverage starts: baseOffset(8) + batchLength(4).
pub const LOG_OVERHEAD: usize = 12;
/// Offset of the first CRC-covered byte (attributes).
const CRC_START: usize = 21;
/// The most bytes of a record that the record walk reads: its length (varint, <= 5 bytes),
/// attributes (1), timestampDelta (varlong, <= 10) and offsetDelta (varint, <= 5).
const RECORD_PREFIX_MAX: usize = 5 + 1 + 10 + 5;

/// Bytes read as one sequence from a list of chunks: the chunks of a QUIC stream. Reads go by absolute position and may cross chunk
/// boundaries; a read that does is gathered into a caller's small stack buffer (at most a
/// batch header or a record prefix), never the records themselves. Reads that move forward,
/// which is all validation and staging do, find their chunk in amortised O(1).
pub struct Scattered<'a, C> {
    chunks: &'a [C],
    len: usize,
    /// The chunk the last read started in, and its position in the sequence.
    chunk: usize,
    chunk_start: usize,
}

impl<'a, C: AsRef<[u8]>> Scattered<'a, C> {
    pub fn new(chunks: &'a [C]) -> Self {
        Scattered {
            chunks,
            len: chunks.iter().map(|c| c.as_ref().len()).sum(),
            chunk: 0,
            chunk_start: 0,
        }
    }

    /// Bytes in all chunks together.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The chunk holding `pos` and the offset of `pos` in it. `pos < self.len`.
    fn seek(&mut self, pos: usize) -> (&'a [u8], usize) {
        assert!(pos < self.len, "read at {pos} past the end ({})", self.len);
        if pos < self.chunk_start {
            self.chunk = 0;
            self.chunk_start = 0;
        }
        let chunks: &'a [C] = self.chunks;
        loop {
            let chunk = chunks[self.chunk].as_ref();
            if pos < self.chunk_start + chunk.len() {
                return (chunk, pos - self.chunk_start);
            }
            self.chunk_start += chunk.len();
            self.chunk += 1;
        }
    }

    /// Calls `f` with the pieces of `pos..pos + n` in order, one per chunk touched.
    /// `pos + n <= self.len`.
    fn for_each_piece(&mut self, mut pos: usize, n: usize, mut f: impl FnMut(&'a [u8])) {
        let end = pos + n;
        while pos < end {
            let (chunk, offset) = self.seek(pos);
            let take = (chunk.len() - offset).min(end - pos);
            f(&chunk[offset..offset + take]);
            pos += take;
        }
    }

    /// Copies `pos..pos + dst.len()` (within `self.len`) into `dst`: the one copy of
    /// record bytes on the produce path.
    pub fn copy_to(&mut self, pos: usize, dst: &mut [u8]) {
        let mut filled = 0;
        self.for_each_piece(pos, dst.len(), |piece| {
            dst[filled..filled + piece.len()].copy_from_slice(piece);
            filled += piece.len();
        });
    }
}

/// Where validation reads record bytes: one buffer, or chunks ([`Scattered`]). One buffer
/// gets its own instance of the validation code, so a Kafka request (and a QUIC body that
/// came in one packet) pays nothing for chunks.
trait RecordSource {
    fn len(&self) -> usize;

    /// Bytes from `pos` (<= `end` <= `self.len()`) as one slice: at least
    /// `scratch.len()` of them or all up to `end`, at most up to `end`. Borrowed when
    /// they lie in one piece, else gathered into `scratch`.
    fn window<'s>(&'s mut self, pos: usize, end: usize, scratch: &'s mut [u8]) -> &'s [u8];

    /// CRC-32C of `pos..pos + n` (`pos + n <= self.len()`).
    fn crc32c(&mut self, pos: usize, n: usize) -> u32;

    /// The batch header at `pos` (<= `end`), if `pos..end` holds one.
    fn header_at(&mut self, pos: usize, end: usize) -> Result<BatchHeader, BatchError> {
        let mut scratch = [0u8; BATCH_HEADER_BYTES];
        parse_header(self.window(pos, end, &mut scratch))
    }
}

impl RecordSource for &[u8] {
    fn len(&self) -> usize {
        <[u8]>::len(self)
    }

    fn window<'s>(&'s mut self, pos: usize, end: usize, _: &'s mut [u8]) -> &'s [u8] {
        &self[pos..end]
    }

    fn crc32c(&mut self, pos: usize, n: usize) -> u32 {
        crc32c::crc32c(&self[pos..pos + n])
    }
}

impl<C: AsRef<[u8]>> RecordSource for Scattered<'_, C> {
    fn len(&self) -> usize {
        self.len
    }

    fn window<'s>(&'s mut self, pos: usize, end: usize, scratch: &'s mut [u8]) -> &'s [u8] {
        let n = (end - pos).min(scratch.len());
        if n == 0 {
            return &[];
        }
        let (chunk, offset) = self.seek(pos);
        if chunk.len() - offset >= n {
            return &chunk[offset..chunk.len().min(offset + end - pos)];
        }
        let mut filled = 0;
        self.for_each_piece(pos, n, |piece| {
            scratch[filled..filled + piece.len()].copy_from_slice(piece);
            filled += piece.len();
        });
        &scratch[..n]
    }

    fn crc32c(&mut self, pos: usize, n: usize) -> u32 {
        let mut crc = 0;
        self.for_each_piece(pos, n, |piece| crc = crc32c::crc32c_append(crc, piece));
        crc
    }
}

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
pub fn validate_batch(mut buf: &[u8]) -> Result<BatchHeader, BatchError> {
    let len = buf.len();
    validate_batch_at(&mut buf, 0, len)
}

/// Validates exactly one batch occupying `pos..pos + len` of `src`.
fn validate_batch_at(
    src: &mut impl RecordSource,
    pos: usize,
    len: usize,
) -> Result<BatchHeader, BatchError> {
    let header = validate_framing_and_crc_at(src, pos, len)?;
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
        Some(Compression::None) => {
            validate_records(src, pos + BATCH_HEADER_BYTES, pos + len, count)?
        }
        // Compressed payloads are stored as sent; their integrity is the CRC's job.
        Some(_) => {}
    }
    Ok(header)
}

/// Framing, magic and CRC only: what recovery needs to trust bytes it wrote itself.
pub fn validate_framing_and_crc(mut buf: &[u8]) -> Result<BatchHeader, BatchError> {
    let len = buf.len();
    validate_framing_and_crc_at(&mut buf, 0, len)
}

/// Framing, magic and CRC of one batch occupying `pos..pos + len` of `src`.
fn validate_framing_and_crc_at(
    src: &mut impl RecordSource,
    pos: usize,
    len: usize,
) -> Result<BatchHeader, BatchError> {
    let header = src.header_at(pos, pos + len)?;
    let field = header.batch_length.get() as i64;
    if field + LOG_OVERHEAD as i64 != len as i64 {
        return Err(BatchError::LengthMismatch { field, actual: len });
    }
    if len > MAX_BATCH_BYTES {
        return Err(BatchError::TooLarge(len));
    }
    if header.magic != 2 {
        return Err(BatchError::BadMagic(header.magic));
    }
    let actual = src.crc32c(pos + CRC_START, len - CRC_START);
    if actual != header.crc.get() {
        return Err(BatchError::CrcMismatch {
            expected: header.crc.get(),
            actual,
        });
    }
    Ok(header)
}

/// Walks uncompressed records in `pos..end` of `src`: each is a zigzag varint length
/// followed by that many bytes, starting with attributes(1), timestampDelta(varlong),
/// offsetDelta(varint). Only a record's first [`RECORD_PREFIX_MAX`] bytes are read.
fn validate_records(
    src: &mut impl RecordSource,
    mut pos: usize,
    end: usize,
    count: i32,
) -> Result<(), BatchError> {
    let mut scratch = [0u8; RECORD_PREFIX_MAX];
    for index in 0..count {
        let bad = |reason| BatchError::BadRecord { index, reason };
        // The length and, when the record is long enough, the fields after it: varints
        // read no further than their maximum width, so a prefix decides as the whole would.
        let window = src.window(pos, end, &mut scratch);
        let (len, used) = read_varint(window).ok_or(bad("truncated length"))?;
        let rest = &window[used..];
        if len < 0 || len as usize > end - pos - used {
            return Err(bad("length exceeds batch"));
        }
        // The record, or as much of it as the window holds: then at least the 16 bytes
        // the fields below can take.
        let body = rest.get(..len as usize).unwrap_or(rest);
        let body = body.get(1..).ok_or(bad("missing attributes"))?;
        let (_, used_ts) = read_varlong(body).ok_or(bad("truncated timestamp delta"))?;
        let (offset_delta, _) =
            read_varint(&body[used_ts..]).ok_or(bad("truncated offset delta"))?;
        if offset_delta as i64 != index as i64 {
            return Err(bad("offset delta out of sequence"));
        }
        pos += used + len as usize;
    }
    if pos != end {
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
    split_and_validate_in(&mut buf)
}

/// [`split_and_validate`] for records received as chunks (split anywhere). Positions are
/// in the sequence of all chunks.
pub fn split_and_validate_chunks<C: AsRef<[u8]>>(
    chunks: &[C],
) -> Result<Vec<(usize, BatchHeader)>, BatchError> {
    match chunks {
        [one] => split_and_validate(one.as_ref()),
        _ => split_and_validate_in(&mut Scattered::new(chunks)),
    }
}

fn split_and_validate_in(
    src: &mut impl RecordSource,
) -> Result<Vec<(usize, BatchHeader)>, BatchError> {
    let len = src.len();
    let mut out = Vec::new();
    let mut pos = 0;
    if len == 0 {
        return Err(BatchError::TooShort(0));
    }
    while pos < len {
        let remaining = len - pos;
        let header = src.header_at(pos, len)?;
        let total = header.total_len();
        if header.batch_length.get() < (BATCH_HEADER_BYTES - LOG_OVERHEAD) as i32
            || total > remaining
        {
            return Err(BatchError::LengthMismatch {
                field: header.batch_length.get() as i64,
                actual: remaining,
            });
        }
        let header = validate_batch_at(src, pos, total)?;
        out.push((pos, header));
        pos += total;
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

    /// A record as `batch_kv` takes it: key and value, both nullable.
    pub type KeyValue<'a> = (Option<&'a [u8]>, Option<&'a [u8]>);

    pub fn batch_with_producer(
        records: &[(Option<&[u8]>, &[u8])],
        base_timestamp: i64,
        producer_id: i64,
        producer_epoch: i16,
        base_sequence: i32,
    ) -> Vec<u8> {
        let kv: Vec<KeyValue> = records.iter().map(|(k, v)| (*k, Some(*v))).collect();
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
        records: &[KeyValue],
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

    /// `buf` cut at `cuts` (ascending positions) into chunks.
    fn cut(buf: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut from = 0;
        for &c in cuts.iter().chain(std::iter::once(&buf.len())) {
            out.push(buf[from..c].to_vec());
            from = c;
        }
        out
    }

    /// Two batches back to back and ways to cut them: inside a header, inside the CRC
    /// (bytes 17..21), at the header's end, inside a record, across the batch boundary,
    /// with empty chunks, and into single bytes.
    fn two_batches_and_cuts() -> (Vec<u8>, Vec<Vec<usize>>) {
        let mut buf = sample();
        let first = buf.len();
        buf.extend(batch(&[(Some(b"key"), b"a longer value"), (None, b"v")], 7));
        let mut cuts = vec![
            vec![5],
            vec![19],
            vec![17, 18, 20, 21],
            vec![61],
            vec![62, 66],
            vec![first - 1, first + 1],
            vec![first + 19],
            vec![0, 0, 30, 30, buf.len()],
            (1..buf.len()).collect(),
        ];
        cuts.extend((1..buf.len()).map(|c| vec![c]));
        (buf, cuts)
    }

    #[test]
    fn chunks_split_anywhere_validate_as_the_whole() {
        let (buf, cuts) = two_batches_and_cuts();
        let whole = split_and_validate(&buf).unwrap();
        assert_eq!(whole.len(), 2);
        for cuts in &cuts {
            let chunks = cut(&buf, cuts);
            assert_eq!(
                split_and_validate_chunks(&chunks).unwrap(),
                whole,
                "{cuts:?}"
            );
            let mut copied = vec![0u8; buf.len() - 3];
            Scattered::new(&chunks).copy_to(3, &mut copied);
            assert_eq!(copied, buf[3..], "{cuts:?}");
        }
    }

    #[test]
    fn chunks_split_anywhere_reject_as_the_whole() {
        let (buf, cuts) = two_batches_and_cuts();
        let first = sample().len();
        let mut corrupt = Vec::new();
        // A flipped bit in the second batch's records (CRC mismatch).
        let mut b = buf.clone();
        b[buf.len() - 2] ^= 0x40;
        corrupt.push(b);
        // A record length that overruns its batch, with the CRC made to match.
        let mut b = buf.clone();
        b[first + BATCH_HEADER_BYTES] = 0x7e;
        let crc = crc32c::crc32c(&b[first + CRC_START..]);
        b[first + 17..first + 21].copy_from_slice(&crc.to_be_bytes());
        corrupt.push(b);
        // A batch length that runs past the end, and a header cut short.
        let mut b = buf.clone();
        b[first + 8..first + 12].copy_from_slice(&1000i32.to_be_bytes());
        corrupt.push(b);
        corrupt.push(buf[..first + 30].to_vec());
        for bad in &corrupt {
            let whole = split_and_validate(bad).unwrap_err();
            let single_bytes: Vec<usize> = (1..bad.len()).collect();
            let fitting = cuts.iter().filter(|c| c.iter().all(|&c| c <= bad.len()));
            for cuts in fitting.chain(std::iter::once(&single_bytes)) {
                let chunks = cut(bad, cuts);
                assert_eq!(
                    split_and_validate_chunks(&chunks),
                    Err(whole.clone()),
                    "{cuts:?}"
                );
            }
        }
        let none: [&[u8]; 0] = [];
        assert_eq!(
            split_and_validate_chunks(&none),
            Err(BatchError::TooShort(0))
        );
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
