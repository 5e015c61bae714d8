//! Observations: vital signs taken together at one time (a NEWS2 set), one
//! value per code, with a NEWS2 total derived when the set is complete.

use std::fmt::Write;

use chrono::{DateTime, SecondsFormat, Utc};
use compact_str::CompactString;
use rusqlite::{CachedStatement, Connection, ToSql, params};
use serde::Deserialize;
use toml::Spanned;

use super::fields::RawField;
use super::{Expect, MappingChecker, versions};
use crate::domain::news2::{self, Consciousness};
use crate::ledger::Result;
use crate::validate::{Row, Value};

/// The section name in `[feeds.NAME.map]`.
pub const KIND: &str = "observations";

/// `[feeds.NAME.map.observations]`: column names for each vital sign.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMapping {
    /// When the set was taken (a `datetime` column; required).
    pub observed_at: Spanned<String>,
    pub respiration_rate: Option<Spanned<String>>,
    pub spo2: Option<Spanned<String>>,
    pub on_oxygen: Option<Spanned<String>>,
    pub systolic_bp: Option<Spanned<String>>,
    pub diastolic_bp: Option<Spanned<String>>,
    pub pulse: Option<Spanned<String>>,
    pub consciousness: Option<Spanned<String>>,
    pub temperature: Option<Spanned<String>>,
    /// Derive a NEWS2 total when the full set is present. Default true.
    pub news2: Option<bool>,
    /// Columns whose values name the set: a row with the key of a set the
    /// person already has from this feed is a new version of it.
    pub key: Option<Spanned<RawField>>,
    /// A date or datetime column: the row's own time, which decides the
    /// current version (without it, the version loaded last).
    pub updated_at: Option<Spanned<RawField>>,
}

/// Which columns fill which vital signs (column indexes into the schema).
#[derive(Debug)]
pub struct Mapping {
    pub observed_at: usize,
    pub vitals: Vec<(Vital, usize)>,
    /// Derive a NEWS2 total when every parameter is present.
    pub news2: bool,
    /// The columns of `key`: see [`super::versions`].
    pub key: Vec<usize>,
    pub updated_at: Option<usize>,
    /// Whose keys these are: the feed's name.
    pub key_scope: String,
}

impl Mapping {
    /// Checks each mapped column against the schema.
    pub fn check(raw: RawMapping, checker: &mut dyn MappingChecker) -> Mapping {
        let observed_at = checker.column(KIND, "observed_at", &raw.observed_at, Expect::DateTime);
        let vitals = [
            (Vital::RespirationRate, raw.respiration_rate, Expect::Number),
            (Vital::Spo2, raw.spo2, Expect::Number),
            (Vital::OnOxygen, raw.on_oxygen, Expect::Boolean),
            (Vital::SystolicBp, raw.systolic_bp, Expect::Number),
            (Vital::DiastolicBp, raw.diastolic_bp, Expect::Number),
            (Vital::Pulse, raw.pulse, Expect::Number),
            (Vital::Consciousness, raw.consciousness, Expect::Text),
            (Vital::Temperature, raw.temperature, Expect::Number),
        ];
        let mut columns = Vec::new();
        for (vital, column, expect) in vitals {
            if let Some(column) = column
                && let Some(index) = checker.column(KIND, vital.field(), &column, expect)
            {
                columns.push((vital, index));
            }
        }
        let key = raw
            .key
            .map(|key| versions::key_columns(KIND, key, checker))
            .unwrap_or_default();
        let updated_at = raw.updated_at.and_then(|column| {
            let span = column.span();
            let index = versions::updated_at_column(KIND, column, checker);
            versions::check_keyed(KIND, &key, index, span, checker);
            index
        });
        Mapping {
            observed_at: observed_at.unwrap_or(0),
            vitals: columns,
            news2: raw.news2.unwrap_or(true),
            key,
            updated_at,
            key_scope: String::new(),
        }
    }
}

/// The vital signs dropgate knows, with the code and unit each is stored under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vital {
    RespirationRate,
    Spo2,
    OnOxygen,
    SystolicBp,
    DiastolicBp,
    Pulse,
    Consciousness,
    Temperature,
}

impl Vital {
    /// The mapping key an admin writes in the config.
    pub fn field(self) -> &'static str {
        match self {
            Vital::RespirationRate => "respiration_rate",
            Vital::Spo2 => "spo2",
            Vital::OnOxygen => "on_oxygen",
            Vital::SystolicBp => "systolic_bp",
            Vital::DiastolicBp => "diastolic_bp",
            Vital::Pulse => "pulse",
            Vital::Consciousness => "consciousness",
            Vital::Temperature => "temperature",
        }
    }

    /// The observation code stored in the ledger.
    pub fn code(self) -> &'static str {
        match self {
            Vital::RespirationRate => "respiratory_rate",
            Vital::Spo2 => "oxygen_saturation",
            Vital::OnOxygen => "supplemental_oxygen",
            Vital::SystolicBp => "systolic_bp",
            Vital::DiastolicBp => "diastolic_bp",
            Vital::Pulse => "heart_rate",
            Vital::Consciousness => "consciousness",
            Vital::Temperature => "body_temperature",
        }
    }

    /// UCUM unit, where the measure has one.
    pub fn unit(self) -> Option<&'static str> {
        match self {
            Vital::RespirationRate | Vital::Pulse => Some("/min"),
            Vital::Spo2 => Some("%"),
            Vital::SystolicBp | Vital::DiastolicBp => Some("mm[Hg]"),
            Vital::Temperature => Some("Cel"),
            Vital::OnOxygen | Vital::Consciousness => None,
        }
    }
}

/// What an observation measures; ids match the ledger's `observation_codes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    Vital(Vital),
    News2Score,
}

impl Code {
    pub const ALL: [Code; 9] = [
        Code::Vital(Vital::RespirationRate),
        Code::Vital(Vital::Spo2),
        Code::Vital(Vital::OnOxygen),
        Code::Vital(Vital::SystolicBp),
        Code::Vital(Vital::DiastolicBp),
        Code::Vital(Vital::Pulse),
        Code::Vital(Vital::Consciousness),
        Code::Vital(Vital::Temperature),
        Code::News2Score,
    ];

    pub fn id(self) -> i64 {
        match self {
            Code::Vital(Vital::RespirationRate) => 1,
            Code::Vital(Vital::Spo2) => 2,
            Code::Vital(Vital::OnOxygen) => 3,
            Code::Vital(Vital::SystolicBp) => 4,
            Code::Vital(Vital::DiastolicBp) => 5,
            Code::Vital(Vital::Pulse) => 6,
            Code::Vital(Vital::Consciousness) => 7,
            Code::Vital(Vital::Temperature) => 8,
            Code::News2Score => 9,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Code::Vital(v) => v.code(),
            Code::News2Score => "news2_score",
        }
    }

    pub fn unit(self) -> Option<&'static str> {
        match self {
            Code::Vital(v) => v.unit(),
            Code::News2Score => Some("{score}"),
        }
    }
}

/// One measured or derived value.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    pub code: Code,
    pub value: ObservedValue,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ObservedValue {
    Number(f64),
    Text(String),
}

#[derive(Debug, Clone)]
pub struct ObservationSet {
    pub observed_at: DateTime<Utc>,
    pub observations: Vec<Observation>,
    /// See [`super::versions::natural_key`].
    pub natural_key: Option<String>,
    /// The row's own time, from `updated_at`.
    pub updated_at: Option<String>,
}

/// The observation set a row carries, with its NEWS2 total when complete.
pub fn map(mapping: &Mapping, row: &Row) -> Option<ObservationSet> {
    // An observation set without its time is not a record; the schema
    // should declare the column required.
    let Value::DateTime(at) = &row.values[mapping.observed_at] else {
        return None;
    };
    let mut out = Vec::with_capacity(mapping.vitals.len() + 1);
    for &(vital, column) in &mapping.vitals {
        let value = match &row.values[column] {
            Value::Empty => continue,
            Value::Bool(b) => ObservedValue::Number(f64::from(u8::from(*b))),
            Value::Text(s) => ObservedValue::Text(s.to_string()),
            v => match v.as_number() {
                Some(n) => ObservedValue::Number(n),
                None => continue,
            },
        };
        out.push(Observation {
            code: Code::Vital(vital),
            value,
        });
    }
    if mapping.news2
        && let Some(set) = news2_set(mapping, row)
    {
        out.push(Observation {
            code: Code::News2Score,
            value: ObservedValue::Number(f64::from(news2::score(&set).total)),
        });
    }
    (!out.is_empty()).then(|| ObservationSet {
        observed_at: at.with_timezone(&Utc),
        observations: out,
        natural_key: versions::natural_key(&mapping.key_scope, &mapping.key, row),
        updated_at: mapping
            .updated_at
            .and_then(|c| super::fields::stored_text(&row.values[c]))
            .map(CompactString::into_string),
    })
}

fn news2_set(mapping: &Mapping, row: &Row) -> Option<news2::ObservationSet> {
    let value = |vital: Vital| {
        mapping
            .vitals
            .iter()
            .find(|(v, _)| *v == vital)
            .map(|(_, c)| &row.values[*c])
    };
    let number = |vital: Vital| value(vital).and_then(Value::as_number);
    Some(news2::ObservationSet {
        respiration_rate: number(Vital::RespirationRate)?,
        spo2: number(Vital::Spo2)?,
        on_oxygen: match value(Vital::OnOxygen)? {
            Value::Bool(b) => *b,
            _ => return None,
        },
        systolic_bp: number(Vital::SystolicBp)?,
        pulse: number(Vital::Pulse)?,
        consciousness: Consciousness::from_code(value(Vital::Consciousness)?.as_text()?)?,
        temperature: number(Vital::Temperature)?,
    })
}

/// Writes one file's observation sets: one row each, its values inline in
/// the column of each code (see migration 0008), and each service user's
/// list of them (migration 0021) as [`Writer::write_lists`] writes them.
pub struct Writer<'c> {
    conn: &'c Connection,
    file_id: i64,
    set: CachedStatement<'c>,
    last_time: Option<(DateTime<Utc>, String)>,
    versions: versions::Statements,
    /// The sets written and not yet listed, as (detail id, set id): kept in
    /// the order written and sorted once when listed, since looking up each
    /// service user's own list per set missed the CPU's cache every time.
    unlisted: Vec<(i64, i64)>,
}

/// Sets held for the lists before they are written, whatever the file's
/// size: at 16 bytes a set, 4 MiB. (A few in tests, so that their files
/// list a service user's sets in several parts.)
const UNLISTED_AT_MOST: usize = if cfg!(test) { 3 } else { 1 << 18 };

/// The insert of a set: who, when, where from, then one value per code in
/// the order of [`Code::ALL`] (whose ids are 1 to 9).
const INSERT_SET: &str = "INSERT INTO observation_sets (detail_id, observed_at, file_id, line,
        respiratory_rate, oxygen_saturation, supplemental_oxygen, systolic_bp, diastolic_bp,
        heart_rate, consciousness, body_temperature, news2_score, natural_key, updated_at)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)";

impl<'c> Writer<'c> {
    pub fn new(conn: &'c Connection, file_id: i64) -> Result<Writer<'c>> {
        Ok(Writer {
            conn,
            file_id,
            set: conn.prepare_cached(INSERT_SET)?,
            last_time: None,
            versions: versions::Statements::of("observation_sets"),
            unlisted: Vec::new(),
        })
    }

    /// Writes the lists of the sets written since the last call: one row
    /// per service user, in `detail_id` order. Called when a file's load
    /// ends, and whenever [`UNLISTED_AT_MOST`] sets are held.
    pub fn write_lists(&mut self) -> Result<()> {
        // Set ids ascend in the order written, so this orders each
        // service user's sets as well.
        self.unlisted.sort_unstable();
        let mut insert = self.conn.prepare_cached(
            "INSERT INTO observation_set_lists (detail_id, first_set_id, file_id, set_ids)
             VALUES (?1, ?2, ?3, ?4)",
        )?;
        let mut text = String::new();
        for list in self.unlisted.chunk_by(|a, b| a.0 == b.0) {
            let (detail_id, first) = list[0];
            text.clear();
            text.push('[');
            for (i, (_, id)) in list.iter().enumerate() {
                let comma = if i > 0 { "," } else { "" };
                let _ = write!(text, "{comma}{id}");
            }
            text.push(']');
            insert.execute(params![detail_id, first, self.file_id, text])?;
        }
        self.unlisted.clear();
        Ok(())
    }

    /// Writes a set for the service user `detail_id`; returns the
    /// observations written (the set's values, not its row).
    pub fn write(&mut self, detail_id: i64, set: &ObservationSet, line: u64) -> Result<u64> {
        // Sets of one file often share their time: it is written out once.
        let at: &str = match &mut self.last_time {
            Some((t, text)) if *t == set.observed_at => text,
            slot => {
                let text = set.observed_at.to_rfc3339_opts(SecondsFormat::Secs, true);
                &slot.insert((set.observed_at, text)).1
            }
        };
        let (file_id, line) = (self.file_id, line as i64);
        let null = rusqlite::types::Null;
        let mut all: [&dyn ToSql; 15] = [&null; 15];
        all[..4].copy_from_slice(&[&detail_id, &at, &file_id, &line]);
        for observation in &set.observations {
            all[3 + observation.code.id() as usize] = match &observation.value {
                ObservedValue::Number(n) => n,
                ObservedValue::Text(t) => t,
            };
        }
        all[13] = &set.natural_key;
        all[14] = &set.updated_at;
        self.set.execute(all)?;
        let id = self.conn.last_insert_rowid();
        self.unlisted.push((detail_id, id));
        if self.unlisted.len() == UNLISTED_AT_MOST {
            self.write_lists()?;
        }
        if let Some(key) = &set.natural_key {
            self.versions
                .version(self.conn, detail_id, key, set.updated_at.as_deref(), id)?;
        }
        Ok(set.observations.len() as u64)
    }
}

/// An observation set as an export reads it.
#[derive(Debug, Clone)]
pub struct StoredSet {
    /// This version's row.
    pub set_id: i64,
    /// The set's identity across its versions: its first version's id.
    pub record_id: i64,
    pub detail_id: i64,
    /// RFC 3339, UTC.
    pub observed_at: String,
    pub observations: Vec<Observation>,
    pub file_id: i64,
    pub line: i64,
    /// The partner and feed of the file it came from.
    pub partner: String,
    pub feed: Option<String>,
}

/// Hands each current observation set with an id in `(after, up_to]` to
/// `each`, in the order written. A set replaced by then is left out: its
/// newer version comes under the same `record_id` (and one that arrived
/// late and older is never exported).
pub fn for_each_in<E: From<crate::ledger::LedgerError>>(
    conn: &Connection,
    after: i64,
    up_to: i64,
    each: &mut dyn FnMut(&StoredSet) -> std::result::Result<(), E>,
) -> std::result::Result<(), E> {
    let read = || -> Result<_> {
        Ok(conn.prepare_cached(
            "SELECT s.id, s.detail_id, s.observed_at, s.line, s.file_id, f.partner, f.feed,
                    s.respiratory_rate, s.oxygen_saturation, s.supplemental_oxygen, s.systolic_bp,
                    s.diastolic_bp, s.heart_rate, s.consciousness, s.body_temperature,
                    s.news2_score, coalesce(s.record_id, s.id)
             FROM observation_sets s JOIN files f ON f.id = s.file_id
             WHERE s.id > ?1 AND s.id <= ?2 AND s.superseded_by IS NULL ORDER BY s.id",
        )?)
    };
    let mut stmt = read()?;
    let mut rows = stmt.query([after, up_to]).map_err(|e| E::from(e.into()))?;
    let mut set = StoredSet {
        set_id: 0,
        record_id: 0,
        detail_id: 0,
        observed_at: String::new(),
        observations: Vec::with_capacity(Code::ALL.len()),
        file_id: 0,
        line: 0,
        partner: String::new(),
        feed: None,
    };
    while let Some(row) = rows.next().map_err(|e| E::from(e.into()))? {
        let fill = |set: &mut StoredSet| -> rusqlite::Result<()> {
            set.set_id = row.get(0)?;
            set.record_id = row.get(16)?;
            set.detail_id = row.get(1)?;
            set.observed_at.clear();
            set.observed_at.push_str(row.get_ref(2)?.as_str()?);
            set.line = row.get(3)?;
            set.file_id = row.get(4)?;
            set.partner.clear();
            set.partner.push_str(row.get_ref(5)?.as_str()?);
            set.feed = row.get(6)?;
            set.observations.clear();
            for (i, code) in Code::ALL.into_iter().enumerate() {
                use rusqlite::types::ValueRef;
                let value = match row.get_ref(7 + i)? {
                    ValueRef::Integer(n) => ObservedValue::Number(n as f64),
                    ValueRef::Real(n) => ObservedValue::Number(n),
                    ValueRef::Text(t) => {
                        ObservedValue::Text(String::from_utf8_lossy(t).into_owned())
                    }
                    ValueRef::Null | ValueRef::Blob(_) => continue,
                };
                set.observations.push(Observation { code, value });
            }
            Ok(())
        };
        fill(&mut set).map_err(|e| E::from(e.into()))?;
        each(&set)?;
    }
    Ok(())
}

impl Code {
    /// LOINC code, where the measure has one.
    pub fn loinc(self) -> Option<&'static str> {
        match self {
            Code::Vital(Vital::RespirationRate) => Some("9279-1"),
            Code::Vital(Vital::Spo2) => Some("2708-6"),
            Code::Vital(Vital::SystolicBp) => Some("8480-6"),
            Code::Vital(Vital::DiastolicBp) => Some("8462-4"),
            Code::Vital(Vital::Pulse) => Some("8867-4"),
            Code::Vital(Vital::Temperature) => Some("8310-5"),
            _ => None,
        }
    }

    /// SNOMED CT concept, where the measure has one.
    pub fn snomed(self) -> Option<&'static str> {
        match self {
            Code::Vital(Vital::RespirationRate) => Some("86290005"),
            Code::Vital(Vital::Spo2) => Some("103228002"),
            Code::Vital(Vital::SystolicBp) => Some("72313002"),
            Code::Vital(Vital::DiastolicBp) => Some("1091811000000102"),
            Code::Vital(Vital::Pulse) => Some("364075005"),
            Code::Vital(Vital::Temperature) => Some("276885007"),
            Code::News2Score => Some("1104051000000101"),
            _ => None,
        }
    }

    /// A name people read.
    pub fn display(self) -> &'static str {
        match self {
            Code::Vital(Vital::RespirationRate) => "Respiratory rate",
            Code::Vital(Vital::Spo2) => "Oxygen saturation",
            Code::Vital(Vital::OnOxygen) => "Supplemental oxygen",
            Code::Vital(Vital::SystolicBp) => "Systolic blood pressure",
            Code::Vital(Vital::DiastolicBp) => "Diastolic blood pressure",
            Code::Vital(Vital::Pulse) => "Heart rate",
            Code::Vital(Vital::Consciousness) => "Level of consciousness (ACVPU)",
            Code::Vital(Vital::Temperature) => "Body temperature",
            Code::News2Score => "NEWS2 total score",
        }
    }
}
