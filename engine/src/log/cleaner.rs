//! The log cleaner (`cleanup.policy=compact`): rewrites sealed segments keeping the latest
//! record per key, and the crash-safe swap of the rewritten files. The decisions about
//! records and the batch rewriting are pure (`crate::compaction`); this is the IO.
//!
//! A pass, Kafka's way:
//! 1. The cleanable part of the log is the run of sealed segments from the start, ending
//!    before the active segment or the first segment younger than `min_compaction_lag_ms`.
//!    Its dirty part starts where the previous pass ended (`CleanerState::first_dirty`).
//!    Nothing happens until dirty bytes reach `min_cleanable_dirty_ratio` of it.
//! 2. The offset map (key hash -> latest offset) is built over the dirty part, whole
//!    segments at a time, up to `COMPACTION_KEYS_PER_PASS_MAX` keys and
//!    `COMPACTION_DIRTY_BYTES_PER_PASS_MAX` bytes; the pass ends at the end of the mapped
//!    segments.
//! 3. Segments from the start of the log to that end are grouped (consecutive, at most
//!    `segment_bytes` together) and each group that loses a record, or has more than one
//!    segment, is rewritten into one file named after its first segment. A record
//!    survives unless the map holds a later offset for its key, it has no key, or it is a
//!    tombstone already cleaned by an earlier pass whose segment was last modified more
//!    than `delete_retention_ms` ago. The last batch of a group (so the segment's offset
//!    range survives a rescan) and the last batch of each known producer (so its
//!    sequence survives recovery) are kept even when emptied.
//!
//! Crash safety (Kafka's `.cleaned` -> `.swap` -> `.log`): the group is written to
//! `B.log.cleaned` and its index to `B.index.cleaned`, both synced; the rename to
//! `B.log.swap` plus a directory sync is the commit point; then the replaced segments'
//! files are removed and `B.log.swap` / `B.index.cleaned` are renamed into place. On open,
//! [`finish_interrupted_swaps`] completes a committed swap and deletes uncommitted files.
//!
//! Invariants: the active segment is never touched; offsets never change; the swap
//! replaces in-memory segments within one borrow, so a reader sees the old files (still
//! open) or the new ones, never a mix.

use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use futures_lite::AsyncWriteExt;
use glommio::io::DmaStreamWriterBuilder;

use super::*;
use crate::batch::BatchHeader;
use crate::compaction::{self, OffsetMap, Rewrite};

/// Name of the file in a log's directory holding the offset below which segments may
/// have offset gaps (were rewritten by the cleaner). Recovery accepts gaps only there:
/// elsewhere a gap still means corruption and ends the log.
const GAPS_BELOW_FILE: &str = "cleaner-gaps-below";

/// The offset below which recovery accepts offset gaps in sealed segments. Missing: the
/// log was never compacted (0). Unreadable: every segment may have gaps, so a damaged
/// marker never makes recovery cut a compacted log short.
pub(super) fn gaps_below(dir: &Path) -> Offset {
    match std::fs::read_to_string(dir.join(GAPS_BELOW_FILE)) {
        Err(_) => Offset::ZERO,
        Ok(text) => text.trim().parse().map(Offset).unwrap_or_else(|_| {
            tracing::warn!(dir = %dir.display(), "unreadable {GAPS_BELOW_FILE}; accepting gaps everywhere");
            Offset(i64::MAX)
        }),
    }
}

/// Raises the marker before any segment below `offset` is rewritten.
async fn raise_gaps_below(dir: &Path, offset: Offset) -> Result<()> {
    if gaps_below(dir) >= offset {
        return Ok(());
    }
    let tmp = dir.join(format!("{GAPS_BELOW_FILE}.tmp"));
    write_synced(&tmp, offset.0.to_string().as_bytes()).await?;
    rename(&tmp, &dir.join(GAPS_BELOW_FILE))?;
    sync_dir(dir).await
}

/// What the cleaner remembers between passes.
pub(super) struct CleanerState {
    /// Offsets below this were cleaned by a pass of this process.
    first_dirty: Offset,
}

impl CleanerState {
    pub(super) fn new(log_start_offset: Offset) -> Self {
        CleanerState {
            first_dirty: log_start_offset,
        }
    }
}

/// What one [`PartitionLog::compact`] pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CompactionReport {
    /// Groups of segments replaced by one rewritten segment.
    pub groups_rewritten: u64,
    /// Segments replaced.
    pub segments_replaced: u64,
    pub bytes_cleaned: u64,
    pub bytes_reclaimed: u64,
    pub records_removed: u64,
}

/// Rejects records without a key (for logs that compact).
pub(super) fn check_keys(records: &[u8], batches: &[(usize, BatchHeader)]) -> Result<()> {
    for &(pos, header) in batches {
        compaction::check_keys(&records[pos..pos + header.total_len()])?;
    }
    Ok(())
}

/// A sealed segment the pass may clean, captured from the log state.
struct Cleanable {
    base: Offset,
    next: Offset,
    size: u64,
    file: Rc<DmaFile>,
    path: PathBuf,
    modified_ms: i64,
}

fn modified_ms(path: &Path) -> i64 {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Reads a segment's batches in order, a window at a time.
struct BatchReader<'a> {
    file: &'a DmaFile,
    path: &'a Path,
    size: u64,
    pos: u64,
    window_pos: u64,
    window: Bytes,
}

impl<'a> BatchReader<'a> {
    fn new(file: &'a DmaFile, path: &'a Path, size: u64) -> Self {
        BatchReader {
            file,
            path,
            size,
            pos: 0,
            window_pos: 0,
            window: Bytes::new(),
        }
    }

    async fn fill(&mut self, need: usize) -> Result<()> {
        let off = (self.pos - self.window_pos) as usize;
        if off + need <= self.window.len() {
            return Ok(());
        }
        let len = (self.size - self.pos).min(need.max(COMPACTION_READ_BYTES) as u64) as usize;
        let data = self
            .file
            .read_at(self.pos, len)
            .await
            .map_err(gio("read", self.path))?;
        if data.len() < need {
            return Err(corrupt(
                self.path,
                self.pos + data.len() as u64,
                "short read",
            ));
        }
        self.window = home_bytes(data);
        self.window_pos = self.pos;
        Ok(())
    }

    /// The next whole batch, CRC checked, with its position.
    async fn next(&mut self) -> Result<Option<(u64, Bytes)>> {
        if self.pos >= self.size {
            return Ok(None);
        }
        if self.size - self.pos < BATCH_HEADER_BYTES as u64 {
            return Err(corrupt(self.path, self.pos, "short batch header"));
        }
        self.fill(BATCH_HEADER_BYTES).await?;
        let off = (self.pos - self.window_pos) as usize;
        let total = batch::parse_header(&self.window[off..])?.total_len();
        if total < BATCH_HEADER_BYTES || self.pos + total as u64 > self.size {
            return Err(corrupt(
                self.path,
                self.pos,
                "batch crosses the segment end",
            ));
        }
        self.fill(total).await?;
        let off = (self.pos - self.window_pos) as usize;
        let bytes = self.window.slice(off..off + total);
        batch::validate_framing_and_crc(&bytes)?;
        let at = self.pos;
        self.pos += total as u64;
        Ok(Some((at, bytes)))
    }
}

/// How records are judged in one pass.
struct Judge<'a> {
    map: &'a OffsetMap,
    /// Tombstones below this were seen by an earlier pass (older values are gone).
    first_dirty: Offset,
    now_ms: i64,
    delete_retention_ms: u64,
}

impl Judge<'_> {
    fn keep(
        &self,
        decoded: &compaction::DecodedBatch,
        span: &compaction::RecordSpan,
        segment_modified_ms: i64,
    ) -> bool {
        let Some(key) = decoded.key(span) else {
            return false; // Kafka's cleaner drops keyless records too.
        };
        if self
            .map
            .latest(key)
            .is_some_and(|latest| latest > span.offset)
        {
            return false;
        }
        let expired =
            segment_modified_ms.saturating_add(self.delete_retention_ms as i64) <= self.now_ms;
        !(span.tombstone && span.offset < self.first_dirty.0 && expired)
    }
}

impl PartitionLog {
    /// One compaction pass (see the module comment). Does nothing for logs that do not
    /// compact or are not dirty enough.
    pub async fn compact(&self, now_ms: i64) -> Result<CompactionReport> {
        let mut report = CompactionReport::default();
        let (config, dir, cleanable) = {
            let st = self.state.borrow();
            if !st.config.cleanup_policy.compacts() || st.failed {
                return Ok(report);
            }
            let lag_ms = st.config.min_compaction_lag_ms as i64;
            let active = st.segments.len().saturating_sub(1);
            let cleanable: Vec<Cleanable> = st.segments[..active]
                .iter()
                .take_while(|s| s.sealed && s.index.max_timestamp() <= now_ms - lag_ms)
                .map(|s| Cleanable {
                    base: s.base_offset,
                    next: s.next_offset,
                    size: s.size,
                    file: Rc::clone(&s.file),
                    path: s.path.clone(),
                    modified_ms: modified_ms(&s.path),
                })
                .collect();
            (st.config.clone(), st.dir.clone(), cleanable)
        };
        let first_dirty = self.cleaner.borrow().first_dirty;
        let total: u64 = cleanable.iter().map(|c| c.size).sum();
        let dirty: u64 = cleanable
            .iter()
            .filter(|c| c.next > first_dirty)
            .map(|c| c.size)
            .sum();
        if !compaction::dirty_enough(dirty, total, config.min_cleanable_dirty_ratio_per_mille) {
            return Ok(report);
        }

        // The offset map over the dirty part, whole segments at a time.
        let mut map = OffsetMap::new();
        let mut mapped_bytes = 0u64;
        let mut map_end = first_dirty;
        for c in cleanable.iter().filter(|c| c.next > first_dirty) {
            if mapped_bytes > 0
                && (!map.has_room() || mapped_bytes + c.size > COMPACTION_DIRTY_BYTES_PER_PASS_MAX)
            {
                break;
            }
            let mut reader = BatchReader::new(&c.file, &c.path, c.size);
            while let Some((_, bytes)) = reader.next().await? {
                let decoded = compaction::decode(&bytes)?;
                for span in &decoded.spans {
                    if let Some(key) = decoded.key(span) {
                        map.insert(key, span.offset);
                    }
                }
            }
            mapped_bytes += c.size;
            map_end = c.next;
        }
        let judge = Judge {
            map: &map,
            first_dirty,
            now_ms,
            delete_retention_ms: config.delete_retention_ms,
        };

        raise_gaps_below(&dir, map_end).await?;

        // Groups from the start of the log up to the end of the mapped part.
        let upto = cleanable.iter().take_while(|c| c.next <= map_end).count();
        let group_bytes_max = config.segment_bytes.min(MAX_SEGMENT_BYTES);
        let mut start = 0;
        while start < upto {
            let mut end = start + 1;
            let mut bytes = cleanable[start].size;
            while end < upto
                && bytes + cleanable[end].size <= group_bytes_max
                && cleanable[end].next.0 - cleanable[start].base.0 <= (u32::MAX / 2) as i64
            {
                bytes += cleanable[end].size;
                end += 1;
            }
            let group = &cleanable[start..end];
            start = end;
            if group.len() == 1 && !self.segment_loses_records(&group[0], &judge).await? {
                continue;
            }
            let outcome = self.rewrite_group(&dir, group, &judge).await?;
            report.groups_rewritten += 1;
            report.segments_replaced += group.len() as u64;
            report.bytes_cleaned += outcome.bytes_in;
            report.bytes_reclaimed += outcome.bytes_in - outcome.bytes_out;
            report.records_removed += outcome.records_removed;
            // Let appends and fetches on this shard run between groups.
            glommio::executor().yield_if_needed().await;
        }
        self.cleaner.borrow_mut().first_dirty = map_end;
        if report.groups_rewritten > 0 {
            let mut st = self.state.borrow_mut();
            st.stats.compaction_passes += 1;
            st.stats.compaction_bytes_cleaned += report.bytes_cleaned;
            st.stats.compaction_bytes_reclaimed += report.bytes_reclaimed;
            st.stats.compaction_records_removed += report.records_removed;
        }
        Ok(report)
    }

    /// Whether cleaning would remove any record of `segment` (reads it, writes nothing).
    async fn segment_loses_records(&self, segment: &Cleanable, judge: &Judge<'_>) -> Result<bool> {
        let mut reader = BatchReader::new(&segment.file, &segment.path, segment.size);
        while let Some((_, bytes)) = reader.next().await? {
            let decoded = compaction::decode(&bytes)?;
            if decoded
                .spans
                .iter()
                .any(|s| !judge.keep(&decoded, s, segment.modified_ms))
            {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Writes the surviving batches of `group` to one new segment and swaps it in.
    async fn rewrite_group(
        &self,
        dir: &Path,
        group: &[Cleanable],
        judge: &Judge<'_>,
    ) -> Result<GroupOutcome> {
        let base = group[0].base;
        let next = group[group.len() - 1].next;
        let cleaned_path = segment_path(dir, base, "log.cleaned");
        let index_cleaned_path = segment_path(dir, base, "index.cleaned");
        let _ = std::fs::remove_file(&cleaned_path);
        let out_file = open_dma(&cleaned_path, true).await?;
        let mut writer = DmaStreamWriterBuilder::new(out_file)
            .with_buffer_size(COMPACTION_WRITE_BUFFER_BYTES)
            .build();
        let mut index = SegmentIndex::new(base);
        let mut outcome = GroupOutcome::default();
        let mut position = 0u64;
        for segment in group {
            outcome.bytes_in += segment.size;
            let mut reader = BatchReader::new(&segment.file, &segment.path, segment.size);
            while let Some((_, bytes)) = reader.next().await? {
                let decoded = compaction::decode(&bytes)?;
                let header = decoded.header;
                let producer_id = header.producer_id.get();
                let keep_empty = header.last_offset() + 1 == next.0
                    || (producer_id >= 0
                        && self.state.borrow().producers.last_batch_offset(producer_id)
                            == Some(Offset(header.base_offset.get())));
                let mut removed = 0u64;
                let rewrite = compaction::rewrite(&decoded, keep_empty, |d, s| {
                    let keep = judge.keep(d, s, segment.modified_ms);
                    removed += u64::from(!keep);
                    keep
                })?;
                outcome.records_removed += removed;
                let written = match rewrite {
                    Rewrite::Unchanged => bytes,
                    Rewrite::Rewritten(b) => b,
                    Rewrite::Removed => continue,
                };
                let h = batch::parse_header(&written)?;
                index.on_batch(Offset(h.base_offset.get()), position, h.max_timestamp.get());
                writer
                    .write_all(&written)
                    .await
                    .map_err(|e| EngineError::io("write", cleaned_path.display(), e))?;
                position += written.len() as u64;
            }
        }
        writer
            .close()
            .await
            .map_err(|e| EngineError::io("close", cleaned_path.display(), e))?;
        outcome.bytes_out = position;

        // Tombstones age from when their segment was last written; the rewrite must
        // not make them younger.
        let modified = group.iter().map(|s| s.modified_ms).max().unwrap_or(0);
        if let Ok(f) = std::fs::File::options().write(true).open(&cleaned_path) {
            let _ = f.set_modified(UNIX_EPOCH + Duration::from_millis(modified.max(0) as u64));
        }
        let file = open_dma(&cleaned_path, false).await?;
        file.fdatasync()
            .await
            .map_err(gio("fdatasync", &cleaned_path))?;
        let summary = SegmentSummary {
            base_offset: base,
            next_offset: next,
            size_bytes: position,
            max_timestamp: index.max_timestamp(),
        };
        write_synced(&index_cleaned_path, &index.encode(&summary)).await?;

        // Commit point: from here recovery finishes the swap.
        let swap_path = segment_path(dir, base, "log.swap");
        rename(&cleaned_path, &swap_path)?;
        sync_dir(dir).await?;
        for segment in group {
            if segment.base != base {
                remove_if_present(&segment.path)?;
            }
            remove_if_present(&segment_path(dir, segment.base, "index"))?;
        }
        let log_path = segment_path(dir, base, "log");
        rename(&swap_path, &log_path)?;
        rename(&index_cleaned_path, &segment_path(dir, base, "index"))?;
        sync_dir(dir).await?;

        let replacement = Segment {
            base_offset: base,
            file: Rc::new(file),
            path: log_path,
            index,
            size: position,
            committed_size: position,
            next_offset: next,
            created: Instant::now(),
            sealed: true,
            tail: VecDeque::new(),
            tail_bytes: 0,
            last_chunk: None,
            zeroed_end: position,
            buffered: None,
        };
        let mut st = self.state.borrow_mut();
        let Some(at) = st.segments.iter().position(|s| s.base_offset == base) else {
            return Err(EngineError::LogFailed);
        };
        let replaced = at + group.len();
        let same = replaced <= st.segments.len()
            && st.segments[at..replaced]
                .iter()
                .zip(group)
                .all(|(s, g)| s.base_offset == g.base && s.sealed);
        // Only this task changes sealed segments, so they are as the pass found them.
        assert!(same, "segments changed under the cleaner");
        st.segments
            .splice(at..replaced, std::iter::once(replacement));
        Ok(outcome)
    }
}

#[derive(Debug, Default)]
struct GroupOutcome {
    bytes_in: u64,
    bytes_out: u64,
    records_removed: u64,
}

fn rename(from: &Path, to: &Path) -> Result<()> {
    std::fs::rename(from, to).map_err(|e| EngineError::io("rename", from.display(), e))
}

fn remove_if_present(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(EngineError::io("remove", path.display(), e)),
    }
}

/// Writes `bytes` as the whole content of a new file at `path` and syncs it.
async fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let _ = std::fs::remove_file(path);
    let file = open_dma(path, true).await?;
    let mut buf = file.alloc_dma_buffer(align_up(bytes.len() as u64, file.alignment()) as usize);
    buf.as_bytes_mut().fill(0);
    buf.as_bytes_mut()[..bytes.len()].copy_from_slice(bytes);
    file.write_at(buf, 0).await.map_err(gio("write", path))?;
    file.truncate(bytes.len() as u64)
        .await
        .map_err(gio("truncate", path))?;
    file.fdatasync().await.map_err(gio("fdatasync", path))?;
    file.close().await.map_err(gio("close", path))?;
    Ok(())
}

/// Completes or discards a swap a killed cleaner left behind. A `B.log.swap` file is
/// committed: the segments it replaces (bases in `[B, its next offset)`) are removed and
/// it becomes `B.log`. Any `.cleaned` file left is an unfinished rewrite (or an index
/// whose segment was already renamed, in which case the index is rebuilt by a scan).
pub(super) async fn finish_interrupted_swaps(dir: &Path) -> Result<()> {
    let names: Vec<String> = std::fs::read_dir(dir)
        .map_err(|e| EngineError::io("list", dir.display(), e))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    let base_of = |name: &str, suffix: &str| name.strip_suffix(suffix)?.parse::<i64>().ok();
    let mut changed = false;
    for base in names.iter().filter_map(|n| base_of(n, ".log.swap")) {
        let base = Offset(base);
        let swap_path = segment_path(dir, base, "log.swap");
        let index_cleaned = segment_path(dir, base, "index.cleaned");
        let indexed = std::fs::read(&index_cleaned)
            .ok()
            .and_then(|b| SegmentIndex::decode(&b).ok())
            .filter(|(_, s)| s.base_offset == base);
        let next = match &indexed {
            Some((_, summary)) => summary.next_offset,
            None => {
                let file = open_dma(&swap_path, false).await?;
                let size = file.file_size().await.map_err(gio("stat", &swap_path))?;
                let summary =
                    scan_segment_file(&file, &swap_path, base, size, true, |_| {}).await?;
                let _ = file.close().await;
                summary.next_offset
            }
        };
        tracing::warn!(dir = %dir.display(), base = base.0, next = next.0, "finishing an interrupted compaction swap");
        for other in names.iter().filter_map(|n| base_of(n, ".log")) {
            if other > base.0 && other < next.0 {
                remove_if_present(&segment_path(dir, Offset(other), "log"))?;
                remove_if_present(&segment_path(dir, Offset(other), "index"))?;
            }
        }
        remove_if_present(&segment_path(dir, base, "index"))?;
        rename(&swap_path, &segment_path(dir, base, "log"))?;
        if indexed.is_some() {
            rename(&index_cleaned, &segment_path(dir, base, "index"))?;
        }
        changed = true;
    }
    let names: Vec<String> = std::fs::read_dir(dir)
        .map_err(|e| EngineError::io("list", dir.display(), e))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    for name in names.iter().filter(|n| n.ends_with(".cleaned")) {
        tracing::warn!(dir = %dir.display(), file = %name, "removing an unfinished compaction file");
        remove_if_present(&dir.join(name))?;
        changed = true;
    }
    if changed {
        sync_dir(dir).await?;
    }
    Ok(())
}
