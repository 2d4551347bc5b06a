-- Facts about the store itself, such as its installation id (created once, never changed).
CREATE TABLE IF NOT EXISTS leasehold_meta (
    key   TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
);
