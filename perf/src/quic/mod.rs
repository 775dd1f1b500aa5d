//! `quiver-perf quic`: the workload driver of `quiver-perf kafka`, speaking Quiver's native
//! `quiver/1` over QUIC through the `quiver-client` crate instead of the Kafka protocol.
//!
//! What stays the same: workload files, rate control (coordinated-omission corrected),
//! batching and in-flight bounds, the histograms, progress line and JSON result; only the
//! [`Transport`] differs. What QUIC changes: each producer and each consumer has one QUIC
//! connection of its own (TLS 1.3, verified against `--ca-file`), a producer writes each
//! partition's batches as PRODUCE frames on a long-lived stream per partition
//! (`BatchProducer`: the generator's pre-built RecordBatch bytes go out without a copy), and
//! a consumer subscribes to each of its partitions on a stream of its own
//! (`BatchSubscription`: the broker pushes, the consumer walks the batches undecoded). The
//! protocol has group offsets but no group membership, so a subscription's consumers take
//! fixed round-robin shares of the partitions (the result says so in its notes).
//!
//! The client is async (tokio); the generator's threads reach it through one multi-threaded
//! runtime per run (`--quic-threads` workers), which also runs quinn's connection tasks
//! (packet assembly, encryption) and the tasks that account acknowledgements and pushes.

pub mod consumer;
pub mod producer;

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use quiver_client::{Client, ClientConfig, ErrorCode};
use quiver_protocol::limits::MAX_STREAMS_PER_CONNECTION;

use crate::kafka::cluster::TopicLayout;
use crate::kafka::{run_with, RunArgs, Transport};

#[derive(Debug, Args)]
pub struct QuicArgs {
    /// The broker's QUIC listener (`quiver serve --quic-listen`).
    #[arg(long, default_value = quiver_client::DEFAULT_LOCAL_ADDRESS)]
    pub quic_addr: String,
    /// PEM CA bundle to verify the broker with; for a development broker its own
    /// certificate, `<data-dir>/tls/cert.pem`.
    #[arg(long, conflicts_with = "insecure")]
    pub ca_file: Option<PathBuf>,
    /// Do not verify the broker's certificate (traffic is still encrypted).
    #[arg(long)]
    pub insecure: bool,
    /// Name the broker's certificate must be valid for (default: the address's host).
    #[arg(long)]
    pub server_name: Option<String>,
    /// Worker threads of the shared tokio runtime that drives the consumers' QUIC
    /// connections, and the producers' with `--quic-producer-runtime shared` (default: one
    /// per core).
    #[arg(long)]
    pub quic_threads: Option<usize>,
    /// Where a producer's connection runs: `own` (a current-thread runtime on the
    /// producer's own thread, driven while it waits: no thread hop per request),
    /// `shared` (the shared runtime's workers, which encrypt and send in parallel with
    /// the producer building batches), or `auto`: `own` for fixed-rate producers
    /// (latency workloads), `shared` for max-rate ones (measured: 0.77x the throughput
    /// with `own`, the producer thread then also encrypting).
    #[arg(long, value_enum, default_value_t = ProducerRuntime::Auto)]
    pub quic_producer_runtime: ProducerRuntime,
    /// Print each connection's QUIC path statistics (RTT, congestion window, losses,
    /// congestion events, MTU) when it closes: for tuning.
    #[arg(long)]
    pub quic_stats: bool,
    #[command(flatten)]
    pub run: RunArgs,
}

/// `--quic-producer-runtime`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProducerRuntime {
    Auto,
    Own,
    Shared,
}

/// How to reach the broker over QUIC, and the runtime that drives the connections.
#[derive(Clone)]
pub struct QuicTarget {
    pub config: ClientConfig,
    /// The shared runtime: consumers, admin, and producers unless they run their own.
    pub runtime: tokio::runtime::Handle,
    /// Where producers drive their connections (`producer::QuicLink`).
    pub producer_runtime: ProducerRuntime,
    /// Print path statistics when a connection closes (`--quic-stats`).
    pub print_stats: bool,
}

impl QuicTarget {
    /// A new connection (one per producer and consumer, as a Kafka client has its own).
    pub async fn connect(&self) -> Result<Client> {
        Client::connect(self.config.clone())
            .await
            .with_context(|| format!("connecting over QUIC to {}", self.config.address))
    }

    /// Closes `client`, first printing its path statistics when asked to.
    pub async fn close(&self, client: &Client, who: &str) {
        if self.print_stats {
            if let Some(stats) = client.path_stats().await {
                eprintln!("quiver-perf: {who} QUIC path: {stats}");
            }
        }
        client.close();
    }
}

pub fn run(args: QuicArgs) -> Result<()> {
    let mut config = ClientConfig::new(args.quic_addr.clone());
    match (&args.ca_file, args.insecure) {
        (Some(ca_file), _) => config = config.ca_file(ca_file),
        (None, true) => config = config.insecure(),
        (None, false) => bail!(
            "give --ca-file (for a development broker: <data-dir>/tls/cert.pem) or --insecure"
        ),
    }
    if let Some(name) = &args.server_name {
        config = config.server_name(name);
    }
    let threads = args.quic_threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .thread_name("quic-client")
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let transport = Transport::Quic(QuicTarget {
        config,
        runtime: runtime.handle().clone(),
        producer_runtime: args.quic_producer_runtime,
        print_stats: args.quic_stats,
    });
    let result = run_with(&args.run, &transport);
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    result
}

/// Partitions one producer or consumer can hold streams for on its connection: one stream each,
/// plus the control stream (admin, offset commits).
pub const MAX_PARTITIONS_PER_CONNECTION: u32 = MAX_STREAMS_PER_CONNECTION - 1;

/// Creates `topics` with `partitions` each over QUIC (an existing topic is used as is, as
/// the Kafka driver does). Every partition's "leader" is the QUIC listener: one broker.
pub fn create_topics(
    target: &QuicTarget,
    topics: &[String],
    partitions: u32,
) -> Result<Vec<TopicLayout>> {
    if partitions > MAX_PARTITIONS_PER_CONNECTION {
        bail!(
            "{partitions} partitions per topic: over QUIC a producer holds a stream per \
             partition, at most {MAX_PARTITIONS_PER_CONNECTION} per connection"
        );
    }
    target.runtime.block_on(async {
        let client = target.connect().await?;
        let mut layouts = Vec::with_capacity(topics.len());
        for name in topics {
            match client.create_topic(name, partitions as i32, &[]).await {
                Ok(_) => {}
                Err(error) if error.code() == Some(ErrorCode::TOPIC_ALREADY_EXISTS) => {}
                Err(error) => bail!("creating topic {name}: {error}"),
            }
            let count = client
                .partition_count(name)
                .await
                .with_context(|| format!("describing topic {name}"))?;
            if count > MAX_PARTITIONS_PER_CONNECTION as i32 {
                bail!(
                    "topic {name} has {count} partitions: over QUIC a producer holds a stream \
                     per partition, at most {MAX_PARTITIONS_PER_CONNECTION} per connection"
                );
            }
            if count != partitions as i32 {
                eprintln!(
                    "quiver-perf: topic {name} exists with {count} partitions (workload asks \
                     {partitions}); using it as is"
                );
            }
            layouts.push(TopicLayout {
                name: name.clone(),
                leaders: vec![target.config.address.clone(); count.max(0) as usize],
            });
        }
        client.close();
        Ok(layouts)
    })
}
