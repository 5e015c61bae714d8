//! Faults from below: a spool on a small file system that fills up.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::harness::*;
use crate::sshd::Sshd;

/// A tmpfs of `size` mounted over `dir` (its contents copied in first),
/// unmounted when dropped. Mounting needs root, which the test machines
/// and CI run as; without it the test fails, saying so.
struct SmallDisk {
    dir: PathBuf,
}

impl SmallDisk {
    fn mount(dir: &Path, size: &str) -> SmallDisk {
        let aside = dir.with_extension("on-disk");
        fs::rename(dir, &aside).unwrap();
        fs::create_dir(dir).unwrap();
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir)
            .output()
            .expect("mount (util-linux)");
        assert!(
            out.status.success(),
            "mounting a tmpfs needs root: {}",
            text(&out.stderr)
        );
        let copied = Command::new("cp")
            .arg("-a")
            .arg(aside.join("."))
            .arg(dir)
            .status()
            .unwrap();
        assert!(copied.success());
        SmallDisk {
            dir: dir.to_path_buf(),
        }
    }

    fn free(&self) -> u64 {
        dropgate::spool::space(&self.dir).unwrap().0
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

#[test]
fn a_full_spool_makes_new_files_wait_says_why_once_and_resumes_by_itself() {
    let config = fast(SHIPPED_CONFIG)
        .replace(
            "stop_deadline = \"30s\"",
            "stop_deadline = \"30s\"\nmin_free_space = \"8MiB\"",
        )
        // The partner's folder is its own disk, not the spool's.
        .replace("../spool/drop/demo-carehome", "../drop/demo-carehome");
    // And a partner's SFTP server, polled.
    let server = Sshd::start();
    let outgoing = server.root().join("outgoing");
    fs::create_dir_all(&outgoing).unwrap();
    let config = format!(
        "{config}\n[sources.partner-sftp]\nkind = \"sftp\"\npartner = \"demo-carehome\"\nhost = \"127.0.0.1\"\nport = {}\nuser = \"{}\"\nprivate_key = \"{}\"\nhost_key = \"{}\"\nfolder = \"outgoing\"\nmatch = [\"news2_*\"]\npoll_interval = \"200ms\"\nmin_age = \"300ms\"\n",
        server.port(),
        server.user(),
        server.client_key().display(),
        server.host_key(),
    );
    let d = Deployment::with_config(&config);
    let disk = SmallDisk::mount(&d.path("spool"), "32m");
    let daemon = d.start();
    let port = daemon.sftp_port();

    // Leave 4 MiB: under the 8 MiB kept free.
    let filler = d.path("spool/filler");
    let leave = 4 << 20;
    fs::write(&filler, vec![0u8; (disk.free() - leave) as usize]).unwrap();
    // Free space is read again at most every 250 ms.
    std::thread::sleep(Duration::from_millis(300));
    fs::write(outgoing.join("news2_polled.csv"), news2_csv(30, 3, 900)).unwrap();
    let small = news2_csv(20, 4, 0);
    let large = news2_csv(2000, 40, 100);
    assert!(
        large.len() > 64 * 1024,
        "one copied into the spool, not the ledger"
    );
    let folder = d.path("drop/demo-carehome");
    for (name, body) in [("news2_small.csv", &small), ("news2_large.csv", &large)] {
        fs::write(folder.join(format!(".{name}")), body).unwrap();
        fs::rename(folder.join(format!(".{name}")), folder.join(name)).unwrap();
    }
    let upload = d.write_input("news2_up.csv", news2_csv(5, 2, 500).as_bytes());
    let put = format!(
        "try:\n    sftp.put({:?}, 'inbox/news2_up.csv')\n    print('put')\nexcept IOError as e:\n    print('refused:', e)\n",
        upload.display().to_string()
    );
    let out = paramiko(&d, port, &put);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("refused: the spool has no room; try again later"),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    // Waiting: the sender's copies untouched, nothing half-taken.
    std::thread::sleep(Duration::from_secs(3));
    assert!(d.files().is_empty(), "{:?}\n{}", d.files(), daemon.log());
    assert_eq!(file_names(&folder), ["news2_large.csv", "news2_small.csv"]);
    assert!(file_names(&d.path("spool/tmp")).is_empty());
    assert_eq!(
        file_names(&outgoing),
        ["news2_polled.csv"],
        "the server's copy stays"
    );
    let status: serde_json::Value =
        serde_json::from_slice(&d.dg(&["status", "--json"]).stdout).unwrap();
    assert_eq!(status["spool"]["no_room"], true, "{status}");
    let polled = status["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["source"] == "partner-sftp")
        .unwrap();
    assert_eq!(
        polled["last_error"], "paused: the spool has no room",
        "{polled}"
    );
    let log = daemon.log();
    assert_eq!(
        log.matches("the spool has no room").count(),
        1,
        "said once, not once a file or a check: {log}"
    );
    assert!(!log.contains("landing failed"), "{log}");

    // Room again: everything waiting is taken, by itself.
    fs::remove_file(&filler).unwrap();
    wait_for("the waiting files", Duration::from_secs(30), || {
        d.files().iter().filter(|f| f["state"] == "loaded").count() == 3
    });
    assert!(file_names(&folder).is_empty());
    wait_for("the server's copy to go", Duration::from_secs(10), || {
        file_names(&outgoing).is_empty()
    });
    let put = format!(
        "sftp.put({:?}, 'inbox/news2_up.csv')\n",
        upload.display().to_string()
    );
    let out = paramiko(&d, port, &put);
    assert!(out.status.success(), "{}", text(&out.stderr));
    wait_for("the upload", Duration::from_secs(30), || {
        d.files().iter().filter(|f| f["state"] == "loaded").count() == 4
    });
    let log = daemon.terminate();
    assert!(log.contains("the spool has room again"), "{log}");
    let names: Vec<String> = d
        .files()
        .iter()
        .map(|f| f["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names.len(), 4, "each once: {names:?}");
    assert_eq!(d.string("PRAGMA integrity_check"), "ok");
    assert_payloads_match_ledger(&d);
    let refusals = d.count(
        "SELECT count(*) FROM audit_events WHERE action = 'refused_limit'
         AND json_extract(detail, '$.limit') = 'min_free_space'",
    );
    assert_eq!(refusals, 1);
    drop(disk);
}

/// A server that accepts and then stalls: every other connection silent,
/// the rest sent a byte at a time. Counts the connections it took.
struct StalledServer {
    port: u16,
    accepted: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl StalledServer {
    fn start() -> StalledServer {
        use std::io::Write;
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = accepted.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let n = counter.fetch_add(1, Ordering::SeqCst);
                std::thread::spawn(move || {
                    // Held open until the client gives up: silent, or a
                    // byte every 20 ms of a greeting that never ends, so
                    // that only a deadline on the whole exchange ends it.
                    let mut probe = [0u8; 1];
                    stream.set_nonblocking(true).unwrap();
                    for _ in 0..3_000 {
                        if n % 2 == 1 && stream.write_all(b"2").is_err() {
                            return;
                        }
                        std::thread::sleep(Duration::from_millis(20));
                        match std::io::Read::read(&mut stream, &mut probe) {
                            Ok(0) => return,
                            Err(e) if e.kind() != std::io::ErrorKind::WouldBlock => return,
                            _ => {}
                        }
                    }
                });
            }
        });
        StalledServer { port, accepted }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(std::sync::atomic::Ordering::SeqCst)
    }
}

#[test]
fn a_thousand_polls_of_stalled_servers_time_out_and_leave_nothing_behind() {
    let server = StalledServer::start();
    let d = Deployment::new();
    let password = d.path("config/ftp-password");
    fs::write(&password, "secret\n").unwrap();
    fs::set_permissions(
        &password,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let mut config = fast(SHIPPED_CONFIG);
    let common = "folder = \"outgoing\"\nmatch = [\"news2_*\"]\npoll_interval = \"10ms\"\ntimeout = \"250ms\"\nretry_initial = \"10ms\"\nretry_max = \"20ms\"\n";
    for i in 0..8 {
        config.push_str(&format!(
            "\n[sources.stalled-sftp-{i}]\nkind = \"sftp\"\npartner = \"demo-carehome\"\nhost = \"127.0.0.1\"\nport = {}\nuser = \"x\"\nprivate_key = \"keys/demo-carehome\"\nhost_key = \"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\"\n{common}",
            server.port
        ));
        config.push_str(&format!(
            "\n[sources.stalled-ftp-{i}]\nkind = \"ftp\"\npartner = \"demo-carehome\"\nhost = \"127.0.0.1\"\nport = {}\nuser = \"x\"\npassword_file = \"ftp-password\"\ntls = \"none\"\ninsecure_plaintext = true\n{common}",
            server.port
        ));
    }
    d.write_config(&config);
    let out = d.dg(&["check-config"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let daemon = d.start();
    // The first hundred attempts settle what the process holds.
    wait_for("100 attempts", Duration::from_secs(60), || {
        server.accepted() >= 100
    });
    let (fds_before, rss_before) = (daemon.open_fds(), daemon.rss_mib());
    let started = std::time::Instant::now();
    wait_for("1,100 attempts", Duration::from_secs(120), || {
        server.accepted() >= 1_100
    });
    let took = started.elapsed();
    // Give the last attempts their timeout, then compare.
    std::thread::sleep(Duration::from_millis(300));
    let (fds_after, rss_after) = (daemon.open_fds(), daemon.rss_mib());
    eprintln!(
        "1,000 stalled attempts in {took:?}: descriptors {fds_before} -> {fds_after}, RSS {rss_before} -> {rss_after} MiB, peak {} MiB",
        daemon.peak_rss_mib()
    );
    // At most one connection a source may be in the middle of.
    assert!(
        fds_after <= fds_before + 16,
        "descriptors {fds_before} -> {fds_after}: connections left open"
    );
    assert!(
        rss_after <= rss_before + 16,
        "RSS {rss_before} -> {rss_after} MiB"
    );
    assert!(daemon.peak_rss_mib() < 200);
    // Each source says what is wrong; the daemon still serves partners.
    let status: serde_json::Value =
        serde_json::from_slice(&d.dg(&["status", "--json"]).stdout).unwrap();
    let sources = status["sources"].as_array().unwrap();
    let stalled: Vec<&serde_json::Value> = sources
        .iter()
        .filter(|s| s["source"].as_str().unwrap().starts_with("stalled"))
        .collect();
    assert_eq!(stalled.len(), 16, "{status}");
    for s in stalled {
        assert!(
            s["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("no answer within 250ms")),
            "{s}"
        );
    }
    let out = sftp(&d, daemon.sftp_port(), &demo_key(&d), "ls inbox\n");
    assert!(out.status.success(), "{}", text(&out.stderr));
    daemon.terminate();
}

#[test]
fn a_ledger_locked_by_another_process_is_waited_out_and_no_file_is_skipped() {
    let d = Deployment::new();
    let daemon = d.start();
    // Another process takes the ledger's write lock and keeps it.
    let mut locker = rusqlite::Connection::open(d.path("spool/ledger.db")).unwrap();
    let lock = locker
        .transaction_with_behavior(rusqlite::TransactionBehavior::Exclusive)
        .unwrap();
    for i in 0..5 {
        d.drop_file(
            &format!("news2_{i}.csv"),
            news2_csv(50 + i, 5, i * 100).as_bytes(),
        );
    }
    let upload = d.write_input("news2_up.csv", news2_csv(7, 3, 900).as_bytes());
    let put = format!(
        "sftp.put({:?}, 'inbox/news2_up.csv')\nprint('put')\n",
        upload.display().to_string()
    );
    let port = daemon.sftp_port();
    let out = std::thread::scope(|scope| {
        let uploader = scope.spawn(|| paramiko(&d, port, &put));
        std::thread::sleep(Duration::from_secs(8));
        // Nothing got past the lock, and nothing was given up on: the
        // dropped files wait where they are and the upload is not answered.
        assert_eq!(file_names(&d.drop_folder()).len(), 5);
        if uploader.is_finished() {
            let out = uploader.join().unwrap();
            panic!(
                "answered under the lock: {} {}",
                text(&out.stdout),
                text(&out.stderr)
            );
        }
        lock.rollback().unwrap();
        uploader.join().unwrap()
    });
    assert!(text(&out.stdout).contains("put"), "{}", text(&out.stderr));
    wait_for("every file loaded", Duration::from_secs(60), || {
        d.files().iter().filter(|f| f["state"] == "loaded").count() == 6
    });
    let log = daemon.terminate();
    assert!(
        log.contains("the ledger is locked by another writer; waiting for it"),
        "said why: {log}"
    );
    let rows: i64 = d
        .files()
        .iter()
        .map(|f| f["rows_loaded"].as_i64().unwrap())
        .sum();
    assert_eq!(rows, (50..55).sum::<i64>() + 7, "every row, once");
    assert!(file_names(&d.drop_folder()).is_empty());
    assert_eq!(d.string("PRAGMA integrity_check"), "ok");
}

/// Builds the LD_PRELOAD shim (`tests/fixtures/eio.c`) that fails the
/// ledger's writes and syncs with EIO while `flag` exists.
fn eio_shim(d: &Deployment) -> PathBuf {
    let shim = d.path("eio.so");
    let out = Command::new("cc")
        .args(["-shared", "-fPIC", "-O2", "-o"])
        .arg(&shim)
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/eio.c"))
        .arg("-ldl")
        .output()
        .expect("cc (the Rust build needs it too)");
    assert!(out.status.success(), "{}", text(&out.stderr));
    shim
}

#[test]
fn ledger_io_errors_are_said_and_retried_and_no_file_is_skipped() {
    let d = Deployment::new();
    let shim = eio_shim(&d);
    let flag = d.path("ledger-fails");
    let daemon = d.start_with(|command| {
        command
            .env("LD_PRELOAD", &shim)
            .env("DROPGATE_TEST_EIO", &flag);
    });
    d.drop_file("news2_before.csv", news2_csv(4, 2, 0).as_bytes());
    wait_for("the first file", Duration::from_secs(30), || {
        d.files().iter().any(|f| f["state"] == "loaded")
    });

    // The disk under the ledger fails every write and sync.
    fs::write(&flag, "").unwrap();
    for i in 0..3 {
        d.drop_file(
            &format!("news2_{i}.csv"),
            news2_csv(10 + i, 3, 100 * (i + 1)).as_bytes(),
        );
    }
    let upload = d.write_input("news2_up.csv", news2_csv(7, 3, 900).as_bytes());
    // OpenSSH's client, which (unlike paramiko) reports a failed close.
    let put = format!("put {} inbox/news2_up.csv\n", upload.display());
    let port = daemon.sftp_port();
    let key = demo_key(&d);
    let out = sftp(&d, port, &key, &put);
    assert!(
        !out.status.success(),
        "an upload not recorded is not acknowledged"
    );
    assert!(
        text(&out.stderr).contains("close remote: Failure"),
        "{}",
        text(&out.stderr)
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        d.files().len(),
        1,
        "nothing recorded while the ledger fails"
    );
    assert_eq!(
        file_names(&d.drop_folder()).len(),
        3,
        "the dropped files wait where they are"
    );
    let log = daemon.log();
    assert!(log.contains("disk I/O error"), "said why: {log}");

    // The disk mends: everything is taken, once, by itself.
    fs::remove_file(&flag).unwrap();
    wait_for("the waiting files", Duration::from_secs(60), || {
        d.files().iter().filter(|f| f["state"] == "loaded").count() == 4
    });
    let out = sftp(&d, port, &key, &put);
    assert!(out.status.success(), "{}", text(&out.stderr));
    wait_for("the upload", Duration::from_secs(30), || {
        d.files().iter().filter(|f| f["state"] == "loaded").count() == 5
    });

    // Failing in the middle of a load: a file long enough to be loading
    // when the disk starts failing.
    let big = 300_000;
    d.drop_file("news2_big.csv", news2_csv(big, 500, 10_000).as_bytes());
    wait_for("the big file received", Duration::from_secs(60), || {
        d.files().len() == 6
    });
    fs::write(&flag, "").unwrap();
    wait_for("the load to fail", Duration::from_secs(60), || {
        daemon
            .log()
            .contains("processing failed; retrying every 5s")
    });
    assert_eq!(
        d.string("SELECT state FROM files WHERE name = 'news2_big.csv'"),
        "received",
        "a load that failed is not half there"
    );
    fs::remove_file(&flag).unwrap();
    wait_for("the big file loaded", Duration::from_secs(120), || {
        d.files().iter().filter(|f| f["state"] == "loaded").count() == 6
    });
    let log = daemon.terminate();
    let rows: i64 = d
        .files()
        .iter()
        .map(|f| f["rows_loaded"].as_i64().unwrap())
        .sum();
    assert_eq!(
        rows,
        4 + 10 + 11 + 12 + 7 + i64::from(big),
        "every row, once"
    );
    assert_eq!(
        d.count("SELECT count(*) FROM observation_records") as u64,
        (rows as u64) * 8,
        "no record of the failed load kept"
    );
    assert_eq!(log.matches("processing failed").count(), 1, "{log}");
    assert!(log.contains("processing works again"), "{log}");
    assert!(file_names(&d.drop_folder()).is_empty());
    assert_eq!(d.string("PRAGMA integrity_check"), "ok");
    assert_payloads_match_ledger(&d);
    assert!(!log.contains("panicked"), "{log}");
    // Said when it began and when it ended, not on every retry.
    assert_eq!(
        log.matches("landing failed; will retry").count(),
        1,
        "{log}"
    );
    assert!(log.contains("landing works again"), "{log}");
    eprintln!(
        "while the ledger failed: {} lines in the log about it",
        log.lines().filter(|l| l.contains("disk I/O error")).count()
    );
}
