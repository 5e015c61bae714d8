//! `export`, `schedules`, `grants`, `signing-key` and `verify`.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;

use dropgate::config::Config;
use dropgate::export::manifest;
use dropgate::ledger::{Ledger, RunOutcome, SystemClock};
use dropgate::publish;

pub(super) fn export(config: &Config, schedule: &str, json: bool) -> anyhow::Result<ExitCode> {
    dropgate::keys::ensure(config, false)?;
    let spinner = super::progress::spinner(&format!("exporting {schedule}"));
    let made = publish::export_now(config, schedule, Arc::new(SystemClock));
    spinner.finish_and_clear();
    let made = made?;
    // Pushed to the schedule's destinations (and any push a stop left pending).
    let pushes = if made.outcome == RunOutcome::Complete
        && config
            .schedules
            .get(schedule)
            .is_some_and(|s| !s.destinations.is_empty())
    {
        let runtime = tokio::runtime::Runtime::new().context("starting the runtime")?;
        runtime.block_on(publish::push_pending(config))?
    } else {
        Vec::new()
    };
    let pushed_ok = pushes.iter().all(|(_, _, error)| error.is_none());
    if json {
        println!(
            "{}",
            serde_json::json!({
                "run": made.run_id,
                "export_id": made.export_id,
                "outcome": made.outcome,
                "folder": made.folder,
                "reason": made.reason,
                "manifest": made.manifest,
                "pushed": pushes.iter().map(|(export, destination, error)| serde_json::json!({
                    "export_id": export, "destination": destination, "error": error,
                })).collect::<Vec<_>>(),
            })
        );
    } else {
        match (&made.folder, &made.manifest) {
            (Some(folder), Some(manifest)) => {
                println!("{}: complete", made.export_id);
                println!("  folder   {}", folder.display());
                println!(
                    "  loads    {} to {} ({})",
                    manifest.watermark.from, manifest.watermark.to, manifest.mode
                );
                println!("  grants   {}", manifest.grants.join(", "));
                for entry in &manifest.output {
                    println!("  {:<24} {:>9} {}", entry.url, entry.count, entry.kind);
                }
                if manifest.output.is_empty() {
                    println!("  nothing new since the last export");
                }
                for (export, destination, error) in &pushes {
                    match error {
                        None => println!("  pushed   {export} to {destination}"),
                        Some(e) => println!(
                            "  NOT pushed {export} to {destination}: {}",
                            dropgate::text::escaped(e)
                        ),
                    }
                }
            }
            _ => println!(
                "{}: {} ({})",
                made.export_id,
                made.outcome.as_str(),
                made.reason.as_deref().unwrap_or("-")
            ),
        }
    }
    Ok(match made.outcome {
        RunOutcome::Complete if pushed_ok => ExitCode::SUCCESS,
        _ => ExitCode::from(1),
    })
}

/// `dropgate resend`: queued again by the ledger, then pushed here (holding
/// the push lock, like the daemon, which may push it first); how each push
/// ended is read back from the ledger.
pub(super) fn resend(
    config: &Config,
    export_id: &str,
    to: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let (run_id, queued) = publish::resend(config, export_id, to, Arc::new(SystemClock))?;
    let runtime = tokio::runtime::Runtime::new().context("starting the runtime")?;
    runtime.block_on(publish::push_pending(config))?;
    let ledger = Ledger::open(&config.daemon.ledger, Arc::new(SystemClock))?;
    let deliveries = ledger.export_deliveries(run_id)?;
    let mut all_delivered = true;
    for destination in &queued {
        match deliveries.iter().find(|(to, _, _)| to == destination) {
            Some((_, state, _)) if state == "delivered" => {
                println!("{export_id}: pushed to {destination}");
            }
            other => {
                all_delivered = false;
                let why = other
                    .and_then(|(_, _, error)| error.as_deref())
                    .unwrap_or("not delivered");
                println!(
                    "{export_id}: NOT pushed to {destination}: {}",
                    dropgate::text::escaped(why)
                );
            }
        }
    }
    Ok(if all_delivered {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

pub(super) fn schedules(config: &Config, ledger: &Ledger, json: bool) -> anyhow::Result<ExitCode> {
    let now = chrono::Utc::now();
    for schedule in config.schedules.values() {
        let last = ledger.export_runs(&schedule.name, 1)?.into_iter().next();
        let next = schedule.cron.next_after(now);
        if json {
            println!(
                "{}",
                serde_json::json!({
                    "schedule": schedule.name,
                    "consumer": schedule.consumer,
                    "mode": schedule.mode.as_str(),
                    "formats": schedule.formats.iter().map(|f| f.name()).collect::<Vec<_>>(),
                    "records": schedule.records.iter().map(|k| k.name()).collect::<Vec<_>>(),
                    "last_run": last,
                    "retrieval": match &last {
                        Some(run) if run.outcome == Some(RunOutcome::Complete) => {
                            publish::retrieval(config, ledger, &run.consumer, &run.export_id)?
                        }
                        _ => None,
                    },
                    "next_run": next,
                })
            );
            continue;
        }
        println!(
            "{:<20} for {:<16} {} ({})",
            schedule.name,
            schedule.consumer,
            dropgate::schedule::Schedule::Cron(Box::new(schedule.cron.clone())),
            schedule.mode.as_str()
        );
        match last {
            Some(run) => {
                println!(
                    "  last   {} {}{}: {}",
                    run.started_at,
                    run.outcome.map(|o| o.as_str()).unwrap_or("running"),
                    if run.manual { " (manual)" } else { "" },
                    run.export_id
                );
                if run.outcome == Some(RunOutcome::Complete)
                    && let Some(r) =
                        publish::retrieval(config, ledger, &run.consumer, &run.export_id)?
                {
                    match &r.retrieved_at {
                        Some(at) => println!("  outbox retrieved at {at} ({} files)", r.files),
                        None => println!("  outbox {} of {} files fetched", r.fetched, r.files),
                    }
                }
                for (destination, state, error) in ledger.export_deliveries(run.id)? {
                    println!(
                        "  push   {destination}: {state}{}",
                        error
                            .map(|e| format!(" ({})", dropgate::text::escaped(&e)))
                            .unwrap_or_default()
                    );
                }
            }
            None => println!("  last   never"),
        }
        match next {
            Some(at) => println!(
                "  next   {}",
                at.with_timezone(&config.daemon.time_zone)
                    .format("%Y-%m-%d %H:%M %Z")
            ),
            None => println!("  next   never (the timetable names no future time)"),
        }
    }
    if config.schedules.is_empty() {
        println!("no schedules are configured");
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn grants(config: &Config, ledger: &Ledger, json: bool) -> anyhow::Result<ExitCode> {
    let today = chrono::Utc::now()
        .with_timezone(&config.daemon.time_zone)
        .date_naive();
    let used = publish::grants_with_use(config, ledger)?;
    for grant in config.grants.values() {
        let last_used = used.get(&grant.name).cloned().flatten();
        let records: Vec<&str> = grant.records.iter().map(|k| k.name()).collect();
        if json {
            println!(
                "{}",
                serde_json::json!({
                    "grant": grant.name,
                    "controller": grant.controller,
                    "consumer": grant.consumer,
                    "records": records,
                    "feeds": grant.feeds,
                    "purpose": grant.purpose,
                    "valid_from": grant.valid_from,
                    "valid_until": grant.valid_until,
                    "in_force": grant.in_force(today),
                    "last_used": last_used,
                })
            );
            continue;
        }
        println!(
            "{:<24} {} -> {}: {}",
            grant.name,
            grant.controller,
            grant.consumer,
            records.join(", ")
        );
        if let Some(feeds) = &grant.feeds {
            println!("  feeds     {}", feeds.join(", "));
        }
        println!("  purpose   {}", dropgate::text::escaped(&grant.purpose));
        println!(
            "  valid     {} to {}{}",
            grant.valid_from,
            grant
                .valid_until
                .map(|d| d.to_string())
                .unwrap_or_else(|| "(open)".into()),
            if grant.in_force(today) {
                ""
            } else {
                " (not in force today)"
            }
        );
        println!("  last used {}", last_used.as_deref().unwrap_or("never"));
    }
    if config.grants.is_empty() {
        println!("no grants are configured: nothing can be exported");
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn signing_key(config: &Config) -> anyhow::Result<ExitCode> {
    dropgate::keys::ensure(config, false)?;
    let key = publish::verifying_key(&config.keys.signing_key)?;
    let line = manifest::allowed_signers_line(&key).map_err(anyhow::Error::msg)?;
    println!("{line}");
    Ok(ExitCode::SUCCESS)
}

pub(super) fn verify(
    config: &Config,
    folder: &Path,
    allowed_signers: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let signers = match allowed_signers {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            let keys = manifest::read_allowed_signers(&text);
            if keys.is_empty() {
                anyhow::bail!(
                    "{}: no key for `{}` with namespace `{}`",
                    path.display(),
                    manifest::IDENTITY,
                    manifest::NAMESPACE
                );
            }
            keys
        }
        None => vec![publish::verifying_key(&config.keys.signing_key)?],
    };
    match manifest::verify(folder, &signers) {
        Ok(manifest) => {
            println!(
                "{}: verified ({} files, signed by the allowed key; schedule {}, grants {})",
                folder.display(),
                manifest.output.len(),
                manifest.schedule,
                manifest.grants.join(", ")
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            println!("{}: does not verify: {e}", folder.display());
            Ok(ExitCode::from(1))
        }
    }
}
