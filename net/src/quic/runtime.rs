//! quinn on a glommio shard: the [`quinn::Runtime`] that lets each shard run its own QUIC
//! endpoint, so a request is decrypted, decoded and served on the shard that received it,
//! with no hand-off to another thread (docs/ARCHITECTURE.md, "QUIC on the shards").
//!
//! quinn asks a runtime for three things: timers, spawning, and a UDP socket that can say
//! when to retry a non-blocking send or receive. Here they are glommio timers, glommio
//! local tasks, and quinn-udp's own `sendmsg`/`recvmsg` (GSO, GRO, ECN) told when to retry
//! by io_uring `POLL_ADD` ([`glommio::net::FdReadiness`], a Quiver patch).
//!
//! quinn's traits require `Send + Sync` because its other runtimes move tasks between
//! threads. Nothing here ever leaves the shard that created it: the endpoint, its driver
//! and every connection are created and polled on one executor thread, and quinn wakes its
//! tasks from the task that polls it. [`ShardBound`] states that promise and checks it: any
//! use from another thread panics instead of touching glommio's thread-local state.

use std::fmt;
use std::future::Future;
use std::io::{self, IoSliceMut};
use std::mem::ManuallyDrop;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use glommio::net::FdReadiness;
use glommio::timer::Timer;
use quinn::udp::{RecvMeta, Transmit, UdpSocketState};
use quinn::{AsyncTimer, AsyncUdpSocket, Runtime, UdpPoller};
use std::os::fd::AsRawFd;

/// A value that is only ever used on the thread that created it, checked on every access.
pub struct ShardBound<T> {
    owner: ThreadId,
    value: ManuallyDrop<T>,
}

// SAFETY: `get_mut` panics on any thread but `owner`, and `Drop` leaks the value rather
// than drop it elsewhere, so the `!Send`/`!Sync` value (glommio's `Rc`-based timers and
// I/O sources) is only ever touched by its own thread. Moving the wrapper (quinn boxes
// and `Arc`s it) moves only bytes, not the thread-local state they point to.
unsafe impl<T> Send for ShardBound<T> {}
// SAFETY: a shared reference gives no access to the value at all.
unsafe impl<T> Sync for ShardBound<T> {}

impl<T> ShardBound<T> {
    pub fn new(value: T) -> Self {
        ShardBound {
            owner: std::thread::current().id(),
            value: ManuallyDrop::new(value),
        }
    }

    pub fn get_mut(&mut self) -> &mut T {
        assert_eq!(
            self.owner,
            std::thread::current().id(),
            "a shard-bound QUIC object was used from another thread"
        );
        &mut self.value
    }
}

impl<T> Drop for ShardBound<T> {
    fn drop(&mut self) {
        if std::thread::current().id() == self.owner {
            // SAFETY: dropped once, here, and never used again.
            unsafe { ManuallyDrop::drop(&mut self.value) };
        } else {
            // Dropping glommio state on a foreign thread would corrupt it. Leaking is the
            // safe choice; it cannot happen unless quinn changes how it uses runtimes.
            tracing::error!("a shard-bound QUIC object was dropped on another thread; leaked");
        }
    }
}

impl<T> fmt::Debug for ShardBound<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShardBound").finish_non_exhaustive()
    }
}

/// The runtime of one shard's QUIC endpoint. Create it on the shard, inside its executor.
#[derive(Debug, Clone, Copy, Default)]
pub struct GlommioRuntime;

impl Runtime for GlommioRuntime {
    fn new_timer(&self, at: Instant) -> Pin<Box<dyn AsyncTimer>> {
        Box::pin(ShardTimer(ShardBound::new(Timer::new(until(at)))))
    }

    fn spawn(&self, future: Pin<Box<dyn Future<Output = ()> + Send>>) {
        glommio::spawn_local(future).detach();
    }

    fn wrap_udp_socket(&self, socket: std::net::UdpSocket) -> io::Result<Arc<dyn AsyncUdpSocket>> {
        socket.set_nonblocking(true)?;
        let state = UdpSocketState::new((&socket).into())?;
        let readiness = FdReadiness::new(socket.as_raw_fd());
        Ok(Arc::new(ShardUdpSocket {
            readiness: Mutex::new(ShardBound::new(readiness)),
            send_blocked: AtomicBool::new(false),
            recv_drained: AtomicBool::new(false),
            state,
            socket,
        }))
    }

    /// Everything of a shard's endpoint runs on the shard's thread, so a task hop to a
    /// connection's driver buys nothing and costs a scheduler turn per packet each way:
    /// datagrams are handled where the endpoint receives them and packets leave from the
    /// task that wrote them (third_party/quinn/QUIVER_PATCHES.md, patch 1).
    fn drive_connections_inline(&self) -> bool {
        true
    }
}

fn until(at: Instant) -> Duration {
    at.saturating_duration_since(Instant::now())
}

struct ShardTimer(ShardBound<Timer>);

impl fmt::Debug for ShardTimer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ShardTimer")
    }
}

impl AsyncTimer for ShardTimer {
    fn reset(self: Pin<&mut Self>, at: Instant) {
        self.get_mut().0.get_mut().reset(until(at));
    }

    fn poll(self: Pin<&mut Self>, cx: &mut Context) -> Poll<()> {
        Pin::new(self.get_mut().0.get_mut()).poll(cx).map(|_| ())
    }
}

/// One shard's UDP socket. `readiness` (receive) is used only by the endpoint driver, on
/// this shard: the lock is never contended.
struct ShardUdpSocket {
    socket: std::net::UdpSocket,
    state: UdpSocketState,
    readiness: Mutex<ShardBound<FdReadiness>>,
    /// The last send found the socket buffer full (`WouldBlock`). Until then the socket
    /// is assumed writable: quinn asks [`UdpPoller::poll_writable`] before every send,
    /// and arming a `POLL_ADD` each time would hold every packet (every answer) until
    /// the reactor's next turn. Only the shard's thread touches it; atomic for `Sync`.
    send_blocked: AtomicBool,
    /// The last receive returned a short batch: the socket had nothing more then. The
    /// next `poll_recv` arms the readiness poll instead of calling `recvmmsg` again.
    /// Only the shard's thread touches it; atomic for `Sync`.
    recv_drained: AtomicBool,
}

impl fmt::Debug for ShardUdpSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShardUdpSocket")
            .field("socket", &self.socket)
            .finish_non_exhaustive()
    }
}

impl AsyncUdpSocket for ShardUdpSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        let readiness = ShardBound::new(FdReadiness::new(self.socket.as_raw_fd()));
        Box::pin(ShardPoller {
            socket: self,
            readiness,
        })
    }

    fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
        let result = self.state.send((&self.socket).into(), transmit);
        let blocked = matches!(&result, Err(e) if e.kind() == io::ErrorKind::WouldBlock);
        self.send_blocked.store(blocked, Ordering::Relaxed);
        result
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let mut readiness = self.readiness.lock().unwrap_or_else(|p| p.into_inner());
        // A short batch drained the socket: skip the `recvmmsg` that would only say
        // `WouldBlock` and arm the poll at once (io_uring checks readiness when it arms,
        // so a datagram that arrived meanwhile still fires it).
        let mut drained = self.recv_drained.swap(false, Ordering::Relaxed);
        loop {
            if !drained {
                match self.state.recv((&self.socket).into(), bufs, meta) {
                    Ok(received) => {
                        let batch = bufs.len().min(meta.len()).min(quinn::udp::BATCH_SIZE);
                        self.recv_drained.store(received < batch, Ordering::Relaxed);
                        // Whatever readiness fired before this read is used up.
                        readiness.get_mut().clear_readable();
                        return Poll::Ready(Ok(received));
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Poll::Ready(Err(e)),
                }
            }
            drained = false;
            match readiness.get_mut().poll_readable(cx) {
                // A poll armed earlier fired: try again.
                Poll::Ready(()) => continue,
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    fn may_fragment(&self) -> bool {
        self.state.may_fragment()
    }

    fn max_transmit_segments(&self) -> usize {
        self.state.max_gso_segments()
    }

    fn max_receive_segments(&self) -> usize {
        self.state.gro_segments()
    }
}

/// Write readiness for one connection (quinn creates one per connection): writable at
/// once unless the socket's last send would have blocked; then each blocked connection
/// has its own `POLL_ADD`, so every one is woken, not just the latest.
struct ShardPoller {
    /// Keeps the descriptor open while the poll may be armed.
    socket: Arc<ShardUdpSocket>,
    readiness: ShardBound<FdReadiness>,
}

impl fmt::Debug for ShardPoller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ShardPoller")
    }
}

impl UdpPoller for ShardPoller {
    fn poll_writable(self: Pin<&mut Self>, cx: &mut Context) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.socket.send_blocked.load(Ordering::Relaxed) {
            return Poll::Ready(Ok(()));
        }
        // Blocked: wait for the kernel to say there is room. quinn's send after this
        // clears the flag, or sets it again and comes back here.
        this.readiness.get_mut().poll_writable(cx).map(Ok)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Waker;

    /// quinn asks `poll_writable` before every send. An idle socket must say yes at once:
    /// a `POLL_ADD` round trip per packet held every answer until the reactor's next turn
    /// (and behind whatever that turn ran), ~50-100 µs per QUIC answer on this host.
    #[test]
    fn an_idle_socket_is_writable_without_a_reactor_turn() {
        glommio::LocalExecutorBuilder::default()
            .spawn(|| async {
                let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
                peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let socket = GlommioRuntime
                    .wrap_udp_socket(std::net::UdpSocket::bind("127.0.0.1:0").unwrap())
                    .unwrap();
                let mut poller = socket.clone().create_io_poller();
                let mut cx = Context::from_waker(Waker::noop());
                for round in 0..3u8 {
                    assert!(
                        matches!(poller.as_mut().poll_writable(&mut cx), Poll::Ready(Ok(()))),
                        "send {round}: writable only after a reactor turn"
                    );
                    let payload = [round; 32];
                    socket
                        .try_send(&Transmit {
                            destination: peer.local_addr().unwrap(),
                            ecn: None,
                            contents: &payload,
                            segment_size: None,
                            src_ip: None,
                        })
                        .unwrap();
                    let mut got = [0u8; 64];
                    let n = peer.recv(&mut got).unwrap();
                    assert_eq!(&got[..n], &payload);
                }
            })
            .unwrap()
            .join()
            .unwrap();
    }

    /// Receives one batch through `poll_recv`, as quinn's endpoint driver does; the
    /// first datagram's bytes, or `None` if nothing came within 5 s.
    async fn receive(socket: &dyn AsyncUdpSocket) -> Option<Vec<u8>> {
        let mut storage = vec![0u8; quinn::udp::BATCH_SIZE * 2048];
        let batch = futures::future::poll_fn(|cx| {
            let mut bufs: Vec<IoSliceMut> = storage.chunks_mut(2048).map(IoSliceMut::new).collect();
            let mut meta = [RecvMeta::default(); quinn::udp::BATCH_SIZE];
            socket
                .poll_recv(cx, &mut bufs, &mut meta)
                .map(|r| r.map(|_| meta[0].len))
        });
        let len = glommio::timer::timeout(Duration::from_secs(5), async {
            Ok(batch.await.expect("receive"))
        })
        .await
        .ok()?;
        Some(storage[..len].to_vec())
    }

    /// After a short batch the next `poll_recv` arms the readiness poll without trying
    /// the socket first; a datagram that arrived before the poll was armed, or while it
    /// waits, must still be received.
    #[test]
    fn a_drained_socket_still_receives_the_next_datagram() {
        glommio::LocalExecutorBuilder::default()
            .spawn(|| async {
                let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
                let raw = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
                let addr = raw.local_addr().unwrap();
                let socket = GlommioRuntime.wrap_udp_socket(raw).unwrap();
                // Before the first receive, then between receives (the socket is marked
                // drained), three times over.
                for round in 0..3u8 {
                    peer.send_to(&[round; 100], addr).unwrap();
                    let got = receive(&*socket).await;
                    assert_eq!(got, Some(vec![round; 100]), "datagram {round}");
                }
                // While the receiver waits on its armed poll.
                let sender = glommio::spawn_local(async move {
                    glommio::timer::sleep(Duration::from_millis(20)).await;
                    peer.send_to(&[9; 100], addr).unwrap();
                });
                assert_eq!(receive(&*socket).await, Some(vec![9; 100]), "late datagram");
                sender.await;
            })
            .unwrap()
            .join()
            .unwrap();
    }
}
