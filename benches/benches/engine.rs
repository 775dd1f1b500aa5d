//! criterion benches for the storage engine's hot pieces, each with fixed inputs:
//! batch validation, checksums, sparse index lookup, the durable append path and reads
//! from the tail cache and from disk.
//!
//! `cargo bench -p quiver-benches` for figures; `scripts/bench-smoke.sh` runs every bench
//! once (criterion's `--test` mode) so CI keeps them working.

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use quiver_benches::{batch_of_size, close_log, log_named, BenchShard};
use quiver_engine::batch::validate_batch;
use quiver_engine::index::SegmentIndex;
use quiver_engine::types::{LeaderEpoch, Offset};

const RECORD_BYTES: usize = 1024;
const SIZES: [(&str, usize); 2] = [("16KiB", 16 << 10), ("1MiB", 1 << 20)];

fn bench_dir(name: &str) -> PathBuf {
    // Under target/ (ext4): /tmp may be tmpfs, where O_DIRECT is unavailable.
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}", std::process::id()))
}

fn batch_validation(c: &mut Criterion) {
    let mut group = c.benchmark_group("batch_validate");
    for (label, size) in SIZES {
        let batch = batch_of_size(size, RECORD_BYTES);
        validate_batch(&batch).expect("the bench batch is valid");
        group.throughput(Throughput::Bytes(batch.len() as u64));
        group.bench_function(BenchmarkId::from_parameter(label), |b| {
            b.iter(|| validate_batch(black_box(&batch)).expect("valid"))
        });
    }
    group.finish();
}

fn checksums(c: &mut Criterion) {
    let mut group = c.benchmark_group("checksum");
    for (label, size) in SIZES {
        let data: Vec<u8> = (0..size).map(|i| (i * 31 + 7) as u8).collect();
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(BenchmarkId::new("crc32c", label), |b| {
            b.iter(|| crc32c::crc32c(black_box(&data)))
        });
        group.bench_function(BenchmarkId::new("xxh3_64", label), |b| {
            b.iter(|| xxhash_rust::xxh3::xxh3_64(black_box(&data)))
        });
    }
    group.finish();
}

fn index_lookup(c: &mut Criterion) {
    const ENTRIES: u64 = 250_000;
    const OFFSETS_PER_BATCH: i64 = 16;
    let mut index = SegmentIndex::new(Offset(0));
    for i in 0..ENTRIES {
        // One batch per index interval, so every batch gets an entry.
        index.on_batch(
            Offset(i as i64 * OFFSETS_PER_BATCH),
            i * 4096,
            1_700_000_000_000 + i as i64,
        );
    }
    assert_eq!(index.entry_count() as u64, ENTRIES);
    // Fixed pseudo-random targets (xorshift), so every run looks up the same offsets.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let targets: Vec<Offset> = (0..4096)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            Offset((x % (ENTRIES * OFFSETS_PER_BATCH as u64)) as i64)
        })
        .collect();
    let mut next = 0usize;
    c.bench_function("index/lookup/250k_entries", |b| {
        b.iter(|| {
            next = (next + 1) % targets.len();
            index.lookup(black_box(targets[next]))
        })
    });
}

/// A log grows by every timed append; past this it is replaced (outside the timing) so
/// long runs neither roll segments mid-measurement nor fill the disk.
const APPEND_LOG_MAX_BYTES: u64 = 512 << 20;

fn append_path(c: &mut Criterion) {
    let shard = BenchShard::start(&bench_dir("bench-append"));
    let mut group = c.benchmark_group("append_committed");
    for (label, size) in SIZES {
        let batch: Arc<Vec<u8>> = Arc::new(batch_of_size(size, RECORD_BYTES));
        let name = format!("append-{label}");
        group.throughput(Throughput::Bytes(batch.len() as u64));
        group.bench_function(BenchmarkId::from_parameter(label), |b| {
            b.iter_custom(|iters| {
                let (batch, name, dir) =
                    (Arc::clone(&batch), name.clone(), shard.dir().to_path_buf());
                shard.run(move || async move {
                    let log = log_named(&dir, &name).await;
                    let start = Instant::now();
                    for _ in 0..iters {
                        let ticket = log.append(&batch, LeaderEpoch(0)).await.expect("append");
                        ticket.committed().await.expect("committed");
                    }
                    let elapsed = start.elapsed();
                    if log.size_bytes() > APPEND_LOG_MAX_BYTES {
                        drop(log);
                        close_log(&dir, &name, true).await;
                    }
                    elapsed
                })
            })
        });
    }
    group.finish();
}

/// Offsets at which 16 KiB batches start in the read log.
fn fill_read_log(shard: &BenchShard, name: &'static str, total_bytes: usize) -> Vec<Offset> {
    let dir = shard.dir().to_path_buf();
    let batch = batch_of_size(16 << 10, RECORD_BYTES);
    shard.run(move || async move {
        let log = log_named(&dir, name).await;
        let mut starts = Vec::new();
        let mut tickets = Vec::new();
        for _ in 0..total_bytes / batch.len() {
            let ticket = log.append(&batch, LeaderEpoch(0)).await.expect("append");
            starts.push(ticket.outcome().base_offset);
            tickets.push(ticket);
        }
        for t in tickets {
            t.committed().await.expect("committed");
        }
        starts
    })
}

fn read_path(c: &mut Criterion) {
    const READ_MAX_BYTES: usize = 1 << 20;
    // Fits the tail cache, so "tail" reads never touch the disk.
    const LOG_BYTES: usize = 32 << 20;
    let shard = BenchShard::start(&bench_dir("bench-read"));
    let starts = Arc::new(fill_read_log(&shard, "read", LOG_BYTES));
    // Only starts from which a whole 1 MiB is committed, so every read is the same size.
    let usable = starts
        .len()
        .saturating_sub(READ_MAX_BYTES / (16 << 10) + 1)
        .max(1);
    let mut group = c.benchmark_group("read");
    group.throughput(Throughput::Bytes(READ_MAX_BYTES as u64));
    for (label, reopen) in [("tail_cache_1MiB", false), ("cold_after_reopen_1MiB", true)] {
        if reopen {
            let dir = shard.dir().to_path_buf();
            // Reopening recovers the log from disk with an empty tail cache.
            shard.run(move || async move { close_log(&dir, "read", false).await });
        }
        let mut next = 0usize;
        group.bench_function(BenchmarkId::from_parameter(label), |b| {
            b.iter_custom(|iters| {
                let (starts, dir, first) = (Arc::clone(&starts), shard.dir().to_path_buf(), next);
                next = (next + iters as usize) % usable;
                shard.run(move || async move {
                    let log = log_named(&dir, "read").await;
                    let start = Instant::now();
                    for i in 0..iters as usize {
                        let offset = starts[(first + i) % usable];
                        let out = log.read(offset, READ_MAX_BYTES).await.expect("read");
                        assert!(out.total_len() > READ_MAX_BYTES / 2, "short read");
                        black_box(out);
                    }
                    start.elapsed()
                })
            })
        });
    }
    group.finish();
}

/// A consumer tailing a partition of lone small appends: every append was its own round,
/// so the tail cache holds one small chunk per batch, and each read asks for the newest
/// batch only. Its cost must not grow with how many chunks the tail holds.
fn read_newest_of_many_chunks(c: &mut Criterion) {
    const BATCH_BYTES: usize = 1 << 10;
    let shard = BenchShard::start(&bench_dir("bench-read-newest"));
    let mut group = c.benchmark_group("read_newest_lone_1KiB");
    for chunks in [16usize, 2_000] {
        let dir = shard.dir().to_path_buf();
        let name = format!("newest-{chunks}");
        let newest = shard.run({
            let name = name.clone();
            move || async move {
                let log = log_named(&dir, &name).await;
                let batch = batch_of_size(BATCH_BYTES, RECORD_BYTES);
                let mut last = Offset(0);
                for _ in 0..chunks {
                    let ticket = log.append(&batch, LeaderEpoch(0)).await.expect("append");
                    last = ticket.outcome().base_offset;
                    ticket.committed().await.expect("committed");
                }
                last
            }
        });
        group.bench_function(BenchmarkId::new("tail_chunks", chunks), |b| {
            b.iter_custom(|iters| {
                let (dir, name) = (shard.dir().to_path_buf(), name.clone());
                shard.run(move || async move {
                    let log = log_named(&dir, &name).await;
                    let start = Instant::now();
                    for _ in 0..iters {
                        let out = log.read(newest, 1 << 20).await.expect("read");
                        assert!(out.total_len() >= BATCH_BYTES / 2, "short read");
                        black_box(out);
                    }
                    start.elapsed()
                })
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = pure;
    config = Criterion::default();
    targets = batch_validation, checksums, index_lookup
}
criterion_group! {
    name = io;
    // Each iteration waits for the disk; fewer samples keep the run in minutes.
    config = Criterion::default().sample_size(30).measurement_time(Duration::from_secs(5));
    targets = append_path, read_path, read_newest_of_many_chunks
}
criterion_main!(pure, io);
