//! What sources and destinations report: polls, clean-ups, deliveries, bans.

use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, params};
use serde::Serialize;

use super::*;

/// One step of delivering a file to a destination.
#[derive(Debug, Clone)]
pub struct DeliveryEvent<'a> {
    pub destination: &'a str,
    pub file_id: Option<i64>,
    pub name: &'a str,
    pub sha256: &'a str,
    pub size: u64,
    pub attempt: u32,
    /// `attempt_failed`, `delivered` or `gave_up`.
    pub event: &'a str,
    pub detail: Option<serde_json::Value>,
}

/// What a delivery settles besides its own events, recorded with them.
#[derive(Debug, Clone, Copy)]
pub enum Settles<'a> {
    /// Nothing more: a receipt, an alert, a push by hand.
    Nothing,
    /// A file's forwarding by a route, under the grant that allowed it.
    Route {
        file_id: i64,
        route: &'a str,
        grant: &'a str,
    },
    /// An export run's push to one destination.
    ExportPush { run_id: i64, destination: &'a str },
}

fn insert_delivery(conn: &Connection, at: &str, event: &DeliveryEvent<'_>) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO delivery_events (at, destination, file_id, name, sha256, size, attempt, event, detail)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![
        at,
        event.destination,
        event.file_id,
        event.name,
        event.sha256,
        event.size,
        event.attempt,
        event.event,
        event.detail.as_ref().map(|d| d.to_string())
    ])?;
    Ok(())
}

/// How one poll of a remote source went.
#[derive(Debug)]
pub struct PollReport<'a> {
    /// Why the poll failed; `None` when it succeeded.
    pub error: Option<&'a str>,
    /// Received files whose copy on the server could not be removed yet.
    pub cleanups_pending: u64,
    pub cleanup_error: Option<&'a str>,
    /// Matching files on the server not taken (yet): still being written,
    /// over `max_file_size`, or refused.
    pub files_waiting: u64,
}

/// What `dropgate status` shows.
#[derive(Debug, Serialize)]
pub struct Status {
    pub sources: Vec<SourceStatus>,
    /// Files per state.
    pub files: Vec<(String, u64)>,
    /// Forwardings per route and state: `(route, state, count)`.
    pub routes: Vec<(String, String, u64)>,
    /// Export pushes per destination and state: `(destination, state, count)`.
    pub pushes: Vec<(String, String, u64)>,
}

#[derive(Debug, Serialize)]
pub struct SourceStatus {
    pub source: String,
    pub checked_at: String,
    pub last_ok_at: Option<String>,
    pub last_error: Option<String>,
    pub last_error_at: Option<String>,
    /// Received files whose copy on the server could not be removed yet.
    pub cleanups_pending: u64,
    pub cleanup_error: Option<String>,
    pub files_waiting: u64,
}

impl Ledger {
    /// Appends one delivery event (an attempt that failed, or the outcome).
    pub fn delivery(&mut self, event: &DeliveryEvent<'_>) -> Result<()> {
        let at = self.now();
        insert_delivery(&self.conn, &at, event)
    }

    /// Records a shipment delivered: its `delivered` events and what it
    /// settles, in one transaction, so that a stop cannot leave it recorded
    /// as sent but still pending, to be sent again.
    pub fn delivered(
        &mut self,
        events: &[DeliveryEvent<'_>],
        attempt: u32,
        settles: Settles<'_>,
    ) -> Result<()> {
        let now = self.now();
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        for event in events {
            insert_delivery(&tx, &now, event)?;
        }
        match settles {
            Settles::Nothing => {}
            Settles::Route {
                file_id,
                route,
                grant,
            } => super::routes::finish_route(
                &tx,
                &now,
                file_id,
                route,
                "delivered",
                attempt,
                Some(grant),
                None,
            )?,
            Settles::ExportPush {
                run_id,
                destination,
            } => super::exports::finish_export_push(&tx, &now, run_id, destination, attempt, None)?,
        }
        tx.commit()?;
        Ok(())
    }

    /// The file already taken from this remote path as it looks now, if any.
    pub fn taken(&self, source: &str, path: &str, size: u64, mtime: u32) -> Result<Option<i64>> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT file_id FROM remote_taken WHERE source = ?1 AND path = ?2 AND size = ?3 AND mtime = ?4",
            )?
            .query_row(params![source, path, size, mtime], |r| r.get(0))
            .optional()?)
    }

    /// Notes how a source's latest poll went (`error` is `None` on success),
    /// and the received files whose server copy it has yet to remove, with
    /// the latest reason.
    pub fn source_checked(&mut self, source: &str, poll: &PollReport<'_>) -> Result<()> {
        let now = self.now();
        self.conn
            .prepare_cached(
                "INSERT INTO source_status (source, checked_at, last_ok_at, last_error, last_error_at,
                                            cleanups_pending, cleanup_error, files_waiting)
                 VALUES (?1, ?2, CASE WHEN ?3 IS NULL THEN ?2 END, ?3, CASE WHEN ?3 IS NOT NULL THEN ?2 END,
                         ?4, ?5, ?6)
                 ON CONFLICT (source) DO UPDATE SET
                    checked_at = ?2,
                    last_ok_at = CASE WHEN ?3 IS NULL THEN ?2 ELSE last_ok_at END,
                    last_error = COALESCE(?3, last_error),
                    last_error_at = CASE WHEN ?3 IS NOT NULL THEN ?2 ELSE last_error_at END,
                    cleanups_pending = ?4,
                    cleanup_error = ?5,
                    files_waiting = ?6",
            )?
            .execute(params![
                source,
                now,
                poll.error,
                poll.cleanups_pending,
                poll.cleanup_error,
                poll.files_waiting
            ])?;
        Ok(())
    }

    /// Every source's latest poll, and the count of files in each state.
    pub fn status(&self) -> Result<Status> {
        let mut stmt = self.conn.prepare(
            "SELECT source, checked_at, last_ok_at, last_error, last_error_at, cleanups_pending, cleanup_error,
                    files_waiting
             FROM source_status ORDER BY source",
        )?;
        let sources = stmt
            .query_map([], |r| {
                Ok(SourceStatus {
                    source: r.get(0)?,
                    checked_at: r.get(1)?,
                    last_ok_at: r.get(2)?,
                    last_error: r.get(3)?,
                    last_error_at: r.get(4)?,
                    cleanups_pending: r.get(5)?,
                    cleanup_error: r.get(6)?,
                    files_waiting: r.get(7)?,
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        let mut stmt = self
            .conn
            .prepare("SELECT state, count(*) FROM files GROUP BY state ORDER BY state")?;
        let files = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, u64>(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        let counted = |sql: &str| -> Result<Vec<(String, String, u64)>> {
            let mut stmt = self.conn.prepare(sql)?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        };
        let routes = counted(
            "SELECT route, state, count(*) FROM route_deliveries GROUP BY 1, 2 ORDER BY 1, 2",
        )?;
        let pushes = counted(
            "SELECT destination, state, count(*) FROM export_deliveries GROUP BY 1, 2 ORDER BY 1, 2",
        )?;
        Ok(Status {
            sources,
            files,
            routes,
            pushes,
        })
    }

    /// Records a ban on an address until the given time.
    pub fn ban(&mut self, address: &str, until: DateTime<Utc>, failures: u32) -> Result<()> {
        let now = self.now();
        self.conn
            .prepare_cached(
                "INSERT INTO address_bans (address, banned_at, until, failures) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (address) DO UPDATE SET banned_at = ?2, until = ?3, failures = ?4",
            )?
            .execute(params![address, now, timestamp(until), failures])?;
        Ok(())
    }

    /// Addresses banned now, with the end of each ban.
    pub fn bans(&self) -> Result<Vec<(String, DateTime<Utc>)>> {
        let now = self.now();
        let mut stmt = self
            .conn
            .prepare("SELECT address, until FROM address_bans WHERE until > ?1")?;
        let rows = stmt.query_map([now], |r| {
            let until: String = r.get(1)?;
            Ok((r.get::<_, String>(0)?, until))
        })?;
        let mut bans = Vec::new();
        for row in rows {
            let (address, until) = row?;
            if let Ok(until) = DateTime::parse_from_rfc3339(&until) {
                bans.push((address, until.with_timezone(&Utc)));
            }
        }
        Ok(bans)
    }
}

/// A feed's files since a time (the start of today, for `status`), and its
/// newest file.
#[derive(Debug, Serialize)]
pub struct FeedActivity {
    pub feed: String,
    pub files_today: u64,
    pub rows_today: u64,
    pub quarantined_today: u64,
    pub last_file_at: Option<String>,
}

/// A destination's queue and latest outcomes.
#[derive(Debug, Serialize)]
pub struct DestinationActivity {
    pub destination: String,
    /// Forwardings and export pushes not yet delivered (pending or to retry).
    pub queued: u64,
    pub last_delivery_at: Option<String>,
    pub last_error: Option<String>,
    pub last_error_at: Option<String>,
}

impl Ledger {
    pub fn feed_activity(&self, feed: &str, since: DateTime<Utc>) -> Result<FeedActivity> {
        let (files_today, rows_today, quarantined_today) = self
            .conn
            .prepare_cached(
                "SELECT count(*), coalesce(sum(rows_loaded), 0),
                        coalesce(sum(state = 'quarantined'), 0)
                 FROM files WHERE feed = ?1 AND received_at >= ?2",
            )?
            .query_row(params![feed, timestamp(since)], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })?;
        let last_file_at = self
            .conn
            .prepare_cached("SELECT max(received_at) FROM files WHERE feed = ?1")?
            .query_row([feed], |r| r.get(0))?;
        Ok(FeedActivity {
            feed: feed.to_string(),
            files_today,
            rows_today,
            quarantined_today,
            last_file_at,
        })
    }

    pub fn destination_activity(&self, destination: &str) -> Result<DestinationActivity> {
        let queued = self
            .conn
            .prepare_cached(
                "SELECT (SELECT count(*) FROM route_deliveries
                         WHERE destination = ?1 AND state IN ('pending', 'failed'))
                      + (SELECT count(*) FROM export_deliveries
                         WHERE destination = ?1 AND state IN ('pending', 'failed'))",
            )?
            .query_row([destination], |r| r.get(0))?;
        let last_delivery_at = self
            .conn
            .prepare_cached(
                "SELECT at FROM delivery_events WHERE destination = ?1 AND event = 'delivered'
                 ORDER BY id DESC LIMIT 1",
            )?
            .query_row([destination], |r| r.get(0))
            .optional()?;
        let failure: Option<(String, Option<String>)> = self
            .conn
            .prepare_cached(
                "SELECT at, detail FROM delivery_events WHERE destination = ?1 AND event <> 'delivered'
                 ORDER BY id DESC LIMIT 1",
            )?
            .query_row([destination], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        let (last_error_at, last_error) = match failure {
            Some((at, detail)) => {
                let error = detail
                    .and_then(|d| serde_json::from_str::<serde_json::Value>(&d).ok())
                    .and_then(|d| d["error"].as_str().map(str::to_string));
                (Some(at), error)
            }
            None => (None, None),
        };
        Ok(DestinationActivity {
            destination: destination.to_string(),
            queued,
            last_delivery_at,
            last_error,
            last_error_at,
        })
    }
}
