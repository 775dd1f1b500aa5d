//! The QUIC link of a producer (`crate::kafka::producer` is the sender): one connection per
//! producer and a long-lived PRODUCE stream per partition. A request's batches go out as one
//! frame each on their partitions' streams; one task per request waits for all of their
//! acknowledgements, as a Kafka ProduceResponse answers all partitions at once.
//!
//! Where the connection runs (`--quic-producer-runtime`; `auto`, the default, picks `own`
//! for fixed-rate producers and `shared` for max-rate ones):
//! - `own`: a current-thread tokio runtime on the producer's own thread. quinn's
//!   connection and endpoint tasks, the stream tasks and the acknowledgement tasks all run
//!   there, whenever the sender writes or waits: the sender's waits (for the next send time,
//!   for an in-flight slot, for the drain) drive the runtime instead of blocking the thread.
//!   A request crosses no thread on its way out, and its answer wakes one thread (the
//!   sender, asleep in `ppoll` on the UDP socket between sends, or in the runtime's
//!   `epoll_wait` during other waits): the same as an inline Kafka link, which sleeps in
//!   `ppoll` on its TCP socket. This is how a latency-sensitive
//!   service would run the client: on a thread of its own.
//! - `shared`: the run's multi-threaded runtime. Packet assembly and encryption run on its
//!   workers, in parallel with the sender building batches, at the price of a wake-up of a
//!   worker per request and of whichever worker picks up the answer.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use futures::future::join_all;
use quiver_client::{Acks, BatchProducer, Client};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::Notify;

use super::{ProducerRuntime, QuicTarget};
use crate::kafka::producer::{
    poll_readable, Acknowledger, InFlight, ProduceLink, ProducerSpec, RequestBatches, RequestMeta,
};
use crate::kafka::stats::{Clock, PACER_SPIN_NS};

/// Which runtime drives a producer's connection.
enum Driver {
    /// The run's multi-threaded runtime.
    Shared(tokio::runtime::Handle),
    /// A current-thread runtime the producer's thread drives, and its precise timer.
    Own {
        runtime: tokio::runtime::Runtime,
        timer: TimerFd,
        /// Signalled by the acknowledgement tasks, so a waiting sender re-checks its slots.
        acked: Arc<Notify>,
    },
}

impl Driver {
    /// Runs `future` to completion, then, on the own runtime, lets the tasks it woke run
    /// (a turn of the runtime: one `epoll_wait` more).
    fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        match self {
            Driver::Shared(handle) => handle.block_on(future),
            Driver::Own { runtime, .. } => runtime.block_on(async {
                let output = future.await;
                tokio::task::yield_now().await;
                output
            }),
        }
    }

    /// Runs `future` to completion and returns at once: what it woke runs at the next
    /// turn of the runtime. For a request write, whose packet the client sends from the
    /// writing task itself: the sender's next wait (`pace_until`, `wait_below`) turns the
    /// runtime before it sleeps, so the acknowledgement task is polled there, and a packet
    /// left to quinn's driver task (when that task was already scheduled) leaves then.
    /// Every system call between the request's send and the thread's sleep delays the
    /// broker when both share a CPU (docs/benchmarks.md, "Session 16").
    fn block_on_direct<F: std::future::Future>(&self, future: F) -> F::Output {
        match self {
            Driver::Shared(handle) => handle.block_on(future),
            Driver::Own { runtime, .. } => runtime.block_on(future),
        }
    }
}

pub struct QuicLink {
    driver: Driver,
    print_stats: bool,
    id: u32,
    client: Client,
    /// Index: partition.
    streams: Vec<BatchProducer>,
    acknowledger: Acknowledger,
    acks: Acks,
}

impl QuicLink {
    pub fn open(
        target: &QuicTarget,
        spec: &ProducerSpec,
        acknowledger: Acknowledger,
    ) -> Result<Self> {
        let acks = Acks::from_i8(spec.acks as i8)
            .ok_or_else(|| anyhow!("acks {} (0, 1 or -1)", spec.acks))?;
        let own = match target.producer_runtime {
            ProducerRuntime::Own => true,
            ProducerRuntime::Shared => false,
            ProducerRuntime::Auto => spec.rate > 0.0,
        };
        let driver = if own {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the producer's tokio runtime")?;
            let timer = runtime.block_on(async { TimerFd::new() })?;
            Driver::Own {
                runtime,
                timer,
                acked: Arc::new(Notify::new()),
            }
        } else {
            Driver::Shared(target.runtime.clone())
        };
        let topic = &spec.topic.name;
        let (client, streams) = driver.block_on(async {
            let client = target.connect().await?;
            let mut streams = Vec::with_capacity(spec.topic.leaders.len());
            for partition in 0..spec.topic.leaders.len() as i32 {
                streams.push(
                    client
                        .batch_producer(topic, partition, acks)
                        .await
                        .with_context(|| format!("opening the stream of {topic}/{partition}"))?,
                );
            }
            anyhow::Ok((client, streams))
        })?;
        Ok(QuicLink {
            driver,
            print_stats: target.print_stats,
            id: spec.id,
            client,
            streams,
            acknowledger,
            acks,
        })
    }

    /// On the own runtime: drives it until `done` holds or `deadline_ns` passes (true if
    /// `done` held). Acknowledgement tasks signal `acked` after each answer.
    fn drive_until(&self, clock: &Clock, deadline_ns: u64, done: impl Fn() -> bool) -> bool {
        let Driver::Own {
            runtime,
            timer,
            acked,
        } = &self.driver
        else {
            unreachable!("drive_until is only called with an own runtime")
        };
        runtime.block_on(async {
            loop {
                if done() {
                    return true;
                }
                if clock.now_ns() >= deadline_ns {
                    return false;
                }
                tokio::select! {
                    _ = acked.notified() => {}
                    _ = timer.sleep_until(clock, deadline_ns) => {}
                }
            }
        })
    }
}

impl ProduceLink for QuicLink {
    fn write(&mut self, batches: RequestBatches, meta: RequestMeta) -> Result<()> {
        let streams = &self.streams;
        let acknowledgement = (self.acks != Acks::None).then(|| {
            let acknowledger = self.acknowledger.clone();
            let acked = match &self.driver {
                Driver::Own { acked, .. } => Some(acked.clone()),
                Driver::Shared(_) => None,
            };
            move |pending| wait_for_answers(pending, meta, acknowledger, acked)
        });
        self.driver.block_on_direct(async {
            let mut pending = Vec::with_capacity(batches.len());
            for (partition, records) in batches {
                let stream = streams
                    .get(partition as usize)
                    .with_context(|| format!("no stream for partition {partition}"))?;
                pending.push(
                    stream
                        .send(records)
                        .await
                        .with_context(|| format!("producing to partition {partition}"))?,
                );
            }
            // Spawned from inside the runtime: on the own runtime that queues the task
            // locally, where a spawn from outside would write the runtime's eventfd (and
            // the next wait would read it back), two syscalls per request.
            if let Some(acknowledgement) = acknowledgement {
                drop(tokio::spawn(acknowledgement(pending)));
            }
            anyhow::Ok(())
        })
    }

    fn close(&mut self) {
        self.streams.clear();
        let who = format!("producer {}", self.id);
        let (client, print_stats) = (&self.client, self.print_stats);
        self.driver.block_on(async {
            if print_stats {
                if let Some(stats) = client.path_stats().await {
                    eprintln!("quiver-perf: {who} QUIC path: {stats}");
                }
            }
            client.close();
        });
    }

    fn wait_below(&mut self, in_flight: &InFlight, max: u32, timeout: Duration) {
        if let Driver::Shared(_) = self.driver {
            return in_flight.wait_below(max, timeout);
        }
        let clock = self.acknowledger.clock;
        let deadline = clock.now_ns() + timeout.as_nanos() as u64;
        self.drive_until(&clock, deadline, || in_flight.current() < max);
    }

    fn wait_zero(&mut self, in_flight: &InFlight, timeout: Duration) -> bool {
        if let Driver::Shared(_) = self.driver {
            return in_flight.wait_zero(timeout);
        }
        let clock = self.acknowledger.clock;
        let deadline = clock.now_ns() + timeout.as_nanos() as u64;
        self.drive_until(&clock, deadline, || in_flight.current() == 0)
    }

    fn pace_until(&mut self, clock: &Clock, deadline_ns: u64) {
        let Driver::Own { runtime, .. } = &self.driver else {
            return clock.pace_until(deadline_ns);
        };
        // As the Kafka-TCP link's `pace_until`: sleep in `ppoll` on the socket until
        // `PACER_SPIN_NS` before the send time, running the runtime (the answer's
        // datagram, its acknowledgement) whenever something arrives, then spin, polling
        // the socket each turn. Waiting in tokio's `epoll_wait` on a pacing timerfd
        // instead let the scheduler move this thread off its shard's CPU about every
        // other request (docs/benchmarks.md, "Session 15"). quinn's own timers are served
        // at each wake-up: at most one send interval late.
        //
        // After a datagram, the runtime needs two turns: the first only learns from its
        // `epoll_wait` that the socket is readable (a `block_on` returns as soon as its
        // own future is ready, before the tasks that woke), the second runs the endpoint
        // and the tasks it wakes. One turn per wake-up left the datagram unread, so the
        // next `ppoll` returned at once: a system call more on every answer's path.
        let fd = self.client.udp_fd();
        let wake_at = deadline_ns.saturating_sub(PACER_SPIN_NS);
        let mut readable = false;
        loop {
            runtime.block_on(async {
                tokio::task::yield_now().await;
                if readable {
                    tokio::task::yield_now().await;
                }
            });
            let now = clock.now_ns();
            if now >= wake_at {
                break;
            }
            readable = poll_readable(fd, wake_at - now);
        }
        runtime.block_on(async {
            while clock.now_ns() < deadline_ns {
                tokio::task::yield_now().await;
            }
        })
    }

    fn sleep_until(&mut self, clock: &Clock, deadline_ns: u64) {
        let Driver::Own { runtime, timer, .. } = &self.driver else {
            return clock.sleep_until(deadline_ns);
        };
        runtime.block_on(timer.sleep_until(clock, deadline_ns))
    }
}

/// Waits for one request's answers (one per partition) and records its acknowledgement.
async fn wait_for_answers(
    pending: Vec<quiver_client::ProduceAck>,
    meta: RequestMeta,
    acknowledger: Acknowledger,
    acked: Option<Arc<Notify>>,
) {
    let answers = join_all(pending).await;
    let acked_ns = acknowledger.clock.now_ns();
    let mut transport_failed = false;
    for answer in answers {
        if let Err(error) = answer {
            transport_failed |= error.code().is_none();
            acknowledger.stats.error(format!("QUIC produce: {error}"));
        }
    }
    if transport_failed {
        // As over Kafka: a lost connection is not an acknowledgement.
        acknowledger.in_flight.release();
    } else {
        // Broker errors were reported; the request is answered either way.
        acknowledger.acknowledged(&meta, acked_ns);
    }
    if let Some(acked) = acked {
        acked.notify_one();
    }
}

/// A one-shot timerfd in the runtime's epoll set: tokio's own timers round up to whole
/// milliseconds, too coarse for a sender that sends every millisecond.
struct TimerFd {
    fd: AsyncFd<OwnedFd>,
}

impl TimerFd {
    /// Must run inside the runtime that will poll it.
    fn new() -> Result<TimerFd> {
        // SAFETY: timerfd_create takes no pointers; a non-negative result is a new
        // descriptor that we own from here on.
        let raw = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if raw < 0 {
            return Err(std::io::Error::last_os_error()).context("timerfd_create");
        }
        // SAFETY: `raw` is a fresh descriptor nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: the AsyncFd owns `fd`, so it stays open and the same descriptor for the
        // AsyncFd's whole life.
        let fd = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }
            .map_err(std::io::Error::from)
            .context("registering the timerfd")?;
        Ok(TimerFd { fd })
    }

    /// Sleeps until `deadline_ns` (a `clock` reading). Arming the timer resets its
    /// expiration count, so an earlier, abandoned sleep cannot end this one early.
    async fn sleep_until(&self, clock: &Clock, deadline_ns: u64) {
        let now = clock.now_ns();
        if deadline_ns <= now {
            return;
        }
        let wait = deadline_ns - now;
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: (wait / 1_000_000_000) as libc::time_t,
                tv_nsec: (wait % 1_000_000_000) as libc::c_long,
            },
        };
        // SAFETY: `spec` is a valid itimerspec; the old value is not asked for.
        let armed =
            unsafe { libc::timerfd_settime(self.fd.as_raw_fd(), 0, &spec, std::ptr::null_mut()) };
        if armed != 0 {
            // Cannot happen with a valid descriptor and value; fall back to tokio's timer.
            tokio::time::sleep(Duration::from_nanos(wait)).await;
            return;
        }
        loop {
            let Ok(mut ready) = self.fd.readable().await else {
                return;
            };
            let mut expirations = [0u8; 8];
            // SAFETY: reads at most 8 bytes into a local 8-byte buffer.
            let read = unsafe {
                libc::read(
                    self.fd.as_raw_fd(),
                    expirations.as_mut_ptr().cast(),
                    expirations.len(),
                )
            };
            // Consumed or not, the timer is not readable now: clearing the readiness
            // also spares the next sleep a `read` that could only say `EAGAIN`.
            ready.clear_ready();
            if read == expirations.len() as isize {
                return;
            }
            // Not yet (a stale readiness): wait for the edge.
        }
    }
}
