//! The HTTP listener: health, readiness and Prometheus metrics, read by
//! Prometheus's own Python parser after a run with known counts.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use crate::harness::*;

fn with_http() -> Deployment {
    Deployment::with_config(&format!(
        "{}\n[http]\nlisten = \"127.0.0.1:0\"\n",
        fast(SHIPPED_CONFIG)
    ))
}

fn http_port(daemon: &Daemon) -> u16 {
    let log = daemon.log();
    let line = log
        .lines()
        .find(|l| l.contains("HTTP listening"))
        .unwrap_or_else(|| panic!("no HTTP listener: {log}"));
    let address = line.split("address=").nth(1).unwrap();
    let address = address.split_whitespace().next().unwrap();
    address.rsplit(':').next().unwrap().parse().unwrap()
}

/// Status code and body of one request sent as `request` (raw).
fn request(port: u16, request: &[u8]) -> (u16, String) {
    let mut socket = TcpStream::connect(("127.0.0.1", port)).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let _ = socket.write_all(request);
    let mut response = String::new();
    let _ = socket.read_to_string(&mut response);
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {response:?}"));
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

fn get(port: u16, path: &str) -> (u16, String) {
    request(
        port,
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").as_bytes(),
    )
}

/// Every sample, as `name{label="value",...}` → value, read by
/// `prometheus_client`'s OpenMetrics parser (which refuses malformed text).
fn parsed_metrics(d: &Deployment, exposition: &str) -> HashMap<String, f64> {
    let path = d.path("metrics.txt");
    std::fs::write(&path, exposition).unwrap();
    let script = r#"
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
out = {}
for family in text_string_to_metric_families(open(sys.argv[1]).read()):
    for s in family.samples:
        labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
        out[f"{s.name}{{{labels}}}"] = s.value
print(json.dumps(out))
"#;
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(&path)
        .output()
        .expect("python3 with prometheus_client (scripts/test installs it)");
    assert!(out.status.success(), "{}\n{exposition}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn metrics_count_what_the_ledger_holds_after_a_run_and_parse_as_openmetrics() {
    let d = with_http();
    let daemon = d.start();
    let port = http_port(&daemon);
    assert_eq!(get(port, "/healthz"), (200, "ok\n".to_string()));
    assert_eq!(get(port, "/readyz"), (200, "ready\n".to_string()));

    d.drop_file("news2_m1.csv", news2_csv(3, 2, 0).as_bytes());
    d.drop_file("news2_m2.csv", news2_csv(4, 2, 100).as_bytes());
    let bad = news2_csv(3, 2, 200).replace(&nhs_number(1), "1234567890");
    d.drop_file("news2_m3.csv", bad.as_bytes());
    let upload = d.write_input("news2_m4.csv", news2_csv(2, 2, 300).as_bytes());
    let sftp_port = daemon.sftp_port();
    let out = sftp(
        &d,
        sftp_port,
        &demo_key(&d),
        &format!("put {} inbox/news2_m4.csv\n", upload.display()),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    // Counted just after each commit, before the line that says so.
    wait_for("four files settled", Duration::from_secs(20), || {
        daemon.log().matches(" processed ").count() == 4
    });

    let (status, text) = get(port, "/metrics");
    assert_eq!(status, 200);
    let m = parsed_metrics(&d, &text);
    let value = |sample: &str| -> f64 {
        *m.get(sample)
            .unwrap_or_else(|| panic!("no sample {sample} in:\n{text}"))
    };
    let sum = |prefix: &str| -> f64 {
        m.iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(_, v)| v)
            .sum()
    };

    assert_eq!(
        value(r#"dropgate_files_received_total{source="demo-carehome-drop"}"#),
        3.0
    );
    assert_eq!(
        value(r#"dropgate_files_received_total{source="sftp-server"}"#),
        1.0
    );
    let bytes = d.count("SELECT sum(size) FROM files") as f64;
    assert_eq!(sum("dropgate_received_bytes_total{"), bytes);
    assert_eq!(
        value(r#"dropgate_files_processed_total{feed="news2",state="loaded"}"#),
        3.0
    );
    assert_eq!(
        value(r#"dropgate_files_processed_total{feed="news2",state="quarantined"}"#),
        1.0
    );
    let reason = d.string("SELECT reason FROM files WHERE state = 'quarantined'");
    assert_eq!(
        value(&format!(
            r#"dropgate_quarantines_total{{reason="{reason}"}}"#
        )),
        1.0
    );
    assert_eq!(value(r#"dropgate_rows_total{feed="news2"}"#), 9.0);
    let records = d.count("SELECT sum(records) FROM files WHERE state = 'loaded'") as f64;
    assert!(records > 0.0);
    assert_eq!(value(r#"dropgate_records_total{feed="news2"}"#), records);
    let problems = d.count("SELECT count(*) FROM file_problems") as f64;
    assert!(problems >= 1.0);
    assert_eq!(sum("dropgate_problems_total{"), problems);
    assert_eq!(
        value(r#"dropgate_processing_seconds_count{feed="news2"}"#),
        4.0
    );
    assert_eq!(sum("dropgate_landing_seconds_count{"), 4.0);
    assert_eq!(value(r#"dropgate_audit_events_total{action="login"}"#), 1.0);
    assert_eq!(value("dropgate_sftp_sessions{}"), 0.0);
    // No file name, and no patient data, in any label.
    for secret in ["news2_m", &nhs_number(1), "Family1"] {
        assert!(!text.contains(secret), "{secret} in /metrics");
    }
    daemon.terminate();
}

#[test]
fn the_listener_answers_only_small_get_requests_and_keeps_serving() {
    let d = with_http();
    let daemon = d.start();
    let port = http_port(&daemon);
    assert_eq!(get(port, "/nothing-here").0, 404);
    assert_eq!(
        request(port, b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n").0,
        405
    );
    let huge = format!(
        "GET /metrics HTTP/1.1\r\nX-Filler: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    assert_eq!(request(port, huge.as_bytes()).0, 431);
    // A client that connects and says nothing holds no more than its slot.
    let silent: Vec<TcpStream> = (0..10)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    assert_eq!(get(port, "/healthz").0, 200);
    drop(silent);
    let (status, body) = request(port, b"HEAD /readyz HTTP/1.1\r\n\r\n");
    assert_eq!((status, body.as_str()), (200, ""));
    daemon.terminate();
}
