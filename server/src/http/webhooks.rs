//! Webhooks through the API: register (the signing secret is shown once), list, show,
//! remove, and each webhook's delivery log.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::admin::{ApiJson, ApiPath, ApiQuery};
use super::error::{ApiError, ErrorBody};
use super::list::{List, PageQuery};
use crate::admin::{self, Actor};
use crate::error::ServerError;
use crate::state::ServerState;
use crate::store::{DeliveryRecord, WebhookRecord};
use crate::webhook::{self, NewWebhook};

/// Routes of webhooks.
pub(super) fn router() -> OpenApiRouter<ServerState> {
    OpenApiRouter::new()
        .routes(routes!(create, list_webhooks))
        .routes(routes!(show, remove))
        .routes(routes!(deliveries))
}

/// A webhook to register.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct WebhookBody {
    /// `https://…`, or `http://` to this host (loopback) only.
    url: String,
    /// Only events of this kind (`install.status`) or family (`install`); none: all.
    #[serde(default)]
    kind: Option<String>,
}

/// What removing a webhook did.
#[derive(Serialize, utoipa::ToSchema)]
struct WebhookRemoved {
    /// The webhook.
    deleted: String,
    /// What it means.
    note: &'static str,
}

/// A webhook as the API shows it; `secret` only in the answer that registers it.
#[derive(Serialize, utoipa::ToSchema)]
struct WebhookView {
    #[serde(flatten)]
    record: WebhookRecord,
    /// The HMAC-SHA256 key of the `X-Orchard-Signature` header, shown once.
    #[serde(skip_serializing_if = "Option::is_none")]
    secret: Option<String>,
}

/// `id` of a webhook.
const WEBHOOK_ID: &str = "The webhook's id";

/// Registers a webhook; its signing secret is in this answer only.
#[utoipa::path(
    post,
    operation_id = "create_webhook",
    path = "/v1/webhooks",
    tag = "webhooks",
    request_body = WebhookBody,
    responses((status = 201, description = "Registered, with its secret", body = WebhookView)),
)]
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

/// The webhooks.
#[utoipa::path(
    get,
    operation_id = "list_webhooks",
    path = "/v1/webhooks",
    tag = "webhooks",
    params(PageQuery),
    responses((status = 200, description = "A page of webhooks", body = List<WebhookView>)),
)]
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

/// One webhook.
#[utoipa::path(
    get,
    operation_id = "get_webhook",
    path = "/v1/webhooks/{id}",
    tag = "webhooks",
    params(("id" = String, Path, description = WEBHOOK_ID)),
    responses(
        (status = 200, description = "The webhook", body = WebhookView),
        (status = 404, description = "No such webhook", body = ErrorBody),
    ),
)]
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

/// Removes a webhook and its delivery log.
#[utoipa::path(
    delete,
    operation_id = "delete_webhook",
    path = "/v1/webhooks/{id}",
    tag = "webhooks",
    params(("id" = String, Path, description = WEBHOOK_ID)),
    responses(
        (status = 200, description = "Removed", body = WebhookRemoved),
        (status = 404, description = "No such webhook", body = ErrorBody),
    ),
)]
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
    Ok(Json(WebhookRemoved {
        deleted: id,
        note: "no more events are delivered to it; its delivery log went with it",
    }))
}

/// A webhook's delivery log, newest first: each attempt with the receiver's status.
#[utoipa::path(
    get,
    operation_id = "list_webhook_deliveries",
    path = "/v1/webhooks/{id}/deliveries",
    tag = "webhooks",
    params(("id" = String, Path, description = WEBHOOK_ID), PageQuery),
    responses(
        (status = 200, description = "A page of the log", body = List<DeliveryRecord>),
        (status = 404, description = "No such webhook", body = ErrorBody),
    ),
)]
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
