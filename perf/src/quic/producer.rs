//! The QUIC link of a producer (`crate::kafka::producer` is the sender): one connection per
//! producer and a long-lived PRODUCE stream per partition. A request's batches go out as one
//! frame each on their partitions' streams; one task per request waits for all of their
//! acknowledgements, as a Kafka ProduceResponse answers all partitions at once.

use anyhow::{anyhow, Context, Result};
use futures::future::join_all;
use quiver_client::{Acks, BatchProducer, Client};

use super::QuicTarget;
use crate::kafka::producer::{
    Acknowledger, ProduceLink, ProducerSpec, RequestBatches, RequestMeta,
};

pub struct QuicLink {
    target: QuicTarget,
    id: u32,
    client: Client,
    /// Index: partition.
    streams: Vec<BatchProducer>,
    acknowledger: Acknowledger,
    acks: Acks,
}

impl QuicLink {
    pub fn open(
        target: &QuicTarget,
        spec: &ProducerSpec,
        acknowledger: Acknowledger,
    ) -> Result<Self> {
        let acks = Acks::from_i8(spec.acks as i8)
            .ok_or_else(|| anyhow!("acks {} (0, 1 or -1)", spec.acks))?;
        let topic = &spec.topic.name;
        let (client, streams) = target.runtime.block_on(async {
            let client = target.connect().await?;
            let mut streams = Vec::with_capacity(spec.topic.leaders.len());
            for partition in 0..spec.topic.leaders.len() as i32 {
                streams.push(
                    client
                        .batch_producer(topic, partition, acks)
                        .await
                        .with_context(|| format!("opening the stream of {topic}/{partition}"))?,
                );
            }
            anyhow::Ok((client, streams))
        })?;
        Ok(QuicLink {
            target: target.clone(),
            id: spec.id,
            client,
            streams,
            acknowledger,
            acks,
        })
    }
}

impl ProduceLink for QuicLink {
    fn write(&mut self, batches: RequestBatches, meta: RequestMeta) -> Result<()> {
        let streams = &self.streams;
        let pending = self.target.runtime.block_on(async {
            let mut pending = Vec::with_capacity(batches.len());
            for (partition, records) in batches {
                let stream = streams
                    .get(partition as usize)
                    .with_context(|| format!("no stream for partition {partition}"))?;
                pending.push(
                    stream
                        .send(records)
                        .await
                        .with_context(|| format!("producing to partition {partition}"))?,
                );
            }
            anyhow::Ok(pending)
        })?;
        if self.acks == Acks::None {
            return Ok(());
        }
        let acknowledger = self.acknowledger.clone();
        self.target.runtime.spawn(async move {
            let answers = join_all(pending).await;
            let acked_ns = acknowledger.clock.now_ns();
            let mut transport_failed = false;
            for answer in answers {
                if let Err(error) = answer {
                    transport_failed |= error.code().is_none();
                    acknowledger.stats.error(format!("QUIC produce: {error}"));
                }
            }
            if transport_failed {
                // As over Kafka: a lost connection is not an acknowledgement.
                acknowledger.in_flight.release();
            } else {
                // Broker errors were reported; the request is answered either way.
                acknowledger.acknowledged(&meta, acked_ns);
            }
        });
        Ok(())
    }

    fn close(&mut self) {
        self.streams.clear();
        let who = format!("producer {}", self.id);
        self.target
            .runtime
            .block_on(self.target.close(&self.client, &who));
    }
}
