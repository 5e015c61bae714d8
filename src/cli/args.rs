//! The command line: commands, their arguments and examples.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use dropgate::ledger::FileState;

#[derive(Parser)]
#[command(
    name = "dropgate",
    version,
    about = "Receive, check and record batch files from health and social care systems.",
    after_help = "Example:\n  dropgate run\n  dropgate --config /etc/dropgate/dropgate.toml check-config"
)]
pub(super) struct Cli {
    /// Configuration file.
    #[arg(
        long,
        global = true,
        env = "DROPGATE_CONFIG",
        default_value = "config/dropgate.toml"
    )]
    pub(super) config: PathBuf,
    /// How log lines on stderr look: `text` for people, `json` (one object per line)
    /// for log shippers; `auto` is text, without times and with syslog priority
    /// prefixes when stderr is systemd's journal.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Auto)]
    pub(super) log_format: LogFormat,
    #[command(subcommand)]
    pub(super) command: Command,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub(super) enum LogFormat {
    Auto,
    Text,
    Json,
}

#[derive(Subcommand)]
pub(super) enum Command {
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
    /// Show sources, feeds today, destinations, schedules, disk and active alerts.
    #[command(after_help = "Example:\n  dropgate status\n  dropgate status --json")]
    Status {
        /// One JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Print a shell completion script for dropgate.
    #[command(
        after_help = "Example:\n  dropgate completions bash | sudo tee /usr/share/bash-completion/completions/dropgate"
    )]
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Print dropgate's man page (roff).
    #[command(
        after_help = "Example:\n  dropgate man | sudo tee /usr/local/share/man/man1/dropgate.1 >/dev/null"
    )]
    Man,
    /// Show the alerts raised and not cleared (a file that did not come by its time,
    /// a row count out of its band, too many quarantines), or the newest events.
    #[command(
        after_help = "Example:\n  dropgate alerts\n  dropgate alerts --history 50 --json\n\nExit status 0 when no alert is active, 1 when one is."
    )]
    Alerts {
        /// The newest N alert events, raised and cleared, instead.
        #[arg(long, value_name = "N")]
        history: Option<usize>,
        /// One JSON object per line.
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
    /// Write a file's bytes exactly as received (the ciphertext, for an
    /// encrypted feed), from the spool or, for a small file, the ledger.
    #[command(
        after_help = "Example:\n  dropgate payload 42 --output 42.csv.age\n  dropgate payload 42 | sha256sum\n\nAudited. Exit status 1 when the file is unknown or its payload is no longer kept."
    )]
    Payload {
        /// File id, as listed by `dropgate files`.
        id: i64,
        /// Write here (created, never overwritten) instead of standard output.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Delete what is past retention now: settled files' payloads (originals,
    /// quarantine reports, receipts), exports, and the records of feeds with
    /// `record_retention_days`. The daemon does this at `[daemon] purge_cron`.
    #[command(
        after_help = "Example:\n  dropgate purge --dry-run\n  dropgate purge\n\nThe ledger keeps every file's row, hash, size, counts and history, and the trend counts of the records deleted. What a legal hold covers (see `dropgate hold`), a file a route has still to forward and an export still being pushed are kept. Audited."
    )]
    Purge {
        /// Count what would be deleted, and delete nothing.
        #[arg(long)]
        dry_run: bool,
        /// One JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Place a legal hold: nothing of one file, or from and to one partner, is
    /// purged until the hold is released.
    #[command(
        after_help = "Example:\n  dropgate hold --file 42 --reason \"complaint 2026-118: keep the original\"\n  dropgate hold --partner carehome --reason \"inquiry, legal ref 77\"\n\nRecorded as an audit event with who and why; prints the hold's id."
    )]
    Hold {
        /// A file id, as listed by `dropgate files`.
        #[arg(long, required_unless_present = "partner", conflicts_with = "partner")]
        file: Option<i64>,
        /// A partner: its files, their receipts and records, and exports made for it.
        #[arg(long)]
        partner: Option<String>,
        /// Why, for the audit trail (no patient identifiers).
        #[arg(long)]
        reason: String,
    },
    /// Release a legal hold; what it kept is purged by the next purge if past retention.
    #[command(
        after_help = "Example:\n  dropgate release 3 --reason \"complaint 2026-118 closed\"\n\nRecorded as an audit event with who and why."
    )]
    Release {
        /// The hold's id, as `dropgate holds` lists it.
        hold: i64,
        /// Why, for the audit trail (no patient identifiers).
        #[arg(long)]
        reason: String,
    },
    /// List the legal holds in force.
    #[command(after_help = "Example:\n  dropgate holds\n  dropgate holds --all --json")]
    Holds {
        /// Released holds too.
        #[arg(long)]
        all: bool,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Process a quarantined file again, after fixing the configuration.
    #[command(after_help = "Example:\n  dropgate check-config && dropgate replay 42")]
    Replay {
        /// File id of a quarantined file.
        id: i64,
    },
    /// Start a new deployment in DIR: a commented starter config, keys, spool and
    /// ledger; prints the next steps. Never writes over an existing config.
    #[command(
        after_help = "Example:\n  dropgate init /srv/dropgate\n  dropgate --config /srv/dropgate/config/dropgate.toml check-config"
    )]
    Init {
        /// The deployment's folder (made when missing): DIR/config, DIR/spool.
        dir: PathBuf,
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
    /// Check sample files against a feed's schema.
    #[command(
        subcommand,
        after_help = "Example:\n  dropgate schema check news2 sample.csv"
    )]
    Schema(Schema),
    /// Make a schedule's export now, by the same path as its timetable; the run is marked manual.
    #[command(
        after_help = "Example:\n  dropgate export demo-nightly\n\nExit status 0 when the export is complete, 1 when no grant in force allows it, 2 on an error."
    )]
    Export {
        /// Schedule, as configured under [schedules.NAME].
        schedule: String,
        /// One JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Push a complete export again to its schedule's destinations (or one of them); refused unless it still verifies and its grants are still in force.
    #[command(
        after_help = "Example:\n  dropgate resend demo-nightly-20261203T013000Z-1 --to hospital-sftp\n\nExit status 0 when every push is delivered, 1 when one is not, 2 when the export cannot be sent again."
    )]
    Resend {
        /// Export id, as `dropgate schedules` and the outbox folder name show it.
        export_id: String,
        /// Only this destination of the export's schedule.
        #[arg(long)]
        to: Option<String>,
    },
    /// List every schedule with its last run and its next.
    #[command(after_help = "Example:\n  dropgate schedules\n  dropgate schedules --json")]
    Schedules {
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// List every grant: which controller lets which consumer have what, and its last use.
    #[command(after_help = "Example:\n  dropgate grants")]
    Grants {
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Print the `allowed_signers` line consumers use to verify exports with `ssh-keygen -Y verify`.
    #[command(
        after_help = "Example:\n  dropgate signing-key > allowed_signers\n  ssh-keygen -Y verify -f allowed_signers -I dropgate -n dropgate-export -s manifest.json.sig < manifest.json"
    )]
    SigningKey,
    /// Check an export folder as the stock tools would: both signatures, every file's SHA-256 and size.
    #[command(
        after_help = "Example:\n  dropgate verify spool/outbox/demo-hospital/demo-nightly-20261203T013000Z-7\n  dropgate verify ./export --allowed-signers allowed_signers\n\nExit status 0 when it verifies, 1 when it does not (the reason is printed)."
    )]
    Verify {
        /// The export folder (holding manifest.json).
        folder: PathBuf,
        /// OpenSSH allowed_signers file; default: this dropgate's own signing key.
        #[arg(long)]
        allowed_signers: Option<PathBuf>,
    },
    /// Look up service users.
    #[command(
        subcommand,
        after_help = "Example:\n  dropgate patients find --nhs-number '943 476 5919'"
    )]
    Patients(Patients),
    /// Check the audit trail.
    #[command(subcommand, after_help = "Example:\n  dropgate audit verify")]
    Audit(Audit),
}

#[derive(Subcommand)]
pub(super) enum Audit {
    /// Walk the audit trail's hash chain, check every signed checkpoint against this
    /// dropgate's signing keys (current and retired), and check that no newest rows were
    /// cut off (against spool/audit-head.json); name the first broken row.
    #[command(
        after_help = "Example:\n  dropgate audit verify\n  dropgate audit verify --json\n\nExit status 0 when the trail is intact, 1 when a row is broken, 2 on an error."
    )]
    Verify {
        /// One JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Write the audit trail as JSON lines, one row each with its hashes, checkpoints
    /// among them, for a data controller to keep and verify offline
    /// (scripts/verify-audit-export, with python3 and ssh-keygen).
    #[command(
        after_help = "Example:\n  dropgate audit export --since 2026-12-01 > audit-202612.jsonl\n  dropgate signing-key > allowed_signers\n  scripts/verify-audit-export allowed_signers < audit-202612.jsonl"
    )]
    Export {
        /// Rows from this day on (YYYY-MM-DD, UTC); every row without it.
        #[arg(long)]
        since: Option<chrono::NaiveDate>,
    },
}

#[derive(Subcommand)]
pub(super) enum Schema {
    /// Draft a feed section from a sample CSV or XML file: each column's type guessed from its
    /// values (for XML, the record element and each column's path too), every guess marked
    /// REVIEW. Prints TOML to add to the configuration.
    #[command(
        after_help = "Example:\n  dropgate schema infer --partner demo-carehome --feed clt sample.csv >> config/dropgate.toml\n  dropgate schema infer --partner demo-carehome --feed redbag --format xml transfers.xml\n  dropgate check-config && dropgate schema check clt sample.csv\n\nThe sample is read, never recorded; no value from it is printed unless --code-lists is given."
    )]
    Infer {
        /// The sample (plaintext CSV or XML; decrypt an age file first).
        file: std::path::PathBuf,
        /// `csv` or `xml`; by default `xml` when the file's name ends `.xml` or its
        /// first character that is not a space is `<`.
        #[arg(long, value_parser = ["csv", "xml"])]
        format: Option<String>,
        /// Name of the drafted feed.
        #[arg(long, default_value = "drafted")]
        feed: String,
        /// Partner that sends it, as configured under [partners.NAME].
        #[arg(long)]
        partner: String,
        /// Data rows read at most.
        #[arg(long, default_value_t = 100_000)]
        rows: u64,
        /// Print the values of columns that look like code lists (short values that repeat).
        /// Only for samples whose such columns hold no personal details.
        #[arg(long)]
        code_lists: bool,
    },
    /// Read a sample as FEED would (decrypting it if it is age-encrypted) and print every
    /// problem; nothing is loaded or recorded.
    #[command(
        after_help = "Example:\n  dropgate schema check news2 news2_20261122.csv\n\nExit status 0 when the file would be loaded, 1 when it would be quarantined, 2 for an unknown feed or file."
    )]
    Check {
        /// Feed, as configured under [feeds.NAME].
        feed: String,
        /// The sample file.
        file: std::path::PathBuf,
        /// One JSON object.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub(super) enum Patients {
    /// Find a person and all their linked detail ids, with record counts.
    #[command(
        after_help = "Example:\n  dropgate patients find --nhs-number '943 476 5919'\n  dropgate patients find --local-id demo-carehome:R0001 --json\n  dropgate patients find --family-name 'o brien' --date-of-birth 1941-02-01\n\nA name search prints every person it matches (a JSON array with --json)."
    )]
    Find {
        #[command(flatten)]
        who: Who,
        /// One JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Show everything recorded of the person a detail id belongs to, each record with its file and line.
    #[command(
        after_help = "Example:\n  dropgate patients show 17\n  dropgate patients show 17 --observations 1000 --json\n\nDetail ids are listed by `dropgate patients find`. Exit status 1 when there is no such detail."
    )]
    Show {
        /// A detail id (any of the person's).
        detail: i64,
        /// The newest observations to list.
        #[arg(long, default_value_t = 50)]
        observations: usize,
        /// One JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Link two details as one person by hand: every detail of the second's person joins the first's.
    #[command(
        after_help = "Example:\n  dropgate patients link 17 42 --reason \"same resident: confirmed with the home's manager, ticket 1234\"\n\nLater files never undo it by NHS number. Refused (exit 1) when the two persons carry different NHS numbers. Recorded as an audit event with who and why; the reason must not hold patient identifiers (one that holds an NHS number is refused)."
    )]
    Link {
        /// The detail whose person stays.
        detail: i64,
        /// The detail whose person joins it.
        other: i64,
        /// Why, for the audit trail (no patient identifiers).
        #[arg(long)]
        reason: String,
    },
    /// Give a detail a person of its own by hand, undoing a link.
    #[command(
        after_help = "Example:\n  dropgate patients unlink 42 --reason \"two residents shared an NHS number in error, ticket 1235\"\n\nLater files never link it again by NHS number. Recorded as an audit event with who and why."
    )]
    Unlink {
        detail: i64,
        /// Why, for the audit trail (no patient identifiers).
        #[arg(long)]
        reason: String,
    },
}

/// Exactly one of --nhs-number, --local-id or --family-name (checked when run).
#[derive(Args)]
pub(super) struct Who {
    /// NHS number (spaces and hyphens allowed).
    #[arg(long)]
    pub(super) nhs_number: Option<String>,
    /// SOURCE:ID, the sender's own identifier.
    #[arg(long)]
    pub(super) local_id: Option<String>,
    /// Family name, matched without regard to case, accents, spaces or apostrophes;
    /// with --date-of-birth.
    #[arg(long, requires = "date_of_birth")]
    pub(super) family_name: Option<String>,
    /// YYYY-MM-DD, with --family-name.
    #[arg(long, requires = "family_name")]
    pub(super) date_of_birth: Option<String>,
    /// Narrows a --family-name search to this gender code.
    #[arg(long, requires = "family_name")]
    pub(super) gender: Option<String>,
    /// Narrows a --family-name search to this postcode (any spacing or case).
    #[arg(long, requires = "family_name")]
    pub(super) postcode: Option<String>,
}
