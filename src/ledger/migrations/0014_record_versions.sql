-- Versions of a record: a feed may name a natural key (columns whose values
-- say "the same record") and the column holding each row's own time. A row
-- with the key of a record the person already has is a new version; the one
-- with the later time is current, whatever order the files came in, and the
-- other is marked `superseded_by` it. Every version keeps its file and line.
-- `record_id` is the first version's id (NULL: the row's own), the record's
-- identity across versions (the FHIR id of an export).
ALTER TABLE care_record_entries ADD COLUMN natural_key TEXT;
ALTER TABLE care_record_entries ADD COLUMN updated_at TEXT;
ALTER TABLE care_record_entries ADD COLUMN record_id INTEGER;
ALTER TABLE care_record_entries ADD COLUMN superseded_by INTEGER;
CREATE INDEX care_record_entries_by_key ON care_record_entries(detail_id, natural_key)
    WHERE natural_key IS NOT NULL;

ALTER TABLE care_transactions ADD COLUMN natural_key TEXT;
ALTER TABLE care_transactions ADD COLUMN updated_at TEXT;
ALTER TABLE care_transactions ADD COLUMN record_id INTEGER;
ALTER TABLE care_transactions ADD COLUMN superseded_by INTEGER;
CREATE INDEX care_transactions_by_key ON care_transactions(detail_id, natural_key)
    WHERE natural_key IS NOT NULL;

ALTER TABLE alerts ADD COLUMN natural_key TEXT;
ALTER TABLE alerts ADD COLUMN updated_at TEXT;
ALTER TABLE alerts ADD COLUMN record_id INTEGER;
ALTER TABLE alerts ADD COLUMN superseded_by INTEGER;
CREATE INDEX alerts_by_key ON alerts(detail_id, natural_key) WHERE natural_key IS NOT NULL;

ALTER TABLE red_bags ADD COLUMN natural_key TEXT;
ALTER TABLE red_bags ADD COLUMN updated_at TEXT;
ALTER TABLE red_bags ADD COLUMN record_id INTEGER;
ALTER TABLE red_bags ADD COLUMN superseded_by INTEGER;
CREATE INDEX red_bags_by_key ON red_bags(detail_id, natural_key) WHERE natural_key IS NOT NULL;
