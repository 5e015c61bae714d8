//! Command-line interface. Exit codes: 0 success, 1 a file was quarantined
//! (`ingest`), 2 an error (bad configuration, unknown file, I/O).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

use dropgate::config::Config;
use dropgate::domain::nhs_number::NhsNumber;
use dropgate::ledger::{FileFilter, FileRow, FileState, Ledger, PersonView, SystemClock};
use dropgate::text::escaped;
use dropgate::{daemon, keys};

#[derive(Parser)]
#[command(
    name = "dropgate",
    version,
    about = "Receive, check and record batch files from health and social care systems.",
    after_help = "Example:\n  dropgate run\n  dropgate --config /etc/dropgate/dropgate.toml check-config"
)]
struct Cli {
    /// Configuration file.
    #[arg(
        long,
        global = true,
        env = "DROPGATE_CONFIG",
        default_value = "config/dropgate.toml"
    )]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon: watch every source and process what arrives, until Ctrl-C or SIGTERM.
    #[command(
        after_help = "Example:\n  dropgate run\n\nCreates missing keys and spool folders on first start."
    )]
    Run,
    /// Check the configuration; print every problem as PATH:LINE:COL: message.
    #[command(
        after_help = "Example:\n  dropgate check-config && systemctl reload dropgate\n\nExit status 0 when valid, 2 when not."
    )]
    CheckConfig,
    /// Take files through the whole pipeline once, without the daemon. The given files are left in place.
    #[command(
        after_help = "Example:\n  dropgate ingest --source demo-carehome-drop news2_20261122.csv.age\n\nExit status 0 when every file is loaded or duplicate, 1 when any was quarantined."
    )]
    Ingest {
        /// Source the files are treated as coming from (decides partner and feed).
        #[arg(long)]
        source: String,
        /// Files to ingest.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Push files to a destination (upload under a temporary name, check the size, rename), with retries.
    #[command(
        after_help = "Example:\n  dropgate push --destination gp-inbox export_20261122.csv.age\n\nExit status 0 when every file was delivered, 1 when any was not."
    )]
    Push {
        /// Destination, as configured under [destinations.NAME].
        #[arg(long)]
        destination: String,
        /// Files to push; each keeps its file name.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Show how each remote source's latest poll went, and how many files are in each state.
    #[command(after_help = "Example:\n  dropgate status\n  dropgate status --json")]
    Status {
        /// One JSON object.
        #[arg(long)]
        json: bool,
    },
    /// List files in the ledger.
    #[command(
        after_help = "Example:\n  dropgate files --state quarantined\n  dropgate files --feed news2 --json | jq .sha256"
    )]
    Files {
        /// Only files in this state: received, loaded, quarantined or duplicate.
        #[arg(long)]
        state: Option<FileState>,
        /// Only files of this feed.
        #[arg(long)]
        feed: Option<String>,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Show one file: its history and every validation problem.
    #[command(after_help = "Example:\n  dropgate show 42")]
    Show {
        /// File id, as listed by `dropgate files`.
        id: i64,
        /// One JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Process a quarantined file again, after fixing the configuration.
    #[command(after_help = "Example:\n  dropgate check-config && dropgate replay 42")]
    Replay {
        /// File id of a quarantined file.
        id: i64,
    },
    /// Create the keys the configuration names, where missing; print the age recipient.
    #[command(
        after_help = "Example:\n  dropgate keygen\n  dropgate keygen --force   # replace every key"
    )]
    Keygen {
        /// Replace existing keys (files encrypted to the old recipient can no longer be read).
        #[arg(long)]
        force: bool,
    },
    /// Hash a partner's SFTP password (read from standard input) for `password_hash`.
    #[command(
        after_help = "Example:\n  dropgate hash-password < password.txt\n\nPrints an argon2id PHC string; the password itself is never stored."
    )]
    HashPassword,
    /// Look up service users.
    #[command(
        subcommand,
        after_help = "Example:\n  dropgate patients find --nhs-number '943 476 5919'"
    )]
    Patients(Patients),
}

#[derive(Subcommand)]
enum Patients {
    /// Find a person and all their linked detail ids, with record counts.
    #[command(
        after_help = "Example:\n  dropgate patients find --nhs-number '943 476 5919'\n  dropgate patients find --local-id demo-carehome:R0001 --json"
    )]
    Find {
        #[command(flatten)]
        who: Who,
        /// One JSON object.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
#[group(required = true, multiple = false)]
struct Who {
    /// NHS number (spaces and hyphens allowed).
    #[arg(long)]
    nhs_number: Option<String>,
    /// SOURCE:ID, the sender's own identifier.
    #[arg(long)]
    local_id: Option<String>,
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_level = if matches!(cli.command, Command::Run) {
        "info"
    } else {
        "warn"
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("DROPGATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    // Libraries log protocol traffic at debug and trace level: FTP passwords
    // and file names (which may carry patient identifiers) among it. Only
    // dropgate's own events are shown below info, whatever the filter says.
    let dependencies_at_info = tracing_subscriber::filter::filter_fn(|meta| {
        *meta.level() <= tracing::Level::INFO || meta.target().starts_with("dropgate")
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .finish()
        .with(dependencies_at_info)
        .init();
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
                daemon::run(config, shutdown).await?;
                anyhow::Ok(())
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Keygen { force } => {
            let config = config_or_exit!(&cli.config);
            for key in keys::ensure(&config, force)? {
                let verb = if key.created { "created" } else { "exists " };
                println!("{verb} {:<13} {}", key.what, key.path.display());
            }
            let identity = keys::load_identity(&config.keys.age_identity)?;
            println!("age recipient: {}", identity.to_public());
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
            let status = ledger.status()?;
            if json {
                println!("{}", serde_json::to_string(&status)?);
                return Ok(ExitCode::SUCCESS);
            }
            println!("files:");
            for (state, count) in &status.files {
                println!("  {state:<12} {count}");
            }
            println!("sources:");
            for name in config.sources.keys() {
                match status.sources.iter().find(|s| &s.source == name) {
                    None => println!(
                        "  {name:<24} (no polls recorded; local folders are watched, not polled)"
                    ),
                    Some(s) => {
                        let state = match (&s.last_error_at, &s.last_ok_at) {
                            (Some(err), Some(ok)) if err <= ok => "ok",
                            (None, _) => "ok",
                            _ => "failing",
                        };
                        println!("  {name:<24} {state:<8} checked {}", s.checked_at);
                        if let (Some(error), Some(at)) = (&s.last_error, &s.last_error_at) {
                            println!("  {:<24} last error at {at}: {}", "", escaped(error));
                        }
                        if s.cleanups_pending > 0 {
                            println!(
                                "  {:<24} {} received file(s) not yet removed from the server, retried with backoff: {}",
                                "",
                                s.cleanups_pending,
                                escaped(s.cleanup_error.as_deref().unwrap_or("-"))
                            );
                        }
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Files { state, feed, json } => {
            let config = config_or_exit!(&cli.config);
            let ledger = open_ledger(&config)?;
            let rows = ledger.files(&FileFilter { state, feed })?;
            if json {
                for row in &rows {
                    println!("{}", serde_json::to_string(row)?);
                }
            } else {
                print_files(&rows);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Show { id, json } => {
            let config = config_or_exit!(&cli.config);
            let ledger = open_ledger(&config)?;
            show(&ledger, id, json)
        }
        Command::Replay { id } => {
            let config = Arc::new(config_or_exit!(&cli.config));
            let (file, processed_here) = daemon::replay(config, id)?;
            if !processed_here {
                println!("{id}: queued; the running daemon took it ({})", file.state);
            } else {
                print_outcome(&file);
            }
            Ok(exit_for(&[file]))
        }
        Command::Patients(Patients::Find { who, json }) => {
            let config = config_or_exit!(&cli.config);
            let ledger = open_ledger(&config)?;
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
                (None, None) => unreachable!("clap requires one of the two"),
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

fn ingest(config: Arc<Config>, source: &str, paths: &[PathBuf]) -> anyhow::Result<ExitCode> {
    let files = daemon::ingest(config, source, paths)?;
    for file in &files {
        print_outcome(file);
    }
    Ok(exit_for(&files))
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
            path,
            name: &file_name,
            file_id: None,
            sha256: &sha256,
            size: bytes.len() as u64,
        };
        match runtime.block_on(dropgate::forward::deliver(destination, &parcel, &ledger)) {
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

fn exit_for(files: &[FileRow]) -> ExitCode {
    if files
        .iter()
        .all(|f| matches!(f.state, FileState::Loaded | FileState::Duplicate))
    {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn print_outcome(file: &FileRow) {
    match file.state {
        FileState::Loaded => println!(
            "{}\t{}\tloaded\t{} rows, {} records{}",
            file.id,
            escaped(&file.name),
            file.rows_loaded.unwrap_or(0),
            file.records,
            if file.problems > 0 {
                format!(
                    ", {} problems in skipped rows (dropgate show {})",
                    file.problems, file.id
                )
            } else {
                String::new()
            }
        ),
        FileState::Duplicate => println!(
            "{}\t{}\tduplicate\tsame content as file {}",
            file.id,
            escaped(&file.name),
            file.duplicate_of.unwrap_or(0)
        ),
        FileState::Quarantined => println!(
            "{}\t{}\tquarantined\t{}: {} problem(s); see dropgate show {}",
            file.id,
            escaped(&file.name),
            file.reason.as_deref().unwrap_or("unknown"),
            file.problems,
            file.id
        ),
        FileState::Received => println!("{}\t{}\treceived", file.id, escaped(&file.name)),
    }
}

fn print_files(rows: &[FileRow]) {
    println!(
        "{:>6}  {:<11}  {:<12}  {:<20}  {:>9}  {:>10}  {:<24}  NAME",
        "ID", "STATE", "FEED", "SOURCE", "RECORDS", "SIZE", "RECEIVED"
    );
    for f in rows {
        println!(
            "{:>6}  {:<11}  {:<12}  {:<20}  {:>9}  {:>10}  {:<24}  {}{}",
            f.id,
            f.state,
            f.feed.as_deref().unwrap_or("-"),
            f.source,
            f.records,
            f.size,
            f.received_at,
            escaped(&f.name),
            f.reason
                .as_deref()
                .map(|r| format!("  ({r})"))
                .unwrap_or_default()
        );
    }
}

fn show(ledger: &Ledger, id: i64, json: bool) -> anyhow::Result<ExitCode> {
    let file = ledger.file(id)?;
    let events = ledger.events(id)?;
    let problems = ledger.problems(id)?;
    if json {
        let value = serde_json::json!({ "file": file, "events": events, "problems": problems });
        println!("{}", serde_json::to_string(&value)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("file {}  {}", file.id, escaped(&file.name));
    println!(
        "  state     {}{}",
        file.state,
        file.reason
            .as_deref()
            .map(|r| format!(" ({r})"))
            .unwrap_or_default()
    );
    println!("  source    {} (partner {})", file.source, file.partner);
    println!("  feed      {}", file.feed.as_deref().unwrap_or("-"));
    println!("  sha256    {}", file.sha256);
    println!("  size      {} bytes", file.size);
    if let Some(rows) = file.rows_read {
        println!(
            "  rows      {} read, {} loaded; {} records",
            rows,
            file.rows_loaded.unwrap_or(0),
            file.records
        );
    }
    if let Some(of) = file.duplicate_of {
        println!("  duplicate of file {of}");
    }
    println!("events:");
    for e in &events {
        println!(
            "  {}  {:<20} {}",
            e.at,
            e.event,
            escaped(&e.detail.as_ref().map(|d| d.to_string()).unwrap_or_default())
        );
    }
    if !problems.is_empty() {
        println!(
            "problems ({} found, {} listed):",
            file.problems,
            problems.len()
        );
        for p in &problems {
            let place = match (&p.column, p.field) {
                (Some(c), Some(f)) => format!("line {}, column `{c}` (field {f})", p.line),
                (Some(c), None) => format!("line {}, column `{c}`", p.line),
                (None, Some(f)) => format!("line {}, field {f}", p.line),
                (None, None) if p.line == 0 => "file".to_string(),
                (None, None) => format!("line {}", p.line),
            };
            println!(
                "  {}: {} [{}]",
                escaped(&place),
                escaped(&p.message),
                p.code
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_person(person: &PersonView) {
    match &person.nhs_number {
        Some(n) => println!("person {}  NHS number {}", person.person_id, n),
        None => println!("person {}  (no NHS number)", person.person_id),
    }
    for d in &person.details {
        println!(
            "  detail {:>6}  {}:{}  observations {}  care records {}  transactions {}  red bags {}  alerts {}",
            d.detail_id,
            d.source,
            escaped(&d.local_id),
            d.observations,
            d.care_record_entries,
            d.care_transactions,
            d.red_bags,
            d.alerts
        );
    }
}

fn print_banner(config: &Config) -> anyhow::Result<()> {
    for key in keys::ensure(config, false)? {
        if key.created {
            println!("created {} {}", key.what, key.path.display());
        }
    }
    let identity = keys::load_identity(&config.keys.age_identity)?;
    println!("dropgate {}", env!("CARGO_PKG_VERSION"));
    println!("  config         {}", config.file.display());
    println!("  ledger         {}", config.daemon.ledger.display());
    println!("  age recipient  {}", identity.to_public());
    for source in config.sources.values() {
        match &source.kind {
            dropgate::config::SourceKind::Local(local) => println!(
                "  drop folder    {}  (source {}, partner {})",
                local.path.display(),
                source.name,
                source.partner
            ),
            dropgate::config::SourceKind::Remote(remote) => println!(
                "  polls          {}  {}  (source {}, partner {})",
                remote.endpoint, remote.schedule, source.name, source.partner
            ),
        }
    }
    if let Some(sftp) = &config.sftp_server {
        for (name, partner) in &config.partners {
            if let Some(account) = &partner.sftp {
                let key = account
                    .demo_key
                    .as_ref()
                    .map(|k| format!("-i {} ", k.display()))
                    .unwrap_or_default();
                println!(
                    "  SFTP drop      sftp {key}-P {} {name}@{}   then: put FILE inbox/",
                    sftp.listen.port(),
                    sftp.listen.ip()
                );
            }
        }
    }
    println!(
        "Encrypt with:   age -r {} -o news2_x.csv.age news2_x.csv",
        identity.to_public()
    );
    Ok(())
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
