//! The thread-per-core runtime: one pinned glommio executor per core, a full mesh of
//! bounded channels between them, and the deterministic shard table.
//!
//! Invariants: a partition is owned by exactly one shard, given by [`shard_for`], which
//! every core computes identically; cross-core work is a message carrying a closure
//! that runs on the owning shard, never a lock on shared data.

use std::future::Future;
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use glommio::channels::channel_mesh::{MeshBuilder, Senders};
use glommio::{LocalExecutorBuilder, Placement};

use crate::error::{EngineError, Result};
use crate::limits::{IO_MEMORY_BYTES_PER_SHARD, SHARD_CHANNEL_CAPACITY};
use crate::sync::{self, oneshot, ShardTask};
use crate::types::ShardId;

/// The shard that owns `partition` of `topic` among `shard_count` shards. Spreads the
/// partitions of one topic round-robin from a per-topic starting shard.
pub fn shard_for(topic: &str, partition: i32, shard_count: usize) -> ShardId {
    let start = xxhash_rust::xxh3::xxh3_64(topic.as_bytes());
    ShardId((start.wrapping_add(partition as u64) % shard_count.max(1) as u64) as usize)
}

/// A shard's handle on the runtime: who it is and how to reach the others.
#[derive(Clone)]
pub struct ShardContext {
    id: ShardId,
    count: usize,
    senders: Rc<Senders<ShardTask>>,
}

impl ShardContext {
    pub fn id(&self) -> ShardId {
        self.id
    }

    pub fn count(&self) -> usize {
        self.count
    }

    /// Runs `f` on `shard` and returns its result here. On the same shard it runs
    /// inline; otherwise the closure hops over the mesh (waiting if that channel is
    /// full) and the result comes back over the mesh too ([`sync::oneshot`]: no task is
    /// woken from another thread). Neither reactor blocks.
    pub async fn run_on<R, F, Fut>(&self, shard: ShardId, f: F) -> Result<R>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = R> + 'static,
        R: Send + 'static,
    {
        if shard == self.id {
            return Ok(f().await);
        }
        let (tx, rx) = oneshot::channel();
        let task: ShardTask = Box::new(move || {
            glommio::spawn_local(async move {
                let _ = tx.send(f().await);
            })
            .detach();
        });
        self.senders
            .send_to(shard.0, task)
            .await
            .map_err(|_| EngineError::ShardGone)?;
        rx.await.map_err(|_| EngineError::ShardGone)
    }
}

/// A way into the shards from threads that are not shards (a program embedding the
/// engine, tests; until session 4 the QUIC endpoint's tokio threads, which now run on the
/// shards instead). Cloneable and `Send`; each shard drains its inbox, a bounded
/// channel, so a flood from outside waits instead of growing memory.
///
/// The shard never registers a waker with the inbox (a foreign thread would then wake a
/// glommio task: see [`sync`]). Instead a sender rings the shard's doorbell, one byte on
/// a Unix socket that the shard reads through its own io_uring, and the shard drains the
/// inbox after each ring. A flag keeps it to one byte per batch of tasks.
#[derive(Clone)]
pub struct ExternalHandle {
    inboxes: Vec<Inbox>,
}

#[derive(Clone)]
struct Inbox {
    tasks: futures::channel::mpsc::Sender<ShardTask>,
    bell: Arc<Doorbell>,
}

struct Doorbell {
    writer: UnixStream,
    /// Set by the ringer, cleared by the shard before it drains.
    rung: AtomicBool,
}

impl Doorbell {
    fn ring(&self) {
        if !self.rung.swap(true, Ordering::SeqCst) {
            // Non-blocking: WouldBlock means bytes are already waiting to be read, so the
            // shard will drain anyway; any other error means the shard is gone.
            let _ = (&self.writer).write(&[1]);
        }
    }
}

/// The receiving ends of an [`ExternalHandle`], one per shard, for [`run_with_external`].
pub struct ExternalInboxes(Vec<ShardInbox>);

struct ShardInbox {
    tasks: futures::channel::mpsc::Receiver<ShardTask>,
    bell_reader: UnixStream,
    bell: Arc<Doorbell>,
}

impl ShardInbox {
    /// Runs every task sent to this shard from outside until all handles are dropped.
    async fn serve(self) {
        use futures::AsyncReadExt;
        use std::os::fd::IntoRawFd;
        use std::os::unix::io::FromRawFd;
        let ShardInbox {
            mut tasks,
            bell_reader,
            bell,
        } = self;
        // SAFETY: the fd comes from a socket we own (into_raw_fd gives up ownership), so
        // the glommio stream is its only owner.
        let mut reader =
            unsafe { glommio::net::UnixStream::from_raw_fd(bell_reader.into_raw_fd()) };
        let mut rings = [0u8; 64];
        loop {
            bell.rung.store(false, Ordering::SeqCst);
            loop {
                match tasks.try_recv() {
                    Ok(task) => task(),
                    Err(futures::channel::mpsc::TryRecvError::Closed) => return,
                    Err(_) => break,
                }
            }
            match reader.read(&mut rings).await {
                Ok(n) if n > 0 => {}
                _ => return,
            }
        }
    }
}

impl ExternalHandle {
    /// A handle for `shards` shards and the inboxes to pass to [`run_with_external`].
    pub fn new(shards: usize) -> (ExternalHandle, ExternalInboxes) {
        let mut inboxes = Vec::with_capacity(shards);
        let mut receivers = Vec::with_capacity(shards);
        for _ in 0..shards {
            let (tx, rx) = futures::channel::mpsc::channel(SHARD_CHANNEL_CAPACITY);
            // A socketpair cannot fail short of fd exhaustion at start-up.
            let (writer, reader) = UnixStream::pair().expect("socketpair for a shard doorbell");
            writer
                .set_nonblocking(true)
                .expect("non-blocking doorbell socket");
            let bell = Arc::new(Doorbell {
                writer,
                rung: AtomicBool::new(false),
            });
            inboxes.push(Inbox {
                tasks: tx,
                bell: Arc::clone(&bell),
            });
            receivers.push(ShardInbox {
                tasks: rx,
                bell_reader: reader,
                bell,
            });
        }
        (ExternalHandle { inboxes }, ExternalInboxes(receivers))
    }

    pub fn shard_count(&self) -> usize {
        self.inboxes.len()
    }

    /// Runs `f` on `shard` and returns its result to the calling thread.
    pub async fn run_on<R, F, Fut>(&self, shard: ShardId, f: F) -> Result<R>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = R> + 'static,
        R: Send + 'static,
    {
        use futures::SinkExt;
        let Inbox { mut tasks, bell } = self
            .inboxes
            .get(shard.0)
            .cloned()
            .ok_or(EngineError::ShardGone)?;
        let (tx, rx) = oneshot::channel();
        let task: ShardTask = Box::new(move || {
            glommio::spawn_local(async move {
                let _ = tx.send(f().await);
            })
            .detach();
        });
        tasks.send(task).await.map_err(|_| EngineError::ShardGone)?;
        bell.ring();
        rx.await.map_err(|_| EngineError::ShardGone)
    }
}

/// How the runtime is laid out.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// CPU ids to pin one shard each to.
    pub cpus: Vec<usize>,
    pub io_memory_bytes: usize,
    /// How long an idle shard keeps polling (its rings, the mesh, timers) before it
    /// parks in the kernel. Parking costs a wake-up (eventfd, scheduler, and glommio's
    /// membarrier) on the next message, tens of microseconds on a shared 2-core
    /// machine; spinning costs CPU while idle. `None`: park at once.
    pub spin_before_park: Option<std::time::Duration>,
}

impl RuntimeConfig {
    pub fn with_cores(cores: Option<usize>) -> Self {
        let available = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let n = cores.unwrap_or(available).clamp(1, available.max(1));
        RuntimeConfig {
            cpus: (0..n).collect(),
            io_memory_bytes: IO_MEMORY_BYTES_PER_SHARD,
            spin_before_park: None,
        }
    }
}

/// Largest allocation glibc serves from its heap rather than a fresh `mmap` (glibc's own
/// maximum, DEFAULT_MMAP_THRESHOLD_MAX on 64-bit): request frames (up to 16 MiB) and DMA
/// buffers beyond the registered pool.
pub const MALLOC_MMAP_THRESHOLD_BYTES: usize = 32 * 1024 * 1024;
/// Free memory at the top of a heap glibc keeps rather than returning it to the kernel.
pub const MALLOC_TRIM_THRESHOLD_BYTES: usize = 256 * 1024 * 1024;

/// Keeps large buffers in glibc's heap, reused from one request to the next. By default a
/// buffer over 128 KiB is a fresh mapping (or heap memory given back to the kernel when
/// freed, often on another thread): every request's pages fault in and are zeroed one by
/// one. At 600 MB/s of QUIC produce that was 17% of the broker's CPU (page faults, page
/// clearing, munmap; docs/benchmarks.md), and a third of the load generator's. Call before
/// other threads start.
pub fn tune_allocator() {
    // SAFETY: mallopt only changes allocator parameters; the values are constants within the
    // range glibc accepts, and no other thread is allocating yet.
    unsafe {
        libc::mallopt(
            libc::M_MMAP_THRESHOLD,
            MALLOC_MMAP_THRESHOLD_BYTES as libc::c_int,
        );
        libc::mallopt(
            libc::M_TRIM_THRESHOLD,
            MALLOC_TRIM_THRESHOLD_BYTES as libc::c_int,
        );
    }
}

/// Checks (and, within the hard limit, raises) RLIMIT_MEMLOCK so that every executor
/// can register its io_uring buffers. Fails with a clear message instead of letting
/// glommio hit ENOMEM later.
pub fn ensure_memlock(config: &RuntimeConfig) -> Result<()> {
    // Registered buffers plus a margin for the rings themselves on older kernels.
    let needed = (config.io_memory_bytes as u64 + 512 * 1024) * config.cpus.len() as u64;
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass and has no other effects.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) } != 0 {
        return Err(EngineError::MemlockTooLow(format!(
            "getrlimit(RLIMIT_MEMLOCK) failed: {}",
            std::io::Error::last_os_error()
        )));
    }
    if lim.rlim_cur == libc::RLIM_INFINITY || lim.rlim_cur >= needed {
        return Ok(());
    }
    if lim.rlim_max == libc::RLIM_INFINITY || lim.rlim_max >= needed {
        let raised = libc::rlimit {
            rlim_cur: if lim.rlim_max == libc::RLIM_INFINITY {
                needed
            } else {
                lim.rlim_max.min(needed.max(lim.rlim_cur))
            },
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit only reads the struct; raising the soft limit up to the hard
        // limit is always permitted.
        if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &raised) } == 0 {
            return Ok(());
        }
    }
    Err(EngineError::MemlockTooLow(format!(
        "RLIMIT_MEMLOCK is {} KiB (hard limit {} KiB) but {} cores need {} KiB of locked \
         memory for io_uring registered buffers. Raise it (`ulimit -l {}` or \
         LimitMEMLOCK= in a systemd unit) or run with fewer --cores.",
        lim.rlim_cur / 1024,
        if lim.rlim_max == libc::RLIM_INFINITY {
            u64::MAX / 1024
        } else {
            lim.rlim_max / 1024
        },
        config.cpus.len(),
        needed / 1024,
        needed / 1024
    )))
}

/// Must run on every executor before it opens a DMA file on `data_dir`'s device.
///
/// glommio 0.9 probes IOPOLL support with a read at offset 0 of the first DMA file it
/// opens on a device; if that file is empty the read "succeeds" with 0 bytes, glommio
/// caches "pollable" for the device (per thread), and every later DMA read on the device
/// fails with EOPNOTSUPP on devices without poll queues (virtio here). Opening a
/// non-empty file first makes the probe see the real answer. See docs/glommio.md.
pub async fn prepare_io(data_dir: &Path) -> Result<()> {
    std::fs::create_dir_all(data_dir)
        .map_err(|e| EngineError::io("create dir", data_dir.display(), e))?;
    let probe = data_dir.join(".io-probe");
    let ok = std::fs::metadata(&probe)
        .map(|m| m.len() >= 4096)
        .unwrap_or(false);
    if !ok {
        // Every shard runs this at start-up on the same directory: written under a
        // per-thread name and renamed into place, so no shard ever opens a probe file
        // another is still writing (an empty probe is exactly what poisons glommio's
        // cache, above). Seen once as EOPNOTSUPP at start-up under load.
        let tmp = data_dir.join(format!(".io-probe.{:?}.tmp", std::thread::current().id()));
        std::fs::write(&tmp, vec![0u8; 4096])
            .and_then(|()| std::fs::rename(&tmp, &probe))
            .map_err(|e| EngineError::io("write", probe.display(), e))?;
    }
    let f = glommio::io::DmaFile::open(&probe)
        .await
        .map_err(|e| EngineError::io("open", probe.display(), e.into()))?;
    let r = f.read_at(0, 4096).await;
    let _ = f.close().await;
    r.map(|_| ())
        .map_err(|e| EngineError::io("probe read", probe.display(), e.into()))
}

/// Starts one pinned executor per configured CPU, connects the mesh, and runs
/// `per_shard` on each. Returns when every shard's future has finished.
pub fn run<F, Fut>(config: &RuntimeConfig, per_shard: F) -> Result<()>
where
    F: Fn(ShardContext) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let (_, inboxes) = ExternalHandle::new(config.cpus.len());
    run_with_external(config, inboxes, per_shard)
}

/// Like [`run`], with each shard also serving its inbox of an [`ExternalHandle`].
/// Inbox `i` is served by the shard with id `i`.
pub fn run_with_external<F, Fut>(
    config: &RuntimeConfig,
    inboxes: ExternalInboxes,
    per_shard: F,
) -> Result<()>
where
    F: Fn(ShardContext) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = ()> + 'static,
{
    ensure_memlock(config)?;
    // Shard ids come from the mesh join order, so inboxes are handed out by id once
    // each executor knows its id.
    let inboxes: Arc<std::sync::Mutex<Vec<Option<ShardInbox>>>> = Arc::new(std::sync::Mutex::new(
        inboxes.0.into_iter().map(Some).collect(),
    ));
    let runtime_id = sync::new_runtime_id();
    let count = config.cpus.len();
    let mesh = MeshBuilder::<ShardTask, _>::full(count, SHARD_CHANNEL_CAPACITY);
    let mut handles = Vec::with_capacity(count);
    for &cpu in &config.cpus {
        let mesh = mesh.clone();
        let per_shard = per_shard.clone();
        let inboxes = Arc::clone(&inboxes);
        let mut builder = LocalExecutorBuilder::new(Placement::Fixed(cpu))
            .name(&format!("shard-{cpu}"))
            .io_memory(config.io_memory_bytes);
        if let Some(spin) = config.spin_before_park {
            builder = builder.spin_before_park(spin);
        }
        let handle = builder
            .spawn(move || async move {
                let (senders, mut receivers) = match mesh.join().await {
                    Ok(pair) => pair,
                    Err(_) => {
                        tracing::error!("shard mesh failed to connect");
                        return;
                    }
                };
                let id = ShardId(senders.peer_id());
                let senders = Rc::new(senders);
                // Before any task can run here: replies must know this is a shard.
                sync::enter_shard(runtime_id, id, Rc::clone(&senders));
                // Start-up only: each shard takes its own inbox once.
                let inbox = inboxes
                    .lock()
                    .ok()
                    .and_then(|mut v| v.get_mut(id.0).and_then(Option::take));
                if let Some(inbox) = inbox {
                    glommio::spawn_local(inbox.serve()).detach();
                }
                for (_, rx) in receivers.streams() {
                    glommio::spawn_local(async move {
                        while let Some(task) = rx.recv().await {
                            task();
                        }
                    })
                    .detach();
                }
                let ctx = ShardContext { id, count, senders };
                per_shard(ctx).await;
            })
            .map_err(|e| {
                EngineError::io(
                    "spawn executor",
                    format!("cpu {cpu}"),
                    std::io::Error::other(e.to_string()),
                )
            })?;
        handles.push(handle);
    }
    for h in handles {
        h.join().map_err(|e| {
            EngineError::io(
                "join executor",
                "shard",
                std::io::Error::other(e.to_string()),
            )
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_table_is_deterministic_and_spreads() {
        let n = 4;
        let a: Vec<_> = (0..8).map(|p| shard_for("orders", p, n)).collect();
        let b: Vec<_> = (0..8).map(|p| shard_for("orders", p, n)).collect();
        assert_eq!(a, b);
        for s in 0..n {
            assert_eq!(a.iter().filter(|x| x.0 == s).count(), 2);
        }
        assert_eq!(shard_for("x", 5, 1), ShardId(0));
    }

    #[test]
    fn external_threads_reach_every_shard() {
        let config = RuntimeConfig::with_cores(Some(2));
        let (handle, inboxes) = ExternalHandle::new(config.cpus.len());
        let outside = std::thread::spawn(move || {
            futures::executor::block_on(async {
                let mut seen = Vec::new();
                for s in 0..handle.shard_count() {
                    let name = handle
                        .run_on(ShardId(s), || async {
                            std::thread::current().name().unwrap_or("").to_string()
                        })
                        .await
                        .unwrap();
                    seen.push(name);
                }
                seen
            })
        });
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let d2 = done.clone();
        let waiter = std::thread::spawn(move || {
            let seen = outside.join().unwrap();
            d2.store(true, std::sync::atomic::Ordering::SeqCst);
            seen
        });
        run_with_external(&config, inboxes, move |_ctx| {
            let done = done.clone();
            async move {
                while !done.load(std::sync::atomic::Ordering::SeqCst) {
                    glommio::timer::sleep(std::time::Duration::from_millis(5)).await;
                }
            }
        })
        .unwrap();
        let seen = waiter.join().unwrap();
        assert_eq!(seen.len(), 2);
        assert!(seen.iter().all(|n| n.starts_with("shard-")));
        assert_ne!(seen[0], seen[1]);
    }

    #[test]
    fn hop_runs_on_the_owner_and_returns() {
        let config = RuntimeConfig::with_cores(Some(2));
        let results = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let r2 = results.clone();
        run(&config, move |ctx| {
            let results = r2.clone();
            async move {
                let other = ShardId((ctx.id().0 + 1) % ctx.count());
                let me = ctx.id();
                let seen = ctx
                    .run_on(other, move || async move {
                        (std::thread::current().name().unwrap_or("").to_string(), me)
                    })
                    .await
                    .unwrap();
                results.lock().unwrap().push((me, seen));
                // Serve until the other shard has its answer too: an executor that
                // returned first would drop the other's hop in flight to it, and the
                // test would hang (seen about once in three full-suite runs).
                while results.lock().unwrap().len() < 2 {
                    glommio::timer::sleep(std::time::Duration::from_millis(1)).await;
                }
            }
        })
        .unwrap();
        let results = results.lock().unwrap();
        assert_eq!(results.len(), 2);
        for (me, (thread, asked_by)) in results.iter() {
            assert_eq!(me, asked_by);
            assert!(thread.starts_with("shard-"));
        }
    }
}
