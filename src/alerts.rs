//! The file that did not come: each feed's `[feeds.NAME.expect]` checked
//! against the ledger, a breach raised as an alert and cleared when it
//! mends, each change kept in the ledger and sent on as `[alerts]` says.
//!
//! An alert carries counts, times and file ids only: never a file name or
//! anything from a file's content.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;

use crate::config::{Band, Config, Feed};
use crate::forward::{self, Contents, Parcel};
use crate::ledger::{AlertRow, FileState, Ledger, LedgerError, Settles, SystemClock};

pub const FILE_MISSING: &str = "file_missing";
pub const ROW_COUNT: &str = "row_count";
pub const QUARANTINE_RATE: &str = "quarantine_rate";

/// The longest wait between two checks: how soon a late file clears its
/// alert, or a file out of band raises one.
const CHECK_EVERY: Duration = Duration::from_secs(5);
/// How long an alert command may run.
const COMMAND_TIME: Duration = Duration::from_secs(30);

/// Checks every feed's expectations at `now`. `since` is the previous
/// check: an `arrives_by` time in `(since, now]` is judged now. Returns the
/// alerts raised or cleared, as recorded.
pub fn check(
    config: &Config,
    ledger: &mut Ledger,
    since: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Vec<AlertRow>, LedgerError> {
    let active = ledger.active_alerts()?;
    let mut changes = Vec::new();
    for feed in config.feeds.values() {
        let raised = |kind: &str| {
            active
                .iter()
                .find(|a| a.feed == feed.name && a.kind == kind)
        };
        let mut checker = Checker {
            ledger: &mut *ledger,
            feed,
            now,
            changes: &mut changes,
        };
        checker.arrival(since, raised(FILE_MISSING))?;
        if let Some(band) = feed.expect.row_count {
            checker.row_count(band, raised(ROW_COUNT).is_some())?;
        }
        if let Some(band) = feed.expect.quarantine_rate {
            checker.quarantine_rate(band, raised(QUARANTINE_RATE).is_some())?;
        }
    }
    Ok(changes)
}

struct Checker<'a> {
    ledger: &'a mut Ledger,
    feed: &'a Feed,
    now: DateTime<Utc>,
    changes: &'a mut Vec<AlertRow>,
}

impl Checker<'_> {
    fn record(
        &mut self,
        kind: &str,
        event: &str,
        detail: serde_json::Value,
    ) -> Result<(), LedgerError> {
        let row = self
            .ledger
            .alert(self.now, &self.feed.name, kind, event, &detail)?;
        self.changes.push(row);
        Ok(())
    }

    /// A file must have come within `within` before each `arrives_by` time.
    /// A file that comes late clears the alert; a deadline judged after the
    /// fact (at start) counts a late file too, so no stale alert is raised.
    fn arrival(
        &mut self,
        since: DateTime<Utc>,
        raised: Option<&AlertRow>,
    ) -> Result<(), LedgerError> {
        let Some((cron, within)) = &self.feed.expect.arrives_by else {
            return Ok(());
        };
        let within = chrono::Duration::from_std(*within).unwrap_or(chrono::Duration::days(1));
        if let Some(alert) = raised {
            let deadline = alert.detail["deadline"]
                .as_str()
                .and_then(|d| DateTime::parse_from_rfc3339(d).ok())
                .map_or(self.now, |d| d.with_timezone(&Utc));
            if let Some((file_id, at)) =
                self.ledger
                    .first_file_between(&self.feed.name, deadline, self.now)?
            {
                self.record(
                    FILE_MISSING,
                    "cleared",
                    json!({ "deadline": alert.detail["deadline"], "file_id": file_id, "received_at": at }),
                )?;
            }
            return Ok(());
        }
        let mut deadline = None;
        let mut at = since;
        while let Some(next) = cron.next_after(at) {
            if next > self.now {
                break;
            }
            deadline = Some(next);
            at = next;
        }
        let Some(deadline) = deadline else {
            return Ok(());
        };
        let from = deadline - within;
        if self
            .ledger
            .first_file_between(&self.feed.name, from, self.now)?
            .is_none()
        {
            self.record(
                FILE_MISSING,
                "raised",
                json!({
                    "deadline": crate::ledger::timestamp(deadline),
                    "window_from": crate::ledger::timestamp(from),
                }),
            )?;
        }
        Ok(())
    }

    /// The newest loaded file's rows within `percent` of the mean of the
    /// `files` loaded before it.
    fn row_count(&mut self, band: Band, raised: bool) -> Result<(), LedgerError> {
        let loaded = self
            .ledger
            .newest_settled(&self.feed.name, band.files as usize + 1, true)?;
        if loaded.len() < band.files as usize + 1 {
            return Ok(());
        }
        let (file_id, _, rows) = loaded[0];
        let mean = loaded[1..].iter().map(|f| f.2 as f64).sum::<f64>() / band.files as f64;
        let off_by = (rows as f64 - mean).abs();
        let breach = off_by * 100.0 > f64::from(band.percent) * mean;
        let detail = json!({
            "file_id": file_id,
            "rows": rows,
            "mean_of_previous": (mean * 10.0).round() / 10.0,
            "previous_files": band.files,
            "band_percent": band.percent,
        });
        match (breach, raised) {
            (true, false) => self.record(ROW_COUNT, "raised", detail),
            (false, true) => self.record(ROW_COUNT, "cleared", detail),
            _ => Ok(()),
        }
    }

    /// At most `percent` of the newest `files` settled files quarantined.
    fn quarantine_rate(&mut self, band: Band, raised: bool) -> Result<(), LedgerError> {
        let settled = self
            .ledger
            .newest_settled(&self.feed.name, band.files as usize, false)?;
        if settled.is_empty() {
            return Ok(());
        }
        let quarantined = settled
            .iter()
            .filter(|f| f.1 == FileState::Quarantined)
            .count();
        let breach = quarantined * 100 > band.percent as usize * settled.len();
        let detail = json!({
            "quarantined": quarantined,
            "files": settled.len(),
            "max_percent": band.percent,
        });
        match (breach, raised) {
            (true, false) => self.record(QUARANTINE_RATE, "raised", detail),
            (false, true) => self.record(QUARANTINE_RATE, "cleared", detail),
            _ => Ok(()),
        }
    }
}

/// Checks the feeds with expectations until shutdown: at each `arrives_by`
/// time and at least every [`CHECK_EVERY`].
pub async fn watch(config: Arc<Config>, mut shutdown: watch::Receiver<bool>) {
    let feeds: Vec<&Feed> = config
        .feeds
        .values()
        .filter(|f| f.expect.is_set())
        .collect();
    if feeds.is_empty() {
        return;
    }
    // A deadline passed while the daemon was stopped is judged at start,
    // within its window.
    let longest = feeds
        .iter()
        .filter_map(|f| f.expect.arrives_by.as_ref().map(|a| a.1))
        .max()
        .unwrap_or_default();
    let mut since = Utc::now() - chrono::Duration::from_std(longest).unwrap_or_default();
    // One connection for every check and push, opened again after a failure.
    let mut ledger: Option<Arc<Mutex<Ledger>>> = None;
    loop {
        let now = Utc::now();
        let checked = {
            let (config, held) = (config.clone(), ledger.take());
            tokio::task::spawn_blocking(move || {
                let ledger = match held {
                    Some(ledger) => ledger,
                    None => Arc::new(Mutex::new(Ledger::open(
                        &config.daemon.ledger,
                        Arc::new(SystemClock),
                    )?)),
                };
                let changes = check(
                    &config,
                    &mut ledger.lock().expect("ledger lock"),
                    since,
                    now,
                )?;
                Ok::<_, LedgerError>((ledger, changes))
            })
            .await
        };
        match checked {
            Ok(Ok((open, changes))) => {
                since = now;
                for alert in changes {
                    announce(&alert);
                    send(&config, &alert, &open).await;
                }
                ledger = Some(open);
            }
            Ok(Err(e)) => tracing::error!(error = %e, "checking feed expectations failed"),
            Err(e) => tracing::error!(error = %e, "checking feed expectations failed"),
        }
        let next_deadline = feeds
            .iter()
            .filter_map(|f| f.expect.arrives_by.as_ref()?.0.next_after(now))
            .min();
        let wait = next_deadline
            .and_then(|d| (d - Utc::now()).to_std().ok())
            .map_or(CHECK_EVERY, |d| d.min(CHECK_EVERY))
            .max(Duration::from_millis(100));
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

fn announce(alert: &AlertRow) {
    if alert.event == "raised" {
        tracing::warn!(alert_id = alert.id, feed = %alert.feed, kind = %alert.kind, detail = %alert.detail, "alert raised");
    } else {
        tracing::info!(alert_id = alert.id, feed = %alert.feed, kind = %alert.kind, "alert cleared");
    }
}

/// Sends an alert on to the `[alerts]` command and destination. A failure
/// is logged; the alert stays in the ledger, `status` and `dropgate alerts`.
pub async fn send(config: &Config, alert: &AlertRow, ledger: &Mutex<Ledger>) {
    let body = serde_json::to_vec(alert).expect("an alert serialises");
    if let Some(command) = &config.alerts.command {
        if let Err(e) = run_command(command, &body).await {
            tracing::error!(alert_id = alert.id, error = %e, "the alert command failed");
        }
    }
    if let Some(name) = &config.alerts.destination
        && let Some(destination) = config.destinations.get(name)
    {
        let file_name = format!(
            "alert-{}-{}-{}-{}.json",
            alert.id, alert.feed, alert.kind, alert.event
        );
        let sha256 = crate::digest::sha256_hex(&body);
        let bytes = body.clone();
        let open = move || -> std::io::Result<Box<dyn std::io::Read + Send>> {
            Ok(Box::new(std::io::Cursor::new(bytes.clone())))
        };
        let parcel = Parcel {
            contents: Contents::Stream(&open),
            name: &file_name,
            file_id: None,
            sha256: &sha256,
            size: body.len() as u64,
        };
        let pushed = forward::deliver(destination, &parcel, Settles::Nothing, ledger).await;
        crate::metrics::METRICS.delivery("alert", name, pushed.is_ok());
        if let Err(e) = pushed {
            tracing::error!(alert_id = alert.id, error = %e, "the alert was not pushed");
        }
    }
}

async fn run_command(command: &[String], body: &[u8]) -> std::io::Result<()> {
    let mut child = tokio::process::Command::new(&command[0])
        .args(&command[1..])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        // systemd's notify socket is the daemon's alone.
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .env_remove("WATCHDOG_PID")
        .kill_on_drop(true)
        .spawn()?;
    let mut stdin = child.stdin.take().expect("piped");
    let run = async {
        stdin.write_all(body).await?;
        drop(stdin);
        child.wait().await
    };
    match tokio::time::timeout(COMMAND_TIME, run).await {
        Ok(Ok(status)) if status.success() => Ok(()),
        Ok(Ok(status)) => Err(std::io::Error::other(format!("exited with {status}"))),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(std::io::Error::other("still running after 30s; killed")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::{Clock, NewFile, Outcome};
    use chrono::TimeZone;
    use std::path::Path;

    const SHIPPED: &str = include_str!("../config/dropgate.toml");

    /// The ledger's clock, set by the test.
    #[derive(Debug)]
    struct SetClock(Mutex<DateTime<Utc>>);

    impl Clock for SetClock {
        fn now(&self) -> DateTime<Utc> {
            *self.0.lock().unwrap()
        }
    }

    struct Fixture {
        config: Config,
        ledger: Ledger,
        clock: Arc<SetClock>,
        files: u32,
    }

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    fn fixture(expect: &str) -> Fixture {
        let text = format!("{SHIPPED}\n[feeds.news2.expect]\n{expect}\n");
        let config = Config::parse(Path::new("/opt/dg/config/dropgate.toml"), &text).unwrap();
        let clock = Arc::new(SetClock(Mutex::new(Utc.timestamp_opt(0, 0).unwrap())));
        let ledger = Ledger::open_in_memory(clock.clone()).unwrap();
        Fixture {
            config,
            ledger,
            clock,
            files: 0,
        }
    }

    impl Fixture {
        /// A news2 file received at `when`, settled as `state` with `rows`.
        fn file(&mut self, when: &str, state: FileState, rows: u64) -> i64 {
            *self.clock.0.lock().unwrap() = at(when);
            self.files += 1;
            let id = self
                .ledger
                .record_received(&[NewFile {
                    source: "demo-carehome-drop".into(),
                    partner: "demo-carehome".into(),
                    feed: Some("news2".into()),
                    name: format!("news2_{}.csv", self.files),
                    spool_name: format!("spool-{}", self.files),
                    sha256: format!("{:064x}", self.files),
                    size: 10,
                    handed_over: false,
                    uploaded_from: None,
                    taken_from: None,
                    held: None,
                }])
                .unwrap()[0];
            let mut batch = self.ledger.begin().unwrap();
            batch
                .finish(
                    id,
                    &Outcome {
                        state,
                        feed: Some("news2".into()),
                        reason: (state == FileState::Quarantined)
                            .then(|| "validation_failed".into()),
                        rows_read: Some(rows),
                        rows_loaded: Some(if state == FileState::Loaded { rows } else { 0 }),
                        records: 0,
                        duplicate_of: None,
                        problem_count: 0,
                        problems: Vec::new(),
                        detail: json!({}),
                    },
                )
                .unwrap();
            batch.commit().unwrap();
            id
        }

        /// The alerts a check at `now` raised or cleared, as `kind event`.
        fn check(&mut self, since: &str, now: &str) -> Vec<String> {
            check(&self.config, &mut self.ledger, at(since), at(now))
                .unwrap()
                .into_iter()
                .map(|a| format!("{} {}", a.kind, a.event))
                .collect()
        }
    }

    #[test]
    fn a_file_missing_at_its_weekday_deadline_is_raised_once_and_cleared_by_a_late_file() {
        // 2026-12-03 is a Thursday; London is on GMT in December.
        let mut f = fixture("arrives_by = \"0 7 * * 1-5\"\nwithin = \"24h\"");
        f.file("2026-12-03T10:00:00Z", FileState::Loaded, 10);
        // Friday 07:00: Thursday's file came within the 24 hours before.
        assert!(
            f.check("2026-12-04T06:59:00Z", "2026-12-04T07:00:01Z")
                .is_empty()
        );
        // No deadline at the weekend, though no file comes.
        assert!(
            f.check("2026-12-04T07:00:01Z", "2026-12-06T12:00:00Z")
                .is_empty()
        );
        // Monday 07:00: nothing since Sunday 07:00.
        assert_eq!(
            f.check("2026-12-06T12:00:00Z", "2026-12-07T07:00:01Z"),
            ["file_missing raised"]
        );
        let active = f.ledger.active_alerts().unwrap();
        assert_eq!(active[0].detail["deadline"], "2026-12-07T07:00:00.000Z");
        assert_eq!(active[0].detail["window_from"], "2026-12-06T07:00:00.000Z");
        // Still missing: raised once only.
        assert!(
            f.check("2026-12-07T07:00:01Z", "2026-12-07T07:30:00Z")
                .is_empty()
        );
        let late = f.file("2026-12-07T08:00:00Z", FileState::Loaded, 10);
        assert_eq!(
            f.check("2026-12-07T07:30:00Z", "2026-12-07T08:00:05Z"),
            ["file_missing cleared"]
        );
        assert!(f.ledger.active_alerts().unwrap().is_empty());
        assert_eq!(
            f.ledger.alert_history(1).unwrap()[0].detail["file_id"],
            late
        );
        // A start at 09:00 judges the 07:00 deadline again: the late file
        // counts, so no stale alert.
        assert!(
            f.check("2026-12-06T09:00:00Z", "2026-12-07T09:00:00Z")
                .is_empty()
        );
    }

    #[test]
    fn a_deadline_is_read_on_the_wall_clock_across_summer_time() {
        let mut f = fixture("arrives_by = \"0 7 * * *\"\nwithin = \"2h\"");
        // 07:00 in London in July is 06:00 UTC (read as UTC, it would not
        // have passed yet); a file at 03:30 UTC is before the window.
        f.file("2026-07-06T03:30:00Z", FileState::Loaded, 10);
        assert_eq!(
            f.check("2026-07-06T05:00:00Z", "2026-07-06T06:00:01Z"),
            ["file_missing raised"]
        );
        let active = f.ledger.active_alerts().unwrap();
        assert_eq!(active[0].detail["deadline"], "2026-07-06T06:00:00.000Z");
    }

    #[test]
    fn a_row_count_out_of_its_band_raises_and_the_next_within_clears() {
        let mut f = fixture("row_count_band = 50\nrow_count_files = 4");
        for hour in 1..=4 {
            f.file(
                &format!("2026-12-03T0{hour}:00:00Z"),
                FileState::Loaded,
                100,
            );
        }
        // Quarantined files are not compared.
        f.file("2026-12-03T05:00:00Z", FileState::Quarantined, 3);
        assert!(
            f.check("2026-12-03T05:00:00Z", "2026-12-03T05:00:01Z")
                .is_empty()
        );
        f.file("2026-12-03T06:00:00Z", FileState::Loaded, 40);
        assert_eq!(
            f.check("2026-12-03T06:00:00Z", "2026-12-03T06:00:01Z"),
            ["row_count raised"]
        );
        let active = f.ledger.active_alerts().unwrap();
        assert_eq!(active[0].detail["rows"], 40);
        assert_eq!(active[0].detail["mean_of_previous"], 100.0);
        assert!(
            f.check("2026-12-03T06:00:01Z", "2026-12-03T06:00:05Z")
                .is_empty()
        );
        // Mean of the four before it: 85; 95 is within half of that.
        f.file("2026-12-03T07:00:00Z", FileState::Loaded, 95);
        assert_eq!(
            f.check("2026-12-03T07:00:00Z", "2026-12-03T07:00:01Z"),
            ["row_count cleared"]
        );
    }

    #[test]
    fn a_quarantine_rate_over_its_limit_raises_and_clears_when_it_falls() {
        let mut f = fixture("quarantine_rate = 20\nquarantine_files = 5");
        for (hour, state) in [
            FileState::Loaded,
            FileState::Loaded,
            FileState::Loaded,
            FileState::Loaded,
            FileState::Quarantined,
        ]
        .into_iter()
        .enumerate()
        {
            f.file(&format!("2026-12-03T0{hour}:00:00Z"), state, 5);
        }
        // One in five is 20%: not over.
        assert!(
            f.check("2026-12-03T05:00:00Z", "2026-12-03T05:00:01Z")
                .is_empty()
        );
        f.file("2026-12-03T06:00:00Z", FileState::Quarantined, 5);
        assert_eq!(
            f.check("2026-12-03T06:00:00Z", "2026-12-03T06:00:01Z"),
            ["quarantine_rate raised"]
        );
        f.file("2026-12-03T07:00:00Z", FileState::Loaded, 5);
        assert!(
            f.check("2026-12-03T07:00:00Z", "2026-12-03T07:00:01Z")
                .is_empty()
        );
        f.file("2026-12-03T08:00:00Z", FileState::Loaded, 5);
        f.file("2026-12-03T09:00:00Z", FileState::Loaded, 5);
        assert!(
            f.check("2026-12-03T09:00:00Z", "2026-12-03T09:00:01Z")
                .is_empty()
        );
        f.file("2026-12-03T10:00:00Z", FileState::Loaded, 5);
        // The newest five hold one quarantine.
        assert_eq!(
            f.check("2026-12-03T10:00:00Z", "2026-12-03T10:00:01Z"),
            ["quarantine_rate cleared"]
        );
    }
}
