//! The classic consumer-group coordinator, as a deterministic sans-IO state machine.
//!
//! It implements Kafka's classic group protocol (JoinGroup, SyncGroup, Heartbeat, LeaveGroup,
//! ListGroups, DescribeGroups, DeleteGroups, OffsetCommit, OffsetFetch) with the semantics of
//! Kafka's `GroupCoordinator` / `GroupMetadata`: states Empty, PreparingRebalance,
//! CompletingRebalance, Stable (Dead groups are removed), KIP-394 `MEMBER_ID_REQUIRED`,
//! KIP-345 static membership, the initial rebalance delay, session, rebalance and pending-sync
//! timeouts.
//!
//! No sockets and no clock. Inputs are `handle_*(now_ms, version, request)` with Kafka's own
//! request types from `kafka-protocol`; `now_ms` is a monotonic millisecond count chosen by the
//! caller (only differences matter). Requests that cannot be answered at once (a JoinGroup
//! waiting for the rest of the group, a follower's SyncGroup waiting for the leader) return a
//! [`ReplyToken`]; the answer comes later out of [`GroupCoordinator::poll_replies`], possibly
//! produced by another request or by [`GroupCoordinator::handle_timeout`]. The caller arms one
//! timer at [`GroupCoordinator::next_deadline`]. Every parked request is answered exactly once.
//!
//! Durability: committed offsets are the only state that survives a restart. An OffsetCommit
//! yields [`OffsetCommitRecord`]s that the caller appends to its internal offsets log (codec in
//! [`OffsetLogRecord::encode`]) before calling
//! [`GroupCoordinator::handle_offset_commit_persisted`] to get the response; offsets become
//! visible to OffsetFetch only then. On start-up the caller feeds the log back through
//! [`GroupCoordinator::replay`]. Group membership is deliberately *not* persisted (Kafka
//! persists it): after a restart every member's next request gets `UNKNOWN_MEMBER_ID` (or
//! `ILLEGAL_GENERATION` on commit), and consumers rejoin; their offsets are intact.
//!
//! Choices where Kafka leaves room or where a state machine must be stricter than a callback:
//! - `initial_rebalance_delay_ms` defaults to Kafka's 3000: consumers of a fresh group that
//!   start together form one generation instead of one per arrival, which is what Kafka users
//!   expect; the price is a 3 s first join. Tests and single-consumer setups use 0.
//! - A parked request is never dropped. Kafka silently forgets a JoinGroup superseded by a
//!   newer one from the same member (the old connection is usually gone); we answer it with
//!   `REBALANCE_IN_PROGRESS`. A removed member's parked SyncGroup gets `UNKNOWN_MEMBER_ID`.
//! - Groups live in a `BTreeMap`: deterministic iteration for seeded simulation, and no hash
//!   flooding through client-chosen group ids.
//! - Timers re-arm from the deadline that fired, not from the time `handle_timeout` ran, so the
//!   outcome does not depend on how promptly the caller polls.
//! - DeleteGroups refuses (`NON_EMPTY_GROUP`) an Empty group with offset commits still being
//!   persisted, so a deletion can never be overtaken by an older commit.
//! - Empty groups stay (ListGroups shows them, as in Kafka) until deleted or evicted to make
//!   room at `groups_max` when they hold no offsets.
//!
//! Not here: authorization, topic existence checks on commit and coordinator ownership
//! (`NOT_COORDINATOR`) are the adapter's job; transactional offset commits, offset retention
//! and expiry, OffsetDelete and the KIP-848 consumer protocol are not implemented.

mod config;
mod coordinator;
mod error;
pub mod limits;
mod records;
mod state;

#[cfg(test)]
mod simulation;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;

use kafka_protocol::messages::{JoinGroupResponse, SyncGroupResponse};

pub use config::GroupConfig;
pub use coordinator::{
    ClientInfo, CommitToken, DeleteGroupsOutcome, GroupCoordinator, OffsetCommitOutcome,
};
pub use error::GroupError;
pub use records::{EncodedOffsetRecord, OffsetCommitRecord, OffsetLogRecord, OffsetTombstone};
pub use state::GroupState;

/// Identifies a request whose response the coordinator will emit later through
/// [`GroupCoordinator::poll_replies`]. Unique for the coordinator's lifetime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReplyToken(pub u64);

/// A deferred response, with the API version of the request it answers (needed to encode it).
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// The answer to a parked JoinGroup.
    JoinGroup {
        /// The request's API version.
        version: i16,
        /// The response.
        response: JoinGroupResponse,
    },
    /// The answer to a parked SyncGroup.
    SyncGroup {
        /// The request's API version.
        version: i16,
        /// The response.
        response: SyncGroupResponse,
    },
}

/// The immediate result of [`GroupCoordinator::handle_join`].
#[must_use = "a pending token must be matched with its reply from poll_replies"]
#[derive(Debug, Clone, PartialEq)]
pub enum JoinOutcome {
    /// Answered now.
    Done(JoinGroupResponse),
    /// Parked: the response will come out of `poll_replies` under this token.
    Pending(ReplyToken),
}

/// The immediate result of [`GroupCoordinator::handle_sync`].
#[must_use = "a pending token must be matched with its reply from poll_replies"]
#[derive(Debug, Clone, PartialEq)]
pub enum SyncOutcome {
    /// Answered now.
    Done(SyncGroupResponse),
    /// Parked: the response will come out of `poll_replies` under this token.
    Pending(ReplyToken),
}

/// A parked request: where and how to answer it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pending {
    pub token: ReplyToken,
    pub version: i16,
}

/// What group methods need from the coordinator while they run.
pub(crate) struct Ctx<'a> {
    pub config: &'a GroupConfig,
    pub now_ms: u64,
    pub replies: &'a mut VecDeque<(ReplyToken, Reply)>,
}
