//! Arbitrary bytes as a segment file: the recovery scanner must finish without
//! panicking, keep only a prefix of the input, report only batches that re-validate
//! with dense offsets, and decide the same whatever the read windows are.
#![no_main]

use libfuzzer_sys::fuzz_target;
use quiver_engine::batch;
use quiver_engine::limits::RECOVERY_ZERO_CHECK_BYTES;
use quiver_engine::recovery::{scan_segment, ScanEnd, ScanEvent, SegmentScanner};
use quiver_engine::types::Offset;

fuzz_target!(|data: &[u8]| {
    // The segment's base offset is the first batch's own, so inputs with any base offset
    // can report batches.
    let base = data
        .get(..8)
        .map(|b| i64::from_be_bytes(b.try_into().expect("8 bytes")))
        .unwrap_or(0);
    let (batches, summary) = scan_segment(Offset(base), data);
    assert!(summary.valid_len <= data.len() as u64);
    assert_eq!(summary.batches, batches.len() as u64);

    let mut pos = 0u64;
    let mut next = base;
    for b in &batches {
        assert_eq!(b.position, pos, "batches tile the valid prefix");
        let bytes = &data[pos as usize..pos as usize + b.len];
        let header = batch::validate_framing_and_crc(bytes).expect("reported batch re-validates");
        assert_eq!(header, b.header);
        assert_eq!(header.base_offset.get(), next, "offsets are dense");
        next = header.base_offset.get() + header.last_offset_delta.get() as i64 + 1;
        pos += b.len as u64;
    }
    assert_eq!(pos, summary.valid_len);
    assert_eq!(summary.next_offset, Offset(next));
    let rest = &data[pos as usize..];
    match &summary.end {
        ScanEnd::EndOfSegment => assert!(rest.is_empty()),
        ScanEnd::ZeroPadding => {
            let checked = &rest[..rest.len().min(RECOVERY_ZERO_CHECK_BYTES)];
            assert!(!checked.is_empty() && checked.iter().all(|&b| b == 0));
        }
        _ => assert!(!rest.is_empty()),
    }

    // Same decisions when the bytes come in windows of another size (from the input).
    let window = 1 + *data.last().unwrap_or(&0) as usize * 37;
    let mut scanner = SegmentScanner::new(Offset(base), data.len() as u64);
    let mut at = (0usize, 0usize);
    let mut found = Vec::new();
    let windowed = loop {
        match scanner.step(at.0 as u64, &data[at.0..at.1]) {
            ScanEvent::Batch(b) => found.push(b),
            ScanEvent::NeedBytes { position, len } => {
                let p = position as usize;
                assert!(p + len <= data.len(), "request past the end");
                assert!(
                    at.0 != p || at.1 - at.0 < len,
                    "asked for bytes it was given"
                );
                at = (p, (p + len.max(window)).min(data.len()));
            }
            ScanEvent::Done(s) => break s,
        }
    };
    assert_eq!(windowed, summary);
    assert_eq!(found, batches);
});
