//! Routes: files of a feed forwarded to a real server as they load, under a
//! grant in force, encrypted to the route's recipient, once.

use std::fs;
use std::process::Command;
use std::time::Duration;

use crate::harness::*;
use crate::sshd::Sshd;

/// The shipped config with destination `hospital` (the given sshd) and
/// route `to-hospital` of feed news2, encrypted to the recipient in `recipient_file`.
fn routed(server: &Sshd, recipient_file: &str, grant_until: Option<&str>) -> String {
    let mut config = fast(SHIPPED_CONFIG);
    if let Some(until) = grant_until {
        config = config.replace(
            "# valid_until = \"2027-12-31\"",
            &format!("valid_until = \"{until}\""),
        );
    }
    format!(
        "{config}\n[destinations.hospital]\nkind = \"sftp\"\nhost = \"127.0.0.1\"\nport = {}\nuser = \"{}\"\nprivate_key = \"{}\"\nhost_key = \"{}\"\nfolder = \"incoming\"\nattempts = 2\nretry_initial = \"100ms\"\n\n[routes.to-hospital]\nfeed = \"news2\"\ndestination = \"hospital\"\nconsumer = \"demo-hospital\"\nencrypt_to = [\"{recipient_file}\"]\n",
        server.port(),
        server.user(),
        server.client_key().display(),
        server.host_key()
    )
}

/// An identity made by the stock `age-keygen`; returns (identity path, recipient file path).
fn age_keygen(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let identity = dir.join("hospital-age.txt");
    let out = Command::new("age-keygen")
        .arg("-o")
        .arg(&identity)
        .output()
        .expect("age-keygen must be installed (scripts/test installs age)");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let recipient = Command::new("age-keygen")
        .arg("-y")
        .arg(&identity)
        .output()
        .unwrap();
    let recipient_file = dir.join("hospital-age.pub");
    fs::write(&recipient_file, &recipient.stdout).unwrap();
    (identity, recipient_file)
}

fn route_state(d: &Deployment, file_id: i64) -> Option<String> {
    d.ledger()
        .query_row(
            "SELECT state FROM route_deliveries WHERE file_id = ?1",
            [file_id],
            |r| r.get(0),
        )
        .ok()
}

#[test]
fn loaded_files_are_forwarded_encrypted_to_the_routes_recipient_and_nothing_else() {
    let server = Sshd::start();
    let incoming = server.root().join("incoming");
    fs::create_dir_all(&incoming).unwrap();
    let keys = tempfile::tempdir().unwrap();
    let (identity, recipient_file) = age_keygen(keys.path());
    let d = Deployment::with_config(&routed(&server, recipient_file.to_str().unwrap(), None));

    // Loaded before the route was ever running: history is not the route's to send.
    let before = d.write_input("news2_before.csv", news2_csv(2, 1, 0).as_bytes());
    assert!(d.ingest(&[&before]).status.success());
    let daemon = d.start();

    let body = news2_csv(3, 2, 10);
    let plain = d.write_input("news2_routed.csv", body.as_bytes());
    let sealed = d.encrypt(&plain, false);
    d.drop_file("news2_routed.csv.age", &fs::read(&sealed).unwrap());
    d.drop_file("news2_bad.csv", b"resident_id,nhs_number\nR1,123\n");
    wait_for("both files to be settled", Duration::from_secs(30), || {
        d.count("SELECT count(*) FROM files WHERE state <> 'received'") == 3
    });
    // Landed in one batch, the two dropped files may take either id.
    let id = d.count("SELECT id FROM files WHERE name = 'news2_routed.csv.age'");
    let sent = format!("news2-{id}.csv.age");
    wait_for("the routed file", Duration::from_secs(30), || {
        route_state(&d, id).as_deref() == Some("delivered")
    });
    // Sent under dropgate's name, encrypted to the hospital: the stock tool opens it.
    assert_eq!(file_names(&incoming), [sent.as_str()]);
    let out = Command::new("age")
        .args(["-d", "-i"])
        .arg(&identity)
        .arg(incoming.join(&sent))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), body, "the plaintext the care home sent");
    // The file loaded before the route, and the quarantined one, are not forwarded.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(route_state(&d, 1), None);
    let bad = d.count("SELECT id FROM files WHERE state = 'quarantined'");
    assert_eq!(route_state(&d, bad), None);
    assert_eq!(file_names(&incoming), [sent.as_str()]);

    let shown = d.show(id);
    assert_eq!(shown["routes"][0]["state"], "delivered");
    // `files` says how each file's forwardings stand; a file not routed has none.
    let listed = d.files();
    let forwarded = |id: i64| {
        listed
            .iter()
            .find(|f| f["id"] == id)
            .map(|f| f["forwarded"].clone())
            .unwrap()
    };
    assert_eq!(forwarded(id), serde_json::json!({ "delivered": 1 }));
    assert_eq!(forwarded(bad), serde_json::Value::Null);
    let out = d.dg(&["files"]);
    let line = text(&out.stdout)
        .lines()
        .find(|l| l.trim_start().starts_with(&format!("{id} ")))
        .map(str::to_string)
        .unwrap();
    assert!(line.contains(" delivered "), "{line}");
    assert_eq!(shown["routes"][0]["grant"], "demo-hospital-direct-care");
    assert_eq!(
        d.count(&format!(
            "SELECT count(*) FROM delivery_events WHERE file_id = {id} AND event = 'delivered'"
        )),
        1
    );
    assert!(
        audit_actions(&d)
            .iter()
            .any(|(a, _, file)| a == "route" && *file == Some(id))
    );
    // The grant's last use is this forwarding: no export has been made.
    let out = d.dg(&["grants", "--json"]);
    let grant: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(grant["last_used"], shown["routes"][0]["updated_at"]);

    // As a stop leaves a forwarding it interrupted: sent at the next start, once.
    daemon.terminate();
    fs::remove_file(incoming.join(&sent)).unwrap();
    rusqlite::Connection::open(d.path("spool/ledger.db"))
        .unwrap()
        .execute("UPDATE route_deliveries SET state = 'pending'", [])
        .unwrap();
    let daemon = d.start();
    wait_for("the pending forwarding", Duration::from_secs(30), || {
        route_state(&d, id).as_deref() == Some("delivered")
    });
    daemon.terminate();
    assert_eq!(file_names(&incoming), [sent.as_str()]);
    assert!(
        fs::read_dir(d.path("spool/routing"))
            .unwrap()
            .next()
            .is_none(),
        "no decrypted copy left"
    );
}

#[test]
fn a_route_whose_grant_has_expired_forwards_nothing_and_says_why() {
    let server = Sshd::start();
    let incoming = server.root().join("incoming");
    fs::create_dir_all(&incoming).unwrap();
    let keys = tempfile::tempdir().unwrap();
    let (_, recipient_file) = age_keygen(keys.path());
    let config = routed(
        &server,
        recipient_file.to_str().unwrap(),
        Some("2026-01-31"),
    );
    let d = Deployment::with_config(&config);
    let daemon = d.start();
    d.drop_file("news2_x.csv", news2_csv(2, 1, 0).as_bytes());
    wait_for("the refusal", Duration::from_secs(30), || {
        route_state(&d, 1).as_deref() == Some("refused")
    });
    daemon.terminate();
    assert!(file_names(&incoming).is_empty());
    assert_eq!(
        d.files()[0]["forwarded"],
        serde_json::json!({ "refused": 1 })
    );
    let out = d.dg(&["status"]);
    assert!(
        text(&out.stdout).contains("forwarded:\n  to-hospital              refused    1"),
        "{}",
        text(&out.stdout)
    );
    assert!(
        audit_actions(&d)
            .iter()
            .any(|(a, _, _)| a == "route_refused")
    );
    let out = d.dg(&["show", "1"]);
    assert!(
        text(&out.stdout)
            .contains("no grant in force gives `demo-hospital` the files of feed `news2`"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn check_config_refuses_a_route_no_grant_allows() {
    let server = Sshd::start();
    let config = routed(
        &server,
        "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p",
        None,
    )
    .replace(
        "consumer = \"demo-hospital\"\nencrypt_to",
        "consumer = \"demo-carehome\"\nencrypt_to",
    );
    let d = Deployment::new();
    d.write_config(&config);
    let out = d.dg(&["check-config"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains(
            "route `to-hospital`: no grant gives `demo-carehome` the files of feed `news2`"
        ),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_route_without_recipients_sends_the_plaintext_and_never_writes_it_to_disk() {
    use notify::Watcher;
    let server = Sshd::start();
    let incoming = server.root().join("incoming");
    fs::create_dir_all(&incoming).unwrap();
    let config = routed(&server, "unused", None);
    let config = config.replace("encrypt_to = [\"unused\"]\n", "");
    let d = Deployment::with_config(&config);

    // Every file made anywhere in the spool while the daemon runs.
    let made = std::sync::Arc::new(std::sync::Mutex::new(Vec::<std::path::PathBuf>::new()));
    let seen = made.clone();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event
            && matches!(event.kind, notify::EventKind::Create(_))
        {
            seen.lock().unwrap().extend(event.paths);
        }
    })
    .unwrap();
    watcher
        .watch(&d.path("spool"), notify::RecursiveMode::Recursive)
        .unwrap();
    let daemon = d.start();

    // One small enough to be kept in the ledger, one kept in the spool.
    let bodies = [news2_csv(3, 2, 10), news2_csv(3000, 40, 100)];
    for (i, body) in bodies.iter().enumerate() {
        let plain = d.write_input(&format!("news2_plain{i}.csv"), body.as_bytes());
        let sealed = d.encrypt(&plain, false);
        d.drop_file(
            &format!("news2_plain{i}.csv.age"),
            &fs::read(&sealed).unwrap(),
        );
    }
    assert!(bodies[1].len() > 64 * 1024);
    wait_for("both forwarded", Duration::from_secs(30), || {
        d.count("SELECT count(*) FROM route_deliveries WHERE state = 'delivered'") == 2
    });
    daemon.terminate();
    drop(watcher);

    for (i, body) in bodies.iter().enumerate() {
        let id = d.count(&format!(
            "SELECT id FROM files WHERE name = 'news2_plain{i}.csv.age'"
        ));
        assert_eq!(
            fs::read_to_string(incoming.join(format!("news2-{id}.csv"))).unwrap(),
            *body,
            "the plaintext the care home sent"
        );
        let recorded = d.string(&format!(
            "SELECT sha256 FROM delivery_events WHERE file_id = {id} AND event = 'delivered'"
        ));
        assert_eq!(recorded, sha256_hex(body.as_bytes()));
    }
    let made = made.lock().unwrap();
    assert!(!made.is_empty(), "the watcher saw the spool at work");
    for path in made.iter() {
        assert!(
            !path.starts_with(d.path("spool/routing")),
            "a decrypted copy was written: {path:?}"
        );
        if let Ok(bytes) = fs::read(path) {
            assert!(
                !bytes.windows(12).any(|w| w == b"resident_id,"),
                "plaintext on disk: {path:?}"
            );
        }
    }
}
