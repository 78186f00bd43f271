//! The filtered lists admins report from: devices, installs, prompts and the audit
//! log, each paginated, each filter applied in the database, and every parameter a
//! list does not know refused (400) rather than ignored.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use orchard_protocol::Udid;
use orchard_protocol::prompt::PromptKind;
use serde::Deserialize;

use super::admin::{ApiPath, ApiQuery};
use super::error::ApiError;
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
pub(super) fn router() -> Router<ServerState> {
    Router::new()
        .route("/v1/devices", get(devices))
        .route("/v1/installs", get(installs))
        .route("/v1/apps/{id}/installs", get(app_installs))
        .route("/v1/devices/{udid}/installs", get(device_installs))
        .route("/v1/users/{id}/installs", get(user_installs))
        .route("/v1/prompts", get(prompts))
        .route("/v1/apps/{id}/prompts", get(app_prompts))
        .route("/v1/devices/{udid}/prompts", get(device_prompts))
        .route("/v1/audit", get(audit))
}

/// Filters of `GET /v1/devices`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeviceQuery {
    limit: Option<i64>,
    cursor: Option<String>,
    platform: Option<Platform>,
    /// e.g. `17.2`: devices on that version or later.
    os_at_least: Option<String>,
    /// e.g. `18`: devices on an earlier version.
    os_below: Option<String>,
    group_id: Option<String>,
    supervised: Option<bool>,
    ownership: Option<String>,
    status: Option<EnrollmentStatus>,
    /// RFC 3339: devices seen at or after.
    seen_since: Option<Timestamp>,
    /// RFC 3339: devices last seen before.
    seen_before: Option<Timestamp>,
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

/// Filters of the install lists (`app_id`, `udid` and `user_id` only on
/// `GET /v1/installs`; the nested lists take theirs from the path).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InstallQuery {
    limit: Option<i64>,
    cursor: Option<String>,
    status: Option<InstallStatus>,
    platform: Option<Platform>,
    group_id: Option<String>,
    token_id: Option<String>,
    app_id: Option<String>,
    udid: Option<String>,
    user_id: Option<String>,
}

impl InstallQuery {
    /// Refuses a filter the path already sets.
    fn nested(&self, path_sets: &str) -> ApiResult<()> {
        let given = [
            ("app_id", self.app_id.is_some()),
            ("udid", self.udid.is_some()),
            ("user_id", self.user_id.is_some()),
        ];
        match given.iter().find(|(_, set)| *set) {
            Some((name, _)) => Err(bad_query(format!(
                "unknown query parameter `{name}` here: the path names the {path_sets}; use GET /v1/installs to filter by {name}"
            ))),
            None => Ok(()),
        }
    }

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

async fn installs(
    State(state): State<ServerState>,
    _actor: Actor,
    ApiQuery(q): ApiQuery<InstallQuery>,
) -> ApiResult<Json<List<InstallRecord>>> {
    install_list(&state, q, |_| {}).await
}

async fn app_installs(
    State(state): State<ServerState>,
    _actor: Actor,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<InstallQuery>,
) -> ApiResult<Json<List<InstallRecord>>> {
    q.nested("app")?;
    crate::admin::app_or_not_found(&state, &id).await?;
    install_list(&state, q, |f| f.app_id = Some(id)).await
}

async fn device_installs(
    State(state): State<ServerState>,
    _actor: Actor,
    ApiPath(udid): ApiPath<String>,
    ApiQuery(q): ApiQuery<InstallQuery>,
) -> ApiResult<Json<List<InstallRecord>>> {
    q.nested("device")?;
    let udid = device_or_not_found(&state, udid).await?;
    install_list(&state, q, |f| f.udid = Some(udid)).await
}

async fn user_installs(
    State(state): State<ServerState>,
    _actor: Actor,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<InstallQuery>,
) -> ApiResult<Json<List<InstallRecord>>> {
    q.nested("user")?;
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

/// An answer to filter prompts by.
#[derive(Debug, Clone, Copy, Deserialize)]
enum AnswerParam {
    Accepted,
    Declined,
    Dismissed,
    /// Not answered yet.
    #[serde(rename = "none")]
    Unanswered,
}

/// Filters of the prompt lists (`udid` and `app_id` only on `GET /v1/prompts`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PromptQuery {
    limit: Option<i64>,
    cursor: Option<String>,
    kind: Option<PromptKind>,
    answer: Option<AnswerParam>,
    udid: Option<String>,
    app_id: Option<String>,
}

impl PromptQuery {
    fn nested(&self, path_sets: &str) -> ApiResult<()> {
        if self.udid.is_some() || self.app_id.is_some() {
            return Err(bad_query(format!(
                "unknown query parameter here: the path names the {path_sets}; use GET /v1/prompts to filter by udid or app_id"
            )));
        }
        Ok(())
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

async fn prompts(
    State(state): State<ServerState>,
    _actor: Actor,
    ApiQuery(mut q): ApiQuery<PromptQuery>,
) -> ApiResult<Json<List<PromptRecord>>> {
    let udid = q.udid.take().map(Udid);
    let app_id = q.app_id.take();
    prompt_list(&state, q, udid, app_id).await
}

async fn app_prompts(
    State(state): State<ServerState>,
    _actor: Actor,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<PromptQuery>,
) -> ApiResult<Json<List<PromptRecord>>> {
    q.nested("app")?;
    prompt_list(&state, q, None, Some(id)).await
}

async fn device_prompts(
    State(state): State<ServerState>,
    _actor: Actor,
    ApiPath(udid): ApiPath<String>,
    ApiQuery(q): ApiQuery<PromptQuery>,
) -> ApiResult<Json<List<PromptRecord>>> {
    q.nested("device")?;
    let udid = device_or_not_found(&state, udid).await?;
    prompt_list(&state, q, Some(udid), None).await
}

/// Filters of `GET /v1/audit`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    limit: Option<i64>,
    cursor: Option<String>,
    /// An admin token's name or id.
    actor: Option<String>,
    action: Option<String>,
    target: Option<String>,
    /// RFC 3339: entries at or after.
    since: Option<Timestamp>,
    /// RFC 3339: entries before.
    before: Option<Timestamp>,
}

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
