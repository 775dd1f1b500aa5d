//! Every bound the engine enforces, in one place. Each says what happens at the limit.

/// Largest single RecordBatch accepted on append. Larger batches are rejected with
/// `BatchError::TooLarge` (Kafka: MESSAGE_TOO_LARGE). Kafka's default
/// `message.max.bytes` is ~1 MiB; we allow more because 1 MiB batches are a benchmark case.
pub const MAX_BATCH_BYTES: usize = 16 * 1024 * 1024;

/// Smallest possible v2 batch: the 61-byte header with zero records.
pub const BATCH_HEADER_BYTES: usize = 61;

/// Segment writes are aligned to at least this many bytes (the usual filesystem block),
/// even when the device accepts smaller O_DIRECT alignment: filesystems serialize direct
/// writes that do not cover whole filesystem blocks.
pub const MIN_WRITE_ALIGNMENT_BYTES: u64 = 4096;

/// A group commit round writes at most this many bytes (at least one buffer), so that
/// under heavy load two rounds are in flight: one being synced, the next being written.
/// Without it one round takes everything staged and producers' next appends wait for
/// its sync with the disk idle.
pub const MAX_FLUSH_ROUND_BYTES: usize = 8 * 1024 * 1024;

/// The active segment is kept zero-filled this far ahead of its appends while the
/// partition's flush rounds are small (latency-bound traffic). ext4 can only run an
/// O_DIRECT write inline from io_uring when it overwrites blocks that are allocated and
/// written; an append that extends the file (or lands in fallocate's unwritten extents)
/// takes the inode lock and is handed to an io_uring worker thread, which cost a lone
/// message ~100 us here (docs/benchmarks.md). One zero-fill write covers this many bytes.
pub const ZERO_FILL_CHUNK_BYTES: u64 = 512 * 1024;

/// A zero fill starts when fewer than this many zeroed bytes remain ahead of the appends.
pub const ZERO_FILL_LOW_WATER_BYTES: u64 = 256 * 1024;

/// Rounds up to this size count as latency-bound and keep the zero fill going; larger
/// rounds (throughput-bound traffic) extend the file directly, so the disk does not
/// write every byte twice when bandwidth is what matters.
pub const ZERO_FILL_MAX_ROUND_BYTES: usize = 64 * 1024;

/// At most this many staged-but-unwritten bytes per partition. Appends beyond it wait for
/// the in-flight group commit to finish (back-pressure), they are never dropped.
pub const MAX_UNFLUSHED_BYTES_PER_PARTITION: usize = 64 * 1024 * 1024;

/// Flushed buffers kept in memory per partition to serve fetches of recent data without
/// touching the disk. Older buffers are released; those reads go to disk.
pub const TAIL_CACHE_BYTES_PER_PARTITION: usize = 64 * 1024 * 1024;

/// Flushed buffers kept in memory by all partitions of one shard together. Counted by
/// allocation, not by the bytes used. Over it, a partition that flushes drops its own
/// oldest buffers (keeping its newest), so the bound is this plus one buffer per partition.
pub const TAIL_CACHE_BYTES_PER_SHARD: usize = 1024 * 1024 * 1024;

/// New bytes of a flushed buffer up to which the tail cache keeps a packed copy instead of
/// the buffer itself, when they fill less than half of it: a lone small batch gets a
/// 4-8 KiB aligned staging buffer of its own, and keeping that buffer held 4-8x its data
/// in memory and made every lone append touch fresh pages (glibc growing the shard's arena).
/// The copy (at most this many bytes) goes into the partition's `TAIL_SLAB_BYTES` slab.
pub const TAIL_COMPACT_MAX_BYTES: usize = 16 * 1024;

/// Size of the slabs small tail-cache copies are packed into, one open slab per partition.
/// A slab is freed once every copy in it left the tail cache and it is no longer open; the
/// room left in a slab when a copy does not fit (under `TAIL_COMPACT_MAX_BYTES`) is the
/// only memory the tail-cache accounting does not count.
pub const TAIL_SLAB_BYTES: usize = 64 * 1024;
const _: () = assert!(TAIL_COMPACT_MAX_BYTES <= TAIL_SLAB_BYTES);

/// Largest staged write an acks=1 append copies into the page cache to be answered at
/// once (`AckLevel::Written`); bigger ones wait for the direct-I/O write, which costs
/// them little relative to their size, and a bound keeps the synchronous copy short.
pub const EARLY_WRITE_MAX_BYTES: usize = 64 * 1024;

/// A shard whose partitions started syncs faster than this within one
/// `GROUP_SYNC_BUSY_WINDOW` (this window or the last) is busy, and its commits may then
/// share one `syncfs` instead of one `fdatasync` each (engine/src/group_sync.rs; `quiver
/// serve --group-sync-busy-rate`). Set between the two workloads measured: 1,000
/// partitions at 20k msg/s start ~6,700 syncs a second per shard and gain 6x end-to-end
/// from batching; OMB's 100 partitions at 50k msg/s start ~470 and lose from it
/// (docs/benchmarks.md, "Many partitions").
pub const GROUP_SYNC_BUSY_RATE: u64 = 2_000;
pub const GROUP_SYNC_BUSY_WINDOW: std::time::Duration = std::time::Duration::from_millis(10);

/// While busy, a commit joins the shared `syncfs` when this many `fdatasync`s of the shard
/// are already in flight; below it, it takes its own (~100 µs here, against ~190 µs for a
/// lone `syncfs`, which then costs ~30 µs per further file). The commits waiting for a
/// `syncfs` need no bound of their own: a partition has at most one commit in flight.
pub const GROUP_SYNC_MIN_CONCURRENT: usize = 1;

/// Staging buffers opened while a flush is in flight get at least this much room, so the
/// appends arriving meanwhile coalesce into one write. An idle partition's buffer holds
/// just the batch that opened it.
pub const STAGING_COALESCE_BYTES: usize = 128 * 1024;

/// One sparse index entry per this many bytes of log (Kafka's `index.interval.bytes`).
pub const INDEX_INTERVAL_BYTES: u64 = 4096;

/// Segment files are addressed with 32-bit relative positions in the index.
pub const MAX_SEGMENT_BYTES: u64 = u32::MAX as u64;

/// Default segment size before a roll (Kafka's `segment.bytes` default).
pub const DEFAULT_SEGMENT_BYTES: u64 = 1024 * 1024 * 1024;

/// Cold reads are issued in windows of at least this size.
pub const READ_WINDOW_BYTES: usize = 256 * 1024;

/// Recovery reads a segment in windows of at least this size (more when one batch is
/// larger); one window is in memory at a time.
pub const RECOVERY_READ_BYTES: usize = 1024 * 1024;

/// When recovery meets bytes that are not a batch, it calls the segment's end clean
/// (block padding) if this many bytes from there (or all that remain) are zero. Either
/// way the segment is truncated there; an unclean end of a sealed segment also ends the
/// log there.
pub const RECOVERY_ZERO_CHECK_BYTES: usize = 4096;

/// Capacity of each cross-shard channel in the mesh; senders wait when it is full.
pub const SHARD_CHANNEL_CAPACITY: usize = 1024;

/// Registered io_uring buffer memory per executor. RLIMIT_MEMLOCK must cover
/// this times the number of cores plus glommio's own rings.
pub const IO_MEMORY_BYTES_PER_SHARD: usize = 2 * 1024 * 1024;

/// Producers whose state a partition remembers (Kafka keeps all until expiry; we bound it
/// and evict the least recently used).
pub const MAX_PRODUCERS_PER_PARTITION: usize = 10_000;

/// Batches remembered per producer for duplicate detection (Kafka uses 5, matching
/// `max.in.flight.requests.per.connection` <= 5 for idempotent producers).
pub const PRODUCER_BATCHES_REMEMBERED: usize = 5;

/// Keys the compaction offset map holds per pass (hashes of 16 bytes plus an offset).
/// The map stops taking new segments of the dirty part of the log at this many keys
/// (a segment already started is finished, so it may exceed this by one segment's
/// keys); the rest of the dirty part waits for the next pass.
pub const COMPACTION_KEYS_PER_PASS_MAX: usize = 1 << 20;

/// Bytes of the dirty part of a log one compaction pass maps. A pass also reads (and
/// may rewrite) everything before that part, like Kafka's cleaner; this bounds the new
/// work per pass. At least one segment is taken even if it is larger.
pub const COMPACTION_DIRTY_BYTES_PER_PASS_MAX: u64 = 256 * 1024 * 1024;

/// The cleaner reads sealed segments in windows of at least this size (more when one
/// batch is larger).
pub const COMPACTION_READ_BYTES: usize = 1024 * 1024;

/// Cleaned output is written through a stream writer with buffers of this size.
pub const COMPACTION_WRITE_BUFFER_BYTES: usize = 1024 * 1024;

/// Kafka's `delete.retention.ms` default: how long a tombstone stays readable once its
/// segment is cleanable.
pub const DEFAULT_DELETE_RETENTION_MS: u64 = 24 * 3600 * 1000;

/// Kafka's `min.cleanable.dirty.ratio` default (0.5), per mille.
pub const DEFAULT_MIN_CLEANABLE_DIRTY_RATIO_PER_MILLE: u16 = 500;

const _: () = assert!(MIN_WRITE_ALIGNMENT_BYTES.is_power_of_two());
const _: () = assert!(ZERO_FILL_CHUNK_BYTES.is_multiple_of(MIN_WRITE_ALIGNMENT_BYTES));
const _: () = assert!(ZERO_FILL_LOW_WATER_BYTES < ZERO_FILL_CHUNK_BYTES);
const _: () = assert!((STAGING_COALESCE_BYTES as u64).is_multiple_of(MIN_WRITE_ALIGNMENT_BYTES));
const _: () = assert!(STAGING_COALESCE_BYTES <= MAX_UNFLUSHED_BYTES_PER_PARTITION);
const _: () = assert!(MAX_BATCH_BYTES <= MAX_UNFLUSHED_BYTES_PER_PARTITION);
const _: () = assert!(TAIL_CACHE_BYTES_PER_PARTITION <= TAIL_CACHE_BYTES_PER_SHARD);
const _: () = assert!(MAX_FLUSH_ROUND_BYTES <= MAX_UNFLUSHED_BYTES_PER_PARTITION / 2);
const _: () = assert!(DEFAULT_SEGMENT_BYTES <= MAX_SEGMENT_BYTES);
const _: () = assert!(MAX_BATCH_BYTES as u64 <= MAX_SEGMENT_BYTES);
const _: () = assert!(READ_WINDOW_BYTES <= RECOVERY_READ_BYTES);
const _: () = assert!(BATCH_HEADER_BYTES <= RECOVERY_ZERO_CHECK_BYTES);
const _: () = assert!(READ_WINDOW_BYTES <= COMPACTION_READ_BYTES);
const _: () = assert!(DEFAULT_MIN_CLEANABLE_DIRTY_RATIO_PER_MILLE <= 1000);
const _: () =
    assert!((COMPACTION_WRITE_BUFFER_BYTES as u64).is_multiple_of(MIN_WRITE_ALIGNMENT_BYTES));
