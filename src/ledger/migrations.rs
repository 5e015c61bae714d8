//! Schema migrations: SQL files applied in order, counted in
//! `PRAGMA user_version`.

use rusqlite::{Connection, TransactionBehavior};

use super::*;

/// Schema migrations, in order; the database's `user_version` is how many have run.
pub(super) const MIGRATIONS: &[(&str, &str)] = &[
    ("0001_ledger", include_str!("migrations/0001_ledger.sql")),
    ("0002_records", include_str!("migrations/0002_records.sql")),
    ("0003_audit", include_str!("migrations/0003_audit.sql")),
    (
        "0004_deliveries",
        include_str!("migrations/0004_deliveries.sql"),
    ),
    (
        "0005_remote_taken",
        include_str!("migrations/0005_remote_taken.sql"),
    ),
    (
        "0006_source_status",
        include_str!("migrations/0006_source_status.sql"),
    ),
    (
        "0007_source_cleanup",
        include_str!("migrations/0007_source_cleanup.sql"),
    ),
    (
        "0008_observation_sets_inline",
        include_str!("migrations/0008_observation_sets_inline.sql"),
    ),
    (
        "0009_service_users_by_birth",
        include_str!("migrations/0009_service_users_by_birth.sql"),
    ),
    ("0010_exports", include_str!("migrations/0010_exports.sql")),
    ("0011_routes", include_str!("migrations/0011_routes.sql")),
    (
        "0012_care_records",
        include_str!("migrations/0012_care_records.sql"),
    ),
    (
        "0013_links_by_hand",
        include_str!("migrations/0013_links_by_hand.sql"),
    ),
    (
        "0014_record_versions",
        include_str!("migrations/0014_record_versions.sql"),
    ),
    (
        "0015_service_user_versions",
        include_str!("migrations/0015_service_user_versions.sql"),
    ),
    (
        "0016_held_payloads",
        include_str!("migrations/0016_held_payloads.sql"),
    ),
    (
        "0017_observation_set_versions",
        include_str!("migrations/0017_observation_set_versions.sql"),
    ),
    ("0018_alerts", include_str!("migrations/0018_alerts.sql")),
    (
        "0019_files_waiting",
        include_str!("migrations/0019_files_waiting.sql"),
    ),
    (
        "0020_retention",
        include_str!("migrations/0020_retention.sql"),
    ),
    (
        "0021_observation_set_lists",
        include_str!("migrations/0021_observation_set_lists.sql"),
    ),
];

pub(super) fn migrate(conn: &mut Connection) -> Result<()> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version > MIGRATIONS.len() as i64 {
        return Err(LedgerError::NewerSchema {
            found: version,
            known: MIGRATIONS.len(),
        });
    }
    for (index, (name, sql)) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        let fail = |source| LedgerError::Migration { name, source };
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Exclusive)
            .map_err(fail)?;
        // Another process may have migrated while we waited for the lock.
        let now: i64 = tx
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(fail)?;
        if now > index as i64 {
            continue;
        }
        // A new ledger's migrations are instant; an existing one's may
        // rewrite a large table, which must not look like a hang.
        let started = (version > 0).then(|| {
            tracing::info!(migration = name, "upgrading the ledger");
            std::time::Instant::now()
        });
        tx.execute_batch(sql).map_err(fail)?;
        tx.pragma_update(None, "user_version", index as i64 + 1)
            .map_err(fail)?;
        tx.commit().map_err(fail)?;
        if let Some(started) = started {
            tracing::info!(
                migration = name,
                seconds = started.elapsed().as_secs_f64(),
                "ledger upgraded"
            );
        }
    }
    Ok(())
}
