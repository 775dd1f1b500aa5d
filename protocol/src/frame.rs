//! The fixed 24-byte frame header in front of every frame on every stream.
//!
//! The header carries its own checksum (xxh3-64 of its first 20 bytes, low 32 bits) so a
//! reader that is out of step with the writer, or fed garbage, rejects the header before
//! trusting its length. The body needs no checksum of its own: QUIC packets are
//! authenticated by TLS 1.3's AEAD, and record batches carry Kafka's CRC-32C.

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::codes::ErrorCode;

/// Bytes of [`FrameHeader`] on the wire.
pub const HEADER_BYTES: usize = 24;
/// First two bytes of every frame.
pub const MAGIC: [u8; 2] = *b"QV";
/// Framing version carried in every header; ALPN `quiver/1` implies 1.
pub const VERSION: u8 = 1;
/// Bytes of the header covered by `header_checksum`.
const CHECKED_BYTES: usize = 20;

/// The fixed frame header. All integers little-endian.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct FrameHeader {
    /// [`MAGIC`].
    pub magic: [u8; 2],
    /// [`VERSION`].
    pub version: u8,
    /// A [`FrameType`] value.
    pub frame_type: u8,
    /// Reserved for later versions; must be 0 in version 1.
    pub flags: U16,
    /// Must be 0.
    pub reserved: U16,
    /// Chosen by the client; the response (or every subscription push) carries it back.
    pub request_id: U64,
    /// Bytes of body that follow the header.
    pub body_len: U32,
    /// Low 32 bits of xxh3-64 over the 20 bytes before this field.
    pub header_checksum: U32,
}

const _: () = assert!(std::mem::size_of::<FrameHeader>() == HEADER_BYTES);

impl FrameHeader {
    pub fn new(frame_type: FrameType, request_id: u64, body_len: usize) -> FrameHeader {
        debug_assert!(body_len <= u32::MAX as usize);
        let mut h = FrameHeader {
            magic: MAGIC,
            version: VERSION,
            frame_type: frame_type as u8,
            flags: U16::new(0),
            reserved: U16::new(0),
            request_id: U64::new(request_id),
            body_len: U32::new(body_len as u32),
            header_checksum: U32::new(0),
        };
        h.header_checksum = U32::new(checksum(&h.as_bytes()[..CHECKED_BYTES]));
        h
    }

    /// Parses and checks a header from the first [`HEADER_BYTES`] of `buf`. Returns
    /// `Ok(None)` if `buf` is shorter than a header. `max_body` is the receiver's limit.
    pub fn decode(buf: &[u8], max_body: usize) -> Result<Option<FrameHeader>, FrameError> {
        let Ok((h, _)) = FrameHeader::read_from_prefix(buf) else {
            return Ok(None);
        };
        if h.magic != MAGIC {
            return Err(FrameError::BadMagic(h.magic));
        }
        let expected = checksum(&h.as_bytes()[..CHECKED_BYTES]);
        if h.header_checksum.get() != expected {
            return Err(FrameError::BadChecksum {
                expected,
                actual: h.header_checksum.get(),
            });
        }
        if h.version != VERSION {
            return Err(FrameError::UnsupportedVersion(h.version));
        }
        if h.flags.get() != 0 || h.reserved.get() != 0 {
            return Err(FrameError::UnsupportedFlags(h.flags.get()));
        }
        let len = h.body_len.get() as usize;
        if len > max_body {
            return Err(FrameError::TooLarge {
                len,
                limit: max_body,
                request_id: h.request_id.get(),
            });
        }
        if FrameType::from_u8(h.frame_type).is_none() {
            return Err(FrameError::UnknownType(h.frame_type));
        }
        Ok(Some(h))
    }

    pub fn frame_type(&self) -> FrameType {
        // decode() has checked the value; a header built with new() holds a valid one.
        FrameType::from_u8(self.frame_type).unwrap_or(FrameType::Error)
    }

    pub fn request_id(&self) -> u64 {
        self.request_id.get()
    }

    pub fn body_len(&self) -> usize {
        self.body_len.get() as usize
    }

    pub fn to_bytes(&self) -> [u8; HEADER_BYTES] {
        let mut out = [0u8; HEADER_BYTES];
        out.copy_from_slice(self.as_bytes());
        out
    }
}

fn checksum(bytes: &[u8]) -> u32 {
    xxhash_rust::xxh3::xxh3_64(bytes) as u32
}

/// What a frame is. Responses are the request type with the high bit set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FrameType {
    Produce = 0x01,
    Fetch = 0x02,
    Subscribe = 0x03,
    ListOffsets = 0x04,
    InitProducerId = 0x05,
    CreateTopic = 0x10,
    DeleteTopic = 0x11,
    ListTopics = 0x12,
    DescribeTopic = 0x13,
    /// Which core of the broker owns each partition (shard-aware clients).
    Route = 0x14,
    CommitOffsets = 0x20,
    FetchOffsets = 0x21,
    ListGroups = 0x22,
    DescribeGroup = 0x23,
    ProduceResponse = 0x81,
    FetchResponse = 0x82,
    /// One push of a subscription: sent any number of times for one SUBSCRIBE.
    Records = 0x83,
    ListOffsetsResponse = 0x84,
    InitProducerIdResponse = 0x85,
    CreateTopicResponse = 0x90,
    DeleteTopicResponse = 0x91,
    ListTopicsResponse = 0x92,
    DescribeTopicResponse = 0x93,
    RouteResponse = 0x94,
    CommitOffsetsResponse = 0xA0,
    FetchOffsetsResponse = 0xA1,
    ListGroupsResponse = 0xA2,
    DescribeGroupResponse = 0xA3,
    /// The request failed as a whole (or the stream is being closed for bad input).
    Error = 0xFF,
}

impl FrameType {
    pub fn from_u8(v: u8) -> Option<FrameType> {
        use FrameType::*;
        Some(match v {
            0x01 => Produce,
            0x02 => Fetch,
            0x03 => Subscribe,
            0x04 => ListOffsets,
            0x05 => InitProducerId,
            0x10 => CreateTopic,
            0x11 => DeleteTopic,
            0x12 => ListTopics,
            0x13 => DescribeTopic,
            0x14 => Route,
            0x20 => CommitOffsets,
            0x21 => FetchOffsets,
            0x22 => ListGroups,
            0x23 => DescribeGroup,
            0x81 => ProduceResponse,
            0x82 => FetchResponse,
            0x83 => Records,
            0x84 => ListOffsetsResponse,
            0x85 => InitProducerIdResponse,
            0x90 => CreateTopicResponse,
            0x91 => DeleteTopicResponse,
            0x92 => ListTopicsResponse,
            0x93 => DescribeTopicResponse,
            0x94 => RouteResponse,
            0xA0 => CommitOffsetsResponse,
            0xA1 => FetchOffsetsResponse,
            0xA2 => ListGroupsResponse,
            0xA3 => DescribeGroupResponse,
            0xFF => Error,
            _ => return None,
        })
    }

    pub fn is_request(self) -> bool {
        (self as u8) & 0x80 == 0
    }
}

/// Why bytes are not a valid frame. Every variant maps to a Kafka error code for the
/// ERROR frame the broker sends before resetting the stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("bad magic {0:?}: not a quiver/1 frame")]
    BadMagic([u8; 2]),
    #[error("header checksum mismatch (expected {expected:#x}, got {actual:#x})")]
    BadChecksum { expected: u32, actual: u32 },
    #[error("unsupported framing version {0}")]
    UnsupportedVersion(u8),
    #[error("unsupported header flags {0:#x}")]
    UnsupportedFlags(u16),
    #[error("unknown frame type {0:#x}")]
    UnknownType(u8),
    #[error("frame type {0:?} is not valid here")]
    UnexpectedType(FrameType),
    #[error("frame body of {len} bytes exceeds the limit of {limit}")]
    TooLarge {
        len: usize,
        limit: usize,
        request_id: u64,
    },
    #[error("frame body ends early: needed {needed} more bytes for {what}")]
    Short { what: &'static str, needed: usize },
    #[error("{0} trailing bytes after the message")]
    Trailing(usize),
    #[error("{what}: {count} exceeds the limit of {limit}")]
    TooMany {
        what: &'static str,
        count: usize,
        limit: usize,
    },
    #[error("invalid value for {what}: {value}")]
    InvalidValue { what: &'static str, value: i64 },
    #[error("string is not UTF-8")]
    NotUtf8,
}

impl FrameError {
    /// The Kafka error code reported in the ERROR frame.
    pub fn code(&self) -> ErrorCode {
        match self {
            FrameError::TooLarge { .. } => ErrorCode::MESSAGE_TOO_LARGE,
            FrameError::UnsupportedVersion(_) => ErrorCode::UNSUPPORTED_VERSION,
            FrameError::InvalidValue { what: "acks", .. } => ErrorCode::INVALID_REQUIRED_ACKS,
            _ => ErrorCode::INVALID_REQUEST,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_checks() {
        let h = FrameHeader::new(FrameType::Fetch, 42, 1000);
        let bytes = h.to_bytes();
        assert_eq!(&bytes[..2], b"QV");
        let back = FrameHeader::decode(&bytes, 1 << 20).unwrap().unwrap();
        assert_eq!(back, h);
        assert_eq!(back.frame_type(), FrameType::Fetch);
        assert_eq!(back.request_id(), 42);
        assert_eq!(back.body_len(), 1000);
        // Short input is "need more", not an error.
        assert_eq!(FrameHeader::decode(&bytes[..23], 1 << 20), Ok(None));
        // Any flipped bit is caught.
        for i in 0..HEADER_BYTES {
            let mut b = bytes;
            b[i] ^= 0x10;
            assert!(FrameHeader::decode(&b, 1 << 20).is_err(), "byte {i}");
        }
        assert!(matches!(
            FrameHeader::decode(&bytes, 999),
            Err(FrameError::TooLarge { request_id: 42, .. })
        ));
    }

    #[test]
    fn every_type_round_trips() {
        for v in 0..=255u8 {
            if let Some(t) = FrameType::from_u8(v) {
                assert_eq!(t as u8, v);
            }
        }
        assert!(FrameType::Produce.is_request());
        assert!(!FrameType::ProduceResponse.is_request());
    }
}
