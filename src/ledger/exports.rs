//! Export runs: each run is a row written when it starts and finished when
//! its export is in place, with the grants that allowed it; the range of
//! loads it covered is its watermark.

use rusqlite::{OptionalExtension, TransactionBehavior, params};
use serde::Serialize;

use super::*;

/// A run about to start.
pub struct RunStart<'a> {
    pub schedule: &'a str,
    pub consumer: &'a str,
    /// The timetable's time it is for; `None` when made by hand.
    pub planned_at: Option<DateTime<Utc>>,
    pub mode: &'a str,
    pub from: Watermark,
    /// The export's folder name is this, a dash and the run's id.
    pub export_id_prefix: &'a str,
}

/// Where an export's range starts or ends, in the two sequences it reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, serde::Deserialize)]
pub struct Watermark {
    /// Id of a `loaded` file event.
    pub loads: i64,
    /// Id of an observation set.
    pub sets: i64,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunOutcome {
    Complete,
    /// No grant in force allowed it.
    Refused,
    Failed,
    /// dropgate stopped while it ran; the run is made again.
    Interrupted,
}

impl RunOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            RunOutcome::Complete => "complete",
            RunOutcome::Refused => "refused",
            RunOutcome::Failed => "failed",
            RunOutcome::Interrupted => "interrupted",
        }
    }

    fn parse(text: &str) -> Option<RunOutcome> {
        [
            RunOutcome::Complete,
            RunOutcome::Refused,
            RunOutcome::Failed,
            RunOutcome::Interrupted,
        ]
        .into_iter()
        .find(|o| o.as_str() == text)
    }
}

/// The end of a run.
pub struct RunEnd<'a> {
    pub outcome: RunOutcome,
    pub to: Option<Watermark>,
    pub manifest_sha256: Option<&'a str>,
    pub counts: Option<serde_json::Value>,
    pub grants: &'a [String],
    /// Why it was refused or failed (no identifiers).
    pub detail: Option<serde_json::Value>,
    /// Where a complete export is then pushed: each becomes a pending delivery.
    pub destinations: &'a [String],
}

/// A complete export still to be pushed to a destination.
#[derive(Debug, Clone)]
pub struct PendingDelivery {
    pub run_id: i64,
    pub export_id: String,
    pub consumer: String,
    pub destination: String,
}

/// A run as stored.
#[derive(Debug, Clone, Serialize)]
pub struct RunRow {
    pub id: i64,
    pub schedule: String,
    pub consumer: String,
    pub planned_at: Option<String>,
    pub manual: bool,
    pub mode: String,
    pub started_at: String,
    pub ended_at: Option<String>,
    pub outcome: Option<RunOutcome>,
    pub from: Watermark,
    pub to: Option<Watermark>,
    pub export_id: String,
    pub counts: Option<serde_json::Value>,
    pub detail: Option<serde_json::Value>,
}

const SELECT_RUN: &str = "SELECT id, schedule, consumer, planned_at, manual, mode, started_at,
        ended_at, outcome, watermark_from, watermark_to, export_id, counts, detail, sets_from, sets_to
     FROM export_runs";

fn run_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RunRow> {
    let json = |i: usize| -> rusqlite::Result<Option<serde_json::Value>> {
        Ok(r.get::<_, Option<String>>(i)?
            .and_then(|t| serde_json::from_str(&t).ok()))
    };
    Ok(RunRow {
        id: r.get(0)?,
        schedule: r.get(1)?,
        consumer: r.get(2)?,
        planned_at: r.get(3)?,
        manual: r.get::<_, i64>(4)? == 1,
        mode: r.get(5)?,
        started_at: r.get(6)?,
        ended_at: r.get(7)?,
        outcome: r
            .get::<_, Option<String>>(8)?
            .and_then(|o| RunOutcome::parse(&o)),
        from: Watermark {
            loads: r.get(9)?,
            sets: r.get(14)?,
        },
        to: match (r.get::<_, Option<i64>>(10)?, r.get::<_, Option<i64>>(15)?) {
            (Some(loads), Some(sets)) => Some(Watermark { loads, sets }),
            _ => None,
        },
        export_id: r.get(11)?,
        counts: json(12)?,
        detail: json(13)?,
    })
}

impl Ledger {
    /// Where the schedule's next incremental export starts: the end of its
    /// last complete one.
    pub fn export_watermark(&self, schedule: &str) -> Result<Watermark> {
        Ok(self
            .conn
            .query_row(
                "SELECT watermark_to, sets_to FROM export_runs
                 WHERE schedule = ?1 AND outcome = 'complete' ORDER BY id DESC LIMIT 1",
                [schedule],
                |r| {
                    Ok(Watermark {
                        loads: r.get(0)?,
                        sets: r.get(1)?,
                    })
                },
            )
            .optional()?
            .unwrap_or_default())
    }

    /// Writes a run's start; returns its id and its export's folder name.
    pub fn begin_export_run(&mut self, run: &RunStart<'_>) -> Result<(i64, String)> {
        let now = self.now();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        // The id is known only once inserted; the name holds it, so it is unique.
        let unique = format!(
            "{}-pending-{:016x}",
            run.export_id_prefix,
            rand::random::<u64>()
        );
        tx.execute(
            "INSERT INTO export_runs (schedule, consumer, planned_at, manual, mode, started_at,
                                      watermark_from, export_id, sets_from)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                run.schedule,
                run.consumer,
                run.planned_at.map(timestamp),
                i64::from(run.planned_at.is_none()),
                run.mode,
                now,
                run.from.loads,
                unique,
                run.from.sets
            ],
        )?;
        let id = tx.last_insert_rowid();
        let export_id = format!("{}-{id}", run.export_id_prefix);
        tx.execute(
            "UPDATE export_runs SET export_id = ?2 WHERE id = ?1",
            params![id, export_id],
        )?;
        tx.commit()?;
        Ok((id, export_id))
    }

    /// Ends a run, records the grants it used, and audits it, together.
    pub fn finish_export_run(&mut self, id: i64, end: &RunEnd<'_>) -> Result<()> {
        let now = self.now();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let (schedule, consumer, export_id): (String, String, String) = tx.query_row(
            "SELECT schedule, consumer, export_id FROM export_runs WHERE id = ?1",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?;
        // A run ends once: never after another process has settled it.
        let ended = tx.execute(
            "UPDATE export_runs SET ended_at = ?2, outcome = ?3, watermark_to = ?4,
                    manifest_sha256 = ?5, counts = ?6, detail = ?7, sets_to = ?8
             WHERE id = ?1 AND ended_at IS NULL",
            params![
                id,
                now,
                end.outcome.as_str(),
                end.to.map(|w| w.loads),
                end.manifest_sha256,
                end.counts.as_ref().map(|c| c.to_string()),
                end.detail.as_ref().map(|d| d.to_string()),
                end.to.map(|w| w.sets)
            ],
        )?;
        if ended == 0 {
            return Err(LedgerError::RunEnded(id));
        }
        if end.outcome == RunOutcome::Complete {
            for destination in end.destinations {
                tx.execute(
                    "INSERT OR IGNORE INTO export_deliveries (run_id, destination, state, updated_at)
                     VALUES (?1, ?2, 'pending', ?3)",
                    params![id, destination, now],
                )?;
            }
        }
        for grant in end.grants {
            tx.execute(
                "INSERT OR IGNORE INTO export_grants (run_id, grant_name) VALUES (?1, ?2)",
                params![id, grant],
            )?;
        }
        let mut detail = serde_json::json!({
            "schedule": schedule,
            "export_id": export_id,
            "outcome": end.outcome.as_str(),
            "grants": end.grants,
        });
        if let Some(counts) = &end.counts {
            detail["counts"] = counts.clone();
        }
        if let Some(why) = &end.detail {
            detail["detail"] = why.clone();
        }
        let action = match end.outcome {
            RunOutcome::Refused => "export_refused",
            _ => "export",
        };
        append_audit(
            &tx,
            &now,
            &AuditEvent {
                partner: Some(&consumer),
                action,
                detail: Some(detail),
                ..AuditEvent::default()
            },
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Complete exports not yet pushed to a destination of their schedule.
    pub fn pending_export_deliveries(&self) -> Result<Vec<PendingDelivery>> {
        let mut stmt = self.conn.prepare(
            "SELECT d.run_id, r.export_id, r.consumer, d.destination
             FROM export_deliveries d JOIN export_runs r ON r.id = d.run_id
             WHERE d.state = 'pending' ORDER BY d.run_id, d.destination",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(PendingDelivery {
                run_id: r.get(0)?,
                export_id: r.get(1)?,
                consumer: r.get(2)?,
                destination: r.get(3)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The run that made this export.
    pub fn export_run_by_export_id(&self, export_id: &str) -> Result<Option<RunRow>> {
        Ok(self
            .conn
            .query_row(
                &format!("{SELECT_RUN} WHERE export_id = ?1"),
                [export_id],
                run_row,
            )
            .optional()?)
    }

    /// The grants a run was made under.
    pub fn export_run_grants(&self, run_id: i64) -> Result<Vec<String>> {
        let mut stmt = self.conn.prepare(
            "SELECT grant_name FROM export_grants WHERE run_id = ?1 ORDER BY grant_name",
        )?;
        let rows = stmt.query_map([run_id], |r| r.get(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Queues an export's push to `destination` again, asked for by hand, in
    /// the audit trail with the same transaction.
    pub fn resend_export(&mut self, run: &RunRow, destination: &str) -> Result<()> {
        let now = self.now();
        let tx = self.conn.transaction()?;
        tx.execute(
            "INSERT INTO export_deliveries (run_id, destination, state, updated_at)
             VALUES (?1, ?2, 'pending', ?3)
             ON CONFLICT (run_id, destination) DO UPDATE
                SET state = 'pending', attempts = 0, error = NULL, updated_at = ?3",
            params![run.id, destination, now],
        )?;
        append_audit(
            &tx,
            &now,
            &AuditEvent {
                partner: Some(&run.consumer),
                action: "export_resend",
                detail: Some(serde_json::json!({
                    "schedule": run.schedule,
                    "export_id": run.export_id,
                    "destination": destination,
                })),
                ..AuditEvent::default()
            },
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Puts failed pushes back in the queue when they last failed before
    /// `failed_before` and their export was made after `made_after`.
    pub fn retry_failed_pushes(
        &mut self,
        failed_before: DateTime<Utc>,
        made_after: DateTime<Utc>,
    ) -> Result<usize> {
        let (failed_before, made_after) = (timestamp(failed_before), timestamp(made_after));
        // Read first: the write lock is taken only when there is one to retry.
        let waiting: i64 = self.conn.query_row(
            "SELECT count(*) FROM export_deliveries
             WHERE state = 'failed' AND updated_at < ?1
               AND run_id IN (SELECT id FROM export_runs WHERE ended_at > ?2)",
            params![failed_before, made_after],
            |r| r.get(0),
        )?;
        if waiting == 0 {
            return Ok(0);
        }
        Ok(self.conn.execute(
            "UPDATE export_deliveries SET state = 'pending'
             WHERE state = 'failed' AND updated_at < ?1
               AND run_id IN (SELECT id FROM export_runs WHERE ended_at > ?2)",
            params![failed_before, made_after],
        )?)
    }

    /// How a push ended: delivered after `attempts`, or given up with `error`.
    pub fn finish_export_delivery(
        &mut self,
        run_id: i64,
        destination: &str,
        attempts: u32,
        error: Option<&str>,
    ) -> Result<()> {
        let now = self.now();
        finish_export_push(&self.conn, &now, run_id, destination, attempts, error)
    }

    /// Each destination's push of a run: destination, state, error.
    pub fn export_deliveries(&self, run_id: i64) -> Result<Vec<(String, String, Option<String>)>> {
        let mut stmt = self.conn.prepare(
            "SELECT destination, state, error FROM export_deliveries WHERE run_id = ?1
             ORDER BY destination",
        )?;
        let rows = stmt.query_map([run_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Every whole download by `partner` of a file of the export `export_id`
    /// from its outbox, as the audit trail records it: file name, bytes, time.
    pub fn export_downloads(
        &self,
        partner: &str,
        export_id: &str,
    ) -> Result<Vec<(String, u64, String)>> {
        // Downloads are audited by their path below the partner's root.
        let prefix = format!("outbox/{export_id}/");
        let mut stmt = self.conn.prepare(
            "SELECT json_extract(detail, '$.name'), json_extract(detail, '$.bytes'), at
             FROM audit_events
             WHERE action = 'download' AND partner = ?1
               AND substr(json_extract(detail, '$.name'), 1, length(?2)) = ?2
             ORDER BY id",
        )?;
        let rows = stmt.query_map(params![partner, prefix], |r| {
            let name: String = r.get(0)?;
            Ok((
                name[prefix.len()..].to_string(),
                r.get::<_, i64>(1)?.max(0) as u64,
                r.get(2)?,
            ))
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Runs that started and never ended: dropgate stopped during them.
    pub fn unfinished_export_runs(&self) -> Result<Vec<RunRow>> {
        let mut stmt = self
            .conn
            .prepare(&format!("{SELECT_RUN} WHERE ended_at IS NULL ORDER BY id"))?;
        let rows = stmt.query_map([], run_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The schedule's newest runs, newest first.
    pub fn export_runs(&self, schedule: &str, limit: usize) -> Result<Vec<RunRow>> {
        let mut stmt = self.conn.prepare(&format!(
            "{SELECT_RUN} WHERE schedule = ?1 ORDER BY id DESC LIMIT ?2"
        ))?;
        let rows = stmt.query_map(params![schedule, limit as i64], run_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The timetable time of the schedule's newest run that ended (other
    /// than by interruption), or of its oldest interrupted one still to be
    /// made again: the time from which missed runs are counted.
    pub fn export_settled_until(&self, schedule: &str) -> Result<Option<(String, bool)>> {
        let settled: Option<String> = self
            .conn
            .query_row(
                "SELECT max(planned_at) FROM export_runs
                 WHERE schedule = ?1 AND planned_at IS NOT NULL
                   AND outcome IN ('complete', 'refused', 'failed')",
                [schedule],
                |r| r.get(0),
            )
            .optional()?
            .flatten();
        let interrupted: Option<String> = self
            .conn
            .query_row(
                "SELECT min(planned_at) FROM export_runs
                 WHERE schedule = ?1 AND planned_at IS NOT NULL AND outcome = 'interrupted'
                   AND planned_at > coalesce(?2, '')",
                params![schedule, settled],
                |r| r.get(0),
            )
            .optional()?
            .flatten();
        Ok(match (settled, interrupted) {
            (_, Some(i)) => Some((i, false)),
            (Some(s), None) => Some((s, true)),
            (None, None) => None,
        })
    }

    /// When a grant last let data leave: a complete export, or a file a
    /// route delivered.
    pub fn grant_last_used(&self, grant: &str) -> Result<Option<String>> {
        Ok(self
            .conn
            .query_row(
                "SELECT max(at) FROM (
                     SELECT max(r.ended_at) AS at FROM export_grants g
                     JOIN export_runs r ON r.id = g.run_id
                     WHERE g.grant_name = ?1 AND r.outcome = 'complete'
                     UNION ALL
                     SELECT max(updated_at) FROM route_deliveries
                     WHERE grant_name = ?1 AND state = 'delivered')",
                [grant],
                |r| r.get(0),
            )
            .optional()?
            .flatten())
    }

    /// A read transaction: what an export reads is one consistent snapshot.
    pub fn snapshot(&mut self) -> Result<Snapshot<'_>> {
        Ok(Snapshot {
            tx: self.conn.transaction()?,
        })
    }
}

/// A loaded file whose records an export may read.
#[derive(Debug, Clone)]
pub struct LoadedFile {
    pub id: i64,
    pub partner: String,
    pub feed: Option<String>,
}

/// One consistent view of the ledger, for reading an export's records.
pub struct Snapshot<'c> {
    tx: rusqlite::Transaction<'c>,
}

impl Snapshot<'_> {
    /// The files whose `loaded` event is in `(from, to]`, in load order.
    pub fn loaded_files(&self, from: i64, to: i64) -> Result<Vec<LoadedFile>> {
        let mut stmt = self.tx.prepare(
            "SELECT f.id, f.partner, f.feed FROM file_events e JOIN files f ON f.id = e.file_id
             WHERE e.event = 'loaded' AND e.id > ?1 AND e.id <= ?2 ORDER BY e.id",
        )?;
        let rows = stmt.query_map(params![from, to], |r| {
            Ok(LoadedFile {
                id: r.get(0)?,
                partner: r.get(1)?,
                feed: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The newest `loaded` event and observation set in this snapshot:
    /// everything loaded so far is at or below them. Both are numbered in
    /// commit order (one writer at a time, each new id the largest plus one),
    /// so nothing committed later can appear below them.
    pub fn high_water(&self) -> Result<Watermark> {
        let loads = self
            .tx
            .query_row(
                "SELECT id FROM file_events WHERE event = 'loaded' ORDER BY id DESC LIMIT 1",
                [],
                |r| r.get(0),
            )
            .optional()?
            .unwrap_or(0);
        let sets: Option<i64> =
            self.tx
                .query_row("SELECT max(id) FROM observation_sets", [], |r| r.get(0))?;
        Ok(Watermark {
            loads,
            sets: sets.unwrap_or(0),
        })
    }

    /// The connection, for each record kind's reader (as for its writer).
    pub fn connection(&self) -> &Connection {
        &self.tx
    }
}

/// Finishes a run's push to one destination: `delivered`, or `failed` with
/// the error.
pub(super) fn finish_export_push(
    conn: &Connection,
    now: &str,
    run_id: i64,
    destination: &str,
    attempts: u32,
    error: Option<&str>,
) -> Result<()> {
    conn.execute(
        "UPDATE export_deliveries SET state = ?3, attempts = attempts + ?4, error = ?5,
                updated_at = ?6
         WHERE run_id = ?1 AND destination = ?2",
        params![
            run_id,
            destination,
            if error.is_none() {
                "delivered"
            } else {
                "failed"
            },
            attempts,
            error,
            now
        ],
    )?;
    Ok(())
}
