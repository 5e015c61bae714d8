-- Who did what, from where: logins, uploads, refusals. Append-only, and each
-- row carries the SHA-256 of the previous row's hash and its own content, so
-- that a changed or removed row breaks the chain.
CREATE TABLE audit_events (
    id         INTEGER PRIMARY KEY,
    at         TEXT NOT NULL,
    partner    TEXT,
    remote     TEXT,
    action     TEXT NOT NULL,
    file_id    INTEGER REFERENCES files(id),
    detail     TEXT,
    prev_hash  TEXT NOT NULL,
    hash       TEXT NOT NULL
);
CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END;
CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END;

-- Addresses refused after too many failed logins, until the time given.
CREATE TABLE address_bans (
    address    TEXT PRIMARY KEY,
    banned_at  TEXT NOT NULL,
    until      TEXT NOT NULL,
    failures   INTEGER NOT NULL
);
