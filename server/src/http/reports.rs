//! The filtered lists admins report from: devices, installs, prompts and the audit
//! log, each paginated, each filter applied in the database, and every parameter a
//! list does not know refused (400) rather than ignored.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use orchard_protocol::Udid;
use orchard_protocol::prompt::PromptKind;
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::admin::{ApiPath, ApiQuery};
use super::error::{ApiError, ErrorBody};
use super::list::{List, Paging};
use crate::admin::Actor;
use crate::clock::Timestamp;
use crate::error::ServerError;
use crate::state::ServerState;
use crate::store::rows::two_key;
use crate::store::{
    AuditEntry, AuditFilter, DeviceFilter, DeviceRecord, EnrollmentStatus, InstallFilter,
    InstallRecord, InstallStatus, Platform, PromptFilter, PromptRecord, os_version_key,
};

type ApiResult<T> = Result<T, ApiError>;

/// Routes of the filtered lists.
pub(super) fn router() -> OpenApiRouter<ServerState> {
    OpenApiRouter::new()
        .routes(routes!(devices))
        .routes(routes!(installs))
        .routes(routes!(app_installs))
        .routes(routes!(device_installs))
        .routes(routes!(user_installs))
        .routes(routes!(prompts))
        .routes(routes!(app_prompts))
        .routes(routes!(device_prompts))
        .routes(routes!(audit))
}

/// Filters of `GET /v1/devices`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct DeviceQuery {
    /// Items in a page, 1 to 1000; 100 when not given.
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
    /// The previous page's `next_cursor`.
    cursor: Option<String>,
    /// Devices of this platform.
    platform: Option<Platform>,
    /// e.g. `17.2`: devices on that version or later.
    os_at_least: Option<String>,
    /// e.g. `18`: devices on an earlier version.
    os_below: Option<String>,
    /// Devices in this group (a user group: its users' devices).
    group_id: Option<String>,
    /// Supervised (or not), as last reported.
    supervised: Option<bool>,
    /// `Corporate` or `Personal`.
    ownership: Option<String>,
    /// Devices in this enrollment state.
    status: Option<EnrollmentStatus>,
    /// RFC 3339: devices seen at or after.
    seen_since: Option<Timestamp>,
    /// RFC 3339: devices last seen before.
    seen_before: Option<Timestamp>,
    /// Devices of this user.
    user_id: Option<String>,
}

fn version(field: &'static str, value: Option<String>) -> ApiResult<Option<String>> {
    value
        .map(|v| {
            os_version_key(&v).ok_or_else(|| {
                ServerError::Invalid {
                    field,
                    reason: format!("{v:?} is not an OS version such as 17.2 or 14"),
                }
                .into()
            })
        })
        .transpose()
}

fn bad_query(message: String) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", message)
}

/// Enrolled devices, by UDID, filtered.
#[utoipa::path(
    get,
    path = "/v1/devices",
    tag = "devices",
    params(DeviceQuery),
    responses((status = 200, description = "A page of devices", body = List<DeviceRecord>)),
)]
async fn devices(
    State(state): State<ServerState>,
    _actor: Actor,
    ApiQuery(q): ApiQuery<DeviceQuery>,
) -> ApiResult<Json<List<DeviceRecord>>> {
    let paging = Paging::new("devices", q.limit, q.cursor.as_deref())?;
    let filter = DeviceFilter {
        platform: q.platform,
        os_at_least: version("os_at_least", q.os_at_least).map_err(|e| bad_query(e.message))?,
        os_below: version("os_below", q.os_below).map_err(|e| bad_query(e.message))?,
        group_id: q.group_id,
        supervised: q.supervised,
        ownership: q.ownership,
        status: q.status,
        seen_since: q.seen_since,
        seen_before: q.seen_before,
        user_id: q.user_id,
    };
    let items = state.store.devices(&filter, paging.page()).await?;
    Ok(Json(paging.list(items, |d| d.udid.0.clone(), |d| d)))
}

/// Filters of `GET /v1/installs`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct InstallQuery {
    /// Items in a page, 1 to 1000; 100 when not given.
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
    /// The previous page's `next_cursor`.
    cursor: Option<String>,
    /// Installs in this status.
    status: Option<InstallStatus>,
    /// On devices of this platform.
    platform: Option<Platform>,
    /// On devices of this group.
    group_id: Option<String>,
    /// Of apps of this VPP token.
    token_id: Option<String>,
    /// Of this app.
    app_id: Option<String>,
    /// On this device.
    udid: Option<String>,
    /// On this user's devices.
    user_id: Option<String>,
}

/// Filters of the install lists under an app, a device or a user (which the path
/// names).
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct NestedInstallQuery {
    /// Items in a page, 1 to 1000; 100 when not given.
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
    /// The previous page's `next_cursor`.
    cursor: Option<String>,
    /// Installs in this status.
    status: Option<InstallStatus>,
    /// On devices of this platform.
    platform: Option<Platform>,
    /// On devices of this group.
    group_id: Option<String>,
    /// Of apps of this VPP token.
    token_id: Option<String>,
}

impl From<NestedInstallQuery> for InstallQuery {
    fn from(q: NestedInstallQuery) -> Self {
        Self {
            limit: q.limit,
            cursor: q.cursor,
            status: q.status,
            platform: q.platform,
            group_id: q.group_id,
            token_id: q.token_id,
            app_id: None,
            udid: None,
            user_id: None,
        }
    }
}

impl InstallQuery {
    fn filter(self) -> InstallFilter {
        InstallFilter {
            app_id: self.app_id,
            udid: self.udid.map(Udid),
            user_id: self.user_id,
            status: self.status,
            platform: self.platform,
            group_id: self.group_id,
            token_id: self.token_id,
        }
    }
}

async fn install_list(
    state: &ServerState,
    q: InstallQuery,
    set: impl FnOnce(&mut InstallFilter),
) -> ApiResult<Json<List<InstallRecord>>> {
    let paging = Paging::new("installs", q.limit, q.cursor.as_deref())?;
    let mut filter = q.filter();
    set(&mut filter);
    let items = state.store.installs(&filter, paging.page()).await?;
    Ok(Json(paging.list(
        items,
        |i| two_key(&i.app_id, i.udid.as_str()),
        |i| i,
    )))
}

/// Install states of apps on devices, filtered, by app and device.
#[utoipa::path(
    get,
    path = "/v1/installs",
    tag = "installs",
    params(InstallQuery),
    responses((status = 200, description = "A page of installs", body = List<InstallRecord>)),
)]
async fn installs(
    State(state): State<ServerState>,
    _actor: Actor,
    ApiQuery(q): ApiQuery<InstallQuery>,
) -> ApiResult<Json<List<InstallRecord>>> {
    install_list(&state, q, |_| {}).await
}

/// One app's install states on devices.
#[utoipa::path(
    get,
    path = "/v1/apps/{id}/installs",
    tag = "installs",
    params(("id" = String, Path, description = "The app's id"), NestedInstallQuery),
    responses(
        (status = 200, description = "A page of the app's installs", body = List<InstallRecord>),
        (status = 404, description = "No such app", body = ErrorBody),
    ),
)]
async fn app_installs(
    State(state): State<ServerState>,
    _actor: Actor,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<NestedInstallQuery>,
) -> ApiResult<Json<List<InstallRecord>>> {
    crate::admin::app_or_not_found(&state, &id).await?;
    install_list(&state, q.into(), |f| f.app_id = Some(id)).await
}

/// One device's install states.
#[utoipa::path(
    get,
    path = "/v1/devices/{udid}/installs",
    tag = "installs",
    params(("udid" = String, Path, description = "The device's UDID"), NestedInstallQuery),
    responses(
        (status = 200, description = "A page of the device's installs", body = List<InstallRecord>),
        (status = 404, description = "No such device", body = ErrorBody),
    ),
)]
async fn device_installs(
    State(state): State<ServerState>,
    _actor: Actor,
    ApiPath(udid): ApiPath<String>,
    ApiQuery(q): ApiQuery<NestedInstallQuery>,
) -> ApiResult<Json<List<InstallRecord>>> {
    let udid = device_or_not_found(&state, udid).await?;
    install_list(&state, q.into(), |f| f.udid = Some(udid)).await
}

/// Install states on one user's devices.
#[utoipa::path(
    get,
    path = "/v1/users/{id}/installs",
    tag = "installs",
    params(("id" = String, Path, description = "The user's id"), NestedInstallQuery),
    responses(
        (status = 200, description = "A page of the user's installs", body = List<InstallRecord>),
        (status = 404, description = "No such user", body = ErrorBody),
    ),
)]
async fn user_installs(
    State(state): State<ServerState>,
    _actor: Actor,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<NestedInstallQuery>,
) -> ApiResult<Json<List<InstallRecord>>> {
    let q = InstallQuery::from(q);
    state
        .store
        .user(&id)
        .await?
        .ok_or_else(|| ServerError::not_found("user", &id))?;
    install_list(&state, q, |f| f.user_id = Some(id)).await
}

async fn device_or_not_found(state: &ServerState, udid: String) -> ApiResult<Udid> {
    let udid = Udid(udid);
    state
        .store
        .device(&udid)
        .await?
        .ok_or_else(|| ServerError::not_found("device", udid.as_str()))?;
    Ok(udid)
}

/// An answer to filter prompts by (`none`: not answered yet).
#[derive(Debug, Clone, Copy, Deserialize, utoipa::ToSchema)]
enum AnswerParam {
    Accepted,
    Declined,
    Dismissed,
    /// Not answered yet.
    #[serde(rename = "none")]
    Unanswered,
}

/// Filters of `GET /v1/prompts`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct PromptQuery {
    /// Items in a page, 1 to 1000; 100 when not given.
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
    /// The previous page's `next_cursor`.
    cursor: Option<String>,
    /// Prompts of this kind.
    #[param(inline)]
    kind: Option<PromptKind>,
    /// Prompts answered so (`none`: not answered yet).
    #[param(inline)]
    answer: Option<AnswerParam>,
    /// Prompts on this device.
    udid: Option<String>,
    /// Prompts about this app.
    app_id: Option<String>,
}

/// Filters of the prompt lists under an app or a device (which the path names).
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct NestedPromptQuery {
    /// Items in a page, 1 to 1000; 100 when not given.
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
    /// The previous page's `next_cursor`.
    cursor: Option<String>,
    /// Prompts of this kind.
    #[param(inline)]
    kind: Option<PromptKind>,
    /// Prompts answered so (`none`: not answered yet).
    #[param(inline)]
    answer: Option<AnswerParam>,
}

impl From<NestedPromptQuery> for PromptQuery {
    fn from(q: NestedPromptQuery) -> Self {
        Self {
            limit: q.limit,
            cursor: q.cursor,
            kind: q.kind,
            answer: q.answer,
            udid: None,
            app_id: None,
        }
    }
}

async fn prompt_list(
    state: &ServerState,
    q: PromptQuery,
    udid: Option<Udid>,
    app_id: Option<String>,
) -> ApiResult<Json<List<PromptRecord>>> {
    let paging = Paging::new("prompts", q.limit, q.cursor.as_deref())?;
    let bundle_id = match app_id {
        Some(id) => {
            let app = crate::admin::app_or_not_found(state, &id).await?;
            // An app the store has not described yet has no bundle ID: no prompts.
            let Some(bundle) = app.bundle_id else {
                return Ok(Json(paging.list(
                    Vec::new(),
                    |_: &PromptRecord| String::new(),
                    |p| p,
                )));
            };
            Some(bundle)
        }
        None => None,
    };
    let filter = PromptFilter {
        udid,
        bundle_id,
        kind: q.kind.map(|k| k.as_str().to_owned()),
        answer: q.answer.map(|a| match a {
            AnswerParam::Accepted => Some("Accepted".to_owned()),
            AnswerParam::Declined => Some("Declined".to_owned()),
            AnswerParam::Dismissed => Some("Dismissed".to_owned()),
            AnswerParam::Unanswered => None,
        }),
    };
    let items = state.store.prompts(&filter, paging.page()).await?;
    Ok(Json(paging.list(
        items,
        |p| two_key(p.udid.as_str(), &p.prompt_id),
        |p| p,
    )))
}

/// What devices asked their users and the answers, by device, filtered.
#[utoipa::path(
    get,
    path = "/v1/prompts",
    tag = "prompts",
    params(PromptQuery),
    responses(
        (status = 200, description = "A page of prompts", body = List<PromptRecord>),
        (status = 404, description = "No such app (`app_id`)", body = ErrorBody),
    ),
)]
async fn prompts(
    State(state): State<ServerState>,
    _actor: Actor,
    ApiQuery(mut q): ApiQuery<PromptQuery>,
) -> ApiResult<Json<List<PromptRecord>>> {
    let udid = q.udid.take().map(Udid);
    let app_id = q.app_id.take();
    prompt_list(&state, q, udid, app_id).await
}

/// The prompts about one app.
#[utoipa::path(
    get,
    path = "/v1/apps/{id}/prompts",
    tag = "prompts",
    params(("id" = String, Path, description = "The app's id"), NestedPromptQuery),
    responses(
        (status = 200, description = "A page of the app's prompts", body = List<PromptRecord>),
        (status = 404, description = "No such app", body = ErrorBody),
    ),
)]
async fn app_prompts(
    State(state): State<ServerState>,
    _actor: Actor,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<NestedPromptQuery>,
) -> ApiResult<Json<List<PromptRecord>>> {
    prompt_list(&state, q.into(), None, Some(id)).await
}

/// The prompts one device showed.
#[utoipa::path(
    get,
    path = "/v1/devices/{udid}/prompts",
    tag = "prompts",
    params(("udid" = String, Path, description = "The device's UDID"), NestedPromptQuery),
    responses(
        (status = 200, description = "A page of the device's prompts", body = List<PromptRecord>),
        (status = 404, description = "No such device", body = ErrorBody),
    ),
)]
async fn device_prompts(
    State(state): State<ServerState>,
    _actor: Actor,
    ApiPath(udid): ApiPath<String>,
    ApiQuery(q): ApiQuery<NestedPromptQuery>,
) -> ApiResult<Json<List<PromptRecord>>> {
    let udid = device_or_not_found(&state, udid).await?;
    prompt_list(&state, q.into(), Some(udid), None).await
}

/// Filters of `GET /v1/audit`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct AuditQuery {
    /// Items in a page, 1 to 1000; 100 when not given.
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
    /// The previous page's `next_cursor`.
    cursor: Option<String>,
    /// An admin token's name or id.
    actor: Option<String>,
    /// The action, e.g. `group.create`.
    action: Option<String>,
    /// The target's id.
    target: Option<String>,
    /// RFC 3339: entries at or after.
    since: Option<Timestamp>,
    /// RFC 3339: entries before.
    before: Option<Timestamp>,
}

/// Who did what through the API, newest first.
#[utoipa::path(
    get,
    path = "/v1/audit",
    tag = "audit",
    params(AuditQuery),
    responses((status = 200, description = "A page of the audit log", body = List<AuditEntry>)),
)]
async fn audit(
    State(state): State<ServerState>,
    _actor: Actor,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> ApiResult<Json<List<AuditEntry>>> {
    let paging = Paging::numbered("audit", q.limit, q.cursor.as_deref())?;
    let filter = AuditFilter {
        actor: q.actor,
        action: q.action,
        target: q.target,
        since: q.since,
        before: q.before,
    };
    let items = state.store.audit_log(&filter, paging.page()).await?;
    Ok(Json(paging.list(items, |e| e.id.to_string(), |e| e)))
}
