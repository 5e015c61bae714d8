//! Forward: files pushed to destinations, with retries and backoff; every
//! attempt and the outcome are ledger rows.

use std::path::Path;
use std::sync::Mutex;

use crate::config::Destination;
use crate::ledger::{DeliveryEvent, Ledger};
use crate::remote::Connection;
use crate::remote::RemoteError;

/// A file to deliver.
pub struct Parcel<'a> {
    pub path: &'a Path,
    /// Name it gets at the destination.
    pub name: &'a str,
    pub file_id: Option<i64>,
    pub sha256: &'a str,
    pub size: u64,
}

/// Delivers one file, retrying as the destination's settings say. Returns
/// the attempt that succeeded, or the last error once attempts run out.
pub async fn deliver(
    destination: &Destination,
    parcel: &Parcel<'_>,
    ledger: &Mutex<Ledger>,
) -> Result<u32, RemoteError> {
    let record = |attempt: u32, event: &str, detail: Option<serde_json::Value>| {
        let mut ledger = ledger.lock().expect("ledger lock");
        let written = ledger.delivery(&DeliveryEvent {
            destination: &destination.name,
            file_id: parcel.file_id,
            name: parcel.name,
            sha256: parcel.sha256,
            size: parcel.size,
            attempt,
            event,
            detail,
        });
        if let Err(e) = written {
            tracing::error!(error = %e, "could not record a delivery event");
        }
    };
    let seed = std::process::id() as u64 ^ parcel.size;
    let mut attempt = 1;
    loop {
        let result = async {
            let mut connection =
                Connection::connect(&destination.endpoint, destination.timeout).await?;
            let put = connection.put(parcel.path, parcel.name).await;
            connection.close().await;
            put
        }
        .await;
        match result {
            Ok(_) => {
                record(attempt, "delivered", None);
                tracing::info!(destination = %destination.name, attempt, "delivered");
                return Ok(attempt);
            }
            // A wrong host key or a refused login will not mend by retrying.
            Err(
                e @ (RemoteError::HostKeyMismatch { .. }
                | RemoteError::Auth { .. }
                | RemoteError::Certificate { .. }
                | RemoteError::Key { .. }),
            ) => {
                record(
                    attempt,
                    "gave_up",
                    Some(serde_json::json!({ "error": e.to_string() })),
                );
                return Err(e);
            }
            Err(e) if attempt >= destination.attempts => {
                record(
                    attempt,
                    "gave_up",
                    Some(serde_json::json!({ "error": e.to_string() })),
                );
                tracing::error!(destination = %destination.name, attempt, error = %e, "delivery given up");
                return Err(e);
            }
            Err(e) => {
                record(
                    attempt,
                    "attempt_failed",
                    Some(serde_json::json!({ "error": e.to_string() })),
                );
                attempt += 1;
                let wait = destination.backoff.delay(attempt, seed);
                tracing::warn!(destination = %destination.name, attempt, wait = ?wait, error = %e, "delivery failed; retrying");
                tokio::time::sleep(wait).await;
            }
        }
    }
}
