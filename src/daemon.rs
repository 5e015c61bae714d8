//! `dropgate run`: sources, landing and processing wired together until shutdown.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, SyncSender, TrySendError, channel, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::config::{Config, SourceKind};
use crate::keys::{self, KeyError};
use crate::land::{self, Arrival, LandError, Landed, Origin};
use crate::ledger::{
    AuditEvent, Clock, FileState, Ledger, LedgerError, QueuedAuditEvent, SystemClock,
};
use crate::pipeline::{Landings, ProcessError, Processor};
use crate::receive;
use crate::spool::{Area, Spool};

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error("spool {path}: {source}")]
    Spool {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Process(#[from] ProcessError),
    #[error(transparent)]
    Sftp(#[from] receive::sftp_server::ServerError),
}

/// Audit events waiting to be written; a burst beyond this makes the
/// sources that audit wait.
const AUDIT_QUEUE: usize = 16_384;
/// Audit events appended in one transaction.
const AUDIT_BATCH: usize = 512;

/// Lands files for every source, one batch at a time, and wakes the processor.
pub struct Lander {
    config: Arc<Config>,
    spool: Spool,
    ledger: Mutex<Ledger>,
    wake: Mutex<Sender<()>>,
    landings: Landings,
    /// The audit writer's queue; `None` once it has been closed.
    audit: Mutex<Option<SyncSender<QueuedAuditEvent>>>,
}

impl Lander {
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

impl Lander {
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

    /// Blocking: notes how a source's latest poll went.
    pub fn source_checked(&self, source: &str, error: Option<&str>) {
        let mut ledger = self.ledger.lock().expect("ledger lock");
        if let Err(e) = ledger.source_checked(source, error) {
            tracing::error!(error = %e, "could not record a source's status");
        }
    }

    /// Blocking: notes the server copies a source has yet to remove.
    pub fn source_cleanups(&self, source: &str, pending: u64, error: Option<&str>) {
        let mut ledger = self.ledger.lock().expect("ledger lock");
        if let Err(e) = ledger.source_cleanups(source, pending, error) {
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
        arrival: Arrival,
    ) -> Result<Landed, LandError> {
        self.land_from(
            source,
            partner,
            Some(remote),
            std::slice::from_ref(&arrival),
        )
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
        };
        let results = {
            let _landing = self.landings.start();
            let mut ledger = self.ledger.lock().expect("ledger lock");
            land::land(&self.config, &self.spool, &mut ledger, &origin, arrivals)
        };
        if results.iter().any(|r| matches!(r, Ok(Landed::New(_)))) {
            let _ = self.wake.lock().expect("wake lock").send(());
        }
        results
    }
}

/// Opens everything `run` needs: keys, spool folders, ledger; finishes what a
/// previous run left half done.
pub fn prepare(config: &Config) -> Result<(age::x25519::Identity, Ledger), DaemonError> {
    keys::ensure(config, false)?;
    let identity = keys::load_identity(&config.keys.age_identity)?;
    let spool = Spool::new(&config.daemon.spool);
    spool.ensure().map_err(|source| DaemonError::Spool {
        path: spool.root().display().to_string(),
        source,
    })?;
    for source in config.sources.values() {
        let SourceKind::Local(local) = &source.kind else {
            continue;
        };
        std::fs::create_dir_all(&local.path).map_err(|e| DaemonError::Spool {
            path: local.path.display().to_string(),
            source: e,
        })?;
    }
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let ledger = Ledger::open(&config.daemon.ledger, clock)?;
    Ok((identity, ledger))
}

/// Puts payloads where their ledger state says (a crash may have come between
/// the commit and the move) and removes copies the ledger never recorded.
pub fn recover(processor: &Processor, ledger: &Ledger, spool: &Spool) -> Result<(), DaemonError> {
    for area in [Area::Incoming, Area::Tmp] {
        let dir = spool.dir(area);
        let entries = std::fs::read_dir(&dir).map_err(|source| DaemonError::Spool {
            path: dir.display().to_string(),
            source,
        })?;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            match ledger.file_by_spool_name(&name)? {
                Some(file) if file.state == FileState::Received && area == Area::Tmp => {
                    spool
                        .settle(&name, FileState::Received)
                        .map_err(ProcessError::from)?;
                }
                Some(file) if file.state != FileState::Received => {
                    processor.settle(ledger, &file, file.state)?;
                }
                Some(_) => {}
                None if area == Area::Tmp => {
                    // Never recorded: the sender still has its copy.
                    let _ = std::fs::remove_file(entry.path());
                }
                None => {
                    tracing::warn!(payload = %name, "payload in incoming/ that the ledger does not know; left in place")
                }
            }
        }
    }
    Ok(())
}

/// Runs until `shutdown` completes; the file in hand is finished first.
pub async fn run(
    config: Arc<Config>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), DaemonError> {
    let (identity, ledger) = prepare(&config)?;
    let spool = Spool::new(&config.daemon.spool);
    let processor = Processor::new(config.clone(), identity);
    let landings = processor.landings();
    recover(&processor, &ledger, &spool)?;
    let land_ledger = Ledger::open(&config.daemon.ledger, Arc::new(SystemClock))?;

    let (wake_tx, wake_rx) = channel();
    let stop = Arc::new(AtomicBool::new(false));
    let processing = {
        let stop = stop.clone();
        std::thread::Builder::new()
            .name("processor".into())
            .spawn(move || process_until_stopped(processor, ledger, wake_rx, &stop))
            .expect("spawn the processor thread")
    };
    let (audit_tx, audit_rx) = sync_channel(AUDIT_QUEUE);
    let audit_closed = Arc::new(AtomicBool::new(false));
    let audit_writer = {
        let ledger = Ledger::open(&config.daemon.ledger, Arc::new(SystemClock))?;
        let closed = audit_closed.clone();
        std::thread::Builder::new()
            .name("audit".into())
            .spawn(move || write_audit_events(ledger, audit_rx, &closed))
            .expect("spawn the audit thread")
    };
    let lander = Arc::new(Lander {
        config: config.clone(),
        spool,
        ledger: Mutex::new(land_ledger),
        wake: Mutex::new(wake_tx.clone()),
        landings,
        audit: Mutex::new(Some(audit_tx)),
    });

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let mut sources = JoinSet::new();
    if let Some(server) = receive::sftp_server::bind(&config, lander.clone()).await? {
        tracing::info!(address = %server.local_addr().map_err(receive::sftp_server::ServerError::from)?, "SFTP server listening");
        let shutdown = shutdown_rx.clone();
        sources.spawn(async move {
            if let Err(e) = server.serve(shutdown).await {
                tracing::error!(error = %e, "SFTP server stopped");
            }
        });
    }
    for source in config.sources.values() {
        match &source.kind {
            SourceKind::Local(settings) => {
                tracing::info!(source = %source.name, partner = %source.partner, folder = %settings.path.display(), "watching");
                sources.spawn(receive::local::watch(
                    source.name.clone(),
                    source.partner.clone(),
                    settings.clone(),
                    lander.clone(),
                    shutdown_rx.clone(),
                ));
            }
            SourceKind::Remote(settings) => {
                tracing::info!(source = %source.name, partner = %source.partner, server = %settings.endpoint, schedule = %settings.schedule, "polling");
                sources.spawn(receive::remote_poll::poll(
                    source.name.clone(),
                    source.partner.clone(),
                    (**settings).clone(),
                    lander.clone(),
                    config.daemon.spool.join("pull").join(&source.name),
                    shutdown_rx.clone(),
                ));
            }
        }
    }

    tracing::info!(sources = config.sources.len(), "ready");
    shutdown.await;
    tracing::info!("shutting down: finishing the files in hand");
    let _ = shutdown_tx.send(true);
    while sources.join_next().await.is_some() {}
    stop.store(true, Ordering::SeqCst);
    let _ = wake_tx.send(());
    tokio::task::spawn_blocking(move || processing.join())
        .await
        .expect("join the processor")
        .expect("the processor thread does not panic");
    lander.close_audit();
    audit_closed.store(true, Ordering::SeqCst);
    tokio::task::spawn_blocking(move || audit_writer.join())
        .await
        .expect("join the audit writer")
        .expect("the audit thread does not panic");
    tracing::info!("stopped");
    Ok(())
}

/// Appends queued audit events until the queue is closed and empty. Once
/// it is closed (shutdown), a ledger that keeps failing is given up on
/// after a few tries, so shutdown cannot hang on a full disk.
fn write_audit_events(
    mut ledger: Ledger,
    queue: Receiver<QueuedAuditEvent>,
    closed: &std::sync::atomic::AtomicBool,
) {
    while let Ok(first) = queue.recv() {
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
    }
}

fn process_until_stopped(
    processor: Processor,
    mut ledger: Ledger,
    wake: Receiver<()>,
    stop: &AtomicBool,
) {
    while !stop.load(Ordering::SeqCst) {
        if let Err(e) = processor.drain(&mut ledger, stop) {
            // Not a file's fault (those are counted and quarantined): the
            // disk or the database. Waiting may cure it; shutdown wakes it.
            tracing::error!(error = %e, "processing failed; retrying in 5s");
            let _ = wake.recv_timeout(Duration::from_secs(5));
            continue;
        }
        // Also wakes once a second for files queued by other processes (`replay`).
        let _ = wake.recv_timeout(Duration::from_secs(1));
        while wake.try_recv().is_ok() {}
    }
}
