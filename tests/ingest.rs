//! `dropgate ingest`: the whole pipeline once, on files made by the real `age` CLI.

use std::fs;

use crate::harness::*;

/// Loads a file and returns its ledger JSON.
fn ingest_one(d: &Deployment, path: &std::path::Path) -> (std::process::Output, serde_json::Value) {
    let out = d.ingest(&[path]);
    let files = d.files();
    (out, files.last().cloned().expect("a file row"))
}

#[test]
fn age_cli_encrypted_file_is_loaded_with_its_records() {
    let d = Deployment::new();
    let plain = d.write_input("news2_a.csv", news2_csv(30, 5, 0).as_bytes());
    let encrypted = d.encrypt(&plain, false);
    let (out, file) = ingest_one(&d, &encrypted);
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).contains("loaded"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(file["state"], "loaded");
    assert_eq!(file["feed"], "news2");
    assert_eq!(file["name"], "news2_a.csv.age");
    // 5 residents + 30 sets × (7 vitals + NEWS2).
    assert_eq!(file["records"], 5 + 30 * 8);
    assert_eq!(
        d.count("SELECT count(*) FROM observation_records WHERE code = 'news2_score'"),
        30
    );
    for key in [
        "id",
        "feed",
        "source",
        "name",
        "sha256",
        "size",
        "state",
        "records",
        "received_at",
        "reason",
    ] {
        assert!(file.get(key).is_some(), "files --json lacks {key}: {file}");
    }
    let sha = file["sha256"].as_str().unwrap();
    let expected = sha256_of(&encrypted);
    assert_eq!(sha, expected);
    // The given file stays where it was: ingest never removes its inputs.
    assert!(encrypted.exists());
}

fn sha256_of(path: &std::path::Path) -> String {
    let out = std::process::Command::new("sha256sum")
        .arg(path)
        .output()
        .unwrap();
    text(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn armoured_age_files_are_accepted() {
    let d = Deployment::new();
    let plain = d.write_input("news2_armor.csv", news2_csv(3, 3, 1).as_bytes());
    let encrypted = d.encrypt(&plain, true);
    assert!(
        fs::read_to_string(&encrypted)
            .unwrap()
            .starts_with("-----BEGIN AGE ENCRYPTED FILE-----")
    );
    let (out, file) = ingest_one(&d, &encrypted);
    assert!(out.status.success(), "{}", text(&out.stdout));
    assert_eq!(file["state"], "loaded");
}

#[test]
fn files_encrypted_with_the_age_crate_are_accepted() {
    let d = Deployment::new();
    let recipient: age::x25519::Recipient = d.recipient.parse().unwrap();
    let encryptor =
        age::Encryptor::with_recipients(std::iter::once(&recipient as &dyn age::Recipient))
            .unwrap();
    let mut ciphertext = Vec::new();
    let mut writer = encryptor.wrap_output(&mut ciphertext).unwrap();
    std::io::Write::write_all(&mut writer, news2_csv(4, 2, 2).as_bytes()).unwrap();
    writer.finish().unwrap();
    let path = d.write_input("news2_crate.csv.age", &ciphertext);
    let (out, file) = ingest_one(&d, &path);
    assert!(out.status.success(), "{}", text(&out.stdout));
    assert_eq!(file["state"], "loaded");
    assert_eq!(file["records"], 2 + 4 * 8);
}

#[test]
fn the_same_content_again_is_a_duplicate_and_applies_nothing() {
    let d = Deployment::new();
    let plain = d.write_input("news2_dup.csv", news2_csv(10, 2, 3).as_bytes());
    let encrypted = d.encrypt(&plain, false);
    assert!(d.ingest(&[&encrypted]).status.success());
    let observations = d.count("SELECT count(*) FROM observation_records");
    let out = d.ingest(&[&encrypted]);
    assert!(out.status.success(), "a duplicate is not an error");
    let files = d.files();
    assert_eq!(files[1]["state"], "duplicate");
    assert_eq!(files[1]["records"], 0);
    assert_eq!(
        d.count("SELECT count(*) FROM observation_records"),
        observations
    );
    let shown = d.show(files[1]["id"].as_i64().unwrap());
    assert_eq!(shown["file"]["duplicate_of"], files[0]["id"]);
}

#[test]
fn a_file_for_another_recipient_is_quarantined_with_its_report() {
    let d = Deployment::new();
    let other = Deployment::new();
    let plain = d.write_input("news2_key.csv", news2_csv(2, 1, 0).as_bytes());
    let encrypted = other.encrypt(&plain, false);
    let (out, file) = ingest_one(&d, &encrypted);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stdout).contains("decrypt_failed"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(file["state"], "quarantined");
    assert_eq!(file["reason"], "decrypt_failed");
    let shown = d.show(file["id"].as_i64().unwrap());
    assert_eq!(shown["problems"][0]["code"], "wrong_key");
    let report = quarantine_report(&d);
    assert_eq!(report["reason"], "decrypt_failed");
    assert_eq!(report["problems"][0]["code"], "wrong_key");
    assert_eq!(report["file_id"], file["id"]);
}

/// The single report in quarantine/, and checks its original sits beside it.
fn quarantine_report(d: &Deployment) -> serde_json::Value {
    let dir = d.path("spool/quarantine");
    let reports: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with(".report.json"))
        .collect();
    assert_eq!(reports.len(), 1, "{reports:?}");
    let original = reports[0]
        .to_string_lossy()
        .trim_end_matches(".report.json")
        .to_string();
    assert!(
        std::path::Path::new(&original).exists(),
        "original kept beside its report"
    );
    serde_json::from_slice(&fs::read(&reports[0]).unwrap()).unwrap()
}

#[test]
fn truncated_ciphertext_is_quarantined_and_nothing_is_loaded() {
    let d = Deployment::new();
    // Large enough to span several 64 KiB age chunks.
    let plain = d.write_input("news2_trunc.csv", news2_csv(3000, 50, 0).as_bytes());
    let encrypted = d.encrypt(&plain, false);
    let bytes = fs::read(&encrypted).unwrap();
    let cut = d.write_input("news2_trunc.csv.age", &bytes[..bytes.len() * 2 / 3]);
    let (out, file) = ingest_one(&d, &cut);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(file["reason"], "decrypt_failed");
    let shown = d.show(file["id"].as_i64().unwrap());
    assert_eq!(shown["problems"][0]["code"], "ciphertext_damaged");
    assert_eq!(
        d.count("SELECT count(*) FROM observation_records"),
        0,
        "rows read before the damage are rolled back"
    );
    assert_eq!(d.count("SELECT count(*) FROM service_users"), 0);
}

#[test]
fn tampered_ciphertext_is_quarantined() {
    let d = Deployment::new();
    let plain = d.write_input("news2_tamper.csv", news2_csv(20, 5, 0).as_bytes());
    let encrypted = d.encrypt(&plain, false);
    let mut bytes = fs::read(&encrypted).unwrap();
    let last = bytes.len() - 20;
    bytes[last] ^= 0x01;
    let tampered = d.write_input("news2_tamper2.csv.age", &bytes);
    let (out, file) = ingest_one(&d, &tampered);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(file["reason"], "decrypt_failed");
    assert_eq!(d.count("SELECT count(*) FROM observation_records"), 0);
}

#[test]
fn plaintext_is_refused_when_the_feed_requires_age() {
    let d = Deployment::with_config(
        &fast(SHIPPED_CONFIG).replace("encryption = \"optional\"", "encryption = \"age\""),
    );
    let plain = d.write_input("news2_plain.csv", news2_csv(2, 1, 0).as_bytes());
    let (out, file) = ingest_one(&d, &plain);
    assert_eq!(out.status.code(), Some(1));
    let shown = d.show(file["id"].as_i64().unwrap());
    assert_eq!(shown["problems"][0]["code"], "not_encrypted");
}

#[test]
fn every_validation_problem_is_listed_without_identifier_values() {
    let d = Deployment::new();
    let good = news2_row(1, 0);
    let fields: Vec<&str> = good.split(',').collect();
    let with = |index: usize, value: &str| {
        let mut f = fields.clone();
        f[index] = value;
        f.join(",")
    };
    let rows = [
        with(0, ""),                 // resident_id required
        with(1, "9434765918"),       // NHS number check digit
        with(4, "03/02/1940"),       // date format
        with(5, "3"),                // gender code list
        with(6, "2026-11-22 08:00"), // datetime without offset
        with(7, "abc"),              // integer
        with(8, "101"),              // range
        with(9, "yes"),              // boolean words
        with(12, "a"),               // code list is case-sensitive
        with(13, "45.5"),            // decimal range
        with(2, &"X".repeat(101)),   // max length
        format!("{good},extra"),     // field count
    ];
    let body = format!("{HEADER}\n{good}\n{}\n", rows.join("\n"));
    let path = d.write_input("news2_bad.csv", body.as_bytes());
    let (out, file) = ingest_one(&d, &path);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(file["reason"], "validation_failed");
    let shown = d.show(file["id"].as_i64().unwrap());
    let problems = shown["problems"].as_array().unwrap();
    let got: Vec<(i64, String, String)> = problems
        .iter()
        .map(|p| {
            (
                p["line"].as_i64().unwrap(),
                p["column"].as_str().unwrap_or("").to_string(),
                p["code"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let expected = [
        (3, "resident_id", "required"),
        (4, "nhs_number", "nhs_number_check_digit"),
        (5, "date_of_birth", "not_date"),
        (6, "gender", "not_in_code_list"),
        (7, "observed_at", "not_datetime"),
        (8, "respiration_rate", "not_integer"),
        (9, "spo2", "out_of_range"),
        (10, "on_oxygen", "not_boolean"),
        (11, "consciousness", "not_in_code_list"),
        (12, "temperature", "out_of_range"),
        (13, "family_name", "too_long"),
        (14, "", "field_count"),
    ];
    let expected: Vec<(i64, String, String)> = expected
        .iter()
        .map(|(l, c, k)| (*l, c.to_string(), k.to_string()))
        .collect();
    assert_eq!(got, expected);
    assert_eq!(problems[1]["field"], 2, "value position within the record");
    // Identifiers never appear; ordinary values do, to help the sender fix them.
    let report = serde_json::to_string(&shown).unwrap();
    assert!(!report.contains("9434765918"));
    assert!(!report.contains("03/02/1940"));
    assert!(!report.contains("XXXXXXXX"));
    assert!(report.contains("`abc`"));
    assert_eq!(
        d.count("SELECT count(*) FROM observation_records"),
        0,
        "reject_file loads nothing"
    );
}

#[test]
fn skip_invalid_rows_loads_the_rest_and_reports_the_problems() {
    let d = Deployment::with_config(&fast(SHIPPED_CONFIG).replace(
        "on_error = \"reject_file\"",
        "on_error = \"skip_invalid_rows\"",
    ));
    let mut body = news2_csv(5, 5, 0);
    body.push_str(&news2_row(9, 9).replace(",A,", ",Z,"));
    body.push('\n');
    let path = d.write_input("news2_skip.csv", body.as_bytes());
    let (out, file) = ingest_one(&d, &path);
    assert!(out.status.success(), "{}", text(&out.stdout));
    assert_eq!(file["state"], "loaded");
    assert_eq!(file["rows_read"], 6);
    assert_eq!(file["rows_loaded"], 5);
    assert_eq!(file["problems"], 1);
    assert_eq!(d.count("SELECT count(*) FROM service_users"), 5);
}

#[test]
fn windows_1252_input_is_decoded() {
    let d = Deployment::new();
    let mut body = format!("{HEADER}\n").into_bytes();
    body.extend_from_slice(
        b"R0001,,Ren\xE9e,Zo\xEB,1940-01-01,2,2026-11-22T08:00:00Z,18,96,N,120,72,A,36.8\r\n",
    );
    let path = d.write_input("news2_1252.csv", &body);
    let encrypted = d.encrypt(&path, false);
    let (out, file) = ingest_one(&d, &encrypted);
    assert!(out.status.success(), "{}", text(&out.stdout));
    assert_eq!(file["state"], "loaded");
    let (family, given): (String, String) = d
        .ledger()
        .query_row(
            "SELECT family_name, given_name FROM service_users",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((family.as_str(), given.as_str()), ("Renée", "Zoë"));
}

#[test]
fn utf8_with_bom_and_crlf_is_read() {
    let d = Deployment::new();
    let body = format!("\u{feff}{}", news2_csv(3, 3, 0).replace('\n', "\r\n"));
    let path = d.write_input("news2_bom.csv", body.as_bytes());
    let (out, file) = ingest_one(&d, &path);
    assert!(out.status.success(), "{}", text(&out.stdout));
    assert_eq!(file["rows_loaded"], 3);
}

#[test]
fn a_file_no_feed_matches_is_quarantined_then_replayed_after_a_config_fix() {
    let d = Deployment::new();
    let path = d.write_input("obs_2026.csv", news2_csv(3, 3, 0).as_bytes());
    let (out, file) = ingest_one(&d, &path);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(file["reason"], "no_feed");
    let id = file["id"].as_i64().unwrap().to_string();
    d.write_config(&fast(SHIPPED_CONFIG).replace(
        "match = [\"news2_*.csv.age\", \"news2_*.csv\"]",
        "match = [\"news2_*.csv.age\", \"news2_*.csv\", \"obs_*.csv\"]",
    ));
    let out = d.dg(&["replay", &id]);
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let file = &d.files()[0];
    assert_eq!(file["state"], "loaded");
    let shown = d.show(file["id"].as_i64().unwrap());
    let events: Vec<&str> = shown["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(events, ["received", "quarantined", "replayed", "loaded"]);
    assert!(
        fs::read_dir(d.path("spool/quarantine"))
            .unwrap()
            .flatten()
            .all(|e| e.path().to_string_lossy().ends_with(".report.json"))
    );
    assert_eq!(
        fs::read_dir(d.path("spool/archive")).unwrap().count(),
        1,
        "the original moved to the archive"
    );
    // A loaded file cannot be replayed.
    assert_eq!(d.dg(&["replay", &id]).status.code(), Some(2));
}

/// The shipped config with a second partner, `gp`, sending the same feed.
fn with_gp() -> String {
    format!(
        "{}\n[partners.gp]\n\n[sources.gp-drop]\nkind = \"local\"\npartner = \"gp\"\npath = \"../spool/drop/gp\"\n\n[feeds.gp-news2]{}",
        fast(SHIPPED_CONFIG),
        SHIPPED_CONFIG
            .split("[feeds.news2]")
            .nth(1)
            .unwrap()
            .replace("feeds.news2", "feeds.gp-news2")
            .replace("partner = \"demo-carehome\"", "partner = \"gp\"")
    )
}

/// `patients find --local-id SOURCE:ID --json`: (person id, its detail ids).
fn person_of(d: &Deployment, local_id: &str) -> (i64, Vec<i64>) {
    let out = d.dg(&["patients", "find", "--local-id", local_id, "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let person: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let details = person["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["detail_id"].as_i64().unwrap())
        .collect();
    (person["person_id"].as_i64().unwrap(), details)
}

#[test]
fn an_admin_links_and_unlinks_details_by_hand_and_later_files_keep_the_decision() {
    let d = Deployment::with_config(&with_gp());
    let home = d.write_input("news2_home.csv", news2_csv(4, 2, 0).as_bytes());
    assert!(d.ingest(&[&home]).status.success());
    let gp_file = |name: &str, rows: u32| {
        let body = news2_csv(rows, 1, 0).replace("R0001,", "GP-77,");
        let gp = d.write_input(name, body.as_bytes());
        let out = d.dg(&["ingest", "--source", "gp-drop", gp.to_str().unwrap()]);
        assert!(out.status.success(), "{}", text(&out.stdout));
    };
    gp_file("news2_gp.csv", 2);
    let (person, details) = person_of(&d, "gp:GP-77");
    assert_eq!(details.len(), 2, "linked by NHS number");
    let (home_detail, gp_detail) = (details[0], details[1]);
    let (other_person, other_details) = person_of(&d, "demo-carehome:R0002");
    assert_ne!(other_person, person);

    // A reason holding an NHS number is refused: the audit trail must not carry one.
    let number = nhs_number(1);
    let spaced = format!("{} {} {}", &number[..3], &number[3..6], &number[6..]);
    for written in [
        spaced.clone(),
        format!("{}  {} - {}", &number[..3], &number[3..6], &number[6..]),
        format!("{}.{}/{}", &number[..3], &number[3..6], &number[6..]),
    ] {
        let reason = format!("NHS no {written} is shared");
        let out = d.dg(&[
            "patients",
            "unlink",
            &gp_detail.to_string(),
            "--reason",
            &reason,
        ]);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{written}: {}",
            text(&out.stderr)
        );
        assert!(text(&out.stderr).contains("holds an NHS number"));
    }

    let out = d.dg(&[
        "patients",
        "unlink",
        &gp_detail.to_string(),
        "--reason",
        "GP record is another resident, ticket 77",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let (gp_person, gp_details) = person_of(&d, "gp:GP-77");
    assert_ne!(gp_person, person);
    assert_eq!(gp_details, [gp_detail], "the detail id never changes");
    assert_eq!(
        person_of(&d, "demo-carehome:R0001"),
        (person, vec![home_detail])
    );
    // A later file with the same NHS number does not undo it.
    gp_file("news2_gp_2.csv", 3);
    assert_eq!(person_of(&d, "gp:GP-77").0, gp_person);
    // Its person has no number of its own now, but the detail has: it is
    // still not one with a resident whose number differs.
    let (r2, g) = (other_details[0].to_string(), gp_detail.to_string());
    let out = d.dg(&["patients", "link", &r2, &g, "--reason", "mistake"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    // Nothing left to unlink from; two persons with different numbers are not one.
    let out = d.dg(&[
        "patients",
        "unlink",
        &gp_detail.to_string(),
        "--reason",
        "again",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let out = d.dg(&[
        "patients",
        "link",
        &home_detail.to_string(),
        &other_details[0].to_string(),
        "--reason",
        "mistake",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("different NHS numbers"),
        "{}",
        text(&out.stderr)
    );

    let out = d.dg(&[
        "patients",
        "link",
        &home_detail.to_string(),
        &gp_detail.to_string(),
        "--reason",
        "confirmed with the home, ticket 78",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        person_of(&d, "gp:GP-77"),
        (person, vec![home_detail, gp_detail])
    );
    // The merged person's id is never given again.
    let (h, g) = (home_detail.to_string(), gp_detail.to_string());
    let out = d.dg(&["patients", "unlink", &g, "--reason", "again, ticket 79"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let (again, _) = person_of(&d, "gp:GP-77");
    assert!(again > gp_person, "{again} after {gp_person}");
    let out = d.dg(&["patients", "link", &h, &g, "--reason", "ticket 80"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = d.dg(&[
        "patients",
        "link",
        &home_detail.to_string(),
        &gp_detail.to_string(),
        "--reason",
        "again",
    ]);
    assert_eq!(out.status.code(), Some(1), "already one person");

    // Each change is an audit event saying who and why, and nothing else of the person.
    let events = d.strings(
        "SELECT action || ' ' || detail FROM audit_events WHERE action LIKE 'patients_%' ORDER BY id",
    );
    assert_eq!(events.len(), 4, "{events:?}");
    assert!(events[0].starts_with("patients_unlink "), "{events:?}");
    assert!(events[0].contains("\"reason\":\"GP record is another resident, ticket 77\""));
    assert!(events[0].contains("\"by\":\""), "{events:?}");
    assert!(events[1].starts_with("patients_link "), "{events:?}");
    assert!(!events.iter().any(|e| e.contains(&number)), "{events:?}");
}

#[test]
fn patients_are_linked_across_sources_by_nhs_number() {
    let d = Deployment::with_config(&with_gp());
    let home = d.write_input("news2_home.csv", news2_csv(4, 1, 0).as_bytes());
    assert!(d.ingest(&[&home]).status.success());
    let gp_body = news2_csv(2, 1, 0).replace("R0001,", "GP-77,");
    let gp = d.write_input("news2_gp.csv", gp_body.as_bytes());
    let out = d.dg(&["ingest", "--source", "gp-drop", gp.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stdout));
    let number = nhs_number(1);
    let spaced = format!("{} {} {}", &number[..3], &number[3..6], &number[6..]);
    let out = d.dg(&["patients", "find", "--nhs-number", &spaced, "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let person: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let details = person["details"].as_array().unwrap();
    assert_eq!(details.len(), 2);
    assert_eq!(details[0]["source"], "demo-carehome");
    assert_eq!(details[0]["observations"], 4 * 8);
    assert_eq!(details[1]["local_id"], "GP-77");
    let out = d.dg(&["patients", "find", "--local-id", "gp:GP-77", "--json"]);
    let via_gp: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(via_gp["person_id"], person["person_id"]);
    let out = d.dg(&["patients", "find", "--nhs-number", "9434765918"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "an invalid NHS number is refused"
    );
}

#[test]
fn a_rejected_file_leaves_nothing_behind_for_the_next_file() {
    let d = Deployment::new();
    // The first file adds residents, then fails after more rows than one
    // batch holds (so they were written, then rolled back); the second names
    // the same residents and must write them afresh.
    let mut failing = news2_csv(3000, 3, 0);
    let row = news2_row(1, 99);
    let (start, _temperature) = row.rsplit_once(',').unwrap();
    failing.push_str(&format!("{start},99.9"));
    failing.push('\n');
    let bad = d.write_input("news2_bad_first.csv", failing.as_bytes());
    let good = d.write_input("news2_good_second.csv", news2_csv(6, 3, 500).as_bytes());
    let out = d.ingest(&[&bad, &good]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let files = d.files();
    assert_eq!(files[0]["state"], "quarantined");
    assert_eq!(files[1]["state"], "loaded", "{}", files[1]);
    assert_eq!(files[1]["records"], 3 + 6 * 8);
    assert_eq!(d.count("SELECT count(*) FROM service_users"), 3);
    assert_eq!(d.count("SELECT count(*) FROM pragma_foreign_key_check"), 0);
}

/// The NEWS2 feed with two more columns: a postcode, mapped to the service
/// user, and a ward code from a list kept in a file next to the config.
fn deployment_with_postcode_and_ward() -> Deployment {
    let d = Deployment::new();
    fs::write(d.path("config/wards.csv"), "code,label\nW1,Oak\nW2,Elm\n").unwrap();
    let config = fast(SHIPPED_CONFIG)
        .replacen(
            "[[feeds.news2.columns]]\nname = \"resident_id\"",
            "[[feeds.news2.columns]]\nname = \"postcode\"\ntype = \"postcode\"\n\n\
             [[feeds.news2.columns]]\nname = \"ward\"\ntype = \"code\"\nvalues_file = \"wards.csv\"\n\n\
             [[feeds.news2.columns]]\nname = \"resident_id\"",
            1,
        )
        .replacen(
            "gender = \"gender\"\n",
            "gender = \"gender\"\npostcode = \"postcode\"\n",
            1,
        );
    d.write_config(&config);
    let check = d.dg(&["check-config"]);
    assert!(check.status.success(), "{}", text(&check.stdout));
    d
}

/// A NEWS2 file with the two extra columns, the same values on every row.
fn news2_with(postcode: &str, ward: &str) -> String {
    let mut lines = news2_csv(3, 3, 0)
        .lines()
        .map(str::to_string)
        .collect::<Vec<_>>();
    lines[0].push_str(",postcode,ward");
    for line in &mut lines[1..] {
        line.push_str(&format!(",{postcode},{ward}"));
    }
    lines.join("\n") + "\n"
}

#[test]
fn postcodes_are_stored_normalised_and_code_lists_can_come_from_a_file() {
    let d = deployment_with_postcode_and_ward();
    let plain = d.write_input("news2_pc.csv", news2_with("  sw1a1aa", "W2").as_bytes());
    let (out, file) = ingest_one(&d, &plain);
    assert!(out.status.success(), "{}", text(&out.stdout));
    assert_eq!(file["state"], "loaded");
    assert_eq!(
        d.string("SELECT group_concat(DISTINCT postcode) FROM service_users"),
        "SW1A 1AA"
    );

    let plain = d.write_input("news2_bad.csv", news2_with("SW1A 1AAX", "W3").as_bytes());
    let (_, file) = ingest_one(&d, &plain);
    assert_eq!(file["state"], "quarantined");
    let report = quarantine_report(&d);
    let codes: Vec<&str> = report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["code"].as_str().unwrap())
        .collect();
    assert!(codes.contains(&"not_postcode"), "{codes:?}");
    assert!(codes.contains(&"not_in_code_list"), "{codes:?}");
    let shown = report.to_string();
    assert!(
        !shown.contains("1AAX"),
        "a postcode is never echoed: {shown}"
    );
}

#[test]
fn a_tilde_delimited_file_without_a_header_loads_by_column_order() {
    let d = Deployment::new();
    let config = fast(SHIPPED_CONFIG).replacen(
        "[feeds.news2.csv]\ndelimiter = \",\"\n",
        "[feeds.news2.csv]\ndelimiter = \"~\"\nheader = false\n",
        1,
    );
    d.write_config(&config);
    let check = d.dg(&["check-config"]);
    assert!(check.status.success(), "{}", text(&check.stdout));
    let csv = news2_csv(4, 2, 0);
    assert!(!csv.contains('~'));
    let rows: Vec<String> = csv.lines().skip(1).map(|l| l.replace(',', "~")).collect();
    let plain = d.write_input("news2_tilde.csv", (rows.join("\n") + "\n").as_bytes());
    let (out, file) = ingest_one(&d, &plain);
    assert!(out.status.success(), "{}", text(&out.stdout));
    assert_eq!(file["state"], "loaded");
    assert_eq!(file["rows_loaded"], 4);
}

#[test]
fn an_extract_with_header_and_trailer_records_loads_and_a_cut_one_is_quarantined() {
    let d = Deployment::new();
    let config = fast(SHIPPED_CONFIG).replacen(
        "[feeds.news2.csv]\ndelimiter = \",\"\n",
        "[feeds.news2.csv.header_record]\ntag = \"HDR\"\n\n\
         [feeds.news2.csv.trailer_record]\ntag = \"TRL\"\ncount_field = 2\n\n\
         [feeds.news2.csv]\ndelimiter = \"~\"\n",
        1,
    );
    d.write_config(&config);
    let check = d.dg(&["check-config"]);
    assert!(check.status.success(), "{}", text(&check.stdout));
    let body: Vec<String> = news2_csv(5, 2, 0)
        .lines()
        .map(|l| l.replace(',', "~"))
        .collect();
    let whole = format!("HDR~A81001~20261203\n{}\nTRL~5\n", body.join("\n"));
    let plain = d.write_input("news2_framed.csv", whole.as_bytes());
    let (out, file) = ingest_one(&d, &plain);
    assert!(out.status.success(), "{}", text(&out.stdout));
    assert_eq!(file["state"], "loaded");
    assert_eq!(file["rows_read"], 5);

    // The same extract cut short after its third record: no trailer.
    let cut = format!("HDR~A81001~20261204\n{}\n", body[..4].join("\n"));
    let plain = d.write_input("news2_cut.csv", cut.as_bytes());
    let (_, file) = ingest_one(&d, &plain);
    assert_eq!(file["state"], "quarantined");
    let report = quarantine_report(&d);
    assert_eq!(report["problems"][0]["code"], "trailer_record_missing");
}

#[test]
fn a_person_is_found_by_family_name_and_date_of_birth_whatever_the_accents() {
    let d = Deployment::new();
    // Resident 1 becomes Ó Briain; resident 2 keeps its name.
    let body = news2_csv(4, 2, 0).replace(",Family1,", ",Ó Briain,");
    let file = d.write_input("news2_names.csv", body.as_bytes());
    assert!(d.ingest(&[&file]).status.success());
    let born = d.string("SELECT date_of_birth FROM service_users WHERE local_id = 'R0001'");

    let find = |args: &[&str]| {
        let mut all = vec![
            "patients",
            "find",
            "--date-of-birth",
            born.as_str(),
            "--json",
        ];
        all.extend_from_slice(args);
        d.dg(&all)
    };
    let out = find(&["--family-name", "o'briain"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let found: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(found.as_array().unwrap().len(), 1);
    assert_eq!(found[0]["details"][0]["local_id"], "R0001");

    let out = find(&["--family-name", "OBRIAIN", "--gender", "9"]);
    assert_eq!(out.status.code(), Some(1), "no such gender: no match");
    let out = find(&["--family-name", "Family2"]);
    assert_eq!(out.status.code(), Some(1), "another birthday: no match");
    let out = d.dg(&["patients", "find", "--family-name", "x"]);
    assert_eq!(out.status.code(), Some(2), "a name needs a date of birth");
}

#[test]
fn patients_show_lists_a_persons_details_and_observations_with_file_and_line() {
    let d = Deployment::new();
    let file = d.write_input("news2_show.csv", news2_csv(6, 2, 0).as_bytes());
    assert!(d.ingest(&[&file]).status.success());
    let detail = d
        .count("SELECT detail_id FROM service_users WHERE local_id = 'R0001'")
        .to_string();
    let out = d.dg(&["patients", "show", &detail, "--observations", "5", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["details"][0]["local_id"], "R0001");
    assert_eq!(shown["details"][0]["line"], 2);
    let observations = shown["observations"].as_array().unwrap();
    assert_eq!(observations.len(), 5, "as many as asked");
    // Resident 1 has every other row: three sets of eight observations each.
    assert_eq!(shown["observations_total"], 3 * 8);
    let newest = &observations[0];
    assert_eq!(newest["line"], 6, "the newest set first");
    assert_eq!(newest["file_id"], 1);

    let out = d.dg(&["patients", "show", &detail]);
    assert!(
        text(&out.stdout).contains("observations (24 in all, the newest 24 listed)"),
        "{}",
        text(&out.stdout)
    );
    let out = d.dg(&["patients", "show", "999999"]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn a_stored_payload_is_given_back_exactly_from_the_ledger_or_the_spool_and_audited() {
    let d = Deployment::new();
    let small = d.encrypt(
        &d.write_input("news2_small.csv", news2_csv(30, 5, 0).as_bytes()),
        false,
    );
    let large = d.encrypt(
        &d.write_input("news2_large.csv", news2_csv(3000, 50, 100).as_bytes()),
        false,
    );
    assert!(fs::metadata(&small).unwrap().len() < 64 * 1024);
    assert!(fs::metadata(&large).unwrap().len() > 64 * 1024);
    let (_, small_row) = ingest_one(&d, &small);
    let (_, large_row) = ingest_one(&d, &large);
    assert_eq!(
        (&small_row["state"], &large_row["state"]),
        (&"loaded".into(), &"loaded".into())
    );
    // The small file is archived in the ledger, the large one in the spool.
    assert_eq!(d.count("SELECT count(*) FROM held_payloads"), 1);
    assert_eq!(fs::read_dir(d.path("spool/archive")).unwrap().count(), 1);

    for (row, original) in [(&small_row, &small), (&large_row, &large)] {
        let id = row["id"].to_string();
        let out = d.path(&format!("payload-{id}"));
        let given = d.dg(&["payload", &id, "--output", out.to_str().unwrap()]);
        assert!(given.status.success(), "{}", text(&given.stderr));
        assert_eq!(fs::read(&out).unwrap(), fs::read(original).unwrap());
        // Never over an existing file.
        let again = d.dg(&["payload", &id, "--output", out.to_str().unwrap()]);
        assert!(!again.status.success());
        assert_eq!(fs::read(&out).unwrap(), fs::read(original).unwrap());
    }
    let to_stdout = d.dg(&["payload", &small_row["id"].to_string()]);
    assert!(to_stdout.status.success());
    assert_eq!(to_stdout.stdout, fs::read(&small).unwrap());
    assert_eq!(d.dg(&["payload", "999"]).status.code(), Some(1));
    assert_eq!(
        d.count("SELECT count(*) FROM audit_events WHERE action = 'payload_read'"),
        3,
        "each payload given out is audited, a refused one is not"
    );
}

#[test]
fn a_large_ingest_draws_a_progress_bar_on_a_terminal_and_nothing_when_piped() {
    let d = Deployment::new();
    let plain = d.write_input("news2_big.csv", news2_csv(150_000, 500, 0).as_bytes());
    // Piped: stderr stays empty.
    let out = d.ingest(&[&plain]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stderr), "", "progress drawn into a pipe");

    // On a terminal (`script` gives it one): a bar of bytes.
    let again = d.write_input("news2_big2.csv", news2_csv(150_000, 500, 7).as_bytes());
    let command = format!(
        "{} --config {} ingest --source demo-carehome-drop {}",
        env!("CARGO_BIN_EXE_dropgate"),
        d.config_path().display(),
        again.display()
    );
    let out = std::process::Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env_remove("DROPGATE_LOG")
        .output()
        .expect("script (bsdutils; scripts/test installs it)");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    assert!(
        shown.contains("MiB") && shown.contains('['),
        "no bar: {shown:?}"
    );
    assert!(shown.contains("loaded"), "{shown}");
}
