//! A VPP token's life after upload: who owns its location at Apple (this server, or
//! another MDM until taken over), renewal with a new file, deletion, and the status
//! that stops its syncs when Apple says it expired or was revoked.

use sha2::{Digest, Sha256};

use crate::apple::{MdmInfo, NotificationTarget, TokenFile, VppError};
use crate::clock::Timestamp;
use crate::error::{ServerError, ServerResult};
use crate::state::{NotificationMode, ServerState};
use crate::store::VppTokenRecord;

/// The name this server gives itself in Apple's `mdmInfo`.
pub const MDM_NAME: &str = "Orchard";

/// This server's `mdmInfo`: a stable id kept in settings, shared by every replica.
pub async fn mdm_info(state: &ServerState) -> ServerResult<MdmInfo> {
    let id = state
        .store
        .setting_or_insert("vpp_mdm_id", &uuid::Uuid::new_v4().to_string())
        .await?;
    Ok(MdmInfo {
        id,
        name: MDM_NAME.to_owned(),
        metadata: state.mdm.public_url.chars().take(255).collect(),
    })
}

/// Where Apple sends this token's notifications; makes the bearer secret if the token
/// has none yet (the caller stores it).
pub fn notification_target(state: &ServerState, token: &mut VppTokenRecord) -> NotificationTarget {
    let secret = token
        .notification_secret
        .get_or_insert_with(|| {
            let mut bytes = [0u8; 32];
            rand::RngCore::fill_bytes(&mut rand::rng(), &mut bytes);
            hex::encode(bytes)
        })
        .clone();
    NotificationTarget {
        url: format!(
            "{}/apple/notifications/{}",
            state.mdm.public_url.trim_end_matches('/'),
            token.id
        ),
        secret,
    }
}

/// Claims the token's location for this server at Apple, with notifications as the
/// server's mode says; records on the token whether Apple notifies it. The token must be
/// stored: Apple's test notification is checked against it at once.
pub async fn claim(state: &ServerState, token: &mut VppTokenRecord) -> ServerResult<()> {
    let ours = mdm_info(state).await?;
    if state.options.notifications == NotificationMode::Off {
        state.apple.claim(&token.secret, &ours, None).await?;
        token.notifications = Some("off: turned off on this server; it polls Apple".into());
        state.store.update_token(token).await?;
        return Ok(());
    }
    let target = notification_target(state, token);
    state.store.update_token(token).await?;
    let result = match state.apple.claim(&token.secret, &ours, Some(&target)).await {
        Ok(_) => {
            token.notifications = Some("on".into());
            Ok(())
        }
        Err(VppError::Apple {
            error_number: 9728, ..
        }) if state.options.notifications == NotificationMode::Auto => {
            tracing::warn!(token = %token.id, url = %target.url, "Apple cannot reach the notification URL; polling instead");
            state.apple.claim(&token.secret, &ours, None).await?;
            token.notifications = Some(format!(
                "off: Apple could not reach {} (9728); this server polls Apple instead",
                target.url
            ));
            Ok(())
        }
        Err(e) => Err(e),
    };
    result?;
    state.store.update_token(token).await?;
    Ok(())
}

/// Why Apple's answer disables a token until it is renewed, if it does.
pub fn disabling(error: &VppError) -> Option<String> {
    match error {
        VppError::Apple {
            error_number: 9621, ..
        } => Some(
            "Apple says the token expired (9621); download a new token file and renew the token"
                .into(),
        ),
        VppError::Apple {
            error_number: 9625, ..
        } => Some(
            "Apple says the token was revoked (9625); download a new token file and renew the token"
                .into(),
        ),
        _ => None,
    }
}

/// Takes the token's location over from another MDM: Apple then names this server
/// as its owner, and the token is used again.
pub async fn take_over(state: &ServerState, token_id: &str) -> ServerResult<VppTokenRecord> {
    let mut token = state
        .store
        .token(token_id)
        .await?
        .ok_or_else(|| ServerError::not_found("token", token_id))?;
    claim(state, &mut token).await?;
    tracing::info!(token = %token.id, previous = ?token.external_mdm, "token taken over");
    token.external_mdm = None;
    state.store.update_token(&token).await?;
    state.poke_reconciler();
    Ok(token)
}

/// Renews a token with a new file for the same location.
pub async fn renew(
    state: &ServerState,
    token_id: &str,
    contents: &str,
) -> ServerResult<VppTokenRecord> {
    let mut token = state
        .store
        .token(token_id)
        .await?
        .ok_or_else(|| ServerError::not_found("token", token_id))?;
    let file = TokenFile::parse(contents, state.clock.now())?;
    let hash = hex::encode(Sha256::digest(file.s_token.as_bytes()));
    if hash == token.secret_hash {
        return Err(ServerError::Conflict(
            "this is the token file the token already has; download a new one to renew".into(),
        ));
    }
    if let Some(uid) = &token.location_uid {
        let config = state.apple.client_config(&file.s_token).await?;
        if config.u_id.as_deref() != Some(uid.as_str()) {
            return Err(ServerError::Invalid {
                field: "token_file",
                reason: format!(
                    "the new token file belongs to another location ({}), not to this token's ({uid})",
                    config.u_id.as_deref().unwrap_or("unknown")
                ),
            });
        }
    }
    token.secret = file.s_token;
    token.secret_hash = hash;
    token.expires_at = file.expires_at;
    token.disabled_reason = None;
    if !state.store.update_token(&token).await? {
        return Err(ServerError::not_found("token", token_id));
    }
    state.poke_reconciler();
    Ok(token)
}

/// What deleting a token did.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
#[schema(as = TokenDeleted)]
pub struct Deleted {
    /// Token.
    pub deleted: String,
    /// Apps (and books) that went with it.
    pub apps_removed: usize,
    /// What did not happen.
    pub note: &'static str,
}

/// Deletes a token with its apps and assignments. No license is revoked and nothing
/// is uninstalled: licenses stay associated at Apple.
pub async fn delete(state: &ServerState, token_id: &str) -> ServerResult<Deleted> {
    let apps = state
        .store
        .apps(&crate::store::Page::all())
        .await?
        .into_iter()
        .filter(|a| a.token_id == token_id)
        .count();
    if !state.store.delete_token(token_id).await? {
        return Err(ServerError::not_found("token", token_id));
    }
    Ok(Deleted {
        deleted: token_id.to_owned(),
        apps_removed: apps,
        note: "the token's apps and assignments are gone; no license was revoked and nothing was uninstalled: the licenses stay associated at Apple (revoke before deleting to free them)",
    })
}

/// How close a token is to the end of its year.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpiryStatus {
    /// More than [`EXPIRY_WARNING`] left.
    Valid,
    /// Expires within [`EXPIRY_WARNING`]: renew it.
    ExpiringSoon,
    /// Expired: Apple refuses it.
    Expired,
}

impl ExpiryStatus {
    /// The API's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Valid => "valid",
            Self::ExpiringSoon => "expiring_soon",
            Self::Expired => "expired",
        }
    }
}

/// How long before its expiry a token is flagged.
pub const EXPIRY_WARNING: std::time::Duration = std::time::Duration::from_secs(30 * 24 * 3600);

/// Whether a token expiring at `expires_at` is valid, expiring soon or expired at `now`.
pub fn expiry_status(expires_at: Timestamp, now: Timestamp) -> ExpiryStatus {
    if expires_at <= now {
        ExpiryStatus::Expired
    } else if expires_at.since(now) <= EXPIRY_WARNING {
        ExpiryStatus::ExpiringSoon
    } else {
        ExpiryStatus::Valid
    }
}

/// Whether a token can be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenStatus {
    /// In use.
    Active,
    /// Past its expiry date.
    Expired,
    /// Apple refused it (expired or revoked there) until it is renewed.
    Disabled,
    /// Another MDM owns its location; not used until taken over.
    AssignedToExternalMdm,
}

impl TokenStatus {
    /// The API's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Expired => "expired",
            Self::Disabled => "disabled",
            Self::AssignedToExternalMdm => "assigned_to_external_mdm",
        }
    }
}

/// A token's status at `now`.
pub fn status(token: &VppTokenRecord, now: Timestamp) -> TokenStatus {
    if token.disabled_reason.is_some() {
        TokenStatus::Disabled
    } else if expiry_status(token.expires_at, now) == ExpiryStatus::Expired {
        TokenStatus::Expired
    } else if token.external_mdm.is_some() {
        TokenStatus::AssignedToExternalMdm
    } else {
        TokenStatus::Active
    }
}

/// Why the token's licenses cannot be used at `now`, for the status of every target
/// that waits on it (naming the token and the fix); `None` while it is usable.
pub fn unusable_reason(token: &VppTokenRecord, now: Timestamp) -> Option<String> {
    let name = &token.name;
    match status(token, now) {
        TokenStatus::Active => None,
        TokenStatus::Disabled => Some(format!(
            "license assignment failed: the token \"{name}\" cannot be used ({}); upload a renewed token file onto it",
            token
                .disabled_reason
                .as_deref()
                .unwrap_or("refused by Apple")
        )),
        TokenStatus::Expired => Some(format!(
            "license assignment failed: the token \"{name}\" expired on {}; upload a renewed token file onto it",
            token.expires_at
        )),
        TokenStatus::AssignedToExternalMdm => Some(format!(
            "license assignment failed: the token \"{name}\" is assigned to another MDM ({}); take it over to use it here",
            token.external_mdm.as_deref().unwrap_or("unknown")
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::clock::{Clock, ManualClock};

    const DAY: Duration = Duration::from_secs(24 * 3600);

    fn token(expires_at: Timestamp) -> VppTokenRecord {
        VppTokenRecord {
            expires_at,
            ..VppTokenRecord::example()
        }
    }

    #[test]
    fn expiry_warning_starts_30_days_before_and_expiry_disables_on_the_day() {
        let start: Timestamp = "2026-11-30T12:00:00Z".parse().unwrap();
        let clock = ManualClock::new(start);
        let t = token(start + DAY * 45);
        let seen = |clock: &ManualClock| {
            (
                expiry_status(t.expires_at, clock.now()),
                status(&t, clock.now()),
            )
        };
        assert_eq!(seen(&clock), (ExpiryStatus::Valid, TokenStatus::Active));
        clock.advance(DAY * 14);
        assert_eq!(seen(&clock), (ExpiryStatus::Valid, TokenStatus::Active));
        clock.advance(DAY + Duration::from_secs(1));
        assert_eq!(
            seen(&clock),
            (ExpiryStatus::ExpiringSoon, TokenStatus::Active),
            "29 days and a bit left"
        );
        clock.set(t.expires_at);
        assert_eq!(seen(&clock), (ExpiryStatus::Expired, TokenStatus::Expired));
    }

    #[test]
    fn a_disabled_or_foreign_token_says_so_before_its_expiry() {
        let now: Timestamp = "2026-11-30T12:00:00Z".parse().unwrap();
        let mut t = token(now + DAY * 100);
        t.external_mdm = Some("Other MDM".into());
        assert_eq!(status(&t, now), TokenStatus::AssignedToExternalMdm);
        let foreign = unusable_reason(&t, now).unwrap_or_default();
        assert!(
            foreign.contains("\"HQ\"") && foreign.contains("Other MDM"),
            "{foreign}"
        );
        t.disabled_reason = Some("Apple says the token was revoked (9625)".into());
        assert_eq!(status(&t, now), TokenStatus::Disabled);
        let revoked = unusable_reason(&t, now).unwrap_or_default();
        assert!(revoked.contains("revoked (9625)"), "{revoked}");
        t.disabled_reason = None;
        t.external_mdm = None;
        assert_eq!(unusable_reason(&t, now), None);
        let expired = unusable_reason(&t, t.expires_at).unwrap_or_default();
        assert!(expired.contains("expired on"), "{expired}");
    }
}
