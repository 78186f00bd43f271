//! The admin API under `/v1/`: JSON in and out, bearer admin token. Handlers only
//! translate between HTTP and the admin services.

use axum::extract::{FromRequest, FromRequestParts, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use orchard_protocol::{SerialNumber, Udid};
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::list::{List, PageQuery};
use crate::admin::{self, Actor, TokenUpload};
use crate::apple::sync;
use crate::apple::token_lifecycle;
use crate::clock::Timestamp;
use crate::error::ServerError;
use crate::state::ServerState;
use crate::store::{AppRecord, GroupKind, Intent, LicenseCounts, LicenseType, VppTokenRecord};

/// JSON body extractor whose rejections use the API's error format.
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub(super) struct ApiJson<T>(pub T);

/// Path extractor whose rejections use the API's error format.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub(super) struct ApiPath<T>(pub T);

/// Query extractor whose rejections use the API's error format.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub(super) struct ApiQuery<T>(pub T);

type ApiResult<T> = Result<T, ApiError>;

/// Routes of the admin API.
pub(super) fn router() -> Router<ServerState> {
    Router::new()
        .route("/v1/enrollment", get(enrollment))
        .route("/v1/enrollment/rotate", post(rotate_enrollment_secret))
        .route(
            "/v1/enrollment-tokens",
            post(create_enrollment_token).get(list_enrollment_tokens),
        )
        .route(
            "/v1/enrollment-tokens/{id}",
            axum::routing::delete(revoke_enrollment_token),
        )
        .route("/v1/devices/{udid}/release", post(release_device))
        .route("/v1/tokens", post(upload_token).get(list_tokens))
        .route(
            "/v1/tokens/{id}",
            get(get_token).patch(update_token).delete(delete_token),
        )
        .route("/v1/tokens/{id}/renew", post(renew_token))
        .route("/v1/tokens/{id}/take-over", post(take_over_token))
        .route("/v1/tokens/{id}/sync", post(sync_token))
        .route("/v1/apps", get(list_apps))
        .route("/v1/apps/{id}", get(get_app).patch(update_app))
        .route("/v1/apps/{id}/summary", get(app_summary))
        .route("/v1/groups", post(create_group).get(list_groups))
        .route("/v1/groups/{id}", axum::routing::delete(delete_group))
        .route(
            "/v1/groups/{id}/devices",
            post(add_group_devices).get(group_devices),
        )
        .route(
            "/v1/assignments",
            post(create_assignment).get(list_assignments),
        )
        .route(
            "/v1/assignments/{id}",
            get(get_assignment)
                .patch(update_assignment)
                .delete(delete_assignment),
        )
        .route("/v1/licenses/revoke", post(revoke_licenses))
        .route("/v1/devices/{udid}/assignments", get(explain_device))
        .route(
            "/v1/groups/{id}/devices/{udid}",
            axum::routing::delete(remove_group_device),
        )
        .route(
            "/v1/groups/{id}/users/{user_id}",
            axum::routing::delete(remove_group_user),
        )
        .route("/v1/devices/{udid}", get(get_device).delete(delete_device))
        .route("/v1/devices/{udid}/user", put(set_device_user))
        .route("/v1/devices/{udid}/inventory", post(refresh_inventory))
        .route("/v1/users", post(create_user).get(list_users))
        .route("/v1/users/{id}", get(get_user).delete(delete_user))
        .route("/v1/users/{id}/invitation", post(reinvite_user))
        .route(
            "/v1/groups/{id}/users",
            post(add_group_users).get(group_users),
        )
}

#[derive(Serialize)]
struct EnrollmentInfo {
    enrollment_secret: String,
    server_url: String,
    ca_certificate: String,
    topic: String,
}

async fn enrollment(
    State(state): State<ServerState>,
    _actor: Actor,
) -> ApiResult<Json<EnrollmentInfo>> {
    let secret = state
        .store
        .secret_setting(crate::device::enroll::ENROLLMENT_SECRET)
        .await?
        .unwrap_or_default();
    Ok(Json(EnrollmentInfo {
        enrollment_secret: secret,
        server_url: state.mdm.public_url.clone(),
        ca_certificate: state.ca.cert_pem().to_owned(),
        topic: state.mdm.topic.clone(),
    }))
}

async fn rotate_enrollment_secret(
    State(state): State<ServerState>,
    actor: Actor,
) -> ApiResult<impl IntoResponse> {
    let result = admin::rotate_enrollment_secret(&state).await;
    admin::audit(
        &state,
        &actor,
        "enrollment.rotate_secret",
        "enrollment_secret",
        &result,
    )
    .await;
    Ok(Json(serde_json::json!({
        "enrollment_secret": result?,
        "note": "the previous shared secret no longer enrolls devices"
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EnrollmentTokenBody {
    name: String,
    #[serde(default = "one")]
    uses: i64,
    #[serde(default = "a_week")]
    expires_in_seconds: u64,
    serial_number: Option<String>,
    udid: Option<String>,
}

fn one() -> i64 {
    1
}

fn a_week() -> u64 {
    7 * 24 * 3600
}

/// An enrollment token as the API shows it; `token` only in the answer that creates it.
#[derive(Serialize)]
struct EnrollmentTokenView {
    #[serde(flatten)]
    record: crate::store::EnrollmentTokenRecord,
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<String>,
}

async fn create_enrollment_token(
    State(state): State<ServerState>,
    actor: Actor,
    ApiJson(body): ApiJson<EnrollmentTokenBody>,
) -> ApiResult<impl IntoResponse> {
    let serial_number = body
        .serial_number
        .as_deref()
        .map(SerialNumber::parse)
        .transpose()
        .map_err(|e| invalid("serial_number", e))?;
    let udid = body
        .udid
        .as_deref()
        .map(Udid::parse)
        .transpose()
        .map_err(|e| invalid("udid", e))?;
    let new = admin::NewEnrollmentToken {
        name: body.name.clone(),
        uses: body.uses,
        valid_for: std::time::Duration::from_secs(body.expires_in_seconds),
        serial_number,
        udid,
    };
    let result = admin::create_enrollment_token(&state, new).await;
    let target = result
        .as_ref()
        .map(|(r, _)| r.id.clone())
        .unwrap_or(body.name);
    admin::audit(&state, &actor, "enrollment_token.create", &target, &result).await;
    let (record, token) = result?;
    Ok((
        StatusCode::CREATED,
        Json(EnrollmentTokenView {
            record,
            token: Some(token),
        }),
    ))
}

fn invalid(field: &'static str, e: orchard_protocol::IdError) -> ApiError {
    ServerError::Invalid {
        field,
        reason: e.to_string(),
    }
    .into()
}

async fn list_enrollment_tokens(
    State(state): State<ServerState>,
    _actor: Actor,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> ApiResult<impl IntoResponse> {
    let paging = q.paging("enrollment-tokens")?;
    let tokens = state.store.enrollment_tokens(paging.page()).await?;
    Ok(Json(paging.list(
        tokens,
        |t| t.id.clone(),
        |record| EnrollmentTokenView {
            record,
            token: None,
        },
    )))
}

async fn revoke_enrollment_token(
    State(state): State<ServerState>,
    actor: Actor,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<impl IntoResponse> {
    let result = admin::revoke_enrollment_token(&state, &id).await;
    admin::audit(&state, &actor, "enrollment_token.revoke", &id, &result).await;
    result?;
    Ok(Json(serde_json::json!({ "revoked": id })))
}

async fn release_device(
    State(state): State<ServerState>,
    actor: Actor,
    ApiPath(udid): ApiPath<String>,
) -> ApiResult<impl IntoResponse> {
    let udid = Udid(udid);
    let result = admin::release_device(&state, &udid).await;
    admin::audit(&state, &actor, "device.release", udid.as_str(), &result).await;
    result?;
    Ok(Json(serde_json::json!({
        "released": udid,
        "note": "the next enrollment of this UDID is admitted; the current certificate works until then"
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenUploadBody {
    name: String,
    token_file: String,
    consent: bool,
    #[serde(default)]
    take_over: bool,
    apple_id: Option<String>,
    country: Option<String>,
    account_type: Option<String>,
    automatic_updates: Option<bool>,
    priority: Option<i64>,
}

/// A token as the API shows it (never the secret).
#[derive(Serialize)]
struct TokenView {
    id: String,
    name: String,
    org_name: String,
    expires_at: Timestamp,
    expiry_status: &'static str,
    location_name: Option<String>,
    country: Option<String>,
    last_sync_at: Option<Timestamp>,
    last_sync_error: Option<String>,
    created_at: Timestamp,
    priority: i64,
    status: &'static str,
    external_mdm: Option<String>,
    disabled_reason: Option<String>,
    apple_id: Option<String>,
    account_type: String,
    automatic_updates: bool,
    store_country: Option<String>,
    last_notification_at: Option<Timestamp>,
    notifications: Option<String>,
}

impl TokenView {
    /// The token as the API shows it at `now` (expiry and status depend on the time).
    fn new(t: VppTokenRecord, now: Timestamp) -> Self {
        let expiry = token_lifecycle::expiry_status(t.expires_at, now);
        Self {
            expiry_status: expiry.as_str(),
            status: token_lifecycle::status(&t, now).as_str(),
            id: t.id,
            name: t.name,
            org_name: t.org_name,
            expires_at: t.expires_at,
            location_name: t.location_name,
            country: t.country,
            last_sync_at: t.last_sync_at,
            last_sync_error: t.last_sync_error,
            created_at: t.created_at,
            priority: t.priority,
            external_mdm: t.external_mdm,
            disabled_reason: t.disabled_reason,
            apple_id: t.apple_id,
            account_type: t.account_type,
            automatic_updates: t.automatic_updates,
            store_country: t.store_country,
            last_notification_at: t.last_notification_at,
            notifications: t.notifications,
        }
    }
}

async fn upload_token(
    State(state): State<ServerState>,
    actor: Actor,
    ApiJson(body): ApiJson<TokenUploadBody>,
) -> ApiResult<impl IntoResponse> {
    let name = body.name.clone();
    let result = admin::upload_token(
        &state,
        TokenUpload {
            name: body.name,
            token_file: body.token_file,
            consent: body.consent,
            take_over: body.take_over,
            settings: admin::TokenSettings {
                name: None,
                priority: body.priority,
                apple_id: body.apple_id,
                store_country: body.country,
                account_type: body.account_type,
                automatic_updates: body.automatic_updates,
            },
        },
    )
    .await;
    let target = result.as_ref().map(|t| t.id.clone()).unwrap_or(name);
    admin::audit(&state, &actor, "token.upload", &target, &result).await;
    Ok((
        StatusCode::CREATED,
        Json(TokenView::new(result?, state.clock.now())),
    ))
}

async fn list_tokens(
    State(state): State<ServerState>,
    _actor: Actor,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> ApiResult<Json<List<TokenView>>> {
    let paging = q.paging("tokens")?;
    let tokens = state.store.tokens(paging.page()).await?;
    Ok(Json(paging.list(
        tokens,
        |t| t.id.clone(),
        |t| TokenView::new(t, state.clock.now()),
    )))
}

async fn sync_token(
    State(state): State<ServerState>,
    actor: Actor,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<sync::SyncSummary>> {
    let result = sync::sync_token(&state, &id).await;
    admin::audit(&state, &actor, "token.sync", &id, &result).await;
    Ok(Json(result?))
}

#[derive(Serialize)]
struct Licenses {
    total: i64,
    used: i64,
    available: i64,
    retired: i64,
}

impl From<LicenseCounts> for Licenses {
    fn from(c: LicenseCounts) -> Self {
        Self {
            total: c.total,
            used: c.assigned,
            available: c.available,
            retired: c.retired,
        }
    }
}

#[derive(Serialize)]
struct AppView {
    id: String,
    token_id: String,
    adam_id: String,
    pricing_param: String,
    product_type: String,
    name: Option<String>,
    bundle_id: Option<String>,
    version: Option<String>,
    platforms: Vec<String>,
    device_assignable: bool,
    licenses: Licenses,
    updated_at: Timestamp,
    install_timeout_seconds: Option<i64>,
    store_url: Option<String>,
    minimum_os_version: Option<String>,
}

impl From<AppRecord> for AppView {
    fn from(a: AppRecord) -> Self {
        Self {
            id: a.id,
            token_id: a.token_id,
            adam_id: a.adam_id.to_string(),
            pricing_param: a.pricing_param,
            product_type: a.product_type,
            name: a.name,
            bundle_id: a.bundle_id,
            version: a.version,
            platforms: a.platforms,
            device_assignable: a.device_assignable,
            licenses: a.counts.into(),
            install_timeout_seconds: a.install_timeout_seconds,
            store_url: a.store_url,
            minimum_os_version: a.minimum_os_version,
            updated_at: a.updated_at,
        }
    }
}

async fn list_apps(
    State(state): State<ServerState>,
    _actor: Actor,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> ApiResult<Json<List<AppView>>> {
    let paging = q.paging("apps")?;
    let apps = state.store.apps(paging.page()).await?;
    Ok(Json(paging.list(apps, |a| a.id.clone(), AppView::from)))
}

async fn get_app(
    State(state): State<ServerState>,
    _actor: Actor,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<AppView>> {
    let app = state.store.app(&id).await?;
    Ok(Json(
        app.ok_or(ServerError::NotFound { kind: "app", id })?.into(),
    ))
}

async fn app_summary(
    State(state): State<ServerState>,
    _actor: Actor,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<impl IntoResponse> {
    #[derive(Serialize)]
    struct SummaryView {
        #[serde(flatten)]
        summary: admin::AppSummary,
        licenses: Licenses,
    }
    let summary = admin::app_summary(&state, &id).await?;
    Ok(Json(SummaryView {
        licenses: summary.licenses.into(),
        summary,
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupBody {
    name: String,
    #[serde(default = "device_kind")]
    kind: GroupKind,
}

fn device_kind() -> GroupKind {
    GroupKind::Device
}

async fn create_group(
    State(state): State<ServerState>,
    actor: Actor,
    ApiJson(body): ApiJson<GroupBody>,
) -> ApiResult<impl IntoResponse> {
    let result = admin::create_group(&state, &body.name, body.kind).await;
    let target = result.as_ref().map(|g| g.id.clone()).unwrap_or(body.name);
    admin::audit(&state, &actor, "group.create", &target, &result).await;
    Ok((StatusCode::CREATED, Json(result?)))
}

async fn list_groups(
    State(state): State<ServerState>,
    _actor: Actor,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> ApiResult<impl IntoResponse> {
    let paging = q.paging("groups")?;
    let groups = state.store.groups(paging.page()).await?;
    Ok(Json(paging.list(groups, |g| g.id.clone(), |g| g)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MembersBody {
    udids: Vec<Udid>,
}

async fn add_group_devices(
    State(state): State<ServerState>,
    actor: Actor,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<MembersBody>,
) -> ApiResult<impl IntoResponse> {
    let result = admin::add_group_devices(&state, &id, &body.udids).await;
    admin::audit(&state, &actor, "group.add_devices", &id, &result).await;
    Ok(Json(serde_json::json!({ "added": result? })))
}

async fn group_devices(
    State(state): State<ServerState>,
    _actor: Actor,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> ApiResult<Json<List<Udid>>> {
    let paging = q.paging("group-devices")?;
    state
        .store
        .group(&id)
        .await?
        .ok_or_else(|| ServerError::not_found("group", &id))?;
    let udids = state.store.group_device_page(&id, paging.page()).await?;
    Ok(Json(paging.list(udids, |u| u.0.clone(), |u| u)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AssignmentBody {
    app_id: String,
    group_id: String,
    intent: Intent,
    license_type: LicenseType,
    #[serde(default = "yes")]
    install: bool,
    #[serde(default)]
    any_token: bool,
}

fn yes() -> bool {
    true
}

async fn create_assignment(
    State(state): State<ServerState>,
    actor: Actor,
    ApiJson(body): ApiJson<AssignmentBody>,
) -> ApiResult<impl IntoResponse> {
    let result = admin::assign(
        &state,
        &body.app_id,
        &body.group_id,
        body.intent,
        body.license_type,
        body.install,
        body.any_token,
    )
    .await;
    let target = format!("{} -> {}", body.app_id, body.group_id);
    admin::audit(&state, &actor, "assignment.create", &target, &result).await;
    Ok((StatusCode::CREATED, Json(result?)))
}

async fn list_assignments(
    State(state): State<ServerState>,
    _actor: Actor,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> ApiResult<impl IntoResponse> {
    let paging = q.paging("assignments")?;
    let items = state.store.assignments(paging.page()).await?;
    Ok(Json(paging.list(items, |a| a.id.clone(), |a| a)))
}

async fn get_device(
    State(state): State<ServerState>,
    _actor: Actor,
    ApiPath(udid): ApiPath<String>,
) -> ApiResult<impl IntoResponse> {
    let device = state.store.device(&Udid(udid.clone())).await?;
    Ok(Json(device.ok_or(ServerError::NotFound {
        kind: "device",
        id: udid,
    })?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserBody {
    email: String,
    #[serde(default)]
    managed_apple_id: Option<String>,
    #[serde(default)]
    name: Option<String>,
}

async fn create_user(
    State(state): State<ServerState>,
    actor: Actor,
    ApiJson(body): ApiJson<UserBody>,
) -> ApiResult<impl IntoResponse> {
    let email = body.email.clone();
    let result = admin::create_user(
        &state,
        admin::NewUser {
            email: body.email,
            managed_apple_id: body.managed_apple_id,
            name: body.name,
        },
    )
    .await;
    let target = result.as_ref().map(|u| u.id.clone()).unwrap_or(email);
    admin::audit(&state, &actor, "user.create", &target, &result).await;
    Ok((StatusCode::CREATED, Json(result?)))
}

async fn list_users(
    State(state): State<ServerState>,
    _actor: Actor,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> ApiResult<impl IntoResponse> {
    let paging = q.paging("users")?;
    let users = state.store.users(paging.page()).await?;
    Ok(Json(paging.list(users, |u| u.id.clone(), |u| u)))
}

async fn get_user(
    State(state): State<ServerState>,
    _actor: Actor,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(admin::user_view(&state, &id).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeviceUserBody {
    user_id: Option<String>,
}

async fn set_device_user(
    State(state): State<ServerState>,
    actor: Actor,
    ApiPath(udid): ApiPath<String>,
    ApiJson(body): ApiJson<DeviceUserBody>,
) -> ApiResult<impl IntoResponse> {
    let udid = Udid(udid);
    let result = admin::set_device_user(&state, &udid, body.user_id.as_deref()).await;
    admin::audit(&state, &actor, "device.set_user", udid.as_str(), &result).await;
    result?;
    Ok(Json(
        serde_json::json!({ "udid": udid, "user_id": body.user_id }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserMembersBody {
    user_ids: Vec<String>,
}

async fn add_group_users(
    State(state): State<ServerState>,
    actor: Actor,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<UserMembersBody>,
) -> ApiResult<impl IntoResponse> {
    let result = admin::add_group_users(&state, &id, &body.user_ids).await;
    admin::audit(&state, &actor, "group.add_users", &id, &result).await;
    Ok(Json(serde_json::json!({ "added": result? })))
}

async fn group_users(
    State(state): State<ServerState>,
    _actor: Actor,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> ApiResult<Json<List<String>>> {
    let paging = q.paging("group-users")?;
    state
        .store
        .group(&id)
        .await?
        .ok_or_else(|| ServerError::not_found("group", &id))?;
    let users = state.store.group_user_page(&id, paging.page()).await?;
    Ok(Json(paging.list(users, Clone::clone, |u| u)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AppUpdateBody {
    install_timeout_seconds: Option<i64>,
}

async fn update_app(
    State(state): State<ServerState>,
    actor: Actor,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<AppUpdateBody>,
) -> ApiResult<impl IntoResponse> {
    let result = admin::set_install_timeout(&state, &id, body.install_timeout_seconds).await;
    admin::audit(&state, &actor, "app.update", &id, &result).await;
    Ok(Json(AppView::from(result?)))
}

async fn refresh_inventory(
    State(state): State<ServerState>,
    actor: Actor,
    ApiPath(udid): ApiPath<String>,
) -> ApiResult<impl IntoResponse> {
    let udid = Udid(udid);
    let result = admin::refresh_inventory(&state, &udid).await;
    admin::audit(&state, &actor, "device.inventory", udid.as_str(), &result).await;
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::json!({ "udid": udid, "queries_queued": result? })),
    ))
}

async fn get_assignment(
    State(state): State<ServerState>,
    _actor: Actor,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<impl IntoResponse> {
    let a = state.store.assignment(&id).await?;
    Ok(Json(a.ok_or_else(|| {
        ServerError::not_found("assignment", &id)
    })?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AssignmentChangeBody {
    intent: Option<Intent>,
    license_type: Option<LicenseType>,
    install: Option<bool>,
}

async fn update_assignment(
    State(state): State<ServerState>,
    actor: Actor,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<AssignmentChangeBody>,
) -> ApiResult<impl IntoResponse> {
    let change = admin::AssignmentChange {
        intent: body.intent,
        license_type: body.license_type,
        install: body.install,
    };
    let result = admin::update_assignment(&state, &id, change).await;
    admin::audit(&state, &actor, "assignment.update", &id, &result).await;
    Ok(Json(result?))
}

async fn delete_assignment(
    State(state): State<ServerState>,
    actor: Actor,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<impl IntoResponse> {
    let result = admin::delete_assignment(&state, &id).await;
    admin::audit(&state, &actor, "assignment.delete", &id, &result).await;
    result?;
    Ok(Json(serde_json::json!({
        "deleted": id,
        "note": "licenses that no other assignment needs go back to the pool; apps stay installed (use the Uninstall intent to remove them)"
    })))
}

async fn delete_group(
    State(state): State<ServerState>,
    actor: Actor,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<impl IntoResponse> {
    let result = admin::delete_group(&state, &id).await;
    admin::audit(&state, &actor, "group.delete", &id, &result).await;
    result?;
    Ok(Json(serde_json::json!({
        "deleted": id,
        "note": "its assignments went with it; licenses that no other assignment needs go back to the pool; apps stay installed"
    })))
}

async fn delete_user(
    State(state): State<ServerState>,
    actor: Actor,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<impl IntoResponse> {
    let result = admin::delete_user(&state, &id).await;
    admin::audit(&state, &actor, "user.delete", &id, &result).await;
    result?;
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::json!({
            "id": id,
            "status": "deleting",
            "note": "the user left every group and device; its licenses go back to the pool and its registrations are retired at Apple, then the user is removed"
        })),
    ))
}

async fn reinvite_user(
    State(state): State<ServerState>,
    actor: Actor,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<impl IntoResponse> {
    let result = admin::reinvite(&state, &id).await;
    admin::audit(&state, &actor, "user.reinvite", &id, &result).await;
    Ok(Json(result?))
}

async fn remove_group_device(
    State(state): State<ServerState>,
    actor: Actor,
    ApiPath((id, udid)): ApiPath<(String, String)>,
) -> ApiResult<impl IntoResponse> {
    let result = admin::remove_group_devices(&state, &id, &[Udid(udid.clone())]).await;
    admin::audit(
        &state,
        &actor,
        "group.remove_device",
        &format!("{id}/{udid}"),
        &result,
    )
    .await;
    Ok(Json(serde_json::json!({ "removed": result? })))
}

async fn remove_group_user(
    State(state): State<ServerState>,
    actor: Actor,
    ApiPath((id, user_id)): ApiPath<(String, String)>,
) -> ApiResult<impl IntoResponse> {
    let result = admin::remove_group_users(&state, &id, std::slice::from_ref(&user_id)).await;
    admin::audit(
        &state,
        &actor,
        "group.remove_user",
        &format!("{id}/{user_id}"),
        &result,
    )
    .await;
    Ok(Json(serde_json::json!({ "removed": result? })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeBody {
    udid: Option<String>,
    user_id: Option<String>,
    app_id: Option<String>,
    /// Tell the users on their devices (an Orchard notice; Apple's API v2 does not).
    #[serde(default)]
    notify_users: bool,
}

async fn revoke_licenses(
    State(state): State<ServerState>,
    actor: Actor,
    ApiJson(body): ApiJson<RevokeBody>,
) -> ApiResult<impl IntoResponse> {
    let target = match (body.udid, body.user_id, body.app_id) {
        (Some(udid), None, None) => admin::RevokeTarget::Device(Udid(udid)),
        (None, Some(user), None) => admin::RevokeTarget::User(user),
        (None, None, Some(app)) => admin::RevokeTarget::App(app),
        _ => {
            return Err(ServerError::Invalid {
                field: "udid",
                reason: "name exactly one of udid, user_id or app_id".into(),
            }
            .into());
        }
    };
    let what = format!("{target:?}");
    let result = admin::revoke(&state, target, body.notify_users).await;
    admin::audit(&state, &actor, "licenses.revoke", &what, &result).await;
    Ok((StatusCode::ACCEPTED, Json(result?)))
}

async fn explain_device(
    State(state): State<ServerState>,
    _actor: Actor,
    ApiPath(udid): ApiPath<String>,
) -> ApiResult<impl IntoResponse> {
    let udid = Udid(udid);
    state
        .store
        .device(&udid)
        .await?
        .ok_or_else(|| ServerError::not_found("device", udid.as_str()))?;
    let candidates: Vec<_> = state
        .store
        .assignment_candidates()
        .await?
        .into_iter()
        .filter(|c| c.udid == udid)
        .collect();
    let resolved = crate::engine::precedence::resolve(&candidates);
    Ok(Json(serde_json::json!({
        "udid": udid,
        "precedence": [
            crate::engine::precedence::BY_INTENT,
            crate::engine::precedence::BY_GROUP,
            crate::engine::precedence::BY_AGE
        ],
        "items": resolved,
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenChangeBody {
    name: Option<String>,
    priority: Option<i64>,
    apple_id: Option<String>,
    country: Option<String>,
    account_type: Option<String>,
    automatic_updates: Option<bool>,
}

async fn update_token(
    State(state): State<ServerState>,
    actor: Actor,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<TokenChangeBody>,
) -> ApiResult<impl IntoResponse> {
    let settings = admin::TokenSettings {
        name: body.name,
        priority: body.priority,
        apple_id: body.apple_id,
        store_country: body.country,
        account_type: body.account_type,
        automatic_updates: body.automatic_updates,
    };
    let result = admin::update_token_settings(&state, &id, settings).await;
    admin::audit(&state, &actor, "token.update", &id, &result).await;
    Ok(Json(TokenView::new(result?, state.clock.now())))
}

async fn get_token(
    State(state): State<ServerState>,
    _actor: Actor,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<impl IntoResponse> {
    let token = state.store.token(&id).await?;
    Ok(Json(TokenView::new(
        token.ok_or_else(|| ServerError::not_found("token", &id))?,
        state.clock.now(),
    )))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RenewBody {
    token_file: String,
}

async fn renew_token(
    State(state): State<ServerState>,
    actor: Actor,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<RenewBody>,
) -> ApiResult<impl IntoResponse> {
    let result = crate::apple::token_lifecycle::renew(&state, &id, &body.token_file).await;
    admin::audit(&state, &actor, "token.renew", &id, &result).await;
    Ok(Json(TokenView::new(result?, state.clock.now())))
}

async fn take_over_token(
    State(state): State<ServerState>,
    actor: Actor,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<impl IntoResponse> {
    let result = crate::apple::token_lifecycle::take_over(&state, &id).await;
    admin::audit(&state, &actor, "token.take_over", &id, &result).await;
    Ok(Json(TokenView::new(result?, state.clock.now())))
}

async fn delete_token(
    State(state): State<ServerState>,
    actor: Actor,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<impl IntoResponse> {
    let result = crate::apple::token_lifecycle::delete(&state, &id).await;
    admin::audit(&state, &actor, "token.delete", &id, &result).await;
    Ok(Json(result?))
}

async fn delete_device(
    State(state): State<ServerState>,
    actor: Actor,
    ApiPath(udid): ApiPath<String>,
) -> ApiResult<impl IntoResponse> {
    let udid = Udid(udid);
    let result = admin::delete_device(&state, &udid).await;
    admin::audit(&state, &actor, "device.delete", udid.as_str(), &result).await;
    result?;
    Ok(Json(serde_json::json!({
        "deleted": udid,
        "note": "its device licenses go back to the pool; apps on it are not removed"
    })))
}
