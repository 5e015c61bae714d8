//! Running under systemd: the shipped unit checked by `systemd-analyze`, and
//! the daemon's notifications read from a real `NOTIFY_SOCKET`.

use std::net::TcpStream;
use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::harness::*;

const UNIT: &str = include_str!("../systemd/dropgate.service");

/// The unit as installed, but starting this build's binary, which
/// `systemd-analyze verify` requires to exist.
fn unit_for_this_build(d: &Deployment) -> std::path::PathBuf {
    let path = d.path("dropgate.service");
    std::fs::write(
        &path,
        UNIT.replace("/usr/local/bin/dropgate", env!("CARGO_BIN_EXE_dropgate")),
    )
    .unwrap();
    path
}

fn systemd_analyze(args: &[&str]) -> std::process::Output {
    Command::new("systemd-analyze")
        .args(args)
        .output()
        .expect("systemd-analyze (Debian package systemd; scripts/test installs it)")
}

#[test]
fn the_shipped_unit_passes_systemd_analyze_verify_without_a_warning() {
    let d = Deployment::new();
    let unit = unit_for_this_build(&d);
    let out = systemd_analyze(&["verify", unit.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // Unknown or misspelt settings are only warned about.
    assert_eq!(
        text(&out.stderr).trim(),
        "",
        "systemd-analyze verify warned"
    );
    for setting in [
        "Type=notify",
        "WatchdogSec=",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=\n",
        "MemoryDenyWriteExecute=yes",
        "UMask=0077",
        "SystemCallFilter=@system-service",
    ] {
        assert!(UNIT.contains(setting), "the unit lacks {setting}");
    }
}

#[test]
fn the_shipped_unit_is_rated_ok_by_systemd_analyze_security() {
    let d = Deployment::new();
    let unit = unit_for_this_build(&d);
    let out = systemd_analyze(&["security", "--offline=true", unit.to_str().unwrap()]);
    let report = text(&out.stdout);
    let exposure: f64 = report
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for dropgate.service: ")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{report}{}", text(&out.stderr)));
    // The README quotes this figure.
    assert!(exposure <= 1.2, "exposure {exposure}:\n{report}");
}

/// What the daemon sent to the notify socket, each with when it came.
struct Notifications {
    seen: Arc<Mutex<Vec<(Instant, String)>>>,
}

impl Notifications {
    /// Binds a socket at `path` and collects every datagram; `on_message`
    /// runs in the receiving thread as each one arrives.
    fn listen(path: &std::path::Path, on_message: impl Fn(&str) + Send + 'static) -> Self {
        let socket = UnixDatagram::bind(path).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            loop {
                match socket.recv(&mut buf) {
                    Ok(n) => {
                        let message = String::from_utf8_lossy(&buf[..n]).to_string();
                        on_message(&message);
                        sink.lock().unwrap().push((Instant::now(), message));
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                    Err(_) => return,
                }
                if Arc::strong_count(&sink) == 1 {
                    return;
                }
            }
        });
        Notifications { seen }
    }

    fn lines(&self) -> Vec<String> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .flat_map(|(_, m)| m.lines().map(str::to_string).collect::<Vec<_>>())
            .collect()
    }

    fn position(&self, line: &str) -> Option<usize> {
        self.lines().iter().position(|l| l == line)
    }
}

#[test]
fn ready_comes_once_the_sftp_port_accepts_then_watchdog_pings_then_stopping_on_sigterm() {
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let d = Deployment::with_config(&fast(SHIPPED_CONFIG).replace(
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"127.0.0.1:{port}\""),
    ));
    let socket = d.path("notify.sock");
    // Set in the receiving thread the moment the first READY=1 arrives:
    // whether the SFTP port accepted a connection then.
    let accepted_at_ready: Arc<Mutex<Option<bool>>> = Arc::default();
    let notifications = {
        let accepted = accepted_at_ready.clone();
        Notifications::listen(&socket, move |message| {
            if message.lines().any(|l| l == "READY=1") {
                let address = ([127, 0, 0, 1], port).into();
                let ok = TcpStream::connect_timeout(&address, Duration::from_secs(2)).is_ok();
                accepted.lock().unwrap().get_or_insert(ok);
            }
        })
    };
    let daemon = d.start_with(|command| {
        command
            .env("NOTIFY_SOCKET", &socket)
            .env("WATCHDOG_USEC", "1000000");
    });
    assert_eq!(daemon.sftp_port(), port);
    wait_for("READY=1", Duration::from_secs(10), || {
        accepted_at_ready.lock().unwrap().is_some()
    });
    assert_eq!(
        *accepted_at_ready.lock().unwrap(),
        Some(true),
        "READY=1 came before the SFTP port accepted connections"
    );
    let lines = notifications.lines();
    assert!(
        lines.iter().any(|l| l.starts_with("STATUS=ready")),
        "{lines:?}"
    );

    // Pinged twice a second while the idle processing loop keeps turning.
    std::thread::sleep(Duration::from_secs(3));
    let pings = notifications
        .lines()
        .iter()
        .filter(|l| *l == "WATCHDOG=1")
        .count();
    assert!(pings >= 4, "{pings} watchdog pings in 3 s");

    daemon.terminate();
    let ready = notifications.position("READY=1").unwrap();
    let stopping = notifications
        .position("STOPPING=1")
        .expect("STOPPING=1 on SIGTERM");
    assert!(stopping > ready);
}

/// Which stream `JOURNAL_STREAM` names, as systemd sets it.
#[derive(Clone, Copy)]
enum JournalStream {
    Unset,
    /// The daemon's stderr: run by systemd with its output to the journal.
    Stderr,
    /// Another file's: inherited from a parent that systemd ran.
    Other,
}

/// Runs the daemon with its stderr in a file, until a file dropped is
/// loaded; returns what it logged.
fn log_of_a_run(d: &Deployment, args: &[&str], journal: JournalStream) -> String {
    use std::os::unix::fs::MetadataExt as _;
    let log_path = d.path("stderr.log");
    let log_file = std::fs::File::create(&log_path).unwrap();
    let other = std::fs::File::create(d.path("other.log")).unwrap();
    let mut command = d.command(args);
    let stream = |file: &std::fs::File| {
        let meta = file.metadata().unwrap();
        format!("{}:{}", meta.dev(), meta.ino())
    };
    match journal {
        JournalStream::Unset => command.env_remove("JOURNAL_STREAM"),
        JournalStream::Stderr => command.env("JOURNAL_STREAM", stream(&log_file)),
        JournalStream::Other => command.env("JOURNAL_STREAM", stream(&other)),
    };
    let mut child = command
        .env("DROPGATE_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(log_file)
        .spawn()
        .unwrap();
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    wait_for("the daemon ready", Duration::from_secs(20), || {
        log().contains("ready")
    });
    d.drop_file("news2_logged.csv", news2_csv(3, 2, 0).as_bytes());
    wait_for("the file loaded", Duration::from_secs(20), || {
        d.count("SELECT count(*) FROM files WHERE state = 'loaded'") == 1
    });
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(child.wait().unwrap().success(), "{}", log());
    log()
}

#[test]
fn log_format_json_writes_one_object_per_line_with_the_file_id_on_lines_about_a_file() {
    let d = Deployment::new();
    let log = log_of_a_run(&d, &["--log-format", "json", "run"], JournalStream::Unset);
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(
        lines
            .iter()
            .all(|l| l["level"].is_string() && l["message"].is_string())
    );
    let processed = lines
        .iter()
        .find(|l| l["message"] == "processed")
        .unwrap_or_else(|| panic!("no `processed` line: {log}"));
    assert_eq!(processed["file_id"], 1);
    assert_eq!(processed["state"], "loaded");
    assert!(lines.iter().any(|l| l["message"] == "stopped"));
    for identifier in [nhs_number(1), nhs_number(2), "Family1".to_string()] {
        assert!(
            !log.contains(&identifier),
            "a patient identifier in the log"
        );
    }
}

#[test]
fn under_the_journal_each_line_carries_its_syslog_priority_and_no_time() {
    let d = Deployment::new();
    let log = log_of_a_run(&d, &["run"], JournalStream::Stderr);
    for line in log.lines() {
        assert!(
            line.starts_with("<6>") || line.starts_with("<4>") || line.starts_with("<3>"),
            "{line}"
        );
        assert!(!line.contains("Z  INFO"), "a time stamp: {line}");
    }
    assert!(
        log.lines()
            .any(|l| l.starts_with("<6>") && l.contains("processed"))
    );

    // The variable inherited, naming another stream: lines for people.
    let d = Deployment::new();
    let log = log_of_a_run(&d, &["run"], JournalStream::Other);
    assert!(log.lines().all(|l| l.starts_with("20")), "{log}");
}
