//! Apple's notifications: the endpoint Apple POSTs to (named in client config with a
//! bearer secret per token). Each notification is checked against the token's secret,
//! counted once by `notificationId`, and wakes the work it concerns at once: the
//! reconciler for finished license and user events, a sync for changed counts. Event
//! polling stays as the fallback when a notification does not come.

use subtle_compare::constant_time_eq;

use crate::apple::NotificationEnvelope;
use crate::error::{ServerError, ServerResult};
use crate::state::ServerState;

/// Largest notification body read, once its sender proved the token's secret (Apple
/// sends at most 100 events per notification).
pub const MAX_NOTIFICATION_BODY: usize = 256 * 1024;

/// Checks that a notification for `token_id` carries the token's bearer secret; done
/// before its body is read.
pub async fn authenticate(
    state: &ServerState,
    token_id: &str,
    bearer: Option<&str>,
) -> ServerResult<()> {
    let token = state
        .store
        .token(token_id)
        .await?
        .ok_or_else(|| ServerError::not_found("token", token_id))?;
    let expected = token.notification_secret.as_deref().unwrap_or_default();
    let given = bearer.unwrap_or_default();
    if expected.is_empty() || !constant_time_eq(expected.as_bytes(), given.as_bytes()) {
        return Err(ServerError::Unauthenticated(
            "the notification's bearer secret is not this token's".into(),
        ));
    }
    Ok(())
}

/// Handles one authenticated notification for `token_id`. Returns whether it was new
/// (false: a repeat, already handled).
pub async fn receive(state: &ServerState, token_id: &str, body: &[u8]) -> ServerResult<bool> {
    let envelope: NotificationEnvelope =
        serde_json::from_slice(body).map_err(|e| ServerError::Invalid {
            field: "notification",
            reason: format!("not Apple's notification envelope: {e}"),
        })?;
    let new = state
        .store
        .record_notification(
            &envelope.notification_id,
            token_id,
            &envelope.notification_type,
            state.clock.now(),
        )
        .await?;
    if !new {
        return Ok(false);
    }
    tracing::info!(token = %token_id, kind = %envelope.notification_type, "Apple notification");
    match envelope.notification_type.as_str() {
        // Licenses bought, refunded or moved: read the counts now.
        "ASSET_COUNT" => {
            let state = state.clone();
            let token_id = token_id.to_owned();
            tokio::spawn(async move {
                if let Err(e) = crate::apple::sync::sync_token(&state, &token_id).await {
                    tracing::warn!(error = %e, "sync after a count notification failed");
                }
            });
        }
        "TEST_NOTIFICATION" => {}
        // ASSET_MANAGEMENT, USER_MANAGEMENT, USER_ASSOCIATED: events finished.
        _ => {
            state.event_polls.notified(state.clock.now());
            state.poke_reconciler();
        }
    }
    Ok(true)
}

/// Byte comparison whose time does not depend on where the inputs differ.
mod subtle_compare {
    pub(super) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
        if a.len() != b.len() {
            return false;
        }
        a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}
