//! Land: a complete file from a source becomes dropgate's own durable copy,
//! recorded as `received`, before the sender's copy is removed.
//!
//! Order, each step durable before the next:
//! 1. copy into `spool/tmp/<name dropgate chose>`, hashing as it goes; fsync
//!    the copy and the folder
//! 2. one ledger transaction records every file of the batch as `received`
//! 3. rename into `spool/incoming/` (not fsynced: a rename a crash undoes
//!    leaves the recorded copy in `tmp/`, where processing and recovery find it)
//! 4. remove the sender's copy (unless it changed meanwhile); record that
//!
//! A crash before 2 leaves the sender's copy in place (taken again later, the
//! orphan copy is cleaned up); a crash after 2 is recognised on the next scan
//! by source, name, size and SHA-256, and only step 4 is repeated.
//!
//! A small file (at most [`HELD_MAX_BYTES`]: a sender's file read whole, or
//! an upload the embedded SFTP server held in memory) skips step 1 and 3:
//! its bytes go into the ledger with its `received` row, and stay there as
//! dropgate's copy, so landing a batch costs one flush instead of one per
//! file and its folder. Processing reads them from the ledger; only a
//! quarantined one is written into the spool, beside its report.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use sha2::{Digest, Sha256};

use crate::config::{Config, FeedMatch};
use crate::digest::hex;
use crate::ledger::{Ledger, LedgerError, NewFile, RemotePath};
use crate::metrics::METRICS;
use crate::spool::{Area, Spool, sync_dir};

/// Threads copying one batch into the spool at once.
const COPY_WORKERS: usize = 8;

/// Files up to this size are kept in the ledger rather than copied into the
/// spool.
pub const HELD_MAX_BYTES: u64 = 64 * 1024;

/// A complete file offered by a source.
#[derive(Debug, Clone)]
pub struct Arrival {
    /// Where the sender left it.
    pub path: PathBuf,
    /// Its name as the sender gave it (relative to the source folder), for the ledger only.
    pub name: String,
    pub handover: Handover,
    /// Where on a remote server it was taken from, remembered with the file.
    pub taken_from: Option<RemotePath>,
}

/// How a file becomes dropgate's copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handover {
    /// The sender's file: copied, and removed only once recorded. One
    /// larger than `at_most` bytes is refused before a byte is copied.
    Copy { at_most: u64 },
    /// Already dropgate's own, complete and fsynced (an SFTP upload, a
    /// download): moved into the spool rather than copied. `sha256` when it
    /// was computed while the file was written.
    Move { sha256: Option<String> },
    /// Bytes in memory (a small SFTP upload), kept in the ledger by the
    /// commit that records them.
    Held { body: Vec<u8> },
}

impl Arrival {
    /// The bytes landing it adds to the spool's file system: a copy's
    /// size, a held body's; nothing for a file already in the spool.
    pub fn bytes_needed(&self) -> u64 {
        match &self.handover {
            Handover::Copy { .. } => fs::metadata(&self.path).map_or(0, |m| m.len()),
            Handover::Move { .. } => 0,
            Handover::Held { body } => body.len() as u64,
        }
    }

    /// A sender's file, to be copied if it is at most `at_most` bytes.
    pub fn copy(path: PathBuf, name: String, at_most: u64) -> Arrival {
        Arrival {
            path,
            name,
            handover: Handover::Copy { at_most },
            taken_from: None,
        }
    }
}

impl Handover {
    /// The sender keeps its copy until dropgate's is recorded.
    fn is_copy(&self) -> bool {
        matches!(self, Handover::Copy { .. })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Landed {
    /// Newly recorded as received.
    New(i64),
    /// Recorded earlier; only the sender's copy was left to remove.
    AlreadyReceived(i64),
}

impl Landed {
    pub fn id(self) -> i64 {
        match self {
            Landed::New(id) | Landed::AlreadyReceived(id) => id,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LandError {
    #[error("copying into the spool failed: {0}")]
    Io(#[from] io::Error),
    #[error("the file changed while it was being copied; it will be taken again")]
    Changed,
    #[error(
        "the file is {size} bytes, over the source's max_file_size of {limit}; it is left where it is"
    )]
    TooLarge { size: u64, limit: u64 },
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error("the spool has no room; try again later")]
    NoRoom,
}

impl LandError {
    /// Whether it failed for want of disk space, in the spool or the ledger.
    pub fn is_disk_full(&self) -> bool {
        match self {
            LandError::Io(e) => crate::spool::is_disk_full(e),
            LandError::Ledger(LedgerError::Sqlite(rusqlite::Error::SqliteFailure(e, _))) => {
                e.code == rusqlite::ErrorCode::DiskFull
            }
            LandError::NoRoom => true,
            _ => false,
        }
    }
}

/// Where a batch of arrivals came from.
pub struct Origin<'a> {
    pub source: &'a str,
    pub partner: &'a str,
    /// Remove the sender's copy once it is received (false for `dropgate ingest`).
    pub remove_sender: bool,
    /// Uploads to the embedded server from this address: each new file's
    /// `upload` audit event is recorded with it.
    pub uploaded_from: Option<&'a str>,
    /// Told while this landing waits for the ledger's write lock.
    pub landings: &'a Landings,
}

struct Copied {
    index: usize,
    spool_name: String,
    taken: Taken,
    /// Its bytes are (to be) kept in the ledger; there is no copy in the spool.
    in_ledger: bool,
}

/// A file taken: its SHA-256, size and the sender's stamp, and its bytes
/// when they are to be kept in the ledger rather than in `spool/tmp/`.
struct Taken {
    sha256: String,
    size: u64,
    stamp: Stamp,
    body: Option<Vec<u8>>,
}

/// Size and modification time, to notice a file being rewritten.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp(u64, Option<SystemTime>);

fn stamp(path: &Path) -> io::Result<Stamp> {
    let m = fs::metadata(path)?;
    Ok(Stamp(m.len(), m.modified().ok()))
}

/// Lands a batch of arrivals; one result per arrival, in order.
pub fn land(
    config: &Config,
    spool: &Spool,
    ledger: &mut Ledger,
    origin: &Origin<'_>,
    arrivals: &[Arrival],
) -> Vec<Result<Landed, LandError>> {
    let started = Instant::now();
    let mut results: Vec<Option<Result<Landed, LandError>>> =
        arrivals.iter().map(|_| None).collect();
    let now = chrono::Utc::now();
    let spool_names: Vec<String> = arrivals.iter().map(|_| spool.new_name(now)).collect();
    let mut copied = Vec::new();
    let taken = take_all(spool, arrivals, &spool_names);
    for ((index, taken), spool_name) in taken.into_iter().enumerate().zip(spool_names) {
        let tmp = spool.path(Area::Tmp, &spool_name);
        match taken {
            Ok(taken) => copied.push(Copied {
                index,
                spool_name,
                in_ledger: taken.body.is_some(),
                taken,
            }),
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                results[index] = Some(Err(e));
            }
        }
    }
    if let Err(e) = record(
        config,
        spool,
        ledger,
        origin,
        arrivals,
        &mut copied,
        &mut results,
    ) {
        for c in &copied {
            let tmp = spool.path(Area::Tmp, &c.spool_name);
            // Not recorded: a copy is dropped, a moved file goes back;
            // bytes only in memory have nothing on disk to undo.
            if !c.in_ledger {
                let _ = match arrivals[c.index].handover {
                    Handover::Move { .. } => fs::rename(&tmp, &arrivals[c.index].path),
                    Handover::Copy { .. } | Handover::Held { .. } => fs::remove_file(&tmp),
                };
            }
            results[c.index] = Some(Err(LandError::Io(io::Error::other(e.to_string()))));
        }
    }
    let took = started.elapsed();
    for c in &copied {
        if let Some(Ok(Landed::New(_))) = results[c.index] {
            METRICS.received(origin.source, c.taken.size, took);
        }
    }
    if origin.remove_sender {
        remove_senders(ledger, origin.landings, arrivals, &copied, &mut results);
    }
    results
        .into_iter()
        .map(|r| r.expect("every arrival has a result"))
        .collect()
}

/// Step 1 for every arrival, on up to [`COPY_WORKERS`] threads: each copy
/// waits for its own fsync, and the disk completes several at once sooner
/// than one after another.
fn take_all(
    spool: &Spool,
    arrivals: &[Arrival],
    spool_names: &[String],
) -> Vec<Result<Taken, LandError>> {
    let take = |index: usize| {
        let arrival = &arrivals[index];
        let tmp = spool.path(Area::Tmp, &spool_names[index]);
        match &arrival.handover {
            Handover::Copy { at_most } => take_copy(&arrival.path, &tmp, *at_most),
            Handover::Move { sha256 } => move_and_hash(&arrival.path, &tmp, sha256.as_deref()),
            Handover::Held { body } => Ok(held(body.clone(), Stamp(body.len() as u64, None))),
        }
    };
    on_workers(arrivals.len(), take)
}

/// `work(0..count)` on up to [`COPY_WORKERS`] threads; results in order.
fn on_workers<T: Send>(count: usize, work: impl Fn(usize) -> T + Sync) -> Vec<T> {
    let workers = COPY_WORKERS.min(count);
    if workers <= 1 {
        return (0..count).map(work).collect();
    }
    let next = AtomicUsize::new(0);
    let worker = || {
        let mut mine = Vec::new();
        loop {
            let index = next.fetch_add(1, Ordering::Relaxed);
            if index >= count {
                return mine;
            }
            mine.push((index, work(index)));
        }
    };
    let mut done: Vec<(usize, T)> = std::thread::scope(|scope| {
        // This thread works too; a helper that cannot start (the process
        // at its thread limit) only means fewer at once.
        let helpers: Vec<_> = (1..workers)
            .filter_map(|_| {
                std::thread::Builder::new()
                    .name("copy".into())
                    .spawn_scoped(scope, worker)
                    .ok()
            })
            .collect();
        let mut done = worker();
        for helper in helpers {
            done.extend(helper.join().expect("a copy does not panic"));
        }
        done
    });
    done.sort_by_key(|(index, _)| *index);
    done.into_iter().map(|(_, result)| result).collect()
}

/// Steps 2 and 3: the ledger rows, then the payloads into `incoming/`.
fn record(
    config: &Config,
    spool: &Spool,
    ledger: &mut Ledger,
    origin: &Origin<'_>,
    arrivals: &[Arrival],
    copied: &mut [Copied],
    results: &mut [Option<Result<Landed, LandError>>],
) -> Result<(), LandError> {
    if copied.is_empty() {
        return Ok(());
    }
    if !copied.iter().all(|c| c.in_ledger) {
        sync_dir(&spool.dir(Area::Tmp))?;
    }
    // An upload's client waits for this landing's answer.
    let _waiting = origin.landings.start(origin.uploaded_from.is_some());
    let mut new = Vec::new();
    let mut new_files = Vec::new();
    for c in copied.iter_mut() {
        let name = &arrivals[c.index].name;
        let taken = &mut c.taken;
        if origin.remove_sender
            && let Some(id) =
                ledger.received_but_not_removed(origin.source, name, taken.size, &taken.sha256)?
        {
            if !c.in_ledger {
                fs::remove_file(spool.path(Area::Tmp, &c.spool_name))?;
            }
            results[c.index] = Some(Ok(Landed::AlreadyReceived(id)));
            continue;
        }
        let feed = match config.feed_for(origin.partner, name) {
            FeedMatch::One(feed) => Some(feed.name.clone()),
            FeedMatch::None | FeedMatch::Ambiguous(..) => None,
        };
        new_files.push(NewFile {
            source: origin.source.to_string(),
            partner: origin.partner.to_string(),
            feed,
            name: name.clone(),
            spool_name: c.spool_name.clone(),
            sha256: taken.sha256.clone(),
            size: taken.size,
            handed_over: !arrivals[c.index].handover.is_copy(),
            uploaded_from: origin.uploaded_from.map(str::to_string),
            taken_from: arrivals[c.index].taken_from.clone(),
            held: taken.body.take(),
        });
        new.push(&*c);
    }
    let ids = ledger.record_received(&new_files)?;
    // Recorded: from here on the copy must never be deleted. A failed move
    // leaves it in tmp/, where processing and recovery still find it.
    for (c, id) in new.iter().zip(ids) {
        results[c.index] = Some(Ok(Landed::New(id)));
        if c.in_ledger {
            continue;
        }
        let incoming = spool.path(Area::Incoming, &c.spool_name);
        if let Err(e) = fs::rename(spool.path(Area::Tmp, &c.spool_name), &incoming)
            // Processing, which sees the file from the commit on, moved it first.
            && !(e.kind() == io::ErrorKind::NotFound && spool.find(&c.spool_name).is_some())
        {
            tracing::warn!(file_id = id, error = %e, "payload left in spool/tmp; it will be moved at the next start");
        }
    }
    // The move into incoming/ is not fsynced: the copy is already durable in
    // tmp/ and recorded, and a move a crash undoes leaves it in tmp/, where
    // processing and recovery find it. One flush less for every landing (an
    // SFTP client waits for it).
    Ok(())
}

/// Step 4: the sender's copies go, unless they were rewritten meanwhile.
fn remove_senders(
    ledger: &mut Ledger,
    landings: &Landings,
    arrivals: &[Arrival],
    copied: &[Copied],
    results: &mut [Option<Result<Landed, LandError>>],
) {
    let mut removed = Vec::new();
    let mut folders = Vec::new();
    for c in copied {
        let Some(Ok(landed)) = &results[c.index] else {
            continue;
        };
        if !arrivals[c.index].handover.is_copy() {
            // Moved into the spool: the sender's copy is already gone, and a
            // new file was recorded so.
            if let Landed::AlreadyReceived(id) = landed {
                removed.push(*id);
            }
            continue;
        }
        let path = &arrivals[c.index].path;
        match stamp(path) {
            Ok(now) if now == c.taken.stamp => {}
            // A new version under the same name: leave it to be taken as a new file.
            _ => continue,
        }
        match fs::remove_file(path) {
            Ok(()) => {
                removed.push(landed.id());
                if let Some(dir) = path.parent()
                    && !folders.contains(&dir)
                {
                    folders.push(dir);
                }
            }
            Err(e) => tracing::warn!(
                file_id = landed.id(),
                error = %e,
                "could not remove the sender's copy; it will be recognised as received on the next scan"
            ),
        }
    }
    for dir in folders {
        if let Err(e) = sync_dir(dir) {
            tracing::warn!(error = %e, "could not sync the source folder");
        }
    }
    if removed.is_empty() {
        return;
    }
    let _waiting = landings.start(false);
    if let Err(e) = ledger.record_sender_removed(&removed) {
        tracing::warn!(error = %e, "could not record removal of sender copies");
    }
}

/// Moves a file that is already dropgate's own into the spool; hashes it
/// unless the hash is known. Falls back to a copy across file systems.
fn move_and_hash(from: &Path, to: &Path, sha256: Option<&str>) -> Result<Taken, LandError> {
    let stamp = stamp(from)?;
    if let Err(e) = fs::rename(from, to) {
        if e.kind() == io::ErrorKind::CrossesDevices {
            let copied = copy_and_hash(from, to)?;
            fs::remove_file(from)?;
            return Ok(copied);
        }
        return Err(e.into());
    }
    let sha256 = match sha256 {
        Some(known) => known.to_string(),
        None => {
            let mut hasher = Sha256::new();
            let mut input = File::open(to)?;
            let mut buf = vec![0u8; 256 * 1024];
            loop {
                let n = input.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
            }
            hex(&hasher.finalize())
        }
    };
    Ok(Taken {
        sha256,
        size: stamp.0,
        stamp,
        body: None,
    })
}

/// A sender's file: read whole when it is small (kept in the ledger),
/// copied into `to` otherwise; refused when over `at_most` bytes.
fn take_copy(from: &Path, to: &Path, at_most: u64) -> Result<Taken, LandError> {
    let before = stamp(from)?;
    if before.0 > at_most {
        return Err(LandError::TooLarge {
            size: before.0,
            limit: at_most,
        });
    }
    if before.0 > HELD_MAX_BYTES {
        return copy_and_hash(from, to);
    }
    let mut body = Vec::with_capacity(before.0 as usize);
    // One byte more than the size seen shows a file still growing.
    File::open(from)?
        .take(HELD_MAX_BYTES + 1)
        .read_to_end(&mut body)?;
    if stamp(from)? != before || body.len() as u64 != before.0 {
        return Err(LandError::Changed);
    }
    Ok(held(body, before))
}

/// Bytes to keep in the ledger, hashed.
fn held(body: Vec<u8>, stamp: Stamp) -> Taken {
    Taken {
        sha256: hex(&Sha256::digest(&body)),
        size: body.len() as u64,
        stamp,
        body: Some(body),
    }
}

/// Copies `from` to `to`, returning the copy's SHA-256, size and the source's stamp.
/// At most one byte more than the size seen first is copied: a file that
/// keeps growing is found changed without filling the spool.
fn copy_and_hash(from: &Path, to: &Path) -> Result<Taken, LandError> {
    let before = stamp(from)?;
    let mut input = File::open(from)?.take(before.0.saturating_add(1));
    let mut output = File::create(to)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut size = 0u64;
    loop {
        let n = input.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        output.write_all(&buf[..n])?;
        size += n as u64;
    }
    output.sync_all()?;
    if stamp(from)? != before || size != before.0 {
        return Err(LandError::Changed);
    }
    Ok(Taken {
        sha256: hex(&hasher.finalize()),
        size,
        stamp: before,
        body: None,
    })
}

/// Turns at the ledger's write lock between landings and processing, so a
/// landing (an SFTP client waiting for its answer) gets the lock as soon as
/// processing's transaction ends, rather than at SQLite's next busy poll.
///
/// While any landing waits for, or holds, the write lock, processing ends
/// its transaction after the file in hand and takes no new turn, for at
/// most [`PROCESSING_YIELDS`] at a time, so a stream of landings cannot
/// stop processing. Copying into the spool does not count: processing need
/// not make way for a landing that does not yet want the lock.
#[derive(Debug, Clone, Default)]
pub struct Landings(Arc<Turns>);

#[derive(Debug, Default)]
struct Turns {
    state: Mutex<TurnState>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct TurnState {
    /// Landings waiting for, or holding, the write lock.
    landings: usize,
    /// Processing holds its turn.
    processing: bool,
    /// Of `landings`, those a sender waits for.
    answered: usize,
    /// When the last landing a sender waited for let go of its turn.
    last_answered: Option<Instant>,
}

/// The longest processing waits for landings before it takes its turn.
const PROCESSING_YIELDS: Duration = Duration::from_millis(100);

impl Landings {
    fn state(&self) -> MutexGuard<'_, TurnState> {
        self.0.state.lock().expect("turns lock")
    }

    /// A landing's turn: waits until processing's transaction has ended;
    /// counted until the guard is dropped. `answered`: a sender waits for
    /// this landing (an SFTP put), so processing waits for a pause in a
    /// burst of them ([`Landings::wait_for_pause`]).
    pub fn start(&self, answered: bool) -> LandingGuard<'_> {
        let mut state = self.state();
        state.landings += 1;
        state.answered += usize::from(answered);
        while state.processing {
            state = self.0.changed.wait(state).expect("turns lock");
        }
        LandingGuard {
            landings: self,
            answered,
        }
    }

    /// Processing's turn, for one transaction: after the landings waiting
    /// now (or [`PROCESSING_YIELDS`], whichever comes first).
    pub fn processing(&self) -> ProcessingGuard<'_> {
        let mut state = self.state();
        let deadline = Instant::now() + PROCESSING_YIELDS;
        while state.landings > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            state = self
                .0
                .changed
                .wait_timeout(state, left)
                .expect("turns lock")
                .0;
        }
        state.processing = true;
        ProcessingGuard(self)
    }

    pub fn any(&self) -> bool {
        self.state().landings > 0
    }

    /// Waits until landings that senders wait for pause: none waiting for
    /// or holding the write lock, and none ended within `pause`. Returns
    /// after `at_most` however busy they are, or soon after `stop` is set.
    /// Landings no sender waits for (local drops, polls) do not hold
    /// processing back: overlapping with them is faster.
    pub fn wait_for_pause(&self, pause: Duration, at_most: Duration, stop: &AtomicBool) {
        /// How often a long wait looks at `stop`.
        const STOP_CHECK: Duration = Duration::from_millis(50);
        let deadline = Instant::now() + at_most;
        let mut state = self.state();
        loop {
            let now = Instant::now();
            let quiet_at = match (state.answered, state.last_answered) {
                // Ends at the earliest `pause` after this landing.
                (1.., _) => now + pause,
                (0, Some(ended)) => ended + pause,
                (0, None) => now,
            };
            if quiet_at <= now || deadline <= now || stop.load(Ordering::SeqCst) {
                return;
            }
            let wake = quiet_at.min(deadline).min(now + STOP_CHECK);
            state = self
                .0
                .changed
                .wait_timeout(state, wake - now)
                .expect("turns lock")
                .0;
        }
    }
}

pub struct LandingGuard<'a> {
    landings: &'a Landings,
    answered: bool,
}

impl Drop for LandingGuard<'_> {
    fn drop(&mut self) {
        let mut state = self.landings.state();
        state.landings -= 1;
        if self.answered {
            state.answered -= 1;
            state.last_answered = Some(Instant::now());
        }
        drop(state);
        self.landings.0.changed.notify_all();
    }
}

pub struct ProcessingGuard<'a>(&'a Landings);

impl Drop for ProcessingGuard<'_> {
    fn drop(&mut self) {
        self.0.state().processing = false;
        self.0.0.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LONG: Duration = Duration::from_secs(60);

    #[test]
    fn with_no_landing_processing_does_not_wait() {
        let landings = Landings::default();
        let started = Instant::now();
        landings.wait_for_pause(LONG, LONG, &AtomicBool::new(false));
        assert!(started.elapsed() < LONG);
    }

    #[test]
    fn processing_waits_until_landings_have_paused() {
        let landings = Landings::default();
        let pause = Duration::from_millis(50);
        let ended = std::thread::scope(|scope| {
            let guard = landings.start(true);
            let lander = scope.spawn(move || {
                std::thread::sleep(Duration::from_millis(200));
                // Taken before the landing ends, so never after its own clock.
                let ending = Instant::now();
                drop(guard);
                ending
            });
            landings.wait_for_pause(pause, LONG, &AtomicBool::new(false));
            let returned = Instant::now();
            let ended = lander.join().unwrap();
            assert!(
                returned >= ended + pause,
                "returned before the landing had ended and the pause passed"
            );
            ended
        });
        // A landing that ended long ago is a pause already.
        assert!(ended.elapsed() >= pause);
        let again = Instant::now();
        landings.wait_for_pause(pause, LONG, &AtomicBool::new(false));
        assert!(again.elapsed() < pause);
    }

    #[test]
    fn landings_no_sender_waits_for_do_not_hold_processing_back() {
        let landings = Landings::default();
        let _dropped_files = landings.start(false);
        let started = Instant::now();
        landings.wait_for_pause(LONG, LONG, &AtomicBool::new(false));
        assert!(started.elapsed() < LONG);
        assert!(
            landings.any(),
            "processing still makes way at the write lock"
        );
    }

    #[test]
    fn processing_waits_no_longer_than_told_or_than_a_stop() {
        let landings = Landings::default();
        let _busy = landings.start(true);
        let at_most = Duration::from_millis(150);
        let started = Instant::now();
        landings.wait_for_pause(LONG, at_most, &AtomicBool::new(false));
        assert!(started.elapsed() >= at_most);
        assert!(landings.any(), "the landing is still under way");

        let stop = AtomicBool::new(false);
        let started = Instant::now();
        std::thread::scope(|scope| {
            scope.spawn(|| {
                std::thread::sleep(Duration::from_millis(100));
                stop.store(true, Ordering::SeqCst);
            });
            landings.wait_for_pause(LONG, LONG, &stop);
        });
        assert!(stop.load(Ordering::SeqCst));
        assert!(started.elapsed() < LONG);
    }
}
