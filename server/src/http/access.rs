//! Admin tokens through the API: create, list, show, rotate and revoke. Secrets appear
//! only in the answers that make them.

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
use crate::access::{self, IssuedToken, NewAdminToken};
use crate::admin::{self, Actor};
use crate::error::ServerError;
use crate::state::ServerState;
use crate::store::{AdminTokenRecord, Role};

/// Routes of admin tokens.
pub(super) fn router() -> OpenApiRouter<ServerState> {
    OpenApiRouter::new()
        .routes(routes!(create, list_tokens))
        .routes(routes!(show, revoke))
        .routes(routes!(rotate))
}

/// An admin token to create.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct AdminTokenBody {
    /// Unique display name, e.g. `ci-pipeline`.
    name: String,
    /// What it may do.
    role: Role,
    /// It expires this many seconds from now; none: never.
    #[serde(default)]
    #[schema(minimum = 1)]
    expires_in_seconds: Option<u64>,
}

/// What revoking an admin token did.
#[derive(Serialize, utoipa::ToSchema)]
struct AdminTokenRevoked {
    /// The token's id.
    revoked: String,
    /// What it means.
    note: &'static str,
}

/// `id` of an admin token.
const TOKEN_ID: &str = "The admin token's id";

/// An admin token as the API shows it; `token` only in the answers that make a secret.
#[derive(Serialize, utoipa::ToSchema)]
struct AdminTokenView {
    #[serde(flatten)]
    record: AdminTokenRecord,
    /// The secret to send as `Authorization: Bearer …`, shown once.
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

/// Creates an admin token; its secret is in this answer only.
#[utoipa::path(
    post,
    operation_id = "create_admin_token",
    path = "/v1/admin-tokens",
    tag = "admin-tokens",
    request_body = AdminTokenBody,
    responses(
        (status = 201, description = "Created, with its secret", body = AdminTokenView),
        (status = 409, description = "A token has that name", body = ErrorBody),
    ),
)]
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

/// The admin tokens (never their secrets), by name.
#[utoipa::path(
    get,
    operation_id = "list_admin_tokens",
    path = "/v1/admin-tokens",
    tag = "admin-tokens",
    params(PageQuery),
    responses((status = 200, description = "A page of admin tokens", body = List<AdminTokenView>)),
)]
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

/// One admin token.
#[utoipa::path(
    get,
    operation_id = "get_admin_token",
    path = "/v1/admin-tokens/{id}",
    tag = "admin-tokens",
    params(("id" = String, Path, description = TOKEN_ID)),
    responses(
        (status = 200, description = "The token", body = AdminTokenView),
        (status = 404, description = "No such admin token", body = ErrorBody),
    ),
)]
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

/// Replaces an admin token's secret; the old one stops working at once.
#[utoipa::path(
    post,
    operation_id = "rotate_admin_token",
    path = "/v1/admin-tokens/{id}/rotate",
    tag = "admin-tokens",
    params(("id" = String, Path, description = TOKEN_ID)),
    responses(
        (status = 200, description = "The new secret", body = AdminTokenView),
        (status = 404, description = "No such admin token", body = ErrorBody),
    ),
)]
async fn rotate(
    State(state): State<ServerState>,
    actor: Actor,
    ApiPath(id): ApiPath<String>,
) -> Result<impl IntoResponse, ApiError> {
    let result = access::rotate(state.store.as_ref(), &id, state.clock.now()).await;
    admin::audit(&state, &actor, "admin_token.rotate", &id, &result).await;
    Ok(Json(AdminTokenView::from(result?)))
}

/// Revokes an admin token; the last unexpired `admin` token cannot go.
#[utoipa::path(
    delete,
    operation_id = "revoke_admin_token",
    path = "/v1/admin-tokens/{id}",
    tag = "admin-tokens",
    params(("id" = String, Path, description = TOKEN_ID)),
    responses(
        (status = 200, description = "Revoked", body = AdminTokenRevoked),
        (status = 404, description = "No such admin token", body = ErrorBody),
        (status = 409, description = "It is the last unexpired admin token", body = ErrorBody),
    ),
)]
async fn revoke(
    State(state): State<ServerState>,
    actor: Actor,
    ApiPath(id): ApiPath<String>,
) -> Result<impl IntoResponse, ApiError> {
    let result = access::revoke(state.store.as_ref(), &id, state.clock.now()).await;
    admin::audit(&state, &actor, "admin_token.revoke", &id, &result).await;
    result?;
    Ok(Json(AdminTokenRevoked {
        revoked: id,
        note: "requests with this token are refused from now on",
    }))
}
