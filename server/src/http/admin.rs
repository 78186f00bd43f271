//! The admin API under `/v1/`: JSON in and out, bearer admin token. Handlers only
//! translate between HTTP and the admin services.

use axum::Json;
use axum::extract::{FromRequest, FromRequestParts, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use orchard_protocol::{SerialNumber, Udid};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ErrorBody};
use super::list::{List, PageQuery};
use crate::admin::{self, Actor, TokenUpload};
use crate::apple::sync;
use crate::apple::token_lifecycle;
use crate::clock::Timestamp;
use crate::error::ServerError;
use crate::state::ServerState;
use crate::store::{
    AppRecord, AssignmentRecord, EnrollmentTokenRecord, GroupKind, GroupRecord, Intent,
    LicenseCounts, LicenseType, UserRecord, VppTokenRecord,
};

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
pub(super) fn router() -> OpenApiRouter<ServerState> {
    OpenApiRouter::new()
        .routes(routes!(enrollment))
        .routes(routes!(rotate_enrollment_secret))
        .routes(routes!(create_enrollment_token, list_enrollment_tokens))
        .routes(routes!(revoke_enrollment_token))
        .routes(routes!(release_device))
        .routes(routes!(upload_token, list_tokens))
        .routes(routes!(get_token, update_token, delete_token))
        .routes(routes!(renew_token))
        .routes(routes!(take_over_token))
        .routes(routes!(sync_token))
        .routes(routes!(list_apps))
        .routes(routes!(get_app, update_app))
        .routes(routes!(app_summary))
        .routes(routes!(create_group, list_groups))
        .routes(routes!(delete_group))
        .routes(routes!(add_group_devices, group_devices))
        .routes(routes!(create_assignment, list_assignments))
        .routes(routes!(
            get_assignment,
            update_assignment,
            delete_assignment
        ))
        .routes(routes!(revoke_licenses))
        .routes(routes!(explain_device))
        .routes(routes!(remove_group_device))
        .routes(routes!(remove_group_user))
        .routes(routes!(get_device, delete_device))
        .routes(routes!(set_device_user))
        .routes(routes!(refresh_inventory))
        .routes(routes!(create_user, list_users))
        .routes(routes!(get_user, delete_user))
        .routes(routes!(reinvite_user))
        .routes(routes!(add_group_users, group_users))
}

/// The path parameter `id` of each kind of resource.
const TOKEN_ID: &str = "The VPP token's id";
const APP_ID: &str = "The app's id";
const GROUP_ID: &str = "The group's id";
const ASSIGNMENT_ID: &str = "The assignment's id";
const USER_ID: &str = "The user's id";
const UDID: &str = "The device's UDID";

/// What removing something did.
#[derive(Serialize, utoipa::ToSchema)]
struct Deletion {
    /// Its id.
    deleted: String,
    /// What it means for licenses and devices.
    note: &'static str,
}

/// Members a request added.
#[derive(Serialize, utoipa::ToSchema)]
struct MembersAdded {
    /// Members added (ones already in the group are not counted).
    added: u64,
}

/// Members a request removed.
#[derive(Serialize, utoipa::ToSchema)]
struct MembersRemoved {
    /// Members removed.
    removed: u64,
}

/// What devices need to enroll.
#[derive(Serialize, utoipa::ToSchema)]
struct EnrollmentInfo {
    /// The shared enrollment secret.
    enrollment_secret: String,
    /// The server's public URL.
    server_url: String,
    /// The server's CA certificate, PEM.
    ca_certificate: String,
    /// The push topic.
    topic: String,
}

/// What devices need to enroll: the shared secret, the server's URL, its CA and the
/// push topic.
#[utoipa::path(
    get,
    path = "/v1/enrollment",
    tag = "enrollment",
    responses((status = 200, description = "Enrollment settings", body = EnrollmentInfo)),
)]
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

/// A new enrollment secret.
#[derive(Serialize, utoipa::ToSchema)]
struct SecretRotated {
    /// The new secret.
    enrollment_secret: String,
    /// What it means.
    note: &'static str,
}

/// Replaces the shared enrollment secret; the old one enrolls no more devices.
#[utoipa::path(
    post,
    path = "/v1/enrollment/rotate",
    tag = "enrollment",
    responses((status = 200, description = "The new secret", body = SecretRotated)),
)]
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
    Ok(Json(SecretRotated {
        enrollment_secret: result?,
        note: "the previous shared secret no longer enrolls devices",
    }))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct EnrollmentTokenBody {
    /// What it is for, e.g. "Lab iPads".
    name: String,
    /// Enrollments it admits; 1 when not given.
    #[serde(default = "one")]
    #[schema(minimum = 1)]
    uses: i64,
    /// It expires this many seconds from now; a week when not given.
    #[serde(default = "a_week")]
    #[schema(minimum = 1)]
    expires_in_seconds: u64,
    /// Only a device with this serial number may use it.
    serial_number: Option<String>,
    /// Only a device with this UDID may use it.
    udid: Option<String>,
}

fn one() -> i64 {
    1
}

fn a_week() -> u64 {
    7 * 24 * 3600
}

/// An enrollment token as the API shows it; `token` only in the answer that creates it.
#[derive(Serialize, utoipa::ToSchema)]
struct EnrollmentTokenView {
    #[serde(flatten)]
    record: EnrollmentTokenRecord,
    /// The token a device enrolls with, shown once.
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<String>,
}

/// Creates an enrollment token; the token itself is in this answer only.
#[utoipa::path(
    post,
    path = "/v1/enrollment-tokens",
    tag = "enrollment",
    request_body = EnrollmentTokenBody,
    responses((status = 201, description = "Created, with the token", body = EnrollmentTokenView)),
)]
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

/// The enrollment tokens (never the tokens themselves).
#[utoipa::path(
    get,
    path = "/v1/enrollment-tokens",
    tag = "enrollment",
    params(PageQuery),
    responses((status = 200, description = "A page of enrollment tokens", body = List<EnrollmentTokenView>)),
)]
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

/// Revokes an enrollment token: it admits no more enrollments.
#[utoipa::path(
    delete,
    path = "/v1/enrollment-tokens/{id}",
    tag = "enrollment",
    params(("id" = String, Path, description = "The enrollment token's id")),
    responses(
        (status = 200, description = "Revoked", body = EnrollmentTokenRevoked),
        (status = 404, description = "No such enrollment token", body = ErrorBody),
    ),
)]
async fn revoke_enrollment_token(
    State(state): State<ServerState>,
    actor: Actor,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<impl IntoResponse> {
    let result = admin::revoke_enrollment_token(&state, &id).await;
    admin::audit(&state, &actor, "enrollment_token.revoke", &id, &result).await;
    result?;
    Ok(Json(EnrollmentTokenRevoked { revoked: id }))
}

/// A revoked enrollment token.
#[derive(Serialize, utoipa::ToSchema)]
struct EnrollmentTokenRevoked {
    /// Its id.
    revoked: String,
}

/// Releases a device's enrollment: the next enrollment of its UDID is admitted (its
/// current certificate works until then).
#[utoipa::path(
    post,
    path = "/v1/devices/{udid}/release",
    tag = "devices",
    params(("udid" = String, Path, description = UDID)),
    responses(
        (status = 200, description = "Released", body = DeviceReleased),
        (status = 404, description = "No such device", body = ErrorBody),
    ),
)]
async fn release_device(
    State(state): State<ServerState>,
    actor: Actor,
    ApiPath(udid): ApiPath<String>,
) -> ApiResult<impl IntoResponse> {
    let udid = Udid(udid);
    let result = admin::release_device(&state, &udid).await;
    admin::audit(&state, &actor, "device.release", udid.as_str(), &result).await;
    result?;
    Ok(Json(DeviceReleased {
        released: udid,
        note: "the next enrollment of this UDID is admitted; the current certificate works until then",
    }))
}

/// A released enrollment.
#[derive(Serialize, utoipa::ToSchema)]
struct DeviceReleased {
    /// The device.
    released: Udid,
    /// What it means.
    note: &'static str,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct TokenUploadBody {
    /// Display name.
    name: String,
    /// The `.vpptoken` file as downloaded from Apple Business or School Manager
    /// (base64 text).
    token_file: String,
    /// The admin agrees to this server managing the token's licenses.
    consent: bool,
    /// Take the token over from another MDM that holds it at Apple.
    #[serde(default)]
    take_over: bool,
    /// The location's Apple ID, for people.
    apple_id: Option<String>,
    /// The store country (ISO 3166-1 alpha-2), when Apple's differs.
    country: Option<String>,
    /// `business` or `education`.
    account_type: Option<String>,
    /// Keep the token's apps updated on devices.
    automatic_updates: Option<bool>,
    /// Lower first when several tokens hold an app.
    priority: Option<i64>,
}

/// A token as the API shows it (never the secret).
#[derive(Serialize, utoipa::ToSchema)]
struct TokenView {
    /// Opaque id.
    id: String,
    /// Display name.
    name: String,
    /// The organisation, from the token file.
    org_name: String,
    /// When Apple stops taking the token.
    expires_at: Timestamp,
    /// `valid`, `expiring_soon` (within 30 days) or `expired`.
    expiry_status: &'static str,
    /// Apple's location name.
    location_name: Option<String>,
    /// Apple's store country for the location.
    country: Option<String>,
    /// Last successful sync.
    last_sync_at: Option<Timestamp>,
    /// Why the last sync failed.
    last_sync_error: Option<String>,
    /// Upload time.
    created_at: Timestamp,
    /// Lower first when several tokens hold an app.
    priority: i64,
    /// `active`, `expired`, `disabled` (with `disabled_reason`) or
    /// `assigned_to_external_mdm`.
    status: &'static str,
    /// Another MDM that holds the token at Apple.
    external_mdm: Option<String>,
    /// Why the token is not used.
    disabled_reason: Option<String>,
    /// The location's Apple ID.
    apple_id: Option<String>,
    /// `business` or `education`.
    account_type: String,
    /// The token's apps are kept updated.
    automatic_updates: bool,
    /// The store country an admin set.
    store_country: Option<String>,
    /// Apple's last notification for the token.
    last_notification_at: Option<Timestamp>,
    /// Whether Apple notifies this server, and if not why (it polls instead).
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

/// Uploads a VPP token (a `.vpptoken` file) and claims it at Apple for this server.
#[utoipa::path(
    post,
    path = "/v1/tokens",
    tag = "tokens",
    request_body = TokenUploadBody,
    responses(
        (status = 201, description = "Uploaded", body = TokenView),
        (status = 409, description = "The token is held by another MDM (ask for `take_over`), is uploaded already, or the token limit is reached", body = ErrorBody),
        (status = 422, description = "Not a token file, no consent, or a setting the server refuses", body = ErrorBody),
        (status = 502, description = "Apple's service failed or refused the token", body = ErrorBody),
    ),
)]
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

/// The VPP tokens.
#[utoipa::path(
    get,
    path = "/v1/tokens",
    tag = "tokens",
    params(PageQuery),
    responses((status = 200, description = "A page of tokens", body = List<TokenView>)),
)]
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

/// Syncs a token's apps, licenses and users from Apple now.
#[utoipa::path(
    post,
    path = "/v1/tokens/{id}/sync",
    tag = "tokens",
    params(("id" = String, Path, description = TOKEN_ID)),
    responses(
        (status = 200, description = "What the sync found", body = sync::SyncSummary),
        (status = 404, description = "No such token", body = ErrorBody),
        (status = 409, description = "A sync of the token is under way", body = ErrorBody),
        (status = 502, description = "Apple's service failed", body = ErrorBody),
    ),
)]
async fn sync_token(
    State(state): State<ServerState>,
    actor: Actor,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<sync::SyncSummary>> {
    let result = sync::sync_token(&state, &id).await;
    admin::audit(&state, &actor, "token.sync", &id, &result).await;
    Ok(Json(result?))
}

/// An app's licenses at Apple.
#[derive(Serialize, utoipa::ToSchema)]
struct Licenses {
    /// Purchased.
    total: i64,
    /// Associated with a device or user.
    used: i64,
    /// Free to associate.
    available: i64,
    /// Taken back by Apple (refunded or retired).
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

/// An app (or book) of a token.
#[derive(Serialize, utoipa::ToSchema)]
struct AppView {
    /// Opaque id.
    id: String,
    /// The token that holds its licenses.
    token_id: String,
    /// App Store id.
    adam_id: String,
    /// `STDQ` (standard) or `PLUS` (high quality).
    pricing_param: String,
    /// `App`, `Book` and so on, as Apple says.
    product_type: String,
    /// Store name.
    name: Option<String>,
    /// Bundle identifier.
    bundle_id: Option<String>,
    /// Store version.
    version: Option<String>,
    /// Platforms the store lists.
    platforms: Vec<String>,
    /// Can be licensed to a device (not only to a user).
    device_assignable: bool,
    /// License counts.
    licenses: Licenses,
    /// Last change.
    updated_at: Timestamp,
    /// How long an install may take before it counts as failed (none: the server's
    /// default).
    install_timeout_seconds: Option<i64>,
    /// Store page.
    store_url: Option<String>,
    /// Lowest OS version the store lists.
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

/// The apps and books of every token.
#[utoipa::path(
    get,
    path = "/v1/apps",
    tag = "apps",
    params(PageQuery),
    responses((status = 200, description = "A page of apps", body = List<AppView>)),
)]
async fn list_apps(
    State(state): State<ServerState>,
    _actor: Actor,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> ApiResult<Json<List<AppView>>> {
    let paging = q.paging("apps")?;
    let apps = state.store.apps(paging.page()).await?;
    Ok(Json(paging.list(apps, |a| a.id.clone(), AppView::from)))
}

/// One app.
#[utoipa::path(
    get,
    path = "/v1/apps/{id}",
    tag = "apps",
    params(("id" = String, Path, description = APP_ID)),
    responses(
        (status = 200, description = "The app", body = AppView),
        (status = 404, description = "No such app", body = ErrorBody),
    ),
)]
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

/// An app's installs counted by status and platform, with its licenses.
#[derive(Serialize, utoipa::ToSchema)]
struct SummaryView {
    #[serde(flatten)]
    summary: admin::AppSummary,
    /// License counts.
    licenses: Licenses,
}

/// An app's devices counted by install status and by platform, and its licenses, in
/// one answer.
#[utoipa::path(
    get,
    path = "/v1/apps/{id}/summary",
    tag = "apps",
    params(("id" = String, Path, description = APP_ID)),
    responses(
        (status = 200, description = "The counts", body = SummaryView),
        (status = 404, description = "No such app", body = ErrorBody),
    ),
)]
async fn app_summary(
    State(state): State<ServerState>,
    _actor: Actor,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<impl IntoResponse> {
    let summary = admin::app_summary(&state, &id).await?;
    Ok(Json(SummaryView {
        licenses: summary.licenses.into(),
        summary,
    }))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct GroupBody {
    /// Unique name.
    name: String,
    /// `device` (the default) or `user`.
    #[serde(default = "device_kind")]
    kind: GroupKind,
}

fn device_kind() -> GroupKind {
    GroupKind::Device
}

/// Creates a group of devices or of users.
#[utoipa::path(
    post,
    path = "/v1/groups",
    tag = "groups",
    request_body = GroupBody,
    responses(
        (status = 201, description = "Created", body = GroupRecord),
        (status = 409, description = "A group has that name", body = ErrorBody),
    ),
)]
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

/// The groups.
#[utoipa::path(
    get,
    path = "/v1/groups",
    tag = "groups",
    params(PageQuery),
    responses((status = 200, description = "A page of groups", body = List<GroupRecord>)),
)]
async fn list_groups(
    State(state): State<ServerState>,
    _actor: Actor,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> ApiResult<impl IntoResponse> {
    let paging = q.paging("groups")?;
    let groups = state.store.groups(paging.page()).await?;
    Ok(Json(paging.list(groups, |g| g.id.clone(), |g| g)))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct MembersBody {
    /// Devices to add (enrolled or not yet).
    udids: Vec<Udid>,
}

/// Adds devices to a device group.
#[utoipa::path(
    post,
    path = "/v1/groups/{id}/devices",
    tag = "groups",
    params(("id" = String, Path, description = GROUP_ID)),
    request_body = MembersBody,
    responses(
        (status = 200, description = "Added", body = MembersAdded),
        (status = 404, description = "No such group", body = ErrorBody),
        (status = 409, description = "A user group takes users, not devices", body = ErrorBody),
    ),
)]
async fn add_group_devices(
    State(state): State<ServerState>,
    actor: Actor,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<MembersBody>,
) -> ApiResult<impl IntoResponse> {
    let result = admin::add_group_devices(&state, &id, &body.udids).await;
    admin::audit(&state, &actor, "group.add_devices", &id, &result).await;
    Ok(Json(MembersAdded { added: result? }))
}

/// A device group's devices, by UDID.
#[utoipa::path(
    get,
    path = "/v1/groups/{id}/devices",
    tag = "groups",
    params(("id" = String, Path, description = GROUP_ID), PageQuery),
    responses(
        (status = 200, description = "A page of UDIDs", body = List<Udid>),
        (status = 404, description = "No such group", body = ErrorBody),
    ),
)]
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

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct AssignmentBody {
    /// The app.
    app_id: String,
    /// The group whose devices (or users) get it.
    group_id: String,
    /// What the assignment asks for.
    intent: Intent,
    /// Whom licenses are associated with.
    license_type: LicenseType,
    /// Install it on the devices (true by default); false only licenses it.
    #[serde(default = "yes")]
    install: bool,
    /// Take licenses from any token that holds the app, not only the app's own.
    #[serde(default)]
    any_token: bool,
}

fn yes() -> bool {
    true
}

/// Assigns an app to a group; licenses are associated and installs queued as the
/// group's devices come.
#[utoipa::path(
    post,
    path = "/v1/assignments",
    tag = "assignments",
    request_body = AssignmentBody,
    responses(
        (status = 201, description = "Created, with warnings about what will not work as expected", body = admin::AssignmentCreated),
        (status = 404, description = "No such app or group", body = ErrorBody),
        (status = 409, description = "The app is assigned to the group already", body = ErrorBody),
    ),
)]
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

/// The assignments.
#[utoipa::path(
    get,
    path = "/v1/assignments",
    tag = "assignments",
    params(PageQuery),
    responses((status = 200, description = "A page of assignments", body = List<AssignmentRecord>)),
)]
async fn list_assignments(
    State(state): State<ServerState>,
    _actor: Actor,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> ApiResult<impl IntoResponse> {
    let paging = q.paging("assignments")?;
    let items = state.store.assignments(paging.page()).await?;
    Ok(Json(paging.list(items, |a| a.id.clone(), |a| a)))
}

/// One device.
#[utoipa::path(
    get,
    path = "/v1/devices/{udid}",
    tag = "devices",
    params(("udid" = String, Path, description = UDID)),
    responses(
        (status = 200, description = "The device", body = crate::store::DeviceRecord),
        (status = 404, description = "No such device", body = ErrorBody),
    ),
)]
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

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct UserBody {
    /// Unique email; invitations go to it.
    email: String,
    /// The user's Managed Apple ID, if any.
    #[serde(default)]
    managed_apple_id: Option<String>,
    /// Display name.
    #[serde(default)]
    name: Option<String>,
}

/// Creates a user (for user-licensed apps).
#[utoipa::path(
    post,
    path = "/v1/users",
    tag = "users",
    request_body = UserBody,
    responses(
        (status = 201, description = "Created", body = UserRecord),
        (status = 409, description = "A user has that email", body = ErrorBody),
    ),
)]
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

/// The users.
#[utoipa::path(
    get,
    path = "/v1/users",
    tag = "users",
    params(PageQuery),
    responses((status = 200, description = "A page of users", body = List<UserRecord>)),
)]
async fn list_users(
    State(state): State<ServerState>,
    _actor: Actor,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> ApiResult<impl IntoResponse> {
    let paging = q.paging("users")?;
    let users = state.store.users(paging.page()).await?;
    Ok(Json(paging.list(users, |u| u.id.clone(), |u| u)))
}

/// One user, with their standing at Apple under each token and their devices.
#[utoipa::path(
    get,
    path = "/v1/users/{id}",
    tag = "users",
    params(("id" = String, Path, description = USER_ID)),
    responses(
        (status = 200, description = "The user", body = admin::UserView),
        (status = 404, description = "No such user", body = ErrorBody),
    ),
)]
async fn get_user(
    State(state): State<ServerState>,
    _actor: Actor,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(admin::user_view(&state, &id).await?))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct DeviceUserBody {
    /// The device's user; null: none.
    user_id: Option<String>,
}

/// Sets (or clears) a device's user.
#[utoipa::path(
    put,
    path = "/v1/devices/{udid}/user",
    tag = "devices",
    params(("udid" = String, Path, description = UDID)),
    request_body = DeviceUserBody,
    responses(
        (status = 200, description = "Set", body = DeviceUser),
        (status = 404, description = "No such device or user", body = ErrorBody),
    ),
)]
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
    Ok(Json(DeviceUser {
        udid,
        user_id: body.user_id,
    }))
}

/// A device's user.
#[derive(Serialize, utoipa::ToSchema)]
struct DeviceUser {
    /// The device.
    udid: Udid,
    /// Its user (none: no user).
    user_id: Option<String>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct UserMembersBody {
    /// Users to add.
    user_ids: Vec<String>,
}

/// Adds users to a user group.
#[utoipa::path(
    post,
    path = "/v1/groups/{id}/users",
    tag = "groups",
    params(("id" = String, Path, description = GROUP_ID)),
    request_body = UserMembersBody,
    responses(
        (status = 200, description = "Added", body = MembersAdded),
        (status = 404, description = "No such group or user", body = ErrorBody),
        (status = 409, description = "A device group takes devices, not users", body = ErrorBody),
    ),
)]
async fn add_group_users(
    State(state): State<ServerState>,
    actor: Actor,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<UserMembersBody>,
) -> ApiResult<impl IntoResponse> {
    let result = admin::add_group_users(&state, &id, &body.user_ids).await;
    admin::audit(&state, &actor, "group.add_users", &id, &result).await;
    Ok(Json(MembersAdded { added: result? }))
}

/// A user group's users, by id.
#[utoipa::path(
    get,
    path = "/v1/groups/{id}/users",
    tag = "groups",
    params(("id" = String, Path, description = GROUP_ID), PageQuery),
    responses(
        (status = 200, description = "A page of user ids", body = List<String>),
        (status = 404, description = "No such group", body = ErrorBody),
    ),
)]
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

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct AppUpdateBody {
    /// How long an install may take before it counts as failed; null: the server's
    /// default.
    #[schema(minimum = 1)]
    install_timeout_seconds: Option<i64>,
}

/// Changes an app's settings.
#[utoipa::path(
    patch,
    path = "/v1/apps/{id}",
    tag = "apps",
    params(("id" = String, Path, description = APP_ID)),
    request_body = AppUpdateBody,
    responses(
        (status = 200, description = "The app as changed", body = AppView),
        (status = 404, description = "No such app", body = ErrorBody),
    ),
)]
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

/// Asks a device for its inventory (device information, installed and managed apps)
/// at its next check-in.
#[utoipa::path(
    post,
    path = "/v1/devices/{udid}/inventory",
    tag = "devices",
    params(("udid" = String, Path, description = UDID)),
    responses(
        (status = 202, description = "Queries queued", body = InventoryQueued),
        (status = 404, description = "No such device", body = ErrorBody),
        (status = 409, description = "The device is not managed (checked out or released)", body = ErrorBody),
    ),
)]
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
        Json(InventoryQueued {
            udid,
            queries_queued: result?,
        }),
    ))
}

/// Inventory queries queued for a device.
#[derive(Serialize, utoipa::ToSchema)]
struct InventoryQueued {
    /// The device.
    udid: Udid,
    /// Queries queued.
    queries_queued: usize,
}

/// One assignment.
#[utoipa::path(
    get,
    path = "/v1/assignments/{id}",
    tag = "assignments",
    params(("id" = String, Path, description = ASSIGNMENT_ID)),
    responses(
        (status = 200, description = "The assignment", body = AssignmentRecord),
        (status = 404, description = "No such assignment", body = ErrorBody),
    ),
)]
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

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct AssignmentChangeBody {
    /// A new intent.
    intent: Option<Intent>,
    /// A new license type.
    license_type: Option<LicenseType>,
    /// Install or only license.
    install: Option<bool>,
}

/// Changes an assignment.
#[utoipa::path(
    patch,
    path = "/v1/assignments/{id}",
    tag = "assignments",
    params(("id" = String, Path, description = ASSIGNMENT_ID)),
    request_body = AssignmentChangeBody,
    responses(
        (status = 200, description = "The assignment as changed", body = AssignmentRecord),
        (status = 404, description = "No such assignment", body = ErrorBody),
    ),
)]
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

/// Deletes an assignment: licenses no other assignment needs go back to the pool;
/// apps stay installed.
#[utoipa::path(
    delete,
    path = "/v1/assignments/{id}",
    tag = "assignments",
    params(("id" = String, Path, description = ASSIGNMENT_ID)),
    responses(
        (status = 200, description = "Deleted", body = Deletion),
        (status = 404, description = "No such assignment", body = ErrorBody),
    ),
)]
async fn delete_assignment(
    State(state): State<ServerState>,
    actor: Actor,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<impl IntoResponse> {
    let result = admin::delete_assignment(&state, &id).await;
    admin::audit(&state, &actor, "assignment.delete", &id, &result).await;
    result?;
    Ok(Json(Deletion {
        deleted: id,
        note: "licenses that no other assignment needs go back to the pool; apps stay installed (use the Uninstall intent to remove them)",
    }))
}

/// Deletes a group with its assignments; apps stay installed.
#[utoipa::path(
    delete,
    path = "/v1/groups/{id}",
    tag = "groups",
    params(("id" = String, Path, description = GROUP_ID)),
    responses(
        (status = 200, description = "Deleted", body = Deletion),
        (status = 404, description = "No such group", body = ErrorBody),
    ),
)]
async fn delete_group(
    State(state): State<ServerState>,
    actor: Actor,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<impl IntoResponse> {
    let result = admin::delete_group(&state, &id).await;
    admin::audit(&state, &actor, "group.delete", &id, &result).await;
    result?;
    Ok(Json(Deletion {
        deleted: id,
        note: "its assignments went with it; licenses that no other assignment needs go back to the pool; apps stay installed",
    }))
}

/// Deletes a user: they leave every group and device, their licenses go back to the
/// pool and their registrations are retired at Apple, then they are removed.
#[utoipa::path(
    delete,
    path = "/v1/users/{id}",
    tag = "users",
    params(("id" = String, Path, description = USER_ID)),
    responses(
        (status = 202, description = "Being deleted", body = UserDeletion),
        (status = 404, description = "No such user", body = ErrorBody),
    ),
)]
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
        Json(UserDeletion {
            id,
            status: "deleting",
            note: "the user left every group and device; its licenses go back to the pool and its registrations are retired at Apple, then the user is removed",
        }),
    ))
}

/// A user being deleted.
#[derive(Serialize, utoipa::ToSchema)]
struct UserDeletion {
    /// The user.
    id: String,
    /// `deleting`.
    status: &'static str,
    /// What happens.
    note: &'static str,
}

/// Invites a user to the VPP program again (under every token that registered them).
#[utoipa::path(
    post,
    path = "/v1/users/{id}/invitation",
    tag = "users",
    params(("id" = String, Path, description = USER_ID)),
    responses(
        (status = 200, description = "The user, invitations renewed", body = admin::UserView),
        (status = 404, description = "No such user", body = ErrorBody),
        (status = 409, description = "The user joined already or has no registration to invite to", body = ErrorBody),
    ),
)]
async fn reinvite_user(
    State(state): State<ServerState>,
    actor: Actor,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<impl IntoResponse> {
    let result = admin::reinvite(&state, &id).await;
    admin::audit(&state, &actor, "user.reinvite", &id, &result).await;
    Ok(Json(result?))
}

/// Removes a device from a device group.
#[utoipa::path(
    delete,
    path = "/v1/groups/{id}/devices/{udid}",
    tag = "groups",
    params(("id" = String, Path, description = GROUP_ID), ("udid" = String, Path, description = UDID)),
    responses(
        (status = 200, description = "Removed (0 when it was not a member)", body = MembersRemoved),
        (status = 404, description = "No such group", body = ErrorBody),
    ),
)]
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
    Ok(Json(MembersRemoved { removed: result? }))
}

/// Removes a user from a user group.
#[utoipa::path(
    delete,
    path = "/v1/groups/{id}/users/{user_id}",
    tag = "groups",
    params(("id" = String, Path, description = GROUP_ID), ("user_id" = String, Path, description = USER_ID)),
    responses(
        (status = 200, description = "Removed (0 when they were not a member)", body = MembersRemoved),
        (status = 404, description = "No such group", body = ErrorBody),
    ),
)]
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
    Ok(Json(MembersRemoved { removed: result? }))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct RevokeBody {
    /// Every license of this device.
    udid: Option<String>,
    /// Every license of this user.
    user_id: Option<String>,
    /// Every license of this app.
    app_id: Option<String>,
    /// Tell the users on their devices (an Orchard notice; Apple's API v2 does not).
    #[serde(default)]
    notify_users: bool,
}

/// Takes licenses back from a device, a user or an app (name exactly one): they are
/// disassociated at Apple and not asked for again until an assignment reaches anew.
#[utoipa::path(
    post,
    path = "/v1/licenses/revoke",
    tag = "licenses",
    request_body = RevokeBody,
    responses(
        (status = 202, description = "Being revoked", body = admin::Revoked),
        (status = 404, description = "No such device, user or app", body = ErrorBody),
    ),
)]
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

/// Which assignments reach a device and which one applies to each app, with the
/// rule each other one lost by.
#[utoipa::path(
    get,
    path = "/v1/devices/{udid}/assignments",
    tag = "assignments",
    params(("udid" = String, Path, description = UDID)),
    responses(
        (status = 200, description = "The assignments that apply", body = Explanation),
        (status = 404, description = "No such device", body = ErrorBody),
    ),
)]
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
    Ok(Json(Explanation {
        udid,
        precedence: [
            crate::engine::precedence::BY_INTENT,
            crate::engine::precedence::BY_GROUP,
            crate::engine::precedence::BY_AGE,
        ],
        items: resolved,
    }))
}

/// The assignments that apply to a device.
#[derive(Serialize, utoipa::ToSchema)]
struct Explanation {
    /// The device.
    udid: Udid,
    /// The rules, in the order they decide.
    precedence: [&'static str; 3],
    /// Per app: the assignment that applies and the ones it beat.
    items: Vec<crate::engine::precedence::Effective>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct TokenChangeBody {
    /// Display name.
    name: Option<String>,
    /// Lower first when several tokens hold an app.
    priority: Option<i64>,
    /// The location's Apple ID.
    apple_id: Option<String>,
    /// The store country (ISO 3166-1 alpha-2).
    country: Option<String>,
    /// `business` or `education`.
    account_type: Option<String>,
    /// Keep the token's apps updated on devices.
    automatic_updates: Option<bool>,
}

/// Changes a token's settings.
#[utoipa::path(
    patch,
    path = "/v1/tokens/{id}",
    tag = "tokens",
    params(("id" = String, Path, description = TOKEN_ID)),
    request_body = TokenChangeBody,
    responses(
        (status = 200, description = "The token as changed", body = TokenView),
        (status = 404, description = "No such token", body = ErrorBody),
        (status = 409, description = "A token has that name", body = ErrorBody),
    ),
)]
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

/// One token.
#[utoipa::path(
    get,
    path = "/v1/tokens/{id}",
    tag = "tokens",
    params(("id" = String, Path, description = TOKEN_ID)),
    responses(
        (status = 200, description = "The token", body = TokenView),
        (status = 404, description = "No such token", body = ErrorBody),
    ),
)]
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

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct RenewBody {
    /// The location's new `.vpptoken` file (base64 text).
    token_file: String,
}

/// Replaces a token's secret with a renewed token file of the same location.
#[utoipa::path(
    post,
    path = "/v1/tokens/{id}/renew",
    tag = "tokens",
    params(("id" = String, Path, description = TOKEN_ID)),
    request_body = RenewBody,
    responses(
        (status = 200, description = "Renewed", body = TokenView),
        (status = 404, description = "No such token", body = ErrorBody),
        (status = 409, description = "The file is of another location", body = ErrorBody),
        (status = 422, description = "Not a token file", body = ErrorBody),
        (status = 502, description = "Apple's service failed or refused the token", body = ErrorBody),
    ),
)]
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

/// Claims a token at Apple from the other MDM that holds it.
#[utoipa::path(
    post,
    path = "/v1/tokens/{id}/take-over",
    tag = "tokens",
    params(("id" = String, Path, description = TOKEN_ID)),
    responses(
        (status = 200, description = "Taken over", body = TokenView),
        (status = 404, description = "No such token", body = ErrorBody),
        (status = 502, description = "Apple's service failed", body = ErrorBody),
    ),
)]
async fn take_over_token(
    State(state): State<ServerState>,
    actor: Actor,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<impl IntoResponse> {
    let result = crate::apple::token_lifecycle::take_over(&state, &id).await;
    admin::audit(&state, &actor, "token.take_over", &id, &result).await;
    Ok(Json(TokenView::new(result?, state.clock.now())))
}

/// Deletes a token with its apps and assignments; no license is revoked and nothing is
/// uninstalled.
#[utoipa::path(
    delete,
    path = "/v1/tokens/{id}",
    tag = "tokens",
    params(("id" = String, Path, description = TOKEN_ID)),
    responses(
        (status = 200, description = "Deleted", body = crate::apple::token_lifecycle::Deleted),
        (status = 404, description = "No such token", body = ErrorBody),
    ),
)]
async fn delete_token(
    State(state): State<ServerState>,
    actor: Actor,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<impl IntoResponse> {
    let result = crate::apple::token_lifecycle::delete(&state, &id).await;
    admin::audit(&state, &actor, "token.delete", &id, &result).await;
    Ok(Json(result?))
}

/// Deletes a device: its device licenses go back to the pool; apps on it stay.
#[utoipa::path(
    delete,
    path = "/v1/devices/{udid}",
    tag = "devices",
    params(("udid" = String, Path, description = UDID)),
    responses(
        (status = 200, description = "Deleted", body = DeviceDeleted),
        (status = 404, description = "No such device", body = ErrorBody),
    ),
)]
async fn delete_device(
    State(state): State<ServerState>,
    actor: Actor,
    ApiPath(udid): ApiPath<String>,
) -> ApiResult<impl IntoResponse> {
    let udid = Udid(udid);
    let result = admin::delete_device(&state, &udid).await;
    admin::audit(&state, &actor, "device.delete", udid.as_str(), &result).await;
    result?;
    Ok(Json(DeviceDeleted {
        deleted: udid,
        note: "its device licenses go back to the pool; apps on it are not removed",
    }))
}

/// A deleted device.
#[derive(Serialize, utoipa::ToSchema)]
struct DeviceDeleted {
    /// The device.
    deleted: Udid,
    /// What it means.
    note: &'static str,
}
