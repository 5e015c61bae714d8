//! FHIR R4 NDJSON output in the Bulk Data style: `Patient.ndjson` and
//! `Observation.ndjson`, one resource per line. Ids are stable across
//! exports (`detail-N` for a service user's detail, `obs-SET-CODE` for an
//! observation), so a consumer can update what it already holds.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use super::{CountedFile, OutputFile};
use crate::records::Exported;
use crate::records::observations::{Code, ObservedValue, StoredSet, Vital};
use crate::records::service_user::StoredUser;

pub const NHS_NUMBER_SYSTEM: &str = "https://fhir.nhs.uk/Id/nhs-number";
const LOINC: &str = "http://loinc.org";
const SNOMED: &str = "http://snomed.info/sct";
const UCUM: &str = "http://unitsofmeasure.org";
const CATEGORY: &str = "http://terminology.hl7.org/CodeSystem/observation-category";

pub struct Output {
    folder: PathBuf,
    patients: Option<CountedFile>,
    observations: Option<CountedFile>,
}

impl Output {
    pub fn new(folder: &Path) -> Output {
        Output {
            folder: folder.to_path_buf(),
            patients: None,
            observations: None,
        }
    }
}

fn opened<'f>(
    slot: &'f mut Option<CountedFile>,
    folder: &Path,
    resource: &str,
) -> io::Result<&'f mut CountedFile> {
    if slot.is_none() {
        *slot = Some(CountedFile::create(
            folder,
            &format!("{resource}.ndjson"),
            resource,
        )?);
    }
    Ok(slot.as_mut().expect("opened above"))
}

fn line(out: &mut impl Write, resource: &Value) -> io::Result<()> {
    serde_json::to_writer(&mut *out, resource)?;
    out.write_all(b"\n")
}

/// The FHIR id of a service user's detail.
pub fn patient_id(detail_id: i64) -> String {
    format!("detail-{detail_id}")
}

/// NHS Data Dictionary person gender codes (and their letters) as FHIR's.
fn gender(code: &str) -> Option<&'static str> {
    match code.trim().to_ascii_lowercase().as_str() {
        "1" | "m" | "male" => Some("male"),
        "2" | "f" | "female" => Some("female"),
        "x" | "i" | "other" => Some("other"),
        "0" | "9" | "u" | "unknown" => Some("unknown"),
        _ => None,
    }
}

fn patient(u: &StoredUser) -> Value {
    let mut identifier = Vec::new();
    if let Some(nhs) = &u.nhs_number {
        identifier.push(json!({ "system": NHS_NUMBER_SYSTEM, "value": nhs }));
    }
    identifier.push(json!({
        "system": format!("urn:dropgate:partner:{}", u.partner),
        "value": u.local_id,
    }));
    let mut resource = json!({
        "resourceType": "Patient",
        "id": patient_id(u.detail_id),
        "identifier": identifier,
    });
    let name = match (&u.family_name, &u.given_name) {
        (None, None) => None,
        (family, given) => {
            let mut name = serde_json::Map::new();
            if let Some(f) = family {
                name.insert("family".into(), json!(f));
            }
            if let Some(g) = given {
                name.insert(
                    "given".into(),
                    json!(g.split_whitespace().collect::<Vec<_>>()),
                );
            }
            Some(Value::Object(name))
        }
    };
    if let Some(name) = name {
        resource["name"] = json!([name]);
    }
    if let Some(g) = u.gender.as_deref().and_then(gender) {
        resource["gender"] = json!(g);
    }
    if let Some(dob) = &u.date_of_birth {
        resource["birthDate"] = json!(dob);
    }
    if let Some(postcode) = &u.postcode {
        resource["address"] = json!([{ "postalCode": postcode }]);
    }
    resource
}

fn observation_id(set_id: i64, code: Code) -> String {
    format!("obs-{set_id}-{}", code.id())
}

fn observation(set: &StoredSet, code: Code, value: &ObservedValue) -> Value {
    let mut coding = Vec::new();
    if let Some(loinc) = code.loinc() {
        coding.push(json!({ "system": LOINC, "code": loinc, "display": code.display() }));
    }
    if let Some(snomed) = code.snomed() {
        coding.push(json!({ "system": SNOMED, "code": snomed, "display": code.display() }));
    }
    let category = match code {
        Code::News2Score => ("survey", "Survey"),
        Code::Vital(_) => ("vital-signs", "Vital Signs"),
    };
    let mut resource = json!({
        "resourceType": "Observation",
        "id": observation_id(set.set_id, code),
        "status": "final",
        "category": [{ "coding": [{ "system": CATEGORY, "code": category.0, "display": category.1 }] }],
        "code": { "text": code.display() },
        "subject": { "reference": format!("Patient/{}", patient_id(set.detail_id)) },
        "effectiveDateTime": set.observed_at,
    });
    // FHIR allows no empty arrays: a measure without a standard code has text only.
    if !coding.is_empty() {
        resource["code"]["coding"] = Value::Array(coding);
    }
    match (code, value) {
        (Code::Vital(Vital::OnOxygen), ObservedValue::Number(n)) => {
            resource["valueBoolean"] = json!(*n != 0.0);
        }
        (_, ObservedValue::Number(n)) => {
            let mut quantity = json!({ "value": n });
            if let Some(unit) = code.unit() {
                quantity["unit"] = json!(unit);
                quantity["system"] = json!(UCUM);
                quantity["code"] = json!(unit);
            }
            resource["valueQuantity"] = quantity;
        }
        (_, ObservedValue::Text(t)) => resource["valueString"] = json!(t),
    }
    resource
}

impl super::Output for Output {
    fn write(&mut self, record: &Exported<'_>) -> io::Result<()> {
        match record {
            Exported::ServiceUser(u) => {
                let file = opened(&mut self.patients, &self.folder, "Patient")?;
                line(file.next(), &patient(u))
            }
            Exported::ObservationSet(set) => {
                let file = opened(&mut self.observations, &self.folder, "Observation")?;
                let mut members = Vec::new();
                for o in &set.observations {
                    let mut resource = observation(set, o.code, &o.value);
                    if o.code == Code::News2Score {
                        // The total links to the measurements it was scored from.
                        resource["hasMember"] = Value::Array(std::mem::take(&mut members));
                    } else {
                        members.push(json!({
                            "reference": format!("Observation/{}", observation_id(set.set_id, o.code))
                        }));
                    }
                    line(file.next(), &resource)?;
                }
                Ok(())
            }
        }
    }

    fn finish(self: Box<Self>) -> io::Result<Vec<OutputFile>> {
        let this = *self;
        [this.patients, this.observations]
            .into_iter()
            .flatten()
            .map(CountedFile::finish)
            .collect()
    }
}
