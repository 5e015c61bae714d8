//! SFTP upload throughput of dropgate's embedded server, against OpenSSH's
//! sshd on the same machine, with the same client, cipher, files and disk.
//!
//! ```text
//! cargo bench --bench sftp [-- --size-mib 1024 --small-files 1000]
//! ```
//!
//! 1. One large file of random bytes, `put` by the OpenSSH `sftp` client in
//!    batch mode into each server, twice each, alternating.
//! 2. Many ~4 KiB NEWS2 files, `put` in one batch session into each server;
//!    for dropgate also the time until its ledger has them received, then
//!    loaded.
//!
//! Everything talks to 127.0.0.1 only. Progress goes to stderr, the report to
//! stdout. Missed targets are reported, not fatal; a failed upload is.

// The helpers are shared with the integration tests; this benchmark uses
// only part of them, and sshd.rs's own `#[test]`s, which use some of its
// imports, are not compiled here.
#[allow(dead_code)]
mod common;
#[allow(dead_code)]
#[path = "../tests/harness.rs"]
mod harness;
#[allow(dead_code, unused_imports)]
#[path = "../tests/sshd.rs"]
mod sshd;

use std::fmt::Write as _;
use std::fs;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail, ensure};
use chrono::{DateTime, Utc};
use rusqlite::{Connection, OpenFlags, OptionalExtension};

use common::{LargeFile, Options, mb_per_s, progress, scratch, sync, write_random_file};
use harness::Deployment;
use sshd::Sshd;

const CIPHER: &str = "aes256-gcm@openssh.com";
/// The server `sshd::Sshd` runs.
const SSHD: &str = "/usr/sbin/sshd";
/// OpenSSH's `sftp` writes this much per request unless the server's
/// `limits@openssh.com` says more is welcome.
const CLIENT_DEFAULT_WRITE: u64 = 32_768;
/// The embedded server's source name in the ledger.
const SFTP_SOURCE: &str = "sftp-server";
const LARGE_RUNS: usize = 2;
const SMALL_FILE_BYTES: usize = 4096;
/// A care home's worth of residents, spread over the small files.
const SMALL_RESIDENTS: u32 = 60;
const SMALL_PREFIX: &str = "news2_small_";

const TARGET_LARGE_SHARE: f64 = 0.8;
const TARGET_SMALL_LANDED_PER_S: f64 = 200.0;

const POLL: Duration = Duration::from_millis(20);
/// Fine enough that waiting adds nothing measurable to a timed `sftp`.
const WAIT_STEP: Duration = Duration::from_millis(1);
const SETTLE_TIMEOUT: Duration = Duration::from_secs(300);
/// Longest a single `sftp -b` may take: a gibibyte at under 1 MB/s.
const SESSION_TIMEOUT: Duration = Duration::from_secs(1800);

fn main() -> ExitCode {
    common::exit_code(run())
}

fn run() -> Result<()> {
    let options = Options::parse("sftp", std::env::args().skip(1))?;
    let scratch = scratch("sftp-")?;

    let large_path = scratch.path().join("bench.bin");
    progress(format!(
        "writing {} MiB of random bytes to {}",
        options.size_mib,
        large_path.display()
    ));
    let large = write_random_file(&large_path, options.size_mib << 20)?;
    progress(format!("writing {} small NEWS2 files", options.small_files));
    let small = write_small_files(&scratch.path().join("small"), options.small_files)?;
    // Written back now, so the kernel does not flush these pages in the
    // middle of a measurement.
    sync()?;

    progress("starting dropgate run");
    let deployment = Deployment::with_config(&dropgate_config(large.bytes)?);
    let daemon = deployment.start();
    let embedded = Server::embedded(&deployment, daemon.sftp_port(), scratch.path())?;
    progress("starting sshd");
    let sshd = Sshd::start();
    let openssh = Server::openssh(&sshd, scratch.path())?;
    let ledger = open_ledger(&deployment)?;

    let setup = Setup::describe(&embedded, &openssh, &large_path, scratch.path())?;
    report_setup(&setup, &embedded, &openssh, &options);

    let mut runs = LargeRuns::default();
    for run in 1..=LARGE_RUNS {
        progress(format!("large file, run {run}: embedded"));
        runs.embedded
            .push(put_large_embedded(&embedded, &ledger, &large, run)?);
        progress(format!("large file, run {run}: sshd"));
        runs.openssh
            .push(put_large_openssh(&openssh, &sshd, &large, run, false)?);
    }
    for run in 1..=LARGE_RUNS {
        progress(format!("large file, run {run}: sshd with put -f"));
        runs.openssh_fsync
            .push(put_large_openssh(&openssh, &sshd, &large, run, true)?);
    }
    report_large(&runs, &large, &setup.logins);

    progress("small files: embedded");
    let small_embedded = put_small_embedded(&embedded, &ledger, &small)?;
    progress("small files: sshd");
    let small_openssh = put_small_openssh(&openssh, &sshd, &small)?;
    report_small(&small_embedded, &small_openssh, &small);

    drop(ledger);
    progress("stopping dropgate run");
    let log = daemon.terminate();
    report_daemon_log(&log);
    report_summary(&runs, &large, &small_embedded);
    Ok(())
}

// ---------------------------------------------------------------------------
// Input files

struct SmallFiles {
    paths: Vec<PathBuf>,
    bytes: u64,
    rows: u64,
}

impl SmallFiles {
    fn name(path: &Path) -> &str {
        path.file_name()
            .and_then(|n| n.to_str())
            .expect("small files have UTF-8 names")
    }
}

/// Valid NEWS2 files of at most [`SMALL_FILE_BYTES`], each with sets at
/// times no other file has, so none is a duplicate of another.
fn write_small_files(dir: &Path, count: usize) -> Result<SmallFiles> {
    fs::create_dir_all(dir)?;
    let rows = (1..)
        .take_while(|&r| harness::news2_csv(r, SMALL_RESIDENTS, 0).len() <= SMALL_FILE_BYTES)
        .last()
        .context("a NEWS2 header and one row fit in a small file")?;
    let mut files = SmallFiles {
        paths: Vec::with_capacity(count),
        bytes: 0,
        rows: 0,
    };
    for n in 0..u32::try_from(count)? {
        let body = harness::news2_csv(rows, SMALL_RESIDENTS, n * rows);
        let path = dir.join(format!("{SMALL_PREFIX}{n:05}.csv"));
        fs::write(&path, &body)?;
        files.bytes += body.len() as u64;
        files.rows += u64::from(rows);
        files.paths.push(path);
    }
    Ok(files)
}

fn dropgate_config(largest: u64) -> Result<String> {
    let config = harness::fast(harness::SHIPPED_CONFIG);
    ensure!(
        config.contains("listen = \"127.0.0.1:0\""),
        "harness::fast no longer moves the SFTP server to a port chosen at run time"
    );
    let shipped_limit = "max_file_size = \"10GiB\"";
    ensure!(
        config.contains(shipped_limit),
        "the shipped config no longer has `{shipped_limit}`"
    );
    if largest <= 10 << 30 {
        return Ok(config);
    }
    let limit = format!("max_file_size = \"{}MiB\"", largest.div_ceil(1 << 20));
    Ok(config.replacen(shipped_limit, &limit, 1))
}

// ---------------------------------------------------------------------------
// Servers and the client

/// One SFTP server as the client sees it.
struct Server {
    label: &'static str,
    port: u16,
    user: String,
    key: PathBuf,
    known_hosts: PathBuf,
    /// Where remote paths start: the embedded server takes files only in `inbox/`.
    remote_dir: &'static str,
    /// The listening process; its CPU time includes its sessions' once they
    /// have ended, as sshd runs each in a child it waits for.
    pid: u32,
    /// Where uploads are written on this machine.
    writes_to: PathBuf,
    cpu: Cpu,
}

impl Server {
    fn embedded(deployment: &Deployment, port: u16, scratch: &Path) -> Result<Server> {
        let host_key = fs::read_to_string(deployment.path("config/keys/ssh_host_ed25519.pub"))?;
        Ok(Server {
            label: "embedded",
            port,
            user: "demo-carehome".to_string(),
            key: deployment.path("config/keys/demo-carehome"),
            known_hosts: known_hosts(scratch, "embedded", port, &host_key)?,
            remote_dir: "inbox/",
            pid: child_pid("dropgate")?,
            writes_to: deployment.path("spool"),
            cpu: Cpu::new()?,
        })
    }

    fn openssh(sshd: &Sshd, scratch: &Path) -> Result<Server> {
        Ok(Server {
            label: "sshd",
            port: sshd.port(),
            user: sshd.user().to_string(),
            key: sshd.client_key().to_path_buf(),
            known_hosts: known_hosts(scratch, "sshd", sshd.port(), sshd.host_key())?,
            remote_dir: "",
            pid: child_pid("sshd")?,
            writes_to: sshd.root().to_path_buf(),
            cpu: Cpu::new()?,
        })
    }

    /// The OpenSSH client in batch mode, pinned to this server's host key,
    /// with nothing from the machine's ssh configuration.
    fn sftp(&self, batch: &Path, options: &[&str]) -> Command {
        let mut command = Command::new("sftp");
        command
            .args(options)
            .args(["-F", "/dev/null", "-b"])
            .arg(batch)
            .args(["-P", &self.port.to_string(), "-i"])
            .arg(&self.key)
            .arg("-o")
            .arg(format!("UserKnownHostsFile={}", self.known_hosts.display()))
            .args([
                "-o",
                "StrictHostKeyChecking=yes",
                "-o",
                "BatchMode=yes",
                "-o",
                "IdentitiesOnly=yes",
                "-o",
                &format!("Ciphers={CIPHER}"),
            ])
            .arg(format!("{}@127.0.0.1", self.user))
            .stdin(Stdio::null());
        command
    }

    /// Runs one batch session, timing it from spawn to exit.
    fn session(&self, batch: &Path, lines: &str) -> Result<Session> {
        fs::write(batch, lines)?;
        let client_before = self.cpu.client()?;
        let server_before = self.server_cpu()?;
        let started = SystemTime::now();
        let clock = Instant::now();
        let mut child = self
            .sftp(batch, &[])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("the OpenSSH `sftp` client must be installed (scripts/test installs it)")?;
        let mut stderr = child.stderr.take().expect("stderr is piped");
        let stderr = thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break status;
            }
            if clock.elapsed() > SESSION_TIMEOUT {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "sftp into {} did not finish within {SESSION_TIMEOUT:?}",
                    self.label
                );
            }
            thread::sleep(WAIT_STEP);
        };
        let wall = clock.elapsed();
        let stderr = stderr.join().expect("the reader does not panic");
        ensure!(
            status.success(),
            "sftp into {} failed ({status}):\n{stderr}",
            self.label
        );
        wait_for("the server to end the session", || {
            Ok(children(self.pid)?.is_empty().then_some(()))
        })?;
        Ok(Session {
            started,
            clock,
            wall,
            client_cpu: self.cpu.client()? - client_before,
            server_cpu: self.server_cpu()? - server_before,
        })
    }

    fn login(&self, scratch: &Path) -> Result<Duration> {
        let batch = scratch.join(format!("login-{}.batch", self.label));
        let mut best = Duration::MAX;
        for _ in 0..3 {
            best = best.min(self.session(&batch, "pwd\n")?.wall);
        }
        Ok(best)
    }

    fn server_cpu(&self) -> Result<f64> {
        self.cpu.of(&self.pid.to_string())
    }

    /// The cipher the client negotiated and the size of its write requests,
    /// from a verbose login.
    fn probe(&self, scratch: &Path) -> Result<Probe> {
        let batch = scratch.join(format!("probe-{}.batch", self.label));
        fs::write(&batch, "pwd\n")?;
        let out = self.sftp(&batch, &["-vvv"]).output()?;
        let stderr = harness::text(&out.stderr);
        ensure!(
            out.status.success(),
            "sftp could not log in to {}:\n{stderr}",
            self.label
        );
        let cipher = stderr
            .lines()
            .find_map(|l| l.split("kex: client->server cipher: ").nth(1))
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or("(not shown by sftp -vvv)")
            .to_string();
        // "server upload/download buffer sizes 261120 / 261120; using 261120 / 261120"
        let write_size = stderr
            .lines()
            .find_map(|l| l.split("buffer sizes ").nth(1))
            .and_then(|rest| rest.split("using ").nth(1))
            .and_then(|sizes| sizes.split_whitespace().next())
            .and_then(|upload| upload.parse().ok());
        Ok(Probe { cipher, write_size })
    }
}

struct Probe {
    cipher: String,
    /// Bytes per write request, when the client said (it does when the
    /// server offers `limits@openssh.com`).
    write_size: Option<u64>,
}

impl Probe {
    fn write_size(&self) -> String {
        match self.write_size {
            Some(bytes) => {
                format!("{bytes}-byte write requests (server offers limits@openssh.com)")
            }
            None => format!(
                "{CLIENT_DEFAULT_WRITE}-byte write requests (client default: no limits@openssh.com)"
            ),
        }
    }
}

struct Session {
    started: SystemTime,
    clock: Instant,
    wall: Duration,
    /// `sftp` and the `ssh` it runs.
    client_cpu: f64,
    server_cpu: f64,
}

fn known_hosts(scratch: &Path, label: &str, port: u16, host_key: &str) -> Result<PathBuf> {
    let key: Vec<&str> = host_key.split_whitespace().take(2).collect();
    ensure!(key.len() == 2, "{label}: no host key in `{host_key}`");
    let path = scratch.join(format!("known_hosts-{label}"));
    fs::write(&path, format!("[127.0.0.1]:{port} {}\n", key.join(" ")))?;
    Ok(path)
}

/// The one child of this process with this command name: the helpers keep
/// their `Child` handles to themselves.
fn child_pid(name: &str) -> Result<u32> {
    let found: Vec<u32> = children(std::process::id())?
        .into_iter()
        .filter(|&pid| command_name(pid).as_deref() == Some(name))
        .collect();
    match found[..] {
        [pid] => Ok(pid),
        _ => bail!("expected one `{name}` child process, found {found:?}"),
    }
}

fn stat_fields(pid: &str) -> Option<(String, Vec<String>)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid ...", where comm may hold spaces and parens.
    let (head, rest) = stat.rsplit_once(')')?;
    let name = head.split_once('(')?.1.to_string();
    Some((name, rest.split_whitespace().map(str::to_string).collect()))
}

fn command_name(pid: u32) -> Option<String> {
    stat_fields(&pid.to_string()).map(|(name, _)| name)
}

fn children(parent: u32) -> Result<Vec<u32>> {
    let mut found = Vec::new();
    for entry in fs::read_dir("/proc")?.map_while(Result::ok) {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        // Gone since listed, or not a process.
        let Some((_, fields)) = stat_fields(&pid.to_string()) else {
            continue;
        };
        if fields.get(1).and_then(|p| p.parse::<u32>().ok()) == Some(parent) {
            found.push(pid);
        }
    }
    Ok(found)
}

/// CPU time from /proc, in seconds.
struct Cpu {
    ticks_per_s: f64,
}

impl Cpu {
    fn new() -> Result<Cpu> {
        let out = Command::new("getconf").arg("CLK_TCK").output()?;
        ensure!(out.status.success(), "getconf CLK_TCK failed");
        Ok(Cpu {
            ticks_per_s: harness::text(&out.stdout).trim().parse()?,
        })
    }

    /// User plus system time of a process and of the children it has
    /// waited for.
    fn of(&self, pid: &str) -> Result<f64> {
        let (_, fields) = stat_fields(pid).with_context(|| format!("no process {pid}"))?;
        // utime, stime, cutime, cstime: fields 14 to 17 of proc_pid_stat(5),
        // counted here from the state, field 3.
        let ticks: Result<Vec<u64>, _> = fields[11..15].iter().map(|f| f.parse::<u64>()).collect();
        Ok(ticks?.iter().sum::<u64>() as f64 / self.ticks_per_s)
    }

    /// The clients this process has run and waited for: `sftp`, and the
    /// `ssh` it waits for.
    fn client(&self) -> Result<f64> {
        self.of("self")
    }
}

/// Dirty pages from earlier steps written back, so no measurement pays for
/// another's writes.
fn wait_for<T>(what: &str, mut ready: impl FnMut() -> Result<Option<T>>) -> Result<T> {
    let clock = Instant::now();
    loop {
        if let Some(value) = ready()? {
            return Ok(value);
        }
        ensure!(
            clock.elapsed() < SETTLE_TIMEOUT,
            "timed out after {SETTLE_TIMEOUT:?} waiting for {what}"
        );
        thread::sleep(POLL);
    }
}

fn open_ledger(deployment: &Deployment) -> Result<Connection> {
    let conn = Connection::open_with_flags(
        deployment.path("spool/ledger.db"),
        OpenFlags::SQLITE_OPEN_READ_ONLY,
    )?;
    conn.busy_timeout(Duration::from_secs(10))?;
    Ok(conn)
}

// ---------------------------------------------------------------------------
// Where things are

struct Setup {
    client: String,
    server: String,
    probes: [Probe; 2],
    /// The shortest of a few sessions that only log in: part of every
    /// measurement below.
    logins: [Duration; 2],
    /// Label, path, and `df` line for each place written or read.
    places: Vec<(&'static str, PathBuf, String)>,
    same_file_system: bool,
    asked: Vec<(String, String)>,
}

impl Setup {
    fn describe(
        embedded: &Server,
        openssh: &Server,
        input: &Path,
        scratch: &Path,
    ) -> Result<Setup> {
        let places = [
            ("embedded server writes to", embedded.writes_to.clone()),
            ("sshd writes to", openssh.writes_to.clone()),
            ("client reads from", input.to_path_buf()),
        ];
        let mut devices = Vec::new();
        let mut described = Vec::new();
        for (label, path) in places {
            devices.push(fs::metadata(&path)?.dev());
            described.push((label, path.clone(), file_system(&path)?));
        }
        let mut asked = Vec::new();
        for path in ["/tmp", "/var/lib", "/work"] {
            asked.push((path.to_string(), file_system(Path::new(path))?));
        }
        Ok(Setup {
            client: openssh_version("ssh")?,
            server: openssh_version(SSHD)?,
            probes: [embedded.probe(scratch)?, openssh.probe(scratch)?],
            logins: [embedded.login(scratch)?, openssh.login(scratch)?],
            places: described,
            same_file_system: devices.windows(2).all(|w| w[0] == w[1]),
            asked,
        })
    }
}

/// `df -P -T`: device, type and mount point of the file system holding `path`.
fn file_system(path: &Path) -> Result<String> {
    let out = Command::new("df").args(["-P", "-T"]).arg(path).output()?;
    ensure!(out.status.success(), "df {} failed", path.display());
    let text = harness::text(&out.stdout);
    let fields: Vec<&str> = text
        .lines()
        .last()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    ensure!(fields.len() >= 7, "unexpected df output: {text}");
    Ok(format!(
        "{} ({}) on {}",
        fields[0],
        fields[1],
        fields[6..].join(" ")
    ))
}

/// The version line OpenSSH programs print for `-V`, on stderr.
fn openssh_version(program: &str) -> Result<String> {
    let out = Command::new(program).arg("-V").output()?;
    let text = harness::text(&out.stderr) + &harness::text(&out.stdout);
    Ok(text
        .lines()
        .find(|l| l.starts_with("OpenSSH_"))
        .unwrap_or("unknown version")
        .trim()
        .to_string())
}

fn report_setup(setup: &Setup, embedded: &Server, openssh: &Server, options: &Options) {
    println!("dropgate SFTP upload benchmark");
    println!("==============================");
    println!(
        "client     OpenSSH `sftp -b` ({}), one session per measurement, timed from spawn to exit (login included)",
        setup.client
    );
    println!(
        "servers    embedded  `dropgate run` ({}), 127.0.0.1:{}",
        env!("CARGO_BIN_EXE_dropgate"),
        embedded.port
    );
    println!(
        "           sshd      {SSHD} ({}), internal-sftp in a chroot, 127.0.0.1:{}",
        setup.server, openssh.port
    );
    for (server, probe) in [embedded, openssh].iter().zip(&setup.probes) {
        println!(
            "cipher     {:<9} -o Ciphers={CIPHER}: negotiated {}; client sends {}",
            server.label,
            probe.cipher,
            probe.write_size()
        );
    }
    println!(
        "login      embedded {:.3} s, sshd {:.3} s: a session that only logs in (best of 3), part of every wall time below",
        setup.logins[0].as_secs_f64(),
        setup.logins[1].as_secs_f64()
    );
    for (label, path, fs) in &setup.places {
        println!("storage    {label:<26} {} ({fs})", path.display());
    }
    println!(
        "           same file system for all three: {}",
        if setup.same_file_system { "yes" } else { "NO" }
    );
    let asked: Vec<String> = setup
        .asked
        .iter()
        .map(|(path, fs)| format!("{path}: {fs}"))
        .collect();
    println!("           df {}", asked.join("; "));
    println!(
        "machine    {} CPUs; client, servers and dropgate's processing share them",
        thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!(
        "options    --size-mib {} --small-files {}   (MB = 10^6 bytes, MiB = 2^20 bytes)",
        options.size_mib, options.small_files
    );
}

// ---------------------------------------------------------------------------
// 1. One large file

#[derive(Default)]
struct LargeRuns {
    embedded: Vec<Session>,
    openssh: Vec<Session>,
    /// `put -f`: sshd fsyncs the file before answering, as dropgate does.
    openssh_fsync: Vec<Session>,
}

fn best(sessions: &[Session]) -> &Session {
    sessions
        .iter()
        .min_by_key(|s| s.wall)
        .expect("at least one run")
}

fn put_large_embedded(
    server: &Server,
    ledger: &Connection,
    large: &LargeFile,
    run: usize,
) -> Result<Session> {
    sync()?;
    let name = format!("bench-{run}.bin");
    let batch = large
        .path
        .with_file_name(format!("large-embedded-{run}.batch"));
    let lines = format!(
        "put \"{}\" \"{}{name}\"\n",
        large.path.display(),
        server.remote_dir
    );
    let session = server.session(&batch, &lines)?;
    let query = "SELECT size, sha256 FROM files WHERE source = ?1 AND name = ?2";
    let (size, sha256): (u64, String) = ledger
        .query_row(query, [SFTP_SOURCE, &name], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?
        .with_context(|| format!("the put of {name} returned but the ledger has no such file"))?;
    ensure!(
        size == large.bytes && sha256 == large.sha256,
        "the ledger has {name} with {size} bytes, SHA-256 {sha256}; sent {} bytes, {}",
        large.bytes,
        large.sha256
    );
    // Out of the way before the next measurement starts.
    let query = "SELECT state, coalesce(reason, '') FROM files WHERE source = ?1 AND name = ?2";
    let (state, reason) = wait_for("the large file to be quarantined", || {
        let (state, reason): (String, String) =
            ledger.query_row(query, [SFTP_SOURCE, &name], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok((state != "received").then_some((state, reason)))
    })?;
    ensure!(
        state == "quarantined" && reason == "no_feed",
        "{name} ended `{state}` ({reason}), not quarantined as no_feed"
    );
    Ok(session)
}

fn put_large_openssh(
    server: &Server,
    sshd: &Sshd,
    large: &LargeFile,
    run: usize,
    fsync: bool,
) -> Result<Session> {
    sync()?;
    let name = format!("bench-{run}.bin");
    let flag = if fsync { "-f " } else { "" };
    let batch = large.path.with_file_name(format!("large-sshd-{run}.batch"));
    let lines = format!(
        "put {flag}\"{}\" \"{}{name}\"\n",
        large.path.display(),
        server.remote_dir
    );
    let session = server.session(&batch, &lines)?;
    let stored = sshd.root().join(&name);
    let size = fs::metadata(&stored)?.len();
    ensure!(
        size == large.bytes,
        "sshd stored {size} bytes of {}",
        large.bytes
    );
    // Each run writes a new file, as on the embedded server.
    fs::remove_file(&stored)?;
    Ok(session)
}

fn report_large(runs: &LargeRuns, large: &LargeFile, logins: &[Duration; 2]) {
    let bytes = large.bytes;
    println!();
    println!(
        "1. One large file: {:.1} MB ({} MiB) of random bytes, one `put` per session, {LARGE_RUNS} runs each, alternating",
        bytes as f64 / 1e6,
        bytes >> 20
    );
    println!(
        "   embedded: put to inbox/bench-N.bin; answered once the file is fsynced and recorded `received`."
    );
    println!(
        "   The name matches no feed, so the file is quarantined as no_feed right after; the next run waits for"
    );
    println!(
        "   that, so processing stays out of the measurement. Ledger size and SHA-256 matched the input each time."
    );
    println!(
        "   sshd: put to bench-N.bin in its root, answered once the data is in the page cache (no fsync);"
    );
    println!(
        "   `put -f` asks it to fsync first (fsync@openssh.com), as the embedded server always does."
    );
    println!(
        "   `sync` before every run; CPU is user + system seconds of the client (sftp + ssh) and the server"
    );
    println!();
    println!(
        "   {:<15} {:>4} {:>9} {:>10} {:>11} {:>11}",
        "server", "run", "wall", "MB/s", "client CPU", "server CPU"
    );
    let series = [
        ("embedded", &runs.embedded),
        ("sshd", &runs.openssh),
        ("sshd, put -f", &runs.openssh_fsync),
    ];
    for (label, sessions) in series {
        for (i, s) in sessions.iter().enumerate() {
            println!(
                "   {label:<15} {:>4} {:>7.2} s {:>10.1} {:>9.2} s {:>9.2} s",
                i + 1,
                s.wall.as_secs_f64(),
                mb_per_s(bytes, s.wall),
                s.client_cpu,
                s.server_cpu
            );
        }
    }
    println!();
    for (label, sessions) in series {
        let all: Vec<String> = sessions
            .iter()
            .map(|s| format!("{:.1}", mb_per_s(bytes, s.wall)))
            .collect();
        println!(
            "   best {label:<15} {:>7.1} MB/s   (runs: {} MB/s)",
            mb_per_s(bytes, best(sessions).wall),
            all.join(", ")
        );
    }
    let embedded = mb_per_s(bytes, best(&runs.embedded).wall);
    println!(
        "   embedded / sshd          {:>6.1} %   (target ≥ {:.0} %)",
        100.0 * embedded / mb_per_s(bytes, best(&runs.openssh).wall),
        100.0 * TARGET_LARGE_SHARE
    );
    println!(
        "   embedded / sshd put -f   {:>6.1} %   (both durable when answered; no target)",
        100.0 * embedded / mb_per_s(bytes, best(&runs.openssh_fsync).wall)
    );
    let transfer = |sessions: &[Session], login: Duration| {
        mb_per_s(bytes, best(sessions).wall.saturating_sub(login))
    };
    println!(
        "   embedded / sshd          {:>6.1} %   with each server's login time taken off its best run ({:.1} vs {:.1} MB/s; no target)",
        100.0 * transfer(&runs.embedded, logins[0]) / transfer(&runs.openssh, logins[1]),
        transfer(&runs.embedded, logins[0]),
        transfer(&runs.openssh, logins[1])
    );
}

fn large_share(runs: &LargeRuns) -> f64 {
    best(&runs.openssh).wall.as_secs_f64() / best(&runs.embedded).wall.as_secs_f64()
}

// ---------------------------------------------------------------------------
// 2. Many small files

fn small_batch(small: &SmallFiles, remote_dir: &str) -> String {
    let mut lines = String::new();
    for path in &small.paths {
        let name = SmallFiles::name(path);
        writeln!(lines, "put \"{}\" \"{remote_dir}{name}\"", path.display())
            .expect("writing to a String");
    }
    lines
}

struct SmallEmbedded {
    files: u64,
    session: Session,
    /// Loaded by the time the client exited: processing overlaps uploads.
    loaded_at_session_end: u64,
    /// From spawn until a ledger query saw every file received.
    all_received: Duration,
    /// The same, from the ledger's own `received_at` of the last file.
    last_received_at: Duration,
    all_loaded: Duration,
    rows: u64,
    records: u64,
    /// The daemon, from spawn until all were loaded.
    server_cpu_until_loaded: f64,
}

struct Counts {
    total: u64,
    loaded: u64,
    other: u64,
}

fn small_counts(ledger: &Connection) -> Result<Counts> {
    Ok(ledger.query_row(
        "SELECT count(*), coalesce(sum(state = 'loaded'), 0),
                coalesce(sum(state NOT IN ('received', 'loaded')), 0)
         FROM files WHERE source = ?1 AND name LIKE ?2",
        [SFTP_SOURCE, &format!("{SMALL_PREFIX}%")],
        |r| {
            Ok(Counts {
                total: r.get(0)?,
                loaded: r.get(1)?,
                other: r.get(2)?,
            })
        },
    )?)
}

fn put_small_embedded(
    server: &Server,
    ledger: &Connection,
    small: &SmallFiles,
) -> Result<SmallEmbedded> {
    sync()?;
    let count = small.paths.len() as u64;
    let batch = small.paths[0].with_file_name("small-embedded.batch");
    let server_before = server.server_cpu()?;
    let session = server.session(&batch, &small_batch(small, server.remote_dir))?;
    let spawned = session.clock;
    let counts = small_counts(ledger)?;
    let loaded_at_session_end = counts.loaded;
    let all_received = wait_for("every small file to be received", || {
        let counts = small_counts(ledger)?;
        Ok((counts.total == count).then(|| spawned.elapsed()))
    })?;
    let all_loaded = wait_for("every small file to be loaded", || {
        let counts = small_counts(ledger)?;
        ensure!(
            counts.other == 0,
            "{} small file(s) were quarantined or duplicates; see `dropgate files`",
            counts.other
        );
        Ok((counts.loaded == count).then(|| spawned.elapsed()))
    })?;
    let server_cpu_until_loaded = server.server_cpu()? - server_before;
    let (last_received_at, rows, records): (String, u64, u64) = ledger.query_row(
        "SELECT max(received_at), sum(rows_loaded), sum(records)
         FROM files WHERE source = ?1 AND name LIKE ?2",
        [SFTP_SOURCE, &format!("{SMALL_PREFIX}%")],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?;
    ensure!(
        rows == small.rows,
        "the ledger has {rows} rows loaded from the small files; they hold {}",
        small.rows
    );
    let last_received_at = (parse_time(&last_received_at)?
        - DateTime::<Utc>::from(session.started))
    .to_std()
    .unwrap_or_default();
    Ok(SmallEmbedded {
        files: count,
        session,
        loaded_at_session_end,
        all_received,
        last_received_at,
        all_loaded,
        rows,
        records,
        server_cpu_until_loaded,
    })
}

fn put_small_openssh(server: &Server, sshd: &Sshd, small: &SmallFiles) -> Result<Session> {
    sync()?;
    let batch = small.paths[0].with_file_name("small-sshd.batch");
    let session = server.session(&batch, &small_batch(small, server.remote_dir))?;
    let mut stored = 0;
    for entry in fs::read_dir(sshd.root())? {
        let entry = entry?;
        if entry
            .file_name()
            .to_string_lossy()
            .starts_with(SMALL_PREFIX)
        {
            stored += entry.metadata()?.len();
        }
    }
    ensure!(
        stored == small.bytes,
        "sshd stored {stored} bytes of small files, {} were sent",
        small.bytes
    );
    Ok(session)
}

fn parse_time(text: &str) -> Result<DateTime<Utc>> {
    Ok(DateTime::parse_from_rfc3339(text)
        .with_context(|| format!("ledger time `{text}`"))?
        .with_timezone(&Utc))
}

fn report_small(embedded: &SmallEmbedded, openssh: &Session, small: &SmallFiles) {
    let count = small.paths.len();
    let rate = |d: Duration| count as f64 / d.as_secs_f64();
    println!();
    println!(
        "2. Small files: {count} valid NEWS2 CSV files ({:.0} bytes each on average, {} rows in all), one session of {count} `put`s",
        small.bytes as f64 / count as f64,
        small.rows
    );
    println!(
        "   embedded: each put answered once that file is fsynced and recorded `received`; dropgate loads them"
    );
    println!(
        "   meanwhile, on the same CPUs. sshd: no fsync. Timed from spawn of `sftp`; CPU as in 1."
    );
    println!();
    let s = &embedded.session;
    let per_put = |d: Duration| 1e3 * d.as_secs_f64() / count as f64;
    println!(
        "   embedded  session          {:>7.3} s → {:>6.0} files/s, {:.2} ms per put; client CPU {:.2} s, server CPU {:.2} s",
        s.wall.as_secs_f64(),
        rate(s.wall),
        per_put(s.wall),
        s.client_cpu,
        s.server_cpu
    );
    println!(
        "             all received     {:>7.3} s → {:>6.0} files/s   (seen by a ledger query; last received_at at {:.3} s)",
        embedded.all_received.as_secs_f64(),
        rate(embedded.all_received),
        embedded.last_received_at.as_secs_f64()
    );
    println!(
        "             all loaded       {:>7.3} s → {:>6.0} files/s   ({} loaded when the session ended; {} rows, {} records)",
        embedded.all_loaded.as_secs_f64(),
        rate(embedded.all_loaded),
        embedded.loaded_at_session_end,
        embedded.rows,
        embedded.records
    );
    println!(
        "             daemon CPU       {:>7.2} s from spawn until all were loaded",
        embedded.server_cpu_until_loaded
    );
    println!(
        "   sshd      session          {:>7.3} s → {:>6.0} files/s, {:.2} ms per put; client CPU {:.2} s, server CPU {:.2} s",
        openssh.wall.as_secs_f64(),
        rate(openssh.wall),
        per_put(openssh.wall),
        openssh.client_cpu,
        openssh.server_cpu
    );
    println!(
        "   embedded / sshd (session)  {:.1} %",
        100.0 * openssh.wall.as_secs_f64() / s.wall.as_secs_f64()
    );
}

// ---------------------------------------------------------------------------
// Summary

fn report_daemon_log(log: &str) {
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .collect();
    println!();
    println!(
        "dropgate run logged {} warning(s) or error(s){}",
        warnings.len(),
        if warnings.is_empty() {
            ""
        } else {
            "; the first:"
        }
    );
    for warning in warnings.iter().take(5) {
        println!("   {warning}");
    }
}

fn report_summary(runs: &LargeRuns, large: &LargeFile, small: &SmallEmbedded) {
    let share = large_share(runs);
    let landed_per_s = small.files as f64 / small.all_received.as_secs_f64();
    let rows = [
        (
            format!(
                "large file: embedded ≥ {:.0} % of sshd MB/s",
                100.0 * TARGET_LARGE_SHARE
            ),
            format!(
                "{:.1} % ({:.1} vs {:.1} MB/s)",
                100.0 * share,
                mb_per_s(large.bytes, best(&runs.embedded).wall),
                mb_per_s(large.bytes, best(&runs.openssh).wall)
            ),
            share >= TARGET_LARGE_SHARE,
        ),
        (
            format!("small files received in the ledger ≥ {TARGET_SMALL_LANDED_PER_S:.0} files/s"),
            format!("{landed_per_s:.0} files/s"),
            landed_per_s >= TARGET_SMALL_LANDED_PER_S,
        ),
    ];
    println!();
    println!("Summary (best of {LARGE_RUNS} runs for the large file)");
    println!("   {:<52} {:<34} RESULT", "TARGET", "MEASURED");
    for (target, measured, met) in rows {
        let result = if met { "MET" } else { "NOT MET" };
        println!("   {target:<52} {measured:<34} {result}");
    }
}
