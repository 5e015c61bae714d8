//! A partner's SFTP or FTP server, polled.
//!
//! A remote file is taken once its size and modification time were the same
//! at two polls and it has stayed so for `min_age` on dropgate's clock, or
//! once its done-marker appears. It is downloaded whole, landed (durable and
//! `received`), and only then deleted, moved or left on the server. Every
//! file taken is remembered by path, size and time, so one whose removal
//! failed, or that is left in place, is not taken again. A file listed
//! larger than the source's `max_file_size` is never downloaded: it is
//! reported once, and again only if its size or time changes.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::{Settling, is_temporary_name, refuse_too_large};

/// How often a poll paused for want of room looks again.
const NO_ROOM_WAIT: Duration = Duration::from_secs(5);
use crate::config::{AfterTake, RemoteSource};
use crate::intake::Intake;
use crate::land::{Arrival, Handover, Landed};
use crate::ledger::{PollReport, RemotePath};
use crate::remote::RemoteError;
use crate::remote::{Connection, RemoteFile};
use crate::schedule::Schedule;

/// A received file whose copy on the server could not be deleted or moved:
/// tried again with backoff, not at every poll.
struct Cleanup {
    failures: u32,
    next: Instant,
    error: String,
}

/// One remote source: its settings, and what earlier polls saw.
struct Poller {
    source: String,
    partner: String,
    settings: RemoteSource,
    intake: Arc<Intake>,
    /// Where downloads are written before they are landed.
    staging: PathBuf,
    /// By file name: size and modification time at earlier polls.
    seen: HashMap<String, Settling<(u64, u32)>>,
    /// By file name: server copies still to delete or move.
    cleanups: HashMap<String, Cleanup>,
    /// By file name: the size and time of files refused as too large.
    too_large: HashMap<String, (u64, u32)>,
    shutdown: watch::Receiver<bool>,
}

/// Polls until `shutdown` turns true.
pub async fn poll(
    source: String,
    partner: String,
    settings: RemoteSource,
    intake: Arc<Intake>,
    staging: PathBuf,
    mut shutdown: watch::Receiver<bool>,
) {
    if let Err(e) = std::fs::create_dir_all(&staging) {
        tracing::error!(source = %source, error = %e, "cannot create the download folder");
        return;
    }
    let mut poller = Poller {
        source,
        partner,
        settings,
        intake,
        staging,
        seen: HashMap::new(),
        cleanups: HashMap::new(),
        too_large: HashMap::new(),
        shutdown: shutdown.clone(),
    };
    let mut failures = 0u32;
    loop {
        if !poller.intake.has_room(0) {
            // Paused, not failed: the intake logs it once; status shows it.
            let (intake, source) = (poller.intake.clone(), poller.source.clone());
            let pending = poller.cleanups.len() as u64;
            let waiting = (poller.seen.len() + poller.too_large.len()) as u64;
            let cleanup_error = poller.cleanups.values().next().map(|c| c.error.clone());
            let _ = tokio::task::spawn_blocking(move || {
                intake.source_checked(
                    &source,
                    &PollReport {
                        error: Some("paused: the spool has no room"),
                        cleanups_pending: pending,
                        cleanup_error: cleanup_error.as_deref(),
                        files_waiting: waiting,
                    },
                );
            })
            .await;
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(NO_ROOM_WAIT) => {}
            }
            continue;
        }
        let outcome = poller.poll_once().await;
        crate::metrics::METRICS.poll(&poller.source, outcome.is_ok());
        {
            let (intake, source) = (poller.intake.clone(), poller.source.clone());
            let error = outcome.as_ref().err().map(|e| e.to_string());
            let pending = poller.cleanups.len() as u64;
            // Seen and not taken: settling, refused, or over the size cap.
            let waiting = (poller.seen.len() + poller.too_large.len()) as u64;
            let cleanup_error = poller.cleanups.values().next().map(|c| c.error.clone());
            let _ = tokio::task::spawn_blocking(move || {
                intake.source_checked(
                    &source,
                    &PollReport {
                        error: error.as_deref(),
                        cleanups_pending: pending,
                        cleanup_error: cleanup_error.as_deref(),
                        files_waiting: waiting,
                    },
                );
            })
            .await;
        }
        let wait = match outcome {
            Ok(()) => {
                failures = 0;
                poller.settings.schedule.wait_from(chrono::Utc::now())
            }
            Err(e) => {
                failures += 1;
                let seed = poller.source.len() as u64 ^ u64::from(failures);
                let wait = poller.settings.schedule.retry_from(
                    chrono::Utc::now(),
                    poller.settings.backoff.delay(failures + 1, seed),
                );
                tracing::warn!(source = %poller.source, error = %e, retry_in = ?wait, "poll failed");
                wait
            }
        };
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

impl Poller {
    async fn poll_once(&mut self) -> Result<(), RemoteError> {
        let mut connection =
            Connection::connect(&self.settings.endpoint, self.settings.timeout).await?;
        let mut result = self.take_complete(&mut connection).await;
        // On a timetable the next poll may be hours away: files seen for the
        // first time are looked at again, in this session, once they could
        // be complete.
        if result.is_ok()
            && matches!(self.settings.schedule, Schedule::Cron(_))
            && !self.seen.is_empty()
        {
            let settle = self.settings.min_age.max(Duration::from_secs(1));
            tokio::select! {
                _ = self.shutdown.changed() => {}
                _ = tokio::time::sleep(settle) => {
                    result = self.take_complete(&mut connection).await;
                }
            }
        }
        connection.close().await;
        result
    }

    /// Takes every file that is complete now.
    async fn take_complete(&mut self, connection: &mut Connection) -> Result<(), RemoteError> {
        let settings = &self.settings;
        let listing = connection
            .list(|name| {
                !is_temporary_name(name)
                    && (settings.patterns.is_match(name)
                        || settings
                            .done_marker
                            .as_ref()
                            .is_some_and(|s| name.ends_with(s.as_str())))
            })
            .await?;
        let markers: Vec<&str> = match &settings.done_marker {
            Some(suffix) => listing
                .iter()
                .filter_map(|f| f.name.strip_suffix(suffix.as_str()))
                .collect(),
            None => Vec::new(),
        };
        let now = Instant::now();
        let mut ready = Vec::new();
        for file in &listing {
            // Markers are listed to be seen, not taken.
            if !settings.patterns.is_match(&file.name)
                || settings
                    .done_marker
                    .as_ref()
                    .is_some_and(|s| file.name.ends_with(s.as_str()))
            {
                continue;
            }
            let stamp = (file.size, file.mtime);
            if file.size > settings.max_file_size {
                if self.too_large.insert(file.name.clone(), stamp) != Some(stamp) {
                    refuse_too_large(
                        &self.intake,
                        &self.source,
                        &self.partner,
                        file.size,
                        settings.max_file_size,
                    );
                }
                continue;
            }
            let settled = self
                .seen
                .entry(file.name.clone())
                .or_insert_with(|| Settling::new(stamp, now))
                .check(stamp, now, settings.min_age);
            let complete = if settings.done_marker.is_some() {
                markers.contains(&file.name.as_str())
            } else {
                settled
            };
            if complete {
                ready.push(file.clone());
            }
        }
        self.seen
            .retain(|name, _| listing.iter().any(|f| &f.name == name));
        self.too_large
            .retain(|name, _| listing.iter().any(|f| &f.name == name));
        // Gone from the server (removed by hand, say): nothing left to clean up.
        self.cleanups
            .retain(|name, _| listing.iter().any(|f| &f.name == name));
        let mut refused = None;
        for file in ready {
            if *self.shutdown.borrow() {
                break;
            }
            match self.take(connection, &file).await {
                Ok(()) => {
                    self.seen.remove(&file.name);
                }
                // One file the server will not hand over does not hold up
                // the others; the poll still counts as failed.
                Err(e) if e.is_about_one_file() => {
                    tracing::warn!(source = %self.source, error = %e, "a file could not be taken; it is tried again at the next poll");
                    refused = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        refused.map_or(Ok(()), Err)
    }

    /// Downloads, lands, then deletes / moves / leaves one remote file.
    async fn take(
        &mut self,
        connection: &mut Connection,
        file: &RemoteFile,
    ) -> Result<(), RemoteError> {
        if self
            .cleanups
            .get(&file.name)
            .is_some_and(|c| Instant::now() < c.next)
        {
            return Ok(());
        }
        let (source, partner, settings) =
            (self.source.as_str(), self.partner.as_str(), &self.settings);
        let (intake, staging) = (&self.intake, &self.staging);
        let path = remote_path(settings, &file.name);
        let known = {
            let (intake, source, path) = (intake.clone(), source.to_string(), path.clone());
            let (size, mtime) = (file.size, file.mtime);
            tokio::task::spawn_blocking(move || intake.taken(&source, &path, size, mtime))
                .await
                .expect("ledger lookup does not panic")
                // Not knowing whether it was taken, it is not taken now.
                .map_err(|e| RemoteError::Local(std::io::Error::other(e.to_string())))?
        };
        let file_id = match known {
            Some(id) => id,
            None => {
                if !intake.has_room(file.size) {
                    return Err(RemoteError::Local(std::io::Error::other(
                        "the spool has no room for the next file; taken when there is",
                    )));
                }
                // A name dropgate chooses: the server's names are its own.
                let local = staging.join("downloading");
                let got = match connection.download(&file.name, &local, file.size).await {
                    Ok(n) => n,
                    Err(e) => {
                        // A partial copy never enters the pipeline.
                        let _ = std::fs::remove_file(&local);
                        return Err(e);
                    }
                };
                if got != file.size {
                    let _ = std::fs::remove_file(&local);
                    return Err(RemoteError::SizeMismatch {
                        operation: "download",
                        local: got,
                        remote: file.size,
                    });
                }
                let landed = {
                    let intake = intake.clone();
                    let (source, partner) = (source.to_string(), partner.to_string());
                    // The download is dropgate's own: moved into the spool,
                    // not copied; remembered as taken in the same transaction.
                    let arrival = Arrival {
                        path: local.clone(),
                        name: file.name.clone(),
                        handover: Handover::Move { sha256: None },
                        taken_from: Some(RemotePath {
                            path: path.clone(),
                            size: file.size,
                            mtime: file.mtime,
                        }),
                    };
                    tokio::task::spawn_blocking(move || {
                        intake
                            .land(&source, &partner, std::slice::from_ref(&arrival))
                            .pop()
                            .expect("one result per arrival")
                    })
                    .await
                    .expect("landing does not panic")
                };
                let id = match landed {
                    Ok(Landed::New(id) | Landed::AlreadyReceived(id)) => id,
                    Err(e) => {
                        let _ = std::fs::remove_file(&local);
                        return Err(RemoteError::Local(std::io::Error::other(e.to_string())));
                    }
                };
                tracing::info!(source = %source, file_id = id, "taken from the server");
                id
            }
        };
        // Received: only now may the server's copy go.
        let done = match &settings.after {
            AfterTake::Leave => Ok(()),
            AfterTake::Delete => connection.remove(&file.name).await,
            AfterTake::Move(folder) => connection.move_to(&file.name, folder).await,
        };
        match &done {
            Ok(()) => {
                self.cleanups.remove(&file.name);
                if settings.after != AfterTake::Leave {
                    let intake = intake.clone();
                    tokio::task::spawn_blocking(move || intake.sender_removed(file_id))
                        .await
                        .expect("ledger update does not panic");
                }
            }
            Err(e) => {
                let failures = self.cleanups.get(&file.name).map_or(1, |c| c.failures + 1);
                let seed = file.size ^ u64::from(file.mtime);
                let wait = settings.backoff.delay(failures + 1, seed);
                tracing::warn!(source = %source, file_id, error = %e, failures, retry_in = ?wait, "received, but the server's copy could not be removed; it will not be taken again");
                self.cleanups.insert(
                    file.name.clone(),
                    Cleanup {
                        failures,
                        next: Instant::now() + wait,
                        error: e.to_string(),
                    },
                );
            }
        }
        if let Some(suffix) = &settings.done_marker
            && settings.after != AfterTake::Leave
        {
            let _ = connection.remove(&format!("{}{suffix}", file.name)).await;
        }
        Ok(())
    }
}

fn remote_path(settings: &RemoteSource, name: &str) -> String {
    let folder = settings.endpoint.folder().trim_end_matches('/');
    if folder.is_empty() {
        name.to_string()
    } else {
        format!("{folder}/{name}")
    }
}
