-- The licensing engine: assignments change over time and may license without
-- installing; license removals and revocations are remembered.

ALTER TABLE assignments ADD COLUMN updated_at TEXT;
ALTER TABLE assignments ADD COLUMN install INTEGER NOT NULL DEFAULT 1;
