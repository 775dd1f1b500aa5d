//! Topic administration: CreateTopics, DeleteTopics, CreatePartitions, DescribeConfigs,
//! AlterConfigs. Only the configs in `catalog::SUPPORTED_CONFIGS` are accepted, because
//! only those are honoured by the engine.

use std::collections::BTreeMap;

use kafka_protocol::error::ResponseError as E;
use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::{
    AlterConfigsRequest, AlterConfigsResponse, CreatePartitionsRequest, CreatePartitionsResponse,
    CreateTopicsRequest, CreateTopicsResponse, DeleteTopicsRequest, DeleteTopicsResponse,
    DescribeConfigsRequest, DescribeConfigsResponse,
};
use quiver_engine::catalog::{self, TopicMeta, SUPPORTED_CONFIGS};

use super::{str_bytes, topic_name};
use crate::kafka::broker::{shard, OFFSETS_TOPIC};
use crate::kafka::errors::error_code;

const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;
const SOURCE_DYNAMIC_TOPIC: i8 = 1;
const SOURCE_DEFAULT: i8 = 5;
const TYPE_STRING: i8 = 2;
const TYPE_LONG: i8 = 5;
const TYPE_LIST: i8 = 7;

fn config_type(key: &str) -> i8 {
    match key {
        "cleanup.policy" => TYPE_LIST,
        "segment.bytes" => 3,             // INT
        "min.cleanable.dirty.ratio" => 6, // DOUBLE
        k if k.ends_with(".ms") || k.ends_with(".bytes") || k.ends_with(".messages") => TYPE_LONG,
        _ => TYPE_STRING,
    }
}

fn describe_topic_configs(
    meta: &TopicMeta,
    keys: Option<&[String]>,
) -> Vec<(String, String, bool)> {
    let defaults = &shard().config.log_defaults;
    SUPPORTED_CONFIGS
        .iter()
        .filter(|k| keys.is_none_or(|ks| ks.iter().any(|x| x == *k)))
        .filter_map(|k| {
            meta.config_value(k, defaults)
                .map(|v| (k.to_string(), v, meta.configs.contains_key(*k)))
        })
        .collect()
}

pub async fn handle_create_topics(req: CreateTopicsRequest, version: i16) -> CreateTopicsResponse {
    let me = shard();
    let mut results = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let name = t.name.0.to_string();
        let mut result = CreatableTopicResult::default()
            .with_name(t.name.clone())
            .with_num_partitions(-1)
            .with_replication_factor(-1);
        let outcome: Result<TopicMeta, (i16, String)> = (|| {
            if t.replication_factor > 1 {
                return Err((
                    E::InvalidReplicationFactor.code(),
                    format!(
                        "replication factor {} exceeds the 1 available broker",
                        t.replication_factor
                    ),
                ));
            }
            if !t.assignments.is_empty() && t.num_partitions != -1 {
                return Err((
                    E::InvalidRequest.code(),
                    "give either num_partitions or assignments".to_string(),
                ));
            }
            let partitions = if !t.assignments.is_empty() {
                t.assignments.len() as i32
            } else if t.num_partitions == -1 {
                me.config.default_partitions
            } else {
                t.num_partitions
            };
            if partitions < 1 {
                return Err((
                    E::InvalidPartitions.code(),
                    format!("{partitions} partitions"),
                ));
            }
            let configs: BTreeMap<String, String> = t
                .configs
                .iter()
                .filter_map(|c| {
                    c.value
                        .as_ref()
                        .map(|v| (c.name.to_string(), v.to_string()))
                })
                .collect();
            TopicMeta::new(&name, partitions, configs).map_err(|e| (error_code(&e), e.to_string()))
        })();
        let created = match outcome {
            Err(e) => Err(e),
            Ok(meta) if me.topic(&name).is_some() => {
                let _ = meta;
                Err((
                    E::TopicAlreadyExists.code(),
                    format!("topic {name} already exists"),
                ))
            }
            Ok(meta) if req.validate_only => Ok(std::sync::Arc::new(meta)),
            Ok(meta) => me
                .create_topic(meta)
                .await
                .map_err(|e| (error_code(&e), e.to_string())),
        };
        match created {
            Ok(meta) => {
                if version >= 5 {
                    result.num_partitions = meta.partitions;
                    result.replication_factor = 1;
                }
                if version >= 7 {
                    result.topic_id = uuid::Uuid::from_bytes(meta.topic_id);
                }
                if version >= 5 {
                    result.configs = Some(
                        describe_topic_configs(&meta, None)
                            .into_iter()
                            .map(|(k, v, dynamic)| {
                                CreatableTopicConfigs::default()
                                    .with_name(str_bytes(&k))
                                    .with_value(Some(str_bytes(&v)))
                                    .with_config_source(if dynamic {
                                        SOURCE_DYNAMIC_TOPIC
                                    } else {
                                        SOURCE_DEFAULT
                                    })
                            })
                            .collect(),
                    );
                }
            }
            Err((code, message)) => {
                tracing::info!(topic = %name, code, %message, "create topic refused");
                result.error_code = code;
                if version >= 1 {
                    result.error_message = Some(str_bytes(&message));
                }
            }
        }
        results.push(result);
    }
    CreateTopicsResponse::default().with_topics(results)
}

pub async fn handle_delete_topics(req: DeleteTopicsRequest, version: i16) -> DeleteTopicsResponse {
    let me = shard();
    // v6 names topics in `topics` (by name or id); earlier versions in `topic_names`.
    let targets: Vec<(Option<String>, uuid::Uuid)> = if version >= 6 {
        req.topics
            .iter()
            .map(|t| (t.name.as_ref().map(|n| n.0.to_string()), t.topic_id))
            .collect()
    } else {
        req.topic_names
            .iter()
            .map(|n| (Some(n.0.to_string()), uuid::Uuid::nil()))
            .collect()
    };
    let mut responses = Vec::with_capacity(targets.len());
    for (name, id) in targets {
        let meta = match &name {
            Some(n) => me.topic(n),
            None => me.topic_by_id(id.as_bytes()),
        };
        let mut r = DeletableTopicResult::default()
            .with_name(name.as_deref().map(topic_name))
            .with_topic_id(id);
        match meta {
            None => {
                r.error_code = if name.is_none() {
                    crate::kafka::errors::UNKNOWN_TOPIC_ID
                } else {
                    E::UnknownTopicOrPartition.code()
                }
            }
            Some(m) if m.name == OFFSETS_TOPIC => {
                r.error_code = E::TopicAuthorizationFailed.code();
                if version >= 5 {
                    r.error_message = Some(str_bytes("internal topics cannot be deleted"));
                }
            }
            Some(m) => {
                r.name = Some(topic_name(&m.name));
                if version >= 6 {
                    r.topic_id = uuid::Uuid::from_bytes(m.topic_id);
                }
                if let Err(e) = me.delete_topic(m.name.clone()).await {
                    r.error_code = error_code(&e);
                    if version >= 5 {
                        r.error_message = Some(str_bytes(&e.to_string()));
                    }
                }
            }
        }
        responses.push(r);
    }
    DeleteTopicsResponse::default().with_responses(responses)
}

pub async fn handle_create_partitions(
    req: CreatePartitionsRequest,
    _version: i16,
) -> CreatePartitionsResponse {
    let me = shard();
    let mut results = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let name = t.name.0.to_string();
        let mut r = CreatePartitionsTopicResult::default().with_name(t.name.clone());
        let outcome = match me.topic(&name) {
            None => Err((
                E::UnknownTopicOrPartition.code(),
                format!("unknown topic {name}"),
            )),
            Some(m) if t.count <= m.partitions => Err((
                E::InvalidPartitions.code(),
                format!(
                    "topic has {} partitions; the count can only grow",
                    m.partitions
                ),
            )),
            Some(_) if t.count > catalog::MAX_PARTITIONS_PER_TOPIC => Err((
                E::InvalidPartitions.code(),
                format!("at most {} partitions", catalog::MAX_PARTITIONS_PER_TOPIC),
            )),
            Some(_) if req.validate_only => Ok(()),
            Some(m) => {
                let mut meta = (*m).clone();
                meta.partitions = t.count;
                me.update_topic(meta)
                    .await
                    .map_err(|e| (error_code(&e), e.to_string()))
            }
        };
        if let Err((code, message)) = outcome {
            r.error_code = code;
            r.error_message = Some(str_bytes(&message));
        }
        results.push(r);
    }
    CreatePartitionsResponse::default().with_results(results)
}

pub async fn handle_describe_configs(
    req: DescribeConfigsRequest,
    version: i16,
) -> DescribeConfigsResponse {
    let me = shard();
    let mut results = Vec::with_capacity(req.resources.len());
    for res in req.resources {
        let name = res.resource_name.to_string();
        let mut r = DescribeConfigsResult::default()
            .with_resource_type(res.resource_type)
            .with_resource_name(res.resource_name.clone());
        let keys: Option<Vec<String>> = res
            .configuration_keys
            .as_ref()
            .map(|ks| ks.iter().map(|k| k.to_string()).collect());
        match res.resource_type {
            RESOURCE_TOPIC => match me.topic(&name) {
                Some(meta) => {
                    r.configs = describe_topic_configs(&meta, keys.as_deref())
                        .into_iter()
                        .map(|(k, v, dynamic)| {
                            DescribeConfigsResourceResult::default()
                                .with_config_type(if version >= 3 { config_type(&k) } else { 0 })
                                .with_name(str_bytes(&k))
                                .with_value(Some(str_bytes(&v)))
                                .with_config_source(if dynamic {
                                    SOURCE_DYNAMIC_TOPIC
                                } else {
                                    SOURCE_DEFAULT
                                })
                        })
                        .collect();
                }
                None => r.error_code = E::UnknownTopicOrPartition.code(),
            },
            // The broker resource describes no dynamic configs.
            RESOURCE_BROKER => {}
            _ => {
                r.error_code = E::InvalidRequest.code();
                r.error_message = Some(str_bytes("unsupported resource type"));
            }
        }
        results.push(r);
    }
    DescribeConfigsResponse::default().with_results(results)
}

pub async fn handle_alter_configs(req: AlterConfigsRequest, _version: i16) -> AlterConfigsResponse {
    let me = shard();
    let mut responses = Vec::with_capacity(req.resources.len());
    for res in req.resources {
        let name = res.resource_name.to_string();
        let mut r = AlterConfigsResourceResponse::default()
            .with_resource_type(res.resource_type)
            .with_resource_name(res.resource_name.clone());
        let outcome: Result<(), (i16, String)> = match (res.resource_type, me.topic(&name)) {
            (RESOURCE_TOPIC, Some(m)) => {
                // AlterConfigs replaces the whole set of dynamic configs (it is not
                // incremental); unset keys fall back to defaults.
                let mut configs = BTreeMap::new();
                let mut bad = None;
                for c in &res.configs {
                    if let Some(v) = &c.value {
                        match catalog::validate_config(&c.name, v) {
                            Ok(v) => {
                                configs.insert(c.name.to_string(), v);
                            }
                            Err(e) => bad = Some((error_code(&e), e.to_string())),
                        }
                    }
                }
                match bad {
                    Some(b) => Err(b),
                    None if req.validate_only => Ok(()),
                    None => {
                        let mut meta = (*m).clone();
                        meta.configs = configs;
                        me.update_topic(meta)
                            .await
                            .map_err(|e| (error_code(&e), e.to_string()))
                    }
                }
            }
            (RESOURCE_TOPIC, None) => Err((
                E::UnknownTopicOrPartition.code(),
                format!("unknown topic {name}"),
            )),
            _ => Err((
                E::InvalidRequest.code(),
                "only topic configs can be altered".into(),
            )),
        };
        if let Err((code, message)) = outcome {
            r.error_code = code;
            r.error_message = Some(str_bytes(&message));
        }
        responses.push(r);
    }
    AlterConfigsResponse::default().with_responses(responses)
}
