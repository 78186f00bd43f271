//! The license pool as every planner sees it: whether a target wants a license, the
//! reasons a target is given when it cannot have one, and the counts read back from
//! Apple after licenses moved. Shared by the reconciler, user licensing and reclaim,
//! so that none of them imports another.

use std::collections::HashSet;

use orchard_protocol::Udid;

use crate::apple::VppError;
use crate::state::ServerState;
use crate::store::{AppRecord, Candidate, Intent, LicenseCounts};

/// Reason given to targets beyond the purchased count.
pub const NO_LICENSES: &str = "license assignment failed: no licenses available";
/// Reason given when the app cannot be licensed to devices.
pub const NOT_DEVICE_ASSIGNABLE: &str =
    "license assignment failed: the app cannot be assigned to devices";
/// Status of a license-only target once licensed.
pub const LICENSE_ONLY: &str =
    "licensed; the assignment installs nothing (another tool installs the app)";

/// Whether the applying assignment wants the app on the device: Required, or Available
/// and asked for by the device's user.
pub fn wanted(c: &Candidate, requested: &HashSet<(String, Udid)>) -> bool {
    match c.intent {
        Intent::Required => true,
        Intent::Available => requested.contains(&(c.app_id.clone(), c.udid.clone())),
        Intent::Uninstall => false,
    }
}

pub fn failure_reason(error_number: Option<i64>, message: Option<&str>) -> String {
    match error_number {
        Some(9709) => NO_LICENSES.to_owned(),
        Some(n) => format!(
            "license assignment failed: Apple error {n}: {}",
            message.unwrap_or("no message")
        ),
        None => format!(
            "license assignment failed: {}",
            message.unwrap_or("Apple gave no reason")
        ),
    }
}

/// Reads an app's counts back from Apple so the server shows what Apple holds.
pub async fn refresh_counts(state: &ServerState, app: &AppRecord) {
    let Ok(Some(token)) = state.store.token(&app.token_id).await else {
        return;
    };
    match state.apple.asset(&token.secret, app.adam_id).await {
        Ok(Some(asset)) => {
            let counts = LicenseCounts {
                total: asset.total_count,
                assigned: asset.assigned_count,
                available: asset.available_count,
                retired: asset.retired_count,
            };
            if let Err(e) = state
                .store
                .update_app_counts(&app.id, &counts, state.clock.now())
                .await
            {
                tracing::warn!(error = %e, "cannot store license counts");
            }
        }
        Ok(None) => tracing::warn!(app = %app.adam_id, "Apple no longer lists the app"),
        Err(VppError::Apple { error_number, .. }) => {
            tracing::warn!(error_number, "count refresh refused")
        }
        Err(e) => tracing::warn!(error = %e, "count refresh failed"),
    }
}
