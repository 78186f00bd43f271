//! Device endpoints: enrollment, the check-in endpoint and the command channel. The
//! client certificate from the TLS handshake becomes a `DeviceIdentity`; the cores
//! never see HTTP.

use axum::body::Bytes;
use std::time::Instant;

use axum::Extension;
use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use rustls_pki_types::CertificateDer;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::connection::PeerAddr;
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
        state: &ServerState,
    ) -> Result<Self, Self::Rejection> {
        let addr = PeerAddr::of(&parts.extensions);
        if let Some(wait) = state.rate.failed_auth.exceeded(addr, Instant::now()) {
            return Err(ApiError::rate_limited("failed authentications", wait));
        }
        let cert = parts
            .extensions
            .get::<PeerCertificate>()
            .and_then(|p| p.0.as_ref());
        let identity = cert
            .ok_or(DeviceAuthError::NoCertificate)
            .and_then(|c| Self::from_certificate(c));
        identity.map_err(|e| refused(state, addr, ServerError::DeviceAuth(e)))
    }
}

/// The identity certificate an enrollment request presented, if any (a renewal).
struct PresentedIdentity(Option<DeviceIdentity>);

impl FromRequestParts<ServerState> for PresentedIdentity {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &ServerState,
    ) -> Result<Self, Self::Rejection> {
        Ok(Self(
            parts
                .extensions
                .get::<PeerCertificate>()
                .and_then(|p| p.0.as_ref())
                .and_then(|cert| DeviceIdentity::from_certificate(cert).ok()),
        ))
    }
}

/// Maps a device request's failure; a refused authentication counts against the
/// address's failed-authentication limit.
fn refused(state: &ServerState, addr: std::net::IpAddr, e: ServerError) -> ApiError {
    if matches!(e, ServerError::DeviceAuth(_)) {
        let _ = state.rate.failed_auth.take(addr, Instant::now());
        tracing::info!(%addr, reason = %e, "device request refused");
    }
    e.into()
}

/// Routes of the device endpoints.
pub(super) fn router(enrollment_body: usize) -> OpenApiRouter<ServerState> {
    let (schemas, paths, enroll) = routes!(enroll_device);
    let enroll = enroll.layer(axum::extract::DefaultBodyLimit::max(enrollment_body));
    OpenApiRouter::new()
        .routes((schemas, paths, enroll))
        .routes(routes!(checkin_device))
        .routes(routes!(command_channel))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_DEVICE_BODY))
}

/// An XML property list of Apple's MDM protocol.
struct Plist;

impl utoipa::PartialSchema for Plist {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .description(Some("An XML property list"))
            .into()
    }
}

impl utoipa::ToSchema for Plist {}

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

/// Enrolls a device: an enrollment token or the shared secret plus a CSR whose subject
/// is the UDID give an identity certificate and the MDM payload. No client
/// certificate is needed, except to renew an identity.
#[utoipa::path(
    post,
    path = ENROLL_PATH,
    tag = "device-protocol",
    request_body(content = Plist, content_type = "application/xml", description = "`EnrollmentSecret`, `CSR` (PEM), `UDID`, `SerialNumber`, and optionally `ProductName`, `OSVersion`, `Ownership`"),
    responses(
        (status = 200, description = "The identity certificate and the MDM payload", content_type = "application/xml", body = Plist),
        (status = 400, description = "Not a property list of an enrollment, a bad identifier or CSR", body = super::error::ErrorBody),
        (status = 401, description = "The enrollment token or secret is wrong, spent or expired", body = super::error::ErrorBody),
        (status = 403, description = "The UDID is enrolled already and the request does not present its identity", body = super::error::ErrorBody),
        (status = 429, description = "Too many enrollments or failed authentications from this address", body = super::error::ErrorBody),
    ),
)]
async fn enroll_device(
    State(state): State<ServerState>,
    Extension(PeerAddr(peer)): Extension<PeerAddr>,
    PresentedIdentity(presented): PresentedIdentity,
    DeviceBody(body): DeviceBody,
) -> Result<Response, ApiError> {
    let now = Instant::now();
    if let Some(wait) = state.rate.failed_auth.exceeded(peer.ip(), now) {
        return Err(ApiError::rate_limited("failed authentications", wait));
    }
    state
        .rate
        .enrollment
        .take(peer.ip(), now)
        .map_err(|wait| ApiError::rate_limited("enrollments", wait))?;
    let _turn = state.device_turns.acquire().await;
    let mut response = match enroll::enroll(&state, &body, presented.as_ref()).await {
        Ok(answer) => plist(answer),
        Err(e) => refused(&state, peer.ip(), e).into_response(),
    };
    // A device enrolls once and then talks with its new identity on a connection of
    // its own: this one is closed at once instead of idling until a timeout.
    response.headers_mut().insert(
        axum::http::header::CONNECTION,
        axum::http::HeaderValue::from_static("close"),
    );
    Ok(response)
}

/// The check-in endpoint (`CheckInURL`): Authenticate, TokenUpdate, CheckOut and
/// Orchard's prompt reports, with the device's identity certificate.
#[utoipa::path(
    put,
    path = CHECKIN_PATH,
    tag = "device-protocol",
    request_body(content = Plist, content_type = "application/xml", description = "A check-in message with its `MessageType`"),
    responses(
        (status = 200, description = "Taken"),
        (status = 400, description = "Not a check-in message Orchard reads, or over a decoding limit", body = super::error::ErrorBody),
        (status = 401, description = "No client certificate", body = super::error::ErrorBody),
        (status = 403, description = "The certificate's identity is not an enrolled device, or the message names another", body = super::error::ErrorBody),
        (status = 429, description = "Too many failed authentications from this address", body = super::error::ErrorBody),
    ),
)]
async fn checkin_device(
    State(state): State<ServerState>,
    Extension(PeerAddr(peer)): Extension<PeerAddr>,
    identity: DeviceIdentity,
    DeviceBody(body): DeviceBody,
) -> Result<Response, ApiError> {
    let _turn = state.device_turns.acquire().await;
    checkin::handle(&state, &identity, &body)
        .await
        .map_err(|e| refused(&state, peer.ip(), e))?;
    Ok(StatusCode::OK.into_response())
}

/// The command channel (`ServerURL`): a status report (Idle or a command's result)
/// in, the next command out.
#[utoipa::path(
    put,
    path = SERVER_PATH,
    tag = "device-protocol",
    request_body(content = Plist, content_type = "application/xml", description = "A status report: `Status` with `CommandUUID` and the command's answer"),
    responses(
        (status = 200, description = "The next command, or an empty body when none is queued", content_type = "application/xml", body = Plist),
        (status = 400, description = "Not a status report Orchard reads, or over a decoding limit", body = super::error::ErrorBody),
        (status = 401, description = "No client certificate", body = super::error::ErrorBody),
        (status = 403, description = "The certificate's identity is not an enrolled device, or the report names another", body = super::error::ErrorBody),
        (status = 429, description = "Too many failed authentications from this address", body = super::error::ErrorBody),
    ),
)]
async fn command_channel(
    State(state): State<ServerState>,
    Extension(PeerAddr(peer)): Extension<PeerAddr>,
    identity: DeviceIdentity,
    DeviceBody(body): DeviceBody,
) -> Result<Response, ApiError> {
    let _turn = state.device_turns.acquire().await;
    let next = command_queue::handle(&state, &identity, &body)
        .await
        .map_err(|e| refused(&state, peer.ip(), e))?;
    Ok(match next {
        Some(next) => plist(next),
        None => StatusCode::OK.into_response(),
    })
}
