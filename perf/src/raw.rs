//! The disk "without the engine": sequential O_DIRECT writes through glommio's DmaFile,
//! opened the way the engine opens segments (fresh file, read+write, no preallocation),
//! so that engine/raw ratios compare like with like. Runs inside a glommio executor.

use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Instant;

use anyhow::{ensure, Context, Result};
use futures::StreamExt;
use glommio::io::{DmaBuffer, DmaFile, OpenOptions};
use serde::Serialize;

use crate::report::{new_histogram, record, Bandwidth, LatencySummary};

/// glommio's error type is neither Send nor Sync; its io::Error form is.
fn io<T>(result: glommio::Result<T, ()>) -> std::io::Result<T> {
    result.map_err(Into::into)
}

/// When the bandwidth run calls fdatasync.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum SyncMode {
    /// Never: the figure is what the device accepts, not what it has made durable.
    None,
    /// Once, after the last write completes (included in the time).
    Final,
    /// Every `bytes` written: wait for the writes in flight, fdatasync, continue.
    Every { bytes: u64 },
}

/// A scratch file that is removed when dropped.
pub struct ScratchFile {
    pub file: Rc<DmaFile>,
    path: PathBuf,
}

impl ScratchFile {
    pub async fn create(dir: &Path, name: &str) -> Result<ScratchFile> {
        let path = dir.join(name);
        let _ = std::fs::remove_file(&path);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .dma_open(&path)
            .await
            .map_err(std::io::Error::from)
            .with_context(|| format!("opening {} with O_DIRECT", path.display()))?;
        Ok(ScratchFile {
            file: Rc::new(file),
            path,
        })
    }
}

impl Drop for ScratchFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn filled_buffer(file: &DmaFile, bytes: usize) -> Rc<DmaBuffer> {
    let mut buf = file.alloc_dma_buffer(bytes);
    // Non-zero, non-repeating-per-block content so no layer can shortcut zero pages.
    for (i, b) in buf.as_bytes_mut().iter_mut().enumerate() {
        *b = (i.wrapping_mul(31) >> 3) as u8;
    }
    Rc::new(buf)
}

/// Writes `total_bytes` sequentially in `block_bytes` writes with `queue_depth` in
/// flight. Buffers are allocated before the clock starts and reused.
pub async fn sequential_write(
    dir: &Path,
    total_bytes: u64,
    block_bytes: usize,
    queue_depth: usize,
    sync: SyncMode,
) -> Result<Bandwidth> {
    let scratch = ScratchFile::create(dir, "raw-seq-write.dat").await?;
    let file = &scratch.file;
    let block_bytes = file.align_up(block_bytes as u64) as usize;
    ensure!(block_bytes > 0 && queue_depth > 0, "empty workload");
    let blocks = total_bytes.div_ceil(block_bytes as u64).max(1);
    let buffers: Vec<Rc<DmaBuffer>> = (0..queue_depth)
        .map(|_| filled_buffer(file, block_bytes))
        .collect();
    let blocks_per_round = match sync {
        SyncMode::Every { bytes } => bytes.div_ceil(block_bytes as u64).max(1),
        _ => blocks,
    };
    let start = Instant::now();
    let mut next_block = 0u64;
    while next_block < blocks {
        let round_end = (next_block + blocks_per_round).min(blocks);
        let writes = futures::stream::iter(next_block..round_end)
            .map(|block| {
                let buf = Rc::clone(&buffers[(block % queue_depth as u64) as usize]);
                let file = Rc::clone(file);
                async move { file.write_rc_at(buf, block * block_bytes as u64).await }
            })
            .buffer_unordered(queue_depth);
        futures::pin_mut!(writes);
        while let Some(written) = writes.next().await {
            let written = io(written).context("O_DIRECT write")?;
            ensure!(written == block_bytes, "short write of {written} bytes");
        }
        let sync_now = match sync {
            SyncMode::None => false,
            SyncMode::Final => round_end == blocks,
            SyncMode::Every { .. } => true,
        };
        if sync_now {
            io(file.fdatasync().await).context("fdatasync")?;
        }
        next_block = round_end;
    }
    let elapsed = start.elapsed();
    Ok(Bandwidth::new(blocks * block_bytes as u64, elapsed))
}

/// Write + fdatasync of a lone `block_bytes` block at the end of a growing file, one
/// after another, `iterations` times: what one group commit of one batch costs at best.
pub async fn write_fdatasync_latency(
    dir: &Path,
    block_bytes: usize,
    iterations: u64,
) -> Result<LatencySummary> {
    let scratch = ScratchFile::create(dir, "raw-write-fdatasync.dat").await?;
    let file = &scratch.file;
    let block_bytes = file.align_up(block_bytes as u64) as usize;
    let buffer = filled_buffer(file, block_bytes);
    let mut histogram = new_histogram();
    // A few untimed iterations so the first file extension and ring setup are not in
    // the tail.
    let warmup = 16.min(iterations);
    for i in 0..iterations + warmup {
        let start = Instant::now();
        let written = io(file
            .write_rc_at(Rc::clone(&buffer), i * block_bytes as u64)
            .await)
        .context("O_DIRECT write")?;
        ensure!(written == block_bytes, "short write of {written} bytes");
        io(file.fdatasync().await).context("fdatasync")?;
        if i >= warmup {
            record(&mut histogram, start.elapsed());
        }
    }
    Ok(LatencySummary::from_histogram(&histogram))
}
