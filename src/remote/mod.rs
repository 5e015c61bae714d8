//! Remote file servers that dropgate logs in to: partners' servers it pulls
//! from (sources) and pushes to (destinations). Each transport offers the same
//! few operations; SFTP is the first.

pub mod sftp;

use std::time::Duration;

/// Why talking to a remote server failed.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("cannot connect to {address}: {message}")]
    Connect { address: String, message: String },
    #[error(
        "host key of {address} does not match the pinned key: the server presented {seen}, the config pins {pinned}; if the server's key really changed, update `host_key`"
    )]
    HostKeyMismatch {
        address: String,
        seen: String,
        pinned: String,
    },
    #[error("{address} refused the login of `{user}` with the configured key")]
    Auth { address: String, user: String },
    #[error("key {path}: {message}")]
    Key { path: String, message: String },
    #[error("{operation} {path}: {message}")]
    Transfer {
        operation: &'static str,
        path: String,
        message: String,
    },
    #[error("uploaded {path} but the server holds {remote} bytes, not {local}")]
    SizeMismatch {
        path: String,
        local: u64,
        remote: u64,
    },
    #[error("{0}")]
    Local(#[from] std::io::Error),
}

/// Exponential backoff with jitter between attempts, capped.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Backoff {
    /// The wait before attempt `n` (1-based; the first retry is attempt 2).
    pub fn delay(&self, attempt: u32, jitter_seed: u64) -> Duration {
        let exponent = attempt.saturating_sub(2).min(20);
        let base = self.initial.saturating_mul(1 << exponent).min(self.max);
        // Up to a quarter either way, so many clients do not retry in step.
        let spread = base.as_millis() as u64 / 4;
        if spread == 0 {
            return base;
        }
        let offset = splitmix(jitter_seed ^ u64::from(attempt)) % (2 * spread + 1);
        (base + Duration::from_millis(offset)).saturating_sub(Duration::from_millis(spread))
    }
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_its_cap_with_bounded_jitter() {
        let b = Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(30),
        };
        for seed in 0..50 {
            let d2 = b.delay(2, seed).as_millis();
            assert!((750..=1250).contains(&d2), "{d2}");
            let d4 = b.delay(4, seed).as_millis();
            assert!((3000..=5000).contains(&d4), "{d4}");
            let d20 = b.delay(20, seed).as_millis();
            assert!((22_500..=37_500).contains(&d20), "{d20}");
        }
    }
}
