//! Map: checked rows become typed records of the care record model.

use chrono::{DateTime, Utc};

use crate::domain::news2::{self, Consciousness};
use crate::domain::nhs_number::NhsNumber;
use crate::validate::{Row, Value};

/// Which columns fill which record fields (column indexes into the schema).
#[derive(Debug, Default)]
pub struct Mapping {
    pub service_user: Option<ServiceUserMapping>,
    pub observations: Option<ObservationMapping>,
}

#[derive(Debug)]
pub struct ServiceUserMapping {
    pub local_id: usize,
    pub nhs_number: Option<usize>,
    pub family_name: Option<usize>,
    pub given_name: Option<usize>,
    pub date_of_birth: Option<usize>,
    pub gender: Option<usize>,
    pub postcode: Option<usize>,
}

#[derive(Debug)]
pub struct ObservationMapping {
    pub observed_at: usize,
    pub vitals: Vec<(Vital, usize)>,
    /// Derive a NEWS2 total when every parameter is present.
    pub news2: bool,
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

/// A person as one source system describes them.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceUser {
    pub local_id: String,
    pub nhs_number: Option<NhsNumber>,
    pub family_name: Option<String>,
    pub given_name: Option<String>,
    pub date_of_birth: Option<chrono::NaiveDate>,
    pub gender: Option<String>,
    pub postcode: Option<String>,
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

/// The records one row yields, with the line they came from.
#[derive(Debug, Clone)]
pub struct Records {
    pub line: u64,
    pub service_user: Option<ServiceUser>,
    /// Observations taken together at one time.
    pub observations: Option<ObservationSet>,
}

#[derive(Debug, Clone)]
pub struct ObservationSet {
    pub observed_at: DateTime<Utc>,
    pub observations: Vec<Observation>,
}

/// Moves a text value out of the row (a column is mapped at most once).
fn take_text(row: &mut Row, column: Option<usize>) -> Option<String> {
    match column.map(|c| std::mem::replace(&mut row.values[c], Value::Empty)) {
        Some(Value::Text(s)) => Some(s),
        _ => None,
    }
}

/// Turns one checked row into records.
pub fn map_row(mapping: &Mapping, mut row: Row) -> Records {
    let observations = mapping
        .observations
        .as_ref()
        .and_then(|m| observations(m, &row));
    let service_user = mapping.service_user.as_ref().map(|m| ServiceUser {
        nhs_number: match m.nhs_number.map(|c| &row.values[c]) {
            Some(Value::Nhs(n)) => Some(*n),
            _ => None,
        },
        date_of_birth: match m.date_of_birth.map(|c| &row.values[c]) {
            Some(Value::Date(d)) => Some(*d),
            _ => None,
        },
        local_id: take_text(&mut row, Some(m.local_id)).unwrap_or_default(),
        family_name: take_text(&mut row, m.family_name),
        given_name: take_text(&mut row, m.given_name),
        gender: take_text(&mut row, m.gender),
        postcode: take_text(&mut row, m.postcode),
    });
    Records {
        line: row.line,
        service_user,
        observations,
    }
}

fn observations(mapping: &ObservationMapping, row: &Row) -> Option<ObservationSet> {
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
            Value::Text(s) => ObservedValue::Text(s.clone()),
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
    })
}

fn news2_set(mapping: &ObservationMapping, row: &Row) -> Option<news2::ObservationSet> {
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
