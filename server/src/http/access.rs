//! Admin tokens through the API: create, list, show, rotate and revoke. Secrets appear
//! only in the answers that make them.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::admin::{ApiJson, ApiPath, ApiQuery};
use super::error::ApiError;
use super::list::PageQuery;
use crate::access::{self, IssuedToken, NewAdminToken};
use crate::admin::{self, Actor};
use crate::error::ServerError;
use crate::state::ServerState;
use crate::store::{AdminTokenRecord, Role};

/// Routes of admin tokens.
pub(super) fn router() -> Router<ServerState> {
    Router::new()
        .route("/v1/admin-tokens", post(create).get(list_tokens))
        .route("/v1/admin-tokens/{id}", get(show).delete(revoke))
        .route("/v1/admin-tokens/{id}/rotate", post(rotate))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AdminTokenBody {
    name: String,
    role: Role,
    #[serde(default)]
    expires_in_seconds: Option<u64>,
}

/// An admin token as the API shows it; `token` only in the answers that make a secret.
#[derive(Serialize)]
struct AdminTokenView {
    #[serde(flatten)]
    record: AdminTokenRecord,
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<String>,
}

impl From<IssuedToken> for AdminTokenView {
    fn from(issued: IssuedToken) -> Self {
        Self {
            record: issued.record,
            token: Some(issued.secret),
        }
    }
}

async fn create(
    State(state): State<ServerState>,
    actor: Actor,
    ApiJson(body): ApiJson<AdminTokenBody>,
) -> Result<impl IntoResponse, ApiError> {
    let new = NewAdminToken {
        name: body.name.clone(),
        role: body.role,
        valid_for: body.expires_in_seconds.map(std::time::Duration::from_secs),
    };
    let result = access::create(
        state.store.as_ref(),
        new,
        actor.token_id.as_deref(),
        state.clock.now(),
    )
    .await;
    let target = result
        .as_ref()
        .map(|t| t.record.id.clone())
        .unwrap_or(body.name);
    admin::audit(&state, &actor, "admin_token.create", &target, &result).await;
    Ok((StatusCode::CREATED, Json(AdminTokenView::from(result?))))
}

async fn list_tokens(
    State(state): State<ServerState>,
    _actor: Actor,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let paging = q.paging("admin-tokens")?;
    let tokens = state.store.admin_tokens(paging.page()).await?;
    Ok(Json(paging.list(
        tokens,
        |t| t.name.clone(),
        |record| AdminTokenView {
            record,
            token: None,
        },
    )))
}

async fn show(
    State(state): State<ServerState>,
    _actor: Actor,
    ApiPath(id): ApiPath<String>,
) -> Result<impl IntoResponse, ApiError> {
    let record = state
        .store
        .admin_token(&id)
        .await?
        .ok_or_else(|| ServerError::not_found("admin token", &id))?;
    Ok(Json(AdminTokenView {
        record,
        token: None,
    }))
}

async fn rotate(
    State(state): State<ServerState>,
    actor: Actor,
    ApiPath(id): ApiPath<String>,
) -> Result<impl IntoResponse, ApiError> {
    let result = access::rotate(state.store.as_ref(), &id, state.clock.now()).await;
    admin::audit(&state, &actor, "admin_token.rotate", &id, &result).await;
    Ok(Json(AdminTokenView::from(result?)))
}

async fn revoke(
    State(state): State<ServerState>,
    actor: Actor,
    ApiPath(id): ApiPath<String>,
) -> Result<impl IntoResponse, ApiError> {
    let result = access::revoke(state.store.as_ref(), &id, state.clock.now()).await;
    admin::audit(&state, &actor, "admin_token.revoke", &id, &result).await;
    result?;
    Ok(Json(serde_json::json!({
        "revoked": id,
        "note": "requests with this token are refused from now on"
    })))
}
