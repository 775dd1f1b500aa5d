//! Cluster metadata for the generator: create the workload's topics, learn each partition's
//! leader, list offsets. Works against any Kafka-protocol broker (Quiver, Apache Kafka,
//! Redpanda): only standard requests at negotiated versions.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    BrokerId, CreateTopicsRequest, ListOffsetsRequest, MetadataRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use super::wire::Connection;

/// Kafka's error code for a topic that already exists.
const TOPIC_ALREADY_EXISTS: i16 = 36;
/// How long to wait for every partition of new topics to have a leader.
pub const METADATA_WAIT: Duration = Duration::from_secs(30);
/// ListOffsets timestamp meaning "the log end".
pub const LATEST_TIMESTAMP: i64 = -1;
/// ListOffsets timestamp meaning "the log start".
pub const EARLIEST_TIMESTAMP: i64 = -2;

pub fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

/// Partition leaders of one topic: `leaders[p]` is the address of partition p's leader.
#[derive(Debug, Clone)]
pub struct TopicLayout {
    pub name: String,
    pub leaders: Vec<String>,
}

/// Creates `topics` with `partitions` each (an existing topic is accepted as is, so runs can
/// repeat against a long-lived broker), then waits until every partition has a leader.
pub fn create_topics(
    bootstrap: &mut Connection,
    topics: &[String],
    partitions: u32,
) -> Result<Vec<TopicLayout>> {
    // Batches of 100 topics keep each request small for the many-topics workloads.
    for chunk in topics.chunks(100) {
        let request = CreateTopicsRequest::default()
            .with_timeout_ms(30_000)
            .with_topics(
                chunk
                    .iter()
                    .map(|name| {
                        CreatableTopic::default()
                            .with_name(topic_name(name))
                            .with_num_partitions(partitions as i32)
                            .with_replication_factor(-1)
                    })
                    .collect(),
            );
        let response = bootstrap.call(&request)?;
        for topic in &response.topics {
            if topic.error_code != 0 && topic.error_code != TOPIC_ALREADY_EXISTS {
                bail!(
                    "CreateTopics {}: error code {} {:?}",
                    topic.name.0.as_str(),
                    topic.error_code,
                    topic.error_message
                );
            }
        }
    }
    let deadline = Instant::now() + METADATA_WAIT;
    loop {
        match topic_layouts(bootstrap, topics) {
            Ok(layouts) => {
                for layout in &layouts {
                    if layout.leaders.len() != partitions as usize {
                        eprintln!(
                            "quiver-perf: topic {} exists with {} partitions (workload asks {}); using it as is",
                            layout.name,
                            layout.leaders.len(),
                            partitions
                        );
                    }
                }
                return Ok(layouts);
            }
            Err(error) if Instant::now() < deadline => {
                let _ = error;
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(error) => return Err(error),
        }
    }
}

/// Leader address of every partition of `topics`; an error while any partition lacks one.
pub fn topic_layouts(bootstrap: &mut Connection, topics: &[String]) -> Result<Vec<TopicLayout>> {
    let request = MetadataRequest::default()
        .with_allow_auto_topic_creation(false)
        .with_topics(Some(
            topics
                .iter()
                .map(|name| MetadataRequestTopic::default().with_name(Some(topic_name(name))))
                .collect(),
        ));
    let response = bootstrap.call(&request)?;
    let brokers: HashMap<BrokerId, String> = response
        .brokers
        .iter()
        .map(|b| (b.node_id, format!("{}:{}", b.host.as_str(), b.port)))
        .collect();
    let mut layouts = Vec::with_capacity(topics.len());
    for name in topics {
        let topic = response
            .topics
            .iter()
            .find(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == name))
            .with_context(|| format!("topic {name} missing from Metadata"))?;
        if topic.error_code != 0 {
            bail!("Metadata for {name}: error code {}", topic.error_code);
        }
        let mut leaders = vec![String::new(); topic.partitions.len()];
        for partition in &topic.partitions {
            let index = partition.partition_index as usize;
            if index >= leaders.len() {
                bail!("topic {name}: partition index {index} out of range");
            }
            leaders[index] = brokers
                .get(&partition.leader_id)
                .cloned()
                .with_context(|| format!("{name}/{index} has no live leader yet"))?;
        }
        layouts.push(TopicLayout {
            name: name.clone(),
            leaders,
        });
    }
    Ok(layouts)
}

/// Offsets at `timestamp` (LATEST_TIMESTAMP or EARLIEST_TIMESTAMP) for `partitions` of `topic`,
/// asked of the partitions' leader over `connection`.
pub fn list_offsets(
    connection: &mut Connection,
    topic: &str,
    partitions: &[i32],
    timestamp: i64,
) -> Result<HashMap<i32, i64>> {
    let request = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![ListOffsetsTopic::default()
            .with_name(topic_name(topic))
            .with_partitions(
                partitions
                    .iter()
                    .map(|p| {
                        ListOffsetsPartition::default()
                            .with_partition_index(*p)
                            .with_current_leader_epoch(-1)
                            .with_timestamp(timestamp)
                    })
                    .collect(),
            )]);
    let response = connection.call(&request)?;
    let mut offsets = HashMap::new();
    for topic in &response.topics {
        for partition in &topic.partitions {
            if partition.error_code != 0 {
                bail!(
                    "ListOffsets {topic}/{}: error code {}",
                    partition.partition_index,
                    partition.error_code,
                    topic = topic.name.0.as_str()
                );
            }
            offsets.insert(partition.partition_index, partition.offset);
        }
    }
    Ok(offsets)
}
