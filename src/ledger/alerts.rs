//! Alerts as the ledger keeps them, and what checking a feed's expectations
//! asks of its files.

use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, params};
use serde::Serialize;

use super::*;

/// One alert event: raised or cleared.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AlertRow {
    pub id: i64,
    pub at: String,
    pub feed: String,
    /// `file_missing`, `row_count` or `quarantine_rate`.
    pub kind: String,
    /// `raised` or `cleared`.
    pub event: String,
    pub detail: serde_json::Value,
}

fn alert_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<AlertRow> {
    let detail: String = r.get(5)?;
    Ok(AlertRow {
        id: r.get(0)?,
        at: r.get(1)?,
        feed: r.get(2)?,
        kind: r.get(3)?,
        event: r.get(4)?,
        detail: serde_json::from_str(&detail).unwrap_or(serde_json::Value::Null),
    })
}

impl Ledger {
    /// Records an alert raised or cleared at `at`.
    pub fn alert(
        &mut self,
        at: DateTime<Utc>,
        feed: &str,
        kind: &str,
        event: &str,
        detail: &serde_json::Value,
    ) -> Result<AlertRow> {
        let at = timestamp(at);
        self.conn
            .prepare_cached(
                "INSERT INTO alert_events (at, feed, kind, event, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![at, feed, kind, event, detail.to_string()])?;
        Ok(AlertRow {
            id: self.conn.last_insert_rowid(),
            at,
            feed: feed.to_string(),
            kind: kind.to_string(),
            event: event.to_string(),
            detail: detail.clone(),
        })
    }

    /// The alerts raised and not cleared, oldest first.
    pub fn active_alerts(&self) -> Result<Vec<AlertRow>> {
        let mut stmt = self.conn.prepare(
            "SELECT id, at, feed, kind, event, detail FROM alert_events a
             WHERE event = 'raised'
               AND id = (SELECT max(id) FROM alert_events b WHERE b.feed = a.feed AND b.kind = a.kind)
             ORDER BY id",
        )?;
        let rows = stmt.query_map([], alert_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The newest alert events, newest first.
    pub fn alert_history(&self, limit: usize) -> Result<Vec<AlertRow>> {
        let mut stmt = self.conn.prepare(
            "SELECT id, at, feed, kind, event, detail FROM alert_events ORDER BY id DESC LIMIT ?1",
        )?;
        let rows = stmt.query_map([limit as i64], alert_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The first file of `feed` received after `after` and no later than
    /// `until`: its id and time.
    pub fn first_file_between(
        &self,
        feed: &str,
        after: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Option<(i64, String)>> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT id, received_at FROM files
                 WHERE feed = ?1 AND received_at > ?2 AND received_at <= ?3
                 ORDER BY received_at LIMIT 1",
            )?
            .query_row(params![feed, timestamp(after), timestamp(until)], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()?)
    }

    /// The newest `n` settled (or only loaded) files of `feed`, newest
    /// first: id, state and rows loaded.
    pub fn newest_settled(
        &self,
        feed: &str,
        n: usize,
        loaded_only: bool,
    ) -> Result<Vec<(i64, FileState, u64)>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, state, coalesce(rows_loaded, 0) FROM files
             WHERE feed = ?1 AND state <> 'received' AND (NOT ?3 OR state = 'loaded')
             ORDER BY received_at DESC, id DESC LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![feed, n as i64, loaded_only], |r| {
            let state: String = r.get(1)?;
            Ok((
                r.get(0)?,
                state.parse().unwrap_or(FileState::Received),
                r.get(2)?,
            ))
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}
