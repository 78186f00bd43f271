-- Console sign-ins: the hash of the session cookie (never the cookie), the admin token
-- the session acts as (its role is read on every request, and revoking the token ends
-- the session), and when it ends.
CREATE TABLE console_sessions (
    id_hash        TEXT PRIMARY KEY,
    admin_token_id TEXT NOT NULL,
    created_at     TEXT NOT NULL,
    expires_at     TEXT NOT NULL
);
CREATE INDEX console_sessions_expiry ON console_sessions(expires_at);
