//! The endpoint Apple's Apps and Books service POSTs its notifications to. Translates
//! only: the bearer secret and the body go to the notifications service.

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use axum::routing::post;

use super::admin::ApiPath;
use super::error::ApiError;
use crate::state::ServerState;

/// Routes of Apple's side.
pub(super) fn router() -> Router<ServerState> {
    Router::new().route("/apple/notifications/{token_id}", post(notification))
}

async fn notification(
    State(state): State<ServerState>,
    ApiPath(token_id): ApiPath<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    let bearer = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let new = crate::apple::notifications::receive(&state, &token_id, bearer, &body).await?;
    Ok(Json(
        serde_json::json!({ "received": true, "duplicate": !new }),
    ))
}
