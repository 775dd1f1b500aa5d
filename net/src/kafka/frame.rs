//! Sans-IO Kafka framing: split a connection's byte stream into request frames, decode each into a
//! typed request with kafka-protocol, and encode responses into scatter frames.
//!
//! Invariants: no input makes these functions panic; every failure is a typed error that says
//! whether the client can still be answered. Decoding is zero-copy: the frame is a `Bytes` split
//! off the connection's buffer, and byte fields of the request (Produce `records` above all) are
//! slices of that same allocation. A consequence to keep in mind: holding on to such a slice
//! keeps the whole read-buffer allocation it came from alive.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::buf::ByteBufMut;
use kafka_protocol::protocol::{Decodable, Encodable};

use super::limits::{FRAME_SIZE_PREFIX_BYTES, MAX_REQUEST_FRAME_BYTES};
use super::scatter::{ScatterFrame, ScatterWriter};
use super::versions::{self, served_apis};

/// Bytes at the start of every request header that are laid out the same in all header versions:
/// api key (i16), api version (i16), correlation id (i32). Enough to route or refuse a request
/// before decoding the rest of the header.
pub const REQUEST_HEADER_FIXED_PREFIX_BYTES: usize = 8;

/// Why the byte stream cannot be split into frames. The stream is unusable after any of these:
/// the connection must be closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("request frame size prefix is negative ({size})")]
    NegativeSize { size: i32 },
    #[error("request frame of {size} bytes exceeds the limit of {max} bytes")]
    TooLarge { size: usize, max: usize },
}

/// Splits a connection's inbound bytes into request frames: a big-endian `i32` body size, then
/// the body. Holds no bytes itself: the connection owns the buffer and feeds it in.
#[derive(Debug, Clone)]
pub struct FrameDecoder {
    max_frame_bytes: usize,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl FrameDecoder {
    /// A decoder accepting frames up to [`MAX_REQUEST_FRAME_BYTES`].
    pub fn new() -> Self {
        Self {
            max_frame_bytes: MAX_REQUEST_FRAME_BYTES,
        }
    }

    /// A decoder with a lower frame limit (a listener configured below Kafka's default). Limits
    /// above [`MAX_REQUEST_FRAME_BYTES`] are lowered to it.
    pub fn with_max_frame_bytes(max_frame_bytes: usize) -> Self {
        Self {
            max_frame_bytes: max_frame_bytes.min(MAX_REQUEST_FRAME_BYTES),
        }
    }

    pub fn max_frame_bytes(&self) -> usize {
        self.max_frame_bytes
    }

    /// Takes the next complete frame body off the front of `buffer`, or returns `Ok(None)` if
    /// `buffer` does not hold one yet. The body shares `buffer`'s allocation (no copy).
    ///
    /// The size prefix is checked as soon as its 4 bytes arrive, so an oversized frame is refused
    /// before any of its body is buffered. After an error the stream cannot be resynchronised;
    /// the caller must close the connection (calling again returns the same error).
    pub fn decode(&mut self, buffer: &mut BytesMut) -> Result<Option<Bytes>, FrameError> {
        let Some(body_bytes) = self.frame_body_bytes(buffer)? else {
            return Ok(None);
        };
        if buffer.len() - FRAME_SIZE_PREFIX_BYTES < body_bytes {
            return Ok(None);
        }
        buffer.advance(FRAME_SIZE_PREFIX_BYTES);
        Ok(Some(buffer.split_to(body_bytes).freeze()))
    }

    /// How many more bytes `buffer` needs before [`FrameDecoder::decode`] can return a frame or an
    /// error; 0 if it can now. Lets the connection size its next read without over-reserving.
    pub fn bytes_needed(&self, buffer: &BytesMut) -> usize {
        match self.frame_body_bytes(buffer) {
            Ok(Some(body_bytes)) => {
                (FRAME_SIZE_PREFIX_BYTES + body_bytes).saturating_sub(buffer.len())
            }
            Ok(None) => FRAME_SIZE_PREFIX_BYTES - buffer.len(),
            Err(_) => 0,
        }
    }

    /// The body size announced by the prefix at the front of `buffer`, once the prefix is whole.
    fn frame_body_bytes(&self, buffer: &BytesMut) -> Result<Option<usize>, FrameError> {
        let Some(prefix) = buffer.first_chunk::<FRAME_SIZE_PREFIX_BYTES>() else {
            return Ok(None);
        };
        let size = i32::from_be_bytes(*prefix);
        let Ok(body_bytes) = usize::try_from(size) else {
            return Err(FrameError::NegativeSize { size });
        };
        if body_bytes > self.max_frame_bytes {
            return Err(FrameError::TooLarge {
                size: body_bytes,
                max: self.max_frame_bytes,
            });
        }
        Ok(Some(body_bytes))
    }
}

/// A request frame decoded into its header and typed body.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedRequest {
    pub api_key: ApiKey,
    pub header: RequestHeader,
    /// Always the variant for `api_key`, at a version listed in `versions::SUPPORTED_APIS`.
    pub body: RequestKind,
}

impl DecodedRequest {
    pub fn api_version(&self) -> i16 {
        self.header.request_api_version
    }

    pub fn correlation_id(&self) -> i32 {
        self.header.correlation_id
    }
}

/// The parts of a request header that identify it, parsed from the fixed prefix before anything
/// can fail, so that errors can still be answered or logged precisely.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestIdentity {
    pub api_key: ApiKey,
    pub api_version: i16,
    pub correlation_id: i32,
}

/// Why a request frame could not be decoded. Every variant that got far enough carries the
/// correlation id and api key/version; [`RequestError::action`] says how to react.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("request frame of {frame_bytes} bytes is shorter than the {REQUEST_HEADER_FIXED_PREFIX_BYTES}-byte header prefix")]
    Truncated { frame_bytes: usize },
    #[error("unknown api key {api_key} (version {api_version}, correlation id {correlation_id})")]
    UnknownApiKey {
        api_key: i16,
        api_version: i16,
        correlation_id: i32,
    },
    #[error("api {:?} is not served (version {}, correlation id {})", .0.api_key, .0.api_version, .0.correlation_id)]
    UnsupportedApi(RequestIdentity),
    #[error("api {:?} version {} is not served (correlation id {})", .0.api_key, .0.api_version, .0.correlation_id)]
    UnsupportedVersion(RequestIdentity),
    #[error("malformed {:?} v{} request header (correlation id {}): {reason}", .identity.api_key, .identity.api_version, .identity.correlation_id)]
    MalformedHeader {
        identity: RequestIdentity,
        reason: String,
    },
    #[error("malformed {:?} v{} request body (correlation id {}): {reason}", .identity.api_key, .identity.api_version, .identity.correlation_id)]
    MalformedBody {
        identity: RequestIdentity,
        reason: String,
    },
}

/// What a connection does about a [`RequestError`], following Kafka's broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorAction {
    /// Answer with `versions::api_versions_response(requested_version)` encoded as ApiVersions v0
    /// (error UNSUPPORTED_VERSION plus our table, KIP-511) and keep the connection: this is how a
    /// client newer than us learns which versions to use.
    RespondWithApiVersionsV0 {
        correlation_id: i32,
        requested_version: i16,
    },
    /// The request cannot be answered in a way the client would understand: close the
    /// connection, as Kafka does for unknown or unsupported requests and parse failures.
    CloseConnection,
}

impl RequestError {
    /// The identity of the failed request, if the frame was long enough to hold it and the key
    /// is one kafka-protocol knows.
    pub fn identity(&self) -> Option<RequestIdentity> {
        match self {
            RequestError::Truncated { .. } | RequestError::UnknownApiKey { .. } => None,
            RequestError::UnsupportedApi(identity) | RequestError::UnsupportedVersion(identity) => {
                Some(*identity)
            }
            RequestError::MalformedHeader { identity, .. }
            | RequestError::MalformedBody { identity, .. } => Some(*identity),
        }
    }

    pub fn correlation_id(&self) -> Option<i32> {
        match self {
            RequestError::UnknownApiKey { correlation_id, .. } => Some(*correlation_id),
            _ => self.identity().map(|identity| identity.correlation_id),
        }
    }

    pub fn action(&self) -> ErrorAction {
        match self {
            RequestError::UnsupportedVersion(identity)
                if identity.api_key == ApiKey::ApiVersions =>
            {
                ErrorAction::RespondWithApiVersionsV0 {
                    correlation_id: identity.correlation_id,
                    requested_version: identity.api_version,
                }
            }
            _ => ErrorAction::CloseConnection,
        }
    }
}

/// Decodes one request frame body (as returned by [`FrameDecoder::decode`]).
///
/// Only APIs and versions in `versions::SUPPORTED_APIS` are decoded. Bytes after the body are
/// ignored, as Kafka's broker does (it does not check that a request used up its frame).
pub fn decode_request(frame: Bytes) -> Result<DecodedRequest, RequestError> {
    let Some(prefix) = frame.first_chunk::<REQUEST_HEADER_FIXED_PREFIX_BYTES>() else {
        return Err(RequestError::Truncated {
            frame_bytes: frame.len(),
        });
    };
    let raw_api_key = i16::from_be_bytes([prefix[0], prefix[1]]);
    let api_version = i16::from_be_bytes([prefix[2], prefix[3]]);
    let correlation_id = i32::from_be_bytes([prefix[4], prefix[5], prefix[6], prefix[7]]);
    let Ok(api_key) = ApiKey::try_from(raw_api_key) else {
        return Err(RequestError::UnknownApiKey {
            api_key: raw_api_key,
            api_version,
            correlation_id,
        });
    };
    let identity = RequestIdentity {
        api_key,
        api_version,
        correlation_id,
    };
    let Some(served) = versions::supported(api_key) else {
        return Err(RequestError::UnsupportedApi(identity));
    };
    if api_version < served.min || api_version > served.max {
        return Err(RequestError::UnsupportedVersion(identity));
    }

    // Decoding from `Bytes` makes every byte field a `split_to` slice of `frame`: zero-copy.
    let mut buf = frame;
    let header_version = api_key.request_header_version(api_version);
    let header = RequestHeader::decode(&mut buf, header_version).map_err(|error| {
        RequestError::MalformedHeader {
            identity,
            reason: format!("{error:#}"),
        }
    })?;
    let body = RequestKind::decode(api_key, &mut buf, api_version).map_err(|error| {
        RequestError::MalformedBody {
            identity,
            reason: format!("{error:#}"),
        }
    })?;
    Ok(DecodedRequest {
        api_key,
        header,
        body,
    })
}

/// Why a response could not be encoded. The writer is left as it was before the call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("response body is for an api we do not serve")]
    UnservedResponse,
    #[error("response body is for {body:?} but the request was {api_key:?}")]
    ApiKeyMismatch { api_key: ApiKey, body: ApiKey },
    #[error("cannot encode {api_key:?} v{api_version} response: {reason}")]
    Codec {
        api_key: ApiKey,
        api_version: i16,
        reason: String,
    },
    #[error("response frame of {size} bytes does not fit the i32 size prefix")]
    TooLarge { size: usize },
}

macro_rules! define_response_dispatch {
    ($($key:ident: $request:ident, $min:literal..=$max:literal;)*) => {
        /// The api key of a response body, if it is one we serve.
        fn served_response_api_key(body: &ResponseKind) -> Option<ApiKey> {
            match body {
                $(ResponseKind::$key(_) => Some(ApiKey::$key),)*
                _ => None,
            }
        }

        /// `ResponseKind::encode` only writes into a `BytesMut`; this reaches the same generated
        /// encoders generically, so they can write into a `ScatterWriter`. `None` if the body is
        /// not one we serve. Errors keep only the crate's message, so that this crate needs no
        /// anyhow (house style keeps it to binaries).
        fn encode_served_response_body<B: ByteBufMut>(
            body: &ResponseKind,
            buf: &mut B,
            api_version: i16,
        ) -> Option<Result<(), String>> {
            match body {
                $(ResponseKind::$key(message) => {
                    Some(message.encode(buf, api_version).map_err(|error| format!("{error:#}")))
                })*
                _ => None,
            }
        }
    };
}
served_apis!(define_response_dispatch);

/// Encodes a response frame (size prefix, response header, body) for the request identified by
/// `correlation_id`, `api_key`, `api_version`. The record data of a Fetch response is referenced,
/// not copied.
pub fn encode_response(
    correlation_id: i32,
    api_key: ApiKey,
    api_version: i16,
    body: &ResponseKind,
) -> Result<ScatterFrame, EncodeError> {
    let mut writer = ScatterWriter::new();
    if let ResponseKind::Fetch(fetch) = body {
        for partition in fetch.responses.iter().flat_map(|topic| &topic.partitions) {
            if let Some(records) = &partition.records {
                writer.register(records.clone());
            }
        }
    }
    encode_response_into(&mut writer, correlation_id, api_key, api_version, body)?;
    Ok(writer.finish())
}

/// Like [`encode_response`] for a Fetch response whose record buffers the caller lists:
/// `direct` buffers appear as a partition's `records` as is; each `spliced` placeholder
/// appears as `records` and is replaced on the wire by its parts.
pub fn encode_response_with_records(
    correlation_id: i32,
    api_key: ApiKey,
    api_version: i16,
    body: &ResponseKind,
    direct: Vec<Bytes>,
    spliced: Vec<(Bytes, Vec<Bytes>)>,
) -> Result<ScatterFrame, EncodeError> {
    let mut writer = ScatterWriter::new();
    for b in direct {
        writer.register(b);
    }
    for (placeholder, parts) in spliced {
        writer.register_spliced(placeholder, parts);
    }
    encode_response_into(&mut writer, correlation_id, api_key, api_version, body)?;
    Ok(writer.finish())
}

/// Appends a response frame to `writer`, referencing whatever `Bytes` the caller registered.
/// Several responses may be appended to one writer to send them with one vectored write.
///
/// The response header version follows the API and version (ApiVersions responses always use
/// header v0, so that clients can read them before they know which versions we speak).
pub fn encode_response_into(
    writer: &mut ScatterWriter,
    correlation_id: i32,
    api_key: ApiKey,
    api_version: i16,
    body: &ResponseKind,
) -> Result<(), EncodeError> {
    let body_api_key = served_response_api_key(body).ok_or(EncodeError::UnservedResponse)?;
    if body_api_key != api_key {
        return Err(EncodeError::ApiKeyMismatch {
            api_key,
            body: body_api_key,
        });
    }
    let frame_start = writer.offset();
    let result = encode_frame(
        writer,
        frame_start,
        correlation_id,
        api_key,
        api_version,
        body,
    );
    if result.is_err() {
        // Leave no partial frame behind for the next response appended to this writer.
        writer.seek(frame_start);
    }
    result
}

fn encode_frame(
    writer: &mut ScatterWriter,
    frame_start: usize,
    correlation_id: i32,
    api_key: ApiKey,
    api_version: i16,
    body: &ResponseKind,
) -> Result<(), EncodeError> {
    let codec_error = |reason: String| EncodeError::Codec {
        api_key,
        api_version,
        reason,
    };
    // Back-patched below: the size is only known once the body is written.
    writer.put_i32(0);
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    header
        .encode(writer, api_key.response_header_version(api_version))
        .map_err(|error| codec_error(format!("header: {error:#}")))?;
    match encode_served_response_body(body, writer, api_version) {
        Some(result) => result.map_err(codec_error)?,
        None => return Err(EncodeError::UnservedResponse),
    }
    let size = writer.offset() - frame_start - FRAME_SIZE_PREFIX_BYTES;
    let Ok(size_prefix) = i32::try_from(size) else {
        return Err(EncodeError::TooLarge { size });
    };
    writer
        .range(frame_start..frame_start + FRAME_SIZE_PREFIX_BYTES)
        .copy_from_slice(&size_prefix.to_be_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::produce_response::{
        PartitionProduceResponse, TopicProduceResponse,
    };
    use kafka_protocol::messages::{
        ApiVersionsRequest, ApiVersionsResponse, FetchRequest, MetadataRequest, ProduceRequest,
        ProduceResponse, TopicName,
    };
    use kafka_protocol::protocol::StrBytes;

    /// A whole request frame (size prefix included) for `body` at `version`.
    fn request_frame<T: Encodable>(
        api_key: ApiKey,
        version: i16,
        correlation_id: i32,
        body: &T,
    ) -> BytesMut {
        let header = RequestHeader::default()
            .with_request_api_key(api_key as i16)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(StrBytes::from_static_str("test-client")));
        let mut encoded = BytesMut::new();
        header
            .encode(&mut encoded, api_key.request_header_version(version))
            .expect("encodable header");
        body.encode(&mut encoded, version).expect("encodable body");
        let mut frame = BytesMut::new();
        frame.put_i32(encoded.len() as i32);
        frame.extend_from_slice(&encoded);
        frame
    }

    fn body_of(frame: &BytesMut) -> Bytes {
        Bytes::copy_from_slice(&frame[FRAME_SIZE_PREFIX_BYTES..])
    }

    fn produce_request(records: Bytes) -> ProduceRequest {
        ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(30_000)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_static_str("events")))
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(0)
                    .with_records(Some(records))])])
    }

    // --- FrameDecoder ---

    #[test]
    fn frames_split_across_feeds_are_reassembled() {
        let mut stream = request_frame(ApiKey::ApiVersions, 3, 1, &ApiVersionsRequest::default());
        stream.extend_from_slice(&request_frame(
            ApiKey::Metadata,
            12,
            2,
            &MetadataRequest::default(),
        ));
        let total = stream.len();
        for chunk_len in [1, 2, 3, 5, 7, total] {
            let mut decoder = FrameDecoder::new();
            let mut buffer = BytesMut::new();
            let mut frames = Vec::new();
            for chunk in stream.chunks(chunk_len) {
                buffer.extend_from_slice(chunk);
                assert!(decoder.bytes_needed(&buffer) <= total);
                while let Some(frame) = decoder.decode(&mut buffer).expect("valid stream") {
                    frames.push(frame);
                }
            }
            assert!(buffer.is_empty(), "chunk {chunk_len}: all bytes consumed");
            let correlation_ids: Vec<i32> = frames
                .into_iter()
                .map(|frame| decode_request(frame).expect("decodable").correlation_id())
                .collect();
            assert_eq!(correlation_ids, vec![1, 2], "chunk {chunk_len}");
        }
    }

    #[test]
    fn bytes_needed_tracks_the_pending_frame() {
        let decoder = FrameDecoder::new();
        let mut buffer = BytesMut::new();
        assert_eq!(decoder.bytes_needed(&buffer), 4);
        buffer.put_slice(&[0, 0]);
        assert_eq!(decoder.bytes_needed(&buffer), 2);
        buffer.put_slice(&[0, 10]);
        assert_eq!(decoder.bytes_needed(&buffer), 10);
        buffer.put_slice(&[0; 10]);
        assert_eq!(decoder.bytes_needed(&buffer), 0);
    }

    #[test]
    fn oversize_frame_is_refused_from_its_prefix() {
        let mut decoder = FrameDecoder::new();
        let mut buffer = BytesMut::new();
        buffer.put_i32(MAX_REQUEST_FRAME_BYTES as i32 + 1);
        let expected = FrameError::TooLarge {
            size: MAX_REQUEST_FRAME_BYTES + 1,
            max: MAX_REQUEST_FRAME_BYTES,
        };
        assert_eq!(decoder.decode(&mut buffer), Err(expected));
        assert_eq!(decoder.decode(&mut buffer), Err(expected), "stays failed");
        assert_eq!(decoder.bytes_needed(&buffer), 0);

        let mut small = FrameDecoder::with_max_frame_bytes(16);
        let mut buffer = BytesMut::new();
        buffer.put_i32(17);
        assert_eq!(
            small.decode(&mut buffer),
            Err(FrameError::TooLarge { size: 17, max: 16 })
        );
        // Exactly at the limit is accepted.
        let mut buffer = BytesMut::new();
        buffer.put_i32(16);
        buffer.put_slice(&[0; 16]);
        assert_eq!(
            small
                .decode(&mut buffer)
                .expect("at limit")
                .map(|f| f.len()),
            Some(16)
        );
        assert_eq!(
            FrameDecoder::with_max_frame_bytes(usize::MAX).max_frame_bytes(),
            MAX_REQUEST_FRAME_BYTES
        );
    }

    #[test]
    fn negative_size_is_refused() {
        for size in [-1, i32::MIN] {
            let mut buffer = BytesMut::new();
            buffer.put_i32(size);
            assert_eq!(
                FrameDecoder::new().decode(&mut buffer),
                Err(FrameError::NegativeSize { size })
            );
        }
    }

    #[test]
    fn frames_share_the_connection_buffer() {
        let records = Bytes::from(vec![0xEE; 512]);
        let mut buffer = request_frame(ApiKey::Produce, 9, 7, &produce_request(records.clone()));
        let buffer_range = buffer.as_ptr() as usize..buffer.as_ptr() as usize + buffer.len();
        let frame = FrameDecoder::new()
            .decode(&mut buffer)
            .expect("valid")
            .expect("complete");
        assert!(buffer_range.contains(&(frame.as_ptr() as usize)));
        let request = decode_request(frame).expect("decodable");
        let RequestKind::Produce(produce) = &request.body else {
            panic!("expected Produce, got {:?}", request.body);
        };
        let decoded_records = produce.topic_data[0].partition_data[0]
            .records
            .as_ref()
            .expect("records present");
        assert_eq!(decoded_records, &records);
        // Zero-copy: the records are a slice of the bytes the connection read.
        let records_at = decoded_records.as_ptr() as usize;
        assert!(buffer_range.contains(&records_at));
        assert!(records_at + decoded_records.len() <= buffer_range.end);
    }

    // --- decode_request ---

    #[test]
    fn every_served_api_and_version_decodes_a_default_request() {
        fn check<T: Encodable + Default>(api_key: ApiKey) {
            let range = versions::supported(api_key).expect("served");
            for version in range.min..=range.max {
                let frame = request_frame(api_key, version, 99, &T::default());
                let request = decode_request(body_of(&frame))
                    .unwrap_or_else(|error| panic!("{api_key:?} v{version}: {error}"));
                assert_eq!(request.api_key, api_key);
                assert_eq!(request.api_version(), version);
                assert_eq!(request.correlation_id(), 99);
            }
        }
        macro_rules! check_all {
            ($($key:ident: $request:ident, $min:literal..=$max:literal;)*) => {
                $(check::<kafka_protocol::messages::$request>(ApiKey::$key);)*
            };
        }
        served_apis!(check_all);
    }

    #[test]
    fn unknown_api_key_is_refused_with_its_correlation_id() {
        let mut frame = BytesMut::new();
        frame.put_i16(999);
        frame.put_i16(0);
        frame.put_i32(42);
        let error = decode_request(frame.freeze()).expect_err("unknown key");
        assert_eq!(
            error,
            RequestError::UnknownApiKey {
                api_key: 999,
                api_version: 0,
                correlation_id: 42
            }
        );
        assert_eq!(error.correlation_id(), Some(42));
        assert_eq!(error.action(), ErrorAction::CloseConnection);
    }

    #[test]
    fn known_but_unserved_api_is_refused() {
        let mut frame = BytesMut::new();
        frame.put_i16(ApiKey::SaslHandshake as i16);
        frame.put_i16(1);
        frame.put_i32(5);
        let error = decode_request(frame.freeze()).expect_err("unserved");
        assert!(matches!(error, RequestError::UnsupportedApi(_)));
        assert_eq!(error.action(), ErrorAction::CloseConnection);
    }

    #[test]
    fn unsupported_version_is_refused_with_identity() {
        // Fetch v17 is valid Kafka (and kafka-protocol decodes it), but we serve up to v16.
        let frame = request_frame(ApiKey::Fetch, 17, 8, &FetchRequest::default());
        let error = decode_request(body_of(&frame)).expect_err("unsupported");
        let identity = RequestIdentity {
            api_key: ApiKey::Fetch,
            api_version: 17,
            correlation_id: 8,
        };
        assert_eq!(error, RequestError::UnsupportedVersion(identity));
        assert_eq!(error.action(), ErrorAction::CloseConnection);
        // Produce v2 predates RecordBatch v2.
        let mut frame = BytesMut::new();
        frame.put_i16(ApiKey::Produce as i16);
        frame.put_i16(2);
        frame.put_i32(9);
        assert!(matches!(
            decode_request(frame.freeze()),
            Err(RequestError::UnsupportedVersion(_))
        ));
    }

    #[test]
    fn unsupported_api_versions_version_is_answered_with_v0() {
        // A client newer than us: ApiVersions v4, body unknown to us.
        let mut frame = BytesMut::new();
        frame.put_i16(ApiKey::ApiVersions as i16);
        frame.put_i16(4);
        frame.put_i32(77);
        frame.put_slice(b"\x00\x0bnewer-client\x00");
        let error = decode_request(frame.freeze()).expect_err("unsupported");
        let ErrorAction::RespondWithApiVersionsV0 {
            correlation_id,
            requested_version,
        } = error.action()
        else {
            panic!("expected an ApiVersions answer, got {:?}", error.action());
        };
        assert_eq!((correlation_id, requested_version), (77, 4));

        let response = versions::api_versions_response(requested_version);
        let version = versions::api_versions_response_version(requested_version);
        let frame = encode_response(
            correlation_id,
            ApiKey::ApiVersions,
            version,
            &ResponseKind::ApiVersions(response.clone()),
        )
        .expect("encodable")
        .to_contiguous();
        let mut buf = frame.slice(FRAME_SIZE_PREFIX_BYTES..);
        // Header v0 is just the correlation id; then the v0 body.
        assert_eq!(buf.get_i32(), 77);
        let decoded = ApiVersionsResponse::decode(&mut buf, 0).expect("v0 body");
        assert_eq!(decoded.error_code, 35);
        assert_eq!(decoded, response);
        assert!(!buf.has_remaining());
    }

    #[test]
    fn truncated_frames_are_refused() {
        for len in 0..REQUEST_HEADER_FIXED_PREFIX_BYTES {
            let error = decode_request(Bytes::from(vec![0; len])).expect_err("truncated");
            assert_eq!(error, RequestError::Truncated { frame_bytes: len });
            assert_eq!(error.correlation_id(), None);
        }
        // A valid Produce request cut anywhere inside its header or body.
        let frame = request_frame(
            ApiKey::Produce,
            9,
            3,
            &produce_request(Bytes::from_static(b"records")),
        );
        let body = body_of(&frame);
        for cut in REQUEST_HEADER_FIXED_PREFIX_BYTES..body.len() {
            let error = decode_request(body.slice(..cut)).expect_err("truncated");
            assert!(
                matches!(
                    error,
                    RequestError::MalformedHeader { .. } | RequestError::MalformedBody { .. }
                ),
                "cut at {cut}: {error:?}"
            );
            assert_eq!(error.correlation_id(), Some(3));
            assert_eq!(error.action(), ErrorAction::CloseConnection);
        }
    }

    #[test]
    fn garbage_bodies_are_refused_not_panicked_on() {
        let mut seed = 0x9E37_79B9_7F4A_7C15_u64;
        let mut next = move || {
            // xorshift64: deterministic so that any failure replays.
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for api in versions::SUPPORTED_APIS {
            for version in api.versions.min..=api.versions.max {
                for _ in 0..20 {
                    let len = (next() % 64) as usize;
                    let mut frame = BytesMut::new();
                    frame.put_i16(api.api_key as i16);
                    frame.put_i16(version);
                    frame.put_i32(1);
                    frame.extend((0..len).map(|_| next() as u8));
                    // Any outcome but a panic is fine; most are MalformedHeader/Body.
                    let _ = decode_request(frame.freeze());
                }
            }
        }
    }

    /// Regression: kafka-protocol 0.18 sized `Vec::with_capacity` from the wire count before
    /// decoding any element, so 16 bytes asking for i32::MAX Metadata topics (or u32::MAX-1
    /// compact ones) made a 100+ GiB allocation request and aborted the process.
    #[test]
    fn huge_array_counts_are_refused_without_allocating() {
        // Metadata v0 (non-flexible): header v1 with null client id, then topics count.
        let mut frame = BytesMut::new();
        frame.put_i16(ApiKey::Metadata as i16);
        frame.put_i16(0);
        frame.put_i32(13);
        frame.put_i16(-1);
        frame.put_i32(i32::MAX);
        let error = decode_request(frame.freeze()).expect_err("count exceeds frame");
        assert!(
            matches!(error, RequestError::MalformedBody { .. }),
            "{error:?}"
        );

        // Metadata v12 (flexible): header v2 adds a tagged-field count; the topics count is an
        // unsigned varint holding count + 1.
        let mut frame = BytesMut::new();
        frame.put_i16(ApiKey::Metadata as i16);
        frame.put_i16(12);
        frame.put_i32(14);
        frame.put_i16(-1);
        frame.put_u8(0);
        frame.put_slice(&[0xFF, 0xFF, 0xFF, 0xFF, 0x0F]);
        let error = decode_request(frame.freeze()).expect_err("count exceeds frame");
        assert!(
            matches!(error, RequestError::MalformedBody { .. }),
            "{error:?}"
        );

        // What the kafka_request fuzz target found against the unpatched crate in under a
        // second: OffsetFetch v1, group "", 0x6c690000 topics (a 145 GB allocation).
        let found_by_fuzzer = Bytes::from_static(
            b"\x00\x09\x00\x01\x00\x00\x00\x01\x00\x0btes\x12-client\x00\x00\x6c\x69\x00\x00",
        );
        let error = decode_request(found_by_fuzzer).expect_err("count exceeds frame");
        assert!(
            matches!(error, RequestError::MalformedBody { .. }),
            "{error:?}"
        );
    }

    #[test]
    fn malformed_utf8_client_id_is_a_header_error() {
        let mut frame = BytesMut::new();
        frame.put_i16(ApiKey::Metadata as i16);
        frame.put_i16(1);
        frame.put_i32(11);
        frame.put_i16(2);
        frame.put_slice(&[0xFF, 0xFE]);
        let error = decode_request(frame.freeze()).expect_err("bad utf8");
        assert!(
            matches!(error, RequestError::MalformedHeader { .. }),
            "{error:?}"
        );
        assert_eq!(error.correlation_id(), Some(11));
    }

    /// Writes a seed corpus for `fuzz/fuzz_targets/kafka_request.rs`: a default request for
    /// every served API and version, plus a Produce request with records, each in both of the
    /// target's modes (even first byte: frame body; odd: byte stream). Run with
    /// `cargo test -p quiver-net write_fuzz_seed_corpus -- --ignored`; the directory defaults to
    /// `fuzz/corpus/kafka_request`, or `QUIVER_FUZZ_SEED_DIR`.
    #[test]
    #[ignore = "writes files; run by hand before fuzzing"]
    fn write_fuzz_seed_corpus() {
        let dir = std::env::var_os("QUIVER_FUZZ_SEED_DIR")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| {
                std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("../fuzz/corpus/kafka_request")
            });
        std::fs::create_dir_all(&dir).expect("create seed directory");
        let mut frames: Vec<(String, BytesMut)> = Vec::new();
        fn add<T: Encodable + Default>(frames: &mut Vec<(String, BytesMut)>, api_key: ApiKey) {
            let range = versions::supported(api_key).expect("served");
            for version in range.min..=range.max {
                let frame = request_frame(api_key, version, version.into(), &T::default());
                frames.push((format!("{api_key:?}-v{version}"), frame));
            }
        }
        macro_rules! add_all {
            ($($key:ident: $request:ident, $min:literal..=$max:literal;)*) => {
                $(add::<kafka_protocol::messages::$request>(&mut frames, ApiKey::$key);)*
            };
        }
        served_apis!(add_all);
        for version in [3, 9, 10] {
            let request = produce_request(Bytes::from_static(b"record batch bytes"));
            frames.push((
                format!("Produce-records-v{version}"),
                request_frame(ApiKey::Produce, version, 1, &request),
            ));
        }
        for (name, frame) in &frames {
            let mut body_mode = vec![0u8];
            body_mode.extend_from_slice(&frame[FRAME_SIZE_PREFIX_BYTES..]);
            std::fs::write(dir.join(format!("{name}-body")), body_mode).expect("write seed");
            let mut stream_mode = vec![2 * 16 + 1];
            stream_mode.extend_from_slice(frame);
            std::fs::write(dir.join(format!("{name}-stream")), stream_mode).expect("write seed");
        }
    }

    // --- encode_response ---

    #[test]
    fn produce_response_round_trips_for_every_served_version() {
        for version in 3..=10 {
            let response =
                ProduceResponse::default().with_responses(vec![TopicProduceResponse::default()
                    .with_name(TopicName(StrBytes::from_static_str("events")))
                    .with_partition_responses(vec![PartitionProduceResponse::default()
                        .with_index(0)
                        .with_base_offset(1234)
                        .with_log_start_offset(if version >= 5 { 10 } else { -1 })])]);
            let frame = encode_response(
                21,
                ApiKey::Produce,
                version,
                &ResponseKind::Produce(response.clone()),
            )
            .expect("encodable")
            .to_contiguous();
            let mut buf = frame.clone();
            assert_eq!(
                buf.get_i32() as usize,
                frame.len() - FRAME_SIZE_PREFIX_BYTES
            );
            let header =
                ResponseHeader::decode(&mut buf, ApiKey::Produce.response_header_version(version))
                    .expect("header");
            assert_eq!(header.correlation_id, 21);
            let decoded = ProduceResponse::decode(&mut buf, version).expect("body");
            assert_eq!(decoded, response, "v{version}");
            assert!(!buf.has_remaining());
        }
    }

    #[test]
    fn fetch_response_records_are_referenced_by_encode_response() {
        use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
        use kafka_protocol::messages::FetchResponse;
        let records = Bytes::from(vec![0xAB; 4096]);
        let response =
            FetchResponse::default().with_responses(vec![FetchableTopicResponse::default()
                .with_topic(TopicName(StrBytes::from_static_str("events")))
                .with_partitions(vec![
                    PartitionData::default().with_records(Some(records.clone()))
                ])]);
        let frame = encode_response(5, ApiKey::Fetch, 11, &ResponseKind::Fetch(response.clone()))
            .expect("encodable");
        assert_eq!(frame.bytes_referenced, records.len());
        assert!(frame
            .chunks
            .iter()
            .any(|chunk| chunk.as_ptr() == records.as_ptr()));
        let mut buf = frame.to_contiguous();
        buf.advance(FRAME_SIZE_PREFIX_BYTES);
        let header = ResponseHeader::decode(&mut buf, 0).expect("header v0 below Fetch v12");
        assert_eq!(header.correlation_id, 5);
        assert_eq!(FetchResponse::decode(&mut buf, 11).expect("body"), response);
    }

    #[test]
    fn flexible_responses_use_header_v1_and_api_versions_always_v0() {
        let response = versions::api_versions_response(3);
        let frame = encode_response(
            1,
            ApiKey::ApiVersions,
            3,
            &ResponseKind::ApiVersions(response),
        )
        .expect("encodable")
        .to_contiguous();
        // Header v0: the correlation id is followed directly by the body's error code, with no
        // tagged-field byte in between.
        assert_eq!(&frame[4..10], &[0, 0, 0, 1, 0, 0]);
        assert_eq!(ApiKey::Metadata.response_header_version(12), 1);
    }

    #[test]
    fn several_responses_share_one_writer_and_errors_leave_it_intact() {
        let mut writer = ScatterWriter::new();
        let body = ResponseKind::ApiVersions(versions::api_versions_response(0));
        encode_response_into(&mut writer, 1, ApiKey::ApiVersions, 0, &body).expect("first");
        let after_first = writer.offset();
        assert_eq!(
            encode_response_into(&mut writer, 2, ApiKey::Metadata, 0, &body),
            Err(EncodeError::ApiKeyMismatch {
                api_key: ApiKey::Metadata,
                body: ApiKey::ApiVersions
            })
        );
        // Fetch v4 cannot carry a session id: the codec refuses after the header is written.
        let with_session = ResponseKind::Fetch(
            kafka_protocol::messages::FetchResponse::default().with_session_id(9),
        );
        assert!(matches!(
            encode_response_into(&mut writer, 3, ApiKey::Fetch, 4, &with_session),
            Err(EncodeError::Codec { .. })
        ));
        assert_eq!(writer.offset(), after_first);
        encode_response_into(&mut writer, 4, ApiKey::ApiVersions, 0, &body).expect("second");
        let frame = writer.finish().to_contiguous();
        let mut buf = frame.clone();
        let mut correlation_ids = Vec::new();
        while buf.has_remaining() {
            let size = buf.get_i32() as usize;
            let mut one = buf.split_to(size);
            correlation_ids.push(one.get_i32());
        }
        assert_eq!(correlation_ids, vec![1, 4]);
    }

    #[test]
    fn unserved_response_bodies_are_refused() {
        use kafka_protocol::messages::SaslHandshakeResponse;
        let body = ResponseKind::SaslHandshake(SaslHandshakeResponse::default());
        assert_eq!(
            encode_response(1, ApiKey::SaslHandshake, 1, &body),
            Err(EncodeError::UnservedResponse)
        );
    }
}
