//! Map: checked rows become typed records of the care record model.

use chrono::Utc;

use crate::domain::news2::{self, Consciousness};
use crate::model::{Code, Observation, ObservationSet, ObservedValue, Records, ServiceUser, Vital};
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
