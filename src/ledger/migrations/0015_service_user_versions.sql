-- Every state of a service user's details that a file gave, with its file and
-- line and, when the feed names one (`updated_at`), the row's own time.
-- `service_users` holds the current state: the latest by that time, whatever
-- order the files came in (without times, the last written); these rows hold
-- them all. The states already recorded are the first versions.
ALTER TABLE service_users ADD COLUMN updated_at TEXT;

CREATE TABLE service_user_versions (
    id             INTEGER PRIMARY KEY,
    detail_id      INTEGER NOT NULL REFERENCES service_users(detail_id),
    nhs_number     TEXT,
    family_name    TEXT,
    given_name     TEXT,
    date_of_birth  TEXT,
    gender         TEXT,
    postcode       TEXT,
    updated_at     TEXT,
    file_id        INTEGER NOT NULL REFERENCES files(id),
    line           INTEGER NOT NULL
);
CREATE INDEX service_user_versions_by_detail ON service_user_versions(detail_id);

INSERT INTO service_user_versions (detail_id, nhs_number, family_name, given_name,
                                   date_of_birth, gender, postcode, file_id, line)
SELECT detail_id, nhs_number, family_name, given_name, date_of_birth, gender, postcode,
       file_id, line
FROM service_users ORDER BY detail_id;
