//! Child process of the crash test (`engine/tests/crash.rs`): opens (recovering) a
//! partition log and appends to it from several concurrent producers until it is
//! killed, printing `ACK <base_offset> <last_offset> <run> <producer> <sequence>` for
//! every append once it is committed. Not part of the broker.
//!
//! Usage: crash_child DIR RUN SEGMENT_BYTES PRODUCERS MAX_SECONDS [KILL_AFTER_ACKS]
//!
//! With KILL_AFTER_ACKS the child instead runs one producer that appends a lone batch at a
//! time with acks=1 (`AckLevel::Written`) whenever the log is idle, so each is answered
//! from the page cache, and sends itself SIGKILL right after printing the given number of
//! ACKs: before the direct-I/O write of the last one can have completed.
//!
//! Prints `READY <log_end_offset>` once the log is open. Stops by itself after
//! MAX_SECONDS so that a lost parent never leaves it running.

mod workload;

use std::io::Write;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

use glommio::LocalExecutorBuilder;
use quiver_engine::log::{AckLevel, AppendOutcome, LogConfig, PartitionLog};
use quiver_engine::runtime::prepare_io;
use quiver_engine::types::LeaderEpoch;
use workload::{Ack, BatchId};

/// Appends a producer keeps outstanding (offsets assigned, commit not yet seen).
const IN_FLIGHT_PER_PRODUCER: usize = 8;

fn say(line: &str) {
    // One write per line, flushed at once: the parent reads lines as they come, and a
    // kill must never leave an ACK in a buffer.
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn arg<T: std::str::FromStr>(args: &[String], i: usize, name: &str) -> T {
    args.get(i).and_then(|a| a.parse().ok()).unwrap_or_else(|| {
        eprintln!("usage: crash_child DIR RUN SEGMENT_BYTES PRODUCERS MAX_SECONDS (bad {name})");
        std::process::exit(64)
    })
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dir: PathBuf = arg(&args, 1, "DIR");
    let run: u64 = arg(&args, 2, "RUN");
    let segment_bytes: u64 = arg(&args, 3, "SEGMENT_BYTES");
    let producers: u32 = arg(&args, 4, "PRODUCERS");
    let max_seconds: u64 = arg(&args, 5, "MAX_SECONDS");
    let kill_after_acks: Option<u64> = (args.len() > 6).then(|| arg(&args, 6, "KILL_AFTER_ACKS"));
    let deadline = Instant::now() + Duration::from_secs(max_seconds);

    let result = LocalExecutorBuilder::default()
        .spawn(move || async move {
            prepare_io(&dir).await.expect("prepare_io");
            let config = LogConfig {
                segment_bytes,
                ..LogConfig::default()
            };
            let log = PartitionLog::open(&dir, config).await.expect("open log");
            say(&format!("READY {}", log.log_end_offset().0));
            if let Some(n) = kill_after_acks {
                lone_then_kill(log, run, n).await;
                return;
            }
            let tasks: Vec<_> = (0..producers)
                .map(|producer| {
                    let log = Rc::clone(&log);
                    glommio::spawn_local(produce(log, run, producer, deadline))
                })
                .collect();
            for t in tasks {
                t.await;
            }
        })
        .expect("spawn executor")
        .join();
    if result.is_err() {
        std::process::exit(70);
    }
}

/// Prints the ACK line of an acknowledged append; exits on a failed one.
fn report(id: BatchId, acked: quiver_engine::Result<AppendOutcome>) {
    match acked {
        Ok(outcome) => say(&Ack {
            base_offset: outcome.base_offset.0,
            last_offset: outcome.last_offset.0,
            id,
        }
        .line()),
        Err(e) => {
            eprintln!("append failed: {e}");
            std::process::exit(1);
        }
    }
}

async fn lone_then_kill(log: Rc<PartitionLog>, run: u64, acks: u64) {
    for sequence in 0..acks {
        let id = BatchId {
            run,
            producer: 0,
            sequence,
        };
        log.flushed().await;
        let acked = match log
            .append_chunks_for(&[id.batch()], LeaderEpoch(1), AckLevel::Written)
            .await
        {
            Ok(ticket) => ticket.written().await,
            Err(e) => Err(e),
        };
        report(id, acked);
    }
    // SAFETY: kill(2) with our own pid and a signal number touches no memory.
    unsafe {
        libc::kill(libc::getpid(), libc::SIGKILL);
    }
}

async fn produce(log: Rc<PartitionLog>, run: u64, producer: u32, deadline: Instant) {
    let mut in_flight = std::collections::VecDeque::new();
    let mut sequence = 0u64;
    while Instant::now() < deadline {
        let id = BatchId {
            run,
            producer,
            sequence,
        };
        sequence += 1;
        // Odd producers acknowledge on the write alone (acks=1, answered from the page
        // cache when the log allows it), even ones on the durability policy (acks=all):
        // a SIGKILL must lose neither.
        let acks_on_write = producer % 2 == 1;
        let level = if acks_on_write {
            AckLevel::Written
        } else {
            AckLevel::Committed
        };
        let ticket = match log
            .append_chunks_for(&[id.batch()], LeaderEpoch(1), level)
            .await
        {
            Ok(t) => t,
            Err(e) => {
                eprintln!("append failed: {e}");
                std::process::exit(1);
            }
        };
        in_flight.push_back(glommio::spawn_local(async move {
            let acked = if acks_on_write {
                ticket.written().await
            } else {
                ticket.committed().await
            };
            report(id, acked);
        }));
        if in_flight.len() >= IN_FLIGHT_PER_PRODUCER {
            if let Some(oldest) = in_flight.pop_front() {
                oldest.await;
            }
        }
    }
    for t in in_flight {
        t.await;
    }
}
