//! The glommio executor as patched in third_party/glommio (QUIVER_PATCHES.md): behaviour the
//! shards rely on that upstream's tests do not cover.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use glommio::{LocalExecutorBuilder, Placement};

/// Patch 8: the preemption timer kept across polls (patch 1) may fire between the
/// executor's I/O poll and its first `need_preempt` check; the executor then ran no task
/// queue and, before patch 8, parked with the task still runnable and nothing left to wake
/// it (a bench hung in CI this way). A short preemption timer makes that window common: a
/// task that only yields (it is runnable again at once) hung before its first thousand
/// yields at 20 µs.
#[test]
fn a_preemption_timer_firing_before_the_task_queues_run_does_not_park_a_runnable_task() {
    const YIELDS: u64 = 3_000_000;
    for preempt_us in [20u64, 50] {
        let progress = Arc::new(AtomicU64::new(0));
        let (done_tx, done_rx) = mpsc::channel();
        let p = Arc::clone(&progress);
        let _executor = LocalExecutorBuilder::new(Placement::Unbound)
            .name("preempt-park")
            .preempt_timer(Duration::from_micros(preempt_us))
            .spawn(move || async move {
                for i in 0..YIELDS {
                    futures_lite::future::yield_now().await;
                    p.store(i + 1, Ordering::Relaxed);
                }
                let _ = done_tx.send(());
            })
            .expect("starting an executor");
        // Seconds of slack on a loaded machine; a parked executor never finishes. (The
        // thread of a hung executor is left behind: the test process ends with the test.)
        if done_rx.recv_timeout(Duration::from_secs(60)).is_err() {
            panic!(
                "executor with a {preempt_us} µs preemption timer stopped after {} of {YIELDS} \
                 yields: parked with a runnable task",
                progress.load(Ordering::Relaxed)
            );
        }
    }
}
