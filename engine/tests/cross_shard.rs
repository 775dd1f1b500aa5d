//! Cross-shard completions wake tasks on their own shard, never from another thread.
//!
//! Regression tests for the broker abort `free(): double free detected in tcache 2` in
//! glommio's foreign-wake path (engine/src/sync.rs explains why no task may be woken
//! from another thread).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use quiver_engine::runtime::{self, RuntimeConfig, ShardContext};
use quiver_engine::sync::oneshot;
use quiver_engine::types::ShardId;

/// Polls `inner` with a waker that records the thread of every wake before passing it on.
struct RecordWakes<F> {
    inner: Pin<Box<F>>,
    wakes: Arc<Mutex<Vec<ThreadId>>>,
}

struct Recording {
    real: Waker,
    wakes: Arc<Mutex<Vec<ThreadId>>>,
}

impl Wake for Recording {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref()
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.wakes.lock().unwrap().push(std::thread::current().id());
        self.real.wake_by_ref();
    }
}

impl<F: Future> Future for RecordWakes<F> {
    type Output = F::Output;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let waker = Waker::from(Arc::new(Recording {
            real: cx.waker().clone(),
            wakes: Arc::clone(&self.wakes),
        }));
        let mut cx = Context::from_waker(&waker);
        self.inner.as_mut().poll(&mut cx)
    }
}

fn two_shards<F, Fut>(per_shard: F)
where
    F: Fn(ShardContext) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = ()> + 'static,
{
    // Two shards even on a one-CPU machine (then both are pinned to CPU 0).
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let config = RuntimeConfig {
        cpus: vec![0, 1 % cpus],
        ..RuntimeConfig::with_cores(Some(1))
    };
    runtime::run(&config, per_shard).expect("runtime runs");
}

/// Sets the flag when dropped, also when an assertion unwinds.
fn scopeguard_done(flag: &Arc<std::sync::atomic::AtomicBool>) -> impl Drop {
    struct Done(Arc<std::sync::atomic::AtomicBool>);
    impl Drop for Done {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Release);
        }
    }
    Done(Arc::clone(flag))
}

/// A reply sent on shard 1 to a receiver awaited on shard 0 wakes it on shard 0.
#[test]
fn replies_wake_the_receiver_on_its_own_shard() {
    let woken_on: Arc<Mutex<Vec<ThreadId>>> = Arc::default();
    let shard0_thread: Arc<Mutex<Option<ThreadId>>> = Arc::default();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (w, t) = (Arc::clone(&woken_on), Arc::clone(&shard0_thread));
    two_shards(move |ctx| {
        let (w, t, done) = (Arc::clone(&w), Arc::clone(&t), Arc::clone(&done));
        async move {
            if ctx.id() != ShardId(0) {
                // Shard 1 serves hops until shard 0 is finished.
                while !done.load(Ordering::Acquire) {
                    glommio::timer::sleep(Duration::from_millis(1)).await;
                }
                return;
            }
            let _finish = scopeguard_done(&done);
            *t.lock().unwrap() = Some(std::thread::current().id());
            for _ in 0..50 {
                let (tx, rx) = oneshot::channel::<u32>();
                // The receiver is polled (and registers its waker) before shard 1 sends.
                let waiting = RecordWakes {
                    inner: Box::pin(rx),
                    wakes: Arc::clone(&w),
                };
                let send_later = ctx.run_on(ShardId(1), move || async move {
                    glommio::timer::sleep(Duration::from_millis(1)).await;
                    tx.send(7).unwrap();
                });
                let (got, sent) = futures::join!(waiting, send_later);
                assert_eq!(got, Ok(7));
                sent.unwrap();
            }
        }
    });
    let home = shard0_thread.lock().unwrap().expect("shard 0 ran");
    let wakes = woken_on.lock().unwrap();
    assert!(!wakes.is_empty(), "the receiver was never woken");
    assert!(
        wakes.iter().all(|t| *t == home),
        "{} of {} wake-ups came from another thread",
        wakes.iter().filter(|t| **t != home).count(),
        wakes.len()
    );
}

/// Hammers the pattern that aborted the broker: cross-shard `run_on` hops and watches
/// that are dropped by a timeout while the other shard completes them.
#[test]
fn cross_shard_hops_with_cancellation_survive_a_storm() {
    const TASKS_PER_SHARD: usize = 32;
    let run_for = Duration::from_millis(1500);
    let hops = Arc::new(AtomicUsize::new(0));
    let h = Arc::clone(&hops);
    // Shards that finished their own hops. A shard keeps serving until both have: an
    // executor that returned early would drop the other shard's hops in flight to it,
    // and that shard would wait for their answers forever (a hang of this test in about
    // one run in five under load; the broker's shards live until the process stops).
    let finished = Arc::new(AtomicUsize::new(0));
    two_shards(move |ctx| {
        let h = Arc::clone(&h);
        let finished = Arc::clone(&finished);
        async move {
            let other = ShardId(1 - ctx.id().0);
            let deadline = Instant::now() + run_for;
            let mut tasks = Vec::new();
            for i in 0..TASKS_PER_SHARD {
                let ctx = ctx.clone();
                let h = Arc::clone(&h);
                tasks.push(glommio::spawn_local(async move {
                    let mut n = 0u64;
                    while Instant::now() < deadline {
                        n += 1;
                        // A hop whose answer is itself a receiver completed later on the
                        // other shard, raced against a short timeout (as a long poll).
                        let delay_us = (n * 37 + i as u64 * 11) % 300;
                        // (A tuple: the hop's answer is data that happens to be a future.)
                        let (watch,) = ctx
                            .run_on(other, move || async move {
                                let (tx, rx) = oneshot::channel::<()>();
                                glommio::spawn_local(async move {
                                    glommio::timer::sleep(Duration::from_micros(delay_us)).await;
                                    let _ = tx.send(());
                                })
                                .detach();
                                (rx,)
                            })
                            .await
                            .unwrap();
                        let timeout = glommio::timer::sleep(Duration::from_micros(150));
                        futures::pin_mut!(timeout);
                        let _ = futures::future::select(watch, timeout).await;
                        h.fetch_add(1, Ordering::Relaxed);
                    }
                }));
            }
            for t in tasks {
                t.await;
            }
            finished.fetch_add(1, Ordering::AcqRel);
            while finished.load(Ordering::Acquire) < 2 {
                glommio::timer::sleep(Duration::from_millis(1)).await;
            }
        }
    });
    assert!(hops.load(Ordering::Relaxed) > 1000, "too few hops ran");
}
