//! The connection to a broker and request channels over its streams.
//!
//! A [`Channel`] is one bidirectional stream used for pipelined request/response pairs:
//! the broker answers in request order, so the channel matches answers to waiters with a
//! FIFO queue. The client keeps one control channel for admin and offsets, one channel
//! per produced partition, and a fresh stream per fetch and per subscription, so that a
//! slow request or partition never holds up another (QUIC has no head-of-line blocking
//! between streams).

use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use quinn::{RecvStream, SendStream, VarInt};
use quiver_protocol::limits::*;
use quiver_protocol::route::route_byte;
use quiver_protocol::transport::{mtu_is_known, read_body, transport_config};
use quiver_protocol::{FrameHeader, Request, Response, HEADER_BYTES};
use tokio::sync::{oneshot, Mutex};

use crate::error::{Error, Result};
use crate::tls;

/// Connection ID length of steered connections (quinn's default length).
const STEERED_CID_BYTES: usize = 8;

/// Where `quiver serve` listens for QUIC by default.
pub const DEFAULT_LOCAL_ADDRESS: &str = "127.0.0.1:9093";

/// The development certificate a broker generates into its data directory; it is its
/// own CA, so clients pass it as their CA file.
pub fn dev_ca_file(data_dir: impl AsRef<std::path::Path>) -> PathBuf {
    data_dir.as_ref().join("tls").join("cert.pem")
}

/// How to reach and trust a broker.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `host:port` of the broker's QUIC listener.
    pub address: String,
    /// Name the broker's certificate must be valid for (default: the host of `address`,
    /// or "localhost" when that is an IP address the dev certificate does not name).
    pub server_name: Option<String>,
    /// PEM CA bundle to verify the broker against (for a development broker:
    /// `<data dir>/tls/cert.pem`). Without it, the platform's roots are not consulted:
    /// a CA file or `insecure` is required.
    pub ca_file: Option<PathBuf>,
    /// Skip server verification. Only when asked for explicitly.
    pub insecure: bool,
    /// PEM certificate chain and key for mutual TLS.
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// Longest to wait for any single answer (long polls add their own wait).
    pub request_timeout: Duration,
}

impl ClientConfig {
    pub fn new(address: impl Into<String>) -> ClientConfig {
        ClientConfig {
            address: address.into(),
            server_name: None,
            ca_file: None,
            insecure: false,
            client_cert: None,
            request_timeout: Duration::from_secs(30),
        }
    }

    /// The zero-configuration local case: a broker started with `quiver serve` defaults
    /// (QUIC on 127.0.0.1:9093) whose data directory is `data_dir` (default
    /// `quiver-data`), trusted through the development certificate it wrote there.
    pub fn local(data_dir: impl AsRef<std::path::Path>) -> ClientConfig {
        ClientConfig::new(DEFAULT_LOCAL_ADDRESS).ca_file(dev_ca_file(data_dir))
    }

    pub fn ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca_file = Some(path.into());
        self
    }

    pub fn server_name(mut self, name: impl Into<String>) -> Self {
        self.server_name = Some(name.into());
        self
    }

    /// Accept any server certificate. Traffic is still encrypted but anyone on the path
    /// can impersonate the broker; use only for development.
    pub fn insecure(mut self) -> Self {
        self.insecure = true;
        self
    }

    pub fn client_cert(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.client_cert = Some((cert.into(), key.into()));
        self
    }

    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }
}

/// A QUIC connection to one broker, re-established on demand, and the connections the
/// client steered to particular shards of it (docs/protocol.md, "Shard-aware clients"),
/// all on one endpoint (one UDP socket).
pub(crate) struct Connection {
    config: ClientConfig,
    endpoint: quinn::Endpoint,
    /// The endpoint's default, kept to derive the steered connections' configs.
    client_config: quinn::ClientConfig,
    remote: SocketAddr,
    server_name: String,
    runtime: Arc<ClientRuntime>,
    current: Mutex<Option<quinn::Connection>>,
    /// Index: shard. At most one per shard of the broker (`MAX_STEERED_CONNECTIONS`).
    on_shard: Mutex<HashMap<u16, quinn::Connection>>,
    next_request_id: AtomicU64,
}

/// Most connections a client steers to shards of one broker, beside its first one.
pub const MAX_STEERED_CONNECTIONS: usize = 16;

impl Connection {
    pub(crate) async fn connect(config: ClientConfig) -> Result<Arc<Connection>> {
        let remote = config
            .address
            .to_socket_addrs()
            .map_err(|e| Error::Connect {
                addr: config.address.clone(),
                reason: e.to_string(),
            })?
            .next()
            .ok_or_else(|| Error::Connect {
                addr: config.address.clone(),
                reason: "address resolves to nothing".into(),
            })?;
        let server_name = config.server_name.clone().unwrap_or_else(|| {
            let host = config
                .address
                .rsplit_once(':')
                .map(|(h, _)| h.trim_matches(['[', ']']))
                .unwrap_or(&config.address);
            host.to_string()
        });
        let mut client_config = tls::client_config(&config)?;
        // The broker's tuning (docs/ARCHITECTURE.md); the broker opens no streams to us.
        client_config.transport_config(Arc::new(transport_config(0, mtu_is_known(remote.ip()))));
        let bind: SocketAddr = if remote.is_ipv6() {
            "[::]:0"
                .parse()
                .map_err(|_| Error::InvalidArgument("bind".into()))?
        } else {
            "0.0.0.0:0"
                .parse()
                .map_err(|_| Error::InvalidArgument("bind".into()))?
        };
        let mut endpoint_config = quinn::EndpointConfig::default();
        endpoint_config
            .max_udp_payload_size(MAX_UDP_PAYLOAD_BYTES)
            .map_err(|e| Error::InvalidArgument(e.to_string()))?;
        let socket = std::net::UdpSocket::bind(bind).map_err(|e| Error::Connect {
            addr: config.address.clone(),
            reason: format!("binding a UDP socket: {e}"),
        })?;
        // Small kernel buffers drop datagrams under bulk transfer (docs/ARCHITECTURE.md);
        // the kernel caps the request at net.core.rmem_max/wmem_max.
        let sock = socket2::SockRef::from(&socket);
        let _ = sock.set_recv_buffer_size(UDP_SOCKET_BUFFER_BYTES);
        let _ = sock.set_send_buffer_size(UDP_SOCKET_BUFFER_BYTES);
        let runtime = Arc::new(ClientRuntime::for_current_runtime());
        let mut endpoint = quinn::Endpoint::new(endpoint_config, None, socket, runtime.clone())
            .map_err(|e| Error::Connect {
                addr: config.address.clone(),
                reason: e.to_string(),
            })?;
        endpoint.set_default_client_config(client_config.clone());
        let conn = Arc::new(Connection {
            config,
            endpoint,
            client_config,
            remote,
            server_name,
            runtime,
            current: Mutex::new(None),
            on_shard: Mutex::new(HashMap::new()),
            next_request_id: AtomicU64::new(1),
        });
        conn.quic().await?;
        Ok(conn)
    }

    pub(crate) fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// The live QUIC connection, reconnecting if the previous one closed.
    pub(crate) async fn quic(&self) -> Result<quinn::Connection> {
        let mut current = self.current.lock().await;
        if let Some(c) = current.as_ref() {
            if c.close_reason().is_none() {
                return Ok(c.clone());
            }
        }
        let c = self
            .handshake(self.endpoint.connect(self.remote, &self.server_name))
            .await?;
        *current = Some(c.clone());
        Ok(c)
    }

    /// Completes a connection attempt within the request timeout.
    async fn handshake(
        &self,
        connecting: std::result::Result<quinn::Connecting, quinn::ConnectError>,
    ) -> Result<quinn::Connection> {
        let connect_error = |reason: String| Error::Connect {
            addr: self.config.address.clone(),
            reason,
        };
        let connecting = connecting.map_err(|e| connect_error(e.to_string()))?;
        tokio::time::timeout(self.config.request_timeout, connecting)
            .await
            .map_err(|_| Error::Timeout(self.config.request_timeout))?
            .map_err(|e| connect_error(e.to_string()))
    }

    /// A connection served by `shard` of the broker's `shard_count` shards: the first
    /// Initial's destination connection ID carries the routing byte the broker steers by,
    /// and the shard that accepts it issues connection IDs that keep it there.
    pub(crate) async fn quic_on(&self, shard: u16, shard_count: u16) -> Result<quinn::Connection> {
        let mut on_shard = self.on_shard.lock().await;
        if let Some(c) = on_shard.get(&shard) {
            if c.close_reason().is_none() {
                return Ok(c.clone());
            }
        }
        if !on_shard.contains_key(&shard) && on_shard.len() >= MAX_STEERED_CONNECTIONS {
            return self.quic().await;
        }
        let mut config = self.client_config.clone();
        config.initial_dst_cid_provider(Arc::new(move || {
            let mut cid: [u8; STEERED_CID_BYTES] = rand::random();
            cid[0] = route_byte(cid[0], shard, shard_count);
            quinn::ConnectionId::new(&cid)
        }));
        let c = self
            .handshake(
                self.endpoint
                    .connect_with(config, self.remote, &self.server_name),
            )
            .await?;
        on_shard.insert(shard, c.clone());
        Ok(c)
    }

    /// Every live connection: the first, then the steered ones by shard.
    pub(crate) async fn all_quic(&self) -> Vec<quinn::Connection> {
        let mut all: Vec<quinn::Connection> = self.current.lock().await.iter().cloned().collect();
        let on_shard = self.on_shard.lock().await;
        let mut shards: Vec<_> = on_shard.keys().copied().collect();
        shards.sort_unstable();
        all.extend(shards.iter().filter_map(|s| on_shard.get(s).cloned()));
        all.retain(|c| c.close_reason().is_none());
        all
    }

    /// A stream on the connection served by `shard` (see [`Connection::quic_on`]), or on
    /// the first connection if a steered one cannot be opened: steering only saves the
    /// broker a hop between its cores, so it is never worth failing a request for.
    pub(crate) async fn open_stream_on(
        &self,
        shard: u16,
        shard_count: u16,
    ) -> Result<(SendStream, RecvStream)> {
        match self.quic_on(shard, shard_count).await {
            Ok(c) => Ok(c.open_bi().await?),
            Err(e) => {
                tracing::debug!(shard, error = %e, "no connection to the owning shard; using the first");
                self.open_stream().await
            }
        }
    }

    pub(crate) fn next_request_id(&self) -> u64 {
        self.next_request_id.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) async fn open_stream(&self) -> Result<(SendStream, RecvStream)> {
        let quic = self.quic().await?;
        Ok(quic.open_bi().await?)
    }

    /// Opens a new request channel on its own stream.
    pub(crate) async fn channel(self: &Arc<Self>) -> Result<Channel> {
        let (send, recv) = self.open_stream().await?;
        Ok(Channel::start(Arc::clone(self), send, recv))
    }

    /// A request channel over a stream opened elsewhere.
    pub(crate) fn channel_over(self: &Arc<Self>, send: SendStream, recv: RecvStream) -> Channel {
        Channel::start(Arc::clone(self), send, recv)
    }

    /// One request on a stream of its own (fetches: a long poll must not hold up others).
    pub(crate) async fn request_on_new_stream(
        &self,
        request: &Request,
        wait: Duration,
    ) -> Result<Response> {
        let (mut send, mut recv) = self.open_stream().await?;
        let id = self.next_request_id();
        let mut frame = request.encode(id);
        send.write_all_chunks(&mut frame)
            .await
            .map_err(|_| Error::StreamClosed)?;
        let _ = send.finish();
        let timeout = self.config.request_timeout + wait;
        let answer = tokio::time::timeout(timeout, read_frame(&mut recv))
            .await
            .map_err(|_| Error::Timeout(timeout))??;
        let (header, body) = answer.ok_or(Error::StreamClosed)?;
        Ok(Response::decode(&header, body)?)
    }

    pub(crate) fn close(&self) {
        self.endpoint.close(VarInt::from_u32(0), b"client closed");
    }

    pub(crate) fn rebind(&self, socket: std::net::UdpSocket) -> std::io::Result<()> {
        self.endpoint.rebind(socket)
    }

    /// The endpoint's UDP socket (the current one, after a rebind).
    pub(crate) fn udp_fd(&self) -> std::os::fd::RawFd {
        self.runtime.udp_fd.load(Ordering::Relaxed)
    }
}

/// quinn on tokio. On a current-thread runtime every task of the connection shares the
/// caller's thread, so connections are driven inline (third_party/quinn/QUIVER_PATCHES.md,
/// patch 1): a request's packet leaves from the task that wrote it, and an answer's
/// datagram is decrypted and handed to its stream where the endpoint receives it, with no
/// turn of the connection's driver task in between. On a multi-threaded runtime the driver
/// keeps its own task, so packet work can run on another worker in parallel.
#[derive(Debug)]
struct ClientRuntime {
    inline: bool,
    /// The last socket wrapped: the endpoint's (a rebind wraps the new one).
    udp_fd: std::sync::atomic::AtomicI32,
}

impl ClientRuntime {
    fn for_current_runtime() -> ClientRuntime {
        let flavor = tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor());
        ClientRuntime {
            inline: matches!(flavor, Ok(tokio::runtime::RuntimeFlavor::CurrentThread)),
            udp_fd: std::sync::atomic::AtomicI32::new(-1),
        }
    }
}

impl quinn::Runtime for ClientRuntime {
    fn new_timer(&self, at: std::time::Instant) -> std::pin::Pin<Box<dyn quinn::AsyncTimer>> {
        quinn::TokioRuntime.new_timer(at)
    }

    fn spawn(&self, future: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>) {
        quinn::TokioRuntime.spawn(future)
    }

    fn wrap_udp_socket(
        &self,
        socket: std::net::UdpSocket,
    ) -> std::io::Result<Arc<dyn quinn::AsyncUdpSocket>> {
        use std::os::fd::AsRawFd;
        self.udp_fd.store(socket.as_raw_fd(), Ordering::Relaxed);
        quinn::TokioRuntime.wrap_udp_socket(socket)
    }

    fn now(&self) -> std::time::Instant {
        quinn::TokioRuntime.now()
    }

    fn drive_connections_inline(&self) -> bool {
        self.inline
    }
}

/// Reads one frame: `Ok(None)` if the stream ended cleanly before it.
pub(crate) async fn read_frame(recv: &mut RecvStream) -> Result<Option<(FrameHeader, Bytes)>> {
    let mut head = [0u8; HEADER_BYTES];
    match recv.read_exact(&mut head).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(0)) => return Ok(None),
        Err(_) => return Err(Error::StreamClosed),
    }
    let header = FrameHeader::decode(&head, MAX_RESPONSE_BODY_BYTES)?.ok_or(Error::StreamClosed)?;
    let body = read_body(recv, header.body_len())
        .await
        .map_err(|_| Error::StreamClosed)?;
    Ok(Some((header, body)))
}

type Reply = oneshot::Sender<Result<Response>>;

/// Pipelined request/response on one stream; cheap to clone. Answers arrive in request
/// order, so waiters are kept in a FIFO.
///
/// A request's frame is written by the task that sends it, under the stream's lock (which
/// also orders the waiters), so with the client's inline QUIC driving
/// ([`ClientRuntime`]) its packet leaves before `send` returns, with no task in between.
/// One reader task per channel reads the answers and hands each to the oldest waiter.
/// Waiters are bounded by the stream's flow-control window: a write waits once the broker
/// stops reading (it reads up to `MAX_IN_FLIGHT_REQUESTS_PER_STREAM` requests ahead).
#[derive(Clone)]
pub(crate) struct Channel {
    conn: Arc<Connection>,
    send: Arc<Mutex<SendStream>>,
    waiters: Arc<Waiters>,
}

/// The waiters of a channel's written requests, shared with its reader task.
#[derive(Default)]
struct Waiters {
    queue: std::sync::Mutex<std::collections::VecDeque<Reply>>,
    /// No more frames may be written: the reader ended, a write failed, or a write was
    /// abandoned halfway (its future dropped), which leaves a torn frame on the stream.
    closed: std::sync::atomic::AtomicBool,
}

impl Waiters {
    fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, std::collections::VecDeque<Reply>> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Closes the channel unless disarmed: held across a frame's write, so a write that
/// fails or is abandoned halfway stops every later one.
struct CloseUnlessWritten<'a>(Option<&'a Waiters>);

impl Drop for CloseUnlessWritten<'_> {
    fn drop(&mut self) {
        if let Some(waiters) = self.0 {
            waiters.close();
        }
    }
}

impl Channel {
    fn start(conn: Arc<Connection>, send: SendStream, recv: RecvStream) -> Channel {
        let waiters = Arc::new(Waiters::default());
        tokio::spawn(read_answers(recv, Arc::clone(&waiters)));
        Channel {
            conn,
            send: Arc::new(Mutex::new(send)),
            waiters,
        }
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.waiters.is_closed()
    }

    /// Sends `request` and waits for its answer. A broker ERROR frame becomes
    /// [`Error::Broker`].
    pub(crate) async fn request(&self, request: &Request) -> Result<Response> {
        let rx = self.send(request, true).await?.ok_or(Error::StreamClosed)?;
        let timeout = self.conn.config().request_timeout;
        let response = tokio::time::timeout(timeout, rx)
            .await
            .map_err(|_| Error::Timeout(timeout))?
            .map_err(|_| Error::StreamClosed)??;
        match response {
            Response::Error(e) => Err(Error::Broker {
                code: e.code,
                message: e.message,
            }),
            other => Ok(other),
        }
    }

    /// Writes `request`; with `want_reply` returns the waiter for its answer. Waits only
    /// for other writers on this stream and for flow control.
    pub(crate) async fn send(
        &self,
        request: &Request,
        want_reply: bool,
    ) -> Result<Option<oneshot::Receiver<Result<Response>>>> {
        let id = self.conn.next_request_id();
        let mut frame = request.encode(id);
        let mut send = self.send.lock().await;
        if self.waiters.is_closed() {
            // A torn or failed frame may be on the stream: end it, so the broker drops it.
            let _ = send.reset(VarInt::from_u32(0));
            return Err(Error::StreamClosed);
        }
        let rx = want_reply.then(|| {
            let (tx, rx) = oneshot::channel();
            // Queued before the frame leaves, so the answer always finds it.
            self.waiters.queue().push_back(tx);
            rx
        });
        let mut guard = CloseUnlessWritten(Some(&self.waiters));
        send.write_all_chunks(&mut frame)
            .await
            .map_err(|_| Error::StreamClosed)?;
        guard.0 = None;
        Ok(rx)
    }
}

async fn read_answers(mut recv: RecvStream, waiters: Arc<Waiters>) {
    loop {
        let Ok(Some((header, body))) = read_frame(&mut recv).await else {
            break;
        };
        let Some(waiter) = waiters.queue().pop_front() else {
            // An answer nobody asked for: the stream is out of step.
            break;
        };
        let _ = waiter.send(Response::decode(&header, body).map_err(Error::from));
    }
    // Remaining waiters are dropped: their requests see StreamClosed.
    waiters.close();
    waiters.queue().clear();
}
