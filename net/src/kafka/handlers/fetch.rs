//! Fetch (v4+) with long polling. Reads happen on the owning shards and return views of
//! the engine's own buffers; the response carries them to the socket without a copy.
//!
//! Sessions (KIP-227, Fetch v7+): `fetch_session` holds the rules and the per-shard cache;
//! this module reads what a session (or a sessionless request) names and, for an
//! incremental fetch, answers with only the partitions that have something new.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::kafka::broker::shard;
use crate::kafka::errors::UNKNOWN_TOPIC_ID;
use crate::kafka::handlers::fetch_session::{
    Outcome, Owners, Plan, SessionCache, SessionPartition, TopicRef,
};
use crate::kafka::limits::{MAX_FETCH_RESPONSE_BYTES, MAX_FETCH_WAIT_MS};
use crate::service::{self, ReadPartition, ReadRequest};
use bytes::Bytes;
use kafka_protocol::error::ResponseError as E;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{FetchRequest, FetchResponse, TopicName};
use uuid::Uuid;

/// A fetch response plus the record buffers it references.
pub struct FetchReply {
    pub response: FetchResponse,
    /// Record buffers placed directly in `response` (one buffer per partition).
    pub direct: Vec<Bytes>,
    /// Partitions whose records span several buffers: the placeholder put in the
    /// response, and the buffers to send in its place.
    pub spliced: Vec<(Bytes, Vec<Bytes>)>,
}

/// Placeholders are distinct slices of this zero region: the encoder never reads them,
/// the scatter writer recognises them by address and substitutes the real buffers. It
/// lives in .bss, so it costs address space, not memory.
static PLACEHOLDER_REGION: [u8; MAX_FETCH_RESPONSE_BYTES + 65_536] =
    [0; MAX_FETCH_RESPONSE_BYTES + 65_536];

thread_local! {
    /// This shard's fetch sessions, created on first use.
    static SESSIONS: RefCell<Option<SessionCache>> = const { RefCell::new(None) };
}

/// Runs `f` on this shard's session cache. Never held across an `.await`.
fn with_sessions<R>(f: impl FnOnce(&mut SessionCache) -> R) -> R {
    SESSIONS.with(|cell| {
        let mut cell = cell.borrow_mut();
        let cache = cell.get_or_insert_with(|| {
            let me = shard();
            SessionCache::new(me.id().0 as u32, me.shard_count() as u32)
        });
        f(cache)
    })
}

/// Where the partitions of fetch session `id` live, for a connection deciding whether to
/// move (`server.rs`): an incremental request names only the partitions that changed.
pub fn session_owners(id: i32) -> Option<Owners> {
    let me = shard();
    with_sessions(|cache| {
        cache.owners(id, |p| match &p.topic {
            TopicRef::Name(n) => Some(me.owner_of(n.0.as_str(), p.partition)),
            TopicRef::Id(u) => me
                .topic_by_id(u.as_bytes())
                .map(|m| me.owner_of(&m.name, p.partition)),
        })
    })
}

/// Where a read partition's answer goes: (topic index, partition index) in the response.
type Place = (usize, usize);

struct Got {
    topic_index: usize,
    partition_index: usize,
    result: Result<(Vec<Bytes>, i64, i64), i16>,
}

/// One topic of a fetch, as the request or the session names it.
struct TopicWant {
    name: TopicName,
    id: Uuid,
    /// (partition, fetch offset, partition max bytes)
    partitions: Vec<(i32, i64, i32)>,
}

/// The limits every fetch carries, whatever names its partitions.
struct Limits {
    max_wait: Duration,
    min_bytes: usize,
    max_bytes: usize,
}

fn topic_ref(name: &TopicName, id: Uuid, version: i16) -> TopicRef {
    if version >= 13 {
        TopicRef::Id(id)
    } else {
        TopicRef::Name(name.clone())
    }
}

fn session_error(code: i16) -> FetchReply {
    FetchReply {
        response: FetchResponse::default()
            .with_error_code(code)
            .with_session_id(0),
        direct: Vec::new(),
        spliced: Vec::new(),
    }
}

pub async fn handle(req: FetchRequest, version: i16) -> FetchReply {
    let limits = Limits {
        max_wait: Duration::from_millis(req.max_wait_ms.clamp(0, MAX_FETCH_WAIT_MS) as u64),
        min_bytes: req.min_bytes.max(0) as usize,
        max_bytes: (req.max_bytes.max(0) as usize).clamp(1, MAX_FETCH_RESPONSE_BYTES),
    };
    let (id, epoch) = (req.session_id, req.session_epoch);
    if version < 7 || (id == 0 && epoch < 0) {
        return full(req, version, &limits).await;
    }
    if epoch <= 0 {
        if id != 0 {
            with_sessions(|c| c.close(id));
        }
        if epoch < 0 {
            return full(req, version, &limits).await;
        }
        // A full fetch that opens a session over the partitions it names.
        let wanted = named_partitions(&req, version);
        let plan = with_sessions(|c| c.create(wanted, Instant::now()));
        let mut reply = full(req, version, &limits).await;
        if let Some(plan) = plan {
            record_full_answer(&plan, &reply.response, version);
            reply.response.session_id = plan.session_id;
        }
        return reply;
    }
    // Incremental.
    let upserts = named_partitions(&req, version);
    let forgotten: Vec<(TopicRef, i32)> = req
        .forgotten_topics_data
        .iter()
        .flat_map(|t| {
            let topic = topic_ref(&t.topic, t.topic_id, version);
            t.partitions.iter().map(move |&p| (topic.clone(), p))
        })
        .collect();
    let plan = match with_sessions(|c| c.update(id, epoch, upserts, &forgotten, Instant::now())) {
        Ok(plan) => plan,
        Err(code) => return session_error(code),
    };
    incremental(plan, version, &limits).await
}

/// The partitions a request names, in its order, as a session holds them.
fn named_partitions(req: &FetchRequest, version: i16) -> Vec<SessionPartition> {
    req.topics
        .iter()
        .flat_map(|t| {
            let topic = topic_ref(&t.topic, t.topic_id, version);
            t.partitions.iter().map(move |p| {
                SessionPartition::new(
                    topic.clone(),
                    p.partition,
                    p.fetch_offset,
                    p.partition_max_bytes,
                )
            })
        })
        .collect()
}

/// A full fetch of exactly the partitions the request names, in its order.
async fn full(req: FetchRequest, version: i16, limits: &Limits) -> FetchReply {
    let topics = req
        .topics
        .into_iter()
        .map(|t| TopicWant {
            name: t.topic,
            id: t.topic_id,
            partitions: t
                .partitions
                .iter()
                .map(|p| (p.partition, p.fetch_offset, p.partition_max_bytes))
                .collect(),
        })
        .collect();
    fetch(topics, version, limits).await
}

/// Reads every partition of a session and answers with those that changed.
async fn incremental(plan: Plan, version: i16, limits: &Limits) -> FetchReply {
    // Grouped by topic in order of first appearance; session order within a topic. Each
    // plan partition's place in the answer (topic, partition index) is kept, so that what
    // the fetch found is matched to the session by position, not looked up by name.
    let mut topics: Vec<TopicWant> = Vec::new();
    let mut topic_at: HashMap<&TopicRef, usize> = HashMap::new();
    let mut places: Vec<(usize, usize)> = Vec::with_capacity(plan.partitions.len());
    let mut last: Option<(&TopicRef, usize)> = None;
    let me = shard();
    for p in &plan.partitions {
        let at = match last {
            // Sessions hold a topic's partitions together; skip the hash for a run.
            Some((topic, at)) if *topic == p.topic => at,
            _ => *topic_at.entry(&p.topic).or_insert_with(|| {
                let (name, id) = match &p.topic {
                    TopicRef::Name(n) => (n.clone(), Uuid::nil()),
                    TopicRef::Id(u) => (
                        me.topic_by_id(u.as_bytes())
                            .map(|m| crate::kafka::handlers::topic_name(&m.name))
                            .unwrap_or_default(),
                        *u,
                    ),
                };
                topics.push(TopicWant {
                    name,
                    id,
                    partitions: Vec::new(),
                });
                topics.len() - 1
            }),
        };
        last = Some((&p.topic, at));
        places.push((at, topics[at].partitions.len()));
        topics[at]
            .partitions
            .push((p.partition, p.fetch_offset, p.max_bytes));
    }
    let mut reply = fetch(topics, version, limits).await;
    let responses = &mut reply.response.responses;
    let outcomes: Vec<Outcome> = places
        .iter()
        .map(|&(t, p)| outcome(&responses[t].partitions[p]))
        .collect();
    let named = with_sessions(|c| c.answered(&plan, &outcomes, true));
    let mut keep: Vec<Vec<bool>> = responses
        .iter()
        .map(|t| vec![true; t.partitions.len()])
        .collect();
    for (&(t, p), named) in places.iter().zip(named) {
        keep[t][p] = named;
    }
    for (t, keep) in responses.iter_mut().zip(keep) {
        let mut keep = keep.into_iter();
        t.partitions.retain(|p| {
            let keep = keep.next().unwrap_or(true);
            debug_assert!(keep || p.records.as_ref().is_none_or(|r| r.is_empty()));
            keep
        });
    }
    responses.retain(|t| !t.partitions.is_empty());
    reply.response.session_id = plan.session_id;
    reply
}

/// Tells a new session what its first (full) answer said about each of its partitions.
/// A full request may name a partition twice, so they are matched by name here.
fn record_full_answer(plan: &Plan, response: &FetchResponse, version: i16) {
    let mut found = HashMap::new();
    for t in &response.responses {
        let topic = topic_ref(&t.topic, t.topic_id, version);
        for p in &t.partitions {
            found.insert((topic.clone(), p.partition_index), outcome(p));
        }
    }
    let outcomes: Vec<Outcome> = plan
        .partitions
        .iter()
        .map(|p| outcome_of(&found, p))
        .collect();
    with_sessions(|c| c.answered(plan, &outcomes, false));
}

fn outcome(p: &PartitionData) -> Outcome {
    Outcome {
        error_code: p.error_code,
        has_records: p.records.as_ref().is_some_and(|r| !r.is_empty()),
        high_watermark: p.high_watermark,
        log_start_offset: p.log_start_offset,
    }
}

/// A partition the answer lacks (it cannot: the answer was built from the same list)
/// counts as an error, so that it would be named.
fn outcome_of(found: &HashMap<(TopicRef, i32), Outcome>, p: &SessionPartition) -> Outcome {
    found
        .get(&(p.topic.clone(), p.partition))
        .copied()
        .unwrap_or(Outcome {
            error_code: E::UnknownServerError.code(),
            has_records: false,
            high_watermark: -1,
            log_start_offset: -1,
        })
}

/// Reads the partitions of `topics` (long polling as the limits say) and assembles the
/// answer in the same order.
async fn fetch(topics: Vec<TopicWant>, version: i16, limits: &Limits) -> FetchReply {
    let me = shard();
    let mut response_topics: Vec<FetchableTopicResponse> = Vec::with_capacity(topics.len());
    let mut places: Vec<Place> = Vec::new();
    let mut reads: Vec<ReadPartition> = Vec::new();
    for (ti, t) in topics.into_iter().enumerate() {
        let meta = if version >= 13 {
            me.topic_by_id(t.id.as_bytes())
        } else {
            me.topic(t.name.0.as_str())
        };
        let unknown_code = if version >= 13 {
            UNKNOWN_TOPIC_ID
        } else {
            E::UnknownTopicOrPartition.code()
        };
        // One shared name for the topic's partitions (a fetch names hundreds).
        let topic = meta
            .as_ref()
            .map(|m| (m.partitions, Arc::<str>::from(m.name.as_str())));
        let mut partitions = Vec::with_capacity(t.partitions.len());
        for (pi, &(partition, offset, partition_max_bytes)) in t.partitions.iter().enumerate() {
            let mut data = empty_partition(partition);
            match &topic {
                Some((count, name)) if partition >= 0 && partition < *count => {
                    places.push((ti, pi));
                    reads.push(ReadPartition {
                        topic: Arc::clone(name),
                        partition,
                        offset,
                        max_bytes: (partition_max_bytes.max(0) as usize).min(limits.max_bytes),
                    });
                }
                Some(_) => data.error_code = E::UnknownTopicOrPartition.code(),
                None => data.error_code = unknown_code,
            }
            partitions.push(data);
        }
        response_topics.push(
            FetchableTopicResponse::default()
                .with_topic(t.name)
                .with_topic_id(t.id)
                .with_partitions(partitions),
        );
    }

    let request = ReadRequest {
        partitions: reads,
        min_bytes: limits.min_bytes,
        max_wait: limits.max_wait,
    };
    let results = service::local::read(request).await;
    let got = places
        .iter()
        .zip(results)
        .map(|(&(topic_index, partition_index), r)| Got {
            topic_index,
            partition_index,
            result: r
                .map(|d| (d.chunks, d.high_watermark, d.log_start_offset))
                .map_err(|e| e.code()),
        })
        .collect();
    assemble(response_topics, got, limits.max_bytes, version)
}

fn empty_partition(index: i32) -> PartitionData {
    PartitionData::default()
        .with_partition_index(index)
        .with_high_watermark(-1)
        .with_last_stable_offset(-1)
        .with_log_start_offset(-1)
        .with_aborted_transactions(Some(Vec::new()))
        .with_preferred_read_replica(kafka_protocol::messages::BrokerId(-1))
        .with_records(Some(Bytes::new()))
}

/// Fills the response in request order, honouring the response-wide `max_bytes`: the
/// first partition with data is always included whole (KIP-74), later ones only while
/// they fit; partitions left out still report their offsets.
fn assemble(
    mut topics: Vec<FetchableTopicResponse>,
    mut got: Vec<Got>,
    max_bytes: usize,
    version: i16,
) -> FetchReply {
    got.sort_by_key(|g| (g.topic_index, g.partition_index));
    let mut direct = Vec::new();
    let mut spliced = Vec::new();
    let mut total = 0usize;
    let mut placeholder_at = 0usize;
    for g in got {
        let slot = &mut topics[g.topic_index].partitions[g.partition_index];
        match g.result {
            Err(code) => slot.error_code = code,
            Ok((chunks, high_watermark, log_start)) => {
                slot.high_watermark = high_watermark;
                slot.last_stable_offset = high_watermark;
                if version >= 5 {
                    slot.log_start_offset = log_start;
                }
                let len: usize = chunks.iter().map(|c| c.len()).sum();
                if len == 0 || (total > 0 && total + len > max_bytes) {
                    continue;
                }
                total += len;
                if chunks.len() == 1 {
                    let only = chunks.into_iter().next().expect("one chunk");
                    direct.push(only.clone());
                    slot.records = Some(only);
                } else {
                    // Distinct address per partition; bounded since total <= max_bytes
                    // except for the first partition, which is itself <= max_bytes.
                    let from = placeholder_at.min(65_535);
                    let placeholder = Bytes::from_static(
                        &PLACEHOLDER_REGION[from..from + len.min(MAX_FETCH_RESPONSE_BYTES)],
                    );
                    placeholder_at += 1;
                    slot.records = Some(placeholder.clone());
                    spliced.push((placeholder, chunks));
                }
            }
        }
    }
    FetchReply {
        response: FetchResponse::default()
            .with_error_code(0)
            .with_session_id(0)
            .with_responses(topics),
        direct,
        spliced,
    }
}
