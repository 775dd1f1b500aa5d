//! Shared bench helpers: a long-lived glommio executor that criterion's timing closures
//! hand work to, and per-executor named partition logs that persist between calls.
//!
//! Criterion runs on the main thread, but the engine's I/O only works inside a glommio
//! executor, so each measurement is shipped over a channel, timed inside the executor,
//! and the elapsed time is sent back (for `iter_custom`).

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::rc::Rc;

use futures::channel::mpsc::{unbounded, UnboundedSender};
use futures::StreamExt;
use glommio::{LocalExecutorBuilder, Placement};
use quiver_engine::batch::build;
use quiver_engine::limits::{BATCH_HEADER_BYTES, IO_MEMORY_BYTES_PER_SHARD};
use quiver_engine::log::{LogConfig, PartitionLog};
use quiver_engine::runtime::prepare_io;

type Job = Box<dyn FnOnce() -> Pin<Box<dyn Future<Output = ()>>> + Send>;

/// One glommio executor on its own thread, set up as a broker shard is.
pub struct BenchShard {
    jobs: Option<UnboundedSender<Job>>,
    thread: Option<glommio::ExecutorJoinHandle<()>>,
    dir: PathBuf,
}

thread_local! {
    static LOGS: RefCell<HashMap<String, Rc<PartitionLog>>> = RefCell::new(HashMap::new());
}

impl BenchShard {
    /// Starts the executor with data under `dir` (must be on ext4/xfs, not tmpfs).
    pub fn start(dir: &Path) -> BenchShard {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).expect("creating the bench data dir");
        let (tx, mut rx) = unbounded::<Job>();
        let probe_dir = dir.to_path_buf();
        let thread = LocalExecutorBuilder::new(Placement::Unbound)
            .name("bench-shard")
            .io_memory(IO_MEMORY_BYTES_PER_SHARD)
            .spawn(move || async move {
                prepare_io(&probe_dir)
                    .await
                    .expect("IOPOLL probe workaround");
                while let Some(job) = rx.next().await {
                    job().await;
                }
                // Close every log before the executor goes away.
                let logs: Vec<Rc<PartitionLog>> =
                    LOGS.with(|l| l.borrow_mut().drain().map(|(_, v)| v).collect());
                for log in logs {
                    log.flushed().await;
                }
            })
            .expect("starting the bench executor");
        BenchShard {
            jobs: Some(tx),
            thread: Some(thread),
            dir: dir.to_path_buf(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Runs `work` on the executor and waits for its result.
    pub fn run<T, F, Fut>(&self, work: F) -> T
    where
        T: Send + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = T> + 'static,
    {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let job: Job = Box::new(move || {
            Box::pin(async move {
                let _ = tx.send(work().await);
            })
        });
        self.jobs
            .as_ref()
            .expect("shard is running")
            .unbounded_send(job)
            .expect("bench executor is alive");
        rx.recv().expect("bench job panicked")
    }
}

impl Drop for BenchShard {
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The log named `name` under `dir` on the calling executor, opened (or recovered) on
/// first use. Must be called on a bench executor.
pub async fn log_named(dir: &Path, name: &str) -> Rc<PartitionLog> {
    if let Some(log) = LOGS.with(|l| l.borrow().get(name).cloned()) {
        return log;
    }
    let log = PartitionLog::open(&dir.join(name), LogConfig::default())
        .await
        .expect("opening a bench log");
    LOGS.with(|l| l.borrow_mut().insert(name.to_string(), Rc::clone(&log)));
    log
}

/// Closes the log named `name` (waiting for its writes) and optionally removes its files.
pub async fn close_log(dir: &Path, name: &str, remove_files: bool) {
    let log = LOGS.with(|l| l.borrow_mut().remove(name));
    if let Some(log) = log {
        log.flushed().await;
        drop(log);
        // Let glommio close the files in the background before they are unlinked.
        glommio::timer::sleep(std::time::Duration::from_millis(5)).await;
    }
    if remove_files {
        let _ = std::fs::remove_dir_all(dir.join(name));
    }
}

/// A valid uncompressed batch of `record_bytes`-value records, at most `batch_bytes`.
pub fn batch_of_size(batch_bytes: usize, record_bytes: usize) -> Vec<u8> {
    let value: Vec<u8> = (0..record_bytes).map(|i| (i * 7 + 13) as u8).collect();
    let per_record = build::batch(&[(None, &value)], 0).len() - BATCH_HEADER_BYTES;
    let mut count = (batch_bytes.saturating_sub(BATCH_HEADER_BYTES) / per_record).max(1);
    loop {
        let records: Vec<(Option<&[u8]>, &[u8])> =
            (0..count).map(|_| (None, value.as_slice())).collect();
        let batch = build::batch(&records, 1_700_000_000_000);
        if batch.len() <= batch_bytes || count == 1 {
            return batch;
        }
        count -= 1;
    }
}
