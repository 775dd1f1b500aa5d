//! quiver-perf: whole-system load generator and machine baseline for Quiver.
//!
//! Every figure it prints is meant to be read beside a limit measured the same way in the
//! same run (`baseline`, or the raw half of `engine`), because the machines we run on are
//! shared and noisy: ratios travel, absolute numbers do not.

mod baseline;
mod engine;
mod raw;
mod report;

use std::future::Future;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use clap::{Parser, Subcommand};
use glommio::{LocalExecutorBuilder, Placement};
use quiver_engine::limits::IO_MEMORY_BYTES_PER_SHARD;
use quiver_engine::runtime::{ensure_memlock, prepare_io, RuntimeConfig};

mod kafka;
mod plot;
mod quic;
mod workload;

#[derive(Debug, Parser)]
#[command(name = "quiver-perf", about = "Quiver performance tools", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Measure the machine's limits: O_DIRECT write bandwidth and write+fdatasync latency
    /// through glommio, loopback TCP and memcpy bandwidth.
    Baseline(baseline::BaselineArgs),
    /// Append to one PartitionLog with group commit, then do the same writes without the
    /// engine, and print both with their ratios.
    Engine(engine::EngineArgs),
    /// Run a workload file against a Kafka-protocol broker (Quiver, Apache Kafka, Redpanda).
    Kafka(Box<kafka::KafkaArgs>),
    /// Run a workload file against Quiver over its native QUIC protocol (quiver/1): the same
    /// workloads, measurements and result format as `kafka`.
    Quic(Box<quic::QuicArgs>),
    /// A Kafka-speaking discard server: measures the load generator's own ceiling.
    Sink(kafka::sink::SinkArgs),
    /// Print two or more results side by side (ratios to the first) and plot them together.
    Compare(kafka::compare::CompareArgs),
    /// Render a result's SVG plot again.
    Plot(kafka::compare::PlotArgs),
    /// A markdown table of results, medians over repetitions with the same label.
    Summary(kafka::compare::SummaryArgs),
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Baseline(args) => baseline::run(args),
        Command::Engine(args) => engine::run(args),
        Command::Kafka(args) => kafka::run(*args),
        Command::Quic(args) => quic::run(*args),
        Command::Sink(args) => kafka::sink::run(args),
        Command::Compare(args) => kafka::compare::compare(args),
        Command::Plot(args) => kafka::compare::plot(args),
        Command::Summary(args) => kafka::compare::summary(args),
    }
}

const TMPFS_MAGIC: i64 = 0x0102_1994;

/// Creates the data directory and refuses filesystems without O_DIRECT (tmpfs).
pub fn prepare_dir(dir: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let dir = std::fs::canonicalize(dir)?;
    let c_path = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())?;
    // SAFETY: statfs only writes into the zeroed struct we pass; the path is a valid
    // NUL-terminated string that outlives the call.
    let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c_path.as_ptr(), &mut stat) } != 0 {
        bail!(
            "statfs {}: {}",
            dir.display(),
            std::io::Error::last_os_error()
        );
    }
    if stat.f_type as i64 == TMPFS_MAGIC {
        bail!(
            "{} is on tmpfs, which has no O_DIRECT; pass --dir on ext4 or xfs (e.g. under ./target)",
            dir.display()
        );
    }
    Ok(dir)
}

/// Runs `work` on one glommio executor set up as a broker shard is (same registered I/O
/// memory), after the IOPOLL probe workaround, and returns its result.
pub fn on_executor<T, F, Fut>(dir: &Path, cpu: Option<usize>, work: F) -> Result<T>
where
    F: FnOnce(PathBuf) -> Fut + Send + 'static,
    Fut: Future<Output = Result<T>> + 'static,
    T: Send + 'static,
{
    let config = RuntimeConfig {
        cpus: vec![cpu.unwrap_or(0)],
        io_memory_bytes: IO_MEMORY_BYTES_PER_SHARD,
        spin_before_park: None,
    };
    ensure_memlock(&config)?;
    let placement = match cpu {
        Some(cpu) => Placement::Fixed(cpu),
        None => Placement::Unbound,
    };
    let dir = prepare_dir(dir)?;
    LocalExecutorBuilder::new(placement)
        .name("quiver-perf")
        .io_memory(config.io_memory_bytes)
        .spawn(move || async move {
            prepare_io(&dir).await?;
            work(dir).await
        })
        .map_err(|e| anyhow!("starting executor: {e}"))?
        .join()
        .map_err(|e| anyhow!("executor failed: {e}"))?
}

/// CPU time (user + system) consumed so far by the calling thread.
pub fn thread_cpu_time() -> std::time::Duration {
    // SAFETY: getrusage writes into the zeroed struct we pass and has no other effects.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) } != 0 {
        return std::time::Duration::ZERO;
    }
    let tv = |t: libc::timeval| {
        std::time::Duration::from_secs(t.tv_sec as u64)
            + std::time::Duration::from_micros(t.tv_usec as u64)
    };
    tv(usage.ru_utime) + tv(usage.ru_stime)
}
