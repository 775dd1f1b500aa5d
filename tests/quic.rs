//! Whole-broker scenarios over QUIC (`quiver/1`) with TLS verification on: a real
//! `quiver serve` process on free ports with a data dir under ./target (O_DIRECT needs a
//! real filesystem such as ext4, so never /tmp), driven by the `quiver-client` library.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use quiver_client::records::partition_for_key;
use quiver_client::{
    Acks, Client, ClientConfig, ConsumerConfig, ErrorCode, Producer, ProducerConfig,
    ProducerRecord, StartOffset, Subscription,
};

struct Broker {
    child: Child,
    data_dir: PathBuf,
    kafka_addr: String,
    quic_addr: String,
    log: PathBuf,
    /// Set by [`Broker::stop`]: the child has exited and been reaped.
    stopped: bool,
}

impl Broker {
    fn start(name: &str) -> Broker {
        Broker::start_with(name, &[])
    }

    fn start_with(name: &str, extra: &[&std::ffi::OsStr]) -> Broker {
        let served = common::Served::start("quic-itests", name, extra);
        Broker {
            child: served.child,
            data_dir: served.data_dir,
            kafka_addr: served.kafka_addr,
            quic_addr: served.quic_addr,
            log: served.log,
            stopped: false,
        }
    }

    /// Stops the broker politely and returns what it logged (without terminal colours).
    fn stop(&mut self) -> String {
        common::stop_broker(&mut self.child, &[]);
        self.stopped = true;
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let mut plain = String::with_capacity(log.len());
        let mut chars = log.chars();
        while let Some(c) = chars.next() {
            if c == '\u{1b}' {
                // An SGR sequence: ESC [ ... m
                for c in chars.by_ref() {
                    if c == 'm' {
                        break;
                    }
                }
            } else {
                plain.push(c);
            }
        }
        plain
    }

    fn ca_file(&self) -> PathBuf {
        self.data_dir.join("tls").join("cert.pem")
    }

    fn config(&self) -> ClientConfig {
        ClientConfig::new(self.quic_addr.clone())
            .ca_file(self.ca_file())
            .request_timeout(Duration::from_secs(20))
    }

    /// Connects with certificate verification, retrying while the broker starts.
    async fn client(&mut self) -> Client {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "broker exited with {status}: {}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            if self.ca_file().exists() {
                match Client::connect(self.config().request_timeout(Duration::from_secs(2))).await {
                    Ok(_) => return Client::connect(self.config()).await.unwrap(),
                    Err(e) if Instant::now() > deadline => panic!("cannot connect: {e}"),
                    Err(_) => {}
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if self.stopped {
            let _ = std::fs::remove_dir_all(&self.data_dir);
            let _ = std::fs::remove_file(&self.log);
        } else {
            common::stop_broker(&mut self.child, &[&self.data_dir, &self.log]);
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_create_list_describe_delete() {
    let mut broker = Broker::start("admin");
    let client = broker.client().await;
    let info = client
        .create_topic("orders", 3, &[("retention.ms", "60000")])
        .await
        .unwrap();
    assert_eq!(info.partitions, 3);
    assert!(!info.internal);
    let names: Vec<String> = client
        .list_topics()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert!(names.contains(&"orders".to_string()), "{names:?}");
    assert!(names.contains(&"__consumer_offsets".to_string()));
    let d = client.describe_topic("orders").await.unwrap();
    assert_eq!(d.partitions.len(), 3);
    assert!(d.partitions.iter().all(|p| p.high_watermark == 0));
    assert!(d
        .configs
        .iter()
        .any(|(k, v)| k == "retention.ms" && v == "60000"));

    let again = client.create_topic("orders", 3, &[]).await.unwrap_err();
    assert_eq!(again.code(), Some(ErrorCode::TOPIC_ALREADY_EXISTS));
    let bad = client.create_topic("bad name!", 1, &[]).await.unwrap_err();
    assert_eq!(bad.code(), Some(ErrorCode::INVALID_TOPIC_EXCEPTION));
    let internal = client.delete_topic("__consumer_offsets").await.unwrap_err();
    assert_eq!(internal.code(), Some(ErrorCode::TOPIC_AUTHORIZATION_FAILED));

    client.delete_topic("orders").await.unwrap();
    let gone = client.describe_topic("orders").await.unwrap_err();
    assert_eq!(gone.code(), Some(ErrorCode::UNKNOWN_TOPIC_OR_PARTITION));
    assert!(!client
        .list_topics()
        .await
        .unwrap()
        .iter()
        .any(|t| t.name == "orders"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_consume_round_trip() {
    let mut broker = Broker::start("roundtrip");
    let client = broker.client().await;
    client.create_topic("events", 4, &[]).await.unwrap();
    let producer = client
        .producer(ProducerConfig {
            linger: Duration::from_millis(2),
            ..ProducerConfig::default()
        })
        .await
        .unwrap();
    assert!(producer.identity().0 >= 0, "idempotent producers get an id");
    let count = 2_000;
    let mut deliveries = Vec::new();
    for i in 0..count {
        let key = format!("key-{}", i % 37);
        let record = ProducerRecord::new("events", format!("value-{i}"))
            .key(key)
            .header("n", i.to_string());
        deliveries.push(producer.send(record).await.unwrap());
    }
    let mut per_partition = [0i64; 4];
    for (i, d) in deliveries.into_iter().enumerate() {
        let m = d.await.unwrap();
        let key = format!("key-{}", i % 37);
        assert_eq!(m.partition, partition_for_key(key.as_bytes(), 4));
        per_partition[m.partition as usize] += 1;
        assert!(m.offset >= 0);
    }
    for p in 0..4 {
        let end = client
            .list_offset("events", p, StartOffset::Latest)
            .await
            .unwrap();
        assert_eq!(end, Some(per_partition[p as usize]));
    }

    // Read it all back with a consumer over every partition.
    let mut consumer = client.consumer(ConsumerConfig {
        group: None,
        start: StartOffset::Earliest,
    });
    let partitions: Vec<(String, i32)> = (0..4).map(|p| ("events".to_string(), p)).collect();
    consumer.assign(&partitions).await.unwrap();
    let mut seen = vec![Vec::new(); 4];
    let mut total = 0;
    while total < count {
        let records = tokio::time::timeout(Duration::from_secs(20), consumer.poll())
            .await
            .expect("records arrive")
            .unwrap();
        for r in records {
            assert_eq!(
                r.offset,
                seen[r.partition as usize].len() as i64,
                "dense offsets"
            );
            let i: usize = std::str::from_utf8(&r.headers[0].1.clone().unwrap())
                .unwrap()
                .parse()
                .unwrap();
            assert_eq!(r.value.as_deref(), Some(format!("value-{i}").as_bytes()));
            seen[r.partition as usize].push(i);
            total += 1;
        }
    }
    for s in &seen {
        assert!(
            s.windows(2).all(|w| w[0] < w[1]),
            "per-partition send order"
        );
    }

    // A long-polling fetch returns as soon as data arrives.
    let fetch = {
        let client = client.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let r = client
                .fetch(
                    vec![quiver_protocol::FetchPartition {
                        topic: "events".into(),
                        partition: 0,
                        offset: per_partition[0],
                        max_bytes: 1 << 20,
                    }],
                    1,
                    1 << 20,
                    Duration::from_secs(10),
                )
                .await
                .unwrap();
            (started.elapsed(), r)
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    producer
        .send_and_wait(ProducerRecord::new("events", "late").partition(0))
        .await
        .unwrap();
    let (waited, response) = fetch.await.unwrap();
    assert!(
        waited < Duration::from_secs(5),
        "woke on new data: {waited:?}"
    );
    let p = &response.partitions[0];
    assert!(p.error.is_none());
    let records =
        quiver_client::records::decode_records("events", 0, &p.records, per_partition[0]).unwrap();
    assert_eq!(records[0].value.as_deref(), Some(&b"late"[..]));

    // Unknown partitions are typed errors.
    let err = producer
        .send_and_wait(ProducerRecord::new("events", "x").partition(9))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::UNKNOWN_TOPIC_OR_PARTITION));
    let err = client
        .list_offset("nope", 0, StartOffset::Earliest)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::UNKNOWN_TOPIC_OR_PARTITION));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_zero_and_one_and_batching() {
    let mut broker = Broker::start("acks");
    let client = broker.client().await;
    client.create_topic("a", 1, &[]).await.unwrap();
    for acks in [Acks::None, Acks::Leader] {
        let producer = client
            .producer(ProducerConfig {
                acks,
                idempotent: false,
                batch_bytes: 4096,
                ..ProducerConfig::default()
            })
            .await
            .unwrap();
        let mut deliveries = Vec::new();
        for i in 0..500 {
            deliveries.push(
                producer
                    .send(
                        ProducerRecord::new("a", vec![b'x'; 100])
                            .partition(0)
                            .key(i.to_string()),
                    )
                    .await
                    .unwrap(),
            );
        }
        for d in deliveries {
            let m = d.await.unwrap();
            assert_eq!(m.offset >= 0, acks != Acks::None);
        }
        producer.flush().await.unwrap();
    }
    // acks=0 is fire-and-forget: wait for the records to land.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let end = client
            .list_offset("a", 0, StartOffset::Latest)
            .await
            .unwrap()
            .unwrap();
        if end == 1000 {
            break;
        }
        assert!(Instant::now() < deadline, "only {end} of 1000 records");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let bad = client
        .producer(ProducerConfig {
            acks: Acks::Leader,
            idempotent: true,
            ..ProducerConfig::default()
        })
        .await;
    assert!(bad.is_err(), "idempotence needs acks=all");
}

/// A one-partition `topic`, a producer that sends each record at once (no linger), and a
/// subscription to the partition from `start`.
async fn unbatched_producer_and_subscription(
    client: &Client,
    topic: &str,
    start: StartOffset,
) -> (Producer, Subscription) {
    client.create_topic(topic, 1, &[]).await.unwrap();
    let producer = unbatched_producer(client).await;
    let sub = client.subscribe(topic, 0, start).await.unwrap();
    (producer, sub)
}

/// A producer that sends each record at once (no linger).
async fn unbatched_producer(client: &Client) -> Producer {
    client
        .producer(ProducerConfig {
            linger: Duration::ZERO,
            ..ProducerConfig::default()
        })
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_stream_delivers_new_data_within_milliseconds() {
    let mut broker = Broker::start("subscribe");
    let client = broker.client().await;
    let (producer, mut sub) =
        unbatched_producer_and_subscription(&client, "live", StartOffset::Latest).await;
    // Let the subscription reach its long poll.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut latencies = Vec::new();
    for i in 0..50 {
        let sent = Instant::now();
        let m = producer
            .send_and_wait(ProducerRecord::new("live", format!("m{i}")))
            .await
            .unwrap();
        let records = tokio::time::timeout(Duration::from_secs(5), sub.next())
            .await
            .expect("pushed")
            .unwrap()
            .unwrap();
        latencies.push(sent.elapsed());
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].offset, m.offset);
        assert_eq!(
            records[0].value.as_deref(),
            Some(format!("m{i}").as_bytes())
        );
    }
    latencies.sort();
    let (p50, p99, max) = (
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        *latencies.last().unwrap(),
    );
    eprintln!("produce(acks=all)->push latency over QUIC: p50 {p50:?} p99 {p99:?} max {max:?}");
    // Produce includes an fdatasync; the push itself must be prompt.
    // Bounds leave room for a loaded CI host; the printed figures are the measurement.
    assert!(p50 < Duration::from_millis(100), "p50 {p50:?}");
    assert!(max < Duration::from_millis(2000), "max {max:?}");

    // A subscription from the beginning replays history, then keeps going.
    let mut replay = client
        .subscribe("live", 0, StartOffset::Earliest)
        .await
        .unwrap();
    let mut got = 0;
    while got < 50 {
        got += replay.next().await.unwrap().unwrap().len();
    }
    assert_eq!(got, 50);
    let err = client
        .subscribe("missing", 0, StartOffset::Earliest)
        .await
        .unwrap()
        .next()
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::UNKNOWN_TOPIC_OR_PARTITION));
}

/// The broker runs an endpoint per shard on `SO_REUSEPORT` sockets. Packets are steered by
/// connection ID, not by the client's address: a client that changes address keeps its
/// connection (and its open subscription) wherever the kernel's address hash would have
/// sent the new packets. Without the steering, about half of the moves land on the other
/// shard, which does not know the connection and resets it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_survives_client_address_changes() {
    let mut broker = Broker::start("migration");
    let client = broker.client().await;
    let (producer, mut sub) =
        unbatched_producer_and_subscription(&client, "moving", StartOffset::Earliest).await;
    for i in 0..12 {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = socket.local_addr().unwrap().port();
        client.rebind(socket).unwrap();
        let m = tokio::time::timeout(
            Duration::from_secs(10),
            producer.send_and_wait(ProducerRecord::new("moving", format!("m{i}"))),
        )
        .await
        .unwrap_or_else(|_| panic!("produce after move {i} (to port {port}) timed out"))
        .unwrap_or_else(|e| panic!("produce after move {i} (to port {port}): {e}"));
        assert_eq!(m.offset, i as i64);
        // The subscription opened before any move is still the same stream.
        let records = tokio::time::timeout(Duration::from_secs(10), sub.next())
            .await
            .unwrap_or_else(|_| panic!("push after move {i} (to port {port}) timed out"))
            .expect("subscription still open")
            .unwrap_or_else(|e| panic!("subscription after move {i}: {e}"));
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].offset, i as i64);
        assert_eq!(
            records[0].value.as_deref(),
            Some(format!("m{i}").as_bytes())
        );
    }
    broker.stop();
}

/// Every core binds the listen addresses with `SO_REUSEPORT`, which would let a second
/// broker on the same address start and take part of the traffic. It must refuse to start
/// instead, with a clear message, and the first broker keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_broker_on_the_same_address_is_refused() {
    let mut broker = Broker::start("address-taken");
    let client = broker.client().await;
    client.create_topic("mine", 1, &[]).await.unwrap();
    let free_kafka = format!("127.0.0.1:{}", common::free_tcp_port());
    let free_quic = format!("127.0.0.1:{}", common::free_udp_port());
    for (kafka, quic, taken) in [
        (&broker.kafka_addr, &free_quic, "Kafka (TCP) address"),
        (&free_kafka, &broker.quic_addr, "QUIC (UDP) address"),
    ] {
        let data_dir = broker.data_dir.with_extension("second");
        let output = Command::new(env!("CARGO_BIN_EXE_quiver"))
            .args(["serve", "--cores", "2", "--data-dir"])
            .arg(&data_dir)
            .args(["--kafka-listen", kafka, "--quic-listen", quic])
            .stdin(Stdio::null())
            .output()
            .expect("run a second quiver serve");
        let _ = std::fs::remove_dir_all(&data_dir);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "second broker started: {stderr}");
        assert!(
            stderr.contains(taken) && stderr.contains("is in use"),
            "unclear error: {stderr}"
        );
    }
    let topics = client.list_topics().await.unwrap();
    assert!(topics.iter().any(|t| t.name == "mine"));
    broker.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_consumer_on_one_partition_does_not_stall_another() {
    let mut broker = Broker::start("slow");
    let client = broker.client().await;
    client.create_topic("two", 2, &[]).await.unwrap();
    let producer = client.producer(ProducerConfig::default()).await.unwrap();
    // The slow subscriber: subscribes to partition 0 and does not read.
    let mut slow = client
        .subscribe("two", 0, StartOffset::Earliest)
        .await
        .unwrap();
    // Far more than its stream window (16 MiB) plus the client's buffer: the broker's
    // writes to this stream block on QUIC flow control.
    let value = Bytes::from(vec![7u8; 64 * 1024]);
    let backlog = 1024; // 64 MiB
    let mut deliveries = Vec::new();
    for _ in 0..backlog {
        deliveries.push(
            producer
                .send(ProducerRecord::new("two", value.clone()).partition(0))
                .await
                .unwrap(),
        );
    }
    for d in deliveries {
        d.await.unwrap();
    }
    eprintln!(
        "path after bulk transfer: {}",
        client.path_stats().await.unwrap_or_default()
    );
    // The other partition on the same connection flows promptly.
    let mut fast = client
        .subscribe("two", 1, StartOffset::Latest)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut latencies = Vec::new();
    for i in 0..20 {
        let sent = Instant::now();
        producer
            .send_and_wait(ProducerRecord::new("two", format!("fast-{i}")).partition(1))
            .await
            .unwrap();
        let r = tokio::time::timeout(Duration::from_secs(5), fast.next())
            .await
            .expect("partition 1 is not stalled by partition 0")
            .unwrap()
            .unwrap();
        assert_eq!(r[0].value.as_deref(), Some(format!("fast-{i}").as_bytes()));
        latencies.push(sent.elapsed());
    }
    latencies.sort();
    eprintln!(
        "partition 1 latency with partition 0 backlogged: p50 {:?} max {:?}",
        percentile(&latencies, 0.5),
        latencies.last().unwrap()
    );
    assert!(percentile(&latencies, 0.5) < Duration::from_millis(200));
    // The slow subscriber still gets everything, in order, when it catches up.
    let mut next = 0i64;
    while next < backlog {
        let records = tokio::time::timeout(Duration::from_secs(20), slow.next())
            .await
            .expect("slow subscriber resumes")
            .unwrap()
            .unwrap();
        for r in records {
            assert_eq!(r.offset, next);
            next += 1;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_offsets_commit_fetch_and_resume() {
    let mut broker = Broker::start("groups");
    let client = broker.client().await;
    client.create_topic("g", 2, &[]).await.unwrap();
    let producer = client.producer(ProducerConfig::default()).await.unwrap();
    for i in 0..10 {
        producer
            .send_and_wait(ProducerRecord::new("g", format!("r{i}")).partition(0))
            .await
            .unwrap();
    }
    let none = client
        .fetch_offsets("readers", &[("g".to_string(), 0)])
        .await
        .unwrap();
    assert_eq!(none[0].offset, -1);

    let mut consumer = client.consumer(ConsumerConfig {
        group: Some("readers".into()),
        start: StartOffset::Earliest,
    });
    consumer.assign(&[("g".to_string(), 0)]).await.unwrap();
    let mut read = 0;
    while read < 4 {
        read += consumer.poll().await.unwrap().len();
    }
    let position = consumer.position("g", 0).unwrap();
    consumer.commit().await.unwrap();
    drop(consumer);
    let committed = client
        .fetch_offsets("readers", &[("g".to_string(), 0)])
        .await
        .unwrap();
    assert_eq!(committed[0].offset, position);

    // A new consumer in the group resumes at the committed offset.
    producer
        .send_and_wait(ProducerRecord::new("g", "after-commit").partition(0))
        .await
        .unwrap();
    let mut again = client.consumer(ConsumerConfig {
        group: Some("readers".into()),
        start: StartOffset::Earliest,
    });
    again.assign(&[("g".to_string(), 0)]).await.unwrap();
    let first = again.poll().await.unwrap();
    assert_eq!(first[0].offset, position);

    client
        .commit_offsets("readers", &[("g".to_string(), 1, 0)])
        .await
        .unwrap();
    let all = client.fetch_offsets("readers", &[]).await.unwrap();
    assert_eq!(all.len(), 2, "{all:?}");

    // Groups with only committed offsets are listed and described as Empty.
    let groups = client.list_groups().await.unwrap();
    let listed = groups
        .iter()
        .find(|g| g.group == "readers")
        .unwrap_or_else(|| panic!("{groups:?}"));
    assert_eq!(listed.state, "Empty");
    let described = client.describe_group("readers").await.unwrap();
    assert_eq!(described.state, "Empty");
    assert!(described.members.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_a_stream_resets_that_stream_only() {
    let mut broker = Broker::start("garbage");
    let client = broker.client().await;
    client.create_topic("ok", 1, &[]).await.unwrap();
    for garbage in [
        &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        &[0u8; 24][..],
        &[0xff; 100][..],
    ] {
        let (mut send, mut recv) = client.open_raw_stream().await.unwrap();
        send.write_all(garbage).await.unwrap();
        let mut answer = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        // The broker answers with an ERROR frame and finishes the stream.
        while let Ok(Some(chunk)) = tokio::time::timeout_at(
            tokio::time::Instant::from_std(deadline),
            recv.read_chunk(1 << 16, true),
        )
        .await
        .expect("broker answers")
        {
            answer.extend_from_slice(&chunk.bytes);
        }
        let mut buf = Bytes::from(answer);
        let frame = quiver_protocol::split_frame(&mut buf, 1 << 20)
            .unwrap()
            .expect("an ERROR frame");
        match quiver_protocol::Response::decode(&frame.header, frame.body).unwrap() {
            quiver_protocol::Response::Error(e) => {
                assert_eq!(e.code, ErrorCode::INVALID_REQUEST, "{}", e.message)
            }
            other => panic!("expected an ERROR frame, got {other:?}"),
        }
    }
    // An oversized frame is refused by its header, before the body is read.
    let (mut send, mut recv) = client.open_raw_stream().await.unwrap();
    let header =
        quiver_protocol::FrameHeader::new(quiver_protocol::FrameType::Produce, 77, 1 << 30);
    send.write_all(&header.to_bytes()).await.unwrap();
    let mut answer = Vec::new();
    while let Ok(Some(chunk)) = recv.read_chunk(1 << 16, true).await {
        answer.extend_from_slice(&chunk.bytes);
    }
    let mut buf = Bytes::from(answer);
    let frame = quiver_protocol::split_frame(&mut buf, 1 << 20)
        .unwrap()
        .unwrap();
    assert_eq!(frame.header.request_id(), 77);
    match quiver_protocol::Response::decode(&frame.header, frame.body).unwrap() {
        quiver_protocol::Response::Error(e) => assert_eq!(e.code, ErrorCode::MESSAGE_TOO_LARGE),
        other => panic!("{other:?}"),
    }
    // The connection and the broker are fine.
    let topics = client.list_topics().await.unwrap();
    assert!(topics.iter().any(|t| t.name == "ok"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_verification_is_on() {
    let mut broker = Broker::start("tls");
    let _ = broker.client().await;
    // No CA file and no explicit insecure: refused before any packet is sent.
    let err = Client::connect(ClientConfig::new(broker.quic_addr.clone()))
        .await
        .err()
        .expect("a CA file or insecure is required");
    assert!(matches!(err, quiver_client::Error::Tls(_)), "{err}");
    // A CA that did not sign the broker's certificate: the handshake fails.
    let other = tempfile::Builder::new()
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    let (wrong_ca, _) = quiver_net::quic::tls::ensure_dev_cert(other.path()).unwrap();
    let err = Client::connect(
        ClientConfig::new(broker.quic_addr.clone())
            .ca_file(wrong_ca)
            .request_timeout(Duration::from_secs(5)),
    )
    .await
    .err()
    .expect("an unknown issuer is refused");
    assert!(matches!(err, quiver_client::Error::Connect { .. }), "{err}");
    // Explicitly insecure works.
    let insecure = Client::connect(ClientConfig::new(broker.quic_addr.clone()).insecure())
        .await
        .unwrap();
    insecure.list_topics().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_requires_a_client_certificate() {
    let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("quic-itests");
    std::fs::create_dir_all(&base).unwrap();
    let pki = tempfile::Builder::new().tempdir_in(&base).unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().unwrap())
        .unwrap();
    let client_key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["service-a".to_string()]).unwrap();
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let client_cert = params.signed_by(&client_key, &ca).unwrap();
    let ca_path = pki.path().join("ca.pem");
    let cert_path = pki.path().join("client.pem");
    let key_path = pki.path().join("client.key");
    std::fs::write(&ca_path, ca.pem()).unwrap();
    std::fs::write(&cert_path, client_cert.pem()).unwrap();
    std::fs::write(&key_path, client_key.serialize_pem()).unwrap();

    let mut broker = Broker::start_with("mtls", &["--tls-client-ca".as_ref(), ca_path.as_os_str()]);
    // Wait until the broker writes its certificate and listens.
    let deadline = Instant::now() + Duration::from_secs(30);
    let client = loop {
        if broker.ca_file().exists() {
            let config = broker.config().client_cert(&cert_path, &key_path);
            if let Ok(c) = Client::connect(config).await {
                if c.list_topics().await.is_ok() {
                    break c;
                }
            }
        }
        assert!(Instant::now() < deadline, "mTLS client never got in");
        if let Ok(Some(status)) = broker.child.try_wait() {
            panic!("broker exited: {status}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    client.create_topic("secure", 1, &[]).await.unwrap();
    // Without a client certificate the broker refuses the connection.
    let refused = async {
        let c = Client::connect(broker.config().request_timeout(Duration::from_secs(5))).await?;
        c.list_topics().await
    }
    .await;
    assert!(refused.is_err(), "a client without a certificate got in");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_per_peer_are_limited() {
    use quiver_protocol::limits::MAX_CONNECTIONS_PER_PEER;
    let mut broker = Broker::start("conn-limit");
    let first = broker.client().await;
    let mut open = vec![first];
    while open.len() < MAX_CONNECTIONS_PER_PEER {
        open.push(Client::connect(broker.config()).await.unwrap());
    }
    // One more from the same address is refused in the handshake...
    let refused = Client::connect(broker.config().request_timeout(Duration::from_secs(5))).await;
    assert!(
        matches!(refused, Err(quiver_client::Error::Connect { .. })),
        "connection {} got in",
        MAX_CONNECTIONS_PER_PEER + 1
    );
    // ...while the open ones keep working, and a slot frees when one closes.
    open[0].list_topics().await.unwrap();
    let last = open.pop().unwrap();
    last.close();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match Client::connect(broker.config().request_timeout(Duration::from_secs(2))).await {
            Ok(c) => {
                c.list_topics().await.unwrap();
                break;
            }
            Err(e) => assert!(Instant::now() < deadline, "slot never freed: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends one PRODUCE frame on a stream of its own and returns the decoded answer.
async fn raw_produce(client: &Client, topic: &str, batch: Bytes) -> quiver_protocol::Response {
    let (mut send, mut recv) = client.open_raw_stream().await.unwrap();
    let frame = quiver_protocol::Request::Produce(quiver_protocol::ProduceRequest {
        topic: topic.to_string(),
        partition: 0,
        acks: Acks::All,
        records: vec![batch],
    })
    .encode(5);
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
    quiver_protocol::Response::decode(&f.header, f.body).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_retries_are_deduplicated() {
    use quiver_client::records::{encode_batch, ProducerIdentity};
    let mut broker = Broker::start("idempotence");
    let client = broker.client().await;
    client.create_topic("once", 1, &[]).await.unwrap();
    let producer = client.producer(ProducerConfig::default()).await.unwrap();
    let (producer_id, producer_epoch) = producer.identity();
    let batch = |seq: i32, values: &[&str]| {
        let records: Vec<ProducerRecord> = values
            .iter()
            .map(|v| ProducerRecord::new("once", v.to_string()))
            .collect();
        encode_batch(
            &records,
            ProducerIdentity {
                producer_id,
                producer_epoch,
                base_sequence: seq,
            },
        )
        .unwrap()
    };
    let first = batch(0, &["a", "b"]);
    let stored = match raw_produce(&client, "once", first.clone()).await {
        quiver_protocol::Response::Produce(p) => p,
        other => panic!("{other:?}"),
    };
    assert!(!stored.duplicate);
    // The same batch again (a retry after a lost answer): acknowledged, not stored twice.
    match raw_produce(&client, "once", first).await {
        quiver_protocol::Response::Produce(p) => {
            assert!(p.duplicate);
            assert_eq!(p.base_offset, stored.base_offset);
        }
        other => panic!("{other:?}"),
    }
    // A gap in the sequence is refused with Kafka's code.
    match raw_produce(&client, "once", batch(5, &["c"])).await {
        quiver_protocol::Response::Error(e) => {
            assert_eq!(e.code, ErrorCode::OUT_OF_ORDER_SEQUENCE_NUMBER)
        }
        other => panic!("{other:?}"),
    }
    let end = client
        .list_offset("once", 0, StartOffset::Latest)
        .await
        .unwrap();
    assert_eq!(end, Some(2));
}

/// The raw batch API a load generator uses: pre-built batches pipelined on a partition's
/// stream, answered in order with consecutive offsets, and read back undecoded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_producer_and_batch_subscription_round_trip() {
    let mut broker = Broker::start("batches");
    let client = broker.client().await;
    batch_round_trip(&client).await;
}

/// On a current-thread runtime the client drives its QUIC connections inline (quinn patch
/// 1, third_party/quinn/QUIVER_PATCHES.md): a request's packet has left when `send`
/// returns, before this task yields to any other (with upstream quinn the connection's
/// driver task would send it at the next yield, and the count below would not move). The
/// same round trip as on the multi-threaded runtime then runs on this one.
#[tokio::test(flavor = "current_thread")]
async fn on_one_thread_a_request_leaves_before_send_returns() {
    use quiver_client::records::{encode_batch, ProducerIdentity};
    let mut broker = Broker::start("inline");
    let client = broker.client().await;
    client.create_topic("lone", 1, &[]).await.unwrap();
    let producer = client
        .batch_producer("lone", 0, Acks::Leader)
        .await
        .unwrap();
    let mut sent_at_once = 0;
    for n in 0..20 {
        let batch =
            encode_batch(&[ProducerRecord::new("lone", "x")], ProducerIdentity::NONE).unwrap();
        // Let any task already woken (a driver whose timer fired) run and park first.
        tokio::task::yield_now().await;
        let before = client.datagrams_sent().await;
        let ack = producer.send(batch).await.unwrap();
        if client.datagrams_sent().await > before {
            sent_at_once += 1;
        }
        assert_eq!(ack.await.unwrap().base_offset, n);
    }
    // All 20 in practice; upstream quinn sends none of them before the yield. The margin
    // is for a driver woken by its timer between the yield and the send.
    assert!(
        sent_at_once >= 18,
        "only {sent_at_once} of 20 requests left before send returned"
    );
    batch_round_trip(&client).await;
}

async fn batch_round_trip(client: &Client) {
    use quiver_client::records::{decode_records, encode_batch, ProducerIdentity};
    client.create_topic("raw", 2, &[]).await.unwrap();
    let producer = client.batch_producer("raw", 1, Acks::All).await.unwrap();
    assert_eq!((producer.topic(), producer.partition()), ("raw", 1));
    const BATCHES: usize = 20;
    const RECORDS: usize = 50;
    let mut pending = Vec::new();
    for b in 0..BATCHES {
        let records: Vec<ProducerRecord> = (0..RECORDS)
            .map(|r| ProducerRecord::new("raw", format!("{b}-{r}")))
            .collect();
        let batch = encode_batch(&records, ProducerIdentity::NONE).unwrap();
        // Pipelined: every frame goes out before the first answer is awaited.
        pending.push(producer.send(batch).await.unwrap());
    }
    for (b, ack) in pending.into_iter().enumerate() {
        let answer = ack.await.unwrap();
        assert_eq!(answer.base_offset, (b * RECORDS) as i64, "in order");
        assert_eq!(answer.last_offset, ((b + 1) * RECORDS - 1) as i64);
    }
    // acks=0: nothing to wait for; the waiter resolves at once with offsets -1.
    let fire_and_forget = client.batch_producer("raw", 0, Acks::None).await.unwrap();
    let batch = encode_batch(&[ProducerRecord::new("raw", "x")], ProducerIdentity::NONE).unwrap();
    let answer = fire_and_forget.send(batch).await.unwrap().await.unwrap();
    assert_eq!(answer.base_offset, -1);

    let mut subscription = client
        .subscribe_batches("raw", 1, StartOffset::Earliest)
        .await
        .unwrap();
    assert_eq!(subscription.start_offset, quiver_protocol::EARLIEST);
    let mut values = Vec::new();
    while values.len() < BATCHES * RECORDS {
        let push = tokio::time::timeout(Duration::from_secs(10), subscription.next())
            .await
            .expect("a push within 10 s")
            .expect("subscription open")
            .unwrap();
        assert_eq!(push.partition, 1);
        assert_eq!(push.high_watermark, (BATCHES * RECORDS) as i64);
        for record in decode_records("raw", 1, &push.records, 0).unwrap() {
            values.push(String::from_utf8(record.value.unwrap().to_vec()).unwrap());
        }
    }
    assert_eq!(values.first().map(String::as_str), Some("0-0"));
    assert_eq!(values.last().map(String::as_str), Some("19-49"));

    // A subscription to a partition that does not exist ends with the broker's error.
    let mut missing = client
        .subscribe_batches("raw", 7, StartOffset::Earliest)
        .await
        .unwrap();
    let error = missing.next().await.expect("an error push").unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::UNKNOWN_TOPIC_OR_PARTITION));
    assert!(missing.next().await.is_none(), "ended after the error");
}

/// The number logged as `name=<n>` on the first line containing `message`.
fn logged_count(log: &str, message: &str, name: &str) -> u64 {
    let line = log
        .lines()
        .find(|l| l.contains(message))
        .unwrap_or_else(|| panic!("no {message:?} in the broker log:\n{log}"));
    let at = line.find(&format!("{name}=")).expect(name) + name.len() + 1;
    line[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{name} in {line:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_packet_produce_copies_no_record_bytes_in_frame_assembly() {
    use quiver_client::records::{encode_batch, ProducerIdentity};
    let mut broker = Broker::start("assembly");
    let client = broker.client().await;
    client.create_topic("big", 1, &[]).await.unwrap();
    // Three PRODUCE frames of 1 MiB of records each: 16 packets or more apiece even at
    // loopback's 64 KiB packets, so each body arrives as many stream chunks.
    let mut sent = Vec::new();
    for frame in 0..3u8 {
        let records: Vec<ProducerRecord> = (0..16u8)
            .map(|i| ProducerRecord::new("big", vec![frame * 16 + i; 64 * 1024]))
            .collect();
        let batch = encode_batch(&records, ProducerIdentity::NONE).unwrap();
        match raw_produce(&client, "big", batch.clone()).await {
            quiver_protocol::Response::Produce(p) => {
                assert_eq!(p.base_offset, frame as i64 * 16)
            }
            other => panic!("{other:?}"),
        }
        sent.push(batch);
    }
    // What was stored is what was sent, but for the offset and epoch the broker assigns.
    for (frame, batch) in sent.iter().enumerate() {
        let fetched = client
            .fetch(
                vec![quiver_protocol::FetchPartition {
                    topic: "big".into(),
                    partition: 0,
                    offset: frame as i64 * 16,
                    max_bytes: batch.len() as u32,
                }],
                1,
                batch.len() as u32,
                Duration::from_secs(5),
            )
            .await
            .unwrap();
        let stored = quiver_protocol::concat(&fetched.partitions[0].records);
        assert_eq!(stored.len(), batch.len());
        // The client may encode several batches; compare each, skipping baseOffset (0..8)
        // and partitionLeaderEpoch (12..16).
        let mut at = 0;
        while at < batch.len() {
            let len = 12 + i32::from_be_bytes(batch[at + 8..at + 12].try_into().unwrap()) as usize;
            assert_eq!(stored[at + 8..at + 12], batch[at + 8..at + 12]);
            assert!(
                stored[at + 16..at + len] == batch[at + 16..at + len],
                "frame {frame}: batch at {at} stored differently"
            );
            at += len;
        }
    }
    drop(client);
    let log = broker.stop();
    let stopped = "quic listener stopped";
    let frames = logged_count(&log, stopped, "produce_frames");
    let chunks = logged_count(&log, stopped, "produce_record_chunks");
    assert_eq!(frames, 3);
    assert!(
        chunks > frames,
        "{chunks} record chunks: no frame spanned packets?"
    );
    assert_eq!(logged_count(&log, stopped, "produce_bytes_copied"), 0);
    eprintln!("{frames} produce frames arrived as {chunks} record chunks, 0 bytes copied");
}

/// Shard-aware client (docs/protocol.md, "Shard-aware clients"): each partition's PRODUCE
/// stream, batched or not, goes on a connection the partition's owning core serves, so
/// no produce hops between the broker's cores. Without steering about half of these
/// frames would arrive on the wrong core (the 4 partitions are spread over both).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_streams_reach_the_owning_shard_without_a_hop() {
    use quiver_client::records::{encode_batch, ProducerIdentity};
    let mut broker = Broker::start("steered");
    let client = broker.client().await;
    client.create_topic("spread", 4, &[]).await.unwrap();
    for partition in 0..4 {
        let stream = client
            .batch_producer("spread", partition, Acks::Leader)
            .await
            .unwrap();
        for i in 0..5 {
            let record = ProducerRecord::new("spread", format!("{partition}-{i}"));
            let batch = encode_batch(&[record], ProducerIdentity::NONE).unwrap();
            stream.send(batch).await.unwrap().await.unwrap();
        }
    }
    let producer = unbatched_producer(&client).await;
    for partition in 0..4 {
        let record = ProducerRecord::new("spread", "unbatched").partition(partition);
        let stored = producer.send_and_wait(record).await.unwrap();
        assert_eq!((stored.partition, stored.offset), (partition, 5));
    }
    let connections = client.connection_count().await;
    drop(producer);
    drop(client);
    let log = broker.stop();
    let stopped = "quic listener stopped";
    assert_eq!(logged_count(&log, stopped, "produce_frames"), 4 * 5 + 4);
    assert_eq!(logged_count(&log, stopped, "produce_frames_hopped"), 0);
    // The first connection (on whichever core the kernel picked) and one steered to the
    // other core.
    assert_eq!(connections, 2);
}
