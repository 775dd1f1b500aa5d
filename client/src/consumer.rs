//! Reading: [`Subscription`] (one partition, pushed by the broker on a stream of its
//! own) and [`Consumer`] (explicitly assigned partitions, optional group offsets).
//!
//! Back-pressure is QUIC flow control: a subscription's reader task holds at most
//! `SUBSCRIPTION_BUFFER` decoded pushes; when the application stops taking them the task
//! stops reading the stream, the stream's window fills, and the broker's write for that
//! partition waits. Other partitions' streams keep flowing.

use std::collections::HashMap;

use quinn::{RecvStream, SendStream};
use quiver_protocol::limits::MAX_SUBSCRIBE_PUSH_BYTES;
use quiver_protocol::{PartitionRecords, Request, Response, SubscribeRequest};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::client::{Client, StartOffset};
use crate::connection::read_frame;
use crate::error::{Error, Result};
use crate::records::{decode_records, ConsumerRecord};

/// Decoded pushes a subscription buffers before it stops reading its stream.
const SUBSCRIPTION_BUFFER: usize = 2;

/// A live feed of one partition.
pub struct Subscription {
    pub topic: String,
    pub partition: i32,
    rx: mpsc::Receiver<Result<Vec<ConsumerRecord>>>,
    task: JoinHandle<()>,
}

impl Subscription {
    /// The next non-empty group of records, in offset order; `None` once the
    /// subscription has ended (after an error was returned).
    pub async fn next(&mut self) -> Option<Result<Vec<ConsumerRecord>>> {
        self.rx.recv().await
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        // Dropping the task drops its streams, which closes the subscription at the broker.
        self.task.abort();
    }
}

impl Client {
    /// Subscribes to one partition from `start`.
    pub async fn subscribe(
        &self,
        topic: &str,
        partition: i32,
        start: StartOffset,
    ) -> Result<Subscription> {
        let (tx, rx) = mpsc::channel(SUBSCRIPTION_BUFFER);
        let task = self.start_subscription(topic, partition, start, tx).await?;
        Ok(Subscription {
            topic: topic.to_string(),
            partition,
            rx,
            task,
        })
    }

    async fn start_subscription(
        &self,
        topic: &str,
        partition: i32,
        start: StartOffset,
        tx: mpsc::Sender<Result<Vec<ConsumerRecord>>>,
    ) -> Result<JoinHandle<()>> {
        let (offset, send, mut recv) = self.open_subscription(topic, partition, start).await?;
        let topic = topic.to_string();
        Ok(tokio::spawn(async move {
            // Keep our sending side open: finishing it would end the subscription.
            let _send = send;
            let mut from = offset.max(0);
            loop {
                let item = match read_push(&mut recv).await {
                    Some(push) => push.and_then(|p| {
                        decode_records(&topic, partition, &p.records, from).inspect(|records| {
                            if let Some(last) = records.last() {
                                from = last.offset + 1;
                            }
                        })
                    }),
                    None => return,
                };
                let failed = item.is_err();
                if matches!(&item, Ok(r) if r.is_empty()) {
                    continue;
                }
                // Waits while the application is behind: this is the back-pressure.
                if tx.send(item).await.is_err() || failed {
                    return;
                }
            }
        }))
    }

    /// Opens a subscription stream and sends SUBSCRIBE: returns the offset asked for
    /// (-1 latest, -2 earliest) and the stream's two sides.
    pub(crate) async fn open_subscription(
        &self,
        topic: &str,
        partition: i32,
        start: StartOffset,
    ) -> Result<(i64, SendStream, RecvStream)> {
        let offset = match start {
            StartOffset::Timestamp(_) => self
                .list_offset(topic, partition, start)
                .await?
                .unwrap_or(quiver_protocol::LATEST),
            StartOffset::Earliest => quiver_protocol::EARLIEST,
            StartOffset::Latest => quiver_protocol::LATEST,
            StartOffset::Offset(o) => o,
        };
        let (mut send, recv) = self.open_stream_for(topic, partition).await?;
        let request_id = self.conn.next_request_id();
        let mut frame = Request::Subscribe(SubscribeRequest {
            topic: topic.to_string(),
            partition,
            offset,
            max_bytes: MAX_SUBSCRIBE_PUSH_BYTES as u32,
        })
        .encode(request_id);
        send.write_all_chunks(&mut frame)
            .await
            .map_err(|_| Error::StreamClosed)?;
        Ok((offset, send, recv))
    }
}

/// The next push of a subscription stream: `None` when the broker ended it cleanly; an
/// ERROR frame becomes [`Error::Broker`] (and ends the subscription).
pub(crate) async fn read_push(recv: &mut RecvStream) -> Option<Result<PartitionRecords>> {
    let (header, body) = match read_frame(recv).await {
        Ok(Some(frame)) => frame,
        Ok(None) => return None,
        Err(e) => return Some(Err(e)),
    };
    Some(match Response::decode(&header, body) {
        Ok(Response::Records(p)) => Ok(p),
        Ok(Response::Error(e)) => Err(Error::broker(e.code, e.message)),
        Ok(other) => Err(Error::UnexpectedResponse {
            to: quiver_protocol::FrameType::Subscribe,
            got: other.frame_type(),
        }),
        Err(e) => Err(e.into()),
    })
}

/// How a [`Consumer`] starts and where it keeps its offsets.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// Group whose committed offsets are the starting point (and where `commit` writes).
    pub group: Option<String>,
    /// Where to start a partition with no committed offset (Kafka's
    /// `auto.offset.reset`).
    pub start: StartOffset,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        ConsumerConfig {
            group: None,
            start: StartOffset::Latest,
        }
    }
}

/// Reads explicitly assigned partitions, each on its own subscription stream.
pub struct Consumer {
    client: Client,
    config: ConsumerConfig,
    rx: mpsc::Receiver<Result<Vec<ConsumerRecord>>>,
    tx: mpsc::Sender<Result<Vec<ConsumerRecord>>>,
    tasks: Vec<JoinHandle<()>>,
    /// Next offset to read per partition (what `commit` stores).
    positions: HashMap<(String, i32), i64>,
}

impl Drop for Consumer {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Client {
    pub fn consumer(&self, config: ConsumerConfig) -> Consumer {
        let (tx, rx) = mpsc::channel(SUBSCRIPTION_BUFFER * 4);
        Consumer {
            client: self.clone(),
            config,
            rx,
            tx,
            tasks: Vec::new(),
            positions: HashMap::new(),
        }
    }
}

impl Consumer {
    /// Starts reading these partitions: from the group's committed offset if there is
    /// one, else from `config.start`.
    pub async fn assign(&mut self, partitions: &[(String, i32)]) -> Result<()> {
        let committed: HashMap<(String, i32), i64> = match &self.config.group {
            Some(group) => self
                .client
                .fetch_offsets(group, partitions)
                .await?
                .into_iter()
                .filter(|o| o.error.is_none() && o.offset >= 0)
                .map(|o| ((o.topic, o.partition), o.offset))
                .collect(),
            None => HashMap::new(),
        };
        for (topic, partition) in partitions {
            let start = match committed.get(&(topic.clone(), *partition)) {
                Some(&o) => StartOffset::Offset(o),
                None => self.config.start,
            };
            let task = self
                .client
                .start_subscription(topic, *partition, start, self.tx.clone())
                .await?;
            self.tasks.push(task);
        }
        Ok(())
    }

    /// The next records from any assigned partition; updates positions.
    pub async fn poll(&mut self) -> Result<Vec<ConsumerRecord>> {
        let records = self.rx.recv().await.ok_or(Error::Closed)??;
        for r in &records {
            self.positions
                .insert((r.topic.clone(), r.partition), r.offset + 1);
        }
        Ok(records)
    }

    /// Next offset to read for a partition, once records were polled from it.
    pub fn position(&self, topic: &str, partition: i32) -> Option<i64> {
        self.positions.get(&(topic.to_string(), partition)).copied()
    }

    /// Commits the positions of every partition polled so far to the group.
    pub async fn commit(&self) -> Result<()> {
        let Some(group) = &self.config.group else {
            return Err(Error::InvalidArgument(
                "commit needs a consumer group".into(),
            ));
        };
        let offsets: Vec<(String, i32, i64)> = self
            .positions
            .iter()
            .map(|((t, p), o)| (t.clone(), *p, *o))
            .collect();
        if offsets.is_empty() {
            return Ok(());
        }
        self.client.commit_offsets(group, &offsets).await
    }
}
