//! Admin authentication: `Authorization: Bearer <token>`, checked against the stored
//! hash of each admin token.

use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::request::Parts;
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
        let unauthenticated =
            |m: &str| ApiError::new(StatusCode::UNAUTHORIZED, "unauthenticated", m);
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
        Ok(Self {
            name: record.name,
            role: record.role,
        })
    }
}
