//! Pulling from and pushing to a partner's server: a real OpenSSH `sshd`.

use std::fs;
use std::time::Duration;

use crate::harness::*;
use crate::sshd::Sshd;

/// The shipped configuration plus an `sftp` source polling `outgoing/` on `server`.
fn pulling(server: &Sshd, after: &str, host_key: &str) -> String {
    format!(
        "{}\n[sources.partner-sftp]\nkind = \"sftp\"\npartner = \"demo-carehome\"\nhost = \"127.0.0.1\"\nport = {}\nuser = \"{}\"\nprivate_key = \"{}\"\nhost_key = \"{}\"\nfolder = \"outgoing\"\nmatch = [\"news2_*\"]\npoll_interval = \"200ms\"\nmin_age = \"300ms\"\nafter = \"{after}\"\ntimeout = \"5s\"\nretry_initial = \"200ms\"\nretry_max = \"1s\"\n",
        fast(SHIPPED_CONFIG),
        server.port(),
        server.user(),
        server.client_key().display(),
        host_key,
    )
}

fn outgoing(server: &Sshd) -> std::path::PathBuf {
    let dir = server.root().join("outgoing");
    fs::create_dir_all(&dir).unwrap();
    dir
}

fn loaded(d: &Deployment) -> i64 {
    d.count("SELECT count(*) FROM files WHERE state = 'loaded'")
}

#[test]
fn pulled_files_are_deleted_from_the_server_only_once_received() {
    let server = Sshd::start();
    let d = Deployment::with_config(&pulling(&server, "delete", server.host_key()));
    let out = outgoing(&server);
    fs::write(out.join("news2_a.csv"), news2_csv(10, 2, 0)).unwrap();
    fs::write(out.join("other.txt"), "not mine").unwrap();
    fs::write(out.join("news2_b.csv.part"), "still uploading").unwrap();
    let _daemon = d.start();
    wait_for("the pulled file", Duration::from_secs(20), || {
        loaded(&d) == 1
    });
    wait_for("the server's copy to go", Duration::from_secs(10), || {
        !out.join("news2_a.csv").exists()
    });
    assert!(
        out.join("other.txt").exists(),
        "files outside the globs stay"
    );
    assert!(
        out.join("news2_b.csv.part").exists(),
        "temporary names stay"
    );
    let file = &d.files()[0];
    assert_eq!(file["source"], "partner-sftp");
    assert_eq!(file["records"], 2 + 10 * 8);
}

#[test]
fn a_server_file_over_max_file_size_is_never_downloaded_and_reported_once() {
    let server = Sshd::start();
    let config = pulling(&server, "delete", server.host_key()) + "max_file_size = \"8KiB\"\n";
    let d = Deployment::with_config(&config);
    let out = outgoing(&server);
    let big = news2_csv(400, 4, 0);
    assert!(big.len() > 8 << 10);
    fs::write(out.join("news2_big.csv"), &big).unwrap();
    fs::write(out.join("news2_small.csv"), news2_csv(3, 1, 50)).unwrap();
    let daemon = d.start();
    wait_for("the small file", Duration::from_secs(20), || {
        loaded(&d) == 1
    });
    // Polls every 200 ms: a second is several polls.
    std::thread::sleep(Duration::from_secs(1));
    assert!(out.join("news2_big.csv").exists(), "left on the server");
    assert!(!out.join("news2_small.csv").exists());
    assert_eq!(d.count("SELECT count(*) FROM files"), 1);
    assert_eq!(
        d.strings(
            "SELECT json_extract(detail, '$.source') || ' ' || json_extract(detail, '$.size')
             FROM audit_events WHERE action = 'refused_limit'"
        ),
        [format!("partner-sftp {}", big.len())]
    );
    let spooled = d.largest_spooled_file();
    assert!(spooled < 8 << 10, "a file of {spooled} bytes in the spool");
    assert!(!daemon.log().contains("news2_big"), "{}", daemon.log());
    // `status` counts it as waiting on the server.
    let status: serde_json::Value =
        serde_json::from_slice(&d.dg(&["status", "--json"]).stdout).unwrap();
    let source = status["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["source"] == "partner-sftp")
        .unwrap();
    assert_eq!(source["kind"], "sftp");
    assert_eq!(source["files_waiting"], 1, "{source}");
}

#[test]
fn pulled_files_can_be_moved_aside_or_left_and_are_taken_once() {
    let server = Sshd::start();
    let out = outgoing(&server);
    fs::create_dir_all(out.join("done")).unwrap();
    let d = Deployment::with_config(&pulling(&server, "move:done", server.host_key()));
    fs::write(out.join("news2_m.csv"), news2_csv(3, 3, 0)).unwrap();
    let daemon = d.start();
    wait_for("the moved file", Duration::from_secs(20), || {
        out.join("done/news2_m.csv").exists()
    });
    // Moved once received; loading may still be under way.
    wait_for("the moved file to load", Duration::from_secs(10), || {
        loaded(&d) == 1
    });
    daemon.terminate();

    let server = Sshd::start();
    let out = outgoing(&server);
    let d = Deployment::with_config(&pulling(&server, "leave", server.host_key()));
    fs::write(out.join("news2_l.csv"), news2_csv(3, 3, 0)).unwrap();
    let _daemon = d.start();
    wait_for("the left file", Duration::from_secs(20), || loaded(&d) == 1);
    // Many polls later it is still there and still taken only once.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(out.join("news2_l.csv").exists());
    assert_eq!(
        d.count("SELECT count(*) FROM files"),
        1,
        "{:?}\n{}",
        d.files(),
        _daemon.log()
    );
}

#[test]
fn a_server_with_another_host_key_is_refused() {
    let server = Sshd::start();
    let impostor = Sshd::start();
    let d = Deployment::with_config(&pulling(&server, "delete", impostor.host_key()));
    let out = outgoing(&server);
    fs::write(out.join("news2_k.csv"), news2_csv(2, 2, 0)).unwrap();
    let daemon = d.start();
    wait_for("the refusal in the log", Duration::from_secs(20), || {
        daemon.log().contains("does not match the pinned key")
    });
    assert!(
        daemon.log().contains("SHA256:"),
        "the fingerprint seen is logged"
    );
    assert!(out.join("news2_k.csv").exists());
    assert!(d.files().is_empty());
}

#[test]
fn a_server_killed_mid_transfer_loses_and_duplicates_nothing() {
    let mut server = Sshd::start();
    let d = Deployment::with_config(&pulling(&server, "delete", server.host_key()));
    let out = outgoing(&server);
    let body = news2_csv(150_000, 300, 0);
    fs::write(out.join("news2_big.csv"), &body).unwrap();
    let daemon = d.start();
    let partial = d.path("spool/pull/partner-sftp/downloading");
    wait_for("the download to start", Duration::from_secs(20), || {
        partial.exists()
    });
    server.kill();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        d.count("SELECT count(*) FROM files"),
        0,
        "a partial download never enters the pipeline"
    );
    server.start_again();
    wait_for(
        "the file after the restart",
        Duration::from_secs(60),
        || loaded(&d) == 1,
    );
    wait_for("the server's copy to go", Duration::from_secs(10), || {
        !out.join("news2_big.csv").exists()
    });
    assert_eq!(d.count("SELECT count(*) FROM files"), 1);
    assert_eq!(d.files()[0]["size"], body.len());
    assert_eq!(d.files()[0]["rows_loaded"], 150_000);
    assert!(
        daemon.log().contains("poll failed"),
        "the failure was seen and retried"
    );
}

#[test]
fn push_delivers_to_a_real_server_under_a_temporary_name() {
    let server = Sshd::start();
    let incoming = server.root().join("incoming");
    fs::create_dir_all(&incoming).unwrap();
    let config = format!(
        "{}\n[destinations.partner]\nkind = \"sftp\"\nhost = \"127.0.0.1\"\nport = {}\nuser = \"{}\"\nprivate_key = \"{}\"\nhost_key = \"{}\"\nfolder = \"incoming\"\n",
        fast(SHIPPED_CONFIG),
        server.port(),
        server.user(),
        server.client_key().display(),
        server.host_key()
    );
    let d = Deployment::with_config(&config);
    let body = news2_csv(5000, 50, 0).replace('\n', "\r\n");
    let file = d.write_input("export.csv", body.as_bytes());
    let out = d.push("partner", &file);
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert_eq!(
        fs::read(incoming.join("export.csv")).unwrap(),
        body.as_bytes(),
        "bytes unchanged"
    );
    assert_eq!(
        file_names(&incoming),
        ["export.csv"],
        "no temporary file left behind"
    );
    // Pushing again replaces it.
    let out = d.push("partner", &file);
    assert!(out.status.success(), "{}", text(&out.stdout));
}

#[test]
fn a_server_copy_that_cannot_be_moved_is_retried_with_backoff_and_shown_in_status() {
    let server = Sshd::start();
    let out = outgoing(&server);
    // `move:` is relative to the source's folder; this one does not exist.
    let config = pulling(&server, "move:missing", server.host_key())
        .replace("retry_initial = \"200ms\"", "retry_initial = \"1s\"")
        .replace("retry_max = \"1s\"", "retry_max = \"4s\"");
    let d = Deployment::with_config(&config);
    fs::write(out.join("news2_stuck.csv"), news2_csv(3, 3, 0)).unwrap();
    let daemon = d.start();
    wait_for("the file to load", Duration::from_secs(20), || {
        loaded(&d) == 1
    });
    std::thread::sleep(Duration::from_secs(6));
    let status = text(&d.dg(&["status"]).stdout);
    let log = daemon.terminate();
    let warnings = log.matches("could not be removed").count();
    // Polled every 200 ms: about 30 polls, but the move is retried only
    // after 1, 2, then 4 s.
    assert!((2..=5).contains(&warnings), "{warnings} warnings:\n{log}");
    assert!(
        status.contains("1 received file(s) not yet removed from the server"),
        "{status}"
    );
    assert!(
        out.join("news2_stuck.csv").exists(),
        "the server's copy stays"
    );
    assert_eq!(d.files().len(), 1, "taken once");
}
