//! Publish: a schedule's export, made on its timetable or by hand. The order
//! is written once, in [`make`]: the grants in force → a run row → the
//! records loaded since the watermark, through each output format, into a
//! staging folder → the manifest and its signature → the folder moved into
//! the consumer's outbox → the run finished, with its grants, in the ledger.
//!
//! A crash at any point leaves either no export (the staging folder is
//! removed at the next start and the run made again) or one complete export
//! whose run is then finished from its manifest: never two.

use std::collections::BTreeMap;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, Utc};
use russh::keys::ssh_key::{PrivateKey, PublicKey};
use tokio::sync::watch;

use crate::config::{AgeRecipients, CatchUp, Config, ExportMode, ExportSchedule, Grant};
use crate::export::manifest::{self, Manifest};
use crate::export::{Output, OutputFile, Target};
use crate::ledger::{
    Clock, Ledger, LedgerError, RunEnd, RunOutcome, RunStart, Settles, SystemClock, Watermark,
};
use crate::metrics::METRICS;
use crate::records::{self, Allowed, Kind};
use crate::schedule::Cron;
use crate::spool::{Spool, sync_dir};

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error("export {export_id}: {source}")]
    Io {
        export_id: String,
        source: std::io::Error,
    },
    #[error("the push lock in {path}: {source}")]
    PushLock {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("signing key {path}: {message}")]
    Key { path: PathBuf, message: String },
    #[error("age recipients of `{consumer}`: {message}")]
    Recipients { consumer: String, message: String },
    #[error(
        "a run of schedule `{schedule}` is being made by another process; try again when it ends"
    )]
    InProgress { schedule: String },
    #[error("unknown schedule `{name}` (configured: {known})")]
    UnknownSchedule { name: String, known: String },
    #[error("cannot send {export_id} again: {reason}")]
    NotResent { export_id: String, reason: String },
}

/// A push that used up its attempts is tried again after this long...
const RETRY_FAILED_AFTER: chrono::TimeDelta = chrono::TimeDelta::minutes(15);
/// ...while its export was made less than this long ago; then it stays failed.
const RETRY_FAILED_FOR: chrono::TimeDelta = chrono::TimeDelta::hours(24);
/// How often the daemon looks for pushes to make again.
const PUSH_POLL: std::time::Duration = std::time::Duration::from_secs(60);

/// Why a run is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// The timetable's time it is for.
    Planned(DateTime<Utc>),
    /// `dropgate export SCHEDULE`.
    Manual,
}

/// What a run made.
#[derive(Debug)]
pub struct Made {
    pub run_id: i64,
    pub export_id: String,
    pub outcome: RunOutcome,
    /// The export in the consumer's outbox, when complete.
    pub folder: Option<PathBuf>,
    pub manifest: Option<Manifest>,
    /// Why it was refused.
    pub reason: Option<String>,
}

/// Reads the key that signs exports.
pub fn signing_key(path: &Path) -> Result<PrivateKey, PublishError> {
    PrivateKey::read_openssh_file(path).map_err(|e| PublishError::Key {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// The public half, to verify exports with.
pub fn verifying_key(path: &Path) -> Result<PublicKey, PublishError> {
    Ok(signing_key(path)?.public_key().clone())
}

/// Every key the daemon has signed exports with: the current one, then
/// those `keygen --force` retired.
pub fn own_keys(path: &Path) -> Result<Vec<PublicKey>, PublishError> {
    let mut keys = vec![verifying_key(path)?];
    keys.extend(retired_keys(path)?);
    Ok(keys)
}

/// The signing keys `keygen --force` replaced, oldest first.
fn retired_keys(path: &Path) -> Result<Vec<PublicKey>, PublishError> {
    let mut keys = Vec::new();
    let retired = crate::keys::retired_signing_keys(path);
    let text = match std::fs::read_to_string(&retired) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(keys),
        Err(e) => {
            return Err(PublishError::Key {
                path: retired,
                message: e.to_string(),
            });
        }
    };
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let key = PublicKey::from_openssh(line).map_err(|e| PublishError::Key {
            path: retired.clone(),
            message: e.to_string(),
        })?;
        keys.push(key);
    }
    Ok(keys)
}

/// Which partners' (and feeds') records each kind may include, from the
/// grants in force.
struct Granted<'c> {
    config: &'c Config,
    grants: Vec<&'c Grant>,
}

impl Allowed for Granted<'_> {
    fn allows(&self, kind: Kind, partner: &str, feed: Option<&str>) -> bool {
        let controller = self
            .config
            .partners
            .get(partner)
            .and_then(|p| p.controller.as_deref());
        self.grants.iter().any(|g| {
            g.records.contains(&kind)
                && Some(g.controller.as_str()) == controller
                && g.feeds
                    .as_ref()
                    .is_none_or(|feeds| feed.is_some_and(|f| feeds.iter().any(|x| x == f)))
        })
    }
}

/// A lock in `spool/locks/`, shared by every process on the spool (the
/// daemon, `dropgate export`); the kernel releases it when the holder dies.
/// A schedule's is held while one of its runs is made or recovered, so a run
/// whose schedule is not locked is one a stop interrupted. The push lock is
/// held while pending exports are pushed, so no export goes out twice at once.
struct SpoolLock {
    _file: std::fs::File,
}

impl SpoolLock {
    fn open(folder: &Path, name: &str) -> std::io::Result<std::fs::File> {
        std::fs::create_dir_all(folder)?;
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(folder.join(format!("{name}.lock")))
    }

    fn flock(file: &std::fs::File, operation: libc::c_int) -> std::io::Result<()> {
        use std::os::fd::AsRawFd;
        loop {
            // SAFETY: flock on a descriptor the caller owns; no memory is involved.
            if unsafe { libc::flock(file.as_raw_fd(), operation) } == 0 {
                return Ok(());
            }
            let error = std::io::Error::last_os_error();
            if error.kind() != std::io::ErrorKind::Interrupted {
                return Err(error);
            }
        }
    }

    /// A schedule's lock, or `None` when another holder has it.
    fn try_schedule(config: &Config, schedule: &str) -> std::io::Result<Option<SpoolLock>> {
        let folder = Spool::new(&config.daemon.spool).locks();
        let file = Self::open(&folder, &format!("schedule-{schedule}"))?;
        match Self::flock(&file, libc::LOCK_EX | libc::LOCK_NB) {
            Ok(()) => Ok(Some(SpoolLock { _file: file })),
            Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The push lock in the locks `folder`, waiting while another process
    /// pushes.
    fn push(folder: &Path) -> std::io::Result<SpoolLock> {
        let file = Self::open(folder, "push")?;
        match Self::flock(&file, libc::LOCK_EX | libc::LOCK_NB) {
            Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => {
                tracing::warn!("another process is pushing exports; waiting for it to finish");
                Self::flock(&file, libc::LOCK_EX)?;
            }
            taken => taken?,
        }
        Ok(SpoolLock { _file: file })
    }
}

fn outbox(config: &Config, consumer: &str) -> PathBuf {
    Spool::new(&config.daemon.spool).outboxes().join(consumer)
}

fn staging(outbox: &Path, export_id: &str) -> PathBuf {
    // Hidden from the consumer's listing until it is complete and signed.
    outbox.join(format!(".{export_id}.partial"))
}

/// Makes one export of `schedule` now.
pub fn make(
    config: &Config,
    ledger: &mut Ledger,
    key: &PrivateKey,
    schedule: &ExportSchedule,
    trigger: Trigger,
    now: DateTime<Utc>,
) -> Result<Made, PublishError> {
    // One run of a schedule at a time, whoever makes it: two would read the
    // same watermark and send the same records twice.
    let lock =
        SpoolLock::try_schedule(config, &schedule.name).map_err(|source| PublishError::Io {
            export_id: schedule.name.clone(),
            source,
        })?;
    let Some(_lock) = lock else {
        return Err(PublishError::InProgress {
            schedule: schedule.name.clone(),
        });
    };
    // Runs of this schedule left unfinished are a stopped holder's: settle them first.
    let mut own = vec![key.public_key().clone()];
    own.extend(retired_keys(&config.keys.signing_key)?);
    recover_runs(config, ledger, &own, &schedule.name)?;
    let day = now.with_timezone(&config.daemon.time_zone).date_naive();
    let grants: Vec<&Grant> = config
        .grants
        .values()
        .filter(|g| g.consumer == schedule.consumer && g.in_force(day))
        .filter(|g| g.records.iter().any(|k| schedule.records.contains(k)))
        .collect();
    let grant_names: Vec<String> = grants.iter().map(|g| g.name.clone()).collect();
    let watermark_from = match schedule.mode {
        ExportMode::Incremental => ledger.export_watermark(&schedule.name)?,
        ExportMode::Snapshot => Watermark::default(),
    };
    let prefix = format!("{}-{}", schedule.name, now.format("%Y%m%dT%H%M%SZ"));
    let (run_id, export_id) = ledger.begin_export_run(&RunStart {
        schedule: &schedule.name,
        consumer: &schedule.consumer,
        planned_at: match trigger {
            Trigger::Planned(at) => Some(at),
            Trigger::Manual => None,
        },
        mode: schedule.mode.as_str(),
        from: watermark_from,
        export_id_prefix: &prefix,
    })?;
    // No grant, no data: every kind the schedule names needs one in force today.
    let ungranted: Vec<Kind> = schedule
        .records
        .iter()
        .copied()
        .filter(|k| !grants.iter().any(|g| g.records.contains(k)))
        .collect();
    if !ungranted.is_empty() {
        let reason = format!(
            "no grant in force on {day} gives `{}` {}",
            schedule.consumer,
            ungranted
                .iter()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        tracing::warn!(schedule = %schedule.name, %reason, "export refused");
        ledger.finish_export_run(
            run_id,
            &RunEnd {
                outcome: RunOutcome::Refused,
                to: None,
                manifest_sha256: None,
                counts: None,
                grants: &grant_names,
                detail: Some(serde_json::json!({ "reason": reason })),
                destinations: &[],
            },
        )?;
        return Ok(Made {
            run_id,
            export_id,
            outcome: RunOutcome::Refused,
            folder: None,
            manifest: None,
            reason: Some(reason),
        });
    }
    let outbox = outbox(config, &schedule.consumer);
    let staged = staging(&outbox, &export_id);
    let io = |source| PublishError::Io {
        export_id: export_id.clone(),
        source,
    };
    let built = build(
        config,
        ledger,
        key,
        schedule,
        trigger,
        now,
        &grants,
        watermark_from,
        &export_id,
        &staged,
    )
    .and_then(|manifest| {
        let placed = outbox.join(&export_id);
        std::fs::rename(&staged, &placed).map_err(io)?;
        sync_dir(&outbox).map_err(io)?;
        Ok((manifest, placed))
    });
    let (manifest, placed, manifest_sha) = match built {
        Ok(((manifest, sha), placed)) => (manifest, placed, sha),
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staged);
            // Placed but not made durable: taken back out of the consumer's
            // sight, since the run that made it is not complete.
            let placed = outbox.join(&export_id);
            if placed.exists() {
                let _ = std::fs::rename(&placed, staged.with_extension("failed"));
            }
            tracing::error!(schedule = %schedule.name, error = %e, "export failed");
            ledger.finish_export_run(
                run_id,
                &RunEnd {
                    outcome: RunOutcome::Failed,
                    to: None,
                    manifest_sha256: None,
                    counts: None,
                    grants: &grant_names,
                    detail: Some(serde_json::json!({ "error": e.to_string() })),
                    destinations: &[],
                },
            )?;
            return Err(e);
        }
    };
    ledger.finish_export_run(
        run_id,
        &RunEnd {
            outcome: RunOutcome::Complete,
            to: Some(manifest.watermark.to()),
            manifest_sha256: Some(&manifest_sha),
            counts: Some(counts(&manifest)),
            grants: &grant_names,
            detail: None,
            destinations: &schedule.destinations,
        },
    )?;
    tracing::info!(schedule = %schedule.name, export = %export_id, files = manifest.output.len(), "export complete");
    Ok(Made {
        run_id,
        export_id,
        outcome: RunOutcome::Complete,
        folder: Some(placed),
        manifest: Some(manifest),
        reason: None,
    })
}

fn counts(manifest: &Manifest) -> serde_json::Value {
    manifest
        .output
        .iter()
        .map(|e| (e.url.clone(), serde_json::json!(e.count)))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// Writes the export into `staged`, signed; returns its manifest and the
/// manifest's SHA-256.
#[allow(clippy::too_many_arguments)]
fn build(
    config: &Config,
    ledger: &mut Ledger,
    key: &PrivateKey,
    schedule: &ExportSchedule,
    trigger: Trigger,
    now: DateTime<Utc>,
    grants: &[&Grant],
    watermark_from: Watermark,
    export_id: &str,
    staged: &Path,
) -> Result<(Manifest, String), PublishError> {
    let io = |source| PublishError::Io {
        export_id: export_id.to_string(),
        source,
    };
    let _ = std::fs::remove_dir_all(staged);
    // Readable by dropgate alone: the SFTP server serves it to the consumer.
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(staged)
        .map_err(io)?;
    let target = Target {
        folder: staged.to_path_buf(),
        recipients: match schedule.encrypt {
            true => Some(recipients(config, &schedule.consumer)?),
            false => None,
        },
    };
    let mut outputs: Vec<Box<dyn Output>> =
        schedule.formats.iter().map(|f| f.output(&target)).collect();
    let allowed = Granted {
        config,
        grants: grants.to_vec(),
    };
    let watermark_to = {
        let snapshot = ledger.snapshot()?;
        let to = snapshot.high_water()?;
        let files = snapshot.loaded_files(watermark_from.loads, to.loads)?;
        let scope = records::Scope {
            files: &files,
            sets: (watermark_from.sets, to.sets),
            kinds: &schedule.records,
            allowed: &allowed,
            disclosure: schedule.disclosure,
        };
        records::export::<PublishError>(snapshot.connection(), &scope, &mut |record| {
            for output in &mut outputs {
                output.write(&record).map_err(io)?;
            }
            Ok(())
        })?;
        to
    };
    let mut files: Vec<OutputFile> = Vec::new();
    for output in outputs {
        files.extend(output.finish().map_err(io)?);
    }
    let manifest = Manifest {
        transaction_time: now.to_rfc3339_opts(SecondsFormat::Secs, true),
        request: match trigger {
            Trigger::Planned(at) => format!(
                "schedule {} at {}",
                schedule.name,
                at.to_rfc3339_opts(SecondsFormat::Secs, true)
            ),
            Trigger::Manual => format!("dropgate export {}", schedule.name),
        },
        requires_access_token: false,
        output: manifest::entries(&files),
        error: Vec::new(),
        export_id: export_id.to_string(),
        schedule: schedule.name.clone(),
        consumer: schedule.consumer.clone(),
        mode: schedule.mode.as_str().to_string(),
        grants: grants.iter().map(|g| g.name.clone()).collect(),
        watermark: manifest::Watermark::new(watermark_from, watermark_to),
    };
    let sha = manifest::write_signed(staged, &manifest, key).map_err(io)?;
    sync_dir(staged).map_err(io)?;
    Ok((manifest, sha))
}

/// The consumer's age recipients, read now (a demo identity's may have been
/// made since the config was read).
fn recipients(
    config: &Config,
    consumer: &str,
) -> Result<Arc<[age::x25519::Recipient]>, PublishError> {
    let fail = |message: String| PublishError::Recipients {
        consumer: consumer.to_string(),
        message,
    };
    let age = config
        .partners
        .get(consumer)
        .and_then(|p| p.age.as_ref())
        .ok_or_else(|| fail("no [partners.NAME.age] recipients".into()))?;
    Ok(AgeRecipients::read_all(&age.recipients)
        .map_err(fail)?
        .into())
}

/// Finishes runs a stop interrupted: a run whose export reached the outbox
/// complete is finished from its manifest; any other is marked interrupted
/// (to be made again) and its staging folder removed.
/// `keys`: every key the daemon has signed with ([`own_keys`]).
pub fn recover(
    config: &Config,
    ledger: &mut Ledger,
    keys: &[PublicKey],
) -> Result<(), PublishError> {
    let unfinished: std::collections::BTreeSet<String> = ledger
        .unfinished_export_runs()?
        .into_iter()
        .map(|run| run.schedule)
        .collect();
    for schedule in unfinished {
        let lock =
            SpoolLock::try_schedule(config, &schedule).map_err(|source| PublishError::Io {
                export_id: schedule.clone(),
                source,
            })?;
        // Held: a run in progress elsewhere, not one a stop interrupted.
        if let Some(_lock) = lock {
            recover_runs(config, ledger, keys, &schedule)?;
        }
    }
    Ok(())
}

/// Settles the unfinished runs of `schedule`; the caller holds its lock.
fn recover_runs(
    config: &Config,
    ledger: &mut Ledger,
    keys: &[PublicKey],
    schedule: &str,
) -> Result<(), PublishError> {
    let runs = ledger.unfinished_export_runs()?;
    for run in runs.into_iter().filter(|r| r.schedule == schedule) {
        let outbox = outbox(config, &run.consumer);
        let placed = outbox.join(&run.export_id);
        match manifest::verify(&placed, keys) {
            Ok(manifest) => {
                let sha = std::fs::read(placed.join(manifest::MANIFEST))
                    .map(|b| crate::digest::sha256_hex(&b))
                    .ok();
                ledger.finish_export_run(
                    run.id,
                    &RunEnd {
                        outcome: RunOutcome::Complete,
                        to: Some(manifest.watermark.to()),
                        manifest_sha256: sha.as_deref(),
                        counts: Some(counts(&manifest)),
                        grants: &manifest.grants,
                        detail: Some(
                            serde_json::json!({ "finished": "at start, from its manifest" }),
                        ),
                        destinations: config
                            .schedules
                            .get(&run.schedule)
                            .map_or(&[][..], |s| &s.destinations),
                    },
                )?;
                tracing::info!(export = %run.export_id, "an export made before a stop was finished from its manifest");
            }
            Err(_) => {
                let _ = std::fs::remove_dir_all(staging(&outbox, &run.export_id));
                if placed.exists() {
                    // Not ours, or damaged: kept for an admin to look at, never offered again.
                    let _ = std::fs::rename(
                        &placed,
                        staging(&outbox, &run.export_id).with_extension("damaged"),
                    );
                }
                ledger.finish_export_run(
                    run.id,
                    &RunEnd {
                        outcome: RunOutcome::Interrupted,
                        to: None,
                        manifest_sha256: None,
                        counts: None,
                        grants: &[],
                        detail: None,
                        destinations: &[],
                    },
                )?;
                tracing::warn!(export = %run.export_id, "an export interrupted by a stop is discarded");
            }
        }
    }
    Ok(())
}

/// The files of a placed export in the order they are pushed: data files
/// first, the manifest last, so a consumer that waits for `manifest.json`
/// finds the rest already there.
fn shipment(folder: &Path) -> Result<Vec<(PathBuf, String, String, u64)>, std::io::Error> {
    let manifest: Manifest =
        serde_json::from_slice(&std::fs::read(folder.join(manifest::MANIFEST))?)
            .map_err(std::io::Error::other)?;
    let mut files: Vec<(PathBuf, String, String, u64)> = manifest
        .output
        .iter()
        .map(|e| {
            (
                folder.join(&e.url),
                e.url.clone(),
                e.sha256.clone(),
                e.bytes,
            )
        })
        .collect();
    for name in [
        manifest::SUMS.to_string(),
        format!("{}.sig", manifest::SUMS),
        format!("{}.sig", manifest::MANIFEST),
        manifest::MANIFEST.to_string(),
    ] {
        let bytes = std::fs::read(folder.join(&name))?;
        files.push((
            folder.join(&name),
            name,
            crate::digest::sha256_hex(&bytes),
            bytes.len() as u64,
        ));
    }
    Ok(files)
}

/// Pushes every complete export still pending to its destinations (each
/// into a folder named as the export), recording how each ended. Returns
/// each push: export, destination, and the error if it was given up.
pub async fn push_pending(
    config: &Config,
) -> Result<Vec<(String, String, Option<String>)>, PublishError> {
    // Schedules finish together, the start-up push may overlap them, and
    // `dropgate export` pushes too: one push of the pending exports at a time
    // in this process, and across processes, or a file could be sent twice
    // at once through one temporary name.
    static PUSHING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _pushing = PUSHING.lock().await;
    let _push_lock = {
        let folder = Spool::new(&config.daemon.spool).locks();
        let path = folder.clone();
        tokio::task::spawn_blocking(move || SpoolLock::push(&folder))
            .await
            .expect("taking a lock does not panic")
            .map_err(|source| PublishError::PushLock { path, source })?
    };
    let ledger = std::sync::Mutex::new(Ledger::open(&config.daemon.ledger, Arc::new(SystemClock))?);
    {
        // A destination that was down is tried again, for a while.
        let now = Utc::now();
        let mut ledger = ledger.lock().expect("ledger lock");
        ledger.retry_failed_pushes(now - RETRY_FAILED_AFTER, now - RETRY_FAILED_FOR)?;
    }
    let pending = ledger
        .lock()
        .expect("ledger lock")
        .pending_export_deliveries()?;
    let mut done = Vec::new();
    for push in pending {
        let folder = outbox(config, &push.consumer).join(&push.export_id);
        let outcome = match (
            config.destinations.get(&push.destination),
            shipment(&folder),
        ) {
            (None, _) => Err((0, "the destination is no longer configured".to_string())),
            (_, Err(e)) => Err((0, format!("cannot read the export: {e}"))),
            (Some(destination), Ok(files)) => {
                let parcels: Vec<crate::forward::Parcel<'_>> = files
                    .iter()
                    .map(|(path, name, sha256, size)| crate::forward::Parcel {
                        contents: crate::forward::Contents::File(path),
                        name,
                        file_id: None,
                        sha256,
                        size: *size,
                    })
                    .collect();
                // Delivered is recorded with the push's outcome, in one transaction.
                let settles = Settles::ExportPush {
                    run_id: push.run_id,
                    destination: &push.destination,
                };
                crate::forward::deliver_all(
                    destination,
                    Some(&push.export_id),
                    &parcels,
                    settles,
                    &ledger,
                )
                .await
                .map_err(|e| (destination.attempts, e.to_string()))
            }
        };
        let error = match &outcome {
            Ok(_) => None,
            Err((attempts, error)) => {
                ledger.lock().expect("ledger lock").finish_export_delivery(
                    push.run_id,
                    &push.destination,
                    *attempts,
                    Some(error),
                )?;
                Some(error.as_str())
            }
        };
        METRICS.delivery("export", &push.destination, error.is_none());
        match error {
            None => {
                tracing::info!(export = %push.export_id, destination = %push.destination, "export pushed")
            }
            Some(e) => {
                tracing::error!(export = %push.export_id, destination = %push.destination, error = %e, "export push given up")
            }
        }
        done.push((push.export_id, push.destination, error.map(str::to_string)));
    }
    Ok(done)
}

/// Makes the pending pushes now, then every minute (failed ones come back
/// after a while), until `shutdown` turns true.
pub async fn push_until_stopped(config: Arc<Config>, mut shutdown: watch::Receiver<bool>) {
    loop {
        if let Err(e) = push_pending(&config).await {
            tracing::error!(error = %e, "cannot push exports");
        }
        tokio::select! {
            _ = tokio::time::sleep(PUSH_POLL) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// The timetable time a schedule should catch up on at start: the latest
/// time in its timetable after the last run that ended (or from an
/// interrupted one, inclusive) up to `now`. `None` when nothing was missed
/// or the schedule has never run.
pub fn missed(
    cron: &Cron,
    settled: Option<(DateTime<Utc>, bool)>,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let (anchor, done) = settled?;
    // An interrupted run's own time is still due.
    let mut at = if done {
        anchor
    } else {
        anchor - chrono::TimeDelta::seconds(1)
    };
    let mut latest = None;
    // Bounded: a once-a-second timetable after a long stop still ends.
    for _ in 0..1_000_000 {
        match cron.next_after(at) {
            Some(next) if next <= now => {
                latest = Some(next);
                at = next;
            }
            _ => break,
        }
    }
    latest
}

fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// Runs every schedule on its timetable until `shutdown` turns true:
/// first the missed run each one's `catch_up` asks for, then each time the
/// timetable names.
pub async fn run_schedules(
    config: Arc<Config>,
    key: Arc<PrivateKey>,
    shutdown: watch::Receiver<bool>,
) {
    let mut tasks = tokio::task::JoinSet::new();
    for schedule in config.schedules.values() {
        tracing::info!(schedule = %schedule.name, consumer = %schedule.consumer, cron = %crate::schedule::Schedule::Cron(Box::new(schedule.cron.clone())), "exporting");
        tasks.spawn(run_schedule(
            config.clone(),
            key.clone(),
            schedule.name.clone(),
            shutdown.clone(),
        ));
    }
    while tasks.join_next().await.is_some() {}
}

async fn run_schedule(
    config: Arc<Config>,
    key: Arc<PrivateKey>,
    name: String,
    mut shutdown: watch::Receiver<bool>,
) {
    let schedule = config.schedules[&name].clone();
    let make_at = |trigger: Trigger| {
        let (config, key, schedule) = (config.clone(), key.clone(), schedule.clone());
        tokio::task::spawn_blocking(move || {
            let clock = Arc::new(SystemClock);
            let made = Ledger::open(&config.daemon.ledger, clock.clone())
                .map_err(PublishError::from)
                .and_then(|mut ledger| {
                    make(&config, &mut ledger, &key, &schedule, trigger, clock.now())
                });
            let outcome = match &made {
                Ok(made) => made.outcome.as_str(),
                Err(_) => "failed",
            };
            METRICS.schedule_run(&schedule.name, outcome);
            if let Err(e) = made {
                tracing::error!(schedule = %schedule.name, error = %e, "export run failed");
            }
        })
    };
    let push = || async {
        if let Err(e) = push_pending(&config).await {
            tracing::error!(error = %e, "cannot push exports");
        }
    };
    if schedule.catch_up == CatchUp::Once {
        let settled = Ledger::open(&config.daemon.ledger, Arc::new(SystemClock))
            .and_then(|l| l.export_settled_until(&name));
        match settled {
            Ok(settled) => {
                let settled = settled.and_then(|(at, done)| Some((parse_time(&at)?, done)));
                if let Some(slot) = missed(&schedule.cron, settled, Utc::now()) {
                    tracing::info!(schedule = %name, planned = %slot, "making the export missed while stopped");
                    let _ = make_at(Trigger::Planned(slot)).await;
                    push().await;
                }
            }
            Err(e) => {
                tracing::error!(schedule = %name, error = %e, "cannot read the schedule's runs")
            }
        }
    }
    loop {
        let now = Utc::now();
        let Some(next) = schedule.cron.next_after(now) else {
            return;
        };
        let wait = (next - now).to_std().unwrap_or_default();
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => return,
        }
        // Finished even when shutdown comes meanwhile: a run is short, and a
        // half-made one would only be discarded and made again.
        let _ = make_at(Trigger::Planned(next)).await;
        push().await;
        if *shutdown.borrow() {
            return;
        }
    }
}

/// `dropgate export SCHEDULE`: one run now, marked manual.
pub fn export_now(
    config: &Config,
    name: &str,
    clock: Arc<dyn Clock>,
) -> Result<Made, PublishError> {
    let Some(schedule) = config.schedules.get(name) else {
        return Err(PublishError::UnknownSchedule {
            name: name.to_string(),
            known: config
                .schedules
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", "),
        });
    };
    let key = signing_key(&config.keys.signing_key)?;
    let mut ledger = Ledger::open(&config.daemon.ledger, clock.clone())?;
    recover(config, &mut ledger, &own_keys(&config.keys.signing_key)?)?;
    make(
        config,
        &mut ledger,
        &key,
        schedule,
        Trigger::Manual,
        clock.now(),
    )
}

/// Queues a complete export to be pushed again, to `to` or to each of its
/// schedule's destinations, when the export still verifies with the signing
/// key and every grant it was made under is in force today: sending it
/// again is a new disclosure. Returns the run and the destinations queued;
/// the caller pushes them.
pub fn resend(
    config: &Config,
    export_id: &str,
    to: Option<&str>,
    clock: Arc<dyn Clock>,
) -> Result<(i64, Vec<String>), PublishError> {
    let refuse = |reason: String| PublishError::NotResent {
        export_id: export_id.to_string(),
        reason,
    };
    let mut ledger = Ledger::open(&config.daemon.ledger, clock.clone())?;
    let run = ledger
        .export_run_by_export_id(export_id)?
        .ok_or_else(|| refuse("no export has this id".into()))?;
    if run.outcome != Some(RunOutcome::Complete) {
        return Err(refuse("it is not a complete export".into()));
    }
    let schedule = config.schedules.get(&run.schedule).ok_or_else(|| {
        refuse(format!(
            "schedule `{}` is no longer configured",
            run.schedule
        ))
    })?;
    let destinations: Vec<String> = match to {
        Some(to) if schedule.destinations.iter().any(|d| d == to) => vec![to.to_string()],
        Some(to) => {
            return Err(refuse(format!(
                "`{to}` is not a destination of schedule `{}`",
                schedule.name
            )));
        }
        None => schedule.destinations.clone(),
    };
    if destinations.is_empty() {
        return Err(refuse(format!(
            "schedule `{}` has no destinations; `{}` fetches it from its outbox",
            schedule.name, run.consumer
        )));
    }
    let day = clock
        .now()
        .with_timezone(&config.daemon.time_zone)
        .date_naive();
    for grant in ledger.export_run_grants(run.id)? {
        let in_force = config
            .grants
            .get(&grant)
            .is_some_and(|g| g.consumer == run.consumer && g.in_force(day));
        if !in_force {
            return Err(refuse(format!("grant `{grant}` is no longer in force")));
        }
    }
    let key = signing_key(&config.keys.signing_key)?;
    let folder = outbox(config, &run.consumer).join(&run.export_id);
    if !folder.exists() {
        return Err(refuse(
            "its folder is no longer kept: retention deleted it".into(),
        ));
    }
    manifest::verify(&folder, std::slice::from_ref(key.public_key()))
        .map_err(|e| refuse(format!("it no longer verifies: {e}")))?;
    for destination in &destinations {
        ledger.resend_export(&run, destination)?;
    }
    Ok((run.id, destinations))
}

/// How much of a complete export its consumer has fetched from the outbox.
#[derive(Debug, serde::Serialize)]
pub struct Retrieval {
    /// Files fetched whole at least once, of `files`.
    pub fetched: usize,
    pub files: usize,
    /// When the last of them was first fetched whole, once all were.
    pub retrieved_at: Option<String>,
}

/// Reads the audit trail's downloads of a placed export: it is retrieved
/// when every file in its folder has been fetched whole.
pub fn retrieval(
    config: &Config,
    ledger: &Ledger,
    consumer: &str,
    export_id: &str,
) -> Result<Option<Retrieval>, PublishError> {
    let folder = outbox(config, consumer).join(export_id);
    let Ok(listing) = std::fs::read_dir(&folder) else {
        return Ok(None);
    };
    let sizes: BTreeMap<String, u64> = listing
        .flatten()
        .filter_map(|e| {
            Some((
                e.file_name().to_str()?.to_string(),
                e.metadata().ok()?.len(),
            ))
        })
        .collect();
    let mut first_whole: BTreeMap<String, String> = BTreeMap::new();
    for (name, bytes, at) in ledger.export_downloads(consumer, export_id)? {
        if sizes.get(&name) == Some(&bytes) {
            first_whole.entry(name).or_insert(at);
        }
    }
    let retrieved_at = (first_whole.len() == sizes.len())
        .then(|| first_whole.values().max().cloned())
        .flatten();
    Ok(Some(Retrieval {
        fetched: first_whole.len(),
        files: sizes.len(),
        retrieved_at,
    }))
}

/// Grants by name with when each was last used.
pub fn grants_with_use(
    config: &Config,
    ledger: &Ledger,
) -> Result<BTreeMap<String, Option<String>>, PublishError> {
    config
        .grants
        .keys()
        .map(|name| Ok((name.clone(), ledger.grant_last_used(name)?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(text: &str) -> DateTime<Utc> {
        parse_time(text).unwrap()
    }

    fn half_one() -> Cron {
        Cron::parse("30 1 * * *", chrono_tz::Europe::London).unwrap()
    }

    #[test]
    fn a_schedule_that_never_ran_has_nothing_to_catch_up() {
        assert_eq!(missed(&half_one(), None, utc("2026-12-03T09:00:00Z")), None);
    }

    #[test]
    fn after_downtime_only_the_latest_missed_time_runs() {
        // Last run the night of 28 November; stopped until 3 December.
        let settled = Some((utc("2026-11-28T01:30:00Z"), true));
        assert_eq!(
            missed(&half_one(), settled, utc("2026-12-03T09:00:00Z")),
            Some(utc("2026-12-03T01:30:00Z"))
        );
        // Restarted before tonight's time, after last night's had run: nothing.
        let settled = Some((utc("2026-12-03T01:30:00Z"), true));
        assert_eq!(
            missed(&half_one(), settled, utc("2026-12-03T09:00:00Z")),
            None
        );
    }

    #[test]
    fn a_run_a_stop_interrupted_is_made_again_once() {
        let interrupted = Some((utc("2026-12-03T01:30:00Z"), false));
        assert_eq!(
            missed(&half_one(), interrupted, utc("2026-12-03T01:31:00Z")),
            Some(utc("2026-12-03T01:30:00Z"))
        );
    }

    #[test]
    fn catching_up_across_the_clock_changes_finds_each_night_once() {
        // Spring: 01:30 does not exist on 29 March 2026; that night's run is at 02:00 BST.
        let settled = Some((utc("2026-03-28T01:30:00Z"), true));
        assert_eq!(
            missed(&half_one(), settled, utc("2026-03-29T05:00:00Z")),
            Some(utc("2026-03-29T01:00:00Z"))
        );
        // Autumn: 01:30 happens twice on 25 October 2026; the first was run.
        let settled = Some((utc("2026-10-25T00:30:00Z"), true));
        assert_eq!(
            missed(&half_one(), settled, utc("2026-10-25T05:00:00Z")),
            None
        );
    }
}
