//! Arbitrary bytes through RecordBatch validation: `validate_batch`, `split_and_validate`
//! and `scan_step` must never panic and must agree with each other; a valid batch stays
//! valid after its offsets and epoch are patched. Records received as chunks (a QUIC
//! stream's) validate as the whole buffer does, however they are split.
#![no_main]

use libfuzzer_sys::fuzz_target;
use quiver_engine::batch::{self, ScanStep};
use quiver_engine::limits::{BATCH_HEADER_BYTES, MAX_BATCH_BYTES};

fuzz_target!(|data: &[u8]| {
    let whole = batch::split_and_validate(data);
    let first = data.first().copied().unwrap_or(0) as usize;
    for step in [1, 2 + first % 13, 61 + first] {
        let chunks: Vec<&[u8]> = data.chunks(step).collect();
        assert_eq!(
            batch::split_and_validate_chunks(&chunks),
            whole,
            "chunks of {step}"
        );
    }

    if let Ok(header) = batch::validate_batch(data) {
        assert_eq!(header.total_len(), data.len());
        assert!(header.records_count.get() > 0);
        // What the append path accepts, recovery must keep: scan_step sees one batch.
        match batch::scan_step(data) {
            ScanStep::Batch { len, header: h } => {
                assert_eq!(len, data.len());
                assert_eq!(h, header);
            }
            other => panic!("validate_batch accepted what scan_step rejects: {other:?}"),
        }
        let parts = batch::split_and_validate(data).expect("one valid batch splits");
        assert_eq!(parts.len(), 1);
        let delta = header.last_offset_delta.get() as i64;
        for (base, epoch) in [(0, 0), (1 << 40, 7), (i64::MAX - delta, i32::MAX), (-1, -1)] {
            let mut patched = data.to_vec();
            batch::patch(&mut patched, base, epoch);
            let h = batch::validate_batch(&patched).expect("patching keeps a batch valid");
            assert_eq!(h.base_offset.get(), base);
            assert_eq!(h.partition_leader_epoch.get(), epoch);
            // Only baseOffset and partitionLeaderEpoch change.
            assert_eq!(patched[8..12], data[8..12]);
            assert_eq!(patched[16..], data[16..]);
        }
    }

    if let Ok(parts) = batch::split_and_validate(data) {
        assert!(!parts.is_empty());
        let mut pos = 0;
        for (start, header) in &parts {
            assert_eq!(*start, pos, "batches tile the buffer");
            let len = header.total_len();
            let again = batch::validate_batch(&data[pos..pos + len]).expect("revalidates");
            assert_eq!(&again, header);
            pos += len;
        }
        assert_eq!(pos, data.len());
    }

    match batch::scan_step(data) {
        ScanStep::Batch { header, len } => {
            assert!(len <= data.len());
            assert!((BATCH_HEADER_BYTES..=MAX_BATCH_BYTES).contains(&len));
            assert_eq!(header.total_len(), len);
            assert!(header.records_count.get() >= 0);
            assert!(header.last_offset_delta.get() >= 0);
            let again = batch::validate_framing_and_crc(&data[..len]).expect("revalidates");
            assert_eq!(again, header);
        }
        ScanStep::Incomplete { needed } => {
            assert!(needed > data.len());
            assert!(needed <= MAX_BATCH_BYTES);
        }
        ScanStep::End(_) => {}
    }
});
