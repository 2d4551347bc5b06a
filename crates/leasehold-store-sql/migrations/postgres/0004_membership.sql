-- Pending additions to an ElastiCache user group or MemoryDB ACL, shared by every instance on
-- this store, so that one of them adds everyone's users in one call. One row per (group, user);
-- a row lives from the quota check until its issue has read the outcome. No secrets here.
CREATE TABLE IF NOT EXISTS leasehold_memberships (
    group_key  TEXT   NOT NULL,
    member     TEXT   NOT NULL,
    state      TEXT   NOT NULL,
    owner      TEXT   NOT NULL,
    deadline   BIGINT NOT NULL,
    error_kind TEXT,
    error      TEXT,
    PRIMARY KEY (group_key, member)
);
-- Which instance applies a group's pending additions, until when (unless renewed).
CREATE TABLE IF NOT EXISTS leasehold_group_claims (
    group_key   TEXT   PRIMARY KEY NOT NULL,
    owner       TEXT   NOT NULL,
    claim_until BIGINT NOT NULL
);
