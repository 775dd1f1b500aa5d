//! Idempotent-producer bookkeeping for one partition: producer epochs and the last
//! few batch sequence ranges, so retried batches are recognised and not stored twice.
//!
//! Semantics follow Kafka's `ProducerStateManager`: an unknown producer is accepted at
//! any sequence (its state may have expired), an older epoch is fenced, a newer epoch
//! must start at sequence 0, and within an epoch sequences must be contiguous.
//! Pure logic; the log rebuilds it from batch headers on recovery.

use std::collections::{HashMap, VecDeque};

use crate::error::EngineError;
use crate::limits::{MAX_PRODUCERS_PER_PARTITION, PRODUCER_BATCHES_REMEMBERED};
use crate::types::Offset;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct BatchMeta {
    first_sequence: i32,
    last_sequence: i32,
    base_offset: Offset,
}

#[derive(Debug, Clone)]
struct ProducerEntry {
    epoch: i16,
    batches: VecDeque<BatchMeta>,
    last_used: u64,
}

/// The outcome of checking a batch's producer fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceCheck {
    /// Not an idempotent batch, or the next batch in sequence: append it.
    Append,
    /// A retry of a batch already stored at `base_offset`: acknowledge, do not append.
    Duplicate { base_offset: Offset },
}

#[derive(Debug, Default)]
pub struct ProducerStateTable {
    producers: HashMap<i64, ProducerEntry>,
    clock: u64,
}

fn next_sequence(seq: i32) -> i32 {
    if seq == i32::MAX {
        0
    } else {
        seq + 1
    }
}

impl ProducerStateTable {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.producers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    pub fn check(
        &self,
        producer_id: i64,
        epoch: i16,
        first_sequence: i32,
        record_count: i32,
    ) -> Result<SequenceCheck, EngineError> {
        if producer_id < 0 {
            return Ok(SequenceCheck::Append);
        }
        let Some(entry) = self.producers.get(&producer_id) else {
            return Ok(SequenceCheck::Append);
        };
        if epoch < entry.epoch {
            return Err(EngineError::InvalidProducerEpoch {
                got: epoch,
                current: entry.epoch,
            });
        }
        if epoch > entry.epoch {
            return if first_sequence == 0 {
                Ok(SequenceCheck::Append)
            } else {
                Err(EngineError::OutOfOrderSequence {
                    expected: 0,
                    got: first_sequence,
                })
            };
        }
        let last_sequence = first_sequence.wrapping_add(record_count - 1);
        if let Some(dup) = entry
            .batches
            .iter()
            .find(|b| b.first_sequence == first_sequence && b.last_sequence == last_sequence)
        {
            return Ok(SequenceCheck::Duplicate {
                base_offset: dup.base_offset,
            });
        }
        let expected = entry
            .batches
            .back()
            .map(|b| next_sequence(b.last_sequence))
            .unwrap_or(0);
        if first_sequence == expected || entry.batches.is_empty() {
            Ok(SequenceCheck::Append)
        } else {
            Err(EngineError::OutOfOrderSequence {
                expected,
                got: first_sequence,
            })
        }
    }

    /// Base offset of the last batch remembered for `producer_id` (compaction keeps that
    /// batch, possibly emptied, so replaying the log restores the producer's sequence).
    pub fn last_batch_offset(&self, producer_id: i64) -> Option<Offset> {
        self.producers
            .get(&producer_id)
            .and_then(|e| e.batches.back())
            .map(|b| b.base_offset)
    }

    /// Records an appended idempotent batch (also used when replaying the log).
    pub fn record(
        &mut self,
        producer_id: i64,
        epoch: i16,
        first_sequence: i32,
        record_count: i32,
        base_offset: Offset,
    ) {
        if producer_id < 0 {
            return;
        }
        self.clock += 1;
        if !self.producers.contains_key(&producer_id)
            && self.producers.len() >= MAX_PRODUCERS_PER_PARTITION
        {
            // At the limit, forget the least recently used producer; it is then treated
            // as unknown, which Kafka also does once producer state expires.
            if let Some((&lru, _)) = self.producers.iter().min_by_key(|(_, e)| e.last_used) {
                self.producers.remove(&lru);
            }
        }
        let entry = self.producers.entry(producer_id).or_insert(ProducerEntry {
            epoch,
            batches: VecDeque::new(),
            last_used: 0,
        });
        if epoch != entry.epoch {
            entry.epoch = epoch;
            entry.batches.clear();
        }
        entry.last_used = self.clock;
        if entry.batches.len() == PRODUCER_BATCHES_REMEMBERED {
            entry.batches.pop_front();
        }
        entry.batches.push_back(BatchMeta {
            first_sequence,
            last_sequence: first_sequence.wrapping_add(record_count - 1),
            base_offset,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_rules() {
        let mut t = ProducerStateTable::new();
        assert_eq!(t.check(7, 0, 0, 5).unwrap(), SequenceCheck::Append);
        t.record(7, 0, 0, 5, Offset(100));
        // retry of the same batch
        assert_eq!(
            t.check(7, 0, 0, 5).unwrap(),
            SequenceCheck::Duplicate {
                base_offset: Offset(100)
            }
        );
        // next in sequence
        assert_eq!(t.check(7, 0, 5, 3).unwrap(), SequenceCheck::Append);
        // gap
        assert!(matches!(
            t.check(7, 0, 9, 1),
            Err(EngineError::OutOfOrderSequence {
                expected: 5,
                got: 9
            })
        ));
        // fenced
        t.record(7, 2, 0, 1, Offset(200));
        assert!(matches!(
            t.check(7, 1, 1, 1),
            Err(EngineError::InvalidProducerEpoch { .. })
        ));
        // new epoch must start at 0
        assert!(t.check(7, 3, 4, 1).is_err());
        assert_eq!(t.check(7, 3, 0, 1).unwrap(), SequenceCheck::Append);
        // unknown producers and non-idempotent batches pass
        assert_eq!(t.check(99, 0, 1234, 1).unwrap(), SequenceCheck::Append);
        assert_eq!(t.check(-1, -1, -1, 1).unwrap(), SequenceCheck::Append);
    }

    #[test]
    fn remembers_only_last_five() {
        let mut t = ProducerStateTable::new();
        for i in 0..7 {
            t.record(1, 0, i, 1, Offset(i as i64));
        }
        assert!(matches!(
            t.check(1, 0, 6, 1).unwrap(),
            SequenceCheck::Duplicate { .. }
        ));
        assert!(matches!(
            t.check(1, 0, 2, 1).unwrap(),
            SequenceCheck::Duplicate { .. }
        ));
        assert!(t.check(1, 0, 1, 1).is_err()); // forgotten and not next: out of order
    }

    #[test]
    fn sequence_wraps() {
        let mut t = ProducerStateTable::new();
        t.record(1, 0, i32::MAX, 1, Offset(0));
        assert_eq!(t.check(1, 0, 0, 1).unwrap(), SequenceCheck::Append);
    }
}
