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
    fs::copy(fixture("clt_gender.csv"), d.path("config/clt_gender.csv")).unwrap();
    let feeds = fs::read_to_string(fixture("feeds.toml")).unwrap();
    d.write_config(&format!("{}\n{feeds}", fast(SHIPPED_CONFIG)));
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
}
