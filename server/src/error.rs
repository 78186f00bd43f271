//! The server library's error type. The HTTP layer maps each variant to a status code
//! and an `{error, message}` body; internal details are logged, not returned.

use orchard_certs::CertError;
use orchard_protocol::ProtocolError;

use crate::apple::{TokenFileError, VppError};
use crate::device::identity::{AuthorizeError, DeviceAuthError};
use crate::store::StoreError;

/// Why a server operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A device sent a body that is not a valid message.
    #[error("invalid message: {0}")]
    Protocol(#[from] ProtocolError),
    /// A device request was refused.
    #[error(transparent)]
    DeviceAuth(#[from] DeviceAuthError),
    /// Issuing a certificate failed (bad CSR).
    #[error(transparent)]
    Cert(#[from] CertError),
    /// A token file was refused.
    #[error(transparent)]
    TokenFile(#[from] TokenFileError),
    /// Apple's service failed.
    #[error(transparent)]
    Apple(#[from] VppError),
    /// Something named in the request does not exist.
    #[error("{kind} {id:?} does not exist")]
    NotFound {
        /// What kind of thing.
        kind: &'static str,
        /// Its id.
        id: String,
    },
    /// A field has a value the operation cannot accept.
    #[error("{field}: {reason}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// The request conflicts with what exists.
    #[error("{0}")]
    Conflict(String),
    /// A configured limit is reached.
    #[error("{0}")]
    LimitReached(String),
    /// The caller did not prove who it is.
    #[error("{0}")]
    Unauthenticated(String),
    /// The message type is not handled.
    #[error("unsupported check-in message type {0:?}")]
    UnsupportedMessage(String),
}

impl ServerError {
    /// `kind` `id` does not exist.
    pub fn not_found(kind: &'static str, id: &str) -> Self {
        Self::NotFound {
            kind,
            id: id.to_owned(),
        }
    }
}

impl From<AuthorizeError> for ServerError {
    fn from(e: AuthorizeError) -> Self {
        match e {
            AuthorizeError::Refused(e) => Self::DeviceAuth(e),
            AuthorizeError::Store(e) => Self::Store(e),
        }
    }
}

/// Result of server operations.
pub type ServerResult<T> = Result<T, ServerError>;
