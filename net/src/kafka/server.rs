//! The Kafka TCP listener and connection loop.
//!
//! Every shard binds the listen address with SO_REUSEPORT (glommio sets it), so the
//! kernel spreads connections across cores. A connection reads frames, starts a handler
//! task per request (pipelining), and a writer sends the responses strictly in request
//! order. At most `MAX_IN_FLIGHT_REQUESTS_PER_CONNECTION` requests run at once: beyond
//! that the reader stops reading, which pushes back on the client through TCP.

use std::cell::Cell;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd};
use std::rc::Rc;

use bytes::{Bytes, BytesMut};
use futures::{AsyncReadExt, AsyncWriteExt};
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use glommio::net::{TcpListener, TcpStream};
use glommio::sync::{Semaphore, StaticPermit};
use glommio::task::JoinHandle;
use kafka_protocol::messages::{ApiKey, RequestKind, ResponseKind};
use quiver_engine::types::ShardId;

use super::broker::shard;
use super::frame::{decode_request, encode_response, ErrorAction, FrameDecoder};
use super::groups::RequestContext;
use super::handlers;
use super::handlers::fetch_session::Owners;
use super::limits::{
    CONNECTION_MOVE_AFTER_REQUESTS, MAX_CONNECTIONS_PER_SHARD,
    MAX_IN_FLIGHT_REQUESTS_PER_CONNECTION, MAX_IN_FLIGHT_REQUEST_BYTES_PER_CONNECTION,
    MAX_MOVES_PER_CONNECTION,
};
use super::scatter::ScatterFrame;
use super::versions;

/// Bytes reserved for reads at a time when no larger frame is pending: later reads fill
/// the rest of the chunk until less than `MIN_READ_BYTES` of it is left.
const READ_CHUNK_BYTES: usize = 64 * 1024;
/// The least spare room a read goes into; with less, the next read starts a new chunk.
const MIN_READ_BYTES: usize = 4 * 1024;
const _: () = assert!(MIN_READ_BYTES <= READ_CHUNK_BYTES);
/// Buffers handed to one sendmsg call.
const MAX_IOVECS_PER_WRITE: usize = 64;

/// What the writer does with one slot of the in-order queue.
enum Slot {
    /// A running handler; `None` means the request has no response (acks=0 produce).
    /// The permit holds the request's bytes against the connection's budget until its
    /// response is written.
    Pending(JoinHandle<Option<ScatterFrame>>, StaticPermit),
    Ready(ScatterFrame),
    /// Everything before this is answered, then the connection closes.
    Close,
    /// Everything before this is answered; the writer stops without closing the socket,
    /// which moves to another shard.
    Handoff,
}

thread_local! {
    /// Kafka connections open on this shard, accepted here or moved here.
    static OPEN_CONNECTIONS: Cell<usize> = const { Cell::new(0) };
    /// Connections that moved to this shard because it owns their partitions.
    static CONNECTIONS_MOVED_IN: Cell<u64> = const { Cell::new(0) };
}

/// Connections that moved to this shard so far (logged when the shard stops).
pub fn connections_moved_in() -> u64 {
    CONNECTIONS_MOVED_IN.with(Cell::get)
}

/// Accepts Kafka connections on this shard until the listener fails.
pub async fn serve(addr: SocketAddr) -> io::Result<()> {
    let listener = TcpListener::bind(addr)?;
    tracing::info!(%addr, shard = shard().id().0, "kafka listener up");
    loop {
        let stream = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                glommio::timer::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        if OPEN_CONNECTIONS.with(Cell::get) >= MAX_CONNECTIONS_PER_SHARD {
            tracing::warn!(
                peer = ?stream.peer_addr().ok(),
                limit = MAX_CONNECTIONS_PER_SHARD,
                "connection limit reached; closing new connection"
            );
            drop(stream);
            continue;
        }
        spawn_connection(stream, BytesMut::new(), MAX_MOVES_PER_CONNECTION);
    }
}

/// Serves a connection on this shard. `buf` holds bytes already read from it (by the
/// shard it moved from).
fn spawn_connection(stream: TcpStream, buf: BytesMut, moves_left: u32) {
    OPEN_CONNECTIONS.with(|n| n.set(n.get() + 1));
    glommio::spawn_local(async move {
        let peer = stream.peer_addr().ok();
        if let Err(e) = connection(stream, buf, moves_left).await {
            tracing::debug!(?peer, error = %e, "connection ended with error");
        }
        OPEN_CONNECTIONS.with(|n| n.set(n.get() - 1));
    })
    .detach();
}

/// How the reading side of a connection ended.
enum ReadEnd {
    Closed,
    /// Every response is written; the connection continues on shard `to`, starting with
    /// the bytes in `buf`.
    Move {
        to: ShardId,
        buf: BytesMut,
    },
}

async fn connection(stream: TcpStream, buf: BytesMut, moves_left: u32) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let peer = stream.peer_addr().ok();
    let fd = stream.as_raw_fd();
    let (mut reader, writer) = stream.split();
    let (tx, rx) = local_channel::new_bounded(MAX_IN_FLIGHT_REQUESTS_PER_CONNECTION);
    let unanswered = Rc::new(Cell::new(0usize));
    let writer_task = glommio::spawn_local(write_responses(fd, writer, rx, Rc::clone(&unanswered)));
    let mut affinity = Affinity::new(moves_left);
    let read_result = read_requests(&mut reader, &tx, peer, buf, &unanswered, &mut affinity).await;
    drop(tx);
    let write_result = writer_task.await;
    match read_result? {
        ReadEnd::Closed => write_result,
        ReadEnd::Move { to, buf } => {
            write_result?;
            // SAFETY: `fd` belongs to the stream, whose read half is still alive here.
            let socket = unsafe { BorrowedFd::borrow_raw(fd) }.try_clone_to_owned()?;
            // Both halves gone: this shard's descriptor closes, the duplicate keeps the
            // socket (nothing shuts it down: the writer stopped without closing).
            drop(reader);
            move_connection(to, socket, buf, moves_left - 1).await
        }
    }
}

/// Hands a connection to shard `to`, which serves it from then on.
async fn move_connection(
    to: ShardId,
    socket: OwnedFd,
    buf: BytesMut,
    moves_left: u32,
) -> io::Result<()> {
    tracing::debug!(
        to = to.0,
        "connection moves to the shard owning its partitions"
    );
    shard()
        .ctx
        .run_on(to, move || async move {
            // SAFETY: `socket` is an open TCP socket this closure owns.
            let stream = unsafe { TcpStream::from_raw_fd(socket.into_raw_fd()) };
            CONNECTIONS_MOVED_IN.with(|n| n.set(n.get() + 1));
            spawn_connection(stream, buf, moves_left);
        })
        .await
        .map_err(|e| io::Error::other(e.to_string()))
}

/// Tracks which shard owns the partitions a connection's requests touch, to move the
/// connection there (limits: `CONNECTION_MOVE_AFTER_REQUESTS`, `MAX_MOVES_PER_CONNECTION`).
/// A producer or consumer of one partition whose connection the kernel handed to
/// another shard otherwise pays a cross-shard round trip on every request.
struct Affinity {
    moves_left: u32,
    candidate: Option<ShardId>,
    streak: u32,
}

impl Affinity {
    fn new(moves_left: u32) -> Self {
        Affinity {
            moves_left,
            candidate: None,
            streak: 0,
        }
    }

    fn observe(&mut self, body: &RequestKind) {
        if self.moves_left == 0 {
            return;
        }
        let me = shard();
        let mut owner: Option<ShardId> = None;
        let mut mixed = false;
        let mut note = |s: ShardId| match owner {
            None => owner = Some(s),
            Some(o) if o != s => mixed = true,
            Some(_) => {}
        };
        let mut unknown = false;
        match body {
            RequestKind::Produce(r) => {
                for t in &r.topic_data {
                    for p in &t.partition_data {
                        note(me.owner_of(t.name.0.as_str(), p.index));
                    }
                }
            }
            RequestKind::Fetch(r) => {
                for t in &r.topics {
                    // Borrowed, not copied: this runs for every fetch.
                    let meta;
                    let name: &str = if t.topic.0.is_empty() {
                        match me.topic_by_id(t.topic_id.as_bytes()) {
                            Some(m) => {
                                meta = m;
                                &meta.name
                            }
                            None => {
                                unknown = true;
                                break;
                            }
                        }
                    } else {
                        t.topic.0.as_str()
                    };
                    for p in &t.partitions {
                        note(me.owner_of(name, p.partition));
                    }
                }
                // An incremental fetch names only what changed; the session knows the rest.
                if r.session_id != 0 && r.session_epoch > 0 {
                    match handlers::fetch::session_owners(r.session_id) {
                        Some(Owners::One(s)) => note(s),
                        Some(Owners::Mixed) => mixed = true,
                        Some(Owners::Nothing) | None => {}
                    }
                }
            }
            // Requests without partitions say nothing about where the connection belongs.
            _ => return,
        }
        let mixed = mixed || unknown;
        match owner {
            Some(s) if !mixed && s != me.id() => {
                if self.candidate == Some(s) {
                    self.streak += 1;
                } else {
                    self.candidate = Some(s);
                    self.streak = 1;
                }
            }
            // Only empty requests (a fetch of no partitions) say nothing.
            None if !mixed => {}
            _ => {
                self.candidate = None;
                self.streak = 0;
            }
        }
    }

    /// The shard to move to, once the streak is long enough.
    fn target(&self) -> Option<ShardId> {
        (self.moves_left > 0 && self.streak >= CONNECTION_MOVE_AFTER_REQUESTS)
            .then_some(self.candidate)
            .flatten()
    }
}

async fn read_requests<R: futures::AsyncRead + Unpin>(
    reader: &mut R,
    tx: &LocalSender<Slot>,
    peer: Option<SocketAddr>,
    buf: BytesMut,
    unanswered: &Cell<usize>,
    affinity: &mut Affinity,
) -> io::Result<ReadEnd> {
    let mut decoder = FrameDecoder::new();
    let budget = Rc::new(Semaphore::new(
        MAX_IN_FLIGHT_REQUEST_BYTES_PER_CONNECTION as u64,
    ));
    let mut read_buffer = ReadBuffer::new(buf);
    loop {
        loop {
            let frame = match decoder.decode(&mut read_buffer.bytes) {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(?peer, error = %e, "bad frame; closing connection");
                    let _ = tx.send(Slot::Close).await;
                    return Ok(ReadEnd::Closed);
                }
            };
            // Back-pressure on memory: requests in flight on this connection hold their
            // bytes until answered; beyond the budget the reader stops reading. A frame
            // larger than the whole budget waits for everything else to finish.
            let units = frame
                .len()
                .clamp(1, MAX_IN_FLIGHT_REQUEST_BYTES_PER_CONNECTION)
                as u64;
            let permit = match budget.acquire_static_permit(units).await {
                Ok(p) => p,
                Err(_) => return Ok(ReadEnd::Closed),
            };
            let request = match decode_request(frame) {
                Ok(r) => r,
                Err(e) => match e.action() {
                    ErrorAction::RespondWithApiVersionsV0 {
                        correlation_id,
                        requested_version,
                    } => {
                        let body = ResponseKind::ApiVersions(versions::api_versions_response(
                            requested_version,
                        ));
                        match encode_response(correlation_id, ApiKey::ApiVersions, 0, &body) {
                            Ok(frame) => {
                                unanswered.set(unanswered.get() + 1);
                                if tx.send(Slot::Ready(frame)).await.is_err() {
                                    return Ok(ReadEnd::Closed);
                                }
                                continue;
                            }
                            Err(err) => {
                                tracing::error!(error = %err, "encoding ApiVersions fallback failed");
                                let _ = tx.send(Slot::Close).await;
                                return Ok(ReadEnd::Closed);
                            }
                        }
                    }
                    ErrorAction::CloseConnection => {
                        tracing::warn!(?peer, error = %e, "bad request; closing connection");
                        let _ = tx.send(Slot::Close).await;
                        return Ok(ReadEnd::Closed);
                    }
                },
            };
            affinity.observe(&request.body);
            let api_key = request.api_key;
            let version = request.api_version();
            let correlation_id = request.correlation_id();
            let ctx = RequestContext {
                client_id: request.header.client_id.clone(),
                peer,
            };
            let handle = glommio::spawn_local(async move {
                let reply = dispatch(request.body, version, &ctx).await?;
                match reply {
                    Reply::Plain(body) => {
                        encode_or_log(correlation_id, api_key, version, &body, None)
                    }
                    Reply::Fetch(fetch) => {
                        let body = ResponseKind::Fetch(fetch.response);
                        encode_or_log(
                            correlation_id,
                            api_key,
                            version,
                            &body,
                            Some((fetch.direct, fetch.spliced)),
                        )
                    }
                }
            })
            .detach();
            unanswered.set(unanswered.get() + 1);
            if tx.send(Slot::Pending(handle, permit)).await.is_err() {
                return Ok(ReadEnd::Closed);
            }
        }
        // Read more: at least what the pending frame still needs.
        let needed = decoder.bytes_needed(&read_buffer.bytes).max(1);
        let start = read_buffer.bytes.len();
        let read = reader.read(read_buffer.spare(needed)).await;
        let n = read_buffer.filled(start, read.as_ref().map_or(0, |n| *n));
        let buf = &mut read_buffer.bytes;
        if let Err(e) = read {
            let _ = tx.send(Slot::Close).await;
            return Err(e);
        }
        // A request boundary with every response written: the connection may move to
        // the shard that owns its partitions, taking the bytes just read along.
        if n > 0 && unanswered.get() == 0 {
            if let Some(to) = affinity.target() {
                if tx.send(Slot::Handoff).await.is_err() {
                    return Ok(ReadEnd::Closed);
                }
                return Ok(ReadEnd::Move {
                    to,
                    buf: std::mem::take(buf),
                });
            }
        }
        if n == 0 {
            if !buf.is_empty() {
                tracing::debug!(?peer, leftover = buf.len(), "connection closed mid-frame");
            }
            let _ = tx.send(Slot::Close).await;
            return Ok(ReadEnd::Closed);
        }
    }
}

/// A connection's read buffer. Frames are split off its front (sharing its memory), and
/// reads go into its spare capacity, which `AsyncRead` needs initialized. It remembers how
/// much of that spare room earlier reads or zeroing already initialized, so a read zeroes
/// only memory never touched (once per chunk) instead of a whole chunk per read, and a
/// chunk serves reads until less than `MIN_READ_BYTES` of it is left.
struct ReadBuffer {
    bytes: BytesMut,
    /// Bytes right after `bytes.len()` that are initialized. Reset whenever the buffer
    /// moves or grows, so it never claims more than is true.
    spare_initialized: usize,
}

impl ReadBuffer {
    fn new(bytes: BytesMut) -> Self {
        ReadBuffer {
            bytes,
            spare_initialized: 0,
        }
    }

    /// The spare room for the next read: all that is left of the chunk if that is at
    /// least `needed` and `MIN_READ_BYTES`, otherwise a new chunk of at least `needed`.
    fn spare(&mut self, needed: usize) -> &mut [u8] {
        let start = self.bytes.len();
        let room = self.bytes.capacity() - start;
        let want = if room >= needed.max(MIN_READ_BYTES) {
            room
        } else {
            needed.max(READ_CHUNK_BYTES)
        };
        let before = (self.bytes.as_ptr(), self.bytes.capacity());
        self.bytes.reserve(want);
        if (self.bytes.as_ptr(), self.bytes.capacity()) != before {
            self.spare_initialized = 0;
        }
        let initialized = self.spare_initialized.min(want);
        // SAFETY: `reserve` made the capacity at least `start + want`, and the first
        // `spare_initialized` bytes after `start` were initialized by an earlier `resize`
        // or read into this same allocation (the counter is reset whenever it moves).
        unsafe { self.bytes.set_len(start + initialized) };
        self.bytes.resize(start + want, 0);
        self.spare_initialized = self.spare_initialized.max(want);
        &mut self.bytes[start..]
    }

    /// Keeps the `n` bytes a read put at `start` (the length before [`ReadBuffer::spare`]).
    fn filled(&mut self, start: usize, n: usize) -> usize {
        let end = self.bytes.len();
        self.bytes.truncate(start + n);
        self.spare_initialized = end - start - n;
        n
    }
}

type Splices = (Vec<Bytes>, Vec<(Bytes, Vec<Bytes>)>);

fn encode_or_log(
    correlation_id: i32,
    api_key: ApiKey,
    version: i16,
    body: &ResponseKind,
    records: Option<Splices>,
) -> Option<ScatterFrame> {
    let result = match records {
        None => encode_response(correlation_id, api_key, version, body),
        Some((direct, spliced)) => super::frame::encode_response_with_records(
            correlation_id,
            api_key,
            version,
            body,
            direct,
            spliced,
        ),
    };
    match result {
        Ok(frame) => Some(frame),
        Err(e) => {
            tracing::error!(?api_key, version, error = %e, "response encoding failed");
            None
        }
    }
}

enum Reply {
    Plain(ResponseKind),
    Fetch(handlers::fetch::FetchReply),
}

/// The one table of served requests. `None` means no response is sent.
async fn dispatch(body: RequestKind, version: i16, ctx: &RequestContext) -> Option<Reply> {
    use handlers::*;
    let plain = |r| Some(Reply::Plain(r));
    match body {
        RequestKind::ApiVersions(_) => plain(ResponseKind::ApiVersions(
            versions::api_versions_response(version),
        )),
        RequestKind::Metadata(r) => {
            plain(ResponseKind::Metadata(metadata::handle(r, version).await))
        }
        RequestKind::Produce(r) => produce::handle(r, version)
            .await
            .map(|r| Reply::Plain(ResponseKind::Produce(r))),
        RequestKind::Fetch(r) => Some(Reply::Fetch(fetch::handle(r, version).await)),
        RequestKind::ListOffsets(r) => plain(ResponseKind::ListOffsets(
            list_offsets::handle(r, version).await,
        )),
        RequestKind::InitProducerId(r) => plain(ResponseKind::InitProducerId(
            producer_id::handle(r, version).await,
        )),
        RequestKind::CreateTopics(r) => plain(ResponseKind::CreateTopics(
            admin::handle_create_topics(r, version).await,
        )),
        RequestKind::DeleteTopics(r) => plain(ResponseKind::DeleteTopics(
            admin::handle_delete_topics(r, version).await,
        )),
        RequestKind::CreatePartitions(r) => plain(ResponseKind::CreatePartitions(
            admin::handle_create_partitions(r, version).await,
        )),
        RequestKind::DescribeConfigs(r) => plain(ResponseKind::DescribeConfigs(
            admin::handle_describe_configs(r, version).await,
        )),
        RequestKind::AlterConfigs(r) => plain(ResponseKind::AlterConfigs(
            admin::handle_alter_configs(r, version).await,
        )),
        RequestKind::DescribeCluster(r) => plain(ResponseKind::DescribeCluster(
            metadata::handle_describe_cluster(r, version).await,
        )),
        other => super::groups::dispatch(other, version, ctx)
            .await
            .map(Reply::Plain),
    }
}

async fn write_responses<W: futures::AsyncWrite + Unpin>(
    fd: std::os::fd::RawFd,
    mut writer: W,
    rx: LocalReceiver<Slot>,
    unanswered: Rc<Cell<usize>>,
) -> io::Result<()> {
    while let Some(slot) = rx.recv().await {
        // The permit (request bytes held against the budget) is released once the
        // response is on its way.
        let (frame, _permit) = match slot {
            Slot::Pending(handle, permit) => match handle.await {
                Some(Some(frame)) => (frame, Some(permit)),
                // No response (acks=0) or the handler failed to encode (already logged).
                _ => {
                    unanswered.set(unanswered.get() - 1);
                    continue;
                }
            },
            Slot::Ready(frame) => (frame, None),
            Slot::Close => break,
            // The socket lives on elsewhere: do not shut its write side.
            Slot::Handoff => return Ok(()),
        };
        write_frame(fd, &mut writer, &frame.chunks).await?;
        unanswered.set(unanswered.get() - 1);
    }
    writer.close().await
}

/// Writes every chunk in order: non-blocking vectored sends straight from the chunks'
/// memory; when the socket is full, one glommio write waits for it to drain.
async fn write_frame<W: futures::AsyncWrite + Unpin>(
    fd: std::os::fd::RawFd,
    writer: &mut W,
    chunks: &[Bytes],
) -> io::Result<()> {
    let mut index = 0;
    let mut offset = 0;
    while index < chunks.len() {
        let mut iov: Vec<libc::iovec> = Vec::with_capacity(MAX_IOVECS_PER_WRITE);
        for (i, c) in chunks[index..]
            .iter()
            .take(MAX_IOVECS_PER_WRITE)
            .enumerate()
        {
            let skip = if i == 0 { offset } else { 0 };
            iov.push(libc::iovec {
                iov_base: c[skip..].as_ptr() as *mut libc::c_void,
                iov_len: c.len() - skip,
            });
        }
        // SAFETY: msghdr is plain data; we set only the iovec fields. The iovecs point
        // into `chunks`, which outlive this call, and the kernel only reads them.
        let sent = unsafe {
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_iov = iov.as_mut_ptr();
            msg.msg_iovlen = iov.len() as _;
            libc::sendmsg(fd, &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
        };
        let mut advance = if sent >= 0 {
            sent as usize
        } else {
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::WouldBlock && err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
            }
            // Socket buffer full: let glommio wait for writability and send some.
            writer.write(&chunks[index][offset..]).await?
        };
        while advance > 0 && index < chunks.len() {
            let left = chunks[index].len() - offset;
            if advance >= left {
                advance -= left;
                index += 1;
                offset = 0;
            } else {
                offset += advance;
                advance = 0;
            }
        }
        while index < chunks.len() && chunks[index].len() == offset {
            index += 1;
            offset = 0;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BufMut;

    /// Simulates `count` reads of 1,100 bytes each, splitting every read off the front as
    /// a frame that stays alive (as a request's does until answered). Checks every byte
    /// comes back in order and returns how many chunks the reads used.
    fn chunks_for_reads(count: u8) -> usize {
        let pieces: Vec<Vec<u8>> = (0..count).map(|i| vec![i; 1100]).collect();
        let mut rb = ReadBuffer::new(BytesMut::new());
        let mut held = Vec::new();
        let mut chunks = 0;
        let mut last = std::ptr::null();
        for piece in &pieces {
            let start = rb.bytes.len();
            let spare = rb.spare(piece.len());
            assert!(spare.len() >= piece.len());
            // A read into initialized memory: whatever was there is overwritten.
            spare[..piece.len()].copy_from_slice(piece);
            if rb.bytes.as_ptr() != last {
                chunks += 1;
            }
            rb.filled(start, piece.len());
            held.push(rb.bytes.split_to(rb.bytes.len()).freeze());
            last = rb.bytes.as_ptr();
        }
        assert_eq!(held.concat(), pieces.concat());
        chunks
    }

    #[test]
    fn small_reads_share_one_chunk_and_keep_their_bytes() {
        // 40 reads of 1,100 bytes fit one 64 KiB chunk: one allocation, not one per read.
        assert_eq!(chunks_for_reads(40), 1);
    }

    #[test]
    fn a_chunk_with_too_little_room_left_is_replaced() {
        assert_eq!(chunks_for_reads(70), 2);
    }

    #[test]
    fn a_frame_larger_than_a_chunk_gets_room_for_all_of_it() {
        let mut rb = ReadBuffer::new(BytesMut::new());
        rb.bytes.put_slice(&[7; 10]);
        let spare = rb.spare(200_000);
        assert!(spare.len() >= 200_000);
        assert_eq!(&rb.bytes[..10], &[7; 10]);
        let n = rb.filled(10, 5);
        assert_eq!(n, 5);
        assert_eq!(rb.bytes.len(), 15);
        // What is left of the big read's room counts as initialized, no more.
        assert_eq!(rb.spare_initialized, rb.bytes.capacity() - 15);
    }

    #[test]
    fn the_initialized_count_never_exceeds_the_spare_capacity() {
        let mut rb = ReadBuffer::new(BytesMut::new());
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut held = Vec::new();
        for _ in 0..2_000 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let needed = 1 + (rng % 9_000) as usize;
            let start = rb.bytes.len();
            let got = rb.spare(needed).len().min(needed);
            rb.filled(start, got);
            assert!(rb.spare_initialized <= rb.bytes.capacity() - rb.bytes.len());
            if rng.is_multiple_of(3) {
                let k = rb.bytes.len() / 2;
                held.push(rb.bytes.split_to(k).freeze());
                if held.len() > 8 {
                    held.remove(0);
                }
            }
        }
    }
}
