-- The latest outcome of each source's polling, for `dropgate status`.
CREATE TABLE source_status (
    source         TEXT PRIMARY KEY,
    checked_at     TEXT NOT NULL,
    last_ok_at     TEXT,
    last_error     TEXT,
    last_error_at  TEXT
);
