-- The record kinds beyond service users and observations, as feeds now map
-- them (their tables came with 0002 but nothing wrote them). Each row keeps
-- the file and line it came from. Dates are `YYYY-MM-DD`, times RFC 3339 in
-- UTC, codes dropgate's own (after a feed's translation). A kind about a
-- person points at the service user's detail; staff are their own identity,
-- one row per (source, staff id), updated by later files. Rows already there
-- are carried over.

-- A care record entry's author is the staff id its source uses, which may
-- arrive before or after the staff member's own record.
ALTER TABLE care_record_entries RENAME TO care_record_entries_0002;
CREATE TABLE care_record_entries (
    id           INTEGER PRIMARY KEY,
    detail_id    INTEGER NOT NULL REFERENCES service_users(detail_id),
    recorded_at  TEXT NOT NULL,
    author       TEXT,
    entry_type   TEXT,
    text         TEXT NOT NULL,
    file_id      INTEGER NOT NULL REFERENCES files(id),
    line         INTEGER NOT NULL
);
INSERT INTO care_record_entries (id, detail_id, recorded_at, author, entry_type, text, file_id, line)
SELECT e.id, e.detail_id, e.recorded_at, s.staff_id, e.entry_type, coalesce(e.text, ''), e.file_id, e.line
FROM care_record_entries_0002 e LEFT JOIN staff s ON s.id = e.author_id;
DROP TABLE care_record_entries_0002;

-- Social care's events (referral, assessment, review) join the types.
ALTER TABLE care_transactions RENAME TO care_transactions_0002;
CREATE TABLE care_transactions (
    id                INTEGER PRIMARY KEY,
    detail_id         INTEGER NOT NULL REFERENCES service_users(detail_id),
    transaction_type  TEXT NOT NULL
                      CHECK (transaction_type IN ('admission', 'discharge', 'transfer', 'visit',
                             'service_event', 'referral', 'assessment', 'review')),
    start_at          TEXT NOT NULL,
    end_at            TEXT,
    provider          TEXT,
    file_id           INTEGER NOT NULL REFERENCES files(id),
    line              INTEGER NOT NULL
);
INSERT INTO care_transactions (id, detail_id, transaction_type, start_at, end_at, provider, file_id, line)
SELECT id, detail_id, kind, start_at, end_at, provider, file_id, line FROM care_transactions_0002;
DROP TABLE care_transactions_0002;

-- An alert says what it is about (`description`).
ALTER TABLE alerts RENAME TO alerts_0002;
CREATE TABLE alerts (
    id           INTEGER PRIMARY KEY,
    detail_id    INTEGER NOT NULL REFERENCES service_users(detail_id),
    alert_type   TEXT NOT NULL,
    severity     TEXT,
    description  TEXT,
    start_at     TEXT,
    end_at       TEXT,
    file_id      INTEGER NOT NULL REFERENCES files(id),
    line         INTEGER NOT NULL
);
INSERT INTO alerts (id, detail_id, alert_type, severity, start_at, end_at, file_id, line)
SELECT id, detail_id, alert_type, severity, start_at, end_at, file_id, line FROM alerts_0002;
DROP TABLE alerts_0002;

-- Column names as the feeds' mapping names the fields.
ALTER TABLE red_bags RENAME TO red_bags_0002;
CREATE TABLE red_bags (
    id                   INTEGER PRIMARY KEY,
    detail_id            INTEGER NOT NULL REFERENCES service_users(detail_id),
    transferred_at       TEXT NOT NULL,
    reason               TEXT,
    medications          TEXT,
    allergies            TEXT,
    resuscitation        TEXT,
    communication_needs  TEXT,
    belongings           TEXT,
    contacts             TEXT,
    file_id              INTEGER NOT NULL REFERENCES files(id),
    line                 INTEGER NOT NULL
);
INSERT INTO red_bags (id, detail_id, transferred_at, reason, medications, allergies, resuscitation,
                      communication_needs, belongings, contacts, file_id, line)
SELECT id, detail_id, transfer_at, reason, medications, allergies, resuscitation_status,
       communication_needs, belongings, contacts, file_id, line FROM red_bags_0002;
DROP TABLE red_bags_0002;

-- Exports read each kind by the file that wrote it; `patients show` by detail.
CREATE INDEX staff_by_file ON staff(file_id);
CREATE INDEX care_record_entries_by_file ON care_record_entries(file_id);
CREATE INDEX care_record_entries_by_detail ON care_record_entries(detail_id);
CREATE INDEX care_transactions_by_file ON care_transactions(file_id);
CREATE INDEX care_transactions_by_detail ON care_transactions(detail_id);
CREATE INDEX alerts_by_file ON alerts(file_id);
CREATE INDEX alerts_by_detail ON alerts(detail_id);
CREATE INDEX red_bags_by_file ON red_bags(file_id);
CREATE INDEX red_bags_by_detail ON red_bags(detail_id);
