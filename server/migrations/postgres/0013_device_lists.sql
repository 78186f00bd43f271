-- Device lists filter by platform and OS version in the database: the platform (from
-- the product name) and a version key that sorts in version order are stored beside
-- them. Rows written before are filled in at start.
ALTER TABLE devices ADD COLUMN platform TEXT, ADD COLUMN os_version_key TEXT;
CREATE INDEX devices_platform ON devices(platform);
CREATE INDEX audit_log_actor ON audit_log(actor);
