//! One test body, both protocols: the same scenarios run over the Kafka TCP listener and
//! over QUIC (`quiver/1`, TLS verified) against one real `quiver serve`, and data written
//! through one front end is read through the other. The Kafka side is a minimal client
//! built from `kafka-protocol` messages, enough for these scenarios.

mod common;

use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::{
    ApiKey, FetchRequest, FetchResponse, ListOffsetsRequest, ListOffsetsResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use quiver_client::records::{decode_records, encode_batch, ProducerIdentity};
use quiver_client::{Client, ProducerRecord, StartOffset};

use common::{Broker, KafkaConn};

/// A front end as the scenarios see it.
enum Front {
    Kafka(KafkaConn),
    Quic(Client),
}

impl Front {
    fn name(&self) -> &'static str {
        match self {
            Front::Kafka(_) => "kafka",
            Front::Quic(_) => "quic",
        }
    }

    /// Error code (0 = created).
    async fn create_topic(&mut self, name: &str, partitions: i32) -> i16 {
        match self {
            Front::Kafka(k) => k.create_topic(name, partitions).await,
            Front::Quic(c) => match c.create_topic(name, partitions, &[]).await {
                Ok(_) => 0,
                Err(e) => e.code().expect("a broker error").0,
            },
        }
    }

    /// Produces one batch with acks=all: Ok(base offset) or Err(error code).
    async fn produce(
        &mut self,
        topic: &str,
        partition: i32,
        values: &[String],
    ) -> Result<i64, i16> {
        let records: Vec<ProducerRecord> = values
            .iter()
            .map(|v| ProducerRecord::new(topic, v.clone()).partition(partition))
            .collect();
        let batch = encode_batch(&records, ProducerIdentity::NONE).unwrap();
        match self {
            Front::Kafka(k) => k.produce(topic, partition, batch).await,
            Front::Quic(c) => {
                // The raw batch path: the same bytes the Kafka client sends.
                let (mut send, mut recv) = c.open_raw_stream().await.unwrap();
                let frame = quiver_protocol::Request::Produce(quiver_protocol::ProduceRequest {
                    topic: topic.to_string(),
                    partition,
                    acks: quiver_protocol::Acks::All,
                    records: vec![batch],
                })
                .encode(1);
                for chunk in frame {
                    send.write_all(&chunk).await.unwrap();
                }
                send.finish().unwrap();
                let mut answer = Vec::new();
                while let Some(chunk) = recv.read_chunk(1 << 16, true).await.unwrap() {
                    answer.extend_from_slice(&chunk.bytes);
                }
                let mut buf = Bytes::from(answer);
                let f = quiver_protocol::split_frame(&mut buf, 1 << 20)
                    .unwrap()
                    .unwrap();
                match quiver_protocol::Response::decode(&f.header, f.body).unwrap() {
                    quiver_protocol::Response::Produce(p) => Ok(p.base_offset),
                    quiver_protocol::Response::Error(e) => Err(e.code.0),
                    other => panic!("{other:?}"),
                }
            }
        }
    }

    /// Every record from `offset` up to the high watermark: (offset, value).
    async fn read_all(&mut self, topic: &str, partition: i32, offset: i64) -> Vec<(i64, String)> {
        let mut out = Vec::new();
        let mut next = offset;
        loop {
            let (chunks, high_watermark) = match self {
                Front::Kafka(k) => {
                    let req = FetchRequest::default()
                        .with_replica_id(kafka_protocol::messages::BrokerId(-1))
                        .with_max_wait_ms(100)
                        .with_min_bytes(1)
                        .with_max_bytes(1 << 20)
                        .with_session_epoch(-1)
                        .with_topics(vec![FetchTopic::default()
                            .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
                            .with_partitions(vec![FetchPartition::default()
                                .with_partition(partition)
                                .with_fetch_offset(next)
                                .with_partition_max_bytes(1 << 20)])]);
                    let resp: FetchResponse = k.call(ApiKey::Fetch, 11, &req).await;
                    let p = &resp.responses[0].partitions[0];
                    assert_eq!(p.error_code, 0);
                    (
                        p.records
                            .clone()
                            .into_iter()
                            .filter(|r| !r.is_empty())
                            .collect::<Vec<_>>(),
                        p.high_watermark,
                    )
                }
                Front::Quic(c) => {
                    let resp = c
                        .fetch(
                            vec![quiver_protocol::FetchPartition {
                                topic: topic.to_string(),
                                partition,
                                offset: next,
                                max_bytes: 1 << 20,
                            }],
                            1,
                            1 << 20,
                            Duration::from_millis(100),
                        )
                        .await
                        .unwrap();
                    let p = &resp.partitions[0];
                    assert!(p.error.is_none(), "{:?}", p.error);
                    (p.records.clone(), p.high_watermark)
                }
            };
            for r in decode_records(topic, partition, &chunks, next).unwrap() {
                out.push((
                    r.offset,
                    String::from_utf8(r.value.unwrap().to_vec()).unwrap(),
                ));
            }
            if let Some((last, _)) = out.last() {
                next = last + 1;
            }
            if next >= high_watermark {
                return out;
            }
        }
    }

    async fn latest(&mut self, topic: &str, partition: i32) -> i64 {
        match self {
            Front::Kafka(k) => {
                let req = ListOffsetsRequest::default()
                    .with_replica_id(kafka_protocol::messages::BrokerId(-1))
                    .with_topics(vec![ListOffsetsTopic::default()
                        .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                        .with_partitions(vec![ListOffsetsPartition::default()
                            .with_partition_index(partition)
                            .with_timestamp(-1)])]);
                let resp: ListOffsetsResponse = k.call(ApiKey::ListOffsets, 5, &req).await;
                resp.topics[0].partitions[0].offset
            }
            Front::Quic(c) => c
                .list_offset(topic, partition, StartOffset::Latest)
                .await
                .unwrap()
                .unwrap(),
        }
    }
}

/// The scenario body, run once per front end.
async fn round_trip(front: &mut Front) {
    let topic = format!("rt-{}", front.name());
    assert_eq!(front.create_topic(&topic, 2).await, 0);
    assert_eq!(
        front.create_topic(&topic, 2).await,
        36,
        "TOPIC_ALREADY_EXISTS"
    );
    for partition in 0..2 {
        let mut expected = Vec::new();
        for round in 0..5 {
            let values: Vec<String> = (0..20)
                .map(|i| format!("p{partition}-r{round}-{i}"))
                .collect();
            let base = front.produce(&topic, partition, &values).await.unwrap();
            assert_eq!(base, expected.len() as i64, "dense offsets");
            expected.extend(values);
        }
        assert_eq!(front.latest(&topic, partition).await, 100);
        let got = front.read_all(&topic, partition, 0).await;
        assert_eq!(got.len(), 100);
        for (i, (offset, value)) in got.iter().enumerate() {
            assert_eq!(*offset, i as i64);
            assert_eq!(value, &expected[i]);
        }
        // Reading from the middle starts at the exact offset, not the batch start.
        let tail = front.read_all(&topic, partition, 55).await;
        assert_eq!(tail.first().unwrap().0, 55);
    }
    // The same error codes on both protocols.
    assert_eq!(front.produce(&topic, 7, &["x".into()]).await, Err(3));
    assert_eq!(
        front.produce("no-such-topic", 0, &["x".into()]).await,
        Err(3)
    );
    assert_eq!(front.create_topic("bad name!", 1).await, 17);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_scenarios_over_kafka_and_quic() {
    let broker = Broker::start("same");
    let mut fronts = vec![
        Front::Kafka(broker.kafka().await),
        Front::Quic(broker.quic().await),
    ];
    for front in &mut fronts {
        round_trip(front).await;
    }
    // Cross-protocol: what one front end wrote, the other reads identically.
    let (kafka_view, quic_view) = {
        let [a, b] = &mut fronts[..] else {
            unreachable!()
        };
        (
            a.read_all("rt-quic", 1, 0).await,
            b.read_all("rt-kafka", 1, 0).await,
        )
    };
    let quic_own = fronts[1].read_all("rt-quic", 1, 0).await;
    let kafka_own = fronts[0].read_all("rt-kafka", 1, 0).await;
    assert_eq!(kafka_view, quic_own);
    assert_eq!(quic_view, kafka_own);
}
