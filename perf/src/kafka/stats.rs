//! Measurements shared between the generator's threads and the once-a-second collector.
//!
//! Each producer and consumer owns a [`WorkerStats`]: atomic counters and latency histograms
//! behind a mutex that the worker takes once per response (never per message), so recording
//! does not serialize workers. The collector drains every worker's interval histograms each
//! second into one interval summary (the time series) and, after warm-up, into the run's totals.
//! Latencies are recorded in nanoseconds.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Highest latency a histogram tracks (larger samples are clamped): 10 minutes.
pub const MAX_LATENCY_NS: u64 = 600_000_000_000;
/// Significant digits kept by every histogram (0.1% resolution).
pub const HISTOGRAM_SIGNIFICANT_DIGITS: u8 = 3;

pub fn new_histogram() -> Histogram<u64> {
    // Bounds are constants that hdrhistogram accepts (low >= 1, high >= 2 * low, sigfig <= 5).
    Histogram::new_with_bounds(1, MAX_LATENCY_NS, HISTOGRAM_SIGNIFICANT_DIGITS)
        .expect("constant histogram bounds are valid")
}

/// A monotonic clock whose readings are also comparable with Unix-epoch timestamps from other
/// threads or processes on the host: `now_ns()` is the wall time at start plus the monotonic
/// time since.
/// How long before a fixed-rate send time the sender stops sleeping and spins (see
/// [`Clock::pace_until`]).
pub const PACER_SPIN_NS: u64 = 100_000;

#[derive(Debug, Clone, Copy)]
pub struct Clock {
    start: Instant,
    start_unix_ns: u64,
}

impl Clock {
    pub fn new() -> Self {
        let start_unix_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        Self {
            start: Instant::now(),
            start_unix_ns,
        }
    }

    /// Nanoseconds since the Unix epoch, monotonic within this process.
    pub fn now_ns(&self) -> u64 {
        self.start_unix_ns + self.start.elapsed().as_nanos() as u64
    }

    /// Sleeps until `deadline_ns` (a `now_ns` reading); returns at once if it has passed.
    pub fn sleep_until(&self, deadline_ns: u64) {
        let now = self.now_ns();
        if deadline_ns > now {
            std::thread::sleep(Duration::from_nanos(deadline_ns - now));
        }
    }

    /// [`sleep_until`](Self::sleep_until) for a fixed-rate sender: sleeps until
    /// `PACER_SPIN_NS` before the deadline, then spins to it. A sleeping thread on this
    /// kind of VM wakes 30-40 µs late at the median (the timer, then the vCPU), which
    /// coordinated-omission correction would report as broker latency; the spin costs
    /// at most `PACER_SPIN_NS` of CPU per message sent.
    pub fn pace_until(&self, deadline_ns: u64) {
        let now = self.now_ns();
        if deadline_ns > now + PACER_SPIN_NS {
            std::thread::sleep(Duration::from_nanos(deadline_ns - now - PACER_SPIN_NS));
        }
        while self.now_ns() < deadline_ns {
            std::hint::spin_loop();
        }
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

/// Lowers this thread's timer slack to 1 ns, so a fixed-rate sender wakes when it asked to
/// rather than up to 50 us later (Linux's default slack), which would otherwise show up as
/// latency under coordinated-omission correction.
pub fn tighten_timer_slack() {
    // SAFETY: PR_SET_TIMERSLACK takes an unsigned long by value and touches no memory.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0);
    }
}

/// Histograms a worker fills between two collector ticks.
pub struct IntervalHistograms {
    /// Produce: intended send time to acknowledgement (corrected for coordinated omission).
    pub publish: Histogram<u64>,
    /// Produce: request written to acknowledgement (what an uncorrected tool reports).
    pub publish_service: Histogram<u64>,
    /// Produce: how late the sender wrote a message after its intended time.
    pub send_delay: Histogram<u64>,
    /// Consume: embedded send time to receipt by the consumer.
    pub end_to_end: Histogram<u64>,
}

impl IntervalHistograms {
    fn new() -> Self {
        Self {
            publish: new_histogram(),
            publish_service: new_histogram(),
            send_delay: new_histogram(),
            end_to_end: new_histogram(),
        }
    }

    fn drain_into(&mut self, other: &mut IntervalHistograms) {
        // Same bounds everywhere, so `add` cannot fail.
        for (from, to) in [
            (&mut self.publish, &mut other.publish),
            (&mut self.publish_service, &mut other.publish_service),
            (&mut self.send_delay, &mut other.send_delay),
            (&mut self.end_to_end, &mut other.end_to_end),
        ] {
            to.add(&*from).expect("histograms share bounds");
            from.reset();
        }
    }
}

/// Records a latency, clamping to the histogram's range.
pub fn record(histogram: &mut Histogram<u64>, value_ns: u64) {
    histogram.saturating_record(value_ns.clamp(1, MAX_LATENCY_NS));
}

#[derive(Default)]
pub struct Counters {
    pub sent_messages: AtomicU64,
    pub sent_bytes: AtomicU64,
    pub acked_messages: AtomicU64,
    pub acked_bytes: AtomicU64,
    pub consumed_messages: AtomicU64,
    pub consumed_bytes: AtomicU64,
    pub errors: AtomicU64,
}

#[derive(Debug, Default, Clone, Copy, Serialize, Deserialize)]
pub struct CounterSnapshot {
    pub sent_messages: u64,
    pub sent_bytes: u64,
    pub acked_messages: u64,
    pub acked_bytes: u64,
    pub consumed_messages: u64,
    pub consumed_bytes: u64,
    pub errors: u64,
}

impl CounterSnapshot {
    pub fn minus(&self, earlier: &CounterSnapshot) -> CounterSnapshot {
        CounterSnapshot {
            sent_messages: self.sent_messages - earlier.sent_messages,
            sent_bytes: self.sent_bytes - earlier.sent_bytes,
            acked_messages: self.acked_messages - earlier.acked_messages,
            acked_bytes: self.acked_bytes - earlier.acked_bytes,
            consumed_messages: self.consumed_messages - earlier.consumed_messages,
            consumed_bytes: self.consumed_bytes - earlier.consumed_bytes,
            errors: self.errors - earlier.errors,
        }
    }

    fn add(&mut self, other: &CounterSnapshot) {
        self.sent_messages += other.sent_messages;
        self.sent_bytes += other.sent_bytes;
        self.acked_messages += other.acked_messages;
        self.acked_bytes += other.acked_bytes;
        self.consumed_messages += other.consumed_messages;
        self.consumed_bytes += other.consumed_bytes;
        self.errors += other.errors;
    }
}

pub struct WorkerStats {
    pub counters: Counters,
    pub histograms: Mutex<IntervalHistograms>,
    /// First error message seen, for the report.
    pub first_error: Mutex<Option<String>>,
}

impl WorkerStats {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            counters: Counters::default(),
            histograms: Mutex::new(IntervalHistograms::new()),
            first_error: Mutex::new(None),
        })
    }

    pub fn add(counter: &AtomicU64, value: u64) {
        counter.fetch_add(value, Ordering::Relaxed);
    }

    pub fn error(&self, message: String) {
        self.counters.errors.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first_error.lock().unwrap_or_else(|e| e.into_inner());
        if first.is_none() {
            eprintln!("quiver-perf: {message}");
            *first = Some(message);
        }
    }

    fn snapshot(&self) -> CounterSnapshot {
        let c = &self.counters;
        CounterSnapshot {
            sent_messages: c.sent_messages.load(Ordering::Relaxed),
            sent_bytes: c.sent_bytes.load(Ordering::Relaxed),
            acked_messages: c.acked_messages.load(Ordering::Relaxed),
            acked_bytes: c.acked_bytes.load(Ordering::Relaxed),
            consumed_messages: c.consumed_messages.load(Ordering::Relaxed),
            consumed_bytes: c.consumed_bytes.load(Ordering::Relaxed),
            errors: c.errors.load(Ordering::Relaxed),
        }
    }
}

/// Every worker's stats, registered before the run starts.
#[derive(Default, Clone)]
pub struct Registry {
    workers: Arc<Mutex<Vec<Arc<WorkerStats>>>>,
}

impl Registry {
    pub fn worker(&self) -> Arc<WorkerStats> {
        let stats = WorkerStats::new();
        self.workers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(stats.clone());
        stats
    }

    /// Sum of all counters now.
    pub fn snapshot(&self) -> CounterSnapshot {
        let mut total = CounterSnapshot::default();
        for worker in self
            .workers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            total.add(&worker.snapshot());
        }
        total
    }

    /// Moves every worker's interval histograms into `into` and resets them.
    pub fn drain(&self, into: &mut IntervalHistograms) {
        for worker in self
            .workers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let mut histograms = worker.histograms.lock().unwrap_or_else(|e| e.into_inner());
            histograms.drain_into(into);
        }
    }

    pub fn first_error(&self) -> Option<String> {
        self.workers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find_map(|w| {
                w.first_error
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone()
            })
    }
}

/// Latency percentiles in microseconds.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Percentiles {
    pub count: u64,
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub p9999: f64,
    pub max: f64,
}

pub fn percentiles(histogram: &Histogram<u64>) -> Percentiles {
    if histogram.is_empty() {
        return Percentiles::default();
    }
    let us = |ns: u64| ns as f64 / 1_000.0;
    Percentiles {
        count: histogram.len(),
        mean: histogram.mean() / 1_000.0,
        p50: us(histogram.value_at_quantile(0.50)),
        p90: us(histogram.value_at_quantile(0.90)),
        p99: us(histogram.value_at_quantile(0.99)),
        p999: us(histogram.value_at_quantile(0.999)),
        p9999: us(histogram.value_at_quantile(0.9999)),
        max: us(histogram.max()),
    }
}

/// The percentile spectrum: (percentile, microseconds) at HdrHistogram's usual log steps,
/// up to the max, for plotting.
pub fn spectrum(histogram: &Histogram<u64>) -> Vec<(f64, f64)> {
    if histogram.is_empty() {
        return Vec::new();
    }
    let mut points = Vec::new();
    for step in histogram.iter_quantiles(2) {
        let quantile = step.quantile_iterated_to();
        points.push((quantile * 100.0, step.value_iterated_to() as f64 / 1_000.0));
        if quantile >= 1.0 {
            break;
        }
    }
    points
}

pub fn new_intervals() -> IntervalHistograms {
    IntervalHistograms::new()
}
