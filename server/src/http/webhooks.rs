//! Webhooks through the API: register (the signing secret is shown once), list, show,
//! remove, and each webhook's delivery log.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::admin::{ApiJson, ApiPath, ApiQuery};
use super::error::ApiError;
use super::list::PageQuery;
use crate::admin::{self, Actor};
use crate::error::ServerError;
use crate::state::ServerState;
use crate::store::WebhookRecord;
use crate::webhook::{self, NewWebhook};

/// Routes of webhooks.
pub(super) fn router() -> Router<ServerState> {
    Router::new()
        .route("/v1/webhooks", post(create).get(list_webhooks))
        .route("/v1/webhooks/{id}", get(show).delete(remove))
        .route("/v1/webhooks/{id}/deliveries", get(deliveries))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WebhookBody {
    url: String,
    #[serde(default)]
    kind: Option<String>,
}

/// A webhook as the API shows it; `secret` only in the answer that registers it.
#[derive(Serialize)]
struct WebhookView {
    #[serde(flatten)]
    record: WebhookRecord,
    #[serde(skip_serializing_if = "Option::is_none")]
    secret: Option<String>,
}

async fn create(
    State(state): State<ServerState>,
    actor: Actor,
    ApiJson(body): ApiJson<WebhookBody>,
) -> Result<impl IntoResponse, ApiError> {
    let new = NewWebhook {
        url: body.url.clone(),
        kind: body.kind,
    };
    let result = webhook::register(&state, new, actor.token_id.as_deref()).await;
    let target = result.as_ref().map(|w| w.id.clone()).unwrap_or(body.url);
    admin::audit(&state, &actor, "webhook.create", &target, &result).await;
    let record = result?;
    Ok((
        StatusCode::CREATED,
        Json(WebhookView {
            secret: Some(record.secret.clone()),
            record,
        }),
    ))
}

async fn list_webhooks(
    State(state): State<ServerState>,
    _actor: Actor,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let paging = q.paging("webhooks")?;
    let items = state.store.webhooks(paging.page()).await?;
    Ok(Json(paging.list(
        items,
        |w| w.id.clone(),
        |record| WebhookView {
            record,
            secret: None,
        },
    )))
}

async fn found(state: &ServerState, id: &str) -> Result<WebhookRecord, ApiError> {
    Ok(state
        .store
        .webhook(id)
        .await?
        .ok_or_else(|| ServerError::not_found("webhook", id))?)
}

async fn show(
    State(state): State<ServerState>,
    _actor: Actor,
    ApiPath(id): ApiPath<String>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(WebhookView {
        record: found(&state, &id).await?,
        secret: None,
    }))
}

async fn remove(
    State(state): State<ServerState>,
    actor: Actor,
    ApiPath(id): ApiPath<String>,
) -> Result<impl IntoResponse, ApiError> {
    let result = match state.store.delete_webhook(&id).await {
        Ok(true) => Ok(()),
        Ok(false) => Err(ServerError::not_found("webhook", &id)),
        Err(e) => Err(e.into()),
    };
    admin::audit(&state, &actor, "webhook.delete", &id, &result).await;
    result?;
    Ok(Json(serde_json::json!({
        "deleted": id,
        "note": "no more events are delivered to it; its delivery log went with it"
    })))
}

async fn deliveries(
    State(state): State<ServerState>,
    _actor: Actor,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let paging = q.numbered_paging("webhook-deliveries")?;
    found(&state, &id).await?;
    let items = state.store.deliveries(&id, paging.page()).await?;
    Ok(Json(paging.list(items, |d| d.id.to_string(), |d| d)))
}
