//! Every bound the group coordinator enforces, in one place, with what happens at the bound.
//!
//! Defaults follow Apache Kafka's broker defaults where Kafka has one; where Kafka is unbounded
//! (group count, group size, in-flight commits) we pick a bound so that a misbehaving client
//! costs a clear error instead of unbounded memory. The runtime values live in
//! [`GroupConfig`](super::GroupConfig); these constants are its defaults and hard ceilings.

/// `group.min.session.timeout.ms`. A JoinGroup asking for less gets `INVALID_SESSION_TIMEOUT`.
pub const SESSION_TIMEOUT_MIN_MS_DEFAULT: u64 = 6_000;

/// `group.max.session.timeout.ms`. A JoinGroup asking for more gets `INVALID_SESSION_TIMEOUT`.
pub const SESSION_TIMEOUT_MAX_MS_DEFAULT: u64 = 1_800_000;

/// `group.initial.rebalance.delay.ms`: how long the first rebalance of an Empty group waits
/// for more members (extended by this much per new member, up to the rebalance timeout).
/// Kafka's production default: a fleet of consumers starting together forms one generation
/// instead of one per member. Tests set it to 0.
pub const INITIAL_REBALANCE_DELAY_MS_DEFAULT: u64 = 3_000;

/// Kafka's `NewMemberJoinTimeoutMs`: a member whose first JoinGroup is still parked after this
/// long is removed (its reply is `UNKNOWN_MEMBER_ID`), so that clients that disconnected and
/// retried with a fresh member id cannot pile up defunct members in a long rebalance.
pub const NEW_MEMBER_JOIN_TIMEOUT_MS: u64 = 300_000;

/// Kafka's `group.max.size` defaults to unbounded; we bound it. A member joining a full group
/// gets `GROUP_MAX_SIZE_REACHED`. The same bound caps KIP-394 pending members (member ids
/// handed out with `MEMBER_ID_REQUIRED` but not yet used).
pub const MEMBERS_PER_GROUP_MAX_DEFAULT: usize = 1_000;

/// Groups held by one coordinator. At the bound, an idle Empty group (no members, no offsets,
/// nothing in flight) is evicted to make room; if there is none, creating a group (JoinGroup or
/// a standalone OffsetCommit) fails with the retriable `COORDINATOR_NOT_AVAILABLE`.
/// Replayed commit records are never refused: the log is the truth.
pub const GROUPS_MAX_DEFAULT: usize = 100_000;

/// `offset.metadata.max.bytes`. A partition commit with longer metadata gets
/// `OFFSET_METADATA_TOO_LARGE` (the other partitions of the request still commit).
pub const OFFSET_METADATA_BYTES_MAX_DEFAULT: usize = 4_096;

/// OffsetCommit requests handed to the caller for persistence and not yet acknowledged with
/// `handle_offset_commit_persisted`. At the bound, new commits get the retriable
/// `COORDINATOR_LOAD_IN_PROGRESS` (back-pressure: the client backs off and retries).
pub const OFFSET_COMMITS_IN_FLIGHT_MAX_DEFAULT: usize = 4_096;

/// Hard ceiling for any timeout taken from a request (Kafka's fields are `i32` milliseconds).
pub const TIMEOUT_MS_MAX: u64 = i32::MAX as u64;

/// Passes of timer processing for one group at one instant. Each pass either removes a member,
/// completes a phase or moves a deadline strictly past `now`, so a handful suffices; hitting
/// this bound means a coordinator bug (a timer re-armed at `now` forever) and panics.
pub const TIMER_PASSES_PER_GROUP_MAX: usize = 64;

/// Largest string (group id, topic name, metadata) the offset record codec accepts on decode.
/// Bounds the allocation a corrupt length prefix can cause.
pub const RECORD_STRING_BYTES_MAX: usize = 1 << 20;

const _: () = assert!(SESSION_TIMEOUT_MIN_MS_DEFAULT <= SESSION_TIMEOUT_MAX_MS_DEFAULT);
const _: () = assert!(SESSION_TIMEOUT_MAX_MS_DEFAULT <= TIMEOUT_MS_MAX);
const _: () = assert!(INITIAL_REBALANCE_DELAY_MS_DEFAULT <= TIMEOUT_MS_MAX);
const _: () = assert!(OFFSET_METADATA_BYTES_MAX_DEFAULT <= RECORD_STRING_BYTES_MAX);
const _: () = assert!(MEMBERS_PER_GROUP_MAX_DEFAULT >= 1 && GROUPS_MAX_DEFAULT >= 1);
