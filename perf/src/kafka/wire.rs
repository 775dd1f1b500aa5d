//! Blocking Kafka client connections for the load generator: framing, version negotiation and
//! typed request/response round trips, all through `kafka-protocol`'s generated codecs.
//!
//! Invariants: a connection negotiates every API version once (ApiVersions) and never sends a
//! version outside both the broker's range and [`OUR_MAX_VERSIONS`]. Frames are read into one
//! growing buffer and split off without copying, so a fetch response's `records` are slices of
//! the bytes the socket delivered.

use std::collections::HashMap;
use std::io::Write;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, RequestHeader, ResponseHeader,
};
use kafka_protocol::protocol::{
    Decodable, Encodable, HeaderVersion, Message, Request, StrBytes, VersionRange,
};

/// Largest frame the generator accepts from a broker (a fetch response is bounded by the
/// request's `max_bytes`, which the generator keeps well below this).
pub const MAX_RESPONSE_FRAME_BYTES: usize = 256 * 1024 * 1024;
/// Bytes the frame reader asks the kernel for at least per read.
pub const READ_CHUNK_BYTES: usize = 256 * 1024;
/// Socket buffer sizes requested for every connection: large enough that a pipelined
/// producer or a 50 MiB fetch is not throttled by the window on loopback.
pub const SOCKET_BUFFER_BYTES: usize = 4 * 1024 * 1024;
/// How long to wait for a TCP connection before giving up.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

pub const CLIENT_ID: &str = "quiver-perf";

/// The highest version of each API the generator encodes. Capped below the codec's maximum
/// where newer versions change shape (Produce 13 and Fetch 13+ name topics by id).
pub const OUR_MAX_VERSIONS: &[(ApiKey, i16)] = &[
    (ApiKey::Produce, 11),
    (ApiKey::Fetch, 12),
    (ApiKey::Metadata, 12),
    (ApiKey::ListOffsets, 7),
    (ApiKey::CreateTopics, 7),
    (ApiKey::FindCoordinator, 3),
    (ApiKey::JoinGroup, 7),
    (ApiKey::SyncGroup, 5),
    (ApiKey::Heartbeat, 4),
    (ApiKey::LeaveGroup, 4),
    (ApiKey::OffsetCommit, 8),
];

/// One version negotiated per API key.
#[derive(Debug, Clone, Default)]
pub struct Versions {
    by_key: HashMap<i16, i16>,
}

impl Versions {
    /// The version to use for `R`, or an error naming the API the broker lacks.
    pub fn of<R: Request>(&self) -> Result<i16> {
        self.by_key.get(&R::KEY).copied().ok_or_else(|| {
            anyhow!(
                "the broker supports no version of API key {} that quiver-perf speaks",
                R::KEY
            )
        })
    }

    fn negotiate(response: &ApiVersionsResponse) -> Self {
        let mut by_key = HashMap::new();
        for (key, our_max) in OUR_MAX_VERSIONS {
            let ours = codec_versions(*key).intersect(&VersionRange {
                min: 0,
                max: *our_max,
            });
            if let Some(theirs) = response
                .api_keys
                .iter()
                .find(|api| api.api_key == *key as i16)
            {
                let both = ours.intersect(&VersionRange {
                    min: theirs.min_version,
                    max: theirs.max_version,
                });
                if !both.is_empty() {
                    by_key.insert(*key as i16, both.max);
                }
            }
        }
        Self { by_key }
    }
}

fn codec_versions(key: ApiKey) -> VersionRange {
    use kafka_protocol::messages::*;
    match key {
        ApiKey::Produce => ProduceRequest::VERSIONS,
        ApiKey::Fetch => FetchRequest::VERSIONS,
        ApiKey::Metadata => MetadataRequest::VERSIONS,
        ApiKey::ListOffsets => ListOffsetsRequest::VERSIONS,
        ApiKey::CreateTopics => CreateTopicsRequest::VERSIONS,
        ApiKey::FindCoordinator => FindCoordinatorRequest::VERSIONS,
        ApiKey::JoinGroup => JoinGroupRequest::VERSIONS,
        ApiKey::SyncGroup => SyncGroupRequest::VERSIONS,
        ApiKey::Heartbeat => HeartbeatRequest::VERSIONS,
        ApiKey::LeaveGroup => LeaveGroupRequest::VERSIONS,
        ApiKey::OffsetCommit => OffsetCommitRequest::VERSIONS,
        _ => VersionRange { min: 1, max: 0 },
    }
}

/// Appends one request frame (size prefix, header, body) to `out`.
pub fn encode_request<R: Request>(
    out: &mut BytesMut,
    correlation_id: i32,
    version: i16,
    request: &R,
) -> Result<()> {
    let header = RequestHeader::default()
        .with_request_api_key(R::KEY)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str(CLIENT_ID)));
    let header_version = R::header_version(version);
    let size = header.compute_size(header_version)? + request.compute_size(version)?;
    out.reserve(4 + size);
    out.put_u32(size as u32);
    let start = out.len();
    header.encode(out, header_version)?;
    request.encode(out, version)?;
    debug_assert_eq!(out.len() - start, size);
    Ok(())
}

/// Decodes a response frame (without its size prefix) for request type `R` at `version`,
/// returning the correlation id and the body.
pub fn decode_response<R: Request>(mut frame: Bytes, version: i16) -> Result<(i32, R::Response)> {
    let header_version = R::Response::header_version(version);
    let header = ResponseHeader::decode(&mut frame, header_version)?;
    let body = R::Response::decode(&mut frame, version)?;
    Ok((header.correlation_id, body))
}

/// The read half of a connection: splits the byte stream into frames.
pub struct FrameReader {
    stream: TcpStream,
    buffer: BytesMut,
}

impl FrameReader {
    pub fn new(stream: TcpStream) -> Self {
        Self {
            stream,
            buffer: BytesMut::with_capacity(READ_CHUNK_BYTES),
        }
    }

    /// The next frame's body (size prefix removed). Errors on EOF or an oversized frame.
    pub fn read_frame(&mut self) -> Result<Bytes> {
        loop {
            if let Some(frame) = self.buffered_frame()? {
                return Ok(frame);
            }
            self.fill()?;
        }
    }

    /// The next frame if one is whole in the buffer or arrives without blocking;
    /// `Ok(None)` when the socket has nothing more now.
    pub fn try_read_frame(&mut self) -> Result<Option<Bytes>> {
        loop {
            if let Some(frame) = self.buffered_frame()? {
                return Ok(Some(frame));
            }
            if !self.recv(libc::MSG_DONTWAIT)? {
                return Ok(None);
            }
        }
    }

    /// Splits a whole frame off the buffer, or makes room for the rest of it.
    fn buffered_frame(&mut self) -> Result<Option<Bytes>> {
        if self.buffer.len() >= 4 {
            let size = (&self.buffer[..4]).get_u32() as usize;
            if size > MAX_RESPONSE_FRAME_BYTES {
                bail!("response frame of {size} bytes exceeds {MAX_RESPONSE_FRAME_BYTES}");
            }
            if self.buffer.len() >= 4 + size {
                self.buffer.advance(4);
                return Ok(Some(self.buffer.split_to(size).freeze()));
            }
            let missing = 4 + size - self.buffer.len();
            self.buffer.reserve(missing.max(READ_CHUNK_BYTES));
        } else {
            self.buffer.reserve(READ_CHUNK_BYTES);
        }
        Ok(None)
    }

    /// The socket, to wait for it to become readable.
    pub fn raw_fd(&self) -> std::os::fd::RawFd {
        self.stream.as_raw_fd()
    }

    /// One blocking `recv` into the buffer's spare capacity.
    fn fill(&mut self) -> Result<()> {
        self.recv(0).map(|_| ())
    }

    /// One `recv` with `flags`; false if it would block.
    fn recv(&mut self, flags: libc::c_int) -> Result<bool> {
        let spare = self.buffer.spare_capacity_mut();
        // SAFETY: recv writes at most `spare.len()` bytes into memory the BytesMut owns and
        // does not read it; we then mark exactly the bytes it reported as initialized.
        let received = unsafe {
            libc::recv(
                self.stream.as_raw_fd(),
                spare.as_mut_ptr().cast(),
                spare.len(),
                flags,
            )
        };
        if received < 0 {
            let error = std::io::Error::last_os_error();
            match error.kind() {
                std::io::ErrorKind::Interrupted => return Ok(true),
                std::io::ErrorKind::WouldBlock => return Ok(false),
                _ => return Err(error).context("recv"),
            }
        }
        if received == 0 {
            bail!("connection closed by the broker");
        }
        // SAFETY: the kernel initialized `received` bytes of the spare capacity.
        unsafe { self.buffer.set_len(self.buffer.len() + received as usize) };
        Ok(true)
    }
}

/// Opens a TCP connection with TCP_NODELAY and large socket buffers.
pub fn connect(address: &str) -> Result<TcpStream> {
    let addresses: Vec<SocketAddr> = address
        .to_socket_addrs()
        .with_context(|| format!("resolving {address}"))?
        .collect();
    let mut last_error = None;
    for socket_address in addresses {
        match TcpStream::connect_timeout(&socket_address, CONNECT_TIMEOUT) {
            Ok(stream) => {
                tune_socket(&stream)?;
                return Ok(stream);
            }
            Err(error) => last_error = Some(error),
        }
    }
    Err(anyhow!("connecting to {address}: {last_error:?}"))
}

/// TCP_NODELAY (a small request must not wait for Nagle and a delayed ACK) and big buffers.
pub fn tune_socket(stream: &TcpStream) -> Result<()> {
    stream.set_nodelay(true)?;
    let fd = stream.as_raw_fd();
    for option in [libc::SO_SNDBUF, libc::SO_RCVBUF] {
        let value = SOCKET_BUFFER_BYTES as libc::c_int;
        // SAFETY: setsockopt reads one c_int from a valid pointer; fd is an open socket.
        unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                option,
                (&value as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }
    Ok(())
}

/// A connection used for one request at a time (metadata, group membership, fetches).
pub struct Connection {
    pub address: String,
    writer: TcpStream,
    reader: FrameReader,
    next_correlation_id: i32,
    pub versions: Versions,
    out: BytesMut,
}

impl Connection {
    /// Connects and negotiates versions with ApiVersions.
    pub fn open(address: &str) -> Result<Self> {
        let stream = connect(address)?;
        let reader = FrameReader::new(stream.try_clone()?);
        let mut connection = Self {
            address: address.to_string(),
            writer: stream,
            reader,
            next_correlation_id: 0,
            versions: Versions::default(),
            out: BytesMut::new(),
        };
        let request = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str(CLIENT_ID))
            .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
        let response: ApiVersionsResponse = connection.round_trip(&request, 3)?;
        if response.error_code != 0 {
            bail!(
                "ApiVersions v3 to {address} failed with error code {}",
                response.error_code
            );
        }
        connection.versions = Versions::negotiate(&response);
        Ok(connection)
    }

    /// Sends `request` at the negotiated version and waits for its response.
    pub fn call<R: Request>(&mut self, request: &R) -> Result<R::Response> {
        let version = self.versions.of::<R>()?;
        self.round_trip(request, version)
    }

    /// The negotiated version for `R`.
    pub fn version<R: Request>(&self) -> Result<i16> {
        self.versions.of::<R>()
    }

    fn round_trip<R: Request>(&mut self, request: &R, version: i16) -> Result<R::Response> {
        let correlation_id = self.next_correlation_id;
        self.next_correlation_id = self.next_correlation_id.wrapping_add(1);
        self.out.clear();
        encode_request(&mut self.out, correlation_id, version, request)?;
        self.writer
            .write_all(&self.out)
            .with_context(|| format!("writing to {}", self.address))?;
        let frame = self.reader.read_frame()?;
        let (got, response) = decode_response::<R>(frame, version)?;
        if got != correlation_id {
            bail!("correlation id {got} in reply to {correlation_id}");
        }
        Ok(response)
    }

    /// Splits into a write half and a read half for pipelining, keeping the versions.
    pub fn split(self) -> (TcpStream, FrameReader, Versions) {
        (self.writer, self.reader, self.versions)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::MetadataRequest;

    #[test]
    fn request_frame_size_prefix_matches_body() {
        let mut out = BytesMut::new();
        encode_request(&mut out, 7, 9, &MetadataRequest::default()).unwrap();
        let size = (&out[..4]).get_u32() as usize;
        assert_eq!(size + 4, out.len());
        // api key 3 (Metadata), version 9, correlation id 7.
        assert_eq!(&out[4..12], &[0, 3, 0, 9, 0, 0, 0, 7]);
    }
}
