//! Files: recorded as received, queued, settled, replayed.

use std::collections::HashMap;

use rusqlite::{OptionalExtension, TransactionBehavior, params};

use super::*;

pub(super) fn mark_sender_removed(
    tx: &rusqlite::Transaction<'_>,
    id: i64,
    now: &str,
) -> Result<()> {
    let updated = tx
        .prepare_cached(
            "UPDATE files SET sender_removed_at = ?2 WHERE id = ?1 AND sender_removed_at IS NULL",
        )?
        .execute(params![id, now])?;
    if updated > 0 {
        tx.prepare_cached(
            "INSERT INTO file_events (file_id, at, event) VALUES (?1, ?2, 'sender_copy_removed')",
        )?
        .execute(params![id, now])?;
    }
    Ok(())
}

impl Ledger {
    /// Records files that are now durable in the spool, in one transaction.
    pub fn record_received(&mut self, files: &[NewFile]) -> Result<Vec<i64>> {
        let now = self.now();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut ids = Vec::with_capacity(files.len());
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO files (source, partner, feed, name, spool_name, sha256, size, state,
                                    received_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'received', ?8, ?8)",
            )?;
            let mut event = tx.prepare_cached(
                "INSERT INTO file_events (file_id, at, event, detail) VALUES (?1, ?2, 'received', ?3)",
            )?;
            for f in files {
                insert.execute(params![
                    f.source,
                    f.partner,
                    f.feed,
                    f.name,
                    f.spool_name,
                    f.sha256,
                    f.size,
                    now
                ])?;
                let id = tx.last_insert_rowid();
                let detail = serde_json::json!({
                    "source": f.source,
                    "feed": f.feed,
                    "size": f.size,
                    "sha256": f.sha256,
                });
                event.execute(params![id, now, detail.to_string()])?;
                if f.handed_over {
                    mark_sender_removed(&tx, id, &now)?;
                }
                if let Some(taken) = &f.taken_from {
                    tx.prepare_cached(
                        "INSERT OR IGNORE INTO remote_taken (source, path, size, mtime, file_id, taken_at)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    )?
                    .execute(params![f.source, taken.path, taken.size, taken.mtime, id, now])?;
                }
                if let Some(body) = &f.held {
                    tx.prepare_cached("INSERT INTO held_payloads (file_id, body) VALUES (?1, ?2)")?
                        .execute(params![id, body])?;
                }
                // Every file received is audited: an upload to the embedded
                // server with the address it came from, any other with its
                // source (never its name: a sender's name may hold an
                // identifier).
                let event = match &f.uploaded_from {
                    Some(remote) => AuditEvent {
                        partner: Some(&f.partner),
                        remote: Some(remote),
                        action: "upload",
                        file_id: Some(id),
                        detail: None,
                    },
                    None => AuditEvent {
                        partner: Some(&f.partner),
                        remote: None,
                        action: "received",
                        file_id: Some(id),
                        detail: Some(serde_json::json!({ "source": f.source })),
                    },
                };
                append_audit(&tx, &now, &event)?;
                ids.push(id);
            }
        }
        tx.commit()?;
        Ok(ids)
    }

    /// The bytes the ledger holds of this file (a small file's, kept in the
    /// ledger instead of the spool).
    pub fn held_body(&self, id: i64) -> Result<Option<Arc<[u8]>>> {
        let body = self
            .conn
            .prepare_cached("SELECT body FROM held_payloads WHERE file_id = ?1")?
            .query_row([id], |r| r.get::<_, Vec<u8>>(0))
            .optional()?;
        Ok(body.map(Arc::from))
    }

    /// [`Ledger::held_body`] of each of these files that has one, by file id.
    pub fn held_bodies(&self, ids: &[i64]) -> Result<HashMap<i64, Arc<[u8]>>> {
        let mut bodies = HashMap::new();
        for &id in ids {
            if let Some(body) = self.held_body(id)? {
                bodies.insert(id, body);
            }
        }
        Ok(bodies)
    }

    /// Whether the ledger holds this file's bytes.
    pub fn holds_payload(&self, id: i64) -> Result<bool> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT 1 FROM held_payloads WHERE file_id = ?1")?;
        Ok(stmt.exists([id])?)
    }

    /// Files whose bytes the ledger holds although they were quarantined:
    /// a stop came between the commit and the copy into `quarantine/`.
    pub fn held_and_quarantined(&self) -> Result<Vec<FileRow>> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {FILE_COLUMNS} FROM files
             WHERE state = 'quarantined' AND id IN (SELECT file_id FROM held_payloads)
             ORDER BY id"
        ))?;
        let rows = stmt.query_map([], file_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The spool now has this file's bytes, durably: the ledger lets them go.
    pub fn release_held(&self, id: i64) -> Result<()> {
        self.conn
            .prepare_cached("DELETE FROM held_payloads WHERE file_id = ?1")?
            .execute([id])?;
        Ok(())
    }

    /// Notes that the sender's copies of these files were removed.
    pub fn record_sender_removed(&mut self, ids: &[i64]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let now = self.now();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        for &id in ids {
            mark_sender_removed(&tx, id, &now)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// A file already received from this sender path whose sender copy was
    /// never removed (the daemon stopped in between): it must not be taken again.
    pub fn received_but_not_removed(
        &self,
        source: &str,
        name: &str,
        size: u64,
        sha256: &str,
    ) -> Result<Option<i64>> {
        let mut stmt = self.conn.prepare_cached(RECEIVED_NOT_REMOVED)?;
        let ids = stmt.query_map(params![source, name, size, sha256], |r| r.get(0))?;
        latest(ids)
    }

    /// Files waiting to be processed, oldest first.
    pub fn pending(&self, limit: usize) -> Result<Vec<FileRow>> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {FILE_COLUMNS} FROM files WHERE state = 'received'
             ORDER BY id LIMIT ?1"
        ))?;
        let rows = stmt.query_map([limit as i64], file_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    pub fn file(&self, id: i64) -> Result<FileRow> {
        self.conn
            .query_row(
                &format!("SELECT {FILE_COLUMNS} FROM files WHERE id = ?1"),
                [id],
                file_row,
            )
            .optional()?
            .ok_or(LedgerError::NotFound(id))
    }

    pub fn file_by_spool_name(&self, spool_name: &str) -> Result<Option<FileRow>> {
        Ok(self
            .conn
            .query_row(
                &format!("SELECT {FILE_COLUMNS} FROM files WHERE spool_name = ?1"),
                [spool_name],
                file_row,
            )
            .optional()?)
    }

    pub fn files(&self, filter: &FileFilter) -> Result<Vec<FileRow>> {
        let mut stmt = self.conn.prepare(&format!(
            "SELECT {FILE_COLUMNS} FROM files
             WHERE (?1 IS NULL OR state = ?1) AND (?2 IS NULL OR feed = ?2)
             ORDER BY id"
        ))?;
        let rows = stmt.query_map(
            params![filter.state.map(FileState::as_str), filter.feed],
            file_row,
        )?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    pub fn events(&self, id: i64) -> Result<Vec<Event>> {
        let mut stmt = self
            .conn
            .prepare("SELECT at, event, detail FROM file_events WHERE file_id = ?1 ORDER BY id")?;
        let rows = stmt.query_map([id], |r| {
            let detail: Option<String> = r.get(2)?;
            Ok(Event {
                at: r.get(0)?,
                event: r.get(1)?,
                detail: detail.and_then(|d| serde_json::from_str(&d).ok()),
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Problems found by the file's latest processing attempt.
    pub fn problems(&self, id: i64) -> Result<Vec<StoredProblem>> {
        let mut stmt = self.conn.prepare(
            "SELECT line, column_name, field, code, message FROM file_problems
             WHERE file_id = ?1 AND attempt = (SELECT attempts FROM files WHERE id = ?1)
             ORDER BY seq",
        )?;
        let rows = stmt.query_map([id], |r| {
            Ok(StoredProblem {
                line: r.get(0)?,
                column: r.get(1)?,
                field: r.get(2)?,
                code: r.get(3)?,
                message: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// An earlier file of the same feed with the same content that was loaded.
    pub fn loaded_copy(&self, feed: &str, sha256: &str, id: i64) -> Result<Option<i64>> {
        loaded_copy(&self.conn, feed, sha256, id)
    }

    /// Notes a failed attempt at processing a file (its transaction was
    /// rolled back); returns the failed attempts since it was last queued.
    pub fn processing_failed(&mut self, id: i64, error: &str) -> Result<u32> {
        let now = self.now();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute(
            "INSERT INTO file_events (file_id, at, event, detail) VALUES (?1, ?2, 'processing_failed', ?3)",
            params![id, now, serde_json::json!({ "error": error }).to_string()],
        )?;
        let failures: u32 = tx.query_row(
            "SELECT count(*) FROM file_events
             WHERE file_id = ?1 AND event = 'processing_failed'
               AND id > (SELECT coalesce(max(id), 0) FROM file_events
                         WHERE file_id = ?1 AND event IN ('received', 'replayed'))",
            [id],
            |r| r.get(0),
        )?;
        tx.commit()?;
        Ok(failures)
    }

    /// Puts a quarantined file back in the queue.
    pub fn replay(&mut self, id: i64) -> Result<()> {
        let now = self.now();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let found: Option<(String, Option<String>)> = tx
            .query_row(
                "SELECT state, payload_purged_at FROM files WHERE id = ?1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        if let Some((_, Some(at))) = found {
            return Err(LedgerError::Purged { id, at });
        }
        let state: FileState = found
            .map(|(state, _)| state)
            .ok_or(LedgerError::NotFound(id))?
            .parse()
            .map_err(|_| LedgerError::NotFound(id))?;
        if state != FileState::Quarantined {
            return Err(LedgerError::WrongState {
                id,
                state,
                expected: FileState::Quarantined,
            });
        }
        tx.execute(
            "UPDATE files SET state = 'received', reason = NULL, updated_at = ?2 WHERE id = ?1",
            params![id, now],
        )?;
        tx.execute(
            "INSERT INTO file_events (file_id, at, event) VALUES (?1, ?2, 'replayed')",
            params![id, now],
        )?;
        tx.commit()?;
        Ok(())
    }
}

/// Files from a sender not yet removed, by name and content. Picked in Rust
/// rather than by `ORDER BY id DESC LIMIT 1`: SQLite re-prepares a cached
/// statement of that shape on every use, which cost more than the look-up.
pub(super) const RECEIVED_NOT_REMOVED: &str = "SELECT id FROM files
     WHERE source = ?1 AND name = ?2 AND size = ?3 AND sha256 = ?4
       AND sender_removed_at IS NULL";

/// The newest of a few ids.
fn latest(ids: impl Iterator<Item = rusqlite::Result<i64>>) -> Result<Option<i64>> {
    let mut newest = None;
    for id in ids {
        newest = newest.max(Some(id?));
    }
    Ok(newest)
}

impl Ledger {
    /// Settled files of `partners` (ids from `from_id`) that have no receipt
    /// yet, oldest first, at most `limit`.
    pub fn settled_without_receipt(
        &self,
        partners: &[&str],
        from_id: i64,
        limit: usize,
    ) -> Result<Vec<FileRow>> {
        let partners = serde_json::to_string(partners).expect("strings serialise");
        let mut stmt = self.conn.prepare(&format!(
            "SELECT {FILE_COLUMNS} FROM files
             WHERE id >= ?1 AND state <> 'received'
               AND partner IN (SELECT value FROM json_each(?2))
               AND NOT EXISTS (SELECT 1 FROM file_events e
                               WHERE e.file_id = files.id AND e.event = 'receipt_written')
             ORDER BY id LIMIT ?3"
        ))?;
        let rows = stmt.query_map(params![from_id, partners, limit as i64], file_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The oldest file not yet settled, or the next id to come: no file
    /// below it can still change state.
    pub fn settled_below(&self) -> Result<i64> {
        Ok(self.conn.query_row(
            "SELECT coalesce((SELECT min(id) FROM files WHERE state = 'received'),
                             (SELECT coalesce(max(id), 0) + 1 FROM files))",
            [],
            |r| r.get(0),
        )?)
    }

    /// The partner's files from `from_id` on whose receipt was written after
    /// `written_after` and is not yet delivered to `destination`, oldest
    /// first; with `gave_up_after`, also leaving out those whose last push
    /// gave up after it (tried again later). A push is a delivery event of
    /// the file, under a name ending in `.receipt.json`.
    pub fn receipt_pushes_due(
        &self,
        partner: &str,
        destination: &str,
        from_id: i64,
        written_after: DateTime<Utc>,
        gave_up_after: Option<DateTime<Utc>>,
        limit: usize,
    ) -> Result<Vec<FileRow>> {
        // With no waiting, a give-up "after" the end of time leaves none out.
        let gave_up_after = gave_up_after.map_or_else(|| "9999".to_string(), timestamp);
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {FILE_COLUMNS} FROM files
             WHERE id >= ?1 AND partner = ?2
               AND EXISTS (SELECT 1 FROM file_events e
                           WHERE e.file_id = files.id AND e.event = 'receipt_written' AND e.at > ?4)
               AND NOT EXISTS (SELECT 1 FROM delivery_events d
                               WHERE d.file_id = files.id AND d.destination = ?3
                                 AND d.name LIKE '%.receipt.json'
                                 AND (d.event = 'delivered' OR (d.event = 'gave_up' AND d.at > ?5)))
             ORDER BY id LIMIT ?6"
        ))?;
        let rows = stmt.query_map(
            params![
                from_id,
                partner,
                destination,
                timestamp(written_after),
                gave_up_after,
                limit as i64
            ],
            file_row,
        )?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Records in each file's history that its receipt was written, in one
    /// transaction.
    pub fn receipts_written(&mut self, written: &[(i64, serde_json::Value)]) -> Result<()> {
        if written.is_empty() {
            return Ok(());
        }
        let now = self.now();
        let tx = self.conn.transaction()?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO file_events (file_id, at, event, detail) VALUES (?1, ?2, 'receipt_written', ?3)",
            )?;
            for (file_id, detail) in written {
                insert.execute(params![file_id, now, detail.to_string()])?;
            }
        }
        tx.commit()?;
        Ok(())
    }
}
