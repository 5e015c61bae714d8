//! A watched local folder.
//!
//! Change events (inotify) make a file a candidate quickly; a periodic rescan
//! finds any whose events were lost. A file renamed into the folder is taken
//! at the next check: the rename is the sender's "done". Any other candidate
//! is taken once its size and modification time were the same at two checks
//! and it has stayed that way for `min_age` on dropgate's own clock, so the
//! sender's clock and slow writers do not matter. A file over the source's
//! `max_file_size` is left where it is, reported once, and looked at again
//! only when its size or time changes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use notify::{RecursiveMode, Watcher};
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, MissedTickBehavior};

use super::{Settling, is_temporary_name, refuse_too_large};
use crate::config::LocalSource;
use crate::intake::Intake;
use crate::land::{Arrival, LandError};
use crate::repeated::Repeated;

/// Files landed in one batch (one ledger transaction).
const LAND_AT_ONCE: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp(u64, Option<SystemTime>);

/// Not a stamp a file can have: the first check always resets it.
const UNSEEN: Stamp = Stamp(u64::MAX, None);

/// Watches one folder until `shutdown` turns true, landing complete files.
pub async fn watch(
    name: String,
    partner: String,
    settings: LocalSource,
    intake: Arc<Intake>,
    mut shutdown: watch::Receiver<bool>,
) {
    if let Err(e) = std::fs::create_dir_all(&settings.path) {
        tracing::error!(source = %name, path = %settings.path.display(), error = %e, "cannot create the drop folder");
        return;
    }
    // Each changed path, and whether it was renamed into place.
    let (events_tx, mut events) = mpsc::unbounded_channel::<(PathBuf, bool)>();
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event {
            let renamed_to = renamed_to(&event);
            for path in event.paths {
                let renamed_in = renamed_to.as_ref() == Some(&path);
                let _ = events_tx.send((path, renamed_in));
            }
        }
    })
    .and_then(|mut w| {
        let mode = if settings.recursive {
            RecursiveMode::Recursive
        } else {
            RecursiveMode::NonRecursive
        };
        w.watch(&settings.path, mode).map(|()| w)
    });
    let _watcher = match watcher {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(source = %name, error = %e, "change events unavailable; relying on rescans");
            None
        }
    };

    let mut candidates: HashMap<PathBuf, Settling<Stamp>> = HashMap::new();
    // Files over `max_file_size`, as they were when refused.
    let mut refused: HashMap<PathBuf, Stamp> = HashMap::new();
    // Failures not of a file's making (the disk, the ledger), retried on
    // every check.
    let mut failures = Repeated::default();
    let mut check = tokio::time::interval(settings.check_interval);
    check.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut rescan = tokio::time::interval(settings.rescan_interval);
    rescan.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            Some((path, renamed_in)) = events.recv() => {
                if eligible(&settings, &path) {
                    let candidate = candidates
                        .entry(path)
                        .or_insert_with(|| Settling::new(UNSEEN, Instant::now()));
                    if renamed_in {
                        candidate.renamed_in();
                    }
                }
            }
            _ = rescan.tick() => {
                // Gone, or changed: no longer remembered as refused.
                refused.retain(|path, stamp| stamp_of(path) == Some(*stamp));
                for path in scan(&settings.path, settings.recursive) {
                    if eligible(&settings, &path) {
                        candidates
                            .entry(path)
                            .or_insert_with(|| Settling::new(UNSEEN, Instant::now()));
                    }
                }
            }
            _ = check.tick(), if !candidates.is_empty() => {
                let ready = complete_files(&mut candidates, &settings, &refused);
                // Landed a few at a time, so processing starts on the first
                // while the rest are still being copied.
                for chunk in ready.chunks(LAND_AT_ONCE) {
                    let arrivals: Vec<Arrival> = chunk
                        .iter()
                        .map(|path| {
                            Arrival::copy(
                                path.clone(),
                                relative_name(&settings.path, path),
                                settings.max_file_size,
                            )
                        })
                        .collect();
                    let landing = intake.clone();
                    let (source, owner) = (name.clone(), partner.clone());
                    let results = tokio::task::spawn_blocking(move || landing.land(&source, &owner, &arrivals))
                        .await
                        .expect("landing does not panic");
                    for (path, result) in chunk.iter().zip(results) {
                        match result {
                            Ok(landed) => {
                                tracing::debug!(source = %name, file_id = landed.id(), "landed");
                                candidates.remove(path);
                                if failures.mended() {
                                    tracing::info!(source = %name, "landing works again");
                                }
                            }
                            Err(LandError::Changed) => {
                                if let Some(c) = candidates.get_mut(path) {
                                    c.restart(Instant::now());
                                }
                            }
                            Err(LandError::TooLarge { size, limit }) => {
                                candidates.remove(path);
                                if let Some(stamp) = stamp_of(path) {
                                    refused.insert(path.clone(), stamp);
                                }
                                refuse_too_large(&intake, &name, &partner, size, limit);
                            }
                            // Logged by the intake, once: the file waits,
                            // looked at again as a new candidate.
                            Err(LandError::NoRoom) => {
                                if let Some(c) = candidates.get_mut(path) {
                                    c.restart(Instant::now());
                                }
                            }
                            Err(e) => {
                                if let Some(unlogged) = failures.failed() {
                                    tracing::warn!(source = %name, error = %e, failures_since_last_logged = unlogged, "landing failed; will retry");
                                }
                                if let Some(c) = candidates.get_mut(path) {
                                    c.restart(Instant::now());
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The path a rename event moved a file to, if it is one.
fn renamed_to(event: &notify::Event) -> Option<PathBuf> {
    use notify::EventKind;
    use notify::event::{ModifyKind, RenameMode};
    match event.kind {
        EventKind::Modify(ModifyKind::Name(RenameMode::To)) => event.paths.first().cloned(),
        EventKind::Modify(ModifyKind::Name(RenameMode::Both)) => event.paths.last().cloned(),
        _ => None,
    }
}

/// A regular file's size and modification time; `None` for anything else.
fn stamp_of(path: &Path) -> Option<Stamp> {
    let meta = std::fs::symlink_metadata(path).ok()?;
    meta.is_file()
        .then(|| Stamp(meta.len(), meta.modified().ok()))
}

/// Updates each candidate and returns those now complete; a file refused
/// as too large is dropped from the candidates while it is unchanged.
fn complete_files(
    candidates: &mut HashMap<PathBuf, Settling<Stamp>>,
    settings: &LocalSource,
    refused: &HashMap<PathBuf, Stamp>,
) -> Vec<PathBuf> {
    let now = Instant::now();
    let mut ready = Vec::new();
    candidates.retain(|path, c| {
        let Some(stamp) = stamp_of(path) else {
            return false;
        };
        if refused.get(path) == Some(&stamp) {
            return false;
        }
        if c.check(stamp, now, settings.min_age) {
            ready.push(path.clone());
        }
        true
    });
    ready.sort();
    ready
}

fn eligible(settings: &LocalSource, path: &Path) -> bool {
    let Ok(relative) = path.strip_prefix(&settings.path) else {
        return false;
    };
    let parts: Vec<_> = relative.components().collect();
    if parts.is_empty() || (!settings.recursive && parts.len() > 1) {
        return false;
    }
    let hidden = parts
        .iter()
        .any(|p| p.as_os_str().to_str().is_none_or(is_temporary_name));
    !hidden
        && std::fs::symlink_metadata(path)
            .map(|m| m.is_file())
            .unwrap_or(false)
}

fn scan(root: &Path, recursive: bool) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut folders = vec![root.to_path_buf()];
    while let Some(dir) = folders.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_file() {
                found.push(entry.path());
            } else if kind.is_dir() && recursive {
                folders.push(entry.path());
            }
        }
    }
    found
}

fn relative_name(root: &Path, path: &Path) -> String {
    let relative = path.strip_prefix(root).unwrap_or(path);
    relative
        .components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}
