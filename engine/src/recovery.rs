//! Crash-recovery decisions for one segment, with no IO: which bytes at the start of a
//! segment file form the valid log, and why the valid log ends where it does.
//!
//! [`SegmentScanner`] is a sans-IO state machine in the style of `quinn-proto`: the log
//! feeds it windows of segment bytes at positions, and each [`SegmentScanner::step`]
//! answers with one [`ScanEvent`]: a valid batch, a request for bytes it has not been
//! given yet, or the final [`ScanSummary`]. Tests and fuzzers drive it from memory.
//!
//! Invariants:
//! - Batches are reported in position order, back to back from position 0: each starts
//!   where the previous one ended, so the valid log is exactly `[0, valid_len)`.
//! - Every reported batch passed framing, magic and CRC-32C checks, has
//!   `recordsCount >= 0` and `lastOffsetDelta >= 0`, and its base offset is the segment's
//!   base offset (first batch) or one past the previous batch's last offset (dense);
//!   with `allow_offset_gaps` (sealed segments, which compaction may have thinned), at
//!   or after it.
//! - The decisions depend only on the segment's bytes and length, never on how they
//!   were split into windows.
//! - `valid_len <= segment_len`; a request for bytes never reaches past `segment_len`.
//! - Nothing here panics on any input.

use crate::batch::{self, BatchError, BatchHeader, ScanStep};
use crate::limits::{BATCH_HEADER_BYTES, RECOVERY_ZERO_CHECK_BYTES};
use crate::types::Offset;

/// A valid batch found by the scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScannedBatch {
    /// Byte position of the batch's first byte within the segment.
    pub position: u64,
    pub header: BatchHeader,
    /// Total bytes of the batch, including the 12-byte log overhead.
    pub len: usize,
}

/// Why the valid log of a segment ends where it does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScanEnd {
    /// The last valid batch ends exactly at the end of the segment.
    EndOfSegment,
    /// Only zero bytes follow the last valid batch (checked up to
    /// `RECOVERY_ZERO_CHECK_BYTES`, and possibly fewer than a header): the block padding
    /// of an active segment, or of one rolled but not yet sealed.
    ZeroPadding,
    /// The segment ends inside a batch (or inside a batch header): a torn write.
    /// `needed` bytes from the end of the valid log would have completed it.
    Torn { needed: usize },
    /// Bytes that are not a valid batch: bad framing, magic or CRC.
    Corrupt(BatchError),
    /// A valid batch whose base offset is not the next expected offset.
    OffsetDiscontinuity { expected: Offset, found: Offset },
    /// A valid batch whose last offset does not fit in an `i64`.
    OffsetOverflow { base_offset: Offset },
}

impl ScanEnd {
    /// A clean end is what a normal (crash-free or padded) segment looks like; anything
    /// else means bytes after the valid log were torn or corrupt.
    pub fn is_clean(&self) -> bool {
        matches!(self, ScanEnd::EndOfSegment | ScanEnd::ZeroPadding)
    }
}

/// The result of a finished scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanSummary {
    /// Bytes of valid batches from the start of the segment; the file is truncated here.
    pub valid_len: u64,
    /// One past the last offset of the last valid batch (the segment base if none).
    pub next_offset: Offset,
    /// Valid batches found.
    pub batches: u64,
    pub end: ScanEnd,
}

/// What the scanner decided in one step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScanEvent {
    /// A valid batch; the scan continues after it.
    Batch(ScannedBatch),
    /// Feed a window that starts at (or before) `position` and holds at least `len`
    /// bytes from it. `position + len` never exceeds the segment length.
    NeedBytes { position: u64, len: usize },
    /// The scan is over; every later step returns the same summary.
    Done(ScanSummary),
}

/// Scans one segment of `segment_len` bytes whose first offset is `base_offset`.
#[derive(Debug, Clone)]
pub struct SegmentScanner {
    base_offset: Offset,
    segment_len: u64,
    position: u64,
    expected_next: Offset,
    batches: u64,
    done: Option<ScanSummary>,
    offset_gaps: bool,
}

impl SegmentScanner {
    pub fn new(base_offset: Offset, segment_len: u64) -> Self {
        SegmentScanner {
            base_offset,
            segment_len,
            position: 0,
            expected_next: base_offset,
            batches: 0,
            done: None,
            offset_gaps: false,
        }
    }

    /// Accept batches that start past the next expected offset (never before it): what a
    /// compacted segment looks like.
    pub fn allow_offset_gaps(mut self, allow: bool) -> Self {
        self.offset_gaps = allow;
        self
    }

    pub fn base_offset(&self) -> Offset {
        self.base_offset
    }

    /// End of the valid log found so far (the position of the next undecided byte).
    pub fn position(&self) -> u64 {
        self.position
    }

    /// The summary once the scan is over.
    pub fn summary(&self) -> Option<&ScanSummary> {
        self.done.as_ref()
    }

    /// Decides the next thing at the scan position, given segment bytes
    /// `window_position..window_position + window.len()`. Bytes past the segment length
    /// are ignored. A window that does not hold what the scanner needs yields
    /// [`ScanEvent::NeedBytes`] and leaves the scan where it is.
    pub fn step(&mut self, window_position: u64, window: &[u8]) -> ScanEvent {
        if let Some(done) = &self.done {
            return ScanEvent::Done(done.clone());
        }
        let remaining = self.segment_len - self.position;
        if remaining == 0 {
            return self.finish(ScanEnd::EndOfSegment);
        }
        let avail = window_from(window_position, window, self.position, remaining);
        // Every decision needs at least a header's worth of bytes (or all that is left).
        let header_len = remaining.min(BATCH_HEADER_BYTES as u64) as usize;
        if avail.len() < header_len {
            return self.need(header_len);
        }
        match batch::scan_step(avail) {
            ScanStep::Batch { header, len } => {
                let found = Offset(header.base_offset.get());
                let gap_ok = self.offset_gaps && found > self.expected_next;
                if found != self.expected_next && !gap_ok {
                    return self.finish(ScanEnd::OffsetDiscontinuity {
                        expected: self.expected_next,
                        found,
                    });
                }
                // scan_step guarantees lastOffsetDelta >= 0, so only overflow can go wrong.
                let Some(next) = found
                    .0
                    .checked_add(header.last_offset_delta.get() as i64)
                    .and_then(|last| last.checked_add(1))
                else {
                    return self.finish(ScanEnd::OffsetOverflow { base_offset: found });
                };
                let scanned = ScannedBatch {
                    position: self.position,
                    header,
                    len,
                };
                self.position += len as u64;
                self.expected_next = Offset(next);
                self.batches += 1;
                ScanEvent::Batch(scanned)
            }
            ScanStep::Incomplete { needed } => {
                if needed as u64 > remaining {
                    // Segments are written in whole blocks padded with zeros, so a
                    // segment that was rolled but not yet sealed (trimmed) when the
                    // process died ends in fewer zero bytes than a header after its
                    // last batch. That is padding, like a longer run of zeros: calling
                    // it torn would end the whole log here and drop later segments
                    // holding acknowledged appends.
                    if avail.len() < BATCH_HEADER_BYTES && avail.iter().all(|&b| b == 0) {
                        return self.finish(ScanEnd::ZeroPadding);
                    }
                    // The segment ends inside this batch: a torn write.
                    self.finish(ScanEnd::Torn { needed })
                } else {
                    self.need(needed)
                }
            }
            ScanStep::End(mut reason) => {
                // scan_step reports the bytes it was given, which depend on the window;
                // report the bytes left in the segment instead.
                if let BatchError::LengthMismatch { actual, .. } = &mut reason {
                    *actual = usize::try_from(remaining).unwrap_or(usize::MAX);
                }
                // Zero padding after the last batch is the normal end of an active
                // segment; anything else is a torn or corrupt tail.
                let check = remaining.min(RECOVERY_ZERO_CHECK_BYTES as u64) as usize;
                if avail.len() < check {
                    return self.need(check);
                }
                if avail[..check].iter().all(|&b| b == 0) {
                    self.finish(ScanEnd::ZeroPadding)
                } else {
                    self.finish(ScanEnd::Corrupt(reason))
                }
            }
        }
    }

    fn need(&self, len: usize) -> ScanEvent {
        ScanEvent::NeedBytes {
            position: self.position,
            len,
        }
    }

    fn finish(&mut self, end: ScanEnd) -> ScanEvent {
        let summary = ScanSummary {
            valid_len: self.position,
            next_offset: self.expected_next,
            batches: self.batches,
            end,
        };
        self.done = Some(summary.clone());
        ScanEvent::Done(summary)
    }
}

/// The bytes of `window` (which starts at `window_position`) from `position` on, at
/// most `remaining` of them; empty when the window does not contain `position`.
fn window_from(window_position: u64, window: &[u8], position: u64, remaining: u64) -> &[u8] {
    let Some(skip) = position.checked_sub(window_position) else {
        return &[];
    };
    let Some(rest) = usize::try_from(skip).ok().and_then(|s| window.get(s..)) else {
        return &[];
    };
    let keep = usize::try_from(remaining)
        .unwrap_or(usize::MAX)
        .min(rest.len());
    &rest[..keep]
}

/// Scans a whole in-memory segment. Returns the valid batches and the summary.
pub fn scan_segment(base_offset: Offset, segment: &[u8]) -> (Vec<ScannedBatch>, ScanSummary) {
    let mut scanner = SegmentScanner::new(base_offset, segment.len() as u64);
    let mut batches = Vec::new();
    loop {
        match scanner.step(0, segment) {
            ScanEvent::Batch(b) => batches.push(b),
            ScanEvent::Done(summary) => return (batches, summary),
            // The window holds the whole segment, and requests never pass its end.
            ScanEvent::NeedBytes { position, len } => {
                unreachable!("whole segment given, yet {len} bytes wanted at {position}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::build;

    /// `n` batches with dense offsets from `base`, of varying sizes.
    fn batches(base: i64, n: usize) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut next = base;
        for i in 0..n {
            let values: Vec<Vec<u8>> = (0..=i % 4).map(|r| vec![b'a' + r as u8; i * 7]).collect();
            let recs: Vec<(Option<&[u8]>, &[u8])> =
                values.iter().map(|v| (None, v.as_slice())).collect();
            let mut b = build::batch(&recs, 1000 + i as i64);
            batch::patch(&mut b, next, 1);
            next += recs.len() as i64;
            out.push(b);
        }
        out
    }

    fn concat(parts: &[Vec<u8>]) -> Vec<u8> {
        parts.concat()
    }

    fn starts(parts: &[Vec<u8>]) -> Vec<u64> {
        let mut pos = 0;
        parts
            .iter()
            .map(|p| {
                let s = pos;
                pos += p.len() as u64;
                s
            })
            .collect()
    }

    fn last_offset(parts: &[Vec<u8>]) -> i64 {
        batch::parse_header(parts.last().unwrap())
            .unwrap()
            .last_offset()
    }

    /// Feeds the scanner exactly the bytes it asks for, one request at a time, so
    /// every window boundary falls where the scanner's decisions are most fragile.
    fn scan_minimal_windows(base: Offset, segment: &[u8]) -> (Vec<ScannedBatch>, ScanSummary) {
        let mut scanner = SegmentScanner::new(base, segment.len() as u64);
        let mut window: (u64, &[u8]) = (0, &[]);
        let mut out = Vec::new();
        for _ in 0..1_000_000 {
            match scanner.step(window.0, window.1) {
                ScanEvent::Batch(b) => out.push(b),
                ScanEvent::NeedBytes { position, len } => {
                    let p = position as usize;
                    assert!(p + len <= segment.len(), "request past the end");
                    assert!(
                        window.0 != position || window.1.len() < len,
                        "asked again for bytes it was given"
                    );
                    window = (position, &segment[p..p + len]);
                }
                ScanEvent::Done(summary) => return (out, summary),
            }
        }
        panic!("scan did not finish");
    }

    /// The whole-buffer scan and the minimal-window scan agree, and batches tile the
    /// valid prefix.
    fn scan(base: i64, segment: &[u8]) -> (Vec<ScannedBatch>, ScanSummary) {
        let whole = scan_segment(Offset(base), segment);
        let minimal = scan_minimal_windows(Offset(base), segment);
        assert_eq!(whole, minimal, "decision depends on window boundaries");
        let (found, summary) = whole;
        let mut pos = 0;
        for b in &found {
            assert_eq!(b.position, pos);
            let bytes = &segment[pos as usize..pos as usize + b.len];
            batch::validate_framing_and_crc(bytes).expect("reported batch re-validates");
            pos += b.len as u64;
        }
        assert_eq!(summary.valid_len, pos);
        assert_eq!(summary.batches, found.len() as u64);
        assert!(summary.valid_len <= segment.len() as u64);
        (found, summary)
    }

    #[test]
    fn clean_segment_ends_at_its_end() {
        let parts = batches(100, 6);
        let seg = concat(&parts);
        let (found, summary) = scan(100, &seg);
        assert_eq!(found.len(), 6);
        assert_eq!(summary.valid_len, seg.len() as u64);
        assert_eq!(summary.next_offset, Offset(last_offset(&parts) + 1));
        assert_eq!(summary.end, ScanEnd::EndOfSegment);
        assert!(summary.end.is_clean());
        let positions: Vec<u64> = found.iter().map(|b| b.position).collect();
        assert_eq!(positions, starts(&parts));
    }

    #[test]
    fn empty_segment_is_clean() {
        let (found, summary) = scan(7, &[]);
        assert!(found.is_empty());
        assert_eq!(
            summary,
            ScanSummary {
                valid_len: 0,
                next_offset: Offset(7),
                batches: 0,
                end: ScanEnd::EndOfSegment
            }
        );
    }

    #[test]
    fn zero_padding_after_the_last_batch_is_a_clean_end() {
        let parts = batches(0, 3);
        let mut seg = concat(&parts);
        let valid = seg.len() as u64;
        seg.resize(seg.len().div_ceil(512) * 512 + 512, 0);
        let (found, summary) = scan(0, &seg);
        assert_eq!(found.len(), 3);
        assert_eq!(summary.valid_len, valid);
        assert_eq!(summary.end, ScanEnd::ZeroPadding);
        // A whole segment of zeros (preallocated, never written) is clean and empty.
        let (found, summary) = scan(0, &[0u8; 8192]);
        assert!(found.is_empty());
        assert_eq!((summary.valid_len, summary.end), (0, ScanEnd::ZeroPadding));
    }

    /// Regression: a segment rolled but not yet sealed when the process died ends in
    /// block padding, which may be shorter than a batch header. That used to count as a
    /// torn tail, which ends the log at that segment and deletes the later segments with
    /// their acknowledged appends (found by tests/crash.rs).
    #[test]
    fn zero_padding_shorter_than_a_header_is_a_clean_end() {
        let parts = batches(0, 3);
        let valid = concat(&parts);
        for padding in 1..=BATCH_HEADER_BYTES + 1 {
            let mut seg = valid.clone();
            seg.resize(valid.len() + padding, 0);
            let (found, summary) = scan(0, &seg);
            assert_eq!(found.len(), 3, "padding {padding}");
            assert_eq!(summary.valid_len, valid.len() as u64, "padding {padding}");
            assert_eq!(summary.end, ScanEnd::ZeroPadding, "padding {padding}");
            // One non-zero byte in a short tail is a torn write.
            if padding < BATCH_HEADER_BYTES {
                *seg.last_mut().unwrap() = 1;
                let (_, summary) = scan(0, &seg);
                assert!(
                    matches!(summary.end, ScanEnd::Torn { .. }),
                    "padding {padding}: {summary:?}"
                );
            }
        }
    }

    #[test]
    fn only_the_first_zero_check_bytes_are_checked() {
        // Garbage further than RECOVERY_ZERO_CHECK_BYTES past the last batch does not
        // make the end unclean (it is truncated all the same).
        let parts = batches(0, 2);
        let mut seg = concat(&parts);
        let valid = seg.len();
        seg.resize(valid + RECOVERY_ZERO_CHECK_BYTES, 0);
        seg.extend_from_slice(b"garbage");
        let (_, summary) = scan(0, &seg);
        assert_eq!(summary.valid_len, valid as u64);
        assert_eq!(summary.end, ScanEnd::ZeroPadding);
        // One non-zero byte inside the checked range does.
        seg[valid + RECOVERY_ZERO_CHECK_BYTES - 1] = 1;
        let (_, summary) = scan(0, &seg);
        assert!(matches!(summary.end, ScanEnd::Corrupt(_)), "{summary:?}");
    }

    #[test]
    fn torn_at_every_byte_of_the_last_batch() {
        let parts = batches(10, 5);
        let keep = &parts[..4];
        let last = &parts[4];
        let valid = concat(keep);
        let next = last_offset(keep) + 1;
        for cut in 0..last.len() {
            let mut seg = valid.clone();
            seg.extend_from_slice(&last[..cut]);
            let (found, summary) = scan(10, &seg);
            assert_eq!(found.len(), 4, "cut {cut}");
            assert_eq!(summary.valid_len, valid.len() as u64, "cut {cut}");
            assert_eq!(summary.next_offset, Offset(next), "cut {cut}");
            if cut == 0 {
                assert_eq!(summary.end, ScanEnd::EndOfSegment);
            } else if cut < BATCH_HEADER_BYTES && last[..cut].iter().all(|&b| b == 0) {
                // The first bytes of a batch (the high bytes of its base offset) are
                // zeros: a cut there is indistinguishable from padding. The valid length
                // is the same either way.
                assert_eq!(summary.end, ScanEnd::ZeroPadding, "cut {cut}");
            } else {
                assert!(
                    matches!(summary.end, ScanEnd::Torn { .. }),
                    "cut {cut}: {summary:?}"
                );
            }
        }
        let (found, summary) = scan(10, &concat(&parts));
        assert_eq!(found.len(), 5);
        assert_eq!(summary.end, ScanEnd::EndOfSegment);
    }

    #[test]
    fn corrupt_middle_batch_ends_the_log_before_it() {
        let parts = batches(0, 5);
        let pos = starts(&parts);
        let seg = concat(&parts);
        // Flip one byte in every position of the third batch's CRC-covered part and its
        // header: each one ends the log at the third batch.
        for i in 16..parts[2].len() {
            let mut bad = seg.clone();
            bad[pos[2] as usize + i] ^= 0x10;
            let (found, summary) = scan(0, &bad);
            assert_eq!(found.len(), 2, "flip at {i}");
            assert_eq!(summary.valid_len, pos[2], "flip at {i}");
            assert_eq!(
                summary.next_offset,
                Offset(last_offset(&parts[..2]) + 1),
                "flip at {i}"
            );
            assert!(!summary.end.is_clean(), "flip at {i}: {summary:?}");
        }
        let mut bad = seg.clone();
        bad[pos[2] as usize + 70] ^= 0x40;
        let (_, summary) = scan(0, &bad);
        assert!(matches!(
            summary.end,
            ScanEnd::Corrupt(BatchError::CrcMismatch { .. })
        ));
    }

    #[test]
    fn offset_gap_or_repeat_ends_the_log() {
        let mut parts = batches(0, 4);
        let expected = last_offset(&parts[..2]) + 1;
        batch::patch(&mut parts[2], expected + 1, 1); // a gap of one offset
        let seg = concat(&parts);
        let (found, summary) = scan(0, &seg);
        assert_eq!(found.len(), 2);
        assert_eq!(summary.valid_len, starts(&parts)[2]);
        assert_eq!(
            summary.end,
            ScanEnd::OffsetDiscontinuity {
                expected: Offset(expected),
                found: Offset(expected + 1)
            }
        );
        batch::patch(&mut parts[2], expected - 1, 1); // overlapping the previous batch
        let (found, _) = scan(0, &concat(&parts));
        assert_eq!(found.len(), 2);
        // The first batch must start at the segment's base offset.
        let (found, summary) = scan(5, &concat(&batches(0, 2)));
        assert!(found.is_empty());
        assert_eq!(summary.next_offset, Offset(5));
        assert!(matches!(summary.end, ScanEnd::OffsetDiscontinuity { .. }));
    }

    #[test]
    fn offset_overflow_ends_the_log_without_panicking() {
        let mut parts = batches(0, 4);
        let base = i64::MAX - 1;
        batch::patch(&mut parts[3], base, 0); // 4 records: base + 3 overflows
        let seg = parts[3].clone();
        let (found, summary) = scan(base, &seg);
        assert!(found.is_empty());
        assert_eq!(
            summary.end,
            ScanEnd::OffsetOverflow {
                base_offset: Offset(base)
            }
        );
    }

    #[test]
    fn garbage_is_not_a_log() {
        // A deterministic xorshift stream: reproducible without a seed to print.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut garbage = vec![0u8; 10_000];
        for b in garbage.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        for len in [1usize, 7, 60, 61, 62, 100, 4096, 10_000] {
            let (found, summary) = scan(0, &garbage[..len]);
            assert!(found.is_empty(), "len {len}");
            assert_eq!(summary.valid_len, 0);
            assert!(!summary.end.is_clean(), "len {len}: {summary:?}");
        }
        // Valid batches followed by garbage keep the valid prefix.
        let parts = batches(0, 3);
        let mut seg = concat(&parts);
        let valid = seg.len() as u64;
        seg.extend_from_slice(&garbage[..500]);
        let (found, summary) = scan(0, &seg);
        assert_eq!(found.len(), 3);
        assert_eq!(summary.valid_len, valid);
        assert!(!summary.end.is_clean());
    }

    #[test]
    fn windows_that_miss_the_position_are_asked_again() {
        let seg = concat(&batches(0, 3));
        let mut scanner = SegmentScanner::new(Offset(0), seg.len() as u64);
        // A window starting after the scan position holds nothing usable.
        assert_eq!(
            scanner.step(10, &seg[10..]),
            ScanEvent::NeedBytes {
                position: 0,
                len: BATCH_HEADER_BYTES
            }
        );
        assert!(matches!(scanner.step(0, &seg), ScanEvent::Batch(_)));
        // A window that ends before the scan position, likewise.
        assert!(matches!(
            scanner.step(0, &seg[..10]),
            ScanEvent::NeedBytes { .. }
        ));
        // Bytes past the segment length are ignored.
        let mut longer = seg.clone();
        longer.extend_from_slice(&[0xff; 100]);
        let mut scanner = SegmentScanner::new(Offset(0), seg.len() as u64);
        let mut n = 0;
        let summary = loop {
            match scanner.step(0, &longer) {
                ScanEvent::Batch(_) => n += 1,
                ScanEvent::Done(s) => break s,
                e => panic!("{e:?}"),
            }
        };
        assert_eq!(n, 3);
        assert_eq!(summary.end, ScanEnd::EndOfSegment);
        assert_eq!(scanner.step(0, &[]), ScanEvent::Done(summary));
    }
}
