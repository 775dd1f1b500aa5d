//! The JSON result of one run: workload, protocol, broker address, machine, git revision,
//! summary figures, the per-second series and the percentile spectra. `compare` and `plot`
//! read it back.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::stats::{CounterSnapshot, Percentiles};
use crate::workload::Workload;

/// Bumped when fields change meaning; readers refuse other versions.
pub const RESULT_FORMAT_VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunResult {
    pub format_version: u32,
    pub tool: String,
    /// A short name for plots and tables (default: the workload name).
    pub label: String,
    pub workload: Workload,
    /// The protocol the generator spoke (results from before QUIC support are Kafka's).
    #[serde(default)]
    pub protocol: Protocol,
    /// The address the run was pointed at: Kafka bootstrap broker or QUIC listener.
    pub bootstrap: String,
    /// How this run departs from what the workload file asks (e.g. QUIC has no group
    /// membership), for readers of the result.
    #[serde(default)]
    pub notes: Vec<String>,
    pub machine: Machine,
    pub git_revision: String,
    pub started_unix_s: u64,
    /// Seconds of the measured phase (after warm-up).
    pub measured_s: f64,
    pub publish: Throughput,
    pub consume: Throughput,
    /// Intended send time to acknowledgement, µs (corrected for coordinated omission).
    pub publish_latency_us: Percentiles,
    /// Request written to acknowledgement, µs (uncorrected; what most tools report).
    pub publish_service_latency_us: Percentiles,
    /// How late the generator wrote messages after their intended time, µs: its own lag.
    pub send_delay_us: Percentiles,
    /// Embedded send time to consumer receipt, µs.
    pub end_to_end_latency_us: Percentiles,
    pub errors: u64,
    pub first_error: Option<String>,
    /// CPU seconds (user + system) the generator used in the measured phase: with the
    /// throughput, its cost per GB, which the machine's load does not change much.
    #[serde(default)]
    pub generator_cpu_s: f64,
    /// The same for the broker process given with `--broker-pid` (same host only).
    #[serde(default)]
    pub broker_cpu_s: Option<f64>,
    /// /proc/loadavg (1 minute) at the start and end of the run: other work on the machine.
    #[serde(default)]
    pub load_average: (f64, f64),
    pub series: Vec<SeriesPoint>,
    pub publish_spectrum: Vec<(f64, f64)>,
    pub end_to_end_spectrum: Vec<(f64, f64)>,
    /// The machine's limits from the same run (`quiver-perf baseline --json`, passed with
    /// `--baseline-json`): the hook the baseline subcommand plugs into.
    pub machine_baseline: Option<serde_json::Value>,
}

/// The wire protocol of a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// The Kafka protocol over TCP.
    #[default]
    Kafka,
    /// Quiver's `quiver/1` over QUIC.
    Quic,
}

impl Protocol {
    /// The name in labels, tables and plots.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Kafka => "kafka-tcp",
            Protocol::Quic => "quic",
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Throughput {
    pub messages: u64,
    pub bytes: u64,
    pub messages_per_s: f64,
    /// 10^6 bytes of message values per second.
    pub mb_per_s: f64,
}

impl Throughput {
    pub fn new(messages: u64, bytes: u64, seconds: f64) -> Self {
        let seconds = seconds.max(1e-9);
        Self {
            messages,
            bytes,
            messages_per_s: messages as f64 / seconds,
            mb_per_s: bytes as f64 / seconds / 1e6,
        }
    }
}

/// One second of the run. Latencies are for the messages acknowledged (or received) in it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SeriesPoint {
    /// Seconds since the producers started (warm-up included).
    pub t_s: f64,
    pub warmup: bool,
    pub publish_messages_per_s: f64,
    pub publish_mb_per_s: f64,
    pub consume_messages_per_s: f64,
    pub consume_mb_per_s: f64,
    pub publish_p50_us: f64,
    pub publish_p99_us: f64,
    pub publish_max_us: f64,
    pub end_to_end_p50_us: f64,
    pub end_to_end_p99_us: f64,
    pub end_to_end_max_us: f64,
    pub backlog_messages: i64,
    pub counters: CounterSnapshot,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Machine {
    pub cores: usize,
    pub kernel: String,
    pub cpu_model: String,
    pub memory_gib: f64,
    pub hostname: String,
}

impl Machine {
    pub fn probe() -> Self {
        let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
        let cpu_model = read("/proc/cpuinfo")
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split(':').nth(1))
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|| "unknown".into());
        let memory_kib: f64 = read("/proc/meminfo")
            .lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        Self {
            cores: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(0),
            kernel: read("/proc/sys/kernel/osrelease").trim().to_string(),
            cpu_model,
            memory_gib: (memory_kib / 1024.0 / 1024.0 * 10.0).round() / 10.0,
            hostname: read("/proc/sys/kernel/hostname").trim().to_string(),
        }
    }
}

/// CPU seconds (user + system) process `pid` has used so far ("self" for this process).
pub fn process_cpu_s(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no memory effects.
    let ticks_per_s = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some((utime + stime) / ticks_per_s.max(1.0))
}

pub fn load_average_1m() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0.0)
}

/// `git rev-parse HEAD` of the working directory, with "-dirty" when there are changes.
pub fn git_revision() -> String {
    let run = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    match run(&["rev-parse", "HEAD"]) {
        Some(revision) => {
            let dirty = run(&["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|s| !s.is_empty());
            if dirty {
                format!("{revision}-dirty")
            } else {
                revision
            }
        }
        None => "unknown".into(),
    }
}

impl RunResult {
    pub fn load(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let result: RunResult =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        anyhow::ensure!(
            result.format_version == RESULT_FORMAT_VERSION,
            "{}: result format {} (this tool reads {})",
            path.display(),
            result.format_version,
            RESULT_FORMAT_VERSION
        );
        Ok(result)
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(path, serde_json::to_string_pretty(self)? + "\n")
            .with_context(|| format!("writing {}", path.display()))
    }

    /// The summary as kafka-producer-perf-test and OMB print it, for terminals and docs.
    pub fn summary_lines(&self) -> Vec<String> {
        let p = &self.publish_latency_us;
        let s = &self.publish_service_latency_us;
        let e = &self.end_to_end_latency_us;
        let mut lines = vec![
            format!(
                "{}: {} against {} over {} for {:.1} s",
                self.label,
                self.workload.name,
                self.bootstrap,
                self.protocol.name(),
                self.measured_s
            ),
            format!(
                "  publish   {:>12.0} msg/s {:>9.1} MB/s  ({} messages)",
                self.publish.messages_per_s, self.publish.mb_per_s, self.publish.messages
            ),
            format!(
                "  consume   {:>12.0} msg/s {:>9.1} MB/s  ({} messages)",
                self.consume.messages_per_s, self.consume.mb_per_s, self.consume.messages
            ),
        ];
        for (name, l) in [("publish", p), ("  service", s), ("end2end", e)] {
            if l.count > 0 {
                lines.push(format!(
                    "  {name:<9} latency µs: p50 {:.0}  p90 {:.0}  p99 {:.0}  p99.9 {:.0}  p99.99 {:.0}  max {:.0}  (mean {:.0})",
                    l.p50, l.p90, l.p99, l.p999, l.p9999, l.max, l.mean
                ));
            }
        }
        if self.send_delay_us.count > 0 {
            lines.push(format!(
                "  generator send delay µs: p50 {:.0}  p99 {:.0}  max {:.0}",
                self.send_delay_us.p50, self.send_delay_us.p99, self.send_delay_us.max
            ));
        }
        let gigabytes = (self.publish.bytes.max(self.consume.bytes) as f64 / 1e9).max(1e-9);
        let mut cpu = format!(
            "  cpu: generator {:.2} s ({:.2} s/GB)",
            self.generator_cpu_s,
            self.generator_cpu_s / gigabytes
        );
        if let Some(broker) = self.broker_cpu_s {
            cpu.push_str(&format!(
                ", broker {broker:.2} s ({:.2} s/GB)",
                broker / gigabytes
            ));
        }
        cpu.push_str(&format!(
            "; load average {:.1} -> {:.1}",
            self.load_average.0, self.load_average.1
        ));
        lines.push(cpu);
        for note in &self.notes {
            lines.push(format!("  note: {note}"));
        }
        if self.errors > 0 {
            lines.push(format!(
                "  errors: {} (first: {})",
                self.errors,
                self.first_error.as_deref().unwrap_or("?")
            ));
        }
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_from_before_quic_read_as_kafka() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/bench/omb-classic.json");
        let result = RunResult::load(&path).unwrap();
        assert_eq!(result.protocol, Protocol::Kafka);
        assert!(result.notes.is_empty());
        let text = serde_json::to_string(&RunResult {
            protocol: Protocol::Quic,
            ..result
        })
        .unwrap();
        assert!(text.contains(r#""protocol":"quic""#));
    }
}
