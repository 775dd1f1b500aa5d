//! `quiver consume TOPIC`: print records as they arrive, like kafka-console-consumer.
//!
//! Every selected partition has its own subscription stream (the broker pushes new
//! batches). With `--group` the starting point is the group's committed offset and the
//! positions of the records printed are committed about once a second and at exit, so
//! a record counts as consumed only once it was written to stdout.

use std::collections::HashMap;
use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::Context;
use quiver_client::{Client, ConsumerConfig, ConsumerRecord, StartOffset};

use super::{parse_properties, property_bool, usage, validate_topic_name};

const COMMIT_INTERVAL: Duration = Duration::from_secs(1);

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputFormat {
    /// The value (with --property print.key=true etc.: the selected fields, tab-separated).
    Plain,
    /// One JSON object per line: topic, partition, offset, timestamp, key, value, headers.
    Json,
}

#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:
  quiver consume orders --from-beginning
  quiver consume orders --from-beginning --max-messages 10 --property print.key=true
  quiver consume orders --partition 0 --offset 42 --format json
  quiver consume orders --timestamp 1700000000000       # from a time (ms since the epoch)
  quiver consume orders --group billing                 # resume where the group left off

Without --from-beginning, --offset, --timestamp or a committed group offset, only records
produced from now on are shown. Stops after --max-messages, after --timeout-ms without a
record, or on Ctrl-C.")]
pub struct ConsumeArgs {
    pub topic: String,
    /// Start at the earliest record still stored.
    #[arg(long, conflicts_with_all = ["offset", "timestamp"])]
    from_beginning: bool,
    /// Start at this offset (in every selected partition; usually with --partition).
    #[arg(long, conflicts_with = "timestamp")]
    offset: Option<i64>,
    /// Start at the first record at or after this time (ms since the epoch).
    #[arg(long)]
    timestamp: Option<i64>,
    /// Read only this partition (default: all).
    #[arg(long)]
    partition: Option<i32>,
    /// Consumer group: start from its committed offsets and commit what was printed.
    /// Offsets are standalone commits; no group membership or rebalancing.
    #[arg(long)]
    group: Option<String>,
    /// Exit after printing this many records.
    #[arg(long)]
    max_messages: Option<u64>,
    /// Exit when no record arrived for this long.
    #[arg(long)]
    timeout_ms: Option<u64>,
    /// Output format.
    #[arg(long, value_enum, default_value = "plain")]
    format: OutputFormat,
    /// Kafka console consumer properties for plain output: print.key, print.partition,
    /// print.offset, print.timestamp, print.headers (true|false), key.separator (default
    /// tab). Repeatable.
    #[arg(long = "property", value_name = "NAME=VALUE")]
    properties: Vec<String>,
}

#[derive(Debug, Default)]
struct PlainFields {
    key: bool,
    partition: bool,
    offset: bool,
    timestamp: bool,
    headers: bool,
    separator: String,
}

impl ConsumeArgs {
    fn plain_fields(&self) -> anyhow::Result<PlainFields> {
        let mut fields = PlainFields {
            separator: "\t".into(),
            ..PlainFields::default()
        };
        for (name, value) in parse_properties(&self.properties)? {
            match name.as_str() {
                "print.key" => fields.key = property_bool(&name, &value)?,
                "print.partition" => fields.partition = property_bool(&name, &value)?,
                "print.offset" => fields.offset = property_bool(&name, &value)?,
                "print.timestamp" => fields.timestamp = property_bool(&name, &value)?,
                "print.headers" => fields.headers = property_bool(&name, &value)?,
                "key.separator" => fields.separator = value,
                other => {
                    return Err(usage(format!(
                        "--property {other}: not supported (supported: print.key, \
                         print.partition, print.offset, print.timestamp, print.headers, \
                         key.separator)"
                    )))
                }
            }
        }
        Ok(fields)
    }

    fn start(&self) -> StartOffset {
        if self.from_beginning {
            StartOffset::Earliest
        } else if let Some(o) = self.offset {
            StartOffset::Offset(o)
        } else if let Some(t) = self.timestamp {
            StartOffset::Timestamp(t)
        } else {
            StartOffset::Latest
        }
    }

    /// Checks everything that can be checked without a broker.
    pub fn validate(&self) -> anyhow::Result<()> {
        self.plain_fields()?;
        if matches!(self.offset, Some(o) if o < 0) {
            return Err(usage("--offset must be 0 or more"));
        }
        if self.max_messages == Some(0) {
            return Err(usage("--max-messages must be at least 1"));
        }
        validate_topic_name(&self.topic)
    }

    pub async fn run(self, client: &Client) -> anyhow::Result<()> {
        let fields = self.plain_fields()?;
        let partition_count = client
            .partition_count(&self.topic)
            .await
            .with_context(|| format!("looking up topic {}", self.topic))?;
        let partitions: Vec<(String, i32)> = match self.partition {
            Some(p) if p < 0 || p >= partition_count => anyhow::bail!(
                "--partition {p}: topic {} has partitions 0..{}",
                self.topic,
                partition_count - 1
            ),
            Some(p) => vec![(self.topic.clone(), p)],
            None => (0..partition_count)
                .map(|p| (self.topic.clone(), p))
                .collect(),
        };
        let mut consumer = client.consumer(ConsumerConfig {
            group: self.group.clone(),
            start: self.start(),
        });
        consumer
            .assign(&partitions)
            .await
            .with_context(|| format!("subscribing to {}", self.topic))?;

        let stdout = std::io::stdout();
        let mut out = std::io::BufWriter::new(stdout.lock());
        let mut printed: u64 = 0;
        // Next offset to read per partition, of records actually printed.
        let mut positions: HashMap<i32, i64> = HashMap::new();
        let mut committed_at = Instant::now();
        let idle = self.timeout_ms.map(Duration::from_millis);
        'consume: loop {
            let records = match idle {
                Some(idle) => match tokio::time::timeout(idle, consumer.poll()).await {
                    Ok(r) => r,
                    Err(_) => break,
                },
                None => consumer.poll().await,
            }
            .with_context(|| format!("consuming {}", self.topic))?;
            for record in &records {
                let written = match self.format {
                    OutputFormat::Plain => write_plain(&mut out, record, &fields),
                    OutputFormat::Json => write_json(&mut out, record),
                };
                if is_broken_pipe(&written) {
                    break 'consume;
                }
                written.context("writing to stdout")?;
                positions.insert(record.partition, record.offset + 1);
                printed += 1;
                if self.max_messages.is_some_and(|max| printed >= max) {
                    break 'consume;
                }
            }
            let flushed = out.flush();
            if is_broken_pipe(&flushed) {
                break;
            }
            flushed.context("writing to stdout")?;
            if committed_at.elapsed() >= COMMIT_INTERVAL {
                self.commit(client, &positions).await?;
                committed_at = Instant::now();
            }
        }
        let flushed = out.flush();
        if !is_broken_pipe(&flushed) {
            flushed.context("writing to stdout")?;
        }
        self.commit(client, &positions).await?;
        if self.max_messages.is_some() || idle.is_some() {
            eprintln!("Processed a total of {printed} messages");
        }
        Ok(())
    }

    async fn commit(&self, client: &Client, positions: &HashMap<i32, i64>) -> anyhow::Result<()> {
        let Some(group) = &self.group else {
            return Ok(());
        };
        if positions.is_empty() {
            return Ok(());
        }
        let offsets: Vec<(String, i32, i64)> = positions
            .iter()
            .map(|(p, o)| (self.topic.clone(), *p, *o))
            .collect();
        client
            .commit_offsets(group, &offsets)
            .await
            .with_context(|| format!("committing offsets for group {group}"))
    }
}

fn is_broken_pipe<T>(result: &std::io::Result<T>) -> bool {
    matches!(result, Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe)
}

fn text(bytes: &Option<bytes::Bytes>) -> String {
    match bytes {
        Some(b) => String::from_utf8_lossy(b).into_owned(),
        None => "null".into(),
    }
}

fn write_plain(
    out: &mut impl Write,
    record: &ConsumerRecord,
    fields: &PlainFields,
) -> std::io::Result<()> {
    let sep = &fields.separator;
    if fields.timestamp {
        write!(out, "CreateTime:{}{sep}", record.timestamp)?;
    }
    if fields.partition {
        write!(out, "Partition:{}{sep}", record.partition)?;
    }
    if fields.offset {
        write!(out, "Offset:{}{sep}", record.offset)?;
    }
    if fields.headers {
        let headers: Vec<String> = record
            .headers
            .iter()
            .map(|(k, v)| format!("{k}:{}", text(v)))
            .collect();
        if headers.is_empty() {
            write!(out, "NO_HEADERS{sep}")?;
        } else {
            write!(out, "{}{sep}", headers.join(","))?;
        }
    }
    if fields.key {
        write!(out, "{}{sep}", text(&record.key))?;
    }
    writeln!(out, "{}", text(&record.value))
}

fn json_bytes(bytes: &Option<bytes::Bytes>) -> serde_json::Value {
    match bytes {
        Some(b) => serde_json::Value::String(String::from_utf8_lossy(b).into_owned()),
        None => serde_json::Value::Null,
    }
}

fn write_json(out: &mut impl Write, record: &ConsumerRecord) -> std::io::Result<()> {
    let headers: Vec<serde_json::Value> = record
        .headers
        .iter()
        .map(|(k, v)| serde_json::json!({ "key": k, "value": json_bytes(v) }))
        .collect();
    let line = serde_json::json!({
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "timestamp": record.timestamp,
        "key": json_bytes(&record.key),
        "value": json_bytes(&record.value),
        "headers": headers,
    });
    serde_json::to_writer(&mut *out, &line)?;
    writeln!(out)
}
