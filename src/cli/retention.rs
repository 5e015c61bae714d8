//! `purge`, `hold`, `release` and `holds`: retention by hand.

use std::process::ExitCode;

use anyhow::bail;

use dropgate::config::Config;
use dropgate::ledger::{HoldOn, LedgerError};
use dropgate::retention::PurgeReport;

use super::{audit_reason, open_ledger, operator, sign_audit};

pub(super) fn purge(config: &Config, dry_run: bool, json: bool) -> anyhow::Result<ExitCode> {
    let mut ledger = open_ledger(config)?;
    let spinner = super::progress::spinner("purging");
    let by = operator();
    let purged = dropgate::retention::purge(
        config,
        &mut ledger,
        chrono::Utc::now(),
        dry_run,
        &by,
        &mut |so_far: &PurgeReport| {
            spinner.set_message(format!(
                "{} payloads, {} exports, {} records",
                so_far.payloads, so_far.exports, so_far.records
            ));
            true
        },
    );
    spinner.finish_and_clear();
    if !dry_run {
        sign_audit(config, &mut ledger);
    }
    let report = purged?;
    if json {
        println!("{}", serde_json::to_string(&report)?);
        return Ok(ExitCode::SUCCESS);
    }
    let verb = if dry_run { "would delete" } else { "deleted" };
    println!(
        "{verb}: {} payloads ({} bytes as received) with {} receipts, {} exports, {} records of {} files",
        report.payloads,
        report.payload_bytes,
        report.receipts,
        report.exports,
        report.records,
        report.record_files
    );
    if report.held > 0 {
        println!("kept by a legal hold: {}", report.held);
    }
    if report.waiting > 0 {
        println!("kept until forwarded or pushed: {}", report.waiting);
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn hold(
    config: &Config,
    file: Option<i64>,
    partner: Option<&str>,
    reason: &str,
) -> anyhow::Result<ExitCode> {
    let Some(reason) = audit_reason(reason) else {
        return Ok(ExitCode::from(2));
    };
    let mut ledger = open_ledger(config)?;
    let on = match (file, partner) {
        (Some(id), _) => HoldOn::File(id),
        (None, Some(name)) => {
            if !config.partners.contains_key(name) && !ledger.has_files_from(name)? {
                eprintln!("unknown partner `{name}`: not configured, and no file came from it");
                return Ok(ExitCode::from(1));
            }
            HoldOn::Partner(name)
        }
        (None, None) => bail!("--file or --partner is needed"),
    };
    let id = match ledger.place_hold(on, &reason, &operator()) {
        Ok(id) => id,
        Err(LedgerError::NotFound(file)) => {
            eprintln!("no file {file}");
            return Ok(ExitCode::from(1));
        }
        Err(e) => return Err(e.into()),
    };
    sign_audit(config, &mut ledger);
    println!("hold {id} placed");
    Ok(ExitCode::SUCCESS)
}

pub(super) fn release(config: &Config, hold: i64, reason: &str) -> anyhow::Result<ExitCode> {
    let Some(reason) = audit_reason(reason) else {
        return Ok(ExitCode::from(2));
    };
    let mut ledger = open_ledger(config)?;
    if ledger.release_hold(hold, &reason, &operator())?.is_none() {
        eprintln!("no hold {hold} in force");
        return Ok(ExitCode::from(1));
    }
    sign_audit(config, &mut ledger);
    println!("hold {hold} released");
    Ok(ExitCode::SUCCESS)
}

pub(super) fn holds(config: &Config, all: bool, json: bool) -> anyhow::Result<ExitCode> {
    let ledger = open_ledger(config)?;
    let holds = ledger.holds(all)?;
    if json {
        for hold in &holds {
            println!("{}", serde_json::to_string(hold)?);
        }
        return Ok(ExitCode::SUCCESS);
    }
    if holds.is_empty() {
        println!(
            "no legal hold {}",
            if all {
                "was ever placed"
            } else {
                "is in force"
            }
        );
    }
    for h in &holds {
        let on = match (&h.file_id, &h.partner) {
            (Some(id), _) => format!("file {id}"),
            (None, Some(p)) => format!("partner {p}"),
            (None, None) => "nothing".to_string(),
        };
        println!(
            "{:>4}  {on}  placed {} by {}: {}",
            h.id,
            h.placed_at,
            dropgate::text::escaped(&h.placed_by),
            dropgate::text::escaped(&h.reason)
        );
        if let (Some(at), Some(by)) = (&h.released_at, &h.released_by) {
            println!(
                "      released {at} by {}: {}",
                dropgate::text::escaped(by),
                dropgate::text::escaped(h.release_reason.as_deref().unwrap_or(""))
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
