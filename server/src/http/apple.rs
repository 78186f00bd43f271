//! The endpoint Apple's Apps and Books service POSTs its notifications to. Translates
//! only: the bearer secret and the body go to the notifications service.

use axum::Json;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::admin::ApiPath;
use super::error::{ApiError, ErrorBody};
use crate::apple::notifications;
use crate::state::ServerState;

/// Routes of Apple's side.
pub(super) fn router() -> OpenApiRouter<ServerState> {
    OpenApiRouter::new().routes(routes!(notification))
}

/// What became of a notification.
#[derive(Serialize, utoipa::ToSchema)]
struct Receipt {
    /// Always true: it was taken.
    received: bool,
    /// It was seen before (Apple retries); nothing was done again.
    duplicate: bool,
}

/// A notification from Apple's Apps and Books service for one token (asset counts,
/// license associations, user changes), with the token's notification secret.
#[utoipa::path(
    post,
    path = "/apple/notifications/{token_id}",
    operation_id = "receive_apple_notification",
    tag = "apple",
    params(("token_id" = String, Path, description = "The VPP token the notification is for")),
    request_body(content = Object, content_type = "application/json", description = "Apple's notification: `notificationType` and `notification`"),
    security(("apple_notification_secret" = [])),
    responses(
        (status = 200, description = "Taken (or a duplicate of one taken)", body = Receipt),
        (status = 401, description = "No notification secret, or not this token's", body = ErrorBody),
        (status = 404, description = "No such token", body = ErrorBody),
        (status = 413, description = "The body is over the notification limit", body = ErrorBody),
        (status = 422, description = "Not a notification Orchard reads", body = ErrorBody),
    ),
)]
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
    Ok(Json(Receipt {
        received: true,
        duplicate: !new,
    }))
}
