//! Retention: payloads and records past their days leave, the ledger's rows
//! and the trend counts stay, and a legal hold keeps what it covers.

use std::time::Duration;

use serde_json::Value;

use dropgate::records::trend::{Disclosure, TrendCount, counts};

use crate::harness::*;

/// Makes files look settled `days` ago, as the ledger writes times.
fn age(d: &Deployment, ids: &[i64], days: i64) {
    let conn = rusqlite::Connection::open(d.path("spool/ledger.db")).unwrap();
    let at = (chrono::Utc::now() - chrono::Duration::days(days))
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    for id in ids {
        conn.execute(
            "UPDATE files SET updated_at = ?2 WHERE id = ?1",
            rusqlite::params![id, at],
        )
        .unwrap();
    }
}

fn json(out: &std::process::Output) -> Value {
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn ingest_plain(d: &Deployment, name: &str, csv: &str) -> i64 {
    let plain = d.write_input(name, csv.as_bytes());
    let out = d.ingest(&[&d.encrypt(&plain, false)]);
    assert!(out.status.success() || out.status.code() == Some(1));
    d.files().last().unwrap()["id"].as_i64().unwrap()
}

fn spool_names(d: &Deployment, area: &str) -> Vec<String> {
    file_names(&d.path(&format!("spool/{area}")))
}

fn spool_name(d: &Deployment, id: i64) -> String {
    d.string(&format!("SELECT spool_name FROM files WHERE id = {id}"))
}

/// Whether a file's bytes are still kept: in the spool, or in the ledger
/// (a small file's).
fn payload_kept(d: &Deployment, id: i64) -> bool {
    let name = spool_name(d, id);
    d.count(&format!(
        "SELECT count(*) FROM held_payloads WHERE file_id = {id}"
    )) == 1
        || ["archive", "quarantine"]
            .iter()
            .any(|area| d.path(&format!("spool/{area}/{name}")).exists())
}

#[test]
fn purge_deletes_payloads_and_receipts_past_retention_keeps_rows_and_honours_holds() {
    let d = Deployment::new();
    // Large enough to be kept in the spool; the others' bytes are kept in
    // the ledger, but the quarantined one's.
    let old = ingest_plain(&d, "news2_old.csv", &news2_csv(1000, 2, 0));
    let bad = ingest_plain(
        &d,
        "news2_bad.csv",
        &format!(
            "{HEADER}\nR0001,123,Smith,Ann,1940-02-03,2,2026-11-22T08:00:00Z,18,96,N,120,72,A,36.8\n"
        ),
    );
    let held = ingest_plain(&d, "news2_held.csv", &news2_csv(3, 2, 10));
    let new = ingest_plain(&d, "news2_new.csv", &news2_csv(3, 2, 20));
    // The daemon writes the receipts of files settled by `ingest`.
    let daemon = d.start();
    wait_for("four receipts", Duration::from_secs(30), || {
        std::fs::read_dir(d.path("spool/receipts/demo-carehome")).is_ok_and(|names| {
            names
                .filter(|n| {
                    n.as_ref()
                        .unwrap()
                        .file_name()
                        .to_string_lossy()
                        .ends_with(".receipt.json")
                })
                .count()
                == 4
        })
    });
    daemon.terminate();
    assert_eq!(
        d.files()
            .iter()
            .map(|f| f["state"].clone())
            .collect::<Vec<_>>(),
        ["loaded", "quarantined", "loaded", "loaded"]
    );
    let names: Vec<String> = [old, bad, held, new]
        .iter()
        .map(|&id| spool_name(&d, id))
        .collect();
    assert!(spool_names(&d, "quarantine").contains(&format!("{}.report.json", names[1])));
    age(&d, &[old, bad, held], 91);
    age(&d, &[new], 89);

    let out = d.dg(&[
        "hold",
        "--file",
        &held.to_string(),
        "--reason",
        "complaint 118",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "hold 1 placed");

    // A dry run counts and deletes nothing.
    assert!(spool_names(&d, "archive").contains(&names[0]));
    assert!(spool_names(&d, "quarantine").contains(&names[1]));
    let dry = json(&d.dg(&["purge", "--dry-run", "--json"]));
    assert_eq!(dry["payloads"], 2, "{dry}");
    assert_eq!(dry["receipts"], 2, "{dry}");
    assert_eq!(dry["held"], 1, "{dry}");
    for id in [old, bad, held, new] {
        assert!(payload_kept(&d, id), "a dry run deletes nothing");
    }
    assert!(d.files().iter().all(|f| f["payload_purged_at"].is_null()));

    let done = json(&d.dg(&["purge", "--json"]));
    assert_eq!(done["payloads"], 2, "{done}");
    assert_eq!(done["receipts"], 2, "{done}");
    assert_eq!(done["held"], 1, "{done}");
    assert!(!payload_kept(&d, old) && !payload_kept(&d, bad));
    assert!(payload_kept(&d, held) && payload_kept(&d, new));
    assert!(spool_names(&d, "quarantine").is_empty(), "report gone too");
    assert_eq!(
        file_names(&d.path("spool/receipts/demo-carehome")),
        [
            "news2_held.csv.age.receipt.json",
            "news2_new.csv.age.receipt.json"
        ]
    );
    // The ledger keeps the rows, with their hashes, and says what went.
    let files = d.files();
    for f in &files {
        assert_eq!(f["sha256"].as_str().unwrap().len(), 64);
        let purged = [old, bad].contains(&f["id"].as_i64().unwrap());
        assert_eq!(!f["payload_purged_at"].is_null(), purged, "{f}");
    }
    // A loaded file's records are not touched by a payload purge.
    assert_eq!(files[0]["records"], 2 + 1000 * 8);
    assert_eq!(
        d.count(&format!(
            "SELECT count(*) FROM observation_sets WHERE file_id = {old}"
        )),
        1000
    );
    let events: Vec<String> = d.show(old)["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(events.last().unwrap(), "payload_purged", "{events:?}");
    let out = d.dg(&["payload", &old.to_string()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("purged at"),
        "{}",
        text(&out.stderr)
    );
    let out = d.dg(&["replay", &bad.to_string()]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("past its retention"),
        "{}",
        text(&out.stderr)
    );

    let status = json(&d.dg(&["status", "--json"]));
    assert_eq!(status["retention"]["holds"], 1, "{status}");
    assert!(
        status["retention"]["last_deleted_at"].is_string(),
        "{status}"
    );
    // Nothing more is due: a second purge deletes nothing.
    assert_eq!(json(&d.dg(&["purge", "--json"]))["payloads"], 0);

    // Released, the held file goes at the next purge.
    let out = d.dg(&["holds"]);
    assert!(
        text(&out.stdout).contains(&format!("file {held}")),
        "{}",
        text(&out.stdout)
    );
    let out = d.dg(&["release", "1", "--reason", "complaint 118 closed"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        d.dg(&["release", "1", "--reason", "again"]).status.code(),
        Some(1)
    );
    assert_eq!(json(&d.dg(&["purge", "--json"]))["payloads"], 1);
    assert!(!payload_kept(&d, held) && payload_kept(&d, new));

    let actions: Vec<String> = audit_actions(&d).into_iter().map(|a| a.0).collect();
    for action in ["hold_placed", "purge", "hold_released"] {
        assert!(actions.iter().any(|a| a == action), "{actions:?}");
    }
    let purges = d.strings("SELECT detail FROM audit_events WHERE action = 'purge'");
    assert_eq!(purges.len(), 2, "{purges:?}");
    let first: Value = serde_json::from_str(&purges[0]).unwrap();
    assert_eq!(first["files"], 2);
    assert_eq!(first["first_file"], old);
    assert_eq!(first["last_file"], bad);
    let out = d.dg(&["audit", "verify"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn a_partner_hold_keeps_its_files_and_a_feed_may_keep_payloads_longer() {
    let config =
        fast(SHIPPED_CONFIG).replace("[feeds.news2]\n", "[feeds.news2]\nretention_days = 120\n");
    let d = Deployment::with_config(&config);
    let a = ingest_plain(&d, "news2_a.csv", &news2_csv(2, 1, 0));
    let b = ingest_plain(&d, "news2_b.csv", &news2_csv(2, 1, 5));
    age(&d, &[a], 100);
    age(&d, &[b], 130);
    let out = d.dg(&["check-config"]);
    assert!(
        text(&out.stdout).contains("keeps payloads 120 days, records for ever"),
        "{}",
        text(&out.stdout)
    );
    let out = d.dg(&[
        "hold",
        "--partner",
        "demo-carehome",
        "--reason",
        "inquiry 7",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report = json(&d.dg(&["purge", "--json"]));
    assert_eq!(
        (report["payloads"].as_u64(), report["held"].as_u64()),
        (Some(0), Some(1))
    );
    let out = d.dg(&["hold", "--partner", "nobody", "--reason", "x"]);
    assert_eq!(out.status.code(), Some(1));
    // A reason is for the audit trail: never an NHS number.
    let out = d.dg(&["hold", "--file", &a.to_string(), "--reason", &nhs_number(5)]);
    assert_eq!(out.status.code(), Some(2));
    d.dg(&["release", "1", "--reason", "inquiry 7 closed"]);
    // 100 days is within the feed's 120; 130 is not.
    let report = json(&d.dg(&["purge", "--json"]));
    assert_eq!(report["payloads"], 1, "{report}");
    let purged: Vec<i64> = d
        .files()
        .iter()
        .filter(|f| !f["payload_purged_at"].is_null())
        .map(|f| f["id"].as_i64().unwrap())
        .collect();
    assert_eq!(purged, [b]);
}

fn trend(d: &Deployment) -> Vec<TrendCount> {
    let exact = Disclosure {
        suppress_below: 0,
        round_to: 1,
    };
    counts(&d.ledger(), &|_, _| true, exact).unwrap()
}

#[test]
fn record_retention_deletes_records_and_keeps_their_trend_counts() {
    let config = fast(SHIPPED_CONFIG).replace(
        "[feeds.news2]\n",
        "[feeds.news2]\nrecord_retention_days = 30\n",
    );
    let d = Deployment::with_config(&config);
    // Residents 1 and 3 in the newer file; 1 and 2 in the older, loaded
    // second so that it last wrote resident 1's details.
    let rows = |residents: [u32; 2], from: u32| {
        let mut csv = format!("{HEADER}\n");
        for (i, r) in residents.iter().enumerate() {
            csv.push_str(&news2_row(*r, from + i as u32));
            csv.push('\n');
        }
        csv
    };
    let newer = ingest_plain(&d, "news2_newer.csv", &rows([1, 3], 100));
    let older = ingest_plain(&d, "news2_older.csv", &rows([1, 2], 0));
    age(&d, &[older], 31);
    age(&d, &[newer], 29);
    let before = trend(&d);
    let persons = d.count("SELECT count(*) FROM persons");
    assert_eq!(persons, 3);

    let loaded = d.count(&format!("SELECT records FROM files WHERE id = {older}"));
    assert!(loaded > 2 * 7, "{loaded}");
    let dry = json(&d.dg(&["purge", "--dry-run", "--json"]));
    assert_eq!(
        (dry["record_files"].as_i64(), dry["records"].as_i64()),
        (Some(1), Some(loaded))
    );
    assert_eq!(d.count("SELECT count(*) FROM observation_sets"), 4);
    let versions = d.count(&format!(
        "SELECT count(*) FROM service_user_versions WHERE file_id = {older}"
    ));
    assert!(
        versions >= 1,
        "resident 2's details are a version of the older file"
    );

    let done = json(&d.dg(&["purge", "--json"]));
    assert_eq!(done["record_files"], 1, "{done}");
    assert_eq!(done["records"], loaded, "{done}");
    // Two observation sets, the versions of details, and resident 2;
    // resident 1's details stay, as the newer file's sets are theirs.
    let audited: Value =
        serde_json::from_str(&d.string("SELECT detail FROM audit_events WHERE action = 'purge'"))
            .unwrap();
    assert_eq!(audited["rows"], 2 + versions + 1, "{audited}");
    assert_eq!(
        d.count(&format!(
            "SELECT count(*) FROM observation_sets WHERE file_id = {older}"
        )),
        0
    );
    assert_eq!(d.count("SELECT count(*) FROM observation_sets"), 2);
    assert_eq!(
        d.strings("SELECT local_id FROM service_users ORDER BY local_id"),
        ["R0001", "R0003"]
    );
    assert_eq!(d.count("SELECT count(*) FROM persons"), 2);
    assert_eq!(
        d.count(&format!(
            "SELECT count(*) FROM service_users WHERE nhs_number = '{}'",
            nhs_number(2)
        )),
        0
    );
    // The trend is the same figures, now partly from the counts kept.
    assert_eq!(trend(&d), before);
    assert!(d.count("SELECT count(*) FROM kept_counts") > 0);
    let older_row = d.files().into_iter().find(|f| f["id"] == older).unwrap();
    assert!(!older_row["records_purged_at"].is_null());
    assert_eq!(older_row["records"], loaded, "the file's own counts stay");
    // Nothing identifying in what the purge audited.
    let audited = d
        .strings("SELECT detail FROM audit_events WHERE action = 'purge'")
        .join("\n");
    for leak in [
        nhs_number(1),
        nhs_number(2),
        "Family2".into(),
        "1940-01".into(),
    ] {
        assert!(!audited.contains(&leak), "{audited}");
    }
    assert_eq!(json(&d.dg(&["purge", "--json"]))["record_files"], 0);
}

#[test]
fn the_daemon_purges_at_its_purge_time() {
    let config = fast(SHIPPED_CONFIG).replace(
        "purge_cron = \"30 2 * * *\"",
        "purge_cron = \"*/2 * * * * *\"",
    );
    let d = Deployment::with_config(&config);
    let id = ingest_plain(&d, "news2_a.csv", &news2_csv(2, 1, 0));
    age(&d, &[id], 95);
    let daemon = d.start();
    wait_for("the purge", Duration::from_secs(30), || {
        d.count(&format!(
            "SELECT count(*) FROM files WHERE id = {id} AND payload_purged_at IS NOT NULL"
        )) == 1
    });
    let log = daemon.terminate();
    assert!(log.contains("purged what is past retention"), "{log}");
    assert!(!payload_kept(&d, id));
    let detail: Value =
        serde_json::from_str(&d.string("SELECT detail FROM audit_events WHERE action = 'purge'"))
            .unwrap();
    assert_eq!(detail["by"], "daemon");
}

#[test]
fn an_export_folder_goes_after_its_consumers_days_unless_held() {
    let config = fast(SHIPPED_CONFIG).replace(
        "[partners.demo-hospital]\n",
        "[partners.demo-hospital]\nretention_days = 10\n",
    );
    let d = Deployment::with_config(&config);
    let mut folders = Vec::new();
    for seed in [0, 10] {
        ingest_plain(&d, &format!("news2_{seed}.csv"), &news2_csv(2, 1, seed));
        let made = json(&d.dg(&["export", "demo-nightly", "--json"]));
        folders.push(std::path::PathBuf::from(made["folder"].as_str().unwrap()));
    }
    assert!(folders.iter().all(|f| f.is_dir()));
    let conn = rusqlite::Connection::open(d.path("spool/ledger.db")).unwrap();
    for (id, days) in [(1, 11), (2, 9)] {
        let at = (chrono::Utc::now() - chrono::Duration::days(days))
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        conn.execute(
            "UPDATE export_runs SET ended_at = ?2 WHERE id = ?1",
            rusqlite::params![id, at],
        )
        .unwrap();
    }
    drop(conn);
    let out = d.dg(&["hold", "--partner", "demo-hospital", "--reason", "audit 3"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report = json(&d.dg(&["purge", "--json"]));
    assert_eq!(
        (report["exports"].as_u64(), report["held"].as_u64()),
        (Some(0), Some(1))
    );
    assert!(folders[0].is_dir());
    d.dg(&["release", "1", "--reason", "audit 3 done"]);
    let report = json(&d.dg(&["purge", "--json"]));
    assert_eq!(report["exports"], 1, "{report}");
    // The files the care home sent are within the default 90 days.
    assert_eq!(report["payloads"], 0, "{report}");
    assert!(!folders[0].exists() && folders[1].is_dir());
    assert_eq!(
        d.count("SELECT count(*) FROM export_runs WHERE payload_purged_at IS NOT NULL AND id = 1"),
        1
    );
    let export_id = folders[0].file_name().unwrap().to_str().unwrap();
    let out = d.dg(&["resend", export_id]);
    assert!(!out.status.success());
    let out = d.dg(&["schedules"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // The run's record, with its manifest's hash, stays.
    assert_eq!(
        d.string("SELECT manifest_sha256 FROM export_runs WHERE id = 1")
            .len(),
        64
    );
}
