//! Sparse offset and time indexes for one segment, and their checksummed file format.
//!
//! An offset entry is added for the first batch after every `INDEX_INTERVAL_BYTES` of
//! log, so a lookup lands at most one interval (plus one batch) before the target. Time
//! entries record the running maximum timestamp and where it was reached, like Kafka's
//! `.timeindex`. Pure logic, no IO: the log writes and reads the encoded bytes.

use xxhash_rust::xxh3::xxh3_64;
use zerocopy::byteorder::little_endian::{I64, U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::limits::INDEX_INTERVAL_BYTES;
use crate::types::Offset;

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct OffsetEntry {
    pub relative_offset: U32,
    pub position: U32,
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct TimeEntry {
    pub timestamp: I64,
    pub relative_offset: U32,
    pub position: U32,
}

/// Summary of a sealed segment, stored in its index file header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentSummary {
    pub base_offset: Offset,
    /// One past the last offset in the segment.
    pub next_offset: Offset,
    pub size_bytes: u64,
    pub max_timestamp: i64,
}

#[derive(Debug, Clone)]
pub struct SegmentIndex {
    base_offset: Offset,
    offsets: Vec<OffsetEntry>,
    times: Vec<TimeEntry>,
    last_entry_position: Option<u64>,
    max_timestamp: i64,
}

impl SegmentIndex {
    pub fn new(base_offset: Offset) -> Self {
        SegmentIndex {
            base_offset,
            offsets: Vec::new(),
            times: Vec::new(),
            last_entry_position: None,
            max_timestamp: -1,
        }
    }

    pub fn base_offset(&self) -> Offset {
        self.base_offset
    }

    pub fn max_timestamp(&self) -> i64 {
        self.max_timestamp
    }

    pub fn entry_count(&self) -> usize {
        self.offsets.len()
    }

    /// Records a batch appended at `position`. Offsets must be within u32 of the base,
    /// which segment rolling guarantees.
    pub fn on_batch(&mut self, base_offset: Offset, position: u64, max_timestamp: i64) {
        let relative = (base_offset.0 - self.base_offset.0) as u32;
        let due = match self.last_entry_position {
            None => true,
            Some(last) => position >= last + INDEX_INTERVAL_BYTES,
        };
        let new_max = max_timestamp > self.max_timestamp;
        if new_max {
            self.max_timestamp = max_timestamp;
        }
        if due {
            self.offsets.push(OffsetEntry {
                relative_offset: relative.into(),
                position: (position as u32).into(),
            });
            self.last_entry_position = Some(position);
        }
        if new_max && (due || self.times.is_empty()) {
            self.times.push(TimeEntry {
                timestamp: self.max_timestamp.into(),
                relative_offset: relative.into(),
                position: (position as u32).into(),
            });
        }
    }

    /// Position of the last indexed batch starting at or before `offset`; scanning
    /// forward from there finds the batch containing it.
    pub fn lookup(&self, offset: Offset) -> u64 {
        let relative = offset.0 - self.base_offset.0;
        if relative <= 0 {
            return 0;
        }
        let idx = self
            .offsets
            .partition_point(|e| (e.relative_offset.get() as i64) <= relative);
        if idx == 0 {
            0
        } else {
            self.offsets[idx - 1].position.get() as u64
        }
    }

    /// Position from which a forward scan finds the first batch whose max timestamp is
    /// at least `timestamp`: the last time entry strictly below it, else the start.
    pub fn lookup_time(&self, timestamp: i64) -> u64 {
        let idx = self
            .times
            .partition_point(|e| e.timestamp.get() < timestamp);
        if idx == 0 {
            0
        } else {
            self.times[idx - 1].position.get() as u64
        }
    }

    pub fn encode(&self, summary: &SegmentSummary) -> Vec<u8> {
        let mut body = Vec::with_capacity(self.offsets.len() * 8 + self.times.len() * 16);
        body.extend_from_slice(self.offsets.as_bytes());
        body.extend_from_slice(self.times.as_bytes());
        let mut header = IndexFileHeader {
            magic: INDEX_MAGIC.into(),
            version: INDEX_VERSION.into(),
            reserved: 0.into(),
            base_offset: summary.base_offset.0.into(),
            next_offset: summary.next_offset.0.into(),
            size_bytes: summary.size_bytes.into(),
            max_timestamp: summary.max_timestamp.into(),
            offset_entries: (self.offsets.len() as u32).into(),
            time_entries: (self.times.len() as u32).into(),
            body_checksum: xxh3_64(&body).into(),
            header_checksum: 0.into(),
        };
        header.header_checksum = header.compute_checksum().into();
        let mut out = header.as_bytes().to_vec();
        out.extend_from_slice(&body);
        out
    }

    /// Decodes an index file. Trailing bytes past the declared entries (alignment
    /// padding) are ignored; anything inconsistent is an error and the caller rebuilds.
    pub fn decode(bytes: &[u8]) -> Result<(SegmentIndex, SegmentSummary), IndexError> {
        let (header, rest) =
            IndexFileHeader::read_from_prefix(bytes).map_err(|_| IndexError::Truncated)?;
        if header.magic.get() != INDEX_MAGIC || header.version.get() != INDEX_VERSION {
            return Err(IndexError::BadMagic);
        }
        if header.compute_checksum() != header.header_checksum.get() {
            return Err(IndexError::Checksum);
        }
        let n_off = header.offset_entries.get() as usize;
        let n_time = header.time_entries.get() as usize;
        let body_len = n_off
            .checked_mul(8)
            .and_then(|a| n_time.checked_mul(16).and_then(|b| a.checked_add(b)))
            .ok_or(IndexError::Truncated)?;
        let body = rest.get(..body_len).ok_or(IndexError::Truncated)?;
        if xxh3_64(body) != header.body_checksum.get() {
            return Err(IndexError::Checksum);
        }
        let (off_bytes, time_bytes) = body.split_at(n_off * 8);
        let offsets = <[OffsetEntry]>::ref_from_bytes(off_bytes)
            .map_err(|_| IndexError::Truncated)?
            .to_vec();
        let times = <[TimeEntry]>::ref_from_bytes(time_bytes)
            .map_err(|_| IndexError::Truncated)?
            .to_vec();
        let summary = SegmentSummary {
            base_offset: Offset(header.base_offset.get()),
            next_offset: Offset(header.next_offset.get()),
            size_bytes: header.size_bytes.get(),
            max_timestamp: header.max_timestamp.get(),
        };
        let index = SegmentIndex {
            base_offset: summary.base_offset,
            last_entry_position: offsets.last().map(|e| e.position.get() as u64),
            offsets,
            times,
            max_timestamp: summary.max_timestamp,
        };
        Ok((index, summary))
    }
}

const INDEX_MAGIC: u32 = 0x5844_4951; // "QIDX"
const INDEX_VERSION: u16 = 1;

#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct IndexFileHeader {
    magic: U32,
    version: U16,
    reserved: U16,
    base_offset: I64,
    next_offset: I64,
    size_bytes: U64,
    max_timestamp: I64,
    offset_entries: U32,
    time_entries: U32,
    body_checksum: U64,
    header_checksum: U64,
}

impl IndexFileHeader {
    fn compute_checksum(&self) -> u64 {
        let bytes = self.as_bytes();
        xxh3_64(&bytes[..bytes.len() - 8])
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IndexError {
    #[error("index file truncated")]
    Truncated,
    #[error("index file has a bad magic or version")]
    BadMagic,
    #[error("index file checksum mismatch")]
    Checksum,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filled() -> SegmentIndex {
        let mut idx = SegmentIndex::new(Offset(100));
        // 1,000 batches of 10 offsets and 1,000 bytes each, timestamps rising.
        for i in 0..1000u64 {
            idx.on_batch(Offset(100 + 10 * i as i64), i * 1000, 5000 + i as i64);
        }
        idx
    }

    #[test]
    fn entries_are_sparse() {
        let idx = filled();
        // One entry per >= 4096 bytes: batches at 0, 5000, 10000, ... (every 5th batch).
        assert_eq!(idx.entry_count(), 200);
    }

    #[test]
    fn lookup_lands_at_or_before_target() {
        let idx = filled();
        for target in [100i64, 101, 149, 150, 151, 5000, 10_099] {
            let pos = idx.lookup(Offset(target));
            // batch i covers offsets 100+10i .. 100+10i+9 at position 1000i
            let batch_of_target = ((target - 100) / 10) as u64;
            assert!(pos <= batch_of_target * 1000, "target {target} pos {pos}");
            assert!(
                batch_of_target * 1000 - pos < 4096 + 1000,
                "target {target} too far"
            );
        }
        assert_eq!(idx.lookup(Offset(0)), 0);
    }

    #[test]
    fn time_lookup() {
        let idx = filled();
        let pos = idx.lookup_time(5500);
        assert!(pos <= 500 * 1000);
        assert!(500 * 1000 - pos <= 5000);
        assert_eq!(idx.lookup_time(0), 0);
    }

    #[test]
    fn file_round_trip_and_corruption() {
        let idx = filled();
        let summary = SegmentSummary {
            base_offset: Offset(100),
            next_offset: Offset(10_100),
            size_bytes: 1_000_000,
            max_timestamp: 5999,
        };
        let mut bytes = idx.encode(&summary);
        let (back, s) = SegmentIndex::decode(&bytes).unwrap();
        assert_eq!(s, summary);
        assert_eq!(back.offsets, idx.offsets);
        assert_eq!(back.times, idx.times);
        bytes.extend_from_slice(&[0u8; 100]); // padding is ignored
        assert!(SegmentIndex::decode(&bytes).is_ok());
        for i in [0usize, 10, 60, 80, 500] {
            let mut c = bytes.clone();
            c[i] ^= 1;
            assert!(SegmentIndex::decode(&c).is_err(), "flip at {i} accepted");
        }
        assert_eq!(
            SegmentIndex::decode(&bytes[..20]).unwrap_err(),
            IndexError::Truncated
        );
    }
}
