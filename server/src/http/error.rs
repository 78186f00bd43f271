//! One API error type with one `IntoResponse`: `{"error": code, "message": ...}` with the
//! right status. Internal details are logged, never returned.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use orchard_protocol::ProtocolError;

use crate::apple::VppError;
use crate::device::identity::DeviceAuthError;
use crate::error::ServerError;

/// An error answer of the HTTP API.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable code.
    pub code: &'static str,
    /// What was wrong and what to do.
    pub message: String,
    /// For 429: when to try again.
    pub retry_after: Option<std::time::Duration>,
}

impl ApiError {
    /// Builds an error.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// 429: the source address is over a rate limit; try again after `wait`.
    pub fn rate_limited(what: &str, wait: std::time::Duration) -> Self {
        let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        Self {
            retry_after: Some(std::time::Duration::from_secs(seconds.max(1))),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!(
                    "too many {what} from this address; try again in {} s",
                    seconds.max(1)
                ),
            )
        }
    }
}

/// The body of every error answer.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(super) struct ErrorBody {
    /// Stable machine-readable code, e.g. `not_found`, `invalid_cursor`, `forbidden`.
    pub(super) error: &'static str,
    /// What was wrong and what to do, for people.
    pub(super) message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            Json(ErrorBody {
                error: self.code,
                message: self.message,
            }),
        )
            .into_response();
        if let Some(wait) = self.retry_after
            && let Ok(value) = axum::http::HeaderValue::from_str(&wait.as_secs().to_string())
        {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, value);
        }
        response
    }
}

impl From<ServerError> for ApiError {
    fn from(e: ServerError) -> Self {
        use StatusCode as S;
        let msg = e.to_string();
        match e {
            ServerError::Store(inner) => {
                tracing::error!(error = %inner, "storage failure");
                Self::new(
                    S::INTERNAL_SERVER_ERROR,
                    "internal",
                    "the server could not complete the request; see its log",
                )
            }
            ServerError::Protocol(ProtocolError::LimitExceeded { .. }) => {
                Self::new(S::BAD_REQUEST, "limit_exceeded", msg)
            }
            ServerError::Protocol(_) => Self::new(S::BAD_REQUEST, "invalid_message", msg),
            ServerError::UnsupportedMessage(_) => {
                Self::new(S::BAD_REQUEST, "unsupported_message", msg)
            }
            ServerError::DeviceAuth(a) => match a {
                DeviceAuthError::NoCertificate | DeviceAuthError::WrongEnrollmentSecret => {
                    Self::new(S::UNAUTHORIZED, "unauthenticated", msg)
                }
                _ => Self::new(S::FORBIDDEN, "forbidden", msg),
            },
            ServerError::Cert(_) => Self::new(S::BAD_REQUEST, "invalid_csr", msg),
            ServerError::TokenFile(_) => {
                Self::new(S::UNPROCESSABLE_ENTITY, "invalid_token_file", msg)
            }
            ServerError::Apple(inner) => {
                tracing::warn!(error = %inner, "Apple call failed");
                let code = match inner {
                    VppError::Apple { .. } => "apple_error",
                    _ => "apple_unavailable",
                };
                Self::new(
                    S::BAD_GATEWAY,
                    code,
                    format!("Apple's service failed: {inner}"),
                )
            }
            ServerError::NotFound { .. } => Self::new(S::NOT_FOUND, "not_found", msg),
            ServerError::Invalid { .. } => Self::new(S::UNPROCESSABLE_ENTITY, "invalid", msg),
            ServerError::Conflict(_) => Self::new(S::CONFLICT, "conflict", msg),
            ServerError::Unauthenticated(_) => Self::new(S::UNAUTHORIZED, "unauthenticated", msg),
            ServerError::LimitReached(_) => Self::new(S::CONFLICT, "limit_reached", msg),
        }
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        ServerError::from(e).into()
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        // 400 for bad syntax, 415 for a wrong Content-Type, 422 for well-formed JSON of the wrong shape.
        Self::new(r.status(), "invalid_json", r.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_query", r.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_path", r.body_text())
    }
}
