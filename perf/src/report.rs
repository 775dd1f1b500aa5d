//! Measurement records shared by every subcommand: latency summaries from HdrHistograms,
//! bandwidth figures, the machine description, and plain-text tables.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Latencies are recorded in nanoseconds, from 1 ns to one minute, 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    // The bounds are constants that satisfy HdrHistogram's rules (low >= 1,
    // high >= 2 * low, sigfig <= 5), so construction cannot fail.
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("constant histogram bounds are valid")
}

pub fn record(histogram: &mut Histogram<u64>, elapsed: Duration) {
    histogram.saturating_record(elapsed.as_nanos().min(u64::MAX as u128) as u64);
}

/// p50/p99/p99.9/max of one latency distribution, in microseconds.
#[derive(Debug, Clone, Serialize)]
pub struct LatencySummary {
    pub count: u64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    pub mean_us: f64,
}

impl LatencySummary {
    pub fn from_histogram(histogram: &Histogram<u64>) -> Self {
        let us = |ns: u64| ns as f64 / 1_000.0;
        LatencySummary {
            count: histogram.len(),
            p50_us: us(histogram.value_at_quantile(0.50)),
            p99_us: us(histogram.value_at_quantile(0.99)),
            p999_us: us(histogram.value_at_quantile(0.999)),
            max_us: us(histogram.max()),
            mean_us: histogram.mean() / 1_000.0,
        }
    }

    pub fn row(&self, name: &str) -> String {
        format!(
            "{name:<52} {:>9.1} {:>9.1} {:>9.1} {:>9.1}  (n={})",
            self.p50_us, self.p99_us, self.p999_us, self.max_us, self.count
        )
    }

    pub fn header() -> String {
        format!(
            "{:<52} {:>9} {:>9} {:>9} {:>9}",
            "latency (us)", "p50", "p99", "p99.9", "max"
        )
    }
}

/// Bytes moved over wall-clock time.
#[derive(Debug, Clone, Serialize)]
pub struct Bandwidth {
    pub bytes: u64,
    pub seconds: f64,
    /// Decimal megabytes (10^6 bytes) per second, as fio and Kafka tools print.
    pub mb_per_s: f64,
}

impl Bandwidth {
    pub fn new(bytes: u64, elapsed: Duration) -> Self {
        let seconds = elapsed.as_secs_f64().max(1e-9);
        Bandwidth {
            bytes,
            seconds,
            mb_per_s: bytes as f64 / seconds / 1e6,
        }
    }

    pub fn row(&self, name: &str) -> String {
        format!(
            "{name:<52} {:>10.1} MB/s  ({} MiB in {:.3} s)",
            self.mb_per_s,
            self.bytes >> 20,
            self.seconds
        )
    }
}

/// What the numbers were measured on.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub nproc: usize,
    pub kernel: String,
    pub cpu_model: String,
    pub data_dir: String,
    pub filesystem: String,
    pub device: String,
}

impl Machine {
    pub fn describe(data_dir: &std::path::Path) -> Machine {
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "unknown".into());
        let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.trim().to_string())
            })
            .unwrap_or_else(|| "unknown".into());
        let (device, filesystem) = mount_of(data_dir);
        Machine {
            nproc: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            kernel,
            cpu_model,
            data_dir: data_dir.display().to_string(),
            filesystem,
            device,
        }
    }

    pub fn print(&self) {
        println!(
            "machine: {} cpus ({}), kernel {}, data dir {} on {} ({})",
            self.nproc, self.cpu_model, self.kernel, self.data_dir, self.filesystem, self.device
        );
    }
}

/// The device and filesystem type of the longest mount point containing `path`.
fn mount_of(path: &std::path::Path) -> (String, String) {
    let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let mut best: Option<(usize, String, String)> = None;
    for line in mounts.lines() {
        let mut fields = line.split_whitespace();
        let (Some(device), Some(mount_point), Some(fs_type)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        if path.starts_with(mount_point) && best.as_ref().is_none_or(|b| mount_point.len() > b.0) {
            best = Some((mount_point.len(), device.to_string(), fs_type.to_string()));
        }
    }
    best.map(|(_, d, f)| (d, f))
        .unwrap_or_else(|| ("unknown".into(), "unknown".into()))
}

pub fn ratio(numerator: f64, denominator: f64) -> f64 {
    if denominator > 0.0 {
        numerator / denominator
    } else {
        f64::NAN
    }
}
