//! criterion benches for the cross-core hop, `ShardContext::run_on`, through its public API
//! only: the round trip to another shard with a closure returning a small value, the same
//! call to the calling shard (runs inline) for comparison, and many hops in flight at once;
//! and, as the machine's floor under any of it, a round trip between two pinned OS threads.
//!
//! One 2-shard runtime (`quiver_benches::BenchRuntime`, pinned to cpus 0 and 1) lives for
//! the whole bench. Shard 0 takes measurement requests through the runtime's external
//! inbox, times N hops inside its executor and sends the elapsed time back for
//! `iter_custom`; shard 1 only answers hops.
//!
//! `cargo bench -p quiver-benches --bench hop` for figures.

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use quiver_benches::BenchRuntime;
use quiver_engine::runtime::ShardContext;
use quiver_engine::types::ShardId;

const SHARDS: usize = 2;
/// Hops kept in flight at once in the concurrent case.
const HOPS_IN_FLIGHT: usize = 16;

#[derive(Clone, Copy)]
enum Hop {
    /// `run_on` the calling shard: runs inline, no message.
    SameShard,
    /// `run_on` the other shard, one hop at a time: the round-trip latency.
    OtherShard,
    /// `HOPS_IN_FLIGHT` hops to the other shard awaited together: the cost per hop when the
    /// mesh and the reply path are kept busy.
    OtherShardConcurrent,
}

/// A running 2-shard runtime that measures hops on request: shard 0 times them.
struct HopRig {
    runtime: BenchRuntime,
}

impl HopRig {
    fn start() -> HopRig {
        HopRig {
            runtime: BenchRuntime::start(SHARDS, None),
        }
    }

    /// Times `iters` round trips (`SameShard`, `OtherShard`) or rounds of `HOPS_IN_FLIGHT`
    /// hops (`OtherShardConcurrent`) on shard 0.
    fn measure(&self, hop: Hop, iters: u64) -> Duration {
        self.runtime.run_on(0, move || async move {
            measure(&BenchRuntime::context(), hop, iters).await
        })
    }
}

async fn measure(ctx: &ShardContext, hop: Hop, iters: u64) -> Duration {
    let me = ctx.id();
    let other = ShardId((me.0 + 1) % ctx.count());
    let start = Instant::now();
    match hop {
        Hop::SameShard | Hop::OtherShard => {
            let target = if matches!(hop, Hop::SameShard) {
                me
            } else {
                other
            };
            for i in 0..iters {
                let answer = ctx
                    .run_on(target, move || async move { i.wrapping_add(1) })
                    .await
                    .expect("shard alive");
                assert_eq!(answer, i.wrapping_add(1));
            }
        }
        Hop::OtherShardConcurrent => {
            for i in 0..iters {
                let hops = (0..HOPS_IN_FLIGHT as u64)
                    .map(|j| ctx.run_on(other, move || async move { i ^ j }));
                for (j, answer) in futures::future::join_all(hops)
                    .await
                    .into_iter()
                    .enumerate()
                {
                    assert_eq!(answer.expect("shard alive"), i ^ j as u64);
                }
            }
        }
    }
    start.elapsed()
}

fn run_on(c: &mut Criterion) {
    let rig = HopRig::start();
    let mut group = c.benchmark_group("run_on");
    for (label, hop) in [
        ("same_shard", Hop::SameShard),
        ("other_shard", Hop::OtherShard),
    ] {
        group.throughput(Throughput::Elements(1));
        group.bench_function(BenchmarkId::from_parameter(label), |b| {
            b.iter_custom(|iters| rig.measure(hop, iters))
        });
    }
    group.throughput(Throughput::Elements(HOPS_IN_FLIGHT as u64));
    group.bench_function(
        BenchmarkId::from_parameter(format!("other_shard_{HOPS_IN_FLIGHT}_in_flight")),
        |b| b.iter_custom(|iters| rig.measure(Hop::OtherShardConcurrent, iters)),
    );
    group.finish();
}

/// Pins the calling thread to `cpu`, as glommio pins a shard.
fn pin_to_cpu(cpu: usize) {
    // SAFETY: `set` is a plain bitmask on our stack, sized by `size_of_val`; CPU_ZERO and
    // CPU_SET only write inside it, and sched_setaffinity only reads it.
    let pinned = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_ZERO(&mut set);
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set)
    };
    assert_eq!(pinned, 0, "pinning to cpu {cpu}");
}

/// The machine's floor under a cross-core round trip: two OS threads pinned to cpus 0 and 1
/// like the shards, each blocked until the other answers (std channels, so one futex wake
/// each way and no event loop). `run_on` does the same two wake-ups plus the executors' work.
fn thread_ping_pong(c: &mut Criterion) {
    let (ping, ping_rx) = std::sync::mpsc::sync_channel::<u64>(1);
    let (pong, pong_rx) = std::sync::mpsc::sync_channel::<u64>(1);
    let echo = std::thread::spawn(move || {
        pin_to_cpu(1);
        while let Ok(value) = ping_rx.recv() {
            if pong.send(value.wrapping_add(1)).is_err() {
                break;
            }
        }
    });
    // The timing runs on a pinned driver thread, not on criterion's.
    let (requests, requests_rx) =
        std::sync::mpsc::channel::<(u64, std::sync::mpsc::SyncSender<Duration>)>();
    let driver = std::thread::spawn(move || {
        pin_to_cpu(0);
        while let Ok((iters, elapsed)) = requests_rx.recv() {
            let start = Instant::now();
            for i in 0..iters {
                ping.send(i).expect("echo thread alive");
                assert_eq!(
                    pong_rx.recv().expect("echo thread alive"),
                    i.wrapping_add(1)
                );
            }
            let _ = elapsed.send(start.elapsed());
        }
    });
    let mut group = c.benchmark_group("thread_ping_pong");
    group.throughput(Throughput::Elements(1));
    group.bench_function("std_mpsc_pinned", |b| {
        b.iter_custom(|iters| {
            let (elapsed, elapsed_rx) = std::sync::mpsc::sync_channel(1);
            requests.send((iters, elapsed)).expect("driver alive");
            elapsed_rx.recv().expect("driver measured")
        })
    });
    group.finish();
    drop(requests);
    driver.join().expect("driver thread");
    echo.join().expect("echo thread");
}

criterion_group!(hop, run_on, thread_ping_pong);
criterion_main!(hop);
