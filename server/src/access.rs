//! Who may do what through the admin API: the permissions of each admin token role,
//! and the admin tokens themselves (created, rotated and revoked through the API, or
//! minted on the server's host when every admin token is lost).

use crate::clock::Timestamp;
use crate::error::{ServerError, ServerResult};
use crate::store::{AdminStore, AdminTokenRecord, AdminTokenRemoval, Role};

/// A class of admin endpoints; each role grants some of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    /// Read anything but secrets and admin tokens.
    Read,
    /// Devices, groups, memberships, users, assignments, licenses, enrollment (its
    /// shared secret and enrollment tokens), and syncs with Apple.
    Operate,
    /// VPP tokens (upload, settings, renewal, take-over, removal) and app settings.
    ManageVpp,
    /// Admin tokens and webhooks: who else gets in, and where data goes.
    Administer,
}

impl Permission {
    /// The name in error messages and the API description.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Operate => "operate",
            Self::ManageVpp => "manage_vpp",
            Self::Administer => "administer",
        }
    }
}

/// Whether `role` grants `permission`.
pub fn grants(role: Role, permission: Permission) -> bool {
    use Permission as P;
    match role {
        Role::Admin => true,
        Role::Manager => matches!(permission, P::Read | P::Operate | P::ManageVpp),
        Role::Operator => matches!(permission, P::Read | P::Operate),
        Role::Auditor => permission == P::Read,
    }
}

/// Longest admin token name.
const MAX_NAME: usize = 100;

/// Longest validity of an admin token that expires.
const MAX_VALIDITY: std::time::Duration = std::time::Duration::from_secs(10 * 366 * 24 * 3600);

/// A new admin token: its record and its secret (shown once).
#[derive(Debug)]
pub struct IssuedToken {
    /// The stored record.
    pub record: AdminTokenRecord,
    /// The bearer secret; only its hash is kept.
    pub secret: String,
}

/// What an admin asks for when creating a token.
#[derive(Debug, Clone)]
pub struct NewAdminToken {
    /// Unique name.
    pub name: String,
    /// Role.
    pub role: Role,
    /// How long it works (none: until revoked).
    pub valid_for: Option<std::time::Duration>,
}

/// Creates a named admin token. `created_by` is the id of the token that asked (none
/// on the server's host).
pub async fn create(
    store: &dyn AdminStore,
    new: NewAdminToken,
    created_by: Option<&str>,
    now: Timestamp,
) -> ServerResult<IssuedToken> {
    let name = new.name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME || name.chars().any(char::is_control) {
        return Err(ServerError::Invalid {
            field: "name",
            reason: format!("must be 1 to {MAX_NAME} printable characters"),
        });
    }
    if new
        .valid_for
        .is_some_and(|d| d.is_zero() || d > MAX_VALIDITY)
    {
        return Err(ServerError::Invalid {
            field: "expires_in_seconds",
            reason: format!(
                "must be between 1 and {} (ten years); leave it out for a token that works until revoked",
                MAX_VALIDITY.as_secs()
            ),
        });
    }
    let secret = crate::secret::random();
    let record = AdminTokenRecord {
        id: uuid::Uuid::new_v4().to_string(),
        name: name.to_owned(),
        token_hash: token_hash(&secret),
        role: new.role,
        expires_at: new.valid_for.map(|d| now + d),
        created_by: created_by.map(str::to_owned),
        created_at: now,
        rotated_at: None,
    };
    if !store.insert_admin_token(&record).await? {
        return Err(ServerError::Conflict(format!(
            "an admin token named {name:?} exists; pick another name or revoke that one"
        )));
    }
    Ok(IssuedToken { record, secret })
}

/// Replaces a token's secret; the old secret stops working at once.
pub async fn rotate(store: &dyn AdminStore, id: &str, now: Timestamp) -> ServerResult<IssuedToken> {
    let secret = crate::secret::random();
    if !store
        .rotate_admin_token(id, &token_hash(&secret), now)
        .await?
    {
        return Err(ServerError::not_found("admin token", id));
    }
    let record = store
        .admin_token(id)
        .await?
        .ok_or_else(|| ServerError::not_found("admin token", id))?;
    Ok(IssuedToken { record, secret })
}

/// Revokes (deletes) a token; the last unexpired `admin` token cannot be revoked.
pub async fn revoke(store: &dyn AdminStore, id: &str, now: Timestamp) -> ServerResult<()> {
    match store.delete_admin_token(id, now).await? {
        AdminTokenRemoval::Deleted => Ok(()),
        AdminTokenRemoval::NotFound => Err(ServerError::not_found("admin token", id)),
        AdminTokenRemoval::LastAdmin => Err(ServerError::Conflict(
            "this is the last unexpired admin token: create another admin token first \
             (or mint one on the server's host with `orchard-server recover-admin-token`)"
                .into(),
        )),
    }
}

/// Mints a new `admin` token on the server's host, for when every admin token is lost
/// or expired. Its name is `recovery-<time>`, unique per second.
pub async fn recover(store: &dyn AdminStore, now: Timestamp) -> ServerResult<IssuedToken> {
    let stamp = now.as_offset().unix_timestamp();
    create(
        store,
        NewAdminToken {
            name: format!("recovery-{stamp}"),
            role: Role::Admin,
            valid_for: None,
        },
        None,
        now,
    )
    .await
}

/// The hash under which an admin token's secret is stored.
pub fn token_hash(secret: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(secret.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_role_grants_exactly_its_permissions() {
        use Permission as P;
        let all = [P::Read, P::Operate, P::ManageVpp, P::Administer];
        let table = [
            (
                Role::Admin,
                vec![P::Read, P::Operate, P::ManageVpp, P::Administer],
            ),
            (Role::Manager, vec![P::Read, P::Operate, P::ManageVpp]),
            (Role::Operator, vec![P::Read, P::Operate]),
            (Role::Auditor, vec![P::Read]),
        ];
        for (role, granted) in table {
            for p in all {
                assert_eq!(
                    grants(role, p),
                    granted.contains(&p),
                    "{role} and {}",
                    p.as_str()
                );
            }
        }
    }
}
