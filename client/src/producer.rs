//! [`Producer`]: batching per partition (`linger`, `batch_bytes`), Kafka's default
//! partitioner for keyed records, acks 0/1/all, and retries that are safe because the
//! producer is idempotent (producer id, epoch and per-partition sequence numbers let the
//! broker drop a batch it already stored).
//!
//! One task per partition owns that partition's queue and its stream to the broker. It
//! sends one batch at a time and builds the next from what queued meanwhile, so batches
//! grow with load (like Nagle) and records of a partition are stored in `send` order.
//! Queues are bounded: `send` waits when a partition has `queue_records` pending.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use quiver_protocol::{Acks, ErrorCode, FrameType, ProduceRequest, Request, Response};
use tokio::sync::{mpsc, oneshot, Mutex};
use tokio::time::Instant;

use crate::client::Client;
use crate::connection::Channel;
use crate::error::{Error, Result};
use crate::records::{encode_batch, partition_for_key, ProducerIdentity, ProducerRecord};

/// The broker's largest batch (engine `MAX_BATCH_BYTES`); a batch is closed well before.
const MAX_BATCH_BYTES: usize = 16 * 1024 * 1024 - 64 * 1024;

#[derive(Debug, Clone)]
pub struct ProducerConfig {
    pub acks: Acks,
    /// How long a partition's first queued record waits for company before its batch is
    /// sent (Kafka's `linger.ms`). Batches also go as soon as `batch_bytes` is reached.
    pub linger: Duration,
    /// Target batch size in bytes (Kafka's `batch.size`, but we default larger).
    pub batch_bytes: usize,
    /// Producer id + sequence numbers so retries never duplicate (requires acks=all).
    pub idempotent: bool,
    /// Times a failed batch is sent again when the error is retriable.
    pub retries: u32,
    pub retry_backoff: Duration,
    /// Records queued per partition before `send` waits.
    pub queue_records: usize,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            acks: Acks::All,
            linger: Duration::from_millis(5),
            batch_bytes: 1024 * 1024,
            idempotent: true,
            retries: 5,
            retry_backoff: Duration::from_millis(100),
            queue_records: 100_000,
        }
    }
}

/// Where a record was stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordMetadata {
    pub topic: String,
    pub partition: i32,
    /// -1 with acks=0.
    pub offset: i64,
}

/// Resolves when the record is acknowledged as `acks` asks (or fails).
pub struct Delivery(oneshot::Receiver<Result<RecordMetadata>>);

impl Future for Delivery {
    type Output = Result<RecordMetadata>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0)
            .poll(cx)
            .map(|r| r.unwrap_or(Err(Error::Closed)))
    }
}

enum Message {
    Record(ProducerRecord, oneshot::Sender<Result<RecordMetadata>>),
    Flush(oneshot::Sender<()>),
}

struct TopicState {
    partitions: i32,
    sticky: i32,
    sticky_bytes: usize,
}

struct Inner {
    client: Client,
    config: ProducerConfig,
    identity: (i64, i16),
    workers: Mutex<HashMap<(String, i32), mpsc::Sender<Message>>>,
    topics: Mutex<HashMap<String, TopicState>>,
}

/// An async producer. Cheap to clone; clones share queues.
#[derive(Clone)]
pub struct Producer {
    inner: Arc<Inner>,
}

impl Client {
    /// A producer; with `idempotent` it first obtains a producer id from the broker.
    pub async fn producer(&self, config: ProducerConfig) -> Result<Producer> {
        if config.idempotent && config.acks != Acks::All {
            return Err(Error::InvalidArgument(
                "an idempotent producer needs acks=all (as in Kafka)".into(),
            ));
        }
        if config.batch_bytes == 0 || config.queue_records == 0 {
            return Err(Error::InvalidArgument(
                "batch_bytes and queue_records must be positive".into(),
            ));
        }
        let identity = if config.idempotent {
            self.init_producer_id(-1, -1).await?
        } else {
            (-1, -1)
        };
        Ok(Producer {
            inner: Arc::new(Inner {
                client: self.clone(),
                config,
                identity,
                workers: Mutex::new(HashMap::new()),
                topics: Mutex::new(HashMap::new()),
            }),
        })
    }
}

impl Producer {
    /// The producer id and epoch (-1, -1 when not idempotent).
    pub fn identity(&self) -> (i64, i16) {
        self.inner.identity
    }

    /// Queues a record; waits only while its partition's queue is full. Await the
    /// returned [`Delivery`] for the outcome.
    pub async fn send(&self, record: ProducerRecord) -> Result<Delivery> {
        let partition = self.choose_partition(&record).await?;
        let worker = self.worker(&record.topic, partition).await;
        let (tx, rx) = oneshot::channel();
        worker
            .send(Message::Record(record, tx))
            .await
            .map_err(|_| Error::Closed)?;
        Ok(Delivery(rx))
    }

    /// Sends and waits for the acknowledgement.
    pub async fn send_and_wait(&self, record: ProducerRecord) -> Result<RecordMetadata> {
        self.send(record).await?.await
    }

    /// Waits until every record queued before this call is acknowledged or failed.
    pub async fn flush(&self) -> Result<()> {
        let workers: Vec<_> = self.inner.workers.lock().await.values().cloned().collect();
        let mut waits = Vec::new();
        for w in workers {
            let (tx, rx) = oneshot::channel();
            if w.send(Message::Flush(tx)).await.is_ok() {
                waits.push(rx);
            }
        }
        for w in waits {
            let _ = w.await;
        }
        Ok(())
    }

    async fn choose_partition(&self, record: &ProducerRecord) -> Result<i32> {
        let mut topics = self.inner.topics.lock().await;
        if !topics.contains_key(&record.topic) {
            let n = self.inner.client.partition_count(&record.topic).await?;
            topics.insert(
                record.topic.clone(),
                TopicState {
                    partitions: n,
                    sticky: (crate::records::now_ms() % n.max(1) as i64) as i32,
                    sticky_bytes: 0,
                },
            );
        }
        let state = topics
            .get_mut(&record.topic)
            .ok_or_else(|| Error::InvalidArgument("topic vanished".into()))?;
        if let Some(p) = record.partition {
            if p < 0 || p >= state.partitions {
                return Err(Error::broker(
                    ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
                    format!("{} has {} partitions", record.topic, state.partitions),
                ));
            }
            return Ok(p);
        }
        if let Some(key) = &record.key {
            return Ok(partition_for_key(key, state.partitions));
        }
        // Keyless: stick to one partition for a batch's worth of bytes, then move on
        // (Kafka's sticky partitioner, KIP-480), so keyless records still form batches.
        state.sticky_bytes += record.estimated_size();
        if state.sticky_bytes >= self.inner.config.batch_bytes {
            state.sticky = (state.sticky + 1) % state.partitions.max(1);
            state.sticky_bytes = 0;
        }
        Ok(state.sticky)
    }

    async fn worker(&self, topic: &str, partition: i32) -> mpsc::Sender<Message> {
        let mut workers = self.inner.workers.lock().await;
        let key = (topic.to_string(), partition);
        if let Some(w) = workers.get(&key) {
            if !w.is_closed() {
                return w.clone();
            }
        }
        let (tx, rx) = mpsc::channel(self.inner.config.queue_records);
        tokio::spawn(partition_worker(
            self.inner.client.clone(),
            self.inner.config.clone(),
            self.inner.identity,
            topic.to_string(),
            partition,
            rx,
        ));
        workers.insert(key, tx.clone());
        tx
    }
}

async fn partition_worker(
    client: Client,
    config: ProducerConfig,
    identity: (i64, i16),
    topic: String,
    partition: i32,
    mut rx: mpsc::Receiver<Message>,
) {
    let mut sequence: i32 = 0;
    let mut channel: Option<Channel> = None;
    let batch_limit = config.batch_bytes.min(MAX_BATCH_BYTES);
    loop {
        let (first, first_reply) = match rx.recv().await {
            Some(Message::Record(r, reply)) => (r, reply),
            Some(Message::Flush(done)) => {
                let _ = done.send(());
                continue;
            }
            None => return,
        };
        let mut bytes = first.estimated_size();
        let mut records = vec![first];
        let mut replies = vec![first_reply];
        let mut flushed = None;
        let deadline = Instant::now() + config.linger;
        while bytes < batch_limit {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(Message::Record(r, reply))) => {
                    bytes += r.estimated_size();
                    records.push(r);
                    replies.push(reply);
                }
                Ok(Some(Message::Flush(done))) => {
                    flushed = Some(done);
                    break;
                }
                Ok(None) | Err(_) => break,
            }
        }
        let id = ProducerIdentity {
            producer_id: identity.0,
            producer_epoch: identity.1,
            base_sequence: if config.idempotent { sequence } else { -1 },
        };
        let count = records.len();
        let result = match encode_batch(&records, id) {
            Ok(batch) => send_batch(&client, &config, &mut channel, &topic, partition, batch).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(base_offset) => {
                sequence = sequence.wrapping_add(count as i32);
                for (i, reply) in replies.into_iter().enumerate() {
                    let _ = reply.send(Ok(RecordMetadata {
                        topic: topic.clone(),
                        partition,
                        offset: if base_offset < 0 {
                            -1
                        } else {
                            base_offset + i as i64
                        },
                    }));
                }
            }
            Err(e) => {
                // The batch was not stored (or its fate is unknown after the last retry);
                // the next batch reuses the sequence so a stored duplicate is detected.
                let message = e.to_string();
                let code = e.code();
                for reply in replies {
                    let err = match code {
                        Some(code) => Error::broker(code, message.clone()),
                        None => Error::Records(message.clone()),
                    };
                    let _ = reply.send(Err(err));
                }
            }
        }
        if let Some(done) = flushed {
            let _ = done.send(());
        }
    }
}

/// Sends one batch, retrying retriable failures on a fresh stream. Returns the base
/// offset (-1 for acks=0).
async fn send_batch(
    client: &Client,
    config: &ProducerConfig,
    channel: &mut Option<Channel>,
    topic: &str,
    partition: i32,
    batch: Bytes,
) -> Result<i64> {
    let request = Request::Produce(ProduceRequest {
        topic: topic.to_string(),
        partition,
        acks: config.acks,
        records: vec![batch],
    });
    let mut attempt = 0;
    loop {
        let result = async {
            let ch = match channel.as_ref().filter(|c| !c.is_closed()) {
                Some(c) => c.clone(),
                None => {
                    let c = client.channel_for(topic, partition).await?;
                    *channel = Some(c.clone());
                    c
                }
            };
            if config.acks == Acks::None {
                ch.send(&request, false).await?;
                return Ok(-1);
            }
            match ch.request(&request).await? {
                Response::Produce(r) => Ok(r.base_offset),
                other => Err(Error::UnexpectedResponse {
                    to: FrameType::Produce,
                    got: other.frame_type(),
                }),
            }
        }
        .await;
        match result {
            Err(e) if e.is_retriable() && attempt < config.retries => {
                attempt += 1;
                tracing::debug!(topic, partition, attempt, error = %e, "retrying produce");
                if !matches!(e, Error::Broker { .. }) {
                    *channel = None;
                }
                tokio::time::sleep(config.retry_backoff).await;
            }
            other => return other,
        }
    }
}
