//! Admin authentication and authorization: `Authorization: Bearer <token>`, checked
//! against the stored hash of each admin token and its expiry; then the token's role
//! must grant the permission the endpoint needs (401 for who, 403 for what).

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{Method, StatusCode};
use std::time::Instant;

use super::error::ApiError;
use crate::access::{self, Permission};
use crate::admin::Actor;
use crate::state::ServerState;

pub use crate::access::token_hash;

impl FromRequestParts<ServerState> for Actor {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &ServerState,
    ) -> Result<Self, Self::Rejection> {
        let addr = super::connection::PeerAddr::of(&parts.extensions);
        if let Some(wait) = state.rate.failed_auth.exceeded(addr, Instant::now()) {
            return Err(ApiError::rate_limited("failed authentications", wait));
        }
        let actor = match authenticate(parts, state).await {
            Ok(actor) => actor,
            Err(refusal) if refusal.status == StatusCode::UNAUTHORIZED => {
                failed(state, addr, parts.uri.path(), &refusal.message).await;
                return Err(refusal);
            }
            Err(other) => return Err(other),
        };
        let needed = required_permission(&parts.method, parts.uri.path());
        match actor.role {
            Some(role) if access::grants(role, needed) => Ok(actor),
            role => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!(
                    "the admin token {:?} has the role {}, which lacks the permission `{}` that {} {} needs",
                    actor.name,
                    role.map_or("none", |r| r.as_str()),
                    needed.as_str(),
                    parts.method,
                    parts.uri.path()
                ),
            )),
        }
    }
}

/// The permission an admin request needs, from its method and path. Reads need `read`
/// except where they reveal a secret or who else gets in; changes need `operate`
/// except VPP tokens and app settings (`manage_vpp`) and admin tokens and webhooks
/// (`administer`). Anything not named here needs `administer`.
pub(super) fn required_permission(method: &Method, path: &str) -> Permission {
    let read = method == Method::GET || method == Method::HEAD;
    if path == "/metrics" {
        return if read {
            Permission::Read
        } else {
            Permission::Administer
        };
    }
    let mut segments = path.strip_prefix("/v1/").unwrap_or(path).split('/');
    let resource = segments.next().unwrap_or_default();
    let last = path.rsplit('/').next().unwrap_or_default();
    match resource {
        "admin-tokens" | "webhooks" => Permission::Administer,
        // The shared enrollment secret is handed out with the enrollment details.
        "enrollment" => Permission::Operate,
        "tokens" if read => Permission::Read,
        "tokens" if last == "sync" => Permission::Operate,
        "tokens" => Permission::ManageVpp,
        "apps" if read => Permission::Read,
        "apps" => Permission::ManageVpp,
        "enrollment-tokens" | "devices" | "groups" | "assignments" | "licenses" | "users"
            if !read =>
        {
            Permission::Operate
        }
        "enrollment-tokens" | "devices" | "groups" | "assignments" | "licenses" | "users"
        | "installs" | "prompts" | "audit" | "events"
            if read =>
        {
            Permission::Read
        }
        _ => Permission::Administer,
    }
}

/// A failed admin authentication: counted against the address, logged and audited.
async fn failed(state: &ServerState, addr: std::net::IpAddr, path: &str, why: &str) {
    let _ = state.rate.failed_auth.take(addr, Instant::now());
    tracing::warn!(%addr, path, reason = why, "admin authentication failed");
    let refused: crate::error::ServerResult<()> =
        Err(crate::error::ServerError::Unauthenticated(why.to_owned()));
    let anonymous = Actor {
        name: format!("unauthenticated ({addr})"),
        token_id: None,
        role: None,
    };
    crate::admin::audit(state, &anonymous, "admin.authenticate", path, &refused).await;
}

async fn authenticate(parts: &Parts, state: &ServerState) -> Result<Actor, ApiError> {
    let unauthenticated = |m: &str| ApiError::new(StatusCode::UNAUTHORIZED, "unauthenticated", m);
    let header = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)
        .ok_or_else(|| {
            unauthenticated(
                "missing Authorization header; send `Authorization: Bearer <admin token>`",
            )
        })?;
    let token = header
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            unauthenticated("the Authorization header must be `Bearer <admin token>`")
        })?;
    let record = state
        .store
        .admin_token_by_hash(&token_hash(token))
        .await?
        .ok_or_else(|| {
            unauthenticated(
                "the admin token is not valid (unknown, revoked or replaced by a rotation)",
            )
        })?;
    if let Some(at) = record.expires_at
        && record.expired(state.clock.now())
    {
        return Err(unauthenticated(&format!(
            "the admin token {:?} expired at {at}; ask an admin for a new one",
            record.name
        )));
    }
    Ok(Actor {
        name: record.name,
        token_id: Some(record.id),
        role: Some(record.role),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_endpoint_class_needs_its_permission() {
        use Permission as P;
        let table = [
            ("GET", "/v1/devices", P::Read),
            ("GET", "/v1/devices/X/installs", P::Read),
            ("DELETE", "/v1/devices/X", P::Operate),
            ("POST", "/v1/groups", P::Operate),
            ("POST", "/v1/groups/g/devices", P::Operate),
            ("POST", "/v1/assignments", P::Operate),
            ("POST", "/v1/licenses/revoke", P::Operate),
            ("POST", "/v1/users", P::Operate),
            ("GET", "/v1/enrollment", P::Operate),
            ("POST", "/v1/enrollment/rotate", P::Operate),
            ("GET", "/v1/enrollment-tokens", P::Read),
            ("POST", "/v1/enrollment-tokens", P::Operate),
            ("GET", "/v1/tokens", P::Read),
            ("POST", "/v1/tokens", P::ManageVpp),
            ("PATCH", "/v1/tokens/t", P::ManageVpp),
            ("POST", "/v1/tokens/t/sync", P::Operate),
            ("PATCH", "/v1/apps/a", P::ManageVpp),
            ("GET", "/v1/apps/a/summary", P::Read),
            ("GET", "/v1/audit", P::Read),
            ("GET", "/v1/installs", P::Read),
            ("GET", "/v1/prompts", P::Read),
            ("POST", "/v1/installs", P::Administer),
            ("GET", "/v1/admin-tokens", P::Administer),
            ("POST", "/v1/admin-tokens", P::Administer),
            ("DELETE", "/v1/admin-tokens/x", P::Administer),
            ("GET", "/v1/something-new", P::Administer),
            ("PUT", "/v1/audit", P::Administer),
            ("GET", "/metrics", P::Read),
        ];
        for (method, path, want) in table {
            let method = Method::from_bytes(method.as_bytes()).expect("method");
            assert_eq!(required_permission(&method, path), want, "{method} {path}");
        }
    }
}
