-- A row that cannot be read back as a lease is marked here with the reason, instead of failing
-- every read: it is kept out of claims, lists and counts until an operator removes it.
ALTER TABLE leasehold_leases ADD COLUMN damaged TEXT;
-- The worker's index covers only rows it may claim.
DROP INDEX IF EXISTS leasehold_leases_claimable;
CREATE INDEX IF NOT EXISTS leasehold_leases_due
    ON leasehold_leases (claimable_at) WHERE state <> 'revoked' AND damaged IS NULL;
CREATE INDEX IF NOT EXISTS leasehold_leases_damaged
    ON leasehold_leases (id) WHERE damaged IS NOT NULL;
