-- `patients find --family-name NAME --date-of-birth DATE`: the date of birth
-- narrows the search to a few details, whose names are then compared
-- without regard to case or accents.
CREATE INDEX service_users_by_birth ON service_users(date_of_birth);
