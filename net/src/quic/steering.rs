//! Every packet of a QUIC connection reaches the shard that owns the connection, even
//! after the client's address changes (connection migration, NAT rebinding).
//!
//! Each shard has its own endpoint on its own `SO_REUSEPORT` socket of the listen
//! address. The kernel would pick a socket by hashing the packet's addresses, which
//! changes when the client migrates: its packets would then reach a shard that does not
//! know the connection (and answers with a stateless reset). Instead:
//! - each shard issues connection IDs whose first byte is its index modulo the shard count
//!   ([`ShardCids`]; the other bytes stay random), and
//! - a classic BPF program on the socket group ([`attach`]) picks the socket from the
//!   destination connection ID: byte 6 of a long-header packet (after flags, version and
//!   the DCID length), byte 1 of a short-header packet, modulo the shard count.
//!
//! A client's first Initial carries a DCID the client chose at random; it lands on some
//! shard, which answers with its own connection IDs, and from then on the client addresses
//! that shard. The routing byte tells an observer which shard serves a connection and
//! nothing else (the QUIC-LB approach: routing information in the CID).

use std::io;
use std::os::fd::AsRawFd;
use std::time::Duration;

use quinn::{ConnectionId, ConnectionIdGenerator};

/// Connection ID length: quinn's default.
pub const CID_BYTES: usize = 8;
/// Shards one routing byte can name.
pub const MAX_STEERED_SHARDS: usize = 255;

/// Shard routing byte index inside the packet, for each header form (RFC 9000, 17.2/17.3).
const LONG_HEADER_DCID_AT: u32 = 6;
const SHORT_HEADER_DCID_AT: u32 = 1;

/// Connection IDs for shard `shard` of `shards`: random, except that the first byte is
/// congruent to `shard` modulo `shards`.
#[derive(Debug, Clone, Copy)]
pub struct ShardCids {
    shard: u8,
    shards: u8,
}

impl ShardCids {
    /// `shards` is at most [`MAX_STEERED_SHARDS`] (one routing byte).
    pub fn new(shard: usize, shards: usize) -> ShardCids {
        assert!((1..=MAX_STEERED_SHARDS).contains(&shards) && shard < shards);
        ShardCids {
            shard: shard as u8,
            shards: shards as u8,
        }
    }

    fn route(&self, random: u8) -> u8 {
        quiver_protocol::route::route_byte(random, self.shard as u16, self.shards as u16)
    }
}

impl ConnectionIdGenerator for ShardCids {
    fn generate_cid(&mut self) -> ConnectionId {
        let mut bytes: [u8; CID_BYTES] = rand::random();
        bytes[0] = self.route(bytes[0]);
        ConnectionId::new(&bytes)
    }

    fn cid_len(&self) -> usize {
        CID_BYTES
    }

    fn cid_lifetime(&self) -> Option<Duration> {
        None
    }
}

/// Shard index a packet is steered to (what the BPF program computes), for tests and logs.
pub fn shard_of_packet(packet: &[u8], shards: usize) -> Option<usize> {
    let first = *packet.first()?;
    let at = if first & 0x80 != 0 {
        LONG_HEADER_DCID_AT
    } else {
        SHORT_HEADER_DCID_AT
    };
    packet.get(at as usize).map(|b| *b as usize % shards)
}

/// Installs the steering program on the `SO_REUSEPORT` group `socket` belongs to. The
/// group's sockets must have been bound in shard order (socket `i` is shard `i`).
pub fn attach(socket: &std::net::UdpSocket, shards: usize) -> io::Result<()> {
    // Classic BPF opcodes (linux/bpf_common.h, linux/filter.h).
    use libc::{
        BPF_A, BPF_ABS, BPF_ALU, BPF_B, BPF_JA, BPF_JMP, BPF_JSET, BPF_K, BPF_LD, BPF_MOD, BPF_RET,
    };
    const LD_B_ABS: u16 = (BPF_LD | BPF_B | BPF_ABS) as u16;
    const JMP_JSET_K: u16 = (BPF_JMP | BPF_JSET | BPF_K) as u16;
    const JMP_JA: u16 = (BPF_JMP | BPF_JA) as u16;
    const ALU_MOD_K: u16 = (BPF_ALU | BPF_MOD | BPF_K) as u16;
    const RET_A: u16 = (BPF_RET | BPF_A) as u16;
    let op = |code: u16, jt: u8, jf: u8, k: u32| libc::sock_filter { code, jt, jf, k };
    // The program sees the UDP payload at offset 0. A load past the end of a short
    // datagram ends the program with 0: socket 0, which drops or resets it as it would.
    let mut program = [
        op(LD_B_ABS, 0, 0, 0),                     // 0: A = flags byte
        op(JMP_JSET_K, 0, 2, 0x80),                // 1: long header? 2 : 4
        op(LD_B_ABS, 0, 0, LONG_HEADER_DCID_AT),   // 2: A = DCID[0] (long)
        op(JMP_JA, 0, 0, 1),                       // 3: -> 5
        op(LD_B_ABS, 0, 0, SHORT_HEADER_DCID_AT),  // 4: A = DCID[0] (short)
        op(ALU_MOD_K, 0, 0, shards.max(1) as u32), // 5: A %= shards
        op(RET_A, 0, 0, 0),                        // 6: socket index A
    ];
    let fprog = libc::sock_fprog {
        len: program.len() as u16,
        filter: program.as_mut_ptr(),
    };
    // SAFETY: `fprog` points at `program`, both alive for the call; the kernel copies the
    // program and validates it.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_REUSEPORT_CBPF,
            &fprog as *const libc::sock_fprog as *const libc::c_void,
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;

    fn group(shards: usize) -> Vec<UdpSocket> {
        let mut addr: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
        let mut sockets = Vec::new();
        for _ in 0..shards {
            let s = socket2::Socket::new(
                socket2::Domain::IPV4,
                socket2::Type::DGRAM,
                Some(socket2::Protocol::UDP),
            )
            .unwrap();
            s.set_reuse_port(true).unwrap();
            s.bind(&addr.into()).unwrap();
            let s: UdpSocket = s.into();
            addr = s.local_addr().unwrap();
            s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
            sockets.push(s);
        }
        attach(&sockets[0], shards).unwrap();
        sockets
    }

    fn receiver(sockets: &[UdpSocket], packet: &[u8]) -> Option<usize> {
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        client
            .send_to(packet, sockets[0].local_addr().unwrap())
            .unwrap();
        let mut buf = [0u8; 64];
        sockets.iter().position(|s| {
            s.recv_from(&mut buf)
                .map(|(n, _)| &buf[..n] == packet)
                .unwrap_or(false)
        })
    }

    #[test]
    fn packets_reach_the_shard_named_by_their_connection_id() {
        for shards in [2usize, 3] {
            let sockets = group(shards);
            for shard in 0..shards {
                let mut cids = ShardCids::new(shard, shards);
                for _ in 0..4 {
                    let cid = cids.generate_cid();
                    assert_eq!(cid[0] as usize % shards, shard);
                    // Short header: flags, then the DCID.
                    let mut short = vec![0x40];
                    short.extend_from_slice(&cid);
                    short.extend_from_slice(&[0u8; 20]);
                    assert_eq!(shard_of_packet(&short, shards), Some(shard));
                    assert_eq!(receiver(&sockets, &short), Some(shard), "short, {shards}");
                    // Long header: flags, version, DCID length, DCID.
                    let mut long = vec![0xc0, 0, 0, 0, 1, CID_BYTES as u8];
                    long.extend_from_slice(&cid);
                    long.extend_from_slice(&[0u8; 20]);
                    assert_eq!(receiver(&sockets, &long), Some(shard), "long, {shards}");
                }
            }
        }
    }

    #[test]
    fn routing_byte_stays_random_above_the_shard_bits() {
        let cids = ShardCids::new(1, 3);
        for b in 0..=255u8 {
            let r = cids.route(b);
            assert_eq!(r % 3, 1);
            assert!((r as i16 - b as i16).abs() < 3 + 3);
        }
        let one = ShardCids::new(0, 1);
        assert_eq!(one.route(77), 77);
    }
}
