//! The partition log against real files on this machine's disk, through io_uring.

mod common;

use std::path::PathBuf;
use std::rc::Rc;

use quiver_engine::batch::{self, build};
use quiver_engine::log::{Durability, LogConfig, PartitionLog};
use quiver_engine::types::{LeaderEpoch, Offset};
use quiver_engine::EngineError;

fn run<F, Fut>(name: &str, f: F)
where
    F: FnOnce(PathBuf) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + 'static,
{
    common::run_with_dir(&format!("log-{name}"), f)
}

fn value(i: usize) -> Vec<u8> {
    format!("value-{i:08}-{}", "x".repeat(i % 200)).into_bytes()
}

fn batch_of(start: usize, n: usize) -> Vec<u8> {
    let values: Vec<Vec<u8>> = (start..start + n).map(value).collect();
    let recs: Vec<(Option<&[u8]>, &[u8])> = values.iter().map(|v| (None, v.as_slice())).collect();
    build::batch(&recs, 1_000 + start as i64)
}

/// Splits read output into batches and checks each: CRC, dense offsets, contents.
fn check_batches(chunks: &[bytes::Bytes], first_expected: i64) -> i64 {
    let all: Vec<u8> = chunks.iter().flat_map(|c| c.iter().copied()).collect();
    let mut pos = 0;
    let mut next = None::<i64>;
    while pos < all.len() {
        let h = batch::parse_header(&all[pos..]).unwrap();
        let len = h.total_len();
        batch::validate_batch(&all[pos..pos + len]).expect("served batch must be valid");
        if let Some(n) = next {
            assert_eq!(h.base_offset.get(), n, "offsets must be dense");
        } else {
            assert!(h.base_offset.get() <= first_expected && first_expected <= h.last_offset());
        }
        next = Some(h.last_offset() + 1);
        pos += len;
    }
    next.unwrap_or(first_expected)
}

/// Byte positions where each batch starts in an unpadded sequence of `batch_of` batches.
fn batch_positions(batches: usize, per_batch: usize) -> Vec<usize> {
    let mut out = vec![0];
    for b in 0..batches {
        let last = *out.last().unwrap();
        out.push(last + batch_of(b * per_batch, per_batch).len());
    }
    out
}

async fn append_n(log: &Rc<PartitionLog>, batches: usize, per_batch: usize) {
    let mut tickets = Vec::new();
    for b in 0..batches {
        let t = log
            .append(&batch_of(b * per_batch, per_batch), LeaderEpoch(3))
            .await
            .unwrap();
        assert_eq!(t.outcome().base_offset, Offset((b * per_batch) as i64));
        tickets.push(t);
    }
    for t in tickets {
        t.committed().await.unwrap();
    }
    log.flushed().await;
}

#[test]
fn append_then_read_everything() {
    run("roundtrip", |dir| async move {
        let log = PartitionLog::open(&dir, LogConfig::default())
            .await
            .unwrap();
        append_n(&log, 50, 10).await;
        assert_eq!(log.log_end_offset(), Offset(500));
        assert_eq!(log.high_watermark(), Offset(500));
        let out = log.read(Offset(0), 10 << 20).await.unwrap();
        assert_eq!(check_batches(&out.chunks, 0), 500);
        // Mid-batch start returns the batch containing it.
        let out = log.read(Offset(255), 10 << 20).await.unwrap();
        assert_eq!(check_batches(&out.chunks, 255), 500);
        // At the high watermark: empty; beyond the end: out of range.
        assert_eq!(log.read(Offset(500), 1 << 20).await.unwrap().total_len(), 0);
        assert!(matches!(
            log.read(Offset(501), 1).await,
            Err(EngineError::OffsetOutOfRange { .. })
        ));
        // Patched epoch is visible.
        let h = batch::parse_header(&out.chunks[0]).unwrap();
        assert_eq!(h.partition_leader_epoch.get(), 3);
    });
}

#[test]
fn max_bytes_returns_whole_batches_and_at_least_one() {
    run("maxbytes", |dir| async move {
        let log = PartitionLog::open(&dir, LogConfig::default())
            .await
            .unwrap();
        append_n(&log, 20, 10).await;
        let pos = batch_positions(20, 10);
        let out = log.read(Offset(0), 1).await.unwrap();
        assert_eq!(out.total_len(), pos[1], "at least one whole batch");
        // A limit between the 3rd and 4th batch ends yields exactly 3 batches.
        let out = log.read(Offset(0), pos[3] + 5).await.unwrap();
        assert_eq!(check_batches(&out.chunks, 0), 30);
        assert_eq!(out.total_len(), pos[3]);
        let out = log.read(Offset(0), pos[3]).await.unwrap();
        assert_eq!(out.total_len(), pos[3]);
    });
}

#[test]
fn group_commit_coalesces_concurrent_appends() {
    run("groupcommit", |dir| async move {
        let log = PartitionLog::open(&dir, LogConfig::default())
            .await
            .unwrap();
        let mut tasks = Vec::new();
        for i in 0..200 {
            let log = log.clone();
            tasks.push(glommio::spawn_local(async move {
                let t = log.append(&batch_of(i, 1), LeaderEpoch(0)).await.unwrap();
                t.committed().await.unwrap()
            }));
        }
        let mut offsets: Vec<i64> = Vec::new();
        for t in tasks {
            offsets.push(t.await.base_offset.0);
        }
        offsets.sort();
        assert_eq!(offsets, (0..200).collect::<Vec<_>>());
        let stats = log.stats();
        assert_eq!(stats.appends, 200);
        assert!(stats.fdatasyncs < 100, "no coalescing: {stats:?}");
    });
}

/// Many large appends in flight: rounds are capped (so one round's sync overlaps the
/// next round's writes), every append commits in order, the bytes read back from the tail
/// cache and, after a restart, from disk, and the segment is a whole number of 4 KiB
/// filesystem blocks plus its tail (writes never start off a 4 KiB boundary).
#[test]
fn pipelined_large_rounds_commit_in_order_and_survive_restart() {
    use quiver_engine::limits::MAX_FLUSH_ROUND_BYTES;
    run("pipelined", |dir| async move {
        // ~600 KiB batches: not a multiple of any block size, so every write shares a
        // partial block with its neighbour.
        let batches = 40;
        let per_batch = 3000;
        let total: usize;
        {
            let log = PartitionLog::open(&dir, LogConfig::default())
                .await
                .unwrap();
            let mut tickets = Vec::new();
            for b in 0..batches {
                let bytes = batch_of(b * per_batch, per_batch);
                let t = log.append(&bytes, LeaderEpoch(1)).await.unwrap();
                tickets.push(t);
            }
            let mut last = -1;
            for t in tickets {
                let outcome = t.committed().await.unwrap();
                assert!(outcome.base_offset.0 > last);
                last = outcome.last_offset.0;
            }
            log.flushed().await;
            let stats = log.stats();
            total = log.size_bytes() as usize;
            assert!(
                stats.flush_rounds as usize >= total / MAX_FLUSH_ROUND_BYTES,
                "rounds are capped: {stats:?}"
            );
            assert_eq!(stats.fdatasyncs, stats.flush_rounds, "one sync per round");
            let out = log.read(Offset(0), 100 << 20).await.unwrap();
            assert_eq!(check_batches(&out.chunks, 0), (batches * per_batch) as i64);
        }
        let log = PartitionLog::open(&dir, LogConfig::default())
            .await
            .unwrap();
        assert_eq!(log.log_end_offset(), Offset((batches * per_batch) as i64));
        assert_eq!(log.size_bytes() as usize, total);
        let out = log.read(Offset(0), 100 << 20).await.unwrap();
        assert_eq!(check_batches(&out.chunks, 0), (batches * per_batch) as i64);
    });
}

#[test]
fn restart_recovers_and_continues() {
    run("restart", |dir| async move {
        {
            let log = PartitionLog::open(&dir, LogConfig::default())
                .await
                .unwrap();
            append_n(&log, 30, 7).await;
        }
        let log = PartitionLog::open(&dir, LogConfig::default())
            .await
            .unwrap();
        assert_eq!(log.log_end_offset(), Offset(210));
        assert_eq!(log.high_watermark(), Offset(210));
        let t = log.append(&batch_of(0, 5), LeaderEpoch(4)).await.unwrap();
        assert_eq!(t.outcome().base_offset, Offset(210));
        t.committed().await.unwrap();
        let out = log.read(Offset(0), 100 << 20).await.unwrap();
        assert_eq!(check_batches(&out.chunks, 0), 215);
    });
}

#[test]
fn torn_tail_is_truncated_on_recovery() {
    run("torn", |dir| async move {
        {
            let log = PartitionLog::open(&dir, LogConfig::default())
                .await
                .unwrap();
            append_n(&log, 10, 10).await;
        }
        let seg = dir.join(format!("{:020}.log", 0));
        let good_len = batch_positions(10, 10)[10] as u64;
        assert!(std::fs::metadata(&seg).unwrap().len() >= good_len);
        // Half a batch of garbage after the last good batch, as a torn write leaves.
        let mut bytes = std::fs::read(&seg).unwrap();
        let mut torn = batch_of(100, 10);
        torn[0..8].copy_from_slice(&100i64.to_be_bytes());
        torn.truncate(torn.len() / 2);
        bytes.truncate(good_len as usize);
        bytes.extend_from_slice(&torn);
        std::fs::write(&seg, &bytes).unwrap();
        // And flip a byte inside the last complete batch too? No: that one was acked.
        let log = PartitionLog::open(&dir, LogConfig::default())
            .await
            .unwrap();
        assert_eq!(log.log_end_offset(), Offset(100));
        assert_eq!(std::fs::metadata(&seg).unwrap().len(), good_len);
        let t = log.append(&batch_of(0, 1), LeaderEpoch(0)).await.unwrap();
        t.committed().await.unwrap();
        let out = log.read(Offset(0), 100 << 20).await.unwrap();
        assert_eq!(check_batches(&out.chunks, 0), 101);
    });
}

#[test]
fn corrupt_batch_in_active_segment_ends_the_log_there() {
    run("corrupt", |dir| async move {
        {
            let log = PartitionLog::open(&dir, LogConfig::default())
                .await
                .unwrap();
            append_n(&log, 10, 10).await;
        }
        let seg = dir.join(format!("{:020}.log", 0));
        let mut bytes = std::fs::read(&seg).unwrap();
        let pos = batch_positions(10, 10);
        bytes[pos[5] + 70] ^= 0x40; // inside the 6th batch's records
        std::fs::write(&seg, &bytes).unwrap();
        let log = PartitionLog::open(&dir, LogConfig::default())
            .await
            .unwrap();
        assert_eq!(
            log.log_end_offset(),
            Offset(50),
            "never serve past a checksum failure"
        );
        let out = log.read(Offset(0), 100 << 20).await.unwrap();
        assert_eq!(check_batches(&out.chunks, 0), 50);
    });
}

fn small_segments() -> LogConfig {
    LogConfig {
        segment_bytes: 64 * 1024,
        ..LogConfig::default()
    }
}

#[test]
fn segments_roll_seal_and_reload_with_indexes() {
    run("roll", |dir| async move {
        {
            let log = PartitionLog::open(&dir, small_segments()).await.unwrap();
            append_n(&log, 400, 5).await; // ~400 KiB
            assert!(
                log.segment_count() >= 5,
                "segments: {}",
                log.segment_count()
            );
            assert!(log.stats().segments_sealed >= 4);
        }
        let indexes = std::fs::read_dir(&dir)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|x| x == "index")
            })
            .count();
        assert!(indexes >= 4);
        let log = PartitionLog::open(&dir, small_segments()).await.unwrap();
        assert_eq!(log.log_end_offset(), Offset(2000));
        // Read everything back across segments, from disk (the tail was lost on restart).
        let mut next = 0i64;
        while next < 2000 {
            let out = log.read(Offset(next), 32 * 1024).await.unwrap();
            assert!(out.total_len() > 0);
            next = check_batches(&out.chunks, next);
        }
        assert_eq!(next, 2000);
        // Random starts land on the right batch.
        for start in [0i64, 1, 999, 1000, 1234, 1999] {
            let out = log.read(Offset(start), 1).await.unwrap();
            check_batches(&out.chunks, start);
        }
    });
}

#[test]
fn missing_or_corrupt_index_is_rebuilt() {
    run("reindex", |dir| async move {
        {
            let log = PartitionLog::open(&dir, small_segments()).await.unwrap();
            append_n(&log, 400, 5).await;
        }
        let mut idx: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "index"))
            .collect();
        idx.sort();
        std::fs::remove_file(&idx[0]).unwrap();
        let mut b = std::fs::read(&idx[1]).unwrap();
        b[40] ^= 0xff;
        std::fs::write(&idx[1], b).unwrap();
        let log = PartitionLog::open(&dir, small_segments()).await.unwrap();
        assert_eq!(log.log_end_offset(), Offset(2000));
        for start in [0i64, 333, 777, 1999] {
            let out = log.read(Offset(start), 1).await.unwrap();
            check_batches(&out.chunks, start);
        }
    });
}

#[test]
fn retention_by_size_deletes_whole_old_segments() {
    run("retention", |dir| async move {
        let config = LogConfig {
            retention_bytes: Some(128 * 1024),
            retention_ms: None,
            ..small_segments()
        };
        let log = PartitionLog::open(&dir, config).await.unwrap();
        append_n(&log, 400, 5).await;
        let before = log.segment_count();
        let deleted = log.enforce_retention(i64::MAX / 2).await.unwrap();
        assert!(deleted > 0);
        assert_eq!(log.segment_count(), before - deleted);
        assert!(
            log.size_bytes() >= 128 * 1024,
            "size {} segs {} deleted {deleted} before {before}",
            log.size_bytes(),
            log.segment_count()
        );
        let start = log.log_start_offset();
        assert!(start > Offset(0));
        assert!(matches!(
            log.read(Offset(0), 1).await,
            Err(EngineError::OffsetOutOfRange { .. })
        ));
        let out = log.read(start, 1).await.unwrap();
        check_batches(&out.chunks, start.0);
        drop(log);
        let log = PartitionLog::open(&dir, small_segments()).await.unwrap();
        assert_eq!(log.log_start_offset(), start);
    });
}

#[test]
fn retention_by_time() {
    run("retention-time", |dir| async move {
        let config = LogConfig {
            retention_ms: Some(1000),
            ..small_segments()
        };
        let log = PartitionLog::open(&dir, config).await.unwrap();
        append_n(&log, 200, 5).await; // timestamps ~1000..2000 ms
        let deleted = log.enforce_retention(1_000_000).await.unwrap();
        assert_eq!(deleted, log.stats().segments_sealed as usize);
        assert_eq!(log.segment_count(), 1);
    });
}

#[test]
fn idempotent_retry_is_not_stored_twice() {
    run("idempotent", |dir| async move {
        let log = PartitionLog::open(&dir, LogConfig::default())
            .await
            .unwrap();
        let b = build::batch_with_producer(&[(None, b"a"), (None, b"b")], 5, 42, 0, 0);
        let first = log
            .append(&b, LeaderEpoch(0))
            .await
            .unwrap()
            .committed()
            .await
            .unwrap();
        let again = log
            .append(&b, LeaderEpoch(0))
            .await
            .unwrap()
            .committed()
            .await
            .unwrap();
        assert!(again.duplicate);
        assert_eq!(again.base_offset, first.base_offset);
        assert_eq!(log.log_end_offset(), Offset(2));
        let gap = build::batch_with_producer(&[(None, b"c")], 5, 42, 0, 5);
        assert!(matches!(
            log.append(&gap, LeaderEpoch(0)).await,
            Err(EngineError::OutOfOrderSequence { .. })
        ));
        let next = build::batch_with_producer(&[(None, b"c")], 5, 42, 0, 2);
        log.append(&next, LeaderEpoch(0))
            .await
            .unwrap()
            .committed()
            .await
            .unwrap();
        drop(log);
        // Producer state is rebuilt from the log on restart.
        let log = PartitionLog::open(&dir, LogConfig::default())
            .await
            .unwrap();
        let t = log.append(&next, LeaderEpoch(0)).await.unwrap();
        assert!(t.outcome().duplicate);
    });
}

#[test]
fn invalid_batches_are_rejected_and_not_stored() {
    run("invalid", |dir| async move {
        let log = PartitionLog::open(&dir, LogConfig::default())
            .await
            .unwrap();
        let mut b = batch_of(0, 3);
        let n = b.len();
        b[n - 1] ^= 1;
        assert!(matches!(
            log.append(&b, LeaderEpoch(0)).await,
            Err(EngineError::InvalidBatch(_))
        ));
        assert!(log.append(&[1, 2, 3], LeaderEpoch(0)).await.is_err());
        assert_eq!(log.log_end_offset(), Offset(0));
    });
}

/// `buf` cut at `cuts` (ascending positions) into chunks, as a QUIC stream delivers them.
fn cut(buf: &[u8], cuts: &[usize]) -> Vec<bytes::Bytes> {
    let mut out = Vec::new();
    let mut from = 0;
    for &c in cuts.iter().chain(std::iter::once(&buf.len())) {
        out.push(bytes::Bytes::copy_from_slice(&buf[from..c]));
        from = c;
    }
    out
}

#[test]
fn chunked_appends_store_what_one_buffer_stores() {
    run("chunked", |dir| async move {
        let log = PartitionLog::open(&dir, LogConfig::default())
            .await
            .unwrap();
        // Two batches per append, 3 + 2 records, so cuts can also fall between batches.
        let payload = |start: usize| {
            let mut b = batch_of(start, 3);
            b.extend(batch_of(start + 3, 2));
            b
        };
        let first_len = batch_of(0, 3).len();
        let len = payload(0).len();
        // Inside the header (baseOffset, partitionLeaderEpoch), inside the CRC (17..21),
        // at the header's end, inside the first record, across the batch boundary,
        // inside the second batch's CRC, empty chunks, and single bytes.
        let cut_sets: Vec<Vec<usize>> = vec![
            vec![],
            vec![5, 14],
            vec![19],
            vec![17, 18, 20],
            vec![61],
            vec![63, 70],
            vec![first_len - 1, first_len + 2],
            vec![first_len + 18],
            vec![0, 0, 40, 40, len],
            (1..len).collect(),
        ];
        let mut expected_end = 0i64;
        let mut tickets = Vec::new();
        for (i, cuts) in cut_sets.iter().enumerate() {
            let records = payload(i * 5);
            let t = if cuts.is_empty() {
                log.append(&records, LeaderEpoch(2)).await.unwrap()
            } else {
                log.append_chunks(&cut(&records, cuts), LeaderEpoch(2))
                    .await
                    .unwrap()
            };
            assert_eq!(t.outcome().base_offset, Offset(expected_end), "{cuts:?}");
            expected_end += 5;
            tickets.push(t);
        }
        for t in tickets {
            t.committed().await.unwrap();
        }
        // Every append stored the same bytes as the contiguous one, patched alike.
        let out = log.read(Offset(0), 10 << 20).await.unwrap();
        assert_eq!(check_batches(&out.chunks, 0), expected_end);
        let stored: Vec<u8> = out.chunks.iter().flat_map(|c| c.iter().copied()).collect();
        let mut at = 0;
        for (i, cuts) in cut_sets.iter().enumerate() {
            let mut want = batch_of(i * 5, 3);
            let first = want.len();
            want.extend(batch_of(i * 5 + 3, 2));
            batch::patch(&mut want[..first], (i * 5) as i64, 2);
            batch::patch(&mut want[first..], (i * 5 + 3) as i64, 2);
            assert!(stored[at..at + want.len()] == want[..], "{cuts:?}");
            at += want.len();
        }
        assert_eq!(at, stored.len());

        // A corrupt payload is rejected at every cut, and the log does not change.
        let appends = log.stats().appends;
        let end = log.log_end_offset();
        for (flip, what) in [
            (18, "CRC"),
            (first_len + 70, "a record of the second batch"),
            (9, "batchLength"),
        ] {
            let mut bad = payload(1000);
            bad[flip] ^= 0x20;
            for cuts in &cut_sets[1..] {
                let result = log.append_chunks(&cut(&bad, cuts), LeaderEpoch(2)).await;
                assert!(
                    matches!(result, Err(EngineError::InvalidBatch(_))),
                    "{what} flipped, cut at {cuts:?}"
                );
            }
        }
        assert_eq!(log.log_end_offset(), end);
        assert_eq!(log.stats().appends, appends);
        assert_eq!(log.high_watermark(), end);
        // Nothing half-staged: the next append lands right after the last good one.
        let t = log
            .append_chunks(&cut(&payload(0), &[33]), LeaderEpoch(2))
            .await
            .unwrap();
        assert_eq!(t.outcome().base_offset, end);
        t.committed().await.unwrap();
        let out = log.read(Offset(0), 10 << 20).await.unwrap();
        assert_eq!(check_batches(&out.chunks, 0), end.0 + 5);
    });
}

#[test]
fn batch_for_timestamp_finds_first_batch_at_or_after() {
    run("timestamps", |dir| async move {
        let log = PartitionLog::open(&dir, small_segments()).await.unwrap();
        append_n(&log, 100, 5).await; // batch b has timestamp 1000 + 5b
        let (off, ts, bytes) = log
            .batch_for_timestamp(1000 + 5 * 40)
            .await
            .unwrap()
            .unwrap();
        assert_eq!((off, ts), (Offset(200), 1200));
        assert_eq!(
            batch::validate_batch(&bytes).unwrap().base_offset.get(),
            200
        );
        let (off, _, _) = log.batch_for_timestamp(1202).await.unwrap().unwrap();
        assert_eq!(off, Offset(205));
        assert_eq!(
            log.batch_for_timestamp(0).await.unwrap().unwrap().0,
            Offset(0)
        );
        assert!(log.batch_for_timestamp(1_000_000).await.unwrap().is_none());
    });
}

#[test]
fn interval_durability_commits_on_write_and_syncs_later() {
    run("interval", |dir| async move {
        let config = interval_config(std::time::Duration::from_millis(50));
        let log = PartitionLog::open(&dir, config).await.unwrap();
        append_n(&log, 10, 10).await;
        assert_eq!(log.high_watermark(), Offset(100));
        glommio::timer::sleep(std::time::Duration::from_millis(120)).await;
        assert_eq!(
            log.stats().fdatasyncs,
            0,
            "syncs happen on the timer, not per commit"
        );
    });
}

fn segment_files(dir: &std::path::Path, ext: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .collect();
    files.sort();
    files
}

/// Reads the whole committed log from its start and checks it batch by batch.
async fn check_whole_log(log: &Rc<PartitionLog>) -> i64 {
    let mut next = log.log_start_offset().0;
    while next < log.high_watermark().0 {
        let out = log.read(Offset(next), 1 << 20).await.unwrap();
        assert!(out.total_len() > 0, "nothing served at {next}");
        next = check_batches(&out.chunks, next);
    }
    next
}

/// Regression (found by tests/crash.rs): a segment that was rolled but not yet sealed
/// when the process died still ends in the zero padding of its last block. When that
/// padding was shorter than a batch header, recovery called the segment torn, ended the
/// log there and deleted every later segment, acknowledged appends included.
#[test]
fn short_zero_padding_of_an_unsealed_segment_keeps_later_segments() {
    run("short-padding", |dir| async move {
        {
            let log = PartitionLog::open(&dir, small_segments()).await.unwrap();
            append_n(&log, 400, 5).await;
        }
        let logs = segment_files(&dir, "log");
        assert!(logs.len() >= 3);
        for victim in &logs[logs.len() - 3..logs.len() - 1] {
            // Undo the seal: no index, and the last block's padding back on the file.
            std::fs::remove_file(victim.with_extension("index")).unwrap();
            let mut bytes = std::fs::read(victim).unwrap();
            bytes.resize(bytes.len() + 18, 0);
            std::fs::write(victim, &bytes).unwrap();
        }
        let log = PartitionLog::open(&dir, small_segments()).await.unwrap();
        assert_eq!(log.log_end_offset(), Offset(2000));
        assert_eq!(segment_files(&dir, "log"), logs, "no segment was removed");
        assert_eq!(check_whole_log(&log).await, 2000);
    });
}

/// Regression (found by tests/crash.rs): a roll creates the next segment at the log end
/// offset of everything appended, before the old segment's last bytes are written. A
/// crash in between left segments starting past the recovered end of the previous one;
/// recovery took the last segment's base as the log end offset, so offsets in the gap
/// were "committed" yet could never be read, and appends continued after the gap.
#[test]
fn segments_created_past_the_recovered_end_are_removed() {
    run("roll-gap", |dir| async move {
        {
            let log = PartitionLog::open(&dir, small_segments()).await.unwrap();
            append_n(&log, 400, 5).await;
        }
        let logs = segment_files(&dir, "log");
        // Rolls whose segments got no bytes before the crash: empty files past the end.
        for base in [2000i64, 2030, 2077] {
            std::fs::write(dir.join(format!("{base:020}.log")), b"").unwrap();
        }
        // The first of them does continue the log, so it is kept; the others are not.
        let log = PartitionLog::open(&dir, small_segments()).await.unwrap();
        assert_eq!(log.log_end_offset(), Offset(2000));
        assert_eq!(log.high_watermark(), Offset(2000));
        let mut expected = logs.clone();
        expected.push(dir.join(format!("{:020}.log", 2000)));
        assert_eq!(segment_files(&dir, "log"), expected);
        let t = log.append(&batch_of(0, 5), LeaderEpoch(0)).await.unwrap();
        assert_eq!(t.outcome().base_offset, Offset(2000));
        t.committed().await.unwrap();
        assert_eq!(check_whole_log(&log).await, 2005);
        drop(log);

        // A non-last segment that lost its last batch (never written) while the next
        // segment exists: the log ends at the shortened segment.
        let logs = segment_files(&dir, "log");
        let victim = &logs[logs.len() - 3];
        let _ = std::fs::remove_file(victim.with_extension("index"));
        let bytes = std::fs::read(victim).unwrap();
        let mut pos = 0;
        let mut last_batch = (0, 0i64);
        while pos < bytes.len() {
            let h = batch::parse_header(&bytes[pos..]).unwrap();
            last_batch = (pos, h.base_offset.get());
            pos += h.total_len();
        }
        std::fs::write(victim, &bytes[..last_batch.0]).unwrap();
        let log = PartitionLog::open(&dir, small_segments()).await.unwrap();
        assert_eq!(log.log_end_offset(), Offset(last_batch.1));
        assert_eq!(segment_files(&dir, "log"), logs[..logs.len() - 2].to_vec());
        assert_eq!(check_whole_log(&log).await, last_batch.1);
        let t = log.append(&batch_of(0, 1), LeaderEpoch(0)).await.unwrap();
        assert_eq!(t.outcome().base_offset, Offset(last_batch.1));
        t.committed().await.unwrap();
        assert_eq!(check_whole_log(&log).await, last_batch.1 + 1);
    });
}

/// Regression (seen in tests/crash.rs directories): a segment rolled but not sealed
/// before a crash was recovered without an index and never sealed afterwards, so
/// retention, which deletes only sealed segments from the oldest on, stopped at it for
/// good, and every start scanned it again.
#[test]
fn segments_left_unsealed_by_a_crash_are_sealed_after_recovery() {
    run("reseal", |dir| async move {
        {
            let log = PartitionLog::open(&dir, small_segments()).await.unwrap();
            append_n(&log, 400, 5).await;
        }
        let indexes = segment_files(&dir, "index");
        // Unseal the two oldest segments, as a crash between roll and seal leaves them.
        for victim in &indexes[..2] {
            std::fs::remove_file(victim).unwrap();
        }
        let config = LogConfig {
            retention_bytes: Some(128 * 1024),
            retention_ms: None,
            ..small_segments()
        };
        let log = PartitionLog::open(&dir, config).await.unwrap();
        log.flushed().await;
        assert_eq!(segment_files(&dir, "index"), indexes, "indexes rewritten");
        assert_eq!(log.stats().segments_sealed, 2);
        let before = log.segment_count();
        let deleted = log.enforce_retention(i64::MAX / 2).await.unwrap();
        assert!(
            deleted >= 2,
            "retention stuck: deleted {deleted} of {before}"
        );
        assert_eq!(check_whole_log(&log).await, 2000);
    });
}

/// Overwrites the log's only segment file with garbage, so whatever reads back came from
/// memory.
fn destroy_only_segment(dir: &std::path::Path) {
    let files = segment_files(dir, "log");
    assert_eq!(files.len(), 1);
    let size = std::fs::metadata(&files[0]).unwrap().len();
    std::fs::write(&files[0], vec![0xa5; size as usize]).unwrap();
}

/// `batch_of(start, n)` as the log stores it: base offset `start`, leader epoch `epoch`.
fn stored_batch(start: usize, n: usize, epoch: i32) -> Vec<u8> {
    let mut b = batch_of(start, n);
    batch::patch(&mut b, start as i64, epoch);
    b
}

/// The bytes a 1-byte read at `offset` returns (its whole batch, KIP-74).
async fn read_small(log: &Rc<PartitionLog>, offset: i64) -> Vec<u8> {
    let out = log.read(Offset(offset), 1).await.unwrap();
    out.chunks.iter().flat_map(|c| c.iter().copied()).collect()
}

#[test]
fn lone_small_appends_are_packed_in_the_tail_and_served_from_it() {
    run("tail-footprint", |dir| async move {
        let log = PartitionLog::open(&dir, LogConfig::default())
            .await
            .unwrap();
        let before = quiver_engine::log::shard_tail_bytes();
        let mut appended = 0;
        for i in 0..500 {
            let batch = batch_of(i, 1);
            appended += batch.len();
            let t = log.append(&batch, LeaderEpoch(0)).await.unwrap();
            t.committed().await.unwrap();
        }
        log.flushed().await;
        let held = quiver_engine::log::shard_tail_bytes() - before;
        // Each lone append had a 4 KiB-aligned staging buffer of its own (two blocks when
        // it straddles one); the tail keeps packed copies of just the appended bytes, not
        // those buffers (500 * 4 KiB and more before).
        assert_eq!(
            held, appended,
            "tail holds {held} bytes for {appended} appended"
        );
        // The copies serve reads: with the file's bytes destroyed, the log still reads
        // back whole, from memory.
        destroy_only_segment(&dir);
        assert_eq!(check_whole_log(&log).await, 500);
        // And a small read at every offset gets exactly its own batch (each one a chunk
        // of the tail: the chunks a read needs are found by position, not all cloned).
        for i in 0..500 {
            assert_eq!(
                read_small(&log, i).await,
                stored_batch(i as usize, 1, 0),
                "read at {i}"
            );
        }
        drop(log);
    });
}

/// Reads that start inside a tail chunk (rounds of many batches) are served from that
/// chunk: with the file destroyed, every offset still reads back exactly its batch.
#[test]
fn reads_starting_inside_tail_chunks_are_served_from_memory() {
    run("tail-middle", |dir| async move {
        let log = PartitionLog::open(&dir, LogConfig::default())
            .await
            .unwrap();
        // Unawaited appends share rounds, so most chunks hold several batches; ~0.5 MB,
        // so a read's first window (256 KiB past its start) ends inside a chunk too.
        let (batches, per_batch) = (1_000, 4);
        append_n(&log, batches, per_batch).await;
        assert!(
            log.stats().flush_rounds < batches as u64,
            "the appends should share rounds: {:?}",
            log.stats()
        );
        destroy_only_segment(&dir);
        for b in 0..batches {
            let base = b * per_batch;
            let expected = stored_batch(base, per_batch, 3);
            for offset in [base, base + per_batch - 1] {
                assert_eq!(
                    read_small(&log, offset as i64).await,
                    expected,
                    "read at {offset}"
                );
            }
        }
        drop(log);
    });
}

/// Lone small appends keep the active segment zero-filled ahead (so ext4 can write them
/// inline), sealed segments are trimmed back to their data, and everything reads back
/// after a restart.
#[test]
fn small_appends_zero_fill_ahead_and_seals_trim_it() {
    let config = LogConfig {
        segment_bytes: 1024 * 1024,
        ..LogConfig::default()
    };
    run("zerofill", move |dir| async move {
        let n = 1200; // ~1.3 KiB batches: ~1.6 MB, so one roll
        {
            let log = PartitionLog::open(&dir, config.clone()).await.unwrap();
            for b in 0..n {
                let t = log
                    .append(&batch_of(b * 10, 10), LeaderEpoch(1))
                    .await
                    .unwrap();
                t.written().await.unwrap();
            }
            log.flushed().await;
            let stats = log.stats();
            assert!(
                stats.zero_fill_bytes >= 512 * 1024,
                "lone appends must be zero-filled ahead: {stats:?}"
            );
            assert!(log.segment_count() >= 2, "expected a roll");
        }
        let mut logs: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "log"))
            .collect();
        logs.sort();
        for sealed in &logs[..logs.len() - 1] {
            let bytes = std::fs::read(sealed).unwrap();
            let zeros = bytes.iter().rev().take_while(|b| **b == 0).count();
            assert!(
                zeros < 4096,
                "{} ends in {zeros} zero bytes: the seal must trim the fill",
                sealed.display()
            );
        }
        let log = PartitionLog::open(&dir, config).await.unwrap();
        assert_eq!(log.log_end_offset(), Offset((n * 10) as i64));
        let mut next = 0i64;
        while next < (n * 10) as i64 {
            let out = log.read(Offset(next), 256 * 1024).await.unwrap();
            assert!(out.total_len() > 0);
            next = check_batches(&out.chunks, next);
        }
        // Appends continue over the recovered (zero-filled) tail.
        let t = log
            .append(&batch_of(n * 10, 10), LeaderEpoch(1))
            .await
            .unwrap();
        t.committed().await.unwrap();
        let out = log.read(Offset((n * 10) as i64), 1).await.unwrap();
        check_batches(&out.chunks, (n * 10) as i64);
    });
}

/// acks=1 appends that find the flusher idle are answered from the page cache at once
/// (one buffered write), the rest wait for the direct write; either way the log reads
/// back whole after a restart.
#[test]
fn idle_acks1_appends_are_written_through_the_page_cache() {
    use futures::FutureExt;
    use quiver_engine::limits::EARLY_WRITE_MAX_BYTES;
    run("early-write", |dir| async move {
        let n = 200;
        {
            let log = PartitionLog::open(&dir, LogConfig::default())
                .await
                .unwrap();
            for b in 0..n {
                log.flushed().await;
                let t = append_acks1(&log, batch_of(b * 3, 3)).await;
                let outcome = t
                    .written()
                    .now_or_never()
                    .expect("an idle log answers acks=1 without waiting for the disk")
                    .unwrap();
                assert_eq!(outcome.base_offset, Offset((b * 3) as i64));
            }
            assert_eq!(log.stats().early_writes, n as u64);
            // Each of those buffers was in the page cache whole when the flusher took it,
            // and the commit's fdatasync writes it back: no direct write of its own.
            log.flushed().await;
            assert_eq!(log.stats().direct_writes_skipped, n as u64);
            // Behind a write in flight: no early answer at once, but one as soon as that
            // write is done, without waiting for a direct write of its own.
            log.flushed().await;
            let first = append_acks1(&log, batch_of(n * 3, 3)).await;
            let second = append_acks1(&log, batch_of(n * 3 + 3, 3)).await;
            first.written().await.unwrap();
            second.written().await.unwrap();
            assert_eq!(log.stats().early_writes, n as u64 + 2);
            // Too big for the synchronous copy.
            log.flushed().await;
            let big = batch_of_size(EARLY_WRITE_MAX_BYTES);
            let t = append_acks1(&log, big).await;
            assert!(t.written().now_or_never().is_none());
            assert_eq!(log.stats().early_writes, n as u64 + 2);
            // Committed (acks=all) appends never take the early path.
            log.flushed().await;
            let t = log.append(&batch_of(0, 1), LeaderEpoch(1)).await.unwrap();
            t.committed().await.unwrap();
            assert_eq!(log.stats().early_writes, n as u64 + 2);
            log.flushed().await;
        }
        let log = PartitionLog::open(&dir, LogConfig::default())
            .await
            .unwrap();
        assert_eq!(check_whole_log(&log).await, log.log_end_offset().0);
        assert_eq!(log.log_end_offset(), Offset((n * 3 + 6 + 1 + 1) as i64));
    });
}

/// With interval durability, as with every-commit syncs, a flush job whose blocks the acks=1
/// path already put in the page cache skips its direct write: the interval's fdatasync writes
/// the pages back (Kafka's `flush.ms`). Everything reads back after a reopen, and the
/// interval's sync still runs (the shard's sync counters move).
#[test]
fn interval_durability_skips_the_direct_write_of_page_cache_blocks() {
    use futures::FutureExt;
    run("early-write-interval", |dir| async move {
        let config = interval_config(std::time::Duration::from_millis(20));
        let n = 20;
        {
            let log = PartitionLog::open(&dir, config.clone()).await.unwrap();
            for b in 0..n {
                log.flushed().await;
                let t = append_acks1(&log, batch_of(b * 3, 3)).await;
                t.written()
                    .now_or_never()
                    .unwrap_or_else(|| panic!("batch {b} not answered at once: {:?}", log.stats()))
                    .unwrap();
            }
            log.flushed().await;
            assert_eq!(log.stats().early_writes, n as u64);
            assert_eq!(log.stats().direct_writes_skipped, n as u64);
            // The interval's sync writes the skipped pages back.
            glommio::timer::sleep(std::time::Duration::from_millis(100)).await;
            let synced = quiver_engine::group_sync::stats();
            assert!(
                synced.fdatasyncs + synced.syncfs_members > 0,
                "the interval never synced: {synced:?}"
            );
        }
        let log = PartitionLog::open(&dir, config).await.unwrap();
        assert_eq!(check_whole_log(&log).await, (n * 3) as i64);
    });
}

/// Interval durability: fdatasync every `interval`, never by bytes.
fn interval_config(interval: std::time::Duration) -> LogConfig {
    LogConfig {
        durability: Durability::Interval {
            interval,
            bytes: u64::MAX,
        },
        ..LogConfig::default()
    }
}

/// Appends `batch` for a producer with acks=1.
async fn append_acks1(log: &Rc<PartitionLog>, batch: Vec<u8>) -> quiver_engine::log::AppendTicket {
    log.append_chunks_for(
        &[batch],
        LeaderEpoch(1),
        quiver_engine::log::AckLevel::Written,
    )
    .await
    .unwrap()
}

/// One batch of a single record whose value makes the batch at least `bytes` long.
fn batch_of_size(bytes: usize) -> Vec<u8> {
    let v = vec![b'z'; bytes];
    build::batch(&[(None, v.as_slice())], 5)
}
