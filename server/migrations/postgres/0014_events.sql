-- Events: what changed, written by triggers in the same transaction as the change, so
-- a reader never sees a change without its event or an event without its change.
-- Each event takes a transaction-scoped advisory lock before its id, so ids are
-- handed out in commit order across replicas and a reader resuming after an id
-- misses nothing. `at` is the time the change carries (the server's clock).
CREATE TABLE events (
    id       BIGSERIAL PRIMARY KEY,
    at       timestamptz NOT NULL,
    kind     TEXT NOT NULL,
    token_id TEXT,
    app_id   TEXT,
    udid     TEXT,
    data     TEXT NOT NULL
);
CREATE INDEX events_at ON events(at);

CREATE FUNCTION orchard_event(at timestamptz, kind text, token_id text, app_id text, udid text, data json)
RETURNS void AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(7260414);
    INSERT INTO events (at, kind, token_id, app_id, udid, data)
    VALUES (at, kind, token_id, app_id, udid, data::text);
END $$ LANGUAGE plpgsql;

CREATE FUNCTION events_install() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM orchard_event(NEW.updated_at, 'install.status', NULL, NEW.app_id, NEW.udid,
            json_build_object('status', NEW.status, 'previous', NULL, 'reason', NEW.reason, 'version', NEW.version));
    ELSIF OLD.status IS DISTINCT FROM NEW.status THEN
        PERFORM orchard_event(NEW.updated_at, 'install.status', NULL, NEW.app_id, NEW.udid,
            json_build_object('status', NEW.status, 'previous', OLD.status, 'reason', NEW.reason, 'version', NEW.version));
    END IF;
    RETURN NULL;
END $$ LANGUAGE plpgsql;
CREATE TRIGGER events_install AFTER INSERT OR UPDATE OF status ON installs
    FOR EACH ROW EXECUTE FUNCTION events_install();

CREATE FUNCTION events_prompt() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM orchard_event(NEW.shown_at, 'prompt.shown', NULL, NULL, NEW.udid,
            json_build_object('prompt_id', NEW.prompt_id, 'kind', NEW.kind, 'bundle_id', NEW.bundle_id, 'answer', NEW.answer));
    ELSIF OLD.answer IS NULL AND NEW.answer IS NOT NULL THEN
        PERFORM orchard_event(COALESCE(NEW.answered_at, NEW.shown_at), 'prompt.answered', NULL, NULL, NEW.udid,
            json_build_object('prompt_id', NEW.prompt_id, 'kind', NEW.kind, 'bundle_id', NEW.bundle_id, 'answer', NEW.answer));
    END IF;
    RETURN NULL;
END $$ LANGUAGE plpgsql;
CREATE TRIGGER events_prompt AFTER INSERT OR UPDATE OF answer ON prompts
    FOR EACH ROW EXECUTE FUNCTION events_prompt();

CREATE FUNCTION events_license() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        IF OLD.state <> 'revoked' THEN
            PERFORM orchard_event(OLD.updated_at, 'license.released', NULL, OLD.app_id, OLD.udid,
                json_build_object('previous', OLD.state));
        END IF;
        RETURN NULL;
    END IF;
    IF OLD.state IS DISTINCT FROM NEW.state AND NEW.state IN ('associated', 'failed', 'revoked') THEN
        PERFORM orchard_event(NEW.updated_at, 'license.' || NEW.state, NULL, NEW.app_id, NEW.udid,
            json_build_object('state', NEW.state, 'previous', OLD.state, 'error', NEW.error));
    END IF;
    RETURN NULL;
END $$ LANGUAGE plpgsql;
CREATE TRIGGER events_license AFTER UPDATE OF state OR DELETE ON licenses
    FOR EACH ROW EXECUTE FUNCTION events_license();

CREATE FUNCTION events_device() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'INSERT' OR OLD.enrolled_at IS DISTINCT FROM NEW.enrolled_at THEN
        PERFORM orchard_event(NEW.enrolled_at, 'device.enrolled', NULL, NULL, NEW.udid,
            json_build_object('serial_number', NEW.serial_number, 'platform', NEW.platform, 'os_version', NEW.os_version));
    END IF;
    IF TG_OP = 'UPDATE' AND NEW.status = 'checked_out' AND OLD.status <> 'checked_out' THEN
        PERFORM orchard_event(NEW.last_seen_at, 'device.checked_out', NULL, NULL, NEW.udid, json_build_object());
    END IF;
    RETURN NULL;
END $$ LANGUAGE plpgsql;
CREATE TRIGGER events_device AFTER INSERT OR UPDATE OF enrolled_at, status ON devices
    FOR EACH ROW EXECUTE FUNCTION events_device();

CREATE FUNCTION events_token() RETURNS trigger AS $$
BEGIN
    IF NEW.last_sync_at IS NOT NULL AND NEW.last_sync_at IS DISTINCT FROM OLD.last_sync_at THEN
        PERFORM orchard_event(NEW.last_sync_at, 'sync.finished', NEW.id, NULL, NULL,
            json_build_object('error', NEW.last_sync_error));
    END IF;
    IF NEW.disabled_reason IS DISTINCT FROM OLD.disabled_reason OR NEW.external_mdm IS DISTINCT FROM OLD.external_mdm
       OR NEW.expires_at IS DISTINCT FROM OLD.expires_at THEN
        PERFORM orchard_event(COALESCE(NEW.last_sync_at, NEW.created_at), 'token.status', NEW.id, NULL, NULL,
            json_build_object('disabled_reason', NEW.disabled_reason, 'external_mdm', NEW.external_mdm, 'expires_at', NEW.expires_at));
    END IF;
    RETURN NULL;
END $$ LANGUAGE plpgsql;
CREATE TRIGGER events_token AFTER UPDATE OF last_sync_at, disabled_reason, external_mdm, expires_at ON vpp_tokens
    FOR EACH ROW EXECUTE FUNCTION events_token();
