//! Seeded randomized simulation of the group coordinator: simulated clients (dynamic and
//! static, every JoinGroup version) join, sync, heartbeat, commit, leave, crash and come back
//! while time jumps around, and every step checks the invariants:
//!
//! - the group's structure (one leader who is a member, states consistent with what is parked);
//! - the generation never goes backwards;
//! - only the leader receives the member list, and one leader per generation;
//! - in Stable every member has the assignment the leader gave it;
//! - every response (parked or immediate) encodes at its request's version;
//! - every parked JoinGroup / SyncGroup is answered exactly once, within a bounded time, and
//!   all of them are answered once the clients stop and time passes the timeouts.
//!
//! A failure prints the seed; `QUIVER_GROUP_SIM_SEED=<seed>` replays exactly that run.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::tests::{commit_request, encodes, gid, s, GROUP};
use super::*;

const SESSION_MS: i32 = 10_000;
const REBALANCE_MS: i32 = 20_000;
const NEW_MEMBER_JOIN_TIMEOUT_MS: u64 = 60_000;
const CLIENTS: usize = 6;
const STEPS: usize = 600;
const SEEDS: u64 = 120;
/// No parked request may wait longer than this (see `parked_reply_bound`).
const PARKED_REPLY_BOUND_MS: u64 = 2 * REBALANCE_MS as u64 + NEW_MEMBER_JOIN_TIMEOUT_MS;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Join,
    Sync,
}

#[derive(Debug)]
struct Outstanding {
    client: usize,
    kind: Kind,
    version: i16,
    issued_ms: u64,
}

#[derive(Debug, Default)]
struct Client {
    join_version: i16,
    instance: Option<String>,
    member_id: String,
    generation: i32,
    join: Option<ReplyToken>,
    sync: Option<ReplyToken>,
    /// Set when this client is the leader of `generation`: whom to assign to.
    assign_to: Vec<StrBytes>,
    crashed: bool,
}

struct Sim {
    seed: u64,
    rng: StdRng,
    coordinator: GroupCoordinator,
    now_ms: u64,
    clients: Vec<Client>,
    outstanding: BTreeMap<ReplyToken, Outstanding>,
    commits: Vec<CommitToken>,
    last_generation: i32,
    leaders: BTreeMap<i32, BTreeSet<StrBytes>>,
    stable_seen: usize,
}

impl Sim {
    fn new(seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let config = GroupConfig {
            initial_rebalance_delay_ms: [0, 1_000, 3_000][rng.gen_range(0..3)],
            new_member_join_timeout_ms: NEW_MEMBER_JOIN_TIMEOUT_MS,
            members_per_group_max: if rng.gen_bool(0.2) { 3 } else { 100 },
            offset_commits_in_flight_max: 4,
            member_id_seed: seed,
            ..GroupConfig::default()
        };
        let clients = (0..CLIENTS)
            .map(|i| {
                let join_version = rng.gen_range(0..=9);
                Client {
                    join_version,
                    instance: (join_version >= 5 && rng.gen_bool(0.4))
                        .then(|| format!("instance-{i}")),
                    generation: -1,
                    ..Client::default()
                }
            })
            .collect();
        Self {
            seed,
            rng,
            coordinator: GroupCoordinator::new(config).unwrap(),
            now_ms: 0,
            clients,
            outstanding: BTreeMap::new(),
            commits: Vec::new(),
            last_generation: 0,
            leaders: BTreeMap::new(),
            stable_seen: 0,
        }
    }

    fn run(&mut self) {
        for _ in 0..STEPS {
            self.step();
        }
        // Quiesce: every client stops, persistence catches up, time runs past every timeout.
        for client in &mut self.clients {
            client.crashed = true;
        }
        for token in std::mem::take(&mut self.commits) {
            self.coordinator
                .handle_offset_commit_persisted(token, Ok(()))
                .unwrap();
        }
        let end = self.now_ms + PARKED_REPLY_BOUND_MS + SESSION_MS as u64;
        while self.now_ms < end {
            self.advance(1_000);
        }
        assert!(
            self.outstanding.is_empty(),
            "seed {}: parked requests never answered: {:?}",
            self.seed,
            self.outstanding
        );
        assert!(
            matches!(
                self.coordinator.group_state(GROUP),
                None | Some(GroupState::Empty)
            ),
            "every member must have expired"
        );
        assert_eq!(
            self.coordinator.next_deadline(),
            None,
            "no timer left behind"
        );
    }

    fn step(&mut self) {
        if self.rng.gen_range(0..100) < 25 {
            let ms = if self.rng.gen_bool(0.05) {
                self.rng.gen_range(0..40_000)
            } else {
                self.rng.gen_range(0..6_000)
            };
            self.advance(ms);
        } else {
            let client = self.rng.gen_range(0..self.clients.len());
            self.act(client);
        }
        if !self.commits.is_empty() && self.rng.gen_bool(0.3) {
            let token = self
                .commits
                .remove(self.rng.gen_range(0..self.commits.len()));
            let result = if self.rng.gen_bool(0.1) {
                Err(ResponseError::CoordinatorNotAvailable)
            } else {
                Ok(())
            };
            let response = self
                .coordinator
                .handle_offset_commit_persisted(token, result)
                .unwrap();
            encodes(&response, 8);
        }
        self.deliver();
        self.check();
    }

    fn advance(&mut self, ms: u64) {
        self.now_ms += ms;
        self.coordinator.handle_timeout(self.now_ms);
        self.deliver();
        self.check();
    }

    fn act(&mut self, index: usize) {
        let now = self.now_ms;
        if self.clients[index].crashed {
            if self.rng.gen_bool(0.2) {
                let client = &mut self.clients[index];
                client.crashed = false;
                client.member_id.clear();
                client.generation = -1;
            }
            return;
        }
        if self.clients[index].sync.is_some() {
            return;
        }
        if self.clients[index].join.is_some() {
            // Blocked in JoinGroup; rarely a client gives up and retries on a new connection.
            if self.rng.gen_bool(0.05) {
                self.join(index);
            }
            return;
        }
        match self.rng.gen_range(0..100) {
            0..30 => self.join(index),
            30..45 => self.sync(index),
            45..75 => {
                let client = &self.clients[index];
                let request = HeartbeatRequest::default()
                    .with_group_id(gid(GROUP))
                    .with_generation_id(client.generation)
                    .with_member_id(s(&client.member_id))
                    .with_group_instance_id(client.instance.as_deref().map(s));
                let response = self.coordinator.handle_heartbeat(now, 4, &request);
                encodes(&response, 4);
                self.on_error(index, response.error_code);
            }
            75..80 => {
                let client = &self.clients[index];
                let request = LeaveGroupRequest::default()
                    .with_group_id(gid(GROUP))
                    .with_member_id(s(&client.member_id))
                    .with_members(vec![MemberIdentity::default()
                        .with_member_id(s(&client.member_id))
                        .with_group_instance_id(client.instance.as_deref().map(s))]);
                let version = if self.rng.gen_bool(0.5) { 1 } else { 4 };
                let response = self.coordinator.handle_leave(now, version, &request);
                encodes(&response, version);
                let client = &mut self.clients[index];
                client.member_id.clear();
                client.generation = -1;
            }
            80..90 => {
                let client = &self.clients[index];
                let partition = self.rng.gen_range(0..4);
                let offset = self.rng.gen_range(0..1_000);
                let request = commit_request(
                    GROUP,
                    &client.member_id,
                    client.generation,
                    &[("topic", partition, offset)],
                );
                match self.coordinator.handle_offset_commit(now, 0, 8, &request) {
                    OffsetCommitOutcome::Done(response) => encodes(&response, 8),
                    OffsetCommitOutcome::Persist { token, records } => {
                        assert_eq!(records.len(), 1);
                        self.commits.push(token);
                    }
                }
            }
            90..95 => {
                // Crash: the client forgets everything, its parked requests still get answered.
                let client = &mut self.clients[index];
                client.crashed = true;
                client.join = None;
                client.sync = None;
            }
            _ => {
                let describe = self.coordinator.handle_describe_groups(
                    now,
                    5,
                    &DescribeGroupsRequest::default().with_groups(vec![gid(GROUP)]),
                );
                encodes(&describe, 5);
                let list =
                    self.coordinator
                        .handle_list_groups(now, 4, &ListGroupsRequest::default());
                encodes(&list, 4);
            }
        }
    }

    fn join(&mut self, index: usize) {
        let client = &self.clients[index];
        let version = client.join_version;
        let request = JoinGroupRequest::default()
            .with_group_id(gid(GROUP))
            .with_session_timeout_ms(SESSION_MS)
            .with_rebalance_timeout_ms(REBALANCE_MS)
            .with_member_id(s(&client.member_id))
            .with_group_instance_id(client.instance.as_deref().map(s))
            .with_protocol_type(s("consumer"))
            .with_protocols(vec![JoinGroupRequestProtocol::default()
                .with_name(s("range"))
                .with_metadata(Bytes::from(format!("meta-{index}")))]);
        let client_info = ClientInfo {
            client_id: s(&format!("client-{index}")),
            client_host: s("/127.0.0.1"),
        };
        match self
            .coordinator
            .handle_join(self.now_ms, version, &client_info, request)
        {
            JoinOutcome::Done(response) => {
                encodes(&response, version);
                self.on_join(index, response);
            }
            JoinOutcome::Pending(token) => {
                self.park(token, index, Kind::Join, version);
                self.clients[index].join = Some(token);
            }
        }
    }

    fn sync(&mut self, index: usize) {
        let client = &self.clients[index];
        let generation = client.generation;
        let assignments = client
            .assign_to
            .iter()
            .map(|member| {
                SyncGroupRequestAssignment::default()
                    .with_member_id(member.clone())
                    .with_assignment(Bytes::from(format!("{generation}/{member}")))
            })
            .collect();
        let request = SyncGroupRequest::default()
            .with_group_id(gid(GROUP))
            .with_generation_id(generation)
            .with_member_id(s(&client.member_id))
            .with_group_instance_id(client.instance.as_deref().map(s))
            .with_protocol_type(Some(s("consumer")))
            .with_protocol_name(Some(s("range")))
            .with_assignments(assignments);
        match self.coordinator.handle_sync(self.now_ms, 5, &request) {
            SyncOutcome::Done(response) => {
                encodes(&response, 5);
                self.on_error(index, response.error_code);
            }
            SyncOutcome::Pending(token) => {
                self.park(token, index, Kind::Sync, 5);
                self.clients[index].sync = Some(token);
            }
        }
    }

    fn park(&mut self, token: ReplyToken, client: usize, kind: Kind, version: i16) {
        let previous = self.outstanding.insert(
            token,
            Outstanding {
                client,
                kind,
                version,
                issued_ms: self.now_ms,
            },
        );
        assert!(previous.is_none(), "token {token:?} reused");
    }

    fn deliver(&mut self) {
        let replies: Vec<_> = self.coordinator.poll_replies().collect();
        for (token, reply) in replies {
            let Some(parked) = self.outstanding.remove(&token) else {
                panic!("reply for unknown or already answered token {token:?}: {reply:?}");
            };
            let client = parked.client;
            match reply {
                Reply::JoinGroup { version, response } => {
                    assert_eq!((parked.kind, parked.version), (Kind::Join, version));
                    encodes(&response, version);
                    if self.clients[client].join == Some(token) {
                        self.clients[client].join = None;
                        self.on_join(client, response);
                    } else {
                        self.check_join(&response);
                    }
                }
                Reply::SyncGroup { version, response } => {
                    assert_eq!((parked.kind, parked.version), (Kind::Sync, version));
                    encodes(&response, version);
                    if self.clients[client].sync == Some(token) {
                        self.clients[client].sync = None;
                        self.on_error(client, response.error_code);
                    }
                }
            }
        }
    }

    fn check_join(&mut self, response: &JoinGroupResponse) {
        if response.error_code != 0 {
            return;
        }
        if !response.members.is_empty() {
            assert_eq!(
                response.leader, response.member_id,
                "member list to a non-leader"
            );
            if !response.skip_assignment {
                self.leaders
                    .entry(response.generation_id)
                    .or_default()
                    .insert(response.leader.clone());
            }
        }
    }

    fn on_join(&mut self, index: usize, response: JoinGroupResponse) {
        self.check_join(&response);
        let client = &mut self.clients[index];
        match ResponseError::try_from_code(response.error_code) {
            None => {
                client.member_id = response.member_id.to_string();
                client.generation = response.generation_id;
                client.assign_to = if response.skip_assignment {
                    Vec::new()
                } else {
                    response
                        .members
                        .iter()
                        .map(|m| m.member_id.clone())
                        .collect()
                };
            }
            Some(ResponseError::MemberIdRequired) => {
                client.member_id = response.member_id.to_string();
            }
            Some(error) => self.on_error(index, error.code()),
        }
    }

    fn on_error(&mut self, index: usize, code: i16) {
        let client = &mut self.clients[index];
        match ResponseError::try_from_code(code) {
            Some(ResponseError::UnknownMemberId) => {
                client.member_id.clear();
                client.generation = -1;
            }
            Some(ResponseError::FencedInstanceId) => {
                client.crashed = true;
                client.join = None;
                client.sync = None;
            }
            _ => {}
        }
    }

    fn check(&mut self) {
        self.coordinator.check_invariants();
        if let Some(generation) = self.coordinator.group_generation(GROUP) {
            assert!(
                generation >= self.last_generation,
                "generation went back from {} to {generation}",
                self.last_generation
            );
            self.last_generation = generation;
        }
        for (generation, leaders) in &self.leaders {
            assert!(
                leaders.len() <= 1,
                "generation {generation} had leaders {leaders:?}"
            );
        }
        if self.coordinator.group_state(GROUP) == Some(GroupState::Stable) {
            self.stable_seen += 1;
            let generation = self.coordinator.group_generation(GROUP).unwrap_or_default();
            for (member, assignment) in self.coordinator.group_assignments(GROUP) {
                assert!(
                    !assignment.is_empty(),
                    "Stable member {member:?} has no assignment"
                );
                let expected_prefix = format!("{generation}/");
                assert!(
                    assignment.starts_with(expected_prefix.as_bytes()),
                    "assignment {assignment:?} is not from generation {generation}"
                );
            }
        }
        for (token, parked) in &self.outstanding {
            assert!(
                self.now_ms - parked.issued_ms <= PARKED_REPLY_BOUND_MS,
                "{token:?} parked for {} ms: {parked:?}",
                self.now_ms - parked.issued_ms
            );
        }
    }
}

/// Prints the seed if the simulation panics.
struct SeedReporter(u64);

impl Drop for SeedReporter {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "group simulation failed with seed {0}; replay with QUIVER_GROUP_SIM_SEED={0}",
                self.0
            );
        }
    }
}

#[test]
fn randomized_joins_leaves_heartbeats_and_time_keep_the_invariants() {
    let seeds: Vec<u64> = match std::env::var("QUIVER_GROUP_SIM_SEED") {
        Ok(seed) => vec![seed.parse().expect("QUIVER_GROUP_SIM_SEED must be a u64")],
        Err(_) => (0..SEEDS).collect(),
    };
    let mut stable_runs = 0;
    for seed in seeds.iter().copied() {
        let _reporter = SeedReporter(seed);
        let mut sim = Sim::new(seed);
        sim.run();
        if std::env::var("SIM_STATS").is_ok() {
            eprintln!(
                "seed {seed}: last generation {}, stable steps {}, leaders {:?}",
                sim.last_generation,
                sim.stable_seen,
                sim.leaders.len()
            );
        }
        if sim.stable_seen > 0 {
            stable_runs += 1;
        }
    }
    // The simulation must actually reach Stable, or it checks nothing interesting.
    assert!(
        stable_runs * 2 >= seeds.len(),
        "only {stable_runs} of {} runs reached Stable",
        seeds.len()
    );
}
