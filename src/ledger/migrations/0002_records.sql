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

-- Everything dropgate records as an observation, with its unit and codings.
-- The ids are fixed: the loader writes them (see map::Code).
CREATE TABLE observation_codes (
    id      INTEGER PRIMARY KEY,
    code    TEXT NOT NULL UNIQUE,
    unit    TEXT,
    loinc   TEXT,
    snomed  TEXT
);
INSERT INTO observation_codes (id, code, unit, loinc, snomed) VALUES
    (1, 'respiratory_rate',    '/min',    '9279-1', '86290005'),
    (2, 'oxygen_saturation',   '%',       '2708-6', '103228002'),
    (3, 'supplemental_oxygen', NULL,      NULL,     NULL),
    (4, 'systolic_bp',         'mm[Hg]',  '8480-6', '72313002'),
    (5, 'diastolic_bp',        'mm[Hg]',  '8462-4', '1091811000000102'),
    (6, 'heart_rate',          '/min',    '8867-4', '364075005'),
    (7, 'consciousness',       NULL,      NULL,     NULL),
    (8, 'body_temperature',    'Cel',     '8310-5', '276885007'),
    (9, 'news2_score',         '{score}', NULL,     '1104051000000101');

-- Observations taken together (one row of a NEWS2 feed): who, when, where from.
CREATE TABLE observation_sets (
    id          INTEGER PRIMARY KEY,
    detail_id   INTEGER NOT NULL REFERENCES service_users(detail_id),
    observed_at TEXT NOT NULL,
    file_id     INTEGER NOT NULL REFERENCES files(id),
    line        INTEGER NOT NULL
);
CREATE INDEX observation_sets_by_detail ON observation_sets(detail_id);

-- The largest table by far, kept narrow and clustered by set: new rows always
-- append at its end, and it needs no secondary index.
CREATE TABLE observations (
    set_id      INTEGER NOT NULL REFERENCES observation_sets(id),
    code_id     INTEGER NOT NULL REFERENCES observation_codes(id),
    value_num   REAL,
    value_text  TEXT,
    PRIMARY KEY (set_id, code_id)
) WITHOUT ROWID;

-- One row per observation with everything spelt out.
CREATE VIEW observation_records AS
SELECT s.detail_id, s.observed_at, c.code, o.value_num, o.value_text, c.unit,
       s.file_id, s.line, o.set_id
FROM observations o
JOIN observation_sets s ON s.id = o.set_id
JOIN observation_codes c ON c.id = o.code_id;

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
