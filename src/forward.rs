//! Forward: files pushed to destinations, with retries and backoff; every
//! attempt and the outcome are ledger rows.

use std::io::Read;
use std::path::Path;
use std::sync::Mutex;

use crate::config::Destination;
use crate::ledger::{DeliveryEvent, Ledger, Settles};
use crate::remote::RemoteError;
use crate::remote::{Connection, Upload};

/// Where a parcel's bytes come from.
#[derive(Clone, Copy)]
pub enum Contents<'a> {
    File(&'a Path),
    /// Made afresh for each attempt, as they are sent (a decrypted
    /// payload): never written to disk.
    Stream(&'a (dyn Fn() -> std::io::Result<Box<dyn Read + Send>> + Sync)),
}

/// A file to deliver.
pub struct Parcel<'a> {
    pub contents: Contents<'a>,
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
    settles: Settles<'_>,
    ledger: &Mutex<Ledger>,
) -> Result<u32, RemoteError> {
    deliver_all(
        destination,
        None,
        std::slice::from_ref(parcel),
        settles,
        ledger,
    )
    .await
}

/// Delivers files together, in order, in one session (into `folder`,
/// created when missing, when given), retrying the whole shipment as the
/// destination's settings say. Each file is recorded as delivered, with
/// what the shipment `settles` in the same transaction, or the shipment as
/// failed, per file.
pub async fn deliver_all(
    destination: &Destination,
    folder: Option<&str>,
    parcels: &[Parcel<'_>],
    settles: Settles<'_>,
    ledger: &Mutex<Ledger>,
) -> Result<u32, RemoteError> {
    let remote_name = |parcel: &Parcel<'_>| match folder {
        Some(folder) => format!("{folder}/{}", parcel.name),
        None => parcel.name.to_string(),
    };
    let record =
        |parcel: &Parcel<'_>, attempt: u32, event: &str, detail: Option<serde_json::Value>| {
            let mut ledger = ledger.lock().expect("ledger lock");
            let written = ledger.delivery(&DeliveryEvent {
                destination: &destination.name,
                file_id: parcel.file_id,
                name: &remote_name(parcel),
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
    let record_all = |attempt: u32, event: &str, error: &RemoteError| {
        for parcel in parcels {
            record(
                parcel,
                attempt,
                event,
                Some(serde_json::json!({ "error": error.to_string() })),
            );
        }
    };
    let seed = std::process::id() as u64 ^ parcels.iter().map(|p| p.size).sum::<u64>();
    let mut attempt = 1;
    loop {
        let result = async {
            let mut connection =
                Connection::connect(&destination.endpoint, destination.timeout).await?;
            let shipped = async {
                if let Some(folder) = folder {
                    connection.make_folder(folder).await?;
                }
                for parcel in parcels {
                    let upload = match parcel.contents {
                        Contents::File(path) => Upload::File(path),
                        Contents::Stream(open) => Upload::Stream(open()?),
                    };
                    let sent = connection.put(upload, &remote_name(parcel)).await?;
                    // A stream is made afresh for each attempt: what went
                    // must be what was hashed and is recorded.
                    if sent != parcel.size {
                        return Err(RemoteError::SizeMismatch {
                            operation: "upload",
                            local: parcel.size,
                            remote: sent,
                        });
                    }
                }
                Ok(())
            }
            .await;
            connection.close().await;
            shipped
        }
        .await;
        match result {
            Ok(()) => {
                let names: Vec<String> = parcels.iter().map(remote_name).collect();
                let events: Vec<DeliveryEvent<'_>> = parcels
                    .iter()
                    .zip(&names)
                    .map(|(parcel, name)| DeliveryEvent {
                        destination: &destination.name,
                        file_id: parcel.file_id,
                        name,
                        sha256: parcel.sha256,
                        size: parcel.size,
                        attempt,
                        event: "delivered",
                        detail: None,
                    })
                    .collect();
                let recorded = ledger
                    .lock()
                    .expect("ledger lock")
                    .delivered(&events, attempt, settles);
                if let Err(e) = recorded {
                    // Left pending, it is sent again: the same name, replaced.
                    tracing::error!(destination = %destination.name, error = %e, "delivered, but could not record it; it will be sent again");
                }
                let file_ids: Vec<i64> = parcels.iter().filter_map(|p| p.file_id).collect();
                tracing::info!(destination = %destination.name, files = parcels.len(), ?file_ids, attempt, "delivered");
                return Ok(attempt);
            }
            // A wrong host key or a refused login will not mend by retrying.
            Err(
                e @ (RemoteError::HostKeyMismatch { .. }
                | RemoteError::Auth { .. }
                | RemoteError::Certificate { .. }
                | RemoteError::Key { .. }),
            ) => {
                record_all(attempt, "gave_up", &e);
                return Err(e);
            }
            Err(e) if attempt >= destination.attempts => {
                record_all(attempt, "gave_up", &e);
                tracing::error!(destination = %destination.name, attempt, error = %e, "delivery given up");
                return Err(e);
            }
            Err(e) => {
                record_all(attempt, "attempt_failed", &e);
                crate::metrics::METRICS
                    .delivery_retries
                    .get_or_create(&crate::metrics::DestinationLabel {
                        destination: destination.name.clone(),
                    })
                    .inc();
                attempt += 1;
                let wait = destination.backoff.delay(attempt, seed);
                tracing::warn!(destination = %destination.name, attempt, wait = ?wait, error = %e, "delivery failed; retrying");
                tokio::time::sleep(wait).await;
            }
        }
    }
}
