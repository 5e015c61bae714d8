use super::*;

use testing::{ledger, received};

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
            held: None,
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

/// A ledger in memory as it was before the migration `name`.
fn migrated_up_to(name: &str) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open_in_memory().unwrap();
    let before = MIGRATIONS
        .iter()
        .position(|(n, _)| *n == name)
        .unwrap_or_else(|| panic!("no migration {name}"));
    for (name, sql) in &MIGRATIONS[..before] {
        conn.execute_batch(sql)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    conn.pragma_update(None, "user_version", before as i64)
        .unwrap();
    conn
}

#[test]
fn observations_written_before_the_inline_layout_survive_its_migration() {
    let mut conn = migrated_up_to("0008_observation_sets_inline");
    // Sets without their files and people: only the observations matter here.
    conn.execute_batch(
        "PRAGMA foreign_keys = OFF;
         INSERT INTO observation_sets (id, detail_id, observed_at, file_id, line) VALUES
             (1, 7, '2026-11-22T08:00:00Z', 3, 2), (2, 8, '2026-11-22T09:00:00Z', 3, 3);
         INSERT INTO observations (set_id, code_id, value_num, value_text) VALUES
             (1, 1, 18, NULL), (1, 3, 0, NULL), (1, 7, NULL, 'A'), (1, 8, 36.6, NULL),
             (1, 9, 1, NULL), (2, 6, 88, NULL), (2, 7, NULL, 'V');",
    )
    .unwrap();
    let read = |conn: &rusqlite::Connection| -> Vec<String> {
        let mut stmt = conn
            .prepare(
                "SELECT detail_id, observed_at, code, value_num, value_text, unit, file_id, line, set_id
                 FROM observation_records ORDER BY set_id, code",
            )
            .unwrap();
        stmt.query_map([], |r| {
            Ok(format!(
                "{:?}",
                (
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, Option<f64>>(3)?,
                    r.get::<_, Option<String>>(4)?,
                    r.get::<_, Option<String>>(5)?,
                    r.get::<_, i64>(6)?,
                    r.get::<_, i64>(7)?,
                    r.get::<_, i64>(8)?,
                )
            ))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect()
    };
    let before = read(&conn);
    assert_eq!(before.len(), 7);
    migrations::migrate(&mut conn).unwrap();
    assert_eq!(read(&conn), before, "every observation reads as it did");
    let tables: i64 = conn
        .query_row(
            "SELECT count(*) FROM sqlite_schema WHERE name = 'observations'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(tables, 0, "the old table is gone");
}

#[test]
fn observation_sets_indexed_by_detail_are_listed_by_their_migration_and_read_the_same() {
    let mut conn = migrated_up_to("0021_observation_set_lists");
    // Two files, two residents of one person interleaved with a third
    // person's resident, and a keyed set replaced by a later version.
    conn.execute_batch(
        "PRAGMA foreign_keys = OFF;
         INSERT INTO persons (id, nhs_number) VALUES (1, '9434765919'), (2, NULL);
         INSERT INTO service_users (detail_id, source, local_id, person_id, nhs_number, file_id, line)
             VALUES (7, 'home', 'R1', 1, '9434765919', 3, 2), (8, 'gp', 'P7', 1, '9434765919', 4, 2),
                    (9, 'home', 'R2', 2, NULL, 3, 3);
         INSERT INTO observation_sets (id, detail_id, observed_at, file_id, line, respiratory_rate,
                                       consciousness, news2_score, natural_key, superseded_by) VALUES
             (1, 7, '2026-11-22T08:00:00Z', 3, 2, 18, 'A', 1, 'k1', 4),
             (2, 9, '2026-11-22T08:00:00Z', 3, 3, 20, NULL, NULL, NULL, NULL),
             (3, 7, '2026-11-22T09:00:00Z', 3, 4, 19, 'V', NULL, NULL, NULL),
             (4, 7, '2026-11-22T08:00:00Z', 4, 2, 17, 'A', 0, 'k1', NULL),
             (5, 8, '2026-11-23T08:00:00Z', 4, 3, NULL, 'A', NULL, NULL, NULL);",
    )
    .unwrap();
    migrations::migrate(&mut conn).unwrap();
    let person = records::person_records(&conn, 8, 100).unwrap().unwrap();
    let observations: Vec<String> = person
        .observations
        .iter()
        .map(|o| {
            let replaced = o
                .superseded_by
                .map(|s| format!(" by {s}"))
                .unwrap_or_default();
            format!(
                "set {} of {}: {} {} (file {} line {}){replaced}",
                o.set_id, o.detail_id, o.code, o.value, o.file_id, o.line
            )
        })
        .collect();
    assert_eq!(
        observations,
        [
            "set 5 of 8: consciousness A (file 4 line 3)",
            "set 3 of 7: consciousness V (file 3 line 4)",
            "set 3 of 7: respiratory_rate 19 (file 3 line 4)",
            "set 4 of 7: consciousness A (file 4 line 2)",
            "set 4 of 7: news2_score 0 (file 4 line 2)",
            "set 4 of 7: respiratory_rate 17 (file 4 line 2)",
            "set 1 of 7: consciousness A (file 3 line 2) by 4",
            "set 1 of 7: news2_score 1 (file 3 line 2) by 4",
            "set 1 of 7: respiratory_rate 18 (file 3 line 2) by 4",
        ],
        "every observation of the person, and none of another's"
    );
    let counts: Vec<(i64, u64)> = person
        .person
        .details
        .iter()
        .map(|d| (d.detail_id, d.observations))
        .collect();
    assert_eq!(counts, [(7, 8), (8, 1)]);
    let lists: Vec<(i64, i64, i64, String)> = conn
        .prepare("SELECT detail_id, first_set_id, file_id, set_ids FROM observation_set_lists")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        lists,
        [
            (7, 1, 3, "[1,3]".to_string()),
            (7, 4, 4, "[4]".to_string()),
            (8, 5, 4, "[5]".to_string()),
            (9, 2, 3, "[2]".to_string()),
        ]
    );
    let by_detail: i64 = conn
        .query_row(
            "SELECT count(*) FROM sqlite_schema WHERE name = 'observation_sets_by_detail'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(by_detail, 0, "the index per set is gone");
}

#[test]
fn care_records_written_in_the_first_layout_survive_its_migration() {
    let mut conn = migrated_up_to("0012_care_records");
    conn.execute_batch(
        "PRAGMA foreign_keys = OFF;
         INSERT INTO staff (id, source, staff_id, name, role, organisation, file_id, line)
             VALUES (4, 'home', 'S17', 'A Carer', 'carer', 'ABC12', 3, 2);
         INSERT INTO care_record_entries (id, detail_id, recorded_at, author_id, entry_type, text, file_id, line)
             VALUES (5, 7, '2026-11-22T08:00:00Z', 4, 'note', 'ate well', 3, 3);
         INSERT INTO care_transactions (id, detail_id, kind, start_at, end_at, provider, file_id, line)
             VALUES (6, 7, 'visit', '2026-11-21', NULL, 'District nurses', 3, 4);
         INSERT INTO alerts (id, detail_id, alert_type, severity, start_at, end_at, file_id, line)
             VALUES (8, 7, 'allergy', 'high', '2020-01-01', NULL, 3, 5);
         INSERT INTO red_bags (id, detail_id, transfer_at, reason, medications, allergies,
                               resuscitation_status, communication_needs, belongings, contacts, file_id, line)
             VALUES (9, 7, '2026-11-22T09:00:00Z', 'fall', 'paracetamol', 'penicillin', 'dnacpr',
                     'hearing aid', 'glasses', 'daughter', 3, 6);",
    )
    .unwrap();
    migrations::migrate(&mut conn).unwrap();
    let one = |sql: &str| -> String {
        conn.query_row(sql, [], |r| r.get::<_, String>(0))
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    };
    assert_eq!(
        one(
            "SELECT staff_id || name || role || organisation || file_id || line FROM staff WHERE id = 4"
        ),
        "S17A CarercarerABC1232"
    );
    assert_eq!(
        one(
            "SELECT detail_id || recorded_at || author || entry_type || text || file_id || line
             FROM care_record_entries WHERE id = 5"
        ),
        "72026-11-22T08:00:00ZS17noteate well33",
        "the author is the staff id it pointed at"
    );
    assert_eq!(
        one(
            "SELECT transaction_type || start_at || provider || line FROM care_transactions WHERE id = 6"
        ),
        "visit2026-11-21District nurses4"
    );
    assert_eq!(
        one(
            "SELECT alert_type || severity || start_at || line || coalesce(description, '-') FROM alerts WHERE id = 8"
        ),
        "allergyhigh2020-01-015-"
    );
    assert_eq!(
        one("SELECT transferred_at || reason || medications || allergies || resuscitation
                    || communication_needs || belongings || contacts || line FROM red_bags WHERE id = 9"),
        "2026-11-22T09:00:00Zfallparacetamolpenicillindnacprhearing aidglassesdaughter6"
    );
    let left: i64 = conn
        .query_row(
            "SELECT count(*) FROM sqlite_schema WHERE name LIKE '%_0002'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(left, 0, "the old tables are gone");
}

#[test]
fn the_look_ups_made_for_every_file_are_not_prepared_again_on_every_use() {
    let mut l = ledger();
    for i in 0..5u64 {
        l.received_but_not_removed("src", &format!("n{i}"), i, "ab")
            .unwrap();
        l.loaded_copy("news2", "ab", i as i64).unwrap();
    }
    for sql in [
        super::files::RECEIVED_NOT_REMOVED,
        super::batch::LOADED_COPIES,
    ] {
        let stmt = l.connection().prepare_cached(sql).unwrap();
        assert_eq!(
            stmt.get_status(rusqlite::StatementStatus::RePrepare),
            0,
            "{sql}"
        );
    }
}

#[test]
fn a_delivery_and_the_route_it_settles_are_recorded_together() {
    let mut ledger = testing::ledger();
    ledger.register_routes(["to-gp"]).unwrap();
    let id = testing::received(&mut ledger, "a.csv");
    ledger
        .queue_routed("to-gp", "gp", "news2", &["received"], 0)
        .unwrap();
    let event = DeliveryEvent {
        destination: "gp",
        file_id: Some(id),
        name: "news2-1.csv",
        sha256: "00",
        size: 1,
        attempt: 2,
        event: "delivered",
        detail: None,
    };
    let settles = Settles::Route {
        file_id: id,
        route: "to-gp",
        grant: "g",
    };
    // A route that is not queued: nothing of the delivery is kept either.
    let unqueued = Settles::Route {
        file_id: id,
        route: "to-elsewhere",
        grant: "g",
    };
    assert!(
        ledger
            .delivered(std::slice::from_ref(&event), 2, unqueued)
            .is_err()
    );
    let delivered = |ledger: &Ledger| -> i64 {
        ledger
            .conn
            .query_row(
                "SELECT count(*) FROM delivery_events WHERE event = 'delivered'",
                [],
                |r| r.get(0),
            )
            .unwrap()
    };
    assert_eq!(delivered(&ledger), 0);
    ledger.delivered(&[event], 2, settles).unwrap();
    assert_eq!(delivered(&ledger), 1);
    assert!(ledger.pending_routed("to-gp").unwrap().is_empty());
    let route = &ledger.route_deliveries(id).unwrap()[0];
    assert_eq!(
        (route.state.as_str(), route.attempts, route.grant.as_deref()),
        ("delivered", 2, Some("g"))
    );
}

#[test]
fn a_failed_forwarding_is_queued_again_only_while_its_file_is_recent() {
    let mut ledger = testing::ledger();
    ledger.register_routes(["to-gp"]).unwrap();
    let id = testing::received(&mut ledger, "a.csv");
    assert_eq!(
        ledger
            .queue_routed("to-gp", "gp", "news2", &["received"], 0)
            .unwrap(),
        1
    );
    ledger
        .finish_routed(
            id,
            "to-gp",
            "failed",
            3,
            Some("g"),
            Some("refused by the server"),
        )
        .unwrap();
    assert!(ledger.pending_routed("to-gp").unwrap().is_empty());
    let now = Utc::now();
    let minute = chrono::TimeDelta::minutes(1);
    // Failed too recently: left alone.
    assert_eq!(
        ledger
            .retry_failed_routed("to-gp", now - minute, now - minute * 60)
            .unwrap(),
        0
    );
    // The file arrived too long ago: left failed.
    assert_eq!(
        ledger
            .retry_failed_routed("to-gp", now + minute, now + minute)
            .unwrap(),
        0
    );
    assert_eq!(
        ledger
            .retry_failed_routed("to-gp", now + minute, now - minute * 60)
            .unwrap(),
        1
    );
    assert_eq!(ledger.pending_routed("to-gp").unwrap()[0].file_id, id);
}

#[test]
fn a_failed_push_is_queued_again_only_while_its_export_is_recent() {
    let mut ledger = testing::ledger();
    let (run, _) = ledger
        .begin_export_run(&RunStart {
            schedule: "nightly",
            consumer: "hospital",
            planned_at: None,
            mode: "incremental",
            from: Watermark::default(),
            export_id_prefix: "nightly-x",
        })
        .unwrap();
    ledger
        .finish_export_run(
            run,
            &RunEnd {
                outcome: RunOutcome::Complete,
                to: Some(Watermark::default()),
                manifest_sha256: None,
                counts: None,
                grants: &[],
                detail: None,
                destinations: &["gp".to_string()],
            },
        )
        .unwrap();
    assert_eq!(ledger.pending_export_deliveries().unwrap().len(), 1);
    ledger
        .finish_export_delivery(run, "gp", 3, Some("connection refused"))
        .unwrap();
    assert!(ledger.pending_export_deliveries().unwrap().is_empty());
    let now = Utc::now();
    let minute = chrono::TimeDelta::minutes(1);
    assert_eq!(
        ledger
            .retry_failed_pushes(now - minute, now - minute * 60)
            .unwrap(),
        0
    );
    assert_eq!(
        ledger
            .retry_failed_pushes(now + minute, now + minute)
            .unwrap(),
        0
    );
    assert_eq!(
        ledger
            .retry_failed_pushes(now + minute, now - minute * 60)
            .unwrap(),
        1
    );
    assert_eq!(
        ledger.pending_export_deliveries().unwrap()[0].destination,
        "gp"
    );
}

#[test]
fn a_receipt_push_is_due_until_delivered_waits_after_giving_up_and_ends_with_its_window() {
    let mut ledger = testing::ledger();
    let a = testing::received(&mut ledger, "a.csv");
    let b = testing::received(&mut ledger, "b.csv");
    let _no_receipt = testing::received(&mut ledger, "c.csv");
    ledger
        .receipts_written(&[(a, serde_json::json!({})), (b, serde_json::json!({}))])
        .unwrap();
    let now = Utc::now();
    let minute = chrono::TimeDelta::minutes(1);
    let due = |ledger: &Ledger, written_after, gave_up_after| -> Vec<i64> {
        ledger
            .receipt_pushes_due("care", "home", 0, written_after, gave_up_after, 10)
            .unwrap()
            .iter()
            .map(|f| f.id)
            .collect()
    };
    assert_eq!(due(&ledger, now - minute, Some(now - minute)), [a, b]);
    assert!(
        due(&ledger, now + minute, None).is_empty(),
        "written too long ago"
    );
    assert!(
        ledger
            .receipt_pushes_due("other", "home", 0, now - minute, None, 10)
            .unwrap()
            .is_empty()
    );
    let event = |file_id, name, event| DeliveryEvent {
        destination: "home",
        file_id: Some(file_id),
        name,
        sha256: "00",
        size: 1,
        attempt: 1,
        event,
        detail: None,
    };
    // The raw file forwarded to the same destination is not the receipt.
    ledger
        .delivery(&event(a, "news2-1.csv", "delivered"))
        .unwrap();
    ledger
        .delivery(&event(b, "b.csv.receipt.json", "delivered"))
        .unwrap();
    ledger
        .delivery(&event(a, "a.csv.receipt.json", "gave_up"))
        .unwrap();
    assert!(
        due(&ledger, now - minute, Some(now - minute)).is_empty(),
        "gave up just now: later"
    );
    assert_eq!(due(&ledger, now - minute, Some(now + minute)), [a]);
    assert_eq!(due(&ledger, now - minute, None), [a], "still undelivered");
}

#[test]
fn service_users_written_before_versions_are_their_own_first_version() {
    let mut conn = migrated_up_to("0015_service_user_versions");
    conn.execute_batch(
        "PRAGMA foreign_keys = OFF;
         INSERT INTO service_users (detail_id, source, local_id, person_id, nhs_number,
                                    family_name, given_name, date_of_birth, gender, postcode,
                                    file_id, line)
             VALUES (7, 'home', 'R1', 3, '9434765919', 'Smith', 'Ann', '1941-02-01', '2',
                     'SW1A 1AA', 4, 12);",
    )
    .unwrap();
    migrations::migrate(&mut conn).unwrap();
    let version: String = conn
        .query_row(
            "SELECT detail_id || family_name || given_name || date_of_birth || gender || postcode
                    || nhs_number || file_id || line || coalesce(updated_at, '-')
             FROM service_user_versions",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(version, "7SmithAnn1941-02-012SW1A 1AA9434765919412-");
}

#[test]
fn observation_sets_written_before_versions_are_each_their_own_current_record() {
    let mut conn = migrated_up_to("0017_observation_set_versions");
    conn.execute_batch(
        "PRAGMA foreign_keys = OFF;
         INSERT INTO observation_sets (id, detail_id, observed_at, file_id, line,
                                       respiratory_rate, consciousness)
             VALUES (1, 7, '2026-11-22T08:00:00Z', 3, 2, 18, 'A'),
                    (2, 7, '2026-11-22T08:00:00Z', 4, 2, 20, NULL);",
    )
    .unwrap();
    migrations::migrate(&mut conn).unwrap();
    let mut stmt = conn
        .prepare(
            "SELECT set_id || ':' || code || '=' || coalesce(value_text, value_num) || ' record '
                    || record_id || ' ' || coalesce(superseded_by, 'current')
             FROM observation_records ORDER BY set_id, code",
        )
        .unwrap();
    let rows: Vec<String> = stmt
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    assert_eq!(
        rows,
        [
            "1:consciousness=A record 1 current",
            "1:respiratory_rate=18 record 1 current",
            "2:respiratory_rate=20 record 2 current",
        ]
    );
}

#[test]
fn a_small_file_s_bytes_are_kept_with_its_row_and_queued_like_any_other() {
    let mut l = ledger();
    let plain = received(&mut l, "plain.csv");
    let held = l
        .record_received(&[NewFile {
            source: "sftp-server".into(),
            partner: "care".into(),
            feed: Some("news2".into()),
            name: "held.csv".into(),
            spool_name: "spool-held".into(),
            sha256: "cd".repeat(32),
            size: 5,
            handed_over: true,
            uploaded_from: Some("10.0.0.1:5022".into()),
            taken_from: None,
            held: Some(b"bytes".to_vec()),
        }])
        .unwrap()[0];
    let queued = |l: &Ledger| -> Vec<i64> { l.pending(10).unwrap().iter().map(|f| f.id).collect() };
    assert_eq!(queued(&l), [plain, held]);
    let bodies = l.held_bodies(&[plain, held]).unwrap();
    assert_eq!(bodies.len(), 1);
    assert_eq!(&*bodies[&held], b"bytes");
    assert!(l.holds_payload(held).unwrap() && !l.holds_payload(plain).unwrap());
    l.release_held(held).unwrap();
    assert!(l.held_body(held).unwrap().is_none());
    assert!(!l.holds_payload(held).unwrap());
}
