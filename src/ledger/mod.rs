//! The ledger: one SQLite database that is the source of truth for every file
//! dropgate has taken and every record it has loaded.
//!
//! Stages reach the database only through this module, so a second backend
//! (several nodes claiming work from PostgreSQL) can be added behind the same
//! methods. Schema changes are SQL files applied in order and tracked with
//! `PRAGMA user_version`; connection settings are applied on every open.

mod records;

use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde::Serialize;

pub use records::{DetailView, PersonView, RecordWriter};

/// Schema migrations, in order; the database's `user_version` is how many have run.
const MIGRATIONS: &[(&str, &str)] = &[
    ("0001_ledger", include_str!("migrations/0001_ledger.sql")),
    ("0002_records", include_str!("migrations/0002_records.sql")),
    ("0003_audit", include_str!("migrations/0003_audit.sql")),
    (
        "0004_deliveries",
        include_str!("migrations/0004_deliveries.sql"),
    ),
    (
        "0005_remote_taken",
        include_str!("migrations/0005_remote_taken.sql"),
    ),
    (
        "0006_source_status",
        include_str!("migrations/0006_source_status.sql"),
    ),
    (
        "0007_source_cleanup",
        include_str!("migrations/0007_source_cleanup.sql"),
    ),
];

/// How long (in ms) a connection waits for another's write transaction.
const BUSY_WAIT_MS: i32 = 600_000;

/// Where time comes from, so tests can fix it.
pub trait Clock: Send + Sync + fmt::Debug {
    fn now(&self) -> DateTime<Utc>;
}

#[derive(Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("ledger database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("cannot open the ledger at {path}: {source}")]
    Open {
        path: String,
        source: rusqlite::Error,
    },
    #[error("ledger migration {name} failed: {source}")]
    Migration {
        name: &'static str,
        source: rusqlite::Error,
    },
    #[error(
        "the ledger has schema version {found}, newer than this dropgate knows ({known}); use a newer dropgate"
    )]
    NewerSchema { found: i64, known: usize },
    #[error("no file with id {0}")]
    NotFound(i64),
    #[error("file {id} is {state}, not {expected}")]
    WrongState {
        id: i64,
        state: FileState,
        expected: FileState,
    },
}

impl LedgerError {
    /// Whether the database or the disk under it is at fault (busy, locked,
    /// full, unreadable) rather than what was being written.
    pub fn is_environmental(&self) -> bool {
        use rusqlite::ErrorCode::*;
        match self {
            LedgerError::Sqlite(rusqlite::Error::SqliteFailure(e, _))
            | LedgerError::Open {
                source: rusqlite::Error::SqliteFailure(e, _),
                ..
            } => matches!(
                e.code,
                DatabaseBusy
                    | DatabaseLocked
                    | DiskFull
                    | SystemIoFailure
                    | CannotOpen
                    | ReadOnly
                    | OutOfMemory
                    | DatabaseCorrupt
                    | NotADatabase
                    | PermissionDenied
            ),
            LedgerError::Open { .. } | LedgerError::Migration { .. } => true,
            _ => false,
        }
    }
}

pub type Result<T, E = LedgerError> = std::result::Result<T, E>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FileState {
    Received,
    Loaded,
    Quarantined,
    Duplicate,
}

impl FileState {
    pub fn as_str(self) -> &'static str {
        match self {
            FileState::Received => "received",
            FileState::Loaded => "loaded",
            FileState::Quarantined => "quarantined",
            FileState::Duplicate => "duplicate",
        }
    }
}

impl fmt::Display for FileState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl FromStr for FileState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "received" => Ok(FileState::Received),
            "loaded" => Ok(FileState::Loaded),
            "quarantined" => Ok(FileState::Quarantined),
            "duplicate" => Ok(FileState::Duplicate),
            _ => Err(format!(
                "unknown state `{s}`: expected received, loaded, quarantined or duplicate"
            )),
        }
    }
}

/// A file that has just been made durable in the spool.
#[derive(Debug, Clone)]
pub struct NewFile {
    pub source: String,
    pub partner: String,
    pub feed: Option<String>,
    pub name: String,
    pub spool_name: String,
    pub sha256: String,
    pub size: u64,
    /// The sender's copy is already gone (moved into the spool, not copied):
    /// recorded with the file, saving a second transaction.
    pub handed_over: bool,
    /// Uploaded to the embedded server from this address: the `upload`
    /// audit event is written in the same transaction.
    pub uploaded_from: Option<String>,
    /// Downloaded from a remote source: remembered as taken in the same
    /// transaction, so a crash cannot leave it received but not taken.
    pub taken_from: Option<RemotePath>,
}

/// A file on a remote server as it was listed when taken.
#[derive(Debug, Clone)]
pub struct RemotePath {
    pub path: String,
    pub size: u64,
    pub mtime: u32,
}

/// A file as the ledger knows it.
#[derive(Debug, Clone, Serialize)]
pub struct FileRow {
    pub id: i64,
    pub feed: Option<String>,
    pub source: String,
    pub partner: String,
    pub name: String,
    pub sha256: String,
    pub size: u64,
    pub state: FileState,
    pub records: u64,
    pub received_at: String,
    pub reason: Option<String>,
    pub rows_read: Option<u64>,
    pub rows_loaded: Option<u64>,
    pub problems: u64,
    pub attempts: u32,
    pub duplicate_of: Option<i64>,
    pub updated_at: String,
    pub sender_removed_at: Option<String>,
    #[serde(skip)]
    pub spool_name: String,
}

const FILE_COLUMNS: &str = "id, feed, source, partner, name, sha256, size, state, records, received_at, \
     reason, rows_read, rows_loaded, problems, attempts, duplicate_of, updated_at, \
     sender_removed_at, spool_name";

fn file_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<FileRow> {
    let state: String = row.get(7)?;
    Ok(FileRow {
        id: row.get(0)?,
        feed: row.get(1)?,
        source: row.get(2)?,
        partner: row.get(3)?,
        name: row.get(4)?,
        sha256: row.get(5)?,
        size: row.get(6)?,
        state: state.parse().map_err(|e: String| {
            rusqlite::Error::FromSqlConversionFailure(7, rusqlite::types::Type::Text, e.into())
        })?,
        records: row.get(8)?,
        received_at: row.get(9)?,
        reason: row.get(10)?,
        rows_read: row.get(11)?,
        rows_loaded: row.get(12)?,
        problems: row.get(13)?,
        attempts: row.get(14)?,
        duplicate_of: row.get(15)?,
        updated_at: row.get(16)?,
        sender_removed_at: row.get(17)?,
        spool_name: row.get(18)?,
    })
}

/// One appended event of a file's history.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    pub at: String,
    pub event: String,
    pub detail: Option<serde_json::Value>,
}

/// A validation problem as stored.
#[derive(Debug, Clone, Serialize)]
pub struct StoredProblem {
    pub line: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<u64>,
    pub code: String,
    pub message: String,
}

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

/// What `dropgate status` shows.
#[derive(Debug, Serialize)]
pub struct Status {
    pub sources: Vec<SourceStatus>,
    /// Files per state.
    pub files: Vec<(String, u64)>,
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

#[derive(Debug, Default, Clone)]
pub struct FileFilter {
    pub state: Option<FileState>,
    pub feed: Option<String>,
}

/// How a processing attempt ended, to be written with its records.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub state: FileState,
    pub feed: Option<String>,
    pub reason: Option<String>,
    pub rows_read: Option<u64>,
    pub rows_loaded: Option<u64>,
    pub records: u64,
    pub duplicate_of: Option<i64>,
    /// Total problems found (may exceed `problems.len()`).
    pub problem_count: u64,
    pub problems: Vec<crate::problem::Problem>,
    /// Event detail (no patient identifiers).
    pub detail: serde_json::Value,
}

pub struct Ledger {
    conn: Connection,
    clock: Arc<dyn Clock>,
}

fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

impl Ledger {
    /// Opens (creating and migrating when needed) the ledger at `path`.
    pub fn open(path: &Path, clock: Arc<dyn Clock>) -> Result<Ledger> {
        let conn = Connection::open(path).map_err(|source| LedgerError::Open {
            path: path.display().to_string(),
            source,
        })?;
        Self::with_connection(conn, clock)
    }

    /// An in-memory ledger, for tests and benchmarks.
    pub fn open_in_memory(clock: Arc<dyn Clock>) -> Result<Ledger> {
        Self::with_connection(Connection::open_in_memory()?, clock)
    }

    fn with_connection(mut conn: Connection, clock: Arc<dyn Clock>) -> Result<Ledger> {
        // A large file's load holds the write lock for its whole
        // transaction; a landing must wait for it, not fail. Polled every
        // millisecond rather than with SQLite's growing sleeps, so a waiting
        // landing takes the lock in the short gap between two batches.
        conn.busy_handler(Some(|attempt| {
            std::thread::sleep(Duration::from_millis(1));
            attempt < BUSY_WAIT_MS
        }))?;
        conn.set_prepared_statement_cache_capacity(64);
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = FULL;
             PRAGMA foreign_keys = ON;
             PRAGMA cache_size = -32768;
             PRAGMA temp_store = MEMORY;",
        )?;
        migrate(&mut conn)?;
        Ok(Ledger { conn, clock })
    }

    pub fn now(&self) -> String {
        timestamp(self.clock.now())
    }

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
                if let Some(remote) = &f.uploaded_from {
                    append_audit(
                        &tx,
                        &now,
                        &AuditEvent {
                            partner: Some(&f.partner),
                            remote: Some(remote),
                            action: "upload",
                            file_id: Some(id),
                            detail: None,
                        },
                    )?;
                }
                ids.push(id);
            }
        }
        tx.commit()?;
        Ok(ids)
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
        Ok(self
            .conn
            .prepare_cached(
                "SELECT id FROM files
                 WHERE source = ?1 AND name = ?2 AND size = ?3 AND sha256 = ?4
                   AND sender_removed_at IS NULL
                 ORDER BY id DESC LIMIT 1",
            )?
            .query_row(params![source, name, size, sha256], |r| r.get(0))
            .optional()?)
    }

    /// Files waiting to be processed, oldest first.
    pub fn pending(&self, limit: usize) -> Result<Vec<FileRow>> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {FILE_COLUMNS} FROM files WHERE state = 'received' ORDER BY id LIMIT ?1"
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
        let state: Option<String> = tx
            .query_row("SELECT state FROM files WHERE id = ?1", [id], |r| r.get(0))
            .optional()?;
        let state: FileState = state
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

    /// Appends an audit event, chained to the one before it.
    pub fn audit(&mut self, event: &AuditEvent<'_>) -> Result<()> {
        let at = self.now();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        append_audit(&tx, &at, event)?;
        tx.commit()?;
        Ok(())
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
        Ok(())
    }

    /// Audit events, oldest first, and whether the hash chain is intact up to each.
    pub fn audit_events(&self) -> Result<Vec<AuditRow>> {
        let mut stmt = self.conn.prepare(
            "SELECT id, at, partner, remote, action, file_id, detail, prev_hash, hash
             FROM audit_events ORDER BY id",
        )?;
        let rows = stmt.query_map([], |r| {
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
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Appends one delivery event (an attempt that failed, or the outcome).
    pub fn delivery(&mut self, event: &DeliveryEvent<'_>) -> Result<()> {
        let at = self.now();
        self.conn
            .prepare_cached(
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

    /// Notes the server copies a source has yet to remove, and why the
    /// latest attempt failed.
    pub fn source_cleanups(
        &mut self,
        source: &str,
        pending: u64,
        error: Option<&str>,
    ) -> Result<()> {
        let now = self.now();
        self.conn
            .prepare_cached(
                "INSERT INTO source_status (source, checked_at, cleanups_pending, cleanup_error)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (source) DO UPDATE SET cleanups_pending = ?3, cleanup_error = ?4",
            )?
            .execute(params![source, now, pending, error])?;
        Ok(())
    }

    /// Notes how a source's latest poll went (`error` is `None` on success).
    pub fn source_checked(&mut self, source: &str, error: Option<&str>) -> Result<()> {
        let now = self.now();
        self.conn
            .prepare_cached(
                "INSERT INTO source_status (source, checked_at, last_ok_at, last_error, last_error_at)
                 VALUES (?1, ?2, CASE WHEN ?3 IS NULL THEN ?2 END, ?3, CASE WHEN ?3 IS NOT NULL THEN ?2 END)
                 ON CONFLICT (source) DO UPDATE SET
                    checked_at = ?2,
                    last_ok_at = CASE WHEN ?3 IS NULL THEN ?2 ELSE last_ok_at END,
                    last_error = COALESCE(?3, last_error),
                    last_error_at = CASE WHEN ?3 IS NOT NULL THEN ?2 ELSE last_error_at END",
            )?
            .execute(params![source, now, error])?;
        Ok(())
    }

    /// Every source's latest poll, and the count of files in each state.
    pub fn status(&self) -> Result<Status> {
        let mut stmt = self.conn.prepare(
            "SELECT source, checked_at, last_ok_at, last_error, last_error_at, cleanups_pending, cleanup_error
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
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        let mut stmt = self
            .conn
            .prepare("SELECT state, count(*) FROM files GROUP BY state ORDER BY state")?;
        let files = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, u64>(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        Ok(Status { sources, files })
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

    /// Starts a write transaction in which files are processed.
    pub fn begin(&mut self) -> Result<Batch<'_>> {
        Ok(Batch {
            tx: self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)?,
            clock: self.clock.clone(),
        })
    }

    pub fn person_by_nhs_number(&self, nhs_number: &str) -> Result<Option<PersonView>> {
        records::person_by_nhs_number(&self.conn, nhs_number)
    }

    pub fn person_by_local_id(&self, source: &str, local_id: &str) -> Result<Option<PersonView>> {
        records::person_by_local_id(&self.conn, source, local_id)
    }

    /// The raw connection, for benchmarks that compare against bare SQLite.
    pub fn connection(&mut self) -> &mut Connection {
        &mut self.conn
    }
}

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

fn loaded_copy(conn: &Connection, feed: &str, sha256: &str, id: i64) -> Result<Option<i64>> {
    Ok(conn
        .prepare_cached(
            "SELECT id FROM files WHERE feed = ?1 AND sha256 = ?2 AND state = 'loaded' AND id <> ?3
             ORDER BY id LIMIT 1",
        )?
        .query_row(params![feed, sha256, id], |r| r.get(0))
        .optional()?)
}

fn migrate(conn: &mut Connection) -> Result<()> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version > MIGRATIONS.len() as i64 {
        return Err(LedgerError::NewerSchema {
            found: version,
            known: MIGRATIONS.len(),
        });
    }
    for (index, (name, sql)) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        let fail = |source| LedgerError::Migration { name, source };
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Exclusive)
            .map_err(fail)?;
        // Another process may have migrated while we waited for the lock.
        let now: i64 = tx
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(fail)?;
        if now > index as i64 {
            continue;
        }
        tx.execute_batch(sql).map_err(fail)?;
        tx.pragma_update(None, "user_version", index as i64 + 1)
            .map_err(fail)?;
        tx.commit().map_err(fail)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;

fn mark_sender_removed(tx: &rusqlite::Transaction<'_>, id: i64, now: &str) -> Result<()> {
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

/// Appends to the hash chain; the caller's transaction makes read-and-append atomic.
fn append_audit(tx: &rusqlite::Transaction<'_>, at: &str, event: &AuditEvent<'_>) -> Result<()> {
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
    Ok(())
}
