//! The shard's shared `syncfs` (engine/src/group_sync.rs) on real files: many partitions'
//! commits share it, and a commit never counts as synced by a `syncfs` that began before
//! it joined.

mod common;

use std::path::PathBuf;
use std::rc::Rc;

use glommio::io::DmaFile;
use quiver_engine::batch::{self, build};
use quiver_engine::group_sync;
use quiver_engine::log::{LogConfig, PartitionLog};
use quiver_engine::types::{LeaderEpoch, Offset};

fn run<F, Fut>(name: &str, f: F)
where
    F: FnOnce(PathBuf) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + 'static,
{
    common::run_with_dir(&format!("group-sync-{name}"), f)
}

fn batch_for(partition: usize, round: usize) -> Vec<u8> {
    let value = format!("p{partition:03}-r{round:03}").into_bytes();
    build::batch(&[(None, value.as_slice())], 1_000 + round as i64)
}

async fn yield_until(mut done: impl FnMut() -> bool) {
    for _ in 0..100_000 {
        if done() {
            return;
        }
        futures_lite::future::yield_now().await;
    }
    panic!("condition not reached");
}

async fn open_logs(dir: &std::path::Path, partitions: usize) -> Vec<Rc<PartitionLog>> {
    let mut logs = Vec::new();
    for p in 0..partitions {
        let d = dir.join(format!("p-{p}"));
        std::fs::create_dir_all(&d).unwrap();
        logs.push(PartitionLog::open(&d, LogConfig::default()).await.unwrap());
    }
    logs
}

/// Every log appends one batch at the same time; waits until all are committed.
async fn commit_round(logs: &[Rc<PartitionLog>], round: usize) {
    let tasks: Vec<_> = logs
        .iter()
        .enumerate()
        .map(|(p, log)| {
            let log = Rc::clone(log);
            glommio::spawn_local(async move {
                let ticket = log
                    .append(&batch_for(p, round), LeaderEpoch(1))
                    .await
                    .unwrap();
                ticket.committed().await.unwrap().base_offset
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await, Offset(round as i64));
    }
}

/// 32 partitions of one shard commit rounds at the same time: with the default policy the
/// first syncs go out alone, then (the shard busy) the rest share `syncfs` calls; every
/// append commits, and each log reads back exactly its own records after a reopen.
#[test]
fn many_partitions_share_syncfs_and_read_back_after_reopen() {
    run("many", |dir| async move {
        const PARTITIONS: usize = 32;
        const ROUNDS: usize = 5;
        group_sync::init(group_sync::Policy::default(), &dir).unwrap();
        let logs = open_logs(&dir, PARTITIONS).await;
        for round in 0..ROUNDS {
            commit_round(&logs, round).await;
        }
        let stats = group_sync::stats();
        assert!(stats.fdatasyncs >= 1, "{stats:?}");
        assert!(stats.syncfs_completed >= 1, "{stats:?}");
        assert!(
            stats.syncfs_members > stats.syncfs_completed,
            "no syncfs covered more than one commit: {stats:?}"
        );
        assert_eq!(
            stats.fdatasyncs + stats.syncfs_members,
            (PARTITIONS * ROUNDS) as u64,
            "every round synced exactly once: {stats:?}"
        );
        for log in &logs {
            log.flushed().await;
        }
        drop(logs);
        for (p, log) in open_logs(&dir, PARTITIONS).await.iter().enumerate() {
            assert_eq!(log.log_end_offset(), Offset(ROUNDS as i64));
            let out = log.read(Offset(0), 1 << 20).await.unwrap();
            let bytes: Vec<u8> = out.chunks.iter().flat_map(|c| c.iter().copied()).collect();
            let mut pos = 0;
            for round in 0..ROUNDS {
                let h = batch::parse_header(&bytes[pos..]).unwrap();
                let len = h.total_len();
                let expected = batch_for(p, round);
                // Byte for byte from the magic on; before it the stored copy carries the
                // assigned offset and the leader epoch.
                assert_eq!(h.base_offset.get(), round as i64);
                assert_eq!(bytes[pos + 16..pos + len], expected[16..]);
                pos += len;
            }
            assert_eq!(pos, bytes.len());
        }
    });
}

/// Commits that join while a `syncfs` runs are answered only by the next one, which they
/// share.
#[test]
fn a_commit_joining_during_a_syncfs_waits_for_the_next() {
    run("order", |dir| async move {
        group_sync::set_policy(group_sync::Policy {
            busy_syncs: 0,
            min_concurrent: 0,
        });
        let mut files = Vec::new();
        for name in ["a", "b", "c"] {
            let f = DmaFile::create(dir.join(name)).await.unwrap();
            let mut buf = f.alloc_dma_buffer(4096);
            buf.as_bytes_mut().fill(7);
            f.write_at(buf, 0).await.unwrap();
            files.push(Rc::new(f));
        }
        let sync = |f: &Rc<DmaFile>| {
            let f = Rc::clone(f);
            glommio::spawn_local(async move { group_sync::sync_file(&f).await.unwrap() })
        };

        // Start one; while its syncfs is in flight, two more join in one poll: they share
        // the next syncfs, and neither is answered by the one already running.
        let mut checked = 0;
        for _ in 0..20 {
            let before = group_sync::stats();
            let first = sync(&files[0]);
            yield_until(|| group_sync::stats().syncfs_started == before.syncfs_started + 1).await;
            let running = group_sync::stats().syncfs_completed == before.syncfs_completed;
            let (b, c) = futures::join!(
                group_sync::sync_file(&files[1]),
                group_sync::sync_file(&files[2])
            );
            b.unwrap();
            c.unwrap();
            let after = group_sync::stats();
            first.await;
            if running {
                assert_eq!(
                    after.syncfs_started,
                    before.syncfs_started + 2,
                    "a commit that joined during a syncfs was answered by it: {after:?}"
                );
                assert_eq!(after.syncfs_members, before.syncfs_members + 3, "{after:?}");
                checked += 1;
            }
        }
        assert!(
            checked > 0,
            "no syncfs was still running when the second commit joined"
        );
        assert_eq!(group_sync::stats().fdatasyncs, 0);
    });
}

/// A quiet shard (below `GROUP_SYNC_BUSY_RATE` in its window) keeps one
/// `fdatasync` per commit even when commits overlap: a lone `syncfs` is the slower call.
#[test]
fn a_quiet_shard_keeps_fdatasync_for_overlapping_commits() {
    // 8 partitions, 2 rounds: 16 syncs, within one quiet window.
    assert!(16 <= group_sync::Policy::default().busy_syncs);
    run("quiet", |dir| async move {
        let logs = open_logs(&dir, 8).await;
        for round in 0..2 {
            commit_round(&logs, round).await;
        }
        let stats = group_sync::stats();
        assert_eq!(
            (stats.fdatasyncs, stats.syncfs_started),
            (16, 0),
            "{stats:?}"
        );
    });
}
