//! `quiver`: the broker binary. Wires the engine, the thread-per-core runtime and the
//! Kafka listener together.

mod cli;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use quiver_engine::log::Durability;
use quiver_engine::runtime::{self, RuntimeConfig};
use quiver_net::kafka::broker::{ensure_internal_topics, BrokerConfig, Shard};
use quiver_net::quic::{QuicSettings, TlsSettings};

#[derive(Parser)]
#[command(
    name = "quiver",
    version,
    about = "Quiver: a Kafka-compatible message broker"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the broker.
    ///
    /// Examples:
    ///   quiver serve                      # data in ./quiver-data, Kafka on 127.0.0.1:9092
    ///   quiver serve --cores 1 --kafka-listen 127.0.0.1:19092 --data-dir /var/lib/quiver
    ///   quiver serve --quic-listen 0.0.0.0:9093 --tls-cert cert.pem --tls-key key.pem
    ///   quiver serve --no-quic            # Kafka protocol only
    Serve(ServeArgs),
    /// Create, list, describe and delete topics.
    ///
    /// Examples:
    ///   quiver topic create orders --partitions 3
    ///   quiver topic list
    ///   quiver topic describe orders
    ///   quiver topic delete orders
    Topic {
        #[command(flatten)]
        connect: cli::ConnectArgs,
        #[command(subcommand)]
        command: cli::TopicCommand,
    },
    /// Produce one record per line of stdin (like kafka-console-producer).
    Produce {
        #[command(flatten)]
        connect: cli::ConnectArgs,
        #[command(flatten)]
        args: cli::ProduceArgs,
    },
    /// Print records of a topic (like kafka-console-consumer).
    Consume {
        #[command(flatten)]
        connect: cli::ConnectArgs,
        #[command(flatten)]
        args: cli::ConsumeArgs,
    },
    /// Inspect consumer groups: committed offsets and lag.
    ///
    /// Examples:
    ///   quiver group describe billing
    Group {
        #[command(flatten)]
        connect: cli::ConnectArgs,
        #[command(subcommand)]
        command: cli::GroupCommand,
    },
}

#[derive(Parser, Debug)]
struct ServeArgs {
    /// Where partition logs and metadata live. Must be on a filesystem that supports
    /// O_DIRECT (ext4, xfs); tmpfs does not.
    #[arg(long, default_value = "quiver-data")]
    data_dir: PathBuf,
    /// Kafka protocol listen address.
    #[arg(long, default_value = "127.0.0.1:9092")]
    kafka_listen: SocketAddr,
    /// QUIC (`quiver/1`) listen address (UDP).
    #[arg(long, default_value = "127.0.0.1:9093")]
    quic_listen: SocketAddr,
    /// Do not start the QUIC listener.
    #[arg(long)]
    no_quic: bool,
    /// PEM certificate chain for the QUIC listener. Without --tls-cert/--tls-key a
    /// self-signed development certificate is generated into <data-dir>/tls/.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// PEM CA bundle: require QUIC clients to present a certificate it signed (mutual TLS).
    #[arg(long)]
    tls_client_ca: Option<PathBuf>,
    /// Host advertised to clients in Metadata (default: the listen IP).
    #[arg(long)]
    advertised_host: Option<String>,
    /// Port advertised to clients in Metadata (default: the listen port).
    #[arg(long)]
    advertised_port: Option<u16>,
    /// Number of cores (shards) to run on. Default: all.
    #[arg(long)]
    cores: Option<usize>,
    /// Create topics on first use from Metadata requests, as Kafka does by default.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    auto_create_topics: bool,
    /// Partitions of auto-created topics (Kafka's num.partitions).
    #[arg(long, default_value_t = 1)]
    default_partitions: i32,
    /// Partitions of the internal __consumer_offsets topic (fixed once created).
    #[arg(long, default_value_t = 16)]
    offsets_topic_partitions: i32,
    /// segment.bytes of the internal __consumer_offsets topic when it is created
    /// (Kafka's offsets.topic.segment.bytes, 100 MiB there).
    #[arg(long, default_value_t = quiver_net::kafka::broker::OFFSETS_TOPIC_SEGMENT_BYTES)]
    offsets_topic_segment_bytes: u64,
    /// How often retention and the log cleaner (compaction) run, in ms (Kafka's
    /// log.retention.check.interval.ms and log.cleaner.backoff.ms).
    #[arg(long, default_value_t = 30_000)]
    retention_check_interval_ms: u64,
    /// Default segment size in bytes (Kafka's log.segment.bytes).
    #[arg(long, default_value_t = quiver_engine::limits::DEFAULT_SEGMENT_BYTES)]
    segment_bytes: u64,
    /// Default retention in ms (-1: forever).
    #[arg(long, default_value_t = 7 * 24 * 3600 * 1000)]
    retention_ms: i64,
    /// Default retention in bytes per partition (-1: unlimited).
    #[arg(long, default_value_t = -1)]
    retention_bytes: i64,
    /// fsync policy: 0 = fdatasync at every group commit (default: an acknowledged
    /// append is on disk); N > 0 = acknowledge after the write and sync every N ms.
    #[arg(long, default_value_t = 0)]
    flush_ms: u64,
    /// Syncs a second above which a shard's overlapping group commits share one
    /// `syncfs` of the data directory's file system instead of one `fdatasync` each
    /// (many partitions; 0: never). A `syncfs` also writes back anything else dirty on
    /// that file system, so lower it only where Quiver has the file system to itself,
    /// and set 0 where other heavy writers share it.
    #[arg(long, default_value_t = quiver_engine::limits::GROUP_SYNC_BUSY_RATE)]
    group_sync_busy_rate: u64,
    /// Microseconds an idle shard keeps polling for work before it sleeps in the
    /// kernel (0: sleep at once). Spinning saves the wake-up on the next request
    /// (lower latency at low load) and costs CPU while idle.
    #[arg(long, default_value_t = 0)]
    spin_us: u64,
    /// Answer acks=1 once the batch is appended in memory (Redpanda's leader ack)
    /// instead of once it is in the kernel (page cache or segment write). Saves a
    /// syscall or a disk round trip; a broker crash can then lose the latest acks=1
    /// messages (acks=all is unaffected).
    #[arg(long)]
    acks1_on_append: bool,
    /// Delay before the first rebalance of a new consumer group (Kafka's
    /// group.initial.rebalance.delay.ms).
    #[arg(long, default_value_t = 0)]
    group_initial_rebalance_delay_ms: u64,
}

fn main() -> anyhow::Result<()> {
    let command = Cli::parse().command;
    // The broker logs its progress; client commands speak only when something is wrong.
    let default_filter = match command {
        Command::Serve(_) => "info",
        _ => "warn",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| default_filter.into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let exit_code = match command {
        Command::Serve(args) => return serve(args),
        Command::Topic { connect, command } => cli::run(async move {
            command.validate()?;
            command.run(&connect.connect().await?).await
        }),
        Command::Produce { connect, args } => cli::run(async move {
            args.validate()?;
            args.run(&connect.connect().await?).await
        }),
        Command::Consume { connect, args } => cli::run(async move {
            args.validate()?;
            args.run(&connect.connect().await?).await
        }),
        Command::Group { connect, command } => cli::run(async move {
            if let Some(result) = command.offline() {
                return result;
            }
            command.run(&connect.connect().await?).await
        }),
    };
    std::process::exit(exit_code);
}

/// How long a listen address may stay taken before `quiver serve` gives up: a broker
/// killed a moment ago releases its sockets within about a second (docs/glommio.md, 5).
const ADDRESS_FREE_WAIT: Duration = Duration::from_secs(3);

/// Fails if another process serves on `addr`. The listeners use `SO_REUSEPORT` (one
/// socket per core), which would otherwise let a second `quiver serve` on the same address
/// start without an error and silently take part of the traffic. `probe` returns
/// `AddrInUse` while the address is taken; a taken address is retried for
/// `ADDRESS_FREE_WAIT`, since a broker that just died releases its sockets late.
fn ensure_address_free(
    what: &str,
    addr: SocketAddr,
    probe: impl Fn(SocketAddr) -> std::io::Result<()>,
) -> anyhow::Result<()> {
    if addr.port() == 0 {
        return Ok(());
    }
    let deadline = std::time::Instant::now() + ADDRESS_FREE_WAIT;
    loop {
        match probe(addr) {
            Ok(()) => return Ok(()),
            Err(e)
                if e.kind() == std::io::ErrorKind::AddrInUse
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => bail!(
                "{what} address {addr} is in use (another quiver serve, or another program): \
                 stop it or choose another address"
            ),
            Err(e) => return Err(e).with_context(|| format!("binding the {what} address {addr}")),
        }
    }
}

/// TCP: is something accepting connections on `addr`? (A bind probe would also trip over
/// the previous run's TIME_WAIT connections, which `SO_REUSEPORT` listeners ignore.)
fn tcp_listener_absent(addr: SocketAddr) -> std::io::Result<()> {
    let target = if addr.ip().is_unspecified() {
        let loopback: std::net::IpAddr = if addr.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        };
        SocketAddr::new(loopback, addr.port())
    } else {
        addr
    };
    match std::net::TcpStream::connect_timeout(&target, Duration::from_millis(200)) {
        Ok(_) => Err(std::io::ErrorKind::AddrInUse.into()),
        // Refused (nothing listens), unreachable or filtered: the bind will tell.
        Err(_) => Ok(()),
    }
}

/// UDP: binding without `SO_REUSEPORT` fails while any socket holds `addr`.
fn udp_socket_absent(addr: SocketAddr) -> std::io::Result<()> {
    std::net::UdpSocket::bind(addr).map(drop)
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    // Before any thread starts: request frames and DMA buffers reuse heap memory instead of
    // faulting fresh pages in for every request.
    quiver_engine::runtime::tune_allocator();
    if args.default_partitions < 1 || args.offsets_topic_partitions < 1 {
        bail!("partition counts must be at least 1");
    }
    ensure_address_free("Kafka (TCP)", args.kafka_listen, tcp_listener_absent)?;
    if !args.no_quic {
        ensure_address_free("QUIC (UDP)", args.quic_listen, udp_socket_absent)?;
    }
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating data dir {}", args.data_dir.display()))?;
    let data_dir = args.data_dir.canonicalize()?;
    let mut config = BrokerConfig::local(data_dir.clone(), args.kafka_listen);
    if let Some(h) = args.advertised_host {
        config.advertised_host = h;
    }
    if let Some(p) = args.advertised_port {
        config.advertised_port = p;
    }
    config.auto_create_topics = args.auto_create_topics;
    config.default_partitions = args.default_partitions;
    config.offsets_topic_partitions = args.offsets_topic_partitions;
    config.offsets_topic_segment_bytes = args.offsets_topic_segment_bytes;
    config.retention_check_interval =
        Duration::from_millis(args.retention_check_interval_ms.max(1));
    config.group_initial_rebalance_delay_ms = args.group_initial_rebalance_delay_ms;
    config.acks1_on_append = args.acks1_on_append;
    config.log_defaults.segment_bytes = args.segment_bytes;
    config.log_defaults.retention_ms = (args.retention_ms >= 0).then_some(args.retention_ms as u64);
    config.log_defaults.retention_bytes =
        (args.retention_bytes >= 0).then_some(args.retention_bytes as u64);
    if args.flush_ms > 0 {
        config.log_defaults.durability = Durability::Interval {
            interval: Duration::from_millis(args.flush_ms),
            bytes: u64::MAX,
        };
    }
    ensure_internal_topics(&config)?;
    let runtime_config = RuntimeConfig {
        spin_before_park: (args.spin_us > 0).then(|| Duration::from_micros(args.spin_us)),
        ..RuntimeConfig::with_cores(args.cores)
    };
    tracing::info!(
        data_dir = %data_dir.display(),
        kafka = %config.kafka_listen,
        cores = runtime_config.cpus.len(),
        "starting quiver"
    );
    let config = Arc::new(config);
    // SIGTERM/SIGINT: signal-hook's self-pipe (`low_level::pipe`) writes a byte to a socket
    // pair from the signal handler; every shard waits for the socket to become readable
    // through its own io_uring (`POLL_ADD`, so no glommio task is woken from another
    // thread: docs/glommio.md, section 6), then stops serving, flushes its logs and
    // returns, and the process exits 0. Nothing reads the byte, so every shard's poll
    // fires. SIGKILL of course skips all of this, which is what recovery is for. No shard
    // polls a flag: a 20 ms timer fired 50 times a second on every shard, and one that
    // fires while a request is being served preempts it (docs/benchmarks.md, session 8).
    let (stop, stop_writer) =
        std::os::unix::net::UnixStream::pair().context("creating the stop socket pair")?;
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        let writer = stop_writer
            .try_clone()
            .context("creating the stop socket pair")?;
        signal_hook::low_level::pipe::register(signal, writer)
            .context("installing signal handler")?;
    }
    let stop = Arc::new(stop);
    let shard_count = runtime_config.cpus.len();
    let quic = if args.no_quic {
        None
    } else {
        let settings = QuicSettings {
            listen: args.quic_listen,
            data_dir: data_dir.clone(),
            tls: TlsSettings {
                cert: args.tls_cert,
                key: args.tls_key,
                client_ca: args.tls_client_ca,
            },
        };
        let listener =
            quiver_net::quic::bind(&settings, shard_count).context("starting the QUIC listener")?;
        tracing::info!(
            quic = %listener.local_addr,
            cert = %listener.cert_path.display(),
            "quic (quiver/1) enabled; clients verify the broker with this certificate (CA file)"
        );
        Some(listener)
    };
    let group_sync = quiver_engine::group_sync::Policy::with_busy_rate(args.group_sync_busy_rate);
    runtime::run(&runtime_config, move |ctx| {
        let config = Arc::clone(&config);
        let stop = Arc::clone(&stop);
        let quic = quic.clone();
        async move {
            if let Err(e) = runtime::prepare_io(&config.data_dir).await {
                tracing::error!(error = %e, "storage is not usable for direct I/O");
                std::process::exit(2);
            }
            // Before any log is opened: the shard's syncfs descriptor must predate its writes.
            if let Err(e) = quiver_engine::group_sync::init(group_sync, &config.data_dir) {
                tracing::error!(error = %e, "cannot open the data directory for syncfs");
                std::process::exit(2);
            }
            let shard = match Shard::start(ctx, Arc::clone(&config)).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(error = %e, "shard failed to start");
                    std::process::exit(2);
                }
            };
            glommio::spawn_local(Rc::clone(&shard).retention_loop()).detach();
            glommio::spawn_local(quiver_net::kafka::groups::run_coordinator_timers()).detach();
            // The listener runs in a task of its own. A glommio I/O future (the pending
            // accept) adds a waker reference each time it is polled and drops them only
            // when the I/O completes; polled by an unrelated 20 ms timer in one `select`,
            // an idle listener overflowed the task's 16-bit reference count in 11
            // minutes (docs/glommio.md, section 7).
            let addr = config.kafka_listen;
            let listener = glommio::spawn_local(async move {
                if let Err(e) = quiver_net::kafka::server::serve(addr).await {
                    tracing::error!(error = %e, %addr, "kafka listener failed");
                    std::process::exit(2);
                }
            });
            let quic_shard = match quic.as_ref().map(|q| q.start_shard(shard.id().0)) {
                None => None,
                Some(Ok(q)) => Some(q),
                Some(Err(e)) => {
                    tracing::error!(error = %e, "quic listener failed to start");
                    std::process::exit(2);
                }
            };
            let mut stop_signal = glommio::net::FdReadiness::new(stop.as_raw_fd());
            futures::future::poll_fn(|cx| stop_signal.poll_readable(cx)).await;
            drop(listener);
            if let Some(q) = quic_shard {
                q.stop().await;
            }
            for (_, log) in shard.local_logs() {
                log.flushed().await;
            }
            let totals = quiver_net::kafka::scatter::thread_totals();
            tracing::info!(
                shard = shard.id().0,
                responses = totals.frames,
                bytes_referenced = totals.bytes_referenced,
                bytes_copied = totals.bytes_copied,
                copied_per_byte_served = totals.copied_per_byte_served(),
                connections_moved_in = quiver_net::kafka::server::connections_moved_in(),
                "shard stopped cleanly"
            );
        }
    })
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}

use std::os::fd::AsRawFd;
use std::rc::Rc;
