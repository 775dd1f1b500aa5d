//! `quiver-perf kafka`: a Kafka-protocol load generator driven by a workload file, and its
//! companions `sink` (a discard server that measures the generator's own ceiling),
//! `compare` and `plot`. The same driver runs a workload over QUIC (`quiver-perf quic`,
//! `crate::quic`): only the [`Transport`] differs; rate control, batching, measurement and
//! results are shared.
//!
//! Threads, not async: each producer is one sender thread plus one acknowledgement reader per
//! leader connection, each consumer one fetcher thread per leader (plus its group membership
//! loop). On a 2-core machine shared with the broker there are few connections, so blocking
//! sockets cost one wake-up per response and no runtime: nothing between the socket and the
//! clock readings, which keeps the latency we measure the broker's and the kernel's.

pub mod cluster;
pub mod compare;
pub mod consumer;
pub mod producer;
pub mod records;
pub mod result;
pub mod sink;
pub mod stats;
pub mod wire;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use clap::Args;

use self::cluster::{create_topics, TopicLayout};
use self::consumer::{ConsumerSpec, Membership, StartPosition};
use self::producer::{parse_compression, ProducerSpec};
use self::result::{
    git_revision, load_average_1m, process_cpu_s, Machine, Protocol, RunResult, SeriesPoint,
    Throughput, RESULT_FORMAT_VERSION,
};
use self::stats::{new_intervals, percentiles, spectrum, Clock, CounterSnapshot, Registry};
use crate::workload::{MessageSize, Workload};

/// How often the collector samples (and the progress line is printed).
pub const TICK: Duration = Duration::from_secs(1);
/// Time consumers get to join and position themselves before producers start.
pub const CONSUMER_SETTLE: Duration = Duration::from_millis(1_500);
/// After producers stop, how long consumers may take to receive what was acknowledged.
pub const CONSUMER_DRAIN: Duration = Duration::from_secs(3);

#[derive(Debug, Args)]
pub struct KafkaArgs {
    /// A broker to bootstrap from: Quiver, Apache Kafka or Redpanda.
    #[arg(long, default_value = "127.0.0.1:9092")]
    pub bootstrap: String,
    /// Who reads a producer's Produce responses: `sender` (the producer's own thread,
    /// while it waits for its next send: no thread hand-off per answer; only when the
    /// producer has one connection), `thread` (a reader thread per connection, which
    /// reads and decodes while the sender builds batches), or `auto`: `sender` for
    /// fixed-rate producers (latency workloads: the sender is idle between sends),
    /// `thread` for max-rate ones (the sender is always busy).
    #[arg(long, value_enum, default_value_t = AckReader::Auto)]
    pub ack_reader: AckReader,
    #[command(flatten)]
    pub run: RunArgs,
}

/// `--ack-reader`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AckReader {
    Auto,
    Sender,
    Thread,
}

/// What every transport's run takes: the workload, where results go, and per-run overrides.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Workload file (see perf/workloads/*.toml).
    #[arg(long)]
    pub workload: PathBuf,
    /// Write the JSON result here, and the SVG plot beside it (same name, .svg).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Name for this run in plots and comparisons (default: the workload name); the
    /// protocol is appended ("[kafka-tcp]", "[quic]") unless the name already carries it.
    #[arg(long)]
    pub label: Option<String>,
    /// The machine baseline of the same run (`quiver-perf baseline` JSON), embedded in the result.
    #[arg(long)]
    pub baseline_json: Option<PathBuf>,
    /// The broker's process id, to report its CPU use (same host only).
    #[arg(long)]
    pub broker_pid: Option<u32>,
    /// Do not print the per-second progress line.
    #[arg(long)]
    pub quiet: bool,
    /// Override: total producer rate in messages/s (0 = max).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Override: acks (0, 1, -1).
    #[arg(long, allow_hyphen_values = true)]
    pub acks: Option<i16>,
    /// Override: measured seconds.
    #[arg(long)]
    pub duration_s: Option<f64>,
    /// Override: warm-up seconds.
    #[arg(long)]
    pub warmup_s: Option<f64>,
    /// Override: fixed message size in bytes.
    #[arg(long)]
    pub message_size: Option<u32>,
    /// Override: partitions per topic.
    #[arg(long)]
    pub partitions: Option<u32>,
    /// Override: producers per topic.
    #[arg(long)]
    pub producers: Option<u32>,
    /// Override: consumers per subscription (0 producers-only runs use subscriptions = 0).
    #[arg(long)]
    pub consumers: Option<u32>,
    /// Override: subscriptions per topic (0: no consumers).
    #[arg(long)]
    pub subscriptions: Option<u32>,
    /// Override: batch size in bytes.
    #[arg(long)]
    pub batch_size_bytes: Option<u32>,
    /// Override: linger in microseconds.
    #[arg(long)]
    pub linger_us: Option<u64>,
    /// Override: produce requests in flight per connection.
    #[arg(long)]
    pub max_in_flight: Option<u32>,
    /// Override: compression (none, gzip, snappy, lz4, zstd).
    #[arg(long)]
    pub compression: Option<String>,
    /// Override: topic name prefix (a fresh prefix gives fresh topics).
    #[arg(long)]
    pub topic_prefix: Option<String>,
    /// Override: "classic" consumer groups or "explicit" assignment (the sink needs explicit).
    #[arg(long)]
    pub group_protocol: Option<String>,
    /// Override: bytes to produce before the timed phase.
    #[arg(long)]
    pub preload_bytes: Option<u64>,
    /// Override: consumers fetch in incremental fetch sessions (KIP-227), true or false.
    #[arg(long)]
    pub fetch_sessions: Option<bool>,
}

impl RunArgs {
    fn apply(&self, workload: &mut Workload) {
        macro_rules! set {
            ($field:ident, $value:expr) => {
                if let Some(value) = $value {
                    workload.$field = value;
                }
            };
        }
        set!(producer_rate, self.rate);
        set!(acks, self.acks);
        set!(duration_s, self.duration_s);
        set!(warmup_s, self.warmup_s);
        set!(message_size, self.message_size.map(MessageSize::Fixed));
        set!(partitions_per_topic, self.partitions);
        set!(producers_per_topic, self.producers);
        set!(consumers_per_subscription, self.consumers);
        set!(subscriptions_per_topic, self.subscriptions);
        set!(batch_size_bytes, self.batch_size_bytes);
        set!(linger_us, self.linger_us);
        set!(max_in_flight, self.max_in_flight);
        set!(compression, self.compression.clone());
        set!(topic_prefix, self.topic_prefix.clone());
        set!(preload_bytes, self.preload_bytes);
        set!(group_protocol, self.group_protocol.clone());
        set!(fetch_sessions, self.fetch_sessions);
    }
}

/// How the generator reaches the broker.
#[derive(Clone)]
pub enum Transport {
    /// The Kafka protocol over TCP, bootstrapping from this address.
    Kafka {
        bootstrap: String,
        /// Which producers with one connection read their answers on their own thread.
        ack_reader: AckReader,
    },
    /// `quiver/1` over QUIC.
    Quic(crate::quic::QuicTarget),
}

impl Transport {
    pub fn protocol(&self) -> Protocol {
        match self {
            Transport::Kafka { .. } => Protocol::Kafka,
            Transport::Quic(_) => Protocol::Quic,
        }
    }

    /// The address the run was pointed at (bootstrap broker or QUIC listener).
    pub fn address(&self) -> &str {
        match self {
            Transport::Kafka { bootstrap, .. } => bootstrap,
            Transport::Quic(target) => &target.config.address,
        }
    }
}

pub fn run(args: KafkaArgs) -> Result<()> {
    let transport = Transport::Kafka {
        bootstrap: args.bootstrap.clone(),
        ack_reader: args.ack_reader,
    };
    run_with(&args.run, &transport)
}

/// Loads and runs the workload over `transport`, prints the summary, writes JSON and SVG.
pub fn run_with(args: &RunArgs, transport: &Transport) -> Result<()> {
    // Without it every 1 MiB request or 50 MiB fetch buffer faulted its pages in one by one:
    // a third of the producer's CPU in a profile against the sink.
    quiver_engine::runtime::tune_allocator();
    let mut workload = Workload::load(&args.workload)?;
    args.apply(&mut workload);
    workload.validate()?;
    let machine_baseline = match &args.baseline_json {
        Some(path) => Some(serde_json::from_str(
            &std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?,
        )?),
        None => None,
    };
    let result = execute(
        &workload,
        transport,
        args.label.clone(),
        args.quiet,
        args.broker_pid,
    )?;
    let result = RunResult {
        machine_baseline,
        ..result
    };
    for line in result.summary_lines() {
        println!("{line}");
    }
    if let Some(out) = &args.out {
        result.save(out)?;
        let svg_path = out.with_extension("svg");
        std::fs::write(&svg_path, crate::plot::render(&[&result]))
            .with_context(|| format!("writing {}", svg_path.display()))?;
        println!("wrote {} and {}", out.display(), svg_path.display());
    }
    Ok(())
}

fn start_unix_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The run's name: `label` (default: the workload's name) with the protocol appended unless
/// it already names it, so that `compare` and `summary` never mix TCP and QUIC runs.
pub fn run_label(label: Option<String>, workload: &Workload, protocol: Protocol) -> String {
    let base = label.unwrap_or_else(|| workload.name.clone());
    let tag = format!("[{}]", protocol.name());
    if base.contains(&tag) {
        base
    } else {
        format!("{base} {tag}")
    }
}

/// Runs `workload` over `transport` and returns the result (without baseline).
pub fn execute(
    workload: &Workload,
    transport: &Transport,
    label: Option<String>,
    quiet: bool,
    broker_pid: Option<u32>,
) -> Result<RunResult> {
    let clock = Clock::new();
    let load_at_start = load_average_1m();
    let broker_cpu = || broker_pid.and_then(|pid| process_cpu_s(&pid.to_string()));
    let cpu_now = || (process_cpu_s("self").unwrap_or(0.0), broker_cpu());
    let started_unix_s = start_unix_s();
    let address = transport.address();
    let topics = workload.topic_names();
    let layouts = match transport {
        Transport::Kafka { bootstrap, .. } => {
            let mut connection = wire::Connection::open(bootstrap)
                .with_context(|| format!("connecting to the broker at {bootstrap}"))?;
            create_topics(&mut connection, &topics, workload.partitions_per_topic)?
        }
        Transport::Quic(target) => {
            crate::quic::create_topics(target, &topics, workload.partitions_per_topic)?
        }
    };
    let mut notes = Vec::new();
    let static_groups = matches!(transport, Transport::Quic(_))
        && workload.group_protocol == "classic"
        && workload.subscriptions_per_topic > 0;
    if static_groups {
        notes.push(format!(
            "quiver/1 has no consumer-group membership: each subscription's {} consumer(s) \
             take fixed round-robin shares of the partitions (one subscription stream each) and \
             commit offsets to the group every {} s",
            workload.consumers_per_subscription,
            consumer::COMMIT_INTERVAL.as_secs()
        ));
    }
    for note in &notes {
        eprintln!("quiver-perf: {note}");
    }

    if workload.preload_bytes > 0 {
        preload(workload, &layouts, clock, quiet, transport)?;
    }

    let registry = Registry::default();
    let stop_consumers = Arc::new(AtomicBool::new(false));
    let mut consumers: Vec<JoinHandle<Result<()>>> = Vec::new();
    let start = if workload.consumer_start == "earliest" {
        StartPosition::Earliest
    } else {
        StartPosition::Latest
    };
    let mut consumer_id = 0;
    for layout in &layouts {
        for subscription in 0..workload.subscriptions_per_topic {
            let group = format!("{}-sub{subscription}-{started_unix_s}", layout.name);
            let count = workload.consumers_per_subscription;
            for member in 0..count {
                let membership = if static_groups {
                    Membership::Static {
                        partitions: round_robin_of(layout.leaders.len(), member, count),
                        group: group.clone(),
                    }
                } else if workload.group_protocol == "classic" {
                    Membership::Classic {
                        group: group.clone(),
                    }
                } else {
                    Membership::Explicit(range_of(layout.leaders.len(), member, count))
                };
                if let Membership::Explicit(partitions) | Membership::Static { partitions, .. } =
                    &membership
                {
                    if partitions.is_empty() {
                        continue;
                    }
                }
                let spec = ConsumerSpec {
                    id: consumer_id,
                    bootstrap: address.to_string(),
                    topic: layout.clone(),
                    membership,
                    start,
                    rewind_at_end: workload.consumer_rewind_at_end,
                    fetch_max_wait_ms: workload.fetch_max_wait_ms,
                    fetch_min_bytes: workload.fetch_min_bytes,
                    fetch_max_bytes: workload.fetch_max_bytes,
                    fetch_partition_max_bytes: workload.fetch_partition_max_bytes,
                    verify_crc: workload.verify_crc,
                    fetch_sessions: workload.fetch_sessions,
                    stop: stop_consumers.clone(),
                    clock,
                    stats: registry.worker(),
                };
                consumer_id += 1;
                let stats = spec.stats.clone();
                let transport = transport.clone();
                consumers.push(
                    std::thread::Builder::new()
                        .name(format!("consumer-{}", spec.id))
                        .spawn(move || {
                            let result = match transport {
                                Transport::Kafka { .. } => consumer::run(spec),
                                Transport::Quic(target) => crate::quic::consumer::run(spec, target),
                            };
                            if let Err(error) = &result {
                                stats.error(format!("consumer failed: {error:#}"));
                            }
                            result
                        })?,
                );
            }
        }
    }
    if !consumers.is_empty() {
        std::thread::sleep(CONSUMER_SETTLE);
    }

    let stop_at_ns = Arc::new(AtomicU64::new(u64::MAX));
    let run_ns = ((workload.warmup_s + workload.duration_s) * 1e9) as u64;
    let start_ns = clock.now_ns();
    stop_at_ns.store(start_ns + run_ns, Ordering::Relaxed);
    let producers = if workload.produce_during_run {
        start_producers(
            workload,
            &layouts,
            &registry,
            &stop_at_ns,
            u64::MAX,
            clock,
            transport,
        )?
    } else {
        Vec::new()
    };

    // Collect once a second until the run ends.
    let mut totals = new_intervals();
    let mut interval = new_intervals();
    let mut series = Vec::new();
    let mut previous = CounterSnapshot::default();
    let mut previous_ns = start_ns;
    let warmup_end_ns = start_ns + (workload.warmup_s * 1e9) as u64;
    let end_ns = start_ns + run_ns;
    // Ticks fall every TICK, plus one exactly at the end of warm-up so no interval mixes both.
    let mut measured_from: Option<(u64, CounterSnapshot)> =
        (warmup_end_ns <= start_ns).then_some((start_ns, CounterSnapshot::default()));
    let mut cpu_from = cpu_now();
    let mut next_tick_ns = start_ns + TICK.as_nanos() as u64;
    loop {
        let tick_ns = if previous_ns < warmup_end_ns && next_tick_ns > warmup_end_ns {
            warmup_end_ns
        } else {
            next_tick_ns.min(end_ns)
        };
        if tick_ns == next_tick_ns {
            next_tick_ns += TICK.as_nanos() as u64;
        }
        clock.sleep_until(tick_ns);
        let now = clock.now_ns();
        let snapshot = registry.snapshot();
        registry.drain(&mut interval);
        let warmup = tick_ns <= warmup_end_ns && measured_from.is_none();
        let point = series_point(
            (now - start_ns) as f64 / 1e9,
            warmup,
            &snapshot,
            &previous,
            (now - previous_ns) as f64 / 1e9,
            &interval,
        );
        if !quiet {
            eprintln!("{}", progress_line(&point));
        }
        series.push(point);
        if warmup {
            reset_intervals(&mut interval);
        } else {
            merge_intervals(&mut interval, &mut totals);
        }
        if measured_from.is_none() && tick_ns >= warmup_end_ns {
            measured_from = Some((now, snapshot));
            cpu_from = cpu_now();
        }
        previous = snapshot;
        previous_ns = now;
        if tick_ns >= end_ns {
            break;
        }
    }
    let end_snapshot = registry.snapshot();
    let measured_end_ns = clock.now_ns();
    let cpu_to = cpu_now();
    for producer in producers {
        match producer.join() {
            Ok(Ok(())) => {}
            Ok(Err(error)) => return Err(error.context("producer failed")),
            Err(_) => return Err(anyhow!("producer thread panicked")),
        }
    }
    // Let consumers receive what was acknowledged, for end-to-end latency of the last messages.
    if !consumers.is_empty() && workload.produce_during_run {
        let deadline = clock.now_ns() + CONSUMER_DRAIN.as_nanos() as u64;
        let expected_per_subscription = registry.snapshot().acked_messages;
        let subscriptions = (workload.subscriptions_per_topic) as u64;
        while clock.now_ns() < deadline
            && registry.snapshot().consumed_messages < expected_per_subscription * subscriptions
        {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    stop_consumers.store(true, Ordering::Relaxed);
    for consumer in consumers {
        let _ = consumer.join();
    }
    registry.drain(&mut interval);
    merge_intervals(&mut interval, &mut totals);

    let (from_ns, from) = measured_from.unwrap_or((start_ns, CounterSnapshot::default()));
    let measured_s = (measured_end_ns.saturating_sub(from_ns)) as f64 / 1e9;
    let delta = end_snapshot.minus(&from);
    Ok(RunResult {
        format_version: RESULT_FORMAT_VERSION,
        tool: format!("quiver-perf {}", env!("CARGO_PKG_VERSION")),
        label: run_label(label, workload, transport.protocol()),
        workload: workload.clone(),
        protocol: transport.protocol(),
        bootstrap: address.to_string(),
        notes,
        machine: Machine::probe(),
        git_revision: git_revision(),
        started_unix_s,
        measured_s,
        publish: Throughput::new(delta.acked_messages, delta.acked_bytes, measured_s),
        consume: Throughput::new(delta.consumed_messages, delta.consumed_bytes, measured_s),
        publish_latency_us: percentiles(&totals.publish),
        publish_service_latency_us: percentiles(&totals.publish_service),
        send_delay_us: percentiles(&totals.send_delay),
        end_to_end_latency_us: percentiles(&totals.end_to_end),
        errors: end_snapshot.errors,
        first_error: registry.first_error(),
        generator_cpu_s: cpu_to.0 - cpu_from.0,
        broker_cpu_s: cpu_to.1.zip(cpu_from.1).map(|(to, from)| to - from),
        load_average: (load_at_start, load_average_1m()),
        series,
        publish_spectrum: spectrum(&totals.publish),
        end_to_end_spectrum: spectrum(&totals.end_to_end),
        machine_baseline: None,
    })
}

/// Partitions `member` of `members` takes under the range assignor (explicit assignment).
pub fn range_of(partitions: usize, member: u32, members: u32) -> Vec<i32> {
    let members = members.max(1) as usize;
    let member = member as usize;
    let per_member = partitions / members;
    let extra = partitions % members;
    let start = member * per_member + member.min(extra);
    let count = per_member + usize::from(member < extra);
    (start..start + count).map(|p| p as i32).collect()
}

/// Partitions `member` of `members` takes round-robin (QUIC stand-in for a group).
pub fn round_robin_of(partitions: usize, member: u32, members: u32) -> Vec<i32> {
    let members = members.max(1) as usize;
    (member as usize..partitions)
        .step_by(members)
        .map(|p| p as i32)
        .collect()
}

fn start_producers(
    workload: &Workload,
    layouts: &[TopicLayout],
    registry: &Registry,
    stop_at_ns: &Arc<AtomicU64>,
    stop_after_bytes: u64,
    clock: Clock,
    transport: &Transport,
) -> Result<Vec<JoinHandle<Result<()>>>> {
    let total = workload.total_producers().max(1);
    let rate = workload.producer_rate / total as f64;
    let compression = parse_compression(&workload.compression)?;
    let mut handles = Vec::new();
    let mut id = 0;
    for layout in layouts {
        for _ in 0..workload.producers_per_topic {
            let spec = ProducerSpec {
                id,
                topic: layout.clone(),
                rate,
                acks: workload.acks,
                batch_size_bytes: workload.batch_size_bytes as usize,
                batch_max_messages: workload.batch_max_messages as usize,
                linger_ns: workload.linger_us * 1_000,
                max_in_flight: workload.max_in_flight,
                buffer_bytes: workload.buffer_bytes as usize,
                compression,
                message_size: workload.message_size.clone(),
                keyed: workload.use_random_keys,
                seed: 0x9e37_79b9_7f4a_7c15 ^ (id as u64 + 1),
                stop_at_ns: stop_at_ns.clone(),
                stop_after_bytes,
                clock,
                stats: registry.worker(),
                transport: transport.clone(),
            };
            id += 1;
            handles.push(
                std::thread::Builder::new()
                    .name(format!("producer-{}", spec.id))
                    .spawn(move || producer::run(spec))?,
            );
        }
    }
    Ok(handles)
}

/// Produces `workload.preload_bytes` as fast as possible (acks=1) before the timed phase.
fn preload(
    workload: &Workload,
    layouts: &[TopicLayout],
    clock: Clock,
    quiet: bool,
    transport: &Transport,
) -> Result<()> {
    let registry = Registry::default();
    let mut preload_workload = workload.clone();
    preload_workload.producer_rate = 0.0;
    preload_workload.acks = 1;
    let per_producer = workload.preload_bytes / workload.total_producers().max(1) as u64;
    let stop_at = Arc::new(AtomicU64::new(u64::MAX));
    let started = clock.now_ns();
    let handles = start_producers(
        &preload_workload,
        layouts,
        &registry,
        &stop_at,
        per_producer,
        clock,
        transport,
    )?;
    let mut last = 0u64;
    while handles.iter().any(|h| !h.is_finished()) {
        std::thread::sleep(TICK);
        let snapshot = registry.snapshot();
        if !quiet {
            eprintln!(
                "[preload] {:>8.1} MB acked, {:>8.1} MB/s",
                snapshot.acked_bytes as f64 / 1e6,
                (snapshot.acked_bytes - last) as f64 / 1e6 / TICK.as_secs_f64()
            );
        }
        last = snapshot.acked_bytes;
    }
    for handle in handles {
        handle
            .join()
            .map_err(|_| anyhow!("preload producer panicked"))??;
    }
    let snapshot = registry.snapshot();
    let seconds = (clock.now_ns() - started) as f64 / 1e9;
    eprintln!(
        "[preload] done: {:.1} MB in {:.1} s ({:.1} MB/s), {} errors",
        snapshot.acked_bytes as f64 / 1e6,
        seconds,
        snapshot.acked_bytes as f64 / 1e6 / seconds,
        snapshot.errors
    );
    if let Some(error) = registry.first_error() {
        return Err(anyhow!("preload failed: {error}"));
    }
    Ok(())
}

fn reset_intervals(interval: &mut stats::IntervalHistograms) {
    interval.publish.reset();
    interval.publish_service.reset();
    interval.send_delay.reset();
    interval.end_to_end.reset();
}

fn merge_intervals(
    interval: &mut stats::IntervalHistograms,
    totals: &mut stats::IntervalHistograms,
) {
    for (from, to) in [
        (&mut interval.publish, &mut totals.publish),
        (&mut interval.publish_service, &mut totals.publish_service),
        (&mut interval.send_delay, &mut totals.send_delay),
        (&mut interval.end_to_end, &mut totals.end_to_end),
    ] {
        to.add(&*from).expect("histograms share bounds");
        from.reset();
    }
}

fn series_point(
    t_s: f64,
    warmup: bool,
    now: &CounterSnapshot,
    previous: &CounterSnapshot,
    seconds: f64,
    interval: &stats::IntervalHistograms,
) -> SeriesPoint {
    let delta = now.minus(previous);
    let seconds = seconds.max(1e-9);
    let publish = percentiles(&interval.publish);
    let end_to_end = percentiles(&interval.end_to_end);
    SeriesPoint {
        t_s,
        warmup,
        publish_messages_per_s: delta.acked_messages as f64 / seconds,
        publish_mb_per_s: delta.acked_bytes as f64 / seconds / 1e6,
        consume_messages_per_s: delta.consumed_messages as f64 / seconds,
        consume_mb_per_s: delta.consumed_bytes as f64 / seconds / 1e6,
        publish_p50_us: publish.p50,
        publish_p99_us: publish.p99,
        publish_max_us: publish.max,
        end_to_end_p50_us: end_to_end.p50,
        end_to_end_p99_us: end_to_end.p99,
        end_to_end_max_us: end_to_end.max,
        backlog_messages: now.acked_messages as i64 - now.consumed_messages as i64,
        counters: *now,
    }
}

fn progress_line(point: &SeriesPoint) -> String {
    format!(
        "[{:>5.1}s{}] pub {:>9.0} msg/s {:>8.1} MB/s p50 {:>8.0} p99 {:>8.0} µs | cons {:>9.0} msg/s {:>8.1} MB/s e2e p50 {:>8.0} p99 {:>8.0} µs | errors {}",
        point.t_s,
        if point.warmup { " warm-up" } else { "" },
        point.publish_messages_per_s,
        point.publish_mb_per_s,
        point.publish_p50_us,
        point.publish_p99_us,
        point.consume_messages_per_s,
        point.consume_mb_per_s,
        point.end_to_end_p50_us,
        point.end_to_end_p99_us,
        point.counters.errors
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_ranges_cover_every_partition_once() {
        for partitions in [1usize, 3, 100, 1000] {
            for members in [1u32, 3, 7, 16] {
                let mut all: Vec<i32> = (0..members)
                    .flat_map(|m| range_of(partitions, m, members))
                    .collect();
                all.sort();
                assert_eq!(all, (0..partitions as i32).collect::<Vec<_>>());
                let mut all: Vec<i32> = (0..members)
                    .flat_map(|m| round_robin_of(partitions, m, members))
                    .collect();
                all.sort();
                assert_eq!(all, (0..partitions as i32).collect::<Vec<_>>());
            }
        }
        assert_eq!(round_robin_of(5, 1, 2), vec![1, 3]);
    }

    #[test]
    fn labels_carry_the_protocol_once() {
        let workload = Workload {
            name: "omb".into(),
            ..Workload::default()
        };
        assert_eq!(run_label(None, &workload, Protocol::Quic), "omb [quic]");
        assert_eq!(
            run_label(Some("x".into()), &workload, Protocol::Kafka),
            "x [kafka-tcp]"
        );
        assert_eq!(
            run_label(Some("x [quic]".into()), &workload, Protocol::Quic),
            "x [quic]"
        );
    }
}
