//! The endpoint Apple's Apps and Books service POSTs its notifications to. Translates
//! only: the bearer secret and the body go to the notifications service.

use axum::Json;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::post;

use super::admin::ApiPath;
use super::error::ApiError;
use crate::apple::notifications;
use crate::state::ServerState;

/// Routes of Apple's side.
pub(super) fn router() -> Router<ServerState> {
    Router::new().route("/apple/notifications/{token_id}", post(notification))
}

async fn notification(
    State(state): State<ServerState>,
    ApiPath(token_id): ApiPath<String>,
    request: Request,
) -> Result<impl IntoResponse, ApiError> {
    let bearer = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    // Who sends it is checked before the body is read.
    notifications::authenticate(&state, &token_id, bearer).await?;
    let body = axum::body::to_bytes(request.into_body(), notifications::MAX_NOTIFICATION_BODY)
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!(
                    "a notification body is limited to {} bytes",
                    notifications::MAX_NOTIFICATION_BODY
                ),
            )
        })?;
    let new = notifications::receive(&state, &token_id, &body).await?;
    Ok(Json(
        serde_json::json!({ "received": true, "duplicate": !new }),
    ))
}
