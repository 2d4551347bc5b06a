-- One row per lease. No column holds a password, secret key or token: `external` is the
-- provider's reference (a username, an access key id), never a credential.
CREATE TABLE IF NOT EXISTS leasehold_leases (
    id              TEXT    PRIMARY KEY NOT NULL,
    secret          TEXT    NOT NULL,
    provider_kind   TEXT    NOT NULL,
    identity        TEXT,
    external        TEXT    NOT NULL,
    state           TEXT    NOT NULL,
    issued_at       INTEGER NOT NULL, -- unix milliseconds
    expires_at      INTEGER NOT NULL,
    max_expires_at  INTEGER NOT NULL,
    renewable       BOOLEAN NOT NULL,
    due_at          INTEGER NOT NULL,
    claimable_at    INTEGER NOT NULL, -- max(due_at, claim_until): what claim_due and next_due read
    revoke_attempts INTEGER NOT NULL,
    last_error      TEXT,
    claimed_by      TEXT,
    claim_until     INTEGER,
    version         INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS leasehold_leases_claimable
    ON leasehold_leases (claimable_at) WHERE state <> 'revoked';
CREATE INDEX IF NOT EXISTS leasehold_leases_secret ON leasehold_leases (secret, id);
CREATE INDEX IF NOT EXISTS leasehold_leases_state ON leasehold_leases (state, id);
