//! Completions that cross shards without waking a glommio task from another thread.
//!
//! glommio 0.9 lets any thread wake a task (the waker is queued to the task's executor,
//! `SleepNotifier::process_foreign_wakes`), but that path corrupts the heap under load:
//! the broker aborted with `free(): double free detected in tcache 2` inside
//! `process_foreign_wakes` -> `Waker::wake` within seconds of the fan-out workload
//! (docs/glommio.md has the stack and the upstream reports). Our cross-core traffic woke
//! foreign tasks all the time: a `run_on` reply, an append ticket awaited on the
//! connection's shard, a high-watermark watch for a long poll.
//!
//! Invariant: a glommio task is only ever woken, and its waker only ever dropped, on its
//! own shard. [`oneshot`] keeps it: the receiver remembers which shard polled it, and a
//! sender on another shard of the same runtime ships the wake-up there over the shard
//! mesh (the runtime's own channels, which wake tasks through each reactor's own list).
//! Receivers polled outside any shard (threads using `ExternalHandle`) have thread-safe
//! wakers and are woken directly.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};

use glommio::channels::channel_mesh::Senders;
use glommio::{GlommioError, ResourceType};

use crate::types::ShardId;

/// Work shipped to a shard: runs on that shard's executor.
pub(crate) type ShardTask = Box<dyn FnOnce() + Send>;

/// One shard of one runtime (tests run several runtimes in one process).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Place {
    runtime: u64,
    shard: usize,
}

struct Here {
    place: Place,
    senders: Rc<Senders<ShardTask>>,
}

thread_local! {
    static HERE: RefCell<Option<Rc<Here>>> = const { RefCell::new(None) };
}

static NEXT_RUNTIME: AtomicU64 = AtomicU64::new(1);

/// A fresh id for a runtime being started.
pub(crate) fn new_runtime_id() -> u64 {
    NEXT_RUNTIME.fetch_add(1, Ordering::Relaxed)
}

/// Called once on each shard thread when the mesh is connected.
pub(crate) fn enter_shard(runtime: u64, shard: ShardId, senders: Rc<Senders<ShardTask>>) {
    HERE.with(|h| {
        *h.borrow_mut() = Some(Rc::new(Here {
            place: Place {
                runtime,
                shard: shard.0,
            },
            senders,
        }))
    });
}

fn here() -> Option<Rc<Here>> {
    HERE.with(|h| h.borrow().clone())
}

fn here_place() -> Option<Place> {
    HERE.with(|h| h.borrow().as_ref().map(|h| h.place))
}

/// Runs `task` on shard `to`: inline when that is this thread, else over the mesh.
/// `Err(task)` when this thread is not a shard of `to`'s runtime, so the mesh cannot
/// reach it.
fn post(to: Place, task: ShardTask) -> Result<(), ShardTask> {
    let Some(here) = here() else {
        return Err(task);
    };
    if here.place == to {
        task();
        return Ok(());
    }
    if here.place.runtime != to.runtime {
        return Err(task);
    }
    match here.senders.try_send_to(to.shard, task) {
        Ok(()) => Ok(()),
        Err(GlommioError::WouldBlock(ResourceType::Channel(task))) => {
            // The channel to that shard is full (or closed): wait for room without
            // blocking this reactor. Only if the peer is gone for good (shutdown) is the
            // task leaked: dropping it here would drop a foreign waker, the very thing
            // this module exists to avoid.
            let senders = Rc::clone(&here.senders);
            glommio::spawn_local(async move {
                if let Err(e) = senders.send_to(to.shard, task).await {
                    std::mem::forget(e);
                }
            })
            .detach();
            Ok(())
        }
        // Closed (shutdown) or not a peer: leaked for the reason above.
        Err(e) => {
            std::mem::forget(e);
            Ok(())
        }
    }
}

/// Wakes `waker`, registered on `place`, from whatever thread we are on.
fn wake_at(waker: std::task::Waker, place: Option<Place>) {
    match place {
        Some(p) if here_place() != Some(p) => {
            if let Err(task) = post(p, Box::new(move || waker.wake())) {
                // A shard of another runtime or a plain thread woke a shard's task.
                // Nothing in Quiver does that; if it ever happens the foreign wake is
                // still better than a lost one.
                task();
            }
        }
        _ => waker.wake(),
    }
}

/// A single-value channel whose wake-ups travel to the receiver's shard (module docs).
/// Same shape as `futures::channel::oneshot`.
pub mod oneshot {
    use std::future::Future;
    use std::pin::Pin;
    use std::sync::{Arc, Mutex, MutexGuard};
    use std::task::{Context, Poll, Waker};

    use super::{here_place, wake_at, Place};

    /// The sender went away without sending.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
    #[error("oneshot canceled")]
    pub struct Canceled;

    struct Slot<T> {
        value: Option<T>,
        waiter: Option<(Waker, Option<Place>)>,
        sender_gone: bool,
        receiver_gone: bool,
    }

    // A per-completion slot, touched once by each side: the lock is never contended for
    // longer than a field copy. (It is not a lock on shared data: nothing else is in it.)
    fn lock<T>(slot: &Mutex<Slot<T>>) -> MutexGuard<'_, Slot<T>> {
        // A panic while holding this lock leaves nothing half-written (each critical
        // section is a few field moves), so a poisoned slot is still consistent.
        slot.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub struct Sender<T> {
        slot: Option<Arc<Mutex<Slot<T>>>>,
    }

    pub struct Receiver<T> {
        slot: Arc<Mutex<Slot<T>>>,
    }

    pub fn channel<T>() -> (Sender<T>, Receiver<T>) {
        let slot = Arc::new(Mutex::new(Slot {
            value: None,
            waiter: None,
            sender_gone: false,
            receiver_gone: false,
        }));
        (
            Sender {
                slot: Some(Arc::clone(&slot)),
            },
            Receiver { slot },
        )
    }

    impl<T> Sender<T> {
        /// Delivers `value`; `Err(value)` if the receiver is gone.
        pub fn send(mut self, value: T) -> Result<(), T> {
            let Some(slot) = self.slot.take() else {
                return Err(value);
            };
            let waiter = {
                let mut s = lock(&slot);
                if s.receiver_gone {
                    return Err(value);
                }
                s.value = Some(value);
                s.sender_gone = true;
                s.waiter.take()
            };
            if let Some((waker, place)) = waiter {
                wake_at(waker, place);
            }
            Ok(())
        }

        /// The receiver was dropped: sending is pointless.
        pub fn is_canceled(&self) -> bool {
            self.slot
                .as_ref()
                .map(|s| lock(s).receiver_gone)
                .unwrap_or(true)
        }
    }

    impl<T> Drop for Sender<T> {
        fn drop(&mut self) {
            if let Some(slot) = self.slot.take() {
                let waiter = {
                    let mut s = lock(&slot);
                    s.sender_gone = true;
                    s.waiter.take()
                };
                if let Some((waker, place)) = waiter {
                    wake_at(waker, place);
                }
            }
        }
    }

    impl<T> Receiver<T> {
        /// The value if it has arrived, without waiting.
        pub fn try_recv(&mut self) -> Result<Option<T>, Canceled> {
            let mut s = lock(&self.slot);
            match s.value.take() {
                Some(v) => Ok(Some(v)),
                None if s.sender_gone => Err(Canceled),
                None => Ok(None),
            }
        }
    }

    impl<T> Future for Receiver<T> {
        type Output = Result<T, Canceled>;

        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
            let mut s = lock(&self.slot);
            if let Some(v) = s.value.take() {
                return Poll::Ready(Ok(v));
            }
            if s.sender_gone {
                return Poll::Ready(Err(Canceled));
            }
            let place = here_place();
            let same = matches!(&s.waiter, Some((w, p)) if *p == place && w.will_wake(cx.waker()));
            if !same {
                // The old waker (if any) is dropped here, on the thread that polls, which
                // is the thread that registered it: receivers do not move once polled.
                s.waiter = Some((cx.waker().clone(), place));
            }
            Poll::Pending
        }
    }

    impl<T> Drop for Receiver<T> {
        fn drop(&mut self) {
            let waiter = {
                let mut s = lock(&self.slot);
                s.receiver_gone = true;
                s.waiter.take()
            };
            drop(waiter);
        }
    }

    impl<T> std::fmt::Debug for Receiver<T> {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("oneshot::Receiver")
        }
    }

    impl<T> std::fmt::Debug for Sender<T> {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("oneshot::Sender")
        }
    }
}

/// One wake-up that many sources can give: a long poll over many partitions registers a
/// single signal with each partition it waits on, and the first partition whose high
/// watermark moves fires it. The others find it done and drop their copy on their next
/// registration or commit, without a lock. Wake-ups cross shards as [`oneshot`]'s do.
pub mod signal {
    use std::future::Future;
    use std::pin::Pin;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    use std::task::{Context, Poll};

    use super::oneshot;

    /// Held by the sources only, so that when the last one goes the sender drops and the
    /// waiter completes (a partition deleted under a long poll wakes it).
    struct Shared {
        /// Fired, or the waiter is gone: either way no source needs to keep it.
        done: Arc<AtomicBool>,
        sender: Mutex<Option<oneshot::Sender<()>>>,
    }

    /// The sources' side; clone it into every place that may fire it.
    #[derive(Clone)]
    pub struct Signal(Arc<Shared>);

    /// The waiting side: completes when any source fires (or every source is gone).
    pub struct Waiter {
        receiver: oneshot::Receiver<()>,
        done: Arc<AtomicBool>,
    }

    pub fn signal() -> (Signal, Waiter) {
        let (sender, receiver) = oneshot::channel();
        let done = Arc::new(AtomicBool::new(false));
        let shared = Arc::new(Shared {
            done: Arc::clone(&done),
            sender: Mutex::new(Some(sender)),
        });
        (Signal(shared), Waiter { receiver, done })
    }

    impl Signal {
        /// Wakes the waiter; only the first call does anything.
        pub fn fire(&self) {
            if self.0.done.swap(true, Ordering::AcqRel) {
                return;
            }
            let sender = self
                .0
                .sender
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take();
            if let Some(sender) = sender {
                let _ = sender.send(());
            }
        }

        /// Fired already, or nobody waits any more: sources can forget it.
        pub fn is_done(&self) -> bool {
            self.0.done.load(Ordering::Acquire)
        }
    }

    impl Future for Waiter {
        type Output = ();

        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            Pin::new(&mut self.receiver).poll(cx).map(|_| ())
        }
    }

    impl Drop for Waiter {
        fn drop(&mut self) {
            self.done.store(true, Ordering::Release);
        }
    }

    impl std::fmt::Debug for Signal {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("signal::Signal")
        }
    }

    impl std::fmt::Debug for Waiter {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("signal::Waiter")
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use futures::FutureExt;

        #[test]
        fn first_fire_wakes_and_the_rest_are_no_ops() {
            let (signal, mut waiter) = signal();
            let other = signal.clone();
            assert!(!signal.is_done());
            assert!((&mut waiter).now_or_never().is_none());
            other.fire();
            assert!(signal.is_done());
            signal.fire();
            assert!((&mut waiter).now_or_never().is_some());
        }

        #[test]
        fn a_dropped_waiter_marks_the_signal_done() {
            let (signal, waiter) = signal();
            drop(waiter);
            assert!(signal.is_done());
            signal.fire(); // nobody listens: no panic, nothing sent
        }

        #[test]
        fn every_source_gone_completes_the_waiter() {
            let (signal, mut waiter) = signal();
            let copy = signal.clone();
            drop(signal);
            assert!((&mut waiter).now_or_never().is_none());
            drop(copy);
            assert!((&mut waiter).now_or_never().is_some());
        }
    }
}
