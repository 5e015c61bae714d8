//! Kill points: the daemon is killed with SIGKILL at seeded moments while a
//! seeded mix of files arrives in its drop folder (valid, invalid, the same
//! bytes again under a new name, and large enough to be streamed), and
//! started again each time. At the end every file is in the ledger once, in
//! the state its content calls for, with its records loaded exactly once.
//!
//! `DROPGATE_KILL_POINTS` sets how many kills (default 100);
//! `DROPGATE_KILL_SEED` replays a run (the seed is printed, and named in
//! every failure).

use std::fs;
use std::time::{Duration, Instant};

use crate::harness::*;

/// A small, seeded pseudo-random sequence (xorshift): the same seed, the
/// same run.
struct Seeded(u64);

impl Seeded {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// What a dropped file should end as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Loaded, with `rows` rows.
    Valid { rows: u32 },
    /// The same bytes as the valid file `sent[of]`: whichever of them is
    /// received first is loaded, the others are duplicates.
    Again { of: usize },
    /// Quarantined: its header is not the feed's.
    Invalid,
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The run's seed: `DROPGATE_KILL_SEED`, or one from the clock; printed.
fn seed(kill_points: u32) -> u64 {
    let clock = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let seed: u64 = env_or("DROPGATE_KILL_SEED", clock | 1);
    eprintln!("kill points: {kill_points}, seed {seed} (DROPGATE_KILL_SEED={seed} replays it)");
    seed
}

/// The states of the files recorded under this name (an upload's may carry
/// its folder).
fn states_of(d: &Deployment, name: &str) -> Vec<String> {
    let conn = d.ledger();
    let mut stmt = conn
        .prepare("SELECT state FROM files WHERE name = ?1 OR name LIKE '%/' || ?1")
        .unwrap();
    stmt.query_map([name], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

#[test]
fn a_hundred_kill_points_lose_and_duplicate_nothing() {
    let kill_points: u32 = env_or("DROPGATE_KILL_POINTS", 100);
    let seed = seed(kill_points);
    let mut random = Seeded(seed);
    let d = Deployment::new();
    let mut sent: Vec<(String, Kind)> = Vec::new();
    // Index in `sent`, and bytes, of each valid file.
    let mut valid_bodies: Vec<(usize, String)> = Vec::new();
    let mut daemon = d.start();
    for point in 0..kill_points {
        for _ in 0..1 + random.below(4) {
            let n = sent.len();
            let (kind, body) = match random.below(10) {
                0 if !valid_bodies.is_empty() => {
                    let (of, body) =
                        &valid_bodies[random.below(valid_bodies.len() as u64) as usize];
                    (Kind::Again { of: *of }, body.clone())
                }
                1 => (
                    Kind::Invalid,
                    news2_csv(5, 2, n as u32 * 1000).replacen("resident_id", "resident", 1),
                ),
                // Large enough to be streamed in a transaction of its own.
                2 => (
                    Kind::Valid { rows: 4000 },
                    news2_csv(4000, 40, n as u32 * 10_000),
                ),
                _ => {
                    let rows = 1 + random.below(40) as u32;
                    (Kind::Valid { rows }, news2_csv(rows, 7, n as u32 * 10_000))
                }
            };
            if matches!(kind, Kind::Valid { .. }) {
                valid_bodies.push((n, body.clone()));
            }
            let name = format!("news2_p{point:03}_{n:04}.csv");
            d.drop_file(&name, body.as_bytes());
            sent.push((name, kind));
        }
        std::thread::sleep(Duration::from_millis(random.below(150)));
        daemon.kill9();
        let integrity = d.string("PRAGMA integrity_check");
        assert_eq!(integrity, "ok", "seed {seed}, after kill {point}");
        daemon = d.start();
    }

    // The last start takes up whatever the kills left.
    let deadline = Instant::now() + Duration::from_secs(120);
    let settled = || {
        d.count("SELECT count(*) FROM files WHERE state NOT IN ('received')") == sent.len() as i64
            && fs::read_dir(d.drop_folder()).unwrap().count() == 0
    };
    while !settled() {
        assert!(
            Instant::now() < deadline,
            "seed {seed}: not everything settled: {} files recorded of {} sent, {} left in the drop folder\n{}",
            d.count("SELECT count(*) FROM files"),
            sent.len(),
            fs::read_dir(d.drop_folder()).unwrap().count(),
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    daemon.terminate();

    let state_of = |name: &str| states_of(&d, name);
    let mut rows_loaded = 0u64;
    for (i, (name, kind)) in sent.iter().enumerate() {
        match kind {
            Kind::Valid { rows } => {
                rows_loaded += u64::from(*rows);
                // It and its copies: one loaded, the rest duplicates.
                let mut states: Vec<String> = sent
                    .iter()
                    .enumerate()
                    .filter(|(j, (_, k))| *j == i || *k == Kind::Again { of: i })
                    .flat_map(|(_, (name, _))| state_of(name))
                    .collect();
                states.sort();
                assert!(!states.is_empty(), "seed {seed}: {name} never recorded");
                let mut expected = vec!["duplicate".to_string(); states.len() - 1];
                expected.push("loaded".into());
                assert_eq!(states, expected, "seed {seed}: {name} and its copies");
            }
            Kind::Again { .. } => {
                assert_eq!(state_of(name).len(), 1, "seed {seed}: {name} recorded once");
            }
            Kind::Invalid => {
                assert_eq!(state_of(name), ["quarantined"], "seed {seed}: {name}");
            }
        }
    }
    assert_eq!(
        d.count("SELECT count(*) FROM observation_records") as u64,
        rows_loaded * 8,
        "seed {seed}: every row loaded exactly once"
    );
    // Every rejected file is on disk beside its report.
    let quarantined = d.strings("SELECT spool_name FROM files WHERE state = 'quarantined'");
    for spool_name in &quarantined {
        assert!(
            d.path(&format!("spool/quarantine/{spool_name}")).exists()
                && d.path(&format!("spool/quarantine/{spool_name}.report.json"))
                    .exists(),
            "seed {seed}: {spool_name} is not in quarantine with its report"
        );
    }
    // The drop folder is empty (above), and no copy went before its file
    // was received. (A kill between a removal and its record leaves the
    // record out; the file itself is received either way.)
    assert_eq!(
        d.count("SELECT count(*) FROM files WHERE sender_removed_at < received_at"),
        0,
        "seed {seed}: a sender copy removed before its file was received"
    );
    assert_payloads_match_ledger(&d);
    eprintln!(
        "{kill_points} kills survived: {} files sent ({} valid, {} copies, {} invalid), {rows_loaded} rows loaded once",
        sent.len(),
        sent.iter()
            .filter(|(_, k)| matches!(k, Kind::Valid { .. }))
            .count(),
        sent.iter()
            .filter(|(_, k)| matches!(k, Kind::Again { .. }))
            .count(),
        sent.iter().filter(|(_, k)| *k == Kind::Invalid).count(),
    );
}

/// Kills while an OpenSSH `sftp` client is putting files into the embedded
/// server: every put the client had its answer to is in the ledger once,
/// loaded; a put cut off may be there (at most once, whole) or not; nothing
/// partial is ever taken.
#[test]
fn kills_during_sftp_puts_lose_no_answered_upload() {
    let kill_points: u32 = env_or("DROPGATE_KILL_POINTS", 100) / 4;
    let seed = seed(kill_points);
    let mut random = Seeded(seed);
    let d = Deployment::new();
    let key = demo_key(&d);
    // Name → rows, and whether the client was answered.
    let mut puts: Vec<(String, u32, bool)> = Vec::new();
    let mut daemon = d.start();
    for point in 0..kill_points {
        let port = daemon.sftp_port();
        let mut batch = String::new();
        let first = puts.len();
        for i in 0..2 + random.below(6) as usize {
            let n = first + i;
            // Some over 64 KiB, written to a staging file rather than held.
            let rows = if random.below(5) == 0 {
                1500
            } else {
                1 + random.below(30) as u32
            };
            let name = format!("news2_s{point:03}_{n:04}.csv");
            let path = d.write_input(&name, news2_csv(rows, 9, n as u32 * 10_000).as_bytes());
            batch.push_str(&format!("put {} inbox/{name}\n", path.display()));
            puts.push((name, rows, false));
        }
        let batch_file = d.write_input("sftp-kill-batch.txt", batch.as_bytes());
        let client = std::process::Command::new("sftp")
            .arg("-b")
            .arg(&batch_file)
            .args(["-i", &key, "-P", &port.to_string()])
            .args(SSH_CLIENT_OPTIONS)
            .arg("demo-carehome@127.0.0.1")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(random.below(120)));
        daemon.kill9();
        let out = client.wait_with_output().unwrap();
        // Batch mode echoes each command before it runs it and stops at the
        // first failure: a put was answered when the client went on to the
        // next command, or finished.
        let echoed = text(&out.stdout);
        let started: Vec<usize> = (first..puts.len())
            .filter(|&n| echoed.contains(&format!("inbox/{}", puts[n].0)))
            .collect();
        for &n in &started {
            let answered = out.status.success() || started.contains(&(n + 1));
            puts[n].2 = answered;
        }
        let integrity = d.string("PRAGMA integrity_check");
        assert_eq!(integrity, "ok", "seed {seed}, after kill {point}");
        daemon = d.start();
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while d.count("SELECT count(*) FROM files WHERE state = 'received'") > 0 {
        assert!(
            Instant::now() < deadline,
            "seed {seed}: files left received\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    daemon.terminate();

    let states_of = |name: &str| states_of(&d, name);
    let mut rows_loaded = 0u64;
    let mut answered = 0;
    for (name, rows, was_answered) in &puts {
        let states = states_of(name);
        if *was_answered {
            answered += 1;
            assert_eq!(states, ["loaded"], "seed {seed}: {name}, answered");
        } else {
            assert!(
                states.is_empty() || states == ["loaded"],
                "seed {seed}: {name}, cut off: {states:?}"
            );
        }
        if !states.is_empty() {
            rows_loaded += u64::from(*rows);
        }
    }
    assert_eq!(
        d.count("SELECT count(*) FROM observation_records") as u64,
        rows_loaded * 8,
        "seed {seed}: every row of every file taken loaded exactly once"
    );
    assert_payloads_match_ledger(&d);
    eprintln!(
        "{kill_points} kills during puts survived: {} puts, {answered} answered, {} taken",
        puts.len(),
        d.count("SELECT count(*) FROM files")
    );
}
