//! [`Client`]: one connection to a broker; admin, offsets, fetch, and the factories for
//! producers, subscriptions and consumers.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use quiver_protocol::{
    CommitOffsetsRequest, CommittedOffset, CreateTopicRequest, ErrorCode, FetchOffsetsRequest,
    FetchPartition, FetchRequest, FetchResponse, FrameType, GroupDescription, GroupListing,
    ListOffsetsRequest, OffsetCommit, OffsetQuery, Request, Response, TopicDescription, TopicInfo,
    TopicPartition, EARLIEST, LATEST,
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
///
/// Shard-aware: a partition's PRODUCE stream and subscription go on a connection served
/// by the core of the broker that owns the partition (learned with ROUTE, cached per
/// topic), so the broker answers without handing the request between its cores. That is
/// at most one extra connection per core of the broker; admin, offsets and fetches use
/// the first connection.
#[derive(Clone)]
pub struct Client {
    pub(crate) conn: Arc<Connection>,
    control: Arc<Mutex<Option<Channel>>>,
    routes: Arc<std::sync::Mutex<Routes>>,
}

/// What the broker said about which shard owns which partition.
#[derive(Default)]
struct Routes {
    /// The broker answered ROUTE with an error for the request as a whole (a broker
    /// from before ROUTE): everything uses the first connection.
    unsupported: bool,
    shard_count: u16,
    /// The shard serving the first connection.
    connection_shard: u16,
    /// Index: partition; value: owning shard.
    topics: HashMap<String, Arc<[u16]>>,
}

/// Where a partition's streams should go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PartitionRoute {
    shard: u16,
    shard_count: u16,
    connection_shard: u16,
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
            routes: Arc::new(std::sync::Mutex::new(Routes::default())),
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

    fn cached_route(&self, topic: &str, partition: i32) -> Option<Option<PartitionRoute>> {
        let routes = self.routes.lock().unwrap_or_else(|e| e.into_inner());
        if routes.unsupported {
            return Some(None);
        }
        let shards = routes.topics.get(topic)?;
        let shard = *shards.get(usize::try_from(partition).ok()?)?;
        Some(Some(PartitionRoute {
            shard,
            shard_count: routes.shard_count,
            connection_shard: routes.connection_shard,
        }))
    }

    /// The shard that owns `partition` of `topic`; `None` when unknown (no such topic
    /// yet, or an old broker), which sends its streams on the first connection.
    async fn route(&self, topic: &str, partition: i32) -> Option<PartitionRoute> {
        if let Some(known) = self.cached_route(topic, partition) {
            return known;
        }
        let answer = self
            .request(&Request::Route {
                topics: vec![topic.to_string()],
            })
            .await;
        let mut routes = self.routes.lock().unwrap_or_else(|e| e.into_inner());
        match answer {
            Ok(Response::Route(r)) => {
                routes.shard_count = r.shard_count;
                routes.connection_shard = r.connection_shard;
                for t in r.topics {
                    if t.error.is_none() {
                        routes.topics.insert(t.topic, t.shards.into());
                    }
                }
            }
            Err(Error::Broker { code, .. }) if code == ErrorCode::INVALID_REQUEST => {
                routes.unsupported = true
            }
            Ok(_) | Err(_) => {}
        }
        drop(routes);
        self.cached_route(topic, partition).flatten()
    }

    /// A new stream for `partition` of `topic`, on the connection its owning shard serves.
    pub(crate) async fn open_stream_for(
        &self,
        topic: &str,
        partition: i32,
    ) -> Result<(quinn::SendStream, quinn::RecvStream)> {
        match self.route(topic, partition).await {
            Some(r) if r.shard_count > 1 && r.shard != r.connection_shard => {
                self.conn.open_stream_on(r.shard, r.shard_count).await
            }
            _ => self.conn.open_stream().await,
        }
    }

    /// A new request channel for `partition` of `topic` (see [`Client::open_stream_for`]).
    pub(crate) async fn channel_for(&self, topic: &str, partition: i32) -> Result<Channel> {
        let (send, recv) = self.open_stream_for(topic, partition).await?;
        Ok(self.conn.channel_over(send, recv))
    }

    /// How many QUIC connections the client has open to the broker (the first plus the
    /// ones steered to the shards that own its partitions).
    pub async fn connection_count(&self) -> usize {
        self.conn.all_quic().await.len()
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
        let all = self.conn.all_quic().await;
        if all.is_empty() {
            return None;
        }
        Some(
            all.iter()
                .map(|c| format!("{:?}", c.stats().path))
                .collect::<Vec<_>>()
                .join("; "),
        )
    }

    /// The client's UDP socket, for a caller that waits on it itself: a load generator
    /// that sleeps in `ppoll` between sends, as its Kafka-TCP counterpart does on its TCP
    /// socket, and runs the client's (current-thread) runtime when the socket is readable.
    /// Only for waiting; reading or writing it would take datagrams from quinn.
    #[doc(hidden)]
    pub fn udp_fd(&self) -> std::os::fd::RawFd {
        self.conn.udp_fd()
    }

    /// UDP datagrams sent so far over every connection of this client (quinn's count),
    /// for tests and diagnostics.
    #[doc(hidden)]
    pub async fn datagrams_sent(&self) -> u64 {
        let all = self.conn.all_quic().await;
        all.iter().map(|c| c.stats().udp_tx.datagrams).sum()
    }

    /// Partition count of a topic.
    pub async fn partition_count(&self, topic: &str) -> Result<i32> {
        Ok(self.describe_topic(topic).await?.info.partitions)
    }
}
