//! One classic consumer group: its members, its generation and the rebalance state machine
//! (Kafka's `GroupMetadata` plus the group-local half of `GroupCoordinator`).
//!
//! Invariants, checked by [`Group::check_invariants`] in tests:
//! - `leader_id` is `Some` exactly when `members` is non-empty, and names a member.
//! - `Empty` has no members; `Empty` and `PreparingRebalance` have no member awaiting SyncGroup.
//! - `join_timer` is `Some` exactly in `PreparingRebalance`.
//! - every parked request (a member's `awaiting_join` / `awaiting_sync`) is answered exactly once:
//!   when the phase completes, when it is superseded, or when the member is removed.

use std::collections::BTreeMap;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::{GroupId, JoinGroupResponse, SyncGroupResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::limits::TIMER_PASSES_PER_GROUP_MAX;
use super::{Ctx, JoinOutcome, Pending, Reply, ReplyToken, SyncOutcome};

/// The classic group states (Kafka's `GroupState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GroupState {
    /// No members; may still hold committed offsets.
    Empty,
    /// Waiting for members to (re)join for the next generation.
    PreparingRebalance,
    /// Generation formed; waiting for the leader's SyncGroup with assignments.
    CompletingRebalance,
    /// Assignments distributed.
    Stable,
    /// Deleted. Dead groups are removed from the coordinator, so this is only ever reported
    /// for groups that do not exist (DescribeGroups) as Kafka does.
    Dead,
}

impl GroupState {
    /// Kafka's name for the state, as reported by ListGroups and DescribeGroups.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Empty => "Empty",
            Self::PreparingRebalance => "PreparingRebalance",
            Self::CompletingRebalance => "CompletingRebalance",
            Self::Stable => "Stable",
            Self::Dead => "Dead",
        }
    }
}

/// One entry of a JoinGroup's protocol list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Protocol {
    pub name: StrBytes,
    pub metadata: Bytes,
}

/// A JoinGroup request, normalized across versions.
#[derive(Debug, Clone)]
pub(crate) struct JoinParams {
    pub member_id: StrBytes,
    pub group_instance_id: Option<StrBytes>,
    pub client_id: StrBytes,
    pub client_host: StrBytes,
    pub session_timeout_ms: u64,
    pub rebalance_timeout_ms: u64,
    pub protocol_type: StrBytes,
    pub protocols: Vec<Protocol>,
    /// KIP-394: v4+ dynamic members must first obtain a member id.
    pub require_known_member_id: bool,
    pub version: i16,
    pub token: ReplyToken,
}

#[derive(Debug, Clone)]
pub(crate) struct Member {
    pub member_id: StrBytes,
    pub group_instance_id: Option<StrBytes>,
    pub client_id: StrBytes,
    pub client_host: StrBytes,
    pub session_timeout_ms: u64,
    pub rebalance_timeout_ms: u64,
    pub protocol_type: StrBytes,
    pub protocols: Vec<Protocol>,
    pub assignment: Bytes,
    pub awaiting_join: Option<Pending>,
    pub awaiting_sync: Option<Pending>,
    /// Joined but its first join has not completed: it cannot heartbeat yet, so it expires on
    /// the new-member join timeout rather than being exempt while parked.
    pub is_new: bool,
    pub heartbeat_deadline_ms: u64,
}

impl Member {
    fn metadata(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|p| p.name.as_str() == protocol)
            .map(|p| p.metadata.clone())
            .unwrap_or_default()
    }

    fn matches(&self, protocols: &[Protocol]) -> bool {
        self.protocols == protocols
    }

    /// When the member is removed unless something refreshes it. Members parked in a join or
    /// sync satisfy their heartbeat (Kafka's `hasSatisfiedHeartbeat`); the phase's own
    /// timeout bounds them instead.
    fn expiry_deadline_ms(&self) -> Option<u64> {
        if self.is_new || (self.awaiting_join.is_none() && self.awaiting_sync.is_none()) {
            Some(self.heartbeat_deadline_ms)
        } else {
            None
        }
    }
}

/// A member id handed out with `MEMBER_ID_REQUIRED`, reserved until used or expired.
#[derive(Debug, Clone)]
pub(crate) struct PendingMember {
    pub member_id: StrBytes,
    pub deadline_ms: u64,
}

/// The timer of `PreparingRebalance` (Kafka's `DelayedJoin` / `InitialDelayedJoin`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JoinTimer {
    /// First rebalance of an Empty group: completes only at the deadline, which is extended
    /// while new members keep arriving, up to the rebalance timeout.
    Initial { deadline_ms: u64, remaining_ms: u64 },
    /// Completes early once every member has rejoined, else at the deadline.
    Normal { deadline_ms: u64 },
}

impl JoinTimer {
    fn deadline_ms(self) -> u64 {
        match self {
            Self::Initial { deadline_ms, .. } | Self::Normal { deadline_ms } => deadline_ms,
        }
    }
}

/// A committed offset as held in memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CommittedOffset {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: StrBytes,
    pub commit_timestamp_ms: i64,
    /// Order of the commit request; a persisted commit only overwrites older ones, so
    /// out-of-order persistence acknowledgements cannot roll an offset back.
    pub sequence: u64,
}

#[derive(Debug)]
pub(crate) struct Group {
    pub group_id: GroupId,
    pub state: GroupState,
    pub generation_id: i32,
    pub protocol_type: Option<StrBytes>,
    pub protocol_name: Option<StrBytes>,
    pub leader_id: Option<StrBytes>,
    /// In join order; the first member is the leader of a new group, and the next leader when
    /// the leader leaves.
    pub members: Vec<Member>,
    pub pending_members: Vec<PendingMember>,
    /// Members of the current generation that have not sent SyncGroup yet.
    pub pending_sync_members: Vec<StrBytes>,
    pub sync_deadline_ms: Option<u64>,
    pub join_timer: Option<JoinTimer>,
    pub new_member_added: bool,
    pub offsets: BTreeMap<(TopicName, i32), CommittedOffset>,
    pub commits_in_flight: usize,
}

pub(crate) fn join_error(
    version: i16,
    member_id: StrBytes,
    error: ResponseError,
) -> JoinGroupResponse {
    let mut response = JoinGroupResponse::default();
    response.error_code = error.code();
    response.generation_id = -1;
    response.member_id = member_id;
    response.protocol_type = None;
    // v7+ made the field nullable and Kafka sends null on errors; older clients need "".
    response.protocol_name = if version >= 7 {
        None
    } else {
        Some(StrBytes::new())
    };
    response
}

pub(crate) fn sync_error(error: ResponseError) -> SyncGroupResponse {
    let mut response = SyncGroupResponse::default();
    response.error_code = error.code();
    response
}

fn reply_join(ctx: &mut Ctx<'_>, pending: Pending, response: JoinGroupResponse) {
    ctx.replies.push_back((
        pending.token,
        Reply::JoinGroup {
            version: pending.version,
            response,
        },
    ));
}

fn reply_sync(ctx: &mut Ctx<'_>, pending: Pending, response: SyncGroupResponse) {
    ctx.replies.push_back((
        pending.token,
        Reply::SyncGroup {
            version: pending.version,
            response,
        },
    ));
}

impl Group {
    pub fn new(group_id: GroupId) -> Self {
        Self {
            group_id,
            state: GroupState::Empty,
            generation_id: 0,
            protocol_type: None,
            protocol_name: None,
            leader_id: None,
            members: Vec::new(),
            pending_members: Vec::new(),
            pending_sync_members: Vec::new(),
            sync_deadline_ms: None,
            join_timer: None,
            new_member_added: false,
            offsets: BTreeMap::new(),
            commits_in_flight: 0,
        }
    }

    /// Nothing would be lost by forgetting this group.
    pub fn is_idle(&self) -> bool {
        self.state == GroupState::Empty
            && self.members.is_empty()
            && self.pending_members.is_empty()
            && self.offsets.is_empty()
            && self.commits_in_flight == 0
    }

    pub fn member_index(&self, member_id: &str) -> Option<usize> {
        self.members
            .iter()
            .position(|m| m.member_id.as_str() == member_id)
    }

    pub fn has_member(&self, member_id: &str) -> bool {
        self.member_index(member_id).is_some()
    }

    pub fn is_leader(&self, member_id: &str) -> bool {
        self.leader_id.as_deref() == Some(member_id)
    }

    pub fn static_member_id(&self, group_instance_id: &str) -> Option<StrBytes> {
        self.members
            .iter()
            .find(|m| m.group_instance_id.as_deref() == Some(group_instance_id))
            .map(|m| m.member_id.clone())
    }

    /// Another member id holds this group.instance.id: the caller is a stale duplicate.
    pub fn is_static_member_fenced(
        &self,
        group_instance_id: Option<&StrBytes>,
        member_id: &str,
    ) -> bool {
        group_instance_id
            .and_then(|id| self.static_member_id(id))
            .is_some_and(|current| current.as_str() != member_id)
    }

    fn is_pending_member(&self, member_id: &str) -> bool {
        self.pending_members
            .iter()
            .any(|p| p.member_id.as_str() == member_id)
    }

    fn supports_protocols(&self, protocol_type: &str, protocols: &[Protocol]) -> bool {
        if self.state == GroupState::Empty {
            !protocol_type.is_empty() && !protocols.is_empty()
        } else {
            self.protocol_type.as_deref() == Some(protocol_type)
                && protocols.iter().any(|p| self.all_members_support(&p.name))
        }
    }

    fn all_members_support(&self, protocol: &str) -> bool {
        self.members
            .iter()
            .all(|m| m.protocols.iter().any(|p| p.name.as_str() == protocol))
    }

    fn has_all_members_joined(&self) -> bool {
        self.pending_members.is_empty() && self.members.iter().all(|m| m.awaiting_join.is_some())
    }

    /// The group's rebalance timeout is the largest of its members'.
    pub fn rebalance_timeout_ms(&self) -> u64 {
        self.members
            .iter()
            .map(|m| m.rebalance_timeout_ms)
            .max()
            .unwrap_or(0)
    }

    fn accept_joining_member(&self, member_id: &str, members_max: usize) -> bool {
        match self.state {
            GroupState::Empty | GroupState::Dead => true,
            GroupState::CompletingRebalance | GroupState::Stable => {
                self.has_member(member_id) || self.members.len() < members_max
            }
            GroupState::PreparingRebalance => {
                let awaiting = self
                    .members
                    .iter()
                    .filter(|m| m.awaiting_join.is_some())
                    .count();
                self.member_index(member_id)
                    .is_some_and(|i| self.members[i].awaiting_join.is_some())
                    || awaiting < members_max
            }
        }
    }

    /// Kafka's `selectProtocol`: among the protocols every member supports, each member votes
    /// for its most preferred; most votes wins, ties go to the first member's preference.
    fn select_protocol(&self) -> StrBytes {
        let Some(first) = self.members.first() else {
            return StrBytes::new();
        };
        let candidates: Vec<&StrBytes> = first
            .protocols
            .iter()
            .map(|p| &p.name)
            .filter(|name| self.all_members_support(name))
            .collect();
        let mut best: Option<(&StrBytes, usize)> = None;
        for candidate in &candidates {
            let votes = self
                .members
                .iter()
                .filter(|m| {
                    m.protocols
                        .iter()
                        .find(|p| candidates.contains(&&p.name))
                        .is_some_and(|p| &p.name == *candidate)
                })
                .count();
            if best.is_none_or(|(_, most)| votes > most) {
                best = Some((candidate, votes));
            }
        }
        match best {
            Some((name, _)) => name.clone(),
            // Unreachable while joins are checked with `supports_protocols`; degrade to the
            // first member's first choice rather than panic.
            None => first
                .protocols
                .first()
                .map(|p| p.name.clone())
                .unwrap_or_default(),
        }
    }

    fn current_member_metadata(&self, version: i16) -> Vec<JoinGroupResponseMember> {
        let protocol = self.protocol_name.as_deref().unwrap_or("");
        self.members
            .iter()
            .map(|m| {
                JoinGroupResponseMember::default()
                    .with_member_id(m.member_id.clone())
                    .with_group_instance_id(if version >= 5 {
                        m.group_instance_id.clone()
                    } else {
                        None
                    })
                    .with_metadata(m.metadata(protocol))
            })
            .collect()
    }

    fn join_response(
        &self,
        version: i16,
        member_id: &StrBytes,
        with_members: bool,
        leader: StrBytes,
        skip_assignment: bool,
    ) -> JoinGroupResponse {
        JoinGroupResponse::default()
            .with_generation_id(self.generation_id)
            .with_protocol_type(self.protocol_type.clone())
            .with_protocol_name(Some(self.protocol_name.clone().unwrap_or_default()))
            .with_leader(leader)
            .with_skip_assignment(skip_assignment && version >= 9)
            .with_member_id(member_id.clone())
            .with_members(if with_members {
                self.current_member_metadata(version)
            } else {
                Vec::new()
            })
    }

    // ---------------------------------------------------------------- JoinGroup

    /// Kafka's `handleJoinGroup` after the group exists. `new_member_id` is `Some` (freshly
    /// generated) when the request carried no member id.
    pub fn join(
        &mut self,
        ctx: &mut Ctx<'_>,
        params: JoinParams,
        new_member_id: Option<StrBytes>,
    ) -> JoinOutcome {
        if !self.accept_joining_member(&params.member_id, ctx.config.members_per_group_max) {
            if self.has_member(&params.member_id) {
                self.remove_member_and_update_group(ctx, &params.member_id.clone());
            }
            return JoinOutcome::Done(join_error(
                params.version,
                StrBytes::new(),
                ResponseError::GroupMaxSizeReached,
            ));
        }
        let outcome = match new_member_id {
            Some(new_member_id) => self.join_new_member(ctx, params, new_member_id),
            None => self.join_current_member(ctx, params),
        };
        if self.state == GroupState::PreparingRebalance {
            self.try_complete_join(ctx);
        }
        outcome
    }

    fn join_new_member(
        &mut self,
        ctx: &mut Ctx<'_>,
        mut params: JoinParams,
        new_member_id: StrBytes,
    ) -> JoinOutcome {
        let version = params.version;
        if self.state == GroupState::Dead {
            return JoinOutcome::Done(join_error(
                version,
                params.member_id,
                ResponseError::CoordinatorNotAvailable,
            ));
        }
        if !self.supports_protocols(&params.protocol_type, &params.protocols) {
            return JoinOutcome::Done(join_error(
                version,
                params.member_id,
                ResponseError::InconsistentGroupProtocol,
            ));
        }
        if let Some(instance_id) = params.group_instance_id.clone() {
            if let Some(old_member_id) = self.static_member_id(&instance_id) {
                return self.update_static_member_and_rebalance(
                    ctx,
                    params,
                    old_member_id,
                    new_member_id,
                );
            }
        } else if params.require_known_member_id {
            if self.pending_members.len() >= ctx.config.members_per_group_max {
                return JoinOutcome::Done(join_error(
                    version,
                    StrBytes::new(),
                    ResponseError::GroupMaxSizeReached,
                ));
            }
            self.pending_members.push(PendingMember {
                member_id: new_member_id.clone(),
                deadline_ms: ctx.now_ms.saturating_add(params.session_timeout_ms),
            });
            return JoinOutcome::Done(join_error(
                version,
                new_member_id,
                ResponseError::MemberIdRequired,
            ));
        }
        params.member_id = new_member_id;
        self.add_member_and_rebalance(ctx, params)
    }

    fn join_current_member(&mut self, ctx: &mut Ctx<'_>, params: JoinParams) -> JoinOutcome {
        let version = params.version;
        let member_id = params.member_id.clone();
        if self.state == GroupState::Dead {
            return JoinOutcome::Done(join_error(
                version,
                member_id,
                ResponseError::CoordinatorNotAvailable,
            ));
        }
        if !self.supports_protocols(&params.protocol_type, &params.protocols) {
            return JoinOutcome::Done(join_error(
                version,
                member_id,
                ResponseError::InconsistentGroupProtocol,
            ));
        }
        if self.is_pending_member(&member_id) {
            if params.group_instance_id.is_some() {
                // Pending ids are only handed to dynamic members; a static member presenting
                // one is confused. Kafka throws here; we let it reset and retry.
                return JoinOutcome::Done(join_error(
                    version,
                    member_id,
                    ResponseError::UnknownMemberId,
                ));
            }
            return self.add_member_and_rebalance(ctx, params);
        }
        let instance_not_found = params
            .group_instance_id
            .as_ref()
            .is_some_and(|id| self.static_member_id(id).is_none());
        if self.is_static_member_fenced(params.group_instance_id.as_ref(), &member_id) {
            return JoinOutcome::Done(join_error(
                version,
                member_id,
                ResponseError::FencedInstanceId,
            ));
        }
        let Some(index) = self
            .member_index(&member_id)
            .filter(|_| !instance_not_found)
        else {
            return JoinOutcome::Done(join_error(
                version,
                member_id,
                ResponseError::UnknownMemberId,
            ));
        };
        match self.state {
            GroupState::PreparingRebalance => self.update_member_and_rebalance(ctx, index, params),
            GroupState::CompletingRebalance => {
                if self.members[index].matches(&params.protocols) {
                    // A retry of a join whose response was lost: answer with this generation.
                    let leader = self.leader_id.clone().unwrap_or_default();
                    let is_leader = self.is_leader(&member_id);
                    JoinOutcome::Done(
                        self.join_response(version, &member_id, is_leader, leader, false),
                    )
                } else {
                    self.update_member_and_rebalance(ctx, index, params)
                }
            }
            GroupState::Stable => {
                if self.is_leader(&member_id) || !self.members[index].matches(&params.protocols) {
                    // The leader rejoining forces a rebalance: that is how it reacts to
                    // changes outside member metadata (e.g. new partitions).
                    self.update_member_and_rebalance(ctx, index, params)
                } else {
                    let leader = self.leader_id.clone().unwrap_or_default();
                    JoinOutcome::Done(self.join_response(version, &member_id, false, leader, false))
                }
            }
            GroupState::Empty | GroupState::Dead => JoinOutcome::Done(join_error(
                version,
                member_id,
                ResponseError::UnknownMemberId,
            )),
        }
    }

    fn add_member_and_rebalance(&mut self, ctx: &mut Ctx<'_>, params: JoinParams) -> JoinOutcome {
        let token = params.token;
        let member = Member {
            member_id: params.member_id,
            group_instance_id: params.group_instance_id,
            client_id: params.client_id,
            client_host: params.client_host,
            session_timeout_ms: params.session_timeout_ms,
            rebalance_timeout_ms: params.rebalance_timeout_ms,
            protocol_type: params.protocol_type,
            protocols: params.protocols,
            assignment: Bytes::new(),
            awaiting_join: Some(Pending {
                token,
                version: params.version,
            }),
            awaiting_sync: None,
            is_new: true,
            heartbeat_deadline_ms: ctx
                .now_ms
                .saturating_add(ctx.config.new_member_join_timeout_ms),
        };
        if self.state == GroupState::PreparingRebalance && self.generation_id == 0 {
            self.new_member_added = true;
        }
        if self.members.is_empty() {
            self.protocol_type = Some(member.protocol_type.clone());
        }
        if self.leader_id.is_none() {
            self.leader_id = Some(member.member_id.clone());
        }
        self.pending_members
            .retain(|p| p.member_id != member.member_id);
        self.members.push(member);
        self.maybe_prepare_rebalance(ctx);
        JoinOutcome::Pending(token)
    }

    /// Replaces a member's parked join (answering the old one) and applies new protocols and
    /// timeouts.
    fn update_member(&mut self, ctx: &mut Ctx<'_>, index: usize, params: JoinParams) {
        let member = &mut self.members[index];
        member.protocols = params.protocols;
        member.session_timeout_ms = params.session_timeout_ms;
        member.rebalance_timeout_ms = params.rebalance_timeout_ms;
        let superseded = member.awaiting_join.replace(Pending {
            token: params.token,
            version: params.version,
        });
        let member_id = member.member_id.clone();
        if let Some(old) = superseded {
            // Kafka drops the older callback; we answer it so no caller waits forever.
            let response = join_error(old.version, member_id, ResponseError::RebalanceInProgress);
            reply_join(ctx, old, response);
        }
    }

    fn update_member_and_rebalance(
        &mut self,
        ctx: &mut Ctx<'_>,
        index: usize,
        params: JoinParams,
    ) -> JoinOutcome {
        let token = params.token;
        self.update_member(ctx, index, params);
        self.maybe_prepare_rebalance(ctx);
        JoinOutcome::Pending(token)
    }

    /// KIP-345: a static member rejoining without a member id takes over its slot under a new
    /// member id; whoever still uses the old id is fenced.
    fn update_static_member_and_rebalance(
        &mut self,
        ctx: &mut Ctx<'_>,
        params: JoinParams,
        old_member_id: StrBytes,
        new_member_id: StrBytes,
    ) -> JoinOutcome {
        let version = params.version;
        let Some(index) = self.member_index(&old_member_id) else {
            return JoinOutcome::Done(join_error(
                version,
                params.member_id,
                ResponseError::UnknownServerError,
            ));
        };
        let previous_leader = self.leader_id.clone().unwrap_or_default();
        {
            let member = &mut self.members[index];
            let old_join = member.awaiting_join.take();
            let old_sync = member.awaiting_sync.take();
            member.member_id = new_member_id.clone();
            member.heartbeat_deadline_ms = ctx.now_ms.saturating_add(params.session_timeout_ms);
            if let Some(old) = old_join {
                let response = join_error(
                    old.version,
                    old_member_id.clone(),
                    ResponseError::FencedInstanceId,
                );
                reply_join(ctx, old, response);
            }
            if let Some(old) = old_sync {
                reply_sync(ctx, old, sync_error(ResponseError::FencedInstanceId));
            }
        }
        if self.leader_id.as_ref() == Some(&old_member_id) {
            self.leader_id = Some(new_member_id.clone());
        }
        for pending in &mut self.pending_sync_members {
            if *pending == old_member_id {
                *pending = new_member_id.clone();
            }
        }
        let token = params.token;
        self.update_member(ctx, index, params);
        match self.state {
            GroupState::Stable => {
                if self.protocol_name.as_ref() == Some(&self.select_protocol()) {
                    // Nothing the assignment depends on changed: hand the member the current
                    // generation without a rebalance (KIP-345).
                    self.members[index].awaiting_join = None;
                    let is_leader = self.is_leader(&new_member_id);
                    let response = if version >= 9 {
                        // KIP-814: the static leader learns the members but must not reassign.
                        let leader = self.leader_id.clone().unwrap_or_default();
                        self.join_response(version, &new_member_id, is_leader, leader, is_leader)
                    } else {
                        // Pre-KIP-814 clients: report the old leader id so that a rejoining
                        // leader does not think it must compute a (discarded) assignment.
                        self.join_response(version, &new_member_id, false, previous_leader, false)
                    };
                    JoinOutcome::Done(response)
                } else {
                    self.maybe_prepare_rebalance(ctx);
                    JoinOutcome::Pending(token)
                }
            }
            GroupState::CompletingRebalance => {
                // The leader may be assigning to the old member id: start over.
                self.prepare_rebalance(ctx);
                JoinOutcome::Pending(token)
            }
            GroupState::PreparingRebalance | GroupState::Empty | GroupState::Dead => {
                JoinOutcome::Pending(token)
            }
        }
    }

    // ---------------------------------------------------------------- rebalance phases

    fn can_rebalance(&self) -> bool {
        matches!(
            self.state,
            GroupState::Stable | GroupState::CompletingRebalance | GroupState::Empty
        )
    }

    fn maybe_prepare_rebalance(&mut self, ctx: &mut Ctx<'_>) {
        if self.can_rebalance() {
            self.prepare_rebalance(ctx);
        }
    }

    fn prepare_rebalance(&mut self, ctx: &mut Ctx<'_>) {
        if self.state == GroupState::CompletingRebalance {
            self.reset_and_propagate_assignment_error(ctx, ResponseError::RebalanceInProgress);
        }
        self.sync_deadline_ms = None;
        self.pending_sync_members.clear();
        let rebalance_timeout_ms = self.rebalance_timeout_ms();
        let timer = if self.state == GroupState::Empty {
            let delay_ms = ctx.config.initial_rebalance_delay_ms;
            JoinTimer::Initial {
                deadline_ms: ctx.now_ms.saturating_add(delay_ms),
                remaining_ms: rebalance_timeout_ms.saturating_sub(delay_ms),
            }
        } else {
            JoinTimer::Normal {
                deadline_ms: ctx.now_ms.saturating_add(rebalance_timeout_ms),
            }
        };
        self.join_timer = Some(timer);
        self.state = GroupState::PreparingRebalance;
        self.try_complete_join(ctx);
    }

    fn try_complete_join(&mut self, ctx: &mut Ctx<'_>) {
        if self.state == GroupState::PreparingRebalance
            && matches!(self.join_timer, Some(JoinTimer::Normal { .. }))
            && self.has_all_members_joined()
        {
            self.complete_join(ctx);
        }
    }

    /// Kafka's `onCompleteJoin`: drop dynamic members that did not rejoin, form the next
    /// generation, answer every parked join (the leader's with the member list).
    fn complete_join(&mut self, ctx: &mut Ctx<'_>) {
        self.join_timer = None;
        let not_rejoined: Vec<StrBytes> = self
            .members
            .iter()
            .filter(|m| m.awaiting_join.is_none() && m.group_instance_id.is_none())
            .map(|m| m.member_id.clone())
            .collect();
        for member_id in &not_rejoined {
            self.remove_member(ctx, member_id);
        }
        if !self.maybe_elect_new_joined_leader() && !self.members.is_empty() {
            // Only static members remain and none rejoined: wait another rebalance timeout;
            // their session timeouts will remove them if they are gone.
            self.join_timer = Some(JoinTimer::Normal {
                deadline_ms: ctx.now_ms.saturating_add(self.rebalance_timeout_ms()),
            });
            return;
        }
        self.generation_id = self.generation_id.wrapping_add(1);
        self.pending_sync_members.clear();
        self.sync_deadline_ms = None;
        if self.members.is_empty() {
            self.protocol_name = None;
            self.state = GroupState::Empty;
            return;
        }
        self.protocol_name = Some(self.select_protocol());
        self.state = GroupState::CompletingRebalance;
        let leader = self.leader_id.clone().unwrap_or_default();
        for index in 0..self.members.len() {
            let member_id = self.members[index].member_id.clone();
            if let Some(pending) = self.members[index].awaiting_join.take() {
                let is_leader = self.is_leader(&member_id);
                let response = self.join_response(
                    pending.version,
                    &member_id,
                    is_leader,
                    leader.clone(),
                    false,
                );
                reply_join(ctx, pending, response);
            }
            let member = &mut self.members[index];
            member.heartbeat_deadline_ms = ctx.now_ms.saturating_add(member.session_timeout_ms);
            member.is_new = false;
            self.pending_sync_members.push(member_id);
        }
        self.sync_deadline_ms = Some(ctx.now_ms.saturating_add(self.rebalance_timeout_ms()));
    }

    /// The leader must be a member that rejoined; keep it if it did, else pick the first that
    /// did. False when nobody rejoined.
    fn maybe_elect_new_joined_leader(&mut self) -> bool {
        let Some(leader) = self.leader_id.clone() else {
            return false;
        };
        if self
            .member_index(&leader)
            .is_some_and(|i| self.members[i].awaiting_join.is_some())
        {
            return true;
        }
        match self.members.iter().find(|m| m.awaiting_join.is_some()) {
            Some(member) => {
                self.leader_id = Some(member.member_id.clone());
                true
            }
            None => false,
        }
    }

    fn reset_and_propagate_assignment_error(&mut self, ctx: &mut Ctx<'_>, error: ResponseError) {
        for member in &mut self.members {
            member.assignment = Bytes::new();
        }
        self.propagate_assignment(ctx, Some(error));
    }

    fn propagate_assignment(&mut self, ctx: &mut Ctx<'_>, error: Option<ResponseError>) {
        for member in &mut self.members {
            if let Some(pending) = member.awaiting_sync.take() {
                let response = match error {
                    Some(error) => sync_error(error),
                    None => SyncGroupResponse::default()
                        .with_protocol_type(self.protocol_type.clone())
                        .with_protocol_name(self.protocol_name.clone())
                        .with_assignment(member.assignment.clone()),
                };
                reply_sync(ctx, pending, response);
            }
            member.heartbeat_deadline_ms = ctx.now_ms.saturating_add(member.session_timeout_ms);
        }
    }

    // ---------------------------------------------------------------- SyncGroup / Heartbeat

    /// Kafka's `doSyncGroup` (request-level checks done by the caller).
    pub fn sync(
        &mut self,
        ctx: &mut Ctx<'_>,
        version: i16,
        token: ReplyToken,
        request: &kafka_protocol::messages::SyncGroupRequest,
    ) -> SyncOutcome {
        let member_id = &request.member_id;
        let done = |error| SyncOutcome::Done(sync_error(error));
        if self.state == GroupState::Dead {
            return done(ResponseError::CoordinatorNotAvailable);
        }
        if self.is_static_member_fenced(request.group_instance_id.as_ref(), member_id) {
            return done(ResponseError::FencedInstanceId);
        }
        let Some(index) = self.member_index(member_id) else {
            return done(ResponseError::UnknownMemberId);
        };
        if request.generation_id != self.generation_id {
            return done(ResponseError::IllegalGeneration);
        }
        if request
            .protocol_type
            .as_ref()
            .is_some_and(|t| self.protocol_type.as_ref() != Some(t))
            || request
                .protocol_name
                .as_ref()
                .is_some_and(|n| self.protocol_name.as_ref() != Some(n))
        {
            return done(ResponseError::InconsistentGroupProtocol);
        }
        match self.state {
            GroupState::Empty | GroupState::Dead => done(ResponseError::UnknownMemberId),
            GroupState::PreparingRebalance => done(ResponseError::RebalanceInProgress),
            GroupState::CompletingRebalance => {
                let superseded = self.members[index]
                    .awaiting_sync
                    .replace(Pending { token, version });
                if let Some(old) = superseded {
                    reply_sync(ctx, old, sync_error(ResponseError::RebalanceInProgress));
                }
                self.pending_sync_members.retain(|p| p != member_id);
                if self.is_leader(member_id) {
                    for member in &mut self.members {
                        // Members the leader left out get an empty assignment, as in Kafka.
                        member.assignment = request
                            .assignments
                            .iter()
                            .find(|a| a.member_id == member.member_id)
                            .map(|a| a.assignment.clone())
                            .unwrap_or_default();
                    }
                    self.propagate_assignment(ctx, None);
                    self.state = GroupState::Stable;
                }
                SyncOutcome::Pending(token)
            }
            GroupState::Stable => {
                self.pending_sync_members.retain(|p| p != member_id);
                let member = &mut self.members[index];
                member.heartbeat_deadline_ms = ctx.now_ms.saturating_add(member.session_timeout_ms);
                SyncOutcome::Done(
                    SyncGroupResponse::default()
                        .with_protocol_type(self.protocol_type.clone())
                        .with_protocol_name(self.protocol_name.clone())
                        .with_assignment(member.assignment.clone()),
                )
            }
        }
    }

    /// Kafka's `handleHeartbeat` once the group exists; returns the error, if any.
    pub fn heartbeat(
        &mut self,
        ctx: &mut Ctx<'_>,
        member_id: &str,
        group_instance_id: Option<&StrBytes>,
        generation_id: i32,
    ) -> Option<ResponseError> {
        if self.state == GroupState::Dead {
            return Some(ResponseError::CoordinatorNotAvailable);
        }
        if self.is_static_member_fenced(group_instance_id, member_id) {
            return Some(ResponseError::FencedInstanceId);
        }
        let Some(index) = self.member_index(member_id) else {
            return Some(ResponseError::UnknownMemberId);
        };
        if generation_id != self.generation_id {
            return Some(ResponseError::IllegalGeneration);
        }
        if self.state == GroupState::Empty {
            return Some(ResponseError::UnknownMemberId);
        }
        let member = &mut self.members[index];
        member.heartbeat_deadline_ms = ctx.now_ms.saturating_add(member.session_timeout_ms);
        (self.state == GroupState::PreparingRebalance).then_some(ResponseError::RebalanceInProgress)
    }

    // ---------------------------------------------------------------- leaving

    /// Removes a member, answering whatever it has parked. No rebalance is triggered here.
    fn remove_member(&mut self, ctx: &mut Ctx<'_>, member_id: &str) {
        let Some(index) = self.member_index(member_id) else {
            return;
        };
        let member = self.members.remove(index);
        if let Some(pending) = member.awaiting_join {
            // Kafka: UNKNOWN_MEMBER_ID with an empty member id so the client rejoins afresh.
            let response = join_error(
                pending.version,
                StrBytes::new(),
                ResponseError::UnknownMemberId,
            );
            reply_join(ctx, pending, response);
        }
        if let Some(pending) = member.awaiting_sync {
            reply_sync(ctx, pending, sync_error(ResponseError::UnknownMemberId));
        }
        if self.is_leader(member_id) {
            self.leader_id = self.members.first().map(|m| m.member_id.clone());
        }
        self.pending_members
            .retain(|p| p.member_id.as_str() != member_id);
        self.pending_sync_members
            .retain(|p| p.as_str() != member_id);
    }

    /// Kafka's `removeMemberAndUpdateGroup`: leave, session expiry, or size-limit eviction.
    pub fn remove_member_and_update_group(&mut self, ctx: &mut Ctx<'_>, member_id: &str) {
        self.remove_member(ctx, member_id);
        match self.state {
            GroupState::Dead | GroupState::Empty => {}
            GroupState::Stable | GroupState::CompletingRebalance => {
                self.maybe_prepare_rebalance(ctx)
            }
            GroupState::PreparingRebalance => self.try_complete_join(ctx),
        }
    }

    /// LeaveGroup for one member identity; returns the per-member error, if any.
    pub fn leave(
        &mut self,
        ctx: &mut Ctx<'_>,
        member_id: &StrBytes,
        group_instance_id: Option<&StrBytes>,
    ) -> Option<ResponseError> {
        if member_id.is_empty() {
            // Administrative removal by group.instance.id (KIP-345).
            let Some(current) = group_instance_id.and_then(|id| self.static_member_id(id)) else {
                return Some(ResponseError::UnknownMemberId);
            };
            self.remove_member_and_update_group(ctx, &current);
            return None;
        }
        if self.is_pending_member(member_id) {
            self.pending_members.retain(|p| &p.member_id != member_id);
            self.try_complete_join(ctx);
            return None;
        }
        if self.is_static_member_fenced(group_instance_id, member_id) {
            return Some(ResponseError::FencedInstanceId);
        }
        if !self.has_member(member_id) {
            return Some(ResponseError::UnknownMemberId);
        }
        self.remove_member_and_update_group(ctx, member_id);
        None
    }

    // ---------------------------------------------------------------- timers

    /// The earliest instant at which [`Group::fire_due_timers`] has something to do.
    pub fn next_deadline_ms(&self) -> Option<u64> {
        let members = self.members.iter().filter_map(Member::expiry_deadline_ms);
        let pending = self.pending_members.iter().map(|p| p.deadline_ms);
        let sync = self
            .sync_deadline_ms
            .filter(|_| !self.pending_sync_members.is_empty());
        let join = self.join_timer.map(JoinTimer::deadline_ms);
        members.chain(pending).chain(sync).chain(join).min()
    }

    /// Processes every deadline at or before `ctx.now_ms`.
    pub fn fire_due_timers(&mut self, ctx: &mut Ctx<'_>) {
        let now = ctx.now_ms;
        for _ in 0..TIMER_PASSES_PER_GROUP_MAX {
            if self.next_deadline_ms().is_none_or(|d| d > now) {
                return;
            }
            self.fire_once(ctx);
        }
        panic!(
            "group {:?}: timers still due after {} passes at {} ms",
            self.group_id, TIMER_PASSES_PER_GROUP_MAX, now
        );
    }

    fn fire_once(&mut self, ctx: &mut Ctx<'_>) {
        let now = ctx.now_ms;
        // Expired KIP-394 pending members.
        let expired_pending = self.pending_members.len();
        self.pending_members.retain(|p| p.deadline_ms > now);
        if self.pending_members.len() != expired_pending {
            self.try_complete_join(ctx);
        }
        // Session (or new-member join) timeouts.
        let expired: Vec<StrBytes> = self
            .members
            .iter()
            .filter(|m| m.expiry_deadline_ms().is_some_and(|d| d <= now))
            .map(|m| m.member_id.clone())
            .collect();
        for member_id in &expired {
            self.remove_member_and_update_group(ctx, member_id);
        }
        // Members of the new generation that never sent SyncGroup.
        if self.sync_deadline_ms.is_some_and(|d| d <= now) {
            self.sync_deadline_ms = None;
            if matches!(
                self.state,
                GroupState::CompletingRebalance | GroupState::Stable
            ) && !self.pending_sync_members.is_empty()
            {
                for member_id in std::mem::take(&mut self.pending_sync_members) {
                    self.remove_member(ctx, &member_id);
                }
                self.prepare_rebalance(ctx);
            }
        }
        // The rebalance phase itself.
        match self.join_timer {
            Some(JoinTimer::Initial {
                deadline_ms,
                remaining_ms,
            }) if deadline_ms <= now => {
                if self.new_member_added && remaining_ms != 0 {
                    self.new_member_added = false;
                    let delay_ms = ctx.config.initial_rebalance_delay_ms.min(remaining_ms);
                    // Re-armed from the deadline, not from `now`: the outcome must not
                    // depend on how late the caller got round to `handle_timeout`.
                    self.join_timer = Some(JoinTimer::Initial {
                        deadline_ms: deadline_ms.saturating_add(delay_ms),
                        remaining_ms: remaining_ms - delay_ms,
                    });
                } else {
                    self.complete_join(ctx);
                }
            }
            Some(JoinTimer::Normal { deadline_ms }) if deadline_ms <= now => {
                self.complete_join(ctx)
            }
            _ => {}
        }
    }

    // ---------------------------------------------------------------- invariants

    /// Panics if a structural invariant is broken. Cheap enough for tests and simulations.
    #[cfg(test)]
    pub fn check_invariants(&self) {
        let id = &self.group_id;
        match &self.leader_id {
            None => assert!(self.members.is_empty(), "{id:?}: members without a leader"),
            Some(leader) => assert!(self.has_member(leader), "{id:?}: leader is not a member"),
        }
        assert_eq!(
            self.join_timer.is_some(),
            self.state == GroupState::PreparingRebalance,
            "{id:?}: join timer iff PreparingRebalance"
        );
        if matches!(
            self.state,
            GroupState::Empty | GroupState::PreparingRebalance
        ) {
            assert!(
                self.members.iter().all(|m| m.awaiting_sync.is_none()),
                "{id:?}: sync parked in {:?}",
                self.state
            );
        }
        if self.state == GroupState::Empty {
            assert!(self.members.is_empty(), "{id:?}: Empty with members");
        }
        if matches!(
            self.state,
            GroupState::CompletingRebalance | GroupState::Stable
        ) {
            assert!(self.protocol_name.is_some(), "{id:?}: no protocol");
            assert!(
                self.members.iter().all(|m| m.awaiting_join.is_none()),
                "{id:?}: join parked in {:?}",
                self.state
            );
        }
        for (i, member) in self.members.iter().enumerate() {
            assert!(
                self.members[i + 1..]
                    .iter()
                    .all(|other| other.member_id != member.member_id),
                "{id:?}: duplicate member id"
            );
            if let Some(instance) = &member.group_instance_id {
                assert!(
                    self.members[i + 1..]
                        .iter()
                        .all(|other| other.group_instance_id.as_ref() != Some(instance)),
                    "{id:?}: duplicate group.instance.id"
                );
            }
        }
    }
}
