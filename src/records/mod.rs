//! Records: one module per kind of care record, each holding the config
//! that maps a feed's columns to it, its typed record, how a row becomes one
//! and how it is written to the ledger. The kinds are listed once, here.
//!
//! A new kind is a module here plus its lines in this registry: a field of
//! [`RawMap`], [`Mapping`] and [`Records`], and a call in [`map_row`] and
//! [`Writer::write`].

pub mod observations;
pub mod service_user;
pub mod trend;

use std::ops::Range;

use rusqlite::Connection;
use serde::Deserialize;
use toml::Spanned;

use crate::ledger::{LoadedFile, Result};
use crate::schema::ColumnKind;
use crate::validate::Row;

/// The kinds of record dropgate keeps, by the name the config uses for each
/// (`[feeds.NAME.map.KIND]`, a grant's or a schedule's `records`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    ServiceUser,
    Observations,
    /// Weekly counts with no identifiers; exported only, never mapped.
    Trend,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::ServiceUser, Kind::Observations, Kind::Trend];

    pub fn name(self) -> &'static str {
        match self {
            Kind::ServiceUser => service_user::KIND,
            Kind::Observations => observations::KIND,
            Kind::Trend => trend::KIND,
        }
    }

    pub fn from_name(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == name)
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// `[feeds.NAME.map]`: record fields filled from columns, a section per kind.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawMap {
    /// Each row identifies a service user.
    pub service_user: Option<service_user::RawMapping>,
    /// Each row carries a set of vital-sign observations.
    pub observations: Option<observations::RawMapping>,
}

/// A feed's mapping, checked: for each kind it makes, which columns fill
/// which fields.
#[derive(Debug, Default)]
pub struct Mapping {
    pub service_user: Option<service_user::Mapping>,
    pub observations: Option<observations::Mapping>,
}

impl Mapping {
    /// Checks every kind's section against the schema, through `checker`.
    pub fn check(raw: RawMap, checker: &mut dyn MappingChecker) -> Mapping {
        let service_user = raw
            .service_user
            .map(|m| service_user::Mapping::check(m, checker));
        let observations = raw.observations.map(|m| {
            let at = m.observed_at.span();
            (at, observations::Mapping::check(m, checker))
        });
        if let (Some((at, _)), None) = (&observations, &service_user) {
            checker.error_at(
                at.clone(),
                "observations need `map.service_user` to say whose they are",
            );
        }
        Mapping {
            service_user,
            observations: observations.map(|(_, m)| m),
        }
    }
}

/// The kind of value a record field takes, to check the column mapped to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    Text,
    NhsNumber,
    Date,
    DateTime,
    Number,
    Boolean,
}

impl Expect {
    pub fn describe(self) -> &'static str {
        match self {
            Expect::Text => "text",
            Expect::NhsNumber => "nhs_number",
            Expect::Date => "date",
            Expect::DateTime => "datetime",
            Expect::Number => "integer or decimal",
            Expect::Boolean => "boolean",
        }
    }

    /// Whether a column of this kind can fill the field.
    pub fn fits(self, kind: &ColumnKind) -> bool {
        match self {
            Expect::Text => true,
            Expect::NhsNumber => matches!(kind, ColumnKind::NhsNumber),
            Expect::Date => matches!(kind, ColumnKind::Date { .. }),
            Expect::DateTime => matches!(kind, ColumnKind::DateTime { .. }),
            Expect::Number => matches!(
                kind,
                ColumnKind::Integer { .. } | ColumnKind::Decimal { .. }
            ),
            Expect::Boolean => matches!(kind, ColumnKind::Boolean { .. }),
        }
    }
}

/// What a kind's mapping check asks of the config checker, which reports
/// every problem at its place in the file.
pub trait MappingChecker {
    /// The schema column that `kind.field` maps, checked to exist, to be
    /// mapped once and to hold `expect`; `None` (reported) when it is unusable.
    fn column(
        &mut self,
        kind: &str,
        field: &str,
        column: &Spanned<String>,
        expect: Expect,
    ) -> Option<usize>;

    /// Reports a problem with the setting at `span`.
    fn error_at(&mut self, span: Range<usize>, message: &str);
}

/// The records one row yields, with the line they came from.
#[derive(Debug, Clone)]
pub struct Records {
    pub line: u64,
    pub service_user: Option<service_user::ServiceUser>,
    /// Observations taken together at one time.
    pub observations: Option<observations::ObservationSet>,
}

/// Turns one checked row into records.
pub fn map_row(mapping: &Mapping, mut row: Row) -> Records {
    // Observations read the row before the service user takes its text out.
    let observations = mapping
        .observations
        .as_ref()
        .and_then(|m| observations::map(m, &row));
    let service_user = mapping
        .service_user
        .as_ref()
        .map(|m| service_user::map(m, &mut row));
    Records {
        line: row.line,
        service_user,
        observations,
    }
}

/// A record as an export hands it to each output format.
#[derive(Debug, Clone, Copy)]
pub enum Exported<'a> {
    ServiceUser(&'a service_user::StoredUser),
    ObservationSet(&'a observations::StoredSet),
    Trend(&'a trend::TrendCount),
}

/// Which records of which partners and feeds an export may include.
pub trait Allowed {
    fn allows(&self, kind: Kind, partner: &str, feed: Option<&str>) -> bool;
}

/// What an export reads: the files loaded in its range (in load order) and
/// the ids of the observation sets they wrote, `(after, up_to]`.
pub struct Scope<'a> {
    pub files: &'a [LoadedFile],
    pub sets: (i64, i64),
    pub kinds: &'a [Kind],
    pub allowed: &'a dyn Allowed,
    /// How trend counts are made safe to publish.
    pub disclosure: trend::Disclosure,
}

/// Hands `each` every record of the scope's kinds that its `allowed` lets
/// through: the observation sets, then the service users the files wrote
/// and those the sets refer to, each once; then the trend counts (of every
/// week, whatever the range).
pub fn export<E: From<crate::ledger::LedgerError>>(
    conn: &Connection,
    scope: &Scope<'_>,
    each: &mut dyn FnMut(Exported<'_>) -> std::result::Result<(), E>,
) -> std::result::Result<(), E> {
    let Scope {
        files,
        sets,
        kinds,
        allowed,
        disclosure,
    } = *scope;
    let mut referenced = std::collections::BTreeSet::new();
    if kinds.contains(&Kind::Observations) {
        observations::for_each_in(conn, sets.0, sets.1, &mut |set| {
            if !allowed.allows(Kind::Observations, &set.partner, set.feed.as_deref()) {
                return Ok(());
            }
            referenced.insert(set.detail_id);
            each(Exported::ObservationSet(set))
        })?;
    }
    if kinds.contains(&Kind::ServiceUser) {
        let lets_through = |u: &service_user::StoredUser| {
            allowed.allows(Kind::ServiceUser, &u.detail.source, u.feed.as_deref())
        };
        for file in files {
            for user in service_user::written_by(conn, file.id)? {
                referenced.remove(&user.detail.detail_id);
                if lets_through(&user) {
                    each(Exported::ServiceUser(&user))?;
                }
            }
        }
        for detail_id in referenced {
            if let Some(user) = service_user::by_detail(conn, detail_id)?
                && lets_through(&user)
            {
                each(Exported::ServiceUser(&user))?;
            }
        }
    }
    if kinds.contains(&Kind::Trend) {
        let counts = trend::counts(
            conn,
            &|partner, feed| allowed.allows(Kind::Trend, partner, feed),
            disclosure,
        )?;
        for count in &counts {
            each(Exported::Trend(count))?;
        }
    }
    Ok(())
}

/// Writes one file's records, kind by kind, counting the rows written.
pub struct Writer<'c> {
    service_users: service_user::Writer<'c>,
    observations: observations::Writer<'c>,
    pub records: u64,
}

impl<'c> Writer<'c> {
    pub fn new(conn: &'c Connection, file_id: i64, source: &str) -> Result<Writer<'c>> {
        Ok(Writer {
            service_users: service_user::Writer::new(conn, file_id, source),
            observations: observations::Writer::new(conn, file_id)?,
            records: 0,
        })
    }

    pub fn write(&mut self, records: &Records) -> Result<()> {
        // Every other kind is about a service user: without one, nothing is written.
        let Some(user) = &records.service_user else {
            return Ok(());
        };
        let (detail_id, written) = self.service_users.write(user, records.line)?;
        self.records += written;
        if let Some(set) = &records.observations {
            self.records += self.observations.write(detail_id, set, records.line)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
