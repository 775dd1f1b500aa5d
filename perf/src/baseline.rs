//! `quiver-perf baseline`: the machine's limits, measured the same way every time, so
//! every other figure can be quoted as a ratio to them.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::Serialize;

use crate::raw::{self, SyncMode};
use crate::report::{Bandwidth, LatencySummary, Machine};

#[derive(Debug, clap::Args)]
pub struct BaselineArgs {
    /// Data directory on the filesystem under test (ext4; not tmpfs, which has no O_DIRECT).
    #[arg(long, default_value = "target/quiver-perf")]
    pub dir: PathBuf,
    /// Bytes written by each sequential-write bandwidth run.
    #[arg(long, default_value_t = 2 << 30)]
    pub write_bytes: u64,
    /// Block size of the sequential writes.
    #[arg(long, default_value_t = 1 << 20)]
    pub block_bytes: usize,
    /// O_DIRECT writes in flight.
    #[arg(long, default_value_t = 16)]
    pub queue_depth: usize,
    /// Bytes between fdatasyncs in the periodic-sync run.
    #[arg(long, default_value_t = 16 << 20)]
    pub sync_every_bytes: u64,
    /// Iterations of each write+fdatasync latency run.
    #[arg(long, default_value_t = 2000)]
    pub sync_iterations: u64,
    /// How long the loopback TCP sender runs.
    #[arg(long, default_value_t = 2.0)]
    pub tcp_seconds: f64,
    /// Size of each memcpy buffer.
    #[arg(long, default_value_t = 256 << 20)]
    pub memcpy_bytes: usize,
    /// Copies timed in the memcpy run (the median is reported).
    #[arg(long, default_value_t = 5)]
    pub memcpy_repeats: usize,
    /// Pin the executor to this CPU (default: unbound, better on a shared machine).
    #[arg(long)]
    pub cpu: Option<usize>,
    /// Also print the results as one JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
pub struct DiskBaseline {
    pub block_bytes: usize,
    pub queue_depth: usize,
    pub write_no_sync: Bandwidth,
    pub write_final_fdatasync: Bandwidth,
    pub write_periodic_fdatasync: Bandwidth,
    pub sync_every_bytes: u64,
    pub write_fdatasync_4k: LatencySummary,
    pub write_fdatasync_16k: LatencySummary,
}

#[derive(Debug, Serialize)]
pub struct BaselineReport {
    pub machine: Machine,
    pub disk: DiskBaseline,
    pub loopback_tcp: Bandwidth,
    pub memcpy: Bandwidth,
}

pub fn run(args: BaselineArgs) -> Result<()> {
    let machine = Machine::describe(&crate::prepare_dir(&args.dir)?);
    let dir = args.dir.clone();
    let (block, qd, total, every, iterations) = (
        args.block_bytes,
        args.queue_depth,
        args.write_bytes,
        args.sync_every_bytes,
        args.sync_iterations,
    );
    let disk = crate::on_executor(&dir, args.cpu, move |dir| async move {
        let write_no_sync = raw::sequential_write(&dir, total, block, qd, SyncMode::None).await?;
        let write_final_fdatasync =
            raw::sequential_write(&dir, total, block, qd, SyncMode::Final).await?;
        let write_periodic_fdatasync =
            raw::sequential_write(&dir, total, block, qd, SyncMode::Every { bytes: every }).await?;
        let write_fdatasync_4k = raw::write_fdatasync_latency(&dir, 4096, iterations).await?;
        let write_fdatasync_16k = raw::write_fdatasync_latency(&dir, 16384, iterations).await?;
        Ok(DiskBaseline {
            block_bytes: block,
            queue_depth: qd,
            write_no_sync,
            write_final_fdatasync,
            write_periodic_fdatasync,
            sync_every_bytes: every,
            write_fdatasync_4k,
            write_fdatasync_16k,
        })
    })?;
    let loopback_tcp = loopback_tcp(Duration::from_secs_f64(args.tcp_seconds))?;
    let memcpy = memcpy(args.memcpy_bytes, args.memcpy_repeats);
    let report = BaselineReport {
        machine,
        disk,
        loopback_tcp,
        memcpy,
    };
    print_table(&report);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(())
}

fn print_table(r: &BaselineReport) {
    r.machine.print();
    let d = &r.disk;
    let what = format!("{} KiB blocks, qd{}", d.block_bytes >> 10, d.queue_depth);
    println!();
    println!(
        "{}",
        d.write_no_sync
            .row(&format!("O_DIRECT seq write, {what}, no sync"))
    );
    println!(
        "{}",
        d.write_final_fdatasync
            .row(&format!("O_DIRECT seq write, {what}, final fdatasync"))
    );
    println!(
        "{}",
        d.write_periodic_fdatasync.row(&format!(
            "O_DIRECT seq write, {what}, fdatasync/{} MiB",
            d.sync_every_bytes >> 20
        ))
    );
    println!("{}", r.loopback_tcp.row("loopback TCP, one stream"));
    println!("{}", r.memcpy.row("memcpy, 256 MiB buffers"));
    println!();
    println!("{}", LatencySummary::header());
    println!(
        "{}",
        d.write_fdatasync_4k.row("O_DIRECT 4 KiB write + fdatasync")
    );
    println!(
        "{}",
        d.write_fdatasync_16k
            .row("O_DIRECT 16 KiB write + fdatasync")
    );
}

/// One std::net stream over 127.0.0.1: a sender thread writes 1 MiB chunks for
/// `duration`, the receiver counts bytes until EOF. Bounded in time, loopback only.
fn loopback_tcp(duration: Duration) -> Result<Bandwidth> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding loopback listener")?;
    let addr = listener.local_addr()?;
    let receiver = std::thread::spawn(move || -> std::io::Result<(u64, Duration)> {
        let (mut stream, _) = listener.accept()?;
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0u64;
        let mut first: Option<Instant> = None;
        loop {
            let n = stream.read(&mut buf)?;
            if n == 0 {
                break;
            }
            first.get_or_insert_with(Instant::now);
            total += n as u64;
        }
        Ok((total, first.map(|f| f.elapsed()).unwrap_or_default()))
    });
    let mut stream = TcpStream::connect(addr).context("connecting over loopback")?;
    stream.set_nodelay(true)?;
    let chunk = vec![0x5au8; 1 << 20];
    let start = Instant::now();
    while start.elapsed() < duration {
        stream.write_all(&chunk)?;
    }
    stream.shutdown(std::net::Shutdown::Write)?;
    drop(stream);
    let (bytes, elapsed) = receiver
        .join()
        .map_err(|_| anyhow::anyhow!("loopback receiver panicked"))??;
    Ok(Bandwidth::new(bytes, elapsed))
}

/// Copies one `bytes`-sized buffer into another `repeats` times (both pre-faulted) and
/// reports the median copy.
fn memcpy(bytes: usize, repeats: usize) -> Bandwidth {
    let src = vec![0xa5u8; bytes];
    let mut dst = vec![0u8; bytes];
    dst.copy_from_slice(&src); // fault in the destination pages
    let mut times: Vec<Duration> = (0..repeats.max(1))
        .map(|_| {
            let start = Instant::now();
            dst.copy_from_slice(std::hint::black_box(&src));
            std::hint::black_box(&mut dst);
            start.elapsed()
        })
        .collect();
    times.sort();
    Bandwidth::new(bytes as u64, times[times.len() / 2])
}
