//! Users (their registration at Apple under each token, invitation and terms) and the
//! audit log with its filters, in the console.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use maud::{Markup, html};
use serde::Deserialize;

use super::layout::{page, urlencode as enc};
use super::pages::{broken, refused, when};
use super::session::{Signed, refusal};
use crate::admin;
use crate::clock::Timestamp;
use crate::state::ServerState;
use crate::store::AuditFilter;

/// `GET /console/users`.
pub(super) async fn users(
    State(state): State<ServerState>,
    signed: Signed,
    Query(q): Query<super::pages::AfterQuery>,
) -> Result<Markup, Response> {
    let rows = state
        .store
        .users(&super::layout::table_page(q.after))
        .await
        .map_err(broken)?;
    let next = super::layout::next_key(&rows, |u| u.id.clone());
    Ok(page(
        signed.viewer(),
        "Users",
        html! {
            h1 { "Users" }
            table {
                thead { tr { th { "User" } th { "Email" } th { "Managed Apple ID" } } }
                tbody {
                    @for u in &rows {
                        tr {
                            td { a href=(format!("/console/users/{}", u.id)) { (u.name.as_deref().unwrap_or(&u.email)) } }
                            td { (u.email) }
                            td { (u.managed_apple_id.as_deref().unwrap_or("-")) }
                        }
                    }
                }
            }
            @if rows.is_empty() { p { "No user yet." } }
            @if let Some(next) = next { p { a href=(format!("/console/users?after={next}")) { "Next page" } } }
        },
    ))
}

/// `GET /console/users/{id}`: the user's standing at Apple under each token and their
/// devices.
pub(super) async fn user(
    State(state): State<ServerState>,
    signed: Signed,
    Path(id): Path<String>,
) -> Result<Markup, Response> {
    let view = admin::user_view(&state, &id).await.map_err(refused)?;
    let title = view
        .user
        .name
        .clone()
        .unwrap_or_else(|| view.user.email.clone());
    Ok(page(
        signed.viewer(),
        &title,
        html! {
            h1 { (title) }
            p { (view.user.email) @if let Some(m) = &view.user.managed_apple_id { " · " (m) } }
            h2 { "Apple registration" }
            table {
                thead { tr { th { "Token" } th { "Status" } th { "Terms accepted" } th { "Invitation" } th { "Problem" } } }
                tbody {
                    @for s in &view.vpp {
                        tr {
                            td { (s.token_id) }
                            td { (s.status) }
                            td { (if s.terms_accepted { "yes" } else { "no" }) }
                            td {
                                @match &s.invitation {
                                    Some(i) => { "sent " (when(Some(i.sent_at))) @if let Some(a) = &i.answer { ", " (a) } }
                                    None => { "not sent" }
                                }
                            }
                            td class="error" { (s.error.as_deref().unwrap_or("")) }
                        }
                    }
                }
            }
            @if view.vpp.is_empty() { p { "Not registered under any token yet." } }
            h2 { "Devices" }
            ul {
                @for d in &view.devices { li { a href=(format!("/console/devices/{}", d.as_str())) { (d.as_str()) } } }
            }
            @if view.devices.is_empty() { p { "No device." } }
        },
    ))
}

/// The audit log's filters.
#[derive(Deserialize)]
pub(super) struct AuditQuery {
    #[serde(default)]
    actor: String,
    #[serde(default)]
    action: String,
    #[serde(default)]
    since: String,
    after: Option<String>,
}

fn some(value: &str) -> Option<String> {
    Some(value.trim().to_owned()).filter(|v| !v.is_empty())
}

/// `GET /console/audit`: newest first, by actor, action and time.
pub(super) async fn audit(
    State(state): State<ServerState>,
    signed: Signed,
    Query(q): Query<AuditQuery>,
) -> Result<Markup, Response> {
    let since = match some(&q.since) {
        None => None,
        Some(s) => Some(
            // A browser's date-time field gives local minutes without a zone: read as UTC.
            format!("{s}:00Z")
                .parse::<Timestamp>()
                .or_else(|_| s.parse::<Timestamp>())
                .map_err(|_| refusal(StatusCode::BAD_REQUEST, &format!("{s:?} is not a time")))?,
        ),
    };
    let filter = AuditFilter {
        actor: some(&q.actor),
        action: some(&q.action),
        target: None,
        since,
        before: None,
    };
    let rows = state
        .store
        .audit_log(&filter, &super::layout::table_page(q.after.clone()))
        .await
        .map_err(broken)?;
    let next = super::layout::next_key(&rows, |e| e.id.to_string());
    Ok(page(
        signed.viewer(),
        "Audit log",
        html! {
            h1 { "Audit log" }
            form method="get" action="/console/audit" class="inline" {
                label { "Actor " input type="text" name="actor" value=(q.actor); }
                label { "Action " input type="text" name="action" value=(q.action) placeholder="e.g. assignment.create"; }
                label { "Since (UTC) " input type="datetime-local" name="since" value=(q.since); }
                button type="submit" { "Filter" }
            }
            table {
                thead { tr { th { "When" } th { "Actor" } th { "Action" } th { "Target" } th { "Result" } } }
                tbody {
                    @for e in &rows {
                        tr {
                            td { (when(Some(e.at))) }
                            td { (e.actor) }
                            td { (e.action) }
                            td { (e.target) }
                            td class=(if e.result == "ok" { "" } else { "error" }) { (e.result) }
                        }
                    }
                }
            }
            @if rows.is_empty() { p { "Nothing matches." } }
            @if let Some(next) = next {
                p { a href=(format!("/console/audit?after={next}&actor={}&action={}&since={}", enc(&q.actor), enc(&q.action), enc(&q.since))) { "Next page" } }
            }
        },
    ))
}
