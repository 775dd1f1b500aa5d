//! Consumer-group APIs: runs the sans-IO `group::GroupCoordinator` on the shards.
//!
//! A group belongs to partition `abs(java_hash(group_id)) % N` of `__consumer_offsets`
//! (Kafka's rule), and is coordinated on the shard that owns that partition, so the
//! coordinator appends committed offsets to a log on its own core. An OffsetCommit is
//! acknowledged only after its records are committed to that log (fdatasync by default);
//! on start each shard replays its offsets partitions to rebuild committed offsets.
//! Group membership itself is not persisted: after a restart members rejoin, as they do
//! after a coordinator change in Kafka.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures::channel::oneshot;
use kafka_protocol::error::ResponseError as E;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use quiver_engine::batch::{self, build};
use quiver_engine::types::{LeaderEpoch, Offset, ShardId};

use super::broker::{shard, OFFSETS_TOPIC};
use super::group::{
    ClientInfo, GroupConfig, GroupCoordinator, JoinOutcome, OffsetCommitOutcome, OffsetLogRecord,
    Reply, ReplyToken, SyncOutcome,
};

/// How often parked joins and session timeouts are checked at the latest.
const TIMER_TICK_MS: u64 = 100;

/// Who sent a request: needed by JoinGroup (DescribeGroups reports it).
#[derive(Debug, Clone, Default)]
pub struct RequestContext {
    /// Shares the request frame's bytes: no copy or UTF-8 formatting per request.
    pub client_id: Option<StrBytes>,
    pub peer: Option<SocketAddr>,
}

struct GroupService {
    coordinator: RefCell<GroupCoordinator>,
    parked: RefCell<HashMap<ReplyToken, oneshot::Sender<Reply>>>,
    epoch: Instant,
}

thread_local! {
    static SERVICE: RefCell<Option<Rc<GroupService>>> = const { RefCell::new(None) };
}

fn service() -> Rc<GroupService> {
    SERVICE.with(|s| {
        s.borrow_mut()
            .get_or_insert_with(|| {
                let config = GroupConfig {
                    initial_rebalance_delay_ms: shard().config.group_initial_rebalance_delay_ms,
                    member_id_seed: std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_nanos() as u64)
                        .unwrap_or(0)
                        ^ ((shard().id().0 as u64) << 56),
                    ..GroupConfig::default()
                };
                Rc::new(GroupService {
                    coordinator: RefCell::new(
                        GroupCoordinator::new(config).expect("default group config is valid"),
                    ),
                    parked: RefCell::new(HashMap::new()),
                    epoch: Instant::now(),
                })
            })
            .clone()
    })
}

impl GroupService {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Fires due timers and hands every finished reply to its parked request.
    fn pump(&self) {
        let now = self.now_ms();
        let replies: Vec<(ReplyToken, Reply)> = {
            let mut c = self.coordinator.borrow_mut();
            c.handle_timeout(now);
            c.poll_replies().collect()
        };
        let mut parked = self.parked.borrow_mut();
        for (token, reply) in replies {
            if let Some(tx) = parked.remove(&token) {
                let _ = tx.send(reply);
            }
        }
    }

    fn park(&self, token: ReplyToken) -> oneshot::Receiver<Reply> {
        let (tx, rx) = oneshot::channel();
        self.parked.borrow_mut().insert(token, tx);
        rx
    }
}

/// Kafka's `Utils.abs(groupId.hashCode()) % partitions`, with Java's String.hashCode.
pub fn offsets_partition_for(group_id: &str, partitions: i32) -> i32 {
    let mut h: i32 = 0;
    for unit in group_id.encode_utf16() {
        h = h.wrapping_mul(31).wrapping_add(unit as i32);
    }
    let abs = if h == i32::MIN { 0 } else { h.abs() };
    abs % partitions.max(1)
}

fn coordinator_shard(group_id: &str) -> (ShardId, i32) {
    let me = shard();
    let partition = offsets_partition_for(group_id, me.config.offsets_topic_partitions);
    (me.owner_of(OFFSETS_TOPIC, partition), partition)
}

/// Runs `f` against the coordinator on the group's shard.
async fn on_coordinator<R, F, Fut>(group_id: &str, f: F) -> Option<R>
where
    F: FnOnce(Rc<GroupService>, i32) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = R> + 'static,
    R: Send + 'static,
{
    let (owner, partition) = coordinator_shard(group_id);
    match shard()
        .ctx
        .run_on(owner, move || async move { f(service(), partition).await })
        .await
    {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::error!(error = %e, "group coordinator hop failed");
            None
        }
    }
}

/// Appends offset-log records to the group's offsets partition and waits until they are
/// committed there.
async fn persist(partition: i32, records: Vec<OffsetLogRecord>) -> Result<(), E> {
    if records.is_empty() {
        return Ok(());
    }
    let log = shard()
        .local_log(OFFSETS_TOPIC, partition)
        .ok_or(E::CoordinatorNotAvailable)?;
    let encoded: Vec<_> = records.iter().map(|r| r.encode()).collect();
    let kv: Vec<build::KeyValue> = encoded
        .iter()
        .map(|e| (Some(&e.key[..]), e.value.as_deref()))
        .collect();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let batch = build::batch_kv(&kv, now, -1, -1, -1);
    let ticket = log.append(&batch, LeaderEpoch(0)).await.map_err(|e| {
        tracing::error!(error = %e, "offsets append failed");
        E::CoordinatorNotAvailable
    })?;
    ticket
        .committed()
        .await
        .map(|_| ())
        .map_err(|_| E::CoordinatorNotAvailable)
}

/// Rebuilds committed offsets from every offsets partition this shard owns. Call once
/// on start, before serving.
pub async fn replay_offsets() {
    let me = shard();
    let svc = service();
    let mut replayed = 0usize;
    for p in 0..me.config.offsets_topic_partitions {
        let Some(log) = me.local_log(OFFSETS_TOPIC, p) else {
            continue;
        };
        let mut next = log.log_start_offset();
        while next < log.high_watermark() {
            let out = match log.read(next, 1 << 20).await {
                Ok(o) if o.total_len() > 0 => o,
                Ok(_) => break,
                Err(e) => {
                    tracing::error!(partition = p, error = %e, "offsets replay failed");
                    break;
                }
            };
            let bytes: Vec<u8> = out.chunks.iter().flat_map(|c| c.iter().copied()).collect();
            let mut pos = 0;
            while pos < bytes.len() {
                let Ok(h) = batch::parse_header(&bytes[pos..]) else {
                    break;
                };
                let end = pos + h.total_len();
                if end > bytes.len() {
                    break;
                }
                for r in batch::records(&bytes[pos..end]).unwrap_or_default() {
                    let Some(key) = r.key else { continue };
                    match OffsetLogRecord::decode(key, r.value) {
                        Ok(record) => {
                            svc.coordinator.borrow_mut().replay(record);
                            replayed += 1;
                        }
                        Err(e) => {
                            tracing::warn!(partition = p, error = %e, "skipping bad offsets record")
                        }
                    }
                }
                next = Offset(h.last_offset() + 1);
                pos = end;
            }
        }
    }
    if replayed > 0 {
        tracing::info!(
            shard = me.id().0,
            records = replayed,
            "replayed committed offsets"
        );
    }
}

/// Drives session and rebalance timeouts on this shard.
pub async fn run_coordinator_timers() {
    replay_offsets().await;
    let svc = service();
    loop {
        let now = svc.now_ms();
        let next = svc.coordinator.borrow().next_deadline();
        let wait = next
            .map(|d| d.saturating_sub(now))
            .unwrap_or(TIMER_TICK_MS)
            .clamp(1, TIMER_TICK_MS);
        glommio::timer::sleep(Duration::from_millis(wait)).await;
        svc.pump();
    }
}

fn find_coordinator(req: FindCoordinatorRequest, version: i16) -> FindCoordinatorResponse {
    let me = shard();
    let config = &me.config;
    let answer = |key: &StrBytes, key_type: i8| -> (i16, i32, String, i32) {
        if key_type != 0 {
            // Transactions are not supported: no transaction coordinator exists.
            return (E::CoordinatorNotAvailable.code(), -1, String::new(), -1);
        }
        if key.is_empty() {
            return (E::InvalidRequest.code(), -1, String::new(), -1);
        }
        (
            0,
            config.node_id,
            config.advertised_host.clone(),
            config.advertised_port as i32,
        )
    };
    if version >= 4 {
        let coordinators = req
            .coordinator_keys
            .iter()
            .map(|k| {
                let (code, node, host, port) = answer(k, req.key_type);
                Coordinator::default()
                    .with_key(k.clone())
                    .with_node_id(BrokerId(node))
                    .with_host(StrBytes::from_string(host))
                    .with_port(port)
                    .with_error_code(code)
            })
            .collect();
        FindCoordinatorResponse::default().with_coordinators(coordinators)
    } else {
        let (code, node, host, port) =
            answer(&req.key, if version >= 1 { req.key_type } else { 0 });
        FindCoordinatorResponse::default()
            .with_error_code(code)
            .with_node_id(BrokerId(node))
            .with_host(StrBytes::from_string(host))
            .with_port(port)
    }
}

/// Group APIs. `None` only for requests this module does not serve.
pub async fn dispatch(
    body: RequestKind,
    version: i16,
    ctx: &RequestContext,
) -> Option<ResponseKind> {
    Some(match body {
        RequestKind::FindCoordinator(r) => {
            ResponseKind::FindCoordinator(find_coordinator(r, version))
        }
        RequestKind::JoinGroup(r) => {
            let client = ClientInfo {
                // Copied: the member keeps it, and a slice would pin the request's buffer.
                client_id: ctx
                    .client_id
                    .as_ref()
                    .map(|c| StrBytes::from_string(c.as_str().to_owned()))
                    .unwrap_or_default(),
                client_host: StrBytes::from_string(
                    ctx.peer.map(|p| format!("/{}", p.ip())).unwrap_or_default(),
                ),
            };
            let group = r.group_id.to_string();
            let reply = on_coordinator(&group, move |svc, _| async move {
                let outcome =
                    svc.coordinator
                        .borrow_mut()
                        .handle_join(svc.now_ms(), version, &client, r);
                match outcome {
                    JoinOutcome::Done(resp) => {
                        svc.pump();
                        Some(resp)
                    }
                    JoinOutcome::Pending(token) => {
                        let rx = svc.park(token);
                        svc.pump();
                        match rx.await {
                            Ok(Reply::JoinGroup { response, .. }) => Some(response),
                            _ => None,
                        }
                    }
                }
            })
            .await
            .flatten()
            .unwrap_or_else(|| {
                JoinGroupResponse::default().with_error_code(E::CoordinatorNotAvailable.code())
            });
            ResponseKind::JoinGroup(reply)
        }
        RequestKind::SyncGroup(r) => {
            let group = r.group_id.to_string();
            let reply = on_coordinator(&group, move |svc, _| async move {
                let outcome = svc
                    .coordinator
                    .borrow_mut()
                    .handle_sync(svc.now_ms(), version, &r);
                match outcome {
                    SyncOutcome::Done(resp) => {
                        svc.pump();
                        Some(resp)
                    }
                    SyncOutcome::Pending(token) => {
                        let rx = svc.park(token);
                        svc.pump();
                        match rx.await {
                            Ok(Reply::SyncGroup { response, .. }) => Some(response),
                            _ => None,
                        }
                    }
                }
            })
            .await
            .flatten()
            .unwrap_or_else(|| {
                SyncGroupResponse::default().with_error_code(E::CoordinatorNotAvailable.code())
            });
            ResponseKind::SyncGroup(reply)
        }
        RequestKind::Heartbeat(r) => {
            let group = r.group_id.to_string();
            let reply = on_coordinator(&group, move |svc, _| async move {
                let resp = svc
                    .coordinator
                    .borrow_mut()
                    .handle_heartbeat(svc.now_ms(), version, &r);
                svc.pump();
                resp
            })
            .await
            .unwrap_or_else(|| {
                HeartbeatResponse::default().with_error_code(E::CoordinatorNotAvailable.code())
            });
            ResponseKind::Heartbeat(reply)
        }
        RequestKind::LeaveGroup(r) => {
            let group = r.group_id.to_string();
            let reply = on_coordinator(&group, move |svc, _| async move {
                let resp = svc
                    .coordinator
                    .borrow_mut()
                    .handle_leave(svc.now_ms(), version, &r);
                svc.pump();
                resp
            })
            .await
            .unwrap_or_else(|| {
                LeaveGroupResponse::default().with_error_code(E::CoordinatorNotAvailable.code())
            });
            ResponseKind::LeaveGroup(reply)
        }
        RequestKind::OffsetCommit(r) => {
            let group = r.group_id.to_string();
            let reply = on_coordinator(&group, move |svc, partition| async move {
                let wall = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis() as i64)
                    .unwrap_or(0);
                let outcome = svc.coordinator.borrow_mut().handle_offset_commit(
                    svc.now_ms(),
                    wall,
                    version,
                    &r,
                );
                match outcome {
                    OffsetCommitOutcome::Done(resp) => Some(resp),
                    OffsetCommitOutcome::Persist { token, records } => {
                        let records = records.into_iter().map(OffsetLogRecord::from).collect();
                        let result = persist(partition, records).await;
                        svc.coordinator
                            .borrow_mut()
                            .handle_offset_commit_persisted(token, result)
                            .map_err(|e| tracing::error!(error = %e, "offset commit bookkeeping"))
                            .ok()
                    }
                }
            })
            .await
            .flatten()
            .unwrap_or_default();
            ResponseKind::OffsetCommit(reply)
        }
        RequestKind::OffsetFetch(r) => {
            // v8+ batches several groups; each is answered by its own coordinator.
            if version >= 8 {
                let mut groups = Vec::with_capacity(r.groups.len());
                for g in &r.groups {
                    let single = OffsetFetchRequest::default()
                        .with_groups(vec![g.clone()])
                        .with_require_stable(r.require_stable);
                    let group = g.group_id.to_string();
                    let resp = on_coordinator(&group, move |svc, _| async move {
                        svc.coordinator.borrow_mut().handle_offset_fetch(
                            svc.now_ms(),
                            version,
                            &single,
                        )
                    })
                    .await;
                    if let Some(mut resp) = resp {
                        groups.append(&mut resp.groups);
                    }
                }
                ResponseKind::OffsetFetch(OffsetFetchResponse::default().with_groups(groups))
            } else {
                let group = r.group_id.to_string();
                let reply = on_coordinator(&group, move |svc, _| async move {
                    svc.coordinator
                        .borrow_mut()
                        .handle_offset_fetch(svc.now_ms(), version, &r)
                })
                .await
                .unwrap_or_else(|| {
                    OffsetFetchResponse::default()
                        .with_error_code(E::CoordinatorNotAvailable.code())
                });
                ResponseKind::OffsetFetch(reply)
            }
        }
        RequestKind::ListGroups(r) => {
            // Every shard coordinates some groups: ask them all and merge.
            let me = shard();
            let mut all = ListGroupsResponse::default();
            for s in 0..me.ctx.count() {
                let r = r.clone();
                if let Ok(mut resp) = me
                    .ctx
                    .run_on(ShardId(s), move || async move {
                        let svc = service();
                        let resp = svc.coordinator.borrow_mut().handle_list_groups(
                            svc.now_ms(),
                            version,
                            &r,
                        );
                        resp
                    })
                    .await
                {
                    all.groups.append(&mut resp.groups);
                    if resp.error_code != 0 {
                        all.error_code = resp.error_code;
                    }
                }
            }
            ResponseKind::ListGroups(all)
        }
        RequestKind::DescribeGroups(r) => {
            let mut out = DescribeGroupsResponse::default();
            for g in &r.groups {
                let single = DescribeGroupsRequest::default()
                    .with_groups(vec![g.clone()])
                    .with_include_authorized_operations(r.include_authorized_operations);
                let resp = on_coordinator(g, move |svc, _| async move {
                    svc.coordinator.borrow_mut().handle_describe_groups(
                        svc.now_ms(),
                        version,
                        &single,
                    )
                })
                .await;
                if let Some(mut resp) = resp {
                    out.groups.append(&mut resp.groups);
                }
            }
            ResponseKind::DescribeGroups(out)
        }
        RequestKind::DeleteGroups(r) => {
            let mut out = DeleteGroupsResponse::default();
            for g in &r.groups_names {
                let single = DeleteGroupsRequest::default().with_groups_names(vec![g.clone()]);
                let resp = on_coordinator(g, move |svc, partition| async move {
                    let outcome = svc.coordinator.borrow_mut().handle_delete_groups(
                        svc.now_ms(),
                        version,
                        &single,
                    );
                    let records = outcome
                        .tombstones
                        .into_iter()
                        .map(OffsetLogRecord::from)
                        .collect();
                    if let Err(e) = persist(partition, records).await {
                        tracing::error!(error = ?e, "persisting group deletion failed");
                    }
                    outcome.response
                })
                .await;
                if let Some(mut resp) = resp {
                    out.results.append(&mut resp.results);
                }
            }
            ResponseKind::DeleteGroups(out)
        }
        other => {
            tracing::warn!(api = ?std::mem::discriminant(&other), "request kind has no handler");
            return None;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn java_hash_partitioning_matches_kafka() {
        // Values computed with Java's "...".hashCode() and Kafka's Utils.abs.
        assert_eq!(offsets_partition_for("order_group", 50), 26); // "order_group".hashCode() = 1962126926
        assert_eq!(offsets_partition_for("", 50), 0);
        assert!((0..16).contains(&offsets_partition_for("any-group", 16)));
    }
}
