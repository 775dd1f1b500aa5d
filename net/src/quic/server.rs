//! The `quiver/1` QUIC listener: one quinn endpoint per shard, driven by the shard's
//! glommio executor ([`super::runtime`]), on `SO_REUSEPORT` sockets of one address
//! (see docs/ARCHITECTURE.md, "QUIC on the shards").
//!
//! Streams (docs/protocol.md): every bidirectional stream carries request frames from the
//! client and response frames back, in request order. Requests on one stream run
//! concurrently (up to `MAX_IN_FLIGHT_REQUESTS_PER_STREAM`), except that produce requests
//! are appended in arrival order; only their acknowledgements overlap. A stream whose
//! first frame is SUBSCRIBE becomes a subscription: the broker pushes RECORDS frames on
//! it until either side closes it, and QUIC flow control on that stream is the
//! back-pressure. Streams never wait for each other, so one slow partition cannot stall
//! another.
//!
//! Bad input closes one stream, never the connection or the broker: the broker sends an
//! ERROR frame, finishes its side and asks the client to stop sending (STOP_SENDING).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use futures::future::LocalBoxFuture;
use futures::stream::FuturesOrdered;
use futures::{FutureExt, StreamExt};
use quinn::{RecvStream, SendStream, VarInt};
use quiver_engine::runtime::ShardContext;
use quiver_protocol::limits::*;
use quiver_protocol::transport::{
    mtu_is_known, read_body_chunks, server_transport_configs, ReceivedBody,
};
use quiver_protocol::{
    Acks, ChunkedRequest, ErrorCode, FrameError, FrameHeader, PartitionRecords, Request, Response,
    HEADER_BYTES,
};
use tokio::sync::mpsc;

use super::handlers;
use super::runtime::GlommioRuntime;
use super::steering::{self, ShardCids};
use super::tls::{self, TlsSettings};
use super::QuicError;
use crate::service::{ReadPartition, ReadRequest, Service};

/// Application error code on STOP_SENDING / RESET_STREAM after bad input on a stream.
pub const STREAM_ERROR_PROTOCOL: u32 = 1;
/// Application error code when the broker shuts down.
pub const CONNECTION_CLOSE_SHUTDOWN: u32 = 0;
/// How long a subscription's long poll waits before checking that the stream is still
/// wanted. New data wakes it at once, so this does not add latency.
const SUBSCRIBE_POLL_MS: u64 = 5_000;

/// How `quiver serve` configures the QUIC listener.
#[derive(Debug, Clone)]
pub struct QuicSettings {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub tls: TlsSettings,
}

/// The listener's sockets and configs, bound on the main thread by [`bind`] and served by
/// every shard ([`QuicListener::start_shard`]): one endpoint per shard, each on its own
/// `SO_REUSEPORT` socket of the listen address.
pub struct QuicListener {
    pub local_addr: SocketAddr,
    pub cert_path: PathBuf,
    shards: usize,
    /// One socket per shard, taken by `start_shard`.
    sockets: Mutex<Vec<Option<std::net::UdpSocket>>>,
    endpoint_config: quinn::EndpointConfig,
    server_config: quinn::ServerConfig,
    configs: Arc<ServerConfigs>,
    /// Connection counts across all shards, touched only when a connection starts or ends.
    counts: Arc<Mutex<ConnectionCounts>>,
}

/// Binds one `SO_REUSEPORT` UDP socket per shard on `settings.listen` and loads (or makes)
/// the TLS certificate, so a bad address or certificate fails `quiver serve` at once.
/// Packets are steered to the shard named in their connection ID ([`steering`]), so a
/// connection stays on its shard even when the client's address changes.
pub fn bind(settings: &QuicSettings, shards: usize) -> Result<Arc<QuicListener>, QuicError> {
    let (tls_config, cert_path) = tls::server_config(&settings.tls, &settings.data_dir)?;
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls_config)
        .map_err(|e| QuicError::Tls(e.to_string()))?;
    let mut server_config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    let mut loopback_config = server_config.clone();
    let (transport, loopback_transport) = server_transport_configs();
    server_config.transport_config(transport);
    loopback_config.transport_config(loopback_transport);
    let configs = Arc::new(ServerConfigs {
        default: Arc::new(server_config.clone()),
        loopback: Arc::new(loopback_config),
    });
    // One config for every shard: they share the stateless-reset key.
    let mut endpoint_config = quinn::EndpointConfig::default();
    endpoint_config
        .max_udp_payload_size(MAX_UDP_PAYLOAD_BYTES)
        .map_err(|e| QuicError::Tls(e.to_string()))?;

    if shards > steering::MAX_STEERED_SHARDS {
        return Err(QuicError::io(
            "bind",
            settings.listen,
            std::io::Error::other(format!(
                "QUIC serves at most {} shards (one connection-ID byte routes them); run with fewer cores or --no-quic",
                steering::MAX_STEERED_SHARDS
            )),
        ));
    }
    let mut sockets = Vec::with_capacity(shards);
    let mut addr = settings.listen;
    for _ in 0..shards.max(1) {
        let socket = reuseport_socket(addr).map_err(|e| QuicError::io("bind", addr, e))?;
        // Port 0 picks a port once; the other shards join it.
        addr = socket
            .local_addr()
            .map_err(|e| QuicError::io("local_addr", addr, e))?;
        size_socket_buffers(&socket);
        sockets.push(Some(socket));
    }
    if sockets.len() > 1 {
        let first = sockets[0].as_ref().expect("just bound");
        steering::attach(first, sockets.len())
            .map_err(|e| QuicError::io("attach the connection-ID steering program", addr, e))?;
    }
    Ok(Arc::new(QuicListener {
        local_addr: addr,
        cert_path,
        shards: sockets.len(),
        sockets: Mutex::new(sockets),
        endpoint_config,
        server_config,
        configs,
        counts: Arc::new(Mutex::new(ConnectionCounts::default())),
    }))
}

fn reuseport_socket(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_port(true)?;
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// One shard's running endpoint.
pub struct QuicShard {
    endpoint: quinn::Endpoint,
    accept: glommio::Task<()>,
    shard: usize,
}

impl QuicListener {
    /// Starts shard `shard`'s endpoint on this shard's executor. Its connections are
    /// served here: requests for partitions this shard owns never leave the thread.
    pub fn start_shard(&self, shard: usize) -> Result<QuicShard, QuicError> {
        let socket = self
            .sockets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(shard)
            .and_then(Option::take)
            .ok_or_else(|| {
                QuicError::io(
                    "start shard endpoint",
                    self.local_addr,
                    std::io::Error::other(format!("no socket for shard {shard}")),
                )
            })?;
        let shards = self.shards;
        let mut endpoint_config = self.endpoint_config.clone();
        if shards > 1 {
            endpoint_config.cid_generator(move || Box::new(ShardCids::new(shard, shards)));
        }
        let endpoint = quinn::Endpoint::new(
            endpoint_config,
            Some(self.server_config.clone()),
            socket,
            Arc::new(GlommioRuntime),
        )
        .map_err(|e| QuicError::io("start endpoint", self.local_addr, e))?;
        tracing::info!(addr = %self.local_addr, shard, "quic listener up");
        let service = Service::new(crate::kafka::broker::shard().ctx.clone());
        let accept = glommio::spawn_local(accept_loop(
            endpoint.clone(),
            service,
            Arc::clone(&self.counts),
            Arc::clone(&self.configs),
        ));
        Ok(QuicShard {
            endpoint,
            accept,
            shard,
        })
    }
}

impl QuicShard {
    /// Stops accepting, closes every connection (clients see `CONNECTION_CLOSE_SHUTDOWN`)
    /// and waits up to a second for the close to be sent.
    pub async fn stop(self) {
        drop(self.accept);
        self.endpoint
            .close(VarInt::from_u32(CONNECTION_CLOSE_SHUTDOWN), b"shutdown");
        let idle = std::pin::pin!(self.endpoint.wait_idle());
        let timeout = std::pin::pin!(glommio::timer::sleep(Duration::from_secs(1)));
        futures::future::select(idle, timeout).await;
        if self.shard == 0 {
            let totals = assembly_totals();
            tracing::info!(
                produce_frames = totals.produce_frames,
                produce_record_chunks = totals.produce_record_chunks,
                produce_bytes_copied = totals.produce_bytes_copied,
                other_bytes_copied = totals.other_bytes_copied,
                produce_frames_hopped = totals.produce_frames_hopped,
                "quic listener stopped"
            );
        }
    }
}

/// Asks for `UDP_SOCKET_BUFFER_BYTES` of kernel buffer each way and says so when the
/// kernel grants less (raise `net.core.rmem_max`/`wmem_max` to fix).
fn size_socket_buffers(socket: &std::net::UdpSocket) {
    let s = socket2::SockRef::from(socket);
    let _ = s.set_recv_buffer_size(UDP_SOCKET_BUFFER_BYTES);
    let _ = s.set_send_buffer_size(UDP_SOCKET_BUFFER_BYTES);
    // Linux reports twice the usable size (it counts its bookkeeping).
    let recv = s.recv_buffer_size().unwrap_or(0) / 2;
    let send = s.send_buffer_size().unwrap_or(0) / 2;
    if recv < UDP_SOCKET_BUFFER_BYTES || send < UDP_SOCKET_BUFFER_BYTES {
        tracing::info!(
            recv_bytes = recv,
            send_bytes = send,
            wanted = UDP_SOCKET_BUFFER_BYTES,
            "quic UDP socket buffers capped by net.core.rmem_max/wmem_max"
        );
    }
}

#[derive(Default)]
struct ConnectionCounts {
    total: usize,
    per_peer: HashMap<IpAddr, usize>,
}

impl ConnectionCounts {
    /// Takes a slot for `ip`, or says which limit is reached.
    fn admit(&mut self, ip: IpAddr) -> Result<(), &'static str> {
        if self.total >= MAX_CONNECTIONS {
            return Err("MAX_CONNECTIONS");
        }
        let n = self.per_peer.entry(ip).or_default();
        if *n >= MAX_CONNECTIONS_PER_PEER {
            return Err("MAX_CONNECTIONS_PER_PEER");
        }
        *n += 1;
        self.total += 1;
        Ok(())
    }

    fn release(&mut self, ip: IpAddr) {
        self.total = self.total.saturating_sub(1);
        if let Some(n) = self.per_peer.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                self.per_peer.remove(&ip);
            }
        }
    }
}

/// The endpoint's server config, and the one for loopback peers (`mtu_is_known`).
struct ServerConfigs {
    default: Arc<quinn::ServerConfig>,
    loopback: Arc<quinn::ServerConfig>,
}

async fn accept_loop(
    endpoint: quinn::Endpoint,
    service: Service<ShardContext>,
    counts: Arc<Mutex<ConnectionCounts>>,
    configs: Arc<ServerConfigs>,
) {
    while let Some(incoming) = endpoint.accept().await {
        let peer = incoming.remote_address();
        // A poisoned lock only means another task panicked mid-update; the counts are
        // plain integers, so keep going with them.
        let admitted = counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .admit(peer.ip());
        if let Err(limit) = admitted {
            tracing::warn!(%peer, limit, "refusing quic connection");
            incoming.refuse();
            continue;
        }
        let service = service.clone();
        let counts = Arc::clone(&counts);
        let config = if mtu_is_known(peer.ip()) {
            &configs.loopback
        } else {
            &configs.default
        };
        let connecting = incoming.accept_with(Arc::clone(config));
        glommio::spawn_local(async move {
            match connecting {
                Ok(connecting) => match connecting.await {
                    Ok(connection) => serve_connection(connection, service).await,
                    Err(e) => tracing::debug!(%peer, error = %e, "quic handshake failed"),
                },
                Err(e) => tracing::debug!(%peer, error = %e, "quic handshake failed"),
            }
            counts
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .release(peer.ip());
        })
        .detach();
    }
}

async fn serve_connection(connection: quinn::Connection, service: Service<ShardContext>) {
    let peer = connection.remote_address();
    tracing::debug!(%peer, shard = crate::kafka::broker::shard().id().0, "quic connection");
    loop {
        match connection.accept_bi().await {
            Ok((send, recv)) => {
                let service = service.clone();
                glommio::spawn_local(serve_stream(service, send, recv)).detach();
            }
            Err(e) => {
                tracing::debug!(%peer, error = %e, "quic connection ended");
                return;
            }
        }
    }
}

/// What the reader hands the writer: a response still being computed (`None` output for
/// acks=0), or the end of the stream after bad input.
enum Outgoing {
    Response(LocalBoxFuture<'static, Option<Vec<Bytes>>>),
    BadInput(Vec<Bytes>),
}

/// How request frames were assembled from stream chunks since the process started
/// (all QUIC listeners together): the evidence that PRODUCE records reach the engine
/// without a copy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AssemblyTotals {
    pub produce_frames: u64,
    /// Chunks of record bytes handed to the engine: more than `produce_frames` when
    /// bodies spanned packets.
    pub produce_record_chunks: u64,
    /// Bytes of PRODUCE bodies copied to assemble them (a head spanning chunks, or a body
    /// past `MAX_SHARED_CHUNKS_PER_BODY` chunks).
    pub produce_bytes_copied: u64,
    /// Bytes of other request bodies copied to join them (small bodies spanning packets).
    pub other_bytes_copied: u64,
    /// PRODUCE frames that arrived on a shard other than the partition's owner and
    /// hopped there: 0 when clients steer their connections (shard-aware clients).
    pub produce_frames_hopped: u64,
}

static PRODUCE_FRAMES: AtomicU64 = AtomicU64::new(0);
static PRODUCE_RECORD_CHUNKS: AtomicU64 = AtomicU64::new(0);
static PRODUCE_BYTES_COPIED: AtomicU64 = AtomicU64::new(0);
static OTHER_BYTES_COPIED: AtomicU64 = AtomicU64::new(0);
static PRODUCE_FRAMES_HOPPED: AtomicU64 = AtomicU64::new(0);

pub fn assembly_totals() -> AssemblyTotals {
    AssemblyTotals {
        produce_frames: PRODUCE_FRAMES.load(Ordering::Relaxed),
        produce_record_chunks: PRODUCE_RECORD_CHUNKS.load(Ordering::Relaxed),
        produce_bytes_copied: PRODUCE_BYTES_COPIED.load(Ordering::Relaxed),
        other_bytes_copied: OTHER_BYTES_COPIED.load(Ordering::Relaxed),
        produce_frames_hopped: PRODUCE_FRAMES_HOPPED.load(Ordering::Relaxed),
    }
}

/// Decodes a request from its received chunks and counts what assembling it copied.
fn decode_request(header: &FrameHeader, body: ReceivedBody) -> Result<Request, FrameError> {
    let ChunkedRequest {
        request,
        bytes_copied,
    } = Request::decode_chunks(header, body.chunks)?;
    let copied = (body.bytes_copied + bytes_copied) as u64;
    if let Request::Produce(p) = &request {
        PRODUCE_FRAMES.fetch_add(1, Ordering::Relaxed);
        PRODUCE_RECORD_CHUNKS.fetch_add(p.records.len() as u64, Ordering::Relaxed);
        if copied > 0 {
            PRODUCE_BYTES_COPIED.fetch_add(copied, Ordering::Relaxed);
        }
    } else if copied > 0 {
        OTHER_BYTES_COPIED.fetch_add(copied, Ordering::Relaxed);
    }
    Ok(request)
}

enum ReadOutcome {
    Frame(FrameHeader, ReceivedBody),
    /// The client finished its side cleanly between frames.
    End,
    /// The stream failed (reset, connection lost): nothing more to say on it.
    Gone,
    Bad(FrameError),
}

async fn read_frame(recv: &mut RecvStream) -> ReadOutcome {
    let mut head = [0u8; HEADER_BYTES];
    match recv.read_exact(&mut head).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(0)) => return ReadOutcome::End,
        Err(quinn::ReadExactError::FinishedEarly(n)) => {
            return ReadOutcome::Bad(FrameError::Short {
                what: "frame header",
                needed: HEADER_BYTES - n,
            })
        }
        Err(_) => return ReadOutcome::Gone,
    }
    let header = match FrameHeader::decode(&head, MAX_REQUEST_BODY_BYTES) {
        Ok(Some(h)) => h,
        Ok(None) => return ReadOutcome::Gone, // unreachable: the buffer is a whole header
        Err(e) => return ReadOutcome::Bad(e),
    };
    match read_body_chunks(recv, header.body_len()).await {
        Ok(body) => ReadOutcome::Frame(header, body),
        Err(quinn::ReadExactError::FinishedEarly(n)) => ReadOutcome::Bad(FrameError::Short {
            what: "frame body",
            needed: header.body_len() - n,
        }),
        Err(_) => ReadOutcome::Gone,
    }
}

fn error_frame(request_id: u64, code: ErrorCode, message: impl Into<String>) -> Vec<Bytes> {
    Response::error(code, message).encode(request_id)
}

fn bad_input_frame(e: &FrameError, request_id: u64) -> Vec<Bytes> {
    let request_id = match e {
        FrameError::TooLarge { request_id, .. } => *request_id,
        _ => request_id,
    };
    error_frame(request_id, e.code(), e.to_string())
}

async fn serve_stream(service: Service<ShardContext>, mut send: SendStream, mut recv: RecvStream) {
    // The first frame decides what kind of stream this is.
    let (header, body) = match read_frame(&mut recv).await {
        ReadOutcome::Frame(h, b) => (h, b),
        ReadOutcome::End | ReadOutcome::Gone => return,
        ReadOutcome::Bad(e) => {
            return close_bad(&mut send, &mut recv, bad_input_frame(&e, 0)).await
        }
    };
    let request_id = header.request_id();
    let first = match decode_request(&header, body) {
        Ok(r) => r,
        Err(e) => {
            return close_bad(&mut send, &mut recv, bad_input_frame(&e, request_id)).await;
        }
    };
    if let Request::Subscribe(sub) = first {
        return handlers::subscribe(service, send, recv, request_id, sub).await;
    }

    let (tx, rx) = mpsc::channel::<Outgoing>(MAX_IN_FLIGHT_REQUESTS_PER_STREAM);
    let writer = glommio::spawn_local(write_responses(send, rx));
    let mut next = Some((request_id, first));
    loop {
        let (request_id, request) = match next.take() {
            Some(r) => r,
            None => match read_frame(&mut recv).await {
                ReadOutcome::Frame(header, body) => {
                    let id = header.request_id();
                    match decode_request(&header, body) {
                        Ok(r) => (id, r),
                        Err(e) => {
                            let _ = tx.send(Outgoing::BadInput(bad_input_frame(&e, id))).await;
                            let _ = recv.stop(VarInt::from_u32(STREAM_ERROR_PROTOCOL));
                            break;
                        }
                    }
                }
                ReadOutcome::End | ReadOutcome::Gone => break,
                ReadOutcome::Bad(e) => {
                    let _ = tx.send(Outgoing::BadInput(bad_input_frame(&e, 0))).await;
                    let _ = recv.stop(VarInt::from_u32(STREAM_ERROR_PROTOCOL));
                    break;
                }
            },
        };
        let outgoing = dispatch(&service, request_id, request).await;
        // The channel is bounded: when `MAX_IN_FLIGHT_REQUESTS_PER_STREAM` responses are
        // pending, this waits, the stream is not read, and QUIC pushes back on the client.
        if tx.send(outgoing).await.is_err() {
            break; // the writer is gone: the client stopped reading responses
        }
    }
    drop(tx);
    writer.await;
}

async fn close_bad(send: &mut SendStream, recv: &mut RecvStream, frame: Vec<Bytes>) {
    let mut frame = frame;
    let _ = send.write_all_chunks(&mut frame).await;
    let _ = send.finish();
    let _ = recv.stop(VarInt::from_u32(STREAM_ERROR_PROTOCOL));
}

/// Sends responses in request order as they complete.
async fn write_responses(mut send: SendStream, mut rx: mpsc::Receiver<Outgoing>) {
    let mut pending: FuturesOrdered<LocalBoxFuture<'static, Option<Vec<Bytes>>>> =
        FuturesOrdered::new();
    let mut input_open = true;
    let mut closing: Option<Vec<Bytes>> = None;
    enum Event {
        Next(Option<Outgoing>),
        Done(Option<Vec<Bytes>>),
    }
    loop {
        if !input_open && pending.is_empty() {
            break;
        }
        // Completed responses first, then new requests.
        let event = futures::future::poll_fn(|cx| {
            if let Poll::Ready(Some(done)) = pending.poll_next_unpin(cx) {
                return Poll::Ready(Event::Done(done));
            }
            if input_open && closing.is_none() {
                if let Poll::Ready(item) = rx.poll_recv(cx) {
                    return Poll::Ready(Event::Next(item));
                }
            }
            Poll::Pending
        })
        .await;
        match event {
            Event::Next(Some(Outgoing::Response(f))) => pending.push_back(f),
            Event::Next(Some(Outgoing::BadInput(frame))) => {
                closing = Some(frame);
                input_open = false;
            }
            Event::Next(None) => input_open = false,
            Event::Done(Some(mut frame)) => {
                if send.write_all_chunks(&mut frame).await.is_err() {
                    return;
                }
            }
            Event::Done(None) => {}
        }
    }
    if let Some(mut frame) = closing {
        let _ = send.write_all_chunks(&mut frame).await;
    }
    let _ = send.finish();
}

/// Turns one request into its pending response. Produce appends happen here, before the
/// next frame of the stream is read, so a stream's batches are stored in order.
async fn dispatch(service: &Service<ShardContext>, request_id: u64, request: Request) -> Outgoing {
    let respond = move |r: Response| Some(r.encode(request_id));
    match request {
        Request::Produce(p) => {
            let acks = p.acks;
            if service.owner_of(&p.topic, p.partition) != crate::kafka::broker::shard().ctx.id() {
                PRODUCE_FRAMES_HOPPED.fetch_add(1, Ordering::Relaxed);
            }
            let started = service
                .append_start(p.topic, p.partition, p.records, acks)
                .await;
            Outgoing::Response(
                async move {
                    let result = match started {
                        Ok(ticket) if acks == Acks::None => {
                            drop(ticket);
                            return None;
                        }
                        // acks=1: the bytes are in the kernel (survive a broker
                        // crash), as on the Kafka front end; acks=all: the durability
                        // policy (fdatasync by default).
                        Ok(ticket) if acks == Acks::Leader => {
                            ticket.written().await.map_err(Into::into)
                        }
                        Ok(ticket) => ticket.committed().await.map_err(Into::into),
                        Err(e) => Err(e),
                    };
                    match result {
                        Ok(o) => respond(Response::Produce(quiver_protocol::ProduceResponse {
                            base_offset: o.base_offset.0,
                            last_offset: o.last_offset.0,
                            log_start_offset: o.log_start_offset.0,
                            duplicate: o.duplicate,
                        })),
                        Err(e) if acks == Acks::None => {
                            tracing::debug!(error = %e, "acks=0 produce failed");
                            None
                        }
                        Err(e) => respond(handlers::error_response(&e)),
                    }
                }
                .boxed_local(),
            )
        }
        Request::Subscribe(_) => Outgoing::Response(
            async move {
                respond(Response::error(
                    ErrorCode::INVALID_REQUEST,
                    "SUBSCRIBE must be the first frame of its own stream",
                ))
            }
            .boxed_local(),
        ),
        other => {
            let service = service.clone();
            Outgoing::Response(
                async move { respond(handlers::handle(&service, other).await) }.boxed_local(),
            )
        }
    }
}

/// Reads for a subscription: one partition, long polling.
pub(super) fn subscription_read(
    topic: &str,
    partition: i32,
    offset: i64,
    max_bytes: usize,
) -> ReadRequest {
    ReadRequest {
        partitions: vec![ReadPartition {
            topic: topic.into(),
            partition,
            offset,
            max_bytes,
        }],
        min_bytes: 1,
        max_wait: Duration::from_millis(SUBSCRIBE_POLL_MS),
    }
}

/// A RECORDS push.
pub(super) fn records_frame(
    request_id: u64,
    topic: &str,
    partition: i32,
    data: crate::service::PartitionData,
) -> Vec<Bytes> {
    Response::Records(PartitionRecords {
        topic: topic.to_string(),
        partition,
        error: ErrorCode::NONE,
        high_watermark: data.high_watermark,
        log_start_offset: data.log_start_offset,
        records: data.chunks,
    })
    .encode(request_id)
}
