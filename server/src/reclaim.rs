//! Giving licenses back: a license is a reservation, so an install that ends without
//! the app (the user declined the install prompt) returns its device license to the
//! pool. The decision is sans-IO ([`plan`]); the shell asks Apple to disassociate and
//! follows the event.
//!
//! A returned license stays recorded as `released`, so the reconciler does not ask
//! for it again while the assignment stands: the user said no. A user license is not
//! returned when one device declines: it belongs to the user, who may use it on their
//! other devices.

use std::collections::{BTreeMap, HashMap, HashSet};

use orchard_protocol::command::ManagedAppStatus;
use orchard_protocol::{SerialNumber, Udid};

use crate::clock;
use crate::error::ServerResult;
use crate::state::ServerState;
use crate::store::{AppRecord, InstallRecord, InstallStatus, LicenseRecord, LicenseState};
use crate::vpp::{EventStatus, ManageAssetsRequest, RequestAsset};

/// Licenses to give back, by app.
pub fn plan(
    licenses: &[LicenseRecord],
    installs: &[InstallRecord],
) -> BTreeMap<String, Vec<(Udid, SerialNumber)>> {
    let rejected: HashSet<(&str, &Udid)> = installs
        .iter()
        .filter(|i| {
            i.status == InstallStatus::Failed
                && i.device_status.as_deref() == Some(ManagedAppStatus::UserRejected.as_str())
        })
        .map(|i| (i.app_id.as_str(), &i.udid))
        .collect();
    let mut out: BTreeMap<String, Vec<(Udid, SerialNumber)>> = BTreeMap::new();
    for l in licenses {
        if l.state == LicenseState::Associated && rejected.contains(&(l.app_id.as_str(), &l.udid)) {
            out.entry(l.app_id.clone())
                .or_default()
                .push((l.udid.clone(), l.serial_number.clone()));
        }
    }
    out
}

/// One pass: gives back what [`plan`] says and follows earlier requests; returns
/// whether Apple events are still pending.
pub async fn run_once(
    state: &ServerState,
    apps: &HashMap<String, AppRecord>,
) -> ServerResult<bool> {
    let store = state.store.as_ref();
    let licenses = store.licenses().await?;
    let mut installs = Vec::new();
    for app_id in licenses
        .iter()
        .filter(|l| l.state == LicenseState::Associated)
        .map(|l| l.app_id.as_str())
        .collect::<std::collections::BTreeSet<_>>()
    {
        installs.extend(store.installs_of_app(app_id).await?);
    }
    for (app_id, devices) in plan(&licenses, &installs) {
        let Some(app) = apps.get(&app_id) else {
            continue;
        };
        release(state, app, &devices).await?;
    }
    follow(state, apps, &licenses).await
}

async fn release(
    state: &ServerState,
    app: &AppRecord,
    devices: &[(Udid, SerialNumber)],
) -> ServerResult<()> {
    let Some(token) = state.store.token(&app.token_id).await? else {
        return Ok(());
    };
    for chunk in devices.chunks(crate::reconcile::MAX_SERIALS_PER_CALL) {
        let request = ManageAssetsRequest {
            assets: vec![RequestAsset {
                adam_id: app.adam_id.to_string(),
                pricing_param: app.pricing_param.clone(),
            }],
            serial_numbers: chunk.iter().map(|(_, s)| s.0.clone()).collect(),
            client_user_ids: Vec::new(),
        };
        let udids: Vec<Udid> = chunk.iter().map(|(u, _)| u.clone()).collect();
        match state.apple.disassociate(&token.secret, &request).await {
            Ok(event) => {
                tracing::info!(app = %app.adam_id, devices = chunk.len(), "licenses given back");
                state
                    .store
                    .set_license_states(
                        &app.id,
                        &udids,
                        LicenseState::Releasing,
                        Some(&event.event_id),
                        &clock::now(),
                    )
                    .await?;
            }
            // Left `associated`: the next pass asks again.
            Err(e) => tracing::warn!(error = %e, "giving licenses back failed; will retry"),
        }
    }
    Ok(())
}

async fn follow(
    state: &ServerState,
    apps: &HashMap<String, AppRecord>,
    licenses: &[LicenseRecord],
) -> ServerResult<bool> {
    let mut events: BTreeMap<(&str, &str), Vec<Udid>> = BTreeMap::new();
    for l in licenses
        .iter()
        .filter(|l| l.state == LicenseState::Releasing)
    {
        if let Some(event) = &l.event_id {
            events
                .entry((l.app_id.as_str(), event.as_str()))
                .or_default()
                .push(l.udid.clone());
        }
    }
    let mut pending = false;
    for ((app_id, event_id), udids) in events {
        let Some(app) = apps.get(app_id) else {
            continue;
        };
        let Some(token) = state.store.token(&app.token_id).await? else {
            continue;
        };
        match state.apple.event_status(&token.secret, event_id).await {
            Ok(s) if s.event_status == EventStatus::Pending => pending = true,
            Ok(_) => {
                state
                    .store
                    .set_license_states(app_id, &udids, LicenseState::Released, None, &clock::now())
                    .await?;
                crate::reconcile::refresh_counts(state, app).await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "event status unavailable");
                pending = true;
            }
        }
    }
    Ok(pending)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn license(udid: &str, state: LicenseState) -> LicenseRecord {
        LicenseRecord {
            app_id: "app".into(),
            udid: udid.into(),
            serial_number: format!("SN-{udid}").into(),
            state,
            event_id: None,
            error: None,
            updated_at: "t".into(),
        }
    }

    fn install(
        udid: &str,
        status: InstallStatus,
        device: Option<ManagedAppStatus>,
    ) -> InstallRecord {
        InstallRecord {
            app_id: "app".into(),
            udid: udid.into(),
            status,
            device_status: device.map(|d| d.as_str().to_owned()),
            version: None,
            reason: None,
            updated_at: "t".into(),
            since: None,
        }
    }

    #[test]
    fn only_associated_licenses_of_rejected_installs_go_back() {
        let licenses = [
            license("rejected", LicenseState::Associated),
            license("failed-otherwise", LicenseState::Associated),
            license("installed", LicenseState::Associated),
            license("already-back", LicenseState::Released),
        ];
        let installs = [
            install(
                "rejected",
                InstallStatus::Failed,
                Some(ManagedAppStatus::UserRejected),
            ),
            install(
                "failed-otherwise",
                InstallStatus::Failed,
                Some(ManagedAppStatus::Failed),
            ),
            install(
                "installed",
                InstallStatus::Installed,
                Some(ManagedAppStatus::Managed),
            ),
            install(
                "already-back",
                InstallStatus::Failed,
                Some(ManagedAppStatus::UserRejected),
            ),
        ];
        let plan = plan(&licenses, &installs);
        assert_eq!(
            plan.get("app")
                .map(|d| d.iter().map(|(u, _)| u.0.clone()).collect::<Vec<_>>()),
            Some(vec!["rejected".to_owned()])
        );
    }
}
