//! `quiver topic create|list|describe|delete`.

use anyhow::Context;
use clap::Subcommand;
use quiver_client::Client;

use super::{usage, validate_topic_name};

#[derive(Subcommand, Debug)]
pub enum TopicCommand {
    /// Create a topic.
    ///
    /// Examples:
    ///   quiver topic create orders --partitions 3
    ///   quiver topic create audit --config retention.ms=86400000 --config cleanup.policy=delete
    Create {
        topic: String,
        /// Partitions (default: the broker's --default-partitions).
        #[arg(long)]
        partitions: Option<i32>,
        /// Topic config name=value (Kafka names: retention.ms, segment.bytes, ...). Repeatable.
        #[arg(long = "config", value_name = "NAME=VALUE")]
        configs: Vec<String>,
        /// Succeed if the topic already exists.
        #[arg(long)]
        if_not_exists: bool,
    },
    /// List topics.
    ///
    /// Examples:
    ///   quiver topic list
    ///   quiver topic list --internal     # include __consumer_offsets
    List {
        /// Include internal topics.
        #[arg(long)]
        internal: bool,
    },
    /// Show a topic's partitions (start offset, high watermark) and effective configs.
    ///
    /// Example:
    ///   quiver topic describe orders
    Describe { topic: String },
    /// Delete a topic and its data.
    ///
    /// Example:
    ///   quiver topic delete orders
    Delete {
        topic: String,
        /// Succeed if the topic does not exist.
        #[arg(long)]
        if_exists: bool,
    },
}

impl TopicCommand {
    /// Checks everything that can be checked without a broker.
    pub fn validate(&self) -> anyhow::Result<()> {
        match self {
            TopicCommand::Create { topic, .. }
            | TopicCommand::Describe { topic }
            | TopicCommand::Delete { topic, .. } => validate_topic_name(topic),
            TopicCommand::List { .. } => Ok(()),
        }
    }

    pub async fn run(self, client: &Client) -> anyhow::Result<()> {
        match self {
            TopicCommand::Create {
                topic,
                partitions,
                configs,
                if_not_exists,
            } => {
                validate_topic_name(&topic)?;
                if let Some(p) = partitions {
                    if p < 1 {
                        return Err(usage(format!("--partitions {p}: must be at least 1")));
                    }
                }
                let configs: Vec<(String, String)> = configs
                    .iter()
                    .map(|c| match c.split_once('=') {
                        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
                        _ => Err(usage(format!("--config {c:?}: expected NAME=VALUE"))),
                    })
                    .collect::<anyhow::Result<_>>()?;
                let config_refs: Vec<(&str, &str)> = configs
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                match client
                    .create_topic(&topic, partitions.unwrap_or(-1), &config_refs)
                    .await
                {
                    Ok(info) => {
                        println!(
                            "Created topic {} with {} partition(s).",
                            info.name, info.partitions
                        );
                        Ok(())
                    }
                    Err(e)
                        if if_not_exists
                            && e.code().is_some_and(|c| c.name() == "TOPIC_ALREADY_EXISTS") =>
                    {
                        println!("Topic {topic} already exists.");
                        Ok(())
                    }
                    Err(e) => Err(e).with_context(|| format!("creating topic {topic}")),
                }
            }
            TopicCommand::List { internal } => {
                let mut topics = client.list_topics().await.context("listing topics")?;
                topics.sort_by(|a, b| a.name.cmp(&b.name));
                for t in topics.iter().filter(|t| internal || !t.internal) {
                    println!("{}", t.name);
                }
                Ok(())
            }
            TopicCommand::Describe { topic } => {
                validate_topic_name(&topic)?;
                let d = client
                    .describe_topic(&topic)
                    .await
                    .with_context(|| format!("describing topic {topic}"))?;
                let id: String = d.info.topic_id.iter().map(|b| format!("{b:02x}")).collect();
                println!(
                    "Topic: {}\tTopicId: {}\tPartitionCount: {}\tInternal: {}",
                    d.info.name, id, d.info.partitions, d.info.internal
                );
                let configs: Vec<String> =
                    d.configs.iter().map(|(k, v)| format!("{k}={v}")).collect();
                println!("Configs: {}", configs.join(","));
                for p in &d.partitions {
                    println!(
                        "\tPartition: {}\tLogStartOffset: {}\tHighWatermark: {}\tMessages: {}",
                        p.partition,
                        p.log_start_offset,
                        p.high_watermark,
                        p.high_watermark - p.log_start_offset
                    );
                }
                Ok(())
            }
            TopicCommand::Delete { topic, if_exists } => {
                validate_topic_name(&topic)?;
                match client.delete_topic(&topic).await {
                    Ok(()) => {
                        println!("Deleted topic {topic}.");
                        Ok(())
                    }
                    Err(e)
                        if if_exists
                            && e.code()
                                .is_some_and(|c| c.name() == "UNKNOWN_TOPIC_OR_PARTITION") =>
                    {
                        println!("Topic {topic} does not exist.");
                        Ok(())
                    }
                    Err(e) => Err(e).with_context(|| format!("deleting topic {topic}")),
                }
            }
        }
    }
}
