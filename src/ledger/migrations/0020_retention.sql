-- Retention. A payload past its days is deleted from the spool and the time
-- is written here; the row itself (name, hash, size, counts, state) stays.
-- A feed with record retention has its files' records deleted in the same
-- way, after their anonymised counts are added to kept_counts.
ALTER TABLE files ADD COLUMN payload_purged_at TEXT;
ALTER TABLE files ADD COLUMN records_purged_at TEXT;
ALTER TABLE export_runs ADD COLUMN payload_purged_at TEXT;
CREATE INDEX files_payload_kept ON files(updated_at) WHERE payload_purged_at IS NULL;

-- A legal hold stops the purge of one file's payload and records, or of
-- everything from and to one partner, until it is released. Released holds
-- stay, with who released them and why.
CREATE TABLE legal_holds (
    id             INTEGER PRIMARY KEY,
    file_id        INTEGER REFERENCES files(id),
    partner        TEXT,
    reason         TEXT NOT NULL,
    placed_by      TEXT NOT NULL,
    placed_at      TEXT NOT NULL,
    released_by    TEXT,
    released_at    TEXT,
    release_reason TEXT,
    CHECK ((file_id IS NULL) <> (partner IS NULL))
);
CREATE INDEX legal_holds_in_force ON legal_holds(file_id, partner) WHERE released_at IS NULL;

-- Trend counts (as records::trend measures them: by week, partner, feed and
-- measure, no identifiers) of records that retention deleted, so the
-- figures outlive the rows.
CREATE TABLE kept_counts (
    week     TEXT NOT NULL,
    partner  TEXT NOT NULL,
    feed     TEXT NOT NULL,
    measure  TEXT NOT NULL,
    count    INTEGER NOT NULL,
    PRIMARY KEY (week, partner, feed, measure)
) WITHOUT ROWID;
