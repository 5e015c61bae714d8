//! The one place that says in which order a file goes through the stages:
//!
//! ```text
//! receive ─► land ─► decrypt ─► validate ─► map ─► load
//! ```
//!
//! Sources (`receive`) hand complete files to [`crate::land`], which makes them
//! durable and `received`. [`Processor`] then takes received files from the
//! ledger: a reader thread decrypts, validates and maps while the calling
//! thread loads, so the two overlap; both are bounded, so memory does not grow
//! with file size.
//!
//! The ledger's write lock is held only while there is something to write:
//! a large file is read until its first rows are ready before its
//! transaction begins, so a file that is slow to read (or yields nothing)
//! never holds up landings. A file whose processing keeps failing is
//! quarantined as `internal_error` after [`MAX_FAILURES`] attempts, so it
//! can never hold up the files behind it.

use std::fs::File;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::sync_channel;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::config::{Config, Feed, FeedMatch, OnError};
use crate::decrypt::{self, DecryptError};
use crate::formats;
use crate::land::Landings;
use crate::ledger::{Batch, FileRow, FileState, Ledger, LedgerError, Outcome};
use crate::load;
use crate::metrics::{CodeLabel, FeedLabel, METRICS, ProcessedLabels, ReasonLabel};
use crate::problem::{Code, Problem, Reason};
use crate::records::{self, Records, Writer};
use crate::schema::Encoding;
use crate::spool::{self, Spool};
use crate::text;
use crate::validate::{ReadError, Uniqueness};

mod outcome;
mod read;

pub use outcome::quarantine_report;
use outcome::{duplicate, file_problem, payload_missing, rejected};
use read::{Attempt, Failure, Payload, RowChannel, accepts, catch_panic, internal_failure};

/// Files up to this size are read whole before loading, on one thread.
const READ_WHOLE_BYTES: u64 = 256 << 10;
/// Rows sent from the reader to the loader at a time.
const ROWS_PER_BATCH: usize = 1024;
/// Batches in flight between reader and loader.
const BATCHES_IN_FLIGHT: usize = 4;
/// Small files are processed together in one transaction, up to this many bytes.
const BATCH_BYTES: u64 = 8 << 20;
const BATCH_TIME: Duration = Duration::from_millis(50);
const BATCH_FILES: usize = 256;
/// Small files read ahead of the loader: at most this many, of at most
/// [`READ_WHOLE_BYTES`] each, wait mapped in memory.
const FILES_READ_AHEAD: usize = 8;
/// Failed attempts at one file before it is quarantined as `internal_error`.
pub const MAX_FAILURES: u32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error("spool: {0}")]
    Spool(#[from] std::io::Error),
    #[error("cannot start a thread to read the file: {0}")]
    Thread(std::io::Error),
}

impl ProcessError {
    /// Whether the cause lies outside the file in hand (disk full, database
    /// locked or unreadable): waiting may cure it, and the file is not to blame.
    pub fn is_environmental(&self) -> bool {
        match self {
            ProcessError::Spool(_) | ProcessError::Thread(_) => true,
            ProcessError::Ledger(e) => e.is_environmental(),
        }
    }
}

/// Processing stopped on an error, while working on `file` if it is known.
struct Stuck {
    file_id: Option<i64>,
    error: Box<ProcessError>,
}

impl Stuck {
    fn on(file: &FileRow) -> impl FnOnce(ProcessError) -> Stuck {
        let id = file.id;
        move |error| Stuck {
            file_id: Some(id),
            error: Box::new(error),
        }
    }
}

impl<E: Into<ProcessError>> From<E> for Stuck {
    fn from(error: E) -> Stuck {
        Stuck {
            file_id: None,
            error: Box::new(error.into()),
        }
    }
}

/// A settled file in the metrics: its state, rows, records and problems,
/// and how long it took from receipt.
fn count(file: &FileRow, outcome: &Outcome, now: chrono::DateTime<chrono::Utc>) {
    let feed = outcome.feed.as_deref().unwrap_or("-");
    let state = outcome.state.to_string();
    METRICS
        .files_processed
        .get_or_create(&ProcessedLabels {
            feed: feed.to_string(),
            state,
        })
        .inc();
    if let Some(reason) = &outcome.reason
        && outcome.state == FileState::Quarantined
    {
        METRICS
            .quarantines
            .get_or_create(&ReasonLabel {
                reason: reason.clone(),
            })
            .inc();
    }
    let label = FeedLabel {
        feed: feed.to_string(),
    };
    if outcome.state == FileState::Loaded {
        METRICS
            .rows
            .get_or_create(&label)
            .inc_by(outcome.rows_loaded.unwrap_or(0));
        METRICS
            .records
            .get_or_create(&label)
            .inc_by(outcome.records);
    }
    for problem in &outcome.problems {
        METRICS
            .problems
            .get_or_create(&CodeLabel {
                code: problem.code.as_str().to_string(),
            })
            .inc();
    }
    if let Ok(received) = chrono::DateTime::parse_from_rfc3339(&file.received_at) {
        let took = (now - received.with_timezone(&chrono::Utc)).to_std();
        METRICS
            .processing_seconds
            .get_or_create(&label)
            .observe(took.unwrap_or_default().as_secs_f64());
    }
}

/// How one file ended.
#[derive(Debug, Clone)]
pub struct Processed {
    pub id: i64,
    pub name: String,
    pub state: FileState,
    pub reason: Option<String>,
    pub records: u64,
}

/// Counts the rows a sample would load, and keeps none.
#[derive(Default)]
struct Counted(u64);

impl read::RowSink for Counted {
    fn send(&mut self, rows: Vec<Records>) -> bool {
        self.0 += rows.len() as u64;
        true
    }
}

/// A small file as the reader thread left it for the loader.
enum ReadAhead<'c> {
    /// No feed, or more than one, matches it.
    NoFeed(Box<Outcome>),
    /// Its payload is not in the spool.
    Missing(&'c Feed),
    Read {
        feed: &'c Feed,
        attempt: Attempt,
        rows: Vec<Vec<Records>>,
    },
    /// Stopped for shutdown; the file stays `received`.
    Cancelled,
}

/// How streaming a large file ended.
enum Streamed {
    /// Written and committed.
    Done(Outcome),
    /// Text read as UTF-8 must be read again as Windows-1252.
    ReadAgain,
    /// Stopped for shutdown; the file stays `received`.
    Cancelled,
    /// Another process settled the file meanwhile.
    Taken,
}

/// When processing last showed it is alive: each block of input read and
/// each turn of the daemon's processing loop beats it. A watchdog asks how
/// long ago that was: a processor stuck on a lock or in a loop stops beating,
/// while one busy with a large file keeps reading, so keeps beating.
#[derive(Clone)]
pub struct Progress {
    start: tokio::time::Instant,
    /// Milliseconds from `start` to the last beat.
    last: Arc<AtomicU64>,
    /// Bytes of files' plaintext read, for a progress bar.
    bytes: Arc<AtomicU64>,
}

impl Default for Progress {
    fn default() -> Self {
        Progress {
            start: tokio::time::Instant::now(),
            last: Arc::new(AtomicU64::new(0)),
            bytes: Arc::new(AtomicU64::new(0)),
        }
    }
}

impl Progress {
    pub fn beat(&self) {
        let now = self.start.elapsed().as_millis() as u64;
        self.last.fetch_max(now, Ordering::Relaxed);
    }

    fn read(&self, bytes: usize) {
        self.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// Bytes of plaintext read so far.
    pub fn bytes_read(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// How long since the last beat.
    pub fn quiet_for(&self) -> Duration {
        let last = Duration::from_millis(self.last.load(Ordering::Relaxed));
        self.start.elapsed().saturating_sub(last)
    }
}

/// Takes received files through decrypt, validate, map and load.
pub struct Processor {
    config: Arc<Config>,
    identity: age::x25519::Identity,
    spool: Spool,
    landings: Landings,
    progress: Progress,
}

impl Processor {
    pub fn new(config: Arc<Config>, identity: age::x25519::Identity) -> Processor {
        let spool = Spool::new(&config.daemon.spool);
        Processor {
            config,
            identity,
            spool,
            landings: Landings::default(),
            progress: Progress::default(),
        }
    }

    /// The same processor (its landings and progress shared) with a reloaded
    /// configuration and age identity.
    pub fn reconfigured(&self, config: Arc<Config>, identity: age::x25519::Identity) -> Processor {
        Processor {
            spool: Spool::new(&config.daemon.spool),
            config,
            identity,
            landings: self.landings.clone(),
            progress: self.progress.clone(),
        }
    }

    /// What landers report to, so processing makes way for them.
    pub fn landings(&self) -> Landings {
        self.landings.clone()
    }

    /// What shows this processor is not stuck.
    pub fn progress(&self) -> Progress {
        self.progress.clone()
    }

    /// Processes received files until none is left, `hold` is set (then
    /// the batch in hand is finished first and no other begun) or `stop` is
    /// set (a file being read then is left `received`).
    pub fn drain(
        &self,
        ledger: &mut Ledger,
        stop: &AtomicBool,
        hold: &AtomicBool,
    ) -> Result<Vec<Processed>, ProcessError> {
        let mut done = Vec::new();
        while !stop.load(Ordering::SeqCst) && !hold.load(Ordering::SeqCst) {
            let pending = ledger.pending(BATCH_FILES)?;
            if pending.is_empty() {
                break;
            }
            self.process_into(ledger, pending, stop, &mut done)?;
        }
        Ok(done)
    }

    /// Processes the given files (those still `received`).
    pub fn process(
        &self,
        ledger: &mut Ledger,
        files: Vec<FileRow>,
        stop: &AtomicBool,
    ) -> Result<Vec<Processed>, ProcessError> {
        let mut done = Vec::new();
        self.process_into(ledger, files, stop, &mut done)?;
        Ok(done)
    }

    /// Processes files, counting a failure against the file in hand; after
    /// [`MAX_FAILURES`] the file is quarantined and the rest go on. Errors
    /// that are not the file's fault (disk full, database locked) are
    /// returned for the caller to wait on.
    fn process_into(
        &self,
        ledger: &mut Ledger,
        mut files: Vec<FileRow>,
        stop: &AtomicBool,
        done: &mut Vec<Processed>,
    ) -> Result<(), ProcessError> {
        loop {
            let stuck = match self.process_batch(ledger, files.clone(), stop, done) {
                Ok(()) => return Ok(()),
                Err(stuck) => stuck,
            };
            let id = match stuck.file_id {
                Some(id) if !stuck.error.is_environmental() => id,
                _ => return Err(*stuck.error),
            };
            let file = ledger.file(id)?;
            let reason = text::truncated(&stuck.error.to_string(), 200).into_owned();
            let failures = ledger.processing_failed(file.id, &reason)?;
            tracing::error!(file_id = file.id, failures, error = %reason, "processing a file failed");
            if failures >= MAX_FAILURES
                && let Some(processed) = self.give_up(ledger, &file, &reason)?
            {
                done.push(processed);
            }
            files.retain(|f| {
                ledger
                    .file(f.id)
                    .is_ok_and(|now| now.state == FileState::Received)
            });
        }
    }

    /// Quarantines a file that processing keeps failing on.
    fn give_up(
        &self,
        ledger: &mut Ledger,
        file: &FileRow,
        reason: &str,
    ) -> Result<Option<Processed>, ProcessError> {
        let outcome = rejected(
            None,
            Reason::InternalError,
            file_problem(
                Code::InternalError,
                format!(
                    "processing failed {MAX_FAILURES} times ({reason}); the file is kept: \
                     `dropgate replay {}` tries again",
                    file.id
                ),
            ),
        );
        let Some(outcome) = self.write_outcome(ledger, file, outcome)? else {
            return Ok(None);
        };
        let mut done = Vec::new();
        self.settled(ledger, vec![(file.clone(), outcome)], &mut done)?;
        Ok(done.pop())
    }

    /// Processes files in as few transactions as their sizes allow,
    /// appending those settled to `done`.
    fn process_batch(
        &self,
        ledger: &mut Ledger,
        files: Vec<FileRow>,
        stop: &AtomicBool,
        done: &mut Vec<Processed>,
    ) -> Result<(), Stuck> {
        let mut rest = files.into_iter().peekable();
        while let Some(next) = rest.peek() {
            if stop.load(Ordering::SeqCst) {
                break;
            }
            if next.size > READ_WHOLE_BYTES {
                let file = rest.next().expect("peeked");
                let outcome = self
                    .process_large(ledger, &file, stop)
                    .map_err(Stuck::on(&file))?;
                if let Some(outcome) = outcome {
                    self.settled(ledger, vec![(file, outcome)], done)?;
                }
                continue;
            }
            let mut small = Vec::new();
            while let Some(file) = rest.next_if(|f| f.size <= READ_WHOLE_BYTES) {
                small.push(file);
            }
            self.process_small_files(ledger, small, stop, done)?;
        }
        Ok(())
    }

    /// Small files: a reader thread decrypts, validates and maps the next
    /// few while this one loads the last into the open transaction, so a
    /// run of small files keeps both cores busy.
    fn process_small_files(
        &self,
        ledger: &mut Ledger,
        files: Vec<FileRow>,
        stop: &AtomicBool,
        done: &mut Vec<Processed>,
    ) -> Result<(), Stuck> {
        let ids: Vec<i64> = files.iter().map(|f| f.id).collect();
        let mut in_ledger = ledger.held_bodies(&ids)?;
        let (tx, rx) = sync_channel::<(FileRow, ReadAhead<'_>)>(FILES_READ_AHEAD);
        std::thread::scope(|scope| {
            std::thread::Builder::new()
                .name("reader".into())
                .spawn_scoped(scope, move || {
                    for file in files {
                        if stop.load(Ordering::SeqCst) {
                            break;
                        }
                        let payload = self.payload(&file, in_ledger.remove(&file.id));
                        let read = self.read_small(&file, payload, stop);
                        if tx.send((file, read)).is_err() {
                            break;
                        }
                    }
                })
                .map_err(|e| Stuck::from(ProcessError::Thread(e)))?;
            // Dropped on any return, so the reader stops at its next send.
            let mut ready = rx.into_iter().peekable();
            while ready.peek().is_some() && !stop.load(Ordering::SeqCst) {
                let turn = self.landings.processing();
                let mut batch = ledger.begin()?;
                let started = Instant::now();
                let mut settled = Vec::new();
                let mut bytes = 0;
                // A transaction ends after a size or a time, whichever comes
                // first, or at once when a landing waits for the write lock.
                while let Some((file, read)) = ready.next_if(|(f, _)| {
                    !stop.load(Ordering::SeqCst)
                        && (settled.is_empty()
                            || (bytes + f.size <= BATCH_BYTES
                                && started.elapsed() < BATCH_TIME
                                && !self.landings.any()))
                }) {
                    bytes += file.size;
                    let outcome = self
                        .load_small(&mut batch, &file, read)
                        .map_err(Stuck::on(&file))?;
                    if let Some(outcome) = outcome {
                        batch
                            .finish(file.id, &outcome)
                            .map_err(|e| Stuck::on(&file)(e.into()))?;
                        settled.push((file, outcome));
                    }
                }
                batch.commit()?;
                drop(turn);
                self.settled(ledger, settled, done)?;
            }
            Ok(())
        })
    }

    /// After the commit: payloads to their folders, then the log lines.
    fn settled(
        &self,
        ledger: &Ledger,
        settled: Vec<(FileRow, Outcome)>,
        done: &mut Vec<Processed>,
    ) -> Result<(), ProcessError> {
        let mut moved = false;
        for (file, outcome) in &settled {
            moved |= self.settle(ledger, file, outcome.state)?;
        }
        if moved {
            self.spool.sync()?;
        }
        let now = chrono::Utc::now();
        for (file, outcome) in settled {
            count(&file, &outcome, now);
            tracing::info!(
                file_id = file.id,
                feed = outcome.feed.as_deref().unwrap_or("-"),
                state = %outcome.state,
                reason = outcome.reason.as_deref().unwrap_or(""),
                records = outcome.records,
                "processed"
            );
            done.push(Processed {
                id: file.id,
                name: file.name,
                state: outcome.state,
                reason: outcome.reason,
                records: outcome.records,
            });
        }
        Ok(())
    }

    /// Moves a payload to the folder its state calls for, writing the
    /// quarantine report first; returns whether a spool folder changed
    /// (made durable by [`Spool::sync`]). A small file's bytes stay in the
    /// ledger, unless it is quarantined: then they are written beside its
    /// report, durably, before the ledger lets them go. Safe to repeat.
    pub fn settle(
        &self,
        ledger: &Ledger,
        file: &FileRow,
        state: FileState,
    ) -> Result<bool, ProcessError> {
        if state == FileState::Quarantined {
            let report = quarantine_report(ledger, file.id)?;
            let bytes = serde_json::to_vec_pretty(&report).expect("a report serialises");
            spool::write_durably(&self.spool.report_path(&file.spool_name), &bytes)?;
            if let Some(body) = ledger.held_body(file.id)? {
                let path = self.spool.path(spool::Area::Quarantine, &file.spool_name);
                spool::write_durably(&path, &body)?;
                ledger.release_held(file.id)?;
                return Ok(false);
            }
        } else if ledger.holds_payload(file.id)? {
            return Ok(false);
        }
        self.spool.settle(&file.spool_name, state)?;
        Ok(true)
    }

    /// Where a received file's bytes are: the ledger's, when it holds them
    /// (`held`), or the spool's copy; `None` when neither has them.
    fn payload(&self, file: &FileRow, held: Option<Arc<[u8]>>) -> Option<Payload> {
        match held {
            Some(body) => Some(Payload::Ledger(body)),
            None => self
                .spool
                .received_payload(&file.spool_name)
                .map(Payload::Spool),
        }
    }

    /// Small files quarantined just before a stop, their bytes still in the
    /// ledger and not yet beside their reports: written out now.
    pub fn settle_held_quarantined(&self, ledger: &Ledger) -> Result<(), ProcessError> {
        for file in ledger.held_and_quarantined()? {
            self.settle(ledger, &file, file.state)?;
        }
        Ok(())
    }

    fn feed<'c>(&'c self, file: &FileRow) -> Result<&'c Feed, Box<Outcome>> {
        if let Some(feed) = file.feed.as_ref().and_then(|f| self.config.feeds.get(f)) {
            return Ok(feed);
        }
        match self.config.feed_for(&file.partner, &file.name) {
            FeedMatch::One(feed) => Ok(feed),
            FeedMatch::None => Err(Box::new(rejected(
                None,
                Reason::NoFeed,
                file_problem(
                    Code::NoFeed,
                    format!(
                        "no feed of partner `{}` matches the file name; add one or fix its `match` globs, then replay",
                        file.partner
                    ),
                ),
            ))),
            FeedMatch::Ambiguous(a, b) => Err(Box::new(rejected(
                None,
                Reason::AmbiguousFeed,
                file_problem(
                    Code::AmbiguousFeed,
                    format!("feeds `{a}` and `{b}` both match the file name"),
                ),
            ))),
        }
    }

    /// A small file read whole, outside any transaction; what can be
    /// decided without the ledger.
    fn read_small<'c>(
        &'c self,
        file: &FileRow,
        payload: Option<Payload>,
        stop: &AtomicBool,
    ) -> ReadAhead<'c> {
        let feed = match self.feed(file) {
            Ok(feed) => feed,
            Err(outcome) => return ReadAhead::NoFeed(outcome),
        };
        let Some(payload) = payload else {
            return ReadAhead::Missing(feed);
        };
        let received = self.received_day(file);
        let (attempt, rows) = self.read_whole::<Vec<Vec<Records>>>(feed, &payload, received, stop);
        if attempt.cancelled {
            return ReadAhead::Cancelled;
        }
        ReadAhead::Read {
            feed,
            attempt,
            rows,
        }
    }

    /// Reads a whole file into a fresh `S`; read again as Windows-1252 when
    /// an `auto` file turns out not to be UTF-8 part way through.
    fn read_whole<S: read::RowSink + Default>(
        &self,
        feed: &Feed,
        payload: &Payload,
        received: chrono::NaiveDate,
        stop: &AtomicBool,
    ) -> (Attempt, S) {
        let mut encoding = feed.schema.encoding;
        loop {
            let mut sink = S::default();
            let attempt =
                catch_panic(|| self.read(feed, payload, encoding, received, stop, &mut sink));
            if attempt.encoding_changed && !attempt.cancelled {
                encoding = Encoding::Windows1252;
                continue;
            }
            return (attempt, sink);
        }
    }

    /// A small file read ahead, inside the batch's transaction: checked
    /// against the ledger, judged, then written. `None` when it is no
    /// longer `received` or reading was stopped.
    fn load_small(
        &self,
        batch: &mut Batch<'_>,
        file: &FileRow,
        read: ReadAhead<'_>,
    ) -> Result<Option<Outcome>, ProcessError> {
        if batch.state(file.id)? != FileState::Received {
            return Ok(None);
        }
        let (feed, read) = match read {
            ReadAhead::NoFeed(outcome) => return Ok(Some(*outcome)),
            ReadAhead::Cancelled => return Ok(None),
            ReadAhead::Missing(feed) => (feed, None),
            ReadAhead::Read {
                feed,
                attempt,
                rows,
            } => (feed, Some((attempt, rows))),
        };
        if let Some(first) = batch.loaded_copy(&feed.name, &file.sha256, file.id)? {
            return Ok(Some(duplicate(feed, first)));
        }
        let Some((mut attempt, rows)) = read else {
            return Ok(Some(payload_missing(feed)));
        };
        attempt.rows_loaded = rows.iter().map(|b| b.len() as u64).sum();
        if accepts(feed, &attempt) {
            let writer = Writer::new(batch.connection(), file.id, &file.partner)?;
            attempt.records = load::load(rows, writer)?.records;
        }
        Ok(Some(self.judge(feed, attempt)))
    }

    /// The day a file was received, in the daemon's time zone: what
    /// `@received` holds in every record of it.
    fn received_day(&self, file: &FileRow) -> chrono::NaiveDate {
        let zone = self.config.daemon.time_zone;
        chrono::DateTime::parse_from_rfc3339(&file.received_at)
            .map(|at| at.with_timezone(&zone))
            .unwrap_or_else(|_| chrono::Utc::now().with_timezone(&zone))
            .date_naive()
    }

    /// Reads a sample file as its feed would, loading nothing: the outcome
    /// it would have, with every problem. The ledger is not touched.
    pub fn check_sample(&self, feed: &Feed, path: &std::path::Path) -> Outcome {
        let never = AtomicBool::new(false);
        let today = chrono::Utc::now()
            .with_timezone(&self.config.daemon.time_zone)
            .date_naive();
        let payload = Payload::Spool(path.to_path_buf());
        let (mut attempt, rows) = self.read_whole::<Counted>(feed, &payload, today, &never);
        attempt.rows_loaded = rows.0;
        self.judge(feed, attempt)
    }

    /// A large file, in a transaction of its own that begins only when its
    /// first rows are ready. Checks made before then are repeated under the
    /// write lock.
    fn process_large(
        &self,
        ledger: &mut Ledger,
        file: &FileRow,
        stop: &AtomicBool,
    ) -> Result<Option<Outcome>, ProcessError> {
        if ledger.file(file.id)?.state != FileState::Received {
            return Ok(None);
        }
        let feed = match self.feed(file) {
            Ok(feed) => feed,
            Err(outcome) => return self.write_outcome(ledger, file, *outcome),
        };
        if let Some(first) = ledger.loaded_copy(&feed.name, &file.sha256, file.id)? {
            return self.write_outcome(ledger, file, duplicate(feed, first));
        }
        let Some(payload) = self.payload(file, ledger.held_body(file.id)?) else {
            return self.write_outcome(ledger, file, payload_missing(feed));
        };
        // Large files take a while: say which one is in hand.
        tracing::info!(file_id = file.id, feed = %feed.name, bytes = file.size, "processing");
        let mut encoding = feed.schema.encoding;
        loop {
            match self.stream(ledger, file, feed, &payload, encoding, stop)? {
                Streamed::Done(outcome) => return Ok(Some(outcome)),
                Streamed::ReadAgain => encoding = Encoding::Windows1252,
                Streamed::Cancelled | Streamed::Taken => return Ok(None),
            }
        }
    }

    /// decrypt → validate → map on a second thread, while this one loads
    /// what it sends into a savepoint, rolled back if the file fails.
    fn stream(
        &self,
        ledger: &mut Ledger,
        file: &FileRow,
        feed: &Feed,
        payload: &Payload,
        encoding: Encoding,
        stop: &AtomicBool,
    ) -> Result<Streamed, ProcessError> {
        let received = self.received_day(file);
        let (tx, rx) = sync_channel::<Vec<Records>>(BATCHES_IN_FLIGHT);
        let doomed = Arc::new(AtomicBool::new(false));
        let mut sink = RowChannel {
            rows: Some(tx),
            doomed: doomed.clone(),
        };
        std::thread::scope(|scope| {
            // Out of threads (the process at its limits) is waited out like
            // a full disk, not a panic that would stop processing.
            let reader = std::thread::Builder::new()
                .name("reader".into())
                .spawn_scoped(scope, move || {
                    catch_panic(|| self.read(feed, payload, encoding, received, stop, &mut sink))
                })
                .map_err(ProcessError::Thread)?;
            let finished = || {
                reader
                    .join()
                    .unwrap_or_else(|panic| internal_failure(&panic))
            };
            let mut rows = rx.into_iter();
            let Some(first) = rows.next() else {
                // Nothing to load (or doomed before its first rows).
                return self.conclude_unloaded(ledger, file, feed, finished());
            };
            let mut batch = ledger.begin()?;
            if batch.state(file.id)? != FileState::Received {
                return Ok(Streamed::Taken);
            }
            let savepoint = batch.savepoint()?;
            let loaded = Writer::new(&savepoint, file.id, &file.partner)
                .and_then(|writer| load::load(std::iter::once(first).chain(rows), writer));
            if doomed.load(Ordering::SeqCst) {
                // Rejected whatever the rest holds: the rows go, and the
                // write lock with them, while the reader finds the rest of
                // the problems.
                drop(savepoint);
                drop(batch);
                return self.conclude_unloaded(ledger, file, feed, finished());
            }
            let mut attempt = finished();
            let loaded = loaded?;
            if attempt.cancelled {
                return Ok(Streamed::Cancelled);
            }
            if attempt.encoding_changed {
                return Ok(Streamed::ReadAgain);
            }
            attempt.rows_loaded = loaded.rows;
            attempt.records = loaded.records;
            if accepts(feed, &attempt) {
                savepoint.commit().map_err(LedgerError::from)?;
            } else {
                // Dropping the savepoint undoes this file's rows.
                drop(savepoint);
            }
            let outcome = self.judge(feed, attempt);
            batch.finish(file.id, &outcome)?;
            batch.commit()?;
            Ok(Streamed::Done(outcome))
        })
    }

    /// The end of a large file that loads nothing (no rows, or doomed):
    /// only its outcome is written, once reading is done, in a short
    /// transaction.
    fn conclude_unloaded(
        &self,
        ledger: &mut Ledger,
        file: &FileRow,
        feed: &Feed,
        mut attempt: Attempt,
    ) -> Result<Streamed, ProcessError> {
        if attempt.cancelled {
            return Ok(Streamed::Cancelled);
        }
        if attempt.encoding_changed {
            return Ok(Streamed::ReadAgain);
        }
        attempt.rows_loaded = 0;
        let outcome = self.judge(feed, attempt);
        Ok(match self.write_outcome(ledger, file, outcome)? {
            Some(outcome) => Streamed::Done(outcome),
            None => Streamed::Taken,
        })
    }

    /// Writes an outcome reached without loading anything, in a short
    /// transaction. `None` when the file was settled by another process.
    fn write_outcome(
        &self,
        ledger: &mut Ledger,
        file: &FileRow,
        outcome: Outcome,
    ) -> Result<Option<Outcome>, ProcessError> {
        let mut batch = ledger.begin()?;
        if batch.state(file.id)? != FileState::Received {
            return Ok(None);
        }
        batch.finish(file.id, &outcome)?;
        batch.commit()?;
        Ok(Some(outcome))
    }
}

#[cfg(test)]
mod tests;
