-- A user an admin deleted: kept until its licenses are given back and its
-- registrations retired at Apple, then removed.
ALTER TABLE users ADD COLUMN deleted_at TEXT;
