//! Exports: made only under a grant in force, incremental by watermark,
//! signed, checked with stock `ssh-keygen -Y verify` and `sha256sum -c`,
//! valid FHIR by Python's `fhir.resources`, fetched with stock `sftp`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::harness::*;

/// Loads a NEWS2 file of `rows` rows over `residents` residents.
fn load(d: &Deployment, name: &str, rows: u32, residents: u32, seed: u32) {
    let file = d.write_input(name, news2_csv(rows, residents, seed).as_bytes());
    let out = d.ingest(&[&file]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

/// `dropgate export demo-nightly --json`, expected to succeed.
fn export(d: &Deployment) -> Value {
    let out = d.dg(&["export", "demo-nightly", "--json"]);
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn folder(made: &Value) -> PathBuf {
    PathBuf::from(
        made["folder"]
            .as_str()
            .expect("a complete export has a folder"),
    )
}

fn count_of(made: &Value, url: &str) -> Option<u64> {
    made["manifest"]["output"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["url"] == url)
        .map(|e| e["count"].as_u64().unwrap())
}

fn allowed_signers(d: &Deployment) -> PathBuf {
    let out = d.dg(&["signing-key"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    d.write_input("allowed_signers", &out.stdout)
}

/// `ssh-keygen -Y verify` of `name` in `folder` against its `.sig`.
fn ssh_keygen_verify(signers: &Path, folder: &Path, name: &str) -> std::process::Output {
    Command::new("ssh-keygen")
        .args(["-Y", "verify", "-f"])
        .arg(signers)
        .args(["-I", "dropgate", "-n", "dropgate-export", "-s"])
        .arg(folder.join(format!("{name}.sig")))
        .stdin(fs::File::open(folder.join(name)).unwrap())
        .output()
        .expect("ssh-keygen must be installed (scripts/test installs it)")
}

fn sha256sum_check(folder: &Path) -> std::process::Output {
    Command::new("sha256sum")
        .args(["-c", "SHA256SUMS"])
        .current_dir(folder)
        .output()
        .expect("sha256sum must be installed (scripts/test installs it)")
}

#[test]
fn an_export_is_signed_and_checks_with_stock_ssh_keygen_and_sha256sum() {
    let d = Deployment::new();
    load(&d, "news2_a.csv", 3, 2, 0);
    let made = export(&d);
    let folder = folder(&made);
    let signers = allowed_signers(&d);
    assert!(
        text(&fs::read(&signers).unwrap())
            .starts_with("dropgate namespaces=\"dropgate-export,dropgate-audit\" ssh-ed25519 ")
    );
    for name in ["manifest.json", "SHA256SUMS"] {
        let out = ssh_keygen_verify(&signers, &folder, name);
        assert!(
            out.status.success(),
            "{name}: {}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        assert!(text(&out.stdout).contains("Good \"dropgate-export\" signature for dropgate"));
    }
    let out = sha256sum_check(&folder);
    assert!(out.status.success(), "{}", text(&out.stdout));
    for file in [
        "Patient.ndjson",
        "Observation.ndjson",
        "service_user.csv",
        "observations.csv",
        "manifest.json",
    ] {
        assert!(
            text(&out.stdout).contains(&format!("{file}: OK")),
            "{}",
            text(&out.stdout)
        );
    }
    let out = d.dg(&[
        "verify",
        folder.to_str().unwrap(),
        "--allowed-signers",
        signers.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stdout));

    // The manifest in the Bulk Data shape, with what dropgate adds.
    let manifest: Value =
        serde_json::from_slice(&fs::read(folder.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["requiresAccessToken"], false);
    assert_eq!(
        manifest["grants"],
        serde_json::json!(["demo-hospital-direct-care"])
    );
    assert_eq!(manifest["schedule"], "demo-nightly");
    let patients = manifest["output"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "Patient")
        .unwrap();
    assert_eq!(patients["count"], 2);
    assert_eq!(
        patients["bytes"].as_u64().unwrap(),
        fs::metadata(folder.join("Patient.ndjson")).unwrap().len()
    );

    // Another key is not an allowed signer.
    let stranger = new_key(&d, "stranger");
    let line = format!(
        "dropgate namespaces=\"dropgate-export\" {}\n",
        public_key_line(&stranger.with_extension("pub"))
    );
    let other_signers = d.write_input("other_signers", line.as_bytes());
    assert!(
        !ssh_keygen_verify(&other_signers, &folder, "manifest.json")
            .status
            .success()
    );
    let out = d.dg(&[
        "verify",
        folder.to_str().unwrap(),
        "--allowed-signers",
        other_signers.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert!(
        text(&out.stdout).contains("not by any allowed signer"),
        "{}",
        text(&out.stdout)
    );

    // One changed byte: both tools say which file.
    let observations = folder.join("Observation.ndjson");
    let mut bytes = fs::read(&observations).unwrap();
    bytes[10] ^= 1;
    fs::write(&observations, bytes).unwrap();
    let out = sha256sum_check(&folder);
    assert!(!out.status.success());
    assert!(text(&out.stdout).contains("Observation.ndjson: FAILED"));
    let out = d.dg(&["verify", folder.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stdout).contains("Observation.ndjson: SHA-256 is"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn every_fhir_resource_validates_with_python_fhir_resources() {
    let d = Deployment::new();
    load(&d, "news2_a.csv", 5, 3, 0);
    let folder = folder(&export(&d));
    let script = r#"
import json, sys
from fhir.resources.R4B.patient import Patient
from fhir.resources.R4B.observation import Observation
folder = sys.argv[1]
counts = {}
for name, model in (("Patient", Patient), ("Observation", Observation)):
    with open(f"{folder}/{name}.ndjson") as f:
        for line in f:
            resource = model.model_validate(json.loads(line))
            counts[name] = counts.get(name, 0) + 1
            if name == "Patient":
                assert any(i.system == "https://fhir.nhs.uk/Id/nhs-number" for i in resource.identifier)
            if name == "Observation" and resource.code.coding and any(c.code == "1104051000000101" for c in resource.code.coding):
                counts["members"] = counts.get("members", 0) + len(resource.hasMember)
print(json.dumps(counts))
"#;
    let counts = fhir_resources_check(script, &folder);
    // Seven measurements and the NEWS2 total per set; the total links the seven.
    assert_eq!(
        counts,
        serde_json::json!({"Patient": 3, "Observation": 5 * 8, "members": 5 * 7})
    );
}

#[test]
fn an_incremental_export_holds_only_what_was_loaded_since_the_last() {
    let d = Deployment::new();
    load(&d, "news2_a.csv", 4, 2, 0);
    let first = export(&d);
    assert_eq!(count_of(&first, "Observation.ndjson"), Some(4 * 8));
    assert_eq!(count_of(&first, "observations.csv"), Some(4 * 8));
    assert_eq!(count_of(&first, "service_user.csv"), Some(2));

    let second = export(&d);
    assert_eq!(
        second["manifest"]["output"],
        serde_json::json!([]),
        "nothing new"
    );
    let to = first["manifest"]["watermark"]["to"].clone();
    assert_eq!(second["manifest"]["watermark"]["from"], to);

    // A new resident's file: only its sets and its one service user.
    load(&d, "news2_b.csv", 2, 1, 100);
    let third = export(&d);
    assert_eq!(third["manifest"]["watermark"]["from"], to);
    assert_eq!(count_of(&third, "Observation.ndjson"), Some(2 * 8));
    assert_eq!(count_of(&third, "Patient.ndjson"), Some(1));
    let csv = fs::read_to_string(folder(&third).join("observations.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + 2 * 8);
    assert!(csv.starts_with(
        "set_id,record_id,detail_id,observed_at,code,value,unit,loinc,snomed,file_id,line\n"
    ));
    // Three runs, all complete and each with its grant.
    assert_eq!(
        d.count("SELECT count(*) FROM export_runs WHERE outcome = 'complete' AND manual = 1"),
        3
    );
    assert_eq!(
        d.count(
            "SELECT count(*) FROM export_grants WHERE grant_name = 'demo-hospital-direct-care'"
        ),
        3
    );
    let out = d.dg(&["grants"]);
    assert!(
        text(&out.stdout).contains("last used 20"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn a_set_sent_again_is_a_new_version_exported_under_its_first_id_and_a_late_older_one_never() {
    let config = fast(SHIPPED_CONFIG)
        .replacen(
            "news2 = true\n",
            "news2 = true\nkey = [\"observed_at\"]\nupdated_at = \"recorded_at\"\n",
            1,
        )
        .replacen(
            "[feeds.news2.map.service_user]",
            "[[feeds.news2.columns]]\nname = \"recorded_at\"\ntype = \"datetime\"\nformat = \"iso8601\"\n\n[feeds.news2.map.service_user]",
            1,
        );
    let d = Deployment::with_config(&config);
    // Resident 1's set taken at one moment, its respiration rate as given,
    // recorded by the sending system at `recorded`.
    let set = |respiration: &str, recorded: &str| {
        let mut fields: Vec<String> = news2_row(1, 0).split(',').map(String::from).collect();
        fields[7] = respiration.to_string();
        format!("{},{recorded}", fields.join(","))
    };
    let send = |name: &str, rows: &[String]| {
        let body = format!("{HEADER},recorded_at\n{}\n", rows.join("\n"));
        let out = d.ingest(&[&d.write_input(name, body.as_bytes())]);
        assert!(out.status.success(), "{}", text(&out.stderr));
    };
    send(
        "news2_first.csv",
        &[
            set("14", "2026-11-30T10:00:00Z"),
            format!("{},2026-11-30T10:00:00Z", news2_row(1, 1)),
        ],
    );
    let first = export(&d);
    assert_eq!(count_of(&first, "observations.csv"), Some(2 * 8));
    let first_id = d.count("SELECT min(id) FROM observation_sets");

    // The same set corrected: exported again, under the first version's id.
    send("news2_corrected.csv", &[set("25", "2026-11-30T11:00:00Z")]);
    let second = export(&d);
    assert_eq!(count_of(&second, "observations.csv"), Some(8));
    let csv = fs::read_to_string(folder(&second).join("observations.csv")).unwrap();
    assert!(csv.starts_with(
        "set_id,record_id,detail_id,observed_at,code,value,unit,loinc,snomed,file_id,line\n"
    ));
    let respiration = csv
        .lines()
        .find(|l| l.contains(",respiratory_rate,"))
        .unwrap();
    let cells: Vec<&str> = respiration.split(',').collect();
    assert_eq!(cells[1], first_id.to_string(), "{respiration}");
    assert_ne!(cells[0], cells[1], "a new row: {respiration}");
    assert_eq!(cells[5], "25");
    let observations = resources_of(&folder(&second), "Observation.ndjson");
    assert!(
        observations.iter().all(|o| o["id"]
            .as_str()
            .unwrap()
            .starts_with(&format!("obs-{first_id}-"))),
        "{observations:?}"
    );

    // An older version arriving late is kept, and never exported.
    send("news2_late.csv", &[set("30", "2026-11-30T09:00:00Z")]);
    let third = export(&d);
    assert_eq!(third["manifest"]["output"], serde_json::json!([]));
    assert_eq!(d.count("SELECT count(*) FROM observation_sets"), 4);
    assert_eq!(
        d.strings(
            "SELECT printf('%d', respiratory_rate) FROM observation_sets
             WHERE superseded_by IS NULL ORDER BY observed_at"
        ),
        ["25", "13"]
    );
    assert_eq!(
        d.count("SELECT count(DISTINCT coalesce(record_id, id)) FROM observation_sets"),
        2
    );

    // `patients show` lists every version with its file and line, the replaced marked.
    let detail = d.count("SELECT detail_id FROM service_users WHERE local_id = 'R0001'");
    let out = d.dg(&["patients", "show", &detail.to_string(), "--json"]);
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut versions: Vec<(String, bool)> = shown["observations"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["code"] == "respiratory_rate")
        .map(|o| {
            (
                o["value"].as_str().unwrap().to_string(),
                o["superseded_by"].is_null(),
            )
        })
        .collect();
    versions.sort();
    assert_eq!(
        versions,
        [
            ("13".to_string(), true),
            ("14".to_string(), false),
            ("25".to_string(), true),
            ("30".to_string(), false),
        ]
    );
}

/// Each line of an NDJSON file, parsed.
fn resources_of(folder: &Path, name: &str) -> Vec<Value> {
    fs::read_to_string(folder.join(name))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn an_expired_grant_refuses_the_next_run_and_says_why() {
    let config = fast(SHIPPED_CONFIG).replace(
        "# valid_until = \"2027-12-31\"",
        "valid_until = \"2026-01-31\"",
    );
    let d = Deployment::with_config(&config);
    load(&d, "news2_a.csv", 2, 1, 0);
    let out = d.dg(&["export", "demo-nightly"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert!(
        text(&out.stdout).contains("refused (no grant in force on"),
        "{}",
        text(&out.stdout)
    );
    assert!(text(&out.stdout).contains("`service_user`, `observations`"));
    assert_eq!(
        d.count("SELECT count(*) FROM export_runs WHERE outcome = 'refused'"),
        1
    );
    assert!(
        audit_actions(&d)
            .iter()
            .any(|(action, _, _)| action == "export_refused")
    );
    let outbox = d.path("spool/outbox/demo-hospital");
    assert!(!outbox.exists() || file_names(&outbox).is_empty());
    let out = d.dg(&["grants"]);
    assert!(
        text(&out.stdout).contains("(not in force today)"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn the_consumer_fetches_its_export_with_stock_sftp_and_no_one_else_can() {
    let d = Deployment::new();
    load(&d, "news2_a.csv", 3, 2, 0);
    let made = export(&d);
    let export_id = made["export_id"].as_str().unwrap().to_string();
    let retrieval = || {
        let out = d.dg(&["schedules", "--json"]);
        let line: Value = serde_json::from_slice(&out.stdout).unwrap();
        line["retrieval"].clone()
    };
    assert_eq!(retrieval()["fetched"], 0);
    assert_eq!(retrieval()["retrieved_at"], Value::Null);
    let daemon = d.start();
    let port = daemon.sftp_port();
    let hospital_key = d.path("config/keys/demo-hospital").display().to_string();
    let local = d.path("fetched");
    fs::create_dir_all(&local).unwrap();
    let out = sftp_as(
        &d,
        port,
        "demo-hospital",
        &hospital_key,
        &format!("ls outbox\nget -r outbox/{export_id} {}\n", local.display()),
    );
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(text(&out.stdout).contains(&export_id));
    let fetched = local.join(&export_id);
    let out = sha256sum_check(&fetched);
    assert!(out.status.success(), "{}", text(&out.stdout));
    assert!(
        ssh_keygen_verify(&allowed_signers(&d), &fetched, "manifest.json")
            .status
            .success()
    );
    // Each file fetched is an audit event.
    wait_for("download audit events", Duration::from_secs(10), || {
        audit_actions(&d)
            .iter()
            .filter(|(a, _, _)| a == "download")
            .count()
            >= 8
    });
    // The audit trail shows the export retrieved: every file fetched whole.
    assert_eq!(retrieval()["fetched"], 8);
    assert_eq!(retrieval()["files"], 8);
    assert!(retrieval()["retrieved_at"].is_string(), "{}", retrieval());
    let out = d.dg(&["schedules"]);
    assert!(
        text(&out.stdout).contains("outbox retrieved at"),
        "{}",
        text(&out.stdout)
    );

    // The care home's own outbox does not hold it, and no path reaches the hospital's.
    let carehome = demo_key(&d);
    for attempt in [
        format!("get outbox/{export_id}/manifest.json {}\n", local.display()),
        format!(
            "get outbox/../demo-hospital/{export_id}/manifest.json {}\n",
            local.display()
        ),
        format!("ls outbox/{export_id}\n"),
    ] {
        let out = sftp(&d, port, &carehome, &attempt);
        assert!(!out.status.success(), "{attempt}: {}", text(&out.stdout));
    }
    // Nothing in the outbox can be written or removed.
    let out = sftp_as(
        &d,
        port,
        "demo-hospital",
        &hospital_key,
        &format!("rm outbox/{export_id}/manifest.json\n"),
    );
    assert!(!out.status.success());
    assert!(fetched.join("manifest.json").exists());
    daemon.terminate();
}

#[test]
fn the_daemon_exports_on_the_timetable_and_catches_up_once_after_a_stop() {
    // Every two seconds, so the test sees timetable runs.
    let config = fast(SHIPPED_CONFIG).replace("cron = \"30 1 * * *\"", "cron = \"*/2 * * * * *\"");
    let d = Deployment::with_config(&config);
    load(&d, "news2_a.csv", 2, 1, 0);
    let daemon = d.start();
    let runs = || {
        d.count("SELECT count(*) FROM export_runs WHERE outcome = 'complete' AND manual = 0 AND planned_at IS NOT NULL")
    };
    wait_for("a timetable export", Duration::from_secs(20), || {
        runs() >= 1
    });
    daemon.kill9();
    let before = runs();
    // Stopped across several timetable times: one catch-up run at start, not one per time missed.
    std::thread::sleep(Duration::from_secs(5));
    let daemon = d.start();
    wait_for("the catch-up export", Duration::from_secs(20), || {
        runs() > before
    });
    let log = daemon.terminate();
    assert!(
        log.contains("making the export missed while stopped"),
        "{log}"
    );
    let after = runs();
    assert!(after - before <= 3, "{before} then {after} runs");
    // Exactly one run holds the loaded file's records; the others found nothing new.
    assert_eq!(
        d.count("SELECT count(*) FROM export_runs WHERE counts LIKE '%Observation.ndjson%'"),
        1
    );
    let outbox = d.path("spool/outbox/demo-hospital");
    assert!(
        file_names(&outbox).iter().all(|n| !n.starts_with('.')),
        "{:?}",
        file_names(&outbox)
    );
}

#[test]
fn an_export_interrupted_by_a_stop_is_never_offered_twice_nor_half() {
    let d = Deployment::new();
    load(&d, "news2_a.csv", 2, 1, 0);
    let first = export(&d);
    let first_id = first["export_id"].as_str().unwrap().to_string();
    // As a stop leaves it between the move into the outbox and the ledger's commit.
    {
        let conn = rusqlite::Connection::open(d.path("spool/ledger.db")).unwrap();
        conn.execute_batch(
            "UPDATE export_runs SET ended_at = NULL, outcome = NULL, watermark_to = NULL, sets_to = NULL;
             DELETE FROM export_grants;",
        )
        .unwrap();
        // And a second run stopped while it was still being written.
        conn.execute(
            "INSERT INTO export_runs (schedule, consumer, manual, mode, started_at, watermark_from, sets_from, export_id)
             VALUES ('demo-nightly', 'demo-hospital', 1, 'incremental', '2026-12-03T01:30:00.000Z', 0, 0, 'half')",
            [],
        )
        .unwrap();
    }
    let partial = d.path("spool/outbox/demo-hospital/.half.partial");
    fs::create_dir_all(&partial).unwrap();
    fs::write(partial.join("Observation.ndjson"), b"{").unwrap();

    let next = export(&d);
    assert_eq!(
        d.string(&format!(
            "SELECT outcome FROM export_runs WHERE export_id = '{first_id}'"
        )),
        "complete"
    );
    assert_eq!(
        d.string("SELECT outcome FROM export_runs WHERE export_id = 'half'"),
        "interrupted"
    );
    assert!(!partial.exists());
    // The recovered run's watermark holds: the next export has nothing new.
    assert_eq!(
        next["manifest"]["watermark"]["from"],
        first["manifest"]["watermark"]["to"]
    );
    assert_eq!(next["manifest"]["output"], serde_json::json!([]));
    let outbox = d.path("spool/outbox/demo-hospital");
    let mut names = file_names(&outbox);
    names.sort();
    let mut expected = vec![first_id, next["export_id"].as_str().unwrap().to_string()];
    expected.sort();
    assert_eq!(names, expected);
}

#[test]
fn records_no_grant_covers_are_never_exported() {
    // A second partner whose data no controller has granted to the hospital.
    let config = format!(
        "{}\n[sources.other-drop]\nkind = \"local\"\npartner = \"other-home\"\npath = \"../spool/drop/other-home\"\n",
        with_second_partner(&fast(SHIPPED_CONFIG))
    );
    let d = Deployment::with_config(&config);
    load(&d, "news2_a.csv", 3, 3, 0);
    let other = d.write_input("news2_other.csv", news2_csv(4, 4, 50).as_bytes());
    let out = d.dg(&["ingest", "--source", "other-drop", other.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(d.count("SELECT count(*) FROM observation_sets"), 7);
    let made = export(&d);
    assert_eq!(count_of(&made, "Observation.ndjson"), Some(3 * 8));
    assert_eq!(count_of(&made, "Patient.ndjson"), Some(3));
    let patients = fs::read_to_string(folder(&made).join("Patient.ndjson")).unwrap();
    assert!(!patients.contains("other-home"), "{patients}");
    // Its watermark still moved past the other partner's load: it is not offered later.
    let again = export(&d);
    assert_eq!(again["manifest"]["output"], serde_json::json!([]));
}

#[test]
fn an_encrypted_export_decrypts_with_the_stock_age_tool_and_still_verifies() {
    let config = fast(SHIPPED_CONFIG).replace("# encrypt = true ", "encrypt = true ");
    let d = Deployment::with_config(&config);
    load(&d, "news2_a.csv", 2, 2, 0);
    let made = export(&d);
    let folder = folder(&made);
    let mut names = file_names(&folder);
    names.sort();
    assert_eq!(
        names,
        [
            "Observation.ndjson.age",
            "Patient.ndjson.age",
            "SHA256SUMS",
            "SHA256SUMS.sig",
            "manifest.json",
            "manifest.json.sig",
            "observations.csv.age",
            "service_user.csv.age"
        ]
    );
    // The checksums are of what is on disk, so the stock check still holds.
    assert!(sha256sum_check(&folder).status.success());
    let out = d.dg(&["verify", folder.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stdout));
    // The hospital's own identity (made by keygen) opens it with the `age` tool.
    let out = Command::new("age")
        .args(["-d", "-i"])
        .arg(d.path("config/keys/demo-hospital-age.txt"))
        .arg(folder.join("observations.csv.age"))
        .output()
        .expect("age must be installed (scripts/test installs it)");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).lines().count(), 1 + 2 * 8);
    assert!(text(&out.stdout).starts_with("set_id,record_id,detail_id,observed_at,"));
    // No one else's identity does.
    let out = Command::new("age")
        .args(["-d", "-i"])
        .arg(d.path("config/keys/age-identity.txt"))
        .arg(folder.join("observations.csv.age"))
        .output()
        .unwrap();
    assert!(!out.status.success());
}

/// The shipped config with `demo-nightly` also pushing to destination `partner`, given as `destination`.
fn pushing_to(destination: &str) -> String {
    let config = fast(SHIPPED_CONFIG).replace(
        "catch_up = \"once\"                  #",
        "destinations = [\"partner\"]\ncatch_up = \"once\"                  #",
    );
    assert!(config.contains("destinations = [\"partner\"]"));
    format!("{config}\n{destination}")
}

/// Destination `partner`: the `incoming` folder of a real sshd.
fn sftp_destination(sshd: &crate::sshd::Sshd) -> String {
    format!(
        "[destinations.partner]\nkind = \"sftp\"\nhost = \"127.0.0.1\"\nport = {}\nuser = \"{}\"\nprivate_key = \"{}\"\nhost_key = \"{}\"\nfolder = \"incoming\"\n",
        sshd.port(),
        sshd.user(),
        sshd.client_key().display(),
        sshd.host_key()
    )
}

#[test]
fn an_export_is_pushed_whole_to_a_real_sshd_and_a_real_pure_ftpd_manifest_last() {
    let sshd = crate::sshd::Sshd::start();
    fs::create_dir_all(sshd.root().join("incoming")).unwrap();
    let sftp_destination = sftp_destination(&sshd);
    let ftpd = crate::ftpd::Ftpd::plain();
    let ftp_incoming = ftpd.folder("incoming");
    let ftp_destination = format!(
        "[destinations.partner]\nkind = \"ftp\"\nhost = \"127.0.0.1\"\nport = {}\nuser = \"{}\"\npassword_file = \"{}\"\ntls = \"none\"\ninsecure_plaintext = true\nfolder = \"incoming\"\n",
        ftpd.port(),
        crate::ftpd::USER,
        ftpd.password_file().display()
    );
    for (destination, incoming) in [
        (sftp_destination, sshd.root().join("incoming")),
        (ftp_destination, ftp_incoming),
    ] {
        let d = Deployment::with_config(&pushing_to(&destination));
        load(&d, "news2_a.csv", 3, 2, 0);
        let made = export(&d);
        let export_id = made["export_id"].as_str().unwrap();
        assert_eq!(made["pushed"][0]["error"], Value::Null, "{made}");
        let pushed = incoming.join(export_id);
        // The copy on the server checks with the stock tools, like the outbox's.
        let out = sha256sum_check(&pushed);
        assert!(out.status.success(), "{}", text(&out.stdout));
        assert!(
            ssh_keygen_verify(&allowed_signers(&d), &pushed, "manifest.json")
                .status
                .success()
        );
        assert!(
            file_names(&pushed).iter().all(|n| !n.ends_with(".part")),
            "{:?}",
            file_names(&pushed)
        );
        // Every file's delivery recorded; the manifest went last.
        let last: String = d.string(
            "SELECT name FROM delivery_events WHERE event = 'delivered' ORDER BY id DESC LIMIT 1",
        );
        assert_eq!(last, format!("{export_id}/manifest.json"));
        assert_eq!(
            d.count("SELECT count(*) FROM delivery_events WHERE event = 'delivered'"),
            8
        );
        assert_eq!(d.string("SELECT state FROM export_deliveries"), "delivered");
        let out = d.dg(&["schedules"]);
        assert!(
            text(&out.stdout).contains("push   partner: delivered"),
            "{}",
            text(&out.stdout)
        );
    }
}

#[test]
fn a_push_that_fails_is_recorded_and_the_export_stays_complete() {
    // A destination nothing listens on: the push gives up, the export stays complete.
    let port = crate::sshd::free_port();
    let destination = format!(
        "[destinations.partner]\nkind = \"sftp\"\nhost = \"127.0.0.1\"\nport = {port}\nuser = \"nobody\"\nprivate_key = \"keys/demo-carehome\"\nhost_key = \"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\"\nfolder = \"incoming\"\nattempts = 2\nretry_initial = \"50ms\"\ntimeout = \"2s\"\n"
    );
    let d = Deployment::with_config(&pushing_to(&destination));
    load(&d, "news2_a.csv", 2, 1, 0);
    let out = d.dg(&["export", "demo-nightly"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert!(
        text(&out.stdout).contains("NOT pushed"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(d.string("SELECT state FROM export_deliveries"), "failed");
    assert_eq!(
        d.count("SELECT count(*) FROM export_runs WHERE outcome = 'complete'"),
        1
    );
    assert!(d.count("SELECT count(*) FROM delivery_events WHERE event = 'gave_up'") >= 1);
}

#[test]
fn a_trend_export_holds_weekly_counts_without_identifiers_and_hides_small_numbers() {
    // The care home itself may have trend counts of its own data, and nothing else.
    let config = format!(
        "{}\n[grants.carehome-trend]\ncontroller = \"demo-controller\"\nconsumer = \"demo-carehome\"\nrecords = [\"trend\"]\npurpose = \"Service planning\"\nvalid_from = \"2026-01-01\"\n\n[schedules.carehome-trend]\nconsumer = \"demo-carehome\"\ncron = \"0 6 * * 1\"\nmode = \"snapshot\"\nformats = [\"csv\", \"fhir_ndjson\"]\nrecords = [\"trend\"]\n",
        fast(SHIPPED_CONFIG)
    );
    let d = Deployment::with_config(&config);
    load(&d, "news2_a.csv", 30, 5, 0);
    load(&d, "news2_b.csv", 12, 4, 100);
    let bad = d.write_input("news2_bad.csv", b"resident_id,nhs_number\nR1,123\n");
    let out = d.ingest(&[&bad]);
    assert_eq!(out.status.code(), Some(1));

    let out = d.dg(&["export", "carehome-trend", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stdout));
    let made: Value = serde_json::from_slice(&out.stdout).unwrap();
    let folder = folder(&made);
    assert_eq!(
        file_names(&folder)
            .iter()
            .filter(|n| n.ends_with(".ndjson") || n.ends_with(".csv"))
            .collect::<Vec<_>>(),
        ["trend.csv"]
    );
    let csv = fs::read_to_string(folder.join("trend.csv")).unwrap();
    // The Monday of the week the files were received in (UTC).
    let received: String = d.string("SELECT min(received_at) FROM files");
    let day = chrono::NaiveDate::parse_from_str(&received[..10], "%Y-%m-%d").unwrap();
    let monday = day
        - chrono::Duration::days(i64::from(
            chrono::Datelike::weekday(&day).num_days_from_monday(),
        ));
    let count = |measure: &str| -> String {
        let prefix = format!("{monday},demo-carehome,news2,{measure},");
        csv.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("no {measure} in\n{csv}"))
            .to_string()
    };
    assert!(csv.starts_with("week_start,partner,feed,measure,count\n"));
    assert_eq!(count("files_received"), "suppressed", "3 files");
    assert_eq!(count("files_quarantined"), "suppressed");
    assert_eq!(count("quarantined:validation_failed"), "suppressed");
    assert_eq!(count("rows_loaded"), "40", "42 rounded");
    assert_eq!(count("observations:heart_rate"), "40");
    assert_eq!(count("observations:diastolic_bp"), "0");
    // 42 sets of seven measurements and a total; the second file's four
    // residents are among the first's five.
    assert_eq!(count("records:observations"), "335", "336 rounded");
    assert_eq!(count("records:service_user"), "suppressed", "5");
    // No identifier of any kind: names, NHS numbers, local ids, dates of birth.
    for leak in ["Family", "Given", "R00", &nhs_number(1), "1940-01"] {
        assert!(!csv.contains(leak), "{leak} in\n{csv}");
    }
    // The grant gives the care home trend counts only.
    let refused = config.replace(
        "formats = [\"csv\", \"fhir_ndjson\"]\nrecords = [\"trend\"]",
        "formats = [\"csv\"]\nrecords = [\"trend\", \"observations\"]",
    );
    d.write_config(&refused);
    let out = d.dg(&["check-config"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("no grant gives `demo-carehome` `observations` records"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn an_export_placed_before_a_stop_is_still_finished_after_the_signing_key_is_replaced() {
    let d = Deployment::new();
    load(&d, "news2_a.csv", 2, 1, 0);
    let first = export(&d);
    let first_id = first["export_id"].as_str().unwrap().to_string();
    let old_line = fs::read(allowed_signers(&d)).unwrap();
    let old_signers = d.write_input("allowed_signers_before", &old_line);
    // As a stop leaves it between the move into the outbox and the ledger's commit.
    {
        let conn = rusqlite::Connection::open(d.path("spool/ledger.db")).unwrap();
        conn.execute_batch(
            "UPDATE export_runs SET ended_at = NULL, outcome = NULL, watermark_to = NULL, sets_to = NULL;
             DELETE FROM export_grants;",
        )
        .unwrap();
    }
    let out = d.dg(&["keygen", "--force"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let retired = fs::read_to_string(d.path("config/keys/signing_ed25519.retired")).unwrap();
    let old_key = fs::read_to_string(&old_signers).unwrap();
    let old_key: Vec<&str> = old_key.split_whitespace().collect();
    assert!(retired.contains(old_key[old_key.len() - 1]), "{retired}");

    let next = export(&d);
    // Signed by the retired key, it is still the daemon's own: finished, not set aside.
    assert_eq!(
        d.string(&format!(
            "SELECT outcome FROM export_runs WHERE export_id = '{first_id}'"
        )),
        "complete"
    );
    assert_eq!(next["manifest"]["output"], serde_json::json!([]));
    assert!(
        d.path(&format!("spool/outbox/demo-hospital/{first_id}"))
            .exists()
    );
    // The new export is signed by the new key, which the old line does not verify.
    let placed = folder(&next);
    let new_signers = allowed_signers(&d);
    assert!(
        ssh_keygen_verify(&new_signers, &placed, "manifest.json")
            .status
            .success()
    );
    assert!(
        !ssh_keygen_verify(&old_signers, &placed, "manifest.json")
            .status
            .success()
    );
}

#[test]
fn exports_killed_at_any_moment_leave_each_observation_in_exactly_one_complete_export() {
    let d = Deployment::new();
    load(&d, "news2_a.csv", 20_000, 200, 0);
    let total = d.count("SELECT count(*) FROM observation_records");
    // SIGKILL at several moments of a run; a few of them may finish first.
    for (round, delay_ms) in [30u64, 120, 250, 500, 900, 1500, 3000]
        .into_iter()
        .enumerate()
    {
        if round == 2 {
            // More to export, so later rounds have new loads to cover.
            load(&d, "news2_b.csv", 5_000, 50, 100_000);
        }
        let mut child = d
            .command(&["export", "demo-nightly"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill();
        child.wait().unwrap();
    }
    // The next run finishes or discards what the kills left, then exports the rest.
    export(&d);
    let total = total + 5_000 * 8;
    let outbox = d.path("spool/outbox/demo-hospital");
    let names = file_names(&outbox);
    assert!(
        names
            .iter()
            .all(|n| !n.starts_with('.') || n.ends_with(".damaged")),
        "{names:?}"
    );
    assert_eq!(
        d.count("SELECT count(*) FROM export_runs WHERE ended_at IS NULL"),
        0
    );
    // Complete runs cover the loads one after another, with no gap and no overlap.
    let conn = d.ledger();
    let mut stmt = conn
        .prepare(
            "SELECT export_id, watermark_from, watermark_to, sets_from, sets_to FROM export_runs
             WHERE outcome = 'complete' ORDER BY id",
        )
        .unwrap();
    let runs: Vec<(String, i64, i64, i64, i64)> = stmt
        .query_map([], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert!(!runs.is_empty());
    let mut exported = 0;
    let mut previous = (0, 0);
    for (export_id, from, to, sets_from, sets_to) in &runs {
        assert_eq!(
            (*from, *sets_from),
            previous,
            "{export_id} starts where the last ended"
        );
        previous = (*to, *sets_to);
        let folder = outbox.join(export_id);
        let out = d.dg(&["verify", folder.to_str().unwrap()]);
        assert!(out.status.success(), "{}", text(&out.stdout));
        if folder.join("Observation.ndjson").exists() {
            exported += fs::read_to_string(folder.join("Observation.ndjson"))
                .unwrap()
                .lines()
                .count() as i64;
        }
    }
    assert_eq!(exported, total, "every observation exactly once");
    // Every folder offered is a complete run's; nothing else is in the outbox.
    let offered: Vec<&String> = names.iter().filter(|n| !n.starts_with('.')).collect();
    assert_eq!(offered.len(), runs.len(), "{names:?}");
}

/// Another process (the stock `flock` tool) holding a lock in `spool/locks/`
/// until it is killed.
fn hold_lock(d: &Deployment, name: &str) -> std::process::Child {
    let lock = d.path("spool/locks").join(name);
    fs::create_dir_all(lock.parent().unwrap()).unwrap();
    // `-o`: the lock stays with `flock` itself, so killing it releases the lock.
    let holder = Command::new("flock")
        .arg("-o")
        .arg(&lock)
        .args(["sleep", "30"])
        .spawn()
        .expect("flock must be installed (scripts/test installs util-linux)");
    wait_for("the lock", Duration::from_secs(10), || {
        let probe = Command::new("flock")
            .arg("-n")
            .arg(&lock)
            .arg("true")
            .status()
            .unwrap();
        !probe.success()
    });
    holder
}

#[test]
fn a_run_another_process_is_making_is_neither_recovered_nor_repeated() {
    let d = Deployment::new();
    load(&d, "news2_a.csv", 2, 1, 0);
    // Another maker holds the schedule's lock, with its run begun but not ended.
    let mut holder = hold_lock(&d, "schedule-demo-nightly.lock");
    rusqlite::Connection::open(d.path("spool/ledger.db"))
        .unwrap()
        .execute(
            "INSERT INTO export_runs (schedule, consumer, manual, mode, started_at, watermark_from, sets_from, export_id)
             VALUES ('demo-nightly', 'demo-hospital', 1, 'incremental', '2026-12-03T01:30:00.000Z', 0, 0, 'elsewhere')",
            [],
        )
        .unwrap();
    let out = d.dg(&["export", "demo-nightly"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stdout));
    assert!(
        text(&out.stderr).contains("is being made by another process"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        d.count(
            "SELECT count(*) FROM export_runs WHERE ended_at IS NULL AND export_id = 'elsewhere'"
        ),
        1,
        "left to its maker"
    );
    // Once the holder is gone, its run is settled and the export made.
    holder.kill().unwrap();
    holder.wait().unwrap();
    let made = export(&d);
    assert_eq!(count_of(&made, "Observation.ndjson"), Some(2 * 8));
    assert_eq!(
        d.string("SELECT outcome FROM export_runs WHERE export_id = 'elsewhere'"),
        "interrupted"
    );
}

#[test]
fn a_push_waits_while_another_process_pushes() {
    let sshd = crate::sshd::Sshd::start();
    fs::create_dir_all(sshd.root().join("incoming")).unwrap();
    let destination = sftp_destination(&sshd);
    let d = Deployment::with_config(&pushing_to(&destination));
    load(&d, "news2_a.csv", 2, 1, 0);
    let mut holder = hold_lock(&d, "push.lock");
    let mut exporter = d
        .command(&["export", "demo-nightly"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("the export to be made", Duration::from_secs(10), || {
        d.count("SELECT count(*) FROM export_runs WHERE outcome = 'complete'") == 1
    });
    std::thread::sleep(Duration::from_millis(1000));
    assert!(
        exporter.try_wait().unwrap().is_none(),
        "finished while another process held the push lock"
    );
    assert_eq!(
        d.count("SELECT count(*) FROM delivery_events"),
        0,
        "pushed while another process held the push lock"
    );
    holder.kill().unwrap();
    holder.wait().unwrap();
    let out = exporter.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("another process is pushing exports"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(d.string("SELECT state FROM export_deliveries"), "delivered");
}

#[test]
fn an_export_is_sent_again_by_hand_only_while_it_verifies_and_its_grant_is_in_force() {
    let sshd = crate::sshd::Sshd::start();
    let incoming = sshd.root().join("incoming");
    fs::create_dir_all(&incoming).unwrap();
    let config = pushing_to(&sftp_destination(&sshd));
    let d = Deployment::with_config(&config);
    load(&d, "news2_a.csv", 3, 2, 0);
    let made = export(&d);
    let export_id = made["export_id"].as_str().unwrap().to_string();
    assert_eq!(made["pushed"][0]["error"], Value::Null, "{made}");
    // The consumer lost its copy: sent again, whole and verifiable.
    fs::remove_dir_all(incoming.join(&export_id)).unwrap();
    let out = d.dg(&["resend", &export_id]);
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).contains(&format!("{export_id}: pushed to partner")),
        "{}",
        text(&out.stdout)
    );
    assert!(sha256sum_check(&incoming.join(&export_id)).status.success());
    assert_eq!(
        d.count("SELECT count(*) FROM delivery_events WHERE event = 'delivered'"),
        16,
        "every file twice: once made, once sent again"
    );
    assert_eq!(
        d.count("SELECT count(*) FROM audit_events WHERE action = 'export_resend'"),
        1
    );
    // Only to the schedule's own destinations.
    let out = d.dg(&["resend", &export_id, "--to", "elsewhere"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("`elsewhere` is not a destination of schedule `demo-nightly`")
    );
    // Not once what it holds has changed.
    let observations = d
        .path("spool/outbox/demo-hospital")
        .join(&export_id)
        .join("Observation.ndjson");
    let original = fs::read(&observations).unwrap();
    fs::write(&observations, b"{}\n").unwrap();
    let out = d.dg(&["resend", &export_id]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("no longer verifies"),
        "{}",
        text(&out.stderr)
    );
    fs::write(&observations, original).unwrap();
    // Not once the grant it was made under has ended.
    d.write_config(&config.replace(
        "# valid_until = \"2027-12-31\"",
        "valid_until = \"2026-06-30\"",
    ));
    let out = d.dg(&["resend", &export_id]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("grant `demo-hospital-direct-care` is no longer in force"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        d.count("SELECT count(*) FROM audit_events WHERE action = 'export_resend'"),
        1
    );
}
