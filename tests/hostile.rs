//! Hostile partners and broken files, sent for real: every partner-controlled
//! input is capped, nothing acknowledged is lost, memory stays bounded, the
//! daemon keeps serving everyone else, and no identifier or file name is
//! echoed into logs, reports, problems or the audit trail.

use std::fs::{self, File};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::*;

/// Peak memory the daemon may reach in any of these tests.
const MAX_RSS_MIB: u64 = 200;

fn quarantined(d: &Deployment) -> i64 {
    d.count("SELECT count(*) FROM files WHERE state = 'quarantined'")
}

/// The daemon's peak memory stayed under [`MAX_RSS_MIB`].
fn assert_bounded_memory(daemon: &Daemon) {
    let peak = daemon.peak_rss_mib();
    assert!(peak < MAX_RSS_MIB, "peak RSS {peak} MiB");
}

/// The problem codes stored for a file.
fn problem_codes(d: &Deployment, id: i64) -> Vec<(i64, String)> {
    let conn = d.ledger();
    let mut stmt = conn
        .prepare("SELECT line, code FROM file_problems WHERE file_id = ?1 ORDER BY seq")
        .unwrap();
    stmt.query_map([id], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// The quarantine report of a file, as text. It is written just after the
/// ledger records the quarantine (from what the ledger holds), so it may
/// lag the state a test waited for by a moment.
fn report(d: &Deployment, id: i64) -> String {
    let spool_name = d.string(&format!("SELECT spool_name FROM files WHERE id = {id}"));
    let path = d.path(&format!("spool/quarantine/{spool_name}.report.json"));
    wait_for("the quarantine report", Duration::from_secs(10), || {
        path.exists()
    });
    fs::read_to_string(path).unwrap()
}

/// Everything the ledger holds that is meant to be free of identifiers:
/// problems, file events and the audit trail.
fn ledger_text(d: &Deployment) -> String {
    let conn = d.ledger();
    let mut all = String::new();
    for sql in [
        "SELECT code || ' ' || message || ' ' || coalesce(column_name, '') FROM file_problems",
        "SELECT event || ' ' || coalesce(detail, '') FROM file_events",
        "SELECT action || ' ' || coalesce(partner, '') || ' ' || coalesce(detail, '') FROM audit_events",
    ] {
        let mut stmt = conn.prepare(sql).unwrap();
        for row in stmt.query_map([], |r| r.get::<_, String>(0)).unwrap() {
            all.push_str(&row.unwrap());
            all.push('\n');
        }
    }
    all
}

/// A header and `good` valid rows, then `size` bytes with no line break
/// (written with one seek, so the file is sparse), then a valid row.
fn file_with_a_long_record(d: &Deployment, name: &str, good: u32, size: u64) -> PathBuf {
    let path = d.write_input(name, news2_csv(good, 50, 0).as_bytes());
    let mut file = fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.seek(SeekFrom::End(size as i64)).unwrap();
    file.write_all(format!("\n{}\n", news2_row(1, 1)).as_bytes())
        .unwrap();
    path
}

fn put(d: &Deployment, port: u16, user: &str, file: &Path, name: &str) -> std::process::Output {
    let key = d.path(&format!("config/keys/{user}")).display().to_string();
    sftp_as(
        d,
        port,
        user,
        &key,
        &format!("put {} inbox/{name}\n", file.display()),
    )
}

#[test]
fn a_record_without_a_line_break_is_quarantined_in_bounded_memory_while_others_proceed() {
    let d = Deployment::with_config(&with_second_partner(&fast(SHIPPED_CONFIG)));
    let daemon = d.start();
    let port = daemon.sftp_port();
    // Valid rows first: the file is being loaded when the long record dooms it.
    let long = file_with_a_long_record(&d, "news2_long.csv", 5000, 200 << 20);
    let out = put(&d, port, "demo-carehome", &long, "news2_long.csv");
    assert!(out.status.success(), "{}", text(&out.stderr));
    // Another partner's upload is answered while the long file is read.
    let good = d.write_input("news2_other.csv", news2_csv(5, 2, 0).as_bytes());
    let started = Instant::now();
    let out = put(&d, port, "other-home", &good, "news2_other.csv");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(started.elapsed() < Duration::from_secs(10));
    wait_for("both files to be settled", Duration::from_secs(90), || {
        d.count("SELECT count(*) FROM files WHERE state <> 'received'") == 2
    });
    let long_id: i64 = d.count("SELECT id FROM files WHERE name = 'news2_long.csv'");
    assert_eq!(
        d.count("SELECT count(*) FROM files WHERE name = 'news2_other.csv' AND state = 'loaded'"),
        1
    );
    let problems = problem_codes(&d, long_id);
    assert_eq!(problems[0], (5002, "record_too_large".to_string()));
    // Landed while the long file was still being read: the doomed file's
    // rows were dropped with the write lock, not held until its end.
    let received_other = d.string("SELECT received_at FROM files WHERE name = 'news2_other.csv'");
    let settled_long = d.string(&format!(
        "SELECT updated_at FROM files WHERE id = {long_id}"
    ));
    assert!(
        received_other < settled_long,
        "{received_other} vs {settled_long}"
    );
    assert_eq!(d.count("SELECT count(*) FROM observation_sets"), 5);
    assert!(
        report(&d, long_id).len() < 16 << 10,
        "the report stays small"
    );
    assert!(d.count("SELECT max(length(message)) FROM file_problems") < 300);
    assert_bounded_memory(&daemon);
    assert_payloads_match_ledger(&d);
}

#[test]
fn an_age_file_of_nul_bytes_is_quarantined_in_bounded_memory() {
    let d = Deployment::new();
    let daemon = d.start();
    let plain = d.path("input/news2_zeros.csv");
    fs::create_dir_all(plain.parent().unwrap()).unwrap();
    File::create(&plain).unwrap().set_len(64 << 20).unwrap();
    let encrypted = d.encrypt(&plain, false);
    let out = put(
        &d,
        daemon.sftp_port(),
        "demo-carehome",
        &encrypted,
        "news2_zeros.csv.age",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    wait_for(
        "the file to be quarantined",
        Duration::from_secs(60),
        || quarantined(&d) == 1,
    );
    assert_eq!(problem_codes(&d, 1), [(1, "header_too_large".to_string())]);
    assert!(report(&d, 1).len() < 4 << 10);
    assert_bounded_memory(&daemon);
}

#[test]
fn a_file_without_its_header_echoes_no_identifier_anywhere() {
    let d = Deployment::new();
    let daemon = d.start();
    let rows: String = (1..=3).map(|r| news2_row(r, r) + "\n").collect();
    let file = d.write_input("rows.csv", rows.as_bytes());
    // The name carries an NHS number, as some senders' names do.
    let name = "news2_9434765919.csv";
    let out = put(&d, daemon.sftp_port(), "demo-carehome", &file, name);
    assert!(out.status.success(), "{}", text(&out.stderr));
    wait_for(
        "the file to be quarantined",
        Duration::from_secs(20),
        || quarantined(&d) == 1,
    );
    assert_eq!(problem_codes(&d, 1), [(1, "no_header".to_string())]);
    let log = daemon.terminate();
    let everything = format!("{}\n{}\n{log}", report(&d, 1), ledger_text(&d));
    for secret in [
        nhs_number(1),
        "Family1".into(),
        "Given1".into(),
        "1940-01-02".into(),
        "9434765919".into(),
    ] {
        assert!(
            !everything.contains(&secret),
            "{secret} leaked:\n{everything}"
        );
    }
}

/// An age header of `stanzas` recipient stanzas, then some payload bytes.
fn age_header(stanzas: usize, line: usize) -> Vec<u8> {
    let mut bytes = b"age-encryption.org/v1\n".to_vec();
    for _ in 0..stanzas {
        bytes.extend(format!("-> X25519 {}\n{}\n", "A".repeat(line), "B".repeat(43)).as_bytes());
    }
    bytes.extend(format!("--- {}\n", "C".repeat(43)).as_bytes());
    bytes.extend([0u8; 1024]);
    bytes
}

#[test]
fn huge_age_headers_are_refused_at_once_and_stall_nobody() {
    let d = Deployment::with_config(&with_second_partner(&fast(SHIPPED_CONFIG)));
    let daemon = d.start();
    let port = daemon.sftp_port();
    let many = d.write_input("many.age", &age_header(5000, 43));
    let long = d.write_input("long.age", &age_header(1, 400_000));
    let started = Instant::now();
    for (file, name) in [(&many, "news2_many.csv.age"), (&long, "news2_long.csv.age")] {
        let out = put(&d, port, "demo-carehome", file, name);
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    let good = d.write_input("news2_other.csv", news2_csv(5, 2, 0).as_bytes());
    let out = put(&d, port, "other-home", &good, "news2_other.csv");
    assert!(out.status.success(), "{}", text(&out.stderr));
    wait_for("every file to be settled", Duration::from_secs(20), || {
        d.count("SELECT count(*) FROM files WHERE state <> 'received'") == 3
    });
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "took {:?}",
        started.elapsed()
    );
    for id in [1, 2] {
        assert_eq!(problem_codes(&d, id)[0].1, "age_header_too_large");
    }
    assert_eq!(
        d.count("SELECT count(*) FROM files WHERE state = 'loaded'"),
        1
    );
    assert_bounded_memory(&daemon);
}

#[test]
fn sigterm_is_honoured_while_a_large_file_is_read() {
    let d = Deployment::new();
    let daemon = d.start();
    let long = file_with_a_long_record(&d, "news2_long.csv", 0, 400 << 20);
    fs::rename(&long, d.drop_folder().join("news2_long.csv")).unwrap();
    wait_for("the file to be received", Duration::from_secs(30), || {
        d.count("SELECT count(*) FROM files") == 1
    });
    let started = Instant::now();
    daemon.terminate();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    // Left received (or finished): never half-done, and taken up again.
    let _daemon = d.start();
    wait_for(
        "the file to be quarantined",
        Duration::from_secs(90),
        || quarantined(&d) == 1,
    );
    assert_payloads_match_ledger(&d);
}

#[test]
fn two_uploads_of_one_name_never_share_bytes() {
    let d = Deployment::new();
    let daemon = d.start();
    let first = news2_csv(20, 3, 0);
    let out = paramiko(
        &d,
        daemon.sftp_port(),
        &format!(
            r#"
other_transport, other = connect()
f1 = sftp.open("inbox/news2_same.csv", "w")
f1.write({first:?}.encode()[:100])
try:
    f2 = other.open("inbox/news2_same.csv", "w")
    f2.write(b"interleaved")
    f2.close()
    print("second open allowed")
except IOError as e:
    print("second open refused")
f1.write({first:?}.encode()[100:])
f1.close()
print("first closed")
"#
        ),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout).lines().collect::<Vec<_>>(),
        ["second open refused", "first closed"]
    );
    let files = d.files();
    assert_eq!(files.len(), 1);
    assert_eq!(files[0]["sha256"], sha256_hex(first.as_bytes()));
    wait_for("the upload to load", Duration::from_secs(10), || {
        d.count("SELECT count(*) FROM files WHERE state = 'loaded'") == 1
    });
    assert_payloads_match_ledger(&d);
}

#[test]
fn one_session_cannot_exhaust_handles_or_lock_its_partner_out() {
    let d = Deployment::with_config(&with_second_partner(&fast(SHIPPED_CONFIG)));
    let daemon = d.start();
    let port = daemon.sftp_port();
    let script = format!(
        r#"
import sys, time, paramiko
key = paramiko.Ed25519Key.from_private_key_file({key:?})
transport = paramiko.Transport(("127.0.0.1", {port}))
transport.connect(username="demo-carehome", pkey=key)
sftp = paramiko.SFTPClient.from_transport(transport)
handles = []
try:
    for i in range(5000):
        handles.append(sftp.open("inbox/h%d.part" % i, "w"))
except IOError as e:
    print(len(handles), e, flush=True)
time.sleep(3)
transport.close()
"#,
        key = demo_key(&d),
    );
    let mut hog = Command::new("python3")
        .args(["-c", &script])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(hog.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("64 "), "{line}");
    assert!(line.contains("too many open handles"), "{line}");
    // Meanwhile the other partner, and the same partner in another
    // session, log in and upload.
    let good = d.write_input("news2_other.csv", news2_csv(5, 2, 0).as_bytes());
    let out = put(&d, port, "other-home", &good, "news2_other.csv");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mine = d.write_input("news2_mine.csv", news2_csv(5, 2, 7).as_bytes());
    let out = put(&d, port, "demo-carehome", &mine, "news2_mine.csv");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(hog.wait().unwrap().success());
    // Never written to: discarded when the session ended.
    wait_for("the empty uploads to go", Duration::from_secs(5), || {
        file_names(&d.path("spool/uploads/demo-carehome")).is_empty()
    });
    let actions = audit_actions(&d);
    assert!(actions.iter().any(|(a, _, _)| a == "refused_limit"));
    let refused_rows = actions
        .iter()
        .filter(|(a, _, _)| a.starts_with("refused"))
        .count();
    assert!(
        refused_rows <= 17,
        "{refused_rows} refusal rows: the audit trail is not flooded"
    );
}

#[test]
fn unfinished_uploads_are_capped_per_partner_and_expire() {
    let d = Deployment::with_config(&with_sftp_settings(
        "max_unfinished_uploads = 3\nunfinished_upload_ttl = \"2s\"",
    ));
    let daemon = d.start();
    let out = paramiko(
        &d,
        daemon.sftp_port(),
        r#"
for i in range(3):
    with sftp.open("inbox/u%d.part" % i, "w") as f:
        f.write(b"x")
try:
    sftp.open("inbox/u3.part", "w")
    print("fourth allowed")
except IOError as e:
    print("fourth refused:", e)
"#,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("fourth refused: too many unfinished uploads"),
        "{}",
        text(&out.stdout)
    );
    wait_for(
        "the unfinished uploads to expire",
        Duration::from_secs(10),
        || {
            audit_actions(&d)
                .iter()
                .filter(|(a, _, _)| a == "upload_expired")
                .count()
                == 3
        },
    );
    assert!(file_names(&d.path("spool/uploads/demo-carehome")).is_empty());
}

#[test]
fn rename_and_setstat_keep_to_sftp_semantics() {
    let d = Deployment::new();
    let daemon = d.start();
    let out = paramiko(
        &d,
        daemon.sftp_port(),
        r#"
for name, body in (("a", b"aaaa"), ("b", b"bbbbbbbb")):
    with sftp.open("inbox/%s.part" % name, "w") as f:
        f.write(body)
try:
    sftp.rename("inbox/a.part", "inbox/b.part")
    print("rename replaced")
except IOError:
    print("rename refused")
sftp.posix_rename("inbox/a.part", "inbox/b.part")
print("posix-rename replaced")
print(sftp.stat("inbox/b.part").st_size)
sftp.truncate("inbox/b.part", 2)
print(sftp.stat("inbox/b.part").st_size)
try:
    sftp.truncate("inbox/b.part", 10 * 1024**3 + 1)
    print("huge truncate allowed")
except IOError:
    print("huge truncate refused")
sftp.rename("inbox/b.part", "inbox/news2_b.csv")
"#,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout).lines().collect::<Vec<_>>(),
        [
            "rename refused",
            "posix-rename replaced",
            "4",
            "2",
            "huge truncate refused"
        ]
    );
    let files = d.files();
    assert_eq!(files.len(), 1);
    assert_eq!(files[0]["size"], 2);
    assert_eq!(files[0]["sha256"], sha256_hex(b"aa"));
    assert!(file_names(&d.path("spool/uploads/demo-carehome")).is_empty());
}

#[test]
fn broken_files_get_clear_reasons() {
    let d = Deployment::new();
    let armour = d.write_input(
        "news2_armour.csv.age",
        b"-----BEGIN AGE ENCRYPTED FILE-----\nnot base64 at all!\n",
    );
    let quote = d.write_input(
        "news2_quote.csv",
        format!(
            "{HEADER}\n{}\nR2,\"open,x\n{}\n",
            news2_row(1, 1),
            news2_row(3, 3)
        )
        .as_bytes(),
    );
    d.ingest(&[&armour, &quote]);
    assert_eq!(problem_codes(&d, 1)[0].1, "invalid_armor");
    assert_eq!(problem_codes(&d, 2), [(3, "unclosed_quote".to_string())]);
    let shown = text(&d.dg(&["show", "2"]).stdout);
    assert!(shown.contains("opened on line 3"), "{shown}");
}

#[test]
fn listings_escape_control_and_direction_characters_in_names() {
    let d = Deployment::new();
    let _daemon = d.start();
    d.drop_file("news2_a\nb.csv", news2_csv(2, 2, 0).as_bytes());
    d.drop_file("news2_\u{202E}vsc.csv", news2_csv(2, 2, 5).as_bytes());
    wait_for("both files", Duration::from_secs(20), || {
        d.files().len() == 2
    });
    let out = text(&d.dg(&["files"]).stdout);
    assert_eq!(out.lines().count(), 3, "{out}");
    assert!(out.contains("news2_a\\nb.csv"), "{out}");
    assert!(out.contains("news2_\\u{202e}vsc.csv"), "{out}");
    assert!(!out.contains('\u{202E}'));
}

#[test]
fn check_config_says_when_the_file_does_not_exist() {
    let out = Command::new(env!("CARGO_BIN_EXE_dropgate"))
        .args(["--config", "/nowhere/dropgate.toml", "check-config"])
        .env_remove("DROPGATE_CONFIG")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("does not exist"), "{err}");
    assert!(!err.contains(":0:0"), "{err}");
}

#[test]
fn running_out_of_file_descriptors_never_stops_the_server() {
    use std::os::unix::process::CommandExt;
    let d = Deployment::with_config(&with_sftp_settings(
        "max_connections = 1000\nmax_connections_per_address = 1000",
    ));
    // 128 descriptors in all, soft and hard: the daemon cannot raise it.
    let daemon = d.start_with(|command| {
        // SAFETY: setrlimit is async-signal-safe and touches no memory of the parent.
        unsafe {
            command.pre_exec(|| {
                let limit = libc::rlimit {
                    rlim_cur: 128,
                    rlim_max: 128,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    });
    let port = daemon.sftp_port();
    // Connections that never speak, until accepting fails for want of descriptors.
    let hogs: Vec<std::net::TcpStream> = (0..200)
        .filter_map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).ok())
        .collect();
    wait_for("accepting to fail", Duration::from_secs(10), || {
        daemon.log().contains("could not accept a connection")
    });
    drop(hogs);
    // The server is still there for everyone once the descriptors are free.
    let good = d.write_input("news2_after.csv", news2_csv(5, 2, 0).as_bytes());
    let mut uploaded = false;
    for _ in 0..20 {
        if put(&d, port, "demo-carehome", &good, "news2_after.csv")
            .status
            .success()
        {
            uploaded = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(uploaded, "{}", daemon.log());
    wait_for("the upload to load", Duration::from_secs(10), || {
        d.count("SELECT count(*) FROM files WHERE state = 'loaded'") == 1
    });
    let log = daemon.terminate();
    assert!(!log.contains("SFTP server stopped"), "{log}");
}

#[test]
fn a_real_header_for_many_recipients_is_still_read() {
    let d = Deployment::new();
    let plain = d.write_input("news2_many.csv", news2_csv(10, 2, 0).as_bytes());
    let encrypted = d.path("input/news2_many.csv.age");
    let mut age = Command::new("age");
    age.args(["--armor", "-r", &d.recipient]);
    // 40 other recipients, as a file sent to several organisations might have.
    for _ in 0..40 {
        let out = Command::new("age-keygen")
            .output()
            .expect("age-keygen (package age)");
        let public = text(&out.stdout)
            .lines()
            .find_map(|l| l.strip_prefix("# public key: ").map(str::to_string))
            .unwrap();
        age.args(["-r", &public]);
    }
    assert!(
        age.arg("-o")
            .arg(&encrypted)
            .arg(&plain)
            .status()
            .unwrap()
            .success()
    );
    let out = d.ingest(&[&encrypted]);
    assert!(out.status.success(), "{}", text(&out.stdout));
    assert_eq!(d.files()[0]["state"], "loaded");
}

#[test]
fn wide_headers_and_lines_of_delimiters_are_settled_at_once() {
    let d = Deployment::new();
    // 80,000 header fields naming one column again and again, and a row
    // of 2,000,000 commas: neither takes time or memory beyond their size.
    let wide = d.write_input(
        "news2_wide.csv",
        format!("{}\n", ["resident_id"; 80_000].join(",")).as_bytes(),
    );
    let commas = d.write_input(
        "news2_commas.csv",
        format!("{HEADER}\n{}\n", ",".repeat(2_000_000)).as_bytes(),
    );
    let started = Instant::now();
    d.ingest(&[&wide, &commas]);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
    let wide_codes = problem_codes(&d, 1);
    assert_eq!(wide_codes[0].1, "duplicate_column");
    assert_eq!(problem_codes(&d, 2), [(2, "record_too_large".to_string())]);
}

#[test]
fn a_connection_gets_no_more_channels_than_a_client_needs() {
    let d = Deployment::new();
    let daemon = d.start();
    let out = paramiko(
        &d,
        daemon.sftp_port(),
        r#"
opened = 1
try:
    for _ in range(10):
        transport.open_session()
        opened += 1
except paramiko.ChannelException:
    pass
print(opened)
"#,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "2");
}

#[test]
fn an_upload_open_in_one_session_cannot_be_resized_from_another() {
    let d = Deployment::new();
    let daemon = d.start();
    let out = paramiko(
        &d,
        daemon.sftp_port(),
        r#"
other_transport, other = connect()
f = sftp.open("inbox/news2_open.csv", "w")
f.write(b"resident_id\n" * 100)
f.flush()
try:
    other.truncate("inbox/news2_open.csv", 10)
    print("truncated from elsewhere")
except IOError:
    print("refused")
f.write(b"resident_id\n")
f.close()
"#,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "refused");
    assert_eq!(
        d.files()[0]["sha256"],
        sha256_hex(&b"resident_id\n".repeat(101))
    );
    assert_payloads_match_ledger(&d);
}

#[test]
fn xml_bombs_external_entities_deep_nesting_and_a_huge_element_are_refused_in_bounded_memory() {
    let feed = "\n[feeds.bag]\npartner = \"demo-carehome\"\nmatch = [\"bag_*.xml\"]\nencryption = \"none\"\nformat = \"xml\"\n\n\
                [feeds.bag.xml]\nrecord = \"/Bag/Item\"\n\n\
                [[feeds.bag.columns]]\nname = \"id\"\npath = \"@id\"\ntype = \"string\"\n";
    let d = Deployment::with_config(&format!("{}{feed}", fast(SHIPPED_CONFIG)));
    let daemon = d.start();
    let mut laughs =
        String::from("<?xml version=\"1.0\"?>\n<!DOCTYPE Bag [\n <!ENTITY lol \"lol\">\n");
    for i in 1..=9 {
        let previous = if i == 1 {
            "lol".to_string()
        } else {
            format!("lol{}", i - 1)
        };
        laughs.push_str(&format!(
            " <!ENTITY lol{i} \"{}\">\n",
            format!("&{previous};").repeat(10)
        ));
    }
    laughs.push_str("]>\n<Bag><Item id=\"&lol9;\"/></Bag>\n");
    let external = "<?xml version=\"1.0\"?>\n<!DOCTYPE Bag [<!ENTITY x SYSTEM \"file:///etc/passwd\">]>\n<Bag><Item id=\"&x;\"/></Bag>\n";
    let deep = format!("<Bag>\n{}", "<Item>".repeat(100_000));
    let huge_path = d.path("bag_huge.xml");
    {
        let mut huge = File::create(&huge_path).unwrap();
        huge.write_all(b"<Bag>\n<Item id=\"1\">").unwrap();
        let chunk = vec![b'z'; 1 << 20];
        for _ in 0..100 {
            huge.write_all(&chunk).unwrap();
        }
        huge.write_all(b"</Item></Bag>\n").unwrap();
    }
    d.drop_file("bag_laughs.xml", laughs.as_bytes());
    d.drop_file("bag_external.xml", external.as_bytes());
    d.drop_file("bag_deep.xml", deep.as_bytes());
    fs::rename(&huge_path, d.drop_folder().join("bag_huge.xml")).unwrap();
    wait_for(
        "all four to be quarantined",
        Duration::from_secs(60),
        || quarantined(&d) == 4,
    );
    let code_of = |name: &str| {
        let id = d.count(&format!("SELECT id FROM files WHERE name = '{name}'"));
        problem_codes(&d, id)
    };
    assert_eq!(code_of("bag_laughs.xml"), [(2, "xml_dtd".to_string())]);
    assert_eq!(code_of("bag_external.xml"), [(2, "xml_dtd".to_string())]);
    assert_eq!(code_of("bag_deep.xml"), [(2, "xml_too_deep".to_string())]);
    assert_eq!(code_of("bag_huge.xml"), [(2, "xml_malformed".to_string())]);
    let huge_id = d.count("SELECT id FROM files WHERE name = 'bag_huge.xml'");
    assert!(report(&d, huge_id).contains("max_record_size"));
    assert!(!ledger_text(&d).contains("passwd"));
    assert_bounded_memory(&daemon);
}

/// Every place dropgate writes about files (its log, quarantine reports,
/// receipts, the audit trail, file events and problems) is scanned, after a
/// run that loaded and quarantined files holding patient details, for the
/// NHS numbers, names and dates of birth those files held: none is found.
#[test]
fn no_patient_identifier_leaves_the_records() {
    let d = Deployment::new();
    let daemon = d.start();
    let mut identifiers: Vec<String> = Vec::new();
    let mut file = |name: &str, rows: &[String]| {
        let body = format!("{HEADER}\n{}\n", rows.join("\n"));
        for row in rows {
            let fields: Vec<&str> = row.split(',').collect();
            identifiers.extend(fields[1..5].iter().map(|f| f.to_string()));
        }
        (name.to_string(), body)
    };
    let named = |r: u32, i: u32| {
        news2_row(r, i)
            .replace(&format!("Family{r},"), &format!("Xanthopoulou{r},"))
            .replace(&format!("Given{r},"), &format!("Philomena{r},"))
    };
    let loaded = file("news2_fine.csv", &[named(1, 0), named(2, 1)]);
    // A bad check digit, a date that is no date, a name too long: each a
    // problem with its line and column, none echoed.
    let bad_nhs = {
        let good = nhs_number(3);
        let last = good.chars().last().unwrap().to_digit(10).unwrap();
        format!("{}{}", &good[..9], (last + 1) % 10)
    };
    let mut broken = named(3, 2).replacen(&nhs_number(3), &bad_nhs, 1);
    broken = broken.replacen("1940-01-04", "1940-13-45", 1);
    let long_name = format!("Ozymandias{}", "q".repeat(300));
    let too_long = named(4, 3).replacen("Xanthopoulou4", &long_name, 1);
    let quarantined = file("news2_broken.csv", &[broken, too_long]);
    let uploaded = file("news2_sent.csv", &[named(5, 4)]);
    // NHS numbers are also looked for as they are often written: 3 3 4.
    let spaced: Vec<String> = identifiers
        .iter()
        .filter(|id| id.len() == 10 && id.bytes().all(|b| b.is_ascii_digit()))
        .map(|id| format!("{} {} {}", &id[..3], &id[3..6], &id[6..]))
        .collect();
    assert!(!spaced.is_empty());
    identifiers.extend(spaced);
    for (name, body) in [&loaded, &quarantined] {
        d.drop_file(name, body.as_bytes());
    }
    let path = d.write_input(&uploaded.0, uploaded.1.as_bytes());
    let out = sftp(
        &d,
        daemon.sftp_port(),
        &demo_key(&d),
        &format!("put {} inbox/{}\n", path.display(), uploaded.0),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    wait_for(
        "every file settled, with receipts",
        Duration::from_secs(30),
        || {
            d.count("SELECT count(*) FROM files WHERE state IN ('loaded', 'quarantined')") == 3
                && d.count("SELECT count(*) FROM file_events WHERE event = 'receipt_written'") == 3
        },
    );
    assert_eq!(
        d.count("SELECT count(*) FROM files WHERE state = 'quarantined'"),
        1
    );
    let log = daemon.terminate();

    let mut written: Vec<(String, String)> = vec![("the daemon's log".into(), log)];
    let payloads = d.strings("SELECT spool_name FROM files");
    let mut folders = vec![d.path("spool")];
    while let Some(folder) = folders.pop() {
        for entry in fs::read_dir(&folder).unwrap().flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().to_string();
            if path.is_dir() {
                // The drop folder and staging areas hold what senders sent.
                if !["drop", "uploads"].contains(&name.as_str()) {
                    folders.push(path);
                }
            } else if !payloads.contains(&name) && !name.starts_with("ledger.db") {
                written.push((path.display().to_string(), text(&fs::read(&path).unwrap())));
            }
        }
    }
    for (table, sql) in [
        (
            "audit_events",
            "SELECT coalesce(partner, '') || ' ' || coalesce(remote, '') || ' ' || action || ' ' || coalesce(detail, '') FROM audit_events",
        ),
        (
            "file_events",
            "SELECT event || ' ' || coalesce(detail, '') FROM file_events",
        ),
        (
            "file_problems",
            "SELECT code || ' ' || coalesce(column_name, '') || ' ' || message FROM file_problems",
        ),
        ("files", "SELECT coalesce(reason, '') FROM files"),
    ] {
        written.push((table.into(), d.strings(sql).join("\n")));
    }
    assert!(
        written
            .iter()
            .any(|(place, _)| place.ends_with(".report.json")),
        "the quarantine report is among what was scanned"
    );
    assert!(
        written
            .iter()
            .any(|(place, _)| place.ends_with(".receipt.json")),
        "receipts are among what was scanned"
    );
    let problems = d.count("SELECT count(*) FROM file_problems");
    assert!(
        problems >= 2,
        "the broken file's problems are recorded: {problems}"
    );
    for (place, content) in &written {
        for id in &identifiers {
            assert!(
                !content.contains(id.as_str()),
                "{place} holds a patient identifier"
            );
        }
    }
}

/// `refused_limit` audit rows about `max_file_size`, as (source, size).
fn refused_for_size(d: &Deployment) -> Vec<(String, i64)> {
    d.strings(
        "SELECT json_extract(detail, '$.source') || ' ' || json_extract(detail, '$.size')
         FROM audit_events
         WHERE action = 'refused_limit' AND json_extract(detail, '$.limit') = 'max_file_size'
         ORDER BY id",
    )
    .into_iter()
    .map(|row| {
        let (source, size) = row.split_once(' ').unwrap();
        (source.to_string(), size.parse().unwrap())
    })
    .collect()
}

#[test]
fn a_dropped_file_over_max_file_size_is_left_in_place_reported_once_and_never_copied() {
    let config = fast(SHIPPED_CONFIG).replacen(
        "rescan_interval = \"1s\"",
        "rescan_interval = \"100ms\"\nmax_file_size = \"4KiB\"",
        1,
    );
    let d = Deployment::with_config(&config);
    let daemon = d.start();
    let big = file_with_a_long_record(&d, "news2_big.csv", 3, 200 << 10);
    let size = fs::metadata(&big).unwrap().len() as i64;
    fs::rename(&big, d.drop_folder().join("news2_big.csv")).unwrap();
    d.drop_file("news2_small.csv", news2_csv(3, 1, 0).as_bytes());
    wait_for("the small file", Duration::from_secs(20), || {
        d.count("SELECT count(*) FROM files WHERE state = 'loaded'") == 1
    });
    wait_for("the refusal", Duration::from_secs(10), || {
        !refused_for_size(&d).is_empty()
    });
    // Many rescans later: still in place, never copied, reported once.
    std::thread::sleep(Duration::from_millis(800));
    assert!(d.drop_folder().join("news2_big.csv").exists());
    assert_eq!(d.count("SELECT count(*) FROM files"), 1);
    assert_eq!(
        refused_for_size(&d),
        [("demo-carehome-drop".to_string(), size)]
    );
    let spooled = d.largest_spooled_file();
    assert!(spooled < 64 << 10, "a file of {spooled} bytes in the spool");
    let log = daemon.log();
    assert!(log.contains("over max_file_size"), "{log}");
    assert!(
        !log.contains("news2_big"),
        "the name is never logged: {log}"
    );

    // Replaced by a file under the cap: taken as any other.
    let again = d.write_input("news2_big.csv", news2_csv(2, 1, 7).as_bytes());
    fs::rename(&again, d.drop_folder().join("news2_big.csv")).unwrap();
    wait_for("the replacement", Duration::from_secs(20), || {
        d.count("SELECT count(*) FROM files WHERE state = 'loaded'") == 2
    });
    assert_eq!(refused_for_size(&d).len(), 1);
}

/// Every kind of hostile content a partner can drop, at once, into a
/// running daemon: each is settled with its own reason (none an internal
/// error), special files in the folder are never opened, a good file from
/// the same sender still loads, and peak memory stays under the cap.
#[test]
fn every_hostile_content_is_judged_in_bounded_memory_while_a_good_file_still_loads() {
    use std::os::unix::fs::symlink;
    let d = Deployment::new();
    let daemon = d.start();
    let input = d.path("input");
    fs::create_dir_all(&input).unwrap();
    let age_of = |name: &str, plain: &[u8], recipient: &str, armor: bool| -> Vec<u8> {
        let path = input.join(name);
        fs::write(&path, plain).unwrap();
        let out = input.join(format!("{name}.age"));
        age_cli(recipient, &path, &out, armor);
        fs::read(out).unwrap()
    };
    let good = news2_csv(20, 4, 0);
    let sealed = age_of("sealed.csv", good.as_bytes(), &d.recipient, false);
    let armoured = age_of("armoured.csv", good.as_bytes(), &d.recipient, true);
    let hospital = fs::read_to_string(d.path("config/keys/demo-hospital-age.txt.pub")).unwrap();
    let mut flipped = sealed.clone();
    let middle = flipped.len() - 40;
    flipped[middle] ^= 0x20;
    // Armour's first line over a binary body.
    let mut confused = b"-----BEGIN AGE ENCRYPTED FILE-----\n".to_vec();
    confused.extend_from_slice(&sealed);
    let columns: Vec<String> = (0..100_000).map(|i| format!("c{i}")).collect();
    let hostile: Vec<(&str, Vec<u8>)> = vec![
        ("news2_empty.csv", Vec::new()),
        (
            "news2_empty_payload.csv.age",
            age_of("empty.csv", b"", &d.recipient, false),
        ),
        (
            "news2_not_ours.csv.age",
            age_of("other.csv", good.as_bytes(), hospital.trim(), false),
        ),
        (
            "news2_truncated.csv.age",
            sealed[..sealed.len() / 2].to_vec(),
        ),
        ("news2_flipped.csv.age", flipped),
        (
            "news2_armour_cut.csv.age",
            armoured[..armoured.len() - 60].to_vec(),
        ),
        ("news2_confused.csv.age", confused),
        ("news2_nul.csv", vec![0u8; 1 << 20]),
        // Not UTF-8: the feed's `auto` encoding reads it as Windows-1252.
        (
            "news2_bad_utf8.csv",
            format!("{HEADER}\n{}\n", news2_row(1, 1))
                .replace("Family1", "Fam\u{1}ly")
                .replace('\u{1}', "\u{ff}")
                .into_bytes()
                .into_iter()
                .filter(|&b| b != 0xc3)
                .collect(),
        ),
        (
            "news2_quotes.csv",
            format!("{HEADER}\n\"R1,\"\"x,{}\n", "\"".repeat(1000)).into_bytes(),
        ),
        (
            "news2_columns.csv",
            format!("{}\n", columns.join(",")).into_bytes(),
        ),
        ("news2_one_line.csv", vec![b'x'; 48 << 20]),
    ];
    for (name, bytes) in &hostile {
        d.drop_file(name, bytes);
    }
    // Things that are not files: never opened, never taken.
    let drop = d.drop_folder();
    symlink("/dev/zero", drop.join("news2_zero.csv")).unwrap();
    symlink("/etc/passwd", drop.join("news2_passwd.csv")).unwrap();
    let fifo = std::process::Command::new("mkfifo")
        .arg(drop.join("news2_fifo.csv"))
        .status()
        .unwrap();
    assert!(fifo.success());
    d.drop_file("news2_good.csv", good.as_bytes());
    wait_for("every file settled", Duration::from_secs(120), || {
        d.count("SELECT count(*) FROM files WHERE state <> 'received'") == hostile.len() as i64 + 1
    });
    assert_eq!(
        d.count("SELECT count(*) FROM files"),
        hostile.len() as i64 + 1,
        "a special file was taken"
    );
    assert_eq!(
        d.string("SELECT state FROM files WHERE name = 'news2_good.csv'"),
        "loaded"
    );
    let settled = d.strings(
        "SELECT name || ' ' || state || ' ' || coalesce(reason, '-') FROM files
         WHERE name <> 'news2_good.csv' ORDER BY id",
    );
    for line in &settled {
        assert!(!line.contains("internal_error"), "{settled:?}");
        // Each rejected file is in quarantine beside its report.
        if line.contains(" quarantined ") {
            let id = d.count(&format!(
                "SELECT id FROM files WHERE name = '{}'",
                line.split(' ').next().unwrap()
            ));
            assert!(report(&d, id).contains("\"reason\""), "{line}");
        }
    }
    let loaded: Vec<&String> = settled.iter().filter(|l| l.contains(" loaded ")).collect();
    assert!(
        loaded.iter().all(|l| l.starts_with("news2_bad_utf8.csv")),
        "only a Windows-1252 reading may load: {settled:?}"
    );
    assert!(drop.join("news2_fifo.csv").exists() && drop.join("news2_zero.csv").exists());
    assert_bounded_memory(&daemon);
    eprintln!("peak RSS {} MiB; {settled:#?}", daemon.peak_rss_mib());
}

/// A thousand connections that never log in (silent, or sending a version
/// line and then a byte at a time) are each closed at the login deadline:
/// the daemon's file descriptors and memory come back to where they were,
/// and a partner logs in afterwards as ever.
#[test]
fn a_thousand_stalled_connections_leave_no_descriptor_or_memory_behind() {
    use std::io::Write as _;
    let d = Deployment::with_config(&with_sftp_settings("login_timeout = \"300ms\""));
    let daemon = d.start();
    let port = daemon.sftp_port();
    // One login first, so what a session needs is counted in the baseline.
    assert!(sftp(&d, port, &demo_key(&d), "ls\n").status.success());
    std::thread::sleep(Duration::from_millis(200));
    let (fds_before, rss_before) = (daemon.open_fds(), daemon.peak_rss_mib());
    let mut attempts = 0;
    while attempts < 1000 {
        // Within the per-address cap, so each is held until its deadline.
        let mut wave: Vec<std::net::TcpStream> = (0..25)
            .filter_map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).ok())
            .collect();
        attempts += wave.len();
        for (i, socket) in wave.iter_mut().enumerate() {
            if i % 2 == 0 {
                let _ = socket.write_all(b"SSH-2.0-slow\r\n");
            }
        }
        std::thread::sleep(Duration::from_millis(150));
        for socket in wave.iter_mut().step_by(2) {
            let _ = socket.write_all(b"x");
        }
        std::thread::sleep(Duration::from_millis(300));
        // Past the deadline: the server has hung up on every one.
        for socket in &mut wave {
            socket
                .set_read_timeout(Some(Duration::from_secs(2)))
                .unwrap();
            let mut seen = Vec::new();
            let closed = match std::io::Read::read_to_end(socket, &mut seen) {
                Ok(_) => true,
                Err(e) => !matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ),
            };
            assert!(
                closed,
                "a stalled connection was still open after its login deadline"
            );
        }
    }
    wait_for(
        "the descriptors to come back",
        Duration::from_secs(10),
        || daemon.open_fds() <= fds_before + 4,
    );
    let (fds_after, rss_after) = (daemon.open_fds(), daemon.peak_rss_mib());
    assert!(
        rss_after < MAX_RSS_MIB && rss_after <= rss_before + 32,
        "{rss_before} -> {rss_after} MiB"
    );
    let login = sftp(&d, port, &demo_key(&d), "ls\n");
    assert!(login.status.success(), "{}", text(&login.stderr));
    eprintln!(
        "{attempts} stalled connections: descriptors {fds_before} -> {fds_after}, peak RSS {rss_before} -> {rss_after} MiB"
    );
}

/// A 2 GiB line in a plain file, and an age file whose plaintext is a
/// header and then 3 GiB without a line end: each is quarantined for a
/// record over the cap, read as a stream (peak RSS under the cap), and a
/// good file dropped after them is loaded too.
#[test]
fn gigabyte_lines_in_plain_and_age_files_are_quarantined_in_bounded_memory() {
    let d = Deployment::new();
    let daemon = d.start();
    let staging = d.path("staging");
    fs::create_dir_all(&staging).unwrap();
    let shell = |script: String| {
        let status = Command::new("sh").arg("-c").arg(&script).status().unwrap();
        assert!(status.success(), "{script}");
    };
    let made = Instant::now();
    shell(format!(
        "head -c 2G /dev/zero | tr '\\0' x > {}",
        staging.join("news2_line.csv").display()
    ));
    shell(format!(
        "{{ printf '%s\\n' '{HEADER}'; head -c 3G /dev/zero | tr '\\0' x; }} | age -r {} > {}",
        d.recipient,
        staging.join("news2_huge.csv.age").display()
    ));
    let made = made.elapsed();
    let started = Instant::now();
    for name in ["news2_line.csv", "news2_huge.csv.age"] {
        fs::rename(staging.join(name), d.drop_folder().join(name)).unwrap();
    }
    d.drop_file("news2_good.csv", news2_csv(5, 2, 0).as_bytes());
    wait_for("all three settled", Duration::from_secs(900), || {
        d.count("SELECT count(*) FROM files WHERE state <> 'received'") == 3
    });
    let took = started.elapsed();
    assert_eq!(
        d.strings("SELECT name || ' ' || state FROM files ORDER BY name"),
        [
            "news2_good.csv loaded",
            "news2_huge.csv.age quarantined",
            "news2_line.csv quarantined"
        ]
    );
    let codes = |name: &str| {
        problem_codes(
            &d,
            d.count(&format!("SELECT id FROM files WHERE name = '{name}'")),
        )
    };
    assert_eq!(codes("news2_line.csv"), [(1, "header_too_large".into())]);
    assert_eq!(
        codes("news2_huge.csv.age"),
        [(2, "record_too_large".into())]
    );
    assert_bounded_memory(&daemon);
    eprintln!(
        "made in {made:?}; settled in {took:?}; peak RSS {} MiB",
        daemon.peak_rss_mib()
    );
}

/// Names a hostile partner chooses: 4 KiB long, and a feed's name in
/// look-alike letters (Cyrillic `е` for Latin `e`). The long one is refused
/// with a status, never stored or echoed; the look-alike is judged by its
/// real bytes, not taken for the feed it imitates.
#[test]
fn long_and_look_alike_names_are_refused_or_judged_by_their_real_bytes() {
    let d = Deployment::new();
    let daemon = d.start();
    let port = daemon.sftp_port();
    let body = d.write_input("body.csv", news2_csv(3, 1, 0).as_bytes());
    let long = format!("news2_{}.csv", "x".repeat(4096));
    let script = format!(
        "for name in [{long:?}, 'n\\u0435ws2_a.csv', 'news2_b.csv']:\n    try:\n        sftp.put({:?}, 'inbox/' + name)\n        print('put')\n    except IOError as e:\n        print('refused:', e)\n",
        body.display().to_string()
    );
    let out = paramiko(&d, port, &script);
    assert_eq!(
        text(&out.stdout).lines().collect::<Vec<_>>(),
        ["refused: [Errno 13] path too long", "put", "put"],
        "{}",
        text(&out.stderr)
    );
    wait_for("both uploads settled", Duration::from_secs(30), || {
        d.count("SELECT count(*) FROM files WHERE state <> 'received'") == 2
    });
    assert_eq!(
        d.strings(
            "SELECT name || ' ' || state || ' ' || coalesce(reason, '-') FROM files ORDER BY id"
        ),
        [
            "n\u{435}ws2_a.csv quarantined no_feed",
            "news2_b.csv loaded -"
        ]
    );
    let log = daemon.terminate();
    assert!(log.contains("SFTP operation refused"), "{log}");
    assert!(
        !log.contains(&"x".repeat(64)),
        "the long name echoed: {log}"
    );
    assert!(
        !ledger_text(&d).contains(&"x".repeat(64)),
        "the long name stored"
    );
}
