//! `dropgate run` watching the demo drop folder.

use std::fs;
use std::time::{Duration, Instant};

use crate::harness::*;

fn states(d: &Deployment) -> Vec<(String, String)> {
    d.files()
        .iter()
        .map(|f| {
            (
                f["name"].as_str().unwrap().to_string(),
                f["state"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn a_dropped_file_is_loaded_and_the_senders_copy_removed() {
    let d = Deployment::new();
    let daemon = d.start();
    let plain = d.write_input("news2_drop.csv", news2_csv(20, 4, 0).as_bytes());
    let encrypted = d.encrypt(&plain, false);
    let started = Instant::now();
    d.drop_file("news2_drop.csv.age", &fs::read(&encrypted).unwrap());
    wait_for("the file to load", Duration::from_secs(20), || {
        d.count("SELECT count(*) FROM files WHERE state = 'loaded'") == 1
    });
    let took = started.elapsed();
    wait_for("the sender's copy to go", Duration::from_secs(5), || {
        !d.drop_folder().join("news2_drop.csv.age").exists()
    });
    let log = daemon.terminate();
    assert!(took < Duration::from_secs(5), "took {took:?}");
    let file = &d.files()[0];
    assert_eq!(file["records"], 4 + 20 * 8);
    assert!(file["sender_removed_at"].is_string());
    let events: Vec<String> = d.show(1)["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(events, ["received", "sender_copy_removed", "loaded"]);
    assert!(!log.contains(&nhs_number(1)), "no NHS number in the log");
    assert!(!log.contains("Family1"), "no names in the log");
}

#[test]
fn temporary_names_are_ignored_until_renamed() {
    let d = Deployment::new();
    let _daemon = d.start();
    let body = news2_csv(3, 3, 0);
    for name in [
        ".news2_hidden.csv",
        "news2_up.csv.part",
        "news2_up.csv.tmp",
        "news2_up.csv.filepart",
    ] {
        fs::write(d.drop_folder().join(name), &body).unwrap();
    }
    std::thread::sleep(Duration::from_millis(1500));
    assert!(d.files().is_empty(), "{:?}", states(&d));
    fs::rename(
        d.drop_folder().join("news2_up.csv.part"),
        d.drop_folder().join("news2_up.csv"),
    )
    .unwrap();
    wait_for("the renamed file", Duration::from_secs(10), || {
        d.count("SELECT count(*) FROM files WHERE state = 'loaded'") == 1
    });
    assert!(d.drop_folder().join(".news2_hidden.csv").exists());
}

#[test]
fn a_file_written_slowly_is_taken_only_when_complete() {
    let d = Deployment::with_config(
        &fast(SHIPPED_CONFIG).replace("min_age = \"300ms\"", "min_age = \"1s\""),
    );
    let _daemon = d.start();
    let body = news2_csv(40, 5, 0);
    let path = d.drop_folder().join("news2_slow.csv");
    fs::write(&path, "").unwrap();
    // Each piece arrives well within min_age of the last, as a slow upload would.
    for chunk in body.as_bytes().chunks(body.len() / 8 + 1) {
        append(&path, chunk);
        std::thread::sleep(Duration::from_millis(300));
        assert!(d.files().is_empty(), "taken while still growing");
    }
    wait_for("the completed file", Duration::from_secs(15), || {
        d.count("SELECT count(*) FROM files WHERE state <> 'received'") == 1
    });
    let file = &d.files()[0];
    assert_eq!(file["state"], "loaded", "{file}");
    assert_eq!(file["rows_loaded"], 40);
}

#[test]
fn a_file_renamed_into_the_folder_is_taken_without_waiting_for_min_age() {
    let d = Deployment::with_config(
        &fast(SHIPPED_CONFIG).replace("min_age = \"300ms\"", "min_age = \"1h\""),
    );
    let _daemon = d.start();
    let outside = d.path("news2_outside.csv");
    fs::write(&outside, news2_csv(4, 2, 0)).unwrap();
    fs::write(
        d.drop_folder().join("news2_in_place.csv"),
        news2_csv(4, 2, 100),
    )
    .unwrap();
    fs::rename(&outside, d.drop_folder().join("news2_renamed.csv")).unwrap();
    wait_for("the renamed file", Duration::from_secs(10), || {
        d.count("SELECT count(*) FROM files WHERE state = 'loaded'") == 1
    });
    std::thread::sleep(Duration::from_millis(500));
    let files = d.files();
    assert_eq!(files.len(), 1, "{:?}", states(&d));
    assert_eq!(files[0]["name"], "news2_renamed.csv");
    assert!(d.drop_folder().join("news2_in_place.csv").exists());
}

#[test]
fn files_dropped_while_stopped_are_taken_at_start() {
    let d = Deployment::new();
    drop(d.start().terminate());
    d.drop_file("news2_early.csv", news2_csv(2, 2, 0).as_bytes());
    let _daemon = d.start();
    wait_for("the early file", Duration::from_secs(10), || {
        d.count("SELECT count(*) FROM files WHERE state = 'loaded'") == 1
    });
}

#[test]
fn sigterm_finishes_the_work_in_hand_and_exits_cleanly() {
    let d = Deployment::new();
    let daemon = d.start();
    for i in 0..20 {
        d.drop_file(
            &format!("news2_t{i}.csv"),
            news2_csv(200, 10, i * 1000).as_bytes(),
        );
    }
    wait_for("landing to start", Duration::from_secs(10), || {
        d.count("SELECT count(*) FROM files") > 0
    });
    daemon.terminate();
    // Whatever was received is either processed or still queued; none is half-done.
    let received = d.count("SELECT count(*) FROM files WHERE state = 'received'");
    let loaded = d.count("SELECT count(*) FROM files WHERE state = 'loaded'");
    let partial = d.count(
        "SELECT count(*) FROM files f WHERE state = 'loaded' AND
           (SELECT count(*) FROM observation_records o WHERE o.file_id = f.id) <> 200 * 8",
    );
    assert_eq!(partial, 0);
    let _daemon = d.start();
    wait_for("every file", Duration::from_secs(30), || {
        d.count("SELECT count(*) FROM files WHERE state = 'loaded'") == 20
    });
    assert!(loaded + received <= 20);
}

/// Kills the daemon with SIGKILL at varying moments while files arrive, and
/// restarts it: every file must end loaded exactly once, none lost.
#[test]
fn kill_9_at_any_moment_loses_and_duplicates_nothing() {
    let d = Deployment::new();
    let files = 24u32;
    let rows = 500u32;
    let mut daemon = Some(d.start());
    let mut seed: u64 = 0x5eed_1234;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for i in 0..files {
        d.drop_file(
            &format!("news2_k{i:02}.csv"),
            news2_csv(rows, 25, i * 10_000).as_bytes(),
        );
        if i % 4 == 3 {
            std::thread::sleep(Duration::from_millis(next() % 400));
            daemon.take().unwrap().kill9();
            daemon = Some(d.start());
        }
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    // A sender copy a kill left behind after its commit is removed at the
    // next scan, which may come after every file is loaded.
    while d.count("SELECT count(*) FROM files WHERE state = 'loaded'") != i64::from(files)
        || fs::read_dir(d.drop_folder()).unwrap().count() > 0
    {
        assert!(
            Instant::now() < deadline,
            "not every file loaded and every sender copy removed: {:?}\ndrop folder: {:?}\nlog:\n{}",
            states(&d),
            fs::read_dir(d.drop_folder())
                .unwrap()
                .flatten()
                .map(|e| e.file_name())
                .collect::<Vec<_>>(),
            daemon.as_ref().unwrap().log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    daemon.take().unwrap().terminate();
    assert_eq!(
        d.count("SELECT count(*) FROM files"),
        i64::from(files),
        "{:?}",
        states(&d)
    );
    assert_eq!(
        d.count("SELECT count(*) FROM observation_records"),
        i64::from(files * rows * 8),
        "every row loaded exactly once"
    );
    assert_eq!(
        d.count("SELECT count(DISTINCT file_id) FROM observation_records"),
        i64::from(files)
    );
    assert_eq!(
        fs::read_dir(d.drop_folder()).unwrap().count(),
        0,
        "every sender copy removed"
    );
    assert_eq!(fs::read_dir(d.path("spool/incoming")).unwrap().count(), 0);
    assert_eq!(fs::read_dir(d.path("spool/tmp")).unwrap().count(), 0);
    assert_payloads_match_ledger(&d);
    // Each archived once: small files in the ledger, the rest in the spool.
    assert_eq!(
        fs::read_dir(d.path("spool/archive")).unwrap().count() as i64
            + d.count("SELECT count(*) FROM held_payloads"),
        i64::from(files)
    );
}

/// SIGKILL while a large file, recorded as received, is decrypted and
/// loaded: the restart must finish it, with every row exactly once. (Kills
/// while files are copied in are `kill_points`' business.)
#[test]
fn kill_9_during_a_large_file_loses_and_duplicates_nothing() {
    let d = Deployment::new();
    let rows = 60_000u32;
    let mut daemon = d.start();
    // After the file is recorded as received: at once, soon, later.
    let delays_ms = [0u64, 100, 300];
    let mut interrupted = 0;
    for (i, delay) in delays_ms.iter().enumerate() {
        let plain = d.write_input(
            &format!("news2_big{i}.csv"),
            news2_csv(rows, 300, i as u32 * 100_000).as_bytes(),
        );
        let encrypted = d.encrypt(&plain, false);
        d.drop_file(
            &format!("news2_big{i}.csv.age"),
            &fs::read(&encrypted).unwrap(),
        );
        let expected = i as i64 + 1;
        wait_for("the large file to land", Duration::from_secs(60), || {
            d.count("SELECT count(*) FROM files") == expected
        });
        std::thread::sleep(Duration::from_millis(*delay));
        daemon.kill9();
        if d.count("SELECT count(*) FROM files WHERE state = 'loaded'") < expected {
            interrupted += 1;
        }
        daemon = d.start();
        wait_for(
            "the large file after restart",
            Duration::from_secs(120),
            || d.count("SELECT count(*) FROM files WHERE state = 'loaded'") == expected,
        );
        assert_eq!(
            d.count("SELECT count(*) FROM files"),
            expected,
            "{:?}",
            states(&d)
        );
        assert_eq!(
            d.count("SELECT count(*) FROM observation_records"),
            expected * i64::from(rows) * 8
        );
    }
    daemon.terminate();
    assert!(
        interrupted >= 2,
        "only {interrupted} kills came before the load finished"
    );
    assert_eq!(fs::read_dir(d.drop_folder()).unwrap().count(), 0);
    assert_eq!(fs::read_dir(d.path("spool/archive")).unwrap().count(), 3);
    assert_payloads_match_ledger(&d);
}

/// SIGKILL as soon as an SFTP client has its answers. A small upload is
/// answered once the ledger holds it, and nothing of it is in the spool;
/// the restart must load every one, exactly once.
#[test]
fn kill_9_just_after_sftp_puts_loses_and_duplicates_nothing() {
    let d = Deployment::new();
    let (rounds, files, rows) = (3u32, 10u32, 20u32);
    let mut held_at_kill = 0;
    for round in 0..rounds {
        let daemon = d.start();
        let port = daemon.sftp_port();
        let mut batch = String::new();
        for i in 0..files {
            let seed = (round * files + i) * 1_000;
            let name = format!("news2_s{round}_{i:02}.csv");
            let path = d.write_input(&name, news2_csv(rows, 5, seed).as_bytes());
            batch.push_str(&format!("put {} inbox/{name}\n", path.display()));
        }
        let out = sftp(&d, port, &demo_key(&d), &batch);
        assert!(out.status.success(), "{}", text(&out.stderr));
        daemon.kill9();
        held_at_kill += d.count("SELECT count(*) FROM held_payloads");
    }
    let daemon = d.start();
    wait_for("every upload loaded", Duration::from_secs(30), || {
        d.count("SELECT count(*) FROM files WHERE state = 'loaded'") == i64::from(rounds * files)
    });
    daemon.terminate();
    eprintln!("uploads still held in the ledger at the kills: {held_at_kill}");
    assert_eq!(
        d.count("SELECT count(*) FROM files"),
        i64::from(rounds * files)
    );
    // Small uploads: each archived in the ledger, none in the spool.
    assert_eq!(
        d.count("SELECT count(*) FROM held_payloads"),
        i64::from(rounds * files)
    );
    assert_eq!(fs::read_dir(d.path("spool/archive")).unwrap().count(), 0);
    assert_eq!(
        d.count("SELECT count(*) FROM observation_records"),
        i64::from(rounds * files * rows * 8),
        "every row loaded exactly once"
    );
    assert_payloads_match_ledger(&d);
}

/// The rows of one large file, and whether a SIGTERM while it is being
/// loaded let it finish (`loaded`, every record) or cut it off (`received`,
/// no record), as `stop_deadline` allows.
/// Enough rows that loading takes seconds, not milliseconds.
const ROWS: u32 = 100_000;

fn sigterm_during_a_large_file(stop_deadline: &str) -> (Deployment, String, i64) {
    let d = Deployment::with_config(&fast(SHIPPED_CONFIG).replace(
        "stop_deadline = \"30s\"",
        &format!("stop_deadline = \"{stop_deadline}\""),
    ));
    let daemon = d.start();
    d.drop_file("news2_large.csv", news2_csv(ROWS, 500, 0).as_bytes());
    wait_for("processing to start", Duration::from_secs(20), || {
        daemon.log().contains(" processing file_id=")
    });
    let log = daemon.terminate();
    assert!(log.contains("finishing the files in hand"), "{log}");
    let state = d.string("SELECT state FROM files");
    let records = d.count("SELECT count(*) FROM observation_records");
    (d, state, records)
}

#[test]
fn sigterm_during_a_large_file_lets_it_finish_within_the_stop_deadline() {
    let (_d, state, records) = sigterm_during_a_large_file("60s");
    assert_eq!(state, "loaded");
    assert_eq!(records, ROWS as i64 * 8);
}

#[test]
fn a_file_the_stop_deadline_cuts_off_stays_received_and_is_loaded_once_at_the_next_start() {
    let (d, state, records) = sigterm_during_a_large_file("0s");
    assert_eq!(state, "received");
    assert_eq!(records, 0);
    let _daemon = d.start();
    wait_for("the file loaded", Duration::from_secs(60), || {
        d.count("SELECT count(*) FROM files WHERE state = 'loaded'") == 1
    });
    assert_eq!(
        d.count("SELECT count(*) FROM observation_records"),
        ROWS as i64 * 8
    );
}

#[test]
fn sighup_reloads_a_valid_config_refuses_an_invalid_one_and_an_upload_in_progress_survives_both() {
    let d = Deployment::new();
    let daemon = d.start();
    let port = daemon.sftp_port();
    let good = std::fs::read_to_string(d.config_path()).unwrap();
    let (started, go) = (d.path("upload-started"), d.path("upload-go"));
    // An upload that stops half way until told to go on, on one session.
    let whole = news2_csv(40, 5, 0);
    let (head, tail) = whole.split_at(whole.len() / 2);
    let script = format!(
        "import os\nf = sftp.open('inbox/news2_during_reload.csv', 'wb')\nf.write({head:?})\nf.flush()\nopen({:?}, 'w').close()\nwhile not os.path.exists({:?}):\n    time.sleep(0.05)\nf.write({tail:?})\nf.close()\nprint('uploaded')\n",
        started.display().to_string(),
        go.display().to_string()
    );
    let with_extra = format!(
        "{good}\n[sources.extra-drop]\nkind = \"local\"\npartner = \"demo-carehome\"\npath = \"../spool/drop/extra\"\nmin_age = \"300ms\"\ncheck_interval = \"50ms\"\n"
    );
    std::thread::scope(|scope| {
        let upload = scope.spawn(|| paramiko(&d, port, &script));
        wait_for("the upload half done", Duration::from_secs(20), || {
            started.exists()
        });

        // Invalid: every problem logged with its position; nothing changes.
        d.write_config(&good.replace("retention_days = 90", "retention_days = 0"));
        daemon.hangup();
        wait_for("the refusal logged", Duration::from_secs(10), || {
            daemon
                .log()
                .contains("reload: still running the configuration in force")
        });
        let log = daemon.log();
        let problem = log
            .lines()
            .find(|l| l.contains("reload: configuration refused"))
            .unwrap_or_else(|| panic!("{log}"));
        assert!(problem.contains("dropgate.toml:"), "no position: {problem}");
        assert!(problem.contains("retention_days"), "{problem}");

        // Valid: a second drop folder, applied while the upload is open.
        d.write_config(&with_extra);
        daemon.hangup();
        wait_for("the reload applied", Duration::from_secs(20), || {
            daemon.log().contains("configuration reloaded")
        });
        std::fs::write(&go, "").unwrap();
        let out = upload.join().unwrap();
        assert!(
            out.status.success() && text(&out.stdout).contains("uploaded"),
            "the open upload did not survive the reloads: {}",
            text(&out.stderr)
        );
    });
    wait_for("the upload loaded", Duration::from_secs(20), || {
        d.count("SELECT count(*) FROM files WHERE name = 'news2_during_reload.csv' AND state = 'loaded'") == 1
    });
    // The new source works.
    let extra = d.path("spool/drop/extra");
    std::fs::write(d.path("staging-extra.csv"), news2_csv(3, 2, 900)).unwrap();
    std::fs::rename(d.path("staging-extra.csv"), extra.join("news2_extra.csv")).unwrap();
    wait_for(
        "the file from the new folder",
        Duration::from_secs(20),
        || {
            d.count("SELECT count(*) FROM files WHERE source = 'extra-drop' AND state = 'loaded'")
                == 1
        },
    );
    // Unchanged: said so.
    daemon.hangup();
    wait_for("no change noticed", Duration::from_secs(10), || {
        daemon
            .log()
            .contains("reload: the configuration is unchanged")
    });
    daemon.terminate();
    assert_eq!(
        d.count("SELECT count(*) FROM files WHERE name = 'news2_during_reload.csv'"),
        1
    );
    let reloads = d.strings(
        "SELECT json_extract(detail, '$.sha256') FROM audit_events
         WHERE action = 'config_loaded' AND json_extract(detail, '$.reload') = 1",
    );
    assert_eq!(
        reloads,
        [dropgate::digest::sha256_hex(with_extra.as_bytes())]
    );
}

#[test]
fn sighup_reads_partners_key_files_again_without_dropping_anyone() {
    let d = Deployment::new();
    let daemon = d.start();
    let port = daemon.sftp_port();
    let key = new_key(&d, "second-key");
    let key = key.display().to_string();
    let refused = sftp(&d, port, &key, "ls\n");
    assert!(
        !refused.status.success(),
        "a key not yet authorised logged in"
    );
    let authorized = d.path("config/keys/demo-carehome.pub");
    let mut keys = std::fs::read_to_string(&authorized).unwrap();
    keys.push_str(&format!("{}\n", public_key_line(&d.path("second-key.pub"))));
    std::fs::write(&authorized, keys).unwrap();
    daemon.hangup();
    wait_for("the keys read again", Duration::from_secs(10), || {
        daemon
            .log()
            .contains("SFTP accounts, keys and host key read again")
    });
    let file = d.write_input("news2_new_key.csv", news2_csv(2, 2, 0).as_bytes());
    let out = sftp(
        &d,
        port,
        &key,
        &format!("put {} inbox/news2_new_key.csv\n", file.display()),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    // The old key still logs in.
    assert!(sftp(&d, port, &demo_key(&d), "ls\n").status.success());
    daemon.terminate();
}
