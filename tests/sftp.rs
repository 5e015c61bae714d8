//! The embedded SFTP server, driven by the OpenSSH `sftp` client.

use std::fs;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use crate::harness::*;

fn delivery_events(d: &Deployment) -> Vec<(String, i64)> {
    let conn = d.ledger();
    let mut stmt = conn
        .prepare("SELECT event, attempt FROM delivery_events ORDER BY id")
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

#[test]
fn an_upload_is_received_before_the_client_is_told_it_succeeded() {
    let d = Deployment::new();
    let daemon = d.start();
    let plain = d.write_input("news2_up.csv", news2_csv(12, 3, 0).as_bytes());
    let encrypted = d.encrypt(&plain, false);
    let out = sftp(
        &d,
        daemon.sftp_port(),
        &demo_key(&d),
        &format!("put {} inbox/news2_up.csv.age\n", encrypted.display()),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    // The put returned, so the file is already in the ledger.
    let files = d.files();
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(files[0]["source"], "sftp-server");
    assert_eq!(files[0]["partner"], "demo-carehome");
    assert_eq!(files[0]["name"], "news2_up.csv.age");
    // Hashed while it was written: the same as the sender's copy.
    assert_eq!(
        files[0]["sha256"],
        sha256_hex(&fs::read(&encrypted).unwrap())
    );
    wait_for("the upload to load", Duration::from_secs(10), || {
        d.count("SELECT count(*) FROM files WHERE state = 'loaded'") == 1
    });
    assert_eq!(d.files()[0]["records"], 3 + 12 * 8);
    let staging = d.path("spool/uploads/demo-carehome");
    assert_eq!(
        fs::read_dir(staging).unwrap().count(),
        0,
        "the upload left the staging area"
    );
}

#[test]
fn a_temporary_name_is_taken_only_once_renamed() {
    let d = Deployment::new();
    let daemon = d.start();
    let port = daemon.sftp_port();
    let plain = d.write_input("news2_tmp.csv", news2_csv(5, 5, 0).as_bytes());
    let out = sftp(
        &d,
        port,
        &demo_key(&d),
        &format!(
            "put {} inbox/news2_tmp.csv.part\nls inbox\n",
            plain.display()
        ),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("news2_tmp.csv.part"),
        "listed as waiting"
    );
    std::thread::sleep(Duration::from_millis(500));
    assert!(d.files().is_empty(), "a .part upload is not taken");
    let out = sftp(
        &d,
        port,
        &demo_key(&d),
        "rename inbox/news2_tmp.csv.part inbox/news2_tmp.csv\n",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(d.files().len(), 1);
    assert_eq!(d.files()[0]["name"], "news2_tmp.csv");
}

#[test]
fn an_interrupted_upload_can_be_resumed() {
    let d = Deployment::new();
    let daemon = d.start();
    let port = daemon.sftp_port();
    let body = news2_csv(200, 10, 0);
    let half = d.write_input("news2_res.csv.part", &body.as_bytes()[..body.len() / 2]);
    let whole = d.write_input("news2_res_whole.csv", body.as_bytes());
    let out = sftp(
        &d,
        port,
        &demo_key(&d),
        &format!("put {} inbox/news2_res.csv.part\n", half.display()),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = sftp(
        &d,
        port,
        &demo_key(&d),
        &format!(
            "reput {} inbox/news2_res.csv.part\nrename inbox/news2_res.csv.part inbox/news2_res.csv\n",
            whole.display()
        ),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    wait_for("the resumed upload", Duration::from_secs(10), || {
        d.count("SELECT count(*) FROM files WHERE state = 'loaded'") == 1
    });
    assert_eq!(d.files()[0]["rows_loaded"], 200);
    assert_eq!(d.files()[0]["size"], body.len());
    assert_eq!(
        d.files()[0]["sha256"],
        sha256_hex(body.as_bytes()),
        "a resumed upload is hashed whole"
    );
}

#[test]
fn paths_outside_the_inbox_are_refused() {
    let d = Deployment::new();
    let daemon = d.start();
    let port = daemon.sftp_port();
    let plain = d.write_input("news2_esc.csv", news2_csv(1, 1, 0).as_bytes());
    let p = plain.display();
    // Each command in its own session: `sftp -b` stops at the first failure.
    for (command, expect) in [
        (format!("put {p} ../news2_esc.csv"), "Permission denied"),
        (
            format!("put {p} inbox/../../news2_esc.csv"),
            "Permission denied",
        ),
        (format!("put {p} /etc/news2_esc.csv"), "No such file"),
        (format!("put {p} /news2_esc.csv"), "No such file"),
        ("cd ..".to_string(), "`..` is not allowed"),
        ("mkdir inbox/sub".to_string(), "Permission denied"),
        (
            "symlink /etc/passwd inbox/passwd".to_string(),
            "Permission denied",
        ),
        (
            format!("put {p} inbox/{}", "n".repeat(300)),
            "Permission denied",
        ),
        ("get inbox/anything /dev/null".to_string(), "not found"),
    ] {
        let out = sftp(&d, port, &demo_key(&d), &format!("{command}\n"));
        assert!(!out.status.success(), "`{command}` must fail");
        let stderr = text(&out.stderr);
        assert!(stderr.contains(expect), "`{command}`: {stderr}");
    }
    assert!(d.files().is_empty());
}

#[test]
fn a_wrong_key_cannot_log_in() {
    let d = Deployment::new();
    let daemon = d.start();
    let stranger = new_key(&d, "stranger_ed25519");
    let out = sftp(
        &d,
        daemon.sftp_port(),
        &stranger.display().to_string(),
        "ls\n",
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("Permission denied"),
        "{}",
        text(&out.stderr)
    );
    assert!(!daemon.log().contains("SFTP login partner"));
}

#[test]
fn logins_uploads_and_refusals_are_audited() {
    let d = Deployment::new();
    let daemon = d.start();
    let port = daemon.sftp_port();
    let plain = d.write_input("news2_aud.csv", news2_csv(2, 2, 0).as_bytes());
    let out = sftp(
        &d,
        port,
        &demo_key(&d),
        &format!("put {} inbox/news2_aud.csv\n", plain.display()),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = sftp(&d, port, &demo_key(&d), "mkdir inbox/x\n");
    assert!(!out.status.success());
    // Written off the session's task: give it a moment.
    wait_for("the refusal to be audited", Duration::from_secs(5), || {
        audit_actions(&d).iter().any(|(a, _, _)| a == "refused")
    });
    // The daemon's own rows (keys made, the config it runs on, signed
    // checkpoints) carry no remote address; the sessions' rows all do.
    let (actions, own): (Vec<_>, Vec<_>) = audit_actions(&d)
        .into_iter()
        .partition(|(_, remote, _)| remote.is_some());
    assert!(
        own.iter()
            .all(|(a, _, _)| ["key_created", "checkpoint", "config_loaded"].contains(&a.as_str())),
        "{own:?}"
    );
    let names: Vec<&str> = actions.iter().map(|(a, _, _)| a.as_str()).collect();
    assert_eq!(
        names,
        ["login", "upload", "login", "refused"],
        "{actions:?}"
    );
    assert!(
        actions
            .iter()
            .all(|(_, remote, _)| remote.as_deref() == Some("127.0.0.1"))
    );
    assert_eq!(actions[1].2, Some(d.files()[0]["id"].as_i64().unwrap()));
}

#[test]
fn repeated_failed_logins_ban_the_address_even_across_restarts() {
    let d = Deployment::with_config(&with_sftp_settings(
        "ban_after_failures = 2\nban_time = \"1h\"",
    ));
    let daemon = d.start();
    let port = daemon.sftp_port();
    let stranger = new_key(&d, "stranger_ed25519");
    for _ in 0..2 {
        let out = sftp(&d, port, &stranger.display().to_string(), "ls\n");
        assert!(!out.status.success());
    }
    // Now even the partner's own key is refused from this address.
    let out = sftp(&d, port, &demo_key(&d), "ls\n");
    assert!(!out.status.success(), "a banned address cannot log in");
    daemon.terminate();
    let daemon = d.start();
    let out = sftp(&d, daemon.sftp_port(), &demo_key(&d), "ls\n");
    assert!(!out.status.success(), "the ban outlives a restart");
    let actions: Vec<String> = audit_actions(&d).into_iter().map(|(a, _, _)| a).collect();
    assert!(
        actions.contains(&"address_banned".to_string()),
        "{actions:?}"
    );
    assert!(
        actions.contains(&"login_refused_banned".to_string()),
        "{actions:?}"
    );
}

/// A destination block for a daemon's own SFTP server (the demo partner's inbox).
fn loopback_destination(port: u16, host_key: &str) -> String {
    format!(
        "\n[destinations.loopback]\nkind = \"sftp\"\nhost = \"127.0.0.1\"\nport = {port}\nuser = \"demo-carehome\"\nprivate_key = \"keys/demo-carehome\"\nhost_key = \"{}\"\nfolder = \"inbox\"\nattempts = 2\nretry_initial = \"100ms\"\ntimeout = \"5s\"\n",
        host_key.trim()
    )
}

#[test]
fn push_uploads_under_a_temporary_name_then_renames() {
    let d = Deployment::new();
    let daemon = d.start();
    let host_key = public_key_line(&d.path("config/keys/ssh_host_ed25519.pub"));
    let config = fast(SHIPPED_CONFIG) + &loopback_destination(daemon.sftp_port(), &host_key);
    d.write_config(&config);
    let plain = d.write_input("news2_push.csv", news2_csv(4, 2, 0).as_bytes());
    let out = d.push("loopback", &plain);
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).contains("delivered"),
        "{}",
        text(&out.stdout)
    );
    // The receiving side took it only at the rename, under its final name.
    let files = d.files();
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(files[0]["name"], "news2_push.csv");
    assert_eq!(delivery_events(&d), [("delivered".to_string(), 1)]);
}

#[test]
fn push_refuses_a_server_whose_host_key_is_not_the_pinned_one() {
    let d = Deployment::new();
    let daemon = d.start();
    new_key(&d, "other_host");
    let wrong = public_key_line(&d.path("other_host.pub"));
    d.write_config(&(fast(SHIPPED_CONFIG) + &loopback_destination(daemon.sftp_port(), &wrong)));
    let plain = d.write_input("news2_pin.csv", news2_csv(1, 1, 0).as_bytes());
    let out = d.push("loopback", &plain);
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("does not match the pinned key"), "{stdout}");
    assert!(
        stdout.contains("SHA256:"),
        "the fingerprint seen is shown: {stdout}"
    );
    assert!(d.files().is_empty(), "nothing was sent");
}

#[test]
fn push_retries_with_backoff_then_gives_up() {
    let d = Deployment::new();
    // Nothing listens on this port: bound and released at once.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let host_key = public_key_line(&d.path("config/keys/ssh_host_ed25519.pub"));
    d.write_config(&(fast(SHIPPED_CONFIG) + &loopback_destination(port, &host_key)));
    let plain = d.write_input("news2_retry.csv", news2_csv(1, 1, 0).as_bytes());
    let out = d.push("loopback", &plain);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert_eq!(
        delivery_events(&d),
        [
            ("attempt_failed".to_string(), 1),
            ("gave_up".to_string(), 2)
        ]
    );
}

#[test]
fn paramiko_and_scp_uploads_are_received() {
    let d = Deployment::new();
    let daemon = d.start();
    let port = daemon.sftp_port();
    let plain = d.write_input("news2_py.csv", news2_csv(3, 3, 0).as_bytes());
    // paramiko, as partners' Python scripts use it: temporary name, then rename.
    let script = format!(
        r#"
import paramiko
key = paramiko.Ed25519Key.from_private_key_file({key:?})
transport = paramiko.Transport(("127.0.0.1", {port}))
transport.connect(username="demo-carehome", pkey=key)
sftp = paramiko.SFTPClient.from_transport(transport)
sftp.put({file:?}, "inbox/news2_py.csv.filepart")
sftp.rename("inbox/news2_py.csv.filepart", "inbox/news2_py.csv")
transport.close()
"#,
        key = demo_key(&d),
        file = plain.display().to_string(),
    );
    let out = Command::new("python3")
        .args(["-c", &script])
        .output()
        .expect("python3 with paramiko (scripts/test installs it)");
    assert!(out.status.success(), "{}", text(&out.stderr));
    // scp, which speaks SFTP in current OpenSSH.
    let other = d.write_input("news2_scp.csv", news2_csv(2, 2, 7).as_bytes());
    let out = Command::new("scp")
        .args(["-s", "-i", &demo_key(&d), "-P", &port.to_string()])
        .args(SSH_CLIENT_OPTIONS)
        .arg(&other)
        .arg("demo-carehome@127.0.0.1:inbox/news2_scp.csv")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    wait_for("both uploads", Duration::from_secs(10), || {
        d.count("SELECT count(*) FROM files WHERE state = 'loaded'") == 2
    });
    let names: Vec<String> = d
        .files()
        .iter()
        .map(|f| f["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["news2_py.csv", "news2_scp.csv"]);
}

#[test]
fn the_outbox_is_read_only_and_downloads_are_audited() {
    let d = Deployment::new();
    let daemon = d.start();
    let port = daemon.sftp_port();
    let outbox = d.path("spool/outbox/demo-carehome");
    let export = news2_csv(20, 4, 0).replace('\n', "\r\n");
    fs::write(outbox.join("export_20261122.csv"), &export).unwrap();
    fs::write(outbox.join(".export_next.csv.part"), "being written").unwrap();
    let got = d.path("got.csv");
    let out = sftp(
        &d,
        port,
        &demo_key(&d),
        &format!(
            "ls outbox\nget outbox/export_20261122.csv {}\n",
            got.display()
        ),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        !text(&out.stdout).contains(".export_next"),
        "files being written are hidden"
    );
    assert_eq!(
        fs::read(&got).unwrap(),
        export.as_bytes(),
        "bytes unchanged"
    );
    let plain = d.write_input("news2_o.csv", news2_csv(1, 1, 0).as_bytes());
    for command in [
        format!("put {} outbox/news2_o.csv", plain.display()),
        "rm outbox/export_20261122.csv".to_string(),
        "rename outbox/export_20261122.csv outbox/x.csv".to_string(),
    ] {
        let out = sftp(&d, port, &demo_key(&d), &format!("{command}\n"));
        assert!(!out.status.success(), "`{command}` must fail");
    }
    assert!(outbox.join("export_20261122.csv").exists());
    wait_for("the download to be audited", Duration::from_secs(5), || {
        audit_actions(&d).iter().any(|(a, _, _)| a == "download")
    });
}

#[test]
fn a_partner_with_a_password_hash_may_log_in_with_the_password() {
    let d = Deployment::new();
    let mut hashing = d
        .command(&["hash-password"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(hashing.stdin.as_mut().unwrap(), b"correct horse\n").unwrap();
    let out = hashing.wait_with_output().unwrap();
    assert!(out.status.success());
    let hash = text(&out.stdout).trim().to_string();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    d.write_config(&fast(SHIPPED_CONFIG).replace(
        "outbox = true",
        &format!("outbox = true\npassword_hash = \"{hash}\""),
    ));
    let daemon = d.start();
    let plain = d.write_input("news2_pw.csv", news2_csv(2, 2, 0).as_bytes());
    let login = |password: &str| {
        let script = format!(
            r#"
import paramiko, sys
transport = paramiko.Transport(("127.0.0.1", {port}))
try:
    transport.connect(username="demo-carehome", password={password:?})
except paramiko.AuthenticationException:
    sys.exit(3)
sftp = paramiko.SFTPClient.from_transport(transport)
sftp.put({file:?}, "inbox/news2_pw.csv")
transport.close()
"#,
            port = daemon.sftp_port(),
            file = plain.display().to_string(),
        );
        Command::new("python3")
            .args(["-c", &script])
            .output()
            .expect("python3 with paramiko (scripts/test installs it)")
    };
    assert_eq!(
        login("wrong horse").status.code(),
        Some(3),
        "a wrong password is refused"
    );
    let out = login("correct horse");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(d.files().len(), 1);
    let config = fs::read_to_string(d.config_path()).unwrap();
    assert!(!config.contains("correct horse"), "only the hash is stored");
}

#[test]
fn a_dropped_connection_leaves_nothing_in_the_pipeline_and_is_audited() {
    let d = Deployment::new();
    let daemon = d.start();
    let script = format!(
        r#"
import paramiko
key = paramiko.Ed25519Key.from_private_key_file({key:?})
transport = paramiko.Transport(("127.0.0.1", {port}))
transport.connect(username="demo-carehome", pkey=key)
sftp = paramiko.SFTPClient.from_transport(transport)
f = sftp.open("inbox/news2_cut.csv", "w")
f.write(b"resident_id,nhs_number\n" * 100)
f.flush()
transport.close()  # gone, with the file still open
"#,
        key = demo_key(&d),
        port = daemon.sftp_port(),
    );
    let out = Command::new("python3")
        .args(["-c", &script])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    wait_for(
        "the incomplete upload to be audited",
        Duration::from_secs(5),
        || {
            audit_actions(&d)
                .iter()
                .any(|(a, _, _)| a == "upload_incomplete")
        },
    );
    assert!(d.files().is_empty(), "nothing entered the pipeline");
    let staged = file_names(&d.path("spool/uploads/demo-carehome"));
    assert_eq!(staged.len(), 1, "kept for the client to resume or remove");
    assert!(
        !staged[0].contains("news2"),
        "staged under dropgate's own id"
    );
    let detail = d.string("SELECT detail FROM audit_events WHERE action = 'upload_incomplete'");
    assert!(
        detail.contains(&staged[0]),
        "the upload is named by its id: {detail}"
    );
    assert!(!detail.contains("news2_cut"), "{detail}");
}

#[test]
fn uploads_above_the_size_limit_are_refused() {
    let d = Deployment::with_config(
        &fast(SHIPPED_CONFIG).replace("max_file_size = \"10GiB\"", "max_file_size = \"1KiB\""),
    );
    let daemon = d.start();
    let big = d.write_input("news2_big.csv", news2_csv(100, 5, 0).as_bytes());
    let out = sftp(
        &d,
        daemon.sftp_port(),
        &demo_key(&d),
        &format!("put {} inbox/news2_big.csv\n", big.display()),
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("Failure"),
        "{}",
        text(&out.stderr)
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(d.files().is_empty(), "no part of a refused upload is taken");
    assert!(
        file_names(&d.path("spool/uploads/demo-carehome")).is_empty(),
        "a refused upload is discarded"
    );
}

/// `SHA256:` fingerprint of the server's host key, as `ssh-keygen -l` prints it.
fn host_key_fingerprint(d: &Deployment) -> String {
    let out = Command::new("ssh-keygen")
        .arg("-lf")
        .arg(d.path("config/keys/ssh_host_ed25519.pub"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout)
        .split_whitespace()
        .nth(1)
        .expect("a fingerprint")
        .to_string()
}

/// `curl` (libssh2) uploading as the demo partner with the host key pinned.
fn curl_upload(d: &Deployment, port: u16, pinned: &str, file: &Path, name: &str) -> Output {
    let key = demo_key(d);
    Command::new("curl")
        .args(["--silent", "--show-error", "--hostpubsha256", pinned])
        .args(["--key", &key, "--pubkey", &format!("{key}.pub"), "-T"])
        .arg(file)
        .arg(format!(
            "sftp://demo-carehome@127.0.0.1:{port}/inbox/{name}"
        ))
        .output()
        .expect("curl must be installed (scripts/test installs it)")
}

#[test]
fn curl_uploads_over_sftp_to_a_pinned_host_key() {
    let d = Deployment::new();
    let daemon = d.start();
    let port = daemon.sftp_port();
    let fingerprint = host_key_fingerprint(&d);
    let pinned = fingerprint.strip_prefix("SHA256:").unwrap();
    let plain = d.write_input("news2_curl.csv", news2_csv(4, 2, 0).as_bytes());

    let wrong = format!("AAAA{}", &pinned[4..]);
    let out = curl_upload(&d, port, &wrong, &plain, "news2_wrong.csv");
    assert_eq!(out.status.code(), Some(60), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("mismatch sha256 fingerprint"));

    let out = curl_upload(&d, port, pinned, &plain, "news2_curl.csv");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let files = d.files();
    assert_eq!(files.len(), 1, "only the pinned upload arrived: {files:?}");
    assert_eq!(files[0]["name"], "news2_curl.csv");
    wait_for("the upload to load", Duration::from_secs(10), || {
        d.count("SELECT count(*) FROM files WHERE state = 'loaded'") == 1
    });
}

#[test]
fn a_partner_gets_no_more_sessions_than_its_limit() {
    let d = Deployment::with_config(&with_sftp_settings("max_sessions_per_partner = 1"));
    let daemon = d.start();
    let out = paramiko(
        &d,
        daemon.sftp_port(),
        r#"
try:
    connect()
    print("second session allowed")
except paramiko.AuthenticationException:
    print("second session refused")
transport.close()
time.sleep(0.5)
connect()[0].close()
print("a session once the first ended")
"#,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout).lines().collect::<Vec<_>>(),
        ["second session refused", "a session once the first ended"]
    );
    wait_for("the refusal to be audited", Duration::from_secs(5), || {
        audit_actions(&d)
            .iter()
            .any(|(a, _, _)| a == "login_refused_session_limit")
    });
}

#[test]
fn an_idle_session_is_closed_and_its_open_upload_not_taken() {
    let d = Deployment::with_config(
        &fast(SHIPPED_CONFIG).replace("idle_timeout = \"10m\"", "idle_timeout = \"1s\""),
    );
    let daemon = d.start();
    let out = paramiko(
        &d,
        daemon.sftp_port(),
        r#"
f = sftp.open("inbox/news2_idle.csv", "w")
f.write(b"resident_id,nhs_number\n")
f.flush()
time.sleep(3)
try:
    sftp.listdir("inbox")
    print("still open")
except (EOFError, OSError, paramiko.SSHException):
    print("closed")
"#,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "closed");
    wait_for(
        "the incomplete upload to be audited",
        Duration::from_secs(5),
        || {
            audit_actions(&d)
                .iter()
                .any(|(a, _, _)| a == "upload_incomplete")
        },
    );
    assert!(d.files().is_empty(), "nothing entered the pipeline");
}
