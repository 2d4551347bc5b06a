-- How many readable rows each secret has, kept by a trigger in the same transaction as the
-- insert, delete or damage mark: the issue path's quota check reads one row instead of
-- counting the secret's leases.
CREATE TABLE IF NOT EXISTS leasehold_secret_counts (
    secret TEXT   PRIMARY KEY NOT NULL,
    leases BIGINT NOT NULL
);
INSERT INTO leasehold_secret_counts (secret, leases)
    SELECT secret, COUNT(*) FROM leasehold_leases WHERE damaged IS NULL GROUP BY secret;
-- SET search_path FROM CURRENT: the table names resolve in the store's schema, whatever the
-- path of the session that fires the trigger.
CREATE OR REPLACE FUNCTION leasehold_count_leases() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    -- Nested: OLD is unset on INSERT and NEW on DELETE.
    IF TG_OP IN ('DELETE', 'UPDATE') THEN
        IF OLD.damaged IS NULL THEN
            UPDATE leasehold_secret_counts SET leases = leases - 1 WHERE secret = OLD.secret;
        END IF;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        IF NEW.damaged IS NULL THEN
            INSERT INTO leasehold_secret_counts AS c (secret, leases) VALUES (NEW.secret, 1)
                ON CONFLICT (secret) DO UPDATE SET leases = c.leases + 1;
        END IF;
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER leasehold_leases_count_insert_delete
    AFTER INSERT OR DELETE ON leasehold_leases
    FOR EACH ROW EXECUTE FUNCTION leasehold_count_leases();
CREATE TRIGGER leasehold_leases_count_update
    AFTER UPDATE OF secret, damaged ON leasehold_leases FOR EACH ROW
    WHEN (OLD.secret IS DISTINCT FROM NEW.secret
          OR (OLD.damaged IS NULL) <> (NEW.damaged IS NULL))
    EXECUTE FUNCTION leasehold_count_leases();
