//! `dropgate status`: what an admin checks first when a feed breaks.

use std::path::Path;
use std::process::ExitCode;

use serde_json::{Value, json};

use dropgate::config::{Config, SourceKind, TEMPORARY_SUFFIXES};
use dropgate::ledger::Ledger;
use dropgate::text::escaped;

pub(super) fn status(config: &Config, ledger: &Ledger, json: bool) -> anyhow::Result<ExitCode> {
    let report = report(config, ledger)?;
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_report(&report);
    }
    Ok(ExitCode::SUCCESS)
}

fn report(config: &Config, ledger: &Ledger) -> anyhow::Result<Value> {
    let status = ledger.status()?;
    let now = chrono::Utc::now();
    let tz = config.daemon.time_zone;
    let today = now
        .with_timezone(&tz)
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .and_then(|midnight| midnight.and_local_timezone(tz).earliest())
        .map_or(now, |start| start.with_timezone(&chrono::Utc));

    let mut sources = Vec::new();
    for source in config.sources.values() {
        let polled = status.sources.iter().find(|s| s.source == source.name);
        let polled_waiting = polled.map(|p| p.files_waiting);
        let (kind, waiting) = match &source.kind {
            SourceKind::Local(local) => ("local", Some(files_waiting(&local.path))),
            SourceKind::Remote(remote) => match remote.endpoint {
                dropgate::remote::Endpoint::Sftp(_) => ("sftp", polled_waiting),
                dropgate::remote::Endpoint::Ftp(_) => ("ftp", polled_waiting),
            },
        };
        sources.push(json!({
            "source": source.name,
            "kind": kind,
            "partner": source.partner,
            "files_waiting": waiting,
            "last_poll_at": polled.map(|p| &p.checked_at),
            "last_ok_at": polled.and_then(|p| p.last_ok_at.as_ref()),
            "last_error": polled.and_then(|p| p.last_error.as_ref()),
            "last_error_at": polled.and_then(|p| p.last_error_at.as_ref()),
            "cleanups_pending": polled.map_or(0, |p| p.cleanups_pending),
            "cleanup_error": polled.and_then(|p| p.cleanup_error.as_ref()),
        }));
    }
    let feeds = config
        .feeds
        .keys()
        .map(|feed| ledger.feed_activity(feed, today))
        .collect::<Result<Vec<_>, _>>()?;
    let destinations = config
        .destinations
        .keys()
        .map(|d| ledger.destination_activity(d))
        .collect::<Result<Vec<_>, _>>()?;
    let mut schedules = Vec::new();
    for schedule in config.schedules.values() {
        let last = ledger.export_runs(&schedule.name, 1)?.into_iter().next();
        schedules.push(json!({
            "schedule": schedule.name,
            "last_run_at": last.as_ref().map(|r| &r.started_at),
            "last_outcome": last.as_ref().map(|r| r.outcome.map_or("running", |o| o.as_str())),
            "next_run_at": schedule.cron.next_after(now),
        }));
    }
    let files: serde_json::Map<String, Value> = status
        .files
        .iter()
        .map(|(state, count)| (state.clone(), json!(count)))
        .collect();
    let ledger_bytes = ["", "-wal"]
        .iter()
        .filter_map(|suffix| {
            let mut path = config.daemon.ledger.clone().into_os_string();
            path.push(suffix);
            std::fs::metadata(path).ok().map(|m| m.len())
        })
        .sum::<u64>();
    let (free, total) = dropgate::spool::space(&config.daemon.spool).unwrap_or((0, 0));
    Ok(json!({
        "sources": sources,
        "feeds": feeds,
        "destinations": destinations,
        "schedules": schedules,
        "files": files,
        "routes": status.routes,
        "pushes": status.pushes,
        "spool": {
            "path": config.daemon.spool,
            "free_bytes": free,
            "total_bytes": total,
            "min_free_bytes": config.daemon.min_free_space,
            "no_room": free < config.daemon.min_free_space,
        },
        "ledger": { "path": config.daemon.ledger, "bytes": ledger_bytes },
        "retention": {
            "last_deleted_at": ledger.last_purge_at()?,
            "next_purge_at": config.daemon.purge.next_after(now),
            "holds": ledger.holds(false)?.len(),
        },
        "alerts": ledger.active_alerts()?,
    }))
}

pub(super) fn alerts(
    ledger: &Ledger,
    history: Option<usize>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let active = ledger.active_alerts()?;
    let rows = match history {
        Some(n) => ledger.alert_history(n)?,
        None => active.clone(),
    };
    for alert in &rows {
        if json {
            println!("{}", serde_json::to_string(alert)?);
        } else {
            println!(
                "{:>6}  {}  {:<8} {:<16} {:<16} {}",
                alert.id,
                alert.at,
                alert.event,
                escaped(&alert.feed),
                alert.kind,
                alert.detail
            );
        }
    }
    if rows.is_empty() && !json {
        println!("no alerts");
    }
    Ok(if active.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Complete-looking files in a drop folder: what the daemon has yet to take.
fn files_waiting(folder: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(folder) else {
        return 0;
    };
    entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            !name.starts_with('.') && !TEMPORARY_SUFFIXES.iter().any(|s| name.ends_with(s))
        })
        .count() as u64
}

fn mib(bytes: &Value) -> String {
    format!(
        "{:.1} MiB",
        bytes.as_u64().unwrap_or(0) as f64 / (1 << 20) as f64
    )
}

fn text(value: &Value) -> String {
    match value {
        Value::Null => "-".into(),
        Value::String(s) => escaped(s).into_owned(),
        other => other.to_string(),
    }
}

fn print_report(r: &Value) {
    let alerts = r["alerts"].as_array().cloned().unwrap_or_default();
    if alerts.is_empty() {
        println!("alerts: none");
    } else {
        println!("ALERTS:");
    }
    for a in alerts {
        println!(
            "  {:<24} {:<16} since {} {}",
            text(&a["feed"]),
            text(&a["kind"]),
            text(&a["at"]),
            a["detail"]
        );
    }
    println!("files:");
    for (state, count) in r["files"].as_object().into_iter().flatten() {
        println!("  {state:<12} {count}");
    }
    for (title, key) in [("forwarded:", "routes"), ("export pushes:", "pushes")] {
        let rows = r[key].as_array().cloned().unwrap_or_default();
        if rows.is_empty() {
            continue;
        }
        println!("{title}");
        for row in rows {
            println!("  {:<24} {:<10} {}", text(&row[0]), text(&row[1]), row[2]);
        }
    }
    println!("sources:");
    for s in r["sources"].as_array().into_iter().flatten() {
        let name = text(&s["source"]);
        if s["kind"] == "local" {
            println!(
                "  {name:<24} local    {} file(s) waiting in the folder",
                s["files_waiting"]
            );
            continue;
        }
        if s["last_poll_at"].is_null() {
            println!("  {name:<24} {:<8} no polls recorded yet", text(&s["kind"]));
            continue;
        }
        let failing = !s["last_error_at"].is_null()
            && (s["last_ok_at"].is_null()
                || s["last_error_at"].as_str() > s["last_ok_at"].as_str());
        println!(
            "  {name:<24} {:<8} checked {}; {} file(s) waiting on the server",
            if failing { "failing" } else { "ok" },
            text(&s["last_poll_at"]),
            s["files_waiting"]
        );
        if !s["last_error"].is_null() {
            println!(
                "  {:<24} last error at {}: {}",
                "",
                text(&s["last_error_at"]),
                text(&s["last_error"])
            );
        }
        if s["cleanups_pending"].as_u64().unwrap_or(0) > 0 {
            println!(
                "  {:<24} {} received file(s) not yet removed from the server, retried with backoff: {}",
                "",
                s["cleanups_pending"],
                text(&s["cleanup_error"])
            );
        }
    }
    println!("feeds (today):");
    for f in r["feeds"].as_array().into_iter().flatten() {
        println!(
            "  {:<24} {} file(s), {} row(s), {} quarantined; last file {}",
            text(&f["feed"]),
            f["files_today"],
            f["rows_today"],
            f["quarantined_today"],
            text(&f["last_file_at"])
        );
    }
    let destinations = r["destinations"].as_array().cloned().unwrap_or_default();
    if !destinations.is_empty() {
        println!("destinations:");
    }
    for d in destinations {
        println!(
            "  {:<24} {} queued; last delivery {}",
            text(&d["destination"]),
            d["queued"],
            text(&d["last_delivery_at"])
        );
        if !d["last_error"].is_null() {
            println!(
                "  {:<24} last error at {}: {}",
                "",
                text(&d["last_error_at"]),
                text(&d["last_error"])
            );
        }
    }
    let schedules = r["schedules"].as_array().cloned().unwrap_or_default();
    if !schedules.is_empty() {
        println!("schedules:");
    }
    for s in schedules {
        println!(
            "  {:<24} last {} ({}); next {}",
            text(&s["schedule"]),
            text(&s["last_run_at"]),
            text(&s["last_outcome"]),
            text(&s["next_run_at"])
        );
    }
    println!(
        "spool: {} free of {}; ledger {}",
        mib(&r["spool"]["free_bytes"]),
        mib(&r["spool"]["total_bytes"]),
        mib(&r["ledger"]["bytes"])
    );
    if r["spool"]["no_room"] == true {
        println!(
            "spool: NO ROOM: under min_free_space ({}); new files wait where they are, SFTP uploads are refused, polls paused",
            mib(&r["spool"]["min_free_bytes"])
        );
    }
    let retention = &r["retention"];
    println!(
        "retention: last deleted {}; next purge {}; legal holds in force {}",
        text(&retention["last_deleted_at"]),
        text(&retention["next_purge_at"]),
        retention["holds"]
    );
}
