//! Shard routing in QUIC connection IDs (docs/protocol.md, "Shard-aware clients").
//!
//! A broker runs one QUIC endpoint per shard (core) on one UDP address, and steers each
//! packet to a shard by the first byte of its destination connection ID, modulo the shard
//! count. The broker's shards issue connection IDs whose first byte names themselves; a
//! client that wants its connection served by a given shard picks its first Initial's
//! destination connection ID the same way.

/// A routing byte congruent to `shard` modulo `shard_count`, chosen near `random` (the
/// rest of the connection ID stays random). With one shard, `random` itself.
pub fn route_byte(random: u8, shard: u16, shard_count: u16) -> u8 {
    if shard_count <= 1 || shard_count > 255 {
        return random;
    }
    let n = shard_count;
    let shard = shard % n;
    let base = random as u16 - random as u16 % n;
    let mut b = base + shard;
    if b > 255 {
        b -= n;
    }
    b as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_byte_routes_to_the_asked_shard() {
        for shard_count in 1..=255u16 {
            for shard in 0..shard_count {
                for random in [0u8, 1, 97, 200, 254, 255] {
                    let b = route_byte(random, shard, shard_count);
                    assert_eq!(
                        b as u16 % shard_count,
                        shard,
                        "{random} {shard}/{shard_count}"
                    );
                }
            }
        }
    }
}
