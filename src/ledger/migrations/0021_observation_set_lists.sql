-- Which observation sets each service user has, one row per service user
-- and file (more when a file holds very many of theirs), instead of an
-- index entry per set. Sets arrive interleaved across residents, so each
-- entry of an index on `observation_sets(detail_id)` went to a random place
-- in it, and that cost about half of every set's insert. A list is written
-- once, when its file's load ends, and read with `json_each`.
CREATE TABLE observation_set_lists (
    detail_id    INTEGER NOT NULL REFERENCES service_users(detail_id),
    -- The list's first set: a file may give a service user several lists.
    first_set_id INTEGER NOT NULL,
    file_id      INTEGER NOT NULL REFERENCES files(id),
    -- A JSON array of `observation_sets.id`, ascending.
    set_ids      TEXT NOT NULL,
    PRIMARY KEY (detail_id, first_set_id)
) WITHOUT ROWID;
-- Retention removes a file's lists with its sets.
CREATE INDEX observation_set_lists_by_file ON observation_set_lists(file_id);

INSERT INTO observation_set_lists (detail_id, first_set_id, file_id, set_ids)
SELECT detail_id, min(id), file_id, json_group_array(id ORDER BY id)
FROM observation_sets
GROUP BY detail_id, file_id;

DROP INDEX observation_sets_by_detail;
