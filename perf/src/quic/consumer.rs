//! A QUIC consumer: one connection, one subscription stream per assigned partition, each
//! read by a task of its own that walks the pushed batches in place (no per-record decoding)
//! and records end-to-end latency as the Kafka consumer does. With a group
//! (`Membership::Static`) positions are committed every `COMMIT_INTERVAL`, as the Kafka
//! consumer's classic-group loop does; there is no membership to keep.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use quiver_client::{Client, StartOffset};
use tokio::task::JoinSet;

use super::QuicTarget;
use crate::kafka::consumer::{
    walk_received, ConsumerSpec, Membership, StartPosition, COMMIT_INTERVAL,
};
use crate::kafka::stats::WorkerStats;

/// How often the consumer checks whether the run has ended.
const STOP_POLL: Duration = Duration::from_millis(20);

type Positions = Arc<Mutex<HashMap<i32, i64>>>;

pub fn run(spec: ConsumerSpec, target: QuicTarget) -> Result<()> {
    let (partitions, group) = match &spec.membership {
        Membership::Explicit(partitions) => (partitions.clone(), None),
        Membership::Static { partitions, group } => (partitions.clone(), Some(group.clone())),
        Membership::Classic { group } => {
            bail!("group {group}: quiver/1 has no group membership (use a static share)")
        }
    };
    let runtime = target.runtime.clone();
    runtime.block_on(async move {
        let client = target.connect().await?;
        let positions: Positions = Arc::default();
        let mut readers = JoinSet::new();
        for partition in partitions {
            let (client, spec, positions) = (client.clone(), spec.clone(), positions.clone());
            readers.spawn(async move {
                let result = read_partition(&client, &spec, partition, &positions).await;
                if let Err(error) = result {
                    if !spec.stop.load(Ordering::Relaxed) {
                        spec.stats.error(format!(
                            "QUIC consumer {}, partition {partition}: {error:#}",
                            spec.id
                        ));
                    }
                }
            });
        }
        let mut last_commit = Instant::now();
        while !spec.stop.load(Ordering::Relaxed) {
            tokio::time::sleep(STOP_POLL).await;
            if let Some(group) = &group {
                if last_commit.elapsed() >= COMMIT_INTERVAL {
                    commit(&client, &spec, group, &positions).await;
                    last_commit = Instant::now();
                }
            }
        }
        readers.abort_all();
        while readers.join_next().await.is_some() {}
        if let Some(group) = &group {
            commit(&client, &spec, group, &positions).await;
        }
        target
            .close(&client, &format!("consumer {}", spec.id))
            .await;
        Ok(())
    })
}

/// Reads one partition's subscription until the run stops; with `rewind_at_end`,
/// subscribes again from the log start whenever it has caught up with the high watermark.
async fn read_partition(
    client: &Client,
    spec: &ConsumerSpec,
    partition: i32,
    positions: &Positions,
) -> Result<()> {
    let topic = &spec.topic.name;
    let start = match spec.start {
        StartPosition::Latest => StartOffset::Latest,
        StartPosition::Earliest => StartOffset::Earliest,
    };
    let mut subscription = client.subscribe_batches(topic, partition, start).await?;
    loop {
        let push = match subscription.next().await {
            Some(push) => push?,
            None => bail!("the broker ended the subscription"),
        };
        let received_ns = spec.clock.now_ns();
        let mut messages = 0;
        let mut bytes = 0;
        let mut next_offset = None;
        {
            let mut histograms = spec
                .stats
                .histograms
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            for records in &push.records {
                let summary = walk_received(
                    records,
                    spec.verify_crc,
                    received_ns,
                    &mut histograms.end_to_end,
                )
                .with_context(|| format!("push of {topic}/{partition}: {} bytes", records.len()))?;
                messages += summary.records;
                bytes += summary.value_bytes;
                next_offset = summary.next_offset.or(next_offset);
            }
        }
        WorkerStats::add(&spec.stats.counters.consumed_messages, messages);
        WorkerStats::add(&spec.stats.counters.consumed_bytes, bytes);
        if let Some(next) = next_offset {
            positions
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(partition, next);
            if spec.rewind_at_end && next >= push.high_watermark {
                subscription = client
                    .subscribe_batches(topic, partition, StartOffset::Earliest)
                    .await?;
            }
        }
    }
}

async fn commit(client: &Client, spec: &ConsumerSpec, group: &str, positions: &Positions) {
    let offsets: Vec<(String, i32, i64)> = positions
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .map(|(partition, offset)| (spec.topic.name.clone(), *partition, *offset))
        .collect();
    if offsets.is_empty() {
        return;
    }
    // As over Kafka, a failed commit is not a benchmark failure.
    let _ = client.commit_offsets(group, &offsets).await;
}
