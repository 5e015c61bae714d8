//! Write transactions in which files are processed.

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::*;

/// A write transaction over several files; each file's records go into a
/// savepoint so one file's failure undoes only its own work.
pub struct Batch<'l> {
    tx: rusqlite::Transaction<'l>,
    clock: Arc<dyn Clock>,
}

impl Batch<'_> {
    /// The file's state as of this transaction (another process may have taken it).
    pub fn state(&self, id: i64) -> Result<FileState> {
        let state: String = self
            .tx
            .prepare_cached("SELECT state FROM files WHERE id = ?1")?
            .query_row([id], |r| r.get(0))
            .optional()?
            .ok_or(LedgerError::NotFound(id))?;
        state.parse().map_err(|_| LedgerError::NotFound(id))
    }

    /// An earlier file of the same feed with the same content that was loaded.
    pub fn loaded_copy(&self, feed: &str, sha256: &str, id: i64) -> Result<Option<i64>> {
        loaded_copy(&self.tx, feed, sha256, id)
    }

    /// The transaction's connection, for writing records outside a savepoint.
    pub fn connection(&self) -> &Connection {
        &self.tx
    }

    /// A savepoint for one file's records; dropped without `commit` it rolls back.
    pub fn savepoint(&mut self) -> Result<rusqlite::Savepoint<'_>> {
        Ok(self.tx.savepoint()?)
    }

    /// Writes the end of a processing attempt: state, counts, problems, event.
    pub fn finish(&mut self, id: i64, outcome: &Outcome) -> Result<()> {
        let now = timestamp(self.clock.now());
        let tx = &self.tx;
        tx.prepare_cached(
            "UPDATE files SET state = ?2, feed = COALESCE(?3, feed), reason = ?4, rows_read = ?5,
                              rows_loaded = ?6, records = ?7, duplicate_of = ?8, problems = ?9,
                              attempts = attempts + 1, updated_at = ?10
             WHERE id = ?1",
        )?
        .execute(params![
            id,
            outcome.state.as_str(),
            outcome.feed,
            outcome.reason,
            outcome.rows_read,
            outcome.rows_loaded,
            outcome.records,
            outcome.duplicate_of,
            outcome.problem_count,
            now,
        ])?;
        let attempt: i64 = tx
            .prepare_cached("SELECT attempts FROM files WHERE id = ?1")?
            .query_row([id], |r| r.get(0))?;
        let mut insert = tx.prepare_cached(
            "INSERT INTO file_problems (file_id, attempt, seq, line, column_name, field, code, message)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?;
        for (seq, p) in outcome.problems.iter().enumerate() {
            insert.execute(params![
                id,
                attempt,
                seq as i64,
                p.line,
                p.column,
                p.field.map(|f| f as i64),
                p.code.as_str(),
                p.message
            ])?;
        }
        tx.prepare_cached(
            "INSERT INTO file_events (file_id, at, event, detail) VALUES (?1, ?2, ?3, ?4)",
        )?
        .execute(params![
            id,
            now,
            outcome.state.as_str(),
            outcome.detail.to_string()
        ])?;
        Ok(())
    }

    pub fn commit(self) -> Result<()> {
        Ok(self.tx.commit()?)
    }
}

pub(super) fn loaded_copy(
    conn: &Connection,
    feed: &str,
    sha256: &str,
    id: i64,
) -> Result<Option<i64>> {
    let mut stmt = conn.prepare_cached(LOADED_COPIES)?;
    let mut first: Option<i64> = None;
    for copy in stmt.query_map(params![feed, sha256, id], |r| r.get(0))? {
        let copy = copy?;
        first = Some(first.map_or(copy, |f| f.min(copy)));
    }
    Ok(first)
}

/// Loaded files of a feed with the same content. The first is picked in
/// Rust rather than by `ORDER BY id LIMIT 1`: SQLite re-prepares a cached
/// statement of that shape on every use.
pub(super) const LOADED_COPIES: &str =
    "SELECT id FROM files WHERE feed = ?1 AND sha256 = ?2 AND state = 'loaded' AND id <> ?3";

impl Ledger {
    /// Starts a write transaction in which files are processed.
    pub fn begin(&mut self) -> Result<Batch<'_>> {
        Ok(Batch {
            tx: self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)?,
            clock: self.clock.clone(),
        })
    }
}
