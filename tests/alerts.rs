//! Alerts from a running daemon: a file that did not come by its time is
//! raised, sent to the configured command as JSON, shown by `status` and
//! `dropgate alerts`, and cleared when a file comes.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use serde_json::Value;

use crate::harness::*;

/// Every alert the command was given, in order.
fn sent(d: &Deployment) -> Vec<Value> {
    std::fs::read_to_string(d.path("alerts.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[test]
fn a_file_that_did_not_come_is_raised_sent_to_the_command_shown_and_cleared_when_one_comes() {
    let d = Deployment::new();
    let script = d.path("alert-command");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\ncat >> {0}\necho >> {0}\n",
            d.path("alerts.jsonl").display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    // Every second a deadline, each wanting a file within the two seconds before.
    d.write_config(&format!(
        "{}\n[feeds.news2.expect]\narrives_by = \"* * * * * *\"\nwithin = \"2s\"\n\n[alerts]\ncommand = [\"{}\"]\n",
        fast(SHIPPED_CONFIG),
        script.display()
    ));
    let check = d.dg(&["check-config"]);
    assert!(check.status.success(), "{}", text(&check.stderr));
    let daemon = d.start();
    wait_for("the alert sent", Duration::from_secs(15), || {
        !sent(&d).is_empty()
    });
    let raised = &sent(&d)[0];
    assert_eq!(raised["feed"], "news2");
    assert_eq!(raised["kind"], "file_missing");
    assert_eq!(raised["event"], "raised");
    assert!(raised["detail"]["deadline"].is_string());

    let out = d.dg(&["alerts", "--json"]);
    assert_eq!(out.status.code(), Some(1), "an active alert is exit 1");
    let active: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(active["id"], raised["id"]);
    let status: Value = serde_json::from_slice(&d.dg(&["status", "--json"]).stdout).unwrap();
    assert_eq!(status["alerts"][0]["kind"], "file_missing");
    assert!(text(&d.dg(&["status"]).stdout).contains("ALERTS:"));

    d.drop_file("news2_late.csv", news2_csv(3, 2, 0).as_bytes());
    wait_for("the alert cleared", Duration::from_secs(15), || {
        sent(&d).iter().any(|a| a["event"] == "cleared")
    });
    let cleared = sent(&d)
        .into_iter()
        .find(|a| a["event"] == "cleared")
        .unwrap();
    assert_eq!(cleared["kind"], "file_missing");
    assert_eq!(
        cleared["detail"]["file_id"],
        d.count("SELECT id FROM files WHERE name = 'news2_late.csv'")
    );
    let log = daemon.terminate();
    assert!(log.contains("alert raised"), "{log}");
    // What the ledger kept matches what was sent.
    let history: Vec<Value> = text(&d.dg(&["alerts", "--history", "1000", "--json"]).stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut sent_ids: Vec<i64> = sent(&d).iter().map(|a| a["id"].as_i64().unwrap()).collect();
    let mut kept_ids: Vec<i64> = history.iter().map(|a| a["id"].as_i64().unwrap()).collect();
    sent_ids.sort();
    kept_ids.sort();
    assert_eq!(sent_ids, kept_ids);
}
