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
