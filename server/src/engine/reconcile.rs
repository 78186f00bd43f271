//! The reconciler: a sans-IO core that compares what assignments ask for with the
//! licenses held and decides what to do, and the thin shell that runs it after every
//! relevant change, follows Apple's asynchronous events and queues installs.
//!
//! Order of service when licenses are short: targets are served in the order they
//! joined the assignment (the later of group join and assignment creation), ties by
//! UDID. The rest are reported "license assignment failed: no licenses available" and
//! are served without admin action once licenses free up.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use orchard_protocol::command::{Command, InstallApplication};
use orchard_protocol::{SerialNumber, Udid};

use crate::apple::{EventStatus, ManageAssetsRequest, RequestAsset};
use crate::clock::Timestamp;
use crate::engine::license_pool::{
    LICENSE_ONLY, NO_LICENSES, NOT_DEVICE_ASSIGNABLE, failure_reason, refresh_counts, wanted,
};
use crate::engine::precedence::Effective;
use crate::error::ServerResult;
use crate::state::ServerState;
use crate::store::{
    AppRecord, AssociationOutcome, InstallRecord, InstallStatus, LicenseRecord, LicenseState,
    LicenseType, NewCommand, Target, UserTarget,
};

/// What the reconciler works on, from the applying assignments.
#[derive(Debug, Default)]
pub struct PlanTargets {
    /// Required, device-licensed, in service order.
    pub device: Vec<Target>,
    /// Required, user-licensed, in service order.
    pub user: Vec<UserTarget>,
    /// (app, device, reason) for targets that cannot apply.
    pub not_applicable: Vec<(String, Udid, &'static str)>,
}

/// Splits the applying assignments into what each part of the engine serves (sans-IO):
/// Required targets, and Available ones the device's user asked for.
pub fn targets(effective: &[Effective], requested: &HashSet<(String, Udid)>) -> PlanTargets {
    let mut out = PlanTargets::default();
    for e in effective {
        let c = &e.winner;
        if !wanted(c, requested) || !c.active {
            continue;
        }
        if let Err(reason) = crate::engine::applicability::check(c) {
            out.not_applicable
                .push((c.app_id.clone(), c.udid.clone(), reason));
            continue;
        }
        match c.license_type {
            LicenseType::Device => out.device.push(Target {
                app_id: c.app_id.clone(),
                udid: c.udid.clone(),
                serial_number: c.serial_number.clone(),
                joined_at: c.joined_at,
                install: c.install,
            }),
            LicenseType::User => out.user.push(UserTarget {
                app_id: c.app_id.clone(),
                user_id: c.user_id.clone(),
                udid: c.udid.clone(),
                joined_at: c.joined_at,
                single_app_mode: c.single_app_mode,
                app_store_allowed: c.app_store_allowed,
                install: c.install,
            }),
        }
    }
    out
}

/// Reports targets that cannot apply, unless already reported so.
async fn write_not_applicable(
    state: &ServerState,
    rows: &[(String, Udid, &'static str)],
) -> ServerResult<()> {
    let now = state.clock.now();
    // One read per app, not per device.
    let wanted: HashMap<(&str, &Udid), &str> = rows
        .iter()
        .map(|(a, u, why)| ((a.as_str(), u), *why))
        .collect();
    let mut reported: HashSet<(String, Udid)> = HashSet::new();
    for app_id in rows.iter().map(|(a, _, _)| a).collect::<HashSet<_>>() {
        for r in state.store.installs_of_app(app_id).await? {
            if r.reason.is_some()
                && wanted.get(&(r.app_id.as_str(), &r.udid)).copied() == r.reason.as_deref()
            {
                reported.insert((r.app_id, r.udid));
            }
        }
    }
    let mut out = Vec::new();
    for (app_id, udid, reason) in rows {
        if reported.contains(&(app_id.clone(), udid.clone())) {
            continue;
        }
        out.push(InstallRecord {
            app_id: app_id.clone(),
            udid: udid.clone(),
            status: InstallStatus::NotApplicable,
            device_status: None,
            version: None,
            reason: Some((*reason).to_owned()),
            updated_at: now,
            since: None,
        });
    }
    if !out.is_empty() {
        state.store.set_installs(&out).await?;
    }
    Ok(())
}

/// One decision of the reconciler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Reserve licenses for these devices and ask Apple to associate them.
    Associate {
        /// App.
        app_id: String,
        /// Devices and serials.
        devices: Vec<(Udid, SerialNumber)>,
    },
    /// Record that these devices cannot get a license.
    Refuse {
        /// App.
        app_id: String,
        /// Devices and serials.
        devices: Vec<(Udid, SerialNumber)>,
        /// Why.
        reason: &'static str,
    },
}

/// Decides which targets get licenses (sans-IO). `targets` must be in service order.
pub fn plan(
    targets: &[Target],
    licenses: &[LicenseRecord],
    apps: &HashMap<String, AppRecord>,
) -> Vec<Action> {
    let held: HashMap<(&str, &Udid), &LicenseRecord> = licenses
        .iter()
        .map(|l| ((l.app_id.as_str(), &l.udid), l))
        .collect();
    let mut by_app: BTreeMap<&str, Vec<&Target>> = BTreeMap::new();
    for t in targets {
        by_app.entry(t.app_id.as_str()).or_default().push(t);
    }
    let mut actions = Vec::new();
    for (app_id, targets) in by_app {
        let Some(app) = apps.get(app_id) else {
            continue;
        };
        // Licenses asked for but not yet reflected in Apple's counts.
        let in_flight = licenses
            .iter()
            .filter(|l| {
                l.app_id == app_id
                    && matches!(l.state, LicenseState::Pending | LicenseState::Associating)
            })
            .count() as i64;
        let mut free = (app.counts.available - in_flight).max(0);
        let mut associate = Vec::new();
        let mut refuse = Vec::new();
        for t in targets {
            let device = (t.udid.clone(), t.serial_number.clone());
            match held.get(&(app_id, &t.udid)) {
                Some(l) if l.state == LicenseState::Pending && l.event_id.is_none() => {
                    associate.push(device)
                }
                // Revoked stays revoked until the device comes under an assignment anew.
                Some(l) if l.state == LicenseState::Revoked && t.joined_at > l.updated_at => {
                    if free > 0 && app.device_assignable {
                        free -= 1;
                        associate.push(device);
                    }
                }
                Some(l) if l.state != LicenseState::Failed => {}
                existing => {
                    let already_refused = existing.is_some();
                    if !app.device_assignable {
                        if !already_refused {
                            refuse.push(device);
                        }
                    } else if free > 0 {
                        free -= 1;
                        associate.push(device);
                    } else if !already_refused {
                        refuse.push(device);
                    }
                }
            }
        }
        if !associate.is_empty() {
            actions.push(Action::Associate {
                app_id: app_id.to_owned(),
                devices: associate,
            });
        }
        if !refuse.is_empty() {
            let reason = if app.device_assignable {
                NO_LICENSES
            } else {
                NOT_DEVICE_ASSIGNABLE
            };
            actions.push(Action::Refuse {
                app_id: app_id.to_owned(),
                devices: refuse,
                reason,
            });
        }
    }
    actions
}

/// Runs the reconciler until `shutdown` fires: after every poke, and every
/// `event_poll_interval` while Apple events are pending (else every minute).
pub async fn run(state: ServerState, shutdown: tokio_util::sync::CancellationToken) {
    loop {
        let pending = match run_exclusively(&state).await {
            Ok(pending) => pending,
            Err(e) => {
                tracing::warn!(error = %e, "reconcile failed; retrying");
                true
            }
        };
        let wait = if pending {
            state.options.event_poll_interval
        } else {
            Duration::from_secs(60)
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = state.reconcile.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// One pass, if no other replica is reconciling right now (then: try again soon).
async fn run_exclusively(state: &ServerState) -> ServerResult<bool> {
    let now = state.clock.now();
    if !state
        .store
        .try_lease("reconcile", &state.replica, now, now + RECONCILE_LEASE)
        .await?
    {
        return Ok(true);
    }
    let result = run_once(state).await;
    state
        .store
        .release_lease("reconcile", &state.replica)
        .await?;
    result
}

/// How long one reconcile pass may hold the lease before another replica may take over.
const RECONCILE_LEASE: Duration = Duration::from_secs(120);

/// One pass; returns whether Apple events are still pending.
pub async fn run_once(state: &ServerState) -> ServerResult<bool> {
    let store = state.store.as_ref();
    let candidates = store.assignment_candidates().await?;
    let mut effective = crate::engine::precedence::resolve(&candidates);
    let licenses = store.licenses().await?;
    let tokens = store.tokens(&crate::store::Page::all()).await?;
    // Tokens another MDM owns, or that Apple expired or revoked, are not used.
    let usable: HashSet<&str> = tokens
        .iter()
        .filter(|t| t.external_mdm.is_none() && t.disabled_reason.is_none())
        .map(|t| t.id.as_str())
        .collect();
    let apps: HashMap<String, AppRecord> = store
        .apps(&crate::store::Page::all())
        .await?
        .into_iter()
        .filter(|a| usable.contains(a.token_id.as_str()))
        .map(|a| (a.id.clone(), a))
        .collect();
    let ranks: HashMap<String, crate::engine::token_order::TokenRank> = tokens
        .iter()
        .map(|t| (t.id.clone(), (t.priority, t.created_at)))
        .collect();
    let requested: HashSet<(String, Udid)> = store.app_requests().await?.into_iter().collect();
    let requested = crate::engine::token_order::choose(
        &mut effective,
        &apps,
        &ranks,
        &licenses,
        &store.user_licenses().await?,
        &requested,
    );
    let plan_targets = targets(&effective, &requested);
    write_not_applicable(state, &plan_targets.not_applicable).await?;
    let targets = plan_targets.device;
    for action in plan(&targets, &licenses, &apps) {
        match action {
            Action::Associate { app_id, devices } => {
                let Some(app) = apps.get(&app_id) else {
                    continue;
                };
                associate(state, app, &devices).await?;
            }
            Action::Refuse {
                app_id,
                devices,
                reason,
            } => {
                let now = state.clock.now();
                let rows: Vec<LicenseRecord> = devices
                    .into_iter()
                    .map(|(udid, serial_number)| LicenseRecord {
                        app_id: app_id.clone(),
                        udid,
                        serial_number,
                        state: LicenseState::Failed,
                        event_id: None,
                        error: Some(reason.to_owned()),
                        updated_at: now,
                    })
                    .collect();
                store.reserve_licenses(&rows).await?;
            }
        }
    }
    let license_only: HashSet<(String, Udid)> = targets
        .iter()
        .filter(|t| !t.install)
        .map(|t| (t.app_id.clone(), t.udid.clone()))
        .collect();
    let mut pending = follow_events(state, &apps, &license_only).await?;
    let licenses = store.licenses().await?;
    let mut device_in_flight: HashMap<String, i64> = HashMap::new();
    for l in licenses
        .iter()
        .filter(|l| matches!(l.state, LicenseState::Pending | LicenseState::Associating))
    {
        *device_in_flight.entry(l.app_id.clone()).or_default() += 1;
    }
    pending |= crate::engine::user_licensing::run_once(
        state,
        &apps,
        &device_in_flight,
        &plan_targets.user,
    )
    .await?;
    pending |= crate::engine::reclaim::run_once(state, &apps, &effective, &requested).await?;
    Ok(pending)
}

async fn associate(
    state: &ServerState,
    app: &AppRecord,
    devices: &[(Udid, SerialNumber)],
) -> ServerResult<()> {
    let store = state.store.as_ref();
    let now = state.clock.now();
    // Reserve first, so a crash between here and Apple's answer cannot lose track of a license.
    let rows: Vec<LicenseRecord> = devices
        .iter()
        .map(|(udid, serial)| LicenseRecord {
            app_id: app.id.clone(),
            udid: udid.clone(),
            serial_number: serial.clone(),
            state: LicenseState::Pending,
            event_id: None,
            error: None,
            updated_at: now,
        })
        .collect();
    store.reserve_licenses(&rows).await?;
    let Some(token) = store.token(&app.token_id).await? else {
        return Ok(());
    };
    let limit = state
        .apple
        .limits(&token.secret)
        .await
        .max_serial_numbers
        .max(1);
    for chunk in devices.chunks(limit) {
        let udids: Vec<Udid> = chunk.iter().map(|(u, _)| u.clone()).collect();
        let request = ManageAssetsRequest {
            assets: vec![RequestAsset {
                adam_id: app.adam_id.to_string(),
                pricing_param: app.pricing_param.clone(),
            }],
            serial_numbers: chunk.iter().map(|(_, s)| s.0.clone()).collect(),
            client_user_ids: Vec::new(),
        };
        match state.apple.associate(&token.secret, &request).await {
            Ok(event) => {
                tracing::info!(app = %app.adam_id, devices = chunk.len(), event = %event.event_id, "licenses requested");
                store
                    .mark_associating(&app.id, &udids, &event.event_id, state.clock.now())
                    .await?;
            }
            Err(e) => {
                tracing::warn!(app = %app.adam_id, error = %e, "license association failed; will retry");
                store
                    .mark_license_error(&app.id, &udids, &e.to_string(), state.clock.now())
                    .await?;
                if !e.is_transient() {
                    return Err(e.into());
                }
            }
        }
    }
    Ok(())
}

/// Polls Apple for every pending association event; on completion records the outcome
/// and queues the installs. Returns whether events are still pending.
async fn follow_events(
    state: &ServerState,
    apps: &HashMap<String, AppRecord>,
    license_only: &HashSet<(String, Udid)>,
) -> ServerResult<bool> {
    let store = state.store.as_ref();
    let licenses = store.licenses().await?;
    let mut events: BTreeMap<(String, String), Vec<&LicenseRecord>> = BTreeMap::new();
    for l in licenses
        .iter()
        .filter(|l| l.state == LicenseState::Associating)
    {
        if let Some(event) = &l.event_id {
            events
                .entry((l.app_id.clone(), event.clone()))
                .or_default()
                .push(l);
        }
    }
    let mut still_pending = licenses
        .iter()
        .any(|l| l.state == LicenseState::Pending && l.error.is_some());
    let mut touched: HashSet<String> = HashSet::new();
    for ((app_id, event_id), rows) in events {
        let Some(app) = apps.get(&app_id) else {
            continue;
        };
        let Some(token) = store.token(&app.token_id).await? else {
            continue;
        };
        let status = match state.apple.event_status(&token.secret, &event_id).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(event = %event_id, error = %e, "event status unavailable");
                still_pending = true;
                continue;
            }
        };
        if status.event_status == EventStatus::Pending {
            still_pending = true;
            continue;
        }
        let mut failed_serials: HashMap<String, String> = HashMap::new();
        for failure in &status.failures {
            let reason = failure_reason(failure.error_number, failure.error_message.as_deref());
            for serial in failure
                .error_info
                .iter()
                .flat_map(|i| i.serial_numbers.iter())
            {
                failed_serials.insert(serial.clone(), reason.clone());
            }
        }
        let whole_event_failed = status.event_status == EventStatus::Failed;
        let now = state.clock.now();
        let mut outcome = AssociationOutcome {
            app_id: app_id.clone(),
            associated: Vec::new(),
            failed: Vec::new(),
            installs: Vec::new(),
            install_rows: Vec::new(),
            now,
        };
        for l in rows {
            let failure = failed_serials
                .get(l.serial_number.as_str())
                .cloned()
                .or_else(|| {
                    whole_event_failed.then(|| {
                        let first = status.failures.first();
                        failure_reason(
                            first.and_then(|f| f.error_number),
                            first.and_then(|f| f.error_message.as_deref()),
                        )
                    })
                });
            match failure {
                Some(reason) => {
                    outcome.install_rows.push(install_row(
                        app,
                        &l.udid,
                        InstallStatus::LicenseFailed,
                        Some(reason.clone()),
                        now,
                    ));
                    outcome.failed.push((l.udid.clone(), reason));
                }
                None if license_only.contains(&(app_id.clone(), l.udid.clone())) => {
                    outcome.install_rows.push(install_row(
                        app,
                        &l.udid,
                        InstallStatus::Licensed,
                        Some(LICENSE_ONLY.to_owned()),
                        now,
                    ));
                    outcome.associated.push(l.udid.clone());
                }
                None => {
                    let command =
                        Command::InstallApplication(InstallApplication::vpp(app.adam_id, 1));
                    outcome.installs.push(NewCommand::new(
                        &l.udid,
                        command,
                        Some(app.id.clone()),
                        now,
                    )?);
                    outcome.install_rows.push(install_row(
                        app,
                        &l.udid,
                        InstallStatus::Queued,
                        None,
                        now,
                    ));
                    outcome.associated.push(l.udid.clone());
                }
            }
        }
        tracing::info!(app = %app.adam_id, event = %event_id, ok = outcome.associated.len(), failed = outcome.failed.len(), "association finished");
        store.finish_association(&outcome).await?;
        state.wake_for(&outcome.installs);
        touched.insert(app_id);
    }
    for app_id in touched {
        if let Some(app) = apps.get(&app_id) {
            refresh_counts(state, app).await;
        }
    }
    Ok(still_pending)
}

fn install_row(
    app: &AppRecord,
    udid: &Udid,
    status: InstallStatus,
    reason: Option<String>,
    now: Timestamp,
) -> InstallRecord {
    InstallRecord {
        app_id: app.id.clone(),
        udid: udid.clone(),
        status,
        device_status: None,
        version: None,
        reason,
        updated_at: now,
        since: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Intent, LicenseCounts};
    use orchard_protocol::AdamId;

    fn app(available: i64, device_assignable: bool) -> AppRecord {
        AppRecord {
            id: "a".into(),
            token_id: "t".into(),
            adam_id: AdamId(1),
            pricing_param: "STDQ".into(),
            product_type: "App".into(),
            name: None,
            bundle_id: Some("b".into()),
            version: Some("1".into()),
            platforms: vec![],
            device_assignable,
            counts: LicenseCounts {
                total: available,
                assigned: 0,
                available,
                retired: 0,
            },
            updated_at: Timestamp::UNIX_EPOCH,
            install_timeout_seconds: None,
            store_url: None,
            minimum_os_version: None,
        }
    }

    fn targets(n: usize) -> Vec<Target> {
        (0..n)
            .map(|i| Target {
                app_id: "a".into(),
                udid: Udid(format!("U{i}")),
                serial_number: SerialNumber(format!("S{i}")),
                joined_at: format!("2026-01-01T00:00:{i:02}Z").parse().unwrap(),
                install: true,
            })
            .collect()
    }

    fn license(i: usize, state: LicenseState, event: Option<&str>) -> LicenseRecord {
        LicenseRecord {
            app_id: "a".into(),
            udid: Udid(format!("U{i}")),
            serial_number: SerialNumber(format!("S{i}")),
            state,
            event_id: event.map(String::from),
            error: None,
            updated_at: Timestamp::UNIX_EPOCH,
        }
    }

    fn apps(a: AppRecord) -> HashMap<String, AppRecord> {
        HashMap::from([(a.id.clone(), a)])
    }

    fn udids(action: &Action) -> Vec<String> {
        match action {
            Action::Associate { devices, .. } | Action::Refuse { devices, .. } => {
                devices.iter().map(|(u, _)| u.0.clone()).collect()
            }
        }
    }

    #[test]
    fn every_target_gets_a_license_when_enough_are_free() {
        let actions = plan(&targets(5), &[], &apps(app(10, true)));
        assert_eq!(actions.len(), 1);
        assert_eq!(udids(&actions[0]), ["U0", "U1", "U2", "U3", "U4"]);
    }

    #[test]
    fn oversubscription_serves_the_earliest_and_refuses_the_rest() {
        let actions = plan(&targets(5), &[], &apps(app(2, true)));
        assert_eq!(actions.len(), 2);
        assert!(matches!(actions[0], Action::Associate { .. }));
        assert_eq!(udids(&actions[0]), ["U0", "U1"]);
        assert!(matches!(
            actions[1],
            Action::Refuse {
                reason: NO_LICENSES,
                ..
            }
        ));
        assert_eq!(udids(&actions[1]), ["U2", "U3", "U4"]);
    }

    #[test]
    fn licenses_in_flight_are_not_counted_twice() {
        // 3 free at Apple, 2 already being associated: only 1 more may be asked for.
        let held = [
            license(0, LicenseState::Associating, Some("e")),
            license(1, LicenseState::Pending, Some("e")),
        ];
        let actions = plan(&targets(4), &held, &apps(app(3, true)));
        assert_eq!(udids(&actions[0]), ["U2"]);
        assert_eq!(udids(&actions[1]), ["U3"]);
    }

    #[test]
    fn held_licenses_need_nothing() {
        let held: Vec<_> = (0..3)
            .map(|i| license(i, LicenseState::Associated, Some("e")))
            .collect();
        assert!(plan(&targets(3), &held, &apps(app(0, true))).is_empty());
    }

    #[test]
    fn reservations_apple_never_accepted_are_retried() {
        let held = [license(0, LicenseState::Pending, None)];
        let actions = plan(&targets(1), &held, &apps(app(0, true)));
        assert_eq!(
            actions,
            vec![Action::Associate {
                app_id: "a".into(),
                devices: vec![(Udid("U0".into()), SerialNumber("S0".into()))]
            }]
        );
    }

    #[test]
    fn refused_targets_are_served_when_licenses_free_up_and_not_refused_again() {
        let held = [
            license(0, LicenseState::Failed, None),
            license(1, LicenseState::Failed, None),
        ];
        assert!(plan(&targets(2), &held, &apps(app(0, true))).is_empty());
        let actions = plan(&targets(2), &held, &apps(app(1, true)));
        assert_eq!(actions.len(), 1);
        assert_eq!(udids(&actions[0]), ["U0"]);
    }

    #[test]
    fn apps_that_are_not_device_assignable_are_refused_with_that_reason() {
        let actions = plan(&targets(1), &[], &apps(app(5, false)));
        assert!(matches!(
            actions[0],
            Action::Refuse {
                reason: NOT_DEVICE_ASSIGNABLE,
                ..
            }
        ));
    }

    fn candidate(
        udid: &str,
        intent: Intent,
        license: LicenseType,
        os: &str,
    ) -> crate::store::Candidate {
        crate::store::Candidate {
            assignment_id: "as".into(),
            app_id: "a".into(),
            intent,
            license_type: license,
            udid: udid.into(),
            user_id: Some("ana".into()),
            os_version: Some(os.into()),
            product_name: Some("iPhone5,1".into()),
            ..crate::store::Candidate::example()
        }
    }

    #[test]
    fn targets_table() {
        use Intent::{Available, Required, Uninstall};
        use LicenseType::{Device, User};
        let effective: Vec<Effective> = [
            candidate("required-device", Required, Device, "17.5"),
            candidate("required-user", Required, User, "17.5"),
            candidate("available-asked", Available, Device, "17.5"),
            candidate("available-not-asked", Available, Device, "17.5"),
            candidate("uninstall", Uninstall, Device, "17.5"),
            candidate("too-old", Required, Device, "8.4"),
        ]
        .into_iter()
        .map(|winner| Effective {
            winner,
            overridden: vec![],
        })
        .collect();
        let requested = HashSet::from([("a".to_owned(), Udid::from("available-asked"))]);
        let t = super::targets(&effective, &requested);
        let devices: Vec<&str> = t.device.iter().map(|t| t.udid.as_str()).collect();
        assert_eq!(devices, ["required-device", "available-asked"]);
        let users: Vec<&str> = t.user.iter().map(|t| t.udid.as_str()).collect();
        assert_eq!(users, ["required-user"]);
        assert_eq!(
            t.not_applicable,
            vec![(
                "a".to_owned(),
                Udid::from("too-old"),
                crate::engine::applicability::IOS_DEVICE_MINIMUM
            )]
        );
    }
}
