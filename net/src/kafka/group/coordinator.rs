//! [`GroupCoordinator`]: the set of groups, request-level validation, timers, parked replies
//! and offset commits in flight. Group-local protocol logic lives in `state`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{
    DeleteGroupsRequest, DeleteGroupsResponse, DescribeGroupsRequest, DescribeGroupsResponse,
    GroupId, HeartbeatRequest, HeartbeatResponse, JoinGroupRequest, LeaveGroupRequest,
    LeaveGroupResponse, ListGroupsRequest, ListGroupsResponse, OffsetCommitRequest,
    OffsetCommitResponse, OffsetFetchRequest, OffsetFetchResponse, SyncGroupRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use super::config::GroupConfig;
use super::error::GroupError;
use super::limits::TIMEOUT_MS_MAX;
use super::records::{OffsetCommitRecord, OffsetLogRecord, OffsetTombstone};
use super::state::{
    join_error, sync_error, CommittedOffset, Group, GroupState, JoinParams, Protocol,
};
use super::{Ctx, JoinOutcome, Reply, ReplyToken, SyncOutcome};

/// Who sent a JoinGroup: from the request header and the connection. Reported by
/// DescribeGroups; the client id also prefixes generated member ids, as in Kafka.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientInfo {
    /// The request header's client id.
    pub client_id: StrBytes,
    /// The peer address, as Kafka formats it (e.g. "/127.0.0.1").
    pub client_host: StrBytes,
}

/// Identifies an OffsetCommit whose records are being persisted by the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CommitToken(pub u64);

/// The immediate result of [`GroupCoordinator::handle_offset_commit`].
#[must_use = "records must be persisted before the commit is acknowledged"]
#[derive(Debug, Clone, PartialEq)]
pub enum OffsetCommitOutcome {
    /// Nothing to persist (every partition failed validation): send this response.
    Done(OffsetCommitResponse),
    /// Append `records` to the offsets log, then call
    /// [`GroupCoordinator::handle_offset_commit_persisted`] with `token` for the response.
    Persist {
        /// Names this commit in `handle_offset_commit_persisted`.
        token: CommitToken,
        /// One record per partition that passed validation, in request order.
        records: Vec<OffsetCommitRecord>,
    },
}

/// The result of [`GroupCoordinator::handle_delete_groups`].
#[must_use = "tombstones must be persisted before the deletion is acknowledged"]
#[derive(Debug, Clone, PartialEq)]
pub struct DeleteGroupsOutcome {
    /// The response to send once `tombstones` are appended to the offsets log.
    pub response: DeleteGroupsResponse,
    /// One tombstone per committed offset of every deleted group. The groups are already
    /// gone from memory; if the append fails their offsets come back on the next replay.
    pub tombstones: Vec<OffsetTombstone>,
}

#[derive(Debug)]
struct InFlightCommit {
    group_id: GroupId,
    response: OffsetCommitResponse,
    /// (record, commit sequence, topic index, partition index) into `response`.
    records: Vec<(OffsetCommitRecord, u64, usize, usize)>,
}

/// The classic group coordinator for the groups this broker coordinates. See the module docs.
#[derive(Debug)]
pub struct GroupCoordinator {
    config: GroupConfig,
    /// Ordered so that iteration (ListGroups, timer firing) is deterministic: one seed replays
    /// a simulation exactly, and client-chosen group ids cannot flood a hash table.
    groups: BTreeMap<GroupId, Group>,
    replies: VecDeque<(ReplyToken, Reply)>,
    /// (deadline, group) for every group with a deadline; `timer_of` is the reverse index.
    timers: BTreeSet<(u64, GroupId)>,
    timer_of: BTreeMap<GroupId, u64>,
    commits_in_flight: BTreeMap<u64, InFlightCommit>,
    now_ms: u64,
    next_token: u64,
    next_member_id: u64,
    next_commit_sequence: u64,
}

impl GroupCoordinator {
    /// Creates a coordinator with no groups. Fails if the config is inconsistent.
    pub fn new(config: GroupConfig) -> Result<Self, GroupError> {
        config.validate()?;
        Ok(Self {
            config,
            groups: BTreeMap::new(),
            replies: VecDeque::new(),
            timers: BTreeSet::new(),
            timer_of: BTreeMap::new(),
            commits_in_flight: BTreeMap::new(),
            now_ms: 0,
            next_token: 0,
            next_member_id: 0,
            next_commit_sequence: 0,
        })
    }

    /// The configuration in force.
    pub fn config(&self) -> &GroupConfig {
        &self.config
    }

    // ------------------------------------------------------------------ outputs and timers

    /// Drains the responses to parked requests produced so far, oldest first.
    pub fn poll_replies(&mut self) -> impl Iterator<Item = (ReplyToken, Reply)> + '_ {
        self.replies.drain(..)
    }

    /// The earliest `now_ms` at which [`handle_timeout`](Self::handle_timeout) has work.
    pub fn next_deadline(&self) -> Option<u64> {
        self.timers.first().map(|(deadline, _)| *deadline)
    }

    /// Processes every session, rebalance, pending-sync and pending-member deadline at or
    /// before `now_ms`. Every other `handle_*` does this first as well.
    pub fn handle_timeout(&mut self, now_ms: u64) {
        self.now_ms = self.now_ms.max(now_ms);
        let now = self.now_ms;
        while let Some((deadline, group_id)) = self.timers.first().cloned() {
            if deadline > now {
                break;
            }
            if let Some(group) = self.groups.get_mut(&group_id) {
                let mut ctx = Ctx {
                    config: &self.config,
                    now_ms: now,
                    replies: &mut self.replies,
                };
                group.fire_due_timers(&mut ctx);
            }
            self.refresh_timer(&group_id);
        }
    }

    fn refresh_timer(&mut self, group_id: &GroupId) {
        if let Some(old) = self.timer_of.remove(group_id) {
            self.timers.remove(&(old, group_id.clone()));
        }
        if let Some(deadline) = self.groups.get(group_id).and_then(Group::next_deadline_ms) {
            self.timer_of.insert(group_id.clone(), deadline);
            self.timers.insert((deadline, group_id.clone()));
        }
    }

    /// Advances the clock (never backwards) and fires due timers; returns the clock.
    fn advance(&mut self, now_ms: u64) -> u64 {
        self.handle_timeout(now_ms);
        self.now_ms
    }

    /// After a request touched `group_id`: fire its timers due right now (a zero initial
    /// rebalance delay completes here), re-index its deadline, forget it if it was created by
    /// this request and nothing came of it.
    fn finish(&mut self, group_id: &GroupId, created: bool) {
        if let Some(group) = self.groups.get_mut(group_id) {
            let mut ctx = Ctx {
                config: &self.config,
                now_ms: self.now_ms,
                replies: &mut self.replies,
            };
            group.fire_due_timers(&mut ctx);
            if created && group.is_idle() && group.generation_id == 0 {
                self.groups.remove(group_id);
            }
        }
        self.refresh_timer(group_id);
    }

    /// If the reply for `token` was already produced, take it out of the queue.
    fn take_reply(&mut self, token: ReplyToken) -> Option<Reply> {
        let index = self.replies.iter().position(|(t, _)| *t == token)?;
        self.replies.remove(index).map(|(_, reply)| reply)
    }

    fn new_token(&mut self) -> ReplyToken {
        self.next_token += 1;
        ReplyToken(self.next_token)
    }

    /// Kafka: `clientId-UUID` (or `groupInstanceId-UUID`). Ours is the seed and a counter in
    /// UUID shape: unique per coordinator incarnation and deterministic in tests.
    fn generate_member_id(&mut self, prefix: &str) -> StrBytes {
        self.next_member_id += 1;
        let high = self.config.member_id_seed;
        let low = self.next_member_id;
        StrBytes::from_string(format!(
            "{prefix}-{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
            high >> 32,
            (high >> 16) & 0xffff,
            high & 0xffff,
            low >> 48,
            low & 0xffff_ffff_ffff
        ))
    }

    /// Makes room for one more group: true if below the bound or an idle group was evicted.
    fn make_room_for_group(&mut self) -> bool {
        if self.groups.len() < self.config.groups_max {
            return true;
        }
        let idle = self
            .groups
            .iter()
            .find(|(_, g)| g.is_idle())
            .map(|(id, _)| id.clone());
        match idle {
            Some(id) => {
                self.groups.remove(&id);
                self.refresh_timer(&id);
                true
            }
            None => false,
        }
    }

    // ------------------------------------------------------------------ JoinGroup / SyncGroup

    /// JoinGroup (v0-v9).
    pub fn handle_join(
        &mut self,
        now_ms: u64,
        version: i16,
        client: &ClientInfo,
        request: JoinGroupRequest,
    ) -> JoinOutcome {
        self.advance(now_ms);
        let error =
            |error| JoinOutcome::Done(join_error(version, request.member_id.clone(), error));
        if request.group_id.is_empty() {
            return error(ResponseError::InvalidGroupId);
        }
        let session_timeout_ms = request.session_timeout_ms;
        if session_timeout_ms < 0
            || (session_timeout_ms as u64) < self.config.session_timeout_min_ms
            || (session_timeout_ms as u64) > self.config.session_timeout_max_ms
        {
            return error(ResponseError::InvalidSessionTimeout);
        }
        // v0 has no rebalance timeout: Kafka uses the session timeout. A non-positive value
        // is clamped so that a rebalance phase always ends strictly after it starts.
        let rebalance_timeout_ms = if version == 0 {
            session_timeout_ms
        } else {
            request.rebalance_timeout_ms
        };
        let rebalance_timeout_ms = (rebalance_timeout_ms.max(1) as u64).min(TIMEOUT_MS_MAX);
        let is_unknown_member = request.member_id.is_empty();
        let group_id = request.group_id.clone();
        let mut created = false;
        if !self.groups.contains_key(&group_id) {
            if !is_unknown_member {
                return error(ResponseError::UnknownMemberId);
            }
            if !self.make_room_for_group() {
                return error(ResponseError::CoordinatorNotAvailable);
            }
            self.groups
                .insert(group_id.clone(), Group::new(group_id.clone()));
            created = true;
        }
        let token = self.new_token();
        let new_member_id = is_unknown_member.then(|| {
            let prefix = request
                .group_instance_id
                .clone()
                .unwrap_or_else(|| client.client_id.clone());
            self.generate_member_id(&prefix)
        });
        // group.instance.id exists from v5; KIP-394 applies to dynamic members from v4.
        let group_instance_id = request.group_instance_id.filter(|_| version >= 5);
        let require_known_member_id = version >= 4 && group_instance_id.is_none();
        let params = JoinParams {
            member_id: request.member_id,
            group_instance_id,
            client_id: client.client_id.clone(),
            client_host: client.client_host.clone(),
            session_timeout_ms: session_timeout_ms as u64,
            rebalance_timeout_ms,
            protocol_type: request.protocol_type,
            protocols: request
                .protocols
                .into_iter()
                .map(|p| Protocol {
                    name: p.name,
                    metadata: p.metadata,
                })
                .collect(),
            require_known_member_id,
            version,
            token,
        };
        let outcome = match self.groups.get_mut(&group_id) {
            Some(group) => {
                let mut ctx = Ctx {
                    config: &self.config,
                    now_ms: self.now_ms,
                    replies: &mut self.replies,
                };
                group.join(&mut ctx, params, new_member_id)
            }
            None => JoinOutcome::Done(join_error(
                version,
                StrBytes::new(),
                ResponseError::UnknownServerError,
            )),
        };
        self.finish(&group_id, created);
        match outcome {
            JoinOutcome::Pending(token) => match self.take_reply(token) {
                Some(Reply::JoinGroup { response, .. }) => JoinOutcome::Done(response),
                Some(other) => {
                    // A join token only ever gets a join reply; put it back untouched.
                    self.replies.push_front((token, other));
                    JoinOutcome::Pending(token)
                }
                None => JoinOutcome::Pending(token),
            },
            done => done,
        }
    }

    /// SyncGroup (v0-v5).
    pub fn handle_sync(
        &mut self,
        now_ms: u64,
        version: i16,
        request: &SyncGroupRequest,
    ) -> SyncOutcome {
        self.advance(now_ms);
        let error = |error| SyncOutcome::Done(sync_error(error));
        if request.group_id.is_empty() {
            return error(ResponseError::InvalidGroupId);
        }
        if version >= 5 && (request.protocol_type.is_none() || request.protocol_name.is_none()) {
            return error(ResponseError::InconsistentGroupProtocol);
        }
        let token = self.new_token();
        let outcome = match self.groups.get_mut(&request.group_id) {
            None => return error(ResponseError::UnknownMemberId),
            Some(group) => {
                let mut ctx = Ctx {
                    config: &self.config,
                    now_ms: self.now_ms,
                    replies: &mut self.replies,
                };
                group.sync(&mut ctx, version, token, request)
            }
        };
        self.finish(&request.group_id, false);
        match outcome {
            SyncOutcome::Pending(token) => match self.take_reply(token) {
                Some(Reply::SyncGroup { response, .. }) => SyncOutcome::Done(response),
                Some(other) => {
                    self.replies.push_front((token, other));
                    SyncOutcome::Pending(token)
                }
                None => SyncOutcome::Pending(token),
            },
            done => done,
        }
    }

    // ------------------------------------------------------------------ Heartbeat / LeaveGroup

    /// Heartbeat (v0-v4).
    pub fn handle_heartbeat(
        &mut self,
        now_ms: u64,
        _version: i16,
        request: &HeartbeatRequest,
    ) -> HeartbeatResponse {
        self.advance(now_ms);
        let error = if request.group_id.is_empty() {
            Some(ResponseError::InvalidGroupId)
        } else {
            match self.groups.get_mut(&request.group_id) {
                None => Some(ResponseError::UnknownMemberId),
                Some(group) => {
                    let mut ctx = Ctx {
                        config: &self.config,
                        now_ms: self.now_ms,
                        replies: &mut self.replies,
                    };
                    group.heartbeat(
                        &mut ctx,
                        &request.member_id,
                        request.group_instance_id.as_ref(),
                        request.generation_id,
                    )
                }
            }
        };
        self.finish(&request.group_id, false);
        HeartbeatResponse::default().with_error_code(error.map_or(0, |e| e.code()))
    }

    /// LeaveGroup: v0-v2 name one member in `member_id`; v3+ a batch in `members`.
    pub fn handle_leave(
        &mut self,
        now_ms: u64,
        version: i16,
        request: &LeaveGroupRequest,
    ) -> LeaveGroupResponse {
        self.advance(now_ms);
        if request.group_id.is_empty() {
            return LeaveGroupResponse::default()
                .with_error_code(ResponseError::InvalidGroupId.code());
        }
        let leaving: Vec<(StrBytes, Option<StrBytes>)> = if version >= 3 {
            request
                .members
                .iter()
                .map(|m| (m.member_id.clone(), m.group_instance_id.clone()))
                .collect()
        } else {
            vec![(request.member_id.clone(), None)]
        };
        let mut results = Vec::with_capacity(leaving.len());
        match self.groups.get_mut(&request.group_id) {
            None => {
                for (member_id, instance) in leaving {
                    results.push((member_id, instance, Some(ResponseError::UnknownMemberId)));
                }
            }
            Some(group) => {
                let mut ctx = Ctx {
                    config: &self.config,
                    now_ms: self.now_ms,
                    replies: &mut self.replies,
                };
                for (member_id, instance) in leaving {
                    let error = group.leave(&mut ctx, &member_id, instance.as_ref());
                    results.push((member_id, instance, error));
                }
            }
        }
        self.finish(&request.group_id, false);
        if version >= 3 {
            LeaveGroupResponse::default().with_members(
                results
                    .into_iter()
                    .map(|(member_id, instance, error)| {
                        MemberResponse::default()
                            .with_member_id(member_id)
                            .with_group_instance_id(instance)
                            .with_error_code(error.map_or(0, |e| e.code()))
                    })
                    .collect(),
            )
        } else {
            let error = results.into_iter().find_map(|(_, _, e)| e);
            LeaveGroupResponse::default().with_error_code(error.map_or(0, |e| e.code()))
        }
    }

    // ------------------------------------------------------------------ admin

    /// ListGroups (v0-v5): v4 filters by state, v5 by type (we only have "classic" groups).
    pub fn handle_list_groups(
        &mut self,
        now_ms: u64,
        version: i16,
        request: &ListGroupsRequest,
    ) -> ListGroupsResponse {
        self.advance(now_ms);
        let states: &[StrBytes] = if version >= 4 {
            &request.states_filter
        } else {
            &[]
        };
        let types: &[StrBytes] = if version >= 5 {
            &request.types_filter
        } else {
            &[]
        };
        if !types.is_empty() && !types.iter().any(|t| t.eq_ignore_ascii_case("classic")) {
            return ListGroupsResponse::default();
        }
        let groups = self
            .groups
            .values()
            .filter(|g| {
                states.is_empty()
                    || states
                        .iter()
                        .any(|s| s.eq_ignore_ascii_case(g.state.as_str()))
            })
            .map(|g| {
                ListedGroup::default()
                    .with_group_id(g.group_id.clone())
                    .with_protocol_type(g.protocol_type.clone().unwrap_or_default())
                    .with_group_state(StrBytes::from_static_str(g.state.as_str()))
                    .with_group_type(StrBytes::from_static_str("classic"))
            })
            .collect();
        ListGroupsResponse::default().with_groups(groups)
    }

    /// DescribeGroups (v0-v6). Unknown groups are reported as Dead (v6+: `GROUP_ID_NOT_FOUND`).
    pub fn handle_describe_groups(
        &mut self,
        now_ms: u64,
        version: i16,
        request: &DescribeGroupsRequest,
    ) -> DescribeGroupsResponse {
        self.advance(now_ms);
        let groups = request
            .groups
            .iter()
            .map(|group_id| match self.groups.get(group_id) {
                None => {
                    let described = DescribedGroup::default()
                        .with_group_id(group_id.clone())
                        .with_group_state(StrBytes::from_static_str(GroupState::Dead.as_str()));
                    if version >= 6 {
                        described
                            .with_error_code(ResponseError::GroupIdNotFound.code())
                            .with_error_message(Some(StrBytes::from_string(format!(
                                "Group {} not found.",
                                group_id.as_str()
                            ))))
                    } else {
                        described
                    }
                }
                Some(group) => {
                    let stable = group.state == GroupState::Stable;
                    let protocol = group.protocol_name.clone().unwrap_or_default();
                    let members = group
                        .members
                        .iter()
                        .map(|m| {
                            let described = DescribedGroupMember::default()
                                .with_member_id(m.member_id.clone())
                                .with_group_instance_id(m.group_instance_id.clone())
                                .with_client_id(m.client_id.clone())
                                .with_client_host(m.client_host.clone());
                            if stable {
                                let metadata = m
                                    .protocols
                                    .iter()
                                    .find(|p| p.name == protocol)
                                    .map(|p| p.metadata.clone())
                                    .unwrap_or_default();
                                described
                                    .with_member_metadata(metadata)
                                    .with_member_assignment(m.assignment.clone())
                            } else {
                                described
                            }
                        })
                        .collect();
                    DescribedGroup::default()
                        .with_group_id(group_id.clone())
                        .with_group_state(StrBytes::from_static_str(group.state.as_str()))
                        .with_protocol_type(group.protocol_type.clone().unwrap_or_default())
                        .with_protocol_data(if stable { protocol } else { StrBytes::new() })
                        .with_members(members)
                }
            })
            .collect();
        DescribeGroupsResponse::default().with_groups(groups)
    }

    /// DeleteGroups (v0-v2): only Empty groups with no commit in flight; others get
    /// `NON_EMPTY_GROUP`, unknown ones `GROUP_ID_NOT_FOUND`.
    pub fn handle_delete_groups(
        &mut self,
        now_ms: u64,
        _version: i16,
        request: &DeleteGroupsRequest,
    ) -> DeleteGroupsOutcome {
        self.advance(now_ms);
        let mut tombstones = Vec::new();
        let mut results = Vec::with_capacity(request.groups_names.len());
        for group_id in &request.groups_names {
            let error = match self.groups.get(group_id) {
                None => Some(ResponseError::GroupIdNotFound),
                Some(group) if group.state == GroupState::Empty && group.commits_in_flight == 0 => {
                    if let Some(group) = self.groups.remove(group_id) {
                        tombstones.extend(group.offsets.into_keys().map(|(topic, partition)| {
                            OffsetTombstone {
                                group: group_id.clone(),
                                topic,
                                partition,
                            }
                        }));
                    }
                    self.refresh_timer(group_id);
                    None
                }
                Some(_) => Some(ResponseError::NonEmptyGroup),
            };
            results.push(
                DeletableGroupResult::default()
                    .with_group_id(group_id.clone())
                    .with_error_code(error.map_or(0, |e| e.code())),
            );
        }
        DeleteGroupsOutcome {
            response: DeleteGroupsResponse::default().with_results(results),
            tombstones,
        }
    }

    // ------------------------------------------------------------------ offsets

    /// OffsetCommit (v2-v9) for classic groups. `commit_timestamp_ms` is the wall-clock time
    /// stored in the records (the monotonic `now_ms` cannot serve).
    pub fn handle_offset_commit(
        &mut self,
        now_ms: u64,
        commit_timestamp_ms: i64,
        _version: i16,
        request: &OffsetCommitRequest,
    ) -> OffsetCommitOutcome {
        self.advance(now_ms);
        let all = |error: Option<ResponseError>| {
            OffsetCommitResponse::default().with_topics(
                request
                    .topics
                    .iter()
                    .map(|t| {
                        OffsetCommitResponseTopic::default()
                            .with_name(t.name.clone())
                            .with_topic_id(t.topic_id)
                            .with_partitions(
                                t.partitions
                                    .iter()
                                    .map(|p| {
                                        OffsetCommitResponsePartition::default()
                                            .with_partition_index(p.partition_index)
                                            .with_error_code(error.map_or(0, |e| e.code()))
                                    })
                                    .collect(),
                            )
                    })
                    .collect(),
            )
        };
        let done = |error| OffsetCommitOutcome::Done(all(Some(error)));
        let generation_id = request.generation_id_or_member_epoch;
        let group_id = &request.group_id;
        if self.commits_in_flight.len() >= self.config.offset_commits_in_flight_max {
            return done(ResponseError::CoordinatorLoadInProgress);
        }
        let mut created = false;
        if !self.groups.contains_key(group_id) {
            if generation_id >= 0 {
                // A member of a generation this coordinator never formed (e.g. before a
                // restart): it must rejoin.
                return done(ResponseError::IllegalGeneration);
            }
            if !self.make_room_for_group() {
                return done(ResponseError::CoordinatorNotAvailable);
            }
            self.groups
                .insert(group_id.clone(), Group::new(group_id.clone()));
            created = true;
        }
        let Some(group) = self.groups.get_mut(group_id) else {
            return done(ResponseError::UnknownServerError);
        };
        let uses_membership = generation_id >= 0
            || !request.member_id.is_empty()
            || request.group_instance_id.is_some();
        let validation = if uses_membership {
            if group.is_static_member_fenced(request.group_instance_id.as_ref(), &request.member_id)
            {
                Some(ResponseError::FencedInstanceId)
            } else if !group.has_member(&request.member_id) {
                Some(ResponseError::UnknownMemberId)
            } else if generation_id != group.generation_id {
                Some(ResponseError::IllegalGeneration)
            } else {
                None
            }
        } else if group.state != GroupState::Empty {
            // A standalone (generation -1) commit is only allowed while no one is a member.
            Some(ResponseError::UnknownMemberId)
        } else {
            None
        };
        let state_error = match (validation, group.state) {
            (Some(error), _) => Some(error),
            (None, GroupState::CompletingRebalance) => Some(ResponseError::RebalanceInProgress),
            (None, GroupState::Dead) => Some(ResponseError::CoordinatorNotAvailable),
            (None, GroupState::Stable | GroupState::PreparingRebalance) => {
                // A commit counts as liveness, as in Kafka.
                if let Some(index) = group.member_index(&request.member_id) {
                    let member = &mut group.members[index];
                    member.heartbeat_deadline_ms =
                        self.now_ms.saturating_add(member.session_timeout_ms);
                }
                None
            }
            (None, GroupState::Empty) => None,
        };
        if let Some(error) = state_error {
            self.finish(group_id, created);
            return done(error);
        }
        let mut response = all(None);
        let mut records = Vec::new();
        for (topic_index, topic) in request.topics.iter().enumerate() {
            for (partition_index, partition) in topic.partitions.iter().enumerate() {
                let metadata = partition.committed_metadata.clone().unwrap_or_default();
                if metadata.len() > self.config.offset_metadata_bytes_max {
                    response.topics[topic_index].partitions[partition_index].error_code =
                        ResponseError::OffsetMetadataTooLarge.code();
                    continue;
                }
                self.next_commit_sequence += 1;
                records.push((
                    OffsetCommitRecord {
                        group: group_id.clone(),
                        topic: topic.name.clone(),
                        partition: partition.partition_index,
                        offset: partition.committed_offset,
                        leader_epoch: partition.committed_leader_epoch,
                        metadata,
                        commit_timestamp_ms,
                    },
                    self.next_commit_sequence,
                    topic_index,
                    partition_index,
                ));
            }
        }
        if records.is_empty() {
            self.finish(group_id, created);
            return OffsetCommitOutcome::Done(response);
        }
        group.commits_in_flight += 1;
        let token = self.new_token();
        let persist = records.iter().map(|(r, ..)| r.clone()).collect();
        self.commits_in_flight.insert(
            token.0,
            InFlightCommit {
                group_id: group_id.clone(),
                response,
                records,
            },
        );
        self.finish(group_id, created);
        OffsetCommitOutcome::Persist {
            token: CommitToken(token.0),
            records: persist,
        }
    }

    /// The caller appended (or failed to append) the records of an OffsetCommit. On success the
    /// offsets become visible; on failure the partitions carry `error` (the caller maps its
    /// storage failure to a Kafka error, e.g. `COORDINATOR_NOT_AVAILABLE`).
    pub fn handle_offset_commit_persisted(
        &mut self,
        token: CommitToken,
        result: Result<(), ResponseError>,
    ) -> Result<OffsetCommitResponse, GroupError> {
        let commit = self
            .commits_in_flight
            .remove(&token.0)
            .ok_or(GroupError::UnknownCommitToken(token.0))?;
        let mut response = commit.response;
        // A group with commits in flight is never evicted or deleted; recreate defensively.
        let group = self
            .groups
            .entry(commit.group_id.clone())
            .or_insert_with(|| Group::new(commit.group_id.clone()));
        group.commits_in_flight = group.commits_in_flight.saturating_sub(1);
        for (record, sequence, topic_index, partition_index) in commit.records {
            match result {
                Ok(()) => {
                    let key = (record.topic, record.partition);
                    let newer = group
                        .offsets
                        .get(&key)
                        .is_none_or(|current| current.sequence < sequence);
                    if newer {
                        group.offsets.insert(
                            key,
                            CommittedOffset {
                                offset: record.offset,
                                leader_epoch: record.leader_epoch,
                                metadata: record.metadata,
                                commit_timestamp_ms: record.commit_timestamp_ms,
                                sequence,
                            },
                        );
                    }
                }
                Err(error) => {
                    response.topics[topic_index].partitions[partition_index].error_code =
                        error.code();
                }
            }
        }
        Ok(response)
    }

    /// OffsetFetch (v1-v9): v0-v7 one group in the top-level fields, v8+ a batch in `groups`.
    /// `topics: None` means every partition with a committed offset; unknown partitions
    /// answer offset -1. `require_stable` has nothing to wait for (no transactional commits).
    pub fn handle_offset_fetch(
        &mut self,
        now_ms: u64,
        version: i16,
        request: &OffsetFetchRequest,
    ) -> OffsetFetchResponse {
        self.advance(now_ms);
        if version >= 8 {
            let groups = request
                .groups
                .iter()
                .map(|g| {
                    let wanted = g.topics.as_ref().map(|topics| {
                        topics
                            .iter()
                            .map(|t| (t.name.clone(), t.partition_indexes.clone()))
                            .collect::<Vec<_>>()
                    });
                    let topics = self
                        .fetch_offsets(&g.group_id, wanted)
                        .into_iter()
                        .map(|(name, partitions)| {
                            OffsetFetchResponseTopics::default()
                                .with_name(name)
                                .with_partitions(
                                    partitions
                                        .into_iter()
                                        .map(|(index, offset)| {
                                            let (offset, epoch, metadata) = offset_fields(offset);
                                            OffsetFetchResponsePartitions::default()
                                                .with_partition_index(index)
                                                .with_committed_offset(offset)
                                                .with_committed_leader_epoch(epoch)
                                                .with_metadata(Some(metadata))
                                        })
                                        .collect(),
                                )
                        })
                        .collect();
                    OffsetFetchResponseGroup::default()
                        .with_group_id(g.group_id.clone())
                        .with_topics(topics)
                })
                .collect();
            OffsetFetchResponse::default().with_groups(groups)
        } else {
            let wanted = request.topics.as_ref().map(|topics| {
                topics
                    .iter()
                    .map(|t| (t.name.clone(), t.partition_indexes.clone()))
                    .collect::<Vec<_>>()
            });
            let topics = self
                .fetch_offsets(&request.group_id, wanted)
                .into_iter()
                .map(|(name, partitions)| {
                    OffsetFetchResponseTopic::default()
                        .with_name(name)
                        .with_partitions(
                            partitions
                                .into_iter()
                                .map(|(index, offset)| {
                                    let (offset, epoch, metadata) = offset_fields(offset);
                                    OffsetFetchResponsePartition::default()
                                        .with_partition_index(index)
                                        .with_committed_offset(offset)
                                        .with_committed_leader_epoch(if version >= 5 {
                                            epoch
                                        } else {
                                            -1
                                        })
                                        .with_metadata(Some(metadata))
                                })
                                .collect(),
                        )
                })
                .collect();
            OffsetFetchResponse::default().with_topics(topics)
        }
    }

    /// The committed offsets of `group_id` for `wanted` (topic, partitions), or for everything
    /// committed when `wanted` is `None`.
    #[allow(clippy::type_complexity)]
    fn fetch_offsets(
        &self,
        group_id: &GroupId,
        wanted: Option<Vec<(TopicName, Vec<i32>)>>,
    ) -> Vec<(TopicName, Vec<(i32, Option<&CommittedOffset>)>)> {
        let group = self.groups.get(group_id);
        match wanted {
            Some(wanted) => wanted
                .into_iter()
                .map(|(topic, partitions)| {
                    let offsets = partitions
                        .into_iter()
                        .map(|p| {
                            let offset = group.and_then(|g| g.offsets.get(&(topic.clone(), p)));
                            (p, offset)
                        })
                        .collect();
                    (topic, offsets)
                })
                .collect(),
            None => {
                let mut out: Vec<(TopicName, Vec<(i32, Option<&CommittedOffset>)>)> = Vec::new();
                for ((topic, partition), offset) in group.iter().flat_map(|g| g.offsets.iter()) {
                    match out.last_mut() {
                        Some((last, partitions)) if last == topic => {
                            partitions.push((*partition, Some(offset)))
                        }
                        _ => out.push((topic.clone(), vec![(*partition, Some(offset))])),
                    }
                }
                out
            }
        }
    }

    /// Rebuilds committed offsets from the offsets log at start-up, in log order. Replayed
    /// records are never refused (the log is the truth), even past `groups_max`.
    pub fn replay(&mut self, record: OffsetLogRecord) {
        match record {
            OffsetLogRecord::Commit(commit) => {
                self.next_commit_sequence += 1;
                let group = self
                    .groups
                    .entry(commit.group.clone())
                    .or_insert_with(|| Group::new(commit.group.clone()));
                group.offsets.insert(
                    (commit.topic, commit.partition),
                    CommittedOffset {
                        offset: commit.offset,
                        leader_epoch: commit.leader_epoch,
                        metadata: commit.metadata,
                        commit_timestamp_ms: commit.commit_timestamp_ms,
                        sequence: self.next_commit_sequence,
                    },
                );
            }
            OffsetLogRecord::Tombstone(tombstone) => {
                if let Some(group) = self.groups.get_mut(&tombstone.group) {
                    group
                        .offsets
                        .remove(&(tombstone.topic, tombstone.partition));
                    if group.is_idle() && group.generation_id == 0 {
                        self.groups.remove(&tombstone.group);
                    }
                }
            }
        }
    }

    // ------------------------------------------------------------------ introspection

    /// Number of groups held (any state).
    pub fn group_count(&self) -> usize {
        self.groups.len()
    }

    /// A group's state, or `None` if the coordinator does not hold it.
    pub fn group_state(&self, group_id: &str) -> Option<GroupState> {
        self.group(group_id).map(|g| g.state)
    }

    /// A group's current generation id.
    pub fn group_generation(&self, group_id: &str) -> Option<i32> {
        self.group(group_id).map(|g| g.generation_id)
    }

    /// A group's current leader member id.
    pub fn group_leader(&self, group_id: &str) -> Option<StrBytes> {
        self.group(group_id).and_then(|g| g.leader_id.clone())
    }

    /// A group's member ids, in join order.
    pub fn group_members(&self, group_id: &str) -> Vec<StrBytes> {
        self.group(group_id)
            .map(|g| g.members.iter().map(|m| m.member_id.clone()).collect())
            .unwrap_or_default()
    }

    fn group(&self, group_id: &str) -> Option<&Group> {
        self.groups
            .get(&GroupId(StrBytes::from_string(group_id.to_owned())))
    }

    /// Panics if any group breaks a structural invariant, or the timer index is stale.
    #[cfg(test)]
    pub(crate) fn check_invariants(&self) {
        for (id, group) in &self.groups {
            group.check_invariants();
            assert_eq!(
                self.timer_of.get(id).copied(),
                group.next_deadline_ms(),
                "{id:?}: stale timer index"
            );
        }
        assert_eq!(self.timers.len(), self.timer_of.len());
        let in_flight: usize = self.groups.values().map(|g| g.commits_in_flight).sum();
        assert_eq!(in_flight, self.commits_in_flight.len());
    }

    /// Member ids and assignments of a group (tests only).
    #[cfg(test)]
    pub(crate) fn group_assignments(&self, group_id: &str) -> Vec<(StrBytes, bytes::Bytes)> {
        self.group(group_id)
            .map(|g| {
                g.members
                    .iter()
                    .map(|m| (m.member_id.clone(), m.assignment.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }
}

fn offset_fields(offset: Option<&CommittedOffset>) -> (i64, i32, StrBytes) {
    match offset {
        Some(o) => (o.offset, o.leader_epoch, o.metadata.clone()),
        None => (-1, -1, StrBytes::new()),
    }
}
