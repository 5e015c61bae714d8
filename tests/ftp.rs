//! Pulling from and pushing to a partner's FTP / FTPS server: a real pure-ftpd.

use std::fs;
use std::time::Duration;

use crate::ftpd::{Ftpd, ImplicitFtps, USER};
use crate::harness::*;

/// The login part of an `ftp` source or destination for `server`; `tls` is
/// the extra TLS lines.
fn login(server: &Ftpd, tls: &str) -> String {
    format!(
        "host = \"127.0.0.1\"\nport = {}\nuser = \"{USER}\"\npassword_file = \"{}\"\ntimeout = \"5s\"\n{tls}\n",
        server.port(),
        server.password_file().display(),
    )
}

fn ca(server: &Ftpd) -> String {
    format!(
        "tls = \"explicit\"\nca_file = \"{}\"",
        server.ca_file().display()
    )
}

/// The shipped configuration plus an `ftp` source polling `outgoing/`.
fn pulling(server: &Ftpd, after: &str, tls: &str) -> String {
    format!(
        "{}\n[sources.partner-ftp]\nkind = \"ftp\"\npartner = \"demo-carehome\"\n{}folder = \"outgoing\"\nmatch = [\"news2_*\"]\npoll_interval = \"200ms\"\nmin_age = \"300ms\"\nafter = \"{after}\"\nretry_initial = \"200ms\"\nretry_max = \"1s\"\n",
        fast(SHIPPED_CONFIG),
        login(server, tls),
    )
}

fn pushing(server: &Ftpd, tls: &str) -> String {
    format!(
        "{}\n[destinations.partner]\nkind = \"ftp\"\n{}folder = \"incoming\"\nattempts = 2\nretry_initial = \"100ms\"\n",
        fast(SHIPPED_CONFIG),
        login(server, tls),
    )
}

fn loaded(d: &Deployment) -> i64 {
    d.count("SELECT count(*) FROM files WHERE state = 'loaded'")
}

#[test]
fn ftps_pull_keeps_crlf_bytes_and_deletes_only_once_received() {
    let server = Ftpd::tls();
    let out = server.folder("outgoing");
    let body = news2_csv(20, 4, 0).replace('\n', "\r\n");
    server.place("outgoing/news2_crlf.csv", body.as_bytes());
    server.place("outgoing/other.txt", b"not mine");
    server.place("outgoing/news2_b.csv.part", b"still uploading");
    let d = Deployment::with_config(&pulling(&server, "delete", &ca(&server)));
    let daemon = d.start();
    wait_for("the pulled file", Duration::from_secs(20), || {
        loaded(&d) == 1
    });
    wait_for("the server's copy to go", Duration::from_secs(10), || {
        !out.join("news2_crlf.csv").exists()
    });
    let file = &d.files()[0];
    assert_eq!(file["source"], "partner-ftp");
    assert_eq!(
        file["sha256"],
        sha256_hex(body.as_bytes()),
        "binary mode: the bytes, CRLF and all, arrive unchanged"
    );
    assert_eq!(file["size"], body.len());
    assert_eq!(file["rows_loaded"], 20);
    assert!(
        out.join("other.txt").exists(),
        "files outside the globs stay"
    );
    assert!(
        out.join("news2_b.csv.part").exists(),
        "temporary names stay"
    );
    assert!(
        daemon.log().contains("ftps://carehome@127.0.0.1"),
        "{}",
        daemon.log()
    );
}

#[test]
fn plain_ftp_with_list_parsing_moves_aside_or_leaves_and_takes_once() {
    let plain = "tls = \"none\"\ninsecure_plaintext = true\nlisting = \"list\"";
    let server = Ftpd::plain();
    let out = server.folder("outgoing");
    server.folder("outgoing/done");
    let d = Deployment::with_config(&pulling(&server, "move:done", plain));
    server.place("outgoing/news2_m.csv", news2_csv(3, 3, 0).as_bytes());
    let daemon = d.start();
    wait_for("the moved file", Duration::from_secs(20), || {
        out.join("done/news2_m.csv").exists()
    });
    // Moved once received; loading may still be under way.
    wait_for("the moved file to load", Duration::from_secs(10), || {
        loaded(&d) == 1
    });
    assert!(
        daemon.log().contains("plain FTP"),
        "the insecure setting is warned about at start:\n{}",
        daemon.log()
    );
    daemon.terminate();

    let server = Ftpd::plain();
    let out = server.folder("outgoing");
    let d = Deployment::with_config(&pulling(&server, "leave", plain));
    server.place("outgoing/news2_l.csv", news2_csv(3, 3, 0).as_bytes());
    let daemon = d.start();
    wait_for("the left file", Duration::from_secs(20), || loaded(&d) == 1);
    // Many polls later it is still there and still taken only once.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(out.join("news2_l.csv").exists());
    assert_eq!(
        d.count("SELECT count(*) FROM files"),
        1,
        "{:?}\n{}",
        d.files(),
        daemon.log()
    );
}

#[test]
fn ftps_push_uploads_under_a_temporary_name_then_renames() {
    let server = Ftpd::tls();
    let incoming = server.folder("incoming");
    let pinned = format!(
        "tls = \"explicit\"\ncertificate_fingerprint = \"{}\"",
        server.fingerprint()
    );
    let d = Deployment::with_config(&pushing(&server, &pinned));
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
    let events = d.count("SELECT count(*) FROM delivery_events WHERE event = 'delivered'");
    assert_eq!(events, 2);
}

#[test]
fn a_certificate_neither_trusted_nor_pinned_is_refused_with_its_fingerprint() {
    let server = Ftpd::tls();
    server.folder("incoming");
    let fingerprint = server.fingerprint();

    let untrusted = format!(
        "tls = \"explicit\"\nca_file = \"{}\"",
        server.other_ca_file().display()
    );
    let d = Deployment::with_config(&pushing(&server, &untrusted));
    let file = d.write_input("export.csv", b"a,b\r\n");
    let out = d.push("partner", &file);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let said = text(&out.stdout) + &text(&out.stderr);
    assert!(said.contains("TLS certificate of 127.0.0.1"), "{said}");
    assert!(
        said.contains(&fingerprint),
        "the fingerprint seen is shown: {said}"
    );
    assert_eq!(
        d.count("SELECT count(*) FROM delivery_events WHERE event = 'gave_up'"),
        1,
        "not retried: a certificate does not mend by waiting"
    );

    let wrong_pin = format!(
        "tls = \"explicit\"\ncertificate_fingerprint = \"{}\"",
        "AB:".repeat(31) + "AB"
    );
    let d = Deployment::with_config(&pushing(&server, &wrong_pin));
    let file = d.write_input("export.csv", b"a,b\r\n");
    let out = d.push("partner", &file);
    assert_eq!(out.status.code(), Some(1));
    let said = text(&out.stdout) + &text(&out.stderr);
    assert!(said.contains(&fingerprint), "{said}");
    assert!(!server.home().join("incoming/export.csv").exists());
}

#[test]
fn a_source_with_an_untrusted_certificate_takes_nothing_and_says_why() {
    let server = Ftpd::tls();
    let out = server.folder("outgoing");
    server.place("outgoing/news2_t.csv", news2_csv(2, 2, 0).as_bytes());
    let untrusted = format!(
        "tls = \"explicit\"\nca_file = \"{}\"",
        server.other_ca_file().display()
    );
    let d = Deployment::with_config(&pulling(&server, "delete", &untrusted));
    let daemon = d.start();
    wait_for("the refusal in the log", Duration::from_secs(20), || {
        daemon.log().contains("TLS certificate of 127.0.0.1")
    });
    let status = d.dg(&["status"]);
    assert!(
        text(&status.stdout).contains("TLS certificate"),
        "status shows the last error: {}",
        text(&status.stdout)
    );
    assert!(out.join("news2_t.csv").exists());
    assert!(d.files().is_empty());
}

#[test]
fn an_ftp_server_killed_mid_transfer_loses_and_duplicates_nothing() {
    // 1 MB/s: the 4 MB file takes seconds, so the kill lands midway.
    let mut server = Ftpd::tls_throttled(1000);
    let out = server.folder("outgoing");
    let body = news2_csv(40_000, 300, 0);
    assert!(body.len() > 3_000_000);
    server.place("outgoing/news2_big.csv", body.as_bytes());
    let d = Deployment::with_config(&pulling(&server, "delete", &ca(&server)));
    let daemon = d.start();
    let partial = d.path("spool/pull/partner-ftp/downloading");
    wait_for("the download to start", Duration::from_secs(20), || {
        fs::metadata(&partial).map(|m| m.len() > 0).unwrap_or(false)
    });
    server.kill();
    wait_for(
        "the partial copy to be discarded",
        Duration::from_secs(10),
        || !partial.exists(),
    );
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
    assert_eq!(d.files()[0]["sha256"], sha256_hex(body.as_bytes()));
    assert_eq!(d.files()[0]["rows_loaded"], 40_000);
    assert!(
        daemon.log().contains("poll failed"),
        "the failure was seen and retried"
    );
}

#[test]
fn check_config_refuses_inline_passwords_and_unprotected_plain_ftp() {
    let server = Ftpd::plain();
    let inline = pulling(&server, "delete", "tls = \"none\"")
        .replace("password_file", "password = \"hunter2\"\npassword_file");
    let d = Deployment::new();
    d.write_config(&inline);
    let out = d.dg(&["check-config"]);
    assert_eq!(out.status.code(), Some(2));
    let said = text(&out.stderr);
    assert!(
        said.contains("passwords are not written in the configuration"),
        "{said}"
    );
    assert!(
        said.contains("also set `insecure_plaintext = true`"),
        "{said}"
    );
    assert!(
        !said.contains("hunter2"),
        "the password is not echoed: {said}"
    );

    let d = Deployment::with_config(&pulling(
        &server,
        "delete",
        "tls = \"none\"\ninsecure_plaintext = true",
    ));
    let out = d.dg(&["check-config"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("warning: `partner-ftp`: plain FTP"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn push_works_in_active_and_extended_passive_modes() {
    let server = Ftpd::plain();
    let incoming = server.folder("incoming");
    for mode in ["active", "extended_passive"] {
        let tls = format!("tls = \"none\"\ninsecure_plaintext = true\ndata_mode = \"{mode}\"");
        let d = Deployment::with_config(&pushing(&server, &tls));
        let name = format!("export_{mode}.csv");
        let file = d.write_input(&name, b"a,b\r\n1,2\r\n");
        let out = d.push("partner", &file);
        assert!(
            out.status.success(),
            "{mode}: {}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        assert_eq!(fs::read(incoming.join(&name)).unwrap(), b"a,b\r\n1,2\r\n");
    }
}

#[test]
fn trace_logging_shows_neither_the_password_nor_file_names_from_libraries() {
    let server = Ftpd::tls();
    server.folder("incoming");
    let d = Deployment::with_config(&pushing(&server, &ca(&server)));
    let file = d.write_input("news2_9434765919.csv", b"a,b\r\n");
    let out = d
        .command(&["push", "--destination", "partner", file.to_str().unwrap()])
        .env("DROPGATE_LOG", "trace")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let log = text(&out.stderr);
    assert!(
        log.contains("delivered"),
        "dropgate's own events are there: {log}"
    );
    let password = fs::read_to_string(server.password_file()).unwrap();
    assert!(!log.contains(password.trim()), "{log}");
    assert!(!log.contains("9434765919"), "{log}");
}

#[test]
fn implicit_ftps_pull_and_push() {
    let server = ImplicitFtps::start();
    fs::create_dir(server.home().join("outgoing")).unwrap();
    fs::create_dir(server.home().join("incoming")).unwrap();
    let body = news2_csv(5, 2, 0).replace('\n', "\r\n");
    fs::write(server.home().join("outgoing/news2_i.csv"), &body).unwrap();
    let login = format!(
        "host = \"127.0.0.1\"\nport = {}\nuser = \"{USER}\"\npassword_file = \"{}\"\ntimeout = \"5s\"\ntls = \"implicit\"\nca_file = \"{}\"\n",
        server.port(),
        server.password_file().display(),
        server.ca_file().display(),
    );
    let config = format!(
        "{}\n[sources.partner-ftp]\nkind = \"ftp\"\npartner = \"demo-carehome\"\n{login}folder = \"outgoing\"\nmatch = [\"news2_*\"]\npoll_interval = \"200ms\"\nmin_age = \"300ms\"\n\n[destinations.partner]\nkind = \"ftp\"\n{login}folder = \"incoming\"\n",
        fast(SHIPPED_CONFIG),
    );
    let d = Deployment::with_config(&config);
    let daemon = d.start();
    wait_for("the pulled file", Duration::from_secs(20), || {
        loaded(&d) == 1
    });
    assert_eq!(d.files()[0]["sha256"], sha256_hex(body.as_bytes()));
    assert!(daemon.log().contains("ftps-implicit://carehome@127.0.0.1"));
    wait_for("the server's copy to go", Duration::from_secs(10), || {
        !server.home().join("outgoing/news2_i.csv").exists()
    });
    let file = d.write_input("export.csv", body.as_bytes());
    let out = d.push("partner", &file);
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert_eq!(
        fs::read(server.home().join("incoming/export.csv")).unwrap(),
        body.as_bytes()
    );
}

#[test]
fn a_file_the_server_refuses_holds_up_no_other_and_is_never_named() {
    let server = Ftpd::tls();
    server.folder("outgoing");
    // Owned by root and private: the FTP user cannot read it (RETR gets 550).
    let locked = server.home().join("outgoing/news2_9434765919.csv");
    fs::write(&locked, news2_csv(2, 2, 0)).unwrap();
    fs::set_permissions(&locked, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    server.place("outgoing/news2_ok.csv", news2_csv(3, 3, 0).as_bytes());
    let d = Deployment::with_config(&pulling(&server, "delete", &ca(&server)));
    let daemon = d.start();
    wait_for("the readable file", Duration::from_secs(20), || {
        loaded(&d) == 1
    });
    wait_for("the refusal in the log", Duration::from_secs(10), || {
        daemon.log().contains("a file could not be taken")
    });
    let status = text(&d.dg(&["status"]).stdout);
    assert!(
        status.contains("the server refused to download"),
        "{status}"
    );
    for said in [status, daemon.log()] {
        assert!(!said.contains("9434765919"), "no file name: {said}");
    }
    assert!(locked.exists());
    assert_eq!(d.count("SELECT count(*) FROM files"), 1);
}

#[test]
fn a_wrong_password_is_refused_at_once_and_said_plainly() {
    let server = Ftpd::tls();
    server.folder("incoming");
    let d = Deployment::with_config(&pushing(&server, &ca(&server)));
    let wrong = d.write_input("wrong-password", b"not the password\n");
    // pure-ftpd holds back a refused login for 3-8 s.
    d.write_config(
        &pushing(&server, &ca(&server))
            .replace(
                &server.password_file().display().to_string(),
                &wrong.display().to_string(),
            )
            .replace("timeout = \"5s\"", "timeout = \"15s\""),
    );
    fs::set_permissions(&wrong, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let file = d.write_input("export.csv", b"a,b\r\n");
    let out = d.push("partner", &file);
    assert_eq!(out.status.code(), Some(1));
    let said = text(&out.stdout) + &text(&out.stderr);
    assert!(
        said.contains("refused the login of `carehome` with the configured password"),
        "{said}"
    );
    assert!(!said.contains("not the password"), "{said}");
    assert_eq!(
        d.count("SELECT count(*) FROM delivery_events WHERE event = 'attempt_failed'"),
        0,
        "a refused login is not retried"
    );
    assert!(!server.home().join("incoming/export.csv").exists());
}
