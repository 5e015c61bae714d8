//! A real OpenSSH `sshd`, standing in for a partner's SFTP server that
//! dropgate pulls files from and pushes files to.
//!
//! The SFTP root is confined with `ChrootDirectory`, so `/` on the server is
//! [`Sshd::root`] and absolute remote paths cannot reach the rest of the
//! machine. sshd only accepts a chroot whose every path component is owned by
//! root and not writable by group or others; temporary folders under `/tmp`
//! (mode 1777) fail that, so the root is made under [`CHROOT_BASE`] instead.
//! That, logging in as root and creating `/run/sshd` mean the helper needs to
//! run as root, which is how the tests are run.

use std::collections::HashMap;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::harness::{text, wait_for};

const SSHD: &str = "/usr/sbin/sshd";
/// Root-owned and on disk, unlike `/tmp` (world-writable) and often `/run`
/// (a small tmpfs), so it can hold chroots with large test files.
const CHROOT_BASE: &str = "/var/lib/dropgate-tests";
const START_TIMEOUT: Duration = Duration::from_secs(10);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Sshd {
    /// Configuration, keys and pid file.
    dir: tempfile::TempDir,
    root: tempfile::TempDir,
    client_key: PathBuf,
    port: u16,
    user: String,
    host_key: String,
    child: Option<Child>,
    log: Arc<Mutex<String>>,
}

impl Sshd {
    /// Starts sshd on 127.0.0.1 on a free port chosen at run time, with its
    /// own configuration, host key and authorized key in a temporary folder;
    /// key authentication only, and nothing but SFTP (`internal-sftp`).
    pub fn start() -> Sshd {
        assert!(
            Path::new(SSHD).is_file(),
            "{SSHD} is missing: the tests need OpenSSH's server (scripts/test installs openssh-server)"
        );
        let uid = command_output(Command::new("id").arg("-u"));
        assert_eq!(
            uid, "0",
            "the sshd helper must run as root: sshd chroots the SFTP root and logs in the current user"
        );
        // sshd's privilege-separated pre-authentication child chroots here.
        fs::create_dir_all("/run/sshd").expect("create /run/sshd");
        fs::create_dir_all(CHROOT_BASE).expect("create the chroot base folder");
        fs::set_permissions(CHROOT_BASE, fs::Permissions::from_mode(0o755)).unwrap();
        let root = tempfile::Builder::new()
            .prefix("sftp-root-")
            .tempdir_in(CHROOT_BASE)
            .expect("temp SFTP root");
        check_chroot(root.path());

        let dir = tempfile::tempdir().expect("temp dir");
        keygen(&dir.path().join("host_ed25519"));
        keygen(&dir.path().join("client_ed25519"));
        fs::copy(
            dir.path().join("client_ed25519.pub"),
            dir.path().join("authorized_keys"),
        )
        .unwrap();
        let host_pub = fs::read_to_string(dir.path().join("host_ed25519.pub")).unwrap();
        // Type and key only, as a known_hosts entry has them.
        let host_key = host_pub
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ");

        let mut sshd = Sshd {
            client_key: dir.path().join("client_ed25519"),
            dir,
            root,
            port: 0,
            user: command_output(Command::new("id").arg("-un")),
            host_key,
            child: None,
            log: Arc::new(Mutex::new(String::new())),
        };
        // The port is free when chosen but something else may take it before
        // sshd binds it; then sshd exits, and another port is tried.
        for _ in 0..5 {
            sshd.port = free_port();
            match sshd.spawn() {
                Ok(()) => return sshd,
                Err(SpawnError::PortTaken) => continue,
                Err(SpawnError::Failed) => panic!("sshd did not start:\n{}", sshd.log()),
            }
        }
        panic!("sshd found no free port:\n{}", sshd.log())
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The folder SFTP paths are rooted in: `/` and the starting directory
    /// on the server. Files put here are visible to the client and vice versa.
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// The private key (OpenSSH format, mode 0600) the client logs in with.
    pub fn client_key(&self) -> &Path {
        &self.client_key
    }

    /// The user to log in as.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The server's host public key as in known_hosts: `ssh-ed25519 AAAA...`.
    pub fn host_key(&self) -> &str {
        &self.host_key
    }

    /// Everything sshd has written to stderr, across restarts.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Stops sshd as a shutdown would: SIGTERM to the listener and to every
    /// open session, then waits for the listener to exit. Also done on drop.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        signal_tree(child.id(), "TERM");
        let start = Instant::now();
        while child.try_wait().unwrap().is_none() {
            if start.elapsed() > STOP_TIMEOUT {
                signal_tree(child.id(), "KILL");
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.wait();
    }

    /// Starts sshd again after [`Sshd::stop`] or [`Sshd::kill`], on the same
    /// port with the same keys and root.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "sshd is already running");
        // While sshd was down the port may have served as the local end of
        // some outgoing connection; such a use ends soon, so wait it out.
        let start = Instant::now();
        loop {
            match self.spawn() {
                Ok(()) => return,
                Err(SpawnError::PortTaken) if start.elapsed() < START_TIMEOUT => {
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(error) => panic!(
                    "sshd did not start again on port {} ({error:?}):\n{}",
                    self.port,
                    self.log()
                ),
            }
        }
    }

    /// SIGKILL to the listener and every session: a server that dies
    /// mid-transfer, with no chance to close anything.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal_tree(child.id(), "KILL");
            let _ = child.wait();
        }
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("sshd_config")
    }

    /// Writes the configuration for the current port, starts sshd and waits
    /// until it listens.
    fn spawn(&mut self) -> Result<(), SpawnError> {
        let dir = self.dir.path();
        let mut config = format!(
            "\
ListenAddress 127.0.0.1:{port}
HostKey {dir}/host_ed25519
PidFile {dir}/sshd.pid
AuthorizedKeysFile {dir}/authorized_keys
UsePAM no
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
HostbasedAuthentication no
PermitRootLogin prohibit-password
AllowUsers {user}
# The authorized keys live under /tmp, which is world-writable.
StrictModes no
# Tests may open many connections at once; sshd's default starts refusing
# some at random after 10 unauthenticated ones.
MaxStartups 100
ChrootDirectory {root}
# Needed even with ForceCommand, or the client's SFTP request is refused.
Subsystem sftp internal-sftp -d /
# Even a shell or command request gets SFTP: there is no shell in the chroot.
ForceCommand internal-sftp -d /
",
            port = self.port,
            dir = dir.display(),
            user = self.user,
            root = self.root.path().display(),
        );
        if has_per_source_penalties() {
            // Killed sessions and refused logins would otherwise make sshd
            // refuse 127.0.0.1 for a while, failing later tests at random.
            config.push_str("PerSourcePenalties no\n");
        }
        fs::write(self.config_path(), config).unwrap();

        let mark = self.log.lock().unwrap().len();
        // sshd re-executes itself for each connection, so it needs its
        // absolute path; -D keeps it in the foreground, -e logs to stderr.
        let mut child = Command::new(SSHD)
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(self.config_path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start sshd");
        let stderr = child.stderr.take().unwrap();
        let log = self.log.clone();
        // Drained continuously so sshd never blocks on a full pipe. Sessions
        // inherit the pipe, so this runs until the last of them has ended.
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut log = log.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });

        // Logged once the socket listens. A successful connect alone could
        // be to whatever took the port instead.
        let listening = format!("Server listening on 127.0.0.1 port {}.", self.port);
        let start = Instant::now();
        loop {
            if self.log.lock().unwrap()[mark..].contains(&listening) {
                self.child = Some(child);
                return Ok(());
            }
            if child.try_wait().unwrap().is_some() {
                // No session was started, so the pipe is closed: all its
                // lines are in the log once the reader is done.
                let _ = reader.join();
                let log = self.log.lock().unwrap()[mark..].to_string();
                return Err(if log.contains("Address already in use") {
                    SpawnError::PortTaken
                } else {
                    SpawnError::Failed
                });
            }
            if start.elapsed() > START_TIMEOUT {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "sshd did not listen on port {} within {START_TIMEOUT:?}:\n{}",
                    self.port,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        // Before the fields go: sessions must not outlive the root they use.
        self.stop();
    }
}

#[derive(Debug)]
enum SpawnError {
    PortTaken,
    Failed,
}

pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().unwrap().port()
}

fn keygen(path: &Path) {
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "", "-f"])
        .arg(path)
        .status()
        .expect("the OpenSSH `ssh-keygen` must be installed (scripts/test installs it)");
    assert!(status.success(), "ssh-keygen failed for {}", path.display());
}

pub fn command_output(command: &mut Command) -> String {
    let out = command.output().expect("run a system command");
    assert!(out.status.success(), "{command:?}: {}", text(&out.stderr));
    text(&out.stdout).trim().to_string()
}

/// sshd refuses to chroot unless every component of the path is owned by root
/// and writable by nobody else; said here, rather than as a refused login.
fn check_chroot(root: &Path) {
    for dir in root.ancestors() {
        let meta = fs::metadata(dir).unwrap();
        assert!(
            meta.uid() == 0 && meta.mode() & 0o022 == 0,
            "sshd cannot chroot to {}: {} must be owned by root and not group or world writable",
            root.display(),
            dir.display()
        );
    }
}

/// PerSourcePenalties came in OpenSSH 9.8; older sshd rejects the option.
fn has_per_source_penalties() -> bool {
    let out = Command::new(SSHD).arg("-V").output().expect("run sshd -V");
    // Printed on stderr; older versions print it with their usage message.
    let version = text(&out.stderr) + &text(&out.stdout);
    let Some(rest) = version.split("OpenSSH_").nth(1) else {
        return false;
    };
    let numbers: Vec<u32> = rest
        .split(|c: char| !c.is_ascii_digit())
        .take(2)
        .map(|n| n.parse().unwrap_or(0))
        .collect();
    matches!(numbers[..], [major, minor] if (major, minor) >= (9, 8))
}

/// Sends `signal` to `pid` and all its descendants. sshd puts each session in
/// a session of its own (setsid), so a process-group signal would miss them,
/// and once the listener dies they are re-parented out of reach. So the tree
/// is frozen first with SIGSTOP, repeating until no new process appears: a
/// process with a stop pending cannot complete a fork.
pub fn signal_tree(pid: u32, signal: &str) {
    let mut frozen: Vec<u32> = Vec::new();
    loop {
        let fresh: Vec<u32> = tree(pid)
            .into_iter()
            .filter(|p| !frozen.contains(p))
            .collect();
        if fresh.is_empty() {
            break;
        }
        send(&fresh, "STOP");
        frozen.extend(fresh);
    }
    send(&frozen, signal);
    if signal != "KILL" {
        send(&frozen, "CONT");
    }
}

/// `pid` and its descendants, from /proc.
fn tree(pid: u32) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for entry in fs::read_dir("/proc").unwrap().map_while(Result::ok) {
        let Some(child) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        // Gone since listed: not a process to signal.
        let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // "pid (comm) state ppid ...", where comm may hold spaces and parens.
        let Some(ppid) = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse().ok())
        else {
            continue;
        };
        children.entry(ppid).or_default().push(child);
    }
    let mut all = vec![pid];
    let mut next = 0;
    while next < all.len() {
        all.extend(children.get(&all[next]).into_iter().flatten());
        next += 1;
    }
    all
}

fn send(pids: &[u32], signal: &str) {
    // Fails for processes that have exited meanwhile, which is fine.
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .args(pids.iter().map(u32::to_string))
        .stderr(Stdio::null())
        .status()
        .expect("the `kill` command must be installed (scripts/test installs procps)");
}

/// The OpenSSH `sftp` client logged in to `sshd`, checking its host key;
/// reading commands from `batch` if given, else from its standard input.
fn sftp_command(sshd: &Sshd, scratch: &Path, batch: Option<&Path>) -> Command {
    let known_hosts = scratch.join("known_hosts");
    fs::write(
        &known_hosts,
        format!("[127.0.0.1]:{} {}\n", sshd.port(), sshd.host_key()),
    )
    .unwrap();
    let mut cmd = Command::new("sftp");
    // -F /dev/null: nothing from the machine's or user's ssh configuration.
    cmd.args(["-F", "/dev/null", "-P", &sshd.port().to_string(), "-i"])
        .arg(sshd.client_key())
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", known_hosts.display()))
        .args([
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "ConnectTimeout=10",
        ]);
    if let Some(batch) = batch {
        cmd.arg("-b").arg(batch);
    }
    cmd.arg(format!("{}@127.0.0.1", sshd.user()));
    cmd
}

/// Runs `commands` in batch mode: fails at the first command that fails.
fn sftp(sshd: &Sshd, scratch: &Path, commands: &str) -> Output {
    let batch = scratch.join("batch");
    fs::write(&batch, commands).unwrap();
    sftp_command(sshd, scratch, Some(&batch))
        .output()
        .expect("the OpenSSH `sftp` client must be installed (scripts/test installs it)")
}

#[test]
fn the_openssh_client_puts_and_gets_files_in_the_root() {
    let sshd = Sshd::start();
    let scratch = tempfile::tempdir().unwrap();
    let mode = fs::metadata(sshd.client_key()).unwrap().mode();
    assert_eq!(
        mode & 0o777,
        0o600,
        "ssh refuses a private key others can read"
    );
    let local = scratch.path().join("up.txt");
    fs::write(&local, "pushed").unwrap();
    fs::write(sshd.root().join("down.txt"), "pulled").unwrap();
    let fetched = scratch.path().join("down.txt");
    let out = sftp(
        &sshd,
        scratch.path(),
        &format!(
            "mkdir outbox\nput {} outbox/up.txt\nput {} /abs.txt\nget down.txt {}\n",
            local.display(),
            local.display(),
            fetched.display()
        ),
    );
    assert!(
        out.status.success(),
        "{}\nsshd:\n{}",
        text(&out.stderr),
        sshd.log()
    );
    assert_eq!(
        fs::read_to_string(sshd.root().join("outbox/up.txt")).unwrap(),
        "pushed"
    );
    // `/` is the root: absolute paths stay inside it.
    assert_eq!(
        fs::read_to_string(sshd.root().join("abs.txt")).unwrap(),
        "pushed"
    );
    assert!(!Path::new("/abs.txt").exists());
    assert_eq!(fs::read_to_string(&fetched).unwrap(), "pulled");
}

#[test]
fn a_stopped_server_starts_again_on_the_same_port() {
    let mut sshd = Sshd::start();
    let scratch = tempfile::tempdir().unwrap();
    let port = sshd.port();
    let out = sftp(&sshd, scratch.path(), "ls\n");
    assert!(out.status.success(), "{}", text(&out.stderr));
    sshd.stop();
    let out = sftp(&sshd, scratch.path(), "ls\n");
    assert!(!out.status.success(), "nothing listens once stopped");
    sshd.start_again();
    assert_eq!(sshd.port(), port);
    fs::write(sshd.root().join("kept.txt"), "").unwrap();
    let out = sftp(&sshd, scratch.path(), "ls\n");
    assert!(
        out.status.success(),
        "{}\nsshd:\n{}",
        text(&out.stderr),
        sshd.log()
    );
    assert!(text(&out.stdout).contains("kept.txt"));
}

#[test]
fn a_killed_server_drops_open_sessions_and_starts_again() {
    let mut sshd = Sshd::start();
    let scratch = tempfile::tempdir().unwrap();
    let mut session = sftp_command(&sshd, scratch.path(), None)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut input = session.stdin.take().unwrap();
    // Printed once logged in: the client resolves the remote directory then.
    writeln!(input, "pwd").unwrap();
    let mut output = BufReader::new(session.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains("Remote working directory") {
        line.clear();
        let read = output.read_line(&mut line).unwrap();
        assert!(read > 0, "the session ended early:\n{}", sshd.log());
    }
    sshd.kill();
    // The client notices on its next request to the server (`pwd` is answered
    // locally); its input stays open, so it ends only because the server went.
    let _ = writeln!(input, "ls");
    wait_for(
        "the client to see the server gone",
        Duration::from_secs(10),
        || session.try_wait().unwrap().is_some(),
    );
    assert!(!session.wait().unwrap().success());
    drop(input);
    sshd.start_again();
    let out = sftp(&sshd, scratch.path(), "ls\n");
    assert!(
        out.status.success(),
        "{}\nsshd:\n{}",
        text(&out.stderr),
        sshd.log()
    );
}
