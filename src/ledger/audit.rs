//! The audit trail: who did what from where, appended in a hash chain.

use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, TransactionBehavior, params};
use serde::Serialize;

use super::*;

/// Something a partner or an address did, for the audit trail. Never holds
/// patient identifiers.
#[derive(Debug, Clone, Default)]
pub struct AuditEvent<'a> {
    pub partner: Option<&'a str>,
    pub remote: Option<&'a str>,
    pub action: &'a str,
    pub file_id: Option<i64>,
    pub detail: Option<serde_json::Value>,
}

/// An audit event that waits in a queue before it is appended: owned, and
/// stamped with the time it happened rather than the time it is written.
#[derive(Debug, Clone)]
pub struct QueuedAuditEvent {
    pub at: DateTime<Utc>,
    pub partner: Option<String>,
    pub remote: Option<String>,
    pub action: String,
    pub file_id: Option<i64>,
    pub detail: Option<serde_json::Value>,
}

impl QueuedAuditEvent {
    pub fn new(at: DateTime<Utc>, event: &AuditEvent<'_>) -> QueuedAuditEvent {
        QueuedAuditEvent {
            at,
            partner: event.partner.map(str::to_string),
            remote: event.remote.map(str::to_string),
            action: event.action.to_string(),
            file_id: event.file_id,
            detail: event.detail.clone(),
        }
    }
}

/// An audit event as stored.
#[derive(Debug, Clone, Serialize)]
pub struct AuditRow {
    pub id: i64,
    pub at: String,
    pub partner: Option<String>,
    pub remote: Option<String>,
    pub action: String,
    pub file_id: Option<i64>,
    pub detail: Option<String>,
    pub prev_hash: String,
    pub hash: String,
}

impl AuditRow {
    /// Whether this row's hash matches its content and the given previous hash.
    pub fn verifies_after(&self, prev_hash: &str) -> bool {
        self.prev_hash == prev_hash
            && self.hash
                == audit_hash(
                    prev_hash,
                    &self.at,
                    self.partner.as_deref(),
                    self.remote.as_deref(),
                    &self.action,
                    self.file_id,
                    self.detail.as_deref(),
                )
    }
}

/// SHA-256 over the previous hash and every field, each length-prefixed so
/// no two different rows hash the same text.
fn audit_hash(
    prev: &str,
    at: &str,
    partner: Option<&str>,
    remote: Option<&str>,
    action: &str,
    file_id: Option<i64>,
    detail: Option<&str>,
) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    let file_id = file_id.map(|i| i.to_string());
    for field in [
        Some(prev),
        Some(at),
        partner,
        remote,
        Some(action),
        file_id.as_deref(),
        detail,
    ] {
        match field {
            Some(text) => {
                h.update((text.len() as u64).to_be_bytes());
                h.update(text.as_bytes());
            }
            None => h.update(u64::MAX.to_be_bytes()),
        }
    }
    crate::digest::hex(&h.finalize())
}

const AUDIT_ROWS: &str = "SELECT id, at, partner, remote, action, file_id, detail, prev_hash, hash
     FROM audit_events ORDER BY id";

fn audit_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<AuditRow> {
    Ok(AuditRow {
        id: r.get(0)?,
        at: r.get(1)?,
        partner: r.get(2)?,
        remote: r.get(3)?,
        action: r.get(4)?,
        file_id: r.get(5)?,
        detail: r.get(6)?,
        prev_hash: r.get(7)?,
        hash: r.get(8)?,
    })
}

/// Appends to the hash chain; the caller's transaction makes read-and-append
/// atomic. Returns the new row's id.
pub(super) fn append_audit(
    tx: &rusqlite::Transaction<'_>,
    at: &str,
    event: &AuditEvent<'_>,
) -> Result<i64> {
    let detail = event.detail.as_ref().map(|d| d.to_string());
    let prev: String = tx
        .prepare_cached("SELECT hash FROM audit_events ORDER BY id DESC LIMIT 1")?
        .query_row([], |r| r.get(0))
        .optional()?
        .unwrap_or_else(|| "0".repeat(64));
    let hash = audit_hash(
        &prev,
        at,
        event.partner,
        event.remote,
        event.action,
        event.file_id,
        detail.as_deref(),
    );
    tx.prepare_cached(
        "INSERT INTO audit_events (at, partner, remote, action, file_id, detail, prev_hash, hash)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        at,
        event.partner,
        event.remote,
        event.action,
        event.file_id,
        detail,
        prev,
        hash
    ])?;
    Ok(tx.last_insert_rowid())
}

impl Ledger {
    /// Appends an audit event, chained to the one before it; returns its id.
    pub fn audit(&mut self, event: &AuditEvent<'_>) -> Result<i64> {
        let now = timestamp(self.clock.now());
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let id = append_audit(&tx, &now, event)?;
        tx.commit()?;
        count_audited(event.action);
        Ok(id)
    }

    /// Appends queued audit events in one transaction, in queue order.
    pub fn audit_all(&mut self, events: &[QueuedAuditEvent]) -> Result<()> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        for e in events {
            append_audit(
                &tx,
                &timestamp(e.at),
                &AuditEvent {
                    partner: e.partner.as_deref(),
                    remote: e.remote.as_deref(),
                    action: &e.action,
                    file_id: e.file_id,
                    detail: e.detail.clone(),
                },
            )?;
        }
        tx.commit()?;
        for e in events {
            count_audited(&e.action);
        }
        Ok(())
    }

    /// Audit events, oldest first, and whether the hash chain is intact up to each.
    pub fn audit_events(&self) -> Result<Vec<AuditRow>> {
        let mut stmt = self.conn.prepare(AUDIT_ROWS)?;
        let rows = stmt.query_map([], audit_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The newest audit row: its id and hash.
    pub fn audit_head(&self) -> Result<Option<(i64, String)>> {
        Ok(self
            .conn
            .query_row(
                "SELECT id, hash FROM audit_events ORDER BY id DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?)
    }

    /// The id of the newest row with this action. Read from the newest row
    /// back, so it is quick when such a row is recent (checkpoints are).
    pub fn newest_audit_row_of(&self, action: &str) -> Result<Option<i64>> {
        Ok(self
            .conn
            .query_row(
                "SELECT id FROM audit_events WHERE action = ?1 ORDER BY id DESC LIMIT 1",
                [action],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// The stored hash of one audit row.
    pub fn audit_hash_of(&self, id: i64) -> Result<Option<String>> {
        Ok(self
            .conn
            .query_row("SELECT hash FROM audit_events WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .optional()?)
    }

    /// Calls `each` with every audit row, oldest first, without holding
    /// them all; stops at the first `false` or error.
    pub fn walk_audit<E: From<LedgerError>>(
        &self,
        mut each: impl FnMut(AuditRow) -> std::result::Result<bool, E>,
    ) -> std::result::Result<(), E> {
        let mut stmt = self.conn.prepare(AUDIT_ROWS).map_err(LedgerError::from)?;
        let mut rows = stmt.query([]).map_err(LedgerError::from)?;
        while let Some(r) = rows.next().map_err(LedgerError::from)? {
            if !each(audit_row(r).map_err(LedgerError::from)?)? {
                break;
            }
        }
        Ok(())
    }
}

fn count_audited(action: &str) {
    crate::metrics::METRICS
        .audit_events
        .get_or_create(&crate::metrics::ActionLabel {
            action: action.to_string(),
        })
        .inc();
}
