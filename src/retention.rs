//! Retention: what is past its days leaves the spool, and what stays says
//! so. A payload (a settled file's original, its quarantine report and its
//! receipt) is deleted once its feed's, partner's or `[daemon]`'s
//! `retention_days` have passed since it settled; an export's folder once
//! its consumer's days have passed since it was made; a feed with
//! `record_retention_days` has its files' records deleted too, their trend
//! counts kept first. The ledger keeps every file's row (name, hash, size,
//! counts, state, history) for ever.
//!
//! Nothing a legal hold covers is deleted, nor a file a route has still to
//! forward, nor an export still being pushed. Files are deleted first and
//! the ledger written after, so a crash between leaves the ledger saying
//! "kept" of a payload that is gone, and the next purge writes it then.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;

use crate::config::Config;
use tokio::sync::watch;

use crate::ledger::{Ledger, LedgerError, SystemClock, timestamp};
use crate::spool::{Area, Spool, sync_dir};

const DAY: Duration = Duration::from_secs(24 * 60 * 60);

/// Files, exports or files' records handled in one ledger transaction.
const BATCH: usize = 500;

/// What a purge deleted, or with `dry_run` would delete.
#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
pub struct PurgeReport {
    pub dry_run: bool,
    /// Files whose payload went.
    pub payloads: u64,
    /// Their sizes as received.
    pub payload_bytes: u64,
    pub receipts: u64,
    /// Export folders.
    pub exports: u64,
    /// Files whose records went.
    pub record_files: u64,
    /// The records those files loaded, as their rows in the ledger count them.
    pub records: u64,
    /// Files and exports past retention that a legal hold keeps.
    pub held: u64,
    /// Files past retention kept until a route forwards them, or exports
    /// until their pushes are made.
    pub waiting: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum RetentionError {
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error("cannot delete {path}: {source}")]
    Delete { path: PathBuf, source: io::Error },
}

type Result<T> = std::result::Result<T, RetentionError>;

/// Purges at each time `[daemon] purge_cron` names, until shutdown; a purge
/// under way stops after its batch in hand.
pub async fn run(config: Arc<Config>, mut shutdown: watch::Receiver<bool>) {
    loop {
        let due = config.daemon.purge.next_after(Utc::now());
        // Woken at least daily, so a change of the system clock is never
        // waited out.
        let wait = due
            .and_then(|at| (at - Utc::now()).to_std().ok())
            .map_or(DAY, |wait| wait.min(DAY));
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        if due.is_none_or(|due| Utc::now() < due) {
            continue;
        }
        let (config, stop) = (config.clone(), shutdown.clone());
        let purged = tokio::task::spawn_blocking(move || {
            let mut ledger = Ledger::open(&config.daemon.ledger, Arc::new(SystemClock))?;
            purge(
                &config,
                &mut ledger,
                Utc::now(),
                false,
                "daemon",
                &mut |_| !*stop.borrow(),
            )
        })
        .await;
        match purged {
            Ok(Ok(r)) => tracing::info!(
                payloads = r.payloads,
                bytes = r.payload_bytes,
                receipts = r.receipts,
                exports = r.exports,
                records = r.records,
                held = r.held,
                waiting = r.waiting,
                "purged what is past retention"
            ),
            Ok(Err(e)) => {
                tracing::error!(error = %e, "purge failed; tried again at the next purge time")
            }
            Err(e) => {
                tracing::error!(error = %e, "purge failed; tried again at the next purge time")
            }
        }
    }
}

fn before(now: DateTime<Utc>, days: u32) -> String {
    timestamp(now - TimeDelta::days(i64::from(days)))
}

/// Deletes what is past retention at `now` (or, with `dry_run`, only
/// counts it). `by` says who asked, for the audit rows. `progress` is
/// called after each batch with the report so far; it returns false to
/// stop early (the next purge goes on from there).
pub fn purge(
    config: &Config,
    ledger: &mut Ledger,
    now: DateTime<Utc>,
    dry_run: bool,
    by: &str,
    progress: &mut dyn FnMut(&PurgeReport) -> bool,
) -> Result<PurgeReport> {
    let mut report = PurgeReport {
        dry_run,
        ..PurgeReport::default()
    };
    let mut purge = Purge {
        config,
        spool: Spool::new(&config.daemon.spool),
        ledger,
        now,
        by,
        report: &mut report,
        progress,
    };
    // Each returns false when `progress` asked to stop.
    let _finished = payloads(&mut purge)? && exports(&mut purge)? && records(&mut purge)?;
    Ok(report)
}

/// One purge under way: what it needs, and its report so far.
struct Purge<'a> {
    config: &'a Config,
    spool: Spool,
    ledger: &'a mut Ledger,
    now: DateTime<Utc>,
    /// Who asked, for the audit rows.
    by: &'a str,
    report: &'a mut PurgeReport,
    progress: &'a mut dyn FnMut(&PurgeReport) -> bool,
}

fn payloads(purge: &mut Purge<'_>) -> Result<bool> {
    let (config, now, by) = (purge.config, purge.now, purge.by);
    let Purge {
        spool,
        ledger,
        report,
        progress,
        ..
    } = purge;
    let dry_run = report.dry_run;
    let latest = before(now, config.shortest_payload_days());
    let mut after = 0;
    loop {
        let kept = ledger.kept_payloads(&latest, after, BATCH)?;
        let Some(last) = kept.last() else {
            return Ok(true);
        };
        after = last.id;
        let mut purged = Vec::new();
        let (mut bytes, mut receipts) = (0, 0);
        let mut folders: Vec<PathBuf> = Vec::new();
        for file in kept {
            let days = config.payload_days(&file.partner, file.feed.as_deref());
            if file.updated_at >= before(now, days) {
                continue;
            }
            if file.held {
                report.held += 1;
                continue;
            }
            if file.forwarding {
                report.waiting += 1;
                continue;
            }
            let receipt = receipt_of(spool, &file.partner, file.id, &file.name);
            if !dry_run {
                if let Some((area, path)) = spool.find(&file.spool_name) {
                    // A file back in the queue by a replay is not settled.
                    if matches!(area, Area::Archive | Area::Quarantine) {
                        delete(&path)?;
                    }
                }
                delete(&spool.report_path(&file.spool_name))?;
                if let Some(receipt) = &receipt {
                    delete(receipt)?;
                    folders.extend(receipt.parent().map(Path::to_path_buf));
                }
            }
            receipts += u64::from(receipt.is_some());
            bytes += file.size;
            purged.push(file.id);
        }
        report.payloads += purged.len() as u64;
        report.payload_bytes += bytes;
        report.receipts += receipts;
        if !dry_run && !purged.is_empty() {
            folders.sort();
            folders.dedup();
            for folder in folders
                .iter()
                .chain(&[spool.dir(Area::Archive), spool.dir(Area::Quarantine)])
            {
                sync_dir(folder).map_err(|source| RetentionError::Delete {
                    path: folder.clone(),
                    source,
                })?;
            }
            let summary = serde_json::json!({
                "purged": "payloads",
                "files": purged.len(),
                "bytes": bytes,
                "receipts": receipts,
                "first_file": purged.first(),
                "last_file": purged.last(),
                "by": by,
            });
            ledger.payloads_purged(&purged, summary)?;
        }
        if !progress(report) {
            return Ok(false);
        }
    }
}

/// The file's receipt in the spool, when the one there is this file's (a
/// later file sent under the same name replaces it).
fn receipt_of(spool: &Spool, partner: &str, id: i64, name: &str) -> Option<PathBuf> {
    let path = spool
        .receipts()
        .join(partner)
        .join(crate::receipt::name_for(id, name));
    let bytes = std::fs::read(&path).ok()?;
    let receipt: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    (receipt["file_id"].as_i64() == Some(id)).then_some(path)
}

fn exports(purge: &mut Purge<'_>) -> Result<bool> {
    let (config, now, by) = (purge.config, purge.now, purge.by);
    let Purge {
        spool,
        ledger,
        report,
        progress,
        ..
    } = purge;
    let dry_run = report.dry_run;
    let latest = before(now, config.shortest_payload_days());
    let mut after = 0;
    loop {
        let kept = ledger.kept_exports(&latest, after, BATCH)?;
        let Some(last) = kept.last() else {
            return Ok(true);
        };
        after = last.id;
        let mut purged = Vec::new();
        let mut outboxes: Vec<PathBuf> = Vec::new();
        for export in kept {
            if export.ended_at >= before(now, config.payload_days(&export.consumer, None)) {
                continue;
            }
            if export.held {
                report.held += 1;
                continue;
            }
            if export.delivering {
                report.waiting += 1;
                continue;
            }
            if !dry_run {
                let outbox = spool.outboxes().join(&export.consumer);
                let folder = outbox.join(&export.export_id);
                match std::fs::remove_dir_all(&folder) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(source) => {
                        return Err(RetentionError::Delete {
                            path: folder,
                            source,
                        });
                    }
                }
                outboxes.push(outbox);
            }
            purged.push(export.id);
        }
        report.exports += purged.len() as u64;
        if !dry_run && !purged.is_empty() {
            outboxes.sort();
            outboxes.dedup();
            for outbox in &outboxes {
                sync_dir(outbox).map_err(|source| RetentionError::Delete {
                    path: outbox.clone(),
                    source,
                })?;
            }
            let summary = serde_json::json!({
                "purged": "exports",
                "exports": purged.len(),
                "first_run": purged.first(),
                "last_run": purged.last(),
                "by": by,
            });
            ledger.exports_purged(&purged, summary)?;
        }
        if !progress(report) {
            return Ok(false);
        }
    }
}

fn records(purge: &mut Purge<'_>) -> Result<bool> {
    let (config, now, by) = (purge.config, purge.now, purge.by);
    let Purge {
        ledger,
        report,
        progress,
        ..
    } = purge;
    for feed in config.feeds.values() {
        let Some(days) = feed.record_retention_days else {
            continue;
        };
        let cutoff = before(now, days);
        let mut after = 0;
        loop {
            let kept = ledger.kept_records(&feed.name, &cutoff, after, BATCH)?;
            let Some(last) = kept.last() else {
                break;
            };
            after = last.id;
            let (held, due): (Vec<_>, Vec<_>) = kept.into_iter().partition(|f| f.held);
            report.held += held.len() as u64;
            if due.is_empty() {
                continue;
            }
            let ids: Vec<i64> = due.iter().map(|f| f.id).collect();
            let records = due.iter().map(|f| f.records).sum::<u64>();
            report.record_files += ids.len() as u64;
            report.records += records;
            if !report.dry_run {
                let summary = serde_json::json!({
                    "purged": "records",
                    "feed": feed.name,
                    "files": ids.len(),
                    "records": records,
                    "first_file": ids.first(),
                    "last_file": ids.last(),
                    "by": by,
                });
                ledger.purge_records(&ids, &crate::records::trend::record_counts, summary)?;
            }
            if !progress(report) {
                return Ok(false);
            }
        }
    }
    Ok(true)
}

fn delete(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(RetentionError::Delete {
            path: path.to_path_buf(),
            source,
        }),
    }
}
