//! Writing and reading care records.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use chrono::SecondsFormat;
use rusqlite::{CachedStatement, Connection, OptionalExtension, ToSql, params};
use serde::Serialize;

use super::Result;
use crate::model::{ObservationSet, ObservedValue, Records, ServiceUser};

/// Largest observation set written with one statement.
const MAX_SET: usize = 16;

/// Inserts one file's records through prepared statements, remembering the
/// service users it has written so each costs one look-up per file, not per
/// row. (Per file, not longer: a file's rows may be rolled back.)
pub struct RecordWriter<'c> {
    conn: &'c Connection,
    file_id: i64,
    source: String,
    /// local id -> (detail id, fingerprint of the demographics last written)
    known: HashMap<String, (i64, u64)>,
    set: CachedStatement<'c>,
    /// `observations[n]` inserts n + 1 rows at once.
    observations: Vec<Option<CachedStatement<'c>>>,
    last_time: Option<(chrono::DateTime<chrono::Utc>, String)>,
    pub records: u64,
}

impl<'c> RecordWriter<'c> {
    pub fn new(conn: &'c Connection, file_id: i64, source: &str) -> Result<Self> {
        Ok(RecordWriter {
            conn,
            file_id,
            source: source.to_string(),
            known: HashMap::new(),
            set: conn.prepare_cached(
                "INSERT INTO observation_sets (detail_id, observed_at, file_id, line) VALUES (?1, ?2, ?3, ?4)",
            )?,
            observations: (0..MAX_SET).map(|_| None).collect(),
            last_time: None,
            records: 0,
        })
    }

    pub fn write(&mut self, records: &Records) -> Result<()> {
        let Some(user) = &records.service_user else {
            return Ok(());
        };
        let fingerprint = fingerprint(user);
        let detail_id = match self.known.get(&user.local_id) {
            Some(&(detail_id, seen)) if seen == fingerprint => detail_id,
            _ => {
                let (detail_id, written) =
                    upsert_service_user(self.conn, &self.source, user, self.file_id, records.line)?;
                self.known
                    .insert(user.local_id.clone(), (detail_id, fingerprint));
                self.records += u64::from(written);
                detail_id
            }
        };
        if let Some(set) = &records.observations {
            self.write_set(detail_id, set, records.line)?;
        }
        Ok(())
    }

    fn write_set(&mut self, detail_id: i64, set: &ObservationSet, line: u64) -> Result<()> {
        let at = match &self.last_time {
            Some((t, text)) if *t == set.observed_at => text.clone(),
            _ => {
                let text = set.observed_at.to_rfc3339_opts(SecondsFormat::Secs, true);
                self.last_time = Some((set.observed_at, text.clone()));
                text
            }
        };
        self.set
            .execute(params![detail_id, at, self.file_id, line])?;
        let set_id = self.conn.last_insert_rowid();
        for chunk in set.observations.chunks(MAX_SET) {
            let statement = match &mut self.observations[chunk.len() - 1] {
                Some(s) => s,
                slot => slot.insert(
                    self.conn
                        .prepare_cached(&insert_observations(chunk.len()))?,
                ),
            };
            let mut values: Vec<&dyn ToSql> = Vec::with_capacity(chunk.len() * 4);
            let codes: Vec<i64> = chunk.iter().map(|o| o.code.id()).collect();
            for (o, code) in chunk.iter().zip(&codes) {
                values.push(&set_id);
                values.push(code);
                match &o.value {
                    ObservedValue::Number(n) => {
                        values.push(n);
                        values.push(&rusqlite::types::Null);
                    }
                    ObservedValue::Text(t) => {
                        values.push(&rusqlite::types::Null);
                        values.push(t);
                    }
                }
            }
            statement.execute(values.as_slice())?;
            self.records += chunk.len() as u64;
        }
        Ok(())
    }
}

fn insert_observations(rows: usize) -> String {
    let mut sql =
        String::from("INSERT INTO observations (set_id, code_id, value_num, value_text) VALUES ");
    for i in 0..rows {
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push_str("(?, ?, ?, ?)");
    }
    sql
}

fn fingerprint(user: &ServiceUser) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    user.nhs_number.hash(&mut h);
    user.family_name.hash(&mut h);
    user.given_name.hash(&mut h);
    user.date_of_birth.hash(&mut h);
    user.gender.hash(&mut h);
    user.postcode.hash(&mut h);
    h.finish()
}

/// A service user as stored, to tell whether an upsert changes anything.
#[derive(PartialEq)]
struct Stored {
    detail_id: i64,
    person_id: i64,
    nhs_number: Option<String>,
    family_name: Option<String>,
    given_name: Option<String>,
    date_of_birth: Option<String>,
    gender: Option<String>,
    postcode: Option<String>,
}

/// Inserts or updates a service user and links it to the person its NHS
/// number names. Returns the detail id and whether a row was written.
fn upsert_service_user(
    conn: &Connection,
    source: &str,
    user: &ServiceUser,
    file_id: i64,
    line: u64,
) -> Result<(i64, bool)> {
    let existing: Option<Stored> = conn
        .prepare_cached(
            "SELECT detail_id, person_id, nhs_number, family_name, given_name, date_of_birth,
                    gender, postcode
             FROM service_users WHERE source = ?1 AND local_id = ?2",
        )?
        .query_row(params![source, user.local_id], |r| {
            Ok(Stored {
                detail_id: r.get(0)?,
                person_id: r.get(1)?,
                nhs_number: r.get(2)?,
                family_name: r.get(3)?,
                given_name: r.get(4)?,
                date_of_birth: r.get(5)?,
                gender: r.get(6)?,
                postcode: r.get(7)?,
            })
        })
        .optional()?;
    let nhs = user.nhs_number.map(|n| n.digits());
    let dob = user.date_of_birth.map(|d| d.format("%Y-%m-%d").to_string());
    if let Some(stored) = &existing {
        let same_details = stored.nhs_number == nhs
            && stored.family_name == user.family_name
            && stored.given_name == user.given_name
            && stored.date_of_birth == dob
            && stored.gender == user.gender
            && stored.postcode == user.postcode;
        // Same NHS number means the same person link: nothing to write.
        if same_details {
            return Ok((stored.detail_id, false));
        }
    }
    let existing = existing.map(|s| (s.detail_id, s.person_id));
    let person_id = match (&nhs, existing) {
        (Some(nhs), _) => {
            let found: Option<i64> = conn
                .prepare_cached("SELECT id FROM persons WHERE nhs_number = ?1")?
                .query_row([nhs], |r| r.get(0))
                .optional()?;
            match found {
                Some(id) => id,
                None => match existing {
                    // The detail's own person has no NHS number yet: it gains this one.
                    Some((_, person)) if person_has_no_number(conn, person)? => {
                        conn.prepare_cached("UPDATE persons SET nhs_number = ?2 WHERE id = ?1")?
                            .execute(params![person, nhs])?;
                        person
                    }
                    _ => new_person(conn, Some(nhs))?,
                },
            }
        }
        (None, Some((_, person))) => person,
        (None, None) => new_person(conn, None)?,
    };
    match existing {
        Some((detail_id, _)) => {
            conn.prepare_cached(
                "UPDATE service_users SET person_id = ?2, nhs_number = ?3, family_name = ?4,
                        given_name = ?5, date_of_birth = ?6, gender = ?7, postcode = ?8,
                        file_id = ?9, line = ?10
                 WHERE detail_id = ?1",
            )?
            .execute(params![
                detail_id,
                person_id,
                nhs,
                user.family_name,
                user.given_name,
                dob,
                user.gender,
                user.postcode,
                file_id,
                line
            ])?;
            Ok((detail_id, true))
        }
        None => {
            conn.prepare_cached(
                "INSERT INTO service_users (source, local_id, person_id, nhs_number, family_name,
                        given_name, date_of_birth, gender, postcode, file_id, line)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            )?
            .execute(params![
                source,
                user.local_id,
                person_id,
                nhs,
                user.family_name,
                user.given_name,
                dob,
                user.gender,
                user.postcode,
                file_id,
                line
            ])?;
            Ok((conn.last_insert_rowid(), true))
        }
    }
}

fn person_has_no_number(conn: &Connection, person: i64) -> Result<bool> {
    let nhs: Option<String> = conn
        .prepare_cached("SELECT nhs_number FROM persons WHERE id = ?1")?
        .query_row([person], |r| r.get(0))?;
    Ok(nhs.is_none())
}

fn new_person(conn: &Connection, nhs: Option<&String>) -> Result<i64> {
    conn.prepare_cached("INSERT INTO persons (nhs_number) VALUES (?1)")?
        .execute([nhs])?;
    Ok(conn.last_insert_rowid())
}

/// A person and every service-user detail linked to them.
#[derive(Debug, Serialize)]
pub struct PersonView {
    pub person_id: i64,
    pub nhs_number: Option<String>,
    pub details: Vec<DetailView>,
}

/// One source system's record of the person, with counts of what it holds.
#[derive(Debug, Serialize)]
pub struct DetailView {
    pub detail_id: i64,
    pub source: String,
    pub local_id: String,
    pub observations: u64,
    pub care_record_entries: u64,
    pub care_transactions: u64,
    pub red_bags: u64,
    pub alerts: u64,
}

pub(super) fn person_by_nhs_number(conn: &Connection, nhs: &str) -> Result<Option<PersonView>> {
    let person: Option<i64> = conn
        .query_row("SELECT id FROM persons WHERE nhs_number = ?1", [nhs], |r| {
            r.get(0)
        })
        .optional()?;
    person.map(|p| person_view(conn, p)).transpose()
}

pub(super) fn person_by_local_id(
    conn: &Connection,
    source: &str,
    local_id: &str,
) -> Result<Option<PersonView>> {
    let person: Option<i64> = conn
        .query_row(
            "SELECT person_id FROM service_users WHERE source = ?1 AND local_id = ?2",
            params![source, local_id],
            |r| r.get(0),
        )
        .optional()?;
    person.map(|p| person_view(conn, p)).transpose()
}

fn person_view(conn: &Connection, person_id: i64) -> Result<PersonView> {
    let nhs_number: Option<String> = conn.query_row(
        "SELECT nhs_number FROM persons WHERE id = ?1",
        [person_id],
        |r| r.get(0),
    )?;
    let mut stmt = conn.prepare(
        "SELECT s.detail_id, s.source, s.local_id,
                (SELECT count(*) FROM observation_sets os JOIN observations o ON o.set_id = os.id
                 WHERE os.detail_id = s.detail_id),
                (SELECT count(*) FROM care_record_entries WHERE detail_id = s.detail_id),
                (SELECT count(*) FROM care_transactions WHERE detail_id = s.detail_id),
                (SELECT count(*) FROM red_bags WHERE detail_id = s.detail_id),
                (SELECT count(*) FROM alerts WHERE detail_id = s.detail_id)
         FROM service_users s WHERE s.person_id = ?1 ORDER BY s.detail_id",
    )?;
    let details = stmt
        .query_map([person_id], |r| {
            Ok(DetailView {
                detail_id: r.get(0)?,
                source: r.get(1)?,
                local_id: r.get(2)?,
                observations: r.get(3)?,
                care_record_entries: r.get(4)?,
                care_transactions: r.get(5)?,
                red_bags: r.get(6)?,
                alerts: r.get(7)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(PersonView {
        person_id,
        nhs_number,
        details,
    })
}
