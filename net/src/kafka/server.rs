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
use std::os::fd::AsRawFd;
use std::rc::Rc;

use bytes::{Bytes, BytesMut};
use futures::{AsyncReadExt, AsyncWriteExt};
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use glommio::net::{TcpListener, TcpStream};
use glommio::sync::{Semaphore, StaticPermit};
use glommio::task::JoinHandle;
use kafka_protocol::messages::{ApiKey, RequestKind, ResponseKind};

use super::broker::shard;
use super::frame::{decode_request, encode_response, ErrorAction, FrameDecoder};
use super::groups::RequestContext;
use super::handlers;
use super::limits::{
    MAX_CONNECTIONS_PER_SHARD, MAX_IN_FLIGHT_REQUESTS_PER_CONNECTION,
    MAX_IN_FLIGHT_REQUEST_BYTES_PER_CONNECTION,
};
use super::scatter::ScatterFrame;
use super::versions;

/// Bytes read from a socket per read call when no larger frame is pending.
const READ_CHUNK_BYTES: usize = 64 * 1024;
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
}

/// Accepts Kafka connections on this shard until the listener fails.
pub async fn serve(addr: SocketAddr) -> io::Result<()> {
    let listener = TcpListener::bind(addr)?;
    let open = Rc::new(Cell::new(0usize));
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
        let peer = stream.peer_addr().ok();
        if open.get() >= MAX_CONNECTIONS_PER_SHARD {
            tracing::warn!(
                ?peer,
                limit = MAX_CONNECTIONS_PER_SHARD,
                "connection limit reached; closing new connection"
            );
            drop(stream);
            continue;
        }
        open.set(open.get() + 1);
        let open = Rc::clone(&open);
        glommio::spawn_local(async move {
            if let Err(e) = connection(stream).await {
                tracing::debug!(?peer, error = %e, "connection ended with error");
            }
            open.set(open.get() - 1);
        })
        .detach();
    }
}

async fn connection(stream: TcpStream) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let peer = stream.peer_addr().ok();
    let fd = stream.as_raw_fd();
    let (mut reader, writer) = stream.split();
    let (tx, rx) = local_channel::new_bounded(MAX_IN_FLIGHT_REQUESTS_PER_CONNECTION);
    let writer_task = glommio::spawn_local(write_responses(fd, writer, rx));
    let read_result = read_requests(&mut reader, &tx, peer).await;
    drop(tx);
    let write_result = writer_task.await;
    read_result.and(write_result)
}

async fn read_requests<R: futures::AsyncRead + Unpin>(
    reader: &mut R,
    tx: &LocalSender<Slot>,
    peer: Option<SocketAddr>,
) -> io::Result<()> {
    let mut decoder = FrameDecoder::new();
    let budget = Rc::new(Semaphore::new(
        MAX_IN_FLIGHT_REQUEST_BYTES_PER_CONNECTION as u64,
    ));
    let mut buf = BytesMut::with_capacity(READ_CHUNK_BYTES);
    loop {
        loop {
            let frame = match decoder.decode(&mut buf) {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(?peer, error = %e, "bad frame; closing connection");
                    let _ = tx.send(Slot::Close).await;
                    return Ok(());
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
                Err(_) => return Ok(()),
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
                                if tx.send(Slot::Ready(frame)).await.is_err() {
                                    return Ok(());
                                }
                                continue;
                            }
                            Err(err) => {
                                tracing::error!(error = %err, "encoding ApiVersions fallback failed");
                                let _ = tx.send(Slot::Close).await;
                                return Ok(());
                            }
                        }
                    }
                    ErrorAction::CloseConnection => {
                        tracing::warn!(?peer, error = %e, "bad request; closing connection");
                        let _ = tx.send(Slot::Close).await;
                        return Ok(());
                    }
                },
            };
            let api_key = request.api_key;
            let version = request.api_version();
            let correlation_id = request.correlation_id();
            let ctx = RequestContext {
                client_id: request.header.client_id.as_ref().map(|c| c.to_string()),
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
            if tx.send(Slot::Pending(handle, permit)).await.is_err() {
                return Ok(());
            }
        }
        // Read more: at least what the pending frame still needs.
        let needed = decoder.bytes_needed(&buf).max(1);
        let start = buf.len();
        let want = needed.max(READ_CHUNK_BYTES);
        buf.resize(start + want, 0);
        let n = match reader.read(&mut buf[start..]).await {
            Ok(n) => n,
            Err(e) => {
                buf.truncate(start);
                let _ = tx.send(Slot::Close).await;
                return Err(e);
            }
        };
        buf.truncate(start + n);
        if n == 0 {
            if !buf.is_empty() {
                tracing::debug!(?peer, leftover = buf.len(), "connection closed mid-frame");
            }
            let _ = tx.send(Slot::Close).await;
            return Ok(());
        }
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
) -> io::Result<()> {
    while let Some(slot) = rx.recv().await {
        // The permit (request bytes held against the budget) is released once the
        // response is on its way.
        let (frame, _permit) = match slot {
            Slot::Pending(handle, permit) => match handle.await {
                Some(Some(frame)) => (frame, Some(permit)),
                // No response (acks=0) or the handler failed to encode (already logged).
                _ => continue,
            },
            Slot::Ready(frame) => (frame, None),
            Slot::Close => break,
        };
        write_frame(fd, &mut writer, &frame.chunks).await?;
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
