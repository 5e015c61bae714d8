//! The checked configuration: what the rest of dropgate reads, every
//! setting resolved and valid.

use super::*;

/// Largest file a source takes unless it says otherwise, as the embedded
/// SFTP server's `max_file_size`.
pub const DEFAULT_MAX_FILE_SIZE: u64 = 10 << 30;

/// How long the files in hand may take to finish after SIGTERM, unless
/// `[daemon] stop_deadline` says otherwise. Under systemd's default
/// `TimeoutStopSec` (90 s), with room for closing the ledger.
pub const DEFAULT_STOP_DEADLINE: std::time::Duration = std::time::Duration::from_secs(30);

/// Days payloads are kept unless `[daemon] retention_days` says otherwise.
pub const DEFAULT_RETENTION_DAYS: u32 = 90;

/// Free space the spool keeps unless `[daemon] min_free_space` says otherwise:
/// room for the ledger to finish what it has begun.
pub const DEFAULT_MIN_FREE_SPACE: u64 = 128 << 20;

/// When the daemon purges, unless `[daemon] purge_cron` says otherwise.
pub const DEFAULT_PURGE_CRON: &str = "30 2 * * *";

/// Names a sender may use while a file is still being written; never taken.
pub const TEMPORARY_SUFFIXES: [&str; 3] = [".part", ".tmp", ".filepart"];

/// The checked configuration.
#[derive(Debug)]
pub struct Config {
    /// The file it was read from.
    pub file: PathBuf,
    /// SHA-256 of the text checked, as audited when the daemon starts on it.
    pub sha256: String,
    pub daemon: Daemon,
    pub keys: Keys,
    pub partners: BTreeMap<String, Partner>,
    pub sources: BTreeMap<String, Source>,
    pub feeds: BTreeMap<String, Feed>,
    /// Present when any partner has an SFTP account.
    pub sftp_server: Option<SftpServer>,
    /// Present when `[http]` is.
    pub http: Option<Http>,
    pub alerts: Alerts,
    pub destinations: BTreeMap<String, Destination>,
    pub controllers: BTreeMap<String, Controller>,
    pub grants: BTreeMap<String, Grant>,
    pub schedules: BTreeMap<String, ExportSchedule>,
    pub routes: BTreeMap<String, Route>,
    /// Allowed but dangerous settings, as `PATH:LINE:COL: warning: ...`.
    pub warnings: Vec<ConfigError>,
}

impl Config {
    /// Days a payload from `partner`, of `feed` when it matched one, is kept.
    pub fn payload_days(&self, partner: &str, feed: Option<&str>) -> u32 {
        feed.and_then(|f| self.feeds.get(f))
            .and_then(|f| f.retention_days)
            .or_else(|| self.partners.get(partner).and_then(|p| p.retention_days))
            .unwrap_or(self.daemon.retention_days)
    }

    /// The fewest days any payload is kept.
    pub fn shortest_payload_days(&self) -> u32 {
        let feeds = self.feeds.values().filter_map(|f| f.retention_days);
        let partners = self.partners.values().filter_map(|p| p.retention_days);
        feeds
            .chain(partners)
            .fold(self.daemon.retention_days, u32::min)
    }
}

/// A server files are pushed to.
#[derive(Debug, Clone)]
pub struct Destination {
    pub name: String,
    pub endpoint: crate::remote::Endpoint,
    pub attempts: u32,
    pub backoff: crate::remote::Backoff,
    pub timeout: Duration,
}

#[derive(Debug)]
pub struct Daemon {
    pub spool: PathBuf,
    pub ledger: PathBuf,
    pub time_zone: chrono_tz::Tz,
    pub retention_days: u32,
    /// When the daemon purges what is past retention.
    pub purge: crate::schedule::Cron,
    /// Free space kept on the spool's file system: below it, no new file is taken.
    pub min_free_space: u64,
    pub max_errors_per_file: usize,
    pub stop_deadline: std::time::Duration,
}

#[derive(Debug, Clone)]
pub struct Http {
    pub listen: std::net::SocketAddr,
}

#[derive(Debug)]
pub struct Keys {
    pub age_identity: PathBuf,
    pub signing_key: PathBuf,
    pub ssh_host_key: PathBuf,
}

#[derive(Debug)]
pub struct Partner {
    pub name: String,
    pub ods_code: Option<String>,
    pub sftp: Option<PartnerSftp>,
    /// The data controller its records belong to.
    pub controller: Option<String>,
    /// Recipients exports to it are encrypted to.
    pub age: Option<PartnerAge>,
    /// Where its receipts go, when it gets them.
    pub receipts: Option<Receipts>,
    /// Days its payloads are kept, when not `[daemon]`'s.
    pub retention_days: Option<u32>,
}

/// Where a partner's receipts go besides the spool (and its SFTP `receipts/`).
#[derive(Debug, Clone, Default)]
pub struct Receipts {
    pub folder: Option<PathBuf>,
    pub destination: Option<String>,
}

/// A partner's age recipients: exports to it can be encrypted to them.
#[derive(Debug, Clone)]
pub struct PartnerAge {
    /// Files (read when an export is made, so a demo identity made on first
    /// run counts) and inline `age1...` recipients.
    pub recipients: Vec<AgeRecipients>,
    pub demo_identity: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub enum AgeRecipients {
    File(PathBuf),
    Line(String),
}

/// An organisation that decides who receives the data it controls.
#[derive(Debug)]
pub struct Controller {
    pub name: String,
}

/// A controller's decision that a consumer may receive some of its data.
#[derive(Debug, Clone)]
pub struct Grant {
    pub name: String,
    pub controller: String,
    pub consumer: String,
    pub records: Vec<crate::records::Kind>,
    /// Only records from these feeds; `None` for every feed.
    pub feeds: Option<Vec<String>>,
    pub purpose: String,
    pub valid_from: chrono::NaiveDate,
    pub valid_until: Option<chrono::NaiveDate>,
}

impl Grant {
    /// Whether the grant is in force on `day` (a date in the configured time zone).
    pub fn in_force(&self, day: chrono::NaiveDate) -> bool {
        self.valid_from <= day && self.valid_until.is_none_or(|until| day <= until)
    }
}

/// An export made on a timetable for one consumer.
#[derive(Debug, Clone)]
pub struct ExportSchedule {
    pub name: String,
    pub consumer: String,
    pub cron: crate::schedule::Cron,
    pub mode: ExportMode,
    pub formats: Vec<crate::export::Format>,
    pub records: Vec<crate::records::Kind>,
    pub catch_up: CatchUp,
    /// Data files are encrypted to the consumer's age recipients.
    pub encrypt: bool,
    /// `[destinations.NAME]` each export is pushed to.
    pub destinations: Vec<String>,
    /// How trend counts are made safe to publish.
    pub disclosure: crate::records::trend::Disclosure,
}

/// Every file of a feed forwarded to a destination, under a grant.
#[derive(Debug, Clone)]
pub struct Route {
    pub name: String,
    pub feed: String,
    pub destination: String,
    pub consumer: String,
    pub when: RouteWhen,
    /// Each file is encrypted to these before it leaves, when set.
    pub encrypt_to: Option<Vec<AgeRecipients>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteWhen {
    /// Files that passed every check.
    Loaded,
    /// Every file once received, whatever its checks say.
    Received,
}

impl RouteWhen {
    /// The file states a route forwards.
    pub fn states(self) -> &'static [&'static str] {
        match self {
            RouteWhen::Loaded => &["loaded"],
            RouteWhen::Received => &["received", "loaded", "quarantined"],
        }
    }
}

impl Grant {
    /// Whether the grant covers every file of `feed`, which maps `kinds`: the
    /// grant must give each of those kinds (a raw file holds them all) and,
    /// when it names feeds, this one.
    pub fn covers_feed(&self, feed: &str, kinds: &[crate::records::Kind]) -> bool {
        let every_kind = !kinds.is_empty() && kinds.iter().all(|k| self.records.contains(k));
        every_kind
            && self
                .feeds
                .as_ref()
                .is_none_or(|feeds| feeds.iter().any(|f| f == feed))
    }
}

impl Feed {
    /// The record kinds its mapping makes.
    pub fn kinds(&self) -> Vec<crate::records::Kind> {
        self.mapping.kinds()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportMode {
    /// What was loaded since the schedule's last complete export.
    Incremental,
    /// Everything granted.
    Snapshot,
}

impl ExportMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ExportMode::Incremental => "incremental",
            ExportMode::Snapshot => "snapshot",
        }
    }
}

/// What a schedule does about runs missed while dropgate was not running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CatchUp {
    /// The latest missed run happens once, at start.
    Once,
    Skip,
}

/// A partner's account on the embedded SFTP server.
#[derive(Debug, Clone)]
pub struct PartnerSftp {
    /// Key files (read when the server starts, so a demo key created on
    /// first run counts) and inline key lines.
    pub authorized_keys: Vec<AuthorizedKeys>,
    pub demo_key: Option<PathBuf>,
    /// The partner sees a read-only `outbox/`.
    pub outbox: bool,
    /// An argon2 PHC hash: password logins are allowed only when set.
    pub password_hash: Option<String>,
}

#[derive(Debug, Clone)]
pub enum AuthorizedKeys {
    File(PathBuf),
    Line(String),
}

/// The embedded SFTP server.
#[derive(Debug, Clone, PartialEq)]
pub struct SftpServer {
    pub listen: std::net::SocketAddr,
    pub max_file_size: u64,
    pub max_sessions_per_partner: usize,
    pub idle_timeout: Duration,
    pub ban_after_failures: u32,
    pub ban_window: Duration,
    pub ban_time: Duration,
    pub max_connections: usize,
    pub max_connections_per_address: usize,
    pub login_timeout: Duration,
    pub max_handles_per_session: usize,
    pub max_open_files_per_partner: usize,
    pub max_unfinished_uploads: usize,
    pub max_unfinished_bytes: u64,
    pub unfinished_upload_ttl: Duration,
}

#[derive(Debug)]
pub struct Source {
    pub name: String,
    pub partner: String,
    pub kind: SourceKind,
}

#[derive(Debug)]
pub enum SourceKind {
    Local(LocalSource),
    /// A partner's SFTP or FTP server, polled.
    Remote(Box<RemoteSource>),
}

/// A partner's SFTP or FTP server that dropgate polls.
#[derive(Debug, Clone)]
pub struct RemoteSource {
    pub endpoint: crate::remote::Endpoint,
    pub patterns: GlobSet,
    pub schedule: crate::schedule::Schedule,
    pub min_age: Duration,
    pub after: AfterTake,
    pub done_marker: Option<String>,
    pub timeout: Duration,
    pub backoff: crate::remote::Backoff,
    /// Larger files are left on the server, never downloaded.
    pub max_file_size: u64,
}

/// What happens to a remote file once dropgate has received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterTake {
    Delete,
    Move(String),
    /// Left where it is; never taken again while its path, size and time are unchanged.
    Leave,
}

#[derive(Debug, Clone)]
pub struct LocalSource {
    pub path: PathBuf,
    pub recursive: bool,
    /// Larger files are left in the folder, never copied.
    pub max_file_size: u64,
    pub min_age: Duration,
    pub check_interval: Duration,
    pub rescan_interval: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encryption {
    /// Every file must be age-encrypted; plaintext is quarantined.
    Age,
    /// Files are plaintext.
    None,
    /// age when the content starts with an age header, plaintext otherwise.
    Optional,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnError {
    RejectFile,
    SkipInvalidRows,
}

#[derive(Debug)]
pub struct Feed {
    pub name: String,
    pub partner: String,
    pub patterns: GlobSet,
    pub encryption: Encryption,
    pub on_error: OnError,
    pub schema: Schema,
    pub mapping: crate::records::Mapping,
    pub expect: Expectations,
    /// Days its payloads are kept, when not its partner's or `[daemon]`'s.
    pub retention_days: Option<u32>,
    /// Days its records are kept; `None`: kept.
    pub record_retention_days: Option<u32>,
}

/// What is normal for a feed (`[feeds.NAME.expect]`); each check is off
/// when `None`.
#[derive(Debug, Clone, Default)]
pub struct Expectations {
    /// Times by which a file must have come, and how long before each one a
    /// file counts.
    pub arrives_by: Option<(crate::schedule::Cron, Duration)>,
    pub row_count: Option<Band>,
    pub quarantine_rate: Option<Band>,
}

impl Expectations {
    pub fn is_set(&self) -> bool {
        self.arrives_by.is_some() || self.row_count.is_some() || self.quarantine_rate.is_some()
    }
}

/// A percentage over a number of files.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Band {
    pub percent: u32,
    pub files: u32,
}

/// `[alerts]`: where alerts are sent.
#[derive(Debug, Clone, Default)]
pub struct Alerts {
    pub command: Option<Vec<String>>,
    pub destination: Option<String>,
}
