-- Leases: which replica runs a singleton job (a token's sync, the reconciler, the
-- sync scheduler) until when. A holder that dies loses its lease when it expires.
CREATE TABLE leases (
    name       TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,
    expires_at TEXT NOT NULL
);
