-- Webhooks: where events are delivered, signed with the webhook's own secret (sealed
-- at rest like VPP tokens), each from its own place in the event stream, and the log
-- of every delivery attempt.
CREATE TABLE webhooks (
    id         TEXT PRIMARY KEY,
    url        TEXT NOT NULL,
    secret     TEXT NOT NULL,
    kind       TEXT,
    created_by TEXT,
    created_at timestamptz NOT NULL,
    delivered_through BIGINT NOT NULL
);

CREATE TABLE webhook_deliveries (
    id          BIGSERIAL PRIMARY KEY,
    webhook_id  TEXT NOT NULL REFERENCES webhooks(id) ON DELETE CASCADE,
    event_id    BIGINT NOT NULL,
    attempt     BIGINT NOT NULL,
    at          timestamptz NOT NULL,
    status_code BIGINT,
    error       TEXT,
    delivered   BIGINT NOT NULL
);
CREATE INDEX webhook_deliveries_webhook ON webhook_deliveries(webhook_id, id);
