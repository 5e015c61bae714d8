//! FHIR R4 resources for the described record kinds: staff as Practitioner
//! (and PractitionerRole), care record entries as DocumentReference, care
//! transactions as Encounter, alerts as Flag, red bags as a Composition with
//! a section per part of the pack. Ids are stable across exports
//! (`staff-N`, `entry-N`, `care-N`, `alert-N`, `redbag-N`): a record's
//! later versions keep its first version's id, so a consumer updates it.

use base64::Engine;
use serde_json::{Value, json};

use super::fhir::{ODS_SYSTEM, patient_id};
use crate::records::Kind;
use crate::records::care::StoredCare;

const ACT_CODE: &str = "http://terminology.hl7.org/CodeSystem/v3-ActCode";
const XHTML: &str = "http://www.w3.org/1999/xhtml";
pub const ALERT_SEVERITY_EXTENSION: &str = "urn:dropgate:fhir:alert-severity";

/// A record's resources, each with its type (the NDJSON file it goes in).
pub fn resources(record: &StoredCare) -> Vec<(&'static str, Value)> {
    match record.kind {
        Kind::Staff => staff(record),
        Kind::CareRecordEntry => vec![("DocumentReference", entry(record))],
        Kind::CareTransaction => vec![("Encounter", encounter(record))],
        Kind::Alert => vec![("Flag", flag(record))],
        Kind::RedBag => vec![("Composition", red_bag(record))],
        Kind::ServiceUser | Kind::Observations | Kind::Trend => Vec::new(),
    }
}

/// The identifier system of a partner's staff ids.
fn staff_system(partner: &str) -> String {
    format!("urn:dropgate:partner:{partner}:staff")
}

fn subject(record: &StoredCare) -> Value {
    json!({ "reference": format!("Patient/{}", patient_id(record.detail_id.unwrap_or_default())) })
}

fn staff(record: &StoredCare) -> Vec<(&'static str, Value)> {
    let id = format!("staff-{}", record.id);
    let mut practitioner = json!({
        "resourceType": "Practitioner",
        "id": id,
        "identifier": [{ "system": staff_system(&record.partner), "value": record.get("staff_id") }],
    });
    if let Some(name) = record.get("name") {
        practitioner["name"] = json!([{ "text": name }]);
    }
    let mut out = vec![("Practitioner", practitioner)];
    let (role, organisation) = (record.get("role"), record.get("organisation"));
    if role.is_some() || organisation.is_some() {
        let mut link = json!({
            "resourceType": "PractitionerRole",
            "id": format!("staff-role-{}", record.id),
            "practitioner": { "reference": format!("Practitioner/{id}") },
        });
        if let Some(role) = role {
            link["code"] = json!([{ "text": role }]);
        }
        if let Some(ods) = organisation {
            link["organization"] = json!({ "identifier": { "system": ODS_SYSTEM, "value": ods } });
        }
        out.push(("PractitionerRole", link));
    }
    out
}

fn entry(record: &StoredCare) -> Value {
    let text = record.get("text").unwrap_or_default();
    let mut resource = json!({
        "resourceType": "DocumentReference",
        "id": format!("entry-{}", record.record_id),
        "status": "current",
        "subject": subject(record),
        "date": record.get("recorded_at"),
        "content": [{ "attachment": {
            "contentType": "text/plain; charset=utf-8",
            "data": base64::engine::general_purpose::STANDARD.encode(text),
        } }],
    });
    if let Some(kind) = record.get("type") {
        resource["type"] = json!({ "text": kind });
    }
    if let Some(author) = record.get("author") {
        resource["author"] =
            json!([{ "identifier": { "system": staff_system(&record.partner), "value": author } }]);
    }
    resource
}

/// The HL7 v3 encounter class of a care transaction type.
fn encounter_class(kind: &str) -> (&'static str, &'static str) {
    match kind {
        "admission" | "discharge" | "transfer" => ("IMP", "inpatient encounter"),
        "visit" => ("HH", "home health"),
        _ => ("AMB", "ambulatory"),
    }
}

fn period(record: &StoredCare) -> Option<Value> {
    let mut period = serde_json::Map::new();
    if let Some(start) = record.get("start") {
        period.insert("start".into(), json!(start));
    }
    if let Some(end) = record.get("end") {
        period.insert("end".into(), json!(end));
    }
    (!period.is_empty()).then_some(Value::Object(period))
}

fn encounter(record: &StoredCare) -> Value {
    let kind = record.get("type").unwrap_or_default();
    let (class, display) = encounter_class(kind);
    let mut resource = json!({
        "resourceType": "Encounter",
        "id": format!("care-{}", record.record_id),
        "status": if record.get("end").is_some() { "finished" } else { "in-progress" },
        "class": { "system": ACT_CODE, "code": class, "display": display },
        "type": [{ "text": kind }],
        "subject": subject(record),
    });
    if let Some(period) = period(record) {
        resource["period"] = period;
    }
    if let Some(provider) = record.get("provider") {
        resource["serviceProvider"] = json!({ "display": provider });
    }
    resource
}

fn flag(record: &StoredCare) -> Value {
    let kind = record.get("type").unwrap_or_default();
    let mut resource = json!({
        "resourceType": "Flag",
        "id": format!("alert-{}", record.record_id),
        // Whether an end date has passed is the reader's to judge, on its own clock.
        "status": "active",
        "category": [{ "text": kind }],
        "code": { "text": record.get("description").unwrap_or(kind) },
        "subject": subject(record),
    });
    if let Some(period) = period(record) {
        resource["period"] = period;
    }
    if let Some(severity) = record.get("severity") {
        resource["extension"] = json!([{ "url": ALERT_SEVERITY_EXTENSION, "valueCode": severity }]);
    }
    resource
}

/// Text as the XHTML a FHIR narrative holds.
fn narrative(text: &str) -> Value {
    json!({
        "status": "generated",
        "div": format!("<div xmlns=\"{XHTML}\">{}</div>", quick_xml::escape::escape(text)),
    })
}

fn red_bag(record: &StoredCare) -> Value {
    let resuscitation = record.get("resuscitation").map(|code| match code {
        "dnacpr" => "A DNACPR decision is in place.",
        "for_cpr" => "For cardiopulmonary resuscitation.",
        _ => "Not known.",
    });
    let parts = [
        ("Reason for transfer", record.get("reason")),
        ("Medications", record.get("medications")),
        ("Allergies", record.get("allergies")),
        ("Resuscitation status", resuscitation),
        ("Communication needs", record.get("communication_needs")),
        ("Belongings", record.get("belongings")),
        ("Contacts", record.get("contacts")),
    ];
    let sections: Vec<Value> = parts
        .into_iter()
        .filter_map(|(title, text)| Some(json!({ "title": title, "text": narrative(text?) })))
        .collect();
    let mut resource = json!({
        "resourceType": "Composition",
        "id": format!("redbag-{}", record.record_id),
        "status": "final",
        "type": { "text": "Hospital transfer summary (red bag)" },
        "subject": subject(record),
        "date": record.get("transferred_at"),
        "author": [{ "display": record.partner }],
        "title": "Red bag transfer summary",
    });
    if !sections.is_empty() {
        resource["section"] = Value::Array(sections);
    }
    resource
}
