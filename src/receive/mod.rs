//! Receive: sources that notice complete files and hand them to `land`.
//!
//! A source never offers a file that may still be growing: see each source
//! for how it decides a file is complete.

pub mod local;
pub mod remote_poll;
pub mod sftp_server;

use std::time::Duration;

use tokio::time::Instant;

use crate::config::TEMPORARY_SUFFIXES;
use crate::intake::Intake;
use crate::ledger::AuditEvent;

/// Names a sender uses while still writing: dot-files and temporary suffixes.
pub fn is_temporary_name(file_name: &str) -> bool {
    file_name.starts_with('.') || TEMPORARY_SUFFIXES.iter().any(|s| file_name.ends_with(s))
}

/// Reports, without its name, a file a source left where it was because it
/// is over the source's `max_file_size`: one warning and one
/// `refused_limit` audit row (each source calls this once per unchanged file).
pub fn refuse_too_large(intake: &Intake, source: &str, partner: &str, size: u64, limit: u64) {
    tracing::warn!(
        source,
        size,
        limit,
        "a file over max_file_size is left where it is, not taken"
    );
    intake.audit(&AuditEvent {
        partner: Some(partner),
        remote: None,
        action: "refused_limit",
        file_id: None,
        detail: Some(serde_json::json!({
            "source": source,
            "limit": "max_file_size",
            "size": size,
            "max_file_size": limit,
        })),
    });
}

/// The one rule for "a sender has finished writing this file", shared by
/// every polled or watched source: the same stamp (size and modification
/// time) at two checks, and unchanged for `min_age` on dropgate's own clock,
/// so neither the sender's clock nor a slow writer matters. A file renamed
/// into a watched folder is complete at its first check instead: the rename
/// is how a sender says it has finished.
#[derive(Debug, Clone)]
pub struct Settling<S> {
    stamp: S,
    since: Instant,
    unchanged: u32,
    renamed_in: bool,
}

impl<S: PartialEq> Settling<S> {
    /// A file first seen `now` with this stamp.
    pub fn new(stamp: S, now: Instant) -> Settling<S> {
        Settling {
            stamp,
            since: now,
            unchanged: 0,
            renamed_in: false,
        }
    }

    /// The file was renamed into place: complete at the next check.
    pub fn renamed_in(&mut self) {
        self.renamed_in = true;
    }

    /// Notes the stamp seen at a check made `now`; true once the file counts
    /// as complete. A check at the instant it was first seen does not count.
    pub fn check(&mut self, stamp: S, now: Instant, min_age: Duration) -> bool {
        if std::mem::take(&mut self.renamed_in) {
            *self = Settling::new(stamp, now);
            return true;
        }
        if stamp != self.stamp {
            *self = Settling::new(stamp, now);
            return false;
        }
        if now > self.since {
            self.unchanged += 1;
        }
        self.unchanged >= 1 && now.duration_since(self.since) >= min_age
    }

    /// Starts waiting again (the file changed while it was being taken), by
    /// the rule for a file written in place.
    pub fn restart(&mut self, now: Instant) {
        self.since = now;
        self.unchanged = 0;
        self.renamed_in = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_complete_once_unchanged_at_two_checks_and_for_min_age() {
        let start = Instant::now();
        let min_age = Duration::from_millis(500);
        let at = |ms| start + Duration::from_millis(ms);
        let mut file = Settling::new(10u64, start);
        assert!(
            !file.check(10, start, Duration::ZERO),
            "one check is not two"
        );
        assert!(!file.check(10, at(100), min_age), "too young");
        assert!(!file.check(20, at(600), min_age), "it grew: waiting again");
        assert!(!file.check(20, at(1000), min_age), "young again");
        assert!(file.check(20, at(1100), min_age));
        file.restart(at(1200));
        assert!(!file.check(20, at(1300), min_age));
    }

    #[test]
    fn a_file_renamed_into_place_is_complete_at_its_first_check_unless_it_changes_while_taken() {
        let start = Instant::now();
        let at = |ms| start + Duration::from_millis(ms);
        let min_age = Duration::from_millis(500);
        let mut file = Settling::new(0u64, at(0));
        file.renamed_in();
        assert!(file.check(10, at(0), min_age), "complete at once");
        file.restart(at(10));
        assert!(
            !file.check(10, at(20), min_age),
            "changed while taken: by the usual rule"
        );
        assert!(!file.check(10, at(400), min_age));
        assert!(file.check(10, at(520), min_age));
    }
}
