-- Named admin tokens with a role and an optional expiry; every audit entry names the
-- token that acted (its id: names may be reused once a token is revoked).
ALTER TABLE admin_tokens
    ADD COLUMN expires_at timestamptz,
    ADD COLUMN created_by TEXT,
    ADD COLUMN rotated_at timestamptz;
CREATE UNIQUE INDEX admin_tokens_name ON admin_tokens(name);
ALTER TABLE audit_log ADD COLUMN actor_token TEXT;
