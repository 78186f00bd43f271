//! The HTTPS front end: one TLS listener for devices and admins. Client certificates are
//! optional at the TLS layer (enrollment and the admin API need none) but, when sent,
//! must chain to our CA; the device endpoints then require one.
//!
//! The HTTP layer only translates (parse, authorize, call a service, map the result);
//! it may import every domain folder, and nothing but the server's start imports it.

mod access;
mod admin;
mod apple;
mod auth;
mod connection;
mod console;
mod device;
pub mod error;
mod events;
mod health;
mod list;
mod openapi;
mod reports;
mod webhooks;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use connection::{Activity, Admission, NotedBody, Slots};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;
use tower_http::LatencyUnit;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::RequestBodyTimeoutLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};

pub use crate::state::OpenConnections;
pub use auth::token_hash;
pub use connection::{ConnectionLimits, FILES_KEPT, PeerAddr, raise_open_file_limit};
pub use device::PeerCertificate;

use crate::state::ServerState;

/// The whole HTTP API: device endpoints, admin API and probes, with the access log:
/// one line per request with its id (the client's `X-Request-Id` when it is a short
/// plain token, else a new one; sent back in the answer), method, path, peer, status
/// and latency.
pub fn router(state: ServerState) -> Router {
    let (routes, doc) = described(state.options.enrollment_body_limit);
    let doc = openapi::Document(serde_json::to_vec(&doc).unwrap_or_default().into());
    routes
        .layer(axum::Extension(doc))
        .merge(console::router())
        .fallback(|| async {
            error::ApiError::new(
                axum::http::StatusCode::NOT_FOUND,
                "not_found",
                "no such endpoint",
            )
        })
        .with_state(state)
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(access_span)
                .on_request(())
                .on_response(
                    DefaultOnResponse::new()
                        .level(tracing::Level::INFO)
                        .latency_unit(LatencyUnit::Millis),
                )
                .on_failure(()),
        )
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .layer(axum::middleware::from_fn(plain_request_id))
}

/// Every route with its description, and the API document they make.
fn described(enrollment_body: usize) -> (Router<ServerState>, utoipa::openapi::OpenApi) {
    use utoipa::OpenApi as _;
    let (routes, mut doc) =
        utoipa_axum::router::OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
            .merge(device::router(enrollment_body))
            .merge(admin::router())
            .merge(access::router())
            .merge(reports::router())
            .merge(apple::router())
            .merge(health::router())
            .merge(events::router())
            .merge(webhooks::router())
            .routes(utoipa_axum::routes!(openapi::document))
            .split_for_parts();
    openapi::complete(&mut doc);
    (routes, doc)
}

/// The API document (OpenAPI 3.1) the server serves at `/v1/openapi.json`.
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    described(0).1
}

/// Longest request id taken from a client.
const MAX_REQUEST_ID: usize = 64;

/// Drops a client's `X-Request-Id` that is long or not a plain token, so a new one is
/// made: ids land in logs.
async fn plain_request_id(
    mut req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let plain = req.headers().get("x-request-id").is_none_or(|v| {
        v.len() <= MAX_REQUEST_ID
            && v.as_bytes()
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(b))
    });
    if !plain {
        req.headers_mut().remove("x-request-id");
    }
    next.run(req).await
}

/// The span of one request in the access log.
fn access_span<B>(req: &hyper::Request<B>) -> tracing::Span {
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let peer = req.extensions().get::<PeerAddr>().map(|p| p.0.ip());
    tracing::info_span!(
        "request",
        id,
        method = %req.method(),
        path = req.uri().path(),
        peer = peer.map(tracing::field::display),
    )
}

/// Accepts connections until `shutdown` fires. Each connection gets its own task before
/// the handshake; the handshake, each request's headers and each body run under the
/// timeouts of `limits`, and connections over its cap are closed at once. `open` counts
/// the connections open.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    router: Router,
    limits: ConnectionLimits,
    open: OpenConnections,
    shutdown: CancellationToken,
) {
    let acceptor = TlsAcceptor::from(tls);
    let router = router.layer(RequestBodyTimeoutLayer::new(limits.body_timeout));
    let slots = Slots::new(&limits);
    let connections = TaskTracker::new();
    loop {
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let (permit, admin_only) = match slots.admit() {
            Admission::Open(p) => (p, false),
            Admission::AdminOnly(p) => (p, true),
            Admission::Refused => {
                tracing::debug!(%peer, "connection refused: every slot is taken");
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let router = router.clone();
        let shutdown = shutdown.clone();
        let counted = open.opened();
        connections.spawn(async move {
            let _permit = permit;
            let _counted = counted;
            let tls =
                match tokio::time::timeout(limits.handshake_timeout, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake refused");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "TLS handshake timed out");
                        return;
                    }
                };
            let cert = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| c.clone().into_owned());
            let peer_cert = PeerCertificate(cert);
            let activity = Activity::new();
            let requests = activity.clone();
            let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
                req.extensions_mut().insert(peer_cert.clone());
                req.extensions_mut().insert(PeerAddr(peer));
                let router = router.clone();
                let under_way = requests.request();
                async move {
                    let _under_way = under_way;
                    if admin_only && !connection::admin_request(req.uri().path()) {
                        return Ok::<_, Infallible>(server_busy());
                    }
                    let (parts, body) = req.into_parts();
                    let (body, read) = NotedBody::new(body);
                    let mut response = router
                        .oneshot(hyper::Request::from_parts(parts, body))
                        .await
                        .unwrap_or_else(|never| match never {});
                    connection::close_unless_read(&read, &mut response);
                    Ok::<_, Infallible>(response)
                }
            });
            let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .max_buf_size(MAX_HEADER_BYTES);
            let conn = builder.serve_connection(TokioIo::new(tls), service);
            tokio::pin!(conn);
            loop {
                // While a request is under way, look again after one idle period.
                let idle_at = activity
                    .idle_deadline(limits.keep_alive_idle)
                    .unwrap_or_else(|| tokio::time::Instant::now() + limits.keep_alive_idle);
                tokio::select! {
                    result = conn.as_mut() => {
                        if let Err(e) = result {
                            tracing::debug!(%peer, error = %e, "connection ended with an error");
                        }
                        break;
                    }
                    _ = tokio::time::sleep_until(idle_at) => {
                        let idle = activity
                            .idle_deadline(limits.keep_alive_idle)
                            .is_some_and(|at| at <= tokio::time::Instant::now());
                        if idle {
                            // Nothing under way: closes at once.
                            conn.as_mut().graceful_shutdown();
                            let _ = tokio::time::timeout(limits.shutdown_grace, conn.as_mut()).await;
                            break;
                        }
                    }
                    _ = shutdown.cancelled() => {
                        // Requests under way finish; kept-alive connections close after them.
                        conn.as_mut().graceful_shutdown();
                        let _ = tokio::time::timeout(limits.shutdown_grace, conn.as_mut()).await;
                        break;
                    }
                }
            }
        });
    }
    // No new connections; the open ones finish their requests within the grace period.
    drop(listener);
    connections.close();
    if tokio::time::timeout(limits.shutdown_grace, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            open = connections.len(),
            "connections still open after the shutdown grace period; closing them"
        );
    }
}

/// Most bytes of request line and headers (hyper's read buffer).
const MAX_HEADER_BYTES: usize = 64 * 1024;

/// The answer on a reserve connection to anything but the admin API.
fn server_busy() -> axum::response::Response {
    use axum::response::IntoResponse;
    let mut response = error::ApiError::new(
        axum::http::StatusCode::SERVICE_UNAVAILABLE,
        "server_busy",
        "every connection slot for devices is taken; try again shortly",
    )
    .into_response();
    response.headers_mut().insert(
        axum::http::header::CONNECTION,
        axum::http::HeaderValue::from_static("close"),
    );
    response
}
