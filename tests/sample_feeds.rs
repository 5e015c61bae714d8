//! Sample feeds under `tests/fixtures/`, of the kinds care systems send and
//! written from their public descriptions: each valid file passes, and each
//! broken one fails with every rule it breaks, at its line.

use std::fs;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::harness::*;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// The shipped configuration with the four sample feeds added.
fn deployment() -> Deployment {
    let d = Deployment::new();
    for file in ["clt_gender.csv", "clt_event_types.csv"] {
        fs::copy(fixture(file), d.path(&format!("config/{file}"))).unwrap();
    }
    let feeds = fs::read_to_string(fixture("feeds.toml")).unwrap();
    // The hospital is granted, and its nightly export holds, every kind.
    let every_kind = r#"records = ["service_user", "observations", "staff", "care_record_entry", "care_transaction", "alert", "red_bag", "trend"]"#;
    let shipped =
        fast(SHIPPED_CONFIG).replace(r#"records = ["service_user", "observations"]"#, every_kind);
    d.write_config(&format!("{shipped}\n{feeds}"));
    let check = d.dg(&["check-config"]);
    assert!(check.status.success(), "{}", text(&check.stderr));
    d
}

/// `schema check` of one sample: its exit code, and each problem as
/// (line, code).
fn check(d: &Deployment, feed: &str, sample: &str) -> (Option<i32>, Vec<(u64, String)>) {
    let path = fixture(sample);
    let out = d.dg(&["schema", "check", feed, path.to_str().unwrap(), "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}{}", text(&out.stdout), text(&out.stderr)));
    let problems = report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["line"].as_u64().unwrap(),
                p["code"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    (out.status.code(), problems)
}

fn pairs(expected: &[(u64, &str)]) -> Vec<(u64, String)> {
    expected.iter().map(|(l, c)| (*l, c.to_string())).collect()
}

#[test]
fn a_social_care_client_level_return_with_conditional_fields() {
    let d = deployment();
    assert_eq!(check(&d, "clt", "clt_valid.csv"), (Some(0), Vec::new()));
    let (code, mut problems) = check(&d, "clt", "clt_broken.csv");
    problems.sort();
    assert_eq!(code, Some(1));
    assert_eq!(
        problems,
        pairs(&[
            (3, "required_when"),
            (4, "required_when"),
            (5, "forbidden_when"),
            (6, "comparison"),
            (7, "not_unique"),
            (8, "nhs_number_check_digit"),
            (8, "not_in_code_list"),
            (8, "not_postcode"),
            (8, "too_many_decimals"),
            (9, "age_out_of_range"),
        ])
    );
}

#[test]
fn a_demographic_trace_response_with_compact_dates() {
    let d = deployment();
    assert_eq!(check(&d, "trace", "trace_valid.csv"), (Some(0), Vec::new()));
    let (code, mut problems) = check(&d, "trace", "trace_broken.csv");
    problems.sort();
    assert_eq!(code, Some(1));
    assert_eq!(
        problems,
        pairs(&[
            (2, "not_date"),
            (3, "not_ods_code"),
            (4, "pattern"),
            (4, "required"),
        ])
    );
}

#[test]
fn a_pharmacy_extract_framed_by_header_and_trailer_records() {
    let d = deployment();
    assert_eq!(check(&d, "rx", "rx_valid.txt"), (Some(0), Vec::new()));
    assert_eq!(
        check(&d, "rx", "rx_broken.txt"),
        (Some(1), pairs(&[(3, "trailer_count")]))
    );
}

#[test]
fn a_red_bag_summary_in_xml_with_a_namespace() {
    let d = deployment();
    assert_eq!(
        check(&d, "redbag", "redbag_valid.xml"),
        (Some(0), Vec::new())
    );
    // A default namespace is the same namespace: the records are found.
    assert_eq!(
        check(&d, "redbag", "redbag_broken.xml"),
        (
            Some(1),
            pairs(&[
                (4, "nhs_number_check_digit"),
                (4, "not_date"),
                (8, "required"),
                (8, "not_in_code_list"),
            ])
        )
    );
    // A DTD is refused before anything in it is looked at.
    assert_eq!(
        check(&d, "redbag", "redbag_dtd.xml"),
        (Some(1), pairs(&[(2, "xml_dtd")]))
    );
    // Loaded end to end: the service users it names are in the ledger.
    let out = d.ingest(&[&fixture("redbag_valid.xml")]);
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert_eq!(d.count("SELECT count(*) FROM service_users"), 2);
    assert_eq!(
        d.string("SELECT family_name FROM service_users WHERE local_id = 'R0001'"),
        "O'Neill"
    );
    // The resident with a <Transfer> has a red bag, its code translated, and
    // an allergy alert; the one without has neither.
    assert_eq!(
        d.string(
            "SELECT r.transferred_at || '|' || r.resuscitation || '|' || r.line || '|' || u.local_id
             FROM red_bags r JOIN service_users u USING (detail_id)"
        ),
        "2026-12-03T07:45:00Z|dnacpr|5|R0001"
    );
    assert_eq!(
        d.string(
            "SELECT a.alert_type || '|' || a.severity || '|' || a.description || '|' || u.local_id
             FROM alerts a JOIN service_users u USING (detail_id)"
        ),
        "allergy|high|Penicillin|R0001"
    );
}

#[test]
fn a_client_level_return_gives_a_person_and_a_care_transaction_a_row() {
    let d = deployment();
    let out = d.ingest(&[&fixture("clt_valid.csv")]);
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let rows = d.count("SELECT count(*) FROM files WHERE rows_loaded > 0");
    assert_eq!(rows, 1);
    // A code the translation names is translated, the others kept as they are.
    assert_eq!(
        d.strings("SELECT local_id || ' ' || gender FROM service_users ORDER BY local_id"),
        ["C0001 2", "C0002 0"]
    );
    // Translated from the file next to the config; the provider a fixed value.
    let events: Vec<String> = d.strings(
        "SELECT u.local_id || ' ' || t.transaction_type || ' ' || t.start_at || ' '
                || coalesce(t.end_at, '-') || ' ' || t.provider || ' ' || t.line
         FROM care_transactions t JOIN service_users u USING (detail_id) ORDER BY t.id",
    );
    assert_eq!(
        events[..4],
        [
            "C0001 referral 2026-01-02 2026-01-02 Adult Social Care 2",
            "C0001 assessment 2026-01-05 2026-01-06 Adult Social Care 3",
            "C0001 service_event 2026-01-10 - Adult Social Care 4",
            "C0002 review 2026-01-03 2026-01-03 Adult Social Care 5",
        ]
    );
    // `patients show` lists them with the file and line each came from.
    let detail = d.count("SELECT detail_id FROM service_users WHERE local_id = 'C0001'");
    let out = d.dg(&["patients", "show", &detail.to_string(), "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let care = shown["care_records"].as_array().unwrap();
    assert_eq!(care.len(), 3);
    assert_eq!(care[1]["kind"], "care_transaction");
    assert_eq!(care[1]["fields"]["type"], "assessment");
    assert_eq!(care[1]["line"], 3);
    let out = d.dg(&["patients", "show", &detail.to_string()]);
    assert!(
        text(&out.stdout).contains("care_transaction:\n"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn every_kind_is_exported_as_csv_and_as_fhir_that_fhir_resources_accepts() {
    let d = deployment();
    for sample in ["clt_valid.csv", "redbag_valid.xml", "notes_valid.csv"] {
        let out = d.ingest(&[&fixture(sample)]);
        assert!(
            out.status.success(),
            "{}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
    }
    let out = d.dg(&["export", "demo-nightly", "--json"]);
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let made: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let folder = PathBuf::from(made["folder"].as_str().unwrap());
    let transactions = d.count("SELECT count(*) FROM care_transactions");
    let csv = fs::read_to_string(folder.join("care_transaction.csv")).unwrap();
    let mut lines = csv.lines();
    assert_eq!(
        lines.next(),
        Some("id,detail_id,partner,type,start,end,provider,file_id,line")
    );
    assert_eq!(lines.count() as i64, transactions);
    // The trend counts each kind, by week, partner and feed (small numbers withheld).
    let trend = fs::read_to_string(folder.join("trend.csv")).unwrap();
    for measure in [
        ",clt,records:care_transaction,",
        ",redbag,records:red_bag,",
        ",notes,records:staff,",
    ] {
        assert!(trend.contains(measure), "{measure} in {trend}");
    }
    let red_bag = fs::read_to_string(folder.join("red_bag.csv")).unwrap();
    assert!(red_bag.contains(",dnacpr,"), "{red_bag}");
    let script = r#"
import json, sys
from fhir.resources.R4B.encounter import Encounter
from fhir.resources.R4B.flag import Flag
from fhir.resources.R4B.composition import Composition
from fhir.resources.R4B.patient import Patient
from fhir.resources.R4B.documentreference import DocumentReference
from fhir.resources.R4B.practitioner import Practitioner
from fhir.resources.R4B.practitionerrole import PractitionerRole
folder = sys.argv[1]
counts = {}
models = (("Encounter", Encounter), ("Flag", Flag), ("Composition", Composition), ("Patient", Patient),
          ("DocumentReference", DocumentReference), ("Practitioner", Practitioner),
          ("PractitionerRole", PractitionerRole))
for name, model in models:
    with open(f"{folder}/{name}.ndjson") as f:
        for line in f:
            resource = model.model_validate(json.loads(line))
            counts[name] = counts.get(name, 0) + 1
            if name == "Composition":
                counts["sections"] = len(resource.section)
            if name == "DocumentReference" and resource.author[0].identifier.value == "S18":
                counts["note"] = resource.content[0].attachment.data.decode()
            if name == "Practitioner" and resource.identifier[0].value == "S18":
                counts["name"] = resource.name[0].text
print(json.dumps(counts))
"#;
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(&folder)
        .stdin(Stdio::null())
        .output()
        .expect("python3 with fhir.resources (scripts/test installs it)");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let counts: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let patients = d.count("SELECT count(*) FROM service_users");
    // Reason, medications, allergies, resuscitation and contacts: five sections.
    assert_eq!(
        counts,
        serde_json::json!({
            "Encounter": transactions, "Flag": 1, "Composition": 1, "sections": 5, "Patient": patients,
            "DocumentReference": 3, "Practitioner": 2, "PractitionerRole": 2,
            "note": "Family visit planned for Friday.", "name": "Okafor",
        })
    );
    // Staff are one each, however many notes name them; the role translated
    // or the default, the name joined from what is there.
    assert_eq!(
        d.strings("SELECT staff_id || '|' || name || '|' || role FROM staff ORDER BY staff_id"),
        ["S17|Amy Lee|Registered nurse", "S18|Okafor|Staff"]
    );
}
