//! Route: the files of a feed forwarded to a destination as they arrive,
//! each under a grant in force. A file is queued `pending` in the ledger,
//! decrypted as it is pushed (or first encrypted to the route's recipients,
//! when it has them, into `spool/routing/`), pushed with the destination's
//! retries, and finished as `delivered`, `failed` or `refused`. A failed one is tried
//! again every 15 minutes for a day after its file arrived. Each route runs
//! on its own, so a failing destination holds up no other.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use crate::config::{AgeRecipients, Config, Route};
use crate::decrypt;
use crate::forward::{self, Parcel};
use crate::ledger::{Ledger, Routed, Settles, SystemClock};
use crate::metrics::METRICS;
use crate::schema::Layout;
use crate::spool::Spool;

/// How often a route looks for new files.
const POLL: Duration = Duration::from_secs(1);
/// A forwarding that used up its attempts is tried again after this long...
const RETRY_FAILED_AFTER: chrono::TimeDelta = chrono::TimeDelta::minutes(15);
/// ...while its file was received less than this long ago; then it stays failed.
const RETRY_FAILED_FOR: chrono::TimeDelta = chrono::TimeDelta::hours(24);

/// Runs every route until `shutdown` turns true.
pub async fn run_routes(
    config: Arc<Config>,
    identity: Arc<age::x25519::Identity>,
    shutdown: watch::Receiver<bool>,
) {
    let mut tasks = tokio::task::JoinSet::new();
    for route in config.routes.values() {
        tracing::info!(route = %route.name, feed = %route.feed, destination = %route.destination, "forwarding");
        tasks.spawn(run_route(
            config.clone(),
            identity.clone(),
            route.name.clone(),
            shutdown.clone(),
        ));
    }
    while tasks.join_next().await.is_some() {}
}

async fn run_route(
    config: Arc<Config>,
    identity: Arc<age::x25519::Identity>,
    name: String,
    mut shutdown: watch::Receiver<bool>,
) {
    let route = config.routes[&name].clone();
    // Files below it were settled when last looked at: from the first at start.
    let mut from_id = 0;
    // One connection for every look, opened again only after it failed to open.
    let mut ledger: Option<Mutex<Ledger>> = None;
    loop {
        if ledger.is_none() {
            match blocking(|| Ledger::open(&config.daemon.ledger, Arc::new(SystemClock))) {
                Ok(opened) => ledger = Some(Mutex::new(opened)),
                Err(e) => {
                    tracing::error!(route = %route.name, error = %e, "cannot open the ledger")
                }
            }
        }
        let looked = match &ledger {
            Some(ledger) => forward_pending(&config, ledger, &identity, &route, from_id).await,
            None => Ok(from_id),
        };
        match looked {
            Ok(next) => from_id = next,
            Err(e) => {
                tracing::error!(route = %route.name, error = %e, "forwarding failed; trying again")
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// Queues the route's new files (from `from_id` on) and forwards every
/// pending one; returns where the next look starts. The ledger and file work
/// runs off the async workers, so a long load holding the ledger's write
/// lock, or a large file being decrypted, stalls no other source.
pub async fn forward_pending(
    config: &Config,
    ledger: &Mutex<Ledger>,
    identity: &age::x25519::Identity,
    route: &Route,
    from_id: i64,
) -> Result<i64, crate::ledger::LedgerError> {
    let (pending, next_from) = blocking(|| -> Result<_, crate::ledger::LedgerError> {
        let mut ledger = ledger.lock().expect("ledger lock");
        // Read first: a file settling meanwhile is above it and found next time.
        let next_from = ledger.settled_below()?;
        let now = chrono::Utc::now();
        ledger.retry_failed_routed(
            &route.name,
            now - RETRY_FAILED_AFTER,
            now - RETRY_FAILED_FOR,
        )?;
        ledger.queue_routed(
            &route.name,
            &route.destination,
            &route.feed,
            route.when.states(),
            from_id,
        )?;
        Ok((ledger.pending_routed(&route.name)?, next_from))
    })?;
    let Some(destination) = config.destinations.get(&route.destination) else {
        return Ok(from_id);
    };
    for file in pending {
        let finish = |state: &str, attempts: u32, grant: Option<&str>, error: Option<&str>| {
            if state != "refused" {
                METRICS.delivery("route", &route.destination, state == "delivered");
            }
            blocking(|| {
                ledger.lock().expect("ledger lock").finish_routed(
                    file.file_id,
                    &route.name,
                    state,
                    attempts,
                    grant,
                    error,
                )
            })
        };
        // No grant, no data: checked for every file, on the day it is sent.
        let Some(grant) = grant_in_force(config, route, &file) else {
            let why = format!(
                "no grant in force gives `{}` the files of feed `{}`",
                route.consumer, route.feed
            );
            tracing::warn!(route = %route.name, file_id = file.file_id, "{why}");
            finish("refused", 0, None, Some(&why))?;
            continue;
        };
        let held = blocking(|| ledger.lock().expect("ledger lock").held_body(file.file_id))?;
        let prepared = match blocking(|| prepare(config, identity, route, &file, held.clone())) {
            Ok(prepared) => prepared,
            Err(e) => {
                finish("failed", 0, Some(&grant), Some(&e.to_string()))?;
                continue;
            }
        };
        let digest = blocking(|| match &prepared {
            Prepared::Sealed { path, .. } => crate::digest::sha256_file(path),
            Prepared::Plain { .. } => {
                crate::digest::sha256_reader(plaintext(config, identity, &file, held.clone())?)
            }
        });
        let (sha256, size) = match digest {
            Ok(digest) => digest,
            Err(e) => {
                if let Prepared::Sealed { path, .. } = &prepared {
                    let _ = std::fs::remove_file(path);
                }
                finish("failed", 0, Some(&grant), Some(&e.to_string()))?;
                continue;
            }
        };
        let open = || plaintext(config, identity, &file, held.clone());
        let (contents, name) = match &prepared {
            Prepared::Sealed { path, name } => (forward::Contents::File(path), name),
            Prepared::Plain { name } => (forward::Contents::Stream(&open), name),
        };
        let parcel = Parcel {
            contents,
            name,
            file_id: Some(file.file_id),
            sha256: &sha256,
            size,
        };
        // Delivered is recorded with the route's outcome, in one transaction.
        let settles = Settles::Route {
            file_id: file.file_id,
            route: &route.name,
            grant: &grant,
        };
        let sent = forward::deliver(destination, &parcel, settles, ledger).await;
        if let Prepared::Sealed { path, .. } = &prepared {
            let _ = std::fs::remove_file(path);
        }
        match sent {
            Ok(_) => METRICS.delivery("route", &route.destination, true),
            Err(e) => finish(
                "failed",
                destination.attempts,
                Some(&grant),
                Some(&e.to_string()),
            )?,
        }
    }
    Ok(next_from)
}

/// Runs blocking work (the ledger, files) without holding up the async workers.
fn blocking<T>(work: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(work)
}

/// The grant, in force today, that lets the route's consumer have the file.
fn grant_in_force(config: &Config, route: &Route, file: &Routed) -> Option<String> {
    let day = chrono::Utc::now()
        .with_timezone(&config.daemon.time_zone)
        .date_naive();
    let controller = config.partners.get(&file.partner)?.controller.as_deref()?;
    let kinds = config.feeds.get(&file.feed)?.kinds();
    config
        .grants
        .values()
        .find(|g| {
            g.consumer == route.consumer
                && g.controller == controller
                && g.in_force(day)
                && g.covers_feed(&file.feed, &kinds)
        })
        .map(|g| g.name.clone())
}

/// What a route sends of one file, under dropgate's own name, never the
/// sender's (which may carry identifiers): `FEED-FILEID.csv` (or `.txt` for
/// fixed width, `.xml`), plus `.age` when encrypted.
enum Prepared {
    /// Encrypted to the route's recipients, in `spool/routing/` (readable
    /// by dropgate alone) until sent.
    Sealed { path: PathBuf, name: String },
    /// The plaintext, decrypted afresh as each attempt sends it: never on
    /// disk.
    Plain { name: String },
}

/// The file's plaintext, decrypted from the ledger's copy (a small file's)
/// or the spool's.
fn plaintext(
    config: &Config,
    identity: &age::x25519::Identity,
    file: &Routed,
    held: Option<Arc<[u8]>>,
) -> io::Result<Box<dyn io::Read + Send>> {
    let spool = Spool::new(&config.daemon.spool);
    let feed = config
        .feeds
        .get(&file.feed)
        .ok_or_else(|| io::Error::other("the feed is no longer configured"))?;
    // Processing may move a received payload between the look and the open:
    // looked for again once.
    let open = || {
        let (_, payload) = spool
            .find(&file.spool_name)
            .ok_or_else(|| io::Error::other("the payload is in no spool folder"))?;
        File::open(payload)
    };
    let plaintext = match held {
        Some(body) => decrypt::open(std::io::Cursor::new(body), feed.encryption, identity),
        None => decrypt::open(open().or_else(|_| open())?, feed.encryption, identity),
    }
    .map_err(|e| io::Error::other(e.to_string()))?;
    Ok(plaintext.reader)
}

/// Names the file for sending; encrypts it to the route's recipients, when
/// it has them, into `spool/routing/`.
fn prepare(
    config: &Config,
    identity: &age::x25519::Identity,
    route: &Route,
    file: &Routed,
    held: Option<Arc<[u8]>>,
) -> io::Result<Prepared> {
    let feed = config
        .feeds
        .get(&file.feed)
        .ok_or_else(|| io::Error::other("the feed is no longer configured"))?;
    let extension = match feed.schema.layout {
        Layout::Csv(_) => "csv",
        Layout::Fixed(_) => "txt",
        Layout::Xml(_) => "xml",
    };
    let name = format!("{}-{}.{extension}", file.feed, file.file_id);
    let Some(list) = &route.encrypt_to else {
        return Ok(Prepared::Plain { name });
    };
    let mut reader = plaintext(config, identity, file, held)?;
    let folder = Spool::new(&config.daemon.spool).routing();
    std::fs::create_dir_all(&folder)?;
    let path = folder.join(format!("{}-{}", route.name, file.file_id));
    let out = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)?;
    let recipients = AgeRecipients::read_all(list).map_err(io::Error::other)?;
    let encryptor =
        age::Encryptor::with_recipients(recipients.iter().map(|r| r as &dyn age::Recipient))
            .map_err(io::Error::other)?;
    let mut sealed = encryptor.wrap_output(io::BufWriter::new(out))?;
    io::copy(&mut reader, &mut sealed)?;
    let mut out = sealed.finish()?;
    out.flush()?;
    out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    Ok(Prepared::Sealed {
        path,
        name: format!("{name}.age"),
    })
}
