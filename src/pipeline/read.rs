//! Reading a file: decrypt, then the feed's format and checks, then map,
//! with rows handed to the loader as they come.

use super::*;

/// Where a file's bytes are.
#[derive(Clone)]
pub(super) enum Payload {
    /// A copy in the spool.
    Spool(std::path::PathBuf),
    /// A small file's bytes, kept in the ledger.
    Ledger(Arc<[u8]>),
}

impl Payload {
    fn open(&self) -> std::io::Result<Box<dyn std::io::Read + Send>> {
        Ok(match self {
            Payload::Spool(path) => Box::new(File::open(path)?),
            Payload::Ledger(body) => Box::new(std::io::Cursor::new(body.clone())),
        })
    }
}

/// Where the reader hands the rows it has mapped.
pub(super) trait RowSink {
    /// Returns false when the loader has stopped listening.
    fn send(&mut self, rows: Vec<Records>) -> bool;
    /// The file will be rejected (a problem under `reject_file`): no rows
    /// follow, though reading goes on to find every problem.
    fn doomed(&mut self) {}
}

impl RowSink for Vec<Vec<Records>> {
    fn send(&mut self, rows: Vec<Records>) -> bool {
        self.push(rows);
        true
    }
}

/// The channel to a loader on another thread. When the file is doomed the
/// channel is closed at once, and the loader lets go of the ledger's write
/// lock instead of holding it while the rest of the file is checked.
pub(super) struct RowChannel {
    pub(super) rows: Option<std::sync::mpsc::SyncSender<Vec<Records>>>,
    pub(super) doomed: Arc<AtomicBool>,
}

impl RowSink for RowChannel {
    fn send(&mut self, rows: Vec<Records>) -> bool {
        self.rows.as_ref().is_some_and(|tx| tx.send(rows).is_ok())
    }

    fn doomed(&mut self) {
        self.doomed.store(true, Ordering::SeqCst);
        self.rows = None;
    }
}

/// A file's plaintext that fails to read once shutdown has begun; each
/// block read shows progress.
pub(super) struct Stoppable<'s> {
    inner: Box<dyn std::io::Read + Send>,
    stop: &'s AtomicBool,
    progress: &'s Progress,
}

impl std::io::Read for Stoppable<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.stop.load(Ordering::Relaxed) {
            return Err(std::io::Error::other("dropgate is stopping"));
        }
        self.progress.beat();
        let n = self.inner.read(buf)?;
        self.progress.read(n);
        Ok(n)
    }
}

/// Whether a file whose reading went as `attempt` says is loaded.
pub(super) fn accepts(feed: &Feed, attempt: &Attempt) -> bool {
    attempt.failure.is_none()
        && !attempt.whole_file_problem
        && (attempt.problem_count == 0
            || (feed.on_error == OnError::SkipInvalidRows && attempt.rows_loaded > 0))
}

/// What one pass over a file found.
#[derive(Default)]
pub(super) struct Attempt {
    pub(super) encrypted: bool,
    pub(super) failure: Option<Failure>,
    pub(super) encoding_changed: bool,
    /// Reading stopped for shutdown.
    pub(super) cancelled: bool,
    pub(super) rows_read: u64,
    pub(super) rows_invalid: u64,
    pub(super) rows_loaded: u64,
    pub(super) records: u64,
    pub(super) problem_count: u64,
    /// A problem with the file as a whole (a trailer that does not match
    /// its records): nothing is loaded, whatever `on_error` says.
    pub(super) whole_file_problem: bool,
    pub(super) problems: Vec<Problem>,
}

pub(super) enum Failure {
    Decrypt(DecryptError),
    Read(std::io::Error),
    /// dropgate itself failed on the file's content.
    Internal,
}

/// A panic on one file's content must not stop the daemon or repeat forever:
/// the file is quarantined instead. Its message is not kept: a panic's text
/// can quote the input it failed on.
pub(super) fn internal_failure(_panic: &Box<dyn std::any::Any + Send>) -> Attempt {
    Attempt {
        failure: Some(Failure::Internal),
        ..Attempt::default()
    }
}

pub(super) fn catch_panic(read: impl FnOnce() -> Attempt) -> Attempt {
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

impl Processor {
    /// decrypt, validate and map, handing rows on in batches to `sink`.
    pub(super) fn read(
        &self,
        feed: &Feed,
        payload: &Payload,
        encoding: Encoding,
        received: chrono::NaiveDate,
        stop: &AtomicBool,
        sink: &mut impl RowSink,
    ) -> Attempt {
        let max_problems = self.config.daemon.max_errors_per_file;
        let mut attempt = Attempt::default();
        let file = match payload.open() {
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
        // Shutdown interrupts reading between any two blocks of input, even
        // inside one over-long record.
        let input = Stoppable {
            inner: plain.reader,
            stop,
            progress: &self.progress,
        };
        let mut rows = match formats::open(&feed.schema, input, encoding, received) {
            Ok(Ok(rows)) => rows,
            Ok(Err(header_problems)) => {
                for p in header_problems {
                    attempt.note(p, max_problems);
                }
                return attempt;
            }
            Err(_) if stop.load(Ordering::Relaxed) => {
                attempt.cancelled = true;
                return attempt;
            }
            Err(e) => {
                attempt.read_error(e);
                return attempt;
            }
        };
        let mut pending = Vec::with_capacity(ROWS_PER_BATCH);
        let mut uniqueness = Uniqueness::new(&feed.schema);
        loop {
            // Shutdown is seen as a failed read (`Stoppable`), within one
            // block of input.
            let next = rows.next_outcome().map(|outcome| match outcome {
                Some(crate::validate::Outcome::Valid(row)) if !feed.schema.unique.is_empty() => {
                    let repeats = uniqueness.check(&row);
                    Some(if repeats.is_empty() {
                        crate::validate::Outcome::Valid(row)
                    } else {
                        crate::validate::Outcome::Invalid(repeats)
                    })
                }
                other => other,
            });
            match next {
                Ok(Some(crate::validate::Outcome::Valid(mut row))) => {
                    // Under reject_file one bad row dooms the file: keep
                    // validating to report every problem, stop mapping.
                    if feed.on_error == OnError::RejectFile && attempt.problem_count > 0 {
                        rows.reuse(row.values);
                        continue;
                    }
                    pending.push(records::map_row(&feed.mapping, &mut row));
                    rows.reuse(row.values);
                    if pending.len() == ROWS_PER_BATCH {
                        let full =
                            std::mem::replace(&mut pending, Vec::with_capacity(ROWS_PER_BATCH));
                        if !sink.send(full) {
                            break;
                        }
                    }
                }
                Ok(Some(crate::validate::Outcome::Invalid(problems))) => {
                    if feed.on_error == OnError::RejectFile && attempt.problem_count == 0 {
                        pending.clear();
                        sink.doomed();
                    }
                    attempt.rows_invalid += 1;
                    for p in problems {
                        attempt.note(p, max_problems);
                    }
                }
                Ok(None) => break,
                Err(_) if stop.load(Ordering::Relaxed) => {
                    attempt.cancelled = true;
                    return attempt;
                }
                Err(e) => {
                    attempt.read_error(e);
                    break;
                }
            }
        }
        if !pending.is_empty() {
            sink.send(pending);
        }
        for p in rows.finish().into_iter().chain(uniqueness.finish()) {
            attempt.whole_file_problem = true;
            attempt.note(p, max_problems);
        }
        attempt.rows_read = rows.records();
        attempt
    }
}
