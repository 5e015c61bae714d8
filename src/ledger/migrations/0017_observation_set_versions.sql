-- Versions of an observation set, as 0014 gave the other kinds about a
-- person: a feed may name the columns that say "the same set" (`key`) and
-- the column holding each row's own time (`updated_at`). Every version keeps
-- its row, file and line; the replaced one is marked `superseded_by`, and
-- `record_id` is the first version's id (NULL: the row's own).
ALTER TABLE observation_sets ADD COLUMN natural_key TEXT;
ALTER TABLE observation_sets ADD COLUMN updated_at TEXT;
ALTER TABLE observation_sets ADD COLUMN record_id INTEGER;
ALTER TABLE observation_sets ADD COLUMN superseded_by INTEGER;
CREATE INDEX observation_sets_by_key ON observation_sets(detail_id, natural_key)
    WHERE natural_key IS NOT NULL;

-- The one-observation-a-row view, now saying which set replaced a value's.
DROP VIEW observation_records;
CREATE VIEW observation_records AS
SELECT detail_id, observed_at, code,
       CASE WHEN typeof(value) IN ('integer', 'real') THEN value END AS value_num,
       CASE WHEN typeof(value) = 'text' THEN value END AS value_text,
       unit, file_id, line, set_id, record_id, superseded_by
FROM (
    SELECT s.detail_id, s.observed_at, c.code, c.unit, s.file_id, s.line, s.id AS set_id,
           coalesce(s.record_id, s.id) AS record_id, s.superseded_by,
           CASE c.id
               WHEN 1 THEN s.respiratory_rate
               WHEN 2 THEN s.oxygen_saturation
               WHEN 3 THEN s.supplemental_oxygen
               WHEN 4 THEN s.systolic_bp
               WHEN 5 THEN s.diastolic_bp
               WHEN 6 THEN s.heart_rate
               WHEN 7 THEN s.consciousness
               WHEN 8 THEN s.body_temperature
               WHEN 9 THEN s.news2_score
           END AS value
    FROM observation_sets s CROSS JOIN observation_codes c
)
WHERE value IS NOT NULL;
