//! The admin services behind the API: tokens, groups, assignments and reports. Business
//! rules live here; the HTTP layer only parses, authorizes and maps results.

use orchard_protocol::Udid;
use serde::Serialize;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::clock;
use crate::error::{ServerError, ServerResult};
use crate::state::ServerState;
use crate::store::{
    AppRecord, AssignmentRecord, AuditEntry, GroupKind, GroupRecord, InstallRecord, Intent,
    LicenseType, VppTokenRecord,
};
use crate::vpp::TokenFile;

/// Who is acting (for the audit log).
#[derive(Debug, Clone)]
pub struct Actor {
    /// Admin token name.
    pub name: String,
    /// Role.
    pub role: String,
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
        at: clock::now(),
        actor: actor.name.clone(),
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
    let file = TokenFile::parse(&upload.token_file, OffsetDateTime::now_utc())?;
    if state.store.token_count().await? >= state.options.max_tokens {
        return Err(ServerError::LimitReached(format!(
            "this server already holds {} tokens, the most it allows",
            state.options.max_tokens
        )));
    }
    let record = VppTokenRecord {
        id: uuid::Uuid::new_v4().to_string(),
        name: upload.name.trim().to_owned(),
        org_name: file.org_name,
        secret_hash: hex::encode(Sha256::digest(file.s_token.as_bytes())),
        secret: file.s_token,
        expires_at: clock::rfc3339(file.expires_at),
        location_name: None,
        country: None,
        location_uid: None,
        created_at: clock::now(),
        last_sync_at: None,
        last_sync_error: None,
    };
    if !state.store.insert_token(&record).await? {
        return Err(ServerError::Conflict(
            "this token file has already been uploaded".into(),
        ));
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
        created_at: clock::now(),
    };
    if !state.store.insert_group(&group).await? {
        return Err(ServerError::Conflict(format!(
            "a group named {name:?} already exists"
        )));
    }
    Ok(group)
}

/// Adds enrolled devices to a group; every UDID must be known.
pub async fn add_group_devices(
    state: &ServerState,
    group_id: &str,
    udids: &[Udid],
) -> ServerResult<u64> {
    state
        .store
        .group(group_id)
        .await?
        .ok_or_else(|| ServerError::not_found("group", group_id))?;
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
        .add_group_devices(group_id, udids, &clock::now())
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
) -> ServerResult<AssignmentRecord> {
    let app = state
        .store
        .app(app_id)
        .await?
        .ok_or_else(|| ServerError::not_found("app", app_id))?;
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
    if intent != Intent::Required || license_type != LicenseType::Device {
        return Err(ServerError::Invalid {
            field: "intent",
            reason: "this server supports Required assignments with device licensing".into(),
        });
    }
    if license_type == LicenseType::Device && (app.product_type == "Book" || !app.device_assignable)
    {
        return Err(ServerError::Invalid {
            field: "license_type",
            reason: format!(
                "{} cannot be licensed to devices at Apple; use user licensing",
                describe(&app)
            ),
        });
    }
    let assignment = AssignmentRecord {
        id: uuid::Uuid::new_v4().to_string(),
        app_id: app.id.clone(),
        group_id: group.id.clone(),
        intent,
        license_type,
        created_at: clock::now(),
    };
    if !state.store.insert_assignment(&assignment).await? {
        return Err(ServerError::Conflict(format!(
            "app {} is already assigned to group {}",
            app.id, group.id
        )));
    }
    state.poke_reconciler();
    Ok(assignment)
}

fn describe(app: &AppRecord) -> String {
    match &app.name {
        Some(name) => format!("{name} ({})", app.adam_id),
        None => format!("asset {}", app.adam_id),
    }
}

/// An app with its install states, for reports.
#[derive(Debug, Clone, Serialize)]
pub struct AppInstalls {
    /// App id.
    pub app_id: String,
    /// Per device.
    pub installs: Vec<InstallRecord>,
}

/// Install states of one app.
pub async fn app_installs(state: &ServerState, app_id: &str) -> ServerResult<AppInstalls> {
    state
        .store
        .app(app_id)
        .await?
        .ok_or_else(|| ServerError::not_found("app", app_id))?;
    Ok(AppInstalls {
        app_id: app_id.to_owned(),
        installs: state.store.installs_of_app(app_id).await?,
    })
}
