//! `dropgate run`: sources, landing and processing wired together until shutdown.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, channel};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::audit::Checkpointer;
use crate::config::{Config, SourceKind};
use crate::health::{self, HealthServer, Readiness};
use crate::intake::Intake;
use crate::keys::{self, KeyError};
use crate::land::{self, Arrival, Landings, Origin};
use crate::ledger::{AuditEvent, Clock, FileRow, FileState, Ledger, LedgerError, SystemClock};
use crate::pipeline::{ProcessError, Processor, Progress};
use crate::receive;
use crate::spool::{Area, Spool};
use crate::systemd;

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
    #[error("unknown source `{name}` (configured: {known})")]
    UnknownSource { name: String, known: String },
    #[error("{path}: {message}")]
    Input { path: String, message: String },
    #[error(transparent)]
    Publish(#[from] crate::publish::PublishError),
    #[error(transparent)]
    Http(#[from] health::BindError),
}

/// Opens everything `run` needs: keys, spool folders, ledger; finishes what a
/// previous run left half done.
pub fn prepare(config: &Config) -> Result<(age::x25519::Identity, Ledger), DaemonError> {
    let made = keys::ensure(config, false)?;
    keys::check_login_keys(config)?;
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
    let mut ledger = Ledger::open(&config.daemon.ledger, clock)?;
    audit_keys_created(&mut ledger, &made)?;
    Ok((identity, ledger))
}

/// A `key_created` audit event for each key just made (which key, never
/// its contents).
pub fn audit_keys_created(
    ledger: &mut Ledger,
    made: &[keys::KeyStatus],
) -> Result<(), LedgerError> {
    for key in made.iter().filter(|k| k.created) {
        ledger.audit(&AuditEvent {
            action: "key_created",
            detail: Some(serde_json::json!({ "key": key.what })),
            ..AuditEvent::default()
        })?;
    }
    Ok(())
}

/// `dropgate ingest`: takes files through the whole pipeline once, without
/// the daemon, as if they came from `source`; the given files stay where
/// they are. `watch` is given the processing's progress before it starts.
/// Returns their ledger rows, settled.
pub fn ingest(
    config: Arc<Config>,
    source: &str,
    paths: &[PathBuf],
    watch: impl FnOnce(Progress),
) -> Result<Vec<FileRow>, DaemonError> {
    let Some(source) = config.sources.get(source) else {
        let known: Vec<&str> = config.sources.keys().map(String::as_str).collect();
        return Err(DaemonError::UnknownSource {
            name: source.to_string(),
            known: known.join(", "),
        });
    };
    let input_error = |path: &Path, message: String| DaemonError::Input {
        path: path.display().to_string(),
        message,
    };
    let (identity, mut ledger) = prepare(&config)?;
    let spool = Spool::new(&config.daemon.spool);
    let mut arrivals = Vec::new();
    for path in paths {
        let meta = std::fs::metadata(path).map_err(|e| input_error(path, e.to_string()))?;
        if !meta.is_file() {
            return Err(input_error(path, "not a regular file".into()));
        }
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        // Named by the admin, not dropped by a partner: no size cap.
        arrivals.push(Arrival::copy(path.clone(), name, u64::MAX));
    }
    let origin = Origin {
        source: &source.name,
        partner: &source.partner,
        remove_sender: false,
        uploaded_from: None,
        landings: &Landings::default(),
    };
    let landed = land::land(&config, &spool, &mut ledger, &origin, &arrivals);
    let mut ids = Vec::new();
    for (arrival, result) in arrivals.iter().zip(landed) {
        match result {
            Ok(landed) => ids.push(landed.id()),
            Err(e) => return Err(input_error(&arrival.path, e.to_string())),
        }
    }
    let files = ids
        .iter()
        .map(|id| ledger.file(*id))
        .collect::<Result<Vec<_>, _>>()?;
    let processor = Processor::new(config.clone(), identity);
    watch(processor.progress());
    processor.process(&mut ledger, files, &AtomicBool::new(false))?;
    Ok(ids
        .into_iter()
        .map(|id| ledger.file(id))
        .collect::<Result<Vec<_>, _>>()?)
}

/// `dropgate replay`: queues a quarantined file again and processes it here,
/// unless a running daemon takes it first. Returns its row, and whether it
/// was processed here.
pub fn replay(config: Arc<Config>, id: i64) -> Result<(FileRow, bool), DaemonError> {
    let (identity, mut ledger) = prepare(&config)?;
    ledger.replay(id)?;
    let processor = Processor::new(config, identity);
    let file = ledger.file(id)?;
    let done = processor.process(&mut ledger, vec![file], &AtomicBool::new(false))?;
    Ok((ledger.file(id)?, !done.is_empty()))
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
                // A copy written by an earlier version that wrote small
                // files out of the ledger: the ledger's bytes are the copy.
                Some(file) if ledger.holds_payload(file.id)? => {
                    let _ = std::fs::remove_file(entry.path());
                }
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
    processor.settle_held_quarantined(ledger)?;
    Ok(())
}

/// Runs until `shutdown` completes; the files in hand are finished first.
/// Each message on `reloads` reads the config file again and, when it is
/// valid, applies it (see [`reload`]).
pub async fn run(
    config: Arc<Config>,
    shutdown: impl Future<Output = ()>,
    mut reloads: tokio::sync::mpsc::Receiver<()>,
) -> Result<(), DaemonError> {
    let (identity, mut ledger) = prepare(&config)?;
    // What the daemon runs on, for whoever asks later what was in force.
    audit_config(&mut ledger, &config, false)?;
    // Before any source lands a file: a new route forwards what comes after.
    ledger.register_routes(config.routes.keys().map(String::as_str))?;
    let spool = Spool::new(&config.daemon.spool);
    let processor = Processor::new(config.clone(), identity);
    let landings = processor.landings();
    let progress = processor.progress();
    systemd::status("recovering what the last run left");
    recover(&processor, &ledger, &spool)?;
    let land_ledger = Ledger::open(&config.daemon.ledger, Arc::new(SystemClock))?;

    let (wake_tx, wake_rx) = channel();
    let (reconfigure_tx, reconfigure_rx) = channel();
    let turns = Turns::default();
    let processing = {
        let turns = turns.clone();
        std::thread::Builder::new()
            .name("processor".into())
            .spawn(move || {
                process_until_stopped(processor, ledger, wake_rx, reconfigure_rx, &turns)
            })
            .expect("spawn the processor thread")
    };
    let checkpointer = Checkpointer::new(
        crate::publish::signing_key(&config.keys.signing_key)?,
        &config.daemon.spool,
    );
    let (intake, audit_writer) = Intake::start(
        config.clone(),
        land_ledger,
        landings,
        wake_tx.clone(),
        checkpointer,
    )?;

    // Listeners live as long as the daemon; a reload leaves their
    // connections open.
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let mut listeners = JoinSet::new();
    let mut sftp = None;
    if let Some(server) = receive::sftp_server::bind(&config, intake.clone()).await? {
        tracing::info!(address = %server.local_addr().map_err(receive::sftp_server::ServerError::from)?, "SFTP server listening");
        sftp = Some(server.reconfigure());
        let shutdown = shutdown_rx.clone();
        listeners.spawn(async move {
            if let Err(e) = server.serve(shutdown).await {
                tracing::error!(error = %e, "SFTP server stopped");
            }
        });
    }
    // Without a watchdog, processing quiet this long is reported as stuck.
    let stalled_after = systemd::watchdog_period().unwrap_or(Duration::from_secs(60));
    let readiness = Readiness::new(progress.clone(), stalled_after);
    if let Some(http) = &config.http {
        let server = HealthServer::bind(http.listen, readiness.clone()).await?;
        if let Ok(address) = server.local_addr() {
            tracing::info!(%address, "HTTP listening: /healthz, /readyz, /metrics");
        }
        listeners.spawn(server.serve(shutdown_rx.clone()));
    }
    if !config.schedules.is_empty() {
        let mut ledger = Ledger::open(&config.daemon.ledger, Arc::new(SystemClock))?;
        let own_keys = crate::publish::own_keys(&config.keys.signing_key)?;
        crate::publish::recover(&config, &mut ledger, &own_keys)?;
    }
    let mut config = config;
    let mut generation = Generation::start(&config, &intake, &spool)?;

    tracing::info!(
        sources = config.sources.len(),
        schedules = config.schedules.len(),
        routes = config.routes.len(),
        "ready"
    );
    readiness.started();
    systemd::ready(&format!(
        "ready: {} sources, {} schedules, {} routes",
        config.sources.len(),
        config.schedules.len(),
        config.routes.len()
    ));
    let watchdog = systemd::watchdog_period()
        .map(|period| tokio::spawn(systemd::watchdog(progress.clone(), period)));
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            Some(()) = reloads.recv() => {
                systemd::reloading("reloading the configuration");
                if let Some((new, identity)) = reload(&config).await {
                    // What was in hand under the old configuration lands
                    // under it; then everything starts again on the new one.
                    generation.stop().await;
                    // The processor takes it before any file lands under it
                    // (a file lands with a feed of the configuration then in
                    // force): once the batch in hand is done.
                    let (taken_tx, taken_rx) = tokio::sync::oneshot::channel();
                    turns.hold.store(true, Ordering::SeqCst);
                    let _ = reconfigure_tx.send(Reconfigure { config: new.clone(), identity, taken: taken_tx });
                    let _ = wake_tx.send(());
                    let _ = taken_rx.await;
                    intake.reconfigure(new.clone());
                    config = new;
                    generation = Generation::start(&config, &intake, &spool)?;
                    tracing::info!(sha256 = %config.sha256, sources = config.sources.len(), feeds = config.feeds.len(), "configuration reloaded");
                }
                // Key files are read again even when the config text is
                // unchanged, as sshd reads authorized_keys at each login.
                if let Some(sftp) = &sftp {
                    match sftp.apply(&config) {
                        Ok(()) => tracing::info!("SFTP accounts, keys and host key read again"),
                        Err(e) => tracing::error!(error = %e, "SFTP server keeps its accounts and host key"),
                    }
                }
                systemd::ready(&format!(
                    "ready: {} sources, {} schedules, {} routes",
                    config.sources.len(),
                    config.schedules.len(),
                    config.routes.len()
                ));
            }
        }
    }

    let deadline = config.daemon.stop_deadline;
    tracing::info!(
        deadline_secs = deadline.as_secs_f64(),
        "shutting down: finishing the files in hand"
    );
    systemd::stopping("stopping: finishing the files in hand");
    readiness.stopping();
    // No new connection, poll or batch; what is in hand goes on until the
    // deadline, then reading stops and those files stay `received`.
    turns.finishing.store(true, Ordering::SeqCst);
    turns.hold.store(true, Ordering::SeqCst);
    let _ = shutdown_tx.send(true);
    let _ = wake_tx.send(());
    let cut_off = {
        let stop = turns.stop.clone();
        let wake = wake_tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(deadline).await;
            tracing::warn!("stop deadline reached: files still being read stay received");
            stop.store(true, Ordering::SeqCst);
            let _ = wake.send(());
        })
    };
    generation.stop().await;
    while listeners.join_next().await.is_some() {}
    tokio::task::spawn_blocking(move || processing.join())
        .await
        .expect("join the processor")
        .expect("the processor thread does not panic");
    cut_off.abort();
    if let Some(watchdog) = watchdog {
        watchdog.abort();
    }
    tokio::task::spawn_blocking(move || audit_writer.finish(&intake))
        .await
        .expect("join the audit writer");
    tracing::info!("stopped");
    Ok(())
}

/// `config_loaded`, with the SHA-256 of the text in force.
fn audit_config(ledger: &mut Ledger, config: &Config, reload: bool) -> Result<(), LedgerError> {
    ledger.audit(&AuditEvent {
        action: "config_loaded",
        detail: Some(serde_json::json!({ "sha256": config.sha256, "reload": reload })),
        ..AuditEvent::default()
    })?;
    Ok(())
}

/// Reads the config file again. `None` (the running one stays) when it is
/// invalid (each problem logged with its position), unchanged, or changes
/// what cannot change while running (the spool and ledger). Settings read
/// only at start (listen addresses, `[sftp_server]` limits, the key that
/// signs audit checkpoints) are logged as waiting for a restart.
async fn reload(running: &Config) -> Option<(Arc<Config>, age::x25519::Identity)> {
    let path = running.file.clone();
    let loaded = tokio::task::spawn_blocking(move || Config::load(&path))
        .await
        .expect("reading the config does not panic");
    let new = match loaded {
        Err(errors) => {
            for problem in &errors.errors {
                tracing::error!(%problem, "reload: configuration refused");
            }
            tracing::warn!(
                problems = errors.errors.len(),
                "reload: still running the configuration in force"
            );
            return None;
        }
        Ok(new) => new,
    };
    for warning in &new.warnings {
        tracing::warn!("{warning}");
    }
    if new.sha256 == running.sha256 {
        tracing::info!("reload: the configuration is unchanged");
        return None;
    }
    if new.daemon.spool != running.daemon.spool || new.daemon.ledger != running.daemon.ledger {
        tracing::error!(
            "reload: the spool and the ledger cannot move while dropgate runs; still running the configuration in force (restart to apply)"
        );
        return None;
    }
    let Ok(identity) = keys::load_identity(&new.keys.age_identity) else {
        tracing::error!(
            "reload: the new age identity cannot be read; still running the configuration in force"
        );
        return None;
    };
    let restart_needed = [
        (new.sftp_server != running.sftp_server, "[sftp_server]"),
        (
            new.http.as_ref().map(|h| h.listen) != running.http.as_ref().map(|h| h.listen),
            "[http]",
        ),
        (
            new.keys.signing_key != running.keys.signing_key,
            "[keys] signing_key (for audit checkpoints)",
        ),
    ];
    for (changed, what) in restart_needed {
        if changed {
            tracing::warn!(
                setting = what,
                "reload: this setting takes effect at the next restart"
            );
        }
    }
    let mut ledger = match Ledger::open(&new.daemon.ledger, Arc::new(SystemClock)) {
        Ok(ledger) => ledger,
        Err(e) => {
            tracing::error!(error = %e, "reload: the ledger cannot be opened; still running the configuration in force");
            return None;
        }
    };
    let recorded = audit_config(&mut ledger, &new, true)
        .and_then(|()| ledger.register_routes(new.routes.keys().map(String::as_str)));
    if let Err(e) = recorded {
        tracing::error!(error = %e, "reload: the ledger refused it; still running the configuration in force");
        return None;
    }
    Some((Arc::new(new), identity))
}

/// The tasks that run on one configuration: sources, schedules, routes,
/// receipts, alerts. A reload stops them (each finishing what it has in
/// hand) and starts a new generation.
struct Generation {
    tasks: JoinSet<()>,
    stop: watch::Sender<bool>,
}

impl Generation {
    fn start(
        config: &Arc<Config>,
        intake: &Arc<Intake>,
        spool: &Spool,
    ) -> Result<Generation, DaemonError> {
        let (stop, stopped) = watch::channel(false);
        let mut tasks = JoinSet::new();
        crate::metrics::METRICS.expect(
            config.sources.keys().map(String::as_str),
            config.feeds.keys().map(String::as_str),
        );
        for source in config.sources.values() {
            match &source.kind {
                SourceKind::Local(settings) => {
                    std::fs::create_dir_all(&settings.path).map_err(|e| DaemonError::Spool {
                        path: settings.path.display().to_string(),
                        source: e,
                    })?;
                    tracing::info!(source = %source.name, partner = %source.partner, folder = %settings.path.display(), "watching");
                    tasks.spawn(receive::local::watch(
                        source.name.clone(),
                        source.partner.clone(),
                        settings.clone(),
                        intake.clone(),
                        stopped.clone(),
                    ));
                }
                SourceKind::Remote(settings) => {
                    tracing::info!(source = %source.name, partner = %source.partner, server = %settings.endpoint, schedule = %settings.schedule, "polling");
                    tasks.spawn(receive::remote_poll::poll(
                        source.name.clone(),
                        source.partner.clone(),
                        (**settings).clone(),
                        intake.clone(),
                        spool.downloads(&source.name),
                        stopped.clone(),
                    ));
                }
            }
        }
        if !config.schedules.is_empty() {
            let key = crate::publish::signing_key(&config.keys.signing_key)?;
            // Pushes a stop interrupted are made at once, failed ones again later.
            tasks.spawn(crate::publish::push_until_stopped(
                config.clone(),
                stopped.clone(),
            ));
            tasks.spawn(crate::publish::run_schedules(
                config.clone(),
                Arc::new(key),
                stopped.clone(),
            ));
        }
        if config.feeds.values().any(|f| f.expect.is_set()) {
            tasks.spawn(crate::alerts::watch(config.clone(), stopped.clone()));
        }
        if config.partners.values().any(|p| p.receipts.is_some()) {
            tasks.spawn(crate::receipt::run_receipts(
                config.clone(),
                stopped.clone(),
            ));
        }
        tasks.spawn(crate::retention::run(config.clone(), stopped.clone()));
        if !config.routes.is_empty() {
            // Decrypted copies a stop left behind: their files are still
            // pending and are prepared again.
            let _ = std::fs::remove_dir_all(spool.routing());
            let identity = keys::load_identity(&config.keys.age_identity)?;
            tasks.spawn(crate::route::run_routes(
                config.clone(),
                Arc::new(identity),
                stopped.clone(),
            ));
        }
        Ok(Generation { tasks, stop })
    }

    /// Stops every task, each finishing what it has in hand.
    async fn stop(&mut self) {
        let _ = self.stop.send(true);
        while self.tasks.join_next().await.is_some() {}
    }
}

/// A gap between landings this long counts as a pause in a sender's burst.
const LANDINGS_PAUSE: Duration = Duration::from_millis(20);
/// The longest a received file waits for landings to pause before
/// processing starts anyway.
const PROCESSING_DEFERS_AT_MOST: Duration = Duration::from_secs(2);

/// A reloaded configuration for the processor, which says when it has
/// taken it.
struct Reconfigure {
    config: Arc<Config>,
    identity: age::x25519::Identity,
    taken: tokio::sync::oneshot::Sender<()>,
}

/// What the daemon tells the processor thread between batches.
#[derive(Clone, Default)]
struct Turns {
    /// Take no new batch (for a reload, or for shutdown).
    hold: Arc<AtomicBool>,
    /// Shutdown: leave once the batch in hand is done.
    finishing: Arc<AtomicBool>,
    /// The stop deadline passed: stop reading at once.
    stop: Arc<AtomicBool>,
}

fn process_until_stopped(
    mut processor: Processor,
    mut ledger: Ledger,
    wake: Receiver<()>,
    reconfigure: Receiver<Reconfigure>,
    turns: &Turns,
) {
    let (stop, finishing) = (&*turns.stop, &*turns.finishing);
    let landings = processor.landings();
    let progress = processor.progress();
    let mut failures = crate::repeated::Repeated::default();
    while !stop.load(Ordering::SeqCst) && !finishing.load(Ordering::SeqCst) {
        progress.beat();
        // Between batches: a batch in hand finishes on the configuration
        // it began with.
        while let Ok(new) = reconfigure.try_recv() {
            processor = processor.reconfigured(new.config, new.identity);
            turns.hold.store(false, Ordering::SeqCst);
            let _ = new.taken.send(());
        }
        // Receiving comes first: while a sender's files keep coming, each
        // answered only once it is `received`, processing waits for a pause
        // (for at most `PROCESSING_DEFERS_AT_MOST`), then takes them in
        // large batches, rather than competing with every landing for the
        // write lock, the disk and the two cores.
        landings.wait_for_pause(LANDINGS_PAUSE, PROCESSING_DEFERS_AT_MOST, stop);
        if let Err(e) = processor.drain(&mut ledger, stop, &turns.hold) {
            // Not a file's fault (those are counted and quarantined): the
            // disk or the database. Waiting may cure it; shutdown wakes it.
            if let Some(unlogged) = failures.failed() {
                tracing::error!(error = %e, failures_since_last_logged = unlogged, "processing failed; retrying every 5s");
            }
            let _ = wake.recv_timeout(Duration::from_secs(5));
            continue;
        }
        if failures.mended() {
            tracing::info!("processing works again");
        }
        // Also wakes once a second for files queued by other processes (`replay`).
        let _ = wake.recv_timeout(Duration::from_secs(1));
        while wake.try_recv().is_ok() {}
    }
}
