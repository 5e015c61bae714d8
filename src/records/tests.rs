use super::*;
use crate::domain::nhs_number::NhsNumber;
use crate::ledger::Ledger;
use crate::ledger::testing::{ledger, received};
use observations::Code;
use service_user::ServiceUser;

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
            updated_at: None,
        }),
        observations: None,
        care: Vec::new(),
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
            let mut w = Writer::new(&sp, id, source).unwrap();
            for r in records {
                w.write(r).unwrap();
            }
            w.finish().unwrap();
        }
        sp.commit().unwrap();
    }
    batch.commit().unwrap();
}

#[test]
fn every_set_of_a_file_is_listed_under_its_service_user_whatever_its_size() {
    let mut l = ledger();
    let set = |local_id: &str, line: u64, rate: f64| {
        let mut records = user(local_id, None);
        records.line = line;
        records.observations = Some(observations::ObservationSet {
            observed_at: chrono::DateTime::from_timestamp(1_795_000_000 + line as i64, 0).unwrap(),
            observations: vec![observations::Observation {
                code: Code::Vital(observations::Vital::RespirationRate),
                value: observations::ObservedValue::Number(rate),
            }],
            natural_key: None,
            updated_at: None,
        });
        records
    };
    // Two residents interleaved, more sets than are held before listing.
    let rows: Vec<Records> = (0..11)
        .map(|i| set(if i % 3 == 0 { "R1" } else { "R2" }, i + 2, 10.0 + i as f64))
        .collect();
    write(&mut l, "home", &rows);
    write(&mut l, "home", &[set("R1", 2, 30.0)]);
    let conn = l.connection();
    let listed: Vec<(i64, i64)> = conn
        .prepare(
            "SELECT l.detail_id, j.value FROM observation_set_lists l, json_each(l.set_ids) j
             ORDER BY 2",
        )
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let sets: Vec<(i64, i64)> = conn
        .prepare("SELECT detail_id, id FROM observation_sets ORDER BY id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(sets.len(), 12);
    assert_eq!(
        listed, sets,
        "each set listed once, under its own service user"
    );
    let (lists, out_of_order): (i64, i64) = conn
        .query_row(
            "SELECT count(*), sum(first_set_id != set_ids ->> 0
                                  OR EXISTS (SELECT 1 FROM json_each(set_ids) a, json_each(set_ids) b
                                             WHERE a.key < b.key AND a.value >= b.value))
             FROM observation_set_lists",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert!(lists > 3, "listed in parts: {lists} lists");
    assert_eq!(out_of_order, 0, "each list ascends from its first set");
    let r1 = l.person_by_local_id("home", "R1").unwrap().unwrap();
    assert_eq!(r1.details[0].observations, 5);
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
    for code in Code::ALL {
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
    assert_eq!(rows, Code::ALL.len() as i64);
}

#[test]
fn export_codings_match_the_ledgers_observation_codes() {
    use crate::records::observations::Code;
    let ledger = crate::ledger::testing::ledger();
    let mut ledger = ledger;
    let conn = ledger.connection();
    for code in Code::ALL {
        let (name, unit, loinc, snomed): (String, Option<String>, Option<String>, Option<String>) =
            conn.query_row(
                "SELECT code, unit, loinc, snomed FROM observation_codes WHERE id = ?1",
                [code.id()],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .unwrap();
        assert_eq!(name, code.name());
        assert_eq!(unit.as_deref(), code.unit(), "{name}");
        assert_eq!(loinc.as_deref(), code.loinc(), "{name}");
        assert_eq!(snomed.as_deref(), code.snomed(), "{name}");
    }
}

#[test]
fn small_trend_counts_are_withheld_and_the_rest_rounded() {
    use crate::records::trend::Disclosure;
    let rule = Disclosure::default();
    assert_eq!(rule.disclose(0), Some(0));
    for small in 1..8 {
        assert_eq!(rule.disclose(small), None, "{small}");
    }
    assert_eq!(rule.disclose(8), Some(10));
    assert_eq!(rule.disclose(12), Some(10));
    assert_eq!(rule.disclose(13), Some(15));
    assert_eq!(rule.disclose(1_000_002), Some(1_000_000));
    let exact = Disclosure {
        suppress_below: 1,
        round_to: 1,
    };
    assert_eq!(exact.disclose(3), Some(3));
}

#[test]
fn a_field_is_a_column_translated_or_defaulted_a_fixed_value_or_columns_joined() {
    use crate::validate::{Row, Value};
    use fields::Field;
    let row = Row {
        line: 4,
        values: vec![
            Value::Text("M".into()),
            Value::Empty,
            Value::Text("Ann".into()),
            Value::Date(chrono::NaiveDate::from_ymd_opt(2026, 2, 1).unwrap()),
        ],
    };
    let table = |pairs: &[(&str, &str)]| {
        Some(
            pairs
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
        )
    };
    let column = |index, translate, default: Option<&str>, vocabulary| Field::Column {
        index,
        translate,
        default: default.map(Into::into),
        vocabulary,
    };
    let cases: [(Field, Option<&str>); 9] = [
        (column(0, None, None, None), Some("M")),
        (column(0, table(&[("M", "1")]), None, None), Some("1")),
        // A code the table lacks: the default, or else as it is.
        (column(0, table(&[("F", "2")]), Some("9"), None), Some("9")),
        (column(0, table(&[("F", "2")]), None, None), Some("M")),
        (column(1, None, Some("unknown"), None), Some("unknown")),
        (column(1, None, None, None), None),
        // A coded field never holds a value outside its codes.
        (
            column(0, None, Some("other"), Some(&["other", "risk"])),
            Some("other"),
        ),
        (Field::Fixed("care home".into()), Some("care home")),
        (
            Field::Concat {
                columns: vec![2, 1, 3],
                separator: " / ".into(),
                default: None,
            },
            Some("Ann / 2026-02-01"),
        ),
    ];
    for (field, expected) in cases {
        assert_eq!(field.value(&row).as_deref(), expected, "{field:?}");
        let mut taken = row.clone();
        assert_eq!(field.take(&mut taken).as_deref(), expected, "{field:?}");
    }
    let empty = Field::Concat {
        columns: vec![1],
        separator: " ".into(),
        default: Some("none".into()),
    };
    assert_eq!(empty.value(&row).as_deref(), Some("none"));
}

#[test]
fn a_member_of_staff_is_one_record_that_later_files_update_field_by_field() {
    let mut l = ledger();
    let staff = |name: Option<&str>, role: &str| Records {
        line: 2,
        service_user: None,
        observations: None,
        care: vec![care::CareRecord {
            kind: Kind::Staff,
            values: vec![
                Some("S1".into()),
                name.map(Into::into),
                Some(role.into()),
                None,
            ],
            natural_key: None,
            updated_at: None,
        }],
    };
    write(&mut l, "home", &[staff(Some("Amy Lee"), "carer")]);
    // A later file that leaves the name empty keeps it; the role it gives wins.
    write(&mut l, "home", &[staff(None, "nurse")]);
    let rows: Vec<(String, String, i64)> = l
        .connection()
        .prepare("SELECT name, role, file_id FROM staff")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(rows, [("Amy Lee".to_string(), "nurse".to_string(), 2)]);
}

#[test]
fn a_service_users_details_are_versioned_and_the_latest_by_their_own_time_is_current() {
    let mut l = ledger();
    let at = |family: &str, when: &str| {
        let mut r = user("R1", Some("9434765919"));
        let u = r.service_user.as_mut().unwrap();
        u.family_name = Some(family.into());
        u.updated_at = Some(when.into());
        r
    };
    // The newer details come first, the older after them.
    write(&mut l, "home", &[at("Smith", "2026-11-20T10:00:00Z")]);
    write(&mut l, "home", &[at("Jones", "2026-11-01T10:00:00Z")]);
    let current = |l: &mut Ledger| -> (String, String) {
        l.connection()
            .query_row(
                "SELECT family_name, updated_at FROM service_users WHERE local_id = 'R1'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap()
    };
    assert_eq!(current(&mut l).0, "Smith", "the older row does not win");
    // The same details again, later: nothing new to keep, but a later time,
    // against which a row between the two is then older.
    write(&mut l, "home", &[at("Smith", "2026-11-30T10:00:00Z")]);
    write(&mut l, "home", &[at("Brown", "2026-11-25T10:00:00Z")]);
    assert_eq!(
        current(&mut l),
        ("Smith".into(), "2026-11-30T10:00:00Z".into())
    );
    write(&mut l, "home", &[at("Brown", "2026-12-01T10:00:00Z")]);
    assert_eq!(current(&mut l).0, "Brown");
    let records = l.person_records(1, 0).unwrap().unwrap();
    let versions: Vec<(&str, i64)> = records
        .detail_versions
        .iter()
        .map(|v| (v.family_name.as_deref().unwrap(), v.file_id))
        .collect();
    assert_eq!(
        versions,
        [("Smith", 1), ("Jones", 2), ("Brown", 4), ("Brown", 5)],
        "every state a file gave, with its file"
    );
}

#[test]
fn dates_are_stored_as_chrono_writes_them_in_every_year() {
    use chrono::NaiveDate;
    let dates = [
        (-1, 12, 31),
        (0, 1, 1),
        (9, 2, 3),
        (99, 10, 10),
        (1940, 2, 29),
        (2026, 12, 4),
        (9999, 12, 31),
        (10000, 1, 1),
    ];
    for (year, month, day) in dates {
        let date = NaiveDate::from_ymd_opt(year, month, day).unwrap();
        assert_eq!(
            super::fields::iso_date(date),
            date.format("%Y-%m-%d").to_string()
        );
    }
}

#[test]
fn values_are_stored_as_text_written_as_they_always_were() {
    use super::fields::stored_text;
    use crate::validate::Value;
    for n in [
        0.0,
        -0.0,
        1.0,
        -3.0,
        412.5,
        0.1 + 0.2,
        3.4e35,
        1e-7,
        f64::MAX,
    ] {
        assert_eq!(
            stored_text(&Value::Decimal(n)).as_deref(),
            Some(n.to_string().as_str()),
            "{n}"
        );
    }
    for n in [0, -1, 42, i64::MIN, i64::MAX] {
        assert_eq!(
            stored_text(&Value::Integer(n)).as_deref(),
            Some(n.to_string().as_str())
        );
    }
    for b in [true, false] {
        assert_eq!(
            stored_text(&Value::Bool(b)).as_deref(),
            Some(b.to_string().as_str())
        );
    }
}
