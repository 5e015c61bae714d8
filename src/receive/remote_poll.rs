//! A partner's SFTP or FTP server, polled.
//!
//! A remote file is taken once its size and modification time were the same
//! at two polls and it has stayed so for `min_age` on dropgate's clock, or
//! once its done-marker appears. It is downloaded whole, landed (durable and
//! `received`), and only then deleted, moved or left on the server. Every
//! file taken is remembered by path, size and time, so one whose removal
//! failed, or that is left in place, is not taken again.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::watch;
use tokio::time::Instant;

use super::is_temporary_name;
use crate::config::{AfterTake, RemoteSource};
use crate::daemon::Lander;
use crate::land::{Arrival, Handover, Landed};
use crate::remote::RemoteError;
use crate::remote::{Connection, RemoteFile};

/// What was seen of a remote file at earlier polls.
struct Seen {
    size: u64,
    mtime: u32,
    since: Instant,
    unchanged: u32,
}

/// Polls until `shutdown` turns true.
pub async fn poll(
    name: String,
    partner: String,
    settings: RemoteSource,
    lander: Arc<Lander>,
    staging: PathBuf,
    mut shutdown: watch::Receiver<bool>,
) {
    if let Err(e) = std::fs::create_dir_all(&staging) {
        tracing::error!(source = %name, error = %e, "cannot create the download folder");
        return;
    }
    let mut seen: HashMap<String, Seen> = HashMap::new();
    let mut failures = 0u32;
    loop {
        let outcome = poll_once(&name, &partner, &settings, &lander, &staging, &mut seen).await;
        {
            let (lander, source) = (lander.clone(), name.clone());
            let error = outcome.as_ref().err().map(|e| e.to_string());
            let _ = tokio::task::spawn_blocking(move || {
                lander.source_checked(&source, error.as_deref())
            })
            .await;
        }
        let wait = match outcome {
            Ok(()) => {
                failures = 0;
                settings.schedule.wait_from(chrono::Utc::now())
            }
            Err(e) => {
                failures += 1;
                let wait = settings
                    .backoff
                    .delay(failures + 1, name.len() as u64 ^ u64::from(failures));
                tracing::warn!(source = %name, error = %e, retry_in = ?wait, "poll failed");
                wait
            }
        };
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

async fn poll_once(
    source: &str,
    partner: &str,
    settings: &RemoteSource,
    lander: &Arc<Lander>,
    staging: &std::path::Path,
    seen: &mut HashMap<String, Seen>,
) -> Result<(), RemoteError> {
    let mut connection = Connection::connect(&settings.endpoint, settings.timeout).await?;
    let result = take_complete(
        source,
        partner,
        settings,
        lander,
        staging,
        seen,
        &mut connection,
    )
    .await;
    connection.close().await;
    result
}

async fn take_complete(
    source: &str,
    partner: &str,
    settings: &RemoteSource,
    lander: &Arc<Lander>,
    staging: &std::path::Path,
    seen: &mut HashMap<String, Seen>,
    connection: &mut Connection,
) -> Result<(), RemoteError> {
    let listing = connection.list().await?;
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
        if is_temporary_name(&file.name)
            || !settings.patterns.is_match(&file.name)
            || settings
                .done_marker
                .as_ref()
                .is_some_and(|s| file.name.ends_with(s.as_str()))
        {
            continue;
        }
        let entry = seen.entry(file.name.clone()).or_insert(Seen {
            size: file.size,
            mtime: file.mtime,
            since: now,
            unchanged: 0,
        });
        if (entry.size, entry.mtime) != (file.size, file.mtime) {
            *entry = Seen {
                size: file.size,
                mtime: file.mtime,
                since: now,
                unchanged: 0,
            };
        } else if entry.since != now {
            entry.unchanged += 1;
        }
        let complete = if settings.done_marker.is_some() {
            markers.contains(&file.name.as_str())
        } else {
            entry.unchanged >= 1 && now.duration_since(entry.since) >= settings.min_age
        };
        if complete {
            ready.push(file.clone());
        }
    }
    seen.retain(|name, _| listing.iter().any(|f| &f.name == name));
    for file in ready {
        take(
            source, partner, settings, lander, staging, connection, &file,
        )
        .await?;
        seen.remove(&file.name);
    }
    Ok(())
}

/// Downloads, lands, then deletes / moves / leaves one remote file.
async fn take(
    source: &str,
    partner: &str,
    settings: &RemoteSource,
    lander: &Arc<Lander>,
    staging: &std::path::Path,
    connection: &mut Connection,
    file: &RemoteFile,
) -> Result<(), RemoteError> {
    let path = remote_path(settings, &file.name);
    let known = {
        let (lander, source, path) = (lander.clone(), source.to_string(), path.clone());
        let (size, mtime) = (file.size, file.mtime);
        tokio::task::spawn_blocking(move || lander.taken(&source, &path, size, mtime))
            .await
            .expect("ledger lookup does not panic")
            // Not knowing whether it was taken, it is not taken now.
            .map_err(|e| RemoteError::Local(std::io::Error::other(e.to_string())))?
    };
    let file_id = match known {
        Some(id) => id,
        None => {
            let local = staging.join(&file.name);
            let got = match connection.download(&file.name, &local).await {
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
                    path,
                    local: got,
                    remote: file.size,
                });
            }
            let landed = {
                let lander = lander.clone();
                let (source, partner) = (source.to_string(), partner.to_string());
                // The download is dropgate's own: moved into the spool, not copied.
                let arrival = Arrival {
                    path: local.clone(),
                    name: file.name.clone(),
                    handover: Handover::Move { sha256: None },
                };
                tokio::task::spawn_blocking(move || {
                    lander
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
            let (ledger, owner, at) = (lander.clone(), source.to_string(), path.clone());
            let (size, mtime) = (file.size, file.mtime);
            tokio::task::spawn_blocking(move || ledger.record_taken(&owner, &at, size, mtime, id))
                .await
                .expect("ledger write does not panic");
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
    if let Err(e) = &done {
        tracing::warn!(source = %source, file_id, error = %e, "received, but the server's copy could not be removed; it will not be taken again");
    }
    if let Some(suffix) = &settings.done_marker
        && settings.after != AfterTake::Leave
    {
        let _ = connection.remove(&format!("{}{suffix}", file.name)).await;
    }
    Ok(())
}

fn remote_path(settings: &RemoteSource, name: &str) -> String {
    let folder = settings.endpoint.folder().trim_end_matches('/');
    if folder.is_empty() {
        name.to_string()
    } else {
        format!("{folder}/{name}")
    }
}
