//! Sync with Apple: a token's location (client config), its assets with license counts,
//! and their store metadata for the token's country. One sync per token at a time.

use std::collections::HashMap;

use orchard_protocol::AdamId;
use orchard_protocol::store_item::platforms_from_store;
use serde::Serialize;

use crate::clock::Timestamp;
use crate::error::{ServerError, ServerResult};
use crate::state::ServerState;
use crate::store::{AppRecord, LicenseCounts, SyncRecord};

/// What a sync found.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SyncSummary {
    /// Token synced.
    pub token_id: String,
    /// Apple's location name.
    pub location_name: Option<String>,
    /// Store country.
    pub country: String,
    /// Apps and books seen.
    pub assets: usize,
    /// Assets the store lookup did not know (kept with their old metadata).
    pub missing_metadata: Vec<String>,
    /// When.
    pub synced_at: Timestamp,
    /// The other MDM that owns the token at Apple, if any (the token is then not used).
    pub external_mdm: Option<String>,
}

struct SyncGuard<'a> {
    state: &'a ServerState,
    token_id: String,
}

impl Drop for SyncGuard<'_> {
    fn drop(&mut self) {
        if let Ok(mut running) = self.state.syncing.lock() {
            running.remove(&self.token_id);
        }
    }
}

/// Syncs one token now. Fails with a conflict if that token is already syncing.
pub async fn sync_token(state: &ServerState, token_id: &str) -> ServerResult<SyncSummary> {
    let token = state
        .store
        .token(token_id)
        .await?
        .ok_or_else(|| ServerError::not_found("token", token_id))?;
    if let Some(reason) = &token.disabled_reason {
        return Err(ServerError::Conflict(format!(
            "token {} is not synced: {reason}",
            token.id
        )));
    }
    {
        let mut running = state
            .syncing
            .lock()
            .map_err(|_| ServerError::Conflict("sync state is unavailable".into()))?;
        if !running.insert(token.id.clone()) {
            return Err(ServerError::Conflict(format!(
                "token {} is already syncing",
                token.id
            )));
        }
    }
    let _guard = SyncGuard {
        state,
        token_id: token.id.clone(),
    };
    // Across replicas: one sync per token at a time, by lease.
    let lease = format!("sync:{}", token.id);
    let now = state.clock.now();
    if !state
        .store
        .try_lease(&lease, &state.replica, now, now + SYNC_LEASE)
        .await?
    {
        return Err(ServerError::Conflict(format!(
            "token {} is being synced by another replica",
            token.id
        )));
    }
    let started = std::time::Instant::now();
    let fetched = fetch(state, &token).await;
    crate::telemetry::sync_finished(
        if fetched.is_ok() { "ok" } else { "error" },
        started.elapsed(),
    );
    let result = match fetched {
        Ok((record, summary)) => {
            let before: HashMap<(AdamId, String), Option<String>> = state
                .store
                .apps(&crate::store::Page::all())
                .await?
                .into_iter()
                .filter(|a| a.token_id == token.id)
                .map(|a| ((a.adam_id, a.pricing_param), a.version))
                .collect();
            state.store.record_sync(&record).await?;
            let after = state.store.apps(&crate::store::Page::all()).await?;
            for app in after.iter().filter(|a| a.token_id == token.id) {
                let old = before.get(&(app.adam_id, app.pricing_param.clone()));
                if let Some(Some(old)) = old
                    && app.version.as_ref().is_some_and(|v| v != old)
                    && token.external_mdm.is_none()
                {
                    crate::engine::updates::new_version(state, app, token.automatic_updates)
                        .await?;
                }
            }
            if summary.external_mdm != token.external_mdm
                && let Some(mut changed) = state.store.token(&token.id).await?
            {
                changed.external_mdm = summary.external_mdm.clone();
                state.store.update_token(&changed).await?;
            }
            tracing::info!(token = %token.id, assets = summary.assets, "sync finished");
            state
                .syncs_run
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            // Bought licenses serve the targets that waited for one.
            state.poke_reconciler();
            Ok(summary)
        }
        Err(e) => {
            state
                .store
                .record_sync_error(&token.id, &e.to_string(), state.clock.now())
                .await?;
            if let ServerError::Apple(apple) = &e
                && let Some(reason) = crate::apple::token_lifecycle::disabling(apple)
            {
                tracing::warn!(token = %token.id, %reason, "token disabled");
                if let Some(mut disabled) = state.store.token(&token.id).await? {
                    disabled.disabled_reason = Some(reason);
                    state.store.update_token(&disabled).await?;
                }
            }
            Err(e)
        }
    };
    state.store.release_lease(&lease, &state.replica).await?;
    result
}

/// How long a sync may hold its token's lease; a replica that dies mid-sync frees the
/// token for the others when this runs out.
const SYNC_LEASE: std::time::Duration = std::time::Duration::from_secs(10 * 60);

/// Syncs every token whose last sync is older than the sync interval, on one replica at a
/// time: the replica holding the scheduler lease. If it dies, its lease runs out after
/// three ticks and another replica takes over.
pub async fn run_scheduler(state: ServerState, shutdown: tokio_util::sync::CancellationToken) {
    let tick = state.options.scheduler_tick;
    loop {
        if let Err(e) = schedule_once(&state, tick).await {
            tracing::warn!(error = %e, "sync scheduler failed; retrying");
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(tick) => {}
        }
    }
}

async fn schedule_once(state: &ServerState, tick: std::time::Duration) -> ServerResult<()> {
    let now = state.clock.now();
    if !state
        .store
        .try_lease("sync-scheduler", &state.replica, now, now + tick * 3)
        .await?
    {
        return Ok(());
    }
    for token in state.store.tokens(&crate::store::Page::all()).await? {
        if sync_due(&token, now, state.options.sync_interval, tick)
            && let Err(e) = sync_token(state, &token.id).await
        {
            tracing::warn!(token = %token.id, error = %e, "scheduled sync failed");
        }
    }
    Ok(())
}

/// Whether the schedule syncs `token` at `now`: its last sync is older than `interval`,
/// or, never synced, it was uploaded more than a `tick` ago (an admin had a tick to sync
/// it by hand). Disabled tokens wait for renewal.
pub fn sync_due(
    token: &crate::store::VppTokenRecord,
    now: Timestamp,
    interval: std::time::Duration,
    tick: std::time::Duration,
) -> bool {
    let due = match token.last_sync_at {
        Some(at) => at < now - interval,
        None => token.created_at < now - tick,
    };
    due && token.disabled_reason.is_none()
}

async fn fetch(
    state: &ServerState,
    token: &crate::store::VppTokenRecord,
) -> ServerResult<(SyncRecord, SyncSummary)> {
    let (secret, token_id) = (token.secret.as_str(), token.id.as_str());
    let config = state.apple.client_config(secret).await?;
    // Whose is the location? Unclaimed: this server's now. Another MDM's: counted,
    // shown, and not used until an admin takes it over.
    let ours = crate::apple::token_lifecycle::mdm_info(state).await?;
    let mine = |info: &Option<crate::apple::MdmInfo>| info.as_ref().is_none_or(|i| i.id == ours.id);
    // Unclaimed, or ours without notifications set up yet (unless they are off): claim
    // it now.
    let notifications_wanted = state.options.notifications != crate::state::NotificationMode::Off
        && token.notification_secret.is_none();
    if mine(&config.mdm_info) && (config.mdm_info.is_none() || notifications_wanted) {
        let mut claimed = token.clone();
        crate::apple::token_lifecycle::claim(state, &mut claimed).await?;
        state.store.update_token(&claimed).await?;
    }
    let external_mdm = match &config.mdm_info {
        None => None,
        Some(info) if info.id == ours.id => None,
        Some(info) => Some(if info.name.is_empty() {
            info.id.clone()
        } else {
            info.name.clone()
        }),
    };
    // The admin's choice of store wins over the location's country.
    let country = token
        .store_country
        .clone()
        .or_else(|| config.country_iso2a_code.clone())
        .unwrap_or_else(|| "US".into());
    let assets = state.apple.assets(secret).await?;
    let adam_ids: Vec<AdamId> = assets
        .iter()
        .filter_map(|a| a.adam_id.parse().ok())
        .collect();
    let mut metadata = HashMap::new();
    for chunk in adam_ids.chunks(100) {
        for result in state.apple.lookup(chunk, &country).await? {
            metadata.insert(result.track_id, result);
        }
    }
    let now = state.clock.now();
    let mut missing = Vec::new();
    let mut apps = Vec::with_capacity(assets.len());
    for asset in assets {
        let Ok(adam_id) = asset.adam_id.parse::<AdamId>() else {
            tracing::warn!(adam_id = %asset.adam_id, "Apple listed an asset with a non-numeric adamId; skipped");
            continue;
        };
        let meta = metadata.get(&adam_id.0);
        if meta.is_none() {
            missing.push(asset.adam_id.clone());
        }
        apps.push(AppRecord {
            id: uuid::Uuid::new_v4().to_string(),
            token_id: token_id.to_owned(),
            adam_id,
            pricing_param: asset.pricing_param.unwrap_or_else(|| "STDQ".into()),
            product_type: asset.product_type,
            name: meta.and_then(|m| m.track_name.clone()),
            bundle_id: meta.and_then(|m| m.bundle_id.clone()),
            version: meta.and_then(|m| m.version.clone()),
            platforms: platforms_from_store(
                meta.and_then(|m| m.kind.as_deref()),
                meta.map_or(&[][..], |m| &m.supported_devices),
                &asset.supported_platforms,
            )
            .into_iter()
            .map(|p| p.as_str().to_owned())
            .collect(),
            device_assignable: asset.device_assignable,
            counts: LicenseCounts {
                total: asset.total_count,
                assigned: asset.assigned_count,
                available: asset.available_count,
                retired: asset.retired_count,
            },
            updated_at: now,
            install_timeout_seconds: None,
            store_url: meta.and_then(|m| m.track_view_url.clone()),
            minimum_os_version: meta.and_then(|m| m.minimum_os_version.clone()),
        });
    }
    let summary = SyncSummary {
        token_id: token_id.to_owned(),
        location_name: config.location_name.clone(),
        country: country.clone(),
        assets: apps.len(),
        missing_metadata: missing,
        synced_at: now,
        external_mdm,
    };
    let record = SyncRecord {
        token_id: token_id.to_owned(),
        location_name: config.location_name,
        country: Some(country),
        location_uid: config.u_id,
        apps,
        now,
    };
    Ok((record, summary))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::clock::{Clock, ManualClock};
    use crate::store::VppTokenRecord;

    const TICK: Duration = Duration::from_secs(60);
    const TWELVE_HOURS: Duration = Duration::from_secs(12 * 3600);

    #[test]
    fn schedule_syncs_a_new_token_after_a_tick_then_every_interval() {
        let uploaded: Timestamp = "2026-11-30T08:00:00Z".parse().unwrap();
        let clock = ManualClock::new(uploaded);
        let mut token = VppTokenRecord {
            created_at: uploaded,
            ..VppTokenRecord::example()
        };
        let due =
            |t: &VppTokenRecord, clock: &ManualClock| sync_due(t, clock.now(), TWELVE_HOURS, TICK);
        assert!(!due(&token, &clock), "an admin gets a tick to sync by hand");
        clock.advance(TICK + Duration::from_secs(1));
        assert!(due(&token, &clock), "never synced, a tick later");
        token.last_sync_at = Some(clock.now());
        assert!(!due(&token, &clock));
        clock.advance(TWELVE_HOURS - Duration::from_secs(1));
        assert!(!due(&token, &clock), "one second short of the interval");
        clock.advance(Duration::from_secs(2));
        assert!(due(&token, &clock), "the interval has passed");
        token.disabled_reason = Some("Apple says the token expired (9621)".into());
        assert!(!due(&token, &clock), "a disabled token waits for renewal");
    }
}
