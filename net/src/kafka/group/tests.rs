//! Scenario tests of the group coordinator: deterministic, time passed explicitly, every
//! response encoded at its request's version to prove it is valid on the wire.

use std::collections::BTreeMap;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::{
    OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics,
};
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Encodable, StrBytes};

use super::*;

pub(super) const GROUP: &str = "group-a";
pub(super) const SESSION_MS: i32 = 10_000;
pub(super) const REBALANCE_MS: i32 = 30_000;

pub(super) fn s(text: &str) -> StrBytes {
    StrBytes::from_string(text.to_owned())
}

pub(super) fn gid(text: &str) -> GroupId {
    GroupId(s(text))
}

pub(super) fn encodes<T: Encodable + std::fmt::Debug>(message: &T, version: i16) {
    let mut buf = Vec::new();
    if let Err(e) = message.encode(&mut buf, version) {
        panic!("v{version} does not encode: {e}: {message:?}");
    }
}

fn code(error: ResponseError) -> i16 {
    error.code()
}

/// A coordinator plus a clock and a mailbox of deferred replies.
struct Harness {
    coordinator: GroupCoordinator,
    now_ms: u64,
    replies: BTreeMap<ReplyToken, Reply>,
}

impl Harness {
    fn new(initial_rebalance_delay_ms: u64) -> Self {
        let config = GroupConfig {
            initial_rebalance_delay_ms,
            member_id_seed: 0x5eed,
            ..GroupConfig::default()
        };
        Self {
            coordinator: GroupCoordinator::new(config).unwrap(),
            now_ms: 1_000,
            replies: BTreeMap::new(),
        }
    }

    fn collect(&mut self) {
        for (token, reply) in self.coordinator.poll_replies() {
            match &reply {
                Reply::JoinGroup { version, response } => encodes(response, *version),
                Reply::SyncGroup { version, response } => encodes(response, *version),
            }
            assert!(
                self.replies.insert(token, reply).is_none(),
                "token {token:?} answered twice"
            );
        }
        self.coordinator.check_invariants();
    }

    fn advance(&mut self, ms: u64) {
        self.now_ms += ms;
        self.coordinator.handle_timeout(self.now_ms);
        self.collect();
    }

    fn join_request(
        member_id: &str,
        instance: Option<&str>,
        protocols: &[&str],
    ) -> JoinGroupRequest {
        JoinGroupRequest::default()
            .with_group_id(gid(GROUP))
            .with_session_timeout_ms(SESSION_MS)
            .with_rebalance_timeout_ms(REBALANCE_MS)
            .with_member_id(s(member_id))
            .with_group_instance_id(instance.map(s))
            .with_protocol_type(s("consumer"))
            .with_protocols(
                protocols
                    .iter()
                    .map(|name| {
                        JoinGroupRequestProtocol::default()
                            .with_name(s(name))
                            .with_metadata(Bytes::from(format!("{name}-meta-{member_id}")))
                    })
                    .collect(),
            )
    }

    fn join_with(&mut self, version: i16, request: JoinGroupRequest) -> JoinOutcome {
        let client = ClientInfo {
            client_id: s("client"),
            client_host: s("/127.0.0.1"),
        };
        let outcome = self
            .coordinator
            .handle_join(self.now_ms, version, &client, request);
        if let JoinOutcome::Done(response) = &outcome {
            encodes(response, version);
        }
        self.collect();
        outcome
    }

    fn join(&mut self, version: i16, member_id: &str) -> JoinOutcome {
        self.join_with(version, Self::join_request(member_id, None, &["range"]))
    }

    fn join_static(&mut self, member_id: &str, instance: &str) -> JoinOutcome {
        self.join_with(7, Self::join_request(member_id, Some(instance), &["range"]))
    }

    /// The reply to `outcome`, immediate or already delivered.
    fn join_response(&mut self, outcome: JoinOutcome) -> JoinGroupResponse {
        match outcome {
            JoinOutcome::Done(response) => response,
            JoinOutcome::Pending(token) => match self.replies.remove(&token) {
                Some(Reply::JoinGroup { response, .. }) => response,
                other => panic!("no join reply for {token:?}: {other:?}"),
            },
        }
    }

    fn is_answered(&self, outcome: &JoinOutcome) -> bool {
        match outcome {
            JoinOutcome::Done(_) => true,
            JoinOutcome::Pending(token) => self.replies.contains_key(token),
        }
    }

    fn sync(
        &mut self,
        member_id: &str,
        generation_id: i32,
        assignments: &[(&str, &str)],
    ) -> SyncOutcome {
        let request = SyncGroupRequest::default()
            .with_group_id(gid(GROUP))
            .with_generation_id(generation_id)
            .with_member_id(s(member_id))
            .with_protocol_type(Some(s("consumer")))
            .with_protocol_name(Some(s("range")))
            .with_assignments(
                assignments
                    .iter()
                    .map(|(member, assignment)| {
                        SyncGroupRequestAssignment::default()
                            .with_member_id(s(member))
                            .with_assignment(Bytes::from(assignment.to_string()))
                    })
                    .collect(),
            );
        let outcome = self.coordinator.handle_sync(self.now_ms, 5, &request);
        if let SyncOutcome::Done(response) = &outcome {
            encodes(response, 5);
        }
        self.collect();
        outcome
    }

    fn sync_response(&mut self, outcome: SyncOutcome) -> SyncGroupResponse {
        match outcome {
            SyncOutcome::Done(response) => response,
            SyncOutcome::Pending(token) => match self.replies.remove(&token) {
                Some(Reply::SyncGroup { response, .. }) => response,
                other => panic!("no sync reply for {token:?}: {other:?}"),
            },
        }
    }

    fn heartbeat_with(
        &mut self,
        member_id: &str,
        instance: Option<&str>,
        generation_id: i32,
    ) -> i16 {
        let request = HeartbeatRequest::default()
            .with_group_id(gid(GROUP))
            .with_generation_id(generation_id)
            .with_member_id(s(member_id))
            .with_group_instance_id(instance.map(s));
        let response = self.coordinator.handle_heartbeat(self.now_ms, 4, &request);
        encodes(&response, 4);
        self.collect();
        response.error_code
    }

    fn heartbeat(&mut self, member_id: &str, generation_id: i32) -> i16 {
        self.heartbeat_with(member_id, None, generation_id)
    }

    fn leave(&mut self, member_ids: &[&str]) -> LeaveGroupResponse {
        let request = LeaveGroupRequest::default()
            .with_group_id(gid(GROUP))
            .with_members(
                member_ids
                    .iter()
                    .map(|m| MemberIdentity::default().with_member_id(s(m)))
                    .collect(),
            );
        let response = self.coordinator.handle_leave(self.now_ms, 4, &request);
        encodes(&response, 4);
        self.collect();
        response
    }

    fn commit(
        &mut self,
        group: &str,
        member_id: &str,
        generation_id: i32,
        offsets: &[(&str, i32, i64)],
    ) -> OffsetCommitOutcome {
        let request = commit_request(group, member_id, generation_id, offsets);
        let outcome =
            self.coordinator
                .handle_offset_commit(self.now_ms, 1_700_000_000_000, 8, &request);
        if let OffsetCommitOutcome::Done(response) = &outcome {
            encodes(response, 8);
        }
        self.collect();
        outcome
    }

    /// Commit and acknowledge persistence at once; the per-partition error codes.
    fn commit_persisted(
        &mut self,
        group: &str,
        member_id: &str,
        generation_id: i32,
        offsets: &[(&str, i32, i64)],
    ) -> Vec<i16> {
        let response = match self.commit(group, member_id, generation_id, offsets) {
            OffsetCommitOutcome::Done(response) => response,
            OffsetCommitOutcome::Persist { token, .. } => self
                .coordinator
                .handle_offset_commit_persisted(token, Ok(()))
                .unwrap(),
        };
        encodes(&response, 8);
        response
            .topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| p.error_code))
            .collect()
    }

    fn fetch(&mut self, group: &str, topics: Option<&[(&str, &[i32])]>) -> Vec<(String, i32, i64)> {
        let request = OffsetFetchRequest::default()
            .with_group_id(gid(group))
            .with_topics(topics.map(|topics| {
                topics
                    .iter()
                    .map(|(name, partitions)| {
                        OffsetFetchRequestTopic::default()
                            .with_name(TopicName(s(name)))
                            .with_partition_indexes(partitions.to_vec())
                    })
                    .collect()
            }));
        let response = self
            .coordinator
            .handle_offset_fetch(self.now_ms, 7, &request);
        encodes(&response, 7);
        assert_eq!(response.error_code, 0);
        response
            .topics
            .iter()
            .flat_map(|t| {
                t.partitions.iter().map(|p| {
                    assert_eq!(p.error_code, 0);
                    (t.name.to_string(), p.partition_index, p.committed_offset)
                })
            })
            .collect()
    }

    /// Two dynamic members joined with a 3 s initial delay, synced, Stable at generation 1.
    /// Returns (leader, follower).
    fn stable_pair() -> (Self, String, String) {
        let mut h = Self::new(3_000);
        let a = h.join(3, "");
        let b = h.join(3, "");
        h.advance(6_000);
        let a = h.join_response(a);
        let b = h.join_response(b);
        let (leader, follower) = (a.member_id.to_string(), b.member_id.to_string());
        let follower_sync = h.sync(&follower, 1, &[]);
        let leader_sync = h.sync(&leader, 1, &[(&leader, "A0"), (&follower, "B0")]);
        assert_eq!(h.sync_response(leader_sync).assignment, Bytes::from("A0"));
        assert_eq!(h.sync_response(follower_sync).assignment, Bytes::from("B0"));
        assert_eq!(h.coordinator.group_state(GROUP), Some(GroupState::Stable));
        (h, leader, follower)
    }
}

pub(super) fn commit_request(
    group: &str,
    member_id: &str,
    generation_id: i32,
    offsets: &[(&str, i32, i64)],
) -> OffsetCommitRequest {
    OffsetCommitRequest::default()
        .with_group_id(gid(group))
        .with_generation_id_or_member_epoch(generation_id)
        .with_member_id(s(member_id))
        .with_topics(
            offsets
                .iter()
                .map(|(topic, partition, offset)| {
                    OffsetCommitRequestTopic::default()
                        .with_name(TopicName(s(topic)))
                        .with_partitions(vec![OffsetCommitRequestPartition::default()
                            .with_partition_index(*partition)
                            .with_committed_offset(*offset)
                            .with_committed_metadata(Some(s("m")))])
                })
                .collect(),
        )
}

#[test]
fn two_members_join_and_the_leader_gets_the_member_list() {
    let mut h = Harness::new(3_000);
    let a = h.join(3, "");
    let b = h.join(3, "");
    assert!(
        !h.is_answered(&a) && !h.is_answered(&b),
        "initial delay holds both"
    );
    assert_eq!(h.coordinator.next_deadline(), Some(h.now_ms + 3_000));
    h.advance(3_000);
    // A member arrived during the delay: Kafka extends it by another delay (up to the
    // rebalance timeout) in case more are coming.
    assert!(!h.is_answered(&a));
    h.advance(2_999);
    assert!(!h.is_answered(&a));
    h.advance(1);
    let a = h.join_response(a);
    let b = h.join_response(b);
    assert_eq!((a.error_code, b.error_code), (0, 0));
    assert_eq!((a.generation_id, b.generation_id), (1, 1));
    assert_eq!(a.leader, a.member_id, "first joiner leads");
    assert_eq!(b.leader, a.member_id);
    assert_eq!(a.protocol_name.as_deref(), Some("range"));
    let members: Vec<_> = a.members.iter().map(|m| m.member_id.clone()).collect();
    assert_eq!(members, vec![a.member_id.clone(), b.member_id.clone()]);
    assert_eq!(a.members[1].metadata, Bytes::from("range-meta-"));
    assert!(b.members.is_empty(), "followers get no member list");
    assert_eq!(
        h.coordinator.group_state(GROUP),
        Some(GroupState::CompletingRebalance)
    );
}

#[test]
fn zero_initial_delay_completes_the_first_join_at_once() {
    let mut h = Harness::new(0);
    let a = h.join(3, "");
    let JoinOutcome::Done(a) = a else {
        panic!("expected an immediate answer, got {a:?}")
    };
    assert_eq!((a.error_code, a.generation_id), (0, 1));
    assert_eq!(a.leader, a.member_id);
}

#[test]
fn sync_distributes_assignments_and_followers_wait_for_the_leader() {
    let mut h = Harness::new(3_000);
    let a = h.join(3, "");
    let b = h.join(3, "");
    h.advance(6_000);
    let leader = h.join_response(a).member_id.to_string();
    let follower = h.join_response(b).member_id.to_string();
    let follower_sync = h.sync(&follower, 1, &[]);
    assert!(matches!(follower_sync, SyncOutcome::Pending(_)));
    assert_eq!(
        h.heartbeat(&follower, 1),
        0,
        "heartbeats are fine while completing"
    );
    let leader_sync = h.sync(&leader, 1, &[(&leader, "A"), (&follower, "B")]);
    let leader_sync = h.sync_response(leader_sync);
    assert_eq!(leader_sync.error_code, 0);
    assert_eq!(leader_sync.assignment, Bytes::from("A"));
    assert_eq!(leader_sync.protocol_name.as_deref(), Some("range"));
    let follower_sync = h.sync_response(follower_sync);
    assert_eq!(follower_sync.assignment, Bytes::from("B"));
    assert_eq!(h.coordinator.group_state(GROUP), Some(GroupState::Stable));
    // A late SyncGroup in Stable gets the stored assignment at once.
    let again = h.sync(&follower, 1, &[]);
    assert_eq!(h.sync_response(again).assignment, Bytes::from("B"));
}

#[test]
fn sync_checks_generation_member_and_protocol() {
    let (mut h, leader, _) = Harness::stable_pair();
    let stale = h.sync(&leader, 0, &[]);
    assert_eq!(
        h.sync_response(stale).error_code,
        code(ResponseError::IllegalGeneration)
    );
    let unknown = h.sync("nobody", 1, &[]);
    assert_eq!(
        h.sync_response(unknown).error_code,
        code(ResponseError::UnknownMemberId)
    );
    let mut request = SyncGroupRequest::default()
        .with_group_id(gid(GROUP))
        .with_generation_id(1)
        .with_member_id(s(&leader))
        .with_protocol_type(Some(s("consumer")))
        .with_protocol_name(Some(s("roundrobin")));
    let SyncOutcome::Done(wrong) = h.coordinator.handle_sync(h.now_ms, 5, &request) else {
        panic!()
    };
    assert_eq!(
        wrong.error_code,
        code(ResponseError::InconsistentGroupProtocol)
    );
    request.protocol_name = None;
    let SyncOutcome::Done(missing) = h.coordinator.handle_sync(h.now_ms, 5, &request) else {
        panic!()
    };
    assert_eq!(
        missing.error_code,
        code(ResponseError::InconsistentGroupProtocol),
        "v5 requires both"
    );
    let SyncOutcome::Done(old) = h.coordinator.handle_sync(h.now_ms, 4, &request) else {
        panic!()
    };
    assert_eq!(old.error_code, 0, "v4 may omit them");
}

#[test]
fn third_member_joining_a_stable_group_triggers_a_rebalance() {
    let (mut h, leader, follower) = Harness::stable_pair();
    let c = h.join(3, "");
    assert!(!h.is_answered(&c));
    assert_eq!(
        h.coordinator.group_state(GROUP),
        Some(GroupState::PreparingRebalance)
    );
    assert_eq!(
        h.heartbeat(&leader, 1),
        code(ResponseError::RebalanceInProgress)
    );
    assert_eq!(
        h.heartbeat(&follower, 1),
        code(ResponseError::RebalanceInProgress)
    );
    let commit = h.commit_persisted(GROUP, &leader, 1, &[("t", 0, 5)]);
    assert_eq!(commit, vec![0], "commits are allowed while preparing");
    let a = h.join(3, &leader);
    assert!(!h.is_answered(&a), "still waiting for the follower");
    let b = h.join(3, &follower);
    // Everyone rejoined: completes without waiting for the rebalance timeout.
    let (a, b, c) = (h.join_response(a), h.join_response(b), h.join_response(c));
    assert_eq!(
        (a.generation_id, b.generation_id, c.generation_id),
        (2, 2, 2)
    );
    assert_eq!(a.leader.as_str(), leader);
    assert_eq!(a.members.len(), 3);
    assert!(b.members.is_empty() && c.members.is_empty());
    assert_eq!(
        h.heartbeat(&leader, 1),
        code(ResponseError::IllegalGeneration)
    );
}

#[test]
fn leave_triggers_a_rebalance() {
    let (mut h, leader, follower) = Harness::stable_pair();
    let response = h.leave(&[&follower, "stranger"]);
    assert_eq!(response.error_code, 0);
    let errors: Vec<i16> = response.members.iter().map(|m| m.error_code).collect();
    assert_eq!(errors, vec![0, code(ResponseError::UnknownMemberId)]);
    assert_eq!(
        h.coordinator.group_state(GROUP),
        Some(GroupState::PreparingRebalance)
    );
    assert_eq!(
        h.heartbeat(&leader, 1),
        code(ResponseError::RebalanceInProgress)
    );
    let a = h.join(3, &leader);
    let a = h.join_response(a);
    assert_eq!((a.generation_id, a.members.len()), (2, 1));
    // The last member leaving empties the group and bumps the generation (Kafka does too).
    let sync = h.sync(&leader, 2, &[(&leader, "all")]);
    assert_eq!(h.sync_response(sync).error_code, 0);
    // v0-v2 report the single member's error at top level.
    let v1 = LeaveGroupRequest::default()
        .with_group_id(gid(GROUP))
        .with_member_id(s(&leader));
    let response = h.coordinator.handle_leave(h.now_ms, 1, &v1);
    encodes(&response, 1);
    assert_eq!(response.error_code, 0);
    assert_eq!(h.coordinator.group_state(GROUP), Some(GroupState::Empty));
    assert_eq!(h.coordinator.group_generation(GROUP), Some(3));
    let response = h.coordinator.handle_leave(h.now_ms, 1, &v1);
    assert_eq!(response.error_code, code(ResponseError::UnknownMemberId));
}

#[test]
fn session_timeout_expiry_removes_a_member_and_rebalances() {
    let (mut h, leader, follower) = Harness::stable_pair();
    for _ in 0..2 {
        h.advance(4_000);
        assert_eq!(h.heartbeat(&leader, 1), 0);
    }
    assert_eq!(h.coordinator.group_members(GROUP).len(), 2);
    h.advance(1_999);
    assert_eq!(h.coordinator.group_members(GROUP).len(), 2);
    h.advance(1);
    assert_eq!(
        h.coordinator.group_members(GROUP).len(),
        1,
        "follower expired"
    );
    assert_eq!(
        h.heartbeat(&follower, 1),
        code(ResponseError::UnknownMemberId)
    );
    assert_eq!(
        h.heartbeat(&leader, 1),
        code(ResponseError::RebalanceInProgress)
    );
    let a = h.join(3, &leader);
    assert_eq!(h.join_response(a).generation_id, 2);
}

#[test]
fn rebalance_timeout_drops_a_member_that_does_not_rejoin() {
    let (mut h, leader, follower) = Harness::stable_pair();
    let c = h.join(3, "");
    let a = h.join(3, &leader);
    // The follower keeps heartbeating (so its session never lapses) but never rejoins.
    let mut elapsed = 0;
    while !h.is_answered(&a) {
        assert!(
            elapsed <= REBALANCE_MS as u64,
            "rebalance did not complete in time"
        );
        assert_eq!(
            h.heartbeat(&follower, 1),
            code(ResponseError::RebalanceInProgress)
        );
        h.advance(5_000);
        elapsed += 5_000;
    }
    assert_eq!(elapsed, REBALANCE_MS as u64);
    let (a, c) = (h.join_response(a), h.join_response(c));
    assert_eq!((a.generation_id, c.generation_id), (2, 2));
    let members: Vec<_> = a.members.iter().map(|m| m.member_id.to_string()).collect();
    assert_eq!(members, vec![leader.clone(), c.member_id.to_string()]);
    assert_eq!(
        h.heartbeat(&follower, 1),
        code(ResponseError::UnknownMemberId)
    );
}

#[test]
fn leader_that_never_syncs_is_removed_and_waiting_followers_are_released() {
    let mut h = Harness::new(3_000);
    let a = h.join(3, "");
    let b = h.join(3, "");
    h.advance(6_000);
    let _leader = h.join_response(a).member_id.to_string();
    let follower = h.join_response(b).member_id.to_string();
    let follower_sync = h.sync(&follower, 1, &[]);
    h.advance(REBALANCE_MS as u64);
    let response = h.sync_response(follower_sync);
    assert_eq!(
        response.error_code,
        code(ResponseError::RebalanceInProgress)
    );
    assert_eq!(h.coordinator.group_members(GROUP), vec![s(&follower)]);
    let b = h.join(3, &follower);
    let b = h.join_response(b);
    assert_eq!((b.generation_id, b.leader.to_string()), (2, follower));
}

#[test]
fn member_id_required_on_v4_and_later() {
    let mut h = Harness::new(0);
    let first = h.join(4, "");
    let first = h.join_response(first);
    assert_eq!(first.error_code, code(ResponseError::MemberIdRequired));
    assert!(
        first.member_id.starts_with("client-"),
        "{:?}",
        first.member_id
    );
    assert_eq!(first.generation_id, -1);
    assert_eq!(h.coordinator.group_state(GROUP), Some(GroupState::Empty));
    let second = h.join(4, &first.member_id);
    let second = h.join_response(second);
    assert_eq!(second.error_code, 0);
    assert_eq!(second.member_id, first.member_id);
    assert_eq!(second.generation_id, 1);
    // An id that was never handed out is unknown.
    let bogus = h.join(4, "client-made-up");
    assert_eq!(
        h.join_response(bogus).error_code,
        code(ResponseError::UnknownMemberId)
    );
    // v3 clients get a member id straight away.
    let mut h = Harness::new(0);
    let v3 = h.join(3, "");
    assert_eq!(h.join_response(v3).error_code, 0);
}

#[test]
fn unused_pending_member_id_expires_after_the_session_timeout() {
    let mut h = Harness::new(0);
    let first = h.join(5, "");
    let member_id = h.join_response(first).member_id.to_string();
    h.advance(SESSION_MS as u64);
    let late = h.join(5, &member_id);
    assert_eq!(
        h.join_response(late).error_code,
        code(ResponseError::UnknownMemberId)
    );
}

#[test]
fn heartbeat_rejects_unknown_members_and_stale_generations() {
    let (mut h, leader, _) = Harness::stable_pair();
    assert_eq!(h.heartbeat(&leader, 1), 0);
    assert_eq!(
        h.heartbeat("nobody", 1),
        code(ResponseError::UnknownMemberId)
    );
    assert_eq!(
        h.heartbeat(&leader, 0),
        code(ResponseError::IllegalGeneration)
    );
    assert_eq!(
        h.heartbeat(&leader, 2),
        code(ResponseError::IllegalGeneration)
    );
    let request = HeartbeatRequest::default()
        .with_group_id(gid("no-such-group"))
        .with_member_id(s(&leader));
    let response = h.coordinator.handle_heartbeat(h.now_ms, 0, &request);
    assert_eq!(response.error_code, code(ResponseError::UnknownMemberId));
    let request = HeartbeatRequest::default().with_member_id(s(&leader));
    let response = h.coordinator.handle_heartbeat(h.now_ms, 0, &request);
    assert_eq!(response.error_code, code(ResponseError::InvalidGroupId));
}

#[test]
fn offset_commit_checks_membership_and_generation() {
    let (mut h, leader, _) = Harness::stable_pair();
    let offsets = [("t", 0, 10)];
    assert_eq!(h.commit_persisted(GROUP, &leader, 1, &offsets), vec![0]);
    assert_eq!(
        h.commit_persisted(GROUP, "nobody", 1, &offsets),
        vec![code(ResponseError::UnknownMemberId)]
    );
    assert_eq!(
        h.commit_persisted(GROUP, &leader, 7, &offsets),
        vec![code(ResponseError::IllegalGeneration)]
    );
    assert_eq!(
        h.commit_persisted(GROUP, "", -1, &offsets),
        vec![code(ResponseError::UnknownMemberId)],
        "standalone commits are refused while the group has members"
    );
    assert_eq!(
        h.commit_persisted("never-formed", "m", 3, &offsets),
        vec![code(ResponseError::IllegalGeneration)]
    );
    // CompletingRebalance: valid member and generation, but assignments are not out yet.
    let c = h.join(3, "");
    let a = h.join(3, &leader);
    let follower = h.coordinator.group_members(GROUP)[1].to_string();
    let _ = h.join(3, &follower);
    let generation = h.join_response(a).generation_id;
    let _ = h.join_response(c);
    assert_eq!(
        h.commit_persisted(GROUP, &leader, generation, &offsets),
        vec![code(ResponseError::RebalanceInProgress)]
    );
}

#[test]
fn offset_commit_then_fetch_round_trip() {
    let mut h = Harness::new(0);
    let offsets = [("orders", 0, 100), ("orders", 1, 200), ("audit", 0, 7)];
    let OffsetCommitOutcome::Persist { token, records } = h.commit("solo", "", -1, &offsets) else {
        panic!("standalone commit on a new group must persist")
    };
    assert_eq!(records.len(), 3);
    assert_eq!(records[1].topic.as_str(), "orders");
    assert_eq!((records[1].partition, records[1].offset), (1, 200));
    assert_eq!(records[1].commit_timestamp_ms, 1_700_000_000_000);
    assert_eq!(records[1].metadata.as_str(), "m");
    assert_eq!(
        h.fetch("solo", Some(&[("orders", &[0])])),
        vec![("orders".into(), 0, -1)],
        "not visible before it is persisted"
    );
    let response = h
        .coordinator
        .handle_offset_commit_persisted(token, Ok(()))
        .unwrap();
    assert!(response
        .topics
        .iter()
        .all(|t| t.partitions.iter().all(|p| p.error_code == 0)));
    assert_eq!(
        h.coordinator.handle_offset_commit_persisted(token, Ok(())),
        Err(GroupError::UnknownCommitToken(token.0))
    );
    assert_eq!(
        h.fetch("solo", Some(&[("orders", &[1, 0, 9]), ("nope", &[0])])),
        vec![
            ("orders".into(), 1, 200),
            ("orders".into(), 0, 100),
            ("orders".into(), 9, -1),
            ("nope".into(), 0, -1),
        ]
    );
    assert_eq!(
        h.fetch("solo", None),
        vec![
            ("audit".into(), 0, 7),
            ("orders".into(), 0, 100),
            ("orders".into(), 1, 200),
        ]
    );
    assert_eq!(h.fetch("unknown-group", None), vec![]);
    assert_eq!(h.coordinator.group_state("solo"), Some(GroupState::Empty));
    // v8+: batched groups.
    let request = OffsetFetchRequest::default().with_groups(vec![
        OffsetFetchRequestGroup::default()
            .with_group_id(gid("solo"))
            .with_topics(Some(vec![OffsetFetchRequestTopics::default()
                .with_name(TopicName(s("audit")))
                .with_partition_indexes(vec![0])])),
        OffsetFetchRequestGroup::default().with_group_id(gid("other")),
    ]);
    let response = h.coordinator.handle_offset_fetch(h.now_ms, 8, &request);
    encodes(&response, 8);
    assert_eq!(response.groups.len(), 2);
    assert_eq!(
        response.groups[0].topics[0].partitions[0].committed_offset,
        7
    );
    assert!(response.groups[1].topics.is_empty());
}

#[test]
fn failed_persistence_reports_the_error_and_keeps_the_old_offset() {
    let mut h = Harness::new(0);
    assert_eq!(h.commit_persisted("solo", "", -1, &[("t", 0, 1)]), vec![0]);
    let OffsetCommitOutcome::Persist { token, .. } = h.commit("solo", "", -1, &[("t", 0, 2)])
    else {
        panic!()
    };
    let response = h
        .coordinator
        .handle_offset_commit_persisted(token, Err(ResponseError::CoordinatorNotAvailable))
        .unwrap();
    assert_eq!(
        response.topics[0].partitions[0].error_code,
        code(ResponseError::CoordinatorNotAvailable)
    );
    assert_eq!(h.fetch("solo", None), vec![("t".into(), 0, 1)]);
}

#[test]
fn out_of_order_persistence_acknowledgements_keep_the_newest_commit() {
    let mut h = Harness::new(0);
    let OffsetCommitOutcome::Persist { token: older, .. } =
        h.commit("solo", "", -1, &[("t", 0, 1)])
    else {
        panic!()
    };
    let OffsetCommitOutcome::Persist { token: newer, .. } =
        h.commit("solo", "", -1, &[("t", 0, 2)])
    else {
        panic!()
    };
    h.coordinator
        .handle_offset_commit_persisted(newer, Ok(()))
        .unwrap();
    h.coordinator
        .handle_offset_commit_persisted(older, Ok(()))
        .unwrap();
    assert_eq!(h.fetch("solo", None), vec![("t".into(), 0, 2)]);
}

#[test]
fn metadata_over_the_limit_fails_only_that_partition() {
    let mut h = Harness::new(0);
    let mut request = commit_request("solo", "", -1, &[("t", 0, 1), ("t", 1, 1)]);
    request.topics[1].partitions[0].committed_metadata = Some(s(&"x".repeat(4_097)));
    let OffsetCommitOutcome::Persist { token, records } =
        h.coordinator.handle_offset_commit(h.now_ms, 0, 8, &request)
    else {
        panic!()
    };
    assert_eq!(records.len(), 1);
    let response = h
        .coordinator
        .handle_offset_commit_persisted(token, Ok(()))
        .unwrap();
    assert_eq!(response.topics[0].partitions[0].error_code, 0);
    assert_eq!(
        response.topics[1].partitions[0].error_code,
        code(ResponseError::OffsetMetadataTooLarge)
    );
}

#[test]
fn replaying_commit_records_restores_offsets() {
    let mut h = Harness::new(0);
    let mut log: Vec<EncodedOffsetRecord> = Vec::new();
    for (topic, partition, offset) in [("t", 0, 5), ("t", 1, 6), ("t", 0, 9), ("u", 3, 1)] {
        let OffsetCommitOutcome::Persist { token, records } =
            h.commit("solo", "", -1, &[(topic, partition, offset)])
        else {
            panic!()
        };
        log.extend(
            records
                .into_iter()
                .map(|r| OffsetLogRecord::Commit(r).encode()),
        );
        h.coordinator
            .handle_offset_commit_persisted(token, Ok(()))
            .unwrap();
    }
    let before = h.fetch("solo", None);
    // Restart: a fresh coordinator rebuilt from the log alone.
    let mut restarted = Harness::new(0);
    for record in &log {
        let record = OffsetLogRecord::decode(&record.key, record.value.as_deref()).unwrap();
        restarted.coordinator.replay(record);
    }
    assert_eq!(restarted.fetch("solo", None), before);
    assert_eq!(
        before,
        vec![("t".into(), 0, 9), ("t".into(), 1, 6), ("u".into(), 3, 1)]
    );
    // Group membership is not persisted: an old member must rejoin.
    assert_eq!(
        restarted.commit_persisted("solo", "old-member", 4, &[("t", 0, 10)]),
        vec![code(ResponseError::UnknownMemberId)]
    );
    // Tombstones delete; a group left with nothing is forgotten.
    for tombstone in [("t", 0), ("t", 1), ("u", 3)] {
        restarted
            .coordinator
            .replay(OffsetLogRecord::Tombstone(OffsetTombstone {
                group: gid("solo"),
                topic: TopicName(s(tombstone.0)),
                partition: tombstone.1,
            }));
    }
    assert_eq!(restarted.fetch("solo", None), vec![]);
    assert_eq!(restarted.coordinator.group_count(), 0);
}

#[test]
fn delete_groups_only_deletes_empty_groups() {
    let (mut h, leader, _) = Harness::stable_pair();
    assert_eq!(
        h.commit_persisted(GROUP, &leader, 1, &[("t", 0, 1)]),
        vec![0]
    );
    assert_eq!(
        h.commit_persisted("idle", "", -1, &[("t", 0, 1), ("t", 1, 2)]),
        vec![0, 0]
    );
    let request = DeleteGroupsRequest::default().with_groups_names(vec![
        gid(GROUP),
        gid("idle"),
        gid("missing"),
    ]);
    let outcome = h.coordinator.handle_delete_groups(h.now_ms, 2, &request);
    encodes(&outcome.response, 2);
    let errors: Vec<i16> = outcome
        .response
        .results
        .iter()
        .map(|r| r.error_code)
        .collect();
    assert_eq!(
        errors,
        vec![
            code(ResponseError::NonEmptyGroup),
            0,
            code(ResponseError::GroupIdNotFound)
        ]
    );
    let deleted: Vec<_> = outcome
        .tombstones
        .iter()
        .map(|t| (t.group.to_string(), t.topic.to_string(), t.partition))
        .collect();
    assert_eq!(
        deleted,
        vec![
            ("idle".into(), "t".into(), 0),
            ("idle".into(), "t".into(), 1)
        ]
    );
    assert_eq!(h.coordinator.group_state("idle"), None);
    assert_eq!(
        h.fetch("idle", Some(&[("t", &[0])])),
        vec![("t".into(), 0, -1)]
    );
    assert_eq!(h.coordinator.group_state(GROUP), Some(GroupState::Stable));
}

#[test]
fn static_member_rejoin_keeps_its_slot_and_fences_the_old_id() {
    let mut h = Harness::new(3_000);
    let a = h.join_static("", "instance-a");
    let b = h.join_static("", "instance-b");
    h.advance(6_000);
    let a = h.join_response(a);
    let b = h.join_response(b);
    assert!(a.member_id.starts_with("instance-a-"));
    let (leader, follower) = (a.member_id.to_string(), b.member_id.to_string());
    let follower_sync = h.sync(&follower, 1, &[]);
    let leader_sync = h.sync(&leader, 1, &[(&leader, "A"), (&follower, "B")]);
    let _ = (h.sync_response(leader_sync), h.sync_response(follower_sync));
    // The follower restarts: same group.instance.id, no member id. Stable and same protocol:
    // no rebalance, a new member id in the same generation.
    let rejoin = h.join_static("", "instance-b");
    let JoinOutcome::Done(rejoin) = rejoin else {
        panic!("static rejoin in Stable must answer at once: {rejoin:?}")
    };
    assert_eq!(rejoin.error_code, 0);
    assert_eq!(rejoin.generation_id, 1);
    assert_ne!(rejoin.member_id.as_str(), follower);
    assert_eq!(rejoin.leader.as_str(), leader);
    assert_eq!(h.coordinator.group_state(GROUP), Some(GroupState::Stable));
    assert_eq!(
        h.heartbeat_with(&follower, Some("instance-b"), 1),
        code(ResponseError::FencedInstanceId)
    );
    assert_eq!(
        h.heartbeat_with(&rejoin.member_id, Some("instance-b"), 1),
        0
    );
    let sync = h.sync(&rejoin.member_id, 1, &[]);
    assert_eq!(
        h.sync_response(sync).assignment,
        Bytes::from("B"),
        "keeps its assignment"
    );
    // The old id is fenced on join too.
    let stale = h.join_static(&follower, "instance-b");
    assert_eq!(
        h.join_response(stale).error_code,
        code(ResponseError::FencedInstanceId)
    );
    // Static members that do not rejoin in time are kept (only the session removes them).
    let leader_rejoin = h.join_static(&leader, "instance-a");
    for _ in 0..6 {
        h.advance(5_000);
        let _ = h.heartbeat_with(&rejoin.member_id, Some("instance-b"), 1);
    }
    let leader_rejoin = h.join_response(leader_rejoin);
    assert_eq!(leader_rejoin.generation_id, 2);
    assert_eq!(leader_rejoin.members.len(), 2);
}

#[test]
fn join_validation_errors() {
    let mut h = Harness::new(0);
    let mut request = Harness::join_request("", None, &["range"]);
    request.session_timeout_ms = 10;
    let outcome = h.join_with(5, request);
    assert_eq!(
        h.join_response(outcome).error_code,
        code(ResponseError::InvalidSessionTimeout)
    );
    let mut request = Harness::join_request("", None, &["range"]);
    request.group_id = gid("");
    let outcome = h.join_with(5, request);
    assert_eq!(
        h.join_response(outcome).error_code,
        code(ResponseError::InvalidGroupId)
    );
    let outcome = h.join_with(3, Harness::join_request("", None, &[]));
    assert_eq!(
        h.join_response(outcome).error_code,
        code(ResponseError::InconsistentGroupProtocol)
    );
    assert_eq!(
        h.coordinator.group_count(),
        0,
        "failed first joins leave no group behind"
    );
    let outcome = h.join(3, "");
    assert_eq!(h.join_response(outcome).error_code, 0);
    let outcome = h.join_with(3, Harness::join_request("", None, &["roundrobin"]));
    assert_eq!(
        h.join_response(outcome).error_code,
        code(ResponseError::InconsistentGroupProtocol)
    );
    let outcome = h.join(3, "unknown");
    assert_eq!(
        h.join_response(outcome).error_code,
        code(ResponseError::UnknownMemberId)
    );
}

#[test]
fn protocol_selection_is_supported_by_all_and_wins_the_vote() {
    let mut h = Harness::new(3_000);
    let a = h.join_with(3, Harness::join_request("", None, &["sticky", "range"]));
    let b = h.join_with(3, Harness::join_request("", None, &["range", "sticky"]));
    let c = h.join_with(
        3,
        Harness::join_request("", None, &["range", "sticky", "rr"]),
    );
    h.advance(6_000);
    let a = h.join_response(a);
    assert_eq!(
        a.protocol_name.as_deref(),
        Some("range"),
        "two votes to one"
    );
    let _ = (h.join_response(b), h.join_response(c));
}

#[test]
fn group_size_limit() {
    let config = GroupConfig {
        initial_rebalance_delay_ms: 3_000,
        members_per_group_max: 2,
        ..GroupConfig::default()
    };
    let mut h = Harness::new(0);
    h.coordinator = GroupCoordinator::new(config).unwrap();
    let a = h.join(3, "");
    let b = h.join(3, "");
    let c = h.join(3, "");
    assert_eq!(
        h.join_response(c).error_code,
        code(ResponseError::GroupMaxSizeReached)
    );
    h.advance(6_000);
    assert_eq!(h.join_response(a).error_code, 0);
    assert_eq!(h.join_response(b).error_code, 0);
}

#[test]
fn list_and_describe_groups() {
    let (mut h, leader, follower) = Harness::stable_pair();
    assert_eq!(h.commit_persisted("idle", "", -1, &[("t", 0, 1)]), vec![0]);
    let list = h
        .coordinator
        .handle_list_groups(h.now_ms, 5, &ListGroupsRequest::default());
    encodes(&list, 5);
    let listed: Vec<_> = list
        .groups
        .iter()
        .map(|g| {
            (
                g.group_id.to_string(),
                g.group_state.to_string(),
                g.protocol_type.to_string(),
            )
        })
        .collect();
    assert_eq!(
        listed,
        vec![
            (GROUP.into(), "Stable".into(), "consumer".into()),
            ("idle".into(), "Empty".into(), "".into()),
        ]
    );
    let filtered = h.coordinator.handle_list_groups(
        h.now_ms,
        4,
        &ListGroupsRequest::default().with_states_filter(vec![s("empty")]),
    );
    assert_eq!(filtered.groups.len(), 1);
    let consumer_only = h.coordinator.handle_list_groups(
        h.now_ms,
        5,
        &ListGroupsRequest::default().with_types_filter(vec![s("consumer")]),
    );
    assert!(
        consumer_only.groups.is_empty(),
        "we only have classic groups"
    );

    let request = DescribeGroupsRequest::default().with_groups(vec![gid(GROUP), gid("missing")]);
    let described = h.coordinator.handle_describe_groups(h.now_ms, 5, &request);
    encodes(&described, 5);
    let group = &described.groups[0];
    assert_eq!(group.group_state.as_str(), "Stable");
    assert_eq!(group.protocol_data.as_str(), "range");
    let members: Vec<_> = group
        .members
        .iter()
        .map(|m| {
            (
                m.member_id.to_string(),
                m.member_assignment.clone(),
                m.client_id.to_string(),
            )
        })
        .collect();
    assert_eq!(
        members,
        vec![
            (leader, Bytes::from("A0"), "client".into()),
            (follower, Bytes::from("B0"), "client".into())
        ]
    );
    assert_eq!(described.groups[1].group_state.as_str(), "Dead");
    assert_eq!(described.groups[1].error_code, 0);
    let v6 = h.coordinator.handle_describe_groups(h.now_ms, 6, &request);
    encodes(&v6, 6);
    assert_eq!(
        v6.groups[1].error_code,
        code(ResponseError::GroupIdNotFound)
    );
}

#[test]
fn superseded_join_is_answered() {
    let (mut h, leader, _) = Harness::stable_pair();
    let first = h.join(3, &leader);
    let second = h.join(3, &leader);
    let first = h.join_response(first);
    assert_eq!(first.error_code, code(ResponseError::RebalanceInProgress));
    assert!(!h.is_answered(&second));
}

#[test]
fn config_validation() {
    let bad = GroupConfig {
        session_timeout_min_ms: 10,
        session_timeout_max_ms: 5,
        ..GroupConfig::default()
    };
    assert!(matches!(
        GroupCoordinator::new(bad),
        Err(GroupError::InvalidConfig(_))
    ));
    assert_eq!(GroupConfig::default().initial_rebalance_delay_ms, 3_000);
}

#[test]
fn leave_without_member_id_or_instance_is_unknown() {
    let (mut h, _, _) = Harness::stable_pair();
    let v1 = LeaveGroupRequest::default().with_group_id(gid(GROUP));
    let response = h.coordinator.handle_leave(h.now_ms, 1, &v1);
    assert_eq!(response.error_code, code(ResponseError::UnknownMemberId));
    // v3+: administrative removal by group.instance.id of an unknown instance.
    let v3 = LeaveGroupRequest::default()
        .with_group_id(gid(GROUP))
        .with_members(vec![
            MemberIdentity::default().with_group_instance_id(Some(s("no-such-instance")))
        ]);
    let response = h.coordinator.handle_leave(h.now_ms, 3, &v3);
    assert_eq!(
        response.members[0].error_code,
        code(ResponseError::UnknownMemberId)
    );
    assert_eq!(h.coordinator.group_state(GROUP), Some(GroupState::Stable));
}

#[test]
fn static_member_removed_by_instance_id_triggers_a_rebalance() {
    let mut h = Harness::new(0);
    let a = h.join_static("", "instance-a");
    let a = h.join_response(a);
    let sync = h.sync(&a.member_id, 1, &[(&a.member_id, "A")]);
    assert_eq!(h.sync_response(sync).error_code, 0);
    let request = LeaveGroupRequest::default()
        .with_group_id(gid(GROUP))
        .with_members(vec![
            MemberIdentity::default().with_group_instance_id(Some(s("instance-a")))
        ]);
    let response = h.coordinator.handle_leave(h.now_ms, 4, &request);
    assert_eq!(response.members[0].error_code, 0);
    assert_eq!(h.coordinator.group_state(GROUP), Some(GroupState::Empty));
    assert_eq!(h.coordinator.group_generation(GROUP), Some(2));
}

#[test]
fn group_count_limit_evicts_idle_groups_then_refuses() {
    let config = GroupConfig {
        initial_rebalance_delay_ms: 0,
        groups_max: 2,
        ..GroupConfig::default()
    };
    let mut h = Harness::new(0);
    h.coordinator = GroupCoordinator::new(config).unwrap();
    assert_eq!(
        h.commit_persisted("with-offsets", "", -1, &[("t", 0, 1)]),
        vec![0]
    );
    let a = h.join(3, "");
    assert_eq!(h.join_response(a).error_code, 0);
    // Full, and neither group is idle.
    assert_eq!(
        h.commit_persisted("third", "", -1, &[("t", 0, 1)]),
        vec![code(ResponseError::CoordinatorNotAvailable)]
    );
    let mut request = Harness::join_request("", None, &["range"]);
    request.group_id = gid("third");
    let outcome = h.join_with(3, request.clone());
    assert_eq!(
        h.join_response(outcome).error_code,
        code(ResponseError::CoordinatorNotAvailable)
    );
    // Deleting a group frees a slot.
    let delete = DeleteGroupsRequest::default().with_groups_names(vec![gid("with-offsets")]);
    let outcome = h.coordinator.handle_delete_groups(h.now_ms, 2, &delete);
    assert_eq!(outcome.response.results[0].error_code, 0);
    let outcome = h.join_with(3, request);
    assert_eq!(h.join_response(outcome).error_code, 0);
    assert_eq!(h.coordinator.group_count(), 2);
    // A group whose last member left, with no offsets, is idle: evicted to make room.
    let member = h.coordinator.group_members(GROUP)[0].to_string();
    assert_eq!(h.leave(&[&member]).members[0].error_code, 0);
    assert_eq!(h.coordinator.group_state(GROUP), Some(GroupState::Empty));
    assert_eq!(
        h.commit_persisted("fourth", "", -1, &[("t", 0, 1)]),
        vec![0]
    );
    assert_eq!(h.coordinator.group_state(GROUP), None);
    assert_eq!(h.coordinator.group_count(), 2);
}

#[test]
fn v9_static_leader_rejoin_in_stable_gets_members_with_skip_assignment() {
    let mut h = Harness::new(0);
    let a = h.join_with(9, Harness::join_request("", Some("instance-a"), &["range"]));
    let a = h.join_response(a);
    let sync = h.sync(&a.member_id, 1, &[(&a.member_id, "A")]);
    assert_eq!(h.sync_response(sync).error_code, 0);
    let rejoin = h.join_with(9, Harness::join_request("", Some("instance-a"), &["range"]));
    let JoinOutcome::Done(rejoin) = rejoin else {
        panic!("expected an immediate answer")
    };
    assert_eq!(rejoin.error_code, 0);
    assert!(rejoin.skip_assignment);
    assert_eq!(rejoin.leader, rejoin.member_id);
    assert_eq!(rejoin.members.len(), 1);
    assert_eq!(rejoin.generation_id, 1);
    assert_eq!(h.coordinator.group_state(GROUP), Some(GroupState::Stable));
}

#[test]
fn late_timer_processing_gives_the_same_outcome_as_prompt_processing() {
    // Regression: the initial-delay extension used to re-arm from the time handle_timeout ran,
    // so a caller polling late delayed the first generation further.
    let run = |steps: &[u64]| {
        let mut h = Harness::new(3_000);
        let a = h.join(3, "");
        let _b = h.join(3, "");
        for step in steps {
            h.advance(*step);
        }
        let answered_at = h.now_ms;
        (h.is_answered(&a), answered_at)
    };
    assert_eq!(run(&[3_000, 3_000]), (true, 7_000));
    assert_eq!(run(&[6_000]), (true, 7_000));
    assert_eq!(run(&[5_999]), (false, 6_999));
}

#[test]
fn offset_commit_counts_as_liveness() {
    let (mut h, leader, follower) = Harness::stable_pair();
    for _ in 0..4 {
        h.advance(4_000);
        assert_eq!(h.heartbeat(&leader, 1), 0);
        assert_eq!(
            h.commit_persisted(GROUP, &follower, 1, &[("t", 0, 1)]),
            vec![0]
        );
    }
    assert_eq!(h.coordinator.group_members(GROUP).len(), 2);
}
