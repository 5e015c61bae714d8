//! Telling systemd how the daemon is doing, for `Type=notify` units: ready
//! once every listener is bound, a status line, watchdog pings while
//! processing makes progress, and stopping. When systemd did not start the
//! daemon (no `NOTIFY_SOCKET`), each of these does nothing.

use std::time::Duration;

use sd_notify::NotifyState;

use crate::pipeline::Progress;

/// `READY=1`: the ledger is open, keys are loaded and every listener is bound.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// `STATUS=`: what the daemon is doing, shown by `systemctl status`.
pub fn status(status: &str) {
    send(&[NotifyState::Status(status)]);
}

/// `RELOADING=1`: reading the configuration again; `READY=1` follows.
pub fn reloading(status: &str) {
    send(&[NotifyState::Reloading, NotifyState::Status(status)]);
}

/// `STOPPING=1`: shutdown has begun.
pub fn stopping(status: &str) {
    send(&[NotifyState::Stopping, NotifyState::Status(status)]);
}

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "could not notify systemd");
    }
}

/// The watchdog period systemd asked for (`WatchdogSec=`), if any.
pub fn watchdog_period() -> Option<Duration> {
    sd_notify::watchdog_enabled().filter(|p| !p.is_zero())
}

/// Pings systemd's watchdog twice a period for as long as processing has
/// shown progress within the last period. A wedged processor stops the
/// pings, and systemd restarts the daemon; a stalled runtime stops them too,
/// since this runs on it. Runs until dropped.
pub async fn watchdog(progress: Progress, period: Duration) {
    watch_progress(progress, period, send).await
}

async fn watch_progress(
    progress: Progress,
    period: Duration,
    mut ping: impl FnMut(&[NotifyState]),
) {
    let mut tick = tokio::time::interval(period / 2);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stalled = false;
    loop {
        tick.tick().await;
        let quiet = progress.quiet_for();
        if quiet < period {
            if stalled {
                tracing::info!("processing moves again; watchdog pings resumed");
                stalled = false;
            }
            ping(&[NotifyState::Watchdog]);
        } else if !stalled {
            stalled = true;
            tracing::error!(
                quiet_secs = quiet.as_secs(),
                "processing has shown no progress for a whole watchdog period; pings withheld"
            );
            ping(&[NotifyState::Status("processing stalled")]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    fn pings(log: &Mutex<Vec<String>>) -> usize {
        log.lock()
            .unwrap()
            .iter()
            .filter(|m| *m == "WATCHDOG=1")
            .count()
    }

    #[tokio::test(start_paused = true)]
    async fn pings_stop_while_processing_shows_no_progress_and_resume_when_it_does() {
        let progress = Progress::default();
        let log = Arc::new(Mutex::new(Vec::new()));
        let sent = log.clone();
        let period = Duration::from_secs(10);
        let task = tokio::spawn(watch_progress(progress.clone(), period, move |states| {
            let mut sent = sent.lock().unwrap();
            sent.extend(states.iter().map(|s| s.to_string()));
        }));
        // Busy: a beat every 4 s, so a ping every half period.
        for _ in 0..10 {
            tokio::time::sleep(Duration::from_secs(4)).await;
            progress.beat();
        }
        let while_busy = pings(&log);
        assert!(while_busy >= 7, "{while_busy} pings in 40 s of progress");

        // Wedged: no beat for a minute. Pings stop within one period.
        tokio::time::sleep(Duration::from_secs(60)).await;
        let while_wedged = pings(&log) - while_busy;
        assert!(while_wedged <= 2, "{while_wedged} pings while wedged");
        assert!(
            log.lock()
                .unwrap()
                .iter()
                .any(|m| m == "STATUS=processing stalled")
        );

        progress.beat();
        tokio::time::sleep(Duration::from_secs(6)).await;
        assert!(pings(&log) > while_busy + while_wedged, "pings resume");
        task.abort();
    }
}
