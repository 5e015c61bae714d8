//! Configuration: the TOML file is read in two phases, as written (`raw`) and
//! then checked and resolved into the types below, so that nothing on the run
//! path ever re-checks a setting.
//!
//! Every problem is reported as `PATH:LINE:COL: message`, all of them at once:
//! each partner, source and feed is deserialised on its own so a mistake in one
//! does not hide mistakes in the others.

mod alerts;
mod authorized_keys;
mod columns;
mod feeds;
mod fixed;
mod framing;
mod logins;
mod mapping;
mod publishing;
mod raw;
mod rules;
mod sftp;
mod sources;
mod types;
mod values;
mod xml;

pub use authorized_keys::parse_authorized_line;
pub use publishing::parse_age_recipients;
pub use types::*;
use values::parse_bytes;
pub use values::show_bytes;

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use globset::{Glob, GlobSet, GlobSetBuilder};
use serde::de::DeserializeOwned;
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use crate::records::{Expect, Mapping, MappingChecker};
use crate::schema::{
    CodeList, ColumnKind, ColumnSpec, Comparison, Condition, CsvLayout, DateTimeFormat, Encoding,
    ExtraColumns, FixedLayout, HeaderRecord, Layout, MissingColumns, NameMatch, RECEIVED_COLUMN,
    Rule, Schema, Test, TrailerRecord,
};

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
            let message = with_suggestion(message);
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
            if SECTIONS.contains(&name.as_str()) {
                sections.insert(name, value);
                continue;
            }
            let expected: Vec<String> = SECTIONS.iter().map(|s| format!("`{s}`")).collect();
            let mut message = format!(
                "unknown section `{name}`, expected one of {}",
                expected.join(", ")
            );
            if let Some(meant) = nearest(&name, SECTIONS) {
                message.push_str(&format!("; did you mean `{meant}`?"));
            }
            self.error(key.span(), message);
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
        let http: Option<raw::Http> = sections
            .remove("http")
            .map(|v| self.deserialize(v).unwrap_or_default());
        let http = http.map(|raw| self.http(raw));
        let alerts: raw::Alerts = match sections.remove("alerts") {
            Some(v) => self.deserialize(v).unwrap_or_default(),
            None => raw::Alerts::default(),
        };
        let partners: Vec<(Spanned<String>, raw::Partner)> =
            self.entries("partner", sections.remove("partners"));
        let sources: Vec<(Spanned<String>, raw::Source)> =
            self.entries("source", sections.remove("sources"));
        let feeds: Vec<(Spanned<String>, raw::Feed)> =
            self.entries("feed", sections.remove("feeds"));
        let destinations: Vec<(Spanned<String>, raw::Destination)> =
            self.entries("destination", sections.remove("destinations"));
        let controllers: Vec<(Spanned<String>, raw::Controller)> =
            self.entries("controller", sections.remove("controllers"));
        let grants: Vec<(Spanned<String>, raw::Grant)> =
            self.entries("grant", sections.remove("grants"));
        let schedules: Vec<(Spanned<String>, raw::Schedule)> =
            self.entries("schedule", sections.remove("schedules"));
        let routes: Vec<(Spanned<String>, raw::Route)> =
            self.entries("route", sections.remove("routes"));
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
        let controllers: BTreeMap<String, Controller> = controllers
            .into_iter()
            .map(|(name, c)| {
                let controller = Controller {
                    name: c.name.unwrap_or_else(|| name.get_ref().clone()),
                };
                (name.into_inner(), controller)
            })
            .collect();
        let partner_controllers: Vec<_> = partners
            .iter()
            .map(|(name, p)| (name.clone(), p.controller.clone()))
            .collect();
        self.partner_controllers(&partner_controllers, &controllers);
        let partners: BTreeMap<String, Partner> = partners
            .into_iter()
            .map(|(name, p)| {
                let partner = Partner {
                    name: p.name.unwrap_or_else(|| name.get_ref().clone()),
                    ods_code: p.ods_code.map(Spanned::into_inner),
                    sftp: p.sftp.map(|s| self.partner_sftp(name.get_ref(), s, base)),
                    controller: p.controller.map(Spanned::into_inner),
                    age: p.age.map(|a| self.partner_age(name.get_ref(), a, base)),
                    receipts: p
                        .receipts
                        .map(|r| self.partner_receipts(name.get_ref(), r, &destinations, base)),
                    retention_days: self.days(p.retention_days.as_ref(), "retention_days"),
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
            if let Some(feed) = self.feed(name.get_ref(), f, &partners, &mut seen_patterns, base) {
                checked_feeds.insert(name.into_inner(), feed);
            }
        }
        let grants: BTreeMap<String, Grant> = grants
            .into_iter()
            .filter_map(|(name, g)| {
                let grant =
                    self.grant(name.get_ref(), g, &controllers, &partners, &checked_feeds)?;
                Some((name.into_inner(), grant))
            })
            .collect();
        let schedules: BTreeMap<String, ExportSchedule> = schedules
            .into_iter()
            .filter_map(|(name, s)| {
                let schedule =
                    self.schedule(name.get_ref(), s, &partners, &grants, &destinations)?;
                Some((name.into_inner(), schedule))
            })
            .collect();
        let alerts = self.alerts(alerts, &destinations);
        let routes: BTreeMap<String, Route> = routes
            .into_iter()
            .filter_map(|(name, r)| {
                let route = self.route(
                    name.get_ref(),
                    r,
                    &partners,
                    &checked_feeds,
                    &destinations,
                    &grants,
                    base,
                )?;
                Some((name.into_inner(), route))
            })
            .collect();
        let daemon = daemon?;
        Some(Config {
            file: path.to_path_buf(),
            sha256: crate::digest::sha256_hex(self.text.as_bytes()),
            daemon,
            keys,
            partners,
            sources,
            feeds: checked_feeds,
            sftp_server,
            http,
            alerts,
            destinations,
            controllers,
            grants,
            schedules,
            routes,
            warnings: Vec::new(),
        })
    }

    fn http(&mut self, raw: raw::Http) -> Http {
        let default = std::net::SocketAddr::from(([127, 0, 0, 1], 9187));
        let listen = match raw.listen {
            None => default,
            Some(l) => match l.get_ref().parse::<std::net::SocketAddr>() {
                Ok(a) => {
                    if !a.ip().is_loopback() {
                        self.warning(
                            l.span(),
                            "[http] listens beyond this machine: anyone who reaches it reads the metrics (no login)",
                        );
                    }
                    a
                }
                Err(_) => {
                    self.at(
                        &l,
                        format!("`{}` is not an address like `127.0.0.1:9187`", l.get_ref()),
                    );
                    default
                }
            },
        };
        Http { listen }
    }

    /// A number of days to keep something: 1 to 100 years.
    fn days(&mut self, given: Option<&Spanned<i64>>, key: &str) -> Option<u32> {
        let days = given?;
        if (1..=36500).contains(days.get_ref()) {
            Some(*days.get_ref() as u32)
        } else {
            self.at(days, format!("{key} must be between 1 and 36500"));
            None
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
        let retention_days = self
            .days(raw.retention_days.as_ref(), "retention_days")
            .unwrap_or(DEFAULT_RETENTION_DAYS);
        let purge_text = raw
            .purge_cron
            .as_ref()
            .map_or(DEFAULT_PURGE_CRON, |c| c.get_ref());
        let purge = match crate::schedule::Cron::parse(purge_text, time_zone) {
            Ok(cron) => cron,
            Err(e) => {
                let at = raw.purge_cron.as_ref().expect("the default parses");
                self.at(at, format!("purge_cron {e}"));
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
        let stop_deadline = self.duration(raw.stop_deadline, DEFAULT_STOP_DEADLINE);
        let min_free_space = self.size(
            raw.min_free_space,
            DEFAULT_MIN_FREE_SPACE,
            1 << 50,
            "min_free_space",
        );
        Some(Daemon {
            spool,
            ledger,
            time_zone,
            retention_days,
            purge,
            min_free_space,
            max_errors_per_file,
            stop_deadline,
        })
    }
}

/// "unknown field `retension_days`, expected one of ..." gains "; did you
/// mean `retention_days`?" when one valid key is near enough to be meant.
fn with_suggestion(message: String) -> String {
    let Some(rest) = message.strip_prefix("unknown field `") else {
        return message;
    };
    let Some((unknown, expected)) = rest.split_once('`') else {
        return message;
    };
    // The valid keys are the other back-quoted words.
    match nearest(unknown, expected.split('`').skip(1).step_by(2)) {
        Some(key) => format!("{message}; did you mean `{key}`?"),
        None => message,
    }
}

/// The valid name a misspelt one most likely meant, if any is near enough.
fn nearest<'a>(unknown: &str, valid: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    valid
        .into_iter()
        .map(|key| (strsim::damerau_levenshtein(unknown, key), key))
        .filter(|(distance, key)| *distance <= (key.len() / 3).max(1))
        .min()
        .map(|(_, key)| key)
}

/// The top-level sections a config may have.
const SECTIONS: [&str; 13] = [
    "daemon",
    "keys",
    "partners",
    "sources",
    "feeds",
    "sftp_server",
    "destinations",
    "controllers",
    "grants",
    "schedules",
    "routes",
    "http",
    "alerts",
];

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
