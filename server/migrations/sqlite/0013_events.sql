-- Events: what changed, written by triggers in the same transaction as the change, so
-- a reader never sees a change without its event or an event without its change.
-- SQLite has one writer, so ids grow in commit order and a reader resuming after an
-- id misses nothing. `at` is the time the change carries (the server's clock).
CREATE TABLE events (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    at      TEXT NOT NULL,
    kind    TEXT NOT NULL,
    token_id TEXT,
    app_id  TEXT,
    udid    TEXT,
    data    TEXT NOT NULL
);
CREATE INDEX events_at ON events(at);

CREATE TRIGGER events_install_insert AFTER INSERT ON installs BEGIN
    INSERT INTO events (at, kind, app_id, udid, data) VALUES (NEW.updated_at, 'install.status', NEW.app_id, NEW.udid,
        json_object('status', NEW.status, 'previous', NULL, 'reason', NEW.reason, 'version', NEW.version));
END;
CREATE TRIGGER events_install_update AFTER UPDATE OF status ON installs WHEN OLD.status <> NEW.status BEGIN
    INSERT INTO events (at, kind, app_id, udid, data) VALUES (NEW.updated_at, 'install.status', NEW.app_id, NEW.udid,
        json_object('status', NEW.status, 'previous', OLD.status, 'reason', NEW.reason, 'version', NEW.version));
END;

CREATE TRIGGER events_prompt_insert AFTER INSERT ON prompts BEGIN
    INSERT INTO events (at, kind, udid, data) VALUES (NEW.shown_at, 'prompt.shown', NEW.udid,
        json_object('prompt_id', NEW.prompt_id, 'kind', NEW.kind, 'bundle_id', NEW.bundle_id, 'answer', NEW.answer));
END;
CREATE TRIGGER events_prompt_answer AFTER UPDATE OF answer ON prompts
    WHEN OLD.answer IS NULL AND NEW.answer IS NOT NULL BEGIN
    INSERT INTO events (at, kind, udid, data) VALUES (COALESCE(NEW.answered_at, NEW.shown_at), 'prompt.answered', NEW.udid,
        json_object('prompt_id', NEW.prompt_id, 'kind', NEW.kind, 'bundle_id', NEW.bundle_id, 'answer', NEW.answer));
END;

CREATE TRIGGER events_license_state AFTER UPDATE OF state ON licenses
    WHEN OLD.state <> NEW.state AND NEW.state IN ('associated', 'failed', 'revoked') BEGIN
    INSERT INTO events (at, kind, app_id, udid, data) VALUES (NEW.updated_at, 'license.' || NEW.state, NEW.app_id, NEW.udid,
        json_object('state', NEW.state, 'previous', OLD.state, 'error', NEW.error));
END;
CREATE TRIGGER events_license_release AFTER DELETE ON licenses WHEN OLD.state <> 'revoked' BEGIN
    INSERT INTO events (at, kind, app_id, udid, data) VALUES (OLD.updated_at, 'license.released', OLD.app_id, OLD.udid,
        json_object('previous', OLD.state));
END;

CREATE TRIGGER events_device_insert AFTER INSERT ON devices BEGIN
    INSERT INTO events (at, kind, udid, data) VALUES (NEW.enrolled_at, 'device.enrolled', NEW.udid,
        json_object('serial_number', NEW.serial_number, 'platform', NEW.platform, 'os_version', NEW.os_version));
END;
CREATE TRIGGER events_device_reenroll AFTER UPDATE OF enrolled_at ON devices WHEN OLD.enrolled_at <> NEW.enrolled_at BEGIN
    INSERT INTO events (at, kind, udid, data) VALUES (NEW.enrolled_at, 'device.enrolled', NEW.udid,
        json_object('serial_number', NEW.serial_number, 'platform', NEW.platform, 'os_version', NEW.os_version));
END;
CREATE TRIGGER events_device_checkout AFTER UPDATE OF status ON devices
    WHEN NEW.status = 'checked_out' AND OLD.status <> 'checked_out' BEGIN
    INSERT INTO events (at, kind, udid, data) VALUES (NEW.last_seen_at, 'device.checked_out', NEW.udid, json_object());
END;

CREATE TRIGGER events_token_sync AFTER UPDATE OF last_sync_at ON vpp_tokens
    WHEN NEW.last_sync_at IS NOT NULL AND NEW.last_sync_at IS NOT OLD.last_sync_at BEGIN
    INSERT INTO events (at, kind, token_id, data) VALUES (NEW.last_sync_at, 'sync.finished', NEW.id,
        json_object('error', NEW.last_sync_error));
END;
CREATE TRIGGER events_token_status AFTER UPDATE OF disabled_reason, external_mdm, expires_at ON vpp_tokens
    WHEN NEW.disabled_reason IS NOT OLD.disabled_reason OR NEW.external_mdm IS NOT OLD.external_mdm
      OR NEW.expires_at IS NOT OLD.expires_at BEGIN
    INSERT INTO events (at, kind, token_id, data) VALUES (COALESCE(NEW.last_sync_at, NEW.created_at), 'token.status', NEW.id,
        json_object('disabled_reason', NEW.disabled_reason, 'external_mdm', NEW.external_mdm, 'expires_at', NEW.expires_at));
END;
