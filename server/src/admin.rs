//! The admin services behind the API: tokens, groups, assignments and reports. Business
//! rules live here; the HTTP layer only parses, authorizes and maps results.

use std::collections::BTreeMap;

use orchard_protocol::{SerialNumber, Udid};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::apple::TokenFile;
use crate::clock::Timestamp;
use crate::error::{ServerError, ServerResult};
use crate::state::ServerState;
use crate::store::{
    AppRecord, AssignmentRecord, AuditEntry, EnrollmentTokenRecord, GroupKind, GroupRecord, Intent,
    LicenseType, NewCommand, UserRecord, VppTokenRecord, VppUserRecord,
};

/// Who is acting (for the audit log).
#[derive(Debug, Clone)]
pub struct Actor {
    /// Admin token name (or who failed to authenticate).
    pub name: String,
    /// The admin token's id (none: not authenticated).
    pub token_id: Option<String>,
    /// The token's role (none: not authenticated).
    pub role: Option<crate::store::Role>,
}

/// A token upload.
#[derive(Debug, Clone)]
pub struct TokenUpload {
    /// Display name.
    pub name: String,
    /// The token file's contents.
    pub token_file: String,
    /// The admin agrees that user and device data is sent to Apple.
    pub consent: bool,
    /// Take the location over from another MDM.
    pub take_over: bool,
    /// Settings.
    pub settings: TokenSettings,
}

/// Writes an audit entry for an admin change.
pub async fn audit<T>(
    state: &ServerState,
    actor: &Actor,
    action: &str,
    target: &str,
    result: &ServerResult<T>,
) {
    let entry = AuditEntry {
        id: 0,
        at: state.clock.now(),
        actor: actor.name.clone(),
        actor_token: actor.token_id.clone(),
        action: action.to_owned(),
        target: target.to_owned(),
        result: match result {
            Ok(_) => "ok".to_owned(),
            Err(e) => format!("error: {e}"),
        },
    };
    if let Err(e) = state.store.audit(&entry).await {
        tracing::error!(error = %e, action, "cannot write the audit log");
    }
}

/// Validates and stores an uploaded token file.
pub async fn upload_token(
    state: &ServerState,
    upload: TokenUpload,
) -> ServerResult<VppTokenRecord> {
    if upload.name.trim().is_empty() {
        return Err(ServerError::Invalid {
            field: "name",
            reason: "must not be empty".into(),
        });
    }
    if !upload.consent {
        return Err(ServerError::Invalid {
            field: "consent",
            reason: "must be true: Orchard sends user and device information to Apple to manage licenses".into(),
        });
    }
    check_settings(&upload.settings)?;
    let file = TokenFile::parse(&upload.token_file, state.clock.now())?;
    if state.store.token_count().await? >= state.options.max_tokens {
        return Err(ServerError::LimitReached(format!(
            "this server already holds {} tokens, the most it allows",
            state.options.max_tokens
        )));
    }
    let mut record = VppTokenRecord {
        id: uuid::Uuid::new_v4().to_string(),
        name: upload.name.trim().to_owned(),
        org_name: file.org_name,
        secret_hash: hex::encode(Sha256::digest(file.s_token.as_bytes())),
        secret: file.s_token,
        expires_at: file.expires_at,
        location_name: None,
        country: None,
        location_uid: None,
        created_at: state.clock.now(),
        last_sync_at: None,
        last_sync_error: None,
        priority: 100,
        apple_id: None,
        account_type: "business".into(),
        automatic_updates: false,
        store_country: None,
        external_mdm: None,
        disabled_reason: None,
        notification_secret: None,
        last_notification_at: None,
        notifications: None,
    };
    apply_settings(&mut record, upload.settings);
    if !state.store.insert_token(&record).await? {
        return Err(ServerError::Conflict(
            "this token file has already been uploaded".into(),
        ));
    }
    // Taking the location over from another MDM: if Apple refuses, nothing stays.
    if upload.take_over
        && let Err(e) = crate::apple::token_lifecycle::claim(state, &mut record).await
    {
        state.store.delete_token(&record.id).await?;
        return Err(e);
    }
    Ok(record)
}

/// Creates a device group.
pub async fn create_group(
    state: &ServerState,
    name: &str,
    kind: GroupKind,
) -> ServerResult<GroupRecord> {
    let name = name.trim();
    if name.is_empty() {
        return Err(ServerError::Invalid {
            field: "name",
            reason: "must not be empty".into(),
        });
    }
    let group = GroupRecord {
        id: uuid::Uuid::new_v4().to_string(),
        name: name.to_owned(),
        kind,
        created_at: state.clock.now(),
    };
    if !state.store.insert_group(&group).await? {
        return Err(ServerError::Conflict(format!(
            "a group named {name:?} already exists"
        )));
    }
    Ok(group)
}

/// Adds enrolled devices to a device group; every UDID must be known.
pub async fn add_group_devices(
    state: &ServerState,
    group_id: &str,
    udids: &[Udid],
) -> ServerResult<u64> {
    let group = state
        .store
        .group(group_id)
        .await?
        .ok_or_else(|| ServerError::not_found("group", group_id))?;
    if group.kind != GroupKind::Device {
        return Err(ServerError::Invalid {
            field: "udids",
            reason: format!(
                "group {group_id} is a user group: add users to it, or add the devices to a device group"
            ),
        });
    }
    if udids.is_empty() {
        return Err(ServerError::Invalid {
            field: "udids",
            reason: "must name at least one device".into(),
        });
    }
    for udid in udids {
        if state.store.device(udid).await?.is_none() {
            return Err(ServerError::NotFound {
                kind: "device",
                id: udid.0.clone(),
            });
        }
    }
    let added = state
        .store
        .add_group_devices(group_id, udids, state.clock.now())
        .await?;
    state.poke_reconciler();
    Ok(added)
}

/// Assigns an app to a group.
pub async fn assign(
    state: &ServerState,
    app_id: &str,
    group_id: &str,
    intent: Intent,
    license_type: LicenseType,
    install: bool,
    any_token: bool,
) -> ServerResult<AssignmentCreated> {
    let app = app_or_not_found(state, app_id).await?;
    let group = state
        .store
        .group(group_id)
        .await?
        .ok_or_else(|| ServerError::not_found("group", group_id))?;
    if group.kind == GroupKind::Device && intent == Intent::Available {
        return Err(ServerError::Invalid {
            field: "intent",
            reason: "Available cannot be assigned to a device group: there is no user to ask; use Required or a user group".into(),
        });
    }
    check_intent(&app, intent, license_type)?;
    let assignment = AssignmentRecord {
        id: uuid::Uuid::new_v4().to_string(),
        app_id: app.id.clone(),
        group_id: group.id.clone(),
        intent,
        license_type,
        install,
        any_token,
        created_at: state.clock.now(),
        updated_at: None,
    };
    let warnings = assignment_warnings(state, &group, license_type).await?;
    if !state.store.insert_assignment(&assignment).await? {
        return Err(ServerError::Conflict(format!(
            "app {} is already assigned to group {}",
            app.id, group.id
        )));
    }
    state.poke_reconciler();
    Ok(AssignmentCreated {
        assignment,
        warnings,
    })
}

/// A new assignment and what the admin should know about it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AssignmentCreated {
    /// The assignment.
    #[serde(flatten)]
    pub assignment: AssignmentRecord,
    /// Things that will not work as the admin may expect.
    pub warnings: Vec<String>,
}

/// The devices of a group: its devices, or the devices of its users.
async fn group_member_devices(
    state: &ServerState,
    group: &GroupRecord,
) -> ServerResult<Vec<crate::store::DeviceRecord>> {
    let mut devices = Vec::new();
    match group.kind {
        GroupKind::Device => {
            for udid in state.store.group_devices(&group.id).await? {
                devices.extend(state.store.device(&udid).await?);
            }
        }
        GroupKind::User => {
            for user_id in state.store.group_users(&group.id).await? {
                devices.extend(state.store.devices_of_user(&user_id).await?);
            }
        }
    }
    Ok(devices)
}

/// User licensing on kiosk devices (scenario 8 of the prompt table) is not
/// recommended: the device can show neither the invitation nor the Apple ID prompt.
pub(crate) async fn assignment_warnings(
    state: &ServerState,
    group: &GroupRecord,
    license_type: LicenseType,
) -> ServerResult<Vec<String>> {
    if license_type != LicenseType::User {
        return Ok(Vec::new());
    }
    let devices = group_member_devices(state, group).await?;
    let kiosks: Vec<&str> = devices
        .iter()
        .filter(|d| d.single_app_mode == Some(true))
        .map(|d| d.udid.as_str())
        .collect();
    let mut warnings = Vec::new();
    if !kiosks.is_empty() {
        warnings.push(format!(
            "user licensing is not recommended for single-app (kiosk) devices: {} cannot show the VPP invitation or the Apple ID prompt and will report \"not applicable\"; use device licensing for them ({})",
            kiosks.len(),
            kiosks.join(", ")
        ));
    }
    let no_user = devices.iter().filter(|d| d.user_id.is_none()).count();
    if no_user > 0 {
        warnings.push(format!(
            "{no_user} device(s) of the group have no user; user licensing needs one"
        ));
    }
    Ok(warnings)
}

/// A new user.
#[derive(Debug, Clone)]
pub struct NewUser {
    /// Email (unique).
    pub email: String,
    /// Managed Apple Account (unique), if any.
    pub managed_apple_id: Option<String>,
    /// Display name.
    pub name: Option<String>,
}

/// Adds a user to the directory.
pub async fn create_user(state: &ServerState, new: NewUser) -> ServerResult<UserRecord> {
    let email = new.email.trim().to_lowercase();
    if !email.contains('@') || email.starts_with('@') || email.ends_with('@') {
        return Err(ServerError::Invalid {
            field: "email",
            reason: format!("{email:?} is not an email address"),
        });
    }
    let user = UserRecord {
        id: uuid::Uuid::new_v4().to_string(),
        email,
        managed_apple_id: new.managed_apple_id.map(|m| m.trim().to_lowercase()),
        name: new.name,
        created_at: state.clock.now(),
        deleted_at: None,
    };
    if !state.store.insert_user(&user).await? {
        return Err(ServerError::Conflict(
            "a user with this email or managed Apple Account already exists".into(),
        ));
    }
    Ok(user)
}

/// Sets or clears the user of a device.
pub async fn set_device_user(
    state: &ServerState,
    udid: &Udid,
    user_id: Option<&str>,
) -> ServerResult<()> {
    state
        .store
        .device(udid)
        .await?
        .ok_or_else(|| ServerError::not_found("device", udid.as_str()))?;
    if let Some(id) = user_id {
        state
            .store
            .user(id)
            .await?
            .ok_or_else(|| ServerError::not_found("user", id))?;
    }
    state.store.set_device_user(udid, user_id).await?;
    state.poke_reconciler();
    Ok(())
}

/// Adds users to a user group.
pub async fn add_group_users(
    state: &ServerState,
    group_id: &str,
    user_ids: &[String],
) -> ServerResult<u64> {
    let group = state
        .store
        .group(group_id)
        .await?
        .ok_or_else(|| ServerError::not_found("group", group_id))?;
    if group.kind != GroupKind::User {
        return Err(ServerError::Invalid {
            field: "user_ids",
            reason: format!("group {group_id} is a device group: add devices to it"),
        });
    }
    if user_ids.is_empty() {
        return Err(ServerError::Invalid {
            field: "user_ids",
            reason: "must name at least one user".into(),
        });
    }
    for id in user_ids {
        state
            .store
            .user(id)
            .await?
            .ok_or_else(|| ServerError::not_found("user", id))?;
    }
    let added = state
        .store
        .add_group_users(group_id, user_ids, state.clock.now())
        .await?;
    state.poke_reconciler();
    Ok(added)
}

/// A user with their standing in the VPP program of each token.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct UserView {
    /// The user.
    #[serde(flatten)]
    pub user: UserRecord,
    /// Registrations at Apple, one per token.
    pub vpp: Vec<VppStanding>,
    /// The user's devices.
    pub devices: Vec<Udid>,
}

/// A user's standing under one token. The personal Apple ID is never known here:
/// only whether the user joined and Apple's opaque hash of the account.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct VppStanding {
    /// Token.
    pub token_id: String,
    /// Registration status at Apple.
    pub status: String,
    /// The user accepted the VPP terms (joined the program).
    pub terms_accepted: bool,
    /// The invitation, if sent.
    pub invitation: Option<Invitation>,
    /// Apple's hash of the account the user joined with.
    pub apple_account_hash: Option<String>,
    /// The last thing that went wrong (Apple refused the registration, a device
    /// refused the invitation), if any.
    pub error: Option<String>,
}

/// A VPP invitation as sent and answered.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Invitation {
    /// The device it went to.
    pub udid: Option<String>,
    /// When.
    pub sent_at: Timestamp,
    /// The user's answer on the device, once given.
    pub answer: Option<String>,
    /// When answered.
    pub answered_at: Option<Timestamp>,
}

fn standing(u: VppUserRecord) -> VppStanding {
    VppStanding {
        token_id: u.token_id,
        status: u.status.as_str().to_owned(),
        terms_accepted: u.status == crate::store::VppUserStatus::Associated,
        invitation: u.invited_at.map(|sent_at| Invitation {
            udid: u.invited_udid,
            sent_at,
            answer: u.invitation_answer,
            answered_at: u.answered_at,
        }),
        apple_account_hash: u.id_hash,
        error: u.error,
    }
}

/// One user with registrations and devices.
pub async fn user_view(state: &ServerState, user_id: &str) -> ServerResult<UserView> {
    let user = state
        .store
        .user(user_id)
        .await?
        .ok_or_else(|| ServerError::not_found("user", user_id))?;
    let vpp = state
        .store
        .vpp_users()
        .await?
        .into_iter()
        .filter(|u| u.user_id == user_id)
        .map(standing)
        .collect();
    let devices = state
        .store
        .devices_of_user(user_id)
        .await?
        .into_iter()
        .map(|d| d.udid)
        .collect();
    Ok(UserView { user, vpp, devices })
}

/// Rules every assignment (new or changed) must follow.
fn check_intent(app: &AppRecord, intent: Intent, license_type: LicenseType) -> ServerResult<()> {
    if app.product_type == "Book" && intent == Intent::Uninstall {
        return Err(ServerError::Invalid {
            field: "intent",
            reason: format!(
                "{} is a book: Apple never revokes or reassigns books, so it cannot be uninstalled",
                describe(app)
            ),
        });
    }
    if license_type == LicenseType::Device && (app.product_type == "Book" || !app.device_assignable)
    {
        return Err(ServerError::Invalid {
            field: "license_type",
            reason: format!(
                "{} cannot be licensed to devices at Apple; use user licensing",
                describe(app)
            ),
        });
    }
    Ok(())
}

/// A change of an assignment.
#[derive(Debug, Clone, Default)]
pub struct AssignmentChange {
    /// New intent.
    pub intent: Option<Intent>,
    /// New license type (user to device migrates silently on enrolled devices).
    pub license_type: Option<LicenseType>,
    /// Install, or license only.
    pub install: Option<bool>,
}

/// Changes an assignment; the engine moves licenses and apps to match.
pub async fn update_assignment(
    state: &ServerState,
    id: &str,
    change: AssignmentChange,
) -> ServerResult<AssignmentRecord> {
    let mut a = state
        .store
        .assignment(id)
        .await?
        .ok_or_else(|| ServerError::not_found("assignment", id))?;
    let app = state
        .store
        .app(&a.app_id)
        .await?
        .ok_or_else(|| ServerError::not_found("app", &a.app_id))?;
    if app.product_type == "Book"
        && (change.intent.is_some_and(|i| i != a.intent)
            || change.license_type.is_some_and(|l| l != a.license_type))
    {
        return Err(ServerError::Invalid {
            field: "intent",
            reason: format!(
                "{} is a book: Apple never revokes or reassigns books",
                describe(&app)
            ),
        });
    }
    a.intent = change.intent.unwrap_or(a.intent);
    a.license_type = change.license_type.unwrap_or(a.license_type);
    a.install = change.install.unwrap_or(a.install);
    check_intent(&app, a.intent, a.license_type)?;
    a.updated_at = Some(state.clock.now());
    state.store.update_assignment(&a).await?;
    state.poke_reconciler();
    Ok(a)
}

/// Deletes an assignment: licenses nothing else needs go back to the pool; apps stay
/// installed (use the Uninstall intent to remove them).
pub async fn delete_assignment(state: &ServerState, id: &str) -> ServerResult<()> {
    let a = state
        .store
        .assignment(id)
        .await?
        .ok_or_else(|| ServerError::not_found("assignment", id))?;
    if let Some(app) = state.store.app(&a.app_id).await?
        && app.product_type == "Book"
    {
        return Err(ServerError::Invalid {
            field: "id",
            reason: format!(
                "{} is a book: Apple never revokes or reassigns books, so its assignment stays",
                describe(&app)
            ),
        });
    }
    state.store.delete_assignment(id).await?;
    state.poke_reconciler();
    Ok(())
}

/// Deletes a group with its memberships and assignments; licenses no other assignment
/// needs go back at the next reconcile. A group holding a book assignment stays:
/// books are never revoked or reassigned.
pub async fn delete_group(state: &ServerState, id: &str) -> ServerResult<()> {
    state
        .store
        .group(id)
        .await?
        .ok_or_else(|| ServerError::not_found("group", id))?;
    for a in state
        .store
        .assignments(&crate::store::Page::all())
        .await?
        .into_iter()
        .filter(|a| a.group_id == id)
    {
        if let Some(app) = state.store.app(&a.app_id).await?
            && app.product_type == "Book"
        {
            return Err(ServerError::Conflict(format!(
                "the group has an assignment of {}, a book: Apple never revokes or reassigns books, so the group stays",
                describe(&app)
            )));
        }
    }
    state.store.delete_group(id).await?;
    state.poke_reconciler();
    Ok(())
}

/// Starts deleting a user: out of every group and off every device at once; its
/// licenses go back and its registrations are retired at Apple, then it is removed.
pub async fn delete_user(state: &ServerState, id: &str) -> ServerResult<()> {
    let user = state
        .store
        .user(id)
        .await?
        .ok_or_else(|| ServerError::not_found("user", id))?;
    if user.deleted_at.is_some()
        || !state
            .store
            .begin_user_deletion(id, state.clock.now())
            .await?
    {
        return Err(ServerError::Conflict(format!(
            "user {id} is being deleted already"
        )));
    }
    state.poke_reconciler();
    Ok(())
}

/// Sends a user's VPP invitation again after the user declined it: the next device of
/// the user that needs it shows it anew.
pub async fn reinvite(state: &ServerState, id: &str) -> ServerResult<UserView> {
    state
        .store
        .user(id)
        .await?
        .ok_or_else(|| ServerError::not_found("user", id))?;
    let declined: Vec<VppUserRecord> = state
        .store
        .vpp_users()
        .await?
        .into_iter()
        .filter(|u| {
            u.user_id == id
                && u.status == crate::store::VppUserStatus::Registered
                && u.invitation_answer
                    .as_deref()
                    .is_some_and(|a| a != "Accepted")
        })
        .collect();
    if declined.is_empty() {
        return Err(ServerError::Conflict(format!(
            "user {id} has no declined invitation to send again"
        )));
    }
    let now = state.clock.now();
    for mut u in declined {
        u.invited_at = None;
        u.invited_udid = None;
        u.invitation_answer = None;
        u.answered_at = None;
        u.error = None;
        u.updated_at = now;
        state.store.put_vpp_user(&u).await?;
    }
    state.poke_reconciler();
    user_view(state, id).await
}

/// Removes devices from a device group.
pub async fn remove_group_devices(
    state: &ServerState,
    group_id: &str,
    udids: &[Udid],
) -> ServerResult<u64> {
    state
        .store
        .group(group_id)
        .await?
        .ok_or_else(|| ServerError::not_found("group", group_id))?;
    let removed = state.store.remove_group_devices(group_id, udids).await?;
    state.poke_reconciler();
    Ok(removed)
}

/// Removes users from a user group; a user no group targets any more loses the user
/// licenses of those apps.
pub async fn remove_group_users(
    state: &ServerState,
    group_id: &str,
    user_ids: &[String],
) -> ServerResult<u64> {
    state
        .store
        .group(group_id)
        .await?
        .ok_or_else(|| ServerError::not_found("group", group_id))?;
    let removed = state.store.remove_group_users(group_id, user_ids).await?;
    state.poke_reconciler();
    Ok(removed)
}

/// Whose licenses to revoke.
#[derive(Debug, Clone)]
pub enum RevokeTarget {
    /// Every device license of a device.
    Device(Udid),
    /// Every user license of a user.
    User(String),
    /// Every license (device and user) of an app.
    App(String),
}

/// What a revocation took back.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = LicensesRevoked)]
pub struct Revoked {
    /// Device licenses taken back.
    pub device_licenses: usize,
    /// User licenses taken back.
    pub user_licenses: usize,
    /// Devices sent a notice for their user (when asked for).
    pub notified_devices: usize,
    /// What happens on the devices.
    pub note: &'static str,
}

/// Revokes licenses: they are disassociated at Apple and not asked for again until
/// the device or user comes under an assignment anew. Apps stay installed on iOS; on
/// macOS they stay usable without updates and are removed after a 30-day grace period.
pub async fn revoke(
    state: &ServerState,
    target: RevokeTarget,
    notify_users: bool,
) -> ServerResult<Revoked> {
    let store = state.store.as_ref();
    let apps: std::collections::HashMap<String, AppRecord> = store
        .apps(&crate::store::Page::all())
        .await?
        .into_iter()
        .map(|a| (a.id.clone(), a))
        .collect();
    let is_book = |app_id: &str| apps.get(app_id).is_some_and(|a| a.product_type == "Book");
    match &target {
        RevokeTarget::Device(udid) => {
            store
                .device(udid)
                .await?
                .ok_or_else(|| ServerError::not_found("device", udid.as_str()))?;
        }
        RevokeTarget::User(id) => {
            store
                .user(id)
                .await?
                .ok_or_else(|| ServerError::not_found("user", id))?;
        }
        RevokeTarget::App(id) => {
            let app = apps
                .get(id)
                .ok_or_else(|| ServerError::not_found("app", id))?;
            if app.product_type == "Book" {
                return Err(ServerError::Invalid {
                    field: "app_id",
                    reason: format!("{} is a book: Apple never revokes books", describe(app)),
                });
            }
        }
    }
    let now = state.clock.now();
    let held = |s: crate::store::LicenseState| s == crate::store::LicenseState::Associated;
    let mut by_app: std::collections::BTreeMap<String, Vec<Udid>> = Default::default();
    if !matches!(target, RevokeTarget::User(_)) {
        for l in store.licenses().await? {
            let wanted = match &target {
                RevokeTarget::Device(udid) => &l.udid == udid,
                RevokeTarget::App(id) => &l.app_id == id,
                RevokeTarget::User(_) => false,
            };
            if wanted && held(l.state) && !is_book(&l.app_id) {
                by_app.entry(l.app_id.clone()).or_default().push(l.udid);
            }
        }
    }
    let device_licenses = by_app.values().map(Vec::len).sum();
    for (app_id, udids) in &by_app {
        store
            .set_license_states(
                app_id,
                udids,
                crate::store::LicenseState::Revoking,
                None,
                now,
            )
            .await?;
    }
    let mut user_rows = Vec::new();
    if !matches!(target, RevokeTarget::Device(_)) {
        for l in store.user_licenses().await? {
            let wanted = match &target {
                RevokeTarget::User(id) => &l.user_id == id,
                RevokeTarget::App(id) => &l.app_id == id,
                RevokeTarget::Device(_) => false,
            };
            if wanted && held(l.state) && !is_book(&l.app_id) {
                user_rows.push(crate::store::UserLicenseRecord {
                    state: crate::store::LicenseState::Revoking,
                    event_id: None,
                    updated_at: now,
                    ..l
                });
            }
        }
    }
    store.put_user_licenses(&user_rows).await?;
    // The users are told on their devices: Apple's API v2 does not notify them.
    let mut notified_devices = 0;
    if notify_users {
        let mut told: std::collections::BTreeMap<Udid, Vec<String>> = Default::default();
        for (app_id, udids) in &by_app {
            for udid in udids {
                told.entry(udid.clone()).or_default().push(app_id.clone());
            }
        }
        for l in &user_rows {
            for device in store.devices_of_user(&l.user_id).await? {
                told.entry(device.udid).or_default().push(l.app_id.clone());
            }
        }
        let now = state.clock.now();
        let mut notices = Vec::new();
        for (udid, app_ids) in told {
            let names: Vec<String> = app_ids
                .iter()
                .filter_map(|id| apps.get(id).map(describe))
                .collect();
            let notice = orchard_protocol::command::Notice {
                title: "App license taken back".into(),
                message: format!(
                    "Your organisation took back the license of {}. On iPhone and iPad the app stays and gets no updates; on a Mac it stays usable without updates for 30 days.",
                    names.join(", ")
                ),
            };
            notices.push(NewCommand::new(
                &udid,
                orchard_protocol::command::Command::Notice(notice),
                None,
                now,
            )?);
        }
        notified_devices = notices.len();
        store.enqueue(&notices).await?;
        state.wake_for(&notices);
    }
    state.poke_reconciler();
    Ok(Revoked {
        device_licenses,
        user_licenses: user_rows.len(),
        notified_devices,
        note: "licenses are disassociated at Apple; apps stay installed on iOS; on macOS they stay usable without updates and are removed after a 30-day grace period; books are never revoked",
    })
}

fn describe(app: &AppRecord) -> String {
    match &app.name {
        Some(name) => format!("{name} ({})", app.adam_id),
        None => format!("asset {}", app.adam_id),
    }
}

/// The app `app_id`, or a not-found error naming it.
pub async fn app_or_not_found(state: &ServerState, app_id: &str) -> ServerResult<AppRecord> {
    state
        .store
        .app(app_id)
        .await?
        .ok_or_else(|| ServerError::not_found("app", app_id))
}

/// An app's install states and licenses in one answer: counts, not devices.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AppSummary {
    /// App id.
    pub app_id: String,
    /// App Store id.
    pub adam_id: String,
    /// Store name.
    pub name: Option<String>,
    /// Devices with an install status.
    pub devices: i64,
    /// Devices by install status.
    pub installs: BTreeMap<&'static str, i64>,
    /// Devices by platform (`ios`, `ipados`, `macos`, `unknown`), then by status.
    pub platforms: BTreeMap<&'static str, BTreeMap<&'static str, i64>>,
    /// The token's licenses of the app, as Apple last reported them (the API shows
    /// them as it shows an app's).
    #[serde(skip)]
    pub licenses: crate::store::LicenseCounts,
}

/// Counts of an app's install states by status and platform, and its license counts.
pub async fn app_summary(state: &ServerState, app_id: &str) -> ServerResult<AppSummary> {
    let app = app_or_not_found(state, app_id).await?;
    let mut summary = AppSummary {
        app_id: app.id,
        adam_id: app.adam_id.to_string(),
        name: app.name,
        devices: 0,
        installs: BTreeMap::new(),
        platforms: BTreeMap::new(),
        licenses: app.counts,
    };
    for count in state.store.install_counts(app_id).await? {
        let status = count.status.as_str();
        let platform =
            crate::engine::applicability::platform_of(count.product_name.as_deref()).as_str();
        summary.devices += count.devices;
        *summary.installs.entry(status).or_default() += count.devices;
        *summary
            .platforms
            .entry(platform)
            .or_default()
            .entry(status)
            .or_default() += count.devices;
    }
    Ok(summary)
}

/// Sets how long installs of an app may stay `Installing` (none: the server default).
pub async fn set_install_timeout(
    state: &ServerState,
    app_id: &str,
    seconds: Option<i64>,
) -> ServerResult<AppRecord> {
    if let Some(s) = seconds
        && !(1..=7 * 24 * 3600).contains(&s)
    {
        return Err(ServerError::Invalid {
            field: "install_timeout_seconds",
            reason: "must be between 1 and 604800 seconds (a week), or null for the server default"
                .into(),
        });
    }
    if !state.store.set_app_install_timeout(app_id, seconds).await? {
        return Err(ServerError::not_found("app", app_id));
    }
    app_or_not_found(state, app_id).await
}

/// Asks a device again about every app this server installed on it: whether it is
/// still there, with which version (Apple's ManagedApplicationList, then
/// InstalledApplicationList). A user who deleted an app shows up as not installed.
pub async fn refresh_inventory(state: &ServerState, udid: &Udid) -> ServerResult<usize> {
    state
        .store
        .device(udid)
        .await?
        .ok_or_else(|| ServerError::not_found("device", udid.as_str()))?;
    let mut commands = Vec::new();
    for row in state.store.installs_of_device(udid).await? {
        let Some(app) = state.store.app(&row.app_id).await? else {
            continue;
        };
        let Some(bundle_id) = app.bundle_id else {
            continue;
        };
        let command = orchard_protocol::command::Command::ManagedApplicationList(
            orchard_protocol::command::ManagedApplicationList {
                identifiers: Some(vec![bundle_id]),
            },
        );
        commands.push(NewCommand::new(
            udid,
            command,
            Some(app.id),
            state.clock.now(),
        )?);
    }
    state.store.enqueue(&commands).await?;
    state.wake_for(&commands);
    Ok(commands.len())
}

/// Changes of a token's settings.
#[derive(Debug, Clone, Default)]
pub struct TokenSettings {
    /// Display name.
    pub name: Option<String>,
    /// Order among tokens holding the same app (lower first).
    pub priority: Option<i64>,
    /// Apple ID of the managing account.
    pub apple_id: Option<String>,
    /// Store country for metadata (two letters); refreshed at the next sync.
    pub store_country: Option<String>,
    /// `business` or `education`.
    pub account_type: Option<String>,
    /// Push newer versions to Required devices.
    pub automatic_updates: Option<bool>,
}

fn check_settings(s: &TokenSettings) -> ServerResult<()> {
    if let Some(p) = s.priority
        && !(0..=1_000_000).contains(&p)
    {
        return Err(ServerError::Invalid {
            field: "priority",
            reason: "must be between 0 and 1000000 (lower is used first)".into(),
        });
    }
    if let Some(c) = &s.store_country
        && (c.len() != 2 || !c.chars().all(|ch| ch.is_ascii_alphabetic()))
    {
        return Err(ServerError::Invalid {
            field: "country",
            reason: format!("{c:?} is not a two-letter country code such as US or DE"),
        });
    }
    if let Some(t) = &s.account_type
        && t != "business"
        && t != "education"
    {
        return Err(ServerError::Invalid {
            field: "account_type",
            reason: format!("{t:?} is neither business nor education"),
        });
    }
    if s.name.as_ref().is_some_and(|n| n.trim().is_empty()) {
        return Err(ServerError::Invalid {
            field: "name",
            reason: "must not be empty".into(),
        });
    }
    Ok(())
}

fn apply_settings(token: &mut VppTokenRecord, s: TokenSettings) {
    if let Some(name) = s.name {
        token.name = name.trim().to_owned();
    }
    if let Some(p) = s.priority {
        token.priority = p;
    }
    if let Some(a) = s.apple_id {
        token.apple_id = Some(a);
    }
    if let Some(c) = s.store_country {
        token.store_country = Some(c.to_uppercase());
    }
    if let Some(t) = s.account_type {
        token.account_type = t;
    }
    if let Some(u) = s.automatic_updates {
        token.automatic_updates = u;
    }
}

/// Changes a token's settings.
pub async fn update_token_settings(
    state: &ServerState,
    token_id: &str,
    settings: TokenSettings,
) -> ServerResult<VppTokenRecord> {
    check_settings(&settings)?;
    let mut token = state
        .store
        .token(token_id)
        .await?
        .ok_or_else(|| ServerError::not_found("token", token_id))?;
    apply_settings(&mut token, settings);
    state.store.update_token(&token).await?;
    state.poke_reconciler();
    Ok(token)
}

/// Deletes a device: it leaves its groups and management records; its device licenses
/// go back to the pool. (A device that is still enrolled can check in again only by
/// enrolling anew.)
pub async fn delete_device(state: &ServerState, udid: &Udid) -> ServerResult<()> {
    if !state.store.delete_device(udid).await? {
        return Err(ServerError::not_found("device", udid.as_str()));
    }
    state.poke_reconciler();
    Ok(())
}

/// What an admin asks for when creating an enrollment token.
#[derive(Debug, Clone)]
pub struct NewEnrollmentToken {
    /// What it is for.
    pub name: String,
    /// Enrollments it admits (1: single-use).
    pub uses: i64,
    /// How long it is valid.
    pub valid_for: std::time::Duration,
    /// Only this serial number may use it.
    pub serial_number: Option<SerialNumber>,
    /// Only this UDID may use it.
    pub udid: Option<Udid>,
}

/// Most uses of one enrollment token.
pub const MAX_TOKEN_USES: i64 = 100_000;
/// Longest validity of an enrollment token.
pub const MAX_TOKEN_VALIDITY: std::time::Duration = std::time::Duration::from_secs(365 * 24 * 3600);

/// Creates an enrollment token; returns its record and the token itself (shown once,
/// only its hash is kept).
pub async fn create_enrollment_token(
    state: &ServerState,
    new: NewEnrollmentToken,
) -> ServerResult<(EnrollmentTokenRecord, String)> {
    if !(1..=MAX_TOKEN_USES).contains(&new.uses) {
        return Err(ServerError::Invalid {
            field: "uses",
            reason: format!("must be 1 to {MAX_TOKEN_USES}"),
        });
    }
    if new.valid_for.is_zero() || new.valid_for > MAX_TOKEN_VALIDITY {
        return Err(ServerError::Invalid {
            field: "expires_in_seconds",
            reason: "must be more than 0 and at most a year (31536000)".into(),
        });
    }
    if new.name.trim().is_empty() || new.name.len() > 200 {
        return Err(ServerError::Invalid {
            field: "name",
            reason: "must be 1 to 200 characters".into(),
        });
    }
    let token = crate::secret::random();
    let now = state.clock.now();
    let record = EnrollmentTokenRecord {
        id: uuid::Uuid::new_v4().to_string(),
        name: new.name,
        token_hash: crate::device::enroll::enrollment_token_hash(&token),
        uses_left: new.uses,
        expires_at: now + new.valid_for,
        serial_number: new.serial_number,
        udid: new.udid,
        revoked: false,
        created_at: now,
    };
    state.store.insert_enrollment_token(&record).await?;
    Ok((record, token))
}

/// Revokes an enrollment token.
pub async fn revoke_enrollment_token(state: &ServerState, id: &str) -> ServerResult<()> {
    if !state.store.revoke_enrollment_token(id).await? {
        return Err(ServerError::not_found("enrollment token", id));
    }
    Ok(())
}

/// Replaces the shared enrollment secret; the old one stops working at once.
pub async fn rotate_enrollment_secret(state: &ServerState) -> ServerResult<String> {
    let secret = crate::secret::random();
    state
        .store
        .put_secret_setting(crate::device::enroll::ENROLLMENT_SECRET, &secret)
        .await?;
    Ok(secret)
}

/// Releases a device's enrollment: the next enrollment of its UDID is admitted (a wiped
/// device enrolling again). Its current certificate works until then.
pub async fn release_device(state: &ServerState, udid: &Udid) -> ServerResult<()> {
    if !state.store.release_device(udid).await? {
        return Err(ServerError::not_found("device", udid.as_str()));
    }
    Ok(())
}
