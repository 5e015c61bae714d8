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

use std::fs::File;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::sync_channel;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::config::{Config, Feed, FeedMatch, OnError};
use crate::decrypt::{self, DecryptError};
use crate::ledger::{Batch, FileRow, FileState, Ledger, LedgerError, Outcome, RecordWriter};
use crate::load;
use crate::map::{self, Records};
use crate::spool::{self, Spool};
use crate::validate::{CsvRows, Encoding, Problem, ReadError};

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

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error("spool: {0}")]
    Spool(#[from] std::io::Error),
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

/// Landings under way. While there is any, a processing transaction ends
/// after the file in hand, so a landing (an SFTP client waiting for its
/// answer) gets the ledger's write lock within one small file's time.
#[derive(Debug, Clone, Default)]
pub struct Landings(Arc<AtomicUsize>);

impl Landings {
    /// Counts a landing until the guard is dropped.
    pub fn start(&self) -> LandingGuard<'_> {
        self.0.fetch_add(1, Ordering::SeqCst);
        LandingGuard(self)
    }

    fn any(&self) -> bool {
        self.0.load(Ordering::SeqCst) > 0
    }
}

pub struct LandingGuard<'a>(&'a Landings);

impl Drop for LandingGuard<'_> {
    fn drop(&mut self) {
        self.0.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Takes received files through decrypt, validate, map and load.
pub struct Processor {
    config: Arc<Config>,
    identity: age::x25519::Identity,
    spool: Spool,
    landings: Landings,
}

impl Processor {
    pub fn new(config: Arc<Config>, identity: age::x25519::Identity) -> Processor {
        let spool = Spool::new(&config.daemon.spool);
        Processor {
            config,
            identity,
            spool,
            landings: Landings::default(),
        }
    }

    /// What landers report to, so processing makes way for them.
    pub fn landings(&self) -> Landings {
        self.landings.clone()
    }

    /// Processes received files until none is left or `stop` is set; the
    /// batch in hand is always finished.
    pub fn drain(
        &self,
        ledger: &mut Ledger,
        stop: &AtomicBool,
    ) -> Result<Vec<Processed>, ProcessError> {
        let mut done = Vec::new();
        while !stop.load(Ordering::SeqCst) {
            let pending = ledger.pending(BATCH_FILES)?;
            if pending.is_empty() {
                break;
            }
            done.extend(self.process_batch(ledger, pending, stop)?);
        }
        Ok(done)
    }

    /// Processes the given files (those still `received`) in as few transactions as their sizes allow.
    pub fn process_batch(
        &self,
        ledger: &mut Ledger,
        files: Vec<FileRow>,
        stop: &AtomicBool,
    ) -> Result<Vec<Processed>, ProcessError> {
        let mut done = Vec::new();
        let mut rest = files.into_iter().peekable();
        while rest.peek().is_some() && !stop.load(Ordering::SeqCst) {
            let mut batch = ledger.begin()?;
            let started = Instant::now();
            let mut settled = Vec::new();
            let mut bytes = 0;
            // A transaction ends after a size or a time, whichever comes
            // first, or at once when a landing waits for the write lock.
            while let Some(file) = rest.next_if(|f| {
                settled.is_empty()
                    || (bytes + f.size <= BATCH_BYTES
                        && started.elapsed() < BATCH_TIME
                        && !self.landings.any())
            }) {
                bytes += file.size;
                if batch.state(file.id)? != FileState::Received {
                    continue;
                }
                let outcome = self.process_file(&mut batch, &file)?;
                batch.finish(file.id, &outcome)?;
                settled.push((file, outcome));
            }
            batch.commit()?;
            for (file, outcome) in &settled {
                self.settle(ledger, file, outcome.state)?;
            }
            self.spool.sync()?;
            for (file, outcome) in settled {
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
        }
        Ok(done)
    }

    /// Moves a payload to the folder its state calls for, writing the
    /// quarantine report first. Safe to repeat.
    pub fn settle(
        &self,
        ledger: &Ledger,
        file: &FileRow,
        state: FileState,
    ) -> Result<(), ProcessError> {
        if state == FileState::Quarantined {
            let report = quarantine_report(ledger, file.id)?;
            let bytes = serde_json::to_vec_pretty(&report).expect("a report serialises");
            spool::write_durably(&self.spool.report_path(&file.spool_name), &bytes)?;
        }
        self.spool.settle(&file.spool_name, state)?;
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
                "no_feed",
                file_problem(
                    "no_feed",
                    format!(
                        "no feed of partner `{}` matches the file name; add one or fix its `match` globs, then replay",
                        file.partner
                    ),
                ),
            ))),
            FeedMatch::Ambiguous(a, b) => Err(Box::new(rejected(
                None,
                "ambiguous_feed",
                file_problem(
                    "ambiguous_feed",
                    format!("feeds `{a}` and `{b}` both match the file name"),
                ),
            ))),
        }
    }

    fn process_file(&self, batch: &mut Batch<'_>, file: &FileRow) -> Result<Outcome, ProcessError> {
        let feed = match self.feed(file) {
            Ok(feed) => feed,
            Err(outcome) => return Ok(*outcome),
        };
        if let Some(first) = batch.loaded_copy(&feed.name, &file.sha256, file.id)? {
            return Ok(Outcome {
                state: FileState::Duplicate,
                feed: Some(feed.name.clone()),
                reason: None,
                rows_read: None,
                rows_loaded: None,
                records: 0,
                duplicate_of: Some(first),
                problem_count: 0,
                problems: Vec::new(),
                detail: json!({ "duplicate_of": first }),
            });
        }
        let Some(payload) = self.spool.received_payload(&file.spool_name) else {
            return Ok(rejected(
                Some(feed),
                "payload_missing",
                file_problem(
                    "payload_missing",
                    "the spool copy of this file is missing".into(),
                ),
            ));
        };
        let mut encoding = feed.schema.encoding;
        loop {
            match self.run_stages(batch, file, feed, &payload, encoding)? {
                Some(outcome) => return Ok(outcome),
                // Text read as UTF-8 must be read again as Windows-1252.
                None => encoding = Encoding::Windows1252,
            }
        }
    }

    /// decrypt → validate → map, then load. A small file is read whole on
    /// this thread; a larger one is read on a second thread while this one
    /// loads, with a bounded queue between them.
    /// `None` means the file must be read again as Windows-1252.
    fn run_stages(
        &self,
        batch: &mut Batch<'_>,
        file: &FileRow,
        feed: &Feed,
        payload: &std::path::Path,
        encoding: Encoding,
    ) -> Result<Option<Outcome>, ProcessError> {
        if file.size <= READ_WHOLE_BYTES {
            let mut batches = Vec::new();
            let attempt = catch_panic(|| {
                self.read(feed, payload, encoding, |rows| {
                    batches.push(rows);
                    true
                })
            });
            return self.load(batch, file, feed, batches.into_iter(), || attempt);
        }
        let (tx, rx) = sync_channel::<Vec<Records>>(BATCHES_IN_FLIGHT);
        std::thread::scope(|scope| {
            let reader = scope
                .spawn(move || self.read(feed, payload, encoding, |rows| tx.send(rows).is_ok()));
            self.load(batch, file, feed, rx.into_iter(), || {
                reader
                    .join()
                    .unwrap_or_else(|panic| internal_failure(&panic))
            })
        })
    }

    /// Writes what the reader sends, and judges the file once the reader is done.
    ///
    /// A file whose rows all come in one batch is judged before any row is
    /// written, and then written or not: no savepoint is needed. A larger
    /// file streams into a savepoint, rolled back if the file fails.
    fn load(
        &self,
        batch: &mut Batch<'_>,
        file: &FileRow,
        feed: &Feed,
        mut batches: impl Iterator<Item = Vec<Records>>,
        reader_done: impl FnOnce() -> Attempt,
    ) -> Result<Option<Outcome>, ProcessError> {
        let first = batches.next().unwrap_or_default();
        // Waits for the reader's next batch or its end, whichever comes.
        let Some(second) = batches.next() else {
            let mut attempt = reader_done();
            if attempt.encoding_changed {
                return Ok(None);
            }
            attempt.rows_loaded = first.len() as u64;
            if accepts(feed, &attempt) {
                let mut writer = RecordWriter::new(batch.connection(), file.id, &file.partner)?;
                for records in &first {
                    writer.write(records)?;
                }
                attempt.records = writer.records;
            }
            return Ok(Some(self.judge(feed, attempt)));
        };
        let savepoint = batch.savepoint()?;
        let loaded = {
            let mut writer = RecordWriter::new(&savepoint, file.id, &file.partner)?;
            let rest = [first, second].into_iter().chain(batches);
            load::load(rest, &mut writer)
        };
        let mut attempt = reader_done();
        let loaded = loaded?;
        attempt.rows_loaded = loaded.rows;
        attempt.records = loaded.records;
        if !attempt.encoding_changed && accepts(feed, &attempt) {
            savepoint.commit().map_err(LedgerError::from)?;
            return Ok(Some(self.judge(feed, attempt)));
        }
        // Dropping the savepoint undoes this file's rows.
        drop(savepoint);
        Ok((!attempt.encoding_changed).then(|| self.judge(feed, attempt)))
    }

    /// decrypt, validate and map, handing rows on in batches to `send`,
    /// which returns false when the loader has stopped listening.
    fn read(
        &self,
        feed: &Feed,
        payload: &std::path::Path,
        encoding: Encoding,
        mut send: impl FnMut(Vec<Records>) -> bool,
    ) -> Attempt {
        let max_problems = self.config.daemon.max_errors_per_file;
        let mut attempt = Attempt::default();
        let file = match File::open(payload) {
            Ok(f) => f,
            Err(e) => {
                attempt.failure = Some(Failure::Decrypt(DecryptError::Io(e)));
                return attempt;
            }
        };
        let plain = match decrypt::open(file, feed.encryption, &self.identity) {
            Ok(p) => p,
            Err(e) => {
                attempt.failure = Some(Failure::Decrypt(e));
                return attempt;
            }
        };
        attempt.encrypted = plain.encrypted;
        let mut rows = match CsvRows::open(&feed.schema, plain.reader, encoding) {
            Ok(Ok(rows)) => rows,
            Ok(Err(header_problems)) => {
                for p in header_problems {
                    attempt.note(p, max_problems);
                }
                return attempt;
            }
            Err(e) => {
                attempt.read_error(e);
                return attempt;
            }
        };
        let mut pending = Vec::with_capacity(ROWS_PER_BATCH);
        loop {
            match rows.next_outcome() {
                Ok(Some(crate::validate::Outcome::Valid(row))) => {
                    // Under reject_file one bad row dooms the file: keep
                    // validating to report every problem, stop mapping.
                    if feed.on_error == OnError::RejectFile && attempt.problem_count > 0 {
                        continue;
                    }
                    pending.push(map::map_row(&feed.mapping, row));
                    if pending.len() == ROWS_PER_BATCH {
                        let full =
                            std::mem::replace(&mut pending, Vec::with_capacity(ROWS_PER_BATCH));
                        if !send(full) {
                            break;
                        }
                    }
                }
                Ok(Some(crate::validate::Outcome::Invalid(problems))) => {
                    attempt.rows_invalid += 1;
                    for p in problems {
                        attempt.note(p, max_problems);
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    attempt.read_error(e);
                    break;
                }
            }
        }
        if !pending.is_empty() {
            send(pending);
        }
        attempt.rows_read = rows.records;
        attempt
    }

    /// Decides a file's state from what its stages found.
    fn judge(&self, feed: &Feed, attempt: Attempt) -> Outcome {
        let feed_name = Some(feed.name.clone());
        if let Some(failure) = attempt.failure {
            let (code, message) = match failure {
                Failure::Decrypt(e) => (e.code(), e.to_string()),
                Failure::Read(e) if attempt.encrypted => (
                    "ciphertext_damaged",
                    format!("the age ciphertext is truncated or has been altered: {e}"),
                ),
                Failure::Read(e) => ("read_failed", e.to_string()),
                Failure::Internal(message) => (
                    "internal_error",
                    format!("dropgate failed on this file ({message}); please report it"),
                ),
            };
            let reason = match code {
                "read_failed" | "internal_error" => code,
                _ => "decrypt_failed",
            };
            return rejected(Some(feed), reason, file_problem(code, message));
        }
        let reject = !accepts(feed, &attempt);
        let detail = json!({
            "rows_read": attempt.rows_read,
            "rows_loaded": if reject { 0 } else { attempt.rows_loaded },
            "rows_invalid": attempt.rows_invalid,
            "records": if reject { 0 } else { attempt.records },
            "problems": attempt.problem_count,
            "encoding_fallback": attempt.encoding_changed,
        });
        if reject {
            return Outcome {
                state: FileState::Quarantined,
                feed: feed_name,
                reason: Some("validation_failed".into()),
                rows_read: Some(attempt.rows_read),
                rows_loaded: Some(0),
                records: 0,
                duplicate_of: None,
                problem_count: attempt.problem_count,
                problems: attempt.problems,
                detail,
            };
        }
        Outcome {
            state: FileState::Loaded,
            feed: feed_name,
            reason: None,
            rows_read: Some(attempt.rows_read),
            rows_loaded: Some(attempt.rows_loaded),
            records: attempt.records,
            duplicate_of: None,
            problem_count: attempt.problem_count,
            problems: attempt.problems,
            detail,
        }
    }
}

/// Whether a file whose reading went as `attempt` says is loaded.
fn accepts(feed: &Feed, attempt: &Attempt) -> bool {
    attempt.failure.is_none()
        && (attempt.problem_count == 0
            || (feed.on_error == OnError::SkipInvalidRows && attempt.rows_loaded > 0))
}

/// What one pass over a file found.
#[derive(Default)]
struct Attempt {
    encrypted: bool,
    failure: Option<Failure>,
    encoding_changed: bool,
    rows_read: u64,
    rows_invalid: u64,
    rows_loaded: u64,
    records: u64,
    problem_count: u64,
    problems: Vec<Problem>,
}

enum Failure {
    Decrypt(DecryptError),
    Read(std::io::Error),
    Internal(String),
}

/// A panic on one file's content must not stop the daemon or repeat forever:
/// the file is quarantined instead.
fn internal_failure(panic: &Box<dyn std::any::Any + Send>) -> Attempt {
    let message = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic".into());
    Attempt {
        failure: Some(Failure::Internal(message)),
        ..Attempt::default()
    }
}

fn catch_panic(read: impl FnOnce() -> Attempt) -> Attempt {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(read))
        .unwrap_or_else(|panic| internal_failure(&panic))
}

impl Attempt {
    fn note(&mut self, problem: Problem, max: usize) {
        self.problem_count += 1;
        if self.problems.len() < max {
            self.problems.push(problem);
        }
    }

    fn read_error(&mut self, e: ReadError) {
        match e {
            ReadError::Io(io) => self.failure = Some(Failure::Read(io)),
            ReadError::EncodingChanged => self.encoding_changed = true,
        }
    }
}

fn file_problem(code: &'static str, message: String) -> Problem {
    Problem {
        line: 0,
        column: None,
        field: None,
        code,
        message,
    }
}

fn rejected(feed: Option<&Feed>, reason: &str, problem: Problem) -> Outcome {
    Outcome {
        state: FileState::Quarantined,
        feed: feed.map(|f| f.name.clone()),
        reason: Some(reason.to_string()),
        rows_read: None,
        rows_loaded: None,
        records: 0,
        duplicate_of: None,
        problem_count: 1,
        detail: json!({ "reason": reason, "problem": problem.code }),
        problems: vec![problem],
    }
}

/// The machine-readable report written beside a quarantined file.
pub fn quarantine_report(ledger: &Ledger, id: i64) -> Result<serde_json::Value, LedgerError> {
    let file = ledger.file(id)?;
    let problems = ledger.problems(id)?;
    Ok(json!({
        "file_id": file.id,
        "name": file.name,
        "source": file.source,
        "partner": file.partner,
        "feed": file.feed,
        "sha256": file.sha256,
        "size": file.size,
        "received_at": file.received_at,
        "quarantined_at": file.updated_at,
        "reason": file.reason,
        "rows_read": file.rows_read,
        "problem_count": file.problems,
        "problems_listed": problems.len(),
        "problems": problems,
        "replay": format!("dropgate replay {}", file.id),
    }))
}
