//! The configuration file as written by an admin, before any cross-checks.
//!
//! Every struct denies unknown fields so a misspelt key is an error, not a
//! silently ignored setting. Values that later checks point back at are kept
//! `Spanned` so their errors carry the file position.

use serde::Deserialize;
use toml::Spanned;

/// `[daemon]`: where dropgate keeps its state.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Daemon {
    /// Root of the spool (incoming, archive, quarantine, tmp). Default `../spool`.
    pub spool: Option<String>,
    /// SQLite ledger file. Default `<spool>/ledger.db`.
    pub ledger: Option<String>,
    /// IANA time zone for schedules and displayed times. Default `Europe/London`.
    pub time_zone: Option<Spanned<String>>,
    /// Days a payload (an original, a quarantine report, a receipt, an export) is kept
    /// after it was settled or made, unless its feed or partner says otherwise. Default 90.
    pub retention_days: Option<Spanned<i64>>,
    /// Free space the spool's file system keeps: below it, new files wait where they are
    /// (SFTP uploads are refused, polls paused) until there is room. Default `128MiB`.
    pub min_free_space: Option<Spanned<String>>,
    /// When the daemon purges what is past retention: cron in the daemon's time zone.
    /// Default `30 2 * * *` (02:30 every day).
    pub purge_cron: Option<Spanned<String>>,
    /// Validation errors kept per file (the total is always counted). Default 10000.
    pub max_errors_per_file: Option<Spanned<i64>>,
    /// On SIGTERM or SIGINT, how long the files being processed may take to
    /// finish; what is not done by then stays `received` for the next start.
    /// Default `30s`.
    pub stop_deadline: Option<Spanned<String>>,
}

/// `[keys]`: key files, created by `dropgate keygen` when absent.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Keys {
    /// age X25519 identity used to decrypt incoming files. Default `keys/age-identity.txt`.
    pub age_identity: Option<String>,
    /// OpenSSH ed25519 key that signs exports (SSHSIG). Default `keys/signing_ed25519`.
    pub signing_key: Option<String>,
    /// OpenSSH host key of the embedded SFTP server. Default `keys/ssh_host_ed25519`.
    pub ssh_host_key: Option<String>,
}

/// `[partners.NAME]`: an organisation that drops or receives files.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Partner {
    /// Human-readable name shown in status and reports.
    pub name: Option<String>,
    /// ODS organisation code, when the partner has one.
    pub ods_code: Option<Spanned<String>>,
    /// An account on the embedded SFTP server; the user name is the partner name.
    pub sftp: Option<PartnerSftp>,
    /// The data controller (`[controllers.NAME]`) the records from this partner's files
    /// belong to. Without one, they are never exported.
    pub controller: Option<Spanned<String>>,
    /// age recipients that exports to this partner are encrypted to.
    pub age: Option<PartnerAge>,
    /// A receipt for every file taken from this partner (present = on).
    pub receipts: Option<PartnerReceipts>,
    /// Days the payloads from and to this partner are kept (its files, their receipts,
    /// the exports made for it), unless a feed says otherwise. Default `[daemon]`'s.
    pub retention_days: Option<Spanned<i64>>,
}

/// `[partners.NAME.receipts]`: each receipt is written to the partner's read-only
/// `receipts/` on the embedded SFTP server (when it has an account), and also:
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct PartnerReceipts {
    /// A local folder to copy each receipt into (for partners that drop into folders).
    pub folder: Option<String>,
    /// A `[destinations.NAME]` to push each receipt to (for partners that push to us).
    pub destination: Option<Spanned<String>>,
}

/// `[partners.NAME.age]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartnerAge {
    /// Recipients: `age1...` lines, or files of them (one a line, `#` comments), as
    /// `age-keygen -y` prints them.
    pub recipients: Spanned<Vec<Spanned<String>>>,
    /// A demonstration identity that `dropgate keygen` creates when missing (its
    /// recipient written beside it with `.pub`).
    pub demo_identity: Option<String>,
}

/// `[controllers.NAME]`: an organisation that decides who receives the data it controls.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Controller {
    /// Human-readable name shown in `dropgate grants`.
    pub name: Option<String>,
}

/// `[grants.NAME]`: a controller's decision that a consumer may receive some of its data.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    /// The data controller (`[controllers.NAME]`) whose data this releases.
    pub controller: Spanned<String>,
    /// The partner receiving it.
    pub consumer: Spanned<String>,
    /// Record kinds released: `service_user`, `observations`.
    pub records: Spanned<Vec<Spanned<String>>>,
    /// Only records from these feeds. Default: every feed of the controller's partners.
    pub feeds: Option<Spanned<Vec<Spanned<String>>>>,
    /// Why the consumer may have the data, as the controller recorded it.
    pub purpose: Spanned<String>,
    /// First day in force, `YYYY-MM-DD` in `[daemon] time_zone`.
    pub valid_from: Spanned<String>,
    /// Last day in force, `YYYY-MM-DD`. Default: until the grant is removed.
    pub valid_until: Option<Spanned<String>>,
}

/// `[routes.NAME]`: every file of a feed forwarded to a destination, under a grant.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// The feed whose files are forwarded.
    pub feed: Spanned<String>,
    /// The `[destinations.NAME]` they are pushed to.
    pub destination: Spanned<String>,
    /// The partner receiving them: a grant in force must give it the feed.
    pub consumer: Spanned<String>,
    /// `loaded` (only files that passed every check; default) or `received` (every
    /// file of the feed once it is durable and recorded, whatever its checks say).
    pub when: Option<Spanned<String>>,
    /// age recipients (`age1...` lines or files of them) to encrypt each file to before
    /// it leaves. Without them the file is sent decrypted: the destination's SSH or TLS
    /// protects it on the way.
    pub encrypt_to: Option<Spanned<Vec<Spanned<String>>>>,
}

/// `[schedules.NAME]`: an export made on a timetable for one consumer.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    /// The partner the export is for; it needs an SFTP account with `outbox = true`.
    pub consumer: Spanned<String>,
    /// When to run: a cron expression in `[daemon] time_zone` (5 fields, or 6-7 with seconds).
    pub cron: Spanned<String>,
    /// `incremental` (what was loaded since this schedule's last complete export) or
    /// `snapshot` (everything granted). Default `incremental`.
    pub mode: Option<Spanned<String>>,
    /// Output formats: `fhir_ndjson`, `csv`.
    pub formats: Spanned<Vec<Spanned<String>>>,
    /// Record kinds to export; each needs a grant to the consumer.
    pub records: Spanned<Vec<Spanned<String>>>,
    /// Trend counts below this (but above zero) are withheld as `suppressed`. Default 8.
    pub suppress_below: Option<Spanned<i64>>,
    /// Trend counts not withheld are rounded to the nearest multiple of this. Default 5.
    pub round_to: Option<Spanned<i64>>,
    /// Also push each export, once in the outbox, to these `[destinations.NAME]`: into
    /// a folder named as the export, the manifest last.
    pub destinations: Option<Spanned<Vec<Spanned<String>>>>,
    /// Encrypt each data file (not the manifest) to the consumer's `[partners.NAME.age]`
    /// recipients. Default false.
    pub encrypt: Option<bool>,
    /// After downtime: `once` (run the missed export once at start) or `skip`. Default `once`.
    pub catch_up: Option<Spanned<String>>,
}

/// `[partners.NAME.sftp]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartnerSftp {
    /// Public keys allowed to log in: paths to files in OpenSSH
    /// `authorized_keys` format, or key lines (`ssh-ed25519 AAAA...`).
    pub authorized_keys: Spanned<Vec<Spanned<String>>>,
    /// A demonstration key pair that `dropgate keygen` creates when missing
    /// (private key here, public key beside it with `.pub`).
    pub demo_key: Option<String>,
    /// Allow password logins too, with this argon2 hash (PHC string, from
    /// `dropgate hash-password`). Keys only when absent.
    pub password_hash: Option<Spanned<String>>,
    /// Show a read-only `outbox/` of exports addressed to this partner
    /// (`spool/outbox/<partner>/`). Default false.
    pub outbox: Option<bool>,
}

/// `[http]`: health checks and metrics over HTTP; absent, there is no listener.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Http {
    /// Address and port for `/healthz`, `/readyz` and `/metrics`. Default
    /// `127.0.0.1:9187`; anything but loopback is warned about (no login).
    pub listen: Option<Spanned<String>>,
}

/// `[sftp_server]`: the embedded SFTP server partners drop files into.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct SftpServer {
    /// Address and port to listen on. Default `127.0.0.1:2222`.
    pub listen: Option<Spanned<String>>,
    /// Largest file a partner may upload, in bytes (`10GiB`, `500MiB` or a number). Default `10GiB`.
    pub max_file_size: Option<Spanned<String>>,
    /// Sessions one partner may hold at once. Default 8.
    pub max_sessions_per_partner: Option<Spanned<i64>>,
    /// A session with no traffic for this long is closed. Default `10m`.
    pub idle_timeout: Option<Spanned<String>>,
    /// Failed logins from one address, within `ban_window`, that ban it. Default 5.
    pub ban_after_failures: Option<Spanned<i64>>,
    /// Window in which failed logins are counted. Default `10m`.
    pub ban_window: Option<Spanned<String>>,
    /// How long a ban lasts. Default `1h`.
    pub ban_time: Option<Spanned<String>>,
    /// Connections open at once, logged in or not; more are closed at once. Default 256.
    pub max_connections: Option<Spanned<i64>>,
    /// Connections open at once from one address. Default 32.
    pub max_connections_per_address: Option<Spanned<i64>>,
    /// A connection that has not logged in after this long is closed. Default `60s`.
    pub login_timeout: Option<Spanned<String>>,
    /// Files and folder listings one session may hold open at once. Default 64.
    pub max_handles_per_session: Option<Spanned<i64>>,
    /// Files one partner's sessions may hold open at once, in all. Default 256.
    pub max_open_files_per_partner: Option<Spanned<i64>>,
    /// Unfinished uploads (open, interrupted or under a temporary name) one partner
    /// may leave at once. Default 256 (more than one session can hold open).
    pub max_unfinished_uploads: Option<Spanned<i64>>,
    /// Total size of one partner's unfinished uploads. Default `20GiB`; at least `max_file_size`.
    pub max_unfinished_size: Option<Spanned<String>>,
    /// An unfinished upload untouched this long is discarded (and audited). Default `24h`.
    pub unfinished_upload_ttl: Option<Spanned<String>>,
}

/// `[sources.NAME]`: where files come from.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    /// Transport: `local` (a watched folder), or `sftp` or `ftp` (a partner's server, polled).
    pub kind: Spanned<String>,
    /// Partner whose files arrive here.
    pub partner: Spanned<String>,
    /// Folder to watch (`local`).
    pub path: Option<Spanned<String>>,
    /// Also take files from sub-folders (`local`). Default false.
    pub recursive: Option<bool>,
    /// A file must be this old on dropgate's clock, with an unchanged size, before it is taken;
    /// a file renamed into a local folder is taken at once. Default `1s` (`local`), `30s` (`sftp`).
    pub min_age: Option<Spanned<String>>,
    /// How often pending files are re-checked for completeness (`local`). Default `250ms`.
    pub check_interval: Option<Spanned<String>>,
    /// How often the whole folder is rescanned, in case change events were lost (`local`). Default `30s`.
    pub rescan_interval: Option<Spanned<String>>,
    /// Largest file taken (`10GiB`, `500MiB` or a number). Default `10GiB`. A larger one is
    /// left where it is, never copied, and reported once.
    pub max_file_size: Option<Spanned<String>>,
    /// Server name or address (`sftp`).
    pub host: Option<Spanned<String>>,
    /// Port (`sftp`). Default 22.
    pub port: Option<Spanned<i64>>,
    /// User to log in as (`sftp`).
    pub user: Option<Spanned<String>>,
    /// OpenSSH private key file to log in with (`sftp`).
    pub private_key: Option<Spanned<String>>,
    /// The server's public key, pinned (`sftp`).
    pub host_key: Option<Spanned<String>>,
    /// Remote folder to take files from (`sftp`). Default: the login folder.
    pub folder: Option<String>,
    /// File-name globs to take (`sftp`). Default `["*"]`.
    #[serde(rename = "match")]
    pub patterns: Option<Spanned<Vec<Spanned<String>>>>,
    /// Inline passwords are refused; this field exists only to say so.
    pub password: Option<Spanned<toml::Value>>,
    /// File holding the password, on its first line (`ftp`). Keep it readable by dropgate only.
    pub password_file: Option<Spanned<String>>,
    /// Environment variable holding the password (`ftp`).
    pub password_env: Option<Spanned<String>>,
    /// `explicit` (AUTH TLS; default), `implicit` (TLS from the first byte, usually port 990)
    /// or `none` (`ftp`).
    pub tls: Option<Spanned<String>>,
    /// PEM file of the certificate authorities to trust instead of the system's (`ftp`).
    pub ca_file: Option<Spanned<String>>,
    /// SHA-256 fingerprint of the one server certificate to accept, `AB:CD:...` (`ftp`).
    pub certificate_fingerprint: Option<Spanned<String>>,
    /// Must be `true` for `tls = "none"`: the password and files then cross the network readable (`ftp`).
    pub insecure_plaintext: Option<Spanned<bool>>,
    /// `passive` (PASV; default), `extended_passive` (EPSV) or `active` (PORT) (`ftp`).
    pub data_mode: Option<Spanned<String>>,
    /// `auto` (MLSD where the server offers it; default), `mlsd` or `list` (`ftp`).
    pub listing: Option<Spanned<String>>,
    /// How often the server is polled (`sftp`, `ftp`). Default `1m`.
    pub poll_interval: Option<Spanned<String>>,
    /// Poll at the times of this cron expression instead, in `[daemon] time_zone`:
    /// `0 7 * * 1-5` is 07:00 on weekdays, London time (`sftp`, `ftp`).
    pub poll_cron: Option<Spanned<String>>,
    /// After a file is received: `delete`, `move:<folder>` or `leave` (`sftp`). Default `delete`.
    pub after: Option<Spanned<String>>,
    /// A file is complete when a marker with this suffix appears beside it (`sftp`), e.g. `.done`.
    pub done_marker: Option<Spanned<String>>,
    /// Time allowed to connect and for each reply (`sftp`). Default `30s`.
    pub timeout: Option<Spanned<String>>,
    /// Wait after a failed poll; doubles each time, with jitter (`sftp`). Default `5s`.
    pub retry_initial: Option<Spanned<String>>,
    /// Longest wait after failed polls (`sftp`). Default `5m`.
    pub retry_max: Option<Spanned<String>>,
}

/// `[feeds.NAME]`: one kind of file from one partner, and what to do with it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Feed {
    /// Partner that sends this feed.
    pub partner: Spanned<String>,
    /// File-name globs (`*`, `?`, `[..]`) that select this feed's files.
    #[serde(rename = "match")]
    pub patterns: Spanned<Vec<Spanned<String>>>,
    /// `age` (must be encrypted), `none` (plaintext), or `optional` (decided by the file's content). Default `age`.
    pub encryption: Option<Spanned<String>>,
    /// File format: `csv`, `fixed` (fixed-width) or `xml`. Default `csv`.
    pub format: Option<Spanned<String>>,
    /// `reject_file` (any error quarantines the whole file) or `skip_invalid_rows`. Default `reject_file`.
    pub on_error: Option<Spanned<String>>,
    /// Longest record (a line, or several when quoted fields hold line breaks); a longer
    /// one is a problem and is never held in memory whole. Default `1MiB`.
    pub max_record_size: Option<Spanned<String>>,
    /// Longest single field. Default `256KiB`.
    pub max_field_size: Option<Spanned<String>>,
    /// CSV dialect.
    pub csv: Option<Csv>,
    /// Fixed-width settings (`format = "fixed"`).
    pub fixed: Option<Spanned<Fixed>>,
    /// XML settings (`format = "xml"`).
    pub xml: Option<Spanned<Xml>>,
    /// Declared columns, in any order; the header must name each of them.
    pub columns: Spanned<Vec<Spanned<Column>>>,
    /// Which columns become which record fields.
    pub map: Option<crate::records::RawMap>,
    /// Checks across the columns of a record.
    #[serde(default)]
    pub rules: Vec<Spanned<Rule>>,
    /// Sets of columns whose values together must not repeat within a file,
    /// e.g. `[["resident_id", "observed_at"]]`.
    pub unique: Option<Spanned<Vec<Spanned<Vec<String>>>>>,
    /// When this feed's files should come and what is normal for them; a
    /// breach is an alert.
    pub expect: Option<Spanned<Expect>>,
    /// Days this feed's payloads are kept after they settled. Default the partner's,
    /// then `[daemon]`'s.
    pub retention_days: Option<Spanned<i64>>,
    /// Days the records loaded from this feed's files are kept (counted from the day
    /// each file settled); their anonymised counts stay. Default: kept.
    pub record_retention_days: Option<Spanned<i64>>,
}

/// `[feeds.NAME.expect]`: each check is on when its setting is given.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// Times (cron, in the daemon's time zone) by which a file must have come,
    /// e.g. `0 7 * * 1-5`: by 07:00 on weekdays.
    pub arrives_by: Option<Spanned<String>>,
    /// How long before each `arrives_by` time a file counts for it. Default `24h`.
    pub within: Option<Spanned<String>>,
    /// Percent a loaded file's row count may stray, either way, from the mean of
    /// the `row_count_files` loaded before it.
    pub row_count_band: Option<Spanned<i64>>,
    /// Loaded files the newest is compared with. Default 5.
    pub row_count_files: Option<Spanned<i64>>,
    /// Highest percent of the feed's last `quarantine_files` files that may be
    /// quarantined.
    pub quarantine_rate: Option<Spanned<i64>>,
    /// Files the quarantine rate is taken over. Default 10.
    pub quarantine_files: Option<Spanned<i64>>,
}

/// `[alerts]`: where alerts go besides the ledger, `status` and `dropgate alerts`.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Alerts {
    /// A program and its arguments, run for each alert raised or cleared with
    /// the alert as JSON on standard input.
    pub command: Option<Spanned<Vec<String>>>,
    /// A `[destinations]` entry each alert is pushed to as a JSON file (a mail or
    /// ticketing gateway's drop folder).
    pub destination: Option<Spanned<String>>,
}

/// `[[feeds.NAME.rules]]`: `require` or `forbid` a column `when` another is
/// as `is`, `is_not` or `is_empty` says; or `check` two columns (`end >= start`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// A column that must have a value when the condition holds.
    pub require: Option<Spanned<String>>,
    /// A column that must be empty when the condition holds.
    pub forbid: Option<Spanned<String>>,
    /// The column the condition looks at.
    pub when: Option<Spanned<String>>,
    /// The condition holds when `when` is one of these.
    pub is: Option<Spanned<Vec<String>>>,
    /// The condition holds when `when` is none of these (or empty).
    pub is_not: Option<Spanned<Vec<String>>>,
    /// The condition holds when `when` is empty (`true`) or has a value (`false`).
    pub is_empty: Option<Spanned<bool>>,
    /// Two columns compared, `LEFT OP RIGHT` with OP one of `<` `<=` `=` `!=` `>=` `>`,
    /// spaces around it; checked when both have values.
    pub check: Option<Spanned<String>>,
    /// A date-of-birth column whose age on the date in `on` must lie within
    /// `min_years` and `max_years`.
    pub age_of: Option<Spanned<String>>,
    /// The date or datetime column the age is reckoned on.
    pub on: Option<Spanned<String>>,
    /// `age_of`: the youngest allowed, in whole years.
    pub min_years: Option<Spanned<i64>>,
    /// `age_of`: the oldest allowed, in whole years.
    pub max_years: Option<Spanned<i64>>,
}

/// `[feeds.NAME.fixed]`
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Fixed {
    /// `utf-8` (BOM optional; positions count characters), `windows-1252`, `iso-8859-1`, or `auto`. Default `utf-8`.
    pub encoding: Option<Spanned<String>>,
    /// Spaces around a value are padding and are removed. Default true.
    pub trim: Option<bool>,
    /// A first line that describes the file (an extract date, a sender's code).
    pub header_record: Option<Spanned<FixedHeaderRecord>>,
    /// A last line that counts the data lines.
    pub trailer_record: Option<Spanned<FixedTrailerRecord>>,
}

/// `[feeds.NAME.fixed.header_record]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixedHeaderRecord {
    /// What the line starts with (`HDR`); without one, the first line is it.
    pub tag: Option<Spanned<String>>,
    /// Its checked fields: as columns, each at its `start` with `length` or `end`.
    #[serde(default)]
    pub fields: Vec<Spanned<Column>>,
}

/// `[feeds.NAME.fixed.trailer_record]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixedTrailerRecord {
    /// What the line starts with (`TRL`); without one, the file's last line is it.
    pub tag: Option<Spanned<String>>,
    /// Where the number of data lines is: `{ start = 4, length = 6 }` (or `end`).
    pub count: Option<Spanned<FixedSpan>>,
    /// Where the sum of `total_of` over the data lines is.
    pub total: Option<Spanned<FixedSpan>>,
    /// The numeric column that `total` sums.
    pub total_of: Option<Spanned<String>>,
}

/// Characters of a line, from 1: `start` with `length` or `end`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixedSpan {
    pub start: Spanned<i64>,
    pub length: Option<Spanned<i64>>,
    pub end: Option<Spanned<i64>>,
}

/// `[feeds.NAME.xml]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Xml {
    /// The record element's path from the root element, `/`-separated, each
    /// name `prefix:local` with a prefix of `namespaces` or none, e.g.
    /// `/t:Transfers/t:Transfer`.
    pub record: Spanned<String>,
    /// A repeating group within the record element, e.g. `rb:Medicines/rb:Medicine`:
    /// each of its elements becomes a record of its own, the record element's
    /// other columns repeated in each. Columns whose `path` starts with it are the
    /// group's own.
    pub repeat: Option<Spanned<String>>,
    /// Prefixes for the namespaces the paths name: `{ t = "urn:example:transfer" }`.
    /// They need not be the prefixes the documents use.
    #[serde(default)]
    pub namespaces: std::collections::BTreeMap<String, String>,
    /// Deepest element nesting a file may have. Default 32.
    pub max_depth: Option<Spanned<i64>>,
    /// Most attributes one element may have. Default 64.
    pub max_attributes: Option<Spanned<i64>>,
    /// `auto` (what the XML declaration says; UTF-8 without one), `utf-8`,
    /// `windows-1252` or `iso-8859-1`. Default `auto`.
    pub encoding: Option<Spanned<String>>,
}

/// `[feeds.NAME.csv]`
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Csv {
    /// One-byte field delimiter; `\t` for tab. Default `,`.
    pub delimiter: Option<Spanned<String>>,
    /// Quote character. Default `"`.
    pub quote: Option<Spanned<String>>,
    /// The first record names the columns. With `false`, columns are taken by
    /// `position` (or in the order declared) and every record is data. Default true.
    pub header: Option<Spanned<bool>>,
    /// How header names match column names: `exact`, or `loose` (ignoring
    /// case and spaces). Default `exact`.
    pub header_match: Option<Spanned<String>>,
    /// Declared columns the header lacks: `error`, or `allow` (an optional
    /// column reads as empty; a required one is still an error). Default `error`.
    pub missing_columns: Option<Spanned<String>>,
    /// `utf-8` (BOM optional), `windows-1252`, `iso-8859-1`, or `auto`. Default `utf-8`.
    pub encoding: Option<Spanned<String>>,
    /// Columns in the file that the schema does not declare: `error` or `ignore`. Default `error`.
    pub extra_columns: Option<Spanned<String>>,
    /// A record that starts the file and describes it, before any column names.
    pub header_record: Option<Spanned<HeaderRecord>>,
    /// A record that ends the file and counts its data records.
    pub trailer_record: Option<Spanned<TrailerRecord>>,
}

/// `[feeds.NAME.csv.header_record]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderRecord {
    /// What its first field holds (`HDR`). Without it, the first record is the header record.
    pub tag: Option<Spanned<String>>,
    /// Its fields to check, each like a column with a `position` (from 1).
    #[serde(default)]
    pub fields: Vec<Spanned<Column>>,
}

/// `[feeds.NAME.csv.trailer_record]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrailerRecord {
    /// What its first field holds (`TRL`); without one, the file's last record is it.
    pub tag: Option<Spanned<String>>,
    /// The field, counting from 1, holding the number of data records.
    pub count_field: Option<Spanned<i64>>,
    /// The field, counting from 1, holding the sum of `total_of` over the data records.
    pub total_field: Option<Spanned<i64>>,
    /// The numeric column that `total_field` sums.
    pub total_of: Option<Spanned<String>>,
}

/// `[[feeds.NAME.columns]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Column {
    /// Header name, exactly as in the file (spaces and punctuation allowed).
    pub name: Spanned<String>,
    /// `format = "fixed"`: the column's first character, counting from 1.
    pub start: Option<Spanned<i64>>,
    /// `format = "fixed"`: the column's width in characters (or give `end`).
    pub length: Option<Spanned<i64>>,
    /// `format = "fixed"`: the column's last character, counting from 1.
    pub end: Option<Spanned<i64>>,
    /// `format = "xml"`: where the value is, from the record element: child
    /// elements `/`-separated, then `@attribute` for an attribute (`t:Name/t:Family`,
    /// `@id`). Default: a child element named as the column.
    pub path: Option<Spanned<String>>,
    /// Files without a header (`header = false`): the field this column is,
    /// counting from 1. Default: the order the columns are declared in.
    pub position: Option<Spanned<i64>>,
    /// `string`, `integer`, `decimal`, `date`, `datetime`, `time`, `code`, `boolean`,
    /// `nhs_number`, `postcode`, `ods_code`, `email` or `phone`.
    #[serde(rename = "type")]
    pub kind: Spanned<String>,
    /// An empty value is an error. Default false.
    pub required: Option<bool>,
    /// The value identifies a person: it is never copied into errors or reports.
    /// Always true for `nhs_number`.
    pub identifier: Option<bool>,
    /// `string`: maximum length in characters.
    pub max_length: Option<Spanned<i64>>,
    /// `string`: regular expression the whole value must match.
    pub pattern: Option<Spanned<String>>,
    /// `integer`/`decimal`: smallest allowed value.
    pub min: Option<Spanned<f64>>,
    /// `integer`/`decimal`: largest allowed value.
    pub max: Option<Spanned<f64>>,
    /// `decimal`: most digits allowed after the decimal point.
    pub scale: Option<Spanned<i64>>,
    /// `date`/`datetime`/`time`: chrono format, or `iso8601` for datetimes with an offset or `Z`.
    pub format: Option<Spanned<String>>,
    /// `code`: allowed codes, compared case-sensitively unless `ignore_case`.
    pub values: Option<Spanned<Vec<String>>>,
    /// `code`: a file next to the config holding the allowed codes, one per
    /// line or as `code,label` CSV.
    pub values_file: Option<Spanned<String>>,
    /// `code`: compare codes ignoring ASCII case. Default false.
    pub ignore_case: Option<bool>,
    /// `boolean`: words read as true. Default `["true", "Y", "1"]`.
    pub true_values: Option<Spanned<Vec<String>>>,
    /// `boolean`: words read as false. Default `["false", "N", "0"]`.
    pub false_values: Option<Spanned<Vec<String>>>,
}

/// `[destinations.NAME]`: a server files are pushed to.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Destination {
    /// Transport: `sftp` or `ftp`.
    pub kind: Spanned<String>,
    /// Server name or address.
    pub host: Option<Spanned<String>>,
    /// Port. Default 22 (`sftp`), 21 (`ftp`), 990 (`ftp` with implicit TLS).
    pub port: Option<Spanned<i64>>,
    /// User to log in as.
    pub user: Option<Spanned<String>>,
    /// OpenSSH private key file to log in with (`sftp`).
    pub private_key: Option<Spanned<String>>,
    /// The server's public key, pinned (`ssh-ed25519 AAAA...`, as in known_hosts) (`sftp`).
    pub host_key: Option<Spanned<String>>,
    /// Inline passwords are refused; this field exists only to say so.
    pub password: Option<Spanned<toml::Value>>,
    /// File holding the password, on its first line (`ftp`). Keep it readable by dropgate only.
    pub password_file: Option<Spanned<String>>,
    /// Environment variable holding the password (`ftp`).
    pub password_env: Option<Spanned<String>>,
    /// `explicit` (AUTH TLS; default), `implicit` (TLS from the first byte, usually port 990)
    /// or `none` (`ftp`).
    pub tls: Option<Spanned<String>>,
    /// PEM file of the certificate authorities to trust instead of the system's (`ftp`).
    pub ca_file: Option<Spanned<String>>,
    /// SHA-256 fingerprint of the one server certificate to accept, `AB:CD:...` (`ftp`).
    pub certificate_fingerprint: Option<Spanned<String>>,
    /// Must be `true` for `tls = "none"`: the password and files then cross the network readable (`ftp`).
    pub insecure_plaintext: Option<Spanned<bool>>,
    /// `passive` (PASV; default), `extended_passive` (EPSV) or `active` (PORT) (`ftp`).
    pub data_mode: Option<Spanned<String>>,
    /// `auto` (MLSD where the server offers it; default), `mlsd` or `list` (`ftp`).
    pub listing: Option<Spanned<String>>,
    /// Remote folder files go into. Default: the login folder.
    pub folder: Option<String>,
    /// Attempts before a delivery is given up. Default 5.
    pub attempts: Option<Spanned<i64>>,
    /// Wait before the first retry; doubles each time, with jitter. Default `2s`.
    pub retry_initial: Option<Spanned<String>>,
    /// Longest wait between attempts. Default `5m`.
    pub retry_max: Option<Spanned<String>>,
    /// Time allowed to connect and for each reply. Default `30s`.
    pub timeout: Option<Spanned<String>>,
}

/// The login settings sources and destinations share, gathered for checking.
pub struct Login {
    pub host: Option<Spanned<String>>,
    pub port: Option<Spanned<i64>>,
    pub user: Option<Spanned<String>>,
    pub private_key: Option<Spanned<String>>,
    pub host_key: Option<Spanned<String>>,
    pub password: Option<Spanned<toml::Value>>,
    pub password_file: Option<Spanned<String>>,
    pub password_env: Option<Spanned<String>>,
    pub tls: Option<Spanned<String>>,
    pub ca_file: Option<Spanned<String>>,
    pub certificate_fingerprint: Option<Spanned<String>>,
    pub insecure_plaintext: Option<Spanned<bool>>,
    pub data_mode: Option<Spanned<String>>,
    pub listing: Option<Spanned<String>>,
    pub folder: Option<String>,
}

/// Moves the login settings out of a source or destination.
macro_rules! take_login {
    ($raw:expr) => {
        $crate::config::raw::Login {
            host: $raw.host.take(),
            port: $raw.port.take(),
            user: $raw.user.take(),
            private_key: $raw.private_key.take(),
            host_key: $raw.host_key.take(),
            password: $raw.password.take(),
            password_file: $raw.password_file.take(),
            password_env: $raw.password_env.take(),
            tls: $raw.tls.take(),
            ca_file: $raw.ca_file.take(),
            certificate_fingerprint: $raw.certificate_fingerprint.take(),
            insecure_plaintext: $raw.insecure_plaintext.take(),
            data_mode: $raw.data_mode.take(),
            listing: $raw.listing.take(),
            folder: $raw.folder.take(),
        }
    };
}
pub(crate) use take_login;
