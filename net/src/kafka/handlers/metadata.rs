//! Metadata (v0-v12) and DescribeCluster. One broker: it leads every partition.

use kafka_protocol::error::ResponseError as E;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{
    BrokerId, DescribeClusterRequest, DescribeClusterResponse, MetadataRequest, MetadataResponse,
};
use quiver_engine::catalog::{validate_topic_name, TopicMeta};

use super::{str_bytes, topic_name};
use crate::kafka::broker::{shard, BrokerConfig};
use crate::kafka::errors::error_code;

fn topic_response(meta: &TopicMeta, node: i32, version: i16) -> MetadataResponseTopic {
    let partitions = (0..meta.partitions)
        .map(|p| {
            MetadataResponsePartition::default()
                .with_partition_index(p)
                .with_leader_id(BrokerId(node))
                .with_leader_epoch(if version >= 7 { 0 } else { -1 })
                .with_replica_nodes(vec![BrokerId(node)])
                .with_isr_nodes(vec![BrokerId(node)])
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(topic_name(&meta.name)))
        .with_topic_id(if version >= 10 {
            uuid::Uuid::from_bytes(meta.topic_id)
        } else {
            uuid::Uuid::nil()
        })
        .with_is_internal(version >= 1 && meta.internal)
        .with_partitions(partitions)
        .with_topic_authorized_operations(i32::MIN)
}

fn broker(config: &BrokerConfig) -> MetadataResponseBroker {
    MetadataResponseBroker::default()
        .with_node_id(BrokerId(config.node_id))
        .with_host(str_bytes(&config.advertised_host))
        .with_port(config.advertised_port as i32)
}

pub async fn handle(req: MetadataRequest, version: i16) -> MetadataResponse {
    let me = shard();
    let config = &me.config;
    let node = config.node_id;
    let mut topics = Vec::new();
    match req.topics {
        // null (or, before v1, empty) means every topic.
        None => topics.extend(me.topics().iter().map(|t| topic_response(t, node, version))),
        Some(list) if list.is_empty() && version == 0 => {
            topics.extend(me.topics().iter().map(|t| topic_response(t, node, version)))
        }
        Some(list) => {
            // allow_auto_topic_creation exists from v4; earlier versions always allow.
            let allow_create =
                (version < 4 || req.allow_auto_topic_creation) && config.auto_create_topics;
            for t in list {
                let by_id = t.name.is_none() && !t.topic_id.is_nil();
                if by_id {
                    match me.topic_by_id(t.topic_id.as_bytes()) {
                        Some(meta) => topics.push(topic_response(&meta, node, version)),
                        None => topics.push(
                            MetadataResponseTopic::default()
                                .with_topic_id(t.topic_id)
                                .with_error_code(crate::kafka::errors::UNKNOWN_TOPIC_ID),
                        ),
                    }
                    continue;
                }
                let name = t.name.map(|n| n.0.to_string()).unwrap_or_default();
                let unknown = |code: i16| {
                    MetadataResponseTopic::default()
                        .with_name(Some(topic_name(&name)))
                        .with_error_code(code)
                };
                if let Err(e) = validate_topic_name(&name) {
                    topics.push(unknown(error_code(&e)));
                    continue;
                }
                match me.topic(&name) {
                    Some(meta) => topics.push(topic_response(&meta, node, version)),
                    None if allow_create => match me.auto_create(&name).await {
                        Ok(meta) => topics.push(topic_response(&meta, node, version)),
                        Err(e) => topics.push(unknown(error_code(&e))),
                    },
                    None => topics.push(unknown(E::UnknownTopicOrPartition.code())),
                }
            }
        }
    }
    MetadataResponse::default()
        .with_brokers(vec![broker(config)])
        .with_cluster_id((version >= 2).then(|| str_bytes(&config.cluster_id)))
        .with_controller_id(BrokerId(if version >= 1 { node } else { -1 }))
        .with_topics(topics)
}

pub async fn handle_describe_cluster(
    _req: DescribeClusterRequest,
    _version: i16,
) -> DescribeClusterResponse {
    let me = shard();
    let config = &me.config;
    DescribeClusterResponse::default()
        .with_cluster_id(str_bytes(&config.cluster_id))
        .with_controller_id(BrokerId(config.node_id))
        .with_brokers(vec![DescribeClusterBroker::default()
            .with_broker_id(BrokerId(config.node_id))
            .with_host(str_bytes(&config.advertised_host))
            .with_port(config.advertised_port as i32)])
        .with_cluster_authorized_operations(i32::MIN)
}
