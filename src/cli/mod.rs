//! The `quiver` command line client: admin (`topic`, `group`), `produce` and `consume`,
//! all over the native QUIC protocol (`quiver/1`) through `quiver-client`.
//!
//! Flag names follow Kafka's console tools where one exists (`--from-beginning`,
//! `--max-messages`, `--partitions`, `--group`, `--property key.separator=...`). Exit
//! codes: 0 success, 2 usage error (clap's and ours), 1 runtime error (broker
//! unreachable, broker refused, I/O).

mod connect;
mod consume;
mod group;
mod produce;
mod topic;

use std::fmt;

pub use connect::ConnectArgs;
pub use consume::ConsumeArgs;
pub use group::GroupCommand;
pub use produce::ProduceArgs;
pub use topic::TopicCommand;

/// Exit code for a usage error (the same one clap uses).
pub const EXIT_USAGE: i32 = 2;
/// Exit code for a runtime error.
pub const EXIT_RUNTIME: i32 = 1;

/// An error in how the command was invoked, found after clap parsed it (for example a
/// malformed `--property`). Exits with [`EXIT_USAGE`].
#[derive(Debug)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

pub fn usage(message: impl Into<String>) -> anyhow::Error {
    UsageError(message.into()).into()
}

/// Runs one client command on a small tokio runtime, prints the error if it fails and
/// returns the process exit code.
pub fn run<F>(command: F) -> i32
where
    F: std::future::Future<Output = anyhow::Result<()>>,
{
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return EXIT_RUNTIME;
        }
    };
    let result = runtime.block_on(command);
    // Subscription tasks may still be parked on their streams; do not wait for them.
    runtime.shutdown_background();
    match result {
        Ok(()) => 0,
        Err(e) if e.downcast_ref::<UsageError>().is_some() => {
            eprintln!("error: {e}\n\nFor more information, try '--help'.");
            EXIT_USAGE
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            EXIT_RUNTIME
        }
    }
}

/// Kafka's topic name rules (`Topic.validate`), checked before asking the broker so the
/// message can say what is wrong.
pub fn validate_topic_name(name: &str) -> anyhow::Result<()> {
    const MAX_TOPIC_NAME_CHARS: usize = 249;
    let problem = if name.is_empty() {
        Some("it is empty".to_string())
    } else if name == "." || name == ".." {
        Some("'.' and '..' are not allowed".to_string())
    } else if name.len() > MAX_TOPIC_NAME_CHARS {
        Some(format!(
            "it is {} characters long, the limit is {MAX_TOPIC_NAME_CHARS}",
            name.len()
        ))
    } else {
        name.chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
            .map(|c| {
                format!("{c:?} is not allowed: use only ASCII letters, digits, '.', '_' and '-'")
            })
    };
    match problem {
        Some(p) => anyhow::bail!("invalid topic name {name:?}: {p}"),
        None => Ok(()),
    }
}

/// Parses Kafka-style `--property name=value` pairs.
pub fn parse_properties(properties: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    properties
        .iter()
        .map(|p| match p.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.trim().to_string(), v.to_string())),
            _ => Err(usage(format!(
                "--property {p:?}: expected name=value, for example key.separator=:"
            ))),
        })
        .collect()
}

/// Parses a boolean property value the way Kafka does (case-insensitive "true").
pub fn property_bool(name: &str, value: &str) -> anyhow::Result<bool> {
    match value.to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(usage(format!(
            "--property {name}={value}: expected true or false"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names() {
        assert!(validate_topic_name("orders.v1_a-b").is_ok());
        assert!(validate_topic_name("bad name").is_err());
        assert!(validate_topic_name("").is_err());
        assert!(validate_topic_name("..").is_err());
        assert!(validate_topic_name(&"a".repeat(250)).is_err());
    }

    #[test]
    fn properties() {
        let p = parse_properties(&["parse.key=true".into(), "key.separator==".into()]).unwrap();
        assert_eq!(p[1], ("key.separator".to_string(), "=".to_string()));
        assert!(parse_properties(&["novalue".into()]).is_err());
    }
}
