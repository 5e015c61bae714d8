//! A temporary dropgate deployment and helpers to drive the real binary.

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const SHIPPED_CONFIG: &str = include_str!("../config/dropgate.toml");
pub const HEADER: &str = "resident_id,nhs_number,family_name,given_name,date_of_birth,gender,observed_at,respiration_rate,spo2,on_oxygen,systolic_bp,pulse,consciousness,temperature";

/// A deployment in a temporary folder: `config/dropgate.toml`, keys, spool.
pub struct Deployment {
    pub dir: tempfile::TempDir,
    pub recipient: String,
}

impl Deployment {
    /// The shipped configuration, with faster completeness checks.
    pub fn new() -> Deployment {
        Self::with_config(&fast(SHIPPED_CONFIG))
    }

    pub fn with_config(config: &str) -> Deployment {
        let dir = tempfile::tempdir().expect("temp dir");
        fs::create_dir_all(dir.path().join("config")).unwrap();
        let deployment = Deployment {
            dir,
            recipient: String::new(),
        };
        deployment.write_config(config);
        let out = deployment.dg(&["keygen"]);
        assert!(out.status.success(), "keygen failed: {}", text(&out.stderr));
        let recipient = text(&out.stdout)
            .lines()
            .find_map(|l| l.strip_prefix("age recipient: "))
            .expect("keygen prints the recipient")
            .trim()
            .to_string();
        Deployment {
            recipient,
            ..deployment
        }
    }

    pub fn write_config(&self, config: &str) {
        fs::write(self.config_path(), config).unwrap();
    }

    pub fn path(&self, relative: &str) -> PathBuf {
        self.dir.path().join(relative)
    }

    pub fn config_path(&self) -> PathBuf {
        self.path("config/dropgate.toml")
    }

    pub fn drop_folder(&self) -> PathBuf {
        self.path("spool/drop/demo-carehome")
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_dropgate"));
        cmd.arg("--config")
            .arg(self.config_path())
            .args(args)
            .current_dir(self.dir.path())
            .env_remove("DROPGATE_CONFIG")
            .env_remove("DROPGATE_LOG");
        cmd
    }

    pub fn dg(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run dropgate")
    }

    /// A plaintext file in the deployment's scratch folder.
    pub fn write_input(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let dir = self.path("input");
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        fs::write(&path, bytes).unwrap();
        path
    }

    /// Encrypts with the `age` command-line tool to this deployment's recipient.
    pub fn encrypt(&self, plain: &Path, armor: bool) -> PathBuf {
        let out = PathBuf::from(format!("{}.age", plain.display()));
        age_cli(&self.recipient, plain, &out, armor);
        out
    }

    /// `dropgate push --destination DESTINATION FILE`.
    pub fn push(&self, destination: &str, file: &Path) -> Output {
        self.dg(&["push", "--destination", destination, file.to_str().unwrap()])
    }

    pub fn ingest(&self, files: &[&Path]) -> Output {
        let mut args = vec!["ingest", "--source", "demo-carehome-drop"];
        let names: Vec<String> = files.iter().map(|p| p.display().to_string()).collect();
        args.extend(names.iter().map(String::as_str));
        self.dg(&args)
    }

    pub fn files(&self) -> Vec<Value> {
        let out = self.dg(&["files", "--json"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
            .collect()
    }

    pub fn show(&self, id: i64) -> Value {
        let out = self.dg(&["show", &id.to_string(), "--json"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Read-only view of the ledger, for checks the CLI does not print.
    pub fn ledger(&self) -> rusqlite::Connection {
        rusqlite::Connection::open_with_flags(
            self.path("spool/ledger.db"),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .unwrap()
    }

    pub fn count(&self, sql: &str) -> i64 {
        self.ledger().query_row(sql, [], |r| r.get(0)).unwrap()
    }

    /// The one text value a query selects.
    pub fn string(&self, sql: &str) -> String {
        self.ledger().query_row(sql, [], |r| r.get(0)).unwrap()
    }

    /// Every text value a query selects, in order.
    pub fn strings(&self, sql: &str) -> Vec<String> {
        let ledger = self.ledger();
        let mut statement = ledger.prepare(sql).unwrap();
        statement
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    /// Starts `dropgate run` and waits until it says it is ready.
    pub fn start(&self) -> Daemon {
        self.start_with(|_| {})
    }

    /// Starts `dropgate run`, its command first changed by `configure`.
    pub fn start_with(&self, configure: impl FnOnce(&mut Command)) -> Daemon {
        let mut command = self.command(&["run"]);
        configure(&mut command);
        let mut child = command
            .env("DROPGATE_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the daemon");
        let log = Arc::new(Mutex::new(String::new()));
        // Drained continuously: a full pipe would stall the daemon.
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let mut log = log.lock().unwrap();
                    log.push_str(&line);
                    log.push('\n');
                }
            });
        }
        let daemon = Daemon {
            child: Some(child),
            log,
        };
        wait_for("the daemon to be ready", Duration::from_secs(20), || {
            daemon.log().contains(" ready ")
        });
        daemon
    }

    /// Places a file in the drop folder whole, as an atomic rename.
    /// The size of the largest file in the spool but the ledger's own and
    /// those in drop folders: how much of one file dropgate holds.
    pub fn largest_spooled_file(&self) -> u64 {
        let mut largest = 0;
        let mut folders = vec![self.path("spool")];
        while let Some(folder) = folders.pop() {
            for entry in fs::read_dir(&folder).into_iter().flatten().flatten() {
                let path = entry.path();
                let name = entry.file_name().to_string_lossy().to_string();
                if path.is_dir() {
                    if name != "drop" {
                        folders.push(path);
                    }
                } else if !name.starts_with("ledger.db") {
                    largest = largest.max(entry.metadata().map_or(0, |m| m.len()));
                }
            }
        }
        largest
    }

    pub fn drop_file(&self, name: &str, bytes: &[u8]) {
        let staging = self.path("staging");
        fs::create_dir_all(&staging).unwrap();
        let tmp = staging.join(name);
        fs::write(&tmp, bytes).unwrap();
        fs::rename(&tmp, self.drop_folder().join(name)).unwrap();
    }
}

/// The shipped configuration (with [`fast`] waits) plus `settings` lines in
/// `[sftp_server]`.
pub fn with_sftp_settings(settings: &str) -> String {
    fast(SHIPPED_CONFIG).replace(
        "idle_timeout = \"10m\"",
        &format!("idle_timeout = \"10m\"\n{settings}"),
    )
}

/// Shipped configuration with shorter waits, so tests run quickly, and the
/// SFTP server on a port chosen at run time.
pub fn fast(config: &str) -> String {
    config
        .replace("listen = \"127.0.0.1:2222\"", "listen = \"127.0.0.1:0\"")
        .replace("min_age = \"500ms\"", "min_age = \"300ms\"")
        .replace("check_interval = \"200ms\"", "check_interval = \"50ms\"")
        .replace("rescan_interval = \"30s\"", "rescan_interval = \"1s\"")
}

pub fn age_cli(recipient: &str, plain: &Path, out: &Path, armor: bool) {
    let mut cmd = Command::new("age");
    if armor {
        cmd.arg("--armor");
    }
    let status = cmd
        .args(["-r", recipient, "-o"])
        .arg(out)
        .arg(plain)
        .status()
        .expect("the `age` command-line tool must be installed (scripts/test installs it)");
    assert!(status.success());
}

pub struct Daemon {
    child: Option<Child>,
    log: Arc<Mutex<String>>,
}

impl Daemon {
    /// Everything the daemon printed so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// The port the embedded SFTP server listens on, from its log line.
    pub fn sftp_port(&self) -> u16 {
        let log = self.log();
        let line = log
            .lines()
            .find(|l| l.contains("SFTP server listening"))
            .expect("the SFTP server is listening");
        let address = line.rsplit("address=").next().unwrap().trim();
        address.rsplit(':').next().unwrap().parse().unwrap()
    }

    /// The most memory the daemon has held so far (VmHWM), in MiB.
    pub fn peak_rss_mib(&self) -> u64 {
        self.memory_mib("VmHWM:")
    }

    /// Resident memory now.
    pub fn rss_mib(&self) -> u64 {
        self.memory_mib("VmRSS:")
    }

    fn memory_mib(&self, field: &str) -> u64 {
        let pid = self.child.as_ref().expect("running").id();
        let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("{field} in /proc/PID/status"));
        kib / 1024
    }

    /// Sends SIGHUP.
    pub fn hangup(&self) {
        signal(self.child.as_ref().expect("running").id(), "HUP");
    }

    /// File descriptors the daemon holds open now.
    pub fn open_fds(&self) -> usize {
        let pid = self.child.as_ref().expect("running").id();
        fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count()
    }

    /// SIGKILL: no chance to finish anything.
    pub fn kill9(mut self) {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// SIGTERM, then wait for a clean exit; returns what it logged.
    pub fn terminate(mut self) -> String {
        let mut child = self.child.take().unwrap();
        signal(child.id(), "TERM");
        let status = wait_exit(&mut child, Duration::from_secs(60));
        // Let the reader threads take the last lines.
        std::thread::sleep(Duration::from_millis(100));
        let log = self.log();
        assert!(status.success(), "daemon exited with {status}: {log}");
        log
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success());
}

fn wait_exit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(start.elapsed() < limit, "the daemon did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn wait_for(what: &str, limit: Duration, mut ready: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ready() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs a Python `script` (with `fhir.resources`, which `scripts/test`
/// installs) on an export `folder`, and parses the JSON it prints.
pub fn fhir_resources_check(script: &str, folder: &Path) -> serde_json::Value {
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(folder)
        .stdin(Stdio::null())
        .output()
        .expect("python3 with fhir.resources (scripts/test installs it)");
    assert!(out.status.success(), "{}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A valid NHS number in the test range, derived from `n`.
pub fn nhs_number(n: u32) -> String {
    (n..)
        .find_map(dropgate::domain::nhs_number::test_range_number)
        .expect("some middle has a check digit")
}

/// A NEWS2 row for resident `r`, set `i`: always valid, full set.
pub fn news2_row(r: u32, i: u32) -> String {
    format!(
        "R{r:04},{},Family{r},Given{r},1940-01-{:02},{},{},{},{},{},{},{},{},{:.1}",
        nhs_number(r),
        1 + r % 28,
        ["0", "1", "2", "9"][(r % 4) as usize],
        // One minute per set, so every set (and so every file) is distinct.
        (chrono::DateTime::UNIX_EPOCH + chrono::Duration::minutes(29_000_000 + i64::from(i)))
            .format("%Y-%m-%dT%H:%M:%SZ"),
        12 + i % 10,
        94 + i % 6,
        if i % 3 == 0 { "Y" } else { "N" },
        100 + i % 50,
        60 + i % 40,
        ["A", "A", "A", "V"][(i % 4) as usize],
        36.0 + f64::from(i % 20) / 10.0
    )
}

/// A NEWS2 file of `rows` rows over `residents` residents.
pub fn news2_csv(rows: u32, residents: u32, seed: u32) -> String {
    let mut s = String::from(HEADER);
    s.push('\n');
    for i in 0..rows {
        s.push_str(&news2_row(1 + (i + seed) % residents, i + seed));
        s.push('\n');
    }
    s
}

pub fn append(path: &Path, bytes: &[u8]) {
    let mut f = fs::OpenOptions::new().append(true).open(path).unwrap();
    f.write_all(bytes).unwrap();
}

/// The names in a folder, sorted.
pub fn file_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    names.sort();
    names
}

/// SHA-256 as the ledger shows it.
pub fn sha256_hex(bytes: &[u8]) -> String {
    dropgate::digest::sha256_hex(bytes)
}

/// OpenSSH client options for the test servers: no host-key prompt or
/// record, no password prompt, only the key given.
pub const SSH_CLIENT_OPTIONS: [&str; 8] = [
    "-o",
    "StrictHostKeyChecking=no",
    "-o",
    "UserKnownHostsFile=/dev/null",
    "-o",
    "BatchMode=yes",
    "-o",
    "IdentitiesOnly=yes",
];

/// Runs `sftp` in batch mode as the demo partner with the given key.
pub fn sftp(d: &Deployment, port: u16, key: &str, commands: &str) -> Output {
    sftp_as(d, port, "demo-carehome", key, commands)
}

/// Runs `sftp` in batch mode as `user` with the given key.
pub fn sftp_as(d: &Deployment, port: u16, user: &str, key: &str, commands: &str) -> Output {
    let batch = d.write_input(&format!("sftp-batch-{user}.txt"), commands.as_bytes());
    Command::new("sftp")
        .arg("-b")
        .arg(&batch)
        .args(["-i", key, "-P", &port.to_string()])
        .args(SSH_CLIENT_OPTIONS)
        .arg(format!("{user}@127.0.0.1"))
        .output()
        .expect("the OpenSSH `sftp` client must be installed (scripts/test installs it)")
}

/// A fresh ed25519 key pair made by `ssh-keygen`; returns the private key's path.
pub fn new_key(d: &Deployment, name: &str) -> std::path::PathBuf {
    let path = d.path(name);
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&path)
        .status()
        .expect("ssh-keygen must be installed (scripts/test installs it)");
    assert!(status.success());
    path
}

/// `type base64` of a `.pub` file, without its comment.
pub fn public_key_line(path: &std::path::Path) -> String {
    let text = fs::read_to_string(path).unwrap();
    text.split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

pub fn demo_key(d: &Deployment) -> String {
    d.path("config/keys/demo-carehome").display().to_string()
}

pub fn audit_actions(d: &Deployment) -> Vec<(String, Option<String>, Option<i64>)> {
    let conn = d.ledger();
    let mut stmt = conn
        .prepare("SELECT action, remote, file_id FROM audit_events ORDER BY id")
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// A paramiko script as the demo partner; `body` runs with `sftp` (an
/// `SFTPClient`) open, and may open a second connection with `connect()`.
pub fn paramiko(d: &Deployment, port: u16, body: &str) -> Output {
    let script = format!(
        r#"
import sys, time, paramiko
key = paramiko.Ed25519Key.from_private_key_file({key:?})
def connect():
    transport = paramiko.Transport(("127.0.0.1", {port}))
    transport.connect(username="demo-carehome", pkey=key)
    return transport, paramiko.SFTPClient.from_transport(transport)
transport, sftp = connect()
{body}
"#,
        key = demo_key(d),
    );
    Command::new("python3")
        .args(["-c", &script])
        .output()
        .expect("python3 with paramiko (scripts/test installs it)")
}

/// Every payload, in the spool or kept in the ledger (a small file's),
/// hashes to the SHA-256 its ledger row holds.
pub fn assert_payloads_match_ledger(d: &Deployment) {
    let conn = d.ledger();
    let mut stmt = conn
        .prepare(
            "SELECT f.id, f.spool_name, f.sha256, h.body
             FROM files f LEFT JOIN held_payloads h ON h.file_id = f.id",
        )
        .unwrap();
    let rows: Vec<(i64, String, String, Option<Vec<u8>>)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    for (id, spool_name, sha256, held) in rows {
        let in_spool = ["incoming", "tmp", "archive", "quarantine"]
            .iter()
            .map(|area| d.path(&format!("spool/{area}/{spool_name}")))
            .find(|p| p.exists());
        let bytes = match (held, in_spool) {
            (Some(body), None) => body,
            (None, Some(path)) => fs::read(&path).unwrap(),
            (Some(_), Some(path)) => panic!("file {id}: kept in the ledger and at {path:?}"),
            (None, None) => panic!("file {id}: no payload in the spool or the ledger"),
        };
        assert_eq!(
            sha256_hex(&bytes),
            sha256,
            "file {id}: the stored payload is not what the ledger says"
        );
    }
}

/// The shipped config plus a second partner, `other-home`, with an SFTP
/// account (its demo key made on first run) and a NEWS2 feed of its own.
pub fn with_second_partner(config: &str) -> String {
    let feed = &SHIPPED_CONFIG[SHIPPED_CONFIG.find("[feeds.news2]").unwrap()..];
    format!(
        "{config}\n[partners.other-home]\nname = \"Other Home\"\n\n[partners.other-home.sftp]\nauthorized_keys = [\"keys/other-home.pub\"]\ndemo_key = \"keys/other-home\"\n\n{}",
        feed.replace("feeds.news2", "feeds.other")
            .replace("partner = \"demo-carehome\"", "partner = \"other-home\"")
    )
}
