//! The native QUIC front end (`quiver/1`): quinn + rustls, one endpoint per shard, driven
//! by the shard's glommio executor through [`runtime::GlommioRuntime`].
//!
//! The frame codec is pure and lives in the `quiver-protocol` crate, re-exported here as
//! [`codec`], so that the client library can use it without pulling in glommio and the
//! engine. Invariant: nothing in this module touches a partition log; it only calls the
//! protocol-neutral [`crate::service`].

pub mod handlers;
pub mod runtime;
pub mod server;
pub mod steering;
pub mod tls;

pub use quiver_protocol as codec;
pub use server::{bind, QuicListener, QuicSettings, QuicShard};
pub use tls::TlsSettings;

/// Errors starting the QUIC listener.
#[derive(Debug, thiserror::Error)]
pub enum QuicError {
    #[error("tls: {0}")]
    Tls(String),
    #[error("{op} {target}: {source}")]
    Io {
        op: &'static str,
        target: String,
        #[source]
        source: std::io::Error,
    },
}

impl QuicError {
    pub(crate) fn io(op: &'static str, target: impl DisplayPath, source: std::io::Error) -> Self {
        QuicError::Io {
            op,
            target: target.render(),
            source,
        }
    }
}

/// Paths and addresses both name what an I/O error was about.
pub(crate) trait DisplayPath {
    fn render(&self) -> String;
}

impl DisplayPath for &std::path::Path {
    fn render(&self) -> String {
        self.display().to_string()
    }
}

impl DisplayPath for &std::path::PathBuf {
    fn render(&self) -> String {
        self.display().to_string()
    }
}

impl DisplayPath for std::net::SocketAddr {
    fn render(&self) -> String {
        self.to_string()
    }
}

impl DisplayPath for &str {
    fn render(&self) -> String {
        self.to_string()
    }
}
