//! One producer: a sender thread that builds RecordBatches and writes pipelined Produce requests,
//! and, per link, an acknowledgement side that matches responses to requests.
//!
//! The sender (rate, batching, linger, in-flight and buffer bounds, accounting) is the same for
//! every transport; a [`ProduceLink`] is what differs: over Kafka one TCP connection per
//! partition leader with a reader thread (this module), over QUIC one connection per producer
//! with a stream per partition (`crate::quic::producer`). A request is one unit of
//! `max_in_flight` either way: a Kafka ProduceRequest carrying several partitions' batches, or
//! the same batches as PRODUCE frames on their partitions' streams, done when every frame is
//! acknowledged.
//!
//! Fixed-rate mode (`rate > 0`): message i has the intended send time `start + i / rate`. The
//! sender adds every message whose time has come to its partition's open batch, closes batches
//! that are full or whose first message has waited `linger`, and writes closed batches whenever
//! a connection has fewer than `max_in_flight` requests outstanding. Latency is measured from
//! the intended time, so a stalled broker (or a stalled sender) shows up as latency instead of
//! silently lowering the offered rate: the correction for coordinated omission.
//!
//! Max-rate mode (`rate == 0`): the sender builds one request's worth of messages whenever a
//! slot is free; a message's time is when it was built, just before its request is written.
//!
//! Bounds: `max_in_flight` requests per connection (the sender waits for a slot) and
//! `buffer_bytes` of messages not yet written (the sender stops taking new messages; under
//! fixed rate their intended times keep running, so the wait is measured).

use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use kafka_protocol::records::Compression;

use super::cluster::{topic_name, TopicLayout};
use super::records::{BatchEncoder, FastRng, PendingMessage};
use super::stats::{record, tighten_timer_slack, Clock, WorkerStats, PACER_SPIN_NS};
use super::wire::{decode_response, encode_request, Connection, FrameReader};
use super::{AckReader, Transport};
use crate::workload::MessageSize;

/// Most bytes of batches put in one Produce request (Kafka's max.request.size is 1 MiB; we
/// allow more so one request can carry a full large batch plus others).
pub const REQUEST_MAX_BYTES: usize = 8 * 1024 * 1024;
/// Broker-side timeout for acks=-1 carried in each request.
pub const PRODUCE_TIMEOUT_MS: i32 = 30_000;
/// How long a finishing producer waits for outstanding acknowledgements.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest the sender sleeps when it has nothing to do, so it notices the stop time.
const IDLE_WAIT_NS: u64 = 5_000_000;
/// Bytes a record adds to its value and key in a batch, roughly (varints, attributes).
const RECORD_OVERHEAD_BYTES: usize = 12;

pub fn parse_compression(name: &str) -> Result<Compression> {
    Ok(match name {
        "none" => Compression::None,
        "gzip" => Compression::Gzip,
        "snappy" => Compression::Snappy,
        "lz4" => Compression::Lz4,
        "zstd" => Compression::Zstd,
        other => bail!("unknown compression {other:?} (none, gzip, snappy, lz4, zstd)"),
    })
}

/// What one producer does.
#[derive(Clone)]
pub struct ProducerSpec {
    pub id: u32,
    pub topic: TopicLayout,
    /// Messages/s for this producer; 0 for as fast as possible.
    pub rate: f64,
    pub acks: i16,
    pub batch_size_bytes: usize,
    pub batch_max_messages: usize,
    pub linger_ns: u64,
    pub max_in_flight: u32,
    pub buffer_bytes: usize,
    pub compression: Compression,
    pub message_size: MessageSize,
    pub keyed: bool,
    pub seed: u64,
    /// Stop taking new messages at this `Clock::now_ns` reading (u64::MAX: not yet known).
    pub stop_at_ns: Arc<AtomicU64>,
    /// Stop after this many value bytes were written (preload); u64::MAX for no limit.
    pub stop_after_bytes: u64,
    pub clock: Clock,
    pub stats: Arc<WorkerStats>,
    pub transport: Transport,
}

/// Counts requests in flight on one connection; the sender waits on it, the reader releases.
#[derive(Default)]
pub struct InFlight {
    count: Mutex<u32>,
    changed: Condvar,
}

impl InFlight {
    pub fn try_acquire(&self, max: u32) -> bool {
        let mut count = self.count.lock().unwrap_or_else(|e| e.into_inner());
        if *count < max {
            *count += 1;
            true
        } else {
            false
        }
    }

    pub fn current(&self) -> u32 {
        *self.count.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn release(&self) {
        let mut count = self.count.lock().unwrap_or_else(|e| e.into_inner());
        *count = count.saturating_sub(1);
        self.changed.notify_all();
    }

    /// Waits until fewer than `max` are in flight, or `timeout` passes.
    pub fn wait_below(&self, max: u32, timeout: Duration) {
        let count = self.count.lock().unwrap_or_else(|e| e.into_inner());
        if *count >= max {
            let _ = self
                .changed
                .wait_timeout_while(count, timeout, |c| *c >= max);
        }
    }

    pub fn wait_zero(&self, timeout: Duration) -> bool {
        let count = self.count.lock().unwrap_or_else(|e| e.into_inner());
        let (count, _) = self
            .changed
            .wait_timeout_while(count, timeout, |c| *c > 0)
            .unwrap_or_else(|e| e.into_inner());
        *count == 0
    }
}

/// What the acknowledgement side needs to account for one request's response.
pub struct RequestMeta {
    pub written_ns: u64,
    pub intended_ns: Vec<u64>,
    pub value_bytes: u64,
}

/// One request's batches: (partition, one encoded RecordBatch).
pub type RequestBatches = Vec<(i32, Bytes)>;

/// The transport half of a producer's link to the broker.
pub trait ProduceLink {
    /// Writes one request carrying `batches`. With acks != 0 the link arranges for
    /// [`Acknowledger::acknowledged`] (or `failed`) to be called once its answer arrives;
    /// with acks=0 the sender accounts for the request itself once this returns.
    fn write(&mut self, batches: RequestBatches, meta: RequestMeta) -> Result<()>;
    /// Called after every acknowledgement came (or the drain timed out): close, join helpers.
    fn close(&mut self);

    // How the sender waits. A link whose acknowledgements are handled on other threads
    // (the defaults) just blocks; a link that handles them on the sender's own thread
    // (QUIC with `--quic-threads 0`) overrides these to do that work while it waits.

    /// Waits until fewer than `max` requests are in flight, or `timeout` passes.
    fn wait_below(&mut self, in_flight: &InFlight, max: u32, timeout: Duration) {
        in_flight.wait_below(max, timeout)
    }
    /// Waits until no request is in flight; false if `timeout` passed first.
    fn wait_zero(&mut self, in_flight: &InFlight, timeout: Duration) -> bool {
        in_flight.wait_zero(timeout)
    }
    /// A fixed-rate sender's wait for its next send time ([`Clock::pace_until`]).
    fn pace_until(&mut self, clock: &Clock, deadline_ns: u64) {
        clock.pace_until(deadline_ns)
    }
    /// Any other wait for a deadline ([`Clock::sleep_until`]).
    fn sleep_until(&mut self, clock: &Clock, deadline_ns: u64) {
        clock.sleep_until(deadline_ns)
    }
}

/// The acknowledgement side's view of a link: frees in-flight slots and records latencies.
#[derive(Clone)]
pub struct Acknowledger {
    pub in_flight: Arc<InFlight>,
    pub stats: Arc<WorkerStats>,
    pub clock: Clock,
}

impl Acknowledger {
    /// Accounts one answered request (its per-partition errors were reported by the
    /// caller) and frees its slot.
    pub fn acknowledged(&self, meta: &RequestMeta, acked_ns: u64) {
        account_acknowledged(meta, acked_ns, &self.stats);
        self.in_flight.release();
    }

    /// The link failed: unblocks the sender (it finds out when it next writes).
    pub fn failed(&self) {
        release_all(&self.in_flight);
    }
}

struct ReadyBatch {
    partition: i32,
    messages: Vec<PendingMessage>,
}

/// One link to the broker (a partition leader's connection over Kafka) and its queue.
struct Link {
    io: Box<dyn ProduceLink>,
    in_flight: Arc<InFlight>,
    ready: VecDeque<ReadyBatch>,
    ready_bytes: usize,
}

impl Link {
    fn new(
        spec: &ProducerSpec,
        open: impl FnOnce(Acknowledger) -> Result<Box<dyn ProduceLink>>,
    ) -> Result<Link> {
        let in_flight = Arc::new(InFlight::default());
        let io = open(Acknowledger {
            in_flight: in_flight.clone(),
            stats: spec.stats.clone(),
            clock: spec.clock,
        })?;
        Ok(Link {
            io,
            in_flight,
            ready: VecDeque::new(),
            ready_bytes: 0,
        })
    }
}

#[derive(Default)]
struct OpenBatch {
    messages: Vec<PendingMessage>,
    bytes: usize,
}

pub fn run(spec: ProducerSpec) -> Result<()> {
    tighten_timer_slack();
    let partitions = spec.topic.leaders.len();
    if partitions == 0 {
        bail!("topic {} has no partitions", spec.topic.name);
    }
    let mut links: Vec<Link> = Vec::new();
    let mut partition_link = Vec::with_capacity(partitions);
    match &spec.transport {
        Transport::Kafka { ack_reader, .. } => {
            // Answers can be read on the sender's thread only when it has one connection
            // to watch while it waits.
            let first = spec.topic.leaders.first();
            let one_leader = spec.topic.leaders.iter().all(|l| Some(l) == first);
            let on_sender = match ack_reader {
                AckReader::Sender => true,
                AckReader::Thread => false,
                AckReader::Auto => spec.rate > 0.0,
            };
            let inline = on_sender && one_leader;
            let mut link_of_leader: HashMap<String, usize> = HashMap::new();
            for leader in &spec.topic.leaders {
                let index = match link_of_leader.get(leader) {
                    Some(index) => *index,
                    None => {
                        links.push(Link::new(&spec, |ack| {
                            KafkaLink::open(leader, &spec, ack, inline)
                                .map(|l| Box::new(l) as Box<dyn ProduceLink>)
                        })?);
                        link_of_leader.insert(leader.clone(), links.len() - 1);
                        links.len() - 1
                    }
                };
                partition_link.push(index);
            }
        }
        Transport::Quic(target) => {
            links.push(Link::new(&spec, |ack| {
                crate::quic::producer::QuicLink::open(target, &spec, ack)
                    .map(|l| Box::new(l) as Box<dyn ProduceLink>)
            })?);
            partition_link.resize(partitions, 0);
        }
    }

    let mut sender = Sender {
        spec: &spec,
        open: (0..partitions).map(|_| OpenBatch::default()).collect(),
        partition_link,
        links,
        encoder: BatchEncoder::new(spec.seed ^ 0x5eed),
        batch_buffer: BytesMut::new(),
        rng: FastRng::new(spec.seed),
        sticky_partition: spec.id as usize % partitions,
        buffered_bytes: 0,
        written_value_bytes: 0,
    };
    let result = sender.run();
    // Drain: wait for outstanding acknowledgements, then close so the readers see EOF.
    for link in &mut sender.links {
        if !link.io.wait_zero(&link.in_flight, DRAIN_TIMEOUT) {
            spec.stats.error(
                "producer: acknowledgements still outstanding after the drain timeout".into(),
            );
        }
        link.io.close();
    }
    result
}

/// A Kafka link: one TCP connection to a partition leader, written by the sender thread, its
/// responses read by a thread of its own, or (`inline`) by the sender while it waits, as
/// the QUIC link does: then an answer wakes one thread, the sender, parked in `ppoll` on
/// the socket, instead of a reader thread that hands it over through a condition variable.
struct KafkaLink {
    writer: TcpStream,
    version: i16,
    topic: kafka_protocol::messages::TopicName,
    acks: i16,
    meta: Option<mpsc::Sender<(i32, RequestMeta)>>,
    reader: Option<JoinHandle<()>>,
    inline: Option<InlineAcks>,
    next_correlation_id: i32,
    /// Reused for every request frame.
    frame: BytesMut,
}

/// The answers of an `inline` link: read and accounted on the sender's thread.
struct InlineAcks {
    reader: FrameReader,
    expected: VecDeque<(i32, RequestMeta)>,
    version: i16,
    acknowledger: Acknowledger,
    /// The connection failed; every slot was released.
    failed: bool,
}

impl InlineAcks {
    /// Accounts every answer that has arrived, without blocking.
    fn drain(&mut self) {
        while !self.failed {
            match self.reader.try_read_frame() {
                Ok(Some(frame)) => {
                    let acked_ns = self.acknowledger.clock.now_ns();
                    let Some(expected) = self.expected.pop_front() else {
                        self.fail("producer: response without a request".into());
                        return;
                    };
                    account_answer(frame, expected, self.version, &self.acknowledger, acked_ns);
                }
                Ok(None) => return,
                Err(error) => {
                    self.fail(format!("producer connection failed: {error:#}"));
                    return;
                }
            }
        }
    }

    fn fail(&mut self, why: String) {
        self.acknowledger.stats.error(why);
        self.failed = true;
        self.acknowledger.failed();
    }

    /// Reads answers until `done` holds or `deadline_ns` passes; true if `done` held.
    fn wait(&mut self, deadline_ns: u64, done: impl Fn() -> bool) -> bool {
        let clock = self.acknowledger.clock;
        loop {
            self.drain();
            if done() || self.failed {
                return done();
            }
            let now = clock.now_ns();
            if now >= deadline_ns {
                return false;
            }
            poll_readable(self.reader.raw_fd(), deadline_ns - now);
        }
    }
}

/// Sleeps in `ppoll` until `fd` is readable or `wait_ns` passes; true if it is readable.
/// Both links wait for answers this way between sends (the QUIC one on its UDP socket), so
/// the kernel wakes and places the two generators alike.
pub(crate) fn poll_readable(fd: std::os::fd::RawFd, wait_ns: u64) -> bool {
    let mut fds = [libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }];
    let timeout = libc::timespec {
        tv_sec: (wait_ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (wait_ns % 1_000_000_000) as libc::c_long,
    };
    // SAFETY: `fds` and `timeout` are valid for the call; no signal mask is passed.
    let ready = unsafe { libc::ppoll(fds.as_mut_ptr(), 1, &timeout, std::ptr::null()) };
    ready > 0 && fds[0].revents != 0
}

impl KafkaLink {
    fn open(
        address: &str,
        spec: &ProducerSpec,
        acknowledger: Acknowledger,
        inline: bool,
    ) -> Result<Self> {
        let connection = Connection::open(address)?;
        let version = connection.version::<ProduceRequest>()?;
        let (writer, reader, _) = connection.split();
        if inline && spec.acks != 0 {
            return Ok(KafkaLink {
                writer,
                version,
                topic: topic_name(&spec.topic.name),
                acks: spec.acks,
                meta: None,
                reader: None,
                inline: Some(InlineAcks {
                    reader,
                    expected: VecDeque::new(),
                    version,
                    acknowledger,
                    failed: false,
                }),
                next_correlation_id: 1,
                frame: BytesMut::new(),
            });
        }
        let (meta_sender, meta_receiver) = mpsc::channel();
        let reader_thread = if spec.acks != 0 {
            Some(
                std::thread::Builder::new()
                    .name(format!("producer-{}-acks", spec.id))
                    .spawn(move || read_acks(reader, meta_receiver, version, acknowledger))?,
            )
        } else {
            None
        };
        Ok(KafkaLink {
            writer,
            version,
            topic: topic_name(&spec.topic.name),
            acks: spec.acks,
            meta: Some(meta_sender),
            reader: reader_thread,
            inline: None,
            next_correlation_id: 1,
            frame: BytesMut::new(),
        })
    }
}

impl ProduceLink for KafkaLink {
    fn write(&mut self, batches: RequestBatches, meta: RequestMeta) -> Result<()> {
        let partition_data = batches
            .into_iter()
            .map(|(partition, records)| {
                PartitionProduceData::default()
                    .with_index(partition)
                    .with_records(Some(records))
            })
            .collect();
        let request = ProduceRequest::default()
            .with_acks(self.acks)
            .with_timeout_ms(PRODUCE_TIMEOUT_MS)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(self.topic.clone())
                .with_partition_data(partition_data)]);
        let correlation_id = self.next_correlation_id;
        self.next_correlation_id = self.next_correlation_id.wrapping_add(1);
        self.frame.clear();
        encode_request(&mut self.frame, correlation_id, self.version, &request)?;
        drop(request);
        if self.acks != 0 {
            if let Some(inline) = &mut self.inline {
                if inline.failed {
                    bail!("producer: the connection failed");
                }
                inline.expected.push_back((correlation_id, meta));
            } else if let Some(sender) = &self.meta {
                sender
                    .send((correlation_id, meta))
                    .context("producer: acknowledgement reader has stopped")?;
            }
        }
        self.writer
            .write_all(&self.frame)
            .context("producer: writing a Produce request")
    }

    fn wait_below(&mut self, in_flight: &InFlight, max: u32, timeout: Duration) {
        match &mut self.inline {
            Some(inline) => {
                let deadline = inline.acknowledger.clock.now_ns() + timeout.as_nanos() as u64;
                inline.wait(deadline, || in_flight.current() < max);
            }
            None => in_flight.wait_below(max, timeout),
        }
    }

    fn wait_zero(&mut self, in_flight: &InFlight, timeout: Duration) -> bool {
        match &mut self.inline {
            Some(inline) => {
                let deadline = inline.acknowledger.clock.now_ns() + timeout.as_nanos() as u64;
                inline.wait(deadline, || in_flight.current() == 0)
            }
            None => in_flight.wait_zero(timeout),
        }
    }

    fn pace_until(&mut self, clock: &Clock, deadline_ns: u64) {
        let Some(inline) = &mut self.inline else {
            return clock.pace_until(deadline_ns);
        };
        // As `Clock::pace_until`, reading answers meanwhile: sleep in `ppoll` until
        // `PACER_SPIN_NS` before the send time, then spin, checking the socket each turn.
        inline.wait(deadline_ns.saturating_sub(PACER_SPIN_NS), || false);
        while clock.now_ns() < deadline_ns {
            inline.drain();
            std::hint::spin_loop();
        }
    }

    fn sleep_until(&mut self, clock: &Clock, deadline_ns: u64) {
        match &mut self.inline {
            Some(inline) => {
                inline.wait(deadline_ns, || false);
            }
            None => clock.sleep_until(deadline_ns),
        }
    }

    fn close(&mut self) {
        self.meta = None;
        let _ = self.writer.shutdown(Shutdown::Both);
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

fn read_acks(
    mut reader: FrameReader,
    metas: mpsc::Receiver<(i32, RequestMeta)>,
    version: i16,
    acknowledger: Acknowledger,
) {
    let stats = &acknowledger.stats;
    loop {
        let frame = match reader.read_frame() {
            Ok(frame) => frame,
            Err(error) => {
                // EOF after the sender shut the socket down is the normal end.
                if metas.try_recv().is_ok() {
                    stats.error(format!("producer connection failed: {error:#}"));
                }
                acknowledger.failed();
                return;
            }
        };
        let acked_ns = acknowledger.clock.now_ns();
        let Ok(expected) = metas.recv() else {
            stats.error("producer: response without a request".into());
            acknowledger.failed();
            return;
        };
        account_answer(frame, expected, version, &acknowledger, acked_ns);
    }
}

/// Accounts one Produce response, the answer to the request `expected` describes.
fn account_answer(
    frame: Bytes,
    (expected_id, meta): (i32, RequestMeta),
    version: i16,
    acknowledger: &Acknowledger,
    acked_ns: u64,
) {
    let stats = &acknowledger.stats;
    match decode_response::<ProduceRequest>(frame, version) {
        Ok((correlation_id, response)) => {
            if correlation_id != expected_id {
                stats.error(format!(
                    "producer: correlation id {correlation_id}, expected {expected_id}"
                ));
            }
            report_partition_errors(&response, stats);
            acknowledger.acknowledged(&meta, acked_ns);
        }
        Err(error) => {
            stats.error(format!("producer: bad Produce response: {error:#}"));
            acknowledger.in_flight.release();
        }
    }
}

fn release_all(in_flight: &InFlight) {
    let mut count = in_flight.count.lock().unwrap_or_else(|e| e.into_inner());
    *count = 0;
    in_flight.changed.notify_all();
}

fn report_partition_errors(response: &ProduceResponse, stats: &WorkerStats) {
    for topic in &response.responses {
        for partition in &topic.partition_responses {
            if partition.error_code != 0 {
                stats.error(format!(
                    "Produce {}/{}: error code {}",
                    topic.name.0.as_str(),
                    partition.index,
                    partition.error_code
                ));
            }
        }
    }
}

fn account_acknowledged(meta: &RequestMeta, acked_ns: u64, stats: &WorkerStats) {
    {
        let mut histograms = stats.histograms.lock().unwrap_or_else(|e| e.into_inner());
        for intended in &meta.intended_ns {
            record(&mut histograms.publish, acked_ns.saturating_sub(*intended));
        }
        histograms
            .publish_service
            .record_n(
                acked_ns.saturating_sub(meta.written_ns).max(1),
                meta.intended_ns.len() as u64,
            )
            .ok();
    }
    WorkerStats::add(
        &stats.counters.acked_messages,
        meta.intended_ns.len() as u64,
    );
    WorkerStats::add(&stats.counters.acked_bytes, meta.value_bytes);
}

struct Sender<'a> {
    spec: &'a ProducerSpec,
    open: Vec<OpenBatch>,
    partition_link: Vec<usize>,
    links: Vec<Link>,
    encoder: BatchEncoder,
    /// Reused buffer the encoded batches are split off.
    batch_buffer: BytesMut,
    rng: FastRng,
    sticky_partition: usize,
    buffered_bytes: usize,
    written_value_bytes: u64,
}

impl Sender<'_> {
    fn run(&mut self) -> Result<()> {
        let spec = self.spec;
        let clock = spec.clock;
        let interval_ns = if spec.rate > 0.0 {
            1e9 / spec.rate
        } else {
            0.0
        };
        let start_ns = clock.now_ns();
        let mut generated: u64 = 0;
        let mut next_intended_ns = start_ns;
        loop {
            let now = clock.now_ns();
            let stopping = now >= spec.stop_at_ns.load(Ordering::Relaxed)
                || self.written_value_bytes >= spec.stop_after_bytes;
            if !stopping {
                if spec.rate > 0.0 {
                    while next_intended_ns <= now && self.buffered_bytes < spec.buffer_bytes {
                        self.add_message(next_intended_ns);
                        generated += 1;
                        next_intended_ns = start_ns + (generated as f64 * interval_ns) as u64;
                    }
                } else if self.links.iter().all(|l| l.ready.is_empty())
                    && self
                        .links
                        .iter()
                        .any(|l| l.in_flight.current() < spec.max_in_flight)
                {
                    self.fill_one_request(now);
                }
            }
            // Close batches whose linger ran out (all of them once stopping).
            for partition in 0..self.open.len() {
                let batch = &self.open[partition];
                if let Some(first) = batch.messages.first() {
                    if stopping || spec.rate == 0.0 || now >= first.intended_ns + spec.linger_ns {
                        self.close(partition);
                    }
                }
            }
            let mut wrote = false;
            for link_index in 0..self.links.len() {
                while !self.links[link_index].ready.is_empty()
                    && self.links[link_index]
                        .in_flight
                        .try_acquire(spec.max_in_flight)
                {
                    self.write_request(link_index)?;
                    wrote = true;
                }
            }
            let anything_pending = self.links.iter().any(|l| !l.ready.is_empty())
                || self.open.iter().any(|b| !b.messages.is_empty());
            if stopping && !anything_pending {
                return Ok(());
            }
            if wrote {
                continue;
            }
            // Nothing could be written: wait for a slot, the next message or a linger deadline.
            let now = clock.now_ns();
            let mut wake_ns = now + IDLE_WAIT_NS;
            if spec.rate > 0.0 && !stopping {
                wake_ns = wake_ns.min(next_intended_ns);
            }
            for batch in &self.open {
                if let Some(first) = batch.messages.first() {
                    wake_ns = wake_ns.min(first.intended_ns + spec.linger_ns);
                }
            }
            let blocked_link = self.links.iter_mut().find(|l| !l.ready.is_empty());
            match blocked_link {
                Some(link) => link.io.wait_below(
                    &link.in_flight,
                    spec.max_in_flight,
                    Duration::from_nanos(wake_ns.saturating_sub(now)),
                ),
                None if spec.rate == 0.0 && !stopping => {
                    // Max rate: wait for any slot.
                    let link = &mut self.links[0];
                    link.io.wait_below(
                        &link.in_flight,
                        spec.max_in_flight,
                        Duration::from_nanos(IDLE_WAIT_NS),
                    );
                }
                // Fixed rate: wake on time (spinning the last stretch), so the pacer's
                // own lateness is not reported as latency.
                None if spec.rate > 0.0 && !stopping => {
                    self.links[0].io.pace_until(&clock, wake_ns)
                }
                None => self.links[0].io.sleep_until(&clock, wake_ns),
            }
        }
    }

    fn add_message(&mut self, intended_ns: u64) {
        let spec = self.spec;
        let value_bytes = spec.message_size.sample(&mut self.rng);
        let (partition, key) = if spec.keyed {
            let key = self.rng.next_u64();
            ((key % self.open.len() as u64) as usize, Some(key))
        } else {
            (self.sticky_partition, None)
        };
        let size = value_bytes as usize + RECORD_OVERHEAD_BYTES + if key.is_some() { 8 } else { 0 };
        let batch = &mut self.open[partition];
        batch.messages.push(PendingMessage {
            intended_ns,
            value_bytes,
            key,
        });
        batch.bytes += size;
        self.buffered_bytes += size;
        if batch.bytes >= spec.batch_size_bytes || batch.messages.len() >= spec.batch_max_messages {
            self.close(partition);
        }
    }

    /// Max rate: one request's worth of messages, stamped `now`.
    fn fill_one_request(&mut self, now: u64) {
        let target = self.spec.batch_size_bytes.min(REQUEST_MAX_BYTES);
        let mut added = 0usize;
        let mut count = 0usize;
        while added < target && count < self.spec.batch_max_messages {
            let before = self.buffered_bytes;
            self.add_message(now);
            added += self.buffered_bytes.saturating_sub(before).max(1);
            count += 1;
            if self.links.iter().any(|l| !l.ready.is_empty()) && !self.spec.keyed {
                break;
            }
        }
    }

    fn close(&mut self, partition: usize) {
        let batch = std::mem::take(&mut self.open[partition]);
        if batch.messages.is_empty() {
            return;
        }
        let link = &mut self.links[self.partition_link[partition]];
        link.ready_bytes += batch.bytes;
        link.ready.push_back(ReadyBatch {
            partition: partition as i32,
            messages: batch.messages,
        });
        if !self.spec.keyed && partition == self.sticky_partition {
            self.sticky_partition = (self.sticky_partition + 1) % self.open.len();
        }
    }

    fn write_request(&mut self, link_index: usize) -> Result<()> {
        let spec = self.spec;
        let clock = spec.clock;
        let batch_timestamp_ms = (clock.now_ns() / 1_000_000) as i64;
        let mut batches: RequestBatches = Vec::new();
        let mut intended_ns = Vec::new();
        let mut value_bytes = 0u64;
        let mut request_bytes = 0usize;
        let link = &mut self.links[link_index];
        while let Some(batch) = link.ready.front() {
            let batch_bytes: usize = batch.messages.iter().map(|m| m.value_bytes as usize).sum();
            if !batches.is_empty() && request_bytes + batch_bytes > REQUEST_MAX_BYTES {
                break;
            }
            let batch = link.ready.pop_front().expect("front exists");
            // Batches are split off one reused buffer; its allocation is reclaimed below,
            // once the link has dropped the slices (Kafka: after encoding the request; QUIC
            // holds them until the peer acknowledged the packets, so a new buffer is taken).
            self.encoder.encode(
                &mut self.batch_buffer,
                &batch.messages,
                spec.compression,
                batch_timestamp_ms,
            )?;
            let encoded = self.batch_buffer.split();
            request_bytes += batch_bytes;
            value_bytes += batch_bytes as u64;
            let accounted: usize = batch
                .messages
                .iter()
                .map(|m| {
                    m.value_bytes as usize
                        + RECORD_OVERHEAD_BYTES
                        + if m.key.is_some() { 8 } else { 0 }
                })
                .sum();
            link.ready_bytes -= accounted;
            self.buffered_bytes -= accounted;
            intended_ns.extend(batch.messages.iter().map(|m| m.intended_ns));
            batches.push((batch.partition, encoded.freeze()));
        }
        let message_count = intended_ns.len() as u64;
        let written_ns_guess = clock.now_ns();
        let meta = RequestMeta {
            written_ns: written_ns_guess,
            intended_ns: if spec.acks != 0 {
                intended_ns.clone()
            } else {
                Vec::new()
            },
            value_bytes,
        };
        link.io.write(batches, meta)?;
        self.batch_buffer.clear();
        self.batch_buffer
            .reserve(request_bytes + request_bytes / 8 + 4096);
        let written_ns = clock.now_ns();
        self.written_value_bytes += value_bytes;
        let stats = &spec.stats;
        WorkerStats::add(&stats.counters.sent_messages, message_count);
        WorkerStats::add(&stats.counters.sent_bytes, value_bytes);
        {
            let mut histograms = stats.histograms.lock().unwrap_or_else(|e| e.into_inner());
            for intended in &intended_ns {
                record(
                    &mut histograms.send_delay,
                    written_ns_guess.saturating_sub(*intended),
                );
            }
            if spec.acks == 0 {
                // No acknowledgement comes: the write is the end of the publish.
                for intended in &intended_ns {
                    record(
                        &mut histograms.publish,
                        written_ns.saturating_sub(*intended),
                    );
                }
                histograms
                    .publish_service
                    .record_n((written_ns - written_ns_guess).max(1), message_count)
                    .ok();
            }
        }
        if spec.acks == 0 {
            WorkerStats::add(&stats.counters.acked_messages, message_count);
            WorkerStats::add(&stats.counters.acked_bytes, value_bytes);
            link.in_flight.release();
        }
        Ok(())
    }
}
