//! Probes for service managers and load balancers: `/healthz` says the process
//! answers; `/readyz` says it can serve (its database answers), with Apple's state as a
//! detail that never fails it (the server keeps serving devices while Apple is down).
//! Neither needs a token nor reveals names or secrets. `/metrics` is Prometheus's
//! scrape, for any admin token (Prometheus sends one as `authorization: credentials`).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use crate::admin::Actor;
use crate::state::ServerState;
use crate::store::Page;

/// Routes of the probes.
pub(super) fn router() -> Router<ServerState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

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

async fn healthz() -> impl IntoResponse {
    Json(json!({ "status": "ok" }))
}

async fn readyz(State(state): State<ServerState>) -> impl IntoResponse {
    // Migrations run before the server accepts anything, so a store that answers has
    // them applied.
    let tokens = match state.store.tokens(&Page::all()).await {
        Ok(tokens) => tokens,
        Err(e) => {
            tracing::warn!(error = %e, "readiness: the database does not answer");
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({
                    "status": "unavailable",
                    "database": "unreachable",
                    "message": "the database does not answer; see the server's log",
                })),
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
        Json(json!({
            "status": "ready",
            "database": "ok",
            "apple": {
                "status": apple,
                "tokens": tokens.len(),
                "tokens_failing": failing,
                "last_sync_at": last_sync_at,
            },
        })),
    )
}
