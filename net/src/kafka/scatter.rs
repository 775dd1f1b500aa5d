//! Zero-copy response encoding: a `ByteBufMut` for kafka-protocol's encoders that copies the small
//! envelope fields into one buffer but *references* registered record `Bytes`, yielding a list of
//! chunks for a vectored write.
//!
//! Invariant: concatenating the chunks of a [`ScatterFrame`] gives exactly the bytes the same
//! encoder would have written into a `BytesMut`. Referencing only changes where bytes live, never
//! what they are: a slice is referenced only if its address and length equal those of a
//! registered `Bytes`, i.e. it *is* that immutable memory.

use std::cell::Cell;
use std::ops::Range;

use bytes::buf::UninitSlice;
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::protocol::buf::ByteBufMut;

/// Initial capacity of the copied-bytes buffer: enough for the envelope of a typical response
/// (headers, topic names, partition metadata) without regrowing.
const DEFAULT_COPIED_CAPACITY_BYTES: usize = 4096;

/// Where one finished chunk's bytes live.
#[derive(Debug)]
enum Chunk {
    /// Bytes the encoder wrote, copied into our buffer. Kept mutable until `finish` because
    /// encoders may back-patch lengths and checksums into them through `range`.
    Copied(BytesMut),
    /// A clone of a registered `Bytes`: shares its memory, nothing copied.
    Referenced(Bytes),
}

impl Chunk {
    fn as_slice(&self) -> &[u8] {
        match self {
            Chunk::Copied(bytes) => bytes,
            Chunk::Referenced(bytes) => bytes,
        }
    }

    fn len(&self) -> usize {
        self.as_slice().len()
    }
}

/// A finished, non-empty chunk and the logical offset of its first byte.
#[derive(Debug)]
struct SealedChunk {
    start: usize,
    chunk: Chunk,
}

/// A `ByteBufMut` that turns an encoded response into a [`ScatterFrame`].
///
/// Register the record `Bytes` a response carries with [`ScatterWriter::register`] before
/// encoding; when the encoder later writes exactly such a slice, the writer keeps a reference
/// instead of copying it.
///
/// Random access (`offset`, `seek`, `range`, used by encoders to back-patch lengths and CRCs):
/// * `seek` forward pads with zeros like `BytesMut::resize`; `seek` backward truncates, dropping or
///   shortening chunks, referenced ones included.
/// * `range` over copied bytes inside one chunk is served in place. A range that touches a
///   referenced chunk or spans chunks is served by first coalescing every chunk from the one
///   holding `range.start` to the end into one copied chunk. The output stays byte-identical;
///   the coalesced referenced bytes simply count as copied. kafka-protocol's message encoders never
///   call `range` (only its RecordBatch encoder does), so encoding a FetchResponse never coalesces.
/// * `range` beyond `offset()` panics, as it does for `BytesMut` and `Vec<u8>`: it is a bug in the
///   calling encoder, not a property of the data being encoded.
#[derive(Debug)]
pub struct ScatterWriter {
    /// Finished chunks, in order, contiguous: each `start` is the previous `start + len`.
    sealed: Vec<SealedChunk>,
    /// Total length of `sealed`, i.e. the logical offset of `current[0]`.
    sealed_len: usize,
    /// Copied bytes being appended to; it becomes a sealed chunk when a reference is pushed.
    current: BytesMut,
    /// `Bytes` that may be referenced instead of copied, sorted by (address, length) on demand.
    registered: Vec<Bytes>,
    registered_sorted: bool,
    /// Placeholders to be replaced by several referenced buffers (records that span more
    /// than one engine buffer), matched like `registered`.
    spliced: Vec<(Bytes, Vec<Bytes>)>,
    /// Length of the shortest registered `Bytes`: shorter slices (every integer field) skip the
    /// lookup.
    shortest_registered_len: usize,
}

impl Default for ScatterWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl ScatterWriter {
    pub fn new() -> Self {
        Self::with_capacity(DEFAULT_COPIED_CAPACITY_BYTES)
    }

    /// A writer whose copied-bytes buffer starts with room for `copied_bytes`.
    pub fn with_capacity(copied_bytes: usize) -> Self {
        Self {
            sealed: Vec::new(),
            sealed_len: 0,
            current: BytesMut::with_capacity(copied_bytes),
            registered: Vec::new(),
            registered_sorted: true,
            spliced: Vec::new(),
            shortest_registered_len: usize::MAX,
        }
    }

    /// Allows `bytes` to be referenced rather than copied when the encoder writes exactly that
    /// slice (same address, same length). Registering costs one `Bytes` clone (a refcount bump).
    pub fn register(&mut self, bytes: Bytes) {
        // An empty slice has nothing to share, and would only add an empty chunk.
        if !bytes.is_empty() {
            self.shortest_registered_len = self.shortest_registered_len.min(bytes.len());
            self.registered.push(bytes);
            self.registered_sorted = false;
        }
    }

    /// When the encoder writes exactly `placeholder` (same address, same length), the
    /// writer emits `parts` in its place, by reference. The parts must add up to the
    /// placeholder's length, since the encoder already wrote that length on the wire.
    pub fn register_spliced(&mut self, placeholder: Bytes, parts: Vec<Bytes>) {
        assert_eq!(
            placeholder.len(),
            parts.iter().map(Bytes::len).sum::<usize>(),
            "spliced parts must match the placeholder length"
        );
        if !placeholder.is_empty() {
            self.spliced.push((placeholder, parts));
        }
    }

    /// Ends encoding, returning the chunks and what was copied versus referenced. Also adds them to
    /// this thread's [`thread_totals`].
    pub fn finish(mut self) -> ScatterFrame {
        self.seal_current();
        let mut chunks = Vec::with_capacity(self.sealed.len());
        let mut bytes_copied = 0;
        let mut bytes_referenced = 0;
        for sealed in self.sealed {
            match sealed.chunk {
                Chunk::Copied(bytes) => {
                    bytes_copied += bytes.len();
                    chunks.push(bytes.freeze());
                }
                Chunk::Referenced(bytes) => {
                    bytes_referenced += bytes.len();
                    chunks.push(bytes);
                }
            }
        }
        THREAD_TOTALS.with(|totals| {
            let mut updated = totals.get();
            updated.frames += 1;
            updated.bytes_copied += bytes_copied as u64;
            updated.bytes_referenced += bytes_referenced as u64;
            totals.set(updated);
        });
        ScatterFrame {
            chunks,
            bytes_copied,
            bytes_referenced,
        }
    }

    /// The registered `Bytes` occupying exactly `slice`'s memory, if any.
    fn find_registered(&mut self, slice: &[u8]) -> Option<Bytes> {
        if slice.len() < self.shortest_registered_len {
            return None;
        }
        if !self.registered_sorted {
            self.registered.sort_unstable_by_key(registration_key);
            self.registered_sorted = true;
        }
        let wanted = (slice.as_ptr() as usize, slice.len());
        self.registered
            .binary_search_by_key(&wanted, registration_key)
            .ok()
            .map(|index| self.registered[index].clone())
    }

    /// Moves the copied bytes written so far into a sealed chunk. `split` keeps the remaining
    /// capacity in `current`, so later copied bytes continue in the same allocation.
    fn seal_current(&mut self) {
        if !self.current.is_empty() {
            let copied = self.current.split();
            self.push_sealed(Chunk::Copied(copied));
        }
    }

    fn push_sealed(&mut self, chunk: Chunk) {
        debug_assert!(self.current.is_empty());
        let len = chunk.len();
        // Empty chunks would break the "starts strictly increase" invariant `range` relies on.
        if len > 0 {
            self.sealed.push(SealedChunk {
                start: self.sealed_len,
                chunk,
            });
            self.sealed_len += len;
        }
    }

    /// Drops everything at and after logical `offset`, which is below `self.offset()`.
    fn truncate(&mut self, offset: usize) {
        if offset >= self.sealed_len {
            self.current.truncate(offset - self.sealed_len);
            return;
        }
        self.current.clear();
        while let Some(last) = self.sealed.last_mut() {
            if last.start >= offset {
                self.sealed.pop();
                continue;
            }
            // `last.start < offset < last.start + len`, so the kept part is non-empty.
            let keep = offset - last.start;
            match &mut last.chunk {
                Chunk::Copied(bytes) => bytes.truncate(keep),
                Chunk::Referenced(bytes) => bytes.truncate(keep),
            }
            break;
        }
        self.sealed_len = offset;
    }

    /// Copies sealed chunks `from..` and `current` into a new `current`, so that any range
    /// starting in chunk `from` is contiguous and mutable.
    fn coalesce_from(&mut self, from: usize) {
        let tail = self.sealed.split_off(from);
        let Some(first) = tail.first() else {
            return;
        };
        let start = first.start;
        let mut merged = BytesMut::with_capacity(self.offset() - start);
        for sealed in &tail {
            merged.extend_from_slice(sealed.chunk.as_slice());
        }
        merged.extend_from_slice(&self.current);
        self.current = merged;
        self.sealed_len = start;
    }
}

fn registration_key(bytes: &Bytes) -> (usize, usize) {
    (bytes.as_ptr() as usize, bytes.len())
}

// SAFETY: every method that hands out or commits uninitialised memory delegates to `current`, a
// `BytesMut`, whose own `BufMut` implementation upholds the trait's contract; the writer's logical
// end is always the end of `current`, so the memory `chunk_mut` exposes is exactly where the next
// bytes belong. `put_slice` only appends through safe `BytesMut` methods or pushes whole chunks.
unsafe impl BufMut for ScatterWriter {
    fn remaining_mut(&self) -> usize {
        // Like `BytesMut`: the writer grows on demand, bounded only by the address space.
        usize::MAX - self.offset()
    }

    unsafe fn advance_mut(&mut self, cnt: usize) {
        // SAFETY: the caller guarantees that the first `cnt` bytes of the slice returned by our
        // `chunk_mut`, which is `current.chunk_mut()`, are initialised, which is exactly the
        // precondition of `BytesMut::advance_mut` on `current`.
        unsafe { self.current.advance_mut(cnt) }
    }

    fn chunk_mut(&mut self) -> &mut UninitSlice {
        self.current.chunk_mut()
    }

    fn put_slice(&mut self, src: &[u8]) {
        // `register` ignores empty `Bytes`, so an empty `src` never matches.
        if !src.is_empty() {
            let wanted = (src.as_ptr() as usize, src.len());
            if let Some(i) = self
                .spliced
                .iter()
                .position(|(p, _)| registration_key(p) == wanted)
            {
                let (_, parts) = self.spliced.swap_remove(i);
                self.seal_current();
                for part in parts {
                    self.push_sealed(Chunk::Referenced(part));
                }
                return;
            }
            if let Some(referenced) = self.find_registered(src) {
                self.seal_current();
                self.push_sealed(Chunk::Referenced(referenced));
                return;
            }
        }
        self.current.extend_from_slice(src);
    }
}

impl ByteBufMut for ScatterWriter {
    fn offset(&self) -> usize {
        self.sealed_len + self.current.len()
    }

    fn seek(&mut self, offset: usize) {
        let end = self.offset();
        if offset >= end {
            self.current.put_bytes(0, offset - end);
        } else {
            self.truncate(offset);
        }
    }

    fn range(&mut self, r: Range<usize>) -> &mut [u8] {
        assert!(
            r.start <= r.end && r.end <= self.offset(),
            "ScatterWriter::range({r:?}) outside the {} bytes written",
            self.offset()
        );
        if r.is_empty() {
            return &mut [];
        }
        if r.start < self.sealed_len {
            // `sealed` is non-empty (its length is positive), the first chunk starts at 0 and
            // starts strictly increase, so exactly one chunk holds `r.start`.
            let index = self
                .sealed
                .partition_point(|sealed| sealed.start <= r.start)
                - 1;
            let sealed = &self.sealed[index];
            let chunk_start = sealed.start;
            let in_one_copied_chunk = matches!(sealed.chunk, Chunk::Copied(_))
                && r.end <= chunk_start + sealed.chunk.len();
            if !in_one_copied_chunk {
                // Touches a referenced chunk or spans chunks: make all of it one copied
                // `current`, served below.
                self.coalesce_from(index);
            } else if let Chunk::Copied(bytes) = &mut self.sealed[index].chunk {
                return &mut bytes[r.start - chunk_start..r.end - chunk_start];
            }
        }
        let base = self.sealed_len;
        &mut self.current[r.start - base..r.end - base]
    }
}

/// An encoded frame as a list of chunks to be written in order, typically with one vectored write.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScatterFrame {
    pub chunks: Vec<Bytes>,
    /// Bytes the writer copied (envelope, headers, unregistered data).
    pub bytes_copied: usize,
    /// Bytes shared with registered `Bytes` (record data), not copied.
    pub bytes_referenced: usize,
}

impl ScatterFrame {
    pub fn total_len(&self) -> usize {
        self.chunks.iter().map(Bytes::len).sum()
    }

    /// The frame as one contiguous buffer: copies everything, so meant for tests and for
    /// transports that cannot do vectored writes.
    pub fn to_contiguous(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(self.total_len());
        for chunk in &self.chunks {
            out.extend_from_slice(chunk);
        }
        out.freeze()
    }
}

/// Running totals of what this thread's [`ScatterWriter`]s produced, for reporting the bytes
/// copied per byte served. Per thread because Quiver runs one shard per thread; a shard's report
/// reads its own totals without synchronisation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScatterTotals {
    pub frames: u64,
    pub bytes_copied: u64,
    pub bytes_referenced: u64,
}

impl ScatterTotals {
    /// Bytes copied per byte served (0.0 when nothing was served).
    pub fn copied_per_byte_served(&self) -> f64 {
        let served = self.bytes_copied + self.bytes_referenced;
        if served == 0 {
            0.0
        } else {
            self.bytes_copied as f64 / served as f64
        }
    }
}

thread_local! {
    static THREAD_TOTALS: Cell<ScatterTotals> = const { Cell::new(ScatterTotals {
        frames: 0,
        bytes_copied: 0,
        bytes_referenced: 0,
    }) };
}

/// Totals of every [`ScatterWriter::finish`] on this thread so far.
pub fn thread_totals() -> ScatterTotals {
    THREAD_TOTALS.with(Cell::get)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::fetch_response::{
        AbortedTransaction, EpochEndOffset, FetchableTopicResponse, LeaderIdAndEpoch, NodeEndpoint,
        PartitionData, SnapshotId,
    };
    use kafka_protocol::messages::{BrokerId, FetchResponse, ProducerId, TopicName};
    use kafka_protocol::protocol::{Encodable, StrBytes};

    /// A stand-in for a log segment: record data served by Fetch is sliced out of it.
    fn segment() -> Bytes {
        Bytes::from(
            (0..64 * 1024)
                .map(|i| (i * 7 + 3) as u8)
                .collect::<Vec<u8>>(),
        )
    }

    /// A FetchResponse valid at `version`, with several topics and partitions, record slices of
    /// `segment`, an empty and a null records field, and every optional feature of the version.
    fn fetch_response(version: i16, segment: &Bytes) -> (FetchResponse, Vec<Bytes>) {
        let mut records_served = Vec::new();
        let mut next_record_offset = 0;
        let mut topics = Vec::new();
        for topic_index in 0..3u8 {
            let mut partitions = Vec::new();
            for partition_index in 0..4 {
                let records = match (topic_index, partition_index) {
                    (0, 1) => None,
                    (1, 2) => Some(Bytes::new()),
                    _ => {
                        let len = 100 + 37 * partition_index as usize + 500 * topic_index as usize;
                        let slice = segment.slice(next_record_offset..next_record_offset + len);
                        next_record_offset += len;
                        records_served.push(slice.clone());
                        Some(slice)
                    }
                };
                let mut partition = PartitionData::default()
                    .with_partition_index(partition_index)
                    .with_high_watermark(1000 + partition_index as i64)
                    .with_last_stable_offset(990)
                    .with_aborted_transactions(Some(vec![AbortedTransaction::default()
                        .with_producer_id(ProducerId(7))
                        .with_first_offset(42)]))
                    .with_records(records);
                if version >= 5 {
                    partition = partition.with_log_start_offset(10);
                }
                if version >= 11 {
                    partition = partition.with_preferred_read_replica(BrokerId(2));
                }
                if version >= 12 && partition_index == 3 {
                    partition = partition
                        .with_diverging_epoch(
                            EpochEndOffset::default().with_epoch(5).with_end_offset(77),
                        )
                        .with_current_leader(
                            LeaderIdAndEpoch::default()
                                .with_leader_id(BrokerId(1))
                                .with_leader_epoch(9),
                        )
                        .with_snapshot_id(SnapshotId::default().with_end_offset(3).with_epoch(4));
                }
                partitions.push(partition);
            }
            let mut topic = FetchableTopicResponse::default().with_partitions(partitions);
            if version >= 13 {
                topic = topic.with_topic_id(uuid::Uuid::from_u128(0x1000 + topic_index as u128));
            } else {
                topic = topic.with_topic(TopicName(StrBytes::from_string(format!(
                    "topic-{topic_index}"
                ))));
            }
            topics.push(topic);
        }
        let mut response = FetchResponse::default()
            .with_throttle_time_ms(5)
            .with_responses(topics);
        if version >= 7 {
            response = response.with_session_id(1234);
        }
        if version >= 16 {
            response = response.with_node_endpoints(vec![NodeEndpoint::default()
                .with_node_id(BrokerId(1))
                .with_host(StrBytes::from_static_str("broker-1"))
                .with_port(9092)]);
        }
        (response, records_served)
    }

    #[test]
    fn fetch_response_is_byte_identical_and_references_records() {
        let segment = segment();
        for version in 4..=16 {
            let (response, records) = fetch_response(version, &segment);
            let mut expected = BytesMut::new();
            response.encode(&mut expected, version).expect("encodable");

            let mut writer = ScatterWriter::new();
            for bytes in &records {
                writer.register(bytes.clone());
            }
            response.encode(&mut writer, version).expect("encodable");
            let frame = writer.finish();

            assert_eq!(frame.to_contiguous(), expected.freeze(), "v{version}");
            let record_bytes: usize = records.iter().map(Bytes::len).sum();
            assert_eq!(
                frame.total_len(),
                frame.bytes_copied + frame.bytes_referenced
            );
            assert_eq!(frame.bytes_referenced, record_bytes, "v{version}");
            assert_eq!(
                frame.bytes_copied,
                frame.total_len() - record_bytes,
                "v{version}"
            );
            // Each record slice is a chunk of its own that shares the segment's memory.
            for bytes in &records {
                assert!(
                    frame.chunks.iter().any(|chunk| chunk.as_ptr() == bytes.as_ptr()
                        && chunk.len() == bytes.len()),
                    "v{version}: records at {:p} were copied",
                    bytes.as_ptr()
                );
            }
        }
    }

    #[test]
    fn unregistered_records_are_copied() {
        let segment = segment();
        let (response, records) = fetch_response(12, &segment);
        let mut writer = ScatterWriter::new();
        response.encode(&mut writer, 12).expect("encodable");
        let frame = writer.finish();
        assert_eq!(frame.bytes_referenced, 0);
        assert_eq!(frame.chunks.len(), 1);
        assert!(frame.bytes_copied > records.iter().map(Bytes::len).sum());
    }

    #[test]
    fn only_the_exact_registered_slice_is_referenced() {
        let segment = segment();
        let mut writer = ScatterWriter::new();
        writer.register(segment.slice(0..100));
        writer.put_slice(&segment[0..99]); // same address, shorter
        writer.put_slice(&segment[1..101]); // same length, other address
        let same_content_other_memory = segment[0..100].to_vec();
        writer.put_slice(&same_content_other_memory);
        let frame = writer.finish();
        assert_eq!(frame.bytes_referenced, 0);
        assert_eq!(frame.bytes_copied, 299);
    }

    #[test]
    fn gaps_are_back_patched_in_copied_chunks() {
        let segment = segment();
        let records = segment.slice(10..60);
        let mut writer = ScatterWriter::new();
        writer.register(records.clone());
        let size_gap = writer.put_gap(4);
        writer.put_i16(7);
        writer.put_slice(&records);
        let trailer_gap = writer.put_gap(2);
        writer.put_u8(9);
        let end = writer.offset() as i32;
        writer.gap_buf(size_gap).copy_from_slice(&end.to_be_bytes());
        writer.gap_buf(trailer_gap).copy_from_slice(&[0xAB, 0xCD]);
        let frame = writer.finish();

        let mut expected = Vec::new();
        expected.extend_from_slice(&end.to_be_bytes());
        expected.extend_from_slice(&7i16.to_be_bytes());
        expected.extend_from_slice(&records);
        expected.extend_from_slice(&[0xAB, 0xCD, 9]);
        assert_eq!(frame.to_contiguous(), Bytes::from(expected));
        assert_eq!(frame.bytes_referenced, records.len());
    }

    #[test]
    fn range_across_a_referenced_chunk_coalesces_and_stays_identical() {
        let segment = segment();
        let records = segment.slice(0..32);
        let mut writer = ScatterWriter::new();
        writer.register(records.clone());
        writer.put_slice(b"head");
        writer.put_slice(&records);
        writer.put_slice(b"tail");
        // Like RecordBatch's CRC: read a range that spans copied and referenced bytes.
        let spanned = writer.range(2..40).to_vec();
        let mut expected = b"head".to_vec();
        expected.extend_from_slice(&records);
        expected.extend_from_slice(b"tail");
        assert_eq!(spanned, expected[2..40]);
        writer.range(0..1).copy_from_slice(b"H");
        writer.put_slice(b"!");
        let frame = writer.finish();
        expected[0] = b'H';
        expected.push(b'!');
        assert_eq!(frame.to_contiguous(), Bytes::from(expected));
        assert_eq!(frame.bytes_referenced, 0, "coalesced bytes count as copied");
    }

    #[test]
    fn range_inside_a_referenced_chunk_is_served_from_a_copy() {
        let segment = segment();
        let records = segment.slice(0..32);
        let mut writer = ScatterWriter::new();
        writer.register(records.clone());
        writer.put_slice(&records);
        writer.range(4..8).copy_from_slice(&[0; 4]);
        let frame = writer.finish();
        let mut expected = records.to_vec();
        expected[4..8].fill(0);
        assert_eq!(frame.to_contiguous(), Bytes::from(expected));
        assert_eq!(
            &segment[4..8],
            &records[4..8],
            "registered memory is never written"
        );
    }

    #[test]
    fn seek_backward_truncates_through_referenced_chunks() {
        let segment = segment();
        let records = segment.slice(0..32);
        let mut writer = ScatterWriter::new();
        writer.register(records.clone());
        writer.put_slice(b"head");
        writer.put_slice(&records);
        writer.put_slice(b"tail");
        writer.seek(10);
        assert_eq!(writer.offset(), 10);
        writer.put_slice(b"x");
        writer.seek(13);
        let frame = writer.finish();
        let mut expected = b"head".to_vec();
        expected.extend_from_slice(&records[..6]);
        expected.extend_from_slice(b"x\0\0");
        assert_eq!(frame.to_contiguous(), Bytes::from(expected));
        assert_eq!(frame.bytes_referenced, 6);
        writer = ScatterWriter::new();
        writer.put_slice(b"abc");
        writer.seek(0);
        assert_eq!(writer.finish().total_len(), 0);
    }

    #[test]
    fn record_batch_gaps_and_crc_through_the_crate_encoder() {
        use kafka_protocol::indexmap::IndexMap;
        use kafka_protocol::records::{
            Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
        };
        let segment = segment();
        let values: Vec<Bytes> = (0..3)
            .map(|i| segment.slice(i * 300..i * 300 + 250))
            .collect();
        let records: Vec<Record> = values
            .iter()
            .enumerate()
            .map(|(i, value)| Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: 1,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                sequence: -1,
                timestamp: 1_700_000_000_000 + i as i64,
                key: None,
                value: Some(value.clone()),
                headers: IndexMap::new(),
            })
            .collect();
        let options = RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        };
        let mut expected = BytesMut::new();
        RecordBatchEncoder::encode(&mut expected, &records, &options).expect("encodable");

        // The batch encoder back-patches its length and CRC through `put_typed_gap` and `range`;
        // with the values registered, the CRC range spans referenced chunks and must coalesce.
        let mut writer = ScatterWriter::new();
        for value in &values {
            writer.register(value.clone());
        }
        RecordBatchEncoder::encode(&mut writer, &records, &options).expect("encodable");
        let frame = writer.finish();
        assert_eq!(frame.to_contiguous(), expected.freeze());
        assert_eq!(frame.bytes_referenced, 0);
    }

    #[test]
    fn thread_totals_accumulate() {
        let before = thread_totals();
        let segment = segment();
        let mut writer = ScatterWriter::new();
        writer.register(segment.slice(0..1000));
        writer.put_slice(b"envelope");
        writer.put_slice(&segment[0..1000]);
        writer.finish();
        let after = thread_totals();
        assert_eq!(after.frames, before.frames + 1);
        assert_eq!(after.bytes_copied, before.bytes_copied + 8);
        assert_eq!(after.bytes_referenced, before.bytes_referenced + 1000);
        let ratio = ScatterTotals {
            frames: 1,
            bytes_copied: 8,
            bytes_referenced: 1000,
        }
        .copied_per_byte_served();
        assert!((ratio - 8.0 / 1008.0).abs() < 1e-12);
    }
}
