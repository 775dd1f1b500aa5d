//! Raw batch I/O, for callers that already hold Kafka RecordBatch v2 bytes or want them
//! undecoded (load generators, proxies, mirrors): [`BatchProducer`] is one partition's
//! pipelined PRODUCE stream, [`BatchSubscription`] one partition's pushes as the broker
//! sent them.
//!
//! Neither batches, retries, nor assigns sequence numbers: the caller's batches go out as
//! they are, without a copy (an idempotent caller writes producer id, epoch and sequence
//! into them itself). Use [`crate::Producer`] and [`crate::Subscription`] for records.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use quinn::{RecvStream, SendStream};
use quiver_protocol::{
    Acks, FrameType, PartitionRecords, ProduceRequest, ProduceResponse, Request, Response,
};
use tokio::sync::oneshot;

use crate::client::{Client, StartOffset};
use crate::connection::Channel;
use crate::consumer::read_push;
use crate::error::{Error, Result};

/// PRODUCE requests for one partition on a stream of its own. The broker appends a
/// stream's batches in the order they were sent and answers in that order; up to
/// `MAX_IN_FLIGHT_REQUESTS_PER_STREAM` are in flight. Cheap to clone; clones share the
/// stream.
#[derive(Clone)]
pub struct BatchProducer {
    channel: Channel,
    topic: String,
    partition: i32,
    acks: Acks,
}

/// The broker's answer to one [`BatchProducer::send`].
pub struct ProduceAck(Option<oneshot::Receiver<Result<Response>>>);

impl Future for ProduceAck {
    type Output = Result<ProduceResponse>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Some(rx) = self.0.as_mut() else {
            // acks=0: the broker does not answer.
            return Poll::Ready(Ok(ProduceResponse {
                base_offset: -1,
                last_offset: -1,
                log_start_offset: -1,
                duplicate: false,
            }));
        };
        Pin::new(rx).poll(cx).map(|answer| match answer {
            Err(_) => Err(Error::StreamClosed),
            Ok(Err(e)) => Err(e),
            Ok(Ok(Response::Produce(p))) => Ok(p),
            Ok(Ok(Response::Error(e))) => Err(Error::broker(e.code, e.message)),
            Ok(Ok(other)) => Err(Error::UnexpectedResponse {
                to: FrameType::Produce,
                got: other.frame_type(),
            }),
        })
    }
}

impl BatchProducer {
    /// Queues one PRODUCE frame whose body is `records` (one or more whole RecordBatch v2)
    /// and returns the waiter for its answer, which resolves at once with acks=0. Waits
    /// only while the stream already has `MAX_IN_FLIGHT_REQUESTS_PER_STREAM` frames
    /// queued. No timeout: wrap the [`ProduceAck`] in one if needed.
    pub async fn send(&self, records: Bytes) -> Result<ProduceAck> {
        let request = Request::Produce(ProduceRequest {
            topic: self.topic.clone(),
            partition: self.partition,
            acks: self.acks,
            records: vec![records],
        });
        let want_reply = self.acks != Acks::None;
        Ok(ProduceAck(self.channel.send(&request, want_reply).await?))
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    pub fn partition(&self) -> i32 {
        self.partition
    }
}

/// One partition's subscription, pushes undecoded: whole batches as the broker stored
/// them (the first may start before the offset asked for) and the high watermark.
/// Dropping it ends the subscription at the broker.
pub struct BatchSubscription {
    pub topic: String,
    pub partition: i32,
    /// The offset asked for: -1 latest, -2 earliest, else an offset.
    pub start_offset: i64,
    /// Kept open: finishing our side would end the subscription.
    _send: SendStream,
    recv: RecvStream,
    ended: bool,
}

impl BatchSubscription {
    /// The next push; `None` once the subscription has ended (after an error, or when
    /// the broker closed the stream). Not reading is the back-pressure: the stream's
    /// flow-control window fills and the broker's next push for this partition waits.
    pub async fn next(&mut self) -> Option<Result<PartitionRecords>> {
        if self.ended {
            return None;
        }
        let push = read_push(&mut self.recv).await;
        if !matches!(push, Some(Ok(_))) {
            self.ended = true;
        }
        push
    }
}

impl Client {
    /// A PRODUCE stream of its own for one partition, for pre-built batches.
    pub async fn batch_producer(
        &self,
        topic: &str,
        partition: i32,
        acks: Acks,
    ) -> Result<BatchProducer> {
        Ok(BatchProducer {
            channel: self.channel_for(topic, partition).await?,
            topic: topic.to_string(),
            partition,
            acks,
        })
    }

    /// Subscribes to one partition from `start`, handing over the pushes undecoded.
    pub async fn subscribe_batches(
        &self,
        topic: &str,
        partition: i32,
        start: StartOffset,
    ) -> Result<BatchSubscription> {
        let (start_offset, send, recv) = self.open_subscription(topic, partition, start).await?;
        Ok(BatchSubscription {
            topic: topic.to_string(),
            partition,
            start_offset,
            _send: send,
            recv,
            ended: false,
        })
    }
}
