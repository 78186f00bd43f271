//! Probes for service managers and load balancers: `/healthz` says the process
//! answers; `/readyz` says it can serve (its database answers), with Apple's state as a
//! detail that never fails it (the server keeps serving devices while Apple is down).
//! Neither needs a token nor reveals names or secrets. `/metrics` is Prometheus's
//! scrape, for any admin token (Prometheus sends one as `authorization: credentials`).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::admin::Actor;
use crate::state::ServerState;
use crate::store::Page;

/// Routes of the probes.
pub(super) fn router() -> OpenApiRouter<ServerState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics))
}

/// Prometheus's scrape.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses((status = 200, description = "Prometheus text format 0.0.4: check-ins and command results by type and status, push and HTTPS connections, Apple calls, sync durations, reconciler lag, license counts per app, event deliveries", content_type = "text/plain", body = String)),
)]
async fn metrics(State(state): State<ServerState>, _actor: Actor) -> impl IntoResponse {
    let apps = match state.store.apps(&Page::all()).await {
        Ok(apps) => apps,
        Err(e) => {
            tracing::warn!(error = %e, "metrics: cannot read the license counts");
            Vec::new()
        }
    };
    let now = crate::telemetry::Snapshot {
        push_connections: state.push.connected(),
        http_connections: state.http_connections.count(),
        push_waiting: state.push.waiting(),
        apps,
    };
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        crate::telemetry::render(now),
    )
}

/// `/healthz`'s answer.
#[derive(Serialize, utoipa::ToSchema)]
struct Health {
    /// Always `ok`.
    status: &'static str,
}

/// The process answers.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    responses((status = 200, description = "The process answers", body = Health)),
)]
async fn healthz() -> impl IntoResponse {
    Json(Health { status: "ok" })
}

/// `/readyz`'s answer.
#[derive(Serialize, utoipa::ToSchema)]
struct Readiness {
    /// `ready`, or `unavailable` when the database does not answer.
    status: &'static str,
    /// `ok` or `unreachable`.
    database: &'static str,
    /// Apple's side, a detail that never makes the server unready.
    #[serde(skip_serializing_if = "Option::is_none")]
    apple: Option<AppleReadiness>,
    /// Why the server is not ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<&'static str>,
}

/// Apple's side as the readiness probe reports it.
#[derive(Serialize, utoipa::ToSchema)]
struct AppleReadiness {
    /// `ok`, `degraded` (a token's last sync failed or it is disabled) or `no tokens`.
    status: &'static str,
    /// VPP tokens.
    tokens: usize,
    /// Tokens whose last sync failed or that are disabled.
    tokens_failing: usize,
    /// The latest sync of any token.
    last_sync_at: Option<crate::clock::Timestamp>,
}

/// The server can serve: its database answers (migrations run before it accepts
/// anything).
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    responses(
        (status = 200, description = "Ready; Apple's state as a detail", body = Readiness),
        (status = 503, description = "The database does not answer", body = Readiness),
    ),
)]
async fn readyz(State(state): State<ServerState>) -> impl IntoResponse {
    // Migrations run before the server accepts anything, so a store that answers has
    // them applied.
    let tokens = match state.store.tokens(&Page::all()).await {
        Ok(tokens) => tokens,
        Err(e) => {
            tracing::warn!(error = %e, "readiness: the database does not answer");
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(Readiness {
                    status: "unavailable",
                    database: "unreachable",
                    apple: None,
                    message: Some("the database does not answer; see the server's log"),
                }),
            );
        }
    };
    let failing = tokens
        .iter()
        .filter(|t| t.last_sync_error.is_some() || t.disabled_reason.is_some())
        .count();
    let last_sync_at = tokens.iter().filter_map(|t| t.last_sync_at).max();
    let apple = if tokens.is_empty() {
        "no tokens"
    } else if failing == 0 {
        "ok"
    } else {
        "degraded"
    };
    (
        StatusCode::OK,
        Json(Readiness {
            status: "ready",
            database: "ok",
            apple: Some(AppleReadiness {
                status: apple,
                tokens: tokens.len(),
                tokens_failing: failing,
                last_sync_at,
            }),
            message: None,
        }),
    )
}
