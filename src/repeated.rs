//! A failure met again on every retry (a failing disk, a ledger that cannot
//! be written): logged when it starts, then at most once a minute with how
//! many were not, and once when the work succeeds again, so that an hour's
//! outage is a few lines in the log rather than thousands.

use std::time::{Duration, Instant};

const LOG_EVERY: Duration = Duration::from_secs(60);

#[derive(Debug, Default)]
pub struct Repeated {
    logged_at: Option<Instant>,
    unlogged: u64,
}

impl Repeated {
    /// Another failure: `Some(failures not logged since the last one that
    /// was)` when this one is to be logged.
    pub fn failed(&mut self) -> Option<u64> {
        let now = Instant::now();
        if self
            .logged_at
            .is_none_or(|at| now.duration_since(at) >= LOG_EVERY)
        {
            self.logged_at = Some(now);
            Some(std::mem::take(&mut self.unlogged))
        } else {
            self.unlogged += 1;
            None
        }
    }

    /// A success: true when failures were logged, so their end is too.
    pub fn mended(&mut self) -> bool {
        self.unlogged = 0;
        self.logged_at.take().is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_failure_is_logged_once_a_minute_and_its_end_once() {
        let mut repeated = Repeated::default();
        assert!(!repeated.mended(), "nothing failed, nothing to say");
        assert_eq!(repeated.failed(), Some(0));
        assert_eq!(repeated.failed(), None);
        assert_eq!(repeated.failed(), None);
        // A minute on, the next is logged with the two that were not.
        repeated.logged_at = Some(Instant::now() - LOG_EVERY);
        assert_eq!(repeated.failed(), Some(2));
        assert!(repeated.mended());
        assert!(!repeated.mended());
        assert_eq!(repeated.failed(), Some(0), "a new outage is said at once");
    }
}
