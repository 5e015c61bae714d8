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
use crate::ledger::{FileRow, Ledger, LedgerError, Settles, StoredProblem, SystemClock};
use crate::metrics::METRICS;
use crate::spool::{Spool, sync_dir};

/// How often settled files are looked for.
const POLL: Duration = Duration::from_secs(1);
/// Receipts written, or found to push, in one pass, at most.
const BATCH: usize = 500;
/// A receipt whose push gave up is tried again this long after...
const PUSH_RETRY_AFTER: chrono::TimeDelta = chrono::TimeDelta::minutes(15);
/// ...for this long after it was written.
const PUSH_FOR: chrono::TimeDelta = chrono::TimeDelta::hours(24);

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
    name_for(file.id, &file.name)
}

/// The receipt's name for file `id` sent as `name`.
pub fn name_for(id: i64, name: &str) -> String {
    let base = name.rsplit('/').next().unwrap_or(name);
    let base = base.trim_start_matches('.');
    let named = format!("{base}.receipt.json");
    if base.is_empty() || named.len() > 255 {
        format!("file-{id}.receipt.json")
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

/// A receipt to push: written afresh beside the partner's receipts under a
/// hidden name, removed once pushed.
struct Due {
    destination: String,
    file_id: i64,
    name: String,
    path: PathBuf,
    sha256: String,
    size: u64,
}

/// Writes the receipts of every settled file from `from_id` on; returns
/// the next `from_id`.
fn write_pending(config: &Config, ledger: &mut Ledger, from_id: i64) -> Result<i64, LedgerError> {
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
    }
    for folder in &folders {
        if let Err(error) = sync_dir(folder) {
            // None of this pass is recorded: every receipt is written again
            // next pass, replacing its unsynced self.
            tracing::error!(error = %error.kind(), "cannot sync a receipts folder");
            let first = done.first().map_or(next_from, |d| d.0);
            return Ok(next_from.min(first));
        }
    }
    // The receipt's name holds the sender's file name: not in the history.
    let events: Vec<(i64, serde_json::Value)> = done
        .iter()
        .map(|(id, state)| (*id, serde_json::json!({ "state": state })))
        .collect();
    ledger.receipts_written(&events)?;
    Ok(next_from)
}

/// Pushes of receipts found due from a floor: where the next scan starts.
struct PushScan {
    from: i64,
    /// The floor stays at the first receipt not yet delivered, to try again
    /// those whose push gave up.
    keeps_undelivered: bool,
}

impl PushScan {
    /// The receipts due from the floor; the floor moves on past a full batch,
    /// else back to `settled_from` (below it no receipt is still to come).
    fn due(
        &mut self,
        config: &Config,
        ledger: &Ledger,
        settled_from: i64,
        gave_up_after: Option<chrono::DateTime<chrono::Utc>>,
    ) -> Result<(Vec<Due>, bool), LedgerError> {
        let now = chrono::Utc::now();
        let spool = Spool::new(&config.daemon.spool);
        let mut due = Vec::new();
        let mut full = false;
        let mut last = self.from;
        for (partner, settings) in &config.partners {
            let Some(destination) = settings
                .receipts
                .as_ref()
                .and_then(|r| r.destination.as_ref())
            else {
                continue;
            };
            let files = ledger.receipt_pushes_due(
                partner,
                destination,
                self.from,
                now - PUSH_FOR,
                gave_up_after,
                BATCH,
            )?;
            full |= files.len() == BATCH;
            for file in files {
                last = last.max(file.id);
                let problems = ledger.problems(file.id)?;
                let mut json = serde_json::to_vec_pretty(&Receipt::new(&file, &problems))
                    .expect("a receipt serialises");
                json.push(b'\n');
                let path = spool
                    .receipts()
                    .join(partner)
                    .join(format!(".receipt-{}.push", file.id));
                if let Err(error) = std::fs::create_dir_all(path.parent().expect("in a folder"))
                    .and_then(|()| std::fs::write(&path, &json))
                {
                    tracing::error!(file_id = file.id, error = %error.kind(), "cannot stage a receipt to push");
                    continue;
                }
                due.push(Due {
                    destination: destination.clone(),
                    file_id: file.id,
                    name: receipt_name(&file),
                    path,
                    sha256: crate::digest::sha256_hex(&json),
                    size: json.len() as u64,
                });
            }
        }
        self.from = if full {
            last + 1
        } else if self.keeps_undelivered {
            let mut floor = settled_from;
            for (partner, settings) in &config.partners {
                if let Some(destination) = settings
                    .receipts
                    .as_ref()
                    .and_then(|r| r.destination.as_ref())
                    && let Some(first) = ledger
                        .receipt_pushes_due(
                            partner,
                            destination,
                            self.from,
                            now - PUSH_FOR,
                            None,
                            1,
                        )?
                        .first()
                {
                    floor = floor.min(first.id);
                }
            }
            floor
        } else {
            settled_from
        };
        Ok((due, full))
    }
}

/// Where the receipt writer is: the first file that may still need its
/// receipt written, and where pushes are looked for.
struct Progress {
    from_id: i64,
    /// New receipts, every pass.
    fresh: PushScan,
    /// Also those whose push gave up, every [`PUSH_RETRY_AFTER`].
    retry: PushScan,
}

impl Progress {
    /// One pass: receipts written, then the pushes due. Returns them, and
    /// whether the retry scan (made when `retrying`) got through them all.
    fn pass(
        &mut self,
        config: &Config,
        ledger: &mut Ledger,
        retrying: bool,
    ) -> Result<(Vec<Due>, bool), LedgerError> {
        let settled_from = self.from_id;
        self.from_id = write_pending(config, ledger, self.from_id)?;
        let recently = chrono::Utc::now() - PUSH_RETRY_AFTER;
        let (mut due, _) = self
            .fresh
            .due(config, ledger, settled_from, Some(recently))?;
        if !retrying {
            return Ok((due, false));
        }
        let (again, full) = self
            .retry
            .due(config, ledger, settled_from, Some(recently))?;
        due.extend(again);
        Ok((due, !full))
    }
}

/// Writes receipts as files settle and pushes those of partners with a
/// destination, until `shutdown` turns true. Pushes are found in the ledger
/// (a receipt not yet delivered), so a stop or an outage loses none: new
/// ones every pass, and every [`PUSH_RETRY_AFTER`] also those whose push
/// gave up, for [`PUSH_FOR`] after the receipt was written.
pub async fn run_receipts(config: Arc<Config>, mut shutdown: watch::Receiver<bool>) {
    // From the first file at start: receipts a stop left unwritten are
    // written now, and pushes it left undone are made now.
    let mut progress = Progress {
        from_id: 0,
        fresh: PushScan {
            from: 0,
            keeps_undelivered: false,
        },
        retry: PushScan {
            from: 0,
            keeps_undelivered: true,
        },
    };
    let mut retry_at = tokio::time::Instant::now();
    // One connection for every pass, opened again only after it failed to open.
    let mut kept: Option<Ledger> = None;
    let mut failures = crate::repeated::Repeated::default();
    loop {
        let retrying = tokio::time::Instant::now() >= retry_at;
        let (pass, ledger, moved_on) = {
            let config = config.clone();
            tokio::task::spawn_blocking(move || {
                let mut ledger = match kept {
                    Some(ledger) => ledger,
                    None => match Ledger::open(&config.daemon.ledger, Arc::new(SystemClock)) {
                        Ok(ledger) => ledger,
                        Err(e) => return (Err(e), None, progress),
                    },
                };
                let pass = progress.pass(&config, &mut ledger, retrying);
                (pass, Some(ledger), progress)
            })
            .await
            .expect("the receipt writer does not panic")
        };
        kept = ledger;
        progress = moved_on;
        match pass {
            Ok((due, retried)) => {
                if failures.mended() {
                    tracing::info!("receipts are written again");
                }
                if retried {
                    retry_at =
                        tokio::time::Instant::now() + PUSH_RETRY_AFTER.to_std().expect("positive");
                }
                push(&config, due).await;
            }
            Err(e) => {
                if let Some(unlogged) = failures.failed() {
                    tracing::error!(error = %e, failures_since_last_logged = unlogged, "cannot write or push receipts; trying again");
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// Pushes receipts to their partners' destinations, one at a time in the
/// order found (a receipt found twice in one pass is pushed once); each
/// attempt is a delivery event of the file the receipt is for.
async fn push(config: &Config, due: Vec<Due>) {
    if due.is_empty() {
        return;
    }
    // Without the ledger nothing is pushed (every push is recorded there);
    // the staged copies still go.
    let ledger = Ledger::open(&config.daemon.ledger, Arc::new(SystemClock))
        .ok()
        .map(Mutex::new);
    let mut pushed = std::collections::HashSet::new();
    for receipt in due {
        let first = pushed.insert((receipt.file_id, receipt.destination.clone()));
        let destination = config.destinations.get(&receipt.destination);
        if let (true, Some(destination), Some(ledger)) = (first, destination, &ledger) {
            let parcel = Parcel {
                contents: forward::Contents::File(&receipt.path),
                name: &receipt.name,
                file_id: Some(receipt.file_id),
                sha256: &receipt.sha256,
                size: receipt.size,
            };
            let pushed = forward::deliver(destination, &parcel, Settles::Nothing, ledger).await;
            METRICS.delivery("receipt", &receipt.destination, pushed.is_ok());
            if let Err(e) = pushed {
                tracing::error!(file_id = receipt.file_id, error = %e, "a receipt was not pushed; it is tried again later");
            }
        }
        // The staged copy goes whatever happened: the next push stages it afresh.
        let _ = std::fs::remove_file(&receipt.path);
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
