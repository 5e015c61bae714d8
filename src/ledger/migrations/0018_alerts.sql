-- Alerts: a feed's expectation breached (a file that did not come by its
-- time, a row count out of its band, too many quarantines) and cleared.
-- Append-only; an alert is active while its newest event is `raised`.
CREATE TABLE alert_events (
    id      INTEGER PRIMARY KEY,
    at      TEXT NOT NULL,
    feed    TEXT NOT NULL,
    kind    TEXT NOT NULL CHECK (kind IN ('file_missing', 'row_count', 'quarantine_rate')),
    event   TEXT NOT NULL CHECK (event IN ('raised', 'cleared')),
    -- What was expected and what was seen (JSON; counts and times only).
    detail  TEXT NOT NULL
);
CREATE INDEX alert_events_by_alert ON alert_events(feed, kind, id);
CREATE TRIGGER alert_events_no_update BEFORE UPDATE ON alert_events
BEGIN SELECT RAISE(ABORT, 'alert_events is append-only'); END;
CREATE TRIGGER alert_events_no_delete BEFORE DELETE ON alert_events
BEGIN SELECT RAISE(ABORT, 'alert_events is append-only'); END;

-- `status` and the alerts ask, per feed, for the newest files and today's;
-- `status` asks, per destination, for the newest delivery and failure.
CREATE INDEX files_by_feed_time ON files(feed, received_at);
CREATE INDEX delivery_events_by_destination ON delivery_events(destination, id);
