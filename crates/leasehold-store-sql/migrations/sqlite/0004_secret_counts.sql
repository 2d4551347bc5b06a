-- How many readable rows each secret has, kept by triggers in the same transaction as the
-- insert, delete or damage mark: the issue path's quota check reads one row instead of
-- counting the secret's leases.
CREATE TABLE IF NOT EXISTS leasehold_secret_counts (
    secret TEXT    PRIMARY KEY NOT NULL,
    leases INTEGER NOT NULL
);
INSERT INTO leasehold_secret_counts (secret, leases)
    SELECT secret, COUNT(*) FROM leasehold_leases WHERE damaged IS NULL GROUP BY secret;
CREATE TRIGGER IF NOT EXISTS leasehold_leases_count_insert
    AFTER INSERT ON leasehold_leases FOR EACH ROW WHEN NEW.damaged IS NULL
BEGIN
    INSERT INTO leasehold_secret_counts (secret, leases) VALUES (NEW.secret, 1)
        ON CONFLICT (secret) DO UPDATE SET leases = leases + 1;
END;
CREATE TRIGGER IF NOT EXISTS leasehold_leases_count_delete
    AFTER DELETE ON leasehold_leases FOR EACH ROW WHEN OLD.damaged IS NULL
BEGIN
    UPDATE leasehold_secret_counts SET leases = leases - 1 WHERE secret = OLD.secret;
END;
CREATE TRIGGER IF NOT EXISTS leasehold_leases_count_update
    AFTER UPDATE OF secret, damaged ON leasehold_leases FOR EACH ROW
    WHEN OLD.secret IS NOT NEW.secret OR (OLD.damaged IS NULL) <> (NEW.damaged IS NULL)
BEGIN
    UPDATE leasehold_secret_counts SET leases = leases - 1
        WHERE secret = OLD.secret AND OLD.damaged IS NULL;
    INSERT INTO leasehold_secret_counts (secret, leases)
        SELECT NEW.secret, 1 WHERE NEW.damaged IS NULL
        ON CONFLICT (secret) DO UPDATE SET leases = leases + 1;
END;
