//! Log compaction (`cleanup.policy=compact`) on real segment files: latest value per key
//! with original offsets, reads that land in removed ranges, tombstones and their
//! retention, compressed batches, restarts, a cleaner killed mid-swap, and idempotent
//! producers whose batches were compacted.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use quiver_engine::batch::{self, build, BatchError};
use quiver_engine::log::{CleanupPolicy, LogConfig, PartitionLog};
use quiver_engine::types::{LeaderEpoch, Offset};
use quiver_engine::EngineError;

fn run<F, Fut>(name: &str, f: F)
where
    F: FnOnce(PathBuf) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + 'static,
{
    common::run_with_dir(&format!("compaction-{name}"), f)
}

fn compacted() -> LogConfig {
    LogConfig {
        segment_bytes: 2048,
        cleanup_policy: CleanupPolicy::Compact,
        min_cleanable_dirty_ratio_per_mille: 0,
        delete_retention_ms: 3_600_000,
        ..LogConfig::default()
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// One stored record as a consumer sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    offset: i64,
    key: Option<Bytes>,
    value: Option<Bytes>,
}

/// Reads like a consumer: from `from` to the high watermark, decoding every batch with
/// kafka-protocol's decoder (independent of the engine's), keeping records at or after
/// the position. Also returns the batches' (base offset, record count, codec bits).
async fn consume(log: &Rc<PartitionLog>, from: i64) -> (Vec<Seen>, Vec<(i64, i32, i16)>) {
    let mut next = from;
    let mut seen = Vec::new();
    let mut batches = Vec::new();
    while next < log.high_watermark().0 {
        let out = log.read(Offset(next), 1 << 20).await.unwrap();
        assert!(out.total_len() > 0, "read at {next} returned nothing");
        let all: Vec<u8> = out.chunks.iter().flat_map(|c| c.iter().copied()).collect();
        let mut pos = 0;
        while pos < all.len() {
            let h = batch::parse_header(&all[pos..]).unwrap();
            let one = &all[pos..pos + h.total_len()];
            batch::validate_framing_and_crc(one).expect("served batches have valid CRCs");
            batches.push((
                h.base_offset.get(),
                h.records_count.get(),
                h.attributes.get() & 7,
            ));
            let set = RecordBatchDecoder::decode(&mut Bytes::copy_from_slice(one)).unwrap();
            for r in set.records {
                if r.offset >= next {
                    seen.push(Seen {
                        offset: r.offset,
                        key: r.key,
                        value: r.value,
                    });
                }
            }
            next = next.max(h.last_offset() + 1);
            pos += h.total_len();
        }
    }
    (seen, batches)
}

fn key(k: usize) -> Vec<u8> {
    format!("key-{k}").into_bytes()
}

/// The value written at `offset`: it names its offset, so a survivor proves its offset.
fn value_at(offset: i64) -> Vec<u8> {
    format!("value@{offset}-{}", "p".repeat(40)).into_bytes()
}

/// Appends one record per batch: `keys[i]` (None value = tombstone) at offset
/// `log_end_offset + i`. Waits for every write and seal.
async fn put(log: &Rc<PartitionLog>, records: &[(Vec<u8>, bool)]) {
    let mut tickets = Vec::new();
    for (k, tombstone) in records {
        let offset = log.log_end_offset().0;
        let v = value_at(offset);
        let value = (!tombstone).then_some(v.as_slice());
        let b = build::batch_kv(&[(Some(k), value)], now_ms(), -1, -1, -1);
        tickets.push(log.append(&b, LeaderEpoch(0)).await.unwrap());
    }
    for t in tickets {
        t.committed().await.unwrap();
    }
    log.flushed().await;
}

/// Offset where the active segment starts (everything below is sealed).
fn active_base(dir: &Path) -> i64 {
    segment_bases(dir).into_iter().max().unwrap()
}

fn segment_bases(dir: &Path) -> Vec<i64> {
    let mut v: Vec<i64> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let n = e.ok()?.file_name().into_string().ok()?;
            n.strip_suffix(".log")?.parse().ok()
        })
        .collect();
    v.sort_unstable();
    v
}

/// Expected survivors below `sealed_end` after one pass: the latest offset of each key
/// among the records written below it (tombstones included).
fn latest_below(written: &[(Vec<u8>, bool)], sealed_end: i64) -> BTreeMap<i64, Vec<u8>> {
    let mut latest: BTreeMap<Vec<u8>, i64> = BTreeMap::new();
    for (i, (k, _)) in written.iter().enumerate().take(sealed_end as usize) {
        latest.insert(k.clone(), i as i64);
    }
    latest.into_iter().map(|(k, o)| (o, k)).collect()
}

#[test]
fn keyed_records_compact_to_the_latest_value_with_original_offsets() {
    run("latest", |dir| async move {
        let log = PartitionLog::open(&dir, compacted()).await.unwrap();
        let written: Vec<(Vec<u8>, bool)> = (0..400).map(|i| (key(i * 7 % 5), false)).collect();
        put(&log, &written).await;
        let segments_before = log.segment_count();
        let size_before = log.size_bytes();
        assert!(segments_before > 5, "{segments_before} segments");
        let sealed_end = active_base(&dir);

        let report = log.compact(now_ms()).await.unwrap();
        assert!(report.records_removed > 300, "{report:?}");
        let stats = log.stats();
        assert_eq!(stats.compaction_records_removed, report.records_removed);
        assert!(stats.compaction_bytes_reclaimed > 0);
        assert!(log.size_bytes() < size_before / 4);

        let (seen, _) = consume(&log, 0).await;
        let expected = latest_below(&written, sealed_end);
        let sealed: Vec<&Seen> = seen.iter().filter(|s| s.offset < sealed_end).collect();
        assert_eq!(
            sealed.len(),
            expected.len(),
            "one record per key below the active segment"
        );
        for s in sealed {
            assert_eq!(
                expected.get(&s.offset),
                s.key.as_deref().map(|k| k.to_vec()).as_ref()
            );
            assert_eq!(s.value.as_deref(), Some(&value_at(s.offset)[..]));
        }
        // The active segment is untouched: every record in it is still there.
        let active: Vec<i64> = seen
            .iter()
            .map(|s| s.offset)
            .filter(|o| *o >= sealed_end)
            .collect();
        assert_eq!(active, (sealed_end..400).collect::<Vec<_>>());
        assert_eq!(log.log_end_offset(), Offset(400));

        // A second pass with nothing new to clean does nothing.
        assert_eq!(log.compact(now_ms()).await.unwrap().groups_rewritten, 0);

        // Once more segments are sealed, the next pass also merges the small cleaned
        // segments (groups are formed from segment sizes, as in Kafka).
        put(
            &log,
            &(0..60).map(|i| (key(i % 5), false)).collect::<Vec<_>>(),
        )
        .await;
        log.compact(now_ms()).await.unwrap();
        assert!(
            log.segment_count() < segments_before / 2,
            "{}",
            log.segment_count()
        );
        let (seen, _) = consume(&log, 0).await;
        let keys: std::collections::BTreeSet<_> = seen.iter().map(|s| s.key.clone()).collect();
        assert_eq!(keys.len(), 5);
    });
}

#[test]
fn reads_inside_a_removed_range_return_the_next_surviving_batch() {
    run("gaps", |dir| async move {
        let log = PartitionLog::open(&dir, compacted()).await.unwrap();
        let written: Vec<(Vec<u8>, bool)> = (0..300).map(|i| (key(i % 3), false)).collect();
        put(&log, &written).await;
        log.compact(now_ms()).await.unwrap();
        let (all, _) = consume(&log, 0).await;
        let survivors: Vec<i64> = all.iter().map(|s| s.offset).collect();
        assert!(survivors.len() < 200);
        for from in 0..300 {
            let (seen, _) = consume(&log, from).await;
            let expected = survivors.iter().copied().find(|o| *o >= from);
            assert_eq!(
                seen.first().map(|s| s.offset),
                expected,
                "fetch from {from}"
            );
            // The engine itself answers with the batch holding the next survivor (or an
            // emptied batch just before it), never an earlier one.
            let out = log.read(Offset(from), 1).await.unwrap();
            let h = batch::parse_header(&out.chunks[0]).unwrap();
            assert!(h.last_offset() >= from);
        }
        // ListOffsets by timestamp skips emptied batches.
        let (base, _, bytes) = log.batch_for_timestamp(0).await.unwrap().unwrap();
        assert!(batch::parse_header(&bytes).unwrap().records_count.get() > 0);
        assert!(base.0 <= survivors[0]);
    });
}

#[test]
fn tombstones_are_kept_then_dropped_after_the_delete_retention() {
    run("tombstones", |dir| async move {
        let log = PartitionLog::open(&dir, compacted()).await.unwrap();
        let mut written: Vec<(Vec<u8>, bool)> = vec![(b"gone".to_vec(), false)];
        written.extend((0..40).map(|i| (key(100 + i), false)));
        written.push((b"gone".to_vec(), true));
        written.extend((0..80).map(|i| (key(200 + i), false)));
        put(&log, &written).await;
        let tombstone_offset = 41;
        let gone = |seen: &[Seen]| -> Vec<Seen> {
            seen.iter()
                .filter(|s| s.key.as_deref() == Some(&b"gone"[..]))
                .cloned()
                .collect()
        };

        log.compact(now_ms()).await.unwrap();
        let (seen, _) = consume(&log, 0).await;
        let g = gone(&seen);
        assert_eq!(g.len(), 1, "the value is gone, the tombstone stays: {g:?}");
        assert_eq!(g[0].offset, tombstone_offset);
        assert_eq!(g[0].value, None);

        // Cleaned again within delete.retention.ms: still there.
        put(
            &log,
            &(0..60).map(|i| (key(300 + i), false)).collect::<Vec<_>>(),
        )
        .await;
        log.compact(now_ms()).await.unwrap();
        assert_eq!(gone(&consume(&log, 0).await.0).len(), 1);

        // Cleaned once delete.retention.ms has passed: dropped.
        put(
            &log,
            &(0..60).map(|i| (key(400 + i), false)).collect::<Vec<_>>(),
        )
        .await;
        let later = now_ms() + 3_600_000 + 1;
        log.compact(later).await.unwrap();
        let (seen, _) = consume(&log, 0).await;
        assert!(gone(&seen).is_empty(), "{:?}", gone(&seen));
        // Nothing else was lost: every filler key is still there once.
        let fillers = seen
            .iter()
            .filter(|s| s.key.as_deref() != Some(&b"gone"[..]));
        assert_eq!(fillers.count(), 40 + 80 + 60 + 60);
    });
}

/// A gzip batch of `n` records with keys `key(k0 + i % distinct)`, made by kafka-protocol.
fn gzip_batch(k0: usize, n: usize, distinct: usize) -> Vec<u8> {
    let records: Vec<Record> = (0..n)
        .map(|i| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // kafka-protocol starts a new batch when offset - sequence changes.
            sequence: i as i32,
            timestamp: now_ms(),
            key: Some(Bytes::from(key(k0 + i % distinct))),
            value: Some(Bytes::from(format!("gz-{k0}-{i}"))),
            headers: Default::default(),
        })
        .collect();
    let mut out = BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression: Compression::Gzip,
    };
    RecordBatchEncoder::encode(&mut out, &records, &options).unwrap();
    out.to_vec()
}

#[test]
fn compressed_batches_are_rewritten_with_their_codec() {
    run("gzip", |dir| async move {
        let log = PartitionLog::open(&dir, compacted()).await.unwrap();
        // Each batch updates 3 keys 4 times; later batches update the same keys again.
        for _ in 0..30 {
            let b = gzip_batch(0, 12, 3);
            let t = log.append(&b, LeaderEpoch(0)).await.unwrap();
            t.committed().await.unwrap();
        }
        log.flushed().await;
        let sealed_end = active_base(&dir);
        assert!(sealed_end > 0);
        let report = log.compact(now_ms()).await.unwrap();
        assert!(report.records_removed > 0, "{report:?}");
        let (seen, batches) = consume(&log, 0).await;
        let sealed: Vec<&Seen> = seen.iter().filter(|s| s.offset < sealed_end).collect();
        assert_eq!(sealed.len(), 3, "{sealed:?}");
        for s in &sealed {
            // Within a batch the last update of key j is record 9 + j.
            let i = (s.offset % 12) as usize;
            assert!(i >= 9);
            assert_eq!(s.value.as_deref(), Some(format!("gz-0-{i}").as_bytes()));
        }
        // Batches with records keep gzip; emptied ones are bare uncompressed headers.
        assert!(
            batches
                .iter()
                .all(|(_, count, codec)| *codec == if *count > 0 { 1 } else { 0 }),
            "{batches:?}"
        );
        assert!(batches
            .iter()
            .any(|(base, count, _)| *base < sealed_end && *count > 0));
    });
}

#[test]
fn a_restart_after_compaction_reads_the_same_even_without_indexes() {
    run("restart", |dir| async move {
        let written: Vec<(Vec<u8>, bool)> = (0..300).map(|i| (key(i % 4), false)).collect();
        let before = {
            let log = PartitionLog::open(&dir, compacted()).await.unwrap();
            put(&log, &written).await;
            log.compact(now_ms()).await.unwrap();
            consume(&log, 0).await
        };
        {
            let log = PartitionLog::open(&dir, compacted()).await.unwrap();
            assert_eq!(consume(&log, 0).await, before);
            assert_eq!(log.log_end_offset(), Offset(300));
        }
        // Without index files every sealed segment is scanned: its offset gaps must not
        // end the log.
        for base in segment_bases(&dir) {
            let _ = std::fs::remove_file(dir.join(format!("{base:020}.index")));
        }
        let log = PartitionLog::open(&dir, compacted()).await.unwrap();
        assert_eq!(consume(&log, 0).await, before);
        assert_eq!(log.log_end_offset(), Offset(300));
        // And appends continue after the recovered end.
        put(&log, &[(key(9), false)]).await;
        assert_eq!(log.log_end_offset(), Offset(301));
    });
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

#[test]
fn a_cleaner_killed_mid_swap_recovers_to_a_consistent_log() {
    run("swap", |dir| async move {
        let written: Vec<(Vec<u8>, bool)> = (0..300).map(|i| (key(i % 4), false)).collect();
        let before_dir = dir.join("before");
        let after_dir = dir.join("after");
        let log_dir = dir.join("log");
        let (before, after): (Vec<Seen>, Vec<Seen>) = {
            let log = PartitionLog::open(&log_dir, compacted()).await.unwrap();
            put(&log, &written).await;
            // A first pass leaves small segments that the second pass merges.
            log.compact(now_ms()).await.unwrap();
            put(
                &log,
                &(0..100).map(|i| (key(i % 4), false)).collect::<Vec<_>>(),
            )
            .await;
            let before = consume(&log, 0).await.0;
            copy_dir(&log_dir, &before_dir);
            log.compact(now_ms()).await.unwrap();
            copy_dir(&log_dir, &after_dir);
            (before, consume(&log, 0).await.0)
        };
        let after_bases = segment_bases(&after_dir);
        let group_end = after_bases[1]; // the first rewritten group is [0, group_end)
        let merged = segment_bases(&before_dir)
            .into_iter()
            .filter(|b| *b < group_end)
            .count();
        assert!(merged > 1, "the first group merged {merged} segments");
        let name = |base: i64, ext: &str| format!("{base:020}.{ext}");

        for case in [
            "cleaned",
            "swap-with-index",
            "swap-without-index",
            "swap-half-deleted",
        ] {
            let _ = std::fs::remove_dir_all(&log_dir);
            copy_dir(&before_dir, &log_dir);
            let compacted_log = after_dir.join(name(0, "log"));
            let compacted_index = after_dir.join(name(0, "index"));
            match case {
                "cleaned" => {
                    // Killed while writing: the old segments are intact.
                    std::fs::copy(&compacted_log, log_dir.join(name(0, "log.cleaned"))).unwrap();
                    std::fs::write(log_dir.join(name(0, "index.cleaned")), b"torn").unwrap();
                }
                _ => {
                    std::fs::copy(&compacted_log, log_dir.join(name(0, "log.swap"))).unwrap();
                    if case != "swap-without-index" {
                        std::fs::copy(&compacted_index, log_dir.join(name(0, "index.cleaned")))
                            .unwrap();
                    }
                    if case == "swap-half-deleted" {
                        let second = segment_bases(&before_dir)[1];
                        assert!(second < group_end);
                        std::fs::remove_file(log_dir.join(name(second, "log"))).unwrap();
                        std::fs::remove_file(log_dir.join(name(second, "index"))).unwrap();
                    }
                }
            }
            let log = PartitionLog::open(&log_dir, compacted()).await.unwrap();
            let seen = consume(&log, 0).await.0;
            // Only the first group was swapped; later groups are as before the pass.
            let want: Vec<Seen> = if case == "cleaned" {
                before.clone()
            } else {
                let head = after.iter().filter(|s| s.offset < group_end);
                let tail = before.iter().filter(|s| s.offset >= group_end);
                head.chain(tail).cloned().collect()
            };
            assert!(
                seen == want,
                "case {case}: {} records, want {}",
                seen.len(),
                want.len()
            );
            assert_eq!(log.log_end_offset(), Offset(400), "case {case}");
            let leftovers: Vec<String> = std::fs::read_dir(&log_dir)
                .unwrap()
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| n.ends_with(".cleaned") || n.ends_with(".swap"))
                .collect();
            assert!(leftovers.is_empty(), "case {case}: {leftovers:?}");
            if case != "cleaned" {
                let want_bases: Vec<i64> = after_bases
                    .iter()
                    .copied()
                    .filter(|b| *b < group_end)
                    .chain(
                        segment_bases(&before_dir)
                            .into_iter()
                            .filter(|b| *b >= group_end),
                    )
                    .collect();
                assert_eq!(segment_bases(&log_dir), want_bases, "case {case}");
            }
        }
    });
}

#[test]
fn idempotent_dedup_still_works_after_its_batches_were_compacted() {
    run("idempotent", |dir| async move {
        let log = PartitionLog::open(&dir, compacted()).await.unwrap();
        // Producer 42 writes key "p" 30 times, one batch each.
        let producer_batch = |seq: i32| {
            let v = format!("p-{seq}-{}", "x".repeat(60));
            build::batch_with_producer(&[(Some(b"p"), v.as_bytes())], now_ms(), 42, 0, seq)
        };
        let mut offsets = Vec::new();
        for seq in 0..30 {
            let t = log
                .append(&producer_batch(seq), LeaderEpoch(0))
                .await
                .unwrap();
            offsets.push(t.committed().await.unwrap().base_offset);
        }
        // A plain producer overwrites "p", so every one of producer 42's records is
        // superseded, and fills more segments.
        let mut filler: Vec<(Vec<u8>, bool)> = vec![(b"p".to_vec(), false)];
        filler.extend((0..60).map(|i| (key(i), false)));
        put(&log, &filler).await;
        let report = log.compact(now_ms()).await.unwrap();
        assert!(report.records_removed >= 30, "{report:?}");

        // The producer's last batch survives, emptied, at its offset.
        let (_, batches) = consume(&log, 0).await;
        let last = offsets[29].0;
        assert!(batches.contains(&(last, 0, 0)), "{batches:?}");

        // Retries of recent batches are still recognised, with their original offsets.
        for seq in [27, 29] {
            let t = log
                .append(&producer_batch(seq), LeaderEpoch(0))
                .await
                .unwrap();
            let o = t.committed().await.unwrap();
            assert!(o.duplicate, "seq {seq}");
            assert_eq!(o.base_offset, offsets[seq as usize]);
        }
        let end = log.log_end_offset();
        drop(log);

        // After a restart that has to scan the segment (no index), the emptied batch
        // still restores the producer's sequence.
        for base in segment_bases(&dir) {
            let _ = std::fs::remove_file(dir.join(format!("{base:020}.index")));
        }
        let log = PartitionLog::open(&dir, compacted()).await.unwrap();
        assert_eq!(log.log_end_offset(), end);
        let t = log
            .append(&producer_batch(29), LeaderEpoch(0))
            .await
            .unwrap();
        assert!(t.outcome().duplicate);
        assert_eq!(t.outcome().base_offset, offsets[29]);
        let gap = log.append(&producer_batch(31), LeaderEpoch(0)).await;
        assert!(matches!(gap, Err(EngineError::OutOfOrderSequence { .. })));
        let next = log
            .append(&producer_batch(30), LeaderEpoch(0))
            .await
            .unwrap();
        assert!(!next.outcome().duplicate);
    });
}

#[test]
fn records_without_a_key_are_rejected_by_compacted_logs() {
    run("nullkey", |dir| async move {
        let log = PartitionLog::open(&dir, compacted()).await.unwrap();
        let b = build::batch(&[(Some(&b"k"[..]), &b"v"[..]), (None, &b"v"[..])], 0);
        assert!(matches!(
            log.append(&b, LeaderEpoch(0)).await,
            Err(EngineError::InvalidBatch(
                BatchError::NullKeyInCompactedTopic { index: 1 }
            ))
        ));
        assert_eq!(log.log_end_offset(), Offset(0));
        log.set_config(LogConfig::default());
        log.append(&b, LeaderEpoch(0)).await.unwrap();
    });
}
