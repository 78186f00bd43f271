//! Device endpoints: enrollment, the check-in endpoint and the command channel. The
//! client certificate from the TLS handshake becomes a `DeviceIdentity`; the cores
//! never see HTTP.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{post, put};
use rustls_pki_types::CertificateDer;

use super::error::ApiError;
use crate::device::enroll::{CHECKIN_PATH, ENROLL_PATH, SERVER_PATH};
use crate::device::identity::{DeviceAuthError, DeviceIdentity};
use crate::device::{checkin, command_queue, enroll};
use crate::error::ServerError;
use crate::state::ServerState;

/// Largest body a device may send.
pub(super) const MAX_DEVICE_BODY: usize = 1024 * 1024;

/// The verified client certificate of the connection, if the client sent one.
#[derive(Debug, Clone)]
pub struct PeerCertificate(pub Option<CertificateDer<'static>>);

impl FromRequestParts<ServerState> for DeviceIdentity {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &ServerState,
    ) -> Result<Self, Self::Rejection> {
        let cert = parts
            .extensions
            .get::<PeerCertificate>()
            .and_then(|p| p.0.as_ref());
        let cert = cert.ok_or(ServerError::DeviceAuth(DeviceAuthError::NoCertificate))?;
        Ok(Self::from_certificate(cert).map_err(ServerError::from)?)
    }
}

/// Routes of the device endpoints.
pub(super) fn router(enrollment_body: usize) -> Router<ServerState> {
    Router::new()
        .route(
            ENROLL_PATH,
            post(enroll_device).layer(axum::extract::DefaultBodyLimit::max(enrollment_body)),
        )
        .route(CHECKIN_PATH, put(checkin_device))
        .route(SERVER_PATH, put(command_channel))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_DEVICE_BODY))
}

/// A device request's body, read up to [`MAX_DEVICE_BODY`]; a body over it or cut off
/// is answered in the API's error format.
struct DeviceBody(Bytes);

impl FromRequest<ServerState> for DeviceBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &ServerState) -> Result<Self, Self::Rejection> {
        Bytes::from_request(req, state)
            .await
            .map(Self)
            .map_err(|r| {
                let code = if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    "body_too_large"
                } else {
                    "unreadable_body"
                };
                ApiError::new(
                    r.status(),
                    code,
                    format!(
                        "{} (device bodies are limited to {MAX_DEVICE_BODY} bytes, enrollment to {} bytes)",
                        r.body_text(),
                        state.options.enrollment_body_limit
                    ),
                )
            })
    }
}

fn plist(body: Vec<u8>) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/xml")],
        body,
    )
        .into_response()
}

async fn enroll_device(
    State(state): State<ServerState>,
    DeviceBody(body): DeviceBody,
) -> Result<Response, ApiError> {
    Ok(plist(enroll::enroll(&state, &body).await?))
}

async fn checkin_device(
    State(state): State<ServerState>,
    identity: DeviceIdentity,
    DeviceBody(body): DeviceBody,
) -> Result<Response, ApiError> {
    checkin::handle(&state, &identity, &body).await?;
    Ok(StatusCode::OK.into_response())
}

async fn command_channel(
    State(state): State<ServerState>,
    identity: DeviceIdentity,
    DeviceBody(body): DeviceBody,
) -> Result<Response, ApiError> {
    Ok(
        match command_queue::handle(&state, &identity, &body).await? {
            Some(next) => plist(next),
            None => StatusCode::OK.into_response(),
        },
    )
}
