//! Export throughput: a snapshot of every observation for one consumer, as
//! FHIR NDJSON and as CSV, each signed, against a bare `SELECT` of the same
//! observations timed in the same run.
//!
//! ```text
//! cargo bench --bench export [-- --observations 1000000]
//! ```
//!
//! The ledger is loaded by `dropgate ingest` from the shipped configuration,
//! with two snapshot schedules added for the consumer it ships with. Progress
//! goes to stderr, the report to stdout. Missed targets are reported, not fatal.

#[allow(dead_code)]
mod common;
#[allow(dead_code)]
#[path = "../tests/harness.rs"]
mod harness;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use serde_json::Value;

use common::{progress, run_measured};
use harness::Deployment;

/// Observations per NEWS2 row of the harness's files: seven measurements and the total.
const OBSERVATIONS_PER_ROW: u64 = 8;
const RESIDENTS: u32 = 5_000;
const TARGET_NDJSON_PER_S: f64 = 500_000.0;
const TARGET_PEAK_RSS_MIB: f64 = 100.0;

const BENCH_SCHEDULES: &str = r#"
[schedules.bench-fhir]
consumer = "demo-hospital"
cron = "0 0 1 1 *"
mode = "snapshot"
formats = ["fhir_ndjson"]
records = ["service_user", "observations"]
catch_up = "skip"

[schedules.bench-csv]
consumer = "demo-hospital"
cron = "0 0 1 1 *"
mode = "snapshot"
formats = ["csv"]
records = ["service_user", "observations"]
catch_up = "skip"
"#;

fn main() -> ExitCode {
    common::exit_code(run())
}

struct Export {
    observations: u64,
    bytes: u64,
    wall: Duration,
    peak_rss_mib: f64,
}

fn run() -> Result<()> {
    let options = common::parse_options(
        "export",
        std::env::args().skip(1),
        &[("--observations", 1_000_000)],
        &[],
    )?;
    let rows = options
        .number("--observations")
        .div_ceil(OBSERVATIONS_PER_ROW);
    let scratch = common::scratch("export-")?;
    println!("dropgate export benchmark");
    println!("=========================");
    println!("scratch    {}", scratch.path().display());

    let config = harness::SHIPPED_CONFIG
        .replace("listen = \"127.0.0.1:2222\"", "listen = \"127.0.0.1:0\"")
        + BENCH_SCHEDULES;
    let deployment = Deployment::with_config(&config);
    progress(format!("loading {rows} NEWS2 rows"));
    let rows_u32 = u32::try_from(rows)?;
    let input = deployment.write_input(
        "news2_export_bench.csv",
        harness::news2_csv(rows_u32, RESIDENTS, 0).as_bytes(),
    );
    let out = deployment.ingest(&[&input]);
    ensure!(
        out.status.success(),
        "ingest failed: {}",
        harness::text(&out.stderr)
    );
    let observations: u64 = deployment
        .count("SELECT count(*) FROM observation_records")
        .try_into()?;
    println!(
        "ledger     {} observations of {} residents",
        observations,
        deployment.count("SELECT count(*) FROM service_users")
    );
    common::sync()?;

    progress("baseline: bare SELECT of every observation");
    let bare = bare_select(&deployment)?;
    ensure!(bare.0 == observations, "the SELECT read {} rows", bare.0);
    progress("export as FHIR NDJSON");
    let fhir = export(&deployment, "bench-fhir", "Observation")?;
    common::sync()?;
    progress("export as CSV");
    let csv = export(&deployment, "bench-csv", "observations")?;

    let rate = |n: u64, wall: Duration| n as f64 / wall.as_secs_f64();
    let bare_rate = rate(bare.0, bare.1);
    println!();
    println!(
        "bare SELECT   {} observations in {:.3} s → {:.0} observations/s",
        bare.0,
        bare.1.as_secs_f64(),
        bare_rate
    );
    for (name, e) in [("FHIR NDJSON", &fhir), ("CSV", &csv)] {
        ensure!(
            e.observations == observations,
            "{name}: {} observations exported, {observations} loaded",
            e.observations
        );
        println!(
            "{name:<13} {} observations in {:.3} s → {:.0} observations/s, {:.1} MB/s written, {:.2} of the bare SELECT's rate; peak RSS {:.1} MiB",
            e.observations,
            e.wall.as_secs_f64(),
            rate(e.observations, e.wall),
            common::mb_per_s(e.bytes, e.wall),
            rate(e.observations, e.wall) / bare_rate,
            e.peak_rss_mib
        );
    }
    println!();
    let ndjson_rate = rate(fhir.observations, fhir.wall);
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    println!(
        "target: FHIR NDJSON at least {TARGET_NDJSON_PER_S:.0} observations/s: {} ({ndjson_rate:.0})",
        verdict(ndjson_rate >= TARGET_NDJSON_PER_S)
    );
    let peak = fhir.peak_rss_mib.max(csv.peak_rss_mib);
    println!(
        "target: peak RSS under {TARGET_PEAK_RSS_MIB:.0} MiB: {} ({peak:.1} MiB)",
        verdict(peak < TARGET_PEAK_RSS_MIB)
    );
    Ok(())
}

/// Every observation set as stored (one row, its values inline) with its
/// service user, each column read: the rows an export reads, without turning
/// them into anything. Counts the observations (the values present).
fn bare_select(deployment: &Deployment) -> Result<(u64, Duration)> {
    let conn = deployment.ledger();
    let clock = Instant::now();
    let mut stmt = conn.prepare(
        "SELECT s.id, s.detail_id, s.observed_at, s.file_id, s.line, s.respiratory_rate,
                s.oxygen_saturation, s.supplemental_oxygen, s.systolic_bp, s.diastolic_bp,
                s.heart_rate, s.consciousness, s.body_temperature, s.news2_score,
                u.local_id, u.nhs_number
         FROM observation_sets s JOIN service_users u ON u.detail_id = s.detail_id",
    )?;
    let mut rows = stmt.query([])?;
    let (mut observations, mut bytes) = (0u64, 0usize);
    while let Some(row) = rows.next()? {
        for i in 0..16 {
            match row.get_ref(i)? {
                rusqlite::types::ValueRef::Text(t) => bytes += t.len(),
                rusqlite::types::ValueRef::Null => continue,
                _ => {}
            }
            if (5..14).contains(&i) {
                observations += 1;
            }
        }
    }
    std::hint::black_box(bytes);
    Ok((observations, clock.elapsed()))
}

/// `dropgate export SCHEDULE --json`, timed; the observations are the count
/// of the output file of type `observation_type`.
fn export(deployment: &Deployment, schedule: &str, observation_type: &str) -> Result<Export> {
    let run = run_measured(deployment.command(&["export", schedule, "--json"]))?;
    ensure!(
        run.status.success(),
        "export failed: {}{}",
        run.stdout,
        run.stderr
    );
    let made: Value = serde_json::from_str(&run.stdout)?;
    let output = made["manifest"]["output"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let observations = output
        .iter()
        .find(|e| e["type"] == observation_type)
        .and_then(|e| e["count"].as_u64())
        .unwrap_or(0);
    let bytes = output.iter().filter_map(|e| e["bytes"].as_u64()).sum();
    Ok(Export {
        observations,
        bytes,
        wall: run.wall,
        peak_rss_mib: run.peak_rss_kib as f64 / 1024.0,
    })
}
