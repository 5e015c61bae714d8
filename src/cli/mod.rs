//! Command-line interface. Exit codes: 0 success, 1 a file was quarantined
//! (`ingest`), 2 an error (bad configuration, unknown file, I/O).

mod args;
mod logging;
mod print;
mod progress;
mod publishing;
mod retention;
mod status;

use args::{Audit, Cli, Command, Patients, Schema};
use print::{
    CareView, ShownPerson, care_records_of, exit_for, print_banner, print_files, print_outcome,
    print_person, print_person_records, show,
};

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::Parser;

use dropgate::config::Config;
use dropgate::domain::nhs_number::NhsNumber;
use dropgate::ledger::{FileFilter, FileState, Ledger, NameSearch, SystemClock};
use dropgate::pipeline::Processor;
use dropgate::text::escaped;
use dropgate::{audit, daemon, keys};

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_level = if matches!(cli.command, Command::Run) {
        "info"
    } else {
        "warn"
    };
    logging::init(cli.log_format, default_level);
    if !matches!(cli.command, Command::Run) {
        // A listing piped into `head` ends quietly when the reader goes, as
        // other command-line tools do. The daemon keeps SIGPIPE ignored, so
        // a peer that hangs up is an error on that connection alone.
        // SAFETY: called before any thread is started; restores the default.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    match execute(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn load_config(path: &Path) -> anyhow::Result<Result<Config, ExitCode>> {
    match Config::load(path) {
        Ok(c) => Ok(Ok(c)),
        Err(errors) => {
            eprintln!("{errors}");
            Ok(Err(ExitCode::from(2)))
        }
    }
}

macro_rules! config_or_exit {
    ($path:expr) => {
        match load_config($path)? {
            Ok(c) => c,
            Err(code) => return Ok(code),
        }
    };
}

fn open_ledger(config: &Config) -> anyhow::Result<Ledger> {
    if let Some(folder) = config.daemon.ledger.parent() {
        std::fs::create_dir_all(folder)
            .with_context(|| format!("creating {}", folder.display()))?;
    }
    Ledger::open(&config.daemon.ledger, Arc::new(SystemClock))
        .with_context(|| format!("opening the ledger {}", config.daemon.ledger.display()))
}

fn execute(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::CheckConfig => {
            let config = config_or_exit!(&cli.config);
            for warning in &config.warnings {
                eprintln!("{warning}");
            }
            println!(
                "{}: ok ({} partners, {} sources, {} feeds)",
                cli.config.display(),
                config.partners.len(),
                config.sources.len(),
                config.feeds.len()
            );
            if let Some(http) = &config.http {
                println!(
                    "  http         {} (/healthz, /readyz, /metrics)",
                    http.listen
                );
            }
            println!(
                "  spool        {}, keeping {} MiB free (new files wait below it)",
                config.daemon.spool.display(),
                config.daemon.min_free_space >> 20
            );
            println!(
                "  retention    payloads {} days; purged at {}",
                config.daemon.retention_days,
                dropgate::schedule::Schedule::Cron(Box::new(config.daemon.purge.clone()))
            );
            for (name, partner) in &config.partners {
                if let Some(days) = partner.retention_days {
                    println!("    partner {name}: payloads {days} days");
                }
            }
            for feed in config.feeds.values() {
                let kinds: Vec<&str> = feed.mapping.kinds().iter().map(|k| k.name()).collect();
                println!(
                    "  feed {:<12} from {}, {} columns, makes {}",
                    feed.name,
                    feed.partner,
                    feed.schema.columns.len(),
                    if kinds.is_empty() {
                        "no records (checked and archived only)".to_string()
                    } else {
                        kinds.join(", ")
                    }
                );
                if feed.retention_days.is_some() || feed.record_retention_days.is_some() {
                    println!(
                        "    keeps payloads {} days, records {}",
                        config.payload_days(&feed.partner, Some(&feed.name)),
                        feed.record_retention_days
                            .map_or("for ever".to_string(), |d| format!("{d} days"))
                    );
                }
                let expect = &feed.expect;
                if let Some((cron, within)) = &expect.arrives_by {
                    println!(
                        "    expects a file by {} (within {} before)",
                        dropgate::schedule::Schedule::Cron(Box::new(cron.clone())),
                        humantime::format_duration(*within)
                    );
                }
                if let Some(band) = expect.row_count {
                    println!(
                        "    expects rows within {}% of the mean of the {} loaded before",
                        band.percent, band.files
                    );
                }
                if let Some(band) = expect.quarantine_rate {
                    println!(
                        "    expects at most {}% of the last {} files quarantined",
                        band.percent, band.files
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Run => {
            let config = Arc::new(config_or_exit!(&cli.config));
            for warning in &config.warnings {
                tracing::warn!("{warning}");
            }
            print_banner(&config)?;
            let runtime = tokio::runtime::Runtime::new().context("starting the runtime")?;
            runtime.block_on(async {
                let shutdown = shutdown_signal()?;
                let reloads = reload_requests()?;
                daemon::run(config, shutdown, reloads).await?;
                anyhow::Ok(())
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Init { dir } => init(&dir),
        Command::Keygen { force } => {
            let config = config_or_exit!(&cli.config);
            keygen(&config, force)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Ingest { source, files } => {
            let config = Arc::new(config_or_exit!(&cli.config));
            ingest(config, &source, &files)
        }
        Command::Push { destination, files } => {
            let config = config_or_exit!(&cli.config);
            push(&config, &destination, &files)
        }
        Command::HashPassword => {
            use argon2::PasswordHasher;
            let mut password = String::new();
            std::io::stdin()
                .read_line(&mut password)
                .context("reading the password")?;
            let password = password.trim_end_matches(['\r', '\n']);
            if password.is_empty() {
                bail!("no password on standard input");
            }
            let hash = argon2::Argon2::default()
                .hash_password(password.as_bytes())
                .map_err(|e| anyhow::anyhow!("hashing failed: {e}"))?;
            println!("{hash}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { json } => {
            let config = config_or_exit!(&cli.config);
            let ledger = open_ledger(&config)?;
            status::status(&config, &ledger, json)
        }
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut command, "dropgate", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        Command::Man => {
            let command = <Cli as clap::CommandFactory>::command();
            clap_mangen::Man::new(command)
                .render(&mut std::io::stdout())
                .context("writing the man page")?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Alerts { history, json } => {
            let config = config_or_exit!(&cli.config);
            let ledger = open_ledger(&config)?;
            status::alerts(&ledger, history, json)
        }
        Command::Files { state, feed, json } => {
            let config = config_or_exit!(&cli.config);
            let ledger = open_ledger(&config)?;
            let rows = ledger.files(&FileFilter { state, feed })?;
            let forwarded = ledger.forwarding_states()?;
            if json {
                for row in &rows {
                    let mut value = serde_json::to_value(row)?;
                    value["forwarded"] = serde_json::json!(forwarded.get(&row.id));
                    println!("{value}");
                }
            } else {
                print_files(&rows, &forwarded);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Show { id, json } => {
            let config = config_or_exit!(&cli.config);
            let ledger = open_ledger(&config)?;
            show(&ledger, id, json)
        }
        Command::Payload { id, output } => {
            let config = config_or_exit!(&cli.config);
            payload(&config, id, output.as_deref())
        }
        Command::Purge { dry_run, json } => {
            let config = config_or_exit!(&cli.config);
            retention::purge(&config, dry_run, json)
        }
        Command::Hold {
            file,
            partner,
            reason,
        } => {
            let config = config_or_exit!(&cli.config);
            retention::hold(&config, file, partner.as_deref(), &reason)
        }
        Command::Release { hold, reason } => {
            let config = config_or_exit!(&cli.config);
            retention::release(&config, hold, &reason)
        }
        Command::Holds { all, json } => {
            let config = config_or_exit!(&cli.config);
            retention::holds(&config, all, json)
        }
        Command::Replay { id } => {
            let config = Arc::new(config_or_exit!(&cli.config));
            let (file, processed_here) = daemon::replay(config.clone(), id)?;
            audit_by_hand(&config, "replay", &[id])?;
            if !processed_here {
                println!("{id}: queued; the running daemon took it ({})", file.state);
            } else {
                print_outcome(&file);
            }
            Ok(exit_for(&[file]))
        }
        Command::Schema(Schema::Infer {
            file,
            feed,
            partner,
            rows,
            code_lists,
            format,
        }) => {
            use std::io::BufRead;
            let input = std::fs::File::open(&file)
                .with_context(|| format!("opening {}", file.display()))?;
            let mut input = std::io::BufReader::new(input);
            let options = dropgate::formats::infer::InferOptions {
                feed: &feed,
                partner: &partner,
                max_rows: rows,
                code_lists,
            };
            let xml = match format.as_deref() {
                Some(format) => format == "xml",
                None => {
                    let named = file
                        .extension()
                        .is_some_and(|e| e.eq_ignore_ascii_case("xml"));
                    let head = input.fill_buf()?;
                    let head = head.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(head);
                    named || head.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'<')
                }
            };
            let draft = if xml {
                dropgate::formats::infer::infer_xml(input, &options)?
            } else {
                dropgate::formats::infer::infer_csv(input, &options)?
            };
            print!("{}", draft.toml);
            eprintln!(
                "drafted feed `{feed}`: {} columns from {} rows; review every line marked REVIEW",
                draft.columns, draft.rows
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Schema(Schema::Check { feed, file, json }) => {
            let config = Arc::new(config_or_exit!(&cli.config));
            let Some(feed) = config.feeds.get(&feed) else {
                let known: Vec<&str> = config.feeds.keys().map(String::as_str).collect();
                bail!(
                    "no feed `{feed}`; the configuration has: {}",
                    known.join(", ")
                );
            };
            if !file.is_file() {
                bail!("{}: not a file", file.display());
            }
            let identity = keys::load_identity(&config.keys.age_identity)?;
            let processor = Processor::new(config.clone(), identity);
            let outcome = processor.check_sample(feed, &file);
            print::sample(&file, &outcome, json)?;
            Ok(if outcome.state == FileState::Loaded {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Export { schedule, json } => {
            let config = config_or_exit!(&cli.config);
            publishing::export(&config, &schedule, json)
        }
        Command::Resend { export_id, to } => {
            let config = config_or_exit!(&cli.config);
            publishing::resend(&config, &export_id, to.as_deref())
        }
        Command::Schedules { json } => {
            let config = config_or_exit!(&cli.config);
            publishing::schedules(&config, &open_ledger(&config)?, json)
        }
        Command::Grants { json } => {
            let config = config_or_exit!(&cli.config);
            publishing::grants(&config, &open_ledger(&config)?, json)
        }
        Command::SigningKey => {
            let config = config_or_exit!(&cli.config);
            publishing::signing_key(&config)
        }
        Command::Verify {
            folder,
            allowed_signers,
        } => {
            let config = config_or_exit!(&cli.config);
            publishing::verify(&config, &folder, allowed_signers.as_deref())
        }
        Command::Patients(Patients::Show {
            detail,
            observations,
            json,
        }) => {
            let config = config_or_exit!(&cli.config);
            let mut ledger = open_ledger(&config)?;
            let Some(records) = ledger.person_records(detail, observations)? else {
                eprintln!("no such detail");
                return Ok(ExitCode::from(1));
            };
            let care = care_records_of(ledger.connection(), &records)?;
            if json {
                let shown = ShownPerson {
                    records: &records,
                    care_records: care.iter().map(CareView::from).collect(),
                };
                println!("{}", serde_json::to_string(&shown)?);
            } else {
                print_person_records(&records, &care);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Patients(Patients::Link {
            detail,
            other,
            reason,
        }) => {
            let config = config_or_exit!(&cli.config);
            let Some(reason) = audit_reason(&reason) else {
                return Ok(ExitCode::from(2));
            };
            let mut ledger = open_ledger(&config)?;
            let linked = linked(ledger.link_details(detail, other, &operator(), &reason)?);
            sign_audit(&config, &mut ledger);
            linked
        }
        Command::Patients(Patients::Unlink { detail, reason }) => {
            let config = config_or_exit!(&cli.config);
            let Some(reason) = audit_reason(&reason) else {
                return Ok(ExitCode::from(2));
            };
            let mut ledger = open_ledger(&config)?;
            let linked = linked(ledger.unlink_detail(detail, &operator(), &reason)?);
            sign_audit(&config, &mut ledger);
            linked
        }
        Command::Audit(Audit::Verify { json }) => {
            let config = config_or_exit!(&cli.config);
            let ledger = open_ledger(&config)?;
            let keys = dropgate::publish::own_keys(&config.keys.signing_key)?;
            let head = audit::read_head(&config.daemon.spool)?;
            let newest = ledger.audit_head()?.map_or(0, |(id, _)| id);
            let bar = progress::bar(newest.max(0) as u64, "rows");
            let found = audit::verify(&ledger, &keys, head.as_ref(), |id| {
                if id % 1024 == 0 {
                    bar.set_position(id.max(0) as u64);
                }
            })?;
            bar.finish_and_clear();
            if json {
                println!("{}", serde_json::to_string(&found)?);
            } else {
                print_verified(&found);
            }
            Ok(match found.broken {
                None => ExitCode::SUCCESS,
                Some(_) => ExitCode::from(1),
            })
        }
        Command::Audit(Audit::Export { since }) => {
            let config = config_or_exit!(&cli.config);
            let ledger = open_ledger(&config)?;
            let since = since.map(|day| format!("{day}T00:00:00"));
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            ledger.walk_audit(|row| {
                if since
                    .as_deref()
                    .is_none_or(|since| row.at.as_str() >= since)
                {
                    serde_json::to_writer(&mut out, &row)?;
                    std::io::Write::write_all(&mut out, b"\n")?;
                }
                Ok::<_, anyhow::Error>(true)
            })?;
            std::io::Write::flush(&mut out)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Patients(Patients::Find { who, json }) => {
            let config = config_or_exit!(&cli.config);
            let ledger = open_ledger(&config)?;
            let given = [
                who.nhs_number.is_some(),
                who.local_id.is_some(),
                who.family_name.is_some(),
            ];
            if given.iter().filter(|g| **g).count() != 1 {
                bail!("give one of --nhs-number, --local-id or --family-name");
            }
            if let Some(family_name) = &who.family_name {
                return find_by_name(&ledger, family_name, &who, json);
            }
            let person = match (&who.nhs_number, &who.local_id) {
                (Some(n), _) => {
                    let n =
                        NhsNumber::parse(n).map_err(|e| anyhow::anyhow!("--nhs-number: {e}"))?;
                    ledger.person_by_nhs_number(&n.digits())?
                }
                (None, Some(local)) => {
                    let Some((source, id)) = local.split_once(':') else {
                        bail!("--local-id takes SOURCE:ID, for example demo-carehome:R0001");
                    };
                    ledger.person_by_local_id(source, id)?
                }
                (None, None) => unreachable!("one of the three was given"),
            };
            let Some(person) = person else {
                eprintln!("no such person");
                return Ok(ExitCode::from(1));
            };
            if json {
                println!("{}", serde_json::to_string(&person)?);
            } else {
                print_person(&person);
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `patients find --family-name … --date-of-birth …`: every person matched.
fn find_by_name(
    ledger: &Ledger,
    family_name: &str,
    who: &args::Who,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let date_of_birth = who.date_of_birth.as_deref().unwrap_or_default();
    if chrono::NaiveDate::parse_from_str(date_of_birth, "%Y-%m-%d").is_err() {
        bail!("--date-of-birth takes YYYY-MM-DD");
    }
    let postcode = match &who.postcode {
        Some(p) => Some(
            dropgate::domain::contact::postcode(p)
                .ok_or_else(|| anyhow::anyhow!("--postcode: not a UK postcode"))?,
        ),
        None => None,
    };
    let persons = ledger.persons_by_name(&NameSearch {
        family_name,
        date_of_birth,
        gender: who.gender.as_deref(),
        postcode: postcode.as_deref(),
    })?;
    if json {
        println!("{}", serde_json::to_string(&persons)?);
    } else {
        for person in &persons {
            print_person(person);
        }
    }
    if persons.is_empty() {
        eprintln!("no such person");
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

fn ingest(config: Arc<Config>, source: &str, paths: &[PathBuf]) -> anyhow::Result<ExitCode> {
    let total = paths
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum();
    let mut reading = None;
    let files = daemon::ingest(config.clone(), source, paths, |progress| {
        reading = Some(progress::Reading::start(progress, total));
    })?;
    drop(reading);
    let ids: Vec<i64> = files.iter().map(|f| f.id).collect();
    audit_by_hand(&config, "ingest", &ids)?;
    for file in &files {
        print_outcome(file);
    }
    Ok(exit_for(&files))
}

/// `dropgate payload`: the stored bytes, from the ledger (a small file's)
/// or the spool, checked against the SHA-256 recorded when received before
/// any is written. A spool copy is streamed, never read whole: it may be
/// gigabytes.
fn payload(config: &Config, id: i64, output: Option<&Path>) -> anyhow::Result<ExitCode> {
    let ledger = open_ledger(config)?;
    let Ok(file) = ledger.file(id) else {
        eprintln!("no file {id}");
        return Ok(ExitCode::from(1));
    };
    enum Stored {
        Ledger(Arc<[u8]>),
        Spool(PathBuf),
    }
    let stored = match ledger.held_body(id)? {
        Some(body) => Stored::Ledger(body),
        None => match dropgate::spool::Spool::new(&config.daemon.spool).find(&file.spool_name) {
            Some((_, path)) => Stored::Spool(path),
            None => {
                match &file.payload_purged_at {
                    Some(at) => {
                        eprintln!("file {id}: its payload was purged at {at}, past its retention")
                    }
                    None => eprintln!("file {id}: its payload is no longer kept"),
                }
                return Ok(ExitCode::from(1));
            }
        },
    };
    drop(ledger);
    let open = || -> anyhow::Result<Box<dyn std::io::Read>> {
        Ok(match &stored {
            Stored::Ledger(body) => Box::new(std::io::Cursor::new(body.clone())),
            Stored::Spool(path) => {
                Box::new(std::fs::File::open(path).with_context(|| format!("{}", path.display()))?)
            }
        })
    };
    let (sha256, _) = dropgate::digest::sha256_reader(open()?)?;
    if sha256 != file.sha256 {
        bail!(
            "file {id}: the stored payload does not match the SHA-256 recorded when it was received"
        );
    }
    // Audited once the bytes have somewhere to go, before they go.
    let mut out: Box<dyn std::io::Write> = match output {
        Some(path) => Box::new(
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .with_context(|| format!("{}", path.display()))?,
        ),
        None => Box::new(std::io::stdout().lock()),
    };
    audit_by_hand(config, "payload_read", &[id])?;
    std::io::copy(&mut open()?, &mut out)?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// Audits an action an operator took by hand on files, then signs the trail.
fn audit_by_hand(config: &Config, action: &str, ids: &[i64]) -> anyhow::Result<()> {
    let mut ledger = open_ledger(config)?;
    let by = operator();
    for &id in ids {
        ledger.audit(&dropgate::ledger::AuditEvent {
            action,
            file_id: Some(id),
            detail: Some(serde_json::json!({ "by": by })),
            ..Default::default()
        })?;
    }
    sign_audit(config, &mut ledger);
    Ok(())
}

fn push(config: &Config, name: &str, paths: &[PathBuf]) -> anyhow::Result<ExitCode> {
    let Some(destination) = config.destinations.get(name) else {
        let known: Vec<&str> = config.destinations.keys().map(String::as_str).collect();
        bail!(
            "unknown destination `{name}` (configured: {})",
            known.join(", ")
        );
    };
    let ledger = std::sync::Mutex::new(open_ledger(config)?);
    let runtime = tokio::runtime::Runtime::new().context("starting the runtime")?;
    let mut all_delivered = true;
    for path in paths {
        let bytes = std::fs::read(path).with_context(|| format!("{}", path.display()))?;
        let sha256 = { dropgate::digest::sha256_hex(&bytes) };
        let file_name = path
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        let parcel = dropgate::forward::Parcel {
            contents: dropgate::forward::Contents::File(path),
            name: &file_name,
            file_id: None,
            sha256: &sha256,
            size: bytes.len() as u64,
        };
        match runtime.block_on(dropgate::forward::deliver(
            destination,
            &parcel,
            dropgate::ledger::Settles::Nothing,
            &ledger,
        )) {
            Ok(attempt) => println!("{}\tdelivered\tattempt {attempt}", escaped(&file_name)),
            Err(e) => {
                all_delivered = false;
                println!(
                    "{}\tnot delivered\t{}",
                    escaped(&file_name),
                    escaped(&e.to_string())
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

/// Creates the keys the config names (all anew with `force`), the spool and
/// the ledger; prints each key and the age recipient.
fn keygen(config: &Config, force: bool) -> anyhow::Result<()> {
    let made = keys::ensure(config, force)?;
    for key in &made {
        let verb = if key.created { "created" } else { "exists " };
        println!("{verb} {:<13} {}", key.what, key.path.display());
    }
    // The ledger (made here when this is the first command) records
    // which keys were made, signed by the signing key now in force.
    dropgate::spool::Spool::new(&config.daemon.spool)
        .ensure()
        .with_context(|| config.daemon.spool.display().to_string())?;
    let mut ledger = open_ledger(config)?;
    daemon::audit_keys_created(&mut ledger, &made)?;
    sign_audit(config, &mut ledger);
    let identity = keys::load_identity(&config.keys.age_identity)?;
    println!("age recipient: {}", identity.to_public());
    Ok(())
}

/// The shipped, commented configuration: a new deployment starts from it.
const STARTER_CONFIG: &str = include_str!("../../config/dropgate.toml");

/// `dropgate init DIR`: DIR/config/dropgate.toml (never over an existing
/// one), its keys, DIR/spool and the ledger, and what to do next.
fn init(dir: &Path) -> anyhow::Result<ExitCode> {
    let config_dir = dir.join("config");
    let path = config_dir.join("dropgate.toml");
    std::fs::create_dir_all(&config_dir)
        .with_context(|| format!("creating {}", config_dir.display()))?;
    let mut file = match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o640)
        .open(&path)
    {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            bail!(
                "{} exists; init never writes over a configuration",
                path.display()
            )
        }
        Err(e) => return Err(e).with_context(|| format!("creating {}", path.display())),
    };
    file.write_all(STARTER_CONFIG.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", path.display()))?;
    let config = config_or_exit!(&path);
    keygen(&config, false)?;
    let config_arg = path.display();
    println!();
    println!("A new deployment in {}:", dir.display());
    println!("  config  {config_arg}   (partners, sources, feeds: commented)");
    println!(
        "  keys    {}   (mode 0600)",
        config_dir.join("keys").display()
    );
    println!(
        "  spool   {}   (ledger, drop folders)",
        config.daemon.spool.display()
    );
    println!();
    println!("Next:");
    println!(
        "  1. edit the config: your partners, their sources and feeds (the demo ones show how)"
    );
    println!("  2. dropgate --config {config_arg} check-config");
    println!("  3. dropgate --config {config_arg} run");
    println!("  4. give each partner the age recipient above to encrypt to");
    println!("  As a service: the README, \"Running as a service\".");
    Ok(ExitCode::SUCCESS)
}

/// Resolves on SIGINT or SIGTERM. Handlers are installed at once, so a signal
/// that arrives while the daemon is starting is not lost.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = interrupt.recv() => {}
        }
    })
}

/// A message for each SIGHUP (`systemctl reload`): the daemon reads its
/// config file again. Signals that come while one is being applied make
/// one more reload, not one each.
fn reload_requests() -> anyhow::Result<tokio::sync::mpsc::Receiver<()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            let _ = tx.try_send(());
        }
    });
    Ok(rx)
}

/// Prints what a link or unlink did, or why it did nothing (exit 1).
fn linked(
    outcome: Result<dropgate::ledger::LinkChange, dropgate::ledger::LinkRefused>,
) -> anyhow::Result<ExitCode> {
    match outcome {
        Ok(change) => {
            let details: Vec<String> = change.details.iter().map(|d| d.to_string()).collect();
            println!(
                "person {} now holds detail{} {} (recorded in the audit trail)",
                change.person_id,
                if details.len() == 1 { "" } else { "s" },
                details.join(", ")
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(refused) => {
            eprintln!("{refused}");
            Ok(ExitCode::from(1))
        }
    }
}

/// Who runs this command, for the audit trail: the login name (the one
/// `sudo` was run by, when it was) and the user id.
fn operator() -> String {
    // SAFETY: getuid cannot fail and has no preconditions.
    let uid = unsafe { libc::getuid() };
    let name = std::env::var("SUDO_USER")
        .or_else(|_| std::env::var("USER"))
        .unwrap_or_default();
    let name: String = name.chars().filter(|c| !c.is_control()).take(64).collect();
    if name.is_empty() {
        format!("uid {uid}")
    } else {
        format!("{name} (uid {uid})")
    }
}

/// A reason an admin gives for the audit trail, refused (with why, on
/// stderr) when empty, longer than 500 characters, holding control
/// characters, or holding what reads as a valid NHS number: the audit trail
/// must not carry patient identifiers.
fn audit_reason(reason: &str) -> Option<String> {
    let reason = reason.trim();
    let refuse = |why: &str| {
        eprintln!("--reason {why}");
        None
    };
    if reason.is_empty() {
        return refuse("must say why");
    }
    if reason.chars().count() > 500 {
        return refuse("must be at most 500 characters");
    }
    if reason.chars().any(char::is_control) {
        return refuse("must be one line of text");
    }
    if holds_nhs_number(reason) {
        return refuse("holds an NHS number; the audit trail must not carry patient identifiers");
    }
    Some(reason.to_string())
}

/// Whether ten digits in a row make a valid NHS number, whatever separates
/// them (spaces, hyphens, dots, slashes; up to three between two digits).
fn holds_nhs_number(text: &str) -> bool {
    let check = |digits: &[u8]| {
        digits.windows(10).any(|w| {
            let candidate: String = w.iter().map(|d| char::from(b'0' + d)).collect();
            dropgate::domain::nhs_number::NhsNumber::parse(&candidate).is_ok()
        })
    };
    let mut digits: Vec<u8> = Vec::new();
    let mut separators = 0;
    for c in text.chars() {
        match c {
            '0'..='9' => {
                digits.push(c as u8 - b'0');
                separators = 0;
            }
            c if !c.is_alphanumeric() && separators < 3 && !digits.is_empty() => separators += 1,
            _ => {
                if check(&digits) {
                    return true;
                }
                digits.clear();
                separators = 0;
            }
        }
    }
    check(&digits)
}

/// Signs the audit trail's head after a command that wrote to it. The
/// command's own work is done by then, so a failure is reported, not fatal.
fn sign_audit(config: &Config, ledger: &mut Ledger) {
    let signed = dropgate::publish::signing_key(&config.keys.signing_key)
        .map_err(|e| e.to_string())
        .and_then(|key| {
            audit::Checkpointer::new(key, &config.daemon.spool)
                .checkpoint(ledger)
                .map_err(|e| e.to_string())
        });
    if let Err(e) = signed {
        eprintln!("warning: the audit trail could not be signed: {e}");
    }
}

fn print_verified(found: &audit::Verified) {
    match &found.broken {
        None => println!(
            "audit trail intact: {} rows, {} signed checkpoints{}",
            found.rows,
            found.checkpoints,
            match found.signed_up_to {
                Some(row) => format!(
                    ", signed up to row {row} ({} rows after it)",
                    found.unsigned_rows
                ),
                None => " (no checkpoint yet)".to_string(),
            }
        ),
        Some(broken) => println!(
            "audit trail broken at row {}: {} ({} rows intact before it)",
            broken.row, broken.reason, found.rows
        ),
    }
}
