//! The care record model: the typed records rows become, as the ledger
//! stores them. Below every stage, so the ledger and the stages share it
//! without importing each other.

use chrono::{DateTime, Utc};

use crate::domain::nhs_number::NhsNumber;

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
