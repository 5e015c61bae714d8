-- Exports made for consumers on schedules, or by hand. A run is written when
-- it starts and finished when its export is in place; the watermark ranges
-- say exactly what it covered: the ids of `loaded` file events, and the ids
-- of observation sets (assigned in commit order, as the events are, so a set
-- range needs no index on the biggest table). The next incremental run of the
-- schedule starts where the last complete one ended.
CREATE TABLE export_runs (
    id             INTEGER PRIMARY KEY,
    schedule       TEXT NOT NULL,
    consumer       TEXT NOT NULL,
    -- The timetable's time this run was for; NULL for a run made by hand.
    planned_at     TEXT,
    manual         INTEGER NOT NULL CHECK (manual IN (0, 1)),
    mode           TEXT NOT NULL CHECK (mode IN ('incremental', 'snapshot')),
    started_at     TEXT NOT NULL,
    ended_at       TEXT,
    outcome        TEXT CHECK (outcome IN ('complete', 'refused', 'failed', 'interrupted')),
    watermark_from INTEGER NOT NULL,
    watermark_to   INTEGER,
    sets_from      INTEGER NOT NULL,
    sets_to        INTEGER,
    -- The folder in the consumer's outbox.
    export_id      TEXT NOT NULL UNIQUE,
    manifest_sha256 TEXT,
    -- JSON: resources or rows per output file; never identifiers.
    counts         TEXT,
    detail         TEXT
);
CREATE INDEX export_runs_by_schedule ON export_runs(schedule, id);

-- The grants that allowed each run.
CREATE TABLE export_grants (
    run_id      INTEGER NOT NULL REFERENCES export_runs(id),
    grant_name  TEXT NOT NULL,
    PRIMARY KEY (run_id, grant_name)
) WITHOUT ROWID;
CREATE INDEX export_grants_by_grant ON export_grants(grant_name, run_id);

-- Each complete export's pushes to its schedule's destinations: written
-- `pending` with the run's completion, so a push a stop interrupted is made
-- at the next start; every attempt is also in delivery_events.
CREATE TABLE export_deliveries (
    run_id      INTEGER NOT NULL REFERENCES export_runs(id),
    destination TEXT NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts    INTEGER NOT NULL DEFAULT 0,
    error       TEXT,
    updated_at  TEXT NOT NULL,
    PRIMARY KEY (run_id, destination)
) WITHOUT ROWID;
CREATE INDEX export_deliveries_pending ON export_deliveries(state);

-- An export reads the service users the files loaded in its range wrote.
CREATE INDEX service_users_by_file ON service_users(file_id);
