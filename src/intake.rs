//! The intake: what the daemon hands every source. Sources land files,
//! append to the audit trail, look up what was taken and note their status
//! through it, and import nothing of the daemon that runs them.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::audit::Checkpointer;
use crate::config::Config;
use crate::land::{self, Arrival, LandError, Landed, Landings, Origin};
use crate::ledger::{AuditEvent, Ledger, LedgerError, PollReport, QueuedAuditEvent, SystemClock};
use crate::spool::{Room, Spool};

/// Audit events waiting to be written; a burst beyond this makes the
/// sources that audit wait.
const AUDIT_QUEUE: usize = 16_384;
/// Audit events appended in one transaction.
const AUDIT_BATCH: usize = 512;
/// How often the audit writer looks for a checkpoint due without events of its own.
const CHECKPOINT_CHECK: Duration = Duration::from_secs(60);

/// What every source is handed: landing, the audit trail, and the ledger
/// look-ups and notes a source needs. Lands one batch at a time and wakes
/// the processor.
pub struct Intake {
    /// Replaced when the configuration is reloaded: feeds are matched by
    /// the one in force when a file lands.
    config: std::sync::RwLock<Arc<Config>>,
    spool: Spool,
    ledger: Mutex<Ledger>,
    wake: Mutex<Sender<()>>,
    landings: Landings,
    /// The audit writer's queue; `None` once it has been closed.
    audit: Mutex<Option<SyncSender<QueuedAuditEvent>>>,
    room: Room,
}

impl Intake {
    /// Queues an audit event for the audit writer, which appends events in
    /// the order queued, each with the time it happened. Does not wait for
    /// the ledger: a login is answered even while a large file's load holds
    /// the write lock. A failure is logged, not returned: the action it
    /// describes has already happened.
    pub fn audit(&self, event: &AuditEvent<'_>) {
        let queued = QueuedAuditEvent::new(chrono::Utc::now(), event);
        let queue = self.audit.lock().expect("audit lock").clone();
        let unqueued = match queue {
            Some(queue) => match queue.try_send(queued) {
                Ok(()) => return,
                // A full queue means the ledger is far behind: wait for
                // room, letting an async worker's other tasks move to
                // another worker meanwhile.
                Err(TrySendError::Full(queued)) => {
                    match wait_for_room(|| queue.send(queued).map_err(|e| Box::new(e.0))) {
                        Ok(()) => return,
                        Err(queued) => *queued,
                    }
                }
                Err(TrySendError::Disconnected(queued)) => queued,
            },
            None => queued,
        };
        // The writer has stopped (shutdown): written here instead.
        let mut ledger = self.ledger.lock().expect("ledger lock");
        if let Err(e) = ledger.audit_all(std::slice::from_ref(&unqueued)) {
            tracing::error!(error = %e, action = %unqueued.action, "could not write an audit event");
        }
    }

    /// Whether the spool has room for `bytes` more above `[daemon]
    /// min_free_space`; sources ask before they take a file.
    pub fn has_room(&self, bytes: u64) -> bool {
        self.room.admits(bytes)
    }

    /// Whether the spool had no room when last asked.
    pub fn out_of_room(&self) -> bool {
        self.room.is_full()
    }

    /// A fresh id for an upload to the embedded server: unique on this
    /// host across restarts, like a spool name.
    pub fn new_upload_id(&self) -> String {
        self.spool.new_name(chrono::Utc::now())
    }

    /// Stops queueing audit events; the writer finishes those queued.
    fn close_audit(&self) {
        self.audit.lock().expect("audit lock").take();
    }
}

/// Runs a call that may block for long: on a runtime worker through
/// `block_in_place`, so the worker's other tasks are not held up.
fn wait_for_room<T>(call: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(call)
        }
        _ => call(),
    }
}

impl Intake {
    /// Blocking: the file already taken from this remote path as it looks now.
    pub fn taken(
        &self,
        source: &str,
        path: &str,
        size: u64,
        mtime: u32,
    ) -> Result<Option<i64>, LedgerError> {
        let ledger = self.ledger.lock().expect("ledger lock");
        ledger.taken(source, path, size, mtime)
    }

    /// Blocking: notes that a polled file's server copy was deleted or moved
    /// aside, after it was received.
    pub fn sender_removed(&self, file_id: i64) {
        let mut ledger = self.ledger.lock().expect("ledger lock");
        if let Err(e) = ledger.record_sender_removed(&[file_id]) {
            tracing::warn!(error = %e, file_id, "could not record the removal of the server's copy");
        }
    }

    /// Blocking: notes how a source's latest poll went.
    pub fn source_checked(&self, source: &str, poll: &PollReport<'_>) {
        let mut ledger = self.ledger.lock().expect("ledger lock");
        if let Err(e) = ledger.source_checked(source, poll) {
            tracing::error!(error = %e, "could not record a source's status");
        }
    }

    /// Blocking: records a ban on an address.
    pub fn ban(&self, address: &str, until: chrono::DateTime<chrono::Utc>, failures: u32) {
        let mut ledger = self.ledger.lock().expect("ledger lock");
        if let Err(e) = ledger.ban(address, until, failures) {
            tracing::error!(error = %e, "could not record a ban");
        }
    }

    /// Blocking: the addresses banned now.
    pub fn bans(&self) -> Vec<(String, chrono::DateTime<chrono::Utc>)> {
        let ledger = self.ledger.lock().expect("ledger lock");
        ledger.bans().unwrap_or_else(|e| {
            tracing::error!(error = %e, "could not read bans");
            Vec::new()
        })
    }

    /// Blocking: copies, fsyncs and records a batch from one source.
    pub fn land(
        &self,
        source: &str,
        partner: &str,
        arrivals: &[Arrival],
    ) -> Vec<Result<Landed, LandError>> {
        self.land_from(source, partner, None, arrivals)
    }

    /// Blocking: lands one upload to the embedded server, its `upload` audit
    /// event recorded with it.
    pub fn land_upload(
        &self,
        source: &str,
        partner: &str,
        remote: &str,
        arrival: &Arrival,
    ) -> Result<Landed, LandError> {
        self.land_from(source, partner, Some(remote), std::slice::from_ref(arrival))
            .pop()
            .expect("one result per arrival")
    }

    fn land_from(
        &self,
        source: &str,
        partner: &str,
        uploaded_from: Option<&str>,
        arrivals: &[Arrival],
    ) -> Vec<Result<Landed, LandError>> {
        let origin = Origin {
            source,
            partner,
            remove_sender: true,
            uploaded_from,
            landings: &self.landings,
        };
        // Those that fit above the free space kept, in order; the rest wait.
        let mut needed = 0u64;
        let fits: Vec<bool> = arrivals
            .iter()
            .map(|a| {
                needed = needed.saturating_add(a.bytes_needed());
                self.room.admits(needed)
            })
            .collect();
        let land = |arrivals: &[Arrival]| {
            let mut ledger = self.ledger.lock().expect("ledger lock");
            let config = self.config.read().expect("config lock").clone();
            land::land(&config, &self.spool, &mut ledger, &origin, arrivals)
        };
        let mut landed = if fits.iter().all(|f| *f) {
            land(arrivals)
        } else if fits.iter().any(|f| *f) {
            let admitted: Vec<Arrival> = arrivals
                .iter()
                .zip(&fits)
                .filter(|(_, fits)| **fits)
                .map(|(a, _)| a.clone())
                .collect();
            land(&admitted)
        } else {
            Vec::new()
        }
        .into_iter();
        let results: Vec<Result<Landed, LandError>> = fits
            .iter()
            .map(|fits| match fits {
                true => landed.next().expect("one result per arrival"),
                false => Err(LandError::NoRoom),
            })
            .map(|result| match result {
                Err(e) if e.is_disk_full() => {
                    self.room.exhausted();
                    Err(LandError::NoRoom)
                }
                other => other,
            })
            .collect();
        if results.iter().any(|r| matches!(r, Ok(Landed::New(_)))) {
            let _ = self.wake.lock().expect("wake lock").send(());
        }
        results
    }
}

/// The audit writer thread, to be finished at shutdown.
pub struct AuditWriter {
    thread: JoinHandle<()>,
    closed: Arc<AtomicBool>,
}

impl Intake {
    /// The intake, landing through `ledger` (a connection of its own) and
    /// reporting landings to `landings`; starts its audit writer thread.
    pub fn start(
        config: Arc<Config>,
        ledger: Ledger,
        landings: Landings,
        wake: Sender<()>,
        checkpointer: Checkpointer,
    ) -> Result<(Arc<Intake>, AuditWriter), LedgerError> {
        let (audit_tx, audit_rx) = sync_channel(AUDIT_QUEUE);
        let closed = Arc::new(AtomicBool::new(false));
        let audit_ledger = Ledger::open(&config.daemon.ledger, Arc::new(SystemClock))?;
        let thread = {
            let closed = closed.clone();
            std::thread::Builder::new()
                .name("audit".into())
                .spawn(move || write_audit_events(audit_ledger, audit_rx, &closed, &checkpointer))
                .expect("spawn the audit thread")
        };
        let spool = Spool::new(&config.daemon.spool);
        let intake = Arc::new(Intake {
            room: Room::new(&spool, config.daemon.min_free_space),
            spool,
            config: std::sync::RwLock::new(config),
            ledger: Mutex::new(ledger),
            wake: Mutex::new(wake),
            landings,
            audit: Mutex::new(Some(audit_tx)),
        });
        Ok((intake, AuditWriter { thread, closed }))
    }
}

impl Intake {
    /// The configuration files land under from now on.
    pub fn reconfigure(&self, config: Arc<Config>) {
        self.room.keep_free(config.daemon.min_free_space);
        *self.config.write().expect("config lock") = config;
    }
}

impl AuditWriter {
    /// Blocking: closes the audit queue and waits for the events in it to be
    /// written (or given up on, when the ledger keeps failing).
    pub fn finish(self, intake: &Intake) {
        intake.close_audit();
        self.closed.store(true, Ordering::SeqCst);
        let _ = self.thread.join();
    }
}

/// Appends queued audit events until the queue is closed and empty. Once
/// it is closed (shutdown), a ledger that keeps failing is given up on
/// after a few tries, so shutdown cannot hang on a full disk.
///
/// Every [`crate::audit::CHECKPOINT_EVERY`] rows (checked after each batch, and every
/// [`CHECKPOINT_CHECK`] for rows other connections wrote) and when the queue
/// closes, the chain's head is signed in a checkpoint row.
fn write_audit_events(
    mut ledger: Ledger,
    queue: Receiver<QueuedAuditEvent>,
    closed: &std::sync::atomic::AtomicBool,
    checkpointer: &Checkpointer,
) {
    let checkpoint = |ledger: &mut Ledger, due: bool| {
        let written = match due {
            true => checkpointer.checkpoint_if_due(ledger),
            false => checkpointer.checkpoint(ledger),
        };
        if let Err(e) = written {
            tracing::error!(error = %e, "could not write an audit checkpoint");
        }
    };
    loop {
        let first = match queue.recv_timeout(CHECKPOINT_CHECK) {
            Ok(first) => first,
            Err(RecvTimeoutError::Timeout) => {
                checkpoint(&mut ledger, true);
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => break,
        };
        let mut events = vec![first];
        events.extend(queue.try_iter().take(AUDIT_BATCH - 1));
        let mut wait = Duration::from_millis(100);
        let mut tries = 0;
        loop {
            tries += 1;
            match ledger.audit_all(&events) {
                Ok(()) => break,
                Err(e) if closed.load(Ordering::SeqCst) && tries >= 3 => {
                    tracing::error!(error = %e, events = events.len(), "audit events could not be written before stopping");
                    break;
                }
                Err(e) if e.is_environmental() => {
                    tracing::error!(error = %e, events = events.len(), retry_in = ?wait, "could not write audit events");
                    std::thread::sleep(wait);
                    wait = (wait * 2).min(Duration::from_secs(10));
                }
                Err(_) => {
                    // One event spoils the batch: the others are written alone.
                    for event in &events {
                        if let Err(e) = ledger.audit_all(std::slice::from_ref(event)) {
                            tracing::error!(error = %e, action = %event.action, "could not write an audit event");
                        }
                    }
                    break;
                }
            }
        }
        checkpoint(&mut ledger, true);
    }
    checkpoint(&mut ledger, false);
}
