//! The crash test's workload, shared by the child that writes it (`crash_child`) and the
//! test that verifies it (`engine/tests/crash.rs`, which includes this file by path).
//!
//! Record offsets are assigned by the log after the batch (and its CRC) is built, so
//! record contents cannot be a function of their offset. Instead every batch has an
//! identity `(run, producer, sequence)`; its record count, keys and values are pure
//! functions of that identity, and the child's `ACK` line ties the identity to the
//! offsets the log assigned. The verifier rebuilds every byte from the identity.

#![allow(dead_code)] // each includer uses a different half

use quiver_engine::batch::{self, build};
use xxhash_rust::xxh3::xxh3_64_with_seed;

/// Records per batch: 1..=MAX_RECORDS_PER_BATCH.
pub const MAX_RECORDS_PER_BATCH: u64 = 64;
/// Largest record value in bytes.
pub const MAX_VALUE_BYTES: u64 = 300;

/// Which child wrote a batch, which of its producers, and that producer's batch number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BatchId {
    pub run: u64,
    pub producer: u32,
    pub sequence: u64,
}

impl BatchId {
    fn hash(&self, salt: u64) -> u64 {
        let mut bytes = [0u8; 20];
        bytes[..8].copy_from_slice(&self.run.to_le_bytes());
        bytes[8..12].copy_from_slice(&self.producer.to_le_bytes());
        bytes[12..].copy_from_slice(&self.sequence.to_le_bytes());
        xxh3_64_with_seed(&bytes, salt)
    }

    pub fn record_count(&self) -> u32 {
        1 + (self.hash(1) % MAX_RECORDS_PER_BATCH) as u32
    }

    pub fn key(&self, index: u32) -> Vec<u8> {
        format!(
            "r{}-p{}-s{}-i{}",
            self.run, self.producer, self.sequence, index
        )
        .into_bytes()
    }

    /// Pseudo-random bytes of pseudo-random length, derived from the record's identity.
    pub fn value(&self, index: u32) -> Vec<u8> {
        let seed = self.hash(2) ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let len = (xxh3_64_with_seed(b"len", seed) % (MAX_VALUE_BYTES + 1)) as usize;
        let mut out = Vec::with_capacity(len + 8);
        let mut block = 0u64;
        while out.len() < len {
            out.extend_from_slice(&xxh3_64_with_seed(&block.to_le_bytes(), seed).to_le_bytes());
            block += 1;
        }
        out.truncate(len);
        out
    }

    /// The whole batch as a producer sends it (offsets are assigned by the log).
    pub fn batch(&self) -> Vec<u8> {
        let n = self.record_count();
        let keys: Vec<Vec<u8>> = (0..n).map(|i| self.key(i)).collect();
        let values: Vec<Vec<u8>> = (0..n).map(|i| self.value(i)).collect();
        let records: Vec<(Option<&[u8]>, &[u8])> = keys
            .iter()
            .zip(&values)
            .map(|(k, v)| (Some(k.as_slice()), v.as_slice()))
            .collect();
        build::batch(&records, 1_700_000_000_000 + self.sequence as i64)
    }

    /// Parses a key written by [`BatchId::key`]: the batch identity and record index.
    pub fn parse_key(key: &[u8]) -> Option<(BatchId, u32)> {
        let s = std::str::from_utf8(key).ok()?;
        let mut parts = s.split('-');
        let mut field =
            |prefix: char| -> Option<u64> { parts.next()?.strip_prefix(prefix)?.parse().ok() };
        let run = field('r')?;
        let producer = u32::try_from(field('p')?).ok()?;
        let sequence = field('s')?;
        let index = u32::try_from(field('i')?).ok()?;
        Some((
            BatchId {
                run,
                producer,
                sequence,
            },
            index,
        ))
    }
}

/// One line the child prints once an append is committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    pub base_offset: i64,
    pub last_offset: i64,
    pub id: BatchId,
}

impl Ack {
    pub fn line(&self) -> String {
        format!(
            "ACK {} {} {} {} {}",
            self.base_offset, self.last_offset, self.id.run, self.id.producer, self.id.sequence
        )
    }

    pub fn parse(line: &str) -> Option<Ack> {
        let mut it = line.strip_prefix("ACK ")?.split(' ');
        let ack = Ack {
            base_offset: it.next()?.parse().ok()?,
            last_offset: it.next()?.parse().ok()?,
            id: BatchId {
                run: it.next()?.parse().ok()?,
                producer: it.next()?.parse().ok()?,
                sequence: it.next()?.parse().ok()?,
            },
        };
        it.next().is_none().then_some(ack)
    }
}

/// An uncompressed record's key and value (headers are not used by the workload).
pub struct Record<'a> {
    pub offset_delta: i32,
    pub key: Option<&'a [u8]>,
    pub value: &'a [u8],
}

/// Parses the records of a batch that passed `batch::validate_batch`.
pub fn records(batch_bytes: &[u8]) -> Result<Vec<Record<'_>>, String> {
    let header = batch::parse_header(batch_bytes).map_err(|e| e.to_string())?;
    let mut rest = &batch_bytes[quiver_engine::limits::BATCH_HEADER_BYTES..];
    let mut out = Vec::new();
    for i in 0..header.records_count.get() {
        let err = |what: &str| format!("record {i}: {what}");
        let (len, used) = batch::read_varint(rest).ok_or_else(|| err("length"))?;
        rest = &rest[used..];
        let len = usize::try_from(len).map_err(|_| err("negative length"))?;
        let body = rest.get(..len).ok_or_else(|| err("short body"))?;
        rest = &rest[len..];
        let mut b = body.get(1..).ok_or_else(|| err("attributes"))?; // attributes
        let (_, used) = batch::read_varlong(b).ok_or_else(|| err("timestamp"))?;
        b = &b[used..];
        let (offset_delta, used) = batch::read_varint(b).ok_or_else(|| err("offset delta"))?;
        b = &b[used..];
        let (key_len, used) = batch::read_varint(b).ok_or_else(|| err("key length"))?;
        b = &b[used..];
        let key = if key_len < 0 {
            None
        } else {
            let k = b.get(..key_len as usize).ok_or_else(|| err("key"))?;
            b = &b[key_len as usize..];
            Some(k)
        };
        let (value_len, used) = batch::read_varint(b).ok_or_else(|| err("value length"))?;
        b = &b[used..];
        let value = b
            .get(..usize::try_from(value_len).map_err(|_| err("null value"))?)
            .ok_or_else(|| err("value"))?;
        out.push(Record {
            offset_delta,
            key,
            value,
        });
    }
    Ok(out)
}

/// splitmix64: a tiny seeded generator, so a failing run can be replayed from its seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }
}
