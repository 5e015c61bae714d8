//! Receipts: for every file taken from a partner that asks for them, once
//! the file is settled (loaded, duplicate or quarantined), a JSON receipt
//! where the partner can read it: `spool/receipts/<partner>/`, shown as its
//! read-only `receipts/` on the embedded SFTP server, a copy in a local
//! folder and a push to a destination when configured. Writing it is an
//! event in the file's history. Problems are as the ledger keeps them, so a
//! receipt never holds a value of an identifier column.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;

use crate::config::Config;
use crate::forward::{self, Parcel};
use crate::ledger::{FileRow, Ledger, LedgerError, StoredProblem, SystemClock};
use crate::spool::{Spool, sync_dir};

/// How often settled files are looked for.
const POLL: Duration = Duration::from_secs(1);
/// Receipts written in one pass, at most.
const BATCH: usize = 500;

/// The receipt of one file, as the partner reads it.
#[derive(Debug, Serialize)]
pub struct Receipt<'a> {
    /// The receipt format's version.
    pub receipt: u32,
    pub file_id: i64,
    /// The name the partner sent it under.
    pub name: &'a str,
    pub sha256: &'a str,
    pub size: u64,
    pub received_at: &'a str,
    pub settled_at: &'a str,
    pub feed: Option<&'a str>,
    /// `loaded`, `duplicate` or `quarantined`.
    pub state: &'a str,
    pub reason: Option<&'a str>,
    pub duplicate_of: Option<i64>,
    pub rows: Rows,
    pub records: u64,
    /// Every problem found, of which `problems` lists those kept.
    pub problems_total: u64,
    pub problems: &'a [StoredProblem],
}

#[derive(Debug, Serialize)]
pub struct Rows {
    pub read: u64,
    pub loaded: u64,
    pub rejected: u64,
}

impl<'a> Receipt<'a> {
    pub fn new(file: &'a FileRow, problems: &'a [StoredProblem]) -> Receipt<'a> {
        let read = file.rows_read.unwrap_or(0);
        let loaded = file.rows_loaded.unwrap_or(0);
        Receipt {
            receipt: 1,
            file_id: file.id,
            name: &file.name,
            sha256: &file.sha256,
            size: file.size,
            received_at: &file.received_at,
            settled_at: &file.updated_at,
            feed: file.feed.as_deref(),
            state: file.state.as_str(),
            reason: file.reason.as_deref(),
            duplicate_of: file.duplicate_of,
            rows: Rows {
                read,
                loaded,
                rejected: read.saturating_sub(loaded),
            },
            records: file.records,
            problems_total: file.problems,
            problems,
        }
    }
}

/// `<sent name>.receipt.json`: the last part of the name the partner used,
/// so a newer file of the same name replaces the receipt of the older; or
/// `file-<id>.receipt.json` when that name would be too long for a file.
pub fn receipt_name(file: &FileRow) -> String {
    let base = file.name.rsplit('/').next().unwrap_or(&file.name);
    let base = base.trim_start_matches('.');
    let named = format!("{base}.receipt.json");
    if base.is_empty() || named.len() > 255 {
        format!("file-{}.receipt.json", file.id)
    } else {
        named
    }
}

/// Written beside under a hidden name (of dropgate's own, as short as the
/// file's id), synced, then renamed into place. The folder is synced once
/// for the whole pass, before the pass is recorded.
fn write_into(folder: &Path, file_id: i64, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    std::fs::create_dir_all(folder)?;
    let hidden = folder.join(format!(".receipt-{file_id}.tmp"));
    {
        let mut file = std::fs::File::create(&hidden)?;
        file.write_all(bytes)?;
        file.sync_all()?;
    }
    std::fs::rename(&hidden, folder.join(name))
}

/// A receipt written, to push.
struct Written {
    partner: String,
    file_id: i64,
    name: String,
    path: std::path::PathBuf,
    sha256: String,
    size: u64,
}

/// Writes the receipts of every settled file from `from_id` on; returns
/// those written (for pushing) and the next `from_id`.
fn write_pending(
    config: &Config,
    ledger: &mut Ledger,
    from_id: i64,
) -> Result<(Vec<Written>, i64), LedgerError> {
    let partners: Vec<&str> = config
        .partners
        .iter()
        .filter(|(_, p)| p.receipts.is_some())
        .map(|(name, _)| name.as_str())
        .collect();
    // Read first: a file settling meanwhile is above it and found next time.
    let next_from = ledger.settled_below()?;
    let spool = Spool::new(&config.daemon.spool);
    let files = ledger.settled_without_receipt(&partners, from_id, BATCH)?;
    // A full batch may have left some behind: the next pass starts here again.
    let mut next_from = if files.len() == BATCH {
        from_id
    } else {
        next_from
    };
    let mut written = Vec::new();
    // Each receipt's own file is synced as it is written; each folder once,
    // after them all; the pass is then recorded in one transaction.
    let mut done: Vec<(i64, &'static str)> = Vec::new();
    let mut folders: Vec<PathBuf> = Vec::new();
    for file in files {
        let problems = ledger.problems(file.id)?;
        let receipt = Receipt::new(&file, &problems);
        let mut json = serde_json::to_vec_pretty(&receipt).expect("a receipt serialises");
        json.push(b'\n');
        let name = receipt_name(&file);
        let folder = spool.receipts().join(&file.partner);
        let settings = config.partners[&file.partner]
            .receipts
            .as_ref()
            .expect("only partners with receipts");
        let mut places = vec![folder.clone()];
        places.extend(settings.folder.clone());
        let mut failed = None;
        for place in &places {
            if let Err(e) = write_into(place, file.id, &name, &json) {
                failed = Some(e);
            }
        }
        if let Some(error) = failed {
            // Tried again next pass (the spool or the folder may be full); the
            // files after it are not held up. The error names no file.
            tracing::error!(file_id = file.id, error = %error.kind(), "cannot write a receipt");
            next_from = next_from.min(file.id);
            continue;
        }
        for place in places {
            if !folders.contains(&place) {
                folders.push(place);
            }
        }
        done.push((file.id, file.state.as_str()));
        if settings.destination.is_some() {
            written.push(Written {
                partner: file.partner.clone(),
                file_id: file.id,
                path: folder.join(&name),
                sha256: crate::digest::sha256_hex(&json),
                size: json.len() as u64,
                name,
            });
        }
    }
    for folder in &folders {
        if let Err(error) = sync_dir(folder) {
            // None of this pass is recorded: every receipt is written again
            // next pass, replacing its unsynced self.
            tracing::error!(error = %error.kind(), "cannot sync a receipts folder");
            let first = done.first().map_or(next_from, |d| d.0);
            return Ok((Vec::new(), next_from.min(first)));
        }
    }
    // The receipt's name holds the sender's file name: not in the history.
    let events: Vec<(i64, serde_json::Value)> = done
        .iter()
        .map(|(id, state)| (*id, serde_json::json!({ "state": state })))
        .collect();
    ledger.receipts_written(&events)?;
    Ok((written, next_from))
}

/// Writes receipts as files settle, until `shutdown` turns true.
pub async fn run_receipts(config: Arc<Config>, mut shutdown: watch::Receiver<bool>) {
    // From the first file at start: receipts a stop left unwritten are written now.
    let mut from_id = 0;
    // One connection for every pass, opened again only after it failed to open.
    let mut kept: Option<Ledger> = None;
    loop {
        let (pass, ledger) = {
            let config = config.clone();
            tokio::task::spawn_blocking(move || {
                let mut ledger = match kept {
                    Some(ledger) => ledger,
                    None => match Ledger::open(&config.daemon.ledger, Arc::new(SystemClock)) {
                        Ok(ledger) => ledger,
                        Err(e) => return (Err(e), None),
                    },
                };
                let pass = write_pending(&config, &mut ledger, from_id);
                (pass, Some(ledger))
            })
            .await
            .expect("the receipt writer does not panic")
        };
        kept = ledger;
        match pass {
            Ok((written, next)) => {
                from_id = next;
                push(&config, written).await;
            }
            Err(e) => tracing::error!(error = %e, "cannot write receipts; trying again"),
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// Pushes receipts to their partners' destinations; each attempt is a
/// delivery event of the file the receipt is for.
async fn push(config: &Config, written: Vec<Written>) {
    if written.is_empty() {
        return;
    }
    let Ok(ledger) = Ledger::open(&config.daemon.ledger, Arc::new(SystemClock)) else {
        return;
    };
    let ledger = Mutex::new(ledger);
    for receipt in written {
        let destination = config.partners[&receipt.partner]
            .receipts
            .as_ref()
            .and_then(|r| r.destination.as_ref())
            .and_then(|d| config.destinations.get(d));
        let Some(destination) = destination else {
            continue;
        };
        let parcel = Parcel {
            path: &receipt.path,
            name: &receipt.name,
            file_id: Some(receipt.file_id),
            sha256: &receipt.sha256,
            size: receipt.size,
        };
        if let Err(e) = forward::deliver(destination, &parcel, &ledger).await {
            tracing::error!(file_id = receipt.file_id, error = %e, "a receipt was not pushed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(id: i64, name: &str) -> FileRow {
        let mut ledger = crate::ledger::testing::ledger();
        let id_made = crate::ledger::testing::received(&mut ledger, name);
        let mut row = ledger.file(id_made).unwrap();
        row.id = id;
        row
    }

    #[test]
    fn a_receipt_is_named_after_the_file_unless_that_name_cannot_be_a_file() {
        assert_eq!(
            receipt_name(&file(7, "news2_a.csv")),
            "news2_a.csv.receipt.json"
        );
        assert_eq!(
            receipt_name(&file(7, "sub/news2_a.csv")),
            "news2_a.csv.receipt.json"
        );
        let long = "n".repeat(250);
        assert_eq!(receipt_name(&file(7, &long)), "file-7.receipt.json");
    }
}
