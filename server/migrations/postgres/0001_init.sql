-- Orchard's schema on PostgreSQL. Timestamps are RFC 3339 UTC text.

CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE admin_tokens (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    role       TEXT NOT NULL,
    created_at TEXT NOT NULL
);

CREATE TABLE audit_log (
    id      BIGSERIAL PRIMARY KEY,
    at      TEXT NOT NULL,
    actor   TEXT NOT NULL,
    action  TEXT NOT NULL,
    target  TEXT NOT NULL,
    result  TEXT NOT NULL
);

CREATE TABLE devices (
    udid             TEXT PRIMARY KEY,
    serial_number    TEXT NOT NULL,
    product_name     TEXT,
    os_version       TEXT,
    cert_fingerprint TEXT NOT NULL UNIQUE,
    status           TEXT NOT NULL,
    topic            TEXT,
    push_magic       TEXT,
    push_token       BYTEA,
    is_supervised    BIGINT,
    enrolled_at      TEXT NOT NULL,
    last_seen_at     TEXT NOT NULL
);
CREATE INDEX devices_serial ON devices(serial_number);

CREATE TABLE vpp_tokens (
    id              TEXT PRIMARY KEY,
    name            TEXT NOT NULL,
    org_name        TEXT NOT NULL,
    secret          TEXT NOT NULL,
    secret_hash     TEXT NOT NULL UNIQUE,
    expires_at      TEXT NOT NULL,
    location_name   TEXT,
    country         TEXT,
    location_uid    TEXT,
    created_at      TEXT NOT NULL,
    last_sync_at    TEXT,
    last_sync_error TEXT
);

CREATE TABLE apps (
    id                TEXT PRIMARY KEY,
    token_id          TEXT NOT NULL REFERENCES vpp_tokens(id) ON DELETE CASCADE,
    adam_id           TEXT NOT NULL,
    pricing_param     TEXT NOT NULL,
    product_type      TEXT NOT NULL,
    name              TEXT,
    bundle_id         TEXT,
    version           TEXT,
    platforms         TEXT NOT NULL,
    device_assignable BIGINT NOT NULL,
    total_count       BIGINT NOT NULL,
    assigned_count    BIGINT NOT NULL,
    available_count   BIGINT NOT NULL,
    retired_count     BIGINT NOT NULL,
    updated_at        TEXT NOT NULL,
    UNIQUE (token_id, adam_id, pricing_param)
);

CREATE TABLE groups (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    kind       TEXT NOT NULL,
    created_at TEXT NOT NULL
);

CREATE TABLE group_devices (
    group_id  TEXT NOT NULL REFERENCES groups(id) ON DELETE CASCADE,
    udid      TEXT NOT NULL,
    joined_at TEXT NOT NULL,
    PRIMARY KEY (group_id, udid)
);
CREATE INDEX group_devices_udid ON group_devices(udid);

CREATE TABLE assignments (
    id           TEXT PRIMARY KEY,
    app_id       TEXT NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
    group_id     TEXT NOT NULL REFERENCES groups(id) ON DELETE CASCADE,
    intent       TEXT NOT NULL,
    license_type TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    UNIQUE (app_id, group_id)
);

-- One row per license this server asked Apple for (a reservation until Apple confirms).
CREATE TABLE licenses (
    app_id        TEXT NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
    udid          TEXT NOT NULL,
    serial_number TEXT NOT NULL,
    state         TEXT NOT NULL,
    event_id      TEXT,
    error         TEXT,
    updated_at    TEXT NOT NULL,
    PRIMARY KEY (app_id, udid)
);
CREATE INDEX licenses_event ON licenses(event_id);

CREATE TABLE installs (
    app_id        TEXT NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
    udid          TEXT NOT NULL,
    status        TEXT NOT NULL,
    device_status TEXT,
    version       TEXT,
    reason        TEXT,
    updated_at    TEXT NOT NULL,
    PRIMARY KEY (app_id, udid)
);

CREATE TABLE commands (
    uuid         TEXT PRIMARY KEY,
    udid         TEXT NOT NULL,
    request_type TEXT NOT NULL,
    app_id       TEXT,
    payload      BYTEA NOT NULL,
    status       TEXT NOT NULL,
    not_before   TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL,
    result       BYTEA
);
-- The next-command lookup: oldest open command of one device.
CREATE INDEX commands_next ON commands(udid, status, created_at);
