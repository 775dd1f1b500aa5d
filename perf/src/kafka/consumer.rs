//! One consumer: fetcher threads (one per partition leader) running Fetch long polls, in an
//! incremental fetch session (KIP-227) as Java clients do, or sessionless, and, for the
//! classic group protocol, a membership loop on the consumer's own thread (FindCoordinator,
//! JoinGroup, SyncGroup with a range assignor run by the leader, Heartbeat, OffsetCommit,
//! LeaveGroup).
//!
//! End-to-end latency: every record's value starts with its intended send time (see
//! `records`); a fetcher takes one clock reading per response and records `receipt - sent` for
//! each record in it. Positions live in one map per consumer, so a rebalance that hands a
//! partition back resumes where this consumer stopped.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::{BufMut, Bytes, BytesMut};
use hdrhistogram::Histogram;
use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    BrokerId, ConsumerProtocolAssignment, ConsumerProtocolSubscription, FetchRequest,
    FindCoordinatorRequest, GroupId, HeartbeatRequest, JoinGroupRequest, LeaveGroupRequest,
    OffsetCommitRequest, SyncGroupRequest,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use super::cluster::{list_offsets, topic_name, TopicLayout, EARLIEST_TIMESTAMP, LATEST_TIMESTAMP};
use super::records::{walk_batches, WalkSummary};
use super::stats::{record, Clock, WorkerStats};
use super::wire::Connection;

/// Kafka error codes the membership loop reacts to.
const OFFSET_OUT_OF_RANGE: i16 = 1;
const COORDINATOR_LOAD_IN_PROGRESS: i16 = 14;
const COORDINATOR_NOT_AVAILABLE: i16 = 15;
const NOT_COORDINATOR: i16 = 16;
const ILLEGAL_GENERATION: i16 = 22;
const UNKNOWN_MEMBER_ID: i16 = 25;
const REBALANCE_IN_PROGRESS: i16 = 27;
const MEMBER_ID_REQUIRED: i16 = 79;

/// Group timings, as a Java consumer would set them for a benchmark.
pub const SESSION_TIMEOUT_MS: i32 = 10_000;
pub const REBALANCE_TIMEOUT_MS: i32 = 30_000;
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);
pub const COMMIT_INTERVAL: Duration = Duration::from_secs(5);
/// Most JoinGroup/SyncGroup attempts before the consumer gives up.
pub const MAX_JOIN_ATTEMPTS: u32 = 50;
/// The assignor's name in JoinGroup.
pub const RANGE_ASSIGNOR: &str = "range";
/// Send times older than this are not from this run's producers: no end-to-end sample.
const PLAUSIBLE_SEND_AGE_NS: u64 = 3_600 * 1_000_000_000;
/// Send times this far in the future are not ours either.
const PLAUSIBLE_CLOCK_SKEW_NS: u64 = 1_000_000_000;
/// Consumer protocol version used for subscriptions and assignments (0: every broker reads it).
const CONSUMER_PROTOCOL_VERSION: i16 = 0;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartPosition {
    Latest,
    Earliest,
}

#[derive(Debug, Clone)]
pub enum Membership {
    /// Take these partitions without a group.
    Explicit(Vec<i32>),
    /// Join `group` with the classic protocol.
    Classic { group: String },
    /// A fixed share of a group's partitions, committing offsets to `group` without
    /// membership: what a group becomes over QUIC, whose protocol has group offsets but no
    /// membership. Over Kafka the same as `Explicit`.
    Static { partitions: Vec<i32>, group: String },
}

#[derive(Clone)]
pub struct ConsumerSpec {
    pub id: u32,
    pub bootstrap: String,
    pub topic: TopicLayout,
    pub membership: Membership,
    pub start: StartPosition,
    /// On reaching the end of a partition, start again from its log start (re-reading recent
    /// data for a catch-up throughput test).
    pub rewind_at_end: bool,
    pub fetch_max_wait_ms: i32,
    pub fetch_min_bytes: i32,
    pub fetch_max_bytes: i32,
    pub fetch_partition_max_bytes: i32,
    pub verify_crc: bool,
    /// Fetch in an incremental fetch session (KIP-227; see [`FetchSession`]).
    pub fetch_sessions: bool,
    pub stop: Arc<AtomicBool>,
    pub clock: Clock,
    pub stats: Arc<WorkerStats>,
}

type Positions = Arc<Mutex<HashMap<i32, i64>>>;

pub fn run(spec: ConsumerSpec) -> Result<()> {
    let positions: Positions = Arc::new(Mutex::new(HashMap::new()));
    match spec.membership.clone() {
        Membership::Explicit(partitions) | Membership::Static { partitions, .. } => {
            let fetchers = Fetchers::start(&spec, &partitions, &positions)?;
            while !spec.stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(20));
            }
            fetchers.stop()
        }
        Membership::Classic { group } => run_group(&spec, &group, &positions),
    }
}

/// Fetcher threads for one assignment, stopped together.
struct Fetchers {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<Result<()>>>,
}

impl Fetchers {
    fn start(spec: &ConsumerSpec, partitions: &[i32], positions: &Positions) -> Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut by_leader: HashMap<String, Vec<i32>> = HashMap::new();
        for partition in partitions {
            let leader = spec
                .topic
                .leaders
                .get(*partition as usize)
                .with_context(|| format!("partition {partition} out of range"))?;
            by_leader
                .entry(leader.clone())
                .or_default()
                .push(*partition);
        }
        let mut threads = Vec::new();
        for (leader, partitions) in by_leader {
            let spec = spec.clone();
            let stop = stop.clone();
            let positions = positions.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("consumer-{}-fetch", spec.id))
                    .spawn(move || {
                        let result = fetch_loop(&spec, &leader, &partitions, &positions, &stop);
                        // Reported at once, so a failure shows in the progress line and the
                        // error count instead of when the run ends.
                        if let Err(error) = &result {
                            spec.stats
                                .error(format!("consumer fetching from {leader}: {error:#}"));
                        }
                        result
                    })?,
            );
        }
        Ok(Self { stop, threads })
    }

    /// Stops and joins the fetchers. Their errors were reported when they happened; only a
    /// panic is new here.
    fn stop(self) -> Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        let mut panicked = false;
        for thread in self.threads {
            panicked |= thread.join().is_err();
        }
        if panicked {
            anyhow::bail!("a fetcher thread panicked");
        }
        Ok(())
    }
}

fn fetch_loop(
    spec: &ConsumerSpec,
    leader: &str,
    partitions: &[i32],
    positions: &Positions,
    stop: &AtomicBool,
) -> Result<()> {
    let mut connection = Connection::open(leader)?;
    let topic = &spec.topic.name;
    let starts = {
        let timestamp = match spec.start {
            StartPosition::Latest => LATEST_TIMESTAMP,
            StartPosition::Earliest => EARLIEST_TIMESTAMP,
        };
        list_offsets(&mut connection, topic, partitions, timestamp)?
    };
    let log_starts = if spec.rewind_at_end {
        list_offsets(&mut connection, topic, partitions, EARLIEST_TIMESTAMP)?
    } else {
        HashMap::new()
    };
    let mut offsets: Vec<(i32, i64)> = {
        let known = positions.lock().unwrap_or_else(|e| e.into_inner());
        partitions
            .iter()
            .map(|p| (*p, known.get(p).copied().unwrap_or(starts[p])))
            .collect()
    };
    // Each partition's high watermark as last answered. In a fetch session the broker
    // leaves out a partition with nothing new, so a caught-up partition must be recognised
    // from what an earlier answer said, not from its entry in this one.
    let mut high_watermarks: Vec<Option<i64>> = vec![None; offsets.len()];
    let name = topic_name(topic);
    let mut session = FetchSession::new(spec.fetch_sessions);
    while !spec.stop.load(Ordering::Relaxed) && !stop.load(Ordering::Relaxed) {
        let (session_id, epoch, named) = session.next(&offsets);
        let request = FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(spec.fetch_max_wait_ms)
            .with_min_bytes(spec.fetch_min_bytes)
            .with_max_bytes(spec.fetch_max_bytes)
            .with_isolation_level(0)
            .with_session_id(session_id)
            .with_session_epoch(epoch)
            .with_topics(if named.is_empty() {
                Vec::new()
            } else {
                vec![FetchTopic::default()
                    .with_topic(name.clone())
                    .with_partitions(
                        named
                            .iter()
                            .map(|(partition, offset)| {
                                FetchPartition::default()
                                    .with_partition(*partition)
                                    .with_current_leader_epoch(-1)
                                    .with_fetch_offset(*offset)
                                    .with_last_fetched_epoch(-1)
                                    .with_log_start_offset(-1)
                                    .with_partition_max_bytes(spec.fetch_partition_max_bytes)
                            })
                            .collect(),
                    )]
            });
        let response = connection.call(&request)?;
        let received_ns = spec.clock.now_ns();
        if !session.answered(response.error_code, response.session_id, named) {
            // The broker lost or refused the session: start a new one at once.
            continue;
        }
        if response.error_code != 0 {
            spec.stats.error(format!(
                "Fetch: top-level error code {}",
                response.error_code
            ));
            std::thread::sleep(Duration::from_millis(100));
            continue;
        }
        let mut messages = 0u64;
        let mut bytes = 0u64;
        let mut reset = Vec::new();
        {
            let mut histograms = spec
                .stats
                .histograms
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            for topic_response in &response.responses {
                for partition in &topic_response.partitions {
                    let Some(at) = offsets
                        .iter()
                        .position(|(p, _)| *p == partition.partition_index)
                    else {
                        continue;
                    };
                    let slot = &mut offsets[at];
                    if partition.error_code == OFFSET_OUT_OF_RANGE {
                        reset.push(partition.partition_index);
                        continue;
                    }
                    if partition.error_code != 0 {
                        spec.stats.error(format!(
                            "Fetch {topic}/{}: error code {}",
                            partition.partition_index, partition.error_code
                        ));
                        continue;
                    }
                    high_watermarks[at] = Some(partition.high_watermark);
                    let records = partition.records.clone().unwrap_or_else(Bytes::new);
                    let fetch_offset = slot.1;
                    let summary = walk_received(
                        &records,
                        spec.verify_crc,
                        received_ns,
                        &mut histograms.end_to_end,
                    )
                    .with_context(|| {
                        format!(
                            "Fetch {topic}/{} from offset {fetch_offset}: {} bytes of records",
                            partition.partition_index,
                            records.len()
                        )
                    })?;
                    messages += summary.records;
                    bytes += summary.value_bytes;
                    if let Some(next) = summary.next_offset {
                        // Skip batches below the fetch offset (a broker may return the batch
                        // containing it) without going backwards.
                        slot.1 = slot.1.max(next);
                    }
                }
            }
        }
        if spec.rewind_at_end {
            // Every partition read to its end starts over, whether or not this answer
            // named it.
            for ((partition, offset), high_watermark) in offsets.iter_mut().zip(&high_watermarks) {
                if high_watermark.is_some_and(|hw| *offset >= hw) {
                    *offset = log_starts.get(partition).copied().unwrap_or(0);
                }
            }
        }
        WorkerStats::add(&spec.stats.counters.consumed_messages, messages);
        WorkerStats::add(&spec.stats.counters.consumed_bytes, bytes);
        if !reset.is_empty() {
            let timestamp = match spec.start {
                StartPosition::Latest => LATEST_TIMESTAMP,
                StartPosition::Earliest => EARLIEST_TIMESTAMP,
            };
            let fresh = list_offsets(&mut connection, topic, &reset, timestamp)?;
            for (partition, offset) in offsets.iter_mut() {
                if let Some(new) = fresh.get(partition) {
                    *offset = *new;
                }
            }
        }
        let mut known = positions.lock().unwrap_or_else(|e| e.into_inner());
        for (partition, offset) in &offsets {
            known.insert(*partition, *offset);
        }
    }
    Ok(())
}

/// The client side of an incremental fetch session (KIP-227), Kafka's `FetchSessionHandler`
/// in miniature: the first fetch names every partition and asks for a session (epoch 0);
/// later ones name only partitions whose fetch offset moved since the broker last heard
/// it. Disabled, every fetch is sessionless (id 0, epoch -1) and names every partition.
struct FetchSession {
    enabled: bool,
    id: i32,
    /// The epoch of the next request (0: a full fetch that opens a session).
    epoch: i32,
    /// The fetch offsets the broker's session holds.
    held: HashMap<i32, i64>,
}

const FETCH_SESSION_ID_NOT_FOUND: i16 = 70;
const INVALID_FETCH_SESSION_EPOCH: i16 = 71;

impl FetchSession {
    fn new(enabled: bool) -> Self {
        FetchSession {
            enabled,
            id: 0,
            epoch: 0,
            held: HashMap::new(),
        }
    }

    /// The next request's session id, epoch, and the partitions it names.
    fn next(&self, offsets: &[(i32, i64)]) -> (i32, i32, Vec<(i32, i64)>) {
        if !self.enabled {
            return (0, -1, offsets.to_vec());
        }
        if self.id == 0 || self.epoch == 0 {
            return (self.id, 0, offsets.to_vec());
        }
        let moved = offsets
            .iter()
            .filter(|(p, offset)| self.held.get(p) != Some(offset))
            .copied()
            .collect();
        (self.id, self.epoch, moved)
    }

    /// Takes in an answer to a request that named `named`. False: the session is gone
    /// (or was refused) and the answer carries nothing; the next request starts over.
    fn answered(&mut self, error_code: i16, session_id: i32, named: Vec<(i32, i64)>) -> bool {
        if !self.enabled {
            return true;
        }
        if matches!(
            error_code,
            FETCH_SESSION_ID_NOT_FOUND | INVALID_FETCH_SESSION_EPOCH
        ) {
            *self = FetchSession::new(true);
            return false;
        }
        if error_code != 0 {
            return true;
        }
        if self.epoch == 0 {
            // A full answer: a session if the broker made one (else try again next time).
            self.id = session_id;
            self.held = named.into_iter().collect();
            self.epoch = if session_id == 0 { 0 } else { 1 };
        } else if session_id != self.id {
            *self = FetchSession::new(true);
        } else {
            self.held.extend(named);
            self.epoch = if self.epoch == i32::MAX {
                1
            } else {
                self.epoch + 1
            };
        }
        true
    }
}

/// Walks one partition's received records (see `walk_batches`) and records the end-to-end
/// latency of each value: receipt minus its embedded send time. Only plausible send times
/// count: records from other producers (or the sink's prebuilt ones, stamped 0) carry none.
pub fn walk_received(
    records: &Bytes,
    verify_crc: bool,
    received_ns: u64,
    end_to_end: &mut Histogram<u64>,
) -> Result<WalkSummary> {
    walk_batches(records, verify_crc, |sent_ns| {
        if sent_ns > received_ns.saturating_sub(PLAUSIBLE_SEND_AGE_NS)
            && sent_ns <= received_ns + PLAUSIBLE_CLOCK_SKEW_NS
        {
            record(end_to_end, received_ns.saturating_sub(sent_ns));
        }
    })
}

fn group_id(group: &str) -> GroupId {
    GroupId(StrBytes::from_string(group.to_string()))
}

fn encode_versioned<M: Encodable>(message: &M, version: i16) -> Result<Bytes> {
    let mut out = BytesMut::new();
    out.put_i16(version);
    message.encode(&mut out, version)?;
    Ok(out.freeze())
}

fn decode_versioned<M: Decodable>(mut bytes: Bytes) -> Result<M> {
    if bytes.len() < 2 {
        bail!("consumer protocol blob of {} bytes", bytes.len());
    }
    let version = i16::from_be_bytes([bytes[0], bytes[1]]);
    let _ = bytes.split_to(2);
    // Newer versions only add fields at the end; read them as the newest we know.
    M::decode(&mut bytes, version.min(3))
}

/// The range assignor: for each topic, members sorted by id get contiguous partition ranges,
/// the first `partitions % members` one extra. Pure, so it is tested directly.
pub fn range_assign(
    members: &[(String, Vec<String>)],
    partitions_of: &HashMap<String, u32>,
) -> HashMap<String, Vec<(String, Vec<i32>)>> {
    let mut assignment: HashMap<String, Vec<(String, Vec<i32>)>> = members
        .iter()
        .map(|(member, _)| (member.clone(), Vec::new()))
        .collect();
    let mut topics: Vec<&String> = partitions_of.keys().collect();
    topics.sort();
    for topic in topics {
        let mut subscribed: Vec<&String> = members
            .iter()
            .filter(|(_, topics)| topics.contains(topic))
            .map(|(member, _)| member)
            .collect();
        subscribed.sort();
        if subscribed.is_empty() {
            continue;
        }
        let partitions = partitions_of[topic] as usize;
        let per_member = partitions / subscribed.len();
        let extra = partitions % subscribed.len();
        for (index, member) in subscribed.iter().enumerate() {
            let start = index * per_member + index.min(extra);
            let count = per_member + usize::from(index < extra);
            let range: Vec<i32> = (start..start + count).map(|p| p as i32).collect();
            if !range.is_empty() {
                assignment
                    .get_mut(*member)
                    .expect("every member has an entry")
                    .push((topic.clone(), range));
            }
        }
    }
    assignment
}

struct GroupSession {
    coordinator: Connection,
    group: String,
    member_id: String,
    generation_id: i32,
}

fn run_group(spec: &ConsumerSpec, group: &str, positions: &Positions) -> Result<()> {
    let coordinator = find_coordinator(&spec.bootstrap, group)?;
    let mut session = GroupSession {
        coordinator,
        group: group.to_string(),
        member_id: String::new(),
        generation_id: -1,
    };
    let mut result = Ok(());
    'membership: while !spec.stop.load(Ordering::Relaxed) {
        let partitions = join_and_sync(spec, &mut session)?;
        let fetchers = Fetchers::start(spec, &partitions, positions)?;
        let mut last_commit = Instant::now();
        loop {
            sleep_unless_stopped(&spec.stop, HEARTBEAT_INTERVAL);
            if spec.stop.load(Ordering::Relaxed) {
                result = fetchers.stop();
                commit(spec, &mut session, positions);
                let leave = LeaveGroupRequest::default()
                    .with_group_id(group_id(group))
                    .with_member_id(StrBytes::from_string(session.member_id.clone()))
                    .with_members(vec![
                        kafka_protocol::messages::leave_group_request::MemberIdentity::default()
                            .with_member_id(StrBytes::from_string(session.member_id.clone())),
                    ]);
                let _ = session.coordinator.call(&leave);
                break 'membership;
            }
            let heartbeat = HeartbeatRequest::default()
                .with_group_id(group_id(group))
                .with_generation_id(session.generation_id)
                .with_member_id(StrBytes::from_string(session.member_id.clone()));
            let error_code = session.coordinator.call(&heartbeat)?.error_code;
            if last_commit.elapsed() >= COMMIT_INTERVAL {
                commit(spec, &mut session, positions);
                last_commit = Instant::now();
            }
            match error_code {
                0 => {}
                REBALANCE_IN_PROGRESS | ILLEGAL_GENERATION | UNKNOWN_MEMBER_ID => {
                    fetchers.stop()?;
                    if error_code != REBALANCE_IN_PROGRESS {
                        session.member_id.clear();
                    }
                    continue 'membership;
                }
                other => bail!("Heartbeat for group {group}: error code {other}"),
            }
        }
    }
    result
}

fn sleep_unless_stopped(stop: &AtomicBool, total: Duration) {
    let deadline = Instant::now() + total;
    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn find_coordinator(bootstrap: &str, group: &str) -> Result<Connection> {
    let mut connection = Connection::open(bootstrap)?;
    for _ in 0..MAX_JOIN_ATTEMPTS {
        let request = FindCoordinatorRequest::default()
            .with_key(StrBytes::from_string(group.to_string()))
            .with_key_type(0);
        let response = connection.call(&request)?;
        match response.error_code {
            0 => {
                let address = format!("{}:{}", response.host.as_str(), response.port);
                return Connection::open(&address);
            }
            COORDINATOR_NOT_AVAILABLE | COORDINATOR_LOAD_IN_PROGRESS | NOT_COORDINATOR => {
                std::thread::sleep(Duration::from_millis(100));
            }
            other => bail!("FindCoordinator {group}: error code {other}"),
        }
    }
    bail!("FindCoordinator {group}: no coordinator after {MAX_JOIN_ATTEMPTS} attempts")
}

/// JoinGroup then SyncGroup until both succeed; returns this member's partitions of the topic.
fn join_and_sync(spec: &ConsumerSpec, session: &mut GroupSession) -> Result<Vec<i32>> {
    let topic = spec.topic.name.clone();
    let subscription = encode_versioned(
        &ConsumerProtocolSubscription::default()
            .with_topics(vec![StrBytes::from_string(topic.clone())]),
        CONSUMER_PROTOCOL_VERSION,
    )?;
    for _ in 0..MAX_JOIN_ATTEMPTS {
        if spec.stop.load(Ordering::Relaxed) {
            return Ok(Vec::new());
        }
        let join = JoinGroupRequest::default()
            .with_group_id(group_id(&session.group))
            .with_session_timeout_ms(SESSION_TIMEOUT_MS)
            .with_rebalance_timeout_ms(REBALANCE_TIMEOUT_MS)
            .with_member_id(StrBytes::from_string(session.member_id.clone()))
            .with_protocol_type(StrBytes::from_static_str("consumer"))
            .with_protocols(vec![JoinGroupRequestProtocol::default()
                .with_name(StrBytes::from_static_str(RANGE_ASSIGNOR))
                .with_metadata(subscription.clone())]);
        let joined = session.coordinator.call(&join)?;
        match joined.error_code {
            0 => {}
            MEMBER_ID_REQUIRED => {
                session.member_id = joined.member_id.as_str().to_string();
                continue;
            }
            UNKNOWN_MEMBER_ID => {
                session.member_id.clear();
                continue;
            }
            REBALANCE_IN_PROGRESS | COORDINATOR_LOAD_IN_PROGRESS => {
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
            other => bail!("JoinGroup {}: error code {other}", session.group),
        }
        session.member_id = joined.member_id.as_str().to_string();
        session.generation_id = joined.generation_id;
        let mut assignments = Vec::new();
        if joined.leader.as_str() == session.member_id {
            let mut members = Vec::new();
            for member in &joined.members {
                let subscription: ConsumerProtocolSubscription =
                    decode_versioned(member.metadata.clone())?;
                members.push((
                    member.member_id.as_str().to_string(),
                    subscription
                        .topics
                        .iter()
                        .map(|t| t.as_str().to_string())
                        .collect(),
                ));
            }
            let partitions_of = HashMap::from([(topic.clone(), spec.topic.leaders.len() as u32)]);
            for (member, topics) in range_assign(&members, &partitions_of) {
                let assignment = ConsumerProtocolAssignment::default().with_assigned_partitions(
                    topics
                        .into_iter()
                        .map(|(topic, partitions)| {
                            TopicPartition::default()
                                .with_topic(topic_name(&topic))
                                .with_partitions(partitions)
                        })
                        .collect(),
                );
                assignments.push(
                    SyncGroupRequestAssignment::default()
                        .with_member_id(StrBytes::from_string(member))
                        .with_assignment(encode_versioned(&assignment, CONSUMER_PROTOCOL_VERSION)?),
                );
            }
        }
        let sync = SyncGroupRequest::default()
            .with_group_id(group_id(&session.group))
            .with_generation_id(session.generation_id)
            .with_member_id(StrBytes::from_string(session.member_id.clone()))
            .with_protocol_type(Some(StrBytes::from_static_str("consumer")))
            .with_protocol_name(Some(StrBytes::from_static_str(RANGE_ASSIGNOR)))
            .with_assignments(assignments);
        let synced = session.coordinator.call(&sync)?;
        match synced.error_code {
            0 => {}
            REBALANCE_IN_PROGRESS | ILLEGAL_GENERATION => continue,
            UNKNOWN_MEMBER_ID => {
                session.member_id.clear();
                continue;
            }
            other => bail!("SyncGroup {}: error code {other}", session.group),
        }
        if synced.assignment.is_empty() {
            return Ok(Vec::new());
        }
        let assignment: ConsumerProtocolAssignment = decode_versioned(synced.assignment)?;
        return Ok(assignment
            .assigned_partitions
            .iter()
            .filter(|t| t.topic.0.as_str() == topic)
            .flat_map(|t| t.partitions.iter().copied())
            .collect());
    }
    bail!(
        "group {}: no stable assignment after {MAX_JOIN_ATTEMPTS} attempts",
        session.group
    )
}

fn commit(spec: &ConsumerSpec, session: &mut GroupSession, positions: &Positions) {
    let known: Vec<(i32, i64)> = positions
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .map(|(p, o)| (*p, *o))
        .collect();
    if known.is_empty() {
        return;
    }
    let request = OffsetCommitRequest::default()
        .with_group_id(group_id(&session.group))
        .with_generation_id_or_member_epoch(session.generation_id)
        .with_member_id(StrBytes::from_string(session.member_id.clone()))
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(topic_name(&spec.topic.name))
            .with_partitions(
                known
                    .iter()
                    .map(|(partition, offset)| {
                        OffsetCommitRequestPartition::default()
                            .with_partition_index(*partition)
                            .with_committed_offset(*offset)
                            .with_committed_leader_epoch(-1)
                    })
                    .collect(),
            )]);
    // A failed commit is not a benchmark failure (a rebalance may have just happened).
    let _ = session.coordinator.call(&request);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_assignor_splits_like_kafka() {
        let members: Vec<(String, Vec<String>)> = ["c", "a", "b"]
            .iter()
            .map(|m| (m.to_string(), vec!["t".to_string()]))
            .collect();
        let assignment = range_assign(&members, &HashMap::from([("t".to_string(), 8)]));
        assert_eq!(assignment["a"], vec![("t".to_string(), vec![0, 1, 2])]);
        assert_eq!(assignment["b"], vec![("t".to_string(), vec![3, 4, 5])]);
        assert_eq!(assignment["c"], vec![("t".to_string(), vec![6, 7])]);
        let more_members: Vec<(String, Vec<String>)> = (0..10)
            .map(|m| (format!("m{m:02}"), vec!["t".to_string()]))
            .collect();
        let sparse = range_assign(&more_members, &HashMap::from([("t".to_string(), 3)]));
        let assigned: usize = sparse.values().flatten().map(|(_, p)| p.len()).sum();
        assert_eq!(assigned, 3);
    }

    #[test]
    fn consumer_protocol_round_trip() {
        let assignment = ConsumerProtocolAssignment::default().with_assigned_partitions(vec![
            TopicPartition::default()
                .with_topic(topic_name("t"))
                .with_partitions(vec![1, 2]),
        ]);
        let bytes = encode_versioned(&assignment, 0).unwrap();
        let back: ConsumerProtocolAssignment = decode_versioned(bytes).unwrap();
        assert_eq!(back, assignment);
    }
}
