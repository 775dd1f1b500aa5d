//! Incremental fetch sessions (KIP-227) against a real `quiver serve`, over its Kafka
//! listener, request by request: a session is opened by a full fetch, follow-up fetches
//! name only what changed and are answered with only the partitions that have news, and
//! the session rules (epochs, unknown ids, closing) give Kafka's error codes.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic, ForgottenTopic};
use kafka_protocol::messages::{ApiKey, BrokerId, FetchRequest, FetchResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use quiver_client::records::{encode_batch, ProducerIdentity};
use quiver_client::ProducerRecord;

use common::{Broker, KafkaConn};

const FETCH_SESSION_ID_NOT_FOUND: i16 = 70;
const INVALID_FETCH_SESSION_EPOCH: i16 = 71;
/// The newest Fetch version that names topics (v13 moved to topic ids).
const BY_NAME: i16 = 12;

fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

fn batch(topic: &str, partition: i32, value: &str) -> Bytes {
    let record = ProducerRecord::new(topic, value.to_string()).partition(partition);
    encode_batch(&[record], ProducerIdentity::NONE).unwrap()
}

/// A fetch of `topic` in session `(id, epoch)`, naming `partitions` as (index, offset).
fn request(
    id: i32,
    epoch: i32,
    topic: &str,
    partitions: &[(i32, i64)],
    forget: &[i32],
    max_wait_ms: i32,
) -> FetchRequest {
    let mut req = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(max_wait_ms)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_session_id(id)
        .with_session_epoch(epoch);
    if !partitions.is_empty() {
        req.topics = vec![FetchTopic::default()
            .with_topic(topic_name(topic))
            .with_partitions(
                partitions
                    .iter()
                    .map(|&(p, offset)| {
                        FetchPartition::default()
                            .with_partition(p)
                            .with_fetch_offset(offset)
                            .with_partition_max_bytes(1 << 20)
                    })
                    .collect(),
            )];
    }
    if !forget.is_empty() {
        req.forgotten_topics_data = vec![ForgottenTopic::default()
            .with_topic(topic_name(topic))
            .with_partitions(forget.to_vec())];
    }
    req
}

/// What an answer named: partition -> (records bytes, high watermark, error code).
fn named(resp: &FetchResponse) -> BTreeMap<i32, (usize, i64, i16)> {
    let mut out = BTreeMap::new();
    for t in &resp.responses {
        for p in &t.partitions {
            let bytes = p.records.as_ref().map_or(0, |r| r.len());
            let previous = out.insert(p.partition_index, (bytes, p.high_watermark, p.error_code));
            assert!(previous.is_none(), "partition named twice: {resp:?}");
        }
    }
    out
}

async fn fetch(conn: &mut KafkaConn, req: &FetchRequest) -> FetchResponse {
    conn.call(ApiKey::Fetch, BY_NAME, req).await
}

#[tokio::test(flavor = "current_thread")]
async fn incremental_fetches_name_only_partitions_with_news() {
    let broker = Broker::start("fetch-sessions");
    let mut admin = broker.kafka().await;
    let topic = "sessions";
    assert_eq!(admin.create_topic(topic, 4).await, 0);
    for p in 0..4 {
        admin
            .produce(topic, p, batch(topic, p, "first"))
            .await
            .unwrap();
    }
    let mut consumer = broker.kafka().await;
    let all: Vec<(i32, i64)> = (0..4).map(|p| (p, 0)).collect();

    // A full fetch with epoch 0 opens a session and names every partition.
    let resp = fetch(&mut consumer, &request(0, 0, topic, &all, &[], 0)).await;
    assert_eq!(resp.error_code, 0);
    let id = resp.session_id;
    assert!(id > 0, "no session was created: {resp:?}");
    let got = named(&resp);
    assert_eq!(got.keys().copied().collect::<Vec<_>>(), vec![0, 1, 2, 3]);
    assert!(got
        .values()
        .all(|&(bytes, hw, err)| bytes > 0 && hw == 1 && err == 0));

    // The consumer moves every offset past its record: nothing is new, nothing named.
    let next: Vec<(i32, i64)> = (0..4).map(|p| (p, 1)).collect();
    let resp = fetch(&mut consumer, &request(id, 1, topic, &next, &[], 0)).await;
    assert_eq!((resp.error_code, resp.session_id), (0, id));
    assert!(named(&resp).is_empty(), "{resp:?}");

    // A record on partition 2: a fetch naming no partition gets exactly that one.
    admin
        .produce(topic, 2, batch(topic, 2, "second"))
        .await
        .unwrap();
    let resp = fetch(&mut consumer, &request(id, 2, topic, &[], &[], 0)).await;
    let got = named(&resp);
    assert_eq!(got.keys().copied().collect::<Vec<_>>(), vec![2]);
    assert!(got[&2].0 > 0 && got[&2].1 == 2);

    // Long polling over the whole session: the fetch names only partition 2's new offset,
    // and wakes for a record on partition 3, written by another connection meanwhile.
    let producer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        admin
            .produce(topic, 3, batch(topic, 3, "third"))
            .await
            .unwrap();
        admin
    });
    let started = Instant::now();
    let resp = fetch(
        &mut consumer,
        &request(id, 3, topic, &[(2, 2)], &[], 10_000),
    )
    .await;
    let waited = started.elapsed();
    let mut admin = producer.await.unwrap();
    let got = named(&resp);
    assert_eq!(got.keys().copied().collect::<Vec<_>>(), vec![3], "{resp:?}");
    assert_eq!(got[&3].1, 2);
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_secs(5),
        "the long poll returned after {waited:?}"
    );

    // Partition 0 leaves the session: its new records are no longer named.
    let resp = fetch(&mut consumer, &request(id, 4, topic, &[(3, 2)], &[0], 0)).await;
    assert!(named(&resp).is_empty(), "{resp:?}");
    admin
        .produce(topic, 0, batch(topic, 0, "fourth"))
        .await
        .unwrap();
    admin
        .produce(topic, 1, batch(topic, 1, "fifth"))
        .await
        .unwrap();
    let resp = fetch(&mut consumer, &request(id, 5, topic, &[], &[], 0)).await;
    assert_eq!(named(&resp).keys().copied().collect::<Vec<_>>(), vec![1]);

    // A stale or skipped epoch is refused and changes nothing; the right one still works.
    for wrong in [5, 7, i32::MAX] {
        let resp = fetch(&mut consumer, &request(id, wrong, topic, &[], &[], 0)).await;
        assert_eq!(resp.error_code, INVALID_FETCH_SESSION_EPOCH);
        assert!(resp.responses.is_empty());
    }
    let resp = fetch(&mut consumer, &request(id, 6, topic, &[(1, 2)], &[], 0)).await;
    assert_eq!((resp.error_code, resp.session_id), (0, id));
    assert!(named(&resp).is_empty(), "{resp:?}");

    // An id the broker never gave out.
    let resp = fetch(&mut consumer, &request(id ^ 0x4000, 1, topic, &[], &[], 0)).await;
    assert_eq!(resp.error_code, FETCH_SESSION_ID_NOT_FOUND);

    // Epoch -1 closes the session and fetches sessionless: everything named, no id.
    let resp = fetch(&mut consumer, &request(id, -1, topic, &all, &[], 0)).await;
    assert_eq!((resp.error_code, resp.session_id), (0, 0));
    assert_eq!(named(&resp).len(), 4);
    let resp = fetch(&mut consumer, &request(id, 7, topic, &[], &[], 0)).await;
    assert_eq!(resp.error_code, FETCH_SESSION_ID_NOT_FOUND);

    // Unknown partitions join a session with their error, and keep being named with it.
    let resp = fetch(
        &mut consumer,
        &request(0, 0, topic, &[(0, 0), (9, 0)], &[], 0),
    )
    .await;
    let id = resp.session_id;
    assert!(id > 0);
    assert_eq!(named(&resp)[&9].2, 3, "UNKNOWN_TOPIC_OR_PARTITION");
    let resp = fetch(&mut consumer, &request(id, 1, topic, &[(0, 2)], &[], 0)).await;
    assert_eq!(named(&resp).keys().copied().collect::<Vec<_>>(), vec![9]);
}

#[tokio::test(flavor = "current_thread")]
async fn sessions_by_topic_id_follow_the_same_rules() {
    use kafka_protocol::messages::{MetadataRequest, MetadataResponse};
    let broker = Broker::start("fetch-sessions-ids");
    let mut conn = broker.kafka().await;
    let topic = "by-id";
    assert_eq!(conn.create_topic(topic, 2).await, 0);
    conn.produce(topic, 0, batch(topic, 0, "a")).await.unwrap();
    let meta: MetadataResponse = conn
        .call(
            ApiKey::Metadata,
            12,
            &MetadataRequest::default().with_topics(None),
        )
        .await;
    let id_of = meta
        .topics
        .iter()
        .find(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == topic))
        .map(|t| t.topic_id)
        .unwrap();
    assert!(!id_of.is_nil());
    let by_id = |session: i32, epoch: i32, partitions: &[(i32, i64)], forget: &[i32]| {
        let mut req = request(session, epoch, topic, partitions, forget, 0);
        for t in &mut req.topics {
            t.topic = TopicName::default();
            t.topic_id = id_of;
        }
        for t in &mut req.forgotten_topics_data {
            t.topic = TopicName::default();
            t.topic_id = id_of;
        }
        req
    };
    let resp: FetchResponse = conn
        .call(ApiKey::Fetch, 16, &by_id(0, 0, &[(0, 0), (1, 0)], &[]))
        .await;
    let session = resp.session_id;
    assert!(session > 0);
    assert_eq!(resp.responses[0].topic_id, id_of);
    assert_eq!(named(&resp).len(), 2);
    let resp: FetchResponse = conn
        .call(ApiKey::Fetch, 16, &by_id(session, 1, &[(0, 1)], &[]))
        .await;
    assert!(named(&resp).is_empty(), "{resp:?}");
    conn.produce(topic, 1, batch(topic, 1, "b")).await.unwrap();
    let resp: FetchResponse = conn
        .call(ApiKey::Fetch, 16, &by_id(session, 2, &[], &[]))
        .await;
    assert_eq!(resp.responses[0].topic_id, id_of);
    assert_eq!(named(&resp).keys().copied().collect::<Vec<_>>(), vec![1]);
    let resp: FetchResponse = conn
        .call(ApiKey::Fetch, 16, &by_id(session, 3, &[(1, 1)], &[1]))
        .await;
    assert!(named(&resp).is_empty(), "{resp:?}");
    conn.produce(topic, 1, batch(topic, 1, "c")).await.unwrap();
    let resp: FetchResponse = conn
        .call(ApiKey::Fetch, 16, &by_id(session, 4, &[], &[]))
        .await;
    assert!(named(&resp).is_empty(), "forgotten by id: {resp:?}");
}
