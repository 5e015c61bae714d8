use super::*;
use crate::domain::nhs_number::NhsNumber;
use crate::model::{Records, ServiceUser};

fn ledger() -> Ledger {
    Ledger::open_in_memory(Arc::new(SystemClock)).unwrap()
}

fn received(ledger: &mut Ledger, name: &str) -> i64 {
    ledger
        .record_received(&[NewFile {
            source: "drop".into(),
            partner: "care".into(),
            feed: Some("news2".into()),
            name: name.into(),
            spool_name: format!("spool-{name}"),
            sha256: "ab".repeat(32),
            size: 10,
            handed_over: false,
            uploaded_from: None,
            taken_from: None,
        }])
        .unwrap()[0]
}

#[test]
fn migrations_apply_in_order_and_set_user_version() {
    let mut l = ledger();
    let version: i64 = l
        .connection()
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, MIGRATIONS.len() as i64);
    let check: String = l
        .connection()
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    // Running them again is a no-op.
    migrate(l.connection()).unwrap();
}

#[test]
fn every_migration_is_valid_sql_on_its_own() {
    let conn = Connection::open_in_memory().unwrap();
    for (name, sql) in MIGRATIONS {
        conn.execute_batch(sql)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

#[test]
fn a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    drop(Ledger::open(&path, Arc::new(SystemClock)).unwrap());
    let conn = Connection::open(&path).unwrap();
    conn.pragma_update(None, "user_version", 99).unwrap();
    drop(conn);
    assert!(matches!(
        Ledger::open(&path, Arc::new(SystemClock)),
        Err(LedgerError::NewerSchema { found: 99, .. })
    ));
}

#[test]
fn file_events_are_append_only() {
    let mut l = ledger();
    let id = received(&mut l, "a.csv");
    let conn = l.connection();
    assert!(
        conn.execute("UPDATE file_events SET event = 'x'", [])
            .is_err()
    );
    assert!(conn.execute("DELETE FROM file_events", []).is_err());
    assert_eq!(l.events(id).unwrap()[0].event, "received");
}

#[test]
fn replay_only_takes_quarantined_files() {
    let mut l = ledger();
    let id = received(&mut l, "a.csv");
    assert!(matches!(
        l.replay(id),
        Err(LedgerError::WrongState {
            state: FileState::Received,
            ..
        })
    ));
    let mut batch = l.begin().unwrap();
    batch
        .finish(
            id,
            &Outcome {
                state: FileState::Quarantined,
                feed: None,
                reason: Some("validation_failed".into()),
                rows_read: Some(1),
                rows_loaded: Some(0),
                records: 0,
                duplicate_of: None,
                problem_count: 0,
                problems: Vec::new(),
                detail: serde_json::json!({}),
            },
        )
        .unwrap();
    batch.commit().unwrap();
    l.replay(id).unwrap();
    assert_eq!(l.file(id).unwrap().state, FileState::Received);
    let events: Vec<String> = l.events(id).unwrap().into_iter().map(|e| e.event).collect();
    assert_eq!(events, ["received", "quarantined", "replayed"]);
    assert!(matches!(l.replay(999), Err(LedgerError::NotFound(999))));
}

fn user(local_id: &str, nhs: Option<&str>) -> Records {
    Records {
        line: 2,
        service_user: Some(ServiceUser {
            local_id: local_id.into(),
            nhs_number: nhs.map(|n| NhsNumber::parse(n).unwrap()),
            family_name: None,
            given_name: None,
            date_of_birth: None,
            gender: None,
            postcode: None,
        }),
        observations: None,
    }
}

fn write(l: &mut Ledger, source: &str, records: &[Records]) {
    let files: i64 = l
        .connection()
        .query_row("SELECT count(*) FROM files", [], |r| r.get(0))
        .unwrap();
    let id = received(l, &format!("{source}-{files}"));
    let mut batch = l.begin().unwrap();
    {
        let sp = batch.savepoint().unwrap();
        {
            let mut w = RecordWriter::new(&sp, id, source).unwrap();
            for r in records {
                w.write(r).unwrap();
            }
        }
        sp.commit().unwrap();
    }
    batch.commit().unwrap();
}

#[test]
fn details_sharing_an_nhs_number_are_linked_and_ids_stay_stable() {
    let mut l = ledger();
    write(
        &mut l,
        "home",
        &[user("R1", Some("9434765919")), user("R2", None)],
    );
    write(&mut l, "gp", &[user("P77", Some("9434765919"))]);
    let person = l.person_by_nhs_number("9434765919").unwrap().unwrap();
    let ids: Vec<(i64, &str)> = person
        .details
        .iter()
        .map(|d| (d.detail_id, d.local_id.as_str()))
        .collect();
    assert_eq!(ids, [(1, "R1"), (3, "P77")]);
    // Any linked detail finds the same person.
    let via_gp = l.person_by_local_id("gp", "P77").unwrap().unwrap();
    assert_eq!(via_gp.person_id, person.person_id);
    // R2 is alone until its NHS number arrives; its detail id does not change.
    let alone = l.person_by_local_id("home", "R2").unwrap().unwrap();
    assert_eq!(alone.details.len(), 1);
    assert_eq!(alone.details[0].detail_id, 2);
    write(&mut l, "home", &[user("R2", Some("9434765919"))]);
    let person = l.person_by_nhs_number("9434765919").unwrap().unwrap();
    let ids: Vec<i64> = person.details.iter().map(|d| d.detail_id).collect();
    assert_eq!(ids, [1, 2, 3]);
}

#[test]
fn a_detail_without_a_number_gains_one_in_place() {
    let mut l = ledger();
    write(&mut l, "home", &[user("R1", None)]);
    let before = l.person_by_local_id("home", "R1").unwrap().unwrap();
    write(&mut l, "home", &[user("R1", Some("9434765919"))]);
    let after = l.person_by_nhs_number("9434765919").unwrap().unwrap();
    assert_eq!(before.person_id, after.person_id);
    assert_eq!(after.nhs_number.as_deref(), Some("9434765919"));
}

#[test]
fn observation_code_ids_match_the_ledger() {
    let mut l = ledger();
    for code in crate::model::Code::ALL {
        let (name, unit): (String, Option<String>) = l
            .connection()
            .query_row(
                "SELECT code, unit FROM observation_codes WHERE id = ?1",
                [code.id()],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!(name, code.name());
        assert_eq!(unit.as_deref(), code.unit());
    }
    let rows: i64 = l
        .connection()
        .query_row("SELECT count(*) FROM observation_codes", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, crate::model::Code::ALL.len() as i64);
}

#[test]
fn the_audit_trail_is_a_hash_chain_that_shows_tampering() {
    let mut l = ledger();
    for (action, remote) in [
        ("login", "10.0.0.1"),
        ("upload", "10.0.0.1"),
        ("refused", "10.0.0.2"),
    ] {
        l.audit(&AuditEvent {
            partner: Some("care"),
            remote: Some(remote),
            action,
            ..AuditEvent::default()
        })
        .unwrap();
    }
    let verify = |rows: &[AuditRow]| {
        let mut prev = "0".repeat(64);
        rows.iter()
            .map(|r| {
                let ok = r.verifies_after(&prev);
                prev = r.hash.clone();
                ok
            })
            .collect::<Vec<bool>>()
    };
    assert_eq!(verify(&l.audit_events().unwrap()), [true, true, true]);
    // Rows cannot be changed through SQL...
    assert!(
        l.connection()
            .execute(
                "UPDATE audit_events SET remote = '10.9.9.9' WHERE id = 2",
                []
            )
            .is_err()
    );
    // ...and a change made around the triggers shows in the chain.
    l.connection()
        .execute_batch(
            "DROP TRIGGER audit_events_no_update;
             UPDATE audit_events SET remote = '10.9.9.9' WHERE id = 2;",
        )
        .unwrap();
    assert_eq!(verify(&l.audit_events().unwrap()), [true, false, true]);
}

#[test]
fn every_migration_file_is_applied_in_order() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/ledger/migrations");
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.ends_with(".sql"))
        .map(|n| n.trim_end_matches(".sql").to_string())
        .collect();
    files.sort();
    let listed: Vec<&str> = MIGRATIONS.iter().map(|(name, _)| *name).collect();
    assert_eq!(files, listed);
}

#[test]
fn an_upload_is_recorded_with_its_audit_event_and_sender_removal_at_once() {
    let mut l = ledger();
    l.audit(&AuditEvent {
        partner: Some("care"),
        remote: Some("10.0.0.1"),
        action: "login",
        ..AuditEvent::default()
    })
    .unwrap();
    let id = l
        .record_received(&[NewFile {
            source: "sftp-server".into(),
            partner: "care".into(),
            feed: Some("news2".into()),
            name: "up.csv".into(),
            spool_name: "spool-up".into(),
            sha256: "cd".repeat(32),
            size: 10,
            handed_over: true,
            uploaded_from: Some("10.0.0.1:5022".into()),
            taken_from: None,
        }])
        .unwrap()[0];
    let events: Vec<String> = l.events(id).unwrap().into_iter().map(|e| e.event).collect();
    assert_eq!(events, ["received", "sender_copy_removed"]);
    let removed: Option<String> = l
        .connection()
        .query_row(
            "SELECT sender_removed_at FROM files WHERE id = ?1",
            [id],
            |r| r.get(0),
        )
        .unwrap();
    assert!(removed.is_some());
    let audit = l.audit_events().unwrap();
    assert_eq!(audit.len(), 2);
    assert_eq!(audit[1].action, "upload");
    assert_eq!(audit[1].file_id, Some(id));
    assert_eq!(audit[1].remote.as_deref(), Some("10.0.0.1:5022"));
    assert!(
        audit[1].verifies_after(&audit[0].hash),
        "the chain continues"
    );
}
