//! FHIR R4 NDJSON output in the Bulk Data style: `Patient.ndjson`,
//! `Observation.ndjson` and a file for each other resource type the
//! records make (`fhir_care`), one resource per line. Ids are stable across
//! exports (`detail-N` for a service user's detail, `obs-SET-CODE` for an
//! observation), so a consumer can update what it already holds.

use std::io::{self, Write};

use serde_json::{Value, json};

use super::{CountedFile, OutputFile, Target};
use crate::ledger::DetailRecord;
use crate::records::Exported;
use crate::records::observations::{Code, ObservedValue, StoredSet, Vital};

pub const NHS_NUMBER_SYSTEM: &str = "https://fhir.nhs.uk/Id/nhs-number";
pub const ODS_SYSTEM: &str = "https://fhir.nhs.uk/Id/ods-organization-code";
const LOINC: &str = "http://loinc.org";
const SNOMED: &str = "http://snomed.info/sct";
const UCUM: &str = "http://unitsofmeasure.org";
const CATEGORY: &str = "http://terminology.hl7.org/CodeSystem/observation-category";

pub struct Output {
    target: Target,
    patients: Option<CountedFile>,
    observations: Option<CountedFile>,
    /// The other resource types, by name.
    others: std::collections::BTreeMap<&'static str, CountedFile>,
    /// By code id - 1.
    fragments: Vec<CodeFragments>,
}

impl Output {
    pub fn new(target: &Target) -> Output {
        Output {
            target: target.clone(),
            patients: None,
            observations: None,
            others: Default::default(),
            fragments: Code::ALL.into_iter().map(CodeFragments::new).collect(),
        }
    }
}

fn opened<'f>(
    slot: &'f mut Option<CountedFile>,
    target: &Target,
    resource: &str,
) -> io::Result<&'f mut CountedFile> {
    if slot.is_none() {
        *slot = Some(CountedFile::create(
            target,
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

/// The FHIR id of a service user's detail (written inline as `detail-N` in
/// each Observation's subject too).
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

fn patient(u: &DetailRecord) -> Value {
    let mut identifier = Vec::new();
    if let Some(nhs) = &u.nhs_number {
        identifier.push(json!({ "system": NHS_NUMBER_SYSTEM, "value": nhs }));
    }
    identifier.push(json!({
        "system": format!("urn:dropgate:partner:{}", u.source),
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

/// The parts of an Observation that depend only on its code (category, code,
/// unit), serialised once: an export writes millions of observations, and
/// building each as a JSON tree would cost more than reading it.
struct CodeFragments {
    /// From `"category"` to the comma after `"code"`'s value.
    head: String,
    /// `"unit":...,"system":...,"code":...` inside a `valueQuantity`, when the code has a unit.
    unit: Option<String>,
}

impl CodeFragments {
    fn new(code: Code) -> CodeFragments {
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
        let mut concept = json!({ "text": code.display() });
        // FHIR allows no empty arrays: a measure without a standard code has text only.
        if !coding.is_empty() {
            concept["coding"] = Value::Array(coding);
        }
        let category = json!([{ "coding": [{ "system": CATEGORY, "code": category.0, "display": category.1 }] }]);
        CodeFragments {
            head: format!(",\"category\":{category},\"code\":{concept},"),
            unit: code.unit().map(|unit| {
                format!(
                    ",\"unit\":{},\"system\":\"{UCUM}\",\"code\":{}",
                    json!(unit),
                    json!(unit)
                )
            }),
        }
    }
}

/// Writes one Observation as a line of NDJSON; the NEWS2 total links
/// `members`, the set's other observations.
fn write_observation(
    out: &mut impl Write,
    fragments: &CodeFragments,
    set: &StoredSet,
    code: Code,
    value: &ObservedValue,
    members: &[Code],
) -> io::Result<()> {
    write!(
        out,
        "{{\"resourceType\":\"Observation\",\"id\":\"obs-{}-{}\",\"status\":\"final\"{}\"subject\":{{\"reference\":\"Patient/detail-{}\"}},\"effectiveDateTime\":",
        set.record_id,
        code.id(),
        fragments.head,
        set.detail_id
    )?;
    serde_json::to_writer(&mut *out, &set.observed_at)?;
    match (code, value) {
        (Code::Vital(Vital::OnOxygen), ObservedValue::Number(n)) => {
            write!(out, ",\"valueBoolean\":{}", *n != 0.0)?;
        }
        (_, ObservedValue::Number(n)) => {
            out.write_all(b",\"valueQuantity\":{\"value\":")?;
            serde_json::to_writer(&mut *out, n)?;
            if let Some(unit) = &fragments.unit {
                out.write_all(unit.as_bytes())?;
            }
            out.write_all(b"}")?;
        }
        (_, ObservedValue::Text(t)) => {
            out.write_all(b",\"valueString\":")?;
            serde_json::to_writer(&mut *out, t)?;
        }
    }
    if !members.is_empty() {
        out.write_all(b",\"hasMember\":[")?;
        for (i, member) in members.iter().enumerate() {
            if i > 0 {
                out.write_all(b",")?;
            }
            write!(
                out,
                "{{\"reference\":\"Observation/obs-{}-{}\"}}",
                set.record_id,
                member.id()
            )?;
        }
        out.write_all(b"]")?;
    }
    out.write_all(b"}\n")
}

impl super::Output for Output {
    fn write(&mut self, record: &Exported<'_>) -> io::Result<()> {
        match record {
            Exported::ServiceUser(u) => {
                let file = opened(&mut self.patients, &self.target, "Patient")?;
                line(file.next(), &patient(&u.detail))
            }
            Exported::ObservationSet(set) => {
                let file = opened(&mut self.observations, &self.target, "Observation")?;
                let mut members = Vec::with_capacity(set.observations.len());
                for o in &set.observations {
                    let fragments = &self.fragments[(o.code.id() - 1) as usize];
                    // The total links to the measurements it was scored from.
                    let linked: &[Code] = if o.code == Code::News2Score {
                        &members
                    } else {
                        &[]
                    };
                    write_observation(file.next(), fragments, set, o.code, &o.value, linked)?;
                    members.push(o.code);
                }
                Ok(())
            }
            Exported::Care(record) => {
                for (resource, value) in super::fhir_care::resources(record) {
                    if !self.others.contains_key(resource) {
                        let mut slot = None;
                        opened(&mut slot, &self.target, resource)?;
                        self.others.insert(resource, slot.expect("opened"));
                    }
                    let file = self.others.get_mut(resource).expect("opened above");
                    line(file.next(), &value)?;
                }
                Ok(())
            }
            // Counts, not resources: the CSV output writes them.
            Exported::Trend(_) => Ok(()),
        }
    }

    fn finish(self: Box<Self>) -> io::Result<Vec<OutputFile>> {
        let this = *self;
        [this.patients, this.observations]
            .into_iter()
            .flatten()
            .chain(this.others.into_values())
            .map(CountedFile::finish)
            .collect()
    }
}
