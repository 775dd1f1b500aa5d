//! Coordinator configuration: the runtime values of the bounds in [`limits`](super::limits).

use super::error::GroupError;
use super::limits::*;

/// Runtime configuration of a [`GroupCoordinator`](super::GroupCoordinator).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupConfig {
    /// `group.min.session.timeout.ms`.
    pub session_timeout_min_ms: u64,
    /// `group.max.session.timeout.ms`.
    pub session_timeout_max_ms: u64,
    /// `group.initial.rebalance.delay.ms`; 0 completes the first rebalance of an Empty group
    /// as soon as timers are processed at the join's own instant.
    pub initial_rebalance_delay_ms: u64,
    /// How long a member's first JoinGroup may stay parked before the member is dropped.
    pub new_member_join_timeout_ms: u64,
    /// `group.max.size`.
    pub members_per_group_max: usize,
    /// Groups held at once; see [`GROUPS_MAX_DEFAULT`].
    pub groups_max: usize,
    /// `offset.metadata.max.bytes`.
    pub offset_metadata_bytes_max: usize,
    /// OffsetCommits awaiting persistence at once.
    pub offset_commits_in_flight_max: usize,
    /// Mixed into generated member ids so that ids handed out by an earlier incarnation of the
    /// coordinator (before a restart or a coordinator move) do not collide with new ones. The
    /// broker passes something unique per start (e.g. random bits); tests pass a constant.
    pub member_id_seed: u64,
}

impl Default for GroupConfig {
    fn default() -> Self {
        Self {
            session_timeout_min_ms: SESSION_TIMEOUT_MIN_MS_DEFAULT,
            session_timeout_max_ms: SESSION_TIMEOUT_MAX_MS_DEFAULT,
            initial_rebalance_delay_ms: INITIAL_REBALANCE_DELAY_MS_DEFAULT,
            new_member_join_timeout_ms: NEW_MEMBER_JOIN_TIMEOUT_MS,
            members_per_group_max: MEMBERS_PER_GROUP_MAX_DEFAULT,
            groups_max: GROUPS_MAX_DEFAULT,
            offset_metadata_bytes_max: OFFSET_METADATA_BYTES_MAX_DEFAULT,
            offset_commits_in_flight_max: OFFSET_COMMITS_IN_FLIGHT_MAX_DEFAULT,
            member_id_seed: 0,
        }
    }
}

impl GroupConfig {
    /// Checks the relations between the values; [`GroupCoordinator::new`](super::GroupCoordinator::new)
    /// refuses a config that fails.
    pub fn validate(&self) -> Result<(), GroupError> {
        let invalid = |reason: &'static str| Err(GroupError::InvalidConfig(reason));
        if self.session_timeout_min_ms > self.session_timeout_max_ms {
            return invalid("session_timeout_min_ms > session_timeout_max_ms");
        }
        if self.session_timeout_max_ms > TIMEOUT_MS_MAX
            || self.initial_rebalance_delay_ms > TIMEOUT_MS_MAX
            || self.new_member_join_timeout_ms > TIMEOUT_MS_MAX
        {
            return invalid("a timeout exceeds i32::MAX ms");
        }
        if self.new_member_join_timeout_ms == 0 {
            return invalid("new_member_join_timeout_ms must be positive");
        }
        if self.members_per_group_max == 0 || self.groups_max == 0 {
            return invalid("members_per_group_max and groups_max must be positive");
        }
        if self.offset_metadata_bytes_max > RECORD_STRING_BYTES_MAX {
            return invalid("offset_metadata_bytes_max exceeds RECORD_STRING_BYTES_MAX");
        }
        if self.offset_commits_in_flight_max == 0 {
            return invalid("offset_commits_in_flight_max must be positive");
        }
        Ok(())
    }
}
