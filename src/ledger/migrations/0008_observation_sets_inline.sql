-- A NEWS2 set becomes one row, its values inline, one column per
-- observation code (named as `observation_codes.code`): one row written per
-- set instead of nine, and the largest table gone. Columns carry no type, so
-- each value keeps the type it was written with (numbers; consciousness as
-- text). The view `observation_records` still gives one observation per row.

ALTER TABLE observation_sets ADD COLUMN respiratory_rate;
ALTER TABLE observation_sets ADD COLUMN oxygen_saturation;
ALTER TABLE observation_sets ADD COLUMN supplemental_oxygen;
ALTER TABLE observation_sets ADD COLUMN systolic_bp;
ALTER TABLE observation_sets ADD COLUMN diastolic_bp;
ALTER TABLE observation_sets ADD COLUMN heart_rate;
ALTER TABLE observation_sets ADD COLUMN consciousness;
ALTER TABLE observation_sets ADD COLUMN body_temperature;
ALTER TABLE observation_sets ADD COLUMN news2_score;

UPDATE observation_sets SET
    respiratory_rate    = (SELECT coalesce(value_num, value_text) FROM observations WHERE set_id = observation_sets.id AND code_id = 1),
    oxygen_saturation   = (SELECT coalesce(value_num, value_text) FROM observations WHERE set_id = observation_sets.id AND code_id = 2),
    supplemental_oxygen = (SELECT coalesce(value_num, value_text) FROM observations WHERE set_id = observation_sets.id AND code_id = 3),
    systolic_bp         = (SELECT coalesce(value_num, value_text) FROM observations WHERE set_id = observation_sets.id AND code_id = 4),
    diastolic_bp        = (SELECT coalesce(value_num, value_text) FROM observations WHERE set_id = observation_sets.id AND code_id = 5),
    heart_rate          = (SELECT coalesce(value_num, value_text) FROM observations WHERE set_id = observation_sets.id AND code_id = 6),
    consciousness       = (SELECT coalesce(value_num, value_text) FROM observations WHERE set_id = observation_sets.id AND code_id = 7),
    body_temperature    = (SELECT coalesce(value_num, value_text) FROM observations WHERE set_id = observation_sets.id AND code_id = 8),
    news2_score         = (SELECT coalesce(value_num, value_text) FROM observations WHERE set_id = observation_sets.id AND code_id = 9);

DROP VIEW observation_records;
DROP TABLE observations;

-- One row per observation with everything spelt out, as before.
CREATE VIEW observation_records AS
SELECT detail_id, observed_at, code,
       CASE WHEN typeof(value) IN ('integer', 'real') THEN value END AS value_num,
       CASE WHEN typeof(value) = 'text' THEN value END AS value_text,
       unit, file_id, line, set_id
FROM (
    SELECT s.detail_id, s.observed_at, c.code, c.unit, s.file_id, s.line, s.id AS set_id,
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
