//! Records: one module per kind of care record, each holding the config
//! that maps a feed's columns to it, its typed record, how a row becomes one
//! and how it is written to the ledger. The kinds are listed once, here.
//!
//! A kind that is its fields and no more is a module with a [`care::Spec`]
//! plus its lines in this registry: a [`Kind`] and a field of [`RawMap`].
//! Service users and observations, which are more, also have a field of
//! [`Mapping`] and [`Records`] and a call in [`map_row`] and [`Writer::write`].

pub mod alert;
pub mod care;
pub mod care_record_entry;
pub mod care_transaction;
pub mod fields;
pub mod observations;
pub mod red_bag;
pub mod service_user;
pub mod staff;
pub mod trend;
pub mod versions;

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
    Staff,
    CareRecordEntry,
    CareTransaction,
    Alert,
    RedBag,
    /// Weekly counts with no identifiers; exported only, never mapped.
    Trend,
}

impl Kind {
    pub const ALL: [Kind; 8] = [
        Kind::ServiceUser,
        Kind::Observations,
        Kind::Staff,
        Kind::CareRecordEntry,
        Kind::CareTransaction,
        Kind::Alert,
        Kind::RedBag,
        Kind::Trend,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::ServiceUser => service_user::KIND,
            Kind::Observations => observations::KIND,
            Kind::Staff => staff::KIND,
            Kind::CareRecordEntry => care_record_entry::KIND,
            Kind::CareTransaction => care_transaction::KIND,
            Kind::Alert => alert::KIND,
            Kind::RedBag => red_bag::KIND,
            Kind::Trend => trend::KIND,
        }
    }

    /// How a kind that is its fields and no more is described.
    pub fn spec(self) -> Option<&'static care::Spec> {
        match self {
            Kind::Staff => Some(&staff::SPEC),
            Kind::CareRecordEntry => Some(&care_record_entry::SPEC),
            Kind::CareTransaction => Some(&care_transaction::SPEC),
            Kind::Alert => Some(&alert::SPEC),
            Kind::RedBag => Some(&red_bag::SPEC),
            Kind::ServiceUser | Kind::Observations | Kind::Trend => None,
        }
    }

    /// The kinds described by a [`care::Spec`].
    pub fn described() -> impl Iterator<Item = &'static care::Spec> {
        Kind::ALL.into_iter().filter_map(Kind::spec)
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
    /// Each row names a member of staff.
    pub staff: Option<Spanned<fields::RawFields>>,
    /// Each row is a note or assessment about the service user.
    pub care_record_entry: Option<Spanned<fields::RawFields>>,
    /// Each row is an episode of care for the service user.
    pub care_transaction: Option<Spanned<fields::RawFields>>,
    /// Each row is an alert about the service user.
    pub alert: Option<Spanned<fields::RawFields>>,
    /// Each row is a hospital transfer pack for the service user.
    pub red_bag: Option<Spanned<fields::RawFields>>,
}

/// A feed's mapping, checked: for each kind it makes, which columns fill
/// which fields.
#[derive(Debug, Default)]
pub struct Mapping {
    pub service_user: Option<service_user::Mapping>,
    pub observations: Option<observations::Mapping>,
    /// The described kinds the feed makes.
    pub care: Vec<care::Mapping>,
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
        let described = [
            (&staff::SPEC, raw.staff),
            (&care_record_entry::SPEC, raw.care_record_entry),
            (&care_transaction::SPEC, raw.care_transaction),
            (&alert::SPEC, raw.alert),
            (&red_bag::SPEC, raw.red_bag),
        ];
        let mut care = Vec::new();
        for (spec, raw) in described {
            let Some(raw) = raw else { continue };
            if spec.about_person && service_user.is_none() {
                checker.error_at(
                    raw.span(),
                    &format!(
                        "map.{} needs `map.service_user` to say whose it is",
                        spec.kind
                    ),
                );
            }
            care.push(care::Mapping::check(spec, raw, checker));
        }
        Mapping {
            service_user,
            observations: observations.map(|(_, m)| m),
            care,
        }
    }
}

impl Mapping {
    /// The kinds of record the feed makes, in [`Kind`] order.
    pub fn kinds(&self) -> Vec<Kind> {
        let mut kinds: Vec<Kind> = self
            .service_user
            .as_ref()
            .map(|_| Kind::ServiceUser)
            .into_iter()
            .chain(self.observations.as_ref().map(|_| Kind::Observations))
            .chain(self.care.iter().map(|m| m.spec.kind))
            .collect();
        kinds.sort();
        kinds
    }
}

/// The kind of value a record field takes, to check the column mapped to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    Text,
    NhsNumber,
    Date,
    DateTime,
    /// A date, or a date and time.
    When,
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
            Expect::When => "date or datetime",
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
            Expect::When => matches!(kind, ColumnKind::Date { .. } | ColumnKind::DateTime { .. }),
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

    /// The schema column `column` names, checked to exist only (it may be
    /// named by other settings too); `None` (reported) when it does not.
    fn declared(&mut self, kind: &str, field: &str, column: &Spanned<String>) -> Option<usize>;

    /// Whether the schema column at `index` holds `expect`.
    fn holds(&self, index: usize, expect: Expect) -> bool;

    /// The codes of the schema column at `index`, when it is a `code` column.
    fn codes(&self, index: usize) -> Option<Vec<String>>;

    /// The `source,target` pairs of a translation file next to the config;
    /// `None` (reported) when it cannot be read.
    fn translation_file(&mut self, file: &Spanned<String>) -> Option<Vec<(String, String)>>;

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
    /// The described kinds' records.
    pub care: Vec<care::CareRecord>,
}

/// Turns one checked row into records. Text a record takes whole may be
/// moved out of the row.
pub fn map_row(mapping: &Mapping, row: &mut Row) -> Records {
    // Observations read the row before the service user takes its text out.
    let observations = mapping
        .observations
        .as_ref()
        .and_then(|m| observations::map(m, row));
    let care = mapping
        .care
        .iter()
        .filter_map(|m| care::map(m, row))
        .collect();
    let service_user = mapping
        .service_user
        .as_ref()
        .map(|m| service_user::map(m, row));
    Records {
        line: row.line,
        service_user,
        observations,
        care,
    }
}

/// A record as an export hands it to each output format.
#[derive(Debug, Clone, Copy)]
pub enum Exported<'a> {
    ServiceUser(&'a service_user::StoredUser),
    ObservationSet(&'a observations::StoredSet),
    Care(&'a care::StoredCare),
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
    for spec in Kind::described().filter(|s| kinds.contains(&s.kind)) {
        for file in files {
            if !allowed.allows(spec.kind, &file.partner, file.feed.as_deref()) {
                continue;
            }
            care::written_by(conn, spec, file.id, &mut |record| {
                if let Some(detail_id) = record.detail_id {
                    referenced.insert(detail_id);
                }
                each(Exported::Care(&record))
            })?;
        }
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
    care: care::Writer<'c>,
    pub records: u64,
}

impl<'c> Writer<'c> {
    pub fn new(conn: &'c Connection, file_id: i64, source: &str) -> Result<Writer<'c>> {
        Ok(Writer {
            service_users: service_user::Writer::new(conn, file_id, source),
            observations: observations::Writer::new(conn, file_id)?,
            care: care::Writer::new(conn, file_id, source),
            records: 0,
        })
    }

    pub fn write(&mut self, records: &Records) -> Result<()> {
        // Every kind but staff is about a service user: without one, it is not written.
        let detail_id = match &records.service_user {
            Some(user) => {
                let (detail_id, written) = self.service_users.write(user, records.line)?;
                self.records += written;
                Some(detail_id)
            }
            None => None,
        };
        if let (Some(detail_id), Some(set)) = (detail_id, &records.observations) {
            self.records += self.observations.write(detail_id, set, records.line)?;
        }
        for record in &records.care {
            self.records += self.care.write(record, detail_id, records.line)?;
        }
        Ok(())
    }

    /// Writes what is held until the file's rows are all written (each
    /// service user's list of observation sets); returns the records written.
    pub fn finish(mut self) -> Result<u64> {
        self.observations.write_lists()?;
        Ok(self.records)
    }
}

#[cfg(test)]
mod tests;
