-- User licensing, device facts for the prompt rules, and the prompts devices report.

ALTER TABLE devices ADD COLUMN ownership TEXT;
ALTER TABLE devices ADD COLUMN single_app_mode BIGINT;
ALTER TABLE devices ADD COLUMN app_store_allowed BIGINT;
ALTER TABLE devices ADD COLUMN user_id TEXT;
CREATE INDEX devices_user ON devices(user_id);

-- People. The personal Apple ID is never stored: only Apple's opaque hash, per token.
CREATE TABLE users (
    id               TEXT PRIMARY KEY,
    email            TEXT NOT NULL UNIQUE,
    managed_apple_id TEXT UNIQUE,
    name             TEXT,
    created_at       TEXT NOT NULL
);

CREATE TABLE group_users (
    group_id  TEXT NOT NULL REFERENCES groups(id) ON DELETE CASCADE,
    user_id   TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    joined_at TEXT NOT NULL,
    PRIMARY KEY (group_id, user_id)
);
CREATE INDEX group_users_user ON group_users(user_id);

-- A user as registered at Apple under one token (Apple's clientUserId).
CREATE TABLE vpp_users (
    token_id          TEXT NOT NULL REFERENCES vpp_tokens(id) ON DELETE CASCADE,
    user_id           TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    client_user_id    TEXT NOT NULL UNIQUE,
    status            TEXT NOT NULL,
    event_id          TEXT,
    invite_code       TEXT,
    id_hash           TEXT,
    invited_udid      TEXT,
    invited_at        TEXT,
    invitation_answer TEXT,
    answered_at       TEXT,
    error             TEXT,
    updated_at        TEXT NOT NULL,
    PRIMARY KEY (token_id, user_id)
);

-- One row per user license this server asked Apple for.
CREATE TABLE user_licenses (
    app_id     TEXT NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
    user_id    TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    state      TEXT NOT NULL,
    event_id   TEXT,
    error      TEXT,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (app_id, user_id)
);

-- Prompts devices showed their users (Orchard's OrchardPromptReport check-in).
CREATE TABLE prompts (
    udid        TEXT NOT NULL,
    prompt_id   TEXT NOT NULL,
    kind        TEXT NOT NULL,
    bundle_id   TEXT,
    adam_id     TEXT,
    shown_at    TEXT NOT NULL,
    answer      TEXT,
    answered_at TEXT,
    PRIMARY KEY (udid, prompt_id)
);
CREATE INDEX prompts_bundle ON prompts(bundle_id);

-- When an install entered its current status (for the install timeout).
ALTER TABLE installs ADD COLUMN since TEXT;
ALTER TABLE apps ADD COLUMN install_timeout_seconds BIGINT;
