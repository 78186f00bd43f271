-- Times as timestamptz instead of RFC 3339 text: PostgreSQL compares, sorts and
-- indexes them as instants. Existing text converts as it is (every value was
-- written as RFC 3339 UTC).

ALTER TABLE admin_tokens
    ALTER COLUMN created_at TYPE timestamptz USING created_at::timestamptz;

ALTER TABLE audit_log
    ALTER COLUMN at TYPE timestamptz USING at::timestamptz;

ALTER TABLE devices
    ALTER COLUMN enrolled_at TYPE timestamptz USING enrolled_at::timestamptz,
    ALTER COLUMN last_seen_at TYPE timestamptz USING last_seen_at::timestamptz;

ALTER TABLE vpp_tokens
    ALTER COLUMN expires_at TYPE timestamptz USING expires_at::timestamptz,
    ALTER COLUMN created_at TYPE timestamptz USING created_at::timestamptz,
    ALTER COLUMN last_sync_at TYPE timestamptz USING last_sync_at::timestamptz,
    ALTER COLUMN last_notification_at TYPE timestamptz USING last_notification_at::timestamptz;

ALTER TABLE apps
    ALTER COLUMN updated_at TYPE timestamptz USING updated_at::timestamptz;

ALTER TABLE groups
    ALTER COLUMN created_at TYPE timestamptz USING created_at::timestamptz;

ALTER TABLE group_devices
    ALTER COLUMN joined_at TYPE timestamptz USING joined_at::timestamptz;

ALTER TABLE assignments
    ALTER COLUMN created_at TYPE timestamptz USING created_at::timestamptz,
    ALTER COLUMN updated_at TYPE timestamptz USING updated_at::timestamptz;

ALTER TABLE licenses
    ALTER COLUMN updated_at TYPE timestamptz USING updated_at::timestamptz;

ALTER TABLE installs
    ALTER COLUMN updated_at TYPE timestamptz USING updated_at::timestamptz,
    ALTER COLUMN since TYPE timestamptz USING since::timestamptz;

ALTER TABLE commands
    ALTER COLUMN not_before TYPE timestamptz USING not_before::timestamptz,
    ALTER COLUMN created_at TYPE timestamptz USING created_at::timestamptz,
    ALTER COLUMN updated_at TYPE timestamptz USING updated_at::timestamptz;

ALTER TABLE leases
    ALTER COLUMN expires_at TYPE timestamptz USING expires_at::timestamptz;

ALTER TABLE users
    ALTER COLUMN created_at TYPE timestamptz USING created_at::timestamptz;

ALTER TABLE group_users
    ALTER COLUMN joined_at TYPE timestamptz USING joined_at::timestamptz;

ALTER TABLE vpp_users
    ALTER COLUMN invited_at TYPE timestamptz USING invited_at::timestamptz,
    ALTER COLUMN answered_at TYPE timestamptz USING answered_at::timestamptz,
    ALTER COLUMN updated_at TYPE timestamptz USING updated_at::timestamptz;

ALTER TABLE user_licenses
    ALTER COLUMN updated_at TYPE timestamptz USING updated_at::timestamptz;

ALTER TABLE prompts
    ALTER COLUMN shown_at TYPE timestamptz USING shown_at::timestamptz,
    ALTER COLUMN answered_at TYPE timestamptz USING answered_at::timestamptz;

ALTER TABLE app_requests
    ALTER COLUMN requested_at TYPE timestamptz USING requested_at::timestamptz;

ALTER TABLE apple_notifications
    ALTER COLUMN received_at TYPE timestamptz USING received_at::timestamptz;
