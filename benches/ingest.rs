//! End-to-end throughput of dropgate, with baselines measured on the same data.
//!
//! ```text
//! cargo bench --bench ingest [-- --rows 1000000 --small-files 1000 --keep]
//! ```
//!
//! `--keep` leaves the deployments under `target/bench-scratch/` for
//! inspection or profiling by hand.
//!
//! 1. `dropgate ingest` of one large age-encrypted NEWS2 file (wall time, peak RSS);
//! 2. the same work done by the parts alone: `age -d`, a bare `csv` parse, and a
//!    bare SQLite insert into the real schema;
//! 3. reads of the loaded ledger: a person with every detail (`patients find`),
//!    and every observation after a watermark (what an incremental export asks);
//! 4. many small files dropped into a running `dropgate run`.
//!
//! Deployments are throw-away folders built from the shipped configuration, so
//! the numbers describe what users get. Progress goes to stderr, the report to
//! stdout. Missed targets are reported, not fatal; a file that does not load is.

#[allow(dead_code)]
mod common;
#[allow(dead_code)]
#[path = "../tests/harness.rs"]
mod harness;
// sshd.rs's own `#[test]`s, which use some of its imports, are not compiled here.
#[allow(dead_code, unused_imports)]
#[path = "../tests/sshd.rs"]
mod sshd;

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail, ensure};
use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::{Connection, TransactionBehavior, params};

use common::{POLL, progress, run_measured};
use dropgate::domain::news2::{self, Consciousness, ObservationSet};
use dropgate::ledger::{Ledger, SystemClock};
use dropgate::records::observations::{Code, Vital};
use harness::Deployment;
use sshd::Sshd;

const HEADER: &str = "resident_id,nhs_number,family_name,given_name,date_of_birth,gender,observed_at,respiration_rate,spo2,on_oxygen,systolic_bp,pulse,consciousness,temperature";
const SOURCE: &str = "demo-carehome-drop";
const PARTNER: &str = "demo-carehome";
const RESIDENTS: u16 = 10_000;
const FIRST_OBSERVATION: &str = "2026-11-22T08:00:00Z";
const ACVPU: [&str; 5] = ["A", "C", "V", "P", "U"];
const SMALL_FILE_BYTES: usize = 4096;

const TARGET_RECORDS_PER_S: f64 = 300_000.0;
const TARGET_SHARE_OF_BARE: f64 = 0.5;
const TARGET_TIMES_ROW_PER_RECORD: f64 = 2.0;
const TARGET_PEAK_RSS_MIB: f64 = 100.0;
const TARGET_SMALL_FILES_PER_S: f64 = 500.0;
/// Small files through `dropgate run` against OpenSSH `sftp` puts into sshd.
const TARGET_SHARE_OF_OPENSSH: f64 = 1.0;
/// The cipher the OpenSSH baseline uses, as the SFTP benchmark does.
const CIPHER: &str = "aes256-gcm@openssh.com";

const LOAD_TIMEOUT: Duration = Duration::from_secs(120);
fn main() -> ExitCode {
    common::exit_code(run())
}

fn run() -> Result<()> {
    let options = Options::parse(std::env::args().skip(1))?;
    // The shipped configuration, its SFTP server on a port chosen at run time.
    let shipped_config =
        &harness::SHIPPED_CONFIG.replace("listen = \"127.0.0.1:2222\"", "listen = \"127.0.0.1:0\"");
    // The deployments land here, on the project's disk.
    let scratch = common::scratch("ingest-")?;

    println!("dropgate ingest benchmark");
    println!("=========================");
    println!("binary     {}", env!("CARGO_BIN_EXE_dropgate"));
    println!(
        "scratch    {} (MB = 10^6 bytes, MiB = 2^20 bytes)",
        scratch.path().display()
    );
    println!(
        "machine    {} CPUs available",
        thread::available_parallelism().map_or(1, |n| n.get())
    );

    let deployment = Deployment::with_config(shipped_config);
    let recipient = deployment.recipient.clone();
    let data_dir = folder(&deployment, "data")?;
    let plain = data_dir.join("news2_bench.csv");
    let cipher = data_dir.join("news2_bench.csv.age");
    progress(format!("generating {} rows", grouped(options.rows)));
    let data = generate_large_file(&plain, options.rows)?;
    progress("encrypting with the age CLI");
    age_encrypt(&recipient, &plain, &cipher)?;
    // Written back now, so the kernel does not flush these pages in the
    // middle of a measurement.
    File::open(&plain)?.sync_all()?;
    File::open(&cipher)?.sync_all()?;
    let plain_bytes = fs::metadata(&plain)?.len();
    let cipher_bytes = fs::metadata(&cipher)?.len();
    println!(
        "input      {} NEWS2 rows, {} distinct residents; plaintext {}, ciphertext {}",
        grouped(options.rows),
        grouped(data.distinct_residents),
        megabytes(plain_bytes),
        megabytes(cipher_bytes)
    );

    progress("dropgate ingest");
    let ingest = measure_ingest(&deployment, &cipher, &data)?;
    report_ingest(&ingest, cipher_bytes);

    progress("baseline: age -d");
    let age_wall = age_decrypt(&deployment.path("config/keys/age-identity.txt"), &cipher)?;
    progress("baseline: csv parse");
    let (csv_rows, csv_wall) = csv_parse(&plain)?;
    ensure!(
        csv_rows == options.rows,
        "the csv crate read {csv_rows} rows, expected {}",
        options.rows
    );
    progress("baseline: bare SQLite insert");
    let bare = bare_insert(&folder(&deployment, "bare")?.join("ledger.db"), &data)?;
    ensure!(
        bare.records == ingest.records,
        "the bare insert wrote {} records, dropgate {}",
        bare.records,
        ingest.records
    );
    progress("baseline: one plain row per record");
    let row_per_record =
        bare_row_per_record(&folder(&deployment, "plain")?.join("records.db"), &data)?;
    let baselines = Baselines {
        age_wall,
        csv_wall,
        bare,
        row_per_record,
    };
    report_baselines(&baselines, &ingest, plain_bytes, cipher_bytes);
    progress("reads of the loaded ledger");
    let reads = measure_reads(&deployment, &data)?;
    report_reads(&reads);
    keep_or_drop(deployment, options.keep);

    let small_config = shipped_config
        .replacen("min_age = \"500ms\"", "min_age = \"100ms\"", 1)
        .replacen("check_interval = \"200ms\"", "check_interval = \"50ms\"", 1);
    ensure!(
        small_config.contains("min_age = \"100ms\"")
            && small_config.contains("check_interval = \"50ms\""),
        "the shipped config no longer has `min_age = \"500ms\"` and `check_interval = \"200ms\"` to shorten"
    );
    let small = measure_small_files(
        &small_config,
        options.keep,
        &data.residents,
        options.small_files,
    )?;
    report_small_files(&small);

    report_summary(&ingest, &baselines, &small, cipher_bytes);
    if options.keep {
        // The kept deployments are inside it.
        let _ = scratch.keep();
    }
    Ok(())
}

struct Options {
    rows: u64,
    small_files: usize,
    keep: bool,
}

impl Options {
    fn parse(args: impl Iterator<Item = String>) -> Result<Options> {
        let options = common::parse_options(
            "ingest",
            args,
            &[("--rows", 1_000_000), ("--small-files", 1_000)],
            &["--keep"],
        )?;
        Ok(Options {
            rows: options.number("--rows"),
            small_files: usize::try_from(options.number("--small-files"))?,
            keep: options.flag("--keep"),
        })
    }
}

// ---------------------------------------------------------------------------
// Test data

/// xorshift64*: deterministic across runs and platforms, no dependency.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Uniform in `lo..=hi`.
    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
}

struct Resident {
    id: String,
    nhs_number: String,
    family_name: &'static str,
    given_name: &'static str,
    date_of_birth: String,
    gender: &'static str,
}

const FAMILY_NAMES: &[&str] = &[
    "Smith", "Jones", "Taylor", "Brown", "Williams", "Wilson", "Johnson", "Davies", "Patel",
    "Robinson", "Wright", "Thompson", "Evans", "Walker", "White", "Roberts", "Green", "Hall",
    "O'Brien", "Khan", "Lewis", "Clarke", "Jackson", "Wood",
];
const GIVEN_NAMES: &[&str] = &[
    "Margaret", "Joan", "Dorothy", "Patricia", "Jean", "Barbara", "Sheila", "Eileen", "John",
    "David", "Peter", "Michael", "Brian", "Kenneth", "Ronald", "Derek", "Irene", "Doris", "Arthur",
    "Gwen", "Harold", "Iris", "Sunita", "Aled",
];

fn residents(rng: &mut Rng) -> Vec<Resident> {
    // A stride coprime with 10^6 visits every middle once in a scattered
    // order, so numbers are distinct without a set.
    let middles = (0u32..1_000_000).map(|i| (i as u64 * 7919 % 1_000_000) as u32);
    middles
        .filter_map(dropgate::domain::nhs_number::test_range_number)
        .take(usize::from(RESIDENTS))
        .enumerate()
        .map(|(i, nhs_number)| Resident {
            id: format!("R{i:06}"),
            nhs_number,
            family_name: rng.pick(FAMILY_NAMES),
            given_name: rng.pick(GIVEN_NAMES),
            date_of_birth: format!(
                "{}-{:02}-{:02}",
                rng.between(1925, 1965),
                rng.between(1, 12),
                rng.between(1, 28)
            ),
            gender: rng.pick(&["1", "1", "2", "2", "2", "0", "9"]),
        })
        .collect()
}

/// One NEWS2 observation set, compact so a million fit in memory for the
/// bare-insert baseline.
#[derive(Clone, Copy)]
struct Reading {
    resident: u16,
    at: i64,
    respiration_rate: u8,
    spo2: u8,
    on_oxygen: bool,
    systolic_bp: u8,
    pulse: u8,
    consciousness: u8,
    temperature_tenths: u16,
}

/// An observation as dropgate stores it: code id, numeric or text value.
type Observation = (i64, Option<f64>, Option<&'static str>);

impl Reading {
    fn temperature(&self) -> f64 {
        f64::from(self.temperature_tenths) / 10.0
    }

    fn news2_total(&self) -> f64 {
        let set = ObservationSet {
            respiration_rate: f64::from(self.respiration_rate),
            spo2: f64::from(self.spo2),
            on_oxygen: self.on_oxygen,
            systolic_bp: f64::from(self.systolic_bp),
            pulse: f64::from(self.pulse),
            consciousness: Consciousness::from_code(ACVPU[usize::from(self.consciousness)])
                .expect("ACVPU codes are known"),
            temperature: self.temperature(),
        };
        f64::from(news2::score(&set).total)
    }

    /// The eight observations dropgate derives from this row, in its order.
    fn observations(&self, news2_total: f64) -> [Observation; 8] {
        let number = |vital: Vital, n: f64| (Code::Vital(vital).id(), Some(n), None);
        [
            number(Vital::RespirationRate, f64::from(self.respiration_rate)),
            number(Vital::Spo2, f64::from(self.spo2)),
            number(Vital::OnOxygen, f64::from(u8::from(self.on_oxygen))),
            number(Vital::SystolicBp, f64::from(self.systolic_bp)),
            number(Vital::Pulse, f64::from(self.pulse)),
            (
                Code::Vital(Vital::Consciousness).id(),
                None,
                Some(ACVPU[usize::from(self.consciousness)]),
            ),
            number(Vital::Temperature, self.temperature()),
            (Code::News2Score.id(), Some(news2_total), None),
        ]
    }

    fn write_csv(&self, out: &mut impl Write, residents: &[Resident]) -> io::Result<()> {
        let r = &residents[usize::from(self.resident)];
        writeln!(
            out,
            "{},{},{},{},{},{},{},{},{},{},{},{},{},{}.{}",
            r.id,
            r.nhs_number,
            r.family_name,
            r.given_name,
            r.date_of_birth,
            r.gender,
            timestamp(self.at),
            self.respiration_rate,
            self.spo2,
            if self.on_oxygen { "Y" } else { "N" },
            self.systolic_bp,
            self.pulse,
            ACVPU[usize::from(self.consciousness)],
            self.temperature_tenths / 10,
            self.temperature_tenths % 10
        )
    }
}

/// Written exactly as dropgate writes `observed_at`.
fn timestamp(unix_seconds: i64) -> String {
    DateTime::<Utc>::from_timestamp(unix_seconds, 0)
        .expect("generated times are in range")
        .to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Readings in time order, every value inside the `news2` feed's ranges.
struct Generator {
    rng: Rng,
    clock: i64,
}

impl Generator {
    fn new(seed: u64) -> Generator {
        Generator {
            rng: Rng(seed),
            clock: DateTime::parse_from_rfc3339(FIRST_OBSERVATION)
                .expect("a valid start time")
                .timestamp(),
        }
    }

    fn reading(&mut self) -> Reading {
        let rng = &mut self.rng;
        self.clock += rng.between(1, 5) as i64;
        Reading {
            resident: rng.below(u64::from(RESIDENTS)) as u16,
            at: self.clock,
            respiration_rate: rng.between(8, 30) as u8,
            spo2: rng.between(85, 100) as u8,
            on_oxygen: rng.below(10) == 0,
            systolic_bp: rng.between(80, 200) as u8,
            pulse: rng.between(40, 140) as u8,
            consciousness: if rng.below(20) == 0 {
                rng.between(1, 4) as u8
            } else {
                0
            },
            temperature_tenths: rng.between(340, 400) as u16,
        }
    }
}

struct DataSet {
    residents: Vec<Resident>,
    readings: Vec<Reading>,
    distinct_residents: u64,
}

impl DataSet {
    /// dropgate writes a service user on a resident's first row in a file,
    /// and eight observations for every row.
    fn expected_records(&self) -> u64 {
        self.distinct_residents + 8 * self.readings.len() as u64
    }
}

fn generate_large_file(path: &Path, rows: u64) -> Result<DataSet> {
    let residents = residents(&mut Rng(0x5eed_0001));
    let mut generator = Generator::new(0x5eed_0002);
    let mut seen = vec![false; residents.len()];
    let mut readings = Vec::with_capacity(usize::try_from(rows)?);
    let mut out = BufWriter::with_capacity(1 << 20, File::create(path)?);
    writeln!(out, "{HEADER}")?;
    for _ in 0..rows {
        let reading = generator.reading();
        reading.write_csv(&mut out, &residents)?;
        seen[usize::from(reading.resident)] = true;
        readings.push(reading);
    }
    out.flush()?;
    Ok(DataSet {
        residents,
        readings,
        distinct_residents: seen.iter().filter(|s| **s).count() as u64,
    })
}

// ---------------------------------------------------------------------------
// Deployments and child processes

fn age_encrypt(recipient: &str, plain: &Path, cipher: &Path) -> Result<()> {
    let out = Command::new("age")
        .args(["-r", recipient, "-o"])
        .arg(cipher)
        .arg(plain)
        .output()
        .context("running the `age` CLI (is it installed?)")?;
    ensure!(
        out.status.success(),
        "age -r failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// 1. dropgate ingest

struct Ingest {
    rows: u64,
    records: u64,
    wall: Duration,
    peak_rss_mib: f64,
    /// Process start to the file being recorded as received: start-up, then
    /// the spool copy with SHA-256 and fsync.
    landing: Duration,
    /// From then to exit: decrypt, validate, map, load, commit, archive.
    processing: Duration,
}

fn measure_ingest(deployment: &Deployment, cipher: &Path, data: &DataSet) -> Result<Ingest> {
    let mut command = deployment.command(&["ingest", "--source", SOURCE]);
    command.arg(cipher);
    let run = run_measured(command)?;
    ensure!(
        run.status.success(),
        "dropgate ingest exited with {}:\n{}{}",
        run.status,
        run.stdout,
        run.stderr
    );
    let (rows, records) = parse_loaded(&run.stdout)
        .with_context(|| format!("dropgate ingest did not report `loaded`:\n{}", run.stdout))?;
    ensure!(
        rows == data.readings.len() as u64 && records == data.expected_records(),
        "dropgate loaded {rows} rows and {records} records; expected {} and {}",
        data.readings.len(),
        data.expected_records()
    );
    let received_at: String = deployment.ledger().query_row(
        "SELECT received_at FROM files ORDER BY id DESC LIMIT 1",
        [],
        |r| r.get(0),
    )?;
    let started = DateTime::<Utc>::from(run.started);
    let landing = (parse_time(&received_at)? - started)
        .to_std()
        .unwrap_or_default();
    Ok(Ingest {
        rows,
        records,
        wall: run.wall,
        peak_rss_mib: run.peak_rss_kib as f64 / 1024.0,
        landing,
        processing: run.wall.saturating_sub(landing),
    })
}

/// Rows and records from `ID\tNAME\tloaded\tN rows, M records[, ...]`.
fn parse_loaded(stdout: &str) -> Option<(u64, u64)> {
    let fields: Vec<&str> = stdout
        .lines()
        .map(|l| l.split('\t').collect::<Vec<_>>())
        .find(|f| f.get(2) == Some(&"loaded"))?;
    let (rows, rest) = fields.get(3)?.split_once(", ")?;
    let rows = rows.strip_suffix(" rows")?.parse().ok()?;
    let records = rest.split(' ').next()?.parse().ok()?;
    Some((rows, records))
}

fn parse_time(text: &str) -> Result<DateTime<Utc>> {
    Ok(DateTime::parse_from_rfc3339(text)
        .with_context(|| format!("ledger time `{text}`"))?
        .with_timezone(&Utc))
}

fn report_ingest(ingest: &Ingest, cipher_bytes: u64) {
    let s = ingest.wall.as_secs_f64();
    println!();
    println!("1. dropgate ingest (one .csv.age file, fresh ledger, release build)");
    println!(
        "   loaded          {} rows, {} records, exit 0",
        grouped(ingest.rows),
        grouped(ingest.records)
    );
    println!("   wall time       {s:.3} s");
    println!(
        "   throughput      {} rows/s, {} records/s, {:.1} MB/s of ciphertext",
        grouped_rate(ingest.rows as f64 / s),
        grouped_rate(ingest.records as f64 / s),
        cipher_bytes as f64 / 1e6 / s
    );
    println!(
        "   peak RSS        {:.1} MiB (VmHWM sampled every {} ms)",
        ingest.peak_rss_mib,
        POLL.as_millis()
    );
    println!(
        "   phases          {:.3} s start-up and landing (copy, SHA-256, fsync) + {:.3} s decrypt/validate/map/load/commit",
        ingest.landing.as_secs_f64(),
        ingest.processing.as_secs_f64()
    );
}

// ---------------------------------------------------------------------------
// 2. Baselines

struct Bare {
    records: u64,
    wall: Duration,
}

struct Baselines {
    age_wall: Duration,
    csv_wall: Duration,
    bare: Bare,
    row_per_record: Bare,
}

fn age_decrypt(identity: &Path, cipher: &Path) -> Result<Duration> {
    let clock = Instant::now();
    let out = Command::new("age")
        .arg("-d")
        .arg("-i")
        .arg(identity)
        .arg(cipher)
        .stdout(Stdio::null())
        .output()?;
    let wall = clock.elapsed();
    ensure!(
        out.status.success(),
        "age -d failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(wall)
}

fn csv_parse(plain: &Path) -> Result<(u64, Duration)> {
    let clock = Instant::now();
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_path(plain)?;
    let mut record = csv::ByteRecord::new();
    let mut rows = 0;
    while reader.read_byte_record(&mut record)? {
        rows += 1;
    }
    Ok((rows, clock.elapsed()))
}

/// The records dropgate would write, inserted with nothing else in the way:
/// the real schema, indexes and pragmas (via `Ledger::open`), prepared
/// statements, one transaction. Timestamps and NEWS2 totals are computed
/// before the clock starts, so only binding, stepping and the commit count.
fn bare_insert(path: &Path, data: &DataSet) -> Result<Bare> {
    let mut ledger = Ledger::open(path, Arc::new(SystemClock))?;
    let stamps: Vec<String> = data.readings.iter().map(|r| timestamp(r.at)).collect();
    let totals: Vec<f64> = data.readings.iter().map(Reading::news2_total).collect();
    let now = Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true);

    let clock = Instant::now();
    let tx = ledger
        .connection()
        .transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute(
        "INSERT INTO files (source, partner, feed, name, spool_name, sha256, size, state,
                            received_at, updated_at)
         VALUES (?1, ?2, 'news2', 'news2_bench.csv.age', 'bare', ?3, 0, 'received', ?4, ?4)",
        params![SOURCE, PARTNER, "0".repeat(64), now],
    )?;
    let file_id = tx.last_insert_rowid();
    let mut records = 0u64;
    {
        let mut person = tx.prepare("INSERT INTO persons (nhs_number) VALUES (?1)")?;
        let mut service_user = tx.prepare(
            "INSERT INTO service_users (source, local_id, person_id, nhs_number, family_name,
                    given_name, date_of_birth, gender, postcode, file_id, line)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, NULL, ?9, ?10)",
        )?;
        // One row per set, its values inline, as dropgate writes them.
        let mut set = tx.prepare(
            "INSERT INTO observation_sets (detail_id, observed_at, file_id, line,
                    respiratory_rate, oxygen_saturation, supplemental_oxygen, systolic_bp,
                    diastolic_bp, heart_rate, consciousness, body_temperature, news2_score)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
        )?;
        let mut detail_ids: Vec<Option<i64>> = vec![None; data.residents.len()];
        let mut lists: Vec<Vec<i64>> = vec![Vec::new(); data.residents.len()];
        for (index, reading) in data.readings.iter().enumerate() {
            let line = index as i64 + 2;
            let slot = &mut detail_ids[usize::from(reading.resident)];
            let detail_id = match *slot {
                Some(id) => id,
                None => {
                    let r = &data.residents[usize::from(reading.resident)];
                    person.execute([&r.nhs_number])?;
                    let person_id = tx.last_insert_rowid();
                    service_user.execute(params![
                        PARTNER,
                        r.id,
                        person_id,
                        r.nhs_number,
                        r.family_name,
                        r.given_name,
                        r.date_of_birth,
                        r.gender,
                        file_id,
                        line
                    ])?;
                    records += 1;
                    *slot.insert(tx.last_insert_rowid())
                }
            };
            let rows = reading.observations(totals[index]);
            let null = rusqlite::types::Null;
            let mut values: [&dyn rusqlite::ToSql; 9] = [&null; 9];
            for (code, number, text) in &rows {
                values[(*code - 1) as usize] = match (number, text) {
                    (Some(n), _) => n,
                    (None, Some(t)) => t,
                    (None, None) => &null,
                };
            }
            let mut all: Vec<&dyn rusqlite::ToSql> =
                vec![&detail_id, &stamps[index], &file_id, &line];
            all.extend(values);
            set.execute(all.as_slice())?;
            lists[usize::from(reading.resident)].push(tx.last_insert_rowid());
            records += rows.len() as u64;
        }
        // Each service user's list of sets, as dropgate writes them when a
        // file's load ends.
        let mut list = tx.prepare(
            "INSERT INTO observation_set_lists (detail_id, first_set_id, file_id, set_ids)
             VALUES (?1, ?2, ?3, ?4)",
        )?;
        for (detail_id, ids) in detail_ids.iter().zip(&lists) {
            if let (Some(detail_id), Some(first)) = (detail_id, ids.first()) {
                let text: Vec<String> = ids.iter().map(i64::to_string).collect();
                list.execute(params![
                    detail_id,
                    first,
                    file_id,
                    format!("[{}]", text.join(","))
                ])?;
            }
        }
    }
    tx.commit()?;
    Ok(Bare {
        records,
        wall: clock.elapsed(),
    })
}

/// The plainest storage a record could have: one row per observation (NHS
/// number, code, value, unit, time, source), rowid only, WAL, 100,000 rows
/// a transaction. Storing a record in less than a row is how a ledger beats it.
fn bare_row_per_record(path: &Path, data: &DataSet) -> Result<Bare> {
    let conn = Connection::open(path)?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = FULL;
         CREATE TABLE records (nhs_number TEXT, code TEXT, value, unit TEXT, observed_at TEXT, source TEXT);",
    )?;
    let codes: Vec<(String, Option<String>)> = Code::ALL
        .iter()
        .map(|c| (c.name().to_string(), c.unit().map(str::to_string)))
        .collect();
    let stamps: Vec<String> = data.readings.iter().map(|r| timestamp(r.at)).collect();
    let totals: Vec<f64> = data.readings.iter().map(Reading::news2_total).collect();
    let clock = Instant::now();
    let mut records = 0u64;
    let mut tx = conn.unchecked_transaction()?;
    {
        for (index, reading) in data.readings.iter().enumerate() {
            let nhs = &data.residents[usize::from(reading.resident)].nhs_number;
            for (code, number, text) in reading.observations(totals[index]) {
                let (name, unit) = &codes[(code - 1) as usize];
                let value: &dyn rusqlite::ToSql = match (&number, &text) {
                    (Some(n), _) => n,
                    (None, Some(t)) => t,
                    (None, None) => &rusqlite::types::Null,
                };
                tx.prepare_cached(
                    "INSERT INTO records (nhs_number, code, value, unit, observed_at, source)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )?
                .execute(params![
                    nhs,
                    name,
                    value,
                    unit,
                    stamps[index],
                    SOURCE
                ])?;
                records += 1;
                if records % 100_000 == 0 {
                    tx.commit()?;
                    tx = conn.unchecked_transaction()?;
                }
            }
        }
    }
    tx.commit()?;
    Ok(Bare {
        records,
        wall: clock.elapsed(),
    })
}

fn report_baselines(b: &Baselines, ingest: &Ingest, plain_bytes: u64, cipher_bytes: u64) {
    let ingest_s = ingest.wall.as_secs_f64();
    let age_s = b.age_wall.as_secs_f64();
    let csv_s = b.csv_wall.as_secs_f64();
    let bare_s = b.bare.wall.as_secs_f64();
    let bare_rate = b.bare.records as f64 / bare_s;
    println!();
    println!("2. Baselines on the same data (dropgate's rate as a share of each)");
    println!(
        "   age -d → /dev/null       {age_s:>8.3} s  {:>10.1} MB/s ciphertext        dropgate {:>5.1} %",
        cipher_bytes as f64 / 1e6 / age_s,
        100.0 * age_s / ingest_s
    );
    println!(
        "   csv crate parse          {csv_s:>8.3} s  {:>10} rows/s, {:.1} MB/s   dropgate {:>5.1} %",
        grouped_rate(ingest.rows as f64 / csv_s),
        plain_bytes as f64 / 1e6 / csv_s,
        100.0 * csv_s / ingest_s
    );
    println!(
        "   bare SQLite insert       {bare_s:>8.3} s  {:>10} records/s              dropgate {:>5.1} %",
        grouped_rate(bare_rate),
        100.0 * share_of_bare(ingest, &b.bare)
    );
    println!(
        "     (in-process; real schema, indexes and pragmas; prepared statements; one transaction incl. COMMIT;"
    );
    println!("      timestamps and NEWS2 totals precomputed outside the timing)");
    let plain_s = b.row_per_record.wall.as_secs_f64();
    println!(
        "   one row per record       {plain_s:>8.3} s  {:>10} records/s              dropgate {:>5.1} %",
        grouped_rate(b.row_per_record.records as f64 / plain_s),
        100.0 * share_of_bare(ingest, &b.row_per_record)
    );
    println!(
        "     (a plain row per observation: NHS number, code, value, unit, time, source; rowid only; WAL;"
    );
    println!("      100,000 rows a transaction; service users not counted)");
}

/// dropgate's records/s over the bare insert's.
fn share_of_bare(ingest: &Ingest, bare: &Bare) -> f64 {
    let dropgate = ingest.records as f64 / ingest.wall.as_secs_f64();
    dropgate / (bare.records as f64 / bare.wall.as_secs_f64())
}

// ---------------------------------------------------------------------------
// 3. Reads of the loaded ledger

struct Reads {
    records: u64,
    lookups: usize,
    lookup_total: Duration,
    lookup_max: Duration,
    since_watermark: u64,
    watermark_wall: Duration,
}

/// Residents looked up one by one, as `dropgate patients find` does.
const LOOKUPS: usize = 200;

/// The reads that must stay fast as the ledger grows: a person with every
/// linked detail and their counts (`dropgate patients find`), and what an
/// incremental export will ask for, every observation after a watermark (here
/// the newest tenth of the sets).
fn measure_reads(deployment: &Deployment, data: &DataSet) -> Result<Reads> {
    let ledger = Ledger::open(&deployment.path("spool/ledger.db"), Arc::new(SystemClock))?;
    let conn = deployment.ledger();
    let records: u64 = conn.query_row("SELECT sum(records) FROM files", [], |r| r.get(0))?;
    // Only residents with readings were loaded (a short run has not met them all).
    let mut loaded = vec![false; data.residents.len()];
    for reading in &data.readings {
        loaded[usize::from(reading.resident)] = true;
    }
    let loaded: Vec<&Resident> = data
        .residents
        .iter()
        .zip(&loaded)
        .filter_map(|(resident, loaded)| loaded.then_some(resident))
        .collect();
    let step = (loaded.len() / LOOKUPS).max(1);
    let (mut lookup_total, mut lookup_max, mut lookups) = (Duration::ZERO, Duration::ZERO, 0);
    for resident in loaded.into_iter().step_by(step).take(LOOKUPS) {
        let clock = Instant::now();
        let person = ledger.person_by_nhs_number(&resident.nhs_number)?;
        let took = clock.elapsed();
        ensure!(person.is_some(), "a loaded resident was not found");
        lookup_total += took;
        lookup_max = lookup_max.max(took);
        lookups += 1;
    }
    let newest: i64 = conn.query_row("SELECT max(id) FROM observation_sets", [], |r| r.get(0))?;
    let watermark = newest - newest / 10;
    let clock = Instant::now();
    let mut since = conn.prepare(
        "SELECT detail_id, observed_at, code, value_num, value_text, unit, file_id, line
         FROM observation_records WHERE set_id > ?1",
    )?;
    let since_watermark = since.query_map([watermark], |_| Ok(()))?.count() as u64;
    let watermark_wall = clock.elapsed();
    Ok(Reads {
        records,
        lookups,
        lookup_total,
        lookup_max,
        since_watermark,
        watermark_wall,
    })
}

fn report_reads(reads: &Reads) {
    println!();
    println!(
        "3. Reads of the ledger holding {} records",
        grouped(reads.records)
    );
    println!(
        "   a person with every detail and its counts ({} NHS numbers): {:.2} ms on average, {:.2} ms at most",
        reads.lookups,
        1e3 * reads.lookup_total.as_secs_f64() / reads.lookups.max(1) as f64,
        1e3 * reads.lookup_max.as_secs_f64()
    );
    println!(
        "   every observation after a watermark (the newest tenth of the sets): {} in {:.3} s → {} observations/s",
        grouped(reads.since_watermark),
        reads.watermark_wall.as_secs_f64(),
        grouped_rate(reads.since_watermark as f64 / reads.watermark_wall.as_secs_f64())
    );
}

// ---------------------------------------------------------------------------
// 4. Small files through the daemon

struct SmallFiles {
    files: usize,
    bytes: u64,
    /// From the last rename into the drop folder until all were seen loaded.
    after_last_rename: Duration,
    after_first_rename: Duration,
    /// From the last rename until the last file was recorded as received:
    /// detection (`min_age`, two checks) and landing.
    landed: Duration,
    ledger: LedgerSummary,
    stop: Duration,
    warnings: Vec<String>,
    /// OpenSSH `sftp` putting the same files into OpenSSH sshd, login included.
    openssh: Duration,
}

impl SmallFiles {
    fn files_per_s(&self) -> f64 {
        self.files as f64 / self.after_last_rename.as_secs_f64()
    }

    fn openssh_files_per_s(&self) -> f64 {
        self.files as f64 / self.openssh.as_secs_f64()
    }

    fn share_of_openssh(&self) -> f64 {
        self.files_per_s() / self.openssh_files_per_s()
    }
}

/// OpenSSH's `sftp` client puts `paths` into a real sshd (internal-sftp, no
/// fsync) in one batch session; the time from spawn to exit.
fn openssh_puts(paths: &[PathBuf], scratch: &Path) -> Result<Duration> {
    let sshd = Sshd::start();
    let mut lines = String::new();
    for path in paths {
        let name = path.file_name().expect("staged files have names");
        lines.push_str(&format!(
            "put \"{}\" \"{}\"\n",
            path.display(),
            name.to_string_lossy()
        ));
    }
    let batch = scratch.join("openssh-puts.batch");
    fs::write(&batch, lines)?;
    common::sync()?;
    let clock = Instant::now();
    let out = Command::new("sftp")
        .args(["-F", "/dev/null", "-b"])
        .arg(&batch)
        .args(["-P", &sshd.port().to_string(), "-i"])
        .arg(sshd.client_key())
        .args(harness::SSH_CLIENT_OPTIONS)
        .args(["-o", &format!("Ciphers={CIPHER}")])
        .arg(format!("{}@127.0.0.1", sshd.user()))
        .stdin(Stdio::null())
        .output()
        .context("the OpenSSH `sftp` client must be installed (scripts/test installs it)")?;
    let wall = clock.elapsed();
    ensure!(
        out.status.success(),
        "sftp into sshd failed ({}):\n{}",
        out.status,
        harness::text(&out.stderr)
    );
    let stored = fs::read_dir(sshd.root())?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".csv.age"))
        .count();
    ensure!(
        stored == paths.len(),
        "sshd stored {stored} of {} small files",
        paths.len()
    );
    Ok(wall)
}

struct Staged {
    paths: Vec<PathBuf>,
    rows: u64,
    bytes: u64,
}

/// Writes `count` distinct ~4 KiB NEWS2 files, encrypted to `recipient`.
///
/// Encrypted in-process with the `age` crate: a thousand runs of the CLI
/// would take longer than the measurement, and the format is the same.
fn stage_small_files(
    dir: &Path,
    count: usize,
    residents: &[Resident],
    recipient: &str,
) -> Result<Staged> {
    let recipient: age::x25519::Recipient = recipient
        .parse()
        .map_err(|e| anyhow::anyhow!("age recipient `{recipient}`: {e}"))?;
    let mut generator = Generator::new(0x5eed_0003);
    let mut staged = Staged {
        paths: Vec::with_capacity(count),
        rows: 0,
        bytes: 0,
    };
    let mut row = Vec::new();
    for n in 0..count {
        let mut plain = format!("{HEADER}\n").into_bytes();
        loop {
            row.clear();
            generator.reading().write_csv(&mut row, residents)?;
            if plain.len() + row.len() > SMALL_FILE_BYTES {
                break;
            }
            plain.extend_from_slice(&row);
            staged.rows += 1;
        }
        let cipher = age::encrypt(&recipient, &plain)?;
        let path = dir.join(format!("news2_small_{n:05}.csv.age"));
        fs::write(&path, &cipher)?;
        staged.bytes += cipher.len() as u64;
        staged.paths.push(path);
    }
    Ok(staged)
}

#[derive(Default)]
struct States {
    loaded: u64,
    received: u64,
    other: u64,
}

fn states(ledger: &Connection) -> Result<States> {
    let mut counts = States::default();
    let mut stmt = ledger.prepare_cached("SELECT state, count(*) FROM files GROUP BY state")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, u64>(1)?)))?;
    for row in rows {
        let (state, n) = row?;
        match state.as_str() {
            "loaded" => counts.loaded = n,
            "received" => counts.received = n,
            _ => counts.other += n,
        }
    }
    Ok(counts)
}

fn measure_small_files(
    config: &str,
    keep: bool,
    residents: &[Resident],
    count: usize,
) -> Result<SmallFiles> {
    let deployment = Deployment::with_config(config);
    progress("starting dropgate run");
    let daemon = deployment.start();
    let recipient = deployment.recipient.clone();
    let drop_folder = deployment.path("spool/drop/demo-carehome");
    ensure!(
        drop_folder.is_dir(),
        "the daemon did not create {}",
        drop_folder.display()
    );
    progress(format!("staging {count} small files"));
    let staged = stage_small_files(
        &folder(&deployment, "staging")?,
        count,
        residents,
        &recipient,
    )?;
    progress("baseline: OpenSSH sftp puts of the same files into sshd");
    let openssh = openssh_puts(&staged.paths, &folder(&deployment, "openssh")?)?;
    common::sync()?;
    let ledger = deployment.ledger();
    ledger.busy_timeout(Duration::from_secs(10))?;

    progress("dropping small files into the running daemon");
    let first_rename = Instant::now();
    for path in &staged.paths {
        let name = path.file_name().expect("staged files have names");
        fs::rename(path, drop_folder.join(name))?;
    }
    let last_rename = Instant::now();
    let renamed_at = DateTime::<Utc>::from(SystemTime::now());
    loop {
        let counts = states(&ledger)?;
        if counts.loaded == count as u64 {
            break;
        }
        if counts.other > 0 {
            bail!(
                "{} small file(s) were not loaded (quarantined or duplicate); see `dropgate show`:\n{}",
                counts.other,
                daemon.log()
            );
        }
        if last_rename.elapsed() > LOAD_TIMEOUT {
            bail!(
                "only {} of {count} small files loaded ({} received) within {LOAD_TIMEOUT:?}:\n{}",
                counts.loaded,
                counts.received,
                daemon.log()
            );
        }
        thread::sleep(POLL);
    }
    let all_loaded = Instant::now();

    let summary = LedgerSummary::read(&ledger)?;
    ensure!(
        summary.rows == staged.rows,
        "the ledger holds {} loaded rows, {} were dropped",
        summary.rows,
        staged.rows
    );
    drop(ledger);
    progress("stopping dropgate run");
    let clock = Instant::now();
    let log = daemon.terminate();
    let stop = clock.elapsed();
    keep_or_drop(deployment, keep);
    let warnings = log
        .lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .map(str::to_string)
        .collect();
    Ok(SmallFiles {
        files: count,
        bytes: staged.bytes,
        after_last_rename: all_loaded - last_rename,
        after_first_rename: all_loaded - first_rename,
        landed: (summary.last_received - renamed_at)
            .to_std()
            .unwrap_or_default(),
        ledger: summary,
        stop,
        warnings,
        openssh,
    })
}

/// What the ledger says about the loaded files.
struct LedgerSummary {
    first_received: DateTime<Utc>,
    last_received: DateTime<Utc>,
    last_updated: DateTime<Utc>,
    /// Distinct `received_at` stamps: one per landing transaction.
    landing_batches: u64,
    rows: u64,
    records: u64,
}

impl LedgerSummary {
    fn read(ledger: &Connection) -> Result<LedgerSummary> {
        let (first_received, last_received, last_updated): (String, String, String) = ledger
            .query_row(
                "SELECT min(received_at), max(received_at), max(updated_at)
                 FROM files WHERE state = 'loaded'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )?;
        let (landing_batches, rows, records) = ledger.query_row(
            "SELECT count(DISTINCT received_at), sum(rows_loaded), sum(records)
             FROM files WHERE state = 'loaded'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?;
        Ok(LedgerSummary {
            first_received: parse_time(&first_received)?,
            last_received: parse_time(&last_received)?,
            last_updated: parse_time(&last_updated)?,
            landing_batches,
            rows,
            records,
        })
    }

    /// First `received_at` to last `updated_at` (stamped as each file's
    /// processing finishes, before its transaction commits).
    fn span(&self) -> Duration {
        (self.last_updated - self.first_received)
            .to_std()
            .unwrap_or_default()
    }
}

fn report_small_files(s: &SmallFiles) {
    let rate = |d: Duration| s.files as f64 / d.as_secs_f64();
    println!();
    println!(
        "4. Small files through `dropgate run` (min_age 100ms, check_interval 50ms, polled every {} ms)",
        POLL.as_millis()
    );
    println!(
        "   dropped         {} .csv.age files, {} in all ({:.0} bytes each); {} rows, {} records",
        grouped(s.files as u64),
        megabytes(s.bytes),
        s.bytes as f64 / s.files as f64,
        grouped(s.ledger.rows),
        grouped(s.ledger.records)
    );
    println!(
        "   all loaded      {:.3} s after the last rename   → {:.0} files/s",
        s.after_last_rename.as_secs_f64(),
        s.files_per_s()
    );
    println!(
        "                   {:.3} s after the first rename  → {:.0} files/s",
        s.after_first_rename.as_secs_f64(),
        rate(s.after_first_rename)
    );
    println!(
        "   OpenSSH         {:.3} s for `sftp` to put the same files into sshd (login included, no fsync) → {:.0} files/s; dropgate {:.0} % of it",
        s.openssh.as_secs_f64(),
        s.openssh_files_per_s(),
        100.0 * s.share_of_openssh()
    );
    println!(
        "   phases          {:.3} s to detect and land the last file + {:.3} s more to load the rest",
        s.landed.as_secs_f64(),
        s.after_last_rename.saturating_sub(s.landed).as_secs_f64()
    );
    println!(
        "   ledger span     {:.3} s first received_at → last updated_at → {:.0} files/s",
        s.ledger.span().as_secs_f64(),
        rate(s.ledger.span())
    );
    println!(
        "   transactions    {} landing (distinct received_at)",
        s.ledger.landing_batches
    );
    println!(
        "   stop            SIGTERM → exit 0 in {:.3} s",
        s.stop.as_secs_f64()
    );
    for warning in s.warnings.iter().take(5) {
        println!("   daemon said     {warning}");
    }
}

// ---------------------------------------------------------------------------
// Summary

fn report_summary(ingest: &Ingest, baselines: &Baselines, small: &SmallFiles, cipher_bytes: u64) {
    let records_per_s = ingest.records as f64 / ingest.wall.as_secs_f64();
    let share = share_of_bare(ingest, &baselines.bare);
    let rows = [
        (
            format!("ingest ≥ {} records/s", grouped_rate(TARGET_RECORDS_PER_S)),
            format!("{} records/s", grouped_rate(records_per_s)),
            records_per_s >= TARGET_RECORDS_PER_S,
        ),
        (
            format!(
                "ingest ≥ {:.0} % of bare SQLite insert",
                100.0 * TARGET_SHARE_OF_BARE
            ),
            format!("{:.1} %", 100.0 * share),
            share >= TARGET_SHARE_OF_BARE,
        ),
        (
            format!("ingest ≥ {TARGET_TIMES_ROW_PER_RECORD:.0}× one row per record"),
            format!("{:.2}×", share_of_bare(ingest, &baselines.row_per_record)),
            share_of_bare(ingest, &baselines.row_per_record) >= TARGET_TIMES_ROW_PER_RECORD,
        ),
        (
            format!("peak RSS < {TARGET_PEAK_RSS_MIB:.0} MiB (target input: 1 GiB)"),
            format!(
                "{:.1} MiB (input {})",
                ingest.peak_rss_mib,
                megabytes(cipher_bytes)
            ),
            ingest.peak_rss_mib < TARGET_PEAK_RSS_MIB,
        ),
        (
            format!("small files ≥ {TARGET_SMALL_FILES_PER_S:.0} files/s"),
            format!("{:.0} files/s", small.files_per_s()),
            small.files_per_s() >= TARGET_SMALL_FILES_PER_S,
        ),
        (
            format!(
                "small files ≥ {:.0} % of OpenSSH sftp → sshd",
                100.0 * TARGET_SHARE_OF_OPENSSH
            ),
            format!("{:.0} %", 100.0 * small.share_of_openssh()),
            small.share_of_openssh() >= TARGET_SHARE_OF_OPENSSH,
        ),
    ];
    println!();
    println!("Summary");
    println!("   {:<44} {:<30} RESULT", "TARGET", "MEASURED");
    for (target, measured, met) in rows {
        let result = if met { "MET" } else { "NOT MET" };
        println!("   {target:<44} {measured:<30} {result}");
    }
}

// ---------------------------------------------------------------------------
// Formatting

/// 1234567 → "1,234,567".
fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn grouped_rate(rate: f64) -> String {
    grouped(rate.round() as u64)
}

fn megabytes(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

/// A folder of the deployment, created when missing.
fn folder(deployment: &Deployment, relative: &str) -> Result<PathBuf> {
    let path = deployment.path(relative);
    fs::create_dir_all(&path)?;
    Ok(path)
}

/// With `--keep`, the deployment stays under `target/bench-scratch/` for
/// inspection or profiling by hand.
fn keep_or_drop(deployment: Deployment, keep: bool) {
    if keep {
        let kept = deployment.dir.keep();
        progress(format!("keeping {}", kept.display()));
    }
}
