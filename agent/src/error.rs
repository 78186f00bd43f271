//! What can go wrong talking to the server or the App Store, shared by the transport,
//! the push channel and the store lookup.

use std::path::PathBuf;

/// What went wrong talking to the server.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// Network, TLS or HTTP failure.
    #[error("request failed: {0}")]
    Http(#[from] reqwest::Error),
    /// The server refused a request.
    #[error("{what} refused with HTTP {status}: {body}")]
    Refused {
        /// Which request.
        what: &'static str,
        /// HTTP status.
        status: u16,
        /// The server's error body.
        body: String,
    },
    /// A message could not be encoded or decoded.
    #[error("protocol error: {0}")]
    Protocol(#[from] orchard_protocol::ProtocolError),
    /// Key or CSR generation failed.
    #[error("identity error: {0}")]
    Identity(#[from] orchard_certs::CertError),
    /// A PEM or TLS setting is unusable.
    #[error("TLS setup failed: {0}")]
    Tls(String),
    /// The state file cannot be read or written.
    #[error("state file {path}: {reason}")]
    State {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}
