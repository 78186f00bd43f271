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

use crate::apple::{DUPLICATE_SERIAL_NUMBERS, EventStatus, ManageAssetsRequest, RequestAsset};
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
    pub not_applicable: Vec<(String, Udid, String)>,
    /// (app, device, reason) for targets whose token cannot be used now.
    pub blocked: Vec<(String, Udid, String)>,
}

/// Splits the applying assignments into what each part of the engine serves (sans-IO):
/// Required targets, and Available ones the device's user asked for. `apps` holds every
/// app, `blocked_tokens` why a token cannot be used: such targets are reported, not
/// skipped.
pub fn targets(
    effective: &[Effective],
    requested: &HashSet<(String, Udid)>,
    apps: &HashMap<String, AppRecord>,
    blocked_tokens: &HashMap<String, String>,
) -> PlanTargets {
    let mut out = PlanTargets::default();
    for e in effective {
        let c = &e.winner;
        if !wanted(c, requested) || !c.active {
            continue;
        }
        let Some(app) = apps.get(&c.app_id) else {
            continue;
        };
        let applies = crate::engine::applicability::check(c)
            .map_err(str::to_owned)
            .and_then(|()| crate::engine::applicability::runs_on(c, app));
        if let Err(reason) = applies {
            out.not_applicable
                .push((c.app_id.clone(), c.udid.clone(), reason));
            continue;
        }
        if let Some(reason) = blocked_tokens.get(&app.token_id) {
            out.blocked
                .push((c.app_id.clone(), c.udid.clone(), reason.clone()));
            continue;
        }
        match c.license_type {
            LicenseType::Device => out.device.push(Target {
                app_id: c.app_id.clone(),
                udid: c.udid.clone(),
                serial_number: c.serial_number.clone(),
                joined_at: c.joined_at,
                install: c.install,
                enrolled_at: c.enrolled_at,
                last_seen_at: c.last_seen_at,
            }),
            LicenseType::User => out.user.push(UserTarget {
                app_id: c.app_id.clone(),
                user_id: c.user_id.clone(),
                udid: c.udid.clone(),
                joined_at: c.joined_at,
                single_app_mode: c.single_app_mode,
                app_store_allowed: c.app_store_allowed,
                install: c.install,
                account_hash: c.account_hash.clone(),
            }),
        }
    }
    out
}

/// Reports targets that get no license with `status` and their reason, unless already
/// reported so. With `keep_progress`, a target that got further (installed, licensed,
/// on its way) keeps its status: a token that stops working takes nothing back.
async fn report_unserved(
    state: &ServerState,
    rows: &[(String, Udid, String)],
    status: InstallStatus,
    keep_progress: bool,
) -> ServerResult<()> {
    let now = state.clock.now();
    // One read per app, not per device.
    let wanted: HashMap<(&str, &Udid), &str> = rows
        .iter()
        .map(|(a, u, why)| ((a.as_str(), u), why.as_str()))
        .collect();
    let mut settled: HashSet<(String, Udid)> = HashSet::new();
    for app_id in rows.iter().map(|(a, _, _)| a).collect::<HashSet<_>>() {
        for r in state.store.installs_of_app(app_id).await? {
            let Some(why) = wanted.get(&(r.app_id.as_str(), &r.udid)).copied() else {
                continue;
            };
            let same = r.status == status && r.reason.as_deref() == Some(why);
            let further = keep_progress
                && !matches!(
                    r.status,
                    InstallStatus::LicenseFailed | InstallStatus::NotApplicable
                );
            if same || further {
                settled.insert((r.app_id, r.udid));
            }
        }
    }
    let out: Vec<InstallRecord> = rows
        .iter()
        .filter(|(app_id, udid, _)| !settled.contains(&(app_id.clone(), udid.clone())))
        .map(|(app_id, udid, reason)| InstallRecord {
            app_id: app_id.clone(),
            udid: udid.clone(),
            status,
            device_status: None,
            version: None,
            reason: Some(reason.clone()),
            updated_at: now,
            since: None,
        })
        .collect();
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
        reason: String,
    },
    /// A stale record of a device gives its license to the newer enrollment of the
    /// same serial number (a device erased and enrolled again under a new UDID). Apple
    /// holds the license by serial number, so asking again for the newer record costs
    /// no license.
    Move {
        /// App.
        app_id: String,
        /// The stale record.
        from: Udid,
        /// The newer record and the shared serial number.
        to: (Udid, SerialNumber),
    },
}

/// How the reason of a serial number conflict begins.
const SERIAL_CONFLICT: &str = "license assignment failed: serial number ";

/// The reason given to a device whose serial number another device record holds.
pub fn serial_conflict(serial: &SerialNumber, owner: &Udid) -> String {
    format!(
        "{SERIAL_CONFLICT}{serial} is also the serial number of device {owner}; Apple licenses a serial number once, so only one of them is served. Delete the device record that is no longer in use (a device erased and enrolled again has a new record), or correct the serial number"
    )
}

/// Who is served for each serial number of an app's targets (sans-IO): the device
/// record holding the serial's license, unless it is a stale record of the same
/// device (enrolled before the newest record of the serial and not heard from since),
/// which then gives way; otherwise the newest enrollment. Returns the owners and the
/// licenses to move.
fn serial_owners<'a>(
    app_id: &str,
    targets: &[&'a Target],
    licenses: &'a [LicenseRecord],
) -> (HashMap<&'a SerialNumber, Udid>, Vec<Action>) {
    let live = |s: LicenseState| !matches!(s, LicenseState::Failed | LicenseState::Revoked);
    let holders: HashMap<&SerialNumber, &Udid> = licenses
        .iter()
        .filter(|l| l.app_id == app_id && live(l.state))
        .map(|l| (&l.serial_number, &l.udid))
        .collect();
    let mut by_serial: BTreeMap<&SerialNumber, Vec<&Target>> = BTreeMap::new();
    for t in targets {
        by_serial.entry(&t.serial_number).or_default().push(t);
    }
    let mut owners = HashMap::new();
    let mut moves = Vec::new();
    for (serial, group) in by_serial {
        let Some(newest) = group.iter().max_by_key(|t| (t.enrolled_at, &t.udid)) else {
            continue;
        };
        let owner = match holders.get(serial) {
            Some(holder) => match group.iter().find(|t| &t.udid == *holder) {
                Some(stale)
                    if stale.udid != newest.udid && stale.last_seen_at < newest.enrolled_at =>
                {
                    moves.push(Action::Move {
                        app_id: app_id.to_owned(),
                        from: stale.udid.clone(),
                        to: (newest.udid.clone(), serial.clone()),
                    });
                    newest.udid.clone()
                }
                _ => (*holder).clone(),
            },
            None => newest.udid.clone(),
        };
        owners.insert(serial, owner);
    }
    (owners, moves)
}

/// Decides which targets get licenses (sans-IO). `targets` must be in service order.
/// A serial number is served once: see [`serial_owners`].
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
        let (owners, moves) = serial_owners(app_id, &targets, licenses);
        let moved: HashSet<&Udid> = moves
            .iter()
            .filter_map(|m| match m {
                Action::Move { to, .. } => Some(&to.0),
                _ => None,
            })
            .collect();
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
        let mut conflicts = Vec::new();
        for t in targets {
            let device = (t.udid.clone(), t.serial_number.clone());
            let existing = held.get(&(app_id, &t.udid));
            if moved.contains(&t.udid) {
                continue;
            }
            if let Some(owner) = owners.get(&t.serial_number).filter(|o| **o != t.udid) {
                let reason = serial_conflict(&t.serial_number, owner);
                let told = existing.is_some_and(|l| {
                    l.state == LicenseState::Failed && l.error.as_deref() == Some(reason.as_str())
                });
                if !told {
                    conflicts.push((device, reason));
                }
                continue;
            }
            match existing {
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
                    // Refused before: said already, unless for a serial conflict that
                    // is over.
                    let already_refused = existing.is_some_and(|l| {
                        !l.error
                            .as_deref()
                            .is_some_and(|e| e.starts_with(SERIAL_CONFLICT))
                    });
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
        actions.extend(moves);
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
                reason: reason.to_owned(),
            });
        }
        for (device, reason) in conflicts {
            actions.push(Action::Refuse {
                app_id: app_id.to_owned(),
                devices: vec![device],
                reason,
            });
        }
    }
    actions
}

/// Runs the reconciler until `shutdown` fires: after every poke, and every
/// `event_poll_interval` while Apple events are pending (else every minute).
pub async fn run(state: ServerState, shutdown: tokio_util::sync::CancellationToken) {
    let mut pruned_at: Option<std::time::Instant> = None;
    loop {
        if pruned_at.is_none_or(|at| at.elapsed() >= PRUNE_EVERY) {
            pruned_at = Some(std::time::Instant::now());
            let before = state.clock.now() - state.options.event_retention;
            match state.store.prune_events(before).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(events = n, %before, "old events forgotten"),
                Err(e) => tracing::warn!(error = %e, "cannot forget old events"),
            }
        }
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

/// How often events past their retention are forgotten.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

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
    let asked = state.poked_at.lock().ok().and_then(|mut p| p.take());
    let started = std::time::Instant::now();
    let result = run_once(state).await;
    let took = started.elapsed();
    crate::telemetry::reconcile_pass(asked.map_or(took, |at| at.elapsed()), took);
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
    // Tokens another MDM owns, that expired, or that Apple refused are not used; their
    // targets are told why.
    let now = state.clock.now();
    let blocked_tokens: HashMap<String, String> = tokens
        .iter()
        .filter_map(|t| {
            crate::apple::token_lifecycle::unusable_reason(t, now).map(|why| (t.id.clone(), why))
        })
        .collect();
    let all_apps: HashMap<String, AppRecord> = store
        .apps(&crate::store::Page::all())
        .await?
        .into_iter()
        .map(|a| (a.id.clone(), a))
        .collect();
    let apps: HashMap<String, AppRecord> = all_apps
        .iter()
        .filter(|(_, a)| !blocked_tokens.contains_key(&a.token_id))
        .map(|(id, a)| (id.clone(), a.clone()))
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
    let plan_targets = targets(&effective, &requested, &all_apps, &blocked_tokens);
    report_unserved(
        state,
        &plan_targets.not_applicable,
        InstallStatus::NotApplicable,
        false,
    )
    .await?;
    report_unserved(
        state,
        &plan_targets.blocked,
        InstallStatus::LicenseFailed,
        true,
    )
    .await?;
    let targets = plan_targets.device;
    let license_only: HashSet<(String, Udid)> = targets
        .iter()
        .filter(|t| !t.install)
        .map(|t| (t.app_id.clone(), t.udid.clone()))
        .collect();
    for action in plan(&targets, &licenses, &apps) {
        match action {
            Action::Associate { app_id, devices } => {
                let Some(app) = apps.get(&app_id) else {
                    continue;
                };
                associate(state, app, &devices, &license_only).await?;
            }
            Action::Move { app_id, from, to } => {
                let Some(app) = apps.get(&app_id) else {
                    continue;
                };
                tracing::info!(app = %app.adam_id, from = %from, to = %to.0, "license moves to the newer enrollment of the serial number");
                // Reserve for the newer record first: a crash in between leaves both
                // rows, and the next pass moves again.
                associate(state, app, std::slice::from_ref(&to), &license_only).await?;
                store.delete_licenses(&app_id, &[from]).await?;
            }
            Action::Refuse {
                app_id,
                devices,
                reason,
            } => {
                let rows = license_rows(
                    &app_id,
                    &devices,
                    LicenseState::Failed,
                    Some(&reason),
                    state.clock.now(),
                );
                store.reserve_licenses(&rows).await?;
            }
        }
    }
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

/// The first batch of an app's licenses: small, so the first devices install while
/// the rest are still being asked for; each next batch is twice as large, up to Apple's
/// `maxSerialNumbers`.
const FIRST_BATCH: usize = 25;

/// Splits `devices` into batches growing from [`FIRST_BATCH`] to `limit`.
fn batches<T: Clone>(devices: &[T], limit: usize) -> Vec<Vec<T>> {
    let mut out = Vec::new();
    let mut size = FIRST_BATCH.min(limit).max(1);
    let mut rest = devices;
    while !rest.is_empty() {
        let (batch, tail) = rest.split_at(size.min(rest.len()));
        out.push(batch.to_vec());
        rest = tail;
        size = (size * 2).min(limit.max(1));
    }
    out
}

/// An Apple event asked for in this pass, followed while the pass goes on.
struct OpenEvent {
    event_id: String,
    rows: Vec<LicenseRecord>,
}

/// Asks Apple for licenses of `devices` in growing batches (a pipeline, never a stage
/// that waits for the whole fleet): each batch is reserved, asked for, and its event
/// followed while the next batches are asked for, so a batch's installs are queued as
/// soon as Apple finishes it.
async fn associate(
    state: &ServerState,
    app: &AppRecord,
    devices: &[(Udid, SerialNumber)],
    license_only: &HashSet<(String, Udid)>,
) -> ServerResult<()> {
    let store = state.store.as_ref();
    let now = state.clock.now();
    // After a refusal or an outage, Apple is asked again later and later, not on every
    // pass; the reservations say so (and keep the reconciler polling until then).
    if !state.apple_backoff.due(&app.id, now) {
        let waiting = "Apple could not take the request; it is asked again shortly";
        let rows = license_rows(&app.id, devices, LicenseState::Pending, Some(waiting), now);
        store.reserve_licenses(&rows).await?;
        return Ok(());
    }
    let Some(token) = store.token(&app.token_id).await? else {
        return Ok(());
    };
    let limit = state
        .apple
        .limits(&token.secret)
        .await
        .max_serial_numbers
        .max(1);
    let mut owned = batches(devices, limit);
    owned.reverse();
    let mut open: Vec<OpenEvent> = Vec::new();
    let mut finished = false;
    while let Some(chunk) = owned.pop() {
        // Reserve first, so a crash between here and Apple's answer cannot lose track
        // of a license.
        let reserved = license_rows(
            &app.id,
            &chunk,
            LicenseState::Pending,
            None,
            state.clock.now(),
        );
        store.reserve_licenses(&reserved).await?;
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
                let at = state.clock.now();
                store
                    .mark_associating(&app.id, &udids, &event.event_id, at)
                    .await?;
                state.apple_backoff.succeeded(&app.id);
                open.push(OpenEvent {
                    rows: reserved
                        .into_iter()
                        .map(|l| LicenseRecord {
                            state: LicenseState::Associating,
                            event_id: Some(event.event_id.clone()),
                            updated_at: at,
                            ..l
                        })
                        .collect(),
                    event_id: event.event_id,
                });
            }
            // Duplicate serial numbers in one request: the devices sharing one are
            // told, the others are asked for again on their own.
            Err(e) if e.error_number() == Some(DUPLICATE_SERIAL_NUMBERS) && chunk.len() > 1 => {
                let mut seen: HashMap<SerialNumber, usize> = HashMap::new();
                for (_, serial) in &chunk {
                    *seen.entry(serial.clone()).or_default() += 1;
                }
                let (shared, rest): (Vec<_>, Vec<_>) = chunk
                    .iter()
                    .cloned()
                    .partition(|(_, s)| seen.get(s).is_some_and(|n| *n > 1));
                tracing::warn!(app = %app.adam_id, devices = shared.len(), "Apple refused duplicate serial numbers");
                refuse_at_apple(state, app, &shared, &e).await?;
                if !rest.is_empty() {
                    owned.push(rest);
                }
            }
            // Apple refused the request for something about its items: halve the
            // batch until the items it refuses are alone, so the rest go through and
            // the refusal is told to the devices it concerns.
            Err(e) if e.about_items() && chunk.len() > 1 => {
                tracing::info!(app = %app.adam_id, devices = chunk.len(), error = %e, "Apple refused a batch; splitting it");
                let (left, right) = chunk.split_at(chunk.len() / 2);
                owned.push(right.to_vec());
                owned.push(left.to_vec());
            }
            Err(e) if e.about_items() => {
                tracing::warn!(app = %app.adam_id, udids = ?udids, error = %e, "Apple refused the license");
                refuse_at_apple(state, app, &chunk, &e).await?;
            }
            Err(e) => {
                let retry_at = state.apple_backoff.failed(&app.id, state.clock.now());
                tracing::warn!(app = %app.adam_id, error = %e, %retry_at, "license association failed; will retry");
                // This batch and the rest wait for the same retry.
                let waiting: Vec<(Udid, SerialNumber)> =
                    chunk.into_iter().chain(owned.drain(..).flatten()).collect();
                let rows = license_rows(
                    &app.id,
                    &waiting,
                    LicenseState::Pending,
                    Some(&e.to_string()),
                    state.clock.now(),
                );
                store.reserve_licenses(&rows).await?;
            }
        }
        finished |= follow_open(state, app, &token.secret, &mut open, license_only).await?;
    }
    if finished {
        refresh_counts(state, app).await;
    }
    Ok(())
}

/// Polls the events of this pass whose poll is due and settles the finished ones;
/// returns whether one finished. The others stay open (a later pass follows them).
async fn follow_open(
    state: &ServerState,
    app: &AppRecord,
    s_token: &str,
    open: &mut Vec<OpenEvent>,
    license_only: &HashSet<(String, Udid)>,
) -> ServerResult<bool> {
    let mut finished = false;
    let mut still_open = Vec::new();
    for event in open.drain(..) {
        match crate::engine::events::poll(state, s_token, &event.event_id).await {
            Ok(Some(status)) => {
                if settle(
                    state,
                    app,
                    &event.event_id,
                    &event.rows,
                    &status,
                    license_only,
                )
                .await?
                {
                    still_open.push(event);
                } else {
                    finished = true;
                }
            }
            Ok(None) => still_open.push(event),
            Err(e) => {
                tracing::warn!(event = %event.event_id, error = %e, "event status unavailable");
                still_open.push(event);
            }
        }
    }
    *open = still_open;
    Ok(finished)
}

/// License rows of these devices in `state`, with an error if any.
fn license_rows(
    app_id: &str,
    devices: &[(Udid, SerialNumber)],
    state: LicenseState,
    error: Option<&str>,
    now: Timestamp,
) -> Vec<LicenseRecord> {
    devices
        .iter()
        .map(|(udid, serial)| LicenseRecord {
            app_id: app_id.to_owned(),
            udid: udid.clone(),
            serial_number: serial.clone(),
            state,
            event_id: None,
            error: error.map(str::to_owned),
            updated_at: now,
        })
        .collect()
}

/// Records that Apple refused these devices' licenses, with Apple's reason.
async fn refuse_at_apple(
    state: &ServerState,
    app: &AppRecord,
    devices: &[(Udid, SerialNumber)],
    error: &crate::apple::VppError,
) -> ServerResult<()> {
    let reason = format!("license assignment failed: {error}");
    let rows = license_rows(
        &app.id,
        devices,
        LicenseState::Failed,
        Some(&reason),
        state.clock.now(),
    );
    state.store.reserve_licenses(&rows).await?;
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
        let status = match crate::engine::events::poll(state, &token.secret, &event_id).await {
            Ok(Some(s)) => s,
            // Asked not long ago: pending still, unless Apple has kept it so too long,
            // when the request is submitted again (Apple's associations are idempotent).
            Ok(None) => {
                still_pending = true;
                continue;
            }
            Err(e) => {
                tracing::warn!(event = %event_id, error = %e, "event status unavailable");
                still_pending = true;
                continue;
            }
        };
        let rows: Vec<LicenseRecord> = rows.into_iter().cloned().collect();
        if settle(state, app, &event_id, &rows, &status, license_only).await? {
            still_pending = true;
        } else {
            touched.insert(app_id);
        }
    }
    for app_id in touched {
        if let Some(app) = apps.get(&app_id) {
            refresh_counts(state, app).await;
        }
    }
    Ok(still_pending)
}

/// Settles one of Apple's association events from its status: a finished event's
/// licenses are recorded and its installs queued (and the devices woken); an event
/// pending too long is asked for again. Returns whether it is still pending.
async fn settle(
    state: &ServerState,
    app: &AppRecord,
    event_id: &str,
    rows: &[LicenseRecord],
    status: &crate::apple::StatusResponse,
    license_only: &HashSet<(String, Udid)>,
) -> ServerResult<bool> {
    let store = state.store.as_ref();
    let app_id = &app.id;
    let asked_at = rows.iter().map(|l| l.updated_at).min();
    if status.event_status == EventStatus::Pending
        && asked_at.is_some_and(|at| state.clock.now() >= at + state.options.event_resubmit_after)
    {
        tracing::warn!(app = %app.adam_id, event = %event_id, "Apple's event stayed pending; asking again");
        let again: Vec<LicenseRecord> = rows
            .iter()
            .map(|l| LicenseRecord {
                state: LicenseState::Pending,
                event_id: None,
                error: Some(format!(
                    "Apple's event {event_id} stayed pending; the licenses are asked for again"
                )),
                updated_at: state.clock.now(),
                ..(*l).clone()
            })
            .collect();
        store.reserve_licenses(&again).await?;
        state.event_polls.finished(event_id);
        return Ok(true);
    }
    if status.event_status == EventStatus::Pending {
        return Ok(true);
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
                let command = Command::InstallApplication(InstallApplication::vpp(app.adam_id, 1));
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
    Ok(false)
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

    fn app(available: i64, device_assignable: bool) -> AppRecord {
        AppRecord {
            device_assignable,
            counts: LicenseCounts {
                total: available,
                assigned: 0,
                available,
                retired: 0,
            },
            ..AppRecord::example()
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
                enrolled_at: Timestamp::UNIX_EPOCH,
                last_seen_at: Timestamp::UNIX_EPOCH,
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
            Action::Move { from, to, .. } => vec![from.0.clone(), to.0.0.clone()],
        }
    }

    #[test]
    fn batches_grow_from_a_small_first_one_to_apples_limit() {
        let sizes = |n: usize, limit: usize| -> Vec<usize> {
            let devices: Vec<usize> = (0..n).collect();
            let out = batches(&devices, limit);
            assert_eq!(out.concat(), devices, "every device once, in order");
            out.iter().map(Vec::len).collect()
        };
        assert_eq!(
            sizes(10_000, 1000),
            [
                25, 50, 100, 200, 400, 800, 1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000, 425
            ]
        );
        assert_eq!(sizes(30, 1000), [25, 5]);
        assert_eq!(sizes(5, 2), [2, 2, 1]);
        assert!(sizes(0, 1000).is_empty());
        assert_eq!(
            sizes(3, 0),
            [1, 1, 1],
            "a limit of zero still makes progress"
        );
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
            &actions[1],
            Action::Refuse { reason, .. } if reason == NO_LICENSES
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
            &actions[0],
            Action::Refuse { reason, .. } if reason == NOT_DEVICE_ASSIGNABLE
        ));
    }

    /// Two records of serial `S`: `old` enrolled at 10 s, `new` at 20 s.
    fn shared_serial(old_last_seen: u64) -> Vec<Target> {
        let at = |s: u64| Timestamp::UNIX_EPOCH + Duration::from_secs(s);
        let mut t = targets(3);
        t[0].serial_number = SerialNumber("S".into());
        t[0].enrolled_at = at(10);
        t[0].last_seen_at = at(old_last_seen);
        t[2].serial_number = SerialNumber("S".into());
        t[2].enrolled_at = at(20);
        t[2].last_seen_at = at(30);
        t
    }

    #[test]
    fn a_serial_number_is_served_once_the_newest_enrollment_first() {
        let actions = plan(&shared_serial(30), &[], &apps(app(10, true)));
        assert_eq!(actions.len(), 2, "{actions:?}");
        assert_eq!(udids(&actions[0]), ["U1", "U2"]);
        let Action::Refuse { reason, .. } = &actions[1] else {
            panic!("{actions:?}")
        };
        assert_eq!(udids(&actions[1]), ["U0"]);
        assert_eq!(
            reason,
            &serial_conflict(&SerialNumber("S".into()), &Udid::from("U2"))
        );
    }

    #[test]
    fn the_holder_of_a_serial_keeps_it_while_it_is_alive_and_gives_way_when_stale() {
        let mut held = license(0, LicenseState::Associated, Some("e"));
        held.serial_number = SerialNumber("S".into());
        // The old record still checks in: it keeps the license, the new one is told.
        let actions = plan(
            &shared_serial(30),
            std::slice::from_ref(&held),
            &apps(app(10, true)),
        );
        let refused: Vec<_> = actions
            .iter()
            .filter(|a| matches!(a, Action::Refuse { .. }))
            .flat_map(udids)
            .collect();
        assert_eq!(refused, ["U2"]);
        // The old record was last seen before the new enrollment: it gives way.
        let actions = plan(&shared_serial(15), &[held], &apps(app(10, true)));
        assert_eq!(
            actions[0],
            Action::Move {
                app_id: "a".into(),
                from: Udid::from("U0"),
                to: (Udid::from("U2"), SerialNumber("S".into())),
            }
        );
        assert!(
            actions[1..]
                .iter()
                .all(|a| !udids(a).contains(&"U2".to_owned())),
            "the newer record is served by the move alone: {actions:?}"
        );
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
        let t = super::targets(&effective, &requested, &apps(app(5, true)), &HashMap::new());
        let devices: Vec<&str> = t.device.iter().map(|t| t.udid.as_str()).collect();
        assert_eq!(devices, ["required-device", "available-asked"]);
        let users: Vec<&str> = t.user.iter().map(|t| t.udid.as_str()).collect();
        assert_eq!(users, ["required-user"]);
        assert_eq!(
            t.not_applicable,
            vec![(
                "a".to_owned(),
                Udid::from("too-old"),
                crate::engine::applicability::IOS_DEVICE_MINIMUM.to_owned()
            )]
        );
        assert!(t.blocked.is_empty());
        let blocked = HashMap::from([("t".to_owned(), "token expired".to_owned())]);
        let t = super::targets(&effective, &requested, &apps(app(5, true)), &blocked);
        assert!(t.device.is_empty() && t.user.is_empty());
        let blocked: Vec<&str> = t.blocked.iter().map(|(_, u, _)| u.as_str()).collect();
        assert_eq!(
            blocked,
            ["required-device", "required-user", "available-asked"]
        );
    }
}
