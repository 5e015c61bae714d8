-- Files taken from partners' servers, by where they were and how they looked
-- then: a file left in place (or whose removal failed) is never taken twice.
CREATE TABLE remote_taken (
    source   TEXT NOT NULL,
    path     TEXT NOT NULL,
    size     INTEGER NOT NULL,
    mtime    INTEGER NOT NULL,
    file_id  INTEGER NOT NULL REFERENCES files(id),
    taken_at TEXT NOT NULL,
    PRIMARY KEY (source, path, size, mtime)
);
