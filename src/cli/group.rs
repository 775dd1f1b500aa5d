//! `quiver group list|describe`.
//!
//! `list` uses quiver/1's LIST_GROUPS (every group the broker coordinates, with its
//! state); `describe` shows committed offsets and lag (FETCH_OFFSETS).

use std::collections::HashMap;

use anyhow::Context;
use clap::Subcommand;
use quiver_client::Client;

#[derive(Subcommand, Debug)]
pub enum GroupCommand {
    /// List consumer groups with their state.
    ///
    /// Example:
    ///   quiver group list
    List,
    /// Show a group's committed offsets, each partition's log end offset and the lag.
    /// (Members and assignments are not in quiver/1 yet.)
    ///
    /// Examples:
    ///   quiver group describe billing
    ///   quiver group describe billing --topic orders
    Describe {
        group: String,
        /// Only this topic.
        #[arg(long)]
        topic: Option<String>,
    },
}

impl GroupCommand {
    /// Commands that need no broker.
    pub fn offline(&self) -> Option<anyhow::Result<()>> {
        match self {
            GroupCommand::List | GroupCommand::Describe { .. } => None,
        }
    }

    pub async fn run(self, client: &Client) -> anyhow::Result<()> {
        let (group, topic) = match self {
            GroupCommand::List => {
                let mut groups = client.list_groups().await.context("listing groups")?;
                groups.sort_by(|a, b| a.group.cmp(&b.group));
                println!("{:<40} {:<22} PROTOCOL-TYPE", "GROUP", "STATE");
                for g in groups {
                    println!("{:<40} {:<22} {}", g.group, g.state, g.protocol_type);
                }
                return Ok(());
            }
            GroupCommand::Describe { group, topic } => (group, topic),
        };
        let mut offsets = client
            .fetch_offsets(&group, &[])
            .await
            .with_context(|| format!("fetching offsets of group {group}"))?;
        offsets.retain(|o| o.offset >= 0 && topic.as_ref().is_none_or(|t| *t == o.topic));
        if offsets.is_empty() {
            match &topic {
                Some(t) => println!("Group {group} has no committed offsets for topic {t}."),
                None => println!("Group {group} has no committed offsets (or does not exist)."),
            }
            return Ok(());
        }
        offsets.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        let mut log_end: HashMap<(String, i32), i64> = HashMap::new();
        let mut topics: Vec<&str> = offsets.iter().map(|o| o.topic.as_str()).collect();
        topics.dedup();
        for t in topics {
            // A deleted topic still has committed offsets; show them without a lag.
            if let Ok(d) = client.describe_topic(t).await {
                for p in d.partitions {
                    log_end.insert((t.to_string(), p.partition), p.high_watermark);
                }
            }
        }
        println!(
            "{:<20} {:<30} {:>9} {:>15} {:>15} {:>10}",
            "GROUP", "TOPIC", "PARTITION", "CURRENT-OFFSET", "LOG-END-OFFSET", "LAG"
        );
        for o in &offsets {
            let end = log_end.get(&(o.topic.clone(), o.partition)).copied();
            let (end, lag) = match end {
                Some(e) => (e.to_string(), (e - o.offset).max(0).to_string()),
                None => ("-".to_string(), "-".to_string()),
            };
            println!(
                "{:<20} {:<30} {:>9} {:>15} {:>15} {:>10}",
                group, o.topic, o.partition, o.offset, end, lag
            );
        }
        Ok(())
    }
}
