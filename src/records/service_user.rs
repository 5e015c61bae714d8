//! Service users: a person as one source system describes them. Each
//! (source, local id) keeps a stable detail id; details sharing a valid NHS
//! number are linked as one person.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher};

use compact_str::CompactString;
use rusqlite::{Connection, OptionalExtension, params};
use serde::Deserialize;
use toml::Spanned;

use super::fields::{self, Field, FieldSpec, RawField};
use super::{Expect, MappingChecker};
use crate::domain::nhs_number::NhsNumber;
use crate::ledger::{DETAIL_COLUMNS, DetailRecord, Result};
use crate::validate::{Row, Value};

/// The section name in `[feeds.NAME.map]`.
pub const KIND: &str = "service_user";

/// `[feeds.NAME.map.service_user]`: what fills each field. The text fields
/// take any form of [`fields::RawField`] (a column, a translated column,
/// a fixed value, columns joined); the NHS number and the date of birth
/// take a column of their type.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMapping {
    /// The sender's own identifier for the person (required).
    pub local_id: Spanned<RawField>,
    pub nhs_number: Option<Spanned<String>>,
    pub family_name: Option<Spanned<RawField>>,
    pub given_name: Option<Spanned<RawField>>,
    pub date_of_birth: Option<Spanned<String>>,
    pub gender: Option<Spanned<RawField>>,
    pub postcode: Option<Spanned<RawField>>,
    /// A date or datetime column: the row's own time. A row older than the
    /// details already held is kept as a version, not made current.
    pub updated_at: Option<Spanned<String>>,
}

/// How each field is filled (columns are indexes into the schema).
#[derive(Debug)]
pub struct Mapping {
    pub local_id: Option<Field>,
    pub nhs_number: Option<usize>,
    pub family_name: Option<Field>,
    pub given_name: Option<Field>,
    pub date_of_birth: Option<usize>,
    pub gender: Option<Field>,
    pub postcode: Option<Field>,
    pub updated_at: Option<usize>,
}

impl Mapping {
    /// Checks each mapped column against the schema.
    pub fn check(raw: RawMapping, checker: &mut dyn MappingChecker) -> Mapping {
        let mut column = |name: &str, column: Option<Spanned<String>>, expect: Expect| {
            column.and_then(|c| checker.column(KIND, name, &c, expect))
        };
        let nhs_number = column("nhs_number", raw.nhs_number, Expect::NhsNumber);
        let date_of_birth = column("date_of_birth", raw.date_of_birth, Expect::Date);
        let updated_at = column("updated_at", raw.updated_at, Expect::When);
        let mut text = |name: &'static str, raw: Option<Spanned<RawField>>| {
            raw.and_then(|raw| fields::check(KIND, &FieldSpec::text(name), raw, checker))
        };
        Mapping {
            local_id: text("local_id", Some(raw.local_id)),
            nhs_number,
            family_name: text("family_name", raw.family_name),
            given_name: text("given_name", raw.given_name),
            date_of_birth,
            gender: text("gender", raw.gender),
            postcode: text("postcode", raw.postcode),
            updated_at,
        }
    }
}

/// A person as one source system describes them.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceUser {
    pub local_id: CompactString,
    pub nhs_number: Option<NhsNumber>,
    pub family_name: Option<CompactString>,
    pub given_name: Option<CompactString>,
    pub date_of_birth: Option<chrono::NaiveDate>,
    pub gender: Option<CompactString>,
    pub postcode: Option<CompactString>,
    /// The row's own time, when the feed names its column.
    pub updated_at: Option<CompactString>,
}

/// A text field's value, moved out of the row when it is a column's as it
/// is (each column fills at most one field of a service user).
fn take_text(row: &mut Row, field: Option<&Field>) -> Option<CompactString> {
    field.and_then(|f| f.take(row))
}

/// The service user a row describes.
pub fn map(mapping: &Mapping, row: &mut Row) -> ServiceUser {
    ServiceUser {
        nhs_number: match mapping.nhs_number.map(|c| &row.values[c]) {
            Some(Value::Nhs(n)) => Some(*n),
            _ => None,
        },
        date_of_birth: match mapping.date_of_birth.map(|c| &row.values[c]) {
            Some(Value::Date(d)) => Some(*d),
            _ => None,
        },
        updated_at: mapping
            .updated_at
            .and_then(|c| fields::stored_text(&row.values[c])),
        local_id: take_text(row, mapping.local_id.as_ref()).unwrap_or_default(),
        family_name: take_text(row, mapping.family_name.as_ref()),
        given_name: take_text(row, mapping.given_name.as_ref()),
        gender: take_text(row, mapping.gender.as_ref()),
        postcode: take_text(row, mapping.postcode.as_ref()),
    }
}

/// Writes one file's service users, remembering those it has written so
/// each costs one look-up per file, not per row. (Per file, not longer: a
/// file's rows may be rolled back.)
pub struct Writer<'c> {
    conn: &'c Connection,
    file_id: i64,
    source: String,
    /// local id -> (detail id, fingerprint of the demographics last written)
    known: HashMap<CompactString, (i64, u64), foldhash::fast::RandomState>,
}

impl<'c> Writer<'c> {
    pub fn new(conn: &'c Connection, file_id: i64, source: &str) -> Writer<'c> {
        Writer {
            conn,
            file_id,
            source: source.to_string(),
            known: HashMap::default(),
        }
    }

    /// Writes the service user unless it is unchanged; returns its detail id
    /// and the rows written.
    pub fn write(&mut self, user: &ServiceUser, line: u64) -> Result<(i64, u64)> {
        let fingerprint = fingerprint(user);
        if let Some(&(detail_id, seen)) = self.known.get(user.local_id.as_str())
            && seen == fingerprint
        {
            return Ok((detail_id, 0));
        }
        let (detail_id, written) =
            upsert_service_user(self.conn, &self.source, user, self.file_id, line)?;
        self.known
            .insert(user.local_id.clone(), (detail_id, fingerprint));
        Ok((detail_id, u64::from(written)))
    }
}

fn fingerprint(user: &ServiceUser) -> u64 {
    // Quality rather than speed of mixing: two demographics must not share
    // a fingerprint by chance.
    let mut h = foldhash::quality::FixedState::default().build_hasher();
    user.nhs_number.hash(&mut h);
    user.family_name.hash(&mut h);
    user.given_name.hash(&mut h);
    user.date_of_birth.hash(&mut h);
    user.gender.hash(&mut h);
    user.postcode.hash(&mut h);
    user.updated_at.hash(&mut h);
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
    /// An admin linked or unlinked it by hand: its person stays.
    linked_by_hand: bool,
    updated_at: Option<String>,
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
                    gender, postcode, linked_by_hand, updated_at
             FROM service_users WHERE source = ?1 AND local_id = ?2",
        )?
        .query_row(params![source, user.local_id.as_str()], |r| {
            Ok(Stored {
                detail_id: r.get(0)?,
                person_id: r.get(1)?,
                nhs_number: r.get(2)?,
                family_name: r.get(3)?,
                given_name: r.get(4)?,
                date_of_birth: r.get(5)?,
                gender: r.get(6)?,
                postcode: r.get(7)?,
                linked_by_hand: r.get(8)?,
                updated_at: r.get(9)?,
            })
        })
        .optional()?;
    let nhs = user.nhs_number.map(|n| n.digits());
    let dob = user.date_of_birth.map(fields::iso_date);
    let dob = dob.as_deref();
    let text = Option::as_deref;
    let (family_name, given_name) = (text(&user.family_name), text(&user.given_name));
    let (gender, postcode) = (text(&user.gender), text(&user.postcode));
    let updated_at = text(&user.updated_at);
    if let Some(stored) = &existing {
        let same_details = stored.nhs_number == nhs
            && stored.family_name.as_deref() == family_name
            && stored.given_name.as_deref() == given_name
            && stored.date_of_birth.as_deref() == dob
            && stored.gender.as_deref() == gender
            && stored.postcode.as_deref() == postcode;
        let older = match (updated_at, stored.updated_at.as_deref()) {
            (Some(new), Some(held)) => new < held,
            _ => false,
        };
        // Same NHS number means the same person link: nothing to write but
        // a later time, which later rows are judged against.
        if same_details {
            if !older && updated_at.is_some() && updated_at != stored.updated_at.as_deref() {
                conn.prepare_cached(
                    "UPDATE service_users SET updated_at = ?2 WHERE detail_id = ?1",
                )?
                .execute(params![stored.detail_id, updated_at])?;
            }
            return Ok((stored.detail_id, false));
        }
        // Older than what is held: kept as a version, not made current.
        if older {
            add_version(conn, stored.detail_id, user, &nhs, dob, file_id, line)?;
            return Ok((stored.detail_id, true));
        }
    }
    let by_hand = existing.as_ref().is_some_and(|s| s.linked_by_hand);
    let existing = existing.map(|s| (s.detail_id, s.person_id));
    let person_id = match (&nhs, existing) {
        // A decision made by a person is not undone by a file.
        (_, Some((_, person))) if by_hand => person,
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
    let detail_id = match existing {
        Some((detail_id, _)) => {
            conn.prepare_cached(
                "UPDATE service_users SET person_id = ?2, nhs_number = ?3, family_name = ?4,
                        given_name = ?5, date_of_birth = ?6, gender = ?7, postcode = ?8,
                        file_id = ?9, line = ?10, updated_at = coalesce(?11, updated_at)
                 WHERE detail_id = ?1",
            )?
            .execute(params![
                detail_id,
                person_id,
                nhs,
                family_name,
                given_name,
                dob,
                gender,
                postcode,
                file_id,
                line,
                updated_at
            ])?;
            detail_id
        }
        None => {
            conn.prepare_cached(
                "INSERT INTO service_users (source, local_id, person_id, nhs_number, family_name,
                        given_name, date_of_birth, gender, postcode, file_id, line, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            )?
            .execute(params![
                source,
                user.local_id.as_str(),
                person_id,
                nhs,
                family_name,
                given_name,
                dob,
                gender,
                postcode,
                file_id,
                line,
                updated_at
            ])?;
            conn.last_insert_rowid()
        }
    };
    add_version(conn, detail_id, user, &nhs, dob, file_id, line)?;
    Ok((detail_id, true))
}

/// Keeps a state of the details as a file gave it, current or not.
fn add_version(
    conn: &Connection,
    detail_id: i64,
    user: &ServiceUser,
    nhs: &Option<String>,
    dob: Option<&str>,
    file_id: i64,
    line: u64,
) -> Result<()> {
    let text = Option::as_deref;
    conn.prepare_cached(
        "INSERT INTO service_user_versions (detail_id, nhs_number, family_name, given_name,
                date_of_birth, gender, postcode, updated_at, file_id, line)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?
    .execute(params![
        detail_id,
        nhs,
        text(&user.family_name),
        text(&user.given_name),
        dob,
        text(&user.gender),
        text(&user.postcode),
        text(&user.updated_at),
        file_id,
        line
    ])?;
    Ok(())
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

/// A service user as an export reads it: the detail as its source sent it,
/// with the feed of the file that last wrote it.
#[derive(Debug, Clone)]
pub struct StoredUser {
    /// `source` is the partner whose system knows them by `local_id`.
    pub detail: DetailRecord,
    pub feed: Option<String>,
}

fn stored(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredUser> {
    Ok(StoredUser {
        detail: DetailRecord::from_row(r)?,
        feed: r.get(11)?,
    })
}

fn select_stored(filter: &str) -> String {
    format!(
        "SELECT {DETAIL_COLUMNS}, f.feed FROM service_users u JOIN files f ON f.id = u.file_id {filter}"
    )
}

/// The service users a file wrote (and that no later file changed).
pub fn written_by(conn: &Connection, file_id: i64) -> Result<Vec<StoredUser>> {
    let mut stmt =
        conn.prepare_cached(&select_stored("WHERE u.file_id = ?1 ORDER BY u.detail_id"))?;
    let rows = stmt.query_map([file_id], stored)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// One service user by detail id.
pub fn by_detail(conn: &Connection, detail_id: i64) -> Result<Option<StoredUser>> {
    let mut stmt = conn.prepare_cached(&select_stored("WHERE u.detail_id = ?1"))?;
    Ok(stmt.query_row([detail_id], stored).optional()?)
}
