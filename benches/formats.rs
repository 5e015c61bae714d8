//! Formats: what validating and mapping cost against a bare parse of the
//! same file, timed in the same run, for a wide social-care CSV and a large
//! XML file of transfer summaries.
//!
//! ```text
//! cargo bench --bench formats [-- --rows 1000000 --xml-mib 1024 --runs 3 --keep]
//! ```
//!
//! The bare parse and `schema check` are timed in turn `--runs` times; the
//! ratio judged is the median of the runs' ratios, each of a bare parse and
//! the check right after it, so a slow spell of the machine weighs on both.
//!
//! `--keep` leaves the files and the deployment under
//! `target/bench-scratch/`, to profile a command on them.
//!
//! 1. A 49-column client-level return (ten columns as the sample feed has
//!    them, with its conditional, comparison and age rules, and 39 more typed
//!    columns): the `csv` crate reading every record, against `dropgate schema
//!    check` (read and validate) and `dropgate ingest` (read, validate, map
//!    and load; the feed maps each row to a service user and a care
//!    transaction).
//! 2. Red-bag transfer summaries in namespaced XML: quick-xml reading every
//!    event, against the same two commands.
//!
//! Progress goes to stderr, the report to stdout. Missed targets are
//! reported, not fatal.

#[allow(dead_code)]
mod common;
#[allow(dead_code)]
#[path = "../tests/harness.rs"]
mod harness;

use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};

use common::{mb_per_s, progress, run_measured};
use harness::Deployment;

/// Validation (and mapping) may cost this many times the bare parse.
const TARGET_RATIO: f64 = 4.0;
/// Columns of the wide file beyond the sample feed's ten.
const EXTRA_COLUMNS: usize = 39;
const CLIENTS: u64 = 50_000;

fn main() -> ExitCode {
    common::exit_code(run())
}

fn run() -> Result<()> {
    let options = common::parse_options(
        "formats",
        std::env::args().skip(1),
        &[("--rows", 1_000_000), ("--xml-mib", 1024), ("--runs", 3)],
        &["--keep"],
    )?;
    let scratch = common::scratch("formats-")?;
    let fixtures = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/feeds.toml"),
    )?;
    let config = format!(
        "{}\n{}\n{}",
        harness::fast(harness::SHIPPED_CONFIG),
        wide_feed(&fixtures),
        xml_feed(&fixtures)
    );
    let deployment = Deployment::with_config(&config);
    let check = deployment.dg(&["check-config"]);
    ensure!(
        check.status.success(),
        "the bench's feeds: {}",
        harness::text(&check.stderr)
    );
    println!("dropgate formats benchmark");
    println!("==========================");
    println!("scratch    {}", scratch.path().display());

    let csv_path = scratch.path().join("clt_wide.csv");
    progress(format!(
        "writing {} rows of {} columns",
        options.number("--rows"),
        10 + EXTRA_COLUMNS
    ));
    let csv_rows = write_wide_csv(&csv_path, options.number("--rows"))?;
    let xml_path = scratch.path().join("redbag_bench.xml");
    progress(format!(
        "writing {} MiB of transfer summaries",
        options.number("--xml-mib")
    ));
    let xml_rows = write_xml(&xml_path, options.number("--xml-mib") << 20)?;
    common::sync()?;

    let mut ratios = Vec::new();
    for (label, feed, path, rows, bare) in [
        (
            "49-column CSV",
            "clt",
            &csv_path,
            csv_rows,
            bare_csv as fn(&Path) -> Result<u64>,
        ),
        ("XML", "redbag", &xml_path, xml_rows, bare_xml),
    ] {
        let bytes = std::fs::metadata(path)?.len();
        let mut runs = Vec::new();
        for run in 1..=options.number("--runs").max(1) {
            progress(format!(
                "{label}: bare parse, then dropgate schema check ({run})"
            ));
            let clock = Instant::now();
            let parsed = bare(path)?;
            let bare_wall = clock.elapsed();
            ensure!(
                parsed == rows,
                "{label}: the bare parse found {parsed} records, not {rows}"
            );
            let checked = run_measured(deployment.command(&[
                "schema",
                "check",
                feed,
                path.to_str().expect("a UTF-8 path"),
            ]))?;
            ensure!(
                checked.status.success(),
                "{label}: schema check failed: {}{}",
                checked.stdout,
                checked.stderr
            );
            runs.push((bare_wall, checked));
        }
        let ratio = |(bare, checked): &(Duration, common::Measured)| {
            checked.wall.as_secs_f64() / bare.as_secs_f64()
        };
        runs.sort_by(|a, b| ratio(a).total_cmp(&ratio(b)));
        let each: Vec<String> = runs.iter().map(|r| format!("{:.2}×", ratio(r))).collect();
        let (bare_wall, checked) = &runs[runs.len() / 2];
        let bare_wall = *bare_wall;
        progress(format!("{label}: dropgate ingest"));
        let ingested = run_measured(deployment.command(&[
            "ingest",
            "--source",
            "demo-carehome-drop",
            path.to_str().expect("a UTF-8 path"),
        ]))?;
        ensure!(
            ingested.status.success(),
            "{label}: ingest failed: {}{}",
            ingested.stdout,
            ingested.stderr
        );
        println!();
        println!("{label}: {rows} records, {:.1} MB", bytes as f64 / 1e6);
        let line = |what: &str, wall: Duration, rss: Option<u64>| {
            println!(
                "   {what:<30} {:>8.3} s  {:>12.0} records/s  {:>8.1} MB/s  {:>6.2}× the bare parse{}",
                wall.as_secs_f64(),
                rows as f64 / wall.as_secs_f64(),
                mb_per_s(bytes, wall),
                wall.as_secs_f64() / bare_wall.as_secs_f64(),
                rss.map(|k| format!("  peak RSS {:.1} MiB", k as f64 / 1024.0))
                    .unwrap_or_default()
            );
        };
        line("bare parse", bare_wall, None);
        line(
            "schema check (… validate, map)",
            checked.wall,
            Some(checked.peak_rss_kib),
        );
        println!(
            "   {:<30} the median of {}, each against the bare parse just before it",
            "",
            each.join(", ")
        );
        line(
            "ingest (… map, load)",
            ingested.wall,
            Some(ingested.peak_rss_kib),
        );
        ratios.push((label, checked.wall.as_secs_f64() / bare_wall.as_secs_f64()));
    }
    println!();
    for (label, ratio) in ratios {
        let verdict = if ratio <= TARGET_RATIO {
            "met"
        } else {
            "MISSED"
        };
        println!(
            "target: {label} validation at most {TARGET_RATIO}× the bare parse: {verdict} ({ratio:.2}×)"
        );
    }
    if options.flag("--keep") {
        progress(format!("keeping {}", scratch.keep().display()));
        progress(format!("keeping {}", deployment.dir.keep().display()));
    }
    Ok(())
}

/// The sample client-level feed, without its per-file uniqueness (checked
/// for at most 500,000 records), with 39 more typed columns; as the sample
/// does, it maps each row to a service user and a care transaction.
fn wide_feed(fixtures: &str) -> String {
    let start = fixtures.find("[feeds.clt]").expect("the clt feed");
    let end = fixtures[start..]
        .find("\n# A demographic trace")
        .map_or(fixtures.len(), |e| start + e);
    let mut feed = fixtures[start..end]
        .replace(
            "unique = [[\"Client ID\", \"Event Type\", \"Event Start Date\"]]\n",
            "",
        )
        .replace(
            "values_file = \"clt_gender.csv\"",
            "values = [\"1\", \"2\", \"9\", \"X\"]",
        )
        .replace(
            "translate_file = \"clt_event_types.csv\"",
            "translate = { Request = \"referral\", Assessment = \"assessment\", Service = \"service_event\", Review = \"review\" }",
        );
    for i in 0..EXTRA_COLUMNS {
        let (kind, extra) = match i % 4 {
            0 => ("string", "max_length = 40"),
            1 => ("integer", "min = 0\nmax = 100000"),
            2 => ("date", "format = \"%d/%m/%Y\""),
            _ => ("code", "values = [\"A\", \"B\", \"C\", \"D\"]"),
        };
        feed.push_str(&format!(
            "\n[[feeds.clt.columns]]\nname = \"Field {}\"\ntype = \"{kind}\"\n{extra}\n",
            i + 11
        ));
    }
    feed
}

/// The red-bag feed of the sample feeds.
fn xml_feed(fixtures: &str) -> String {
    let start = fixtures.find("[feeds.redbag]").expect("the red-bag feed");
    let end = fixtures[start..]
        .find("\n# Care notes")
        .map_or(fixtures.len(), |e| start + e);
    fixtures[start..end].to_string()
}

/// Valid rows of the wide return, every event type in turn; returns the rows.
fn write_wide_csv(path: &Path, rows: u64) -> Result<u64> {
    let mut out = BufWriter::with_capacity(1 << 20, File::create(path)?);
    let mut header = String::from(
        "Client ID,NHS Number,Date of Birth (DoB),Gender: Code,Postcode,Event Type,Event Start Date,Event End Date,Method of Assessment,Weekly Cost (£)",
    );
    for i in 0..EXTRA_COLUMNS {
        header.push_str(&format!(",Field {}", i + 11));
    }
    // The sample feed reads Windows-1252: the pound sign is one byte.
    out.write_all(&header.chars().map(|c| c as u32 as u8).collect::<Vec<u8>>())?;
    out.write_all(b"\n")?;
    let mut extra = String::new();
    for i in 0..EXTRA_COLUMNS {
        extra.push(',');
        extra.push_str(match i % 4 {
            0 => "free text of a sort",
            1 => "4242",
            2 => "17/03/2026",
            _ => "C",
        });
    }
    for row in 0..rows {
        let client = row % CLIENTS;
        let day = 1 + row % 28;
        let event = match row % 4 {
            0 => format!("Request,{day:02}/01/2026,{day:02}/01/2026,,"),
            1 => format!("Assessment,{day:02}/01/2026,{day:02}/02/2026,Telephone,"),
            2 => format!("Service,{day:02}/01/2026,,,412.50"),
            _ => format!("Review,{day:02}/01/2026,{day:02}/03/2026,,"),
        };
        writeln!(
            out,
            "C{client:07},{},0{}/0{}/1950,{},SW1A 1AA,{event}{extra}",
            harness::nhs_number(u32::try_from(client)?),
            1 + client % 9,
            1 + client % 9,
            ["1", "2", "9", "X"][(client % 4) as usize],
        )?;
    }
    out.flush()?;
    Ok(rows)
}

/// Red-bag summaries of 100 residents each until `bytes` are written;
/// returns the residents.
fn write_xml(path: &Path, bytes: u64) -> Result<u64> {
    let mut out = BufWriter::with_capacity(1 << 20, File::create(path)?);
    writeln!(
        out,
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<bag:RedBag xmlns:bag=\"urn:example:red-bag:1\">\n<bag:Residents>"
    )?;
    let mut written = 0u64;
    let mut residents = 0u64;
    while written < bytes {
        let client = residents % CLIENTS;
        let entry = format!(
            "<bag:Resident localId=\"R{client:07}\"><bag:NHSNumber>{}</bag:NHSNumber><bag:Name><bag:Family>O&apos;Neill</bag:Family><bag:Given>Ann</bag:Given></bag:Name><bag:BirthDate>1940-02-03</bag:BirthDate><bag:Gender code=\"{}\"/></bag:Resident>\n",
            harness::nhs_number(u32::try_from(client)?).replace(' ', ""),
            ["0", "1", "2", "9"][(client % 4) as usize],
        );
        out.write_all(entry.as_bytes())?;
        written += entry.len() as u64;
        residents += 1;
    }
    writeln!(out, "</bag:Residents>\n</bag:RedBag>")?;
    out.flush()?;
    Ok(residents)
}

/// Every record read by the `csv` crate, every field touched.
fn bare_csv(path: &Path) -> Result<u64> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(BufReader::with_capacity(1 << 16, File::open(path)?));
    let mut record = csv::ByteRecord::new();
    let (mut rows, mut bytes) = (0u64, 0usize);
    while reader.read_byte_record(&mut record)? {
        rows += 1;
        bytes += record.iter().map(<[u8]>::len).sum::<usize>();
    }
    std::hint::black_box(bytes);
    Ok(rows)
}

/// Every event read by quick-xml; the records are the resident elements.
fn bare_xml(path: &Path) -> Result<u64> {
    use quick_xml::events::Event;
    let mut reader =
        quick_xml::Reader::from_reader(BufReader::with_capacity(1 << 16, File::open(path)?));
    let mut buf = Vec::new();
    let (mut rows, mut bytes) = (0u64, 0usize);
    loop {
        match reader.read_event_into(&mut buf)? {
            Event::Start(e) if e.local_name().as_ref() == b"Resident" => rows += 1,
            Event::Text(t) => bytes += t.len(),
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    std::hint::black_box(bytes);
    Ok(rows)
}
