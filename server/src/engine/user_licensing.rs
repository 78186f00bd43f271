//! User licensing: a sans-IO core that walks each Required, user-licensed target
//! through Apple's user flow, and the shell that carries its decisions out.
//!
//! The flow for one user and one token: register the user at Apple (`users/create`,
//! with a `clientUserId` this server picks), send `InviteToProgram` with the user's
//! invitation URL to one of the user's devices (once per user: a declined invitation
//! is not sent again), wait until Apple reports the user `Associated` (the user joined
//! with an Apple Account), associate one license with the `clientUserId`, and after
//! Apple's event completes queue `InstallApplication` on up to
//! [`MAX_DEVICES_PER_USER_LICENSE`] of the user's devices.
//!
//! Devices that cannot take part get a reported status instead of a silent skip: no
//! user, single-app (kiosk) mode, App Store disabled by policy, the user declining the
//! invitation, no licenses left, a sixth device.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use orchard_protocol::Udid;
use orchard_protocol::command::{
    Command, DeviceInformation, InstallApplication, InstallMedia, InviteToProgram,
};

use crate::apple::{
    EventStatus, ManageAssetsRequest, ManageUsersRequest, RequestAsset, RequestUser,
};
use crate::clock::Timestamp;
use crate::error::ServerResult;
use crate::state::ServerState;
use crate::store::{
    AppRecord, CommandState, InstallRecord, InstallStatus, LicenseState, NewCommand,
    UserLicenseRecord, UserTarget, VppUserRecord, VppUserStatus,
};

/// Apple lets one user license serve this many of the user's devices.
pub const MAX_DEVICES_PER_USER_LICENSE: usize = 5;

/// Reason for a device without a user.
pub const NO_USER: &str = "not applicable: user licensing needs a user; assign the device to a user or use device licensing";
/// Reason for a kiosk device (scenario 8 of the prompt table).
pub const KIOSK: &str = "not applicable: the device is in single-app (kiosk) mode and cannot show the VPP invitation or the Apple ID prompt; use device licensing";
/// Reason for a device whose App Store is disabled.
pub const APP_STORE_DISABLED: &str = "user licensing cannot work: a restrictions profile disables the App Store on this device; allow the App Store (allowUIAppInstallation) or use device licensing";
/// Reason for the sixth device of one user.
pub const DEVICE_LIMIT: &str = "license assignment failed: one user license serves at most 5 of the user's devices, and this is another one";
/// Reason while Apple registers the user.
pub const REGISTERING: &str = "registering the user with Apple";
/// Reason while the invitation is out.
pub const INVITED: &str = "waiting for the user to accept the invitation to the VPP program";
/// Reason once the user declined the invitation.
pub const DECLINED: &str = "the user declined the invitation to the VPP program, so no license was used; the invitation is not sent again unless an admin sends it again (POST /v1/users/{id}/invitation)";
/// Reason while Apple associates the user license.
pub const ASSOCIATING: &str = "the user license is being associated at Apple";
/// Reason while the device is signed in with another Apple Account than its user's.
pub const OTHER_ACCOUNT: &str = "waiting: the App Store on this device is signed in with another Apple Account than the one the user joined the VPP program with, so the user license cannot serve it; sign in on the device with the Apple Account that accepted the invitation (or assign the app with device licensing)";

/// One decision of the user-licensing core.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserAction {
    /// Register these users at Apple under a token.
    Register {
        /// Token.
        token_id: String,
        /// Users.
        user_ids: Vec<String>,
    },
    /// Send the user's invitation to this device.
    Invite {
        /// Token.
        token_id: String,
        /// User.
        user_id: String,
        /// Device.
        udid: Udid,
    },
    /// Reserve user licenses and ask Apple to associate them.
    Associate {
        /// App.
        app_id: String,
        /// Users.
        user_ids: Vec<String>,
    },
    /// Refuse user licenses: none left.
    Refuse {
        /// App.
        app_id: String,
        /// Users.
        user_ids: Vec<String>,
    },
    /// Queue InstallApplication for the device.
    Install {
        /// App.
        app_id: String,
        /// Device.
        udid: Udid,
    },
    /// Ask the device again which Apple Account its App Store is signed in to.
    AskAccount {
        /// Device.
        udid: Udid,
    },
    /// Report a status for the device.
    Status {
        /// App.
        app_id: String,
        /// Device.
        udid: Udid,
        /// Status.
        status: InstallStatus,
        /// Why.
        reason: &'static str,
    },
}

/// What the core looks at.
#[derive(Debug, Clone, Copy)]
pub struct UserWorld<'a> {
    /// Targets in service order.
    pub targets: &'a [UserTarget],
    /// Apps by id.
    pub apps: &'a HashMap<String, AppRecord>,
    /// Registrations at Apple.
    pub vpp_users: &'a [VppUserRecord],
    /// User licenses.
    pub licenses: &'a [UserLicenseRecord],
    /// Install rows by (app, device).
    pub installs: &'a HashMap<(String, Udid), InstallRecord>,
    /// Licenses of each app in flight for devices (they count against availability).
    pub device_in_flight: &'a HashMap<String, i64>,
}

/// Install rows the core may still overwrite: nothing has happened on the device yet
/// (a declined invitation included: an admin may send it again).
fn open_row(row: Option<&InstallRecord>) -> bool {
    row.is_none_or(|r| {
        matches!(
            r.status,
            InstallStatus::Pending | InstallStatus::NotApplicable | InstallStatus::LicenseFailed
        ) || (r.status == InstallStatus::Failed && r.reason.as_deref() == Some(DECLINED))
    })
}

/// Decides the next steps of user licensing (sans-IO).
pub fn plan(world: UserWorld<'_>) -> Vec<UserAction> {
    let vpp: HashMap<(&str, &str), &VppUserRecord> = world
        .vpp_users
        .iter()
        .map(|u| ((u.token_id.as_str(), u.user_id.as_str()), u))
        .collect();
    let licenses: HashMap<(&str, &str), &UserLicenseRecord> = world
        .licenses
        .iter()
        .map(|l| ((l.app_id.as_str(), l.user_id.as_str()), l))
        .collect();
    let mut register: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut invited: HashSet<(String, String)> = HashSet::new();
    let mut associate: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut refuse: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut decided_users: HashSet<(String, String)> = HashSet::new();
    let mut free: HashMap<String, i64> = HashMap::new();
    let mut devices_served: HashMap<(String, String), usize> = HashMap::new();
    let mut actions = Vec::new();
    let mut reported = Vec::new();

    for t in world.targets {
        let Some(app) = world.apps.get(&t.app_id) else {
            continue;
        };
        let row = world.installs.get(&(t.app_id.clone(), t.udid.clone()));
        let mut status = |status: InstallStatus, reason: &'static str| {
            let same =
                row.is_some_and(|r| r.status == status && r.reason.as_deref() == Some(reason));
            if open_row(row) && !same {
                reported.push(UserAction::Status {
                    app_id: t.app_id.clone(),
                    udid: t.udid.clone(),
                    status,
                    reason,
                });
            }
        };
        let Some(user_id) = &t.user_id else {
            status(InstallStatus::NotApplicable, NO_USER);
            continue;
        };
        if t.single_app_mode {
            status(InstallStatus::NotApplicable, KIOSK);
            continue;
        }
        if t.app_store_allowed == Some(false) {
            status(InstallStatus::Failed, APP_STORE_DISABLED);
            continue;
        }
        let key = (app.token_id.as_str(), user_id.as_str());
        let Some(vu) = vpp.get(&key) else {
            register
                .entry(app.token_id.clone())
                .or_default()
                .insert(user_id.clone());
            status(InstallStatus::Pending, REGISTERING);
            continue;
        };
        match vu.status {
            VppUserStatus::Registering => status(InstallStatus::Pending, REGISTERING),
            VppUserStatus::Failed | VppUserStatus::Retired => status(
                InstallStatus::LicenseFailed,
                "license assignment failed: Apple has no active registration for the user",
            ),
            VppUserStatus::Registered => {
                let declined = vu
                    .invitation_answer
                    .as_deref()
                    .is_some_and(|a| a != "Accepted");
                if declined {
                    status(InstallStatus::Failed, DECLINED);
                } else {
                    if vu.invited_at.is_none()
                        && invited.insert((app.token_id.clone(), user_id.clone()))
                    {
                        actions.push(UserAction::Invite {
                            token_id: app.token_id.clone(),
                            user_id: user_id.clone(),
                            udid: t.udid.clone(),
                        });
                    }
                    status(InstallStatus::Pending, INVITED);
                }
            }
            VppUserStatus::Associated => {
                let lkey = (t.app_id.as_str(), user_id.as_str());
                match licenses.get(&lkey).map(|l| l.state) {
                    None => {
                        if decided_users.insert((t.app_id.clone(), user_id.clone())) {
                            let left = free.entry(t.app_id.clone()).or_insert_with(|| {
                                let in_flight = world
                                    .licenses
                                    .iter()
                                    .filter(|l| {
                                        l.app_id == t.app_id
                                            && matches!(
                                                l.state,
                                                LicenseState::Pending | LicenseState::Associating
                                            )
                                    })
                                    .count() as i64;
                                app.counts.available
                                    - in_flight
                                    - world.device_in_flight.get(&t.app_id).copied().unwrap_or(0)
                            });
                            if *left > 0 {
                                *left -= 1;
                                associate
                                    .entry(t.app_id.clone())
                                    .or_default()
                                    .push(user_id.clone());
                            } else {
                                refuse
                                    .entry(t.app_id.clone())
                                    .or_default()
                                    .push(user_id.clone());
                            }
                        }
                        status(InstallStatus::Pending, ASSOCIATING);
                    }
                    Some(LicenseState::Pending | LicenseState::Associating) => {
                        status(InstallStatus::Pending, ASSOCIATING)
                    }
                    Some(LicenseState::Failed) => status(
                        InstallStatus::LicenseFailed,
                        crate::engine::license_pool::NO_LICENSES,
                    ),
                    // Given back on purpose; nothing to do until it is assigned again.
                    Some(
                        LicenseState::Releasing | LicenseState::Revoking | LicenseState::Revoked,
                    ) => {}
                    Some(LicenseState::Associated) => {
                        let served = devices_served
                            .entry((t.app_id.clone(), user_id.clone()))
                            .or_insert(0);
                        *served += 1;
                        if *served > MAX_DEVICES_PER_USER_LICENSE {
                            status(InstallStatus::LicenseFailed, DEVICE_LIMIT);
                        } else if !t.install {
                            status(
                                InstallStatus::Licensed,
                                crate::engine::license_pool::LICENSE_ONLY,
                            );
                        } else if t
                            .account_hash
                            .as_ref()
                            .zip(vu.id_hash.as_ref())
                            .is_some_and(|(device, user)| device != user)
                        {
                            // Apple serves the license to the account that joined; the
                            // device is asked again until its sign-in matches.
                            status(InstallStatus::Pending, OTHER_ACCOUNT);
                            actions.push(UserAction::AskAccount {
                                udid: t.udid.clone(),
                            });
                        } else if open_row(row) {
                            actions.push(UserAction::Install {
                                app_id: t.app_id.clone(),
                                udid: t.udid.clone(),
                            });
                        }
                    }
                }
            }
        }
    }
    actions.extend(reported);
    for (token_id, users) in register {
        actions.push(UserAction::Register {
            token_id,
            user_ids: users.into_iter().collect(),
        });
    }
    for (app_id, user_ids) in associate {
        actions.push(UserAction::Associate { app_id, user_ids });
    }
    for (app_id, user_ids) in refuse {
        actions.push(UserAction::Refuse { app_id, user_ids });
    }
    actions
}

/// Runs one pass of user licensing; returns whether Apple work is still pending.
pub async fn run_once(
    state: &ServerState,
    apps: &HashMap<String, AppRecord>,
    device_in_flight: &HashMap<String, i64>,
    targets: &[UserTarget],
) -> ServerResult<bool> {
    let store = state.store.as_ref();
    let mut pending = follow_registrations(state).await?;
    pending |= follow_license_events(state, apps).await?;
    pending |= finish_deletions(state).await?;
    if targets.is_empty() {
        return Ok(pending);
    }
    let vpp_users = store.vpp_users().await?;
    let licenses = store.user_licenses().await?;
    let mut installs = HashMap::new();
    for app_id in targets.iter().map(|t| &t.app_id).collect::<BTreeSet<_>>() {
        for row in store.installs_of_app(app_id).await? {
            installs.insert((row.app_id.clone(), row.udid.clone()), row);
        }
    }
    let world = UserWorld {
        targets,
        apps,
        vpp_users: &vpp_users,
        licenses: &licenses,
        installs: &installs,
        device_in_flight,
    };
    let now = state.clock.now();
    let mut rows = Vec::new();
    let mut commands = Vec::new();
    for action in plan(world) {
        match action {
            UserAction::Register { token_id, user_ids } => {
                register(state, &token_id, &user_ids).await?;
                pending = true;
            }
            UserAction::Invite {
                token_id,
                user_id,
                udid,
            } => {
                match invite(state, &vpp_users, &token_id, &user_id, &udid).await? {
                    Some(command) => commands.push(command),
                    // Not sent now (backing off, or Apple not ready): look again soon.
                    None => pending = true,
                }
            }
            UserAction::Associate { app_id, user_ids } => {
                if let Some(app) = apps.get(&app_id) {
                    associate(state, app, &user_ids).await?;
                    pending = true;
                }
            }
            UserAction::Refuse { app_id, user_ids } => {
                let refused: Vec<UserLicenseRecord> = user_ids
                    .into_iter()
                    .map(|user_id| UserLicenseRecord {
                        app_id: app_id.clone(),
                        user_id,
                        state: LicenseState::Failed,
                        event_id: None,
                        error: Some(crate::engine::license_pool::NO_LICENSES.to_owned()),
                        updated_at: now,
                    })
                    .collect();
                store.put_user_licenses(&refused).await?;
            }
            UserAction::Install { app_id, udid } => {
                let Some(app) = apps.get(&app_id) else {
                    continue;
                };
                // Books are delivered with InstallMedia, apps with InstallApplication.
                let command = if app.product_type == "Book" {
                    Command::InstallMedia(InstallMedia::book(app.adam_id))
                } else {
                    Command::InstallApplication(InstallApplication::vpp(app.adam_id, 1))
                };
                commands.push(NewCommand::new(&udid, command, Some(app_id.clone()), now)?);
                rows.push(install_row(
                    &app_id,
                    &udid,
                    InstallStatus::Queued,
                    None,
                    now,
                ));
            }
            UserAction::Status {
                app_id,
                udid,
                status,
                reason,
            } => rows.push(install_row(&app_id, &udid, status, Some(reason), now)),
            UserAction::AskAccount { udid } => {
                if let Some(command) = ask_account(state, &udid).await? {
                    commands.push(command);
                }
            }
        }
    }
    if !commands.is_empty() {
        store.enqueue(&commands).await?;
        state.wake_for(&commands);
    }
    if !rows.is_empty() {
        store.set_installs(&rows).await?;
    }
    Ok(pending)
}

fn install_row(
    app_id: &str,
    udid: &Udid,
    status: InstallStatus,
    reason: Option<&str>,
    now: Timestamp,
) -> InstallRecord {
    InstallRecord {
        app_id: app_id.to_owned(),
        udid: udid.clone(),
        status,
        device_status: None,
        version: None,
        reason: reason.map(str::to_owned),
        updated_at: now,
        since: None,
    }
}

async fn register(state: &ServerState, token_id: &str, user_ids: &[String]) -> ServerResult<()> {
    let store = state.store.as_ref();
    let Some(token) = store.token(token_id).await? else {
        return Ok(());
    };
    let mut rows = Vec::new();
    let mut request = ManageUsersRequest { users: Vec::new() };
    for user_id in user_ids {
        let Some(user) = store.user(user_id).await? else {
            continue;
        };
        let client_user_id = uuid::Uuid::new_v4().to_string();
        request.users.push(RequestUser {
            client_user_id: client_user_id.clone(),
            email: Some(user.email.clone()),
            managed_apple_id: user.managed_apple_id.clone(),
        });
        rows.push(VppUserRecord {
            token_id: token_id.to_owned(),
            user_id: user_id.clone(),
            client_user_id,
            status: VppUserStatus::Registering,
            event_id: None,
            invite_code: None,
            id_hash: None,
            invited_udid: None,
            invited_at: None,
            invitation_answer: None,
            answered_at: None,
            error: None,
            updated_at: state.clock.now(),
        });
    }
    // Apple takes at most `maxUsers` per call.
    let limit = state.apple.limits(&token.secret).await.max_users.max(1);
    for (users, chunk) in request.users.chunks(limit).zip(rows.chunks_mut(limit)) {
        let call = ManageUsersRequest {
            users: users.to_vec(),
        };
        match state.apple.create_users(&token.secret, &call).await {
            Ok(event) => {
                for row in chunk.iter_mut() {
                    row.event_id = Some(event.event_id.clone());
                }
            }
            Err(e) if e.is_transient() => {
                tracing::warn!(error = %e, "user registration failed; will retry");
                continue;
            }
            Err(e) => {
                for row in chunk.iter_mut() {
                    row.status = VppUserStatus::Failed;
                    row.error = Some(e.to_string());
                }
            }
        }
        for row in chunk.iter() {
            store.put_vpp_user(row).await?;
        }
    }
    Ok(())
}

/// Finishes deleting users: once a deleted user holds no license any more (the
/// reconciler gives them back, as the user left every group), its registrations are
/// retired at Apple and the user is removed. Returns whether some are still on their way.
async fn finish_deletions(state: &ServerState) -> ServerResult<bool> {
    let store = state.store.as_ref();
    let deleting = store.users_being_deleted().await?;
    if deleting.is_empty() {
        return Ok(false);
    }
    let licenses = store.user_licenses().await?;
    let registrations = store.vpp_users().await?;
    let mut pending = false;
    for user in deleting {
        if licenses.iter().any(|l| l.user_id == user.id) {
            pending = true;
            continue;
        }
        let mut retired_all = true;
        for mut r in registrations
            .iter()
            .filter(|r| r.user_id == user.id)
            .cloned()
        {
            if !matches!(
                r.status,
                VppUserStatus::Registered | VppUserStatus::Associated
            ) {
                continue;
            }
            let Some(token) = store.token(&r.token_id).await? else {
                continue;
            };
            let request = ManageUsersRequest {
                users: vec![RequestUser {
                    client_user_id: r.client_user_id.clone(),
                    email: None,
                    managed_apple_id: None,
                }],
            };
            match state.apple.retire_users(&token.secret, &request).await {
                Ok(_) => {
                    r.status = VppUserStatus::Retired;
                    r.updated_at = state.clock.now();
                    store.put_vpp_user(&r).await?;
                }
                Err(e) => {
                    tracing::warn!(user = %user.id, error = %e, "cannot retire a deleted user at Apple; will retry");
                    retired_all = false;
                }
            }
        }
        if retired_all {
            tracing::info!(user = %user.id, "user deleted");
            store.delete_user(&user.id).await?;
        } else {
            pending = true;
        }
    }
    Ok(pending)
}

/// Follows registrations: reads invite codes once Apple created the users, and notices
/// users who joined the program. Apple is read once per token and pass, incrementally
/// (`sinceVersionId`): only the users changed since the last read come back.
async fn follow_registrations(state: &ServerState) -> ServerResult<bool> {
    let store = state.store.as_ref();
    let mut pending = false;
    let mut waiting: BTreeSet<String> = BTreeSet::new();
    let all_users = store.vpp_users().await?;
    for mut user in all_users.iter().cloned() {
        let waiting_for_apple = user.status == VppUserStatus::Registering;
        let waiting_for_user = user.status == VppUserStatus::Registered
            && user.invited_at.is_some()
            && user
                .invitation_answer
                .as_deref()
                .is_none_or(|a| a == "Accepted");
        if !waiting_for_apple && !waiting_for_user {
            continue;
        }
        pending = true;
        let Some(token) = store.token(&user.token_id).await? else {
            continue;
        };
        if let (true, Some(event_id)) = (waiting_for_apple, &user.event_id) {
            match crate::engine::events::poll(state, &token.secret, event_id).await {
                Ok(None) => continue,
                Ok(Some(s)) if s.event_status == EventStatus::Pending => continue,
                Ok(Some(s)) if s.event_status == EventStatus::Failed => {
                    user.status = VppUserStatus::Failed;
                    user.error = s
                        .failures
                        .first()
                        .and_then(|f| f.error_message.clone())
                        .or_else(|| Some("Apple could not create the user".into()));
                    user.updated_at = state.clock.now();
                    store.put_vpp_user(&user).await?;
                    continue;
                }
                Ok(Some(_)) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "user event status unavailable");
                    continue;
                }
            }
        }
        waiting.insert(user.token_id.clone());
    }
    for token_id in waiting {
        let Some(token) = store.token(&token_id).await? else {
            continue;
        };
        let since = state.apple_user_versions.get(&token_id);
        let changes = match state
            .apple
            .users_changed(&token.secret, since.as_deref())
            .await
        {
            Ok(changes) => changes,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read users at Apple");
                continue;
            }
        };
        let at_apple: HashMap<&str, &crate::apple::ResponseUser> = changes
            .users
            .iter()
            .map(|u| (u.client_user_id.as_str(), u))
            .collect();
        // What Apple says of a user holds for whatever state the record is in here.
        for mut user in all_users
            .iter()
            .filter(|u| u.token_id == token_id && u.status != VppUserStatus::Failed)
            .cloned()
        {
            let Some(at_apple) = at_apple.get(user.client_user_id.as_str()) else {
                continue;
            };
            let status = match at_apple.status.as_str() {
                "Associated" => VppUserStatus::Associated,
                "Retired" => VppUserStatus::Retired,
                _ => VppUserStatus::Registered,
            };
            if status != user.status || at_apple.invite_code != user.invite_code {
                user.status = status;
                user.invite_code = at_apple.invite_code.clone().or(user.invite_code);
                user.id_hash = at_apple.id_hash.clone();
                user.updated_at = state.clock.now();
                tracing::info!(user = %user.user_id, status = %user.status, "VPP user changed");
                store.put_vpp_user(&user).await?;
                state.poke_reconciler();
            }
        }
        if let Some(version) = changes.version_id {
            state.apple_user_versions.set(&token_id, version);
        }
    }
    Ok(pending)
}

/// A DeviceInformation query for the device's App Store account, due after the install
/// poll interval, unless one is already open.
async fn ask_account(
    state: &ServerState,
    udid: &Udid,
) -> ServerResult<Option<crate::store::NewCommand>> {
    let open = state.store.commands_of(udid).await?.into_iter().any(|c| {
        c.request_type == "DeviceInformation"
            && matches!(
                c.status,
                CommandState::Queued | CommandState::Sent | CommandState::NotNow
            )
    });
    if open {
        return Ok(None);
    }
    let queries = ["iTunesStoreAccountHash", "iTunesStoreAccountIsActive"]
        .map(String::from)
        .to_vec();
    let mut command = NewCommand::new(
        udid,
        Command::DeviceInformation(DeviceInformation { queries }),
        None,
        state.clock.now(),
    )?;
    command.not_before = state.clock.now() + state.options.install_poll_interval;
    Ok(Some(command))
}

async fn invite(
    state: &ServerState,
    vpp_users: &[VppUserRecord],
    token_id: &str,
    user_id: &str,
    udid: &Udid,
) -> ServerResult<Option<crate::store::NewCommand>> {
    let Some(mut user) = vpp_users
        .iter()
        .find(|u| u.token_id == token_id && u.user_id == user_id)
        .cloned()
    else {
        return Ok(None);
    };
    let (Some(code), Some(token)) = (&user.invite_code, state.store.token(token_id).await?) else {
        return Ok(None);
    };
    // A device that refused the invitation is not sent it again at once.
    if !state.apple_backoff.due(
        &crate::retry::invitation_key(token_id, user_id),
        state.clock.now(),
    ) {
        return Ok(None);
    }
    let url = match state.apple.invitation_url(&token.secret, code).await {
        Ok(url) => url,
        Err(e) => {
            tracing::warn!(error = %e, "cannot build the invitation URL; will retry");
            return Ok(None);
        }
    };
    let now = state.clock.now();
    let command = NewCommand::new(
        udid,
        Command::InviteToProgram(InviteToProgram::vpp(url)),
        None,
        now,
    )?;
    user.invited_udid = Some(udid.0.clone());
    user.invited_at = Some(now);
    user.updated_at = now;
    state.store.put_vpp_user(&user).await?;
    tracing::info!(user = %user_id, %udid, "VPP invitation sent");
    Ok(Some(command))
}

async fn associate(state: &ServerState, app: &AppRecord, user_ids: &[String]) -> ServerResult<()> {
    let store = state.store.as_ref();
    let vpp_users = store.vpp_users().await?;
    let now = state.clock.now();
    let mut rows: Vec<UserLicenseRecord> = user_ids
        .iter()
        .map(|user_id| UserLicenseRecord {
            app_id: app.id.clone(),
            user_id: user_id.clone(),
            state: LicenseState::Pending,
            event_id: None,
            error: None,
            updated_at: now,
        })
        .collect();
    store.put_user_licenses(&rows).await?;
    let Some(token) = store.token(&app.token_id).await? else {
        return Ok(());
    };
    let client_ids: Vec<String> = user_ids
        .iter()
        .filter_map(|id| {
            vpp_users
                .iter()
                .find(|u| &u.user_id == id && u.token_id == app.token_id)
                .map(|u| u.client_user_id.clone())
        })
        .collect();
    let request = ManageAssetsRequest {
        assets: vec![RequestAsset {
            adam_id: app.adam_id.to_string(),
            pricing_param: app.pricing_param.clone(),
        }],
        serial_numbers: Vec::new(),
        client_user_ids: client_ids,
    };
    match state.apple.associate(&token.secret, &request).await {
        Ok(event) => {
            for row in &mut rows {
                row.state = LicenseState::Associating;
                row.event_id = Some(event.event_id.clone());
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "user license association failed");
            for row in &mut rows {
                // A transient failure leaves the reservation to be asked again.
                if e.is_transient() {
                    row.error = Some(e.to_string());
                } else {
                    row.state = LicenseState::Failed;
                    row.error = Some(format!("license assignment failed: {e}"));
                }
            }
        }
    }
    store.put_user_licenses(&rows).await?;
    Ok(())
}

/// Follows association events of user licenses, and asks again for reservations a
/// transient failure left without an event.
async fn follow_license_events(
    state: &ServerState,
    apps: &HashMap<String, AppRecord>,
) -> ServerResult<bool> {
    let store = state.store.as_ref();
    let licenses = store.user_licenses().await?;
    let mut pending = false;
    let mut by_event: BTreeMap<(String, String), Vec<UserLicenseRecord>> = BTreeMap::new();
    let mut retry: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for l in licenses {
        match (l.state, &l.event_id) {
            (LicenseState::Associating, Some(event)) => by_event
                .entry((l.app_id.clone(), event.clone()))
                .or_default()
                .push(l),
            (LicenseState::Pending, None) => {
                retry.entry(l.app_id.clone()).or_default().push(l.user_id)
            }
            _ => {}
        }
    }
    for (app_id, user_ids) in retry {
        if let Some(app) = apps.get(&app_id) {
            associate(state, app, &user_ids).await?;
            pending = true;
        }
    }
    let vpp_users = store.vpp_users().await?;
    let mut touched = BTreeSet::new();
    for ((app_id, event_id), mut rows) in by_event {
        let Some(app) = apps.get(&app_id) else {
            continue;
        };
        let Some(token) = store.token(&app.token_id).await? else {
            continue;
        };
        let status = match crate::engine::events::poll(state, &token.secret, &event_id).await {
            Ok(Some(s)) => s,
            Ok(None) => {
                pending = true;
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "event status unavailable");
                pending = true;
                continue;
            }
        };
        if status.event_status == EventStatus::Pending {
            pending = true;
            continue;
        }
        let failed_clients: HashMap<String, String> = status
            .failures
            .iter()
            .flat_map(|f| {
                let reason = crate::engine::license_pool::failure_reason(
                    f.error_number,
                    f.error_message.as_deref(),
                );
                f.error_info
                    .iter()
                    .flat_map(|i| i.client_user_ids.clone())
                    .map(move |c| (c, reason.clone()))
            })
            .collect();
        let now = state.clock.now();
        for row in &mut rows {
            let client = vpp_users
                .iter()
                .find(|u| u.user_id == row.user_id && u.token_id == app.token_id)
                .map(|u| u.client_user_id.as_str());
            let failure = client
                .and_then(|c| failed_clients.get(c))
                .cloned()
                .or_else(|| {
                    (status.event_status == EventStatus::Failed)
                        .then(|| crate::engine::license_pool::NO_LICENSES.to_owned())
                });
            match failure {
                Some(reason) => {
                    row.state = LicenseState::Failed;
                    row.error = Some(reason);
                }
                None => row.state = LicenseState::Associated,
            }
            row.updated_at = now;
        }
        store.put_user_licenses(&rows).await?;
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
    use crate::store::LicenseCounts;
    use orchard_protocol::AdamId;

    fn app(available: i64) -> AppRecord {
        AppRecord {
            id: "app".into(),
            token_id: "tok".into(),
            adam_id: AdamId(1),
            pricing_param: "STDQ".into(),
            product_type: "App".into(),
            name: Some("Pages".into()),
            bundle_id: Some("com.apple.Pages".into()),
            version: Some("1".into()),
            platforms: vec!["iOS".into()],
            device_assignable: true,
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

    fn target(udid: &str, user: Option<&str>) -> UserTarget {
        UserTarget {
            app_id: "app".into(),
            user_id: user.map(str::to_owned),
            udid: udid.into(),
            joined_at: format!("2026-01-01T00:00:00.{udid:0>6}Z").parse().unwrap(),
            single_app_mode: false,
            app_store_allowed: Some(true),
            install: true,
            account_hash: None,
        }
    }

    fn vpp_user(user: &str, status: VppUserStatus) -> VppUserRecord {
        VppUserRecord {
            token_id: "tok".into(),
            user_id: user.into(),
            client_user_id: format!("c-{user}"),
            status,
            event_id: None,
            invite_code: Some("code".into()),
            id_hash: None,
            invited_udid: None,
            invited_at: None,
            invitation_answer: None,
            answered_at: None,
            error: None,
            updated_at: Timestamp::UNIX_EPOCH,
        }
    }

    fn license(user: &str, state: LicenseState) -> UserLicenseRecord {
        UserLicenseRecord {
            app_id: "app".into(),
            user_id: user.into(),
            state,
            event_id: None,
            error: None,
            updated_at: Timestamp::UNIX_EPOCH,
        }
    }

    struct Case {
        available: i64,
        targets: Vec<UserTarget>,
        vpp_users: Vec<VppUserRecord>,
        licenses: Vec<UserLicenseRecord>,
    }

    impl Case {
        fn plan(&self) -> Vec<UserAction> {
            let apps = HashMap::from([("app".to_owned(), app(self.available))]);
            plan(UserWorld {
                targets: &self.targets,
                apps: &apps,
                vpp_users: &self.vpp_users,
                licenses: &self.licenses,
                installs: &HashMap::new(),
                device_in_flight: &HashMap::new(),
            })
        }
    }

    fn statuses(actions: &[UserAction]) -> Vec<(String, &'static str)> {
        actions
            .iter()
            .filter_map(|a| match a {
                UserAction::Status { udid, reason, .. } => Some((udid.0.clone(), *reason)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn devices_that_cannot_take_part_get_a_reason() {
        let mut kiosk = target("1", Some("ana"));
        kiosk.single_app_mode = true;
        let mut no_store = target("2", Some("ana"));
        no_store.app_store_allowed = Some(false);
        let case = Case {
            available: 10,
            targets: vec![kiosk, no_store, target("3", None)],
            vpp_users: vec![],
            licenses: vec![],
        };
        let actions = case.plan();
        assert_eq!(
            statuses(&actions),
            vec![
                ("1".into(), KIOSK),
                ("2".into(), APP_STORE_DISABLED),
                ("3".into(), NO_USER)
            ]
        );
        assert!(
            !actions
                .iter()
                .any(|a| matches!(a, UserAction::Register { .. })),
            "nobody is registered for devices that cannot use the license"
        );
    }

    #[test]
    fn unknown_user_is_registered_once_per_token() {
        let case = Case {
            available: 10,
            targets: vec![target("1", Some("ana")), target("2", Some("ana"))],
            vpp_users: vec![],
            licenses: vec![],
        };
        let registers: Vec<_> = case
            .plan()
            .into_iter()
            .filter(|a| matches!(a, UserAction::Register { .. }))
            .collect();
        assert_eq!(
            registers,
            vec![UserAction::Register {
                token_id: "tok".into(),
                user_ids: vec!["ana".into()]
            }]
        );
    }

    #[test]
    fn registered_user_is_invited_once_on_the_first_device() {
        let case = Case {
            available: 10,
            targets: vec![target("1", Some("ana")), target("2", Some("ana"))],
            vpp_users: vec![vpp_user("ana", VppUserStatus::Registered)],
            licenses: vec![],
        };
        let invites: Vec<_> = case
            .plan()
            .into_iter()
            .filter(|a| matches!(a, UserAction::Invite { .. }))
            .collect();
        assert_eq!(
            invites,
            vec![UserAction::Invite {
                token_id: "tok".into(),
                user_id: "ana".into(),
                udid: "1".into()
            }]
        );
        let mut invited = vpp_user("ana", VppUserStatus::Registered);
        invited.invited_at = Some(Timestamp::UNIX_EPOCH);
        let again = Case {
            vpp_users: vec![invited],
            ..case
        };
        assert!(
            !again
                .plan()
                .iter()
                .any(|a| matches!(a, UserAction::Invite { .. }))
        );
    }

    #[test]
    fn declined_invitation_uses_no_license_and_is_not_sent_again() {
        let mut declined = vpp_user("ana", VppUserStatus::Registered);
        declined.invited_at = Some(Timestamp::UNIX_EPOCH);
        declined.invitation_answer = Some("Declined".into());
        let case = Case {
            available: 10,
            targets: vec![target("1", Some("ana"))],
            vpp_users: vec![declined],
            licenses: vec![],
        };
        let actions = case.plan();
        assert_eq!(statuses(&actions), vec![("1".into(), DECLINED)]);
        assert!(
            actions
                .iter()
                .all(|a| matches!(a, UserAction::Status { .. }))
        );
    }

    #[test]
    fn associated_users_get_licenses_until_none_are_left() {
        let case = Case {
            available: 1,
            targets: vec![target("1", Some("ana")), target("2", Some("bob"))],
            vpp_users: vec![
                vpp_user("ana", VppUserStatus::Associated),
                vpp_user("bob", VppUserStatus::Associated),
            ],
            licenses: vec![],
        };
        let actions = case.plan();
        assert!(actions.contains(&UserAction::Associate {
            app_id: "app".into(),
            user_ids: vec!["ana".into()]
        }));
        assert!(actions.contains(&UserAction::Refuse {
            app_id: "app".into(),
            user_ids: vec!["bob".into()]
        }));
    }

    #[test]
    fn one_user_license_installs_on_five_devices_and_refuses_the_sixth() {
        let case = Case {
            available: 10,
            targets: (1..=6)
                .map(|i| target(&i.to_string(), Some("ana")))
                .collect(),
            vpp_users: vec![vpp_user("ana", VppUserStatus::Associated)],
            licenses: vec![license("ana", LicenseState::Associated)],
        };
        let actions = case.plan();
        let installs = installs_of(&actions);
        assert_eq!(installs, vec!["1", "2", "3", "4", "5"]);
        assert_eq!(statuses(&actions), vec![("6".into(), DEVICE_LIMIT)]);
    }

    fn installs_of(actions: &[UserAction]) -> Vec<String> {
        actions
            .iter()
            .filter_map(|a| match a {
                UserAction::Install { udid, .. } => Some(udid.0.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_device_signed_in_with_another_account_waits_and_is_asked_again() {
        let mut joined = vpp_user("ana", VppUserStatus::Associated);
        joined.id_hash = Some("hash-of-ana".into());
        let mut targets: Vec<UserTarget> = (1..=3)
            .map(|i| target(&i.to_string(), Some("ana")))
            .collect();
        targets[0].account_hash = Some("hash-of-ana".into());
        targets[1].account_hash = Some("hash-of-bob".into());
        // The third has nobody signed in: the device will ask for the Apple ID.
        let case = Case {
            available: 10,
            targets,
            vpp_users: vec![joined],
            licenses: vec![license("ana", LicenseState::Associated)],
        };
        let actions = case.plan();
        let installs = installs_of(&actions);
        assert_eq!(installs, vec!["1", "3"]);
        assert_eq!(statuses(&actions), vec![("2".into(), OTHER_ACCOUNT)]);
        assert!(actions.contains(&UserAction::AskAccount { udid: "2".into() }));
    }

    #[test]
    fn progressed_installs_are_left_alone() {
        let case = Case {
            available: 10,
            targets: vec![target("1", Some("ana"))],
            vpp_users: vec![vpp_user("ana", VppUserStatus::Associated)],
            licenses: vec![license("ana", LicenseState::Associated)],
        };
        let apps = HashMap::from([("app".to_owned(), app(10))]);
        let installs = HashMap::from([(
            ("app".to_owned(), Udid::from("1")),
            install_row(
                "app",
                &"1".into(),
                InstallStatus::Installed,
                None,
                Timestamp::UNIX_EPOCH,
            ),
        )]);
        let actions = plan(UserWorld {
            targets: &case.targets,
            apps: &apps,
            vpp_users: &case.vpp_users,
            licenses: &case.licenses,
            installs: &installs,
            device_in_flight: &HashMap::new(),
        });
        assert!(actions.is_empty(), "{actions:?}");
    }
}
