//! What broker and client share on top of quinn (feature `quinn`): the transport settings
//! (flow-control windows sized for bulk transfer, path-MTU discovery up to loopback's packet
//! size, a fixed large packet size for peers on loopback; docs/ARCHITECTURE.md says why, the
//! values are the named limits in [`crate::limits`]) and the frame body readers.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use quinn::{ReadExactError, RecvStream, VarInt};

use crate::limits::*;

/// Whether a peer's path MTU is known without discovery: loopback's is 65,536.
///
/// Connections to such a peer start at `MAX_UDP_PAYLOAD_BYTES` and never go below
/// `LOOPBACK_MIN_MTU_BYTES`. Losses on loopback are receive-buffer overflows on a busy host,
/// not a path that drops large packets, but quinn's black-hole detector reads a burst of them
/// as one and falls back to 1,200-byte packets for `MTU_BLACK_HOLE_COOLDOWN_MS`.
pub fn mtu_is_known(peer: IpAddr) -> bool {
    peer.is_loopback()
}

/// The transport config for a connection: `max_bidi_streams` is how many streams the peer
/// may open (the broker allows `MAX_STREAMS_PER_CONNECTION`, a client none), `loopback`
/// whether [`mtu_is_known`] for the peer.
pub fn transport_config(max_bidi_streams: u32, loopback: bool) -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    t.max_concurrent_bidi_streams(VarInt::from_u32(max_bidi_streams))
        .max_concurrent_uni_streams(VarInt::from_u32(0))
        .stream_receive_window(VarInt::from_u32(STREAM_RECEIVE_WINDOW_BYTES))
        .receive_window(VarInt::from_u32(CONNECTION_RECEIVE_WINDOW_BYTES))
        .send_window(SEND_WINDOW_BYTES)
        .keep_alive_interval(Some(Duration::from_secs(5)));
    let mut mtu = quinn::MtuDiscoveryConfig::default();
    mtu.upper_bound(MAX_UDP_PAYLOAD_BYTES)
        .black_hole_cooldown(Duration::from_millis(MTU_BLACK_HOLE_COOLDOWN_MS));
    t.mtu_discovery_config(Some(mtu));
    if loopback {
        // quinn batches up to 10 packets per sendmsg with UDP GSO and does not cap the batch
        // at the 64 KiB the kernel takes: with packets above ~6.5 KB the kernel refuses the
        // batch (EMSGSIZE), which quinn-udp drops silently, and the losses trip the black-hole
        // detector. Packets of 64 KB need no batching: one sendmsg each.
        let mut cubic = quinn::congestion::CubicConfig::default();
        cubic.initial_window(LOOPBACK_INITIAL_WINDOW_BYTES);
        t.initial_mtu(MAX_UDP_PAYLOAD_BYTES)
            .min_mtu(LOOPBACK_MIN_MTU_BYTES)
            .enable_segmentation_offload(false)
            .congestion_controller_factory(Arc::new(cubic));
    }
    t
}

/// A server config with the broker's transport settings for non-loopback peers, and one for
/// loopback peers (choose per connection with `quinn::Incoming::accept_with`).
pub fn server_transport_configs() -> (Arc<quinn::TransportConfig>, Arc<quinn::TransportConfig>) {
    (
        Arc::new(transport_config(MAX_STREAMS_PER_CONNECTION, false)),
        Arc::new(transport_config(MAX_STREAMS_PER_CONNECTION, true)),
    )
}

/// A frame body as received: views of the decrypted packets, in order.
#[derive(Debug, Default)]
pub struct ReceivedBody {
    pub chunks: Vec<Bytes>,
    /// Bytes copied to receive it: 0 unless it came in more than
    /// `MAX_SHARED_CHUNKS_PER_BODY` chunks.
    pub bytes_copied: usize,
}

/// Reads a frame body of `len` bytes without joining it: the chunks are the views of the
/// decrypted packets quinn hands over, so receiving copies nothing. Past
/// `MAX_SHARED_CHUNKS_PER_BODY` chunks the rest is copied into one buffer, so a body sent
/// in tiny pieces cannot pin a packet buffer per byte. The broker reads requests so: a
/// PRODUCE's records go to the engine as these chunks.
pub async fn read_body_chunks(
    recv: &mut RecvStream,
    len: usize,
) -> Result<ReceivedBody, ReadExactError> {
    let mut body = ReceivedBody::default();
    let mut rest = BytesMut::new();
    let mut received = 0;
    while received < len {
        let Some(chunk) = recv.read_chunk(len - received, true).await? else {
            return Err(ReadExactError::FinishedEarly(received));
        };
        let chunk = chunk.bytes;
        received += chunk.len();
        if chunk.is_empty() {
            continue;
        }
        if body.chunks.len() + 1 < MAX_SHARED_CHUNKS_PER_BODY {
            body.chunks.push(chunk);
        } else {
            if rest.capacity() == 0 {
                rest.reserve(len - received + chunk.len());
            }
            rest.extend_from_slice(&chunk);
            body.bytes_copied += chunk.len();
        }
    }
    if !rest.is_empty() {
        body.chunks.push(rest.freeze());
    }
    Ok(body)
}

/// Reads a frame body of `len` bytes. quinn hands over received stream data as views of the
/// decrypted packets: a body within one packet is taken as is, a larger one is copied once
/// into a buffer that is not zeroed first (`read_exact` into a zeroed `Vec` cost a memset and,
/// for fresh pages, a page fault per 4 KiB on top of the copy).
pub async fn read_body(recv: &mut RecvStream, len: usize) -> Result<Bytes, ReadExactError> {
    let mut body = BytesMut::new();
    while body.len() < len {
        let Some(chunk) = recv.read_chunk(len - body.len(), true).await? else {
            return Err(ReadExactError::FinishedEarly(body.len()));
        };
        if chunk.bytes.len() == len {
            return Ok(chunk.bytes);
        }
        if body.capacity() == 0 {
            body.reserve(len);
        }
        body.extend_from_slice(&chunk.bytes);
    }
    Ok(body.freeze())
}
