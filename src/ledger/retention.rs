//! Retention in the ledger: legal holds, what is past its days, and the
//! record that a payload or a file's records were purged. Each purge is a
//! transaction with its audit row.

use std::collections::BTreeMap;

use rusqlite::{OptionalExtension, TransactionBehavior, params};
use serde::Serialize;

use super::audit::append_audit;
use super::*;

/// What a legal hold covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldOn<'a> {
    /// One file: its payload, receipt and records.
    File(i64),
    /// Everything from and to a partner: its files, their receipts and
    /// records, and the exports made for it.
    Partner(&'a str),
}

#[derive(Debug, Clone, Serialize)]
pub struct Hold {
    pub id: i64,
    pub file_id: Option<i64>,
    pub partner: Option<String>,
    pub reason: String,
    pub placed_by: String,
    pub placed_at: String,
    pub released_by: Option<String>,
    pub released_at: Option<String>,
    pub release_reason: Option<String>,
}

/// A settled file whose payload is still in the spool.
#[derive(Debug, Clone)]
pub struct KeptPayload {
    pub id: i64,
    pub partner: String,
    pub feed: Option<String>,
    /// The sender's name, which the receipt's name is made from.
    pub name: String,
    pub spool_name: String,
    pub size: u64,
    pub updated_at: String,
    /// A legal hold in force covers it.
    pub held: bool,
    /// A route has still to forward it.
    pub forwarding: bool,
}

/// A complete export whose folder is still in its consumer's outbox.
#[derive(Debug, Clone)]
pub struct KeptExport {
    pub id: i64,
    pub consumer: String,
    pub export_id: String,
    pub ended_at: String,
    pub held: bool,
    /// A push to a destination is still pending.
    pub delivering: bool,
}

/// A loaded file whose records are still in the ledger.
#[derive(Debug, Clone, Copy)]
pub struct KeptRecords {
    pub id: i64,
    pub records: u64,
    pub held: bool,
}

/// Counts by (week, partner, feed, measure), as `records::trend` makes them.
pub type Counts = BTreeMap<(String, String, String, String), u64>;

/// Counts the records of the files a condition on `f` (the files table)
/// selects, such as `f.id IN (SELECT id FROM temp.purge_scope)`.
pub type Measure<'a> = &'a dyn Fn(&rusqlite::Connection, &str) -> Result<Counts>;

const HOLD_COLUMNS: &str = "id, file_id, partner, reason, placed_by, placed_at, released_by, \
     released_at, release_reason";

fn hold_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Hold> {
    Ok(Hold {
        id: r.get(0)?,
        file_id: r.get(1)?,
        partner: r.get(2)?,
        reason: r.get(3)?,
        placed_by: r.get(4)?,
        placed_at: r.get(5)?,
        released_by: r.get(6)?,
        released_at: r.get(7)?,
        release_reason: r.get(8)?,
    })
}

/// Whether a hold in force covers the file row in scope as `files`.
const FILE_HELD: &str = "EXISTS (SELECT 1 FROM legal_holds h WHERE h.released_at IS NULL
     AND (h.file_id = files.id OR h.partner = files.partner))";

/// Record tables whose rows are wholly one file's, by `file_id`.
const RECORD_TABLES: [&str; 7] = [
    "observation_sets",
    "care_record_entries",
    "care_transactions",
    "alerts",
    "red_bags",
    "service_user_versions",
    "staff",
];

/// Tables whose rows name a service user by `detail_id` (a service user's
/// observation sets by their lists, which an index serves).
const DETAIL_TABLES: [&str; 6] = [
    "observation_set_lists",
    "care_record_entries",
    "care_transactions",
    "alerts",
    "red_bags",
    "service_user_versions",
];

impl Ledger {
    /// Places a hold; audited as `hold_placed` with who and why. A file
    /// hold needs the file to exist.
    pub fn place_hold(&mut self, on: HoldOn<'_>, reason: &str, by: &str) -> Result<i64> {
        let now = self.now();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let (file_id, partner) = match on {
            HoldOn::File(id) => {
                let exists: Option<i64> = tx
                    .query_row("SELECT id FROM files WHERE id = ?1", [id], |r| r.get(0))
                    .optional()?;
                exists.ok_or(LedgerError::NotFound(id))?;
                (Some(id), None)
            }
            HoldOn::Partner(name) => (None, Some(name)),
        };
        tx.execute(
            "INSERT INTO legal_holds (file_id, partner, reason, placed_by, placed_at)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![file_id, partner, reason, by, now],
        )?;
        let id = tx.last_insert_rowid();
        append_audit(
            &tx,
            &now,
            &AuditEvent {
                partner,
                action: "hold_placed",
                file_id,
                detail: Some(serde_json::json!({ "hold": id, "by": by, "reason": reason })),
                ..Default::default()
            },
        )?;
        tx.commit()?;
        Ok(id)
    }

    /// Releases a hold in force; audited as `hold_released`. `None` when no
    /// hold in force has that id.
    pub fn release_hold(&mut self, id: i64, reason: &str, by: &str) -> Result<Option<Hold>> {
        let now = self.now();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let updated = tx.execute(
            "UPDATE legal_holds SET released_by = ?2, released_at = ?3, release_reason = ?4
             WHERE id = ?1 AND released_at IS NULL",
            params![id, by, now, reason],
        )?;
        if updated == 0 {
            return Ok(None);
        }
        let hold = tx.query_row(
            &format!("SELECT {HOLD_COLUMNS} FROM legal_holds WHERE id = ?1"),
            [id],
            hold_row,
        )?;
        append_audit(
            &tx,
            &now,
            &AuditEvent {
                partner: hold.partner.as_deref(),
                action: "hold_released",
                file_id: hold.file_id,
                detail: Some(serde_json::json!({ "hold": id, "by": by, "reason": reason })),
                ..Default::default()
            },
        )?;
        tx.commit()?;
        Ok(Some(hold))
    }

    /// When a purge last deleted something (a purge that finds nothing due
    /// writes no audit row).
    pub fn last_purge_at(&self) -> Result<Option<String>> {
        Ok(self
            .conn
            .query_row(
                "SELECT at FROM audit_events WHERE action = 'purge' ORDER BY id DESC LIMIT 1",
                [],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Whether any file came from `partner`.
    pub fn has_files_from(&self, partner: &str) -> Result<bool> {
        Ok(self.conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM files WHERE partner = ?1)",
            [partner],
            |r| r.get(0),
        )?)
    }

    /// Holds, oldest first: those in force, or every one ever placed.
    pub fn holds(&self, released_too: bool) -> Result<Vec<Hold>> {
        let filter = if released_too {
            ""
        } else {
            "WHERE released_at IS NULL"
        };
        let mut stmt = self.conn.prepare(&format!(
            "SELECT {HOLD_COLUMNS} FROM legal_holds {filter} ORDER BY id"
        ))?;
        let rows = stmt.query_map([], hold_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Settled files with ids above `after` whose payloads are still kept
    /// and were last settled before `settled_before`, in id order, at most
    /// `limit`.
    pub fn kept_payloads(
        &self,
        settled_before: &str,
        after: i64,
        limit: usize,
    ) -> Result<Vec<KeptPayload>> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT id, partner, feed, name, spool_name, size, updated_at, {FILE_HELD},
                    EXISTS (SELECT 1 FROM route_deliveries r
                            WHERE r.file_id = files.id AND r.state = 'pending')
             FROM files
             WHERE payload_purged_at IS NULL AND updated_at < ?1 AND id > ?2
               AND state <> 'received'
             ORDER BY id LIMIT ?3"
        ))?;
        let rows = stmt.query_map(params![settled_before, after, limit as i64], |r| {
            Ok(KeptPayload {
                id: r.get(0)?,
                partner: r.get(1)?,
                feed: r.get(2)?,
                name: r.get(3)?,
                spool_name: r.get(4)?,
                size: r.get::<_, i64>(5)?.max(0) as u64,
                updated_at: r.get(6)?,
                held: r.get(7)?,
                forwarding: r.get(8)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Records that these files' payloads (and receipts) were deleted: each
    /// file's history gains `payload_purged`, and the batch is one `purge`
    /// audit row with `summary`.
    pub fn payloads_purged(&mut self, ids: &[i64], summary: serde_json::Value) -> Result<()> {
        let now = self.now();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        {
            let mut mark = tx.prepare_cached(
                "UPDATE files SET payload_purged_at = ?2 WHERE id = ?1 AND payload_purged_at IS NULL",
            )?;
            let mut event = tx.prepare_cached(
                "INSERT INTO file_events (file_id, at, event) VALUES (?1, ?2, 'payload_purged')",
            )?;
            // A small file's bytes are kept in the ledger rather than the spool.
            let mut held = tx.prepare_cached("DELETE FROM held_payloads WHERE file_id = ?1")?;
            for &id in ids {
                if mark.execute(params![id, now])? > 0 {
                    event.execute(params![id, now])?;
                }
                held.execute([id])?;
            }
        }
        append_audit(&tx, &now, &purge_event(summary))?;
        tx.commit()?;
        Ok(())
    }

    /// Complete exports with ids above `after` whose folders are still kept
    /// and that ended before `ended_before`, in id order, at most `limit`.
    pub fn kept_exports(
        &self,
        ended_before: &str,
        after: i64,
        limit: usize,
    ) -> Result<Vec<KeptExport>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, consumer, export_id, ended_at,
                    EXISTS (SELECT 1 FROM legal_holds h
                            WHERE h.released_at IS NULL AND h.partner = export_runs.consumer),
                    EXISTS (SELECT 1 FROM export_deliveries d
                            WHERE d.run_id = export_runs.id AND d.state = 'pending')
             FROM export_runs
             WHERE payload_purged_at IS NULL AND ended_at IS NOT NULL AND ended_at < ?1
               AND id > ?2 AND outcome = 'complete'
             ORDER BY id LIMIT ?3",
        )?;
        let rows = stmt.query_map(params![ended_before, after, limit as i64], |r| {
            Ok(KeptExport {
                id: r.get(0)?,
                consumer: r.get(1)?,
                export_id: r.get(2)?,
                ended_at: r.get(3)?,
                held: r.get(4)?,
                delivering: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Records that these exports' folders were deleted, with one `purge`
    /// audit row.
    pub fn exports_purged(&mut self, ids: &[i64], summary: serde_json::Value) -> Result<()> {
        let now = self.now();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        {
            let mut mark = tx.prepare_cached(
                "UPDATE export_runs SET payload_purged_at = ?2
                 WHERE id = ?1 AND payload_purged_at IS NULL",
            )?;
            for &id in ids {
                mark.execute(params![id, now])?;
            }
        }
        append_audit(&tx, &now, &purge_event(summary))?;
        tx.commit()?;
        Ok(())
    }

    /// Loaded files of `feed` with ids above `after` whose records are still
    /// kept and that settled before `settled_before`, in id order, at most
    /// `limit`.
    pub fn kept_records(
        &self,
        feed: &str,
        settled_before: &str,
        after: i64,
        limit: usize,
    ) -> Result<Vec<KeptRecords>> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT id, records, {FILE_HELD} FROM files
             WHERE feed = ?1 AND state = 'loaded' AND records_purged_at IS NULL
               AND updated_at < ?2 AND id > ?3
             ORDER BY id LIMIT ?4"
        ))?;
        let rows = stmt.query_map(params![feed, settled_before, after, limit as i64], |r| {
            Ok(KeptRecords {
                id: r.get(0)?,
                records: r.get::<_, i64>(1)?.max(0) as u64,
                held: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Deletes the records these files loaded, in one transaction: first the
    /// counts `measure` makes of every file in the same weeks, partners and
    /// feeds, then the rows (a service user only when nothing else names
    /// it, a person only when no service user is theirs), then the same
    /// counts again; what they lost is added to `kept_counts`. Each file's
    /// history gains `records_purged`, and the batch is one `purge` audit
    /// row with `summary` and the rows deleted. Returns the rows deleted.
    pub fn purge_records(
        &mut self,
        ids: &[i64],
        measure: Measure<'_>,
        summary: serde_json::Value,
    ) -> Result<u64> {
        let now = self.now();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute_batch(
            "CREATE TEMP TABLE IF NOT EXISTS purge_files (id INTEGER PRIMARY KEY);
             CREATE TEMP TABLE IF NOT EXISTS purge_scope (id INTEGER PRIMARY KEY);
             CREATE TEMP TABLE IF NOT EXISTS purge_details
                 (detail_id INTEGER PRIMARY KEY, person_id INTEGER);
             DELETE FROM temp.purge_files; DELETE FROM temp.purge_scope;
             DELETE FROM temp.purge_details;",
        )?;
        {
            let mut add =
                tx.prepare_cached("INSERT OR IGNORE INTO temp.purge_files (id) VALUES (?1)")?;
            for &id in ids {
                add.execute([id])?;
            }
        }
        // Trend counts are by the week a file was received, its partner and
        // its feed: those groups are the only ones the deletion changes.
        tx.execute_batch(
            "INSERT INTO temp.purge_scope (id)
             SELECT DISTINCT f.id
             FROM (SELECT DISTINCT date(g.received_at, '-6 days', 'weekday 1') AS week,
                          g.partner, g.feed
                   FROM files g JOIN temp.purge_files p ON p.id = g.id) w
             JOIN files f ON f.partner = w.partner AND f.feed IS w.feed
              AND f.received_at >= w.week AND f.received_at < date(w.week, '+7 days');",
        )?;
        let scope = "f.id IN (SELECT id FROM temp.purge_scope)";
        let before = measure(&tx, scope)?;
        let mut deleted = 0u64;
        for table in RECORD_TABLES {
            deleted += tx.execute(
                &format!("DELETE FROM {table} WHERE file_id IN (SELECT id FROM temp.purge_files)"),
                [],
            )? as u64;
        }
        // The lists of the sets just deleted: not records themselves.
        tx.execute(
            "DELETE FROM observation_set_lists WHERE file_id IN (SELECT id FROM temp.purge_files)",
            [],
        )?;
        let unnamed: Vec<String> = DETAIL_TABLES
            .iter()
            .map(|t| format!("NOT EXISTS (SELECT 1 FROM {t} x WHERE x.detail_id = s.detail_id)"))
            .collect();
        tx.execute(
            &format!(
                "INSERT INTO temp.purge_details (detail_id, person_id)
                 SELECT s.detail_id, s.person_id FROM service_users s
                 WHERE s.file_id IN (SELECT id FROM temp.purge_files) AND {}",
                unnamed.join(" AND ")
            ),
            [],
        )?;
        deleted += tx.execute(
            "DELETE FROM service_users WHERE detail_id IN (SELECT detail_id FROM temp.purge_details)",
            [],
        )? as u64;
        tx.execute(
            "DELETE FROM persons WHERE id IN (SELECT person_id FROM temp.purge_details)
               AND NOT EXISTS (SELECT 1 FROM service_users s WHERE s.person_id = persons.id)",
            [],
        )?;
        let after = measure(&tx, scope)?;
        {
            let mut keep = tx.prepare_cached(
                "INSERT INTO kept_counts (week, partner, feed, measure, count)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT DO UPDATE SET count = count + excluded.count",
            )?;
            for (key, was) in &before {
                let lost = was.saturating_sub(after.get(key).copied().unwrap_or(0));
                if lost > 0 {
                    keep.execute(params![key.0, key.1, key.2, key.3, lost as i64])?;
                }
            }
            let mut mark = tx.prepare_cached(
                "UPDATE files SET records_purged_at = ?2 WHERE id = ?1 AND records_purged_at IS NULL",
            )?;
            let mut event = tx.prepare_cached(
                "INSERT INTO file_events (file_id, at, event) VALUES (?1, ?2, 'records_purged')",
            )?;
            for &id in ids {
                if mark.execute(params![id, now])? > 0 {
                    event.execute(params![id, now])?;
                }
            }
        }
        let mut summary = summary;
        summary["rows"] = serde_json::json!(deleted);
        append_audit(&tx, &now, &purge_event(summary))?;
        tx.execute_batch(
            "DELETE FROM temp.purge_files; DELETE FROM temp.purge_scope;
             DELETE FROM temp.purge_details;",
        )?;
        tx.commit()?;
        Ok(deleted)
    }

    /// Counts kept of records retention deleted.
    pub fn kept_counts(&self) -> Result<Counts> {
        let mut stmt = self
            .conn
            .prepare("SELECT week, partner, feed, measure, count FROM kept_counts")?;
        let mut rows = stmt.query([])?;
        let mut counts = Counts::new();
        while let Some(r) = rows.next()? {
            let n: i64 = r.get(4)?;
            counts.insert(
                (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?),
                n.max(0) as u64,
            );
        }
        Ok(counts)
    }
}

fn purge_event(summary: serde_json::Value) -> AuditEvent<'static> {
    AuditEvent {
        action: "purge",
        detail: Some(summary),
        ..Default::default()
    }
}
