//! One `syncfs` for the group commits of many partitions of a shard.
//!
//! With the default durability policy every group commit of a partition ends with a sync
//! of its segment file. One `fdatasync` per partition per round costs the device a cache
//! flush (and often the journal a commit) each: 1,000 partitions taking 20 small rounds a
//! second ask for 20,000 syncs a second, which this machine's disk serves at ~100 µs of
//! device time apiece even with eight in parallel, and each one also wakes an io_uring
//! worker on the shard's CPU. `syncfs` of the file system does the same work once for
//! every dirty file: ~30 µs per file measured here (docs/benchmarks.md, "Many
//! partitions").
//!
//! `syncfs` is not free either: a lone one costs ~190 µs here against ~100 µs for
//! `fdatasync`, and it is one call after another where `fdatasync`s run side by side. So
//! a shard keeps `fdatasync` while it is quiet and only batches when it is busy: once it
//! starts syncs faster than [`GROUP_SYNC_BUSY_RATE`] within a [`GROUP_SYNC_BUSY_WINDOW`]
//! (this window or the last), a commit that finds [`GROUP_SYNC_MIN_CONCURRENT`] `fdatasync`s in
//! flight joins the shared `syncfs` instead. Measured (docs/benchmarks.md, "Many
//! partitions"): 1,000 partitions at 20k msg/s start ~6,700 syncs a second per shard and
//! gain 6x in end-to-end latency; OMB's 100 partitions at 50k msg/s start ~470 and lost
//! a third of theirs when every overlapping commit went to `syncfs`, so they stay on
//! `fdatasync`. A batch whose `syncfs` is running is closed: commits that arrive meanwhile
//! wait for the next one, which starts when it ends.
//!
//! Why a member is durable when its batch completes: it joined after its round's writes
//! completed, and the batch's `syncfs` started after every member joined. `syncfs` writes
//! back every dirty page of the file system and waits for it (the page-cache copies of
//! acks=1 appends included), commits the journal (size and extent changes) and flushes
//! the device's cache: everything each member's `fdatasync` would have done, for every
//! file at once.
//!
//! Errors. `syncfs` reports a writeback error of any file of the file system, once per
//! open file description, if it happened after that description was opened (the
//! superblock's error sequence, Linux 5.8+). So the broker calls [`init`] at shard start,
//! before any log is opened: the shard's `syncfs` calls all go through one descriptor of
//! the data directory opened before any of its writes, and no error can predate it. An
//! error fails every member of the batch (it cannot say which file it hit) and puts the
//! shard back on `fdatasync` for good: each file's own `fdatasync` then reports an error
//! that hit it (per-file error sequence), so a partition whose pages were lost learns it
//! even if its round was not in the failed batch. Without `init` (tests), a batch uses a
//! duplicate of a member's descriptor, which misses errors from before that file was
//! opened.
//!
//! `syncfs` has no io_uring operation, so it runs on the shard's glommio blocking thread
//! (`spawn_blocking`); its completion comes back through the shard's own reactor, so no
//! task is woken from another thread.

use std::cell::RefCell;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use glommio::io::DmaFile;

use crate::limits::{GROUP_SYNC_BUSY_RATE, GROUP_SYNC_BUSY_WINDOW, GROUP_SYNC_MIN_CONCURRENT};
use crate::sync::oneshot;

/// How a shard's syncs went, for tests and metrics (this thread's shard only).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct GroupSyncStats {
    /// Files synced with their own `fdatasync`.
    pub fdatasyncs: u64,
    /// `syncfs` calls begun for batches.
    pub syncfs_started: u64,
    /// `syncfs` calls finished (successfully or not).
    pub syncfs_completed: u64,
    /// Commits a `syncfs` covered (each would have been one `fdatasync`).
    pub syncfs_members: u64,
}

type SyncResult<T = ()> = Result<T, (io::ErrorKind, String)>;

struct Member {
    file: Rc<DmaFile>,
    done: oneshot::Sender<SyncResult>,
}

/// When a shard batches its syncs (see the module notes); tests set their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// More syncs than this started within one `GROUP_SYNC_BUSY_WINDOW` make the shard
    /// busy (that window and the next): 0 means always busy, `u32::MAX` never.
    pub busy_syncs: u32,
    /// While busy, a commit joins the shared `syncfs` when at least this many `fdatasync`s
    /// are in flight (0: always).
    pub min_concurrent: usize,
}

impl Policy {
    /// The default policy, busy from `per_second` syncs a second of the shard (0: never
    /// batch; `quiver serve --group-sync-busy-rate`).
    pub fn with_busy_rate(per_second: u64) -> Policy {
        let window_ms = GROUP_SYNC_BUSY_WINDOW.as_millis() as u64;
        let busy_syncs = match per_second {
            0 => u32::MAX,
            n => (n.saturating_mul(window_ms) / 1000).clamp(1, u32::MAX as u64 - 1) as u32,
        };
        Policy {
            busy_syncs,
            min_concurrent: GROUP_SYNC_MIN_CONCURRENT,
        }
    }
}

impl Default for Policy {
    fn default() -> Self {
        Policy::with_busy_rate(GROUP_SYNC_BUSY_RATE)
    }
}

/// The data directory, opened by [`init`], and its device.
struct SyncfsTarget {
    dir: Arc<File>,
    device: (u32, u32),
}

struct Shard {
    fdatasyncs_in_flight: usize,
    target: Option<SyncfsTarget>,
    /// A `syncfs` failed: `fdatasync` only from then on.
    poisoned: bool,
    policy: Policy,
    window_start: Option<Instant>,
    window_syncs: u32,
    last_window_busy: bool,
    waiting: Vec<Member>,
    batch_running: bool,
    stats: GroupSyncStats,
}

thread_local! {
    static SHARD: RefCell<Shard> = RefCell::new(Shard {
        fdatasyncs_in_flight: 0,
        target: None,
        poisoned: false,
        policy: Policy::default(),
        window_start: None,
        window_syncs: 0,
        last_window_busy: false,
        waiting: Vec::new(),
        batch_running: false,
        stats: GroupSyncStats::default(),
    });
}

/// This shard's counters.
pub fn stats() -> GroupSyncStats {
    SHARD.with(|s| s.borrow().stats)
}

/// Sets this shard's policy (the default is [`Policy::default`]).
pub fn set_policy(policy: Policy) {
    SHARD.with(|s| s.borrow_mut().policy = policy);
}

/// Sets the shard's policy and opens `data_dir` as the descriptor every `syncfs` of the
/// shard goes through. Call it on the shard before it opens any log (see the module notes
/// on errors).
pub fn init(policy: Policy, data_dir: &Path) -> io::Result<()> {
    let dir = File::open(data_dir)?;
    let meta = dir.metadata()?;
    let device = (libc::major(meta.dev()), libc::minor(meta.dev()));
    SHARD.with(|s| {
        let mut s = s.borrow_mut();
        s.policy = policy;
        s.target = Some(SyncfsTarget {
            dir: Arc::new(dir),
            device,
        });
    });
    Ok(())
}

impl Shard {
    /// Counts a sync about to start and says whether the shard is busy.
    fn busy(&mut self) -> bool {
        let now = Instant::now();
        match self.window_start {
            Some(start) if now.duration_since(start) < GROUP_SYNC_BUSY_WINDOW => {}
            Some(start) => {
                // A window with no sync at all in between ends the busy spell too.
                let gap = now.duration_since(start) >= 2 * GROUP_SYNC_BUSY_WINDOW;
                self.last_window_busy = !gap && self.window_syncs > self.policy.busy_syncs;
                self.window_start = Some(now);
                self.window_syncs = 0;
            }
            None => self.window_start = Some(now),
        }
        self.window_syncs = self.window_syncs.saturating_add(1);
        self.last_window_busy || self.window_syncs > self.policy.busy_syncs
    }
}

/// Makes everything written to `file` so far durable: its own `fdatasync`, or a share
/// of a `syncfs` when the shard is already syncing many files (see the module notes).
pub async fn sync_file(file: &Rc<DmaFile>) -> io::Result<()> {
    let own = SHARD.with(|s| {
        let mut s = s.borrow_mut();
        let own = s.poisoned || !s.busy() || s.fdatasyncs_in_flight < s.policy.min_concurrent;
        if own {
            s.fdatasyncs_in_flight += 1;
        }
        own
    });
    if own {
        let result = file.fdatasync().await;
        SHARD.with(|s| {
            let mut s = s.borrow_mut();
            s.fdatasyncs_in_flight -= 1;
            s.stats.fdatasyncs += 1;
        });
        return result.map_err(io::Error::from);
    }
    let (done, answer) = oneshot::channel();
    let start = SHARD.with(|s| {
        let mut s = s.borrow_mut();
        s.waiting.push(Member {
            file: Rc::clone(file),
            done,
        });
        !std::mem::replace(&mut s.batch_running, true)
    });
    if start {
        glommio::spawn_local(run_batches()).detach();
    }
    match answer.await {
        Ok(Ok(())) => Ok(()),
        Ok(Err((kind, message))) => Err(io::Error::new(kind, message)),
        Err(_) => Err(io::Error::other("the shard's group sync went away")),
    }
}

/// Runs `syncfs` batches until no commit is waiting.
async fn run_batches() {
    loop {
        let members = SHARD.with(|s| {
            let mut s = s.borrow_mut();
            let members = std::mem::take(&mut s.waiting);
            if members.is_empty() {
                s.batch_running = false;
            }
            members
        });
        if members.is_empty() {
            return;
        }
        // One syncfs per file system in the batch (a data directory is normally one).
        let mut synced: Vec<(u32, u32)> = Vec::new();
        let mut failed = None;
        for m in &members {
            let device = (m.file.dev_major(), m.file.dev_minor());
            if synced.contains(&device) {
                continue;
            }
            synced.push(device);
            let dir = SHARD.with(|s| {
                let mut s = s.borrow_mut();
                s.stats.syncfs_started += 1;
                s.target
                    .as_ref()
                    .filter(|t| t.device == device)
                    .map(|t| Arc::clone(&t.dir))
            });
            let result = match dir {
                Some(dir) => syncfs(dir).await,
                None => match duplicate(&m.file) {
                    Ok(fd) => syncfs(fd).await,
                    Err(e) => Err(e),
                },
            };
            SHARD.with(|s| s.borrow_mut().stats.syncfs_completed += 1);
            if let Err(e) = result {
                failed.get_or_insert(e);
            }
        }
        SHARD.with(|s| {
            let mut s = s.borrow_mut();
            s.stats.syncfs_members += members.len() as u64;
            if let Some((_, e)) = &failed {
                tracing::error!(error = %e, "syncfs failed; this shard syncs each file on its own from now on");
                s.poisoned = true;
            }
        });
        for m in members {
            // Any failure fails the whole batch: a writeback error is reported to
            // whichever descriptor asks first, not necessarily the file it hit.
            let result = match &failed {
                Some(e) => Err(e.clone()),
                None => Ok(()),
            };
            let _ = m.done.send(result);
        }
    }
}

/// A duplicate of `file`'s descriptor, owned by nothing else, for a `syncfs` that must not
/// depend on what the shard does with the file meanwhile.
fn duplicate(file: &DmaFile) -> SyncResult<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC takes no pointers; a non-negative result is a new
    // descriptor owned by nothing else.
    let raw = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0) };
    if raw < 0 {
        let e = io::Error::last_os_error();
        return Err((e.kind(), format!("dup for syncfs: {e}")));
    }
    // SAFETY: `raw` is a fresh descriptor that only this value owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// `syncfs` of the file system holding `fd`, on the shard's blocking thread; the closure
/// owns (a reference to) the descriptor, so it stays open for the call.
async fn syncfs<F: AsRawFd + Send + 'static>(fd: F) -> SyncResult {
    glommio::executor()
        .spawn_blocking(move || {
            // SAFETY: syncfs takes a descriptor, which `fd` keeps open for the call.
            if unsafe { libc::syncfs(fd.as_raw_fd()) } == 0 {
                Ok(())
            } else {
                let e = io::Error::last_os_error();
                Err((e.kind(), format!("syncfs: {e}")))
            }
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_rate_maps_to_syncs_per_window() {
        // 10 ms windows: 2,000 a second is more than 20 in a window.
        assert_eq!(Policy::with_busy_rate(2_000).busy_syncs, 20);
        assert_eq!(
            Policy::default(),
            Policy::with_busy_rate(GROUP_SYNC_BUSY_RATE)
        );
        // 0 turns batching off; a tiny rate still needs more than one sync in a window.
        assert_eq!(Policy::with_busy_rate(0).busy_syncs, u32::MAX);
        assert_eq!(Policy::with_busy_rate(1).busy_syncs, 1);
        assert!(Policy::with_busy_rate(u64::MAX).busy_syncs < u32::MAX);
    }
}
