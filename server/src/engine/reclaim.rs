//! Giving licenses back. A license is a reservation: it goes back to the pool when
//! nothing needs it any more, and it is taken back when an admin revokes it or the user
//! declines the install. The decisions are sans-IO ([`plan_devices`], [`plan_users`],
//! [`plan_uninstalls`]); the shell removes apps, asks Apple to disassociate and follows
//! the events.
//!
//! - Released (`releasing`, then forgotten): no applying assignment reaches the device
//!   any more (it left the group, the assignment went, the device checked out or was
//!   deleted), the assignment moved to the other license type, or the Uninstall intent
//!   removed the app. A user license goes when none of the user's devices needs it.
//! - Revoked (`revoking`, then kept `revoked`): an admin revoked it, or the install
//!   ended without the app (the user declined it, the device refused it, it timed out). It is not asked for again until the device comes under an
//!   assignment anew (joins a group, or the assignment changes).
//! - Uninstall: RemoveApplication first; the license goes once the device confirms.
//!   macOS apps are not removed this way (reported as not applicable).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use orchard_protocol::command::{Command, RemoveApplication};
use orchard_protocol::{SerialNumber, Udid};

use crate::apple::{EventStatus, ManageAssetsRequest, RequestAsset};
use crate::engine::applicability::{MACOS_UNINSTALL, Platform, platform_of};
use crate::engine::precedence::Effective;
use crate::error::ServerResult;
use crate::state::ServerState;
use crate::store::{
    AppRecord, InstallRecord, InstallStatus, Intent, LicenseRecord, LicenseState, LicenseType,
    NewCommand, UserLicenseRecord,
};

/// The applying assignment of each (app, device).
type EffectiveMap<'a> = HashMap<(&'a str, &'a Udid), &'a Effective>;

/// Install rows by (app, device).
type Installs<'a> = HashMap<(&'a str, &'a Udid), &'a InstallRecord>;

/// What one disassociation event covers: released devices, revoked devices, user
/// licenses.
#[derive(Default)]
struct EventItems {
    released: Vec<Udid>,
    revoked: Vec<Udid>,
    users: Vec<UserLicenseRecord>,
}

/// The install ended without the app: the user declined it, the device refused it, or
/// it timed out. Its device license was a reservation and goes back.
fn ended_without_app(row: Option<&&InstallRecord>) -> bool {
    row.is_some_and(|r| r.status == InstallStatus::Failed)
}

/// Whether the app is off the device as far as an Uninstall is concerned.
fn off_the_device(row: Option<&&InstallRecord>) -> bool {
    row.is_none_or(|r| {
        matches!(
            r.status,
            InstallStatus::Removed
                | InstallStatus::NotInstalled
                | InstallStatus::Licensed
                | InstallStatus::LicenseFailed
                | InstallStatus::Pending
        )
    })
}

/// Device licenses to give back: (app, device, `Releasing` or `Revoking`).
pub fn plan_devices(
    licenses: &[LicenseRecord],
    effective: &EffectiveMap<'_>,
    installs: &Installs<'_>,
    requested: &HashSet<(String, Udid)>,
) -> Vec<(String, Udid, LicenseState)> {
    let mut out = Vec::new();
    for l in licenses
        .iter()
        .filter(|l| l.state == LicenseState::Associated)
    {
        let key = (l.app_id.as_str(), &l.udid);
        let row = installs.get(&key);
        let next = if ended_without_app(row) {
            Some(LicenseState::Revoking)
        } else {
            match effective.get(&key).map(|e| &e.winner) {
                None => Some(LicenseState::Releasing),
                Some(w) if w.license_type == LicenseType::User => Some(LicenseState::Releasing),
                Some(w)
                    if w.intent == Intent::Available
                        && !crate::engine::license_pool::wanted(w, requested) =>
                {
                    Some(LicenseState::Releasing)
                }
                Some(w)
                    if w.intent == Intent::Uninstall
                        && platform_of(w.product_name.as_deref()) != Platform::MacOs
                        && off_the_device(row) =>
                {
                    Some(LicenseState::Releasing)
                }
                Some(_) => None,
            }
        };
        if let Some(state) = next {
            out.push((l.app_id.clone(), l.udid.clone(), state));
        }
    }
    out
}

/// User licenses to release: (app, user). A user license stays while any of the user's
/// devices has a Required, user-licensed assignment for the app, or an Uninstall whose
/// removal is still under way.
pub fn plan_users(
    licenses: &[UserLicenseRecord],
    effective: &[Effective],
    installs: &Installs<'_>,
    requested: &HashSet<(String, Udid)>,
) -> Vec<(String, String)> {
    let mut needed: HashSet<(&str, &str)> = HashSet::new();
    for e in effective {
        let w = &e.winner;
        let Some(user) = w.user_id.as_deref() else {
            continue;
        };
        let keeps = match w.intent {
            Intent::Required | Intent::Available => {
                w.license_type == LicenseType::User
                    && crate::engine::license_pool::wanted(w, requested)
            }
            Intent::Uninstall => !off_the_device(installs.get(&(w.app_id.as_str(), &w.udid))),
        };
        if keeps {
            needed.insert((w.app_id.as_str(), user));
        }
    }
    licenses
        .iter()
        .filter(|l| l.state == LicenseState::Associated)
        .filter(|l| !needed.contains(&(l.app_id.as_str(), l.user_id.as_str())))
        .map(|l| (l.app_id.clone(), l.user_id.clone()))
        .collect()
}

/// What the Uninstall intent asks for one device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UninstallStep {
    /// Queue RemoveApplication.
    Remove {
        /// App.
        app_id: String,
        /// Device.
        udid: Udid,
    },
    /// macOS: report that the intent cannot apply.
    NotApplicable {
        /// App.
        app_id: String,
        /// Device.
        udid: Udid,
    },
}

/// Removals the Uninstall intent asks for.
pub fn plan_uninstalls(effective: &[Effective], installs: &Installs<'_>) -> Vec<UninstallStep> {
    let mut out = Vec::new();
    for e in effective
        .iter()
        .filter(|e| e.winner.intent == Intent::Uninstall)
    {
        let w = &e.winner;
        let row = installs.get(&(w.app_id.as_str(), &w.udid));
        if platform_of(w.product_name.as_deref()) == Platform::MacOs {
            if row.is_none_or(|r| r.reason.as_deref() != Some(MACOS_UNINSTALL)) {
                out.push(UninstallStep::NotApplicable {
                    app_id: w.app_id.clone(),
                    udid: w.udid.clone(),
                });
            }
            continue;
        }
        let on_device = row.is_some_and(|r| {
            matches!(
                r.status,
                InstallStatus::Installed
                    | InstallStatus::UpdateAvailable
                    | InstallStatus::Installing
                    | InstallStatus::Prompting
                    | InstallStatus::Queued
            )
        });
        if on_device {
            out.push(UninstallStep::Remove {
                app_id: w.app_id.clone(),
                udid: w.udid.clone(),
            });
        }
    }
    out
}

/// One pass; returns whether Apple events are still pending.
pub async fn run_once(
    state: &ServerState,
    apps: &HashMap<String, AppRecord>,
    effective: &[Effective],
    requested: &HashSet<(String, Udid)>,
) -> ServerResult<bool> {
    let store = state.store.as_ref();
    let licenses = store.licenses().await?;
    let user_licenses = store.user_licenses().await?;
    let app_ids: BTreeSet<&str> = licenses
        .iter()
        .map(|l| l.app_id.as_str())
        .chain(user_licenses.iter().map(|l| l.app_id.as_str()))
        .chain(effective.iter().map(|e| e.winner.app_id.as_str()))
        .collect();
    let mut rows = Vec::new();
    for app_id in &app_ids {
        rows.extend(store.installs_of_app(app_id).await?);
    }
    let installs: Installs<'_> = rows
        .iter()
        .map(|r| ((r.app_id.as_str(), &r.udid), r))
        .collect();
    let by_pair: EffectiveMap<'_> = effective
        .iter()
        .map(|e| ((e.winner.app_id.as_str(), &e.winner.udid), e))
        .collect();
    uninstall(state, apps, plan_uninstalls(effective, &installs)).await?;

    let now = state.clock.now();
    let mut by_state: BTreeMap<(String, LicenseState), Vec<Udid>> = BTreeMap::new();
    for (app_id, udid, next) in plan_devices(&licenses, &by_pair, &installs, requested) {
        by_state.entry((app_id, next)).or_default().push(udid);
    }
    for ((app_id, next), udids) in by_state {
        tracing::info!(app = %app_id, devices = udids.len(), state = %next, "device licenses go back");
        store
            .set_license_states(&app_id, &udids, next, None, now)
            .await?;
    }
    let released: Vec<UserLicenseRecord> =
        plan_users(&user_licenses, effective, &installs, requested)
            .into_iter()
            .map(|(app_id, user_id)| UserLicenseRecord {
                app_id,
                user_id,
                state: LicenseState::Releasing,
                event_id: None,
                error: None,
                updated_at: now,
            })
            .collect();
    if !released.is_empty() {
        store.put_user_licenses(&released).await?;
    }
    send(state, apps).await?;
    follow(state, apps).await
}

async fn uninstall(
    state: &ServerState,
    apps: &HashMap<String, AppRecord>,
    steps: Vec<UninstallStep>,
) -> ServerResult<()> {
    let now = state.clock.now();
    let mut rows = Vec::new();
    let mut commands = Vec::new();
    for step in steps {
        let (app_id, udid, status, reason) = match step {
            UninstallStep::Remove { app_id, udid } => {
                let Some(bundle) = apps.get(&app_id).and_then(|a| a.bundle_id.clone()) else {
                    continue;
                };
                let command = Command::RemoveApplication(RemoveApplication { identifier: bundle });
                commands.push(NewCommand::new(&udid, command, Some(app_id.clone()), now)?);
                (app_id, udid, InstallStatus::Removing, None)
            }
            UninstallStep::NotApplicable { app_id, udid } => (
                app_id,
                udid,
                InstallStatus::NotApplicable,
                Some(MACOS_UNINSTALL.to_owned()),
            ),
        };
        rows.push(InstallRecord {
            app_id,
            udid,
            status,
            device_status: None,
            version: None,
            reason,
            updated_at: now,
            since: None,
        });
    }
    if !commands.is_empty() {
        state.store.enqueue(&commands).await?;
        state.wake_for(&commands);
    }
    if !rows.is_empty() {
        state.store.set_installs(&rows).await?;
    }
    Ok(())
}

fn request(app: &AppRecord, serials: Vec<String>, users: Vec<String>) -> ManageAssetsRequest {
    ManageAssetsRequest {
        assets: vec![RequestAsset {
            adam_id: app.adam_id.to_string(),
            pricing_param: app.pricing_param.clone(),
        }],
        serial_numbers: serials,
        client_user_ids: users,
    }
}

/// Asks Apple to disassociate what is marked to go back and has no event yet.
async fn send(state: &ServerState, apps: &HashMap<String, AppRecord>) -> ServerResult<()> {
    let store = state.store.as_ref();
    let going = |s: LicenseState| matches!(s, LicenseState::Releasing | LicenseState::Revoking);
    let mut devices: BTreeMap<(String, LicenseState), Vec<(Udid, SerialNumber)>> = BTreeMap::new();
    for l in store.licenses().await? {
        if going(l.state) && l.event_id.is_none() {
            devices
                .entry((l.app_id.clone(), l.state))
                .or_default()
                .push((l.udid, l.serial_number));
        }
    }
    for ((app_id, next), list) in devices {
        let Some(app) = apps.get(&app_id) else {
            continue;
        };
        let Some(token) = store.token(&app.token_id).await? else {
            continue;
        };
        let limit = state
            .apple
            .limits(&token.secret)
            .await
            .max_serial_numbers
            .max(1);
        for chunk in list.chunks(limit) {
            let serials = chunk.iter().map(|(_, s)| s.0.clone()).collect();
            match state
                .apple
                .disassociate(&token.secret, &request(app, serials, Vec::new()))
                .await
            {
                Ok(event) => {
                    let udids: Vec<Udid> = chunk.iter().map(|(u, _)| u.clone()).collect();
                    store
                        .set_license_states(
                            &app_id,
                            &udids,
                            next,
                            Some(&event.event_id),
                            state.clock.now(),
                        )
                        .await?;
                }
                Err(e) => tracing::warn!(error = %e, "giving licenses back failed; will retry"),
            }
        }
    }
    let vpp_users = store.vpp_users().await?;
    let mut users: BTreeMap<String, Vec<UserLicenseRecord>> = BTreeMap::new();
    for l in store.user_licenses().await? {
        if going(l.state) && l.event_id.is_none() {
            users.entry(l.app_id.clone()).or_default().push(l);
        }
    }
    for (app_id, mut rows) in users {
        let Some(app) = apps.get(&app_id) else {
            continue;
        };
        let Some(token) = store.token(&app.token_id).await? else {
            continue;
        };
        let clients: Vec<String> = rows
            .iter()
            .filter_map(|l| {
                vpp_users
                    .iter()
                    .find(|u| u.user_id == l.user_id && u.token_id == app.token_id)
                    .map(|u| u.client_user_id.clone())
            })
            .collect();
        match state
            .apple
            .disassociate(&token.secret, &request(app, Vec::new(), clients))
            .await
        {
            Ok(event) => {
                for row in &mut rows {
                    row.event_id = Some(event.event_id.clone());
                    row.updated_at = state.clock.now();
                }
                store.put_user_licenses(&rows).await?;
            }
            Err(e) => tracing::warn!(error = %e, "giving user licenses back failed; will retry"),
        }
    }
    Ok(())
}

/// Follows disassociation events: released licenses are forgotten, revoked ones kept.
async fn follow(state: &ServerState, apps: &HashMap<String, AppRecord>) -> ServerResult<bool> {
    let store = state.store.as_ref();
    let going = |s: LicenseState| matches!(s, LicenseState::Releasing | LicenseState::Revoking);
    let mut events: BTreeMap<(String, String), EventItems> = BTreeMap::new();
    for l in store.licenses().await? {
        if let (true, Some(event)) = (going(l.state), &l.event_id) {
            let entry = events.entry((l.app_id.clone(), event.clone())).or_default();
            if l.state == LicenseState::Releasing {
                entry.released.push(l.udid);
            } else {
                entry.revoked.push(l.udid);
            }
        }
    }
    for l in store.user_licenses().await? {
        if let (true, Some(event)) = (going(l.state), l.event_id.clone()) {
            events
                .entry((l.app_id.clone(), event))
                .or_default()
                .users
                .push(l);
        }
    }
    let mut pending = false;
    let mut touched = BTreeSet::new();
    for ((app_id, event_id), items) in events {
        let EventItems {
            released,
            revoked,
            mut users,
        } = items;
        let Some(app) = apps.get(&app_id) else {
            continue;
        };
        let Some(token) = store.token(&app.token_id).await? else {
            continue;
        };
        match crate::engine::events::poll(state, &token.secret, &event_id).await {
            Ok(None) => {
                pending = true;
                continue;
            }
            Ok(Some(s)) if s.event_status == EventStatus::Pending => {
                pending = true;
                continue;
            }
            Ok(Some(_)) => {}
            Err(e) => {
                tracing::warn!(error = %e, "event status unavailable");
                pending = true;
                continue;
            }
        }
        let now = state.clock.now();
        store.delete_licenses(&app_id, &released).await?;
        if !revoked.is_empty() {
            store
                .set_license_states(&app_id, &revoked, LicenseState::Revoked, None, now)
                .await?;
        }
        let (gone, kept): (Vec<_>, Vec<_>) = users
            .drain(..)
            .partition(|l| l.state == LicenseState::Releasing);
        let gone: Vec<String> = gone.into_iter().map(|l| l.user_id).collect();
        store.delete_user_licenses(&app_id, &gone).await?;
        let kept: Vec<UserLicenseRecord> = kept
            .into_iter()
            .map(|l| UserLicenseRecord {
                state: LicenseState::Revoked,
                event_id: None,
                updated_at: now,
                ..l
            })
            .collect();
        store.put_user_licenses(&kept).await?;
        touched.insert(app_id);
        state.poke_reconciler();
    }
    for app_id in touched {
        if let Some(app) = apps.get(&app_id) {
            crate::engine::license_pool::refresh_counts(state, app).await;
        }
    }
    Ok(pending)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Timestamp;
    use crate::store::Candidate;
    use orchard_protocol::command::ManagedAppStatus;

    fn license(udid: &str, state: LicenseState) -> LicenseRecord {
        LicenseRecord {
            app_id: "app".into(),
            udid: udid.into(),
            serial_number: format!("SN-{udid}").into(),
            state,
            event_id: None,
            error: None,
            updated_at: Timestamp::UNIX_EPOCH,
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
            updated_at: Timestamp::UNIX_EPOCH,
            since: None,
        }
    }

    fn effective(udid: &str, intent: Intent, license: LicenseType, product: &str) -> Effective {
        Effective {
            winner: Candidate {
                intent,
                license_type: license,
                udid: udid.into(),
                serial_number: format!("SN-{udid}").into(),
                user_id: Some("ana".into()),
                app_store_allowed: Some(true),
                product_name: Some(product.into()),
                ..Candidate::example()
            },
            overridden: Vec::new(),
        }
    }

    fn maps<'a>(
        effective: &'a [Effective],
        installs: &'a [InstallRecord],
    ) -> (EffectiveMap<'a>, Installs<'a>) {
        (
            effective
                .iter()
                .map(|e| ((e.winner.app_id.as_str(), &e.winner.udid), e))
                .collect(),
            installs
                .iter()
                .map(|r| ((r.app_id.as_str(), &r.udid), r))
                .collect(),
        )
    }

    /// (case, applying assignment, install row, expected)
    type Case = (
        &'static str,
        Option<Effective>,
        Option<InstallRecord>,
        Option<LicenseState>,
    );

    #[test]
    fn device_license_give_back_table() {
        use Intent::{Available, Required, Uninstall};
        use LicenseType::{Device, User};
        let iphone = "iPhone15,2";
        let mac = "Mac14,2";
        // (case, applying assignment, install row, expected)
        let cases: Vec<Case> = vec![
            (
                "still required",
                Some(effective("d", Required, Device, iphone)),
                None,
                None,
            ),
            (
                "no assignment reaches it",
                None,
                None,
                Some(LicenseState::Releasing),
            ),
            (
                "migrated to user licensing",
                Some(effective("d", Required, User, iphone)),
                None,
                Some(LicenseState::Releasing),
            ),
            (
                "only available",
                Some(effective("d", Available, Device, iphone)),
                None,
                Some(LicenseState::Releasing),
            ),
            (
                "uninstall, app still there",
                Some(effective("d", Uninstall, Device, iphone)),
                Some(install("d", InstallStatus::Removing, None)),
                None,
            ),
            (
                "uninstall, app removed",
                Some(effective("d", Uninstall, Device, iphone)),
                Some(install("d", InstallStatus::Removed, None)),
                Some(LicenseState::Releasing),
            ),
            (
                "uninstall on a Mac keeps it",
                Some(effective("d", Uninstall, Device, mac)),
                Some(install("d", InstallStatus::NotApplicable, None)),
                None,
            ),
            (
                "user declined the install",
                Some(effective("d", Required, Device, iphone)),
                Some(install(
                    "d",
                    InstallStatus::Failed,
                    Some(ManagedAppStatus::UserRejected),
                )),
                Some(LicenseState::Revoking),
            ),
            (
                "install timed out",
                Some(effective("d", Required, Device, iphone)),
                Some(install(
                    "d",
                    InstallStatus::Failed,
                    Some(ManagedAppStatus::Installing),
                )),
                Some(LicenseState::Revoking),
            ),
            (
                "installed",
                Some(effective("d", Required, Device, iphone)),
                Some(install(
                    "d",
                    InstallStatus::Installed,
                    Some(ManagedAppStatus::Managed),
                )),
                None,
            ),
        ];
        for (case, e, row, expected) in cases {
            let effective: Vec<Effective> = e.into_iter().collect();
            let installs: Vec<InstallRecord> = row.into_iter().collect();
            let (by_pair, by_row) = maps(&effective, &installs);
            let licenses = [license("d", LicenseState::Associated)];
            let plan = plan_devices(&licenses, &by_pair, &by_row, &HashSet::new());
            assert_eq!(plan.first().map(|(_, _, s)| *s), expected, "{case}");
        }
        // Licenses not yet (or no longer) associated are left alone.
        let (by_pair, by_row) = maps(&[], &[]);
        for state in [
            LicenseState::Pending,
            LicenseState::Associating,
            LicenseState::Revoked,
            LicenseState::Failed,
        ] {
            assert!(
                plan_devices(&[license("d", state)], &by_pair, &by_row, &HashSet::new()).is_empty()
            );
        }
    }

    #[test]
    fn user_license_goes_when_no_device_of_the_user_needs_it() {
        let licenses = [UserLicenseRecord {
            app_id: "app".into(),
            user_id: "ana".into(),
            state: LicenseState::Associated,
            event_id: None,
            error: None,
            updated_at: Timestamp::UNIX_EPOCH,
        }];
        let needed = [effective(
            "d",
            Intent::Required,
            LicenseType::User,
            "iPhone15,2",
        )];
        let (_, none) = maps(&[], &[]);
        let asked = HashSet::new();
        assert!(plan_users(&licenses, &needed, &none, &asked).is_empty());
        let migrated = [effective(
            "d",
            Intent::Required,
            LicenseType::Device,
            "iPhone15,2",
        )];
        assert_eq!(
            plan_users(&licenses, &migrated, &none, &asked),
            vec![("app".to_owned(), "ana".to_owned())]
        );
        assert_eq!(
            plan_users(&licenses, &[], &none, &asked).len(),
            1,
            "left every group"
        );
        // An Available app keeps its license once the user asked for it.
        let offered = [effective(
            "d",
            Intent::Available,
            LicenseType::User,
            "iPhone15,2",
        )];
        assert_eq!(plan_users(&licenses, &offered, &none, &asked).len(), 1);
        let asked = HashSet::from([("app".to_owned(), Udid::from("d"))]);
        assert!(plan_users(&licenses, &offered, &none, &asked).is_empty());
    }

    #[test]
    fn uninstall_removes_from_ios_and_reports_macos() {
        let effective = [
            effective(
                "phone",
                Intent::Uninstall,
                LicenseType::Device,
                "iPhone15,2",
            ),
            effective("mac", Intent::Uninstall, LicenseType::Device, "Mac14,2"),
            effective(
                "never",
                Intent::Uninstall,
                LicenseType::Device,
                "iPhone15,2",
            ),
        ];
        let installs = [
            install(
                "phone",
                InstallStatus::Installed,
                Some(ManagedAppStatus::Managed),
            ),
            install(
                "mac",
                InstallStatus::Installed,
                Some(ManagedAppStatus::Managed),
            ),
        ];
        let (_, rows) = maps(&effective, &installs);
        assert_eq!(
            plan_uninstalls(&effective, &rows),
            vec![
                UninstallStep::Remove {
                    app_id: "app".into(),
                    udid: "phone".into()
                },
                UninstallStep::NotApplicable {
                    app_id: "app".into(),
                    udid: "mac".into()
                },
            ]
        );
    }
}
