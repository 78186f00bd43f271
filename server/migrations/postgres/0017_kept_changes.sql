-- Replicas keep apps and the standing of each device certificate in memory. Every
-- change of either tells all replicas on the channel `orchard_kept`, from the writing
-- transaction itself: the notification is delivered when, and only if, it commits.
CREATE FUNCTION orchard_kept_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('orchard_kept', TG_ARGV[0]);
    RETURN NULL;
END
$$;

CREATE TRIGGER apps_kept_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON apps
    FOR EACH STATEMENT EXECUTE FUNCTION orchard_kept_changed('apps');

-- A device's last-seen time and inventory change on most check-ins and are not kept:
-- only what a standing holds tells.
CREATE TRIGGER devices_kept_changed
    AFTER INSERT OR DELETE OR TRUNCATE OR UPDATE OF udid, cert_fingerprint, status ON devices
    FOR EACH STATEMENT EXECUTE FUNCTION orchard_kept_changed('standings');
