//! A quick produce-then-consume throughput check over QUIC, for sanity checks of the
//! transport tuning (not a benchmark: no warm-up, no percentiles, one run).
//!
//! Usage: `cargo run --release -p quiver-client --example throughput -- ADDR CA_FILE [MIB] [RECORD_BYTES]`
//! e.g. against a default local broker:
//! `... -- 127.0.0.1:9093 quiver-data/tls/cert.pem 512 1024`

use std::time::{Duration, Instant};

use bytes::Bytes;
use quiver_client::{Client, ClientConfig, ProducerConfig, ProducerRecord, StartOffset};

#[tokio::main]
async fn main() -> quiver_client::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let addr = args.get(1).cloned().unwrap_or("127.0.0.1:9093".into());
    let ca = args
        .get(2)
        .cloned()
        .unwrap_or("quiver-data/tls/cert.pem".into());
    let mib: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(256);
    let record_bytes: usize = args.get(4).and_then(|s| s.parse().ok()).unwrap_or(1024);
    let client = Client::connect(ClientConfig::new(addr).ca_file(ca)).await?;
    let topic = format!("throughput-{}", std::process::id());
    client.create_topic(&topic, 1, &[]).await?;
    let producer = client
        .producer(ProducerConfig {
            linger: Duration::from_millis(2),
            batch_bytes: 1 << 20,
            ..ProducerConfig::default()
        })
        .await?;
    let value = Bytes::from(vec![b'x'; record_bytes]);
    let count = mib * 1024 * 1024 / record_bytes;
    let started = Instant::now();
    let mut pending = std::collections::VecDeque::new();
    for _ in 0..count {
        pending.push_back(
            producer
                .send(ProducerRecord::new(topic.clone(), value.clone()).partition(0))
                .await?,
        );
        // Keep a bounded number of deliveries outstanding.
        while pending.len() > 16_384 {
            pending.pop_front().expect("non-empty").await?;
        }
    }
    for d in pending {
        d.await?;
    }
    let produce = started.elapsed();
    let mut sub = client.subscribe(&topic, 0, StartOffset::Earliest).await?;
    let started = Instant::now();
    let mut got = 0usize;
    while got < count {
        got += sub.next().await.expect("subscription open")?.len();
    }
    let consume = started.elapsed();
    let rate = |d: Duration| mib as f64 / d.as_secs_f64();
    println!(
        "records {count} x {record_bytes} B: produce (acks=all, idempotent) {:.0} MiB/s ({:.0} rec/s), subscribe {:.0} MiB/s",
        rate(produce),
        count as f64 / produce.as_secs_f64(),
        rate(consume)
    );
    println!("path: {}", client.path_stats().await.unwrap_or_default());
    client.delete_topic(&topic).await?;
    Ok(())
}
