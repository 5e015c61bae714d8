-- Append-only: every attempt to deliver a file to a destination, and how the
-- delivery ended.
CREATE TABLE delivery_events (
    id           INTEGER PRIMARY KEY,
    at           TEXT NOT NULL,
    destination  TEXT NOT NULL,
    file_id      INTEGER REFERENCES files(id),
    name         TEXT NOT NULL,
    sha256       TEXT NOT NULL,
    size         INTEGER NOT NULL,
    attempt      INTEGER NOT NULL,
    event        TEXT NOT NULL CHECK (event IN ('attempt_failed', 'delivered', 'gave_up')),
    detail       TEXT
);
CREATE INDEX delivery_events_by_file ON delivery_events(file_id);
CREATE TRIGGER delivery_events_no_update BEFORE UPDATE ON delivery_events
BEGIN SELECT RAISE(ABORT, 'delivery_events is append-only'); END;
CREATE TRIGGER delivery_events_no_delete BEFORE DELETE ON delivery_events
BEGIN SELECT RAISE(ABORT, 'delivery_events is append-only'); END;
