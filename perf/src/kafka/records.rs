//! Record batches as the generator writes and reads them.
//!
//! Every value starts with [`SEND_TIMESTAMP_BYTES`] bytes: the message's intended send time in
//! nanoseconds since the Unix epoch, big-endian, so a consumer anywhere on the same host can
//! compute end-to-end latency. The rest of the value is filler taken from a random buffer.
//!
//! Batches are encoded with `kafka-protocol`'s `RecordBatchEncoder` (RecordBatch v2, CRC-32C,
//! compression). On the read side uncompressed batches are walked in place: header fields at
//! their fixed offsets, then each record's varints up to its value, without building a `Record`
//! per message (the crate's decoder allocates a `Record` and an `IndexMap` each, which would make
//! the consumer the bottleneck above ~1 GB/s). Compressed batches go through the crate's decoder.

use anyhow::{bail, Result};
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

/// Bytes of every value taken by the embedded send timestamp.
pub const SEND_TIMESTAMP_BYTES: usize = 8;
/// RecordBatch v2 header size, up to and including the record count.
pub const BATCH_HEADER_BYTES: usize = 61;
/// Size of the random buffer filler bytes are copied from.
pub const FILLER_BYTES: usize = 1024 * 1024;

const MAGIC_OFFSET: usize = 16;
const CRC_OFFSET: usize = 17;
const ATTRIBUTES_OFFSET: usize = 21;
const LAST_OFFSET_DELTA_OFFSET: usize = 23;
const COMPRESSION_MASK: i16 = 0x07;
const CONTROL_BATCH_BIT: i16 = 0x20;

/// xorshift64*: a fast, seedable generator for keys, sizes and filler. Not cryptographic.
#[derive(Debug, Clone)]
pub struct FastRng(u64);

impl FastRng {
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..bound` (bound > 0).
    pub fn below(&mut self, bound: u64) -> u64 {
        ((self.next_u64() as u128 * bound as u128) >> 64) as u64
    }
}

/// Filler bytes: random, as OMB's payload files are, so compression is measured on data it
/// cannot shrink rather than on a run of zeros.
pub fn filler(seed: u64) -> Bytes {
    let mut rng = FastRng::new(seed);
    let mut buffer = BytesMut::with_capacity(FILLER_BYTES);
    while buffer.len() < FILLER_BYTES {
        buffer.put_u64(rng.next_u64());
    }
    buffer.freeze()
}

/// One message waiting in an open batch.
#[derive(Debug, Clone, Copy)]
pub struct PendingMessage {
    pub intended_ns: u64,
    pub value_bytes: u32,
    pub key: Option<u64>,
}

/// Encodes RecordBatches of generated messages. Holds the filler and a scratch buffer for
/// values that is reused from batch to batch (its allocation is reclaimed once the encoder has
/// dropped the records that pointed into it), so steady-state encoding allocates nothing large.
pub struct BatchEncoder {
    filler: Bytes,
    filler_offset: usize,
    values: BytesMut,
}

impl BatchEncoder {
    pub fn new(seed: u64) -> Self {
        Self {
            filler: filler(seed),
            filler_offset: 0,
            values: BytesMut::new(),
        }
    }

    /// Appends `messages` as one RecordBatch v2 to `out`.
    pub fn encode(
        &mut self,
        out: &mut BytesMut,
        messages: &[PendingMessage],
        compression: Compression,
        batch_timestamp_ms: i64,
    ) -> Result<()> {
        let value_total: usize = messages.iter().map(|m| m.value_bytes as usize + 8).sum();
        // Reclaims the previous batch's allocation: nothing points into it any more.
        self.values.clear();
        self.values.reserve(value_total);
        let values = &mut self.values;
        let filler = &self.filler;
        let mut ranges = Vec::with_capacity(messages.len());
        for message in messages {
            let start = values.len();
            values.put_u64(message.intended_ns);
            let mut remaining = (message.value_bytes as usize).saturating_sub(SEND_TIMESTAMP_BYTES);
            while remaining > 0 {
                if self.filler_offset >= filler.len() {
                    self.filler_offset = 0;
                }
                let take = remaining.min(filler.len() - self.filler_offset);
                values.put_slice(&filler[self.filler_offset..self.filler_offset + take]);
                self.filler_offset += take;
                remaining -= take;
            }
            let value_end = values.len();
            let key_range = message.key.map(|key| {
                values.put_u64(key);
                (value_end, values.len())
            });
            ranges.push(((start, value_end), key_range));
        }
        let values = values.split().freeze();
        let records: Vec<Record> = ranges
            .into_iter()
            .enumerate()
            .map(|(index, ((start, end), key_range))| Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: -1,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: index as i64,
                // The encoder starts a new batch wherever `offset - sequence` changes, so
                // the sequence must advance with the offset: -1 (no sequence, as for any
                // non-idempotent producer) on the first record, which becomes the batch's
                // baseSequence, and one more on each after it.
                sequence: index as i32 - 1,
                timestamp: batch_timestamp_ms,
                key: key_range.map(|(s, e)| values.slice(s..e)),
                value: Some(values.slice(start..end)),
                headers: IndexMap::new(),
            })
            .collect();
        RecordBatchEncoder::encode(
            out,
            records.iter(),
            &RecordEncodeOptions {
                version: 2,
                compression,
            },
        )?;
        Ok(())
    }
}

/// What a consumer learned from one partition's `records` bytes.
#[derive(Debug, Default, Clone, Copy)]
pub struct WalkSummary {
    pub batches: u64,
    pub records: u64,
    pub value_bytes: u64,
    /// Offset to fetch next (one past the last complete batch), if any batch was complete.
    pub next_offset: Option<i64>,
}

/// Walks complete batches in `records`, calling `on_value_timestamp(ns)` with each record's
/// embedded send time (values shorter than 8 bytes are counted but not timed). A partial batch
/// at the end (fetch responses may cut one) is ignored.
pub fn walk_batches(
    records: &Bytes,
    verify_crc: bool,
    mut on_value_timestamp: impl FnMut(u64),
) -> Result<WalkSummary> {
    let mut summary = WalkSummary::default();
    let mut position = 0usize;
    while records.len() - position >= BATCH_HEADER_BYTES {
        let header = &records[position..];
        let base_offset = i64::from_be_bytes(header[0..8].try_into().expect("8 bytes"));
        let batch_length = i32::from_be_bytes(header[8..12].try_into().expect("4 bytes"));
        if batch_length < (BATCH_HEADER_BYTES - 12) as i32 {
            bail!(
                "invalid batch at byte {position}: baseOffset {base_offset}, batchLength \
                 {batch_length} (a batch is at least {} bytes)",
                BATCH_HEADER_BYTES - 12
            );
        }
        let total = 12 + batch_length as usize;
        if header.len() < total {
            break;
        }
        let batch = records.slice(position..position + total);
        position += total;
        if batch[MAGIC_OFFSET] != 2 {
            bail!(
                "batch at offset {base_offset} has magic {}",
                batch[MAGIC_OFFSET]
            );
        }
        if verify_crc {
            let stored = u32::from_be_bytes(batch[CRC_OFFSET..CRC_OFFSET + 4].try_into()?);
            let computed = crc32c::crc32c(&batch[ATTRIBUTES_OFFSET..]);
            if stored != computed {
                bail!("batch at offset {base_offset}: CRC {stored:#x} != {computed:#x}");
            }
        }
        let attributes =
            i16::from_be_bytes(batch[ATTRIBUTES_OFFSET..ATTRIBUTES_OFFSET + 2].try_into()?);
        let last_offset_delta = i32::from_be_bytes(
            batch[LAST_OFFSET_DELTA_OFFSET..LAST_OFFSET_DELTA_OFFSET + 4].try_into()?,
        );
        summary.next_offset = Some(base_offset + last_offset_delta as i64 + 1);
        summary.batches += 1;
        if attributes & CONTROL_BATCH_BIT != 0 {
            continue;
        }
        if attributes & COMPRESSION_MASK == 0 {
            walk_plain_records(
                &batch[BATCH_HEADER_BYTES..],
                &mut summary,
                &mut on_value_timestamp,
            )?;
        } else {
            let mut buffer = batch.clone();
            let set = RecordBatchDecoder::decode(&mut buffer)?;
            for record in &set.records {
                summary.records += 1;
                if let Some(value) = &record.value {
                    summary.value_bytes += value.len() as u64;
                    if value.len() >= SEND_TIMESTAMP_BYTES {
                        on_value_timestamp(u64::from_be_bytes(value[..8].try_into()?));
                    }
                }
            }
        }
    }
    Ok(summary)
}

fn walk_plain_records(
    mut body: &[u8],
    summary: &mut WalkSummary,
    on_value_timestamp: &mut impl FnMut(u64),
) -> Result<()> {
    while !body.is_empty() {
        let length = read_varint(&mut body)?;
        if length < 0 || length as usize > body.len() {
            bail!("record length {length} with {} bytes left", body.len());
        }
        let (mut record, rest) = body.split_at(length as usize);
        body = rest;
        record = &record[1..]; // attributes
        read_varint(&mut record)?; // timestamp delta
        read_varint(&mut record)?; // offset delta
        let key_length = read_varint(&mut record)?;
        if key_length > 0 {
            record = record.get(key_length as usize..).unwrap_or_default();
        }
        let value_length = read_varint(&mut record)?;
        summary.records += 1;
        if value_length > 0 {
            summary.value_bytes += value_length as u64;
            if value_length as usize >= SEND_TIMESTAMP_BYTES && record.len() >= 8 {
                on_value_timestamp(u64::from_be_bytes(record[..8].try_into()?));
            }
        }
    }
    Ok(())
}

/// Kafka's zigzag varint (record fields), up to 64 bits.
fn read_varint(input: &mut &[u8]) -> Result<i64> {
    let mut value: u64 = 0;
    let mut shift = 0;
    loop {
        let Some((&byte, rest)) = input.split_first() else {
            bail!("truncated varint");
        };
        *input = rest;
        value |= ((byte & 0x7f) as u64) << shift;
        if byte & 0x80 == 0 {
            break;
        }
        shift += 7;
        if shift > 63 {
            bail!("varint longer than 10 bytes");
        }
    }
    Ok(((value >> 1) as i64) ^ -((value & 1) as i64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn messages(count: usize, size: u32, keyed: bool) -> Vec<PendingMessage> {
        (0..count)
            .map(|i| PendingMessage {
                intended_ns: 1_000_000 + i as u64,
                value_bytes: size,
                key: keyed.then_some(i as u64),
            })
            .collect()
    }

    #[test]
    fn walker_reads_back_every_timestamp_plain_and_compressed() {
        let mut encoder = BatchEncoder::new(7);
        for compression in [Compression::None, Compression::Lz4, Compression::Zstd] {
            for keyed in [false, true] {
                let mut out = BytesMut::new();
                let sent = messages(50, 1024, keyed);
                encoder.encode(&mut out, &sent, compression, 5).unwrap();
                let second = messages(3, 100, keyed);
                encoder.encode(&mut out, &second, compression, 5).unwrap();
                let bytes = out.freeze();
                let mut seen = Vec::new();
                let summary = walk_batches(&bytes, true, |ns| seen.push(ns)).unwrap();
                // One batch per encode call (the crate splits batches at any change of
                // offset minus sequence; a regression here made every record a batch).
                assert_eq!(summary.batches, 2);
                assert_eq!(summary.records, 53);
                assert_eq!(summary.value_bytes, 50 * 1024 + 300);
                assert_eq!(seen.len(), 53);
                assert_eq!(seen[0], 1_000_000);
                assert_eq!(seen[49], 1_000_049);
                // Both batches start at offset 0 (the broker assigns real offsets).
                assert_eq!(summary.next_offset, Some(3));
                let first = &bytes[..];
                // baseSequence -1: a non-idempotent producer's batch.
                assert_eq!(i32::from_be_bytes(first[53..57].try_into().unwrap()), -1);
            }
        }
    }

    #[test]
    fn partial_trailing_batch_is_ignored() {
        let mut encoder = BatchEncoder::new(1);
        let mut out = BytesMut::new();
        let batch = messages(10, 64, false);
        encoder
            .encode(&mut out, &batch, Compression::None, 0)
            .unwrap();
        let full = out.len();
        encoder
            .encode(&mut out, &batch, Compression::None, 0)
            .unwrap();
        let bytes = out.freeze().slice(..full + 40);
        let summary = walk_batches(&bytes, true, |_| {}).unwrap();
        assert_eq!(summary.records, 10);
    }

    #[test]
    fn zigzag_varints() {
        let mut input: &[u8] = &[0x00, 0x01, 0x02, 0xac, 0x02];
        assert_eq!(read_varint(&mut input).unwrap(), 0);
        assert_eq!(read_varint(&mut input).unwrap(), -1);
        assert_eq!(read_varint(&mut input).unwrap(), 1);
        assert_eq!(read_varint(&mut input).unwrap(), 150);
    }
}
