//! Receipts: every file a partner sends is answered with a receipt it can
//! read, on the SFTP server and in a folder, with no identifier in it.

use std::fs;
use std::time::Duration;

use serde_json::Value;

use crate::harness::*;

fn receipt(d: &Deployment, name: &str) -> Option<Value> {
    let path = d.path(&format!("spool/receipts/demo-carehome/{name}.receipt.json"));
    fs::read(path)
        .ok()
        .map(|b| serde_json::from_slice(&b).unwrap())
}

#[test]
fn every_file_gets_a_receipt_the_partner_fetches_over_sftp_without_identifiers() {
    let copies = "../spool/receipts-copy/demo-carehome";
    let config = fast(SHIPPED_CONFIG).replace(
        &format!("# folder = \"{copies}\""),
        &format!("folder = \"{copies}\""),
    );
    let d = Deployment::with_config(&config);
    let daemon = d.start();
    let port = daemon.sftp_port();
    // A wrong check digit: the receipt says where, never what.
    let wrong = "9434765918";
    let bad = format!(
        "{HEADER}\nR0001,{wrong},Smith,Ann,1940-02-03,2,2026-11-22T08:00:00Z,18,96,N,120,72,A,36.8\n"
    );
    let bad_path = d.write_input("news2_bad.csv", bad.as_bytes());
    let good_path = d.write_input("news2_good.csv", news2_csv(3, 2, 0).as_bytes());
    let out = sftp(
        &d,
        port,
        &demo_key(&d),
        &format!(
            "put {} inbox/news2_bad.csv\nput {} inbox/news2_good.csv\n",
            bad_path.display(),
            good_path.display()
        ),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    wait_for("both receipts", Duration::from_secs(30), || {
        receipt(&d, "news2_bad.csv").is_some() && receipt(&d, "news2_good.csv").is_some()
    });

    let bad = receipt(&d, "news2_bad.csv").unwrap();
    assert_eq!(bad["state"], "quarantined");
    assert_eq!(bad["reason"], "validation_failed");
    assert_eq!(
        bad["rows"],
        serde_json::json!({"read": 1, "loaded": 0, "rejected": 1})
    );
    let problem = &bad["problems"][0];
    assert_eq!(problem["line"], 2);
    assert_eq!(problem["column"], "nhs_number");
    assert_eq!(problem["code"], "nhs_number_check_digit");
    assert_eq!(problem["field"], 2);
    let text_of_receipt = bad.to_string();
    for leak in [wrong, "Smith", "1940-02-03"] {
        assert!(
            !text_of_receipt.contains(leak),
            "{leak} in {text_of_receipt}"
        );
    }
    let good = receipt(&d, "news2_good.csv").unwrap();
    assert_eq!(good["state"], "loaded");
    assert_eq!(
        good["rows"],
        serde_json::json!({"read": 3, "loaded": 3, "rejected": 0})
    );
    assert_eq!(good["sha256"], sha256_hex(news2_csv(3, 2, 0).as_bytes()));
    assert_eq!(good["problems"], serde_json::json!([]));

    // The partner reads its receipts with stock sftp; it cannot write there.
    let fetched = d.path("fetched");
    fs::create_dir_all(&fetched).unwrap();
    let out = sftp(
        &d,
        port,
        &demo_key(&d),
        &format!(
            "ls receipts\nget receipts/news2_bad.csv.receipt.json {}\n",
            fetched.display()
        ),
    );
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let got: Value =
        serde_json::from_slice(&fs::read(fetched.join("news2_bad.csv.receipt.json")).unwrap())
            .unwrap();
    assert_eq!(got, bad);
    let out = sftp(
        &d,
        port,
        &demo_key(&d),
        &format!("put {} receipts/forged.receipt.json\n", good_path.display()),
    );
    assert!(!out.status.success());
    // The copy in the configured folder, and the file's history.
    assert!(
        d.path("spool/receipts-copy/demo-carehome/news2_good.csv.receipt.json")
            .exists()
    );
    let id = good["file_id"].as_i64().unwrap();
    let events = d.show(id)["events"].clone();
    assert!(
        events
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["event"] == "receipt_written"),
        "{events}"
    );
    daemon.terminate();
}

#[test]
fn a_receipt_a_stop_left_unwritten_is_written_at_the_next_start() {
    let d = Deployment::new();
    // Processed without the daemon: no receipt yet.
    let file = d.write_input("news2_offline.csv", news2_csv(2, 1, 0).as_bytes());
    assert!(d.ingest(&[&file]).status.success());
    assert!(receipt(&d, "news2_offline.csv").is_none());
    let daemon = d.start();
    wait_for("the receipt", Duration::from_secs(30), || {
        receipt(&d, "news2_offline.csv").is_some()
    });
    daemon.terminate();
    assert_eq!(
        d.count("SELECT count(*) FROM file_events WHERE event = 'receipt_written'"),
        1
    );
}

#[test]
fn receipts_not_yet_pushed_are_pushed_from_the_ledger_once_a_destination_takes_them() {
    let d = Deployment::new();
    let file = d.write_input("news2_waiting.csv", news2_csv(2, 1, 0).as_bytes());
    assert!(d.ingest(&[&file]).status.success());
    // Written while the care home had no destination for receipts.
    let daemon = d.start();
    wait_for("the receipt", Duration::from_secs(30), || {
        receipt(&d, "news2_waiting.csv").is_some()
    });
    daemon.terminate();
    // Now it has one: a real sshd. The receipt still owed is pushed at start.
    let sshd = crate::sshd::Sshd::start();
    fs::create_dir_all(sshd.root().join("incoming")).unwrap();
    let config = format!(
        "{}\n[destinations.carehome-sftp]\nkind = \"sftp\"\nhost = \"127.0.0.1\"\nport = {}\nuser = \"{}\"\nprivate_key = \"{}\"\nhost_key = \"{}\"\nfolder = \"incoming\"\n",
        fast(SHIPPED_CONFIG).replace(
            "# destination = \"carehome-sftp\"",
            "destination = \"carehome-sftp\""
        ),
        sshd.port(),
        sshd.user(),
        sshd.client_key().display(),
        sshd.host_key()
    );
    assert!(config.contains("\ndestination = \"carehome-sftp\""));
    d.write_config(&config);
    let pushed = sshd.root().join("incoming/news2_waiting.csv.receipt.json");
    let daemon = d.start();
    wait_for("the pushed receipt", Duration::from_secs(30), || {
        pushed.exists()
    });
    std::thread::sleep(Duration::from_millis(2500));
    daemon.terminate();
    let sent: Value = serde_json::from_slice(&fs::read(&pushed).unwrap()).unwrap();
    assert_eq!(sent["name"], "news2_waiting.csv");
    assert_eq!(sent["state"], "loaded");
    assert_eq!(
        d.count(
            "SELECT count(*) FROM delivery_events
             WHERE event = 'delivered' AND destination = 'carehome-sftp'
               AND name = 'news2_waiting.csv.receipt.json'"
        ),
        1,
        "pushed once, not again every pass"
    );
    // The staging copy is gone; the partner's own receipt stays.
    assert!(
        file_names(&d.path("spool/receipts/demo-carehome"))
            .iter()
            .all(|n| !n.ends_with(".push")),
    );
}
