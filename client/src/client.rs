//! [`Client`]: one connection to a broker; admin, offsets, fetch, and the factories for
//! producers, subscriptions and consumers.

use std::sync::Arc;
use std::time::Duration;

use quiver_protocol::{
    CommitOffsetsRequest, CommittedOffset, CreateTopicRequest, FetchOffsetsRequest, FetchPartition,
    FetchRequest, FetchResponse, FrameType, GroupDescription, GroupListing, ListOffsetsRequest,
    OffsetCommit, OffsetQuery, Request, Response, TopicDescription, TopicInfo, TopicPartition,
    EARLIEST, LATEST,
};
use tokio::sync::Mutex;

use crate::connection::{Channel, ClientConfig, Connection};
use crate::error::{Error, Result};

/// Where to start reading a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartOffset {
    Earliest,
    /// Only records produced from now on.
    Latest,
    Offset(i64),
    /// The first record at or after this time (ms since the epoch); Latest if none.
    Timestamp(i64),
}

/// A connection to one broker. Cheap to clone; clones share the connection.
#[derive(Clone)]
pub struct Client {
    pub(crate) conn: Arc<Connection>,
    control: Arc<Mutex<Option<Channel>>>,
}

fn unexpected(to: FrameType, got: &Response) -> Error {
    Error::UnexpectedResponse {
        to,
        got: got.frame_type(),
    }
}

impl Client {
    /// Connects (QUIC handshake with TLS 1.3 verification) to the broker.
    pub async fn connect(config: ClientConfig) -> Result<Client> {
        Ok(Client {
            conn: Connection::connect(config).await?,
            control: Arc::new(Mutex::new(None)),
        })
    }

    /// Closes the connection; outstanding requests fail.
    pub fn close(&self) {
        self.conn.close();
    }

    /// Moves the connection to another local UDP socket, as when the client's network
    /// changes (QUIC connection migration). Open streams and subscriptions carry on: the
    /// broker follows the connection by its connection ID, not the client's address.
    pub fn rebind(&self, socket: std::net::UdpSocket) -> std::io::Result<()> {
        self.conn.rebind(socket)
    }

    /// The control channel (admin and offsets), reopened if its stream closed.
    async fn control(&self) -> Result<Channel> {
        let mut slot = self.control.lock().await;
        if let Some(c) = slot.as_ref() {
            if !c.is_closed() {
                return Ok(c.clone());
            }
        }
        let c = self.conn.channel().await?;
        *slot = Some(c.clone());
        Ok(c)
    }

    pub(crate) async fn request(&self, request: &Request) -> Result<Response> {
        self.control().await?.request(request).await
    }

    /// Creates a topic; `partitions` -1 for the broker default. Configs are Kafka topic
    /// configs (`retention.ms`, `cleanup.policy`, ...).
    pub async fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        configs: &[(&str, &str)],
    ) -> Result<TopicInfo> {
        let request = Request::CreateTopic(CreateTopicRequest {
            name: name.to_string(),
            partitions,
            configs: configs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        });
        match self.request(&request).await? {
            Response::CreateTopic(t) => Ok(t),
            other => Err(unexpected(FrameType::CreateTopic, &other)),
        }
    }

    pub async fn delete_topic(&self, name: &str) -> Result<()> {
        match self
            .request(&Request::DeleteTopic {
                name: name.to_string(),
            })
            .await?
        {
            Response::DeleteTopic => Ok(()),
            other => Err(unexpected(FrameType::DeleteTopic, &other)),
        }
    }

    pub async fn list_topics(&self) -> Result<Vec<TopicInfo>> {
        match self.request(&Request::ListTopics).await? {
            Response::ListTopics(t) => Ok(t),
            other => Err(unexpected(FrameType::ListTopics, &other)),
        }
    }

    /// The topic, its effective configs, and each partition's start offset and high
    /// watermark.
    pub async fn describe_topic(&self, name: &str) -> Result<TopicDescription> {
        match self
            .request(&Request::DescribeTopic {
                name: name.to_string(),
            })
            .await?
        {
            Response::DescribeTopic(d) => Ok(d),
            other => Err(unexpected(FrameType::DescribeTopic, &other)),
        }
    }

    /// Resolves a start position to an offset: `None` when a timestamp is newer than
    /// every record.
    pub async fn list_offset(
        &self,
        topic: &str,
        partition: i32,
        at: StartOffset,
    ) -> Result<Option<i64>> {
        let timestamp = match at {
            StartOffset::Earliest => EARLIEST,
            StartOffset::Latest => LATEST,
            StartOffset::Offset(o) => return Ok(Some(o)),
            StartOffset::Timestamp(t) => t,
        };
        let request = Request::ListOffsets(ListOffsetsRequest {
            partitions: vec![OffsetQuery {
                topic: topic.to_string(),
                partition,
                timestamp,
            }],
        });
        match self.request(&request).await? {
            Response::ListOffsets(mut l) => {
                let p = l.partitions.pop().ok_or(Error::StreamClosed)?;
                if !p.error.is_none() {
                    return Err(Error::broker(
                        p.error,
                        format!("list offsets {topic}-{partition}"),
                    ));
                }
                Ok((p.offset >= 0).then_some(p.offset))
            }
            other => Err(unexpected(FrameType::ListOffsets, &other)),
        }
    }

    /// One long-polling fetch on a stream of its own: returns when `min_bytes` are
    /// available or `max_wait` has passed. Per-partition errors are in the result.
    pub async fn fetch(
        &self,
        partitions: Vec<FetchPartition>,
        min_bytes: u32,
        max_bytes: u32,
        max_wait: Duration,
    ) -> Result<FetchResponse> {
        let request = Request::Fetch(FetchRequest {
            max_wait_ms: max_wait.as_millis().min(u32::MAX as u128) as u32,
            min_bytes,
            max_bytes,
            partitions,
        });
        match self.conn.request_on_new_stream(&request, max_wait).await? {
            Response::Fetch(f) => Ok(f),
            Response::Error(e) => Err(Error::broker(e.code, e.message)),
            other => Err(unexpected(FrameType::Fetch, &other)),
        }
    }

    /// Commits offsets for `group` (standalone commits: no group membership needed).
    /// `offsets` are (topic, partition, next offset to read).
    pub async fn commit_offsets(&self, group: &str, offsets: &[(String, i32, i64)]) -> Result<()> {
        let request = Request::CommitOffsets(CommitOffsetsRequest {
            group: group.to_string(),
            offsets: offsets
                .iter()
                .map(|(topic, partition, offset)| OffsetCommit {
                    topic: topic.clone(),
                    partition: *partition,
                    offset: *offset,
                    metadata: String::new(),
                })
                .collect(),
        });
        match self.request(&request).await? {
            Response::CommitOffsets(results) => {
                match results.into_iter().find(|r| !r.error.is_none()) {
                    Some(r) => Err(Error::broker(
                        r.error,
                        format!("commit {}-{} for group {group}", r.topic, r.partition),
                    )),
                    None => Ok(()),
                }
            }
            other => Err(unexpected(FrameType::CommitOffsets, &other)),
        }
    }

    /// Committed offsets of `group` for the given partitions (all when empty); offset -1
    /// means none.
    pub async fn fetch_offsets(
        &self,
        group: &str,
        partitions: &[(String, i32)],
    ) -> Result<Vec<CommittedOffset>> {
        let request = Request::FetchOffsets(FetchOffsetsRequest {
            group: group.to_string(),
            partitions: partitions
                .iter()
                .map(|(topic, partition)| TopicPartition {
                    topic: topic.clone(),
                    partition: *partition,
                })
                .collect(),
        });
        match self.request(&request).await? {
            Response::FetchOffsets(o) => Ok(o),
            other => Err(unexpected(FrameType::FetchOffsets, &other)),
        }
    }

    /// Every consumer group the broker knows (with members, or with committed offsets).
    pub async fn list_groups(&self) -> Result<Vec<GroupListing>> {
        match self.request(&Request::ListGroups).await? {
            Response::ListGroups(g) => Ok(g),
            other => Err(unexpected(FrameType::ListGroups, &other)),
        }
    }

    /// A group's state and members; combine with [`Client::fetch_offsets`] and
    /// [`Client::list_offset`] for committed offsets and lag.
    pub async fn describe_group(&self, group: &str) -> Result<GroupDescription> {
        match self
            .request(&Request::DescribeGroup {
                group: group.to_string(),
            })
            .await?
        {
            Response::DescribeGroup(d) => Ok(d),
            other => Err(unexpected(FrameType::DescribeGroup, &other)),
        }
    }

    /// A new producer id and epoch (idempotent producers), or a bumped epoch for a
    /// known pair.
    pub(crate) async fn init_producer_id(&self, id: i64, epoch: i16) -> Result<(i64, i16)> {
        let request = Request::InitProducerId(quiver_protocol::InitProducerIdRequest {
            producer_id: id,
            producer_epoch: epoch,
        });
        match self.request(&request).await? {
            Response::InitProducerId(r) => Ok((r.producer_id, r.producer_epoch)),
            other => Err(unexpected(FrameType::InitProducerId, &other)),
        }
    }

    /// A raw bidirectional stream, for protocol tests that must send arbitrary bytes.
    #[doc(hidden)]
    pub async fn open_raw_stream(&self) -> Result<(quinn::SendStream, quinn::RecvStream)> {
        self.conn.open_stream().await
    }

    /// The current path MTU of the connection (diagnostics: on loopback MTU discovery
    /// should climb far above the 1,200-byte start).
    #[doc(hidden)]
    pub async fn path_mtu(&self) -> Option<u16> {
        self.conn.quic().await.ok().map(|c| {
            tracing::debug!(stats = ?c.stats().path, "path");
            c.stats().path.current_mtu
        })
    }

    /// quinn's path statistics (RTT, congestion window, losses, MTU), for diagnostics.
    #[doc(hidden)]
    pub async fn path_stats(&self) -> Option<String> {
        self.conn
            .quic()
            .await
            .ok()
            .map(|c| format!("{:?}", c.stats().path))
    }

    /// Partition count of a topic.
    pub async fn partition_count(&self, topic: &str) -> Result<i32> {
        Ok(self.describe_topic(topic).await?.info.partitions)
    }
}
