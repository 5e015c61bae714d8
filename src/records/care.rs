//! The record kinds that are their fields and no more (staff, care record
//! entries, care transactions, alerts, red bags): each kind's module gives
//! a [`Spec`], and this module maps, writes and reads any of them the same
//! way. A field is filled as `fields` describes; the ledger keeps one row
//! per record in the kind's own table, with the file and line it came from.

use std::collections::BTreeSet;

use rusqlite::{Connection, params_from_iter, types::Value as SqlValue};
use toml::Spanned;

use super::fields::{self, Field, FieldSpec, RawField, RawFields};
use super::{Kind, MappingChecker};
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
    /// a staff member is one row per (source, `fields[0]`), updated by later files.
    pub about_person: bool,
}

impl Spec {
    fn insert_sql(&self) -> String {
        let columns = self.columns.join(", ");
        let marks = vec!["?"; self.columns.len() + 3].join(", ");
        if self.about_person {
            format!(
                "INSERT INTO {} (detail_id, file_id, line, {columns}) VALUES ({marks})",
                self.table
            )
        } else {
            let updates: Vec<String> = self.columns[1..]
                .iter()
                .chain(&["file_id", "line"])
                .map(|c| format!("{c} = excluded.{c}"))
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

    fn select_sql(&self, filter: &str) -> String {
        let owner = if self.about_person {
            "detail_id"
        } else {
            "NULL"
        };
        format!(
            "SELECT id, {owner}, file_id, line, {} FROM {} WHERE {filter} ORDER BY id",
            self.columns.join(", "),
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
        for (key, value) in raw.into_inner().0 {
            if key.get_ref() == "when" {
                when = when_column(kind, value, checker);
                continue;
            }
            match spec.fields.iter().position(|f| f.key == key.get_ref()) {
                Some(i) => {
                    given.insert(i);
                    fields[i] = fields::check(kind, &spec.fields[i], value, checker);
                }
                None => checker.error_at(
                    key.span(),
                    &format!(
                        "map.{kind}: unknown field `{}`, expected {} or `when`",
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
        Mapping { spec, fields, when }
    }
}

/// The column `when` names, which any column may be.
fn when_column(
    kind: &str,
    raw: Spanned<RawField>,
    checker: &mut dyn MappingChecker,
) -> Option<usize> {
    let span = raw.span();
    match raw.into_inner() {
        RawField::Column(name) => checker.declared(kind, "when", &Spanned::new(span, name)),
        RawField::Table(_) => {
            checker.error_at(span, &format!("map.{kind}: `when` names one column"));
            None
        }
    }
}

/// One record of a described kind, as a row gives it.
#[derive(Debug, Clone, PartialEq)]
pub struct CareRecord {
    pub kind: Kind,
    /// In the spec's field order.
    pub values: Vec<Option<String>>,
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
    let values: Vec<Option<String>> = mapping
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
    complete.then_some(CareRecord {
        kind: mapping.spec.kind,
        values,
    })
}

/// Writes one file's described records.
pub struct Writer<'c> {
    conn: &'c Connection,
    file_id: i64,
    source: String,
}

impl<'c> Writer<'c> {
    pub fn new(conn: &'c Connection, file_id: i64, source: &str) -> Writer<'c> {
        Writer {
            conn,
            file_id,
            source: source.to_string(),
        }
    }

    /// Writes `record` from `line`; one about a person needs its `detail_id`.
    pub fn write(&mut self, record: &CareRecord, detail_id: Option<i64>, line: u64) -> Result<u64> {
        let spec = record.kind.spec().expect("a described kind");
        let owner = if spec.about_person {
            match detail_id {
                Some(id) => SqlValue::Integer(id),
                None => return Ok(0),
            }
        } else {
            SqlValue::Text(self.source.clone())
        };
        let values = [
            owner,
            SqlValue::Integer(self.file_id),
            SqlValue::Integer(line as i64),
        ]
        .into_iter()
        .chain(record.values.iter().map(|v| match v {
            Some(text) => SqlValue::Text(text.clone()),
            None => SqlValue::Null,
        }));
        self.conn
            .prepare_cached(&spec.insert_sql())?
            .execute(params_from_iter(values))?;
        Ok(1)
    }
}

/// A described record as the ledger holds it.
#[derive(Debug, Clone)]
pub struct StoredCare {
    pub kind: Kind,
    pub id: i64,
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
    partner: &dyn Fn(i64) -> String,
    each: &mut dyn FnMut(StoredCare) -> std::result::Result<(), E>,
) -> std::result::Result<(), E> {
    let read = |e: rusqlite::Error| E::from(LedgerError::from(e));
    let mut statement = conn
        .prepare_cached(&spec.select_sql(filter))
        .map_err(read)?;
    let mut rows = statement.query([param]).map_err(read)?;
    while let Some(row) = rows.next().map_err(read)? {
        let stored = (|| -> rusqlite::Result<StoredCare> {
            let file_id: i64 = row.get(2)?;
            Ok(StoredCare {
                kind: spec.kind,
                id: row.get(0)?,
                detail_id: row.get(1)?,
                partner: partner(file_id),
                file_id,
                line: row.get::<_, i64>(3)? as u64,
                values: (0..spec.columns.len())
                    .map(|i| row.get::<_, Option<String>>(4 + i))
                    .collect::<rusqlite::Result<_>>()?,
            })
        })()
        .map_err(read)?;
        each(stored)?;
    }
    Ok(())
}

/// The records of `spec`'s kind that the file wrote (staff: that it last
/// wrote), in the order written.
pub fn written_by<E: From<LedgerError>>(
    conn: &Connection,
    spec: &Spec,
    file_id: i64,
    partner: &str,
    each: &mut dyn FnMut(StoredCare) -> std::result::Result<(), E>,
) -> std::result::Result<(), E> {
    read_rows(
        conn,
        spec,
        "file_id = ?1",
        file_id,
        &|_| partner.to_string(),
        each,
    )
}

/// The records of `spec`'s kind about a service user's detail.
pub fn about_detail(conn: &Connection, spec: &Spec, detail_id: i64) -> Result<Vec<StoredCare>> {
    let mut found = Vec::new();
    let partner_of = |file_id: i64| -> String {
        conn.query_row("SELECT partner FROM files WHERE id = ?1", [file_id], |r| {
            r.get(0)
        })
        .unwrap_or_default()
    };
    read_rows::<LedgerError>(
        conn,
        spec,
        "detail_id = ?1",
        detail_id,
        &partner_of,
        &mut |r| {
            found.push(r);
            Ok(())
        },
    )?;
    Ok(found)
}
