//! `quiver-perf engine`: appends to one fresh PartitionLog with the default durability
//! policy (fdatasync per group commit), `concurrency` appends in flight like a producer
//! with max in-flight requests, then writes the same bytes without the engine, and
//! prints both with their ratios.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use serde::Serialize;

use quiver_engine::batch::build;
use quiver_engine::limits::{BATCH_HEADER_BYTES, MAX_BATCH_BYTES};
use quiver_engine::log::{LogConfig, LogStats, PartitionLog};
use quiver_engine::types::LeaderEpoch;

use crate::raw::{self, SyncMode};
use crate::report::{new_histogram, ratio, record, Bandwidth, LatencySummary, Machine};

#[derive(Debug, clap::Args)]
pub struct EngineArgs {
    /// Total bytes to append.
    #[arg(long, default_value_t = 1 << 30)]
    pub bytes: u64,
    /// Size of each RecordBatch appended (filled with whole records, at most this size).
    #[arg(long, default_value_t = 1 << 20)]
    pub batch_bytes: usize,
    /// Value bytes of each record.
    #[arg(long, default_value_t = 1024)]
    pub record_bytes: usize,
    /// Appends in flight (a producer's max in-flight requests).
    #[arg(long, default_value_t = 1)]
    pub concurrency: usize,
    /// Writes in flight for the raw bandwidth run.
    #[arg(long, default_value_t = 16)]
    pub raw_queue_depth: usize,
    /// At most this many raw write+fdatasync iterations (default: one per batch appended).
    #[arg(long, default_value_t = 5000)]
    pub raw_latency_iterations: u64,
    /// Data directory on the filesystem under test (ext4; not tmpfs).
    #[arg(long, default_value = "target/quiver-perf")]
    pub dir: PathBuf,
    /// Pin the executor to this CPU (default: unbound, better on a shared machine).
    #[arg(long)]
    pub cpu: Option<usize>,
    /// Also print the results as one JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
pub struct EngineFigures {
    pub batches: u64,
    pub batch_bytes: usize,
    pub records_per_batch: usize,
    pub concurrency: usize,
    pub bandwidth: Bandwidth,
    /// From the `append` call to `committed()` resolving.
    pub append_to_durable: LatencySummary,
    pub flush_rounds: u64,
    pub fdatasyncs: u64,
    pub bytes_written: u64,
    pub cpu_seconds: f64,
}

#[derive(Debug, Serialize)]
pub struct RawFigures {
    pub block_bytes: usize,
    pub queue_depth: usize,
    /// Same total bytes in `block_bytes` O_DIRECT writes, `queue_depth` in flight, one
    /// final fdatasync.
    pub bandwidth: Bandwidth,
    pub cpu_seconds: f64,
    /// One lone `block_bytes` write followed by fdatasync, repeated.
    pub write_fdatasync: LatencySummary,
}

#[derive(Debug, Serialize)]
pub struct Ratios {
    /// engine MB/s / raw MB/s.
    pub bandwidth: f64,
    /// engine append-to-durable p50 / raw write+fdatasync p50.
    pub p50: f64,
    /// engine append-to-durable p99 / raw write+fdatasync p99.
    pub p99: f64,
}

#[derive(Debug, Serialize)]
pub struct EngineReport {
    pub machine: Machine,
    pub engine: EngineFigures,
    pub raw: RawFigures,
    pub ratios: Ratios,
}

/// One valid uncompressed batch of `record_bytes`-value records, at most `batch_bytes`
/// long (at least one record).
pub fn make_batch(batch_bytes: usize, record_bytes: usize) -> (Vec<u8>, usize) {
    let value: Vec<u8> = (0..record_bytes).map(|i| (i * 7 + 13) as u8).collect();
    let one = build::batch(&[(None, &value)], 1_700_000_000_000).len();
    let per_record = one - BATCH_HEADER_BYTES;
    let mut count = (batch_bytes.saturating_sub(BATCH_HEADER_BYTES) / per_record).max(1);
    loop {
        let records: Vec<(Option<&[u8]>, &[u8])> =
            (0..count).map(|_| (None, value.as_slice())).collect();
        let batch = build::batch(&records, 1_700_000_000_000);
        // Varint widths grow with the offset delta, so trim until it fits.
        if batch.len() <= batch_bytes || count == 1 {
            return (batch, count);
        }
        count -= 1;
    }
}

pub fn run(args: EngineArgs) -> Result<()> {
    ensure!(args.concurrency > 0, "--concurrency must be at least 1");
    ensure!(
        args.batch_bytes <= MAX_BATCH_BYTES,
        "--batch-bytes above the engine's {MAX_BATCH_BYTES}-byte limit"
    );
    let machine = Machine::describe(&crate::prepare_dir(&args.dir)?);
    let (batch, records_per_batch) = make_batch(args.batch_bytes, args.record_bytes);
    let batches = args.bytes.div_ceil(batch.len() as u64).max(1);
    let concurrency = args.concurrency;
    let raw_qd = args.raw_queue_depth;
    let raw_iterations = batches.min(args.raw_latency_iterations).max(1);
    let block = args.batch_bytes;
    let (engine, raw) = crate::on_executor(&args.dir, args.cpu, move |dir| async move {
        let engine = engine_run(&dir, batch, records_per_batch, batches, concurrency).await?;
        let raw_total = engine.bandwidth.bytes;
        let cpu = crate::thread_cpu_time();
        let bandwidth = raw::sequential_write(&dir, raw_total, block, raw_qd, SyncMode::Final)
            .await
            .context("raw bandwidth run")?;
        let cpu_seconds = (crate::thread_cpu_time() - cpu).as_secs_f64();
        let write_fdatasync = raw::write_fdatasync_latency(&dir, block, raw_iterations)
            .await
            .context("raw latency run")?;
        Ok((
            engine,
            RawFigures {
                block_bytes: block,
                queue_depth: raw_qd,
                bandwidth,
                cpu_seconds,
                write_fdatasync,
            },
        ))
    })?;
    let ratios = Ratios {
        bandwidth: ratio(engine.bandwidth.mb_per_s, raw.bandwidth.mb_per_s),
        p50: ratio(engine.append_to_durable.p50_us, raw.write_fdatasync.p50_us),
        p99: ratio(engine.append_to_durable.p99_us, raw.write_fdatasync.p99_us),
    };
    let report = EngineReport {
        machine,
        engine,
        raw,
        ratios,
    };
    print_table(&report);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(())
}

async fn engine_run(
    dir: &Path,
    batch: Vec<u8>,
    records_per_batch: usize,
    batches: u64,
    concurrency: usize,
) -> Result<EngineFigures> {
    let log_dir = dir.join(format!("engine-log-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&log_dir);
    let log = PartitionLog::open(&log_dir, LogConfig::default())
        .await
        .context("opening the partition log")?;
    let histogram = Rc::new(RefCell::new(new_histogram()));
    let failures = Rc::new(RefCell::new(0u64));
    let in_flight = Rc::new(glommio::sync::Semaphore::new(concurrency as u64));
    let cpu = crate::thread_cpu_time();
    let start = Instant::now();
    for _ in 0..batches {
        let permit = in_flight
            .acquire_static_permit(1)
            .await
            .map_err(|e| anyhow::anyhow!("in-flight semaphore: {e}"))?;
        let appended_at = Instant::now();
        let ticket = log.append(&batch, LeaderEpoch(0)).await.context("append")?;
        let histogram = Rc::clone(&histogram);
        let failures = Rc::clone(&failures);
        // The task may be polled before spawn_local returns; it borrows only after its
        // await and never across one.
        glommio::spawn_local(async move {
            let committed = ticket.committed().await;
            let elapsed = appended_at.elapsed();
            match committed {
                Ok(_) => record(&mut histogram.borrow_mut(), elapsed),
                Err(_) => *failures.borrow_mut() += 1,
            }
            drop(permit);
        })
        .detach();
    }
    // Every permit back means every append is durable.
    in_flight
        .acquire(concurrency as u64)
        .await
        .map_err(|e| anyhow::anyhow!("in-flight semaphore: {e}"))?;
    let elapsed = start.elapsed();
    let cpu_seconds = (crate::thread_cpu_time() - cpu).as_secs_f64();
    log.flushed().await;
    let stats: LogStats = log.stats();
    let failures = *failures.borrow();
    if failures > 0 {
        bail!("{failures} appends failed to commit");
    }
    drop(log);
    // Let the segment files close before removing them.
    glommio::timer::sleep(Duration::from_millis(10)).await;
    let _ = std::fs::remove_dir_all(&log_dir);
    let append_to_durable = LatencySummary::from_histogram(&histogram.borrow());
    Ok(EngineFigures {
        batches,
        batch_bytes: batch.len(),
        records_per_batch,
        concurrency,
        bandwidth: Bandwidth::new(batches * batch.len() as u64, elapsed),
        append_to_durable,
        flush_rounds: stats.flush_rounds,
        fdatasyncs: stats.fdatasyncs,
        bytes_written: stats.bytes_written,
        cpu_seconds,
    })
}

fn print_table(r: &EngineReport) {
    r.machine.print();
    let e = &r.engine;
    let raw = &r.raw;
    println!(
        "engine: {} batches of {} bytes ({} records of ~{} B), {} in flight, fsync per group commit",
        e.batches,
        e.batch_bytes,
        e.records_per_batch,
        e.batch_bytes / e.records_per_batch.max(1),
        e.concurrency
    );
    println!(
        "        {} flush rounds ({:.2} batches/round), {} fdatasyncs, {} MiB written, {:.2} CPU s",
        e.flush_rounds,
        e.batches as f64 / e.flush_rounds.max(1) as f64,
        e.fdatasyncs,
        e.bytes_written >> 20,
        e.cpu_seconds
    );
    println!();
    println!("{}", e.bandwidth.row("engine append, durable"));
    println!(
        "{}",
        raw.bandwidth.row(&format!(
            "raw O_DIRECT {} KiB qd{} + final fdatasync",
            raw.block_bytes >> 10,
            raw.queue_depth
        ))
    );
    println!(
        "{:<52} {:>10.3}",
        "ratio engine/raw MB/s", r.ratios.bandwidth
    );
    println!(
        "{:<52} {:>10.2} / {:.2}",
        "CPU seconds engine / raw", e.cpu_seconds, raw.cpu_seconds
    );
    println!();
    println!("{}", LatencySummary::header());
    println!("{}", e.append_to_durable.row("engine append -> committed"));
    println!(
        "{}",
        raw.write_fdatasync.row(&format!(
            "raw lone {} KiB write + fdatasync",
            raw.block_bytes >> 10
        ))
    );
    println!(
        "{:<52} {:>9.3} {:>9.3}",
        "ratio engine/raw (p50, p99)", r.ratios.p50, r.ratios.p99
    );
}
