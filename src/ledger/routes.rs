//! Routes: each file of a feed forwarded to a destination, queued `pending`
//! before it is sent and finished with how it went.

use rusqlite::{OptionalExtension, TransactionBehavior, params};
use serde::Serialize;

use super::*;

/// A file waiting to be forwarded.
#[derive(Debug, Clone)]
pub struct Routed {
    pub file_id: i64,
    pub spool_name: String,
    pub partner: String,
    pub feed: String,
    pub sha256: String,
    pub size: u64,
}

/// A file's forwarding by one route, as `show` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct RouteDelivery {
    pub route: String,
    pub destination: String,
    pub state: String,
    pub attempts: i64,
    pub grant: Option<String>,
    pub error: Option<String>,
    pub updated_at: String,
}

/// The newest file when the route was first seen, recording it now if it
/// never was: files already here are not the route's to send.
fn first_seen(tx: &rusqlite::Transaction<'_>, route: &str, now: &str) -> Result<i64> {
    if let Some(after) = route_start(tx, route)? {
        return Ok(after);
    }
    let newest: i64 = tx.query_row("SELECT coalesce(max(id), 0) FROM files", [], |r| r.get(0))?;
    tx.execute(
        "INSERT INTO routes (name, after_file_id, first_seen_at) VALUES (?1, ?2, ?3)",
        params![route, newest, now],
    )?;
    Ok(newest)
}

/// The newest file when the route was first seen, if it was.
fn route_start(conn: &Connection, route: &str) -> Result<Option<i64>> {
    Ok(conn
        .query_row(
            "SELECT after_file_id FROM routes WHERE name = ?1",
            [route],
            |r| r.get(0),
        )
        .optional()?)
}

impl Ledger {
    /// Records the routes not seen before as starting now. The daemon does
    /// this before any source can land a file, so a route forwards exactly
    /// the files received after it first ran.
    pub fn register_routes<'a>(&mut self, routes: impl IntoIterator<Item = &'a str>) -> Result<()> {
        let now = self.now();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        for route in routes {
            first_seen(&tx, route, &now)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Queues, as `pending`, every file of `feed` in one of `states` that the
    /// route has not queued yet and that was received after the route was
    /// first seen. Returns how many were queued.
    ///
    /// Only files from `from_id` on are looked at (those below are settled and
    /// were looked at before), and the write lock is taken only when there is
    /// something to queue: a large load holding it never stalls a route's look.
    pub fn queue_routed(
        &mut self,
        route: &str,
        destination: &str,
        feed: &str,
        states: &[&str],
        from_id: i64,
    ) -> Result<usize> {
        const NEW: &str = "FROM files
             WHERE feed = ?1 AND id > ?2 AND id >= ?3
               AND state IN (SELECT value FROM json_each(?4))
               AND id NOT IN (SELECT file_id FROM route_deliveries WHERE route = ?5)";
        let now = self.now();
        let states = serde_json::to_string(states).expect("strings serialise");
        if let Some(after) = route_start(&self.conn, route)? {
            let waiting: i64 = self.conn.query_row(
                &format!("SELECT count(*) {NEW}"),
                params![feed, after, from_id, states, route],
                |r| r.get(0),
            )?;
            if waiting == 0 {
                return Ok(0);
            }
        }
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let after = first_seen(&tx, route, &now)?;
        let queued = tx.execute(
            &format!(
                "INSERT OR IGNORE INTO route_deliveries (file_id, route, destination, state, updated_at)
                 SELECT id, ?5, ?6, 'pending', ?7 {NEW}"
            ),
            params![feed, after, from_id, states, route, destination, now],
        )?;
        tx.commit()?;
        Ok(queued)
    }

    /// Puts the route's failed forwardings back in the queue when they last
    /// failed before `failed_before` and their file was received after
    /// `received_after`: a destination that was down is tried again, for a while.
    pub fn retry_failed_routed(
        &mut self,
        route: &str,
        failed_before: DateTime<Utc>,
        received_after: DateTime<Utc>,
    ) -> Result<usize> {
        let (failed_before, received_after) = (timestamp(failed_before), timestamp(received_after));
        let waiting: i64 = self.conn.query_row(
            "SELECT count(*) FROM route_deliveries d JOIN files f ON f.id = d.file_id
             WHERE d.route = ?1 AND d.state = 'failed' AND d.updated_at < ?2 AND f.received_at > ?3",
            params![route, failed_before, received_after],
            |r| r.get(0),
        )?;
        if waiting == 0 {
            return Ok(0);
        }
        Ok(self.conn.execute(
            "UPDATE route_deliveries SET state = 'pending'
             WHERE route = ?1 AND state = 'failed' AND updated_at < ?2
               AND file_id IN (SELECT id FROM files WHERE received_at > ?3)",
            params![route, failed_before, received_after],
        )?)
    }

    /// The route's pending files, oldest first.
    pub fn pending_routed(&self, route: &str) -> Result<Vec<Routed>> {
        let mut stmt = self.conn.prepare(
            "SELECT f.id, f.spool_name, f.partner, f.feed, f.sha256, f.size
             FROM route_deliveries d JOIN files f ON f.id = d.file_id
             WHERE d.route = ?1 AND d.state = 'pending' ORDER BY d.file_id",
        )?;
        let rows = stmt.query_map([route], |r| {
            Ok(Routed {
                file_id: r.get(0)?,
                spool_name: r.get(1)?,
                partner: r.get(2)?,
                feed: r.get(3)?,
                sha256: r.get(4)?,
                size: r.get::<_, i64>(5)? as u64,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// How a file's forwarding ended: `delivered`, `failed` or `refused`;
    /// a refusal is audited.
    pub fn finish_routed(
        &mut self,
        file_id: i64,
        route: &str,
        state: &str,
        attempts: u32,
        grant: Option<&str>,
        error: Option<&str>,
    ) -> Result<()> {
        let now = self.now();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        finish_route(&tx, &now, file_id, route, state, attempts, grant, error)?;
        tx.commit()?;
        Ok(())
    }

    /// Every route's forwarding of a file.
    pub fn route_deliveries(&self, file_id: i64) -> Result<Vec<RouteDelivery>> {
        let mut stmt = self.conn.prepare(
            "SELECT route, destination, state, attempts, grant_name, error, updated_at
             FROM route_deliveries WHERE file_id = ?1 ORDER BY route",
        )?;
        let rows = stmt.query_map([file_id], |r| {
            Ok(RouteDelivery {
                route: r.get(0)?,
                destination: r.get(1)?,
                state: r.get(2)?,
                attempts: r.get(3)?,
                grant: r.get(4)?,
                error: r.get(5)?,
                updated_at: r.get(6)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// How each forwarded file's forwardings stand: per file, the count of
    /// its routes in each state (`pending`, `delivered`, `failed`, `refused`).
    pub fn forwarding_states(
        &self,
    ) -> Result<std::collections::HashMap<i64, std::collections::BTreeMap<String, u64>>> {
        let mut stmt = self.conn.prepare(
            "SELECT file_id, state, count(*) FROM route_deliveries GROUP BY file_id, state",
        )?;
        let mut states: std::collections::HashMap<i64, std::collections::BTreeMap<String, u64>> =
            std::collections::HashMap::new();
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, u64>(2)?,
            ))
        })?;
        for row in rows {
            let (file_id, state, count) = row?;
            states.entry(file_id).or_default().insert(state, count);
        }
        Ok(states)
    }
}

/// Finishes a file's forwarding by a route, audited, in the caller's
/// transaction.
#[allow(clippy::too_many_arguments)]
pub(super) fn finish_route(
    tx: &rusqlite::Transaction<'_>,
    now: &str,
    file_id: i64,
    route: &str,
    state: &str,
    attempts: u32,
    grant: Option<&str>,
    error: Option<&str>,
) -> Result<()> {
    let (partner, destination): (String, String) = tx.query_row(
        "SELECT f.partner, d.destination FROM route_deliveries d JOIN files f ON f.id = d.file_id
         WHERE d.file_id = ?1 AND d.route = ?2",
        params![file_id, route],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    tx.execute(
        "UPDATE route_deliveries SET state = ?3, attempts = attempts + ?4, grant_name = ?5,
                error = ?6, updated_at = ?7
         WHERE file_id = ?1 AND route = ?2",
        params![file_id, route, state, attempts, grant, error, now],
    )?;
    append_audit(
        tx,
        now,
        &AuditEvent {
            partner: Some(&partner),
            action: if state == "refused" {
                "route_refused"
            } else {
                "route"
            },
            file_id: Some(file_id),
            detail: Some(serde_json::json!({
                "route": route,
                "destination": destination,
                "state": state,
                "grant": grant,
                "error": error,
            })),
            ..AuditEvent::default()
        },
    )?;
    Ok(())
}
