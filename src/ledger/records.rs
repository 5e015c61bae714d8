//! Reading care records: a person and every detail linked to them.

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use super::Result;

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

/// What a person is searched by when their NHS number is not known.
pub struct NameSearch<'a> {
    pub family_name: &'a str,
    /// `YYYY-MM-DD`.
    pub date_of_birth: &'a str,
    pub gender: Option<&'a str>,
    /// In its normal form (`SW1A 1AA`).
    pub postcode: Option<&'a str>,
}

/// Every person with a detail born on the date whose family name matches,
/// ignoring case and accents (and whose gender and postcode match, when
/// given).
pub(super) fn persons_by_name(
    conn: &Connection,
    search: &NameSearch<'_>,
) -> Result<Vec<PersonView>> {
    let wanted = folded(search.family_name);
    let mut stmt = conn.prepare(
        "SELECT person_id, family_name, gender, postcode FROM service_users
         WHERE date_of_birth = ?1 ORDER BY person_id",
    )?;
    let mut persons: Vec<i64> = Vec::new();
    let rows = stmt.query_map([search.date_of_birth], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, Option<String>>(1)?,
            r.get::<_, Option<String>>(2)?,
            r.get::<_, Option<String>>(3)?,
        ))
    })?;
    for row in rows {
        let (person, family_name, gender, postcode) = row?;
        let matches = family_name.is_some_and(|n| folded(&n) == wanted)
            && search.gender.is_none_or(|g| gender.as_deref() == Some(g))
            && search
                .postcode
                .is_none_or(|p| postcode.as_deref() == Some(p));
        if matches && !persons.contains(&person) {
            persons.push(person);
        }
    }
    persons.into_iter().map(|p| person_view(conn, p)).collect()
}

/// A name as compared: letters without their accents, in lower case,
/// without spaces, hyphens or apostrophes (`O'Brien` = `obrien`).
fn folded(name: &str) -> String {
    use unicode_normalization::UnicodeNormalization;
    use unicode_normalization::char::is_combining_mark;
    name.nfd()
        .filter(|c| !is_combining_mark(*c) && c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect()
}

/// Everything recorded of the person a detail belongs to, each record with
/// the file and line it came from.
#[derive(Debug, Serialize)]
pub struct PersonRecords {
    pub person: PersonView,
    pub details: Vec<DetailRecord>,
    /// Newest first, at most the number asked for.
    pub observations: Vec<ObservationRecord>,
    /// How many observations there are in all.
    pub observations_total: u64,
    /// Every state of each detail's demographics that a file gave, current
    /// or not, by detail then as written.
    pub detail_versions: Vec<DetailVersion>,
}

/// One state of a service user's details as a file gave it.
#[derive(Debug, Serialize)]
pub struct DetailVersion {
    pub detail_id: i64,
    pub nhs_number: Option<String>,
    pub family_name: Option<String>,
    pub given_name: Option<String>,
    pub date_of_birth: Option<String>,
    pub gender: Option<String>,
    pub postcode: Option<String>,
    /// The row's own time, when its feed names one.
    pub updated_at: Option<String>,
    pub file_id: i64,
    pub line: i64,
}

/// A service user as one source sent them.
#[derive(Debug, Clone, Serialize)]
pub struct DetailRecord {
    pub detail_id: i64,
    pub source: String,
    pub local_id: String,
    pub nhs_number: Option<String>,
    pub family_name: Option<String>,
    pub given_name: Option<String>,
    pub date_of_birth: Option<String>,
    pub gender: Option<String>,
    pub postcode: Option<String>,
    pub file_id: i64,
    pub line: i64,
}

/// The columns of `service_users u` that [`DetailRecord::from_row`] reads, in order.
pub const DETAIL_COLUMNS: &str = "u.detail_id, u.source, u.local_id, u.nhs_number, u.family_name,
        u.given_name, u.date_of_birth, u.gender, u.postcode, u.file_id, u.line";

impl DetailRecord {
    /// Reads the [`DETAIL_COLUMNS`] at the start of a row.
    pub fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<DetailRecord> {
        Ok(DetailRecord {
            detail_id: r.get(0)?,
            source: r.get(1)?,
            local_id: r.get(2)?,
            nhs_number: r.get(3)?,
            family_name: r.get(4)?,
            given_name: r.get(5)?,
            date_of_birth: r.get(6)?,
            gender: r.get(7)?,
            postcode: r.get(8)?,
            file_id: r.get(9)?,
            line: r.get(10)?,
        })
    }
}

#[derive(Debug, Serialize)]
pub struct ObservationRecord {
    pub detail_id: i64,
    pub observed_at: String,
    pub code: String,
    pub value: String,
    pub unit: Option<String>,
    pub file_id: i64,
    pub line: i64,
    /// The set's row, and the newer version of the set that replaced it.
    pub set_id: i64,
    pub superseded_by: Option<i64>,
}

/// The person holding `detail_id`, with their records; `None` for no such detail.
pub(super) fn person_records(
    conn: &Connection,
    detail_id: i64,
    observations: usize,
) -> Result<Option<PersonRecords>> {
    let person: Option<i64> = conn
        .query_row(
            "SELECT person_id FROM service_users WHERE detail_id = ?1",
            [detail_id],
            |r| r.get(0),
        )
        .optional()?;
    let Some(person) = person else {
        return Ok(None);
    };
    let mut stmt = conn.prepare(&format!(
        "SELECT {DETAIL_COLUMNS} FROM service_users u WHERE u.person_id = ?1 ORDER BY u.detail_id"
    ))?;
    let details = stmt
        .query_map([person], DetailRecord::from_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut stmt = conn.prepare(
        "SELECT o.detail_id, o.observed_at, o.code, coalesce(o.value_text, o.value_num), o.unit,
                o.file_id, o.line, o.set_id, o.superseded_by
         FROM observation_records o
         WHERE o.set_id IN (SELECT j.value
                            FROM service_users s
                            JOIN observation_set_lists l ON l.detail_id = s.detail_id,
                                 json_each(l.set_ids) j
                            WHERE s.person_id = ?1)
         ORDER BY o.observed_at DESC, o.set_id DESC, o.code LIMIT ?2",
    )?;
    let observations = stmt
        .query_map(
            params![person, i64::try_from(observations).unwrap_or(i64::MAX)],
            |r| {
                let value: rusqlite::types::Value = r.get(3)?;
                Ok(ObservationRecord {
                    detail_id: r.get(0)?,
                    observed_at: r.get(1)?,
                    code: r.get(2)?,
                    value: match value {
                        rusqlite::types::Value::Integer(n) => n.to_string(),
                        rusqlite::types::Value::Real(x) => x.to_string(),
                        rusqlite::types::Value::Text(t) => t,
                        _ => String::new(),
                    },
                    unit: r.get(4)?,
                    file_id: r.get(5)?,
                    line: r.get(6)?,
                    set_id: r.get(7)?,
                    superseded_by: r.get(8)?,
                })
            },
        )?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let person_view = person_view(conn, person)?;
    let observations_total = person_view.details.iter().map(|d| d.observations).sum();
    let mut stmt = conn.prepare(
        "SELECT v.detail_id, v.nhs_number, v.family_name, v.given_name, v.date_of_birth,
                v.gender, v.postcode, v.updated_at, v.file_id, v.line
         FROM service_user_versions v JOIN service_users u ON u.detail_id = v.detail_id
         WHERE u.person_id = ?1 ORDER BY v.detail_id, v.id",
    )?;
    let detail_versions = stmt
        .query_map([person], |r| {
            Ok(DetailVersion {
                detail_id: r.get(0)?,
                nhs_number: r.get(1)?,
                family_name: r.get(2)?,
                given_name: r.get(3)?,
                date_of_birth: r.get(4)?,
                gender: r.get(5)?,
                postcode: r.get(6)?,
                updated_at: r.get(7)?,
                file_id: r.get(8)?,
                line: r.get(9)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(Some(PersonRecords {
        person: person_view,
        details,
        observations,
        observations_total,
        detail_versions,
    }))
}

fn person_view(conn: &Connection, person_id: i64) -> Result<PersonView> {
    let nhs_number: Option<String> = conn.query_row(
        "SELECT nhs_number FROM persons WHERE id = ?1",
        [person_id],
        |r| r.get(0),
    )?;
    let mut stmt = conn.prepare(
        "SELECT s.detail_id, s.source, s.local_id,
                (SELECT coalesce(sum((respiratory_rate IS NOT NULL) + (oxygen_saturation IS NOT NULL)
                        + (supplemental_oxygen IS NOT NULL) + (systolic_bp IS NOT NULL)
                        + (diastolic_bp IS NOT NULL) + (heart_rate IS NOT NULL)
                        + (consciousness IS NOT NULL) + (body_temperature IS NOT NULL)
                        + (news2_score IS NOT NULL)), 0)
                 FROM observation_set_lists l, json_each(l.set_ids) j
                 JOIN observation_sets o ON o.id = j.value
                 WHERE l.detail_id = s.detail_id),
                (SELECT count(*) FROM care_record_entries
                 WHERE detail_id = s.detail_id AND superseded_by IS NULL),
                (SELECT count(*) FROM care_transactions
                 WHERE detail_id = s.detail_id AND superseded_by IS NULL),
                (SELECT count(*) FROM red_bags WHERE detail_id = s.detail_id AND superseded_by IS NULL),
                (SELECT count(*) FROM alerts WHERE detail_id = s.detail_id AND superseded_by IS NULL)
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

/// Why `patients link` or `unlink` did nothing.
#[derive(Debug, thiserror::Error)]
pub enum LinkRefused {
    #[error("no detail {0}")]
    NoSuchDetail(i64),
    #[error("details {0} and {1} are already one person")]
    AlreadyLinked(i64, i64),
    #[error(
        "details {0} and {1} belong to persons with different NHS numbers: they are not one person"
    )]
    DifferentNhsNumbers(i64, i64),
    #[error("detail {0} is the only detail of its person: there is nothing to unlink it from")]
    Alone(i64),
}

/// What a link or an unlink did, for its audit event and the admin.
#[derive(Debug, Serialize)]
pub struct LinkChange {
    /// The person the detail (or both details) now belong to.
    pub person_id: i64,
    /// The person it left (on a link, merged into `person_id`: kept, empty).
    pub previous_person_id: i64,
    /// Every detail now of `person_id`.
    pub details: Vec<i64>,
}

fn person_of(conn: &Connection, detail_id: i64) -> Result<Option<(i64, Option<String>)>> {
    Ok(conn
        .query_row(
            "SELECT p.id, p.nhs_number FROM service_users u JOIN persons p ON p.id = u.person_id
             WHERE u.detail_id = ?1",
            [detail_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?)
}

fn details_of(conn: &Connection, person_id: i64) -> Result<Vec<i64>> {
    let mut stmt = conn
        .prepare("SELECT detail_id FROM service_users WHERE person_id = ?1 ORDER BY detail_id")?;
    let details = stmt
        .query_map([person_id], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(details)
}

/// Makes `other`'s person one with `detail`'s: every detail of the one
/// joins the other, marked as linked by hand; the NHS number, if only one
/// had it, goes with them.
pub(super) fn link(
    tx: &rusqlite::Transaction<'_>,
    detail: i64,
    other: i64,
) -> Result<std::result::Result<LinkChange, LinkRefused>> {
    let Some((keep, keep_nhs)) = person_of(tx, detail)? else {
        return Ok(Err(LinkRefused::NoSuchDetail(detail)));
    };
    let Some((merged, merged_nhs)) = person_of(tx, other)? else {
        return Ok(Err(LinkRefused::NoSuchDetail(other)));
    };
    if keep == merged {
        return Ok(Err(LinkRefused::AlreadyLinked(detail, other)));
    }
    // The numbers the details themselves carry, not only their persons':
    // a detail unlinked by hand keeps its own, under a person without one.
    let numbers: std::collections::BTreeSet<String> = tx
        .prepare(
            "SELECT nhs_number FROM service_users WHERE person_id IN (?1, ?2) AND nhs_number IS NOT NULL
             UNION SELECT nhs_number FROM persons WHERE id IN (?1, ?2) AND nhs_number IS NOT NULL",
        )?
        .query_map(params![keep, merged], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    if numbers.len() > 1 {
        return Ok(Err(LinkRefused::DifferentNhsNumbers(detail, other)));
    }
    tx.execute(
        "UPDATE service_users SET person_id = ?1, linked_by_hand = 1 WHERE person_id = ?2",
        params![keep, merged],
    )?;
    tx.execute(
        "UPDATE service_users SET linked_by_hand = 1 WHERE detail_id = ?1",
        [detail],
    )?;
    // The merged person's row stays, without details or a number, so its id
    // is never given to another person (the audit trail names it).
    tx.execute(
        "UPDATE persons SET nhs_number = NULL WHERE id = ?1",
        [merged],
    )?;
    if keep_nhs.is_none() && merged_nhs.is_some() {
        tx.execute(
            "UPDATE persons SET nhs_number = ?2 WHERE id = ?1",
            params![keep, merged_nhs],
        )?;
    }
    Ok(Ok(LinkChange {
        person_id: keep,
        previous_person_id: merged,
        details: details_of(tx, keep)?,
    }))
}

/// Gives `detail` a person of its own, marked as linked by hand. The person
/// it leaves keeps its NHS number and its other details.
pub(super) fn unlink(
    tx: &rusqlite::Transaction<'_>,
    detail: i64,
) -> Result<std::result::Result<LinkChange, LinkRefused>> {
    let Some((left, _)) = person_of(tx, detail)? else {
        return Ok(Err(LinkRefused::NoSuchDetail(detail)));
    };
    if details_of(tx, left)?.len() < 2 {
        return Ok(Err(LinkRefused::Alone(detail)));
    }
    tx.execute("INSERT INTO persons (nhs_number) VALUES (NULL)", [])?;
    let person = tx.last_insert_rowid();
    tx.execute(
        "UPDATE service_users SET person_id = ?2, linked_by_hand = 1 WHERE detail_id = ?1",
        params![detail, person],
    )?;
    Ok(Ok(LinkChange {
        person_id: person,
        previous_person_id: left,
        details: vec![detail],
    }))
}
