//! Console sign-in: an admin token is exchanged for a session cookie (`__Host-`,
//! Secure, HttpOnly, SameSite=Strict; only its hash is stored). Every request reads the
//! session's admin token again, so a revoked or expired token ends its sessions and a
//! changed role applies at once. Every form carries a CSRF token derived from the
//! session's secret, checked before anything changes.

use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use sha2::{Digest, Sha256};

use super::super::connection::PeerAddr;
use crate::access::{self, Permission};
use crate::admin::Actor;
use crate::state::ServerState;
use crate::store::{AdminTokenRecord, ConsoleSession};

/// The session cookie.
pub(super) const COOKIE: &str = "__Host-orchard_session";
/// How long a sign-in lasts.
const LIFETIME: Duration = Duration::from_secs(8 * 3600);

/// A signed-in admin: who, as which token, and the session's CSRF token.
#[derive(Clone)]
pub(super) struct Signed {
    /// Who acts (the session's admin token).
    pub(super) actor: Actor,
    /// The token's role.
    pub(super) role: crate::store::Role,
    /// The CSRF token every form of this session carries.
    pub(super) csrf: String,
    /// The session cookie's hash (to sign out).
    id_hash: String,
}

impl Signed {
    /// The page shell's view of who is signed in.
    pub(super) fn viewer(&self) -> super::layout::Viewer<'_> {
        super::layout::Viewer {
            name: &self.actor.name,
            role: self.role.as_str(),
            csrf: &self.csrf,
        }
    }

    /// Whether the role grants `permission` (what it does not is not offered).
    pub(super) fn may(&self, permission: Permission) -> bool {
        access::grants(self.role, permission)
    }

    /// The refusal (403) of a form, unless the role grants `permission` and `csrf` is
    /// this session's.
    pub(super) fn refuses(&self, permission: Permission, csrf: &str) -> Option<Response> {
        if !constant_time_eq(csrf.as_bytes(), self.csrf.as_bytes()) {
            return Some(refusal(
                StatusCode::FORBIDDEN,
                "The form's CSRF token is missing or not this session's; reload the page and try again.",
            ));
        }
        if !self.may(permission) {
            return Some(refusal(
                StatusCode::FORBIDDEN,
                &format!(
                    "The {} role may not do this: it needs the `{}` permission.",
                    self.role,
                    permission.as_str()
                ),
            ));
        }
        None
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A refusal page.
pub(super) fn refusal(status: StatusCode, message: &str) -> Response {
    let page = super::layout::bare(
        "Refused",
        maud::html! {
            main { h1 { "Refused" } p role="alert" { (message) } p { a href="/console" { "Back to the console" } } }
        },
    );
    (status, page).into_response()
}

fn hash(value: &str) -> String {
    hex::encode(Sha256::digest(value.as_bytes()))
}

/// The CSRF token of the session whose cookie is `value`.
fn csrf_of(value: &str) -> String {
    hash(&format!("orchard console csrf\n{value}"))
}

/// The value of the cookie `name` (at most 128 characters).
pub(super) fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, value)| value.to_owned())
        .filter(|v| !v.is_empty() && v.len() <= 128)
}

fn cookie_value(headers: &HeaderMap) -> Option<String> {
    cookie(headers, COOKIE)
}

/// The admin token a presented secret names, if it authenticates now.
pub(super) async fn token_for(
    state: &ServerState,
    secret: &str,
) -> Result<Option<AdminTokenRecord>, crate::store::StoreError> {
    let secret = secret.trim();
    if secret.is_empty() || secret.len() > 256 {
        return Ok(None);
    }
    let record = state
        .store
        .admin_token_by_hash(&super::super::token_hash(secret))
        .await?;
    Ok(record.filter(|r| !r.expired(state.clock.now())))
}

/// Starts a session for `token`; returns the `Set-Cookie` value.
pub(super) async fn start(
    state: &ServerState,
    token: &AdminTokenRecord,
) -> Result<HeaderValue, crate::store::StoreError> {
    let value = crate::secret::random();
    let now = state.clock.now();
    let session = ConsoleSession {
        id_hash: hash(&value),
        admin_token_id: token.id.clone(),
        created_at: now,
        expires_at: now + LIFETIME,
    };
    state.store.insert_console_session(&session, now).await?;
    Ok(HeaderValue::from_str(&format!(
        "{COOKIE}={value}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age={}",
        LIFETIME.as_secs()
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("")))
}

/// Ends the session; returns the `Set-Cookie` value that clears the cookie.
pub(super) async fn end(state: &ServerState, signed: &Signed) -> HeaderValue {
    if let Err(e) = state.store.delete_console_session(&signed.id_hash).await {
        tracing::warn!(error = %e, "console: cannot end a session");
    }
    HeaderValue::from_static(
        "__Host-orchard_session=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0",
    )
}

/// Counts a failed sign-in against the address's failed-authentication limit.
pub(super) fn failed(state: &ServerState, addr: std::net::IpAddr) {
    let _ = state.rate.failed_auth.take(addr, Instant::now());
    tracing::warn!(%addr, "console sign-in failed");
}

/// Whether the address is over its failed-authentication limit.
pub(super) fn limited(state: &ServerState, addr: std::net::IpAddr) -> Option<Duration> {
    state.rate.failed_auth.exceeded(addr, Instant::now())
}

impl FromRequestParts<ServerState> for Signed {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &ServerState,
    ) -> Result<Self, Self::Rejection> {
        // Pages send a signed-out visitor to the sign-in form; forms, fragments and
        // streams get a 401.
        let away = |parts: &Parts| {
            if parts.method == Method::GET && !parts.headers.contains_key("hx-request") {
                Redirect::to("/console/login").into_response()
            } else {
                refusal(
                    StatusCode::UNAUTHORIZED,
                    "You are signed out (the session ended or its token was revoked); sign in again.",
                )
            }
        };
        let Some(value) = cookie_value(&parts.headers) else {
            return Err(away(parts));
        };
        let addr = PeerAddr::of(&parts.extensions);
        let broken = |e: crate::store::StoreError| {
            tracing::error!(error = %e, "console: storage failure");
            refusal(
                StatusCode::INTERNAL_SERVER_ERROR,
                "The server could not read the session; see its log.",
            )
        };
        let now = state.clock.now();
        let session = state
            .store
            .console_session(&hash(&value))
            .await
            .map_err(broken)?
            .filter(|s| s.expires_at > now);
        let Some(session) = session else {
            failed(state, addr);
            return Err(away(parts));
        };
        let token = state
            .store
            .admin_token(&session.admin_token_id)
            .await
            .map_err(broken)?
            .filter(|t| !t.expired(now));
        let Some(token) = token else {
            let _ = state.store.delete_console_session(&session.id_hash).await;
            return Err(away(parts));
        };
        Ok(Self {
            actor: Actor {
                name: token.name,
                token_id: Some(token.id),
                role: Some(token.role),
            },
            role: token.role,
            csrf: csrf_of(&value),
            id_hash: session.id_hash,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_cookie_is_read_among_others_and_bounded() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; __Host-orchard_session=abc; b=2"),
        );
        assert_eq!(cookie_value(&headers).as_deref(), Some("abc"));
        let long = format!("{COOKIE}={}", "x".repeat(200));
        headers.insert(
            header::COOKIE,
            HeaderValue::from_str(&long).expect("header"),
        );
        assert_eq!(cookie_value(&headers), None);
        assert_ne!(csrf_of("abc"), csrf_of("abd"));
        assert!(constant_time_eq(b"same", b"same"));
        assert!(!constant_time_eq(b"same", b"sane"));
    }
}
