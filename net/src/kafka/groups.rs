//! Consumer-group APIs (placeholder until the coordinator lands): FindCoordinator only.

use kafka_protocol::messages::{RequestKind, ResponseKind};

pub async fn dispatch(_body: RequestKind, _version: i16) -> Option<ResponseKind> {
    None
}

pub async fn run_coordinator_timers() {}
