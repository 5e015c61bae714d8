-- The care record model. Every record keeps the file and line it came from.
-- Indexes are few on purpose: each secondary index on a large table costs
-- insert speed (see README, "Indexes").

-- A person: service-user details sharing a valid NHS number are linked to one.
CREATE TABLE persons (
    id          INTEGER PRIMARY KEY,
    nhs_number  TEXT UNIQUE
);

-- A service user as one source system knows them; detail_id is stable.
CREATE TABLE service_users (
    detail_id     INTEGER PRIMARY KEY,
    source        TEXT NOT NULL,
    local_id      TEXT NOT NULL,
    person_id     INTEGER NOT NULL REFERENCES persons(id),
    nhs_number    TEXT,
    family_name   TEXT,
    given_name    TEXT,
    date_of_birth TEXT,
    gender        TEXT,
    postcode      TEXT,
    file_id       INTEGER NOT NULL REFERENCES files(id),
    line          INTEGER NOT NULL,
    UNIQUE (source, local_id)
);
CREATE INDEX service_users_by_person ON service_users(person_id);

CREATE TABLE staff (
    id            INTEGER PRIMARY KEY,
    source        TEXT NOT NULL,
    staff_id      TEXT NOT NULL,
    name          TEXT,
    role          TEXT,
    organisation  TEXT,
    file_id       INTEGER NOT NULL REFERENCES files(id),
    line          INTEGER NOT NULL,
    UNIQUE (source, staff_id)
);

CREATE TABLE care_record_entries (
    id          INTEGER PRIMARY KEY,
    detail_id   INTEGER NOT NULL REFERENCES service_users(detail_id),
    recorded_at TEXT NOT NULL,
    author_id   INTEGER REFERENCES staff(id),
    entry_type  TEXT NOT NULL,
    text        TEXT,
    file_id     INTEGER NOT NULL REFERENCES files(id),
    line        INTEGER NOT NULL
);
CREATE INDEX care_record_entries_by_detail ON care_record_entries(detail_id);

CREATE TABLE care_transactions (
    id          INTEGER PRIMARY KEY,
    detail_id   INTEGER NOT NULL REFERENCES service_users(detail_id),
    kind        TEXT NOT NULL
                CHECK (kind IN ('admission', 'discharge', 'transfer', 'visit', 'service_event')),
    start_at    TEXT NOT NULL,
    end_at      TEXT,
    provider    TEXT,
    file_id     INTEGER NOT NULL REFERENCES files(id),
    line        INTEGER NOT NULL
);
CREATE INDEX care_transactions_by_detail ON care_transactions(detail_id);

-- The largest table by far: rows append in id order and the only secondary
-- index is by service user, which person look-ups and exports need.
CREATE TABLE observations (
    id          INTEGER PRIMARY KEY,
    detail_id   INTEGER NOT NULL REFERENCES service_users(detail_id),
    observed_at TEXT NOT NULL,
    code        TEXT NOT NULL,
    value_num   REAL,
    value_text  TEXT,
    unit        TEXT,
    file_id     INTEGER NOT NULL REFERENCES files(id),
    line        INTEGER NOT NULL
);
CREATE INDEX observations_by_detail ON observations(detail_id);

CREATE TABLE red_bags (
    id                  INTEGER PRIMARY KEY,
    detail_id           INTEGER NOT NULL REFERENCES service_users(detail_id),
    transfer_at         TEXT NOT NULL,
    reason              TEXT,
    medications         TEXT,
    allergies           TEXT,
    resuscitation_status TEXT,
    communication_needs TEXT,
    belongings          TEXT,
    contacts            TEXT,
    file_id             INTEGER NOT NULL REFERENCES files(id),
    line                INTEGER NOT NULL
);
CREATE INDEX red_bags_by_detail ON red_bags(detail_id);

CREATE TABLE alerts (
    id          INTEGER PRIMARY KEY,
    detail_id   INTEGER NOT NULL REFERENCES service_users(detail_id),
    alert_type  TEXT NOT NULL,
    severity    TEXT,
    start_at    TEXT,
    end_at      TEXT,
    file_id     INTEGER NOT NULL REFERENCES files(id),
    line        INTEGER NOT NULL
);
CREATE INDEX alerts_by_detail ON alerts(detail_id);
