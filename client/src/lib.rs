//! `quiver-client`: an async (tokio) client for Quiver's native QUIC protocol, `quiver/1`.
//!
//! ```no_run
//! # async fn demo() -> quiver_client::Result<()> {
//! use quiver_client::{Client, ClientConfig, ProducerConfig, ProducerRecord, StartOffset};
//! let client = Client::connect(
//!     ClientConfig::new("127.0.0.1:9093").ca_file("quiver-data/tls/cert.pem"),
//! ).await?;
//! client.create_topic("orders", 3, &[]).await?;
//! let producer = client.producer(ProducerConfig::default()).await?;
//! let delivery = producer.send(ProducerRecord::new("orders", "hello").key("k1")).await?;
//! let metadata = delivery.await?;
//! let mut sub = client.subscribe("orders", metadata.partition, StartOffset::Earliest).await?;
//! let records = sub.next().await.expect("stream open")?;
//! # Ok(()) }
//! ```
//!
//! Pieces: [`Client`] (connection, admin, offsets, fetch), [`Producer`] (batching,
//! Kafka-compatible key partitioning, acks, idempotent retries), [`Subscription`] (the
//! broker pushes new batches of one partition) and [`Consumer`] (explicit assignment,
//! optional group offsets). Every error is an [`Error`]; broker errors carry the same
//! codes as Kafka. For pre-built RecordBatch bytes (load generators, proxies):
//! [`BatchProducer`] and [`BatchSubscription`] send and receive batches undecoded.

mod batches;
mod client;
mod connection;
mod consumer;
mod error;
mod producer;
pub mod records;
mod tls;

pub use batches::{BatchProducer, BatchSubscription, ProduceAck};
pub use client::{Client, StartOffset};
pub use connection::{dev_ca_file, ClientConfig, DEFAULT_LOCAL_ADDRESS};
pub use consumer::{Consumer, ConsumerConfig, Subscription};
pub use error::{Error, Result};
pub use producer::{Delivery, Producer, ProducerConfig, RecordMetadata};
pub use quiver_protocol::{
    Acks, CommittedOffset, ErrorCode, GroupDescription, GroupListing, GroupMember,
    PartitionRecords, PartitionState, ProduceResponse, TopicDescription, TopicInfo,
};
pub use records::{ConsumerRecord, ProducerRecord};
