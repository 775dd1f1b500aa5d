//! One partition's log: segments of RecordBatch v2 bytes written with direct I/O through
//! io_uring, group commit, an in-memory tail of recently written buffers, sparse indexes,
//! retention and crash recovery.
//!
//! Invariants:
//! - A `PartitionLog` lives on exactly one core (it is `!Send`); other cores reach it by
//!   message passing. Its `RefCell` is never borrowed across an `.await`.
//! - Bytes become visible to readers only below the high watermark, which is the end of
//!   what the durability policy counts as committed (synced, or written for interval
//!   policies). A reader never sees bytes that recovery could later discard.
//! - Appends reach the disk in offset order: the single flusher task writes the queued
//!   buffers of one round, then syncs, then acknowledges every append the round covered.
//!   The sync of one round overlaps the writes of the next, never its own.
//! - Files are written in whole aligned blocks; a segment's partial last block is rewritten
//!   with identical leading bytes by the next write, so already-durable bytes never change.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::sync::oneshot;
use crate::sync::signal::Signal;
use bytes::{Bytes, BytesMut};
use glommio::io::{DmaBuffer, DmaFile, OpenOptions};

use crate::batch;
use crate::error::{EngineError, Result};
use crate::foreign::{drain_graveyard, home_bytes};
use crate::index::{SegmentIndex, SegmentSummary};
use crate::limits::*;
use crate::producer_state::{ProducerStateTable, SequenceCheck};
use crate::recovery::{ScanEvent, ScanSummary, ScannedBatch, SegmentScanner};
use crate::types::{LeaderEpoch, Offset};

mod cleaner;
pub use cleaner::CompactionReport;

/// When an append counts as committed (acknowledged to acks=1/all producers and visible
/// to consumers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Every group commit ends with fdatasync; an append is committed once synced.
    /// The default.
    EveryCommit,
    /// Appends are committed once written to the file: handed to the device by a direct
    /// write, or, for a small round the acks=1 path already copied into the page cache
    /// whole, left there (Kafka's page-cache write). fdatasync runs when `interval` has
    /// passed or `bytes` have been written since the last sync, whichever comes first. A
    /// kernel crash or power loss may lose committed appends from the last interval, as
    /// with Kafka's `flush.ms`; a crash of the process loses none.
    Interval { interval: Duration, bytes: u64 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CleanupPolicy {
    /// Retention deletes whole sealed segments by age and size.
    Delete,
    /// The cleaner (`PartitionLog::compact`, log/cleaner.rs) keeps the latest record per
    /// key in sealed segments and drops tombstones after `delete_retention_ms`;
    /// retention deletes nothing.
    Compact,
    /// Both: compaction, and retention by age and size (Kafka's "compact,delete").
    CompactDelete,
}

impl CleanupPolicy {
    pub fn compacts(self) -> bool {
        matches!(self, CleanupPolicy::Compact | CleanupPolicy::CompactDelete)
    }

    pub fn deletes(self) -> bool {
        matches!(self, CleanupPolicy::Delete | CleanupPolicy::CompactDelete)
    }

    /// Kafka's spelling of the policy (`cleanup.policy`).
    pub fn as_kafka_str(self) -> &'static str {
        match self {
            CleanupPolicy::Delete => "delete",
            CleanupPolicy::Compact => "compact",
            CleanupPolicy::CompactDelete => "compact,delete",
        }
    }

    /// Parses Kafka's list ("compact", "delete", "compact,delete" in either order).
    pub fn from_kafka_str(value: &str) -> Option<Self> {
        let (mut compact, mut delete) = (false, false);
        for part in value.split(',').map(str::trim) {
            match part {
                "compact" => compact = true,
                "delete" => delete = true,
                _ => return None,
            }
        }
        match (compact, delete) {
            (true, true) => Some(CleanupPolicy::CompactDelete),
            (true, false) => Some(CleanupPolicy::Compact),
            (false, true) => Some(CleanupPolicy::Delete),
            (false, false) => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    pub segment_bytes: u64,
    pub segment_ms: Option<u64>,
    pub retention_bytes: Option<u64>,
    pub retention_ms: Option<u64>,
    pub cleanup_policy: CleanupPolicy,
    pub durability: Durability,
    /// Kafka's `min.cleanable.dirty.ratio`, per mille.
    pub min_cleanable_dirty_ratio_per_mille: u16,
    /// Kafka's `delete.retention.ms`: how long a tombstone survives once cleanable.
    pub delete_retention_ms: u64,
    /// Kafka's `min.compaction.lag.ms`: records younger than this are not compacted.
    pub min_compaction_lag_ms: u64,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            segment_ms: Some(7 * 24 * 3600 * 1000),
            retention_bytes: None,
            retention_ms: Some(7 * 24 * 3600 * 1000),
            cleanup_policy: CleanupPolicy::Delete,
            durability: Durability::EveryCommit,
            min_cleanable_dirty_ratio_per_mille: DEFAULT_MIN_CLEANABLE_DIRTY_RATIO_PER_MILLE,
            delete_retention_ms: DEFAULT_DELETE_RETENTION_MS,
            min_compaction_lag_ms: 0,
        }
    }
}

/// What the caller of an append will wait for, so the log can take the cheapest path
/// that gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckLevel {
    /// Nothing (acks=0).
    None,
    /// The bytes are in the kernel, so they survive a crash of this process (acks=1, as
    /// Kafka's page-cache write). When no direct write of the partition is queued or in
    /// flight and the staged blocks are small (`EARLY_WRITE_MAX_BYTES`), the append copies
    /// them into the page cache of the segment file with one buffered `pwrite` and the
    /// ticket is resolved at once, instead of after the direct-I/O write (tens of µs of
    /// device time); an append that finds a write in flight is answered that way when the
    /// write completes. The direct-I/O write still follows; the kernel writes the dirty
    /// page back before it.
    Written,
    /// The durability policy (acks=all).
    Committed,
}

/// The result of an append once it is committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendOutcome {
    pub base_offset: Offset,
    pub last_offset: Offset,
    /// The batch was a retry of one already stored: nothing was appended.
    pub duplicate: bool,
    pub log_start_offset: Offset,
}

/// Returned by [`PartitionLog::append`] once offsets are assigned. Await
/// [`AppendTicket::committed`] for the durability policy (acks=all), or
/// [`AppendTicket::written`] for the leader's write alone (acks=1). Dropping it (acks=0)
/// is fine: the append proceeds.
pub struct AppendTicket {
    outcome: AppendOutcome,
    committed: Option<oneshot::Receiver<bool>>,
    written: Option<oneshot::Receiver<bool>>,
}

impl AppendTicket {
    pub fn outcome(&self) -> AppendOutcome {
        self.outcome
    }

    /// Resolves once the append satisfies the durability policy (fdatasync by default)
    /// and is visible to readers.
    pub async fn committed(self) -> Result<AppendOutcome> {
        Self::wait(self.committed, self.outcome).await
    }

    /// Resolves once the append's bytes are written to the segment file with direct I/O:
    /// they survive a crash of this process, but not necessarily a power loss until the
    /// sync. Kafka's and Redpanda's acks=1.
    pub async fn written(self) -> Result<AppendOutcome> {
        Self::wait(self.written, self.outcome).await
    }

    async fn wait(
        rx: Option<oneshot::Receiver<bool>>,
        outcome: AppendOutcome,
    ) -> Result<AppendOutcome> {
        match rx {
            None => Ok(outcome),
            Some(rx) => match rx.await {
                Ok(true) => Ok(outcome),
                _ => Err(EngineError::LogFailed),
            },
        }
    }
}

/// What a read returns: whole batches, as zero-copy views of the buffers the disk I/O
/// used, plus the partition's offsets at the time of the read.
#[derive(Debug, Default)]
pub struct ReadOutput {
    pub chunks: Vec<Bytes>,
    pub high_watermark: Offset,
    pub log_start_offset: Offset,
    pub log_end_offset: Offset,
}

impl ReadOutput {
    pub fn total_len(&self) -> usize {
        self.chunks.iter().map(|c| c.len()).sum()
    }
}

/// A flushed, immutable buffer holding segment bytes `[position, position + data.len())`.
#[derive(Clone)]
struct TailChunk {
    position: u64,
    data: Bytes,
    /// Memory the chunk keeps alive (its whole allocation, not just `data`): what the
    /// tail-cache limits count.
    footprint: usize,
}

thread_local! {
    /// Tail-cache bytes held by every log on this shard (thread), against
    /// `TAIL_CACHE_BYTES_PER_SHARD`.
    static SHARD_TAIL_BYTES: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

fn shard_tail_add(bytes: usize) {
    SHARD_TAIL_BYTES.with(|c| c.set(c.get() + bytes));
}

fn shard_tail_sub(bytes: usize) {
    SHARD_TAIL_BYTES.with(|c| c.set(c.get().saturating_sub(bytes)));
}

/// Tail-cache bytes held on this thread's shard.
pub fn shard_tail_bytes() -> usize {
    SHARD_TAIL_BYTES.with(|c| c.get())
}

struct Segment {
    base_offset: Offset,
    file: Rc<DmaFile>,
    path: PathBuf,
    index: SegmentIndex,
    /// Bytes appended (staged or written).
    size: u64,
    /// Bytes covered by the committed (visible) prefix.
    committed_size: u64,
    next_offset: Offset,
    created: Instant,
    sealed: bool,
    /// Recently written buffers, oldest first.
    tail: VecDeque<TailChunk>,
    tail_bytes: usize,
    /// The most recent buffer holding this segment's last bytes (written or not), used to
    /// start the next write at an aligned position.
    last_chunk: Option<TailChunk>,
    /// File bytes known to be written (data or zero fill): appends below it overwrite.
    zeroed_end: u64,
    /// A buffered (page-cache) descriptor of the file for early acks=1 writes, opened on
    /// first use (see [`AckLevel::Written`]).
    buffered: Option<std::fs::File>,
}

impl Drop for Segment {
    fn drop(&mut self) {
        shard_tail_sub(self.tail_bytes);
    }
}

/// A buffer being filled by appends; it becomes a write when the flusher takes it.
struct Staging {
    segment_base: Offset,
    buf: DmaBuffer,
    aligned_start: u64,
    /// Bytes of the previous partial block copied at the start (rewritten, not new).
    head: usize,
    len: usize,
    /// `len` when [`early_write`] last put this buffer's pages into the page cache.
    early_len: usize,
}

/// A closed buffer queued for writing.
struct FlushJob {
    segment_base: Offset,
    file: Rc<DmaFile>,
    chunk: TailChunk,
    write_buf: Rc<DmaBuffer>,
    end_position: u64,
    end_offset: Offset,
    /// Newly appended bytes in this job (excludes the rewritten head block).
    appended_bytes: usize,
    /// Every block of the job is already in the page cache, written by [`early_write`],
    /// and the group commit's fdatasync will write it back: the direct write is skipped.
    in_page_cache: bool,
}

/// Counters for tests, benchmarks and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogStats {
    pub appends: u64,
    pub flush_rounds: u64,
    pub fdatasyncs: u64,
    pub bytes_written: u64,
    pub segments_sealed: u64,
    /// Zero bytes written ahead of appends (see `ZERO_FILL_CHUNK_BYTES`).
    pub zero_fill_bytes: u64,
    /// Compaction passes that rewrote at least one segment.
    pub compaction_passes: u64,
    /// Bytes of sealed segments the cleaner rewrote (their size before cleaning).
    pub compaction_bytes_cleaned: u64,
    /// Bytes those rewrites freed.
    pub compaction_bytes_reclaimed: u64,
    /// Records removed: superseded values, expired tombstones, records without a key.
    pub compaction_records_removed: u64,
    /// acks=1 appends answered from the page cache (see [`AckLevel::Written`]).
    pub early_writes: u64,
    /// Flush jobs whose direct write was skipped: all their blocks were in the page cache
    /// already (`early_writes`), and the commit's fdatasync writes them back.
    pub direct_writes_skipped: u64,
}

/// A zero-fill write in flight: `[start, end)` of the segment based at `segment_base`.
/// Data writes into that range wait for it (else zeros could land over data).
struct ZeroFill {
    segment_base: Offset,
    start: u64,
    end: u64,
    done: glommio::task::JoinHandle<()>,
}

struct Waiter {
    end_offset: Offset,
    tx: oneshot::Sender<bool>,
    /// An acks=1 append that would take the page-cache answer ([`AckLevel::Written`]).
    early: bool,
}

/// Wakes every long poll waiting on this log (the watermark moved, or the log failed).
fn fire_hw_watchers(st: &mut LogState) {
    for w in st.hw_watchers.drain(..) {
        w.fire();
    }
}

struct LogState {
    dir: PathBuf,
    config: LogConfig,
    segments: Vec<Segment>,
    log_start_offset: Offset,
    log_end_offset: Offset,
    committed_end: Offset,
    written_since_sync: u64,
    last_sync: Instant,
    staging: Option<Staging>,
    queue: VecDeque<FlushJob>,
    unflushed_bytes: usize,
    flushing: bool,
    /// Segments closed by a roll whose index is written once all their bytes are.
    seal_pending: Vec<Offset>,
    sync_timer_armed: bool,
    failed: bool,
    waiters: VecDeque<Waiter>,
    /// Appends waiting for their write (acks=1), in offset order.
    write_waiters: VecDeque<Waiter>,
    /// Rounds of direct-I/O writes under way (0 or 1): early writes wait for none.
    writes_in_flight: u32,
    /// End of what has been written to segment files (at or above `committed_end`).
    written_end: Offset,
    /// Long polls waiting for the high watermark to move: one signal per waiting read
    /// pass, shared by all the partitions it waits on (see `watch_high_watermark`).
    hw_watchers: Vec<Signal>,
    space_waiters: Vec<oneshot::Sender<()>>,
    producers: ProducerStateTable,
    alignment: u64,
    stats: LogStats,
    zero_fill: Option<ZeroFill>,
    /// The open slab that small tail-cache copies are packed into (`compact_for_tail`).
    tail_slab: BytesMut,
}

/// A partition log. Clone the `Rc` to share it between tasks on its core.
pub struct PartitionLog {
    state: RefCell<LogState>,
    /// Serializes appends across the roll check and its awaits, so two appends cannot
    /// both roll the same segment.
    append_lock: glommio::sync::Semaphore,
    /// Where the cleaner's last pass ended (not persisted: after a restart the whole
    /// log counts as dirty once).
    cleaner: RefCell<cleaner::CleanerState>,
}

fn segment_path(dir: &Path, base: Offset, ext: &str) -> PathBuf {
    dir.join(format!("{:020}.{ext}", base.0))
}

/// Writes start and end on multiples of this. The device's logical block (what glommio
/// reports, 512 here) is enough for O_DIRECT to be accepted, but ext4 treats a write that
/// is not aligned to its own 4 KiB block as "unaligned DIO": it zeroes the rest of the
/// partial block and drains all direct I/O in flight on the inode around it. With 512
/// alignment that cost half the sequential bandwidth (docs/benchmarks.md).
fn write_alignment(file: &DmaFile) -> u64 {
    file.alignment().max(MIN_WRITE_ALIGNMENT_BYTES)
}

fn align_down(v: u64, a: u64) -> u64 {
    v / a * a
}

fn align_up(v: u64, a: u64) -> u64 {
    v.div_ceil(a) * a
}

async fn open_dma(path: &Path, create: bool) -> Result<DmaFile> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(create)
        .dma_open(path)
        .await
        .map_err(|e| EngineError::io("open", path.display(), e.into()))
}

fn gio<'a>(
    op: &'static str,
    path: &'a Path,
) -> impl FnOnce(glommio::GlommioError<()>) -> EngineError + 'a {
    move |e| EngineError::io(op, path.display(), e.into())
}

async fn sync_dir(dir: &Path) -> Result<()> {
    let d = glommio::io::Directory::open(dir)
        .await
        .map_err(gio("open dir", dir))?;
    d.sync().await.map_err(gio("sync dir", dir))?;
    d.close().await.map_err(gio("close dir", dir))?;
    Ok(())
}

impl PartitionLog {
    /// Opens (recovering) or creates the log in `dir`.
    pub async fn open(dir: &Path, config: LogConfig) -> Result<Rc<PartitionLog>> {
        std::fs::create_dir_all(dir)
            .map_err(|e| EngineError::io("create dir", dir.display(), e))?;
        // A cleaner killed mid-swap left `.cleaned` / `.swap` files: finish or drop them
        // before the segments are listed.
        cleaner::finish_interrupted_swaps(dir).await?;
        let mut bases: Vec<i64> = std::fs::read_dir(dir)
            .map_err(|e| EngineError::io("list", dir.display(), e))?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                name.strip_suffix(".log")?.parse::<i64>().ok()
            })
            .collect();
        bases.sort_unstable();

        let gaps_below = cleaner::gaps_below(dir);
        let mut segments = Vec::new();
        let mut producers = ProducerStateTable::new();
        let mut truncated_at: Option<usize> = None;
        for (i, &base) in bases.iter().enumerate() {
            // Offsets are dense across segments too. A roll creates the next segment at
            // the log end offset of everything appended so far, before the old
            // segment's last bytes are written; a crash in between leaves the next
            // segment (and any rolled after it) starting past where the old one really
            // ends. None of their offsets was committed, since commits go in offset
            // order, so the log ends where the old segment does.
            if let Some(prev) = segments.last().map(|s: &Segment| s.next_offset) {
                if prev != Offset(base) {
                    tracing::warn!(
                        dir = %dir.display(),
                        expected = prev.0,
                        base,
                        "segment does not continue the previous one; the log ends there"
                    );
                    truncated_at = Some(i - 1);
                    break;
                }
            }
            let is_last = i + 1 == bases.len();
            // Compaction leaves offset gaps in the sealed segments it rewrote.
            let gaps = !is_last && Offset(base) < gaps_below;
            let (segment, clean) =
                recover_segment(dir, Offset(base), is_last, gaps, &mut producers).await?;
            segments.push(segment);
            if !clean && !is_last {
                truncated_at = Some(i);
                break;
            }
        }
        if let Some(i) = truncated_at {
            // Corruption inside a sealed segment, or a gap between segments: like Kafka,
            // the log ends there. Later segments cannot be trusted to be contiguous and
            // are removed, durably, before new appends may reuse their offsets.
            for &base in &bases[i + 1..] {
                tracing::error!(dir = %dir.display(), base, "removing segment after the end of the log");
                let _ = std::fs::remove_file(segment_path(dir, Offset(base), "log"));
                let _ = std::fs::remove_file(segment_path(dir, Offset(base), "index"));
            }
            sync_dir(dir).await?;
            // The segment now last is reopened for appends below (and loses its index
            // if it was sealed).
        }
        if segments.is_empty() {
            segments.push(create_segment(dir, Offset::ZERO).await?);
        }
        let alignment = write_alignment(&segments[0].file);
        let log_start_offset = segments[0].base_offset;
        let log_end_offset = segments.last().map(|s| s.next_offset).unwrap_or_default();
        // The active segment may have been sealed on disk right before a crash; it is
        // simply reopened for appends.
        if let Some(last) = segments.last_mut() {
            if last.sealed {
                last.sealed = false;
                let _ = std::fs::remove_file(segment_path(dir, last.base_offset, "index"));
            }
        }
        // Segments rolled but not sealed before a crash were scanned and trimmed above
        // but have no index file. Left unsealed, retention (which deletes only sealed
        // segments, oldest first) would stop at them for good, and every start would
        // scan them again; the flusher seals them like any rolled segment.
        let seal_pending: Vec<Offset> = segments[..segments.len() - 1]
            .iter()
            .filter(|s| !s.sealed)
            .map(|s| s.base_offset)
            .collect();
        let log = Rc::new(PartitionLog {
            append_lock: glommio::sync::Semaphore::new(1),
            cleaner: RefCell::new(cleaner::CleanerState::new(log_start_offset)),
            state: RefCell::new(LogState {
                dir: dir.to_path_buf(),
                config,
                segments,
                log_start_offset,
                log_end_offset,
                committed_end: log_end_offset,
                written_since_sync: 0,
                last_sync: Instant::now(),
                staging: None,
                queue: VecDeque::new(),
                unflushed_bytes: 0,
                flushing: false,
                seal_pending,
                sync_timer_armed: false,
                failed: false,
                waiters: VecDeque::new(),
                write_waiters: VecDeque::new(),
                writes_in_flight: 0,
                written_end: log_end_offset,
                hw_watchers: Vec::new(),
                space_waiters: Vec::new(),
                producers,
                alignment,
                stats: LogStats::default(),
                zero_fill: None,
                tail_slab: BytesMut::new(),
            }),
        });
        // No borrow is held here: the flusher may be polled before spawn_local returns.
        let unsealed = !log.state.borrow().seal_pending.is_empty();
        if unsealed {
            log.ensure_flusher();
        }
        Ok(log)
    }

    pub fn log_end_offset(&self) -> Offset {
        self.state.borrow().log_end_offset
    }

    pub fn log_start_offset(&self) -> Offset {
        self.state.borrow().log_start_offset
    }

    /// End of the committed prefix: what consumers may read and acks wait for.
    pub fn high_watermark(&self) -> Offset {
        self.state.borrow().committed_end
    }

    /// Fires `signal` once the high watermark is above `offset` (at once if it already
    /// is, or if the log failed). A long poll registers one signal with every partition
    /// it waits on, so a read pass over 500 caught-up partitions costs one allocation and
    /// one wake-up, not 500; the signal may live on another shard's fetch.
    pub fn watch_high_watermark(&self, offset: Offset, signal: &Signal) {
        let mut st = self.state.borrow_mut();
        if st.committed_end > offset || st.failed {
            signal.fire();
        } else {
            // Signals already fired or abandoned are dropped here, bounding the list.
            st.hw_watchers.retain(|w| !w.is_done());
            st.hw_watchers.push(signal.clone());
        }
    }

    pub fn config(&self) -> LogConfig {
        self.state.borrow().config.clone()
    }

    pub fn set_config(&self, config: LogConfig) {
        self.state.borrow_mut().config = config;
    }

    /// Waits until every staged append is written and every rolled segment sealed
    /// (used on shutdown and by tests).
    pub async fn flushed(&self) {
        loop {
            {
                let st = self.state.borrow();
                if !st.flushing
                    && st.queue.is_empty()
                    && st.staging.is_none()
                    && st.seal_pending.is_empty()
                    && st.zero_fill.is_none()
                {
                    return;
                }
                if st.failed {
                    return;
                }
            }
            glommio::timer::sleep(Duration::from_millis(1)).await;
        }
    }

    pub fn stats(&self) -> LogStats {
        self.state.borrow().stats
    }

    pub fn segment_count(&self) -> usize {
        self.state.borrow().segments.len()
    }

    pub fn size_bytes(&self) -> u64 {
        self.state.borrow().segments.iter().map(|s| s.size).sum()
    }

    /// Validates `records` (one or more batches), assigns offsets and stages the bytes
    /// for the next group commit. Returns once offsets are assigned; the ticket resolves
    /// when the append is committed.
    pub async fn append(
        self: &Rc<Self>,
        records: &[u8],
        leader_epoch: LeaderEpoch,
    ) -> Result<AppendTicket> {
        self.append_chunks(&[records], leader_epoch).await
    }

    /// [`append`](Self::append) for records received as chunks, split anywhere (the
    /// views of decrypted packets a QUIC stream delivered). The batches are validated
    /// where they lie, across chunk boundaries, before anything changes, then each is
    /// copied from the chunks straight into the staging buffer: one copy, as for one
    /// buffer. A rejected append leaves the log as it was.
    pub async fn append_chunks<C: AsRef<[u8]>>(
        self: &Rc<Self>,
        records: &[C],
        leader_epoch: LeaderEpoch,
    ) -> Result<AppendTicket> {
        self.append_chunks_for(records, leader_epoch, AckLevel::Committed)
            .await
    }

    /// [`append_chunks`](Self::append_chunks) for a caller that will wait for `ack`:
    /// with [`AckLevel::Written`] the ticket may resolve at once (see there).
    pub async fn append_chunks_for<C: AsRef<[u8]>>(
        self: &Rc<Self>,
        records: &[C],
        leader_epoch: LeaderEpoch,
        ack: AckLevel,
    ) -> Result<AppendTicket> {
        let batches = batch::split_and_validate_chunks(records)?;
        let mut source = batch::Scattered::new(records);
        let records_len = source.len();
        if self.state.borrow().config.cleanup_policy.compacts() {
            match records {
                [one] => cleaner::check_keys(one.as_ref(), &batches)?,
                // Records of a compacted topic in several chunks (QUIC): each batch is
                // gathered to walk its records, a copy only on this path.
                _ => {
                    for &(pos, header) in &batches {
                        let mut batch = vec![0u8; header.total_len()];
                        source.copy_to(pos, &mut batch);
                        cleaner::check_keys(&batch, &[(0, header)])?;
                    }
                }
            }
        }
        loop {
            let wait = {
                let st = self.state.borrow();
                if st.failed {
                    return Err(EngineError::LogFailed);
                }
                if st.unflushed_bytes + records_len > MAX_UNFLUSHED_BYTES_PER_PARTITION
                    && st.unflushed_bytes > 0
                {
                    drop(st);
                    let (tx, rx) = oneshot::channel();
                    self.state.borrow_mut().space_waiters.push(tx);
                    Some(rx)
                } else {
                    None
                }
            };
            match wait {
                Some(rx) => {
                    let _ = rx.await;
                }
                None => break,
            }
        }
        // Idempotence: the first batch decides (clients send one batch per partition).
        let first = batches[0].1;
        let check = self.state.borrow().producers.check(
            first.producer_id.get(),
            first.producer_epoch.get(),
            first.base_sequence.get(),
            first.records_count.get(),
        )?;
        if let SequenceCheck::Duplicate { base_offset } = check {
            // A retry of a batch that may itself still be in flight: answer when the
            // original is written/committed, never before.
            let mut st = self.state.borrow_mut();
            let last_offset = Offset(base_offset.0 + first.last_offset_delta.get() as i64);
            let end = last_offset.next(1);
            let committed = (st.committed_end < end).then(|| {
                let (tx, rx) = oneshot::channel();
                st.waiters.push_back(Waiter {
                    end_offset: end,
                    tx,
                    early: false,
                });
                rx
            });
            let written = (st.written_end < end).then(|| {
                let (tx, rx) = oneshot::channel();
                st.write_waiters.push_back(Waiter {
                    end_offset: end,
                    tx,
                    early: false,
                });
                rx
            });
            return Ok(AppendTicket {
                outcome: AppendOutcome {
                    base_offset,
                    last_offset,
                    duplicate: true,
                    log_start_offset: st.log_start_offset,
                },
                committed,
                written,
            });
        }
        let _permit = self
            .append_lock
            .acquire_permit(1)
            .await
            .map_err(|_| EngineError::LogFailed)?;
        if self.needs_roll(records_len) {
            self.roll().await?;
        }
        let mut guard = self.state.borrow_mut();
        let st = &mut *guard;
        if st.failed {
            return Err(EngineError::LogFailed);
        }
        let base_offset = st.log_end_offset;
        let mut next = base_offset;
        for &(pos, header) in &batches {
            let batch_base = next;
            stage_batch(st, &mut source, pos, &header, batch_base, leader_epoch);
            st.producers.record(
                header.producer_id.get(),
                header.producer_epoch.get(),
                header.base_sequence.get(),
                header.records_count.get(),
                batch_base,
            );
            next = batch_base.next(header.offset_count());
        }
        st.log_end_offset = next;
        st.stats.appends += 1;
        let (tx, rx) = oneshot::channel();
        st.waiters.push_back(Waiter {
            end_offset: next,
            tx,
            early: false,
        });
        let written = if ack == AckLevel::Written && early_write(st) {
            // Earlier appends in the same staging buffer are in the kernel now too.
            answer_waiters(&mut st.write_waiters, next);
            None
        } else {
            let (write_tx, write_rx) = oneshot::channel();
            st.write_waiters.push_back(Waiter {
                end_offset: next,
                tx: write_tx,
                early: ack == AckLevel::Written,
            });
            Some(write_rx)
        };
        let outcome = AppendOutcome {
            base_offset,
            last_offset: Offset(next.0 - 1),
            duplicate: false,
            log_start_offset: st.log_start_offset,
        };
        drop(guard);
        self.ensure_flusher();
        Ok(AppendTicket {
            outcome,
            committed: Some(rx),
            written,
        })
    }

    fn needs_roll(&self, incoming: usize) -> bool {
        let st = self.state.borrow();
        let Some(active) = st.segments.last() else {
            return true;
        };
        if active.size == 0 {
            return false;
        }
        let too_big =
            active.size + incoming as u64 > st.config.segment_bytes.min(MAX_SEGMENT_BYTES);
        let too_old = st
            .config
            .segment_ms
            .is_some_and(|ms| active.created.elapsed() >= Duration::from_millis(ms));
        let offsets_overflow = st.log_end_offset.0 - active.base_offset.0 > (u32::MAX / 2) as i64;
        too_big || too_old || offsets_overflow
    }

    /// Closes the active segment and opens a new one. The flusher seals the old one
    /// (trim, sync, index file) after all of its bytes are written.
    async fn roll(self: &Rc<Self>) -> Result<()> {
        let (dir, base) = {
            let mut st = self.state.borrow_mut();
            close_staging(&mut st);
            if let Some(active) = st.segments.last() {
                let b = active.base_offset;
                st.seal_pending.push(b);
            }
            (st.dir.clone(), st.log_end_offset)
        };
        let segment = create_segment(&dir, base).await?;
        self.state.borrow_mut().segments.push(segment);
        self.ensure_flusher();
        Ok(())
    }

    /// Starts the flusher unless it runs. Call with no borrow of the state held:
    /// glommio may poll a freshly spawned task before `spawn_local` returns.
    fn ensure_flusher(self: &Rc<Self>) {
        let start = !std::mem::replace(&mut self.state.borrow_mut().flushing, true);
        if start {
            let log = Rc::clone(self);
            glommio::spawn_local(async move { log.flush_loop().await }).detach();
        }
    }

    /// Group commit, pipelined one round deep: while round N's fdatasync runs, round
    /// N+1's writes (the appends staged meanwhile) are already in flight, so the disk
    /// never idles waiting for a sync, and the producers woken by round N's acks find
    /// the next writes submitted. Round N+1's writes start only after round N's writes
    /// completed, so writes that share a block never overlap in time across rounds.
    async fn flush_loop(self: Rc<Self>) {
        // Written but not yet committed (synced, acknowledged).
        let mut written: Vec<FlushJob> = Vec::new();
        loop {
            let jobs: Vec<FlushJob> = {
                let mut st = self.state.borrow_mut();
                close_staging(&mut st);
                if (st.queue.is_empty() && st.seal_pending.is_empty() && written.is_empty())
                    || st.failed
                {
                    st.flushing = false;
                    return;
                }
                // At least one job; more while the round stays within its byte limit.
                let mut round_bytes = 0;
                let take = st
                    .queue
                    .iter()
                    .take_while(|j| {
                        round_bytes += j.chunk.data.len();
                        round_bytes <= MAX_FLUSH_ROUND_BYTES || round_bytes == j.chunk.data.len()
                    })
                    .count();
                st.queue.drain(..take).collect()
            };
            self.maybe_zero_fill(&jobs);
            let mut result = match (written.is_empty(), jobs.is_empty()) {
                (true, true) => Ok(()),
                (true, false) => self.write_jobs(&jobs).await,
                (false, true) => self.commit_round(&written).await,
                (false, false) => {
                    let (committed, wrote) =
                        futures::join!(self.commit_round(&written), self.write_jobs(&jobs));
                    committed.and(wrote)
                }
            };
            written = jobs;
            if result.is_ok() {
                result = self.seal_ready().await;
            }
            if let Err(e) = result {
                tracing::error!(error = %e, "partition write failed; failing the log");
                let mut st = self.state.borrow_mut();
                st.failed = true;
                st.flushing = false;
                let st = &mut *st;
                for w in st.waiters.drain(..).chain(st.write_waiters.drain(..)) {
                    let _ = w.tx.send(false);
                }
                for w in st.space_waiters.drain(..) {
                    let _ = w.send(());
                }
                // Long polls re-read and find the error instead of waiting it out.
                fire_hw_watchers(st);
                return;
            }
        }
    }

    /// Writes one round's buffers, all in flight together (queue depth = jobs), then
    /// rewrites the blocks that neighbouring jobs share.
    ///
    /// Neighbouring jobs of one segment share at most one block: its leading bytes are
    /// identical in both buffers, but the earlier buffer pads the rest with zeros where
    /// the later one has new bytes. Concurrent writes complete in any order, so when the
    /// earlier one lands last the block ends with zeros and recovery truncates the log
    /// there, losing acknowledged appends. Rewriting each shared block from the later
    /// buffer once both writes are done (and before the sync) makes the result exact
    /// while the big writes keep their queue depth.
    async fn write_jobs(&self, jobs: &[FlushJob]) -> Result<()> {
        self.state.borrow_mut().writes_in_flight += 1;
        let result = self.write_jobs_in_flight(jobs).await;
        let mut st = self.state.borrow_mut();
        st.writes_in_flight -= 1;
        // acks=1 appends that arrived during these writes were not answered from the page
        // cache (a write was in flight); they need not wait for a write of their own.
        if result.is_ok() && st.write_waiters.iter().any(|w| w.early) && early_write(&mut st) {
            // Every append so far is in the kernel now.
            let end = st.log_end_offset;
            answer_waiters(&mut st.write_waiters, end);
        }
        result
    }

    async fn write_jobs_in_flight(&self, jobs: &[FlushJob]) -> Result<()> {
        let overlapping = self.state.borrow().zero_fill.as_ref().is_some_and(|z| {
            jobs.iter().any(|j| {
                z.segment_base == j.segment_base
                    && j.chunk.position < z.end
                    && j.chunk.position + j.write_buf.len() as u64 > z.start
            })
        });
        if overlapping {
            self.finish_zero_fill(None).await;
        }
        // A job already in the page cache needs no direct write: the commit's fdatasync
        // writes its dirty pages back, and a later direct write or read of those blocks
        // makes the kernel write them back first. Skipping it halves the device writes
        // of an idle partition and keeps the shard from waking an io_uring worker (a
        // direct write of dirty pages is punted to one) right after the answer.
        let skipped = jobs.iter().filter(|j| j.in_page_cache).count() as u64;
        self.state.borrow_mut().stats.direct_writes_skipped += skipped;
        let writes = jobs.iter().filter(|j| !j.in_page_cache).map(|j| {
            let file = Rc::clone(&j.file);
            let buf = Rc::clone(&j.write_buf);
            let pos = j.chunk.position;
            async move { (file.write_rc_at(buf, pos).await, j) }
        });
        for (r, j) in futures::future::join_all(writes).await {
            r.map_err(|e| EngineError::io("write", file_path(&j.file), e.into()))?;
        }
        let fixups = jobs.windows(2).filter_map(|pair| {
            let (earlier, later) = (&pair[0], &pair[1]);
            let earlier_end = earlier.chunk.position + earlier.write_buf.len() as u64;
            if !Rc::ptr_eq(&earlier.file, &later.file) || later.chunk.position >= earlier_end {
                return None;
            }
            let shared = (earlier_end - later.chunk.position) as usize;
            let mut block = later.file.alloc_dma_buffer(shared);
            block
                .as_bytes_mut()
                .copy_from_slice(&later.write_buf.as_bytes()[..shared]);
            let file = Rc::clone(&later.file);
            let pos = later.chunk.position;
            Some(async move { (file.write_at(block, pos).await, file) })
        });
        for (r, file) in futures::future::join_all(fixups).await {
            r.map_err(|e| EngineError::io("write", file_path(&file), e.into()))?;
        }
        let written: u64 = jobs.iter().map(|j| j.chunk.data.len() as u64).sum();
        let mut st = self.state.borrow_mut();
        st.written_since_sync += written;
        st.stats.flush_rounds += 1;
        st.stats.bytes_written += written;
        // Jobs are in offset order: the last one ends the written prefix.
        if let Some(last) = jobs.last() {
            st.written_end = st.written_end.max(last.end_offset);
        }
        let written_end = st.written_end;
        answer_waiters(&mut st.write_waiters, written_end);
        Ok(())
    }

    /// Makes a written round durable as the policy asks, then publishes it: advances the
    /// committed end, moves its buffers to the tail cache and acknowledges its appends.
    async fn commit_round(self: &Rc<Self>, jobs: &[FlushJob]) -> Result<()> {
        let (sync_now, durability) = {
            let st = self.state.borrow();
            let due = match st.config.durability {
                Durability::EveryCommit => true,
                Durability::Interval { interval, bytes } => {
                    st.written_since_sync >= bytes || st.last_sync.elapsed() >= interval
                }
            };
            (due, st.config.durability)
        };
        let mut synced_files: Vec<Rc<DmaFile>> = Vec::new();
        for j in jobs {
            if !synced_files.iter().any(|f| Rc::ptr_eq(f, &j.file)) {
                synced_files.push(Rc::clone(&j.file));
            }
        }
        if sync_now {
            // Let the tasks this round woke run first: the connections whose acks=1
            // appends were answered from the page cache are still to send those answers
            // (a QUIC answer leaves from its connection's own task). The sync's request
            // goes to the kernel at the executor's next reactor turn, and a turn that
            // comes early (a timer firing mid-request preempts the task queue) would
            // otherwise submit it first: an io_uring worker, the device's interrupts and
            // the journal's kworker then run on this CPU ahead of those answers (traced:
            // ~180 µs added to such an answer).
            futures_lite::future::yield_now().await;
            for f in &synced_files {
                crate::group_sync::sync_file(f)
                    .await
                    .map_err(|e| EngineError::io("sync", file_path(f), e))?;
            }
            // The next round's writes may have completed meanwhile; only this round's
            // bytes are known to be covered by the sync.
            let round_bytes: u64 = jobs.iter().map(|j| j.chunk.data.len() as u64).sum();
            let mut st = self.state.borrow_mut();
            st.written_since_sync = st.written_since_sync.saturating_sub(round_bytes);
            st.last_sync = Instant::now();
            st.stats.fdatasyncs += synced_files.len() as u64;
        } else if let Durability::Interval { interval, .. } = durability {
            let arm = !std::mem::replace(&mut self.state.borrow_mut().sync_timer_armed, true);
            if arm {
                self.schedule_interval_sync(interval, synced_files);
            }
        }
        let mut st = self.state.borrow_mut();
        let st = &mut *st;
        for j in jobs {
            st.unflushed_bytes -= j.appended_bytes;
            if let Some(seg) = st
                .segments
                .iter_mut()
                .find(|s| s.base_offset == j.segment_base)
            {
                seg.committed_size = seg.committed_size.max(j.end_position);
                let chunk = compact_for_tail(&mut st.tail_slab, &j.chunk, j.appended_bytes);
                seg.tail_bytes += chunk.footprint;
                shard_tail_add(chunk.footprint);
                seg.tail.push_back(chunk);
                // Over either limit, this partition gives up its oldest buffers (those
                // reads then go to disk). Each partition keeps its newest buffer, so the
                // shard may exceed its budget by one buffer per partition.
                while (seg.tail_bytes > TAIL_CACHE_BYTES_PER_PARTITION
                    || shard_tail_bytes() > TAIL_CACHE_BYTES_PER_SHARD)
                    && seg.tail.len() > 1
                {
                    if let Some(old) = seg.tail.pop_front() {
                        seg.tail_bytes -= old.footprint;
                        shard_tail_sub(old.footprint);
                    }
                }
            }
            st.committed_end = st.committed_end.max(j.end_offset);
        }
        // Only the newest segment keeps a tail; older ones are read from disk.
        let n = st.segments.len();
        for seg in st.segments.iter_mut().take(n.saturating_sub(1)) {
            seg.tail.clear();
            shard_tail_sub(std::mem::take(&mut seg.tail_bytes));
        }
        answer_waiters(&mut st.waiters, st.committed_end);
        for w in st.space_waiters.drain(..) {
            let _ = w.send(());
        }
        fire_hw_watchers(st);
        drain_graveyard();
        Ok(())
    }

    /// Keeps the active segment zero-filled ahead of small rounds (see
    /// `ZERO_FILL_CHUNK_BYTES` for why). Starts at most one fill at a time, past every
    /// byte appended so far, so no data write in flight can overlap it; later rounds
    /// that reach into it wait for it in `write_jobs`.
    fn maybe_zero_fill(self: &Rc<Self>, jobs: &[FlushJob]) {
        let round_bytes: usize = jobs.iter().map(|j| j.chunk.data.len()).sum();
        if jobs.is_empty() || round_bytes > ZERO_FILL_MAX_ROUND_BYTES {
            return;
        }
        let fill = {
            let st = self.state.borrow();
            if st.zero_fill.is_some() || st.failed {
                return;
            }
            let Some(seg) = st.segments.last().filter(|s| !s.sealed) else {
                return;
            };
            let limit = align_up(
                st.config.segment_bytes.min(MAX_SEGMENT_BYTES),
                MIN_WRITE_ALIGNMENT_BYTES,
            );
            let appended_end = align_up(seg.size, st.alignment.max(MIN_WRITE_ALIGNMENT_BYTES));
            if seg.zeroed_end >= appended_end + ZERO_FILL_LOW_WATER_BYTES || appended_end >= limit {
                return;
            }
            let start = seg.zeroed_end.max(appended_end);
            let end = (start + ZERO_FILL_CHUNK_BYTES).min(limit);
            if end <= start {
                return;
            }
            (seg.base_offset, Rc::clone(&seg.file), start, end)
        };
        let (segment_base, file, start, end) = fill;
        let log = Rc::clone(self);
        let done = glommio::spawn_local(async move {
            let mut zeros = file.alloc_dma_buffer((end - start) as usize);
            zeros.as_bytes_mut().fill(0);
            let ok = file.write_at(zeros, start).await.is_ok();
            let mut st = log.state.borrow_mut();
            if ok {
                st.stats.zero_fill_bytes += end - start;
                if let Some(seg) = st
                    .segments
                    .iter_mut()
                    .find(|s| s.base_offset == segment_base)
                {
                    seg.zeroed_end = seg.zeroed_end.max(end);
                }
            }
            // A failed fill only costs speed: appends there extend the file as before.
            if st
                .zero_fill
                .as_ref()
                .is_some_and(|z| z.segment_base == segment_base && z.start == start)
            {
                st.zero_fill = None;
            }
        })
        .detach();
        // `detach` keeps the task running if the handle is dropped; the handle is kept
        // only to wait for it.
        self.state.borrow_mut().zero_fill = Some(ZeroFill {
            segment_base,
            start,
            end,
            done,
        });
    }

    /// Waits for the zero fill in flight (only one on `segment`, when given).
    async fn finish_zero_fill(&self, segment: Option<Offset>) {
        let fill = {
            let mut st = self.state.borrow_mut();
            match &st.zero_fill {
                Some(z) if segment.is_none_or(|b| b == z.segment_base) => st.zero_fill.take(),
                _ => None,
            }
        };
        if let Some(z) = fill {
            z.done.await;
        }
    }

    /// Under an interval policy, an idle partition still gets its last writes synced
    /// within one interval. At most one timer is armed per log.
    fn schedule_interval_sync(self: &Rc<Self>, interval: Duration, files: Vec<Rc<DmaFile>>) {
        let log = Rc::clone(self);
        glommio::spawn_local(async move {
            glommio::timer::sleep(interval).await;
            // Rounds committed while this timer was armed did not arm their own, and one of
            // them may have gone to a segment created since: sync the active one too (older
            // segments were synced when they were sealed).
            let mut files = files;
            if let Some(active) = log.state.borrow().segments.last() {
                if !files.iter().any(|f| Rc::ptr_eq(f, &active.file)) {
                    files.push(Rc::clone(&active.file));
                }
            }
            for f in files {
                if let Err(e) = crate::group_sync::sync_file(&f).await {
                    tracing::error!(error = %e, "interval sync failed; failing the log");
                    let mut st = log.state.borrow_mut();
                    st.failed = true;
                    fire_hw_watchers(&mut st);
                }
            }
            let mut st = log.state.borrow_mut();
            st.last_sync = Instant::now();
            st.written_since_sync = 0;
            st.sync_timer_armed = false;
        })
        .detach();
    }

    /// Seals every pending segment whose bytes have all been written.
    async fn seal_ready(&self) -> Result<()> {
        loop {
            let next = {
                let st = self.state.borrow();
                st.seal_pending.first().and_then(|base| {
                    st.segments
                        .iter()
                        .find(|s| s.base_offset == *base)
                        .filter(|s| s.committed_size == s.size || st.queue.is_empty())
                        .map(|s| (s.base_offset, Rc::clone(&s.file), s.path.clone()))
                })
            };
            let Some((base, file, path)) = next else {
                let mut st = self.state.borrow_mut();
                // A pending seal for a segment that no longer exists is dropped.
                let known: Vec<Offset> = st.segments.iter().map(|s| s.base_offset).collect();
                st.seal_pending.retain(|b| known.contains(b));
                return Ok(());
            };
            self.seal_segment(base, &file, &path).await?;
            self.state.borrow_mut().seal_pending.retain(|b| *b != base);
        }
    }

    /// Trims the file to its logical size, syncs it and writes its index file.
    async fn seal_segment(&self, base: Offset, file: &DmaFile, path: &Path) -> Result<()> {
        let (summary, encoded, dir) = {
            let st = self.state.borrow();
            let Some(seg) = st.segments.iter().find(|s| s.base_offset == base) else {
                return Ok(());
            };
            let summary = SegmentSummary {
                base_offset: seg.base_offset,
                next_offset: seg.next_offset,
                size_bytes: seg.size,
                max_timestamp: seg.index.max_timestamp(),
            };
            (summary, seg.index.encode(&summary), st.dir.clone())
        };
        // A zero fill landing after the truncate would grow the sealed file again.
        self.finish_zero_fill(Some(base)).await;
        file.truncate(summary.size_bytes)
            .await
            .map_err(gio("truncate", path))?;
        file.fdatasync().await.map_err(gio("fdatasync", path))?;
        let index_path = segment_path(&dir, base, "index");
        let tmp_path = segment_path(&dir, base, "index.tmp");
        let index_file = open_dma(&tmp_path, true).await?;
        let mut buf = index_file
            .alloc_dma_buffer(align_up(encoded.len() as u64, index_file.alignment()) as usize);
        buf.as_bytes_mut().fill(0);
        buf.as_bytes_mut()[..encoded.len()].copy_from_slice(&encoded);
        index_file
            .write_at(buf, 0)
            .await
            .map_err(gio("write", &tmp_path))?;
        index_file
            .fdatasync()
            .await
            .map_err(gio("fdatasync", &tmp_path))?;
        index_file.close().await.map_err(gio("close", &tmp_path))?;
        std::fs::rename(&tmp_path, &index_path)
            .map_err(|e| EngineError::io("rename", index_path.display(), e))?;
        sync_dir(&dir).await?;
        let mut st = self.state.borrow_mut();
        st.stats.segments_sealed += 1;
        if let Some(seg) = st.segments.iter_mut().find(|s| s.base_offset == base) {
            seg.sealed = true;
            // No more appends, so no more early writes.
            seg.buffered = None;
        }
        Ok(())
    }

    /// Reads whole batches starting with the one containing `start` (or, when
    /// compaction removed it, the next one after it), up to `max_bytes` (at least one
    /// batch even if larger, as Kafka does since KIP-74), stopping at the high watermark
    /// and at the end of the segment holding the first batch.
    pub async fn read(&self, start: Offset, max_bytes: usize) -> Result<ReadOutput> {
        let mut from = start;
        loop {
            let out = self.read_segment(from, max_bytes).await?;
            if !out.chunks.is_empty() {
                return Ok(out);
            }
            // Nothing at or after `from` in its segment: compaction removed the rest of
            // it, so the next batch is in a later segment.
            let next = {
                let st = self.state.borrow();
                st.segments
                    .iter()
                    .map(|s| s.base_offset)
                    .find(|b| *b > from && *b < st.committed_end)
            };
            match next {
                Some(b) => from = b,
                None => return Ok(out),
            }
        }
    }

    /// `len` bytes of `seg` from `start`: from the tail cache when it holds all of them,
    /// else from the file. Only the tail chunks overlapping the range are cloned, and
    /// under a short borrow at the time of the load: a partition's tail can hold
    /// thousands of small chunks (one per round), and cloning all of them for every fetch
    /// cost more the longer a consumer tailed it (12% of the broker's samples after 20 s of
    /// the many-partitions workload, and end-to-end latency growing 9x over 90 s). A chunk
    /// evicted, or a segment replaced by compaction, since the caller looked the segment
    /// up is read from the caller's file instead, which holds the same bytes at the same
    /// positions.
    async fn load_view(&self, seg: &SegmentRef, start: u64, len: u64) -> Result<ByteView> {
        let cached = {
            let st = self.state.borrow();
            let i = st.segments.partition_point(|s| s.base_offset < seg.base);
            match st.segments.get(i) {
                Some(s) if Rc::ptr_eq(&s.file, &seg.file) => {
                    ByteView::from_tail(&s.tail, start, len)
                }
                _ => None,
            }
        };
        match cached {
            Some(view) => Ok(view),
            None => ByteView::read(&seg.file, &seg.path, start, len).await,
        }
    }

    async fn read_segment(&self, start: Offset, max_bytes: usize) -> Result<ReadOutput> {
        drain_graveyard();
        let (seg, lookup_pos, limit, hw, lso, leo) = {
            let st = self.state.borrow();
            let hw = st.committed_end;
            if start < st.log_start_offset || start > st.log_end_offset {
                return Err(EngineError::OffsetOutOfRange {
                    requested: start,
                    log_start: st.log_start_offset,
                    log_end: st.log_end_offset,
                });
            }
            let out = ReadOutput {
                chunks: Vec::new(),
                high_watermark: hw,
                log_start_offset: st.log_start_offset,
                log_end_offset: st.log_end_offset,
            };
            if start >= hw {
                return Ok(out);
            }
            let idx = st.segments.partition_point(|s| s.base_offset <= start);
            let Some(seg) = idx.checked_sub(1).map(|i| &st.segments[i]) else {
                return Ok(out);
            };
            (
                SegmentRef::of(seg),
                seg.index.lookup(start),
                seg.committed_size,
                hw,
                st.log_start_offset,
                st.log_end_offset,
            )
        };
        let mut out = ReadOutput {
            chunks: Vec::new(),
            high_watermark: hw,
            log_start_offset: lso,
            log_end_offset: leo,
        };
        if lookup_pos >= limit {
            return Ok(out);
        }
        let window = (max_bytes.max(1) + READ_WINDOW_BYTES) as u64;
        let mut view = self
            .load_view(&seg, lookup_pos, (limit - lookup_pos).min(window))
            .await?;
        // Find the batch containing `start`.
        let mut pos = lookup_pos;
        let first = loop {
            if pos >= limit {
                return Ok(out);
            }
            let header = match view.header_at(pos) {
                Some(h) => h,
                None => {
                    view = self.load_view(&seg, pos, (limit - pos).min(window)).await?;
                    view.header_at(pos)
                        .ok_or_else(|| corrupt(&seg.path, pos, "short batch header"))?
                }
            };
            let len = header.total_len() as u64;
            if len < (BATCH_HEADER_BYTES as u64) || pos + len > limit {
                return Err(corrupt(&seg.path, pos, "batch crosses the committed end"));
            }
            if header.last_offset() >= start.0 {
                break pos;
            }
            pos += len;
        };
        // Extend over whole batches while they fit.
        let mut end = first;
        loop {
            if end >= limit {
                break;
            }
            let header = match view.header_at(end) {
                Some(h) => h,
                None if end == first => {
                    view = self.load_view(&seg, end, (limit - end).min(window)).await?;
                    view.header_at(end)
                        .ok_or_else(|| corrupt(&seg.path, end, "short batch header"))?
                }
                None => break,
            };
            let len = header.total_len() as u64;
            if end + len > limit {
                break;
            }
            if end > first && end + len - first > max_bytes as u64 {
                break;
            }
            end += len;
            if end - first >= max_bytes as u64 {
                break;
            }
        }
        if !view.covers(first, end) {
            view = self.load_view(&seg, first, end - first).await?;
        }
        out.chunks = view.slice(first, end);
        Ok(out)
    }

    /// The first committed batch whose max timestamp is at or after `timestamp`, as
    /// (base offset, max timestamp, the batch's bytes), or None if every committed batch
    /// is older. The caller finds the exact record inside (it may be compressed).
    pub async fn batch_for_timestamp(
        &self,
        timestamp: i64,
    ) -> Result<Option<(Offset, i64, Bytes)>> {
        let candidates: Vec<(SegmentRef, u64, u64)> = {
            let st = self.state.borrow();
            st.segments
                .iter()
                .filter(|s| s.index.max_timestamp() >= timestamp && s.committed_size > 0)
                .map(|s| {
                    (
                        SegmentRef::of(s),
                        s.index.lookup_time(timestamp),
                        s.committed_size,
                    )
                })
                .collect()
        };
        for (seg, mut pos, limit) in candidates {
            while pos < limit {
                let view = self
                    .load_view(&seg, pos, (limit - pos).min(READ_WINDOW_BYTES as u64))
                    .await?;
                let mut advanced = false;
                while let Some(h) = view.header_at(pos) {
                    let len = h.total_len() as u64;
                    // Batches compaction emptied hold no record to answer with.
                    if h.max_timestamp.get() >= timestamp && h.records_count.get() > 0 {
                        let whole = if view.covers(pos, pos + len) {
                            view
                        } else {
                            self.load_view(&seg, pos, len).await?
                        };
                        let parts = whole.slice(pos, pos + len);
                        let bytes = if parts.len() == 1 {
                            parts.into_iter().next().unwrap_or_default()
                        } else {
                            Bytes::from(parts.concat())
                        };
                        return Ok(Some((
                            Offset(h.base_offset.get()),
                            h.max_timestamp.get(),
                            bytes,
                        )));
                    }
                    pos += len;
                    advanced = true;
                    if pos >= limit {
                        break;
                    }
                }
                if !advanced {
                    return Err(corrupt(&seg.path, pos, "unreadable batch header"));
                }
            }
        }
        Ok(None)
    }

    /// Largest timestamp and its offset among committed batches (ListOffsets -3).
    pub fn max_timestamp(&self) -> i64 {
        let st = self.state.borrow();
        st.segments
            .iter()
            .map(|s| s.index.max_timestamp())
            .max()
            .unwrap_or(-1)
    }

    /// Deletes whole sealed segments beyond the retention limits. Returns how many.
    pub async fn enforce_retention(&self, now_ms: i64) -> Result<usize> {
        let victims: Vec<(Offset, Rc<DmaFile>)> = {
            let mut st = self.state.borrow_mut();
            if !st.config.cleanup_policy.deletes() {
                return Ok(0);
            }
            let mut total: u64 = st.segments.iter().map(|s| s.size).sum();
            let mut victims = Vec::new();
            while st.segments.len() > 1 {
                let oldest = &st.segments[0];
                if !oldest.sealed {
                    break;
                }
                let over_size = st
                    .config
                    .retention_bytes
                    .is_some_and(|limit| total - oldest.size >= limit);
                let expired = st.config.retention_ms.is_some_and(|ms| {
                    oldest.index.max_timestamp() >= 0
                        && oldest.index.max_timestamp() < now_ms - ms as i64
                });
                if !(over_size || expired) {
                    break;
                }
                total -= oldest.size;
                let seg = st.segments.remove(0);
                victims.push((seg.base_offset, Rc::clone(&seg.file)));
            }
            if let Some(first) = st.segments.first() {
                st.log_start_offset = st.log_start_offset.max(first.base_offset);
            }
            victims
        };
        let dir = self.state.borrow().dir.clone();
        for (base, file) in &victims {
            drop(Rc::clone(file));
            let _ = std::fs::remove_file(segment_path(&dir, *base, "index"));
            std::fs::remove_file(segment_path(&dir, *base, "log"))
                .map_err(|e| EngineError::io("remove", dir.display(), e))?;
        }
        if !victims.is_empty() {
            sync_dir(&dir).await?;
        }
        Ok(victims.len())
    }

    /// Removes every file of this log. The log must not be used afterwards.
    pub fn delete_files(&self) -> Result<()> {
        let dir = self.state.borrow().dir.clone();
        std::fs::remove_dir_all(&dir).map_err(|e| EngineError::io("remove dir", dir.display(), e))
    }
}

fn corrupt(path: &Path, pos: u64, reason: &str) -> EngineError {
    EngineError::CorruptSegment {
        path: path.display().to_string(),
        reason: format!("{reason} at position {pos}"),
    }
}

/// Copies one validated batch, `header`, at `pos` of `source` into the open staging buffer
/// (opening one if needed) and patches its offset and epoch there: the only copy of record
/// bytes on the produce path, whether they came as one buffer or as chunks.
fn stage_batch<C: AsRef<[u8]>>(
    st: &mut LogState,
    source: &mut batch::Scattered<'_, C>,
    pos: usize,
    header: &batch::BatchHeader,
    base: Offset,
    epoch: LeaderEpoch,
) {
    let len = header.total_len();
    let alignment = st.alignment;
    let seg_idx = st.segments.len() - 1;
    let fits = st
        .staging
        .as_ref()
        .is_some_and(|s| s.len + len <= s.buf.len());
    if !fits {
        close_staging(st);
        let seg = &st.segments[seg_idx];
        let aligned_start = align_down(seg.size, alignment);
        let head = (seg.size - aligned_start) as usize;
        // While a flush is in flight more appends will join this buffer, so leave room;
        // otherwise the flusher takes it at once and it holds just this batch.
        let room = if st.flushing {
            STAGING_COALESCE_BYTES
        } else {
            0
        };
        let capacity = align_up((head + len).max(room) as u64, alignment) as usize;
        let mut buf = seg.file.alloc_dma_buffer(capacity.max(head + len));
        if head > 0 {
            // The partial block already on disk: rewrite it unchanged.
            let last = seg
                .last_chunk
                .as_ref()
                .expect("a segment with a partial block has a last chunk");
            let from = (aligned_start - last.position) as usize;
            buf.as_bytes_mut()[..head].copy_from_slice(&last.data[from..from + head]);
        }
        st.staging = Some(Staging {
            segment_base: seg.base_offset,
            buf,
            aligned_start,
            head,
            len: head,
            early_len: 0,
        });
    }
    let staging = st.staging.as_mut().expect("opened above");
    let dst = &mut staging.buf.as_bytes_mut()[staging.len..staging.len + len];
    source.copy_to(pos, dst);
    batch::patch(dst, base.0, epoch.0);
    staging.len += len;
    st.unflushed_bytes += len;
    let seg = &mut st.segments[seg_idx];
    seg.index
        .on_batch(base, seg.size, header.max_timestamp.get());
    seg.size += len as u64;
    seg.next_offset = base.next(header.offset_count());
}

/// Puts everything appended but not yet written into the kernel with one buffered
/// `pwrite` of the staging buffer's blocks, when that is all of it: no direct-I/O write
/// of this log is queued or in flight (so every byte before the staging buffer is
/// written; the flusher may be syncing) and no zero fill overlaps the blocks. Returns
/// whether the bytes are now in the page cache; on `false` (not eligible, too big, or the
/// write failed) the caller waits for the direct-I/O write as usual.
///
/// Why this is safe to mix with direct I/O: the kernel writes dirty cached pages back and
/// drops them before a direct write or read of the same range (so the flusher's later
/// write of these blocks, and recovery's reads, see the same bytes), and no direct write
/// of these blocks is in flight now, which is what could race with the cached copy.
fn early_write(st: &mut LogState) -> bool {
    if st.writes_in_flight > 0 || !st.queue.is_empty() {
        return false;
    }
    let Some(staging) = st.staging.as_mut() else {
        return false;
    };
    let Some(seg) = st.segments.last_mut() else {
        return false;
    };
    // Whole pages (the alignment is a multiple of the page size), so the kernel never
    // reads a partial page from disk first.
    let end = align_up(staging.len as u64, st.alignment) as usize;
    if seg.base_offset != staging.segment_base
        || end > EARLY_WRITE_MAX_BYTES
        || end > staging.buf.len()
    {
        return false;
    }
    let start = staging.aligned_start;
    if st.zero_fill.as_ref().is_some_and(|z| {
        z.segment_base == staging.segment_base && start < z.end && start + end as u64 > z.start
    }) {
        return false;
    }
    staging.buf.as_bytes_mut()[staging.len..end].fill(0);
    if seg.buffered.is_none() {
        match std::fs::OpenOptions::new().write(true).open(&seg.path) {
            Ok(f) => seg.buffered = Some(f),
            Err(e) => {
                tracing::warn!(path = %seg.path.display(), error = %e, "buffered open failed; acks=1 waits for the direct write");
                return false;
            }
        }
    }
    let file = seg.buffered.as_ref().expect("opened above");
    use std::os::unix::fs::FileExt;
    match file.write_all_at(&staging.buf.as_bytes()[..end], start) {
        Ok(()) => {
            st.stats.early_writes += 1;
            staging.early_len = staging.len;
            true
        }
        Err(e) => {
            tracing::warn!(path = %seg.path.display(), error = %e, "buffered write failed; acks=1 waits for the direct write");
            false
        }
    }
}

/// What the tail cache keeps of a flushed chunk whose last `appended` bytes are new (the
/// ones before them re-cover the previous chunk's partial block): the chunk itself, or, when
/// the new bytes are few (`TAIL_COMPACT_MAX_BYTES`) and fill less than half of the buffer
/// the chunk keeps alive, a copy of just them packed into the partition's slab. Reads take
/// chunks at any position (`ByteView::from_tail`), so the copy serves exactly the same bytes;
/// the staging buffer is then freed once written, and the next one reuses its memory.
fn compact_for_tail(slab: &mut BytesMut, chunk: &TailChunk, appended: usize) -> TailChunk {
    let len = chunk.data.len();
    if appended == 0 || appended > TAIL_COMPACT_MAX_BYTES || appended * 2 > chunk.footprint {
        return chunk.clone();
    }
    if slab.capacity() - slab.len() < appended {
        *slab = BytesMut::with_capacity(TAIL_SLAB_BYTES);
    }
    slab.extend_from_slice(&chunk.data[len - appended..]);
    TailChunk {
        position: chunk.position + (len - appended) as u64,
        data: slab.split().freeze(),
        footprint: appended,
    }
}

/// The path of `file` for an error message. Only built when there is an error: formatting
/// it for every write showed up in a lone message's instruction count.
fn file_path(file: &DmaFile) -> String {
    file.path()
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

/// Answers (successfully) every waiter, oldest first, whose append ends at or below `end`.
fn answer_waiters(waiters: &mut VecDeque<Waiter>, end: Offset) {
    while waiters.front().is_some_and(|w| w.end_offset <= end) {
        if let Some(w) = waiters.pop_front() {
            let _ = w.tx.send(true);
        }
    }
}

/// Freezes the open staging buffer into a flush job.
fn close_staging(st: &mut LogState) {
    let Some(mut staging) = st.staging.take() else {
        return;
    };
    let alignment = st.alignment;
    let write_len = align_up(staging.len as u64, alignment) as usize;
    let footprint = staging.buf.len();
    // An early write zeroed the same range already when nothing was appended after it.
    if staging.early_len != staging.len {
        staging.buf.as_bytes_mut()[staging.len..write_len].fill(0);
    }
    staging.buf.trim_to_size(write_len);
    let write_buf = Rc::new(staging.buf);
    let data = home_bytes(Rc::clone(&write_buf)).slice(..staging.len);
    let chunk = TailChunk {
        position: staging.aligned_start,
        data,
        footprint,
    };
    let Some(seg) = st
        .segments
        .iter_mut()
        .find(|s| s.base_offset == staging.segment_base)
    else {
        return;
    };
    seg.last_chunk = Some(chunk.clone());
    // With interval durability too: a committed append is then one in the kernel, synced
    // within the interval (Kafka's `flush.ms`); the page cache is that.
    let in_page_cache = staging.early_len == staging.len;
    st.queue.push_back(FlushJob {
        segment_base: staging.segment_base,
        file: Rc::clone(&seg.file),
        end_position: seg.size,
        end_offset: seg.next_offset,
        chunk,
        write_buf,
        appended_bytes: staging.len - staging.head,
        in_page_cache,
    });
}

async fn create_segment(dir: &Path, base: Offset) -> Result<Segment> {
    let path = segment_path(dir, base, "log");
    let file = open_dma(&path, true).await?;
    sync_dir(dir).await?;
    Ok(Segment {
        base_offset: base,
        file: Rc::new(file),
        path,
        index: SegmentIndex::new(base),
        size: 0,
        committed_size: 0,
        next_offset: base,
        created: Instant::now(),
        sealed: false,
        tail: VecDeque::new(),
        tail_bytes: 0,
        last_chunk: None,
        zeroed_end: 0,
        buffered: None,
    })
}

/// Opens one segment on start-up. A sealed segment with a valid index matching its
/// size is trusted as is; any other segment is scanned batch by batch, its CRCs checked,
/// its index rebuilt and a torn tail truncated. Returns whether it was clean.
async fn recover_segment(
    dir: &Path,
    base: Offset,
    is_last: bool,
    offset_gaps: bool,
    producers: &mut ProducerStateTable,
) -> Result<(Segment, bool)> {
    let path = segment_path(dir, base, "log");
    let file = open_dma(&path, false).await?;
    let file_size = file.file_size().await.map_err(gio("stat", &path))?;
    let index_path = segment_path(dir, base, "index");
    let _ = std::fs::remove_file(segment_path(dir, base, "index.tmp"));
    if !is_last {
        if let Ok(bytes) = std::fs::read(&index_path) {
            match SegmentIndex::decode(&bytes) {
                Ok((index, summary))
                    if summary.size_bytes == file_size && summary.base_offset == base =>
                {
                    return Ok((
                        Segment {
                            base_offset: base,
                            file: Rc::new(file),
                            path,
                            index,
                            size: file_size,
                            committed_size: file_size,
                            next_offset: summary.next_offset,
                            created: Instant::now(),
                            sealed: true,
                            tail: VecDeque::new(),
                            tail_bytes: 0,
                            last_chunk: None,
                            zeroed_end: file_size,
                            buffered: None,
                        },
                        true,
                    ));
                }
                Ok(_) => {
                    tracing::warn!(path = %index_path.display(), "index does not match its segment; rebuilding")
                }
                Err(e) => {
                    tracing::warn!(path = %index_path.display(), error = %e, "corrupt index; rebuilding")
                }
            }
        }
    }
    let _ = std::fs::remove_file(&index_path);
    let mut index = SegmentIndex::new(base);
    let summary = scan_segment_file(&file, &path, base, file_size, offset_gaps, |scanned| {
        let header = &scanned.header;
        index.on_batch(
            Offset(header.base_offset.get()),
            scanned.position,
            header.max_timestamp.get(),
        );
        // The sequence range follows the offsets (Kafka's lastSequence =
        // baseSequence + lastOffsetDelta): a compacted batch has fewer records.
        producers.record(
            header.producer_id.get(),
            header.producer_epoch.get(),
            header.base_sequence.get(),
            header.offset_count() as i32,
            Offset(header.base_offset.get()),
        );
    })
    .await?;
    let clean = summary.end.is_clean();
    let valid_len = summary.valid_len;
    let next_offset = summary.next_offset;
    if !clean {
        tracing::warn!(
            path = %path.display(),
            valid_len,
            file_size,
            end = ?summary.end,
            "torn or corrupt segment tail; truncating"
        );
    }
    if valid_len != file_size {
        file.truncate(valid_len)
            .await
            .map_err(gio("truncate", &path))?;
    }
    // Whatever recovery keeps is synced before it is served as committed.
    file.fdatasync().await.map_err(gio("fdatasync", &path))?;
    // The partial last block must be in memory so the next append can rewrite it.
    let alignment = write_alignment(&file);
    let aligned = align_down(valid_len, alignment);
    let last_chunk = if valid_len > aligned {
        let rr = file
            .read_at(aligned, (valid_len - aligned) as usize)
            .await
            .map_err(gio("read", &path))?;
        let footprint = rr.len();
        Some(TailChunk {
            position: aligned,
            data: home_bytes(rr),
            footprint,
        })
    } else {
        None
    };
    Ok((
        Segment {
            base_offset: base,
            file: Rc::new(file),
            path,
            index,
            size: valid_len,
            committed_size: valid_len,
            next_offset,
            created: Instant::now(),
            sealed: false,
            tail: VecDeque::new(),
            tail_bytes: 0,
            last_chunk,
            zeroed_end: valid_len,
            buffered: None,
        },
        clean || is_last,
    ))
}

/// Drives a [`SegmentScanner`] over a segment file, reading the windows it asks for,
/// and hands every valid batch to `on_batch`. Reads nothing past `file_size`.
async fn scan_segment_file(
    file: &DmaFile,
    path: &Path,
    base: Offset,
    file_size: u64,
    offset_gaps: bool,
    mut on_batch: impl FnMut(&ScannedBatch),
) -> Result<ScanSummary> {
    let mut scanner = SegmentScanner::new(base, file_size).allow_offset_gaps(offset_gaps);
    let mut window: Option<(u64, glommio::io::ReadResult)> = None;
    loop {
        let event = match &window {
            Some((position, data)) => scanner.step(*position, data),
            None => scanner.step(0, &[]),
        };
        match event {
            ScanEvent::Batch(scanned) => on_batch(&scanned),
            ScanEvent::NeedBytes { position, len } => {
                // The scanner never asks past the end, so `len <= file_size - position`.
                let read_len = (len.max(RECOVERY_READ_BYTES) as u64).min(file_size - position);
                let data = file
                    .read_at(position, read_len as usize)
                    .await
                    .map_err(gio("read", path))?;
                if data.len() < len {
                    // A file shorter than its size: re-reading would loop forever.
                    return Err(corrupt(path, position + data.len() as u64, "short read"));
                }
                window = Some((position, data));
            }
            ScanEvent::Done(summary) => return Ok(summary),
        }
    }
}

/// Which segment a read started on: its base offset, and its file to tell it from a
/// segment compaction put in its place under the same base offset.
struct SegmentRef {
    base: Offset,
    file: Rc<DmaFile>,
    path: PathBuf,
}

impl SegmentRef {
    fn of(seg: &Segment) -> SegmentRef {
        SegmentRef {
            base: seg.base_offset,
            file: Rc::clone(&seg.file),
            path: seg.path.clone(),
        }
    }
}

/// A contiguous range of segment bytes, from the tail cache or one disk read.
struct ByteView {
    start: u64,
    pieces: Vec<(u64, Bytes)>,
    end: u64,
}

impl ByteView {
    /// [start, start + len) from the tail cache, if it holds all of it. Chunks are in
    /// position order with both ends non-decreasing, and may overlap (a chunk re-covers
    /// its predecessor's partial last block): the first chunk needed is found by binary
    /// search, and only the chunks the range overlaps are sliced.
    fn from_tail(tail: &VecDeque<TailChunk>, start: u64, len: u64) -> Option<ByteView> {
        let end = start + len;
        let first = tail.partition_point(|c| c.position + c.data.len() as u64 <= start);
        let mut pieces = Vec::new();
        let mut cursor = start;
        for c in tail.range(first..) {
            if c.position > cursor {
                return None;
            }
            let c_end = c.position + c.data.len() as u64;
            if c_end <= cursor {
                continue;
            }
            let from = (cursor - c.position) as usize;
            let to = (end.min(c_end) - c.position) as usize;
            pieces.push((cursor, c.data.slice(from..to)));
            cursor = end.min(c_end);
            if cursor >= end {
                return Some(ByteView { start, pieces, end });
            }
        }
        None
    }

    /// [start, start + len) with one read of the file.
    async fn read(file: &DmaFile, path: &Path, start: u64, len: u64) -> Result<ByteView> {
        let rr = file
            .read_at(start, len as usize)
            .await
            .map_err(gio("read", path))?;
        if (rr.len() as u64) < len {
            return Err(corrupt(path, start + rr.len() as u64, "short read"));
        }
        Ok(ByteView {
            start,
            pieces: vec![(start, home_bytes(rr))],
            end: start + len,
        })
    }

    fn covers(&self, from: u64, to: u64) -> bool {
        self.start <= from && to <= self.end
    }

    /// The batch header at `pos`, if the view holds all 61 bytes of it.
    fn header_at(&self, pos: u64) -> Option<batch::BatchHeader> {
        if pos < self.start || pos + BATCH_HEADER_BYTES as u64 > self.end {
            return None;
        }
        let mut buf = [0u8; BATCH_HEADER_BYTES];
        let mut filled = 0;
        for (p, b) in &self.pieces {
            let p_end = p + b.len() as u64;
            let want_from = pos + filled as u64;
            if p_end <= want_from || *p > want_from {
                continue;
            }
            let from = (want_from - p) as usize;
            let n = (BATCH_HEADER_BYTES - filled).min(b.len() - from);
            buf[filled..filled + n].copy_from_slice(&b[from..from + n]);
            filled += n;
            if filled == BATCH_HEADER_BYTES {
                break;
            }
        }
        batch::parse_header(&buf).ok()
    }

    fn slice(&self, from: u64, to: u64) -> Vec<Bytes> {
        let mut out = Vec::new();
        let mut cursor = from;
        for (p, b) in &self.pieces {
            let p_end = p + b.len() as u64;
            if p_end <= cursor || *p > cursor || cursor >= to {
                continue;
            }
            let a = (cursor - p) as usize;
            let z = (to.min(p_end) - p) as usize;
            out.push(b.slice(a..z));
            cursor = to.min(p_end);
        }
        out
    }
}
