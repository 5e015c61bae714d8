//! Versions of a record about a person: a feed names the columns that say
//! "the same record" (`key`) and, optionally, the column holding each row's
//! own time (`updated_at`). A row whose key matches a record the person
//! already has from the same feed is a new version of it; the one with the
//! later time is current, whatever order the files came in, and every
//! version keeps its row, file and line (migrations 0014 and 0017).

use std::ops::Range;

use compact_str::CompactString;
use rusqlite::{Connection, OptionalExtension};
use toml::Spanned;

use super::fields::{self, RawField};
use super::{Expect, MappingChecker};
use crate::ledger::Result;
use crate::validate::Row;

/// The columns of a natural key: `key = ["Alert ID"]`.
pub fn key_columns(
    kind: &str,
    raw: Spanned<RawField>,
    checker: &mut dyn MappingChecker,
) -> Vec<usize> {
    let span = raw.span();
    let names = match raw.into_inner() {
        RawField::Columns(names) if !names.is_empty() => names,
        _ => {
            checker.error_at(
                span,
                &format!("map.{kind}: `key` is a list of column names, `[\"Event ID\"]`"),
            );
            return Vec::new();
        }
    };
    names
        .into_iter()
        .filter_map(|name| checker.declared(kind, "key", &Spanned::new(span.clone(), name)))
        .collect()
}

/// The column of `updated_at = "Updated"`: a date or datetime column.
pub fn updated_at_column(
    kind: &str,
    raw: Spanned<RawField>,
    checker: &mut dyn MappingChecker,
) -> Option<usize> {
    let span = raw.span();
    let index = fields::one_column(kind, "updated_at", raw, checker)?;
    if !checker.holds(index, Expect::When) {
        checker.error_at(
            span,
            &format!("map.{kind}: `updated_at` names a date or datetime column"),
        );
    }
    Some(index)
}

/// `updated_at` orders versions, which only a `key` makes: reported at
/// `span` when it comes alone.
pub fn check_keyed(
    kind: &str,
    key: &[usize],
    updated_at: Option<usize>,
    span: Range<usize>,
    checker: &mut dyn MappingChecker,
) {
    if updated_at.is_some() && key.is_empty() {
        checker.error_at(
            span,
            &format!(
                "map.{kind}: `updated_at` orders the versions of a record: give its `key` too"
            ),
        );
    }
}

/// The natural key of `row`: the feed's name (`scope`) and the values of its
/// key columns, joined. `None` without key columns, or when one is empty
/// (the row is then a record of its own).
pub fn natural_key(scope: &str, columns: &[usize], row: &Row) -> Option<String> {
    if columns.is_empty() {
        return None;
    }
    let values: Option<Vec<CompactString>> = columns
        .iter()
        .map(|&c| fields::stored_text(&row.values[c]))
        .collect();
    // A unit separator cannot be typed into a field by mistake.
    values.map(|values| {
        std::iter::once(scope)
            .chain(values.iter().map(CompactString::as_str))
            .collect::<Vec<_>>()
            .join("\u{1f}")
    })
}

/// The statements that version a table's rows, made once per file rather
/// than once per record.
#[derive(Debug)]
pub struct Statements {
    /// The current version of a record the person has with a key.
    current: String,
    supersede: String,
    record_id: String,
}

impl Statements {
    /// For `table`, which has `detail_id`, `natural_key`, `updated_at`,
    /// `record_id` and `superseded_by` columns.
    pub fn of(table: &str) -> Statements {
        Statements {
            current: format!(
                "SELECT id, coalesce(record_id, id), updated_at FROM {table}
                 WHERE detail_id = ?1 AND natural_key = ?2 AND superseded_by IS NULL AND id != ?3"
            ),
            supersede: format!("UPDATE {table} SET superseded_by = ?2 WHERE id = ?1"),
            record_id: format!("UPDATE {table} SET record_id = ?2 WHERE id = ?1"),
        }
    }

    /// Makes the row just written (`id`) a version of the record the person
    /// has with the same key, if any: the current one is the later by
    /// `updated_at` (on a tie, or without times, the one written last).
    pub fn version(
        &self,
        conn: &Connection,
        detail_id: i64,
        key: &str,
        updated_at: Option<&str>,
        id: i64,
    ) -> Result<()> {
        let current: Option<(i64, i64, Option<String>)> = conn
            .prepare_cached(&self.current)?
            .query_row(rusqlite::params![detail_id, key, id], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .optional()?;
        let Some((current, record_id, current_at)) = current else {
            return Ok(());
        };
        let newer = match (updated_at, current_at.as_deref()) {
            (Some(new), Some(old)) => new >= old,
            _ => true,
        };
        let (superseded, by) = if newer { (current, id) } else { (id, current) };
        conn.prepare_cached(&self.supersede)?
            .execute([superseded, by])?;
        conn.prepare_cached(&self.record_id)?
            .execute([id, record_id])?;
        Ok(())
    }
}
