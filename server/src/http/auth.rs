//! Admin authentication: `Authorization: Bearer <token>`, checked against the stored
//! hash of each admin token.

use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::request::Parts;
use std::time::Instant;

use sha2::{Digest, Sha256};

use super::error::ApiError;
use crate::admin::Actor;
use crate::state::ServerState;

/// The hash under which an admin token is stored.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

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
        let unauthenticated =
            |m: &str| ApiError::new(StatusCode::UNAUTHORIZED, "unauthenticated", m);
        match authenticate(parts, state, &unauthenticated).await {
            Ok(actor) => Ok(actor),
            Err(refusal) if refusal.status == StatusCode::UNAUTHORIZED => {
                failed(state, addr, parts.uri.path(), &refusal.message).await;
                Err(refusal)
            }
            Err(other) => Err(other),
        }
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
        role: String::new(),
    };
    crate::admin::audit(state, &anonymous, "admin.authenticate", path, &refused).await;
}

async fn authenticate(
    parts: &Parts,
    state: &ServerState,
    unauthenticated: &impl Fn(&str) -> ApiError,
) -> Result<Actor, ApiError> {
    {
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
            .ok_or_else(|| unauthenticated("the admin token is not valid"))?;
        Ok(Actor {
            name: record.name,
            role: record.role,
        })
    }
}
