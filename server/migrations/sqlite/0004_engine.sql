-- The licensing engine: assignments change over time and may license without
-- installing; license removals and revocations are remembered.

ALTER TABLE assignments ADD COLUMN updated_at TEXT;
ALTER TABLE assignments ADD COLUMN install INTEGER NOT NULL DEFAULT 1;

-- Apps a device's user asked for through an Available assignment (self-service).
CREATE TABLE app_requests (
    app_id       TEXT NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
    udid         TEXT NOT NULL,
    requested_at TEXT NOT NULL,
    PRIMARY KEY (app_id, udid)
);

-- Several tokens holding the same app: an assignment may use any of them, in the
-- tokens' priority order (lower first), falling through when one is exhausted.
ALTER TABLE vpp_tokens ADD COLUMN priority INTEGER NOT NULL DEFAULT 100;
ALTER TABLE assignments ADD COLUMN any_token INTEGER NOT NULL DEFAULT 0;
