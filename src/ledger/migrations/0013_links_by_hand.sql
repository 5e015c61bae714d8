-- A detail an admin linked to, or unlinked from, a person by hand
-- (`patients link` / `unlink`) keeps that person whatever NHS number later
-- files give it: a later file never undoes a decision made by a person.
ALTER TABLE service_users ADD COLUMN linked_by_hand INTEGER NOT NULL DEFAULT 0;
