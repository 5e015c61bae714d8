//! The ledger: one SQLite database that is the source of truth for every file
//! dropgate has taken and every record it has loaded.
//!
//! Stages reach the database only through this module, so a second backend
//! (several nodes claiming work from PostgreSQL) can be added behind the same
//! methods. The one exception is each record kind's writer (`records/`),
//! which writes its own tables through the connection of a transaction this
//! module opened: a second backend gives each kind a second writer. Schema
//! changes are SQL files applied in order and tracked with `PRAGMA
//! user_version`; connection settings are applied on every open.

mod alerts;
mod audit;
mod batch;
mod exports;
mod files;
mod migrations;
mod records;
mod retention;
mod routes;
mod status;

use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::Connection;
use serde::Serialize;

pub use alerts::AlertRow;
use audit::append_audit;
pub use audit::{AuditEvent, AuditRow, QueuedAuditEvent};
pub use batch::Batch;
use batch::loaded_copy;
pub use exports::{
    LoadedFile, PendingDelivery, RunEnd, RunOutcome, RunRow, RunStart, Snapshot, Watermark,
};
#[cfg(test)]
use migrations::MIGRATIONS;
use migrations::migrate;
pub use records::{
    DETAIL_COLUMNS, DetailRecord, DetailVersion, DetailView, LinkChange, LinkRefused, NameSearch,
    ObservationRecord, PersonRecords, PersonView,
};
pub use retention::{Counts, Hold, HoldOn, KeptExport, KeptPayload, KeptRecords, Measure};
pub use routes::{RouteDelivery, Routed};
pub use status::{
    DeliveryEvent, DestinationActivity, FeedActivity, PollReport, Settles, SourceStatus, Status,
};

/// How long (in ms) a connection waits for another's write transaction.
const BUSY_WAIT_MS: i32 = 600_000;
/// How many busy attempts (about a millisecond each) pass between warnings.
const BUSY_WARN_EVERY: i32 = 3_000;

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
    #[error("cannot create the ledger at {path}: {source}")]
    Create {
        path: String,
        source: std::io::Error,
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
    #[error("export run {0} has already ended")]
    RunEnded(i64),
    #[error("file {id}'s payload was deleted at {at}, past its retention")]
    Purged { id: i64, at: String },
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
            LedgerError::Open { .. }
            | LedgerError::Create { .. }
            | LedgerError::Migration { .. } => true,
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
    /// The file's bytes, for a small file: kept in the ledger from this
    /// commit on, instead of a copy in the spool ([`Ledger::held_bodies`]).
    pub held: Option<Vec<u8>>,
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
    /// When retention deleted its payload (and receipt).
    pub payload_purged_at: Option<String>,
    /// When retention deleted its records.
    pub records_purged_at: Option<String>,
    #[serde(skip)]
    pub spool_name: String,
}

const FILE_COLUMNS: &str = "id, feed, source, partner, name, sha256, size, state, records, received_at, \
     reason, rows_read, rows_loaded, problems, attempts, duplicate_of, updated_at, \
     sender_removed_at, spool_name, payload_purged_at, records_purged_at";

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
        payload_purged_at: row.get(19)?,
        records_purged_at: row.get(20)?,
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

/// How the ledger writes a time: RFC 3339, milliseconds, UTC.
pub fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

impl Ledger {
    /// Opens (creating and migrating when needed) the ledger at `path`,
    /// created readable by its owner alone (SQLite gives its WAL and
    /// shared-memory files the same mode).
    pub fn open(path: &Path, clock: Arc<dyn Clock>) -> Result<Ledger> {
        use std::os::unix::fs::OpenOptionsExt;
        // An empty file is a new database to SQLite.
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
        {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(source) => {
                return Err(LedgerError::Create {
                    path: path.display().to_string(),
                    source,
                });
            }
        }
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
            if attempt > 0 && attempt % BUSY_WARN_EVERY == 0 {
                // Another process (an admin's sqlite3 shell, a backup)
                // holding the lock looks like a hang unless it is said.
                tracing::warn!(
                    waited_s = attempt / 1000,
                    "the ledger is locked by another writer; waiting for it"
                );
            }
            std::thread::sleep(Duration::from_millis(1));
            attempt < BUSY_WAIT_MS
        }))?;
        conn.set_prepared_statement_cache_capacity(64);
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = FULL;
             PRAGMA foreign_keys = ON;
             PRAGMA cache_size = -32768;
             PRAGMA temp_store = FILE;",
        )?;
        // A migration may sort a whole table: on disk, its memory stays that
        // of the page cache. Afterwards temporary tables are small.
        migrate(&mut conn)?;
        conn.execute_batch("PRAGMA temp_store = MEMORY;")?;
        Ok(Ledger { conn, clock })
    }

    pub fn now(&self) -> String {
        timestamp(self.clock.now())
    }

    pub fn person_by_nhs_number(&self, nhs_number: &str) -> Result<Option<PersonView>> {
        records::person_by_nhs_number(&self.conn, nhs_number)
    }

    pub fn person_by_local_id(&self, source: &str, local_id: &str) -> Result<Option<PersonView>> {
        records::person_by_local_id(&self.conn, source, local_id)
    }

    pub fn persons_by_name(&self, search: &NameSearch<'_>) -> Result<Vec<PersonView>> {
        records::persons_by_name(&self.conn, search)
    }

    /// The person holding a detail, with their records (at most
    /// `observations` of their observations, newest first).
    pub fn person_records(
        &self,
        detail_id: i64,
        observations: usize,
    ) -> Result<Option<PersonRecords>> {
        records::person_records(&self.conn, detail_id, observations)
    }

    /// `patients link`: makes the persons of two details one, by hand, with
    /// an audit event saying who and why, in one transaction.
    pub fn link_details(
        &mut self,
        detail: i64,
        other: i64,
        by: &str,
        reason: &str,
    ) -> Result<std::result::Result<LinkChange, LinkRefused>> {
        self.change_link("patients_link", by, reason, [detail, other], |tx| {
            records::link(tx, detail, other)
        })
    }

    /// `patients unlink`: gives a detail a person of its own, by hand, with
    /// an audit event saying who and why, in one transaction.
    pub fn unlink_detail(
        &mut self,
        detail: i64,
        by: &str,
        reason: &str,
    ) -> Result<std::result::Result<LinkChange, LinkRefused>> {
        self.change_link("patients_unlink", by, reason, [detail, detail], |tx| {
            records::unlink(tx, detail)
        })
    }

    fn change_link(
        &mut self,
        action: &str,
        by: &str,
        reason: &str,
        named: [i64; 2],
        change: impl FnOnce(
            &rusqlite::Transaction<'_>,
        ) -> Result<std::result::Result<LinkChange, LinkRefused>>,
    ) -> Result<std::result::Result<LinkChange, LinkRefused>> {
        let now = self.now();
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let changed = match change(&tx)? {
            Ok(changed) => changed,
            Err(refused) => return Ok(Err(refused)),
        };
        let mut named = named.to_vec();
        named.dedup();
        audit::append_audit(
            &tx,
            &now,
            &AuditEvent {
                action,
                detail: Some(serde_json::json!({
                    "by": by,
                    "reason": reason,
                    "details": named,
                    "person_id": changed.person_id,
                    "previous_person_id": changed.previous_person_id,
                })),
                ..AuditEvent::default()
            },
        )?;
        tx.commit()?;
        Ok(Ok(changed))
    }

    /// The raw connection, for benchmarks that compare against bare SQLite.
    pub fn connection(&mut self) -> &mut Connection {
        &mut self.conn
    }
}

#[cfg(test)]
mod tests;

/// Ledgers for unit tests here and in the stages.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    pub(crate) fn ledger() -> Ledger {
        Ledger::open_in_memory(Arc::new(SystemClock)).unwrap()
    }

    pub(crate) fn received(ledger: &mut Ledger, name: &str) -> i64 {
        ledger
            .record_received(&[NewFile {
                source: "drop".into(),
                partner: "care".into(),
                feed: Some("news2".into()),
                name: name.into(),
                spool_name: format!("spool-{name}"),
                sha256: "ab".repeat(32),
                size: 10,
                handed_over: false,
                uploaded_from: None,
                taken_from: None,
                held: None,
            }])
            .unwrap()[0]
    }
}
