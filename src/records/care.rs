//! The record kinds that are their fields and no more (staff, care record
//! entries, care transactions, alerts, red bags): each kind's module gives
//! a [`Spec`], and this module maps, writes and reads any of them the same
//! way. A field is filled as `fields` describes; the ledger keeps one row
//! per record in the kind's own table, with the file and line it came from.

use std::collections::BTreeSet;

use compact_str::CompactString;
use rusqlite::types::{ToSqlOutput, Value as SqlValue, ValueRef};
use rusqlite::{Connection, params_from_iter};
use toml::Spanned;

use super::fields::{self, Field, FieldSpec, RawFields};
use super::{Kind, MappingChecker, versions};
use crate::ledger::{LedgerError, Result};
use crate::validate::Row;

/// A kind described by its fields.
#[derive(Debug)]
pub struct Spec {
    pub kind: Kind,
    /// The ledger table, made by migration 0012.
    pub table: &'static str,
    pub fields: &'static [FieldSpec],
    /// The table's column for each field, in `fields` order.
    pub columns: &'static [&'static str],
    /// About a service user (the row points at their detail). Staff are not:
    /// a staff member is one row per (source, `fields[0]`), updated by later
    /// files (a field one leaves empty keeps its value).
    pub about_person: bool,
}

impl Spec {
    fn insert_sql(&self) -> String {
        let columns = self.columns.join(", ");
        let marks = vec!["?"; self.columns.len() + 3].join(", ");
        if self.about_person {
            let marks = vec!["?"; self.columns.len() + 5].join(", ");
            format!(
                "INSERT INTO {} (detail_id, file_id, line, natural_key, updated_at, {columns})
                 VALUES ({marks})",
                self.table
            )
        } else {
            // A field a later file leaves empty keeps what an earlier one gave.
            let updates: Vec<String> = self.columns[1..]
                .iter()
                .map(|c| format!("{c} = coalesce(excluded.{c}, {c})"))
                .chain([
                    "file_id = excluded.file_id".into(),
                    "line = excluded.line".into(),
                ])
                .collect();
            format!(
                "INSERT INTO {} (source, file_id, line, {columns}) VALUES ({marks})
                 ON CONFLICT (source, {}) DO UPDATE SET {}",
                self.table,
                self.columns[0],
                updates.join(", ")
            )
        }
    }

    /// Rows of the table `t` with the partner of the file `f` each came
    /// from, where `filter` holds.
    fn select_sql(&self, filter: &str) -> String {
        let versions = if self.about_person {
            "t.detail_id, coalesce(t.record_id, t.id), t.superseded_by"
        } else {
            "NULL, t.id, NULL"
        };
        let columns: Vec<String> = self.columns.iter().map(|c| format!("t.{c}")).collect();
        format!(
            "SELECT t.id, {versions}, t.file_id, t.line, f.partner, {}
             FROM {} t JOIN files f ON f.id = t.file_id WHERE {filter} ORDER BY t.id",
            columns.join(", "),
            self.table
        )
    }
}

/// A kind's mapping, checked: how each field is filled (`None`: it is not).
#[derive(Debug)]
pub struct Mapping {
    pub spec: &'static Spec,
    pub fields: Vec<Option<Field>>,
    /// `when = "COLUMN"`: a record only from rows where the column has a value.
    pub when: Option<usize>,
    /// `key = ["COLUMN", ...]`: a row whose values there match a record the
    /// person already has is a new version of it.
    pub key: Vec<usize>,
    /// `updated_at = "COLUMN"`: a row's own time, which decides the current
    /// version (without it, the later row to arrive).
    pub updated_at: Option<usize>,
    /// Whose keys these are: the feed's name. Two feeds' records are never
    /// versions of each other, whatever their keys hold.
    pub key_scope: String,
}

impl Mapping {
    pub fn check(
        spec: &'static Spec,
        raw: Spanned<RawFields>,
        checker: &mut dyn MappingChecker,
    ) -> Mapping {
        let kind = spec.kind.name();
        let span = raw.span();
        let mut fields = vec![None; spec.fields.len()];
        let mut given = BTreeSet::new();
        let mut when = None;
        let mut natural_key = Vec::new();
        let mut updated_at = None;
        for (key, value) in raw.into_inner().0 {
            match key.get_ref().as_str() {
                "when" => {
                    when = fields::one_column(kind, "when", value, checker);
                    continue;
                }
                "key" | "updated_at" if !spec.about_person => {
                    checker.error_at(
                        key.span(),
                        &format!(
                            "map.{kind}: a member of staff is one record per `staff_id`, updated by each later file; `{}` is for the kinds about a person",
                            key.get_ref()
                        ),
                    );
                    continue;
                }
                "key" => {
                    natural_key = versions::key_columns(kind, value, checker);
                    continue;
                }
                "updated_at" => {
                    updated_at = versions::updated_at_column(kind, value, checker);
                    continue;
                }
                _ => {}
            }
            match spec.fields.iter().position(|f| f.key == key.get_ref()) {
                Some(i) => {
                    given.insert(i);
                    fields[i] = fields::check(kind, &spec.fields[i], value, checker);
                }
                None => checker.error_at(
                    key.span(),
                    &format!(
                        "map.{kind}: unknown field `{}`, expected {}, `when`, `key` or `updated_at`",
                        key.get_ref(),
                        spec.fields
                            .iter()
                            .map(|f| format!("`{}`", f.key))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ),
            }
        }
        for (i, field) in spec.fields.iter().enumerate() {
            if field.required && !given.contains(&i) {
                checker.error_at(span.clone(), &format!("map.{kind} needs `{}`", field.key));
            }
        }
        versions::check_keyed(kind, &natural_key, updated_at, span, checker);
        Mapping {
            spec,
            fields,
            when,
            key: natural_key,
            updated_at,
            key_scope: String::new(),
        }
    }
}

/// One record of a described kind, as a row gives it.
#[derive(Debug, Clone, PartialEq)]
pub struct CareRecord {
    pub kind: Kind,
    /// In the spec's field order.
    pub values: Vec<Option<CompactString>>,
    /// The feed's name and the values of its `key` columns, joined; `None`
    /// without a key, or when a key column is empty (the row is then a
    /// record of its own).
    pub natural_key: Option<String>,
    /// The row's own time, from `updated_at`.
    pub updated_at: Option<CompactString>,
}

/// The record a row gives, or `None` when the `when` column is empty or a
/// required field has no value there (a row may carry an alert, say, only
/// in some rows).
pub fn map(mapping: &Mapping, row: &Row) -> Option<CareRecord> {
    if let Some(column) = mapping.when
        && row.values[column].is_empty()
    {
        return None;
    }
    let values: Vec<Option<CompactString>> = mapping
        .fields
        .iter()
        .map(|f| f.as_ref().and_then(|f| f.value(row)))
        .collect();
    let complete = mapping
        .spec
        .fields
        .iter()
        .zip(&values)
        .all(|(spec, value)| !spec.required || value.is_some());
    complete.then(|| CareRecord {
        kind: mapping.spec.kind,
        values,
        natural_key: versions::natural_key(&mapping.key_scope, &mapping.key, row),
        updated_at: mapping
            .updated_at
            .and_then(|c| fields::stored_text(&row.values[c])),
    })
}

/// The statements a kind is written with, made once per file rather than
/// once per record.
struct Statements {
    insert: String,
    versions: versions::Statements,
}

impl Statements {
    fn of(spec: &Spec) -> Statements {
        Statements {
            insert: spec.insert_sql(),
            versions: versions::Statements::of(spec.table),
        }
    }
}

/// Writes one file's described records.
pub struct Writer<'c> {
    conn: &'c Connection,
    file_id: i64,
    source: String,
    statements: std::collections::HashMap<Kind, Statements>,
}

impl<'c> Writer<'c> {
    pub fn new(conn: &'c Connection, file_id: i64, source: &str) -> Writer<'c> {
        Writer {
            conn,
            file_id,
            source: source.to_string(),
            statements: std::collections::HashMap::new(),
        }
    }

    /// Writes `record` from `line`; one about a person needs its `detail_id`.
    pub fn write(&mut self, record: &CareRecord, detail_id: Option<i64>, line: u64) -> Result<u64> {
        let spec = record.kind.spec().expect("a described kind");
        // Bound as borrowed text: nothing is copied for the statement.
        let owner = if spec.about_person {
            match detail_id {
                Some(id) => ToSqlOutput::Owned(SqlValue::Integer(id)),
                None => return Ok(0),
            }
        } else {
            text(Some(&self.source))
        };
        let mut values = vec![
            owner,
            ToSqlOutput::Owned(SqlValue::Integer(self.file_id)),
            ToSqlOutput::Owned(SqlValue::Integer(line as i64)),
        ];
        if spec.about_person {
            values.extend([
                text(record.natural_key.as_deref()),
                text(record.updated_at.as_deref()),
            ]);
        }
        values.extend(record.values.iter().map(|v| text(v.as_deref())));
        let sql = self
            .statements
            .entry(record.kind)
            .or_insert_with(|| Statements::of(spec));
        self.conn
            .prepare_cached(&sql.insert)?
            .execute(params_from_iter(values))?;
        if let (Some(detail_id), Some(key)) = (detail_id, &record.natural_key)
            && spec.about_person
        {
            let id = self.conn.last_insert_rowid();
            sql.versions
                .version(self.conn, detail_id, key, record.updated_at.as_deref(), id)?;
        }
        Ok(1)
    }
}

/// Text bound to a statement without being copied.
fn text(value: Option<&str>) -> ToSqlOutput<'_> {
    match value {
        Some(text) => ToSqlOutput::Borrowed(ValueRef::Text(text.as_bytes())),
        None => ToSqlOutput::Owned(SqlValue::Null),
    }
}

/// A described record as the ledger holds it.
#[derive(Debug, Clone)]
pub struct StoredCare {
    pub kind: Kind,
    /// This version's row.
    pub id: i64,
    /// The record's identity across its versions: its first version's id.
    pub record_id: i64,
    /// The version that replaced this one, if one has.
    pub superseded_by: Option<i64>,
    /// The service user's detail, for a kind about a person.
    pub detail_id: Option<i64>,
    /// The partner whose file it came from.
    pub partner: String,
    pub file_id: i64,
    pub line: u64,
    pub values: Vec<Option<String>>,
}

impl StoredCare {
    /// The value of the field the config calls `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        let spec = self.kind.spec()?;
        let i = spec.fields.iter().position(|f| f.key == key)?;
        self.values[i].as_deref()
    }
}

fn read_rows<E: From<LedgerError>>(
    conn: &Connection,
    spec: &Spec,
    filter: &str,
    param: i64,
    each: &mut dyn FnMut(StoredCare) -> std::result::Result<(), E>,
) -> std::result::Result<(), E> {
    let read = |e: rusqlite::Error| E::from(LedgerError::from(e));
    let mut statement = conn
        .prepare_cached(&spec.select_sql(filter))
        .map_err(read)?;
    let mut rows = statement.query([param]).map_err(read)?;
    while let Some(row) = rows.next().map_err(read)? {
        let stored = (|| -> rusqlite::Result<StoredCare> {
            Ok(StoredCare {
                kind: spec.kind,
                id: row.get(0)?,
                detail_id: row.get(1)?,
                record_id: row.get(2)?,
                superseded_by: row.get(3)?,
                file_id: row.get(4)?,
                line: row.get::<_, i64>(5)? as u64,
                partner: row.get(6)?,
                values: (0..spec.columns.len())
                    .map(|i| row.get::<_, Option<String>>(7 + i))
                    .collect::<rusqlite::Result<_>>()?,
            })
        })()
        .map_err(read)?;
        each(stored)?;
    }
    Ok(())
}

/// The records of `spec`'s kind that the file wrote (staff: that it last
/// wrote), in the order written: current versions only (a version replaced
/// since goes out with the file that replaced it).
pub fn written_by<E: From<LedgerError>>(
    conn: &Connection,
    spec: &Spec,
    file_id: i64,
    each: &mut dyn FnMut(StoredCare) -> std::result::Result<(), E>,
) -> std::result::Result<(), E> {
    let filter = if spec.about_person {
        "t.file_id = ?1 AND t.superseded_by IS NULL"
    } else {
        "t.file_id = ?1"
    };
    read_rows(conn, spec, filter, file_id, each)
}

/// The records of `spec`'s kind about a service user's detail, every
/// version.
pub fn about_detail(conn: &Connection, spec: &Spec, detail_id: i64) -> Result<Vec<StoredCare>> {
    let mut found = Vec::new();
    read_rows::<LedgerError>(conn, spec, "t.detail_id = ?1", detail_id, &mut |r| {
        found.push(r);
        Ok(())
    })?;
    Ok(found)
}
