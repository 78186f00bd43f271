-- Webhooks: where events are delivered, signed with the webhook's own secret (sealed
-- at rest like VPP tokens), each from its own place in the event stream, and the log
-- of every delivery attempt.
CREATE TABLE webhooks (
    id         TEXT PRIMARY KEY,
    url        TEXT NOT NULL,
    secret     TEXT NOT NULL,
    kind       TEXT,
    created_by TEXT,
    created_at TEXT NOT NULL,
    delivered_through INTEGER NOT NULL
);

CREATE TABLE webhook_deliveries (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    webhook_id  TEXT NOT NULL REFERENCES webhooks(id) ON DELETE CASCADE,
    event_id    INTEGER NOT NULL,
    attempt     INTEGER NOT NULL,
    at          TEXT NOT NULL,
    status_code INTEGER,
    error       TEXT,
    delivered   INTEGER NOT NULL
);
CREATE INDEX webhook_deliveries_webhook ON webhook_deliveries(webhook_id, id);
