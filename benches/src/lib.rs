//! Shared bench helpers: a long-lived runtime of glommio shards that criterion's timing
//! closures hand work to, and per-executor named partition logs that persist between calls.
//!
//! Criterion runs on the main thread, but the engine's I/O only works inside a glommio
//! executor, so each measurement is shipped to a shard, timed there, and the elapsed time
//! is sent back (for `iter_custom`). Work goes in through the engine's `ExternalHandle`
//! (a bounded inbox and a doorbell the shard reads through its own io_uring), never by
//! waking a glommio task from criterion's thread: docs/glommio.md section 6.

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use quiver_engine::batch::build;
use quiver_engine::limits::BATCH_HEADER_BYTES;
use quiver_engine::log::{LogConfig, PartitionLog};
use quiver_engine::runtime::{
    prepare_io, run_with_external, ExternalHandle, RuntimeConfig, ShardContext,
};
use quiver_engine::types::ShardId;

thread_local! {
    static LOGS: RefCell<HashMap<String, Rc<PartitionLog>>> = RefCell::new(HashMap::new());
    /// This shard's context, for work that hops between shards.
    static CONTEXT: RefCell<Option<ShardContext>> = const { RefCell::new(None) };
    /// Completing it lets this shard's executor return (sent on the shard itself).
    static STOP: RefCell<Option<futures::channel::oneshot::Sender<()>>> =
        const { RefCell::new(None) };
}

/// `shards` pinned shards (cpus 0..shards) on their own threads, set up as the broker's
/// are, taking work from the calling thread.
pub struct BenchRuntime {
    handle: Option<ExternalHandle>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl BenchRuntime {
    /// Starts the shards; with `data_dir` (ext4/xfs, not tmpfs) each prepares its I/O there
    /// first, as a broker shard does before opening logs.
    pub fn start(shards: usize, data_dir: Option<&Path>) -> BenchRuntime {
        let config = RuntimeConfig::with_cores(Some(shards));
        assert_eq!(config.cpus.len(), shards, "the bench needs {shards} cpus");
        let (handle, inboxes) = ExternalHandle::new(shards);
        let data_dir = data_dir.map(Path::to_path_buf);
        // Each shard says when it is set up; the inbox is served from the start, so no work
        // is sent before every shard is ready.
        let (ready, ready_rx) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            run_with_external(&config, inboxes, move |ctx| {
                let data_dir = data_dir.clone();
                let ready = ready.clone();
                async move {
                    if let Some(dir) = &data_dir {
                        prepare_io(dir).await.expect("IOPOLL probe workaround");
                    }
                    let (stop, stopped) = futures::channel::oneshot::channel();
                    STOP.with(|s| *s.borrow_mut() = Some(stop));
                    CONTEXT.with(|c| *c.borrow_mut() = Some(ctx));
                    let _ = ready.send(());
                    let _ = stopped.await;
                    CONTEXT.with(|c| c.borrow_mut().take());
                    // Close every log before the executor goes away.
                    let logs: Vec<Rc<PartitionLog>> =
                        LOGS.with(|l| l.borrow_mut().drain().map(|(_, v)| v).collect());
                    for log in logs {
                        log.flushed().await;
                    }
                }
            })
            .expect("starting the bench runtime");
        });
        for _ in 0..shards {
            ready_rx.recv().expect("a bench shard failed to start");
        }
        BenchRuntime {
            handle: Some(handle),
            thread: Some(thread),
        }
    }

    /// Runs `work` on `shard` and waits for its result.
    pub fn run_on<T, F, Fut>(&self, shard: usize, work: F) -> T
    where
        T: Send + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = T> + 'static,
    {
        let handle = self.handle.as_ref().expect("runtime is running");
        futures::executor::block_on(handle.run_on(ShardId(shard), work))
            .expect("bench shard is alive")
    }

    /// The calling shard's context. Must be called on a shard of a [`BenchRuntime`].
    pub fn context() -> ShardContext {
        CONTEXT.with(|c| c.borrow().clone().expect("called on a bench shard"))
    }
}

impl Drop for BenchRuntime {
    fn drop(&mut self) {
        if let Some(handle) = self.handle.take() {
            for shard in 0..handle.shard_count() {
                let _ = futures::executor::block_on(handle.run_on(ShardId(shard), || async {
                    if let Some(stop) = STOP.with(|s| s.borrow_mut().take()) {
                        let _ = stop.send(());
                    }
                }));
            }
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One shard with a data directory, for the engine benches.
pub struct BenchShard {
    runtime: Option<BenchRuntime>,
    dir: PathBuf,
}

impl BenchShard {
    /// Starts the shard with data under `dir` (must be on ext4/xfs, not tmpfs).
    pub fn start(dir: &Path) -> BenchShard {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).expect("creating the bench data dir");
        BenchShard {
            runtime: Some(BenchRuntime::start(1, Some(dir))),
            dir: dir.to_path_buf(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Runs `work` on the shard and waits for its result.
    pub fn run<T, F, Fut>(&self, work: F) -> T
    where
        T: Send + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = T> + 'static,
    {
        self.runtime
            .as_ref()
            .expect("shard is running")
            .run_on(0, work)
    }
}

impl Drop for BenchShard {
    fn drop(&mut self) {
        // Stops the shard (closing its logs) before the files go.
        drop(self.runtime.take());
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
