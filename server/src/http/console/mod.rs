//! The web console at `/console`: server-rendered HTML (maud) on the server's port and
//! TLS, with htmx for the parts that change in place (table pages, filters, the live
//! install view over Server-Sent Events). Every asset is embedded in the binary;
//! pages allow scripts and styles from this server only (CSP), with no inline script.
//!
//! Why maud and htmx: templates are Rust, checked at compile time and escaped by
//! default; pages need no build step or Node toolchain; the few interactive parts are
//! attributes on server-rendered HTML, so the server stays the one place that decides
//! what a role may see and do.

mod devices;
mod directory;
mod layout;
mod pages;
mod session;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::html;

use super::connection::PeerAddr;
use crate::state::ServerState;
use session::Signed;

/// An embedded asset: its name, content type and bytes.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
}

/// Every asset the console serves (htmx 2.0.11 and its SSE extension 2.2.4, both BSD
/// Zero Clause, from the npm registry; and the console's stylesheet).
const ASSETS: [Asset; 3] = [
    Asset {
        name: "htmx.min.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../../../assets/htmx-2.0.11.min.js"),
    },
    Asset {
        name: "sse.min.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../../../assets/htmx-ext-sse-2.2.4.min.js"),
    },
    Asset {
        name: "console.css",
        content_type: "text/css; charset=utf-8",
        bytes: include_bytes!("../../../assets/console.css"),
    },
];

/// Where an asset is served; the server's version in the path lets browsers keep it.
fn asset_path(name: &str) -> String {
    format!("/console/assets/{}/{name}", env!("CARGO_PKG_VERSION"))
}

/// The console's routes.
pub(super) fn router() -> Router<ServerState> {
    Router::new()
        .route("/console", get(pages::dashboard))
        .route("/console/login", get(sign_in_form).post(sign_in))
        .route("/console/logout", post(sign_out))
        .route("/console/assets/{version}/{name}", get(asset))
        .route("/console/tokens", post(pages::upload_token))
        .route("/console/tokens/{id}/sync", post(pages::sync_token))
        .route("/console/apps/{id}", get(pages::app))
        .route("/console/apps/{id}/installs", get(pages::installs))
        .route("/console/apps/{id}/live", get(pages::live))
        .route("/console/apps/{id}/assignments", post(pages::assign))
        .route("/console/apps/{id}/revoke", post(pages::revoke))
        .route("/console/assignments/{id}", post(pages::change_assignment))
        .route(
            "/console/assignments/{id}/delete",
            post(pages::delete_assignment),
        )
        .route(
            "/console/groups",
            get(pages::groups).post(pages::create_group),
        )
        .route("/console/groups/{id}", get(pages::group))
        .route("/console/groups/{id}/devices", post(pages::add_devices))
        .route("/console/groups/{id}/users", post(pages::add_users))
        .route("/console/devices", get(devices::list))
        .route("/console/devices/{udid}", get(devices::device))
        .route(
            "/console/devices/{udid}/inventory",
            post(devices::refresh_inventory),
        )
        .route("/console/users", get(directory::users))
        .route("/console/users/{id}", get(directory::user))
        .route("/console/audit", get(directory::audit))
        .layer(axum::middleware::from_fn(headers))
}

/// Headers of every console answer: scripts, styles and connections from this server
/// only, no framing, no sniffing, no caching of pages.
async fn headers(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let is_asset = req.uri().path().starts_with("/console/assets/");
    let mut response = next.run(req).await;
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(if is_asset {
            "public, max-age=86400, immutable"
        } else {
            "no-store"
        }),
    );
    response
}

async fn asset(Path((version, name)): Path<(String, String)>) -> Response {
    match ASSETS.iter().find(|a| a.name == name) {
        Some(a) if version == env!("CARGO_PKG_VERSION") => {
            ([(header::CONTENT_TYPE, a.content_type)], a.bytes).into_response()
        }
        _ => (StatusCode::NOT_FOUND, "no such asset").into_response(),
    }
}

/// The cookie that ties a sign-in form to the browser that loaded it (login CSRF: a
/// form posted from elsewhere does not carry it).
const LOGIN_COOKIE: &str = "__Host-orchard_login";

/// The sign-in form with a fresh login nonce, and the cookie that carries it.
fn sign_in_page(status: StatusCode, message: Option<&str>) -> Response {
    let nonce = crate::secret::random();
    let mut response = (status, sign_in_markup(&nonce, message)).into_response();
    if let Ok(cookie) = HeaderValue::from_str(&format!(
        "{LOGIN_COOKIE}={nonce}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=900"
    )) {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    response
}

fn sign_in_markup(nonce: &str, message: Option<&str>) -> maud::Markup {
    layout::bare(
        "Sign in",
        html! {
            main class="sign-in" {
                h1 { "Orchard" }
                @if let Some(m) = message { p role="alert" class="error" { (m) } }
                form method="post" action="/console/login" {
                    input type="hidden" name="login" value=(nonce);
                    label { "Admin token " input type="password" name="token" autocomplete="current-password" required autofocus; }
                    button type="submit" { "Sign in" }
                }
                p class="hint" { "Use an admin API token; the console offers what its role may do." }
            }
        },
    )
}

async fn sign_in_form() -> Response {
    sign_in_page(StatusCode::OK, None)
}

#[derive(serde::Deserialize)]
struct SignInForm {
    #[serde(default)]
    token: String,
    #[serde(default)]
    login: String,
}

async fn sign_in(
    State(state): State<ServerState>,
    axum::Extension(PeerAddr(peer)): axum::Extension<PeerAddr>,
    headers: axum::http::HeaderMap,
    axum::Form(form): axum::Form<SignInForm>,
) -> Response {
    let nonce = session::cookie(&headers, LOGIN_COOKIE);
    if form.login.is_empty() || nonce.as_deref() != Some(form.login.as_str()) {
        let message = "The sign-in form expired or was posted from elsewhere; sign in again here.";
        return sign_in_page(StatusCode::FORBIDDEN, Some(message));
    }
    if let Some(wait) = session::limited(&state, peer.ip()) {
        let message = format!(
            "Too many failed sign-ins from this address; try again in {} s.",
            wait.as_secs().max(1)
        );
        return sign_in_page(StatusCode::TOO_MANY_REQUESTS, Some(&message));
    }
    let token = match session::token_for(&state, &form.token).await {
        Ok(token) => token,
        Err(e) => {
            tracing::error!(error = %e, "console: storage failure at sign-in");
            return session::refusal(
                StatusCode::INTERNAL_SERVER_ERROR,
                "The server could not check the token; see its log.",
            );
        }
    };
    let Some(token) = token else {
        session::failed(&state, peer.ip());
        let message = "That token is not valid (unknown, revoked, rotated or expired).";
        return sign_in_page(StatusCode::UNAUTHORIZED, Some(message));
    };
    match session::start(&state, &token).await {
        Ok(cookie) => {
            let mut response = Redirect::to("/console").into_response();
            response.headers_mut().append(header::SET_COOKIE, cookie);
            response.headers_mut().append(
                header::SET_COOKIE,
                HeaderValue::from_static(
                    "__Host-orchard_login=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0",
                ),
            );
            response
        }
        Err(e) => {
            tracing::error!(error = %e, "console: cannot store a session");
            session::refusal(
                StatusCode::INTERNAL_SERVER_ERROR,
                "The server could not start a session; see its log.",
            )
        }
    }
}

async fn sign_out(
    State(state): State<ServerState>,
    signed: Signed,
    axum::Form(form): axum::Form<pages::CsrfForm>,
) -> Response {
    if let Some(refusal) = signed.refuses(crate::access::Permission::Read, form.csrf()) {
        return refusal;
    }
    let cookie = session::end(&state, &signed).await;
    let mut response = Redirect::to("/console/login").into_response();
    response.headers_mut().insert(header::SET_COOKIE, cookie);
    response
}
