//! Configuration: the TOML file is read in two phases, as written (`raw`) and
//! then checked and resolved into the types below, so that nothing on the run
//! path ever re-checks a setting.
//!
//! Every problem is reported as `PATH:LINE:COL: message`, all of them at once:
//! each partner, source and feed is deserialised on its own so a mistake in one
//! does not hide mistakes in the others.

mod authorized_keys;
mod raw;

pub use authorized_keys::parse_authorized_line;

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use globset::{Glob, GlobSet, GlobSetBuilder};
use serde::de::DeserializeOwned;
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use crate::map::{Mapping, ObservationMapping, ServiceUserMapping};
use crate::model::Vital;
use crate::schema::{
    ColumnKind, ColumnSpec, CsvLayout, DateTimeFormat, Encoding, ExtraColumns, Layout, Schema,
};

/// Names a sender may use while a file is still being written; never taken.
pub const TEMPORARY_SUFFIXES: [&str; 3] = [".part", ".tmp", ".filepart"];

/// The checked configuration.
#[derive(Debug)]
pub struct Config {
    /// The file it was read from.
    pub file: PathBuf,
    pub daemon: Daemon,
    pub keys: Keys,
    pub partners: BTreeMap<String, Partner>,
    pub sources: BTreeMap<String, Source>,
    pub feeds: BTreeMap<String, Feed>,
    /// Present when any partner has an SFTP account.
    pub sftp_server: Option<SftpServer>,
    pub destinations: BTreeMap<String, Destination>,
    /// Allowed but dangerous settings, as `PATH:LINE:COL: warning: ...`.
    pub warnings: Vec<ConfigError>,
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
    pub max_errors_per_file: usize,
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
#[derive(Debug, Clone)]
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
    pub mapping: Mapping,
}

impl Config {
    /// Reads and checks the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigErrors {
            errors: vec![ConfigError {
                file: path.to_path_buf(),
                line: 0,
                column: 0,
                message: match e.kind() {
                    std::io::ErrorKind::NotFound => "the configuration file does not exist; \
                         give its path with --config or DROPGATE_CONFIG"
                        .to_string(),
                    _ => format!("cannot read the configuration: {e}"),
                },
            }],
        })?;
        Self::parse(path, &text)
    }

    /// Checks `text` as if read from `path` (relative paths resolve against its folder).
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigErrors> {
        let mut checker = Checker {
            file: path.to_path_buf(),
            text,
            errors: Vec::new(),
            broken_columns: HashSet::new(),
            warnings: Vec::new(),
            time_zone: chrono_tz::Europe::London,
        };
        let base = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let base = std::path::absolute(&base).unwrap_or(base);
        let config = checker.check(path, &base);
        if checker.errors.is_empty() {
            let mut config = config.expect("a config is built whenever no error was found");
            config.warnings = checker.warnings;
            Ok(config)
        } else {
            checker.errors.sort_by_key(|e| (e.line, e.column));
            Err(ConfigErrors {
                errors: checker.errors,
            })
        }
    }

    /// The feed a file from `partner` belongs to; `name` may include the
    /// sub-folder it arrived in, and only its last part is matched.
    pub fn feed_for(&self, partner: &str, name: &str) -> FeedMatch<'_> {
        let name = name.rsplit('/').next().unwrap_or(name);
        let mut found = self
            .feeds
            .values()
            .filter(|f| f.partner == partner && f.patterns.is_match(name));
        match (found.next(), found.next()) {
            (None, _) => FeedMatch::None,
            (Some(feed), None) => FeedMatch::One(feed),
            (Some(a), Some(b)) => FeedMatch::Ambiguous(a.name.clone(), b.name.clone()),
        }
    }
}

pub enum FeedMatch<'a> {
    None,
    One(&'a Feed),
    Ambiguous(String, String),
}

/// One configuration problem with its position in the file.
#[derive(Debug, Clone)]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // An error about the file as a whole has no position to point at.
        if self.line == 0 {
            return write!(f, "{}: {}", self.file.display(), self.message);
        }
        write!(
            f,
            "{}:{}:{}: {}",
            self.file.display(),
            self.line,
            self.column,
            self.message
        )
    }
}

/// Every problem found in one configuration file.
#[derive(Debug, thiserror::Error)]
pub struct ConfigErrors {
    pub errors: Vec<ConfigError>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

struct Checker<'t> {
    file: PathBuf,
    text: &'t str,
    errors: Vec<ConfigError>,
    /// Columns of the feed being checked that were declared but are unusable
    /// (already reported): mapping them is not reported again.
    broken_columns: HashSet<String>,
    /// Settings that are allowed but dangerous.
    warnings: Vec<ConfigError>,
    /// `[daemon] time_zone`, once checked: cron expressions are read in it.
    time_zone: chrono_tz::Tz,
}

impl Checker<'_> {
    fn warning(&mut self, span: Range<usize>, message: impl Into<String>) {
        let (line, column) = line_column(self.text, span.start);
        self.warnings.push(ConfigError {
            file: self.file.clone(),
            line,
            column,
            message: format!("warning: {}", message.into()),
        });
    }

    fn error(&mut self, span: Range<usize>, message: impl Into<String>) {
        let (line, column) = line_column(self.text, span.start);
        self.errors.push(ConfigError {
            file: self.file.clone(),
            line,
            column,
            message: message.into(),
        });
    }

    fn at<T>(&mut self, value: &Spanned<T>, message: impl Into<String>) {
        self.error(value.span(), message);
    }

    /// Deserialises a value, reporting every unknown key and badly typed value
    /// rather than only the first: the offending key is dropped and the
    /// value tried again until it deserialises or a required key is missing.
    fn deserialize<T: DeserializeOwned>(&mut self, value: Spanned<DeValue<'_>>) -> Option<T> {
        let whole = value.span();
        let mut value = value;
        value.get_mut().make_owned();
        let mut dropped: Vec<String> = Vec::new();
        loop {
            let error = match T::deserialize(ValueDeserializer::from(value.clone())) {
                Ok(v) => return Some(v),
                Err(e) => e,
            };
            let message = error.message().to_string();
            // A key dropped for being badly typed then shows up as missing: said once is enough.
            if message.starts_with("missing field")
                && dropped.iter().any(|k| message.contains(&format!("`{k}`")))
            {
                return None;
            }
            let span = error.span().unwrap_or(whole.clone());
            self.error(span.clone(), message);
            match drop_key_at(&mut value, span.start) {
                Some(key) => dropped.push(key),
                None => return None,
            }
        }
    }

    /// Deserialises each entry of a `[section.NAME]` table separately.
    fn entries<T: DeserializeOwned>(
        &mut self,
        section: &str,
        value: Option<Spanned<DeValue<'_>>>,
    ) -> Vec<(Spanned<String>, T)> {
        let Some(value) = value else {
            return Vec::new();
        };
        let span = value.span();
        let DeValue::Table(table) = value.into_inner() else {
            self.error(
                span,
                format!("`{section}` must be a table of named entries"),
            );
            return Vec::new();
        };
        let mut out = Vec::new();
        for (key, entry) in table {
            let name = Spanned::new(key.span(), key.get_ref().to_string());
            if !valid_name(name.get_ref()) {
                self.at(
                    &name,
                    format!(
                        "{section} name `{}` may use only letters, digits, `-` and `_`",
                        name.get_ref()
                    ),
                );
            }
            if let Some(parsed) = self.deserialize::<T>(entry) {
                out.push((name, parsed));
            }
        }
        out
    }

    fn check(&mut self, path: &Path, base: &Path) -> Option<Config> {
        let (root, syntax) = DeTable::parse_recoverable(self.text);
        for e in &syntax {
            self.error(e.span().unwrap_or(0..0), e.message().to_string());
        }
        if !syntax.is_empty() {
            return None;
        }
        let mut sections: BTreeMap<String, Spanned<DeValue<'_>>> = BTreeMap::new();
        for (key, value) in root.into_inner() {
            let name = key.get_ref().to_string();
            match name.as_str() {
                "daemon" | "keys" | "partners" | "sources" | "feeds" | "sftp_server"
                | "destinations" => {
                    sections.insert(name, value);
                }
                "schedules" | "grants" => self.error(
                    key.span(),
                    format!("`{name}` is not supported by this version of dropgate"),
                ),
                _ => self.error(
                    key.span(),
                    format!(
                        "unknown section `{name}`, expected one of `daemon`, `keys`, `partners`, `sources`, `feeds`, `sftp_server`, `destinations`"
                    ),
                ),
            }
        }

        let daemon: raw::Daemon = match sections.remove("daemon") {
            Some(v) => self.deserialize(v).unwrap_or_default(),
            None => raw::Daemon::default(),
        };
        let keys: raw::Keys = match sections.remove("keys") {
            Some(v) => self.deserialize(v).unwrap_or_default(),
            None => raw::Keys::default(),
        };
        let sftp_server: raw::SftpServer = match sections.remove("sftp_server") {
            Some(v) => self.deserialize(v).unwrap_or_default(),
            None => raw::SftpServer::default(),
        };
        let partners: Vec<(Spanned<String>, raw::Partner)> =
            self.entries("partner", sections.remove("partners"));
        let sources: Vec<(Spanned<String>, raw::Source)> =
            self.entries("source", sections.remove("sources"));
        let feeds: Vec<(Spanned<String>, raw::Feed)> =
            self.entries("feed", sections.remove("feeds"));
        let destinations: Vec<(Spanned<String>, raw::Destination)> =
            self.entries("destination", sections.remove("destinations"));
        let destinations: BTreeMap<String, Destination> = destinations
            .into_iter()
            .filter_map(|(name, d)| {
                let destination = self.destination(name.get_ref(), d, base)?;
                Some((name.into_inner(), destination))
            })
            .collect();

        let daemon = self.daemon(daemon, base);
        if let Some(daemon) = &daemon {
            self.time_zone = daemon.time_zone;
        }
        let keys = Keys {
            age_identity: resolve(base, keys.age_identity.as_deref(), "keys/age-identity.txt"),
            signing_key: resolve(base, keys.signing_key.as_deref(), "keys/signing_ed25519"),
            ssh_host_key: resolve(base, keys.ssh_host_key.as_deref(), "keys/ssh_host_ed25519"),
        };
        let partners: BTreeMap<String, Partner> = partners
            .into_iter()
            .map(|(name, p)| {
                let partner = Partner {
                    name: p.name.unwrap_or_else(|| name.get_ref().clone()),
                    ods_code: p.ods_code.map(Spanned::into_inner),
                    sftp: p.sftp.map(|s| self.partner_sftp(name.get_ref(), s, base)),
                };
                (name.into_inner(), partner)
            })
            .collect();
        let sftp_server = partners
            .values()
            .any(|p| p.sftp.is_some())
            .then(|| self.sftp_server(sftp_server));
        let mut name_spans = BTreeMap::new();
        let sources: BTreeMap<String, Source> = sources
            .into_iter()
            .filter_map(|(name, s)| {
                let source = self.source(name.get_ref(), s, &partners, base)?;
                name_spans.insert(name.get_ref().clone(), name.span());
                Some((name.into_inner(), source))
            })
            .collect();
        self.check_overlapping_sources(&sources, &name_spans);
        let mut checked_feeds = BTreeMap::new();
        let mut seen_patterns: HashSet<(String, String)> = HashSet::new();
        for (name, f) in feeds {
            if let Some(feed) = self.feed(name.get_ref(), f, &partners, &mut seen_patterns) {
                checked_feeds.insert(name.into_inner(), feed);
            }
        }
        let daemon = daemon?;
        Some(Config {
            file: path.to_path_buf(),
            daemon,
            keys,
            partners,
            sources,
            feeds: checked_feeds,
            sftp_server,
            destinations,
            warnings: Vec::new(),
        })
    }

    fn destination(
        &mut self,
        name: &str,
        mut raw: raw::Destination,
        base: &Path,
    ) -> Option<Destination> {
        let endpoint = self.endpoint(name, &raw.kind, raw::take_login!(raw), base);
        let attempts = match &raw.attempts {
            None => 5,
            Some(n) if (1..=1000).contains(n.get_ref()) => *n.get_ref() as u32,
            Some(n) => {
                self.at(n, "attempts must be between 1 and 1000");
                5
            }
        };
        let backoff = crate::remote::Backoff {
            initial: self.positive_duration(
                raw.retry_initial,
                Duration::from_secs(2),
                "retry_initial",
            ),
            max: self.positive_duration(raw.retry_max, Duration::from_secs(300), "retry_max"),
        };
        let timeout = self.positive_duration(raw.timeout, Duration::from_secs(30), "timeout");
        Some(Destination {
            name: name.to_string(),
            endpoint: endpoint?,
            attempts,
            backoff,
            timeout,
        })
    }

    fn partner_sftp(&mut self, partner: &str, raw: raw::PartnerSftp, base: &Path) -> PartnerSftp {
        let demo_key = raw.demo_key.as_deref().map(|p| join(base, p));
        let demo_public = demo_key
            .as_ref()
            .map(|p| PathBuf::from(format!("{}.pub", p.display())));
        if raw.authorized_keys.get_ref().is_empty() && raw.password_hash.is_none() {
            self.at(
                &raw.authorized_keys,
                format!("partner `{partner}`: `authorized_keys` needs at least one key"),
            );
        }
        let mut keys = Vec::new();
        for entry in raw.authorized_keys.get_ref() {
            let text = entry.get_ref().trim();
            let looks_like_key =
                text.starts_with("ssh-") || text.starts_with("ecdsa-") || text.starts_with("sk-");
            if looks_like_key {
                if let Err(e) = russh::keys::ssh_key::PublicKey::from_openssh(text) {
                    self.at(entry, format!("not an OpenSSH public key: {e}"));
                }
                keys.push(AuthorizedKeys::Line(text.to_string()));
                continue;
            }
            let path = join(base, text);
            match std::fs::read_to_string(&path) {
                Ok(content) => {
                    for (n, line) in content.lines().enumerate() {
                        if let Err(e) = parse_authorized_line(line) {
                            self.at(entry, format!("{}:{}: {e}", path.display(), n + 1));
                        }
                    }
                }
                // The demo key's public half is created on first run.
                Err(_) if demo_public.as_ref() == Some(&path) => {}
                Err(e) => self.at(entry, format!("cannot read {}: {e}", path.display())),
            }
            keys.push(AuthorizedKeys::File(path));
        }
        if let Some(hash) = &raw.password_hash
            && !hash.get_ref().starts_with("$argon2")
        {
            self.at(
                hash,
                "password_hash must be an argon2 hash (`$argon2id$...`); make one with `dropgate hash-password`",
            );
        }
        PartnerSftp {
            authorized_keys: keys,
            demo_key,
            outbox: raw.outbox.unwrap_or(false),
            password_hash: raw.password_hash.map(Spanned::into_inner),
        }
    }

    fn sftp_server(&mut self, raw: raw::SftpServer) -> SftpServer {
        let listen = match raw.listen {
            None => std::net::SocketAddr::from(([127, 0, 0, 1], 2222)),
            Some(l) => match l.get_ref().parse() {
                Ok(a) => a,
                Err(_) => {
                    self.at(
                        &l,
                        format!("`{}` is not an address like `127.0.0.1:2222`", l.get_ref()),
                    );
                    std::net::SocketAddr::from(([127, 0, 0, 1], 2222))
                }
            },
        };
        let max_file_size = match raw.max_file_size {
            None => 10 << 30,
            Some(v) => match parse_bytes(v.get_ref()) {
                Some(n) if n > 0 => n,
                _ => {
                    self.at(
                        &v,
                        format!("`{}` is not a size like `10GiB` or `500MiB`", v.get_ref()),
                    );
                    10 << 30
                }
            },
        };
        let count = |checker: &mut Self, v: Option<Spanned<i64>>, default: i64, what: &str| match v
        {
            None => default,
            Some(n) if (1..=1_000_000).contains(n.get_ref()) => *n.get_ref(),
            Some(n) => {
                checker.at(&n, format!("{what} must be between 1 and 1000000"));
                default
            }
        };
        let max_sessions_per_partner = count(
            self,
            raw.max_sessions_per_partner,
            8,
            "max_sessions_per_partner",
        ) as usize;
        let ban_after_failures =
            count(self, raw.ban_after_failures, 5, "ban_after_failures") as u32;
        let max_connections = count(self, raw.max_connections, 256, "max_connections") as usize;
        let max_connections_per_address = count(
            self,
            raw.max_connections_per_address,
            32,
            "max_connections_per_address",
        ) as usize;
        let max_handles_per_session = count(
            self,
            raw.max_handles_per_session,
            64,
            "max_handles_per_session",
        ) as usize;
        let max_open_files_per_partner = count(
            self,
            raw.max_open_files_per_partner,
            256,
            "max_open_files_per_partner",
        ) as usize;
        let max_unfinished_uploads = count(
            self,
            raw.max_unfinished_uploads,
            256,
            "max_unfinished_uploads",
        ) as usize;
        let unfinished_span = raw.max_unfinished_size.as_ref().map(Spanned::span);
        let max_unfinished_bytes = self.size(
            raw.max_unfinished_size,
            (20u64 << 30).max(max_file_size),
            1 << 50,
            "max_unfinished_size",
        );
        if let Some(span) = unfinished_span
            && max_unfinished_bytes < max_file_size
        {
            self.error(
                span,
                format!(
                    "max_unfinished_size must be at least max_file_size ({}), or no upload of the largest size could finish",
                    show_bytes(max_file_size)
                ),
            );
        }
        SftpServer {
            listen,
            max_file_size,
            max_sessions_per_partner,
            idle_timeout: self.duration(raw.idle_timeout, Duration::from_secs(600)),
            ban_after_failures,
            ban_window: self.duration(raw.ban_window, Duration::from_secs(600)),
            ban_time: self.duration(raw.ban_time, Duration::from_secs(3600)),
            max_connections,
            max_connections_per_address,
            login_timeout: self.positive_duration(
                raw.login_timeout,
                Duration::from_secs(60),
                "login_timeout",
            ),
            max_handles_per_session,
            max_open_files_per_partner,
            max_unfinished_uploads,
            max_unfinished_bytes,
            unfinished_upload_ttl: self.positive_duration(
                raw.unfinished_upload_ttl,
                Duration::from_secs(24 * 3600),
                "unfinished_upload_ttl",
            ),
        }
    }

    fn daemon(&mut self, raw: raw::Daemon, base: &Path) -> Option<Daemon> {
        let spool = resolve(base, raw.spool.as_deref(), "../spool");
        let ledger = match raw.ledger.as_deref() {
            Some(p) => join(base, p),
            None => spool.join("ledger.db"),
        };
        let time_zone = match raw.time_zone {
            None => chrono_tz::Europe::London,
            Some(tz) => match tz.get_ref().parse::<chrono_tz::Tz>() {
                Ok(tz) => tz,
                Err(_) => {
                    self.at(&tz, format!("unknown time zone `{}`", tz.get_ref()));
                    return None;
                }
            },
        };
        let retention_days = match raw.retention_days {
            None => 90,
            Some(d) if (1..=36500).contains(d.get_ref()) => *d.get_ref() as u32,
            Some(d) => {
                self.at(&d, "retention_days must be between 1 and 36500");
                return None;
            }
        };
        let max_errors_per_file = match raw.max_errors_per_file {
            None => 10_000,
            Some(n) if (1..=10_000_000).contains(n.get_ref()) => *n.get_ref() as usize,
            Some(n) => {
                self.at(&n, "max_errors_per_file must be between 1 and 10000000");
                return None;
            }
        };
        Some(Daemon {
            spool,
            ledger,
            time_zone,
            retention_days,
            max_errors_per_file,
        })
    }

    /// A size like `1MiB`, at least one byte and at most `max`.
    fn size(&mut self, value: Option<Spanned<String>>, default: u64, max: u64, what: &str) -> u64 {
        let Some(value) = value else {
            return default;
        };
        match parse_bytes(value.get_ref()) {
            Some(n) if (1..=max).contains(&n) => n,
            Some(_) => {
                self.at(
                    &value,
                    format!("{what} must be between 1 byte and {}", show_bytes(max)),
                );
                default
            }
            None => {
                self.at(
                    &value,
                    format!("`{}` is not a size like `1MiB` or `64KiB`", value.get_ref()),
                );
                default
            }
        }
    }

    fn duration(&mut self, value: Option<Spanned<String>>, default: Duration) -> Duration {
        let Some(value) = value else {
            return default;
        };
        match humantime::parse_duration(value.get_ref()) {
            Ok(d) => d,
            Err(e) => {
                self.at(
                    &value,
                    format!(
                        "`{}` is not a duration like `500ms` or `2s`: {e}",
                        value.get_ref()
                    ),
                );
                default
            }
        }
    }

    /// A duration that must be above zero (a wait or a time limit of zero
    /// would spin or fail every time).
    fn positive_duration(
        &mut self,
        value: Option<Spanned<String>>,
        default: Duration,
        option: &str,
    ) -> Duration {
        let span = value.as_ref().map(|v| v.span());
        let duration = self.duration(value, default);
        if duration.is_zero() {
            self.error(span.unwrap_or(0..0), format!("{option} must be above zero"));
            return default;
        }
        duration
    }

    fn partner_ref(
        &mut self,
        partner: &Spanned<String>,
        partners: &BTreeMap<String, Partner>,
    ) -> bool {
        if partners.contains_key(partner.get_ref()) {
            return true;
        }
        let known: Vec<&str> = partners.keys().map(String::as_str).collect();
        self.at(
            partner,
            format!(
                "unknown partner `{}` (defined partners: {})",
                partner.get_ref(),
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ),
        );
        false
    }

    fn source(
        &mut self,
        name: &str,
        raw: raw::Source,
        partners: &BTreeMap<String, Partner>,
        base: &Path,
    ) -> Option<Source> {
        let partner_ok = self.partner_ref(&raw.partner, partners);
        let kind = raw.kind.get_ref().clone();
        let not_for = |checker: &mut Self, option: &str, span: Option<Range<usize>>| {
            if let Some(span) = span {
                checker.error(
                    span,
                    format!("source `{name}`: `{option}` does not apply to kind `{kind}`"),
                );
            }
        };
        match raw.kind.get_ref().as_str() {
            "local" => {
                for (option, span) in [
                    ("host", raw.host.as_ref().map(|v| v.span())),
                    ("user", raw.user.as_ref().map(|v| v.span())),
                    ("private_key", raw.private_key.as_ref().map(|v| v.span())),
                    ("host_key", raw.host_key.as_ref().map(|v| v.span())),
                    (
                        "password_file",
                        raw.password_file.as_ref().map(|v| v.span()),
                    ),
                    ("password_env", raw.password_env.as_ref().map(|v| v.span())),
                    ("tls", raw.tls.as_ref().map(|v| v.span())),
                    ("match", raw.patterns.as_ref().map(|v| v.span())),
                    (
                        "poll_interval",
                        raw.poll_interval.as_ref().map(|v| v.span()),
                    ),
                    ("poll_cron", raw.poll_cron.as_ref().map(|v| v.span())),
                    ("after", raw.after.as_ref().map(|v| v.span())),
                    ("done_marker", raw.done_marker.as_ref().map(|v| v.span())),
                ] {
                    not_for(self, option, span);
                }
            }
            "sftp" | "ftp" => {
                for (option, span) in [
                    ("path", raw.path.as_ref().map(|v| v.span())),
                    (
                        "check_interval",
                        raw.check_interval.as_ref().map(|v| v.span()),
                    ),
                    (
                        "rescan_interval",
                        raw.rescan_interval.as_ref().map(|v| v.span()),
                    ),
                ] {
                    not_for(self, option, span);
                }
                let partner = raw.partner.get_ref().clone();
                let source = self.remote_source(name, raw, base)?;
                return partner_ok.then(|| Source {
                    name: name.to_string(),
                    partner,
                    kind: SourceKind::Remote(Box::new(source)),
                });
            }
            other => {
                self.at(
                    &raw.kind,
                    format!("unknown source kind `{other}`, expected `local`, `sftp` or `ftp`"),
                );
                return None;
            }
        }
        let Some(path) = raw.path else {
            self.at(
                &raw.kind,
                format!("source `{name}`: a `local` source needs `path`"),
            );
            return None;
        };
        let min_age = self.duration(raw.min_age, Duration::from_secs(1));
        let check_interval = self.duration(raw.check_interval, Duration::from_millis(250));
        let rescan_interval = self.duration(raw.rescan_interval, Duration::from_secs(30));
        if check_interval.is_zero() || rescan_interval.is_zero() {
            self.at(
                &path,
                format!("source `{name}`: intervals must be above zero"),
            );
        }
        if !partner_ok {
            return None;
        }
        Some(Source {
            name: name.to_string(),
            partner: raw.partner.into_inner(),
            kind: SourceKind::Local(LocalSource {
                path: join(base, path.get_ref()),
                recursive: raw.recursive.unwrap_or(false),
                min_age,
                check_interval,
                rescan_interval,
            }),
        })
    }

    fn remote_source(
        &mut self,
        name: &str,
        mut raw: raw::Source,
        base: &Path,
    ) -> Option<RemoteSource> {
        let endpoint = self.endpoint(name, &raw.kind, raw::take_login!(raw), base);
        let schedule = match (raw.poll_interval, raw.poll_cron) {
            (Some(_), Some(cron)) => {
                self.at(
                    &cron,
                    format!("source `{name}`: set `poll_interval` or `poll_cron`, not both"),
                );
                None
            }
            (interval, None) => {
                let every = self.duration(interval.clone(), Duration::from_secs(60));
                if every.is_zero() {
                    let span = interval.map(|i| i.span()).unwrap_or(0..0);
                    self.error(
                        span,
                        format!("source `{name}`: poll_interval must be above zero"),
                    );
                }
                Some(crate::schedule::Schedule::Every(every))
            }
            (None, Some(cron)) => {
                match crate::schedule::Cron::parse(cron.get_ref(), self.time_zone) {
                    Ok(c) => Some(crate::schedule::Schedule::Cron(Box::new(c))),
                    Err(e) => {
                        self.at(&cron, format!("source `{name}`: {e}"));
                        None
                    }
                }
            }
        };
        let mut globs = GlobSetBuilder::new();
        match &raw.patterns {
            None => {
                globs.add(Glob::new("*").expect("a valid glob"));
            }
            Some(patterns) => {
                for pattern in patterns.get_ref() {
                    match Glob::new(pattern.get_ref()) {
                        Ok(g) => {
                            globs.add(g);
                        }
                        Err(e) => self.at(pattern, format!("invalid glob: {}", e.kind())),
                    }
                }
            }
        }
        let after = match raw.after.as_ref().map(|a| a.get_ref().as_str()) {
            None | Some("delete") => AfterTake::Delete,
            Some("leave") => AfterTake::Leave,
            Some(other) => match other.strip_prefix("move:") {
                Some(folder) if !folder.is_empty() => AfterTake::Move(folder.to_string()),
                _ => {
                    let span = raw.after.as_ref().map(|a| a.span()).unwrap_or(0..0);
                    self.error(
                        span,
                        format!("unknown `after` = `{other}`, expected `delete`, `move:<folder>` or `leave`"),
                    );
                    AfterTake::Delete
                }
            },
        };
        let done_marker = match raw.done_marker {
            Some(marker) if marker.get_ref().is_empty() => {
                self.at(
                    &marker,
                    format!("source `{name}`: done_marker must be a suffix such as `.done`"),
                );
                None
            }
            marker => marker.map(Spanned::into_inner),
        };
        Some(RemoteSource {
            endpoint: endpoint?,
            patterns: globs.build().ok()?,
            schedule: schedule?,
            min_age: self.duration(raw.min_age, Duration::from_secs(30)),
            after,
            done_marker,
            timeout: self.positive_duration(raw.timeout, Duration::from_secs(30), "timeout"),
            backoff: crate::remote::Backoff {
                initial: self.positive_duration(
                    raw.retry_initial,
                    Duration::from_secs(5),
                    "retry_initial",
                ),
                max: self.positive_duration(raw.retry_max, Duration::from_secs(300), "retry_max"),
            },
        })
    }

    /// Checks a remote login shared by sources and destinations.
    fn endpoint(
        &mut self,
        name: &str,
        kind: &Spanned<String>,
        login: raw::Login,
        base: &Path,
    ) -> Option<crate::remote::Endpoint> {
        let kind_name = kind.get_ref().as_str();
        if !matches!(kind_name, "sftp" | "ftp") {
            self.at(
                kind,
                format!("`{name}`: unknown kind `{kind_name}`, expected `sftp` or `ftp`"),
            );
            return None;
        }
        let sftp = kind_name == "sftp";
        let not_for = |checker: &mut Self, option: &str, span: Option<Range<usize>>| {
            if let Some(span) = span {
                checker.error(
                    span,
                    format!("`{name}`: `{option}` does not apply to kind `{kind_name}`"),
                );
            }
        };
        if let Some(password) = &login.password {
            let instead = if sftp {
                "an `sftp` login uses a key (`private_key`)"
            } else {
                "put it in a file readable only by dropgate (`password_file`) or in an environment variable (`password_env`)"
            };
            self.at(
                password,
                format!("`{name}`: passwords are not written in the configuration; {instead}"),
            );
        }
        let spans_of_other_kind: Vec<(&str, Option<Range<usize>>)> = if sftp {
            vec![
                (
                    "password_file",
                    login.password_file.as_ref().map(|v| v.span()),
                ),
                (
                    "password_env",
                    login.password_env.as_ref().map(|v| v.span()),
                ),
                ("tls", login.tls.as_ref().map(|v| v.span())),
                ("ca_file", login.ca_file.as_ref().map(|v| v.span())),
                (
                    "certificate_fingerprint",
                    login.certificate_fingerprint.as_ref().map(|v| v.span()),
                ),
                (
                    "insecure_plaintext",
                    login.insecure_plaintext.as_ref().map(|v| v.span()),
                ),
                ("data_mode", login.data_mode.as_ref().map(|v| v.span())),
                ("listing", login.listing.as_ref().map(|v| v.span())),
            ]
        } else {
            vec![
                ("private_key", login.private_key.as_ref().map(|v| v.span())),
                ("host_key", login.host_key.as_ref().map(|v| v.span())),
            ]
        };
        for (option, span) in spans_of_other_kind {
            not_for(self, option, span);
        }
        let (Some(host), Some(user)) = (login.host, login.user) else {
            self.at(
                kind,
                format!("`{name}`: kind `{kind_name}` needs `host` and `user`"),
            );
            return None;
        };
        let folder = login.folder.unwrap_or_default();
        if sftp {
            let (Some(private_key), Some(host_key)) = (login.private_key, login.host_key) else {
                self.at(
                    kind,
                    format!("`{name}`: kind `sftp` needs `private_key` and `host_key`"),
                );
                return None;
            };
            if let Err(e) = russh::keys::ssh_key::PublicKey::from_openssh(host_key.get_ref().trim())
            {
                self.at(
                    &host_key,
                    format!("`{name}`: host_key is not an OpenSSH public key: {e}"),
                );
            }
            let port = self.port(login.port, 22);
            return Some(crate::remote::Endpoint::Sftp(
                crate::remote::sftp::Endpoint {
                    host: host.into_inner(),
                    port,
                    user: user.into_inner(),
                    private_key: join(base, private_key.get_ref()),
                    host_key: host_key.into_inner(),
                    folder,
                },
            ));
        }
        let password = self.password(name, kind, login.password_file, login.password_env, base);
        let tls = self.ftp_tls(
            name,
            login.tls,
            login.insecure_plaintext,
            login.ca_file,
            login.certificate_fingerprint,
            base,
        );
        let implicit = matches!(&tls, Some(Some(t)) if t.implicit);
        let port = self.port(login.port, if implicit { 990 } else { 21 });
        let data = match login.data_mode.as_ref().map(|m| m.get_ref().as_str()) {
            None | Some("passive") => crate::remote::ftp::DataMode::Passive,
            Some("extended_passive") => crate::remote::ftp::DataMode::ExtendedPassive,
            Some("active") => crate::remote::ftp::DataMode::Active,
            Some(other) => {
                let other = other.to_string();
                self.at(
                    login.data_mode.as_ref().expect("matched Some"),
                    format!("`{name}`: unknown data_mode `{other}`, expected `passive`, `extended_passive` or `active`"),
                );
                crate::remote::ftp::DataMode::Passive
            }
        };
        let listing = match login.listing.as_ref().map(|m| m.get_ref().as_str()) {
            None | Some("auto") => crate::remote::ftp::Listing::Auto,
            Some("mlsd") => crate::remote::ftp::Listing::Mlsd,
            Some("list") => crate::remote::ftp::Listing::List,
            Some(other) => {
                let other = other.to_string();
                self.at(
                    login.listing.as_ref().expect("matched Some"),
                    format!(
                        "`{name}`: unknown listing `{other}`, expected `auto`, `mlsd` or `list`"
                    ),
                );
                crate::remote::ftp::Listing::Auto
            }
        };
        Some(crate::remote::Endpoint::Ftp(crate::remote::ftp::Endpoint {
            host: host.into_inner(),
            port,
            user: user.into_inner(),
            password: password?,
            tls: tls?,
            data,
            listing,
            folder,
        }))
    }

    fn port(&mut self, port: Option<Spanned<i64>>, default: u16) -> u16 {
        match &port {
            None => default,
            Some(p) if (1..=65535).contains(p.get_ref()) => *p.get_ref() as u16,
            Some(p) => {
                self.at(p, "port must be between 1 and 65535");
                default
            }
        }
    }

    /// Reads an FTP password from its file or environment variable now, so
    /// a missing one is found by `check-config`, not at the first poll.
    fn password(
        &mut self,
        name: &str,
        kind: &Spanned<String>,
        file: Option<Spanned<String>>,
        env: Option<Spanned<String>>,
        base: &Path,
    ) -> Option<crate::remote::Secret> {
        match (file, env) {
            (Some(file), Some(_)) => {
                self.at(
                    &file,
                    format!("`{name}`: set `password_file` or `password_env`, not both"),
                );
                None
            }
            (Some(file), None) => {
                let path = join(base, file.get_ref());
                match std::fs::read_to_string(&path) {
                    Ok(text) => {
                        let password = text.lines().next().unwrap_or("").to_string();
                        if password.is_empty() {
                            self.at(
                                &file,
                                format!("`{name}`: password file {} is empty", path.display()),
                            );
                            return None;
                        }
                        use std::os::unix::fs::PermissionsExt;
                        if let Ok(meta) = std::fs::metadata(&path)
                            && meta.permissions().mode() & 0o077 != 0
                        {
                            self.warning(
                                file.span(),
                                format!(
                                    "`{name}`: password file {} can be read by other users (mode {:o}); `chmod 600` it",
                                    path.display(),
                                    meta.permissions().mode() & 0o777
                                ),
                            );
                        }
                        Some(crate::remote::Secret::new(password))
                    }
                    Err(e) => {
                        self.at(
                            &file,
                            format!(
                                "`{name}`: cannot read password file {}: {e}",
                                path.display()
                            ),
                        );
                        None
                    }
                }
            }
            (None, Some(env)) => match std::env::var(env.get_ref()) {
                Ok(password) if !password.is_empty() => Some(crate::remote::Secret::new(password)),
                _ => {
                    self.at(
                        &env,
                        format!(
                            "`{name}`: environment variable `{}` is not set (it must be set for `dropgate run` too)",
                            env.get_ref()
                        ),
                    );
                    None
                }
            },
            (None, None) => {
                self.at(
                    kind,
                    format!("`{name}`: kind `ftp` needs `password_file` or `password_env`"),
                );
                None
            }
        }
    }

    /// The TLS settings of an FTP login: `Some(None)` is plain FTP, allowed
    /// only with `insecure_plaintext = true`.
    fn ftp_tls(
        &mut self,
        name: &str,
        mode: Option<Spanned<String>>,
        insecure_plaintext: Option<Spanned<bool>>,
        ca_file: Option<Spanned<String>>,
        fingerprint: Option<Spanned<String>>,
        base: &Path,
    ) -> Option<Option<crate::remote::ftp::Tls>> {
        use crate::remote::ftp::{Tls, Verifier, parse_fingerprint};
        let implicit = match mode.as_ref().map(|m| m.get_ref().as_str()) {
            None | Some("explicit") => false,
            Some("implicit") => true,
            Some("none") => {
                let mode = mode.as_ref().expect("matched Some");
                for (option, span) in [
                    ("ca_file", ca_file.as_ref().map(|v| v.span())),
                    (
                        "certificate_fingerprint",
                        fingerprint.as_ref().map(|v| v.span()),
                    ),
                ] {
                    if let Some(span) = span {
                        self.error(
                            span,
                            format!("`{name}`: `{option}` does not apply to `tls = \"none\"`"),
                        );
                    }
                }
                return match insecure_plaintext.as_ref().map(|v| *v.get_ref()) {
                    Some(true) => {
                        self.warning(
                            mode.span(),
                            format!("`{name}`: plain FTP: the password and every file cross the network unencrypted, readable and changeable by anyone on the path"),
                        );
                        Some(None)
                    }
                    _ => {
                        self.at(
                            mode,
                            format!("`{name}`: `tls = \"none\"` sends the password and every file unencrypted; if that is really intended, also set `insecure_plaintext = true`"),
                        );
                        None
                    }
                };
            }
            Some(other) => {
                let other = other.to_string();
                self.at(
                    mode.as_ref().expect("matched Some"),
                    format!(
                        "`{name}`: unknown tls `{other}`, expected `explicit`, `implicit` or `none`"
                    ),
                );
                return None;
            }
        };
        if let Some(flag) = &insecure_plaintext {
            self.at(
                flag,
                format!("`{name}`: `insecure_plaintext` applies only to `tls = \"none\"`"),
            );
        }
        let verifier = match (ca_file, fingerprint) {
            (Some(ca), Some(_)) => {
                self.at(
                    &ca,
                    format!("`{name}`: set `ca_file` or `certificate_fingerprint`, not both"),
                );
                return None;
            }
            (Some(ca), None) => {
                let path = join(base, ca.get_ref());
                match Verifier::from_ca_file(&path) {
                    Ok(v) => v,
                    Err(e) => {
                        self.at(&ca, format!("`{name}`: ca_file {}: {e}", path.display()));
                        return None;
                    }
                }
            }
            (None, Some(pin)) => match parse_fingerprint(pin.get_ref()) {
                Some(bytes) => Verifier::pinned(bytes),
                None => {
                    self.at(
                        &pin,
                        format!("`{name}`: certificate_fingerprint must be a SHA-256 fingerprint, 64 hex digits with or without colons (`openssl x509 -noout -fingerprint -sha256 -in cert.pem`)"),
                    );
                    return None;
                }
            },
            (None, None) => match Verifier::system() {
                Ok(v) => v,
                Err(e) => {
                    let span = mode.map(|m| m.span()).unwrap_or(0..0);
                    self.error(span, format!("`{name}`: {e}"));
                    return None;
                }
            },
        };
        Some(Some(Tls {
            implicit,
            verifier: std::sync::Arc::new(verifier),
        }))
    }

    fn check_overlapping_sources(
        &mut self,
        sources: &BTreeMap<String, Source>,
        name_spans: &BTreeMap<String, Range<usize>>,
    ) {
        let mut seen: Vec<(&str, &Path)> = Vec::new();
        for source in sources.values() {
            let SourceKind::Local(local) = &source.kind else {
                continue;
            };
            for (other, path) in &seen {
                if local.path.starts_with(path) || path.starts_with(&local.path) {
                    let span = name_spans.get(&source.name).cloned().unwrap_or(0..0);
                    self.error(
                        span,
                        format!(
                            "sources `{other}` and `{}` watch overlapping folders; a file would be taken twice",
                            source.name
                        ),
                    );
                }
            }
            seen.push((&source.name, &local.path));
        }
    }

    fn feed(
        &mut self,
        name: &str,
        raw: raw::Feed,
        partners: &BTreeMap<String, Partner>,
        seen_patterns: &mut HashSet<(String, String)>,
    ) -> Option<Feed> {
        let errors_before = self.errors.len();
        self.broken_columns.clear();
        self.partner_ref(&raw.partner, partners);

        let mut globs = GlobSetBuilder::new();
        if raw.patterns.get_ref().is_empty() {
            self.at(
                &raw.patterns,
                format!("feed `{name}`: `match` needs at least one glob"),
            );
        }
        for pattern in raw.patterns.get_ref() {
            let text = pattern.get_ref();
            if let Some(why) = never_matches(text) {
                self.at(pattern, format!("glob `{text}` can never match: {why}"));
                continue;
            }
            if !seen_patterns.insert((raw.partner.get_ref().clone(), text.clone())) {
                self.at(
                    pattern,
                    format!(
                        "glob `{text}` is already used by another feed of partner `{}`",
                        raw.partner.get_ref()
                    ),
                );
            }
            match Glob::new(text) {
                Ok(g) => {
                    globs.add(g);
                }
                Err(e) => self.at(pattern, format!("invalid glob `{text}`: {}", e.kind())),
            }
        }
        let patterns = globs.build().ok();

        let encryption = match raw.encryption.as_ref().map(|s| s.get_ref().as_str()) {
            None | Some("age") => Encryption::Age,
            Some("none") => Encryption::None,
            Some("optional") => Encryption::Optional,
            Some(other) => {
                let span = raw.encryption.as_ref().map(|s| s.span()).unwrap_or(0..0);
                self.error(
                    span,
                    format!("unknown encryption `{other}`, expected `age`, `none` or `optional`"),
                );
                Encryption::Age
            }
        };
        if let Some(format) = &raw.format
            && format.get_ref() != "csv"
        {
            self.at(
                format,
                format!("unknown format `{}`, expected `csv`", format.get_ref()),
            );
        }
        let on_error = match raw.on_error.as_ref().map(|s| s.get_ref().as_str()) {
            None | Some("reject_file") => OnError::RejectFile,
            Some("skip_invalid_rows") => OnError::SkipInvalidRows,
            Some(other) => {
                let span = raw.on_error.as_ref().map(|s| s.span()).unwrap_or(0..0);
                self.error(
                    span,
                    format!(
                        "unknown on_error `{other}`, expected `reject_file` or `skip_invalid_rows`"
                    ),
                );
                OnError::RejectFile
            }
        };
        let max_record_bytes = self.size(
            raw.max_record_size,
            crate::schema::DEFAULT_MAX_RECORD_BYTES as u64,
            1 << 30,
            "max_record_size",
        ) as usize;
        let max_field_bytes = self.size(
            raw.max_field_size,
            crate::schema::DEFAULT_MAX_FIELD_BYTES as u64,
            1 << 30,
            "max_field_size",
        ) as usize;
        let mut schema = self.schema(raw.csv.unwrap_or_default(), raw.columns);
        schema.max_record_bytes = max_record_bytes;
        schema.max_field_bytes = max_field_bytes.min(max_record_bytes);
        let mapping = self.mapping(raw.map.unwrap_or_default(), &schema);
        if self.errors.len() > errors_before {
            return None;
        }
        Some(Feed {
            name: name.to_string(),
            partner: raw.partner.into_inner(),
            patterns: patterns?,
            encryption,
            on_error,
            schema,
            mapping,
        })
    }

    fn single_byte(&mut self, value: Option<Spanned<String>>, default: u8, what: &str) -> u8 {
        let Some(value) = value else {
            return default;
        };
        match value.get_ref().as_str() {
            "\\t" | "\t" | "tab" => b'\t',
            s if s.len() == 1 && s.is_ascii() => s.as_bytes()[0],
            s => {
                self.at(
                    &value,
                    format!("{what} must be one ASCII character, not `{s}`"),
                );
                default
            }
        }
    }

    fn schema(&mut self, csv: raw::Csv, columns: Spanned<Vec<Spanned<raw::Column>>>) -> Schema {
        let delimiter = self.single_byte(csv.delimiter, b',', "delimiter");
        let quote = self.single_byte(csv.quote, b'"', "quote");
        if let Some(header) = &csv.header
            && !header.get_ref()
        {
            self.at(
                header,
                "files without a header record are not supported yet: set `header = true`",
            );
        }
        let encoding = match csv.encoding.as_ref().map(|s| s.get_ref().as_str()) {
            None | Some("utf-8") | Some("utf8") => Encoding::Utf8,
            Some("windows-1252") | Some("cp1252") => Encoding::Windows1252,
            Some("auto") => Encoding::Auto,
            Some(other) => {
                let span = csv.encoding.as_ref().map(|s| s.span()).unwrap_or(0..0);
                self.error(
                    span,
                    format!(
                        "unknown encoding `{other}`, expected `utf-8`, `windows-1252` or `auto`"
                    ),
                );
                Encoding::Utf8
            }
        };
        let extra_columns = match csv.extra_columns.as_ref().map(|s| s.get_ref().as_str()) {
            None | Some("error") => ExtraColumns::Error,
            Some("ignore") => ExtraColumns::Ignore,
            Some(other) => {
                let span = csv.extra_columns.as_ref().map(|s| s.span()).unwrap_or(0..0);
                self.error(
                    span,
                    format!("unknown extra_columns `{other}`, expected `error` or `ignore`"),
                );
                ExtraColumns::Error
            }
        };
        if columns.get_ref().is_empty() {
            self.at(&columns, "a feed needs at least one column");
        }
        let mut names = HashSet::new();
        let mut specs = Vec::new();
        for column in columns.into_inner() {
            let column = column.into_inner();
            if !names.insert(column.name.get_ref().clone()) {
                self.at(
                    &column.name,
                    format!("column `{}` is declared twice", column.name.get_ref()),
                );
            }
            let name = column.name.get_ref().clone();
            match self.column(column) {
                Some(spec) => specs.push(spec),
                None => {
                    self.broken_columns.insert(name);
                }
            }
        }
        Schema {
            layout: Layout::Csv(CsvLayout { delimiter, quote }),
            max_record_bytes: crate::schema::DEFAULT_MAX_RECORD_BYTES,
            max_field_bytes: crate::schema::DEFAULT_MAX_FIELD_BYTES,
            encoding,
            extra_columns,
            columns: specs,
        }
    }

    fn column(&mut self, c: raw::Column) -> Option<ColumnSpec> {
        let name = c.name.get_ref().clone();
        let kind_name = c.kind.get_ref().as_str();
        let mut allowed: &[&str] = &[];
        let kind = match kind_name {
            "string" => {
                allowed = &["max_length", "pattern"];
                let max_length = match &c.max_length {
                    Some(n) if *n.get_ref() >= 1 => Some(*n.get_ref() as usize),
                    Some(n) => {
                        self.at(n, "max_length must be at least 1");
                        None
                    }
                    None => None,
                };
                let pattern = match &c.pattern {
                    Some(p) => match regex::Regex::new(&format!("^(?:{})$", p.get_ref())) {
                        Ok(r) => Some(r),
                        Err(e) => {
                            self.at(p, format!("invalid pattern: {e}"));
                            None
                        }
                    },
                    None => None,
                };
                ColumnKind::String {
                    max_length,
                    pattern,
                }
            }
            "integer" | "decimal" => {
                allowed = &["min", "max"];
                let min = c.min.as_ref().map(|v| *v.get_ref());
                let max = c.max.as_ref().map(|v| *v.get_ref());
                if let (Some(lo), Some(hi), Some(at)) = (min, max, c.max.as_ref())
                    && lo > hi
                {
                    self.at(at, format!("column `{name}`: max {hi} is below min {lo}"));
                }
                if kind_name == "integer" {
                    ColumnKind::Integer { min, max }
                } else {
                    ColumnKind::Decimal { min, max }
                }
            }
            "date" => {
                allowed = &["format"];
                let format = c
                    .format
                    .as_ref()
                    .map(|f| f.get_ref().clone())
                    .unwrap_or_else(|| "%Y-%m-%d".into());
                if let Some(f) = &c.format {
                    self.check_chrono_format(f);
                }
                ColumnKind::Date { format }
            }
            "datetime" => {
                allowed = &["format"];
                let format = match &c.format {
                    None => DateTimeFormat::Iso8601,
                    Some(f) if f.get_ref() == "iso8601" || f.get_ref() == "rfc3339" => {
                        DateTimeFormat::Iso8601
                    }
                    Some(f) => {
                        self.check_chrono_format(f);
                        DateTimeFormat::Chrono(f.get_ref().clone())
                    }
                };
                ColumnKind::DateTime { format }
            }
            "code" => {
                allowed = &["values", "ignore_case"];
                let values = match &c.values {
                    Some(v) if !v.get_ref().is_empty() => v.get_ref().clone(),
                    Some(v) => {
                        self.at(v, format!("column `{name}`: `values` is empty"));
                        Vec::new()
                    }
                    None => {
                        self.at(
                            &c.kind,
                            format!("column `{name}`: a `code` column needs `values`"),
                        );
                        Vec::new()
                    }
                };
                ColumnKind::Code {
                    values,
                    ignore_case: c.ignore_case.unwrap_or(false),
                }
            }
            "boolean" => {
                allowed = &["true_values", "false_values"];
                let words = |v: &Option<Spanned<Vec<String>>>, d: [&str; 3]| {
                    v.as_ref()
                        .map(|v| v.get_ref().clone())
                        .unwrap_or_else(|| d.iter().map(|s| s.to_string()).collect())
                };
                let true_values = words(&c.true_values, ["true", "Y", "1"]);
                let false_values = words(&c.false_values, ["false", "N", "0"]);
                if let Some(both) = true_values.iter().find(|t| false_values.contains(t)) {
                    let at = c
                        .true_values
                        .as_ref()
                        .map(|v| v.span())
                        .unwrap_or(c.kind.span());
                    self.error(
                        at,
                        format!("column `{name}`: `{both}` is both true and false"),
                    );
                }
                ColumnKind::Boolean {
                    true_values,
                    false_values,
                }
            }
            "nhs_number" => ColumnKind::NhsNumber,
            other => {
                self.at(
                    &c.kind,
                    format!(
                        "column `{name}`: unknown type `{other}`, expected string, integer, decimal, date, datetime, code, boolean or nhs_number"
                    ),
                );
                return None;
            }
        };
        let given: [(&str, Option<Range<usize>>); 8] = [
            ("max_length", c.max_length.as_ref().map(|v| v.span())),
            ("pattern", c.pattern.as_ref().map(|v| v.span())),
            ("min", c.min.as_ref().map(|v| v.span())),
            ("max", c.max.as_ref().map(|v| v.span())),
            ("format", c.format.as_ref().map(|v| v.span())),
            ("values", c.values.as_ref().map(|v| v.span())),
            ("true_values", c.true_values.as_ref().map(|v| v.span())),
            ("false_values", c.false_values.as_ref().map(|v| v.span())),
        ];
        for (option, span) in given {
            if let Some(span) = span
                && !allowed.contains(&option)
            {
                self.error(
                    span,
                    format!("column `{name}`: `{option}` does not apply to type `{kind_name}`"),
                );
            }
        }
        Some(ColumnSpec {
            name,
            required: c.required.unwrap_or(false),
            identifier: c.identifier.unwrap_or(false) || matches!(kind, ColumnKind::NhsNumber),
            kind,
        })
    }

    fn check_chrono_format(&mut self, format: &Spanned<String>) {
        use chrono::format::{Item, StrftimeItems};
        if StrftimeItems::new(format.get_ref()).any(|i| matches!(i, Item::Error)) {
            self.at(
                format,
                format!("invalid date format `{}`", format.get_ref()),
            );
        }
    }

    fn mapping(&mut self, map: raw::Map, schema: &Schema) -> Mapping {
        let mut used: BTreeMap<String, String> = BTreeMap::new();
        let observations_span = map.observations.as_ref().map(|m| m.observed_at.span());
        let service_user = map.service_user.map(|m| {
            let mut field =
                |checker: &mut Self, field: &str, col: Option<Spanned<String>>, expect: Expect| {
                    col.and_then(|c| {
                        checker.mapped_column(schema, &mut used, "service_user", field, &c, expect)
                    })
                };
            let local_id = field(self, "local_id", Some(m.local_id), Expect::Text);
            ServiceUserMapping {
                local_id: local_id.unwrap_or(0),
                nhs_number: field(self, "nhs_number", m.nhs_number, Expect::NhsNumber),
                family_name: field(self, "family_name", m.family_name, Expect::Text),
                given_name: field(self, "given_name", m.given_name, Expect::Text),
                date_of_birth: field(self, "date_of_birth", m.date_of_birth, Expect::Date),
                gender: field(self, "gender", m.gender, Expect::Text),
                postcode: field(self, "postcode", m.postcode, Expect::Text),
            }
        });
        let observations = map.observations.map(|m| {
            let observed_at = self.mapped_column(
                schema,
                &mut used,
                "observations",
                "observed_at",
                &m.observed_at,
                Expect::DateTime,
            );
            let vitals = [
                (Vital::RespirationRate, m.respiration_rate, Expect::Number),
                (Vital::Spo2, m.spo2, Expect::Number),
                (Vital::OnOxygen, m.on_oxygen, Expect::Boolean),
                (Vital::SystolicBp, m.systolic_bp, Expect::Number),
                (Vital::DiastolicBp, m.diastolic_bp, Expect::Number),
                (Vital::Pulse, m.pulse, Expect::Number),
                (Vital::Consciousness, m.consciousness, Expect::Text),
                (Vital::Temperature, m.temperature, Expect::Number),
            ];
            let mut columns = Vec::new();
            for (vital, column, expect) in vitals {
                if let Some(column) = column
                    && let Some(index) = self.mapped_column(
                        schema,
                        &mut used,
                        "observations",
                        vital.field(),
                        &column,
                        expect,
                    )
                {
                    columns.push((vital, index));
                }
            }
            ObservationMapping {
                observed_at: observed_at.unwrap_or(0),
                vitals: columns,
                news2: m.news2.unwrap_or(true),
            }
        });
        if let (Some(span), None) = (observations_span, &service_user) {
            self.error(
                span,
                "observations need `map.service_user` to say whose they are",
            );
        }
        Mapping {
            service_user,
            observations,
        }
    }

    fn mapped_column(
        &mut self,
        schema: &Schema,
        used: &mut BTreeMap<String, String>,
        record: &str,
        field: &str,
        column: &Spanned<String>,
        expect: Expect,
    ) -> Option<usize> {
        let name = column.get_ref();
        let Some(index) = schema.columns.iter().position(|c| &c.name == name) else {
            if self.broken_columns.contains(name) {
                return None;
            }
            self.at(
                column,
                format!("{record}.{field} maps column `{name}`, which the feed does not declare"),
            );
            return None;
        };
        let target = format!("{record}.{field}");
        if let Some(first) = used.insert(name.clone(), target.clone()) {
            self.at(
                column,
                format!("column `{name}` is mapped twice: to {first} and to {target}"),
            );
        }
        let kind = &schema.columns[index].kind;
        let fits = match expect {
            Expect::Text => true,
            Expect::NhsNumber => matches!(kind, ColumnKind::NhsNumber),
            Expect::Date => matches!(kind, ColumnKind::Date { .. }),
            Expect::DateTime => matches!(kind, ColumnKind::DateTime { .. }),
            Expect::Number => matches!(
                kind,
                ColumnKind::Integer { .. } | ColumnKind::Decimal { .. }
            ),
            Expect::Boolean => matches!(kind, ColumnKind::Boolean { .. }),
        };
        if !fits {
            self.at(
                column,
                format!(
                    "{target} needs a {} column, but `{name}` is declared as {}",
                    expect.describe(),
                    kind.describe()
                ),
            );
        }
        Some(index)
    }
}

#[derive(Clone, Copy)]
enum Expect {
    Text,
    NhsNumber,
    Date,
    DateTime,
    Number,
    Boolean,
}

impl Expect {
    fn describe(self) -> &'static str {
        match self {
            Expect::Text => "text",
            Expect::NhsNumber => "nhs_number",
            Expect::Date => "date",
            Expect::DateTime => "datetime",
            Expect::Number => "integer or decimal",
            Expect::Boolean => "boolean",
        }
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn resolve(base: &Path, value: Option<&str>, default: &str) -> PathBuf {
    join(base, value.unwrap_or(default))
}

/// `base/relative` with `.` and `..` resolved lexically, so paths print cleanly.
fn join(base: &Path, relative: &str) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for part in base.join(relative).components() {
        match part {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other),
        }
    }
    out
}

/// `10GiB`, `500MiB`, `64KiB`, `1000` (bytes); also `GB`/`MB`/`KB` as powers of 1000.
fn parse_bytes(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().ok()?;
    let factor: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => return None,
    };
    number.checked_mul(factor)
}

/// A byte count as an admin writes it: `1GiB`, `256KiB`, or bytes.
pub fn show_bytes(n: u64) -> String {
    for (unit, factor) in [
        ("TiB", 1u64 << 40),
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
    ] {
        if n >= factor && n % factor == 0 {
            return format!("{}{unit}", n / factor);
        }
    }
    n.to_string()
}

/// Removes the innermost table key whose key or value covers `offset`.
///
/// Implicit tables (`[a.b.c]` headers) have no span of their own, so every
/// nested table is searched, not only those whose span covers the offset.
fn drop_key_at(value: &mut Spanned<DeValue<'_>>, offset: usize) -> Option<String> {
    let covers = |span: Range<usize>| span.start <= offset && offset < span.end.max(span.start + 1);
    match value.get_mut() {
        DeValue::Table(table) => {
            let mut found = None;
            for (key, item) in table.iter_mut() {
                if covers(key.span()) {
                    found = Some(key.get_ref().to_string());
                    break;
                }
                if let Some(inner) = drop_key_at(item, offset) {
                    return Some(inner);
                }
                if covers(item.span()) {
                    found = Some(key.get_ref().to_string());
                    break;
                }
            }
            let found = found?;
            table.remove(found.as_str());
            Some(found)
        }
        DeValue::Array(items) => items.iter_mut().find_map(|item| drop_key_at(item, offset)),
        _ => None,
    }
}

/// Why a file-name glob could never select a file a source would take.
fn never_matches(glob: &str) -> Option<&'static str> {
    if glob.is_empty() {
        return Some("it is empty");
    }
    if glob.contains('/') || glob.contains('\\') {
        return Some("feeds match file names, which never contain a path separator");
    }
    if glob.starts_with('.') {
        return Some("names starting with `.` are temporary uploads and are never taken");
    }
    if TEMPORARY_SUFFIXES.iter().any(|s| glob.ends_with(s)) {
        return Some(
            "names ending `.part`, `.tmp` or `.filepart` are temporary uploads and are never taken",
        );
    }
    None
}

/// 1-based line and character column of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let column = text[line_start..offset].chars().count() + 1;
    (line, column)
}

#[cfg(test)]
mod tests;
