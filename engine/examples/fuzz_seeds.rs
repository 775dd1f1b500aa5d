//! Writes the seed corpora of the fuzz targets: a few small valid batches and segments,
//! committed under fuzz/seeds/<target>/. Rerun after changing the batch format:
//!
//!     cargo run -p quiver-engine --example fuzz_seeds -- fuzz/seeds

use std::path::{Path, PathBuf};

use quiver_engine::batch::{self, build};

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::create_dir_all(dir).expect("create seed dir");
    std::fs::write(dir.join(name), bytes).expect("write seed");
}

/// `n` batches with dense offsets from `base`, of a few shapes.
fn segment(base: i64, n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut next = base;
    for i in 0..n {
        let key = format!("key-{i}");
        let values: Vec<Vec<u8>> = (0..1 + i % 3).map(|r| vec![b'v'; r * 5]).collect();
        let records: Vec<(Option<&[u8]>, &[u8])> = values
            .iter()
            .enumerate()
            .map(|(r, v)| ((r % 2 == 0).then_some(key.as_bytes()), v.as_slice()))
            .collect();
        let mut b = build::batch_with_producer(&records, 1000 + i as i64, 7, 0, i as i32);
        batch::patch(&mut b, next, 3);
        next += records.len() as i64;
        out.extend_from_slice(&b);
    }
    out
}

/// A batch whose attributes claim a compression codec (payload kept as is).
fn with_attributes(mut b: Vec<u8>, attributes: i16) -> Vec<u8> {
    b[21..23].copy_from_slice(&attributes.to_be_bytes());
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

fn main() {
    let root = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "fuzz/seeds".into()),
    );

    let dir = root.join("batch_validate");
    let one = build::batch(&[(None, b"hello")], 1);
    write(&dir, "one_record", &one);
    write(
        &dir,
        "three_records_keys",
        &build::batch(&[(Some(b"k"), b"a"), (None, b""), (Some(b""), b"ccc")], 5),
    );
    write(
        &dir,
        "idempotent",
        &build::batch_with_producer(&[(None, b"x"), (None, b"y")], 9, 42, 1, 100),
    );
    let many: Vec<Vec<u8>> = (0..64).map(|i| vec![i as u8; i % 9]).collect();
    let many: Vec<(Option<&[u8]>, &[u8])> = many.iter().map(|v| (None, v.as_slice())).collect();
    write(&dir, "sixty_four_records", &build::batch(&many, 2));
    write(&dir, "gzip_attribute", &with_attributes(one.clone(), 1));
    write(&dir, "two_batches", &segment(0, 2));

    let dir = root.join("segment_recovery");
    let seg = segment(0, 4);
    write(&dir, "clean", &seg);
    let mut padded = seg.clone();
    padded.resize(seg.len().div_ceil(512) * 512, 0);
    write(&dir, "block_padding", &padded);
    let mut torn = seg.clone();
    torn.extend_from_slice(&segment(10, 1)[..30]);
    write(&dir, "torn_tail", &torn);
    write(&dir, "base_1000", &segment(1000, 3));
}
