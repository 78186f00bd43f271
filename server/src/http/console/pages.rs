//! The console's pages and forms. Pages read through the same store and services as
//! the admin API; forms go through the same admin services (and their audit entries
//! name the signed-in token), then redirect (post, redirect, get).

use std::convert::Infallible;
use std::time::Duration;

use axum::Form;
use axum::extract::{Multipart, Path, Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use orchard_protocol::Udid;
use serde::Deserialize;

use super::layout::{license_bar, page};
use super::session::{Signed, refusal};
use crate::access::Permission;
use crate::admin::{self, TokenUpload};
use crate::apple::{sync, token_lifecycle};
use crate::error::ServerError;
use crate::state::ServerState;
use crate::store::rows::two_key;
use crate::store::{
    AppRecord, DeviceFilter, EventFilter, GroupKind, InstallFilter, InstallStatus, Intent,
    LicenseType, Page, Platform,
};

pub(super) fn broken(e: impl std::fmt::Display) -> Response {
    tracing::error!(error = %e, "console: a page could not be read");
    refusal(
        StatusCode::INTERNAL_SERVER_ERROR,
        "The server could not read what this page shows; see its log.",
    )
}

/// Where a form goes once its service answered: on to `to`, or to a page naming the
/// refusal.
pub(super) fn finish<T>(result: crate::error::ServerResult<T>, to: &str) -> Response {
    match result {
        Ok(_) => Redirect::to(to).into_response(),
        Err(e) => refused(e),
    }
}

/// A service's refusal as a page naming it (what the API would answer).
pub(super) fn refused(e: ServerError) -> Response {
    let api = super::super::error::ApiError::from(e);
    refusal(api.status, &api.message)
}

pub(super) fn when(t: Option<crate::clock::Timestamp>) -> String {
    t.map_or_else(
        || "never".to_owned(),
        |t| t.rfc3339()[..19].replace('T', " "),
    )
}

/// `GET /console`: tokens, apps with their licenses, install counts, devices seen in
/// the last hour and recent failures.
pub(super) async fn dashboard(
    State(state): State<ServerState>,
    signed: Signed,
) -> Result<Markup, Response> {
    let now = state.clock.now();
    let tokens = state.store.tokens(&Page::all()).await.map_err(broken)?;
    let apps = state.store.apps(&Page::all()).await.map_err(broken)?;
    let mut statuses = std::collections::BTreeMap::<&'static str, i64>::new();
    for app in &apps {
        let summary = admin::app_summary(&state, &app.id).await.map_err(broken)?;
        for (status, n) in summary.installs {
            *statuses.entry(status).or_default() += n;
        }
    }
    let seen = DeviceFilter {
        seen_since: Some(now - Duration::from_secs(3600)),
        ..DeviceFilter::default()
    };
    let recent = state
        .store
        .devices(
            &seen,
            &Page {
                limit: 1000,
                cursor: None,
            },
        )
        .await
        .map_err(broken)?
        .len();
    let failed = InstallFilter {
        status: Some(InstallStatus::Failed),
        ..InstallFilter::default()
    };
    let failures = state
        .store
        .installs(
            &failed,
            &Page {
                limit: 10,
                cursor: None,
            },
        )
        .await
        .map_err(broken)?;
    let sync = signed.may(Permission::Operate);
    let upload = signed.may(Permission::ManageVpp);
    Ok(page(
        signed.viewer(),
        "Dashboard",
        html! {
            h1 { "Dashboard" }
            section aria-labelledby="tokens" {
                h2 id="tokens" { "VPP tokens" }
                table {
                    thead { tr { th { "Name" } th { "Location" } th { "Status" } th { "Expires" } th { "Last sync" } @if sync { th { span class="sr-only" { "Actions" } } } } }
                    tbody {
                        @for t in &tokens {
                            @let status = token_lifecycle::status(t, now).as_str();
                            @let expiry = token_lifecycle::expiry_status(t.expires_at, now).as_str();
                            tr data-token=(t.id) {
                                td { (t.name) }
                                td { (t.location_name.as_deref().unwrap_or("-")) }
                                td class=(format!("status {status}")) {
                                    (status)
                                    @if let Some(other) = &t.external_mdm { " (held by " (other) ")" }
                                    @if let Some(why) = &t.disabled_reason { ": " (why) }
                                }
                                td class=(format!("expiry {expiry}")) {
                                    (when(Some(t.expires_at)))
                                    @if expiry == "expiring_soon" { " · expires within 30 days: renew it" }
                                    @if expiry == "expired" { " · expired" }
                                }
                                td {
                                    (when(t.last_sync_at))
                                    @if let Some(e) = &t.last_sync_error { div class="error" { (e) } }
                                }
                                @if sync {
                                    td {
                                        form method="post" action=(format!("/console/tokens/{}/sync", t.id)) {
                                            input type="hidden" name="csrf" value=(signed.csrf);
                                            button type="submit" { "Sync now" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
                @if tokens.is_empty() { p { "No VPP token yet." } }
                @if upload {
                    form method="post" action="/console/tokens" enctype="multipart/form-data" class="inline" {
                        input type="hidden" name="csrf" value=(signed.csrf);
                        label { "Name " input type="text" name="name" required; }
                        label { "Token file (.vpptoken) " input type="file" name="token_file" accept=".vpptoken" required; }
                        label { input type="checkbox" name="consent" value="yes" required; " This server may manage the token's licenses" }
                        button type="submit" { "Upload token" }
                    }
                }
            }
            section aria-labelledby="apps" {
                h2 id="apps" { "Apps" }
                table {
                    thead { tr { th { "App" } th { "Version" } th { "Token" } th { "Licenses" } } }
                    tbody {
                        @for a in &apps {
                            tr {
                                td { a href=(format!("/console/apps/{}", a.id)) { (a.name.as_deref().unwrap_or(&a.adam_id.to_string())) } }
                                td { (a.version.as_deref().unwrap_or("-")) }
                                td { (tokens.iter().find(|t| t.id == a.token_id).map_or(a.token_id.as_str(), |t| t.name.as_str())) }
                                td { (license_bar(a.counts.assigned, a.counts.total, a.counts.available)) }
                            }
                        }
                    }
                }
            }
            section aria-labelledby="installs" {
                h2 id="installs" { "Installs" }
                dl class="counts" {
                    @for (status, n) in &statuses { dt { (status) } dd { (n) } }
                }
                p { (if recent >= 1000 { "1000 or more".to_owned() } else { recent.to_string() }) " devices seen in the last hour." }
                h3 { "Recent failures" }
                @if failures.is_empty() { p { "None." } }
                ul {
                    @for f in &failures {
                        li {
                            a href=(format!("/console/apps/{}", f.app_id)) { (apps.iter().find(|a| a.id == f.app_id).and_then(|a| a.name.as_deref()).unwrap_or(&f.app_id)) }
                            " on " a href=(format!("/console/devices/{}", super::layout::urlencode(f.udid.as_str()))) { (f.udid.as_str()) } ": " (f.reason.as_deref().unwrap_or("no reason given"))
                        }
                    }
                }
            }
        },
    ))
}

/// A form's CSRF token alone.
#[derive(Deserialize)]
pub(super) struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

impl CsrfForm {
    /// The token the form carried.
    pub(super) fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// `POST /console/tokens/{id}/sync`.
pub(super) async fn sync_token(
    State(state): State<ServerState>,
    signed: Signed,
    Path(id): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Response {
    if let Some(refusal) = signed.refuses(Permission::Operate, &form.csrf) {
        return refusal;
    }
    let result = sync::sync_token(&state, &id).await;
    admin::audit(&state, &signed.actor, "token.sync", &id, &result).await;
    finish(result, "/console")
}

/// Longest token file taken by the upload form.
const MAX_TOKEN_FILE: usize = 64 * 1024;

/// `POST /console/tokens` (multipart): upload a `.vpptoken` file.
pub(super) async fn upload_token(
    State(state): State<ServerState>,
    signed: Signed,
    mut form: Multipart,
) -> Response {
    let (mut csrf, mut name, mut file, mut consent) =
        (String::new(), String::new(), String::new(), false);
    loop {
        let field = match form.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => break,
            Err(e) => {
                return refusal(
                    StatusCode::BAD_REQUEST,
                    &format!("The form could not be read: {e}"),
                );
            }
        };
        let key = field.name().unwrap_or_default().to_owned();
        let value = match field.bytes().await {
            Ok(v) if v.len() <= MAX_TOKEN_FILE => String::from_utf8_lossy(&v).trim().to_owned(),
            Ok(_) => {
                return refusal(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "A token file is at most 64 KiB.",
                );
            }
            Err(e) => {
                return refusal(
                    StatusCode::BAD_REQUEST,
                    &format!("The form could not be read: {e}"),
                );
            }
        };
        match key.as_str() {
            "csrf" => csrf = value,
            "name" => name = value,
            "token_file" => file = value,
            "consent" => consent = value == "yes",
            _ => {}
        }
    }
    if let Some(refusal) = signed.refuses(Permission::ManageVpp, &csrf) {
        return refusal;
    }
    let upload = TokenUpload {
        name: name.clone(),
        token_file: file,
        consent,
        take_over: false,
        settings: admin::TokenSettings {
            name: None,
            priority: None,
            apple_id: None,
            store_country: None,
            account_type: None,
            automatic_updates: None,
        },
    };
    let result = admin::upload_token(&state, upload).await;
    let target = result.as_ref().map(|t| t.id.clone()).unwrap_or(name);
    admin::audit(&state, &signed.actor, "token.upload", &target, &result).await;
    finish(result, "/console")
}

async fn app_or_page(state: &ServerState, id: &str) -> Result<AppRecord, Response> {
    admin::app_or_not_found(state, id).await.map_err(refused)
}

/// `GET /console/apps/{id}`: licenses, install counts, assignments, the assign form
/// and the devices' install states, kept current from the event stream.
pub(super) async fn app(
    State(state): State<ServerState>,
    signed: Signed,
    Path(id): Path<String>,
) -> Result<Markup, Response> {
    let app = app_or_page(&state, &id).await?;
    let groups = state.store.groups(&Page::all()).await.map_err(broken)?;
    let tokens = state.store.tokens(&Page::all()).await.map_err(broken)?;
    let mut assignments = Vec::new();
    for a in state
        .store
        .assignments(&Page::all())
        .await
        .map_err(broken)?
    {
        if a.app_id != id {
            continue;
        }
        let group = groups.iter().find(|g| g.id == a.group_id);
        let warnings = match group {
            Some(g) => admin::assignment_warnings(&state, g, a.license_type)
                .await
                .map_err(refused)?,
            None => Vec::new(),
        };
        let group_name = group.map_or_else(|| a.group_id.clone(), |g| g.name.clone());
        assignments.push((a, group_name, warnings));
    }
    let prompts = match &app.bundle_id {
        Some(bundle) => state
            .store
            .prompts(
                &crate::store::PromptFilter {
                    bundle_id: Some(bundle.clone()),
                    ..Default::default()
                },
                &Page {
                    limit: 20,
                    cursor: None,
                },
            )
            .await
            .map_err(broken)?,
        None => Vec::new(),
    };
    let name = app.name.clone().unwrap_or_else(|| app.adam_id.to_string());
    let operate = signed.may(Permission::Operate);
    let view = InstallsQuery::default();
    Ok(page(
        signed.viewer(),
        &name,
        html! {
            h1 { (name) }
            p { (app.product_type) " · version " (app.version.as_deref().unwrap_or("-")) " · " (app.bundle_id.as_deref().unwrap_or("no bundle ID yet")) " · token " (tokens.iter().find(|t| t.id == app.token_id).map_or(app.token_id.as_str(), |t| t.name.as_str())) }
            section aria-labelledby="assignments" {
                h2 id="assignments" { "Assignments" }
                @if assignments.is_empty() { p { "Not assigned." } }
                ul class="assignments" {
                    @for (a, group, warnings) in &assignments {
                        li {
                            (group) ": " (a.intent.as_str()) ", " (a.license_type.as_str()) " licensing"
                            @if !a.install { " (license only)" }
                            @for w in warnings { p class="warning" role="note" { "Warning: " (w) } }
                            @if operate {
                                form method="post" action=(format!("/console/assignments/{}", a.id)) class="inline" {
                                    input type="hidden" name="csrf" value=(signed.csrf);
                                    label { "Intent "
                                        select name="intent" {
                                            @for (v, l) in [("required", "Required"), ("available", "Available"), ("uninstall", "Uninstall")] { option value=(v) selected[a.intent.as_str() == v] { (l) } }
                                        }
                                    }
                                    label { "Licensing "
                                        select name="license_type" {
                                            @for (v, l) in [("device", "Device"), ("user", "User")] { option value=(v) selected[a.license_type.as_str() == v] { (l) } }
                                        }
                                    }
                                    button type="submit" { "Change" }
                                }
                                form method="post" action=(format!("/console/assignments/{}/delete", a.id)) class="inline" {
                                    input type="hidden" name="csrf" value=(signed.csrf);
                                    button type="submit" class="secondary" { "Delete assignment" }
                                    span class="hint" { "Licenses no other assignment needs go back to the pool; the app stays installed." }
                                }
                            }
                        }
                    }
                }
                @if operate {
                    h3 { "Assign" }
                    form method="post" action=(format!("/console/apps/{id}/assignments")) class="inline" {
                        input type="hidden" name="csrf" value=(signed.csrf);
                        label { "Group "
                            select name="group_id" required {
                                @for g in &groups { option value=(g.id) { (g.name) " (" (g.kind.as_str()) ")" } }
                            }
                        }
                        label { "Intent "
                            select name="intent" { option value="required" { "Required" } option value="available" { "Available" } option value="uninstall" { "Uninstall" } }
                        }
                        label { "Licensing "
                            select name="license_type" { option value="device" { "Device" } option value="user" { "User" } }
                        }
                        button type="submit" { "Assign" }
                    }
                    h3 { "Revoke" }
                    form method="post" action=(format!("/console/apps/{id}/revoke")) class="inline" {
                        input type="hidden" name="csrf" value=(signed.csrf);
                        label { input type="checkbox" name="notify_users" value="yes"; " Tell the users on their devices" }
                        button type="submit" class="danger" { "Revoke every license of this app" }
                        span class="hint" { "Licenses are taken back at Apple and not asked for again until an assignment reaches anew; iOS apps stay installed." }
                    }
                }
            }
            section aria-labelledby="devices" hx-ext="sse" sse-connect=(format!("/console/apps/{id}/live")) {
                h2 id="devices" { "Devices" }
                div id="installs"
                    hx-get=(format!("/console/apps/{id}/installs"))
                    hx-trigger="sse:install"
                    hx-include="#install-filter" {
                    (installs_table(&state, &app, &groups, &view).await.map_err(refused)?)
                }
            }
            section aria-labelledby="prompts" {
                h2 id="prompts" { "Prompts" }
                @if prompts.is_empty() { p { "No device asked its user about this app." } }
                ul {
                    @for p in &prompts {
                        li { (p.kind) " on " a href=(format!("/console/devices/{}", super::layout::urlencode(p.udid.as_str()))) { (p.udid.as_str()) } " at " (when(Some(p.shown_at))) ": " (p.answer.as_deref().unwrap_or("not answered yet")) }
                    }
                }
            }
        },
    ))
}

/// Every install status, in the order the filter offers them.
const INSTALL_STATUSES: [&str; 13] = [
    "installed",
    "installing",
    "queued",
    "pending",
    "prompting",
    "update_available",
    "failed",
    "license_failed",
    "not_applicable",
    "not_installed",
    "licensed",
    "removing",
    "removed",
];

/// The installs table's filters and place.
#[derive(Default, Deserialize)]
pub(super) struct InstallsQuery {
    #[serde(default)]
    status: String,
    #[serde(default)]
    platform: String,
    #[serde(default)]
    group_id: String,
    after: Option<String>,
}

/// The install filters, the app's counts and one page of its installs table.
async fn installs_table(
    state: &ServerState,
    app: &AppRecord,
    groups: &[crate::store::GroupRecord],
    q: &InstallsQuery,
) -> Result<Markup, ServerError> {
    let invalid = |field: &'static str, value: &str| ServerError::Invalid {
        field,
        reason: format!("{value:?} is not one"),
    };
    let status = match q.status.as_str() {
        "" => None,
        s => Some(InstallStatus::parse(s).ok_or_else(|| invalid("status", s))?),
    };
    let platform = match q.platform.as_str() {
        "" => None,
        p => Some(Platform::parse(p).ok_or_else(|| invalid("platform", p))?),
    };
    let app_id = app.id.as_str();
    let summary = admin::app_summary(state, app_id).await?;
    let filter = InstallFilter {
        app_id: Some(app_id.to_owned()),
        status,
        platform,
        group_id: Some(q.group_id.clone()).filter(|g| !g.is_empty()),
        ..InstallFilter::default()
    };
    let rows = state
        .store
        .installs(&filter, &super::layout::table_page(q.after.clone()))
        .await?;
    let next = super::layout::next_key(&rows, |r| two_key(&r.app_id, r.udid.as_str()));
    Ok(html! {
        (license_bar(summary.licenses.assigned, summary.licenses.total, summary.licenses.available))
        dl class="counts" {
            @for (status, n) in &summary.installs { dt { (status) } dd data-status=(status) { (n) } }
        }
        form id="install-filter" class="inline" hx-get=(format!("/console/apps/{app_id}/installs")) hx-target="#installs" hx-trigger="change" {
            label { "Status "
                select name="status" {
                    option value="" { "any" }
                    @for s in INSTALL_STATUSES { option value=(s) selected[q.status == s] { (s) } }
                }
            }
            label { "Platform "
                select name="platform" {
                    option value="" { "any" }
                    @for p in ["ios", "ipados", "macos", "unknown"] { option value=(p) selected[q.platform == p] { (p) } }
                }
            }
            label { "Group "
                select name="group_id" {
                    option value="" { "any" }
                    @for g in groups { option value=(g.id) selected[q.group_id == g.id] { (g.name) } }
                }
            }
        }
        table {
            thead { tr { th { "Device" } th { "Status" } th { "Version" } th { "Reason" } th { "Updated" } } }
            tbody {
                @for r in &rows {
                    tr data-udid=(r.udid.as_str()) {
                        td { a href=(format!("/console/devices/{}", super::layout::urlencode(r.udid.as_str()))) { (r.udid.as_str()) } }
                        td class=(format!("status {}", r.status.as_str())) { (r.status.as_str()) }
                        td {
                            (r.version.as_deref().unwrap_or("-"))
                            @if r.status == InstallStatus::Installed && r.version.is_some() && app.version.is_some() && r.version != app.version {
                                " (store has " (app.version.as_deref().unwrap_or_default()) ")"
                            }
                        }
                        td { (r.reason.as_deref().unwrap_or("")) }
                        td { (when(Some(r.updated_at))) }
                    }
                }
            }
        }
        @if rows.is_empty() { p { "No device matches." } }
        @if let Some(next) = next {
            button type="button" hx-get=(format!("/console/apps/{app_id}/installs")) hx-vals=(serde_json::json!({ "after": next }).to_string()) hx-include="#install-filter" hx-target="#installs" { "Next page" }
        }
    })
}

/// `GET /console/apps/{id}/installs`: the installs table (an htmx fragment).
pub(super) async fn installs(
    State(state): State<ServerState>,
    _signed: Signed,
    Path(id): Path<String>,
    Query(q): Query<InstallsQuery>,
) -> Result<Markup, Response> {
    let app = app_or_page(&state, &id).await?;
    let groups = state.store.groups(&Page::all()).await.map_err(broken)?;
    installs_table(&state, &app, &groups, &q)
        .await
        .map_err(refused)
}

/// `GET /console/apps/{id}/live`: an `install` event whenever a device's install state
/// of the app changes (the page then reloads its table).
pub(super) async fn live(
    State(state): State<ServerState>,
    _signed: Signed,
    Path(id): Path<String>,
) -> Result<Response, Response> {
    app_or_page(&state, &id).await?;
    let after = state.store.latest_event_id().await.map_err(broken)?;
    let filter = EventFilter {
        kind: Some("install".into()),
        app_id: Some(id),
        ..EventFilter::default()
    };
    let stopping = state.stopping.clone();
    let store = state.store.clone();
    let stream = futures_util::stream::unfold((store, after), move |(store, mut after)| {
        let filter = filter.clone();
        let stopping = stopping.clone();
        async move {
            loop {
                let batch = tokio::select! {
                    _ = stopping.cancelled() => return None,
                    batch = store.events(&filter, after, 500) => batch,
                };
                match batch {
                    Ok(events) if !events.is_empty() => {
                        after = events.last().map_or(after, |e| e.id);
                        let event = Event::default()
                            .event("install")
                            .data(events.len().to_string());
                        return Some((Ok::<Event, Infallible>(event), (store, after)));
                    }
                    Ok(_) => tokio::time::sleep(Duration::from_millis(250)).await,
                    Err(e) => {
                        tracing::warn!(error = %e, "console live view: cannot read events");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        }
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// The assign form.
#[derive(Deserialize)]
pub(super) struct AssignForm {
    #[serde(default)]
    csrf: String,
    group_id: String,
    intent: Intent,
    license_type: LicenseType,
}

/// `POST /console/apps/{id}/assignments`.
pub(super) async fn assign(
    State(state): State<ServerState>,
    signed: Signed,
    Path(id): Path<String>,
    Form(form): Form<AssignForm>,
) -> Response {
    if let Some(refusal) = signed.refuses(Permission::Operate, &form.csrf) {
        return refusal;
    }
    let result = admin::assign(
        &state,
        &id,
        &form.group_id,
        form.intent,
        form.license_type,
        true,
        false,
    )
    .await;
    let target = format!("{id} -> {}", form.group_id);
    admin::audit(&state, &signed.actor, "assignment.create", &target, &result).await;
    finish(result, &format!("/console/apps/{id}"))
}

/// `GET /console/groups`: groups, their members' count, and the forms that make them.
pub(super) async fn groups(
    State(state): State<ServerState>,
    signed: Signed,
) -> Result<Markup, Response> {
    let groups = state.store.groups(&Page::all()).await.map_err(broken)?;
    let members = state.store.group_sizes().await.map_err(broken)?;
    let operate = signed.may(Permission::Operate);
    Ok(page(
        signed.viewer(),
        "Groups",
        html! {
            h1 { "Groups" }
            table {
                thead { tr { th { "Group" } th { "Members" } @if operate { th { "Add members" } } } }
                tbody {
                    @for g in &groups {
                        tr {
                            td { a href=(format!("/console/groups/{}", g.id)) { (g.name) } }
                            @let n = members.get(&g.id).copied().unwrap_or(0);
                            td { (n) " " (match (g.kind, n) { (GroupKind::Device, 1) => "device", (GroupKind::Device, _) => "devices", (GroupKind::User, 1) => "user", (GroupKind::User, _) => "users" }) }
                            @if operate && g.kind == GroupKind::Device {
                                td {
                                    form method="post" action=(format!("/console/groups/{}/devices", g.id)) class="inline" {
                                        input type="hidden" name="csrf" value=(signed.csrf);
                                        label { "UDIDs, one per line " textarea name="udids" rows="2" cols="40" required {} }
                                        button type="submit" { "Add" }
                                    }
                                }
                            }
                            @if operate && g.kind == GroupKind::User {
                                td {
                                    form method="post" action=(format!("/console/groups/{}/users", g.id)) class="inline" {
                                        input type="hidden" name="csrf" value=(signed.csrf);
                                        label { "Users (ids or emails), one per line " textarea name="users" rows="2" cols="40" required {} }
                                        button type="submit" { "Add" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            @if operate {
                form method="post" action="/console/groups" class="inline" {
                    input type="hidden" name="csrf" value=(signed.csrf);
                    label { "Name " input type="text" name="name" required; }
                    label { "Members "
                        select name="kind" { option value="device" { "devices" } option value="user" { "users" } }
                    }
                    button type="submit" { "Create group" }
                }
            }
        },
    ))
}

/// The new-group form.
#[derive(Deserialize)]
pub(super) struct GroupForm {
    #[serde(default)]
    csrf: String,
    name: String,
    kind: GroupKind,
}

/// `POST /console/groups`.
pub(super) async fn create_group(
    State(state): State<ServerState>,
    signed: Signed,
    Form(form): Form<GroupForm>,
) -> Response {
    if let Some(refusal) = signed.refuses(Permission::Operate, &form.csrf) {
        return refusal;
    }
    let result = admin::create_group(&state, &form.name, form.kind).await;
    let target = result.as_ref().map(|g| g.id.clone()).unwrap_or(form.name);
    admin::audit(&state, &signed.actor, "group.create", &target, &result).await;
    finish(result, "/console/groups")
}

/// The add-devices form.
#[derive(Deserialize)]
pub(super) struct MembersForm {
    #[serde(default)]
    csrf: String,
    udids: String,
}

/// Most UDIDs one form adds.
const MAX_MEMBERS: usize = 10_000;

/// `POST /console/groups/{id}/devices`.
pub(super) async fn add_devices(
    State(state): State<ServerState>,
    signed: Signed,
    Path(id): Path<String>,
    Form(form): Form<MembersForm>,
) -> Response {
    if let Some(refusal) = signed.refuses(Permission::Operate, &form.csrf) {
        return refusal;
    }
    let mut udids = Vec::new();
    for line in form
        .udids
        .split(|c: char| c == '\n' || c == ',' || c.is_whitespace())
    {
        if line.is_empty() {
            continue;
        }
        match Udid::parse(line) {
            Ok(u) if udids.len() < MAX_MEMBERS => udids.push(u),
            Ok(_) => return refusal(StatusCode::BAD_REQUEST, "At most 10,000 UDIDs at once."),
            Err(e) => return refusal(StatusCode::BAD_REQUEST, &format!("{line:?}: {e}")),
        }
    }
    let result = admin::add_group_devices(&state, &id, &udids).await;
    admin::audit(&state, &signed.actor, "group.add_devices", &id, &result).await;
    finish(result, "/console/groups")
}

/// The change-assignment form.
#[derive(Deserialize)]
pub(super) struct AssignmentChangeForm {
    #[serde(default)]
    csrf: String,
    intent: Intent,
    license_type: LicenseType,
}

/// `POST /console/assignments/{id}`: change an assignment's intent or licensing.
pub(super) async fn change_assignment(
    State(state): State<ServerState>,
    signed: Signed,
    Path(id): Path<String>,
    Form(form): Form<AssignmentChangeForm>,
) -> Response {
    if let Some(refusal) = signed.refuses(Permission::Operate, &form.csrf) {
        return refusal;
    }
    let change = admin::AssignmentChange {
        intent: Some(form.intent),
        license_type: Some(form.license_type),
        install: None,
    };
    let result = admin::update_assignment(&state, &id, change).await;
    admin::audit(&state, &signed.actor, "assignment.update", &id, &result).await;
    match result {
        Ok(a) => Redirect::to(&format!("/console/apps/{}", a.app_id)).into_response(),
        Err(e) => refused(e),
    }
}

/// `POST /console/assignments/{id}/delete`.
pub(super) async fn delete_assignment(
    State(state): State<ServerState>,
    signed: Signed,
    Path(id): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Response {
    if let Some(refusal) = signed.refuses(Permission::Operate, &form.csrf) {
        return refusal;
    }
    let app_id = match state.store.assignment(&id).await {
        Ok(Some(a)) => a.app_id,
        Ok(None) => return refused(ServerError::not_found("assignment", &id)),
        Err(e) => return broken(e),
    };
    let result = admin::delete_assignment(&state, &id).await;
    admin::audit(&state, &signed.actor, "assignment.delete", &id, &result).await;
    finish(result, &format!("/console/apps/{app_id}"))
}

/// The revoke form.
#[derive(Deserialize)]
pub(super) struct RevokeForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    notify_users: String,
}

/// `POST /console/apps/{id}/revoke`: take every license of the app back.
pub(super) async fn revoke(
    State(state): State<ServerState>,
    signed: Signed,
    Path(id): Path<String>,
    Form(form): Form<RevokeForm>,
) -> Response {
    if let Some(refusal) = signed.refuses(Permission::Operate, &form.csrf) {
        return refusal;
    }
    let target = admin::RevokeTarget::App(id.clone());
    let what = format!("{target:?}");
    let result = admin::revoke(&state, target, form.notify_users == "yes").await;
    admin::audit(&state, &signed.actor, "licenses.revoke", &what, &result).await;
    finish(result, &format!("/console/apps/{id}"))
}

/// `GET /console/groups/{id}`: a group's members, 50 a page.
pub(super) async fn group(
    State(state): State<ServerState>,
    signed: Signed,
    Path(id): Path<String>,
    Query(q): Query<AfterQuery>,
) -> Result<Markup, Response> {
    let group = state
        .store
        .group(&id)
        .await
        .map_err(broken)?
        .ok_or_else(|| refused(ServerError::not_found("group", &id)))?;
    let page_of = super::layout::table_page(q.after);
    let devices = group.kind == GroupKind::Device;
    let members: Vec<String> = if devices {
        state
            .store
            .group_device_page(&id, &page_of)
            .await
            .map_err(broken)?
            .into_iter()
            .map(|u| u.0)
            .collect()
    } else {
        state
            .store
            .group_user_page(&id, &page_of)
            .await
            .map_err(broken)?
    };
    let next = super::layout::next_key(&members, Clone::clone);
    let (kind, base) = if devices {
        ("devices", "/console/devices")
    } else {
        ("users", "/console/users")
    };
    Ok(page(
        signed.viewer(),
        &group.name,
        html! {
            h1 { (group.name) }
            p { "A group of " (kind) "." }
            ul {
                @for m in &members {
                    li { a href=(format!("{base}/{}", super::layout::urlencode(m))) { (m) } }
                }
            }
            @if members.is_empty() { p { "No member yet." } }
            @if let Some(next) = next {
                p { a href=(format!("/console/groups/{id}?after={}", super::layout::urlencode(&next))) { "Next page" } }
            }
        },
    ))
}

/// A page's place in a list.
#[derive(Deserialize)]
pub(super) struct AfterQuery {
    pub(super) after: Option<String>,
}

/// The add-users form.
#[derive(Deserialize)]
pub(super) struct UsersForm {
    #[serde(default)]
    csrf: String,
    users: String,
}

/// `POST /console/groups/{id}/users`: users by id or email.
pub(super) async fn add_users(
    State(state): State<ServerState>,
    signed: Signed,
    Path(id): Path<String>,
    Form(form): Form<UsersForm>,
) -> Response {
    if let Some(refusal) = signed.refuses(Permission::Operate, &form.csrf) {
        return refusal;
    }
    let wanted: Vec<&str> = form
        .users
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|w| !w.is_empty())
        .collect();
    if wanted.len() > MAX_MEMBERS {
        return refusal(StatusCode::BAD_REQUEST, "At most 10,000 users at once.");
    }
    // Emails are looked up among the users once, when any is given.
    let by_email: std::collections::HashMap<String, String> =
        if wanted.iter().any(|w| w.contains('@')) {
            match state.store.users(&Page::all()).await {
                Ok(users) => users
                    .into_iter()
                    .map(|u| (u.email.to_lowercase(), u.id))
                    .collect(),
                Err(e) => return broken(e),
            }
        } else {
            Default::default()
        };
    let mut ids = Vec::new();
    for w in wanted {
        let found = if w.contains('@') {
            by_email.get(&w.to_lowercase()).cloned()
        } else {
            Some(w.to_owned())
        };
        match found {
            Some(id) => ids.push(id),
            None => return refused(ServerError::not_found("user", w)),
        }
    }
    let result = admin::add_group_users(&state, &id, &ids).await;
    admin::audit(&state, &signed.actor, "group.add_users", &id, &result).await;
    finish(result, "/console/groups")
}
