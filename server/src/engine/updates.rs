//! Automatic app updates: when a sync finds a newer version of an app, devices of
//! Required assignments get it pushed (iOS 11 / macOS 10.12 or later, and only where
//! the device's OS meets the new version's minimum); Available assignments and tokens
//! without automatic updates show "update available" instead, and the device's user
//! may install it on request. The decision is sans-IO ([`plan`]).

use std::collections::{HashMap, HashSet};

use orchard_protocol::Udid;
use orchard_protocol::command::{Command, InstallApplication};

use crate::engine::applicability::{Platform, at_least, platform_of};
use crate::engine::precedence::Effective;
use crate::error::ServerResult;
use crate::state::ServerState;
use crate::store::{AppRecord, InstallRecord, InstallStatus, Intent, LicenseState, NewCommand};

/// What a new version means for one device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpdateStep {
    /// Push the update (InstallApplication again).
    Push(Udid),
    /// Show "update available" with the reason.
    Offer(Udid, String),
}

/// Whether the device's OS can take automatic updates and the new version runs on it.
fn os_allows(e: &Effective, app: &AppRecord) -> Result<(), String> {
    let w = &e.winner;
    let Some(os) = w.os_version.as_deref() else {
        return Ok(());
    };
    let platform = platform_of(w.product_name.as_deref());
    let (floor, name) = match platform {
        Platform::MacOs => ("10.12", "macOS 10.12"),
        Platform::Ios | Platform::IpadOs => ("11.0", "iOS 11"),
        Platform::Unknown => return Ok(()),
    };
    if !at_least(os, floor) {
        return Err(format!(
            "automatic updates need {name} or later; the device has {os}"
        ));
    }
    crate::engine::applicability::runs_on(w, app).map_err(|reason| {
        format!(
            "the new version is not pushed: {}",
            reason.trim_start_matches("not applicable: ")
        )
    })
}

/// Decides, for every device with an older version of `app` installed, whether the
/// new version is pushed or offered. Devices in `revoked` (their license was taken
/// back) get neither: a revoked app gets no updates.
pub fn plan(
    app: &AppRecord,
    automatic: bool,
    effective: &[Effective],
    installs: &HashMap<&Udid, &InstallRecord>,
    revoked: &HashSet<&Udid>,
) -> Vec<UpdateStep> {
    let Some(version) = app.version.as_deref() else {
        return Vec::new();
    };
    let mut steps = Vec::new();
    for e in effective.iter().filter(|e| e.winner.app_id == app.id) {
        let udid = &e.winner.udid;
        let Some(row) = installs.get(udid) else {
            continue;
        };
        if revoked.contains(udid) {
            continue;
        }
        let outdated = row.status == InstallStatus::Installed
            && row.version.as_deref().is_some_and(|v| v != version);
        if !outdated {
            continue;
        }
        let step = match (e.winner.intent, automatic) {
            (Intent::Required, true) => match os_allows(e, app) {
                Ok(()) => UpdateStep::Push(udid.clone()),
                Err(reason) => UpdateStep::Offer(udid.clone(), reason),
            },
            (Intent::Required, false) => UpdateStep::Offer(
                udid.clone(),
                format!("version {version} is available; automatic updates are off for the token"),
            ),
            (Intent::Available, _) => UpdateStep::Offer(
                udid.clone(),
                format!("version {version} is available; the user may install it"),
            ),
            (Intent::Uninstall, _) => continue,
        };
        steps.push(step);
    }
    steps
}

/// Carries out [`plan`] for an app whose version changed at sync.
pub async fn new_version(
    state: &ServerState,
    app: &AppRecord,
    automatic: bool,
) -> ServerResult<()> {
    let candidates = state.store.assignment_candidates().await?;
    let effective = crate::engine::precedence::resolve(&candidates);
    let rows = state.store.installs_of_app(&app.id).await?;
    let installs: HashMap<&Udid, &InstallRecord> = rows.iter().map(|r| (&r.udid, r)).collect();
    // Devices whose license of the app was revoked: by device, or through their user.
    let taken_back = |s: LicenseState| matches!(s, LicenseState::Revoking | LicenseState::Revoked);
    let device_licenses = state.store.licenses().await?;
    let revoked_users: HashSet<String> = state
        .store
        .user_licenses()
        .await?
        .into_iter()
        .filter(|l| l.app_id == app.id && taken_back(l.state))
        .map(|l| l.user_id)
        .collect();
    let revoked: HashSet<&Udid> = device_licenses
        .iter()
        .filter(|l| l.app_id == app.id && taken_back(l.state))
        .map(|l| &l.udid)
        .chain(effective.iter().filter_map(|e| {
            let user = e.winner.user_id.as_ref()?;
            (e.winner.license_type == crate::store::LicenseType::User
                && revoked_users.contains(user))
            .then_some(&e.winner.udid)
        }))
        .collect();
    let now = state.clock.now();
    let mut commands = Vec::new();
    let mut out = Vec::new();
    for step in plan(app, automatic, &effective, &installs, &revoked) {
        let (udid, status, reason) = match step {
            UpdateStep::Push(udid) => {
                let command = Command::InstallApplication(InstallApplication::vpp(app.adam_id, 1));
                commands.push(NewCommand::new(&udid, command, Some(app.id.clone()), now)?);
                let reason = format!(
                    "updating to {}",
                    app.version.as_deref().unwrap_or("the new version")
                );
                (udid, InstallStatus::Queued, reason)
            }
            UpdateStep::Offer(udid, reason) => (udid, InstallStatus::UpdateAvailable, reason),
        };
        out.push(InstallRecord {
            app_id: app.id.clone(),
            udid,
            status,
            device_status: None,
            version: None,
            reason: Some(reason),
            updated_at: now,
            since: None,
        });
    }
    tracing::info!(app = %app.adam_id, pushed = commands.len(), offered = out.len() - commands.len(), "new version");
    if !commands.is_empty() {
        state.store.enqueue(&commands).await?;
        state.wake_for(&commands);
    }
    if !out.is_empty() {
        state.store.set_installs(&out).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Timestamp;
    use crate::store::Candidate;

    fn app() -> AppRecord {
        AppRecord {
            id: "app".into(),
            version: Some("2.0".into()),
            minimum_os_version: Some("16.0".into()),
            ..AppRecord::example()
        }
    }

    fn target(udid: &str, intent: Intent, product: &str, os: &str) -> Effective {
        Effective {
            winner: Candidate {
                intent,
                udid: udid.into(),
                os_version: Some(os.into()),
                product_name: Some(product.into()),
                ..Candidate::example()
            },
            overridden: vec![],
        }
    }

    fn installed(udid: &str, version: &str) -> InstallRecord {
        InstallRecord {
            app_id: "app".into(),
            udid: udid.into(),
            status: InstallStatus::Installed,
            device_status: None,
            version: Some(version.into()),
            reason: None,
            updated_at: Timestamp::UNIX_EPOCH,
            since: None,
        }
    }

    #[test]
    fn update_table() {
        let effective = [
            target("required", Intent::Required, "iPhone15,2", "17.5"),
            target("old-ios", Intent::Required, "iPhone8,1", "10.3"),
            target("below-minimum", Intent::Required, "iPhone10,1", "15.7"),
            target("available", Intent::Available, "iPhone15,2", "17.5"),
            target("current", Intent::Required, "iPhone15,2", "17.5"),
            target("mac", Intent::Required, "Mac14,2", "10.11"),
        ];
        let rows = [
            installed("required", "1.0"),
            installed("old-ios", "1.0"),
            installed("below-minimum", "1.0"),
            installed("available", "1.0"),
            installed("current", "2.0"),
            installed("mac", "1.0"),
        ];
        let installs: HashMap<&Udid, &InstallRecord> = rows.iter().map(|r| (&r.udid, r)).collect();
        let steps = plan(&app(), true, &effective, &installs, &HashSet::new());
        let summary: Vec<(String, bool)> = steps
            .iter()
            .map(|s| match s {
                UpdateStep::Push(u) => (u.0.clone(), true),
                UpdateStep::Offer(u, _) => (u.0.clone(), false),
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                ("required".to_owned(), true),
                ("old-ios".to_owned(), false),
                ("below-minimum".to_owned(), false),
                ("available".to_owned(), false),
                ("mac".to_owned(), false),
            ]
        );
        // Automatic updates off: offered everywhere.
        let off = plan(&app(), false, &effective, &installs, &HashSet::new());
        assert!(off.iter().all(|s| matches!(s, UpdateStep::Offer(..))));
        // A device whose license was revoked gets no update at all.
        let revoked_mac = Udid::from("mac");
        let required = Udid::from("required");
        let revoked = HashSet::from([&revoked_mac, &required]);
        let steps = plan(&app(), true, &effective, &installs, &revoked);
        assert!(
            steps.iter().all(|s| !matches!(s, UpdateStep::Push(u) | UpdateStep::Offer(u, _) if u == &required || u == &revoked_mac)),
            "{steps:?}"
        );
    }
}
