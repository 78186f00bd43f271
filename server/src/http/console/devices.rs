//! Devices in the console: a paged, filtered list (never every device at once) and a
//! device's page: its facts, its apps, which assignment applies to each app and why the
//! others lost, its prompts, the commands recently sent and their state.

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use maud::{Markup, html};
use orchard_protocol::Udid;
use serde::Deserialize;

use super::layout::{page, urlencode};
use super::pages::{CsrfForm, broken, finish, refused, when};
use super::session::{Signed, refusal};
use crate::access::Permission;
use crate::admin;
use crate::error::ServerError;
use crate::state::ServerState;
use crate::store::{DeviceFilter, EnrollmentStatus, InstallFilter, Page, Platform, PromptFilter};

/// The list's filters.
#[derive(Deserialize)]
pub(super) struct DevicesQuery {
    #[serde(default)]
    platform: String,
    #[serde(default)]
    status: String,
    after: Option<String>,
}

fn yes_no(value: Option<bool>) -> &'static str {
    match value {
        Some(true) => "yes",
        Some(false) => "no",
        None => "not reported",
    }
}

/// `GET /console/devices`: enrolled devices, 50 a page, by platform and state.
pub(super) async fn list(
    State(state): State<ServerState>,
    signed: Signed,
    Query(q): Query<DevicesQuery>,
) -> Result<Markup, Response> {
    let bad =
        |what: &str, v: &str| refusal(StatusCode::BAD_REQUEST, &format!("{v:?} is not a {what}"));
    let platform = match q.platform.as_str() {
        "" => None,
        p => Some(Platform::parse(p).ok_or_else(|| bad("platform", p))?),
    };
    let status = match q.status.as_str() {
        "" => None,
        s => Some(EnrollmentStatus::parse(s).ok_or_else(|| bad("enrollment state", s))?),
    };
    let filter = DeviceFilter {
        platform,
        status,
        ..DeviceFilter::default()
    };
    let rows = state
        .store
        .devices(&filter, &super::layout::table_page(q.after.clone()))
        .await
        .map_err(broken)?;
    let next = super::layout::next_key(&rows, |d| d.udid.0.clone());
    let next_link = next.map(|udid| {
        let mut url = format!("/console/devices?after={}", urlencode(&udid));
        if !q.platform.is_empty() {
            url.push_str(&format!("&platform={}", urlencode(&q.platform)));
        }
        if !q.status.is_empty() {
            url.push_str(&format!("&status={}", urlencode(&q.status)));
        }
        url
    });
    Ok(page(
        signed.viewer(),
        "Devices",
        html! {
            h1 { "Devices" }
            form method="get" action="/console/devices" class="inline" {
                label { "Platform "
                    select name="platform" {
                        option value="" { "any" }
                        @for p in ["ios", "ipados", "macos", "unknown"] { option value=(p) selected[q.platform == p] { (p) } }
                    }
                }
                label { "State "
                    select name="status" {
                        option value="" { "any" }
                        @for s in ["enrolled", "authenticated", "active", "checked_out", "released"] { option value=(s) selected[q.status == s] { (s) } }
                    }
                }
                button type="submit" { "Filter" }
            }
            table {
                thead { tr { th { "Device" } th { "Serial" } th { "Model" } th { "OS" } th { "State" } th { "Last seen" } } }
                tbody {
                    @for d in &rows {
                        tr {
                            td { a href=(format!("/console/devices/{}", urlencode(d.udid.as_str()))) { (d.udid.as_str()) } }
                            td { (d.serial_number.as_str()) }
                            td { (d.product_name.as_deref().unwrap_or("-")) }
                            td { (d.platform.as_str()) " " (d.os_version.as_deref().unwrap_or("")) }
                            td { (d.status.as_str()) }
                            td { (when(Some(d.last_seen_at))) }
                        }
                    }
                }
            }
            @if rows.is_empty() { p { "No device matches." } }
            @if let Some(next) = next_link { p { a href=(next) { "Next page" } } }
        },
    ))
}

/// Commands shown on a device's page.
const RECENT_COMMANDS: usize = 20;

/// `GET /console/devices/{udid}`.
pub(super) async fn device(
    State(state): State<ServerState>,
    signed: Signed,
    Path(udid): Path<String>,
) -> Result<Markup, Response> {
    let udid = Udid::parse(&udid).map_err(|e| refusal(StatusCode::BAD_REQUEST, &e.to_string()))?;
    let d = state
        .store
        .device(&udid)
        .await
        .map_err(broken)?
        .ok_or_else(|| refused(ServerError::not_found("device", udid.as_str())))?;
    let apps = state.store.apps(&Page::all()).await.map_err(broken)?;
    let app_name = |id: &str| {
        apps.iter()
            .find(|a| a.id == id)
            .and_then(|a| a.name.clone())
            .unwrap_or_else(|| id.to_owned())
    };
    let installs = state
        .store
        .installs(
            &InstallFilter {
                udid: Some(udid.clone()),
                ..InstallFilter::default()
            },
            &Page {
                limit: 200,
                cursor: None,
            },
        )
        .await
        .map_err(broken)?;
    let groups = state.store.groups(&Page::all()).await.map_err(broken)?;
    let group_name = |id: &str| {
        groups
            .iter()
            .find(|g| g.id == id)
            .map_or_else(|| id.to_owned(), |g| g.name.clone())
    };
    let candidates: Vec<_> = state
        .store
        .assignment_candidates()
        .await
        .map_err(broken)?
        .into_iter()
        .filter(|c| c.udid == udid)
        .collect();
    let applied = crate::engine::precedence::resolve(&candidates);
    let prompts = state
        .store
        .prompts(
            &PromptFilter {
                udid: Some(udid.clone()),
                ..PromptFilter::default()
            },
            &Page {
                limit: 20,
                cursor: None,
            },
        )
        .await
        .map_err(broken)?;
    let mut commands = state.store.commands_of(&udid).await.map_err(broken)?;
    commands.sort_by_key(|c| std::cmp::Reverse(c.created_at));
    commands.truncate(RECENT_COMMANDS);
    let title = format!(
        "{} {}",
        d.product_name.as_deref().unwrap_or("Device"),
        d.serial_number.as_str()
    );
    Ok(page(
        signed.viewer(),
        &title,
        html! {
            h1 { (title) }
            dl class="facts" {
                dt { "UDID" } dd { (d.udid.as_str()) }
                dt { "Platform" } dd { (d.platform.as_str()) }
                dt { "OS version" } dd { (d.os_version.as_deref().unwrap_or("not reported")) }
                dt { "Model" } dd { (d.product_name.as_deref().unwrap_or("not reported")) }
                dt { "Supervised" } dd { (yes_no(d.is_supervised)) }
                dt { "Ownership" } dd { (d.ownership.as_deref().unwrap_or("not reported")) }
                dt { "Kiosk (single-app mode)" } dd { (yes_no(d.single_app_mode)) }
                dt { "App Store allowed" } dd { (yes_no(d.app_store_allowed)) }
                dt { "Enrollment" } dd { (d.status.as_str()) " since " (when(Some(d.enrolled_at))) }
                dt { "Last seen" } dd { (when(Some(d.last_seen_at))) }
                dt { "User" } dd { (d.user_id.as_deref().unwrap_or("none")) }
            }
            @if signed.may(Permission::Operate) {
                form method="post" action=(format!("/console/devices/{}/inventory", urlencode(udid.as_str()))) {
                    input type="hidden" name="csrf" value=(signed.csrf);
                    button type="submit" { "Refresh inventory" }
                }
            }
            section aria-labelledby="apps" {
                h2 id="apps" { "Apps" }
                table {
                    thead { tr { th { "App" } th { "Status" } th { "Version" } th { "Reason" } th { "Updated" } } }
                    tbody {
                        @for i in &installs {
                            tr {
                                td { a href=(format!("/console/apps/{}", i.app_id)) { (app_name(&i.app_id)) } }
                                td class=(format!("status {}", i.status.as_str())) { (i.status.as_str()) }
                                td { (i.version.as_deref().unwrap_or("-")) }
                                td { (i.reason.as_deref().unwrap_or("")) }
                                td { (when(Some(i.updated_at))) }
                            }
                        }
                    }
                }
                @if installs.is_empty() { p { "No app is assigned to this device." } }
            }
            section aria-labelledby="applies" {
                h2 id="applies" { "Which assignment applies" }
                @if applied.is_empty() { p { "No assignment reaches this device." } }
                ul {
                    @for e in &applied {
                        li {
                            strong { (app_name(&e.winner.app_id)) } ": "
                            (e.winner.intent.as_str()) ", " (e.winner.license_type.as_str()) " licensing, from group " (group_name(&e.winner.group_id))
                            @if !e.overridden.is_empty() {
                                ul {
                                    @for o in &e.overridden {
                                        li { "not " (group_name(&o.candidate.group_id)) " (" (o.candidate.intent.as_str()) "): " (o.rule) }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            section aria-labelledby="prompts" {
                h2 id="prompts" { "Prompts" }
                @if prompts.is_empty() { p { "The device asked its user nothing." } }
                ul {
                    @for p in &prompts {
                        li { (p.kind) " " (p.bundle_id.as_deref().unwrap_or("")) " at " (when(Some(p.shown_at))) ": " (p.answer.as_deref().unwrap_or("not answered yet")) }
                    }
                }
            }
            section aria-labelledby="commands" {
                h2 id="commands" { "Recent commands" }
                table {
                    thead { tr { th { "Command" } th { "App" } th { "State" } th { "Queued" } } }
                    tbody {
                        @for c in &commands {
                            tr {
                                td { (c.request_type) }
                                td { (c.app_id.as_deref().map(app_name).unwrap_or_default()) }
                                td { (c.status.as_str()) }
                                td { (when(Some(c.created_at))) }
                            }
                        }
                    }
                }
            }
        },
    ))
}

/// `POST /console/devices/{udid}/inventory`.
pub(super) async fn refresh_inventory(
    State(state): State<ServerState>,
    signed: Signed,
    Path(udid): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Response {
    if let Some(refusal) = signed.refuses(Permission::Operate, form.csrf()) {
        return refusal;
    }
    let udid = match Udid::parse(&udid) {
        Ok(u) => u,
        Err(e) => return refusal(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    let result = admin::refresh_inventory(&state, &udid).await;
    admin::audit(
        &state,
        &signed.actor,
        "device.inventory",
        udid.as_str(),
        &result,
    )
    .await;
    finish(
        result,
        &format!("/console/devices/{}", urlencode(udid.as_str())),
    )
}
