-- One row per file dropgate has taken; its history lives in file_events.
CREATE TABLE files (
    id                INTEGER PRIMARY KEY,
    source            TEXT NOT NULL,
    partner           TEXT NOT NULL,
    feed              TEXT,
    -- The sender's file name: shown to people, never used as a path.
    name              TEXT NOT NULL,
    -- dropgate's own name for the payload in the spool.
    spool_name        TEXT NOT NULL UNIQUE,
    sha256            TEXT NOT NULL,
    size              INTEGER NOT NULL,
    state             TEXT NOT NULL
                      CHECK (state IN ('received', 'loaded', 'quarantined', 'duplicate')),
    reason            TEXT,
    attempts          INTEGER NOT NULL DEFAULT 0,
    rows_read         INTEGER,
    rows_loaded       INTEGER,
    records           INTEGER NOT NULL DEFAULT 0,
    problems          INTEGER NOT NULL DEFAULT 0,
    duplicate_of      INTEGER REFERENCES files(id),
    received_at       TEXT NOT NULL,
    updated_at        TEXT NOT NULL,
    sender_removed_at TEXT
);
CREATE INDEX files_by_state ON files(state, id);
CREATE INDEX files_by_content ON files(feed, sha256);
CREATE INDEX files_by_sender_name ON files(source, name);

-- Append-only: every state change of a file, with time and a JSON detail
-- that never holds patient identifiers.
CREATE TABLE file_events (
    id       INTEGER PRIMARY KEY,
    file_id  INTEGER NOT NULL REFERENCES files(id),
    at       TEXT NOT NULL,
    event    TEXT NOT NULL,
    detail   TEXT
);
CREATE INDEX file_events_by_file ON file_events(file_id, id);
CREATE TRIGGER file_events_no_update BEFORE UPDATE ON file_events
BEGIN SELECT RAISE(ABORT, 'file_events is append-only'); END;
CREATE TRIGGER file_events_no_delete BEFORE DELETE ON file_events
BEGIN SELECT RAISE(ABORT, 'file_events is append-only'); END;

-- Validation problems of each processing attempt (capped per file; the
-- total is files.problems).
CREATE TABLE file_problems (
    file_id  INTEGER NOT NULL REFERENCES files(id),
    attempt  INTEGER NOT NULL,
    seq      INTEGER NOT NULL,
    line     INTEGER NOT NULL,
    column_name TEXT,
    field    INTEGER,
    code     TEXT NOT NULL,
    message  TEXT NOT NULL,
    PRIMARY KEY (file_id, attempt, seq)
) WITHOUT ROWID;
