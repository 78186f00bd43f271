//! Notifications the stand-in POSTs to the MDM that claimed a location, as Apple does:
//! `{notification, notificationId, notificationType, uId}` with the MDM's bearer
//! secret, at most 100 items per notification, up to 3 attempts. Delivery needs the
//! MDM's CA (`World::notification_ca`); without one the stand-in sends nothing and the
//! MDM falls back to polling, as it must when Apple's notifications do not come.

use std::time::Duration;

use orchard_agent::tls::{Trust, tls_client};
use serde_json::{Value, json};

use super::api::{SharedWorld, lock};
use super::state::World;

/// Most items (assignments, users) in one notification.
pub const MAX_ITEMS: usize = 100;

/// Attempts per notification.
const ATTEMPTS: u32 = 3;

/// Where one location's notifications go.
#[derive(Debug, Clone)]
pub(super) struct Target {
    url: String,
    token: String,
    ca: String,
    retry: Duration,
}

/// Where notifications for `uid` go, read from the locked world (none: not sent).
pub(super) fn target_of(world: &World, uid: &str) -> Option<Target> {
    if world.drop_notifications {
        return None;
    }
    let location = world.locations.get(uid)?;
    Some(Target {
        url: location.notification_url.clone()?,
        token: location.notification_token.clone()?,
        ca: world.notification_ca.clone()?,
        retry: world.notification_retry,
    })
}

/// Sends one notification now; true when delivered (any 2xx).
async fn deliver(target: &Target, uid: &str, kind: &str, notification: &Value) -> bool {
    let Ok(http) = tls_client(Trust::Only(&target.ca), None) else {
        return false;
    };
    let body = json!({
        "notification": notification,
        "notificationId": uuid::Uuid::new_v4().to_string(),
        "notificationType": kind,
        "uId": uid,
    });
    for attempt in 1..=ATTEMPTS {
        let sent = http
            .post(&target.url)
            .bearer_auth(&target.token)
            .json(&body)
            .send()
            .await;
        if sent.is_ok_and(|r| r.status().is_success()) {
            return true;
        }
        if attempt < ATTEMPTS {
            tokio::time::sleep(target.retry).await;
        }
    }
    false
}

/// The test notification Apple sends when a client config names a notification URL;
/// false when it cannot be delivered (Apple then refuses the config with 9728).
pub(super) async fn test(world: &SharedWorld, uid: &str) -> bool {
    let target = target_of(&lock(world), uid);
    match target {
        Some(t) => deliver(&t, uid, "TEST_NOTIFICATION", &json!({})).await,
        // No way to reach the MDM: nothing is sent, nothing is refused.
        None => true,
    }
}

/// Sends notifications to `target` after `delay` (when the event they report is
/// done), in the background. Callers may hold the world's lock: nothing here takes it
/// before the notifications are out.
pub(super) fn later(
    world: &SharedWorld,
    target: Option<Target>,
    uid: &str,
    kind: &'static str,
    notifications: Vec<Value>,
    delay: Duration,
) {
    let Some(target) = target else {
        return;
    };
    let world = world.clone();
    let uid = uid.to_owned();
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        let mut sent = 0;
        for n in notifications {
            if deliver(&target, &uid, kind, &n).await {
                sent += 1;
            }
        }
        lock(&world).notifications_sent += sent;
    });
}

/// `ASSET_MANAGEMENT` notifications for a finished event, split at [`MAX_ITEMS`].
pub(super) fn asset_management(
    event_id: &str,
    kind: &str,
    assignments: &[Value],
    failures: &[Value],
) -> Vec<Value> {
    let result = if failures.is_empty() {
        "SUCCESS"
    } else {
        "FAILURE"
    };
    let chunks: Vec<&[Value]> = if assignments.is_empty() {
        vec![&[]]
    } else {
        assignments.chunks(MAX_ITEMS).collect()
    };
    chunks
        .into_iter()
        .enumerate()
        .map(|(i, chunk)| {
            let mut n =
                json!({ "assignments": chunk, "eventId": event_id, "result": result, "type": kind });
            // At most one error per notification.
            if i == 0
                && let Some(error) = failures.first()
            {
                n["error"] = error.clone();
            }
            n
        })
        .collect()
}
