//! Incremental fetch sessions (KIP-227): the broker remembers the partitions a consumer
//! fetches, with their offsets and what it last told the consumer about them, so that a
//! follow-up fetch names only the partitions that changed and the answer carries only the
//! partitions with something new. Without sessions every fetch of a consumer of 1,000
//! partitions decodes 1,000 partitions and encodes 1,000 answers, nearly all empty.
//!
//! The wire rules, from the request's `session_id` and `session_epoch` (Fetch v7+):
//! - id 0, epoch -1: a sessionless full fetch (what clients without sessions send).
//! - id 0, epoch 0: a full fetch that asks for a new session; the answer carries its id
//!   (or 0 when the cache has no room: the client stays sessionless).
//! - id N, epoch 0: close session N and open a new one, as above.
//! - id N, epoch -1: close session N and fetch sessionless.
//! - id N, epoch e > 0: an incremental fetch. Partitions listed are added or updated,
//!   `forgotten_topics_data` removes some; every partition of the session is read, and the
//!   answer names only those with records, an error, or a changed high watermark or log
//!   start offset. `FETCH_SESSION_ID_NOT_FOUND` if N is not here, `INVALID_FETCH_SESSION_EPOCH`
//!   unless e is the epoch that follows the previous request's.
//!
//! Sessions live on the shard whose connection created them (this module's cache is per
//! shard, as everything is). A connection that moves to another shard (`server.rs`) finds
//! no session there; the client gets `FETCH_SESSION_ID_NOT_FOUND` once and starts a new one.
//! Session ids carry the shard in their residue modulo the shard count, so no two shards
//! ever hand out the same id.
//!
//! This module holds the cache and its rules, with no I/O, so that they can be tested
//! directly; `fetch.rs` drives it.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use kafka_protocol::messages::TopicName;
use quiver_engine::types::ShardId;
use uuid::Uuid;

/// Sessions one shard keeps (Kafka's `max.incremental.fetch.session.cache.slots` is 1,000
/// for a whole broker).
///
/// At the limit: a new session may take the place of the least recently used one if that
/// one has been idle for `FETCH_SESSION_EVICTION_AFTER`; otherwise the full fetch is
/// answered with session id 0 and the client goes on without a session.
pub const MAX_FETCH_SESSIONS_PER_SHARD: usize = 1_000;

/// Partitions all sessions of one shard may hold together (each costs ~100 bytes).
///
/// At the limit: as for `MAX_FETCH_SESSIONS_PER_SHARD` when a session is created; a session
/// that would grow past it is closed and the fetch answered `FETCH_SESSION_ID_NOT_FOUND`,
/// after which the client starts over (and stays sessionless if there is still no room).
pub const MAX_FETCH_SESSION_PARTITIONS_PER_SHARD: usize = 250_000;

/// How long a session must have been idle before a new one may evict it (Kafka's
/// `min.incremental.fetch.session.eviction.ms`).
pub const FETCH_SESSION_EVICTION_AFTER: Duration = Duration::from_secs(120);

/// Error codes of the session rules (Kafka's).
pub const FETCH_SESSION_ID_NOT_FOUND: i16 = 70;
pub const INVALID_FETCH_SESSION_EPOCH: i16 = 71;

/// How a request names a topic: by name up to Fetch v12, by id from v13.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum TopicRef {
    Name(TopicName),
    Id(Uuid),
}

/// One partition of a session.
#[derive(Clone, Debug, PartialEq)]
pub struct SessionPartition {
    pub topic: TopicRef,
    pub partition: i32,
    pub fetch_offset: i64,
    pub max_bytes: i32,
    /// What the client was last told; -1 before any answer carried the partition, so the
    /// first answer after it joins always includes it.
    pub high_watermark: i64,
    pub log_start_offset: i64,
}

impl SessionPartition {
    pub fn new(topic: TopicRef, partition: i32, fetch_offset: i64, max_bytes: i32) -> Self {
        SessionPartition {
            topic,
            partition,
            fetch_offset,
            max_bytes,
            high_watermark: -1,
            log_start_offset: -1,
        }
    }

    fn key(&self) -> (TopicRef, i32) {
        (self.topic.clone(), self.partition)
    }
}

/// What a fetch found in one partition, for deciding whether an incremental answer
/// names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub error_code: i16,
    pub has_records: bool,
    pub high_watermark: i64,
    pub log_start_offset: i64,
}

/// Which shards own a session's partitions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owners {
    Nothing,
    One(ShardId),
    /// Several shards, or a partition whose topic is unknown here.
    Mixed,
}

struct Session {
    /// Computed on demand, forgotten whenever the partitions change.
    owners: Option<Owners>,
    /// The epoch the next incremental request must carry.
    next_epoch: i32,
    /// The partitions, each in a slot it keeps while it is in the session (`None`: free),
    /// so that reordering never rehashes.
    slots: Vec<Option<SessionPartition>>,
    free: Vec<usize>,
    /// Slot of each partition.
    index: HashMap<(TopicRef, i32), usize>,
    /// Slots in answer order: partitions that returned records move to the back, so that
    /// a response-wide `max_bytes` does not always favour the same partitions (as Kafka).
    order: Vec<usize>,
    last_used: Instant,
    /// Bumped by every request, so an answer does not update a session that another
    /// request used (or that was closed and replaced) while it waited for its reads.
    generation: u64,
}

impl Session {
    fn new(now: Instant, generation: u64) -> Session {
        Session {
            owners: None,
            next_epoch: 1,
            slots: Vec::new(),
            free: Vec::new(),
            index: HashMap::new(),
            order: Vec::new(),
            last_used: now,
            generation,
        }
    }

    fn len(&self) -> usize {
        self.order.len()
    }

    /// Adds a partition at the back, or updates its fetch position if it is here.
    fn upsert(&mut self, p: SessionPartition) {
        match self.index.get(&p.key()) {
            Some(&slot) => {
                let cached = self.slots[slot].as_mut().expect("indexed slots are full");
                cached.fetch_offset = p.fetch_offset;
                cached.max_bytes = p.max_bytes;
            }
            None => {
                let slot = match self.free.pop() {
                    Some(slot) => slot,
                    None => {
                        self.slots.push(None);
                        self.slots.len() - 1
                    }
                };
                self.index.insert(p.key(), slot);
                self.slots[slot] = Some(p);
                self.order.push(slot);
            }
        }
    }

    fn forget(&mut self, keys: &[(TopicRef, i32)]) {
        let mut freed = false;
        for key in keys {
            if let Some(slot) = self.index.remove(key) {
                self.slots[slot] = None;
                self.free.push(slot);
                freed = true;
            }
        }
        if freed {
            let slots = &self.slots;
            self.order.retain(|&slot| slots[slot].is_some());
        }
    }

    /// The partitions in answer order.
    fn ordered(&self) -> Vec<SessionPartition> {
        self.order
            .iter()
            .filter_map(|&slot| self.slots[slot].clone())
            .collect()
    }
}

/// A session's partitions as of one request, for the fetch to read, and the ticket to hand
/// back with what it found.
#[derive(Debug)]
pub struct Plan {
    pub session_id: i32,
    pub generation: u64,
    pub partitions: Vec<SessionPartition>,
}

/// The sessions of one shard.
pub struct SessionCache {
    sessions: HashMap<i32, Session>,
    partitions: usize,
    shard: u32,
    shards: u32,
    next_generation: u64,
    rng: u64,
}

/// The epoch after `epoch` (Kafka's `FetchMetadata.nextEpoch`: 0 and -1 are reserved).
pub fn next_epoch(epoch: i32) -> i32 {
    if epoch < 0 || epoch == i32::MAX {
        1
    } else {
        epoch + 1
    }
}

impl SessionCache {
    pub fn new(shard: u32, shards: u32) -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x9E37_79B9_7F4A_7C15);
        SessionCache {
            sessions: HashMap::new(),
            partitions: 0,
            shard,
            shards: shards.max(1),
            next_generation: 1,
            rng: seed ^ ((shard as u64) << 32) | 1,
        }
    }

    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// Partitions held over all sessions.
    pub fn partitions(&self) -> usize {
        self.partitions
    }

    /// Closes a session, if it is here.
    pub fn close(&mut self, id: i32) {
        if let Some(s) = self.sessions.remove(&id) {
            self.partitions -= s.len();
        }
    }

    /// Opens a session over `partitions` (the full request's, in its order), evicting a
    /// stale one if the cache is full. `None`: no room; the fetch goes on sessionless.
    pub fn create(&mut self, partitions: Vec<SessionPartition>, now: Instant) -> Option<Plan> {
        let generation = self.bump();
        let mut session = Session::new(now, generation);
        for p in partitions {
            // A partition named twice counts once, with the later fields (as an update).
            session.upsert(p);
        }
        let count = session.len();
        if count > MAX_FETCH_SESSION_PARTITIONS_PER_SHARD {
            return None;
        }
        while self.sessions.len() >= MAX_FETCH_SESSIONS_PER_SHARD
            || self.partitions + count > MAX_FETCH_SESSION_PARTITIONS_PER_SHARD
        {
            let stalest = self
                .sessions
                .iter()
                .min_by_key(|(_, s)| s.last_used)
                .map(|(&id, s)| (id, s.last_used))?;
            if now.saturating_duration_since(stalest.1) < FETCH_SESSION_EVICTION_AFTER {
                return None;
            }
            self.close(stalest.0);
        }
        let id = self.fresh_id();
        self.partitions += count;
        let partitions = session.ordered();
        self.sessions.insert(id, session);
        Some(Plan {
            session_id: id,
            generation,
            partitions,
        })
    }

    /// Applies an incremental request to session `id` and returns every partition to read,
    /// in session order. `Err` is the fetch's top-level error code.
    pub fn update(
        &mut self,
        id: i32,
        epoch: i32,
        upserts: Vec<SessionPartition>,
        forgotten: &[(TopicRef, i32)],
        now: Instant,
    ) -> Result<Plan, i16> {
        let generation = self.bump();
        let session = self
            .sessions
            .get_mut(&id)
            .ok_or(FETCH_SESSION_ID_NOT_FOUND)?;
        if epoch != session.next_epoch {
            return Err(INVALID_FETCH_SESSION_EPOCH);
        }
        let before = session.len();
        // Kafka's order: additions and updates first, then the partitions to forget.
        for p in upserts {
            session.upsert(p);
        }
        session.forget(forgotten);
        self.partitions = self.partitions - before + session.len();
        if self.partitions > MAX_FETCH_SESSION_PARTITIONS_PER_SHARD {
            self.close(id);
            return Err(FETCH_SESSION_ID_NOT_FOUND);
        }
        let session = self.sessions.get_mut(&id).expect("looked up above");
        session.next_epoch = next_epoch(epoch);
        session.owners = None;
        session.last_used = now;
        session.generation = generation;
        Ok(Plan {
            session_id: id,
            generation,
            partitions: session.ordered(),
        })
    }

    /// Records what an answer told the client, given what the fetch found in each of the
    /// plan's partitions (same order), and says which partitions the answer names. A full
    /// answer (`incremental` false) names them all. If another request used the session
    /// while this one read, the answer names them all too and changes nothing here: a
    /// client can always take more partitions of its session than it strictly needed.
    pub fn answered(&mut self, plan: &Plan, outcomes: &[Outcome], incremental: bool) -> Vec<bool> {
        // The plan is used up: a second answer to it must not match the session again.
        let used_up = self.bump();
        let Some(session) = self
            .sessions
            .get_mut(&plan.session_id)
            .filter(|s| s.generation == plan.generation)
        else {
            return vec![true; outcomes.len()];
        };
        // Same generation: the session's partitions are the plan's, in the same order.
        debug_assert_eq!(session.len(), plan.partitions.len());
        session.generation = used_up;
        let mut named = Vec::with_capacity(outcomes.len());
        let mut returned_records = false;
        let mut back = vec![false; session.len()];
        for (i, (&slot, o)) in session.order.iter().zip(outcomes).enumerate() {
            let Some(cached) = session.slots[slot].as_mut() else {
                named.push(true);
                continue;
            };
            let changed = o.error_code != 0
                || o.has_records
                || o.high_watermark != cached.high_watermark
                || o.log_start_offset != cached.log_start_offset;
            if o.error_code == 0 {
                cached.high_watermark = o.high_watermark;
                cached.log_start_offset = o.log_start_offset;
            }
            if o.has_records {
                back[i] = true;
                returned_records = true;
            }
            named.push(changed || !incremental);
        }
        if returned_records {
            // Partitions that returned records go to the back, in their order.
            let (mut front, mut rear) = (Vec::new(), Vec::new());
            for (&slot, back) in session.order.iter().zip(back) {
                if back {
                    rear.push(slot);
                } else {
                    front.push(slot);
                }
            }
            front.extend(rear);
            session.order = front;
        }
        named
    }

    /// Which shards own the partitions of session `id` (`None`: no such session), given
    /// where one partition lives (`None`: its topic is unknown).
    pub fn owners(
        &mut self,
        id: i32,
        owner_of: impl Fn(&SessionPartition) -> Option<ShardId>,
    ) -> Option<Owners> {
        let session = self.sessions.get_mut(&id)?;
        if session.owners.is_none() {
            let mut owners = Owners::Nothing;
            for p in session.slots.iter().flatten() {
                owners = match (owners, owner_of(p)) {
                    (Owners::Nothing, Some(s)) => Owners::One(s),
                    (Owners::One(a), Some(s)) if a == s => Owners::One(a),
                    _ => Owners::Mixed,
                };
                if owners == Owners::Mixed {
                    break;
                }
            }
            session.owners = Some(owners);
        }
        session.owners
    }

    fn bump(&mut self) -> u64 {
        self.next_generation += 1;
        self.next_generation
    }

    /// A positive id not in use, congruent to this shard modulo the shard count.
    fn fresh_id(&mut self) -> i32 {
        let slots = (i32::MAX as u32 - 1) / self.shards;
        loop {
            // xorshift64*
            self.rng ^= self.rng >> 12;
            self.rng ^= self.rng << 25;
            self.rng ^= self.rng >> 27;
            let r = (self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 32) as u32 % slots;
            let id = (r * self.shards + self.shard + 1) as i32;
            if !self.sessions.contains_key(&id) {
                return id;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::protocol::StrBytes;

    fn name(s: &str) -> TopicRef {
        TopicRef::Name(TopicName(StrBytes::from_string(s.to_string())))
    }

    fn part(t: &str, p: i32, offset: i64) -> SessionPartition {
        SessionPartition::new(name(t), p, offset, 1 << 20)
    }

    fn quiet(hw: i64) -> Outcome {
        Outcome {
            error_code: 0,
            has_records: false,
            high_watermark: hw,
            log_start_offset: 0,
        }
    }

    fn data(hw: i64) -> Outcome {
        Outcome {
            has_records: true,
            ..quiet(hw)
        }
    }

    #[test]
    fn epochs_follow_kafka() {
        assert_eq!(next_epoch(-1), 1);
        assert_eq!(next_epoch(0), 1);
        assert_eq!(next_epoch(1), 2);
        assert_eq!(next_epoch(i32::MAX), 1);
    }

    #[test]
    fn ids_are_positive_unique_and_carry_the_shard() {
        let now = Instant::now();
        for shard in 0..3 {
            let mut cache = SessionCache::new(shard, 3);
            let mut seen = std::collections::HashSet::new();
            for _ in 0..200 {
                let id = cache.create(vec![part("t", 0, 0)], now).unwrap().session_id;
                assert!(id > 0);
                assert_eq!((id - 1) as u32 % 3, shard);
                assert!(seen.insert(id));
            }
        }
    }

    #[test]
    fn incremental_answers_name_only_what_changed() {
        let now = Instant::now();
        let mut cache = SessionCache::new(0, 1);
        let plan = cache
            .create(vec![part("a", 0, 0), part("a", 1, 0), part("b", 0, 0)], now)
            .unwrap();
        // The full answer names everything and remembers the watermarks.
        let named = cache.answered(&plan, &[quiet(5), quiet(0), quiet(7)], false);
        assert_eq!(named, vec![true, true, true]);
        // Nothing moved: an incremental answer names nothing.
        let plan = cache.update(plan.session_id, 1, vec![], &[], now).unwrap();
        assert_eq!(plan.partitions.len(), 3);
        let named = cache.answered(&plan, &[quiet(5), quiet(0), quiet(7)], true);
        assert_eq!(named, vec![false, false, false]);
        // a/1 got records, b/0's watermark moved, a/0 has an error.
        let plan = cache.update(plan.session_id, 2, vec![], &[], now).unwrap();
        let error = Outcome {
            error_code: 1,
            ..quiet(5)
        };
        let named = cache.answered(&plan, &[error, data(3), quiet(8)], true);
        assert_eq!(named, vec![true, true, true]);
        // a/1 returned records, so it moved to the back.
        let plan = cache
            .update(plan.session_id, 3, vec![part("a", 1, 3)], &[], now)
            .unwrap();
        let order: Vec<(TopicRef, i32, i64)> = plan
            .partitions
            .iter()
            .map(|p| (p.topic.clone(), p.partition, p.fetch_offset))
            .collect();
        assert_eq!(
            order,
            vec![(name("a"), 0, 0), (name("b"), 0, 0), (name("a"), 1, 3)]
        );
        // The error is named again (errors always are); the rest is quiet.
        let named = cache.answered(&plan, &[error, quiet(8), quiet(3)], true);
        assert_eq!(named, vec![true, false, false]);
    }

    #[test]
    fn updates_add_and_forget_partitions() {
        let now = Instant::now();
        let mut cache = SessionCache::new(0, 1);
        let plan = cache.create(vec![part("a", 0, 0)], now).unwrap();
        let id = plan.session_id;
        cache.answered(&plan, &[quiet(0)], false);
        let plan = cache
            .update(id, 1, vec![part("a", 1, 4), part("b", 0, 9)], &[], now)
            .unwrap();
        assert_eq!(plan.partitions.len(), 3);
        assert_eq!(cache.partitions(), 3);
        // A partition joining is named in the next answer even when it is quiet.
        let named = cache.answered(&plan, &[quiet(0), quiet(4), quiet(9)], true);
        assert_eq!(named, vec![false, true, true]);
        let plan = cache
            .update(id, 2, vec![], &[(name("a"), 0), (name("zzz"), 3)], now)
            .unwrap();
        assert_eq!(
            plan.partitions,
            vec![
                SessionPartition {
                    high_watermark: 4,
                    log_start_offset: 0,
                    ..part("a", 1, 4)
                },
                SessionPartition {
                    high_watermark: 9,
                    log_start_offset: 0,
                    ..part("b", 0, 9)
                },
            ]
        );
        assert_eq!(cache.partitions(), 2);
    }

    #[test]
    fn wrong_epochs_and_unknown_ids_are_refused() {
        let now = Instant::now();
        let mut cache = SessionCache::new(0, 1);
        let id = cache.create(vec![part("a", 0, 0)], now).unwrap().session_id;
        assert_eq!(
            cache.update(id, 2, vec![], &[], now).unwrap_err(),
            INVALID_FETCH_SESSION_EPOCH
        );
        // The session survives a wrong epoch; the right one still works, once.
        cache.update(id, 1, vec![], &[], now).unwrap();
        assert_eq!(
            cache.update(id, 1, vec![], &[], now).unwrap_err(),
            INVALID_FETCH_SESSION_EPOCH
        );
        cache.update(id, 2, vec![], &[], now).unwrap();
        assert_eq!(
            cache.update(id + 1, 1, vec![], &[], now).unwrap_err(),
            FETCH_SESSION_ID_NOT_FOUND
        );
        cache.close(id);
        assert_eq!(
            cache.update(id, 3, vec![], &[], now).unwrap_err(),
            FETCH_SESSION_ID_NOT_FOUND
        );
        assert!(cache.is_empty());
        assert_eq!(cache.partitions(), 0);
    }

    #[test]
    fn an_answer_overtaken_by_another_request_changes_nothing() {
        let now = Instant::now();
        let mut cache = SessionCache::new(0, 1);
        let first = cache.create(vec![part("a", 0, 0)], now).unwrap();
        let second = cache.update(first.session_id, 1, vec![], &[], now).unwrap();
        // The older answer names everything and does not record its watermark.
        assert_eq!(cache.answered(&first, &[quiet(5)], true), vec![true]);
        assert_eq!(cache.answered(&second, &[quiet(5)], true), vec![true]);
        let third = cache.update(first.session_id, 2, vec![], &[], now).unwrap();
        assert_eq!(cache.answered(&third, &[quiet(5)], true), vec![false]);
    }

    #[test]
    fn a_full_cache_evicts_only_stale_sessions() {
        let start = Instant::now();
        let mut cache = SessionCache::new(0, 1);
        for _ in 0..MAX_FETCH_SESSIONS_PER_SHARD {
            cache.create(vec![part("a", 0, 0)], start).unwrap();
        }
        assert!(cache.create(vec![part("a", 0, 0)], start).is_none());
        let later = start + FETCH_SESSION_EVICTION_AFTER;
        assert!(cache.create(vec![part("a", 0, 0)], later).is_some());
        assert_eq!(cache.len(), MAX_FETCH_SESSIONS_PER_SHARD);
    }

    #[test]
    fn the_partition_budget_bounds_creation_and_growth() {
        let now = Instant::now();
        let mut cache = SessionCache::new(0, 1);
        let many: Vec<SessionPartition> = (0..MAX_FETCH_SESSION_PARTITIONS_PER_SHARD as i32)
            .map(|p| part("a", p, 0))
            .collect();
        assert!(cache
            .create([many.clone(), vec![part("b", 0, 0)]].concat(), now)
            .is_none());
        let id = cache.create(many, now).unwrap().session_id;
        assert_eq!(cache.partitions(), MAX_FETCH_SESSION_PARTITIONS_PER_SHARD);
        assert!(cache.create(vec![part("b", 0, 0)], now).is_none());
        assert_eq!(
            cache
                .update(id, 1, vec![part("b", 0, 0)], &[], now)
                .unwrap_err(),
            FETCH_SESSION_ID_NOT_FOUND
        );
        assert!(cache.is_empty());
        assert_eq!(cache.partitions(), 0);
    }

    #[test]
    fn owners_follow_the_partitions() {
        let now = Instant::now();
        let mut cache = SessionCache::new(0, 2);
        let owner = |p: &SessionPartition| {
            (p.topic != name("gone")).then_some(ShardId(p.partition as usize % 2))
        };
        let id = cache.create(vec![part("a", 0, 0)], now).unwrap().session_id;
        assert_eq!(cache.owners(id, owner), Some(Owners::One(ShardId(0))));
        cache
            .update(id, 1, vec![part("a", 2, 0)], &[], now)
            .unwrap();
        assert_eq!(cache.owners(id, owner), Some(Owners::One(ShardId(0))));
        cache
            .update(id, 2, vec![part("a", 1, 0)], &[], now)
            .unwrap();
        assert_eq!(cache.owners(id, owner), Some(Owners::Mixed));
        cache
            .update(id, 3, vec![], &[(name("a"), 0), (name("a"), 2)], now)
            .unwrap();
        assert_eq!(cache.owners(id, owner), Some(Owners::One(ShardId(1))));
        cache
            .update(id, 4, vec![part("gone", 1, 0)], &[], now)
            .unwrap();
        assert_eq!(cache.owners(id, owner), Some(Owners::Mixed));
        cache
            .update(id, 5, vec![], &[(name("a"), 1), (name("gone"), 1)], now)
            .unwrap();
        assert_eq!(cache.owners(id, owner), Some(Owners::Nothing));
        assert_eq!(cache.owners(id + 2, owner), None);
    }

    #[test]
    fn a_partition_named_twice_is_held_once() {
        let now = Instant::now();
        let mut cache = SessionCache::new(0, 1);
        let plan = cache
            .create(vec![part("a", 0, 0), part("a", 0, 5)], now)
            .unwrap();
        assert_eq!(plan.partitions, vec![part("a", 0, 5)]);
        assert_eq!(cache.partitions(), 1);
    }
}
