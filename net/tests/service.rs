//! The protocol-neutral service driven both ways: from a plain thread through
//! `ExternalHandle` (as a non-shard thread would) and from a shard through `ShardContext`
//! (as the Kafka handlers do), on a real two-shard runtime with a data dir under ./target.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use quiver_engine::batch::build;
use quiver_engine::runtime::{self, ExternalHandle, RuntimeConfig};
use quiver_net::kafka::broker::{ensure_internal_topics, shard, BrokerConfig, Shard};
use quiver_net::service::{local, Acks, ReadPartition, ReadRequest, Service};

type KeyValue<'a> = (Option<&'a [u8]>, Option<&'a [u8]>);

fn batch(values: &[&[u8]]) -> Bytes {
    let kv: Vec<KeyValue> = values.iter().map(|v| (None, Some(*v))).collect();
    Bytes::from(build::batch_kv(&kv, 1_000, -1, -1, -1))
}

#[test]
fn service_from_outside_and_from_a_shard() {
    let base = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("service-tests");
    std::fs::create_dir_all(&base).unwrap();
    let dir = tempfile::Builder::new().tempdir_in(&base).unwrap();
    let mut config = BrokerConfig::local(dir.path().to_path_buf(), "127.0.0.1:0".parse().unwrap());
    config.offsets_topic_partitions = 4;
    ensure_internal_topics(&config).unwrap();
    let config = Arc::new(config);
    let runtime_config = RuntimeConfig::with_cores(Some(2));
    let shards = runtime_config.cpus.len();
    let (handle, inboxes) = ExternalHandle::new(shards);
    let started = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));

    let outside = {
        let started = Arc::clone(&started);
        let done = Arc::clone(&done);
        std::thread::spawn(move || {
            while started.load(Ordering::Acquire) < shards {
                std::thread::sleep(Duration::from_millis(5));
            }
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                futures::executor::block_on(outside_checks(Service::new(handle)))
            }));
            done.store(true, Ordering::Release);
            result
        })
    };

    let on_shard_ok = Arc::new(AtomicUsize::new(0));
    let ok = Arc::clone(&on_shard_ok);
    runtime::run_with_external(&runtime_config, inboxes, move |ctx| {
        let config = Arc::clone(&config);
        let started = Arc::clone(&started);
        let done = Arc::clone(&done);
        let ok = Arc::clone(&ok);
        async move {
            runtime::prepare_io(&config.data_dir).await.unwrap();
            let _shard = Shard::start(ctx, config).await.unwrap();
            glommio::spawn_local(quiver_net::kafka::groups::run_coordinator_timers()).detach();
            started.fetch_add(1, Ordering::AcqRel);
            while !done.load(Ordering::Acquire) {
                glommio::timer::sleep(Duration::from_millis(5)).await;
            }
            // From a shard: the same service over ShardContext sees what the outside wrote.
            let service = Service::new(shard().ctx.clone());
            let read = service
                .read(ReadRequest {
                    partitions: vec![ReadPartition {
                        topic: "svc".into(),
                        partition: 1,
                        offset: 0,
                        max_bytes: 1 << 20,
                    }],
                    min_bytes: 1,
                    max_wait: Duration::from_millis(100),
                })
                .await;
            let data = read.into_iter().next().unwrap().unwrap();
            assert_eq!(data.next_offset, Some(3));
            let end = service
                .list_offset("svc".into(), 1, local::LATEST)
                .await
                .unwrap();
            assert_eq!(end, Some((3, -1)));
            ok.fetch_add(1, Ordering::AcqRel);
            // Stay up until every shard is done: a shard that returns stops serving hops,
            // and another shard's read of a partition it owns would wait forever.
            while ok.load(Ordering::Acquire) < shards {
                glommio::timer::sleep(Duration::from_millis(5)).await;
            }
        }
    })
    .unwrap();
    outside.join().unwrap().expect("outside checks passed");
    assert_eq!(on_shard_ok.load(Ordering::Acquire), shards);
}

async fn outside_checks(service: Service<ExternalHandle>) {
    let meta = service
        .create_topic(
            "svc".into(),
            2,
            vec![("retention.ms".into(), "1000".into())],
        )
        .await
        .unwrap();
    assert_eq!(meta.partitions, 2);
    let dup = service
        .create_topic("svc".into(), 2, vec![])
        .await
        .unwrap_err();
    assert_eq!(dup.code(), 36);
    assert!(service
        .list_topics()
        .await
        .unwrap()
        .iter()
        .any(|t| t.name == "svc"));

    // Long poll: a read waiting on an empty partition wakes when data is appended.
    let reader = {
        let service = service.clone();
        std::thread::spawn(move || {
            futures::executor::block_on(async {
                let started = Instant::now();
                let r = service
                    .read(ReadRequest {
                        partitions: vec![ReadPartition {
                            topic: "svc".into(),
                            partition: 1,
                            offset: 0,
                            max_bytes: 1 << 20,
                        }],
                        min_bytes: 1,
                        max_wait: Duration::from_secs(10),
                    })
                    .await;
                (started.elapsed(), r)
            })
        })
    };
    std::thread::sleep(Duration::from_millis(100));
    let appended = service
        .append("svc".into(), 1, vec![batch(&[b"a", b"b", b"c"])], Acks::All)
        .await
        .unwrap();
    assert_eq!(appended.base_offset.0, 0);
    assert_eq!(appended.last_offset.0, 2);
    let (waited, results) = reader.join().unwrap();
    assert!(waited < Duration::from_secs(5), "{waited:?}");
    let data = results.into_iter().next().unwrap().unwrap();
    assert_eq!(data.high_watermark, 3);
    assert_eq!(data.next_offset, Some(3));
    assert!(!data.is_empty());

    // Long poll over several partitions whose min_bytes needs two of them: the first
    // append wakes the read, which re-reads that partition only and keeps waiting on the
    // others' watches; the second append must then wake it for the right partition.
    service
        .create_topic("svc3".into(), 3, vec![])
        .await
        .unwrap();
    let one = batch(&[b"p"]);
    let reader = {
        let service = service.clone();
        let min_bytes = one.len() + 1;
        std::thread::spawn(move || {
            futures::executor::block_on(async {
                let started = Instant::now();
                let r = service
                    .read(ReadRequest {
                        partitions: (0..3)
                            .map(|partition| ReadPartition {
                                topic: "svc3".into(),
                                partition,
                                offset: 0,
                                max_bytes: 1 << 20,
                            })
                            .collect(),
                        min_bytes,
                        max_wait: Duration::from_secs(10),
                    })
                    .await;
                (started.elapsed(), r)
            })
        })
    };
    for partition in [0, 1] {
        std::thread::sleep(Duration::from_millis(100));
        service
            .append("svc3".into(), partition, vec![one.clone()], Acks::All)
            .await
            .unwrap();
    }
    let (waited, results) = reader.join().unwrap();
    assert!(waited < Duration::from_secs(5), "{waited:?}");
    let data: Vec<_> = results.into_iter().map(|r| r.unwrap()).collect();
    assert_eq!(
        data.iter().map(|d| d.high_watermark).collect::<Vec<_>>(),
        vec![1, 1, 0]
    );
    assert_eq!(data[0].len(), one.len());
    assert_eq!(data[1].len(), one.len());
    assert!(data[2].is_empty());

    let bad = service
        .append("svc".into(), 7, vec![batch(&[b"x"])], Acks::All)
        .await
        .unwrap_err();
    assert_eq!(bad.code(), 3);
    let garbage = service
        .append(
            "svc".into(),
            0,
            vec![Bytes::from_static(b"not a batch")],
            Acks::Leader,
        )
        .await
        .unwrap_err();
    assert!(
        garbage.code() == 87 || garbage.code() == 2,
        "{}",
        garbage.code()
    );

    assert_eq!(
        service
            .list_offset("svc".into(), 1, local::EARLIEST)
            .await
            .unwrap(),
        Some((0, -1))
    );
    let d = service.describe_topic("svc".into()).await.unwrap();
    assert_eq!(d.partitions, vec![(0, 0, 0), (1, 0, 3)]);

    let (id, epoch) = service.init_producer_id(-1, -1).await.unwrap();
    assert!(id >= 0);
    assert_eq!(epoch, 0);
    assert_eq!(service.init_producer_id(id, 0).await.unwrap(), (id, 1));

    let codes = service
        .commit_offsets("grp".into(), vec![("svc".into(), 1, 2, "m".into())])
        .await
        .unwrap();
    assert_eq!(codes, vec![0]);
    let offsets = service.fetch_offsets("grp".into(), None).await.unwrap();
    assert_eq!(offsets.len(), 1);
    assert_eq!(offsets[0].offset, 2);
    assert_eq!(offsets[0].metadata, "m");

    let internal = service
        .delete_topic("__consumer_offsets".into())
        .await
        .unwrap_err();
    assert_eq!(internal.code(), 29);
}
