-- Enrollment tokens an admin hands out: used a number of times until they expire,
-- optionally only by one serial number or UDID. Only the SHA-256 of the token is kept.
CREATE TABLE enrollment_tokens (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    token_hash    TEXT NOT NULL UNIQUE,
    uses_left     INTEGER NOT NULL,
    expires_at    TEXT NOT NULL,
    serial_number TEXT,
    udid          TEXT,
    revoked       INTEGER NOT NULL DEFAULT 0,
    created_at    TEXT NOT NULL
);
