//! `quiver produce TOPIC`: one record per line of stdin, like kafka-console-producer.
//!
//! stdin is read on a plain thread (blocking reads) and handed to the async producer
//! through a bounded channel, so a slow broker slows the reading instead of buffering
//! all of stdin. Deliveries are awaited by a second task that counts acknowledgements
//! and keeps the first error: the command fails if any record was not stored.

use std::io::BufRead;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use quiver_client::{Acks, Client, Delivery, ProducerConfig, ProducerRecord};
use tokio::sync::mpsc;

use super::{parse_properties, property_bool, usage, validate_topic_name};

/// Lines read ahead of the producer.
const STDIN_QUEUE_LINES: usize = 4096;
/// Deliveries awaited concurrently before reading more.
const DELIVERY_QUEUE_RECORDS: usize = 100_000;
const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);

#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:
  echo hello | quiver produce orders
  printf 'k1:v1\\nk2:v2\\n' | quiver produce orders --property parse.key=true --property key.separator=:
  quiver produce orders --key-separator : --header source=cli < lines.txt
  seq 1000000 | quiver produce numbers --acks 1")]
pub struct ProduceArgs {
    pub topic: String,
    /// Kafka console producer properties: parse.key=true|false, key.separator=STRING
    /// (default tab). Repeatable.
    #[arg(long = "property", value_name = "NAME=VALUE")]
    properties: Vec<String>,
    /// Split each line into key and value at the first SEPARATOR (implies parse.key=true).
    #[arg(long, value_name = "SEPARATOR")]
    key_separator: Option<String>,
    /// Header NAME=VALUE added to every record. Repeatable.
    #[arg(long = "header", value_name = "NAME=VALUE")]
    headers: Vec<String>,
    /// Acknowledgement: 0 (none), 1 (leader), all (-1).
    #[arg(long, default_value = "all")]
    acks: String,
    /// Send every record to this partition (default: by key hash, else sticky).
    #[arg(long)]
    partition: Option<i32>,
    /// No progress or summary on stderr.
    #[arg(long, short)]
    quiet: bool,
}

struct LineFormat {
    key_separator: Option<String>,
    headers: Vec<(String, Option<Bytes>)>,
}

impl ProduceArgs {
    fn line_format(&self) -> anyhow::Result<LineFormat> {
        let mut parse_key = false;
        let mut separator = "\t".to_string();
        for (name, value) in parse_properties(&self.properties)? {
            match name.as_str() {
                "parse.key" => parse_key = property_bool(&name, &value)?,
                "key.separator" => separator = value,
                other => {
                    return Err(usage(format!(
                        "--property {other}: not supported (supported: parse.key, key.separator)"
                    )))
                }
            }
        }
        if let Some(s) = &self.key_separator {
            parse_key = true;
            separator = s.clone();
        }
        if parse_key && separator.is_empty() {
            return Err(usage("the key separator must not be empty"));
        }
        let headers = self
            .headers
            .iter()
            .map(|h| match h.split_once('=') {
                Some((k, v)) if !k.is_empty() => {
                    Ok((k.to_string(), Some(Bytes::copy_from_slice(v.as_bytes()))))
                }
                _ => Err(usage(format!("--header {h:?}: expected NAME=VALUE"))),
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(LineFormat {
            key_separator: parse_key.then_some(separator),
            headers,
        })
    }

    fn acks(&self) -> anyhow::Result<Acks> {
        match self.acks.to_ascii_lowercase().as_str() {
            "0" => Ok(Acks::None),
            "1" => Ok(Acks::Leader),
            "all" | "-1" => Ok(Acks::All),
            other => Err(usage(format!("--acks {other}: expected 0, 1 or all"))),
        }
    }

    /// Checks everything that can be checked without a broker.
    pub fn validate(&self) -> anyhow::Result<()> {
        self.line_format()?;
        self.acks()?;
        validate_topic_name(&self.topic)
    }

    pub async fn run(self, client: &Client) -> anyhow::Result<()> {
        let format = self.line_format()?;
        let acks = self.acks()?;
        let partitions = client
            .partition_count(&self.topic)
            .await
            .with_context(|| format!("looking up topic {}", self.topic))?;
        if let Some(p) = self.partition {
            if p < 0 || p >= partitions {
                anyhow::bail!(
                    "--partition {p}: topic {} has partitions 0..{}",
                    self.topic,
                    partitions - 1
                );
            }
        }
        let producer = client
            .producer(ProducerConfig {
                acks,
                // Retries are only safe without duplicates when the broker can dedupe.
                idempotent: acks == Acks::All,
                ..ProducerConfig::default()
            })
            .await
            .context("starting the producer")?;

        let (line_tx, mut line_rx) = mpsc::channel::<std::io::Result<Vec<u8>>>(STDIN_QUEUE_LINES);
        std::thread::Builder::new()
            .name("stdin".into())
            .spawn(move || {
                let mut stdin = std::io::stdin().lock();
                loop {
                    let mut line = Vec::new();
                    match stdin.read_until(b'\n', &mut line) {
                        Ok(0) => return,
                        Ok(_) => {
                            if line.last() == Some(&b'\n') {
                                line.pop();
                                if line.last() == Some(&b'\r') {
                                    line.pop();
                                }
                            }
                            if line_tx.blocking_send(Ok(line)).is_err() {
                                return;
                            }
                        }
                        Err(e) => {
                            let _ = line_tx.blocking_send(Err(e));
                            return;
                        }
                    }
                }
            })
            .context("starting the stdin reader")?;

        let (delivery_tx, mut delivery_rx) = mpsc::channel::<Delivery>(DELIVERY_QUEUE_RECORDS);
        let acknowledged = tokio::spawn(async move {
            let mut count: u64 = 0;
            while let Some(delivery) = delivery_rx.recv().await {
                delivery.await.context("producing a record")?;
                count += 1;
            }
            anyhow::Ok(count)
        });

        // Nothing is printed for input that takes under a second.
        let show_progress = !self.quiet;
        let started = Instant::now();
        let mut last_report = started;
        let mut last_count: u64 = 0;
        let mut sent: u64 = 0;
        let mut reported = false;
        let mut line_number: u64 = 0;
        while let Some(line) = line_rx.recv().await {
            let line = line.context("reading stdin")?;
            line_number += 1;
            let mut record = ProducerRecord {
                topic: self.topic.clone(),
                partition: self.partition,
                headers: format.headers.clone(),
                ..ProducerRecord::default()
            };
            match &format.key_separator {
                Some(separator) => {
                    let Some(at) = find(&line, separator.as_bytes()) else {
                        anyhow::bail!(
                            "line {line_number}: no key separator {separator:?} (parse.key=true). \
                             {sent} record(s) were sent before it."
                        );
                    };
                    record.key = Some(Bytes::copy_from_slice(&line[..at]));
                    record.value = Some(Bytes::copy_from_slice(&line[at + separator.len()..]));
                }
                None => record.value = Some(Bytes::from(line)),
            }
            let delivery = producer
                .send(record)
                .await
                .with_context(|| format!("sending line {line_number}"))?;
            if delivery_tx.send(delivery).await.is_err() {
                break; // the delivery task failed; its error is reported below
            }
            sent += 1;
            let now = Instant::now();
            if show_progress && now.duration_since(last_report) >= PROGRESS_INTERVAL {
                let rate =
                    (sent - last_count) as f64 / now.duration_since(last_report).as_secs_f64();
                eprintln!("produced {sent} records ({rate:.0} records/s)");
                last_report = now;
                last_count = sent;
                reported = true;
            }
        }
        drop(delivery_tx);
        producer.flush().await.context("flushing the producer")?;
        let acknowledged = acknowledged.await.context("the delivery task failed")??;
        if reported {
            let elapsed = started.elapsed().as_secs_f64();
            eprintln!(
                "done: {acknowledged} records in {elapsed:.1}s ({:.0} records/s)",
                acknowledged as f64 / elapsed.max(1e-9)
            );
        }
        Ok(())
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
