-- The token's settings from the admin, and what Apple says about it.
ALTER TABLE vpp_tokens ADD COLUMN apple_id TEXT;
ALTER TABLE vpp_tokens ADD COLUMN account_type TEXT NOT NULL DEFAULT 'business';
ALTER TABLE vpp_tokens ADD COLUMN automatic_updates INTEGER NOT NULL DEFAULT 0;
-- The store country the admin chose for metadata (Apple's country when absent).
ALTER TABLE vpp_tokens ADD COLUMN store_country TEXT;
-- The other MDM Apple names as the token's owner, while it is not ours.
ALTER TABLE vpp_tokens ADD COLUMN external_mdm TEXT;
-- Why the token is not used (expired or revoked at Apple), until renewed.
ALTER TABLE vpp_tokens ADD COLUMN disabled_reason TEXT;

-- Store metadata of the token's country: where the app is sold, and the OS it needs.
ALTER TABLE apps ADD COLUMN store_url TEXT;
ALTER TABLE apps ADD COLUMN minimum_os_version TEXT;

-- Apple's notifications: the bearer secret Apple sends back, and the ones received
-- (by notificationId, so a notification delivered twice counts once).
ALTER TABLE vpp_tokens ADD COLUMN notification_secret TEXT;
ALTER TABLE vpp_tokens ADD COLUMN last_notification_at TEXT;
CREATE TABLE apple_notifications (
    id                TEXT PRIMARY KEY,
    token_id          TEXT NOT NULL,
    notification_type TEXT NOT NULL,
    received_at       TEXT NOT NULL
);
