-- Routes forward the files of a feed to a destination. A route forwards the
-- files received after it was first seen (not the feed's whole history), and
-- each file's forwarding is a row here, written `pending` before it is sent,
-- so one a stop interrupted is sent at the next start; every attempt is also
-- in delivery_events.
CREATE TABLE routes (
    name            TEXT PRIMARY KEY,
    after_file_id   INTEGER NOT NULL,
    first_seen_at   TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE route_deliveries (
    file_id      INTEGER NOT NULL REFERENCES files(id),
    route        TEXT NOT NULL,
    destination  TEXT NOT NULL,
    state        TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'failed', 'refused')),
    attempts     INTEGER NOT NULL DEFAULT 0,
    -- The grant that allowed it, once sent.
    grant_name   TEXT,
    error        TEXT,
    updated_at   TEXT NOT NULL,
    PRIMARY KEY (file_id, route)
) WITHOUT ROWID;
CREATE INDEX route_deliveries_by_state ON route_deliveries(route, state, file_id);
