//! Sample feeds under `tests/fixtures/`, of the kinds care systems send and
//! written from their public descriptions: each valid file passes, and each
//! broken one fails with every rule it breaks, at its line.

use std::fs;
use std::path::PathBuf;

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
        (Some(1), pairs(&[(2, "comparison"), (3, "trailer_count")]))
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
        Some("id,record_id,detail_id,partner,type,start,end,provider,file_id,line")
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
    let counts = fhir_resources_check(script, &folder);
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
        d.strings(
            "SELECT staff_id || '|' || name || '|' || role || '|' || organisation
             FROM staff ORDER BY staff_id"
        ),
        [
            "S17|Amy Lee|Registered nurse|VM1AB",
            "S18|Okafor|Staff|VM1AB"
        ]
    );
}

/// Each line of an export's NDJSON file, parsed.
fn resources(folder: &std::path::Path, name: &str) -> Vec<serde_json::Value> {
    fs::read_to_string(folder.join(name))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn a_record_sent_again_is_a_new_version_and_the_later_by_its_own_time_is_current() {
    let d = deployment();
    // The newer versions come first, the older after them.
    for sample in ["alerts_2.csv", "alerts_1.csv"] {
        let out = d.ingest(&[&fixture(sample)]);
        assert!(
            out.status.success(),
            "{}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
    }
    assert_eq!(
        d.count("SELECT count(*) FROM alerts"),
        5,
        "every version is kept"
    );
    assert_eq!(
        d.strings(
            "SELECT replace(natural_key, 'alerts' || char(31), '') || ' ' || severity || ' '
                    || description
             FROM alerts WHERE superseded_by IS NULL ORDER BY natural_key"
        ),
        [
            "A-1 high Penicillin: anaphylaxis",
            "A-2 medium Uses a frame; two falls in November",
            "A-3 high Visitor restrictions",
        ]
    );
    assert_eq!(
        d.count("SELECT count(DISTINCT coalesce(record_id, id)) FROM alerts"),
        3
    );
    // `patients show` lists every version with its file and line, the replaced marked.
    let detail = d.count("SELECT detail_id FROM service_users WHERE local_id = 'R0001'");
    let out = d.dg(&["patients", "show", &detail.to_string(), "--json"]);
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let versions: Vec<(String, bool, u64)> = shown["care_records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["fields"]["description"].as_str().unwrap().to_string(),
                r["superseded_by"].is_null(),
                r["line"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        versions,
        [
            ("Penicillin: anaphylaxis".to_string(), true, 2),
            ("Uses a frame; two falls in November".to_string(), true, 3),
            ("Penicillin".to_string(), false, 2),
            ("Uses a frame".to_string(), false, 3),
        ]
    );

    // An export holds each record once, as its current version, under the
    // first version's id; a later version is exported under the same id.
    let export = || {
        let out = d.dg(&["export", "demo-nightly", "--json"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let made: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        PathBuf::from(made["folder"].as_str().unwrap())
    };
    let flags = resources(&export(), "Flag.ndjson");
    let described: Vec<(&str, &str)> = flags
        .iter()
        .map(|f| {
            (
                f["id"].as_str().unwrap(),
                f["code"]["text"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(described.len(), 3, "{described:?}");
    let falls_id = described
        .iter()
        .find(|(_, text)| text.starts_with("Uses a frame"))
        .unwrap()
        .0
        .to_string();
    let out = d.ingest(&[&fixture("alerts_3.csv")]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let flags = resources(&export(), "Flag.ndjson");
    assert_eq!(flags.len(), 1);
    assert_eq!(flags[0]["id"], falls_id.as_str());
    assert_eq!(
        flags[0]["code"]["text"],
        "Uses a frame; steady since December"
    );
}
