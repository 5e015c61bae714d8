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

use crate::ftpd::{Ftpd, USER as FTP_USER};
use crate::harness::*;
use crate::sshd::Sshd;

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

/// The shipped configuration polling `outgoing/` on a partner's SFTP server
/// and FTPS server, every 100 ms, and forwarding every loaded file by two
/// routes: to a hospital's SFTP server and to `incoming/` on the FTPS server.
fn polled_and_routed(sftp: &Sshd, ftp: &Ftpd, hospital: &Sshd) -> String {
    let polling = "folder = \"outgoing\"\nmatch = [\"news2_*\"]\npoll_interval = \"100ms\"\nmin_age = \"150ms\"\nafter = \"delete\"\ntimeout = \"5s\"\nretry_initial = \"100ms\"\nretry_max = \"500ms\"\n";
    format!(
        "{config}
[sources.partner-sftp]
kind = \"sftp\"
partner = \"demo-carehome\"
host = \"127.0.0.1\"
port = {sftp_port}
user = \"{sftp_user}\"
private_key = \"{sftp_key}\"
host_key = \"{sftp_host_key}\"
{polling}
[sources.partner-ftp]
kind = \"ftp\"
partner = \"demo-carehome\"
{ftp_login}{polling}
[destinations.hospital]
kind = \"sftp\"
host = \"127.0.0.1\"
port = {hospital_port}
user = \"{hospital_user}\"
private_key = \"{hospital_key}\"
host_key = \"{hospital_host_key}\"
folder = \"incoming\"
attempts = 3
retry_initial = \"100ms\"

[routes.to-hospital]
feed = \"news2\"
destination = \"hospital\"
consumer = \"demo-hospital\"

[destinations.archive]
kind = \"ftp\"
{ftp_login}folder = \"incoming\"
attempts = 3
retry_initial = \"100ms\"

[routes.to-archive]
feed = \"news2\"
destination = \"archive\"
consumer = \"demo-hospital\"
",
        config = fast(SHIPPED_CONFIG),
        sftp_port = sftp.port(),
        sftp_user = sftp.user(),
        sftp_key = sftp.client_key().display(),
        sftp_host_key = sftp.host_key(),
        ftp_login = format!(
            "host = \"127.0.0.1\"\nport = {}\nuser = \"{FTP_USER}\"\npassword_file = \"{}\"\ntls = \"explicit\"\nca_file = \"{}\"\n",
            ftp.port(),
            ftp.password_file().display(),
            ftp.ca_file().display()
        ),
        hospital_port = hospital.port(),
        hospital_user = hospital.user(),
        hospital_key = hospital.client_key().display(),
        hospital_host_key = hospital.host_key(),
    )
}

/// Partial copies, by path, size and modification time.
type Partials = std::collections::HashSet<(std::path::PathBuf, u64, std::time::SystemTime)>;

fn partials(paths: impl IntoIterator<Item = std::path::PathBuf>) -> Partials {
    paths
        .into_iter()
        .filter_map(|path| {
            let meta = fs::metadata(&path).ok()?;
            Some((path, meta.len(), meta.modified().ok()?))
        })
        .collect()
}

/// The polls' downloads in progress (or cut off).
fn partial_downloads(d: &Deployment) -> Partials {
    partials(
        ["partner-sftp", "partner-ftp"].map(|s| d.path(&format!("spool/pull/{s}/downloading"))),
    )
}

/// Uploads in progress (or cut off) under their temporary names.
fn partial_uploads(folders: &[&std::path::Path]) -> Partials {
    partials(folders.iter().flat_map(|dir| {
        file_names(dir)
            .into_iter()
            .filter(|n| n.ends_with(".part"))
            .map(|n| dir.join(n))
    }))
}

/// Kills while files are polled from a partner's SFTP server (OpenSSH) and
/// FTPS server (pure-ftpd, slowed so that kills land inside its transfers)
/// and forwarded by routes to a hospital's SFTP server and back to the FTPS
/// server: no server copy goes before its file is received, each file is
/// taken once, and each forwarding ends delivered (once, in the ledger) with
/// the exact bytes, under one name, with no partial upload left behind.
#[test]
fn kills_during_polls_and_pushes_lose_and_duplicate_nothing() {
    let kill_points: u32 = env_or("DROPGATE_KILL_POINTS", 100) * 3 / 10;
    let seed = seed(kill_points);
    let mut random = Seeded(seed);
    let partner_sftp = Sshd::start();
    let partner_ftp = Ftpd::tls_throttled(1024);
    let hospital = Sshd::start();
    let sftp_outgoing = partner_sftp.root().join("outgoing");
    fs::create_dir_all(&sftp_outgoing).unwrap();
    let ftp_outgoing = partner_ftp.folder("outgoing");
    let incoming = hospital.root().join("incoming");
    fs::create_dir_all(&incoming).unwrap();
    let archive = partner_ftp.folder("incoming");
    let d = Deployment::with_config(&polled_and_routed(&partner_sftp, &partner_ftp, &hospital));
    // Name, rows (None: invalid, to be quarantined and not forwarded), bytes.
    let mut sent: Vec<(String, Option<u32>, String)> = Vec::new();
    let (mut in_download, mut in_upload) = (0, 0);
    let (mut seen_downloads, mut seen_uploads) = (Partials::new(), Partials::new());
    let mut daemon = d.start();
    for point in 0..kill_points {
        for _ in 0..1 + random.below(3) {
            let n = sent.len();
            let (rows, body) = match random.below(8) {
                0 => (
                    None,
                    news2_csv(5, 2, n as u32 * 10_000).replacen("resident_id", "resident", 1),
                ),
                // Long enough that kills land inside its download and upload.
                1 => (Some(3000), news2_csv(3000, 30, n as u32 * 10_000)),
                _ => {
                    let rows = 1 + random.below(40) as u32;
                    (Some(rows), news2_csv(rows, 7, n as u32 * 10_000))
                }
            };
            let name = format!("news2_r{point:03}_{n:04}.csv");
            // Written under another name and renamed, as a partner's
            // system would, so no poll sees it half written.
            let staged = format!("tmp-{name}");
            if random.below(2) == 0 {
                fs::write(sftp_outgoing.join(&staged), &body).unwrap();
                fs::rename(sftp_outgoing.join(&staged), sftp_outgoing.join(&name)).unwrap();
            } else {
                partner_ftp.place(&format!("outgoing/{staged}"), body.as_bytes());
                fs::rename(ftp_outgoing.join(&staged), ftp_outgoing.join(&name)).unwrap();
            }
            sent.push((name, rows, body));
        }
        std::thread::sleep(Duration::from_millis(random.below(800)));
        daemon.kill9();
        // Where the kill landed: inside a download or an upload when a
        // partial copy is there that was not before it.
        let (downloads, uploads) = (
            partial_downloads(&d),
            partial_uploads(&[&incoming, &archive]),
        );
        in_download += usize::from(!downloads.is_subset(&seen_downloads));
        in_upload += usize::from(!uploads.is_subset(&seen_uploads));
        (seen_downloads, seen_uploads) = (downloads, uploads);
        let integrity = d.string("PRAGMA integrity_check");
        assert_eq!(integrity, "ok", "seed {seed}, after kill {point}");
        daemon = d.start();
    }

    let valid = sent.iter().filter(|(_, rows, _)| rows.is_some()).count() as i64;
    let deadline = Instant::now() + Duration::from_secs(180);
    let settled = || {
        file_names(&sftp_outgoing).is_empty()
            && file_names(&ftp_outgoing).is_empty()
            && d.count("SELECT count(*) FROM files WHERE state <> 'received'") == sent.len() as i64
            && d.count("SELECT count(*) FROM route_deliveries WHERE state = 'delivered'")
                == 2 * valid
    };
    while !settled() {
        assert!(
            Instant::now() < deadline,
            "seed {seed}: not settled: {} of {} files recorded, {} + {} left on the servers, deliveries {:?}\n{}",
            d.count("SELECT count(*) FROM files WHERE state <> 'received'"),
            sent.len(),
            file_names(&sftp_outgoing).len(),
            file_names(&ftp_outgoing).len(),
            d.strings("SELECT state || ' ' || count(*) FROM route_deliveries GROUP BY state"),
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    daemon.terminate();

    let mut rows_loaded = 0u64;
    let mut expected_names = Vec::new();
    for (name, rows, body) in &sent {
        let states = states_of(&d, name);
        match rows {
            Some(rows) => {
                assert_eq!(states, ["loaded"], "seed {seed}: {name}, taken once");
                rows_loaded += u64::from(*rows);
                let id = d.count(&format!("SELECT id FROM files WHERE name LIKE '%{name}'"));
                let forwarded = format!("news2-{id}.csv");
                for dir in [&incoming, &archive] {
                    assert_eq!(
                        fs::read_to_string(dir.join(&forwarded)).ok().as_ref(),
                        Some(body),
                        "seed {seed}: {name} forwarded as {forwarded}, exactly; {} has {:?}",
                        dir.display(),
                        file_names(dir)
                    );
                }
                expected_names.push(forwarded);
            }
            None => assert_eq!(states, ["quarantined"], "seed {seed}: {name}"),
        }
    }
    expected_names.sort();
    for dir in [&incoming, &archive] {
        assert_eq!(
            file_names(dir),
            expected_names,
            "seed {seed}: one copy of each forwarded file, no partial upload"
        );
    }
    assert_eq!(
        d.count("SELECT count(*) FROM observation_records") as u64,
        rows_loaded * 8,
        "seed {seed}: every row loaded exactly once"
    );
    assert_eq!(
        d.count("SELECT count(*) FROM route_deliveries"),
        2 * valid,
        "seed {seed}: each loaded file routed once by each route, quarantined ones never"
    );
    assert_eq!(
        d.count(
            "SELECT count(*) FROM (SELECT file_id FROM delivery_events WHERE event = 'delivered'
             GROUP BY file_id, destination HAVING count(*) > 1)"
        ),
        0,
        "seed {seed}: a forwarding recorded as delivered twice"
    );
    assert_eq!(
        d.count("SELECT count(*) FROM files WHERE sender_removed_at < received_at"),
        0,
        "seed {seed}: a server's copy removed before its file was received"
    );
    assert_payloads_match_ledger(&d);
    eprintln!(
        "{kill_points} kills during polls and pushes survived ({in_download} inside a download, {in_upload} inside an upload): {} files taken from two servers ({valid} valid), {rows_loaded} rows loaded once, {valid} forwarded by each of two routes; {} server copies recorded as removed",
        sent.len(),
        d.count("SELECT count(*) FROM files WHERE sender_removed_at IS NOT NULL"),
    );
}
