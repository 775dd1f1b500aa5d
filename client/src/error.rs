//! The client's one error type.

use std::time::Duration;

use quiver_protocol::{ErrorCode, FrameError, FrameType};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The broker answered with an error code (the same codes as Kafka).
    #[error("broker error {code}: {message}")]
    Broker { code: ErrorCode, message: String },
    #[error("connecting to {addr}: {reason}")]
    Connect { addr: String, reason: String },
    #[error("connection lost: {0}")]
    Connection(#[from] quinn::ConnectionError),
    #[error("tls configuration: {0}")]
    Tls(String),
    /// The broker sent bytes that are not valid `quiver/1`.
    #[error("protocol error: {0}")]
    Protocol(#[from] FrameError),
    #[error("unexpected {got:?} in answer to a {to:?} request")]
    UnexpectedResponse { to: FrameType, got: FrameType },
    /// The stream carrying the request closed before the answer arrived.
    #[error("the stream closed before the broker answered")]
    StreamClosed,
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// Records could not be encoded or decoded.
    #[error("records: {0}")]
    Records(String),
    /// The producer or consumer was closed.
    #[error("closed")]
    Closed,
}

impl Error {
    /// The broker's error code, if this is a broker error.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Error::Broker { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// Whether the same request may succeed if sent again (on a new stream or connection).
    pub fn is_retriable(&self) -> bool {
        match self {
            Error::Broker { code, .. } => code.is_retriable(),
            Error::Connection(_) | Error::StreamClosed | Error::Timeout(_) => true,
            _ => false,
        }
    }

    pub(crate) fn broker(code: ErrorCode, message: impl Into<String>) -> Error {
        Error::Broker {
            code,
            message: message.into(),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
