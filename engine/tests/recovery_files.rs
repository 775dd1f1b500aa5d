//! Recovery on real segment files agrees with the pure scanner (`recovery::scan_segment`)
//! on randomized segments: clean, padded, torn, corrupt, with offset gaps, larger than
//! one recovery read window, and followed by a next segment that does or does not
//! continue them. Seeded: RECOVERY_SEED replays a failure (the seed is printed).

mod common;

use std::path::{Path, PathBuf};

use quiver_engine::batch::{self, build};
use quiver_engine::limits::RECOVERY_READ_BYTES;
use quiver_engine::log::{LogConfig, PartitionLog};
use quiver_engine::recovery::scan_segment;
use quiver_engine::types::Offset;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const CASES: usize = 60;

fn segment_path(dir: &Path, base: i64) -> PathBuf {
    dir.join(format!("{base:020}.log"))
}

/// Valid batches with dense offsets from `base`, about `target_bytes` in all.
fn valid_batches(rng: &mut StdRng, base: i64, target_bytes: usize) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut next = base;
    let mut total = 0;
    while total < target_bytes {
        let n = rng.gen_range(1..=20);
        let size = if rng.gen_bool(0.1) {
            rng.gen_range(10_000..60_000)
        } else {
            rng.gen_range(0..300)
        };
        let values: Vec<Vec<u8>> = (0..n).map(|_| vec![rng.gen(); size / n]).collect();
        let records: Vec<(Option<&[u8]>, &[u8])> =
            values.iter().map(|v| (None, v.as_slice())).collect();
        let mut b = build::batch(&records, rng.gen_range(0..1_000_000));
        batch::patch(&mut b, next, 1);
        next += n as i64;
        total += b.len();
        out.push(b);
    }
    out
}

/// A segment's bytes: valid batches, then one kind of damage or padding.
fn segment(rng: &mut StdRng, base: i64) -> (Vec<u8>, &'static str) {
    let target = if rng.gen_bool(0.15) {
        RECOVERY_READ_BYTES + rng.gen_range(0..200_000)
    } else {
        rng.gen_range(0..20_000)
    };
    let mut parts = valid_batches(rng, base, target);
    let kind = match rng.gen_range(0..7) {
        0 => "clean",
        1 => {
            let len: usize = parts.iter().map(Vec::len).sum();
            let pad = if rng.gen_bool(0.5) {
                rng.gen_range(1..61)
            } else {
                len.div_ceil(512) * 512 + rng.gen_range(0..5000) - len
            };
            parts.push(vec![0; pad]);
            "zero padding"
        }
        2 => {
            let mut extra = valid_batches(rng, 0, 1).remove(0);
            let cut = rng.gen_range(1..extra.len());
            extra.truncate(cut);
            parts.push(extra);
            "torn tail"
        }
        3 if !parts.is_empty() => {
            let i = rng.gen_range(0..parts.len());
            let at = rng.gen_range(21..parts[i].len());
            parts[i][at] ^= 1 << rng.gen_range(0..8);
            "flipped bit"
        }
        4 if parts.len() > 1 => {
            let i = rng.gen_range(1..parts.len());
            let h = batch::parse_header(&parts[i]).unwrap();
            batch::patch(&mut parts[i], h.base_offset.get() + 1, 1);
            "offset gap"
        }
        5 => {
            let garbage: Vec<u8> = (0..rng.gen_range(1..3000)).map(|_| rng.gen()).collect();
            parts.push(garbage);
            "garbage tail"
        }
        _ => "clean",
    };
    (parts.concat(), kind)
}

#[test]
fn recovery_on_real_files_matches_the_pure_scanner() {
    let seed = std::env::var("RECOVERY_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::thread_rng().gen());
    eprintln!("recovery_files: RECOVERY_SEED={seed}");
    common::run_with_dir("recovery-files", move |root| async move {
        let mut rng = StdRng::seed_from_u64(seed);
        for case in 0..CASES {
            check_case(&root, &mut rng, case, seed).await;
        }
    });
}

async fn check_case(root: &Path, rng: &mut StdRng, case: usize, seed: u64) {
    let dir = root.join(format!("case-{case}"));
    let base = if rng.gen_bool(0.5) { 0 } else { 1000 };
    let (bytes, kind) = segment(rng, base);
    let (batches, summary) = scan_segment(Offset(base), &bytes);
    // A next segment: none, one continuing this one, or one past a gap. A segment with
    // no valid batch cannot be continued by another at the same base offset.
    let mut next_kind = rng.gen_range(0..3);
    if next_kind == 1 && summary.next_offset == Offset(base) {
        next_kind = 0;
    }
    let next_base = summary.next_offset.0 + i64::from(next_kind == 2);
    let context = format!(
        "RECOVERY_SEED={seed} case {case}: {kind}, {} bytes, next segment kind {next_kind}, \
         scanner says {summary:?}",
        bytes.len()
    );
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(segment_path(&dir, base), &bytes).unwrap();
    if next_kind > 0 {
        std::fs::write(segment_path(&dir, next_base), b"").unwrap();
    }

    let log = PartitionLog::open(&dir, LogConfig::default())
        .await
        .unwrap();
    assert_eq!(log.log_start_offset(), Offset(base), "{context}");
    assert_eq!(log.log_end_offset(), summary.next_offset, "{context}");
    let file_len = std::fs::metadata(segment_path(&dir, base)).unwrap().len();
    assert_eq!(
        file_len, summary.valid_len,
        "{context}: truncated elsewhere"
    );
    // The next segment survives only if it continues a segment that ended cleanly.
    let kept = next_kind > 0 && segment_path(&dir, next_base).exists();
    let expect_kept = match next_kind {
        0 => false,
        1 => summary.end.is_clean(),
        _ => false,
    };
    assert_eq!(kept, expect_kept, "{context}: next segment kept");

    // Everything the scanner kept is served, byte for byte.
    let mut served = Vec::new();
    let mut next = base;
    while next < log.high_watermark().0 {
        let out = log.read(Offset(next), 1 << 20).await.unwrap();
        assert!(out.total_len() > 0, "{context}: nothing at {next}");
        for c in &out.chunks {
            served.extend_from_slice(c);
        }
        let mut pos = 0;
        let all = served.len();
        // Advance `next` past the batches read so far.
        while pos < all {
            let h = batch::parse_header(&served[pos..]).unwrap();
            next = h.last_offset() + 1;
            pos += h.total_len();
        }
    }
    assert_eq!(served.len() as u64, summary.valid_len, "{context}");
    assert_eq!(served, bytes[..served.len()], "{context}");
    assert_eq!(
        batches.len(),
        {
            let mut n = 0;
            let mut p = 0;
            while p < served.len() {
                p += batch::parse_header(&served[p..]).unwrap().total_len();
                n += 1;
            }
            n
        },
        "{context}"
    );
    drop(log);
    std::fs::remove_dir_all(&dir).unwrap();
}
