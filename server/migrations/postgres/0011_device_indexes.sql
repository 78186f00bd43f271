-- A device's own rows are found by its key: the hand-out check, the device page
-- and deletion read them once per device, never by a scan of every device's rows.
CREATE INDEX licenses_udid ON licenses(udid);
CREATE INDEX installs_udid ON installs(udid);
CREATE INDEX app_requests_udid ON app_requests(udid);
CREATE INDEX user_licenses_user ON user_licenses(user_id);
